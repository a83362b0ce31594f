/*
 * test_ron_transport_h2.c - HTTP/2 streams through the real server and
 * handler API, with an nghttp2 client session on the other end of a
 * socketpair that the server adopts as a cleartext connection (h2c by
 * prior knowledge). Pins what the wire tests cannot see: the SETTINGS the
 * server advertises, the streaming contract (done callbacks never run inside
 * the application's own tx_respond_write, each runs once, with 0), and that
 * a stream the client resets makes the held request answer RON_ECLOSED.
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "ron_err.h"
#include "ron_transport.h"
#include "tx_internal.h"

#define PIECES 40
#define PIECE (4u << 10)
#define BIG (1u << 20) /* /big: one write, four times the connection's write queue bound */

static uint8_t fx_big[BIG];
static int fx_sndbuf; /* != 0: SO_SNDBUF of the server's end (a socket that takes it all) */

typedef struct {
    uv_loop_t loop;
    tx_server_t *srv;
    int fd;                       /* the client's end */
    nghttp2_session *cli;
    /* server side */
    tx_request_t *held;
    tx_request_t *streaming;
    uv_timer_t writer;            /* writes come from a timer, as from a storage read */
    uint8_t piece[PIECE];
    unsigned written, done_ok, done_inside;
    bool in_write;
    /* /stuck: a streamed answer the client never reads, then resets */
    tx_request_t *stuck;
    unsigned stuck_written, stuck_eagain, done_eclosed, drain_gone;
    /* /big: one large write ended from its done callback */
    tx_request_t *big;
    unsigned big_done;
    int stuck_end_rc;
    /* /up: a streamed request body, pieces released from a timer */
    tx_request_t *up;
    uv_timer_t releaser;
    uint64_t up_got;           /* body bytes seen, in order */
    size_t up_max_unconsumed;  /* held + read meanwhile: bounded by the stream window */
    unsigned up_pieces, up_end, up_abort, up_bad;
    /* client side */
    uint64_t send_left;        /* POST body bytes the client has not sent yet */
    uint64_t send_off;
    uint64_t send_stall;       /* != 0: the client stops sending at this offset */
    int last_abort;
    int status;
    size_t got;
    bool closed;
    uint32_t close_code;
} fx_t;

static void
fx_done(int status, void *arg)
{
    fx_t *f = arg;

    if (f->in_write)
        f->done_inside++;
    if (status == 0)
        f->done_ok++;
    else if (status == RON_ECLOSED)
        f->done_eclosed++;
}

static void
fx_drain(tx_request_t *req, void *arg)
{
    (void)req, (void)arg; /* the writer timer retries */
}

static void
fx_write_more(uv_timer_t *t)
{
    fx_t *f = t->data;
    tx_request_t *req = f->streaming;

    while (f->written < PIECES) {
        f->in_write = true;
        int rc = tx_respond_write(req, f->piece, PIECE, fx_done, f);
        f->in_write = false;
        if (rc == RON_EAGAIN)
            return;
        assert_int_equal(rc, 0);
        f->written++;
    }
    assert_int_equal(tx_respond_end(req), 0);
    uv_timer_stop(t);
}

static void fx_stuck_drain(tx_request_t *req, void *arg);

static void
fx_big_done(int status, void *arg)
{
    fx_t *f = arg;

    assert_int_equal(status, 0);
    f->big_done++;
    assert_int_equal(tx_respond_end(f->big), 0);
    f->big = NULL;
}

static void
fx_release(uv_timer_t *t)
{
    fx_t *f = t->data;

    if (f->up == NULL)
        return; /* aborted meanwhile */
    size_t unconsumed = f->up->body.len + f->up->piece.len;

    if (unconsumed > f->up_max_unconsumed)
        f->up_max_unconsumed = unconsumed;
    assert_int_equal(tx_request_body_release(f->up), 0);
    assert_int_equal(tx_request_body_release(f->up), RON_EINVAL); /* nothing held now */
}

