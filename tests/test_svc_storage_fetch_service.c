/*
 * test_svc_storage_fetch_service.c - fetch on miss in the storage service,
 * over a real in-process ron-bus with a real file store. The `dht` and
 * `overlay` endpoints are played by this test on their own buses, speaking
 * the contract's wire format (NET-CONTRACT.md): find_providers answers a
 * configured provider list; overlay fetch serves real piece records (the
 * last piece first when outside the range, proofs from a provider store) or
 * fails as the provider is told to (404, 502 bad_piece, 503). Each test
 * checks what was asked of whom as well as the bytes the client got.
 */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus_fixture.h"
#include "oap.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"
#include "sto_fetch.h"
#include "dht_client.h"
#include "sto_service.h"

#define WAIT_MS BUS_FX_WAIT_MS
#define NPROV 4

/* LIAR: answers 200 with every piece of the range but the last altered
 * (its bytes, or with fx->send_cv its chaining value), as a provider whose
 * lie the overlay would catch; the test plays the overlay, so the records
 * reach storage as they are */
enum { GOOD, NOTFOUND, BAD, DOWN, LIAR };
enum { DHT_OK, DHT_504, DHT_503, DHT_SILENT }; /* how the dht answers find_providers */

typedef struct {
    int kind;
    uint64_t asked;  /* overlay fetches naming it */
    uint64_t served; /* piece bytes it served */
} prov_t;

typedef struct {
    bus_fx_t b;           /* loop, bus, the storage service (b.svc) and client, the last answer */
    rbus_t *bdht, *bovl;  /* the endpoints this test plays */
    rbus_peer_t *to_dht, *to_ovl;
    sto_store_t *pst;     /* what the providers hold */
    prov_t prov[NPROV];
    size_t nprov;         /* providers find_providers names */
    int dht_mode;         /* DHT_OK, ... */
    rbus_req_t *held;     /* DHT_SILENT: the find_providers not answered yet */
    bool provide_silent;  /* provide with wait_ms: not answered (held_provide) */
    rbus_req_t *held_provide;
    uint64_t finds, provides, unprovides;
    uint8_t provided[STO_ADDR_LEN], unprovided[STO_ADDR_LEN];
    uint64_t asked_lo, asked_hi; /* byte span of every overlay fetch asked (min, max end) */
    bool send_cv;     /* answers carry each record's chaining value ("cv":true), as the
                         overlay's do */
    bool block_pool;  /* the first overlay fetch occupies every worker thread (pool_block) */
} fx_t;

/* The file's short names for the fixture's helpers (tests/bus_fixture.h). */
static void (*const respond_json)(rbus_req_t *req, const char *js) = bus_fx_respond_json;
static json_t *(*const req_json)(const oap_frame_t *f) = bus_fx_req_json;

static void
prov_id(size_t i, uint8_t id[32])
{
    memset(id, 0, 32);
    id[0] = 0xa0;
    id[31] = (uint8_t)(i + 1);
}

/* ---- the `dht` endpoint ---- */

static void
on_dht(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    fx_t *fx = arg;
    json_t *o = req_json(f);
    const char *op = json_string_value(json_object_get(o, "op"));
    const char *a = json_string_value(json_object_get(o, "address"));
    uint8_t addr[STO_ADDR_LEN] = {0};

    if (a != NULL)
        assert_int_equal(sto_addr_parse(a, addr), 0);
    if (op != NULL && strcmp(op, "find_providers") == 0) {
        char js[2048], hex[65];
        size_t n = 0;
        fx->finds++;
        if (fx->dht_mode == DHT_504 || fx->dht_mode == DHT_503) {
            rbus_respond_error_ex(req, fx->dht_mode == DHT_504 ? 504 : 503,
                                  fx->dht_mode == DHT_504 ? "timeout" : "unavailable", NULL, 0,
                                  "the lookup failed");
            json_decref(o);
            return;
        }
        if (fx->dht_mode == DHT_SILENT && fx->held == NULL) {
            fx->held = req; /* answered late, by the test */
            json_decref(o);
            return;
        }
        n += (size_t)snprintf(js + n, sizeof js - n, "{\"providers\":[");
        for (size_t i = 0; i < fx->nprov; i++) {
            uint8_t id[32];
            prov_id(i, id);
            for (int k = 0; k < 32; k++)
                snprintf(hex + 2 * k, 3, "%02x", id[k]);
            n += (size_t)snprintf(js + n, sizeof js - n,
                                  "%s{\"id\":\"%s\",\"addr\":\"127.0.0.1:%zu\"}", i ? "," : "", hex,
                                  7000 + i);
        }
        snprintf(js + n, sizeof js - n, "],\"complete\":true}");
        respond_json(req, js);
    } else if (op != NULL && strcmp(op, "provide") == 0) {
        fx->provides++;
        memcpy(fx->provided, addr, STO_ADDR_LEN);
        if (json_object_get(o, "wait_ms") == NULL)
            respond_json(req, "{}");
        else if (fx->provide_silent && fx->held_provide == NULL)
            fx->held_provide = req; /* the dht does not answer in time */
        else
            respond_json(req, "{\"state\":\"announced\",\"announced\":\"3\",\"sent\":\"3\"}");
    } else if (op != NULL && strcmp(op, "unprovide") == 0) {
        fx->unprovides++;
        memcpy(fx->unprovided, addr, STO_ADDR_LEN);
        respond_json(req, "{}");
    } else {
        rbus_respond_error_ex(req, 400, "bad_request", "op", 0, "op: unknown");
    }
    json_decref(o);
}

