/*
 * tx_conn.c - one HTTP/1.1 connection on libuv: reads feed the sans-I/O
 * parser (tx_http1.c), complete requests go to the application, answers are
 * written in request order, and the hardening layer's per-connection rules
 * apply (phase timeouts, pipeline depth, output backpressure, lingering close).
 * Invariants: at most TX_MAX_PIPELINE requests wait for answers; reading
 * pauses while the pipeline is full, unparsed input is held, or more than
 * TX_MAX_WRITE_QUEUE bytes wait to be written, so a client that does not
 * read cannot make us buffer more than that plus one answer; every phase has
 * a deadline (header, body, idle, write), and one lazily re-armed timer
 * enforces the earliest. The memory is freed in the last close callback.
 * Layers: the socket; the TLS record layer when the listener has an SSL_CTX
 * (ciphertext in and out of memory BIOs, tx_tls.c), with its handshake
 * deadline; then the protocol: on cleartext the 24-byte HTTP/2 preface
 * ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is matched byte by byte before any
 * byte reaches http-parser, a full match hands the connection to nghttp2
 * (tx_h2.c), the first mismatch to HTTP/1.1 (the matched bytes are the
 * preface's own, so nothing is buffered); over TLS, ALPN decides. An HTTP/1.1
 * request with "Upgrade: h2c" switches the connection to HTTP/2 with that
 * request as stream 1. Every protocol shares the timers, the write path
 * (encrypted at the last step, after backpressure is counted) and the limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

typedef struct {
    uv_write_t req;
    tx_conn_t *c;
    uint8_t *owned;     /* bytes this write owns, or NULL */
    size_t len;         /* bytes counted in c->wq */
    tx_chunk_t *chunk;  /* streamed chunk whose done callback runs at completion */
    tx_request_t *req_owner;
} tx_wreq_t;

static void tx_conn_pump(tx_conn_t *c);

static uint64_t
tx_now(const tx_conn_t *c)
{
    return uv_now(c->srv->loop);
}

uint64_t
tx__conn_now(const tx_conn_t *c)
{
    return tx_now(c);
}

/* ---- timers ---- */

static void tx_conn_on_timer(uv_timer_t *t);

static void
tx_conn_arm(tx_conn_t *c)
{
    uint64_t due = c->deadline;

    if (c->write_deadline != 0 && (due == 0 || c->write_deadline < due))
        due = c->write_deadline;
    if (due == 0 || c->closing)
        return;
    if (c->timer_due != 0 && c->timer_due <= due)
        return; /* fires earlier and re-arms itself */
    uint64_t now = tx_now(c);
    uv_timer_start(&c->timer, tx_conn_on_timer, due > now ? due - now : 0, 0);
    c->timer_due = due;
}

static void
tx_conn_set_phase(tx_conn_t *c, tx_phase_t ph, uint32_t timeout_ms)
{
    c->phase = ph;
    c->deadline = timeout_ms != 0 ? tx_now(c) + timeout_ms : 0;
    tx_conn_arm(c);
}

void
tx__conn_set_phase(tx_conn_t *c, tx_phase_t ph, uint32_t timeout_ms)
{
    tx_conn_set_phase(c, ph, timeout_ms);
}

void
tx__conn_set_phase_at(tx_conn_t *c, tx_phase_t ph, uint64_t deadline_ms)
{
    c->phase = ph;
    c->deadline = deadline_ms;
    tx_conn_arm(c);
}

void
tx__conn_soon(tx_conn_t *c)
{
    uint64_t now = tx_now(c);

    if (c->closing || (c->timer_due != 0 && c->timer_due <= now))
        return;
    uv_timer_start(&c->timer, tx_conn_on_timer, 0, 0);
    c->timer_due = now; /* on_timer pumps, then re-arms for the real deadlines */
}

/* ---- the pipeline ---- */

static void
tx_conn_push(tx_conn_t *c, tx_request_t *r)
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

static void
tx_conn_pop(tx_conn_t *c)
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
static void
tx_conn_answer_reject(tx_conn_t *c, tx_request_t *r)
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
        tx_conn_set_phase(c, TX_PH_HEADERS, c->srv->lim.cfg.header_timeout_ms);
}

