/*
 * bench_ryker.c - ryker mailbox throughput: messages/s through
 * ryk_mailbox_send/recv for 1 thread (send a batch, drain it), 1 producer and
 * 1 consumer thread, and 4 producers and 1 consumer, each with and without a
 * ron-metrics registry attached. The anchor is a bare mutex-protected ring
 * with the same capacity (no clock, deadline, size check or counters), so the
 * ratio is the cost of what ryker adds. Messages are preallocated pointers:
 * no malloc in the measured loop. Prints a markdown table of medians.
 * Usage: bench_ryker [runs]
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_metrics.h"
#include "ron_util.h"
#include "ryker.h"

#define CAP 256
#define MSGS 2000000

/* ---- the anchor: a bare bounded ring under one mutex ---- */
typedef struct {
    pthread_mutex_t mu;
    void *slot[CAP];
    size_t head, count;
} bare_t;

static int
bare_send(bare_t *b, void *m)
{
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    if (b->count == CAP)
        rc = RON_EBUSY;
    else
        b->slot[(b->head + b->count++) % CAP] = m;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

static int
bare_recv(bare_t *b, void **m)
{
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    if (b->count == 0) {
        rc = RON_EAGAIN;
    } else {
        *m = b->slot[b->head];
        b->head = (b->head + 1) % CAP;
        b->count--;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

/* ---- one queue interface over both ---- */
typedef struct {
    ryk_mailbox_t *mb; /* NULL: use bare */
    bare_t bare;
    met_registry_t *reg;
} q_t;

static void
noop_free(void *msg, size_t len, void *arg)
{
    (void)msg, (void)len, (void)arg;
}

static void
q_init(q_t *q, int kind) /* 0 bare, 1 ryker, 2 ryker + metrics */
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->bare.mu, NULL);
    if (kind == 0)
        return;
    ryk_opts_t o = {.name = "bench", .free_msg = noop_free};
    ryk_config_default(&o.config);
    o.config.capacity = CAP;
    o.config.deadline_ms = 60000;
    if (kind == 2)
        o.metrics = q->reg = met_registry_new();
    if (ryk_mailbox_new(&o, &q->mb) != 0)
        abort();
}

static void
q_free(q_t *q)
{
    ryk_mailbox_free(q->mb);
    met_registry_free(q->reg);
    pthread_mutex_destroy(&q->bare.mu);
}

static int
q_send(q_t *q, void *m)
{
    return q->mb ? ryk_mailbox_send(q->mb, m, 64) : bare_send(&q->bare, m);
}

static int
q_recv(q_t *q, void **m)
{
    size_t len;
    return q->mb ? ryk_mailbox_recv(q->mb, m, &len) : bare_recv(&q->bare, m);
}

/* Up to BATCH messages under one lock; returns how many (0 when empty). */
#define BATCH 64
static int
q_recv_batch(q_t *q)
{
    if (q->mb != NULL) {
        ryk_msg_t out[BATCH];
        ssize_t n = ryk_mailbox_recv_many(q->mb, out, BATCH);
        return n > 0 ? (int)n : 0;
    }
    int n = 0;
    pthread_mutex_lock(&q->bare.mu);
    while (n < BATCH && q->bare.count > 0) {
        q->bare.head = (q->bare.head + 1) % CAP;
        q->bare.count--;
        n++;
    }
    pthread_mutex_unlock(&q->bare.mu);
    return n;
}

static char payload[64];

/* Single thread: fill CAP, drain CAP. */
static double
run_single(int kind)
{
    q_t q;
    q_init(&q, kind);
    uint64_t t0 = ron_now_ns();
    void *m;
    for (int done = 0; done < MSGS; done += CAP) {
        for (int i = 0; i < CAP; i++)
            if (q_send(&q, payload) != 0)
                abort();
        for (int i = 0; i < CAP; i++)
            if (q_recv(&q, &m) != 0)
                abort();
    }
    double s = (double)(ron_now_ns() - t0) / 1e9;
    q_free(&q);
    return MSGS / s;
}

typedef struct {
    q_t *q;
    int n;
} prod_t;

static void *
producer(void *arg)
{
    prod_t *p = arg;
    for (int i = 0; i < p->n; i++)
        while (q_send(p->q, payload) == RON_EBUSY)
            sched_yield();
    return NULL;
}

/* nprod producer threads, this thread consumes (polling); a negative nprod
 * means -nprod producers and a consumer taking batches. */
static double
run_threads(int kind, int nprod)
{
    bool batch = nprod < 0;
    if (batch)
        nprod = -nprod;
    q_t q;
    q_init(&q, kind);
    pthread_t t[8];
    prod_t p = {&q, MSGS / nprod};
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < nprod; i++)
        pthread_create(&t[i], NULL, producer, &p);
    void *m;
    for (int got = 0; got < p.n * nprod;) {
        int k = batch ? q_recv_batch(&q) : q_recv(&q, &m) == 0;
        if (k > 0)
            got += k;
        else
            sched_yield();
    }
    double s = (double)(ron_now_ns() - t0) / 1e9;
    for (int i = 0; i < nprod; i++)
        pthread_join(t[i], NULL);
    q_free(&q);
    return p.n * nprod / s;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double (*fn)(int, int), int kind, int arg, int runs)
{
    double v[32];
    for (int i = 0; i < runs; i++)
        v[i] = fn(kind, arg);
    qsort(v, (size_t)runs, sizeof v[0], cmp_double);
    return v[runs / 2];
}

static double
single_adapter(int kind, int arg)
{
    (void)arg;
    return run_single(kind);
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 7;
    if (runs < 5)
        runs = 5;
    if (runs > 31)
        runs = 31;
    struct {
        const char *name;
        double (*fn)(int, int);
        int arg;
    } cases[] = {
        {"1 thread, send 256 then recv 256", single_adapter, 0},
        {"1 producer thread, 1 consumer thread", run_threads, 1},
        {"4 producer threads, 1 consumer thread", run_threads, 4},
        {"1 producer thread, 1 consumer taking batches of 64 (recv_many)", run_threads, -1},
        {"4 producer threads, 1 consumer taking batches of 64 (recv_many)", run_threads, -4},
    };
    printf("%d runs each, %d messages a run, capacity %d; medians in million messages/s.\n\n",
           runs, MSGS, CAP);
    printf("| scenario | bare mutex ring | ryker | ryker + metrics | ryker / bare | "
           "ryker + metrics / bare |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double b = median(cases[i].fn, 0, cases[i].arg, runs);
        double r = median(cases[i].fn, 1, cases[i].arg, runs);
        double rm = median(cases[i].fn, 2, cases[i].arg, runs);
        printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", cases[i].name, b / 1e6, r / 1e6,
               rm / 1e6, r / b, rm / b);
    }
    /* The deadline needs the monotonic clock on every send and every recv
     * call: say what one reading costs on this machine. */
    uint64_t sink = 0, t0 = ron_now_ns();
    for (int i = 0; i < 1000000; i++)
        sink += ron_now_ns();
    if (sink == 0) /* keeps the readings from being optimised away */
        return 1;
    printf("\nOne monotonic clock reading (ron_now_ns) costs %.0f ns here; ryker takes one per "
           "send and one per recv or recv_many call, for the per-message deadline.\n",
           (double)(ron_now_ns() - t0) / 1e6);
    return 0;
}
