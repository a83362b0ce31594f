/*
 * tx_peer.h - the peer part of ron-transport: OAP/1 sessions between nodes
 * over TLS 1.3 with mutual authentication (DESIGN.md §5, §6;
 * docs/protocol/peer-transport.md).
 *
 * Each node presents a self-signed X.509 certificate for its Ed25519
 * identity key (ron-kms); the certificate is made in RAM at tx_peer_new and
 * the private key lives in OpenSSL's secure heap. A dialer names the node id
 * it means to reach and the session fails with RON_EPEERID unless the
 * certificate's key hashes (BLAKE3) to it; a listener requires a client
 * certificate and learns the dialer's node id the same way. TLS 1.3 only,
 * ALPN "oap/1" required on both sides, then the OAP/1 HELLO (the dialer
 * sends it, the listener answers), then frames both ways.
 *
 * Ceilings: sessions in total and per peer id, streams in flight per
 * session (HELLO max_inflight, enforced with oap_streams_t and per-stream
 * credit), a handshake deadline (TCP accept/connect to HELLO done), an idle
 * timeout, and a bounded output queue per session: past max_queue bytes
 * tx_peer_send answers RON_EAGAIN and the session stops reading from that
 * peer until the queue drains to half (then on_writable runs); a queue that
 * stays full for write_timeout_ms, or that internal frames would push past
 * max_queue_hard, drops the session with RON_EFLOOD. Every reject is
 * counted by reason in tx_peer_stats_t.
 *
 * Node-wide: all sessions' queued output together is bounded by
 * max_queue_total. Past it tx_peer_send answers RON_EAGAIN (frames of up to
 * TX_PEER_BUDGET_FLOOR bytes still pass while their session holds less than
 * that, so keepalives and small answers flow), and every session whose
 * output the kernel does not take is paused as a slow peer (reading stops,
 * its write_timeout_ms clock starts): those that drain resume, the others
 * are dropped, and waiting senders get on_writable once the total is back
 * under half the bound. Memory of idle sessions: a session that received
 * nothing for a TX_PEER_RELEASE_MS sweep gives back its frame decoder
 * buffer, its kept ciphertext and OpenSSL's record buffers (they are
 * allocated again on the next read or write).
 *
 * One libuv loop owns everything here: all functions are loop thread only.
 */
#ifndef TX_PEER_H
#define TX_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "oap.h"
#include "ron_kms.h"

/* ---- limits (defaults of tx_peer_config_t; 0 in a field selects them) ---- */
#define TX_PEER_ALPN "oap/1"                   /* the one ALPN protocol peers speak */
#define TX_PEER_DEFAULT_MAX_CONNS 256          /* sessions in total, both directions */
#define TX_PEER_DEFAULT_MAX_PER_PEER 2         /* sessions with one node id (a dial race makes 2) */
#define TX_PEER_DEFAULT_HANDSHAKE_MS 5000      /* TCP up -> TLS and HELLO complete */
#define TX_PEER_DEFAULT_IDLE_MS 120000         /* no frame received for this long: close */
#define TX_PEER_DEFAULT_WRITE_TIMEOUT_MS 10000 /* output queue full this long: drop the peer */
#define TX_PEER_DEFAULT_MAX_QUEUE (4u << 20)   /* queued output bytes before RON_EAGAIN */
#define TX_PEER_DEFAULT_MAX_QUEUE_HARD (8u << 20) /* internal frames past this: drop */
#define TX_PEER_DEFAULT_MAX_QUEUE_TOTAL (16u << 20) /* all sessions' queued output, at most */
#define TX_PEER_BUDGET_FLOOR (16u << 10) /* small frames pass a full node budget below this */
#define TX_PEER_RELEASE_MS 1000u        /* idle sessions' buffers are released every sweep */
#define TX_PEER_CERT_DAYS 397  /* validity written in the certificate (ignored by peers;
                                  <= 398 keeps TLS scanners quiet) */
#define TX_PEER_UA_MAX 64      /* user agent sent in HELLO */

/* Why a connection was refused or a session dropped (tx_peer_stats_t.rejects). */
typedef enum {
    TX_PEER_REJ_WRONG_ID,          /* certificate key does not hash to the dialed node id */
    TX_PEER_REJ_NO_CERT,           /* the dialer presented no certificate */
    TX_PEER_REJ_BAD_CERT,          /* not an Ed25519 key, or not validly self-signed */
    TX_PEER_REJ_BAD_ALPN,          /* ALPN missing or not "oap/1" */
    TX_PEER_REJ_TLS,               /* any other TLS failure (version, cipher, alert, EOF) */
    TX_PEER_REJ_HANDSHAKE_TIMEOUT, /* TLS + HELLO not done within handshake_ms */
    TX_PEER_REJ_TOO_MANY_CONNS,    /* max_conns sessions already open */
    TX_PEER_REJ_PER_PEER_LIMIT,    /* max_per_peer sessions with this id already open */
    TX_PEER_REJ_PROTO_MISMATCH,    /* first frame not a valid HELLO / HELLO reply */
    TX_PEER_REJ_PROTOCOL,          /* malformed frame or stream violation after HELLO */
    TX_PEER_REJ_IDLE_TIMEOUT,      /* nothing received for idle_ms */
    TX_PEER_REJ_SLOW_PEER,         /* output queue over its bound too long (RON_EFLOOD) */
    TX_PEER_REJ_SELF,              /* the dialed node id is our own */
    TX_PEER_REJ__COUNT
} tx_peer_reject_t;

