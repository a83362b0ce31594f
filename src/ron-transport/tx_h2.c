/*
 * tx_h2.c - HTTP/2 on nghttp2 for tx_conn: each request stream becomes a
 * tx_request_t handed to the same handler as HTTP/1.1, and the same
 * tx_respond* calls answer it. Entered three ways: the 24-byte preface on a
 * cleartext connection (h2c by prior knowledge), "Upgrade: h2c" (the
 * request becomes stream 1), or ALPN "h2" after a TLS handshake.
 * Invariants: frames are produced (nghttp2_session_mem_send) only while the
 * connection's write queue is under TX_MAX_WRITE_QUEUE, and a streamed body
 * reaches nghttp2 through a data provider that copies at most what the
 * client's flow-control window admits and defers when the application has
 * supplied nothing, so a slow reader costs at most the write queue plus
 * TX_H2_STREAM_QUEUE borrowed bytes per stream, never an object; a request
 * holds at most max_header_bytes of headers and max_body of body; the
 * client may open h2_max_streams streams at once (nghttp2 refuses more) and
 * send h2_flood_max RST_STREAM/PING/SETTINGS/PRIORITY frames per window,
 * past which the session ends with GOAWAY ENHANCE_YOUR_CALM (rapid reset).
 * nghttp2 is never re-entered: the session is pumped only outside its own
 * callbacks, and application callbacks run after framing, not inside it.
 * Answers on a stream (tx__h2_respond*, the data provider) are in
 * tx_h2_answer.c; the state both share is in tx_h2_internal.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_h2_internal.h"

/* ---- streams ---- */

static void
tx_h2_link(tx_h2_t *h, tx_request_t *r)
{
    r->next = h->streams;
    h->streams = r;
}

static void
tx_h2_unlink(tx_h2_t *h, tx_request_t *r)
{
    for (tx_request_t **pp = &h->streams; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            r->next = NULL;
            return;
        }
    }
}

void
tx__h2_done_push(tx_h2_t *h, tx_chunk_t *k, int status)
{
    k->status = status;
    k->next = NULL;
    if (h->done_tail != NULL)
        h->done_tail->next = k;
    else
        h->done = k;
    h->done_tail = k;
}

static void
tx_h2_run_done(tx_h2_t *h, bool now)
{
    tx_chunk_t *k;

    if (h->in_app > 0 && !now) {
        /* never from inside the application's own call: on a later loop turn */
        if (h->done != NULL)
            tx__conn_soon(h->c);
        return;
    }
    while ((k = h->done) != NULL) {
        h->done = k->next;
        if (h->done == NULL)
            h->done_tail = NULL;
        if (k->done != NULL)
            k->done(k->status, k->done_arg);
        free(k);
    }
}

/* The stream of r ended (closed by either side, or the connection went). */
static void
tx_h2_stream_gone(tx_h2_t *h, tx_request_t *r)
{
    tx_server_t *s = h->c->srv;

    switch (r->state) {
    case TX_REQ_IN_APP:
        r->conn = NULL; /* the app answers later: tx_answer_begin frees it */
        if (r->counted_inflight) {
            tx__limits_inflight_release(&s->lim);
            r->counted_inflight = false;
        }
        tx__server_body_abort(s, r); /* a streamed body cut off: told on a later turn */
        break;
    case TX_REQ_STREAMING:
        /* the app still holds r: chunks not yet framed get done(RON_ECLOSED)
         * and its drain runs once, on a later loop turn (this may run inside
         * nghttp2 or inside the app's own call); its next write says RON_ECLOSED */
        r->conn = NULL;
        tx__server_gone(s, r);
        break;
    case TX_REQ_ENDED:
        tx__server_gone(s, r);
        tx__request_free(r);
        break;
    default: /* parsing, or a whole answer */
        tx__request_free(r);
        break;
    }
}

static tx_request_t *
tx_h2_req_new(tx_h2_t *h, int32_t stream_id)
{
    tx_request_t *r = ron_xcalloc(1, sizeof *r);

    tx__request_reset(r);
    r->peer = h->c->peer;
    r->view.peer = &r->peer;
    r->view.http_major = 2;
    r->h2 = true;
    r->stream_id = stream_id;
    r->conn = h->c;
    r->keep_alive = true;
    r->opened_ms = tx__conn_now(h->c);
    tx_h2_link(h, r);
    h->c->srv->lim.stats.h2_streams++;
    return r;
}

