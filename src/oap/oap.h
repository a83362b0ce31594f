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

/* ---- limits (spec §1, §5) ---- */
#define OAP_HDR_LEN 38u                  /* fixed header size */
#define OAP_VERSION 1u                   /* the only version */
#define OAP_MAX_FRAME (1024u * 1024u)    /* default and ceiling of max_frame: 1 MiB */
#define OAP_MIN_MAX_FRAME 4096u          /* smallest max_frame a HELLO may negotiate */
#define OAP_CHUNK (64u * 1024u)          /* recommended streamed data chunk, not a frame limit */
#define OAP_MAX_CAP 65535u               /* cap_len is a u16 */
#define OAP_INFLATE_FACTOR 8u            /* COMP output <= 8 x max_frame (compression bomb bound) */
#define OAP_MAX_INFLIGHT 64u             /* default open streams per connection (HELLO) */

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
    uint32_t len;              /* whole frame; set by the encoder */
    uint16_t ver;              /* OAP_VERSION; the encoder writes 1 regardless */
    uint16_t flags;            /* OAP_F_* */
    uint16_t code;             /* status on responses, 0 on requests */
    uint16_t app_proto_id;
    uint8_t tenant_id[16];
    uint16_t cap_len;          /* set by the encoder from cap_len below */
    uint64_t corr_id;
    const uint8_t *cap;        /* view; cap_len bytes */
    const uint8_t *payload;    /* view; payload_len bytes (still compressed when COMP) */
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
 * Write the header of f (len and cap_len computed from f->cap_len and
 * f->payload_len) into out, for scatter-gather sends of cap and payload.
 * Returns 0; RON_ETOOBIG if the frame would exceed max_frame or cap_len >
 * OAP_MAX_CAP; RON_EFLAGS for reserved bits; RON_ECAPSTART for a cap without START.
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

/* Initialise d for frames up to max_frame (<= OAP_MAX_FRAME). No allocation yet. */
void oap_decoder_init(oap_decoder_t *d, uint32_t max_frame);
/* Free d's buffer. d can be initialised again. */
void oap_decoder_close(oap_decoder_t *d);
/* Lower max_frame after HELLO negotiation (never raises it). */
void oap_decoder_set_max_frame(oap_decoder_t *d, uint32_t max_frame);

/*
 * Copy len bytes into the decoder. Returns 0, or the sticky error.
 * Buffering is bounded: bytes are only accepted while the unconsumed total
 * stays within one max_frame plus OAP_CHUNK; beyond that returns RON_EFLOOD
 * (the caller should stop reading and call oap_decoder_next()).
 */
int oap_decoder_feed(oap_decoder_t *d, const uint8_t *data, size_t len);

/*
 * Zero-copy feeding for a read callback: reserve space for up to want bytes
 * and read into it, then commit what arrived. Returns a pointer and sets
 * *avail_out (> 0), or returns NULL when the buffer is full (RON_EFLOOD case).
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
 * Inflate a COMP frame's payload into new memory (*out, caller frees).
 * Output never exceeds OAP_INFLATE_FACTOR * max_frame: past that returns
 * RON_EBOMB without allocating more. Returns 0, RON_EBOMB, or RON_ECOMPRESS
 * for malformed zstd data. f->cap is never compressed.
 */
int oap_inflate(const oap_frame_t *f, uint32_t max_frame, uint8_t **out, size_t *out_len);

/* Compress src into new memory (*out, caller frees) at zstd level. Returns 0 or RON_ECOMPRESS. */
int oap_deflate(const uint8_t *src, size_t len, int level, uint8_t **out, size_t *out_len);

/* ---- errors (spec §3) ---- */

/*
 * Map a codec error to its error-envelope status and slug (and a reason, or
 * NULL): RON_ELENGTH over max_frame -> 413 payload_too_large, RON_EBOMB -> 413
 * payload_too_large reason compression_bomb, RON_EVERSION -> 426
 * proto_mismatch, other decode errors -> 400 bad_request.
 */
void oap_error_status(int rc, uint16_t *status_out, const char **slug_out, const char **reason_out);

/* Names of set flags joined with '|' ("REQ|START|END") into out. */
void oap_flag_names(uint16_t flags, char *out, size_t cap);

#endif
