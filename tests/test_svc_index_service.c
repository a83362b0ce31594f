/*
 * test_svc_index_service.c - the index & naming protocol (idx_service.c)
 * over a real ron-bus (in-process and Unix sockets) against a real index
 * (LMDB in a temporary directory, and the RAM backend), with records signed
 * by ron-naming's sign API. Every wait is bounded in time.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "idx_service.h"
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
    idx_service_t *svc;
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
    idx_config_t ic = {0};
    idx_t *idx = NULL;
    int rc = 0;

    memset(fx, 0, sizeof *fx);
    fx->use_unix = use_unix;
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    snprintf(fx->tmp, sizeof fx->tmp, "/tmp/ron-idxsvc-XXXXXX");
    assert_non_null(mkdtemp(fx->tmp));
    ic.data_dir = fx->tmp;
    ic.amnesia = amnesia;
    assert_int_equal(idx_new(&ic, &idx), 0);
    sc.name = "index";
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
    assert_int_equal(idx_service_new(&fx->loop, fx->srv, idx, &fx->svc), 0);
    assert_int_equal(rbus_listen(fx->srv), 0);
    fx->peer = rbus_connect(fx->cli, "index", &rc);
    assert_non_null(fx->peer);
}

static void
fx_close(fx_t *fx)
{
    json_decref(fx->json);
    idx_service_free(fx->svc);
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
    char js[2048];
    uint8_t buf[2052];
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
    assert_int_equal(rbus_request(fx->peer, OAP_APP_INDEX, buf, 4 + jl, WAIT_MS, on_reply, fx), 0);
    while (!fx->done && ron_now_ms() < end)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->done);
    assert_int_equal(fx->status, 0);
    return fx->code;
}

static const char *
jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    assert_non_null(v);
    return v;
}

/* A signed record of name -> an address made of byte fill, as JSON text (free it). */
static char *
signed_record(const char *name, uint8_t fill, uint64_t seq, const uint8_t sk[64])
{
    name_record_t rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.name, sizeof rec.name, "%s", name);
    memset(rec.addr.b, fill, sizeof rec.addr.b);
    rec.seq = seq;
    rec.ts = (uint64_t)time(NULL);
    assert_int_equal(name_record_sign(&rec, sk), 0);
    return name_record_to_json(&rec);
}

static void
publish_resolve_list_with_signed_records(bool use_unix, bool amnesia)
{
    fx_t fx;
    uint8_t pk[32], sk[64], pk2[32], sk2[64];
    char *r1, *r1b, *r2, *other, *bad;
    char *resolved;

    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    fx_open(&fx, use_unix, amnesia);
    r1 = signed_record("photos.alice", 1, 1, sk);
    r1b = signed_record("photos.alice", 2, 1, sk);
    r2 = signed_record("photos.alice", 3, 2, sk);
    other = signed_record("photos.alice", 4, 3, sk2);
    bad = strdup(r2);
    /* flip one hex digit of the signature (the last field) */
    bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == '0' ? '1' : '0';

    assert_int_equal(call(&fx, "{\"op\":\"resolve\",\"name\":\"photos.alice\"}"), 404);
    assert_string_equal(jstr(fx.json, "code"), "not_found");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":%s}", r1), 200);
    assert_string_equal(jstr(fx.json, "status"), "published");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":%s}", r1), 200);
    assert_string_equal(jstr(fx.json, "status"), "unchanged");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":%s}", r1b), 409);
    assert_string_equal(jstr(fx.json, "reason"), "stale_seq");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":%s}", other), 403);
    assert_string_equal(jstr(fx.json, "reason"), "owner");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":%s}", bad), 403);
    assert_string_equal(jstr(fx.json, "reason"), "bad_signature");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":%s}", r2), 200);

    /* resolve normalizes user input and returns the current record as published */
    assert_int_equal(call(&fx, "{\"op\":\"resolve\",\"name\":\"Photos.ALICE\"}"), 200);
    resolved = json_dumps(json_object_get(fx.json, "record"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(resolved, r2);
    free(resolved);

    assert_int_equal(call(&fx, "{\"op\":\"list\"}"), 200);
    assert_int_equal(json_array_size(json_object_get(fx.json, "records")), 1);
    assert_false(json_is_true(json_object_get(fx.json, "more")));
    assert_int_equal(call(&fx, "{\"op\":\"list\",\"prefix\":\"zz\",\"limit\":\"10\"}"), 200);
    assert_int_equal(json_array_size(json_object_get(fx.json, "records")), 0);

    assert_int_equal(call(&fx, "{\"op\":\"resolve\",\"name\":\"bad..name\"}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "name");
    assert_int_equal(call(&fx, "{\"op\":\"resolve\",\"name\":\"a.b\",\"extra\":\"1\"}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "extra");
    assert_int_equal(call(&fx, "{\"op\":\"delete\"}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "op");
    assert_int_equal(call(&fx, "{\"op\":\"publish\",\"record\":{\"name\":\"a.b\"}}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "record");
    assert_int_equal(call(&fx, "{\"op\":\"list\",\"limit\":\"0\"}"), 400);
    assert_string_equal(jstr(fx.json, "reason"), "limit");
    fx_close(&fx);
    free(r1);
    free(r1b);
    free(r2);
    free(other);
    free(bad);
}

static void
test_index_inproc_lmdb(void **state)
{
    (void)state;
    publish_resolve_list_with_signed_records(false, false);
}

static void
test_index_unix_lmdb(void **state)
{
    (void)state;
    publish_resolve_list_with_signed_records(true, false);
}

static void
test_index_inproc_amnesia(void **state)
{
    (void)state;
    publish_resolve_list_with_signed_records(false, true);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_inproc_lmdb),
        cmocka_unit_test(test_index_unix_lmdb),
        cmocka_unit_test(test_index_inproc_amnesia),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
