/*
 * test_ron_kernel_config.c - ron_config: defaults, precedence (defaults <
 * file < environment < flags), strict keys and types naming the key,
 * validation, reload with rollback, version bump only on a change, and
 * refusal of restart-only keys on reload. Real files in a temp dir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "ron_config.h"
#include "ron_err.h"

static char tmpdir[256];
static char cfgfile[300];

static int
setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ron_cfg_test_XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(cfgfile, sizeof cfgfile, "%s/node.json", tmpdir);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(cfgfile);
    rmdir(tmpdir);
    return 0;
}

static void
write_file(const char *text)
{
    FILE *f = fopen(cfgfile, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void
test_config_defaults_match_design(void **state)
{
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    ron_config_src_t src = {0};
    (void)state;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), 0);
    assert_int_equal(c.profile, RON_PROFILE_MACRO);
    assert_string_equal(c.admin, "127.0.0.1:8080");
    assert_string_equal(c.http, "127.0.0.1:8090");
    assert_string_equal(c.https, ""); /* HTTPS is opt-in */
    assert_string_equal(c.app, "127.0.0.1:9090");
    assert_string_equal(c.overlay, "0.0.0.0:5301");
    assert_string_equal(c.dht, "0.0.0.0:5302");
    assert_int_equal(c.bus_capacity, 4096);
    assert_int_equal(c.admin_limits.max_inflight, 512);
    assert_int_equal(c.admin_limits.rate_rps, 500);
    assert_int_equal(c.admin_limits.header_timeout_ms, 5000);
    assert_int_equal(c.admin_limits.max_body, 1 << 20);
    assert_int_equal(c.supervisor.backoff_initial_ms, 100);
    assert_int_equal(c.supervisor.quarantine_crashes, 6);
    assert_false(ron_config_amnesia(&c));
}

static void
test_config_precedence_file_then_env_then_flags(void **state)
{
    char *envp[] = {"RON_ADMIN_LIMITS_MAX_CONNS=222", "RON_HTTP=127.0.0.1:7002", "HOME=/nowhere",
                    NULL};
    ron_config_kv_t flags[] = {{"http", "127.0.0.1:7003"}};
    ron_config_src_t src = {cfgfile, envp, flags, 1};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    write_file("{\"admin_limits\": {\"max_conns\": 111, \"rate_rps\": 77},"
               " \"http\": \"127.0.0.1:7001\", \"app\": \"[::1]:7004\"}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), 0);
    assert_int_equal(c.admin_limits.rate_rps, 77);      /* file over default */
    assert_int_equal(c.admin_limits.max_conns, 222);    /* env over file */
    assert_string_equal(c.http, "127.0.0.1:7003");      /* flag over env */
    assert_string_equal(c.app, "[::1]:7004");           /* IPv6 accepted */
    assert_int_equal(c.admin_limits.max_inflight, 512); /* untouched default */
}

static void
test_config_rejects_unknown_key_naming_it(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    write_file("{\"admin_limits\": {\"max_connz\": 5}}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "unknown key 'admin_limits.max_connz'"));
    write_file("{\"colour\": \"blue\"}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "unknown key 'colour'"));
}

static void
test_config_rejects_wrong_types_naming_the_key(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    write_file("{\"bus\": {\"capacity\": \"big\"}}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "key 'bus.capacity': expected an integer"));
    write_file("{\"amnesia\": 1}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "key 'amnesia': expected a boolean"));
    write_file("{\"services\": \"echo\"}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "key 'services': expected an array"));
    write_file("{\"supervisor\": 3}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "key 'supervisor': expected an object"));
    write_file("{\"admin\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:8081\"}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    write_file("{\"admin\": ");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "line 1"));
}

static void
test_config_rejects_bad_values_from_env_and_flags(void **state)
{
    char *env_bad_int[] = {"RON_BUS_CAPACITY=12x", NULL};
    char *env_range[] = {"RON_ADMIN_LIMITS_MAX_INFLIGHT=0", NULL};
    ron_config_kv_t bad_addr[] = {{"admin", "localhost:80"}};
    ron_config_kv_t bad_port[] = {{"admin", "127.0.0.1:70000"}};
    ron_config_kv_t bad_key[] = {{"nope", "1"}};
    ron_config_src_t src = {NULL, env_bad_int, NULL, 0};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "RON_BUS_CAPACITY"));
    src.envp = env_range;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "out of range"));
    src.envp = NULL;
    src.flags = bad_addr, src.n_flags = 1;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "key 'admin'"));
    src.flags = bad_port;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    src.flags = bad_key;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "unknown key 'nope'"));
}

