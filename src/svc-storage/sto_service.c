/*
 * sto_service.c - the storage protocol (app_proto_id 1) over ron-bus; wire
 * format in docs/protocol/storage.md. A request is one frame: a big-endian
 * u32 JSON length, compact JSON {"op":...}, then raw bytes (put_write's
 * chunk). A success answer has the same shape (get's bytes follow its JSON);
 * an error answer is the spec §3 envelope alone. The loop thread parses,
 * checks limits and owns the put table; store calls run in uv_queue_work.
 * Invariants: one worker call per put at a time (busy flag); further
 * put_writes of a put wait in its queue (at most STO_SVC_PUT_QUEUE, in
 * offset order) and each is handed to the pool as the one before returns,
 * so a requester can keep several chunks in flight without a bus round trip
 * between them; a put leaves
 * the table before its commit or abort is queued, so its id dies with it;
 * the service and the store are freed only when no job is in flight.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht_client.h"
#include "ovl_client.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_proto.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_util.h"
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

static const char *const op_names[OP_COUNT + 1] = {
    "put_begin", "put_write", "put_commit", "put_abort", "stat",
    "list",      "pin",       "unpin",      "gc",        "get", "invalid",
};

/* Fields each op accepts besides "op" (strict: any other is refused). */
static const char *const op_fields[OP_COUNT][6] = {
    [OP_PUT_BEGIN] = {"size", "content_type", "expect", NULL},
    [OP_PUT_WRITE] = {"put_id", "offset", NULL},
    [OP_PUT_COMMIT] = {"put_id", NULL},
    [OP_PUT_ABORT] = {"put_id", NULL},
    [OP_STAT] = {"address", NULL},
    [OP_LIST] = {"after", "limit", NULL},
    [OP_PIN] = {"address", NULL},
    [OP_UNPIN] = {"address", NULL},
    [OP_GC] = {"target", NULL},
    [OP_GET] = {"address", "offset", "length", "local", "ahead", NULL},
};

/* Statuses counted by label; anything else is counted as "other". */
static const uint16_t statuses[] = {200, 400, 401, 403, 404, 409, 413, 429, 500, 503, 507};
#define N_STATUS (RON_ARRAY_LEN(statuses) + 1)

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
    unsigned finds;         /* find_providers lookups so far */
    int find_err;           /* the last lookup's failure (0: it answered) */
    bool find_complete;     /* the last lookup heard from every node it asked */
    uint64_t next_find_ms;  /* no lookup again before this (records may be on their way) */
    uint64_t linger_until;  /* idle: kept until then for the next get (0: not idle) */
    bool finding, opening, completing, whole, any_provider, timer_open, ended;
    size_t jobs;            /* worker jobs of this fetch */
    int last_err;           /* the last provider failure (for the answer when stuck) */
    uv_timer_t timer;
};

/* A piece record copied out of an overlay answer. */
typedef struct {
    uint64_t piece;
    size_t proof_off, proof_len, bytes_off, len;
    bool has_cv; /* cv: the overlay's chaining value of these bytes */
    uint8_t cv[STO_TREE_HASH_LEN];
} rec_t;

typedef struct svc_put {
    uint64_t id;
    rbus_peer_t *peer; /* NULL once its connection is gone */
    sto_put_t *sp;     /* NULL while put_begin runs */
    uint64_t written;  /* bytes the store holds */
    uint64_t accepted; /* written + bytes of the put_writes queued or running */
    job_t *qhead, *qtail; /* put_writes waiting for the one running */
    uint32_t writes;   /* put_writes queued or running */
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
    met_counter_t *req[OP_COUNT + 1][N_STATUS];
    met_counter_t *bytes_in;
    met_counter_t *bytes_out;
    met_gauge_t *open_puts;
    /* the network (sto_service_set_network): fetch on miss, provider records */
    rbus_peer_t *dht, *ovl;
    svc_fetch_t *fetches;
    met_counter_t *fetch_bytes, *fetch_fail, *fetch_res[3], *provides[2], *unprovides;
    met_counter_t *miss_hits;
    /* put answers waiting for their provider record to reach the DHT (put_ann_*) */
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
    bool created; /* put_commit: the address was not stored before */
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
    bool local;             /* get: "local":true, never fetch */
    uint64_t ahead;         /* get: bytes the requester reads next (fetched along) */
    bool partial_stat;      /* stat: the object is partial (size, verified) */
    uint64_t verified;
    uint64_t deadline_ms;   /* a get waiting for a fetch answers 504 past it */
    svc_fetch_t *fetch;
    sto_partial_t *partial; /* borrowed from the fetch, or opened/created by the job */
    uint8_t *have;          /* OP_F_OPEN: one byte per piece present */
    uint64_t req_id;
    bool cancelled;
    rec_t *recs;            /* OP_F_STORE: the records in data */
    int *rec_rc;
    size_t nrec;
    /* put_commit under a capability: the check of the hashed address */
    bool cap_denied;
    guard_result_t cap_res;
    char cap_reason[200]; /* cap_res.reason copied (a policy's text may go with a reload) */
};

/* ---- answers ---- */

static void
count(sto_service_t *s, op_t op, uint16_t code)
{
    size_t i = 0;
    while (i < RON_ARRAY_LEN(statuses) && statuses[i] != code)
        i++;
    met_counter_inc(s->req[op][i]);
}

/*
 * Answer an error envelope (spec §3). slug NULL = the status's own slug;
 * reason may be NULL; retry_after_ms 0 = none.
 */
static void
answer_error(sto_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, uint16_t code,
             const char *slug, const char *reason, uint32_t retry_after_ms, const char *message)
{
    count(s, op, code);
    (void)corr_id; /* the bus answers with the request's own corr_id */
    if (req != NULL)
        rbus_respond_error_ex(req, code, slug, reason, retry_after_ms, message);
}

/* Map a store error to an answer. */
static void
answer_rc(sto_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, int rc)
{
    const char *msg = ron_strerror(rc);
    switch (rc) {
    case RON_ENOTFOUND:
        answer_error(s, op, req, corr_id, 404, NULL, NULL, 0, msg);
        break;
    case RON_EAGAIN: /* a range of a partial object not verified yet, and no fetch */
        answer_error(s, op, req, corr_id, 404, NULL, NULL, 0,
                     "the range is not held yet (a partial object)");
        break;
    case RON_EDIGEST:
        if (op == OP_GET)
            answer_error(s, op, req, corr_id, 500, NULL, "corrupt", 0,
                         "stored bytes failed verification; nothing was served");
        else
            answer_error(s, op, req, corr_id, 409, "bad_digest", NULL, 0,
                         "bytes do not hash to the expected address; nothing was stored");
        break;
    case RON_ETOOBIG:
        answer_error(s, op, req, corr_id, 413, NULL, NULL, 0, msg);
        break;
    case RON_ESTOREFULL:
        answer_error(s, op, req, corr_id, 507, NULL, NULL, STO_SVC_RETRY_AFTER_MS, msg);
        break;
    case RON_EINVAL:
        answer_error(s, op, req, corr_id, 400, NULL, NULL, 0, msg);
        break;
    default:
        ron_warn("storage %s: %s", op_names[op], msg);
        answer_error(s, op, req, corr_id, 500, NULL, NULL, 0, msg);
        break;
    }
}

/* Answer 200 with JSON body o (taken) framed as u32 length + JSON + raw. */
static void
answer_ok(sto_service_t *s, op_t op, rbus_req_t *req, json_t *o, const void *raw, size_t raw_len)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t jl;
    uint8_t *buf;

    json_decref(o);
    count(s, op, 200);
    if (req == NULL) {
        free(txt);
        return;
    }
    if (txt == NULL) {
        rbus_respond_error(req, 500, "cannot encode the answer");
        return;
    }
    jl = strlen(txt);
    buf = ron_xmalloc(4 + jl + raw_len);
    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    if (raw_len > 0)
        memcpy(buf + 4 + jl, raw, raw_len);
    rbus_respond(req, 200, buf, 4 + jl + raw_len);
    met_counter_add(s->bytes_out, raw_len);
    free(buf);
    free(txt);
}

static json_t *
json_u64(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return json_string(b);
}

static json_t *
json_addr(const uint8_t addr[STO_ADDR_LEN])
{
    char b[68];
    sto_addr_format(addr, b);
    return json_string(b);
}

static json_t *
stat_json(const sto_stat_t *st)
{
    json_t *o = json_object();
    json_object_set_new(o, "address", json_addr(st->addr));
    json_object_set_new(o, "size", json_u64(st->size));
    json_object_set_new(o, "created", json_u64(st->created));
    json_object_set_new(o, "pins", json_u64(st->pins));
    json_object_set_new(o, "state", json_string(st->state == STO_STATE_PINNED ? "pinned" : "cache"));
    json_object_set_new(o, "content_type", json_string(st->ctype));
    return o;
}

/* The tenant a request names, or NULL when its tenant_id is all zero (none). */
static const uint8_t *
tenant_of(const uint8_t t[STO_TENANT_LEN])
{
    static const uint8_t zero[STO_TENANT_LEN];
    return memcmp(t, zero, STO_TENANT_LEN) != 0 ? t : NULL;
}

/* ---- the put table ---- */

/* Free a put that left the table (its kept token wiped first). */
static void
put_free(svc_put_t *p)
{
    if (p->token != NULL) {
        explicit_bzero(p->token, p->token_len);
        free(p->token);
    }
    free(p);
}

static void
put_remove(sto_service_t *s, svc_put_t *p)
{
    for (size_t i = 0; i < s->n_puts; i++)
        if (s->puts[i] == p) {
            s->puts[i] = s->puts[--s->n_puts];
            break;
        }
    met_gauge_set(s->open_puts, (double)s->n_puts);
}

