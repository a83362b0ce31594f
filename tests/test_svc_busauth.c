/*
 * test_svc_busauth.c - capability enforcement on the ron-bus endpoints of
 * svc-storage, svc-index and svc-registry with a real guard: an authority
 * in RAM (guard_authority_open without a directory), a guard built with
 * guard_new and fed the authority's pages with guard_apply, tokens minted
 * under the authority's current kid (auth_mint with guard_root_key) or as
 * the operator's. Requests go over a real in-process bus with the token in
 * the request frame's cap section (rbus_request_ex), as the gateway and the
 * app port forward them. Checks: a put without a capability is 401 and
 * stores nothing; a get without one is served (the default policy's public
 * read); pin with a get-only token is 403; a token revoked at the authority
 * is refused by storage as soon as the guard applied the page (the time is
 * measured and printed); a put whose bytes miss the token's prefix caveat
 * is refused at commit and stores nothing; gc needs admin; index publish
 * needs the name op (and its name-prefix); registry writes need admin; the
 * service's own token (guard_self_token) works. Every wait is bounded.
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

#include "bus_fixture.h"
#include "guard_fixture.h"
#include "idx_service.h"
#include "reg_service.h"
#include "ron_auth.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_naming.h"
#include "ron_util.h"
#include "sto_service.h"

#define WAIT_MS 10000u

typedef struct {
    bus_fx_t b; /* loop, in-process bus ("node": every service), client, the last answer */
    sto_service_t *sto;
    idx_service_t *idx;
    reg_service_t *reg;
    guard_authority_t *auth;
    guard_t *guard;
    uint8_t master[GUARD_MASTER_LEN];
    char op_token[AUTH_MAX_TOKEN + 1]; /* the operator's: every op */
} fx_t;

static void
fx_open(fx_t *fx)
{
    sto_config_t scfg = {0};
    idx_config_t icfg = {.amnesia = true};
    reg_opts_t ro = {0};
    reg_err_t rerr;
    sto_store_t *store = NULL;
    idx_t *idx = NULL;
    reg_t *reg = NULL;

    memset(fx, 0, sizeof *fx);
    assert_true(sodium_init() >= 0);
    bus_fx_open(&fx->b, false, "node", "/tmp/ron-busauth-XXXXXX", 0);
    assert_int_equal(sto_open(&scfg, &store), 0); /* RAM store */
    assert_int_equal(idx_new(&icfg, &idx), 0);
    assert_int_equal(reg_open(&ro, &reg, &rerr), 0);

    guard_fx_open(NULL, "storage", NULL, &fx->auth, &fx->guard, fx->master, fx->op_token,
                  sizeof fx->op_token);

    assert_int_equal(sto_service_new(&fx->b.loop, fx->b.srv, store, NULL, &fx->sto), 0);
    assert_int_equal(idx_service_new(&fx->b.loop, fx->b.srv, idx, &fx->idx), 0);
    assert_int_equal(reg_service_new(&fx->b.loop, fx->b.srv, reg, &fx->reg), 0);
    sto_service_set_guard(fx->sto, fx->guard);
    idx_service_set_guard(fx->idx, fx->guard);
    reg_service_set_guard(fx->reg, fx->guard);
    bus_fx_connect(&fx->b);
}

static void
fx_close(fx_t *fx)
{
    sto_service_free(fx->sto);
    idx_service_free(fx->idx);
    reg_service_free(fx->reg);
    bus_fx_close(&fx->b);
    guard_fx_close(fx->auth, fx->guard);
}

/*
 * One request to app (storage, index, registry): JSON js then raw bytes,
 * with token (NULL: none) in the cap section. Waits (bounded) and returns
 * the status code.
 */
static uint16_t
call(fx_t *fx, uint16_t app, const char *token, const void *raw, size_t raw_len, const char *js)
{
    size_t n;
    uint8_t *buf = bus_fx_frame(js, raw, raw_len, &n);
    uint16_t code = bus_fx_request(&fx->b, app, token, buf, n);

    free(buf);
    return code;
}

static const char *
jstr(fx_t *fx, const char *key)
{
    return bus_fx_jstr(fx->b.json, key);
}

/* A token under the authority's current kid and epoch with caveats (NULL-ended);
 * its identifier goes to id_out (may be NULL). */
