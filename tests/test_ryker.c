/*
 * test_ryker.c - bounded mailboxes: each outcome (accepted, busy, too large,
 * closed, timeout) and its counters, FIFO order across ring growth and
 * wrap-around, deadlines with a fake clock, freeing what is left, metrics
 * export, the libuv consumer wake-up, and many producers on real threads.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "ron_err.h"
#include "ron_metrics.h"
#include "ryker.h"

static _Atomic uint64_t fake_now = 1000000000u;

static uint64_t
fake_clock(void *arg)
{
    (void)arg;
    return atomic_load(&fake_now);
}

static _Atomic int freed;

static void
counting_free(void *msg, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    atomic_fetch_add(&freed, 1);
    free(msg);
}

static int *
new_int(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

static ryk_mailbox_t *
mailbox(uint32_t capacity, uint32_t max_msg, uint32_t deadline_ms, met_registry_t *reg)
{
    ryk_opts_t o = {.name = "test", .free_msg = counting_free, .clock = fake_clock,
                    .metrics = reg};
    ryk_config_default(&o.config);
    if (capacity)
        o.config.capacity = capacity;
    if (max_msg)
        o.config.max_msg = max_msg;
    if (deadline_ms)
        o.config.deadline_ms = deadline_ms;
    ryk_mailbox_t *mb = NULL;
    assert_int_equal(ryk_mailbox_new(&o, &mb), 0);
    atomic_store(&freed, 0);
    return mb;
}

static void
test_config_defaults_are_the_blueprints_and_ranges_are_checked(void **state)
{
    (void)state;
    ryk_config_t c;
    ryk_config_default(&c);
    assert_int_equal(c.capacity, 256);
    assert_int_equal(c.max_msg, 64 * 1024);
    assert_int_equal(c.deadline_ms, 1000);
    assert_int_equal(ryk_config_validate(&c), 0);

    ryk_config_t bad = c;
    bad.capacity = 0;
    assert_int_equal(ryk_config_validate(&bad), RON_ECONFIG);
    bad.capacity = (1u << 20) + 1;
    assert_int_equal(ryk_config_validate(&bad), RON_ECONFIG);
    bad.capacity = 1u << 20;
    assert_int_equal(ryk_config_validate(&bad), 0);
    bad = c;
    bad.max_msg = 0;
    assert_int_equal(ryk_config_validate(&bad), RON_ECONFIG);
    bad.max_msg = 1024 * 1024 + 1;
    assert_int_equal(ryk_config_validate(&bad), RON_ECONFIG);
    bad.max_msg = 1;
    assert_int_equal(ryk_config_validate(&bad), 0);
    bad = c;
    bad.deadline_ms = 0;
    assert_int_equal(ryk_config_validate(&bad), RON_ECONFIG);
    bad.deadline_ms = 60001;
    assert_int_equal(ryk_config_validate(&bad), RON_ECONFIG);
    bad.deadline_ms = 60000;
    assert_int_equal(ryk_config_validate(&bad), 0);

    ryk_opts_t o = {.name = "x", .config = c};
    ryk_mailbox_t *mb;
    o.config.capacity = 0;
    assert_int_equal(ryk_mailbox_new(&o, &mb), RON_ECONFIG);
    o.config = c;
    o.name = "";
    assert_int_equal(ryk_mailbox_new(&o, &mb), RON_EINVAL);
    o.name = NULL;
    assert_int_equal(ryk_mailbox_new(&o, &mb), RON_EINVAL);
    o.name = "x";
    assert_int_equal(ryk_mailbox_new(&o, &mb), 0);
    ryk_mailbox_free(mb);
}

static void
test_messages_come_out_in_fifo_order_across_growth_and_wraparound(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(100, 0, 0, NULL);
    int next_in = 0, next_out = 0;
    void *msg;
    size_t len;
    /* fill past the initial ring size, then keep 50..100 queued while wrapping */
    for (int round = 0; round < 40; round++) {
        while (ryk_mailbox_len(mb) < 100) {
            assert_int_equal(ryk_mailbox_send(mb, new_int(next_in), sizeof(int)), 0);
            next_in++;
        }
        for (int k = 0; k < 50 + round % 7; k++) {
            assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), 0);
            assert_int_equal(len, sizeof(int));
            assert_int_equal(*(int *)msg, next_out);
            next_out++;
            free(msg);
        }
    }
    while (ryk_mailbox_recv(mb, &msg, &len) == 0) {
        assert_int_equal(*(int *)msg, next_out++);
        free(msg);
    }
    assert_int_equal(next_in, next_out);
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), RON_EAGAIN);
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.accepted, (uint64_t)next_in);
    assert_int_equal(st.delivered, (uint64_t)next_in);
    ryk_mailbox_free(mb);
}

