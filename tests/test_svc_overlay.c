/*
 * test_svc_overlay.c - svc-overlay sessions and content transfer between two
 * real overlay nodes joined frame to frame in memory: each side's frames are
 * encoded with the real OAP/1 codec, parsed again on the other side, and
 * accounted with the real stream/credit tables (oap_streams_*), the way
 * tx_peer does it, with a bounded output queue per side. Objects come from
 * real RAM stores (and a file store for on-disk corruption).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include "oap.h"
#include "ron_err.h"
#include "svc_overlay.h"

/* ---- an in-memory link pair ---- */

typedef struct mlink {
    struct mlink *peer;
    ovl_session_t *s;
    oap_streams_t st;
    uint8_t *q; /* encoded frames on their way to the peer */
    size_t q_len, q_cap;
    size_t max_queue; /* send answers RON_EAGAIN at or past this */
    size_t q_high;    /* high-water mark of q_len */
    bool paused;      /* we do not read what the peer sends */
    bool deaf;        /* test: we never read (a silent peer) */
    bool close_req, closed;
    int corrupt_nth; /* flip a byte in the n-th piece frame sent (1-based; 0 = none) */
    int pieces_seen;
    bool old_get;   /* test: our GETs reach the peer as a pre-"size" peer sees them (refused) */
    bool skew_size; /* test: the "size" of our GETs reaches the peer altered (it ignores it) */
    bool lie_size;  /* test: our META frames state a size one larger */
    bool meta_sent; /* a META frame went out (lie_size applies to the first only) */
} mlink_t;

static void
q_append(mlink_t *l, const oap_frame_t *f)
{
    size_t need = oap_frame_size(f) + 32;
    ssize_t n;
    char *hit;
    char buf[512];
    oap_frame_t g;

    if (f->app_proto_id == OAP_APP_OVERLAY && f->payload_len < sizeof(buf) - 32 &&
        f->payload_len > 0 && (l->old_get || l->lie_size || l->skew_size)) {
        memcpy(buf, f->payload, f->payload_len);
        buf[f->payload_len] = 0;
        g = *f;
        if (l->old_get && (f->flags & OAP_F_START) && (hit = strstr(buf, "\"size\"")) != NULL)
            memcpy(hit, "\"sizx\"", 6); /* an unknown key to the provider's strict parser */
        if (l->skew_size && (f->flags & OAP_F_START) && (hit = strstr(buf, "\"size\":\"")) != NULL)
            hit[8] = hit[8] == '9' ? '8' : (char)(hit[8] + 1); /* another size, same length */
        if (l->lie_size && !l->meta_sent && f->code == 200 && strstr(buf, "\"meta\"") != NULL) {
            ovl_msg_t m;
            assert_int_equal(ovl_msg_parse(f->payload, f->payload_len, &m), 0);
            g.payload_len = (size_t)snprintf(
                buf, sizeof buf, "{\"count\":\"%llu\",\"first\":\"%llu\",\"op\":\"meta\",\"size\":\"%llu\"}",
                (unsigned long long)m.count, (unsigned long long)m.first,
                (unsigned long long)m.size + 1);
            l->meta_sent = true;
        }
        g.payload = (const uint8_t *)buf;
        f = &g;
    }
    if (l->q_len + need > l->q_cap) {
        l->q_cap = (l->q_len + need) * 2;
        l->q = realloc(l->q, l->q_cap);
        assert_non_null(l->q);
    }
    n = oap_frame_encode(f, OAP_MAX_FRAME, l->q + l->q_len, l->q_cap - l->q_len);
    assert_true(n > 0);
    if (f->app_proto_id == OAP_APP_OVERLAY && (f->flags & OAP_F_RESP) && f->code == 0 &&
        f->payload_len > OVL_PIECE_HDR_LEN && ++l->pieces_seen == l->corrupt_nth)
        l->q[l->q_len + (size_t)n - 1] ^= 0x01; /* last byte: piece data, or proof when empty */
    l->q_len += (size_t)n;
    if (l->q_len > l->q_high)
        l->q_high = l->q_len;
}

static int
ml_send(void *link, const oap_frame_t *f)
{
    mlink_t *l = link;
    int rc;

    if (l->close_req || l->closed)
        return RON_ECLOSED;
    if (l->q_len >= l->max_queue)
        return RON_EAGAIN;
    if ((rc = oap_streams_send(&l->st, f)) < 0)
        return rc;
    q_append(l, f);
    return 0;
}

static int
ml_consume(void *link, uint64_t corr_id, bool mine, uint32_t n)
{
    mlink_t *l = link;
    uint8_t buf[128];
    uint32_t g = oap_streams_consume(&l->st, corr_id, mine, n);
    oap_frame_t f;

    if (g > 0 && !l->closed) {
        ssize_t len = oap_credit_encode(corr_id, mine, g, buf, sizeof(buf));
        assert_true(len > 0);
        assert_true(oap_frame_parse(buf, (size_t)len, OAP_MAX_FRAME, &f) > 0);
        q_append(l, &f); /* internal frames bypass the queue bound, as in tx_peer */
    }
    return 0;
}

static void
ml_pause(void *link, bool paused)
{
    ((mlink_t *)link)->paused = paused;
}

static void
ml_close(void *link)
{
    ((mlink_t *)link)->close_req = true;
}

static const ovl_link_ops_t ml_ops = {ml_send, ml_consume, ml_pause, ml_close};

