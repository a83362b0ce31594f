/*
 * oap.h - OAP/1 codec (../shared/spec/OAP1.md, normative). Pure: no I/O.
 *
 * Frame layout (all integers big-endian):
 *
 *   offset  size     field         meaning
 *   0       4        len           whole frame: 38 + cap_len + payload; 38 <= len <= max_frame
 *   4       2        ver           always 1
 *   6       2        flags         OAP_F_*; bits 8-15 reserved and rejected
 *   8       2        code          status on responses, 0 on requests
 *   10      2        app_proto_id  0 = control (HELLO); registry in spec §6
 *   12      16       tenant_id     128-bit tenant, 0 = none
 *   28      2        cap_len       capability bytes after the header; non-zero only with START
 *   30      8        corr_id       stream id chosen by the stream's opener
 *   38      cap_len  cap           capability token bytes (opaque)
 *   38+cap  rest     payload       payload bytes (opaque; zstd when COMP)
 *
 * Decoded frames are views: cap and payload point into the caller's or the
 * decoder's buffer and stay valid until the next call that names their event.
 */
#ifndef OAP_H
#define OAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ron_proto.h"

/* ---- limits (spec §1, §5) ---- */
#define OAP_HDR_LEN 38u         /* fixed header size */
#define OAP_VERSION 1u          /* the only version */
#define OAP_MAX_FRAME 1048576u  /* default and ceiling of max_frame: 1 MiB */
#define OAP_MIN_MAX_FRAME 4096u /* smallest max_frame a HELLO may negotiate */
#define OAP_CHUNK 65536u        /* recommended data chunk (64 KiB), not a frame limit */
#define OAP_MAX_CAP 65535u      /* cap_len is a u16 */
#define OAP_INFLATE_FACTOR 8u   /* COMP output <= 8 x max_frame (compression bomb bound) */
#define OAP_MAX_INFLIGHT 64u    /* default open streams per connection (HELLO) */

/* ---- flags (spec §2) ---- */
enum {
    OAP_F_REQ = 0x0001,     /* from the stream's opener */
    OAP_F_RESP = 0x0002,    /* back to the opener */
    OAP_F_EVENT = 0x0004,   /* unsolicited push */
    OAP_F_START = 0x0008,   /* first frame of a stream; only one that may carry cap */
    OAP_F_END = 0x0010,     /* last frame of this direction */
    OAP_F_ACK_REQ = 0x0020, /* sender wants an acknowledgement */
    OAP_F_COMP = 0x0040,    /* payload is zstd-compressed */
    OAP_F_APP_E2E = 0x0080, /* opaque end-to-end encrypted payload; never parse or log */
    OAP_F_KNOWN = 0x00ff,   /* any bit outside this mask is reserved */
};

/* ---- application protocols (spec §6) ---- */
enum {
    OAP_APP_CONTROL = 0,
    OAP_APP_STORAGE = 1,
    OAP_APP_INDEX = 2,
    OAP_APP_MAILBOX = 3,
    OAP_APP_OVERLAY = 4,
    OAP_APP_DHT = 5,
    OAP_APP_KERNEL = 6,
    OAP_APP_AUTH = 7,
    OAP_APP_LEDGER = 8,
    OAP_APP_REGISTRY = 9,
};

typedef struct {
    uint32_t len;   /* whole frame; set by the encoder */
    uint16_t ver;   /* OAP_VERSION; the encoder writes 1 regardless */
    uint16_t flags; /* OAP_F_* */
    uint16_t code;  /* status on responses, 0 on requests */
    uint16_t app_proto_id;
    uint8_t tenant_id[16];
    uint16_t cap_len; /* set by the encoder from cap_len below */
    uint64_t corr_id;
    const uint8_t *cap;     /* view; cap_len bytes */
    const uint8_t *payload; /* view; payload_len bytes (still compressed when COMP) */
    size_t payload_len;
} oap_frame_t;

