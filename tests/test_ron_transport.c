/*
 * test_ron_transport.c - the HTTP/1.1 server and its hardening layer over
 * real loopback sockets. The server runs on a libuv loop in the test's
 * thread; each scenario's client runs in a second thread with blocking
 * sockets (receive timeouts bound every wait) and wakes the loop with
 * uv_async_send when it is done. Every loop test ends with
 * uv_loop_close() == 0. Pure parts (envelope, token buckets, decoding) are
 * tested directly with fake time.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zstd.h>
#ifdef TX_HAVE_ZLIB
#include <zlib.h>
#endif

#include "ron_err.h"
#include "ron_util.h"
#include "ron_transport.h"
#include "tx_internal.h"

/* ---- fixture: server on the loop, client in a thread ---- */

#define FX_MAX_HELD 64

typedef struct fx fx_t;
typedef void (*fx_client_fn)(fx_t *f);

struct fx {
    uv_loop_t loop;
    uv_async_t done;
    uv_thread_t thread;
    tx_server_t *srv;
    uint16_t port;
    int family;
    fx_client_fn client;
    tx_request_t *held[FX_MAX_HELD]; /* /hold requests, answered at the end */
    int nheld;
    int held_eclosed; /* held requests whose answer found the connection gone */
    uv_timer_t slow_timer;
    tx_request_t *slow_req;
    /* streaming route state */
    tx_request_t *stream_req;
    size_t stream_left;
    size_t max_wq_seen;
    int stream_eagain;
    /* /pstream: a streamed answer queued behind another (loop thread writes,
     * the client thread polls the counters with __atomic) */
    int ps_started;
    int ps_written;
    int ps_done_ok;
    int ps_done_eclosed;
    int ps_done_inside;   /* done callbacks run inside our own tx_respond_* call */
    int ps_drain_gone;    /* drains that found the connection gone */
    int ps_end_rc;
    bool ps_in_call;
    /* results the client leaves for the test */
    int ok;
    char note[256];
};

static uint8_t fx_chunk[64 << 10];

static void
fx_slow_fire(uv_timer_t *t)
{
    fx_t *f = t->data;
    tx_respond(f->slow_req, 200, NULL, 0, "slow", 4);
    f->slow_req = NULL;
}

static void fx_stream_pump(tx_request_t *req, void *arg);

static void
fx_stream_pump(tx_request_t *req, void *arg)
{
    fx_t *f = arg;
    int rc = 0;

    while (f->stream_left > 0) {
        size_t n = f->stream_left < sizeof fx_chunk ? f->stream_left : sizeof fx_chunk;
        rc = tx_respond_write(req, fx_chunk, n, NULL, NULL);
        if (rc == RON_EAGAIN) {
            f->stream_eagain++;
            break;
        }
        if (rc < 0)
            break;
        f->stream_left -= n;
        if (req->conn != NULL) {
            size_t q = req->conn->wq + req->chunk_bytes;
            if (q > f->max_wq_seen)
                f->max_wq_seen = q;
        }
    }
    if (f->stream_left == 0 || (rc < 0 && rc != RON_EAGAIN)) {
        tx_respond_end(req);
        f->stream_req = NULL;
    }
}

static void
fx_ps_done(int status, void *arg)
{
    fx_t *f = arg;

    if (f->ps_in_call)
        f->ps_done_inside++;
    if (status == 0)
        f->ps_done_ok++;
    else if (status == RON_ECLOSED)
        __atomic_fetch_add(&f->ps_done_eclosed, 1, __ATOMIC_SEQ_CST);
}

/* The handler's usual drain: write more; a gone connection ends the answer. */
static void
fx_ps_drain(tx_request_t *req, void *arg)
{
    fx_t *f = arg;

    f->ps_in_call = true;
    int rc = tx_respond_write(req, "more", 4, fx_ps_done, f);
    if (rc == 0)
        f->ps_written++;
    if (rc == RON_ECLOSED) {
        f->ps_end_rc = tx_respond_end(req);
        __atomic_fetch_add(&f->ps_drain_gone, 1, __ATOMIC_SEQ_CST);
    }
    f->ps_in_call = false;
}

/* An answer given a few milliseconds later, from a timer of its own. */
typedef struct {
    uv_timer_t timer;
    tx_request_t *req;
} fx_later_t;

static void
fx_later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
fx_later_fire(uv_timer_t *t)
{
    fx_later_t *l = t->data;
    const tx_request_view_t *v = tx_request_view(l->req);

    tx_respond(l->req, 200, NULL, 0, v->body, v->body_len);
    uv_close((uv_handle_t *)t, fx_later_closed);
}

