/*
 * gw_routes.c - the gateway's routes on the ron-transport handler API.
 *
 * GET/HEAD /o/b3:<hex> is a request struct with explicit steps: an open
 * work item on the thread pool (sto_reader_open verifies the last piece;
 * objects stored without a type have their first bytes read and sniffed),
 * then on the loop the conditional/Range decision (304, 416, 200, 206,
 * multipart 206), then one read work item per chunk (at most cfg.chunk
 * bytes, verified by the reader) alternating with one write of that chunk:
 * the next read is queued only when the transport has finished with the
 * last buffer, and a write refused with RON_EAGAIN waits for the drain
 * callback. A stream therefore holds one chunk buffer, whatever the
 * object's size or the client's speed. The first chunk is read before the
 * head is sent, so a corrupt first piece is a 502 with the envelope; a
 * later one aborts the stream (the body is cut short and the transport
 * closes the connection) and is counted. An object of at most
 * GW_INLINE_MAX bytes whose reader is cached (it was read a moment ago) is
 * opened, decided and read on the loop instead: the same verified read,
 * without the thread pool's round trip.
 *
 * Verified bodies of hot objects (larger than GW_INLINE_MAX, read whole in
 * their first chunk: at most GW_BODY_CACHE_OBJECT) are kept in memory, at
 * most GW_BODY_CACHE of them and GW_BODY_CACHE_BYTES in all, least recently
 * used evicted: a later GET/HEAD of one is answered from those bytes on the
 * loop, with no read and no hashing. Only bytes that passed verification
 * are kept, and a body once evicted is read and verified again: a byte
 * changed on disk afterwards is never sent.
 *
 * GET /n/<name> resolves through svc-index on the thread pool and answers
 * 302 to /o/b3:<hex>; PUT /n/<name> takes a JSON record (ron-naming's form)
 * and publishes it under the acceptance rule.
 *
 * POST /o and PUT /o/b3:<hex> stream: gw_head (the transport's head hook)
 * opts their bodies in, each piece goes into the put (sto_put_write on the
 * thread pool, hashing as it goes, or put_write to the storage service) and
 * is released only once written, so an upload of any size holds one piece;
 * commit checks a PUT's address (409 bad_digest, nothing stored). Without
 * the hook the transport's buffered body is stored the same way, as one
 * piece.
 *
 * Capabilities (gw_set_guard): each route is decided by the guard once its
 * path is validated and before its first store, index or bus call, so a
 * refusal changes nothing. The token stays a view into the request (the
 * Authorization header or the query) all along the hot path: guard_check
 * keys its verdict cache on it, and nothing here copies or parses it. Bus
 * requests made for the client carry it (and the tenant) in their cap
 * section; only a remote read, whose gets outlive the request's views,
 * keeps a copy.
 */
#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "idx_client.h"
#include "ron_err.h"
#include "sto_client.h"
#include "ron_util.h"
#include "svc_gateway.h"

struct gw {
    uv_loop_t *loop;
    gw_config_t cfg;
    rbus_peer_t *index; /* borrowed, may be NULL: names go to the index service */
    rbus_peer_t *fetch; /* borrowed, may be NULL: local misses read through storage's get */
    guard_t *guard;     /* borrowed, may be NULL: no enforcement */
    gw_stats_t stats;
    void (*closed_cb)(void *arg); /* gw_close: runs once active reaches 0 */
    void *closed_arg;
    bool closing;
    bool closer_closed;
    uv_timer_t closer; /* never started: closing it defers gw_close's callback a turn */
    struct gw_up *hooked; /* made by gw_head, taken by gw_handle for the same request */
    /* Idle readers of small objects, reused by later requests for the same
     * address: a reader is an open fd, a mapped outboard and a verified last
     * piece, so reuse saves open/mmap/munmap and that verification. Every
     * read still verifies its pieces. A reader is in here or with exactly
     * one request (handed to the pool through uv_queue_work). */
    struct {
        uint8_t addr[STO_ADDR_LEN];
        sto_reader_t *rd;
        uint64_t used; /* tick of its return, for LRU eviction */
    } cache[GW_READER_CACHE];
    size_t n_cache;
    uint64_t tick;
    /* Verified bodies kept in memory (see the file comment). A request
     * sending one holds a reference; an evicted body is freed by its last. */
    struct gw_body *bodies[GW_BODY_CACHE];
    size_t n_bodies;
};

/* A verified object body, shared by the cache and the requests sending it. */
typedef struct gw_body {
    uint8_t addr[STO_ADDR_LEN];
    uint64_t size;
    char ctype[STO_CTYPE_MAX + 1];
    unsigned refs;   /* the cache's (while listed) + one per request */
    uint64_t used;   /* tick of its last use, for LRU eviction */
    uint8_t *data;   /* size verified bytes */
} gw_body_t;

static void gw_close_check(gw_t *gw);

/* A request's state is gone: count it, and finish a pending gw_close. */
static void
gw_release(gw_t *gw)
{
    gw->stats.active--;
    if (gw->closing)
        gw_close_check(gw);
}

#define GW_MAX_HDRS 16

typedef enum {
    GW_OUT_BODY,          /* 200/206 with a body */
    GW_OUT_HEAD_ONLY,     /* HEAD, or an empty object: the head alone */
    GW_OUT_NOT_MODIFIED,  /* 304 */
    GW_OUT_UNSATISFIABLE, /* 416 */
} gw_outcome_t;

/* One GET/HEAD of an object. */
typedef struct gw_get {
    uv_work_t work;
    gw_t *gw;
    tx_request_t *req; /* NULL once ended */
    uint8_t addr[STO_ADDR_LEN];
    char etag[GW_ADDR_TEXT_LEN + 3];
    bool head;
    /* worker results */
    int rc;
    sto_reader_t *rd;
    uint64_t size;
    char ctype[STO_CTYPE_MAX + 1];
    /* request headers (views into req, read by the open work item) */
    const char *inm, *range, *if_range;
    /* the plan */
    gw_outcome_t outcome;
    uint64_t body_bytes; /* bytes of the ranges */
    uint64_t length;     /* Content-Length (multipart framing included) */
    gw_range_t ranges[GW_MAX_RANGES];
    size_t n_ranges;
    bool multipart;
    bool partial; /* Range honoured: 206 */
    char boundary[GW_BOUNDARY_LEN + 1];
    struct gw_parts {          /* multipart framing, allocated only for it */
        char heads[GW_MAX_RANGES][GW_PART_HEAD_MAX];
        char tail[GW_PART_HEAD_MAX];
    } *parts;
    size_t ri;    /* current range */
    uint64_t pos; /* next offset of the current range to read */
    /* the one buffer */
    uint8_t *buf;
    size_t buf_cap;
    size_t buf_len;   /* bytes read into buf by the last work item */
    uint64_t buf_off; /* their offset in the object */
    /* output state */
    int seg;         /* next segment of this chunk to write: 0 head, 1 data, 2 tail, 3 none */
    unsigned writes; /* writes queued whose done has not run */
    bool started, waiting, gone;
    bool bad; /* a store call failed: the reader is not reused */
    gw_body_t *body; /* answered from a verified body in memory (referenced) */
    bool remote;     /* a local miss read through the storage service's get (it fetches) */
    uint8_t tenant[STO_TENANT_LEN]; /* whom remote gets act for */
    char *cap;       /* remote: the client's capability (copied at the first get), or NULL */
    size_t cap_len;
} gw_get_t;