/*
 * Validate the 38-byte header at buf (spec §5 rule 2) without looking at the
 * body. Fills every header field of f_out (cap/payload left NULL).
 * Returns 0; RON_EAGAIN if len < OAP_HDR_LEN; RON_EVERSION (ver != 1);
 * RON_ELENGTH (len < 38 + cap_len); RON_ETOOBIG (len > max_frame);
 * RON_EFLAGS (reserved bits); RON_ECAPSTART (cap_len != 0 without START).
 */
int oap_header_parse(const uint8_t *buf, size_t len, uint32_t max_frame, oap_frame_t *f_out);

/*
 * Parse one whole frame from the start of buf. On success fills f_out with
 * views into buf and returns the frame's length (bytes consumed).
 * Returns RON_EAGAIN when buf holds less than a whole frame, or any error of
 * oap_header_parse(). Does not inflate COMP payloads.
 */
ssize_t oap_frame_parse(const uint8_t *buf, size_t len, uint32_t max_frame, oap_frame_t *f_out);

/*
 * Write the header of f (len computed from f->cap_len and f->payload_len; ver
 * always 1; f->len and f->ver ignored) into out, for scatter-gather sends of
 * cap and payload. Returns 0; RON_ETOOBIG if the frame would exceed max_frame
 * (clamped to OAP_MAX_FRAME); RON_EFLAGS for reserved bits; RON_ECAPSTART for
 * a cap without START.
 */
int oap_header_encode(const oap_frame_t *f, uint32_t max_frame, uint8_t out[static OAP_HDR_LEN]);

/* Bytes oap_frame_encode() writes for f: 38 + cap_len + payload_len. */
size_t oap_frame_size(const oap_frame_t *f);

/*
 * Encode f (header, cap, payload) into out (cap bytes available).
 * Returns the bytes written; -ENOBUFS when out is too small,
 * or any error of oap_header_encode().
 */
ssize_t oap_frame_encode(const oap_frame_t *f, uint32_t max_frame, uint8_t *out, size_t cap);

/* ---- incremental decoder (spec §5 rules 1-3) ---- */

typedef struct {
    uint8_t *buf;       /* owned; grows as bytes arrive, never past max_frame + OAP_CHUNK */
    size_t cap;         /* allocated bytes */
    size_t start;       /* first unconsumed byte */
    size_t end;         /* one past the last buffered byte; start <= end <= cap */
    uint32_t max_frame; /* negotiated limit */
    int error;          /* sticky: once a frame is rejected the stream is dead */
} oap_decoder_t;

/* Initialise d for frames up to max_frame (a larger value is clamped to
 * OAP_MAX_FRAME). No allocation yet. */
void oap_decoder_init(oap_decoder_t *d, uint32_t max_frame);
/* Free d's buffer. d can be initialised again. */
void oap_decoder_close(oap_decoder_t *d);
/* Lower max_frame after HELLO negotiation (never raises it). */
void oap_decoder_set_max_frame(oap_decoder_t *d, uint32_t max_frame);
/*
 * Give the buffer back when it holds no unconsumed byte (a drained decoder,
 * e.g. of an idle peer session): a buffer that once held a large frame
 * would otherwise stay allocated at that size. The next feed or reserve
 * allocates again. Returns the bytes freed (0 when something is buffered,
 * nothing was allocated, or the decoder has failed). Views from
 * oap_decoder_next() are invalid afterwards.
 */
size_t oap_decoder_release(oap_decoder_t *d);

/*
 * Copy len bytes into the decoder (all or nothing). Returns 0, or the sticky
 * error. Buffering is bounded: bytes are only accepted while the unconsumed
 * total stays within one max_frame plus OAP_CHUNK; beyond that returns
 * RON_EFLOOD and buffers nothing (backpressure, not an error: drain with
 * oap_decoder_next() and feed again). Feeding at most OAP_CHUNK at a time
 * after draining never hits it.
 */
int oap_decoder_feed(oap_decoder_t *d, const uint8_t *data, size_t len);

