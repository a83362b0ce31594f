/*
 * ron_transport.h - TCP listeners and the HTTP server (HTTP/1.1 with
 * keep-alive and pipelining, h2c, h2 over TLS) with the blueprint's
 * hardening layer (connections, requests in flight, rate per source,
 * header/body/idle timeouts, body and header caps, bounded request
 * decompression). WebSocket comes later on this same server: the layers
 * (socket, TLS records, protocol) stay separate so it can slot in.
 * docs/protocol/http.md describes the protocols, limits and TLS settings.
 *
 *   tx_listener.c  bind "HOST:PORT" / "[v6]:PORT", or adopt a bound fd
 *   tx_server.c    listeners + connections; 503 refusals past max_conns
 *   tx_conn.c      libuv connection I/O: reads, ordered writes, timers,
 *                  backpressure, the limits applied to one connection
 *   tx_limits.c    hardening accounting: counters, token buckets, stats
 *   tx_http1.c     sans-I/O HTTP/1.1: bytes in -> requests; responses -> bytes
 *   tx_decode.c    bounded Content-Encoding decoding (zstd, gzip)
 *   tx_body.c      streamed request bodies: opt-in, event order, release
 *   tx_envelope.c  the JSON error envelope of spec §3 (swap for ron-proto's)
 *
 *   tx_tls.c      the one SSL_CTX factory (TLS 1.2 floor, ALPN, ECDSA P-256
 *                  certificate loaded or generated) and the memory-BIO record
 *                  layer a connection runs between the socket and HTTP
 *   tx_h2.c       HTTP/2 on nghttp2: h2c by prior knowledge (preface sniffed
 *                  before http-parser sees a byte), h2c by Upgrade, h2 by ALPN
 *
 * The same handler API serves HTTP/1.1, h2c and h2: each HTTP/2 stream is
 * one tx_request_t (view.http_major 2), answered with tx_respond* as usual;
 * a streamed answer goes out through an nghttp2 data provider that defers
 * while the application has not supplied bytes and honours the client's
 * flow-control windows, so backpressure holds end to end.
 *
 * Every reject answers with the error envelope (Content-Type
 * application/json, Retry-After on 429 and 503) and is counted by reason in
 * tx_stats_t. All functions are loop thread only unless they say otherwise.
 *
 * Request bodies are buffered whole, up to max_body, unless a route opts
 * in to a streamed body when the request's head arrives (the head hook,
 * tx_server_set_head_hook, calls tx_request_stream_body): the request then
 * goes to the handler at once and its body reaches the application in
 * pieces as it is read (after chunked decoding), with its own cap and idle
 * timeout. Reading pauses while the application holds a piece (HTTP/1.1:
 * uv_read_stop; HTTP/2: the stream's WINDOW_UPDATE waits), the same
 * backpressure tx_respond_write applies in the other direction, so an
 * upload of any size costs a bounded number of bytes.
 */
#ifndef RON_TRANSPORT_H
#define RON_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <uv.h>

