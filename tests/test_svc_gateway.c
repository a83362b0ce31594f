/*
 * test_svc_gateway.c - the gateway: its sans-I/O HTTP semantics (Range,
 * multipart framing, If-None-Match / If-Range, sniffing) tested directly,
 * then its routes over real loopback sockets: a tx_server on port 0 on a
 * libuv loop in the test's thread, the gateway's handler over a real file
 * store in a temp dir (or the RAM store), and a blocking client in a second
 * thread (receive timeouts bound every wait) that wakes the loop with
 * uv_async_send when done. Every loop test ends with uv_loop_close() == 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <stdatomic.h>

#include <jansson.h>

#include "guard_fixture.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_log.h"
#include "idx_service.h"
#include "svc_gateway.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- Range ---- */

static gw_range_result_t
rp(const char *v, uint64_t size, gw_range_t *r, size_t *n)
{
    return gw_range_parse(v, size, r, n);
}

static void
test_range_single_suffix_and_open_ranges_resolve_against_the_size(void **state)
{
    gw_range_t r[GW_MAX_RANGES];
    size_t n;

    (void)state;
    assert_int_equal(rp("bytes=0-499", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, 1);
    assert_true(r[0].first == 0 && r[0].last == 499);
    assert_int_equal(rp("bytes=-500", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_true(r[0].first == 500 && r[0].last == 999);
    assert_int_equal(rp("bytes=-5000", 1000, r, &n), GW_RANGE_PARTIAL); /* whole */
    assert_true(r[0].first == 0 && r[0].last == 999);
    assert_int_equal(rp("bytes=500-", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_true(r[0].first == 500 && r[0].last == 999);
    assert_int_equal(rp("bytes=990-5000", 1000, r, &n), GW_RANGE_PARTIAL); /* clipped */
    assert_true(r[0].first == 990 && r[0].last == 999);
    assert_int_equal(rp("BYTES = 1-1", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_true(r[0].first == 1 && r[0].last == 1);
    assert_int_equal(rp("bytes=65535-65537", 200000, r, &n), GW_RANGE_PARTIAL);
    assert_true(r[0].first == 65535 && r[0].last == 65537);
    /* saturating numbers: a last-pos past 2^64 is just "to the end" */
    assert_int_equal(rp("bytes=5-999999999999999999999999", 10, r, &n), GW_RANGE_PARTIAL);
    assert_true(r[0].first == 5 && r[0].last == 9);
}

static void
test_range_several_ranges_are_sorted_and_overlaps_coalesced(void **state)
{
    gw_range_t r[GW_MAX_RANGES];
    size_t n;

    (void)state;
    assert_int_equal(rp("bytes=0-0, 65535-65537 ,-1", 100000, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, 3);
    assert_true(r[0].first == 0 && r[0].last == 0);
    assert_true(r[1].first == 65535 && r[1].last == 65537);
    assert_true(r[2].first == 99999 && r[2].last == 99999);
    /* out of order, overlapping, touching: one sorted disjoint list */
    assert_int_equal(rp("bytes=50-60,0-10,5-20,21-30,100-", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, 3);
    assert_true(r[0].first == 0 && r[0].last == 30);
    assert_true(r[1].first == 50 && r[1].last == 60);
    assert_true(r[2].first == 100 && r[2].last == 999);
    /* the classic amplification: many copies of the whole thing become one */
    assert_int_equal(rp("bytes=0-,0-,0-,0-,0-,0-,0-,0-", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, 1);
    /* unsatisfiable members are dropped when others are satisfiable */
    assert_int_equal(rp("bytes=5000-6000,1-2", 1000, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, 1);
    assert_true(r[0].first == 1 && r[0].last == 2);
    /* empty list elements are allowed */
    assert_int_equal(rp("bytes=,, 1-2 ,,", 50, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, 1);
}

static void
test_range_unsatisfiable_when_no_range_overlaps_the_object(void **state)
{
    gw_range_t r[GW_MAX_RANGES];
    size_t n = 7;

    (void)state;
    assert_int_equal(rp("bytes=10-20", 10, r, &n), GW_RANGE_UNSATISFIABLE);
    assert_int_equal(n, 0);
    assert_int_equal(rp("bytes=-0", 10, r, &n), GW_RANGE_UNSATISFIABLE);
    assert_int_equal(rp("bytes=0-", 0, r, &n), GW_RANGE_UNSATISFIABLE);
    assert_int_equal(rp("bytes=-1", 0, r, &n), GW_RANGE_UNSATISFIABLE);
    assert_int_equal(rp("bytes=10-,20-30", 10, r, &n), GW_RANGE_UNSATISFIABLE);
}

static void
test_range_invalid_foreign_or_abusive_headers_are_ignored(void **state)
{
    gw_range_t r[GW_MAX_RANGES];
    size_t n = 7;
    char many[512];
    size_t off = 0;

    (void)state;
    assert_int_equal(rp(NULL, 10, r, &n), GW_RANGE_FULL);
    assert_int_equal(n, 0);
    const char *bad[] = {"items=0-1",   "bytes 0-1", "bytes=5-1", "bytes=a-b", "bytes=1-2;",
                         "bytes=",      "bytes=,",   "bytes=--1", "bytes=1",   "bytes=1-2 3-4",
                         "bytes=0x10-", "bytes=-",   ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(rp(bad[i], 100, r, &n), GW_RANGE_FULL);
    /* 16 ranges are honoured, 17 make the header ignored */
    off = (size_t)snprintf(many, sizeof many, "bytes=0-0");
    for (int i = 1; i < GW_MAX_RANGES; i++)
        off += (size_t)snprintf(many + off, sizeof many - off, ",%d-%d", 2 * i, 2 * i);
    assert_int_equal(rp(many, 1000, r, &n), GW_RANGE_PARTIAL);
    assert_int_equal(n, GW_MAX_RANGES);
    snprintf(many + off, sizeof many - off, ",100-100");
    assert_int_equal(rp(many, 1000, r, &n), GW_RANGE_FULL);
    /* endless empty elements are cut off too */
    memset(many, ',', sizeof many);
    memcpy(many, "bytes=", 6);
    many[sizeof many - 1] = '\0';
    assert_int_equal(rp(many, 1000, r, &n), GW_RANGE_FULL);
}

/* ---- multipart framing ---- */

static void
test_multipart_heads_and_length_follow_rfc9110(void **state)
{
    gw_range_t r[2] = {{0, 0}, {65535, 65537}};
    char head[GW_PART_HEAD_MAX], tail[64];
    uint8_t addr[STO_ADDR_LEN];
    char b[GW_BOUNDARY_LEN + 1];

    (void)state;
    size_t hl = gw_multipart_part_head(head, sizeof head, "BND", "text/plain", &r[1], 70000);
    assert_string_equal(head, "\r\n--BND\r\nContent-Type: text/plain\r\n"
                              "Content-Range: bytes 65535-65537/70000\r\n\r\n");
    assert_int_equal(hl, strlen(head));
    assert_int_equal(gw_multipart_tail(tail, sizeof tail, "BND"), 11);
    assert_string_equal(tail, "\r\n--BND--\r\n");
    uint64_t want = 11 + 1 + 3;
    want += gw_multipart_part_head(head, sizeof head, "BND", "text/plain", &r[0], 70000);
    want += hl;
    assert_int_equal(gw_multipart_length(r, 2, "BND", "text/plain", 70000), want);
    assert_int_equal(gw_multipart_part_head(head, 10, "BND", "text/plain", &r[0], 70000), 0);
    memset(addr, 0xab, sizeof addr);
    gw_multipart_boundary(addr, b);
    assert_string_equal(b, "abababababababababababab");
}

/* ---- conditionals ---- */

#define TAG "\"b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\""

static void
test_if_none_match_handles_star_weak_tags_and_lists(void **state)
{
    (void)state;
    assert_true(gw_etag_match(TAG, TAG));
    assert_true(gw_etag_match("*", TAG));
    assert_true(gw_etag_match(" * ", TAG));
    assert_true(gw_etag_match("W/" TAG, TAG));
    assert_true(gw_etag_match("\"x\", " TAG, TAG));
    assert_true(gw_etag_match("\"x\",W/" TAG " , \"y\"", TAG));
    assert_true(gw_etag_match(",," TAG ",", TAG));
    assert_false(gw_etag_match("\"x\"", TAG));
    assert_false(gw_etag_match("\"b3:af\"", TAG));
    assert_false(gw_etag_match("b3:af1349b9", TAG)); /* unquoted: malformed */
    assert_false(gw_etag_match("\"x\" " TAG, TAG));  /* missing comma: malformed */
    assert_false(gw_etag_match("\"x", TAG));
    assert_false(gw_etag_match("*, \"x\"", TAG));
    assert_false(gw_etag_match("", TAG));
    assert_false(gw_etag_match(NULL, TAG));
}

static void
test_if_range_needs_the_same_strong_tag(void **state)
{
    (void)state;
    assert_true(gw_if_range_ok(TAG, TAG));
    assert_true(gw_if_range_ok(" " TAG " ", TAG));
    assert_false(gw_if_range_ok("W/" TAG, TAG));
    assert_false(gw_if_range_ok("\"x\"", TAG));
    assert_false(gw_if_range_ok("Wed, 21 Oct 2015 07:28:00 GMT", TAG));
    assert_false(gw_if_range_ok(NULL, TAG));
}

/* ---- sniffing ---- */

static void
test_sniff_recognises_the_table_and_defaults_to_octet_stream(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *want;
    } t[] = {
        {S("\x89PNG\r\n\x1A\n\0\0\0\rIHDR"), "image/png"},
        {S("\xFF\xD8\xFF\xE0\0\x10JFIF"), "image/jpeg"},
        {S("GIF89a\x01\0"), "image/gif"},
        {S("RIFF\x10\0\0\0WEBPVP8 "), "image/webp"},
        {S("%PDF-1.7\n"), "application/pdf"},
        {S("\0\0\0\x20"
           "ftypisom\0\0\x02\0"),
         "video/mp4"},
        {S("\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x84webm"), "video/webm"},
        {S("\x1A\x45\xDF\xA3\xA3\x42\x86\x81\x01\x42\x82\x88matroska"), "video/x-matroska"},
        {S("ID3\x04\0\0\0\0\0\0"), "audio/mpeg"},
        {S("\xFF\xFB\x90\x64\0"), "audio/mpeg"},
        {S("OggS\0\x02\0\0"), "application/ogg"},
        {S("PK\x03\x04\x14\0"), "application/zip"},
        {S("\x1F\x8B\x08\0\0\0"), "application/gzip"},
        {S("  <!DOCTYPE html><html>"), "text/html; charset=utf-8"},
        {S("<p>hi</p>"), "text/html; charset=utf-8"},
        {S("\n{\"a\": [1, 2]}"), "application/json"},
        {S("[1,2,3]"), "application/json"},
        {S("hello, w\xC3\xB6rld\n"), "text/plain; charset=utf-8"},
        {S("hello\0world"), "application/octet-stream"},
        {S("\xC3\x28 bad utf-8"), "application/octet-stream"},
        {S("\x7F"
           "ELF\x02\x01"),
         "application/octet-stream"},
        {"", 0, "application/octet-stream"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        assert_string_equal(gw_sniff((const uint8_t *)t[i].bytes, t[i].len, true), t[i].want);
    /* a UTF-8 sequence cut at the window's end is text only when more follows */
    assert_string_equal(gw_sniff((const uint8_t *)"abc \xE2\x82", 6, false),
                        "text/plain; charset=utf-8");
    assert_string_equal(gw_sniff((const uint8_t *)"abc \xE2\x82", 6, true),
                        "application/octet-stream");
}

/* ---- paths ---- */

static void
test_path_decode_unescapes_one_segment_and_refuses_nul_and_slash(void **state)
{
    char out[16];

    (void)state;
    assert_int_equal(gw_path_decode(S("ex%41mple.test"), out, sizeof out), 12);
    assert_string_equal(out, "exAmple.test");
    assert_int_equal(gw_path_decode(S("%c3%a9.test"), out, sizeof out), 7);
    assert_string_equal(out, "\xc3\xa9.test");
    assert_int_equal(gw_path_decode(S(""), out, sizeof out), 0);
    assert_int_equal(gw_path_decode(S("a%2Fb"), out, sizeof out), RON_EINVAL);
    assert_int_equal(gw_path_decode(S("a%00b"), out, sizeof out), RON_EINVAL);
    assert_int_equal(gw_path_decode(S("a%4"), out, sizeof out), RON_EINVAL);
    assert_int_equal(gw_path_decode(S("a%zz"), out, sizeof out), RON_EINVAL);
    assert_int_equal(gw_path_decode(S("0123456789abcdef"), out, sizeof out), RON_EINVAL);
    assert_int_equal(gw_path_decode(S("0123456789abcde"), out, sizeof out), 15);
}

/* ---- fixture: gateway on the loop, client in a thread ---- */

typedef struct fx fx_t;
typedef void (*fx_client_fn)(fx_t *f);

struct fx {
    uv_loop_t loop;
    uv_async_t done;
    uv_thread_t thread;
    tx_server_t *srv;
    gw_t *gw;
    sto_store_t *store;
    idx_t *index;
    char dir[64];
    bool ram;
    /* names through an index service on an in-process ron-bus hub instead
     * of f->index; index_endpoint names what the gateway connects to (a
     * name nobody serves: the service is down) */
    const char *index_endpoint;
    rbus_hub_t *hub;
    rbus_t *bus_idx, *bus_gw;
    rbus_peer_t *idx_peer;
    idx_service_t *idx_svc;
    bool buffered_uploads; /* no head hook: the transport buffers upload bodies */
    uint16_t port;
    fx_client_fn client;
    uint32_t chunk;
    /* objects the client fetches */
    uint8_t *data;
    size_t len;
    uint8_t addr[STO_ADDR_LEN];
    char text[68];
    /* results */
    int ok;
    char note[256];
    gw_stats_t stats;
    tx_stats_t tx_stats;
    bool gw_closed;
    /* capabilities (fx_guard): an authority in RAM and the gateway's guard */
    guard_authority_t *auth;
    guard_t *guard;
    char op_tok[AUTH_MAX_TOKEN + 1];    /* every op */
    char get_tok[AUTH_MAX_TOKEN + 1];   /* get only */
    char small_tok[AUTH_MAX_TOKEN + 1]; /* put, max-bytes 1000 */
    char pfx_tok[AUTH_MAX_TOKEN + 1];   /* put, prefix of the fixture object's address */
    char get_id[AUTH_ID_MAX + 1];
    /* the client asks the loop to revoke get_id (fx_on_revoke) */
    uv_async_t revoke;
    uv_sem_t revoked;
    int revoke_rc;
    /* a stand-in storage service on a hub (fx_fake_storage): it records
     * the cap section and tenant of what the gateway forwards */
    bool fake_storage;
    rbus_t *bus_sto;
    rbus_peer_t *sto_peer;
    char seen_cap[AUTH_MAX_TOKEN + 1];
    uint8_t seen_tenant[16];
    unsigned seen;
    atomic_int sto_refuse; /* set: the stand-in answers every request with this status */
    uv_mutex_t seen_mu;    /* seen_*: written on the loop, read by the client thread */
    /* remote_serve: the stand-in holds f->data (not in f->store) and answers
     * gets with its bytes; every get after the first is held until hold_for
     * are waiting or hold_timer fires (FX_HOLD_MS), so the gets the gateway
     * sends before it has any answer show in max_held */
    bool remote_serve;
    bool short_answers; /* gets past offset 0 are answered one byte short */
    unsigned hold_for;
    struct fx_held *held[8];
    unsigned n_held, max_held, gets_seen;
    atomic_uint held_now; /* n_held, for the client thread */
    uv_timer_t hold_timer;
};

#define FX_HOLD_MS 1000 /* held gets are answered by then whatever came */

static const uint8_t T1[STO_TENANT_LEN] = {1};

static void
fx_client_thread(void *arg)
{
    fx_t *f = arg;

    f->ok = 1;
    f->client(f);
    uv_async_send(&f->done);
}

static void fx_index_service_close(fx_t *f);

static void fx_fake_storage_close(fx_t *f);

static void
fx_on_done(uv_async_t *a)
{
    fx_t *f = a->data;

    if (f->index_endpoint != NULL)
        fx_index_service_close(f);
    if (f->fake_storage)
        fx_fake_storage_close(f);
    if (f->guard != NULL)
        uv_close((uv_handle_t *)&f->revoke, NULL);
    tx_server_close(f->srv, NULL, NULL);
    uv_close((uv_handle_t *)&f->done, NULL);
}

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void
fx_open(fx_t *f, bool ram)
{
    sto_config_t c = {0};

    memset(f, 0, sizeof *f);
    f->ram = ram;
    if (!ram) {
        snprintf(f->dir, sizeof f->dir, "/tmp/gwtest.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        c.dir = f->dir;
    }
    assert_int_equal(sto_open(&c, &f->store), 0);
}

static void
fx_close(fx_t *f)
{
    guard_fx_close(f->auth, f->guard);
    if (f->guard != NULL)
        uv_sem_destroy(&f->revoked);
    idx_free(f->index);
    sto_close(f->store);
    if (!f->ram)
        nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->data);
}

/* Store n pseudo-random bytes (or the given bytes) as the fixture's object. */
static void
fx_put(fx_t *f, const void *bytes, size_t n, const char *ctype)
{
    uint8_t *old = f->data;

    f->data = malloc(n + 1);
    f->len = n;
    if (bytes != NULL) {
        memcpy(f->data, bytes, n);
    } else {
        uint32_t x = 2463534242u + (uint32_t)n;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            f->data[i] = (uint8_t)x;
        }
    }
    free(old);
    assert_int_equal(sto_put_buf(f->store, T1, f->data, n, ctype, f->addr), 0);
    sto_addr_format(f->addr, f->text);
}

static void
fx_gw_closed(void *arg)
{
    ((fx_t *)arg)->gw_closed = true;
}

/* The index service borrows the fixture's idx: fx_close frees it. */
static void
fx_idx_keep(void *arg, idx_t *idx)
{
    (void)arg;
    (void)idx;
}

/* Serve f->index as the index service on a hub and point the gateway at it. */
static void
fx_index_service(fx_t *f)
{
    rbus_config_t bc = {.transport = RBUS_TRANSPORT_INPROC, .name = "index"};
    int rc = 0;

    f->hub = rbus_hub_new(&f->loop);
    bc.hub = f->hub;
    assert_non_null(f->bus_idx = rbus_new(&f->loop, &bc, &rc));
    assert_int_equal(
        idx_service_new_shared(&f->loop, f->bus_idx, f->index, fx_idx_keep, NULL, &f->idx_svc), 0);
    assert_int_equal(rbus_listen(f->bus_idx), 0);
    bc.name = "gateway";
    assert_non_null(f->bus_gw = rbus_new(&f->loop, &bc, &rc));
    assert_non_null(f->idx_peer = rbus_connect(f->bus_gw, f->index_endpoint, &rc));
    gw_set_index(f->gw, f->idx_peer);
}

/* The client is done: let go of the buses so the loop can end. */
static void
fx_index_service_close(fx_t *f)
{
    gw_set_index(f->gw, NULL);
    rbus_peer_close(f->idx_peer);
    rbus_free(f->bus_gw);
    idx_service_free(f->idx_svc);
    rbus_free(f->bus_idx);
}

/* ---- capabilities ---- */

/* Mint, from the operator's grant, a token for ops (and max_bytes, 0: none). */
static void
fx_mint(fx_t *f, uint32_t ops, uint64_t max_bytes, char *out, size_t cap, char *id_out)
{
    guard_req_t gr = {.op = AUTH_OP_MINT, .token = f->op_tok, .token_len = strlen(f->op_tok)};
    guard_result_t res;
    guard_mint_req_t m = {.ops = ops, .max_bytes = max_bytes};
    char id[AUTH_ID_MAX + 1];

    assert_int_equal(guard_check(f->guard, &gr, &res), 0);
    assert_true(guard_mint(f->guard, &res.verdict.grant, res.actor, &m, out, cap,
                           id_out != NULL ? id_out : id) > 0);
}

/*
 * A real guard for the gateway: an authority in RAM under a random master,
 * the gateway's guard on the same master with the authority's whole state
 * applied, the policy at policy_file (NULL: the shipped default), the
 * operator's token and two narrower ones minted from it.
 */
static void
fx_guard(fx_t *f, const char *policy_file)
{
    guard_fx_open(NULL, "gateway", policy_file, &f->auth, &f->guard, NULL, f->op_tok,
                  sizeof f->op_tok);
    fx_mint(f, 1u << AUTH_OP_GET, 0, f->get_tok, sizeof f->get_tok, f->get_id);
    fx_mint(f, 1u << AUTH_OP_PUT, 1000, f->small_tok, sizeof f->small_tok, NULL);
    assert_int_equal(uv_sem_init(&f->revoked, 0), 0);
}

/* Loop thread: revoke get_id at the authority and apply the change to the
 * gateway's guard, as the kernel's push does; then wake the client. */
static void
fx_on_revoke(uv_async_t *a)
{
    fx_t *f = a->data;
    guard_entry_t e;
    uint64_t prev = guard_head(f->guard);
    int rc = guard_authority_revoke(f->auth, f->get_id, strlen(f->get_id), 0,
                                    (int64_t)time(NULL), &e);

    if (rc == 0)
        rc = guard_apply(f->guard, prev, e.seq, &e, 1);
    f->revoke_rc = rc;
    uv_sem_post(&f->revoked);
}

static void fx_sto_serve(fx_t *f, rbus_req_t *req, const oap_frame_t *fr);

/* The stand-in storage service: record what came, answer 507 (so nothing
 * is stored anywhere) to a put_begin and 404 to a get. */
static void
fx_sto_handler(void *arg, rbus_req_t *req, const oap_frame_t *fr)
{
    fx_t *f = arg;
    size_t n = fr->cap_len < sizeof f->seen_cap - 1 ? fr->cap_len : sizeof f->seen_cap - 1;
    bool get = fr->payload_len > 4 && memmem(fr->payload + 4, fr->payload_len - 4,
                                             "\"op\":\"get\"", 10) != NULL;

    uv_mutex_lock(&f->seen_mu);
    if (n > 0)
        memcpy(f->seen_cap, fr->cap, n);
    f->seen_cap[n] = '\0';
    memcpy(f->seen_tenant, fr->tenant_id, sizeof f->seen_tenant);
    f->seen++;
    uv_mutex_unlock(&f->seen_mu);
    if (f->remote_serve && get)
        fx_sto_serve(f, req, fr);
    else if (atomic_load(&f->sto_refuse) != 0)
        (void)rbus_respond_error(req, (uint16_t)atomic_load(&f->sto_refuse), "refused");
    else
        (void)rbus_respond_error(req, get ? 404 : 507, get ? "no such object" : "full");
}

/* Loop: answer get req (its JSON already checked) with f->data's bytes
 * [off, off + len): {"size":...} then the raw bytes, as storage does. */
static void
fx_sto_answer_get(fx_t *f, rbus_req_t *req, const oap_frame_t *fr)
{
    json_t *o = json_loadb((const char *)fr->payload + 4, fr->payload_len - 4, 0, NULL);
    unsigned long long off = strtoull(json_string_value(json_object_get(o, "offset")), NULL, 10);
    unsigned long long len = strtoull(json_string_value(json_object_get(o, "length")), NULL, 10);
    char js[96];
    int jl;
    uint8_t *buf;

    json_decref(o);
    if (off >= f->len) {
        (void)rbus_respond_error(req, 416, "past the end");
        return;
    }
    if (len > f->len - off)
        len = f->len - off;
    if (f->short_answers && off > 0)
        len--;
    jl = snprintf(js, sizeof js, "{\"size\":\"%zu\"}", f->len);
    buf = malloc(4 + (size_t)jl + len);
    buf[0] = 0, buf[1] = 0, buf[2] = (uint8_t)(jl >> 8), buf[3] = (uint8_t)jl;
    memcpy(buf + 4, js, (size_t)jl);
    memcpy(buf + 4 + jl, f->data + off, len);
    (void)rbus_respond(req, 200, buf, 4 + (size_t)jl + len);
    free(buf);
}

/* A held get: its request and a copy of its frame (the frame is a view). */
typedef struct fx_held {
    rbus_req_t *req;
    oap_frame_t fr;
    uint8_t payload[];
} fx_held_t;

static void
fx_hold_flush(fx_t *f)
{
    for (unsigned i = 0; i < f->n_held; i++) {
        fx_sto_answer_get(f, f->held[i]->req, &f->held[i]->fr);
        free(f->held[i]);
    }
    f->n_held = 0;
    atomic_store(&f->held_now, 0);
}

static void
fx_on_hold_timer(uv_timer_t *t)
{
    fx_hold_flush(t->data);
}

/* The stand-in serving f->data: the first get at once, later ones held. */
static void
fx_sto_serve(fx_t *f, rbus_req_t *req, const oap_frame_t *fr)
{
    fx_held_t *h;

    if (f->gets_seen++ == 0 || f->hold_for == 0) {
        fx_sto_answer_get(f, req, fr);
        return;
    }
    assert_true(f->n_held < sizeof f->held / sizeof f->held[0]);
    h = malloc(sizeof *h + fr->payload_len);
    h->fr = *fr;
    memcpy(h->payload, fr->payload, fr->payload_len);
    h->fr.payload = h->payload;
    h->req = req;
    f->held[f->n_held++] = h;
    atomic_store(&f->held_now, f->n_held);
    if (f->n_held > f->max_held)
        f->max_held = f->n_held;
    if (f->n_held == 1)
        uv_timer_start(&f->hold_timer, fx_on_hold_timer, FX_HOLD_MS, 0);
    if (f->n_held >= f->hold_for) {
        uv_timer_stop(&f->hold_timer);
        fx_hold_flush(f);
    }
}

static void
fx_fake_storage(fx_t *f)
{
    rbus_config_t bc = {.transport = RBUS_TRANSPORT_INPROC, .name = "storage"};
    int rc = 0;

    f->hub = rbus_hub_new(&f->loop);
    bc.hub = f->hub;
    assert_int_equal(uv_mutex_init(&f->seen_mu), 0);
    assert_non_null(f->bus_sto = rbus_new(&f->loop, &bc, &rc));
    assert_int_equal(rbus_handle(f->bus_sto, OAP_APP_STORAGE, fx_sto_handler, f), 0);
    assert_int_equal(rbus_listen(f->bus_sto), 0);
    bc.name = "gateway";
    assert_non_null(f->bus_gw = rbus_new(&f->loop, &bc, &rc));
    assert_non_null(f->sto_peer = rbus_connect(f->bus_gw, "storage", &rc));
    gw_set_storage(f->gw, f->sto_peer);
    gw_set_fetch(f->gw, f->sto_peer);
    uv_timer_init(&f->loop, &f->hold_timer);
    f->hold_timer.data = f;
}

static void
fx_fake_storage_close(fx_t *f)
{
    gw_set_storage(f->gw, NULL);
    gw_set_fetch(f->gw, NULL);
    fx_hold_flush(f);
    uv_close((uv_handle_t *)&f->hold_timer, NULL);
    rbus_peer_close(f->sto_peer);
    rbus_free(f->bus_gw);
    rbus_free(f->bus_sto);
}

/* Client thread: did the stand-in last see cap tok (NULL: none) and tenant? */
static bool
seen_is(fx_t *f, const char *tok, const uint8_t *tenant)
{
    bool ok;

    uv_mutex_lock(&f->seen_mu);
    ok = f->seen >= 1 && strcmp(f->seen_cap, tok != NULL ? tok : "") == 0 &&
         (tenant == NULL || memcmp(f->seen_tenant, tenant, sizeof f->seen_tenant) == 0);
    f->seen_cap[0] = '\0';
    uv_mutex_unlock(&f->seen_mu);
    return ok;
}

static void
fx_run(fx_t *f, const tx_config_t *cfg, fx_client_fn client)
{
    tx_listener_t *l;
    gw_config_t gc = {.store = f->store, .index = f->index, .chunk = f->chunk};

    if (f->index_endpoint != NULL)
        gc.index = NULL; /* names go to the index service */
    memcpy(gc.tenant, T1, sizeof gc.tenant);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(tx_listener_bind(&f->loop, "127.0.0.1:0", &l), 0);
    f->port = tx_listener_port(l);
    f->gw = gw_new(&f->loop, &gc);
    if (f->guard != NULL) {
        gw_set_guard(f->gw, f->guard);
        uv_async_init(&f->loop, &f->revoke, fx_on_revoke);
        f->revoke.data = f;
    }
    if (f->index_endpoint != NULL)
        fx_index_service(f);
    if (f->fake_storage)
        fx_fake_storage(f);
    f->srv = tx_server_new(&f->loop, cfg, gw_handle, f->gw);
    if (!f->buffered_uploads)
        tx_server_set_head_hook(f->srv, gw_head, f->gw); /* uploads stream */
    assert_int_equal(tx_server_attach(f->srv, l), 0);
    uv_async_init(&f->loop, &f->done, fx_on_done);
    f->done.data = f;
    f->client = client;
    assert_int_equal(uv_thread_create(&f->thread, fx_client_thread, f), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_thread_join(&f->thread);
    /* every stream is over once the gateway closes (the transport tells
     * those whose client left); then nothing is held */
    gw_close(f->gw, fx_gw_closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->gw_closed);
    f->stats = *gw_stats(f->gw);
    assert_int_equal(f->stats.active, 0);
    assert_int_equal(f->stats.buffered, 0);
    if (f->hub != NULL) {
        rbus_hub_free(f->hub);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    gw_free(f->gw);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (!f->ok)
        fail_msg("client: %s", f->note);
}

/* ---- blocking client (client thread) ---- */

typedef struct {
    int status;
    char head[4096];
    uint8_t *body;
    size_t body_len;
    bool closed_short; /* the connection closed before Content-Length bytes */
} resp_t;

static int
cl_connect(fx_t *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(f->port)};

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int
cl_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Value of header name in r->head ("" when absent), copied to out. */
static const char *
hdr(const resp_t *r, const char *name, char *out, size_t cap)
{
    char pat[64];
    const char *p, *e;

    snprintf(pat, sizeof pat, "\r\n%s: ", name);
    p = strcasestr(r->head, pat);
    out[0] = '\0';
    if (p == NULL)
        return out;
    p += strlen(pat);
    e = strstr(p, "\r\n");
    snprintf(out, cap, "%.*s", (int)(e - p), p);
    return out;
}

/* Read one response; head byte by byte (never eats the next one), body by
 * Content-Length unless head_only. Returns the status or -1. */
static int
cl_read(int fd, resp_t *r, bool head_only)
{
    size_t len = 0, want;
    char cl[32];

    memset(r, 0, sizeof *r);
    for (;;) {
        if (len + 1 >= sizeof r->head)
            return -1;
        if (recv(fd, r->head + len, 1, 0) != 1)
            return -1;
        len++;
        r->head[len] = '\0';
        if (len >= 4 && memcmp(r->head + len - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    r->status = atoi(r->head + 9);
    want = head_only ? 0 : strtoull(hdr(r, "Content-Length", cl, sizeof cl), NULL, 10);
    r->body = malloc(want + 1);
    while (r->body_len < want) {
        ssize_t n = recv(fd, r->body + r->body_len, want - r->body_len, 0);
        if (n <= 0) {
            r->closed_short = true;
            break;
        }
        r->body_len += (size_t)n;
    }
    r->body[r->body_len] = '\0';
    return r->status;
}

/* Send a request (extra headers already CRLF-terminated) and read the answer. */
static int
cl_req(int fd, const char *method, const char *path, const char *extra, const void *body,
       size_t body_len, resp_t *r)
{
    char head[1024];
    int n =
        snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n",
                 method, path, extra != NULL ? extra : "", body_len);
    if (cl_send(fd, head, (size_t)n) < 0 || (body_len > 0 && cl_send(fd, body, body_len) < 0))
        return -1;
    return cl_read(fd, r, strcmp(method, "HEAD") == 0);
}

#define CL_CHECK(f, cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf((f)->note, sizeof(f)->note, "line %d: %s", __LINE__, #cond);                  \
            (f)->ok = 0;                                                                           \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static tx_config_t
test_cfg(void)
{
    tx_config_t c;
    tx_config_default(&c);
    c.rate_disabled = true;
    c.max_body = 8u << 20;
    return c;
}

/* ---- round trips ---- */

static const size_t rt_sizes[] = {0, 1, 65535, 65536, 65537, (3u << 20) + 5};

static void
cl_round_trip(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], v[256];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == f->len && memcmp(r.body, f->data, f->len) == 0);
    hdr(&r, "ETag", v, sizeof v);
    CL_CHECK(f, strncmp(v, "\"b3:", 4) == 0 && strstr(v, f->text + 3) != NULL);
    CL_CHECK(f, strcmp(hdr(&r, "Accept-Ranges", v, sizeof v), "bytes") == 0);
    CL_CHECK(f, strcmp(hdr(&r, "Cache-Control", v, sizeof v), GW_CACHE_IMMUTABLE) == 0);
    CL_CHECK(f, strcmp(hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), "*") == 0);
    CL_CHECK(f, strstr(hdr(&r, "Access-Control-Expose-Headers", v, sizeof v), "Content-Range"));
    CL_CHECK(f, strcmp(hdr(&r, "Content-Type", v, sizeof v), "application/x-test") == 0);
    free(r.body);
    r.body = NULL;
    /* HEAD on the same connection: same length, no body */
    CL_CHECK(f, cl_req(fd, "HEAD", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, strtoull(hdr(&r, "Content-Length", v, sizeof v), NULL, 10) == f->len);
    free(r.body);
    r.body = NULL;
    /* and the connection is still in step: another GET works */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=0-0\r\n", NULL, 0, &r) ==
                    (f->len == 0 ? 416 : 206));
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
round_trips(bool ram)
{
    fx_t f;
    tx_config_t c = test_cfg();

    for (size_t i = 0; i < sizeof rt_sizes / sizeof rt_sizes[0]; i++) {
        fx_open(&f, ram);
        fx_put(&f, NULL, rt_sizes[i], "application/x-test");
        fx_run(&f, &c, cl_round_trip);
        assert_int_equal(f.stats.corrupt_before + f.stats.corrupt_aborted, 0);
        /* the HEAD and the range GET after the first GET reuse its reader
         * (objects up to GW_READER_CACHE_OBJECT); every read still verifies */
        if (rt_sizes[i] > GW_INLINE_MAX && rt_sizes[i] <= GW_BODY_CACHE_OBJECT) {
            /* ... or, read whole, its verified body kept in memory */
            assert_int_equal(f.stats.body_hits, 2);
            assert_int_equal(f.stats.readers_reused, 0);
        } else if (rt_sizes[i] <= GW_READER_CACHE_OBJECT) {
            assert_int_equal(f.stats.readers_reused, 2);
            assert_int_equal(f.stats.body_hits, 0);
        } else {
            assert_int_equal(f.stats.readers_reused, 0);
        }
        assert_int_equal(f.stats.body_cached, 0); /* freed when the gateway closed */
        /* a stream's buffer is one chunk at most, and no larger than the body */
        assert_true(f.stats.buffered_peak <=
                    (rt_sizes[i] < GW_CHUNK_DEFAULT ? rt_sizes[i] : GW_CHUNK_DEFAULT));
        fx_close(&f);
    }
}

static void
test_get_and_head_round_trip_0_bytes_to_3_mib_file_store(void **state)
{
    (void)state;
    round_trips(false);
}

static void
test_get_and_head_round_trip_0_bytes_to_3_mib_ram_store(void **state)
{
    (void)state;
    round_trips(true);
}

/* ---- ranges ---- */

static void
cl_ranges(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], v[256], want[256];
    static const struct {
        const char *range;
        uint64_t first, last;
    } t[] = {
        {"bytes=65535-65535", 65535, 65535},
        {"bytes=65535-65536", 65535, 65536},
        {"bytes=65536-65537", 65536, 65537},
        {"bytes=65537-", 65537, 200000 - 1},
        {"bytes=-1", 199999, 199999},
        {"bytes=0-65535", 0, 65535},
        {"bytes=131071-131073", 131071, 131073},
    };

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "Range: %s\r\n", t[i].range);
        CL_CHECK(f, cl_req(fd, "GET", path, extra, NULL, 0, &r) == 206);
        snprintf(want, sizeof want, "bytes %llu-%llu/200000", (unsigned long long)t[i].first,
                 (unsigned long long)t[i].last);
        CL_CHECK(f, strcmp(hdr(&r, "Content-Range", v, sizeof v), want) == 0);
        CL_CHECK(f, r.body_len == t[i].last - t[i].first + 1);
        CL_CHECK(f, memcmp(r.body, f->data + t[i].first, r.body_len) == 0);
        free(r.body);
        r.body = NULL;
    }
    /* a Range with a stale If-Range gets the whole object */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=0-0\r\nIf-Range: \"b3:00\"\r\n", NULL, 0,
                       &r) == 200);
    CL_CHECK(f, r.body_len == f->len);
    free(r.body);
    r.body = NULL;
    /* an invalid Range is ignored */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=9-1\r\n", NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == f->len);
    free(r.body);
    r.body = NULL;
    /* 416 names the size */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=200000-\r\n", NULL, 0, &r) == 416);
    CL_CHECK(f, strcmp(hdr(&r, "Content-Range", v, sizeof v), "bytes */200000") == 0);
    CL_CHECK(f, strstr((char *)r.body, "\"range_not_satisfiable\"") != NULL);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_ranges_at_piece_boundaries_give_206_and_past_the_end_416(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, false);
    fx_put(&f, NULL, 200000, NULL);
    fx_run(&f, &c, cl_ranges);
    assert_int_equal(f.stats.unsatisfiable, 1);
    fx_close(&f);
}

static void
cl_multirange(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], v[256], bnd[GW_BOUNDARY_LEN + 1];
    uint8_t *want = malloc(4096);
    size_t wl = 0;
    static const uint64_t rg[][2] = {{0, 0}, {65535, 65537}, {199990, 199999}};

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    /* sent out of order and overlapping: answered sorted and coalesced */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=-10, 65536-65537, 0-0, 65535-65536\r\n", NULL,
                       0, &r) == 206);
    snprintf(bnd, sizeof bnd, "%s", f->text + 3);
    snprintf(v, sizeof v, "multipart/byteranges; boundary=%s", bnd);
    char got[256];
    CL_CHECK(f, strcmp(hdr(&r, "Content-Type", got, sizeof got), v) == 0);
    for (size_t i = 0; i < 3; i++) {
        wl += (size_t)snprintf((char *)want + wl, 4096 - wl,
                               "\r\n--%s\r\nContent-Type: application/octet-stream\r\n"
                               "Content-Range: bytes %llu-%llu/200000\r\n\r\n",
                               bnd, (unsigned long long)rg[i][0], (unsigned long long)rg[i][1]);
        memcpy(want + wl, f->data + rg[i][0], rg[i][1] - rg[i][0] + 1);
        wl += rg[i][1] - rg[i][0] + 1;
    }
    wl += (size_t)snprintf((char *)want + wl, 4096 - wl, "\r\n--%s--\r\n", bnd);
    CL_CHECK(f, r.body_len == wl && memcmp(r.body, want, wl) == 0);
    free(r.body);
    r.body = NULL;
    /* HEAD announces the same length */
    CL_CHECK(f, cl_req(fd, "HEAD", path, "Range: bytes=-10, 65536-65537, 0-0, 65535-65536\r\n",
                       NULL, 0, &r) == 206);
    CL_CHECK(f, strtoull(hdr(&r, "Content-Length", v, sizeof v), NULL, 10) == wl);
out:
    free(want);
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_multiple_ranges_answer_multipart_byteranges(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, false);
    fx_put(&f, NULL, 200000, NULL);
    f.data[0] = 0x00; /* binary: sniffed as octet-stream */
    fx_put(&f, f.data, 200000, NULL);
    fx_run(&f, &c, cl_multirange);
    fx_close(&f);
}

/* ---- conditionals, sniffing, CORS, errors ---- */

static void
cl_cond_sniff_cors(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[128], extra[200], v[256];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    snprintf(extra, sizeof extra, "If-None-Match: \"x\", W/\"%s\"\r\n", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, extra, NULL, 0, &r) == 304);
    CL_CHECK(f, r.body_len == 0);
    CL_CHECK(f, strstr(hdr(&r, "ETag", v, sizeof v), f->text) != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", path, "If-None-Match: \"b3:00\"\r\n", NULL, 0, &r) == 200);
    CL_CHECK(f, strcmp(hdr(&r, "Content-Type", v, sizeof v), "image/png") == 0);
    CL_CHECK(f, strcmp(hdr(&r, "X-Content-Type-Options", v, sizeof v), "nosniff") == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "OPTIONS", path,
                       "Origin: http://x.test\r\nAccess-Control-Request-Method: GET\r\n", NULL, 0,
                       &r) == 204);
    CL_CHECK(f, strcmp(hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), "*") == 0);
    CL_CHECK(f, strstr(hdr(&r, "Access-Control-Allow-Methods", v, sizeof v), "GET") != NULL);
    CL_CHECK(f, strstr(hdr(&r, "Access-Control-Allow-Headers", v, sizeof v), "Range") != NULL);
    free(r.body);
    r.body = NULL;
    /* malformed addresses: 400 with the envelope */
    const char *bad[] = {
        "/o/b3:xyz", "/o/b3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262",
        "/o/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        "/o/b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f32620", "/o/b3:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CL_CHECK(f, cl_req(fd, "GET", bad[i], NULL, NULL, 0, &r) == 400);
        CL_CHECK(f, strstr((char *)r.body, "\"code\":\"bad_request\"") != NULL);
        CL_CHECK(f, strstr((char *)r.body, "bad_address") != NULL);
        free(r.body);
        r.body = NULL;
    }
    /* unknown: 404 */
    CL_CHECK(f, cl_req(fd, "GET",
                       "/o/b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                       NULL, NULL, 0, &r) == 404);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"not_found\"") != NULL);
    CL_CHECK(f, strcmp(hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), "*") == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", "/nothing", NULL, NULL, 0, &r) == 404);
    free(r.body);
    r.body = NULL;
    /* wrong method: 405 with Allow */
    CL_CHECK(f, cl_req(fd, "DELETE", path, NULL, NULL, 0, &r) == 405);
    CL_CHECK(f, strcmp(hdr(&r, "Allow", v, sizeof v), "GET, HEAD, PUT, OPTIONS") == 0);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"method_not_allowed\"") != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", "/o", NULL, NULL, 0, &r) == 405);
    CL_CHECK(f, strcmp(hdr(&r, "Allow", v, sizeof v), "POST, OPTIONS") == 0);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_conditionals_sniffing_cors_and_error_statuses(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    uint8_t png[1000] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

    (void)state;
    fx_open(&f, false);
    fx_put(&f, png, sizeof png, NULL);
    fx_run(&f, &c, cl_cond_sniff_cors);
    assert_int_equal(f.stats.not_modified, 1);
    fx_close(&f);
}

/* ---- uploads ---- */

static void
cl_uploads(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[128], v[256], want[256];
    size_t n = (1u << 20) + 12345;
    uint8_t *body = malloc(n);

    CL_CHECK(f, fd >= 0);
    for (size_t i = 0; i < n; i++)
        body[i] = (uint8_t)(i * 7 + 3);
    /* POST: 201, Location, JSON with the address */
    CL_CHECK(f, cl_req(fd, "POST", "/o", "Content-Type: text/x-up\r\n", body, n, &r) == 201);
    CL_CHECK(f, strstr((char *)r.body, "b3:") != NULL);
    snprintf(v, sizeof v, "%.67s", strstr((char *)r.body, "b3:"));
    CL_CHECK(f, sto_addr_parse(v, f->addr) == 0);
    sto_addr_format(f->addr, f->text);
    snprintf(want, sizeof want, "{\"address\":\"%s\",\"cid\":\"%s\"}", f->text, f->text + 3);
    CL_CHECK(f, strcmp((char *)r.body, want) == 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, strcmp(hdr(&r, "Location", v, sizeof v), path) == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == n && memcmp(r.body, body, n) == 0);
    CL_CHECK(f, strcmp(hdr(&r, "Content-Type", v, sizeof v), "text/x-up") == 0);
    free(r.body);
    r.body = NULL;
    /* PUT of the same bytes: 200 (already there) */
    CL_CHECK(f, cl_req(fd, "PUT", path, NULL, body, n, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* PUT of new bytes at their address: 201, then 200 */
    body[0] ^= 1;
    uint8_t a2[STO_ADDR_LEN];
    char t2[68], p2[128];
    CL_CHECK(f, sto_put_buf(f->store, T1, body, 1, NULL, a2) == 0); /* a different object */
    {
        /* the address of body: hash it through a throwaway RAM store */
        sto_store_t *ram;
        sto_config_t rc = {0};
        CL_CHECK(f, sto_open(&rc, &ram) == 0);
        CL_CHECK(f, sto_put_buf(ram, T1, body, n, NULL, a2) == 0);
        sto_close(ram);
    }
    sto_addr_format(a2, t2);
    snprintf(p2, sizeof p2, "/o/%s", t2);
    CL_CHECK(f, sto_has(f->store, a2) == 0);
    CL_CHECK(f, cl_req(fd, "PUT", p2, NULL, body, n, &r) == 201);
    CL_CHECK(f, sto_has(f->store, a2) == 1);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "PUT", p2, NULL, body, n, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* PUT of bytes that do not hash to the address: 409 bad_digest, nothing stored */
    snprintf(p2, sizeof p2, "/o/b3:%064d", 7);
    memset(a2, 0, sizeof a2);
    sto_addr_parse(p2 + 3, a2);
    CL_CHECK(f, cl_req(fd, "PUT", p2, NULL, body, n, &r) == 409);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"conflict\"") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "bad_digest") != NULL);
    CL_CHECK(f, sto_has(f->store, a2) == 0);
    free(r.body);
    r.body = NULL;
    /* the connection is fine after all that */
    CL_CHECK(f, cl_req(fd, "HEAD", path, NULL, NULL, 0, &r) == 200);
out:
    free(body);
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_post_201_put_201_then_200_and_409_stores_nothing(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, false);
    fx_run(&f, &c, cl_uploads);
    assert_int_equal(f.stats.bad_digest, 1);
    assert_int_equal(f.stats.puts_created, 2);
    assert_int_equal(f.stats.puts_existing, 2);
    fx_close(&f);
}

/* ---- streamed uploads ---- */

/* Entries in <dir>/tmp (puts staged and not committed); -1 when unreadable. */
static int
tmp_entries(const fx_t *f)
{
    char path[300];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof path, "%s/tmp", f->dir);
    if ((d = opendir(path)) == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

#define BIG_UP (24u << 20) /* three times the test server's max_body */

static void
cl_streamed_uploads(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char head[256], line[32], want[96], path[96];
    size_t off = 0;

    CL_CHECK(f, fd >= 0);
    /* chunked, in uneven pieces: 201 and the address of the bytes */
    const char *post = "POST /o HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                       "Content-Type: application/x-big\r\n\r\n";
    CL_CHECK(f, cl_send(fd, post, strlen(post)) == 0);
    for (size_t n = 1; off < BIG_UP; n = n * 5 + 3) {
        size_t k = BIG_UP - off < n ? BIG_UP - off : n;
        int l = snprintf(line, sizeof line, "%zx\r\n", k);
        CL_CHECK(f, cl_send(fd, line, (size_t)l) == 0);
        CL_CHECK(f, cl_send(fd, f->data + off, k) == 0);
        CL_CHECK(f, cl_send(fd, "\r\n", 2) == 0);
        off += k;
    }
    CL_CHECK(f, cl_send(fd, "0\r\n\r\n", 5) == 0);
    CL_CHECK(f, cl_read(fd, &r, false) == 201);
    snprintf(want, sizeof want, "\"address\":\"%s\"", f->text);
    CL_CHECK(f, strstr((char *)r.body, want) != NULL);
    free(r.body);
    r.body = NULL;
    /* PUT of the same bytes with a Content-Length: 200 (stored already) */
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "PUT", path, NULL, f->data, BIG_UP, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* the keep-alive connection serves the object back whole */
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == BIG_UP && memcmp(r.body, f->data, BIG_UP) == 0);
    free(r.body);
    r.body = NULL;
    /* PUT of bytes that hash elsewhere: 409 bad_digest at the end, nothing stored */
    snprintf(path, sizeof path, "/o/b3:%064d", 5);
    CL_CHECK(f, cl_req(fd, "PUT", path, NULL, f->data, BIG_UP, &r) == 409);
    CL_CHECK(f, strstr((char *)r.body, "bad_digest") != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, tmp_entries(f) == 0);
    /* a bad Content-Type is refused before the body is read; the connection closes */
    snprintf(head, sizeof head, "POST /o HTTP/1.1\r\nHost: t\r\nContent-Type: a\tb\r\n"
                                "Content-Length: %u\r\n\r\n", BIG_UP);
    CL_CHECK(f, cl_send(fd, head, strlen(head)) == 0);
    CL_CHECK(f, cl_read(fd, &r, false) == 400);
    CL_CHECK(f, strstr(r.head, "Connection: close") != NULL);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_streamed_upload_past_max_body_stores_and_a_bad_put_stores_nothing(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    uint8_t a[STO_ADDR_LEN];

    (void)state;
    fx_t g;
    fx_open(&g, true); /* the bytes and their address, from a RAM store */
    fx_put(&g, NULL, BIG_UP, NULL);
    fx_open(&f, false);
    f.data = g.data;
    g.data = NULL;
    memcpy(a, g.addr, sizeof a);
    memcpy(f.addr, a, sizeof a);
    sto_addr_format(a, f.text);
    fx_close(&g);
    assert_int_equal(sto_has(f.store, a), 0);
    fx_run(&f, &c, cl_streamed_uploads);
    assert_int_equal(sto_has(f.store, a), 1);
    assert_int_equal(f.stats.puts_created, 1);
    assert_int_equal(f.stats.puts_existing, 1);
    assert_int_equal(f.stats.bad_digest, 1);
    assert_int_equal(tmp_entries(&f), 0);
    fx_close(&f);
}

static void
cl_upload_gone(fx_t *f)
{
    int fd = cl_connect(f);
    char head[160];

    CL_CHECK(f, fd >= 0);
    snprintf(head, sizeof head, "POST /o HTTP/1.1\r\nHost: t\r\nContent-Length: %u\r\n\r\n",
             BIG_UP);
    CL_CHECK(f, cl_send(fd, head, strlen(head)) == 0);
    CL_CHECK(f, cl_send(fd, f->data, BIG_UP / 3) == 0);
    usleep(100000); /* pieces are in the put */
    CL_CHECK(f, tmp_entries(f) > 0); /* data and outboard staged */
out:
    if (fd >= 0)
        close(fd); /* mid-body */
}

static void
test_client_leaving_mid_upload_aborts_the_put_and_leaves_no_temporary_file(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, false);
    fx_put(&f, NULL, 1, NULL);
    free(f.data);
    f.data = calloc(1, BIG_UP);
    fx_run(&f, &c, cl_upload_gone); /* checks active == 0 */
    assert_int_equal(f.stats.client_gone, 1);
    assert_int_equal(f.stats.puts_created, 0);
    assert_int_equal(tmp_entries(&f), 0);
    fx_close(&f);
}

/* ---- corruption ---- */

#define OBJ_FILE_HDR 256u /* an object file's header; its bytes follow (storage-format.md) */

/* Flip the object's byte at off in its store file. */
static void
flip_byte(fx_t *f, uint64_t off)
{
    char path[256];
    uint8_t b;
    int fd;

    snprintf(path, sizeof path, "%s/objects/%.2s/%s", f->dir, f->text + 3, f->text + 3);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)(OBJ_FILE_HDR + off)), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(OBJ_FILE_HDR + off)), 1);
    close(fd);
}