static svc_put_t *
put_find(sto_service_t *s, uint64_t id, const rbus_peer_t *peer)
{
    for (size_t i = 0; i < s->n_puts; i++)
        if (s->puts[i]->id == id && s->puts[i]->peer == peer && peer != NULL)
            return s->puts[i];
    return NULL;
}

static void queue_job(sto_service_t *s, job_t *j);

/* Abort p (not busy) on a worker: it leaves the table now. */
static void
put_abort_internal(sto_service_t *s, svc_put_t *p)
{
    job_t *j = ron_xcalloc(1, sizeof *j);
    put_remove(s, p);
    j->op = OP_PUT_ABORT;
    j->put = p;
    queue_job(s, j);
}

/* Abort p now or, when a call is in flight, once it returns. */
static void
put_doom(sto_service_t *s, svc_put_t *p)
{
    p->peer = NULL;
    if (p->busy)
        p->doomed = true;
    else
        put_abort_internal(s, p);
}

/*
 * Answer and drop the put_writes waiting in p's queue: with the store error
 * rc of the write before them, or (rc 0) because the put is being aborted.
 */
static void
put_fail_queue(sto_service_t *s, svc_put_t *p, int rc)
{
    while (p->qhead != NULL) {
        job_t *j = p->qhead;
        p->qhead = j->next;
        p->writes--;
        if (rc < 0)
            answer_rc(s, OP_PUT_WRITE, j->req, j->corr_id, rc);
        else if (s->stopping)
            answer_error(s, OP_PUT_WRITE, j->req, j->corr_id, 503, NULL, NULL,
                         STO_SVC_RETRY_AFTER_MS, "storage is stopping");
        else
            answer_error(s, OP_PUT_WRITE, j->req, j->corr_id, 404, NULL, "put_id", 0,
                         "put_id: the put was aborted");
        free(j->data);
        free(j);
    }
    p->qtail = NULL;
}

/* ---- worker side ---- */

/* get of an object the store lacks: serve it from a partial object when the
 * range is held (RON_EAGAIN when not; RON_ENOTFOUND when no partial). */
static void
get_from_partial(sto_store_t *st, job_t *j)
{
    sto_partial_t *p = NULL;

    if (sto_partial_open(st, j->addr, &p) < 0)
        return;
    j->size = sto_partial_size(p);
    j->rc = 0;
    if (j->offset > j->size) {
        j->past_end = true;
    } else {
        j->data = ron_xmalloc(j->length > 0 ? j->length : 1);
        j->got = sto_partial_read(p, j->offset, j->data, j->length);
        if (j->got < 0)
            j->rc = (int)j->got;
    }
    sto_partial_close(p);
}

/* The worker half of a fetch's own jobs. */
static void
fetch_job_work(sto_store_t *st, job_t *j)
{
    uint64_t last;
    size_t k;

    switch (j->op) {
    case OP_F_OPEN:
        if (sto_has(st, j->addr) == 1) {
            j->rc = 1; /* whole already (completed meanwhile) */
            break;
        }
        j->rc = sto_partial_open(st, j->addr, &j->partial);
        if (j->rc == 0) {
            uint64_t n;
            j->size = sto_partial_size(j->partial);
            n = sto_tree_pieces(j->size);
            j->have = ron_xmalloc(n);
            for (uint64_t i = 0; i < n; i++)
                j->have[i] = sto_partial_piece_has(j->partial, i);
        }
        break;
    case OP_F_STORE:
        j->rc = 0;
        if (j->partial == NULL) {
            /* the first answer: its last piece binds the size and creates the partial */
            last = sto_tree_pieces(j->size) - 1;
            for (k = 0; k < j->nrec && j->recs[k].piece != last; k++)
                ;
            if (k == j->nrec) {
                /* a sized answer (no size proof) whose partial the fetch no longer
                 * holds: completed meanwhile, or open it again */
                if (sto_has(st, j->addr) == 1) {
                    j->rc = 1;
                    break;
                }
                if (sto_partial_open(st, j->addr, &j->partial) < 0) {
                    j->rc = RON_EAGAIN; /* not the provider's fault: ask again */
                    break;
                }
                j->created = j->reopened = true; /* the job's own handle */
                goto add;
            }
            j->rc = sto_partial_create(st, j->addr, j->size, j->data + j->recs[k].bytes_off,
                                       j->recs[k].len, j->data + j->recs[k].proof_off,
                                       j->recs[k].proof_len, &j->partial);
            if (j->rc == -EEXIST) {
                j->rc = 1;
                break;
            }
            if (j->rc < 0)
                break;
            j->created = true; /* the job's own handle */
        }
    add:
        for (k = 0; k < j->nrec; k++)
            j->rec_rc[k] = sto_partial_piece_add_cv(
                j->partial, j->recs[k].piece, j->data + j->recs[k].bytes_off, j->recs[k].len,
                j->recs[k].has_cv ? j->recs[k].cv : NULL, j->data + j->recs[k].proof_off,
                j->recs[k].proof_len);
        break;
    case OP_F_COMPLETE:
        j->rc = sto_partial_complete(j->partial);
        break;
    default:
        break;
    }
}

/*
 * The commit's last check (a worker; guard_check is thread-safe): the
 * capability put_begin was allowed with, again, now with the address and
 * the size, so a prefix caveat the bytes miss, or a token revoked during
 * the upload, stores nothing.
 */
static int
commit_check(void *arg, const uint8_t addr[STO_ADDR_LEN])
{
    job_t *j = arg;
    svc_put_t *p = j->put;
    char hex[68];
    guard_req_t gr = {0};

    sto_addr_format(addr, hex);
    gr.op = AUTH_OP_PUT;
    gr.token = p->token;
    gr.token_len = p->token_len;
    gr.tenant = tenant_of(p->tenant);
    gr.addr = hex;
    gr.size = p->written;
    gr.target = hex;
    gr.forwarded = true; /* a bus request: its rate caveat was charged at the edge */
    if (guard_check(j->svc->guard, &gr, &j->cap_res) == 0)
        return 0;
    j->cap_denied = true;
    snprintf(j->cap_reason, sizeof j->cap_reason, "%s",
             j->cap_res.reason != NULL ? j->cap_res.reason : "");
    return j->cap_res.code;
}

static void
job_work(uv_work_t *w)
{
    job_t *j = ron_container_of(w, job_t, work);
    sto_store_t *st = j->svc->store;
    sto_reader_t *r = NULL;

    switch (j->op) {
    case OP_PUT_BEGIN:
        j->rc = sto_put_begin(st, j->tenant, j->has_expect ? j->expect : NULL,
                              j->has_ctype ? j->ctype : NULL, j->size, &j->new_sp);
        break;
    case OP_PUT_WRITE:
        j->rc = sto_put_write(j->put->sp, j->data, j->data_len);
        break;
    case OP_PUT_COMMIT:
        j->rc = sto_put_commit_check(j->put->sp, j->put->token != NULL ? commit_check : NULL, j,
                                     j->addr, &j->created);
        j->put->sp = NULL;
        if (j->rc == 0)
            j->rc = sto_stat(st, j->addr, &j->st);
        break;
    case OP_PUT_ABORT:
        sto_put_abort(j->put->sp);
        j->put->sp = NULL;
        j->rc = 0;
        break;
    case OP_STAT:
        j->rc = sto_stat(st, j->addr, &j->st);
        if (j->rc == RON_ENOTFOUND &&
            sto_partial_stat(st, j->addr, &j->size, &j->verified) == 0) {
            j->partial_stat = true;
            j->rc = 0;
        }
        break;
    case OP_LIST:
        j->list = ron_xcalloc(j->limit, sizeof *j->list);
        j->rc = sto_list(st, j->has_addr ? j->addr : NULL, j->list, j->limit, &j->n);
        break;
    case OP_PIN:
    case OP_UNPIN:
        j->rc = j->op == OP_PIN ? sto_pin(st, j->tenant, j->addr) : sto_unpin(st, j->tenant, j->addr);
        if (j->rc == 0)
            j->rc = sto_pin_count(st, j->tenant, j->addr, &j->pins);
        break;
    case OP_GC:
        j->rc = sto_gc(st, j->target, &j->freed);
        break;
    case OP_GET:
        j->rc = sto_reader_open(st, j->addr, &r);
        if (j->rc == 0) {
            j->size = sto_reader_size(r);
            if (j->offset > j->size) {
                j->past_end = true;
            } else {
                j->data = ron_xmalloc(j->length > 0 ? j->length : 1);
                j->got = sto_reader_read(r, j->offset, j->data, j->length);
                if (j->got < 0)
                    j->rc = (int)j->got;
            }
            sto_reader_close(r);
        } else if (j->rc == RON_ENOTFOUND) {
            get_from_partial(st, j);
            if (j->rc == RON_ENOTFOUND && j->data != NULL) {
                /* the partial was completed under us: the object is whole now */
                free(j->data);
                j->data = NULL;
                job_work(w);
                return;
            }
        }
        break;
    case OP_F_OPEN:
    case OP_F_STORE:
    case OP_F_COMPLETE:
        fetch_job_work(st, j);
        break;
    default:
        j->rc = RON_EINVAL;
        break;
    }
}

static void svc_maybe_free(sto_service_t *s);
static void fetch_job_done(sto_service_t *s, job_t *j);
static void fetch_join(sto_service_t *s, job_t *j);
static bool miss_known(const sto_service_t *s, const uint8_t addr[STO_ADDR_LEN], uint64_t now);
static svc_fetch_t *fetch_find(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN]);
static void svc_provide(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN]);
static void put_ann_start(sto_service_t *s, const job_t *j, json_t *o);