static void
tx_h2_reject(tx_request_t *r, int status, tx_reject_t why, const char *detail)
{
    if (r->reject_status != 0)
        return;
    r->reject_status = status;
    r->reject_reason = why;
    r->reject_detail = detail;
}

/* Store one header field as name\0value\0 in hbuf (offsets in hofs). */
static void
tx_h2_add_header(tx_h2_t *h, tx_request_t *r, const uint8_t *name, size_t nlen,
                 const uint8_t *value, size_t vlen)
{
    const tx_config_t *cfg = &h->c->srv->lim.cfg;
    uint32_t *o;

    r->header_bytes += nlen + vlen + 32; /* RFC 9113 §6.5.2 accounting */
    if (r->header_bytes > cfg->max_header_bytes) {
        tx_h2_reject(r, 431, TX_REJECT_HEADERS_TOO_LARGE, NULL);
        return;
    }
    if (r->n_headers >= (size_t)cfg->max_headers + 8) { /* + the pseudo-headers */
        tx_h2_reject(r, 431, TX_REJECT_HEADERS_TOO_LARGE, "too many header lines");
        return;
    }
    if (r->hofs_cap < (r->n_headers + 1) * 4) {
        r->hofs_cap = r->hofs_cap == 0 ? 64 : r->hofs_cap * 2;
        r->hofs = ron_xrealloc(r->hofs, r->hofs_cap * sizeof *r->hofs);
    }
    o = &r->hofs[r->n_headers * 4];
    o[0] = (uint32_t)r->hbuf.len;
    o[1] = (uint32_t)nlen;
    tx__buf_append(&r->hbuf, name, nlen);
    tx__buf_append(&r->hbuf, "", 1);
    o[2] = (uint32_t)r->hbuf.len;
    o[3] = (uint32_t)vlen;
    tx__buf_append(&r->hbuf, value, vlen);
    tx__buf_append(&r->hbuf, "", 1);
    r->n_headers++;
}

/* Point the view at the stored headers; pseudo-headers become method/path/query/host. */
static void
tx_h2_finish_head(tx_h2_t *h, tx_request_t *r)
{
    char *base = (char *)r->hbuf.p;
    const char *authority = NULL, *v;
    size_t n = 0;
    bool has_host = false;

    if (r->hdrs_cap < r->n_headers + 1) {
        r->hdrs_cap = r->n_headers + 1;
        r->hdrs = ron_xrealloc(r->hdrs, r->hdrs_cap * sizeof *r->hdrs);
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        char *name = base + r->hofs[i * 4];
        char *value = base + r->hofs[i * 4 + 2];
        if (name[0] == ':') {
            if (strcmp(name, ":method") == 0)
                r->view.method = value;
            else if (strcmp(name, ":path") == 0)
                r->view.path = value;
            else if (strcmp(name, ":authority") == 0)
                authority = value;
            continue;
        }
        if (strcmp(name, "host") == 0)
            has_host = true;
        r->hdrs[n].name = name;
        r->hdrs[n].value = value;
        n++;
    }
    if (authority != NULL && !has_host) {
        r->hdrs[n].name = "host"; /* handlers read Host as for HTTP/1.1 */
        r->hdrs[n].value = authority;
        n++;
    }
    r->view.headers = r->hdrs;
    r->view.n_headers = n;
    char *q = strchr(r->view.path, '?');
    if (q != NULL) {
        *q = '\0';
        r->view.query = q + 1;
    }
    r->is_head = strcmp(r->view.method, "HEAD") == 0;
    v = tx_request_header(r, "x-corr-id");
    if (v == NULL || ron_parse_u64(v, strlen(v), &r->view.corr_id) < 0)
        r->view.corr_id = h->c->srv->corr_seq++;
}

/* ---- nghttp2 callbacks ---- */

static void
tx_h2_dispatch(tx_h2_t *h, tx_request_t *r)
{
    tx_server_t *s = h->c->srv;

    if (r->reject_status == 0 && !r->bstream)
        tx__request_decode(&s->lim.cfg, r);
    if (r->view.body == NULL && !r->bstream) {
        r->view.body = (const uint8_t *)"";
        r->view.body_len = 0;
    }
    if (r->reject_status == 0 && tx__limits_inflight_admit(&s->lim) < 0) {
        tx_h2_reject(r, 503, TX_REJECT_INFLIGHT, NULL);
        r->retry_after_s = s->lim.cfg.retry_after_s;
    }
    if (r->reject_status != 0) {
        tx__h2_answer_reject(h, r);
        return;
    }
    r->state = TX_REQ_IN_APP;
    r->counted_inflight = true;
    s->handler(r, s->arg);
}

/* The request's header block is complete: limits that need no body. */
static void
tx_h2_head_done(tx_h2_t *h, tx_request_t *r)
{
    tx_limits_t *l = &h->c->srv->lim;
    uint32_t retry = 0;
    const char *v;
    uint64_t cl;

    tx_h2_finish_head(h, r);
    if (r->reject_status == 0 && tx__limits_rate_take(l, &r->peer, tx__conn_now(h->c), &retry) < 0) {
        tx_h2_reject(r, 429, TX_REJECT_RATE, NULL);
        r->retry_after_s = retry;
    } else if (r->reject_status == 0 && l->stats.inflight >= l->cfg.max_inflight) {
        l->stats.rejects[TX_REJECT_INFLIGHT]++;
        tx_h2_reject(r, 503, TX_REJECT_INFLIGHT, NULL);
        r->retry_after_s = l->cfg.retry_after_s;
    }
    if (r->reject_status == 0) {
        v = tx_request_header(r, "content-length");
        if (v != NULL && ron_parse_u64(v, strlen(v), &cl) == 0 && cl <= INT64_MAX)
            r->declared = (int64_t)cl;
        tx__body_hook(h->c->srv, r); /* may stream the body, or refuse it (413, 415) */
    }
    if (r->reject_status != 0) {
        tx__h2_answer_reject(h, r); /* at once: its body, if any, is dropped */
    } else if (r->bstream) {
        /* a window of one piece on top of the one held: the client keeps
         * sending while the app stores the last piece */
        (void)nghttp2_session_set_local_window_size(h->sess, NGHTTP2_FLAG_NONE, r->stream_id,
                                                    (int32_t)TX_STREAM_PIECE_MAX);
        r->body_last_ms = tx__conn_now(h->c);
        tx_h2_dispatch(h, r); /* the app gets it now; DATA follows in pieces */
    }
}

static int
tx_h2_on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    tx_h2_t *h = ud;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    tx_request_t *r = tx_h2_req_new(h, f->hd.stream_id);
    nghttp2_session_set_stream_user_data(sess, f->hd.stream_id, r);
    return 0;
}

static int
tx_h2_on_header(nghttp2_session *sess, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    tx_h2_t *h = ud;
    tx_request_t *r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);

    (void)flags;
    if (r == NULL || r->state != TX_REQ_PARSING)
        return 0;
    if (r->reject_status != 0 || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* not kept (refused, or trailers), but a header block that goes on
         * far past the cap (CONTINUATION flood) ends the session */
        r->header_bytes += nlen + vlen + 32;
        if (r->header_bytes > 4 * (size_t)h->c->srv->lim.cfg.max_header_bytes &&
            !h->terminated) {
            h->terminated = true;
            tx__limits_count(&h->c->srv->lim, TX_REJECT_H2_FLOOD);
            (void)nghttp2_session_terminate_session(sess, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
    }
    tx_h2_add_header(h, r, name, nlen, value, vlen);
    return 0;
}

static int
tx_h2_on_data(nghttp2_session *sess, uint8_t flags, int32_t stream_id, const uint8_t *data,
              size_t len, void *ud)
{
    tx_h2_t *h = ud;
    tx_request_t *r = nghttp2_session_get_stream_user_data(sess, stream_id);

    (void)flags;
    if (r != NULL && r->bstream) {
        /* the connection's window comes back now, the stream's once the
         * app released the piece: a held piece stops only this stream */
        (void)nghttp2_session_consume_connection(sess, len);
        if (r->bdone || r->babort != 0) {
            (void)nghttp2_session_consume_stream(sess, stream_id, len); /* discarded */
            return 0;
        }
        if (r->body_max != 0 && r->body_total + len > r->body_max) {
            tx__limits_count(&h->c->srv->lim, TX_REJECT_BODY_TOO_LARGE);
            r->babort = RON_ETOOBIG;
            (void)nghttp2_session_consume_stream(sess, stream_id, len);
            return 0;
        }
        r->body_total += len;
        r->body_last_ms = tx__conn_now(h->c);
        tx__buf_append(&r->body, data, len);
        return 0;
    }
    (void)nghttp2_session_consume(sess, stream_id, len);
    if (r == NULL || r->state != TX_REQ_PARSING || r->reject_status != 0)
        return 0; /* dropped */
    if (r->body.len + len > h->c->srv->lim.cfg.max_body) {
        tx_h2_reject(r, 413, TX_REJECT_BODY_TOO_LARGE, "body");
        tx__h2_answer_reject(h, r);
        return 0;
    }
    tx__buf_append(&r->body, data, len);
    return 0;
}

/* Count a control frame of the client; past the bound, end the session. */
static void
tx_h2_flood(tx_h2_t *h)
{
    tx_limits_t *l = &h->c->srv->lim;
    uint64_t now = tx__conn_now(h->c);

    if (now - h->flood_start >= l->cfg.h2_flood_window_ms) {
        h->flood_start = now;
        h->flood = 0;
    }
    if (++h->flood > l->cfg.h2_flood_max && !h->terminated) {
        h->terminated = true;
        tx__limits_count(l, TX_REJECT_H2_FLOOD);
        (void)nghttp2_session_terminate_session(h->sess, NGHTTP2_ENHANCE_YOUR_CALM);
    }
}

static int
tx_h2_on_frame_recv(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    tx_h2_t *h = ud;
    tx_request_t *r;

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
        if (r != NULL && r->bstream && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
            r->bcomplete = true; /* trailers end a streamed body (they are not kept) */
            break;
        }
        if (r == NULL || r->state != TX_REQ_PARSING)
            break;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
            tx_h2_head_done(h, r);
        if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 && r->bstream)
            r->bcomplete = true;
        else if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 && r->state == TX_REQ_PARSING)
            tx_h2_dispatch(h, r);
        break;
    case NGHTTP2_DATA:
        r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
        if (r != NULL && r->bstream && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0)
            r->bcomplete = true;
        else if (r != NULL && r->state == TX_REQ_PARSING &&
                 (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0)
            tx_h2_dispatch(h, r);
        break;
    case NGHTTP2_RST_STREAM:
    case NGHTTP2_PRIORITY:
        tx_h2_flood(h);
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if ((f->hd.flags & NGHTTP2_FLAG_ACK) == 0)
            tx_h2_flood(h);
        break;
    default:
        break;
    }
    return 0;
}

static int
tx_h2_on_frame_send(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    tx_h2_t *h = ud;

    if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code == NGHTTP2_REFUSED_STREAM)
        tx__limits_count(&h->c->srv->lim, TX_REJECT_H2_REFUSED);
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
        tx_request_t *r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
        /* answered before its streamed body ended: the rest is not wanted
         * (RFC 9113 §8.1: a complete response, then RST_STREAM NO_ERROR) */
        if (r != NULL && r->bstream && !r->bcomplete)
            (void)nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                            NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int
tx_h2_on_invalid_frame(nghttp2_session *sess, const nghttp2_frame *f, int err, void *ud)
{
    tx_h2_t *h = ud;

    (void)sess, (void)f, (void)err;
    tx__limits_count(&h->c->srv->lim, TX_REJECT_H2_PROTOCOL);
    return 0;
}

static int
tx_h2_on_stream_close(nghttp2_session *sess, int32_t stream_id, uint32_t code, void *ud)
{
    tx_h2_t *h = ud;
    tx_request_t *r = nghttp2_session_get_stream_user_data(sess, stream_id);

    (void)code;
    if (r == NULL)
        return 0;
    tx_h2_unlink(h, r);
    tx_h2_stream_gone(h, r);
    return 0;
}

/* ---- the session ---- */

/* base64url (RFC 4648 §5) without padding, as HTTP2-Settings carries it. */
static int
tx_h2_b64url(const char *in, uint8_t *out, size_t cap, size_t *out_len)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;

    for (const char *p = in; *p != '\0' && *p != '='; p++) {
        int v;
        if (*p >= 'A' && *p <= 'Z')
            v = *p - 'A';
        else if (*p >= 'a' && *p <= 'z')
            v = *p - 'a' + 26;
        else if (*p >= '0' && *p <= '9')
            v = *p - '0' + 52;
        else if (*p == '-' || *p == '+')
            v = 62;
        else if (*p == '_' || *p == '/')
            v = 63;
        else
            return RON_EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return RON_EINVAL;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = n;
    return 0;
}

/* h's nghttp2 server session: our callbacks, bounds on what a client can
 * make us queue, manual window updates, our SETTINGS and the connection
 * window. Returns 0 or RON_EPROTO (h->sess, if made, is the caller's to delete). */
static int
tx_h2_session_new(tx_h2_t *h, const tx_config_t *cfg)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    int rc = RON_EPROTO;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_bytes},
    };

    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, tx_h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, tx_h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, tx_h2_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, tx_h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, tx_h2_on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, tx_h2_on_invalid_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, tx_h2_on_stream_close);
    /* a client cannot make us queue unbounded SETTINGS/PING acknowledgements */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    /* windows come back as bytes are consumed: a streamed body's only when
     * the app released its piece (tx_h2_on_data) */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_server_new2(&h->sess, cbs, h, opt) != 0)
        goto out;
    if (nghttp2_submit_settings(h->sess, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
        goto out;
    /* the connection's window only bounds the total in flight (each stream's
     * window bounds its bytes): wide enough for several streamed bodies */
    if (nghttp2_session_set_local_window_size(h->sess, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)TX_H2_CONN_WINDOW) != 0)
        goto out;
    rc = 0;
out:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return rc;
}

/* The "Upgrade: h2c" request becomes stream 1 and goes to the handler. */
static void
tx_h2_upgrade_stream(tx_h2_t *h, tx_request_t *upgrade)
{
    tx_server_t *s = h->c->srv;

    s->lim.stats.h2_upgrades++;
    upgrade->h2 = true;
    upgrade->stream_id = 1;
    upgrade->view.http_major = 2;
    upgrade->conn = h->c;
    upgrade->keep_alive = true;
    tx_h2_link(h, upgrade);
    s->lim.stats.h2_streams++;
    h->in_recv = true; /* the handler's answer is framed by the next pump */
    tx_h2_dispatch(h, upgrade);
    h->in_recv = false;
}

int
tx__h2_start(tx_conn_t *c, tx_request_t *upgrade, const char *settings)
{
    tx_server_t *s = c->srv;
    const tx_config_t *cfg = &s->lim.cfg;
    tx_h2_t *h = ron_xcalloc(1, sizeof *h);
    uint8_t sbuf[256];
    size_t slen = 0;
    int rc;

    h->c = c;
    h->flood_start = tx__conn_now(c);
    if ((rc = tx_h2_session_new(h, cfg)) < 0)
        goto out;
    if (upgrade != NULL) {
        if (settings == NULL || tx_h2_b64url(settings, sbuf, sizeof sbuf, &slen) < 0 ||
            nghttp2_session_upgrade2(h->sess, sbuf, slen, upgrade->is_head, upgrade) != 0) {
            rc = RON_EINVAL;
            goto out;
        }
    }
    c->h2 = h;
    c->proto = TX_PROTO_H2;
    s->lim.stats.h2_conns++;
    tx__conn_set_phase(c, TX_PH_IDLE, cfg->idle_timeout_ms);
    if (upgrade != NULL)
        tx_h2_upgrade_stream(h, upgrade);
    rc = 0;
out:
    if (rc < 0) {
        nghttp2_session_del(h->sess);
        free(h);
    }
    return rc;
}

void
tx__h2_feed(tx_conn_t *c, const uint8_t *data, size_t len)
{
    tx_h2_t *h = c->h2;
    ssize_t n;

    if (h == NULL || h->sess == NULL || c->closing)
        return;
    h->in_recv = true;
    n = nghttp2_session_mem_recv(h->sess, data, len);
    h->in_recv = false;
    if (n < 0) {
        /* a connection error: nghttp2 queued GOAWAY; send it, then close */
        tx__limits_count(&c->srv->lim, n == NGHTTP2_ERR_FLOODED ? TX_REJECT_H2_FLOOD
                                                                 : TX_REJECT_H2_PROTOCOL);
        if (!h->terminated) {
            h->terminated = true;
            (void)nghttp2_session_terminate_session(h->sess, NGHTTP2_PROTOCOL_ERROR);
        }
    }
    h->again = true;
}

static void
tx_h2_phase(tx_h2_t *h)
{
    tx_conn_t *c = h->c;
    uint64_t oldest = UINT64_MAX, due = UINT64_MAX;

    for (tx_request_t *r = h->streams; r != NULL; r = r->next) {
        if (r->state == TX_REQ_PARSING && r->opened_ms < oldest)
            oldest = r->opened_ms;
        /* a streamed body waits on the client (not on the app): idle deadline */
        if (r->bstream && !r->bdone && !r->bheld && !r->bcomplete && r->babort == 0 &&
            r->body_last_ms + c->srv->lim.cfg.stream_idle_ms < due)
            due = r->body_last_ms + c->srv->lim.cfg.stream_idle_ms;
    }
    if (oldest != UINT64_MAX && oldest + c->srv->lim.cfg.body_timeout_ms < due)
        due = oldest + c->srv->lim.cfg.body_timeout_ms;
    if (due != UINT64_MAX) {
        /* each request's headers and body are due within the body timeout
         * of its stream's opening: the oldest one still arriving sets it */
        if (c->phase != TX_PH_BODY || c->deadline != due)
            tx__conn_set_phase_at(c, TX_PH_BODY, due);
    } else if (h->streams != NULL) {
        if (c->phase != TX_PH_WAIT)
            tx__conn_set_phase(c, TX_PH_WAIT, 0);
    } else if (c->phase != TX_PH_IDLE) {
        tx__conn_set_phase(c, TX_PH_IDLE, c->srv->lim.cfg.idle_timeout_ms);
    }
}

/* Streamed request bodies with an event due (never inside the app's own call). */
static void
tx_h2_body_events(tx_h2_t *h)
{
    tx_conn_t *c = h->c;

    for (tx_request_t *r = h->streams, *next; r != NULL && !c->closing; r = next) {
        next = r->next;
        if (!r->bstream || r->bdone || r->bheld || r->state != TX_REQ_IN_APP ||
            (r->babort == 0 && r->body.len == 0 && !r->bcomplete))
            continue;
        if (h->in_app > 0) {
            tx__conn_soon(c);
            return;
        }
        h->again = true;
        (void)tx__body_deliver(r); /* the app may answer r: streams are not freed here */
    }
}

void
tx__h2_body_release(tx_conn_t *c, tx_request_t *r, size_t n)
{
    tx_h2_t *h = c->h2;

    if (h == NULL || h->sess == NULL)
        return;
    r->body_last_ms = tx__conn_now(c);
    (void)nghttp2_session_consume_stream(h->sess, r->stream_id, n); /* WINDOW_UPDATE */
    tx__conn_soon(c);
}

/* Streamed bodies idle past stream_idle_ms learn RON_ETIMEOUT (the app
 * answers 408; the stream is reset once answered). Returns how many. */
static unsigned
tx_h2_stream_timeouts(tx_h2_t *h, uint64_t now)
{
    tx_limits_t *l = &h->c->srv->lim;
    unsigned n = 0;

    for (tx_request_t *r = h->streams; r != NULL; r = r->next) {
        if (!r->bstream || r->bdone || r->bheld || r->bcomplete || r->babort != 0 ||
            r->body_last_ms + l->cfg.stream_idle_ms > now)
            continue;
        tx__limits_count(l, TX_REJECT_BODY_TIMEOUT);
        r->babort = RON_ETIMEOUT;
        n++;
    }
    return n;
}

void
tx__h2_pump(tx_conn_t *c)
{
    tx_h2_t *h = c->h2;

    if (h == NULL || h->sess == NULL || h->in_recv || h->pumping)
        return;
    h->pumping = true;
    h->again = true;
    while (h->again && !c->closing) {
        bool full = false;
        h->again = false;
        for (;;) {
            const uint8_t *p;
            ssize_t n;
            if (c->wq + c->out.len >= TX_MAX_WRITE_QUEUE) {
                full = true;
                break;
            }
            n = nghttp2_session_mem_send(h->sess, &p);
            if (n < 0) {
                tx__conn_close(c);
                goto out;
            }
            if (n == 0)
                break;
            tx__buf_append(&c->out, p, (size_t)n);
        }
        if (tx__conn_flush(c) < 0) {
            tx__conn_close(c);
            goto out;
        }
        /* framing stopped at the queue bound and the socket took it all at
         * once (no write request, so no completion will pump us): frame
         * the rest now, or a big answer stalls until the client speaks */
        if (full && c->wq + c->out.len < TX_MAX_WRITE_QUEUE)
            h->again = true;
        tx_h2_run_done(h, false);
        tx_h2_body_events(h);
        /* streamed answers with room again learn it (they may write at once) */
        for (tx_request_t *r = h->streams, *next; r != NULL && !c->closing; r = next) {
            next = r->next;
            if (r->state == TX_REQ_STREAMING && r->want_drain && r->drain != NULL &&
                c->wq < TX_MAX_WRITE_QUEUE / 2 && r->chunk_bytes < TX_H2_STREAM_QUEUE / 2) {
                r->want_drain = false;
                r->drain(r, r->drain_arg);
            }
        }
    }
    if (c->closing || c->phase == TX_PH_LINGER)
        goto out;
    if (!nghttp2_session_want_read(h->sess) && !nghttp2_session_want_write(h->sess)) {
        if (c->wq == 0 && c->out.len == 0)
            tx__conn_linger(c); /* after GOAWAY: everything written */
        goto out;
    }
    if (c->eof && h->streams == NULL && c->wq == 0 && c->out.len == 0) {
        tx__conn_close(c);
        goto out;
    }
    tx_h2_phase(h);
out:
    h->pumping = false;
}

void
tx__h2_timeout(tx_conn_t *c, tx_reject_t why)
{
    tx_h2_t *h = c->h2;

    if (h->terminated || h->sess == NULL) {
        tx__conn_close(c); /* our GOAWAY was not taken in time */
        return;
    }
    if (why == TX_REJECT_BODY_TIMEOUT) {
        uint64_t now = tx__conn_now(c);
        bool late = false;
        for (tx_request_t *r = h->streams; r != NULL; r = r->next)
            if (r->state == TX_REQ_PARSING &&
                r->opened_ms + c->srv->lim.cfg.body_timeout_ms <= now)
                late = true;
        if (tx_h2_stream_timeouts(h, now) > 0 && !late) {
            tx__conn_pump(c); /* only streamed bodies were idle: their streams only */
            return;
        }
    }
    tx__limits_count(&c->srv->lim, why);
    h->terminated = true;
    (void)nghttp2_session_terminate_session(h->sess, NGHTTP2_NO_ERROR);
    /* it must leave within the write timeout, or the connection goes */
    tx__conn_set_phase(c, TX_PH_WAIT, c->srv->lim.cfg.write_timeout_ms);
    tx__conn_pump(c);
}

void
tx__h2_close(tx_conn_t *c)
{
    tx_h2_t *h = c->h2;
    tx_request_t *r;
    tx_chunk_t *k;

    while ((r = h->streams) != NULL) {
        h->streams = r->next;
        r->next = NULL;
        tx_h2_stream_gone(h, r);
    }
    /* chunks framed before the close: their done runs on a later loop turn */
    while ((k = h->done) != NULL) {
        h->done = k->next;
        tx__server_defer_done(c->srv, k);
    }
    h->done_tail = NULL;
    nghttp2_session_del(h->sess);
    h->sess = NULL;
}