static void
cl_corrupt(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    /* piece 0 is corrupt: the first chunk fails before the head -> 502 */
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 502);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"bad_gateway\"") != NULL);
    free(r.body);
    r.body = NULL;
    /* a range that avoids the bad piece is served */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=65536-65600\r\n", NULL, 0, &r) == 206);
    CL_CHECK(f, memcmp(r.body, f->data + 65536, 65) == 0);
    free(r.body);
    r.body = NULL;
    /* piece 9 is corrupt too: a range from piece 1 gets its head, then the stream is cut */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=65536-\r\n", NULL, 0, &r) == 206);
    CL_CHECK(f, r.closed_short);
    CL_CHECK(f, r.body_len < 9 * 65536 - 65536 + 1);
    CL_CHECK(f, memcmp(r.body, f->data + 65536, r.body_len) == 0); /* what came is right */
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
cl_inline_corrupt(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200); /* through the pool */
    CL_CHECK(f, r.body_len == 3000 && memcmp(r.body, f->data, 3000) == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200); /* its reader, on the loop */
    CL_CHECK(f, r.body_len == 3000 && memcmp(r.body, f->data, 3000) == 0);
    free(r.body);
    r.body = NULL;
    flip_byte(f, 100);
    /* the cached reader reads on the loop, and still verifies what it reads */
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 502);
    CL_CHECK(f, strstr((char *)r.body, "corrupt_object") != NULL);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_a_small_object_read_on_the_loop_is_still_verified(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    ron_log_set_level(RON_LOG_ERROR + 1); /* the store's corruption logs are expected */
    fx_open(&f, false);
    fx_put(&f, NULL, 3000, "application/x-test");
    fx_run(&f, &c, cl_inline_corrupt);
    assert_int_equal(f.stats.inline_reads, 2);
    assert_int_equal(f.stats.corrupt_before, 1);
    fx_close(&f);
}

