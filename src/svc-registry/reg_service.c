/*
 * reg_service.c - the registry protocol (app_proto_id 9) over ron-bus; wire
 * format in docs/protocol/registry.md. Same framing as the storage and index
 * protocols: a request is one frame holding a big-endian u32 JSON length and
 * compact JSON {"op":...}; a success answer has the same shape, an error
 * answer is the spec §3 envelope alone. Requests are checked strictly on
 * the loop (unknown fields, malformed hex, the descriptor's own parser);
 * the registry call runs on a worker thread.
 * Invariants: one answer per request; the service and its reg_t are freed
 * only with no job in flight; at most REG_SVC_MAX_JOBS jobs at once.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto_svc.h"
#include "reg_service.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_proto.h"
#include "ron_util.h"

typedef enum {
    OP_HEAD = 0,
    OP_GET,
    OP_PROPOSE,
    OP_APPROVE,
    OP_COMMIT,
    OP_SIGNERS,
    OP_COUNT,
    OP_BAD = OP_COUNT
} op_t;

/* The ops and the keys each allows beside "op" (docs/protocol/registry.md). */
static const char *const no_fields[] = {NULL};
static const char *const get_fields[] = {"version", NULL};
static const char *const propose_fields[] = {"descriptor", NULL};
static const char *const approve_fields[] = {"id", "pk", "sig", NULL};
static const char *const commit_fields[] = {"id", NULL};
static const proto_svc_op_t ops[OP_COUNT] = {
    [OP_HEAD] = {"head", no_fields},
    [OP_GET] = {"get", get_fields},
    [OP_PROPOSE] = {"propose", propose_fields},
    [OP_APPROVE] = {"approve", approve_fields},
    [OP_COMMIT] = {"commit", commit_fields},
    [OP_SIGNERS] = {"signers", no_fields},
};
static const proto_svc_desc_t svc_desc = {
    .what = "registry",
    .metric = "registry_requests_total",
    .help = "Registry protocol requests by op and status.",
    .ops = ops,
    .n_ops = OP_COUNT,
    .max_json = REG_SVC_MAX_JSON,
};
#define REG_SVC_RETRY_AFTER_MS 1000u

struct reg_service {
    uv_loop_t *loop;
    reg_t *reg;
    guard_t *guard; /* NULL: no enforcement (unit tests) */
    bool stopping;
    size_t jobs;
    proto_svc_t *ps; /* op table, request checks, counters by op and status */
    met_gauge_t *head;
};

typedef struct {
    uv_work_t work;
    reg_service_t *svc;
    op_t op;
    rbus_req_t *req;
    reg_desc_t *desc; /* propose: the descriptor; signers: the head's */
    uint64_t version;
    uint8_t id[REG_HASH_LEN];
    uint8_t pk[REG_KEY_LEN];
    uint8_t sig[REG_SIG_LEN];
    uint8_t hash[REG_HASH_LEN];
    bool writable;
    size_t approvals;
    uint32_t threshold;
    char *text;
    size_t text_len;
    reg_err_t err;
    int rc;
} job_t;

static void
answer_error(reg_service_t *s, op_t op, rbus_req_t *req, uint16_t code, const char *reason,
             uint32_t retry_after_ms, const char *message)
{
    proto_svc_count(s->ps, (int)op, code);
    rbus_respond_error_ex(req, code, NULL, reason, retry_after_ms, message);
}

/* Answer 200 with o (taken), framed as a u32 length and the JSON. */
static void
answer_ok(reg_service_t *s, op_t op, rbus_req_t *req, json_t *o)
{
    uint8_t *buf;
    size_t len;

    if (proto_svc_frame_ok(s->ps, (int)op, o, &buf, &len) < 0) {
        answer_error(s, op, req, 500, NULL, 0, "cannot encode the answer");
        return;
    }
    rbus_respond(req, 200, buf, len);
    free(buf);
}

