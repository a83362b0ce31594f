/*
 * ron_bus.h - ron-bus: OAP/1 request/response and events between the
 * services of one node (DESIGN.md §2; wire use in docs/protocol/ron-bus.md).
 *
 * One API, two transports. A service is handed an rbus_t and never learns
 * which transport runs it:
 *   - RBUS_TRANSPORT_UNIX (macronode): Unix stream sockets "<dir>/<name>.sock"
 *     in a private directory (mode 0700, sockets 0600). A connection is
 *     accepted only when SO_PEERCRED names the allowed uid (default: ours) AND
 *     its HELLO carries the per-boot secret ("bus_secret", 64 hex digits,
 *     compared in constant time). A refused connection gets an error envelope,
 *     is closed, and is counted by reason in rbus_stats_t.
 *   - RBUS_TRANSPORT_INPROC (micronode): endpoints sharing one rbus_hub_t on
 *     one loop exchange encoded frames through in-memory queues: no sockets,
 *     one copy per frame (the sender's payload into the frame), delivery on a
 *     later loop turn. The HELLO exchange is the same; credentials are not
 *     checked (there is no process boundary).
 *
 * Roles. An endpoint (rbus_t) may listen under a name (the kernel; a service
 * that serves others) and may connect to other endpoints by name. Every
 * connection is symmetric after HELLO: either side can send requests (REQ,
 * answered by the other side's handler for that app_proto_id) and events
 * (EVENT, delivered only to a side that subscribed to that app_proto_id).
 *
 * Delivery rules (callers rely on these):
 *   - rbus_request() returns 0 and later calls its callback exactly once, on
 *     the loop thread, never from inside rbus_request(): with status 0 and the
 *     response frame, or RON_ETIMEOUT (deadline passed), RON_EUNAVAIL (the
 *     connection died with the request in flight: retryable, fails fast
 *     rather than waiting for the deadline) or RON_ESHUTDOWN (peer or bus
 *     closed by us). When it returns an error the callback is never called.
 *   - Requests to an outbound peer that is still connecting (socket connect
 *     or HELLO in flight) wait, bounded by the send-queue limits and by their
 *     own deadline, and are sent once HELLO completes. Requests to a peer that
 *     is disconnected and waiting out its reconnect backoff fail fast with
 *     RON_EUNAVAIL (retryable); they do not wait for the reconnect.
 *   - An outbound peer reconnects by itself after its remote end goes away,
 *     with backoff RBUS_BACKOFF_MIN_MS doubling to RBUS_BACKOFF_MAX_MS, reset
 *     by a successful HELLO. Subscriptions are renewed on every reconnect.
 *
 * Queues, their bounds and overflow actions:
 *   - send queue of a connection (frames written but not yet taken by the
 *     kernel socket buffer, or not yet delivered in-process): bounded by
 *     RBUS_MAX_SEND_BYTES and RBUS_MAX_SEND_FRAMES.
 *       * new requests when full: fail fast, rbus_request() returns RON_EBUSY
 *         (retryable), counted in requests_busy;
 *       * events when full: dropped for that subscriber, counted in
 *         events_dropped (publishing never blocks);
 *       * responses are always queued (dropping one would strand the
 *         requester), and while the queue is over its bound the bus pauses
 *         the producer: it stops reading that connection, so the peer issuing
 *         the requests waits.
 *   - requests in flight that we sent on one connection: at most the peer's
 *     HELLO max_inflight (<= RBUS_MAX_INFLIGHT); one more returns RON_EBUSY.
 *   - requests in flight that we received on one connection: at most
 *     RBUS_MAX_INFLIGHT; one more is answered 429 quota_exhausted at once.
 *   - receive buffer: the oap decoder's bound (one max_frame + OAP_CHUNK);
 *     frames are consumed as they complete, and a frame over max_frame closes
 *     the connection after an error envelope (413 payload_too_large).
 *
 * Frames: a request and its response are one frame each (REQ|START|END and
 * RESP|END); payloads up to the negotiated max_frame minus the 38-byte header.
 * Bulk data travels as several requests of the application protocol.
 *
 * Threads: everything here is loop-thread only, except the setup helpers
 * rbus_dir_create(), rbus_dir_remove(), rbus_secret_generate() and
 * rbus_secret_hex() (any thread); rbus_config_from_env() changes the
 * environment, so call it before the process starts threads.
 *
 * Typical use (error handling left out):
 *
 *   kernel (macronode)                        child started by the kernel
 *   ------------------                        ---------------------------
 *   char dir[RBUS_MAX_DIR], hex[65];          rbus_config_t cfg;
 *   rbus_config_t cfg = {.name = "kernel",    rbus_config_from_env(&cfg, "svc-x");
 *       .transport = RBUS_TRANSPORT_UNIX};    rbus_t *b = rbus_new(loop, &cfg, &rc);
 *   rbus_dir_create(dir, sizeof dir);         rbus_peer_t *k = rbus_connect(b, "kernel", &rc);
 *   rbus_secret_generate(cfg.secret);         rbus_subscribe(k, OAP_APP_KERNEL, on_config, x);
 *   cfg.dir = dir;                            rbus_handle(b, OAP_APP_KERNEL, on_kernel_req, x);
 *   rbus_t *b = rbus_new(loop, &cfg, &rc);    ... every second:
 *   rbus_handle(b, OAP_APP_KERNEL, on_req, k);  rbus_request(k, OAP_APP_KERNEL, hb, n, 1000,
 *   rbus_on_peer(b, on_child, k);                            on_hb_reply, x);
 *   rbus_listen(b);
 *   rbus_secret_hex(cfg.secret, hex);  -> children's env: RON_BUS_DIR=dir, RON_BUS_SECRET=hex
 *   rbus_publish(b, OAP_APP_KERNEL, cfg_json, n);      (to every subscribed child)
 *   rbus_request(child_peer, OAP_APP_KERNEL, ...);     (ask one child, e.g. for metrics)
 *
 * micronode: one rbus_hub_t *hub = rbus_hub_new(loop) and, per service,
 * cfg = {.transport = RBUS_TRANSPORT_INPROC, .hub = hub, .name = ...}; the
 * service code above is unchanged.
 */