/* One POST /o or PUT /o/b3:<hex> (see gw_up_step). */
typedef struct gw_up {
    uv_work_t work;
    gw_t *gw;
    tx_request_t *req;
    bool put;            /* PUT: the bytes must hash to addr */
    bool streamed;       /* the body comes through gw_up_body; else view.body, whole */
    bool remote;         /* through the storage service (gw_set_storage) */
    bool begun, busy, ended;
    int op;              /* gw_op_t in flight (busy) or last */
    uint8_t addr[STO_ADDR_LEN];
    char ctype[STO_CTYPE_MAX + 1];
    int had;             /* PUT: sto_has before the put */
    sto_put_t *lp;       /* local put; the worker's while busy */
    sto_client_put_t *rp; /* remote put */
    const uint8_t *piece; /* bytes to write: the transport's piece (borrowed until released) */
    size_t piece_len;
    int rc;              /* first store error */
    int abort;           /* the transport's abort (RON_ECLOSED, RON_ETOOBIG, ...) */
    uint8_t tenant[STO_TENANT_LEN]; /* whom the put is for (the token's tenant, else cfg's) */
    uint64_t max_bytes;  /* the token's max-bytes (UINT64_MAX: none) */
    uint64_t received;   /* body bytes so far */
} gw_up_t;

static void gw_get_pump(gw_get_t *g);
static void gw_get_open_done(uv_work_t *w, int status);
static void gw_remote_first_done(void *arg, int status, const oap_frame_t *resp);
static void gw_remote_open(gw_get_t *g);
static bool gw_ctype_ok(const char *ct);
static bool gw_addr_parse(const char *s, uint8_t addr_out[static STO_ADDR_LEN]);

/* ---- responses ---- */

static size_t
gw_cors(tx_header_t *h)
{
    h[0] = (tx_header_t){"Access-Control-Allow-Origin", GW_CORS_ORIGIN};
    h[1] = (tx_header_t){"Access-Control-Expose-Headers", GW_CORS_EXPOSE};
    return 2;
}

/* The envelope (retry_after_ms in it when > 0) with CORS headers and extra
 * (may be NULL) added. */
static void
gw_error_retry(tx_request_t *req, int status, const char *message, const char *reason,
               const tx_header_t *extra, size_t n_extra, uint32_t retry_after_ms)
{
    char body[TX_ENVELOPE_MAX];
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0, len;

    len = tx_envelope_format(body, sizeof body, status, message, reason,
                             tx_request_view(req)->corr_id, retry_after_ms);
    h[n++] = (tx_header_t){"Content-Type", "application/json"};
    n += gw_cors(h + n);
    for (size_t i = 0; i < n_extra && n < GW_MAX_HDRS; i++)
        h[n++] = extra[i];
    (void)tx_respond(req, status, h, n, body, len);
}

/* The envelope with CORS headers and extra (may be NULL) added. */
static void
gw_error(tx_request_t *req, int status, const char *message, const char *reason,
         const tx_header_t *extra, size_t n_extra)
{
    gw_error_retry(req, status, message, reason, extra, n_extra, 0);
}

static void
gw_preflight(tx_request_t *req)
{
    tx_header_t h[] = {
        {"Access-Control-Allow-Origin", GW_CORS_ORIGIN},
        {"Access-Control-Allow-Methods", GW_CORS_METHODS},
        {"Access-Control-Allow-Headers", GW_CORS_HEADERS},
        {"Access-Control-Max-Age", GW_CORS_MAX_AGE},
    };
    (void)tx_respond(req, 204, h, sizeof h / sizeof h[0], NULL, 0);
}

static void
gw_not_allowed(tx_request_t *req, const char *allow)
{
    tx_header_t h = {"Allow", allow};
    gw_error(req, 405, NULL, "method_not_allowed", &h, 1);
}

/* ---- capabilities (gw_set_guard) ---- */

/* Who a request acts as once the guard allowed it. */
typedef struct {
    uint8_t tenant[STO_TENANT_LEN]; /* the token's tenant caveat, else cfg.tenant */
    uint64_t max_bytes;             /* the token's max-bytes; UINT64_MAX: none */
    unsigned pending;               /* AUTH_PENDING_* left to the gateway */
} gw_auth_t;

/* The value of the query parameter cap in q (a view), without base64
 * padding ("=" or "%3D": it is optional), or NULL. */