/* The registry's error codes and their answers (docs/protocol/registry.md). */
static const proto_svc_rc_t rc_answers[] = {
    {RON_EREGDESC, 400, "descriptor", 0},
    {RON_EREGLIMIT, 400, "descriptor", 0},
    {RON_ENOTFOUND, 404, NULL, 0},
    {RON_EREGSIG, 403, "bad_signature", 0},
    {RON_EREGSIGNER, 403, "unknown_signer", 0},
    {RON_EREGREVOKED, 403, "revoked_signer", 0},
    {RON_EREGDUP, 409, "duplicate_approval", 0},
    {RON_EREGSTALE, 409, "stale_base", 0},
    {RON_EREGQUORUM, 409, "quorum", 0},
    {RON_EREGRDONLY, 503, "read_only", 0},
    {RON_EREGFULL, 507, "full", 0},
};

static void
answer_rc(reg_service_t *s, op_t op, rbus_req_t *req, int rc, const char *detail)
{
    const char *msg = detail != NULL && detail[0] != '\0' ? detail : ron_strerror(rc);
    const proto_svc_rc_t *a = proto_svc_rc_find(rc_answers, RON_ARRAY_LEN(rc_answers), rc);

    if (a != NULL) {
        answer_error(s, op, req, a->code, a->reason, a->retry_after_ms, msg);
        return;
    }
    ron_warn("registry %s: %s", proto_svc_op_name(s->ps, (int)op), ron_strerror(rc));
    answer_error(s, op, req, 500, NULL, 0, ron_strerror(rc));
}

static json_t *
hex_json(const uint8_t *b, size_t n, bool b3)
{
    char hex[3 + 2 * REG_SIG_LEN + 1] = "b3:";
    ron_hex_encode(hex + 3, b, n);
    return json_string(b3 ? hex : hex + 3);
}

static json_t *
u64_json(uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    return json_string(num);
}

/* ---- worker side ---- */

static void
job_work(uv_work_t *w)
{
    job_t *j = ron_container_of(w, job_t, work);
    reg_t *reg = j->svc->reg;
    switch (j->op) {
    case OP_HEAD:
        reg_head(reg, &j->version, j->hash, &j->writable);
        j->rc = 0;
        break;
    case OP_GET:
        j->rc = reg_get(reg, j->version, &j->text, &j->text_len);
        break;
    case OP_PROPOSE:
        j->rc = reg_propose(reg, j->desc, j->id, &j->err);
        break;
    case OP_APPROVE:
        j->rc = reg_approve(reg, j->id, j->pk, j->sig, &j->approvals, &j->threshold);
        break;
    case OP_COMMIT:
        j->rc = reg_commit(reg, j->id, &j->version, j->hash);
        break;
    case OP_SIGNERS:
        j->desc = ron_xcalloc(1, sizeof *j->desc);
        j->rc = reg_current(reg, j->desc);
        if (j->rc == 0)
            reg_head(reg, &j->version, NULL, NULL);
        break;
    default:
        j->rc = RON_EINVAL;
        break;
    }
}

static void
svc_maybe_free(reg_service_t *s)
{
    if (s->stopping && s->jobs == 0) {
        reg_free(s->reg);
        proto_svc_free(s->ps);
        free(s);
    }
}

static json_t *
keys_json(const uint8_t (*keys)[REG_KEY_LEN], size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, hex_json(keys[i], REG_KEY_LEN, false));
    return a;
}

static json_t *
job_answer(job_t *j)
{
    json_t *o = json_object();
    switch (j->op) {
    case OP_HEAD:
        json_object_set_new(o, "version", u64_json(j->version));
        json_object_set_new(o, "hash", hex_json(j->hash, REG_HASH_LEN, true));
        json_object_set_new(o, "writable", json_boolean(j->writable));
        break;
    case OP_GET:
        json_object_set_new(o, "version", u64_json(j->version));
        json_object_set_new(o, "record", json_stringn(j->text, j->text_len));
        break;
    case OP_PROPOSE:
        json_object_set_new(o, "id", hex_json(j->id, REG_HASH_LEN, false));
        json_object_set_new(o, "version", u64_json(j->desc->version));
        break;
    case OP_APPROVE:
        json_object_set_new(o, "id", hex_json(j->id, REG_HASH_LEN, false));
        json_object_set_new(o, "approvals", u64_json(j->approvals));
        json_object_set_new(o, "threshold", u64_json(j->threshold));
        break;
    case OP_COMMIT:
        json_object_set_new(o, "version", u64_json(j->version));
        json_object_set_new(o, "hash", hex_json(j->hash, REG_HASH_LEN, true));
        break;
    default:
        json_object_set_new(o, "version", u64_json(j->version));
        json_object_set_new(o, "threshold", u64_json(j->desc->threshold));
        json_object_set_new(
            o, "keys",
            keys_json((const uint8_t(*)[REG_KEY_LEN])j->desc->signers, j->desc->n_signers));
        json_object_set_new(
            o, "revoked",
            keys_json((const uint8_t(*)[REG_KEY_LEN])j->desc->revoked, j->desc->n_revoked));
        break;
    }
    return o;
}