/* ---- the `overlay` endpoint ---- */

static size_t
put_record(sto_reader_t *r, uint64_t piece, uint8_t *out)
{
    uint64_t size = sto_reader_size(r);
    size_t len = sto_tree_piece_len(size, piece), plen = 0;
    assert_int_equal(sto_reader_proof(r, piece, out + 10, STO_TREE_MAX_PROOF, &plen), 0);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(piece >> (56 - 8 * i));
    out[8] = (uint8_t)(plen >> 8);
    out[9] = (uint8_t)plen;
    assert_int_equal(sto_reader_read(r, piece * STO_PIECE_LEN, out + 10 + plen, len),
                     (ssize_t)len);
    return 10 + plen + len;
}

/* Worker threads held by pool_block (UV_THREADPOOL_SIZE is set to
 * POOL_THREADS in main), until pool_release or POOL_BLOCK_MS pass. */
#define POOL_THREADS 4
#define POOL_BLOCK_MS 8000
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static bool pool_open;
static int pool_held; /* blocking works not returned yet (loop side) */
static uv_work_t pool_works[POOL_THREADS];

static void
pool_work(uv_work_t *w)
{
    struct timespec until;
    (void)w;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += POOL_BLOCK_MS / 1000;
    pthread_mutex_lock(&pool_mu);
    while (!pool_open && pthread_cond_timedwait(&pool_cv, &pool_mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&pool_mu);
}

static void
pool_work_done(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    pool_held--;
}

/* Occupy every worker thread: storage's jobs queued from now on wait. */
static void
pool_block(uv_loop_t *loop)
{
    pool_open = false;
    for (int i = 0; i < POOL_THREADS; i++) {
        assert_int_equal(uv_queue_work(loop, &pool_works[i], pool_work, pool_work_done), 0);
        pool_held++;
    }
}

/* Free the worker threads and wait (bounded) until the blocking works returned. */
static void
pool_release(uv_loop_t *loop)
{
    uint64_t end = ron_now_ms() + WAIT_MS;
    pthread_mutex_lock(&pool_mu);
    pool_open = true;
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    while (pool_held > 0 && ron_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(pool_held, 0);
}

/* Write piece `piece`'s record (put_record) to out and its chaining value
 * to cv; lie: alter the record's bytes, or with fx->send_cv its cv. */
static size_t
overlay_record(fx_t *fx, sto_reader_t *r, const uint8_t addr[STO_ADDR_LEN], uint64_t piece,
               bool lie, uint8_t *out, uint8_t cv[32])
{
    uint64_t size = sto_reader_size(r);
    size_t n = put_record(r, piece, out), plen = (size_t)out[8] << 8 | out[9];
    size_t len = sto_tree_piece_len(size, piece);
    assert_int_equal(sto_tree_proof_verify_cv(addr, size, piece, out + 10 + plen, len, out + 10,
                                              plen, cv),
                     0);
    if (lie && fx->send_cv)
        cv[5] ^= 0x40;
    else if (lie && len > 0)
        out[10 + plen + len / 2] ^= 0x01;
    return n;
}

static void
on_overlay(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    fx_t *fx = arg;
    json_t *o = req_json(f);
    const char *a = json_string_value(json_object_get(o, "address"));
    const char *pid = json_string_value(json_object_get(json_object_get(o, "provider"), "id"));
    uint64_t off = strtoull(json_string_value(json_object_get(o, "offset")), NULL, 10);
    uint64_t len = strtoull(json_string_value(json_object_get(o, "length")), NULL, 10);
    uint8_t addr[STO_ADDR_LEN], id[32];
    sto_reader_t *r = NULL;
    size_t p = SIZE_MAX;

    assert_non_null(a);
    assert_non_null(pid);
    assert_int_equal(sto_addr_parse(a, addr), 0);
    for (size_t i = 0; i < fx->nprov; i++) {
        char hex[65];
        prov_id(i, id);
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", id[k]);
        if (strcmp(hex, pid) == 0)
            p = i;
    }
    assert_true(p != SIZE_MAX);
    fx->prov[p].asked++;
    if (off < fx->asked_lo)
        fx->asked_lo = off;
    if (off + len > fx->asked_hi)
        fx->asked_hi = off + len;
    json_decref(o);
    switch (fx->prov[p].kind) {
    case NOTFOUND:
        rbus_respond_error_ex(req, 404, "not_found", NULL, 0, "the provider lacks it");
        return;
    case BAD:
        rbus_respond_error_ex(req, 502, "bad_gateway", "bad_piece", 0, "a piece did not verify");
        return;
    case DOWN:
        rbus_respond_error_ex(req, 503, "peer_unavailable", NULL, 1000, "dial failed");
        return;
    default:
        break;
    }
    if (sto_reader_open(fx->pst, addr, &r) < 0) {
        rbus_respond_error_ex(req, 404, "not_found", NULL, 0, "the provider lacks it");
        return;
    }
    uint64_t size = sto_reader_size(r), n = sto_tree_pieces(size);
    if (off >= size && size > 0) {
        sto_reader_close(r);
        rbus_respond_error_ex(req, 416, "range_not_satisfiable", NULL, 0, "offset past the end");
        return;
    }
    uint64_t end = off + len > size ? size : off + len;
    uint64_t first = off / STO_PIECE_LEN, last = size == 0 ? 0 : (end - 1) / STO_PIECE_LEN;
    uint64_t count = last - first + 1;
    uint8_t *buf = malloc(64 + 6 * (10 + STO_TREE_MAX_PROOF + STO_PIECE_LEN + 32));
    uint8_t cvs[6][32];
    size_t ncv = 0;
    char js[128];
    size_t jl, pos;
    snprintf(js, sizeof js,
             "{\"size\":\"%llu\",\"first\":\"%llu\",\"count\":\"%llu\"%s}",
             (unsigned long long)size, (unsigned long long)first, (unsigned long long)count,
             fx->send_cv ? ",\"cv\":true" : "");
    jl = strlen(js);
    buf[0] = (uint8_t)(jl >> 24);
    buf[1] = (uint8_t)(jl >> 16);
    buf[2] = (uint8_t)(jl >> 8);
    buf[3] = (uint8_t)jl;
    memcpy(buf + 4, js, jl);
    pos = 4 + jl;
    /* overlay.md wire order: the last piece first (it binds the size), then the range
     * without it */
    pos += overlay_record(fx, r, addr, n - 1, false, buf + pos, cvs[ncv++]);
    fx->prov[p].served += sto_tree_piece_len(size, n - 1); /* served even as the size proof */
    for (uint64_t i = first; i <= last; i++) {
        if (i == n - 1)
            continue;
        pos += overlay_record(fx, r, addr, i, fx->prov[p].kind == LIAR, buf + pos, cvs[ncv++]);
        fx->prov[p].served += sto_tree_piece_len(size, i);
    }
    sto_reader_close(r);
    for (size_t k = 0; fx->send_cv && k < ncv; k++) {
        memcpy(buf + pos, cvs[k], 32);
        pos += 32;
    }
    if (fx->block_pool) {
        fx->block_pool = false;
        pool_block(&fx->b.loop);
    }
    rbus_respond(req, 200, buf, pos);
    free(buf);
}

/* ---- fixture ---- */

static void
fx_open_lim(fx_t *fx, const sto_service_limits_t *lim)
{
    sto_config_t cfg = {0}, rcfg = {0};
    sto_store_t *store = NULL;
    sto_service_t *svc = NULL;
    char dir[128];
    int rc = 0;

    memset(fx, 0, sizeof *fx);
    fx->asked_lo = UINT64_MAX;
    bus_fx_open(&fx->b, false, "storage", "/tmp/ron-stofetch-XXXXXX", OAP_APP_STORAGE);
    fx->b.deadline_ms = WAIT_MS + 5000;
    snprintf(dir, sizeof dir, "%s/store", fx->b.tmp);
    cfg.dir = dir;
    assert_int_equal(sto_open(&cfg, &store), 0);
    assert_int_equal(sto_open(&rcfg, &fx->pst), 0); /* the providers' copy: a RAM store */
    fx->bdht = bus_fx_bus_new(&fx->b, "dht");
    fx->bovl = bus_fx_bus_new(&fx->b, "overlay");
    assert_int_equal(rbus_handle(fx->bdht, OAP_APP_DHT, on_dht, fx), 0);
    assert_int_equal(rbus_handle(fx->bovl, OAP_APP_OVERLAY, on_overlay, fx), 0);
    assert_int_equal(rbus_listen(fx->bdht), 0);
    assert_int_equal(rbus_listen(fx->bovl), 0);
    assert_int_equal(sto_service_new(&fx->b.loop, fx->b.srv, store, lim, &svc), 0);
    fx->b.svc = svc;
    bus_fx_connect(&fx->b);
    fx->to_dht = rbus_connect(fx->b.srv, "dht", &rc);
    fx->to_ovl = rbus_connect(fx->b.srv, "overlay", &rc);
    assert_non_null(fx->to_dht);
    assert_non_null(fx->to_ovl);
    sto_service_set_network(svc, fx->to_dht, fx->to_ovl);
}

static void
fx_open(fx_t *fx)
{
    fx_open_lim(fx, NULL);
}

static void
fx_close(fx_t *fx)
{
    sto_service_free(fx->b.svc);
    rbus_peer_close(fx->to_dht);
    rbus_peer_close(fx->to_ovl);
    bus_fx_close(&fx->b);
    sto_close(fx->pst);
}

/* Let the loop settle (answers that follow an answer, e.g. provide after a completion). */
static void
run_for(fx_t *fx, uint64_t ms)
{
    bus_fx_run_for(&fx->b, ms);
}

/* Frame js then raw_len bytes of raw into buf; returns the length. */
static size_t
frame(uint8_t *buf, const char *js, const void *raw, size_t raw_len)
{
    size_t n;
    uint8_t *b = bus_fx_frame(js, raw, raw_len, &n);
    memcpy(buf, b, n);
    free(b);
    return n;
}

static uint16_t
call(fx_t *fx, const void *raw, size_t raw_len, const char *fmt, ...)
{
    va_list ap;
    uint16_t code;

    va_start(ap, fmt);
    code = bus_fx_vcall(&fx->b, raw, raw_len, fmt, ap);
    va_end(ap);
    return code;
}

static const char *
jstr(fx_t *fx, const char *k)
{
    const char *v = json_string_value(json_object_get(fx->b.json, k));
    return v != NULL ? v : "";
}

static uint8_t *
object_make(fx_t *fx, size_t len, uint32_t seed, char hex[68])
{
    uint8_t *d = malloc(len + 1), addr[STO_ADDR_LEN];
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        d[i] = (uint8_t)(seed >> 16);
    }
    uint8_t tenant[STO_TENANT_LEN] = {9};
    assert_int_equal(sto_put_buf(fx->pst, tenant, d, len, NULL, addr), 0);
    sto_addr_format(addr, hex);
    return d;
}

/* The answer of one get of a window. */
typedef struct {
    fx_t *fx;
    uint8_t *dst;
    size_t off;
    int *pending, *bad;
} win_t;

static void
on_win(void *arg, int status, const oap_frame_t *resp)
{
    win_t *w = arg;
    (*w->pending)--;
    if (status < 0 || resp->code != 200) {
        (*w->bad)++;
    } else {
        uint32_t jl = (uint32_t)resp->payload[0] << 24 | (uint32_t)resp->payload[1] << 16 |
                      (uint32_t)resp->payload[2] << 8 | resp->payload[3];
        memcpy(w->dst + w->off, resp->payload + 4 + jl, resp->payload_len - 4 - jl);
    }
    free(w);
}

/* Read the whole object with up to `window` gets in flight, as sto_client_get does. */
static uint8_t *
get_window(fx_t *fx, const char *hex, size_t len, int window)
{
    uint8_t *dst = calloc(1, len + 1), buf[300];
    int pending = 0, bad = 0;
    size_t off = 0;
    uint64_t end = ron_now_ms() + WAIT_MS;

    while ((off < len || pending > 0) && ron_now_ms() < end) {
        while (off < len && pending < window) {
            char js[200];
            win_t *w = calloc(1, sizeof *w);
            snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}", hex,
                     off);
            size_t n = frame(buf, js, NULL, 0);
            *w = (win_t){fx, dst, off, &pending, &bad};
            assert_int_equal(rbus_request(fx->b.peer, OAP_APP_STORAGE, buf, n, WAIT_MS, on_win, w), 0);
            pending++;
            off += STO_SVC_MAX_CHUNK;
        }
        uv_run(&fx->b.loop, UV_RUN_ONCE);
    }
    assert_int_equal(pending, 0);
    assert_int_equal(bad, 0);
    return dst;
}

