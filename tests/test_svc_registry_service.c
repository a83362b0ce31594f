/*
 * test_svc_registry_service.c - the registry protocol (OAP/1 app_proto_id 9,
 * docs/protocol/registry.md) over real ron-buses: in-process and over Unix
 * sockets, with a file log in a temporary directory and with RAM. A client
 * walks propose -> approve -> commit with M = 2 of N = 3, reads the head,
 * a version (whose record verifies offline) and the signer set, and gets
 * the documented error envelope for each kind of bad request.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "reg_service.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"

#define WAIT_MS 10000u

typedef struct {
    uv_loop_t loop;
    bool use_unix;
    rbus_hub_t *hub;
    char busdir[RBUS_MAX_DIR];
    rbus_t *srv, *cli;
    rbus_peer_t *peer;
    reg_service_t *svc;
    char tmp[64];
    bool done;
    int status;
    uint16_t code;
    json_t *json;
} fx_t;

static int
rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void
fx_open(fx_t *fx, bool use_unix, bool amnesia)
{
    rbus_config_t sc = {0}, cc = {0};
    char path[128];
    reg_opts_t o = {0};
    reg_t *reg = NULL;
    int rc = 0;

    memset(fx, 0, sizeof *fx);
    fx->use_unix = use_unix;
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    snprintf(fx->tmp, sizeof fx->tmp, "/tmp/ron-regsvc-XXXXXX");
    assert_non_null(mkdtemp(fx->tmp));
    snprintf(path, sizeof path, "%s/registry.log", fx->tmp);
    o.path = amnesia ? NULL : path;
    assert_int_equal(reg_open(&o, &reg, NULL), 0);
    sc.name = "registry";
    cc.name = "client";
    if (use_unix) {
        assert_int_equal(rbus_dir_create(fx->busdir, sizeof fx->busdir), 0);
        assert_int_equal(rbus_secret_generate(sc.secret), 0);
        memcpy(cc.secret, sc.secret, sizeof sc.secret);
        sc.transport = cc.transport = RBUS_TRANSPORT_UNIX;
        sc.dir = cc.dir = fx->busdir;
    } else {
        fx->hub = rbus_hub_new(&fx->loop);
        sc.transport = cc.transport = RBUS_TRANSPORT_INPROC;
        sc.hub = cc.hub = fx->hub;
    }
    fx->srv = rbus_new(&fx->loop, &sc, &rc);
    assert_non_null(fx->srv);
    fx->cli = rbus_new(&fx->loop, &cc, &rc);
    assert_non_null(fx->cli);
    assert_int_equal(reg_service_new(&fx->loop, fx->srv, reg, &fx->svc), 0);
    assert_int_equal(rbus_listen(fx->srv), 0);
    fx->peer = rbus_connect(fx->cli, "registry", &rc);
    assert_non_null(fx->peer);
}

static void
fx_close(fx_t *fx)
{
    char metrics[16384];
    size_t n = reg_service_metrics(fx->svc, metrics, sizeof metrics - 1);
    metrics[n] = '\0';
    assert_non_null(strstr(metrics, "registry_requests_total{op=\"commit\",status=\"200\"} 1"));
    json_decref(fx->json);
    reg_service_free(fx->svc);
    rbus_peer_close(fx->peer);
    rbus_free(fx->cli);
    rbus_free(fx->srv);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    if (fx->hub != NULL) {
        rbus_hub_free(fx->hub);
        uv_run(&fx->loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    if (fx->use_unix)
        rbus_dir_remove(fx->busdir);
    nftw(fx->tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void
on_reply(void *arg, int status, const oap_frame_t *resp)
{
    fx_t *fx = arg;
    fx->done = true;
    fx->status = status;
    if (status < 0)
        return;
    fx->code = resp->code;
    if (resp->code >= 400)
        fx->json = json_loadb((const char *)resp->payload, resp->payload_len, 0, NULL);
    else if (resp->payload_len >= 4)
        fx->json = json_loadb((const char *)resp->payload + 4, resp->payload_len - 4, 0, NULL);
}

static uint16_t
call(fx_t *fx, const char *fmt, ...)
{
    char js[8192];
    uint8_t buf[8196];
    size_t jl;
    uint64_t end = ron_now_ms() + WAIT_MS;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(js, sizeof js, fmt, ap);
    va_end(ap);
    jl = strlen(js);
    buf[0] = (uint8_t)(jl >> 24);
    buf[1] = (uint8_t)(jl >> 16);
    buf[2] = (uint8_t)(jl >> 8);
    buf[3] = (uint8_t)jl;
    memcpy(buf + 4, js, jl);
    json_decref(fx->json);
    fx->json = NULL;
    fx->done = false;
    assert_int_equal(rbus_request(fx->peer, OAP_APP_REGISTRY, buf, 4 + jl, WAIT_MS, on_reply, fx),
                     0);
    while (!fx->done && ron_now_ms() < end)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->done);
    assert_int_equal(fx->status, 0);
    assert_non_null(fx->json);
    return fx->code;
}

static const char *
jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (v == NULL)
        fail_msg("no string %s in %s", key, json_dumps(o, JSON_COMPACT));
    return v;
}

static void
approve(fx_t *fx, const char *idhex, const uint8_t pk[32], const uint8_t sk[64])
{
    uint8_t id[REG_HASH_LEN], sig[REG_SIG_LEN];
    char pkh[65], sigh[129];
    assert_int_equal(ron_hex_decode(id, sizeof id, idhex, strlen(idhex)), 0);
    assert_int_equal(reg_approval_sign(id, sk, sig), 0);
    ron_hex_encode(pkh, pk, 32);
    ron_hex_encode(sigh, sig, sizeof sig);
    call(fx, "{\"op\":\"approve\",\"id\":\"%s\",\"pk\":\"%s\",\"sig\":\"%s\"}", idhex, pkh, sigh);
}

static void
protocol_walk(bool use_unix, bool amnesia)
{
    fx_t fx;
    uint8_t pk[4][32], sk[4][64];
    reg_desc_t *d = calloc(1, sizeof *d);
    reg_report_t rep;
    char *desc, id[65], *line;
    size_t n;

    assert_true(sodium_init() >= 0);
    for (int i = 0; i < 4; i++)
        crypto_sign_keypair(pk[i], sk[i]);
    fx_open(&fx, use_unix, amnesia);

    assert_int_equal(call(&fx, "{\"op\":\"head\"}"), 200);
    assert_string_equal(jstr(fx.json, "version"), "0");
    assert_true(json_is_true(json_object_get(fx.json, "writable")));
    assert_int_equal(call(&fx, "{\"op\":\"signers\"}"), 404);

    d->version = 1;
    d->n_peers = 1;
    strcpy(d->peers[0], "[::1]:5302");
    d->threshold = 2;
    d->n_signers = 3;
    memcpy(d->signers, pk, 3 * 32);
    assert_int_equal(reg_desc_encode(d, &desc, &n), 0);
    assert_int_equal(call(&fx, "{\"op\":\"propose\",\"descriptor\":%s}", desc), 200);
    snprintf(id, sizeof id, "%s", jstr(fx.json, "id"));
    assert_string_equal(jstr(fx.json, "version"), "1");

    approve(&fx, id, pk[0], sk[0]);
    assert_int_equal(fx.code, 200);
    assert_string_equal(jstr(fx.json, "approvals"), "1");
    assert_string_equal(jstr(fx.json, "threshold"), "2");
    approve(&fx, id, pk[0], sk[0]);
    assert_int_equal(fx.code, 409);
    assert_string_equal(jstr(fx.json, "reason"), "duplicate_approval");
    approve(&fx, id, pk[3], sk[3]);
    assert_int_equal(fx.code, 403);
    assert_string_equal(jstr(fx.json, "reason"), "unknown_signer");
    assert_int_equal(call(&fx, "{\"op\":\"commit\",\"id\":\"%s\"}", id), 409);
    assert_string_equal(jstr(fx.json, "reason"), "quorum");
    approve(&fx, id, pk[2], sk[2]);
    assert_int_equal(fx.code, 200);
    assert_int_equal(call(&fx, "{\"op\":\"commit\",\"id\":\"%s\"}", id), 200);
    assert_string_equal(jstr(fx.json, "version"), "1");
    assert_string_equal(jstr(fx.json, "hash") + 3, id);
    /* the same proposal again: its base is gone */
    assert_int_equal(call(&fx, "{\"op\":\"propose\",\"descriptor\":%s}", desc), 409);
    assert_string_equal(jstr(fx.json, "reason"), "stale_base");

    assert_int_equal(call(&fx, "{\"op\":\"get\",\"version\":\"1\"}"), 200);
    n = strlen(jstr(fx.json, "record"));
    line = malloc(n + 1);
    memcpy(line, jstr(fx.json, "record"), n);
    line[n] = '\n';
    assert_int_equal(reg_verify_buf(line, n + 1, 1, NULL, &rep), 0);
    free(line);
    assert_int_equal(call(&fx, "{\"op\":\"get\",\"version\":\"2\"}"), 404);
    assert_int_equal(call(&fx, "{\"op\":\"signers\"}"), 200);
    assert_string_equal(jstr(fx.json, "threshold"), "2");
    assert_int_equal(json_array_size(json_object_get(fx.json, "keys")), 3);

    /* bad requests: one 400 each, naming the field */
    assert_int_equal(call(&fx, "{\"op\":\"head\",\"x\":1}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "x");
    assert_int_equal(call(&fx, "{\"op\":\"get\",\"version\":1}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "version");
    assert_int_equal(call(&fx, "{\"op\":\"commit\",\"id\":\"zz\"}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "id");
    assert_int_equal(call(&fx, "{\"op\":\"propose\",\"descriptor\":{\"v\":1}}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "descriptor");
    assert_int_equal(call(&fx, "{\"op\":\"propose\",\"descriptor\":{\"v\":1,\"v\":1}}"), 400);
    assert_int_equal(call(&fx, "{\"op\":\"rename\"}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "op");
    assert_int_equal(call(&fx, "{\"op\":\"commit\",\"id\":\"%064d\"}", 0), 404);

    free(desc);
    free(d);
    fx_close(&fx);
}

static void
test_registry_service_walks_propose_approve_commit_in_process_ram(void **state)
{
    (void)state;
    protocol_walk(false, true);
}

static void
test_registry_service_walks_propose_approve_commit_over_unix_sockets_with_a_file(void **state)
{
    (void)state;
    protocol_walk(true, false);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_service_walks_propose_approve_commit_in_process_ram),
        cmocka_unit_test(
            test_registry_service_walks_propose_approve_commit_over_unix_sockets_with_a_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