static int
tx_cb_head(void *arg, tx_request_t *r)
{
    tx_conn_t *c = arg;
    tx_limits_t *l = &c->srv->lim;
    uint32_t retry = 0;

    if (tx__limits_rate_take(l, &c->peer, tx_now(c), &retry) < 0) {
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
    tx_conn_set_phase(c, TX_PH_BODY, streamed ? cfg->stream_idle_ms : cfg->body_timeout_ms);
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

    tx_conn_push(c, r);
    if (tx__limits_inflight_admit(&s->lim) < 0) {
        /* defensive: on_head checked the slot an instant ago */
        c->h1.cur = NULL;
        c->h1.failed = true;
        c->close_after = true;
        r->keep_alive = false;
        r->reject_status = 503;
        r->reject_reason = TX_REJECT_INFLIGHT;
        r->retry_after_s = s->lim.cfg.retry_after_s;
        tx_conn_answer_reject(c, r);
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
        tx_conn_set_phase(c, TX_PH_WAIT, 0);
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
    tx_conn_push(c, r);
    if (!tx__http1_mid_message(&c->h1))
        tx_conn_set_phase(c, TX_PH_WAIT, 0);
    if (r->reject_status == 0 && tx__limits_inflight_admit(&s->lim) < 0) {
        r->reject_status = 503;
        r->reject_reason = TX_REJECT_INFLIGHT;
        r->retry_after_s = s->lim.cfg.retry_after_s;
    }
    if (!r->keep_alive || c->h1.failed)
        c->close_after = true;
    if (r->reject_status != 0) {
        tx_conn_answer_reject(c, r);
        return;
    }
    r->state = TX_REQ_IN_APP;
    r->counted_inflight = true;
    s->handler(r, s->arg);
}

static const tx_http1_cbs_t tx_conn_cbs = {
    .on_begin = tx_cb_begin,
    .on_head = tx_cb_head,
    .on_continue = tx_cb_continue,
    .on_body = tx_cb_body,
    .on_hook = tx_cb_hook,
    .on_stream = tx_cb_stream,
    .on_request = tx_cb_request,
};

/* ---- writes ---- */

static void
tx_conn_on_write(uv_write_t *req, int status)
{
    tx_wreq_t *w = ron_container_of(req, tx_wreq_t, req);
    tx_conn_t *c = w->c;

    c->wq -= w->len;
    if (status == 0)
        c->srv->lim.stats.bytes_out += w->len;
    if (w->chunk != NULL) {
        if (w->chunk->done != NULL)
            w->chunk->done(status == 0 ? 0 : RON_ECLOSED, w->chunk->done_arg);
        free(w->chunk);
    }
    free(w->owned);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        tx__conn_close(c);
        return;
    }
    c->write_deadline = c->wq > 0 ? tx_now(c) + c->srv->lim.cfg.write_timeout_ms : 0;
    tx_conn_arm(c);
    tx_conn_pump(c);
}

/* Write bufs (len bytes) after what is queued. Takes owned (freed once
 * written, or at once on failure); chunk's done runs at completion. */
static int
tx_conn_write_owned(tx_conn_t *c, uint8_t *owned, const uv_buf_t *bufs, unsigned nbufs,
                    size_t len, tx_chunk_t *chunk)
{
    tx_wreq_t *w;
    int rc;
    uv_buf_t cb, rest[4];

    if (c->wq == 0 && (c->ssl == NULL || !c->tls_done) && nbufs <= 4) {
        /* nothing queued: write at once, and queue only what the socket did
         * not take (a small answer costs one writev and no write request) */
        rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (rc < 0 && rc != UV_EAGAIN) {
            free(owned);
            return rc;
        }
        size_t n = rc > 0 ? (size_t)rc : 0;
        c->srv->lim.stats.bytes_out += n;
        if (n == len) {
            free(owned);
            if (chunk != NULL) {
                chunk->status = 0;
                tx__server_defer_done(c->srv, chunk); /* on a later loop turn */
            }
            return 0;
        }
        unsigned m = 0;
        for (unsigned i = 0; i < nbufs; i++) {
            if (n >= bufs[i].len) {
                n -= bufs[i].len;
                continue;
            }
            rest[m++] = uv_buf_init(bufs[i].base + n, (unsigned)(bufs[i].len - n));
            n = 0;
        }
        len = 0;
        for (unsigned i = 0; i < m; i++)
            len += rest[i].len;
        bufs = rest;
        nbufs = m;
    }
    if (c->ssl != NULL && c->tls_done) {
        /* the record layer: plaintext in, records out (the plaintext is released now) */
        tx_buf_t rec = {0};
        rc = tx__tls_encrypt(c->ssl, bufs, nbufs, &rec);
        free(owned);
        if (rc < 0) {
            tx__buf_free(&rec);
            return UV_EPROTO;
        }
        owned = rec.p;
        len = rec.len;
        cb = uv_buf_init((char *)rec.p, (unsigned)rec.len);
        bufs = &cb;
        nbufs = 1;
    }
    w = ron_xcalloc(1, sizeof *w);
    w->c = c;
    w->owned = owned;
    w->len = len;
    w->chunk = chunk;
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, tx_conn_on_write);
    if (rc < 0) {
        free(w);
        free(owned); /* taken either way (the plaintext, or its records) */
        return rc;
    }
    if (c->wq == 0)
        c->write_deadline = tx_now(c) + c->srv->lim.cfg.write_timeout_ms;
    c->wq += len;
    tx_conn_arm(c);
    return 0;
}