typedef struct {
    sto_store_t *store[2];
    ovl_node_t *node[2];
    mlink_t link[2];
    uint64_t now;
} pair_t;

static void
pair_open(pair_t *p, const ovl_config_t *c0, const ovl_config_t *c1, size_t max_queue)
{
    sto_config_t sc = {0};
    ovl_config_t cfg[2];
    int i;

    memset(p, 0, sizeof(*p));
    p->now = 1000;
    cfg[0] = *c0;
    cfg[1] = *c1;
    memset(cfg[0].node_id, 0xa0, OVL_ID_LEN);
    memset(cfg[1].node_id, 0xb1, OVL_ID_LEN);
    for (i = 0; i < 2; i++) {
        if (cfg[i].store == NULL) {
            assert_int_equal(sto_open(&sc, &p->store[i]), 0);
            cfg[i].store = p->store[i];
        }
        assert_int_equal(ovl_node_new(&cfg[i], &p->node[i]), 0);
        oap_streams_init(&p->link[i].st, OAP_MAX_INFLIGHT, OAP_STREAM_WINDOW);
        p->link[i].max_queue = max_queue;
        p->link[i].peer = &p->link[1 - i];
    }
    for (i = 0; i < 2; i++)
        assert_int_equal(ovl_session_new(p->node[i], &ml_ops, &p->link[i], cfg[1 - i].node_id,
                                         OAP_MAX_FRAME, p->now, &p->link[i].s),
                         0);
}

/* Deliver at most one frame from a to b; returns 1 if one moved. */
static int
pair_move(mlink_t *a, mlink_t *b, uint64_t now)
{
    oap_frame_t f;
    ssize_t n;
    int rc;
    bool was_full;

    if (a->q_len == 0 || b->paused || b->deaf || b->closed)
        return 0;
    n = oap_frame_parse(a->q, a->q_len, OAP_MAX_FRAME, &f);
    assert_true(n > 0);
    rc = oap_streams_recv(&b->st, &f);
    if (rc == OAP_STREAM_CONTROL) {
        if (!b->close_req)
            ovl_session_writable(b->s);
    } else {
        assert_int_equal(rc, 0);
        ovl_session_recv(b->s, &f, now);
    }
    was_full = a->q_len >= a->max_queue;
    memmove(a->q, a->q + n, a->q_len - (size_t)n);
    a->q_len -= (size_t)n;
    if (was_full && a->q_len < a->max_queue && !a->close_req)
        ovl_session_writable(a->s);
    return 1;
}

/* Run until nothing moves (bounded); a link asked to close closes once drained. */
static void
pair_run(pair_t *p)
{
    int i, moved = 1, rounds = 0;

    while (moved && rounds++ < 1000000) {
        moved = pair_move(&p->link[0], &p->link[1], p->now);
        moved |= pair_move(&p->link[1], &p->link[0], p->now);
        for (i = 0; i < 2; i++) {
            mlink_t *l = &p->link[i];
            if (l->close_req && !l->closed && l->q_len == 0) {
                l->closed = true;
                l->peer->closed = true;
                ovl_session_closed(l->s, 0);
                ovl_session_closed(l->peer->s, RON_ECLOSED);
                moved = 1;
            }
        }
    }
    assert_true(rounds < 1000000);
}

static void
pair_close(pair_t *p)
{
    int i;

    for (i = 0; i < 2; i++) {
        ovl_session_free(p->link[i].s);
        ovl_node_free(p->node[i]);
        oap_streams_close(&p->link[i].st);
        free(p->link[i].q);
        if (p->store[i] != NULL)
            sto_close(p->store[i]);
    }
}

/* ---- a fetch that collects what it is given ---- */

typedef struct {
    uint8_t *buf; /* object-sized */
    size_t size;
    uint64_t pieces, bytes;
    uint64_t first_piece, last_piece; /* lowest and highest delivered */
    bool hold;
    bool done;
    int rc;
} sink_t;

static int
sink_piece(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len)
{
    sink_t *k = arg;

    assert_true(piece * STO_PIECE_LEN + len <= size);
    if (k->buf != NULL && size <= k->size)
        memcpy(k->buf + piece * STO_PIECE_LEN, bytes, len);
    if (k->pieces == 0 || piece < k->first_piece)
        k->first_piece = piece;
    if (k->pieces == 0 || piece > k->last_piece)
        k->last_piece = piece;
    k->pieces++;
    k->bytes += len;
    return k->hold ? OVL_PIECE_HOLD : 0;
}

static void
sink_done(void *arg, int rc)
{
    sink_t *k = arg;

    assert_false(k->done);
    k->done = true;
    k->rc = rc;
}

static uint8_t *
pattern(size_t n, unsigned seed)
{
    uint8_t *b = malloc(n > 0 ? n : 1);
    size_t i;

    assert_non_null(b);
    for (i = 0; i < n; i++)
        b[i] = (uint8_t)((i * 2654435761u + seed) >> 7);
    return b;
}

static const ovl_config_t plain_cfg = {.ping_ms = 1000, .dead_missed = 3};

/* Put n pattern bytes into node 0's store (the provider); returns the bytes. */
static uint8_t *
provide(pair_t *p, size_t n, unsigned seed, uint8_t addr[STO_ADDR_LEN])
{
    uint8_t *b = pattern(n, seed);

    assert_int_equal(sto_put_buf(p->store[0], NULL, b, n, NULL, addr), 0);
    return b;
}