#define FILLERS 32
#define FILLER_LEN (160u << 10) /* FILLERS of them exceed GW_BODY_CACHE_BYTES */
static uint8_t filler_addr[FILLERS][STO_ADDR_LEN];

static void
cl_body_cache(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], text[GW_ADDR_TEXT_LEN + 1];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200); /* read, verified, kept */
    CL_CHECK(f, r.body_len == f->len && memcmp(r.body, f->data, f->len) == 0);
    free(r.body);
    r.body = NULL;
    flip_byte(f, 70000);
    /* the body in memory was verified before the flip: the right bytes, whole or ranges */
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == f->len && memcmp(r.body, f->data, f->len) == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=69990-70009\r\n", NULL, 0, &r) == 206);
    CL_CHECK(f, r.body_len == 20 && memcmp(r.body, f->data + 69990, 20) == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=0-9,70000-70009\r\n", NULL, 0, &r) == 206);
    CL_CHECK(f, memmem(r.body, r.body_len, f->data + 70000, 10) != NULL);
    CL_CHECK(f, memmem(r.body, r.body_len, f->data, 10) != NULL);
    free(r.body);
    r.body = NULL;
    /* other hot objects push it out (at most GW_BODY_CACHE_BYTES are kept) */
    for (size_t i = 0; i < FILLERS; i++) {
        sto_addr_format(filler_addr[i], text);
        snprintf(path, sizeof path, "/o/%s", text);
        CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
        CL_CHECK(f, r.body_len == FILLER_LEN && r.body[0] == (uint8_t)i);
        free(r.body);
        r.body = NULL;
    }
    /* read from disk again, after the flip: verified, refused */
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 502);
    CL_CHECK(f, strstr((char *)r.body, "corrupt_object") != NULL);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_verified_bodies_in_memory_are_bounded_and_bytes_read_after_a_flip_are_verified(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    uint8_t *b = malloc(FILLER_LEN);

    (void)state;
    ron_log_set_level(RON_LOG_ERROR + 1); /* the store's corruption logs are expected */
    fx_open(&f, false);
    for (size_t i = 0; i < FILLERS; i++) {
        memset(b, (int)i, FILLER_LEN);
        assert_int_equal(sto_put_buf(f.store, T1, b, FILLER_LEN, "application/x-test",
                                     filler_addr[i]), 0);
    }
    free(b);
    fx_put(&f, NULL, 100000, "application/x-test");
    fx_run(&f, &c, cl_body_cache);
    assert_int_equal(f.stats.body_hits, 3);      /* the GET and both ranged GETs after the flip */
    assert_int_equal(f.stats.corrupt_before, 1); /* the GET once it was evicted */
    assert_int_equal(f.stats.body_cached, 0);    /* freed when the gateway closed */
    fx_close(&f);
}

