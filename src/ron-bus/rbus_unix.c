/*
 * rbus_unix.c - ron-bus Unix-socket transport (macronode): listen on
 * "<dir>/<name>.sock" (mode 0600 inside a 0700 directory), accept with the
 * peer's SO_PEERCRED, connect, and move OAP/1 frames over uv_pipe_t.
 *
 * Reads go straight into the oap decoder's buffer (no copy); frames are
 * dispatched as they complete. While a large frame is half read, the next
 * read asks for the rest of it at once (not 64 KiB at a time), so a bulk
 * frame (storage's 256 KiB fetch answers, a get's chunks) costs a read or
 * two, not one per 64 KiB. Writes try uv_try_write first and queue only
 * what the socket did not take, so q_bytes/q_frames count exactly the bytes
 * waiting in user space; the socket's send buffer is raised to
 * UNIX_SNDBUF (the kernel's default, about 208 KiB, is smaller than one such
 * frame, so most bulk frames were copied into a queued write and finished
 * after a poll round). An owned answer (rbus_respond_owned) goes out from
 * the sender's block, its header written into the block's headroom, and
 * what the socket does not take waits in that block (no copy either).
 *
 * Large frames are handed over instead of copied out (rbus_frame_take):
 * a read asks for at most OAP_CHUNK, or for exactly the rest of a larger
 * frame whose header is in, so a large frame's last read ends with it,
 * so once delivered it is the last thing in the decoder's buffer, and the
 * taker gets that buffer (the decoder starts a new one). After a take the
 * next frame's header is read alone (38 bytes) into a buffer sized for a
 * frame like the last one, so a stream of bulk frames (storage's fetch
 * answers from the overlay) each arrive in their own block, copied by
 * nobody. Invariants: a connection is freed only in its uv_close callback,
 * which reports the loss to the core if still attached.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rbus_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"
#include "ron_util.h"

typedef struct {
    rbus_conn_t base;
    uv_pipe_t pipe;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    oap_decoder_t dec;
    int lost_rc;          /* why the connection closed, for the core */
    bool closing;
    bool corked;          /* inside a read callback: small frames gather in obuf */
    uint32_t nwrites;     /* uv_write requests in flight */
    uint8_t *obuf;        /* corked frames, written in one go when the read callback ends */
    size_t olen, ocap;
    uint32_t oframes;
    size_t bulk_len;      /* wire length of the last frame taken (0: none, or a later one was not) */
} unix_conn_t;

typedef struct {
    uv_write_t req;
    unix_conn_t *conn;
    size_t len;
    uint32_t frames;
    void *own;     /* the sender's block the bytes lie in (send_owned), or NULL: data[] */
    uint8_t data[];
} unix_wbuf_t;

#define UNIX_CORK_MAX ((size_t)16 * 1024) /* larger frames skip the cork buffer (no extra copy) */
/* SO_SNDBUF asked for (the kernel doubles it, and caps it at net.core.wmem_max):
 * a few bulk frames fit, so a writer rarely has to queue a copy of one */
#define UNIX_SNDBUF ((int)1024 * 1024)
/* Smallest frame handed over by rbus_frame_take: below it a copy is cheaper
 * than the fresh buffer the decoder then needs. */
#define UNIX_TAKE_MIN ((size_t)64 * 1024)

/* The connection delivering a frame on this thread right now (rbus_frame_take).
 * Thread-local: each loop runs on one thread. */
static _Thread_local unix_conn_t *deliver_unix;

static void unix_send(rbus_conn_t *c, const uint8_t hdr[static OAP_HDR_LEN], const void *payload,
                      size_t len);
static void unix_close(rbus_conn_t *c, bool flush);
static void unix_set_reading(rbus_conn_t *c, bool on);
static void unix_set_max_frame(rbus_conn_t *c, uint32_t max_frame);
static void unix_send_owned(rbus_conn_t *c, const uint8_t hdr[static OAP_HDR_LEN], void *buf,
                            uint8_t *payload, size_t len);