static void
fx_body(tx_request_t *req, const uint8_t *data, size_t len, int status, void *arg)
{
    fx_t *f = arg;

    if (status < 0) {
        f->up_abort++;
        f->last_abort = status;
        (void)tx_respond_error(req, 400, NULL, NULL, 0);
        f->up = NULL;
        return;
    }
    if (len == 0) {
        f->up_end++;
        assert_int_equal(tx_respond(req, 201, NULL, 0, "ok", 2), 0);
        f->up = NULL;
        return;
    }
    for (size_t i = 0; i < len; i++)
        if (data[i] != (uint8_t)((f->up_got + i) * 7))
            f->up_bad++;
    f->up_got += len;
    f->up_pieces++;
    uv_timer_start(&f->releaser, fx_release, 1, 0); /* the app holds it for a while */
}

static void
fx_hook(tx_request_t *req, void *arg)
{
    const char *p = tx_request_view(req)->path;

    if (strcmp(p, "/up") == 0 || strcmp(p, "/early") == 0)
        assert_int_equal(tx_request_stream_body(req, fx_body, arg, 0), 0);
}
static void fx_stuck_fill(fx_t *f, tx_request_t *req);

static void
fx_handler(tx_request_t *req, void *arg)
{
    fx_t *f = arg;
    const tx_request_view_t *v = tx_request_view(req);

    assert_int_equal(v->http_major, 2);
    assert_string_equal(tx_request_header(req, "host"), "example");
    if (strcmp(v->path, "/stream") == 0) {
        assert_int_equal(tx_respond_start(req, 200, NULL, 0, (int64_t)PIECES * PIECE, fx_drain, f),
                         0);
        f->streaming = req;
        uv_timer_start(&f->writer, fx_write_more, 0, 1);
    } else if (strcmp(v->path, "/big") == 0) {
        assert_int_equal(tx_respond_start(req, 200, NULL, 0, BIG, fx_drain, f), 0);
        f->big = req;
        assert_int_equal(tx_respond_write(req, fx_big, BIG, fx_big_done, f), 0);
    } else if (strcmp(v->path, "/early") == 0) {
        assert_int_equal(tx_respond(req, 409, NULL, 0, "no", 2), 0); /* before the body */
    } else if (strcmp(v->path, "/up") == 0) {
        assert_null(v->body); /* the body comes in pieces */
        f->up = req;
    } else if (strcmp(v->path, "/stuck") == 0) {
        assert_int_equal(tx_respond_start(req, 200, NULL, 0, -1, fx_stuck_drain, f), 0);
        f->stuck = req;
        fx_stuck_fill(f, req);
    } else {
        f->held = req; /* answered by the test */
    }
}

/* Write pieces until the stream's queue is full (at most 64 in all). */
static void
fx_stuck_fill(fx_t *f, tx_request_t *req)
{
    while (f->stuck_written < 64) {
        f->in_write = true;
        int rc = tx_respond_write(req, f->piece, PIECE, fx_done, f);
        f->in_write = false;
        if (rc == RON_EAGAIN) {
            f->stuck_eagain++;
            return;
        }
        if (rc == RON_ECLOSED) {
            f->in_write = true;
            f->stuck_end_rc = tx_respond_end(req);
            f->in_write = false;
            f->drain_gone++;
            f->stuck = NULL;
            return;
        }
        assert_int_equal(rc, 0);
        f->stuck_written++;
    }
}

static void
fx_stuck_drain(tx_request_t *req, void *arg)
{
    fx_stuck_fill(arg, req);
}

static ssize_t
cli_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    fx_t *f = ud;
    (void)s, (void)flags;
    ssize_t n = write(f->fd, data, len);
    return n < 0 ? NGHTTP2_ERR_WOULDBLOCK : n;
}

static int
cli_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t nlen,
           const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    fx_t *f = ud;
    (void)s, (void)fr, (void)flags;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0)
        f->status = atoi((const char *)value) + 0 * (int)vlen;
    return 0;
}