static void
test_a_corrupted_stored_byte_is_never_served(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    ron_log_set_level(RON_LOG_ERROR + 1); /* the store's corruption logs are expected */
    fx_open(&f, false);
    f.chunk = 64u << 10;
    fx_put(&f, NULL, 20 * 65536 + 100, NULL);
    flip_byte(&f, 1000);
    flip_byte(&f, 9 * 65536 + 5);
    fx_run(&f, &c, cl_corrupt);
    assert_int_equal(f.stats.corrupt_before, 1);
    assert_int_equal(f.stats.corrupt_aborted, 1);
    fx_close(&f);
}

/* ---- a slow reader ---- */

static void
cl_slow(fx_t *f)
{
    int fd = cl_connect(f);
    char req[160], buf[16384];
    int rcv = 16384;
    size_t total = 0, head_end = 0;
    resp_t r = {0};

    CL_CHECK(f, fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    snprintf(req, sizeof req, "GET /o/%s HTTP/1.1\r\nHost: t\r\n\r\n", f->text);
    CL_CHECK(f, cl_send(fd, req, strlen(req)) == 0);
    CL_CHECK(f, cl_read(fd, &r, true) == 200);
    (void)head_end;
    /* 24 MiB read in 16 KiB steps with pauses: the server must wait for us */
    while (total < f->len) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        CL_CHECK(f, n > 0);
        CL_CHECK(f, memcmp(buf, f->data + total, (size_t)n) == 0);
        total += (size_t)n;
        if ((total >> 14) % 64 == 0)
            usleep(2000);
    }
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_a_slow_reader_of_a_large_object_keeps_buffers_bounded(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, false);
    fx_put(&f, NULL, 24u << 20, NULL);
    fx_run(&f, &c, cl_slow);
    /* one chunk buffer for the whole 24 MiB stream */
    assert_int_equal(f.stats.buffered_peak, GW_CHUNK_DEFAULT);
    assert_int_equal(f.stats.bytes_served, 24u << 20);
    assert_int_equal(f.stats.objects_served, 1);
    fx_close(&f);
}

