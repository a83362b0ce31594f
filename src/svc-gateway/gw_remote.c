/*
 * gw_remote.c - GET/HEAD of an object this node does not hold, read
 * through the storage service's get (gw_set_fetch), which fetches the
 * missing pieces from peers and verifies them before answering.
 *
 * It drives the same gw_get_t as a local read (gw_get.c) and only replaces
 * its two thread-pool steps: the open (the first get brings the size, and
 * for a whole-object GET already the first chunk's bytes, so the first
 * chunk costs no second round trip) and each chunk's read. Once the first
 * chunk is in, up to GW_REMOTE_WINDOW gets of the next chunks (at most
 * STO_SVC_MAX_CHUNK bytes each, with "ahead" telling storage what comes
 * after them) are kept in flight or answered ahead of the writes, in a ring
 * in read order: storage serves them while the writer sends the previous
 * chunk, instead of one bus round trip per chunk. The writer takes the
 * oldest answer by swapping buffers (no copy) and the freed slot asks for
 * the next chunk. The answers come back on the loop; the decision, the
 * writes and the cleanup are gw_get.c's.
 *
 * Invariants: every answer must repeat the size learnt at the open; the
 * first must hold 1 byte to the buffer's capacity, each later one exactly
 * the bytes asked (they lie inside the size), else RON_EPROTO and the stream
 * is cut; the request struct lives until every get sent has been answered
 * (gets); a remote stream holds at most 1 + GW_REMOTE_WINDOW chunk buffers;
 * the client's capability is copied once (the gets outlive the request's
 * views) and forwarded in each get's cap section, so storage checks it too.
 */

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "gw_internal.h"
#include "ron_bytes.h"
#include "ron_proto.h"

static void gw_remote_first_done(void *arg, int status, const oap_frame_t *resp);

/* The storage service's answer to one get of a remote read (the request's
 * pieces verified by the service, fetched from peers when it lacked them). */
static int
gw_remote_answer(const oap_frame_t *resp, uint64_t *size_out, const uint8_t **raw_out,
                 size_t *raw_len_out)
{
    uint32_t jl;
    json_t *o;
    const char *sz;
    int rc = RON_EPROTO;

    if (resp->payload_len < 4)
        return RON_EPROTO;
    jl = ron_get_u32be(resp->payload);
    if (jl > resp->payload_len - 4)
        return RON_EPROTO;
    o = json_loadb((const char *)resp->payload + 4, jl, 0, NULL);
    sz = json_string_value(json_object_get(o, "size"));
    if (sz != NULL && ron_parse_u64(sz, strlen(sz), size_out) == 0) {
        *raw_out = resp->payload + 4 + jl;
        *raw_len_out = resp->payload_len - 4 - jl;
        rc = 0;
    }
    json_decref(o);
    return rc;
}

/* Send one storage get of [off, off + len) for g; cb gets the answer. ahead:
 * the bytes g reads next after it (storage fetches them along on a miss, so
 * one chunk in flight here still keeps several overlay requests going). */
static int
gw_remote_get(gw_get_t *g, uint64_t off, uint64_t len, uint64_t ahead, rbus_reply_cb cb, void *arg)
{
    char js[240], hex[68];
    uint8_t buf[4 + sizeof js];
    size_t jl;
    rbus_request_opts_t ro = {0};

    sto_addr_format(g->addr, hex);
    snprintf(js, sizeof js,
             "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%llu\",\"length\":\"%llu\","
             "\"ahead\":\"%llu\"}",
             hex, (unsigned long long)off, (unsigned long long)len, (unsigned long long)ahead);
    jl = strlen(js);
    (void)proto_json_frame(buf, js, (uint32_t)jl);
    ro.app_proto_id = OAP_APP_STORAGE;
    ro.deadline_ms = GW_FETCH_DEADLINE_MS;
    memcpy(ro.tenant_id, g->tenant, sizeof ro.tenant_id);
    ro.cap = g->cap;
    ro.cap_len = g->cap_len;
    return rbus_request_ex(g->gw->fetch, &ro, buf, 4 + jl, cb, arg); /* for the client */
}

