/*
 * test_svc_overlay_service.c - the overlay node service (ovl_service.h) and
 * its bus client (ovl_client.h): two services on one libuv loop, each with
 * its own amnesia key and RAM store, real tx_peer (mutual TLS 1.3) on
 * loopback, the fetcher's `overlay` endpoint on an in-process ron-bus. The
 * provider's send hook damages or holds back its piece frames to play a
 * lying, dying or slow peer through the real overlay code.
 */
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
#include <sodium.h>
#include <jansson.h>
#include <uv.h>

#include "ovl_client.h"
#include "ovl_service.h"
#include "ron_auth.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_util.h"
#include "sto_tree.h"

typedef enum { HOOK_PASS, HOOK_CORRUPT, HOOK_HOLD } hook_mode_t;

typedef struct {
    hook_mode_t mode;
    uint64_t piece; /* HOOK_CORRUPT: damage this piece */
    uint64_t allow; /* HOOK_HOLD: piece frames let through before holding */
    uint64_t sent;  /* piece frames sent */
    uint32_t max_frame; /* negotiated max_frame of the last session that sent */
    bool try_big;       /* send one frame past it once (its result in big_rc) */
    int big_rc;
    uint8_t buf[OVL_PIECE_PAYLOAD_MAX];
} hook_t;

static bool
is_piece(const oap_frame_t *f)
{
    return f->app_proto_id == OAP_APP_OVERLAY && (f->flags & OAP_F_RESP) && f->code == 0 &&
           f->payload_len >= OVL_PIECE_HDR_LEN;
}

static int
hook_send(void *arg, tx_peer_session_t *ps, const oap_frame_t *f)
{
    hook_t *h = arg;
    oap_frame_t g;
    uint64_t idx = 0;

    h->max_frame = tx_peer_session_max_frame(ps);
    if (h->try_big) {
        static uint8_t big[OVL_SVC_MAX_FRAME];
        oap_frame_t e = {.ver = OAP_VERSION, .flags = OAP_F_EVENT, .app_proto_id = OAP_APP_OVERLAY};
        e.payload = big;
        e.payload_len = h->max_frame - OAP_HDR_LEN + 1;
        h->big_rc = tx_peer_send(ps, &e);
        h->try_big = false;
    }
    if (!is_piece(f))
        return tx_peer_send(ps, f);
    for (int i = 0; i < 8; i++)
        idx = idx << 8 | f->payload[i];
    if (h->mode == HOOK_HOLD && h->sent >= h->allow)
        return RON_EAGAIN;
    if (h->mode == HOOK_CORRUPT && idx == h->piece) {
        g = *f;
        memcpy(h->buf, f->payload, f->payload_len);
        h->buf[f->payload_len - 1] ^= 0x5a; /* the piece's last byte */
        g.payload = h->buf;
        h->sent++;
        return tx_peer_send(ps, &g);
    }
    h->sent++;
    return tx_peer_send(ps, f);
}

typedef struct {
    kms_keystore_t *ks;
    sto_store_t *store;
    ovl_service_t *svc;
    hook_t hook;
} tnode_t;

typedef struct {
    uv_loop_t loop;
    rbus_hub_t *hub;
    rbus_t *srv, *cli;
    rbus_peer_t *peer;
    tnode_t a, b; /* a fetches through its bus endpoint, b provides */
    uint8_t obj[STO_ADDR_LEN];
    uint8_t *data;
    size_t size;
    int closed, killed;
} fx_t;

static void
tnode_open(fx_t *fx, tnode_t *n, const ovl_service_config_t *extra, bool hook)
{
    kms_opts_t o;
    char err[256];
    sto_config_t sc = {0};
    ovl_service_config_t c = {0};

    memset(&o, 0, sizeof o);
    o.amnesia = true;
    o.create = true;
    assert_int_equal(kms_keystore_open(&o, &n->ks, err, sizeof err), 0);
    assert_int_equal(sto_open(&sc, &n->store), 0);
    if (extra != NULL)
        c = *extra;
    c.keys = n->ks;
    c.store = n->store;
    c.listen_fd = -1;
    c.listen = "127.0.0.1:0";
    if (hook) {
        c.send_hook = hook_send;
        c.hook_arg = &n->hook;
    }
    assert_int_equal(ovl_service_new(&fx->loop, &c, &n->svc), 0);
}

static void
closed_cb(void *arg)
{
    (*(int *)arg)++;
}