/* ---- a client that goes away mid-stream ---- */

static void
cl_gone(fx_t *f)
{
    int fd = cl_connect(f);
    char req[160];
    resp_t r = {0};

    CL_CHECK(f, fd >= 0);
    snprintf(req, sizeof req, "GET /o/%s HTTP/1.1\r\nHost: t\r\n\r\n", f->text);
    CL_CHECK(f, cl_send(fd, req, strlen(req)) == 0);
    CL_CHECK(f, cl_read(fd, &r, true) == 200);
out:
    free(r.body);
    if (fd >= 0)
        close(fd); /* with most of 8 MiB unread */
}

static void
test_a_client_leaving_mid_stream_frees_the_stream(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_put(&f, NULL, 8u << 20, NULL);
    fx_run(&f, &c, cl_gone);
    assert_int_equal(f.stats.objects_served, 0); /* fx_run checked active == 0, buffered == 0 */
    fx_close(&f);
}

/* ---- pipelined streams, then the client goes ---- */

static void
cl_pipelined_gone(fx_t *f)
{
    int fd = cl_connect(f);
    char req[512];
    resp_t r = {0};
    int n;

    CL_CHECK(f, fd >= 0);
    n = snprintf(req, sizeof req,
                 "GET /o/%s HTTP/1.1\r\nHost: t\r\n\r\nGET /o/%s HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /o/%s HTTP/1.1\r\nHost: t\r\n\r\n",
                 f->text, f->text, f->text);
    CL_CHECK(f, cl_send(fd, req, (size_t)n) == 0);
    CL_CHECK(f, cl_read(fd, &r, true) == 200);
    usleep(100000); /* the later answers have started and queued their first chunks */
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_pipelined_streams_end_when_the_client_leaves(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_put(&f, NULL, 8u << 20, NULL);
    fx_run(&f, &c, cl_pipelined_gone); /* checks active == 0 and buffered == 0 */
    assert_true(f.stats.client_gone >= 2);
    assert_int_equal(f.stats.objects_served, 0);
    fx_close(&f);
}

/* ---- names ---- */

typedef struct {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
} key_t_;

static key_t_ nk1, nk2;
static uint64_t nts; /* one ts for every record: re-signing gives the same bytes */

/* JSON of a record for name -> addr with seq, signed by k (bad: flip the signature). */
static char *
record_json(const char *name, const uint8_t *addr, uint64_t seq, const key_t_ *k, bool bad)
{
    name_record_t rec = {0};

    snprintf(rec.name, sizeof rec.name, "%s", name);
    memcpy(rec.addr.b, addr, NAME_ADDR_LEN);
    rec.seq = seq;
    rec.ts = nts;
    if (name_record_sign(&rec, k->sk) < 0)
        return NULL;
    if (bad)
        rec.sig[3] ^= 1;
    return name_record_to_json(&rec);
}

static int
cl_put_record(fx_t *f, int fd, const char *path, const char *name, uint64_t seq, const key_t_ *k,
              bool bad, resp_t *r)
{
    char *json = record_json(name, f->addr, seq, k, bad);
    int st = json != NULL ? cl_req(fd, "PUT", path, "Content-Type: application/json\r\n", json,
                                   strlen(json), r)
                          : -1;
    free(json);
    return st;
}

static void
cl_names(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char v[256], want[128];

    CL_CHECK(f, fd >= 0);
    snprintf(want, sizeof want, "/o/%s", f->text);
    /* unknown, then published (201), republished identically (200), superseded (200) */
    CL_CHECK(f, cl_req(fd, "GET", "/n/movie.test", NULL, NULL, 0, &r) == 404);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"not_found\"") != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 1, &nk1, false, &r) == 201);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", "/n/movie.test", NULL, NULL, 0, &r) == 302);
    CL_CHECK(f, strcmp(hdr(&r, "Location", v, sizeof v), want) == 0);
    CL_CHECK(f, strcmp(hdr(&r, "Cache-Control", v, sizeof v), "no-cache") == 0);
    free(r.body);
    r.body = NULL;
    /* the path is normalized: case and percent-escapes */
    CL_CHECK(f, cl_req(fd, "GET", "/n/MOVIE.%74est", NULL, NULL, 0, &r) == 302);
    CL_CHECK(f, strcmp(hdr(&r, "Location", v, sizeof v), want) == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 2, &nk1, false, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* the same record again (a retry): 200 */
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 2, &nk1, false, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* refusals: stale seq 409, another key 403, bad signature 403 */
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 1, &nk1, false, &r) == 409);
    CL_CHECK(f, strstr((char *)r.body, "stale_seq") != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 9, &nk2, false, &r) == 403);
    CL_CHECK(f, strstr((char *)r.body, "wrong_owner") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"forbidden\"") != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 9, &nk1, true, &r) == 403);
    CL_CHECK(f, strstr((char *)r.body, "bad_signature") != NULL);
    free(r.body);
    r.body = NULL;
    /* a record for another name, malformed JSON, a malformed name: 400 */
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "other.test", 1, &nk1, false, &r) == 400);
    CL_CHECK(f, strstr((char *)r.body, "name_mismatch") != NULL);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "PUT", "/n/movie.test", NULL, "{\"name\":", 8, &r) == 400);
    CL_CHECK(f, strstr((char *)r.body, "bad_record") != NULL);
    free(r.body);
    r.body = NULL;
    const char *bad[] = {"/n/bad..name", "/n/-edge.test", "/n/a%2Fb.test",
                         "/n/single",    "/n/x%zz.test",  "/n/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CL_CHECK(f, cl_req(fd, "GET", bad[i], NULL, NULL, 0, &r) == 400);
        CL_CHECK(f, strstr((char *)r.body, "bad_name") != NULL);
        free(r.body);
        r.body = NULL;
    }
    CL_CHECK(f, cl_req(fd, "POST", "/n/movie.test", NULL, NULL, 0, &r) == 405);
    CL_CHECK(f, strcmp(hdr(&r, "Allow", v, sizeof v), "GET, HEAD, PUT, OPTIONS") == 0);
    free(r.body);
    r.body = NULL;
    /* still resolving to the last accepted record */
    CL_CHECK(f, cl_req(fd, "HEAD", "/n/movie.test", NULL, NULL, 0, &r) == 302);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_names_resolve_302_publish_201_200_and_refuse_409_403_400(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    idx_config_t ic = {0};

    (void)state;
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(nk1.pk, nk1.sk);
    crypto_sign_keypair(nk2.pk, nk2.sk);
    nts = (uint64_t)time(NULL);
    fx_open(&f, false);
    ic.data_dir = f.dir;
    ic.map_size = 1u << 20;
    assert_int_equal(idx_new(&ic, &f.index), 0);
    fx_put(&f, NULL, 1000, NULL);
    fx_run(&f, &c, cl_names);
    assert_int_equal(f.stats.names_published, 3);
    assert_int_equal(f.stats.names_refused, 3); /* stale, owner, signature */
    assert_int_equal(f.stats.names_resolved, 3);
    fx_close(&f);
}

