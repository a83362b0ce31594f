/*
 * rc_conn.c - libron's connection: a non-blocking TCP socket driven by
 * poll() against a deadline, the HELLO exchange, frame send (gathered, no
 * copy of data payloads) and receive (views into the oap decoder's buffer),
 * and per-stream credit through oap_streams_*.
 * Invariants: every wait ends by c->deadline (pushed forward on progress);
 * any socket, HELLO or decode failure closes the connection, so no later
 * operation can read a stale frame; credit frames never reach callers.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rc_internal.h"
#include "ron_err.h"
#include "ron_util.h"

void
rc__progress(ron_client_t *c)
{
    c->deadline = ron_now_ms() + c->timeout_ms;
}

int
rc__fail(ron_client_t *c, int rc, const char *fmt, ...)
{
    va_list ap;

    c->err.rc = rc;
    c->err.status = 0;
    c->err.slug[0] = '\0';
    c->err.reason[0] = '\0';
    c->err.retryable = false;
    c->err.retry_after_ms = 0;
    va_start(ap, fmt);
    vsnprintf(c->err.message, sizeof c->err.message, fmt, ap);
    va_end(ap);
    return rc;
}

void
rc__drop(ron_client_t *c)
{
    if (c->fd < 0)
        return;
    close(c->fd);
    c->fd = -1;
    oap_decoder_close(&c->dec);
    oap_streams_close(&c->streams);
}

/* A socket-level failure: the connection is gone and the operation may be retried. */
static int
conn_fail(ron_client_t *c, int rc, const char *what)
{
    rc__drop(c);
    c->conn_lost = rc != RON_ETIMEOUT;
    return rc__fail(c, rc, "%s %s:%u: %s", what, c->node.host, (unsigned)c->node.port,
                    ron_strerror(rc));
}

/* Wait for ev on fd until the deadline. Returns 0, RON_ETIMEOUT or -errno. */
static int
wait_fd(ron_client_t *c, short ev)
{
    struct pollfd p = {c->fd, ev, 0};
    for (;;) {
        uint64_t now = ron_now_ms();
        int rc;
        if (now >= c->deadline)
            return RON_ETIMEOUT;
        rc = poll(&p, 1, (int)RON_MIN(c->deadline - now, (uint64_t)60000));
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -errno;
    }
}

uint64_t
rc__corr(ron_client_t *c)
{
    if (++c->next_corr == 0)
        c->next_corr = 1;
    return c->next_corr;
}