static const rbus_conn_ops_t unix_ops = {unix_send, unix_close, unix_set_reading, unix_set_max_frame,
                                         unix_send_owned};
_Static_assert(RBUS_HEADROOM == OAP_HDR_LEN, "RBUS_HEADROOM is the frame header");

static void
unix_closed_cb(uv_handle_t *h)
{
    unix_conn_t *u = ron_container_of(h, unix_conn_t, pipe);

    if (u->base.peer != NULL)
        rbus__conn_lost(&u->base, u->lost_rc);
    oap_decoder_close(&u->dec);
    free(u->obuf);
    free(u);
}

/* The connection failed (EOF, error): close it; the core hears in the close callback. */
static void
unix_abort(unix_conn_t *u, int rc)
{
    if (u->closing)
        return;
    u->closing = true;
    u->lost_rc = rc;
    uv_close((uv_handle_t *)&u->pipe, unix_closed_cb);
}

static void
unix_write_cb(uv_write_t *req, int status)
{
    unix_wbuf_t *w = ron_container_of(req, unix_wbuf_t, req);
    unix_conn_t *u = w->conn;

    u->base.q_bytes -= w->len;
    u->base.q_frames -= w->frames;
    u->nwrites--;
    free(w->own);
    free(w);
    if (status < 0) {
        unix_abort(u, status);
        return;
    }
    if (!u->closing && u->base.peer != NULL)
        rbus__conn_drained(&u->base);
}

/*
 * Write bufs (total bytes, frames whole frames, already counted in the send
 * queue): try the socket first when nothing is queued before them, and queue
 * what it did not take as one uv_write: a copy, or, when own (taken) is the
 * block the one buf lies in, that block itself (freed once written).
 */
static void
unix_write(unix_conn_t *u, uv_buf_t *bufs, unsigned nbufs, size_t total, uint32_t frames,
           void *own)
{
    size_t done = 0, off = 0, rest;
    unix_wbuf_t *w;
    uv_buf_t one;
    int rc;

    if (u->nwrites == 0) {
        rc = uv_try_write((uv_stream_t *)&u->pipe, bufs, nbufs);
        if (rc > 0)
            done = (size_t)rc;
    }
    if (done == total) {
        u->base.q_bytes -= total;
        u->base.q_frames -= frames;
        free(own);
        return;
    }
    u->base.q_bytes -= done;
    rest = total - done;
    if (own != NULL) {
        w = ron_xmalloc(sizeof *w);
        w->own = own;
        one = uv_buf_init(bufs[0].base + done, (unsigned)rest);
    } else {
        w = ron_xmalloc(sizeof *w + rest);
        w->own = NULL;
        for (unsigned i = 0; i < nbufs; i++) {
            size_t skip = done > bufs[i].len ? bufs[i].len : done;
            memcpy(w->data + off, bufs[i].base + skip, bufs[i].len - skip);
            off += bufs[i].len - skip;
            done -= skip;
        }
        one = uv_buf_init((char *)w->data, (unsigned)rest);
    }
    w->conn = u;
    w->len = one.len;
    w->frames = frames;
    u->nwrites++;
    rc = uv_write(&w->req, (uv_stream_t *)&u->pipe, &one, 1, unix_write_cb);
    if (rc < 0) {
        u->nwrites--;
        u->base.q_bytes -= w->len;
        u->base.q_frames -= frames;
        free(w->own);
        free(w);
        unix_abort(u, rc);
    }
}

static void
unix_flush(unix_conn_t *u)
{
    uv_buf_t b = uv_buf_init((char *)u->obuf, (unsigned)u->olen);
    size_t n = u->olen;
    uint32_t frames = u->oframes;

    if (n == 0 || u->closing)
        return;
    u->olen = 0;
    u->oframes = 0;
    unix_write(u, &b, 1, n, frames, NULL);
}

