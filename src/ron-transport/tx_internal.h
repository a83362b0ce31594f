/*
 * tx_internal.h - shared between src/ron-transport/ sources and its tests only.
 * Layers, bottom up: tx_buf (bytes), tx_limits (accounting, no I/O),
 * tx_http1 (sans-I/O HTTP/1.1), tx_conn/tx_listener/tx_server (libuv).
 * Invariant: a tx_request_t is owned by exactly one of: the HTTP/1.1 parser
 * (while parsing), the application (between the handler call and its
 * answer), or the connection's pipeline (answered, waiting to be written).
 */
#ifndef TX_INTERNAL_H
#define TX_INTERNAL_H

#include <http_parser.h>
#include <openssl/ssl.h>

#include "ron_transport.h"

/* ---- growable byte buffer ---- */
typedef struct {
    uint8_t *p;
    size_t len; /* len <= cap */
    size_t cap;
} tx_buf_t;

void tx__buf_reserve(tx_buf_t *b, size_t extra);
void tx__buf_append(tx_buf_t *b, const void *data, size_t len);
void tx__buf_append_str(tx_buf_t *b, const char *s);
void tx__buf_append_u64(tx_buf_t *b, uint64_t v);
void tx__buf_free(tx_buf_t *b);

/* ---- limits and stats (tx_limits.c) ---- */
typedef struct {
    uint8_t key[16];  /* IPv4-mapped address, or an IPv6 /64 */
    uint64_t last_ms; /* last refill, monotonic ms */
    uint64_t tokens;  /* milli-tokens, <= burst * 1000 */
    bool used;
} tx_bucket_t;

typedef struct {
    tx_config_t cfg;
    tx_stats_t stats;
    tx_bucket_t *buckets; /* rate table, nbuckets entries (a power of two) */
    size_t nbuckets;
    uint64_t seed;        /* hash seed: sources cannot aim at one slot */
} tx_limits_t;

void tx__config_fill(tx_config_t *out, const tx_config_t *in);
void tx__limits_init(tx_limits_t *l, const tx_config_t *cfg);
void tx__limits_free(tx_limits_t *l);
/* Admit one connection: 0, or RON_EBUSY (counted) at max_conns. */
int tx__limits_conn_admit(tx_limits_t *l);
void tx__limits_conn_release(tx_limits_t *l);
/* Take a token for peer at now_ms: 0, or RON_EFLOOD (counted) with the
 * seconds until a token is back in *retry_s. */
int tx__limits_rate_take(tx_limits_t *l, const struct sockaddr_storage *peer, uint64_t now_ms,
                         uint32_t *retry_s);
/* Admit one request into the app: 0, or RON_EBUSY (counted) at max_inflight. */
int tx__limits_inflight_admit(tx_limits_t *l);
void tx__limits_inflight_release(tx_limits_t *l);
void tx__limits_count(tx_limits_t *l, tx_reject_t r);

/* ---- bounded decoding (tx_decode.c) ---- */
/* Decode in (Content-Encoding enc) into *out (returns new) of at most limit
 * bytes. Returns 0, RON_EBOMB past limit, RON_ECOMPRESS when corrupt or
 * truncated, RON_EINVAL for an unknown encoding. */
int tx__decode(const char *enc, const uint8_t *in, size_t len, size_t limit, uint8_t **out,
               size_t *out_len);

/* ---- requests ---- */
typedef enum {
    TX_REQ_PARSING,   /* owned by the parser */
    TX_REQ_IN_APP,    /* handed to the handler, not answered */
    TX_REQ_ANSWERED,  /* complete response bytes in out */
    TX_REQ_STREAMING, /* head in out; body chunks follow */
    TX_REQ_ENDED      /* streaming body finished */
} tx_req_state_t;

