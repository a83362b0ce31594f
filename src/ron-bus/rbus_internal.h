/*
 * rbus_internal.h - ron-bus internals shared by rbus.c (transport-neutral
 * core: peers, HELLO, requests, events), rbus_unix.c, rbus_inproc.c,
 * rbus_hello.c and the tests. Not for other components.
 *
 * A transport owns rbus_conn_t memory and moves whole frames; the core owns
 * peers and never frees a connection. Invariants: conn->peer and
 * peer->conn point at each other or are both NULL (detached); once detached
 * a transport never calls the core for that connection again. Peers and the
 * bus are freed only in libuv close callbacks, so a pointer held across a
 * user callback stays valid until the stack unwinds (check ->state).
 */
#ifndef RBUS_INTERNAL_H
#define RBUS_INTERNAL_H

#include "ron_bus.h"

/* A HELLO deadline found passed is confirmed only after this much more loop
 * time (fresh clock), so that a HELLO that arrived while the loop was stalled
 * (load, long synchronous work) is read before the connection is judged. */
#define RBUS_HELLO_GRACE_MS 250u

typedef struct rbus_conn_s rbus_conn_t;

typedef struct {
    /* Queue one frame: 38-byte header then payload. Never calls the core back
     * synchronously; a failure surfaces later as rbus__conn_lost(). */
    void (*send)(rbus_conn_t *c, const uint8_t hdr[static OAP_HDR_LEN], const void *payload, size_t len);
    /* Detached by the core: flush queued frames when flush, then close and free. */
    void (*close)(rbus_conn_t *c, bool flush);
    /* Stop or resume delivering received frames. */
    void (*set_reading)(rbus_conn_t *c, bool on);
    /* Lower the receive limit after HELLO. */
    void (*set_max_frame)(rbus_conn_t *c, uint32_t max_frame);
    /* Optional (NULL: the core copies through send and frees buf): queue one
     * frame whose payload lies in buf (taken, from malloc) with RBUS_HEADROOM
     * free bytes before it, without copying the payload. */
    void (*send_owned)(rbus_conn_t *c, const uint8_t hdr[static OAP_HDR_LEN], void *buf,
                       uint8_t *payload, size_t len);
} rbus_conn_ops_t;

struct rbus_conn_s {
    const rbus_conn_ops_t *ops;
    rbus_peer_t *peer;     /* NULL once detached */
    size_t q_bytes;        /* send queue bytes; maintained by the transport */
    uint32_t q_frames;     /* send queue frames; maintained by the transport */
    bool reading;          /* false while paused by the core */
};

typedef enum {
    RBUS_P_CONNECTING, /* outbound: transport connecting */
    RBUS_P_HELLO,      /* HELLO sent (outbound) or awaited (inbound) */
    RBUS_P_UP,         /* HELLO done */
    RBUS_P_BACKOFF,    /* outbound: waiting to reconnect */
    RBUS_P_CLOSED,     /* shut down; memory goes in the timers' close callbacks */
} rbus_peer_state_t;

typedef struct {
    uint64_t corr_id;
    uint64_t deadline;     /* ms, uv_now() clock */
    rbus_reply_cb cb;      /* NULL = free slot */
    void *arg;
    uint16_t app_proto_id;
    uint8_t tenant_id[16]; /* the request frame's tenant (rbus_request_ex) */
    uint8_t *queued;       /* cap + payload copy while waiting for HELLO; NULL once sent */
    size_t queued_len;     /* bytes of queued, cap included */
    uint16_t queued_cap;   /* leading bytes of queued that are the cap section */
} rbus_pending_t;

typedef struct {
    uint16_t app_proto_id;
    rbus_event_cb cb;
    void *arg;
} rbus_sub_t;

struct rbus_req_s {
    rbus_peer_t *peer;     /* NULL once the connection is gone */
    rbus_req_t *prev, *next; /* in peer->reqs */
    uint64_t corr_id;
    uint16_t app_proto_id;
    bool bare;             /* answer with bare RESP (Rust-style bare REQ) */
};

struct rbus_peer_s {
    rbus_t *bus;
    rbus_peer_t *prev, *next;      /* in bus->peers */
    bool outbound;
    rbus_peer_state_t state;
    char name[RBUS_MAX_NAME];
    pid_t pid;
    rbus_conn_t *conn;             /* NULL when detached */
    uint32_t max_frame;            /* negotiated */
    uint32_t remote_inflight;      /* requests the remote accepts in flight */
    rbus_pending_t pend[RBUS_MAX_INFLIGHT];
    uint32_t npend;
    size_t queued_bytes;           /* payload bytes waiting for HELLO */
    uint64_t next_corr;            /* corr_id of our next request; 0 is HELLO's */
    uv_timer_t timer;              /* request deadlines; HELLO timeout for inbound */
    uint64_t timer_due;            /* 0 = not armed */
    uint64_t hello_due;            /* ms: HELLO must complete by then (state HELLO only) */
    bool hello_late;               /* hello_due passed once: one grace period left */
    uv_timer_t backoff;            /* outbound reconnect */
    uint32_t backoff_ms;
    rbus_sub_t subs[RBUS_MAX_SUBS];   /* our subscriptions to the remote's events */
    uint32_t nsubs;
    uint16_t rsubs[RBUS_MAX_SUBS];    /* app ids the remote subscribed to from us */
    uint32_t nrsubs;
    rbus_req_t *reqs;              /* received requests awaiting rbus_respond */
    uint32_t nreqs;
    int handles;                   /* open uv handles; freed at 0 */
};