static void
test_full_mailbox_refuses_with_busy_and_caller_keeps_message(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(3, 0, 0, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ryk_mailbox_send(mb, new_int(i), sizeof(int)), 0);
    int *extra = new_int(99);
    assert_int_equal(ryk_mailbox_send(mb, extra, sizeof(int)), RON_EBUSY);
    assert_int_equal(ryk_mailbox_send(mb, extra, sizeof(int)), RON_EBUSY);
    free(extra); /* still ours: ASan would report a double free otherwise */
    void *msg;
    size_t len;
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), 0);
    free(msg);
    assert_int_equal(ryk_mailbox_send(mb, new_int(3), sizeof(int)), 0); /* room again */
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.accepted, 4);
    ryk_mailbox_free(mb);
    assert_int_equal(atomic_load(&freed), 3);
}

static void
test_message_over_max_size_is_refused_with_toobig(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(0, 16, 0, NULL);
    char *big = malloc(17);
    assert_int_equal(ryk_mailbox_send(mb, big, 17), RON_ETOOBIG);
    assert_int_equal(ryk_mailbox_send(mb, big, 16), 0); /* exactly max_msg fits */
    assert_int_equal(ryk_mailbox_send(mb, NULL, 0), 0);  /* empty messages are fine */
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.too_large, 1);
    assert_int_equal(st.accepted, 2);
    ryk_mailbox_free(mb);
    assert_int_equal(atomic_load(&freed), 2);
}

static void
test_closed_mailbox_refuses_sends_drains_queue_then_reports_closed(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(0, 0, 0, NULL);
    assert_int_equal(ryk_mailbox_send(mb, new_int(1), sizeof(int)), 0);
    assert_int_equal(ryk_mailbox_send(mb, new_int(2), sizeof(int)), 0);
    ryk_mailbox_close(mb);
    ryk_mailbox_close(mb); /* idempotent */
    int *late = new_int(3);
    assert_int_equal(ryk_mailbox_send(mb, late, sizeof(int)), RON_ECLOSED);
    free(late);
    void *msg;
    size_t len;
    for (int want = 1; want <= 2; want++) {
        assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), 0);
        assert_int_equal(*(int *)msg, want);
        free(msg);
    }
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), RON_ECLOSED);
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), RON_ECLOSED);
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.closed, 1);
    ryk_mailbox_free(mb);
    assert_int_equal(atomic_load(&freed), 0);
}

static void
test_free_releases_queued_messages_through_the_free_callback(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(0, 0, 0, NULL);
    for (int i = 0; i < 40; i++)
        assert_int_equal(ryk_mailbox_send(mb, new_int(i), sizeof(int)), 0);
    ryk_mailbox_close(mb);
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.freed_at_close, 0);
    ryk_mailbox_free(mb); /* ASan's leak check proves each was freed */
    assert_int_equal(atomic_load(&freed), 40);
    ryk_mailbox_free(NULL);
}

static void
test_expired_message_is_dropped_freed_and_counted_at_dequeue(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(0, 0, 50, NULL);
    void *msg;
    size_t len;
    assert_int_equal(ryk_mailbox_send(mb, new_int(1), sizeof(int)), 0);
    atomic_fetch_add(&fake_now, 49999999u); /* 1 ns before the deadline */
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), 0);
    free(msg);

    assert_int_equal(ryk_mailbox_send(mb, new_int(2), sizeof(int)), 0);
    atomic_fetch_add(&fake_now, 30000000u);
    assert_int_equal(ryk_mailbox_send(mb, new_int(3), sizeof(int)), 0);
    atomic_fetch_add(&fake_now, 20000000u); /* message 2 reaches its deadline, 3 does not */
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), RON_ETIMEOUT);
    assert_int_equal(atomic_load(&freed), 1);
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), 0);
    assert_int_equal(*(int *)msg, 3);
    free(msg);
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), RON_EAGAIN);
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.accepted, 3);
    ryk_mailbox_free(mb);
}

