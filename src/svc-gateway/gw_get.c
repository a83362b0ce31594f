/*
 * gw_get.c - GET/HEAD /o/b3:<hex> from the local store.
 *
 * A GET is a request struct with explicit steps: an open work item on the
 * thread pool (sto_reader_open verifies the last piece; objects stored
 * without a type have their first bytes read and sniffed), then on the
 * loop the conditional/Range decision (304, 416, 200, 206, multipart 206),
 * then one read work item per chunk (at most cfg.chunk bytes, verified by
 * the reader) alternating with one write of that chunk: the next read is
 * queued only when the transport has finished with the last buffer, and a
 * write refused with RON_EAGAIN waits for the drain callback. A stream
 * therefore holds one chunk buffer, whatever the object's size or the
 * client's speed. The first chunk is read before the head is sent, so a
 * corrupt first piece is a 502 with the envelope; a later one aborts the
 * stream (the body is cut short and the transport closes the connection)
 * and is counted. An object of at most GW_INLINE_MAX bytes whose reader is
 * cached (it was read a moment ago) is opened, decided and read on the loop
 * instead: the same verified read, without the thread pool's round trip.
 * A local miss with a fetch peer set goes to gw_remote.c, which fills the
 * same struct and comes back through gw__get_open_done / gw__get_read_done;
 * when the store's index already says the object is absent, it goes there
 * before any open, without the thread pool's round trip.
 *
 * Verified bodies of hot objects (larger than GW_INLINE_MAX, read whole in
 * their first chunk: at most GW_BODY_CACHE_OBJECT) are kept in memory, at
 * most GW_BODY_CACHE of them and GW_BODY_CACHE_BYTES in all, least recently
 * used evicted: a later GET/HEAD of one is answered from those bytes on the
 * loop, with no read and no hashing. Only bytes that passed verification
 * are kept, and a body once evicted is read and verified again: a byte
 * changed on disk afterwards is never sent.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_internal.h"

static void gw_get_pump(gw_get_t *g);

/* Take an idle reader of addr out of the cache, or NULL. */
static sto_reader_t *
gw_cache_take(gw_t *gw, const uint8_t *addr)
{
    for (size_t i = 0; i < gw->n_cache; i++) {
        if (memcmp(gw->cache[i].addr, addr, STO_ADDR_LEN) == 0) {
            sto_reader_t *rd = gw->cache[i].rd;
            gw->cache[i] = gw->cache[--gw->n_cache];
            gw->stats.readers_reused++;
            return rd;
        }
    }
    return NULL;
}

/* Keep rd (takes it) for reuse, evicting the least recently returned reader. */
static void
gw_cache_put(gw_t *gw, const uint8_t *addr, sto_reader_t *rd)
{
    size_t slot = gw->n_cache;

    if (gw->n_cache == GW_READER_CACHE) {
        slot = 0;
        for (size_t i = 1; i < gw->n_cache; i++)
            if (gw->cache[i].used < gw->cache[slot].used)
                slot = i;
        sto_reader_close(gw->cache[slot].rd);
    } else {
        gw->n_cache++;
    }
    memcpy(gw->cache[slot].addr, addr, STO_ADDR_LEN);
    gw->cache[slot].rd = rd;
    gw->cache[slot].used = ++gw->tick;
}

void
gw__cache_clear(gw_t *gw)
{
    while (gw->n_cache > 0)
        sto_reader_close(gw->cache[--gw->n_cache].rd);
}

static void gw_body_evict(gw_t *gw, size_t i);

void
gw__bodies_clear(gw_t *gw)
{
    while (gw->n_bodies > 0)
        gw_body_evict(gw, gw->n_bodies - 1);
}

static void
gw_body_unref(gw_t *gw, gw_body_t *b)
{
    (void)gw;
    if (--b->refs > 0)
        return;
    free(b->data);
    free(b);
}

