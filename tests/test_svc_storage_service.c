/*
 * test_svc_storage_service.c - the storage protocol (sto_service.c) over a
 * real ron-bus, in-process and over Unix sockets, against a real file store
 * in a temporary directory. A client endpoint sends single-frame requests
 * (u32 JSON length + JSON + raw bytes) and checks status, JSON and bytes.
 * Every wait runs the loop with a wall-clock bound.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include "blake3.h"
#include "bus_fixture.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"
#include "sto_client.h"
#include "sto_service.h"

#define WAIT_MS BUS_FX_WAIT_MS

typedef bus_fx_t fx_t; /* svc: the sto_service_t; the store is tmp/store */

static void
fx_open(fx_t *fx, bool use_unix, const sto_service_limits_t *lim)
{
    sto_config_t cfg = {0};
    sto_store_t *store = NULL;
    sto_service_t *svc = NULL;
    char storedir[128];

    bus_fx_open(fx, use_unix, "storage", "/tmp/ron-stosvc-XXXXXX", OAP_APP_STORAGE);
    snprintf(storedir, sizeof storedir, "%s/store", fx->tmp);
    cfg.dir = storedir;
    assert_int_equal(sto_open(&cfg, &store), 0);
    assert_int_equal(sto_service_new(&fx->loop, fx->srv, store, lim, &svc), 0);
    fx->svc = svc;
    bus_fx_connect(fx);
}

static void
fx_close(fx_t *fx)
{
    sto_service_free(fx->svc);
    bus_fx_close(fx);
}

/* The file's short names for the fixture's calls (tests/bus_fixture.h). */
static bool (*const run_until)(fx_t *fx, bool (*cond)(fx_t *fx)) = bus_fx_run_until;
static uint16_t (*const call)(fx_t *fx, const void *raw, size_t raw_len, const char *fmt,
                              ...) = bus_fx_call_bytes;

/* Send one request (payload already framed) and wait for the answer; returns its code. */
static uint16_t
call_raw(fx_t *fx, const void *payload, size_t len)
{
    return bus_fx_request(fx, OAP_APP_STORAGE, NULL, payload, len);
}

static const char *
jstr(fx_t *fx, const char *key)
{
    return bus_fx_jstr(fx->json, key);
}

static void
fill(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (uint8_t)(seed >> 16);
    }
}

static void
b3_text(const uint8_t *b, size_t n, char out[68])
{
    blake3_hasher h;
    uint8_t d[32];
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, b, n);
    blake3_hasher_finalize(&h, d, 32);
    sto_addr_format(d, out);
}

/* Put b[0..n) in chunks of chunk bytes; returns the put's address text in addr. */
static void
put_object(fx_t *fx, const uint8_t *b, size_t n, size_t chunk, char addr[68])
{
    char id[24];
    assert_int_equal(call(fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"%zu\"}", n), 200);
    snprintf(id, sizeof id, "%s", jstr(fx, "put_id"));
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        assert_int_equal(call(fx, b + off, len, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"%zu\"}",
                              id, off),
                         200);
    }
    assert_int_equal(call(fx, NULL, 0, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id), 200);
    snprintf(addr, 68, "%s", jstr(fx, "address"));
}

/* put_commit says created:true the first time an address is stored, false after. */
static void
test_put_commit_says_whether_the_object_is_new(void **state)
{
    (void)state;
    fx_t fx;
    uint8_t b[1000];
    char addr[68], addr2[68];

    fx_open(&fx, false, NULL);
    fill(b, sizeof b, 3);
    put_object(&fx, b, sizeof b, sizeof b, addr);
    assert_true(json_is_true(json_object_get(fx.json, "created")));
    put_object(&fx, b, sizeof b, 300, addr2);
    assert_string_equal(addr, addr2);
    assert_true(json_is_false(json_object_get(fx.json, "created")));
    fx_close(&fx);
}

static size_t
count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- tests ---- */

static void
chunked_put_commit_then_stat_and_get_return_verified_bytes(bool use_unix)
{
    fx_t fx;
    size_t n = 700 * 1024 + 13;
    uint8_t *b = malloc(n), *back = malloc(n);
    char addr[68], want[68];
    size_t got = 0;

    fx_open(&fx, use_unix, NULL);
    fill(b, n, 7);
    b3_text(b, n, want);
    put_object(&fx, b, n, 200 * 1024, addr);
    assert_string_equal(addr, want);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);

    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", addr), 200);
    assert_string_equal(jstr(&fx, "size"), "716813");
    assert_string_equal(jstr(&fx, "state"), "pinned");
    while (got < n) {
        assert_int_equal(call(&fx, NULL, 0,
                              "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\",\"length\":\"262144\"}",
                              addr, got),
                         200);
        assert_true(fx.raw_len > 0);
        assert_string_equal(jstr(&fx, "size"), "716813");
        memcpy(back + got, fx.raw, fx.raw_len);
        got += fx.raw_len;
    }
    assert_int_equal(got, n);
    assert_memory_equal(back, b, n);
    /* at the end: zero bytes; past it: 416 */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}",
                          addr, n),
                     200);
    assert_int_equal(fx.raw_len, 0);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}",
                          addr, n + 1),
                     416);
    fx_close(&fx);
    free(b);
    free(back);
}

