/*
 * sto_service_internal.h - shared by the files of the storage service only:
 * sto_service.c (requests, answers, the put table, worker jobs, lifecycle),
 * sto_service_fetch.c (fetch on miss: the provider lookup, overlay
 * fetches, the partial object, provider records), sto_service_hold.c (gets
 * answered from a fetch's verified pieces in memory) and
 * sto_service_announce.c (a put's announcement). Not a public header: the
 * service's API is sto_service.h.
 * Invariants: everything here is loop-thread state except a job_t while
 * its uv_work_t runs (the worker touches only that job; an OP_F_STORE job's
 * data and recs are also read, never written, by the loop while it runs:
 * sto_service_hold.c) and the eviction queue (evmu).
 */
#ifndef STO_SERVICE_INTERNAL_H
#define STO_SERVICE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dht_client.h"
#include "ovl_client.h"
#include "ron_guard.h"
#include "ron_metrics.h"
#include "sto_fetch.h"
#include "sto_service.h"

typedef enum {
    OP_PUT_BEGIN = 0,
    OP_PUT_WRITE,
    OP_PUT_COMMIT,
    OP_PUT_ABORT,
    OP_STAT,
    OP_LIST,
    OP_PIN,
    OP_UNPIN,
    OP_GC,
    OP_GET,
    OP_COUNT,
    OP_BAD = OP_COUNT, /* unparseable or unknown op: metrics only */
    /* internal jobs of a fetch (never answered, never counted) */
    OP_F_OPEN,     /* open the partial object: size and pieces present */
    OP_F_STORE,    /* verify and store the pieces an overlay fetch brought */
    OP_F_COMPLETE, /* every piece present: commit the object as cache */
} op_t;

/* OP_F_STORE worker calls one fetch runs at once. Answers that arrive while
 * they run wait, and the next call stores all of them in order: fewer
 * worker hand-offs and wake-ups per GiB than a call per answer, and a
 * 2-vCPU node gains nothing from more store calls at once. */
#define STO__FETCH_STORE_CALLS 2u

/* A get's buffer starts with this much room for the bus header and the
 * answer's JSON ({"size","offset","length"}: three u64s), so the read bytes
 * are answered in place (sto__get_answer). */
#define STO__GET_HEADROOM (RBUS_HEADROOM + 4u + 96u)

/* Statuses the request counters have a label for (sto_service.c `statuses`);
 * one more slot counts "other". */
#define STO__N_STATUSES 11

typedef struct job job_t;
typedef struct svc_fetch svc_fetch_t;

/* One overlay fetch in flight (the bus cannot cancel it: a cancelled one is
 * only forgotten by the scheduler, and its pieces are still kept). */
typedef struct ovl_req {
    struct ovl_req *next;
    svc_fetch_t *f;
    uint64_t req_id;
    uint64_t offset; /* first byte asked */
    bool cancelled;
} ovl_req_t;

/*
 * The fetch of one absent object (or of missing pieces of a partial one):
 * the scheduler, the partial object, the gets waiting for it, and the
 * provider addresses by scheduler index. Loop thread only. It lives until
 * nothing waits and nothing (lookup, overlay request, worker job) is in
 * flight.
 */
struct svc_fetch {
    svc_fetch_t *next;
    sto_service_t *svc;
    uint8_t addr[STO_ADDR_LEN];
    sto_fetch_t *sched;
    sto_partial_t *partial; /* NULL until created or opened */
    job_t *waiters;         /* gets waiting (linked by next) */
    ovl_req_t *reqs;        /* overlay fetches in flight */
    char paddr[STO_FETCH_MAX_PROVIDERS][DHT_CLIENT_ADDR_MAX];
    unsigned finds;        /* find_providers lookups so far */
    int find_err;          /* the last lookup's failure (0: it answered) */
    bool find_complete;    /* the last lookup heard from every node it asked */
    uint64_t next_find_ms; /* no lookup again before this (records may be on their way) */
    uint64_t linger_until; /* idle: kept until then for the next get (0: not idle) */
    bool finding, opening, completing, whole, any_provider, timer_open, ended;
    size_t jobs;              /* worker jobs of this fetch (queued or running) */
    job_t *sq_head, *sq_tail; /* OP_F_STORE jobs waiting for a worker call (by next) */
    unsigned stores;          /* OP_F_STORE worker calls running (<= STO__FETCH_STORE_CALLS) */
    int last_err; /* the last provider failure (for the answer when stuck) */
    /* verified pieces in memory (sto_service_hold.c): the OP_F_STORE jobs
     * whose records verified on the loop, newest first (by hold_next) */
    job_t *hold;
    uint64_t hold_bytes; /* piece bytes of the jobs in hold */
    bool size_ok;        /* vsize is verified (the last piece's proof, or the partial's) */
    bool read;           /* a get joined: records are verified and held (a pin alone: not) */
    uint64_t vsize;      /* the object's size, once size_ok */
    uv_timer_t timer;
};

