/*
 * omni_conn.c - one app port connection: accept, HELLO, OAP/1 frames in
 * (decoded, inflated, routed to control, a new stream or a stream's body)
 * and out (encoded and queued on the socket), the stream table with its
 * credit, and the timers (HELLO, idle, the close grace after a fatal
 * envelope). What a stream asks for is omni_rq.c's business.
 *
 * Bounds: unsent output per connection (cfg.max_output) and queued put
 * bytes (OMNI_MAX_INPUT) stop reading the connection until they drain below
 * half; body frames are only received within the credit granted, and a
 * stream's answer frames are only sent within the credit the client grants.
 * A connection that closes first detaches its requests (q->c = NULL); their
 * bus callbacks free them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define OMNI_CLOSE_GRACE_MS 1000u /* after a fatal envelope: close at the latest after this */
#define OMNI_READ_CHUNK 65536u    /* bytes reserved in the decoder per read */

typedef struct {
    uv_write_t w;
    omni_conn_t *c;
    size_t len;
    uint8_t data[];
} wbuf_t;

static void conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf);
static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* ---------------------------------------------------------------- output */

static void
write_done(uv_write_t *w, int status)
{
    wbuf_t *b = ron_container_of(w, wbuf_t, w);
    omni_conn_t *c = b->c;
    omni_t *g = c->g;

    (void)status;
    c->out_bytes -= b->len;
    g->stats.output_bytes -= b->len;
    free(b);
    if (c->closing)
        return;
    if (c->fatal && c->out_bytes == 0) {
        omni__conn_close(c);
        return;
    }
    if (c->out_bytes <= g->cfg.max_output / 2) {
        omni__conn_set_reading(c);
        /* gets waiting for the output to drain */
        for (omni_rq_t *q = c->rqs, *n; q != NULL; q = n) {
            n = q->next;
            if (q->state == OMNI_RQ_GET_DATA)
                omni__rq_step(q);
        }
    }
}

/* Encode f (header + payload) and queue it. Returns 0 or an encode error. */
static int
conn_write(omni_conn_t *c, const oap_frame_t *f)
{
    size_t n = OAP_HDR_LEN + f->payload_len;
    wbuf_t *b;
    uv_buf_t ub;
    int rc;

    if (c->closing)
        return RON_ECLOSED;
    b = ron_xmalloc(sizeof *b + n);
    rc = oap_header_encode(f, c->max_frame, b->data);
    if (rc < 0) {
        free(b);
        return rc;
    }
    if (f->payload_len > 0)
        memcpy(b->data + OAP_HDR_LEN, f->payload, f->payload_len);
    b->c = c;
    b->len = n;
    ub = uv_buf_init((char *)b->data, (unsigned)n);
    rc = uv_write(&b->w, (uv_stream_t *)&c->tcp, &ub, 1, write_done);
    if (rc < 0) {
        free(b);
        return rc;
    }
    c->out_bytes += n;
    c->g->stats.output_bytes += n;
    c->g->stats.bytes_out += n;
    omni__conn_set_reading(c);
    return 0;
}

/* An error envelope for status into out (PROTO_MIN_ERROR_BUF or more). */
size_t
omni__envelope(char *out, size_t cap, uint16_t status, uint64_t corr_id, const char *message,
               const char *reason, uint32_t retry_after_ms)
{
    proto_error_t e;
    ssize_t n;

    proto_error_init(&e, status, corr_id, message);
    if (reason != NULL)
        snprintf(e.reason, sizeof e.reason, "%s", reason);
    if (retry_after_ms > 0) {
        e.has_retry_after = true;
        e.retry_after_ms = retry_after_ms;
    }
    n = proto_error_write(&e, out, cap);
    return n > 0 ? (size_t)n : 0;
}

/* An error frame outside the stream table (no stream, or the connection is dying). */
static void
conn_send_error(omni_conn_t *c, uint16_t app, uint64_t corr_id, uint16_t status,
                const char *message, const char *reason, uint32_t retry_after_ms)
{
    char body[PROTO_MIN_ERROR_BUF + 256];
    oap_frame_t f = {
        .flags = OAP_F_RESP | OAP_F_END, .code = status, .app_proto_id = app, .corr_id = corr_id};

    f.payload_len =
        omni__envelope(body, sizeof body, status, corr_id, message, reason, retry_after_ms);
    f.payload = (const uint8_t *)body;
    (void)conn_write(c, &f);
}

