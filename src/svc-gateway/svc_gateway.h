/*
 * svc_gateway.h - the HTTP surface for content: objects by address
 * (GET/HEAD /o/b3:<hex>, POST /o, PUT /o/b3:<hex>) and names (GET/HEAD
 * /n/<name> -> 302, PUT /n/<name> publishes a signed record), as a handler that plugs
 * into a ron-transport tx_server. Routes, headers and statuses:
 * docs/protocol/gateway.md.
 *
 *   gw_http.c    sans-I/O HTTP semantics: Range (RFC 9110 §14), the
 *                multipart/byteranges framing, If-None-Match / If-Range
 *                against ETag "b3:<hex>", content-type sniffing, the fixed
 *                caching and CORS header values
 *   gw_routes.c  the routes on the tx handler API; store calls run on the
 *                libuv thread pool (uv_queue_work) in bounded chunks, and
 *                bodies stream out with tx_respond_start/write/end, one
 *                chunk at a time, paced by the transport's drain callback;
 *                upload bodies stream in (gw_head), one piece at a time
 *
 * Every error answers with the spec §3 envelope (tx_respond_error). With a
 * guard (gw_set_guard) every routed request is checked before anything is
 * read or written: content reads as `get`, uploads as `put`, name publishing
 * as `name`, with the client's capability from `Authorization: Bearer` or
 * the `cap` query parameter (never logged or audited); the capability and
 * the tenant it names ride along to the storage and index services.
 * All functions are loop thread only unless they say otherwise; the
 * gw_http.c functions are pure and thread-safe.
 */
#ifndef SVC_GATEWAY_H
#define SVC_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ron_guard.h"
#include "ron_naming.h"
#include "ron_transport.h"
#include "svc_index.h"
#include "ron_bus.h"
#include "svc_storage.h"

/* ---- limits ---- */
#define GW_MAX_RANGES 16      /* ranges honoured per request; more: Range ignored (200) */
#define GW_MAX_RANGE_ELEMS 64 /* list elements (incl. empty ones) scanned before giving up */
#define GW_SNIFF_LEN 512      /* leading bytes the content-type sniffer looks at */
#define GW_FETCH_DEADLINE_MS 30000u /* one storage get of a local miss (it may fetch from peers) */
#define GW_FETCH_RETRY_AFTER_S 2u   /* Retry-After of a 503/504 when a miss could not be fetched */
#define GW_REMOTE_WINDOW 4u /* storage gets of one remote read in flight or answered ahead of the
                             * writes: <= 4 x 256 KiB held per request, and storage serves the
                             * next chunks while the last one is written */
#define GW_CHUNK_DEFAULT (256u << 10) /* bytes read per thread-pool work item (one per request) */
#define GW_CHUNK_MIN (64u << 10)      /* one verified piece: smaller chunks only cost hashing */
#define GW_CHUNK_MAX (1u << 20)       /* keeps a request's buffer (and a worker's hold) bounded */
#define GW_BOUNDARY_LEN 24            /* multipart boundary characters */
#define GW_PART_HEAD_MAX 256          /* one multipart part head ("\r\n--B\r\nContent-Type..") */
#define GW_ADDR_TEXT_LEN 67           /* "b3:" + 64 hex */
#define GW_READER_CACHE 64 /* idle verified readers kept open for reuse (fds, maps) */
#define GW_READER_CACHE_OBJECT (1u << 20) /* only objects up to this size are kept open */
#define GW_BODY_CACHE 32 /* verified bodies of objects kept in memory (hot objects) */
#define GW_BODY_CACHE_BYTES (4u << 20) /* ... holding at most this many bytes in all */
#define GW_BODY_CACHE_OBJECT (256u << 10) /* only bodies read whole in one verified chunk,
                                             larger than GW_INLINE_MAX, up to this size */
#define GW_INLINE_MAX (16u << 10) /* an object this small with a cached reader is read on the
                                     loop (one verified piece, just read: page cache hot) */
#define GW_NAME_PATH_MAX 1024 /* bytes of a percent-decoded /n/ segment (NAME_MAX_INPUT) */