/* Write c->out: directly when nothing is queued, else through a write request. */
static int
tx_conn_flush_out(tx_conn_t *c)
{
    size_t off = 0;
    int n;

    if (c->out.len == 0)
        return 0;
    if (c->wq == 0 && (c->ssl == NULL || !c->tls_done)) {
        uv_buf_t b = uv_buf_init((char *)c->out.p, (unsigned)c->out.len);
        n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n < 0 && n != UV_EAGAIN)
            return n;
        if (n > 0) {
            off = (size_t)n;
            c->srv->lim.stats.bytes_out += off;
        }
        if (off == c->out.len) {
            c->out.len = 0;
            return 0;
        }
    }
    /* hand the buffer itself to the write request */
    uint8_t *owned = c->out.p;
    size_t len = c->out.len - off;
    uv_buf_t b = uv_buf_init((char *)owned + off, (unsigned)len);
    memset(&c->out, 0, sizeof c->out);
    return tx_conn_write_owned(c, owned, &b, 1, len, NULL);
}

int
tx__conn_flush(tx_conn_t *c)
{
    return tx_conn_flush_out(c);
}

static const char tx_crlf[] = "\r\n";

/* Submit the queued chunks of a streaming head request (zero copy). The
 * bytes batched in c->out before them (its head, earlier answers) go in the
 * same writev as the first chunk: one syscall for a small answer. */
static int
tx_conn_write_chunks(tx_conn_t *c, tx_request_t *r)
{
    tx_chunk_t *k;
    int rc;

    while ((k = r->chunks) != NULL) {
        uv_buf_t b[4];
        unsigned nb = 0;
        uint8_t *owned = NULL;
        r->chunks = k->next;
        if (r->chunks == NULL)
            r->chunks_tail = NULL;
        r->chunk_bytes -= k->len;
        if (c->out.len > 0) {
            owned = c->out.p; /* the write owns the batch now */
            b[nb++] = uv_buf_init((char *)owned, (unsigned)c->out.len);
            memset(&c->out, 0, sizeof c->out);
        }
        unsigned own = nb;
        if (k->hdr_len > 0)
            b[nb++] = uv_buf_init(k->hdr, k->hdr_len);
        if (k->len > 0)
            b[nb++] = uv_buf_init((char *)(uintptr_t)k->data, (unsigned)k->len);
        if (r->chunked && !k->last && k->len > 0)
            b[nb++] = uv_buf_init((char *)tx_crlf, 2);
        size_t len = 0;
        for (unsigned i = 0; i < nb; i++)
            len += b[i].len;
        if (nb == own) {
            k->status = 0; /* HEAD: nothing of k goes out; told on a later turn */
            tx__server_defer_done(c->srv, k);
            k = NULL;
            if (nb == 0)
                continue;
        }
        rc = tx_conn_write_owned(c, owned, b, nb, len, k);
        if (rc < 0) {
            if (k != NULL) {
                k->status = RON_ECLOSED;
                tx__server_defer_done(c->srv, k);
            }
            return rc;
        }
    }
    return 0;
}

/* Move answers at the head of the pipeline to the wire, in order. */
static int
tx_conn_collect(tx_conn_t *c)
{
    tx_request_t *r;
    int rc;

    while ((r = c->head) != NULL) {
        if (r->state == TX_REQ_IN_APP)
            break;
        if (c->out.len == 0 && r->out.len > 0) {
            tx_buf_t t = c->out; /* swap: no copy for the common single answer */
            c->out = r->out;
            r->out = t;
        } else {
            tx__buf_append(&c->out, r->out.p, r->out.len);
        }
        r->out.len = 0;
        if (r->state == TX_REQ_ANSWERED) {
            tx_conn_pop(c);
            continue;
        }
        /* streaming: the head goes first (in the first chunk's write), then
         * its chunks in order */
        if (r->chunks != NULL && (rc = tx_conn_write_chunks(c, r)) < 0)
            return rc;
        if (r->state != TX_REQ_ENDED)
            break;
        tx_conn_pop(c);
    }
    return tx_conn_flush_out(c);
}

/* ---- reading ---- */

static void
tx_conn_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    tx_conn_t *c = ron_container_of(h, tx_conn_t, tcp);

    (void)hint;
    *buf = uv_buf_init((char *)c->srv->rdbuf, sizeof c->srv->rdbuf);
}