static void
fetch_into(pair_t *p, const uint8_t addr[STO_ADDR_LEN], uint64_t off, uint64_t len, sink_t *k)
{
    ovl_fetch_cb_t cb = {sink_piece, sink_done, k};

    assert_int_equal(ovl_fetch_start(p->link[1].s, addr, off, len, &cb, NULL), 0);
    pair_run(p);
}

/* ---- a fetch straight into a store, one BLAKE3 pass per piece ---- */

typedef struct {
    sto_put_t *put;
    uint8_t *last; /* the last piece comes first: written at the end */
    size_t last_len;
    uint8_t last_cv[STO_TREE_HASH_LEN];
    uint64_t pieces, plain_calls;
    bool done;
    int rc;
} put_sink_t;

static int
put_sink_piece(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len)
{
    put_sink_t *k = arg;

    (void)piece, (void)size, (void)bytes, (void)len;
    k->plain_calls++; /* never: on_piece_cv takes precedence */
    return 0;
}

static int
put_sink_piece_cv(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len,
                  const uint8_t *cv)
{
    put_sink_t *k = arg;
    uint64_t n = sto_tree_pieces(size);

    k->pieces++;
    if (piece == n - 1 && n > 1) {
        k->last = malloc(len + 1);
        memcpy(k->last, bytes, len);
        memcpy(k->last_cv, cv, STO_TREE_HASH_LEN);
        k->last_len = len;
        return 0;
    }
    if (sto_put_write_piece(k->put, bytes, len, cv) < 0)
        return RON_ESTORE;
    if (piece + 2 == n && sto_put_write_piece(k->put, k->last, k->last_len, k->last_cv) < 0)
        return RON_ESTORE;
    return 0;
}

static void
put_sink_done(void *arg, int rc)
{
    put_sink_t *k = arg;

    k->done = true;
    k->rc = rc;
}

static void
test_pieces_with_their_cvs_store_an_object_that_reads_back(void **state)
{
    static const size_t sizes[] = {65536, 2 * 65536, (1u << 20) + 17, 3u << 20};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        pair_t p;
        uint8_t addr[STO_ADDR_LEN], got[STO_ADDR_LEN];
        put_sink_t k = {0};
        ovl_fetch_cb_t cb = {.on_piece = put_sink_piece, .on_done = put_sink_done, .arg = &k, .on_piece_cv = put_sink_piece_cv};
        uint8_t *obj, *back;
        sto_reader_t *r;

        pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
        obj = provide(&p, sizes[i], 40 + (unsigned)i, addr);
        assert_int_equal(sto_put_begin(p.store[1], NULL, addr, NULL, sizes[i], &k.put), 0);
        assert_int_equal(ovl_fetch_start(p.link[1].s, addr, 0, OVL_LEN_TO_END, &cb, NULL), 0);
        pair_run(&p);
        assert_true(k.done);
        assert_int_equal(k.rc, 0);
        assert_int_equal(k.plain_calls, 0);
        assert_int_equal(k.pieces, sto_tree_pieces(sizes[i]));
        assert_int_equal(sto_put_commit(k.put, got), 0);
        assert_memory_equal(got, addr, STO_ADDR_LEN);
        back = malloc(sizes[i]);
        assert_int_equal(sto_reader_open(p.store[1], addr, &r), 0);
        assert_int_equal(sto_reader_read(r, 0, back, sizes[i]), (ssize_t)sizes[i]);
        assert_memory_equal(back, obj, sizes[i]);
        sto_reader_close(r);
        free(back);
        free(k.last);
        free(obj);
        pair_close(&p);
    }
}

/* ---- tests ---- */

static void
test_whole_objects_of_edge_sizes_arrive_verified(void **state)
{
    static const size_t sizes[] = {0, 1, 65535, 65536, 65537, (1u << 20) + 17};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        pair_t p;
        uint8_t addr[STO_ADDR_LEN];
        sink_t k = {0};
        uint8_t *obj;
        ovl_session_stats_t st;

        pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
        obj = provide(&p, sizes[i], (unsigned)i, addr);
        k.size = sizes[i];
        k.buf = calloc(1, sizes[i] + 1);
        fetch_into(&p, addr, 0, OVL_LEN_TO_END, &k);
        assert_true(k.done);
        assert_int_equal(k.rc, 0);
        assert_int_equal(k.bytes, sizes[i]);
        assert_int_equal(k.pieces, sto_tree_pieces(sizes[i]));
        assert_memory_equal(k.buf, obj, sizes[i]);
        ovl_session_stats(p.link[1].s, &st);
        assert_int_equal(st.fetches_ok, 1);
        assert_int_equal(st.bad_pieces, 0);
        ovl_session_stats(p.link[0].s, &st);
        assert_int_equal(st.served, 1);
        free(obj);
        free(k.buf);
        pair_close(&p);
    }
}

