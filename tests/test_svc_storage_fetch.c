/*
 * test_svc_storage_fetch.c - the fetch scheduler (sto_fetch.c) driven by a
 * small simulator with virtual time: providers that answer at a given pace,
 * stay silent, answer busy, lack the object or send a bad piece. Every run is
 * deterministic (no clock, no randomness). Each test checks what the
 * scheduler asked of whom, not only that the fetch finished.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ron_err.h"
#include "sto_fetch.h"
#include "sto_tree.h"

enum { GOOD, BUSY, NOTFOUND, BAD, SILENT };

#define MAXP 8
#define MAXR 256

typedef struct {
    int kind;
    uint64_t piece_ms;  /* time per piece (first piece included) */
    uint64_t pieces;    /* pieces it delivered that were new */
    uint64_t asked;     /* requests it received */
    uint64_t asked_after_ban;
    bool banned;
} sim_prov_t;

typedef struct {
    uint64_t id;
    size_t prov;
    uint64_t next_piece, end_piece;
    uint64_t due;
    bool live;
    bool probe;
    uint64_t offset, length;
} sim_req_t;

typedef struct {
    sto_fetch_t *f;
    uint64_t size;      /* the object's real size */
    uint64_t now;
    sim_prov_t prov[MAXP];
    size_t nprov;
    sim_req_t req[MAXR];
    size_t nreq;
    uint64_t max_live;
    uint8_t *asked_piece; /* times each piece was covered by a request */
    uint64_t sends_before_size;
} sim_t;

static void
sim_init(sim_t *s, uint64_t size, bool size_known, const sto_fetch_limits_t *lim)
{
    memset(s, 0, sizeof *s);
    s->size = size;
    s->f = sto_fetch_new(size_known ? size : UINT64_MAX, lim);
    s->asked_piece = calloc(sto_tree_pieces(size), 1);
    s->now = 1000;
}

static void
sim_free(sim_t *s)
{
    sto_fetch_free(s->f);
    free(s->asked_piece);
}

static size_t
sim_add(sim_t *s, int kind, uint64_t piece_ms)
{
    uint8_t id[STO_FETCH_ID_LEN];
    size_t idx;

    memset(id, 0, sizeof id);
    id[0] = (uint8_t)(s->nprov + 1);
    assert_int_equal(sto_fetch_provider_add(s->f, id, &idx), 0);
    assert_int_equal(idx, s->nprov);
    s->prov[idx].kind = kind;
    s->prov[idx].piece_ms = piece_ms;
    return s->nprov++;
}

static void
sim_bind(sim_t *s, sim_req_t *r)
{
    uint64_t end = r->offset + r->length > s->size ? s->size : r->offset + r->length;
    r->next_piece = r->offset / STO_PIECE_LEN;
    r->end_piece = s->size == 0 ? 1 : (end - 1) / STO_PIECE_LEN + 1;
}

static void
sim_actions(sim_t *s)
{
    sto_fetch_action_t a;
    uint64_t live = 0;

    while (sto_fetch_next(s->f, s->now, &a) == 1) {
        if (a.kind == STO_FETCH_CANCEL) {
            for (size_t i = 0; i < s->nreq; i++)
                if (s->req[i].id == a.req_id)
                    s->req[i].live = false;
            sto_fetch_req_end(s->f, a.req_id, STO_FETCH_CANCELLED, s->now);
            continue;
        }
        assert_int_equal(a.kind, STO_FETCH_SEND);
        assert_true(a.provider < s->nprov);
        assert_true(s->nreq < MAXR);
        sim_prov_t *p = &s->prov[a.provider];
        p->asked++;
        if (p->banned)
            p->asked_after_ban++;
        sim_req_t *r = &s->req[s->nreq++];
        memset(r, 0, sizeof *r);
        r->id = a.req_id;
        r->prov = a.provider;
        r->live = true;
        r->offset = a.offset;
        r->length = a.length;
        r->due = s->now + (p->kind == SILENT ? UINT64_MAX / 2 : p->piece_ms);
        if (sto_fetch_size(s->f) == UINT64_MAX) {
            r->probe = true;
            s->sends_before_size++;
        } else {
            sim_bind(s, r);
            for (uint64_t k = a.first; k < a.first + a.count; k++)
                s->asked_piece[k]++;
        }
    }
    for (size_t i = 0; i < s->nreq; i++)
        live += s->req[i].live;
    if (live > s->max_live)
        s->max_live = live;
}

