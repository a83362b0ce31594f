/*
 * ovl_service.h - svc-overlay as a node service: the overlay core
 * (svc_overlay.h) put on the real peer transport (tx_peer: mutual TLS 1.3,
 * HELLO, stream credit) and served over ron-bus as endpoint `overlay`
 * (app_proto_id OAP_APP_OVERLAY; docs/protocol/overlay.md §6).
 *
 * The glue: every tx_peer session, dialled or accepted, carries one
 * ovl_session_t whose link ops are tx_peer_send / tx_peer_consume / pause /
 * close; tx_peer's on_writable and on_close reach ovl_session_writable and
 * ovl_session_closed; one uv timer drives every session's keepalive and
 * gossip deadlines, the fetch deadlines and the idle close of dialled
 * sessions. A fetch names its provider by node id and address (from a
 * provider record): the service reuses an open session with that id, or
 * dials the address with the id pinned (tx_peer refuses any other key), up
 * to max_sessions dialled sessions. Accepted sessions serve the node's store
 * read-only (the provider side of the core).
 *
 * Bus ops (JSON, framed as docs/protocol/storage.md: u32 json_len || json
 * || raw): `fetch` (verified pieces of a range, with their proofs, as raw
 * piece records), `peers`, `status`. A provider whose piece or metadata did
 * not verify is remembered as bad for OVL_SVC_BAD_MS and its session closed;
 * fetches naming it are answered 502 at once.
 *
 * Thread rule: one loop thread owns a service and everything in it.
 */
#ifndef OVL_SERVICE_H
#define OVL_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ron_bus.h"
#include "ron_guard.h"
#include "ron_kms.h"
#include "svc_overlay.h"
#include "tx_peer.h"

/* ---- limits (defaults of ovl_service_config_t; 0 in a field selects them) ---- */
#define OVL_SVC_MAX_SESSIONS 64u       /* sessions this node dials and keeps open */
#define OVL_SVC_MAX_FETCHES 64u        /* bus fetches pending at once; past it: 429 */
#define OVL_SVC_FETCH_TIMEOUT_MS 5000u /* a fetch without progress this long: 504 */
#define OVL_SVC_IDLE_MS 60000u         /* a dialled session unused this long: GOODBYE */
#define OVL_SVC_BAD_MS 600000u         /* a provider that lied is refused this long (10 min) */
#define OVL_SVC_BAD_MAX 256u           /* bad providers remembered (oldest replaced) */
#define OVL_SVC_FETCH_MAX_LEN 262144u  /* bytes one bus fetch may ask for */
#define OVL_SVC_MAX_JSON 4096u         /* bytes of a request's JSON */
#define OVL_SVC_PIECES_MAX (OVL_SVC_FETCH_MAX_LEN / STO_PIECE_LEN + 2u) /* records per answer */
/* max_frame offered on peer links (tx_peer's default is 1 MiB): a piece frame
 * (OVL_MIN_MAX_FRAME, 67,120 B) fits with room to spare; a peer can make us
 * buffer at most this plus one read (OAP_CHUNK) per session until the session
 * goes quiet (tx_peer then releases it): ~14 MiB for 100 sessions, not ~106 */
#define OVL_SVC_MAX_FRAME 81920u

typedef struct ovl_service ovl_service_t;

typedef struct {
    const kms_keystore_t *keys; /* the node identity (borrowed; must outlive the service) */
    sto_store_t *store;         /* served read-only (borrowed); NULL: every get is 404 */
    int listen_fd;              /* inherited listening socket (taken), or -1 */
    const char *listen;         /* else: numeric "HOST:PORT" to bind (port 0 works); NULL: none */
    const char *advertise;      /* address peers should dial; NULL/"": derived from the listener */
    uint32_t max_sessions;      /* OVL_SVC_MAX_SESSIONS */
    uint32_t max_fetches;       /* OVL_SVC_MAX_FETCHES */
    uint32_t fetch_timeout_ms;  /* OVL_SVC_FETCH_TIMEOUT_MS */
    uint32_t idle_ms;           /* OVL_SVC_IDLE_MS */
    uint32_t ping_ms;           /* keepalive (ovl_config_t.ping_ms) */
    uint32_t gossip_ms;         /* ovl_config_t.gossip_ms */
    const tx_peer_config_t *peer; /* NULL: tx_peer defaults; max_frame 0: OVL_SVC_MAX_FRAME */
    /*
     * Test hook (NULL in a node): replaces tx_peer_send for every frame the
     * overlay sends, so a test peer can damage or slow its pieces through the
     * real code. Same contract as tx_peer_send; after a RON_EAGAIN the hook's
     * owner calls ovl_service_kick when it can take frames again.
     */
    int (*send_hook)(void *arg, tx_peer_session_t *ps, const oap_frame_t *f);
    void *hook_arg;
} ovl_service_config_t;