/* The same routes and answers with names resolved and published through
 * the index service over ron-bus; what the gateway published is in the
 * service's index, and what the index holds resolves through the gateway. */
static void
test_names_through_the_index_service_answer_as_in_process(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    idx_config_t ic = {.amnesia = true};
    name_record_t got;

    (void)state;
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(nk1.pk, nk1.sk);
    crypto_sign_keypair(nk2.pk, nk2.sk);
    nts = (uint64_t)time(NULL);
    fx_open(&f, true);
    assert_int_equal(idx_new(&ic, &f.index), 0);
    fx_put(&f, NULL, 1000, NULL);
    f.index_endpoint = "index";
    fx_run(&f, &c, cl_names);
    assert_int_equal(f.stats.names_published, 3);
    assert_int_equal(f.stats.names_refused, 3);
    assert_int_equal(f.stats.names_resolved, 3);
    assert_int_equal(idx_resolve(f.index, "movie.test", &got), 0);
    assert_int_equal(got.seq, 2); /* the gateway's last accepted PUT */
    fx_close(&f);
}

static void
cl_side_name(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char v[256], want[128];

    CL_CHECK(f, fd >= 0);
    snprintf(want, sizeof want, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", "/n/side.test", NULL, NULL, 0, &r) == 302);
    CL_CHECK(f, strcmp(hdr(&r, "Location", v, sizeof v), want) == 0);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_a_name_published_in_the_index_service_resolves_through_the_gateway(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    idx_config_t ic = {.amnesia = true};
    name_record_t rec = {0};

    (void)state;
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(nk1.pk, nk1.sk);
    fx_open(&f, true);
    assert_int_equal(idx_new(&ic, &f.index), 0);
    fx_put(&f, NULL, 777, NULL);
    snprintf(rec.name, sizeof rec.name, "side.test");
    memcpy(rec.addr.b, f.addr, NAME_ADDR_LEN);
    rec.seq = 1;
    rec.ts = (uint64_t)time(NULL);
    assert_int_equal(name_record_sign(&rec, nk1.sk), 0);
    assert_int_equal(idx_publish(f.index, &rec, (int64_t)rec.ts, NULL), 0);
    f.index_endpoint = "index";
    fx_run(&f, &c, cl_side_name);
    assert_int_equal(f.stats.names_resolved, 1);
    fx_close(&f);
}

/* The index service is not there: every name route answers 503
 * index_unavailable, retryable, with Retry-After; object routes still work. */
static void
cl_index_down(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char v[256];
    char path[96];

    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_req(fd, "GET", "/n/movie.test", NULL, NULL, 0, &r) == 503);
    CL_CHECK(f, strstr((char *)r.body, "index_unavailable") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"retryable\":true") != NULL);
    CL_CHECK(f, strcmp(hdr(&r, "Retry-After", v, sizeof v), "1") == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_put_record(f, fd, "/n/movie.test", "movie.test", 1, &nk1, false, &r) == 503);
    CL_CHECK(f, strstr((char *)r.body, "index_unavailable") != NULL);
    free(r.body);
    r.body = NULL;
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_names_answer_503_retryable_while_the_index_service_is_down(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    idx_config_t ic = {.amnesia = true};

    (void)state;
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(nk1.pk, nk1.sk);
    nts = (uint64_t)time(NULL);
    fx_open(&f, true);
    assert_int_equal(idx_new(&ic, &f.index), 0);
    fx_put(&f, NULL, 500, NULL);
    f.index_endpoint = "nobody"; /* no endpoint of that name on the hub */
    fx_run(&f, &c, cl_index_down);
    assert_int_equal(f.stats.names_published, 0);
    fx_close(&f);
}

/* ---- capabilities (gw_set_guard with a real guard) ---- */

/* "Authorization: Bearer <tok>\r\n" into out. */
static const char *
bearer(char *out, size_t cap, const char *tok)
{
    snprintf(out, cap, "Authorization: Bearer %s\r\n", tok);
    return out;
}

/* The address a body would have (hashed through a throwaway RAM store). */
static int
addr_of(const void *body, size_t n, char text[static 68])
{
    sto_store_t *ram;
    sto_config_t rc = {0};
    uint8_t a[STO_ADDR_LEN];

    if (sto_open(&rc, &ram) < 0)
        return -1;
    if (sto_put_buf(ram, T1, body, n, NULL, a) < 0) {
        sto_close(ram);
        return -1;
    }
    sto_close(ram);
    sto_addr_format(a, text);
    return 0;
}

/* Is the object text (b3:<hex>) in the fixture's store? */
static bool
stored(fx_t *f, const char *text)
{
    uint8_t a[STO_ADDR_LEN];
    return sto_addr_parse(text, a) == 0 && sto_has(f->store, a) == 1;
}

static void
cl_anonymous(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], p2[96], v[256], t2[68];
    static const char body[] = "anonymous bytes";

    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, addr_of(body, sizeof body - 1, t2) == 0);
    /* a content read needs no capability under the shipped policy */
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == f->len && memcmp(r.body, f->data, f->len) == 0);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "HEAD", path, NULL, NULL, 0, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* a write does: 401 with the envelope and WWW-Authenticate, nothing stored */
    CL_CHECK(f, cl_req(fd, "POST", "/o", NULL, body, sizeof body - 1, &r) == 401);
    CL_CHECK(f, strcmp(hdr(&r, "WWW-Authenticate", v, sizeof v), "Bearer") == 0);
    CL_CHECK(f, strcmp(hdr(&r, "Content-Type", v, sizeof v), "application/json") == 0);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"unauthorized\"") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"reason\":\"capability_required\"") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"retryable\":false") != NULL);
    CL_CHECK(f, strcmp(hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), "*") == 0);
    CL_CHECK(f, strstr(hdr(&r, "Access-Control-Expose-Headers", v, sizeof v), "WWW-Authenticate"));
    CL_CHECK(f, !stored(f, t2));
    free(r.body);
    r.body = NULL;
    close(fd); /* an answer before the body was read closes the connection */
    CL_CHECK(f, (fd = cl_connect(f)) >= 0);
    snprintf(p2, sizeof p2, "/o/%s", t2);
    CL_CHECK(f, cl_req(fd, "PUT", p2, NULL, body, sizeof body - 1, &r) == 401);
    CL_CHECK(f, strstr((char *)r.body, "capability_required") != NULL);
    CL_CHECK(f, !stored(f, t2));
    free(r.body);
    r.body = NULL;
    close(fd);
    CL_CHECK(f, (fd = cl_connect(f)) >= 0);
    CL_CHECK(f, cl_put_record(f, fd, "/n/anon.test", "anon.test", 1, &nk1, false, &r) == 401);
    CL_CHECK(f, strstr((char *)r.body, "capability_required") != NULL);
    free(r.body);
    r.body = NULL;
    /* a name resolves anonymously (404: nothing was published) */
    CL_CHECK(f, cl_req(fd, "GET", "/n/anon.test", NULL, NULL, 0, &r) == 404);
    free(r.body);
    r.body = NULL;
    /* the preflight stays open: a browser sends no credentials with it */
    CL_CHECK(f, cl_req(fd, "OPTIONS", "/o", NULL, NULL, 0, &r) == 204);
    CL_CHECK(f, strstr(hdr(&r, "Access-Control-Allow-Headers", v, sizeof v), "Authorization"));
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_guard_anonymous_reads_pass_and_anonymous_writes_are_401_with_nothing_stored(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    idx_config_t ic = {.amnesia = true};

    (void)state;
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(nk1.pk, nk1.sk);
    nts = (uint64_t)time(NULL);
    fx_open(&f, false);
    assert_int_equal(idx_new(&ic, &f.index), 0);
    fx_put(&f, NULL, 3000, NULL);
    fx_guard(&f, NULL);
    fx_run(&f, &c, cl_anonymous);
    assert_int_equal(f.stats.auth_rejected, 3);
    assert_int_equal(f.stats.puts_created + f.stats.names_published, 0);
    fx_close(&f);
}