static int
cli_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len, void *ud)
{
    fx_t *f = ud;
    (void)s, (void)flags, (void)id, (void)d;
    f->got += len;
    return 0;
}

static int
cli_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    fx_t *f = ud;
    (void)s, (void)id;
    f->closed = true;
    f->close_code = code;
    return 0;
}

static void
fx_setup(fx_t *f)
{
    int sv[2];
    struct sockaddr_storage peer = {0};
    nghttp2_session_callbacks *cb;

    memset(f, 0, sizeof *f);
    memset(f->piece, 'p', sizeof f->piece);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->writer);
    f->writer.data = f;
    uv_timer_init(&f->loop, &f->releaser);
    f->releaser.data = f;
    f->srv = tx_server_new(&f->loop, NULL, fx_handler, f);
    tx_server_set_head_hook(f->srv, fx_hook, f);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    if (fx_sndbuf != 0)
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &fx_sndbuf, sizeof fx_sndbuf), 0);
    ((struct sockaddr_in *)&peer)->sin_family = AF_INET;
    ((struct sockaddr_in *)&peer)->sin_addr.s_addr = htonl(0x7f000001);
    assert_int_equal(tx__conn_adopt(f->srv, sv[0], &peer), 0);
    f->fd = sv[1];
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, cli_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, cli_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cli_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cli_close);
    assert_int_equal(nghttp2_session_client_new(&f->cli, cb, f), 0);
    nghttp2_session_callbacks_del(cb);
    assert_int_equal(nghttp2_submit_settings(f->cli, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

static int32_t
fx_get(fx_t *f, const char *path)
{
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":authority", (uint8_t *)"example", 10, 7, 0},
    };
    int32_t id = nghttp2_submit_request(f->cli, NULL, nv, 4, NULL, NULL);
    assert_true(id > 0);
    return id;
}

/* Run loop and client until done(f) or a bounded number of turns. */
static void
fx_run(fx_t *f, bool (*done)(fx_t *f), bool read_client)
{
    uint8_t buf[65536];

    for (int i = 0; i < 5000 && !done(f); i++) {
        assert_int_equal(nghttp2_session_send(f->cli), 0);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        ssize_t n;
        while (read_client && (n = read(f->fd, buf, sizeof buf)) > 0)
            assert_int_equal(nghttp2_session_mem_recv(f->cli, buf, (size_t)n), n);
        usleep(200);
    }
}

static ssize_t
cli_body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
              nghttp2_data_source *src, void *ud)
{
    fx_t *f = ud;
    size_t n = f->send_left < len ? (size_t)f->send_left : len;

    (void)s, (void)id, (void)src;
    if (f->send_stall != 0 && f->send_off + n > f->send_stall)
        n = (size_t)(f->send_stall - f->send_off);
    if (n == 0)
        return NGHTTP2_ERR_DEFERRED; /* a stalled client */
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)((f->send_off + i) * 7);
    f->send_off += n;
    f->send_left -= n;
    if (f->send_left == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* POST path with a body of len bytes (byte i is i * 7), sent as the windows allow. */
static int32_t
fx_post(fx_t *f, const char *path, uint64_t len)
{
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":authority", (uint8_t *)"example", 10, 7, 0},
    };
    nghttp2_data_provider prd = {.read_callback = cli_body_read};
    f->send_left = len;
    f->send_off = 0;
    int32_t id = nghttp2_submit_request(f->cli, NULL, nv, 4, &prd, NULL);
    assert_true(id > 0);
    return id;
}