static void
test_ranges_at_piece_boundaries_deliver_the_covering_pieces(void **state)
{
    static const struct {
        uint64_t off, len, first, count;
    } cases[] = {
        {0, 1, 0, 1},           {65535, 2, 0, 2},
        {65536, 65536, 1, 1},   {65536, 65537, 1, 2},
        {1048576, 17, 16, 1},   {1048592, 1, 16, 1},
        {100000, 300000, 1, 6}, {1048575, OVL_LEN_TO_END, 15, 2},
    };
    size_t size = (1u << 20) + 17, i;
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    uint8_t *obj;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    obj = provide(&p, size, 7, addr);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sink_t k = {0};
        uint64_t end;
        k.size = size;
        k.buf = calloc(1, size);
        fetch_into(&p, addr, cases[i].off, cases[i].len, &k);
        assert_true(k.done);
        assert_int_equal(k.rc, 0);
        assert_int_equal(k.pieces, cases[i].count);
        assert_int_equal(k.first_piece, cases[i].first);
        assert_int_equal(k.last_piece, cases[i].first + cases[i].count - 1);
        end = (cases[i].first + cases[i].count) * STO_PIECE_LEN;
        if (end > size)
            end = size;
        assert_memory_equal(k.buf + cases[i].first * STO_PIECE_LEN,
                            obj + cases[i].first * STO_PIECE_LEN,
                            end - cases[i].first * STO_PIECE_LEN);
        free(k.buf);
    }
    free(obj);
    pair_close(&p);
}

static void
test_corrupted_piece_in_flight_is_a_bad_provider_and_never_delivered(void **state)
{
    size_t size = (1u << 20) + 17;
    int nth;

    (void)state;
    /* 1: the size-proving last piece; 2: the first range piece; 9: a middle one */
    for (nth = 1; nth <= 9; nth += (nth == 1 ? 1 : 7)) {
        pair_t p;
        uint8_t addr[STO_ADDR_LEN];
        sink_t k = {0};
        uint8_t *obj;
        ovl_node_stats_t ns;
        ovl_session_stats_t st;

        pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
        obj = provide(&p, size, 3, addr);
        p.link[0].corrupt_nth = nth;
        k.size = size;
        k.buf = calloc(1, size);
        fetch_into(&p, addr, 0, OVL_LEN_TO_END, &k);
        assert_true(k.done);
        assert_int_equal(k.rc, RON_EBADPIECE);
        /* only pieces before the bad one arrived, each one correct */
        /* (the last piece comes first: it binds the size) */
        assert_int_equal(k.pieces, nth == 1 ? 0 : (uint64_t)nth - 1);
        if (nth > 1) {
            size_t good = (size_t)(nth - 2) * STO_PIECE_LEN, j;
            assert_memory_equal(k.buf, obj, good);
            assert_memory_equal(k.buf + size - 17, obj + size - 17, 17);
            for (j = good; j < good + STO_PIECE_LEN; j++) /* the bad piece never arrived */
                assert_int_equal(k.buf[j], 0);
        }
        ovl_node_stats(p.node[1], &ns);
        assert_int_equal(ns.bad_providers, 1);
        ovl_session_stats(p.link[1].s, &st);
        assert_int_equal(st.bad_pieces, 1);
        /* the stream drained: a new fetch on the same session still works */
        p.link[0].corrupt_nth = 0;
        free(k.buf);
        memset(&k, 0, sizeof(k));
        fetch_into(&p, addr, 0, 1, &k);
        assert_int_equal(k.rc, 0);
        assert_false(ovl_session_is_closing(p.link[1].s));
        free(obj);
        pair_close(&p);
    }
}

/* ---- GETs that state the size already verified (overlay.md §3, "size") ---- */

typedef struct {
    sink_t k;
    uint64_t order[32]; /* pieces in the order they were handed on */
    size_t n;
} order_sink_t;

static int
order_piece(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len)
{
    order_sink_t *o = arg;

    if (o->n < sizeof(o->order) / sizeof(o->order[0]))
        o->order[o->n++] = piece;
    return sink_piece(&o->k, piece, size, bytes, len);
}

static void
order_done(void *arg, int rc)
{
    sink_done(&((order_sink_t *)arg)->k, rc);
}

static void
test_sized_get_carries_no_size_proof_and_every_piece_still_verifies(void **state)
{
    size_t size = (1u << 20) + 17; /* 17 pieces, the last of 17 bytes */
    /* a range before the last piece, and one that ends with it */
    const uint64_t offs[2] = {65536, 15 * 65536 + 5}, lens[2] = {2 * 65536, OVL_LEN_TO_END};
    const uint64_t firsts[2] = {1, 15}, counts[2] = {2, 2};
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    uint8_t *obj;
    ovl_session_stats_t st0, st1;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    obj = provide(&p, size, 11, addr);
    for (int i = 0; i < 2; i++) {
        order_sink_t o = {0};
        ovl_fetch_cb_t cb = {order_piece, order_done, &o};
        uint64_t sent_before;

        ovl_session_stats(p.link[0].s, &st0);
        sent_before = st0.pieces_sent;
        o.k.size = size;
        o.k.buf = calloc(1, size);
        assert_int_equal(
            ovl_fetch_start_sized(p.link[1].s, addr, offs[i], lens[i], size, &cb, NULL), 0);
        pair_run(&p);
        assert_true(o.k.done);
        assert_int_equal(o.k.rc, 0);
        /* the range alone went over the wire, in order: no size-proof piece */
        ovl_session_stats(p.link[0].s, &st0);
        assert_int_equal(st0.pieces_sent - sent_before, counts[i]);
        assert_int_equal(o.n, counts[i]);
        for (size_t j = 0; j < o.n; j++)
            assert_int_equal(o.order[j], firsts[i] + j);
        for (uint64_t j = firsts[i]; j < firsts[i] + counts[i]; j++) {
            size_t len = sto_tree_piece_len(size, j);
            assert_memory_equal(o.k.buf + j * STO_PIECE_LEN, obj + j * STO_PIECE_LEN, len);
        }
        free(o.k.buf);
    }
    ovl_session_stats(p.link[0].s, &st0);
    ovl_session_stats(p.link[1].s, &st1);
    assert_int_equal(st0.sized_served, 2);
    assert_int_equal(st1.pieces_recv, 4);
    assert_int_equal(st1.bad_pieces, 0);
    free(obj);
    pair_close(&p);
}

