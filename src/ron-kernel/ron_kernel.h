/*
 * ron_kernel.h - the frozen kernel API of ron-kernel (DESIGN.md §3), in C.
 *
 * Sections (each engineer appends theirs; keep one section per concept):
 *   - limits
 *   - kernel events: ron_kernel_event_t, its setters and its JSON form
 *   - event bus: ron_bus_t, bounded lossy broadcast of kernel events
 *   - restart policy: ron_restart_policy_t, the supervisor's sans-I/O core
 *
 * Invariants: publishing an event never allocates, never blocks and never
 * waits on a subscriber; a subscriber that falls behind loses the oldest
 * events and every lost event is counted in bus_overflow_dropped_total.
 */
#ifndef RON_KERNEL_H
#define RON_KERNEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* ======================================================================
 * Limits
 * ====================================================================== */

#define RON_KERNEL_SERVICE_MAX 40u      /* service name bytes incl. NUL: canon names are < 20 */
#define RON_KERNEL_REASON_MAX 176u      /* crash reason bytes incl. NUL: "signal 9 (Killed)" */
#define RON_KERNEL_EVENT_JSON_MAX 1024u /* longest JSON decode accepts (peer input) */
#define RON_BUS_DEFAULT_CAPACITY 4096u  /* blueprint default; ~1 MiB of slots */
#define RON_BUS_MIN_CAPACITY 2u         /* a ring of one slot could hold no history at all */
#define RON_BUS_MAX_CAPACITY (1u << 20) /* 1 Mi slots = 256 MiB: a bound on a config value */
#define RON_BUS_MAX_SUBS 64u            /* one per loop/service in a node; the wake scan is O(n) */
#define RON_BUS_DEFAULT_THROTTLE_MS 1000u /* at most one overflow SERVICE_CRASHED per interval */
#define RON_BUS_WATCH_BUDGET 256u /* events a loop subscriber handles per loop turn: fairness */

/* ======================================================================
 * Kernel events
 * ====================================================================== */

typedef enum {
    RON_EV_HEALTH = 1,          /* {service, ok} */
    RON_EV_CONFIG_UPDATED = 2,  /* {version} */
    RON_EV_SERVICE_CRASHED = 3, /* {service, reason} */
    RON_EV_SHUTDOWN = 4,        /* {} */
} ron_kernel_event_kind_t;

/*
 * A kernel event: a fixed-size value with inline, always NUL-terminated
 * strings, so copying it never allocates. Build one with the setters below,
 * which zero the whole struct first (no stale bytes travel) and truncate
 * strings on a UTF-8 character boundary. Fields not used by a kind are zero.
 * The size is a multiple of 8 (the bus copies it word by word).
 */
typedef struct {
    uint32_t kind;                        /* ron_kernel_event_kind_t */
    uint32_t ok;                          /* HEALTH: 1 healthy, 0 not */
    uint64_t version;                     /* CONFIG_UPDATED: config snapshot counter */
    char service[RON_KERNEL_SERVICE_MAX]; /* HEALTH, SERVICE_CRASHED; valid UTF-8 */
    char reason[RON_KERNEL_REASON_MAX];   /* SERVICE_CRASHED; valid UTF-8 */
} ron_kernel_event_t;

/* Set ev to HEALTH{service, ok}. service is copied (truncated to fit). Any thread. */
void ron_kernel_event_health(ron_kernel_event_t *ev, const char *service, bool ok);

/* Set ev to CONFIG_UPDATED{version}. Any thread. */
void ron_kernel_event_config_updated(ron_kernel_event_t *ev, uint64_t version);

/* Set ev to SERVICE_CRASHED{service, reason}; both copied (truncated to fit). Any thread. */
void ron_kernel_event_service_crashed(ron_kernel_event_t *ev, const char *service,
                                      const char *reason);

/* Set ev to SHUTDOWN. Any thread. */
void ron_kernel_event_shutdown(ron_kernel_event_t *ev);

/*
 * Copy the C string src into dst (cap bytes, cap >= 1), always NUL-terminated,
 * cut on a UTF-8 character boundary and with each invalid UTF-8 byte replaced
 * by '?', so the result is always valid UTF-8 (JSON-encodable). Returns the
 * length written. Never allocates.
 */
size_t ron_kernel_str_copy(char *dst, size_t cap, const char *src);

/* Name of a kind as it appears in JSON ("HEALTH", ...), or NULL if unknown. */
const char *ron_kernel_event_kind_name(uint32_t kind);

/* True when both events have the same kind and the same fields for that kind. */
bool ron_kernel_event_equal(const ron_kernel_event_t *a, const ron_kernel_event_t *b);