static void
sim_event(sim_t *s, sim_req_t *r)
{
    sim_prov_t *p = &s->prov[r->prov];

    switch (p->kind) {
    case BUSY:
        r->live = false;
        sto_fetch_req_end(s->f, r->id, STO_FETCH_RETRYABLE, s->now);
        return;
    case NOTFOUND:
        r->live = false;
        sto_fetch_req_end(s->f, r->id, STO_FETCH_NOT_FOUND, s->now);
        return;
    case BAD:
        r->live = false;
        p->banned = true;
        sto_fetch_req_end(s->f, r->id, STO_FETCH_BAD_PIECE, s->now);
        return;
    default:
        break;
    }
    if (r->probe && r->offset >= s->size && (s->size > 0 || r->offset > 0)) {
        /* a probe that starts past the end: the provider answers 416 */
        r->live = false;
        sto_fetch_req_end(s->f, r->id, STO_FETCH_PAST_END, s->now);
        return;
    }
    if (r->probe) {
        /* the first answer tells the size (verified by its last piece) */
        assert_int_equal(sto_fetch_set_size(s->f, s->size), 0);
        sim_bind(s, r);
        r->probe = false;
    }
    if (sto_fetch_piece(s->f, r->id, r->next_piece, s->now) == 1)
        p->pieces++;
    r->next_piece++;
    if (r->next_piece >= r->end_piece) {
        r->live = false;
        sto_fetch_req_end(s->f, r->id, STO_FETCH_OK, s->now);
    } else {
        r->due = s->now + p->piece_ms;
    }
}

/* Run until the fetch is done or stuck; returns the virtual time it took. */
static uint64_t
sim_run(sim_t *s)
{
    uint64_t start = s->now;

    for (int step = 0; step < 200000; step++) {
        uint64_t next = sto_fetch_wake_ms(s->f, s->now);
        sim_req_t *due = NULL;

        sim_actions(s);
        if (sto_fetch_state(s->f) != STO_FETCH_RUNNING)
            break;
        next = sto_fetch_wake_ms(s->f, s->now);
        for (size_t i = 0; i < s->nreq; i++)
            if (s->req[i].live && s->req[i].due <= next) {
                next = s->req[i].due;
                due = &s->req[i];
            }
        assert_true(next != UINT64_MAX);
        if (next > s->now)
            s->now = next;
        if (due != NULL && due->due <= s->now)
            sim_event(s, due);
    }
    sim_actions(s);
    return s->now - start;
}

static void
test_ranges_split_over_providers_in_parallel(void **state)
{
    sim_t s;
    sto_fetch_stats_t st;
    (void)state;

    sim_init(&s, 32 * (uint64_t)STO_PIECE_LEN, true, NULL);
    for (int i = 0; i < 3; i++)
        sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, s.size);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    /* 3 providers x STO_FETCH_PER_PROVIDER each, at most STO_FETCH_INFLIGHT
     * in all, were in flight at once; every provider served */
    assert_int_equal(s.max_live, 3 * STO_FETCH_PER_PROVIDER < STO_FETCH_INFLIGHT
                                     ? 3 * STO_FETCH_PER_PROVIDER
                                     : STO_FETCH_INFLIGHT);
    for (int i = 0; i < 3; i++)
        assert_true(s.prov[i].pieces > 0);
    assert_int_equal(s.prov[0].pieces + s.prov[1].pieces + s.prov[2].pieces, 32);
    sto_fetch_stats(s.f, &st);
    assert_int_equal(st.hedges, 0);
    assert_int_equal(st.sent, 8); /* 32 pieces / 4 per request, none asked twice */
    for (uint64_t i = 0; i < 32; i++)
        assert_int_equal(s.asked_piece[i], 1);
    sim_free(&s);
}

static void
test_only_wanted_ranges_are_requested(void **state)
{
    sim_t s;
    (void)state;

    sim_init(&s, 100 * (uint64_t)STO_PIECE_LEN + 17, true, NULL);
    sim_add(&s, GOOD, 10);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 5 * (uint64_t)STO_PIECE_LEN + 3, 2 * STO_PIECE_LEN); /* pieces 5..7 */
    sto_fetch_want(s.f, s.size - 10, 100);                                  /* piece 100 */
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    for (uint64_t i = 0; i <= 100; i++) {
        bool wanted = (i >= 5 && i <= 7) || i == 100;
        assert_int_equal(s.asked_piece[i] > 0, wanted);
        assert_int_equal(sto_fetch_has(s.f, i), wanted);
    }
    sim_free(&s);
}

