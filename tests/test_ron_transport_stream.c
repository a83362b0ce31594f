/*
 * test_ron_transport_stream.c - streamed request bodies over HTTP/1.1 on
 * real loopback sockets: the server runs on a libuv loop in the test's
 * thread with a head hook that streams /up, /capped and /early; each
 * scenario's client runs in a second thread with blocking sockets (receive
 * timeouts bound every wait). The application holds each piece for a
 * millisecond before releasing it, so reading must pause meanwhile. Body
 * byte i is (i * 7) mod 256, so order is checked byte by byte. Every loop
 * test ends with uv_loop_close() == 0. (HTTP/2 streamed bodies:
 * test_ron_transport_h2.c.)
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
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ron_err.h"
#include "ron_transport.h"
#include "tx_internal.h"

#define FX_CAP (1u << 20) /* /capped: max_bytes */

typedef struct fx fx_t;
typedef void (*fx_client_fn)(fx_t *f);

struct fx {
    uv_loop_t loop;
    uv_async_t done;
    uv_thread_t thread;
    uv_timer_t releaser;
    tx_server_t *srv;
    uint16_t port;
    fx_client_fn client;
    /* server side (loop thread; the client reads aborts with __atomic) */
    tx_request_t *up;      /* the streamed request whose piece is held */
    uint64_t got;          /* body bytes of the current request */
    uint64_t bad;          /* bytes out of order */
    size_t max_buffered;   /* piece + bytes read meanwhile + input held back */
    unsigned pieces, ends, aborts;
    int last_abort;
    /* client results */
    int ok;
    char note[256];
};

static tx_stats_t fx_stats;

static void
fx_release(uv_timer_t *t)
{
    fx_t *f = t->data;
    tx_request_t *r = f->up;

    if (r == NULL)
        return;
    f->up = NULL;
    assert_int_equal(tx_request_body_release(r), 0);
}

static void
fx_body(tx_request_t *req, const uint8_t *data, size_t len, int status, void *arg)
{
    fx_t *f = arg;
    char msg[64];

    if (status < 0) {
        __atomic_fetch_add(&f->aborts, 1, __ATOMIC_SEQ_CST);
        f->last_abort = status;
        f->up = NULL;
        (void)tx_respond_error(req, status == RON_ETOOBIG    ? 413
                                    : status == RON_ETIMEOUT ? 408
                                    : status == RON_EPROTO   ? 400
                                                             : 500,
                               NULL, "body", 0);
        return;
    }
    if (len == 0) {
        f->ends++;
        int n = snprintf(msg, sizeof msg, "got=%llu bad=%llu", (unsigned long long)f->got,
                         (unsigned long long)f->bad);
        assert_int_equal(tx_respond(req, 201, NULL, 0, msg, (size_t)n), 0);
        f->got = f->bad = 0;
        return;
    }
    for (size_t i = 0; i < len; i++)
        if (data[i] != (uint8_t)((f->got + i) * 7))
            f->bad++;
    f->got += len;
    f->pieces++;
    size_t buffered = req->piece.len + req->body.len + (req->conn ? req->conn->pending.len : 0);
    if (buffered > f->max_buffered)
        f->max_buffered = buffered;
    assert_true(len <= TX_STREAM_PIECE_MAX);
    f->up = req;
    uv_timer_start(&f->releaser, fx_release, 1, 0); /* held for a while */
}

static void
fx_hook(tx_request_t *req, void *arg)
{
    const char *p = tx_request_view(req)->path;

    if (strcmp(p, "/up") == 0 || strcmp(p, "/early") == 0)
        (void)tx_request_stream_body(req, fx_body, arg, 0);
    else if (strcmp(p, "/capped") == 0)
        (void)tx_request_stream_body(req, fx_body, arg, FX_CAP);
}

