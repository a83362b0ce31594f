/*
 * rbus.c - ron-bus core, the same for both transports: endpoints, peers,
 * the HELLO handshake with its uid and secret checks, requests with
 * deadlines, handlers, events, bounds and counters.
 *
 * Invariants: every pending request completes exactly once (reply, deadline,
 * connection loss or shutdown) and its slot is cleared before its callback
 * runs; user callbacks are never called from inside the public call that
 * started the operation, except the RON_ESHUTDOWN completions documented for
 * rbus_free/rbus_peer_close; peers and the bus are freed only in close
 * callbacks, so after any user callback the code re-checks ->state/closing.
 */
#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "rbus_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_proto.h"
#include "ron_util.h"

static void peer_detach(rbus_peer_t *p, int rc, bool flush);
static void peer_timer_arm(rbus_peer_t *p);

/* ---------------------------------------------------------------- sending */

static bool
conn_has_room(const rbus_conn_t *c, size_t frame_len)
{
    return c->q_frames < RBUS_MAX_SEND_FRAMES && c->q_bytes + frame_len <= RBUS_MAX_SEND_BYTES;
}

/* Encode and queue one frame on p's connection; body is the cap section (its
 * first cap_len bytes) followed by the payload. Returns 0 or RON_ETOOBIG. */
static int
peer_send_tenant(rbus_peer_t *p, uint16_t flags, uint16_t code, uint16_t app, uint64_t corr,
                 const uint8_t *tenant, uint16_t cap_len, const void *body, size_t len)
{
    oap_frame_t f = {.flags = flags, .code = code, .app_proto_id = app, .corr_id = corr,
                     .cap_len = cap_len, .payload = body, .payload_len = len - cap_len};
    const void *payload = body;
    uint8_t hdr[OAP_HDR_LEN];
    int rc;

    if (tenant != NULL)
        memcpy(f.tenant_id, tenant, sizeof f.tenant_id);

    rc = oap_header_encode(&f, p->max_frame, hdr);
    if (rc < 0)
        return rc;
    p->conn->ops->send(p->conn, hdr, payload, len);
    p->bus->stats.frames_out++;
    p->bus->stats.bytes_out += OAP_HDR_LEN + len;
    return 0;
}

/* peer_send of a payload inside buf (taken; RBUS_HEADROOM free bytes before payload). */
static int
peer_send_owned(rbus_peer_t *p, uint16_t flags, uint16_t code, uint16_t app, uint64_t corr,
                void *buf, uint8_t *payload, size_t len)
{
    oap_frame_t f = {.flags = flags,
                     .code = code,
                     .app_proto_id = app,
                     .corr_id = corr,
                     .payload = payload,
                     .payload_len = len};
    uint8_t hdr[OAP_HDR_LEN];
    int rc;

    rc = oap_header_encode(&f, p->max_frame, hdr);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    if (p->conn->ops->send_owned != NULL) {
        p->conn->ops->send_owned(p->conn, hdr, buf, payload, len);
    } else {
        p->conn->ops->send(p->conn, hdr, payload, len);
        free(buf);
    }
    p->bus->stats.frames_out++;
    p->bus->stats.bytes_out += OAP_HDR_LEN + len;
    return 0;
}

static int
peer_send(rbus_peer_t *p, uint16_t flags, uint16_t code, uint16_t app, uint64_t corr,
          const void *payload, size_t len)
{
    return peer_send_tenant(p, flags, code, app, corr, NULL, 0, payload, len);
}

/* Pause reading from a connection whose send queue is over its bound (responses). */
static void
peer_check_backpressure(rbus_peer_t *p)
{
    rbus_conn_t *c = p->conn;

    if (c != NULL && c->reading && !conn_has_room(c, 0)) {
        c->ops->set_reading(c, false);
        c->reading = false;
        p->bus->stats.send_paused++;
    }
}

void
rbus__conn_drained(rbus_conn_t *c)
{
    if (c->peer != NULL && !c->reading && c->q_bytes <= RBUS_MAX_SEND_BYTES / 2 &&
        c->q_frames <= RBUS_MAX_SEND_FRAMES / 2) {
        c->reading = true;
        c->ops->set_reading(c, true);
    }
}

/* Error envelope (spec §3, ron-proto) into out (>= PROTO_MIN_ERROR_BUF
 * bytes); returns its length. slug and reason may be NULL. */
static size_t
envelope_build(char *out, size_t cap, uint16_t code, const char *slug, const char *reason,
               uint32_t retry_after_ms, const char *message, uint64_t corr)
{
    proto_error_t e;
    ssize_t n;

    proto_error_init(&e, code, corr, message != NULL ? message : proto_status_slug(code));
    if (slug != NULL)
        snprintf(e.code, sizeof e.code, "%s", slug);
    if (reason != NULL)
        snprintf(e.reason, sizeof e.reason, "%s", reason);
    e.has_retry_after = retry_after_ms > 0;
    e.retry_after_ms = retry_after_ms;
    n = proto_error_write(&e, out, cap);
    if (n < 0) { /* a slug outside the spec table: our bug; use the status's own */
        snprintf(e.code, sizeof e.code, "%s", proto_status_slug(code));
        n = proto_error_write(&e, out, cap);
    }
    return n > 0 ? (size_t)n : 0;
}