/* ---- tests ---- */

static void
test_get_of_absent_object_is_fetched_verified_and_kept_as_cache(void **state)
{
    fx_t fx;
    char hex[68];
    size_t len = (1u << 20) + 17;
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, len, 1, hex);
    fx.nprov = 3;
    /* the whole object with 4 gets in flight, as `ron get` reads it: one fetch */
    uint8_t *got = get_window(&fx, hex, len, 4);
    assert_memory_equal(got, d, len);
    free(got);
    run_for(&fx, 200);
    /* ranges went to more than one provider */
    int serving = 0;
    for (size_t i = 0; i < 3; i++)
        serving += fx.prov[i].served > 0;
    assert_true(serving >= 2);
    /* now a normal cache object, announced */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", hex), 200);
    assert_string_equal(jstr(&fx, "state"), "cache");
    assert_string_equal(jstr(&fx, "pins"), "0");
    assert_int_equal(fx.provides, 1);
    char phex[68];
    sto_addr_format(fx.provided, phex);
    assert_string_equal(phex, hex);
    /* served locally from now on: no more lookups */
    uint64_t finds = fx.finds;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"local\":true}", hex),
                     200);
    assert_int_equal(fx.finds, finds);
    /* gc evicts it and withdraws the record */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"gc\",\"target\":\"0\"}"), 200);
    run_for(&fx, 100);
    assert_int_equal(fx.unprovides, 1);
    assert_memory_equal(fx.unprovided, fx.provided, STO_ADDR_LEN);
    free(d);
    fx_close(&fx);
}

