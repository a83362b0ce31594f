/*
 * omni_internal.h - shared between the files of src/omnigate/ and its tests
 * only. The app port is one omni_t (omni_server.c) holding connections
 * (omni_conn.c: the OAP/1 session, frames in and out, the stream table and
 * its credit, the bounds that pause reading); each stream's request is an
 * omni_rq_t (omni_rq.c: start, forward over ron-bus, answer, free), whose
 * content ops relay to the storage service (omni_content.c: put and get)
 * after the guard has checked them (omni_cap.c: which capability each op
 * needs and the guard's calls). omni_req.c parses START payloads and
 * omni_idem.c remembers idempotent answers.
 *
 * Lifetimes: a request lives until both directions of its stream ended and
 * no bus request of its own is in flight; a connection that goes first
 * detaches its requests (q->c == NULL). omni_t counts a reference for its
 * listener, each connection and each bus request in flight (omni__unref).
 * Everything here runs on the loop thread.
 */
#ifndef OMNI_INTERNAL_H
#define OMNI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "omnigate.h"
#include "ron_metrics.h"

typedef struct omni_idem omni_idem_t;

/* A cache of OMNI_IDEM_ENTRIES answers, each kept OMNI_IDEM_TTL_MS. Returns new. */
omni_idem_t *omni__idem_new(void);
void omni__idem_free(omni_idem_t *c);

/*
 * Look up (tenant, app, op, idem) at time now_ms (monotonic). Returns the
 * remembered status and sets *json_out and *len_out (views valid until the next
 * put), or 0 when there is none (or it expired).
 */
uint16_t omni__idem_get(omni_idem_t *c, const uint8_t tenant[16], uint16_t app, omni_op_t op,
                        const char *idem, uint64_t now_ms, const char **json_out, size_t *len_out);

/* Remember an answer (json copied; over OMNI_MAX_ANSWER bytes it is not kept). */
void omni__idem_put(omni_idem_t *c, const uint8_t tenant[16], uint16_t app, omni_op_t op,
                    const char *idem, uint64_t now_ms, uint16_t status, const char *json,
                    size_t len);

/* ---------------------------------------------------------------- state */

typedef struct omni_conn omni_conn_t;
typedef struct omni_rq omni_rq_t;

typedef enum {
    OMNI_RQ_BUS,        /* one forwarded request in flight; its answer is ours */
    OMNI_RQ_PUT_BEGIN,  /* put_begin in flight */
    OMNI_RQ_PUT_OPEN,   /* put open: body frames are written as they arrive */
    OMNI_RQ_PUT_COMMIT, /* put_commit in flight */
    OMNI_RQ_GET_STAT,   /* stat in flight */
    OMNI_RQ_GET_DATA,   /* data frames flow while there is credit */
    OMNI_RQ_DONE,       /* answered; body frames still arriving are discarded */
} omni_rq_state_t;

/* One bus get of a get stream; answers may come back out of order. */
typedef struct {
    omni_rq_t *q;
    bool used;  /* requested and not yet sent on */
    bool ready; /* answered: data holds len verified bytes */
    uint64_t off;
    size_t len;
    uint8_t *data;
} omni_chunk_t;

typedef struct omni_piece {
    struct omni_piece *next;
    size_t len;    /* bytes of data */
    size_t off;    /* bytes already written to the store */
    size_t sent;   /* bytes sent in put_writes (off <= sent <= len) */
    uint8_t buf[]; /* OMNI_PIECE_HEAD bytes of room, then the len bytes of data */
} omni_piece_t;

/*
 * Room before a piece's data for a put_write's u32 prefix and JSON, so the
 * bus request is sent from the piece itself instead of a copy of the chunk.
 */
#define OMNI_PIECE_HEAD 132u
#define OMNI_PIECE_DATA(p) ((p)->buf + OMNI_PIECE_HEAD)