/* A referenced verified body of addr, or NULL. */
static gw_body_t *
gw_body_take(gw_t *gw, const uint8_t *addr)
{
    for (size_t i = 0; i < gw->n_bodies; i++) {
        gw_body_t *b = gw->bodies[i];
        if (memcmp(b->addr, addr, STO_ADDR_LEN) == 0) {
            b->refs++;
            b->used = ++gw->tick;
            return b;
        }
    }
    return NULL;
}

static void
gw_body_evict(gw_t *gw, size_t i)
{
    gw_body_t *b = gw->bodies[i];

    gw->bodies[i] = gw->bodies[--gw->n_bodies];
    gw->stats.body_cached -= b->size;
    gw_body_unref(gw, b);
}

/* Keep g's verified whole body (takes g->buf), evicting least recently used ones. */
static void
gw_body_put(gw_t *gw, gw_get_t *g)
{
    gw_body_t *b;

    for (size_t i = 0; i < gw->n_bodies; i++)
        if (memcmp(gw->bodies[i]->addr, g->addr, STO_ADDR_LEN) == 0)
            return; /* another request kept it meanwhile */
    while (gw->n_bodies > 0 && (gw->n_bodies == GW_BODY_CACHE ||
                                gw->stats.body_cached + g->size > GW_BODY_CACHE_BYTES)) {
        size_t old = 0;
        for (size_t i = 1; i < gw->n_bodies; i++)
            if (gw->bodies[i]->used < gw->bodies[old]->used)
                old = i;
        gw_body_evict(gw, old);
    }
    b = ron_xcalloc(1, sizeof *b);
    memcpy(b->addr, g->addr, STO_ADDR_LEN);
    b->size = g->size;
    memcpy(b->ctype, g->ctype, sizeof b->ctype);
    b->refs = 1;
    b->used = ++gw->tick;
    b->data = g->buf;
    g->buf = NULL;
    gw->stats.buffered -= g->buf_cap;
    gw->stats.body_cached += b->size;
    gw->bodies[gw->n_bodies++] = b;
}

/* g's buffer holds the whole object, verified, and nothing failed. */
static bool
gw_body_keepable(const gw_get_t *g)
{
    return g->buf != NULL && !g->bad && g->body == NULL && g->size > GW_INLINE_MAX &&
           g->size <= GW_BODY_CACHE_OBJECT && g->buf_off == 0 && g->buf_len == g->size &&
           !g->gw->closing;
}

static void
gw_get_free(gw_get_t *g)
{
    gw_t *gw = g->gw;

    if (g->rd != NULL && !g->bad && !gw->closing && g->size <= GW_READER_CACHE_OBJECT)
        gw_cache_put(gw, g->addr, g->rd);
    else
        sto_reader_close(g->rd);
    if (gw_body_keepable(g))
        gw_body_put(gw, g);
    if (g->body != NULL)
        gw_body_unref(gw, g->body);
    if (g->buf != NULL) {
        gw->stats.buffered -= g->buf_cap;
        free(g->buf);
    }
    gw__remote_free(g);
    free(g->parts);
    free(g->cap);
    free(g);
    gw__release(gw);
}

/* Free g once it is ended and neither a write nor a storage get holds it. */
void
gw__get_release(gw_get_t *g)
{
    if (g->req == NULL && g->writes == 0 && g->gets == 0)
        gw_get_free(g);
}

/* Finish the response (whole or cut short) and free g once no write or get holds it. */
void
gw__get_finish(gw_get_t *g)
{
    tx_request_t *req = g->req;

    /* tx_respond_end may run the done callbacks of queued writes (a gone
     * connection): hold g across it so they cannot free it under us */
    g->req = NULL;
    g->writes++;
    if (req != NULL)
        (void)tx_respond_end(req);
    g->writes--;
    gw__get_release(g);
}