static void
peer_send_error(rbus_peer_t *p, uint16_t app, uint64_t corr, uint16_t code, const char *msg)
{
    char body[PROTO_MIN_ERROR_BUF];
    size_t n = envelope_build(body, sizeof body, code, NULL, NULL, 0, msg, corr);

    (void)peer_send(p, OAP_F_RESP | OAP_F_END, code, app, corr, body, n);
}

/* ---------------------------------------------------------------- pending requests */

static rbus_pending_t *
pending_find(rbus_peer_t *p, uint64_t corr)
{
    for (uint32_t i = 0; i < RBUS_MAX_INFLIGHT; i++)
        if (p->pend[i].cb != NULL && p->pend[i].corr_id == corr)
            return &p->pend[i];
    return NULL;
}

/* Clear slot e and run its callback (after the slot is free, so the callback may reuse it). */
static void
pending_complete(rbus_peer_t *p, rbus_pending_t *e, int status, const oap_frame_t *resp)
{
    rbus_reply_cb cb = e->cb;
    void *arg = e->arg;
    rbus_stats_t *st = &p->bus->stats;

    if (e->queued != NULL)
        p->queued_bytes -= e->queued_len;
    free(e->queued);
    memset(e, 0, sizeof *e);
    p->npend--;
    if (status == RON_ETIMEOUT)
        st->requests_timeout++;
    else if (status == RON_EUNAVAIL)
        st->requests_unavail++;
    else if (status == 0)
        st->responses_received++;
    cb(arg, status, resp);
}

/* Complete every pending request of p with status (connection loss, shutdown). */
static void
pending_fail_all(rbus_peer_t *p, int status)
{
    for (uint32_t i = 0; i < RBUS_MAX_INFLIGHT && p->npend > 0; i++)
        if (p->pend[i].cb != NULL)
            pending_complete(p, &p->pend[i], status, NULL);
}

/*
 * The loop's clock brought up to date: uv_now() is the time of the loop's
 * last turn, which may be seconds old after synchronous work or a stall under
 * load; a deadline taken from it would be that much shorter.
 */
static uint64_t
peer_clock(rbus_peer_t *p)
{
    uv_update_time(p->bus->loop);
    return uv_now(p->bus->loop);
}

static void
peer_timer_cb(uv_timer_t *t)
{
    rbus_peer_t *p = ron_container_of(t, rbus_peer_t, timer);
    uint64_t now = uv_now(p->bus->loop);

    p->timer_due = 0;
    if (p->state == RBUS_P_HELLO && p->hello_due <= now && !p->hello_late) {
        /* Timers run before the loop reads: after a stall the HELLO may be
         * waiting unread. Judge again once the loop has read for a while. */
        p->hello_late = true;
        p->hello_due = peer_clock(p) + RBUS_HELLO_GRACE_MS;
        now = uv_now(p->bus->loop);
    }
    if (p->state == RBUS_P_HELLO && p->hello_due <= now) {
        if (!p->outbound) {
            p->bus->stats.refused_proto++;
            peer_send_error(p, OAP_APP_CONTROL, 0, 426, "no HELLO in time");
        }
        peer_detach(p, RON_ETIMEOUT, true);
        return;
    }
    for (uint32_t i = 0; i < RBUS_MAX_INFLIGHT; i++) {
        if (p->state == RBUS_P_CLOSED)
            return;
        if (p->pend[i].cb != NULL && p->pend[i].deadline <= now)
            pending_complete(p, &p->pend[i], RON_ETIMEOUT, NULL);
    }
    if (p->state != RBUS_P_CLOSED)
        peer_timer_arm(p);
}

/* Arm the timer for the earliest pending deadline, or the HELLO deadline if sooner. */
static void
peer_timer_arm(rbus_peer_t *p)
{
    uint64_t due = UINT64_MAX, now = uv_now(p->bus->loop);

    if (p->state == RBUS_P_HELLO)
        due = p->hello_due;
    for (uint32_t i = 0; i < RBUS_MAX_INFLIGHT; i++)
        if (p->pend[i].cb != NULL && p->pend[i].deadline < due)
            due = p->pend[i].deadline;
    if (due == UINT64_MAX) {
        if (p->timer_due != 0)
            uv_timer_stop(&p->timer);
        p->timer_due = 0;
        return;
    }
    if (p->timer_due != 0 && p->timer_due <= due)
        return;
    p->timer_due = due;
    uv_timer_start(&p->timer, peer_timer_cb, due > now ? due - now : 0, 0);
}

/* ---------------------------------------------------------------- peers */

static void
peer_handle_closed(uv_handle_t *h)
{
    rbus_peer_t *p = h->data;
    rbus_t *b = p->bus;

    if (--p->handles > 0)
        return;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        b->peers = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    free(p);
    rbus__bus_unref(b);
}

static rbus_peer_t *
peer_new(rbus_t *b, bool outbound)
{
    rbus_peer_t *p = ron_xcalloc(1, sizeof *p);

    p->bus = b;
    p->outbound = outbound;
    p->max_frame = b->max_frame;
    p->remote_inflight = RBUS_MAX_INFLIGHT;
    p->next_corr = 1;
    uv_timer_init(b->loop, &p->timer);
    uv_timer_init(b->loop, &p->backoff);
    p->timer.data = p;
    p->backoff.data = p;
    p->handles = 2;
    p->next = b->peers;
    if (b->peers != NULL)
        b->peers->prev = p;
    b->peers = p;
    b->handles++;
    return p;
}

