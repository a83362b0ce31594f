/*
 * idx_service.c - the index & naming protocol (app_proto_id 2) over
 * ron-bus; wire format in docs/protocol/index.md. Same framing as the
 * storage protocol: a request is one frame holding a big-endian u32 JSON
 * length and compact JSON {"op":...} (no raw bytes follow here); a success
 * answer has the same shape, an error answer is the spec §3 envelope alone.
 * Records travel in ron-naming's JSON form and are checked by its strict
 * parser; the acceptance rule runs inside idx_publish on a worker thread.
 * Invariants: one answer per request; the service and its idx are freed
 * only with no job in flight.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dht_client.h"
#include "idx_service.h"
#include "proto_svc.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_proto.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_util.h"

typedef enum { OP_PUBLISH = 0, OP_RESOLVE, OP_LIST, OP_COUNT, OP_BAD = OP_COUNT } op_t;

/* The ops and the keys each allows beside "op" (docs/protocol/index.md). */
static const char *const publish_fields[] = {"record", NULL};
static const char *const resolve_fields[] = {"name", NULL};
static const char *const list_fields[] = {"prefix", "after", "limit", NULL};
static const proto_svc_op_t ops[OP_COUNT] = {
    [OP_PUBLISH] = {"publish", publish_fields},
    [OP_RESOLVE] = {"resolve", resolve_fields},
    [OP_LIST] = {"list", list_fields},
};
static const proto_svc_desc_t svc_desc = {
    .what = "index",
    .metric = "index_requests_total",
    .help = "Index protocol requests by op and status.",
    .ops = ops,
    .n_ops = OP_COUNT,
    .max_json = IDX_SVC_MAX_JSON,
};
#define IDX_SVC_RETRY_AFTER_MS 1000u

struct idx_service {
    uv_loop_t *loop;
    idx_t *idx;
    void (*release)(void *arg, idx_t *idx); /* NULL: idx_free */
    void *release_arg;
    bool stopping;
    size_t jobs;
    proto_svc_t *ps;  /* op table, request checks, counters by op and status */
    rbus_peer_t *dht; /* borrowed; NULL: names stay local */
    guard_t *guard;   /* borrowed; NULL: no enforcement (unit tests) */
    met_counter_t *dht_put_ok, *dht_put_failed, *dht_found, *dht_missed;
};

typedef struct {
    uv_work_t work;
    idx_service_t *svc;
    op_t op;
    rbus_req_t *req;
    uint64_t corr_id;
    name_record_t rec;
    char name[NAME_MAX_LEN + 1];
    char after[NAME_MAX_LEN + 1];
    size_t limit;
    name_record_t *list;
    size_t n;
    bool more;
    name_err_t nerr;
    int rc;
    bool dht_tried; /* resolve: the DHT was asked after a local miss */
    bool store;     /* resolve: keep j->rec (from the DHT), then answer the current record */
} job_t;

static void
answer_error(idx_service_t *s, op_t op, rbus_req_t *req, uint64_t corr_id, uint16_t code,
             const char *reason, uint32_t retry_after_ms, const char *message)
{
    proto_svc_count(s->ps, (int)op, code);
    (void)corr_id; /* the bus answers with the request's own corr_id */
    if (req != NULL)
        rbus_respond_error_ex(req, code, NULL, reason, retry_after_ms, message);
}

/* The service's own capability (guard_self_token) for the DHT requests it
 * makes on its own behalf (name_put after a publish, name_get on a miss).
 * NULL without a guard. */
static const char *
svc_self_token(idx_service_t *s, char buf[static AUTH_MAX_TOKEN + 1])
{
    if (s->guard == NULL || guard_self_token(s->guard, buf, AUTH_MAX_TOKEN + 1) < 0)
        return NULL;
    return buf;
}

/*
 * The capability check of a parsed request (docs/protocol/index.md
 * "Capabilities"): publish needs the name op for the record's name;
 * resolve and list are reads (get: public under the default policy). The
 * token is the frame's cap section, the tenant its tenant_id. Returns true
 * when allowed; false after answering the rejection (guard_check counted
 * and audited it).
 */
