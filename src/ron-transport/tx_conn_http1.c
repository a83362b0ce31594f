/*
 * tx_conn_http1.c - the HTTP/1.1 side of a connection: the pipeline of
 * requests waiting for answers (in arrival order), and the callbacks the
 * sans-I/O parser (tx_http1.c) makes as a request's head and body arrive:
 * admission (rate, in-flight), phase deadlines, "Expect: 100-continue",
 * streamed bodies, and the switch to HTTP/2 on "Upgrade: h2c".
 * Invariant: a request enters the pipeline exactly once (tx__conn_push) and
 * leaves it at the head once its answer is on the wire (tx__conn_pop); a
 * rejected request is answered here, in order, without reaching the app.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

/* ---- the pipeline ---- */

void
tx__conn_push(tx_conn_t *c, tx_request_t *r)
{
    r->conn = c;
    r->next = NULL;
    if (c->tail != NULL)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->depth++;
}

void
tx__conn_pop(tx_conn_t *c)
{
    tx_request_t *r = c->head;

    c->head = r->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->depth--;
    r->conn = NULL;
    tx__http1_request_recycle(&c->h1, r);
}

/* Serialize r's error answer (its reject_* fields) and mark it answered. */
void
tx__conn_answer_reject(tx_conn_t *c, tx_request_t *r)
{
    const char *msg = tx__reject_message(r->reject_reason);
    int st = r->reject_status;

    if (r->reject_reason != TX_REJECT_RATE && r->reject_reason != TX_REJECT_INFLIGHT)
        tx__limits_count(&c->srv->lim, r->reject_reason);
    r->keep_alive = r->keep_alive && !c->h1.failed && st != 408;
    r->out.len = 0;
    tx__http1_error(&r->out, r->view.http_minor, st, msg, r->reject_detail, r->retry_after_s,
                    r->keep_alive, r->view.corr_id, tx__server_date(c->srv), r->is_head);
    r->state = TX_REQ_ANSWERED;
    c->srv->lim.stats.responses++;
}

/* ---- http1 callbacks ---- */

static void
tx_cb_begin(void *arg)
{
    tx_conn_t *c = arg;

    /* a new connection's first request keeps the deadline set at accept */
    if (c->phase != TX_PH_HEADERS)
        tx__conn_set_phase(c, TX_PH_HEADERS, c->srv->lim.cfg.header_timeout_ms);
}

static int
tx_cb_head(void *arg, tx_request_t *r)
{
    tx_conn_t *c = arg;
    tx_limits_t *l = &c->srv->lim;
    uint32_t retry = 0;

    if (tx__limits_rate_take(l, &c->peer, tx__conn_now(c), &retry) < 0) {
        r->reject_reason = TX_REJECT_RATE;
        r->retry_after_s = retry;
        return 429;
    }
    if (l->stats.inflight >= l->cfg.max_inflight) {
        l->stats.rejects[TX_REJECT_INFLIGHT]++;
        r->reject_reason = TX_REJECT_INFLIGHT;
        r->retry_after_s = l->cfg.retry_after_s;
        return 503;
    }
    return 0;
}

static void
tx_cb_continue(void *arg, tx_request_t *r)
{
    tx_conn_t *c = arg;

    (void)r;
    /* Interim answers keep request order: only when nothing is waiting before it.
     * Otherwise the client sends its body after its own wait (curl: 1 s). */
    if (c->depth == 0)
        tx__buf_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
}

static void
tx_cb_body(void *arg)
{
    tx_conn_t *c = arg;
    const tx_config_t *cfg = &c->srv->lim.cfg;
    bool streamed = c->h1.cur != NULL && c->h1.cur->bstream;

    /* a streamed body has an idle timeout instead of a whole-body one */
    tx__conn_set_phase(c, TX_PH_BODY, streamed ? cfg->stream_idle_ms : cfg->body_timeout_ms);
}

static void
tx_cb_hook(void *arg, tx_request_t *r)
{
    tx_conn_t *c = arg;

    tx__body_hook(c->srv, r);
}

