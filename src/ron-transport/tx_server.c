/*
 * tx_server.c - the HTTP server object: its listeners, its connections, the
 * refusal of connections past max_conns (a 503 envelope with Retry-After,
 * then a short lingering close, so the excess never hangs), the cached Date
 * header, the queue of callbacks due because a connection or HTTP/2 stream
 * went away (done(RON_ECLOSED) of queued chunks, then the closing drain of
 * open streamed answers, then the RON_ECLOSED abort of streamed request
 * bodies), and asynchronous shutdown.
 * Invariants: s->open counts every listener, connection and refusal whose
 * handles are not closed yet, plus the notify timer; the close callback runs
 * when it reaches zero after tx_server_close. The notify timer runs the
 * queue on a later loop turn, so none of those callbacks ever runs inside
 * the application's own tx_respond_* call; its close callback runs what is
 * left, so nothing due is lost at shutdown. At most TX_MAX_REFUSING
 * refusals are answered at once; beyond that an excess connection is closed
 * at once (still counted).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "tx_internal.h"

struct tx_refused {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write;
    uv_shutdown_t shutdown;
    tx_server_t *srv;
    tx_refused_t *prev, *next;
    int open_handles;
    bool closing;
    bool answering;    /* counted in srv->refusing */
    tx_buf_t out;
};

const char *
tx__server_date(tx_server_t *s)
{
    time_t now = time(NULL);
    struct tm tm;

    if ((int64_t)now != s->date_sec) {
        gmtime_r(&now, &tm);
        (void)strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = (int64_t)now;
    }
    return s->date;
}

static void
tx_server_finish(tx_server_t *s)
{
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;

    tx__limits_free(&s->lim);
    free(s);
    if (cb != NULL)
        cb(arg);
}

void
tx__server_unref(tx_server_t *s)
{
    if (--s->open == 0 && s->closing)
        tx_server_finish(s);
}

/* ---- callbacks of connections and streams that went away ---- */

/* Chunks first (the app may release their buffers), then the drains. */
static void
tx_server_run_gone(tx_server_t *s)
{
    tx_chunk_t *k;
    tx_request_t *r;

    while ((k = s->gone_chunks) != NULL) {
        s->gone_chunks = k->next;
        if (s->gone_chunks == NULL)
            s->gone_chunks_tail = NULL;
        if (k->done != NULL)
            k->done(k->status, k->done_arg);
        free(k);
    }
    while ((r = s->gone_reqs) != NULL) {
        s->gone_reqs = r->gone_next;
        r->gone_next = NULL;
        r->gone_pending = false;
        r->gone_srv = NULL;
        r->drain(r, r->drain_arg); /* may end r (and free it): r is not touched after */
    }
    while ((r = s->body_aborts) != NULL) {
        s->body_aborts = r->babort_next;
        r->babort_next = NULL;
        r->babort_pending = false;
        r->babort_srv = NULL;
        r->bheld = false; /* the piece stays valid until the answer */
        (void)tx__body_deliver(r); /* may answer r (and free it) */
    }
}

static void
tx_server_on_notify(uv_timer_t *t)
{
    tx_server_run_gone(t->data);
}

static void
tx_server_notify_closed(uv_handle_t *h)
{
    tx_server_t *s = h->data;

    tx_server_run_gone(s); /* what the last connections left */
    tx__server_unref(s);
}

static void
tx_server_notify_soon(tx_server_t *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->notify))
        uv_timer_start(&s->notify, tx_server_on_notify, 0, 0);
}

void
tx__server_defer_done(tx_server_t *s, tx_chunk_t *k)
{
    k->next = NULL;
    if (s->gone_chunks_tail != NULL)
        s->gone_chunks_tail->next = k;
    else
        s->gone_chunks = k;
    s->gone_chunks_tail = k;
    tx_server_notify_soon(s);
}