static void
fx_handler(tx_request_t *req, void *arg)
{
    fx_t *f = arg;
    const tx_request_view_t *v = tx_request_view(req);
    char buf[256];

    if (strcmp(v->path, "/later") == 0) {
        fx_later_t *l = ron_xcalloc(1, sizeof *l);
        l->req = req;
        uv_timer_init(&f->loop, &l->timer);
        l->timer.data = l;
        uv_timer_start(&l->timer, fx_later_fire, ron_rand_below(4), 0);
    } else if (strcmp(v->path, "/healthz") == 0) {
        tx_respond(req, 200, NULL, 0, "ok", 2);
    } else if (strcmp(v->path, "/echo") == 0) {
        tx_header_t h[] = {{"Content-Type", "application/octet-stream"}};
        tx_respond(req, 200, h, 1, v->body, v->body_len);
    } else if (strcmp(v->path, "/info") == 0) {
        const char *x = tx_request_header(req, "x-test");
        int n = snprintf(buf, sizeof buf, "%s %s q=%s x=%s len=%zu minor=%u", v->method, v->path,
                         v->query, x != NULL ? x : "-", v->body_len, v->http_minor);
        tx_respond(req, 200, NULL, 0, buf, (size_t)n);
    } else if (strcmp(v->path, "/slow") == 0 && f->slow_req == NULL) {
        f->slow_req = req;
        uv_timer_start(&f->slow_timer, fx_slow_fire, 50, 0);
    } else if (strcmp(v->path, "/hold") == 0 && f->nheld < FX_MAX_HELD) {
        f->held[f->nheld++] = req;
    } else if (strcmp(v->path, "/pstream") == 0) {
        /* three chunks queued behind the request ahead of it, never sent */
        f->ps_in_call = true;
        tx_respond_start(req, 200, NULL, 0, -1, fx_ps_drain, f);
        for (int i = 0; i < 3; i++)
            if (tx_respond_write(req, "piece", 5, fx_ps_done, f) == 0)
                f->ps_written++;
        f->ps_in_call = false;
        __atomic_store_n(&f->ps_started, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(v->path, "/stream") == 0 && f->stream_req == NULL) {
        /* 32 MiB from one 64 KiB buffer: only backpressure keeps memory flat */
        f->stream_req = req;
        f->stream_left = (size_t)32 << 20;
        tx_respond_start(req, 200, NULL, 0, strcmp(v->query, "chunked") == 0 ? -1 : (int64_t)f->stream_left,
                         fx_stream_pump, f);
        fx_stream_pump(req, f);
    } else {
        tx_respond_error(req, 404, NULL, NULL, 0);
    }
}

static void
fx_client_thread(void *arg)
{
    fx_t *f = arg;

    f->client(f);
    uv_async_send(&f->done);
}

static void
fx_on_done(uv_async_t *a)
{
    fx_t *f = a->data;

    for (int i = 0; i < f->nheld; i++)
        if (tx_respond(f->held[i], 200, NULL, 0, "late", 4) == RON_ECLOSED)
            f->held_eclosed++; /* connection gone: req freed all the same */
    f->nheld = 0;
    if (f->slow_req != NULL) {
        uv_timer_stop(&f->slow_timer);
        tx_respond(f->slow_req, 200, NULL, 0, "x", 1);
        f->slow_req = NULL;
    }
    tx_server_close(f->srv, NULL, NULL);
    uv_close((uv_handle_t *)&f->done, NULL);
    uv_close((uv_handle_t *)&f->slow_timer, NULL);
}

/* Stats are read by the client thread while the loop writes them; the
 * tests read them only after fx_run, so copy them at the end of the run. */
static tx_stats_t fx_last_stats;

static void
fx_on_done_stats(uv_async_t *a)
{
    fx_t *f = a->data;
    fx_last_stats = *tx_server_stats(f->srv);
    fx_on_done(a);
}

/* Serve cfg on addr while client runs (it sets f->ok); keep the final stats. */
static void
fx_run(fx_t *f, const tx_config_t *cfg, const char *addr, fx_client_fn client)
{
    tx_listener_t *l;

    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(tx_listener_bind(&f->loop, addr, &l), 0);
    f->port = tx_listener_port(l);
    f->family = addr[0] == '[' ? AF_INET6 : AF_INET;
    f->srv = tx_server_new(&f->loop, cfg, fx_handler, f);
    assert_int_equal(tx_server_attach(f->srv, l), 0);
    uv_async_init(&f->loop, &f->done, fx_on_done_stats);
    f->done.data = f;
    uv_timer_init(&f->loop, &f->slow_timer);
    f->slow_timer.data = f;
    f->client = client;
    assert_int_equal(uv_thread_create(&f->thread, fx_client_thread, f), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_thread_join(&f->thread);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* ---- blocking client helpers (client thread) ---- */

static int
cl_connect(fx_t *f)
{
    int fd = socket(f->family, SOCK_STREAM, 0);
    struct timeval tv = {3, 0};
    int one = 1;

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (f->family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(f->port)};
        inet_pton(AF_INET6, "::1", &a.sin6_addr);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            close(fd);
            return -1;
        }
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(f->port)};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int
cl_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
cl_sends(int fd, const char *s)
{
    return cl_send(fd, s, strlen(s));
}

/* Read until the peer closes or timeout; returns bytes read (buf NUL-terminated). */
static ssize_t
cl_read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Read one response (head + Content-Length body) into buf. Returns its
 * status, or -1. *closed_out tells whether the server said Connection: close. */
static int
cl_read_response(int fd, char *buf, size_t cap, size_t *len_out)
{
    size_t len = 0;
    char *end = NULL;

    while (end == NULL) {
        if (len + 1 >= cap)
            return -1;
        ssize_t n = recv(fd, buf + len, 1, 0); /* byte by byte: never eat the next answer */
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - buf);
    const char *cl = strcasestr(buf, "\r\nContent-Length: ");
    size_t body = cl != NULL && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
    if (head + body + 1 > cap)
        return -1;
    while (len < head + body) {
        ssize_t n = recv(fd, buf + len, head + body - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
    }
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return atoi(buf + 9);
}

/* True when the server closed the connection within the receive timeout. */
static bool
cl_sees_close(int fd)
{
    char b[256];
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n == 0)
            return true;
        if (n < 0)
            return errno == ECONNRESET;
    }
    return false;
}

static const char *
body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p != NULL ? p + 4 : "";
}

#define CL_CHECK(f, cond)                                                                       \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            snprintf((f)->note, sizeof (f)->note, "line %d: %s", __LINE__, #cond);              \
            (f)->ok = 0;                                                                        \
            goto out;                                                                           \
        }                                                                                       \
    } while (0)

static void
fx_expect_ok(fx_t *f)
{
    if (!f->ok)
        fail_msg("client: %s", f->note);
}

static tx_config_t
test_cfg(void)
{
    tx_config_t c;
    tx_config_default(&c);
    return c;
}

/* ---- scenarios ---- */

static void
cl_keepalive(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    for (int i = 0; i < 5; i++) {
        CL_CHECK(f, cl_sends(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
        CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
        CL_CHECK(f, strcmp(body_of(buf), "ok") == 0);
        CL_CHECK(f, strstr(buf, "Connection: close") == NULL);
        CL_CHECK(f, strstr(buf, "\r\nDate: ") != NULL);
    }
out:
    if (fd >= 0)
        close(fd);
}

static void
test_keepalive_serves_several_requests_on_one_connection(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_keepalive);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.conns_accepted, 1);
    assert_int_equal(fx_last_stats.requests, 5);
}

static void
cl_pipeline(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    /* the first answer comes 50 ms late from a timer: order must hold */
    CL_CHECK(f, cl_sends(fd, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
                             "GET /info?n=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nthree"
                             "GET /info?n=4 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strcmp(body_of(buf), "slow") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strstr(body_of(buf), "q=n=2") != NULL);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strcmp(body_of(buf), "three") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strstr(body_of(buf), "q=n=4") != NULL);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_pipelined_requests_in_one_write_are_answered_in_order(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_pipeline);
    fx_expect_ok(&f);
}

static void
cl_many_pipelined(fx_t *f)
{
    /* more than TX_MAX_PIPELINE requests in one write: reading pauses, none is lost */
    char req[64 * 40], buf[4096];
    size_t n = 0;
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(req + n, sizeof req - n, "GET /info?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    CL_CHECK(f, cl_send(fd, req, n) == 0);
    for (int i = 0; i < 40; i++) {
        char want[32];
        snprintf(want, sizeof want, "q=i=%d ", i);
        CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
        CL_CHECK(f, strstr(body_of(buf), want) != NULL);
    }
out:
    if (fd >= 0)
        close(fd);
}

static void
test_deep_pipeline_pauses_reading_and_loses_nothing(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_many_pipelined);
    fx_expect_ok(&f);
}

static void
cl_body_too_large(fx_t *f)
{
    size_t big = 2u << 20;
    char *body = calloc(1, big);
    char buf[4096], head[128];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0 && body != NULL);
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", big);
    CL_CHECK(f, cl_sends(fd, head) == 0);
    cl_send(fd, body, big); /* the server may close before taking it all */
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 413);
    CL_CHECK(f, strstr(buf, "Content-Type: application/json") != NULL);
    CL_CHECK(f, strstr(body_of(buf), "\"code\":\"payload_too_large\"") != NULL);
    CL_CHECK(f, strstr(body_of(buf), "\"retryable\":false") != NULL);
    CL_CHECK(f, strstr(buf, "Connection: close") != NULL);
out:
    free(body);
    if (fd >= 0)
        close(fd);
}

