/*
 * omni_rq.c - one stream's request (omni_rq_t): parsed and checked when its
 * START arrives, then forwarded over ron-bus to the service that owns the
 * op (storage, index, kernel, registry, passport) and answered once.
 *
 * A request is a small state machine (omni_rq_state_t): a one-shot forward
 * (OMNI_RQ_BUS: the naming, kernel, registry, passport and the other storage
 * ops), a put or a get (omni_content.c), or answered here (ping, cap_mint,
 * a refusal). The START's cap section and tenant travel with every bus
 * request of the stream, so the services check them again. At most one bus
 * request per stream is in flight, except a put's writes (up to
 * OMNI_PUT_PIPELINE) and a get's chunks (up to OMNI_GET_PIPELINE). The
 * request lives until both directions of its stream ended and its bus
 * requests returned; detached from a closed connection it is freed when its
 * last bus callback runs (an open put aborted at the storage service first).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"
#include "ron_util.h"

/* ---------------------------------------------------------------- answers */

/* Answer q (one RESP|END frame of status with JSON body) and count it. */
void
omni__rq_answer(omni_rq_t *q, uint16_t status, const char *json, size_t len)
{
    char body[PROTO_MIN_ERROR_BUF + 256];
    int rc = q->c != NULL ? omni__rq_send(q, OAP_F_END, status, json, len) : 0;

    if (rc == RON_ETOOBIG) {
        /* a JSON answer cannot be split: say so in a frame that fits */
        status = 413;
        len = omni__envelope(body, sizeof body, status, q->corr_id,
                             "the answer is larger than the negotiated max_frame", "max_frame", 0);
        json = body;
        rc = omni__rq_send(q, OAP_F_END, status, json, len);
    }
    omni__count_request(q->g, q->r.app_proto_id, omni_op_name(q->r.op), status);
    if (rc == RON_EAGAIN) {
        /* a get that ran out of credit: the answer waits for credit */
        free(q->pend_err);
        q->pend_err = ron_xmalloc(len + 1);
        memcpy(q->pend_err, json, len);
        q->pend_len = len;
        q->pend_code = status;
    }
    q->state = OMNI_RQ_DONE;
    omni__rq_drop_pieces(q);
    omni__rq_drop_chunks(q);
}

void
omni__rq_error(omni_rq_t *q, uint16_t status, const char *message, const char *reason,
               uint32_t retry_after_ms)
{
    char body[PROTO_MIN_ERROR_BUF + 256];
    size_t n =
        omni__envelope(body, sizeof body, status, q->corr_id, message, reason, retry_after_ms);
    omni__rq_answer(q, status, body, n);
}

/* Map a ron-bus failure (no answer) to an error answer. */
void
omni__rq_bus_failed(omni_rq_t *q, int rc)
{
    if (rc == RON_ETIMEOUT)
        omni__rq_error(q, 504, "the service did not answer in time", NULL, 0);
    else if (rc == RON_EBUSY)
        omni__rq_error(q, 503, "the service is busy", "busy", OMNI_RETRY_AFTER_MS);
    else
        omni__rq_error(q, 503, ron_strerror(rc), "service_unavailable", OMNI_RETRY_AFTER_MS);
}

/* Forward a service's error answer (its envelope, with our corr_id). */
void
omni__rq_forward_error(omni_rq_t *q, const oap_frame_t *resp)
{
    proto_error_t e;
    char body[PROTO_MAX_ERROR_JSON];
    ssize_t n;

    if (proto_error_decode((const char *)resp->payload, resp->payload_len, &e, NULL) < 0) {
        omni__rq_error(q, resp->code, "the service failed", NULL, 0);
        return;
    }
    e.corr_id = q->corr_id;
    n = proto_error_write(&e, body, sizeof body);
    if (n <= 0) {
        omni__rq_error(q, 500, "error envelope", NULL, 0);
        return;
    }
    omni__rq_answer(q, resp->code, body, (size_t)n);
}

/* ---------------------------------------------------------------- bus requests */

