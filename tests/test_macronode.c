/*
 * test_macronode.c - pieces of the node runner that can be tested without a
 * whole node: listener binding (IPv4, IPv6, bad input), exit reasons, the
 * data directory's FORMAT file, and the echo service on a real loop with a
 * real socket (banner, echo, config update, metrics, clean stop). The
 * supervisor and the admin port are tested with real processes in
 * tests/integration/test_node_*.py.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mn_internal.h"
#include "ron_err.h"

static void
test_mn_listen_tcp_binds_ipv4_and_ipv6_ephemeral_ports(void **state)
{
    char bound[RON_CONFIG_ADDR_MAX];
    int fd;
    (void)state;
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    assert_memory_equal(bound, "127.0.0.1:", 10);
    assert_true(atoi(bound + 10) > 0);
    close(fd);
    fd = mn__listen_tcp("[::1]:0", bound, sizeof bound);
    if (fd >= 0) { /* hosts without IPv6 loopback skip this half */
        assert_memory_equal(bound, "[::1]:", 6);
        close(fd);
    }
}

static void
test_mn_listen_tcp_rejects_bad_addresses(void **state)
{
    char bound[RON_CONFIG_ADDR_MAX];
    (void)state;
    assert_int_equal(mn__listen_tcp("localhost:80", bound, sizeof bound), RON_EINVAL);
    assert_int_equal(mn__listen_tcp("127.0.0.1", bound, sizeof bound), RON_EINVAL);
    assert_int_equal(mn__listen_tcp("127.0.0.1:99999", bound, sizeof bound), RON_EINVAL);
    assert_int_equal(mn__listen_tcp("[::1:80", bound, sizeof bound), RON_EINVAL);
}

static void
test_mn_listen_tcp_reports_address_in_use(void **state)
{
    char bound[RON_CONFIG_ADDR_MAX], again[RON_CONFIG_ADDR_MAX];
    int fd, fd2;
    (void)state;
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    fd2 = mn__listen_tcp(bound, again, sizeof again);
    assert_int_equal(fd2, -EADDRINUSE);
    close(fd);
}

static void
test_mn_exit_reason_names_signal_or_status(void **state)
{
    char r[96];
    (void)state;
    mn__exit_reason(r, sizeof r, 0, SIGKILL);
    assert_string_equal(r, "signal 9 (Killed)");
    mn__exit_reason(r, sizeof r, 3, 0);
    assert_string_equal(r, "exit 3");
}

static void
test_mn_data_dir_gets_format_file_and_refuses_unknown_layout(void **state)
{
    char dir[64] = "/tmp/ron_mn_test_XXXXXX", path[128], err[256];
    ron_config_t cfg;
    FILE *f;
    (void)state;
    assert_non_null(mkdtemp(dir));
    ron_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s/sub/dir", dir);
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/sub/dir/FORMAT", dir);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(err, sizeof err, f));
    assert_string_equal(err, "1\n");
    fclose(f);
    /* a second start accepts its own layout */
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), 0);
    f = fopen(path, "w");
    fputs("7\n", f);
    fclose(f);
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "layout version '7'"));
    unlink(path);
    snprintf(path, sizeof path, "%s/sub/dir", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

static void
test_mn_data_dir_untouched_in_amnesia(void **state)
{
    char err[256];
    ron_config_t cfg;
    struct stat st;
    (void)state;
    ron_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "/tmp/ron_mn_amnesia_%d/x", (int)getpid());
    cfg.amnesia = cfg.amnesia_set = true;
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), 0);
    assert_int_equal(stat(cfg.data_dir, &st), -1);
}

/* ---- the echo service on a real loop ---- */

typedef struct {
    uv_loop_t loop;
    uv_tcp_t client;
    uv_connect_t conn;
    uv_timer_t guard;
    const ron_service_def_t *def;
    void *svc;
    ron_config_t cfg;
    char got[256];
    size_t got_len;
    int step;
} echo_test_t;

