/*
 * sto_client.c - the storage protocol's client side (sto_client.h): a put
 * of a local file and a get into a descriptor, as chains of one-frame
 * requests. Each transfer is a small state machine advanced by its reply
 * callback; a put has one request in flight at a time, a get up to
 * STO_CLIENT_GET_WINDOW once the first answer told the size (answers may
 * come back in any order: the service runs them on a thread pool; bytes are
 * written to the descriptor in offset order). Invariants: the user's
 * callback runs exactly once when the starting call returned 0, never from
 * inside it (a streamed put: once per operation); a transfer is freed only
 * once no answer is pending for it; a failed put is aborted (fire and forget).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ron_err.h"
#include "ron_proto.h"
#include "ron_util.h"
#include "sto_client.h"

typedef enum { ST_BEGIN = 0, ST_WRITE, ST_COMMIT, ST_GET } step_t;

/* A get answer that arrived before the bytes in front of it (out of order). */
typedef struct {
    uint64_t off;  /* object offset of data[0] */
    uint8_t *data; /* len bytes; NULL: slot free */
    size_t len;
} held_t;

typedef struct sto_client_put {
    rbus_peer_t *peer;
    rbus_request_opts_t ro; /* tenant and capability of every request (cap owned) */
    step_t step;
    bool stream;   /* sto_client_put_begin: the caller feeds pieces */
    bool busy;     /* stream: an operation is in flight */
    bool aborted;  /* stream: sto_client_put_abort while busy; no callback */
    uint64_t base; /* stream: put offset of mem[0] */
    /* get: after the first answer (which tells the size) up to
     * STO_CLIENT_GET_WINDOW requests are in flight; answers are written to
     * fd in offset order, early ones held (at most WINDOW - 1 chunks: the
     * window starts at done, see get_fill) */
    uint64_t next_off;  /* next offset to request */
    unsigned inflight;  /* get requests sent and not answered */
    bool finished;      /* the user's callback ran; freed when inflight drops to 0 */
    held_t held[STO_CLIENT_GET_WINDOW];
    int fd;        /* put: the file (ours); get: the caller's */
    bool own_fd;
    uint64_t size; /* put: file size; get: object size once known */
    uint64_t done; /* bytes written to the put / to fd */
    char put_id[24];
    char ctype[STO_CTYPE_MAX + 1];
    uint8_t addr[STO_ADDR_LEN];
    uint8_t *buf;  /* one request: 4 + JSON + chunk */
    const uint8_t *mem; /* put_buf: the caller's bytes (borrowed until the callback) */
    sto_client_put_cb put_cb;
    sto_client_get_cb get_cb;
    void *arg;
} xfer_t;

static void on_reply(void *arg, int status, const oap_frame_t *resp);
static json_t *answer_json(const oap_frame_t *f, const uint8_t **raw, size_t *raw_len);
static int json_get_u64(json_t *o, const char *key, uint64_t *out);

static void
xfer_free(xfer_t *x)
{
    if (x->own_fd && x->fd >= 0)
        close(x->fd);
    free((void *)x->ro.cap);
    free(x->buf);
    for (size_t i = 0; i < STO_CLIENT_GET_WINDOW; i++)
        free(x->held[i].data);
    free(x);
}

static void
noop_reply(void *arg, int status, const oap_frame_t *resp)
{
    (void)arg, (void)status, (void)resp;
}

/* One request of x's transfer, acting for x's tenant with x's capability. */
static int
xfer_request(const xfer_t *x, const void *payload, size_t len, rbus_reply_cb cb, void *arg)
{
    return rbus_request_ex(x->peer, &x->ro, payload, len, cb, arg);
}

/* A new transfer through peer acting for auth (may be NULL: the node, no capability). */
static xfer_t *
xfer_new(rbus_peer_t *peer, const sto_client_auth_t *auth)
{
    xfer_t *x = ron_xcalloc(1, sizeof *x);

    x->peer = peer;
    x->ro.app_proto_id = OAP_APP_STORAGE;
    x->ro.deadline_ms = STO_CLIENT_DEADLINE_MS;
    if (auth != NULL && auth->tenant != NULL)
        memcpy(x->ro.tenant_id, auth->tenant, sizeof x->ro.tenant_id);
    if (auth != NULL && auth->cap != NULL && auth->cap_len > 0) {
        void *c = ron_xmalloc(auth->cap_len);
        memcpy(c, auth->cap, auth->cap_len);
        x->ro.cap = c;
        x->ro.cap_len = auth->cap_len;
    }
    return x;
}