#ifndef RON_BUS_H
#define RON_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "oap.h"

/* ---- limits ---- */
#define RBUS_SECRET_LEN 32u                  /* per-boot secret, bytes (64 hex digits on the wire) */
#define RBUS_MAX_NAME 32u                    /* endpoint name incl. NUL: keeps sun_path short */
#define RBUS_MAX_PATH 108u                   /* sizeof(sun_path) on Linux, incl. NUL */
#define RBUS_DIR_SWEEP_MAX 256u             /* stale bus directories removed per rbus_dir_sweep_stale */
#define RBUS_MAX_DIR 64u                     /* dir + "/" + name + ".sock" must fit RBUS_MAX_PATH */
#define RBUS_MAX_INFLIGHT 64u                /* requests in flight per connection, each way (= OAP HELLO default) */
#define RBUS_MAX_SEND_BYTES (4u << 20)       /* send queue bytes per connection: 4 frames of 1 MiB */
#define RBUS_MAX_SEND_FRAMES 1024u           /* send queue frames per connection */
#define RBUS_MAX_SUBS 16u                    /* app_proto_ids one side may subscribe to on one connection */
#define RBUS_MAX_HANDLERS 16u                /* app_proto_id handlers per endpoint */
#define RBUS_MAX_HELLO 4096u                 /* HELLO payload bytes we parse */
#define RBUS_HELLO_TIMEOUT_MS 2000u          /* HELLO must complete within this, both sides */
#define RBUS_BACKOFF_MIN_MS 50u              /* first reconnect delay */
#define RBUS_BACKOFF_MAX_MS 1000u            /* reconnect delay cap */
#define RBUS_DEFAULT_DEADLINE_MS 5000u       /* deadline used when a request passes 0 (blueprint: 5 s) */
#define RBUS_HEADROOM                                                                              \
    38u /* = OAP_HDR_LEN: free bytes rbus_respond_owned needs before its payload */

/* Environment a kernel sets for its children (rbus_config_from_env reads it). */
#define RBUS_ENV_DIR "RON_BUS_DIR"           /* the private socket directory */
#define RBUS_ENV_SECRET "RON_BUS_SECRET"     /* the per-boot secret, 64 lowercase hex digits */