static void
job_done(uv_work_t *w, int status)
{
    job_t *j = ron_container_of(w, job_t, work);
    reg_service_t *s = j->svc;
    uint64_t v;
    (void)status;

    s->jobs--;
    if (j->rc < 0)
        answer_rc(s, j->op, j->req, j->rc, j->err.msg);
    else
        answer_ok(s, j->op, j->req, job_answer(j));
    if (j->op == OP_COMMIT && j->rc == 0) {
        reg_head(s->reg, &v, NULL, NULL);
        met_gauge_set(s->head, (double)v);
    }
    free(j->desc);
    free(j->text);
    free(j);
    svc_maybe_free(s);
}

/* ---- requests ---- */

/* 64 or 128 hex digits of field name into out (n bytes). Returns 0 or -1. */
static int
get_hex(json_t *o, const char *name, uint8_t *out, size_t n)
{
    json_t *v = json_object_get(o, name);
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) != 2 * n)
        return -1;
    return ron_hex_decode(out, n, s, 2 * n) < 0 ? -1 : 0;
}

static const char *
get_id(job_t *j, json_t *o, char *msg, size_t cap)
{
    if (get_hex(o, "id", j->id, REG_HASH_LEN) < 0) {
        snprintf(msg, cap, "id: missing or not 64 hex digits");
        return "id";
    }
    return NULL;
}

/* Fill j from o for j->op. Returns NULL, or the name of the bad field and a
 * message in msg. */
static const char *
job_fill(job_t *j, json_t *o, char *msg, size_t cap)
{
    json_t *v;
    char *txt;
    int rc;

    switch (j->op) {
    case OP_GET:
        v = json_object_get(o, "version");
        if (!json_is_string(v) ||
            ron_parse_u64(json_string_value(v), json_string_length(v), &j->version) < 0) {
            snprintf(msg, cap, "version: missing or not a decimal string");
            return "version";
        }
        return NULL;
    case OP_PROPOSE:
        v = json_object_get(o, "descriptor");
        if (!json_is_object(v) || (txt = json_dumps(v, JSON_COMPACT)) == NULL) {
            snprintf(msg, cap, "descriptor: missing or not an object");
            return "descriptor";
        }
        j->desc = ron_xcalloc(1, sizeof *j->desc);
        rc = reg_desc_parse(txt, strlen(txt), j->desc, &j->err);
        free(txt);
        if (rc < 0) {
            snprintf(msg, cap, "descriptor: %s", j->err.msg);
            return "descriptor";
        }
        return NULL;
    case OP_APPROVE:
        if (get_hex(o, "pk", j->pk, REG_KEY_LEN) < 0) {
            snprintf(msg, cap, "pk: missing or not 64 hex digits");
            return "pk";
        }
        if (get_hex(o, "sig", j->sig, REG_SIG_LEN) < 0) {
            snprintf(msg, cap, "sig: missing or not 128 hex digits");
            return "sig";
        }
        return get_id(j, o, msg, cap);
    case OP_COMMIT:
        return get_id(j, o, msg, cap);
    default:
        return NULL;
    }
}