struct omni_rq {
    omni_rq_t *next, *prev; /* in the connection's list */
    omni_conn_t *c;         /* NULL once the connection is gone */
    omni_t *g;
    uint64_t corr_id;
    uint8_t tenant[16];
    uint8_t *cap; /* the START frame's cap section (forwarded on every bus request), or NULL */
    size_t cap_len;
    omni_request_t r;
    omni_rq_state_t state;
    uint32_t inflight; /* bus requests of ours pending (gets: up to OMNI_GET_PIPELINE) */
    bool req_ended;    /* the client's direction ended */
    bool resp_ended;   /* our answer ended */
    /* put */
    bool put_open; /* put_id is open at the storage service */
    uint64_t put_id;
    uint64_t written;    /* bytes the storage service answered as written */
    uint64_t sent;       /* bytes sent in put_writes (the next one's offset) */
    uint64_t received;   /* body bytes received */
    uint64_t max_bytes;  /* the capability's max-bytes (UINT64_MAX: none), enforced as they come */
    bool begin_inflight; /* put_begin sent, not answered */
    auth_grant_t
        *grant; /* put with a prefix caveat: its grant, checked once the address is known */
    omni_piece_t *head, *tail;
    /* get */
    uint16_t status;   /* 200 or 206 */
    uint64_t pos, end; /* next byte to send, end of the range */
    bool probed;       /* get of a local miss: a storage get (which fetches) stood in for stat */
    uint64_t next_off; /* next byte to ask the storage service for; pos <= next_off <= end */
    omni_chunk_t chunks[OMNI_GET_PIPELINE];
    uint8_t *pend_err; /* an error frame's payload waiting for credit */
    size_t pend_len;
    uint16_t pend_code;
    char actor[AUTH_ID_MAX + 1]; /* cap_revoke: the caller's token identifier, for the audit */
};

struct omni_conn {
    omni_t *g;
    omni_conn_t *next, *prev;
    uv_tcp_t tcp;
    uv_timer_t timer; /* HELLO timeout, then idle, then the close grace */
    int open_handles;
    oap_decoder_t dec;
    oap_streams_t st;
    bool counted;  /* counts in g->stats.conns (not a refused connection) */
    bool loopback; /* the peer is on this host: kernel ops allowed without a guard */
    bool has_peer; /* peer holds the client's address */
    struct sockaddr_storage peer;
    bool hello;
    bool closing;
    bool reading;
    bool fatal; /* a fatal envelope is queued: close once it is written */
    uint32_t max_frame;
    size_t out_bytes; /* written to libuv, not yet completed */
    size_t in_bytes;  /* put bytes queued in pieces */
    size_t get_bytes; /* get bytes asked of the storage service, not yet written */
    omni_rq_t *rqs;
    uint32_t n_rqs;
};

/* One caller's revocations by id in its current minute (cap_revoke). */
typedef struct {
    char id[AUTH_ID_MAX + 1]; /* the revoking token's identifier; "" unused */
    uint64_t window_ms;       /* start of its minute */
    uint32_t n;
} omni_revoker_t;

struct omni {
    uv_loop_t *loop;
    omni_config_t cfg;
    char service[32];
    uv_tcp_t listener;
    bool listening;
    bool closing;
    int refs; /* listener handle + connections + bus requests in flight */
    void (*done)(void *arg);
    void *done_arg;
    rbus_peer_t *storage, *index, *kernel, *registry, *passport;
    guard_t *guard; /* NULL: no enforcement */
    omni_conn_t *conns;
    omni_stats_t stats;
    omni_idem_t *idem;
    met_registry_t *reg;
    met_gauge_t *m_conns, *m_unsent, *m_queued;
    met_counter_t *m_in, *m_out;
    uint64_t seen_in, seen_out;
    met_family_t *m_requests, *m_rejects;
    omni_revoker_t revokers[OMNI_REVOKE_CALLERS]; /* cap_revoke by id: per-caller counts */
};
/* ---------------------------------------------------------------- omni_server.c */

/* Drop a reference to g; the last one, once omni_close ran, frees g and calls done. */
void omni__unref(omni_t *g);

/* Count an answered request in the stats and in app_requests_total{app,op,status}. */
void omni__count_request(omni_t *g, uint16_t app, const char *op, uint16_t status);