typedef enum {
    RBUS_TRANSPORT_UNIX = 0, /* Unix sockets in cfg.dir (macronode) */
    RBUS_TRANSPORT_INPROC,   /* in-process through cfg.hub (micronode) */
} rbus_transport_t;

typedef struct rbus_s rbus_t;             /* one endpoint; opaque */
typedef struct rbus_peer_s rbus_peer_t;   /* the other end of a connection; opaque */
typedef struct rbus_req_s rbus_req_t;     /* a received request awaiting its response; opaque */
typedef struct rbus_hub_s rbus_hub_t;     /* in-process registry of endpoints; opaque */

typedef struct {
    rbus_transport_t transport;
    const char *name;             /* this endpoint's name (<= RBUS_MAX_NAME-1 chars of [a-z0-9_.-]); copied */
    const char *dir;              /* UNIX: socket directory (from rbus_dir_create); copied */
    uint8_t secret[RBUS_SECRET_LEN]; /* UNIX: per-boot secret; copied and wiped on free */
    bool allowed_uid_set;         /* UNIX: check peers against allowed_uid instead of getuid() */
    uid_t allowed_uid;
    rbus_hub_t *hub;              /* INPROC: borrowed; must outlive the endpoint */
    uint32_t max_frame;           /* 0 = OAP_MAX_FRAME; else OAP_MIN_MAX_FRAME..OAP_MAX_FRAME */
} rbus_config_t;

/* Counters since rbus_new() and a few gauges. Plain integers, read with rbus_stats_get(). */
typedef struct {
    uint64_t accepted;           /* inbound connections that passed HELLO */
    uint64_t refused_uid;        /* inbound refused: SO_PEERCRED uid not allowed */
    uint64_t refused_secret;     /* inbound refused: missing or wrong bus_secret */
    uint64_t refused_proto;      /* inbound refused: first frame not a valid HELLO, or HELLO timeout */
    uint64_t connects;           /* outbound connections that completed HELLO */
    uint64_t connect_failures;   /* outbound attempts that failed (connect, HELLO refused) */
    uint64_t disconnects;        /* established connections lost (either direction) */
    uint64_t requests_sent;
    uint64_t responses_received;
    uint64_t requests_timeout;   /* completed with RON_ETIMEOUT */
    uint64_t requests_unavail;   /* completed with or refused by RON_EUNAVAIL */
    uint64_t requests_busy;      /* refused with RON_EBUSY (send queue or in-flight bound) */
    uint64_t requests_received;
    uint64_t requests_rejected;  /* received but answered 429 (in-flight bound) or 404 (no handler) */
    uint64_t responses_sent;
    uint64_t responses_late;     /* responses to requests already completed (timed out) */
    uint64_t events_published;   /* EVENT frames queued to subscribers */
    uint64_t events_dropped;     /* EVENT frames dropped: subscriber's send queue full */
    uint64_t events_received;
    uint64_t frames_in;
    uint64_t frames_out;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t proto_errors;       /* connections closed for a malformed or oversize frame */
    uint64_t send_paused;        /* times reading stopped because a send queue was over its bound */
    /* gauges: current values, computed by rbus_stats_get() */
    uint64_t peers_up;           /* connections past HELLO */
    uint64_t requests_inflight;  /* our requests awaiting a response (incl. waiting for HELLO) */
    uint64_t requests_serving;   /* received requests not yet answered */
    uint64_t send_queue_bytes;   /* bytes queued in user space over all connections */
} rbus_stats_t;

/*
 * Reply to a request: status 0 and resp (a view valid during the call; its
 * code is the responder's status, e.g. 200 or an error envelope's 4xx/5xx),
 * or status RON_ETIMEOUT, RON_EUNAVAIL or RON_ESHUTDOWN with resp NULL.
 */
typedef void (*rbus_reply_cb)(void *arg, int status, const oap_frame_t *resp);

/*
 * Serve one request. f is the request frame (a view valid during the call).
 * The handler answers now or later with rbus_respond(req, ...), exactly once.
 */