static void
test_sized_get_from_a_lying_provider_is_still_caught(void **state)
{
    size_t size = (1u << 20) + 17;
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    uint8_t *obj;
    sink_t k = {0};
    ovl_fetch_cb_t cb = {sink_piece, sink_done, &k};
    ovl_session_stats_t st;

    (void)state;
    /* 1. a damaged piece in a sized answer: refused, nothing of it handed on */
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    obj = provide(&p, size, 12, addr);
    p.link[0].corrupt_nth = 2;
    k.size = size;
    k.buf = calloc(1, size);
    assert_int_equal(ovl_fetch_start_sized(p.link[1].s, addr, 0, 4 * 65536, size, &cb, NULL), 0);
    pair_run(&p);
    assert_true(k.done);
    assert_int_equal(k.rc, RON_EBADPIECE);
    assert_int_equal(k.pieces, 1); /* piece 0 verified; piece 1 was the bad one */
    assert_memory_equal(k.buf, obj, STO_PIECE_LEN);
    for (size_t j = STO_PIECE_LEN; j < 2 * STO_PIECE_LEN; j++)
        assert_int_equal(k.buf[j], 0);
    ovl_session_stats(p.link[1].s, &st);
    assert_int_equal(st.bad_pieces, 1);
    p.link[0].corrupt_nth = 0;
    free(k.buf);

    /* 2. a provider whose META states another size than the one we verified */
    memset(&k, 0, sizeof k);
    p.link[0].lie_size = true;
    assert_int_equal(ovl_fetch_start_sized(p.link[1].s, addr, 0, 65536, size, &cb, NULL), 0);
    pair_run(&p);
    assert_true(k.done);
    assert_int_equal(k.rc, RON_EBADPIECE);
    assert_int_equal(k.pieces, 0);
    p.link[0].lie_size = false;

    /* 3. a fetcher that states a wrong size gets the size proof anyway (the
     * provider does not take it on trust), and refuses the true size it
     * did not expect: nothing is handed on under the wrong size */
    memset(&k, 0, sizeof k);
    assert_int_equal(ovl_fetch_start_sized(p.link[1].s, addr, 0, 65536, size - 1, &cb, NULL), 0);
    pair_run(&p);
    assert_true(k.done);
    assert_int_equal(k.rc, RON_EBADPIECE);
    assert_int_equal(k.pieces, 0);
    ovl_session_stats(p.link[0].s, &st);
    assert_int_equal(st.sized_served, 2); /* cases 1 and 2; case 3 got the size proof */

    /* 4. a provider that ignores the stated size and sends the size proof first
     * (here: it sees another size than the one we sent, so it does not trust
     * it): the META size is the true one, but the order check refuses the
     * last piece where the range's first piece was due */
    memset(&k, 0, sizeof k);
    p.link[1].skew_size = true;
    assert_int_equal(ovl_fetch_start_sized(p.link[1].s, addr, 0, 65536, size, &cb, NULL), 0);
    pair_run(&p);
    assert_true(k.done);
    assert_int_equal(k.rc, RON_EBADPIECE);
    assert_int_equal(k.pieces, 0);
    ovl_session_stats(p.link[1].s, &st);
    assert_int_equal(st.bad_pieces, 4);
    free(obj);
    pair_close(&p);
}