static void
mint(fx_t *fx, char out[AUTH_MAX_TOKEN + 1], char id_out[AUTH_ID_MAX + 1], const char *cav0, ...)
{
    const char *cav[8];
    size_t n = 0;
    char id[AUTH_ID_MAX + 1];
    uint8_t key[GUARD_KEY_LEN];
    const char *kid = guard_authority_kid(fx->auth);
    va_list ap;

    va_start(ap, cav0);
    for (const char *c = cav0; c != NULL && n < 8; c = va_arg(ap, const char *))
        cav[n++] = c;
    va_end(ap);
    assert_int_equal(auth_id_new(id, kid, guard_authority_epoch(fx->auth)), 0);
    guard_root_key(fx->master, kid, key);
    assert_true(auth_mint(key, sizeof key, id, cav, n, out, AUTH_MAX_TOKEN + 1) > 0);
    if (id_out != NULL)
        snprintf(id_out, AUTH_ID_MAX + 1, "%s", id);
}

/* put bytes in one put_write with token on every request; returns the commit's code
 * (or the first failing step's) and the address in addr_out (when 200). */
static uint16_t
put_bytes(fx_t *fx, const char *token, const void *data, size_t len, char addr_out[68])
{
    char js[256], pid[24];
    uint16_t code;

    snprintf(js, sizeof js, "{\"op\":\"put_begin\",\"size\":\"%zu\"}", len);
    if ((code = call(fx, OAP_APP_STORAGE, token, NULL, 0, js)) != 200)
        return code;
    snprintf(pid, sizeof pid, "%s", jstr(fx, "put_id"));
    snprintf(js, sizeof js, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", pid);
    if ((code = call(fx, OAP_APP_STORAGE, token, data, len, js)) != 200)
        return code;
    snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", pid);
    if ((code = call(fx, OAP_APP_STORAGE, token, NULL, 0, js)) != 200)
        return code;
    snprintf(addr_out, 68, "%s", jstr(fx, "address"));
    return 200;
}

static uint16_t
addr_op(fx_t *fx, const char *token, const char *op, const char *addr)
{
    char js[160];
    snprintf(js, sizeof js, "{\"op\":\"%s\",\"address\":\"%s\"}", op, addr);
    return call(fx, OAP_APP_STORAGE, token, NULL, 0, js);
}

/* The address data would have (a put with the operator's token, then its answer). */
static size_t
stored_objects(fx_t *fx)
{
    assert_int_equal(call(fx, OAP_APP_STORAGE, fx->op_token, NULL, 0, "{\"op\":\"list\"}"), 200);
    return json_array_size(json_object_get(fx->b.json, "objects"));
}

static void
test_storage_put_without_cap_is_401_and_stores_nothing(void **state)
{
    fx_t fx;
    (void)state;

    fx_open(&fx);
    assert_int_equal(
        call(&fx, OAP_APP_STORAGE, NULL, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"5\"}"), 401);
    assert_string_equal(jstr(&fx, "reason"), "capability_required");
    assert_int_equal(sto_service_open_puts(fx.sto), 0);
    /* a token that does not verify is 401 too */
    assert_int_equal(call(&fx, OAP_APP_STORAGE, "bm90IGEgdG9rZW4", NULL, 0,
                          "{\"op\":\"put_begin\",\"size\":\"5\"}"),
                     401);
    assert_int_equal(sto_service_open_puts(fx.sto), 0);
    assert_int_equal(stored_objects(&fx), 0);
    {
        char *text = malloc(1 << 16);
        assert_true(sto_service_metrics(fx.sto, text, 1 << 16) > 0);
        assert_non_null(strstr(text, "storage_requests_total{op=\"put_begin\",status=\"401\"} 2"));
        free(text);
    }
    fx_close(&fx);
}

static void
test_storage_get_without_cap_is_served_and_pin_needs_pin(void **state)
{
    fx_t fx;
    char addr[68], get_only[AUTH_MAX_TOKEN + 1], pinner[AUTH_MAX_TOKEN + 1], js[160];
    (void)state;

    fx_open(&fx);
    assert_int_equal(put_bytes(&fx, fx.op_token, "hello", 5, addr), 200);
    snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\"}", addr);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, NULL, NULL, 0, js), 200); /* public read */
    assert_int_equal(addr_op(&fx, NULL, "stat", addr), 200);
    mint(&fx, get_only, NULL, "ops = get", NULL);
    assert_int_equal(addr_op(&fx, get_only, "stat", addr), 200);
    assert_int_equal(addr_op(&fx, get_only, "pin", addr), 403);
    assert_string_equal(jstr(&fx, "code"), "forbidden");
    assert_int_equal(addr_op(&fx, NULL, "pin", addr), 401);
    assert_int_equal(addr_op(&fx, get_only, "unpin", addr), 403);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, get_only, NULL, 0, "{\"op\":\"list\"}"), 403);
    /* a get-only token cannot put either */
    assert_int_equal(put_bytes(&fx, get_only, "x", 1, addr), 403);
    mint(&fx, pinner, NULL, "ops = get,pin", NULL);
    assert_int_equal(addr_op(&fx, pinner, "pin", addr), 200);
    assert_string_equal(jstr(&fx, "pins"), "2");
    /* gc is admin: a pin token is refused, the operator's allowed */
    assert_int_equal(
        call(&fx, OAP_APP_STORAGE, pinner, NULL, 0, "{\"op\":\"gc\",\"target\":\"0\"}"), 403);
    assert_int_equal(
        call(&fx, OAP_APP_STORAGE, fx.op_token, NULL, 0, "{\"op\":\"gc\",\"target\":\"0\"}"), 200);
    fx_close(&fx);
}