typedef void (*rbus_handler_cb)(void *arg, rbus_req_t *req, const oap_frame_t *f);

/* An EVENT frame from peer p for a subscribed app_proto_id (f valid during the call). */
typedef void (*rbus_event_cb)(void *arg, rbus_peer_t *p, const oap_frame_t *f);

/*
 * A connection of this endpoint finished HELLO (up) or was lost (up false),
 * for inbound peers (then freed by the bus right after the up=false call)
 * and outbound ones (which reconnect by themselves and call again).
 */
typedef void (*rbus_peer_cb)(void *arg, rbus_peer_t *p, bool up);

/* ---- setup helpers (see Threads above) ---- */

/*
 * Create a private socket directory (mode 0700) "<base>/ron-<uid>-XXXXXX",
 * base = $XDG_RUNTIME_DIR when set, absolute and short enough, else /tmp.
 * Writes its path into out (cap bytes, >= RBUS_MAX_DIR).
 * Returns 0; RON_EPATHLEN if the path would be too long for the socket names
 * (dir + "/" + RBUS_MAX_NAME-1 chars + ".sock" within RBUS_MAX_PATH); or -errno.
 */
int rbus_dir_create(char *out, size_t cap);

/* Remove the sockets in dir (files ending ".sock") and dir itself. Best effort. */
void rbus_dir_remove(const char *dir);

/*
 * Remove the bus directories a kernel of this user left behind when it died
 * without its cleanup (kill -9, a crash): "ron-<uid>-XXXXXX" in the base
 * rbus_dir_create uses, owned by this user, unchanged for min_age_s seconds,
 * in which no socket accepts a connection. A live kernel's directory always
 * has a listening socket and is never touched. At most RBUS_DIR_SWEEP_MAX per
 * call. Returns how many were removed. Best effort.
 */
int rbus_dir_sweep_stale(unsigned min_age_s);

/* Fill secret_out with RBUS_SECRET_LEN bytes from the OS. Returns 0 or -errno. */
int rbus_secret_generate(uint8_t secret_out[static RBUS_SECRET_LEN]);

/* Write the secret as 64 lowercase hex digits and a NUL (for RBUS_ENV_SECRET). */
void rbus_secret_hex(const uint8_t secret[static RBUS_SECRET_LEN], char out[static 2 * RBUS_SECRET_LEN + 1]);

/*
 * Fill cfg for a child started by the kernel: transport UNIX, dir from
 * RBUS_ENV_DIR, secret from RBUS_ENV_SECRET (then removed from the
 * environment, so the child's own children do not inherit it), name borrowed.
 * cfg->dir points into the environment's storage: copy it before changing
 * the environment. Returns 0 or RON_ECONFIG (variable missing or malformed).
 */
int rbus_config_from_env(rbus_config_t *cfg, const char *name);

/* ---- in-process hub (micronode) ---- */

/* Returns a new hub on loop (borrowed). Free it after every endpoint using it. */
rbus_hub_t *rbus_hub_new(uv_loop_t *loop);
/* Close the hub's handle; memory is released when the loop next runs. NULL is a no-op. */
void rbus_hub_free(rbus_hub_t *h);

/* ---- endpoint ---- */

/*
 * Note: with the UNIX transport, rbus_new() sets SIGPIPE to SIG_IGN if it is
 * still SIG_DFL (libuv writes sockets with write(2), and a peer killed
 * mid-write must not kill this process).
 */

/*
 * Returns a new endpoint on loop (borrowed) configured by cfg (copied), or
 * NULL with *rc_out set: RON_EINVAL (bad name, missing dir or hub, bad
 * max_frame) or RON_EPATHLEN (dir too long for its socket paths).
 */
rbus_t *rbus_new(uv_loop_t *loop, const rbus_config_t *cfg, int *rc_out);

/*
 * Close every connection and handle. Pending requests complete with
 * RON_ESHUTDOWN before this returns; outbound peers are freed; the listening
 * socket file is removed. Memory is released as the loop runs its close
 * callbacks (run the loop afterwards). NULL is a no-op.
 */
void rbus_free(rbus_t *b);

/* The endpoint's name (a view valid until rbus_free). */
const char *rbus_name(const rbus_t *b);

