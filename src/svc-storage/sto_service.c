/*
 * sto_service.c - the storage protocol (app_proto_id 1) over ron-bus; wire
 * format in docs/protocol/storage.md. A request is one frame: a big-endian
 * u32 JSON length, compact JSON {"op":...}, then raw bytes (put_write's
 * chunk). A success answer has the same shape (get's bytes follow its JSON);
 * an error answer is the spec §3 envelope alone. The loop thread parses,
 * checks limits and owns the put table; store calls run in uv_queue_work.
 * A get or pin of an object this node lacks goes to fetch on miss
 * (sto_service_fetch.c; shared structs in sto_service_internal.h); a get
 * of an object being fetched is answered from the pieces verified in memory
 * or joins the fetch at once (sto_service_hold.c). A get is answered in
 * place from its read buffer (rbus_respond_owned).
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
#include "sto_service_internal.h"

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
_Static_assert(RON_ARRAY_LEN(statuses) == STO__N_STATUSES, "STO__N_STATUSES");

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
void
sto__answer_error(sto_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, uint16_t code,
                  const char *slug, const char *reason, uint32_t retry_after_ms,
                  const char *message)
{
    count(s, op, code);
    (void)corr_id; /* the bus answers with the request's own corr_id */
    if (req != NULL)
        rbus_respond_error_ex(req, code, slug, reason, retry_after_ms, message);
}

/* Map a store error to an answer. */
void
sto__answer_rc(sto_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, int rc)
{
    const char *msg = ron_strerror(rc);
    switch (rc) {
    case RON_ENOTFOUND:
        sto__answer_error(s, op, req, corr_id, 404, NULL, NULL, 0, msg);
        break;
    case RON_EAGAIN: /* a range of a partial object not verified yet, and no fetch */
        sto__answer_error(s, op, req, corr_id, 404, NULL, NULL, 0,
                          "the range is not held yet (a partial object)");
        break;
    case RON_EDIGEST:
        if (op == OP_GET)
            sto__answer_error(s, op, req, corr_id, 500, NULL, "corrupt", 0,
                              "stored bytes failed verification; nothing was served");
        else
            sto__answer_error(s, op, req, corr_id, 409, "bad_digest", NULL, 0,
                              "bytes do not hash to the expected address; nothing was stored");
        break;
    case RON_ETOOBIG:
        sto__answer_error(s, op, req, corr_id, 413, NULL, NULL, 0, msg);
        break;
    case RON_ESTOREFULL:
        sto__answer_error(s, op, req, corr_id, 507, NULL, NULL, STO_SVC_RETRY_AFTER_MS, msg);
        break;
    case RON_EINVAL:
        sto__answer_error(s, op, req, corr_id, 400, NULL, NULL, 0, msg);
        break;
    default:
        ron_warn("storage %s: %s", op_names[op], msg);
        sto__answer_error(s, op, req, corr_id, 500, NULL, NULL, 0, msg);
        break;
    }
}

void
sto__answer_ok(sto_service_t *s, op_t op, rbus_req_t *req, json_t *o, const void *raw, size_t raw_len)
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

/*
 * answer_ok for a get: block (taken) holds STO__GET_HEADROOM free bytes, then the
 * raw_len bytes read; the frame (u32 length, JSON) is written in front of
 * them and the block goes to the bus as it is (in process: no copy).
 */
static void
answer_ok_owned(sto_service_t *s, op_t op, rbus_req_t *req, json_t *o, uint8_t *block,
                size_t raw_len)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t jl = txt != NULL ? strlen(txt) : 0;
    uint8_t *p;

    if (txt == NULL || RBUS_HEADROOM + 4 + jl > STO__GET_HEADROOM) {
        /* defensive: three u64s always fit; copy otherwise */
        free(txt);
        sto__answer_ok(s, op, req, o, block + STO__GET_HEADROOM, raw_len);
        free(block);
        return;
    }
    json_decref(o);
    count(s, op, 200);
    if (req == NULL) {
        free(txt);
        free(block);
        return;
    }
    p = block + STO__GET_HEADROOM - 4 - jl;
    (void)proto_json_frame(p, txt, (uint32_t)jl);
    (void)rbus_respond_owned(req, 200, block, p, 4 + jl + raw_len);
    met_counter_add(s->bytes_out, raw_len);
    free(txt);
}