/* Bytes g reads after end (exclusive) in range ri and the later ones. */
static uint64_t
gw_remote_ahead_from(const gw_get_t *g, size_t ri, uint64_t end)
{
    uint64_t ahead = 0;

    for (size_t i = ri; i < g->n_ranges; i++) {
        const gw_range_t *r = &g->ranges[i];
        if (r->last + 1 > end)
            ahead += r->last + 1 - (r->first > end ? r->first : end);
    }
    return ahead;
}

/* The storage status of a failed remote get as a local code. */
static int
gw_remote_rc(int status, const oap_frame_t *resp)
{
    if (status < 0)
        return status;
    switch (resp->code) {
    case 401: /* the storage service refused the forwarded capability */
        return RON_ECAPNEEDED;
    case 403:
        return RON_ECAPDENY;
    case 404:
        return RON_ENOTFOUND;
    case 416:
        return RON_ERANGE;
    case 500:
        return RON_EDIGEST;
    case 504:
        return RON_ETIMEOUT;
    default:
        return RON_EUNAVAIL;
    }
}

/* Hand the oldest get's answer to the writer: its buffer becomes g->buf
 * (the old one, written out, goes back to the slot for a later get). */
static void
gw_remote_deliver(gw_get_t *g)
{
    struct gw_rget *q = &g->rq[g->rq_head];
    uint8_t *spare = g->buf;

    assert(q->done);
    g->rq_wait = false;
    g->rc = q->rc;
    if (g->rc == 0 && q->off != g->pos)
        g->rc = RON_EPROTO; /* defensive: the ring follows the writer's ranges */
    if (g->rc < 0) {
        g->bad = true;
    } else {
        g->buf = q->data;
        q->data = spare;
        g->buf_off = q->off;
        g->buf_len = q->len;
    }
    q->done = false;
    g->rq_head = (g->rq_head + 1) % GW_REMOTE_WINDOW;
    g->rq_n--;
    gw__get_read_done(&g->work, 0);
}

static void
gw_remote_rget_done(void *arg, int status, const oap_frame_t *resp)
{
    struct gw_rget *q = arg;
    gw_get_t *g = q->g;
    const uint8_t *raw = NULL;
    uint64_t size = 0;
    size_t n = 0;

    g->gets--;
    q->done = true;
    if (g->req == NULL) { /* ended meanwhile: the answer is not wanted */
        gw__get_release(g);
        return;
    }
    q->rc = status == 0 && resp->code == 200 ? gw_remote_answer(resp, &size, &raw, &n)
                                             : gw_remote_rc(status, resp);
    /* storage answers exactly the bytes asked (they lie inside the size) */
    if (q->rc == 0 && (size != g->size || n != q->len))
        q->rc = RON_EPROTO;
    if (q->rc == 0)
        memcpy(q->data, raw, n);
    if (g->rq_wait && q == &g->rq[g->rq_head])
        gw_remote_deliver(g);
}

/* Send gets for the chunks after the last one asked, until GW_REMOTE_WINDOW
 * are in the ring or the ranges are all asked. A get that cannot be sent
 * waits for a later call while others are in the ring; alone, it is a
 * failed answer (as the one get of a read was before gets went ahead). */