/* Count a refused connection or stream: *ctr (a stats field) and app_rejects_total{reason}. */
void omni__count_reject(omni_t *g, const char *reason, uint64_t *ctr);

/* ---------------------------------------------------------------- omni_conn.c */

/* The listener's connection callback (uv_listen): accept and wait for HELLO. */
void omni__conn_accept(uv_stream_t *server, int status);

/* Close c: its requests are detached (their bus callbacks free them). Idempotent. */
void omni__conn_close(omni_conn_t *c);

/* Start or stop reading c by its output and input bounds (resume below half of each). */
void omni__conn_set_reading(omni_conn_t *c);

/* With no request open, arm c's idle timer. */
void omni__conn_idle_check(omni_conn_t *c);

/* An error envelope for status into out (PROTO_MIN_ERROR_BUF or more); returns its length. */
size_t omni__envelope(char *out, size_t cap, uint16_t status, uint64_t corr_id, const char *message,
                      const char *reason, uint32_t retry_after_ms);

/*
 * Send a frame of q's answer through the stream table. Returns 0, RON_EAGAIN
 * when the stream has no credit, RON_ETOOBIG over max_frame, RON_ECLOSED when
 * the connection is gone, or a write error.
 */
int omni__rq_send(omni_rq_t *q, uint16_t flags, uint16_t code, const void *payload, size_t len);

/* Grant credit for n frames of q's request direction that we finished with. */
void omni__rq_consume(omni_rq_t *q, uint32_t n);

/* True for a loopback peer (127/8, ::1, ::ffff:127/104); NULL or other families: false. */
bool omni__addr_is_loopback(const struct sockaddr_storage *ss);

/* ---------------------------------------------------------------- omni_rq.c */

/* A START frame f (payload inflated) opened stream f->corr_id on c: parse, check, start. */
void omni__rq_start(omni_conn_t *c, const oap_frame_t *f, const uint8_t *payload, size_t len);

/* A body frame (REQ, not START) of stream q (attached). */
void omni__rq_body(omni_rq_t *q, const oap_frame_t *f, const uint8_t *payload, size_t len);

/* Advance q as far as it can go now, then free it if it is finished. */
void omni__rq_step(omni_rq_t *q);

/* Free q when it is finished: no bus request in flight and, attached, both directions ended. */
void omni__rq_maybe_free(omni_rq_t *q);

/* Answer q (one RESP|END frame of status with JSON body) and count it; q is then done. */
void omni__rq_answer(omni_rq_t *q, uint16_t status, const char *json, size_t len);

/* Answer q with an error envelope. */
void omni__rq_error(omni_rq_t *q, uint16_t status, const char *message, const char *reason,
                    uint32_t retry_after_ms);

/* Map a ron-bus failure (no answer) to an error answer. */
void omni__rq_bus_failed(omni_rq_t *q, int rc);

/* Forward a service's error answer (its envelope, with our corr_id). */
void omni__rq_forward_error(omni_rq_t *q, const oap_frame_t *resp);

/*
 * Send payload (built; copied) to the service of app with q's tenant and cap
 * (the service checks them again), answered to cb(arg) within
 * OMNI_BUS_DEADLINE_MS. Returns 0 (a reference on q->g taken, dropped by cb)
 * or a ron-bus error (RON_EUNAVAIL: no peer for app).
 */
int omni__bus_send(const omni_rq_t *q, uint16_t app, const uint8_t *payload, size_t n,
                   rbus_reply_cb cb, void *arg);

/* omni__bus_send as one of q's own bus requests (counted in q->inflight). */
int omni__rq_bus_payload(omni_rq_t *q, uint16_t app, const uint8_t *payload, size_t n,
                         rbus_reply_cb cb, void *arg);

/*
 * Send json (jlen bytes) as one of q's bus requests: with the u32 prefix for
 * every service but the kernel. Returns 0 (q->inflight set) or a ron-bus error.
 */
int omni__rq_bus_cb(omni_rq_t *q, uint16_t app, const char *json, size_t jlen, rbus_reply_cb cb,
                    void *arg);