/* ---- fixed header values ---- */
#define GW_CACHE_IMMUTABLE "public, max-age=31536000, immutable"
#define GW_CACHE_NONE "no-cache"
#define GW_CORS_ORIGIN "*"
#define GW_CORS_EXPOSE                                                                             \
    "ETag, Content-Range, Content-Length, Accept-Ranges, Location, WWW-Authenticate, Retry-After"
#define GW_CORS_METHODS "GET, HEAD, POST, PUT, OPTIONS"
#define GW_CORS_HEADERS "Range, If-None-Match, If-Range, Content-Type, X-Corr-Id, Authorization"
#define GW_CORS_MAX_AGE "86400"
#define GW_CTYPE_DEFAULT "application/octet-stream"

/* ---- Range (RFC 9110 §14.1-14.4) ---- */

/* An inclusive byte range [first, last] of a representation. */
typedef struct {
    uint64_t first;
    uint64_t last;
} gw_range_t;

typedef enum {
    GW_RANGE_FULL = 0,          /* no usable Range: serve 200 with the whole body */
    GW_RANGE_PARTIAL = 1,       /* serve 206 with the ranges written */
    GW_RANGE_UNSATISFIABLE = 2, /* serve 416 with Content-Range: bytes * / size */
} gw_range_result_t;

/*
 * Evaluate a Range header value against a representation of size bytes.
 * value NULL, a unit other than "bytes", a syntax error, or more than
 * GW_MAX_RANGES ranges (or GW_MAX_RANGE_ELEMS list elements) give
 * GW_RANGE_FULL (RFC 9110 lets a server ignore Range). Otherwise the
 * satisfiable ranges are clipped to size, then, when there are several,
 * sorted and coalesced where they overlap or touch (§14.2 allows it; it
 * defeats overlapping-range amplification), and written to out with their
 * count in *n_out: GW_RANGE_PARTIAL. Ranges given but none satisfiable:
 * GW_RANGE_UNSATISFIABLE. Numbers saturate instead of overflowing.
 */
gw_range_result_t gw_range_parse(const char *value, uint64_t size,
                                 gw_range_t out[static GW_MAX_RANGES], size_t *n_out);

/* ---- multipart/byteranges (RFC 9110 §14.6) ---- */

/*
 * Write the head of one part, "\r\n--<boundary>\r\nContent-Type: <ctype>\r\n
 * Content-Range: bytes <first>-<last>/<size>\r\n\r\n", NUL-terminated, to out.
 * Returns its length, or 0 when it does not fit in cap (ctype too long).
 */
size_t gw_multipart_part_head(char *out, size_t cap, const char *boundary, const char *ctype,
                              const gw_range_t *r, uint64_t size);

/* Write the closing delimiter "\r\n--<boundary>--\r\n" (NUL-terminated). Returns
 * its length, or 0 when it does not fit. */
size_t gw_multipart_tail(char *out, size_t cap, const char *boundary);

/* The exact body length of the multipart response for ranges (their heads,
 * bytes and the tail): the Content-Length to announce. */
uint64_t gw_multipart_length(const gw_range_t *ranges, size_t n, const char *boundary,
                             const char *ctype, uint64_t size);

/* A boundary for addr: GW_BOUNDARY_LEN characters of [0-9a-z] derived from it,
 * NUL-terminated (out holds GW_BOUNDARY_LEN + 1). Deterministic, so HEAD and
 * GET agree. The boundary cannot occur inside a part: every part is preceded
 * by its own delimiter and has an exact Content-Range length. */
void gw_multipart_boundary(const uint8_t addr[static STO_ADDR_LEN],
                           char out[static GW_BOUNDARY_LEN + 1]);

/* ---- conditional requests (RFC 9110 §13.1.2, §13.1.5) ---- */

/*
 * True when an If-None-Match value matches etag (the quoted tag, e.g.
 * "\"b3:<hex>\""): "*" matches, a comma-separated list matches when any
 * member does, weak tags (W/"...") compare weakly (opaque parts equal).
 * A malformed list matches nothing (the request is then served normally).
 */
bool gw_etag_match(const char *if_none_match, const char *etag);