/*
 * Zero-copy feeding for a read callback: reserve space for at least want
 * bytes (0 = as much as the bound allows), read into it, then commit what
 * arrived (n <= *avail_out). Returns a pointer and sets *avail_out (> 0, may
 * exceed want), or returns NULL when the buffer is at its bound (the
 * RON_EFLOOD case) or the decoder has failed. Views from oap_decoder_next()
 * are invalid afterwards.
 */
uint8_t *oap_decoder_reserve(oap_decoder_t *d, size_t want, size_t *avail_out);
void oap_decoder_commit(oap_decoder_t *d, size_t n);

/*
 * Take the next whole frame. Returns 0 and fills f_out with views valid until
 * the next oap_decoder_feed/reserve/next/close call; RON_EAGAIN when no whole
 * frame is buffered; or a decode error (sticky; see oap_header_parse).
 */
int oap_decoder_next(oap_decoder_t *d, oap_frame_t *f_out);

/* ---- compression (spec §5 rule 4) ---- */

/*
 * Inflate a COMP frame's payload (one or more zstd frames) with a streaming
 * ZSTD_DStream into new memory (*out, caller frees; NULL on error).
 * Output never exceeds OAP_INFLATE_FACTOR * max_frame: decoding stops as soon
 * as it would and returns RON_EBOMB without allocating more. A declared
 * content size or a window larger than that bound is RON_EBOMB up front.
 * Returns 0, RON_EBOMB, or RON_ECOMPRESS for malformed, truncated or empty
 * zstd data. f->cap is never compressed.
 */
int oap_inflate(const oap_frame_t *f, uint32_t max_frame, uint8_t **out, size_t *out_len);

/* Compress src into new memory (*out, caller frees) at zstd level. Returns 0 or RON_ECOMPRESS. */
int oap_deflate(const uint8_t *src, size_t len, int level, uint8_t **out, size_t *out_len);

/* ---- errors (spec §3) ---- */

/*
 * Map a codec error to its error-envelope status and slug (and a reason, or
 * NULL): RON_ETOOBIG (len over max_frame) -> 413 payload_too_large, RON_EBOMB
 * -> 413 payload_too_large reason compression_bomb, RON_EVERSION -> 426
 * proto_mismatch, RON_EBUSY/RON_EFLOOD -> 429 quota_exhausted, other decode
 * and stream errors (RON_ELENGTH, RON_EFLAGS, RON_ECAPSTART, RON_ECOMPRESS,
 * RON_ESTREAM, RON_ECREDIT, RON_EJSON, a truncated frame) -> 400 bad_request,
 * anything else -> 500 internal. The slug always comes from ron-proto's table.
 */
void oap_error_status(int rc, uint16_t *status_out, const char **slug_out, const char **reason_out);

/* Names of set flags joined with '|' ("REQ|START|END") into out; reserved
 * bits print as BIT8..BIT15. Truncates at a whole name. */
void oap_flag_names(uint16_t flags, char *out, size_t cap);

/*
 * Parse names joined with '|' ("REQ|START"; "" = 0) into a flag set.
 * Returns 0 or RON_EINVAL for an unknown name.
 */
int oap_flags_from_names(const char *names, uint16_t *flags_out);

/*
 * Encode an error frame: RESP|END, code e's status (from e->code's slug),
 * app_proto_id, corr_id e->corr_id, payload the envelope JSON of e.
 * Returns bytes written, -ENOBUFS, or RON_EINVAL (e->code not a known slug).
 */
ssize_t oap_error_frame_encode(const proto_error_t *e, uint16_t app_proto_id, uint8_t *out,
                               size_t cap);

/*
 * Shorthand: error frame for status with message and optional reason (NULL =
 * none); the slug and retryable come from the spec §3 table.
 */
ssize_t oap_error_encode(uint16_t status, uint16_t app_proto_id, uint64_t corr_id,
                         const char *message, const char *reason, uint8_t *out, size_t cap);