static void
test_local_get_never_fetches(void **state)
{
    fx_t fx;
    char hex[68];
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, 1000, 2, hex);
    fx.nprov = 1;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"local\":true}", hex),
                     404);
    assert_int_equal(fx.finds, 0);
    assert_int_equal(fx.prov[0].asked, 0);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"local\":1}", hex), 400);
    assert_string_equal(jstr(&fx, "reason"), "local");
    /* stat of an absent object never fetches either */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", hex), 404);
    assert_int_equal(fx.finds, 0);
    free(d);
    fx_close(&fx);
}

static void
test_only_the_requested_range_is_fetched_and_stat_says_partial(void **state)
{
    fx_t fx;
    char hex[68];
    size_t len = 4u << 20; /* 64 pieces */
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, len, 3, hex);
    fx.nprov = 2;
    /* an offset past the end of an object held elsewhere (size unknown here): 416, as for a local one */
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}", hex, len + 5),
                     416);
    fx.asked_lo = UINT64_MAX;
    fx.asked_hi = 0;
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"1048576\",\"length\":"
                          "\"1000\"}",
                          hex),
                     200);
    assert_int_equal(fx.b.raw_len, 1000);
    assert_memory_equal(fx.b.raw, d + (1u << 20), 1000);
    run_for(&fx, 100);
    /* asked: the probe from the get's offset; nothing before it, little after */
    assert_int_equal(fx.asked_lo, 1u << 20);
    assert_true(fx.asked_hi <= (1u << 20) + 4 * STO_PIECE_LEN);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", hex), 200);
    assert_string_equal(jstr(&fx, "state"), "partial");
    uint64_t verified = strtoull(jstr(&fx, "verified"), NULL, 10);
    assert_true(verified > 0 && verified <= 5 * STO_PIECE_LEN);
    assert_int_equal(strtoull(jstr(&fx, "size"), NULL, 10), len);
    /* a local get of a held range is served; of a missing one, 404 */
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"1048600\",\"length\":"
                          "\"10\",\"local\":true}",
                          hex),
                     200);
    assert_memory_equal(fx.b.raw, d + 1048600, 10);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"local\":true}", hex),
                     404);
    /* the same range again: held, no overlay request */
    uint64_t asked = fx.prov[0].asked + fx.prov[1].asked;
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"1048576\",\"length\":"
                          "\"1000\"}",
                          hex),
                     200);
    assert_int_equal(fx.prov[0].asked + fx.prov[1].asked, asked);
    free(d);
    fx_close(&fx);
}