static void
test_body_over_1mib_gets_413_envelope(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_body_too_large);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_BODY_TOO_LARGE], 1);
}

static void
cl_chunked(fx_t *f)
{
    char buf[8192];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strcmp(body_of(buf), "hello world") == 0);
    /* a chunked body past the cap: 413, even without a Content-Length up front */
    CL_CHECK(f, cl_sends(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    static char chunk[70000];
    memset(chunk, 'a', sizeof chunk);
    char line[32];
    int status = -1;
    for (int i = 0; i < 20; i++) {
        snprintf(line, sizeof line, "%zx\r\n", sizeof chunk);
        if (cl_sends(fd, line) < 0 || cl_send(fd, chunk, sizeof chunk) < 0 || cl_sends(fd, "\r\n") < 0)
            break;
    }
    status = cl_read_response(fd, buf, sizeof buf, NULL);
    CL_CHECK(f, status == 413);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_chunked_request_body_is_assembled_and_capped(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_chunked);
    fx_expect_ok(&f);
}

static void
cl_headers_too_large(fx_t *f)
{
    char buf[4096];
    static char req[24 << 10];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    int n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'b', 20000);
    n += 20000;
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n\r\n");
    cl_send(fd, req, (size_t)n);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 431);
    CL_CHECK(f, strstr(body_of(buf), "\"code\":\"headers_too_large\"") != NULL);
    CL_CHECK(f, cl_sees_close(fd));
    close(fd);
    /* too many header lines is the same refusal */
    fd = cl_connect(f);
    CL_CHECK(f, fd >= 0);
    n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 150; i++)
        n += snprintf(req + n, sizeof req - (size_t)n, "X-%d: v\r\n", i);
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    cl_send(fd, req, (size_t)n);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 431);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_oversized_headers_get_431(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_headers_too_large);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_HEADERS_TOO_LARGE], 2);
}

static void
cl_rate(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f), ok = 0, limited = 0;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    for (int i = 0; i < 20; i++) {
        CL_CHECK(f, cl_sends(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
        int st = cl_read_response(fd, buf, sizeof buf, NULL);
        if (st == 200) {
            ok++;
        } else {
            CL_CHECK(f, st == 429);
            CL_CHECK(f, strstr(buf, "\r\nRetry-After: ") != NULL);
            CL_CHECK(f, strstr(body_of(buf), "\"code\":\"quota_exhausted\"") != NULL);
            CL_CHECK(f, strstr(body_of(buf), "\"retryable\":true") != NULL);
            CL_CHECK(f, strstr(buf, "Connection: close") == NULL); /* no body: kept alive */
            limited++;
        }
    }
    /* burst 5 at 5 rps: the rest of 20 quick requests are refused */
    CL_CHECK(f, ok >= 5 && ok <= 14); /* a loaded machine refills a few tokens meanwhile */
    CL_CHECK(f, limited == 20 - ok);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_rate_over_bucket_gets_429_with_retry_after(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.rate_rps = 5;
    c.rate_burst = 5;
    fx_run(&f, &c, "127.0.0.1:0", cl_rate);
    fx_expect_ok(&f);
    assert_true(fx_last_stats.rejects[TX_REJECT_RATE] >= 6);
}

static void
cl_max_conns(fx_t *f)
{
    char buf[4096];
    int a = cl_connect(f), b = cl_connect(f), c = -1;

    f->ok = 1;
    CL_CHECK(f, a >= 0 && b >= 0);
    CL_CHECK(f, cl_sends(a, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(a, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, cl_sends(b, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(b, buf, sizeof buf, NULL) == 200);
    c = cl_connect(f);
    CL_CHECK(f, c >= 0);
    cl_sends(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    CL_CHECK(f, cl_read_response(c, buf, sizeof buf, NULL) == 503);
    CL_CHECK(f, strstr(buf, "\r\nRetry-After: 1\r\n") != NULL);
    CL_CHECK(f, strstr(body_of(buf), "\"code\":\"unavailable\"") != NULL);
    CL_CHECK(f, cl_sees_close(c));
    close(c);
    /* a slot freed is a slot for the next client */
    close(a);
    a = -1;
    usleep(100 * 1000);
    c = cl_connect(f);
    CL_CHECK(f, c >= 0);
    CL_CHECK(f, cl_sends(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(c, buf, sizeof buf, NULL) == 200);
out:
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    if (c >= 0)
        close(c);
}

static void
test_connection_past_max_conns_gets_503_and_close(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.max_conns = 2;
    fx_run(&f, &c, "127.0.0.1:0", cl_max_conns);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_MAX_CONNS], 1);
}

static void
cl_inflight(fx_t *f)
{
    char buf[4096];
    int a = cl_connect(f), b = cl_connect(f), c = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, a >= 0 && b >= 0 && c >= 0);
    CL_CHECK(f, cl_sends(a, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_sends(b, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    usleep(100 * 1000);
    CL_CHECK(f, cl_sends(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(c, buf, sizeof buf, NULL) == 503);
    CL_CHECK(f, strstr(buf, "\r\nRetry-After: ") != NULL);
    CL_CHECK(f, strstr(body_of(buf), "\"retryable\":true") != NULL);
    /* clients that reset their connections give their slots back, though the app still
     * holds the requests (a half-close is not enough: the client may still read) */
    struct linger lg = {1, 0};
    setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(a);
    close(b);
    a = b = -1;
    usleep(200 * 1000);
    CL_CHECK(f, cl_sends(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(c, buf, sizeof buf, NULL) == 200);
out:
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    if (c >= 0)
        close(c);
}

static void
test_requests_past_max_inflight_get_503_until_slots_free(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.max_inflight = 2;
    fx_run(&f, &c, "127.0.0.1:0", cl_inflight);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_INFLIGHT], 1);
    assert_int_equal(fx_last_stats.inflight, 0);
    assert_int_equal(f.held_eclosed, 2);
}

static void
cl_slowloris(fx_t *f)
{
    const char *req = "GET /healthz HTTP/1.1\r\nHost: slowloris\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n";
    char buf[4096];
    int fd = cl_connect(f);
    uint64_t t0 = ron_now_ms();
    bool closed = false;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    for (size_t i = 0; i < strlen(req); i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        struct timeval tv = {0, 200 * 1000};
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(fd, &rd);
        if (select(fd + 1, &rd, NULL, NULL, &tv) > 0) {
            closed = true; /* the server answered (408) and is closing */
            break;
        }
    }
    CL_CHECK(f, closed);
    ssize_t n = cl_read_all(fd, buf, sizeof buf);
    uint64_t took = ron_now_ms() - t0;
    CL_CHECK(f, n > 0 && strncmp(buf, "HTTP/1.1 408 ", 13) == 0);
    CL_CHECK(f, strstr(body_of(buf), "\"code\":\"timeout\"") != NULL);
    /* header timeout 600 ms: closed well before the request could finish (~14 s) */
    CL_CHECK(f, took >= 500 && took < 2000);
    close(fd);
    fd = -1;
    usleep(TX_REFUSE_LINGER_MS * 2 * 1000); /* let the server see our close too */
out:
    if (fd >= 0)
        close(fd);
}

static void
test_slowloris_is_closed_at_header_timeout(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.header_timeout_ms = 600;
    fx_run(&f, &c, "127.0.0.1:0", cl_slowloris);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_HEADER_TIMEOUT], 1);
    assert_int_equal(fx_last_stats.conns_active, 0);
}

static void
cl_slow_body(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 408);
    CL_CHECK(f, cl_sees_close(fd));
out:
    if (fd >= 0)
        close(fd);
}

static void
test_body_not_sent_in_time_gets_408_and_close(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.body_timeout_ms = 300;
    fx_run(&f, &c, "127.0.0.1:0", cl_slow_body);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_BODY_TIMEOUT], 1);
}

static void
cl_idle(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);
    uint64_t t0;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    t0 = ron_now_ms();
    CL_CHECK(f, cl_sees_close(fd));
    CL_CHECK(f, ron_now_ms() - t0 >= 250 && ron_now_ms() - t0 < 1500);
out:
    if (fd >= 0)
        close(fd);
}

static void
cl_silent(fx_t *f)
{
    int fd = cl_connect(f);
    uint64_t t0 = ron_now_ms();

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sees_close(fd));
    CL_CHECK(f, ron_now_ms() - t0 >= 250 && ron_now_ms() - t0 < 1500);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_connection_that_sends_nothing_is_closed_at_header_timeout(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.header_timeout_ms = 300;
    c.idle_timeout_ms = 60000; /* not the idle knob: a new connection owes its headers */
    fx_run(&f, &c, "127.0.0.1:0", cl_silent);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_HEADER_TIMEOUT], 1);
}