/* Tell the service to drop x's put, once its id is known (fire and forget). */
static void
send_abort(const xfer_t *x)
{
    char js[80];
    size_t jl;
    uint8_t fr[84];

    if (x->put_id[0] == '\0')
        return;
    jl = (size_t)snprintf(js, sizeof js, "{\"op\":\"put_abort\",\"put_id\":\"%s\"}", x->put_id);
    fr[0] = 0, fr[1] = 0, fr[2] = (uint8_t)(jl >> 8), fr[3] = (uint8_t)jl;
    memcpy(fr + 4, js, jl);
    (void)xfer_request(x, fr, 4 + jl, noop_reply, NULL);
}

/* Report once and free x. */
static void
finish(xfer_t *x, int status, uint16_t code)
{
    if (status < 0 && (x->put_cb != NULL || x->aborted) && x->step != ST_COMMIT)
        send_abort(x);
    if (x->aborted)
        ; /* the caller is gone */
    else if (x->put_cb != NULL)
        x->put_cb(x->arg, status, code, status == 0 ? x->addr : NULL);
    else
        x->get_cb(x->arg, status, code, x->size);
    x->finished = true;
    if (x->inflight == 0)
        xfer_free(x); /* else the last answer in flight frees it */
}

/* Send the next request of x: JSON js plus raw[0..raw_len). Returns rbus's code. */
static int
send_step(xfer_t *x, const char *js, const void *raw, size_t raw_len)
{
    size_t jl = strlen(js);
    int rc;
    free(x->buf);
    x->buf = ron_xmalloc(4 + jl + raw_len);
    (void)proto_json_frame(x->buf, js, (uint32_t)jl);
    if (raw_len > 0)
        memcpy(x->buf + 4 + jl, raw, raw_len);
    rc = xfer_request(x, x->buf, 4 + jl + raw_len, on_reply, x);
    free(x->buf);
    x->buf = NULL;
    return rc;
}

/* Send the next put_write of x->mem (at most STO_SVC_MAX_CHUNK bytes). */
static int
send_mem_write(xfer_t *x)
{
    char js[256];
    size_t want = x->size - x->done < STO_SVC_MAX_CHUNK ? (size_t)(x->size - x->done)
                                                         : STO_SVC_MAX_CHUNK;
    uint64_t off = x->base + x->done; /* in the put */
    int rc;

    snprintf(js, sizeof js, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"%llu\"}",
             x->put_id, (unsigned long long)off);
    rc = send_step(x, js, x->mem + x->done, want);
    x->done += rc == 0 ? (uint64_t)want : 0;
    return rc;
}

/* Issue the request for x->step; on a synchronous failure report it (only
 * called from reply callbacks, so never inside the user's call). */
static void
advance(xfer_t *x)
{
    char js[256];
    int rc;

    if (x->step == ST_WRITE && x->done == x->size)
        x->step = ST_COMMIT;
    if (x->step == ST_WRITE) {
        size_t want = x->size - x->done < STO_SVC_MAX_CHUNK ? (size_t)(x->size - x->done)
                                                             : STO_SVC_MAX_CHUNK;
        uint8_t *chunk;
        ssize_t n;
        if (x->mem != NULL) {
            if ((rc = send_mem_write(x)) < 0)
                finish(x, rc, 0);
            return;
        }
        chunk = ron_xmalloc(want);
        do
            n = pread(x->fd, chunk, want, (off_t)x->done);
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            free(chunk);
            finish(x, n < 0 ? -errno : RON_EINVAL, 0); /* EOF early: the file shrank */
            return;
        }
        snprintf(js, sizeof js, "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"%llu\"}",
                 x->put_id, (unsigned long long)x->done);
        rc = send_step(x, js, chunk, (size_t)n);
        x->done += rc == 0 ? (uint64_t)n : 0;
        free(chunk);
    } else if (x->step == ST_COMMIT) {
        snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", x->put_id);
        rc = send_step(x, js, NULL, 0);
    } else {
        rc = RON_EINVAL; /* gets advance through get_fill() */
    }
    if (rc < 0)
        finish(x, rc, 0);
}

/* ---- get: pipelined ---- */

typedef struct {
    xfer_t *x;
    uint64_t off; /* the requested offset */
} get_req_t;