static void
fx_open(fx_t *fx, const ovl_service_config_t *a_cfg, size_t size)
{
    rbus_config_t sc = {0}, cc = {0};
    int rc = 0;

    memset(fx, 0, sizeof *fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    tnode_open(fx, &fx->a, a_cfg, false);
    tnode_open(fx, &fx->b, NULL, true);
    fx->size = size;
    fx->data = malloc(size + 1);
    for (size_t i = 0; i < size; i++)
        fx->data[i] = (uint8_t)(i * 131u + (i >> 16));
    assert_int_equal(sto_put_buf(fx->b.store, NULL, fx->data, size, NULL, fx->obj), 0);
    fx->hub = rbus_hub_new(&fx->loop);
    sc.transport = cc.transport = RBUS_TRANSPORT_INPROC;
    sc.hub = cc.hub = fx->hub;
    sc.name = "overlay";
    cc.name = "client";
    assert_non_null(fx->srv = rbus_new(&fx->loop, &sc, &rc));
    assert_non_null(fx->cli = rbus_new(&fx->loop, &cc, &rc));
    assert_int_equal(ovl_service_serve(fx->a.svc, fx->srv), 0);
    assert_int_equal(rbus_listen(fx->srv), 0);
    assert_non_null(fx->peer = rbus_connect(fx->cli, "overlay", &rc));
}

static void
fx_close(fx_t *fx)
{
    int want = 0;

    rbus_peer_close(fx->peer);
    rbus_free(fx->cli);
    rbus_free(fx->srv);
    if (fx->a.svc != NULL) {
        ovl_service_close(fx->a.svc, closed_cb, &fx->closed);
        want++;
    }
    if (fx->b.svc != NULL) {
        ovl_service_close(fx->b.svc, closed_cb, &fx->closed);
        want++;
    }
    for (int i = 0; i < 1000 && fx->closed < want; i++)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->closed, want);
    rbus_hub_free(fx->hub);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    sto_close(fx->a.store);
    sto_close(fx->b.store);
    kms_keystore_free(fx->a.ks);
    kms_keystore_free(fx->b.ks);
    free(fx->data);
}

typedef struct {
    int done, status;
    uint16_t code;
    ovl_client_fetch_result_t res;
    uint8_t *raw; /* copy of every record, res views point into it */
} got_t;

static void
on_fetch(void *arg, int status, uint16_t code, const ovl_client_fetch_result_t *res)
{
    got_t *g = arg;
    size_t total = 0;

    g->done++;
    g->status = status;
    g->code = code;
    if (res == NULL)
        return;
    g->res = *res;
    for (size_t i = 0; i < res->n_pieces; i++)
        total += res->pieces[i].rec_len;
    g->raw = malloc(total + 1);
    total = 0;
    for (size_t i = 0; i < res->n_pieces; i++) {
        ovl_client_piece_t *p = &g->res.pieces[i];
        memcpy(g->raw + total, res->pieces[i].rec, p->rec_len);
        p->rec = g->raw + total;
        p->proof = p->rec + OVL_PIECE_HDR_LEN;
        p->bytes = p->proof + p->proof_len;
        total += p->rec_len;
    }
}

static void
run_until(fx_t *fx, const int *flag, uint64_t ms)
{
    uint64_t end;

    uv_update_time(&fx->loop);
    end = uv_now(&fx->loop) + ms;
    while (*flag == 0 && uv_now(&fx->loop) < end)
        (void)uv_run(&fx->loop, UV_RUN_ONCE);
}

static void
fetch(fx_t *fx, const uint8_t *addr, uint64_t off, uint64_t len, got_t *g)
{
    memset(g, 0, sizeof *g);
    assert_int_equal(ovl_client_fetch(fx->peer, addr, off, len, ovl_service_node_id(fx->b.svc),
                                      ovl_service_listen_addr(fx->b.svc), 0, on_fetch, g),
                     0);
    run_until(fx, &g->done, 10000);
    assert_int_equal(g->done, 1);
}

/* Records in wire order (the object's last piece first, then the rest of
 * the range in order); every one verifies against the address with its own
 * proof, and the range's bytes match. */
