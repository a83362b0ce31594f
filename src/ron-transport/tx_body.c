/*
 * tx_body.c - streamed request bodies (ron_transport.h): the opt-in from
 * the head hook, the order of a request's body events, and the release of
 * a piece. The protocols feed the bytes: tx_conn.c (HTTP/1.1, after
 * http-parser's chunked decoding) appends them to r->body and pauses
 * reading while a piece is held; tx_h2.c appends DATA payloads and returns
 * the stream's flow-control window only when a piece is released.
 * Invariants: at most one piece is out per request, and it is the only
 * buffer the app sees (r->piece, swapped with r->body on delivery, so bytes
 * read meanwhile never move it); the end or the abort is reported at most
 * once (bdone), and never after the app answered.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ron_err.h"
#include "tx_internal.h"

int
tx_request_stream_body(tx_request_t *req, tx_body_fn cb, void *arg, uint64_t max_bytes)
{
    const char *enc;

    if (!req->in_hook || req->bstream || cb == NULL)
        return RON_EINVAL;
    enc = tx_request_header(req, "content-encoding");
    if (enc != NULL && strcasecmp(enc, "identity") != 0) {
        /* decoding needs the whole body within max_decoded: not for a stream */
        req->reject_status = 415;
        req->reject_reason = TX_REJECT_BAD_ENCODING;
        req->reject_detail = "content_encoding_not_streamed";
        return RON_EINVAL;
    }
    if (max_bytes != 0 && req->declared >= 0 && (uint64_t)req->declared > max_bytes) {
        req->reject_status = 413;
        req->reject_reason = TX_REJECT_BODY_TOO_LARGE;
        req->reject_detail = "content_length";
        return RON_ETOOBIG;
    }
    req->bstream = true;
    req->body_cb = cb;
    req->body_arg = arg;
    req->body_max = max_bytes;
    return 0;
}

void
tx__body_hook(tx_server_t *s, tx_request_t *r)
{
    if (s->head_hook == NULL)
        return;
    r->in_hook = true;
    s->head_hook(r, s->head_arg);
    r->in_hook = false;
}

bool
tx__body_deliver(tx_request_t *r)
{
    tx_buf_t t;

    if (!r->bstream || r->bdone || r->bheld)
        return false;
    if (r->babort != 0) {
        r->bdone = true;
        r->body.len = 0;
        r->body_cb(r, NULL, 0, r->babort, r->body_arg);
        return true;
    }
    if (r->body.len > 0) {
        t = r->piece; /* swap: the app's piece never moves while bytes arrive */
        r->piece = r->body;
        r->body = t;
        r->body.len = 0;
        r->bheld = true;
        r->body_cb(r, r->piece.p, r->piece.len, 0, r->body_arg);
        return true;
    }
    if (r->bcomplete) {
        r->bdone = true;
        r->body_cb(r, NULL, 0, 0, r->body_arg);
        return true;
    }
    return false;
}

void
tx__body_stop(tx_request_t *r)
{
    if (!r->bstream)
        return;
    r->bdone = true;
    r->bheld = false;
    r->piece.len = 0;
    r->body.len = 0;
    if (r->babort_pending) {
        for (tx_request_t **pp = &r->babort_srv->body_aborts; *pp != NULL;
             pp = &(*pp)->babort_next) {
            if (*pp == r) {
                *pp = r->babort_next;
                break;
            }
        }
        r->babort_next = NULL;
        r->babort_pending = false;
        r->babort_srv = NULL;
    }
}

int
tx_request_body_release(tx_request_t *req)
{
    size_t n = req->piece.len;

    if (!req->bstream || !req->bheld)
        return RON_EINVAL;
    req->bheld = false;
    req->piece.len = 0;
    if (req->conn == NULL || req->bdone)
        return 0; /* gone: its abort is queued already */
    if (req->h2)
        tx__h2_body_release(req->conn, req, n);
    else
        tx__conn_body_release(req->conn, req);
    return 0;
}