/* Copy the counters into out and fill its gauges (walks the peers: O(peers)). */
void rbus_stats_get(const rbus_t *b, rbus_stats_t *out);

/*
 * Register cb (with arg, borrowed) for requests of app_proto_id (1..65535;
 * 0 is the bus's own control protocol). Replaces an earlier handler for the
 * same id. Requests for an id with no handler are answered 404 not_found.
 * Returns 0, RON_EINVAL (id 0) or RON_EBUSY (RBUS_MAX_HANDLERS reached).
 */
int rbus_handle(rbus_t *b, uint16_t app_proto_id, rbus_handler_cb cb, void *arg);

/* Call cb (arg borrowed) when a peer, inbound or outbound, comes up or goes down. */
void rbus_on_peer(rbus_t *b, rbus_peer_cb cb, void *arg);

/*
 * Accept connections under this endpoint's name: UNIX binds "<dir>/<name>.sock"
 * (mode 0600; a stale socket file left by a killed process is replaced);
 * INPROC registers the name in the hub. Returns 0; RON_EBUSY (already
 * listening, or the name is taken in the hub); -errno from bind/listen.
 */
int rbus_listen(rbus_t *b);

/*
 * Start connecting to the endpoint named name, and keep the connection up
 * (reconnecting with backoff) until rbus_peer_close(). Returns a peer owned by
 * the caller, or NULL with *rc_out = RON_EINVAL (bad name) or RON_EPATHLEN.
 */
rbus_peer_t *rbus_connect(rbus_t *b, const char *name, int *rc_out);

/*
 * Close an outbound peer: its requests in flight complete with
 * RON_ESHUTDOWN before this returns; memory is released as the loop runs.
 * Only for peers returned by rbus_connect (the bus owns inbound peers). NULL is a no-op.
 */
void rbus_peer_close(rbus_peer_t *p);

/* True for a peer that connected to us (owned by the bus), false for rbus_connect's. */
bool rbus_peer_is_inbound(const rbus_peer_t *p);

/* True when HELLO has completed on the peer's current connection. */
bool rbus_peer_is_up(const rbus_peer_t *p);

/*
 * The peer's name: for outbound peers the name connected to, for inbound
 * peers the "name" of their HELLO ("" if none). An inbound name is claimed,
 * not proven (every admitted peer knows the secret): to tell children apart,
 * match rbus_peer_pid() (from SO_PEERCRED) against the pids you started.
 * A view valid while p is.
 */
const char *rbus_peer_name(const rbus_peer_t *p);

/* The peer's process id from SO_PEERCRED (UNIX), or our own pid (INPROC); 0 before HELLO. */
pid_t rbus_peer_pid(const rbus_peer_t *p);

/*
 * Send a one-frame request (REQ|START|END, code 0, tenant 0) with payload
 * (copied) to p's app_proto_id handler. cb (arg borrowed) runs exactly once,
 * after this returns (see "Delivery rules" above). deadline_ms 0 means
 * RBUS_DEFAULT_DEADLINE_MS. Returns 0; RON_EUNAVAIL (peer in reconnect backoff);
 * RON_ESHUTDOWN (peer closed);
 * RON_EBUSY (send queue or in-flight bound reached; retryable); RON_ETOOBIG
 * (frame over the negotiated max_frame); RON_EINVAL (app_proto_id 0).
 * An inbound peer is valid here until its rbus_peer_cb(up=false).
 */
int rbus_request(rbus_peer_t *p, uint16_t app_proto_id, const void *payload, size_t len,
                 uint32_t deadline_ms, rbus_reply_cb cb, void *arg);

/* Options of rbus_request_ex(). Zero-initialise, then set what you need. */
typedef struct {
    uint16_t app_proto_id; /* the handler at the peer; not 0 */
    uint8_t tenant_id[16]; /* the request frame's tenant_id (all zero = none, the node) */
    uint32_t deadline_ms;  /* 0 = RBUS_DEFAULT_DEADLINE_MS */
    const void *cap;       /* the request frame's cap section (copied), or NULL: none */
    size_t cap_len;        /* its bytes, <= OAP_MAX_CAP */
} rbus_request_opts_t;