static const char *
gw_query_cap(const char *q, size_t *len_out)
{
    for (const char *p = q; *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n >= 4 && memcmp(p, "cap=", 4) == 0) {
            const char *v = p + 4;
            n -= 4;
            for (;;) {
                if (n >= 1 && v[n - 1] == '=')
                    n--;
                else if (n >= 3 && v[n - 3] == '%' && v[n - 2] == '3' &&
                         (v[n - 1] == 'D' || v[n - 1] == 'd'))
                    n -= 3;
                else
                    break;
            }
            *len_out = n;
            return v;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return NULL;
}

/*
 * The client's capability: `Authorization: Bearer <token>` (scheme
 * case-insensitive, RFC 6750), else `?cap=<token>`. A view into the request
 * (valid until it is answered); *tok_out NULL when none came. Returns 0, or
 * RON_ECAPFORMAT for an Authorization of another scheme or an empty token.
 */
static int
gw_token(tx_request_t *req, const char **tok_out, size_t *len_out)
{
    const char *a = tx_request_header(req, "Authorization");
    const char *q = tx_request_view(req)->query;

    *tok_out = NULL;
    *len_out = 0;
    if (a != NULL) {
        if (strncasecmp(a, "Bearer", 6) != 0 || (a[6] != ' ' && a[6] != '\t'))
            return RON_ECAPFORMAT;
        a += 7;
        while (*a == ' ' || *a == '\t')
            a++;
        *tok_out = a;
        *len_out = strlen(a);
    } else if (q[0] != '\0') {
        *tok_out = gw_query_cap(q, len_out);
    }
    if (*tok_out != NULL && *len_out == 0) {
        *tok_out = NULL;
        return RON_ECAPFORMAT;
    }
    return 0;
}

/* The guard's request for req: everything borrowed from the request. */
static void
gw_guard_req(tx_request_t *req, auth_op_t op, const char *addr, const char *name, uint64_t size,
             const char *target, guard_req_t *out)
{
    const tx_request_view_t *v = tx_request_view(req);

    memset(out, 0, sizeof *out);
    out->op = op;
    out->addr = addr;
    out->name = name;
    out->size = size;
    out->target = target; /* an address, a name or a path: never the query */
    if (v->peer != NULL && v->peer->ss_family != AF_UNSPEC)
        out->source = (const struct sockaddr *)v->peer;
}

/* Answer a refusal: the envelope with the guard's status, slug and sentence;
 * 401 with WWW-Authenticate (RFC 6750), 429 with Retry-After. */
static void
gw_refuse(gw_t *gw, tx_request_t *req, const guard_result_t *res, const char *message)
{
    tx_header_t h[1];
    char ra[16];
    size_t n = 0;
    int status = guard_status_of(res->code);

    gw->stats.auth_rejected++;
    if (status == 401) {
        h[n++] = (tx_header_t){"WWW-Authenticate",
                               res->anonymous ? "Bearer" : "Bearer error=\"invalid_token\""};
    } else if (status == 429) {
        snprintf(ra, sizeof ra, "%u", res->retry_after_s > 0 ? res->retry_after_s : 1u);
        h[n++] = (tx_header_t){"Retry-After", ra};
    }
    gw_error_retry(req, status, message != NULL ? message : res->reason, res->slug, h, n,
                   status == 429 ? (res->retry_after_s > 0 ? res->retry_after_s : 1u) * 1000u
                                 : 0);
}

/*
 * Decide req with the guard (none: allowed). Allowed: true, with whom it
 * acts for in *a. Refused: the refusal is answered (and counted and audited
 * by the guard), false. The token is never copied here: the verdict cache
 * keys on it, and nothing on this path allocates.
 */
static bool
gw_authorize(gw_t *gw, tx_request_t *req, auth_op_t op, const char *addr, const char *name,
             uint64_t size, const char *target, gw_auth_t *a)
{
    guard_req_t gr;
    guard_result_t res;
    const char *tok;
    size_t tok_len;
    int rc;

    memcpy(a->tenant, gw->cfg.tenant, STO_TENANT_LEN);
    a->max_bytes = UINT64_MAX;
    a->pending = 0;
    if (gw->guard == NULL)
        return true;
    rc = gw_token(req, &tok, &tok_len);
    gw_guard_req(req, op, addr, name, size, target, &gr);
    gr.token = tok;
    gr.token_len = tok_len;
    if (rc < 0)
        rc = guard_reject(gw->guard, &gr, rc, &res);
    else
        rc = guard_check(gw->guard, &gr, &res);
    if (rc != 0) {
        gw_refuse(gw, req, &res, NULL);
        return false;
    }
    if (!res.anonymous) {
        if (res.verdict.grant.has_tenant)
            memcpy(a->tenant, res.verdict.grant.tenant, STO_TENANT_LEN);
        a->max_bytes = res.verdict.grant.max_bytes;
        a->pending = res.verdict.pending;
    }
    return true;
}

/* Refuse req after guard_check allowed it: a pending constraint failed
 * (code RON_ECAPDENY). Counted and audited as a rejection. */
static void
gw_refuse_late(gw_t *gw, tx_request_t *req, auth_op_t op, const char *target, int code,
               const char *message)
{
    guard_req_t gr;
    guard_result_t res;

    gw_guard_req(req, op, NULL, NULL, AUTH_SIZE_UNKNOWN, target, &gr);
    (void)gw_token(req, &gr.token, &gr.token_len);
    (void)guard_reject(gw->guard, &gr, code, &res);
    gw_refuse(gw, req, &res, message);
}

/* The storage service refused the capability the gateway forwarded (it
 * checks on its own: a revocation may reach it first). rc RON_ECAPNEEDED
 * (its 401) or RON_ECAPDENY (its 403); nothing was stored or read. */
static void
gw_storage_refused(gw_t *gw, tx_request_t *req, int rc)
{
    tx_header_t h = {"WWW-Authenticate", "Bearer error=\"invalid_token\""};

    gw->stats.auth_rejected++;
    if (rc == RON_ECAPNEEDED)
        gw_error(req, 401, "the storage service refused the capability", "capability_invalid",
                 &h, 1);
    else
        gw_error(req, 403, "the storage service does not allow this request", "forbidden",
                 NULL, 0);
}

void
gw_set_guard(gw_t *gw, guard_t *guard)
{
    gw->guard = guard;
}

/* ---- GET / HEAD ---- */

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

static void
gw_cache_clear(gw_t *gw)
{
    while (gw->n_cache > 0)
        sto_reader_close(gw->cache[--gw->n_cache].rd);
}

static void gw_body_evict(gw_t *gw, size_t i);

static void
gw_bodies_clear(gw_t *gw)
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
    free(g->parts);
    free(g->cap);
    free(g);
    gw_release(gw);
}

/* Finish the response (whole or cut short) and free g once no write holds it. */
static void
gw_get_finish(gw_get_t *g)
{
    tx_request_t *req = g->req;

    /* tx_respond_end may run the done callbacks of queued writes (a gone
     * connection): hold g across it so they cannot free it under us */
    g->req = NULL;
    g->writes++;
    if (req != NULL)
        (void)tx_respond_end(req);
    g->writes--;
    if (g->writes == 0)
        gw_get_free(g);
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

static void gw_get_read_done(uv_work_t *w, int status);

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
    jl = (uint32_t)resp->payload[0] << 24 | (uint32_t)resp->payload[1] << 16 |
         (uint32_t)resp->payload[2] << 8 | resp->payload[3];
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
gw_remote_get(gw_get_t *g, uint64_t off, uint64_t len, uint64_t ahead, rbus_reply_cb cb)
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
    buf[0] = (uint8_t)(jl >> 24);
    buf[1] = (uint8_t)(jl >> 16);
    buf[2] = (uint8_t)(jl >> 8);
    buf[3] = (uint8_t)jl;
    memcpy(buf + 4, js, jl);
    ro.app_proto_id = OAP_APP_STORAGE;
    ro.deadline_ms = GW_FETCH_DEADLINE_MS;
    memcpy(ro.tenant_id, g->tenant, sizeof ro.tenant_id);
    ro.cap = g->cap;
    ro.cap_len = g->cap_len;
    return rbus_request_ex(g->gw->fetch, &ro, buf, 4 + jl, cb, g); /* for the client */
}