static const char tx_h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; /* 24 bytes */

/* True while the app holds a piece of the streamed body being read. */
static bool
tx_conn_body_held(const tx_conn_t *c)
{
    return c->sreq != NULL && c->sreq->bheld;
}

/*
 * Hand the streamed request's next event to the app when one is due and no
 * piece is held: an abort, the bytes read so far, or the end. A client that
 * half-closed mid-body has cut it off (once nothing held back is left).
 */
static bool
tx_conn_body_step(tx_conn_t *c)
{
    tx_request_t *r = c->sreq;

    if (r == NULL || r->bheld || c->closing)
        return false;
    if (r->babort == 0 && r->body.len == 0 && !r->bcomplete) {
        if (!c->eof || c->pending.len > 0 || c->h1.cur != r)
            return false;
        c->h1.cur = NULL; /* the app owns r */
        c->h1.failed = true;
        c->close_after = true;
        r->keep_alive = false;
        r->babort = RON_ECLOSED;
    }
    if (r->babort != 0 || (r->body.len == 0 && r->bcomplete))
        c->sreq = NULL; /* its last event */
    else if (c->h1.cur == r && c->phase == TX_PH_BODY)
        c->deadline = 0; /* held: the app's pace, not the client's */
    return tx__body_deliver(r); /* r may be answered and gone after this */
}

void
tx__conn_body_release(tx_conn_t *c, tx_request_t *r)
{
    if (c->closing)
        return;
    if (c->sreq == r && c->h1.cur == r && c->phase == TX_PH_BODY)
        tx_conn_set_phase(c, TX_PH_BODY, c->srv->lim.cfg.stream_idle_ms);
    tx__conn_soon(c); /* the next event and the held input, on a later turn */
}

/* Parse data; keep what cannot be parsed now (pipeline full, a piece held) in pending. */
static void
tx_conn_parse(tx_conn_t *c, const uint8_t *data, size_t len)
{
    size_t off = 0;

    while (off < len && !c->closing && !c->h1.failed && c->proto == TX_PROTO_H1) {
        if (c->depth >= TX_MAX_PIPELINE || tx_conn_body_held(c)) {
            tx__buf_append(&c->pending, data + off, len - off);
            return;
        }
        off += tx__http1_feed(&c->h1, data + off, len - off);
        (void)tx_conn_body_step(c);
    }
    /* an "Upgrade: h2c" request switched the protocol: the rest is HTTP/2 */
    if (off < len && !c->closing && c->proto == TX_PROTO_H2)
        tx__h2_feed(c, data + off, len - off);
}

void
tx__conn_input(tx_conn_t *c, const uint8_t *data, size_t len)
{
    size_t off = 0;

    if (c->proto == TX_PROTO_SNIFF) {
        while (off < len && c->sniffed < 24 && data[off] == (uint8_t)tx_h2_preface[c->sniffed]) {
            off++;
            c->sniffed++;
        }
        if (c->sniffed == 24) {
            if (tx__h2_start(c, NULL, NULL) < 0) {
                tx__conn_close(c);
                return;
            }
            tx__h2_feed(c, (const uint8_t *)tx_h2_preface, 24);
        } else if (off < len) {
            /* not HTTP/2: the bytes held back were the preface's own */
            c->proto = TX_PROTO_H1;
            if (c->sniffed > 0)
                tx_conn_parse(c, (const uint8_t *)tx_h2_preface, c->sniffed);
        } else {
            return; /* all of it matched so far */
        }
    }
    if (off >= len || c->closing)
        return;
    if (c->proto == TX_PROTO_H2)
        tx__h2_feed(c, data + off, len - off);
    else
        tx_conn_parse(c, data + off, len - off);
}

static void tx_conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void
tx_conn_set_reading(tx_conn_t *c, bool on)
{
    if (on == c->reading || c->closing)
        return;
    if (on) {
        if (uv_read_start((uv_stream_t *)&c->tcp, tx_conn_on_alloc, tx_conn_on_read) < 0)
            return;
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (c->phase != TX_PH_LINGER && !c->h1.failed)
            c->srv->lim.stats.read_pauses++;
    }
    c->reading = on;
}

static void
tx_conn_on_shutdown(uv_shutdown_t *req, int status)
{
    tx_conn_t *c = ron_container_of(req, tx_conn_t, shutdown);

    if (status < 0 && !c->closing)
        tx__conn_close(c);
}