static void
check_pieces(const fx_t *fx, const got_t *g, uint64_t first, uint64_t count)
{
    uint64_t npieces = sto_tree_pieces(fx->size), total;

    assert_int_equal(g->status, 0);
    assert_int_equal(g->res.size, fx->size);
    assert_int_equal(g->res.first, first);
    assert_int_equal(g->res.count, count);
    total = first + count == npieces ? count : count + 1;
    assert_int_equal(g->res.n_pieces, total);
    for (uint64_t k = 0; k < total; k++) {
        const ovl_client_piece_t *p = &g->res.pieces[k];
        uint64_t idx = k == 0 ? npieces - 1 : first + k - 1;
        assert_int_equal(p->piece, idx);
        assert_int_equal(p->len, sto_tree_piece_len(fx->size, idx));
        assert_memory_equal(p->bytes, fx->data + idx * STO_PIECE_LEN, p->len);
        if (k == 0)
            assert_int_equal(
                sto_tree_size_verify(fx->obj, fx->size, p->bytes, p->len, p->proof, p->proof_len),
                0);
        else
            assert_int_equal(sto_tree_proof_verify(fx->obj, fx->size, idx, p->bytes, p->len,
                                                   p->proof, p->proof_len),
                             0);
    }
}

/* A fetch that states the size the requester verified: the answer holds
 * the range's records alone, in order, each verifying under that size and
 * followed by the chaining value the overlay computed for it
 * (a malformed "size" is 400: test_malformed_requests_get_400). */
static void
test_bus_fetch_with_the_verified_size_answers_without_the_size_proof(void **state)
{
    fx_t fx;
    got_t g;

    (void)state;
    fx_open(&fx, NULL, 5 * STO_PIECE_LEN + 17);
    for (int i = 0; i < 2; i++) {
        /* pieces 1..2 (before the last), then 4..5 (ending with it) */
        uint64_t first = i == 0 ? 1 : 4;
        memset(&g, 0, sizeof g);
        assert_int_equal(ovl_client_fetch_sized(fx.peer, fx.obj, first * STO_PIECE_LEN,
                                                2 * STO_PIECE_LEN, fx.size,
                                                ovl_service_node_id(fx.b.svc),
                                                ovl_service_listen_addr(fx.b.svc), 0, on_fetch, &g),
                         0);
        run_until(&fx, &g.done, 10000);
        assert_int_equal(g.done, 1);
        assert_int_equal(g.status, 0);
        assert_int_equal(g.res.size, fx.size);
        assert_int_equal(g.res.first, first);
        assert_int_equal(g.res.count, 2);
        assert_int_equal(g.res.n_pieces, 2);
        for (uint64_t k = 0; k < 2; k++) {
            const ovl_client_piece_t *p = &g.res.pieces[k];
            assert_int_equal(p->piece, first + k);
            assert_int_equal(p->len, sto_tree_piece_len(fx.size, first + k));
            assert_memory_equal(p->bytes, fx.data + (first + k) * STO_PIECE_LEN, p->len);
            assert_int_equal(sto_tree_proof_verify(fx.obj, fx.size, first + k, p->bytes, p->len,
                                                   p->proof, p->proof_len),
                             0);
            /* the chaining value the overlay's check computed rides along */
            uint8_t cv[STO_TREE_HASH_LEN];
            assert_int_equal(sto_tree_proof_verify_cv(fx.obj, fx.size, first + k, p->bytes,
                                                      p->len, p->proof, p->proof_len, cv),
                             0);
            assert_non_null(p->cv);
            assert_memory_equal(p->cv, cv, STO_TREE_HASH_LEN);
        }
        free(g.raw);
    }
    fx_close(&fx);
}

static void
test_bus_fetch_serves_whole_objects_and_ranges_with_their_proofs_over_one_session(void **state)
{
    fx_t fx;
    got_t g;
    uint8_t missing[STO_ADDR_LEN];

    (void)state;
    fx_open(&fx, NULL, 3 * STO_PIECE_LEN + 17);
    fetch(&fx, fx.obj, 0, OVL_SVC_FETCH_MAX_LEN, &g);
    check_pieces(&fx, &g, 0, 4);
    free(g.raw);
    /* a range inside piece 1: the last piece comes first as the size proof */
    fetch(&fx, fx.obj, STO_PIECE_LEN + 5, 10, &g);
    check_pieces(&fx, &g, 1, 1);
    free(g.raw);
    /* a range across pieces 0 and 1 */
    fetch(&fx, fx.obj, STO_PIECE_LEN - 1, 2, &g);
    check_pieces(&fx, &g, 0, 2);
    free(g.raw);
    /* the tail only */
    fetch(&fx, fx.obj, 3 * STO_PIECE_LEN, 1000, &g);
    check_pieces(&fx, &g, 3, 1);
    free(g.raw);
    /* errors */
    fetch(&fx, fx.obj, fx.size, 1, &g);
    assert_int_equal(g.status, RON_ERANGE);
    assert_int_equal(g.code, 416);
    memset(missing, 0x42, sizeof missing);
    fetch(&fx, missing, 0, 1, &g);
    assert_int_equal(g.status, RON_ENOTFOUND);
    assert_int_equal(g.code, 404);
    /* one dial: the session was reused for every fetch */
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->dialed, 1);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.b.svc))->accepted, 1);
    fx_close(&fx);
}