static void
test_slow_provider_is_hedged_and_serves_little(void **state)
{
    sim_t s;
    sto_fetch_stats_t st;
    uint64_t took;
    (void)state;

    sim_init(&s, 64 * (uint64_t)STO_PIECE_LEN, true, NULL);
    sim_add(&s, GOOD, 5);    /* fast */
    sim_add(&s, GOOD, 2000); /* a trickle: 2 s per piece */
    sto_fetch_want(s.f, 0, s.size);
    took = sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    sto_fetch_stats(s.f, &st);
    assert_true(st.hedges > 0);
    /* the trickle served under a quarter, and the fetch did not wait for it */
    assert_true(s.prov[1].pieces * 4 < 64);
    assert_true(took < 2000 * 4);
    assert_true(s.prov[0].pieces + s.prov[1].pieces == 64);
    sim_free(&s);
}

static void
test_hedge_waits_for_twice_the_median(void **state)
{
    sim_t s;
    sto_fetch_action_t a;
    sto_fetch_limits_t lim = {.hedge_floor_ms = 50, .per_provider = 1, .inflight = 1};
    (void)state;

    sim_init(&s, 8 * (uint64_t)STO_PIECE_LEN, true, &lim);
    sim_add(&s, GOOD, 100);
    sim_add(&s, GOOD, 100);
    sto_fetch_want(s.f, 0, s.size);
    assert_int_equal(sto_fetch_next(s.f, 1000, &a), 1);
    assert_int_equal(a.kind, STO_FETCH_SEND);
    /* pieces every 100 ms teach the median: 100 ms */
    for (uint64_t k = 0; k < 4; k++)
        assert_int_equal(sto_fetch_piece(s.f, a.req_id, k, 1100 + 100 * k), 1);
    sto_fetch_req_end(s.f, a.req_id, STO_FETCH_OK, 1400);
    assert_int_equal(sto_fetch_next(s.f, 1400, &a), 1);
    assert_false(a.hedge);
    /* no hedge before 2 x 100 ms without progress, one right after */
    assert_int_equal(sto_fetch_wake_ms(s.f, 1400), 1600);
    assert_int_equal(sto_fetch_next(s.f, 1599, &a), 0);
    assert_int_equal(sto_fetch_next(s.f, 1600, &a), 1);
    assert_true(a.hedge);
    assert_int_equal(a.provider, 1);
    assert_int_equal(a.first, 4);
    assert_int_equal(a.count, 4);
    /* one hedge per request */
    assert_int_equal(sto_fetch_next(s.f, 5000, &a), 0);
    sim_free(&s);
}

static void
test_failing_provider_is_retried_elsewhere_then_dropped(void **state)
{
    sim_t s;
    sto_fetch_limits_t lim = {.max_fails = 3};
    (void)state;

    sim_init(&s, 200 * (uint64_t)STO_PIECE_LEN, true, &lim);
    sim_add(&s, BUSY, 5);
    sim_add(&s, GOOD, 20);
    sto_fetch_want(s.f, 0, s.size);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    assert_int_equal(s.prov[1].pieces, 200);
    /* asked again after each backoff until max_fails failures (a round asks
     * per_provider at once), then dropped */
    assert_true(s.prov[0].asked >= 3 && s.prov[0].asked <= 3 + STO_FETCH_PER_PROVIDER - 1);
    assert_int_equal(sto_fetch_providers_usable(s.f), 1);
    sim_free(&s);
}