static void
test_an_older_peer_that_refuses_size_is_asked_again_without_it(void **state)
{
    size_t size = 3 * 65536 + 100;
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    uint8_t *obj;
    ovl_session_stats_t st0, st1;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    obj = provide(&p, size, 13, addr);
    p.link[1].old_get = true; /* every GET with "size" reaches the provider as unknown key */
    for (int i = 0; i < 2; i++) {
        sink_t k = {0};
        ovl_fetch_cb_t cb = {sink_piece, sink_done, &k};
        k.size = size;
        k.buf = calloc(1, size);
        assert_int_equal(ovl_fetch_start_sized(p.link[1].s, addr, 65536, 65536, size, &cb, NULL),
                         0);
        pair_run(&p);
        assert_true(k.done);
        assert_int_equal(k.rc, 0);
        assert_int_equal(k.pieces, 1);
        assert_memory_equal(k.buf + 65536, obj + 65536, 65536);
        free(k.buf);
    }
    ovl_session_stats(p.link[0].s, &st0);
    ovl_session_stats(p.link[1].s, &st1);
    /* one 400, then the session never sent "size" again: the second GET was plain */
    assert_int_equal(st1.sized_refused, 1);
    assert_int_equal(st0.sized_served, 0);
    assert_int_equal(st0.pieces_sent, 4); /* piece 1 plus the size proof, twice */
    assert_int_equal(st1.bad_pieces, 0);
    assert_false(ovl_session_is_closing(p.link[1].s));
    free(obj);
    pair_close(&p);
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
test_provider_with_a_corrupted_store_file_stops_with_bad_digest(void **state)
{
    char dir[] = "/tmp/ovl_test_XXXXXX", hex[68], path[256];
    sto_config_t sc = {0};
    sto_store_t *fs = NULL;
    ovl_config_t c0 = plain_cfg;
    size_t size = 200000;
    uint8_t addr[STO_ADDR_LEN], byte;
    uint8_t *obj = pattern(size, 5);
    sink_t k = {0};
    pair_t p;
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    sc.dir = dir;
    assert_int_equal(sto_open(&sc, &fs), 0);
    assert_int_equal(sto_put_buf(fs, NULL, obj, size, NULL, addr), 0);
    sto_addr_format(addr, hex);
    snprintf(path, sizeof(path), "%s/objects/%.2s/%s", dir, hex + 3, hex + 3);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &byte, 1, 70000), 1); /* piece 1 */
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, 70000), 1);
    close(fd);
    c0.store = fs;
    pair_open(&p, &c0, &plain_cfg, 1u << 20);
    k.size = size;
    k.buf = calloc(1, size);
    fetch_into(&p, addr, 0, OVL_LEN_TO_END, &k);
    assert_true(k.done);
    assert_int_equal(k.rc, RON_EDIGEST);
    assert_int_equal(k.pieces, 2); /* the last piece (size proof) and piece 0 */
    assert_memory_equal(k.buf, obj, STO_PIECE_LEN);
    assert_memory_equal(k.buf + 3 * STO_PIECE_LEN, obj + 3 * STO_PIECE_LEN,
                        size - 3 * STO_PIECE_LEN);
    for (size_t j = STO_PIECE_LEN; j < 2 * STO_PIECE_LEN; j++)
        assert_int_equal(k.buf[j], 0);
    free(k.buf);
    free(obj);
    pair_close(&p);
    sto_close(fs);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
test_unknown_object_is_404_and_range_past_end_is_416(void **state)
{
    pair_t p;
    uint8_t addr[STO_ADDR_LEN], missing[STO_ADDR_LEN];
    sink_t k = {0}, k2 = {0}, k3 = {0};
    uint8_t *obj;
    ovl_session_stats_t st;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    obj = provide(&p, 1000, 1, addr);
    memset(missing, 0x5a, sizeof(missing));
    fetch_into(&p, missing, 0, OVL_LEN_TO_END, &k);
    assert_true(k.done);
    assert_int_equal(k.rc, RON_ENOTFOUND);
    assert_int_equal(k.pieces, 0);
    fetch_into(&p, addr, 1000, 1, &k2);
    assert_int_equal(k2.rc, RON_ERANGE);
    fetch_into(&p, addr, 999, 5, &k3);
    assert_int_equal(k3.rc, 0);
    ovl_session_stats(p.link[0].s, &st);
    assert_int_equal(st.not_found, 1);
    assert_int_equal(ovl_fetch_start(p.link[1].s, addr, 0, 0, &(ovl_fetch_cb_t){0}, NULL),
                     RON_EINVAL);
    free(obj);
    pair_close(&p);
}

static void
test_slow_fetcher_bounds_the_providers_queue_by_credit(void **state)
{
    size_t size = 8u << 20;
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    sink_t k = {0};
    ovl_fetch_t *f = NULL;
    ovl_fetch_cb_t cb = {sink_piece, sink_done, &k};
    ovl_session_stats_t st;
    uint8_t *obj;
    size_t frame = OAP_HDR_LEN + OVL_PIECE_PAYLOAD_MAX;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 64u << 20);
    obj = provide(&p, size, 9, addr);
    k.hold = true;
    k.size = size;
    k.buf = calloc(1, size);
    assert_int_equal(ovl_fetch_start(p.link[1].s, addr, 0, OVL_LEN_TO_END, &cb, &f), 0);
    pair_run(&p);
    /* a fetcher that holds every piece: the provider stops at the window */
    ovl_session_stats(p.link[0].s, &st);
    assert_true(st.pieces_sent <= OAP_STREAM_WINDOW);
    assert_true(st.pieces_sent >= OAP_STREAM_WINDOW / 2);
    assert_true(p.link[0].q_high <= OAP_STREAM_WINDOW * frame);
    assert_false(k.done);
    /* releasing the credit lets it finish */
    k.hold = false;
    ovl_fetch_release(f, (uint32_t)k.pieces);
    pair_run(&p);
    assert_true(k.done);
    assert_int_equal(k.rc, 0);
    assert_memory_equal(k.buf, obj, size);
    free(obj);
    free(k.buf);
    pair_close(&p);
}

static void
test_too_many_transfers_get_429(void **state)
{
    ovl_config_t one = plain_cfg;
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    sink_t k1 = {.hold = true}, k2 = {0};
    ovl_fetch_cb_t cb1 = {sink_piece, sink_done, &k1}, cb2 = {sink_piece, sink_done, &k2};
    ovl_session_stats_t st;
    uint8_t *obj;

    (void)state;
    one.max_transfers = 1;
    pair_open(&p, &one, &plain_cfg, 64u << 20);
    obj = provide(&p, 4u << 20, 2, addr);
    assert_int_equal(ovl_fetch_start(p.link[1].s, addr, 0, OVL_LEN_TO_END, &cb1, NULL), 0);
    pair_run(&p);
    assert_int_equal(ovl_fetch_start(p.link[1].s, addr, 0, OVL_LEN_TO_END, &cb2, NULL), 0);
    pair_run(&p);
    assert_true(k2.done);
    assert_int_equal(k2.rc, RON_EBUSY);
    assert_false(k1.done);
    ovl_session_stats(p.link[0].s, &st);
    assert_int_equal(st.refused_busy, 1);
    free(obj);
    pair_close(&p);
}

