/*
 * svc_overlay.h - svc-overlay: peer sessions and verified content transfer
 * between nodes over OAP/1 (app_proto_id 4; docs/protocol/overlay.md).
 *
 * The overlay sits on a narrow link interface (ovl_link_ops_t) instead of a
 * transport, so its logic is the same over the real peer transport
 * (tx_peer: mutual TLS, HELLO, stream credit) and over an in-memory pair in
 * tests. A link delivers whole decoded frames, accounts stream frames and
 * credit itself (as tx_peer_send / tx_peer_consume do) and bounds its own
 * output queue. The overlay is sans-I/O otherwise: time comes in as
 * now_ms arguments, and ovl_session_tick() returns the next deadline.
 *
 * A session does keepalive (PING every ping_ms, dead after dead_missed
 * unanswered), bounded control output (frames that meet a full link wait in
 * a queue of OVL_CTRL_QUEUE_MAX; past it the peer is dropped as slow, and
 * reading from it stops while anything waits), graceful close (GOODBYE, then
 * the link closes once transfers drain), gossip of {node id, address, ts}
 * lists (bounded per message and per node), and per-peer stats.
 *
 * Content transfer: a fetcher asks for an object or a byte range by
 * address; the provider streams the covering 64 KiB pieces, each with its
 * proof, the last piece first (it binds the size), and the fetcher verifies
 * each against the address before it hands it on. A piece that does not
 * verify ends the fetch with RON_EBADPIECE and nothing of it is passed on.
 *
 * Thread rule: one thread (the loop's) owns a node and its sessions. The
 * provider reads the store synchronously (sto_reader_read of one piece at a
 * time): fine for the RAM store and a warm page cache.
 */
#ifndef SVC_OVERLAY_H
#define SVC_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "oap.h"
#include "svc_storage.h"

/* ---- limits ---- */
#define OVL_ID_LEN 32u           /* node ids: BLAKE3 of the node's public key */
#define OVL_ADDR_MAX 255u        /* bytes of a dial address ("host:port") */
#define OVL_REASON_MAX 127u      /* bytes of a GOODBYE reason */
#define OVL_GOSSIP_MAX 32u       /* entries in one gossip message, at most */
#define OVL_PEERS_MAX 1024u      /* entries in a node's peer table, at most */
#define OVL_GOSSIP_FUTURE_S 600u /* a gossip ts further in the future is dropped */
#define OVL_MSG_MAX 16384u       /* bytes of a JSON control or request payload */
#define OVL_CTRL_QUEUE_MAX 64u   /* control frames waiting on a full link; past it: drop */
#define OVL_PIECE_HDR_LEN 10u    /* piece frame payload: u64 piece, u16 proof_len */
#define OVL_PIECE_PAYLOAD_MAX (OVL_PIECE_HDR_LEN + STO_TREE_MAX_PROOF + STO_PIECE_LEN)
#define OVL_MIN_MAX_FRAME (OAP_HDR_LEN + OVL_PIECE_PAYLOAD_MAX) /* smallest usable max_frame */
#define OVL_PING_MS_DEFAULT 15000u                              /* keepalive interval */
#define OVL_DEAD_MISSED_DEFAULT 3u    /* unanswered PINGs before the peer is dead */
#define OVL_GOSSIP_MS_DEFAULT 60000u  /* gossip interval */
#define OVL_MAX_TRANSFERS_DEFAULT 16u /* transfers one peer may have us serve at once */
#define OVL_LEN_TO_END UINT64_MAX     /* ovl_fetch_start length: to the object's end */
#define OVL_SIZE_UNKNOWN UINT64_MAX   /* ovl_fetch_start_sized: no size verified yet */
#define OVL_PIECE_HOLD 1              /* on_piece return: keep the credit until ovl_fetch_release */

typedef struct ovl_node ovl_node_t;       /* one per process; owns the peer table */
typedef struct ovl_session ovl_session_t; /* one per peer link */
typedef struct ovl_fetch ovl_fetch_t;     /* one fetch in flight on a session */