/* All answers written and no more requests: half-close, drain briefly, close. */
static void
tx_conn_linger(tx_conn_t *c)
{
    tx_conn_set_phase(c, TX_PH_LINGER, TX_REFUSE_LINGER_MS);
    if (c->ssl != NULL && c->tls_done && !c->eof) {
        /* close_notify, so the client knows the stream ended here */
        tx_buf_t rec = {0};
        (void)SSL_shutdown(c->ssl);
        ERR_clear_error();
        tx__tls_take_output(c->ssl, &rec);
        if (rec.len > 0) {
            uv_buf_t b = uv_buf_init((char *)rec.p, (unsigned)rec.len);
            tx_wreq_t *w = ron_xcalloc(1, sizeof *w);
            w->c = c;
            w->owned = rec.p;
            w->len = rec.len;
            if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, tx_conn_on_write) < 0) {
                free(w);
                tx__buf_free(&rec);
            } else {
                c->wq += rec.len;
            }
        }
    }
    if (c->eof || uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, tx_conn_on_shutdown) < 0) {
        tx__conn_close(c);
        return;
    }
    tx_conn_set_reading(c, true);
}

void
tx__conn_linger(tx_conn_t *c)
{
    tx_conn_linger(c);
}

void
tx__conn_pump(tx_conn_t *c)
{
    tx_conn_pump(c);
}

static void
tx_conn_pump(tx_conn_t *c)
{
    if (c->pumping || c->closing || c->in_read)
        return;
    if (c->proto == TX_PROTO_H2) {
        c->pumping = true;
        tx__h2_pump(c);
        c->pumping = false;
        if (!c->closing && c->phase != TX_PH_LINGER)
            tx_conn_set_reading(c, !c->eof && c->wq < TX_MAX_WRITE_QUEUE);
        return;
    }
    c->pumping = true;
    for (;;) {
        if (tx_conn_collect(c) < 0) {
            tx__conn_close(c);
            goto out;
        }
        if (tx_conn_body_step(c))
            continue; /* the app may have answered: collect it */
        if (c->closing)
            goto out;
        /* held input is parsed once answers made room in the pipeline */
        if (c->pending.len == 0 || c->depth >= TX_MAX_PIPELINE || c->h1.failed ||
            tx_conn_body_held(c))
            break;
        tx_buf_t p = c->pending; /* parse may refill pending: take it first */
        memset(&c->pending, 0, sizeof c->pending);
        tx_conn_parse(c, p.p, p.len);
        tx__buf_free(&p);
        if (c->closing || c->proto == TX_PROTO_H2)
            goto out; /* an upgrade held in pending: HTTP/2 pumps below */
    }
    if (c->phase == TX_PH_LINGER)
        goto out;
    if (c->depth == 0 && c->wq == 0 && c->out.len == 0) {
        if (c->close_after || c->h1.failed) {
            tx_conn_linger(c);
            goto out;
        }
        if (c->phase == TX_PH_WAIT && !tx__http1_mid_message(&c->h1))
            tx_conn_set_phase(c, TX_PH_IDLE, c->srv->lim.cfg.idle_timeout_ms);
    }
    tx_conn_set_reading(c, !c->eof && !c->h1.failed && !c->close_after &&
                               c->depth < TX_MAX_PIPELINE && c->pending.len == 0 &&
                               c->wq < TX_MAX_WRITE_QUEUE && !tx_conn_body_held(c));
out:
    c->pumping = false;
    /* a streaming answer learns that output drained; its writes pump again */
    tx_request_t *r = c->head;
    if (!c->closing && r != NULL && r->state == TX_REQ_STREAMING && r->want_drain &&
        r->drain != NULL && c->wq + r->chunk_bytes < TX_MAX_WRITE_QUEUE / 2) {
        r->want_drain = false; /* one call per RON_EAGAIN */
        r->drain(r, r->drain_arg);
    }
    if (c->proto == TX_PROTO_H2 && !c->closing)
        tx_conn_pump(c); /* switched by "Upgrade: h2c" while pumping */
}

/* Write what the SSL produced (handshake, alerts) as is, outside the plaintext path. */
static void
tx_conn_tls_output(tx_conn_t *c)
{
    tx_buf_t rec = {0};

    tx__tls_take_output(c->ssl, &rec);
    if (rec.len == 0)
        return;
    if (c->tls_done) {
        /* post-handshake records (tickets): in order with the plaintext path */
        uv_buf_t b = uv_buf_init((char *)rec.p, (unsigned)rec.len);
        tx_wreq_t *w = ron_xcalloc(1, sizeof *w);
        w->c = c;
        w->owned = rec.p;
        w->len = rec.len;
        if (tx_conn_flush_out(c) < 0 ||
            uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, tx_conn_on_write) < 0) {
            free(w);
            tx__buf_free(&rec);
            tx__conn_close(c);
            return;
        }
        c->wq += rec.len;
        return;
    }
    tx__buf_append(&c->out, rec.p, rec.len); /* no plaintext yet: out holds records only */
    tx__buf_free(&rec);
    if (tx_conn_flush_out(c) < 0)
        tx__conn_close(c);
}