/* Orphan the requests p received and has not answered: rbus_respond then returns RON_ECLOSED. */
static void
peer_orphan_reqs(rbus_peer_t *p)
{
    for (rbus_req_t *r = p->reqs; r != NULL; r = r->next)
        r->peer = NULL;
    p->reqs = NULL;
    p->nreqs = 0;
}

static void
peer_shutdown(rbus_peer_t *p)
{
    if (p->state == RBUS_P_CLOSED)
        return;
    if (p->conn != NULL) {
        rbus_conn_t *c = p->conn;
        p->conn = NULL;
        c->peer = NULL;
        c->ops->close(c, false);
    }
    p->state = RBUS_P_CLOSED;
    peer_orphan_reqs(p);
    pending_fail_all(p, RON_ESHUTDOWN);
    uv_close((uv_handle_t *)&p->timer, peer_handle_closed);
    uv_close((uv_handle_t *)&p->backoff, peer_handle_closed);
}

static void peer_connect_start(rbus_peer_t *p);

static void
peer_backoff_cb(uv_timer_t *t)
{
    rbus_peer_t *p = ron_container_of(t, rbus_peer_t, backoff);

    if (p->state == RBUS_P_BACKOFF)
        peer_connect_start(p);
}

/* Outbound: wait, then try again; requests now fail fast with RON_EUNAVAIL. */
static void
peer_enter_backoff(rbus_peer_t *p)
{
    p->state = RBUS_P_BACKOFF;
    uv_timer_start(&p->backoff, peer_backoff_cb, p->backoff_ms, 0);
    p->backoff_ms = RON_MIN(p->backoff_ms * 2, RBUS_BACKOFF_MAX_MS);
}

static void
peer_connect_start(rbus_peer_t *p)
{
    rbus_t *b = p->bus;
    int rc;

    p->state = RBUS_P_CONNECTING;
    rc = b->transport == RBUS_TRANSPORT_UNIX ? rbus__unix_connect(p) : rbus__inproc_connect(p);
    if (rc < 0) {
        b->stats.connect_failures++;
        peer_enter_backoff(p);
    }
}

/*
 * p lost its connection (rc says why). Fails what was in flight with
 * RON_EUNAVAIL, then reconnects (outbound) or goes away (inbound).
 * When the core itself drops the connection, flush lets queued frames out first.
 */
static void
peer_detach(rbus_peer_t *p, int rc, bool flush)
{
    rbus_t *b = p->bus;
    rbus_peer_state_t was = p->state;

    if (p->conn != NULL) {
        rbus_conn_t *c = p->conn;
        p->conn = NULL;
        c->peer = NULL;
        c->ops->close(c, flush);
    }
    if (was == RBUS_P_CLOSED)
        return;
    if (was == RBUS_P_UP)
        b->stats.disconnects++;
    else if (p->outbound)
        b->stats.connect_failures++;
    ron_debug("bus %s: peer %s lost: %s", b->name, p->name, ron_strerror(rc));
    p->nrsubs = 0;
    peer_orphan_reqs(p);
    p->state = RBUS_P_BACKOFF; /* requests from the callbacks below fail fast */
    pending_fail_all(p, RON_EUNAVAIL);
    if (p->state == RBUS_P_CLOSED) /* a callback closed p or the bus */
        return;
    if (was == RBUS_P_UP && b->on_peer != NULL)
        b->on_peer(b->on_peer_arg, p, false);
    if (p->state == RBUS_P_CLOSED)
        return;
    if (p->outbound)
        peer_enter_backoff(p);
    else
        peer_shutdown(p);
}

void
rbus__conn_lost(rbus_conn_t *c, int rc)
{
    rbus_peer_t *p = c->peer;

    if (p == NULL)
        return;
    p->conn = NULL;
    c->peer = NULL;
    peer_detach(p, rc, false);
}

void
rbus__conn_proto_error(rbus_conn_t *c, int rc)
{
    rbus_peer_t *p = c->peer;
    uint16_t status;
    const char *slug, *reason;

    if (p == NULL)
        return;
    oap_error_status(rc, &status, &slug, &reason);
    p->bus->stats.proto_errors++;
    if (p->state == RBUS_P_HELLO && !p->outbound)
        p->bus->stats.refused_proto++;
    peer_send_error(p, OAP_APP_CONTROL, 0, status, ron_strerror(rc));
    peer_detach(p, rc, true);
}

static bool
uid_is_allowed(const rbus_t *b, uid_t uid)
{
    return b->transport == RBUS_TRANSPORT_INPROC || uid == b->allowed_uid;
}

void
rbus__conn_accepted(rbus_t *b, rbus_conn_t *c, uid_t uid, pid_t pid)
{
    rbus_peer_t *p = peer_new(b, false);

    p->conn = c;
    c->peer = p;
    c->reading = true;
    p->pid = pid;
    p->state = RBUS_P_HELLO;
    if (!uid_is_allowed(b, uid)) {
        b->stats.refused_uid++;
        ron_warn("bus %s: refused connection from uid %u pid %d (allowed uid %u)", b->name,
                 (unsigned)uid, (int)pid, (unsigned)b->allowed_uid);
        peer_send_error(p, OAP_APP_CONTROL, 0, 403, "uid not allowed");
        peer_detach(p, RON_EREFUSED, true);
        return;
    }
    p->hello_due = peer_clock(p) + RBUS_HELLO_TIMEOUT_MS;
    p->hello_late = false;
    peer_timer_arm(p);
}

