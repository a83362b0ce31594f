/*
 * tx_answer.c - the application's side of a request: tx_respond,
 * tx_respond_error, and a streamed answer (tx_respond_start, _write, _end)
 * over HTTP/1.1 or, for a request that came on an HTTP/2 stream, tx_h2.c.
 * Invariants: a request is answered once (a second answer is RON_EINVAL);
 * answering releases its in-flight slot; a request whose connection went
 * away is freed by its answer, which returns RON_ECLOSED.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

/* ---- answers (the application's side) ---- */

static int
tx_answer_begin(tx_request_t *req)
{
    tx_conn_t *c = req->conn;

    if (req->state != TX_REQ_IN_APP)
        return RON_EINVAL; /* defensive: answered twice */
    if (c == NULL) {
        tx__body_stop(req); /* an abort still queued is dropped */
        tx__request_free(req);
        return RON_ECLOSED;
    }
    if (req->counted_inflight) {
        tx__limits_inflight_release(&c->srv->lim);
        req->counted_inflight = false;
    }
    if (req->bstream && !req->h2) {
        /* answered: no more body events; a body not read whole is discarded
         * by closing the connection after the answer */
        if (c->sreq == req)
            c->sreq = NULL;
        if (!req->bcomplete) {
            if (c->h1.cur == req)
                c->h1.cur = NULL;
            c->h1.failed = true;
            c->close_after = true;
            req->keep_alive = false;
        }
    }
    tx__body_stop(req);
    c->srv->lim.stats.responses++;
    return 0;
}

int
tx_respond(tx_request_t *req, int status, const tx_header_t *headers, size_t n_headers,
           const void *body, size_t body_len)
{
    tx_conn_t *c = req->conn; /* read first: tx_answer_begin frees req when c is gone */
    int rc = tx_answer_begin(req);

    if (rc < 0)
        return rc;
    if (req->h2)
        return tx__h2_respond(c, req, status, headers, n_headers, body, body_len);
    req->out.len = 0;
    tx__buf_reserve(&req->out, 256 + (req->is_head ? 0 : body_len));
    tx__http1_head(&req->out, req->view.http_minor, status, headers, n_headers,
                   (int64_t)body_len, req->keep_alive, req->view.corr_id,
                   tx__server_date(c->srv));
    if (!req->is_head && status >= 200 && status != 204 && status != 304)
        tx__buf_append(&req->out, body, body_len);
    req->state = TX_REQ_ANSWERED;
    tx__conn_pump(c);
    return 0;
}

int
tx_respond_error(tx_request_t *req, int status, const char *message, const char *reason,
                 uint32_t retry_after_s)
{
    tx_conn_t *c = req->conn; /* read first: tx_answer_begin frees req when c is gone */
    int rc = tx_answer_begin(req);

    if (rc < 0)
        return rc;
    if (req->h2)
        return tx__h2_respond_error(c, req, status, message, reason, retry_after_s);
    req->out.len = 0;
    tx__http1_error(&req->out, req->view.http_minor, status, message, reason, retry_after_s,
                    req->keep_alive, req->view.corr_id,
                    tx__server_date(c->srv), req->is_head);
    req->state = TX_REQ_ANSWERED;
    tx__conn_pump(c);
    return 0;
}