/* ---- limits (the blueprint's hardening defaults; each a separate knob) ---- */
#define TX_DEFAULT_MAX_CONNS 1024            /* open HTTP connections per server */
#define TX_DEFAULT_MAX_INFLIGHT 512          /* requests handed to the app, not answered */
#define TX_DEFAULT_RATE_RPS 500              /* token bucket refill per source IP */
#define TX_DEFAULT_RATE_BURST 500            /* token bucket depth per source IP */
#define TX_DEFAULT_HEADER_TIMEOUT_MS 5000    /* accept or first byte of a request -> end of headers */
#define TX_DEFAULT_BODY_TIMEOUT_MS 5000      /* end of headers -> end of body */
#define TX_DEFAULT_IDLE_TIMEOUT_MS 5000      /* keep-alive with nothing to do */
#define TX_DEFAULT_WRITE_TIMEOUT_MS 5000     /* queued output with no progress */
#define TX_DEFAULT_MAX_BODY (1u << 20)       /* 1 MiB buffered request body */
#define TX_DEFAULT_MAX_HEADER_BYTES (16u << 10) /* request line + headers (nginx: 8-32 KiB) */
#define TX_DEFAULT_MAX_HEADERS 100           /* header lines per request */
#define TX_DEFAULT_DECODE_RATIO 10           /* decoded <= ratio x compressed */
#define TX_DEFAULT_MAX_DECODED (8u << 20)    /* absolute cap on a decoded body */
#define TX_DEFAULT_RATE_SOURCES 4096         /* token buckets kept (bounded table) */
#define TX_DEFAULT_RETRY_AFTER_S 1           /* Retry-After on 503 */
#define TX_MAX_PIPELINE 16                   /* requests of one connection awaiting answers */
#define TX_MAX_WRITE_QUEUE (256u << 10)      /* queued output bytes before reads pause */
#define TX_MAX_REFUSING 4096                 /* refusals answered at once (~1.3 KiB each) */
#define TX_REFUSE_LINGER_MS 200              /* how long a refused connection may drain */
#define TX_ADDR_MAX 64                       /* "[v6%scope]:port" text */
/* TLS and HTTP/2 (see docs/protocol/http.md) */
#define TX_DEFAULT_TLS_HANDSHAKE_MS 5000     /* accept -> TLS handshake complete */
#define TX_DEFAULT_H2_MAX_STREAMS 100        /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define TX_DEFAULT_H2_FLOOD_MAX 200          /* client RST_STREAM+PING+SETTINGS+PRIORITY frames ... */
#define TX_DEFAULT_H2_FLOOD_WINDOW_MS 10000  /* ... per window, then GOAWAY ENHANCE_YOUR_CALM */
#define TX_H2_STREAM_QUEUE (64u << 10)       /* streamed bytes queued per HTTP/2 stream before
                                                tx_respond_write says RON_EAGAIN */
/* streamed request bodies (tx_request_stream_body) */
#define TX_DEFAULT_STREAM_IDLE_MS 15000      /* streamed body: no byte for this long -> 408 */
#define TX_STREAM_PIECE_MAX (128u << 10)     /* bytes of one piece at most (HTTP/1.1: one read
                                                plus what was held back; HTTP/2: a streamed
                                                body's stream window) */
#define TX_H2_CONN_WINDOW (1u << 20)        /* HTTP/2 connection receive window (the streams'
                                                windows bound what each may send) */
#define TX_TLS_DEFAULT_ALPN "h2,http/1.1"    /* preference order (peers add "oap/1") */
#define TX_TLS_CERT_FILE "gateway.crt"       /* names of a generated certificate ... */
#define TX_TLS_KEY_FILE "gateway.key"        /* ... and key (0600) in tx_tls_config_t.cert_dir */
#define TX_TLS_CERT_DAYS 397                 /* validity of a generated certificate (<= 398:
                                                CA/Browser Forum limit, testssl MEDIUM above) */
#define TX_TLS_KEY_FILE_MAX (64u << 10)      /* bytes of a PEM private key file we read */
#define TX_TLS_SECURE_HEAP (256u << 10)      /* OpenSSL secure heap (keys; every TLS
                                                handshake's ephemeral share): mlocked */
#define TX_TLS_SECURE_MIN 16u                /* its smallest allocation unit */

/* ---- configuration ---- */
typedef struct {
    uint32_t max_conns;         /* 0 = TX_DEFAULT_MAX_CONNS */
    uint32_t max_inflight;      /* 0 = default; a request holds a slot from dispatch until
                                   answered or its connection fails (a half-close keeps it) */
    uint32_t rate_rps;          /* per source IP (IPv6: per /64); 0 = default */
    uint32_t rate_burst;        /* 0 = rate_rps */
    uint32_t rate_sources;      /* token buckets kept; 0 = default */
    uint32_t header_timeout_ms; /* 0 = default, same for the others */
    uint32_t body_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t write_timeout_ms;
    uint32_t max_body;          /* bytes, after Transfer-Encoding, before decoding */
    uint32_t max_header_bytes;
    uint32_t max_headers;
    uint32_t decode_ratio;      /* decoded / compressed bound */
    uint32_t max_decoded;       /* bytes */
    uint32_t retry_after_s;     /* Retry-After for 503 */
    bool rate_disabled;         /* knob for trusted listeners (admin on loopback): no rate check */
    /* appended for TLS and HTTP/2; 0 = default as above */
    uint32_t tls_handshake_ms;  /* TLS handshake deadline after accept */
    uint32_t h2_max_streams;    /* concurrent streams a client may open per connection */
    uint32_t h2_flood_max;      /* control frames (RST_STREAM, PING, SETTINGS, PRIORITY) ... */
    uint32_t h2_flood_window_ms; /* ... a client may send per window before GOAWAY */
    bool h2_disabled;           /* serve HTTP/1.1 only: no sniffing, no upgrade */
    /* appended for streamed request bodies; 0 = default */
    uint32_t stream_idle_ms;    /* a streamed body with no byte for this long: 408 */
} tx_config_t;