static void
timer_close(uv_timer_t *t)
{
    omni_conn_t *c = t->data;
    omni__conn_close(c);
}

/* Send an envelope and close once it is written (at the latest after a grace). */
static void
conn_fatal(omni_conn_t *c, int rc, uint64_t corr_id)
{
    uint16_t status;
    const char *slug, *reason;

    if (c->closing || c->fatal)
        return;
    oap_error_status(rc, &status, &slug, &reason);
    omni__count_reject(c->g, "proto", &c->g->stats.rej_proto);
    conn_send_error(c, OAP_APP_CONTROL, corr_id, status, ron_strerror(rc), reason, 0);
    c->fatal = true;
    omni__conn_set_reading(c);
    uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
    if (c->out_bytes == 0)
        omni__conn_close(c);
}

/* ---------------------------------------------------------------- stream output */

/* Send a frame of q's answer through the stream table. RON_EAGAIN: no credit. */
int
omni__rq_send(omni_rq_t *q, uint16_t flags, uint16_t code, const void *payload, size_t len)
{
    omni_conn_t *c = q->c;
    oap_frame_t f = {.flags = (uint16_t)(OAP_F_RESP | flags),
                     .code = code,
                     .app_proto_id = q->r.app_proto_id,
                     .corr_id = q->corr_id,
                     .payload = payload,
                     .payload_len = len};
    int rc;

    if (c == NULL)
        return RON_ECLOSED;
    if (OAP_HDR_LEN + len > c->max_frame)
        return RON_ETOOBIG; /* checked before the stream table counts the frame */
    rc = oap_streams_send(&c->st, &f);
    if (rc < 0)
        return rc;
    if (flags & OAP_F_END)
        q->resp_ended = true;
    return conn_write(c, &f);
}

/* Grant credit for n frames of q's request direction that we finished with. */
void
omni__rq_consume(omni_rq_t *q, uint32_t n)
{
    uint8_t buf[OAP_HDR_LEN + 64];
    oap_frame_t f;
    uint32_t grant;
    ssize_t len;

    if (q->c == NULL || n == 0)
        return;
    grant = oap_streams_consume(&q->c->st, q->corr_id, false, n);
    if (grant == 0)
        return;
    len = oap_credit_encode(q->corr_id, false, grant, buf, sizeof buf);
    if (len < 0 || oap_frame_parse(buf, (size_t)len, OAP_MAX_FRAME, &f) < 0)
        return;
    (void)conn_write(q->c, &f);
}

/* ---------------------------------------------------------------- input */

static omni_rq_t *
conn_find_rq(omni_conn_t *c, uint64_t corr_id)
{
    for (omni_rq_t *q = c->rqs; q != NULL; q = q->next)
        if (q->corr_id == corr_id)
            return q;
    return NULL;
}

static void
conn_hello(omni_conn_t *c, const oap_frame_t *f)
{
    omni_t *g = c->g;
    proto_hello_reply_t offer;
    uint8_t out[1024];
    size_t len = 0;
    uint32_t mf = 0;
    oap_frame_t rf;
    int rc;

    oap_hello_reply_init(&offer, OAP_MAX_FRAME, "tcp");
    rc = oap_hello_answer(f, &offer, out, sizeof out, &len, &mf);
    if (len == 0 || oap_frame_parse(out, len, OAP_MAX_FRAME, &rf) < 0) {
        omni__conn_close(c);
        return;
    }
    (void)conn_write(c, &rf);
    if (rc < 0) {
        omni__count_reject(g, "hello", &g->stats.rej_hello);
        c->fatal = true;
        uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
        omni__conn_set_reading(c);
        return;
    }
    c->hello = true;
    c->max_frame = mf;
    oap_decoder_set_max_frame(&c->dec, mf);
    uv_timer_stop(&c->timer);
    omni__conn_idle_check(c);
}

