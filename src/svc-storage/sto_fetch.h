/*
 * sto_fetch.h - the fetch scheduler of svc-storage's get-or-fetch (DESIGN.md
 * §4, docs/protocol/storage.md "Fetch on miss"): which piece ranges to ask
 * of which provider, when to hedge a slow request, when to move away from a
 * failing provider and when to give up.
 *
 * Sans-I/O: providers, wanted byte ranges, piece arrivals, request results
 * and the current time (milliseconds, any monotonic origin) go in; decisions
 * (send this request, cancel that one) come out of sto_fetch_next(). No
 * clock, socket or thread is touched, so tests drive it with virtual time and
 * the service drives it from its loop (overlay `fetch` requests, a timer at
 * sto_fetch_wake_ms()).
 *
 * Policy. A request covers up to STO_FETCH_REQ_PIECES consecutive wanted
 * pieces that are neither held nor in flight; requests go to the usable
 * provider with the fewest requests in flight (then fewest slow marks, then
 * failures), at most lim.per_provider each and lim.inflight in all, so a
 * range is split over several providers at once. A request without progress
 * for longer than max(lim.hedge_floor_ms, 2 x the median request time seen
 * so far) is hedged once: its missing pieces are asked of another provider
 * too, and whichever delivers a piece first wins it (the loser is cancelled
 * when nothing it covers is still missing; the slow provider gets a slow
 * mark). A request still without progress after lim.timeout_ms is cancelled
 * and counts as a failure. Retryable failures (busy, unavailable, timeout)
 * put the provider aside for lim.backoff_ms and drop it after lim.max_fails;
 * `not found` drops it at once; a bad piece bans it for the rest of the
 * fetch (never asked again). Only the wanted ranges are ever asked for.
 *
 * Until the object's size is known (sto_fetch_set_size), up to
 * STO_FETCH_PROBES probe requests run at once (hedged like any other), over
 * consecutive STO_FETCH_REQ_PIECES-piece spans of the first wanted range:
 * the first answer tells the size, and the others already carry the pieces
 * after it instead of waiting a round trip for it. A probe that starts past
 * the end is answered "range not satisfiable" by the provider; the caller
 * ends it with STO_FETCH_PAST_END, which charges no one, and no probe starts
 * at or after that offset again.
 *
 * Invariants: no request names a banned or dropped provider; no piece
 * outside a wanted range is requested; a request id is never reused; at most
 * lim.inflight requests are in flight.
 * Thread rule: one thread at a time (the service's loop).
 */
#ifndef STO_FETCH_H
#define STO_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ---- */
#define STO_FETCH_REQ_PIECES 4u        /* pieces per request: 256 KiB, overlay fetch's maximum */
#define STO_FETCH_PROBES 4u            /* probes in flight at once while the size is unknown */
#define STO_FETCH_INFLIGHT 8u          /* default requests in flight per fetch */
#define STO_FETCH_PER_PROVIDER 4u      /* default requests in flight per provider */
#define STO_FETCH_MAX_PROVIDERS 32u    /* providers one fetch keeps */
#define STO_FETCH_MAX_WANTS 64u        /* wanted ranges one fetch keeps (more: merged to one span) */
#define STO_FETCH_MAX_FAILS 3u         /* default retryable failures before a provider is dropped */
#define STO_FETCH_HEDGE_FLOOR_MS 300u  /* default: never hedge a request younger than this */
#define STO_FETCH_TIMEOUT_MS 10000u    /* default: cancel a request without progress this long */
#define STO_FETCH_BACKOFF_MS 500u      /* default: a failed provider waits this long */
#define STO_FETCH_SAMPLES 32u          /* request times kept for the median */
#define STO_FETCH_ID_LEN 32u           /* provider (node) id bytes */

typedef struct sto_fetch sto_fetch_t;

typedef struct {
    uint32_t inflight;      /* 0 = STO_FETCH_INFLIGHT */
    uint32_t per_provider;  /* 0 = STO_FETCH_PER_PROVIDER */
    uint32_t max_fails;     /* 0 = STO_FETCH_MAX_FAILS */
    uint32_t hedge_floor_ms; /* 0 = STO_FETCH_HEDGE_FLOOR_MS */
    uint32_t timeout_ms;    /* 0 = STO_FETCH_TIMEOUT_MS */
    uint32_t backoff_ms;    /* 0 = STO_FETCH_BACKOFF_MS */
} sto_fetch_limits_t;

/* How a request ended (sto_fetch_req_end). */
typedef enum {
    STO_FETCH_OK = 0,        /* every piece it covered arrived */
    STO_FETCH_RETRYABLE,     /* busy, unavailable, timeout, link lost: try elsewhere */
    STO_FETCH_NOT_FOUND,     /* the provider lacks the object: drop it */
    STO_FETCH_BAD_PIECE,     /* the provider sent a piece that did not verify: ban it */
    STO_FETCH_CANCELLED,     /* the caller cancelled it (after a STO_FETCH_CANCEL decision) */
    STO_FETCH_PAST_END,      /* its offset is past the object's end (416): no one is charged */
} sto_fetch_end_t;