/* Fill cfg with the defaults above. */
void tx_config_default(tx_config_t *cfg);

/* ---- statistics: plain counters, exported by the node to Prometheus ---- */
typedef enum {
    TX_REJECT_MAX_CONNS,        /* 503: connection refused at max_conns */
    TX_REJECT_INFLIGHT,         /* 503: max_inflight requests in the app */
    TX_REJECT_RATE,             /* 429: source over its token bucket */
    TX_REJECT_HEADER_TIMEOUT,   /* 408 + close: headers not complete in time (slowloris) */
    TX_REJECT_BODY_TIMEOUT,     /* 408 + close: body not complete in time */
    TX_REJECT_IDLE_TIMEOUT,     /* close: keep-alive connection idle */
    TX_REJECT_WRITE_TIMEOUT,    /* close: client stopped reading our output */
    TX_REJECT_BODY_TOO_LARGE,   /* 413 */
    TX_REJECT_HEADERS_TOO_LARGE, /* 431 */
    TX_REJECT_DECODE_BOMB,      /* 413 reason compression_bomb */
    TX_REJECT_BAD_ENCODING,     /* 400: unknown or corrupt Content-Encoding */
    TX_REJECT_MALFORMED,        /* 400: not HTTP/1.x */
    TX_REJECT_H2_REFUSED,       /* RST_STREAM REFUSED_STREAM past h2_max_streams */
    TX_REJECT_H2_FLOOD,         /* GOAWAY ENHANCE_YOUR_CALM: reset/control frame flood */
    TX_REJECT_H2_PROTOCOL,      /* GOAWAY/RST for an HTTP/2 protocol error by the client */
    TX_REJECT__COUNT
} tx_reject_t;

/* Why a TLS handshake failed (tx_stats_t.tls_failures). */
typedef enum {
    TX_TLS_FAIL_TIMEOUT,        /* not complete within tls_handshake_ms */
    TX_TLS_FAIL_VERSION,        /* client offered only protocols below the floor */
    TX_TLS_FAIL_CIPHER,         /* no shared cipher or group */
    TX_TLS_FAIL_PLAINTEXT,      /* plain HTTP sent to the TLS port */
    TX_TLS_FAIL_EOF,            /* client closed during the handshake */
    TX_TLS_FAIL_OTHER,
    TX_TLS_FAIL__COUNT
} tx_tls_fail_t;

typedef struct {
    uint64_t conns_accepted;     /* connections admitted */
    uint64_t conns_closed;       /* admitted connections closed */
    uint64_t conns_active;       /* gauge */
    uint64_t requests;           /* requests handed to the app */
    uint64_t responses;          /* responses queued (app and rejects) */
    uint64_t inflight;           /* gauge: requests in the app */
    uint64_t rate_sources;       /* gauge: token buckets in use */
    uint64_t rate_evictions;     /* buckets dropped because the table was full */
    uint64_t read_pauses;        /* reads paused by output backpressure or pipeline depth */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t rejects[TX_REJECT__COUNT];
    uint64_t tls_handshakes;     /* completed */
    uint64_t tls_failures[TX_TLS_FAIL__COUNT];
    uint64_t h2_conns;           /* connections that spoke HTTP/2 */
    uint64_t h2_upgrades;        /* ... of which by "Upgrade: h2c" */
    uint64_t h2_streams;         /* request streams opened */
} tx_stats_t;