static void
tx_conn_tls_fail(tx_conn_t *c, tx_tls_fail_t why)
{
    c->srv->lim.stats.tls_failures[why]++;
    ERR_clear_error();
    tx_conn_tls_output(c); /* the alert, if any */
    if (c->closing)
        return;
    c->h1.failed = true;
    c->close_after = true;
    c->proto = TX_PROTO_H1;
    tx_conn_pump(c);
}

/* Ciphertext from the socket: handshake, then plaintext to the protocol. */
static void
tx_conn_tls_read(tx_conn_t *c, const uint8_t *data, size_t len)
{
    tx_server_t *s = c->srv;
    int n, err;

    if (c->h1.failed && !c->tls_done)
        return; /* a failed handshake: only its alert goes out */
    if (BIO_write(SSL_get_rbio(c->ssl), data, (int)len) != (int)len) {
        tx__conn_close(c);
        return;
    }
    if (!c->tls_done) {
        n = SSL_do_handshake(c->ssl);
        if (n != 1) {
            err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                tx_conn_tls_output(c);
                return;
            }
            tx_conn_tls_fail(c, tx__tls_fail_reason(err, ERR_peek_last_error()));
            return;
        }
        tx_conn_tls_output(c);
        if (c->closing)
            return;
        c->tls_done = true;
        s->lim.stats.tls_handshakes++;
        const unsigned char *alpn = NULL;
        unsigned alen = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
        if (alen == 2 && memcmp(alpn, "h2", 2) == 0 && !s->lim.cfg.h2_disabled) {
            if (tx__h2_start(c, NULL, NULL) < 0) {
                tx__conn_close(c);
                return;
            }
        } else {
            c->proto = alen > 0 || s->lim.cfg.h2_disabled ? TX_PROTO_H1 : TX_PROTO_SNIFF;
            /* the request's headers are due header_timeout after the handshake */
            tx_conn_set_phase(c, TX_PH_HEADERS, s->lim.cfg.header_timeout_ms);
        }
    }
    while (!c->closing) {
        n = SSL_read(c->ssl, s->plain, (int)sizeof s->plain);
        if (n <= 0) {
            err = SSL_get_error(c->ssl, n);
            ERR_clear_error();
            if (err == SSL_ERROR_ZERO_RETURN) {
                /* close_notify: the client is done sending, as a TCP half-close */
                c->eof = true;
                c->close_after = true;
                tx_conn_set_reading(c, false);
            } else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                tx__conn_close(c);
                return;
            }
            break;
        }
        tx__conn_input(c, s->plain, (size_t)n);
    }
    if (!c->closing)
        tx_conn_tls_output(c);
}

static void
tx_conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    tx_conn_t *c = ron_container_of(st, tx_conn_t, tcp);

    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->ssl != NULL && !c->tls_done && !c->h1.failed) {
            c->srv->lim.stats.tls_failures[TX_TLS_FAIL_EOF]++;
            tx__conn_close(c);
            return;
        }
        if (c->proto == TX_PROTO_H2 && nread == UV_EOF) {
            /* the client half-closed: what is queued goes out, then we close */
            c->eof = true;
            tx_conn_set_reading(c, false);
            tx_conn_pump(c);
            if (!c->closing && c->wq == 0 && c->out.len == 0)
                tx__conn_close(c);
            return;
        }
        if (nread != UV_EOF || c->phase == TX_PH_LINGER ||
            (c->depth == 0 && c->wq == 0 && c->out.len == 0)) {
            tx__conn_close(c);
            return;
        }
        /* the client half-closed after its requests: answer them, then close */
        c->eof = true;
        c->close_after = true;
        tx_conn_set_reading(c, false);
        tx_conn_pump(c);
        return;
    }
    c->srv->lim.stats.bytes_in += (uint64_t)nread;
    if (c->phase == TX_PH_LINGER)
        return; /* draining after the last answer */
    c->in_read = true;
    if (c->ssl != NULL)
        tx_conn_tls_read(c, (const uint8_t *)buf->base, (size_t)nread);
    else
        tx__conn_input(c, (const uint8_t *)buf->base, (size_t)nread);
    c->in_read = false;
    tx_conn_pump(c);
}

/* ---- timeouts ---- */