/* Worker: open the reader; sniff the first bytes when the object has no type. */
static void
gw_get_open(gw_get_t *g)
{
    uint8_t head[GW_SNIFF_LEN];
    ssize_t n;

    g->rc = g->rd != NULL ? 0 : sto_reader_open(g->gw->cfg.store, g->addr, &g->rd);
    if (g->rc < 0)
        return;
    g->size = sto_reader_size(g->rd);
    snprintf(g->ctype, sizeof g->ctype, "%s", sto_reader_ctype(g->rd));
    if (g->ctype[0] != '\0')
        return;
    n = sto_reader_read(g->rd, 0, head, g->size < sizeof head ? (size_t)g->size : sizeof head);
    if (n == RON_EDIGEST) {
        g->bad = true;
        /* piece 0 is corrupt: ranges elsewhere can still be served; a read
         * of piece 0 fails on its own (counted then) */
        snprintf(g->ctype, sizeof g->ctype, "%s", GW_CTYPE_DEFAULT);
        return;
    }
    if (n < 0) {
        g->rc = (int)n;
        g->bad = true;
        return;
    }
    snprintf(g->ctype, sizeof g->ctype, "%s", gw_sniff(head, (size_t)n, (uint64_t)n == g->size));
}

/* Worker: read the next chunk of the current range into buf. */
static void
gw_get_read_chunk(gw_get_t *g)
{
    const gw_range_t *r = &g->ranges[g->ri];
    uint64_t want = r->last + 1 - g->pos;
    size_t len = want < g->buf_cap ? (size_t)want : g->buf_cap;
    size_t got = 0;

    g->rc = 0;
    g->buf_off = g->pos;
    while (got < len) {
        ssize_t n = sto_reader_read(g->rd, g->pos + got, g->buf + got, len - got);
        if (n < 0) {
            g->rc = (int)n;
            g->bad = true;
            return;
        }
        if (n == 0) {
            g->rc = RON_EDIGEST; /* shorter than the size bound at open */
            g->bad = true;
            return;
        }
        got += (size_t)n;
    }
    g->buf_len = got;
}

/* The next "chunk" of a body in memory: the rest of the current range, no copy. */
static void
gw_get_body_chunk(gw_get_t *g)
{
    const gw_range_t *r = &g->ranges[g->ri];

    g->rc = 0;
    g->buf_off = g->pos;
    g->buf_len = (size_t)(r->last + 1 - g->pos);
}

static void
gw_get_read_work(uv_work_t *w)
{
    gw_get_read_chunk(w->data);
}

static void
gw_get_queue_read(gw_get_t *g)
{
    if (g->remote) {
        gw__remote_read(g);
        return;
    }
    if (g->body != NULL) {
        gw_get_body_chunk(g);
        gw__get_read_done(&g->work, 0);
        return;
    }
    int rc = uv_queue_work(g->gw->loop, &g->work, gw_get_read_work, gw__get_read_done);
    if (rc < 0) {
        g->rc = rc;
        gw__get_read_done(&g->work, 0);
    }
}

/* A queued segment was written (or the connection went away). */
static void
gw_get_written(int status, void *arg)
{
    gw_get_t *g = arg;

    g->writes--;
    if (status < 0)
        g->gone = true;
    if (g->req == NULL) { /* already ended */
        gw__get_release(g);
        return;
    }
    if (g->writes > 0 || g->seg < 3)
        return;
    if (g->gone) {
        g->gw->stats.client_gone++;
        gw__get_finish(g);
        return;
    }
    /* This chunk is out: advance, then read the next one or end. */
    if (g->pos > g->ranges[g->ri].last) {
        g->ri++;
        if (g->ri < g->n_ranges)
            g->pos = g->ranges[g->ri].first;
    }
    if (g->ri >= g->n_ranges) {
        g->gw->stats.objects_served++;
        gw__get_finish(g);
        return;
    }
    gw_get_queue_read(g);
}

static void
gw_get_drain(tx_request_t *req, void *arg)
{
    gw_get_t *g = arg;

    (void)req;
    if (g->waiting) {
        g->waiting = false;
        gw_get_pump(g);
    }
}