typedef enum {
    STO_FETCH_SEND = 1,      /* send this request (overlay fetch) to the provider */
    STO_FETCH_CANCEL = 2,    /* stop this request; then report it ended with STO_FETCH_CANCELLED */
} sto_fetch_kind_t;

/* A decision. Byte range [offset, offset + length) is what to ask of the
 * provider; pieces [first, first + count) are the pieces it covers (with
 * the size unknown, a probe: offset/length as wanted, first/count 0). */
typedef struct {
    sto_fetch_kind_t kind;
    uint64_t req_id;         /* > 0, unique within the fetch */
    size_t provider;         /* index from sto_fetch_provider_add */
    uint64_t offset, length;
    uint64_t first, count;
    bool hedge;              /* this request duplicates a slow one */
} sto_fetch_action_t;

/* Overall state (sto_fetch_state). */
typedef enum {
    STO_FETCH_RUNNING = 0,   /* pieces wanted and in flight or askable */
    STO_FETCH_DONE,          /* every wanted piece is held */
    STO_FETCH_STUCK,         /* pieces wanted but no usable provider and nothing in flight */
} sto_fetch_state_t;

/*
 * Return a new scheduler for an object of size bytes (UINT64_MAX: not known
 * yet). lim may be NULL (defaults). Aborts on out of memory.
 */
sto_fetch_t *sto_fetch_new(uint64_t size, const sto_fetch_limits_t *lim);

/* Free f (NULL does nothing). */
void sto_fetch_free(sto_fetch_t *f);

/*
 * Add a provider by node id (STO_FETCH_ID_LEN bytes, copied). Its index goes
 * to *idx_out (may be NULL). Adding a known id returns its index again and
 * changes nothing (a banned provider stays banned; a dropped one gets a new
 * chance only through sto_fetch_provider_add after STO_FETCH_STUCK).
 * Returns 0 or RON_ETOOBIG (STO_FETCH_MAX_PROVIDERS kept).
 */
int sto_fetch_provider_add(sto_fetch_t *f, const uint8_t id[static STO_FETCH_ID_LEN],
                           size_t *idx_out);

/* The id of provider idx (a view valid until sto_fetch_free); NULL when out of range. */
const uint8_t *sto_fetch_provider_id(const sto_fetch_t *f, size_t idx);

/* Usable providers (neither banned nor dropped). */
size_t sto_fetch_providers_usable(const sto_fetch_t *f);

/*
 * Want bytes [offset, offset + length) (length 0 wants nothing). Ranges
 * accumulate; past STO_FETCH_MAX_WANTS they merge into one span.
 */
void sto_fetch_want(sto_fetch_t *f, uint64_t offset, uint64_t length);

/*
 * Learn the object's size (the first answer, verified by its size proof).
 * Wanted ranges are clipped to it. Returns 0, or RON_EINVAL when a different
 * size was set before.
 */
int sto_fetch_set_size(sto_fetch_t *f, uint64_t size);

/* The size (UINT64_MAX while unknown). */
uint64_t sto_fetch_size(const sto_fetch_t *f);

/* Mark piece as held (already in the store, or delivered outside a request). */
void sto_fetch_have(sto_fetch_t *f, uint64_t piece);

/* 1 when piece is held. */
bool sto_fetch_has(const sto_fetch_t *f, uint64_t piece);

/* The number of pieces held (all of them when it equals the piece count). */
uint64_t sto_fetch_held(const sto_fetch_t *f);

/*
 * A verified piece arrived on request req_id. Returns 1 when the piece was
 * new (store and serve it), 0 when already held (a hedge's duplicate: drop
 * it) or the request is unknown.
 */
int sto_fetch_piece(sto_fetch_t *f, uint64_t req_id, uint64_t piece, uint64_t now_ms);

/*
 * Request req_id ended with `end`. Its pieces not delivered go back to the
 * wanted pool; the provider is credited or penalized as the policy above
 * says. Unknown ids are ignored.
 */
void sto_fetch_req_end(sto_fetch_t *f, uint64_t req_id, sto_fetch_end_t end, uint64_t now_ms);

/*
 * The next decision at now_ms: returns 1 with *out filled, or 0 when there is
 * nothing to do until an event or sto_fetch_wake_ms(). Call it until it
 * returns 0 after every event.
 */
int sto_fetch_next(sto_fetch_t *f, uint64_t now_ms, sto_fetch_action_t *out);

/* When to call sto_fetch_next again without an event (a hedge or timeout
 * falls due, a backoff ends); UINT64_MAX when never. */
uint64_t sto_fetch_wake_ms(const sto_fetch_t *f, uint64_t now_ms);

/* Overall state. */
sto_fetch_state_t sto_fetch_state(const sto_fetch_t *f);

/* Requests in flight. */
size_t sto_fetch_inflight(const sto_fetch_t *f);

/* Counters for metrics and tests. */
typedef struct {
    uint64_t sent;        /* requests sent (hedges included) */
    uint64_t hedges;      /* of which hedges */
    uint64_t failures;    /* requests that ended retryable or not found */
    uint64_t bad;         /* providers banned for a bad piece */
    uint64_t dup_pieces;  /* pieces that arrived after another request delivered them */
} sto_fetch_stats_t;

void sto_fetch_stats(const sto_fetch_t *f, sto_fetch_stats_t *out);

#endif