static void
test_config_env_names_are_upper_snake_case(void **state)
{
    char name[64];
    char *envp[] = {"RON_SERVICES=echo,other", "RON_AMNESIA=true", "RON_LOG_LEVEL=debug", NULL};
    ron_config_src_t src = {NULL, envp, NULL, 0};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    ron_config_env_name("admin_limits.max_conns", name, sizeof name);
    assert_string_equal(name, "RON_ADMIN_LIMITS_MAX_CONNS");
    ron_config_env_name("gateway.max_conns", name, sizeof name);
    assert_string_equal(name, "RON_GATEWAY_MAX_CONNS");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), 0);
    assert_int_equal(c.n_services, 2);
    assert_string_equal(c.services[1], "other");
    assert_true(ron_config_amnesia(&c));
    assert_string_equal(c.log_level, "debug");
}

static void
test_config_micro_profile_defaults_to_amnesia(void **state)
{
    ron_config_kv_t micro[] = {{"profile", "micro"}};
    ron_config_kv_t micro_off[] = {{"profile", "micro"}, {"amnesia", "false"}};
    ron_config_src_t src = {NULL, NULL, micro, 1};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), 0);
    assert_true(ron_config_amnesia(&c));
    src.flags = micro_off, src.n_flags = 2;
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), 0);
    assert_false(ron_config_amnesia(&c));
}