static void
test_put_get_inproc(void **state)
{
    (void)state;
    chunked_put_commit_then_stat_and_get_return_verified_bytes(false);
}

static void
test_put_get_unix(void **state)
{
    (void)state;
    chunked_put_commit_then_stat_and_get_return_verified_bytes(true);
}

static void
expected_address_mismatch_is_409_bad_digest_and_stores_nothing(bool use_unix)
{
    fx_t fx;
    uint8_t b[5000];
    char real[68], other[68], id[24];

    fx_open(&fx, use_unix, NULL);
    fill(b, sizeof b, 3);
    b3_text(b, sizeof b, real);
    b3_text(b, sizeof b - 1, other);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"expect\":\"%s\",\"content_type\":\"text/plain\"}",
                          other),
                     200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    assert_int_equal(call(&fx, b, sizeof b, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     200);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id), 409);
    assert_string_equal(jstr(&fx, "code"), "bad_digest");
    assert_false(json_is_true(json_object_get(fx.json, "retryable")));
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", real), 404);
    assert_string_equal(jstr(&fx, "code"), "not_found");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"list\"}"), 200);
    assert_int_equal(json_array_size(json_object_get(fx.json, "objects")), 0);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    fx_close(&fx);
}

static void
test_mismatch_inproc(void **state)
{
    (void)state;
    expected_address_mismatch_is_409_bad_digest_and_stores_nothing(false);
}

static void
test_mismatch_unix(void **state)
{
    (void)state;
    expected_address_mismatch_is_409_bad_digest_and_stores_nothing(true);
}

static void
test_abort_removes_the_put_and_its_temporary_files(void **state)
{
    fx_t fx;
    uint8_t b[70000];
    char id[24], tmpdir[160];
    (void)state;

    fx_open(&fx, false, NULL);
    snprintf(tmpdir, sizeof tmpdir, "%s/store/tmp", fx.tmp);
    fill(b, sizeof b, 5);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    assert_int_equal(call(&fx, b, sizeof b, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     200);
    assert_string_equal(jstr(&fx, "written"), "70000");
    assert_int_equal(sto_service_open_puts(fx.svc), 1);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_abort\",\"put_id\":\"%s\"}", id), 200);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    assert_int_equal(count_files(tmpdir), 0);
    assert_int_equal(call(&fx, b, 10, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"70000\"}", id),
                     404);
    assert_string_equal(jstr(&fx, "reason"), "put_id");
    fx_close(&fx);
}

static bool
no_puts(fx_t *fx)
{
    return sto_service_open_puts(fx->svc) == 0;
}