static void
test_silent_peer_dies_after_missed_pings_and_a_live_one_does_not(void **state)
{
    pair_t p;
    int64_t rc = 0;
    int i;
    ovl_node_stats_t ns;
    ovl_session_stats_t st;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    /* both answer: ten intervals pass, nobody dies */
    for (i = 0; i < 10; i++) {
        p.now += 1000;
        assert_true(ovl_session_tick(p.link[0].s, p.now) > 0);
        assert_true(ovl_session_tick(p.link[1].s, p.now) > 0);
        pair_run(&p);
    }
    ovl_session_stats(p.link[0].s, &st);
    assert_int_equal(st.pings_sent, 10);
    assert_int_equal(st.pongs_recv, 10);
    /* node 1 goes silent: node 0 gives up after dead_missed (3) unanswered PINGs */
    p.link[1].deaf = true;
    for (i = 0; i < 10 && rc >= 0; i++) {
        p.now += 1000;
        rc = ovl_session_tick(p.link[0].s, p.now);
        pair_run(&p);
    }
    assert_int_equal(rc, RON_ETIMEOUT);
    assert_int_equal(i, 4);
    ovl_node_stats(p.node[0], &ns);
    assert_int_equal(ns.dead_peers, 1);
    assert_true(p.link[0].close_req);
    pair_close(&p);
}

static void
test_peer_that_does_not_read_is_paused_then_dropped(void **state)
{
    ovl_config_t patient = {.ping_ms = 10, .dead_missed = 1000};
    pair_t p;
    int i;
    ovl_node_stats_t ns;
    ovl_session_stats_t st;

    (void)state;
    pair_open(&p, &patient, &plain_cfg, 256);
    p.link[1].deaf = true;
    bool saw_paused = false;
    for (i = 0; i < 200 && !p.link[0].close_req; i++) {
        p.now += 10;
        ovl_session_tick(p.link[0].s, p.now);
        saw_paused |= p.link[0].paused; /* control frames wait: reading from it stops */
    }
    assert_true(saw_paused);
    assert_true(p.link[0].close_req);
    ovl_node_stats(p.node[0], &ns);
    assert_int_equal(ns.slow_peers, 1);
    ovl_session_stats(p.link[0].s, &st);
    assert_int_equal(st.ctrl_queued_max, OVL_CTRL_QUEUE_MAX);
    pair_close(&p);
}

static void
test_goodbye_drains_transfers_then_closes(void **state)
{
    pair_t p;
    uint8_t addr[STO_ADDR_LEN];
    sink_t k = {0};
    ovl_fetch_cb_t cb = {sink_piece, sink_done, &k};
    ovl_fetch_t *f = NULL;
    uint8_t *obj;

    (void)state;
    pair_open(&p, &plain_cfg, &plain_cfg, 1u << 20);
    obj = provide(&p, 3u << 20, 4, addr);
    k.hold = true; /* keep the transfer in flight while GOODBYE goes out */
    assert_int_equal(ovl_fetch_start(p.link[1].s, addr, 0, OVL_LEN_TO_END, &cb, &f), 0);
    pair_run(&p);
    ovl_session_goodbye(p.link[0].s, "maintenance");
    assert_true(ovl_session_is_closing(p.link[0].s));
    assert_int_equal(ovl_fetch_start(p.link[0].s, addr, 0, 1, &cb, NULL), RON_ECLOSED);
    pair_run(&p);
    assert_false(p.link[0].closed);
    k.hold = false;
    ovl_fetch_release(f, (uint32_t)k.pieces);
    pair_run(&p);
    assert_true(k.done);
    assert_int_equal(k.rc, 0);
    assert_int_equal(k.bytes, 3u << 20);
    assert_true(p.link[0].closed && p.link[1].closed);
    free(obj);
    pair_close(&p);
}