static void
peer_send_hello(rbus_peer_t *p)
{
    rbus_t *b = p->bus;
    char body[384], hex[2 * RBUS_SECRET_LEN + 1];
    int n;

    rbus_secret_hex(b->secret, hex);
    n = snprintf(body, sizeof body,
                 "{\"ua\":\"ron-bus/1\",\"name\":\"%s\",\"pid\":%d,\"max_frame\":%u,"
                 "\"max_inflight\":%u,\"versions\":[1],\"bus_secret\":\"%s\"}",
                 b->name, (int)getpid(), (unsigned)b->max_frame, RBUS_MAX_INFLIGHT,
                 b->transport == RBUS_TRANSPORT_UNIX ? hex : "");
    memset(hex, 0, sizeof hex);
    (void)peer_send(p, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, OAP_APP_CONTROL, 0, body, (size_t)n);
    memset(body, 0, sizeof body);
}

void
rbus__conn_connected(rbus_conn_t *c, int status, uid_t uid, pid_t pid)
{
    rbus_peer_t *p = c->peer;

    if (p == NULL)
        return;
    if (status < 0) {
        rbus__conn_lost(c, status);
        return;
    }
    c->reading = true;
    p->pid = pid;
    if (!uid_is_allowed(p->bus, uid)) {
        ron_warn("bus %s: endpoint %s runs as uid %u, not allowed", p->bus->name, p->name,
                 (unsigned)uid);
        peer_detach(p, RON_EREFUSED, false);
        return;
    }
    p->state = RBUS_P_HELLO;
    p->hello_due = peer_clock(p) + RBUS_HELLO_TIMEOUT_MS;
    p->hello_late = false;
    peer_timer_arm(p);
    peer_send_hello(p);
}

static void send_subscribe(rbus_peer_t *p, uint16_t app);

/* HELLO done: negotiate, send what waited, renew subscriptions, tell the owner. */
static void
peer_up(rbus_peer_t *p, const rbus_hello_t *h)
{
    rbus_t *b = p->bus;

    if (h->max_frame != 0 && h->max_frame < p->max_frame)
        p->max_frame = h->max_frame;
    p->conn->ops->set_max_frame(p->conn, p->max_frame);
    p->remote_inflight = h->max_inflight != 0 ? h->max_inflight : RBUS_MAX_INFLIGHT;
    p->state = RBUS_P_UP;
    if (p->outbound) {
        b->stats.connects++;
        p->backoff_ms = RBUS_BACKOFF_MIN_MS;
        for (uint32_t i = 0; i < p->nsubs; i++) /* first, while in-flight slots are free */
            send_subscribe(p, p->subs[i].app_proto_id);
        for (uint32_t i = 0; i < RBUS_MAX_INFLIGHT; i++) {
            rbus_pending_t *e = &p->pend[i];
            if (e->cb == NULL || e->queued == NULL)
                continue;
            if (peer_send_tenant(p, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, e->app_proto_id,
                                 e->corr_id, e->tenant_id, e->queued_cap, e->queued,
                                 e->queued_len) < 0) {
                pending_complete(p, e, RON_EUNAVAIL, NULL); /* over the peer's smaller max_frame */
                if (p->state != RBUS_P_UP)
                    return;
                continue;
            }
            b->stats.requests_sent++;
            p->queued_bytes -= e->queued_len;
            free(e->queued);
            e->queued = NULL;
        }
    } else {
        b->stats.accepted++;
    }
    if (b->on_peer != NULL)
        b->on_peer(b->on_peer_arg, p, true);
}

/* Inbound HELLO: the first frame on an accepted connection. */
static int
peer_on_hello(rbus_peer_t *p, const oap_frame_t *f)
{
    rbus_t *b = p->bus;
    rbus_hello_t h;
    char body[256];
    int rc, n;
    bool bare;

    if (f->app_proto_id != OAP_APP_CONTROL || !(f->flags & OAP_F_REQ) || (f->flags & OAP_F_COMP)) {
        b->stats.refused_proto++;
        peer_send_error(p, OAP_APP_CONTROL, f->corr_id, 426, "first frame must be HELLO");
        peer_detach(p, RON_EPROTO, true);
        return RON_EPROTO;
    }
    rc = rbus__hello_parse(f->payload, f->payload_len, &h);
    if (rc < 0) {
        b->stats.refused_proto++;
        peer_send_error(p, OAP_APP_CONTROL, f->corr_id, rc == RON_EVERSION ? 426 : 400,
                        ron_strerror(rc));
        peer_detach(p, rc, true);
        return rc;
    }
    if (b->transport == RBUS_TRANSPORT_UNIX &&
        (!h.has_secret | !rbus__ct_equal(h.secret, b->secret, RBUS_SECRET_LEN))) {
        memset(&h, 0, sizeof h);
        b->stats.refused_secret++;
        ron_warn("bus %s: refused pid %d: missing or wrong bus secret", b->name, (int)p->pid);
        peer_send_error(p, OAP_APP_CONTROL, f->corr_id, 401, "bus secret mismatch");
        peer_detach(p, RON_EREFUSED, true);
        return RON_EREFUSED;
    }
    memset(h.secret, 0, sizeof h.secret);
    memcpy(p->name, h.name, sizeof p->name);
    bare = (f->flags & (OAP_F_START | OAP_F_END)) == 0;
    n = snprintf(body, sizeof body,
                 "{\"max_frame\":%u,\"max_inflight\":%u,\"flags_supported\":255,\"versions\":[1],"
                 "\"transports\":[\"%s\"],\"name\":\"%s\"}",
                 (unsigned)RON_MIN(b->max_frame, h.max_frame != 0 ? h.max_frame : b->max_frame),
                 RBUS_MAX_INFLIGHT, b->transport == RBUS_TRANSPORT_UNIX ? "unix" : "inproc",
                 b->name);
    (void)peer_send(p, bare ? OAP_F_RESP : OAP_F_RESP | OAP_F_END, 200, OAP_APP_CONTROL,
                    f->corr_id, body, (size_t)n);
    peer_up(p, &h);
    return p->state == RBUS_P_UP ? 0 : RON_ECLOSED;
}