static void
test_idle_put_is_aborted_after_its_timeout(void **state)
{
    sto_service_limits_t lim = {.put_idle_ms = 200};
    fx_t fx;
    uint8_t b[1000];
    char id[24], tmpdir[160];
    uint64_t t0;
    (void)state;

    fx_open(&fx, true, &lim);
    snprintf(tmpdir, sizeof tmpdir, "%s/store/tmp", fx.tmp);
    fill(b, sizeof b, 9);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    assert_int_equal(call(&fx, b, sizeof b, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     200);
    t0 = ron_now_ms();
    assert_true(run_until(&fx, no_puts));
    assert_true(ron_now_ms() - t0 >= 150); /* not before its idle time */
    /* the abort runs on a worker: let it finish, then nothing is left behind */
    for (int i = 0; i < 50 && count_files(tmpdir) > 0; i++) {
        uv_run(&fx.loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    assert_int_equal(count_files(tmpdir), 0);
    assert_int_equal(call(&fx, b, 10, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"1000\"}", id),
                     404);
    fx_close(&fx);
}

static void
test_connection_loss_aborts_its_puts(void **state)
{
    fx_t fx;
    rbus_peer_t *second;
    int rc;
    (void)state;

    fx_open(&fx, true, NULL);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    assert_int_equal(sto_service_open_puts(fx.svc), 1);
    rbus_peer_close(fx.peer);
    assert_true(run_until(&fx, no_puts));
    second = rbus_connect(fx.cli, "storage", &rc);
    fx.peer = second;
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"list\"}"), 200);
    fx_close(&fx);
}

static void
test_pin_unpin_and_paged_list(void **state)
{
    fx_t fx;
    uint8_t a[3000], b[4000];
    char addr_a[68], addr_b[68], first[68];
    json_t *objs;
    (void)state;

    fx_open(&fx, false, NULL);
    fill(a, sizeof a, 1);
    fill(b, sizeof b, 2);
    put_object(&fx, a, sizeof a, sizeof a, addr_a);
    put_object(&fx, b, sizeof b, 1000, addr_b);

    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"list\",\"limit\":\"1\"}"), 200);
    objs = json_object_get(fx.json, "objects");
    assert_int_equal(json_array_size(objs), 1);
    snprintf(first, sizeof first, "%s",
             json_string_value(json_object_get(json_array_get(objs, 0), "address")));
    assert_string_equal(jstr(&fx, "next"), first);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"list\",\"after\":\"%s\",\"limit\":\"5\"}", first),
                     200);
    objs = json_object_get(fx.json, "objects");
    assert_int_equal(json_array_size(objs), 1);
    assert_string_not_equal(json_string_value(json_object_get(json_array_get(objs, 0), "address")),
                            first);
    assert_null(json_object_get(fx.json, "next"));

    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"unpin\",\"address\":\"%s\"}", addr_a), 200);
    assert_string_equal(jstr(&fx, "pins"), "0");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", addr_a), 200);
    assert_string_equal(jstr(&fx, "state"), "cache");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"unpin\",\"address\":\"%s\"}", addr_a), 404);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"pin\",\"address\":\"%s\"}", addr_a), 200);
    assert_string_equal(jstr(&fx, "pins"), "1");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", addr_a), 200);
    assert_string_equal(jstr(&fx, "state"), "pinned");
    /* gc to 0 keeps pinned objects; an unpinned one goes */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"unpin\",\"address\":\"%s\"}", addr_b), 200);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"gc\",\"target\":\"0\"}"), 200);
    assert_string_equal(jstr(&fx, "freed"), "4000");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", addr_b), 404);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", addr_a), 200);
    fx_close(&fx);
}

static void
bad_requests_are_400_naming_the_field(bool use_unix)
{
    fx_t fx;
    char addr[68];
    static const uint8_t short_frame[] = {0, 0, 0};
    static const uint8_t long_len[] = {0, 0, 0, 50, '{', '}'};

    fx_open(&fx, use_unix, NULL);
    b3_text((const uint8_t *)"x", 1, addr);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"explode\"}"), 400);
    assert_string_equal(jstr(&fx, "code"), "bad_request");
    assert_string_equal(jstr(&fx, "reason"), "op");
    assert_non_null(strstr(jstr(&fx, "message"), "explode"));
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\",\"colour\":\"red\"}", addr),
                     400);
    assert_string_equal(jstr(&fx, "reason"), "colour");
    assert_non_null(strstr(jstr(&fx, "message"), "colour"));
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"B3:%s\"}", addr + 3), 400);
    assert_string_equal(jstr(&fx, "reason"), "address");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":12}"), 400);
    assert_string_equal(jstr(&fx, "reason"), "size");
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"012\"}"), 400);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"list\",\"limit\":\"100000\"}"), 400);
    assert_string_equal(jstr(&fx, "reason"), "limit");
    assert_int_equal(call(&fx, "zz", 2, "{\"op\":\"list\"}"), 400);
    assert_string_equal(jstr(&fx, "reason"), "raw");
    assert_int_equal(call(&fx, NULL, 0, "[1,2]"), 400);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"op\":\"list\"}"), 400);
    assert_int_equal(call_raw(&fx, short_frame, sizeof short_frame), 400);
    assert_int_equal(call_raw(&fx, long_len, sizeof long_len), 400);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\",\"length\":\"262145\"}", addr),
                     413);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"get\",\"address\":\"%s\"}", addr), 404);
    fx_close(&fx);
}

static void
test_bad_requests_inproc(void **state)
{
    (void)state;
    bad_requests_are_400_naming_the_field(false);
}

static void
test_bad_requests_unix(void **state)
{
    (void)state;
    bad_requests_are_400_naming_the_field(true);
}

static void
test_put_limits_chunk_cap_and_offsets_are_enforced(void **state)
{
    sto_service_limits_t lim = {.puts_per_conn = 2};
    fx_t fx;
    uint8_t *big = calloc(1, STO_SVC_MAX_CHUNK + 1);
    char id[24];
    (void)state;

    fx_open(&fx, false, &lim);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\"}"), 200);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\"}"), 429);
    assert_string_equal(jstr(&fx, "code"), "quota_exhausted");
    assert_true(json_is_true(json_object_get(fx.json, "retryable")));
    assert_true(json_integer_value(json_object_get(fx.json, "retry_after_ms")) > 0);
    assert_int_equal(call(&fx, big, STO_SVC_MAX_CHUNK + 1,
                          "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     413);
    assert_int_equal(call(&fx, big, 10, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"5\"}", id),
                     409);
    assert_string_equal(jstr(&fx, "reason"), "offset");
    assert_int_equal(call(&fx, big, 10, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     200);
    /* declared size 4, 10 written: the store refuses, the put ends */
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"4\"}"), 429);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_abort\",\"put_id\":\"%s\"}", id), 200);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"4\"}"), 200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    assert_int_equal(call(&fx, big, 10, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"0\"}", id),
                     413);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id), 404);
    fx_close(&fx);
    free(big);
}

