/*
 * ryker.h - bounded actor mailboxes.
 *
 * A mailbox is a FIFO of messages (pointer, size) with three bounds from the
 * blueprint: capacity (messages), maximum message size (bytes) and a
 * per-message deadline (time from acceptance to dequeue). Producers may run
 * on any thread (worker threads post completions); the consumer is one actor,
 * polling with ryk_mailbox_recv() or woken on its libuv loop by ryk_uv_t.
 *
 * Every outcome is explicit and counted:
 *
 *   send: 0 (accepted; the mailbox now owns the message)
 *         RON_EBUSY     full: capacity messages are queued      (caller keeps msg)
 *         RON_ETOOBIG   len > max_msg                            (caller keeps msg)
 *         RON_ECLOSED   ryk_mailbox_close() was called           (caller keeps msg)
 *   recv: 0 (a message; the caller now owns it)
 *         RON_EAGAIN    empty
 *         RON_ETIMEOUT  the oldest message outlived its deadline: it was
 *                       dropped and freed with the mailbox's free callback
 *         RON_ECLOSED   closed and drained
 *
 * The counters are atomics (ryk_mailbox_stats) and, when a ron-metrics
 * registry is given, also exported as
 *   ryker_mailbox_accepted_total{mailbox}
 *   ryker_mailbox_delivered_total{mailbox}
 *   ryker_mailbox_rejected_total{mailbox,reason}   reason: busy|too_large|closed|timeout
 *   ryker_mailbox_depth{mailbox}                   gauge, messages queued
 *
 * Overflow action: refuse (RON_EBUSY) and let the producer decide: drop,
 * retry later, or push back on its peer. The mailbox never blocks a producer.
 *
 * Threads: ryk_mailbox_send, ryk_mailbox_close, ryk_mailbox_len and
 * ryk_mailbox_stats are safe from any thread; ryk_mailbox_recv from one
 * consumer at a time; ryk_uv_* on the loop thread only.
 */
#ifndef RYKER_H
#define RYKER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "ron_metrics.h"

/* ---- limits and defaults ---- */
#define RYK_DEFAULT_CAPACITY 256u              /* blueprint default */
#define RYK_DEFAULT_MAX_MSG (64u * 1024u)      /* blueprint default: 64 KiB */
#define RYK_DEFAULT_DEADLINE_MS 1000u          /* blueprint default: 1 s */
#define RYK_MAX_CAPACITY (1u << 20)            /* a larger queue hides overload instead of refusing */
#define RYK_MAX_MSG_LIMIT (1024u * 1024u)      /* 1 MiB: the OAP frame ceiling; bigger work streams */
#define RYK_MIN_DEADLINE_MS 1u                 /* below 1 ms every message would expire */
#define RYK_MAX_DEADLINE_MS 60000u             /* 60 s: longer waits belong in a persistent queue */
#define RYK_MAX_NAME 64u                       /* mailbox name bytes (a metrics label) */
#define RYK_RECV_MANY_MAX 256u                 /* messages one ryk_mailbox_recv_many may take */

typedef struct {
    uint32_t capacity;      /* messages; 1..RYK_MAX_CAPACITY */
    uint32_t max_msg;       /* bytes; 1..RYK_MAX_MSG_LIMIT */
    uint32_t deadline_ms;   /* ms from acceptance; RYK_MIN_DEADLINE_MS..RYK_MAX_DEADLINE_MS */
} ryk_config_t;

/* Fill c with the defaults above. */
void ryk_config_default(ryk_config_t *c);

/* Return 0 if every field of c is in range, else RON_ECONFIG. */
int ryk_config_validate(const ryk_config_t *c);

/* Frees a message the mailbox owns (expired, or left when it is freed). */
typedef void (*ryk_free_fn)(void *msg, size_t len, void *arg);
/* Monotonic time in nanoseconds; must be safe to call from any thread. */
typedef uint64_t (*ryk_clock_fn)(void *arg);

typedef struct {
    const char *name;           /* borrowed, copied: metrics label; 1..RYK_MAX_NAME bytes;
                                 * unique per registry (same name = same series) */
    ryk_config_t config;
    ryk_free_fn free_msg;       /* NULL: free(msg) */
    void *free_arg;
    ryk_clock_fn clock;         /* NULL: ron_now_ns (tests inject a fake clock) */
    void *clock_arg;
    met_registry_t *metrics;    /* borrowed, may be NULL; must outlive the mailbox */
} ryk_opts_t;

typedef struct ryk_mailbox ryk_mailbox_t;

/* Counts since creation; each field is read atomically (not all together). */
typedef struct {
    uint64_t accepted;
    uint64_t delivered;
    uint64_t busy;          /* refused: full */
    uint64_t too_large;     /* refused: len > max_msg */
    uint64_t closed;        /* refused: closed */
    uint64_t expired;       /* dropped at dequeue: deadline passed */
    uint64_t freed_at_close; /* still queued when the mailbox was freed */
} ryk_stats_t;