static void
test_bad_piece_provider_is_never_asked_again(void **state)
{
    sim_t s;
    sto_fetch_stats_t st;
    (void)state;

    sim_init(&s, 40 * (uint64_t)STO_PIECE_LEN, true, NULL);
    sim_add(&s, BAD, 1);
    sim_add(&s, GOOD, 10);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, s.size);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    assert_int_equal(s.prov[0].pieces, 0);
    assert_true(s.prov[0].banned);
    assert_int_equal(s.prov[0].asked_after_ban, 0);
    assert_int_equal(s.prov[1].pieces + s.prov[2].pieces, 40);
    sto_fetch_stats(s.f, &st);
    assert_int_equal(st.bad, 1);
    /* naming it again changes nothing */
    uint8_t id[STO_FETCH_ID_LEN] = {1};
    size_t idx;
    assert_int_equal(sto_fetch_provider_add(s.f, id, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(sto_fetch_providers_usable(s.f), 2);
    sim_free(&s);
}

static void
test_provider_without_the_object_is_dropped(void **state)
{
    sim_t s;
    (void)state;

    sim_init(&s, 10 * (uint64_t)STO_PIECE_LEN, true, NULL);
    sim_add(&s, NOTFOUND, 1);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, s.size);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    assert_true(s.prov[0].asked <= STO_FETCH_PER_PROVIDER); /* only the first round */
    assert_int_equal(sto_fetch_providers_usable(s.f), 1);
    assert_int_equal(s.prov[1].pieces, 10);
    sim_free(&s);
}

static void
test_silent_provider_is_hedged_then_cancelled(void **state)
{
    sim_t s;
    uint64_t took;
    (void)state;

    sim_init(&s, 16 * (uint64_t)STO_PIECE_LEN, true, NULL);
    sim_add(&s, SILENT, 0);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, s.size);
    took = sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    assert_int_equal(s.prov[1].pieces, 16);
    /* it did not wait for the 10 s timeout: the hedge floor moved it along */
    assert_true(took < STO_FETCH_TIMEOUT_MS);
    /* and nothing is left in flight (the silent requests were cancelled) */
    assert_int_equal(sto_fetch_inflight(s.f), 0);
    sim_free(&s);
}

static void
test_only_silent_providers_time_out_and_get_stuck(void **state)
{
    sim_t s;
    sto_fetch_limits_t lim = {.timeout_ms = 1000, .max_fails = 2};
    uint8_t id[STO_FETCH_ID_LEN] = {1};
    (void)state;

    sim_init(&s, 4 * (uint64_t)STO_PIECE_LEN, true, &lim);
    sim_add(&s, SILENT, 0);
    sto_fetch_want(s.f, 0, s.size);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_STUCK);
    assert_int_equal(s.prov[0].asked, 2);
    assert_int_equal(sto_fetch_inflight(s.f), 0);
    /* the service found the provider again: it gets another chance */
    s.prov[0].kind = GOOD;
    s.prov[0].piece_ms = 5;
    assert_int_equal(sto_fetch_provider_add(s.f, id, NULL), 0);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_RUNNING);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    sim_free(&s);
}

static void
test_unknown_size_sends_probes_over_the_first_range_at_once(void **state)
{
    sim_t s;
    sto_fetch_stats_t st;
    (void)state;

    sim_init(&s, 30 * (uint64_t)STO_PIECE_LEN + 5, false, NULL);
    sim_add(&s, GOOD, 10);
    sim_add(&s, GOOD, 10);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, UINT64_MAX); /* the whole object, size unknown */
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    assert_int_equal(sto_fetch_size(s.f), s.size);
    /* STO_FETCH_PROBES spans went out before the size was known, not one */
    assert_int_equal(s.sends_before_size, STO_FETCH_PROBES);
    sto_fetch_stats(s.f, &st);
    assert_int_equal(st.hedges, 0);
    assert_int_equal(st.dup_pieces, 0); /* the probes' spans do not overlap */
    assert_int_equal(st.failures, 0);
    for (uint64_t i = 0; i < 31; i++)
        assert_true(sto_fetch_has(s.f, i));
    assert_int_equal(s.prov[0].pieces + s.prov[1].pieces + s.prov[2].pieces, 31);
    sim_free(&s);
}

static void
test_probes_past_the_end_charge_no_provider(void **state)
{
    sim_t s;
    sto_fetch_stats_t st;
    (void)state;

    /* a small object read with a large "ahead": 3 of the 4 probes start past its end */
    sim_init(&s, STO_PIECE_LEN + 100, false, NULL);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, 2u << 20);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    assert_int_equal(s.sends_before_size, STO_FETCH_PROBES);
    assert_int_equal(s.prov[0].pieces, 2);
    sto_fetch_stats(s.f, &st);
    assert_int_equal(st.failures, 0);
    assert_int_equal(sto_fetch_providers_usable(s.f), 1);
    sim_free(&s);
}