/* One gossip entry: a node and the address it asks others to dial. */
typedef struct {
    uint8_t id[OVL_ID_LEN];
    char addr[OVL_ADDR_MAX + 1]; /* NUL-terminated */
    uint64_t ts;                 /* unix seconds when the node advertised it */
} ovl_peer_t;

/* Why a peer's get is refused (ovl_config_t.authorize fills it). */
typedef struct {
    uint16_t status;         /* 401, 403 or 429 */
    const char *slug;        /* envelope code (NULL: the status's own), static */
    const char *reason;      /* envelope reason (machine-readable, may be NULL), static */
    const char *message;     /* one sentence (may be NULL), static */
    uint32_t retry_after_ms; /* with 429 */
} ovl_deny_t;

typedef struct {
    uint8_t node_id[OVL_ID_LEN]; /* this node */
    const char *advertise;       /* address others should dial (copied); NULL = none */
    sto_store_t *store;          /* borrowed, served read-only; NULL = serve nothing (404) */
    uint32_t ping_ms;            /* 0 = OVL_PING_MS_DEFAULT */
    uint32_t dead_missed;        /* 0 = OVL_DEAD_MISSED_DEFAULT */
    uint32_t gossip_ms;          /* 0 = OVL_GOSSIP_MS_DEFAULT */
    uint32_t max_transfers;      /* 0 = OVL_MAX_TRANSFERS_DEFAULT */
    /*
     * Optional (NULL: every get is served). Decides a peer's get before the
     * store is read: link is the session's link pointer (ovl_session_new),
     * addr the object, cap the START frame's cap section (cap_len 0: the
     * peer sent none). Return 0 to serve it; or fill *deny and return a
     * negative code: the peer gets that error envelope (its fetch ends with
     * RON_ECAPNEEDED for 401, RON_ECAPDENY for 403, RON_EBUSY for 429),
     * counted in ovl_session_stats_t.refused_auth.
     */
    int (*authorize)(void *arg, void *link, const uint8_t addr[STO_ADDR_LEN], const uint8_t *cap,
                     size_t cap_len, ovl_deny_t *deny);
    void *auth_arg;
} ovl_config_t;

typedef struct {
    uint64_t sessions;       /* sessions created */
    uint64_t dead_peers;     /* sessions closed for missed keepalives */
    uint64_t slow_peers;     /* sessions dropped: control queue past OVL_CTRL_QUEUE_MAX */
    uint64_t bad_providers;  /* fetches ended by a piece that did not verify */
    uint64_t gossip_learned; /* peer-table entries added or refreshed by gossip */
    uint64_t gossip_dropped; /* gossip entries or messages refused */
} ovl_node_stats_t;

typedef struct {
    uint64_t frames_in, frames_out; /* overlay frames, control frames included */
    uint64_t pings_sent, pongs_recv, pings_missed;
    uint64_t pieces_sent, pieces_recv; /* pieces recv: verified ones only */
    uint64_t piece_bytes_sent, piece_bytes_recv;
    uint64_t bad_pieces;
    uint64_t served, refused_busy, not_found; /* provider: transfers started, 429s, 404s */
    uint64_t fetches_ok, fetches_failed;
    uint64_t send_stalls; /* sends that met a full link or no credit */
    uint64_t gossip_sent, gossip_recv;
    uint64_t ctrl_queued_max; /* high-water mark of the control queue */
    uint64_t refused_auth;    /* provider: gets the authorize hook refused */
    uint64_t sized_served;    /* provider: GETs served without the size proof */
    uint64_t sized_refused;   /* fetcher: 400s to a sized GET, asked again without */
} ovl_session_stats_t;