typedef struct tx_chunk {
    struct tx_chunk *next;
    const uint8_t *data; /* borrowed from the app until done runs */
    size_t len;
    tx_write_done_fn done;
    void *done_arg;
    size_t off;          /* HTTP/2: bytes already copied into DATA frames */
    int status;          /* HTTP/2: what done is told (0, or RON_ECLOSED) */
    char hdr[24];        /* chunk-size line for chunked framing */
    uint8_t hdr_len;
    bool last;           /* the terminating "0\r\n\r\n" chunk */
} tx_chunk_t;

struct tx_conn;

struct tx_request {
    tx_request_view_t view;
    struct sockaddr_storage peer; /* view.peer points here */
    tx_req_state_t state;
    struct tx_conn *conn;    /* NULL when the connection went away */
    struct tx_request *next; /* pipeline order */
    /* parse storage: target, then name\0value\0 pairs */
    tx_buf_t hbuf;
    uint32_t *hofs;          /* 4 per header: name off/len, value off/len */
    size_t hofs_cap;
    tx_header_t *hdrs;
    size_t hdrs_cap;
    size_t n_headers;
    size_t header_bytes;     /* counted against max_header_bytes */
    uint32_t url_len;
    bool last_was_value;
    tx_buf_t body;
    uint8_t *decoded;        /* decoded body when Content-Encoding was set */
    /* answer */
    int reject_status;       /* != 0: the server answers this request itself */
    tx_reject_t reject_reason;
    const char *reject_detail;
    uint32_t retry_after_s;
    bool keep_alive;         /* the client allows another request after this one */
    bool is_head;
    bool expect_continue;
    bool counted_inflight;   /* holds a slot of max_inflight */
    tx_buf_t out;            /* response bytes not yet handed to the connection */
    /* streaming */
    bool chunked;
    int64_t remaining;       /* Content-Length bytes still to come, -1 chunked/close */
    tx_chunk_t *chunks, *chunks_tail;
    size_t chunk_bytes;
    tx_drain_fn drain;
    void *drain_arg;
    bool want_drain;         /* tx_respond_write said RON_EAGAIN */
    /* HTTP/1.1 upgrade and HTTP/2 */
    bool upgrade;            /* the request asked for a protocol switch */
    bool h2;                 /* an HTTP/2 stream: answers go through tx_h2.c */
    int32_t stream_id;
    size_t out_off;          /* HTTP/2: bytes of out already framed */
    uint64_t opened_ms;      /* HTTP/2: when the stream opened (body timeout) */
    /* the connection (or HTTP/2 stream) went away while the app streams r */
    struct tx_request *gone_next; /* in the server's queue of drains due */
    struct tx_server *gone_srv;   /* that server, while gone_pending */
    bool gone_pending;            /* its closing drain has not run yet */
    /* streamed request body (tx_request_stream_body); body holds the bytes
     * read and not yet handed over, piece the one the app holds */
    tx_body_fn body_cb;           /* NULL: the body is buffered */
    void *body_arg;
    uint64_t body_max;            /* cap of the streamed body; 0 none */
    uint64_t body_total;          /* streamed bytes received so far */
    int64_t declared;             /* Content-Length, or -1 */
    uint64_t body_last_ms;        /* HTTP/2: last byte or release (idle timeout) */
    tx_buf_t piece;               /* the piece the app holds (piece.len > 0 iff bheld) */
    int babort;                   /* != 0: the abort to report */
    bool bstream;                 /* the body streams to body_cb */
    bool bheld;                   /* the app holds piece */
    bool bcomplete;               /* every body byte was read */
    bool bdone;                   /* end or abort reported, or answered: no more events */
    bool in_hook;                 /* the head hook runs (tx_request_stream_body allowed) */
    bool babort_pending;          /* in the server's queue of aborts */
    struct tx_request *babort_next;
    struct tx_server *babort_srv; /* that server, while babort_pending */
};

/* ---- streamed request bodies (tx_body.c) ---- */
/* The next event of r (an abort, a piece, or the end) to its callback, if
 * one is due and no piece is held. Returns true when one ran (r may be gone). */