/* A control frame that is not credit: PING, or something we do not serve. */
static void
conn_control(omni_conn_t *c, const oap_frame_t *f, const uint8_t *payload, size_t len)
{
    omni_request_t r;
    proto_err_t err = {{0}, {0}};

    if ((f->flags & (OAP_F_REQ | OAP_F_RESP | OAP_F_START | OAP_F_END)) == 0)
        return; /* a standalone event: nothing to answer */
    if ((f->flags & (OAP_F_REQ | OAP_F_START)) == (OAP_F_REQ | OAP_F_START) &&
        omni_request_parse(OAP_APP_CONTROL, payload, len, c->g->service, &r, &err) == 0) {
        oap_frame_t rf = {.flags = OAP_F_RESP | OAP_F_END,
                          .code = 200,
                          .app_proto_id = OAP_APP_CONTROL,
                          .corr_id = f->corr_id,
                          .payload = (const uint8_t *)"{}",
                          .payload_len = 2};
        omni_request_close(&r);
        omni__count_request(c->g, OAP_APP_CONTROL, "ping", 200);
        (void)conn_write(c, &rf);
        return;
    }
    omni__count_request(c->g, OAP_APP_CONTROL, "invalid", 400);
    conn_send_error(c, OAP_APP_CONTROL, f->corr_id, 400,
                    err.text[0] != '\0' ? err.text : "unknown control frame",
                    err.field[0] != '\0' ? err.field : "op", 0);
}

static void
conn_frame(omni_conn_t *c, const oap_frame_t *f)
{
    omni_t *g = c->g;
    const uint8_t *payload = f->payload;
    size_t len = f->payload_len;
    uint8_t *inflated = NULL;
    omni_rq_t *q;
    int rc;

    if (!c->hello) {
        conn_hello(c, f);
        return;
    }
    rc = oap_streams_recv(&c->st, f);
    if (rc == OAP_STREAM_CONTROL) {
        q = conn_find_rq(c, f->corr_id);
        if (q != NULL)
            omni__rq_step(q);
        return;
    }
    if (rc == RON_EBUSY) {
        omni__count_reject(g, "streams", &g->stats.rej_streams);
        omni__count_request(g, f->app_proto_id, "invalid", 429);
        conn_send_error(c, f->app_proto_id, f->corr_id, 429, "too many open streams",
                        "max_inflight", OMNI_RETRY_AFTER_MS);
        return;
    }
    if (rc < 0) {
        conn_fatal(c, rc, f->corr_id);
        return;
    }
    if (f->flags & OAP_F_COMP) {
        rc = oap_inflate(f, c->max_frame, &inflated, &len);
        if (rc < 0) {
            conn_fatal(c, rc, f->corr_id);
            return;
        }
        payload = inflated;
    }
    if (f->app_proto_id == OAP_APP_CONTROL) {
        conn_control(c, f, payload, len);
    } else if (f->flags & OAP_F_START) {
        omni__rq_start(c, f, payload, len);
    } else if ((q = conn_find_rq(c, f->corr_id)) != NULL) {
        omni__rq_body(q, f, payload, len);
    }
    free(inflated);
}

/* ---------------------------------------------------------------- connection */

void
omni__conn_set_reading(omni_conn_t *c)
{
    omni_t *g = c->g;
    bool want = !c->closing && !c->fatal && c->out_bytes < g->cfg.max_output &&
                c->in_bytes < OMNI_MAX_INPUT;

    if (c->closing)
        return;
    /* resume only below half of the bounds, so reads do not flap */
    if (want && !c->reading &&
        (c->out_bytes > g->cfg.max_output / 2 || c->in_bytes > OMNI_MAX_INPUT / 2))
        want = false;
    if (want == c->reading)
        return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read) == 0)
            c->reading = true;
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
        if (!c->fatal)
            g->stats.read_paused++;
    }
}

static void
conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    omni_conn_t *c = h->data;
    size_t avail = 0;
    uint8_t *p;

    (void)size;
    p = oap_decoder_reserve(&c->dec, OMNI_READ_CHUNK, &avail);
    *buf = uv_buf_init((char *)p, p != NULL ? (unsigned)avail : 0);
}