static bool
svc_authorize(idx_service_t *s, op_t op, rbus_req_t *req, const oap_frame_t *f, const char *name)
{
    static const uint8_t zero[16];
    guard_req_t gr = {0};
    guard_result_t res;

    gr.op = op == OP_PUBLISH ? AUTH_OP_NAME : AUTH_OP_GET;
    gr.token = f->cap_len > 0 ? (const char *)f->cap : NULL;
    gr.token_len = f->cap_len;
    gr.tenant = memcmp(f->tenant_id, zero, sizeof zero) != 0 ? f->tenant_id : NULL;
    gr.size = AUTH_SIZE_UNKNOWN;
    gr.name = name[0] != '\0' ? name : NULL;
    gr.target = name[0] != '\0' ? name : proto_svc_op_name(s->ps, (int)op);
    gr.forwarded = true; /* a bus request: its rate caveat was charged at the edge */
    if (guard_check(s->guard, &gr, &res) == 0)
        return true;
    proto_svc_count(s->ps, (int)op, (uint16_t)res.status);
    rbus_respond_error_ex(req, (uint16_t)res.status, res.slug, res.slug, res.retry_after_s * 1000u,
                          res.reason);
    return false;
}

/* Answer 200 with o (taken), framed as a u32 length and the JSON. */
static void
answer_ok(idx_service_t *s, op_t op, rbus_req_t *req, json_t *o)
{
    uint8_t *buf;
    size_t len;

    if (proto_svc_frame_ok(s->ps, (int)op, o, &buf, &len) < 0) {
        answer_error(s, op, req, 0, 500, NULL, 0, "cannot encode the answer");
        return;
    }
    rbus_respond(req, 200, buf, len);
    free(buf);
}

/* The index's error codes and their answers (docs/protocol/index.md). */
static const proto_svc_rc_t rc_answers[] = {
    {RON_ERECORD, 400, "record", 0},
    {RON_EJSON, 400, "record", 0},
    {RON_ETOOBIG, 400, "record", 0},
    {RON_ENAME, 400, "name", 0},
    {RON_ENAMEFUTURE, 400, "ts", 0},
    {RON_ENAMESIG, 403, "bad_signature", 0},
    {RON_ENAMEOWNER, 403, "owner", 0},
    {RON_ENAMESTALE, 409, "stale_seq", 0},
    {RON_ENOTFOUND, 404, NULL, 0},
    {RON_EIDXFULL, 507, NULL, IDX_SVC_RETRY_AFTER_MS},
    {RON_EINVAL, 400, NULL, 0},
};

static void
answer_rc(idx_service_t *s, job_t *j)
{
    const char *msg = j->nerr.msg[0] != '\0' ? j->nerr.msg : ron_strerror(j->rc);
    const proto_svc_rc_t *a = proto_svc_rc_find(rc_answers, RON_ARRAY_LEN(rc_answers), j->rc);

    if (a != NULL) {
        answer_error(s, j->op, j->req, j->corr_id, a->code, a->reason, a->retry_after_ms, msg);
        return;
    }
    ron_warn("index %s: %s", proto_svc_op_name(s->ps, (int)j->op), ron_strerror(j->rc));
    answer_error(s, j->op, j->req, j->corr_id, 500, NULL, 0, ron_strerror(j->rc));
}

/* ---- worker side ---- */

static void
job_work(uv_work_t *w)
{
    job_t *j = ron_container_of(w, job_t, work);
    idx_t *idx = j->svc->idx;
    if (j->store) {
        /* a record from the DHT: the acceptance rule decides, as for a publish */
        j->rc = idx_publish(idx, &j->rec, (int64_t)time(NULL), &j->nerr);
        if (j->rc != 0 && j->rc != RON_ENAMEDUP)
            j->rc = idx_resolve(idx, j->name, &j->rec);
        else
            j->rc = 0;
        return;
    }
    switch (j->op) {
    case OP_PUBLISH:
        j->rc = idx_publish(idx, &j->rec, (int64_t)time(NULL), &j->nerr);
        break;
    case OP_RESOLVE:
        j->rc = idx_resolve(idx, j->name, &j->rec);
        break;
    case OP_LIST:
        j->list = ron_xcalloc(j->limit, sizeof *j->list);
        j->rc = idx_list(idx, j->name, j->after[0] != '\0' ? j->after : NULL, j->list, j->limit,
                         &j->n, &j->more);
        break;
    default:
        j->rc = RON_EINVAL;
        break;
    }
}

static void
svc_maybe_free(idx_service_t *s)
{
    if (s->stopping && s->jobs == 0) {
        if (s->release != NULL)
            s->release(s->release_arg, s->idx);
        else
            idx_free(s->idx);
        proto_svc_free(s->ps);
        free(s);
    }
}

