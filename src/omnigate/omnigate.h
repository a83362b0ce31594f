/*
 * omnigate.h - the app port: OAP/1 over TCP for applications
 * (docs/protocol/app-port.md). One libuv server on a listening socket the
 * caller provides; per connection an OAP/1 decoder, HELLO, the stream table
 * with credit (src/oap), and requests of the storage (app 1), naming (app 2)
 * and kernel (app 6) protocols forwarded over ron-bus to the services that
 * own them, with the client's tenant and capability, each request first
 * checked by the process guard (omni_set_guard). A pure request parser
 * (omni_request_parse) checks each START frame's JSON before anything is
 * forwarded; it is fuzzed (fuzz_omni_request.c).
 *
 * Invariants: every buffer is bounded by the limits below (a slow reader
 * stops the server's reads and gets, a fast writer is held by credit and by
 * the connection's input bound); every request is answered exactly once,
 * with an error envelope when it fails; a connection that breaks the frame
 * or stream rules gets an envelope and is closed. Loop thread only.
 */
#ifndef OMNIGATE_H
#define OMNIGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "oap.h"
#include "ron_auth.h"
#include "ron_bus.h"
#include "ron_guard.h"
#include "ron_proto.h"

/* ---- limits (app-port.md §1) ---- */
#define OMNI_MAX_CONNS 1024u              /* open connections; past it: 503 envelope, close */
#define OMNI_HELLO_TIMEOUT_MS 5000u       /* HELLO must arrive within this after accept */
#define OMNI_IDLE_MS 60000u               /* no open stream for this long: close */
#define OMNI_MAX_OUTPUT (4u << 20)        /* unsent bytes per connection before reads stop */
#define OMNI_MAX_INPUT (8u << 20)         /* queued put bytes per connection before reads stop */
#define OMNI_MAX_JSON 4096u               /* START payload bytes (after inflate) */
#define OMNI_BUS_CHUNK (256u << 10)       /* bytes of one put_write / get on the bus */
#define OMNI_BUS_DEADLINE_MS 10000u       /* deadline of each forwarded bus request */
#define OMNI_GET_PIPELINE 4u              /* bus gets in flight per get stream (reordered) */
#define OMNI_PUT_PIPELINE 4u              /* put_writes in flight per put stream (in order) */
#define OMNI_IDEM_ENTRIES 4096u           /* idempotency answers remembered; oldest dropped */
#define OMNI_IDEM_TTL_MS (10u * 60000u)   /* how long an idempotency answer is remembered */
#define OMNI_MAX_IDEM 64u                 /* idem key: 1..64 of [A-Za-z0-9_-] */
#define OMNI_MAX_ANSWER (64u << 10)       /* bytes of a remembered answer JSON */
#define OMNI_RETRY_AFTER_MS 1000u         /* retry_after_ms of 503 answers */
#define OMNI_MAX_NAME 253u                /* bytes of a name the guard checks (a DNS name) */
#define OMNI_REVOKE_PER_MIN 60u           /* cap_revoke by id per lineage root per minute */
#define OMNI_REVOKE_CALLERS 1024u         /* callers whose revocation count is held */

/* ---- the request parser (pure) ---- */

typedef enum {
    OMNI_OP_PING = 0, /* app 0 */
    OMNI_OP_PUT,      /* app 1 */
    OMNI_OP_GET,
    OMNI_OP_STAT,
    OMNI_OP_LIST,
    OMNI_OP_PIN,
    OMNI_OP_UNPIN,
    OMNI_OP_GC,
    OMNI_OP_PUBLISH, /* app 2 */
    OMNI_OP_RESOLVE,
    OMNI_OP_NAMES,   /* app 2 "list" */
    OMNI_OP_STATUS,  /* app 6 */
    OMNI_OP_RELOAD,
    OMNI_OP_RELEASE,
    OMNI_OP_REG_HEAD, /* app 9 (svc-registry): reads from anywhere */
    OMNI_OP_REG_GET,
    OMNI_OP_REG_SIGNERS,
    OMNI_OP_REG_PROPOSE, /* writes: loopback peers only, as kernel ops */
    OMNI_OP_REG_APPROVE,
    OMNI_OP_REG_COMMIT,
    OMNI_OP_CHALLENGE, /* app 7: svc-passport */
    OMNI_OP_REDEEM,
    OMNI_OP_CAP_MINT, /* app 6: minted here, by the guard */
    OMNI_OP_CAP_REVOKE, /* app 6: forwarded to the kernel's auth_revoke */
    OMNI_OP_KEY_ROTATE, /* app 6: forwarded to the kernel's auth_rotate (admin) */
    OMNI_OP_KEY_SHOW,   /* app 6: forwarded to the kernel's auth_show (admin) */
    OMNI_OP_PASS_ROTATE, /* app 7: svc-passport's rotate (admin) */
    OMNI_OP__COUNT,
} omni_op_t;

/* cap_mint's asks (app-port.md §5c), checked by the parser. */
typedef struct {
    uint32_t ops;                    /* mask of 1 << auth_op_t, not 0 */
    uint32_t ttl;                    /* s; 0: the guard's default */
    bool has_tenant;
    uint8_t tenant[AUTH_TENANT_LEN];
    uint64_t max_bytes;              /* 0: none */
    char prefix[68];                 /* "b3:<1..64 hex>" or "" */
} omni_mint_t;