/*
 * True when an If-Range value allows the ranges: it must be a strong entity
 * tag equal to etag (a date or a weak tag never matches: §13.1.5).
 */
bool gw_if_range_ok(const char *if_range, const char *etag);

/* ---- paths ---- */

/*
 * Percent-decode the path segment in[0..len) into out (NUL-terminated; at
 * most cap - 1 bytes). Returns the decoded length, or RON_EINVAL for a
 * malformed escape, an encoded or raw NUL, a '/' (one segment only) or a
 * result that does not fit.
 */
ssize_t gw_path_decode(const char *in, size_t len, char *out, size_t cap);

/* ---- content-type sniffing ---- */

/*
 * The content type of an object stored without one, from its first len
 * bytes (at most GW_SNIFF_LEN are looked at; len is the object's size when
 * smaller): PNG, JPEG, GIF, WebP, PDF, MP4 (ISO-BMFF ftyp), WebM/Matroska,
 * MP3, Ogg, ZIP, gzip, HTML, JSON, UTF-8 text, else GW_CTYPE_DEFAULT.
 * complete says buf holds the whole object (a UTF-8 sequence cut at the end
 * of a partial window is then not excused). A static string, never NULL.
 */
const char *gw_sniff(const uint8_t *buf, size_t len, bool complete);

/* ---- the gateway (routes on a tx_server) ---- */

typedef struct gw gw_t;

typedef struct {
    sto_store_t *store;             /* borrowed; outlives the gateway */
    idx_t *index;                   /* borrowed, may be NULL: /n/ routes answer 503
                                       unless gw_set_index gave an index service */
    uint8_t tenant[STO_TENANT_LEN]; /* who pins what POST/PUT store */
    uint32_t chunk;                 /* bytes per read work item; 0 = GW_CHUNK_DEFAULT,
                                       clamped to [GW_CHUNK_MIN, GW_CHUNK_MAX] */
    rbus_peer_t *storage;           /* borrowed, may be NULL; see gw_set_storage */
    uint64_t max_upload;            /* bytes of one upload body; 0 = STO_MAX_OBJECT_DEFAULT
                                       (the store's own max_object applies as well) */
} gw_config_t;

/* Counters (plain, loop thread). */
typedef struct {
    uint64_t requests;        /* requests routed */
    uint64_t objects_served;  /* 200/206 GET responses finished whole */
    uint64_t bytes_served;    /* body bytes handed to the transport */
    uint64_t not_modified;    /* 304s */
    uint64_t unsatisfiable;   /* 416s */
    uint64_t puts_created;    /* 201s from POST/PUT */
    uint64_t puts_existing;   /* 200s from PUT of a stored object */
    uint64_t bad_digest;      /* 409s: body did not hash to the address */
    uint64_t names_resolved;  /* 302s */
    uint64_t names_published; /* 201/200 from PUT /n/ */
    uint64_t names_refused;   /* records the acceptance rule refused */
    uint64_t corrupt_before;  /* verification failures answered with 502 */
    uint64_t corrupt_aborted; /* verification failures after the head: stream aborted */
    uint64_t client_gone;     /* streams ended because the connection went away */
    uint64_t buffered;        /* gauge: bytes of read buffers held by live streams */
    uint64_t buffered_peak;   /* the gauge's high-water mark */
    uint64_t active;          /* gauge: requests with state in the gateway */
    uint64_t readers_reused;  /* GET/HEADs served by a reader kept open from an earlier one */
    uint64_t inline_reads;    /* ... of which read on the loop (objects <= GW_INLINE_MAX) */
    uint64_t body_hits;       /* GET/HEADs answered from a verified body kept in memory */
    uint64_t body_cached;     /* gauge: bytes of verified bodies kept in memory */
    uint64_t auth_rejected;   /* requests the guard refused (401, 403, 429) */
    uint64_t remote_direct;   /* local misses sent to storage's get at once (index said absent) */
} gw_stats_t;

/* Create a gateway serving cfg->store on loop (cfg copied). Returns new. */
gw_t *gw_new(uv_loop_t *loop, const gw_config_t *cfg);