/* The `dht` endpoint of the pin-that-fetches test: nobody provides anything. */
static void
on_empty_dht(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    static const char js[] = "{\"providers\":[]}";
    uint8_t b[4 + sizeof js];
    (void)f;
    (*(int *)arg)++;
    b[0] = b[1] = b[2] = 0;
    b[3] = (uint8_t)(sizeof js - 1);
    memcpy(b + 4, js, sizeof js - 1);
    rbus_respond(req, 200, b, 4 + sizeof js - 1);
}

static void
on_no_overlay(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    (void)arg, (void)f;
    rbus_respond_error_ex(req, 404, "not_found", NULL, 0, "nothing here");
}

static void
test_storage_pin_that_fetches_also_needs_get(void **state)
{
    fx_t fx;
    rbus_config_t c = {.transport = RBUS_TRANSPORT_INPROC};
    rbus_t *bdht, *bovl;
    rbus_peer_t *to_dht, *to_ovl;
    char pin_only[AUTH_MAX_TOKEN + 1], pinner[AUTH_MAX_TOKEN + 1], absent[68];
    int finds = 0, rc = 0;
    (void)state;

    fx_open(&fx);
    c.hub = fx.b.hub;
    c.name = "dht";
    bdht = rbus_new(&fx.b.loop, &c, &rc);
    c.name = "overlay";
    bovl = rbus_new(&fx.b.loop, &c, &rc);
    assert_non_null(bdht);
    assert_non_null(bovl);
    assert_int_equal(rbus_handle(bdht, OAP_APP_DHT, on_empty_dht, &finds), 0);
    assert_int_equal(rbus_handle(bovl, OAP_APP_OVERLAY, on_no_overlay, NULL), 0);
    assert_int_equal(rbus_listen(bdht), 0);
    assert_int_equal(rbus_listen(bovl), 0);
    to_dht = rbus_connect(fx.b.srv, "dht", &rc);
    to_ovl = rbus_connect(fx.b.srv, "overlay", &rc);
    assert_non_null(to_dht);
    assert_non_null(to_ovl);
    sto_service_set_network(fx.sto, to_dht, to_ovl);

    snprintf(absent, sizeof absent, "b3:%064d", 7);
    /* a pin of an object the node lacks reads it from the network: pin alone is not enough */
    mint(&fx, pin_only, NULL, "ops = pin", NULL);
    assert_int_equal(addr_op(&fx, pin_only, "pin", absent), 403);
    assert_string_equal(jstr(&fx, "code"), "forbidden");
    assert_int_equal(finds, 0);
    assert_int_equal(addr_op(&fx, NULL, "pin", absent), 401);
    assert_int_equal(finds, 0);
    /* with get too the fetch runs: nobody provides it, so 404 after one lookup */
    mint(&fx, pinner, NULL, "ops = get,pin", NULL);
    assert_int_equal(addr_op(&fx, pinner, "pin", absent), 404);
    assert_int_equal(finds, 1);

    sto_service_set_network(fx.sto, NULL, NULL);
    rbus_peer_close(to_dht);
    rbus_peer_close(to_ovl);
    rbus_free(bdht);
    rbus_free(bovl);
    fx_close(&fx);
}