/*
 * The link under a session (implemented by the transport glue). Every
 * function runs on the owner's thread; link is the glue's pointer.
 *   send:    send f (borrowed; copied before return), accounting stream
 *            frames and credit. 0; RON_EAGAIN when the output queue is full or
 *            the stream lacks credit (the glue calls ovl_session_writable
 *            later); RON_EBUSY for a START past the peer's max_inflight;
 *            another negative code for a dead link.
 *   consume: n received frames of stream (corr_id, mine) are finished; grant
 *            credit when due. 0 or negative for a dead link.
 *   pause:   stop (true) or resume (false) reading from the peer.
 *   close:   close the link after its queued output; the glue then calls
 *            ovl_session_closed (never from inside close).
 */
typedef struct {
    int (*send)(void *link, const oap_frame_t *f);
    int (*consume)(void *link, uint64_t corr_id, bool mine, uint32_t n);
    void (*pause)(void *link, bool paused);
    void (*close)(void *link);
} ovl_link_ops_t;

/* ---- node ---- */

/* Create a node; cfg is copied (advertise too). Returns 0 with *n_out (free
 * with ovl_node_free) or RON_EINVAL (advertise longer than OVL_ADDR_MAX). */
int ovl_node_new(const ovl_config_t *cfg, ovl_node_t **n_out);
/* Free n. Every session must be freed first. NULL does nothing. */
void ovl_node_free(ovl_node_t *n);
/* Counters. */
void ovl_node_stats(const ovl_node_t *n, ovl_node_stats_t *out);

/*
 * Learn (or refresh, when ts is newer) a peer-table entry. The table holds
 * OVL_PEERS_MAX entries; a full table replaces its oldest entry when ts is
 * newer. Our own id is ignored. Returns 1 when the table changed, 0 when
 * not, RON_EINVAL for an empty or too long address.
 */
int ovl_node_peer_learn(ovl_node_t *n, const uint8_t id[static OVL_ID_LEN], const char *addr,
                        uint64_t ts);
/* Copy up to cap entries, newest first, to out; returns the number copied. */
size_t ovl_node_peers(const ovl_node_t *n, ovl_peer_t *out, size_t cap);

/* ---- sessions ---- */

/*
 * Start a session with peer peer_id over an established link whose
 * negotiated max_frame is max_frame (at least OVL_MIN_MAX_FRAME to fetch or
 * serve). Sends the first gossip (our advertise address and recent peers).
 * ops is borrowed (must outlive the session). Returns 0 with *s_out, or
 * RON_EINVAL.
 */
int ovl_session_new(ovl_node_t *n, const ovl_link_ops_t *ops, void *link,
                    const uint8_t peer_id[static OVL_ID_LEN], uint32_t max_frame, uint64_t now_ms,
                    ovl_session_t **s_out);

/*
 * One frame from the peer (views valid for the call; credit frames never
 * come here). Returns 0, or a negative code after which the session asked
 * its link to close (a protocol violation: the peer gets a 400 first where
 * it can be answered on a stream).
 */
int ovl_session_recv(ovl_session_t *s, const oap_frame_t *f, uint64_t now_ms);

/* The link can take frames again (queue drained, or credit arrived). */
void ovl_session_writable(ovl_session_t *s);

/*
 * Keepalive and gossip timers. Returns the milliseconds until the session
 * wants its next tick, or RON_ETIMEOUT when the peer missed dead_missed PINGs
 * (the link is being closed; counted in dead_peers).
 */
int64_t ovl_session_tick(ovl_session_t *s, uint64_t now_ms);

/* Graceful close: send GOODBYE (reason may be NULL), refuse new transfers
 * with 503, and close the link once the transfers in flight finish. */
void ovl_session_goodbye(ovl_session_t *s, const char *reason);

/* The link closed (reason 0 or a negative code). Fetches in flight end with
 * RON_ECLOSED (or reason). After this only ovl_session_free is allowed. */
void ovl_session_closed(ovl_session_t *s, int reason);

/* Free s (after ovl_session_closed). NULL does nothing. */
void ovl_session_free(ovl_session_t *s);