/*
 * The tx_handler_fn: pass gw_handle with arg = the gateway to
 * tx_server_new(). Routes every request; answers each exactly once.
 */
void gw_handle(tx_request_t *req, void *arg);

/*
 * The tx_head_fn: pass gw_head with arg = the gateway to
 * tx_server_set_head_hook(). Streams the bodies of POST /o and PUT
 * /o/b3:<hex> into the store (or the storage service) with bounded memory,
 * up to cfg.max_upload bytes; a Content-Length past it is answered 413 by
 * the transport. Without it uploads are buffered by the transport (its
 * max_body caps them).
 */
void gw_head(tx_request_t *req, void *arg);

/*
 * Send uploads (POST /o, PUT /o/b3:<hex>) to the storage service behind
 * peer (borrowed, an outbound ron-bus peer connected to "storage"; NULL:
 * back to the in-process store) with the storage protocol, while reads
 * keep using cfg->store (then opened read-only). A put the service refuses
 * maps to 409 (bad_digest), 413, 507 (Retry-After); when the service
 * cannot be reached (down, restarting, timeout) the upload answers 503 with
 * Retry-After: nothing was acknowledged, so a retry is safe.
 */
void gw_set_storage(gw_t *gw, rbus_peer_t *peer);

/*
 * Read objects the store lacks through the storage service behind peer
 * (borrowed, an outbound ron-bus peer connected to "storage"; NULL: a miss
 * is 404): GET/HEAD /o/b3:<hex> of a local miss sends storage `get`s, which
 * find and fetch the object from peers (docs/protocol/storage.md, "Fetch on
 * miss"), and streams each verified chunk as it arrives (one get of at most
 * 256 KiB in flight). A miss the service cannot fetch is 404 (no provider),
 * or 503/504 with Retry-After (providers failed or too slow).
 */
void gw_set_fetch(gw_t *gw, rbus_peer_t *peer);

/*
 * Resolve and publish names (GET/HEAD and PUT /n/<name>) through the index
 * service behind peer (borrowed, an outbound ron-bus peer connected to
 * "index"; NULL: back to cfg->index) with the index protocol, when
 * cfg->index is NULL. The answers are those of the in-process index; when
 * the service cannot be reached (down, restarting, timeout) a name route
 * answers 503 index_unavailable with Retry-After: nothing was decided, so a
 * retry is safe.
 */
void gw_set_index(gw_t *gw, rbus_peer_t *peer);

/*
 * Enforce capabilities with guard (borrowed, outlives the gateway; NULL: no
 * enforcement, for tests and embedders). Every routed request is then
 * decided by guard_check before the gateway reads or writes anything:
 * GET/HEAD of /o/b3:<hex> and /n/<name> as `get` (the shipped policy lets
 * anonymous reads through, rate-limited per source), POST /o and PUT
 * /o/b3:<hex> as `put` (with the body size when announced, and the
 * token's max-bytes enforced as the body streams in), PUT /n/<name> as
 * `name`; OPTIONS preflights stay open. The capability is
 * `Authorization: Bearer <token>`, else the query parameter `cap` (for
 * links a browser opens); neither is ever logged or audited. A refusal is
 * the envelope with guard_status_of's status, the guard's slug as reason
 * and its sentence as message; 401 adds `WWW-Authenticate: Bearer`, 429
 * `Retry-After`; nothing was stored, published or read. The capability and
 * the tenant it names (else cfg.tenant) are forwarded to the storage and
 * index services in each bus request's cap section and tenant_id.
 */
void gw_set_guard(gw_t *gw, guard_t *guard);

/* Current counters (a view, updated in place). */
const gw_stats_t *gw_stats(const gw_t *gw);

/*
 * Close the gateway: cb(arg) runs once no request holds state in it (active
 * == 0), always on a later loop turn (never inside gw_close). Close the
 * gateway's tx_server first, so no new request arrives; then gw_free in cb.
 * cb must not be NULL.
 */
void gw_close(gw_t *gw, void (*cb)(void *arg), void *arg);

/* Free a gateway whose gw_close callback has run. NULL does nothing. */
void gw_free(gw_t *gw);

#endif