static void
unix_send(rbus_conn_t *c, const uint8_t hdr[static OAP_HDR_LEN], const void *payload, size_t len)
{
    unix_conn_t *u = ron_container_of(c, unix_conn_t, base);
    size_t total = OAP_HDR_LEN + len;
    uv_buf_t bufs[2] = {uv_buf_init((char *)hdr, OAP_HDR_LEN),
                        uv_buf_init((char *)(uintptr_t)payload, (unsigned)len)};

    if (u->closing)
        return;
    c->q_bytes += total;
    c->q_frames++;
    if (u->corked && total <= UNIX_CORK_MAX) {
        if (u->olen + total > u->ocap) {
            u->ocap = RON_MAX(u->ocap * 2, RON_MAX(u->olen + total, (size_t)4096));
            u->obuf = ron_xrealloc(u->obuf, u->ocap);
        }
        memcpy(u->obuf + u->olen, hdr, OAP_HDR_LEN);
        if (len > 0)
            memcpy(u->obuf + u->olen + OAP_HDR_LEN, payload, len);
        u->olen += total;
        u->oframes++;
        return;
    }
    unix_flush(u); /* keep frame order */
    unix_write(u, bufs, len > 0 ? 2 : 1, total, 1, NULL);
}

/* unix_send of a payload in buf (taken) with the header's room before it: a
 * large frame goes out from buf itself, and what the socket does not take
 * at once waits in buf (no copy); a small one is corked as unix_send does. */
static void
unix_send_owned(rbus_conn_t *c, const uint8_t hdr[static OAP_HDR_LEN], void *buf,
                uint8_t *payload, size_t len)
{
    unix_conn_t *u = ron_container_of(c, unix_conn_t, base);
    size_t total = OAP_HDR_LEN + len;
    uv_buf_t one;

    if (u->closing || (u->corked && total <= UNIX_CORK_MAX)) {
        unix_send(c, hdr, payload, len);
        free(buf);
        return;
    }
    memcpy(payload - OAP_HDR_LEN, hdr, OAP_HDR_LEN); /* the caller's headroom */
    one = uv_buf_init((char *)(payload - OAP_HDR_LEN), (unsigned)total);
    c->q_bytes += total;
    c->q_frames++;
    unix_flush(u); /* keep frame order */
    unix_write(u, &one, 1, total, 1, buf);
}

static void
unix_shutdown_cb(uv_shutdown_t *req, int status)
{
    unix_conn_t *u = ron_container_of(req, unix_conn_t, sreq);

    (void)status;
    uv_close((uv_handle_t *)&u->pipe, unix_closed_cb);
}

static void
unix_close(rbus_conn_t *c, bool flush)
{
    unix_conn_t *u = ron_container_of(c, unix_conn_t, base);

    if (u->closing)
        return;
    if (flush) {
        unix_flush(u);
    } else if (u->olen > 0 && u->nwrites == 0) {
        /* Best effort, as an uncorked send would have done: frames already
         * accepted get the socket's buffer, but nothing waits for the peer. */
        uv_buf_t b = uv_buf_init((char *)u->obuf, (unsigned)u->olen);
        (void)uv_try_write((uv_stream_t *)&u->pipe, &b, 1);
    }
    u->closing = true;
    uv_read_stop((uv_stream_t *)&u->pipe);
    if (flush && u->nwrites > 0 && uv_is_writable((uv_stream_t *)&u->pipe) &&
        uv_shutdown(&u->sreq, (uv_stream_t *)&u->pipe, unix_shutdown_cb) == 0)
        return;
    uv_close((uv_handle_t *)&u->pipe, unix_closed_cb);
}

