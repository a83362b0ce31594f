/*
 * ryker.c - bounded mailbox core: a mutex-protected ring of (msg, len,
 * deadline) that grows on demand up to its capacity, with atomic counters
 * mirrored into ron-metrics.
 * Invariants: count <= capacity; a message is owned by exactly one side
 * (producer until send returns 0, mailbox until recv hands it out or frees
 * it); the free callback and the clock run outside the mutex except for the
 * clock, which is read before taking it; the wake-up (uv_async_send) is only
 * issued under the mutex while a ryk_uv_t is bound, so it never outlives it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_util.h"
#include "ryker.h"
#include "ryker_internal.h"

typedef struct {
    void *msg;
    size_t len;
    uint64_t deadline_ns;   /* monotonic; expired when the clock reaches it */
} ryk_slot_t;

enum { R_BUSY, R_TOO_LARGE, R_CLOSED, R_TIMEOUT, R_N };

struct ryk_mailbox {
    char name[RYK_MAX_NAME + 1];
    ryk_config_t cfg;
    ryk_free_fn free_msg;
    void *free_arg;
    ryk_clock_fn clock;
    void *clock_arg;

    pthread_mutex_t mu;         /* guards the fields down to async */
    ryk_slot_t *ring;           /* ringcap slots; grows by doubling */
    size_t ringcap;             /* power of two, < 2 * cfg.capacity */
    size_t head;                /* index of the oldest message */
    size_t count;               /* <= cfg.capacity */
    bool closed;
    bool close_seen;            /* recv has returned RON_ECLOSED */
    uv_async_t *async;          /* bound consumer, or NULL */

    _Atomic uint64_t accepted, delivered, rejected[R_N], freed_at_close;

    met_counter_t *m_accepted;  /* NULL without a registry */
    met_counter_t *m_delivered;
    met_counter_t *m_rejected[R_N];
    met_gauge_t *m_depth;
};

static const char *const reason_names[R_N] = {"busy", "too_large", "closed", "timeout"};

void
ryk_config_default(ryk_config_t *c)
{
    c->capacity = RYK_DEFAULT_CAPACITY;
    c->max_msg = RYK_DEFAULT_MAX_MSG;
    c->deadline_ms = RYK_DEFAULT_DEADLINE_MS;
}

int
ryk_config_validate(const ryk_config_t *c)
{
    if (c->capacity < 1 || c->capacity > RYK_MAX_CAPACITY)
        return RON_ECONFIG;
    if (c->max_msg < 1 || c->max_msg > RYK_MAX_MSG_LIMIT)
        return RON_ECONFIG;
    if (c->deadline_ms < RYK_MIN_DEADLINE_MS || c->deadline_ms > RYK_MAX_DEADLINE_MS)
        return RON_ECONFIG;
    return 0;
}

static uint64_t
default_clock(void *arg)
{
    (void)arg;
    return ron_now_ns();
}

static void
default_free(void *msg, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free(msg);
}

/* Register (or share) the ryker families and take this mailbox's children. */
static int
mailbox_metrics(ryk_mailbox_t *mb, met_registry_t *r)
{
    static const char *const l_mb[] = {"mailbox"};
    static const char *const l_mb_reason[] = {"mailbox", "reason"};
    const met_desc_t accepted = {MET_COUNTER, "ryker_mailbox_accepted_total",
                                 "Messages a ryker mailbox accepted.", l_mb, 1};
    const met_desc_t delivered = {MET_COUNTER, "ryker_mailbox_delivered_total",
                                  "Messages a ryker mailbox handed to its consumer.", l_mb, 1};
    const met_desc_t rejected = {MET_COUNTER, "ryker_mailbox_rejected_total",
                                 "Messages a ryker mailbox refused or dropped, by reason.",
                                 l_mb_reason, 2};
    const met_desc_t depth = {MET_GAUGE, "ryker_mailbox_depth",
                              "Messages queued in a ryker mailbox.", l_mb, 1};
    met_family_t *fa, *fd, *fr, *fq;
    int rc;

    if ((rc = met_family_register(r, &accepted, &fa)) < 0 ||
        (rc = met_family_register(r, &delivered, &fd)) < 0 ||
        (rc = met_family_register(r, &rejected, &fr)) < 0 ||
        (rc = met_family_register(r, &depth, &fq)) < 0)
        return rc;
    const char *v[2] = {mb->name, NULL};
    mb->m_accepted = met_family_counter(fa, v);
    mb->m_delivered = met_family_counter(fd, v);
    mb->m_depth = met_family_gauge(fq, v);
    for (int i = 0; i < R_N; i++) {
        v[1] = reason_names[i];
        mb->m_rejected[i] = met_family_counter(fr, v);
    }
    return 0;
}