typedef struct {
    uint16_t app_proto_id;
    rbus_handler_cb cb;
    void *arg;
} rbus_handler_t;

struct rbus_s {
    uv_loop_t *loop;
    rbus_transport_t transport;
    char name[RBUS_MAX_NAME];
    char dir[RBUS_MAX_DIR];
    uint8_t secret[RBUS_SECRET_LEN];
    uid_t allowed_uid;
    rbus_hub_t *hub;
    uint32_t max_frame;
    rbus_handler_t handlers[RBUS_MAX_HANDLERS];
    uint32_t nhandlers;
    rbus_peer_cb on_peer;
    void *on_peer_arg;
    rbus_peer_t *peers;            /* every peer, inbound and outbound */
    bool closing;
    bool listening;
    uv_pipe_t listener;            /* UNIX only, when listening */
    rbus_t *hub_next;              /* INPROC: in hub's listener list */
    int handles;                   /* open handles + live peers; freed at 0 after closing */
    rbus_stats_t stats;
};

/* ---- core entry points for transports (rbus.c) ---- */

/* An inbound connection arrived with its SO_PEERCRED uid and pid. */
void rbus__conn_accepted(rbus_t *b, rbus_conn_t *c, uid_t uid, pid_t pid);
/* An outbound connection is established (status 0, uid/pid of the listener) or failed. */
void rbus__conn_connected(rbus_conn_t *c, int status, uid_t uid, pid_t pid);
/* A whole frame arrived. Returns 0, or < 0 when c was detached (stop delivering). */
int rbus__conn_frame(rbus_conn_t *c, const oap_frame_t *f, size_t wire_len);
/* The decoder rejected the byte stream with rc: the core answers and detaches c. */
void rbus__conn_proto_error(rbus_conn_t *c, int rc);
/* The connection died (EOF, error, or the remote closed); c is freed after this returns. */
void rbus__conn_lost(rbus_conn_t *c, int rc);
/* The send queue shrank; the core may resume reading. */
void rbus__conn_drained(rbus_conn_t *c);
/* Bus memory accounting for transports' handles. */
void rbus__bus_unref(rbus_t *b);

/* ---- transports ---- */
int rbus__unix_listen(rbus_t *b);
void rbus__unix_unlisten(rbus_t *b);
/* Start connecting p; on success p->conn is set and rbus__conn_connected follows later. */
int rbus__unix_connect(rbus_peer_t *p);
/* Build "<dir>/<name>.sock" into out (RBUS_MAX_PATH). Returns 0 or RON_EPATHLEN. */
int rbus__sock_path(const char *dir, const char *name, char out[static RBUS_MAX_PATH]);

int rbus__inproc_listen(rbus_t *b);
void rbus__inproc_unlisten(rbus_t *b);
int rbus__inproc_connect(rbus_peer_t *p);
/* rbus_frame_take for the in-process transport (NULL: f is not a frame it is delivering). */
void *rbus__inproc_frame_take(const oap_frame_t *f);
/* rbus_frame_take for the Unix-socket transport (NULL: f is not a frame it is
 * delivering, is smaller than its take minimum, or does not end its buffer). */
void *rbus__unix_frame_take(const oap_frame_t *f);

/* ---- HELLO (rbus_hello.c) ---- */
typedef struct {
    char name[RBUS_MAX_NAME];   /* "" when absent */
    bool has_secret;
    uint8_t secret[RBUS_SECRET_LEN];
    uint32_t max_frame;         /* 0 when absent; else clamped to OAP_MAX_FRAME */
    uint32_t max_inflight;      /* 0 when absent; else clamped to RBUS_MAX_INFLIGHT */
} rbus_hello_t;

/*
 * Parse a HELLO or HELLO-reply payload (JSON object; unknown keys ignored).
 * Returns 0; RON_ETOOBIG (> RBUS_MAX_HELLO); RON_EJSON (not a JSON object);
 * RON_EPROTO (a known key of the wrong type or range, a bad name);
 * RON_EVERSION ("versions" without 1). A malformed bus_secret only leaves
 * has_secret false.
 */
int rbus__hello_parse(const uint8_t *buf, size_t len, rbus_hello_t *out);

/* True if s is a valid endpoint name: 1..RBUS_MAX_NAME-1 of [a-z0-9_.-], not starting with '.'. */
bool rbus__name_is_valid(const char *s, size_t len);

/* Compare n bytes in time independent of their contents. */
bool rbus__ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif
