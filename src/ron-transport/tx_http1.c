/*
 * tx_http1.c - sans-I/O HTTP/1.1: bytes in, complete requests out (through
 * callbacks), and the serialization of response heads and error responses.
 * No sockets, no clocks: tx_conn.c moves the bytes and keeps the time, and
 * fuzz_http1_request.c drives this file directly.
 * Invariants: every byte of a request line and its headers is counted
 * against max_header_bytes as it arrives and every body byte against
 * max_body, so a request never holds more than those caps; the parser stops
 * after each complete request, so the caller decides when to parse the next
 * one (pipelining depth, backpressure); after a malformed or refused message
 * nothing more is parsed on the connection.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

enum { TX_H_URL, TX_H_FIELD, TX_H_VALUE };

static tx_http1_t *
tx_h(http_parser *p)
{
    return (tx_http1_t *)p->data;
}

void
tx__request_reset(tx_request_t *r)
{
    r->view.method = "";
    r->view.path = "";
    r->view.query = "";
    r->view.headers = NULL;
    r->view.n_headers = 0;
    r->view.body = NULL;
    r->view.body_len = 0;
    r->view.corr_id = 0;
    r->view.http_minor = 1;
    r->view.http_major = 1;
    r->view.peer = NULL;
    r->h2 = false;
    r->upgrade = false;
    r->stream_id = 0;
    r->out_off = 0;
    r->state = TX_REQ_PARSING;
    r->conn = NULL;
    r->next = NULL;
    r->hbuf.len = 0;
    r->n_headers = 0;
    r->header_bytes = 0;
    r->url_len = 0;
    r->last_was_value = false;
    r->body.len = 0;
    free(r->decoded);
    r->decoded = NULL;
    r->reject_status = 0;
    r->reject_reason = TX_REJECT_MALFORMED;
    r->reject_detail = NULL;
    r->retry_after_s = 0;
    r->keep_alive = false;
    r->is_head = false;
    r->expect_continue = false;
    r->counted_inflight = false;
    r->out.len = 0;
    r->chunked = false;
    r->remaining = -1;
    r->chunks = r->chunks_tail = NULL;
    r->chunk_bytes = 0;
    r->drain = NULL;
    r->drain_arg = NULL;
    r->want_drain = false;
    r->body_cb = NULL;
    r->body_arg = NULL;
    r->body_max = 0;
    r->body_total = 0;
    r->declared = -1;
    r->body_last_ms = 0;
    r->piece.len = 0;
    r->babort = 0;
    r->bstream = r->bheld = r->bcomplete = r->bdone = r->in_hook = false;
    r->babort_pending = false;
    r->babort_next = NULL;
    r->babort_srv = NULL;
}

void
tx__request_free(tx_request_t *r)
{
    if (r == NULL)
        return;
    tx__buf_free(&r->hbuf);
    tx__buf_free(&r->body);
    tx__buf_free(&r->out);
    tx__buf_free(&r->piece);
    free(r->decoded);
    free(r->hofs);
    free(r->hdrs);
    free(r);
}

tx_request_t *
tx__http1_request_new(tx_http1_t *h)
{
    tx_request_t *r = h->spare;

    if (r != NULL)
        h->spare = NULL;
    else
        r = ron_xcalloc(1, sizeof *r);
    tx__request_reset(r);
    if (h->peer != NULL)
        r->peer = *h->peer; /* a copy: the app may hold r after its connection is gone */
    r->view.peer = &r->peer;
    return r;
}

void
tx__http1_request_recycle(tx_http1_t *h, tx_request_t *r)
{
    /* keep small buffers only: a big body's buffer is not pinned per connection */
    if (h->spare == NULL && r->body.cap <= (64u << 10) && r->out.cap <= (64u << 10) &&
        r->piece.cap <= (64u << 10)) {
        free(r->decoded);
        r->decoded = NULL;
        h->spare = r;
    } else {
        tx__request_free(r);
    }
}

/* Mark r refused with status; the parser stops at the next callback return. */
static void
tx_reject(tx_request_t *r, int status, tx_reject_t why, const char *detail)
{
    if (r->reject_status != 0)
        return;
    r->reject_status = status;
    r->reject_reason = why;
    r->reject_detail = detail;
}