/* One request sent without waiting: its answer and when it came. */
typedef struct {
    bool done;
    int status;
    uint16_t code;
    unsigned seq; /* answers arrive numbered 1, 2, ... */
    char written[24];
    char reason[32];
} slot_t;

static unsigned slot_seq;

static void
on_slot(void *arg, int status, const oap_frame_t *resp)
{
    slot_t *sl = arg;
    json_t *o = NULL;
    const char *v;

    sl->done = true;
    sl->status = status;
    sl->seq = ++slot_seq;
    if (status < 0)
        return;
    sl->code = resp->code;
    if (resp->code >= 400)
        o = json_loadb((const char *)resp->payload, resp->payload_len, 0, NULL);
    else if (resp->payload_len >= 4)
        o = json_loadb((const char *)resp->payload + 4,
                       (size_t)resp->payload[0] << 24 | (size_t)resp->payload[1] << 16 |
                           (size_t)resp->payload[2] << 8 | resp->payload[3],
                       0, NULL);
    if ((v = json_string_value(json_object_get(o, "written"))) != NULL)
        snprintf(sl->written, sizeof sl->written, "%s", v);
    if ((v = json_string_value(json_object_get(o, "reason"))) != NULL)
        snprintf(sl->reason, sizeof sl->reason, "%s", v);
    json_decref(o);
}

/* Send a put_write (raw_len bytes of b at offset off) or, b NULL, put_commit; do not wait. */
static void
send_put_call(fx_t *fx, slot_t *sl, const char *id, const uint8_t *b, size_t off, size_t raw_len)
{
    char js[160];
    uint8_t *buf;
    size_t len;

    memset(sl, 0, sizeof *sl);
    if (b != NULL)
        snprintf(js, sizeof js, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"%zu\"}", id,
                 off);
    else
        snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id);
    buf = bus_fx_frame(js, b != NULL ? b + off : NULL, raw_len, &len);
    assert_int_equal(rbus_request(fx->peer, OAP_APP_STORAGE, buf, len, WAIT_MS, on_slot, sl), 0);
    free(buf);
}

static bool
slots_done(const slot_t *sl, size_t n, fx_t *fx)
{
    uint64_t end = ron_now_ms() + WAIT_MS;
    for (;;) {
        size_t i = 0;
        while (i < n && sl[i].done)
            i++;
        if (i == n)
            return true;
        if (ron_now_ms() >= end)
            return false;
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
}

/*
 * Up to STO_SVC_PUT_QUEUE put_writes of one put are accepted at once and run
 * in offset order (answers in order, each with the running total); a stale
 * offset is still 409 (reason offset), one write past the queue and a
 * commit while writes run are 409 put_busy (reason put_id). The in-process bus delivers the whole batch
 * in one loop turn, before the first write can return.
 */
static void
test_pipelined_put_writes_run_in_order_and_past_the_queue_are_busy(void **state)
{
    enum { C = 64 * 1024, N = STO_SVC_PUT_QUEUE };
    fx_t fx;
    uint8_t *b = malloc((size_t)C * N + 1);
    slot_t w[N], dup, extra, commit;
    char id[24], want[68], num[24];
    (void)state;

    fx_open(&fx, false, NULL);
    fill(b, (size_t)C * N + 1, 11);
    b3_text(b, (size_t)C * N, want);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"%d\"}", C * N), 200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    send_put_call(&fx, &w[0], id, b, 0, C);
    send_put_call(&fx, &dup, id, b, 0, C);
    for (size_t k = 1; k < N; k++)
        send_put_call(&fx, &w[k], id, b, k * C, C);
    send_put_call(&fx, &extra, id, b, (size_t)C * N, 1);
    send_put_call(&fx, &commit, id, NULL, 0, 0);
    assert_true(slots_done(w, N, &fx));
    assert_true(slots_done(&dup, 1, &fx) && slots_done(&extra, 1, &fx) &&
                slots_done(&commit, 1, &fx));
    assert_int_equal(dup.code, 409);
    assert_string_equal(dup.reason, "offset");
    assert_int_equal(extra.code, 409);
    assert_string_equal(extra.reason, "put_id"); /* put_busy (sent with slug conflict) */
    assert_int_equal(commit.code, 409);
    assert_string_equal(commit.reason, "put_id");
    for (size_t k = 0; k < N; k++) {
        assert_int_equal(w[k].status, 0);
        assert_int_equal(w[k].code, 200);
        snprintf(num, sizeof num, "%zu", (k + 1) * C);
        assert_string_equal(w[k].written, num);
        if (k > 0)
            assert_true(w[k].seq > w[k - 1].seq);
    }
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id), 200);
    assert_string_equal(jstr(&fx, "address"), want);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    fx_close(&fx);
    free(b);
}