bool tx__body_deliver(tx_request_t *r);
/* r is answered: no more events; a held piece is dropped. */
void tx__body_stop(tx_request_t *r);
/* The connection or stream of r (held by the app) went away mid-body: the
 * abort RON_ECLOSED runs on a later loop turn (even while a piece is held). */
void tx__server_body_abort(struct tx_server *s, tx_request_t *r);
/* A streamed request's head: call the hook (which may opt r in). */
void tx__body_hook(struct tx_server *s, tx_request_t *r);

void tx__request_reset(tx_request_t *r);
/* Decode r's body per its Content-Encoding within cfg's bounds (sets the
 * view's body, or r->reject_* when refused). */
void tx__request_decode(const tx_config_t *cfg, tx_request_t *r);
void tx__request_free(tx_request_t *r);

/* ---- sans-I/O HTTP/1.1 (tx_http1.c) ---- */
typedef struct {
    /* First byte of a new request. */
    void (*on_begin)(void *arg);
    /* Headers complete and acceptable so far: return 0 to go on, or an HTTP
     * status (429, 503) with r->reject_* set to answer it without the app. */
    int (*on_head)(void *arg, tx_request_t *r);
    /* The client waits for "100 Continue" before sending r's body. */
    void (*on_continue)(void *arg, tx_request_t *r);
    /* A body follows the headers. */
    void (*on_body)(void *arg);
    /* The head hook of the application (may set r->bstream). */
    void (*on_hook)(void *arg, tx_request_t *r);
    /* r's body streams: hand r to the application now, before its body
     * (ownership passes to the callee; the parser keeps reading its body). */
    void (*on_stream)(void *arg, tx_request_t *r);
    /* r is complete (r->reject_status != 0: answer it with an error);
     * ownership passes to the callee (a streamed r: its body is complete,
     * or cut off with reject_status set; the callee owns it already). */
    void (*on_request)(void *arg, tx_request_t *r);
} tx_http1_cbs_t;

typedef struct {
    http_parser parser;
    const tx_config_t *cfg;
    const tx_http1_cbs_t *cbs;
    void *arg;
    tx_request_t *cur;        /* request being parsed, or NULL */
    tx_request_t *spare;      /* one freed request kept for reuse */
    uint64_t *corr_seq;       /* next corr_id to assign */
    const struct sockaddr_storage *peer;
    bool failed;              /* a malformed or rejected message ended parsing */
    bool in_body;
    bool msg_done;            /* set by on_message_complete; parser paused */
    bool stream_head;         /* set by on_headers_complete of a streamed r; parser paused */
} tx_http1_t;

void tx__http1_init(tx_http1_t *h, const tx_config_t *cfg, const tx_http1_cbs_t *cbs, void *arg,
                    uint64_t *corr_seq, const struct sockaddr_storage *peer);
/* Free the request being parsed and the spare. */
void tx__http1_free(tx_http1_t *h);
/* Parse up to len bytes. Stops after each complete request (on_request ran)
 * and returns the bytes consumed; after a failure it consumes nothing more. */
size_t tx__http1_feed(tx_http1_t *h, const uint8_t *data, size_t len);
/* True when bytes of an unfinished request have been consumed. */
bool tx__http1_mid_message(const tx_http1_t *h);
/* Take a request for reuse (never NULL). */
tx_request_t *tx__http1_request_new(tx_http1_t *h);
/* Give a finished request back for reuse, or free it. */
void tx__http1_request_recycle(tx_http1_t *h, tx_request_t *r);

/*
 * Serialize a response head into out: status line, Date (date, may be
 * NULL), X-Corr-Id, the headers given, then Content-Length (>= 0) or
 * Transfer-Encoding: chunked (content_length -1, HTTP/1.1) and Connection.
 */
void tx__http1_head(tx_buf_t *out, uint8_t http_minor, int status, const tx_header_t *hdrs,
                    size_t n, int64_t content_length, bool keep_alive, uint64_t corr_id,
                    const char *date);