static void
conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    omni_conn_t *c = s->data;
    oap_frame_t f;
    int rc;

    (void)buf;
    if (n == 0)
        return;
    if (n < 0) {
        omni__conn_close(c);
        return;
    }
    oap_decoder_commit(&c->dec, (size_t)n);
    c->g->stats.bytes_in += (uint64_t)n;
    while (!c->closing && !c->fatal) {
        rc = oap_decoder_next(&c->dec, &f);
        if (rc == RON_EAGAIN)
            break;
        if (rc < 0) {
            if (!c->hello) {
                /* not even a header a HELLO could be: proto_mismatch */
                omni__count_reject(c->g, "hello", &c->g->stats.rej_hello);
                conn_send_error(c, OAP_APP_CONTROL, 0, 426, "expected HELLO first", NULL, 0);
                c->fatal = true;
                uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
                omni__conn_set_reading(c);
            } else {
                conn_fatal(c, rc, 0);
            }
            break;
        }
        conn_frame(c, &f);
    }
}

static void
conn_handle_closed(uv_handle_t *h)
{
    omni_conn_t *c = h->data;
    omni_t *g = c->g;

    if (--c->open_handles > 0)
        return;
    oap_decoder_close(&c->dec);
    oap_streams_close(&c->st);
    free(c);
    omni__unref(g);
}

void
omni__conn_close(omni_conn_t *c)
{
    omni_t *g = c->g;

    if (c->closing)
        return;
    c->closing = true;
    /* detach requests: bus callbacks in flight free them */
    while (c->rqs != NULL) {
        omni_rq_t *q = c->rqs;
        c->rqs = q->next;
        omni__rq_drop_pieces(q);
        q->c = NULL;
        q->next = q->prev = NULL;
        if (!q->inflight)
            omni__rq_put_abort(q);
        omni__rq_maybe_free(q);
    }
    c->n_rqs = 0;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (g->conns == c)
        g->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->counted) {
        g->stats.conns--;
        met_gauge_set(g->m_conns, (double)g->stats.conns);
    }
    g->stats.input_bytes -= c->in_bytes;
    c->in_bytes = 0;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void
timer_idle(uv_timer_t *t)
{
    omni_conn_t *c = t->data;
    omni__count_reject(c->g, "idle", &c->g->stats.rej_idle);
    omni__conn_close(c);
}

static void
timer_hello(uv_timer_t *t)
{
    omni_conn_t *c = t->data;
    omni__count_reject(c->g, "hello_timeout", &c->g->stats.rej_hello_timeout);
    conn_send_error(c, OAP_APP_CONTROL, 0, 408, "no HELLO in time", "hello", 0);
    c->fatal = true;
    omni__conn_set_reading(c);
    uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
}

/* With no request open, arm the idle timer. */
void
omni__conn_idle_check(omni_conn_t *c)
{
    if (!c->closing && !c->fatal && c->hello && c->n_rqs == 0)
        uv_timer_start(&c->timer, timer_idle, c->g->cfg.idle_ms, 0);
}

void
omni__conn_accept(uv_stream_t *server, int status)
{
    omni_t *g = server->data;
    omni_conn_t *c;

    if (status < 0 || g->closing)
        return;
    c = ron_xcalloc(1, sizeof *c);
    c->g = g;
    c->max_frame = OAP_MAX_FRAME;
    uv_tcp_init(g->loop, &c->tcp);
    uv_timer_init(g->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    g->refs++;
    oap_decoder_init(&c->dec, OAP_MAX_FRAME);
    oap_streams_init(&c->st, OAP_MAX_INFLIGHT, OAP_STREAM_WINDOW);
    c->next = g->conns;
    if (g->conns != NULL)
        g->conns->prev = c;
    g->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        omni__conn_close(c);
        return;
    }
    if (g->stats.conns >= g->cfg.max_conns) {
        omni__count_reject(g, "conns", &g->stats.rej_conns);
        conn_send_error(c, OAP_APP_CONTROL, 0, 503, "too many connections", "connections",
                        OMNI_RETRY_AFTER_MS);
        c->fatal = true;
        uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
        return;
    }
    (void)uv_tcp_nodelay(&c->tcp, 1);
    {
        struct sockaddr_storage ss;
        int len = (int)sizeof ss;
        c->has_peer = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0;
        c->loopback = c->has_peer && omni__addr_is_loopback(&ss);
        if (c->has_peer)
            c->peer = ss;
    }
    c->counted = true;
    g->stats.conns++;
    g->stats.accepted++;
    met_gauge_set(g->m_conns, (double)g->stats.conns);
    uv_timer_start(&c->timer, timer_hello, g->cfg.hello_timeout_ms, 0);
    omni__conn_set_reading(c);
}

bool
omni__addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss == NULL)
        return false;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}