/* A queued write behind one that fails gets the same error; the put is gone. */
static void
test_a_failed_write_fails_the_writes_queued_behind_it_and_ends_the_put(void **state)
{
    enum { C = 4096 };
    fx_t fx;
    uint8_t b[3 * C];
    slot_t w[3];
    char id[24];
    (void)state;

    fx_open(&fx, false, NULL);
    fill(b, sizeof b, 5);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_begin\",\"size\":\"%d\"}", C), 200);
    snprintf(id, sizeof id, "%s", jstr(&fx, "put_id"));
    for (size_t k = 0; k < 3; k++)
        send_put_call(&fx, &w[k], id, b, k * C, C);
    assert_true(slots_done(w, 3, &fx));
    assert_int_equal(w[0].code, 200);
    assert_int_equal(w[1].code, 413); /* past the declared size */
    assert_int_equal(w[2].code, 413);
    assert_true(w[2].seq > w[1].seq);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id), 404);
    assert_true(run_until(&fx, no_puts));
    fx_close(&fx);
}

static void
test_metrics_count_requests_by_op_and_status(void **state)
{
    fx_t fx;
    uint8_t b[100];
    char addr[68], *text = malloc(1 << 20);
    size_t n;
    (void)state;

    fx_open(&fx, false, NULL);
    fill(b, sizeof b, 4);
    put_object(&fx, b, sizeof b, sizeof b, addr);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"nope\"}"), 400);
    n = sto_service_metrics(fx.svc, text, (1 << 20) - 1);
    assert_true(n > 0);
    text[n] = '\0';
    assert_non_null(strstr(text, "storage_requests_total{op=\"put_commit\",status=\"200\"} 1"));
    assert_non_null(strstr(text, "storage_requests_total{op=\"invalid\",status=\"400\"} 1"));
    assert_non_null(strstr(text, "storage_bytes_in_total 100"));
    assert_non_null(strstr(text, "storage_open_puts 0"));
    fx_close(&fx);
    free(text);
}

typedef struct {
    bool done;
    int status;
    uint16_t code;
    uint8_t addr[STO_ADDR_LEN];
    uint64_t size;
} cl_result_t;

static void
cl_put_done(void *arg, int status, uint16_t code, const uint8_t addr[STO_ADDR_LEN])
{
    cl_result_t *r = arg;
    r->done = true;
    r->status = status;
    r->code = code;
    if (addr != NULL)
        memcpy(r->addr, addr, STO_ADDR_LEN);
}

static void
cl_get_done(void *arg, int status, uint16_t code, uint64_t size)
{
    cl_result_t *r = arg;
    r->done = true;
    r->status = status;
    r->code = code;
    r->size = size;
}

static void
cl_wait(fx_t *fx, cl_result_t *r)
{
    assert_true(bus_fx_loop_wait(&fx->loop, &r->done, WAIT_MS));
}

/* Put a file of n bytes with the client, get it back into another file. */
static void
client_round_trip(fx_t *fx, size_t n)
{
    char src[160], dst[160], want[68], got_addr[68];
    uint8_t *b = malloc(n + 1), *back = malloc(n + 1);
    cl_result_t r;
    FILE *f;
    int fd;

    snprintf(src, sizeof src, "%s/src-%zu", fx->tmp, n);
    snprintf(dst, sizeof dst, "%s/dst-%zu", fx->tmp, n);
    fill(b, n, (uint32_t)n);
    f = fopen(src, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    b3_text(b, n, want);

    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_file(fx->peer, src, "video/mp4", cl_put_done, &r), 0);
    assert_false(r.done); /* never from inside the call */
    cl_wait(fx, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.code, 200);
    sto_addr_format(r.addr, got_addr);
    assert_string_equal(got_addr, want);

    fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    memset(&r, 0, sizeof r);
    sto_addr_parse(want, r.addr);
    assert_int_equal(sto_client_get(fx->peer, r.addr, fd, cl_get_done, &r), 0);
    cl_wait(fx, &r);
    close(fd);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.size, n);
    f = fopen(dst, "rb");
    assert_non_null(f);
    assert_int_equal(fread(back, 1, n + 1, f), n);
    fclose(f);
    assert_memory_equal(back, b, n);
    assert_int_equal(call(fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", want), 200);
    assert_string_equal(jstr(fx, "content_type"), "video/mp4");
    free(b);
    free(back);
}

static void
test_client_put_file_and_get_round_trip(void **state)
{
    fx_t fx;
    cl_result_t r;
    uint8_t missing[STO_ADDR_LEN];
    int fd;
    (void)state;

    fx_open(&fx, true, NULL);
    client_round_trip(&fx, 0);
    client_round_trip(&fx, 1);
    client_round_trip(&fx, 3 * STO_SVC_MAX_CHUNK + 17);
    client_round_trip(&fx, 9 * STO_SVC_MAX_CHUNK); /* more chunks than the get window */
    assert_int_equal(sto_service_open_puts(fx.svc), 0);

    /* an unknown object: the service's 404 */
    memset(missing, 0xab, sizeof missing);
    fd = open("/dev/null", O_WRONLY);
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_get(fx.peer, missing, fd, cl_get_done, &r), 0);
    cl_wait(&fx, &r);
    close(fd);
    assert_int_equal(r.status, RON_ESTORE);
    assert_int_equal(r.code, 404);
    /* a missing file: refused at once, no callback */
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_file(fx.peer, "/nonexistent/x", NULL, cl_put_done, &r), -ENOENT);
    fx_close(&fx);
}