static void
test_bad_and_absent_providers_are_dropped(void **state)
{
    fx_t fx;
    char hex[68];
    size_t len = 3 * STO_SVC_MAX_CHUNK;
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, len, 4, hex);
    fx.nprov = 4;
    fx.prov[0].kind = BAD;
    fx.prov[1].kind = NOTFOUND;
    fx.prov[2].kind = DOWN;
    fx.prov[3].kind = GOOD;
    uint8_t *got = get_window(&fx, hex, len, 4);
    assert_memory_equal(got, d, len);
    free(got);
    /* within the fetch the liar was asked once, the one without it at most once per
     * slot; the good one served everything */
    assert_int_equal(fx.prov[0].asked, 1);
    assert_true(fx.prov[1].asked >= 1 && fx.prov[1].asked <= STO_FETCH_PER_PROVIDER);
    assert_true(fx.prov[3].served >= len);
    assert_int_equal(fx.prov[0].served + fx.prov[1].served + fx.prov[2].served, 0);
    free(d);
    fx_close(&fx);
}

static void
test_a_miss_costs_one_lookup_and_is_remembered_briefly(void **state)
{
    sto_service_limits_t lim = {.miss_ttl_ms = 300};
    fx_t fx;
    char hex[68], other[68];
    uint8_t *d, *d2;
    (void)state;

    fx_open_lim(&fx, &lim);
    d = object_make(&fx, 5000, 5, hex);
    fx.nprov = 0;
    /* nobody has it: 404 after one lookup, not retried */
    uint64_t t0 = ron_now_ms();
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 404);
    /* one lookup and no wait for a second one or for a timeout (the bound is loose:
     * a loaded machine stalls the loop; finds == 1 is the exact check) */
    assert_true(ron_now_ms() - t0 < STO_SVC_FETCH_FIND_MS);
    assert_int_equal(fx.finds, 1);
    assert_false(json_is_true(json_object_get(fx.b.json, "retryable")));
    /* asked again at once: 404 from the miss memory, no lookup */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 404);
    assert_int_equal(fx.finds, 1);
    /* once the memory expired a get looks again (and now finds the provider) */
    run_for(&fx, lim.miss_ttl_ms + 50);
    fx.nprov = 1;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 200);
    assert_int_equal(fx.finds, 2);
    assert_int_equal(fx.b.raw_len, 5000);
    assert_memory_equal(fx.b.raw, d, 5000);
    /* every provider failing: 503, retryable, and one more lookup at most */
    d2 = object_make(&fx, 7000, 15, other);
    fx.prov[0].kind = DOWN;
    fx.finds = 0;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", other), 503);
    assert_true(json_is_true(json_object_get(fx.b.json, "retryable")));
    assert_true(fx.finds >= 1 && fx.finds <= STO_SVC_FETCH_FINDS);
    free(d2);
    free(d);
    fx_close(&fx);
}

static void
test_a_failed_lookup_is_retryable_and_not_remembered(void **state)
{
    fx_t fx;
    char hex[68];
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, 3000, 16, hex);
    fx.nprov = 1;
    fx.dht_mode = DHT_504;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 504);
    assert_true(json_is_true(json_object_get(fx.b.json, "retryable")));
    assert_int_equal(fx.finds, 1);
    fx.dht_mode = DHT_503;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 503);
    assert_true(json_is_true(json_object_get(fx.b.json, "retryable")));
    assert_int_equal(fx.finds, 2);
    /* neither was a "nobody has it": the next get looks and fetches */
    fx.dht_mode = DHT_OK;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 200);
    assert_int_equal(fx.finds, 3);
    assert_memory_equal(fx.b.raw, d, 3000);
    free(d);
    fx_close(&fx);
}

static void
test_a_lookup_that_never_answers_is_bounded(void **state)
{
    fx_t fx;
    char hex[68];
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, 3000, 17, hex);
    fx.nprov = 1;
    fx.dht_mode = DHT_SILENT;
    uint64_t t0 = ron_now_ms();
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 504);
    uint64_t took = ron_now_ms() - t0;
    /* bounded by the lookup limit (the upper bound leaves room for a loaded machine) */
    assert_true(took >= STO_SVC_FETCH_FIND_MS - 100 && took < STO_SVC_FETCH_FIND_MS + 8000);
    assert_int_equal(fx.finds, 1);
    /* the late answer is dropped; the next get looks again and fetches */
    assert_non_null(fx.held);
    respond_json(fx.held, "{\"providers\":[]}");
    fx.held = NULL;
    fx.dht_mode = DHT_OK;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 200);
    assert_int_equal(fx.finds, 2);
    free(d);
    fx_close(&fx);
}

static void
on_reply_count(void *arg, int status, const oap_frame_t *resp)
{
    int *n = arg;
    if (status == 0 && resp->code == 200)
        (*n)++;
    else
        *n += 1000;
}