typedef struct {
    uint64_t piece_bytes_sent, piece_bytes_recv; /* every session, closed ones included */
    uint64_t bad_pieces;                         /* pieces or metadata that did not verify */
    uint64_t sessions;                           /* established now (both directions) */
    uint64_t fetches_ok, fetches_failed;         /* bus fetches answered 200 / an error */
    uint64_t fetches_timeout, fetches_busy;      /* 504s, 429s given by this service */
    uint64_t bad_refused;                        /* fetches refused at once: known bad provider */
} ovl_service_stats_t;

/*
 * Start the service on loop: a tx_peer endpoint for the node's key, the
 * listener (listen_fd, else listen), the overlay node with the advertise
 * address: cfg->advertise, else the bound address with an unspecified host
 * (0.0.0.0, ::) replaced by 127.0.0.1 (a warning is logged: set
 * --advertise). cfg is copied. Returns 0 with *out, RON_EINVAL, or the
 * transport's error (listen_fd is closed on every failure).
 */
int ovl_service_new(uv_loop_t *loop, const ovl_service_config_t *cfg, ovl_service_t **out);

/*
 * Enforce capabilities on peers' gets with g (borrowed; the process's
 * guard, ron_node_guard(), in a node; NULL, the default: every get is
 * served). A get is op get on its address, with the token the peer put in
 * the START frame's cap section (none: anonymous, allowed when the policy
 * allows anonymous get, as the shipped default does) and the peer's
 * network address as the source (per-source rate). A refusal answers the
 * peer 401, 403 or 429 with the guard's slug and reason; counted in
 * overlay_gets_refused_total{reason} and by the guard. docs/protocol/overlay.md.
 */
void ovl_service_set_guard(ovl_service_t *s, guard_t *g);

/* Answer the `overlay` bus protocol on bus (rbus_handle; the caller listens). */
int ovl_service_serve(ovl_service_t *s, rbus_t *bus);

/* The address peers are told to dial, and the bound listener ("" for none). */
const char *ovl_service_advertise(const ovl_service_t *s);
const char *ovl_service_listen_addr(const ovl_service_t *s);
/* This node's id (OVL_ID_LEN bytes). */
const uint8_t *ovl_service_node_id(const ovl_service_t *s);
/* The overlay node (peer table, node stats) and the transport. */
ovl_node_t *ovl_service_node(ovl_service_t *s);
tx_peer_t *ovl_service_peer(ovl_service_t *s);
/* Counters. */
void ovl_service_stats(const ovl_service_t *s, ovl_service_stats_t *out);
/* Is id remembered as a bad provider now? */
bool ovl_service_is_bad(const ovl_service_t *s, const uint8_t id[static OVL_ID_LEN]);

/*
 * Prometheus text of the overlay's metrics into buf (cap bytes):
 * overlay_piece_bytes_sent_total, overlay_piece_bytes_recv_total,
 * overlay_bad_pieces_total, overlay_sessions, overlay_fetches_total{result},
 * overlay_peer_rejects_total{reason}. Returns the bytes written (0 when it
 * does not fit).
 */
size_t ovl_service_metrics(ovl_service_t *s, char *buf, size_t cap);

/* Every session may take frames again (after a send_hook's RON_EAGAIN). */
void ovl_service_kick(ovl_service_t *s);

/*
 * Stop: pending bus fetches are answered 503, every session and the
 * listener close; once every handle is closed s is freed and cb(arg) runs
 * (cb may be NULL). The bus handler must not be reachable after this (free
 * the rbus endpoint first or in the same loop turn).
 */
void ovl_service_close(ovl_service_t *s, void (*cb)(void *arg), void *arg);

#endif