/* A streamed put: begin, pieces of uneven sizes (one over STO_SVC_MAX_CHUNK)
 * one at a time, commit; an expect mismatch is 409 and stores nothing; an
 * abort, even with a write in flight, leaves no open put. */
static void
test_client_streamed_put_writes_pieces_one_at_a_time(void **state)
{
    fx_t fx;
    cl_result_t r;
    sto_client_put_t *p = NULL;
    const size_t sizes[] = {1, 70000, STO_SVC_MAX_CHUNK + 5, 3};
    size_t n = 0, off = 0;
    uint8_t *b;
    char want[68], got[68];
    uint8_t wrong[STO_ADDR_LEN];
    (void)state;

    fx_open(&fx, true, NULL);
    for (size_t i = 0; i < 4; i++)
        n += sizes[i];
    b = malloc(n);
    fill(b, n, 7);
    b3_text(b, n, want);
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_begin(fx.peer, "text/x", NULL, cl_put_done, &r, &p), 0);
    assert_non_null(p);
    assert_false(r.done); /* never from inside the call */
    assert_int_equal(sto_client_put_write(p, b, 1), RON_EINVAL); /* not begun yet */
    cl_wait(&fx, &r);
    assert_int_equal(r.status, 0);
    for (size_t i = 0; i < 4; i++) {
        memset(&r, 0, sizeof r);
        assert_int_equal(sto_client_put_write(p, b + off, sizes[i]), 0);
        assert_int_equal(sto_client_put_write(p, b, 1), RON_EINVAL); /* one at a time */
        cl_wait(&fx, &r);
        assert_int_equal(r.status, 0);
        off += sizes[i];
    }
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_commit(p), 0);
    cl_wait(&fx, &r);
    assert_int_equal(r.status, 0);
    sto_addr_format(r.addr, got);
    assert_string_equal(got, want);
    assert_int_equal(call(&fx, NULL, 0, "{\"op\":\"stat\",\"address\":\"%s\"}", want), 200);
    assert_string_equal(jstr(&fx, "content_type"), "text/x");

    /* the bytes hash elsewhere: 409 at commit, the handle is gone, nothing stored */
    memset(wrong, 0x11, sizeof wrong);
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_begin(fx.peer, NULL, wrong, cl_put_done, &r, &p), 0);
    cl_wait(&fx, &r);
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_write(p, b, 1000), 0);
    cl_wait(&fx, &r);
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_commit(p), 0);
    cl_wait(&fx, &r);
    assert_int_equal(r.status, RON_ESTORE);
    assert_int_equal(r.code, 409);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);

    /* aborted while idle, and while a write is in flight: no open put stays */
    memset(&r, 0, sizeof r);
    assert_int_equal(sto_client_put_begin(fx.peer, NULL, NULL, cl_put_done, &r, &p), 0);
    cl_wait(&fx, &r);
    assert_int_equal(sto_client_put_write(p, b, 5000), 0);
    memset(&r, 0, sizeof r);
    sto_client_put_abort(p); /* in flight: ended when its answer comes, no callback */
    for (int i = 0; i < 200 && sto_service_open_puts(fx.svc) > 0; i++)
        uv_run(&fx.loop, UV_RUN_NOWAIT), usleep(1000);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    assert_false(r.done);
    free(b);
    fx_close(&fx);
}

/* A storage endpoint that answers get requests out of order: the first at
 * once, later ones held until the client's whole window (or the rest of the
 * object) is waiting, then answered last first. */
