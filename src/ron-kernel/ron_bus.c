/*
 * ron_bus.c - the kernel event bus: a bounded, lossy, multi-producer
 * broadcast ring of ron_kernel_event_t with one cursor per subscriber.
 *
 * Slot protocol (a seqlock per slot; positions p = 0, 1, 2, ... claimed from
 * `head`, slot index p & mask):
 *   seq == 0       never written
 *   seq == 2p + 1  a publisher is writing position p
 *   seq == 2p + 2  the slot holds position p, complete
 * A publisher claims p (fetch_add on head), CASes the slot's seq from an
 * older even value to 2p+1, stores the event words (release), then stores
 * 2p+2 (release). A reader at cursor c loads seq; 2c+2 means "read the words,
 * then reload seq: unchanged means the copy is whole"; below 2c+2 means "not
 * published yet"; above means the ring lapped the reader, which then skips to
 * head - capacity (the oldest position that can still be intact) and counts
 * the skipped positions as dropped. Event words are release/acquire atomics,
 * so a torn read is detected rather than being a data race (TSan-clean, and
 * no atomic_thread_fence, which GCC's TSan does not support). Only the words
 * an event's kind uses are copied (bus_words_for), the rest read as zero.
 *
 * Invariants: publish never allocates and never reads a subscriber's cursor;
 * a subscriber never returns the same position twice or a torn event;
 * delivered + dropped == positions a subscriber moved past; at most one
 * overflow report is published per throttle interval (a CAS on the next
 * allowed report time), and it goes through the same non-blocking publish.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "ron_err.h"
#include "ron_kernel.h"
#include "ron_util.h"

#define BUS_EV_WORDS (sizeof(ron_kernel_event_t) / sizeof(uint64_t))
#define BUS_RECV_TRIES 16 /* lap-and-skip rounds before one recv call returns empty-handed */

typedef struct {
    _Alignas(64) _Atomic uint64_t seq; /* see the slot protocol above */
    _Atomic uint64_t w[BUS_EV_WORDS];  /* the event, as 8-byte words */
} bus_slot_t;

struct ron_bus_sub {
    _Alignas(64) ron_bus_t *bus;
    uint64_t cursor;            /* next position to read; thread of sub only */
    _Atomic uint64_t delivered; /* written by the thread of sub only; read by stats */
    _Atomic uint64_t dropped;   /* idem */
    uint32_t index;             /* in bus->subs and bus->wakes */
    bool in_use;                /* under bus->mu */
};

struct ron_bus {
    /* read-only after ron_bus_new */
    bus_slot_t *ring;
    uint64_t mask; /* capacity - 1 */
    uint32_t capacity;
    uint32_t throttle_ms;
    uint64_t (*now_ms)(void *arg);
    void *now_arg;

    _Alignas(64) _Atomic uint64_t head; /* positions claimed == events published */

    _Alignas(64) _Atomic uint32_t n_wakers; /* subscribers with a wake handle */
    _Atomic uint32_t wake_hi;               /* wakes[] entries at or above are NULL */
    _Atomic uint32_t signalling;            /* publishers inside the wake scan */
    _Atomic(uv_async_t *) wakes[RON_BUS_MAX_SUBS];

    _Alignas(64) _Atomic uint64_t dropped_total; /* bus_overflow_dropped_total */
    _Atomic uint64_t dropped_pending;            /* dropped since the last report */
    _Atomic uint64_t report_next_ms;             /* earliest time of the next report */
    _Atomic uint64_t reports;                    /* overflow reports published */

    pthread_mutex_t mu;         /* guards subs[].in_use, retired_* */
    uint64_t retired_delivered; /* counters of unsubscribed subscribers */
    ron_bus_sub_t subs[RON_BUS_MAX_SUBS];
};