/* omni__rq_bus_cb answered by omni__rq_bus_reply (q's state decides). */
int omni__rq_bus(omni_rq_t *q, uint16_t app, const char *json, size_t jlen);

/* The callback of q's bus requests (arg: q) but a get's chunks. */
void omni__rq_bus_reply(void *arg, int status, const oap_frame_t *resp);

/*
 * Parse the JSON of a service's answer (after the u32 prefix when prefix)
 * into *o_out (returns new); raw (may be NULL) is set to the bytes after it.
 * Returns 0 or RON_EJSON.
 */
int omni__answer_json(const oap_frame_t *resp, bool prefix, json_t **o_out, const uint8_t **raw,
                      size_t *raw_len);

/* Read o's key as a decimal u64 string. Returns true when it is one. */
bool omni__json_u64_field(json_t *o, const char *key, uint64_t *v);

/* ---------------------------------------------------------------- omni_content.c */

/* Start a put: put_begin with the parsed request's JSON. */
void omni__rq_put_start(omni_rq_t *q);

/* put_begin answered (o): the put is open; its START frame is credited. */
void omni__on_put_begun(omni_rq_t *q, json_t *o);

/* A put's body frame (copied): refused past max-bytes, else queued until written. */
void omni__rq_put_body(omni_rq_t *q, const uint8_t *payload, size_t len);

/* Free q's queued body pieces, crediting their frames and releasing their bytes. */
void omni__rq_drop_pieces(omni_rq_t *q);

/* Release a get's chunks answered but never sent (q was answered otherwise). */
void omni__rq_drop_chunks(omni_rq_t *q);

/* Send a put_abort for q's open put (fire and forget) unless writes are in flight. */
void omni__rq_put_abort(omni_rq_t *q);

/* A put_write answered with the put's total (o): credit the frames now written. */
void omni__on_put_written(omni_rq_t *q, json_t *o);

/* put_commit answered (o): 201 for a new object, 200 when it was already stored. */
void omni__on_put_committed(omni_rq_t *q, json_t *o);

/* Start a get: stat its object. */
void omni__rq_get_start(omni_rq_t *q);

/*
 * A get's stat answered 404: the first time, a one-byte storage get (which
 * fetches from peers) stands in for it; returns true (q moved on or was
 * answered). The second time: false, and the 404 is q's answer.
 */
bool omni__rq_get_probe(omni_rq_t *q);

/* stat answered for a get (o): check the range, send the metadata frame. */
void omni__on_get_stat(omni_rq_t *q, json_t *o);

/* Send q's waiting error frame, or ask for a get's next chunks within credit and bounds. */
void omni__rq_get_next(omni_rq_t *q);

/* Keep a put's writes flowing; commit after the last write and the client's END. */
void omni__rq_put_next(omni_rq_t *q);

/* ---------------------------------------------------------------- omni_cap.c */

/* The capability op (auth_op_t) op needs, or -1: open to anyone. */
int omni__op_auth(omni_op_t op, bool revoke_epoch);

/*
 * May q (parsed, not a ping) go on? With a guard: its check of q's
 * capability; without: the loopback rules for operator ops. Then cap_revoke
 * by id within its per-caller rate. Returns true with *res filled by the
 * guard (left as given without one), or false with q answered.
 */
bool omni__rq_admit(omni_rq_t *q, guard_result_t *res);

/* A put's body passed its capability's max-bytes with n more bytes: refuse it. */
void omni__rq_over_max_bytes(omni_rq_t *q, size_t n);

/* A put with a prefix caveat stored addr: true when the prefix allows it, else q is answered 403.
 */
bool omni__rq_prefix_allows(omni_rq_t *q, const char *addr);

/* cap_mint: answer q with a token narrowed from the caller's verified grant (res). */
void omni__rq_mint(omni_rq_t *q, const guard_result_t *res);

/* Audit a revocation the kernel made as cap_revoked (actor: the caller's token id). */
void omni__revoke_audit(omni_rq_t *q);

#endif