typedef struct {
    int done, status;
    uint16_t code;
    json_t *o;
} js_t;

static void
on_json(void *arg, int status, uint16_t code, const char *json, size_t len)
{
    js_t *j = arg;
    j->done++;
    j->status = status;
    j->code = code;
    if (json != NULL)
        j->o = json_loadb(json, len, 0, NULL);
}

static void
test_peers_and_status_describe_sessions_and_the_advertised_address(void **state)
{
    fx_t fx;
    got_t g;
    js_t j = {0};
    json_t *s0;
    char hex[2 * OVL_ID_LEN + 1];

    (void)state;
    fx_open(&fx, NULL, 70000);
    fetch(&fx, fx.obj, 0, 70000, &g);
    check_pieces(&fx, &g, 0, 2);
    free(g.raw);
    assert_int_equal(ovl_client_query(fx.peer, "peers", on_json, &j), 0);
    run_until(&fx, &j.done, 5000);
    assert_int_equal(j.status, 0);
    assert_int_equal(json_array_size(json_object_get(j.o, "sessions")), 1);
    s0 = json_array_get(json_object_get(j.o, "sessions"), 0);
    ron_hex_encode(hex, ovl_service_node_id(fx.b.svc), OVL_ID_LEN);
    assert_string_equal(json_string_value(json_object_get(s0, "id")), hex);
    assert_true(json_is_true(json_object_get(s0, "dialer")));
    assert_string_equal(json_string_value(json_object_get(s0, "addr")),
                        ovl_service_listen_addr(fx.b.svc));
    assert_true(strtoull(json_string_value(json_object_get(s0, "piece_bytes_in")), NULL, 10) >=
                70000);
    /* gossip: each side's table holds the other with its advertised address */
    assert_string_equal(json_string_value(json_object_get(j.o, "known")), "1");
    {
        ovl_peer_t p[2];
        assert_int_equal(ovl_node_peers(ovl_service_node(fx.b.svc), p, 2), 1);
        assert_memory_equal(p[0].id, ovl_service_node_id(fx.a.svc), OVL_ID_LEN);
        assert_string_equal(p[0].addr, ovl_service_advertise(fx.a.svc));
    }
    json_decref(j.o);
    memset(&j, 0, sizeof j);
    assert_int_equal(ovl_client_query(fx.peer, "status", on_json, &j), 0);
    run_until(&fx, &j.done, 5000);
    assert_int_equal(j.status, 0);
    ron_hex_encode(hex, ovl_service_node_id(fx.a.svc), OVL_ID_LEN);
    assert_string_equal(json_string_value(json_object_get(j.o, "id")), hex);
    assert_string_equal(json_string_value(json_object_get(j.o, "advertise")),
                        ovl_service_listen_addr(fx.a.svc));
    assert_string_equal(json_string_value(json_object_get(j.o, "sessions")), "1");
    json_decref(j.o);
    fx_close(&fx);
}

typedef struct {
    int done, status;
    uint16_t code;
    char reason[64];
} raw_t;

static void
on_raw(void *arg, int status, const oap_frame_t *resp)
{
    raw_t *r = arg;
    json_t *o;

    r->done++;
    r->status = status;
    if (status < 0)
        return;
    r->code = resp->code;
    o = json_loadb((const char *)resp->payload, resp->payload_len, 0, NULL);
    if (json_string_value(json_object_get(o, "code")) != NULL)
        snprintf(r->reason, sizeof r->reason, "%s", json_string_value(json_object_get(o, "code")));
    json_decref(o);
}

static void
test_malformed_requests_get_400(void **state)
{
    static const char *const bad[] = {
        "{\"op\":\"fetch\"}",
        "{\"op\":\"fetch\",\"address\":\"b3:00\",\"length\":\"1\"}",
        /* "size" (the size already verified) must be a u64 decimal string */
        "{\"op\":\"fetch\",\"address\":\"b3:"
        "0000000000000000000000000000000000000000000000000000000000000000\",\"length\":\"1\","
        "\"size\":\"012\"}",
        "{\"op\":\"peers\",\"x\":1}",
        "{\"op\":\"nope\"}",
        "[1]",
    };
    fx_t fx;

    (void)state;
    fx_open(&fx, NULL, 10);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raw_t r = {0};
        size_t jl = strlen(bad[i]);
        uint8_t buf[256];
        buf[0] = buf[1] = buf[2] = 0;
        buf[3] = (uint8_t)jl;
        memcpy(buf + 4, bad[i], jl);
        assert_int_equal(rbus_request(fx.peer, OAP_APP_OVERLAY, buf, 4 + jl, 0, on_raw, &r), 0);
        run_until(&fx, &r.done, 5000);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.code, 400);
    }
    fx_close(&fx);
}