/*
 * JSON form, used when events travel between processes over ron-bus:
 *   {"kind":"HEALTH","service":"svc-storage","ok":true}
 *   {"kind":"CONFIG_UPDATED","version":"18446744073709551615"}   (u64 as decimal string)
 *   {"kind":"SERVICE_CRASHED","service":"svc-dht","reason":"signal 9"}
 *   {"kind":"SHUTDOWN"}
 * Keys appear in that order (canonical). Decoding is strict: unknown keys,
 * missing keys, duplicate keys, wrong types, strings that do not fit the
 * inline limits, and versions that are not canonical decimal are errors.
 */

/*
 * Encode ev as compact JSON into out (cap bytes) with a terminating NUL.
 * Returns the length (excluding the NUL), RON_ETOOBIG if out is too small,
 * or RON_EINVAL if ev has an unknown kind or a string that is not valid UTF-8.
 * Allocates (jansson) but only transiently. Any thread.
 */
int ron_kernel_event_encode(const ron_kernel_event_t *ev, char *out, size_t cap);

/*
 * Decode len bytes of JSON into ev_out (zeroed first). Returns 0, RON_ETOOBIG
 * if len > RON_KERNEL_EVENT_JSON_MAX, RON_EJSON if the text is not JSON, or
 * RON_EPROTO if it is JSON but not a valid event (see the rules above). Any thread.
 */
int ron_kernel_event_decode(const char *json, size_t len, ron_kernel_event_t *ev_out);

/* ======================================================================
 * Event bus
 *
 * A bounded lossy broadcast ring. Each slot carries a sequence number
 * (seqlock): publishers claim a position with one atomic add, write the
 * slot and publish it with a release store; each subscriber keeps its own
 * cursor. The ring never waits for a subscriber: a subscriber that fell
 * more than `capacity` events behind skips to the oldest event still in
 * the ring, and the number skipped is added to overflow_dropped. At most
 * one SERVICE_CRASHED{service:"bus", reason:"overflow: N events dropped ..."}
 * is published per throttle interval; it is published by the subscriber
 * that noticed the overflow, from ron_bus_recv(), through the ordinary
 * non-blocking publish path, so it never recurses and never blocks.
 *
 * Threads: any number of threads may publish concurrently (multi-producer).
 * A publisher can wait only in one case: when another publisher was
 * preempted in the middle of writing the very slot it needs, which requires
 * the ring to wrap a full lap during that preemption; it never waits on a
 * subscriber. Subscribers read positions in order, so a publisher preempted
 * between claiming a position and writing it delays subscribers (never
 * other publishers) until it resumes or the ring laps that position.
 * Each subscriber is used by one thread at a time; different
 * subscribers may run on different threads. Subscribe and unsubscribe take
 * a mutex (not on the publish path).
 * ====================================================================== */

typedef struct ron_bus ron_bus_t;
typedef struct ron_bus_sub ron_bus_sub_t;

typedef struct {
    uint32_t capacity;    /* slots; a power of two in [MIN, MAX]; 0 = default 4096 */
    uint32_t throttle_ms; /* overflow report interval; 0 = default 1000 */
    /* Clock for the throttle, in ms; NULL = ron_now_ms(). Tests pass a fake
     * clock. Called from whichever thread calls ron_bus_recv(). */
    uint64_t (*now_ms)(void *arg);
    void *now_arg;
} ron_bus_opts_t;

typedef struct {
    uint64_t published;        /* events published (claimed positions) */
    uint64_t delivered;        /* events handed to subscribers, summed over subscribers */
    uint64_t overflow_dropped; /* bus_overflow_dropped_total: events subscribers lost */
    uint64_t overflow_reports; /* throttled SERVICE_CRASHED{"bus"} events published */
} ron_bus_stats_t;

/*
 * Create a bus. opts may be NULL (defaults). Returns 0 and *bus_out (new;
 * free with ron_bus_free), or RON_EINVAL if the capacity is not a power of
 * two within the limits. Any thread.
 */
int ron_bus_new(const ron_bus_opts_t *opts, ron_bus_t **bus_out);

/* Free the bus. All subscribers must be unsubscribed and no thread may still
 * use it. ron_bus_free(NULL) does nothing. */
void ron_bus_free(ron_bus_t *bus);

/* Capacity in slots. Any thread. */
uint32_t ron_bus_capacity(const ron_bus_t *bus);