/* Bytes g reads after end (exclusive) in its current range and the later ones. */
static uint64_t
gw_remote_ahead(const gw_get_t *g, uint64_t end)
{
    uint64_t ahead = 0;

    for (size_t i = g->ri; i < g->n_ranges; i++) {
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

static void
gw_remote_read_done(void *arg, int status, const oap_frame_t *resp)
{
    gw_get_t *g = arg;
    const uint8_t *raw = NULL;
    uint64_t size = 0;
    size_t n = 0;

    g->rc = status == 0 && resp->code == 200 ? gw_remote_answer(resp, &size, &raw, &n)
                                             : gw_remote_rc(status, resp);
    if (g->rc == 0 && (size != g->size || n == 0 || n > g->buf_cap))
        g->rc = RON_EPROTO;
    if (g->rc < 0) {
        g->bad = true;
    } else {
        memcpy(g->buf, raw, n);
        g->buf_off = g->pos;
        g->buf_len = n;
    }
    gw_get_read_done(&g->work, 0);
}

/* The next chunk of a remote read: one storage get (at most 256 KiB). */
static void
gw_remote_read(gw_get_t *g)
{
    const gw_range_t *r = &g->ranges[g->ri];
    uint64_t want = r->last + 1 - g->pos;
    uint64_t len = want < g->buf_cap ? want : g->buf_cap;
    int rc = gw_remote_get(g, g->pos, len, gw_remote_ahead(g, g->pos + len), gw_remote_read_done);

    if (rc < 0) {
        g->rc = rc;
        g->bad = true;
        gw_get_read_done(&g->work, 0);
    }
}

static void
gw_get_queue_read(gw_get_t *g)
{
    if (g->remote) {
        gw_remote_read(g);
        return;
    }
    if (g->body != NULL) {
        gw_get_body_chunk(g);
        gw_get_read_done(&g->work, 0);
        return;
    }
    int rc = uv_queue_work(g->gw->loop, &g->work, gw_get_read_work, gw_get_read_done);
    if (rc < 0) {
        g->rc = rc;
        gw_get_read_done(&g->work, 0);
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
        if (g->writes == 0)
            gw_get_free(g);
        return;
    }
    if (g->writes > 0 || g->seg < 3)
        return;
    if (g->gone) {
        g->gw->stats.client_gone++;
        gw_get_finish(g);
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
        gw_get_finish(g);
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
            gw_get_finish(g);
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
    *n += gw_cors(h + *n);
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

static void
gw_get_read_done(uv_work_t *w, int status)
{
    gw_get_t *g = w->data;
    bool first = !g->started;

    if (status < 0 && g->rc == 0)
        g->rc = status; /* cancelled */
    if (g->rc < 0) {
        if (g->rc == RON_EDIGEST)
            first ? g->gw->stats.corrupt_before++ : g->gw->stats.corrupt_aborted++;
        if (first) {
            gw_error(g->req, g->rc == RON_EDIGEST ? 502 : 500, "stored bytes failed verification",
                     g->rc == RON_EDIGEST ? "corrupt_object" : "read_failed", NULL, 0);
            g->req = NULL;
        }
        gw_get_finish(g); /* after the head: the short body closes the connection */
        return;
    }
    if (first) {
        if (gw_get_start(g, g->partial, g->length) < 0) {
            g->req = NULL; /* connection gone: freed by the transport */
            g->gw->stats.client_gone++;
            gw_get_finish(g);
            return;
        }
    }
    g->pos = g->buf_off + g->buf_len;
    g->seg = 0;
    gw_get_pump(g);
}

/* On the loop with the reader open: decide 304 / 416 / HEAD / the ranges. */
/* Any thread (the open work item): conditionals and Range against the size. */
static void
gw_get_decide(gw_get_t *g)
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
    gw_get_decide(g);
    if (g->outcome != GW_OUT_BODY)
        return;
    g->buf_cap = g->body_bytes < g->gw->cfg.chunk ? (size_t)g->body_bytes : g->gw->cfg.chunk;
    g->buf = ron_xmalloc(g->buf_cap);
    g->pos = g->ranges[0].first;
    gw_get_read_chunk(g);
}

static void
gw_get_open_done(uv_work_t *w, int status)
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
        gw_remote_open(g); /* not here: storage's get fetches it from peers */
        return;
    }
    if (g->rc == RON_ENOTFOUND) {
        gw_error(g->req, 404, "no object with this address", "not_found", NULL, 0);
        g->req = NULL;
        gw_get_finish(g);
        return;
    }
    if (g->rc == RON_ECAPNEEDED || g->rc == RON_ECAPDENY) {
        gw_storage_refused(gw, g->req, g->rc);
        g->req = NULL;
        gw_get_finish(g);
        return;
    }
    if (g->rc < 0 || g->outcome == GW_OUT_BODY) {
        gw_get_read_done(w, status); /* the first chunk (or the failure) is in */
        return;
    }
    switch (g->outcome) {
    case GW_OUT_NOT_MODIFIED:
        h[n++] = (tx_header_t){"ETag", g->etag};
        h[n++] = (tx_header_t){"Cache-Control", GW_CACHE_IMMUTABLE};
        n += gw_cors(h + n);
        gw->stats.not_modified++;
        (void)tx_respond(g->req, 304, h, n, NULL, 0);
        g->req = NULL;
        break;
    case GW_OUT_UNSATISFIABLE:
        h[0] = (tx_header_t){"Content-Range", cr};
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)g->size);
        gw->stats.unsatisfiable++;
        gw_error(g->req, 416, NULL, "range_not_satisfiable", h, 1);
        g->req = NULL;
        break;
    default: /* HEAD, or an empty body */
        if (gw_get_start(g, g->partial, g->length) < 0)
            g->req = NULL;
        else
            gw->stats.objects_served++;
        break;
    }
    gw_get_finish(g);
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
        gw_error(g->req, g->rc == RON_ETIMEOUT ? 504 : 503, "the object could not be fetched now",
                 "fetch_unavailable", h, 1);
        g->req = NULL;
        gw_get_finish(g);
        return;
    }
    if (g->rc == 0) {
        snprintf(g->ctype, sizeof g->ctype, "%s", gw_sniff(raw, n, (uint64_t)n == g->size));
        gw_get_decide(g);
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
                gw_get_open_done(&g->work, 0);
                return;
            }
            if (gw_remote_get(g, g->pos, len, gw_remote_ahead(g, g->pos + len),
                              gw_remote_first_done) == 0)
                return;
            g->rc = RON_EUNAVAIL;
        }
    }
    gw_get_open_done(&g->work, 0);
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
    } else {
        g->bad = true;
    }
    gw_get_open_done(&g->work, 0);
}

/* A local miss: ask the storage service, whose get fetches from peers. */
static void
gw_remote_open(gw_get_t *g)
{
    /* the first chunk's pieces come with the size (one round trip less),
     * unless a Range may want other bytes: then only the sniffer's */
    uint64_t len = g->range != NULL || g->head ? GW_SNIFF_LEN : STO_SVC_MAX_CHUNK;
    const char *tok;
    size_t tok_len;

    g->remote = true;
    g->rc = 0;
    /* the gets outlive the request's views: keep a copy of the capability */
    if (gw_token(g->req, &tok, &tok_len) == 0 && tok != NULL && tok_len <= OAP_MAX_CAP) {
        g->cap = ron_xmalloc(tok_len);
        memcpy(g->cap, tok, tok_len);
        g->cap_len = tok_len;
    }
    /* a whole-object GET reads on from here: let storage fetch ahead at once */
    if (gw_remote_get(g, 0, len, g->range != NULL || g->head ? 0 : STO_SVC_FETCH_AHEAD_MAX,
                      gw_remote_open_done) < 0)
        gw_remote_open_done(g, RON_EUNAVAIL, NULL); /* storage unreachable: 503, not a 404 */
}

static void
gw_get_begin(gw_t *gw, tx_request_t *req, const uint8_t addr[static STO_ADDR_LEN], bool head,
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
        gw_get_decide(g);
        if (g->outcome == GW_OUT_BODY) {
            g->pos = g->ranges[0].first;
            gw_get_body_chunk(g);
        }
        gw_get_open_done(&g->work, 0);
        return;
    }
    if (g->rd != NULL && sto_reader_size(g->rd) <= GW_INLINE_MAX) {
        /* A small object read a moment ago (its reader was cached): one
         * verified piece from the page cache costs less than the thread
         * pool's round trip (two context switches and the queue's locks). */
        gw->stats.inline_reads++;
        gw_get_open_work(&g->work);
        gw_get_open_done(&g->work, 0);
        return;
    }
    rc = uv_queue_work(gw->loop, &g->work, gw_get_open_work, gw_get_open_done);
    if (rc < 0) {
        g->rc = rc;
        gw_get_open_done(&g->work, 0);
    }
}

/* ---- POST / PUT ---- */

/*
 * One upload is a small state machine driven by gw_up_step: begin the put
 * (on the thread pool, or put_begin over ron-bus), then write each piece
 * the transport hands over and release it only once written (reading from
 * the client pauses meanwhile: bounded memory), then commit at the end of
 * the body. At most one store operation is in flight. A store error, or
 * the transport's abort (client gone, idle, cap), ends it: the put is
 * aborted (its temporary bytes deleted) and the request answered at once
 * (the transport discards the rest of the body).
 */
