/*
 * pass_service.c - the passport protocol (app_proto_id 7 on the endpoint
 * "passport") over ron-bus; wire format in docs/protocol/passport.md. Same
 * framing as the storage and index protocols: a request is one frame
 * holding a big-endian u32 JSON length and compact JSON {"op":...}; a
 * success answer has the same shape; an error answer is the spec §3
 * envelope with a `reason` naming the refusal (foreign, replay, expired,
 * signature, policy, or the request field at fault).
 * Invariants: one answer per request, on the loop thread; the pass_t is
 * owned by the service and freed (keys wiped) by pass_service_free.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pass_internal.h"
#include "pass_service.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_proto.h"
#include "ron_util.h"

static const uint16_t statuses[] = {200, 400, 401, 403, 413, 500, 503};
#define N_STATUS (RON_ARRAY_LEN(statuses) + 1)
#define N_OPS (PASS_REQ_COUNT + 1) /* + "invalid" */

struct pass_service {
    uv_loop_t *loop;
    pass_t *p;
    int64_t (*now)(void);
    uv_timer_t tick;
    met_registry_t *reg;
    met_counter_t *req[N_OPS][N_STATUS];
};

static void
count(pass_service_t *s, int op, uint16_t code)
{
    size_t i = 0;
    while (i < RON_ARRAY_LEN(statuses) && statuses[i] != code)
        i++;
    met_counter_inc(s->req[op][i]);
}

static void
answer_error(pass_service_t *s, int op, rbus_req_t *req, uint16_t code, const char *reason,
             const char *message)
{
    count(s, op, code);
    rbus_respond_error_ex(req, code, NULL, reason, code == 503 ? PASS_SVC_RETRY_AFTER_MS : 0,
                          message);
}

/* Answer 200 with o (taken), framed as a u32 length and the JSON. */
static void
answer_ok(pass_service_t *s, int op, rbus_req_t *req, json_t *o)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t jl;
    uint8_t *buf;

    json_decref(o);
    if (txt == NULL) {
        answer_error(s, op, req, 500, NULL, "cannot encode the answer");
        return;
    }
    count(s, op, 200);
    jl = strlen(txt);
    buf = ron_xmalloc(4 + jl);
    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    rbus_respond(req, 200, buf, 4 + jl);
    free(buf);
    free(txt);
}

static json_t *
hex_json(const uint8_t *b, size_t n)
{
    char hex[2 * KMS_SIG_LEN + 1];
    ron_hex_encode(hex, b, n);
    return json_string(hex);
}

static void
do_challenge(pass_service_t *s, rbus_req_t *req)
{
    pass_challenge_t c;
    json_t *o;

    if (pass_challenge_issue(s->p, s->now(), &c) < 0) {
        answer_error(s, PASS_REQ_CHALLENGE, req, 503, "busy",
                     "too many outstanding challenges; retry later");
        return;
    }
    o = json_object();
    json_object_set_new(o, "challenge", hex_json(c.nonce, PASS_NONCE_LEN));
    json_object_set_new(o, "expires", json_integer(c.expires));
    json_object_set_new(o, "node_id", hex_json(c.node_id, KMS_NODE_ID_LEN));
    json_object_set_new(o, "kid", json_string(c.sign_kid));
    json_object_set_new(o, "sig", hex_json(c.sig, KMS_SIG_LEN));
    answer_ok(s, PASS_REQ_CHALLENGE, req, o);
}

static void
do_redeem(pass_service_t *s, rbus_req_t *req, const pass_redeem_t *r)
{
    pass_result_t *res = ron_xmalloc(sizeof *res);
    char msg[256];
    json_t *o, *ops;
    int rc = pass_redeem(s->p, r, s->now(), res);

    if (rc < 0 && res->reason == PASS_DENY_POLICY) {
        snprintf(msg, sizeof msg, "policy rule '%s' denies this key the op '%s'", res->rule_id,
                 res->denied_op);
        answer_error(s, PASS_REQ_REDEEM, req, 403, "policy", msg);
    } else if (rc < 0 && res->reason != PASS_OK) {
        answer_error(s, PASS_REQ_REDEEM, req, 401, pass_reason_name(res->reason),
                     ron_strerror(rc));
    } else if (rc < 0) {
        ron_warn("passport: redeem failed: %s", ron_strerror(rc));
        answer_error(s, PASS_REQ_REDEEM, req, rc == RON_EINVAL ? 400 : 500,
                     rc == RON_EINVAL ? "ops" : NULL, ron_strerror(rc));
    } else {
        o = json_object();
        json_object_set_new(o, "token", json_stringn(res->token, res->token_len));
        json_object_set_new(o, "id", json_string(res->id));
        json_object_set_new(o, "kid", json_string(res->kid));
        json_object_set_new(o, "expires", json_integer(res->expires));
        json_object_set_new(o, "ttl", json_integer(res->ttl));
        ops = json_array();
        for (int op = 0; op < AUTH_OP_COUNT; op++)
            if (res->ops & (1u << op))
                json_array_append_new(ops, json_string(auth_op_name((auth_op_t)op)));
        json_object_set_new(o, "ops", ops);
        answer_ok(s, PASS_REQ_REDEEM, req, o);
    }
    sodium_memzero(res->token, sizeof res->token); /* a bearer secret */
    free(res);
}