static rbus_peer_t *
peer_for(omni_t *g, uint16_t app)
{
    switch (app) {
    case OAP_APP_STORAGE:
        return g->storage;
    case OAP_APP_INDEX:
        return g->index;
    case OAP_APP_REGISTRY:
        return g->registry;
    case OAP_APP_AUTH:
        return g->passport;
    default:
        return g->kernel;
    }
}

int
omni__bus_send(const omni_rq_t *q, uint16_t app, const uint8_t *payload, size_t n, rbus_reply_cb cb,
               void *arg)
{
    rbus_peer_t *p = peer_for(q->g, app);
    rbus_request_opts_t o = {.app_proto_id = app, .deadline_ms = OMNI_BUS_DEADLINE_MS};
    int rc;

    if (p == NULL)
        return RON_EUNAVAIL;
    memcpy(o.tenant_id, q->tenant, sizeof o.tenant_id);
    o.cap = q->cap; /* the client's token: the service checks it too */
    o.cap_len = q->cap_len;
    rc = rbus_request_ex(p, &o, payload, n, cb, arg); /* copies the payload */
    if (rc == 0)
        q->g->refs++;
    return rc;
}

int
omni__rq_bus_payload(omni_rq_t *q, uint16_t app, const uint8_t *payload, size_t n, rbus_reply_cb cb,
                     void *arg)
{
    int rc = omni__bus_send(q, app, payload, n, cb, arg);

    if (rc == 0)
        q->inflight++;
    return rc;
}

int
omni__rq_bus_cb(omni_rq_t *q, uint16_t app, const char *json, size_t jlen, rbus_reply_cb cb,
                void *arg)
{
    uint8_t *buf = ron_xmalloc(4 + jlen);
    size_t n;
    int rc;

    if (app == OAP_APP_KERNEL) { /* the kernel takes bare JSON */
        memcpy(buf, json, jlen);
        n = jlen;
    } else {
        n = proto_json_frame(buf, json, (uint32_t)jlen);
    }
    rc = omni__rq_bus_payload(q, app, buf, n, cb, arg);
    free(buf);
    return rc;
}

int
omni__rq_bus(omni_rq_t *q, uint16_t app, const char *json, size_t jlen)
{
    return omni__rq_bus_cb(q, app, json, jlen, omni__rq_bus_reply, q);
}

/* The JSON of a 200 answer from storage/index (after the u32 prefix). */
int
omni__answer_json(const oap_frame_t *resp, bool prefix, json_t **o_out, const uint8_t **raw,
                  size_t *raw_len)
{
    size_t jl = resp->payload_len, off = 0;

    if (prefix) {
        if (resp->payload_len < 4)
            return RON_EJSON;
        jl = ron_get_u32be(resp->payload);
        if (jl > resp->payload_len - 4)
            return RON_EJSON;
        off = 4;
    }
    *o_out = json_loadb((const char *)resp->payload + off, jl, 0, NULL);
    if (raw != NULL) {
        *raw = resp->payload + off + jl;
        *raw_len = resp->payload_len - off - jl;
    }
    return *o_out != NULL ? 0 : RON_EJSON;
}

bool
omni__json_u64_field(json_t *o, const char *key, uint64_t *v)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL && ron_parse_u64(s, strlen(s), v) == 0;
}