static void
tx_conn_timeout_request(tx_conn_t *c, tx_reject_t why)
{
    tx_request_t *r = c->h1.cur;

    c->h1.cur = NULL;
    c->h1.failed = true;
    if (r == NULL)
        r = tx__http1_request_new(&c->h1);
    if (r->view.corr_id == 0)
        r->view.corr_id = c->srv->corr_seq++;
    r->keep_alive = false;
    r->reject_status = 408;
    r->reject_reason = why;
    r->reject_detail = NULL;
    tx_conn_push(c, r);
    tx_conn_answer_reject(c, r);
    c->close_after = true;
    /* the answer must leave within the write timeout, or the connection goes */
    tx_conn_set_phase(c, TX_PH_WAIT, c->srv->lim.cfg.write_timeout_ms);
    tx_conn_pump(c);
}

/* A streamed body sent nothing for stream_idle_ms: the app learns
 * RON_ETIMEOUT (and answers 408); the connection closes after the answer. */
static void
tx_conn_stream_timeout(tx_conn_t *c)
{
    tx_request_t *r = c->sreq;

    tx__limits_count(&c->srv->lim, TX_REJECT_BODY_TIMEOUT);
    c->h1.cur = NULL; /* the app owns r */
    c->h1.failed = true;
    c->close_after = true;
    r->keep_alive = false;
    r->babort = RON_ETIMEOUT;
    tx_conn_set_phase(c, TX_PH_WAIT, 0);
    tx_conn_pump(c);
}

static void
tx_conn_on_timer(uv_timer_t *t)
{
    tx_conn_t *c = ron_container_of(t, tx_conn_t, timer);
    uint64_t now = tx_now(c);
    tx_limits_t *l = &c->srv->lim;

    c->timer_due = 0;
    if (c->write_deadline != 0 && c->write_deadline <= now) {
        tx__limits_count(l, TX_REJECT_WRITE_TIMEOUT);
        tx__conn_close(c);
        return;
    }
    if (c->deadline != 0 && c->deadline <= now) {
        c->deadline = 0;
        if (c->ssl != NULL && !c->tls_done && c->phase == TX_PH_HEADERS) {
            l->stats.tls_failures[TX_TLS_FAIL_TIMEOUT]++;
            tx__conn_close(c);
            return;
        }
        if (c->proto == TX_PROTO_H2 && c->phase != TX_PH_LINGER) {
            tx__h2_timeout(c, c->phase == TX_PH_IDLE ? TX_REJECT_IDLE_TIMEOUT
                                                     : c->phase == TX_PH_BODY
                                                           ? TX_REJECT_BODY_TIMEOUT
                                                           : TX_REJECT_HEADER_TIMEOUT);
            return;
        }
        switch (c->phase) {
        case TX_PH_HEADERS:
            if (c->h1.cur == NULL && c->depth == 0) {
                /* connected and sent nothing within the header timeout */
                tx__limits_count(l, TX_REJECT_HEADER_TIMEOUT);
                tx__conn_close(c);
                return;
            }
            tx_conn_timeout_request(c, TX_REJECT_HEADER_TIMEOUT);
            return;
        case TX_PH_BODY:
            if (c->sreq != NULL && c->h1.cur == c->sreq) {
                tx_conn_stream_timeout(c);
                return;
            }
            tx_conn_timeout_request(c, TX_REJECT_BODY_TIMEOUT);
            return;
        case TX_PH_IDLE:
            tx__limits_count(l, TX_REJECT_IDLE_TIMEOUT);
            tx__conn_close(c);
            return;
        case TX_PH_WAIT:   /* a timed-out answer that could not be written */
        case TX_PH_LINGER: /* the client did not close after our last answer */
            tx__conn_close(c);
            return;
        }
    }
    tx_conn_pump(c); /* callbacks deferred by tx__conn_soon */
    if (!c->closing)
        tx_conn_arm(c);
}

/* ---- lifecycle ---- */

static void
tx_conn_on_close(uv_handle_t *h)
{
    tx_conn_t *c = h->data;
    tx_server_t *s = c->srv;

    if (--c->open_handles > 0)
        return;
    tx__buf_free(&c->pending);
    tx__buf_free(&c->out);
    tx__http1_free(&c->h1);
    SSL_free(c->ssl);
    free(c->h2);
    tx__limits_conn_release(&s->lim);
    free(c);
    tx__server_unref(s);
}