/* Outbound: the answer to our HELLO. */
static int
peer_on_hello_reply(rbus_peer_t *p, const oap_frame_t *f)
{
    rbus_hello_t h;
    int rc;

    if (f->app_proto_id != OAP_APP_CONTROL || !(f->flags & OAP_F_RESP) || f->code != 200) {
        ron_warn("bus %s: %s refused our HELLO (status %u)", p->bus->name, p->name,
                 (unsigned)f->code);
        peer_detach(p, RON_EREFUSED, false);
        return RON_EREFUSED;
    }
    rc = rbus__hello_parse(f->payload, f->payload_len, &h);
    if (rc < 0) {
        p->bus->stats.proto_errors++;
        peer_detach(p, rc, false);
        return rc;
    }
    peer_up(p, &h);
    return p->state == RBUS_P_UP ? 0 : RON_ECLOSED;
}

/* ---------------------------------------------------------------- control protocol (app 0) */

static void
subscribe_done(void *arg, int status, const oap_frame_t *resp)
{
    (void)arg;
    (void)status;
    (void)resp; /* a lost subscription is renewed on reconnect */
}

static void
send_subscribe(rbus_peer_t *p, uint16_t app)
{
    char body[64];
    int n = snprintf(body, sizeof body, "{\"op\":\"subscribe\",\"app_proto_id\":%u}", (unsigned)app);
    rbus_pending_t *e;

    if (p->npend >= p->remote_inflight || !conn_has_room(p->conn, OAP_HDR_LEN + (size_t)n))
        return;
    for (e = p->pend; e->cb != NULL; e++)
        ;
    e->corr_id = p->next_corr++;
    e->deadline = peer_clock(p) + RBUS_DEFAULT_DEADLINE_MS;
    e->cb = subscribe_done;
    e->app_proto_id = OAP_APP_CONTROL;
    p->npend++;
    (void)peer_send(p, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, OAP_APP_CONTROL, e->corr_id, body,
                    (size_t)n);
    peer_timer_arm(p);
}

static void
peer_on_control(rbus_peer_t *p, const oap_frame_t *f)
{
    json_t *o = NULL;
    const char *op = NULL;
    json_int_t app = -1;
    uint16_t code = 400;

    o = json_loadb((const char *)f->payload, RON_MIN(f->payload_len, (size_t)RBUS_MAX_HELLO),
                   JSON_REJECT_DUPLICATES, NULL);
    if (o == NULL || json_unpack(o, "{s:s, s?:I !}", "op", &op, "app_proto_id", &app) != 0)
        goto out;
    if (strcmp(op, "ping") == 0) {
        code = 200;
    } else if (strcmp(op, "subscribe") == 0 && app > 0 && app <= UINT16_MAX) {
        bool have = false;
        for (uint32_t i = 0; i < p->nrsubs; i++)
            have |= p->rsubs[i] == (uint16_t)app;
        if (have || p->nrsubs < RBUS_MAX_SUBS) {
            if (!have)
                p->rsubs[p->nrsubs++] = (uint16_t)app;
            code = 200;
        } else {
            code = 429;
        }
    }
out:
    json_decref(o);
    if (code == 200)
        (void)peer_send(p, OAP_F_RESP | OAP_F_END, 200, OAP_APP_CONTROL, f->corr_id, "{}", 2);
    else
        peer_send_error(p, OAP_APP_CONTROL, f->corr_id, code, "bad control request");
    p->bus->stats.responses_sent++;
}

/* ---------------------------------------------------------------- receiving */

static void
peer_on_request(rbus_peer_t *p, const oap_frame_t *f)
{
    rbus_t *b = p->bus;
    rbus_handler_t *h = NULL;
    rbus_req_t *r;

    b->stats.requests_received++;
    if (f->app_proto_id == OAP_APP_CONTROL) {
        peer_on_control(p, f);
        return;
    }
    for (uint32_t i = 0; i < b->nhandlers; i++)
        if (b->handlers[i].app_proto_id == f->app_proto_id)
            h = &b->handlers[i];
    if (p->nreqs >= RBUS_MAX_INFLIGHT || h == NULL || !(f->flags & OAP_F_END)) {
        b->stats.requests_rejected++;
        peer_send_error(p, f->app_proto_id, f->corr_id,
                        h == NULL ? 404 : p->nreqs >= RBUS_MAX_INFLIGHT ? 429 : 400,
                        h == NULL ? "no handler for this app_proto_id"
                        : p->nreqs >= RBUS_MAX_INFLIGHT ? "too many requests in flight"
                                                         : "bus requests are one frame");
        return;
    }
    r = ron_xcalloc(1, sizeof *r);
    r->peer = p;
    r->corr_id = f->corr_id;
    r->app_proto_id = f->app_proto_id;
    r->bare = (f->flags & (OAP_F_START | OAP_F_END)) == 0;
    r->next = p->reqs;
    if (p->reqs != NULL)
        p->reqs->prev = r;
    p->reqs = r;
    p->nreqs++;
    h->cb(h->arg, r, f);
}