/* ---- HELLO (spec §4) ---- */

/*
 * Encode a HELLO request: app_proto_id 0, code 0, flags REQ|START|END (or bare
 * REQ, as the Rust implementation sends it, when bare), payload h as JSON.
 * Returns bytes written, -ENOBUFS, or RON_EINVAL.
 */
ssize_t oap_hello_encode(const proto_hello_t *h, uint64_t corr_id, bool bare, uint8_t *out,
                         size_t cap);

/*
 * Check that f (the first frame of a connection) is a HELLO request and decode
 * its payload (empty = no fields; unknown keys ignored). *bare_out tells
 * whether it came with bare REQ flags. f->cap (a START may carry one) is left
 * to the caller. Returns 0; RON_EVERSION if f is not a HELLO (app_proto_id,
 * flags or code wrong) or lists versions without 1; RON_EJSON for a malformed
 * payload (err_out, may be NULL, names the field).
 */
int oap_hello_parse(const oap_frame_t *f, proto_hello_t *h_out, bool *bare_out,
                    proto_err_t *err_out);

/*
 * The max_frame both sides use: the smaller of ours and theirs (theirs == 0:
 * not stated), never above OAP_MAX_FRAME and never below OAP_MIN_MAX_FRAME.
 */
uint32_t oap_hello_negotiate(uint32_t ours, uint32_t theirs);

/* Fill r with this implementation's offer: max_frame, OAP_MAX_INFLIGHT, flags
 * 255, versions [1], and one transport (borrowed string, e.g. "tcp+tls"). */
void oap_hello_reply_init(proto_hello_reply_t *r, uint32_t max_frame, const char *transport);

/*
 * Server side: answer the first frame a peer sent. For a valid HELLO, write
 * the reply (code 200, RESP|END, or bare RESP to a bare HELLO; payload offer
 * with max_frame replaced by the negotiated value), set *max_frame_out and
 * return 0. For anything else write a 426 proto_mismatch error frame and
 * return RON_EVERSION: send it, then close. *len_out is the frame's length in
 * both cases. Returns -ENOBUFS if out is too small.
 */
int oap_hello_answer(const oap_frame_t *first, const proto_hello_reply_t *offer, uint8_t *out,
                     size_t cap, size_t *len_out, uint32_t *max_frame_out);

/*
 * Client side: check the answer f to our HELLO (sent with corr_id, offering
 * ours). Returns 0 with r_out filled and *max_frame_out negotiated;
 * RON_EVERSION if f is an error frame, not a HELLO reply (app_proto_id, flags,
 * code 200, corr_id) or does not list version 1; RON_EJSON for a malformed
 * payload (err_out names the field).
 */
int oap_hello_reply_parse(const oap_frame_t *f, uint64_t corr_id, uint32_t ours,
                          proto_hello_reply_t *r_out, uint32_t *max_frame_out,
                          proto_err_t *err_out);

/* ---- streams and flow control (spec §2.1; docs/protocol/oap1.md) ---- */

#define OAP_STREAM_WINDOW 16u      /* initial credit, frames, per stream and direction */
#define OAP_MAX_SEND_CREDIT 65535u /* more outstanding credit than this is a peer error */

/*
 * A stream is keyed by (corr_id, mine): mine when this side opened it (sent
 * REQ|START). Frames from the opener carry REQ, frames back carry RESP, so a
 * received REQ frame belongs to (corr_id, false) and a received RESP frame to
 * (corr_id, true). Only the direction towards us is credited on receive and
 * only the direction away from us on send.
 */
enum { OAP_DIR_IDLE = 0, OAP_DIR_OPEN = 1, OAP_DIR_ENDED = 2 };

typedef struct {
    uint64_t corr_id;
    uint16_t app_proto_id;
    bool used;              /* slot holds a stream */
    bool mine;              /* this side opened the stream */
    uint8_t req;            /* OAP_DIR_* of the opener's direction */
    uint8_t resp;           /* OAP_DIR_* of the answering direction */
    uint32_t send_credit;   /* frames we may still send; 0 = wait for a credit frame */
    uint32_t recv_credit;   /* frames the peer may still send us */
    uint32_t recv_consumed; /* frames the application finished since our last grant */
} oap_stream_t;

