/*
 * test_svc_overlay_peer.c - svc-overlay over the real peer transport: two
 * tx_peer endpoints with their own amnesia key stores on one libuv loop,
 * mutual TLS 1.3 on loopback, HELLO, then overlay sessions on both sides and
 * verified transfers from a RAM store. The glue below is all it takes to put
 * the overlay's link interface on tx_peer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "ron_err.h"
#include "svc_overlay.h"
#include "tx_peer.h"

/* ---- the link glue ---- */

static int
tl_send(void *link, const oap_frame_t *f)
{
    return tx_peer_send(link, f);
}

static int
tl_consume(void *link, uint64_t corr_id, bool mine, uint32_t n)
{
    return tx_peer_consume(link, corr_id, mine, n);
}

static void
tl_pause(void *link, bool paused)
{
    tx_peer_session_pause(link, paused);
}

static void
tl_close(void *link)
{
    tx_peer_session_close(link);
}

static const ovl_link_ops_t tl_ops = {tl_send, tl_consume, tl_pause, tl_close};

typedef struct {
    uv_loop_t *loop;
    kms_keystore_t *ks;
    tx_peer_t *p;
    sto_store_t *store;
    ovl_node_t *node;
    ovl_session_t *sess;
    char addr[64];
    int sessions, closes;
    ovl_session_stats_t last; /* stats of the session when it closed */
} tnode_t;

static void
on_session(tx_peer_session_t *s, void *arg)
{
    tnode_t *n = arg;
    ovl_session_t *os = NULL;

    assert_int_equal(ovl_session_new(n->node, &tl_ops, s, tx_peer_session_id(s),
                                     tx_peer_session_max_frame(s), uv_now(n->loop), &os),
                     0);
    tx_peer_session_set_data(s, os);
    n->sess = os;
    n->sessions++;
}

static void
on_frame(tx_peer_session_t *s, const oap_frame_t *f, void *arg)
{
    tnode_t *n = arg;
    ovl_session_t *os = tx_peer_session_data(s);

    if (os != NULL)
        ovl_session_recv(os, f, uv_now(n->loop));
}

static void
on_writable(tx_peer_session_t *s, void *arg)
{
    ovl_session_t *os = tx_peer_session_data(s);

    (void)arg;
    if (os != NULL)
        ovl_session_writable(os);
}

static void
on_close(tx_peer_session_t *s, int reason, void *arg)
{
    tnode_t *n = arg;
    ovl_session_t *os = tx_peer_session_data(s);

    n->closes++;
    if (os == NULL)
        return;
    ovl_session_closed(os, reason);
    ovl_session_stats(os, &n->last);
    ovl_session_free(os);
    tx_peer_session_set_data(s, NULL);
    if (n->sess == os)
        n->sess = NULL;
}

static void
tnode_start(uv_loop_t *loop, tnode_t *n, bool listen, const char *advertise, uint32_t ping_ms)
{
    kms_opts_t o;
    char err[256];
    tx_peer_callbacks_t cb = {on_session, on_frame, on_writable, on_close, n};
    tx_peer_config_t pc;
    sto_config_t sc = {0};
    ovl_config_t oc = {0};

    memset(n, 0, sizeof(*n));
    n->loop = loop;
    memset(&o, 0, sizeof(o));
    o.amnesia = true;
    o.create = true;
    assert_int_equal(kms_keystore_open(&o, &n->ks, err, sizeof(err)), 0);
    tx_peer_config_default(&pc);
    assert_int_equal(tx_peer_new(loop, n->ks, &pc, &cb, &n->p), 0);
    if (listen)
        assert_int_equal(tx_peer_listen(n->p, "127.0.0.1:0", n->addr, sizeof(n->addr)), 0);
    assert_int_equal(sto_open(&sc, &n->store), 0);
    memcpy(oc.node_id, tx_peer_node_id(n->p), OVL_ID_LEN);
    oc.store = n->store;
    oc.advertise = advertise;
    oc.ping_ms = ping_ms;
    assert_int_equal(ovl_node_new(&oc, &n->node), 0);
}