static void
job_done(uv_work_t *w, int status)
{
    job_t *j = ron_container_of(w, job_t, work);
    sto_service_t *s = j->svc;
    svc_put_t *p = j->put;
    json_t *o;
    (void)status;

    s->jobs--;
    if (j->op >= OP_F_OPEN) {
        fetch_job_done(s, j);
        svc_maybe_free(s);
        return;
    }
    if (j->op == OP_GET && (j->rc == RON_ENOTFOUND || j->rc == RON_EAGAIN) && !j->local &&
        s->dht != NULL && s->ovl != NULL && !s->stopping) {
        /* fetch on miss: the get waits for its pieces */
        bool absent = j->rc == RON_ENOTFOUND; /* not even a partial object */
        free(j->data);
        j->data = NULL;
        j->rc = 0;
        if (absent && miss_known(s, j->addr, ron_now_ms()) && fetch_find(s, j->addr) == NULL) {
            met_counter_inc(s->miss_hits);
            answer_error(s, OP_GET, j->req, j->corr_id, 404, NULL, NULL, 0,
                         "no provider of this object was found");
            free(j);
            return;
        }
        fetch_join(s, j);
        return;
    }
    if (p != NULL)
        p->busy = false;
    switch (j->op) {
    case OP_PUT_BEGIN:
        if (j->rc < 0) {
            put_remove(s, p);
            put_free(p);
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        p->sp = j->new_sp;
        p->last_ms = ron_now_ms();
        o = json_object();
        json_object_set_new(o, "put_id", json_u64(p->id));
        answer_ok(s, j->op, j->req, o, NULL, 0);
        if (p->doomed || s->stopping)
            put_abort_internal(s, p);
        break;
    case OP_PUT_WRITE:
        p->last_ms = ron_now_ms();
        p->writes--;
        if (j->rc < 0) {
            /* a failed write fails the put (the store refuses later writes): drop it */
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            put_fail_queue(s, p, j->rc);
            put_abort_internal(s, p);
            break;
        }
        p->written += j->data_len;
        met_counter_add(s->bytes_in, j->data_len);
        if (p->doomed || s->stopping) {
            put_fail_queue(s, p, 0);
        } else if (p->qhead != NULL) {
            /* the next chunk starts on a worker before this one is answered */
            job_t *next = p->qhead;
            p->qhead = next->next;
            if (p->qhead == NULL)
                p->qtail = NULL;
            next->next = NULL;
            queue_job(s, next);
        }
        o = json_object();
        json_object_set_new(o, "written", json_u64(p->written));
        answer_ok(s, j->op, j->req, o, NULL, 0);
        if (p->doomed || s->stopping)
            put_abort_internal(s, p);
        break;
    case OP_PUT_COMMIT:
        put_free(p);
        if (j->cap_denied) {
            answer_error(s, j->op, j->req, j->corr_id, (uint16_t)j->cap_res.status, j->cap_res.slug,
                         j->cap_res.slug, j->cap_res.retry_after_s * 1000u, j->cap_reason);
            break;
        }
        if (j->rc < 0) {
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "address", json_addr(j->addr));
        json_object_set_new(o, "created", json_boolean(j->created));
        json_object_set_new(o, "size", json_u64(j->st.size));
        put_ann_start(s, j, o); /* DESIGN §4: announce what was put, then answer */
        break;
    case OP_PUT_ABORT:
        put_free(p);
        if (j->req != NULL)
            answer_ok(s, j->op, j->req, json_object(), NULL, 0);
        break;
    case OP_STAT:
        if (j->rc < 0) {
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
        } else if (j->partial_stat) {
            o = json_object();
            json_object_set_new(o, "address", json_addr(j->addr));
            json_object_set_new(o, "size", json_u64(j->size));
            json_object_set_new(o, "state", json_string("partial"));
            json_object_set_new(o, "verified", json_u64(j->verified));
            answer_ok(s, j->op, j->req, o, NULL, 0);
        } else {
            answer_ok(s, j->op, j->req, stat_json(&j->st), NULL, 0);
        }
        break;
    case OP_LIST:
        if (j->rc < 0) {
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        {
            json_t *a = json_array();
            for (size_t i = 0; i < j->n; i++)
                json_array_append_new(a, stat_json(&j->list[i]));
            json_object_set_new(o, "objects", a);
        }
        if (j->n == j->limit && j->n > 0)
            json_object_set_new(o, "next", json_addr(j->list[j->n - 1].addr));
        answer_ok(s, j->op, j->req, o, NULL, 0);
        break;
    case OP_PIN:
    case OP_UNPIN:
        if (j->rc < 0) {
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "address", json_addr(j->addr));
        json_object_set_new(o, "pins", json_u64(j->pins));
        answer_ok(s, j->op, j->req, o, NULL, 0);
        break;
    case OP_GC:
        if (j->rc < 0) {
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "freed", json_u64(j->freed));
        answer_ok(s, j->op, j->req, o, NULL, 0);
        break;
    case OP_GET:
        if (j->rc == 0 && j->past_end) {
            answer_error(s, j->op, j->req, j->corr_id, 416, NULL, "offset", 0,
                         "offset: past the end of the object");
            break;
        }
        if (j->rc < 0) {
            answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "size", json_u64(j->size));
        json_object_set_new(o, "offset", json_u64(j->offset));
        json_object_set_new(o, "length", json_u64((uint64_t)j->got));
        answer_ok(s, j->op, j->req, o, j->data, (size_t)j->got);
        break;
    default:
        break;
    }
    free(j->data);
    free(j->list);
    free(j);
    svc_maybe_free(s);
}

static void
queue_job(sto_service_t *s, job_t *j)
{
    int rc;
    j->svc = s;
    j->work.data = j;
    if (j->put != NULL)
        j->put->busy = true;
    s->jobs++;
    rc = uv_queue_work(s->loop, &j->work, job_work, job_done);
    if (rc < 0) {
        /* cannot happen with a valid loop and callbacks; run inline rather than lose it */
        job_work(&j->work);
        job_done(&j->work, rc);
    }
}

/* ---- fetch on miss (DESIGN.md §4; docs/protocol/storage.md "Fetch on miss") ---- */

enum { FR_COMPLETE = 0, FR_NOT_FOUND = 1, FR_FAILED = 2 };

static void fetch_pump(svc_fetch_t *f);
static void fetch_on_timer(uv_timer_t *t);

/* The service's own capability (guard_self_token) for the requests it makes
 * on its own behalf: provider records and lookups. NULL without a guard. */
static const char *
svc_self_token(sto_service_t *s, char buf[static AUTH_MAX_TOKEN + 1])
{
    if (s->guard == NULL || guard_self_token(s->guard, buf, AUTH_MAX_TOKEN + 1) < 0)
        return NULL;
    return buf;
}

static void
svc_provide(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN])
{
    char tok[AUTH_MAX_TOKEN + 1];
    bool sent = s->dht != NULL && !s->stopping &&
                dht_client_provide_cap(s->dht, addr, svc_self_token(s, tok), NULL, NULL) == 0;
    met_counter_inc(s->provides[sent ? 0 : 1]);
}

/* ---- a put's answer waits for its announcement (docs/protocol/storage.md) ---- */

enum { ANN_ANNOUNCED = 0, ANN_UNANNOUNCED, ANN_PENDING, ANN_QUEUED, ANN_UNAVAILABLE };
static const char *const ann_states[5] = {"announced", "unannounced", "pending", "queued",
                                          "unavailable"};

/* A put_commit answer waiting for dht provide (linked in s->anns until its
 * callback runs; req NULL once answered because the service stops). */
typedef struct put_ann {
    struct put_ann *next;
    sto_service_t *svc;
    rbus_req_t *req;
    json_t *o; /* the answer */
} put_ann_t;

static void
put_ann_metrics(sto_service_t *s)
{
    static const char *const sl[] = {"state"};
    static const met_desc_t desc = {MET_COUNTER, "storage_put_announces_total",
                                    "Put answers by how far their provider record got in the DHT "
                                    "before the answer (announce_state).",
                                    sl, 1, NULL, 0, 0};
    met_family_t *fam = NULL;

    met_family_register(s->reg, &desc, &fam);
    for (size_t i = 0; i < RON_ARRAY_LEN(ann_states); i++)
        s->ann_res[i] = met_family_counter(fam, &ann_states[i]);
}

/* Answer the put with o (taken), plus what became of its announcement. */
static void
put_ann_answer(sto_service_t *s, rbus_req_t *req, json_t *o, int state, uint64_t announced)
{
    met_counter_inc(s->ann_res[state]);
    json_object_set_new(o, "announced", json_u64(announced));
    json_object_set_new(o, "announce_state", json_string(ann_states[state]));
    answer_ok(s, OP_PUT_COMMIT, req, o, NULL, 0);
}

static void
put_ann_done(void *arg, const dht_client_result_t *res)
{
    put_ann_t *a = arg;
    sto_service_t *s = a->svc;
    int state = ANN_UNAVAILABLE;

    for (put_ann_t **pp = &s->anns; *pp != NULL; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            s->nanns--;
            break;
        }
    if (res->status == 0 && res->code == 200 && res->provide_state != NULL) {
        for (int i = 0; i < ANN_UNAVAILABLE; i++)
            if (strcmp(res->provide_state, ann_states[i]) == 0)
                state = i;
    } else if (res->status == RON_ETIMEOUT) {
        state = ANN_PENDING; /* the dht did not answer in time: the record may be on its way */
    }
    if (a->req != NULL)
        put_ann_answer(s, a->req, a->o, state, state == ANN_ANNOUNCED ? res->announced : 0);
    else
        json_decref(a->o);
    free(a);
    svc_maybe_free(s);
}

/*
 * put_commit j succeeded with answer o (taken): announce the address (dht
 * provide, again when it was stored before) and answer once the provider
 * record reached the closest nodes of the DHT or lim.announce_wait_ms
 * passed, so a get on any node right after the answer finds it. No dht
 * endpoint: answered at once, as before.
 */
static void
put_ann_start(sto_service_t *s, const job_t *j, json_t *o)
{
    char tok[AUTH_MAX_TOKEN + 1];
    put_ann_t *a;

    if (s->dht == NULL || s->stopping) {
        answer_ok(s, OP_PUT_COMMIT, j->req, o, NULL, 0);
        if (s->dht == NULL)
            met_counter_inc(s->provides[1]);
        return;
    }
    if (s->lim.announce_wait_ms == UINT32_MAX) {
        answer_ok(s, OP_PUT_COMMIT, j->req, o, NULL, 0);
        svc_provide(s, j->addr);
        return;
    }
    if (s->nanns >= STO_SVC_ANNOUNCE_MAX) { /* the bus connection stays usable for lookups */
        svc_provide(s, j->addr);
        put_ann_answer(s, j->req, o, ANN_PENDING, 0);
        return;
    }
    a = ron_xcalloc(1, sizeof *a);
    a->svc = s;
    a->req = j->req;
    a->o = o;
    if (dht_client_provide_wait(s->dht, j->addr, svc_self_token(s, tok), s->lim.announce_wait_ms,
                                put_ann_done, a) < 0) {
        met_counter_inc(s->provides[1]);
        put_ann_answer(s, j->req, o, ANN_UNAVAILABLE, 0);
        free(a);
        return;
    }
    met_counter_inc(s->provides[0]);
    a->next = s->anns;
    s->anns = a;
    s->nanns++;
}

/* The service stops: answer the puts still waiting (their callbacks free them). */
static void
put_ann_stop(sto_service_t *s)
{
    for (put_ann_t *a = s->anns; a != NULL; a = a->next)
        if (a->req != NULL) {
            put_ann_answer(s, a->req, a->o, ANN_PENDING, 0);
            a->req = NULL;
            a->o = NULL;
        }
}

/* The store's eviction hook: a worker thread, the store's lock held. */
static void
on_evict(void *arg, const uint8_t addr[STO_ADDR_LEN])
{
    sto_service_t *s = arg;

    pthread_mutex_lock(&s->evmu);
    if (s->nevq == s->capevq) {
        s->capevq = s->capevq != 0 ? s->capevq * 2 : 16;
        s->evq = ron_xrealloc(s->evq, s->capevq * STO_ADDR_LEN);
    }
    memcpy(s->evq[s->nevq++], addr, STO_ADDR_LEN);
    pthread_mutex_unlock(&s->evmu);
    uv_async_send(&s->evasync);
}

/* On the loop: withdraw the provider records of what GC evicted. */
static void
on_evasync(uv_async_t *a)
{
    sto_service_t *s = a->data;
    uint8_t(*q)[STO_ADDR_LEN];
    char tok[AUTH_MAX_TOKEN + 1];
    const char *cap = NULL;
    size_t n;

    pthread_mutex_lock(&s->evmu);
    q = s->evq;
    n = s->nevq;
    s->evq = NULL;
    s->nevq = s->capevq = 0;
    pthread_mutex_unlock(&s->evmu);
    if (n > 0 && s->dht != NULL)
        cap = svc_self_token(s, tok);
    for (size_t i = 0; i < n; i++) {
        if (s->dht != NULL && !s->stopping)
            (void)dht_client_unprovide_cap(s->dht, q[i], cap, NULL, NULL);
        met_counter_inc(s->unprovides);
    }
    free(q);
}

/* 1 when a lookup for addr found no provider less than miss_ttl_ms ago. */
static bool
miss_known(const sto_service_t *s, const uint8_t addr[STO_ADDR_LEN], uint64_t now)
{
    for (size_t i = 0; i < STO_SVC_MISS_MAX; i++)
        if (s->miss[i].until_ms > now && memcmp(s->miss[i].addr, addr, STO_ADDR_LEN) == 0)
            return true;
    return false;
}

/* Remember that a lookup for addr found no provider (replacing its own
 * entry, else an expired one, else the oldest). */
static void
miss_remember(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN], uint64_t now)
{
    size_t slot = SIZE_MAX;

    for (size_t i = 0; i < STO_SVC_MISS_MAX && slot == SIZE_MAX; i++)
        if (memcmp(s->miss[i].addr, addr, STO_ADDR_LEN) == 0)
            slot = i;
    for (size_t i = 0; i < STO_SVC_MISS_MAX && slot == SIZE_MAX; i++)
        if (s->miss[i].until_ms <= now)
            slot = i;
    if (slot == SIZE_MAX) {
        slot = s->miss_next;
        s->miss_next = (s->miss_next + 1) % STO_SVC_MISS_MAX;
    }
    memcpy(s->miss[slot].addr, addr, STO_ADDR_LEN);
    s->miss[slot].until_ms = now + s->lim.miss_ttl_ms;
}