int
rbus__conn_frame(rbus_conn_t *c, const oap_frame_t *f, size_t wire_len)
{
    rbus_peer_t *p = c->peer;
    rbus_t *b;

    if (p == NULL)
        return RON_ECLOSED;
    b = p->bus;
    b->stats.frames_in++;
    b->stats.bytes_in += wire_len;
    if (p->state == RBUS_P_HELLO)
        return p->outbound ? peer_on_hello_reply(p, f) : peer_on_hello(p, f);
    if (p->state != RBUS_P_UP)
        return RON_ECLOSED;
    if (f->flags & OAP_F_COMP) {
        b->stats.proto_errors++; /* the bus never compresses: a peer that does is broken */
        peer_send_error(p, f->app_proto_id, f->corr_id, 400, "compressed bus frame");
        peer_detach(p, RON_EPROTO, true);
        return RON_EPROTO;
    }
    if (f->flags & OAP_F_RESP) {
        rbus_pending_t *e = pending_find(p, f->corr_id);
        if (e == NULL || e->queued != NULL)
            b->stats.responses_late++;
        else
            pending_complete(p, e, 0, f);
        if (p->state == RBUS_P_UP)
            peer_timer_arm(p);
    } else if (f->flags & OAP_F_EVENT) {
        b->stats.events_received++;
        for (uint32_t i = 0; i < p->nsubs; i++)
            if (p->subs[i].app_proto_id == f->app_proto_id) {
                p->subs[i].cb(p->subs[i].arg, p, f);
                break;
            }
    } else if (f->flags & OAP_F_REQ) {
        peer_on_request(p, f);
        peer_check_backpressure(p);
    }
    return p->conn == c ? 0 : RON_ECLOSED;
}

/* ---------------------------------------------------------------- public API */

int
rbus__sock_path(const char *dir, const char *name, char out[static RBUS_MAX_PATH])
{
    int n = snprintf(out, RBUS_MAX_PATH, "%s/%s.sock", dir, name);

    return n < 0 || (size_t)n >= RBUS_MAX_PATH ? RON_EPATHLEN : 0;
}

rbus_t *
rbus_new(uv_loop_t *loop, const rbus_config_t *cfg, int *rc_out)
{
    rbus_t *b = NULL;
    char path[RBUS_MAX_PATH];
    int rc = RON_EINVAL;

    if (cfg->name == NULL || !rbus__name_is_valid(cfg->name, strlen(cfg->name)))
        goto out;
    if (cfg->max_frame != 0 && (cfg->max_frame < OAP_MIN_MAX_FRAME || cfg->max_frame > OAP_MAX_FRAME))
        goto out;
    if (cfg->transport == RBUS_TRANSPORT_UNIX) {
        if (cfg->dir == NULL || cfg->dir[0] != '/')
            goto out;
        rc = RON_EPATHLEN;
        if (strlen(cfg->dir) >= RBUS_MAX_DIR || rbus__sock_path(cfg->dir, cfg->name, path) < 0)
            goto out;
    } else if (cfg->transport != RBUS_TRANSPORT_INPROC || cfg->hub == NULL) {
        goto out;
    }
    if (cfg->transport == RBUS_TRANSPORT_UNIX) {
        struct sigaction sa;
        /* libuv writes sockets with write(2): a peer that died must cost an
         * EPIPE, not the whole process. Leaves a handler someone set alone. */
        if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
            signal(SIGPIPE, SIG_IGN);
    }
    b = ron_xcalloc(1, sizeof *b);
    b->loop = loop;
    b->transport = cfg->transport;
    memcpy(b->name, cfg->name, strlen(cfg->name) + 1);
    if (cfg->dir != NULL && cfg->transport == RBUS_TRANSPORT_UNIX)
        memcpy(b->dir, cfg->dir, strlen(cfg->dir) + 1);
    memcpy(b->secret, cfg->secret, RBUS_SECRET_LEN);
    b->allowed_uid = cfg->allowed_uid_set ? cfg->allowed_uid : getuid();
    b->hub = cfg->hub;
    b->max_frame = cfg->max_frame != 0 ? cfg->max_frame : OAP_MAX_FRAME;
    b->handles = 1; /* released by rbus_free */
    rc = 0;
out:
    if (rc_out != NULL)
        *rc_out = rc;
    return b;
}

void
rbus__bus_unref(rbus_t *b)
{
    if (--b->handles == 0) {
        memset(b->secret, 0, sizeof b->secret);
        free(b);
    }
}

void
rbus_free(rbus_t *b)
{
    if (b == NULL || b->closing)
        return;
    b->closing = true;
    if (b->listening) {
        if (b->transport == RBUS_TRANSPORT_UNIX)
            rbus__unix_unlisten(b);
        else
            rbus__inproc_unlisten(b);
        b->listening = false;
    }
    for (rbus_peer_t *p = b->peers; p != NULL; p = p->next)
        peer_shutdown(p);
    rbus__bus_unref(b);
}

const char *
rbus_name(const rbus_t *b)
{
    return b->name;
}