static void
test_corrupting_provider_gets_502_and_is_not_asked_again_for_ten_minutes(void **state)
{
    fx_t fx;
    got_t g;
    char *m = malloc(64 << 10);
    size_t n;

    (void)state;
    fx_open(&fx, NULL, 3 * STO_PIECE_LEN + 17);
    fx.b.hook.mode = HOOK_CORRUPT;
    fx.b.hook.piece = 1;
    fetch(&fx, fx.obj, 0, OVL_SVC_FETCH_MAX_LEN, &g);
    assert_int_equal(g.status, RON_EBADPIECE);
    assert_int_equal(g.code, 502);
    assert_true(ovl_service_is_bad(fx.a.svc, ovl_service_node_id(fx.b.svc)));
    /* a range without the bad piece: refused at once, no new dial */
    fetch(&fx, fx.obj, 0, 10, &g);
    assert_int_equal(g.status, RON_EBADPIECE);
    assert_int_equal(g.code, 502);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->dialed, 1);
    n = ovl_service_metrics(fx.a.svc, m, 64 << 10);
    assert_true(n > 0);
    m[n] = '\0';
    assert_non_null(strstr(m, "overlay_bad_pieces_total 1\n"));
    assert_non_null(strstr(m, "overlay_fetches_total{result=\"bad_piece\"} 2\n"));
    /* the lying peer's session was closed */
    for (int i = 0; i < 500 && tx_peer_stats(ovl_service_peer(fx.a.svc))->open > 0; i++)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->open, 0);
    free(m);
    fx_close(&fx);
}

static void
kill_b(uv_timer_t *t)
{
    fx_t *fx = t->data;
    ovl_service_close(fx->b.svc, closed_cb, &fx->killed);
    fx->b.svc = NULL;
}

static void
test_provider_killed_mid_fetch_gives_503(void **state)
{
    fx_t fx;
    got_t g = {0};
    uv_timer_t t;

    (void)state;
    fx_open(&fx, NULL, 3 * STO_PIECE_LEN + 17);
    fx.b.hook.mode = HOOK_HOLD;
    fx.b.hook.allow = 2; /* two pieces, then nothing */
    uv_timer_init(&fx.loop, &t);
    t.data = &fx;
    assert_int_equal(ovl_client_fetch(fx.peer, fx.obj, 0, OVL_SVC_FETCH_MAX_LEN,
                                      ovl_service_node_id(fx.b.svc),
                                      ovl_service_listen_addr(fx.b.svc), 0, on_fetch, &g),
                     0);
    uv_timer_start(&t, kill_b, 300, 0);
    run_until(&fx, &g.done, 4000);
    assert_int_equal(g.done, 1);
    assert_int_equal(g.status, RON_EUNAVAIL);
    assert_int_equal(g.code, 503);
    assert_int_equal(fx.b.hook.sent, 2);
    assert_false(ovl_service_is_bad(fx.a.svc, ovl_service_node_id(fx.a.svc)));
    uv_close((uv_handle_t *)&t, NULL);
    run_until(&fx, &fx.killed, 2000);
    assert_int_equal(fx.killed, 1);
    fx_close(&fx);
}