void
sto__get_answer(sto_service_t *s, job_t *j)
{
    json_t *o;

    if (j->rc == 0 && j->past_end) {
        sto__answer_error(s, j->op, j->req, j->corr_id, 416, NULL, "offset", 0,
                          "offset: past the end of the object");
        return;
    }
    if (j->rc < 0) {
        sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
        return;
    }
    o = json_object();
    json_object_set_new(o, "size", sto__json_u64(j->size));
    json_object_set_new(o, "offset", sto__json_u64(j->offset));
    json_object_set_new(o, "length", sto__json_u64((uint64_t)j->got));
    answer_ok_owned(s, j->op, j->req, o, j->data, (size_t)j->got);
    j->data = NULL; /* handed to the bus */
}

json_t *
sto__json_u64(uint64_t v)
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
    json_object_set_new(o, "size", sto__json_u64(st->size));
    json_object_set_new(o, "created", sto__json_u64(st->created));
    json_object_set_new(o, "pins", sto__json_u64(st->pins));
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

/* Abort p (not busy) on a worker: it leaves the table now. */
static void
put_abort_internal(sto_service_t *s, svc_put_t *p)
{
    job_t *j = ron_xcalloc(1, sizeof *j);
    put_remove(s, p);
    j->op = OP_PUT_ABORT;
    j->put = p;
    sto__queue_job(s, j);
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
            sto__answer_rc(s, OP_PUT_WRITE, j->req, j->corr_id, rc);
        else if (s->stopping)
            sto__answer_error(s, OP_PUT_WRITE, j->req, j->corr_id, 503, NULL, NULL,
                              STO_SVC_RETRY_AFTER_MS, "storage is stopping");
        else
            sto__answer_error(s, OP_PUT_WRITE, j->req, j->corr_id, 404, NULL, "put_id", 0,
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
        j->data = ron_xmalloc(STO__GET_HEADROOM + (j->length > 0 ? j->length : 1));
        j->got = sto_partial_read(p, j->offset, j->data + STO__GET_HEADROOM, j->length);
        if (j->got < 0)
            j->rc = (int)j->got;
    }
    sto_partial_close(p);
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
                j->data = ron_xmalloc(STO__GET_HEADROOM + (j->length > 0 ? j->length : 1));
                j->got = sto_reader_read(r, j->offset, j->data + STO__GET_HEADROOM, j->length);
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
        sto__fetch_job_work(st, j);
        break;
    default:
        j->rc = RON_EINVAL;
        break;
    }
}

void
sto__job_free(job_t *j)
{
    if (j == NULL)
        return;
    if (j->token != NULL) {
        explicit_bzero(j->token, j->token_len);
        free(j->token);
    }
    free(j->data);
    free(j->list);
    free(j);
}

static void answer_guard(sto_service_t *s, op_t op, rbus_req_t *req, const guard_result_t *res);

/*
 * A pin of an object this node lacks fetches it: besides the pin check its
 * request passed, the fetch reads the object, so the capability must also
 * allow a get of the address (the check a get that fetches passes). Returns
 * true when allowed; false after answering the rejection.
 */