void
tx__server_gone(tx_server_t *s, tx_request_t *r)
{
    tx_chunk_t *k;

    while ((k = r->chunks) != NULL) {
        r->chunks = k->next;
        k->status = RON_ECLOSED;
        tx__server_defer_done(s, k);
    }
    r->chunks_tail = NULL;
    r->chunk_bytes = 0;
    r->want_drain = false;
    if (r->state != TX_REQ_STREAMING || r->drain == NULL || r->gone_pending)
        return;
    /* append: drains run in the order the answers went away */
    tx_request_t **pp = &s->gone_reqs;
    while (*pp != NULL)
        pp = &(*pp)->gone_next;
    r->gone_next = NULL;
    *pp = r;
    r->gone_pending = true;
    r->gone_srv = s;
    tx_server_notify_soon(s);
}

void
tx__server_body_abort(tx_server_t *s, tx_request_t *r)
{
    if (!r->bstream || r->bdone || r->babort_pending)
        return;
    r->babort = RON_ECLOSED;
    tx_request_t **pp = &s->body_aborts;
    while (*pp != NULL)
        pp = &(*pp)->babort_next;
    r->babort_next = NULL;
    *pp = r;
    r->babort_pending = true;
    r->babort_srv = s;
    tx_server_notify_soon(s);
}

void
tx__server_gone_cancel(tx_request_t *r)
{
    if (!r->gone_pending)
        return;
    for (tx_request_t **pp = &r->gone_srv->gone_reqs; *pp != NULL; pp = &(*pp)->gone_next) {
        if (*pp == r) {
            *pp = r->gone_next;
            break;
        }
    }
    r->gone_next = NULL;
    r->gone_pending = false;
    r->gone_srv = NULL;
}

/* ---- refusals ---- */

static void
tx_refused_on_close(uv_handle_t *h)
{
    tx_refused_t *f = h->data;
    tx_server_t *s = f->srv;

    if (--f->open_handles > 0)
        return;
    if (f->answering)
        s->refusing--;
    tx__buf_free(&f->out);
    free(f);
    tx__server_unref(s);
}

void
tx__refused_close(tx_refused_t *f)
{
    tx_server_t *s = f->srv;

    if (f->closing)
        return;
    f->closing = true;
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        s->refused = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    uv_close((uv_handle_t *)&f->timer, tx_refused_on_close);
    uv_close((uv_handle_t *)&f->tcp, tx_refused_on_close);
}

static void
tx_refused_on_timer(uv_timer_t *t)
{
    tx__refused_close(t->data);
}

static void
tx_refused_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    tx_refused_t *f = h->data;

    (void)hint;
    *buf = uv_buf_init((char *)f->srv->rdbuf, sizeof f->srv->rdbuf);
}

static void
tx_refused_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0)
        tx__refused_close(st->data); /* EOF: the client has our answer */
}

static void
tx_refused_on_shutdown(uv_shutdown_t *req, int status)
{
    tx_refused_t *f = req->data;

    if (status < 0)
        tx__refused_close(f);
}

static void
tx_refused_on_write(uv_write_t *req, int status)
{
    tx_refused_t *f = req->data;

    if (status < 0 || f->closing) {
        tx__refused_close(f);
        return;
    }
    f->shutdown.data = f;
    if (uv_shutdown(&f->shutdown, (uv_stream_t *)&f->tcp, tx_refused_on_shutdown) < 0)
        tx__refused_close(f);
}