static void
test_slow_provider_gets_504_after_the_fetch_timeout_and_the_pending_bound_gives_429(void **state)
{
    ovl_service_config_t ac = {0};
    fx_t fx;
    got_t g1 = {0}, g2 = {0};
    uint64_t t0;

    (void)state;
    ac.fetch_timeout_ms = 300;
    ac.max_fetches = 1;
    fx_open(&fx, &ac, 3 * STO_PIECE_LEN + 17);
    fx.b.hook.mode = HOOK_HOLD;
    fx.b.hook.allow = 1;
    uv_update_time(&fx.loop);
    t0 = uv_now(&fx.loop);
    assert_int_equal(ovl_client_fetch(fx.peer, fx.obj, 0, OVL_SVC_FETCH_MAX_LEN,
                                      ovl_service_node_id(fx.b.svc),
                                      ovl_service_listen_addr(fx.b.svc), 0, on_fetch, &g1),
                     0);
    assert_int_equal(ovl_client_fetch(fx.peer, fx.obj, 0, 1, ovl_service_node_id(fx.b.svc),
                                      ovl_service_listen_addr(fx.b.svc), 0, on_fetch, &g2),
                     0);
    run_until(&fx, &g2.done, 4000);
    assert_int_equal(g2.status, RON_EBUSY);
    assert_int_equal(g2.code, 429);
    run_until(&fx, &g1.done, 4000);
    assert_int_equal(g1.status, RON_ETIMEOUT);
    assert_int_equal(g1.code, 504);
    assert_true(uv_now(&fx.loop) - t0 >= 300);
    assert_true(uv_now(&fx.loop) - t0 < 3000);
    assert_false(ovl_service_is_bad(fx.a.svc, ovl_service_node_id(fx.b.svc)));
    fx_close(&fx);
}

static void
test_idle_dialled_session_is_closed_and_the_next_fetch_dials_again(void **state)
{
    ovl_service_config_t ac = {0};
    fx_t fx;
    got_t g;

    (void)state;
    ac.idle_ms = 200;
    fx_open(&fx, &ac, 1000);
    fetch(&fx, fx.obj, 0, 1000, &g);
    check_pieces(&fx, &g, 0, 1);
    free(g.raw);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->open, 1);
    for (int i = 0; i < 2000 && tx_peer_stats(ovl_service_peer(fx.a.svc))->open > 0; i++)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->open, 0);
    fetch(&fx, fx.obj, 0, 1000, &g);
    check_pieces(&fx, &g, 0, 1);
    free(g.raw);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->dialed, 2);
    fx_close(&fx);
}

/* max_sessions 1: a fetch from a second provider says GOODBYE to the idle
 * session with the first, so dialled sessions stay bounded. */
static void
test_dialled_sessions_are_bounded_and_the_least_recently_used_idle_one_goes(void **state)
{
    ovl_service_config_t ac = {0};
    fx_t fx;
    tnode_t c;
    got_t g;
    uint8_t cobj[STO_ADDR_LEN];
    int closed = 0;

    (void)state;
    ac.max_sessions = 1;
    fx_open(&fx, &ac, 1000);
    tnode_open(&fx, &c, NULL, false);
    assert_int_equal(sto_put_buf(c.store, NULL, fx.data, 999, NULL, cobj), 0);
    fetch(&fx, fx.obj, 0, 1000, &g);
    check_pieces(&fx, &g, 0, 1);
    free(g.raw);
    memset(&g, 0, sizeof g);
    assert_int_equal(ovl_client_fetch(fx.peer, cobj, 0, 999, ovl_service_node_id(c.svc),
                                      ovl_service_listen_addr(c.svc), 0, on_fetch, &g),
                     0);
    run_until(&fx, &g.done, 5000);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.res.size, 999);
    free(g.raw);
    for (int i = 0; i < 2000 && tx_peer_stats(ovl_service_peer(fx.a.svc))->open > 1; i++)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->open, 1);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.b.svc))->open, 0);
    ovl_service_close(c.svc, closed_cb, &closed);
    run_until(&fx, &closed, 5000);
    assert_int_equal(closed, 1);
    sto_close(c.store);
    kms_keystore_free(c.ks);
    fx_close(&fx);
}

/* A peer offering 1 MiB frames gets OVL_SVC_MAX_FRAME: what a peer can make
 * a node buffer per session stays small (bench/net_memory.sh: 100 peers
 * sending one maximal frame each took 117 MiB at 1 MiB), pieces still fit,
 * and a frame past the bound is refused without ending the session. */
static void
test_peer_links_negotiate_ovl_svc_max_frame_even_when_the_peer_offers_more(void **state)
{
    ovl_service_config_t ac = {0};
    tx_peer_config_t pc;
    fx_t fx;
    got_t g;

    (void)state;
    tx_peer_config_default(&pc);
    pc.max_frame = OAP_MAX_FRAME;
    ac.peer = &pc;
    fx_open(&fx, &ac, 2 * STO_PIECE_LEN + 9);
    fx.b.hook.try_big = true;
    fetch(&fx, fx.obj, 0, 2 * STO_PIECE_LEN + 9, &g);
    check_pieces(&fx, &g, 0, 3);
    free(g.raw);
    assert_int_equal(fx.b.hook.max_frame, OVL_SVC_MAX_FRAME);
    assert_false(fx.b.hook.try_big);
    assert_true(fx.b.hook.big_rc < 0);
    /* the same session serves the next fetch */
    fetch(&fx, fx.obj, STO_PIECE_LEN, 1, &g);
    check_pieces(&fx, &g, 1, 1);
    free(g.raw);
    assert_int_equal(tx_peer_stats(ovl_service_peer(fx.a.svc))->dialed, 1);
    fx_close(&fx);
}