static bool
pin_may_fetch(sto_service_t *s, job_t *j)
{
    guard_req_t gr = {0};
    guard_result_t res;
    char hex[68];

    if (s->guard == NULL)
        return true;
    sto_addr_format(j->addr, hex);
    gr.op = AUTH_OP_GET;
    gr.token = j->token;
    gr.token_len = j->token_len;
    gr.tenant = tenant_of(j->tenant);
    gr.addr = hex;
    gr.target = hex;
    gr.size = AUTH_SIZE_UNKNOWN;
    gr.forwarded = true; /* a bus request: its rate caveat was charged at the edge */
    if (guard_check(s->guard, &gr, &res) == 0)
        return true;
    answer_guard(s, OP_PIN, j->req, &res);
    return false;
}

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
        sto__fetch_job_done(s, j);
        sto__svc_maybe_free(s);
        return;
    }
    if (((j->op == OP_GET && (j->rc == RON_ENOTFOUND || j->rc == RON_EAGAIN)) ||
         (j->op == OP_PIN && j->rc == RON_ENOTFOUND)) &&
        !j->local && s->dht != NULL && s->ovl != NULL && !s->stopping) {
        /* fetch on miss: the get waits for its pieces, the pin for the whole object */
        bool absent = j->rc == RON_ENOTFOUND; /* not even a partial object (get) */
        free(j->data);
        j->data = NULL;
        j->rc = 0;
        if (j->op == OP_PIN && !pin_may_fetch(s, j)) {
            sto__job_free(j);
            return;
        }
        if (absent && sto__miss_known(s, j->addr, ron_now_ms()) &&
            sto__fetch_find(s, j->addr) == NULL) {
            met_counter_inc(s->miss_hits);
            sto__answer_error(s, j->op, j->req, j->corr_id, 404, NULL, NULL, 0,
                              "no provider of this object was found");
            sto__job_free(j);
            return;
        }
        sto__fetch_join(s, j);
        return;
    }
    if (p != NULL)
        p->busy = false;
    switch (j->op) {
    case OP_PUT_BEGIN:
        if (j->rc < 0) {
            put_remove(s, p);
            put_free(p);
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        p->sp = j->new_sp;
        p->last_ms = ron_now_ms();
        o = json_object();
        json_object_set_new(o, "put_id", sto__json_u64(p->id));
        sto__answer_ok(s, j->op, j->req, o, NULL, 0);
        if (p->doomed || s->stopping)
            put_abort_internal(s, p);
        break;
    case OP_PUT_WRITE:
        p->last_ms = ron_now_ms();
        p->writes--;
        if (j->rc < 0) {
            /* a failed write fails the put (the store refuses later writes): drop it */
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
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
            sto__queue_job(s, next);
        }
        o = json_object();
        json_object_set_new(o, "written", sto__json_u64(p->written));
        sto__answer_ok(s, j->op, j->req, o, NULL, 0);
        if (p->doomed || s->stopping)
            put_abort_internal(s, p);
        break;
    case OP_PUT_COMMIT:
        put_free(p);
        if (j->cap_denied) {
            sto__answer_error(s, j->op, j->req, j->corr_id, (uint16_t)j->cap_res.status,
                              j->cap_res.slug, j->cap_res.slug, j->cap_res.retry_after_s * 1000u,
                              j->cap_reason);
            break;
        }
        if (j->rc < 0) {
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "address", json_addr(j->addr));
        json_object_set_new(o, "created", json_boolean(j->created));
        json_object_set_new(o, "size", sto__json_u64(j->st.size));
        sto__put_ann_start(s, j, o); /* DESIGN §4: announce what was put, then answer */
        break;
    case OP_PUT_ABORT:
        put_free(p);
        if (j->req != NULL)
            sto__answer_ok(s, j->op, j->req, json_object(), NULL, 0);
        break;
    case OP_STAT:
        if (j->rc < 0) {
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
        } else if (j->partial_stat) {
            o = json_object();
            json_object_set_new(o, "address", json_addr(j->addr));
            json_object_set_new(o, "size", sto__json_u64(j->size));
            json_object_set_new(o, "state", json_string("partial"));
            json_object_set_new(o, "verified", sto__json_u64(j->verified));
            sto__answer_ok(s, j->op, j->req, o, NULL, 0);
        } else {
            sto__answer_ok(s, j->op, j->req, stat_json(&j->st), NULL, 0);
        }
        break;
    case OP_LIST:
        if (j->rc < 0) {
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
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
        sto__answer_ok(s, j->op, j->req, o, NULL, 0);
        break;
    case OP_PIN:
    case OP_UNPIN:
        if (j->rc < 0) {
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "address", json_addr(j->addr));
        json_object_set_new(o, "pins", sto__json_u64(j->pins));
        if (j->fetched)
            json_object_set_new(o, "fetched", json_true());
        sto__answer_ok(s, j->op, j->req, o, NULL, 0);
        break;
    case OP_GC:
        if (j->rc < 0) {
            sto__answer_rc(s, j->op, j->req, j->corr_id, j->rc);
            break;
        }
        o = json_object();
        json_object_set_new(o, "freed", sto__json_u64(j->freed));
        sto__answer_ok(s, j->op, j->req, o, NULL, 0);
        break;
    case OP_GET:
        sto__get_answer(s, j);
        break;
    default:
        break;
    }
    sto__job_free(j);
    sto__svc_maybe_free(s);
}

void
sto__queue_job(sto_service_t *s, job_t *j)
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
    sto__answer_error(s, op, req, 0, (uint16_t)res->status, res->slug, res->slug,
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
        sto__answer_error(s, op, req, f->corr_id, 503, NULL, NULL, STO_SVC_RETRY_AFTER_MS,
                          "storage is stopping");
        return;
    }
    if ((err = parse_frame(f, &in)) != NULL) {
        sto__answer_error(s, op, req, f->corr_id, 400, NULL, NULL, 0, err);
        return;
    }
    opname = json_string_value(json_object_get(in.o, "op"));
    for (int i = 0; opname != NULL && i < OP_COUNT; i++)
        if (strcmp(opname, op_names[i]) == 0)
            op = (op_t)i;
    if (op == OP_BAD) {
        snprintf(msg, sizeof msg, "op: unknown operation '%.64s'", opname != NULL ? opname : "");
        sto__answer_error(s, op, req, f->corr_id, 400, NULL, "op", 0, msg);
        goto out;
    }
    if ((bad = unknown_field(in.o, op)) != NULL) {
        snprintf(msg, sizeof msg, "%.64s: unknown field for %s", bad, op_names[op]);
        sto__answer_error(s, op, req, f->corr_id, 400, NULL, bad, 0, msg);
        goto out;
    }
    if (in.raw_len > 0 && op != OP_PUT_WRITE) {
        sto__answer_error(s, op, req, f->corr_id, 400, NULL, "raw", 0,
                          "raw bytes only follow put_write");
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
            sto__answer_error(s, op, req, f->corr_id, 413, NULL, "length", 0,
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
    if (op == OP_PIN && s->guard != NULL && s->ovl != NULL && f->cap_len > 0) {
        /* kept (RAM, wiped with the job) for the get check of a pin that fetches */
        j->token = ron_xmalloc(f->cap_len);
        memcpy(j->token, f->cap, f->cap_len);
        j->token_len = f->cap_len;
    }
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
            sto__answer_error(s, op, req, f->corr_id, 429, NULL,
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
            sto__answer_error(s, op, req, f->corr_id, 404, NULL, "put_id", 0,
                              "put_id: no such open put on this connection");
            goto drop;
        }
        /* put_writes queue behind a running one (bounded); nothing else does */
        if (p->busy && (op != OP_PUT_WRITE || p->sp == NULL || p->writes == 0 ||
                        p->writes >= STO_SVC_PUT_QUEUE)) {
            sto__answer_error(s, op, req, f->corr_id, 409, "put_busy", "put_id", 0,
                              "put_id: a call on this put is still running");
            goto drop;
        }
        if (op == OP_PUT_WRITE) {
            if (j->offset != p->accepted) {
                snprintf(msg, sizeof msg, "offset: the put holds %llu bytes",
                         (unsigned long long)p->accepted);
                sto__answer_error(s, op, req, f->corr_id, 409, NULL, "offset", 0, msg);
                goto drop;
            }
            if (in.raw_len == 0 || in.raw_len > STO_SVC_MAX_CHUNK) {
                sto__answer_error(s, op, req, f->corr_id, in.raw_len == 0 ? 400 : 413, NULL, "raw",
                                  0, "raw: a put_write carries 1..262144 bytes");
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
    if (op == OP_GET && !j->local && sto__hold_get(s, j)) {
        /* a get of an object being fetched: answered from the pieces verified
         * in memory, or waits with the fetch, without a worker call */
        json_decref(in.o);
        return;
    }
    sto__queue_job(s, j);
    json_decref(in.o);
    return;

bad_field:
    snprintf(msg, sizeof msg, "%s: missing or malformed for %s", bad, op_names[op]);
    sto__answer_error(s, op, req, f->corr_id, 400, NULL, bad, 0, msg);
drop:
    sto__job_free(j);
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
    sto__svc_maybe_free(s);
}

static void
async_closed(uv_handle_t *h)
{
    sto_service_t *s = h->data;
    s->async_open = false;
    sto__svc_maybe_free(s);
}

void
sto__svc_maybe_free(sto_service_t *s)
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
    else if (s->lim.announce_wait_ms > STO_SVC_ANNOUNCE_WAIT_MAX &&
             s->lim.announce_wait_ms != UINT32_MAX)
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
        met_counter_register(s->reg, "storage_fetch_gets_from_memory_total",
                             "Gets of an object being fetched answered from the pieces verified "
                             "in memory as they arrived, without reading them back.",
                             &s->hold_gets);
        met_counter_register(s->reg, "storage_fetch_misses_cached_total",
                             "Gets of an absent object answered 404 at once: a lookup found no "
                             "provider of it moments ago.",
                             &s->miss_hits);
        sto__put_ann_metrics(s);
        met_counter_register(s->reg, "storage_unprovides_total",
                             "Provider records withdrawn because GC evicted the object.",
                             &s->unprovides);
    }
    pthread_mutex_init(&s->evmu, NULL);
    if ((rc = rbus_handle(bus, OAP_APP_STORAGE, on_request, s)) < 0) {
        svc_release(s);
        return rc;
    }
    uv_async_init(loop, &s->evasync, sto__on_evasync);
    s->evasync.data = s;
    s->async_open = true;
    sto_evict_hook_set(store, sto__on_evict, s);
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
        sto__fetch_pump(f); /* answers its gets 503; ends once nothing is in flight */
    }
    sto__put_ann_stop(s);
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