void
tx__refuse(tx_server_t *s, uv_stream_t *listener)
{
    tx_refused_t *f = ron_xcalloc(1, sizeof *f);

    f->srv = s;
    uv_tcp_init(s->loop, &f->tcp);
    uv_timer_init(s->loop, &f->timer);
    f->tcp.data = f->timer.data = f->write.data = f;
    f->open_handles = 2;
    s->open++;
    f->next = s->refused;
    if (s->refused != NULL)
        s->refused->prev = f;
    s->refused = f;
    if (uv_accept(listener, (uv_stream_t *)&f->tcp) < 0 || s->refusing >= TX_MAX_REFUSING) {
        tx__refused_close(f); /* too many already being answered: just close */
        return;
    }
    f->answering = true;
    s->refusing++;
    tx__http1_error(&f->out, 1, 503, tx__reject_message(TX_REJECT_MAX_CONNS), "max_conns",
                    s->lim.cfg.retry_after_s, false, s->corr_seq++, tx__server_date(s), false);
    uv_buf_t b = uv_buf_init((char *)f->out.p, (unsigned)f->out.len);
    if (uv_write(&f->write, (uv_stream_t *)&f->tcp, &b, 1, tx_refused_on_write) < 0 ||
        uv_read_start((uv_stream_t *)&f->tcp, tx_refused_alloc, tx_refused_on_read) < 0) {
        tx__refused_close(f);
        return;
    }
    /* read and discard what the client sent, so closing does not reset the answer */
    uv_timer_start(&f->timer, tx_refused_on_timer, TX_REFUSE_LINGER_MS, 0);
}

/* ---- the server ---- */

static void
tx_server_on_connection(uv_stream_t *st, int status)
{
    tx_listener_t *l = st->data;
    tx_server_t *s = l->srv;

    if (status < 0) {
        ron_warn("transport: accept failed: %s", uv_strerror(status));
        return;
    }
    if (tx__limits_conn_admit(&s->lim) < 0)
        tx__refuse(s, st);
    else
        tx__conn_accept(s, st, l->tls);
}

tx_server_t *
tx_server_new(uv_loop_t *loop, const tx_config_t *cfg, tx_handler_fn handler, void *arg)
{
    tx_server_t *s = ron_xcalloc(1, sizeof *s);

    s->loop = loop;
    tx__limits_init(&s->lim, cfg);
    s->handler = handler;
    s->arg = arg;
    s->date_sec = -1;
    /* corr_ids need only be unique per stream opener; a random start keeps
     * restarts from reusing the same values in logs */
    s->corr_seq = ron_rand_below(1ull << 32) + 1;
    uv_timer_init(loop, &s->notify);
    s->notify.data = s;
    s->open++; /* the notify timer, until tx_server_close closes it */
    return s;
}

void
tx_server_set_head_hook(tx_server_t *s, tx_head_fn hook, void *arg)
{
    s->head_hook = hook;
    s->head_arg = arg;
}

int
tx_server_attach(tx_server_t *s, tx_listener_t *l)
{
    int rc;

    l->srv = s;
    l->next = s->listeners;
    s->listeners = l;
    s->open++;
    rc = uv_listen((uv_stream_t *)&l->tcp, 1024, tx_server_on_connection);
    if (rc < 0) {
        s->listeners = l->next;
        s->open--;
        l->srv = NULL;
        tx_listener_close(l, NULL, NULL); /* taken either way */
    }
    return rc;
}

int
tx_server_attach_tls(tx_server_t *s, tx_listener_t *l, SSL_CTX *ctx)
{
    if (ctx == NULL || SSL_CTX_up_ref(ctx) != 1) {
        tx_listener_close(l, NULL, NULL);
        return RON_EINVAL;
    }
    l->tls = ctx; /* released with the listener */
    return tx_server_attach(s, l);
}

static void
tx_server_listener_closed(void *arg)
{
    tx__server_unref(arg);
}

void
tx_server_close(tx_server_t *s, void (*cb)(void *arg), void *arg)
{
    tx_listener_t *l, *ln;

    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    s->open++; /* hold s until every close below is issued */
    for (l = s->listeners; l != NULL; l = ln) {
        ln = l->next;
        tx_listener_close(l, tx_server_listener_closed, s);
    }
    s->listeners = NULL;
    while (s->conns != NULL)
        tx__conn_close(s->conns);
    while (s->refused != NULL)
        tx__refused_close(s->refused);
    /* its close callback runs what the connections closed above left due */
    uv_close((uv_handle_t *)&s->notify, tx_server_notify_closed);
    tx__server_unref(s);
}

const tx_stats_t *
tx_server_stats(const tx_server_t *s)
{
    return &s->lim.stats;
}

const tx_config_t *
tx_server_config(const tx_server_t *s)
{
    return &s->lim.cfg;
}