static int
tx_count_header_bytes(tx_http1_t *h, size_t n)
{
    tx_request_t *r = h->cur;

    r->header_bytes += n;
    if (r->header_bytes > h->cfg->max_header_bytes) {
        tx_reject(r, 431, TX_REJECT_HEADERS_TOO_LARGE, NULL);
        return 1;
    }
    return 0;
}

static int
tx_on_message_begin(http_parser *p)
{
    tx_http1_t *h = tx_h(p);

    if (h->cur == NULL)
        h->cur = tx__http1_request_new(h);
    if (h->cbs->on_begin != NULL)
        h->cbs->on_begin(h->arg);
    return 0;
}

static int
tx_on_url(http_parser *p, const char *at, size_t len)
{
    tx_http1_t *h = tx_h(p);

    if (tx_count_header_bytes(h, len) != 0)
        return 1;
    tx__buf_append(&h->cur->hbuf, at, len);
    h->cur->url_len += (uint32_t)len;
    return 0;
}

static int
tx_on_header_field(http_parser *p, const char *at, size_t len)
{
    tx_http1_t *h = tx_h(p);
    tx_request_t *r = h->cur;

    if (tx_count_header_bytes(h, len + (r->last_was_value || r->n_headers == 0 ? 4 : 0)) != 0)
        return 1;
    if (r->n_headers == 0 || r->last_was_value) {
        if (r->n_headers >= h->cfg->max_headers) {
            tx_reject(r, 431, TX_REJECT_HEADERS_TOO_LARGE, "too many header lines");
            return 1;
        }
        if (r->hofs_cap < (r->n_headers + 1) * 4) {
            r->hofs_cap = r->hofs_cap == 0 ? 64 : r->hofs_cap * 2;
            r->hofs = ron_xrealloc(r->hofs, r->hofs_cap * sizeof *r->hofs);
        }
        tx__buf_append(&r->hbuf, "", 1); /* ends the target or the previous value */
        uint32_t *o = &r->hofs[r->n_headers * 4];
        o[0] = (uint32_t)r->hbuf.len;
        o[1] = o[2] = o[3] = 0;
        r->n_headers++;
        r->last_was_value = false;
    }
    tx__buf_append(&r->hbuf, at, len);
    r->hofs[(r->n_headers - 1) * 4 + 1] += (uint32_t)len;
    return 0;
}

static int
tx_on_header_value(http_parser *p, const char *at, size_t len)
{
    tx_http1_t *h = tx_h(p);
    tx_request_t *r = h->cur;
    uint32_t *o;

    if (r->n_headers == 0)
        return 1; /* defensive: the parser always sends a field first */
    if (tx_count_header_bytes(h, len) != 0)
        return 1;
    o = &r->hofs[(r->n_headers - 1) * 4];
    if (!r->last_was_value) {
        tx__buf_append(&r->hbuf, "", 1); /* ends the name */
        o[2] = (uint32_t)r->hbuf.len;
        r->last_was_value = true;
    }
    tx__buf_append(&r->hbuf, at, len);
    o[3] += (uint32_t)len;
    return 0;
}

const char *
tx_request_header(const tx_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->view.n_headers; i++)
        if (strcasecmp(req->view.headers[i].name, name) == 0)
            return req->view.headers[i].value;
    return NULL;
}

const tx_request_view_t *
tx_request_view(const tx_request_t *req)
{
    return &req->view;
}

/* Point the view at the stored target and headers (hbuf no longer grows). */
static void
tx_request_finish_head(tx_http1_t *h, tx_request_t *r)
{
    char *base;

    tx__buf_append(&r->hbuf, "", 1);
    base = (char *)r->hbuf.p;
    if (r->hdrs_cap < r->n_headers) {
        r->hdrs_cap = r->n_headers;
        r->hdrs = ron_xrealloc(r->hdrs, r->hdrs_cap * sizeof *r->hdrs);
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        uint32_t *o = &r->hofs[i * 4];
        char *v = o[2] != 0 ? base + o[2] : (char *)"";
        size_t vl = o[2] != 0 ? o[3] : 0;
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = '\0'; /* the parser keeps trailing whitespace */
        r->hdrs[i].name = base + o[0];
        r->hdrs[i].value = v;
    }
    r->view.headers = r->hdrs;
    r->view.n_headers = r->n_headers;
    r->view.method = http_method_str((enum http_method)h->parser.method);
    r->view.http_minor = h->parser.http_major == 1 && h->parser.http_minor == 0 ? 0 : 1;
    base[r->url_len] = '\0';
    r->view.path = base;
    char *q = memchr(base, '?', r->url_len);
    if (q != NULL) {
        *q = '\0';
        r->view.query = q + 1;
    }
    r->is_head = h->parser.method == HTTP_HEAD;
}

/* RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; HTTP/1.0 at most one. */
static bool
tx_request_host_is_bad(const tx_request_t *r)
{
    size_t n = 0;

    for (size_t i = 0; i < r->view.n_headers; i++)
        if (strcasecmp(r->view.headers[i].name, "host") == 0)
            n++;
    return n > 1 || (n == 0 && r->view.http_minor == 1);
}

static int
tx_on_headers_complete(http_parser *p)
{
    tx_http1_t *h = tx_h(p);
    tx_request_t *r = h->cur;
    const char *v;
    bool has_body;
    int st;

    if (r->reject_status != 0)
        return -1; /* defensive: the callback that set it already stopped parsing */
    tx_request_finish_head(h, r);
    r->keep_alive = http_should_keep_alive(p) != 0;
    v = tx_request_header(r, "x-corr-id");
    if (v == NULL || ron_parse_u64(v, strlen(v), &r->view.corr_id) < 0)
        r->view.corr_id = (*h->corr_seq)++;
    if (h->parser.http_major != 1) {
        tx_reject(r, 505, TX_REJECT_MALFORMED, "only HTTP/1.x is served here");
        return -1;
    }
    if (tx_request_host_is_bad(r)) {
        tx_reject(r, 400, TX_REJECT_MALFORMED, "host");
        return -1;
    }
    has_body = (p->flags & F_CHUNKED) != 0 ||
               (p->content_length != ULLONG_MAX && p->content_length > 0);
    if ((p->flags & F_CHUNKED) == 0)
        r->declared = p->content_length != ULLONG_MAX && p->content_length <= INT64_MAX
                          ? (int64_t)p->content_length
                          : 0;
    v = tx_request_header(r, "expect");
    if (v != NULL) {
        if (strcasecmp(v, "100-continue") != 0) {
            tx_reject(r, 417, TX_REJECT_MALFORMED, "unsupported expectation");
            return -1;
        }
        r->expect_continue = has_body && r->view.http_minor == 1;
    }
    if (h->cbs->on_head != NULL && (st = h->cbs->on_head(h->arg, r)) != 0)
        r->reject_status = st;
    else if (h->cbs->on_hook != NULL)
        h->cbs->on_hook(h->arg, r); /* may stream the body, or refuse it (413, 415) */
    if (r->reject_status == 0 && !r->bstream && (p->flags & F_CHUNKED) == 0 &&
        p->content_length != ULLONG_MAX && p->content_length > h->cfg->max_body)
        tx_reject(r, 413, TX_REJECT_BODY_TOO_LARGE, "content_length");
    if (r->reject_status != 0) {
        if (has_body)
            return -1; /* the body is not read: the connection closes after the answer */
        r->expect_continue = false;
        return 0;
    }
    if (r->bstream) {
        /* hand r to the app once this callback returned (tx__http1_feed) */
        h->stream_head = true;
        http_parser_pause(p, 1);
    }
    if (has_body) {
        h->in_body = true;
        if ((p->flags & F_CHUNKED) == 0 && !r->bstream)
            tx__buf_reserve(&r->body, (size_t)p->content_length);
        if (r->expect_continue && h->cbs->on_continue != NULL)
            h->cbs->on_continue(h->arg, r);
        if (h->cbs->on_body != NULL)
            h->cbs->on_body(h->arg);
    }
    return 0;
}

static int
tx_on_body(http_parser *p, const char *at, size_t len)
{
    tx_http1_t *h = tx_h(p);
    tx_request_t *r = h->cur;

    if (r->bstream) {
        /* handed over in pieces by the connection once this feed returns */
        if (r->body_max != 0 && r->body_total + len > r->body_max) {
            tx_reject(r, 413, TX_REJECT_BODY_TOO_LARGE, "body");
            return 1;
        }
        r->body_total += len;
        tx__buf_append(&r->body, at, len);
        return 0;
    }
    if (r->body.len + len > h->cfg->max_body) {
        tx_reject(r, 413, TX_REJECT_BODY_TOO_LARGE, "body");
        return 1;
    }
    tx__buf_append(&r->body, at, len);
    return 0;
}