typedef enum { GW_OP_BEGIN, GW_OP_WRITE, GW_OP_COMMIT } gw_op_t;

static void gw_up_step(gw_up_t *u);

static void
gw_up_free(gw_up_t *u)
{
    gw_t *gw = u->gw;

    free(u);
    gw_release(gw);
}

/* The local code for the storage service's error status (storage.md §errors). */
static int
gw_put_remote_rc(uint16_t code)
{
    switch (code) {
    case 401: /* the service refused the forwarded capability */
        return RON_ECAPNEEDED;
    case 403:
        return RON_ECAPDENY;
    case 409: /* bad_digest: the only 409 one put_begin..commit chain can meet */
        return RON_EDIGEST;
    case 413:
        return RON_ETOOBIG;
    case 507:
        return RON_ESTOREFULL;
    case 429: /* the service sheds load */
    case 503: /* the service is stopping */
        return RON_EUNAVAIL;
    default:
        return RON_ESTORE;
    }
}

/* Answer u's request from rc (and u->addr, u->had), then free u. */
static void
gw_up_answer(gw_up_t *u, int rc)
{
    gw_t *gw = u->gw;
    char text[68], loc[80], json[200];
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0;
    int code;

    if (rc == RON_ECAPNEEDED || rc == RON_ECAPDENY) {
        gw_storage_refused(gw, u->req, rc);
    } else if (rc == RON_EDIGEST) {
        gw->stats.bad_digest++;
        gw_error(u->req, 409, "body does not hash to the address", "bad_digest", NULL, 0);
    } else if (rc == RON_ETOOBIG) {
        gw_error(u->req, 413, NULL, "object_too_large", NULL, 0);
    } else if (rc == RON_ESTOREFULL) {
        tx_header_t ra = {"Retry-After", "60"};
        gw_error(u->req, 507, NULL, "store_full", &ra, 1);
    } else if (rc == RON_EUNAVAIL || rc == RON_ETIMEOUT || rc == RON_EBUSY ||
               rc == RON_ESHUTDOWN) {
        tx_header_t ra = {"Retry-After", "1"};
        gw_error(u->req, 503, ron_strerror(rc), "storage_unavailable", &ra, 1);
    } else if (rc < 0) {
        gw_error(u->req, 500, ron_strerror(rc), "store_failed", NULL, 0);
    } else {
        sto_addr_format(u->addr, text);
        snprintf(loc, sizeof loc, "/o/%s", text);
        snprintf(json, sizeof json, "{\"address\":\"%s\",\"cid\":\"%s\"}", text, text + 3);
        code = u->put && u->had == 1 ? 200 : 201;
        code == 201 ? gw->stats.puts_created++ : gw->stats.puts_existing++;
        h[n++] = (tx_header_t){"Content-Type", "application/json"};
        h[n++] = (tx_header_t){"Location", loc};
        n += gw_cors(h + n);
        (void)tx_respond(u->req, code, h, n, json, strlen(json));
    }
    gw_up_free(u);
}

/* The upload cannot finish: drop the put, answer (loop thread, nothing in flight). */
static void
gw_up_fail(gw_up_t *u)
{
    sto_put_abort(u->lp); /* deletes its temporary file */
    u->lp = NULL;
    sto_client_put_abort(u->rp);
    u->rp = NULL;
    if (u->rc < 0) {
        gw_up_answer(u, u->rc);
        return;
    }
    switch (u->abort) {
    case RON_ECAPDENY:
        gw_refuse_late(u->gw, u->req, AUTH_OP_PUT, u->put ? tx_request_view(u->req)->path + 3 : "/o",
                       RON_ECAPDENY, "the body is larger than the capability's max-bytes");
        break;
    case RON_ETOOBIG:
        gw_error(u->req, 413, NULL, "object_too_large", NULL, 0);
        break;
    case RON_ETIMEOUT:
        gw_error(u->req, 408, "no body bytes for too long", "body_timeout", NULL, 0);
        break;
    case RON_EPROTO:
        gw_error(u->req, 400, "malformed chunked body", "bad_body", NULL, 0);
        break;
    default: /* RON_ECLOSED: the answer only frees the request */
        u->gw->stats.client_gone++;
        (void)tx_respond_error(u->req, 400, NULL, NULL, 0);
        break;
    }
    gw_up_free(u);
}

/* The piece in hand is in the put: the transport may read the next one. */
static void
gw_up_piece_done(gw_up_t *u)
{
    u->piece = NULL;
    u->piece_len = 0;
    if (u->streamed)
        (void)tx_request_body_release(u->req);
}

/* Worker: one store operation (the put belongs to this thread meanwhile). */
static void
gw_up_work(uv_work_t *w)
{
    gw_up_t *u = w->data;
    sto_store_t *s = u->gw->cfg.store;

    switch ((gw_op_t)u->op) {
    case GW_OP_BEGIN:
        u->had = u->put ? sto_has(s, u->addr) : 0;
        u->rc = sto_put_begin(s, u->tenant, u->put ? u->addr : NULL,
                              u->ctype[0] != '\0' ? u->ctype : NULL,
                              u->streamed ? STO_SIZE_UNKNOWN : u->piece_len, &u->lp);
        break;
    case GW_OP_WRITE:
        u->rc = sto_put_write(u->lp, u->piece, u->piece_len);
        break;
    case GW_OP_COMMIT:
        u->rc = sto_put_commit(u->lp, u->addr);
        u->lp = NULL; /* commit frees it, whatever it returns */
        break;
    }
}

static void
gw_up_done(uv_work_t *w, int status)
{
    gw_up_t *u = w->data;

    u->busy = false;
    if (status < 0 && u->rc == 0)
        u->rc = status;
    if (u->op == GW_OP_COMMIT) {
        gw_up_answer(u, u->rc);
        return;
    }
    if (u->rc == 0 && u->op == GW_OP_BEGIN)
        u->begun = true;
    else if (u->rc == 0)
        gw_up_piece_done(u);
    gw_up_step(u);
}

/* The storage service acknowledged (or refused) the operation in flight. */
static void
gw_up_remote_done(void *arg, int status, uint16_t code, const uint8_t addr[STO_ADDR_LEN])
{
    gw_up_t *u = arg;

    u->busy = false;
    if (status < 0) {
        u->rp = NULL; /* ended and freed by the client */
        u->rc = status == RON_ESTORE ? gw_put_remote_rc(code) : status;
        if (u->op == GW_OP_COMMIT)
            gw_up_answer(u, u->rc);
        else
            gw_up_step(u);
        return;
    }
    if (u->op == GW_OP_COMMIT) {
        u->rp = NULL;
        memcpy(u->addr, addr, STO_ADDR_LEN);
        gw_up_answer(u, 0);
        return;
    }
    if (u->op == GW_OP_BEGIN)
        u->begun = true;
    else
        gw_up_piece_done(u);
    gw_up_step(u);
}

/* put_begin at the storage service, for the client: its tenant and its
 * capability (a view into the unanswered request; the client copies it). */
static int
gw_up_remote_begin(gw_up_t *u)
{
    gw_t *gw = u->gw;
    sto_client_auth_t auth = {.tenant = u->tenant};
    const char *tok;
    size_t tok_len;

    if (gw_token(u->req, &tok, &tok_len) == 0 && tok != NULL) {
        auth.cap = tok;
        auth.cap_len = tok_len;
    }
    return sto_client_put_begin_as(gw->cfg.storage, &auth, u->ctype[0] != '\0' ? u->ctype : NULL,
                                   u->put ? u->addr : NULL, gw_up_remote_done, u, &u->rp);
}