/*
 * rbus_request() with options: as rbus_request(), but the request frame
 * carries o->tenant_id and the cap section o->cap (both copied), so a
 * forwarding service (the app port, the gateway) can act for its client's
 * tenant with its client's capability; the handler sees them in the
 * request frame (f->tenant_id, f->cap). Same returns and delivery rules,
 * plus RON_EINVAL for a cap over OAP_MAX_CAP.
 */
int rbus_request_ex(rbus_peer_t *p, const rbus_request_opts_t *o, const void *payload,
                    size_t len, rbus_reply_cb cb, void *arg);

/*
 * Answer req with a RESP|END frame of status code and payload (copied), and
 * release req. Exactly once per request. Returns 0, or RON_ECLOSED when the
 * requester's connection has gone (req is released all the same), or
 * RON_ETOOBIG (the frame would exceed max_frame: the requester is answered
 * 500 instead).
 */
int rbus_respond(rbus_req_t *req, uint16_t code, const void *payload, size_t len);

/*
 * As rbus_respond(), handing the payload's memory over instead of copying
 * it: buf (taken, also on failure) is a block from malloc, and payload
 * (len bytes) lies inside it at least RBUS_HEADROOM bytes past buf; the
 * RBUS_HEADROOM bytes before payload are overwritten (the frame header
 * goes there). In process (RBUS_TRANSPORT_INPROC) the requester receives
 * the frame in this same memory and may keep it (rbus_frame_take); over a
 * Unix socket the frame is written from this memory (what the socket does
 * not take at once waits in it, not in a copy). Same returns.
 */
int rbus_respond_owned(rbus_req_t *req, uint16_t code, void *buf, uint8_t *payload, size_t len);

/*
 * Keep the memory of frame f, which the bus is delivering to the calling
 * callback right now (a reply, request or event callback of this loop
 * thread, during its call): returns the start of the malloc block that
 * holds f->payload (the caller frees it with free(); f's views stay valid
 * until then), or NULL when the transport cannot hand it over: the caller
 * copies what it keeps, as before. In process every frame can be taken;
 * over a Unix socket a frame of 64 KiB or more read into a buffer of its
 * own (the bus reads large frames so) is handed over with that buffer, and
 * smaller frames are not. At most one take per frame (a second returns NULL).
 */
void *rbus_frame_take(const oap_frame_t *f);

/*
 * Answer req with an OAP/1 error envelope (spec §3) of status code
 * (e.g. 400, 404, 503) and message (copied, may be NULL); releases req.
 */
int rbus_respond_error(rbus_req_t *req, uint16_t code, const char *message);

/*
 * As rbus_respond_error(), with the envelope's optional parts: slug (NULL =
 * the status's own; must be a slug of the spec §3 table, e.g. "bad_digest"),
 * reason (NULL = none) and retry_after_ms (0 = none). Releases req.
 */
int rbus_respond_error_ex(rbus_req_t *req, uint16_t code, const char *slug, const char *reason,
                          uint32_t retry_after_ms, const char *message);

/* The peer that sent req, or NULL once its connection is gone. */
rbus_peer_t *rbus_req_peer(const rbus_req_t *req);

/*
 * Receive p's EVENT frames of app_proto_id through cb (arg borrowed). The
 * subscription is sent now (or once HELLO completes) and renewed after every
 * reconnect. Replaces an earlier callback for the same id.
 * Returns 0, RON_EINVAL (id 0) or RON_EBUSY (RBUS_MAX_SUBS reached).
 */
int rbus_subscribe(rbus_peer_t *p, uint16_t app_proto_id, rbus_event_cb cb, void *arg);

/*
 * Send an EVENT frame (EVENT|START|END) of app_proto_id with payload (copied)
 * to every connected peer of this endpoint, inbound and outbound, that
 * subscribed to app_proto_id. Never blocks: a subscriber whose send queue is
 * full loses this event (counted in events_dropped).
 * Returns the number of subscribers it was queued to, or RON_ETOOBIG / RON_EINVAL.
 */
int rbus_publish(rbus_t *b, uint16_t app_proto_id, const void *payload, size_t len);

#endif