static void
test_a_416_before_the_size_stops_probes_from_there(void **state)
{
    sto_fetch_t *f = sto_fetch_new(UINT64_MAX, NULL);
    sto_fetch_action_t a[STO_FETCH_PROBES + 1];
    uint8_t id[STO_FETCH_ID_LEN] = {1};
    size_t n = 0;
    (void)state;

    assert_int_equal(sto_fetch_provider_add(f, id, NULL), 0);
    sto_fetch_want(f, 0, 1u << 20);
    while (n <= STO_FETCH_PROBES && sto_fetch_next(f, 100, &a[n]) == 1)
        n++;
    assert_int_equal(n, STO_FETCH_PROBES);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].kind, STO_FETCH_SEND);
        assert_int_equal(a[i].offset, i * STO_FETCH_REQ_PIECES * (uint64_t)STO_PIECE_LEN);
    }
    /* the last two answer 416 before the first answers: no one is charged and
     * neither span is asked again (the object ends before them) */
    sto_fetch_req_end(f, a[3].req_id, STO_FETCH_PAST_END, 101);
    sto_fetch_req_end(f, a[2].req_id, STO_FETCH_PAST_END, 101);
    assert_int_equal(sto_fetch_next(f, 102, &a[4]), 0);
    assert_int_equal(sto_fetch_providers_usable(f), 1);
    /* the first answer: 5 pieces; the second probe's span holds piece 4 */
    assert_int_equal(sto_fetch_set_size(f, 5 * (uint64_t)STO_PIECE_LEN), 0);
    for (uint64_t p = 0; p < 4; p++)
        assert_int_equal(sto_fetch_piece(f, a[0].req_id, p, 103), 1);
    sto_fetch_req_end(f, a[0].req_id, STO_FETCH_OK, 103);
    assert_int_equal(sto_fetch_state(f), STO_FETCH_RUNNING);
    assert_int_equal(sto_fetch_piece(f, a[1].req_id, 4, 104), 1);
    sto_fetch_req_end(f, a[1].req_id, STO_FETCH_OK, 104);
    assert_int_equal(sto_fetch_state(f), STO_FETCH_DONE);
    assert_int_equal(sto_fetch_next(f, 105, &a[4]), 0);
    sto_fetch_free(f);
}

static void
test_slow_probe_is_hedged(void **state)
{
    sim_t s;
    (void)state;

    sim_init(&s, 8 * (uint64_t)STO_PIECE_LEN, false, NULL);
    sim_add(&s, SILENT, 0);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, UINT64_MAX);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    /* the probes went out at once; the good provider's answer told the size,
     * and the silent one's span was hedged to it after that */
    assert_int_equal(s.sends_before_size, STO_FETCH_PROBES);
    assert_true(s.prov[1].asked > STO_FETCH_PROBES / 2);
    assert_int_equal(s.prov[1].pieces, 8);
    sim_free(&s);
}

static void
test_later_wants_join_the_running_fetch(void **state)
{
    sim_t s;
    sto_fetch_stats_t st;
    (void)state;

    /* two gets of one object share one scheduler: the second adds its range */
    sim_init(&s, 20 * (uint64_t)STO_PIECE_LEN, true, NULL);
    sim_add(&s, GOOD, 10);
    sto_fetch_want(s.f, 0, 4 * (uint64_t)STO_PIECE_LEN);
    sim_actions(&s);
    sto_fetch_want(s.f, 2 * (uint64_t)STO_PIECE_LEN, 8 * (uint64_t)STO_PIECE_LEN);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    for (uint64_t i = 0; i < 20; i++)
        assert_int_equal(s.asked_piece[i], i < 10 ? 1 : 0);
    sto_fetch_stats(s.f, &st);
    assert_int_equal(st.dup_pieces, 0);
    sim_free(&s);
}

static void
test_pieces_already_held_are_not_requested(void **state)
{
    sim_t s;
    (void)state;

    sim_init(&s, 12 * (uint64_t)STO_PIECE_LEN, true, NULL);
    sim_add(&s, GOOD, 10);
    for (uint64_t i = 0; i < 12; i += 2)
        sto_fetch_have(s.f, i);
    sto_fetch_want(s.f, 0, s.size);
    sim_run(&s);
    assert_int_equal(sto_fetch_state(s.f), STO_FETCH_DONE);
    for (uint64_t i = 0; i < 12; i++)
        assert_int_equal(s.asked_piece[i], i % 2);
    sim_free(&s);
}