typedef struct {
    uint64_t accepted;         /* TCP connections accepted */
    uint64_t dialed;           /* dials started */
    uint64_t connect_failures; /* dials whose TCP connect failed */
    uint64_t established;      /* sessions through TLS and HELLO */
    uint64_t open;             /* sessions open now (any phase) */
    uint64_t frames_in, frames_out;
    uint64_t bytes_in, bytes_out; /* OAP/1 frame bytes (plaintext) */
    uint64_t streams_refused;     /* STARTs past max_inflight answered 429 */
    uint64_t read_pauses;         /* times reading stopped because a peer's queue was full */
    uint64_t queued;              /* output bytes queued now, all sessions together */
    uint64_t budget_waits;        /* sends refused because the node's queues held max_queue_total */
    uint64_t buffers_released;    /* bytes of idle sessions' buffers given back */
    uint64_t rejects[TX_PEER_REJ__COUNT];
} tx_peer_stats_t;

typedef struct {
    uint32_t max_conns;        /* TX_PEER_DEFAULT_MAX_CONNS */
    uint32_t max_per_peer;     /* TX_PEER_DEFAULT_MAX_PER_PEER */
    uint32_t max_inflight;     /* streams the peer may open per session; OAP_MAX_INFLIGHT */
    uint32_t max_frame;        /* offered in HELLO; OAP_MAX_FRAME */
    uint32_t handshake_ms;     /* TX_PEER_DEFAULT_HANDSHAKE_MS */
    uint32_t idle_ms;          /* TX_PEER_DEFAULT_IDLE_MS */
    uint32_t write_timeout_ms; /* TX_PEER_DEFAULT_WRITE_TIMEOUT_MS */
    size_t max_queue;          /* TX_PEER_DEFAULT_MAX_QUEUE */
    size_t max_queue_hard;     /* TX_PEER_DEFAULT_MAX_QUEUE_HARD (>= max_queue) */
    const char *ua;            /* HELLO user agent (copied); NULL = "ron-c" */
    size_t max_queue_total;    /* TX_PEER_DEFAULT_MAX_QUEUE_TOTAL (>= max_queue) */
} tx_peer_config_t;

typedef struct tx_peer tx_peer_t;
typedef struct tx_peer_session tx_peer_session_t;

/*
 * What the application hears. Every callback runs on the loop thread; a
 * session pointer is valid from on_session (or tx_peer_dial) until on_close
 * returns. Any callback may be NULL.
 */
typedef struct {
    /* TLS, peer id check and HELLO done: frames may flow. */
    void (*on_session)(tx_peer_session_t *s, void *arg);
    /* One decoded frame (views valid during the call only; a COMP payload is
     * still compressed). Credit frames are handled here and not delivered. */
    void (*on_frame)(tx_peer_session_t *s, const oap_frame_t *f, void *arg);
    /* After a RON_EAGAIN from tx_peer_send: the output queue drained to half
     * of max_queue, or a credit grant arrived. Try the send again. */
    void (*on_writable)(tx_peer_session_t *s, void *arg);
    /* The session ended: reason 0 (closed by us), RON_ECLOSED (peer closed),
     * or the error (RON_EPEERID, RON_ETIMEOUT, RON_EFLOOD, ...). Runs for
     * every dialed session and every session that reached on_session. */
    void (*on_close)(tx_peer_session_t *s, int reason, void *arg);
    void *arg;
} tx_peer_callbacks_t;

/* Fill cfg with zeros (every default). */
void tx_peer_config_default(tx_peer_config_t *cfg);

/*
 * Create an endpoint for the node whose identity key ks holds (borrowed; it
 * must outlive the endpoint): builds the Ed25519 key in OpenSSL's secure
 * heap (tx_tls_secure_heap_init first when the process wants it locked) from
 * the seed kms_key_export_to shows it, a self-signed certificate, and the
 * TLS 1.3 context. cfg and cb are copied. Returns 0 with *p_out (free with
 * tx_peer_close), RON_EINVAL for a bad cfg, RON_ETLS if OpenSSL refused.
 */
int tx_peer_new(uv_loop_t *loop, const kms_keystore_t *ks, const tx_peer_config_t *cfg,
                const tx_peer_callbacks_t *cb, tx_peer_t **p_out);