static void
cl_tokens(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], v[256], t2[68], p2[96], h[AUTH_MAX_TOKEN + 64];
    static const char body[] = "bytes with a capability";

    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, addr_of(body, sizeof body - 1, t2) == 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    snprintf(p2, sizeof p2, "/o/%s", t2);
    /* a token that is no capability: 401 capability_invalid, for reads too */
    CL_CHECK(f, cl_req(fd, "GET", path, "Authorization: Bearer not-a-token\r\n", NULL, 0, &r) ==
                    401);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"unauthorized\"") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "capability_invalid") != NULL);
    CL_CHECK(f, strncmp(hdr(&r, "WWW-Authenticate", v, sizeof v), "Bearer", 6) == 0);
    free(r.body);
    r.body = NULL;
    /* another scheme is refused the same way */
    CL_CHECK(f, cl_req(fd, "GET", path, "Authorization: Basic dXNlcjpwYXNz\r\n", NULL, 0, &r) ==
                    401);
    CL_CHECK(f, strstr((char *)r.body, "capability_invalid") != NULL);
    free(r.body);
    r.body = NULL;
    /* one flipped character of a real token: the signature fails */
    {
        char bad[AUTH_MAX_TOKEN + 1];
        snprintf(bad, sizeof bad, "%s", f->get_tok);
        bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'A' ? 'B' : 'A';
        CL_CHECK(f, cl_req(fd, "GET", path, bearer(h, sizeof h, bad), NULL, 0, &r) == 401);
    }
    free(r.body);
    r.body = NULL;
    /* the get token reads ... */
    CL_CHECK(f, cl_req(fd, "GET", path, bearer(h, sizeof h, f->get_tok), NULL, 0, &r) == 200);
    CL_CHECK(f, r.body_len == f->len && memcmp(r.body, f->data, f->len) == 0);
    free(r.body);
    r.body = NULL;
    /* ... and may not write: 403 forbidden, nothing stored */
    CL_CHECK(f, cl_req(fd, "PUT", p2, bearer(h, sizeof h, f->get_tok), body, sizeof body - 1,
                       &r) == 403);
    CL_CHECK(f, strstr((char *)r.body, "\"code\":\"forbidden\"") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"reason\":\"forbidden\"") != NULL);
    CL_CHECK(f, strcmp(hdr(&r, "WWW-Authenticate", v, sizeof v), "") == 0);
    CL_CHECK(f, !stored(f, t2));
    free(r.body);
    r.body = NULL;
    close(fd);
    CL_CHECK(f, (fd = cl_connect(f)) >= 0);
    /* the operator's token writes */
    CL_CHECK(f, cl_req(fd, "PUT", p2, bearer(h, sizeof h, f->op_tok), body, sizeof body - 1,
                       &r) == 201);
    CL_CHECK(f, stored(f, t2));
    free(r.body);
    r.body = NULL;
    /* a token's max-bytes bounds the body: announced ... */
    {
        uint8_t big[1500];
        char t3[68], p3[96];
        memset(big, 'x', sizeof big);
        CL_CHECK(f, addr_of(big, sizeof big, t3) == 0);
        snprintf(p3, sizeof p3, "/o/%s", t3);
        CL_CHECK(f, cl_req(fd, "PUT", p3, bearer(h, sizeof h, f->small_tok), big, sizeof big,
                           &r) == 403);
        CL_CHECK(f, !stored(f, t3));
        free(r.body);
        r.body = NULL;
        close(fd);
        CL_CHECK(f, (fd = cl_connect(f)) >= 0);
        /* ... or chunked (the size shows only as the body streams in) */
        {
            char head[AUTH_MAX_TOKEN + 256];
            int n = snprintf(head, sizeof head,
                             "PUT %s HTTP/1.1\r\nHost: t\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                             "5dc\r\n",
                             p3, bearer(h, sizeof h, f->small_tok));
            CL_CHECK(f, cl_send(fd, head, (size_t)n) == 0);
            CL_CHECK(f, cl_send(fd, big, sizeof big) == 0);
            CL_CHECK(f, cl_send(fd, "\r\n0\r\n\r\n", 7) == 0);
            CL_CHECK(f, cl_read(fd, &r, false) == 403);
            CL_CHECK(f, strstr((char *)r.body, "max-bytes") != NULL);
            CL_CHECK(f, !stored(f, t3));
        }
        free(r.body);
        r.body = NULL;
        close(fd);
        CL_CHECK(f, (fd = cl_connect(f)) >= 0);
        /* within it the guard lets the body through (the store refuses it: 900 bytes
         * do not hash to t3) */
        CL_CHECK(f, cl_req(fd, "PUT", p3, bearer(h, sizeof h, f->small_tok), big, 900, &r) ==
                        409);
    }
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_guard_bad_tokens_are_401_and_a_get_token_may_read_but_not_write_403(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, false);
    fx_put(&f, NULL, 5000, NULL);
    fx_guard(&f, NULL);
    fx_run(&f, &c, cl_tokens);
    assert_int_equal(f.stats.auth_rejected, 6);
    assert_int_equal(f.stats.puts_created, 1);
    fx_close(&f);
}

static void
cl_query_cap_and_revoke(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[AUTH_MAX_TOKEN + 128], v[256], t2[68];
    static const char body[] = "posted with ?cap=";

    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, addr_of(body, sizeof body - 1, t2) == 0);
    /* ?cap= for links a browser opens; other parameters around it are fine */
    snprintf(path, sizeof path, "/o?x=1&cap=%s&y=2", f->op_tok);
    CL_CHECK(f, cl_req(fd, "POST", path, NULL, body, sizeof body - 1, &r) == 201);
    CL_CHECK(f, stored(f, t2));
    free(r.body);
    r.body = NULL;
    snprintf(path, sizeof path, "/o/%s?cap=%s", f->text, f->get_tok);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* base64 padding, bare or percent-encoded, is optional */
    snprintf(path, sizeof path, "/o/%s?cap=%s%%3D%%3D", f->text, f->get_tok);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    free(r.body);
    r.body = NULL;
    /* a get-only token in the query may not write either */
    snprintf(path, sizeof path, "/o?cap=%s", f->get_tok);
    CL_CHECK(f, cl_req(fd, "POST", path, NULL, body, sizeof body - 1, &r) == 403);
    free(r.body);
    r.body = NULL;
    close(fd);
    CL_CHECK(f, (fd = cl_connect(f)) >= 0);
    /* revoke the get token: the very next request with it is 401 */
    uv_async_send(&f->revoke);
    uv_sem_wait(&f->revoked);
    CL_CHECK(f, f->revoke_rc == 0);
    snprintf(path, sizeof path, "/o/%s?cap=%s", f->text, f->get_tok);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 401);
    CL_CHECK(f, strstr((char *)r.body, "capability_revoked") != NULL);
    CL_CHECK(f, strncmp(hdr(&r, "WWW-Authenticate", v, sizeof v), "Bearer", 6) == 0);
    free(r.body);
    r.body = NULL;
    snprintf(path, sizeof path, "/o/%s", f->text);
    {
        char h[AUTH_MAX_TOKEN + 64];
        CL_CHECK(f, cl_req(fd, "GET", path, bearer(h, sizeof h, f->get_tok), NULL, 0, &r) == 401);
        free(r.body);
        r.body = NULL;
        /* the operator's token is untouched */
        CL_CHECK(f, cl_req(fd, "GET", path, bearer(h, sizeof h, f->op_tok), NULL, 0, &r) == 200);
    }
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_guard_cap_query_parameter_works_and_a_revoked_token_is_401_once_applied(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_put(&f, NULL, 2000, NULL);
    fx_guard(&f, NULL);
    fx_run(&f, &c, cl_query_cap_and_revoke);
    assert_int_equal(f.stats.auth_rejected, 3);
    fx_close(&f);
}

static void
cl_private(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], v[256], h[AUTH_MAX_TOKEN + 64];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    /* the policy denies anonymous reads: 401, a capability is needed */
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 401);
    CL_CHECK(f, strstr((char *)r.body, "capability_required") != NULL);
    CL_CHECK(f, strcmp(hdr(&r, "WWW-Authenticate", v, sizeof v), "Bearer") == 0);
    free(r.body);
    r.body = NULL;
    /* with one, reads pass at the token's own pace (no rate caveat) */
    for (int i = 0; i < 5; i++) {
        CL_CHECK(f, cl_req(fd, "GET", path, bearer(h, sizeof h, f->get_tok), NULL, 0, &r) == 200);
        free(r.body);
        r.body = NULL;
    }
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
cl_rate(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], v[256];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    /* anonymous reads at 1/s, burst 2, per source: the third at once is 429 */
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "HEAD", path, NULL, NULL, 0, &r) == 200);
    free(r.body);
    r.body = NULL;
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 429);
    CL_CHECK(f, atoi(hdr(&r, "Retry-After", v, sizeof v)) >= 1);
    CL_CHECK(f, strstr((char *)r.body, "rate_limited") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"retryable\":true") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"retry_after_ms\":") != NULL);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

/* Write a policy bundle into the fixture's directory; returns its path. */
static const char *
fx_policy(fx_t *f, const char *json, char *path, size_t cap)
{
    FILE *fp;

    snprintf(path, cap, "%s/policy.json", f->dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(json, fp);
    fclose(fp);
    return path;
}

static void
test_guard_a_private_policy_needs_a_token_to_read_and_a_public_rate_answers_429(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    char path[128];

    (void)state;
    fx_open(&f, false);
    fx_put(&f, NULL, 100, NULL);
    fx_guard(&f, fx_policy(&f,
                           "{\"version\":1,\"rules\":["
                           "{\"id\":\"anon\",\"effect\":\"deny\",\"match\":{\"anonymous\":true}},"
                           "{\"id\":\"bearer\",\"effect\":\"allow\",\"match\":{\"anonymous\":false}}"
                           "]}",
                           path, sizeof path));
    fx_run(&f, &c, cl_private);
    assert_int_equal(f.stats.auth_rejected, 1);
    fx_close(&f);

    fx_open(&f, false);
    fx_put(&f, NULL, 100, NULL);
    fx_guard(&f, fx_policy(&f,
                           "{\"version\":1,\"rules\":["
                           "{\"id\":\"public-read\",\"effect\":\"allow\",\"match\":{\"anonymous\":"
                           "true,\"ops\":[\"get\"]},\"obligations\":{\"rate\":\"1/s\",\"burst\":2}},"
                           "{\"id\":\"bearer\",\"effect\":\"allow\",\"match\":{\"anonymous\":false}}"
                           "]}",
                           path, sizeof path));
    fx_run(&f, &c, cl_rate);
    assert_int_equal(f.stats.auth_rejected, 1);
    fx_close(&f);
}

static void
cl_forward(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], h[AUTH_MAX_TOKEN + 64];
    static const char body[] = "forwarded";

    CL_CHECK(f, fd >= 0);
    /* an upload goes to the storage service with the client's token */
    CL_CHECK(f, cl_req(fd, "POST", "/o", bearer(h, sizeof h, f->op_tok), body, sizeof body - 1,
                       &r) == 507);
    CL_CHECK(f, seen_is(f, f->op_tok, T1));
    free(r.body);
    r.body = NULL;
    close(fd);
    CL_CHECK(f, (fd = cl_connect(f)) >= 0);
    /* a local miss is read through storage's get with it too (?cap= here) */
    snprintf(path, sizeof path, "/o/b3:%064d?cap=", 5);
    {
        char p[AUTH_MAX_TOKEN + 128];
        snprintf(p, sizeof p, "%s%s", path, f->get_tok);
        CL_CHECK(f, cl_req(fd, "GET", p, NULL, NULL, 0, &r) == 404);
    }
    CL_CHECK(f, seen_is(f, f->get_tok, T1));
    free(r.body);
    r.body = NULL;
    /* anonymous: no cap section */
    snprintf(path, sizeof path, "/o/b3:%064d", 6);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 404);
    CL_CHECK(f, seen_is(f, NULL, T1));
    free(r.body);
    r.body = NULL;
    /* storage checks on its own: its refusal is the client's 401 / 403 */
    atomic_store(&f->sto_refuse, 403);
    CL_CHECK(f, cl_req(fd, "GET", path, bearer(h, sizeof h, f->get_tok), NULL, 0, &r) == 403);
    CL_CHECK(f, strstr((char *)r.body, "\"reason\":\"forbidden\"") != NULL);
    free(r.body);
    r.body = NULL;
    atomic_store(&f->sto_refuse, 401);
    CL_CHECK(f, cl_req(fd, "POST", "/o", bearer(h, sizeof h, f->op_tok), body, sizeof body - 1,
                       &r) == 401);
    CL_CHECK(f, strstr((char *)r.body, "capability_invalid") != NULL);
    CL_CHECK(f, strncmp(hdr(&r, "WWW-Authenticate", h, sizeof h), "Bearer", 6) == 0);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