static void
test_config_validation_catches_cross_key_rules(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_t c;
    char err[RON_CONFIG_ERR_MAX];
    (void)state;
    write_file("{\"services\": [\"echo\", \"echo\"]}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "listed twice"));
    write_file("{\"supervisor\": {\"backoff_initial_ms\": 500, \"backoff_max_ms\": 100}}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    write_file("{\"bus\": {\"capacity\": 1000}}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "power of two"));
    write_file("{\"supervisor\": {\"heartbeat_ms\": 2000, \"unhealthy_after_ms\": 1000}}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    write_file("{\"services\": [\"Bad Name\"]}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
    write_file("{\"seeds\": [\"abc@127.0.0.1:5302\", \"[::1]:5302\"]}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), 0);
    assert_int_equal(c.n_seeds, 2);
    write_file("{\"seeds\": [\"nohost\"]}");
    assert_int_equal(ron_config_build(&src, &c, err, sizeof err), RON_ECONFIG);
}

static void
test_config_reload_bumps_version_only_on_change(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_store_t *st = NULL;
    char err[RON_CONFIG_ERR_MAX];
    bool changed = true;
    (void)state;
    write_file("{\"echo\": {\"banner\": \"one\"}}");
    assert_int_equal(ron_config_store_new(&src, &st, err, sizeof err), 0);
    assert_int_equal(ron_config_store_current(st)->version, 1);
    assert_int_equal(ron_config_store_reload(st, &changed, err, sizeof err), 0);
    assert_false(changed);
    assert_int_equal(ron_config_store_current(st)->version, 1);
    write_file("{\"echo\": {\"banner\": \"two\"}}");
    assert_int_equal(ron_config_store_reload(st, &changed, err, sizeof err), 0);
    assert_true(changed);
    assert_int_equal(ron_config_store_current(st)->version, 2);
    assert_string_equal(ron_config_store_current(st)->echo_banner, "two");
    ron_config_store_free(st);
}

static void
test_config_reload_keeps_old_snapshot_on_error(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_store_t *st = NULL;
    char err[RON_CONFIG_ERR_MAX];
    bool changed = true;
    (void)state;
    write_file("{\"admin_limits\": {\"rate_rps\": 100}}");
    assert_int_equal(ron_config_store_new(&src, &st, err, sizeof err), 0);
    write_file("{\"admin_limits\": {\"rate_rps\": -3}}");
    assert_int_equal(ron_config_store_reload(st, &changed, err, sizeof err), RON_ECONFIG);
    assert_false(changed);
    assert_non_null(strstr(err, "admin_limits.rate_rps"));
    assert_int_equal(ron_config_store_current(st)->admin_limits.rate_rps, 100);
    assert_int_equal(ron_config_store_current(st)->version, 1);
    write_file("{\"admin_limits\": {\"rate_rps\": 100}, \"bogus\": true}");
    assert_int_equal(ron_config_store_reload(st, &changed, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "unknown key 'bogus'"));
    unlink(cfgfile);
    assert_true(ron_config_store_reload(st, &changed, err, sizeof err) < 0);
    assert_int_equal(ron_config_store_current(st)->admin_limits.rate_rps, 100);
    assert_int_equal(ron_config_store_current(st)->version, 1);
    ron_config_store_free(st);
}

static void
test_config_reload_refuses_restart_only_key(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_store_t *st = NULL;
    char err[RON_CONFIG_ERR_MAX];
    bool changed;
    (void)state;
    write_file("{\"admin\": \"127.0.0.1:18080\"}");
    assert_int_equal(ron_config_store_new(&src, &st, err, sizeof err), 0);
    write_file("{\"admin\": \"127.0.0.1:18081\", \"log\": {\"level\": \"debug\"}}");
    assert_int_equal(ron_config_store_reload(st, &changed, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "key 'admin' needs a restart"));
    assert_string_equal(ron_config_store_current(st)->admin, "127.0.0.1:18080");
    assert_string_equal(ron_config_store_current(st)->log_level, "info");
    ron_config_store_free(st);
}

static void
test_config_store_build_then_adopt_swaps_only_on_change(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_store_t *st = NULL;
    ron_config_t next;
    char err[RON_CONFIG_ERR_MAX];
    bool changed = true;
    (void)state;
    write_file("{\"log\": {\"level\": \"warn\"}}");
    assert_int_equal(ron_config_store_new(&src, &st, err, sizeof err), 0);
    assert_int_equal(ron_config_store_build(st, &next, err, sizeof err), 0);
    assert_int_equal(ron_config_store_adopt(st, &next, &changed, err, sizeof err), 0);
    assert_false(changed);
    write_file("{\"log\": {\"level\": \"error\"}}");
    assert_int_equal(ron_config_store_build(st, &next, err, sizeof err), 0);
    /* building alone changes nothing: the store adopts on the loop thread */
    assert_string_equal(ron_config_store_current(st)->log_level, "warn");
    assert_int_equal(ron_config_store_adopt(st, &next, &changed, err, sizeof err), 0);
    assert_true(changed);
    assert_int_equal(ron_config_store_current(st)->version, 2);
    assert_string_equal(ron_config_store_current(st)->log_level, "error");
    ron_config_store_free(st);
}

static void
test_config_json_round_trip_is_strict(void **state)
{
    ron_config_t a, b;
    char err[RON_CONFIG_ERR_MAX];
    char *json;
    (void)state;
    ron_config_defaults(&a);
    a.version = 42;
    assert_int_equal(ron_config_set(&a, "echo.banner", "hi \"there\"", err, sizeof err), 0);
    assert_int_equal(ron_config_set(&a, "amnesia", "true", err, sizeof err), 0);
    json = ron_config_to_json(&a);
    assert_int_equal(ron_config_from_json(json, strlen(json), &b, err, sizeof err), 0);
    assert_int_equal(b.version, 42);
    assert_int_equal(ron_config_diff(&a, &b, NULL, NULL), 0);
    free(json);
    json = "{\"version\":\"1\",\"extra\":1}";
    assert_int_equal(ron_config_from_json(json, strlen(json), &b, err, sizeof err), RON_ECONFIG);
    json = "{\"version\":1}";
    assert_int_equal(ron_config_from_json(json, strlen(json), &b, err, sizeof err), RON_ECONFIG);
}

static void
test_config_every_key_has_a_doc_and_env_name(void **state)
{
    const ron_config_key_info_t *k;
    size_t n = 0;
    (void)state;
    for (size_t i = 0; (k = ron_config_key_at(i)) != NULL; i++, n++) {
        char env[96];
        ron_config_t c;
        char err[RON_CONFIG_ERR_MAX];
        assert_true(strlen(k->doc) > 5);
        ron_config_env_name(k->path, env, sizeof env);
        assert_memory_equal(env, "RON_", 4);
        assert_null(strchr(env, '.'));
        /* every schema key is settable by its path; unknown paths are not */
        ron_config_defaults(&c);
        assert_int_not_equal(ron_config_set(&c, k->path, "", err, sizeof err) == RON_ECONFIG &&
                                 strstr(err, "unknown key") != NULL,
                             1);
    }
    assert_true(n >= 30);
}

/* The node builds on a libuv worker while the loop thread uses the store. */
typedef struct {
    uv_work_t work;
    ron_config_store_t *st;
    ron_config_t next;
    int rc;
    int adopted;
} th_reload_t;

static void
th_build(uv_work_t *w)
{
    th_reload_t *r = (th_reload_t *)w;
    char err[RON_CONFIG_ERR_MAX];
    r->rc = ron_config_store_build(r->st, &r->next, err, sizeof err);
}

static void
th_done(uv_work_t *w, int status)
{
    th_reload_t *r = (th_reload_t *)w;
    char err[RON_CONFIG_ERR_MAX];
    bool changed;
    assert_int_equal(status, 0);
    assert_int_equal(r->rc, 0);
    assert_int_equal(ron_config_store_adopt(r->st, &r->next, &changed, err, sizeof err), 0);
    r->adopted++;
}

static void
test_config_store_builds_on_worker_threads_while_loop_reads(void **state)
{
    ron_config_src_t src = {cfgfile, NULL, NULL, 0};
    ron_config_store_t *st = NULL;
    char err[RON_CONFIG_ERR_MAX];
    th_reload_t *r = calloc(8, sizeof *r);
    uv_loop_t loop;
    int adopted = 0;
    (void)state;
    write_file("{\"echo\": {\"banner\": \"x\"}}");
    assert_int_equal(ron_config_store_new(&src, &st, err, sizeof err), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    for (int i = 0; i < 8; i++) {
        r[i].st = st;
        assert_int_equal(uv_queue_work(&loop, &r[i].work, th_build, th_done), 0);
    }
    /* the loop thread reads the current snapshot while the workers build */
    for (int i = 0; i < 1000; i++)
        assert_string_equal(ron_config_store_current(st)->echo_banner, "x");
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 8; i++)
        adopted += r[i].adopted;
    assert_int_equal(adopted, 8);
    assert_int_equal(ron_config_store_current(st)->version, 1); /* nothing changed */
    assert_int_equal(uv_loop_close(&loop), 0);
    ron_config_store_free(st);
    free(r);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest threaded[] = {
        cmocka_unit_test_setup_teardown(test_config_store_builds_on_worker_threads_while_loop_reads,
                                        setup, teardown),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_defaults_match_design, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_precedence_file_then_env_then_flags, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_rejects_unknown_key_naming_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_rejects_wrong_types_naming_the_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_rejects_bad_values_from_env_and_flags, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_env_names_are_upper_snake_case, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_micro_profile_defaults_to_amnesia, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_validation_catches_cross_key_rules, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_reload_bumps_version_only_on_change, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_reload_keeps_old_snapshot_on_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_reload_refuses_restart_only_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_store_build_then_adopt_swaps_only_on_change,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_json_round_trip_is_strict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_every_key_has_a_doc_and_env_name, setup,
                                        teardown),
    };
    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests(threaded, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL) | cmocka_run_group_tests(threaded, NULL, NULL);
}