static void
test_recv_many_takes_a_fifo_batch_and_drops_expired_ones(void **state)
{
    (void)state;
    ryk_mailbox_t *mb = mailbox(0, 0, 100, NULL);
    ryk_msg_t out[8];
    assert_int_equal(ryk_mailbox_recv_many(mb, out, 8), RON_EAGAIN);
    assert_int_equal(ryk_mailbox_send(mb, new_int(0), sizeof(int)), 0);
    assert_int_equal(ryk_mailbox_send(mb, new_int(1), sizeof(int)), 0);
    atomic_fetch_add(&fake_now, 60000000u);
    for (int i = 2; i < 7; i++)
        assert_int_equal(ryk_mailbox_send(mb, new_int(i), sizeof(int)), 0);
    atomic_fetch_add(&fake_now, 40000000u); /* 0 and 1 reach their deadline */
    assert_int_equal(ryk_mailbox_recv_many(mb, out, 3), 1); /* took 0, 1, 2 */
    assert_int_equal(*(int *)out[0].msg, 2);
    assert_int_equal(out[0].len, sizeof(int));
    free(out[0].msg);
    assert_int_equal(atomic_load(&freed), 2);
    assert_int_equal(ryk_mailbox_recv_many(mb, out, 8), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(*(int *)out[i].msg, 3 + i);
        free(out[i].msg);
    }
    assert_int_equal(ryk_mailbox_send(mb, new_int(7), sizeof(int)), 0);
    atomic_fetch_add(&fake_now, 100000000u);
    assert_int_equal(ryk_mailbox_recv_many(mb, out, 8), RON_ETIMEOUT);
    ryk_mailbox_close(mb);
    assert_int_equal(ryk_mailbox_recv_many(mb, out, 8), RON_ECLOSED);
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.expired, 3);
    assert_int_equal(st.delivered, 5);
    ryk_mailbox_free(mb);
}

static void
test_each_outcome_is_exported_to_the_metrics_registry(void **state)
{
    (void)state;
    met_registry_t *reg = met_registry_new();
    ryk_mailbox_t *mb = mailbox(2, 8, 10, reg);
    ryk_opts_t o2 = {.name = "other", .clock = fake_clock, .metrics = reg};
    ryk_config_default(&o2.config);
    ryk_mailbox_t *mb2;
    assert_int_equal(ryk_mailbox_new(&o2, &mb2), 0); /* shares the families */
    void *msg;
    size_t len;
    assert_int_equal(ryk_mailbox_send(mb, new_int(1), sizeof(int)), 0);
    assert_int_equal(ryk_mailbox_send(mb, new_int(2), sizeof(int)), 0);
    int *x = new_int(3);
    assert_int_equal(ryk_mailbox_send(mb, x, sizeof(int)), RON_EBUSY);
    assert_int_equal(ryk_mailbox_send(mb, x, 9), RON_ETOOBIG);
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), 0);
    free(msg);
    atomic_fetch_add(&fake_now, 10000000u);
    assert_int_equal(ryk_mailbox_recv(mb, &msg, &len), RON_ETIMEOUT);
    ryk_mailbox_close(mb);
    assert_int_equal(ryk_mailbox_send(mb, x, sizeof(int)), RON_ECLOSED);
    free(x);

    char *text;
    size_t tlen;
    assert_int_equal(met_registry_render(reg, &text, &tlen), 0);
    static const char *const want[] = {
        "ryker_mailbox_accepted_total{mailbox=\"test\"} 2\n",
        "ryker_mailbox_accepted_total{mailbox=\"other\"} 0\n",
        "ryker_mailbox_delivered_total{mailbox=\"test\"} 1\n",
        "ryker_mailbox_depth{mailbox=\"test\"} 0\n",
        "ryker_mailbox_rejected_total{mailbox=\"test\",reason=\"busy\"} 1\n",
        "ryker_mailbox_rejected_total{mailbox=\"test\",reason=\"closed\"} 1\n",
        "ryker_mailbox_rejected_total{mailbox=\"test\",reason=\"timeout\"} 1\n",
        "ryker_mailbox_rejected_total{mailbox=\"test\",reason=\"too_large\"} 1\n",
        "# TYPE ryker_mailbox_rejected_total counter\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (strstr(text, want[i]) == NULL)
            fail_msg("missing %s in:\n%s", want[i], text);
    }
    free(text);
    ryk_mailbox_free(mb);
    ryk_mailbox_free(mb2);
    met_registry_free(reg);
}

static void
test_new_refuses_a_registry_whose_ryker_family_differs(void **state)
{
    (void)state;
    met_registry_t *reg = met_registry_new();
    met_gauge_t *g;
    assert_int_equal(met_gauge_register(reg, "ryker_mailbox_depth", "Someone else's.", &g), 0);
    ryk_opts_t o = {.name = "x", .metrics = reg};
    ryk_config_default(&o.config);
    ryk_mailbox_t *mb = NULL;
    assert_int_equal(ryk_mailbox_new(&o, &mb), -EEXIST);
    assert_null(mb);
    met_registry_free(reg);
}