static void on_get_reply(void *arg, int status, const oap_frame_t *resp);

/* Request the chunk at x->next_off. Returns rbus's code. */
static int
get_send(xfer_t *x)
{
    get_req_t *g = ron_xmalloc(sizeof *g);
    char js[160], hex[68];
    uint8_t fr[4 + sizeof js];
    size_t jl;
    int rc;

    sto_addr_format(x->addr, hex);
    jl = (size_t)snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%llu\"}",
                          hex, (unsigned long long)x->next_off);
    fr[0] = 0, fr[1] = 0, fr[2] = (uint8_t)(jl >> 8), fr[3] = (uint8_t)jl;
    memcpy(fr + 4, js, jl);
    g->x = x;
    g->off = x->next_off;
    rc = xfer_request(x, fr, 4 + jl, on_get_reply, g);
    if (rc < 0) {
        free(g);
        return rc;
    }
    x->inflight++;
    x->next_off += STO_SVC_MAX_CHUNK;
    return 0;
}

/* Keep up to the window in flight once the size is known. The window is
 * anchored at the first byte not yet written (x->done), not at the answers
 * counted: answers held out of order do not let it slide on, so at most
 * WINDOW - 1 are ever held and one slow answer cannot overflow x->held. */
static int
get_fill(xfer_t *x)
{
    uint64_t end = x->done + (uint64_t)STO_CLIENT_GET_WINDOW * STO_SVC_MAX_CHUNK;
    int rc;

    while (x->inflight < STO_CLIENT_GET_WINDOW && x->next_off < x->size && x->next_off < end)
        if ((rc = get_send(x)) < 0)
            return rc;
    return 0;
}

/* Write len bytes to x->fd. Returns 0 or -errno. */
static int
get_write(xfer_t *x, const uint8_t *raw, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = write(x->fd, raw + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        off += (size_t)n;
    }
    x->done += len;
    return 0;
}

/* Take the answer for offset off (raw, len): write it and any held answers
 * now in order, or hold a copy. Returns 0, -errno or RON_EPROTO. */
static int
get_take(xfer_t *x, uint64_t off, const uint8_t *raw, size_t len)
{
    int rc;

    if (off != x->done) {
        for (size_t i = 0; i < STO_CLIENT_GET_WINDOW; i++) {
            if (x->held[i].data == NULL) {
                x->held[i].data = ron_xmalloc(len > 0 ? len : 1);
                memcpy(x->held[i].data, raw, len);
                x->held[i].len = len;
                x->held[i].off = off;
                return 0;
            }
        }
        return RON_EPROTO; /* defensive: more answers than requests */
    }
    if ((rc = get_write(x, raw, len)) < 0)
        return rc;
    for (bool more = true; more;) {
        more = false;
        for (size_t i = 0; i < STO_CLIENT_GET_WINDOW; i++) {
            held_t *h = &x->held[i];
            if (h->data != NULL && h->off == x->done) {
                rc = get_write(x, h->data, h->len);
                free(h->data);
                h->data = NULL;
                if (rc < 0)
                    return rc;
                more = true;
            }
        }
    }
    return 0;
}

static void
on_get_reply(void *arg, int status, const oap_frame_t *resp)
{
    get_req_t *g = arg;
    xfer_t *x = g->x;
    uint64_t off = g->off, size = 0;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    json_t *o = NULL;
    int rc = 0;

    free(g);
    x->inflight--;
    if (x->finished) {
        if (x->inflight == 0)
            xfer_free(x);
        return;
    }
    if (status < 0) {
        finish(x, status, 0);
        return;
    }
    if (resp->code != 200) {
        finish(x, RON_ESTORE, resp->code);
        return;
    }
    o = answer_json(resp, &raw, &raw_len);
    if (o == NULL || json_get_u64(o, "size", &size) < 0 || (off > 0 && size != x->size) ||
        (raw_len == 0 && off < size) || raw_len > STO_SVC_MAX_CHUNK ||
        (off + raw_len < size && raw_len != STO_SVC_MAX_CHUNK) || off + raw_len > size) {
        json_decref(o);
        finish(x, RON_EPROTO, resp->code); /* short, long or shifting answers */
        return;
    }
    json_decref(o);
    x->size = size;
    if ((rc = get_take(x, off, raw, raw_len)) < 0) {
        finish(x, rc, 0);
        return;
    }
    if (x->done == x->size) {
        finish(x, 0, 200);
        return;
    }
    if ((rc = get_fill(x)) < 0)
        finish(x, rc, 0);
}