/* Words of the event a kind uses: the rest are zero (the setters zero them),
 * so the bus copies only this prefix. A HEALTH or CONFIG_UPDATED event and
 * its slot's seq then share one cache line, which is what makes the hand-off
 * between cores cheap. Unknown kinds (a torn read) get the whole event. */
_Static_assert(offsetof(ron_kernel_event_t, service) == 16, "header is two words");
_Static_assert(sizeof(((ron_kernel_event_t *)0)->service) % 8 == 0, "service is whole words");
#define BUS_WORDS_HEADER 2u
#define BUS_WORDS_HEALTH                                                                           \
    ((offsetof(ron_kernel_event_t, service) + RON_KERNEL_SERVICE_MAX) / sizeof(uint64_t))

static inline size_t
bus_words_for(uint32_t kind)
{
    switch (kind) {
    case RON_EV_HEALTH:
        return BUS_WORDS_HEALTH;
    case RON_EV_CONFIG_UPDATED:
    case RON_EV_SHUTDOWN:
        return BUS_WORDS_HEADER;
    default:
        return BUS_EV_WORDS;
    }
}

static uint64_t
bus_default_now_ms(void *arg)
{
    (void)arg;
    return ron_now_ms();
}

int
ron_bus_new(const ron_bus_opts_t *opts, ron_bus_t **bus_out)
{
    ron_bus_opts_t o = {0};
    ron_bus_t *bus;

    *bus_out = NULL;
    if (opts != NULL)
        o = *opts;
    if (o.capacity == 0)
        o.capacity = RON_BUS_DEFAULT_CAPACITY;
    if (o.throttle_ms == 0)
        o.throttle_ms = RON_BUS_DEFAULT_THROTTLE_MS;
    if (o.now_ms == NULL)
        o.now_ms = bus_default_now_ms;
    if (o.capacity < RON_BUS_MIN_CAPACITY || o.capacity > RON_BUS_MAX_CAPACITY ||
        (o.capacity & (o.capacity - 1)) != 0)
        return RON_EINVAL;

    bus = aligned_alloc(64, sizeof *bus);
    if (bus == NULL)
        abort(); /* as ron_xmalloc: OOM is not a peer's doing */
    memset(bus, 0, sizeof *bus);
    bus->ring = aligned_alloc(64, (size_t)o.capacity * sizeof(bus_slot_t));
    if (bus->ring == NULL)
        abort();
    memset(bus->ring, 0, (size_t)o.capacity * sizeof(bus_slot_t));
    bus->capacity = o.capacity;
    bus->mask = o.capacity - 1u;
    bus->throttle_ms = o.throttle_ms;
    bus->now_ms = o.now_ms;
    bus->now_arg = o.now_arg;
    pthread_mutex_init(&bus->mu, NULL);
    for (uint32_t i = 0; i < RON_BUS_MAX_SUBS; i++) {
        bus->subs[i].bus = bus;
        bus->subs[i].index = i;
    }
    *bus_out = bus;
    return 0;
}

void
ron_bus_free(ron_bus_t *bus)
{
    if (bus == NULL)
        return;
    pthread_mutex_destroy(&bus->mu);
    free(bus->ring);
    free(bus);
}

uint32_t
ron_bus_capacity(const ron_bus_t *bus)
{
    return bus->capacity;
}

static inline void
bus_cpu_relax(unsigned *spins)
{
    if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield(); /* the other publisher was preempted mid-copy */
    }
}

/* Signal every registered wake handle. The signalling counter lets
 * ron_bus_unsubscribe wait out a publisher that may hold a stale pointer
 * (Dekker: both sides use seq_cst). Its seq_cst fetch_add also orders the
 * caller's slot store before uv_async_send's unsynchronized read of the
 * handle's pending flag: a full barrier there is what keeps a wake-up from
 * being coalesced into a callback that could not yet see the event. */