static void
gw_remote_fill(gw_get_t *g)
{
    while (g->rq_n < GW_REMOTE_WINDOW && g->fill_ri < g->n_ranges) {
        const gw_range_t *r = &g->ranges[g->fill_ri];
        struct gw_rget *q = &g->rq[(g->rq_head + g->rq_n) % GW_REMOTE_WINDOW];
        uint64_t want = r->last + 1 - g->fill_pos;
        size_t len = want < g->buf_cap ? (size_t)want : g->buf_cap;
        size_t ri;
        uint64_t pos;
        int rc;

        if (q->data == NULL) {
            q->data = ron_xmalloc(g->buf_cap);
            g->gw->stats.buffered += g->buf_cap;
            if (g->gw->stats.buffered > g->gw->stats.buffered_peak)
                g->gw->stats.buffered_peak = g->gw->stats.buffered;
        }
        q->g = g;
        q->off = g->fill_pos;
        q->len = len;
        q->rc = 0;
        q->done = false;
        ri = g->fill_ri;
        pos = g->fill_pos;
        g->fill_pos += len;
        if (g->fill_pos > r->last && ++g->fill_ri < g->n_ranges)
            g->fill_pos = g->ranges[g->fill_ri].first;
        g->rq_n++;
        g->gets++; /* counted before the send, so an answer can never find it at 0 */
        rc = gw_remote_get(g, q->off, len, gw_remote_ahead_from(g, g->fill_ri, g->fill_pos),
                           gw_remote_rget_done, q);
        if (rc < 0)
            g->gets--;
        if (rc < 0 && g->rq_n > 1) {
            /* the bus is full (RBUS_MAX_INFLIGHT) or down: gets already in the
             * ring carry on, and this one is sent at a later read */
            g->rq_n--;
            g->fill_ri = ri;
            g->fill_pos = pos;
            break;
        }
        if (rc < 0) { /* the writer's own chunk: its failure is the answer */
            q->rc = rc;
            q->done = true;
        }
    }
}

/* The next chunk of a remote read (at g->pos): the oldest get's answer, now
 * or when it comes; the gets after it are already on their way. */
void
gw__remote_read(gw_get_t *g)
{
    gw_remote_fill(g);
    if (g->rq_n == 0) { /* defensive: the writer asks only for bytes of its ranges */
        g->rc = RON_EPROTO;
        g->bad = true;
        gw__get_read_done(&g->work, 0);
        return;
    }
    g->rq_wait = true;
    if (g->rq[g->rq_head].done)
        gw_remote_deliver(g);
}

/* The first chunk is in g->buf at [buf_off, buf_off + buf_len): ask for the
 * next ones at once, before it is even written. */
static void
gw_remote_ahead_start(gw_get_t *g)
{
    g->fill_ri = 0;
    g->fill_pos = g->buf_off + g->buf_len;
    while (g->fill_ri < g->n_ranges && g->fill_pos > g->ranges[g->fill_ri].last)
        if (++g->fill_ri < g->n_ranges)
            g->fill_pos = g->ranges[g->fill_ri].first;
    gw_remote_fill(g);
}

/* Free the ring's buffers (g is being freed: no get is in flight). */
void
gw__remote_free(gw_get_t *g)
{
    assert(g->gets == 0);
    for (size_t i = 0; i < GW_REMOTE_WINDOW; i++) {
        if (g->rq[i].data != NULL) {
            g->gw->stats.buffered -= g->buf_cap;
            free(g->rq[i].data);
            g->rq[i].data = NULL;
        }
    }
}

/* The first remote get answered: size and leading bytes known; decide, then
 * read the first chunk through storage too. */