static void
et_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    echo_test_t *t = h->data;
    (void)hint;
    buf->base = t->got + t->got_len;
    buf->len = sizeof t->got - 1 - t->got_len;
}

static void et_write_done(uv_write_t *w, int status);

static void
et_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    echo_test_t *t = st->data;
    (void)buf;
    if (n <= 0)
        return;
    t->got_len += (size_t)n;
    t->got[t->got_len] = '\0';
    if (t->step == 0 && strchr(t->got, '\n') != NULL) {
        static uv_write_t w;
        uv_buf_t b = uv_buf_init("ping", 4);
        assert_string_equal(t->got, "hello test\n");
        t->step = 1;
        t->got_len = 0;
        uv_write(&w, st, &b, 1, et_write_done);
    } else if (t->step == 1 && t->got_len == 4) {
        assert_memory_equal(t->got, "ping", 4);
        t->step = 2;
        uv_close((uv_handle_t *)&t->client, NULL);
        uv_close((uv_handle_t *)&t->guard, NULL);
        t->def->stop(t->svc);
    }
}

static void
et_write_done(uv_write_t *w, int status)
{
    (void)w;
    assert_int_equal(status, 0);
}

static void
et_connected(uv_connect_t *c, int status)
{
    echo_test_t *t = c->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&t->client, et_alloc, et_read);
}

static void
et_guard(uv_timer_t *g)
{
    (void)g;
    fail_msg("echo test did not finish within 5 s");
}

static void
test_mn_echo_serves_banner_echoes_and_reports_metrics(void **state)
{
    echo_test_t *t = calloc(1, sizeof *t);
    char bound[RON_CONFIG_ADDR_MAX], err[256], *m = malloc(MN_MAX_METRICS);
    struct sockaddr_in sa;
    size_t mlen;
    int fd;
    (void)state;

    t->def = ron_service_find("echo");
    assert_non_null(t->def);
    assert_null(ron_service_find("nope"));
    ron_config_defaults(&t->cfg);
    t->cfg.version = 1;
    assert_int_equal(ron_config_set(&t->cfg, "echo.banner", "hello first", err, sizeof err), 0);
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(t->def->start(&t->loop, &t->cfg, fd, &t->svc), 0);

    /* a config update changes what new connections see */
    t->cfg.version = 2;
    assert_int_equal(ron_config_set(&t->cfg, "echo.banner", "hello test", err, sizeof err), 0);
    t->def->apply_config(t->svc, &t->cfg);

    uv_tcp_init(&t->loop, &t->client);
    t->client.data = t;
    t->conn.data = t;
    uv_ip4_addr("127.0.0.1", atoi(strrchr(bound, ':') + 1), &sa);
    uv_tcp_connect(&t->conn, &t->client, (struct sockaddr *)&sa, et_connected);
    uv_timer_init(&t->loop, &t->guard);
    uv_timer_start(&t->guard, et_guard, 5000, 0);

    /* metrics are valid before the loop runs and name the config version */
    mlen = t->def->metrics(t->svc, m, MN_MAX_METRICS);
    assert_true(mlen > 0);
    m[mlen] = '\0';
    assert_non_null(strstr(m, "echo_config_version 2\n"));

    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(t->step, 2);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    free(m);
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mn_listen_tcp_binds_ipv4_and_ipv6_ephemeral_ports),
        cmocka_unit_test(test_mn_listen_tcp_rejects_bad_addresses),
        cmocka_unit_test(test_mn_listen_tcp_reports_address_in_use),
        cmocka_unit_test(test_mn_exit_reason_names_signal_or_status),
        cmocka_unit_test(test_mn_data_dir_gets_format_file_and_refuses_unknown_layout),
        cmocka_unit_test(test_mn_data_dir_untouched_in_amnesia),
        cmocka_unit_test(test_mn_echo_serves_banner_echoes_and_reports_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