/* Start store operation op (nothing in flight). */
static void
gw_up_start(gw_up_t *u, gw_op_t op)
{
    gw_t *gw = u->gw;
    int rc;

    u->op = (int)op;
    u->busy = true;
    if (u->remote) {
        switch (op) {
        case GW_OP_BEGIN:
            /* PUT of a stored object answers 200: the read-only view says so */
            u->had = u->put ? sto_has(gw->cfg.store, u->addr) : 0;
            rc = gw_up_remote_begin(u);
            break;
        case GW_OP_WRITE:
            rc = sto_client_put_write(u->rp, u->piece, u->piece_len);
            break;
        default:
            rc = sto_client_put_commit(u->rp);
            break;
        }
    } else {
        rc = uv_queue_work(gw->loop, &u->work, gw_up_work, gw_up_done);
    }
    if (rc < 0) {
        u->busy = false;
        u->rc = rc;
        gw_up_fail(u);
    }
}

static void
gw_up_step(gw_up_t *u)
{
    if (u->busy)
        return;
    if (u->rc < 0 || u->abort != 0)
        gw_up_fail(u);
    else if (!u->begun)
        gw_up_start(u, GW_OP_BEGIN);
    else if (u->piece_len > 0)
        gw_up_start(u, GW_OP_WRITE);
    else if (u->ended)
        gw_up_start(u, GW_OP_COMMIT);
    /* else: wait for the transport's next piece */
}

/* The transport's body events (tx_body_fn). */
static void
gw_up_body(tx_request_t *req, const uint8_t *data, size_t len, int status, void *arg)
{
    gw_up_t *u = arg;

    (void)req;
    if (status < 0) {
        u->abort = status; /* may come while a piece is being written: step waits */
    } else if (len > 0 && len > u->max_bytes - u->received) {
        /* past the capability's max-bytes: refused, the put dropped */
        u->received = u->max_bytes;
        u->abort = RON_ECAPDENY;
    } else if (len > 0) {
        u->received += len;
        u->piece = data;
        u->piece_len = len;
    } else {
        u->ended = true;
    }
    gw_up_step(u);
}

/* The upload routes: POST /o, PUT /o/b3:<hex> (addr_out set, *put_out true). */
static bool
gw_is_upload(const tx_request_view_t *v, uint8_t addr_out[static STO_ADDR_LEN], bool *put_out)
{
    if (strcmp(v->path, "/o") == 0 || strcmp(v->path, "/o/") == 0) {
        *put_out = false;
        return strcmp(v->method, "POST") == 0;
    }
    *put_out = true;
    return strncmp(v->path, "/o/", 3) == 0 && strcmp(v->method, "PUT") == 0 &&
           gw_addr_parse(v->path + 3, addr_out);
}

void
gw_head(tx_request_t *req, void *arg)
{
    gw_t *gw = arg;
    uint8_t addr[STO_ADDR_LEN];
    bool put;
    gw_up_t *u;

    if (gw->hooked != NULL) {
        /* the transport refused the last one itself after the hook: never routed */
        free(gw->hooked);
        gw->hooked = NULL;
    }
    if (!gw_is_upload(tx_request_view(req), addr, &put))
        return;
    u = ron_xcalloc(1, sizeof *u);
    u->gw = gw;
    u->req = req;
    u->streamed = true;
    u->work.data = u;
    if (tx_request_stream_body(req, gw_up_body, u, gw->cfg.max_upload) < 0) {
        free(u); /* answered by the transport (413, 415) */
        return;
    }
    gw->hooked = u; /* gw_handle runs next, for this very request */
}

/* Decide an upload (u->req, to addr or NULL: POST) with the guard; refused:
 * answered, false. The size is the announced body (Content-Length, or the
 * buffered body); a chunked body's size is unknown until it ends, so the
 * token's max-bytes is enforced as it streams in (gw_up_body). */
static bool
gw_up_authorize(gw_up_t *u, const uint8_t *addr)
{
    const tx_request_view_t *v = tx_request_view(u->req);
    const char *cl = tx_request_header(u->req, "Content-Length");
    uint64_t size = AUTH_SIZE_UNKNOWN;
    gw_auth_t a;

    if (!u->streamed)
        size = v->body_len;
    else if (cl == NULL || ron_parse_u64(cl, strlen(cl), &size) < 0)
        size = AUTH_SIZE_UNKNOWN;
    if (!gw_authorize(u->gw, u->req, AUTH_OP_PUT, addr != NULL ? v->path + 3 : NULL, NULL, size,
                      addr != NULL ? v->path + 3 : "/o", &a))
        return false;
    if (addr == NULL && (a.pending & AUTH_PENDING_ADDR) != 0) {
        /* the address of a POST is known only once stored: too late */
        gw_refuse_late(u->gw, u->req, AUTH_OP_PUT, "/o", RON_ECAPDENY,
                       "a capability limited to an address prefix uploads with PUT /o/b3:<hex>");
        return false;
    }
    memcpy(u->tenant, a.tenant, STO_TENANT_LEN);
    u->max_bytes = a.max_bytes;
    return true;
}

static void
gw_put_begin(gw_t *gw, tx_request_t *req, const uint8_t *addr)
{
    const tx_request_view_t *v = tx_request_view(req);
    const char *ct = tx_request_header(req, "Content-Type");
    gw_up_t *u = gw->hooked;

    if (u != NULL && u->req == req) {
        gw->hooked = NULL; /* streamed: its body comes to gw_up_body */
    } else {
        /* a server without the head hook: the body is buffered whole */
        u = ron_xcalloc(1, sizeof *u);
        u->gw = gw;
        u->req = req;
        u->work.data = u;
        u->piece = v->body;
        u->piece_len = v->body_len;
        u->ended = true;
    }
    gw->stats.active++;
    if (!gw_up_authorize(u, addr)) {
        gw_up_free(u); /* answered: nothing was read or stored */
        return;
    }
    if (ct != NULL && !gw_ctype_ok(ct)) {
        gw_error(req, 400, "Content-Type must be 1-127 printable ASCII bytes", "bad_content_type",
                 NULL, 0);
        gw_up_free(u);
        return;
    }
    u->put = addr != NULL;
    if (addr != NULL)
        memcpy(u->addr, addr, STO_ADDR_LEN);
    if (ct != NULL)
        snprintf(u->ctype, sizeof u->ctype, "%s", ct);
    u->remote = gw->cfg.storage != NULL;
    gw_up_step(u);
}

void
gw_set_storage(gw_t *gw, rbus_peer_t *peer)
{
    gw->cfg.storage = peer;
}

void
gw_set_fetch(gw_t *gw, rbus_peer_t *peer)
{
    gw->fetch = peer;
}

/* What the store keeps as a content type: 1..STO_CTYPE_MAX printable ASCII bytes. */
static bool
gw_ctype_ok(const char *ct)
{
    size_t n = strlen(ct);

    if (n == 0 || n > STO_CTYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)ct[i] < 0x20 || (unsigned char)ct[i] > 0x7E)
            return false;
    return true;
}

/* ---- names ---- */