static void
fx_handler(tx_request_t *req, void *arg)
{
    const tx_request_view_t *v = tx_request_view(req);
    char msg[64];

    (void)arg;
    if (strcmp(v->path, "/early") == 0) {
        (void)tx_respond_error(req, 409, "refused before the body", "early", 0);
    } else if (strcmp(v->path, "/up") == 0 || strcmp(v->path, "/capped") == 0) {
        assert_null(v->body); /* streamed: the body comes to fx_body */
    } else {
        int n = snprintf(msg, sizeof msg, "buffered=%zu", v->body_len);
        (void)tx_respond(req, 200, NULL, 0, msg, (size_t)n);
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

    fx_stats = *tx_server_stats(f->srv);
    tx_server_close(f->srv, NULL, NULL);
    uv_close((uv_handle_t *)&f->done, NULL);
    uv_close((uv_handle_t *)&f->releaser, NULL);
}

static void
fx_run(fx_t *f, uint32_t stream_idle_ms, fx_client_fn client)
{
    tx_listener_t *l;
    tx_config_t cfg;

    tx_config_default(&cfg);
    cfg.stream_idle_ms = stream_idle_ms;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(tx_listener_bind(&f->loop, "127.0.0.1:0", &l), 0);
    f->port = tx_listener_port(l);
    f->srv = tx_server_new(&f->loop, &cfg, fx_handler, f);
    tx_server_set_head_hook(f->srv, fx_hook, f);
    assert_int_equal(tx_server_attach(f->srv, l), 0);
    uv_async_init(&f->loop, &f->done, fx_on_done);
    f->done.data = f;
    uv_timer_init(&f->loop, &f->releaser);
    f->releaser.data = f;
    f->client = client;
    assert_int_equal(uv_thread_create(&f->thread, fx_client_thread, f), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_thread_join(&f->thread);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (!f->ok)
        fail_msg("client: %s", f->note);
}

/* ---- blocking client (client thread) ---- */

#define CL_CHECK(f, cond)                                                                       \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            snprintf((f)->note, sizeof(f)->note, "line %d: %s", __LINE__, #cond);               \
            (f)->ok = 0;                                                                        \
            goto out;                                                                           \
        }                                                                                       \
    } while (0)

static int
cl_connect(fx_t *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(f->port)};

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
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

/* Send len body bytes of the pattern starting at offset off. */
static int
cl_send_pattern(int fd, uint64_t off, uint64_t len)
{
    static uint8_t buf[256 << 10];
    while (len > 0) {
        size_t n = len < sizeof buf ? (size_t)len : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)((off + i) * 7);
        if (cl_send(fd, buf, n) < 0)
            return -1;
        off += n;
        len -= n;
    }
    return 0;
}