static void
test_concurrent_gets_share_one_fetch(void **state)
{
    fx_t fx;
    char hex[68], js[200];
    uint8_t buf[300], *d;
    int ok = 0;
    size_t n;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, 3 * STO_PIECE_LEN, 6, hex);
    fx.nprov = 1;
    snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\"}", hex);
    n = frame(buf, js, NULL, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            rbus_request(fx.b.peer, OAP_APP_STORAGE, buf, n, WAIT_MS, on_reply_count, &ok), 0);
    uint64_t end = ron_now_ms() + WAIT_MS;
    while (ok < 3 && ron_now_ms() < end)
        uv_run(&fx.b.loop, UV_RUN_ONCE);
    assert_int_equal(ok, 3);
    assert_int_equal(fx.finds, 1);
    assert_int_equal(fx.prov[0].asked, 1);
    free(d);
    fx_close(&fx);
}

static void
test_sequential_gets_reuse_the_fetch(void **state)
{
    fx_t fx;
    char hex[68];
    size_t len = 4 * STO_SVC_MAX_CHUNK;
    uint8_t *d;
    (void)state;

    /* a reader that reads on one chunk at a time (the gateway): one lookup */
    fx_open(&fx);
    d = object_make(&fx, len, 7, hex);
    fx.nprov = 2;
    for (size_t off = 0; off < len; off += STO_SVC_MAX_CHUNK) {
        assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}",
                              hex, off),
                         200);
        assert_memory_equal(fx.b.raw, d + off, STO_SVC_MAX_CHUNK);
    }
    assert_int_equal(fx.finds, 1);
    free(d);
    fx_close(&fx);
}

/* A get's "ahead" (the bytes its reader reads next, as the gateway sends it):
 * the fetch asks for them along with the get's own range, at most
 * STO_SVC_FETCH_AHEAD_MAX past it; without it only the range is asked for;
 * a malformed one is 400. */
static void
test_get_ahead_fetches_the_next_bytes_along_within_its_bound(void **state)
{
    fx_t fx;
    char hex[68];
    size_t len = 4u << 20; /* 64 pieces */
    uint8_t *d;
    uint64_t want;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, len, 8, hex);
    fx.nprov = 2;
    /* 64 KiB at 0, 512 KiB ahead: pieces 0..8 are asked for, not more than a request past */
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"length\":\"65536\","
                          "\"ahead\":\"524288\"}",
                          hex),
                     200);
    assert_memory_equal(fx.b.raw, d, STO_PIECE_LEN);
    want = STO_PIECE_LEN + 524288;
    for (int i = 0; i < 500 && fx.asked_hi < want; i++)
        run_for(&fx, 10);
    assert_int_equal(fx.asked_lo, 0);
    assert_true(fx.asked_hi >= want);
    assert_true(fx.asked_hi <= want + STO_FETCH_REQ_PIECES * STO_PIECE_LEN);
    run_for(&fx, 200);
    assert_true(fx.asked_hi <= want + STO_FETCH_REQ_PIECES * STO_PIECE_LEN);
    /* an ahead far past the bound is held to STO_SVC_FETCH_AHEAD_MAX */
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"1048576\","
                          "\"length\":\"65536\",\"ahead\":\"1000000000\"}",
                          hex),
                     200);
    assert_memory_equal(fx.b.raw, d + (1u << 20), STO_PIECE_LEN);
    want = (1u << 20) + STO_PIECE_LEN + STO_SVC_FETCH_AHEAD_MAX;
    for (int i = 0; i < 500 && fx.asked_hi < want; i++)
        run_for(&fx, 10);
    run_for(&fx, 200);
    assert_true(fx.asked_hi >= want);
    assert_true(fx.asked_hi <= want + STO_FETCH_REQ_PIECES * STO_PIECE_LEN);
    assert_true(fx.asked_hi < len);
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"ahead\":\"-1\"}", hex),
                     400);
    free(d);
    fx_close(&fx);
}

static void
test_pin_of_absent_object_fetches_it_whole_then_pins_it(void **state)
{
    fx_t fx;
    char hex[68], other[68];
    size_t len = (2u << 20) + 5; /* 33 pieces, more than one request's worth */
    uint8_t *d, *d2;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, len, 21, hex);
    fx.nprov = 2;
    /* one pin: the whole object is fetched, verified, committed, then pinned */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"pin\",\"address\":\"%s\"}", hex), 200);
    assert_string_equal(jstr(&fx, "pins"), "1");
    assert_true(json_is_true(json_object_get(fx.b.json, "fetched")));
    assert_int_equal(fx.finds, 1);
    assert_true(fx.prov[0].served + fx.prov[1].served >= len);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", hex), 200);
    assert_string_equal(jstr(&fx, "state"), "pinned");
    assert_int_equal(strtoull(jstr(&fx, "size"), NULL, 10), len);
    /* every byte is held locally and is the object's */
    uint64_t finds = fx.finds;
    for (size_t off = 0; off < len; off += STO_SVC_MAX_CHUNK) {
        assert_int_equal(call(&fx, NULL, 0,
                              "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\","
                              "\"local\":true}",
                              hex, off),
                         200);
        assert_memory_equal(fx.b.raw, d + off, fx.b.raw_len);
    }
    assert_int_equal(fx.finds, finds);
    /* a second pin is local: no lookup, no "fetched" */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"pin\",\"address\":\"%s\"}", hex), 200);
    assert_string_equal(jstr(&fx, "pins"), "2");
    assert_null(json_object_get(fx.b.json, "fetched"));
    assert_int_equal(fx.finds, finds);
    /* nobody holds it: 404, not pinned; unpin of an absent object never fetches */
    fx.nprov = 0;
    d2 = object_make(&fx, 3000, 22, other);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"pin\",\"address\":\"%s\"}", other), 404);
    assert_string_equal(jstr(&fx, "code"), "not_found");
    finds = fx.finds;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"unpin\",\"address\":\"%s\"}", other), 404);
    assert_int_equal(fx.finds, finds);
    free(d2);
    free(d);
    fx_close(&fx);
}