/* Write the segments of the current chunk: part head, data, tail. */
static void
gw_get_pump(gw_get_t *g)
{
    while (g->seg < 3) {
        const void *p = NULL;
        size_t len = 0;
        int rc;

        if (g->seg == 0 && g->multipart && g->buf_off == g->ranges[g->ri].first) {
            p = g->parts->heads[g->ri];
            len = strlen(g->parts->heads[g->ri]);
        } else if (g->seg == 1) {
            p = g->body != NULL ? g->body->data + g->buf_off : g->buf;
            len = g->buf_len;
        } else if (g->seg == 2 && g->multipart && g->ri + 1 == g->n_ranges &&
                   g->pos > g->ranges[g->ri].last) {
            p = g->parts->tail;
            len = strlen(g->parts->tail);
        }
        if (len == 0) {
            g->seg++;
            continue;
        }
        rc = tx_respond_write(g->req, p, len, gw_get_written, g);
        if (rc == RON_EAGAIN) {
            g->waiting = true;
            return;
        }
        if (rc < 0) {
            g->gone = true;
            g->seg = 3;
            g->gw->stats.client_gone++;
            gw__get_finish(g);
            return;
        }
        g->writes++;
        if (g->seg == 1)
            g->gw->stats.bytes_served += len;
        g->seg++;
    }
}

static void
gw_get_head_fill(gw_get_t *g, tx_header_t *h, size_t *n, char *ctype_buf, size_t ctype_cap)
{
    h[(*n)++] = (tx_header_t){"ETag", g->etag};
    h[(*n)++] = (tx_header_t){"Accept-Ranges", "bytes"};
    h[(*n)++] = (tx_header_t){"Cache-Control", GW_CACHE_IMMUTABLE};
    h[(*n)++] = (tx_header_t){"X-Content-Type-Options", "nosniff"};
    *n += gw__cors(h + *n);
    if (g->multipart)
        snprintf(ctype_buf, ctype_cap, "multipart/byteranges; boundary=%s", g->boundary);
    else
        snprintf(ctype_buf, ctype_cap, "%s", g->ctype);
    h[(*n)++] = (tx_header_t){"Content-Type", ctype_buf};
}

/* The head, once the first chunk is verified (or at once for HEAD / empty bodies). */
static int
gw_get_start(gw_get_t *g, bool partial, uint64_t length)
{
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0;
    char ctype[STO_CTYPE_MAX + 64], crange[96];

    gw_get_head_fill(g, h, &n, ctype, sizeof ctype);
    if (partial && !g->multipart) {
        snprintf(crange, sizeof crange, "bytes %llu-%llu/%llu",
                 (unsigned long long)g->ranges[0].first, (unsigned long long)g->ranges[0].last,
                 (unsigned long long)g->size);
        h[n++] = (tx_header_t){"Content-Range", crange};
    }
    g->started = true;
    return tx_respond_start(g->req, partial ? 206 : 200, h, n, (int64_t)length, gw_get_drain, g);
}

void
gw__get_read_done(uv_work_t *w, int status)
{
    gw_get_t *g = w->data;
    bool first = !g->started;

    if (status < 0 && g->rc == 0)
        g->rc = status; /* cancelled */
    if (g->rc < 0) {
        if (g->rc == RON_EDIGEST)
            first ? g->gw->stats.corrupt_before++ : g->gw->stats.corrupt_aborted++;
        if (first) {
            gw__error(g->req, g->rc == RON_EDIGEST ? 502 : 500, "stored bytes failed verification",
                      g->rc == RON_EDIGEST ? "corrupt_object" : "read_failed", NULL, 0);
            g->req = NULL;
        }
        gw__get_finish(g); /* after the head: the short body closes the connection */
        return;
    }
    if (first) {
        if (gw_get_start(g, g->partial, g->length) < 0) {
            g->req = NULL; /* connection gone: freed by the transport */
            g->gw->stats.client_gone++;
            gw__get_finish(g);
            return;
        }
    }
    g->pos = g->buf_off + g->buf_len;
    g->seg = 0;
    gw_get_pump(g);
}