/* Per-peer counters. */
void ovl_session_stats(const ovl_session_t *s, ovl_session_stats_t *out);
/* The address the peer advertised about itself ("" until it did). */
const char *ovl_session_peer_addr(const ovl_session_t *s);
/* Is the session closed or closing (GOODBYE sent or received, link gone)? */
bool ovl_session_is_closing(const ovl_session_t *s);

/* ---- content transfer (fetcher side) ---- */

typedef struct {
    /*
     * A piece that verified against the address: piece index, the object's
     * size (bound by the last piece, which always comes first), len bytes
     * (a view valid for the call). Whole pieces are delivered, the ones that
     * cover the requested range. Return 0 (done with it), OVL_PIECE_HOLD (the
     * frame's credit stays held until ovl_fetch_release), or a negative code
     * to cancel (on_done follows with it).
     */
    int (*on_piece)(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len);
    /*
     * The fetch ended: 0 (every piece delivered); RON_ENOTFOUND (404);
     * RON_ERANGE (416); RON_EBUSY (429: the provider is at its transfer
     * limit, or rate-limits us); RON_ECAPNEEDED (401: the provider wants a
     * capability, or refused ours as invalid or revoked); RON_ECAPDENY
     * (403: the provider's policy or the capability's caveats refuse it);
     * RON_EDIGEST (409 bad_digest: the provider's stored copy failed its
     * own check, so it stopped); RON_EBADPIECE (a piece or the metadata did
     * not verify: drop and penalize this provider); RON_EPEERERR (another
     * error envelope); RON_ECLOSED or the link's reason. The handle is gone
     * after this.
     */
    void (*on_done)(void *arg, int rc);
    void *arg;
    /*
     * Optional (NULL: none). Every piece frame that verified, before
     * on_piece and including the size-proof last piece that on_piece does
     * not see: the frame's whole payload (u64 piece, u16 proof_len, proof,
     * bytes; a view valid for the call), in wire order, with the piece
     * index and the object's size. For a relay that forwards pieces with
     * their proofs (the overlay service's bus `fetch`). Return 0, or a
     * negative code to cancel (on_done follows with it).
     */
    int (*on_record)(void *arg, uint64_t piece, uint64_t size, const uint8_t *rec, size_t len);
    /*
     * Optional (appended; NULL: on_piece runs): when set, it runs instead of
     * on_piece, with the same arguments and returns plus cv, the piece's
     * BLAKE3 chaining value that the check computed from these bytes (a
     * view valid for the call). A sink that stores the piece passes it to
     * sto_put_write_piece so the piece is hashed once, not twice.
     */
    int (*on_piece_cv)(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len,
                       const uint8_t *cv);
    /*
     * Optional (appended; NULL: on_record runs): when set, it runs instead of
     * on_record, with the same arguments and returns plus cv, the chaining
     * value the check computed from the piece's bytes (a view valid for the
     * call). The overlay service passes it on over the bus so the node's
     * store folds it to the address instead of hashing the bytes again.
     */
    int (*on_record_cv)(void *arg, uint64_t piece, uint64_t size, const uint8_t *rec, size_t len,
                        const uint8_t *cv);
} ovl_fetch_cb_t;

/*
 * Ask the peer for bytes [offset, offset + length) of object addr (length
 * OVL_LEN_TO_END: to its end). cb is copied. Returns 0 with *f_out (may be
 * NULL), RON_EINVAL (length 0), RON_ECLOSED (closing), RON_EBUSY (the link
 * refused another stream), or the link's error. on_done never runs from
 * inside this call.
 */
int ovl_fetch_start(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                    uint64_t length, const ovl_fetch_cb_t *cb, ovl_fetch_t **f_out);