/* Split a 200 answer into its JSON (new reference) and raw bytes. */
static json_t *
answer_json(const oap_frame_t *f, const uint8_t **raw, size_t *raw_len)
{
    uint32_t jl;
    if (f->payload_len < 4)
        return NULL;
    jl = (uint32_t)f->payload[0] << 24 | (uint32_t)f->payload[1] << 16 |
         (uint32_t)f->payload[2] << 8 | f->payload[3];
    if (jl > f->payload_len - 4)
        return NULL;
    *raw = f->payload + 4 + jl;
    *raw_len = f->payload_len - 4 - jl;
    return json_loadb((const char *)f->payload + 4, jl, 0, NULL);
}

static int
json_get_u64(json_t *o, const char *key, uint64_t *out)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v != NULL ? ron_parse_u64(v, strlen(v), out) : RON_EPROTO;
}

static void
on_reply(void *arg, int status, const oap_frame_t *resp)
{
    xfer_t *x = arg;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    json_t *o;

    if (x->aborted) {
        finish(x, RON_ESHUTDOWN, 0); /* sends put_abort once the id is known */
        return;
    }

    if (status < 0) {
        finish(x, status, 0);
        return;
    }
    if (resp->code != 200) {
        finish(x, RON_ESTORE, resp->code);
        return;
    }
    o = answer_json(resp, &raw, &raw_len);
    if (o == NULL) {
        finish(x, RON_EPROTO, resp->code);
        return;
    }
    switch (x->step) {
    case ST_BEGIN: {
        const char *id = json_string_value(json_object_get(o, "put_id"));
        if (id == NULL || strlen(id) >= sizeof x->put_id) {
            json_decref(o);
            finish(x, RON_EPROTO, resp->code);
            return;
        }
        snprintf(x->put_id, sizeof x->put_id, "%s", id);
        x->step = ST_WRITE;
        if (x->stream) {
            json_decref(o);
            x->busy = false;
            x->size = x->done = 0;
            x->put_cb(x->arg, 0, resp->code, NULL); /* begun: the caller writes */
            return;
        }
        break;
    }
    case ST_WRITE:
        if (x->stream && x->done == x->size) {
            json_decref(o);
            x->busy = false;
            x->base += x->size;
            x->size = x->done = 0;
            x->mem = NULL;
            x->put_cb(x->arg, 0, resp->code, NULL); /* the piece is acknowledged */
            return;
        }
        break;
    case ST_COMMIT: {
        const char *a = json_string_value(json_object_get(o, "address"));
        int rc = a != NULL ? sto_addr_parse(a, x->addr) : RON_EPROTO;
        json_decref(o);
        finish(x, rc < 0 ? RON_EPROTO : 0, resp->code);
        return;
    }
    case ST_GET:
        break; /* gets are answered through on_get_reply() */
    }
    json_decref(o);
    advance(x);
}

/* The put_begin request of x into js: declared size, content type and
 * expected address when given. Returns 0 or RON_EINVAL. */
static int
begin_json(const xfer_t *x, const char *ctype, const uint8_t *expect, char *js, size_t cap)
{
    char ct[2 * STO_CTYPE_MAX + 32] = "", ex[96] = "";

    if (ctype != NULL) {
        json_t *s = json_string(ctype);
        char *q = s != NULL ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        json_decref(s);
        if (q == NULL)
            return RON_EINVAL;
        snprintf(ct, sizeof ct, ",\"content_type\":%s", q);
        free(q);
    }
    if (expect != NULL) {
        char hex[68];
        sto_addr_format(expect, hex);
        snprintf(ex, sizeof ex, ",\"expect\":\"%s\"", hex);
    }
    if (x->stream)
        snprintf(js, cap, "{\"op\":\"put_begin\"%s%s}", ct, ex); /* size not known */
    else
        snprintf(js, cap, "{\"op\":\"put_begin\",\"size\":\"%llu\"%s%s}",
                 (unsigned long long)x->size, ct, ex);
    return 0;
}