void
rbus_stats_get(const rbus_t *b, rbus_stats_t *out)
{
    *out = b->stats;
    out->peers_up = out->requests_inflight = out->requests_serving = out->send_queue_bytes = 0;
    for (const rbus_peer_t *p = b->peers; p != NULL; p = p->next) {
        if (p->state == RBUS_P_CLOSED)
            continue;
        out->peers_up += p->state == RBUS_P_UP;
        out->requests_inflight += p->npend;
        out->requests_serving += p->nreqs;
        if (p->conn != NULL)
            out->send_queue_bytes += p->conn->q_bytes;
    }
}

int
rbus_handle(rbus_t *b, uint16_t app_proto_id, rbus_handler_cb cb, void *arg)
{
    if (app_proto_id == OAP_APP_CONTROL || cb == NULL)
        return RON_EINVAL;
    for (uint32_t i = 0; i < b->nhandlers; i++)
        if (b->handlers[i].app_proto_id == app_proto_id) {
            b->handlers[i].cb = cb;
            b->handlers[i].arg = arg;
            return 0;
        }
    if (b->nhandlers == RBUS_MAX_HANDLERS)
        return RON_EBUSY;
    b->handlers[b->nhandlers++] = (rbus_handler_t){app_proto_id, cb, arg};
    return 0;
}

void
rbus_on_peer(rbus_t *b, rbus_peer_cb cb, void *arg)
{
    b->on_peer = cb;
    b->on_peer_arg = arg;
}

int
rbus_listen(rbus_t *b)
{
    int rc;

    if (b->listening || b->closing)
        return RON_EBUSY;
    rc = b->transport == RBUS_TRANSPORT_UNIX ? rbus__unix_listen(b) : rbus__inproc_listen(b);
    if (rc == 0)
        b->listening = true;
    return rc;
}

rbus_peer_t *
rbus_connect(rbus_t *b, const char *name, int *rc_out)
{
    rbus_peer_t *p = NULL;
    char path[RBUS_MAX_PATH];
    int rc = RON_EINVAL;

    if (b->closing || name == NULL || !rbus__name_is_valid(name, strlen(name)))
        goto out;
    rc = RON_EPATHLEN;
    if (b->transport == RBUS_TRANSPORT_UNIX && rbus__sock_path(b->dir, name, path) < 0)
        goto out;
    p = peer_new(b, true);
    memcpy(p->name, name, strlen(name) + 1);
    p->backoff_ms = RBUS_BACKOFF_MIN_MS;
    rc = 0;
    peer_connect_start(p);
out:
    if (rc_out != NULL)
        *rc_out = rc;
    return p;
}

void
rbus_peer_close(rbus_peer_t *p)
{
    if (p != NULL && p->outbound)
        peer_shutdown(p);
}

bool
rbus_peer_is_inbound(const rbus_peer_t *p)
{
    return !p->outbound;
}

bool
rbus_peer_is_up(const rbus_peer_t *p)
{
    return p->state == RBUS_P_UP;
}

const char *
rbus_peer_name(const rbus_peer_t *p)
{
    return p->name;
}

pid_t
rbus_peer_pid(const rbus_peer_t *p)
{
    return p->pid;
}

int
rbus_request(rbus_peer_t *p, uint16_t app_proto_id, const void *payload, size_t len,
             uint32_t deadline_ms, rbus_reply_cb cb, void *arg)
{
    rbus_request_opts_t o = {.app_proto_id = app_proto_id, .deadline_ms = deadline_ms};

    return rbus_request_ex(p, &o, payload, len, cb, arg);
}

int
rbus_request_ex(rbus_peer_t *p, const rbus_request_opts_t *o, const void *payload, size_t len,
                rbus_reply_cb cb, void *arg)
{
    rbus_stats_t *st = &p->bus->stats;
    uint16_t app_proto_id = o->app_proto_id;
    uint32_t deadline_ms = o->deadline_ms;
    size_t cap_len = o->cap != NULL ? o->cap_len : 0;
    size_t body_len = cap_len + len, frame_len = OAP_HDR_LEN + body_len;
    uint8_t *body = NULL;
    rbus_pending_t *e;
    int rc;

    if (app_proto_id == OAP_APP_CONTROL || cb == NULL || cap_len > OAP_MAX_CAP)
        return RON_EINVAL;
    if (p->state == RBUS_P_CLOSED)
        return RON_ESHUTDOWN;
    if (p->state == RBUS_P_BACKOFF) {
        st->requests_unavail++;
        return RON_EUNAVAIL;
    }
    if (frame_len > p->max_frame)
        return RON_ETOOBIG;
    if (p->state == RBUS_P_UP ? p->npend >= p->remote_inflight || !conn_has_room(p->conn, frame_len)
                              : p->npend >= RBUS_MAX_INFLIGHT ||
                                    p->queued_bytes + body_len > RBUS_MAX_SEND_BYTES) {
        st->requests_busy++;
        return RON_EBUSY;
    }
    /* The cap section precedes the payload on the wire: one contiguous body
     * when there is one, the caller's buffer as is otherwise. */
    if (cap_len > 0 || p->state != RBUS_P_UP) {
        body = ron_xmalloc(body_len + 1);
        if (cap_len > 0)
            memcpy(body, o->cap, cap_len);
        if (len > 0)
            memcpy(body + cap_len, payload, len);
    }
    for (e = p->pend; e->cb != NULL; e++)
        ;
    e->corr_id = p->next_corr++;
    e->app_proto_id = app_proto_id;
    memcpy(e->tenant_id, o->tenant_id, sizeof e->tenant_id);
    if (p->state == RBUS_P_UP) {
        rc = peer_send_tenant(p, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, app_proto_id,
                              e->corr_id, e->tenant_id, (uint16_t)cap_len,
                              body != NULL ? body : payload, body_len);
        free(body);
        if (rc < 0)
            return rc;
        st->requests_sent++;
    } else {
        e->queued = body;
        e->queued_len = body_len;
        e->queued_cap = (uint16_t)cap_len;
        p->queued_bytes += body_len;
    }
    e->deadline = peer_clock(p) + (deadline_ms != 0 ? deadline_ms : RBUS_DEFAULT_DEADLINE_MS);
    e->cb = cb;
    e->arg = arg;
    p->npend++;
    peer_timer_arm(p);
    return 0;
}