/* A piece record copied out of an overlay answer. */
typedef struct {
    uint64_t piece;
    size_t proof_off, proof_len, bytes_off, len;
    bool has_cv; /* cv: the overlay's chaining value of these bytes */
    uint8_t cv[STO_TREE_HASH_LEN];
    bool ok; /* verified on the loop against the address (sto__hold_add): may serve gets */
} rec_t;

typedef struct svc_put {
    uint64_t id;
    rbus_peer_t *peer;    /* NULL once its connection is gone */
    sto_put_t *sp;        /* NULL while put_begin runs */
    uint64_t written;     /* bytes the store holds */
    uint64_t accepted;    /* written + bytes of the put_writes queued or running */
    job_t *qhead, *qtail; /* put_writes waiting for the one running */
    uint32_t writes;      /* put_writes queued or running */
    uint64_t last_ms;
    bool busy;   /* a worker call is in flight */
    bool doomed; /* abort when the call in flight returns */
    /* the capability put_begin was allowed with (enforcing services only):
     * the commit checks it again with the address and the size, so a token
     * revoked during an upload or a prefix caveat the bytes miss stores
     * nothing; RAM only, wiped when the put ends */
    char *token;
    size_t token_len;
    uint64_t max_bytes;             /* the grant's max-bytes (UINT64_MAX: none) */
    uint8_t tenant[STO_TENANT_LEN]; /* put_begin's tenant (all zero: none) */
} svc_put_t;

struct sto_service {
    uv_loop_t *loop;
    rbus_t *bus;
    guard_t *guard; /* NULL: no enforcement (unit tests) */
    sto_store_t *store;
    sto_service_limits_t lim;
    svc_put_t **puts; /* lim.puts_total slots, n_puts used */
    size_t n_puts;
    uint64_t next_put_id;
    uv_timer_t idle;
    bool stopping;
    bool timer_open;
    size_t jobs; /* worker calls in flight */
    met_registry_t *reg;
    met_counter_t *req[OP_COUNT + 1][STO__N_STATUSES + 1];
    met_counter_t *bytes_in;
    met_counter_t *bytes_out;
    met_gauge_t *open_puts;
    /* the network (sto_service_set_network): fetch on miss, provider records */
    rbus_peer_t *dht, *ovl;
    svc_fetch_t *fetches;
    met_counter_t *fetch_bytes, *fetch_fail, *fetch_res[3], *provides[2], *unprovides;
    met_counter_t *miss_hits;
    met_counter_t *hold_gets; /* gets answered from verified pieces in memory */
    uint64_t hold_bytes;      /* piece bytes of every fetch's hold (<= STO_SVC_HOLD_TOTAL
                                 once stored, sto_service_hold.c) */
    /* put answers waiting for their provider record to reach the DHT
     * (sto_service_announce.c) */
    struct put_ann *anns;
    size_t nanns; /* <= STO_SVC_ANNOUNCE_MAX */
    met_counter_t *ann_res[5];
    /* addresses whose lookup found no provider, until when (a ring: the
     * oldest entry is replaced), so a repeated miss answers 404 at once */
    struct {
        uint8_t addr[STO_ADDR_LEN];
        uint64_t until_ms;
    } miss[STO_SVC_MISS_MAX];
    size_t miss_next;
    /* addresses GC evicted (filled by the store's hook on a worker) */
    pthread_mutex_t evmu;
    uint8_t (*evq)[STO_ADDR_LEN];
    size_t nevq, capevq;
    uv_async_t evasync;
    bool async_open;
};