static void
test_gossip_is_bounded_and_carries_the_advertise_address(void **state)
{
    ovl_config_t adv = plain_cfg;
    pair_t p;
    ovl_peer_t got[OVL_PEERS_MAX];
    size_t n;
    uint8_t id[OVL_ID_LEN];
    char addr[64];
    int i;
    ovl_node_stats_t ns;

    (void)state;
    adv.advertise = "127.0.0.1:7001";
    adv.gossip_ms = 500;
    pair_open(&p, &adv, &plain_cfg, 1u << 20);
    pair_run(&p);
    assert_string_equal(ovl_session_peer_addr(p.link[1].s), "127.0.0.1:7001");
    assert_string_equal(ovl_session_peer_addr(p.link[0].s), "");
    /* node 0 knows 100 peers; one gossip round gives node 1 at most OVL_GOSSIP_MAX */
    for (i = 0; i < 100; i++) {
        memset(id, 0, sizeof(id));
        id[0] = (uint8_t)i;
        id[1] = 0x77;
        snprintf(addr, sizeof(addr), "10.0.0.%d:7000", i);
        assert_int_equal(ovl_node_peer_learn(p.node[0], id, addr, 1700000000u + (uint64_t)i), 1);
    }
    p.now += 500;
    ovl_session_tick(p.link[0].s, p.now);
    pair_run(&p);
    n = ovl_node_peers(p.node[1], got, OVL_PEERS_MAX);
    assert_true(n <= OVL_GOSSIP_MAX);
    assert_true(n >= OVL_GOSSIP_MAX - 1);
    ovl_node_stats(p.node[1], &ns);
    assert_true(ns.gossip_learned >= OVL_GOSSIP_MAX);
    /* the newest ones travel first; the table is bounded */
    assert_int_equal(got[1].ts, 1700000099u);
    for (i = 0; i < (int)OVL_PEERS_MAX + 50; i++) {
        memset(id, 0, sizeof(id));
        id[0] = (uint8_t)i;
        id[1] = (uint8_t)(i >> 8);
        id[2] = 0x99;
        ovl_node_peer_learn(p.node[1], id, "10.1.1.1:1", 1800000000u + (uint64_t)i);
    }
    assert_int_equal(ovl_node_peers(p.node[1], got, OVL_PEERS_MAX + 1), OVL_PEERS_MAX);
    assert_int_equal(ovl_node_peer_learn(p.node[1], id, "bad addr", 1), RON_EINVAL);
    pair_close(&p);
}

static void
test_message_parser_is_strict(void **state)
{
    ovl_msg_t m;
    char big[OVL_MSG_MAX * 2];
    size_t n = 0;
    int i;
    static const char *const bad[] = {
        "{\"op\":\"ping\",\"seq\":1}",
        "{\"op\":\"ping\",\"seq\":\"01\"}",
        "{\"op\":\"ping\",\"seq\":\"1\",\"x\":1}",
        "{\"op\":\"ping\",\"op\":\"ping\",\"seq\":\"1\"}",
        "{\"op\":\"get\",\"addr\":\"b3:00\"}",
        "{\"op\":\"get\",\"addr\":\"b3:"
        "0000000000000000000000000000000000000000000000000000000000000000"
        "\",\"length\":\"0\"}",
        "{\"op\":\"meta\",\"size\":\"1\"}",
        "{\"op\":\"nope\"}",
        "[1]",
        "",
    };
    const uint8_t *proof, *bytes;
    size_t plen, blen;
    uint64_t piece;
    uint8_t pf[OVL_PIECE_HDR_LEN + 40] = {0, 0, 0, 0, 0, 0, 0, 3, 0, 32};

    (void)state;
    for (i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++)
        assert_int_equal(ovl_msg_parse((const uint8_t *)bad[i], strlen(bad[i]), &m), RON_EJSON);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "{\"op\":\"peers\",\"peers\":[");
    for (i = 0; i < (int)OVL_GOSSIP_MAX + 1; i++)
        n +=
            (size_t)snprintf(big + n, sizeof(big) - n,
                             "%s{\"addr\":\"a:1\",\"id\":\"%064d\",\"ts\":\"1\"}", i ? "," : "", i);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "]}");
    assert_int_equal(ovl_msg_parse((const uint8_t *)big, n, &m), RON_EJSON);
    assert_int_equal(ovl_msg_parse((const uint8_t *)"{\"op\":\"pong\",\"seq\":\"42\"}", 24, &m), 0);
    assert_int_equal(m.type, OVL_MSG_PONG);
    assert_int_equal(m.seq, 42);
    assert_int_equal(ovl_piece_parse(pf, sizeof(pf), &piece, &proof, &plen, &bytes, &blen), 0);
    assert_int_equal(piece, 3);
    assert_int_equal(plen, 32);
    assert_int_equal(blen, 8);
    pf[9] = 33; /* not a whole number of hashes */
    assert_int_equal(ovl_piece_parse(pf, sizeof(pf), &piece, &proof, &plen, &bytes, &blen),
                     RON_EPROTO);
    assert_int_equal(ovl_piece_parse(pf, 5, &piece, &proof, &plen, &bytes, &blen), RON_EPROTO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_objects_of_edge_sizes_arrive_verified),
        cmocka_unit_test(test_pieces_with_their_cvs_store_an_object_that_reads_back),
        cmocka_unit_test(test_ranges_at_piece_boundaries_deliver_the_covering_pieces),
        cmocka_unit_test(test_corrupted_piece_in_flight_is_a_bad_provider_and_never_delivered),
        cmocka_unit_test(test_sized_get_carries_no_size_proof_and_every_piece_still_verifies),
        cmocka_unit_test(test_sized_get_from_a_lying_provider_is_still_caught),
        cmocka_unit_test(test_an_older_peer_that_refuses_size_is_asked_again_without_it),
        cmocka_unit_test(test_provider_with_a_corrupted_store_file_stops_with_bad_digest),
        cmocka_unit_test(test_unknown_object_is_404_and_range_past_end_is_416),
        cmocka_unit_test(test_slow_fetcher_bounds_the_providers_queue_by_credit),
        cmocka_unit_test(test_too_many_transfers_get_429),
        cmocka_unit_test(test_silent_peer_dies_after_missed_pings_and_a_live_one_does_not),
        cmocka_unit_test(test_peer_that_does_not_read_is_paused_then_dropped),
        cmocka_unit_test(test_goodbye_drains_transfers_then_closes),
        cmocka_unit_test(test_gossip_is_bounded_and_carries_the_advertise_address),
        cmocka_unit_test(test_message_parser_is_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