cl_prefix(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96], other[96], h[AUTH_MAX_TOKEN + 64];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    /* a PUT inside the prefix passes (the object is stored: 200) */
    CL_CHECK(f, cl_req(fd, "PUT", path, bearer(h, sizeof h, f->pfx_tok), f->data, f->len, &r) ==
                    200);
    free(r.body);
    r.body = NULL;
    /* outside it: 403 */
    snprintf(other, sizeof other, "/o/b3:%c%063d", f->text[3] == '0' ? '1' : '0', 0);
    CL_CHECK(f, cl_req(fd, "PUT", other, bearer(h, sizeof h, f->pfx_tok), f->data, f->len, &r) ==
                    403);
    free(r.body);
    r.body = NULL;
    close(fd);
    CL_CHECK(f, (fd = cl_connect(f)) >= 0);
    /* POST: the address is known only once stored, so a prefix token cannot */
    CL_CHECK(f, cl_req(fd, "POST", "/o", bearer(h, sizeof h, f->pfx_tok), "x", 1, &r) == 403);
    CL_CHECK(f, strstr((char *)r.body, "PUT /o/b3:") != NULL);
    CL_CHECK(f, strstr((char *)r.body, "\"reason\":\"forbidden\"") != NULL);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_guard_a_prefix_token_puts_inside_its_prefix_and_cannot_post(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();
    guard_req_t gr = {.op = AUTH_OP_MINT};
    guard_result_t res;
    guard_mint_req_t m = {.ops = 1u << AUTH_OP_PUT};
    char id[AUTH_ID_MAX + 1], pfx[8];

    (void)state;
    fx_open(&f, true);
    fx_put(&f, NULL, 700, NULL);
    fx_guard(&f, NULL);
    snprintf(pfx, sizeof pfx, "%.5s", f.text); /* "b3:" and two hex digits */
    m.prefix = pfx;
    gr.token = f.op_tok;
    gr.token_len = strlen(f.op_tok);
    assert_int_equal(guard_check(f.guard, &gr, &res), 0);
    assert_true(guard_mint(f.guard, &res.verdict.grant, res.actor, &m, f.pfx_tok,
                           sizeof f.pfx_tok, id) > 0);
    fx_run(&f, &c, cl_prefix);
    assert_int_equal(f.stats.auth_rejected, 2);
    assert_int_equal(f.stats.puts_existing, 1);
    assert_int_equal(f.stats.puts_created, 0);
    fx_close(&f);
}

static void
test_guard_token_and_tenant_are_forwarded_to_storage_and_its_refusals_are_401_403(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_guard(&f, NULL);
    f.fake_storage = true;
    fx_run(&f, &c, cl_forward);
    assert_int_equal(f.stats.auth_rejected, 2); /* the two storage refusals */
    uv_mutex_destroy(&f.seen_mu);
    fx_close(&f);
}

/* ---- remote reads: a local miss read through storage's get ---- */

/* n bytes the stand-in storage holds and f->store does not. */
static void
fx_remote_object(fx_t *f, size_t n)
{
    sto_config_t c = {0};
    sto_store_t *tmp;

    assert_true(f->ram);
    fx_put(f, NULL, n, NULL); /* f->data, f->addr, f->text ... */
    sto_close(f->store);      /* ... and a fresh, empty RAM store for the gateway */
    assert_int_equal(sto_open(&c, &tmp), 0);
    f->store = tmp;
    f->remote_serve = true;
    f->fake_storage = true;
}

static void
cl_remote_whole(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    CL_CHECK(f, !r.closed_short && r.body_len == f->len && memcmp(r.body, f->data, f->len) == 0);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_a_remote_read_asks_storage_for_the_next_chunks_before_the_first_is_written(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_remote_object(&f, (1u << 20) + 5); /* five chunks: the open's answer holds the first */
    f.hold_for = GW_REMOTE_WINDOW;         /* the other four are asked before any is answered */
    fx_run(&f, &c, cl_remote_whole);
    assert_int_equal(f.max_held, GW_REMOTE_WINDOW);
    assert_int_equal(f.gets_seen, 1 + 4);
    assert_int_equal(f.stats.remote_direct, 1); /* the miss skipped the thread pool */
    assert_int_equal(f.stats.objects_served, 1);
    assert_int_equal(f.stats.bytes_served, (1u << 20) + 5);
    /* held: the writer's chunk and the window's answers, nothing more */
    assert_true(f.stats.buffered_peak <= (GW_REMOTE_WINDOW + 1) * (size_t)GW_CHUNK_DEFAULT);
    uv_mutex_destroy(&f.seen_mu);
    fx_close(&f);
}

static void
cl_remote_ranges(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96];
    size_t big = 700000;

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    /* two ranges: the second one spans three gets */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=0-9,100000-799999\r\n", NULL, 0, &r) == 206);
    CL_CHECK(f, !r.closed_short);
    CL_CHECK(f, memmem(r.body, r.body_len, f->data, 10) != NULL);
    CL_CHECK(f, memmem(r.body, r.body_len, f->data + 100000, big) != NULL);
    free(r.body);
    r.body = NULL;
    /* one range in the middle */
    CL_CHECK(f, cl_req(fd, "GET", path, "Range: bytes=300000-\r\n", NULL, 0, &r) == 206);
    CL_CHECK(f, r.body_len == f->len - 300000 && memcmp(r.body, f->data + 300000, r.body_len) == 0);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_remote_ranges_read_ahead_give_the_same_bytes(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_remote_object(&f, (1u << 20) + 12345);
    fx_run(&f, &c, cl_remote_ranges);
    assert_int_equal(f.stats.objects_served, 2);
    uv_mutex_destroy(&f.seen_mu);
    fx_close(&f);
}

static void
cl_remote_short(fx_t *f)
{
    int fd = cl_connect(f);
    resp_t r = {0};
    char path[96];

    CL_CHECK(f, fd >= 0);
    snprintf(path, sizeof path, "/o/%s", f->text);
    CL_CHECK(f, cl_req(fd, "GET", path, NULL, NULL, 0, &r) == 200);
    /* the first chunk went out; the short answer after it cut the stream */
    CL_CHECK(f, r.closed_short && r.body_len < f->len);
    CL_CHECK(f, memcmp(r.body, f->data, r.body_len) == 0);
out:
    free(r.body);
    if (fd >= 0)
        close(fd);
}

static void
test_a_short_storage_answer_cuts_a_remote_stream(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_remote_object(&f, 1u << 20);
    f.short_answers = true;
    fx_run(&f, &c, cl_remote_short);
    assert_int_equal(f.stats.objects_served, 0);
    uv_mutex_destroy(&f.seen_mu);
    fx_close(&f);
}

/* Read the head, wait until the stand-in holds the gets sent ahead, leave. */
static void
cl_remote_gone(fx_t *f)
{
    int fd = cl_connect(f);
    char req[160];
    resp_t r = {0};

    CL_CHECK(f, fd >= 0);
    snprintf(req, sizeof req, "GET /o/%s HTTP/1.1\r\nHost: t\r\n\r\n", f->text);
    CL_CHECK(f, cl_send(fd, req, strlen(req)) == 0);
    CL_CHECK(f, cl_read(fd, &r, true) == 200);
    for (int i = 0; i < 500 && atomic_load(&f->held_now) < GW_REMOTE_WINDOW; i++)
        usleep(1000);
    CL_CHECK(f, atomic_load(&f->held_now) == GW_REMOTE_WINDOW);
out:
    free(r.body);
    if (fd >= 0)
        close(fd); /* with the gets ahead unanswered */
}

static void
test_a_client_leaving_a_remote_read_with_gets_in_flight_frees_it(void **state)
{
    fx_t f;
    tx_config_t c = test_cfg();

    (void)state;
    fx_open(&f, true);
    fx_remote_object(&f, 4u << 20);
    f.hold_for = 99; /* the gets ahead stay unanswered while the client leaves */
    fx_run(&f, &c, cl_remote_gone);
    /* fx_run checked active == 0 and buffered == 0 once every held get was answered */
    assert_int_equal(f.max_held, GW_REMOTE_WINDOW);
    assert_int_equal(f.stats.objects_served, 0);
    uv_mutex_destroy(&f.seen_mu);
    fx_close(&f);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the node does: a gone client is an error code, not a signal */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_single_suffix_and_open_ranges_resolve_against_the_size),
        cmocka_unit_test(test_range_several_ranges_are_sorted_and_overlaps_coalesced),
        cmocka_unit_test(test_range_unsatisfiable_when_no_range_overlaps_the_object),
        cmocka_unit_test(test_range_invalid_foreign_or_abusive_headers_are_ignored),
        cmocka_unit_test(test_multipart_heads_and_length_follow_rfc9110),
        cmocka_unit_test(test_if_none_match_handles_star_weak_tags_and_lists),
        cmocka_unit_test(test_if_range_needs_the_same_strong_tag),
        cmocka_unit_test(test_sniff_recognises_the_table_and_defaults_to_octet_stream),
        cmocka_unit_test(test_path_decode_unescapes_one_segment_and_refuses_nul_and_slash),
        cmocka_unit_test(test_get_and_head_round_trip_0_bytes_to_3_mib_file_store),
        cmocka_unit_test(test_get_and_head_round_trip_0_bytes_to_3_mib_ram_store),
        cmocka_unit_test(test_ranges_at_piece_boundaries_give_206_and_past_the_end_416),
        cmocka_unit_test(test_multiple_ranges_answer_multipart_byteranges),
        cmocka_unit_test(test_conditionals_sniffing_cors_and_error_statuses),
        cmocka_unit_test(test_post_201_put_201_then_200_and_409_stores_nothing),
        cmocka_unit_test(test_streamed_upload_past_max_body_stores_and_a_bad_put_stores_nothing),
        cmocka_unit_test(test_client_leaving_mid_upload_aborts_the_put_and_leaves_no_temporary_file),
        cmocka_unit_test(test_a_corrupted_stored_byte_is_never_served),
        cmocka_unit_test(test_verified_bodies_in_memory_are_bounded_and_bytes_read_after_a_flip_are_verified),
        cmocka_unit_test(test_a_small_object_read_on_the_loop_is_still_verified),
        cmocka_unit_test(test_a_slow_reader_of_a_large_object_keeps_buffers_bounded),
        cmocka_unit_test(test_a_client_leaving_mid_stream_frees_the_stream),
        cmocka_unit_test(test_pipelined_streams_end_when_the_client_leaves),
        cmocka_unit_test(test_names_resolve_302_publish_201_200_and_refuse_409_403_400),
        cmocka_unit_test(test_names_through_the_index_service_answer_as_in_process),
        cmocka_unit_test(test_a_name_published_in_the_index_service_resolves_through_the_gateway),
        cmocka_unit_test(test_names_answer_503_retryable_while_the_index_service_is_down),
        cmocka_unit_test(test_guard_anonymous_reads_pass_and_anonymous_writes_are_401_with_nothing_stored),
        cmocka_unit_test(test_guard_bad_tokens_are_401_and_a_get_token_may_read_but_not_write_403),
        cmocka_unit_test(test_guard_cap_query_parameter_works_and_a_revoked_token_is_401_once_applied),
        cmocka_unit_test(test_guard_a_private_policy_needs_a_token_to_read_and_a_public_rate_answers_429),
        cmocka_unit_test(test_guard_a_prefix_token_puts_inside_its_prefix_and_cannot_post),
        cmocka_unit_test(test_guard_token_and_tenant_are_forwarded_to_storage_and_its_refusals_are_401_403),
        cmocka_unit_test(test_a_remote_read_asks_storage_for_the_next_chunks_before_the_first_is_written),
        cmocka_unit_test(test_remote_ranges_read_ahead_give_the_same_bytes),
        cmocka_unit_test(test_a_short_storage_answer_cuts_a_remote_stream),
        cmocka_unit_test(test_a_client_leaving_a_remote_read_with_gets_in_flight_frees_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