void
tx__conn_close(tx_conn_t *c)
{
    tx_request_t *r, *next;
    tx_server_t *s = c->srv;

    if (c->closing)
        return;
    c->closing = true;
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    if (c->h2 != NULL)
        tx__h2_close(c);
    for (r = c->head; r != NULL; r = next) {
        next = r->next;
        r->next = NULL;
        r->conn = NULL;
        if (r->counted_inflight) {
            tx__limits_inflight_release(&s->lim);
            r->counted_inflight = false;
        }
        /* chunks never submitted (a streamed answer behind another, or
         * ahead of the write queue) are told RON_ECLOSED and an open
         * streamed answer's drain runs once, all on a later loop turn: this
         * may run inside the app's own tx_respond_* call */
        if (r->state == TX_REQ_STREAMING || r->state == TX_REQ_ENDED)
            tx__server_gone(s, r);
        if (r->state == TX_REQ_IN_APP)
            tx__server_body_abort(s, r); /* a streamed body cut off: told on a later turn */
        if (r->state == TX_REQ_ANSWERED || r->state == TX_REQ_ENDED)
            tx__request_free(r); /* otherwise the app still holds it and frees it on answer */
    }
    c->head = c->tail = NULL;
    c->depth = 0;
    c->sreq = NULL;
    if (c->h1.cur != NULL && c->h1.cur->bstream)
        c->h1.cur = NULL; /* the app owns it */
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->timer, tx_conn_on_close);
    uv_close((uv_handle_t *)&c->tcp, tx_conn_on_close);
}

static tx_conn_t *
tx_conn_new(tx_server_t *s)
{
    tx_conn_t *c = ron_xcalloc(1, sizeof *c);

    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    s->open++;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    return c;
}

/* The socket is connected and c->peer known: start reading. */
static void
tx_conn_begin(tx_conn_t *c, SSL_CTX *tls)
{
    tx_server_t *s = c->srv;

    tx__http1_init(&c->h1, &s->lim.cfg, &tx_conn_cbs, c, &s->corr_seq, &c->peer);
    c->proto = s->lim.cfg.h2_disabled ? TX_PROTO_H1 : TX_PROTO_SNIFF;
    if (tls != NULL && (c->ssl = tx__tls_ssl_new(tls)) == NULL) {
        tx__conn_close(c);
        return;
    }
    /* the handshake, or the first request's headers, are due this long after accept */
    tx_conn_set_phase(c, TX_PH_HEADERS,
                      tls != NULL ? s->lim.cfg.tls_handshake_ms : s->lim.cfg.header_timeout_ms);
    tx_conn_set_reading(c, true);
    if (!c->reading)
        tx__conn_close(c);
}

void
tx__conn_accept(tx_server_t *s, uv_stream_t *listener, SSL_CTX *tls)
{
    tx_conn_t *c = tx_conn_new(s);
    int len = sizeof c->peer;

    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 ||
        uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) < 0) {
        tx__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    tx_conn_begin(c, tls);
}

int
tx__conn_adopt(tx_server_t *s, int fd, const struct sockaddr_storage *peer)
{
    tx_conn_t *c;
    int rc;

    if (tx__limits_conn_admit(&s->lim) < 0)
        return RON_EBUSY;
    c = tx_conn_new(s);
    c->peer = *peer;
    if ((rc = uv_tcp_open(&c->tcp, fd)) < 0) {
        tx__conn_close(c);
        return rc;
    }
    tx_conn_begin(c, NULL);
    return 0;
}

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
    tx_conn_pump(c);
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
    tx_conn_pump(c);
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
    tx_conn_pump(c);
    return 0;
}

static void
tx_chunk_queue(tx_request_t *req, tx_chunk_t *k)
{
    if (req->chunks_tail != NULL)
        req->chunks_tail->next = k;
    else
        req->chunks = k;
    req->chunks_tail = k;
    req->chunk_bytes += k->len;
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
        k = ron_xcalloc(1, sizeof *k);
        k->data = data;
        k->len = req->is_head ? 0 : len;
        k->done = done;
        k->done_arg = done_arg;
        if (req->remaining > 0)
            req->remaining -= (int64_t)len;
        return tx__h2_write(c, req, k);
    }
    if (c->wq + req->chunk_bytes >= TX_MAX_WRITE_QUEUE) {
        req->want_drain = true;
        return RON_EAGAIN;
    }
    k = ron_xcalloc(1, sizeof *k);
    k->data = data;
    k->len = req->is_head ? 0 : len;
    k->done = done;
    k->done_arg = done_arg;
    if (req->chunked && len > 0)
        k->hdr_len = (uint8_t)snprintf(k->hdr, sizeof k->hdr, "%zx\r\n", len);
    if (req->remaining > 0)
        req->remaining -= (int64_t)len;
    tx_chunk_queue(req, k);
    tx_conn_pump(c);
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
        tx_chunk_queue(req, k);
    }
    req->drain = NULL;
    req->state = TX_REQ_ENDED;
    tx_conn_pump(c);
    return 0;
}