int
ryk_mailbox_new(const ryk_opts_t *o, ryk_mailbox_t **mb_out)
{
    ryk_mailbox_t *mb;
    size_t nlen;
    int rc;

    if ((rc = ryk_config_validate(&o->config)) < 0)
        return rc;
    nlen = o->name != NULL ? strnlen(o->name, RYK_MAX_NAME + 1) : 0;
    if (nlen == 0 || nlen > RYK_MAX_NAME)
        return RON_EINVAL;
    mb = ron_xcalloc(1, sizeof *mb);
    memcpy(mb->name, o->name, nlen);
    mb->cfg = o->config;
    mb->free_msg = o->free_msg != NULL ? o->free_msg : default_free;
    mb->free_arg = o->free_arg;
    mb->clock = o->clock != NULL ? o->clock : default_clock;
    mb->clock_arg = o->clock_arg;
    if (o->metrics != NULL && (rc = mailbox_metrics(mb, o->metrics)) < 0) {
        free(mb);
        return rc;
    }
    pthread_mutex_init(&mb->mu, NULL);
    *mb_out = mb;
    return 0;
}

void
ryk_mailbox_free(ryk_mailbox_t *mb)
{
    if (mb == NULL)
        return;
    for (size_t i = 0; i < mb->count; i++) {
        ryk_slot_t *s = &mb->ring[(mb->head + i) & (mb->ringcap - 1)];
        mb->free_msg(s->msg, s->len, mb->free_arg);
        atomic_fetch_add_explicit(&mb->freed_at_close, 1, memory_order_relaxed);
    }
    if (mb->m_depth != NULL)
        met_gauge_set(mb->m_depth, 0);
    free(mb->ring);
    pthread_mutex_destroy(&mb->mu);
    free(mb);
}

static void
count_reject(ryk_mailbox_t *mb, int reason)
{
    atomic_fetch_add_explicit(&mb->rejected[reason], 1, memory_order_relaxed);
    if (mb->m_rejected[reason] != NULL)
        met_counter_inc(mb->m_rejected[reason]);
}

/* Make room for one more message. Mutex held; count < capacity. */
static void
ring_reserve(ryk_mailbox_t *mb)
{
    if (mb->count < mb->ringcap)
        return;
    size_t cap = mb->ringcap ? mb->ringcap * 2 : 16;
    ryk_slot_t *ring = ron_xmalloc(cap * sizeof *ring);
    for (size_t i = 0; i < mb->count; i++)
        ring[i] = mb->ring[(mb->head + i) & (mb->ringcap - 1)];
    free(mb->ring);
    mb->ring = ring;
    mb->ringcap = cap;
    mb->head = 0;
}

int
ryk_mailbox_send(ryk_mailbox_t *mb, void *msg, size_t len)
{
    uint64_t now = mb->clock(mb->clock_arg);
    int rc = 0;

    pthread_mutex_lock(&mb->mu);
    if (mb->closed) {
        rc = RON_ECLOSED;
        goto out;
    }
    if (len > mb->cfg.max_msg) {
        rc = RON_ETOOBIG;
        goto out;
    }
    if (mb->count == mb->cfg.capacity) {
        rc = RON_EBUSY;
        goto out;
    }
    ring_reserve(mb);
    ryk_slot_t *s = &mb->ring[(mb->head + mb->count) & (mb->ringcap - 1)];
    s->msg = msg;
    s->len = len;
    s->deadline_ns = now + (uint64_t)mb->cfg.deadline_ms * 1000000u;
    if (++mb->count == 1 && mb->async != NULL)
        uv_async_send(mb->async);
    atomic_fetch_add_explicit(&mb->accepted, 1, memory_order_relaxed);
    if (mb->m_accepted != NULL) {
        met_counter_inc(mb->m_accepted);
        met_gauge_set(mb->m_depth, (double)mb->count);
    }
out:
    pthread_mutex_unlock(&mb->mu);
    if (rc == RON_ECLOSED)
        count_reject(mb, R_CLOSED);
    else if (rc == RON_ETOOBIG)
        count_reject(mb, R_TOO_LARGE);
    else if (rc == RON_EBUSY)
        count_reject(mb, R_BUSY);
    return rc;
}

/* Take up to n of the oldest slots into out[] (one lock). Returns how many,
 * or RON_EAGAIN / RON_ECLOSED when empty. */