/* Stable label for a reject reason ("max_conns", "rate", ...). Never NULL. */
const char *tx_reject_name(tx_reject_t r);
/* Stable label for a TLS handshake failure ("timeout", "version", ...). Never NULL. */
const char *tx_tls_fail_name(tx_tls_fail_t f);

/* ---- error bodies: ron-proto's envelope (spec §3) for HTTP statuses ---- */

/* Slug the envelope of an HTTP status carries: the spec §3 slug (ron-proto's
 * table); 417 and 501 give "bad_request", 505 "proto_mismatch", other
 * statuses outside the table "bad_request" (4xx) or "internal". Never NULL. */
const char *tx_status_slug(int status);
/* True when the envelope of status is retryable (spec §3, mapped as above). */
bool tx_status_retryable(int status);
/* Reason phrase for a status line ("Payload Too Large"). Never NULL. */
const char *tx_status_reason(int status);
/*
 * Write the spec §3 envelope for status with ron-proto's proto_error_write():
 * {"code":..,"message":..,"retryable":..,"corr_id":"<dec>"} plus "reason"
 * when reason != NULL (cut at PROTO_MAX_REASON bytes) and "retry_after_ms"
 * when retry_after_ms > 0. message NULL is the status's reason phrase. Never
 * allocates. Returns the length written (NUL-terminated); with cap >=
 * TX_ENVELOPE_MAX the body is always a valid envelope, only the message
 * being cut to fit.
 */
#define TX_ENVELOPE_MAX 1024
size_t tx_envelope_format(char *out, size_t cap, int status, const char *message, const char *reason,
                          uint64_t corr_id, uint32_t retry_after_ms);

/* ---- listeners ---- */

typedef struct tx_listener tx_listener_t;

/*
 * Create a listening TCP socket bound to addr ("127.0.0.1:8080",
 * "[::1]:0", "0.0.0.0:80"; port 0 picks an ephemeral port) and return its
 * fd in fd_out (caller owns it). SO_REUSEADDR is set; an IPv6 address is
 * bound IPV6_V6ONLY. For the kernel, which binds public listeners and hands
 * the fd to a child. Returns 0, RON_EINVAL for an unparsable address, or
 * -errno from socket/bind/listen. Thread-safe.
 */
int tx_socket_bind(const char *addr, int backlog, int *fd_out);

/*
 * Bind addr as above and wrap it in a listener on loop (returns new in
 * l_out; free with tx_listener_close). Returns 0 or the errors of
 * tx_socket_bind.
 */
int tx_listener_bind(uv_loop_t *loop, const char *addr, tx_listener_t **l_out);

/*
 * Adopt an already bound and listening TCP socket fd (takes it: it is closed
 * with the listener). Returns 0, RON_EINVAL if fd is not a listening stream
 * socket, or a libuv error.
 */
int tx_listener_from_fd(uv_loop_t *loop, int fd, tx_listener_t **l_out);

/* Port the listener is bound to (host order), e.g. after binding port 0. */
uint16_t tx_listener_port(const tx_listener_t *l);

/* Bound address as text ("127.0.0.1:41234", "[::1]:41234") into out. */
void tx_listener_addr(const tx_listener_t *l, char out[static TX_ADDR_MAX]);

/*
 * Close a listener that was never handed to a server. cb (may be NULL) runs
 * after its handle is closed and its memory freed.
 */
void tx_listener_close(tx_listener_t *l, void (*cb)(void *arg), void *arg);

/* ---- HTTP requests and responses ---- */

typedef struct {
    const char *name;  /* NUL-terminated, as received (compare case-insensitively) */
    const char *value; /* NUL-terminated, surrounding whitespace trimmed */
} tx_header_t;

typedef struct tx_request tx_request_t;