typedef struct {
    const uint8_t *obj;
    size_t size;
    rbus_req_t *held[STO_CLIENT_GET_WINDOW];
    uint64_t held_off[STO_CLIENT_GET_WINDOW];
    size_t nheld;
    uint64_t max_inflight_seen;
    size_t answered;
} rev_srv_t;

static void
rev_answer(rev_srv_t *v, rbus_req_t *req, uint64_t off)
{
    char js[64];
    size_t len = v->size - off < STO_SVC_MAX_CHUNK ? v->size - off : STO_SVC_MAX_CHUNK;
    size_t jl = (size_t)snprintf(js, sizeof js, "{\"size\":\"%zu\"}", v->size);
    uint8_t *buf = malloc(4 + jl + len);

    buf[0] = 0, buf[1] = 0, buf[2] = (uint8_t)(jl >> 8), buf[3] = (uint8_t)jl;
    memcpy(buf + 4, js, jl);
    memcpy(buf + 4 + jl, v->obj + off, len);
    assert_int_equal(rbus_respond(req, 200, buf, 4 + jl + len), 0);
    v->answered++;
    free(buf);
}

static void
rev_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    rev_srv_t *v = arg;
    uint32_t jl = (uint32_t)f->payload[2] << 8 | f->payload[3];
    json_t *o = json_loadb((const char *)f->payload + 4, jl, 0, NULL);
    uint64_t off = strtoull(json_string_value(json_object_get(o, "offset")), NULL, 10);

    json_decref(o);
    if (off == 0) {
        rev_answer(v, req, 0);
        return;
    }
    assert_true(v->nheld < STO_CLIENT_GET_WINDOW); /* the client keeps to its window */
    v->held[v->nheld] = req;
    v->held_off[v->nheld++] = off;
    if (v->nheld > v->max_inflight_seen)
        v->max_inflight_seen = v->nheld;
    if (v->nheld == STO_CLIENT_GET_WINDOW || off + STO_SVC_MAX_CHUNK >= v->size) {
        while (v->nheld > 0) {
            v->nheld--;
            rev_answer(v, v->held[v->nheld], v->held_off[v->nheld]);
        }
    }
}

/* The offset a get request asks for (a test endpoint's parse). */
static uint64_t
get_offset(const oap_frame_t *f)
{
    uint32_t jl = (uint32_t)f->payload[2] << 8 | f->payload[3];
    json_t *o = json_loadb((const char *)f->payload + 4, jl, 0, NULL);
    uint64_t off = strtoull(json_string_value(json_object_get(o, "offset")), NULL, 10);

    json_decref(o);
    return off;
}

/* A storage endpoint that holds the answer at STO_SVC_MAX_CHUNK (a slow read
 * on the service's thread pool) and answers every other get at once; the test
 * loop releases it after STALL_HOLD_MS. */
#define STALL_HOLD_MS 200u
typedef struct {
    rev_srv_t v;            /* the object and the answer count */
    rbus_req_t *held;       /* the held answer, NULL once released */
    bool was_held;
    uint64_t held_at;       /* ms */
    uint64_t max_off_held;  /* the largest offset asked while it was held */
} stall_srv_t;

static void
stall_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    stall_srv_t *s = arg;
    uint64_t off = get_offset(f);

    if (off == STO_SVC_MAX_CHUNK && !s->was_held) {
        s->held = req;
        s->was_held = true;
        s->held_at = ron_now_ms();
        return;
    }
    if (s->held != NULL && off > s->max_off_held)
        s->max_off_held = off;
    rev_answer(&s->v, req, off);
}

/* Get n bytes of obj from an in-process endpoint served by h (arg: its
 * rev_srv_t first) with sto_client_get; every loop turn calls turn (may be
 * NULL). Asserts the get succeeded with the exact bytes. */