static void
closed_cb(void *arg)
{
    (*(int *)arg)++;
}

static void
tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *flag >= want or ms pass. */
static bool
run_until(uv_loop_t *loop, const int *flag, int want, uint64_t ms)
{
    uint64_t end;

    uv_update_time(loop);
    end = uv_now(loop) + ms;
    while (*flag < want && uv_now(loop) < end)
        (void)uv_run(loop, UV_RUN_ONCE);
    return *flag >= want;
}

typedef struct {
    uint8_t *buf;
    size_t size;
    uint64_t pieces, bytes;
    int done, rc;
} sink_t;

static int
sink_piece(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len)
{
    sink_t *k = arg;

    assert_int_equal(size, k->size);
    memcpy(k->buf + piece * STO_PIECE_LEN, bytes, len);
    k->pieces++;
    k->bytes += len;
    return 0;
}

static void
sink_done(void *arg, int rc)
{
    sink_t *k = arg;

    k->done++;
    k->rc = rc;
}

static void
test_transfers_over_mutual_tls_verify_every_piece(void **state)
{
    static const size_t sizes[] = {0, 1, 65537, (1u << 20) + 17};
    uv_loop_t loop;
    uv_timer_t tick;
    tnode_t a, b;
    tx_peer_session_t *ds = NULL;
    uint8_t addrs[4][STO_ADDR_LEN], missing[STO_ADDR_LEN];
    uint8_t *objs[4];
    int closed = 0;
    size_t i;
    sink_t nf = {0};
    ovl_fetch_cb_t cb;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &tick), 0);
    assert_int_equal(uv_timer_start(&tick, tick_cb, 5, 5), 0);
    tnode_start(&loop, &a, true, "127.0.0.1:7001", 0);
    tnode_start(&loop, &b, false, NULL, 0);
    for (i = 0; i < 4; i++) {
        size_t j;
        objs[i] = malloc(sizes[i] + 1);
        for (j = 0; j < sizes[i]; j++)
            objs[i][j] = (uint8_t)(j * 31 + i);
        assert_int_equal(sto_put_buf(a.store, NULL, objs[i], sizes[i], NULL, addrs[i]), 0);
    }
    assert_int_equal(tx_peer_dial(b.p, a.addr, tx_peer_node_id(a.p), &ds), 0);
    assert_true(run_until(&loop, &b.sessions, 1, 5000));
    assert_true(run_until(&loop, &a.sessions, 1, 5000));
    for (i = 0; i < 4; i++) {
        sink_t k = {0};
        k.size = sizes[i];
        k.buf = calloc(1, sizes[i] + 1);
        cb = (ovl_fetch_cb_t){sink_piece, sink_done, &k};
        assert_int_equal(ovl_fetch_start(b.sess, addrs[i], 0, OVL_LEN_TO_END, &cb, NULL), 0);
        assert_true(run_until(&loop, &k.done, 1, 10000));
        assert_int_equal(k.rc, 0);
        assert_int_equal(k.bytes, sizes[i]);
        assert_memory_equal(k.buf, objs[i], sizes[i]);
        free(k.buf);
    }
    /* a range at a piece boundary, and an object the provider lacks */
    {
        sink_t k = {0};
        k.size = sizes[3];
        k.buf = calloc(1, sizes[3]);
        cb = (ovl_fetch_cb_t){sink_piece, sink_done, &k};
        assert_int_equal(ovl_fetch_start(b.sess, addrs[3], 65536, 65536, &cb, NULL), 0);
        assert_true(run_until(&loop, &k.done, 1, 10000));
        assert_int_equal(k.rc, 0);
        assert_int_equal(k.pieces, 1); /* piece 1; the last piece only proved the size */
        assert_memory_equal(k.buf + 65536, objs[3] + 65536, 65536);
        free(k.buf);
    }
    memset(missing, 0x42, sizeof(missing));
    cb = (ovl_fetch_cb_t){sink_piece, sink_done, &nf};
    assert_int_equal(ovl_fetch_start(b.sess, missing, 0, OVL_LEN_TO_END, &cb, NULL), 0);
    assert_true(run_until(&loop, &nf.done, 1, 10000));
    assert_int_equal(nf.rc, RON_ENOTFOUND);
    /* gossip carried the provider's advertise address over TLS */
    assert_string_equal(ovl_session_peer_addr(b.sess), "127.0.0.1:7001");
    /* graceful close: GOODBYE, then both sides see the link end */
    ovl_session_goodbye(b.sess, "test over");
    assert_true(run_until(&loop, &a.closes, 1, 5000));
    assert_true(run_until(&loop, &b.closes, 1, 5000));
    assert_int_equal(b.last.fetches_ok, 5);
    assert_int_equal(b.last.bad_pieces, 0);
    assert_int_equal(a.last.not_found, 1);

    tx_peer_close(a.p, closed_cb, &closed);
    tx_peer_close(b.p, closed_cb, &closed);
    assert_true(run_until(&loop, &closed, 2, 5000));
    uv_close((uv_handle_t *)&tick, NULL);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (i = 0; i < 4; i++)
        free(objs[i]);
    ovl_node_free(a.node);
    ovl_node_free(b.node);
    sto_close(a.store);
    sto_close(b.store);
    kms_keystore_free(a.ks);
    kms_keystore_free(b.ks);
}