static void
test_idle_keepalive_connection_is_closed(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.idle_timeout_ms = 300;
    fx_run(&f, &c, "127.0.0.1:0", cl_idle);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_IDLE_TIMEOUT], 1);
}

static void
test_ipv6_listener_serves_requests(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    int probe;
    (void)state;
    if (tx_socket_bind("[::1]:0", 1, &probe) < 0)
        skip(); /* no IPv6 loopback on this machine */
    close(probe);
    fx_run(&f, &c, "[::1]:0", cl_keepalive);
    fx_expect_ok(&f);
}

static uint8_t *
zstd_of(const void *src, size_t len, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(len);
    uint8_t *o = malloc(cap);
    *out_len = ZSTD_compress(o, cap, src, len, 19);
    assert_false(ZSTD_isError(*out_len));
    return o;
}

static uint8_t *fx_payload;
static size_t fx_payload_len;
static const char *fx_encoding;

static void
cl_encoded(fx_t *f)
{
    char *buf = malloc(4 << 20), head[256];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0 && buf != NULL);
    snprintf(head, sizeof head,
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Encoding: %s\r\nContent-Length: %zu\r\n\r\n",
             fx_encoding, fx_payload_len);
    CL_CHECK(f, cl_sends(fd, head) == 0);
    CL_CHECK(f, cl_send(fd, fx_payload, fx_payload_len) == 0);
    int st = cl_read_response(fd, buf, 4 << 20, NULL);
    snprintf(f->note, sizeof f->note, "%d %.200s", st, body_of(buf));
out:
    free(buf);
    if (fd >= 0)
        close(fd);
}

static void
test_zstd_bomb_gets_413_compression_bomb(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    size_t n = 1u << 20;
    uint8_t *zeros = calloc(1, n);
    (void)state;
    fx_payload = zstd_of(zeros, n, &fx_payload_len); /* ~1000:1 */
    fx_encoding = "zstd";
    fx_run(&f, &c, "127.0.0.1:0", cl_encoded);
    assert_non_null(strstr(f.note, "413 "));
    assert_non_null(strstr(f.note, "\"reason\":\"compression_bomb\""));
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_DECODE_BOMB], 1);
    free(fx_payload);
    free(zeros);
}

static void
test_zstd_body_within_ratio_reaches_handler_decoded(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    char text[4000];
    (void)state;
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)('a' + (ron_rand_below(26))); /* ~1.6:1 */
    fx_payload = zstd_of(text, sizeof text, &fx_payload_len);
    fx_encoding = "zstd";
    fx_run(&f, &c, "127.0.0.1:0", cl_encoded);
    assert_true(strncmp(f.note, "200 ", 4) == 0);
    assert_memory_equal(f.note + 4, text, 200);
    free(fx_payload);
    /* an encoding we do not know is refused, not passed on */
    fx_payload = (uint8_t *)ron_xstrdup("whatever");
    fx_payload_len = 8;
    fx_encoding = "br";
    memset(&f, 0, sizeof f);
    fx_run(&f, &c, "127.0.0.1:0", cl_encoded);
    assert_true(strncmp(f.note, "400 ", 4) == 0);
    assert_non_null(strstr(f.note, "unsupported_content_encoding"));
    free(fx_payload);
}

#ifdef TX_HAVE_ZLIB
static void
test_gzip_bomb_gets_413_and_gzip_body_is_decoded(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    size_t n = 4u << 20;
    uint8_t *zeros = calloc(1, n);
    z_stream z;
    (void)state;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    fx_payload = malloc(deflateBound(&z, n));
    z.next_in = zeros;
    z.avail_in = (uInt)n;
    z.next_out = fx_payload;
    z.avail_out = (uInt)deflateBound(&z, n);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    fx_payload_len = z.total_out;
    deflateEnd(&z);
    fx_encoding = "gzip";
    fx_run(&f, &c, "127.0.0.1:0", cl_encoded);
    assert_non_null(strstr(f.note, "413 "));
    assert_non_null(strstr(f.note, "compression_bomb"));
    free(fx_payload);
    free(zeros);
}
#endif