static void job_done(uv_work_t *w, int status);

static void
on_dht_put(void *arg, const dht_client_result_t *res)
{
    idx_service_t *s = arg;
    s->jobs--;
    met_counter_inc(res->status == 0 && res->code == 200 ? s->dht_put_ok : s->dht_put_failed);
    svc_maybe_free(s);
}

/* The DHT's answer to a local resolve miss. */
static void
on_dht_name(void *arg, const dht_client_result_t *res)
{
    job_t *j = arg;
    idx_service_t *s = j->svc;

    if (res->status == 0 && res->code == 200 && res->rec != NULL &&
        strcmp(res->rec->name, j->name) == 0 && !s->stopping) {
        met_counter_inc(s->dht_found);
        j->rec = *res->rec;
        j->store = true;
        if (uv_queue_work(s->loop, &j->work, job_work, job_done) < 0) {
            job_work(&j->work);
            job_done(&j->work, 0);
        }
        return;
    }
    met_counter_inc(s->dht_missed);
    j->rc = RON_ENOTFOUND;
    job_done(&j->work, 0);
}

static void
job_done(uv_work_t *w, int status)
{
    job_t *j = ron_container_of(w, job_t, work);
    idx_service_t *s = j->svc;
    json_t *o;
    (void)status;

    s->jobs--;
    if (j->op == OP_RESOLVE && j->rc == RON_ENOTFOUND && s->dht != NULL && !s->stopping &&
        !j->dht_tried) {
        char tok[AUTH_MAX_TOKEN + 1];
        j->dht_tried = true;
        s->jobs++;
        if (dht_client_name_get_cap(s->dht, j->name, svc_self_token(s, tok), on_dht_name, j) == 0)
            return;
        s->jobs--;
    }
    if (j->op == OP_PUBLISH && (j->rc == 0 || j->rc == RON_ENAMEDUP) && s->dht != NULL &&
        !s->stopping) {
        char tok[AUTH_MAX_TOKEN + 1];
        s->jobs++;
        if (dht_client_name_put_cap(s->dht, &j->rec, svc_self_token(s, tok), on_dht_put, s) < 0) {
            s->jobs--;
            met_counter_inc(s->dht_put_failed);
        }
    }
    if (j->rc < 0 && !(j->op == OP_PUBLISH && j->rc == RON_ENAMEDUP)) {
        answer_rc(s, j);
    } else if (j->op == OP_PUBLISH) {
        o = json_object();
        json_object_set_new(o, "name", json_string(j->rec.name));
        json_object_set_new(o, "status", json_string(j->rc == 0 ? "published" : "unchanged"));
        answer_ok(s, j->op, j->req, o);
    } else if (j->op == OP_RESOLVE) {
        o = json_object();
        json_object_set_new(o, "record", name_record_to_object(&j->rec));
        answer_ok(s, j->op, j->req, o);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < j->n; i++)
            json_array_append_new(a, name_record_to_object(&j->list[i]));
        o = json_object();
        json_object_set_new(o, "records", a);
        json_object_set_new(o, "more", json_boolean(j->more));
        answer_ok(s, j->op, j->req, o);
    }
    free(j->list);
    free(j);
    svc_maybe_free(s);
}

/* ---- requests ---- */