static json_t *
keys_json(pass_t *p)
{
    pass_key_info_t keys[PASS__MAX_ENTRIES];
    size_t n;
    json_t *a = json_array();

    pass_keys(p, keys, RON_ARRAY_LEN(keys), &n);
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_object();
        json_object_set_new(k, "kid", json_string(keys[i].kid));
        json_object_set_new(k, "kind", json_string(pass_key_kind_name(keys[i].kind)));
        json_object_set_new(k, "created", json_integer(keys[i].created));
        json_object_set_new(k, "current", json_boolean(keys[i].retired == 0));
        if (keys[i].retired != 0) {
            json_object_set_new(k, "retired", json_integer(keys[i].retired));
            json_object_set_new(k, "drop_at", json_integer(keys[i].drop_at));
        }
        if (keys[i].kind == PASS_KEY_SIGN)
            json_object_set_new(k, "pk", hex_json(keys[i].pk, KMS_PK_LEN));
        json_array_append_new(a, k);
    }
    return a;
}

static void
do_keys(pass_service_t *s, rbus_req_t *req, int op)
{
    json_t *o = json_object();
    json_object_set_new(o, "cap_kid", json_string(pass_current_kid(s->p, PASS_KEY_CAP)));
    json_object_set_new(o, "sign_kid", json_string(pass_current_kid(s->p, PASS_KEY_SIGN)));
    json_object_set_new(o, "keys", keys_json(s->p));
    answer_ok(s, op, req, o);
}

static void
on_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    pass_service_t *s = arg;
    pass_request_t pr;
    char field[32], err[160];
    uint32_t jl;
    int rc;

    if (f->payload_len < 4) {
        answer_error(s, PASS_REQ_COUNT, req, 400, NULL,
                     "payload shorter than its 4-byte JSON length");
        return;
    }
    jl = (uint32_t)f->payload[0] << 24 | (uint32_t)f->payload[1] << 16 |
         (uint32_t)f->payload[2] << 8 | f->payload[3];
    if (jl != f->payload_len - 4) {
        answer_error(s, PASS_REQ_COUNT, req, 400, NULL,
                     "JSON length does not match the payload (no raw bytes follow)");
        return;
    }
    rc = pass_request_parse((const char *)f->payload + 4, jl, &pr, field, err, sizeof err);
    if (rc == RON_ETOOBIG) {
        answer_error(s, PASS_REQ_COUNT, req, 413, NULL, err);
        return;
    }
    if (rc < 0) {
        answer_error(s, PASS_REQ_COUNT, req, 400, field, err);
        return;
    }
    switch (pr.op) {
    case PASS_REQ_CHALLENGE:
        do_challenge(s, req);
        break;
    case PASS_REQ_REDEEM:
        do_redeem(s, req, &pr.redeem);
        break;
    case PASS_REQ_ROTATE:
        if ((rc = pass_rotate(s->p, pr.kinds, s->now())) < 0) {
            ron_warn("passport: rotation not saved: %s", ron_strerror(rc));
            answer_error(s, pr.op, req, 500, NULL, ron_strerror(rc));
            break;
        }
        do_keys(s, req, PASS_REQ_ROTATE);
        break;
    default:
        do_keys(s, req, PASS_REQ_KEYS);
        break;
    }
}

static void
on_tick(uv_timer_t *t)
{
    pass_service_t *s = t->data;
    int rc = pass_tick(s->p, s->now());
    if (rc < 0)
        ron_warn("passport: rotation by age not saved: %s", ron_strerror(rc));
}

static int64_t
wall_now(void)
{
    return ron_unix_time();
}

int
pass_service_new(uv_loop_t *loop, rbus_t *bus, pass_t *p, int64_t (*now_fn)(void),
                 pass_service_t **svc_out)
{
    static const char *const labels[] = {"op", "status"};
    static const met_desc_t desc_req = {MET_COUNTER, "passport_requests_total",
                                        "Passport protocol requests by op and status.", labels, 2,
                                        NULL, 0, 0};
    pass_service_t *s;
    met_family_t *fam = NULL;
    int rc;

    s = ron_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->p = p;
    s->now = now_fn != NULL ? now_fn : wall_now;
    s->reg = met_registry_new();
    met_family_register(s->reg, &desc_req, &fam);
    for (int op = 0; op < N_OPS; op++)
        for (size_t i = 0; i < N_STATUS; i++) {
            char code[8];
            const char *vals[2] = {pass__op_name((pass_req_op_t)op), code};
            if (i < RON_ARRAY_LEN(statuses))
                snprintf(code, sizeof code, "%u", statuses[i]);
            else
                snprintf(code, sizeof code, "other");
            s->req[op][i] = met_family_counter(fam, vals);
        }
    if ((rc = rbus_handle(bus, OAP_APP_AUTH, on_request, s)) < 0) {
        met_registry_free(s->reg);
        free(s);
        pass_free(p);
        return rc;
    }
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, PASS_SVC_TICK_MS, PASS_SVC_TICK_MS);
    *svc_out = s;
    return 0;
}

static void
tick_closed(uv_handle_t *h)
{
    pass_service_t *s = h->data;
    met_registry_free(s->reg);
    free(s);
}

void
pass_service_free(pass_service_t *s)
{
    if (s == NULL)
        return;
    pass_free(s->p);
    s->p = NULL;
    uv_timer_stop(&s->tick);
    uv_close((uv_handle_t *)&s->tick, tick_closed);
}

size_t
pass_service_metrics(pass_service_t *s, char *buf, size_t cap)
{
    return met_registry_render_buf(s->reg, buf, cap);
}