struct job {
    uv_work_t work;
    job_t *next; /* in its put's queue of waiting put_writes */
    sto_service_t *svc;
    op_t op;
    rbus_req_t *req; /* NULL for internal aborts */
    uint64_t corr_id;
    uint8_t tenant[STO_TENANT_LEN];
    uint8_t addr[STO_ADDR_LEN];
    bool has_addr;
    bool created;  /* put_commit: the address was not stored before */
    bool reopened; /* OP_F_STORE: its partial was opened again, not created */
    uint8_t expect[STO_ADDR_LEN];
    bool has_expect;
    char ctype[STO_CTYPE_MAX + 1];
    bool has_ctype;
    uint64_t size, offset, length, target;
    bool past_end; /* get: offset beyond the object's end */
    size_t limit;
    svc_put_t *put;
    uint8_t *data; /* put_write: the chunk (copied); get: the answer buffer */
    size_t data_len;
    int rc;
    ssize_t got;
    sto_stat_t st;
    sto_stat_t *list;
    size_t n;
    uint32_t pins;
    uint64_t freed;
    sto_put_t *new_sp;
    /* gets that fetch, and the fetch's own jobs */
    bool local;        /* get: "local":true, never fetch */
    uint64_t ahead;    /* get: bytes the requester reads next (fetched along) */
    bool partial_stat; /* stat: the object is partial (size, verified) */
    uint64_t verified;
    uint64_t deadline_ms; /* a get waiting for a fetch answers 504 past it */
    svc_fetch_t *fetch;
    sto_partial_t *partial; /* borrowed from the fetch, or opened/created by the job */
    uint8_t *have;          /* OP_F_OPEN: one byte per piece present */
    uint64_t req_id;
    bool cancelled;
    rec_t *recs; /* OP_F_STORE: the records in data */
    job_t *batch; /* OP_F_STORE: the next store job the same worker call runs */
    job_t *hold_next; /* OP_F_STORE: the next (older) job in its fetch's hold */
    bool held;        /* OP_F_STORE: in its fetch's hold (freed by sto__hold_release) */
    bool stored;      /* OP_F_STORE, held: its worker call returned (only the hold keeps it) */
    int *rec_rc;
    size_t nrec;
    /* pin: the capability it came with (enforcing services with a network
     * only), for the get check of a pin that fetches; RAM, wiped by
     * sto__job_free */
    char *token;
    size_t token_len;
    bool fetched; /* pin: it waited for a fetch of the object */
    /* put_commit under a capability: the check of the hashed address */
    bool cap_denied;
    guard_result_t cap_res;
    char cap_reason[200]; /* cap_res.reason copied (a policy's text may go with a reload) */
};

/* ---- sto_service.c ---- */

/*
 * Answer an error envelope (spec §3) to req (NULL: count only). slug NULL =
 * the status's own slug; reason may be NULL; retry_after_ms 0 = none.
 */
void sto__answer_error(sto_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, uint16_t code,
                       const char *slug, const char *reason, uint32_t retry_after_ms,
                       const char *message);

/* Answer the error a store call returned (rc < 0) to req (NULL: count only). */
void sto__answer_rc(sto_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, int rc);

/* Free job j (NULL: nothing) with what it owns: data, list, a kept token (wiped). */
void sto__job_free(job_t *j);

/* Run job j (taken) on a worker; its op's done half runs on the loop. */
void sto__queue_job(sto_service_t *s, job_t *j);

/* Free a stopping service once no job, fetch or handle is left. */
void sto__svc_maybe_free(sto_service_t *s);

/* v as a JSON string of decimal digits (u64 on the bus, docs/protocol/storage.md). */
json_t *sto__json_u64(uint64_t v);

/* Answer 200 with JSON body o (taken) framed as u32 length + JSON + raw. */
void sto__answer_ok(sto_service_t *s, op_t op, rbus_req_t *req, json_t *o, const void *raw,
                    size_t raw_len);