int
sto_client_put_file(rbus_peer_t *peer, const char *path, const char *ctype,
                    sto_client_put_cb cb, void *arg)
{
    xfer_t *x;
    struct stat st;
    char js[512];
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return RON_EINVAL;
    }
    if (ctype != NULL && strlen(ctype) > STO_CTYPE_MAX) {
        close(fd);
        return RON_EINVAL;
    }
    x = xfer_new(peer, NULL);
    x->fd = fd;
    x->own_fd = true;
    x->size = (uint64_t)st.st_size;
    x->put_cb = cb;
    x->arg = arg;
    x->step = ST_BEGIN;
    if ((rc = begin_json(x, ctype, NULL, js, sizeof js)) < 0) {
        xfer_free(x);
        return rc;
    }
    if ((rc = send_step(x, js, NULL, 0)) < 0) {
        xfer_free(x);
        return rc;
    }
    return 0;
}

int
sto_client_put_buf(rbus_peer_t *peer, const void *buf, size_t len, const char *ctype,
                   const uint8_t *expect, sto_client_put_cb cb, void *arg)
{
    xfer_t *x;
    char js[512];
    int rc;

    if (ctype != NULL && strlen(ctype) > STO_CTYPE_MAX)
        return RON_EINVAL;
    x = xfer_new(peer, NULL);
    x->fd = -1;
    x->mem = len > 0 ? buf : (const uint8_t *)"";
    x->size = len;
    x->put_cb = cb;
    x->arg = arg;
    x->step = ST_BEGIN;
    if ((rc = begin_json(x, ctype, expect, js, sizeof js)) < 0 ||
        (rc = send_step(x, js, NULL, 0)) < 0) {
        xfer_free(x);
        return rc;
    }
    return 0;
}

int
sto_client_get(rbus_peer_t *peer, const uint8_t addr[STO_ADDR_LEN], int fd,
               sto_client_get_cb cb, void *arg)
{
    xfer_t *x = xfer_new(peer, NULL);
    int rc;

    x->fd = fd;
    x->get_cb = cb;
    x->arg = arg;
    x->step = ST_GET;
    memcpy(x->addr, addr, STO_ADDR_LEN);
    /* the first answer tells the size; the window opens after it */
    if ((rc = get_send(x)) < 0) {
        xfer_free(x);
        return rc;
    }
    return 0;
}

int
sto_client_put_begin(rbus_peer_t *peer, const char *ctype, const uint8_t *expect,
                     sto_client_put_cb cb, void *arg, sto_client_put_t **put_out)
{
    return sto_client_put_begin_as(peer, NULL, ctype, expect, cb, arg, put_out);
}

int
sto_client_put_begin_as(rbus_peer_t *peer, const sto_client_auth_t *auth, const char *ctype,
                        const uint8_t *expect, sto_client_put_cb cb, void *arg,
                        sto_client_put_t **put_out)
{
    xfer_t *x;
    char js[512];
    int rc;

    *put_out = NULL;
    if (ctype != NULL && strlen(ctype) > STO_CTYPE_MAX)
        return RON_EINVAL;
    if (auth != NULL && auth->cap_len > OAP_MAX_CAP)
        return RON_EINVAL;
    x = xfer_new(peer, auth);
    x->fd = -1;
    x->stream = true;
    x->busy = true;
    x->put_cb = cb;
    x->arg = arg;
    x->step = ST_BEGIN;
    if ((rc = begin_json(x, ctype, expect, js, sizeof js)) < 0 ||
        (rc = send_step(x, js, NULL, 0)) < 0) {
        xfer_free(x);
        return rc;
    }
    *put_out = x;
    return 0;
}

int
sto_client_put_write(sto_client_put_t *x, const void *data, size_t len)
{
    if (x->busy || x->step != ST_WRITE || len == 0)
        return RON_EINVAL;
    int rc;

    x->mem = data;
    x->size = len;
    x->done = 0;
    if ((rc = send_mem_write(x)) < 0) {
        x->mem = NULL;
        x->size = 0;
        return rc;
    }
    x->busy = true;
    return 0;
}

int
sto_client_put_commit(sto_client_put_t *x)
{
    char js[96];
    int rc;

    if (x->busy || x->step != ST_WRITE)
        return RON_EINVAL;
    snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", x->put_id);
    if ((rc = send_step(x, js, NULL, 0)) < 0)
        return rc;
    x->step = ST_COMMIT;
    x->busy = true;
    return 0;
}

void
sto_client_put_abort(sto_client_put_t *x)
{
    if (x == NULL)
        return;
    if (x->busy) {
        /* the reply in flight still points at x: it ends the put then */
        x->aborted = true;
        return;
    }
    send_abort(x);
    xfer_free(x);
}
