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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "bus_fixture.h"
#include "dht_service.h"
#include "idx_client.h"
#include "idx_service.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"

#define WAIT_MS BUS_FX_WAIT_MS

typedef bus_fx_t fx_t; /* svc: the idx_service_t */

static void
fx_open(fx_t *fx, bool use_unix, bool amnesia)
{
    idx_config_t ic = {0};
    idx_service_t *svc = NULL;
    idx_t *idx = NULL;

    bus_fx_open(fx, use_unix, "index", "/tmp/ron-idxsvc-XXXXXX", OAP_APP_INDEX);
    ic.data_dir = fx->tmp;
    ic.amnesia = amnesia;
    assert_int_equal(idx_new(&ic, &idx), 0);
    assert_int_equal(idx_service_new(&fx->loop, fx->srv, idx, &svc), 0);
    fx->svc = svc;
    bus_fx_connect(fx);
}

static void
fx_close(fx_t *fx)
{
    idx_service_free(fx->svc);
    bus_fx_close(fx);
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

    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"resolve\",\"name\":\"photos.alice\"}"), 404);
    assert_string_equal(bus_fx_jstr(fx.json, "code"), "not_found");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":%s}", r1), 200);
    assert_string_equal(bus_fx_jstr(fx.json, "status"), "published");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":%s}", r1), 200);
    assert_string_equal(bus_fx_jstr(fx.json, "status"), "unchanged");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":%s}", r1b), 409);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "stale_seq");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":%s}", other), 403);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "owner");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":%s}", bad), 403);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "bad_signature");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":%s}", r2), 200);

    /* resolve normalizes user input and returns the current record as published */
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"resolve\",\"name\":\"Photos.ALICE\"}"), 200);
    resolved = json_dumps(json_object_get(fx.json, "record"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(resolved, r2);
    free(resolved);

    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"list\"}"), 200);
    assert_int_equal(json_array_size(json_object_get(fx.json, "records")), 1);
    assert_false(json_is_true(json_object_get(fx.json, "more")));
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"list\",\"prefix\":\"zz\",\"limit\":\"10\"}"), 200);
    assert_int_equal(json_array_size(json_object_get(fx.json, "records")), 0);

    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"resolve\",\"name\":\"bad..name\"}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "name");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"resolve\",\"name\":\"a.b\",\"extra\":\"1\"}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "extra");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"delete\"}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "op");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"publish\",\"record\":{\"name\":\"a.b\"}}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "record");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"list\",\"limit\":\"0\"}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "limit");
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

/* ---- names across nodes: two index services, each with its own DHT service ---- */

typedef struct {
    uv_loop_t loop;
    rbus_hub_t *hub;
    rbus_t *bus[2], *cli;
    dht_service_t *dht[2];
    idx_service_t *svc[2];
    rbus_peer_t *dpeer[2], *ipeer[2];
    uint8_t sk[2][64];
    bool done;
    idx_client_result_t res;
    name_record_t rec;
    bool has_rec;
} across_t;

static void
across_cb(void *arg, const idx_client_result_t *res)
{
    across_t *a = arg;
    a->res = *res;
    a->has_rec = res->rec != NULL;
    if (res->rec != NULL)
        a->rec = *res->rec;
    a->done = true;
}

static void
across_wait(across_t *a)
{
    assert_true(bus_fx_loop_wait(&a->loop, &a->done, WAIT_MS));
}