static svc_fetch_t *
fetch_find(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN])
{
    for (svc_fetch_t *f = s->fetches; f != NULL; f = f->next)
        if (!f->ended && memcmp(f->addr, addr, STO_ADDR_LEN) == 0)
            return f;
    return NULL;
}

static void
fetch_timer_closed(uv_handle_t *h)
{
    svc_fetch_t *f = h->data;
    sto_service_t *s = f->svc;

    for (svc_fetch_t **pp = &s->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    sto_fetch_free(f->sched);
    free(f);
    svc_maybe_free(s);
}

/* End f once nothing waits and nothing is in flight, after lingering
 * STO_SVC_FETCH_LINGER_MS: a reader that reads on chunk by chunk (the
 * gateway, `ron get`) finds its providers and partial object still there. */
static void
fetch_maybe_end(svc_fetch_t *f)
{
    uint64_t now = ron_now_ms();

    if (f->ended || f->waiters != NULL || f->reqs != NULL || f->jobs > 0 || f->finding ||
        f->opening)
        return;
    if (!f->svc->stopping && !f->whole && sto_fetch_state(f->sched) == STO_FETCH_RUNNING &&
        sto_fetch_inflight(f->sched) > 0)
        return;
    if (!f->svc->stopping && !f->whole && sto_fetch_providers_usable(f->sched) > 0) {
        if (f->linger_until == 0)
            f->linger_until = now + STO_SVC_FETCH_LINGER_MS;
        if (now < f->linger_until) {
            uv_timer_start(&f->timer, fetch_on_timer, f->linger_until - now, 0);
            return;
        }
    }
    f->ended = true;
    sto_partial_close(f->partial);
    f->partial = NULL;
    uv_close((uv_handle_t *)&f->timer, fetch_timer_closed);
}

/* Answer every waiting get with code (the fetch cannot serve them). */
static void
fetch_fail_waiters(svc_fetch_t *f, uint16_t code, const char *reason, const char *msg)
{
    sto_service_t *s = f->svc;
    char hex[68];

    met_counter_inc(s->fetch_res[code == 404 ? FR_NOT_FOUND : FR_FAILED]);
    if (f->waiters != NULL) {
        sto_addr_format(f->addr, hex);
        ron_log(code == 404 ? RON_LOG_DEBUG : RON_LOG_INFO,
                "storage: fetch of %s: %u %s (%u lookups, %zu providers usable)", hex, code, msg,
                f->finds, sto_fetch_providers_usable(f->sched));
    }
    while (f->waiters != NULL) {
        job_t *j = f->waiters;
        f->waiters = j->next;
        answer_error(s, OP_GET, j->req, j->corr_id, code, NULL, reason,
                     code == 404 ? 0 : STO_SVC_RETRY_AFTER_MS, msg);
        free(j);
    }
}

/* 1 when the pieces waiter j reads are all held (or its offset is past the end). */
static bool
fetch_waiter_ready(const svc_fetch_t *f, const job_t *j)
{
    uint64_t size = sto_fetch_size(f->sched), end;

    if (f->whole)
        return true;
    if (size == UINT64_MAX)
        return false;
    if (j->offset >= size)
        return true;
    end = j->length > size - j->offset ? size : j->offset + j->length;
    if (end == j->offset)
        end++;
    for (uint64_t i = j->offset / STO_PIECE_LEN; i <= (end - 1) / STO_PIECE_LEN; i++)
        if (!sto_fetch_has(f->sched, i))
            return false;
    return true;
}

/* Run again the gets whose pieces are all held: they read them verified. */
static void
fetch_serve_ready(svc_fetch_t *f)
{
    sto_service_t *s = f->svc;
    job_t **pp = &f->waiters;
    uint64_t now = ron_now_ms();

    while (*pp != NULL) {
        job_t *j = *pp;
        if (fetch_waiter_ready(f, j)) {
            *pp = j->next;
            j->next = NULL;
            j->local = true; /* served from what is held now, never a second fetch */
            queue_job(s, j);
        } else if (now >= j->deadline_ms) {
            *pp = j->next;
            answer_error(s, OP_GET, j->req, j->corr_id, 504, "timeout", "fetch",
                         STO_SVC_RETRY_AFTER_MS, "the object could not be fetched in time");
            free(j);
        } else {
            pp = &j->next;
        }
    }
}

static void
fetch_job_queue(svc_fetch_t *f, job_t *j)
{
    j->fetch = f;
    memcpy(j->addr, f->addr, STO_ADDR_LEN);
    f->jobs++;
    queue_job(f->svc, j);
}

/* Every piece held and no job running: commit the object as cache. */
static void
fetch_try_complete(svc_fetch_t *f)
{
    uint64_t size = sto_fetch_size(f->sched), n;
    job_t *j;

    if (f->completing || f->whole || f->partial == NULL || f->jobs > 0 || size == UINT64_MAX)
        return;
    n = sto_tree_pieces(size);
    if (sto_fetch_held(f->sched) < n) /* a count: this runs on every pump */
        return;
    f->completing = true;
    j = ron_xcalloc(1, sizeof *j);
    j->op = OP_F_COMPLETE;
    j->partial = f->partial;
    fetch_job_queue(f, j);
}

static void
fetch_on_providers(void *arg, const dht_client_result_t *res)
{
    svc_fetch_t *f = arg;

    f->finding = false;
    f->find_err = 0;
    f->find_complete = false;
    f->next_find_ms = ron_now_ms() + STO_SVC_FETCH_FIND_GAP_MS;
    if (res->status == 0 && res->code == 200) {
        f->find_complete = res->complete;
        for (size_t i = 0; i < res->n_providers; i++) {
            size_t idx;
            if (sto_fetch_provider_add(f->sched, res->providers[i].id, &idx) < 0)
                break;
            snprintf(f->paddr[idx], sizeof f->paddr[idx], "%s", res->providers[i].addr);
            f->any_provider = true;
        }
    } else {
        f->find_err = res->status < 0 ? res->status
                      : res->code == 504 ? RON_ETIMEOUT
                      : res->code == 429 ? RON_EBUSY
                                          : RON_EUNAVAIL;
        f->last_err = f->find_err;
    }
    fetch_pump(f);
}

static void
fetch_find_providers(svc_fetch_t *f)
{
    sto_service_t *s = f->svc;
    char tok[AUTH_MAX_TOKEN + 1];

    f->finds++;
    if (dht_client_find_providers_within(s->dht, f->addr, 0, svc_self_token(s, tok),
                                         STO_SVC_FETCH_FIND_MS, fetch_on_providers, f) == 0) {
        f->finding = true;
    } else {
        f->find_err = f->last_err = RON_EUNAVAIL; /* the dht endpoint is down */
        f->next_find_ms = ron_now_ms() + STO_SVC_FETCH_FIND_GAP_MS;
    }
}

static sto_fetch_end_t
fetch_end_of(int status)
{
    switch (status) {
    case RON_ENOTFOUND:
    case RON_ERANGE:
    case RON_ECAPNEEDED: /* a private provider refuses us: as good as not holding it */
    case RON_ECAPDENY:
        return STO_FETCH_NOT_FOUND;
    case RON_EBADPIECE:
        return STO_FETCH_BAD_PIECE;
    default:
        return STO_FETCH_RETRYABLE;
    }
}

static void
fetch_on_fetched(void *arg, int status, uint16_t code, const ovl_client_fetch_result_t *res)
{
    ovl_req_t *r = arg;
    svc_fetch_t *f = r->f;
    sto_service_t *s = f->svc;
    job_t *j;
    size_t total = 0, off = 0;
    (void)code;

    for (ovl_req_t **pp = &f->reqs; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (status == 0 && sto_fetch_size(f->sched) == UINT64_MAX &&
        sto_fetch_set_size(f->sched, res->size) < 0)
        status = RON_EBADPIECE;
    if (status == 0 && res->size != sto_fetch_size(f->sched))
        status = RON_EBADPIECE; /* cannot happen: the overlay verified the size */
    if (status == RON_ERANGE && !r->cancelled && sto_fetch_size(f->sched) != UINT64_MAX &&
        r->offset >= sto_fetch_size(f->sched)) {
        /* one of the probes sent at once started past the end the others found */
        sto_fetch_req_end(f->sched, r->req_id, STO_FETCH_PAST_END, ron_now_ms());
        free(r);
        fetch_pump(f);
        return;
    }
    if (status == RON_ERANGE && sto_fetch_size(f->sched) == UINT64_MAX) {
        /* the probe's offset is past the end: so is every get from there on */
        bool all = true;
        for (job_t *w = f->waiters; w != NULL; w = w->next)
            all = all && w->offset >= r->offset;
        if (all) {
            while (f->waiters != NULL) {
                job_t *w = f->waiters;
                f->waiters = w->next;
                answer_error(s, OP_GET, w->req, w->corr_id, 416, NULL, "offset", 0,
                             "offset: past the end of the object");
                free(w);
            }
            /* forget the wants past the end: a fresh scheduler, same providers (same
             * indices); answers still in flight name ids it ignores */
            sto_fetch_t *old = f->sched;
            const uint8_t *id;
            f->sched = sto_fetch_new(UINT64_MAX, NULL);
            for (size_t i = 0; (id = sto_fetch_provider_id(old, i)) != NULL; i++)
                (void)sto_fetch_provider_add(f->sched, id, NULL);
            sto_fetch_free(old);
            for (ovl_req_t *o = f->reqs; o != NULL; o = o->next)
                o->cancelled = true;
            free(r);
            fetch_pump(f);
            return;
        }
        if (!r->cancelled) {
            /* a get before it still waits: the size comes from a probe before this one */
            sto_fetch_req_end(f->sched, r->req_id, STO_FETCH_PAST_END, ron_now_ms());
            free(r);
            fetch_pump(f);
            return;
        }
    }
    if (status < 0 || s->stopping) {
        if (status < 0) {
            met_counter_inc(s->fetch_fail);
            f->last_err = status;
        }
        if (!r->cancelled)
            sto_fetch_req_end(f->sched, r->req_id,
                              status < 0 ? fetch_end_of(status) : STO_FETCH_CANCELLED,
                              ron_now_ms());
        free(r);
        fetch_pump(f);
        return;
    }
    /* copy the records (views into the answer) for the worker */
    for (size_t i = 0; i < res->n_pieces; i++)
        total += res->pieces[i].proof_len + res->pieces[i].len;
    j = ron_xcalloc(1, sizeof *j);
    j->op = OP_F_STORE;
    j->size = res->size;
    j->req_id = r->req_id;
    j->cancelled = r->cancelled;
    j->partial = f->partial;
    j->nrec = res->n_pieces;
    j->recs = ron_xcalloc(j->nrec + 1, sizeof *j->recs);
    j->rec_rc = ron_xcalloc(j->nrec + 1, sizeof *j->rec_rc);
    j->data = ron_xmalloc(total + 1);
    for (size_t i = 0; i < res->n_pieces; i++) {
        const ovl_client_piece_t *p = &res->pieces[i];
        j->recs[i].piece = p->piece;
        j->recs[i].has_cv = p->cv != NULL;
        if (p->cv != NULL)
            memcpy(j->recs[i].cv, p->cv, STO_TREE_HASH_LEN);
        j->recs[i].proof_off = off;
        j->recs[i].proof_len = p->proof_len;
        memcpy(j->data + off, p->proof, p->proof_len);
        off += p->proof_len;
        j->recs[i].bytes_off = off;
        j->recs[i].len = p->len;
        memcpy(j->data + off, p->bytes, p->len);
        off += p->len;
    }
    free(r);
    fetch_job_queue(f, j);
}

static void
fetch_on_timer(uv_timer_t *t)
{
    fetch_pump(t->data);
}

/* Act on the scheduler's decisions, then on the fetch's state. */
static void
fetch_pump(svc_fetch_t *f)
{
    sto_service_t *s = f->svc;
    sto_fetch_action_t a;
    uint64_t now = ron_now_ms(), wake;

    if (s->stopping) {
        fetch_fail_waiters(f, 503, NULL, "storage is stopping");
        fetch_maybe_end(f);
        return;
    }
    while (!f->opening && sto_fetch_next(f->sched, now, &a) == 1) {
        if (a.kind == STO_FETCH_CANCEL) {
            for (ovl_req_t *r = f->reqs; r != NULL; r = r->next)
                if (r->req_id == a.req_id)
                    r->cancelled = true;
            sto_fetch_req_end(f->sched, a.req_id, STO_FETCH_CANCELLED, now);
            continue;
        }
        ovl_req_t *r = ron_xcalloc(1, sizeof *r);
        r->f = f;
        r->req_id = a.req_id;
        r->offset = a.offset;
        /* once the size is verified and the partial holds the last piece, the
         * overlay is told the size, so the provider sends no size proof */
        uint64_t known = f->partial != NULL ? sto_fetch_size(f->sched) : OVL_CLIENT_SIZE_UNKNOWN;
        if (ovl_client_fetch_sized(s->ovl, f->addr, a.offset, a.length, known,
                                   sto_fetch_provider_id(f->sched, a.provider),
                                   f->paddr[a.provider], 0, fetch_on_fetched, r) < 0) {
            free(r);
            f->last_err = RON_EUNAVAIL;
            sto_fetch_req_end(f->sched, a.req_id, STO_FETCH_RETRYABLE, now);
            continue;
        }
        r->next = f->reqs;
        f->reqs = r;
    }
    fetch_serve_ready(f);
    bool stuck = !f->opening && !f->finding && f->waiters != NULL && !f->whole &&
                 sto_fetch_state(f->sched) == STO_FETCH_STUCK;
    if (stuck && !f->any_provider) {
        /* a miss costs one lookup: none found is 404 now (and for a while) */
        if (f->find_err == RON_ETIMEOUT) {
            fetch_fail_waiters(f, 504, "lookup", "the provider lookup did not answer in time");
        } else if (f->find_err < 0) {
            fetch_fail_waiters(f, 503, "lookup", "the provider lookup failed");
        } else {
            if (f->find_complete && s->lim.miss_ttl_ms > 0) /* a node that did not answer may
                                                               hold the record */
                miss_remember(s, f->addr, now);
            fetch_fail_waiters(f, 404, NULL, "no provider of this object was found");
        }
        stuck = false;
    }
    if (stuck && f->finds < STO_SVC_FETCH_FINDS && now < f->next_find_ms) {
        /* every provider found failed: look once more in a moment (others may
         * have announced it since) */
        uv_timer_start(&f->timer, fetch_on_timer, f->next_find_ms - now, 0);
        return;
    }
    if (stuck) {
        if (f->finds < STO_SVC_FETCH_FINDS)
            fetch_find_providers(f);
        if (!f->finding)
            fetch_fail_waiters(f, 503, "providers", "every provider failed");
    }
    fetch_try_complete(f);
    /* wake for a hedge, a timeout, a backoff or a waiter's deadline */
    wake = sto_fetch_wake_ms(f->sched, now);
    for (job_t *j = f->waiters; j != NULL; j = j->next)
        if (j->deadline_ms < wake)
            wake = j->deadline_ms;
    if (!f->ended && wake != UINT64_MAX)
        uv_timer_start(&f->timer, fetch_on_timer, wake > now ? wake - now : 1, 0);
    fetch_maybe_end(f);
}

/* Want get j's range, and the bytes it said it reads next (its "ahead",
 * at most STO_SVC_FETCH_AHEAD_MAX): a reader with one get in flight (the
 * gateway) then finds its next chunk fetched, or on its way from several
 * providers, instead of starting a round trip per chunk. */
static void
fetch_want_job(svc_fetch_t *f, const job_t *j)
{
    uint64_t len = j->length > 0 ? j->length : 1;
    uint64_t ahead = j->ahead < STO_SVC_FETCH_AHEAD_MAX ? j->ahead : STO_SVC_FETCH_AHEAD_MAX;

    if (j->offset <= UINT64_MAX - len - ahead)
        len += ahead;
    sto_fetch_want(f->sched, j->offset, len);
}

/* A fetch job returned (loop). */
static void
fetch_job_done(sto_service_t *s, job_t *j)
{
    svc_fetch_t *f = j->fetch;
    uint64_t now = ron_now_ms();
    bool bad = false, retry = false;

    f->jobs--;
    switch (j->op) {
    case OP_F_OPEN:
        f->opening = false;
        if (j->rc == 1) {
            f->whole = true;
        } else if (j->rc == 0) {
            uint64_t n = sto_tree_pieces(j->size);
            f->partial = j->partial;
            (void)sto_fetch_set_size(f->sched, j->size);
            for (uint64_t i = 0; i < n; i++)
                if (j->have[i])
                    sto_fetch_have(f->sched, i);
        }
        for (job_t *w = f->waiters; w != NULL; w = w->next)
            fetch_want_job(f, w);
        if (!f->whole)
            fetch_find_providers(f);
        break;
    case OP_F_STORE:
        if (j->rc == 1) {
            f->whole = true; /* the object was completed meanwhile */
        } else if (j->rc == RON_EAGAIN) {
            retry = true;
        } else if (j->rc < 0) {
            bad = true;
        } else {
            if (j->created && !j->reopened) /* its last piece went in with the creation */
                met_counter_add(s->fetch_bytes,
                                sto_tree_piece_len(j->size, sto_tree_pieces(j->size) - 1));
            if (f->partial == NULL)
                f->partial = j->partial; /* the job created it: the fetch keeps the handle */
            else if (j->created)
                sto_partial_close(j->partial); /* created twice at once: one handle is enough */
            for (size_t i = 0; i < j->nrec; i++) {
                if (j->rec_rc[i] < 0) {
                    bad = bad || j->rec_rc[i] == RON_EDIGEST || j->rec_rc[i] == RON_EPROTO;
                    continue;
                }
                if (j->rec_rc[i] == 0)
                    met_counter_add(s->fetch_bytes, j->recs[i].len);
                if (j->cancelled || sto_fetch_piece(f->sched, j->req_id, j->recs[i].piece, now) == 0)
                    sto_fetch_have(f->sched, j->recs[i].piece);
            }
        }
        if (bad)
            met_counter_inc(s->fetch_fail);
        if (!j->cancelled)
            sto_fetch_req_end(f->sched, j->req_id,
                              bad     ? STO_FETCH_BAD_PIECE
                              : retry ? STO_FETCH_RETRYABLE
                                      : STO_FETCH_OK,
                              now);
        break;
    case OP_F_COMPLETE:
        f->completing = false;
        if (j->rc == 0 || j->rc == RON_ENOTFOUND) {
            f->whole = true;
            sto_partial_close(f->partial);
            f->partial = NULL;
            if (j->rc == 0) {
                met_counter_inc(s->fetch_res[FR_COMPLETE]);
                svc_provide(s, f->addr); /* a complete copy: this node provides it too */
            }
        } else {
            ron_warn("storage: completing a fetched object failed: %s", ron_strerror(j->rc));
        }
        break;
    default:
        break;
    }
    free(j->have);
    free(j->recs);
    free(j->rec_rc);
    free(j->data);
    free(j);
    fetch_pump(f);
}

/* A get of an absent object (or of a range not held yet): join or start the fetch. */
static void
fetch_join(sto_service_t *s, job_t *j)
{
    svc_fetch_t *f = fetch_find(s, j->addr);

    j->deadline_ms = ron_now_ms() + STO_SVC_FETCH_WAIT_MS;
    if (f != NULL)
        f->linger_until = 0; /* busy again */
    if (f == NULL) {
        job_t *oj;
        f = ron_xcalloc(1, sizeof *f);
        f->svc = s;
        memcpy(f->addr, j->addr, STO_ADDR_LEN);
        f->sched = sto_fetch_new(UINT64_MAX, NULL);
        uv_timer_init(s->loop, &f->timer);
        f->timer.data = f;
        f->next = s->fetches;
        s->fetches = f;
        /* first learn what a partial object already holds */
        f->opening = true;
        oj = ron_xcalloc(1, sizeof *oj);
        oj->op = OP_F_OPEN;
        fetch_job_queue(f, oj);
    }
    j->next = f->waiters;
    f->waiters = j;
    if (f->opening)
        return; /* its range is wanted when the open returns */
    fetch_want_job(f, j);
    fetch_pump(f);
}

void
sto_service_set_guard(sto_service_t *s, guard_t *g)
{
    s->guard = g;
}

void
sto_service_set_network(sto_service_t *s, rbus_peer_t *dht, rbus_peer_t *ovl)
{
    s->dht = dht;
    s->ovl = ovl;
}

/* ---- requests ---- */

/* A request's parts: JSON object (new reference) and the raw bytes after it. */
typedef struct {
    json_t *o;
    const uint8_t *raw;
    size_t raw_len;
} parsed_t;

/* Split the frame payload and parse its JSON. Returns NULL on success or a message. */
static const char *
parse_frame(const oap_frame_t *f, parsed_t *out)
{
    uint32_t jl;
    json_error_t jerr;

    memset(out, 0, sizeof *out);
    if (f->payload_len < 4)
        return "payload shorter than its 4-byte JSON length";
    jl = (uint32_t)f->payload[0] << 24 | (uint32_t)f->payload[1] << 16 |
         (uint32_t)f->payload[2] << 8 | f->payload[3];
    if (jl > STO_SVC_MAX_JSON || jl > f->payload_len - 4)
        return "JSON length out of range";
    out->o = json_loadb((const char *)f->payload + 4, jl, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(out->o)) {
        json_decref(out->o);
        out->o = NULL;
        return "request JSON is not an object";
    }
    out->raw = f->payload + 4 + jl;
    out->raw_len = f->payload_len - 4 - jl;
    return NULL;
}

/* The first field of o not allowed for op, or NULL. */
static const char *
unknown_field(json_t *o, op_t op)
{
    return proto_json_unknown_key(o, "op", op_fields[op]);
}

/* Field kinds for get_field(). */
typedef enum { F_U64, F_ADDR, F_TEXT } fkind_t;

/*
 * Read optional field name of o into out (uint64_t *, uint8_t[32] or
 * char[STO_CTYPE_MAX + 1]). Returns 1 when present and valid, 0 when absent,
 * -1 when malformed.
 */
static int
get_field(json_t *o, const char *name, fkind_t kind, void *out)
{
    json_t *v = json_object_get(o, name);
    const char *sv;
    size_t n;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return -1;
    sv = json_string_value(v);
    n = json_string_length(v);
    switch (kind) {
    case F_U64:
        if (n == 0 || (n > 1 && sv[0] == '0'))
            return -1;
        return ron_parse_u64(sv, n, out) < 0 ? -1 : 1;
    case F_ADDR:
        if (n != 67 || strncmp(sv, "b3:", 3) != 0)
            return -1;
        return sto_addr_parse(sv, out) < 0 ? -1 : 1;
    case F_TEXT:
        if (n > STO_CTYPE_MAX || strlen(sv) != n)
            return -1;
        memcpy(out, sv, n + 1);
        return 1;
    }
    return -1;
}

/* Answer a capability rejection (docs/protocol/storage.md "Capabilities"). */
static void
answer_guard(sto_service_t *s, op_t op, rbus_req_t *req, const guard_result_t *res)
{
    answer_error(s, op, req, 0, (uint16_t)res->status, res->slug, res->slug,
                 res->retry_after_s * 1000u, res->reason);
}

/*
 * The capability check of a request with its fields parsed into j: the op
 * of the contract (put_begin: put, with the declared size and the expected
 * address when given; get and stat: get; pin, unpin and list: pin; gc:
 * admin). put_write, put_commit and put_abort belong to a put that
 * put_begin allowed (the put's token is checked again at commit). The
 * token rides in the frame's cap section, the tenant in its tenant_id.
 * Returns true when allowed (*res filled); false after answering the
 * rejection (guard_check counted and audited it).
 */
static bool
svc_authorize(sto_service_t *s, op_t op, rbus_req_t *req, const oap_frame_t *f, const job_t *j,
              guard_result_t *res)
{
    guard_req_t gr = {0};
    char hex[68];

    memset(res, 0, sizeof *res);
    res->anonymous = f->cap_len == 0;
    switch (op) {
    case OP_PUT_WRITE:
    case OP_PUT_COMMIT:
    case OP_PUT_ABORT:
        return true;
    case OP_PUT_BEGIN:
        gr.op = AUTH_OP_PUT;
        gr.size = j->size != STO_SIZE_UNKNOWN ? j->size : AUTH_SIZE_UNKNOWN;
        if (j->has_expect) {
            sto_addr_format(j->expect, hex);
            gr.addr = hex;
        }
        break;
    case OP_GET:
    case OP_STAT:
        gr.op = AUTH_OP_GET;
        sto_addr_format(j->addr, hex);
        gr.addr = hex;
        break;
    case OP_PIN:
    case OP_UNPIN:
        gr.op = AUTH_OP_PIN;
        sto_addr_format(j->addr, hex);
        gr.addr = hex;
        break;
    case OP_LIST:
        gr.op = AUTH_OP_PIN;
        break;
    default: /* gc */
        gr.op = AUTH_OP_ADMIN;
        break;
    }
    if (gr.op != AUTH_OP_PUT)
        gr.size = AUTH_SIZE_UNKNOWN;
    gr.token = f->cap_len > 0 ? (const char *)f->cap : NULL;
    gr.token_len = f->cap_len;
    gr.tenant = tenant_of(f->tenant_id);
    gr.target = gr.addr != NULL ? gr.addr : op_names[op];
    gr.forwarded = true; /* a bus request: its rate caveat was charged at the edge */
    if (guard_check(s->guard, &gr, res) == 0)
        return true;
    answer_guard(s, op, req, res);
    return false;
}

static void
on_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    sto_service_t *s = arg;
    rbus_peer_t *peer = rbus_req_peer(req);
    parsed_t in;
    const char *err, *opname, *bad = NULL;
    op_t op = OP_BAD;
    job_t *j = NULL;
    uint64_t put_id = 0;
    guard_result_t res;
    char msg[160];
    int r;

    if (s->stopping) {
        answer_error(s, op, req, f->corr_id, 503, NULL, NULL, STO_SVC_RETRY_AFTER_MS,
                     "storage is stopping");
        return;
    }
    if ((err = parse_frame(f, &in)) != NULL) {
        answer_error(s, op, req, f->corr_id, 400, NULL, NULL, 0, err);
        return;
    }
    opname = json_string_value(json_object_get(in.o, "op"));
    for (int i = 0; opname != NULL && i < OP_COUNT; i++)
        if (strcmp(opname, op_names[i]) == 0)
            op = (op_t)i;
    if (op == OP_BAD) {
        snprintf(msg, sizeof msg, "op: unknown operation '%.64s'", opname != NULL ? opname : "");
        answer_error(s, op, req, f->corr_id, 400, NULL, "op", 0, msg);
        goto out;
    }
    if ((bad = unknown_field(in.o, op)) != NULL) {
        snprintf(msg, sizeof msg, "%.64s: unknown field for %s", bad, op_names[op]);
        answer_error(s, op, req, f->corr_id, 400, NULL, bad, 0, msg);
        goto out;
    }
    if (in.raw_len > 0 && op != OP_PUT_WRITE) {
        answer_error(s, op, req, f->corr_id, 400, NULL, "raw", 0, "raw bytes only follow put_write");
        goto out;
    }
    j = ron_xcalloc(1, sizeof *j);
    j->op = op;
    j->req = req;
    j->corr_id = f->corr_id;
    memcpy(j->tenant, f->tenant_id, STO_TENANT_LEN);
    j->size = STO_SIZE_UNKNOWN;
    j->length = STO_SVC_MAX_CHUNK;
    j->limit = STO_SVC_LIST_DEFAULT;

    /* fields, by op */
    switch (op) {
    case OP_PUT_BEGIN:
        if (get_field(in.o, bad = "size", F_U64, &j->size) < 0 ||
            (r = get_field(in.o, bad = "content_type", F_TEXT, j->ctype)) < 0)
            goto bad_field;
        j->has_ctype = r > 0;
        if ((r = get_field(in.o, bad = "expect", F_ADDR, j->expect)) < 0)
            goto bad_field;
        j->has_expect = r > 0;
        break;
    case OP_PUT_WRITE:
    case OP_PUT_COMMIT:
    case OP_PUT_ABORT:
        if (get_field(in.o, bad = "put_id", F_U64, &put_id) <= 0)
            goto bad_field;
        if (op == OP_PUT_WRITE && get_field(in.o, bad = "offset", F_U64, &j->offset) <= 0)
            goto bad_field;
        break;
    case OP_STAT:
    case OP_PIN:
    case OP_UNPIN:
        if (get_field(in.o, bad = "address", F_ADDR, j->addr) <= 0)
            goto bad_field;
        break;
    case OP_LIST: {
        uint64_t lim = STO_SVC_LIST_DEFAULT;
        if ((r = get_field(in.o, bad = "after", F_ADDR, j->addr)) < 0)
            goto bad_field;
        j->has_addr = r > 0;
        if (get_field(in.o, bad = "limit", F_U64, &lim) < 0 || lim == 0 ||
            lim > STO_SVC_LIST_MAX)
            goto bad_field;
        j->limit = (size_t)lim;
        break;
    }
    case OP_GC:
        if (get_field(in.o, bad = "target", F_U64, &j->target) <= 0)
            goto bad_field;
        break;
    case OP_GET: {
        json_t *lv = json_object_get(in.o, "local");
        if (get_field(in.o, bad = "address", F_ADDR, j->addr) <= 0 ||
            get_field(in.o, bad = "offset", F_U64, &j->offset) < 0 ||
            get_field(in.o, bad = "length", F_U64, &j->length) < 0 ||
            get_field(in.o, bad = "ahead", F_U64, &j->ahead) < 0)
            goto bad_field;
        if (lv != NULL && !json_is_boolean(lv)) {
            bad = "local";
            goto bad_field;
        }
        j->local = json_is_true(lv);
        if (j->length > STO_SVC_MAX_CHUNK) {
            answer_error(s, op, req, f->corr_id, 413, NULL, "length", 0,
                         "length: at most 262144 bytes per get");
            goto drop;
        }
        break;
    }
    default:
        break;
    }

    if (s->guard != NULL && !svc_authorize(s, op, req, f, j, &res))
        goto drop;
    if (s->guard != NULL && !res.anonymous && res.verdict.grant.has_tenant &&
        tenant_of(j->tenant) == NULL)
        memcpy(j->tenant, res.verdict.grant.tenant,
               STO_TENANT_LEN); /* acts as the token's tenant */

    /* puts: the table and the limits */
    if (op == OP_PUT_BEGIN) {
        size_t mine = 0;
        svc_put_t *p;
        for (size_t i = 0; i < s->n_puts; i++)
            mine += s->puts[i]->peer == peer;
        if (peer == NULL || mine >= s->lim.puts_per_conn || s->n_puts >= s->lim.puts_total) {
            answer_error(s, op, req, f->corr_id, 429, NULL,
                         peer != NULL && mine >= s->lim.puts_per_conn ? "puts_per_connection"
                                                                      : "puts_total",
                         STO_SVC_RETRY_AFTER_MS, "too many open puts");
            goto drop;
        }
        p = ron_xcalloc(1, sizeof *p);
        p->id = ++s->next_put_id;
        p->peer = peer;
        p->last_ms = ron_now_ms();
        p->max_bytes = UINT64_MAX;
        memcpy(p->tenant, j->tenant, STO_TENANT_LEN);
        if (s->guard != NULL && !res.anonymous) {
            /* kept (RAM, wiped at the end) for the checks of put_write and commit */
            p->token = ron_xmalloc(f->cap_len);
            memcpy(p->token, f->cap, f->cap_len);
            p->token_len = f->cap_len;
            p->max_bytes = res.verdict.grant.max_bytes;
        }
        s->puts[s->n_puts++] = p;
        met_gauge_set(s->open_puts, (double)s->n_puts);
        j->put = p;
    } else if (op == OP_PUT_WRITE || op == OP_PUT_COMMIT || op == OP_PUT_ABORT) {
        svc_put_t *p = put_find(s, put_id, peer);
        if (p == NULL || p->doomed) {
            answer_error(s, op, req, f->corr_id, 404, NULL, "put_id", 0,
                         "put_id: no such open put on this connection");
            goto drop;
        }
        /* put_writes queue behind a running one (bounded); nothing else does */
        if (p->busy && (op != OP_PUT_WRITE || p->sp == NULL || p->writes == 0 ||
                        p->writes >= STO_SVC_PUT_QUEUE)) {
            answer_error(s, op, req, f->corr_id, 409, "put_busy", "put_id", 0,
                         "put_id: a call on this put is still running");
            goto drop;
        }
        if (op == OP_PUT_WRITE) {
            if (j->offset != p->accepted) {
                snprintf(msg, sizeof msg, "offset: the put holds %llu bytes",
                         (unsigned long long)p->accepted);
                answer_error(s, op, req, f->corr_id, 409, NULL, "offset", 0, msg);
                goto drop;
            }
            if (in.raw_len == 0 || in.raw_len > STO_SVC_MAX_CHUNK) {
                answer_error(s, op, req, f->corr_id, in.raw_len == 0 ? 400 : 413, NULL, "raw", 0,
                             "raw: a put_write carries 1..262144 bytes");
                goto drop;
            }
            if (p->accepted + in.raw_len > p->max_bytes) {
                /* the capability's max-bytes (a size put_begin did not declare) */
                guard_req_t gr = {.forwarded = true,
                                  .op = AUTH_OP_PUT,
                                  .token = p->token,
                                  .token_len = p->token_len,
                                  .tenant = tenant_of(p->tenant),
                                  .size = p->accepted + in.raw_len,
                                  .target = "put"};
                (void)guard_reject(s->guard, &gr, RON_ECAPDENY, &res);
                answer_guard(s, op, req, &res);
                put_fail_queue(s, p, 0);
                put_doom(s, p);
                goto drop;
            }
            j->data = ron_xmalloc(in.raw_len);
            memcpy(j->data, in.raw, in.raw_len);
            j->data_len = in.raw_len;
            p->accepted += in.raw_len;
            p->writes++;
        } else {
            put_remove(s, p); /* commit and abort end the put: its id dies now */
        }
        p->last_ms = ron_now_ms();
        j->put = p;
        if (p->busy) { /* a put_write behind the running one */
            if (p->qtail != NULL)
                p->qtail->next = j;
            else
                p->qhead = j;
            p->qtail = j;
            json_decref(in.o);
            return;
        }
    }
    queue_job(s, j);
    json_decref(in.o);
    return;

bad_field:
    snprintf(msg, sizeof msg, "%s: missing or malformed for %s", bad, op_names[op]);
    answer_error(s, op, req, f->corr_id, 400, NULL, bad, 0, msg);
drop:
    free(j->data);
    free(j);
out:
    json_decref(in.o);
}

/* ---- connections, idle puts, lifecycle ---- */

static void
on_peer(void *arg, rbus_peer_t *p, bool up)
{
    sto_service_t *s = arg;
    if (up)
        return;
    for (size_t i = s->n_puts; i-- > 0;)
        if (i < s->n_puts && s->puts[i]->peer == p)
            put_doom(s, s->puts[i]);
}

static void
idle_tick(uv_timer_t *t)
{
    sto_service_t *s = t->data;
    uint64_t now = ron_now_ms();
    for (size_t i = s->n_puts; i-- > 0;) {
        svc_put_t *p;
        if (i >= s->n_puts)
            continue;
        p = s->puts[i];
        if (!p->busy && now - p->last_ms >= s->lim.put_idle_ms) {
            ron_info("storage: put %llu idle for %u ms: aborted", (unsigned long long)p->id,
                     s->lim.put_idle_ms);
            put_doom(s, p);
        }
    }
}

static void
svc_release(sto_service_t *s)
{
    sto_evict_hook_set(s->store, NULL, NULL); /* no worker runs: no GC is in progress */
    pthread_mutex_destroy(&s->evmu);
    free(s->evq);
    if (s->lim.release != NULL)
        s->lim.release(s->lim.release_arg, s->store);
    else
        sto_close(s->store);
    met_registry_free(s->reg);
    free(s->puts);
    free(s);
}

static void
timer_closed(uv_handle_t *h)
{
    sto_service_t *s = h->data;
    s->timer_open = false;
    svc_maybe_free(s);
}

static void
async_closed(uv_handle_t *h)
{
    sto_service_t *s = h->data;
    s->async_open = false;
    svc_maybe_free(s);
}

static void
svc_maybe_free(sto_service_t *s)
{
    if (s->stopping && s->jobs == 0 && s->n_puts == 0 && !s->timer_open && !s->async_open &&
        s->fetches == NULL && s->anns == NULL)
        svc_release(s);
}

int
sto_service_new(uv_loop_t *loop, rbus_t *bus, sto_store_t *store,
                const sto_service_limits_t *lim, sto_service_t **svc_out)
{
    static const char *const labels[] = {"op", "status"};
    static const met_desc_t desc_req = {MET_COUNTER, "storage_requests_total",
                                        "Storage protocol requests by op and status.", labels, 2,
                                        NULL, 0, 0};
    sto_service_t *s = ron_xcalloc(1, sizeof *s);
    met_family_t *fam = NULL;
    int rc;

    s->loop = loop;
    s->bus = bus;
    s->store = store;
    if (lim != NULL)
        s->lim = *lim;
    if (s->lim.puts_per_conn == 0)
        s->lim.puts_per_conn = STO_SVC_PUTS_PER_CONN;
    if (s->lim.puts_total == 0)
        s->lim.puts_total = STO_SVC_PUTS_TOTAL;
    if (s->lim.put_idle_ms == 0)
        s->lim.put_idle_ms = STO_SVC_PUT_IDLE_MS;
    if (s->lim.miss_ttl_ms == 0)
        s->lim.miss_ttl_ms = STO_SVC_MISS_TTL_MS;
    if (s->lim.announce_wait_ms == 0)
        s->lim.announce_wait_ms = STO_SVC_ANNOUNCE_WAIT_MS;
    else if (s->lim.announce_wait_ms > STO_SVC_ANNOUNCE_WAIT_MAX && s->lim.announce_wait_ms != UINT32_MAX)
        s->lim.announce_wait_ms = STO_SVC_ANNOUNCE_WAIT_MAX;
    s->puts = ron_xcalloc(s->lim.puts_total, sizeof *s->puts); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
    s->reg = met_registry_new();
    met_family_register(s->reg, &desc_req, &fam);
    for (int op = 0; op <= OP_COUNT; op++)
        for (size_t i = 0; i < N_STATUS; i++) {
            char code[8];
            const char *vals[2] = {op_names[op], code};
            if (i < RON_ARRAY_LEN(statuses))
                snprintf(code, sizeof code, "%u", statuses[i]);
            else
                snprintf(code, sizeof code, "other");
            s->req[op][i] = met_family_counter(fam, vals);
        }
    met_counter_register(s->reg, "storage_bytes_in_total", "Object bytes received by put_write.",
                         &s->bytes_in);
    met_counter_register(s->reg, "storage_bytes_out_total", "Object bytes sent by get.",
                         &s->bytes_out);
    met_gauge_register(s->reg, "storage_open_puts", "Puts begun and not yet committed or aborted.",
                       &s->open_puts);
    {
        static const char *const rl[] = {"result"};
        static const met_desc_t desc_fetch = {MET_COUNTER, "storage_fetches_total",
                                              "Fetches on miss by how they ended.", rl, 1,
                                              NULL, 0, 0};
        static const met_desc_t desc_prov = {MET_COUNTER, "storage_provides_total",
                                             "Provider announcements after a put or a fetch "
                                             "(skipped: no dht endpoint).", rl, 1, NULL, 0, 0};
        static const char *const fr[] = {"complete", "not_found", "failed"};
        static const char *const pr[] = {"sent", "skipped"};
        met_family_t *ff = NULL, *pf = NULL;
        met_family_register(s->reg, &desc_fetch, &ff);
        for (size_t i = 0; i < 3; i++)
            s->fetch_res[i] = met_family_counter(ff, &fr[i]);
        met_family_register(s->reg, &desc_prov, &pf);
        for (size_t i = 0; i < 2; i++)
            s->provides[i] = met_family_counter(pf, &pr[i]);
        met_counter_register(s->reg, "storage_fetch_bytes_total",
                             "Object bytes fetched from peers, verified and stored.",
                             &s->fetch_bytes);
        met_counter_register(s->reg, "storage_fetch_provider_failures_total",
                             "Overlay fetches that failed (error, timeout, bad piece).",
                             &s->fetch_fail);
        met_counter_register(s->reg, "storage_fetch_misses_cached_total",
                             "Gets of an absent object answered 404 at once: a lookup found no "
                             "provider of it moments ago.",
                             &s->miss_hits);
        put_ann_metrics(s);
        met_counter_register(s->reg, "storage_unprovides_total",
                             "Provider records withdrawn because GC evicted the object.",
                             &s->unprovides);
    }
    pthread_mutex_init(&s->evmu, NULL);
    if ((rc = rbus_handle(bus, OAP_APP_STORAGE, on_request, s)) < 0) {
        svc_release(s);
        return rc;
    }
    uv_async_init(loop, &s->evasync, on_evasync);
    s->evasync.data = s;
    s->async_open = true;
    sto_evict_hook_set(store, on_evict, s);
    rbus_on_peer(bus, on_peer, s);
    uv_timer_init(loop, &s->idle);
    s->idle.data = s;
    s->timer_open = true;
    {
        uint64_t tick = s->lim.put_idle_ms / 4;
        tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
        uv_timer_start(&s->idle, idle_tick, tick, tick);
    }
    *svc_out = s;
    return 0;
}

void
sto_service_free(sto_service_t *s)
{
    if (s == NULL || s->stopping)
        return;
    s->stopping = true;
    rbus_on_peer(s->bus, NULL, NULL);
    for (size_t i = s->n_puts; i-- > 0;)
        if (i < s->n_puts)
            put_doom(s, s->puts[i]);
    for (svc_fetch_t *f = s->fetches, *next; f != NULL; f = next) {
        next = f->next;
        fetch_pump(f); /* answers its gets 503; ends once nothing is in flight */
    }
    put_ann_stop(s);
    uv_close((uv_handle_t *)&s->idle, timer_closed);
    uv_close((uv_handle_t *)&s->evasync, async_closed);
}

size_t
sto_service_metrics(sto_service_t *s, char *buf, size_t cap)
{
    char *text = NULL;
    size_t len = 0;
    if (met_registry_render(s->reg, &text, &len) < 0 || len >= cap) {
        free(text);
        return 0;
    }
    memcpy(buf, text, len);
    free(text);
    return len;
}

size_t
sto_service_open_puts(const sto_service_t *s)
{
    return s->n_puts;
}