/* A checked request. fwd is what goes to the owning service. */
typedef struct {
    omni_op_t op;
    uint16_t app_proto_id;
    char *fwd;     /* returns new: bus JSON (storage/index: without the u32 prefix) */
    size_t fwd_len;
    char idem[OMNI_MAX_IDEM + 1]; /* "" = none */
    /* get */
    uint8_t addr[32];
    bool has_offset, has_length;
    bool revoke_epoch; /* cap_revoke: by epoch (needs admin), else by id (mint) */
    uint64_t offset, length;
    /* what the guard checks (every op) */
    int auth_op;                    /* auth_op_t, or -1: an op open to anyone (ping, passport) */
    char auth_addr[68];             /* "b3:<64 hex>" the request names, or "" */
    char auth_name[OMNI_MAX_NAME + 1]; /* the name published or resolved, or "" */
    uint64_t auth_size;             /* put: the declared size, else AUTH_SIZE_UNKNOWN */
    omni_mint_t mint;               /* cap_mint */
} omni_request_t;

/*
 * Check a START payload (json, len bytes, not NUL-terminated) of app
 * app_proto_id against app-port.md: a known op of that app, only its fields,
 * idem well-formed. Values the owning service checks (addresses of stat, a
 * record, limits) are left to it, except get's, which the app port uses.
 * Fills r_out (release with omni_request_close) and returns 0; RON_EJSON
 * with err_out naming the field ("op" for an unknown op, "app_proto_id" for
 * an app without operations here, "payload" for JSON over OMNI_MAX_JSON).
 * service names the sender in kernel requests ("app"). Also fills what the
 * guard checks: the op's capability op (app-port.md §1b), the address,
 * name and declared size the request names, and cap_mint's asks.
 */
int omni_request_parse(uint16_t app_proto_id, const uint8_t *json, size_t len,
                       const char *service, omni_request_t *r_out, proto_err_t *err_out);

/* Free r->fwd. NULL fields are fine. */
void omni_request_close(omni_request_t *r);

/* The op's name as it appears in metrics ("put", "names.list" is "list"). */
const char *omni_op_name(omni_op_t op);

/* ---- the server ---- */

typedef struct omni omni_t;

typedef struct {
    uint32_t max_conns;        /* 0 = OMNI_MAX_CONNS */
    uint32_t hello_timeout_ms; /* 0 = OMNI_HELLO_TIMEOUT_MS */
    uint32_t idle_ms;          /* 0 = OMNI_IDLE_MS */
    uint32_t max_output;       /* 0 = OMNI_MAX_OUTPUT */
    const char *service;       /* name in kernel requests; NULL = "app" (copied) */
} omni_config_t;

/* Counters and gauges since omni_new(). */
typedef struct {
    uint64_t accepted;      /* connections accepted and served */
    uint64_t conns;         /* open connections (gauge) */
    uint64_t requests;      /* requests answered */
    uint64_t bytes_in;      /* frame bytes read */
    uint64_t bytes_out;     /* frame bytes written */
    uint64_t read_paused;   /* times a connection stopped being read (output or input bound) */
    uint64_t output_bytes;  /* unsent bytes over all connections (gauge) */
    uint64_t input_bytes;   /* queued put bytes over all connections (gauge) */
    uint64_t rej_conns, rej_hello, rej_hello_timeout, rej_proto, rej_streams, rej_idle;
} omni_stats_t;

/*
 * Create the app port on loop; cfg may be NULL (defaults). Registers its
 * metrics in its own registry (omni_metrics renders them). Returns new.
 */
omni_t *omni_new(uv_loop_t *loop, const omni_config_t *cfg);

/*
 * Serve on listen_fd (taken: a bound, listening or not, TCP socket).
 * Returns 0 or a libuv error (the fd is closed).
 */
int omni_listen_fd(omni_t *g, int listen_fd);

/*
 * Set the ron-bus peers requests are forwarded to (borrowed; NULL = that
 * protocol answers 503). Call again with NULLs before closing them.
 */
void omni_set_peers(omni_t *g, rbus_peer_t *storage, rbus_peer_t *index, rbus_peer_t *kernel);

/* Set the registry service's peer (borrowed; NULL = registry ops answer
 * 503), as omni_set_peers. */
void omni_set_registry(omni_t *g, rbus_peer_t *registry);

/*
 * Set the ron-bus peer of the passport protocol (app_proto_id 7: challenge
 * and redeem only; borrowed; NULL = it answers 503). Call again with NULL
 * before closing it.
 */
void omni_set_passport_peer(omni_t *g, rbus_peer_t *passport);

/*
 * Enforce capabilities with guard (borrowed; the process guard,
 * ron_node_guard() in a node): every request but ping, passport challenge
 * and redeem is checked with guard_check (app-port.md §1b) before anything
 * is forwarded, and cap_mint mints with it. NULL (the default): no
 * enforcement, for unit tests and library users; kernel ops and registry
 * writes then answer loopback peers only and cap_mint is refused. Each
 * revocation made through cap_revoke is audited as cap_revoked.
 */
void omni_set_guard(omni_t *g, guard_t *guard);

/* Current counters (a view valid until the next loop turn). */
const omni_stats_t *omni_stats(omni_t *g);

/* Append the Prometheus text of the app port's metrics to buf (cap bytes).
 * Returns bytes written (0 when cap is too small). */
size_t omni_metrics(omni_t *g, char *buf, size_t cap);

/*
 * Close the listener and every connection (requests in flight are dropped;
 * open puts are aborted at the storage service while its peer is still
 * set). g is freed, and done(arg) (may be NULL) runs, once every handle is
 * closed and every bus request in flight has returned: clear the peers with
 * omni_set_peers() and close them (rbus_peer_close completes their requests)
 * to finish at once. NULL does nothing.
 */
void omni_close(omni_t *g, void (*done)(void *arg), void *arg);

#endif