/* A streamed request's head: into the pipeline and to the app, before its body. */
static void
tx_cb_stream(void *arg, tx_request_t *r)
{
    tx_conn_t *c = arg;
    tx_server_t *s = c->srv;

    tx__conn_push(c, r);
    if (tx__limits_inflight_admit(&s->lim) < 0) {
        /* defensive: on_head checked the slot an instant ago */
        c->h1.cur = NULL;
        c->h1.failed = true;
        c->close_after = true;
        r->keep_alive = false;
        r->reject_status = 503;
        r->reject_reason = TX_REJECT_INFLIGHT;
        r->retry_after_s = s->lim.cfg.retry_after_s;
        tx__conn_answer_reject(c, r);
        return;
    }
    r->state = TX_REQ_IN_APP;
    r->counted_inflight = true;
    c->sreq = r;
    s->handler(r, s->arg); /* may answer at once: then the body is not read */
}

/* The streamed request r's body ended (complete, or cut off with reject_status). */
static void
tx_conn_stream_ended(tx_conn_t *c, tx_request_t *r)
{
    if (!r->keep_alive || c->h1.failed)
        c->close_after = true;
    if (r->reject_status != 0) {
        tx__limits_count(&c->srv->lim, r->reject_reason);
        r->babort = r->reject_status == 413 ? RON_ETOOBIG : RON_EPROTO;
        r->keep_alive = false;
        c->close_after = true;
    }
    if (!tx__http1_mid_message(&c->h1))
        tx__conn_set_phase(c, TX_PH_WAIT, 0);
}

/* An "Upgrade: h2c" request we switch on: first on a cleartext connection,
 * nothing before it, no body, its HTTP2-Settings present (RFC 7540 §3.2). */
static bool
tx_conn_wants_h2c(const tx_conn_t *c, const tx_request_t *r)
{
    const char *up = tx_request_header(r, "upgrade");
    const char *conn = tx_request_header(r, "connection");

    if (!r->upgrade || r->reject_status != 0 || c->ssl != NULL || c->depth != 0 ||
        c->srv->lim.cfg.h2_disabled || up == NULL || conn == NULL ||
        tx_request_header(r, "http2-settings") == NULL || r->view.body_len != 0)
        return false;
    for (const char *p = up; (p = strcasestr(p, "h2c")) != NULL; p += 3) {
        bool start = p == up || p[-1] == ' ' || p[-1] == ',' || p[-1] == '\t';
        bool end = p[3] == '\0' || p[3] == ' ' || p[3] == ',' || p[3] == '\t';
        if (start && end)
            return strcasestr(conn, "http2-settings") != NULL;
    }
    return false;
}

static void
tx_cb_request(void *arg, tx_request_t *r)
{
    tx_conn_t *c = arg;
    tx_server_t *s = c->srv;

    if (r->bstream) {
        tx_conn_stream_ended(c, r); /* already in the pipeline and with the app */
        return;
    }
    if (tx_conn_wants_h2c(c, r)) {
        size_t mark = c->out.len;
        tx__buf_append_str(&c->out, "HTTP/1.1 101 Switching Protocols\r\n"
                                    "Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
        if (tx__h2_start(c, r, tx_request_header(r, "http2-settings")) == 0)
            return; /* r is stream 1 now */
        c->out.len = mark;
        r->reject_status = 400;
        r->reject_reason = TX_REJECT_MALFORMED;
        r->reject_detail = "http2_settings";
    }
    tx__conn_push(c, r);
    if (!tx__http1_mid_message(&c->h1))
        tx__conn_set_phase(c, TX_PH_WAIT, 0);
    if (r->reject_status == 0 && tx__limits_inflight_admit(&s->lim) < 0) {
        r->reject_status = 503;
        r->reject_reason = TX_REJECT_INFLIGHT;
        r->retry_after_s = s->lim.cfg.retry_after_s;
    }
    if (!r->keep_alive || c->h1.failed)
        c->close_after = true;
    if (r->reject_status != 0) {
        tx__conn_answer_reject(c, r);
        return;
    }
    r->state = TX_REQ_IN_APP;
    r->counted_inflight = true;
    s->handler(r, s->arg);
}

const tx_http1_cbs_t tx__conn_cbs = {
    .on_begin = tx_cb_begin,
    .on_head = tx_cb_head,
    .on_continue = tx_cb_continue,
    .on_body = tx_cb_body,
    .on_hook = tx_cb_hook,
    .on_stream = tx_cb_stream,
    .on_request = tx_cb_request,
};