static ssize_t
ring_take(ryk_mailbox_t *mb, ryk_slot_t *out, size_t n)
{
    ssize_t k;

    pthread_mutex_lock(&mb->mu);
    if (mb->count == 0) {
        k = mb->closed ? RON_ECLOSED : RON_EAGAIN;
        mb->close_seen = mb->closed;
        pthread_mutex_unlock(&mb->mu);
        return k;
    }
    k = (ssize_t)RON_MIN(n, mb->count);
    for (ssize_t i = 0; i < k; i++) {
        out[i] = mb->ring[mb->head];
        mb->head = (mb->head + 1) & (mb->ringcap - 1);
    }
    mb->count -= (size_t)k;
    if (mb->m_depth != NULL)
        met_gauge_set(mb->m_depth, (double)mb->count);
    pthread_mutex_unlock(&mb->mu);
    return k;
}

/* Take up to n messages through slots[n], free and count the expired ones,
 * hand out the rest. */
static ssize_t
recv_into(ryk_mailbox_t *mb, ryk_msg_t *out, size_t n, ryk_slot_t *slots)
{
    uint64_t now = mb->clock(mb->clock_arg);
    size_t delivered = 0, expired = 0;
    ssize_t k = ring_take(mb, slots, n);
    if (k < 0)
        return k;
    for (ssize_t i = 0; i < k; i++) {
        if (now >= slots[i].deadline_ns) {
            mb->free_msg(slots[i].msg, slots[i].len, mb->free_arg);
            expired++;
            continue;
        }
        out[delivered].msg = slots[i].msg;
        out[delivered].len = slots[i].len;
        delivered++;
    }
    if (expired > 0) {
        atomic_fetch_add_explicit(&mb->rejected[R_TIMEOUT], expired, memory_order_relaxed);
        if (mb->m_rejected[R_TIMEOUT] != NULL)
            met_counter_add(mb->m_rejected[R_TIMEOUT], expired);
    }
    if (delivered == 0)
        return RON_ETIMEOUT;
    atomic_fetch_add_explicit(&mb->delivered, delivered, memory_order_relaxed);
    if (mb->m_delivered != NULL)
        met_counter_add(mb->m_delivered, delivered);
    return (ssize_t)delivered;
}

int
ryk_mailbox_recv(ryk_mailbox_t *mb, void **msg_out, size_t *len_out)
{
    ryk_slot_t slot;
    ryk_msg_t m;
    ssize_t n = recv_into(mb, &m, 1, &slot);
    if (n < 0)
        return (int)n;
    *msg_out = m.msg;
    *len_out = m.len;
    return 0;
}

ssize_t
ryk_mailbox_recv_many(ryk_mailbox_t *mb, ryk_msg_t *out, size_t n)
{
    ryk_slot_t slots[RYK_RECV_MANY_MAX]; /* 6 KiB: bounded by the cap below */
    return recv_into(mb, out, RON_MIN(n, (size_t)RYK_RECV_MANY_MAX), slots);
}

void
ryk_mailbox_close(ryk_mailbox_t *mb)
{
    pthread_mutex_lock(&mb->mu);
    if (!mb->closed && mb->async != NULL)
        uv_async_send(mb->async);
    mb->closed = true;
    pthread_mutex_unlock(&mb->mu);
}

size_t
ryk_mailbox_len(ryk_mailbox_t *mb)
{
    pthread_mutex_lock(&mb->mu);
    size_t n = mb->count;
    pthread_mutex_unlock(&mb->mu);
    return n;
}

void
ryk_mailbox_stats(ryk_mailbox_t *mb, ryk_stats_t *out)
{
    out->accepted = atomic_load_explicit(&mb->accepted, memory_order_relaxed);
    out->delivered = atomic_load_explicit(&mb->delivered, memory_order_relaxed);
    out->busy = atomic_load_explicit(&mb->rejected[R_BUSY], memory_order_relaxed);
    out->too_large = atomic_load_explicit(&mb->rejected[R_TOO_LARGE], memory_order_relaxed);
    out->closed = atomic_load_explicit(&mb->rejected[R_CLOSED], memory_order_relaxed);
    out->expired = atomic_load_explicit(&mb->rejected[R_TIMEOUT], memory_order_relaxed);
    out->freed_at_close = atomic_load_explicit(&mb->freed_at_close, memory_order_relaxed);
}

/* ---- for ryker_uv.c ---- */

bool
ryk__mailbox_has_work(ryk_mailbox_t *mb)
{
    pthread_mutex_lock(&mb->mu);
    bool work = mb->count > 0 || (mb->closed && !mb->close_seen);
    pthread_mutex_unlock(&mb->mu);
    return work;
}

/* Bind or unbind (async NULL) the consumer's wake-up; returns true if the
 * consumer has work now (messages queued, or closed). */
bool
ryk__mailbox_bind(ryk_mailbox_t *mb, uv_async_t *async)
{
    pthread_mutex_lock(&mb->mu);
    mb->async = async;
    bool work = mb->count > 0 || (mb->closed && !mb->close_seen);
    pthread_mutex_unlock(&mb->mu);
    return work;
}