static void
test_pin_whose_providers_all_fail_is_a_retryable_error(void **state)
{
    fx_t fx;
    char hex[68];
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, 300000, 23, hex);
    fx.nprov = 2;
    fx.prov[0].kind = BAD;
    fx.prov[1].kind = DOWN;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"pin\",\"address\":\"%s\"}", hex), 503);
    assert_true(json_is_true(json_object_get(fx.b.json, "retryable")));
    /* nothing was pinned or committed */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"local\":true}", hex),
                     404);
    fx.dht_mode = DHT_504;
    fx.prov[0].kind = fx.prov[1].kind = GOOD;
    run_for(&fx, STO_SVC_FETCH_LINGER_MS + 100); /* the failed fetch ends */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"pin\",\"address\":\"%s\"}", hex), 504);
    free(d);
    fx_close(&fx);
}

/* Write bytes through put_begin/put_write/put_commit; returns the commit's status. */
static int
put_bytes(fx_t *fx, const char *bytes)
{
    char id[32];
    assert_int_equal(call(fx, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    snprintf(id, sizeof id, "%s", jstr(fx, "put_id"));
    assert_int_equal(call(fx, bytes, strlen(bytes),
                          "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     200);
    return call(fx, NULL, 0, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id);
}

/* A put is answered after its provider record was announced (the answer
 * says how far it got), also when the object was stored before; a dht that
 * does not answer holds the put only for the announce wait (plus the
 * client's slack). */
static void
test_put_answers_after_its_record_is_announced(void **state)
{
    sto_service_limits_t lim = {.announce_wait_ms = 200};
    char phex[68];
    uint64_t t0;
    fx_t fx;
    (void)state;

    fx_open_lim(&fx, &lim);
    assert_int_equal(put_bytes(&fx, "hello"), 200);
    assert_int_equal(fx.provides, 1); /* before the answer, not after */
    sto_addr_format(fx.provided, phex);
    assert_string_equal(phex, jstr(&fx, "address"));
    assert_string_equal(jstr(&fx, "announced"), "3");
    assert_string_equal(jstr(&fx, "announce_state"), "announced");
    assert_true(json_is_true(json_object_get(fx.b.json, "created")));
    /* the same bytes again: not created, announced again */
    assert_int_equal(put_bytes(&fx, "hello"), 200);
    assert_true(json_is_false(json_object_get(fx.b.json, "created")));
    assert_int_equal(fx.provides, 2);
    assert_string_equal(jstr(&fx, "announce_state"), "announced");
    /* the dht says nothing: answered once the wait and the slack passed */
    fx.provide_silent = true;
    t0 = ron_now_ms();
    assert_int_equal(put_bytes(&fx, "world"), 200);
    assert_true(ron_now_ms() - t0 >= lim.announce_wait_ms);
    assert_true(ron_now_ms() - t0 < lim.announce_wait_ms + DHT_CLIENT_PROVIDE_SLACK_MS + 8000);
    assert_string_equal(jstr(&fx, "announced"), "0");
    assert_string_equal(jstr(&fx, "announce_state"), "pending");
    assert_non_null(fx.held_provide);
    respond_json(fx.held_provide, "{}"); /* too late: dropped by the client */
    run_for(&fx, 50);
    fx_close(&fx);
}

/* The value of metric line `name` (0 when absent). */
static double
metric(fx_t *fx, const char *name)
{
    static char buf[1 << 16];
    size_t n = sto_service_metrics(fx->b.svc, buf, sizeof buf - 1);
    char *p;
    buf[n] = '\0';
    for (p = buf; (p = strstr(p, name)) != NULL; p++)
        if ((p == buf || p[-1] == '\n') && p[strlen(name)] == ' ')
            return strtod(p + strlen(name) + 1, NULL);
    return 0;
}

/*
 * The gets waiting for a fetch are answered from the records the overlay
 * brought, once they verified against the address, before any store job
 * ran: every worker thread is held from the first overlay fetch on, so
 * nothing can be stored or read back meanwhile. Ranges are exact (within a
 * piece, across pieces of two answers, the short last piece, at the end,
 * past it), and the store still gets every piece: once the workers are
 * free the object is committed as cache and reads whole from the store.
 */
static void
test_waiting_gets_are_answered_from_verified_records_before_the_store_job(void **state)
{
    fx_t fx;
    char hex[68];
    size_t len = (1u << 20) + 17; /* 17 pieces, the last of 17 bytes */
    uint8_t *d;
    (void)state;

    fx_open(&fx);
    d = object_make(&fx, len, 31, hex);
    fx.nprov = 2;
    fx.send_cv = true;
    fx.block_pool = true;
    fx.b.deadline_ms = 3000; /* an answer that waited for a worker would not come in time */
    /* the first get starts the fetch (its miss job runs before the workers are held) */
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"ahead\":\"1048576\"}", hex),
                     200);
    assert_int_equal(pool_held, POOL_THREADS); /* the workers were held before the answer */
    assert_int_equal(fx.b.raw_len, STO_SVC_MAX_CHUNK);
    assert_memory_equal(fx.b.raw, d, STO_SVC_MAX_CHUNK);
    assert_string_equal(jstr(&fx, "size"), "1048593");
    /* while the workers are still held: the next chunk, a range across two
     * answers' pieces, the tail with the short last piece, the end, past it */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"262144\"}",
                          hex),
                     200);
    assert_int_equal(fx.b.raw_len, STO_SVC_MAX_CHUNK);
    assert_memory_equal(fx.b.raw, d + STO_SVC_MAX_CHUNK, STO_SVC_MAX_CHUNK);
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"200000\","
                          "\"length\":\"200000\"}",
                          hex),
                     200);
    assert_int_equal(fx.b.raw_len, 200000);
    assert_memory_equal(fx.b.raw, d + 200000, 200000);
    assert_string_equal(jstr(&fx, "offset"), "200000");
    assert_string_equal(jstr(&fx, "length"), "200000");
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}", hex, len - 30),
                     200);
    assert_int_equal(fx.b.raw_len, 30);
    assert_memory_equal(fx.b.raw, d + len - 30, 30);
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}", hex, len),
                     200);
    assert_int_equal(fx.b.raw_len, 0);
    assert_string_equal(jstr(&fx, "length"), "0");
    assert_int_equal(call(&fx, NULL, 0,
                          "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}", hex, len + 1),
                     416);
    assert_int_equal(pool_held, POOL_THREADS);
    assert_true(metric(&fx, "storage_fetch_gets_from_memory_total") >= 6);
    /* the workers go on: every piece is stored, the object committed as cache */
    pool_release(&fx.b.loop);
    fx.b.deadline_ms = WAIT_MS;
    for (int i = 0; i < 300 && fx.provides == 0; i++)
        run_for(&fx, 10);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", hex), 200);
    assert_string_equal(jstr(&fx, "state"), "cache");
    for (size_t off = 0; off < len; off += STO_SVC_MAX_CHUNK) {
        assert_int_equal(call(&fx, NULL, 0,
                              "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\","
                              "\"local\":true}",
                              hex, off),
                         200);
        assert_memory_equal(fx.b.raw, d + off, fx.b.raw_len);
    }
    assert_int_equal(fx.finds, 1);
    free(d);
    fx_close(&fx);
}

