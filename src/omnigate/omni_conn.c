/*
 * omni_conn.c - the app port's server: accept, per-connection OAP/1
 * decoding, HELLO, the stream table with credit, and the requests of each
 * stream forwarded over ron-bus (app-port.md).
 *
 * Capabilities (app-port.md §1b): a request is checked by the process guard
 * when its START arrives, before anything is forwarded (a refusal changes
 * nothing); the START's cap section and tenant then travel with every bus
 * request of the stream, so the services check them again. What the guard
 * leaves pending is enforced here: a put's max-bytes as the body arrives,
 * its prefix once the address is known.
 *
 * A stream's request (omni_rq_t) is a small state machine (rq_state_t):
 * a one-shot forward (RQ_BUS), a put (begin -> writes as body frames
 * arrive -> commit), or a get (stat -> data frames while the client grants
 * credit). At most one bus request per stream is in flight, except a put's
 * writes (up to OMNI_PUT_PIPELINE, answered in order) and a get's chunks
 * (up to OMNI_GET_PIPELINE). The request
 * lives until both directions of its stream ended and its bus request
 * returned; when the connection goes first, the request is detached
 * (rq->c == NULL), an open put is aborted at the storage service, and the
 * request is freed when its bus callback runs. omni_t itself is freed once
 * its handles are closed and no bus request is in flight.
 *
 * Bounds: unsent output per connection (cfg.max_output) and queued put
 * bytes (OMNI_MAX_INPUT) stop reading the connection until they drain;
 * gets do not fetch while the output is over its bound or the stream has no
 * credit; body frames are only received within the credit granted, and
 * credit for them is granted only after the storage service wrote them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omni_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_util.h"

#define OMNI_CLOSE_GRACE_MS 1000u /* after a fatal envelope: close at the latest after this */
#define OMNI_READ_CHUNK 65536u    /* bytes reserved in the decoder per read */

typedef struct omni_conn omni_conn_t;
typedef struct omni_rq omni_rq_t;

typedef enum {
    RQ_BUS,        /* one forwarded request in flight; its answer is ours */
    RQ_PUT_BEGIN,  /* put_begin in flight */
    RQ_PUT_OPEN,   /* put open: body frames are written as they arrive */
    RQ_PUT_COMMIT, /* put_commit in flight */
    RQ_GET_STAT,   /* stat in flight */
    RQ_GET_DATA,   /* data frames flow while there is credit */
    RQ_DONE,       /* answered; body frames still arriving are discarded */
} rq_state_t;

/* One bus get of a get stream; answers may come back out of order. */
typedef struct {
    omni_rq_t *q;
    bool used;  /* requested and not yet sent on */
    bool ready; /* answered: data holds len verified bytes */
    uint64_t off;
    size_t len;
    uint8_t *data;
} chunk_t;

typedef struct piece {
    struct piece *next;
    size_t len;  /* bytes of data */
    size_t off;  /* bytes already written to the store */
    size_t sent; /* bytes sent in put_writes (off <= sent <= len) */
    uint8_t buf[]; /* PIECE_HEAD bytes of room, then the len bytes of data */
} piece_t;

/*
 * Room before a piece's data for a put_write's u32 prefix and JSON, so the
 * bus request is sent from the piece itself instead of a copy of the chunk.
 */
#define PIECE_HEAD 132u
#define PIECE_DATA(p) ((p)->buf + PIECE_HEAD)

struct omni_rq {
    omni_rq_t *next, *prev; /* in the connection's list */
    omni_conn_t *c;         /* NULL once the connection is gone */
    omni_t *g;
    uint64_t corr_id;
    uint8_t tenant[16];
    uint8_t *cap; /* the START frame's cap section (forwarded on every bus request), or NULL */
    size_t cap_len;
    omni_request_t r;
    rq_state_t state;
    uint32_t inflight; /* bus requests of ours pending (gets: up to OMNI_GET_PIPELINE) */
    bool req_ended;  /* the client's direction ended */
    bool resp_ended; /* our answer ended */
    /* put */
    bool put_open; /* put_id is open at the storage service */
    uint64_t put_id;
    uint64_t written; /* bytes the storage service answered as written */
    uint64_t sent;    /* bytes sent in put_writes (the next one's offset) */
    uint64_t received; /* body bytes received */
    uint64_t max_bytes; /* the capability's max-bytes (UINT64_MAX: none), enforced as they come */
    bool begin_inflight; /* put_begin sent, not answered */
    auth_grant_t *grant; /* put with a prefix caveat: its grant, checked once the address is known */
    piece_t *head, *tail;
    /* get */
    uint16_t status; /* 200 or 206 */
    uint64_t pos, end; /* next byte to send, end of the range */
    bool probed;       /* get of a local miss: a storage get (which fetches) stood in for stat */
    uint64_t next_off; /* next byte to ask the storage service for; pos <= next_off <= end */
    chunk_t chunks[OMNI_GET_PIPELINE];
    uint8_t *pend_err; /* an error frame's payload waiting for credit */
    size_t pend_len;
    uint16_t pend_code;
    char actor[AUTH_ID_MAX + 1]; /* cap_revoke: the caller's token identifier, for the audit */
};

struct omni_conn {
    omni_t *g;
    omni_conn_t *next, *prev;
    uv_tcp_t tcp;
    uv_timer_t timer; /* HELLO timeout, then idle, then the close grace */
    int open_handles;
    oap_decoder_t dec;
    oap_streams_t st;
    bool counted;  /* counts in g->stats.conns (not a refused connection) */
    bool loopback; /* the peer is on this host: kernel ops allowed without a guard */
    bool has_peer; /* peer holds the client's address */
    struct sockaddr_storage peer;
    bool hello;
    bool closing;
    bool reading;
    bool fatal; /* a fatal envelope is queued: close once it is written */
    uint32_t max_frame;
    size_t out_bytes; /* written to libuv, not yet completed */
    size_t in_bytes;  /* put bytes queued in pieces */
    size_t get_bytes; /* get bytes asked of the storage service, not yet written */
    omni_rq_t *rqs;
    uint32_t n_rqs;
};

typedef struct {
    uv_write_t w;
    omni_conn_t *c;
    size_t len;
    uint8_t data[];
} wbuf_t;

/* One caller's revocations by id in its current minute (cap_revoke). */
typedef struct {
    char id[AUTH_ID_MAX + 1]; /* the revoking token's identifier; "" unused */
    uint64_t window_ms;       /* start of its minute */
    uint32_t n;
} revoker_t;

struct omni {
    uv_loop_t *loop;
    omni_config_t cfg;
    char service[32];
    uv_tcp_t listener;
    bool listening;
    bool closing;
    int refs; /* listener handle + connections + bus requests in flight */
    void (*done)(void *arg);
    void *done_arg;
    rbus_peer_t *storage, *index, *kernel, *registry, *passport;
    guard_t *guard; /* NULL: no enforcement */
    omni_conn_t *conns;
    omni_stats_t stats;
    omni_idem_t *idem;
    met_registry_t *reg;
    met_gauge_t *m_conns, *m_unsent, *m_queued;
    met_counter_t *m_in, *m_out;
    uint64_t seen_in, seen_out;
    met_family_t *m_requests, *m_rejects;
    revoker_t revokers[OMNI_REVOKE_CALLERS]; /* cap_revoke by id: per-caller counts */
};

static void conn_close(omni_conn_t *c);
static void conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf);
static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void rq_step(omni_rq_t *q);
static void rq_maybe_free(omni_rq_t *q);