/* The application sees a request through these fields (views valid until answered). */
typedef struct {
    const char *method;        /* "GET", "HEAD", ... */
    const char *path;          /* the request target before '?', as sent (not percent-decoded) */
    const char *query;         /* after '?', or "" */
    const tx_header_t *headers;
    size_t n_headers;
    const uint8_t *body;       /* complete body, decoded if Content-Encoding was set */
    size_t body_len;
    uint64_t corr_id;          /* from X-Corr-Id, or assigned; echoed in the response */
    uint8_t http_minor;        /* 0 or 1 (1 for HTTP/2) */
    uint8_t http_major;        /* 1, or 2 for an HTTP/2 stream */
    const struct sockaddr_storage *peer;
} tx_request_view_t;

/* The view of req's fields. Valid until req is answered. */
const tx_request_view_t *tx_request_view(const tx_request_t *req);

/* Value of the first header called name (case-insensitive), or NULL. */
const char *tx_request_header(const tx_request_t *req, const char *name);

/*
 * Called once per complete request, in request order. The application
 * answers exactly once, now or later, with tx_respond, tx_respond_error or
 * tx_respond_start. req stays valid until then even if the connection goes
 * away meanwhile (the answer is then dropped and freed).
 */
typedef void (*tx_handler_fn)(tx_request_t *req, void *arg);

/*
 * Answer req with status, the headers given (copied; Content-Length,
 * Connection, Date and X-Corr-Id are added by the server and must not be
 * given; a header containing CR or LF is dropped) and body (copied; omitted
 * on the wire for HEAD, 1xx, 204 and 304). Responses reach the wire in
 * request order. Frees req. Returns 0, or RON_ECLOSED when the connection is
 * gone (req is freed all the same).
 */
int tx_respond(tx_request_t *req, int status, const tx_header_t *headers, size_t n_headers,
               const void *body, size_t body_len);

/*
 * Answer req with the error envelope for status (message and reason may be
 * NULL) and Retry-After when retry_after_s > 0. Frees req. Returns as
 * tx_respond.
 */
int tx_respond_error(tx_request_t *req, int status, const char *message, const char *reason,
                     uint32_t retry_after_s);

/*
 * Streaming responses, for objects too large to copy: the body goes out as
 * the application supplies it, and the application is told when to supply
 * more, so a slow client never makes the server buffer an object.
 *
 * tx_respond_start sends the head (content_length >= 0: Content-Length;
 * -1: chunked for HTTP/1.1, close-delimited for HTTP/1.0). Then
 * tx_respond_write queues data without copying it: data is borrowed until
 * done (may be NULL) runs, exactly once, always on a later loop turn (never
 * inside a tx_respond_* call), with 0 when written (HTTP/2: copied into
 * frames) or RON_ECLOSED when it was not sent. It returns RON_EAGAIN
 * without queueing when the connection's output holds TX_MAX_WRITE_QUEUE
 * bytes or more (over HTTP/2 also when the stream holds TX_H2_STREAM_QUEUE
 * bytes the client's flow-control window has not admitted): wait for drain,
 * which runs once the queue falls below half of that.
 *
 * When the connection closes (client reset or close, timeout, server
 * close) or the HTTP/2 stream is reset or closed, with the answer not
 * ended: every chunk still queued (for instance an HTTP/1.1 answer
 * pipelined behind an earlier one, or bytes the flow-control window never
 * admitted) gets done(RON_ECLOSED), and then drain (when given) runs
 * exactly once, whether or not a write said RON_EAGAIN, so the application
 * can release the answer: from there tx_respond_write says RON_ECLOSED and
 * tx_respond_end frees req. All of these run on a later loop turn, never
 * inside the application's own tx_respond_* call; the done callbacks run
 * before that drain. If the application calls tx_respond_end before the
 * drain ran, the drain is dropped. Chunks of an answer already ended are
 * told RON_ECLOSED the same way. A server being closed runs what is due
 * before its close callback.
 *
 * tx_respond_end finishes the body and frees req; a body shorter than its
 * Content-Length closes the connection after it. Each returns 0,
 * RON_EAGAIN (write only), RON_ECLOSED (connection gone; done is not
 * called for a write refused so; still call tx_respond_end) or RON_EINVAL
 * (len 0, more bytes than Content-Length, or not started).
 */