static void
test_unspecified_listen_host_is_advertised_as_loopback_unless_advertise_is_set(void **state)
{
    uv_loop_t loop;
    kms_opts_t o;
    kms_keystore_t *ks = NULL;
    ovl_service_t *svc = NULL;
    ovl_service_config_t c = {0};
    char err[256], want[64];
    int closed = 0;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    memset(&o, 0, sizeof o);
    o.amnesia = true;
    o.create = true;
    assert_int_equal(kms_keystore_open(&o, &ks, err, sizeof err), 0);
    c.keys = ks;
    c.listen_fd = -1;
    c.listen = "0.0.0.0:0";
    assert_int_equal(ovl_service_new(&loop, &c, &svc), 0);
    assert_int_equal(strncmp(ovl_service_listen_addr(svc), "0.0.0.0:", 8), 0);
    snprintf(want, sizeof want, "127.0.0.1:%s", ovl_service_listen_addr(svc) + 8);
    assert_string_equal(ovl_service_advertise(svc), want);
    ovl_service_close(svc, closed_cb, &closed);
    c.advertise = "192.0.2.7:5301";
    assert_int_equal(ovl_service_new(&loop, &c, &svc), 0);
    assert_string_equal(ovl_service_advertise(svc), "192.0.2.7:5301");
    ovl_service_close(svc, closed_cb, &closed);
    c.listen = "not an address";
    c.advertise = NULL;
    assert_true(ovl_service_new(&loop, &c, &svc) < 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 2);
    assert_int_equal(uv_loop_close(&loop), 0);
    kms_keystore_free(ks);
}

/* ---- capabilities on peers' gets ---- */

/* A policy bundle that denies every anonymous request (get included). */
static const char private_policy[] =
    "{\"version\":1,\"rules\":["
    "{\"id\":\"capability-bearer\",\"effect\":\"allow\",\"match\":{\"anonymous\":false},"
    "\"reason\":\"caveats bound it\"},"
    "{\"id\":\"private\",\"effect\":\"deny\",\"match\":{\"anonymous\":true},"
    "\"reason\":\"capability holders only\"}]}";

typedef struct {
    uint8_t master[GUARD_MASTER_LEN];
    guard_authority_t *auth;
    guard_t *g;
} tguard_t;

/* An authority in RAM and a guard (policy: the file at path, or the default) at its head. */
static void
tguard_open(tguard_t *t, const char *policy_path)
{
    uint8_t seed[32];
    guard_authority_opts_t ao = {0};
    guard_opts_t go = {0};
    guard_entry_t e[GUARD_SYNC_PAGE];
    bool more = false;
    size_t n;

    assert_true(sodium_init() >= 0);
    randombytes_buf(seed, sizeof seed);
    guard_master_derive(seed, t->master);
    ao.master = t->master;
    assert_int_equal(guard_authority_open(&ao, (int64_t)time(NULL), &t->auth), 0);
    go.service = "overlay";
    go.master = t->master;
    go.policy_file = policy_path;
    assert_int_equal(guard_new(&go, &t->g), 0);
    n = guard_authority_since(t->auth, 0, e, GUARD_SYNC_PAGE, &more);
    assert_false(more);
    assert_int_equal(guard_apply(t->g, 0, guard_authority_head(t->auth), e, n), 0);
}

static void
tguard_close(tguard_t *t)
{
    guard_free(t->g);
    guard_authority_close(t->auth);
}

/* A token under the authority's kid with one caveat; its identifier in id. */
static void
tguard_mint(tguard_t *t, const char *caveat, char out[AUTH_MAX_TOKEN + 1], char id[AUTH_ID_MAX + 1])
{
    uint8_t key[GUARD_KEY_LEN];
    const char *kid = guard_authority_kid(t->auth);

    assert_int_equal(auth_id_new(id, kid, guard_authority_epoch(t->auth)), 0);
    guard_root_key(t->master, kid, key);
    assert_true(auth_mint(key, sizeof key, id, &caveat, 1, out, AUTH_MAX_TOKEN + 1) > 0);
}

