/*
 * tx_conn_tls.c - the TLS record layer of a server connection: ciphertext
 * from the socket goes into the SSL's memory BIO, the handshake runs (with
 * ALPN choosing HTTP/2 or HTTP/1.1), plaintext goes on to tx__conn_input,
 * and the records the SSL produces (handshake, alerts, tickets) are written
 * as they are, in order with the encrypted answers.
 * Invariant: after a failed handshake only its alert goes out, then the
 * connection closes; a failure is counted once, by reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

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
        if (tx__conn_flush(c) < 0 ||
            uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, tx__conn_on_write) < 0) {
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
    if (tx__conn_flush(c) < 0)
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
    tx__conn_pump(c);
}

/* Ciphertext from the socket: handshake, then plaintext to the protocol. */
void
tx__conn_tls_read(tx_conn_t *c, const uint8_t *data, size_t len)
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
            tx__conn_set_phase(c, TX_PH_HEADERS, s->lim.cfg.header_timeout_ms);
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
                tx__conn_set_reading(c, false);
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