/* Serialize a whole error response with the envelope body. */
void tx__http1_error(tx_buf_t *out, uint8_t http_minor, int status, const char *message,
                     const char *reason, uint32_t retry_after_s, bool keep_alive,
                     uint64_t corr_id, const char *date, bool is_head);
/* Default message of a reject reason ("request body exceeds 1048576 bytes"). */
const char *tx__reject_message(tx_reject_t r);

/* ---- libuv layers (tx_listener.c, tx_conn.c, tx_server.c) ---- */
typedef enum { TX_PH_IDLE, TX_PH_HEADERS, TX_PH_BODY, TX_PH_WAIT, TX_PH_LINGER } tx_phase_t;

/* Parse numeric "host:port" / "[v6]:port" ("localhost" = 127.0.0.1) into ss.
 * Returns 0 or RON_EINVAL. (tx_listener.c; tx_peer.c dials with it too.) */
int tx__addr_parse(const char *addr, struct sockaddr_storage *ss);
/* Tests: dial with ctx (a client SSL_CTX; a reference is taken) instead of the
 * node's own, to present another certificate or ALPN. tx_peer.c. */
struct tx_peer;
void tx__peer_client_ctx_set(struct tx_peer *p, SSL_CTX *ctx);

struct tx_listener {
    uv_tcp_t tcp;
    struct tx_server *srv;   /* NULL until attached */
    SSL_CTX *tls;            /* a TLS listener's context (a reference), or NULL */
    struct tx_listener *next;
    void (*close_cb)(void *arg);
    void *close_arg;
};

typedef enum {
    TX_PROTO_SNIFF, /* cleartext: bytes matching the HTTP/2 preface are held back */
    TX_PROTO_H1,
    TX_PROTO_H2
} tx_proto_t;

struct tx_h2;

typedef struct tx_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    struct tx_server *srv;
    struct tx_conn *prev, *next;  /* the server's list of open connections */
    tx_http1_t h1;
    struct sockaddr_storage peer;
    tx_request_t *head, *tail;    /* pipeline, in request order */
    unsigned depth;               /* requests in the pipeline, <= TX_MAX_PIPELINE */
    tx_buf_t pending;             /* input not parsed yet (parsing paused) */
    tx_buf_t out;                 /* response bytes batched for the next write */
    size_t wq;                    /* bytes handed to uv_write and not yet written */
    uint64_t deadline;            /* ms (uv_now) when the current phase times out; 0 none */
    uint64_t write_deadline;      /* ms: queued output must progress by then; 0 none */
    uint64_t timer_due;           /* ms the timer is armed for; 0 not armed */
    tx_phase_t phase;
    int open_handles;             /* tcp + timer until both close callbacks ran */
    bool reading;
    bool closing;                 /* uv_close issued */
    bool close_after;             /* no more requests: close once the output is written */
    bool in_read;                 /* inside the read callback: batch the writes */
    bool pumping;
    bool eof;
    /* record layer and protocol */
    SSL *ssl;                     /* TLS over memory BIOs, or NULL */
    bool tls_done;                /* handshake complete */
    tx_proto_t proto;
    uint8_t sniffed;              /* preface bytes matched so far (TX_PROTO_SNIFF) */
    struct tx_h2 *h2;             /* the HTTP/2 session (TX_PROTO_H2) */
    tx_request_t *sreq;           /* HTTP/1.1: the streamed request whose body events are
                                     not over (in the pipeline, held by the app) */
} tx_conn_t;

typedef struct tx_refused tx_refused_t;