/* One GET/HEAD or PUT of /n/<name>. */
typedef struct {
    uv_work_t work;
    gw_t *gw;
    tx_request_t *req;
    bool put;
    char name[NAME_MAX_LEN + 1];
    name_record_t rec; /* PUT: the candidate; GET: the current record */
    bool had;          /* PUT: the name had a record before */
    int rc;
    name_err_t err;
    uint8_t tenant[STO_TENANT_LEN]; /* whom index requests act for */
} gw_name_t;

/* Whom q's index requests act for: its tenant and the client's capability
 * (a view into the unanswered request; the index client copies it). */
static void
gw_name_auth(const gw_name_t *q, idx_client_auth_t *auth)
{
    const char *tok;
    size_t tok_len;

    memset(auth, 0, sizeof *auth);
    auth->tenant = q->tenant;
    if (gw_token(q->req, &tok, &tok_len) == 0 && tok != NULL) {
        auth->cap = tok;
        auth->cap_len = tok_len;
    }
}

static void
gw_name_work(uv_work_t *w)
{
    gw_name_t *q = w->data;
    idx_t *idx = q->gw->cfg.index;
    name_record_t cur;

    if (!q->put) {
        q->rc = idx_resolve(idx, q->name, &q->rec);
        return;
    }
    q->had = idx_resolve(idx, q->name, &cur) == 0;
    q->rc = idx_publish(idx, &q->rec, (int64_t)time(NULL), &q->err);
}

/* Is rc a failure to reach the index (nothing was decided: a retry is safe)? */
static bool
gw_index_unreachable(int rc)
{
    return rc == RON_EUNAVAIL || rc == RON_ETIMEOUT || rc == RON_EBUSY || rc == RON_ESHUTDOWN;
}

/* Answer q's request from q->rc (and q->rec, q->had, q->err) and free q. */
static void
gw_name_answer(gw_name_t *q)
{
    gw_t *gw = q->gw;
    const char *msg = q->err.msg[0] != '\0' ? q->err.msg : NULL;
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0;

    if (gw_index_unreachable(q->rc)) {
        tx_header_t ra = {"Retry-After", "1"};
        gw_error(q->req, 503, ron_strerror(q->rc), "index_unavailable", &ra, 1);
    } else if (!q->put) {
        char text[NAME_ADDR_TEXT_LEN + 1], loc[80];
        if (q->rc == RON_ENOTFOUND) {
            gw_error(q->req, 404, "no record for this name", "name_not_found", NULL, 0);
        } else if (q->rc < 0) {
            gw_error(q->req, 500, ron_strerror(q->rc), "index_failed", NULL, 0);
        } else {
            name_addr_format(&q->rec.addr, text);
            snprintf(loc, sizeof loc, "/o/%s", text);
            h[n++] = (tx_header_t){"Location", loc};
            h[n++] = (tx_header_t){"Cache-Control", GW_CACHE_NONE};
            n += gw_cors(h + n);
            gw->stats.names_resolved++;
            (void)tx_respond(q->req, 302, h, n, NULL, 0);
        }
    } else if (q->rc == 0 || q->rc == RON_ENAMEDUP) {
        char *json = name_record_to_json(&q->rec);
        int code = q->rc == 0 && !q->had ? 201 : 200;
        h[n++] = (tx_header_t){"Content-Type", "application/json"};
        n += gw_cors(h + n);
        gw->stats.names_published++;
        (void)tx_respond(q->req, code, h, n, json, json != NULL ? strlen(json) : 0);
        free(json);
    } else {
        int code = 500;
        const char *reason = "index_failed";
        switch (q->rc) {
        case RON_ERECORD:
            code = 400;
            reason = "bad_record";
            break;
        case RON_ENAMEFUTURE:
            code = 400;
            reason = "future_timestamp";
            break;
        case RON_ENAMESIG:
        case RON_EAUTH:
            code = 403;
            reason = "bad_signature";
            break;
        case RON_ENAMEOWNER:
            code = 403;
            reason = "wrong_owner";
            break;
        case RON_ENAMESTALE:
            code = 409;
            reason = "stale_seq";
            break;
        case RON_EIDXFULL:
            code = 507;
            reason = "index_full";
            break;
        default:
            msg = ron_strerror(q->rc);
            break;
        }
        if (code < 500)
            gw->stats.names_refused++;
        if (code == 507) {
            tx_header_t ra = {"Retry-After", "60"};
            gw_error(q->req, code, msg, reason, &ra, 1);
        } else {
            gw_error(q->req, code, msg, reason, NULL, 0);
        }
    }
    free(q);
    gw_release(gw);
}

static void
gw_name_done(uv_work_t *w, int status)
{
    gw_name_t *q = w->data;

    if (status < 0 && q->rc == 0)
        q->rc = status;
    gw_name_answer(q);
}

/* The local code for an index service answer that is not 200 (index.md §errors). */
static int
gw_index_remote_rc(const idx_client_result_t *res)
{
    switch (res->code) {
    case 400:
        return strcmp(res->reason, "ts") == 0 ? RON_ENAMEFUTURE : RON_ERECORD;
    case 403:
        return strcmp(res->reason, "owner") == 0 ? RON_ENAMEOWNER : RON_ENAMESIG;
    case 404:
        return RON_ENOTFOUND;
    case 409:
        return RON_ENAMESTALE;
    case 429: /* the bus sheds load */
    case 503: /* the service is stopping */
        return RON_EUNAVAIL;
    case 507:
        return RON_EIDXFULL;
    default:
        return RON_ESTORE;
    }
}

/* Take the outcome of one index request into q: 0 when it was a 200. */
static int
gw_name_remote_rc(gw_name_t *q, const idx_client_result_t *res)
{
    if (res->status < 0)
        return q->rc = res->status;
    if (res->code == 200)
        return q->rc = 0;
    if (res->code != 404 && res->message[0] != '\0')
        snprintf(q->err.msg, sizeof q->err.msg, "%s", res->message);
    return q->rc = gw_index_remote_rc(res);
}

static void
gw_name_published(void *arg, const idx_client_result_t *res)
{
    gw_name_t *q = arg;

    if (gw_name_remote_rc(q, res) == 0 && res->unchanged)
        q->rc = RON_ENAMEDUP;
    gw_name_answer(q);
}

/* The resolve that answers a GET, or that tells a PUT whether the name had a
 * record (201 or 200), then sends the publish. */
static void
gw_name_resolved(void *arg, const idx_client_result_t *res)
{
    gw_name_t *q = arg;
    int rc = gw_name_remote_rc(q, res);

    if (rc == 0 && !q->put)
        q->rec = *res->rec;
    if (!q->put || (rc < 0 && rc != RON_ENOTFOUND)) {
        gw_name_answer(q);
        return;
    }
    q->had = rc == 0;
    q->rc = 0;
    q->err.msg[0] = '\0';
    if (q->gw->index == NULL) {
        rc = RON_EUNAVAIL;
    } else {
        idx_client_auth_t auth;
        gw_name_auth(q, &auth);
        rc = idx_client_publish_as(q->gw->index, &auth, &q->rec, gw_name_published, q);
    }
    if (rc < 0) {
        q->rc = rc == RON_EINVAL ? RON_ERECORD : rc;
        gw_name_answer(q);
    }
}

void
gw_set_index(gw_t *gw, rbus_peer_t *peer)
{
    gw->index = peer;
}