static void
test_storage_refuses_a_revoked_token_right_after_apply(void **state)
{
    fx_t fx;
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1], addr[68];
    guard_entry_t e;
    uint64_t prev;
    struct timespec t0, t1;
    double ms;
    (void)state;

    fx_open(&fx);
    mint(&fx, tok, id, "ops = get,put,pin", NULL);
    assert_int_equal(put_bytes(&fx, tok, "before", 6, addr), 200);
    assert_int_equal(addr_op(&fx, tok, "pin", addr), 200);
    /* the kernel's path: revoke at the authority, push the entry, the guard applies it */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    prev = guard_head(fx.guard);
    assert_int_equal(guard_authority_revoke(fx.auth, id, strlen(id), 0, (int64_t)time(NULL), &e),
                     0);
    assert_int_equal(guard_apply(fx.guard, prev, guard_authority_head(fx.auth), &e, 1), 0);
    assert_int_equal(addr_op(&fx, tok, "pin", addr), 401);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_string_equal(jstr(&fx, "reason"), "capability_revoked");
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("storage: revocation (authority revoke + guard_apply) to a refused bus request: "
           "%.3f ms\n",
           ms);
    assert_true(ms < 1000.0);
    assert_int_equal(put_bytes(&fx, tok, "after", 5, addr), 401);
    assert_int_equal(stored_objects(&fx), 1);
    fx_close(&fx);
}

static void
test_storage_revocation_during_an_upload_stores_nothing(void **state)
{
    fx_t fx;
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1], pid[24], js[160];
    guard_entry_t e;
    uint64_t prev;
    (void)state;

    fx_open(&fx);
    mint(&fx, tok, id, "ops = put", NULL);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, tok, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    snprintf(pid, sizeof pid, "%s", jstr(&fx, "put_id"));
    snprintf(js, sizeof js, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", pid);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, NULL, "abc", 3, js), 200);
    prev = guard_head(fx.guard);
    assert_int_equal(guard_authority_revoke(fx.auth, id, strlen(id), 0, (int64_t)time(NULL), &e),
                     0);
    assert_int_equal(guard_apply(fx.guard, prev, guard_authority_head(fx.auth), &e, 1), 0);
    snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", pid);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, NULL, NULL, 0, js), 401);
    assert_int_equal(sto_service_open_puts(fx.sto), 0);
    assert_int_equal(stored_objects(&fx), 0);
    fx_close(&fx);
}

static void
test_storage_prefix_and_max_bytes_caveats_bind_the_put(void **state)
{
    fx_t fx;
    char tok[AUTH_MAX_TOKEN + 1], small[AUTH_MAX_TOKEN + 1], addr[68], cav[80], pid[24], js[160];
    uint8_t data[64];
    (void)state;

    fx_open(&fx);
    memset(data, 7, sizeof data);
    /* learn the bytes' address, then forget them */
    assert_int_equal(put_bytes(&fx, fx.op_token, data, sizeof data, addr), 200);
    assert_int_equal(addr_op(&fx, fx.op_token, "unpin", addr), 200);
    assert_int_equal(
        call(&fx, OAP_APP_STORAGE, fx.op_token, NULL, 0, "{\"op\":\"gc\",\"target\":\"0\"}"), 200);
    assert_int_equal(stored_objects(&fx), 0);
    /* a prefix the address lacks: refused at commit, nothing stored */
    snprintf(cav, sizeof cav, "prefix = b3:%c", addr[3] == '0' ? '1' : '0');
    mint(&fx, tok, NULL, "ops = put", cav, NULL);
    assert_int_equal(put_bytes(&fx, tok, data, sizeof data, addr + 0 /* unchanged on failure */),
                     403);
    assert_string_equal(jstr(&fx, "code"), "forbidden");
    assert_int_equal(stored_objects(&fx), 0);
    assert_int_equal(sto_service_open_puts(fx.sto), 0);
    /* max-bytes over an undeclared size: the write past it is refused */
    mint(&fx, small, NULL, "ops = put", "max-bytes = 10", NULL);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, small, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    snprintf(pid, sizeof pid, "%s", jstr(&fx, "put_id"));
    snprintf(js, sizeof js, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", pid);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, NULL, data, sizeof data, js), 403);
    /* a declared size over it is refused at put_begin */
    assert_int_equal(
        call(&fx, OAP_APP_STORAGE, small, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"64\"}"), 403);
    for (int i = 0; i < 100 && sto_service_open_puts(fx.sto) > 0; i++)
        uv_run(&fx.b.loop, UV_RUN_NOWAIT), usleep(1000);
    assert_int_equal(sto_service_open_puts(fx.sto), 0);
    assert_int_equal(stored_objects(&fx), 0);
    fx_close(&fx);
}

static void
test_storage_self_token_works(void **state)
{
    fx_t fx;
    char self[AUTH_MAX_TOKEN + 1], addr[68];
    (void)state;

    fx_open(&fx);
    assert_true(guard_self_token(fx.guard, self, sizeof self) > 0);
    assert_int_equal(put_bytes(&fx, self, "mine", 4, addr), 200);
    assert_int_equal(addr_op(&fx, self, "pin", addr), 200);
    assert_int_equal(call(&fx, OAP_APP_STORAGE, self, NULL, 0, "{\"op\":\"gc\",\"target\":\"0\"}"),
                     200);
    fx_close(&fx);
}

/* A signed record of name as JSON text (free it). */
static char *
signed_record(const char *name, const uint8_t sk[64])
{
    name_record_t rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.name, sizeof rec.name, "%s", name);
    memset(rec.addr.b, 1, sizeof rec.addr.b);
    rec.seq = 1;
    rec.ts = (uint64_t)time(NULL);
    assert_int_equal(name_record_sign(&rec, sk), 0);
    return name_record_to_json(&rec);
}