/* One response (head + Content-Length body) into buf; returns its status or -1. */
static int
cl_read_response(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    char *end = NULL;

    while (end == NULL) {
        if (len + 1 >= cap)
            return -1;
        ssize_t n = recv(fd, buf + len, 1, 0);
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
    return atoi(buf + 9);
}

static bool
cl_sees_close(int fd)
{
    char b[4096];
    for (int i = 0; i < 4096; i++) {
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

/* ---- scenarios ---- */

#define BIG (64ull << 20)

static void
cl_big_then_keepalive(fx_t *f)
{
    char buf[4096], head[128];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    snprintf(head, sizeof head, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %llu\r\n\r\n",
             (unsigned long long)BIG);
    CL_CHECK(f, cl_sends(fd, head) == 0);
    CL_CHECK(f, cl_send_pattern(fd, 0, BIG) == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 201);
    CL_CHECK(f, strcmp(body_of(buf), "got=67108864 bad=0") == 0);
    CL_CHECK(f, strstr(buf, "Connection: close") == NULL);
    /* the connection serves the next request as usual */
    CL_CHECK(f, cl_sends(fd, "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 200);
    CL_CHECK(f, strcmp(body_of(buf), "buffered=3") == 0);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_streamed_body_of_64mib_arrives_in_order_with_bounded_buffering(void **state)
{
    fx_t f = {0};

    (void)state;
    fx_run(&f, 0, cl_big_then_keepalive);
    assert_int_equal(f.ends, 1);
    assert_int_equal(f.aborts, 0);
    assert_true(f.pieces > 64);
    /* the client pushed 64 MiB; the server held at most a few reads of it */
    assert_true(f.max_buffered <= 2 * TX_STREAM_PIECE_MAX);
    assert_true(fx_stats.read_pauses > 0);
}

static void
cl_chunked_and_pipelined(fx_t *f)
{
    char buf[4096], line[32];
    int fd = cl_connect(f);
    uint64_t off = 0;

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    for (size_t n = 1; n < 300000; n = n * 3 + 7) {
        snprintf(line, sizeof line, "%zx\r\n", n);
        CL_CHECK(f, cl_sends(fd, line) == 0);
        CL_CHECK(f, cl_send_pattern(fd, off, n) == 0);
        CL_CHECK(f, cl_sends(fd, "\r\n") == 0);
        off += n;
    }
    CL_CHECK(f, cl_sends(fd, "0\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 201);
    snprintf(line, sizeof line, "got=%llu bad=0", (unsigned long long)off);
    CL_CHECK(f, strcmp(body_of(buf), line) == 0);
    /* a small streamed request and a buffered one behind it, in one write */
    const char two[] = "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
                       "\x00\x07\x0e\x15\x1c"
                       "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";
    CL_CHECK(f, cl_send(fd, two, sizeof two - 1) == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 201);
    CL_CHECK(f, strcmp(body_of(buf), "got=5 bad=0") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 200);
    CL_CHECK(f, strcmp(body_of(buf), "buffered=2") == 0);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_chunked_streamed_body_and_pipelined_request_after_it(void **state)
{
    fx_t f = {0};

    (void)state;
    fx_run(&f, 0, cl_chunked_and_pipelined);
    assert_int_equal(f.ends, 2);
    assert_int_equal(f.aborts, 0);
    assert_int_equal(fx_stats.conns_accepted, 1);
}

static void
cl_over_cap(fx_t *f)
{
    char buf[4096], head[160];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    /* chunked: the cap is found mid-body; the app hears RON_ETOOBIG and answers 413 */
    CL_CHECK(f, cl_sends(fd, "POST /capped HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    snprintf(head, sizeof head, "%x\r\n", FX_CAP + 1);
    CL_CHECK(f, cl_sends(fd, head) == 0);
    (void)cl_send_pattern(fd, 0, FX_CAP + 1); /* the server may close before all of it */
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 413);
    CL_CHECK(f, strstr(buf, "Connection: close") != NULL);
    CL_CHECK(f, cl_sees_close(fd));
    close(fd);
    /* a Content-Length over the cap: the server answers 413 before any body */
    fd = cl_connect(f);
    CL_CHECK(f, fd >= 0);
    snprintf(head, sizeof head, "POST /capped HTTP/1.1\r\nHost: t\r\nContent-Length: %u\r\n\r\n",
             FX_CAP + 1);
    CL_CHECK(f, cl_sends(fd, head) == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 413);
    CL_CHECK(f, strstr(buf, "content_length") != NULL);
    close(fd);
    /* Content-Encoding on a streamed body: 415 */
    fd = cl_connect(f);
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
                             "Content-Length: 4\r\n\r\nabcd") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 415);
    /* but under the cap the body streams; over the 1 MiB buffered cap is fine too */
    close(fd);
    fd = cl_connect(f);
    CL_CHECK(f, fd >= 0);
    snprintf(head, sizeof head, "POST /capped HTTP/1.1\r\nHost: t\r\nContent-Length: %u\r\n\r\n",
             FX_CAP);
    CL_CHECK(f, cl_sends(fd, head) == 0);
    CL_CHECK(f, cl_send_pattern(fd, 0, FX_CAP) == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 201);
out:
    if (fd >= 0)
        close(fd);
}

static void
test_streamed_body_past_its_cap_gets_413_and_encoded_one_415(void **state)
{
    fx_t f = {0};

    (void)state;
    fx_run(&f, 0, cl_over_cap);
    assert_int_equal(f.aborts, 1);
    assert_int_equal(f.last_abort, RON_ETOOBIG);
    assert_int_equal(f.ends, 1);
    assert_int_equal(fx_stats.rejects[TX_REJECT_BODY_TOO_LARGE], 2);
    assert_int_equal(fx_stats.rejects[TX_REJECT_BAD_ENCODING], 1);
}

static void
cl_stall(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n") == 0);
    CL_CHECK(f, cl_send_pattern(fd, 0, 100) == 0);
    /* then nothing: the idle timeout (200 ms) cuts it, the app answers 408 */
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 408);
    CL_CHECK(f, strstr(buf, "Connection: close") != NULL);
    CL_CHECK(f, cl_sees_close(fd));
out:
    if (fd >= 0)
        close(fd);
}

static void
test_stalled_streamed_body_gets_408_after_its_idle_timeout(void **state)
{
    fx_t f = {0};

    (void)state;
    fx_run(&f, 200, cl_stall);
    assert_int_equal(f.aborts, 1);
    assert_int_equal(f.last_abort, RON_ETIMEOUT);
    assert_int_equal(f.ends, 0);
    assert_int_equal(fx_stats.rejects[TX_REJECT_BODY_TIMEOUT], 1);
}

static void
cl_disconnect(fx_t *f)
{
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 8388608\r\n\r\n") == 0);
    CL_CHECK(f, cl_send_pattern(fd, 0, 300000) == 0);
    close(fd);
    fd = -1;
    /* the server tells the app once; wait for it (bounded) */
    for (int i = 0; i < 3000 && __atomic_load_n(&f->aborts, __ATOMIC_SEQ_CST) == 0; i++)
        usleep(1000);
    usleep(50000); /* and nothing more comes */
out:
    if (fd >= 0)
        close(fd);
}

static void
test_client_gone_mid_body_aborts_once(void **state)
{
    fx_t f = {0};

    (void)state;
    fx_run(&f, 0, cl_disconnect);
    assert_int_equal(f.aborts, 1);
    assert_int_equal(f.last_abort, RON_ECLOSED);
    assert_int_equal(f.ends, 0);
    assert_int_equal(fx_stats.inflight, 0);
}

static void
cl_early_answer(fx_t *f)
{
    char buf[4096];
    int fd = cl_connect(f);

    f->ok = 1;
    CL_CHECK(f, fd >= 0);
    CL_CHECK(f, cl_sends(fd, "POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\n\r\n") == 0);
    CL_CHECK(f, cl_read_response(fd, buf, sizeof buf) == 409);
    CL_CHECK(f, strstr(buf, "Connection: close") != NULL);
    (void)cl_send_pattern(fd, 0, 65536); /* the rest is not read */
    CL_CHECK(f, cl_sees_close(fd));
out:
    if (fd >= 0)
        close(fd);
}

static void
test_answer_before_the_body_ends_closes_after_it(void **state)
{
    fx_t f = {0};

    (void)state;
    fx_run(&f, 0, cl_early_answer);
    assert_int_equal(f.aborts, 0); /* answered: no events after that */
    assert_int_equal(f.ends, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streamed_body_of_64mib_arrives_in_order_with_bounded_buffering),
        cmocka_unit_test(test_chunked_streamed_body_and_pipelined_request_after_it),
        cmocka_unit_test(test_streamed_body_past_its_cap_gets_413_and_encoded_one_415),
        cmocka_unit_test(test_stalled_streamed_body_gets_408_after_its_idle_timeout),
        cmocka_unit_test(test_client_gone_mid_body_aborts_once),
        cmocka_unit_test(test_answer_before_the_body_ends_closes_after_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