/* ---------------------------------------------------------------- lifetime */

static void
omni_unref(omni_t *g)
{
    if (--g->refs > 0 || !g->closing)
        return;
    omni__idem_free(g->idem);
    met_registry_free(g->reg);
    if (g->done != NULL)
        g->done(g->done_arg);
    free(g);
}

static const char *
app_name(uint16_t app)
{
    switch (app) {
    case OAP_APP_CONTROL:
        return "control";
    case OAP_APP_STORAGE:
        return "storage";
    case OAP_APP_INDEX:
        return "naming";
    case OAP_APP_KERNEL:
        return "kernel";
    case OAP_APP_REGISTRY:
        return "registry";
    case OAP_APP_AUTH:
        return "passport";
    default:
        return "other";
    }
}

static void
count_request(omni_t *g, uint16_t app, const char *op, uint16_t status)
{
    char st[8];
    snprintf(st, sizeof st, "%u", (unsigned)status);
    met_counter_inc(met_family_counter(g->m_requests, (const char *const[]){app_name(app), op, st}));
    g->stats.requests++;
}

static void
count_reject(omni_t *g, const char *reason, uint64_t *ctr)
{
    (*ctr)++;
    met_counter_inc(met_family_counter(g->m_rejects, (const char *const[]){reason}));
}

/* ---------------------------------------------------------------- output */

