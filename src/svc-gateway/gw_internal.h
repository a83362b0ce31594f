/*
 * gw_internal.h - what the files of svc-gateway share and nothing else
 * includes: the gateway's state, the request structs of a GET/HEAD
 * (gw_get_t, shared by the local read in gw_get.c and the remote read in
 * gw_remote.c) and of an upload, and the gw__ helpers one file calls in
 * another (responses, the guard, the GET steps).
 */
#ifndef GW_INTERNAL_H
#define GW_INTERNAL_H

#include "idx_client.h"
#include "ron_err.h"
#include "ron_util.h"
#include "sto_client.h"
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
    uv_timer_t closer;    /* never started: closing it defers gw_close's callback a turn */
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
    unsigned refs; /* the cache's (while listed) + one per request */
    uint64_t used; /* tick of its last use, for LRU eviction */
    uint8_t *data; /* size verified bytes */
} gw_body_t;

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
    struct gw_parts { /* multipart framing, allocated only for it */
        char heads[GW_MAX_RANGES][GW_PART_HEAD_MAX];
        char tail[GW_PART_HEAD_MAX];
    } * parts;
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
    bool bad;        /* a store call failed: the reader is not reused */
    gw_body_t *body; /* answered from a verified body in memory (referenced) */
    bool remote;     /* a local miss read through the storage service's get (it fetches) */
    uint8_t tenant[STO_TENANT_LEN]; /* whom remote gets act for */
    char *cap; /* remote: the client's capability (copied at the first get), or NULL */
    size_t cap_len;
    /* remote: storage gets sent ahead of the writes, a ring in read order
     * (gw_remote.c); the request struct lives until every answer came */
    struct gw_rget {
        struct gw_get *g;
        uint64_t off;  /* object offset asked */
        size_t len;    /* bytes asked, <= buf_cap */
        uint8_t *data; /* buf_cap bytes (allocated once, then reused), or NULL */
        int rc;        /* once done: 0 (len verified bytes in data) or a negative code */
        bool done;     /* answered, or could not be sent */
    } rq[GW_REMOTE_WINDOW];
    size_t rq_head, rq_n; /* the oldest get's slot; gets in the ring */
    size_t fill_ri;       /* range of the next get to send (n_ranges: none left) */
    uint64_t fill_pos;    /* its offset */
    unsigned gets;        /* gets sent whose answer has not come */
    bool rq_wait;         /* the writer waits for the oldest get */
} gw_get_t;

/* One POST /o or PUT /o/b3:<hex> (see gw_up_step). */
typedef struct gw_up {
    uv_work_t work;
    gw_t *gw;
    tx_request_t *req;
    bool put;      /* PUT: the bytes must hash to addr */
    bool streamed; /* the body comes through gw_up_body; else view.body, whole */
    bool remote;   /* through the storage service (gw_set_storage) */
    bool begun, busy, ended;
    int op; /* gw_op_t in flight (busy) or last */
    uint8_t addr[STO_ADDR_LEN];
    char ctype[STO_CTYPE_MAX + 1];
    int had;              /* PUT: sto_has before the put */
    sto_put_t *lp;        /* local put; the worker's while busy */
    sto_client_put_t *rp; /* remote put */
    const uint8_t *piece; /* bytes to write: the transport's piece (borrowed until released) */
    size_t piece_len;
    int rc;                         /* first store error */
    int abort;                      /* the transport's abort (RON_ECLOSED, RON_ETOOBIG, ...) */
    uint8_t tenant[STO_TENANT_LEN]; /* whom the put is for (the token's tenant, else cfg's) */
    uint64_t max_bytes;             /* the token's max-bytes (UINT64_MAX: none) */
    uint64_t received;              /* body bytes so far */
} gw_up_t;

/* Who a request acts as once the guard allowed it. */
typedef struct {
    uint8_t tenant[STO_TENANT_LEN]; /* the token's tenant caveat, else cfg.tenant */
    uint64_t max_bytes;             /* the token's max-bytes; UINT64_MAX: none */
    unsigned pending;               /* AUTH_PENDING_* left to the gateway */
} gw_auth_t;

/* gw_routes.c (responses, routing and lifecycle) */
void gw__release(gw_t *gw);
size_t gw__cors(tx_header_t *h);
void gw__error_retry(tx_request_t *req, int status, const char *message, const char *reason,
                     const tx_header_t *extra, size_t n_extra, uint32_t retry_after_ms);
void gw__error(tx_request_t *req, int status, const char *message, const char *reason,
               const tx_header_t *extra, size_t n_extra);
void gw__preflight(tx_request_t *req);
void gw__not_allowed(tx_request_t *req, const char *allow);
bool gw__addr_parse(const char *s, uint8_t addr_out[static STO_ADDR_LEN]);

/* gw_guard.c (capabilities) */
int gw__token(tx_request_t *req, const char **tok_out, size_t *len_out);
bool gw__authorize(gw_t *gw, tx_request_t *req, auth_op_t op, const char *addr, const char *name,
                   uint64_t size, const char *target, gw_auth_t *a);
void gw__refuse_late(gw_t *gw, tx_request_t *req, auth_op_t op, const char *target, int code,
                     const char *message);
void gw__storage_refused(gw_t *gw, tx_request_t *req, int rc);

/* gw_get.c (GET / HEAD) */
void gw__cache_clear(gw_t *gw);
void gw__bodies_clear(gw_t *gw);
void gw__get_finish(gw_get_t *g);
void gw__get_release(gw_get_t *g);
void gw__get_read_done(uv_work_t *w, int status);
void gw__get_decide(gw_get_t *g);
void gw__get_open_done(uv_work_t *w, int status);
void gw__get_begin(gw_t *gw, tx_request_t *req, const uint8_t addr[static STO_ADDR_LEN], bool head,
                   const gw_auth_t *a);

/* gw_remote.c (remote reads through the storage service) */
void gw__remote_free(gw_get_t *g);
void gw__remote_read(gw_get_t *g);
void gw__remote_open(gw_get_t *g);

/* gw_upload.c (POST / PUT) */
void gw__put_begin(gw_t *gw, tx_request_t *req, const uint8_t *addr);

/* gw_names.c (names) */
void gw__name_route(gw_t *gw, tx_request_t *req, const char *seg);

#endif