static void
unix_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    unix_conn_t *u = ron_container_of(h, unix_conn_t, pipe);
    size_t avail = 0, want = OAP_CHUNK, used = u->dec.end - u->dec.start, limit;
    uint8_t *p;

    (void)suggested;
    if (used >= 4) {
        /* the rest of a frame whose header is in (its length leads the header; a
         * bogus length is clamped by the decoder's bound and refused by it) */
        uint32_t flen = ron_get_u32be(u->dec.buf + u->dec.start);
        if (flen > used && flen - used > want)
            want = flen - used;
    }
    /* At most want: a read never runs past the end of a large frame (one of
     * UNIX_TAKE_MIN or more cannot fit whole in an OAP_CHUNK read with the
     * bytes before it), so once whole it ends the buffer and can be taken. */
    limit = want;
    if (used == 0 && u->bulk_len > 0) {
        /* after a take: the header alone, into room for a frame like the last */
        want = u->bulk_len;
        limit = OAP_HDR_LEN;
    }
    p = oap_decoder_reserve(&u->dec, want, &avail);
    if (avail > limit)
        avail = limit;
    *buf = uv_buf_init((char *)p, p != NULL ? (unsigned)avail : 0); /* 0 -> UV_ENOBUFS */
}

void *
rbus__unix_frame_take(const oap_frame_t *f)
{
    unix_conn_t *u = deliver_unix;
    oap_decoder_t *d;
    size_t wire;
    void *block;

    if (u == NULL || f->payload == NULL)
        return NULL;
    d = &u->dec;
    wire = OAP_HDR_LEN + f->cap_len + f->payload_len;
    /* only the frame being delivered, when it is large, is the last one in
     * the buffer (start == end) and the buffer is not much larger than it */
    if (d->buf == NULL || d->start != d->end || wire < UNIX_TAKE_MIN || d->cap > 2 * wire ||
        f->payload < d->buf || f->payload + f->payload_len > d->buf + d->cap)
        return NULL;
    /* The decoder holds nothing unconsumed: give its buffer away and let it
     * allocate a new one at its next reserve (as oap_decoder_release leaves it). */
    block = d->buf;
    d->buf = NULL;
    d->cap = d->start = d->end = 0;
    u->bulk_len = wire;
    return block;
}

static void
unix_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    unix_conn_t *u = ron_container_of(s, unix_conn_t, pipe);
    unix_conn_t *outer = deliver_unix;
    oap_frame_t f;
    int rc;

    (void)buf;
    if (nread < 0) {
        if (nread == UV_ENOBUFS && u->base.peer != NULL)
            rbus__conn_proto_error(&u->base, RON_EFLOOD);
        else
            unix_abort(u, (int)nread);
        return;
    }
    oap_decoder_commit(&u->dec, (size_t)nread);
    u->corked = true; /* answers to a batch of requests leave in one write */
    while (u->base.peer != NULL && !u->closing) {
        rc = oap_decoder_next(&u->dec, &f);
        if (rc == RON_EAGAIN)
            break;
        if (rc < 0) {
            rbus__conn_proto_error(&u->base, rc);
            break;
        }
        const uint8_t *before = u->dec.buf;
        deliver_unix = u;
        rc = rbus__conn_frame(&u->base, &f, f.len);
        deliver_unix = outer;
        if (u->dec.buf == before && before != NULL)
            u->bulk_len = 0; /* not taken: read as before */
        if (rc < 0)
            break;
    }
    u->corked = false;
    unix_flush(u);
}

static void
unix_set_reading(rbus_conn_t *c, bool on)
{
    unix_conn_t *u = ron_container_of(c, unix_conn_t, base);

    if (u->closing)
        return;
    if (on)
        uv_read_start((uv_stream_t *)&u->pipe, unix_alloc_cb, unix_read_cb);
    else
        uv_read_stop((uv_stream_t *)&u->pipe);
}

static void
unix_set_max_frame(rbus_conn_t *c, uint32_t max_frame)
{
    oap_decoder_set_max_frame(&ron_container_of(c, unix_conn_t, base)->dec, max_frame);
}