/* On the loop with the reader open: decide 304 / 416 / HEAD / the ranges. */
/* Any thread (the open work item): conditionals and Range against the size. */
void
gw__get_decide(gw_get_t *g)
{
    gw_range_result_t res = GW_RANGE_FULL;

    if (g->inm != NULL && gw_etag_match(g->inm, g->etag)) {
        g->outcome = GW_OUT_NOT_MODIFIED;
        return;
    }
    if (g->range != NULL && (g->if_range == NULL || gw_if_range_ok(g->if_range, g->etag)))
        res = gw_range_parse(g->range, g->size, g->ranges, &g->n_ranges);
    if (res == GW_RANGE_UNSATISFIABLE) {
        g->outcome = GW_OUT_UNSATISFIABLE;
        return;
    }
    if (res == GW_RANGE_FULL) {
        g->n_ranges = 1;
        g->ranges[0] = (gw_range_t){0, g->size == 0 ? 0 : g->size - 1};
    }
    g->partial = res == GW_RANGE_PARTIAL;
    g->multipart = g->n_ranges > 1;
    g->body_bytes = 0;
    for (size_t i = 0; i < g->n_ranges && g->size > 0; i++)
        g->body_bytes += g->ranges[i].last - g->ranges[i].first + 1;
    g->length = g->body_bytes;
    if (g->multipart) {
        g->parts = ron_xcalloc(1, sizeof *g->parts); /* the work item's, then the loop's */
        gw_multipart_boundary(g->addr, g->boundary);
        for (size_t i = 0; i < g->n_ranges; i++)
            gw_multipart_part_head(g->parts->heads[i], GW_PART_HEAD_MAX, g->boundary, g->ctype,
                                   &g->ranges[i], g->size);
        gw_multipart_tail(g->parts->tail, sizeof g->parts->tail, g->boundary);
        g->length = gw_multipart_length(g->ranges, g->n_ranges, g->boundary, g->ctype, g->size);
    }
    g->outcome = g->head || g->size == 0 ? GW_OUT_HEAD_ONLY : GW_OUT_BODY;
}

/* Worker: open, decide, and read the first chunk: one thread-pool hop for
 * a small object. */
static void
gw_get_open_work(uv_work_t *w)
{
    gw_get_t *g = w->data;

    gw_get_open(g);
    if (g->rc < 0)
        return;
    gw__get_decide(g);
    if (g->outcome != GW_OUT_BODY)
        return;
    g->buf_cap = g->body_bytes < g->gw->cfg.chunk ? (size_t)g->body_bytes : g->gw->cfg.chunk;
    g->buf = ron_xmalloc(g->buf_cap);
    g->pos = g->ranges[0].first;
    gw_get_read_chunk(g);
}