static void
on_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    idx_service_t *s = arg;
    proto_svc_req_t in;
    proto_svc_fail_t fail;
    json_t *o;
    const char *bad;
    op_t op;
    job_t *j = NULL;
    char msg[256];

    if (s->stopping) {
        answer_error(s, OP_BAD, req, f->corr_id, 503, NULL, IDX_SVC_RETRY_AFTER_MS,
                     "index is stopping");
        return;
    }
    if (proto_svc_parse(s->ps, f->payload, f->payload_len, &in, &fail) < 0) {
        answer_error(s, (op_t)in.op, req, f->corr_id, fail.code,
                     fail.reason[0] != '\0' ? fail.reason : NULL, 0, fail.message);
        return;
    }
    o = in.o;
    op = (op_t)in.op;
    j = ron_xcalloc(1, sizeof *j);
    j->op = op;
    j->req = req;
    j->corr_id = f->corr_id;
    j->limit = IDX_SVC_LIST_DEFAULT;
    if (op == OP_PUBLISH) {
        json_t *rec = json_object_get(o, "record");
        int rc;
        if (!json_is_object(rec)) {
            answer_error(s, op, req, f->corr_id, 400, "record", 0,
                         "record: missing or not an object");
            goto drop;
        }
        rc = name_record_from_object(&j->rec, rec, &j->nerr);
        if (rc < 0) {
            j->rc = rc;
            answer_rc(s, j);
            goto drop;
        }
    } else if (op == OP_RESOLVE) {
        char raw[NAME_MAX_INPUT + 1];
        name_err_t nerr;
        if (proto_svc_get_text(o, "name", raw, sizeof raw) <= 0) {
            answer_error(s, op, req, f->corr_id, 400, "name", 0, "name: missing or malformed");
            goto drop;
        }
        if (name_normalize(raw, strlen(raw), j->name, &nerr) < 0) {
            answer_error(s, op, req, f->corr_id, 400, "name", 0, nerr.msg);
            goto drop;
        }
    } else {
        char lim[24];
        uint64_t v = IDX_SVC_LIST_DEFAULT;
        int r;
        if (proto_svc_get_text(o, bad = "prefix", j->name, sizeof j->name) < 0 ||
            proto_svc_get_text(o, bad = "after", j->after, sizeof j->after) < 0 ||
            (r = proto_svc_get_text(o, bad = "limit", lim, sizeof lim)) < 0 ||
            (r > 0 && (ron_parse_u64(lim, strlen(lim), &v) < 0 || v == 0 ||
                       v > IDX_SVC_LIST_MAX))) {
            snprintf(msg, sizeof msg, "%s: malformed for list", bad);
            answer_error(s, op, req, f->corr_id, 400, bad, 0, msg);
            goto drop;
        }
        j->limit = (size_t)v;
    }
    if (s->guard != NULL && !svc_authorize(s, op, req, f,
                                           op == OP_PUBLISH   ? j->rec.name
                                           : op == OP_RESOLVE ? j->name
                                                              : ""))
        goto drop;
    j->svc = s;
    s->jobs++;
    if (uv_queue_work(s->loop, &j->work, job_work, job_done) < 0) {
        job_work(&j->work);
        job_done(&j->work, 0);
    }
    json_decref(o);
    return;
drop:
    free(j);
    json_decref(o);
}

int
idx_service_new(uv_loop_t *loop, rbus_t *bus, idx_t *idx, idx_service_t **svc_out)
{
    return idx_service_new_shared(loop, bus, idx, NULL, NULL, svc_out);
}

int
idx_service_new_shared(uv_loop_t *loop, rbus_t *bus, idx_t *idx,
                       void (*release)(void *arg, idx_t *idx), void *arg,
                       idx_service_t **svc_out)
{
    idx_service_t *s = ron_xcalloc(1, sizeof *s);
    met_registry_t *mreg;
    int rc;

    s->loop = loop;
    s->idx = idx;
    s->release = release;
    s->release_arg = arg;
    if ((rc = proto_svc_new(&svc_desc, &s->ps)) < 0) {
        s->stopping = true;
        svc_maybe_free(s); /* as below: the service owns idx from here */
        return rc;
    }
    mreg = proto_svc_registry(s->ps);
    met_counter_register(mreg, "index_dht_puts_total",
                         "Published records the DHT accepted (dht name_put answered 200).",
                         &s->dht_put_ok);
    met_counter_register(mreg, "index_dht_put_failures_total",
                         "Published records the DHT did not take (unreachable or refused).",
                         &s->dht_put_failed);
    met_counter_register(mreg, "index_dht_resolved_total",
                         "Local resolve misses answered from the DHT.", &s->dht_found);
    met_counter_register(mreg, "index_dht_misses_total",
                         "Local resolve misses the DHT did not answer either.", &s->dht_missed);
    if ((rc = rbus_handle(bus, OAP_APP_INDEX, on_request, s)) < 0) {
        s->stopping = true;
        svc_maybe_free(s);
        return rc;
    }
    *svc_out = s;
    return 0;
}

void
idx_service_free(idx_service_t *s)
{
    if (s == NULL || s->stopping)
        return;
    s->stopping = true;
    svc_maybe_free(s);
}

void
idx_service_set_guard(idx_service_t *s, guard_t *g)
{
    s->guard = g;
}

void
idx_service_set_dht(idx_service_t *s, rbus_peer_t *dht)
{
    s->dht = dht;
}

size_t
idx_service_metrics(idx_service_t *s, char *buf, size_t cap)
{
    return proto_svc_metrics(s->ps, buf, cap);
}