/* Write iov fully. Socket errors are returned (the caller drops). */
static int
send_all(ron_client_t *c, struct iovec *iov, int niov)
{
    while (niov > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        int rc;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
            if ((rc = wait_fd(c, POLLOUT)) < 0)
                return rc;
            continue;
        }
        rc__progress(c);
        while (niov > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Send f without stream accounting (HELLO, credit). */
static int
send_raw(ron_client_t *c, const oap_frame_t *f)
{
    uint8_t hdr[OAP_HDR_LEN];
    struct iovec iov[3];
    int n = 0, rc;

    rc = oap_header_encode(f, c->max_frame, hdr);
    if (rc < 0)
        return rc;
    iov[n++] = (struct iovec){hdr, OAP_HDR_LEN};
    if (f->cap_len > 0)
        iov[n++] = (struct iovec){(void *)f->cap, f->cap_len};
    if (f->payload_len > 0)
        iov[n++] = (struct iovec){(void *)f->payload, f->payload_len};
    rc = send_all(c, iov, n);
    if (rc < 0)
        return conn_fail(c, rc, "sending to");
    return 0;
}

int
rc__send(ron_client_t *c, const oap_frame_t *f)
{
    int rc = oap_streams_send(&c->streams, f);
    if (rc < 0)
        return rc; /* RON_EAGAIN: wait for credit; others are our bugs */
    return send_raw(c, f);
}

/* Read what the socket has into the decoder. wait: block until some arrives. */
static int
fill(ron_client_t *c, bool wait)
{
    for (;;) {
        size_t avail = 0;
        uint8_t *p = oap_decoder_reserve(&c->dec, 0, &avail);
        ssize_t n;
        int rc;
        if (p == NULL)
            return RON_EPROTO; /* buffer at its bound with no whole frame: cannot be */
        n = recv(c->fd, p, avail, 0);
        if (n > 0) {
            oap_decoder_commit(&c->dec, (size_t)n);
            rc__progress(c);
            return 0;
        }
        if (n == 0)
            return RON_ECLOSED;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        if (!wait)
            return RON_EAGAIN;
        if ((rc = wait_fd(c, POLLIN)) < 0)
            return rc;
    }
}

int
rc__error_frame(ron_client_t *c, const oap_frame_t *f)
{
    proto_error_t e;
    proto_err_t perr;

    c->err.rc = RON_EREMOTE;
    c->err.status = f->code;
    c->err.reason[0] = '\0';
    c->err.retry_after_ms = 0;
    if (proto_error_decode((const char *)f->payload, f->payload_len, &e, &perr) == 0) {
        snprintf(c->err.slug, sizeof c->err.slug, "%s", e.code);
        snprintf(c->err.message, sizeof c->err.message, "%s", e.message);
        snprintf(c->err.reason, sizeof c->err.reason, "%s", e.reason);
        c->err.retryable = e.retryable;
        if (e.has_retry_after)
            c->err.retry_after_ms = e.retry_after_ms;
    } else {
        /* Defensive: a malformed envelope still has a status to go by. */
        snprintf(c->err.slug, sizeof c->err.slug, "%s", proto_status_slug(f->code));
        snprintf(c->err.message, sizeof c->err.message, "status %u (malformed error envelope)",
                 (unsigned)f->code);
        c->err.retryable = proto_status_is_retryable(f->code);
    }
    return RON_EREMOTE;
}

int
rc__recv(ron_client_t *c, oap_frame_t *f, bool wait)
{
    for (;;) {
        int rc = oap_decoder_next(&c->dec, f);
        if (rc == 0) {
            if (f->corr_id == 0 && f->code >= 400 && (f->flags & OAP_F_RESP)) {
                /* Connection-level refusal (over the connection limit, ...). */
                rc = rc__error_frame(c, f);
                rc__drop(c);
                return rc;
            }
            rc = oap_streams_recv(&c->streams, f);
            if (rc == OAP_STREAM_CONTROL)
                return rc; /* credit applied: a sender waiting for it goes on */
            if (rc < 0) {
                rc__drop(c);
                return rc__fail(c, rc, "node %s:%u broke the stream rules: %s", c->node.host,
                                (unsigned)c->node.port, ron_strerror(rc));
            }
            if (f->app_proto_id == OAP_APP_CONTROL)
                continue; /* PING and the like: nothing for us */
            return 0;
        }
        if (rc != RON_EAGAIN) {
            rc__drop(c);
            return rc__fail(c, rc, "malformed frame from %s:%u: %s", c->node.host,
                            (unsigned)c->node.port, ron_strerror(rc));
        }
        rc = fill(c, wait);
        if (rc == RON_EAGAIN)
            return rc;
        if (rc < 0)
            return conn_fail(c, rc, "receiving from");
    }
}

int
rc__consume(ron_client_t *c, uint64_t corr_id, uint32_t n)
{
    uint8_t buf[OAP_HDR_LEN + 64];
    uint32_t grant = oap_streams_consume(&c->streams, corr_id, true, n);
    ssize_t len;
    oap_frame_t f;

    if (grant == 0)
        return 0;
    len = oap_credit_encode(corr_id, true, grant, buf, sizeof buf);
    if (len < 0)
        return (int)len;
    if (oap_frame_parse(buf, (size_t)len, c->max_frame, &f) < 0)
        return RON_EPROTO;
    return send_raw(c, &f);
}

/* Non-blocking connect to one address, waiting until the deadline. */
static int
connect_one(ron_client_t *c, const struct addrinfo *ai)
{
    int one = 1, err = 0, rc;
    socklen_t sl = sizeof err;

    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -errno;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS)
        goto fail_errno;
    if ((rc = wait_fd(c, POLLOUT)) < 0)
        goto fail;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
        goto fail_errno;
    if (err != 0) {
        rc = -err;
        goto fail;
    }
    return 0;
fail_errno:
    rc = -errno;
fail:
    close(c->fd);
    c->fd = -1;
    return rc;
}

/* HELLO: send ours, read the answer, adopt the negotiated max_frame. */
static int
hello(ron_client_t *c)
{
    proto_hello_t h = {0};
    proto_hello_reply_t r;
    proto_err_t perr;
    uint8_t buf[1024];
    oap_frame_t f;
    ssize_t len;
    uint32_t mf;
    int rc;

    snprintf(h.ua, sizeof h.ua, "%s", c->ua);
    h.has_max_frame = true;
    h.max_frame = OAP_MAX_FRAME;
    len = oap_hello_encode(&h, 1, false, buf, sizeof buf);
    if (len < 0)
        return rc__fail(c, (int)len, "cannot encode HELLO");
    if (oap_frame_parse(buf, (size_t)len, OAP_MAX_FRAME, &f) < 0)
        return rc__fail(c, RON_EPROTO, "cannot encode HELLO");
    if ((rc = send_raw(c, &f)) < 0)
        return rc;
    for (;;) {
        rc = oap_decoder_next(&c->dec, &f);
        if (rc == 0)
            break;
        if (rc != RON_EAGAIN) {
            rc__drop(c);
            return rc__fail(c, rc, "malformed HELLO answer from %s:%u: %s", c->node.host,
                            (unsigned)c->node.port, ron_strerror(rc));
        }
        if ((rc = fill(c, true)) < 0)
            return conn_fail(c, rc, "HELLO to");
    }
    if (f.code >= 400) {
        rc = rc__error_frame(c, &f);
        rc__drop(c);
        return rc;
    }
    rc = oap_hello_reply_parse(&f, 1, OAP_MAX_FRAME, &r, &mf, &perr);
    if (rc < 0) {
        rc__drop(c);
        return rc__fail(c, rc, "%s:%u does not speak OAP/1 (HELLO answer: %s)", c->node.host,
                        (unsigned)c->node.port, rc == RON_EJSON ? perr.text : ron_strerror(rc));
    }
    c->max_frame = mf;
    oap_decoder_set_max_frame(&c->dec, mf);
    oap_streams_close(&c->streams);
    oap_streams_init(&c->streams, r.max_inflight > 0 ? r.max_inflight : 1, OAP_STREAM_WINDOW);
    return 0;
}

int
rc__ensure(ron_client_t *c)
{
    struct addrinfo hints = {0}, *ai = NULL, *a;
    uint64_t op_deadline = c->deadline;
    int rc;

    if (c->fd >= 0) {
        /* Between operations nothing is due from the node: anything readable
         * (EOF after its idle close, an envelope before it closes) or a hangup
         * means the connection is going. Start a fresh one, so that a put from
         * a pipe never spends its only attempt on a dead connection. */
        struct pollfd p = {c->fd, POLLIN | POLLRDHUP, 0};
        if (poll(&p, 1, 0) == 0 && oap_decoder_next(&c->dec, &(oap_frame_t){0}) == RON_EAGAIN)
            return 0;
        rc__drop(c);
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(c->node.host, c->port_s, &hints, &ai);
    if (rc != 0) {
        c->conn_lost = rc == EAI_AGAIN;
        return rc__fail(c, RON_EUNAVAIL, "cannot resolve %s: %s", c->node.host,
                        gai_strerror(rc));
    }
    c->deadline = RON_MIN(op_deadline, ron_now_ms() + RON_CLIENT_CONNECT_TIMEOUT_MS);
    rc = -ECONNREFUSED;
    for (a = ai; a != NULL; a = a->ai_next) {
        rc = connect_one(c, a);
        if (rc == 0 || rc == RON_ETIMEOUT)
            break;
    }
    freeaddrinfo(ai);
    if (rc < 0) {
        c->conn_lost = true; /* a node restarting or not up yet: worth a retry */
        return rc__fail(c, rc, "cannot connect to %s:%u: %s", c->node.host,
                        (unsigned)c->node.port, ron_strerror(rc));
    }
    oap_decoder_init(&c->dec, OAP_MAX_FRAME);
    oap_streams_init(&c->streams, 1, OAP_STREAM_WINDOW);
    c->max_frame = OAP_MAX_FRAME;
    c->next_corr = 1; /* HELLO used 1 */
    rc = hello(c);
    if (rc == RON_ETIMEOUT)
        c->conn_lost = true; /* the listener is held by the kernel while a child restarts */
    c->deadline = op_deadline;
    if (rc == 0)
        rc__progress(c);
    return rc;
}