/*
 * The capability check (docs/protocol/registry.md "Capabilities"): the
 * writes (propose, approve, commit) need the admin op, besides the
 * signatures the registry itself requires; the reads (head, get, signers)
 * need get (public under the default policy). The token is the frame's cap
 * section. Returns true when allowed (or no guard); false after answering
 * the rejection (guard_check counted and audited it).
 */
static bool
svc_authorize(reg_service_t *s, op_t op, rbus_req_t *req, const oap_frame_t *f)
{
    static const uint8_t zero[16];
    guard_req_t gr = {0};
    guard_result_t res;

    if (s->guard == NULL)
        return true;
    gr.op = op == OP_PROPOSE || op == OP_APPROVE || op == OP_COMMIT ? AUTH_OP_ADMIN : AUTH_OP_GET;
    gr.token = f->cap_len > 0 ? (const char *)f->cap : NULL;
    gr.token_len = f->cap_len;
    gr.tenant = memcmp(f->tenant_id, zero, sizeof zero) != 0 ? f->tenant_id : NULL;
    gr.size = AUTH_SIZE_UNKNOWN;
    gr.target = proto_svc_op_name(s->ps, (int)op);
    gr.forwarded = true; /* a bus request: its rate caveat was charged at the edge */
    if (guard_check(s->guard, &gr, &res) == 0)
        return true;
    answer_error(s, op, req, (uint16_t)res.status, res.slug, res.retry_after_s * 1000u, res.reason);
    return false;
}

static void
on_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    reg_service_t *s = arg;
    proto_svc_req_t in;
    proto_svc_fail_t fail;
    json_t *o;
    const char *bad;
    op_t op;
    job_t *j = NULL;
    char msg[256];

    if (s->stopping || s->jobs >= REG_SVC_MAX_JOBS) {
        answer_error(s, OP_BAD, req, 503, NULL, REG_SVC_RETRY_AFTER_MS,
                     s->stopping ? "registry is stopping" : "registry is busy");
        return;
    }
    if (proto_svc_parse(s->ps, f->payload, f->payload_len, &in, &fail) < 0) {
        answer_error(s, (op_t)in.op, req, fail.code, fail.reason[0] != '\0' ? fail.reason : NULL, 0,
                     fail.message);
        return;
    }
    o = in.o;
    op = (op_t)in.op;
    if (!svc_authorize(s, op, req, f))
        goto out;
    j = ron_xcalloc(1, sizeof *j);
    j->op = op;
    j->req = req;
    if ((bad = job_fill(j, o, msg, sizeof msg)) != NULL) {
        answer_error(s, op, req, 400, bad, 0, msg);
        free(j->desc);
        free(j);
        goto out;
    }
    j->svc = s;
    s->jobs++;
    if (uv_queue_work(s->loop, &j->work, job_work, job_done) < 0) {
        job_work(&j->work);
        job_done(&j->work, 0);
    }
out:
    json_decref(o);
}

int
reg_service_new(uv_loop_t *loop, rbus_t *bus, reg_t *reg, reg_service_t **svc_out)
{
    reg_service_t *s;
    uint64_t v;
    int rc;

    s = ron_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->reg = reg;
    if ((rc = proto_svc_new(&svc_desc, &s->ps)) < 0) {
        s->stopping = true;
        svc_maybe_free(s); /* as below: the service owns reg from here */
        return rc;
    }
    met_gauge_register(proto_svc_registry(s->ps), "registry_head_version",
                       "Version of the registry's head.", &s->head);
    reg_head(reg, &v, NULL, NULL);
    met_gauge_set(s->head, (double)v);
    if ((rc = rbus_handle(bus, OAP_APP_REGISTRY, on_request, s)) < 0) {
        s->stopping = true;
        svc_maybe_free(s);
        return rc;
    }
    *svc_out = s;
    return 0;
}

void
reg_service_free(reg_service_t *s)
{
    if (s == NULL || s->stopping)
        return;
    s->stopping = true;
    svc_maybe_free(s);
}

size_t
reg_service_metrics(reg_service_t *s, char *buf, size_t cap)
{
    return proto_svc_metrics(s->ps, buf, cap);
}

void
reg_service_set_guard(reg_service_t *s, guard_t *g)
{
    s->guard = g;
}