static void
fx_teardown(fx_t *f)
{
    close(f->fd);
    nghttp2_session_del(f->cli);
    tx_server_close(f->srv, NULL, NULL);
    uv_close((uv_handle_t *)&f->writer, NULL);
    uv_close((uv_handle_t *)&f->releaser, NULL);
    for (int i = 0; i < 100; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static bool
fx_stream_closed(fx_t *f)
{
    return f->closed;
}

static void
test_h2_stream_streams_a_body_with_deferred_done_callbacks(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    fx_get(f, "/stream");
    fx_run(f, fx_stream_closed, true);
    assert_true(f->closed);
    assert_int_equal(f->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(f->status, 200);
    assert_int_equal(f->got, (size_t)PIECES * PIECE);
    assert_int_equal(f->written, PIECES);
    assert_int_equal(f->done_ok, PIECES);   /* each once, with 0 */
    assert_int_equal(f->done_inside, 0);    /* never inside tx_respond_write */
    /* what the server advertised */
    assert_int_equal(nghttp2_session_get_remote_settings(f->cli,
                         NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), TX_DEFAULT_H2_MAX_STREAMS);
    assert_int_equal(nghttp2_session_get_remote_settings(f->cli,
                         NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE), TX_DEFAULT_MAX_HEADER_BYTES);
    const tx_stats_t *st = tx_server_stats(f->srv);
    assert_int_equal(st->h2_conns, 1);
    assert_int_equal(st->h2_streams, 1);
    fx_teardown(f);
    free(f);
}

/* The socket takes each batch of frames whole (no write request, so no
 * completion to resume framing) and the client, with a 1 GiB window, never
 * speaks again: the server must go on framing by itself. */
static void
test_h2_large_streamed_write_completes_when_the_socket_takes_every_batch(void **state)
{
    fx_t *f = malloc(sizeof *f);
    nghttp2_settings_entry win = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 30};

    (void)state;
    fx_sndbuf = 4 << 20;
    fx_setup(f);
    fx_sndbuf = 0;
    assert_int_equal(nghttp2_submit_settings(f->cli, NGHTTP2_FLAG_NONE, &win, 1), 0);
    assert_int_equal(nghttp2_session_set_local_window_size(f->cli, NGHTTP2_FLAG_NONE, 0, 1 << 30),
                     0);
    for (size_t i = 0; i < BIG; i++)
        fx_big[i] = (uint8_t)(i * 13);
    fx_get(f, "/big");
    fx_run(f, fx_stream_closed, true);
    assert_true(f->closed);
    assert_int_equal(f->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(f->status, 200);
    assert_int_equal(f->got, (size_t)BIG);
    assert_int_equal(f->big_done, 1);
    fx_teardown(f);
    free(f);
}

static bool
fx_held(fx_t *f)
{
    return f->held != NULL;
}

static bool
fx_inflight_zero(fx_t *f)
{
    return tx_server_stats(f->srv)->inflight == 0;
}

static void
test_h2_stream_reset_by_client_answers_eclosed_and_frees_the_slot(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    int32_t id = fx_get(f, "/hold");
    fx_run(f, fx_held, true);
    assert_non_null(f->held);
    assert_int_equal(tx_server_stats(f->srv)->inflight, 1);
    assert_int_equal(nghttp2_submit_rst_stream(f->cli, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL), 0);
    fx_run(f, fx_inflight_zero, true);
    assert_int_equal(tx_server_stats(f->srv)->inflight, 0);
    assert_int_equal(tx_respond(f->held, 200, NULL, 0, "late", 4), RON_ECLOSED);
    fx_teardown(f);
    free(f);
}

static bool
fx_stuck_full(fx_t *f)
{
    return f->stuck != NULL && f->stuck_eagain > 0 && f->done_ok > 0;
}

static bool
fx_stuck_gone(fx_t *f)
{
    return f->drain_gone > 0 && f->done_ok + f->done_eclosed == f->stuck_written;
}

static void
test_h2_stream_reset_runs_queued_done_callbacks_with_eclosed_and_drain_once(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    int32_t id = fx_get(f, "/stuck");
    /* the client reads nothing: its 64 KiB window admits part, the rest stays queued */
    fx_run(f, fx_stuck_full, false);
    assert_true(fx_stuck_full(f));
    assert_true(f->done_ok < f->stuck_written);
    assert_int_equal(nghttp2_submit_rst_stream(f->cli, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL), 0);
    fx_run(f, fx_stuck_gone, false);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT); /* nothing more may come */
    assert_int_equal(f->drain_gone, 1);  /* the open answer learned it once */
    assert_null(f->stuck);
    assert_int_equal(f->stuck_end_rc, RON_ECLOSED);
    assert_true(f->done_eclosed > 0);
    assert_int_equal(f->done_ok + f->done_eclosed, f->stuck_written); /* each chunk once */
    assert_int_equal(f->done_inside, 0); /* never inside our own tx_respond_* call */
    assert_int_equal(tx_server_stats(f->srv)->inflight, 0);
    fx_teardown(f);
    free(f);
}

static void
fx_server_closed(void *arg)
{
    fx_t *f = arg;

    /* what the closed connection left due ran before the server's close callback */
    assert_int_equal(f->drain_gone, 1);
    assert_int_equal(f->done_ok + f->done_eclosed, f->stuck_written);
    f->srv = NULL;
}

static void
test_server_close_tells_an_open_h2_streamed_answer_before_its_callback(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    fx_get(f, "/stuck");
    fx_run(f, fx_stuck_full, false);
    assert_true(fx_stuck_full(f));
    assert_int_equal(f->drain_gone, 0);
    tx_server_close(f->srv, fx_server_closed, f);
    assert_int_equal(f->drain_gone, 0);  /* not inside tx_server_close */
    assert_int_equal(f->done_eclosed, 0);
    uv_close((uv_handle_t *)&f->writer, NULL);
    uv_close((uv_handle_t *)&f->releaser, NULL);
    for (int i = 0; i < 100 && f->srv != NULL; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_null(f->srv);
    assert_null(f->stuck);
    assert_true(f->done_eclosed > 0);
    assert_int_equal(f->done_inside, 0);
    close(f->fd);
    nghttp2_session_del(f->cli);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
}

static void
test_h2_streamed_request_body_arrives_in_order_within_its_stream_window(void **state)
{
    fx_t *f = malloc(sizeof *f);
    const uint64_t total = 1u << 20;

    (void)state;
    fx_setup(f);
    fx_post(f, "/up", total);
    fx_run(f, fx_stream_closed, true);
    assert_true(f->closed);
    assert_int_equal(f->status, 201);
    assert_int_equal(f->up_end, 1);      /* the end, once */
    assert_int_equal(f->up_abort, 0);
    assert_int_equal(f->up_got, total);  /* the pieces sum to the body ... */
    assert_int_equal(f->up_bad, 0);      /* ... in order */
    assert_true(f->up_pieces > 1);
    /* a held piece holds the stream's window back: the client could not push more */
    assert_true(f->up_max_unconsumed <= TX_STREAM_PIECE_MAX);
    assert_int_equal(tx_server_stats(f->srv)->inflight, 0);
    fx_teardown(f);
    free(f);
}

static void
test_h2_streamed_request_body_reset_by_client_aborts_once(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    int32_t id = fx_post(f, "/up", 64u << 20); /* far more than will be sent */
    for (int i = 0; i < 5000 && f->up_pieces < 3; i++) {
        assert_int_equal(nghttp2_session_send(f->cli), 0);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        uint8_t buf[4096];
        ssize_t n;
        while ((n = read(f->fd, buf, sizeof buf)) > 0)
            assert_int_equal(nghttp2_session_mem_recv(f->cli, buf, (size_t)n), n);
        usleep(200);
    }
    assert_true(f->up_pieces >= 3);
    assert_int_equal(nghttp2_submit_rst_stream(f->cli, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL), 0);
    fx_run(f, fx_inflight_zero, true);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->up_abort, 1); /* once, and no end */
    assert_int_equal(f->up_end, 0);
    assert_null(f->up);
    fx_teardown(f);
    free(f);
}

static void
test_h2_answer_before_the_streamed_body_ends_resets_the_stream_without_events(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    fx_post(f, "/early", 8u << 20);
    fx_run(f, fx_stream_closed, true);
    assert_true(f->closed);
    assert_int_equal(f->status, 409);
    assert_int_equal(f->close_code, NGHTTP2_NO_ERROR); /* RST_STREAM NO_ERROR after the answer */
    assert_true(f->send_left > 0);                     /* the rest was not wanted */
    assert_int_equal(f->up_pieces + f->up_end + f->up_abort, 0);
    assert_int_equal(tx_server_stats(f->srv)->inflight, 0);
    fx_teardown(f);
    free(f);
}

static void
test_h2_stalled_streamed_body_times_out_that_stream_only(void **state)
{
    fx_t *f = malloc(sizeof *f);

    (void)state;
    fx_setup(f);
    f->srv->lim.cfg.stream_idle_ms = 100;
    f->send_stall = 20000;
    fx_post(f, "/up", 1u << 20);
    fx_run(f, fx_stream_closed, true);
    assert_true(f->closed);
    assert_int_equal(f->up_abort, 1);
    assert_int_equal(f->last_abort, RON_ETIMEOUT);
    assert_int_equal(f->up_got, 20000);
    assert_int_equal(f->status, 400); /* the app's answer to the abort */
    assert_int_equal(tx_server_stats(f->srv)->rejects[TX_REJECT_BODY_TIMEOUT], 1);
    /* the connection itself goes on: another stream is served */
    f->closed = false;
    f->status = 0;
    fx_get(f, "/stream");
    fx_run(f, fx_stream_closed, true);
    assert_int_equal(f->status, 200);
    fx_teardown(f);
    free(f);
}

static void
test_h2_disabled_server_answers_the_preface_as_http1(void **state)
{
    uv_loop_t loop;
    tx_config_t cfg;
    int sv[2];
    struct sockaddr_storage peer = {0};
    char buf[4096];
    size_t got = 0;

    (void)state;
    tx_config_default(&cfg);
    cfg.h2_disabled = true;
    assert_int_equal(uv_loop_init(&loop), 0);
    tx_server_t *srv = tx_server_new(&loop, &cfg, fx_handler, NULL);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    ((struct sockaddr_in *)&peer)->sin_family = AF_INET;
    assert_int_equal(tx__conn_adopt(srv, sv[0], &peer), 0);
    assert_int_equal(write(sv[1], "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24), 24);
    for (int i = 0; i < 2000 && got < 12; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t n = read(sv[1], buf + got, sizeof buf - 1 - got);
        if (n > 0)
            got += (size_t)n;
        usleep(200);
    }
    buf[got] = '\0';
    assert_true(strncmp(buf, "HTTP/1.1 ", 9) == 0); /* http-parser's refusal, not SETTINGS */
    assert_int_equal(tx_server_stats(srv)->h2_conns, 0);
    close(sv[1]);
    tx_server_close(srv, NULL, NULL);
    for (int i = 0; i < 100; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h2_stream_streams_a_body_with_deferred_done_callbacks),
        cmocka_unit_test(test_h2_stream_reset_by_client_answers_eclosed_and_frees_the_slot),
        cmocka_unit_test(test_h2_stream_reset_runs_queued_done_callbacks_with_eclosed_and_drain_once),
        cmocka_unit_test(test_server_close_tells_an_open_h2_streamed_answer_before_its_callback),
        cmocka_unit_test(test_h2_streamed_request_body_arrives_in_order_within_its_stream_window),
        cmocka_unit_test(test_h2_streamed_request_body_reset_by_client_aborts_once),
        cmocka_unit_test(test_h2_answer_before_the_streamed_body_ends_resets_the_stream_without_events),
        cmocka_unit_test(test_h2_stalled_streamed_body_times_out_that_stream_only),
        cmocka_unit_test(test_h2_disabled_server_answers_the_preface_as_http1),
        cmocka_unit_test(test_h2_large_streamed_write_completes_when_the_socket_takes_every_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