static void
bus_wake_all(ron_bus_t *bus)
{
    if (atomic_load(&bus->n_wakers) == 0)
        return;
    atomic_fetch_add(&bus->signalling, 1);
    uint32_t hi = atomic_load(&bus->wake_hi);
    for (uint32_t i = 0; i < hi; i++) {
        uv_async_t *a = atomic_load(&bus->wakes[i]);
        if (a != NULL)
            uv_async_send(a); /* thread-safe; coalesces while pending */
    }
    atomic_fetch_sub_explicit(&bus->signalling, 1, memory_order_release);
}

int
ron_bus_publish(ron_bus_t *bus, const ron_kernel_event_t *ev)
{
    uint64_t words[BUS_EV_WORDS];
    unsigned spins = 0;

    if (ron_kernel_event_kind_name(ev->kind) == NULL)
        return RON_EINVAL;
    size_t nw = bus_words_for(ev->kind);
    memcpy(words, ev, nw * sizeof(uint64_t));

    /* seq_cst (free on x86: lock xadd): orders the claim before the wake
     * check, so a subscriber whose cursor starts at or below pos gets a wake. */
    uint64_t pos = atomic_fetch_add(&bus->head, 1);
    bus_slot_t *slot = &bus->ring[pos & bus->mask];
    uint64_t busy = 2 * pos + 1;
    uint64_t s = atomic_load_explicit(&slot->seq, memory_order_relaxed);
    for (;;) {
        if (s >= busy)
            goto wake; /* a later lap owns the slot: position pos is already
                        * overwritten for every reader, who counts it as dropped */
        if (s & 1) {
            bus_cpu_relax(&spins); /* an earlier lap's publisher is mid-copy */
            s = atomic_load_explicit(&slot->seq, memory_order_relaxed);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&slot->seq, &s, busy, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    /* Release: a reader whose load sees any of these words also sees busy. */
    for (size_t i = 0; i < nw; i++)
        atomic_store_explicit(&slot->w[i], words[i], memory_order_release);
    /* Release is enough: which subscribers get a wake-up is decided by the
     * seq_cst claim above (see ron_bus_subscribe), and the seq_cst RMW in
     * bus_wake_all makes this store visible before uv_async_send reads the
     * handle's pending flag (a callback already pending then sees it). */
    atomic_store_explicit(&slot->seq, busy + 1, memory_order_release);
wake:
    bus_wake_all(bus);
    return 0;
}

int
ron_bus_subscribe(ron_bus_t *bus, uv_async_t *wake, ron_bus_sub_t **sub_out)
{
    ron_bus_sub_t *sub = NULL;
    int rc = RON_EBUSY;

    *sub_out = NULL;
    pthread_mutex_lock(&bus->mu);
    for (uint32_t i = 0; i < RON_BUS_MAX_SUBS; i++) {
        if (!bus->subs[i].in_use) {
            sub = &bus->subs[i];
            break;
        }
    }
    if (sub == NULL)
        goto out;
    sub->in_use = true;
    atomic_store_explicit(&sub->delivered, 0, memory_order_relaxed);
    atomic_store_explicit(&sub->dropped, 0, memory_order_relaxed);
    if (wake != NULL) {
        atomic_store(&bus->wakes[sub->index], wake);
        if (atomic_load(&bus->wake_hi) < sub->index + 1)
            atomic_store(&bus->wake_hi, sub->index + 1);
        atomic_fetch_add(&bus->n_wakers, 1);
    }
    /* After the wake registration (all seq_cst): a publisher that claims a
     * position >= cursor then sees n_wakers and the handle, so no event this
     * subscriber can receive goes without a wake-up. */
    sub->cursor = atomic_load(&bus->head);
    *sub_out = sub;
    rc = 0;
out:
    pthread_mutex_unlock(&bus->mu);
    return rc;
}

void
ron_bus_unsubscribe(ron_bus_sub_t *sub)
{
    ron_bus_t *bus;
    unsigned spins = 0;

    if (sub == NULL)
        return;
    bus = sub->bus;
    pthread_mutex_lock(&bus->mu);
    if (atomic_load(&bus->wakes[sub->index]) != NULL) {
        atomic_store(&bus->wakes[sub->index], NULL);
        atomic_fetch_sub(&bus->n_wakers, 1);
        /* A publisher that loaded the pointer before the store above is
         * still inside bus_wake_all; one that enters later sees NULL. */
        while (atomic_load(&bus->signalling) != 0)
            bus_cpu_relax(&spins);
    }
    bus->retired_delivered += atomic_load_explicit(&sub->delivered, memory_order_relaxed);
    sub->in_use = false;
    pthread_mutex_unlock(&bus->mu);
}

/* Publish one throttled SERVICE_CRASHED{"bus"} if the interval allows.
 * Exactly one thread wins the CAS per interval; the event goes through the
 * ordinary publish, which never blocks and never calls back. */
static void
bus_report_overflow(ron_bus_t *bus)
{
    ron_kernel_event_t ev;
    uint64_t now = bus->now_ms(bus->now_arg);
    uint64_t next = atomic_load_explicit(&bus->report_next_ms, memory_order_relaxed);

    if (now < next)
        return;
    if (!atomic_compare_exchange_strong(&bus->report_next_ms, &next, now + bus->throttle_ms))
        return; /* another thread reports this interval */
    uint64_t n = atomic_exchange(&bus->dropped_pending, 0);
    ron_kernel_event_service_crashed(&ev, "bus", NULL);
    snprintf(ev.reason, sizeof ev.reason,
             "overflow: %llu events dropped by lagging subscribers (capacity %u)",
             (unsigned long long)n, bus->capacity);
    atomic_fetch_add_explicit(&bus->reports, 1, memory_order_relaxed);
    ron_bus_publish(bus, &ev);
}

/* The ring lapped sub at cursor c: skip to the oldest position that can
 * still be intact and count what was skipped. */
static void
bus_skip(ron_bus_sub_t *sub, uint64_t c)
{
    ron_bus_t *bus = sub->bus;
    uint64_t h = atomic_load(&bus->head);
    uint64_t newc = h > bus->capacity ? h - bus->capacity : 0;

    if (newc <= c)
        newc = c + 1; /* defensive: the lap proves h >= c + capacity + 1 */
    uint64_t n = newc - c;
    sub->cursor = newc;
    atomic_store_explicit(&sub->dropped,
                          atomic_load_explicit(&sub->dropped, memory_order_relaxed) + n,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&bus->dropped_total, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&bus->dropped_pending, n, memory_order_relaxed);
}

int
ron_bus_recv(ron_bus_sub_t *sub, ron_kernel_event_t *ev_out)
{
    ron_bus_t *bus = sub->bus;
    uint64_t words[BUS_EV_WORDS];
    bool skipped = false;
    int rc = RON_EAGAIN; /* also when a publisher keeps lapping us: come back later */

    for (int tries = 0; tries < BUS_RECV_TRIES; tries++) {
        uint64_t c = sub->cursor;
        bus_slot_t *slot = &bus->ring[c & bus->mask];
        uint64_t want = 2 * c + 2;
        uint64_t s1 = atomic_load(&slot->seq);
        if (s1 < want)
            break; /* not yet published (or being written) */
        if (s1 == want) {
            uint32_t kind;
            words[0] = atomic_load_explicit(&slot->w[0], memory_order_acquire);
            memcpy(&kind, &words[0], sizeof kind); /* kind is the first field */
            size_t nw = bus_words_for(kind);       /* a torn kind is caught below */
            for (size_t i = 1; i < nw; i++)
                words[i] = atomic_load_explicit(&slot->w[i], memory_order_acquire);
            uint64_t s2 = atomic_load_explicit(&slot->seq, memory_order_acquire);
            if (s2 == want) {
                memset((char *)ev_out + nw * sizeof(uint64_t), 0,
                       sizeof *ev_out - nw * sizeof(uint64_t));
                memcpy(ev_out, words, nw * sizeof(uint64_t));
                sub->cursor = c + 1;
                atomic_store_explicit(&sub->delivered,
                                      atomic_load_explicit(&sub->delivered, memory_order_relaxed) +
                                          1,
                                      memory_order_relaxed);
                rc = 0;
                break;
            }
        }
        bus_skip(sub, c); /* lapped before or during the copy */
        skipped = true;
    }
    /* Report after the copy: the report takes a slot, and publishing it
     * before reading would overwrite the very event this reader skipped to. */
    if (skipped)
        bus_report_overflow(bus);
    return rc;
}

uint64_t
ron_bus_sub_dropped(const ron_bus_sub_t *sub)
{
    return atomic_load_explicit(&sub->dropped, memory_order_relaxed);
}

uint64_t
ron_bus_sub_delivered(const ron_bus_sub_t *sub)
{
    return atomic_load_explicit(&sub->delivered, memory_order_relaxed);
}

void
ron_bus_stats(ron_bus_t *bus, ron_bus_stats_t *stats_out)
{
    uint64_t delivered;

    pthread_mutex_lock(&bus->mu);
    delivered = bus->retired_delivered;
    for (uint32_t i = 0; i < RON_BUS_MAX_SUBS; i++)
        if (bus->subs[i].in_use)
            delivered += atomic_load_explicit(&bus->subs[i].delivered, memory_order_relaxed);
    pthread_mutex_unlock(&bus->mu);
    stats_out->published = atomic_load_explicit(&bus->head, memory_order_relaxed);
    stats_out->delivered = delivered;
    stats_out->overflow_dropped = atomic_load_explicit(&bus->dropped_total, memory_order_relaxed);
    stats_out->overflow_reports = atomic_load_explicit(&bus->reports, memory_order_relaxed);
}

/* ---- libuv glue: a subscriber drained on a loop thread ---- */

static void
bus_watch_on_async(uv_async_t *a)
{
    ron_bus_watch_t *w = ron_container_of(a, ron_bus_watch_t, async);
    ron_kernel_event_t ev;
    unsigned budget;

    if (w->sub == NULL)
        return; /* closing */
    budget = RON_BUS_WATCH_BUDGET;
    while (budget-- > 0) {
        if (ron_bus_recv(w->sub, &ev) < 0)
            return;
        w->cb(w, &ev);
        if (w->sub == NULL)
            return; /* cb closed the watch */
    }
    uv_async_send(&w->async); /* more may be waiting: continue on a later turn */
}

int
ron_bus_watch_init(ron_bus_watch_t *w, uv_loop_t *loop, ron_bus_t *bus, ron_bus_watch_cb cb)
{
    int rc;

    w->sub = NULL;
    w->cb = cb;
    w->close_cb = NULL;
    rc = uv_async_init(loop, &w->async, bus_watch_on_async);
    if (rc < 0)
        return rc;
    rc = ron_bus_subscribe(bus, &w->async, &w->sub);
    if (rc < 0) {
        uv_close((uv_handle_t *)&w->async, NULL);
        return rc;
    }
    return 0;
}

static void
bus_watch_on_close(uv_handle_t *h)
{
    ron_bus_watch_t *w = ron_container_of((uv_async_t *)h, ron_bus_watch_t, async);
    if (w->close_cb != NULL)
        w->close_cb(w);
}

void
ron_bus_watch_close(ron_bus_watch_t *w, ron_bus_watch_close_cb close_cb)
{
    ron_bus_sub_t *sub = w->sub;

    w->sub = NULL;
    w->close_cb = close_cb;
    ron_bus_unsubscribe(sub); /* no publisher touches w->async after this */
    uv_close((uv_handle_t *)&w->async, bus_watch_on_close);
}