static void
gw_remote_open_done(void *arg, int status, const oap_frame_t *resp)
{
    gw_get_t *g = arg;
    gw_t *gw = g->gw;
    const uint8_t *raw = NULL;
    size_t n = 0;
    char ra[16];
    tx_header_t h[1];

    g->rc = status == 0 && resp->code == 200 ? gw_remote_answer(resp, &g->size, &raw, &n)
                                             : gw_remote_rc(status, resp);
    if (g->rc == RON_ETIMEOUT || g->rc == RON_EUNAVAIL || g->rc == RON_EBUSY ||
        g->rc == RON_ESHUTDOWN) {
        /* nothing decided: the fetch may work on a retry */
        snprintf(ra, sizeof ra, "%u", GW_FETCH_RETRY_AFTER_S);
        h[0] = (tx_header_t){"Retry-After", ra};
        gw__error(g->req, g->rc == RON_ETIMEOUT ? 504 : 503, "the object could not be fetched now",
                  "fetch_unavailable", h, 1);
        g->req = NULL;
        gw__get_finish(g);
        return;
    }
    if (g->rc == 0) {
        snprintf(g->ctype, sizeof g->ctype, "%s", gw_sniff(raw, n, (uint64_t)n == g->size));
        gw__get_decide(g);
        if (g->outcome == GW_OUT_BODY) {
            uint64_t cap = g->body_bytes < gw->cfg.chunk ? g->body_bytes : gw->cfg.chunk;
            g->buf_cap = (size_t)(cap < STO_SVC_MAX_CHUNK ? cap : STO_SVC_MAX_CHUNK);
            g->buf = ron_xmalloc(g->buf_cap);
            g->pos = g->ranges[0].first;
            g->work.data = g;
            g->rc = 0;
            uint64_t len = g->ranges[0].last + 1 - g->pos < g->buf_cap
                               ? g->ranges[0].last + 1 - g->pos
                               : g->buf_cap;
            if (g->pos == 0 && n > 0) {
                /* the first answer already holds the first chunk's bytes: no second get */
                g->buf_len = (size_t)(n < len ? n : len);
                g->buf_off = 0;
                memcpy(g->buf, raw, g->buf_len);
                gw_remote_ahead_start(g);
                gw__get_open_done(&g->work, 0);
                return;
            }
            if (gw_remote_get(g, g->pos, len, gw_remote_ahead_from(g, 0, g->pos + len),
                              gw_remote_first_done, g) == 0)
                return;
            g->rc = RON_EUNAVAIL;
        }
    }
    gw__get_open_done(&g->work, 0);
}

/* The first chunk of a remote read arrived: the usual path from here. */
static void
gw_remote_first_done(void *arg, int status, const oap_frame_t *resp)
{
    gw_get_t *g = arg;
    const uint8_t *raw = NULL;
    uint64_t size = 0;
    size_t n = 0;

    g->rc = status == 0 && resp->code == 200 ? gw_remote_answer(resp, &size, &raw, &n)
                                             : gw_remote_rc(status, resp);
    if (g->rc == 0 && (size != g->size || n == 0 || n > g->buf_cap))
        g->rc = RON_EPROTO;
    if (g->rc == 0) {
        memcpy(g->buf, raw, n);
        g->buf_off = g->pos;
        g->buf_len = n;
        gw_remote_ahead_start(g);
    } else {
        g->bad = true;
    }
    gw__get_open_done(&g->work, 0);
}

/* A local miss: ask the storage service, whose get fetches from peers. */
void
gw__remote_open(gw_get_t *g)
{
    /* the first chunk's pieces come with the size (one round trip less),
     * unless a Range may want other bytes: then only the sniffer's */
    uint64_t len = g->range != NULL || g->head ? GW_SNIFF_LEN : STO_SVC_MAX_CHUNK;
    const char *tok;
    size_t tok_len;

    g->remote = true;
    g->rc = 0;
    /* the gets outlive the request's views: keep a copy of the capability */
    if (gw__token(g->req, &tok, &tok_len) == 0 && tok != NULL && tok_len <= OAP_MAX_CAP) {
        g->cap = ron_xmalloc(tok_len);
        memcpy(g->cap, tok, tok_len);
        g->cap_len = tok_len;
    }
    /* a whole-object GET reads on from here: let storage fetch ahead at once */
    if (gw_remote_get(g, 0, len, g->range != NULL || g->head ? 0 : STO_SVC_FETCH_AHEAD_MAX,
                      gw_remote_open_done, g) < 0)
        gw_remote_open_done(g, RON_EUNAVAIL, NULL); /* storage unreachable: 503, not a 404 */
}

void
gw_set_fetch(gw_t *gw, rbus_peer_t *peer)
{
    gw->fetch = peer;
}