static void
test_default_free_and_recv_many_cap_handle_large_batches(void **state)
{
    (void)state;
    ryk_opts_t o = {.name = "big"}; /* default clock and free() */
    ryk_config_default(&o.config);
    o.config.capacity = 1000;
    ryk_mailbox_t *mb;
    assert_int_equal(ryk_mailbox_new(&o, &mb), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ryk_mailbox_send(mb, new_int(i), sizeof(int)), 0);
    static ryk_msg_t out[1000];
    assert_int_equal(ryk_mailbox_recv_many(mb, out, 1000), RYK_RECV_MANY_MAX);
    for (unsigned i = 0; i < RYK_RECV_MANY_MAX; i++) {
        assert_int_equal(*(int *)out[i].msg, (int)i);
        free(out[i].msg);
    }
    assert_int_equal(ryk_mailbox_len(mb), 1000 - RYK_RECV_MANY_MAX);
    ryk_mailbox_free(mb); /* the rest go through free(): ASan checks none leak */
}

/* ---- libuv consumer ---- */

typedef struct {
    int received;
    int next;           /* FIFO check */
    int per_call;       /* messages taken per callback, 0 = all */
    int calls;
    bool saw_closed;
    bool timed_out;
} consumer_t;

static int uv_closed;

static void
on_uv_closed(ryk_uv_t *u)
{
    (void)u;
    uv_closed++;
}

static void
consume(ryk_uv_t *u, ryk_mailbox_t *mb, void *arg)
{
    consumer_t *c = arg;
    void *msg;
    size_t len;
    int rc, taken = 0;
    c->calls++;
    while ((c->per_call == 0 || taken < c->per_call) && (rc = ryk_mailbox_recv(mb, &msg, &len)) != RON_EAGAIN) {
        if (rc == RON_ECLOSED) {
            c->saw_closed = true;
            ryk_uv_close(u, on_uv_closed);
            return;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(*(int *)msg, c->next);
        c->next++;
        c->received++;
        taken++;
        free(msg);
    }
}

typedef struct {
    ryk_mailbox_t *mb;
    int n;
} producer_arg_t;

static void *
produce_then_close(void *arg)
{
    producer_arg_t *p = arg;
    for (int i = 0; i < p->n; i++) {
        int *m = new_int(i);
        while (ryk_mailbox_send(p->mb, m, sizeof *m) == RON_EBUSY)
            sched_yield();
        if (i % 100 == 0) {
            struct timespec ts = {0, 200000}; /* let the consumer find it empty sometimes */
            nanosleep(&ts, NULL);
        }
    }
    ryk_mailbox_close(p->mb);
    return NULL;
}

static void
on_guard(uv_timer_t *t)
{
    consumer_t *c = t->data;
    c->timed_out = true;
    uv_stop(t->loop);
}

static void
run_loop_bounded(uv_loop_t *loop, consumer_t *c)
{
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    guard.data = c;
    uv_timer_start(&guard, on_guard, 10000, 0);
    uv_unref((uv_handle_t *)&guard);
    uv_run(loop, UV_RUN_DEFAULT);
    if (c->timed_out)
        fail_msg("consumer not done after 10 s: %d received, %d calls", c->received, c->calls);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_false(c->timed_out);
}

static void
test_uv_consumer_is_woken_by_a_producer_thread_until_close(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ryk_opts_t o = {.name = "uv"};
    ryk_config_default(&o.config);
    o.config.capacity = 32;
    o.config.deadline_ms = 60000;
    ryk_mailbox_t *mb;
    assert_int_equal(ryk_mailbox_new(&o, &mb), 0);
    consumer_t c = {0};
    ryk_uv_t u;
    assert_int_equal(ryk_uv_init(&u, &loop, mb, consume, &c), 0);
    producer_arg_t p = {mb, 2000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, produce_then_close, &p), 0);
    run_loop_bounded(&loop, &c);
    pthread_join(t, NULL);
    assert_int_equal(c.received, 2000);
    assert_true(c.saw_closed);
    assert_int_equal(uv_loop_close(&loop), 0);
    ryk_mailbox_free(mb);
}

static void
test_uv_consumer_taking_one_per_turn_is_called_until_drained(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ryk_opts_t o = {.name = "batch"};
    ryk_config_default(&o.config);
    ryk_mailbox_t *mb;
    assert_int_equal(ryk_mailbox_new(&o, &mb), 0);
    for (int i = 0; i < 10; i++) /* queued before the consumer binds */
        assert_int_equal(ryk_mailbox_send(mb, new_int(i), sizeof(int)), 0);
    ryk_mailbox_close(mb);
    consumer_t c = {.per_call = 1};
    ryk_uv_t u;
    uv_closed = 0;
    assert_int_equal(ryk_uv_init(&u, &loop, mb, consume, &c), 0);
    run_loop_bounded(&loop, &c);
    assert_int_equal(uv_closed, 1);
    assert_int_equal(c.received, 10);
    assert_true(c.saw_closed);
    assert_true(c.calls >= 11);
    assert_int_equal(uv_loop_close(&loop), 0);
    ryk_mailbox_free(mb);
}