static void
fetch_cap(fx_t *fx, const char *cap, got_t *g)
{
    memset(g, 0, sizeof *g);
    assert_int_equal(ovl_client_fetch_cap(fx->peer, fx->obj, 0, OVL_SVC_FETCH_MAX_LEN,
                                          ovl_service_node_id(fx->b.svc),
                                          ovl_service_listen_addr(fx->b.svc), cap, 0, on_fetch, g),
                     0);
    run_until(fx, &g->done, 10000);
    assert_int_equal(g->done, 1);
}

static void
test_private_provider_serves_capability_holders_and_refuses_a_revoked_token_at_once(void **state)
{
    fx_t fx;
    got_t g;
    tguard_t t;
    char path[] = "/tmp/ron-ovlpol-XXXXXX", tok[AUTH_MAX_TOKEN + 1], put_only[AUTH_MAX_TOKEN + 1];
    char id[AUTH_ID_MAX + 1], id2[AUTH_ID_MAX + 1];
    guard_entry_t e;
    struct timespec t0, t1;
    uint64_t prev;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, private_policy, strlen(private_policy)),
                     (ssize_t)strlen(private_policy));
    close(fd);
    tguard_open(&t, path);
    fx_open(&fx, NULL, 2 * STO_PIECE_LEN + 9);
    ovl_service_set_guard(fx.b.svc, t.g);

    fetch_cap(&fx, NULL, &g); /* anonymous: the private policy refuses */
    assert_int_equal(g.status, RON_ECAPNEEDED);
    assert_int_equal(g.code, 401);
    tguard_mint(&t, "ops = get", tok, id);
    fetch_cap(&fx, tok, &g);
    check_pieces(&fx, &g, 0, 3);
    free(g.raw);
    tguard_mint(&t, "ops = put", put_only, id2);
    fetch_cap(&fx, put_only, &g);
    assert_int_equal(g.status, RON_ECAPDENY);
    assert_int_equal(g.code, 403);
    fetch_cap(&fx, "bm90IGEgdG9rZW4", &g);
    assert_int_equal(g.code, 401);

    /* revoke at the authority, the guard applies the push: the next get is refused */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    prev = guard_head(t.g);
    assert_int_equal(guard_authority_revoke(t.auth, id, strlen(id), 0, (int64_t)time(NULL), &e), 0);
    assert_int_equal(guard_apply(t.g, prev, guard_authority_head(t.auth), &e, 1), 0);
    fetch_cap(&fx, tok, &g);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(g.status, RON_ECAPNEEDED);
    printf("overlay: revocation to a refused peer get (apply + fetch over TLS): %.3f ms\n",
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    assert_true(t1.tv_sec - t0.tv_sec < 1);
    fx_close(&fx);
    tguard_close(&t);
    unlink(path);
}

static void
test_default_policy_serves_an_anonymous_peer(void **state)
{
    fx_t fx;
    got_t g;
    tguard_t t;

    (void)state;
    tguard_open(&t, NULL);
    fx_open(&fx, NULL, STO_PIECE_LEN + 1);
    ovl_service_set_guard(fx.b.svc, t.g);
    fetch_cap(&fx, NULL, &g);
    check_pieces(&fx, &g, 0, 2);
    free(g.raw);
    fx_close(&fx);
    tguard_close(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_bus_fetch_serves_whole_objects_and_ranges_with_their_proofs_over_one_session),
        cmocka_unit_test(test_bus_fetch_with_the_verified_size_answers_without_the_size_proof),
        cmocka_unit_test(test_peers_and_status_describe_sessions_and_the_advertised_address),
        cmocka_unit_test(test_malformed_requests_get_400),
        cmocka_unit_test(test_corrupting_provider_gets_502_and_is_not_asked_again_for_ten_minutes),
        cmocka_unit_test(test_provider_killed_mid_fetch_gives_503),
        cmocka_unit_test(
            test_slow_provider_gets_504_after_the_fetch_timeout_and_the_pending_bound_gives_429),
        cmocka_unit_test(test_idle_dialled_session_is_closed_and_the_next_fetch_dials_again),
        cmocka_unit_test(
            test_dialled_sessions_are_bounded_and_the_least_recently_used_idle_one_goes),
        cmocka_unit_test(
            test_peer_links_negotiate_ovl_svc_max_frame_even_when_the_peer_offers_more),
        cmocka_unit_test(
            test_unspecified_listen_host_is_advertised_as_loopback_unless_advertise_is_set),
        cmocka_unit_test(
            test_private_provider_serves_capability_holders_and_refuses_a_revoked_token_at_once),
        cmocka_unit_test(test_default_policy_serves_an_anonymous_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