static void
test_index_publish_needs_the_name_op(void **state)
{
    fx_t fx;
    uint8_t pk[32], sk[64];
    char get_only[AUTH_MAX_TOKEN + 1], namer[AUTH_MAX_TOKEN + 1], js[2048];
    char *r1, *r2;
    (void)state;

    fx_open(&fx);
    crypto_sign_keypair(pk, sk);
    r1 = signed_record("photos.alice", sk);
    r2 = signed_record("docs.bob", sk);
    snprintf(js, sizeof js, "{\"op\":\"publish\",\"record\":%s}", r1);
    assert_int_equal(call(&fx, OAP_APP_INDEX, NULL, NULL, 0, js), 401);
    mint(&fx, get_only, NULL, "ops = get", NULL);
    assert_int_equal(call(&fx, OAP_APP_INDEX, get_only, NULL, 0, js), 403);
    assert_int_equal(
        call(&fx, OAP_APP_INDEX, NULL, NULL, 0, "{\"op\":\"resolve\",\"name\":\"photos.alice\"}"),
        404); /* nothing was published; the read itself was allowed */
    mint(&fx, namer, NULL, "ops = name", "name-prefix = photos.", NULL);
    assert_int_equal(call(&fx, OAP_APP_INDEX, namer, NULL, 0, js), 200);
    snprintf(js, sizeof js, "{\"op\":\"publish\",\"record\":%s}", r2);
    assert_int_equal(call(&fx, OAP_APP_INDEX, namer, NULL, 0, js), 403); /* outside the prefix */
    assert_int_equal(
        call(&fx, OAP_APP_INDEX, NULL, NULL, 0, "{\"op\":\"resolve\",\"name\":\"photos.alice\"}"),
        200);
    assert_int_equal(
        call(&fx, OAP_APP_INDEX, NULL, NULL, 0, "{\"op\":\"resolve\",\"name\":\"docs.bob\"}"), 404);
    free(r1);
    free(r2);
    fx_close(&fx);
}

static void
test_registry_writes_need_admin(void **state)
{
    fx_t fx;
    char get_only[AUTH_MAX_TOKEN + 1];
    (void)state;

    fx_open(&fx);
    assert_int_equal(call(&fx, OAP_APP_REGISTRY, NULL, NULL, 0, "{\"op\":\"head\"}"), 200);
    assert_int_equal(call(&fx, OAP_APP_REGISTRY, NULL, NULL, 0,
                          "{\"op\":\"commit\",\"id\":\"0000000000000000000000000000000000000000"
                          "000000000000000000000000\"}"),
                     401);
    mint(&fx, get_only, NULL, "ops = get", NULL);
    assert_int_equal(call(&fx, OAP_APP_REGISTRY, get_only, NULL, 0,
                          "{\"op\":\"commit\",\"id\":\"0000000000000000000000000000000000000000"
                          "000000000000000000000000\"}"),
                     403);
    /* with admin the request reaches the registry, which has no such proposal */
    assert_int_equal(call(&fx, OAP_APP_REGISTRY, fx.op_token, NULL, 0,
                          "{\"op\":\"commit\",\"id\":\"0000000000000000000000000000000000000000"
                          "000000000000000000000000\"}"),
                     404);
    fx_close(&fx);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_storage_put_without_cap_is_401_and_stores_nothing),
        cmocka_unit_test(test_storage_get_without_cap_is_served_and_pin_needs_pin),
        cmocka_unit_test(test_storage_pin_that_fetches_also_needs_get),
        cmocka_unit_test(test_storage_refuses_a_revoked_token_right_after_apply),
        cmocka_unit_test(test_storage_revocation_during_an_upload_stores_nothing),
        cmocka_unit_test(test_storage_prefix_and_max_bytes_caveats_bind_the_put),
        cmocka_unit_test(test_storage_self_token_works),
        cmocka_unit_test(test_index_publish_needs_the_name_op),
        cmocka_unit_test(test_registry_writes_need_admin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