static void
keepalive_cb(uv_timer_t *t)
{
    tnode_t *n = t->data;

    if (n->sess != NULL)
        (void)ovl_session_tick(n->sess, uv_now(n->loop));
}

static void
test_peer_that_stops_reading_is_declared_dead_over_tls(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick, ka;
    tnode_t a, b;
    tx_peer_session_t *ds = NULL;
    ovl_node_stats_t ns;
    int closed = 0;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &tick), 0);
    assert_int_equal(uv_timer_start(&tick, tick_cb, 5, 5), 0);
    tnode_start(&loop, &a, true, NULL, 50); /* PING every 50 ms, dead after 3 missed */
    tnode_start(&loop, &b, false, NULL, 0);
    assert_int_equal(tx_peer_dial(b.p, a.addr, tx_peer_node_id(a.p), &ds), 0);
    assert_true(run_until(&loop, &b.sessions, 1, 5000));
    assert_true(run_until(&loop, &a.sessions, 1, 5000));
    assert_int_equal(uv_timer_init(&loop, &ka), 0);
    ka.data = &a;
    assert_int_equal(uv_timer_start(&ka, keepalive_cb, 10, 10), 0);
    /* b answers for a while: a stays up */
    {
        int never = 0;
        (void)run_until(&loop, &never, 1, 300);
    }
    assert_int_equal(a.closes, 0);
    /* b stops reading: a's PINGs go unanswered, a gives up */
    tx_peer_session_pause(ds, true);
    assert_true(run_until(&loop, &a.closes, 1, 3000));
    ovl_node_stats(a.node, &ns);
    assert_int_equal(ns.dead_peers, 1);
    assert_true(a.last.pongs_recv >= 3);
    assert_true(a.last.pings_sent >= a.last.pongs_recv + 3);
    uv_close((uv_handle_t *)&ka, NULL);

    tx_peer_close(a.p, closed_cb, &closed);
    tx_peer_close(b.p, closed_cb, &closed);
    assert_true(run_until(&loop, &closed, 2, 5000));
    uv_close((uv_handle_t *)&tick, NULL);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    ovl_node_free(a.node);
    ovl_node_free(b.node);
    sto_close(a.store);
    sto_close(b.store);
    kms_keystore_free(a.ks);
    kms_keystore_free(b.ks);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfers_over_mutual_tls_verify_every_piece),
        cmocka_unit_test(test_peer_that_stops_reading_is_declared_dead_over_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