static void
test_empty_object_and_bad_inputs(void **state)
{
    sto_fetch_t *f = sto_fetch_new(0, NULL);
    sto_fetch_action_t a;
    uint8_t id[STO_FETCH_ID_LEN] = {0};
    (void)state;

    assert_int_equal(sto_fetch_provider_add(f, id, NULL), 0);
    sto_fetch_want(f, 0, 1);
    assert_int_equal(sto_fetch_next(f, 0, &a), 1);
    assert_int_equal(a.first, 0);
    assert_int_equal(a.count, 1);
    assert_int_equal(a.offset, 0);
    /* a piece outside the request, an unknown request: ignored */
    assert_int_equal(sto_fetch_piece(f, a.req_id, 3, 1), 0);
    assert_int_equal(sto_fetch_piece(f, a.req_id + 7, 0, 1), 0);
    sto_fetch_req_end(f, a.req_id + 7, STO_FETCH_OK, 1);
    assert_int_equal(sto_fetch_piece(f, a.req_id, 0, 1), 1);
    sto_fetch_req_end(f, a.req_id, STO_FETCH_OK, 1);
    assert_int_equal(sto_fetch_state(f), STO_FETCH_DONE);
    assert_int_equal(sto_fetch_set_size(f, 5), RON_EINVAL);
    assert_int_equal(sto_fetch_set_size(f, 0), 0);
    for (int i = 1; i < (int)STO_FETCH_MAX_PROVIDERS; i++) {
        id[0] = (uint8_t)i;
        assert_int_equal(sto_fetch_provider_add(f, id, NULL), 0);
    }
    id[1] = 1;
    assert_int_equal(sto_fetch_provider_add(f, id, NULL), RON_ETOOBIG);
    assert_null(sto_fetch_provider_id(f, STO_FETCH_MAX_PROVIDERS));
    sto_fetch_free(f);
    sto_fetch_free(NULL);
}

static void
test_runs_are_deterministic(void **state)
{
    sto_fetch_stats_t st[2];
    uint64_t took[2], served[2];
    (void)state;

    for (int run = 0; run < 2; run++) {
        sim_t s;
        sim_init(&s, 50 * (uint64_t)STO_PIECE_LEN, true, NULL);
        sim_add(&s, GOOD, 7);
        sim_add(&s, GOOD, 300);
        sim_add(&s, BUSY, 3);
        sto_fetch_want(s.f, 0, s.size);
        took[run] = sim_run(&s);
        sto_fetch_stats(s.f, &st[run]);
        served[run] = s.prov[1].pieces;
        sim_free(&s);
    }
    assert_int_equal(took[0], took[1]);
    assert_int_equal(served[0], served[1]);
    assert_memory_equal(&st[0], &st[1], sizeof st[0]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_split_over_providers_in_parallel),
        cmocka_unit_test(test_only_wanted_ranges_are_requested),
        cmocka_unit_test(test_slow_provider_is_hedged_and_serves_little),
        cmocka_unit_test(test_hedge_waits_for_twice_the_median),
        cmocka_unit_test(test_failing_provider_is_retried_elsewhere_then_dropped),
        cmocka_unit_test(test_bad_piece_provider_is_never_asked_again),
        cmocka_unit_test(test_provider_without_the_object_is_dropped),
        cmocka_unit_test(test_silent_provider_is_hedged_then_cancelled),
        cmocka_unit_test(test_only_silent_providers_time_out_and_get_stuck),
        cmocka_unit_test(test_unknown_size_sends_probes_over_the_first_range_at_once),
        cmocka_unit_test(test_probes_past_the_end_charge_no_provider),
        cmocka_unit_test(test_a_416_before_the_size_stops_probes_from_there),
        cmocka_unit_test(test_slow_probe_is_hedged),
        cmocka_unit_test(test_later_wants_join_the_running_fetch),
        cmocka_unit_test(test_pieces_already_held_are_not_requested),
        cmocka_unit_test(test_empty_object_and_bad_inputs),
        cmocka_unit_test(test_runs_are_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