static void
conn_set_reading(omni_conn_t *c);

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
        conn_close(c);
        return;
    }
    if (c->out_bytes <= g->cfg.max_output / 2) {
        conn_set_reading(c);
        /* gets waiting for the output to drain */
        for (omni_rq_t *q = c->rqs, *n; q != NULL; q = n) {
            n = q->next;
            if (q->state == RQ_GET_DATA)
                rq_step(q);
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
    conn_set_reading(c);
    return 0;
}

/* An error envelope for status into out (PROTO_MIN_ERROR_BUF or more). */
static size_t
envelope(char *out, size_t cap, uint16_t status, uint64_t corr_id, const char *message,
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
    oap_frame_t f = {.flags = OAP_F_RESP | OAP_F_END, .code = status, .app_proto_id = app,
                     .corr_id = corr_id};

    f.payload_len = envelope(body, sizeof body, status, corr_id, message, reason, retry_after_ms);
    f.payload = (const uint8_t *)body;
    (void)conn_write(c, &f);
}

static void
timer_close(uv_timer_t *t)
{
    omni_conn_t *c = t->data;
    conn_close(c);
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
    count_reject(c->g, "proto", &c->g->stats.rej_proto);
    conn_send_error(c, OAP_APP_CONTROL, corr_id, status, ron_strerror(rc), reason, 0);
    c->fatal = true;
    conn_set_reading(c);
    uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
    if (c->out_bytes == 0)
        conn_close(c);
}

/* ---------------------------------------------------------------- stream output */

/* Send a frame of q's answer through the stream table. RON_EAGAIN: no credit. */
static int
rq_send(omni_rq_t *q, uint16_t flags, uint16_t code, const void *payload, size_t len)
{
    omni_conn_t *c = q->c;
    oap_frame_t f = {.flags = (uint16_t)(OAP_F_RESP | flags), .code = code,
                     .app_proto_id = q->r.app_proto_id, .corr_id = q->corr_id,
                     .payload = payload, .payload_len = len};
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
static void
rq_consume(omni_rq_t *q, uint32_t n)
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

static void
rq_drop_pieces(omni_rq_t *q)
{
    uint32_t frames = 0;

    while (q->head != NULL) {
        piece_t *p = q->head;
        q->head = p->next;
        if (q->c != NULL) {
            q->c->in_bytes -= p->len - p->off;
            q->g->stats.input_bytes -= p->len - p->off;
        }
        frames++;
        free(p);
    }
    q->tail = NULL;
    rq_consume(q, frames);
    if (q->c != NULL)
        conn_set_reading(q->c);
}

/* Answer q (one RESP|END frame of status with JSON body) and count it. */
static void
rq_answer(omni_rq_t *q, uint16_t status, const char *json, size_t len)
{
    char body[PROTO_MIN_ERROR_BUF + 256];
    int rc = q->c != NULL ? rq_send(q, OAP_F_END, status, json, len) : 0;

    if (rc == RON_ETOOBIG) {
        /* a JSON answer cannot be split: say so in a frame that fits */
        status = 413;
        len = envelope(body, sizeof body, status, q->corr_id,
                       "the answer is larger than the negotiated max_frame", "max_frame", 0);
        json = body;
        rc = rq_send(q, OAP_F_END, status, json, len);
    }
    count_request(q->g, q->r.app_proto_id, omni_op_name(q->r.op), status);
    if (rc == RON_EAGAIN) {
        /* a get that ran out of credit: the answer waits for credit */
        free(q->pend_err);
        q->pend_err = ron_xmalloc(len + 1);
        memcpy(q->pend_err, json, len);
        q->pend_len = len;
        q->pend_code = status;
    }
    q->state = RQ_DONE;
    rq_drop_pieces(q);
    for (size_t i = 0; i < OMNI_GET_PIPELINE; i++) {
        chunk_t *k = &q->chunks[i];
        if (k->used && k->ready) { /* answered, never sent: gone with the stream */
            if (q->c != NULL)
                q->c->get_bytes -= k->len;
            free(k->data);
            k->data = NULL;
            k->used = k->ready = false;
        }
    }
}

static void
rq_error(omni_rq_t *q, uint16_t status, const char *message, const char *reason,
         uint32_t retry_after_ms)
{
    char body[PROTO_MIN_ERROR_BUF + 256];
    size_t n = envelope(body, sizeof body, status, q->corr_id, message, reason, retry_after_ms);
    rq_answer(q, status, body, n);
}

/* Map a ron-bus failure (no answer) to an error answer. */
static void
rq_bus_failed(omni_rq_t *q, int rc)
{
    if (rc == RON_ETIMEOUT)
        rq_error(q, 504, "the service did not answer in time", NULL, 0);
    else if (rc == RON_EBUSY)
        rq_error(q, 503, "the service is busy", "busy", OMNI_RETRY_AFTER_MS);
    else
        rq_error(q, 503, ron_strerror(rc), "service_unavailable", OMNI_RETRY_AFTER_MS);
}

/* Forward a service's error answer (its envelope, with our corr_id). */
static void
rq_forward_error(omni_rq_t *q, const oap_frame_t *resp)
{
    proto_error_t e;
    char body[PROTO_MAX_ERROR_JSON];
    ssize_t n;

    if (proto_error_decode((const char *)resp->payload, resp->payload_len, &e, NULL) < 0) {
        rq_error(q, resp->code, "the service failed", NULL, 0);
        return;
    }
    e.corr_id = q->corr_id;
    n = proto_error_write(&e, body, sizeof body);
    if (n <= 0) {
        rq_error(q, 500, "error envelope", NULL, 0);
        return;
    }
    rq_answer(q, resp->code, body, (size_t)n);
}

/* ---------------------------------------------------------------- capabilities */

static bool
tenant_is_set(const uint8_t t[16])
{
    for (size_t i = 0; i < 16; i++)
        if (t[i] != 0)
            return true;
    return false;
}

/* The guard's view of q, with size as the body size. Views into q. */
static void
rq_guard_req(const omni_rq_t *q, uint64_t size, guard_req_t *req)
{
    memset(req, 0, sizeof *req);
    req->op = (auth_op_t)q->r.auth_op;
    req->token = q->cap_len > 0 ? (const char *)q->cap : NULL;
    req->token_len = q->cap_len;
    req->tenant = tenant_is_set(q->tenant) ? q->tenant : NULL;
    req->addr = q->r.auth_addr[0] != '\0' ? q->r.auth_addr : NULL;
    req->name = q->r.auth_name[0] != '\0' ? q->r.auth_name : NULL;
    req->size = size;
    req->source = q->c != NULL && q->c->has_peer ? (const struct sockaddr *)&q->c->peer : NULL;
    req->target = req->addr != NULL   ? req->addr
                  : req->name != NULL ? req->name
                                      : omni_op_name(q->r.op);
}

/* Answer q with the guard's refusal: its status, slug as the reason, its sentence. */
static void
rq_refuse(omni_rq_t *q, const guard_result_t *res)
{
    rq_error(q, (uint16_t)res->status, res->reason, res->slug,
             res->status == 429 ? res->retry_after_s * 1000u : 0);
}

/*
 * Check q's capability (or its absence) with the guard. Allowed: returns
 * true with *res filled and q's pending constraints kept (max-bytes, a put's
 * prefix). Refused: answers q (nothing was forwarded) and returns false.
 */
static bool
rq_authorize(omni_rq_t *q, guard_result_t *res)
{
    guard_req_t req;

    rq_guard_req(q, q->r.auth_size, &req);
    if (guard_check(q->g->guard, &req, res) != 0) {
        rq_refuse(q, res);
        return false;
    }
    snprintf(q->actor, sizeof q->actor, "%s", res->actor); /* cap_revoke's audit */
    if (res->anonymous)
        return true;
    q->max_bytes = res->verdict.grant.max_bytes;
    if (q->r.op == OMNI_OP_PUT && (res->verdict.pending & AUTH_PENDING_ADDR)) {
        q->grant = ron_xmalloc(sizeof *q->grant);
        *q->grant = res->verdict.grant;
    }
    return true;
}

/* A put's body passed its capability's max-bytes with n more bytes: refuse it. */
static void
rq_over_max_bytes(omni_rq_t *q, size_t n)
{
    guard_result_t res;
    guard_req_t req;

    rq_guard_req(q, q->received + n, &req);
    (void)guard_reject(q->g->guard, &req, RON_ECAPDENY, &res);
    rq_error(q, (uint16_t)res.status,
             "the body is larger than the capability's max-bytes allows", res.slug, 0);
}

/* A put with a prefix caveat stored addr: true when the prefix allows it,
 * else q is answered 403 (the storage service, which saw the token, should
 * have refused the commit already). */
static bool
rq_prefix_allows(omni_rq_t *q, const char *addr)
{
    auth_request_t ar = {.op = AUTH_OP_PUT, .addr = addr, .size = q->received,
                         .now = ron_unix_time()};
    guard_result_t res;
    guard_req_t req;

    if (auth_grant_check(q->grant, &ar, NULL) != AUTH_DENY_PREFIX)
        return true;
    rq_guard_req(q, q->received, &req);
    req.addr = addr;
    req.target = addr;
    (void)guard_reject(q->g->guard, &req, RON_ECAPDENY, &res);
    rq_error(q, (uint16_t)res.status, "the object's address is outside the capability's prefix",
             res.slug, 0);
    return false;
}

/*
 * cap_revoke by id: at most OMNI_REVOKE_PER_MIN per caller (the revoking
 * token's identifier) per minute, so one holder of `mint` cannot fill the
 * authority's revocation table at wire speed. Callers are held in a bounded
 * table; a new one takes a free slot or the one whose minute began first.
 * Returns true when allowed (and counts it); else *retry_ms is the wait.
 */
static bool
revoke_allowed(omni_t *g, const char *actor, uint64_t now_ms, uint32_t *retry_ms)
{
    revoker_t *r = NULL, *spare = NULL, *oldest = NULL;

    for (size_t i = 0; i < OMNI_REVOKE_CALLERS && r == NULL; i++) {
        revoker_t *c = &g->revokers[i];
        if (c->id[0] == '\0')
            spare = spare != NULL ? spare : c;
        else if (strcmp(c->id, actor) == 0)
            r = c;
        else if (oldest == NULL || c->window_ms < oldest->window_ms)
            oldest = c;
    }
    if (r == NULL) {
        r = spare != NULL ? spare : oldest;
        snprintf(r->id, sizeof r->id, "%s", actor);
        r->window_ms = now_ms;
        r->n = 0;
    }
    if (now_ms - r->window_ms >= 60000u) {
        r->window_ms = now_ms;
        r->n = 0;
    }
    if (r->n >= OMNI_REVOKE_PER_MIN) {
        *retry_ms = (uint32_t)(r->window_ms + 60000u - now_ms);
        return false;
    }
    r->n++;
    return true;
}

/* cap_revoke by id past the caller's rate: 429 (counted and audited by the guard). */
static void
rq_revoke_flood(omni_rq_t *q, uint32_t retry_ms)
{
    guard_result_t res;
    guard_req_t req;

    if (q->g->guard != NULL) {
        rq_guard_req(q, AUTH_SIZE_UNKNOWN, &req);
        (void)guard_reject(q->g->guard, &req, RON_EFLOOD, &res);
    }
    rq_error(q, 429, "too many revocations by this capability; try again later", "rate_limited",
             retry_ms > 0 ? retry_ms : 1);
}

/* cap_mint: a token narrowed from the caller's verified grant (res). */
static void
rq_mint(omni_rq_t *q, const guard_result_t *res)
{
    const omni_mint_t *m = &q->r.mint;
    guard_mint_req_t mr = {.ops = m->ops, .ttl = m->ttl,
                           .tenant = m->has_tenant ? m->tenant : NULL,
                           .max_bytes = m->max_bytes,
                           .prefix = m->prefix[0] != '\0' ? m->prefix : NULL};
    char *tok = ron_xmalloc(AUTH_MAX_TOKEN + 1), id[AUTH_ID_MAX + 1];
    long n;

    if (res->anonymous) {
        rq_error(q, 401, "minting needs a capability allowing mint", "capability_required", 0);
        goto out;
    }
    n = guard_mint(q->g->guard, &res->verdict.grant, res->actor, &mr, tok, AUTH_MAX_TOKEN + 1, id);
    if (n < 0) {
        int st = guard_status_of((int)n);
        if (st == 403)
            rq_error(q, 403, "the token asked for is wider than the caller's capability",
                     "capability_wider", 0);
        else if (n == RON_EINVAL)
            rq_error(q, 400, "ops, ttl, tenant, max_bytes or prefix out of range", "mint", 0);
        else
            rq_error(q, 500, ron_strerror((int)n), NULL, 0);
        goto out;
    }
    {
        json_t *o = json_pack("{s:s, s:s%}", "id", id, "token", tok, (size_t)n);
        char *txt = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (txt == NULL)
            abort(); /* jansson fails only on OOM */
        rq_answer(q, 200, txt, strlen(txt));
        explicit_bzero(txt, strlen(txt)); /* a bearer secret */
        free(txt);
    }
out:
    explicit_bzero(tok, AUTH_MAX_TOKEN + 1);
    free(tok);
}

/* ---------------------------------------------------------------- bus requests */

static void rq_bus_reply(void *arg, int status, const oap_frame_t *resp);

static rbus_peer_t *
peer_for(omni_t *g, uint16_t app)
{
    switch (app) {
    case OAP_APP_STORAGE:
        return g->storage;
    case OAP_APP_INDEX:
        return g->index;
    case OAP_APP_REGISTRY:
        return g->registry;
    case OAP_APP_AUTH:
        return g->passport;
    default:
        return g->kernel;
    }
}

/* Send one bus request for q whose payload is built. Returns 0 (q->inflight set) or a ron-bus error. */
static int
rq_bus_payload(omni_rq_t *q, uint16_t app, const uint8_t *payload, size_t n, rbus_reply_cb cb,
               void *arg)
{
    omni_t *g = q->g;
    rbus_peer_t *p = peer_for(g, app);
    rbus_request_opts_t o = {.app_proto_id = app, .deadline_ms = OMNI_BUS_DEADLINE_MS};
    int rc;

    if (p == NULL)
        return RON_EUNAVAIL;
    memcpy(o.tenant_id, q->tenant, sizeof o.tenant_id);
    o.cap = q->cap; /* the client's token: the service checks it too */
    o.cap_len = q->cap_len;
    rc = rbus_request_ex(p, &o, payload, n, cb, arg); /* copies the payload */
    if (rc == 0) {
        q->inflight++;
        g->refs++;
    }
    return rc;
}

/*
 * Send one bus request for q: JSON (with the u32 prefix for storage and
 * index) then raw bytes. Returns 0 (q->inflight set) or a ron-bus error.
 */
static int
rq_bus_cb(omni_rq_t *q, uint16_t app, const char *json, size_t jlen, const uint8_t *raw,
          size_t rlen, rbus_reply_cb cb, void *arg)
{
    bool prefix = app != OAP_APP_KERNEL;
    size_t n = (prefix ? 4 : 0) + jlen + rlen;
    uint8_t *buf;
    int rc;

    buf = ron_xmalloc(n + 1);
    if (prefix) {
        buf[0] = (uint8_t)(jlen >> 24);
        buf[1] = (uint8_t)(jlen >> 16);
        buf[2] = (uint8_t)(jlen >> 8);
        buf[3] = (uint8_t)jlen;
    }
    memcpy(buf + (prefix ? 4 : 0), json, jlen);
    if (rlen > 0)
        memcpy(buf + (prefix ? 4 : 0) + jlen, raw, rlen);
    rc = rq_bus_payload(q, app, buf, n, cb, arg);
    free(buf);
    return rc;
}

/*
 * Send a put_write of p's bytes [p->sent, p->sent + wlen) at offset q->sent,
 * its prefix and JSON written just before the bytes (into the piece's room
 * or over bytes already sent, restored after the call).
 */
static int
rq_put_write(omni_rq_t *q, piece_t *p, size_t wlen)
{
    char js[PIECE_HEAD - 4];
    uint8_t save[PIECE_HEAD], *at = PIECE_DATA(p) + p->sent, *h;
    int n = snprintf(js, sizeof js, "{\"offset\":\"%llu\",\"op\":\"put_write\",\"put_id\":\"%llu\"}",
                     (unsigned long long)q->sent, (unsigned long long)q->put_id);
    size_t hl;
    int rc;

    if (n < 0 || (size_t)n >= sizeof js)
        return RON_EINVAL; /* cannot happen: two u64s fit */
    hl = 4 + (size_t)n;
    h = at - hl;
    memcpy(save, h, hl);
    h[0] = 0;
    h[1] = 0;
    h[2] = 0;
    h[3] = (uint8_t)n;
    memcpy(h + 4, js, (size_t)n);
    rc = rq_bus_payload(q, OAP_APP_STORAGE, h, hl + wlen, rq_bus_reply, q);
    memcpy(h, save, hl);
    return rc;
}

static int
rq_bus(omni_rq_t *q, uint16_t app, const char *json, size_t jlen, const uint8_t *raw,
       size_t rlen)
{
    return rq_bus_cb(q, app, json, jlen, raw, rlen, rq_bus_reply, q);
}

/* A fire-and-forget put_abort (the answer does not matter). */
static void
abort_reply(void *arg, int status, const oap_frame_t *resp)
{
    (void)status;
    (void)resp;
    omni_unref(arg);
}

static void
rq_put_abort(omni_rq_t *q)
{
    char js[64];
    uint8_t buf[4 + sizeof js];
    rbus_request_opts_t o = {.app_proto_id = OAP_APP_STORAGE, .deadline_ms = OMNI_BUS_DEADLINE_MS};
    int n;

    if (!q->put_open || q->g->storage == NULL || q->inflight > 0)
        return; /* with writes in flight: the last answer calls again */
    q->put_open = false;
    n = snprintf(js, sizeof js, "{\"op\":\"put_abort\",\"put_id\":\"%llu\"}",
                 (unsigned long long)q->put_id);
    buf[0] = buf[1] = buf[2] = 0;
    buf[3] = (uint8_t)n;
    memcpy(buf + 4, js, (size_t)n);
    memcpy(o.tenant_id, q->tenant, sizeof o.tenant_id);
    o.cap = q->cap;
    o.cap_len = q->cap_len;
    if (rbus_request_ex(q->g->storage, &o, buf, 4 + (size_t)n, abort_reply, q->g) == 0)
        q->g->refs++;
}

/* The JSON of a 200 answer from storage/index (after the u32 prefix). */
static int
answer_json(const oap_frame_t *resp, bool prefix, json_t **o_out, const uint8_t **raw,
            size_t *raw_len)
{
    size_t jl = resp->payload_len, off = 0;

    if (prefix) {
        if (resp->payload_len < 4)
            return RON_EJSON;
        jl = (size_t)resp->payload[0] << 24 | (size_t)resp->payload[1] << 16 |
             (size_t)resp->payload[2] << 8 | resp->payload[3];
        if (jl > resp->payload_len - 4)
            return RON_EJSON;
        off = 4;
    }
    *o_out = json_loadb((const char *)resp->payload + off, jl, 0, NULL);
    if (raw != NULL) {
        *raw = resp->payload + off + jl;
        *raw_len = resp->payload_len - off - jl;
    }
    return *o_out != NULL ? 0 : RON_EJSON;
}

static bool
json_u64_field(json_t *o, const char *key, uint64_t *v)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL && ron_parse_u64(s, strlen(s), v) == 0;
}

/*
 * Mark n more bytes of q's queued body as written and credit every frame
 * now written whole (empty frames at the head included).
 */
static void
rq_put_ack(omni_rq_t *q, uint64_t n)
{
    uint32_t frames = 0;

    while (q->head != NULL) {
        piece_t *p = q->head;
        size_t k = (size_t)RON_MIN(n, (uint64_t)(p->len - p->off));
        p->off += k;
        n -= k;
        q->written += k;
        q->c->in_bytes -= k;
        q->g->stats.input_bytes -= k;
        if (p->off < p->len)
            break;
        q->head = p->next;
        if (q->head == NULL)
            q->tail = NULL;
        free(p);
        frames++;
    }
    rq_consume(q, frames);
}

/* A put_write answered with the put's total: those bytes are in the store. */
static void
on_put_written(omni_rq_t *q, json_t *o)
{
    uint64_t total = 0;

    if (!json_u64_field(o, "written", &total) || total < q->written || total > q->sent) {
        rq_error(q, 502, "put_write answer with a bad written count", NULL, 0);
        return;
    }
    rq_put_ack(q, total - q->written);
    conn_set_reading(q->c);
}

/* put_commit answered: 201 for a new object, 200 when it was already stored. */
static void
on_put_committed(omni_rq_t *q, json_t *o)
{
    json_t *a = json_object_get(o, "address"), *sz = json_object_get(o, "size"), *ans;
    char *txt;

    q->put_open = false;
    if (!json_is_string(a) || !json_is_string(sz)) {
        rq_error(q, 502, "put_commit answer without address", NULL, 0);
        return;
    }
    if (q->grant != NULL && !rq_prefix_allows(q, json_string_value(a)))
        return; /* answered 403 */
    ans = json_pack("{s:O, s:O}", "address", a, "size", sz);
    txt = json_dumps(ans, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(ans);
    if (txt == NULL)
        abort(); /* jansson fails only on OOM */
    rq_answer(q, json_is_false(json_object_get(o, "created")) ? 200 : 201, txt, strlen(txt));
    free(txt);
}

/* stat answered for a get: check the range, send the metadata frame. */
static void
on_get_stat(omni_rq_t *q, json_t *o)
{
    uint64_t size = 0;
    const char *ct = json_string_value(json_object_get(o, "content_type"));
    json_t *meta;
    char a[24], b[24], s[24], *txt;

    if (!json_u64_field(o, "size", &size)) {
        rq_error(q, 502, "stat answer without size", NULL, 0);
        return;
    }
    q->pos = q->r.has_offset ? q->r.offset : 0;
    if (q->pos >= size && !(q->pos == 0 && size == 0)) {
        rq_error(q, 416, "offset at or past the end of the object", "offset", 0);
        return;
    }
    q->end = size;
    if (q->r.has_length && q->r.length < size - q->pos)
        q->end = q->pos + q->r.length;
    q->status = q->r.has_offset || q->r.has_length ? 206 : 200;
    q->next_off = q->pos;
    snprintf(a, sizeof a, "%llu", (unsigned long long)(q->end - q->pos));
    snprintf(b, sizeof b, "%llu", (unsigned long long)q->pos);
    snprintf(s, sizeof s, "%llu", (unsigned long long)size);
    meta = json_pack("{s:s, s:s, s:s}", "length", a, "offset", b, "size", s);
    if (ct != NULL && ct[0] != '\0')
        json_object_set_new(meta, "content_type", json_string(ct));
    txt = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(meta);
    if (txt == NULL)
        abort();
    (void)rq_send(q, 0, q->status, txt, strlen(txt)); /* the first frame: credit is fresh */
    free(txt);
    q->state = RQ_GET_DATA;
}

/* A revocation the kernel made: audited as cap_revoked (actor: the caller's token id). */
static void
revoke_audit(omni_rq_t *q)
{
    json_t *o = json_loadb(q->r.fwd, q->r.fwd_len, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *ep = json_string_value(json_object_get(o, "epoch"));
    char target[AUTH_ID_MAX + 16];

    if (id != NULL)
        snprintf(target, sizeof target, "%s", id);
    else
        snprintf(target, sizeof target, "epoch:%s", ep != NULL ? ep : "");
    if (q->g->guard != NULL)
        (void)guard_audit(q->g->guard, AUD_CAP_REVOKED, q->actor[0] != '\0' ? q->actor : "anon",
                          "cap_revoke", target, AUD_OK, NULL);
    json_decref(o);
}

/* The answer (status 0) to q's bus request, by q's state. */
static void
on_bus_answer(omni_rq_t *q, const oap_frame_t *resp)
{
    omni_t *g = q->g;
    bool prefix = q->r.app_proto_id != OAP_APP_KERNEL;
    json_t *o = NULL;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;

    if (resp->code == 404 && q->state == RQ_GET_STAT && !q->probed) {
        /* not stored here: storage's get fetches it from peers and tells the size */
        char js[200], addr[68];
        int n, rc;
        addr[0] = 'b';
        addr[1] = '3';
        addr[2] = ':';
        for (size_t i = 0; i < 32; i++)
            snprintf(addr + 3 + 2 * i, 3, "%02x", q->r.addr[i]);
        n = snprintf(js, sizeof js,
                     "{\"address\":\"%s\",\"length\":\"1\",\"offset\":\"%llu\",\"op\":\"get\"}",
                     addr, (unsigned long long)(q->r.has_offset ? q->r.offset : 0));
        q->probed = true;
        rc = rq_bus(q, OAP_APP_STORAGE, js, (size_t)n, NULL, 0);
        if (rc < 0)
            rq_bus_failed(q, rc);
        return;
    }
    if (resp->code >= 400) {
        if (q->r.idem[0] != '\0' && resp->code < 500)
            omni__idem_put(g->idem, q->tenant, q->r.app_proto_id, q->r.op, q->r.idem,
                           ron_now_ms(), resp->code, (const char *)resp->payload,
                           resp->payload_len);
        rq_forward_error(q, resp);
        return;
    }
    if (answer_json(resp, prefix, &o, &raw, &raw_len) < 0) {
        rq_error(q, 502, "malformed answer from the service", NULL, 0);
        return;
    }
    switch (q->state) {
    case RQ_BUS: {
        /* the service's JSON as it sent it (between the prefix and raw bytes) */
        const char *js = (const char *)resp->payload + (prefix ? 4 : 0);
        size_t jl = (size_t)((const char *)raw - js);
        if (q->r.op == OMNI_OP_CAP_REVOKE)
            revoke_audit(q);
        if (q->r.idem[0] != '\0')
            omni__idem_put(g->idem, q->tenant, q->r.app_proto_id, q->r.op, q->r.idem,
                           ron_now_ms(), resp->code, js, jl);
        rq_answer(q, resp->code, js, jl);
        break;
    }
    case RQ_PUT_BEGIN:
        if (!json_u64_field(o, "put_id", &q->put_id)) {
            rq_error(q, 502, "put_begin answer without put_id", NULL, 0);
            break;
        }
        q->put_open = true;
        q->state = RQ_PUT_OPEN;
        rq_consume(q, 1); /* the START frame */
        break;
    case RQ_PUT_OPEN:
        on_put_written(q, o);
        break;
    case RQ_PUT_COMMIT:
        on_put_committed(q, o);
        break;
    case RQ_GET_STAT:
        on_get_stat(q, o);
        break;
    case RQ_GET_DATA: /* chunks have their own callback */
    case RQ_DONE:
        break;
    }
    json_decref(o);
}

static void
rq_bus_reply(void *arg, int status, const oap_frame_t *resp)
{
    omni_rq_t *q = arg;
    omni_t *g = q->g;
    bool begin = q->begin_inflight;

    q->inflight--;
    q->begin_inflight = false;
    if (begin && status == 0 && resp->code == 200 && (q->c == NULL || q->state == RQ_DONE)) {
        /* put_begin answered after the stream was answered or the connection
         * went (a put over its capability's max-bytes): abort that put */
        json_t *o = NULL;
        if (answer_json(resp, true, &o, NULL, NULL) == 0 &&
            json_u64_field(o, "put_id", &q->put_id))
            q->put_open = true;
        json_decref(o);
    }
    if (q->c == NULL) {
        /* the connection went away: abort a put the storage service holds */
        if (status == 0 && q->state == RQ_PUT_COMMIT)
            q->put_open = false;
        rq_put_abort(q);
        rq_maybe_free(q);
        omni_unref(g);
        return;
    }
    if (q->state == RQ_DONE) {
        /* answered meanwhile (a body frame on an op without body, a put
         * over its capability's max-bytes) */
    } else if (status < 0) {
        if (q->state == RQ_PUT_COMMIT)
            q->put_open = false;
        rq_bus_failed(q, status);
    } else {
        if (resp->code >= 400 && (q->state == RQ_PUT_COMMIT || q->state == RQ_PUT_BEGIN))
            q->put_open = false;
        on_bus_answer(q, resp);
    }
    if (q->state == RQ_DONE)
        rq_put_abort(q);
    rq_step(q);
    omni_unref(g);
}

/* ---------------------------------------------------------------- the state machine */

static void
rq_start_forward(omni_rq_t *q)
{
    omni_t *g = q->g;
    const char *json;
    size_t len;
    uint16_t st;
    int rc;

    if (q->r.idem[0] != '\0') {
        st = omni__idem_get(g->idem, q->tenant, q->r.app_proto_id, q->r.op, q->r.idem,
                            ron_now_ms(), &json, &len);
        if (st >= 400) {
            oap_frame_t f = {.code = st, .payload = (const uint8_t *)json, .payload_len = len};
            rq_forward_error(q, &f);
            return;
        }
        if (st != 0) {
            rq_answer(q, st, json, len);
            return;
        }
    }
    rc = rq_bus(q, q->r.app_proto_id, q->r.fwd, q->r.fwd_len, NULL, 0);
    if (rc < 0)
        rq_bus_failed(q, rc);
}

/* A chunk is finished (sent or dropped): its bytes leave the connection's get budget. */
static void
chunk_release(omni_rq_t *q, chunk_t *k)
{
    if (q->c != NULL)
        q->c->get_bytes -= k->len;
    free(k->data);
    k->data = NULL;
    k->used = k->ready = false;
}

/* Send the chunks that are next in order; the last one carries END. */
static void
rq_get_flush(omni_rq_t *q)
{
    for (bool more = true; more && q->state == RQ_GET_DATA;) {
        more = false;
        for (size_t i = 0; i < OMNI_GET_PIPELINE; i++) {
            chunk_t *k = &q->chunks[i];
            if (!k->used || !k->ready || k->off != q->pos)
                continue;
            q->pos += k->len;
            (void)rq_send(q, q->pos == q->end ? OAP_F_END : 0, q->status, k->data, k->len);
            chunk_release(q, k);
            more = true;
        }
        if (q->pos == q->end) {
            count_request(q->g, OAP_APP_STORAGE, "get", q->status);
            q->state = RQ_DONE;
        }
    }
}

/* A chunk came back. In order: sent at once; else kept until its turn. */
static void
rq_chunk_reply(void *arg, int status, const oap_frame_t *resp)
{
    chunk_t *k = arg;
    omni_rq_t *q = k->q;
    omni_t *g = q->g;
    json_t *o = NULL;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    uint64_t n = 0;

    q->inflight--;
    if (q->c == NULL || q->state != RQ_GET_DATA) {
        chunk_release(q, k); /* the stream ended meanwhile (an error, or the connection went) */
    } else if (status < 0) {
        chunk_release(q, k);
        rq_bus_failed(q, status);
    } else if (resp->code >= 400) {
        chunk_release(q, k);
        rq_forward_error(q, resp); /* a piece failed verification: 500 corrupt */
    } else if (answer_json(resp, true, &o, &raw, &raw_len) < 0 ||
               !json_u64_field(o, "length", &n) || n != raw_len || raw_len != k->len) {
        chunk_release(q, k);
        rq_error(q, 500, "storage answered a wrong length", "corrupt", 0);
    } else {
        k->data = ron_xmalloc(raw_len);
        memcpy(k->data, raw, raw_len);
        k->ready = true;
        rq_get_flush(q);
    }
    json_decref(o);
    rq_step(q);
    omni_unref(g);
}

/*
 * Ask for the next chunks of a get: up to OMNI_GET_PIPELINE in flight, never
 * more than the stream's send credit (each becomes one frame), and none while
 * the connection's output is over its bound.
 */
static void
rq_get_next(omni_rq_t *q)
{
    omni_conn_t *c = q->c;
    const oap_stream_t *s;
    char js[200], addr[68];
    uint64_t chunk = RON_MIN((uint64_t)OMNI_BUS_CHUNK, (uint64_t)(c->max_frame - OAP_HDR_LEN));
    uint32_t outstanding = 0;
    int n, rc;

    if (q->pend_err != NULL) {
        if (rq_send(q, OAP_F_END, q->pend_code, q->pend_err, q->pend_len) == 0) {
            free(q->pend_err);
            q->pend_err = NULL;
        }
        return;
    }
    if (q->state != RQ_GET_DATA)
        return;
    if (q->pos == q->end) { /* empty range: the meta frame, then an empty END */
        if (rq_send(q, OAP_F_END, q->status, NULL, 0) == 0) {
            count_request(q->g, OAP_APP_STORAGE, "get", q->status);
            q->state = RQ_DONE;
        }
        return;
    }
    addr[0] = 'b';
    addr[1] = '3';
    addr[2] = ':';
    for (size_t i = 0; i < 32; i++)
        snprintf(addr + 3 + 2 * i, 3, "%02x", q->r.addr[i]);
    for (size_t i = 0; i < OMNI_GET_PIPELINE; i++)
        outstanding += q->chunks[i].used;
    for (size_t i = 0; i < OMNI_GET_PIPELINE && q->next_off < q->end; i++) {
        chunk_t *k = &q->chunks[i];
        s = oap_streams_find(&c->st, q->corr_id, false);
        if (s == NULL || outstanding >= s->send_credit ||
            c->out_bytes + c->get_bytes >= q->g->cfg.max_output)
            return; /* a credit frame or the output draining calls again */
        if (k->used)
            continue;
        k->q = q;
        k->used = true;
        k->ready = false;
        k->off = q->next_off;
        k->len = (size_t)RON_MIN(chunk, q->end - q->next_off);
        n = snprintf(js, sizeof js,
                     "{\"address\":\"%s\",\"length\":\"%zu\",\"offset\":\"%llu\",\"op\":\"get\"}",
                     addr, k->len, (unsigned long long)k->off);
        rc = rq_bus_cb(q, OAP_APP_STORAGE, js, (size_t)n, NULL, 0, rq_chunk_reply, k);
        if (rc < 0) {
            k->used = false;
            rq_bus_failed(q, rc);
            return;
        }
        q->next_off += k->len;
        c->get_bytes += k->len;
        outstanding++;
    }
}

static void
rq_put_next(omni_rq_t *q)
{
    char js[128];
    int n, rc;

    if (q->state != RQ_PUT_OPEN)
        return;
    rq_put_ack(q, 0); /* empty frames at the head */
    /* keep up to OMNI_PUT_PIPELINE writes in flight; the service runs them in order */
    while (q->inflight < OMNI_PUT_PIPELINE) {
        piece_t *p = q->head;
        size_t wlen;
        while (p != NULL && p->sent == p->len)
            p = p->next;
        if (p == NULL)
            break;
        wlen = RON_MIN(p->len - p->sent, (size_t)OMNI_BUS_CHUNK);
        rc = rq_put_write(q, p, wlen);
        if (rc < 0) {
            rq_bus_failed(q, rc);
            rq_put_abort(q);
            return;
        }
        p->sent += wlen;
        q->sent += wlen;
    }
    /* the commit waits for the writes in flight and for the client's END */
    if (q->inflight > 0 || q->head != NULL || !q->req_ended)
        return;
    q->state = RQ_PUT_COMMIT;
    n = snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%llu\"}",
                 (unsigned long long)q->put_id);
    rc = rq_bus(q, OAP_APP_STORAGE, js, (size_t)n, NULL, 0);
    if (rc < 0) {
        rq_bus_failed(q, rc);
        rq_put_abort(q);
    }
}

/* Advance q as far as it can go now, then free it if it is finished. */
static void
rq_step(omni_rq_t *q)
{
    if (q->c != NULL) {
        if (q->state == RQ_PUT_OPEN)
            rq_put_next(q);
        else if (q->state == RQ_GET_DATA || q->pend_err != NULL)
            rq_get_next(q);
    }
    rq_maybe_free(q);
}

static void
conn_idle_check(omni_conn_t *c);

static void
rq_maybe_free(omni_rq_t *q)
{
    omni_conn_t *c = q->c;

    if (q->inflight)
        return;
    if (c != NULL) {
        if (!(q->req_ended && q->resp_ended && q->pend_err == NULL))
            return;
        if (q->prev != NULL)
            q->prev->next = q->next;
        else
            c->rqs = q->next;
        if (q->next != NULL)
            q->next->prev = q->prev;
        c->n_rqs--;
    }
    rq_drop_pieces(q);
    omni_request_close(&q->r);
    free(q->cap);
    free(q->grant);
    free(q->pend_err);
    for (size_t i = 0; i < OMNI_GET_PIPELINE; i++)
        free(q->chunks[i].data);
    free(q);
    if (c != NULL)
        conn_idle_check(c);
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
conn_start_rq(omni_conn_t *c, const oap_frame_t *f, const uint8_t *payload, size_t len)
{
    omni_t *g = c->g;
    omni_rq_t *q = ron_xcalloc(1, sizeof *q);
    proto_err_t err = {{0}, {0}};
    guard_result_t res;
    uint32_t retry_ms = 0;
    int rc;

    memset(&res, 0, sizeof res);
    q->c = c;
    q->g = g;
    q->corr_id = f->corr_id;
    q->max_bytes = UINT64_MAX;
    memcpy(q->tenant, f->tenant_id, sizeof q->tenant);
    if (f->cap_len > 0) {
        q->cap = ron_xmalloc(f->cap_len);
        memcpy(q->cap, f->cap, f->cap_len);
        q->cap_len = f->cap_len;
    }
    q->req_ended = (f->flags & OAP_F_END) != 0;
    q->r.app_proto_id = f->app_proto_id;
    q->state = RQ_DONE;
    q->next = c->rqs;
    if (c->rqs != NULL)
        c->rqs->prev = q;
    c->rqs = q;
    c->n_rqs++;
    uv_timer_stop(&c->timer);
    rc = omni_request_parse(f->app_proto_id, payload, len, g->service, &q->r, &err);
    if (rc < 0) {
        q->r.op = OMNI_OP__COUNT; /* "invalid" in metrics */
        rq_error(q, 400, err.text, err.field[0] != '\0' ? err.field : "payload", 0);
    } else if (q->r.op == OMNI_OP_PING) {
        rq_answer(q, 200, "{}", 2);
    } else if (g->guard != NULL && q->r.auth_op >= 0 && !rq_authorize(q, &res)) {
        /* refused by the guard: answered, nothing forwarded */
    } else if (g->guard == NULL && q->r.op == OMNI_OP_CAP_MINT) {
        rq_error(q, 403, "this app port has no capability authority to mint with",
                 "no_authority", 0);
    } else if (g->guard == NULL && q->r.app_proto_id == OAP_APP_KERNEL && !c->loopback) {
        /* without a guard, as the admin port's /admin/ routes: loopback only */
        rq_error(q, 403, "kernel operations answer loopback peers only", "loopback", 0);
    } else if (g->guard == NULL && q->r.op >= OMNI_OP_REG_PROPOSE &&
               q->r.op <= OMNI_OP_REG_COMMIT && !c->loopback) {
        /* governance writes without a guard: loopback only (the signatures
         * decide what commits; this keeps strangers from filling the
         * proposal table) */
        rq_error(q, 403, "registry writes answer loopback peers only", "loopback", 0);
    } else if (q->r.op == OMNI_OP_CAP_REVOKE && !q->r.revoke_epoch &&
               !revoke_allowed(g, res.actor[0] != '\0' ? res.actor : "anon", ron_now_ms(),
                               &retry_ms)) {
        rq_revoke_flood(q, retry_ms);
    } else if (q->r.op == OMNI_OP_CAP_MINT) {
        rq_mint(q, &res);
    } else if (q->r.op == OMNI_OP_PUT) {
        q->state = RQ_PUT_BEGIN;
        q->begin_inflight = true;
        rc = rq_bus(q, OAP_APP_STORAGE, q->r.fwd, q->r.fwd_len, NULL, 0);
        if (rc < 0) {
            q->begin_inflight = false;
            rq_bus_failed(q, rc);
        }
    } else if (q->r.op == OMNI_OP_GET) {
        char js[128], addr[68];
        int n;
        addr[0] = 'b';
        addr[1] = '3';
        addr[2] = ':';
        for (size_t i = 0; i < 32; i++)
            snprintf(addr + 3 + 2 * i, 3, "%02x", q->r.addr[i]);
        n = snprintf(js, sizeof js, "{\"address\":\"%s\",\"op\":\"stat\"}", addr);
        q->state = RQ_GET_STAT;
        rc = rq_bus(q, OAP_APP_STORAGE, js, (size_t)n, NULL, 0);
        if (rc < 0)
            rq_bus_failed(q, rc);
    } else {
        q->state = RQ_BUS;
        rq_start_forward(q);
    }
    rq_step(q);
}

/* A body frame (REQ, not START) of stream q. */
static void
conn_body(omni_conn_t *c, omni_rq_t *q, const oap_frame_t *f, const uint8_t *payload, size_t len)
{
    bool end = (f->flags & OAP_F_END) != 0;
    bool put = q->state == RQ_PUT_BEGIN || q->state == RQ_PUT_OPEN;

    if (end)
        q->req_ended = true;
    if (put && len > q->max_bytes - RON_MIN(q->received, q->max_bytes)) {
        /* over the capability's max-bytes: refused as the bytes come */
        rq_over_max_bytes(q, len);
        rq_consume(q, 1); /* discarded */
        rq_put_abort(q);
        rq_step(q);
        return;
    }
    if (put) {
        piece_t *p = ron_xmalloc(sizeof *p + PIECE_HEAD + len);
        q->received += len;
        p->next = NULL;
        p->len = len;
        p->off = 0;
        p->sent = 0;
        if (len > 0)
            memcpy(PIECE_DATA(p), payload, len);
        if (q->tail != NULL)
            q->tail->next = p;
        else
            q->head = p;
        q->tail = p;
        c->in_bytes += len;
        c->g->stats.input_bytes += len;
        conn_set_reading(c);
    } else {
        if (len > 0 && q->state != RQ_DONE && q->r.op != OMNI_OP_PUT)
            rq_error(q, 400, "this operation takes no body", "body", 0);
        rq_consume(q, 1); /* discarded */
    }
    rq_step(q);
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
        conn_close(c);
        return;
    }
    (void)conn_write(c, &rf);
    if (rc < 0) {
        count_reject(g, "hello", &g->stats.rej_hello);
        c->fatal = true;
        uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
        conn_set_reading(c);
        return;
    }
    c->hello = true;
    c->max_frame = mf;
    oap_decoder_set_max_frame(&c->dec, mf);
    uv_timer_stop(&c->timer);
    conn_idle_check(c);
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
        oap_frame_t rf = {.flags = OAP_F_RESP | OAP_F_END, .code = 200,
                          .app_proto_id = OAP_APP_CONTROL, .corr_id = f->corr_id,
                          .payload = (const uint8_t *)"{}", .payload_len = 2};
        omni_request_close(&r);
        count_request(c->g, OAP_APP_CONTROL, "ping", 200);
        (void)conn_write(c, &rf);
        return;
    }
    count_request(c->g, OAP_APP_CONTROL, "invalid", 400);
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
            rq_step(q);
        return;
    }
    if (rc == RON_EBUSY) {
        count_reject(g, "streams", &g->stats.rej_streams);
        count_request(g, f->app_proto_id, "invalid", 429);
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
        conn_start_rq(c, f, payload, len);
    } else if ((q = conn_find_rq(c, f->corr_id)) != NULL) {
        conn_body(c, q, f, payload, len);
    }
    free(inflated);
}