/*
 * Publish a copy of ev to every current subscriber: the fields its kind uses
 * (kind, ok, version always; service for HEALTH; service and reason for
 * SERVICE_CRASHED); subscribers get the other fields zeroed, as the setters
 * leave them. Never allocates, never
 * blocks on a subscriber, never calls back into the caller. When a
 * subscriber registered a wake handle, uv_async_send() is called on it.
 * Returns 0, or RON_EINVAL if ev->kind is unknown (nothing is published).
 * Any thread.
 */
int ron_bus_publish(ron_bus_t *bus, const ron_kernel_event_t *ev);

/*
 * Add a subscriber that sees events published after this call. wake, when
 * not NULL, is an initialized uv_async_t (borrowed: it must stay open until
 * ron_bus_unsubscribe returns) that the bus signals after each publish, so a
 * loop can drain the subscriber (until RON_EAGAIN) from the async callback;
 * every event the subscriber can receive is followed by a signal. Returns 0 and
 * *sub_out (owned by the bus), or RON_EBUSY if RON_BUS_MAX_SUBS are taken.
 * Any thread.
 */
int ron_bus_subscribe(ron_bus_t *bus, uv_async_t *wake, ron_bus_sub_t **sub_out);

/*
 * Remove a subscriber; its counters are folded into the bus totals. When it
 * returns, the bus will not touch sub or its wake handle again, so the
 * caller may uv_close() the handle. It may spin briefly while a publisher
 * finishes signalling. Do not call concurrently with ron_bus_recv on sub.
 */
void ron_bus_unsubscribe(ron_bus_sub_t *sub);

/*
 * Take the next event for sub into ev_out. Returns 0, or RON_EAGAIN when the
 * subscriber has seen everything published so far. When the subscriber fell
 * more than a ring behind, it first skips to the oldest event still held,
 * counts the skipped events as dropped and, throttled, publishes one
 * SERVICE_CRASHED{"bus", "overflow: ..."}. Never blocks. Thread of sub.
 */
int ron_bus_recv(ron_bus_sub_t *sub, ron_kernel_event_t *ev_out);

/* Events this subscriber lost to overflow / received. Any thread. */
uint64_t ron_bus_sub_dropped(const ron_bus_sub_t *sub);
uint64_t ron_bus_sub_delivered(const ron_bus_sub_t *sub);

/* Read the bus counters (each read atomically; the set is not a snapshot).
 * Any thread. */
void ron_bus_stats(ron_bus_t *bus, ron_bus_stats_t *stats_out);

/*
 * Loop subscriber (libuv glue): a subscriber drained on a loop thread from a
 * uv_async_t the bus signals, calling cb once per event, in order. Embedded
 * in caller memory: ron_bus_watch_init / ron_bus_watch_close, as uv_close.
 * One loop turn delivers at most RON_BUS_WATCH_BUDGET events, then yields to
 * the loop and continues on a later turn, so a busy bus cannot starve it.
 */
typedef struct ron_bus_watch ron_bus_watch_t;
typedef void (*ron_bus_watch_cb)(ron_bus_watch_t *w, const ron_kernel_event_t *ev);
typedef void (*ron_bus_watch_close_cb)(ron_bus_watch_t *w);

struct ron_bus_watch {
    uv_async_t async;   /* signalled by publishers; private */
    ron_bus_sub_t *sub; /* NULL once closing */
    ron_bus_watch_cb cb;
    ron_bus_watch_close_cb close_cb;
    void *data; /* for the caller */
};

/*
 * Subscribe w to bus and start delivering events published from now on to
 * cb on loop's thread (cb may call ron_bus_watch_close). Borrows bus and
 * loop. Returns 0, RON_EBUSY (no subscriber slot) or a libuv error; on
 * RON_EBUSY the handle is already closing, so w must stay valid until the
 * loop has run once more. Loop thread only.
 */
int ron_bus_watch_init(ron_bus_watch_t *w, uv_loop_t *loop, ron_bus_t *bus, ron_bus_watch_cb cb);

/*
 * Stop delivering (no cb after this returns), unsubscribe, and close the
 * handle; close_cb (may be NULL) runs on a later loop turn, after which w's
 * memory may be reused. Loop thread only.
 */
void ron_bus_watch_close(ron_bus_watch_t *w, ron_bus_watch_close_cb close_cb);