/* A provider whose pieces do not verify (bytes, or with the overlay's
 * chaining values, a value that is not theirs) never gets a byte to a get:
 * alone it makes the get fail (503), never answer; next to a good provider
 * the get gets the object's own bytes from it. */
static void
liar_never_reaches_a_get(bool send_cv)
{
    fx_t fx;
    char hex[68];
    size_t len = 3 * STO_SVC_MAX_CHUNK + 100;
    uint8_t *d;

    fx_open(&fx);
    fx.send_cv = send_cv;
    d = object_make(&fx, len, send_cv ? 41 : 42, hex);
    fx.nprov = 1;
    fx.prov[0].kind = LIAR;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", hex), 503);
    assert_true(fx.prov[0].asked >= 1);
    assert_int_equal(metric(&fx, "storage_fetch_gets_from_memory_total"), 0);
    free(d);
    fx_close(&fx);

    fx_open(&fx);
    fx.send_cv = send_cv;
    d = object_make(&fx, len, send_cv ? 43 : 44, hex);
    fx.nprov = 2;
    fx.prov[0].kind = LIAR;
    uint8_t *got = get_window(&fx, hex, len, 4);
    assert_memory_equal(got, d, len);
    free(got);
    assert_true(fx.prov[0].asked >= 1);
    assert_true(metric(&fx, "storage_fetch_provider_failures_total") >= 1);
    free(d);
    fx_close(&fx);
}

static void
test_a_piece_that_does_not_verify_never_reaches_a_get(void **state)
{
    (void)state;
    liar_never_reaches_a_get(false);
}

static void
test_a_chaining_value_that_does_not_verify_never_reaches_a_get(void **state)
{
    (void)state;
    liar_never_reaches_a_get(true);
}

int
main(void)
{
    /* pool_block holds exactly this many worker threads */
    setenv("UV_THREADPOOL_SIZE", "4", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiting_gets_are_answered_from_verified_records_before_the_store_job),
        cmocka_unit_test(test_a_piece_that_does_not_verify_never_reaches_a_get),
        cmocka_unit_test(test_a_chaining_value_that_does_not_verify_never_reaches_a_get),
        cmocka_unit_test(test_get_of_absent_object_is_fetched_verified_and_kept_as_cache),
        cmocka_unit_test(test_local_get_never_fetches),
        cmocka_unit_test(test_only_the_requested_range_is_fetched_and_stat_says_partial),
        cmocka_unit_test(test_bad_and_absent_providers_are_dropped),
        cmocka_unit_test(test_a_miss_costs_one_lookup_and_is_remembered_briefly),
        cmocka_unit_test(test_a_failed_lookup_is_retryable_and_not_remembered),
        cmocka_unit_test(test_a_lookup_that_never_answers_is_bounded),
        cmocka_unit_test(test_concurrent_gets_share_one_fetch),
        cmocka_unit_test(test_sequential_gets_reuse_the_fetch),
        cmocka_unit_test(test_get_ahead_fetches_the_next_bytes_along_within_its_bound),
        cmocka_unit_test(test_put_answers_after_its_record_is_announced),
        cmocka_unit_test(test_pin_of_absent_object_fetches_it_whole_then_pins_it),
        cmocka_unit_test(test_pin_whose_providers_all_fail_is_a_retryable_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