int
tx_respond_start(tx_request_t *req, int status, const tx_header_t *headers, size_t n_headers,
                 int64_t content_length, tx_drain_fn drain, void *drain_arg)
{
    tx_conn_t *c = req->conn; /* read first: tx_answer_begin frees req when c is gone */
    int rc = tx_answer_begin(req);
    bool keep;

    if (rc < 0)
        return rc;
    if (req->h2) {
        req->drain = drain;
        req->drain_arg = drain_arg;
        return tx__h2_respond_start(c, req, status, headers, n_headers, content_length);
    }
    req->chunked = content_length < 0 && req->view.http_minor >= 1 && !req->is_head;
    keep = req->keep_alive && (content_length >= 0 || req->chunked || req->is_head);
    if (!keep) {
        /* HTTP/1.0 without a length: the close ends the body, nothing follows */
        req->keep_alive = false;
        c->close_after = true;
        c->h1.failed = true;
    }
    req->out.len = 0;
    tx__http1_head(&req->out, req->view.http_minor, status, headers, n_headers,
                   req->is_head ? (content_length >= 0 ? content_length : -1) : content_length,
                   keep, req->view.corr_id, tx__server_date(c->srv));
    req->remaining = req->is_head ? 0 : content_length;
    req->drain = drain;
    req->drain_arg = drain_arg;
    req->state = TX_REQ_STREAMING;
    tx__conn_pump(c);
    return 0;
}

void
tx__chunk_queue(tx_request_t *req, tx_chunk_t *k)
{
    if (req->chunks_tail != NULL)
        req->chunks_tail->next = k;
    else
        req->chunks = k;
    req->chunks_tail = k;
    req->chunk_bytes += k->len;
}

/* A chunk of len bytes of data (borrowed until done runs; none go out for
 * HEAD) counted against req's announced length, for either protocol. */
static tx_chunk_t *
tx_chunk_new(tx_request_t *req, const void *data, size_t len, tx_write_done_fn done, void *done_arg)
{
    tx_chunk_t *k = ron_xcalloc(1, sizeof *k);

    k->data = data;
    k->len = req->is_head ? 0 : len;
    k->done = done;
    k->done_arg = done_arg;
    if (req->remaining > 0)
        req->remaining -= (int64_t)len;
    return k;
}

int
tx_respond_write(tx_request_t *req, const void *data, size_t len, tx_write_done_fn done,
                 void *done_arg)
{
    tx_conn_t *c = req->conn;
    tx_chunk_t *k;

    if (req->state != TX_REQ_STREAMING)
        return RON_EINVAL;
    if (c == NULL)
        return RON_ECLOSED;
    if (len == 0 || (req->remaining >= 0 && (uint64_t)len > (uint64_t)req->remaining))
        return RON_EINVAL;
    if (req->h2) {
        if (c->wq >= TX_MAX_WRITE_QUEUE || req->chunk_bytes >= TX_H2_STREAM_QUEUE) {
            req->want_drain = true;
            return RON_EAGAIN;
        }
        return tx__h2_write(c, req, tx_chunk_new(req, data, len, done, done_arg));
    }
    if (c->wq + req->chunk_bytes >= TX_MAX_WRITE_QUEUE) {
        req->want_drain = true;
        return RON_EAGAIN;
    }
    k = tx_chunk_new(req, data, len, done, done_arg);
    if (req->chunked && len > 0)
        k->hdr_len = (uint8_t)snprintf(k->hdr, sizeof k->hdr, "%zx\r\n", len);
    tx__chunk_queue(req, k);
    tx__conn_pump(c);
    return 0;
}

int
tx_respond_end(tx_request_t *req)
{
    tx_conn_t *c = req->conn;
    tx_chunk_t *k;

    if (req->state != TX_REQ_STREAMING)
        return RON_EINVAL;
    if (c == NULL) {
        /* the connection went away: its queued chunks were handed to the
         * server's queue then (tx__server_gone); a drain not run yet is dropped */
        tx__server_gone_cancel(req);
        tx__request_free(req);
        return RON_ECLOSED;
    }
    if (req->h2)
        return tx__h2_end(c, req);
    if (req->remaining > 0)
        c->close_after = true; /* short body: the client must not reuse the connection */
    if (req->chunked) {
        k = ron_xcalloc(1, sizeof *k);
        memcpy(k->hdr, "0\r\n\r\n", 5);
        k->hdr_len = 5;
        k->last = true;
        tx__chunk_queue(req, k);
    }
    req->drain = NULL;
    req->state = TX_REQ_ENDED;
    tx__conn_pump(c);
    return 0;
}