static void
req_release(rbus_req_t *r)
{
    rbus_peer_t *p = r->peer;

    if (p != NULL) {
        if (r->prev != NULL)
            r->prev->next = r->next;
        else
            p->reqs = r->next;
        if (r->next != NULL)
            r->next->prev = r->prev;
        p->nreqs--;
    }
    free(r);
}

int
rbus_respond(rbus_req_t *req, uint16_t code, const void *payload, size_t len)
{
    rbus_peer_t *p = req->peer;
    uint16_t flags = req->bare ? OAP_F_RESP : OAP_F_RESP | OAP_F_END;
    int rc;

    if (p == NULL || p->conn == NULL) {
        req_release(req);
        return RON_ECLOSED;
    }
    rc = peer_send(p, flags, code, req->app_proto_id, req->corr_id, payload, len);
    if (rc < 0)
        peer_send_error(p, req->app_proto_id, req->corr_id, 500, "response too large");
    p->bus->stats.responses_sent++;
    req_release(req);
    peer_check_backpressure(p);
    return rc;
}

int
rbus_respond_owned(rbus_req_t *req, uint16_t code, void *buf, uint8_t *payload, size_t len)
{
    rbus_peer_t *p = req->peer;
    uint16_t flags = req->bare ? OAP_F_RESP : OAP_F_RESP | OAP_F_END;
    int rc;

    assert(payload >= (uint8_t *)buf + RBUS_HEADROOM);
    if (p == NULL || p->conn == NULL) {
        free(buf);
        req_release(req);
        return RON_ECLOSED;
    }
    rc = peer_send_owned(p, flags, code, req->app_proto_id, req->corr_id, buf, payload, len);
    if (rc < 0)
        peer_send_error(p, req->app_proto_id, req->corr_id, 500, "response too large");
    p->bus->stats.responses_sent++;
    req_release(req);
    peer_check_backpressure(p);
    return rc;
}

void *
rbus_frame_take(const oap_frame_t *f)
{
    void *block;

    if (f == NULL)
        return NULL;
    block = rbus__inproc_frame_take(f);
    return block != NULL ? block : rbus__unix_frame_take(f);
}

int
rbus_respond_error_ex(rbus_req_t *req, uint16_t code, const char *slug, const char *reason,
                      uint32_t retry_after_ms, const char *message)
{
    char body[PROTO_MIN_ERROR_BUF];
    size_t n = envelope_build(body, sizeof body, code, slug, reason, retry_after_ms, message,
                              req->corr_id);

    return rbus_respond(req, code, body, n);
}

int
rbus_respond_error(rbus_req_t *req, uint16_t code, const char *message)
{
    return rbus_respond_error_ex(req, code, NULL, NULL, 0, message);
}

rbus_peer_t *
rbus_req_peer(const rbus_req_t *req)
{
    return req->peer;
}

int
rbus_subscribe(rbus_peer_t *p, uint16_t app_proto_id, rbus_event_cb cb, void *arg)
{
    if (app_proto_id == OAP_APP_CONTROL || cb == NULL)
        return RON_EINVAL;
    for (uint32_t i = 0; i < p->nsubs; i++)
        if (p->subs[i].app_proto_id == app_proto_id) {
            p->subs[i].cb = cb;
            p->subs[i].arg = arg;
            return 0;
        }
    if (p->nsubs == RBUS_MAX_SUBS)
        return RON_EBUSY;
    p->subs[p->nsubs++] = (rbus_sub_t){app_proto_id, cb, arg};
    if (p->state == RBUS_P_UP)
        send_subscribe(p, app_proto_id);
    return 0;
}

int
rbus_publish(rbus_t *b, uint16_t app_proto_id, const void *payload, size_t len)
{
    int n = 0;

    if (app_proto_id == OAP_APP_CONTROL)
        return RON_EINVAL;
    if (OAP_HDR_LEN + len > b->max_frame)
        return RON_ETOOBIG;
    for (rbus_peer_t *p = b->peers; p != NULL; p = p->next) {
        bool sub = false;
        if (p->state != RBUS_P_UP)
            continue;
        for (uint32_t i = 0; i < p->nrsubs; i++)
            sub |= p->rsubs[i] == app_proto_id;
        if (!sub)
            continue;
        if (!conn_has_room(p->conn, OAP_HDR_LEN + len) ||
            peer_send(p, OAP_F_EVENT | OAP_F_START | OAP_F_END, 0, app_proto_id, b->stats.events_published + 1,
                      payload, len) < 0) {
            b->stats.events_dropped++;
            continue;
        }
        b->stats.events_published++;
        n++;
    }
    return n;
}