static void
client_get_from(rbus_handler_cb h, rev_srv_t *v, void (*turn)(rev_srv_t *v))
{
    rbus_config_t sc = {0}, cc = {0};
    size_t n = v->size;
    uint8_t *back = malloc(n + 1), addr[STO_ADDR_LEN] = {1};
    char tmp[64], dst[96];
    cl_result_t r = {0};
    uv_loop_t loop;
    rbus_hub_t *hub;
    rbus_t *srv, *cli;
    rbus_peer_t *peer;
    uint64_t end;
    int rc = 0, fd;
    FILE *f;

    snprintf(tmp, sizeof tmp, "/tmp/ron-stoget-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    snprintf(dst, sizeof dst, "%s/out", tmp);
    assert_int_equal(uv_loop_init(&loop), 0);
    hub = rbus_hub_new(&loop);
    sc.name = "storage";
    cc.name = "client";
    sc.transport = cc.transport = RBUS_TRANSPORT_INPROC;
    sc.hub = cc.hub = hub;
    srv = rbus_new(&loop, &sc, &rc);
    assert_non_null(srv);
    cli = rbus_new(&loop, &cc, &rc);
    assert_non_null(cli);
    assert_int_equal(rbus_handle(srv, OAP_APP_STORAGE, h, v), 0);
    assert_int_equal(rbus_listen(srv), 0);
    peer = rbus_connect(cli, "storage", &rc);
    assert_non_null(peer);
    fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(sto_client_get(peer, addr, fd, cl_get_done, &r), 0);
    end = ron_now_ms() + WAIT_MS;
    while (!r.done && ron_now_ms() < end) {
        uv_run(&loop, turn != NULL ? UV_RUN_NOWAIT : UV_RUN_ONCE);
        if (turn != NULL)
            turn(v), usleep(500);
    }
    assert_true(r.done);
    close(fd);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.size, n);
    f = fopen(dst, "rb");
    assert_non_null(f);
    assert_int_equal(fread(back, 1, n + 1, f), n);
    fclose(f);
    assert_memory_equal(back, v->obj, n);

    rbus_peer_close(peer);
    rbus_free(cli);
    rbus_free(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    rbus_hub_free(hub);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    unlink(dst);
    rmdir(tmp);
    free(back);
}

static void
test_client_get_writes_answers_in_offset_order_when_they_arrive_reversed(void **state)
{
    rev_srv_t v = {0};
    size_t n = 9 * STO_SVC_MAX_CHUNK + 1234;
    uint8_t *obj = malloc(n);
    (void)state;

    fill(obj, n, 77);
    v.obj = obj;
    v.size = n;
    client_get_from(rev_request, &v, NULL);
    assert_int_equal(v.answered, 10);
    assert_int_equal(v.max_inflight_seen, STO_CLIENT_GET_WINDOW); /* it did pipeline */
    free(obj);
}

/* Release the stalled answer once it was held STALL_HOLD_MS. */
static void
stall_turn(rev_srv_t *v)
{
    stall_srv_t *s = (stall_srv_t *)v;

    if (s->held != NULL && ron_now_ms() - s->held_at >= STALL_HOLD_MS) {
        rbus_req_t *req = s->held;
        s->held = NULL;
        rev_answer(&s->v, req, STO_SVC_MAX_CHUNK);
    }
}

/* One slow answer (the thread pool reads out of order) while the later ones
 * come at once: the window stays anchored at the first byte not yet written,
 * so the client holds at most WINDOW - 1 answers and asks for nothing past
 * it until the slow one comes (it used to slide on and fail RON_EPROTO when
 * its held answers overflowed). */
static void
test_client_get_window_waits_for_a_slow_answer_before_asking_further(void **state)
{
    stall_srv_t s = {0};
    size_t n = 12 * STO_SVC_MAX_CHUNK + 99;
    uint8_t *obj = malloc(n);
    (void)state;

    fill(obj, n, 78);
    s.v.obj = obj;
    s.v.size = n;
    client_get_from(stall_request, &s.v, stall_turn);
    assert_true(s.was_held);
    assert_int_equal(s.v.answered, 13);
    /* the window is [MAX_CHUNK, (1 + WINDOW) * MAX_CHUNK) while the answer at MAX_CHUNK is held */
    assert_int_equal(s.max_off_held, (uint64_t)STO_CLIENT_GET_WINDOW * STO_SVC_MAX_CHUNK);
    free(obj);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_inproc),
        cmocka_unit_test(test_put_commit_says_whether_the_object_is_new),
        cmocka_unit_test(test_client_get_writes_answers_in_offset_order_when_they_arrive_reversed),
        cmocka_unit_test(test_client_get_window_waits_for_a_slow_answer_before_asking_further),
        cmocka_unit_test(test_put_get_unix),
        cmocka_unit_test(test_mismatch_inproc),
        cmocka_unit_test(test_mismatch_unix),
        cmocka_unit_test(test_abort_removes_the_put_and_its_temporary_files),
        cmocka_unit_test(test_idle_put_is_aborted_after_its_timeout),
        cmocka_unit_test(test_connection_loss_aborts_its_puts),
        cmocka_unit_test(test_pin_unpin_and_paged_list),
        cmocka_unit_test(test_bad_requests_inproc),
        cmocka_unit_test(test_bad_requests_unix),
        cmocka_unit_test(test_put_limits_chunk_cap_and_offsets_are_enforced),
        cmocka_unit_test(test_metrics_count_requests_by_op_and_status),
        cmocka_unit_test(test_pipelined_put_writes_run_in_order_and_past_the_queue_are_busy),
        cmocka_unit_test(test_a_failed_write_fails_the_writes_queued_behind_it_and_ends_the_put),
        cmocka_unit_test(test_client_put_file_and_get_round_trip),
        cmocka_unit_test(test_client_streamed_put_writes_pieces_one_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