/* ======================================================================
 * Restart policy (the supervisor's sans-I/O core)
 *
 * One policy per supervised child. Pure: no I/O, no clock of its own; every
 * call takes now_ms (monotonic ms), so tests drive it with fake time.
 *
 * Rules (issue 2; mirrored step by step by models/supervisor.pml):
 *   - backoff: the n-th consecutive crash (n = 1, 2, ...) since the last
 *     reset has the nominal delay min(base_ms * 2^(n-1), cap_ms):
 *     100 ms, 200 ms, 400 ms, ... 30 s.
 *   - jitter: the delay is uniform in [nominal - nominal/4, nominal], so it
 *     never exceeds the nominal (the first restart lands in 75..100 ms,
 *     which keeps kill -> healthy within the 150 ms p99 goal) and restarts
 *     of children that crashed together spread over a quarter of the delay.
 *   - reset: once the child has been healthy for healthy_reset_ms (10 s)
 *     without crashing, the backoff starts again at base_ms. "Healthy" is
 *     measured from the first ron_restart_on_healthy() after a (re)start.
 *   - quarantine: the quarantine_crashes-th (6th) crash within a sliding
 *     window_ms (60 s) window, i.e. a crash at t with 5 earlier crashes at
 *     times > t - 60 s, quarantines the child: no restart until release.
 *   - release: clears the crash history and the backoff; the supervisor
 *     starts the child at once.
 * ====================================================================== */

#define RON_RESTART_BASE_MS 100u  /* first backoff; supervisor goal kill->healthy <= 150 ms */
#define RON_RESTART_CAP_MS 30000u /* longest backoff */
#define RON_RESTART_HEALTHY_RESET_MS 10000u /* healthy running that resets the backoff */
#define RON_RESTART_WINDOW_MS 60000u        /* sliding window for counting crashes */
#define RON_RESTART_QUARANTINE_CRASHES 6u   /* crash count in the window that quarantines */
#define RON_RESTART_MAX_QUARANTINE 64u      /* bound on quarantine_crashes (history array size) */

typedef struct {
    uint32_t base_ms;            /* 0 = RON_RESTART_BASE_MS */
    uint32_t cap_ms;             /* 0 = RON_RESTART_CAP_MS; >= base_ms */
    uint32_t healthy_reset_ms;   /* 0 = RON_RESTART_HEALTHY_RESET_MS */
    uint32_t window_ms;          /* 0 = RON_RESTART_WINDOW_MS */
    uint32_t quarantine_crashes; /* 0 = RON_RESTART_QUARANTINE_CRASHES; 1..MAX_QUARANTINE */
} ron_restart_config_t;

typedef enum {
    RON_RESTART_AFTER = 1,      /* restart after *delay_ms_out */
    RON_RESTART_QUARANTINE = 2, /* do not restart until ron_restart_release() */
} ron_restart_action_t;

/* Embedded in caller memory; fields are private to ron_restart.c. */
typedef struct {
    ron_restart_config_t cfg; /* defaults filled in */
    uint32_t streak;          /* crashes since the last backoff reset */
    bool healthy;             /* healthy_since_ms is set */
    bool quarantined;
    uint64_t healthy_since_ms; /* first healthy report since the last (re)start */
    uint64_t crash_ms[RON_RESTART_MAX_QUARANTINE - 1]; /* ring of the latest crash times */
    uint32_t crash_n;    /* entries in crash_ms, <= quarantine_crashes - 1 */
    uint32_t crash_head; /* next write index */
    uint64_t rng;        /* xorshift64 state for jitter; never 0 */
} ron_restart_policy_t;

/*
 * Initialize p. cfg may be NULL (defaults); zero fields take defaults.
 * seed feeds the jitter PRNG (0 = seed from the OS). Returns 0 or RON_EINVAL
 * (cap < base, quarantine_crashes > RON_RESTART_MAX_QUARANTINE).
 */
int ron_restart_init(ron_restart_policy_t *p, const ron_restart_config_t *cfg, uint64_t seed);

/*
 * Record a crash at now_ms and decide. Returns RON_RESTART_AFTER with
 * *delay_ms_out set (jittered, see the rules), or RON_RESTART_QUARANTINE
 * (*delay_ms_out = 0) at the quarantine_crashes-th crash in the window, and
 * for any crash reported while quarantined.
 */
ron_restart_action_t ron_restart_on_crash(ron_restart_policy_t *p, uint64_t now_ms,
                                          uint64_t *delay_ms_out);

/* Report that the child is healthy at now_ms (call on every healthy
 * heartbeat). Resets the backoff after healthy_reset_ms of healthy running. */
void ron_restart_on_healthy(ron_restart_policy_t *p, uint64_t now_ms);

/* Leave quarantine (`ron release`): clear crash history and backoff. */
void ron_restart_release(ron_restart_policy_t *p);

/* True while quarantined. */
bool ron_restart_is_quarantined(const ron_restart_policy_t *p);

/* Crashes since the last backoff reset (the next crash is streak + 1). */
uint32_t ron_restart_streak(const ron_restart_policy_t *p);

#endif
