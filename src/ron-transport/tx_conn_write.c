/*
 * tx_conn_write.c - the write path of a connection: answers leave the head
 * of the pipeline in order, batched into one buffer (or one writev with a
 * streamed answer's chunks), tried at once with uv_try_write when nothing is
 * queued, and otherwise handed to a write request; over TLS the plaintext is
 * encrypted at this last step.
 * Invariants: c->wq counts the bytes handed to libuv and not yet written,
 * and the write deadline runs while it is non-zero; a chunk's done callback
 * runs exactly once, on a later loop turn or at write completion.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

/* ---- writes ---- */

void
tx__conn_on_write(uv_write_t *req, int status)
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
    c->write_deadline = c->wq > 0 ? tx__conn_now(c) + c->srv->lim.cfg.write_timeout_ms : 0;
    tx__conn_arm(c);
    tx__conn_pump(c);
}

/* Offer bufs (nbufs <= 4) to the socket at once. What it did not take is
 * left in rest[0..*nrest_out), *left_out bytes (0: all written). Returns 0 or
 * a libuv error other than UV_EAGAIN. */
static int
tx_conn_try_write(tx_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, uv_buf_t rest[static 4],
                  unsigned *nrest_out, size_t *left_out)
{
    int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    size_t n, left = 0;
    unsigned m = 0;

    if (rc < 0 && rc != UV_EAGAIN)
        return rc;
    n = rc > 0 ? (size_t)rc : 0;
    c->srv->lim.stats.bytes_out += n;
    for (unsigned i = 0; i < nbufs; i++) {
        if (n >= bufs[i].len) {
            n -= bufs[i].len;
            continue;
        }
        rest[m++] = uv_buf_init(bufs[i].base + n, (unsigned)(bufs[i].len - n));
        n = 0;
    }
    for (unsigned i = 0; i < m; i++)
        left += rest[i].len;
    *nrest_out = m;
    *left_out = left;
    return 0;
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
        rc = tx_conn_try_write(c, bufs, nbufs, rest, &nbufs, &len);
        if (rc < 0 || len == 0)
            free(owned);
        if (rc < 0)
            return rc;
        if (len == 0) {
            if (chunk != NULL) {
                chunk->status = 0;
                tx__server_defer_done(c->srv, chunk); /* on a later loop turn */
            }
            return 0;
        }
        bufs = rest;
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
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, tx__conn_on_write);
    if (rc < 0) {
        free(w);
        free(owned); /* taken either way (the plaintext, or its records) */
        return rc;
    }
    if (c->wq == 0)
        c->write_deadline = tx__conn_now(c) + c->srv->lim.cfg.write_timeout_ms;
    c->wq += len;
    tx__conn_arm(c);
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
int
tx__conn_collect(tx_conn_t *c)
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
            tx__conn_pop(c);
            continue;
        }
        /* streaming: the head goes first (in the first chunk's write), then
         * its chunks in order */
        if (r->chunks != NULL && (rc = tx_conn_write_chunks(c, r)) < 0)
            return rc;
        if (r->state != TX_REQ_ENDED)
            break;
        tx__conn_pop(c);
    }
    return tx_conn_flush_out(c);
}