static void
cl_conn_close(fx_t *f)
{
    char buf[8192];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "GET /info?a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                             "GET /info?b HTTP/1.1\r\nHost: t\r\n\r\n"
                             "GET /info?c HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    ssize_t n = cl_read_all(fd, buf, sizeof buf);
    CL_CHECK(f, n > 0);
    CL_CHECK(f, strstr(buf, "q=a") != NULL);
    CL_CHECK(f, strstr(buf, "Connection: close") != NULL);
    CL_CHECK(f, strstr(buf, "q=b") == NULL && strstr(buf, "q=c") == NULL);
    CL_CHECK(f, strstr(buf + 10, "HTTP/1.1") == NULL); /* exactly one answer */
out:
    if (fd >= 0)
        close(fd);
}

static void
test_pipelined_requests_after_connection_close_are_ignored(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_conn_close);
    fx_expect_ok(&f);
    assert_int_equal(fx_last_stats.requests, 1);
}

/* Poll *p (written by the loop thread) until it reaches want, up to 3 s. */
static bool
cl_wait_atomic(int *p, int want)
{
    for (int i = 0; i < 1500; i++) {
        if (__atomic_load_n(p, __ATOMIC_SEQ_CST) >= want)
            return true;
        usleep(2000);
    }
    return false;
}

static void
cl_pipelined_stream_reset(fx_t *f)
{
    int fd = cl_connect(f);
    struct linger lg = {1, 0};

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n"
                             "GET /pstream HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_wait_atomic(&f->ps_started, 1));
    /* close with a reset: the connection goes while /hold is still held */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    fd = -1;
    /* told while the server runs, not only at shutdown */
    CL_CHECK(f, cl_wait_atomic(&f->ps_done_eclosed, 3));
    CL_CHECK(f, cl_wait_atomic(&f->ps_drain_gone, 1));
out:
    if (fd >= 0)
        close(fd);
}

static void
test_queued_chunks_of_pipelined_stream_get_eclosed_once_when_client_resets(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_pipelined_stream_reset);
    fx_expect_ok(&f);
    assert_int_equal(f.ps_written, 3);
    assert_int_equal(f.ps_done_eclosed, 3);  /* each queued chunk, once */
    assert_int_equal(f.ps_done_ok, 0);
    assert_int_equal(f.ps_done_ok + f.ps_done_eclosed, f.ps_written); /* counts balance */
    assert_int_equal(f.ps_done_inside, 0);   /* never inside our own call */
    assert_int_equal(f.ps_drain_gone, 1);    /* the open answer learned it once */
    assert_int_equal(f.ps_end_rc, RON_ECLOSED);
    assert_int_equal(f.held_eclosed, 1);
    assert_int_equal(fx_last_stats.inflight, 0);
}

static void
cl_malformed(fx_t *f)
{
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "G@T / HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",                          /* HTTP/1.1 without Host */
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",    /* two Hosts */
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    };
    char buf[4096];

    f->ok = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = cl_connect(f);
        CL_CHECK(f, fd >= 0);
        cl_sends(fd, bad[i]);
        int st = cl_read_response(fd, buf, sizeof buf, NULL);
        if (st != 400 && st != 505) {
            snprintf(f->note, sizeof f->note, "case %zu: status %d", i, st);
            f->ok = 0;
            close(fd);
            return;
        }
        CL_CHECK(f, strstr(body_of(buf), "\"code\":\"") != NULL);
        CL_CHECK(f, cl_sees_close(fd));
        close(fd);
    }
out:
    return;
}

static void
test_malformed_requests_get_400_and_close(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_malformed);
    fx_expect_ok(&f);
    assert_true(fx_last_stats.rejects[TX_REJECT_MALFORMED] >= 5);
}