struct tx_server {
    uv_loop_t *loop;
    tx_limits_t lim;             /* lim.cfg is the effective configuration */
    tx_handler_fn handler;
    void *arg;
    tx_listener_t *listeners;
    tx_conn_t *conns;
    tx_refused_t *refused;
    unsigned refusing;           /* refused connections still being answered */
    unsigned open;               /* listeners + connections + refusals not yet closed */
    uint64_t corr_seq;           /* next corr_id assigned */
    int64_t date_sec;            /* second the cached Date is for */
    char date[40];               /* IMF-fixdate */
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    /* callbacks due because a connection or stream went away, run by the
     * notify timer on a later loop turn (never inside a tx_respond_* call) */
    uv_timer_t notify;
    tx_chunk_t *gone_chunks, *gone_chunks_tail; /* done(k->status) due */
    tx_request_t *gone_reqs;     /* open streamed answers whose drain is due */
    tx_request_t *body_aborts;   /* streamed bodies whose RON_ECLOSED abort is due */
    tx_head_fn head_hook;        /* tx_server_set_head_hook */
    void *head_arg;
    uint8_t rdbuf[64 << 10];     /* shared read buffer: parsed before the next read */
    uint8_t plain[16 << 10];     /* shared buffer for decrypted records */
};

void tx__conn_accept(tx_server_t *s, uv_stream_t *listener, SSL_CTX *tls);
/* Serve an already connected stream socket fd (taken) as a cleartext
 * connection from peer: for the fuzz target, which drives the server
 * through a socketpair. Returns 0, RON_EBUSY at max_conns, or a libuv error. */
int tx__conn_adopt(tx_server_t *s, int fd, const struct sockaddr_storage *peer);
/* Plaintext bytes from the record layer to the protocol (sniff, HTTP/1.1, HTTP/2). */
void tx__conn_input(tx_conn_t *c, const uint8_t *data, size_t len);
/* Write c->out (encrypted when TLS). Returns 0 or a libuv error. */
int tx__conn_flush(tx_conn_t *c);
/* Move answers to the wire, resume reads, notify drains (safe to call anywhere). */
void tx__conn_pump(tx_conn_t *c);
void tx__conn_set_phase(tx_conn_t *c, tx_phase_t ph, uint32_t timeout_ms);
/* Enter phase ph, due at the absolute time deadline_ms (uv_now; 0 none). */
void tx__conn_set_phase_at(tx_conn_t *c, tx_phase_t ph, uint64_t deadline_ms);
/* All written, nothing more to serve: half-close, drain briefly, close. */
void tx__conn_linger(tx_conn_t *c);
uint64_t tx__conn_now(const tx_conn_t *c);
/* Pump c on the next loop turn (its timer, due now). */
void tx__conn_soon(tx_conn_t *c);

/* One write request of a connection (tx_conn_write.c, and the TLS records
 * written as they are by tx_conn.c and tx_conn_tls.c); freed by tx__conn_on_write. */
typedef struct {
    uv_write_t req;
    tx_conn_t *c;
    uint8_t *owned;     /* bytes this write owns, or NULL */
    size_t len;         /* bytes counted in c->wq */
    tx_chunk_t *chunk;  /* streamed chunk whose done callback runs at completion */
    tx_request_t *req_owner;
} tx_wreq_t;

/* ---- a connection's files (tx_conn.c, tx_conn_http1.c, tx_conn_write.c, tx_conn_tls.c) ---- */
/* The HTTP/1.1 parser's callbacks; their arg is the connection. */
extern const tx_http1_cbs_t tx__conn_cbs;
/* Append r to the pipeline (it is answered in this order). */
void tx__conn_push(tx_conn_t *c, tx_request_t *r);
/* Remove the pipeline's head (answered and written) and recycle it. */
void tx__conn_pop(tx_conn_t *c);
/* Serialize r's error answer (its reject_* fields) and mark it answered. */
void tx__conn_answer_reject(tx_conn_t *c, tx_request_t *r);
/* Re-arm c's timer for its earliest deadline. */
void tx__conn_arm(tx_conn_t *c);
/* Pause or resume reading the socket (no-op while closing). */
void tx__conn_set_reading(tx_conn_t *c, bool on);
/* Write completion of a tx_wreq_t: uncount, free, re-arm, pump. */
void tx__conn_on_write(uv_write_t *req, int status);
/* Move answers at the head of the pipeline to the wire, in order. Returns 0
 * or a libuv error (the caller closes). */