static void
gw_name_route(gw_t *gw, tx_request_t *req, const char *seg)
{
    const tx_request_view_t *v = tx_request_view(req);
    bool get = strcmp(v->method, "GET") == 0 || strcmp(v->method, "HEAD") == 0;
    bool put = strcmp(v->method, "PUT") == 0;
    char raw[GW_NAME_PATH_MAX + 1];
    gw_name_t *q;
    name_err_t err = {0};
    gw_auth_t a;
    int rc;

    if (strcmp(v->method, "OPTIONS") == 0) {
        gw_preflight(req);
        return;
    }
    if (!get && !put) {
        gw_not_allowed(req, "GET, HEAD, PUT, OPTIONS");
        return;
    }
    if (gw_path_decode(seg, strlen(seg), raw, sizeof raw) < 0) {
        gw_error(req, 400, "the name is not one well-formed path segment", "bad_name", NULL, 0);
        return;
    }
    q = ron_xcalloc(1, sizeof *q);
    if (name_normalize(raw, strlen(raw), q->name, &err) < 0) {
        gw_error(req, 400, err.msg, "bad_name", NULL, 0);
        free(q);
        return;
    }
    if (!gw_authorize(gw, req, put ? AUTH_OP_NAME : AUTH_OP_GET, NULL, q->name,
                      put ? v->body_len : 0, q->name, &a)) {
        free(q);
        return;
    }
    memcpy(q->tenant, a.tenant, STO_TENANT_LEN);
    if (gw->cfg.index == NULL && gw->index == NULL) {
        gw_error(req, 503, "this gateway serves no names", "no_index", NULL, 0);
        free(q);
        return;
    }
    if (put) {
        rc = name_record_from_json(&q->rec, (const char *)v->body, v->body_len, &err);
        if (rc < 0) {
            gw_error(req, rc == RON_ETOOBIG ? 413 : 400, err.msg, "bad_record", NULL, 0);
            free(q);
            return;
        }
        if (strcmp(q->rec.name, q->name) != 0) {
            gw_error(req, 400, "the record's name is not the name in the path", "name_mismatch",
                     NULL, 0);
            free(q);
            return;
        }
    }
    q->gw = gw;
    q->req = req;
    q->put = put;
    q->work.data = q;
    gw->stats.active++;
    if (gw->cfg.index == NULL) {
        /* the index service: resolve (GET, or PUT's 201-or-200), then publish */
        idx_client_auth_t auth;
        gw_name_auth(q, &auth);
        rc = idx_client_resolve_as(gw->index, &auth, q->name, gw_name_resolved, q);
        if (rc < 0) {
            q->rc = rc;
            gw_name_answer(q);
        }
        return;
    }
    rc = uv_queue_work(gw->loop, &q->work, gw_name_work, gw_name_done);
    if (rc < 0) {
        q->rc = rc;
        gw_name_done(&q->work, 0);
    }
}

/* ---- routing ---- */

/* "b3:" then 64 lowercase hex, nothing else. */
static bool
gw_addr_parse(const char *s, uint8_t addr_out[static STO_ADDR_LEN])
{
    if (strncmp(s, "b3:", 3) != 0 || strlen(s) != GW_ADDR_TEXT_LEN)
        return false;
    for (size_t i = 3; i < GW_ADDR_TEXT_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return sto_addr_parse(s, addr_out) == 0;
}

void
gw_handle(tx_request_t *req, void *arg)
{
    gw_t *gw = arg;
    const tx_request_view_t *v = tx_request_view(req);
    const char *m = v->method;
    uint8_t addr[STO_ADDR_LEN];

    gw->stats.requests++;
    if (strcmp(v->path, "/o") == 0 || strcmp(v->path, "/o/") == 0) {
        if (strcmp(m, "POST") == 0)
            gw_put_begin(gw, req, NULL);
        else if (strcmp(m, "OPTIONS") == 0)
            gw_preflight(req);
        else
            gw_not_allowed(req, "POST, OPTIONS");
        return;
    }
    if (strncmp(v->path, "/o/", 3) == 0) {
        bool get = strcmp(m, "GET") == 0, head = strcmp(m, "HEAD") == 0;
        bool put = strcmp(m, "PUT") == 0, opt = strcmp(m, "OPTIONS") == 0;
        if (!get && !head && !put && !opt) {
            gw_not_allowed(req, "GET, HEAD, PUT, OPTIONS");
            return;
        }
        if (!gw_addr_parse(v->path + 3, addr)) {
            gw_error(req, 400, "an object address is b3: and 64 lowercase hex digits",
                     "bad_address", NULL, 0);
            return;
        }
        if (opt) {
            gw_preflight(req);
        } else if (put) {
            gw_put_begin(gw, req, addr);
        } else {
            gw_auth_t a;
            if (gw_authorize(gw, req, AUTH_OP_GET, v->path + 3, NULL, 0, v->path + 3, &a))
                gw_get_begin(gw, req, addr, head, &a);
        }
        return;
    }
    if (strncmp(v->path, "/n/", 3) == 0) {
        gw_name_route(gw, req, v->path + 3);
        return;
    }
    gw_error(req, 404, "no such route", "no_route", NULL, 0);
}

/* ---- lifecycle ---- */

gw_t *
gw_new(uv_loop_t *loop, const gw_config_t *cfg)
{
    gw_t *gw = ron_xcalloc(1, sizeof *gw);

    gw->loop = loop;
    gw->cfg = *cfg;
    if (gw->cfg.chunk == 0)
        gw->cfg.chunk = GW_CHUNK_DEFAULT;
    if (gw->cfg.chunk < GW_CHUNK_MIN)
        gw->cfg.chunk = GW_CHUNK_MIN;
    if (gw->cfg.chunk > GW_CHUNK_MAX)
        gw->cfg.chunk = GW_CHUNK_MAX;
    if (gw->cfg.max_upload == 0)
        gw->cfg.max_upload = STO_MAX_OBJECT_DEFAULT;
    uv_timer_init(loop, &gw->closer);
    gw->closer.data = gw;
    return gw;
}

const gw_stats_t *
gw_stats(const gw_t *gw)
{
    return &gw->stats;
}

static void
gw_closer_closed(uv_handle_t *h)
{
    gw_t *gw = h->data;

    gw->closer_closed = true;
    gw_close_check(gw);
}

/* Closing: once no request holds state and the closer handle is closed (a
 * later loop turn), run the callback. */
static void
gw_close_check(gw_t *gw)
{
    void (*cb)(void *arg) = gw->closed_cb;

    if (gw->stats.active == 0) {
        gw_cache_clear(gw);
        gw_bodies_clear(gw);
    }
    if (gw->stats.active == 0 && !uv_is_closing((uv_handle_t *)&gw->closer))
        uv_close((uv_handle_t *)&gw->closer, gw_closer_closed);
    if (gw->stats.active == 0 && gw->closer_closed && cb != NULL) {
        gw->closed_cb = NULL;
        cb(gw->closed_arg);
    }
}

void
gw_close(gw_t *gw, void (*cb)(void *arg), void *arg)
{
    gw->closing = true;
    gw->closed_cb = cb;
    gw->closed_arg = arg;
    gw_close_check(gw);
}

void
gw_free(gw_t *gw)
{
    if (gw == NULL)
        return;
    assert(gw->closer_closed);
    free(gw->hooked); /* refused by the transport, never routed */
    free(gw);
}