static unix_conn_t *
unix_conn_new(rbus_t *b)
{
    unix_conn_t *u = ron_xcalloc(1, sizeof *u);

    u->base.ops = &unix_ops;
    oap_decoder_init(&u->dec, b->max_frame);
    uv_pipe_init(b->loop, &u->pipe, 0);
    return u;
}

/* The peer's credentials; also raises the send buffer (UNIX_SNDBUF; best
 * effort: a smaller buffer only costs copies). */
static void
unix_peercred(unix_conn_t *u, uid_t *uid_out, pid_t *pid_out)
{
    struct ucred cr = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t n = sizeof cr;
    int sndbuf = UNIX_SNDBUF;
    uv_os_fd_t fd;

    /* Defensive: on failure uid -1 is never allowed, so the peer is refused. */
    if (uv_fileno((uv_handle_t *)&u->pipe, &fd) == 0) {
        (void)getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &n);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    *uid_out = cr.uid;
    *pid_out = cr.pid;
}

static void
unix_connection_cb(uv_stream_t *server, int status)
{
    rbus_t *b = ron_container_of(server, rbus_t, listener);
    unix_conn_t *u;
    uid_t uid;
    pid_t pid;

    if (status < 0 || b->closing)
        return;
    u = unix_conn_new(b);
    if (uv_accept(server, (uv_stream_t *)&u->pipe) < 0) {
        unix_abort(u, RON_ECLOSED);
        return;
    }
    unix_peercred(u, &uid, &pid);
    rbus__conn_accepted(b, &u->base, uid, pid);
    if (u->base.peer != NULL && !u->closing)
        uv_read_start((uv_stream_t *)&u->pipe, unix_alloc_cb, unix_read_cb);
}

int
rbus__unix_listen(rbus_t *b)
{
    char path[RBUS_MAX_PATH];
    int rc;

    rc = rbus__sock_path(b->dir, b->name, path);
    if (rc < 0)
        return rc;
    /* The directory is ours (0700): a socket file here is a stale one left by a
     * killed process, since a live listener holding the name is our own bug. */
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    uv_pipe_init(b->loop, &b->listener, 0);
    b->handles++;
    rc = uv_pipe_bind(&b->listener, path);
    if (rc == 0 && chmod(path, 0600) < 0)
        rc = -errno;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&b->listener, 128, unix_connection_cb);
    if (rc < 0) {
        unlink(path);
        rbus__unix_unlisten(b);
    }
    return rc;
}

static void
unix_listener_closed_cb(uv_handle_t *h)
{
    rbus__bus_unref(ron_container_of(h, rbus_t, listener));
}

void
rbus__unix_unlisten(rbus_t *b)
{
    char path[RBUS_MAX_PATH];

    if (b->listening && rbus__sock_path(b->dir, b->name, path) == 0)
        unlink(path);
    uv_close((uv_handle_t *)&b->listener, unix_listener_closed_cb);
}

static void
unix_connect_cb(uv_connect_t *req, int status)
{
    unix_conn_t *u = ron_container_of(req, unix_conn_t, creq);
    uid_t uid = (uid_t)-1;
    pid_t pid = 0;

    if (u->closing)
        return;
    if (status < 0) {
        unix_abort(u, status);
        return;
    }
    unix_peercred(u, &uid, &pid);
    rbus__conn_connected(&u->base, 0, uid, pid);
    if (u->base.peer != NULL && !u->closing)
        uv_read_start((uv_stream_t *)&u->pipe, unix_alloc_cb, unix_read_cb);
}

int
rbus__unix_connect(rbus_peer_t *p)
{
    char path[RBUS_MAX_PATH];
    unix_conn_t *u;
    int rc;

    rc = rbus__sock_path(p->bus->dir, p->name, path);
    if (rc < 0)
        return rc;
    u = unix_conn_new(p->bus);
    u->base.peer = p;
    p->conn = &u->base;
    uv_pipe_connect(&u->creq, &u->pipe, path, unix_connect_cb);
    return 0;
}