void
gw__get_open_done(uv_work_t *w, int status)
{
    gw_get_t *g = w->data;
    gw_t *gw = g->gw;
    tx_header_t h[8];
    size_t n = 0;
    char cr[48];

    if (g->buf != NULL) { /* allocated by the work item: account for it here */
        gw->stats.buffered += g->buf_cap;
        if (gw->stats.buffered > gw->stats.buffered_peak)
            gw->stats.buffered_peak = gw->stats.buffered;
    }
    if (status < 0 && g->rc == 0)
        g->rc = status;
    if (g->rc == RON_ENOTFOUND && gw->fetch != NULL && !g->remote) {
        gw__remote_open(g); /* not here: storage's get fetches it from peers */
        return;
    }
    if (g->rc == RON_ENOTFOUND) {
        gw__error(g->req, 404, "no object with this address", "not_found", NULL, 0);
        g->req = NULL;
        gw__get_finish(g);
        return;
    }
    if (g->rc == RON_ECAPNEEDED || g->rc == RON_ECAPDENY) {
        gw__storage_refused(gw, g->req, g->rc);
        g->req = NULL;
        gw__get_finish(g);
        return;
    }
    if (g->rc < 0 || g->outcome == GW_OUT_BODY) {
        gw__get_read_done(w, status); /* the first chunk (or the failure) is in */
        return;
    }
    switch (g->outcome) {
    case GW_OUT_NOT_MODIFIED:
        h[n++] = (tx_header_t){"ETag", g->etag};
        h[n++] = (tx_header_t){"Cache-Control", GW_CACHE_IMMUTABLE};
        n += gw__cors(h + n);
        gw->stats.not_modified++;
        (void)tx_respond(g->req, 304, h, n, NULL, 0);
        g->req = NULL;
        break;
    case GW_OUT_UNSATISFIABLE:
        h[0] = (tx_header_t){"Content-Range", cr};
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)g->size);
        gw->stats.unsatisfiable++;
        gw__error(g->req, 416, NULL, "range_not_satisfiable", h, 1);
        g->req = NULL;
        break;
    default: /* HEAD, or an empty body */
        if (gw_get_start(g, g->partial, g->length) < 0)
            g->req = NULL;
        else
            gw->stats.objects_served++;
        break;
    }
    gw__get_finish(g);
}

void
gw__get_begin(gw_t *gw, tx_request_t *req, const uint8_t addr[static STO_ADDR_LEN], bool head,
              const gw_auth_t *a)
{
    gw_get_t *g = ron_xcalloc(1, sizeof *g);
    char text[68];
    int rc;

    g->gw = gw;
    g->req = req;
    g->head = head;
    memcpy(g->tenant, a->tenant, STO_TENANT_LEN);
    g->seg = 3;
    g->work.data = g;
    g->body = gw_body_take(gw, addr);
    g->rd = g->body != NULL ? NULL : gw_cache_take(gw, addr);
    g->inm = tx_request_header(req, "If-None-Match");
    g->range = tx_request_header(req, "Range");
    g->if_range = tx_request_header(req, "If-Range");
    memcpy(g->addr, addr, STO_ADDR_LEN);
    sto_addr_format(addr, text);
    snprintf(g->etag, sizeof g->etag, "\"%s\"", text);
    gw->stats.active++;
    if (g->body != NULL) {
        /* verified bytes in memory: decide and answer on the loop */
        gw->stats.body_hits++;
        g->size = g->body->size;
        memcpy(g->ctype, g->body->ctype, sizeof g->ctype);
        gw__get_decide(g);
        if (g->outcome == GW_OUT_BODY) {
            g->pos = g->ranges[0].first;
            gw_get_body_chunk(g);
        }
        gw__get_open_done(&g->work, 0);
        return;
    }
    if (g->rd != NULL && sto_reader_size(g->rd) <= GW_INLINE_MAX) {
        /* A small object read a moment ago (its reader was cached): one
         * verified piece from the page cache costs less than the thread
         * pool's round trip (two context switches and the queue's locks). */
        gw->stats.inline_reads++;
        gw_get_open_work(&g->work);
        gw__get_open_done(&g->work, 0);
        return;
    }
    if (g->rd == NULL && gw->fetch != NULL && sto_has(gw->cfg.store, addr) == 0) {
        /* Not stored here, and storage's get fetches it: go there at once.
         * The check is one read-only index lookup (no object file is
         * touched), so the miss skips the thread pool's round trip; an
         * object stored meanwhile is served by storage's get all the same. */
        gw->stats.remote_direct++;
        g->rc = RON_ENOTFOUND;
        gw__get_open_done(&g->work, 0);
        return;
    }
    rc = uv_queue_work(gw->loop, &g->work, gw_get_open_work, gw__get_open_done);
    if (rc < 0) {
        g->rc = rc;
        gw__get_open_done(&g->work, 0);
    }
}