typedef struct {
    oap_stream_t *slots; /* open addressing, linear probing; nslots a power of 2 */
    uint32_t nslots;
    uint32_t max_inflight; /* open streams allowed per side */
    uint32_t window;       /* initial credit and grant batch (window / 2) */
    uint32_t n_mine;       /* open streams this side opened */
    uint32_t n_theirs;     /* open streams the peer opened */
} oap_streams_t;

/* Initialise t for max_inflight (>= 1) open streams per side and a credit
 * window (>= 2) in frames. Allocates the table (returns new; oap_streams_close frees). */
void oap_streams_init(oap_streams_t *t, uint32_t max_inflight, uint32_t window);
void oap_streams_close(oap_streams_t *t);

/*
 * Account a frame received from the peer, before handing it on.
 * Returns 0 (deliver it); OAP_STREAM_CONTROL (1) for a credit frame, which
 * was applied and must not be delivered (a credit for an unknown or finished
 * stream is ignored: it may cross an END); RON_EBUSY for a START beyond
 * max_inflight (answer 429 on its corr_id; the stream is not opened);
 * RON_ESTREAM for a duplicate START, a frame of a stream that was never
 * started or whose direction has ended, RESP|START, or a frame with neither
 * or both of REQ and RESP; RON_ECREDIT when the peer sent without credit or
 * granted more than OAP_MAX_SEND_CREDIT. Frames with app_proto_id 0 other than
 * credit frames (HELLO, PING, GOODBYE), and standalone events (EVENT without
 * REQ, RESP, START or END: fire-and-forget), are not stream frames: 0.
 */
int oap_streams_recv(oap_streams_t *t, const oap_frame_t *f);
enum { OAP_STREAM_CONTROL = 1 };

/*
 * Account a frame this side is about to send. Returns 0 (send it);
 * RON_EAGAIN when the stream has no send credit (nothing changed: wait for a
 * credit frame, then retry); RON_EBUSY when a START would exceed
 * max_inflight (wait for a stream to finish); RON_ESTREAM as for recv.
 */
int oap_streams_send(oap_streams_t *t, const oap_frame_t *f);

/*
 * Record that the application finished n received frames of stream
 * (corr_id, mine). Returns the credit to grant now (0: not yet; grants go out
 * in batches of at least window / 2): send it with oap_credit_encode().
 */
uint32_t oap_streams_consume(oap_streams_t *t, uint64_t corr_id, bool mine, uint32_t n);

/* Look up a stream; NULL if not open. The pointer is valid until the next call on t. */
const oap_stream_t *oap_streams_find(const oap_streams_t *t, uint64_t corr_id, bool mine);

/* Forget a stream (after sending or receiving an error for it). No-op if absent. */
void oap_streams_remove(oap_streams_t *t, uint64_t corr_id, bool mine);

/*
 * Encode a credit frame granting frames (1..PROTO_MAX_CREDIT) on stream
 * (corr_id, mine): app_proto_id 0, flags EVENT|REQ when this side opened the
 * stream, EVENT|RESP otherwise, code 0, payload {"frames":n,"op":"credit"}.
 * Returns bytes written, -ENOBUFS, or RON_EINVAL.
 */
ssize_t oap_credit_encode(uint64_t corr_id, bool mine, uint32_t frames, uint8_t *out, size_t cap);

/*
 * Whether f is a credit frame (app_proto_id 0, flags exactly EVENT|REQ or
 * EVENT|RESP): returns 1 with *frames_out set, 0 if it is not a credit frame,
 * RON_EJSON for a credit frame with a malformed payload.
 */
int oap_credit_parse(const oap_frame_t *f, uint32_t *frames_out);

#endif