/* The answer (status 0) to q's bus request, by q's state. */
static void
on_bus_answer(omni_rq_t *q, const oap_frame_t *resp)
{
    omni_t *g = q->g;
    bool prefix = q->r.app_proto_id != OAP_APP_KERNEL;
    json_t *o = NULL;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;

    if (resp->code == 404 && q->state == OMNI_RQ_GET_STAT && omni__rq_get_probe(q))
        return;
    if (resp->code >= 400) {
        if (q->r.idem[0] != '\0' && resp->code < 500)
            omni__idem_put(g->idem, q->tenant, q->r.app_proto_id, q->r.op, q->r.idem, ron_now_ms(),
                           resp->code, (const char *)resp->payload, resp->payload_len);
        omni__rq_forward_error(q, resp);
        return;
    }
    if (omni__answer_json(resp, prefix, &o, &raw, &raw_len) < 0) {
        omni__rq_error(q, 502, "malformed answer from the service", NULL, 0);
        return;
    }
    switch (q->state) {
    case OMNI_RQ_BUS: {
        /* the service's JSON as it sent it (between the prefix and raw bytes) */
        const char *js = (const char *)resp->payload + (prefix ? 4 : 0);
        size_t jl = (size_t)((const char *)raw - js);
        if (q->r.op == OMNI_OP_CAP_REVOKE)
            omni__revoke_audit(q);
        if (q->r.idem[0] != '\0')
            omni__idem_put(g->idem, q->tenant, q->r.app_proto_id, q->r.op, q->r.idem, ron_now_ms(),
                           resp->code, js, jl);
        omni__rq_answer(q, resp->code, js, jl);
        break;
    }
    case OMNI_RQ_PUT_BEGIN:
        omni__on_put_begun(q, o);
        break;
    case OMNI_RQ_PUT_OPEN:
        omni__on_put_written(q, o);
        break;
    case OMNI_RQ_PUT_COMMIT:
        omni__on_put_committed(q, o);
        break;
    case OMNI_RQ_GET_STAT:
        omni__on_get_stat(q, o);
        break;
    case OMNI_RQ_GET_DATA: /* chunks have their own callback */
    case OMNI_RQ_DONE:
        break;
    }
    json_decref(o);
}

void
omni__rq_bus_reply(void *arg, int status, const oap_frame_t *resp)
{
    omni_rq_t *q = arg;
    omni_t *g = q->g;
    bool begin = q->begin_inflight;

    q->inflight--;
    q->begin_inflight = false;
    if (begin && status == 0 && resp->code == 200 && (q->c == NULL || q->state == OMNI_RQ_DONE)) {
        /* put_begin answered after the stream was answered or the connection
         * went (a put over its capability's max-bytes): abort that put */
        json_t *o = NULL;
        if (omni__answer_json(resp, true, &o, NULL, NULL) == 0 &&
            omni__json_u64_field(o, "put_id", &q->put_id))
            q->put_open = true;
        json_decref(o);
    }
    if (q->c == NULL) {
        /* the connection went away: abort a put the storage service holds */
        if (status == 0 && q->state == OMNI_RQ_PUT_COMMIT)
            q->put_open = false;
        omni__rq_put_abort(q);
        omni__rq_maybe_free(q);
        omni__unref(g);
        return;
    }
    if (q->state == OMNI_RQ_DONE) {
        /* answered meanwhile (a body frame on an op without body, a put
         * over its capability's max-bytes) */
    } else if (status < 0) {
        if (q->state == OMNI_RQ_PUT_COMMIT)
            q->put_open = false;
        omni__rq_bus_failed(q, status);
    } else {
        if (resp->code >= 400 && (q->state == OMNI_RQ_PUT_COMMIT || q->state == OMNI_RQ_PUT_BEGIN))
            q->put_open = false;
        on_bus_answer(q, resp);
    }
    if (q->state == OMNI_RQ_DONE)
        omni__rq_put_abort(q);
    omni__rq_step(q);
    omni__unref(g);
}

/* ---------------------------------------------------------------- the state machine */

static void
rq_start_forward(omni_rq_t *q)
{
    omni_t *g = q->g;
    const char *json;
    size_t len;
    uint16_t st;
    int rc;

    if (q->r.idem[0] != '\0') {
        st = omni__idem_get(g->idem, q->tenant, q->r.app_proto_id, q->r.op, q->r.idem, ron_now_ms(),
                            &json, &len);
        if (st >= 400) {
            oap_frame_t f = {.code = st, .payload = (const uint8_t *)json, .payload_len = len};
            omni__rq_forward_error(q, &f);
            return;
        }
        if (st != 0) {
            omni__rq_answer(q, st, json, len);
            return;
        }
    }
    rc = omni__rq_bus(q, q->r.app_proto_id, q->r.fwd, q->r.fwd_len);
    if (rc < 0)
        omni__rq_bus_failed(q, rc);
}