typedef void (*tx_write_done_fn)(int status, void *arg);
typedef void (*tx_drain_fn)(tx_request_t *req, void *arg);
int tx_respond_start(tx_request_t *req, int status, const tx_header_t *headers, size_t n_headers,
                     int64_t content_length, tx_drain_fn drain, void *drain_arg);
int tx_respond_write(tx_request_t *req, const void *data, size_t len, tx_write_done_fn done,
                     void *done_arg);
int tx_respond_end(tx_request_t *req);

/*
 * Streamed request bodies, for uploads too large to buffer.
 *
 * The head hook (tx_server_set_head_hook) runs when a request's head is
 * complete and acceptable (rate, in-flight and header limits passed), before
 * any body byte is read; view.body is NULL then. It only looks at the view
 * and may call tx_request_stream_body; it must not answer. A request that
 * does not opt in is buffered as usual (max_body, body_timeout_ms).
 *
 * A streamed request goes to the handler right after the hook, before its
 * body; the handler answers it as usual (tx_respond*), now or after the
 * body. The body reaches cb in pieces, in order, after Transfer-Encoding
 * decoding:
 *   - data, len > 0, status 0: a piece, borrowed until
 *     tx_request_body_release(req); no other event comes before that, and
 *     reading from the client pauses meanwhile;
 *   - len 0, status 0: the body is complete (the pieces sum to it);
 *   - status < 0: the body was cut off: RON_ETOOBIG (more than max_bytes:
 *     answer 413), RON_ETIMEOUT (no byte for stream_idle_ms: answer 408),
 *     RON_EPROTO (malformed chunked framing: answer 400), RON_ECLOSED (the
 *     client went away or reset the stream: the answer is dropped).
 * The end or the abort is reported exactly once, unless the application
 * answers first: an answer ends the events (a held piece is released with
 * it) and the rest of the body is discarded (HTTP/1.1: the connection
 * closes after the answer; HTTP/2: the stream is reset with NO_ERROR once
 * the answer is out). cb runs on the loop thread, never inside
 * tx_request_body_release; an abort because the connection went away runs
 * on a later loop turn. With the body complete and its answer given, an
 * HTTP/1.1 connection serves its next (pipelined) request as usual.
 */
typedef void (*tx_head_fn)(tx_request_t *req, void *arg);
typedef void (*tx_body_fn)(tx_request_t *req, const uint8_t *data, size_t len, int status,
                           void *arg);

/*
 * From the head hook only: stream req's body to cb (see above), at most
 * max_bytes bytes (0 = no cap of our own). Returns 0, or, with req then
 * answered by the server itself and never handed to the handler:
 * RON_ETOOBIG (a Content-Length over max_bytes: 413), RON_EINVAL (a
 * Content-Encoding other than identity: 415; not called from the hook, or
 * twice: nothing answered).
 */
int tx_request_stream_body(tx_request_t *req, tx_body_fn cb, void *arg, uint64_t max_bytes);

/*
 * Give back the piece cb holds: reading resumes, and the next event comes
 * on a later loop turn. Returns 0, or RON_EINVAL when no piece is held.
 */
int tx_request_body_release(tx_request_t *req);

/* ---- the server ---- */

typedef struct tx_server tx_server_t;

/*
 * Create an HTTP server on loop with cfg (copied; NULL = defaults) that
 * hands each request (HTTP/1.1 request or HTTP/2 stream) to handler.
 * Returns new (close with tx_server_close).
 */
tx_server_t *tx_server_new(uv_loop_t *loop, const tx_config_t *cfg, tx_handler_fn handler,
                           void *arg);

/* Call hook(req, arg) at the head of every request (see tx_request_stream_body);
 * NULL removes it. Set it before attaching listeners. */
void tx_server_set_head_hook(tx_server_t *s, tx_head_fn hook, void *arg);

/* Serve the cleartext connections of l (HTTP/1.1; h2c by preface or
 * Upgrade unless h2_disabled). Takes l, and closes it on failure.
 * Returns 0 or a libuv error. */
int tx_server_attach(tx_server_t *s, tx_listener_t *l);

