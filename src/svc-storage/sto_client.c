/*
 * sto_client.c - the storage protocol's client side (sto_client.h): a put
 * of a local file and a get into a descriptor, as chains of one-frame
 * requests. Each transfer is a small state machine advanced by its reply
 * callback; one request is in flight at a time. Invariants: the user's
 * callback runs exactly once when the starting call returned 0, never from
 * inside it (a streamed put: once per operation); a failed put is aborted
 * (fire and forget).
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
#include "ron_util.h"
#include "sto_client.h"

typedef enum { ST_BEGIN = 0, ST_WRITE, ST_COMMIT, ST_GET } step_t;

typedef struct sto_client_put {
    rbus_peer_t *peer;
    step_t step;
    bool stream;   /* sto_client_put_begin: the caller feeds pieces */
    bool busy;     /* stream: an operation is in flight */
    bool aborted;  /* stream: sto_client_put_abort while busy; no callback */
    uint64_t base; /* stream: put offset of mem[0] */
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

static void
xfer_free(xfer_t *x)
{
    if (x->own_fd && x->fd >= 0)
        close(x->fd);
    free(x->buf);
    free(x);
}

static void
noop_reply(void *arg, int status, const oap_frame_t *resp)
{
    (void)arg, (void)status, (void)resp;
}

/* Report once and free x. */
static void
finish(xfer_t *x, int status, uint16_t code)
{
    if (status < 0 && (x->put_cb != NULL || x->aborted) && x->put_id[0] != '\0' &&
        x->step != ST_COMMIT) {
        char js[80];
        size_t jl = (size_t)snprintf(js, sizeof js, "{\"op\":\"put_abort\",\"put_id\":\"%s\"}",
                                     x->put_id);
        uint8_t fr[84];
        fr[0] = 0, fr[1] = 0, fr[2] = (uint8_t)(jl >> 8), fr[3] = (uint8_t)jl;
        memcpy(fr + 4, js, jl);
        rbus_request(x->peer, OAP_APP_STORAGE, fr, 4 + jl, STO_CLIENT_DEADLINE_MS, noop_reply,
                     NULL);
    }
    if (x->aborted)
        ; /* the caller is gone */
    else if (x->put_cb != NULL)
        x->put_cb(x->arg, status, code, status == 0 ? x->addr : NULL);
    else
        x->get_cb(x->arg, status, code, x->size);
    xfer_free(x);
}

/* Send the next request of x: JSON js plus raw[0..raw_len). Returns rbus's code. */
static int
send_step(xfer_t *x, const char *js, const void *raw, size_t raw_len)
{
    size_t jl = strlen(js);
    int rc;
    free(x->buf);
    x->buf = ron_xmalloc(4 + jl + raw_len);
    x->buf[0] = (uint8_t)(jl >> 24);
    x->buf[1] = (uint8_t)(jl >> 16);
    x->buf[2] = (uint8_t)(jl >> 8);
    x->buf[3] = (uint8_t)jl;
    memcpy(x->buf + 4, js, jl);
    if (raw_len > 0)
        memcpy(x->buf + 4 + jl, raw, raw_len);
    rc = rbus_request(x->peer, OAP_APP_STORAGE, x->buf, 4 + jl + raw_len, STO_CLIENT_DEADLINE_MS,
                      on_reply, x);
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
        char hex[68];
        sto_addr_format(x->addr, hex);
        snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%llu\"}", hex,
                 (unsigned long long)x->done);
        rc = send_step(x, js, NULL, 0);
    }
    if (rc < 0)
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
    uint64_t v = 0;

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
        if (json_get_u64(o, "size", &v) < 0) {
            json_decref(o);
            finish(x, RON_EPROTO, resp->code);
            return;
        }
        x->size = v;
        for (size_t off = 0; off < raw_len;) {
            ssize_t n = write(x->fd, raw + off, raw_len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                json_decref(o);
                finish(x, n < 0 ? -errno : -EIO, 0);
                return;
            }
            off += (size_t)n;
        }
        x->done += raw_len;
        if (x->done >= x->size || raw_len == 0) {
            json_decref(o);
            finish(x, x->done == x->size ? 0 : RON_EPROTO, resp->code);
            return;
        }
        break;
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
    x = ron_xcalloc(1, sizeof *x);
    x->peer = peer;
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
    x = ron_xcalloc(1, sizeof *x);
    x->peer = peer;
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
    xfer_t *x = ron_xcalloc(1, sizeof *x);
    char js[160], hex[68];
    int rc;

    x->peer = peer;
    x->fd = fd;
    x->get_cb = cb;
    x->arg = arg;
    x->step = ST_GET;
    memcpy(x->addr, addr, STO_ADDR_LEN);
    sto_addr_format(addr, hex);
    snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"0\"}", hex);
    if ((rc = send_step(x, js, NULL, 0)) < 0) {
        xfer_free(x);
        return rc;
    }
    return 0;
}

int
sto_client_put_begin(rbus_peer_t *peer, const char *ctype, const uint8_t *expect,
                     sto_client_put_cb cb, void *arg, sto_client_put_t **put_out)
{
    xfer_t *x;
    char js[512];
    int rc;

    *put_out = NULL;
    if (ctype != NULL && strlen(ctype) > STO_CTYPE_MAX)
        return RON_EINVAL;
    x = ron_xcalloc(1, sizeof *x);
    x->peer = peer;
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
    if (x->put_id[0] != '\0') {
        char js[80];
        size_t jl = (size_t)snprintf(js, sizeof js, "{\"op\":\"put_abort\",\"put_id\":\"%s\"}",
                                     x->put_id);
        uint8_t fr[84];
        fr[0] = 0, fr[1] = 0, fr[2] = (uint8_t)(jl >> 8), fr[3] = (uint8_t)jl;
        memcpy(fr + 4, js, jl);
        rbus_request(x->peer, OAP_APP_STORAGE, fr, 4 + jl, STO_CLIENT_DEADLINE_MS, noop_reply,
                     NULL);
    }
    xfer_free(x);
}