/* Advance q as far as it can go now, then free it if it is finished. */
void
omni__rq_step(omni_rq_t *q)
{
    if (q->c != NULL) {
        if (q->state == OMNI_RQ_PUT_OPEN)
            omni__rq_put_next(q);
        else if (q->state == OMNI_RQ_GET_DATA || q->pend_err != NULL)
            omni__rq_get_next(q);
    }
    omni__rq_maybe_free(q);
}

void
omni__rq_maybe_free(omni_rq_t *q)
{
    omni_conn_t *c = q->c;

    if (q->inflight)
        return;
    if (c != NULL) {
        if (!(q->req_ended && q->resp_ended && q->pend_err == NULL))
            return;
        if (q->prev != NULL)
            q->prev->next = q->next;
        else
            c->rqs = q->next;
        if (q->next != NULL)
            q->next->prev = q->prev;
        c->n_rqs--;
    }
    omni__rq_drop_pieces(q);
    omni_request_close(&q->r);
    free(q->cap);
    free(q->grant);
    free(q->pend_err);
    for (size_t i = 0; i < OMNI_GET_PIPELINE; i++)
        free(q->chunks[i].data);
    free(q);
    if (c != NULL)
        omni__conn_idle_check(c);
}

/* A new request for the START frame f, in c's list; answered unless a step moves it on. */
static omni_rq_t *
rq_new(omni_conn_t *c, const oap_frame_t *f)
{
    omni_rq_t *q = ron_xcalloc(1, sizeof *q);

    q->c = c;
    q->g = c->g;
    q->corr_id = f->corr_id;
    q->max_bytes = UINT64_MAX;
    memcpy(q->tenant, f->tenant_id, sizeof q->tenant);
    if (f->cap_len > 0) {
        q->cap = ron_xmalloc(f->cap_len);
        memcpy(q->cap, f->cap, f->cap_len);
        q->cap_len = f->cap_len;
    }
    q->req_ended = (f->flags & OAP_F_END) != 0;
    q->r.app_proto_id = f->app_proto_id;
    q->state = OMNI_RQ_DONE;
    q->next = c->rqs;
    if (c->rqs != NULL)
        c->rqs->prev = q;
    c->rqs = q;
    c->n_rqs++;
    return q;
}

void
omni__rq_start(omni_conn_t *c, const oap_frame_t *f, const uint8_t *payload, size_t len)
{
    omni_rq_t *q = rq_new(c, f);
    proto_err_t err = {{0}, {0}};
    guard_result_t res;

    memset(&res, 0, sizeof res);
    uv_timer_stop(&c->timer);
    if (omni_request_parse(f->app_proto_id, payload, len, c->g->service, &q->r, &err) < 0) {
        q->r.op = OMNI_OP__COUNT; /* "invalid" in metrics */
        omni__rq_error(q, 400, err.text, err.field[0] != '\0' ? err.field : "payload", 0);
    } else if (q->r.op == OMNI_OP_PING) {
        omni__rq_answer(q, 200, "{}", 2);
    } else if (!omni__rq_admit(q, &res)) {
        /* refused: answered, nothing forwarded */
    } else if (q->r.op == OMNI_OP_CAP_MINT) {
        omni__rq_mint(q, &res);
    } else if (q->r.op == OMNI_OP_PUT) {
        omni__rq_put_start(q);
    } else if (q->r.op == OMNI_OP_GET) {
        omni__rq_get_start(q);
    } else {
        q->state = OMNI_RQ_BUS;
        rq_start_forward(q);
    }
    omni__rq_step(q);
}

/* A body frame (REQ, not START) of stream q. */
void
omni__rq_body(omni_rq_t *q, const oap_frame_t *f, const uint8_t *payload, size_t len)
{
    if (f->flags & OAP_F_END)
        q->req_ended = true;
    if (q->state == OMNI_RQ_PUT_BEGIN || q->state == OMNI_RQ_PUT_OPEN) {
        omni__rq_put_body(q, payload, len);
    } else {
        if (len > 0 && q->state != OMNI_RQ_DONE && q->r.op != OMNI_OP_PUT)
            omni__rq_error(q, 400, "this operation takes no body", "body", 0);
        omni__rq_consume(q, 1); /* discarded */
    }
    omni__rq_step(q);
}