/* ---- threads ---- */

#define NPROD 4
#define PER_PROD 20000

typedef struct {
    ryk_mailbox_t *mb;
    int id;
    uint64_t busy;
} mp_arg_t;

static void *
mp_producer(void *arg)
{
    mp_arg_t *p = arg;
    for (int i = 0; i < PER_PROD; i++) {
        int *m = malloc(2 * sizeof *m);
        m[0] = p->id;
        m[1] = i;
        int rc;
        while ((rc = ryk_mailbox_send(p->mb, m, 2 * sizeof *m)) == RON_EBUSY) {
            p->busy++;
            sched_yield();
        }
        assert_int_equal(rc, 0);
    }
    return NULL;
}

static void
test_threads_many_producers_one_consumer_keep_order_and_exact_counts(void **state)
{
    (void)state;
    met_registry_t *reg = met_registry_new();
    ryk_opts_t o = {.name = "mp", .metrics = reg};
    ryk_config_default(&o.config);
    o.config.capacity = 64;
    o.config.deadline_ms = 60000;
    ryk_mailbox_t *mb;
    assert_int_equal(ryk_mailbox_new(&o, &mb), 0);
    pthread_t t[NPROD];
    mp_arg_t args[NPROD];
    for (int i = 0; i < NPROD; i++) {
        args[i] = (mp_arg_t){mb, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, mp_producer, &args[i]), 0);
    }
    int next[NPROD] = {0};
    int got = 0;
    uint64_t spins = 0;
    while (got < NPROD * PER_PROD) {
        void *msg;
        size_t len;
        int rc = ryk_mailbox_recv(mb, &msg, &len);
        if (rc == RON_EAGAIN) {
            assert_true(++spins < 1000000000ull); /* bounded */
            sched_yield();
            continue;
        }
        assert_int_equal(rc, 0);
        int *m = msg;
        assert_int_equal(m[1], next[m[0]]); /* FIFO per producer */
        next[m[0]]++;
        got++;
        free(msg);
    }
    uint64_t busy = 0;
    for (int i = 0; i < NPROD; i++) {
        pthread_join(t[i], NULL);
        busy += args[i].busy;
    }
    ryk_stats_t st;
    ryk_mailbox_stats(mb, &st);
    assert_int_equal(st.accepted, (uint64_t)NPROD * PER_PROD);
    assert_int_equal(st.delivered, (uint64_t)NPROD * PER_PROD);
    assert_int_equal(st.busy, busy);
    assert_int_equal(st.expired, 0);
    char *text;
    size_t tlen;
    assert_int_equal(met_registry_render(reg, &text, &tlen), 0);
    char want[128];
    snprintf(want, sizeof want, "ryker_mailbox_delivered_total{mailbox=\"mp\"} %d\n",
             NPROD * PER_PROD);
    assert_non_null(strstr(text, want));
    free(text);
    ryk_mailbox_free(mb);
    met_registry_free(reg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_are_the_blueprints_and_ranges_are_checked),
        cmocka_unit_test(test_messages_come_out_in_fifo_order_across_growth_and_wraparound),
        cmocka_unit_test(test_full_mailbox_refuses_with_busy_and_caller_keeps_message),
        cmocka_unit_test(test_message_over_max_size_is_refused_with_toobig),
        cmocka_unit_test(test_closed_mailbox_refuses_sends_drains_queue_then_reports_closed),
        cmocka_unit_test(test_free_releases_queued_messages_through_the_free_callback),
        cmocka_unit_test(test_expired_message_is_dropped_freed_and_counted_at_dequeue),
        cmocka_unit_test(test_recv_many_takes_a_fifo_batch_and_drops_expired_ones),
        cmocka_unit_test(test_each_outcome_is_exported_to_the_metrics_registry),
        cmocka_unit_test(test_new_refuses_a_registry_whose_ryker_family_differs),
        cmocka_unit_test(test_default_free_and_recv_many_cap_handle_large_batches),
        cmocka_unit_test(test_uv_consumer_is_woken_by_a_producer_thread_until_close),
        cmocka_unit_test(test_uv_consumer_taking_one_per_turn_is_called_until_drained),
        cmocka_unit_test(test_threads_many_producers_one_consumer_keep_order_and_exact_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