/*
 * Create a mailbox from o (borrowed). Sets *mb_out to a new mailbox (caller
 * frees with ryk_mailbox_free). Returns 0, RON_ECONFIG if o->config is out of
 * range, RON_EINVAL if the name is missing or too long, or a ron-metrics
 * error (-EEXIST) if the ryker families clash with ones already registered.
 */
int ryk_mailbox_new(const ryk_opts_t *o, ryk_mailbox_t **mb_out);

/*
 * Free mb and every message still queued (with the free callback; counted in
 * freed_at_close). NULL is a no-op. No thread may use mb during or after the
 * call; a bound ryk_uv_t must have been closed first.
 */
void ryk_mailbox_free(ryk_mailbox_t *mb);

/*
 * Enqueue msg (len bytes). On 0 the mailbox takes msg; on any error the
 * caller keeps it. Returns 0, RON_EBUSY, RON_ETOOBIG or RON_ECLOSED (see the
 * table at the top). Never blocks. Any thread.
 */
int ryk_mailbox_send(ryk_mailbox_t *mb, void *msg, size_t len);

/*
 * Dequeue the oldest message: sets *msg_out and *len_out (the caller takes
 * msg). Returns 0; RON_EAGAIN if empty; RON_ETIMEOUT if the oldest message
 * was past its deadline (it is freed and counted; call again for the next);
 * RON_ECLOSED once closed and empty. One consumer at a time.
 */
int ryk_mailbox_recv(ryk_mailbox_t *mb, void **msg_out, size_t *len_out);

/* One message handed out by ryk_mailbox_recv_many (the caller takes msg). */
typedef struct {
    void *msg;
    size_t len;
} ryk_msg_t;

/*
 * Dequeue up to n (capped at RYK_RECV_MANY_MAX) of the oldest messages into
 * out[] under one lock and one clock read: the batch form of
 * ryk_mailbox_recv for actors that drain a burst per loop turn. Expired
 * messages among them are freed and counted, as in ryk_mailbox_recv.
 * Returns the number delivered (>= 1); RON_ETIMEOUT if every message taken
 * had expired (call again); RON_EAGAIN if empty; RON_ECLOSED once closed and
 * empty. One consumer at a time.
 */
ssize_t ryk_mailbox_recv_many(ryk_mailbox_t *mb, ryk_msg_t *out, size_t n);

/*
 * Refuse every later send with RON_ECLOSED. Queued messages stay and can
 * still be received (deadlines still apply); then recv returns RON_ECLOSED.
 * Wakes a bound consumer so it sees the close. Idempotent. Any thread.
 */
void ryk_mailbox_close(ryk_mailbox_t *mb);

/* Messages queued now. Any thread. */
size_t ryk_mailbox_len(ryk_mailbox_t *mb);

/* Copy the counters into *out. Any thread. */
void ryk_mailbox_stats(ryk_mailbox_t *mb, ryk_stats_t *out);

/* ---- libuv consumer ---- */

typedef struct ryk_uv ryk_uv_t;

/*
 * Called on the loop thread when mb has work. It should call ryk_mailbox_recv
 * until RON_EAGAIN or RON_ECLOSED, or stop earlier: if messages remain (or
 * recv has not yet returned RON_ECLOSED for a closed mailbox) when it returns,
 * ryk_uv_t calls it again on a later loop turn, so one busy mailbox cannot
 * starve the loop. On RON_ECLOSED the actor usually calls ryk_uv_close.
 */
typedef void (*ryk_uv_cb)(ryk_uv_t *u, ryk_mailbox_t *mb, void *arg);
typedef void (*ryk_uv_close_cb)(ryk_uv_t *u);

/* Embedded in caller memory (STYLE §3); fields are private. */
struct ryk_uv {
    uv_async_t async;       /* producers signal it; coalesces wake-ups */
    ryk_mailbox_t *mb;
    ryk_uv_cb cb;
    void *arg;
    ryk_uv_close_cb close_cb;
};

/*
 * Bind mb (borrowed; must outlive u) to loop: cb runs on the loop whenever a
 * send makes mb non-empty, on close, and at once if mb already holds
 * messages. At most one ryk_uv_t per mailbox. Returns 0 or a libuv error.
 * Loop thread only.
 */
int ryk_uv_init(ryk_uv_t *u, uv_loop_t *loop, ryk_mailbox_t *mb, ryk_uv_cb cb, void *arg);

/*
 * Unbind and close the async handle; after this returns no producer touches
 * u. close_cb (may be NULL) runs on a later loop turn; the memory of u may be
 * reused then. Loop thread only.
 */
void ryk_uv_close(ryk_uv_t *u, ryk_uv_close_cb close_cb);

#endif