/* ---------------------------------------------------------------- connection */

static void
conn_set_reading(omni_conn_t *c)
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
        conn_close(c);
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
                count_reject(c->g, "hello", &c->g->stats.rej_hello);
                conn_send_error(c, OAP_APP_CONTROL, 0, 426, "expected HELLO first", NULL, 0);
                c->fatal = true;
                uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
                conn_set_reading(c);
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
    omni_unref(g);
}

static void
conn_close(omni_conn_t *c)
{
    omni_t *g = c->g;

    if (c->closing)
        return;
    c->closing = true;
    /* detach requests: bus callbacks in flight free them */
    while (c->rqs != NULL) {
        omni_rq_t *q = c->rqs;
        c->rqs = q->next;
        rq_drop_pieces(q);
        q->c = NULL;
        q->next = q->prev = NULL;
        if (!q->inflight)
            rq_put_abort(q);
        rq_maybe_free(q);
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
    count_reject(c->g, "idle", &c->g->stats.rej_idle);
    conn_close(c);
}

static void
timer_hello(uv_timer_t *t)
{
    omni_conn_t *c = t->data;
    count_reject(c->g, "hello_timeout", &c->g->stats.rej_hello_timeout);
    conn_send_error(c, OAP_APP_CONTROL, 0, 408, "no HELLO in time", "hello", 0);
    c->fatal = true;
    conn_set_reading(c);
    uv_timer_start(&c->timer, timer_close, OMNI_CLOSE_GRACE_MS, 0);
}

/* With no request open, arm the idle timer. */
static void
conn_idle_check(omni_conn_t *c)
{
    if (!c->closing && !c->fatal && c->hello && c->n_rqs == 0)
        uv_timer_start(&c->timer, timer_idle, c->g->cfg.idle_ms, 0);
}

static void
on_accept(uv_stream_t *server, int status)
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
        conn_close(c);
        return;
    }
    if (g->stats.conns >= g->cfg.max_conns) {
        count_reject(g, "conns", &g->stats.rej_conns);
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
    conn_set_reading(c);
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

/* ---------------------------------------------------------------- the server */

omni_t *
omni_new(uv_loop_t *loop, const omni_config_t *cfg)
{
    omni_t *g = ron_xcalloc(1, sizeof *g);
    static const char *const req_labels[] = {"app", "op", "status"};
    static const char *const rej_labels[] = {"reason"};
    const met_desc_t req_desc = {MET_COUNTER, "app_requests_total",
                                 "App port requests answered, by app, op and status.",
                                 req_labels, 3, NULL, 0, 0};
    const met_desc_t rej_desc = {MET_COUNTER, "app_rejects_total",
                                 "App port connections or streams refused, by reason.",
                                 rej_labels, 1, NULL, 0, 0};

    g->loop = loop;
    if (cfg != NULL)
        g->cfg = *cfg;
    if (g->cfg.max_conns == 0)
        g->cfg.max_conns = OMNI_MAX_CONNS;
    if (g->cfg.hello_timeout_ms == 0)
        g->cfg.hello_timeout_ms = OMNI_HELLO_TIMEOUT_MS;
    if (g->cfg.idle_ms == 0)
        g->cfg.idle_ms = OMNI_IDLE_MS;
    if (g->cfg.max_output == 0)
        g->cfg.max_output = OMNI_MAX_OUTPUT;
    snprintf(g->service, sizeof g->service, "%s",
             cfg != NULL && cfg->service != NULL ? cfg->service : "app");
    g->cfg.service = g->service;
    g->idem = omni__idem_new();
    g->reg = met_registry_new();
    met_gauge_register(g->reg, "app_connections", "Open app port connections.", &g->m_conns);
    met_gauge_register(g->reg, "app_unsent_bytes",
                       "Answer bytes written but not yet taken by the kernel, all connections.",
                       &g->m_unsent);
    met_gauge_register(g->reg, "app_queued_put_bytes",
                       "Put body bytes received but not yet written to the store.", &g->m_queued);
    met_counter_register(g->reg, "app_bytes_in_total", "Frame bytes read on the app port.",
                         &g->m_in);
    met_counter_register(g->reg, "app_bytes_out_total", "Frame bytes written on the app port.",
                         &g->m_out);
    met_family_register(g->reg, &req_desc, &g->m_requests);
    met_family_register(g->reg, &rej_desc, &g->m_rejects);
    g->refs = 1; /* dropped by omni_close */
    return g;
}

int
omni_listen_fd(omni_t *g, int listen_fd)
{
    int rc;

    uv_tcp_init(g->loop, &g->listener);
    g->listener.data = g;
    g->listening = true;
    g->refs++;
    if ((rc = uv_tcp_open(&g->listener, listen_fd)) < 0) {
        close(listen_fd);
        return rc;
    }
    return uv_listen((uv_stream_t *)&g->listener, 1024, on_accept);
}

void
omni_set_peers(omni_t *g, rbus_peer_t *storage, rbus_peer_t *index, rbus_peer_t *kernel)
{
    g->storage = storage;
    g->index = index;
    g->kernel = kernel;
}

void
omni_set_guard(omni_t *g, guard_t *guard)
{
    g->guard = guard;
}

void
omni_set_registry(omni_t *g, rbus_peer_t *registry)
{
    g->registry = registry;
}

void
omni_set_passport_peer(omni_t *g, rbus_peer_t *passport)
{
    g->passport = passport;
}

const omni_stats_t *
omni_stats(omni_t *g)
{
    return &g->stats;
}

size_t
omni_metrics(omni_t *g, char *buf, size_t cap)
{
    char *text = NULL;
    size_t len = 0;

    met_counter_add(g->m_in, g->stats.bytes_in - g->seen_in);
    g->seen_in = g->stats.bytes_in;
    met_counter_add(g->m_out, g->stats.bytes_out - g->seen_out);
    g->seen_out = g->stats.bytes_out;
    met_gauge_set(g->m_unsent, (double)g->stats.output_bytes);
    met_gauge_set(g->m_queued, (double)g->stats.input_bytes);
    if (met_registry_render(g->reg, &text, &len) < 0 || len > cap) {
        free(text);
        return 0;
    }
    memcpy(buf, text, len);
    free(text);
    return len;
}

static void
listener_closed(uv_handle_t *h)
{
    omni_unref(h->data);
}

void
omni_close(omni_t *g, void (*done)(void *arg), void *arg)
{
    if (g == NULL)
        return;
    g->closing = true;
    g->done = done;
    g->done_arg = arg;
    while (g->conns != NULL)
        conn_close(g->conns);
    if (g->listening)
        uv_close((uv_handle_t *)&g->listener, listener_closed);
    omni_unref(g); /* omni_new's reference */
}