/*
 * Answer get j (borrowed; the caller frees it) from its result: j->rc < 0
 * is that error, j->past_end 416, else 200 with j->got bytes at
 * j->data + STO__GET_HEADROOM (j->data is handed to the bus and set NULL).
 */
void sto__get_answer(sto_service_t *s, job_t *j);

/* ---- sto_service_fetch.c ---- */

/* The worker half of a fetch's own jobs (OP_F_*). Worker thread. */
void sto__fetch_job_work(sto_store_t *st, job_t *j);

/* The loop half of a fetch's own job j (taken). */
void sto__fetch_job_done(sto_service_t *s, job_t *j);

/* A get j (taken) of an absent object, or of a range not held yet, or a pin
 * of an absent object: join or start the fetch of its address; j runs again
 * (local) when its range is held (a pin: the whole object), or is answered
 * past its deadline (a pin: STO_SVC_FETCH_WAIT_MS without a verified piece
 * arriving) or when the fetch fails. */
void sto__fetch_join(sto_service_t *s, job_t *j);

/* 1 when a lookup for addr found no provider less than miss_ttl_ms ago. */
bool sto__miss_known(const sto_service_t *s, const uint8_t addr[STO_ADDR_LEN], uint64_t now);

/* The fetch of addr in progress, or NULL. */
svc_fetch_t *sto__fetch_find(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN]);

/* Announce addr as provided by this node (no-op without a dht endpoint). */
void sto__svc_provide(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN]);

/* The service's own capability (guard_self_token) for the requests it makes
 * on its own behalf: provider records and lookups. NULL without a guard. */
const char *sto__svc_self_token(sto_service_t *s, char buf[static AUTH_MAX_TOKEN + 1]);

/* Act on f's scheduler decisions, then on its state (may end f). */
void sto__fetch_pump(svc_fetch_t *f);

/* The store's eviction hook (a worker thread, the store's lock held) and its
 * loop half, which withdraws the provider records of what GC evicted. */
void sto__on_evict(void *arg, const uint8_t addr[STO_ADDR_LEN]);
void sto__on_evasync(uv_async_t *a);

/* Free a fetch job (OP_F_*) with what it owns: data, records, have. */
void sto__fetch_job_free(job_t *j);

/* ---- sto_service_hold.c: serving gets from verified pieces in memory ---- */

/*
 * Verify the records of OP_F_STORE job j (not queued yet) on the loop
 * against f's address, and keep j in f's hold when any verified: the
 * size first, from the last piece's proof (the bytes are hashed), unless
 * f knows it; then each record, its chaining value folded up its proof
 * (the bytes hashed when it has none). A record that fails is not held
 * (the store job fails it too, and the provider is charged there).
 */
void sto__hold_add(svc_fetch_t *f, job_t *j);

/* Answer get j (a waiter of f, not freed) from f's hold when every piece
 * of its range is there, or 416 when its offset is past the verified size.
 * Returns true when j was answered. */
bool sto__hold_serve(svc_fetch_t *f, job_t *j);

/* Held job j's store call returned: keep it while f's and the service's
 * bounds allow (STO_SVC_HOLD_FETCH, STO_SVC_HOLD_TOTAL), dropping f's
 * oldest stored jobs first; otherwise free it. */
void sto__hold_stored(svc_fetch_t *f, job_t *j);

/* Free every job of f's hold (f ends: none is in a worker call). */
void sto__hold_release(svc_fetch_t *f);

/* On arrival of get j (taken when true is returned): answer it from the
 * hold of its address's fetch, or join that fetch when it is fetching,
 * without a worker call. false: j takes the usual way (sto__queue_job). */
bool sto__hold_get(sto_service_t *s, job_t *j);

/* ---- sto_service_announce.c ---- */

/* put_commit j succeeded with answer o (taken): announce the address and
 * answer once the provider record reached the DHT or the wait passed. */
void sto__put_ann_start(sto_service_t *s, const job_t *j, json_t *o);

/* The service stops: answer the puts still waiting (their callbacks free them). */
void sto__put_ann_stop(sto_service_t *s);

/* Register the storage_put_announces_total family. */
void sto__put_ann_metrics(sto_service_t *s);

#endif /* STO_SERVICE_INTERNAL_H */
