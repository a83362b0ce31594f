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
 * This file holds the timers, the read side, the pump and the lifecycle; the
 * pipeline and the parser's callbacks are in tx_conn_http1.c, the write path
 * in tx_conn_write.c, the TLS record layer in tx_conn_tls.c, and the
 * application's answers in tx_answer.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

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

void
tx__conn_arm(tx_conn_t *c)
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
    tx__conn_arm(c);
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
    tx__conn_arm(c);
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

void
tx__conn_set_reading(tx_conn_t *c, bool on)
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
            if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, tx__conn_on_write) < 0) {
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
    tx__conn_set_reading(c, true);
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
            tx__conn_set_reading(c, !c->eof && c->wq < TX_MAX_WRITE_QUEUE);
        return;
    }
    c->pumping = true;
    for (;;) {
        if (tx__conn_collect(c) < 0) {
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
    tx__conn_set_reading(c, !c->eof && !c->h1.failed && !c->close_after &&
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
            tx__conn_set_reading(c, false);
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
        tx__conn_set_reading(c, false);
        tx_conn_pump(c);
        return;
    }
    c->srv->lim.stats.bytes_in += (uint64_t)nread;
    if (c->phase == TX_PH_LINGER)
        return; /* draining after the last answer */
    c->in_read = true;
    if (c->ssl != NULL)
        tx__conn_tls_read(c, (const uint8_t *)buf->base, (size_t)nread);
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
    tx__conn_push(c, r);
    tx__conn_answer_reject(c, r);
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
        tx__conn_arm(c);
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

    tx__http1_init(&c->h1, &s->lim.cfg, &tx__conn_cbs, c, &s->corr_seq, &c->peer);
    c->proto = s->lim.cfg.h2_disabled ? TX_PROTO_H1 : TX_PROTO_SNIFF;
    if (tls != NULL && (c->ssl = tx__tls_ssl_new(tls)) == NULL) {
        tx__conn_close(c);
        return;
    }
    /* the handshake, or the first request's headers, are due this long after accept */
    tx_conn_set_phase(c, TX_PH_HEADERS,
                      tls != NULL ? s->lim.cfg.tls_handshake_ms : s->lim.cfg.header_timeout_ms);
    tx__conn_set_reading(c, true);
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