static int
udp_fd(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void
test_index_resolve_miss_is_answered_from_the_dht_and_kept(void **state)
{
    across_t a;
    rbus_config_t cc = {.transport = RBUS_TRANSPORT_INPROC, .name = "client"};
    static const char *const names[2] = {"index0", "index1"};
    char seed[64];
    const char *seeds[1] = {seed};
    name_record_t rec;
    uint8_t opk[32], osk[64];
    int rc = 0;
    (void)state;

    memset(&a, 0, sizeof a);
    assert_int_equal(uv_loop_init(&a.loop), 0);
    a.hub = rbus_hub_new(&a.loop);
    cc.hub = a.hub;
    a.cli = rbus_new(&a.loop, &cc, &rc);
    for (int i = 0; i < 2; i++) {
        rbus_config_t bc = {.transport = RBUS_TRANSPORT_INPROC, .hub = a.hub, .name = names[i]};
        dht_service_config_t dc = {0};
        idx_config_t ic = {.amnesia = true};
        idx_t *idx = NULL;
        uint8_t pk[32];
        char err[256];
        a.bus[i] = rbus_new(&a.loop, &bc, &rc);
        assert_non_null(a.bus[i]);
        crypto_sign_keypair(pk, a.sk[i]);
        dht_id_of_key(dc.id, pk);
        dc.sk = a.sk[i];
        dc.udp_fd = udp_fd();
        dc.advertise = "127.0.0.1:5301";
        dc.seeds = seeds;
        dc.n_seeds = i == 0 ? 0 : 1;
        /* one endpoint serves both protocols: the index's handler and the DHT's */
        assert_int_equal(dht_service_new(&a.loop, a.bus[i], &dc, &a.dht[i], err, sizeof err), 0);
        if (i == 0)
            snprintf(seed, sizeof seed, "%s", dht_service_addr(a.dht[0]));
        assert_int_equal(idx_new(&ic, &idx), 0);
        assert_int_equal(idx_service_new(&a.loop, a.bus[i], idx, &a.svc[i]), 0);
        assert_int_equal(rbus_listen(a.bus[i]), 0);
        a.dpeer[i] = rbus_connect(a.bus[i], names[i], &rc); /* the index asks its own node's DHT */
        idx_service_set_dht(a.svc[i], a.dpeer[i]);
        a.ipeer[i] = rbus_connect(a.cli, names[i], &rc);
    }
    /* the two DHTs know each other */
    for (uint64_t end = ron_now_ms() + WAIT_MS;
         (dht_table_size(dht_service_dht(a.dht[0])) == 0 ||
          dht_table_size(dht_service_dht(a.dht[1])) == 0) && ron_now_ms() < end;)
        uv_run(&a.loop, UV_RUN_ONCE);
    assert_true(dht_table_size(dht_service_dht(a.dht[1])) > 0);

    crypto_sign_keypair(opk, osk);
    memset(&rec, 0, sizeof rec);
    snprintf(rec.name, sizeof rec.name, "across.nodes");
    randombytes_buf(rec.addr.b, sizeof rec.addr.b);
    rec.seq = 1;
    rec.ts = (uint64_t)time(NULL);
    assert_int_equal(name_record_sign(&rec, osk), 0);
    a.done = false;
    assert_int_equal(idx_client_publish(a.ipeer[0], &rec, across_cb, &a), 0);
    across_wait(&a);
    assert_int_equal(a.res.code, 200);
    /* node 1 never saw the publish: its resolve misses locally and asks the DHT */
    for (int tries = 0;; tries++) {
        a.done = false;
        assert_int_equal(idx_client_resolve(a.ipeer[1], "Across.Nodes", across_cb, &a), 0);
        across_wait(&a);
        if (a.res.code == 200 || tries > 20)
            break;
    }
    assert_int_equal(a.res.code, 200);
    assert_true(a.has_rec);
    assert_memory_equal(a.rec.sig, rec.sig, sizeof rec.sig);
    /* kept: with the DHT gone, node 1's index still answers */
    idx_service_set_dht(a.svc[1], NULL);
    a.done = false;
    assert_int_equal(idx_client_resolve(a.ipeer[1], "across.nodes", across_cb, &a), 0);
    across_wait(&a);
    assert_int_equal(a.res.code, 200);
    /* a name nobody has is still 404 */
    a.done = false;
    assert_int_equal(idx_client_resolve(a.ipeer[0], "nobody.anywhere", across_cb, &a), 0);
    across_wait(&a);
    assert_int_equal(a.res.code, 404);

    for (int i = 0; i < 2; i++) {
        rbus_peer_close(a.ipeer[i]);
        rbus_peer_close(a.dpeer[i]);
        idx_service_free(a.svc[i]);
        dht_service_free(a.dht[i]);
        rbus_free(a.bus[i]);
    }
    rbus_free(a.cli);
    uv_run(&a.loop, UV_RUN_DEFAULT);
    rbus_hub_free(a.hub);
    uv_run(&a.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&a.loop), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_inproc_lmdb),
        cmocka_unit_test(test_index_unix_lmdb),
        cmocka_unit_test(test_index_inproc_amnesia),
        cmocka_unit_test(test_index_resolve_miss_is_answered_from_the_dht_and_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