int tx__conn_collect(tx_conn_t *c);
/* Ciphertext from the socket: handshake, then plaintext to the protocol. */
void tx__conn_tls_read(tx_conn_t *c, const uint8_t *data, size_t len);
/* Append k to req's queue of streamed chunks (both protocols; tx_answer.c). */
void tx__chunk_queue(tx_request_t *req, tx_chunk_t *k);

/* ---- TLS record layer (tx_tls.c) ---- */
/* A server SSL on ctx with memory BIOs. Returns NULL on allocation failure. */
SSL *tx__tls_ssl_new(SSL_CTX *ctx);
/* Encrypt the plaintext of bufs and append the records to out. Returns 0 or RON_ETLS. */
int tx__tls_encrypt(SSL *ssl, const uv_buf_t *bufs, unsigned nbufs, tx_buf_t *out);
/* Append what the SSL wants to send (handshake, alerts, tickets) to out. */
void tx__tls_take_output(SSL *ssl, tx_buf_t *out);
/* Classify a failed handshake (ssl_err from SSL_get_error, after the error queue). */
tx_tls_fail_t tx__tls_fail_reason(int ssl_err, unsigned long err);

/* ---- HTTP/2 (tx_h2.c) ---- */
/* Make c an HTTP/2 connection. upgrade != NULL: the "Upgrade: h2c" request
 * (stream 1), settings its HTTP2-Settings value (base64url). Returns 0 or
 * RON_EINVAL (bad settings: the caller answers 400) or RON_EPROTO. */
int tx__h2_start(tx_conn_t *c, tx_request_t *upgrade, const char *settings);
/* Bytes of the client (after the record layer). */
void tx__h2_feed(tx_conn_t *c, const uint8_t *data, size_t len);
/* Frame what can be sent within the write queue bound, write it, run the
 * done and drain callbacks due; close the connection when the session ends. */
void tx__h2_pump(tx_conn_t *c);
/* The connection is closing: streams learn it, the session goes. */
void tx__h2_close(tx_conn_t *c);
/* A phase deadline passed: GOAWAY, count why, close once written. */
void tx__h2_timeout(tx_conn_t *c, tx_reject_t why);
int tx__h2_respond(tx_conn_t *c, tx_request_t *r, int status, const tx_header_t *hdrs, size_t n,
                   const void *body, size_t len);
int tx__h2_respond_error(tx_conn_t *c, tx_request_t *r, int status, const char *message,
                         const char *reason, uint32_t retry_after_s);
int tx__h2_respond_start(tx_conn_t *c, tx_request_t *r, int status, const tx_header_t *hdrs,
                         size_t n, int64_t content_length);
int tx__h2_write(tx_conn_t *c, tx_request_t *r, tx_chunk_t *k);
int tx__h2_end(tx_conn_t *c, tx_request_t *r);
void tx__conn_close(tx_conn_t *c);
/* r's piece was released: resume reading, deliver the next event soon. */
void tx__conn_body_release(tx_conn_t *c, tx_request_t *r);
/* r's piece of n bytes was released: return them to the stream's window. */
void tx__h2_body_release(tx_conn_t *c, tx_request_t *r, size_t n);
void tx__refuse(tx_server_t *s, uv_stream_t *listener);
void tx__refused_close(tx_refused_t *f);
const char *tx__server_date(tx_server_t *s);
/* Run k's done with k->status on a later loop turn, then free k. */
void tx__server_defer_done(tx_server_t *s, tx_chunk_t *k);
/* The connection or HTTP/2 stream of r (still held by the app, streaming or
 * ended) went away: its queued chunks get done(RON_ECLOSED) and, if r is
 * still streaming, its drain runs once, all on a later loop turn. */
void tx__server_gone(tx_server_t *s, tx_request_t *r);
/* r is answered (tx_respond_end): its pending closing drain is dropped. */
void tx__server_gone_cancel(tx_request_t *r);
/* A listener, connection or refusal of s finished closing. */
void tx__server_unref(tx_server_t *s);

#endif