/*
 * Close every listener and connection; unanswered requests learn it through
 * RON_ECLOSED. cb (may be NULL) runs after every handle is closed and s is
 * freed; after it the loop has nothing left of the server.
 */
void tx_server_close(tx_server_t *s, void (*cb)(void *arg), void *arg);

/* ---- TLS ---- */
typedef struct ssl_ctx_st SSL_CTX; /* as <openssl/types.h> */

typedef struct {
    const char *cert_path;  /* PEM certificate chain; with key_path, or both NULL */
    const char *key_path;   /* PEM private key */
    const char *cert_dir;   /* with no paths: TX_TLS_CERT_FILE/TX_TLS_KEY_FILE here, an
                               ECDSA P-256 self-signed pair generated on first use */
    const char *alpn;       /* comma-separated, server preference; NULL = TX_TLS_DEFAULT_ALPN */
    const char *hostname;   /* CN and DNS SAN of a generated certificate; NULL = "localhost" */
    bool tls13_only;        /* false: TLS 1.2 stays allowed (browsers and curl builds that
                               still negotiate 1.2); 1.3 is preferred either way */
    bool ephemeral;         /* no paths, no cert_dir: an ECDSA P-256 self-signed pair made in
                               RAM for this context only, never written (amnesia) */
} tx_tls_config_t;

/* Fill cfg with the defaults (all NULL/false: ALPN "h2,http/1.1", TLS 1.2 floor). */
void tx_tls_config_default(tx_tls_config_t *cfg);

/*
 * The one SSL_CTX factory. Builds a server context: TLS 1.2 floor (1.3 only
 * with tls13_only), AEAD ECDHE ciphers only, groups X25519 and P-256, no
 * compression, no renegotiation, server cipher preference, no client
 * certificate, ALPN chosen from cfg->alpn in server order (no overlap: no
 * ALPN, the connection sniffs). The certificate is loaded from the paths, or
 * from cert_dir, where an ECDSA P-256 self-signed pair is generated on first
 * use (key 0600, written to a temporary file and renamed) and reused after.
 * Returns 0 with a new context in *out (SSL_CTX_free it), RON_EINVAL for a
 * bad cfg, RON_ETLS when OpenSSL refuses the material, or -errno from files.
 */
int tx_tls_ctx_new(const tx_tls_config_t *cfg, SSL_CTX **out);

/*
 * Give this process OpenSSL's secure heap (TX_TLS_SECURE_HEAP bytes,
 * mmapped, guarded and mlocked where RLIMIT_MEMLOCK allows; a warning when
 * it cannot be locked), so private keys loaded or generated afterwards keep
 * their secret parts there and are cleansed when freed. Call it once at
 * process start, before any key exists; later calls do nothing. Returns 0
 * or RON_ETLS (OpenSSL refused).
 */
int tx_tls_secure_heap_init(void);

/*
 * Make OpenSSL wipe (OPENSSL_cleanse) every ordinary heap block it frees or
 * moves by realloc, so the temporaries its decoders and handshakes leave
 * (DER and PEM buffers, ASN.1 strings, intermediate numbers) hold no key
 * bytes once freed; the secure heap is cleansed by OpenSSL itself. It must
 * run before OpenSSL's first allocation: call it first thing at process
 * start (tx_tls_secure_heap_init calls it too). Returns 0, or RON_ETLS when
 * OpenSSL has allocated already (its allocator cannot change any more).
 */
int tx_tls_heap_wipe_install(void);

/*
 * Serve the connections of l over TLS with ctx (takes l; takes its own
 * reference on ctx). ALPN "h2" selects HTTP/2, "http/1.1" HTTP/1.1, none
 * sniffs as on a cleartext listener. Returns as tx_server_attach.
 */
int tx_server_attach_tls(tx_server_t *s, tx_listener_t *l, SSL_CTX *ctx);

/* Current counters (a view, updated in place). */
const tx_stats_t *tx_server_stats(const tx_server_t *s);

/* The server's configuration after defaults were applied. */
const tx_config_t *tx_server_config(const tx_server_t *s);

#endif