/*
 * Listen on numeric "HOST:PORT" or "[v6]:PORT" (port 0: ephemeral). The
 * bound address goes to bound_out when it is not NULL (TX_ADDR_MAX bytes,
 * "127.0.0.1:43121"). Several listeners may be added. Returns 0, RON_EINVAL
 * for a malformed address, or a libuv error.
 */
int tx_peer_listen(tx_peer_t *p, const char *addr, char *bound_out, size_t cap);

/*
 * Serve an inherited listening TCP socket fd (bound and listening already,
 * e.g. by the kernel, which hands a service its public listener). The bound
 * address goes to bound_out as for tx_peer_listen. Returns 0 (fd taken:
 * closed by tx_peer_close), RON_EINVAL when fd is not a listening stream
 * socket (fd stays the caller's), RON_ESHUTDOWN, or a libuv error (fd stays
 * the caller's when uv_tcp_open refused it, else taken).
 */
int tx_peer_listen_fd(tx_peer_t *p, int fd, char *bound_out, size_t cap);

/*
 * Dial numeric "HOST:PORT" expecting node id (copied). On success
 * *s_out is the new session, already counted; on_session or on_close follows
 * later, never from inside this call. Returns 0; RON_EINVAL (address);
 * RON_EBUSY (max_conns, counted too_many_conns); RON_EPEERLIMIT (max_per_peer
 * sessions with id, counted per_peer_limit); RON_EPEERSELF (id is ours);
 * RON_ESHUTDOWN after tx_peer_close; or a libuv error.
 */
int tx_peer_dial(tx_peer_t *p, const char *addr, const uint8_t id[static KMS_NODE_ID_LEN],
                 tx_peer_session_t **s_out);

/*
 * Close every listener and session (their on_close runs with 0), free p
 * once every handle is closed, then call cb (may be NULL).
 */
void tx_peer_close(tx_peer_t *p, void (*cb)(void *arg), void *arg);

/* Counters (a view updated in place, valid until tx_peer_close's cb). */
const tx_peer_stats_t *tx_peer_stats(const tx_peer_t *p);
/* This node's id. */
const uint8_t *tx_peer_node_id(const tx_peer_t *p);
/* Stable metrics label of a reject reason ("wrong_id", "no_cert", ...). Never NULL. */
const char *tx_peer_reject_name(tx_peer_reject_t r);

/* ---- sessions ---- */

/* The peer's node id, proven by TLS (all zero before the handshake ends). */
const uint8_t *tx_peer_session_id(const tx_peer_session_t *s);
/* Did this side dial? */
bool tx_peer_session_is_dialer(const tx_peer_session_t *s);
/* Negotiated max_frame, and the streams this side may open at once. */
uint32_t tx_peer_session_max_frame(const tx_peer_session_t *s);
uint32_t tx_peer_session_max_inflight(const tx_peer_session_t *s);
/* Output bytes queued and not yet written to the socket. */
size_t tx_peer_session_queued(const tx_peer_session_t *s);
/* Is reading from this peer stopped (by the application or by backpressure)? */
bool tx_peer_session_is_reading_paused(const tx_peer_session_t *s);
/* The peer's network address (getpeername) into *out. Returns 0 or a
 * negative libuv error (the socket is gone). For per-source decisions. */
int tx_peer_session_peer_sockaddr(const tx_peer_session_t *s, struct sockaddr_storage *out);
/* Application data (not touched by the transport). */
void tx_peer_session_set_data(tx_peer_session_t *s, void *data);
void *tx_peer_session_data(const tx_peer_session_t *s);

/*
 * Send f (borrowed; copied into the TLS records before return). Stream
 * frames are accounted as oap_streams_send does. Returns 0; RON_EAGAIN when
 * the output queue holds max_queue bytes, or all sessions' queues hold
 * max_queue_total (wait for on_writable), or the
 * stream has no credit (wait for the peer's credit, then retry); RON_EBUSY
 * for a START past the peer's max_inflight; RON_ESTREAM; the encoder's
 * errors (RON_ETOOBIG past the negotiated max_frame, ...); RON_ECLOSED when
 * the session is not established or is closing.
 */
int tx_peer_send(tx_peer_session_t *s, const oap_frame_t *f);

/*
 * Tell the transport the application finished n frames of stream
 * (corr_id, mine); sends the credit grant when one is due. Returns 0,
 * RON_ECLOSED, or RON_EFLOOD (the session was dropped: queue past its hard bound).
 */
int tx_peer_consume(tx_peer_session_t *s, uint64_t corr_id, bool mine, uint32_t n);

/* Stop (true) or resume (false) reading from the peer: a slow consumer. */
void tx_peer_session_pause(tx_peer_session_t *s, bool paused);

/* Close s after the queued output is written; on_close follows with 0. */
void tx_peer_session_close(tx_peer_session_t *s);

#endif