static void
cl_http10_head_expect_corr(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    /* HTTP/1.0 without keep-alive: one answer, then close */
    CL_CHECK(f, cl_sends(fd, "GET /info HTTP/1.0\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_all(fd, buf, sizeof buf) > 0);
    CL_CHECK(f, strstr(buf, "minor=0") != NULL && strstr(buf, "Connection: close") != NULL);
    close(fd);
    /* HTTP/1.0 keep-alive is honoured */
    fd = cl_connect(f);
    CL_CHECK(f, cl_sends(fd, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strstr(buf, "Connection: keep-alive") != NULL);
    close(fd);
    /* HEAD: the length of GET, no body; the next answer follows the head directly */
    fd = cl_connect(f);
    CL_CHECK(f, cl_sends(fd, "HEAD /healthz HTTP/1.1\r\nHost: t\r\nX-Corr-Id: 18446744073709551615\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    {
        size_t len = 0;
        char *end = NULL;
        buf[0] = '\0';
        while (end == NULL) {
            ssize_t n = recv(fd, buf + len, 1, 0);
            CL_CHECK(f, n > 0 && len + 2 < sizeof buf);
            len += (size_t)n;
            buf[len] = '\0';
            end = strstr(buf, "\r\n\r\n");
        }
        CL_CHECK(f, strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
        CL_CHECK(f, strstr(buf, "Content-Length: 2\r\n") != NULL);
        CL_CHECK(f, strstr(buf, "X-Corr-Id: 18446744073709551615\r\n") != NULL);
        CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
        CL_CHECK(f, strcmp(body_of(buf), "ok") == 0);
    }
    /* Expect: 100-continue gets the interim answer before the body is sent */
    CL_CHECK(f, cl_sends(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 100);
    CL_CHECK(f, cl_sends(fd, "body") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
    CL_CHECK(f, strcmp(body_of(buf), "body") == 0);
    /* Expect with a body over the cap: 413 at once, the body is never read */
    CL_CHECK(f, cl_sends(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9999999\r\nExpect: 100-continue\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 413);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_http10_head_expect_and_corr_id_follow_the_rules(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_http10_head_expect_corr);
    fx_expect_ok(&f);
}

static void
cl_stream_slow_reader(fx_t *f)
{
    static char buf[1 << 16];
    int fd = cl_connect(f);
    size_t total = 0, head_len = 0;
    int rcvbuf = 64 << 10;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    CL_CHECK(f, cl_sends(fd, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    usleep(300 * 1000); /* a slow reader: the server must wait, not buffer 32 MiB */
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        CL_CHECK(f, n > 0);
        if (head_len == 0) {
            char *e = memmem(buf, (size_t)n, "\r\n\r\n", 4);
            CL_CHECK(f, e != NULL);
            head_len = (size_t)(e + 4 - buf);
            total += (size_t)n - head_len;
        } else {
            total += (size_t)n;
        }
        if (total >= (size_t)32 << 20)
            break;
    }
    CL_CHECK(f, total == (size_t)32 << 20);
    /* the connection is reusable after a streamed body */
    CL_CHECK(f, cl_sends(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf, NULL) == 200);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_streamed_response_to_slow_reader_is_bounded_by_backpressure(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.write_timeout_ms = 3000;
    fx_run(&f, &c, "127.0.0.1:0", cl_stream_slow_reader);
    fx_expect_ok(&f);
    assert_true(f.stream_eagain > 0);
    assert_true(f.max_wq_seen <= TX_MAX_WRITE_QUEUE + sizeof fx_chunk);
}

static void
cl_stream_chunked(fx_t *f)
{
    static char buf[1 << 16];
    int fd = cl_connect(f);
    size_t got = 0;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "GET /stream?chunked HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    /* read to the terminating chunk; count bytes of chunk data */
    static char all[1 << 16];
    size_t have = 0;
    bool in_head = true;
    for (int guard = 0; guard < 100000; guard++) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        CL_CHECK(f, n > 0);
        got += (size_t)n;
        if (in_head) {
            memcpy(all + have, buf, (size_t)n < sizeof all - have ? (size_t)n : sizeof all - have);
            have += (size_t)n;
            if (memmem(all, have, "\r\n\r\n", 4) != NULL) {
                CL_CHECK(f, memmem(all, have, "Transfer-Encoding: chunked", 26) != NULL);
                in_head = false;
            }
        }
        if ((size_t)n >= 5 && memcmp(buf + n - 5, "0\r\n\r\n", 5) == 0 && got > ((size_t)32 << 20))
            break;
    }
    /* 512 chunks of 64 KiB: data + "10000\r\n" + "\r\n" each */
    CL_CHECK(f, got > ((size_t)32 << 20) + 512 * 9);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_streamed_response_without_length_is_chunked(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_stream_chunked);
    fx_expect_ok(&f);
}

static void
cl_stream_never_read(fx_t *f)
{
    int fd = cl_connect(f);
    int rcvbuf = 16 << 10;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    CL_CHECK(f, cl_sends(fd, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    /* never read: the write timeout (300 ms) must end the connection */
    usleep(1200 * 1000);
    CL_CHECK(f, cl_sees_close(fd) || errno == ECONNRESET);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_client_that_stops_reading_is_closed_and_the_stream_released(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    c.write_timeout_ms = 300;
    fx_run(&f, &c, "127.0.0.1:0", cl_stream_never_read);
    assert_int_equal(fx_last_stats.rejects[TX_REJECT_WRITE_TIMEOUT], 1);
    assert_null(f.stream_req); /* the app learnt through drain + RON_ECLOSED and ended it */
    assert_true(f.stream_left > 0);
    assert_true(f.max_wq_seen <= TX_MAX_WRITE_QUEUE + sizeof fx_chunk);
}

static void
cl_stream_http10(fx_t *f)
{
    static char buf[1 << 16];
    char head[4096];
    size_t total = 0, hl = 0;
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    /* no length and no chunked framing in HTTP/1.0: the close ends the body */
    CL_CHECK(f, cl_sends(fd, "GET /stream?chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 0);
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        CL_CHECK(f, n >= 0);
        if (n == 0)
            break;
        if (hl < sizeof head - 1) {
            size_t k = (size_t)n < sizeof head - 1 - hl ? (size_t)n : sizeof head - 1 - hl;
            memcpy(head + hl, buf, k);
            hl += k;
            head[hl] = '\0';
        }
        total += (size_t)n;
    }
    CL_CHECK(f, strstr(head, "Connection: close\r\n") != NULL);
    CL_CHECK(f, strstr(head, "Transfer-Encoding") == NULL && strstr(head, "Content-Length") == NULL);
    char *e = strstr(head, "\r\n\r\n");
    CL_CHECK(f, e != NULL);
    CL_CHECK(f, total - (size_t)(e + 4 - head) == (size_t)32 << 20);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_streamed_response_to_http10_is_delimited_by_close(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    (void)state;
    fx_run(&f, &c, "127.0.0.1:0", cl_stream_http10);
    fx_expect_ok(&f);
    assert_null(f.stream_req);
}

/* ---- a seeded random property test of pipelining ---- */

#define PR_REQS 300

typedef struct {
    uint64_t seed;
    int kind[PR_REQS];      /* 0 GET /info, 1 POST /echo (length), 2 POST /later chunked, 3 HEAD */
    size_t body_len[PR_REQS];
} pr_plan_t;

static pr_plan_t pr_plan;

static uint64_t
pr_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void
pr_body(int i, size_t len, char *out)
{
    for (size_t k = 0; k < len; k++)
        out[k] = (char)('a' + (i * 7 + (int)k) % 26);
}

/* Append request i of the plan to b. */
static void
pr_request(tx_buf_t *b, int i)
{
    char line[256], body[3000];
    size_t bl = pr_plan.body_len[i];

    pr_body(i, bl, body);
    switch (pr_plan.kind[i]) {
    case 0:
        snprintf(line, sizeof line, "GET /info?i=%d HTTP/1.1\r\nHost: t\r\nX-Corr-Id: %d\r\n\r\n", i, i + 1);
        tx__buf_append_str(b, line);
        break;
    case 1:
        snprintf(line, sizeof line, "POST /echo HTTP/1.1\r\nHost: t\r\nX-Corr-Id: %d\r\nContent-Length: %zu\r\n\r\n",
                 i + 1, bl);
        tx__buf_append_str(b, line);
        tx__buf_append(b, body, bl);
        break;
    case 2: {
        snprintf(line, sizeof line, "POST /later HTTP/1.1\r\nHost: t\r\nX-Corr-Id: %d\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n", i + 1);
        tx__buf_append_str(b, line);
        size_t off = 0;
        while (off < bl) {
            size_t n = RON_MIN(bl - off, (size_t)(1 + (i * 31 + off) % 700));
            snprintf(line, sizeof line, "%zx\r\n", n);
            tx__buf_append_str(b, line);
            tx__buf_append(b, body + off, n);
            tx__buf_append(b, "\r\n", 2);
            off += n;
        }
        tx__buf_append_str(b, "0\r\n\r\n");
        break;
    }
    default:
        snprintf(line, sizeof line, "HEAD /healthz HTTP/1.1\r\nHost: t\r\nX-Corr-Id: %d\r\n\r\n", i + 1);
        tx__buf_append_str(b, line);
    }
}

/* Check the answers in rx (all of them once PR_REQS parsed); returns the
 * number of complete answers verified, or -1 with f->note set. */
static int
pr_check(fx_t *f, const char *rx, size_t len)
{
    size_t off = 0;
    int i = 0;
    char body[3000];

    while (i < PR_REQS) {
        const char *e = memmem(rx + off, len - off, "\r\n\r\n", 4);
        if (e == NULL)
            return i;
        size_t hl = (size_t)(e + 4 - (rx + off));
        const char *cl = memmem(rx + off, hl, "Content-Length: ", 16);
        size_t bl = cl != NULL ? strtoul(cl + 16, NULL, 10) : 0;
        if (pr_plan.kind[i] == 3)
            bl = 0; /* HEAD: the length of GET, no body */
        if (off + hl + bl > len)
            return i;
        char want[64];
        int wl = snprintf(want, sizeof want, "X-Corr-Id: %d\r\n", i + 1);
        if (strncmp(rx + off, "HTTP/1.1 200 ", 13) != 0 || memmem(rx + off, hl, want, (size_t)wl) == NULL) {
            snprintf(f->note, sizeof f->note, "seed %llu: answer %d out of order or failed: %.60s",
                     (unsigned long long)pr_plan.seed, i, rx + off);
            return -1;
        }
        const char *b = rx + off + hl;
        if (pr_plan.kind[i] == 1 || pr_plan.kind[i] == 2) {
            pr_body(i, pr_plan.body_len[i], body);
            if (bl != pr_plan.body_len[i] || memcmp(b, body, bl) != 0) {
                snprintf(f->note, sizeof f->note, "seed %llu: body of answer %d differs",
                         (unsigned long long)pr_plan.seed, i);
                return -1;
            }
        } else if (pr_plan.kind[i] == 0) {
            char q[32];
            int ql = snprintf(q, sizeof q, "q=i=%d ", i);
            if (memmem(b, bl, q, (size_t)ql) == NULL) {
                snprintf(f->note, sizeof f->note, "seed %llu: answer %d is not for its request",
                         (unsigned long long)pr_plan.seed, i);
                return -1;
            }
        }
        off += hl + bl;
        i++;
    }
    return i;
}

static void
cl_pipeline_random(fx_t *f)
{
    tx_buf_t tx = {0}, rx = {0};
    uint64_t x = pr_plan.seed | 1;
    size_t sent = 0;
    int fd = cl_connect(f), done = 0;
    uint64_t t0 = ron_now_ms();

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    for (int i = 0; i < PR_REQS; i++)
        pr_request(&tx, i);
    /* random write sizes, reading as we go (the server pauses reading when its pipeline fills) */
    while (done < PR_REQS && ron_now_ms() - t0 < 20000) {
        struct pollfd pfd = {fd, POLLIN | (sent < tx.len ? POLLOUT : 0), 0};
        CL_CHECK(f, poll(&pfd, 1, 1000) >= 0);
        if ((pfd.revents & POLLOUT) && sent < tx.len) {
            size_t n = RON_MIN(tx.len - sent, (size_t)(1 + pr_next(&x) % 3000));
            ssize_t w = send(fd, tx.p + sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            CL_CHECK(f, w > 0 || errno == EAGAIN);
            if (w > 0)
                sent += (size_t)w;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            tx__buf_reserve(&rx, 65536);
            ssize_t r = recv(fd, rx.p + rx.len, rx.cap - rx.len, MSG_DONTWAIT);
            CL_CHECK(f, r > 0 || (r < 0 && errno == EAGAIN));
            if (r > 0)
                rx.len += (size_t)r;
            done = pr_check(f, (const char *)rx.p, rx.len);
            if (done < 0) {
                f->ok = 0;
                goto out;
            }
        }
    }
    if (done != PR_REQS)
        snprintf(f->note, sizeof f->note, "seed %llu: %d of %d answers",
                 (unsigned long long)pr_plan.seed, done, PR_REQS);
    CL_CHECK(f, done == PR_REQS);
out:
    tx__buf_free(&tx);
    tx__buf_free(&rx);
    if (fd >= 0)
        close(fd);
}

static void
test_random_pipelines_with_async_answers_keep_request_order(void **state)
{
    tx_config_t c = test_cfg();
    const char *env = getenv("TX_TEST_SEED");
    (void)state;

    for (int round = 0; round < 3; round++) {
        fx_t f = {0};
        uint64_t x;
        pr_plan.seed = env != NULL ? strtoull(env, NULL, 10) + (uint64_t)round : ron_now_ns();
        x = pr_plan.seed | 1;
        for (int i = 0; i < PR_REQS; i++) {
            pr_plan.kind[i] = (int)(pr_next(&x) % 4);
            pr_plan.body_len[i] = pr_plan.kind[i] == 1 || pr_plan.kind[i] == 2 ? pr_next(&x) % 3000 : 0;
        }
        fx_run(&f, &c, "127.0.0.1:0", cl_pipeline_random);
        if (!f.ok)
            fail_msg("client: %s (rerun with TX_TEST_SEED=%llu)", f.note,
                     (unsigned long long)pr_plan.seed);
    }
}

static void
test_listener_adopts_an_already_bound_fd(void **state)
{
    fx_t f = {0};
    tx_config_t c = test_cfg();
    tx_listener_t *l;
    int fd;
    char addr[TX_ADDR_MAX];
    (void)state;

    /* what the kernel does: bind, then hand the fd over */
    assert_int_equal(tx_socket_bind("127.0.0.1:0", 16, &fd), 0);
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(tx_listener_from_fd(&f.loop, fd, &l), 0);
    f.port = tx_listener_port(l);
    tx_listener_addr(l, addr);
    assert_true(strncmp(addr, "127.0.0.1:", 10) == 0);
    f.family = AF_INET;
    f.srv = tx_server_new(&f.loop, &c, fx_handler, &f);
    assert_int_equal(tx_server_attach(f.srv, l), 0);
    uv_async_init(&f.loop, &f.done, fx_on_done);
    f.done.data = &f;
    uv_timer_init(&f.loop, &f.slow_timer);
    f.slow_timer.data = &f;
    f.client = cl_keepalive;
    assert_int_equal(uv_thread_create(&f.thread, fx_client_thread, &f), 0);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    uv_thread_join(&f.thread);
    assert_int_equal(uv_loop_close(&f.loop), 0);
    fx_expect_ok(&f);

    /* a socket that is not listening is refused */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(tx_listener_from_fd(&loop, s, &l), RON_EINVAL);
    close(s);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(tx_socket_bind("nohost:80", 1, &fd), RON_EINVAL);
    assert_int_equal(tx_socket_bind("127.0.0.1:70000", 1, &fd), RON_EINVAL);
    assert_int_equal(tx_socket_bind("::1:80", 1, &fd), RON_EINVAL);
}

/* ---- pure parts ---- */

static void
test_envelope_has_spec_fields_and_escapes_text(void **state)
{
    char out[TX_ENVELOPE_MAX];
    (void)state;
    tx_envelope_format(out, sizeof out, 429, "slow \"down\"", NULL, 18446744073709551615ull, 1000);
    assert_string_equal(out, "{\"code\":\"quota_exhausted\",\"message\":\"slow \\\"down\\\"\","
                             "\"retryable\":true,\"corr_id\":\"18446744073709551615\","
                             "\"retry_after_ms\":1000}");
    tx_envelope_format(out, sizeof out, 413, NULL, "compression_bomb", 7, 0);
    assert_string_equal(out, "{\"code\":\"payload_too_large\",\"message\":\"Payload Too Large\","
                             "\"retryable\":false,\"corr_id\":\"7\",\"reason\":\"compression_bomb\"}");
    assert_string_equal(tx_status_slug(431), "headers_too_large");
    assert_string_equal(tx_status_slug(503), "unavailable");
    assert_true(tx_status_retryable(503));
    assert_false(tx_status_retryable(400));
    assert_string_equal(tx_reject_name(TX_REJECT_RATE), "rate");
}

static void
test_response_head_drops_split_headers_and_omits_length_on_204(void **state)
{
    tx_buf_t b = {0};
    tx_header_t h[] = {{"X-Ok", "fine"}, {"X-Evil", "a\r\nSet-Cookie: x=1"}, {"Bad:Name", "v"}};
    (void)state;
    tx__http1_head(&b, 1, 200, h, 3, 5, true, 42, NULL);
    tx__buf_append(&b, "", 1);
    assert_string_equal((char *)b.p, "HTTP/1.1 200 OK\r\nX-Corr-Id: 42\r\nX-Ok: fine\r\n"
                                     "Content-Length: 5\r\n\r\n");
    b.len = 0;
    tx__http1_head(&b, 0, 204, NULL, 0, 0, false, 1, NULL);
    tx__buf_append(&b, "", 1);
    assert_string_equal((char *)b.p, "HTTP/1.1 204 No Content\r\nX-Corr-Id: 1\r\n"
                                     "Connection: close\r\n\r\n");
    tx__buf_free(&b);
}

static void
test_token_bucket_refills_at_rate_and_table_stays_bounded(void **state)
{
    tx_limits_t l;
    tx_config_t c = test_cfg();
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    uint32_t retry = 0;
    (void)state;

    c.rate_rps = 10;
    c.rate_burst = 2;
    c.rate_sources = 64;
    tx__limits_init(&l, &c);
    memset(&ss, 0, sizeof ss);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(0x0a000001);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 1000, &retry), 0);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 1000, &retry), 0);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 1000, &retry), RON_EFLOOD);
    assert_int_equal(retry, 1);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 1050, &retry), RON_EFLOOD); /* half a token */
    assert_int_equal(tx__limits_rate_take(&l, &ss, 1100, &retry), 0);         /* 10 rps: one per 100 ms */
    /* 10,000 sources never grow the table past its slots */
    for (uint32_t i = 0; i < 10000; i++) {
        in->sin_addr.s_addr = htonl(0x0b000000 + i);
        tx__limits_rate_take(&l, &ss, 2000, &retry);
    }
    assert_true(l.stats.rate_sources <= l.nbuckets);
    assert_true(l.stats.rate_evictions > 0);
    /* IPv6 sources share a bucket per /64 */
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof ss);
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8:1:2::1", &in6->sin6_addr);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 5000, &retry), 0);
    inet_pton(AF_INET6, "2001:db8:1:2::ffff", &in6->sin6_addr);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 5000, &retry), 0);
    inet_pton(AF_INET6, "2001:db8:1:2:abcd::1", &in6->sin6_addr);
    assert_int_equal(tx__limits_rate_take(&l, &ss, 5000, &retry), RON_EFLOOD);
    tx__limits_free(&l);
}

static void
test_decode_refuses_past_limit_and_corrupt_input(void **state)
{
    uint8_t *out = NULL;
    size_t out_len = 0, zl;
    static uint8_t zeros[100000];
    uint8_t *z = zstd_of(zeros, sizeof zeros, &zl);
    (void)state;

    assert_int_equal(tx__decode("zstd", z, zl, sizeof zeros, &out, &out_len), 0);
    assert_int_equal(out_len, sizeof zeros);
    free(out);
    assert_int_equal(tx__decode("zstd", z, zl, sizeof zeros - 1, &out, &out_len), RON_EBOMB);
    assert_int_equal(tx__decode("zstd", z, zl - 3, sizeof zeros, &out, &out_len), RON_ECOMPRESS);
    assert_int_equal(tx__decode("zstd", (const uint8_t *)"nope", 4, 100, &out, &out_len), RON_ECOMPRESS);
    assert_int_equal(tx__decode("compress", z, zl, 100, &out, &out_len), RON_EINVAL);
    free(z);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_has_spec_fields_and_escapes_text),
        cmocka_unit_test(test_response_head_drops_split_headers_and_omits_length_on_204),
        cmocka_unit_test(test_token_bucket_refills_at_rate_and_table_stays_bounded),
        cmocka_unit_test(test_decode_refuses_past_limit_and_corrupt_input),
        cmocka_unit_test(test_keepalive_serves_several_requests_on_one_connection),
        cmocka_unit_test(test_pipelined_requests_in_one_write_are_answered_in_order),
        cmocka_unit_test(test_deep_pipeline_pauses_reading_and_loses_nothing),
        cmocka_unit_test(test_random_pipelines_with_async_answers_keep_request_order),
        cmocka_unit_test(test_body_over_1mib_gets_413_envelope),
        cmocka_unit_test(test_chunked_request_body_is_assembled_and_capped),
        cmocka_unit_test(test_oversized_headers_get_431),
        cmocka_unit_test(test_rate_over_bucket_gets_429_with_retry_after),
        cmocka_unit_test(test_connection_past_max_conns_gets_503_and_close),
        cmocka_unit_test(test_requests_past_max_inflight_get_503_until_slots_free),
        cmocka_unit_test(test_slowloris_is_closed_at_header_timeout),
        cmocka_unit_test(test_body_not_sent_in_time_gets_408_and_close),
        cmocka_unit_test(test_connection_that_sends_nothing_is_closed_at_header_timeout),
        cmocka_unit_test(test_idle_keepalive_connection_is_closed),
        cmocka_unit_test(test_ipv6_listener_serves_requests),
        cmocka_unit_test(test_zstd_bomb_gets_413_compression_bomb),
        cmocka_unit_test(test_zstd_body_within_ratio_reaches_handler_decoded),
#ifdef TX_HAVE_ZLIB
        cmocka_unit_test(test_gzip_bomb_gets_413_and_gzip_body_is_decoded),
#endif
        cmocka_unit_test(test_pipelined_requests_after_connection_close_are_ignored),
        cmocka_unit_test(test_malformed_requests_get_400_and_close),
        cmocka_unit_test(test_http10_head_expect_and_corr_id_follow_the_rules),
        cmocka_unit_test(test_streamed_response_to_slow_reader_is_bounded_by_backpressure),
        cmocka_unit_test(test_streamed_response_without_length_is_chunked),
        cmocka_unit_test(test_streamed_response_to_http10_is_delimited_by_close),
        cmocka_unit_test(test_client_that_stops_reading_is_closed_and_the_stream_released),
        cmocka_unit_test(test_listener_adopts_an_already_bound_fd),
        cmocka_unit_test(test_queued_chunks_of_pipelined_stream_get_eclosed_once_when_client_resets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