void
tx__request_decode(const tx_config_t *cfg, tx_request_t *r)
{
    const char *enc = tx_request_header(r, "content-encoding");
    size_t limit, out_len = 0;
    int rc;

    r->view.body = r->body.p;
    r->view.body_len = r->body.len;
    if (enc == NULL || r->body.len == 0 || strcasecmp(enc, "identity") == 0)
        return;
    limit = r->body.len * (size_t)cfg->decode_ratio;
    if (limit / cfg->decode_ratio != r->body.len || limit > cfg->max_decoded)
        limit = cfg->max_decoded;
    rc = tx__decode(enc, r->body.p, r->body.len, limit, &r->decoded, &out_len);
    if (rc == RON_EBOMB) {
        tx_reject(r, 413, TX_REJECT_DECODE_BOMB, "compression_bomb");
    } else if (rc < 0) {
        tx_reject(r, 400, TX_REJECT_BAD_ENCODING,
                  rc == RON_EINVAL ? "unsupported_content_encoding" : "corrupt_content_encoding");
    } else {
        r->view.body = r->decoded;
        r->view.body_len = out_len;
    }
}

static int
tx_on_message_complete(http_parser *p)
{
    tx_http1_t *h = tx_h(p);
    tx_request_t *r = h->cur;

    if (r->bstream) {
        r->bcomplete = true;
        h->msg_done = true;
        http_parser_pause(p, 1);
        return 0;
    }
    if (r->reject_status == 0)
        tx__request_decode(h->cfg, r);
    if (r->view.body == NULL) {
        r->view.body = (const uint8_t *)"";
        r->view.body_len = 0;
    }
    h->msg_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings tx_settings = {
    .on_message_begin = tx_on_message_begin,
    .on_url = tx_on_url,
    .on_header_field = tx_on_header_field,
    .on_header_value = tx_on_header_value,
    .on_headers_complete = tx_on_headers_complete,
    .on_body = tx_on_body,
    .on_message_complete = tx_on_message_complete,
};

void
tx__http1_init(tx_http1_t *h, const tx_config_t *cfg, const tx_http1_cbs_t *cbs, void *arg,
               uint64_t *corr_seq, const struct sockaddr_storage *peer)
{
    memset(h, 0, sizeof *h);
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->cfg = cfg;
    h->cbs = cbs;
    h->arg = arg;
    h->corr_seq = corr_seq;
    h->peer = peer;
}

void
tx__http1_free(tx_http1_t *h)
{
    tx__request_free(h->cur);
    tx__request_free(h->spare);
    h->cur = h->spare = NULL;
}

bool
tx__http1_mid_message(const tx_http1_t *h)
{
    return h->cur != NULL && !h->failed;
}

size_t
tx__http1_feed(tx_http1_t *h, const uint8_t *data, size_t len)
{
    tx_request_t *r;
    size_t n;
    enum http_errno err;

    if (h->failed)
        return len;
    n = http_parser_execute(&h->parser, &tx_settings, (const char *)data, len);
    err = HTTP_PARSER_ERRNO(&h->parser);
    if (h->stream_head) {
        /* a streamed request's head: the app gets it now, its body follows */
        h->stream_head = false;
        http_parser_pause(&h->parser, 0);
        h->cbs->on_stream(h->arg, h->cur);
        return n;
    }
    if (h->msg_done) {
        http_parser_pause(&h->parser, 0);
        r = h->cur;
        h->cur = NULL;
        h->msg_done = false;
        h->in_body = false;
        if (h->parser.upgrade) {
            /* a protocol switch: tx_conn serves "Upgrade: h2c" or closes after
             * the answer; the bytes after the request are the new protocol's */
            r->keep_alive = false;
            r->upgrade = true;
            h->failed = true;
            h->cbs->on_request(h->arg, r);
            return n;
        }
        if (!r->keep_alive)
            h->failed = true;      /* bytes after "Connection: close" are ignored */
        h->cbs->on_request(h->arg, r);
        return h->failed ? len : n;
    }
    if (err == HPE_OK && h->cur != NULL && !h->in_body &&
        h->parser.nread > h->cfg->max_header_bytes)
        tx_reject(h->cur, 431, TX_REJECT_HEADERS_TOO_LARGE, NULL); /* whitespace padding */
    else if (err == HPE_OK && n == len)
        return n;
    /* defensive: a stop without error or complete message would never make progress */
    /* malformed or refused: answer once, then parse nothing more */
    r = h->cur != NULL ? h->cur : tx__http1_request_new(h);
    h->cur = NULL;
    h->failed = true;
    if (r->view.corr_id == 0)
        r->view.corr_id = (*h->corr_seq)++;
    if (err == HPE_HEADER_OVERFLOW)
        tx_reject(r, 431, TX_REJECT_HEADERS_TOO_LARGE, NULL);
    tx_reject(r, 400, TX_REJECT_MALFORMED, http_errno_name(err));
    r->keep_alive = false;
    r->expect_continue = false;
    h->cbs->on_request(h->arg, r);
    return len;
}

/* ---- serialization ---- */

void
tx__http1_head(tx_buf_t *out, uint8_t http_minor, int status, const tx_header_t *hdrs, size_t n,
               int64_t content_length, bool keep_alive, uint64_t corr_id, const char *date)
{
    char line[64];
    int l = snprintf(line, sizeof line, "HTTP/1.1 %d ", status);

    tx__buf_reserve(out, 192);
    tx__buf_append(out, line, (size_t)l);
    tx__buf_append_str(out, tx_status_reason(status));
    if (date != NULL) {
        tx__buf_append(out, "\r\nDate: ", 8);
        tx__buf_append_str(out, date);
    }
    tx__buf_append(out, "\r\nX-Corr-Id: ", 13);
    tx__buf_append_u64(out, corr_id);
    tx__buf_append(out, "\r\n", 2);
    for (size_t i = 0; i < n; i++) {
        if (strpbrk(hdrs[i].name, "\r\n:") != NULL || strpbrk(hdrs[i].value, "\r\n") != NULL)
            continue; /* defensive: never let a header value split the response */
        tx__buf_append_str(out, hdrs[i].name);
        tx__buf_append(out, ": ", 2);
        tx__buf_append_str(out, hdrs[i].value);
        tx__buf_append(out, "\r\n", 2);
    }
    if (status < 200 || status == 204) {
        /* no body and no length (RFC 9110 §8.6) */
    } else if (content_length >= 0) {
        tx__buf_append(out, "Content-Length: ", 16);
        tx__buf_append_u64(out, (uint64_t)content_length);
        tx__buf_append(out, "\r\n", 2);
    } else if (http_minor >= 1) {
        tx__buf_append_str(out, "Transfer-Encoding: chunked\r\n");
    }
    if (!keep_alive)
        tx__buf_append_str(out, "Connection: close\r\n");
    else if (http_minor == 0)
        tx__buf_append_str(out, "Connection: keep-alive\r\n");
    tx__buf_append(out, "\r\n", 2);
}

void
tx__http1_error(tx_buf_t *out, uint8_t http_minor, int status, const char *message,
                const char *reason, uint32_t retry_after_s, bool keep_alive, uint64_t corr_id,
                const char *date, bool is_head)
{
    char body[TX_ENVELOPE_MAX], ra[16];
    tx_header_t h[2] = {{"Content-Type", "application/json"}, {"Retry-After", ra}};
    size_t blen = tx_envelope_format(body, sizeof body, status, message, reason, corr_id,
                                     retry_after_s * 1000u);

    (void)snprintf(ra, sizeof ra, "%u", retry_after_s);
    tx__http1_head(out, http_minor, status, h, retry_after_s > 0 ? 2 : 1, (int64_t)blen,
                   keep_alive, corr_id, date);
    if (!is_head)
        tx__buf_append(out, body, blen);
}

const char *
tx__reject_message(tx_reject_t r)
{
    switch (r) {
    case TX_REJECT_MAX_CONNS: return "too many connections";
    case TX_REJECT_INFLIGHT: return "too many requests in flight";
    case TX_REJECT_RATE: return "request rate exceeded for this source";
    case TX_REJECT_HEADER_TIMEOUT: return "request headers not received in time";
    case TX_REJECT_BODY_TIMEOUT: return "request body not received in time";
    case TX_REJECT_IDLE_TIMEOUT: return "connection idle";
    case TX_REJECT_WRITE_TIMEOUT: return "client stopped reading";
    case TX_REJECT_BODY_TOO_LARGE: return "request body too large";
    case TX_REJECT_HEADERS_TOO_LARGE: return "request headers too large";
    case TX_REJECT_DECODE_BOMB: return "decoded request body exceeds its bound";
    case TX_REJECT_BAD_ENCODING: return "request body encoding not accepted";
    case TX_REJECT_MALFORMED: return "malformed request";
    default: return "rejected";
    }
}