/*
 * ovl_fetch_start with a capability: cap[0..cap_len) (at most
 * OAP_MAX_CAP bytes; cap_len 0: none) rides in the request's START frame
 * cap section, for a provider whose policy wants one (overlay.md §3,
 * "Capabilities"). Same returns, plus RON_EINVAL for a cap too long.
 */
int ovl_fetch_start_cap(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                        uint64_t length, const uint8_t *cap, size_t cap_len,
                        const ovl_fetch_cb_t *cb, ovl_fetch_t **f_out);

/*
 * ovl_fetch_start for a fetcher that already verified the object's size
 * (known, from the last piece of an earlier answer; OVL_SIZE_UNKNOWN: as
 * ovl_fetch_start). The GET carries it (overlay.md §3, "size"), so the
 * provider leaves out the size proof: only the range's pieces come, in
 * order, each still checked against addr under known before it is handed
 * on. A metadata frame with another size is a bad piece. A provider that
 * refuses the field (400: an older peer) is asked again without it, and the
 * session does not send it to that peer again.
 */
int ovl_fetch_start_sized(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN],
                          uint64_t offset, uint64_t length, uint64_t known,
                          const ovl_fetch_cb_t *cb, ovl_fetch_t **f_out);

/*
 * Both at once: a sized GET (known; OVL_SIZE_UNKNOWN: none) carrying a
 * capability (cap_len 0: none). The capability is kept for the resend
 * without "size" an older peer asks for. Same returns.
 */
int ovl_fetch_start_full(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                         uint64_t length, uint64_t known, const uint8_t *cap, size_t cap_len,
                         const ovl_fetch_cb_t *cb, ovl_fetch_t **f_out);

/* Give back the credit of n pieces held with OVL_PIECE_HOLD. */
void ovl_fetch_release(ovl_fetch_t *f, uint32_t n);

/*
 * Give up fetch f (a deadline passed, its requester went away): the peer is
 * told (REQ|END), the stream's remaining frames are discarded with their
 * credit granted, and no callback of f runs any more (on_done neither).
 * Counted in fetches_failed. f is invalid after this.
 */
void ovl_fetch_cancel(ovl_fetch_t *f);

/* ---- messages (exposed for the fuzz target and tests) ---- */

typedef enum {
    OVL_MSG_PING = 1,
    OVL_MSG_PONG,
    OVL_MSG_GOODBYE,
    OVL_MSG_PEERS,
    OVL_MSG_GET,
    OVL_MSG_META,
} ovl_msg_type_t;

typedef struct {
    ovl_msg_type_t type;
    uint64_t seq;                     /* PING, PONG */
    char reason[OVL_REASON_MAX + 1];  /* GOODBYE */
    size_t n_peers;                   /* PEERS */
    ovl_peer_t peers[OVL_GOSSIP_MAX]; /* PEERS */
    uint8_t addr[STO_ADDR_LEN];       /* GET */
    uint64_t offset, length;          /* GET; length OVL_LEN_TO_END when absent */
    uint64_t size, first, count;      /* META */
    uint64_t known;                   /* GET "size"; OVL_SIZE_UNKNOWN when absent */
} ovl_msg_t;

/*
 * Parse a JSON overlay message strictly (unknown or duplicate keys, wrong
 * types, floats, more than OVL_GOSSIP_MAX peers, over OVL_MSG_MAX bytes are
 * refused). Returns 0 with *m_out, or RON_EJSON.
 */
int ovl_msg_parse(const uint8_t *json, size_t len, ovl_msg_t *m_out);

/*
 * Split a piece frame's payload: u64 piece index, u16 proof_len, proof, then
 * the piece bytes (views into payload). Returns 0 or RON_EPROTO (too short,
 * proof_len over STO_TREE_MAX_PROOF, or bytes over STO_PIECE_LEN).
 */
int ovl_piece_parse(const uint8_t *payload, size_t len, uint64_t *piece_out,
                    const uint8_t **proof_out, size_t *proof_len_out, const uint8_t **bytes_out,
                    size_t *bytes_len_out);

#endif
