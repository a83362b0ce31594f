/*
 * ron_proto.h - DTOs of the control plane (spec OAP1.md §2.1, §3, §4): the
 * error envelope with its status/slug table, HELLO and its reply, stream
 * metadata (START operation, response metadata) and the flow-control credit.
 *
 * Wire rules, for every DTO here:
 *   - compact JSON, one object; keys are emitted in a fixed order, so equal
 *     DTOs encode to equal bytes: sorted, except the error envelope, whose
 *     keys follow spec §3 (code, message, retryable, corr_id, then reason and
 *     retry_after_ms when present), the bytes HTTP error bodies carry too;
 *     no floats are ever written;
 *   - u64 values (corr_id, size) travel as decimal strings ("18446744073709551615")
 *     because JSON readers lose integers above 2^53; values that fit in u32
 *     (max_frame, max_inflight, frames, retry_after_ms) are JSON integers;
 *   - decoding is strict: unknown keys, wrong types, duplicate keys, floats,
 *     out-of-range integers and oversized strings are errors, and the error
 *     names the offending field (proto_err_t). HELLO and its reply are the one
 *     exception: unknown keys are ignored there (spec §4), the rest still holds.
 *
 * Decoders take (json, len) bytes that need not be NUL-terminated.
 */
#ifndef RON_PROTO_H
#define RON_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* ---- limits ---- */
#define PROTO_MAX_JSON 1048576u     /* control bodies are at most 1 MiB (one frame) */
#define PROTO_MAX_SLUG 31u          /* longest status slug ("insufficient_storage" = 20) */
#define PROTO_MAX_MESSAGE 1024u     /* error message text: human-readable, bounded */
#define PROTO_MAX_REASON 63u        /* machine-readable reason ("compression_bomb") */
#define PROTO_MAX_UA 255u           /* HELLO user agent */
#define PROTO_MAX_OP 31u            /* START operation name */
#define PROTO_MAX_CONTENT_TYPE 255u /* response metadata content type */
#define PROTO_MAX_VERSIONS 8u       /* HELLO versions list */
#define PROTO_MAX_TRANSPORTS 8u     /* HELLO transports list */
#define PROTO_MAX_TRANSPORT 31u     /* one transport name ("tcp+tls") */
#define PROTO_MAX_CREDIT 65535u     /* frames granted by one credit message */
/* Error envelope bytes, NUL included: every field at its limit, each byte of
 * message and reason escaped to six ("\u001f"). */
#define PROTO_MAX_ERROR_JSON (128u + PROTO_MAX_SLUG + 6u * (PROTO_MAX_MESSAGE + PROTO_MAX_REASON))
/* The smallest buffer proto_error_write() never refuses: only the message
 * gives way to a smaller buffer, down to "". */
#define PROTO_MIN_ERROR_BUF (PROTO_MAX_ERROR_JSON - 6u * PROTO_MAX_MESSAGE)

/* A decode error: which field and what was wrong with it. */
typedef struct {
    char field[64]; /* "" when the document itself is malformed */
    char text[160]; /* human-readable, names the field: "field \"code\": expected string" */
} proto_err_t;

/* ---- status table (spec §3) ---- */

typedef struct {
    uint16_t status;  /* HTTP-like status */
    const char *slug; /* error envelope "code" */
    bool retryable;   /* clients may retry */
    bool retry_after; /* answers carry Retry-After / retry_after_ms (429, 503, 507) */
} proto_status_t;

/* Look up status in the spec §3 table. Returns a static entry, or NULL for a
 * status not in it (2xx, or a code the table does not list). */
const proto_status_t *proto_status_find(uint16_t status);
/* Slug of status, or "internal" for statuses outside the table. Never NULL. */
const char *proto_status_slug(uint16_t status);
/* Whether a client may retry status (false outside the table). */
bool proto_status_is_retryable(uint16_t status);
/*
 * Map a slug to its status: the first row of the table naming it, so
 * "timeout" is 408 (504 is also "timeout") and "bad_digest" is 409.
 * Returns 0 and sets *status_out, or RON_EINVAL for an unknown slug.
 */
int proto_slug_status(const char *slug, uint16_t *status_out);

/* ---- error envelope (spec §3) ---- */

typedef struct {
    char code[PROTO_MAX_SLUG + 1];       /* slug from the table */
    char message[PROTO_MAX_MESSAGE + 1]; /* may be empty */
    bool retryable;
    uint64_t corr_id; /* decimal string on the wire */
    bool has_retry_after;
    uint32_t retry_after_ms;           /* when has_retry_after */
    char reason[PROTO_MAX_REASON + 1]; /* "" = absent */
} proto_error_t;

/*
 * Fill e for status from the table (code, retryable), with message (borrowed,
 * copied and truncated at PROTO_MAX_MESSAGE; NULL = "") and corr_id. No retry
 * hint and no reason are set. Statuses outside the table become "internal".
 */
void proto_error_init(proto_error_t *e, uint16_t status, uint64_t corr_id, const char *message);

/*
 * Encode e as canonical compact JSON (the bytes of proto_error_write() with
 * a buffer of PROTO_MAX_ERROR_JSON). Returns new memory in *json_out (caller
 * frees with free(); NUL-terminated, *len_out excludes the NUL) and 0, or
 * RON_EINVAL if e->code is not a slug of the table or memory ran out.
 */
int proto_error_encode(const proto_error_t *e, char **json_out, size_t *len_out);

/*
 * Write e as canonical compact JSON into out (cap bytes; NUL-terminated)
 * without allocating: {"code","message","retryable","corr_id"} then "reason"
 * when e->reason is not "" and "retry_after_ms" when e->has_retry_after.
 * Text is escaped (", \, \n; other control bytes and DEL as \u00XX; a byte
 * that is not valid UTF-8 as \ufffd), so the output is always valid JSON.
 * When the whole envelope does not fit, the message is cut at a character
 * boundary until it does; nothing else is ever cut, so any cap >=
 * PROTO_MIN_ERROR_BUF succeeds and cap >= PROTO_MAX_ERROR_JSON never cuts.
 * Returns the length written (excluding the NUL), RON_EINVAL if e->code is
 * not a slug of the table, or RON_ETOOBIG if even an empty message does not fit.
 */
ssize_t proto_error_write(const proto_error_t *e, char *out, size_t cap);

/* Decode an error envelope strictly. Returns 0, or RON_EJSON with err_out
 * (may be NULL) naming the field. */
int proto_error_decode(const char *json, size_t len, proto_error_t *e_out, proto_err_t *err_out);

/* ---- HELLO (spec §4); unknown keys are ignored in both ---- */

typedef struct {
    char ua[PROTO_MAX_UA + 1]; /* "" = absent (or JSON null) */
    bool has_max_frame;
    uint32_t max_frame; /* the sender's wish; negotiated downward */
    size_t n_versions;  /* 0 = absent: the sender speaks version 1 */
    uint32_t versions[PROTO_MAX_VERSIONS];
} proto_hello_t;

typedef struct {
    uint32_t max_frame;
    uint32_t max_inflight;
    uint32_t flags_supported; /* bit set of OAP flags, 255 for OAP/1 */
    size_t n_versions;
    uint32_t versions[PROTO_MAX_VERSIONS];
    size_t n_transports;
    char transports[PROTO_MAX_TRANSPORTS][PROTO_MAX_TRANSPORT + 1];
} proto_hello_reply_t;

/* Encode/decode a HELLO request. Same return conventions as the error envelope. */
int proto_hello_encode(const proto_hello_t *h, char **json_out, size_t *len_out);
int proto_hello_decode(const char *json, size_t len, proto_hello_t *h_out, proto_err_t *err_out);
/* Encode/decode a HELLO reply; every field of proto_hello_reply_t is required. */
int proto_hello_reply_encode(const proto_hello_reply_t *r, char **json_out, size_t *len_out);
int proto_hello_reply_decode(const char *json, size_t len, proto_hello_reply_t *r_out,
                             proto_err_t *err_out);

/* ---- stream metadata (spec §2.1) ---- */

/*
 * A START frame's payload: {"op":"<name>", ...arguments}. op is 1..31 chars
 * of [a-z0-9_.]. The arguments stay a jansson object that the application
 * protocol checks with the proto_args_* helpers below (strictly: any key it
 * did not ask for is an error via proto_args_only()).
 */
typedef struct {
    char op[PROTO_MAX_OP + 1];
    json_t *args; /* owned: every key except "op"; never NULL after a successful decode */
} proto_start_t;

/* Decode a START payload. On success the caller must call proto_start_close(). */
int proto_start_decode(const char *json, size_t len, proto_start_t *s_out, proto_err_t *err_out);
/* Free s->args. s can be decoded into again. */
void proto_start_close(proto_start_t *s);
/* Encode op with args (borrowed; may be NULL; must not contain "op"). Returns
 * 0, RON_EINVAL for a bad op name, args holding "op", floats, or non-objects. */
int proto_start_encode(const char *op, const json_t *args, char **json_out, size_t *len_out);

/*
 * Write the ron-bus framing of a JSON part (docs/protocol/storage.md):
 * u32 len (big-endian) then the len bytes of json, into out, which must
 * hold 4 + len bytes. Returns 4 + len, where raw bytes may follow.
 */
size_t proto_json_frame(uint8_t *out, const char *json, uint32_t len);

/*
 * Read what proto_json_frame writes when nothing follows (a bus answer):
 * the u32 length, then exactly that many bytes of JSON holding an object.
 * flags go to json_loadb (JSON_REJECT_DUPLICATES, 0). Returns the object
 * (new; json_decref it), or NULL when payload (len bytes, borrowed) is
 * shorter than 4 bytes, its length does not match, or it is not a JSON
 * object.
 */
json_t *proto_json_unframe(const uint8_t *payload, size_t len, size_t flags);

/*
 * The first key of obj (a JSON object) that is neither except (may be NULL)
 * nor in allowed (NULL-terminated), or NULL when every key is allowed: strict
 * DTO checks. The key is a view into obj.
 */
const char *proto_json_unknown_key(const json_t *obj, const char *except,
                                   const char *const *allowed);

/*
 * Check that every key of s->args is one of allowed (a NULL-terminated list).
 * Returns 0, or RON_EJSON naming the first unknown field.
 */
int proto_args_only(const proto_start_t *s, const char *const *allowed, proto_err_t *err_out);
/* Read argument key as a string (a view into s->args, valid until close). A
 * missing key gives RON_EJSON when required, else 0 with *v_out = NULL. */
int proto_args_str(const proto_start_t *s, const char *key, bool required, const char **v_out,
                   proto_err_t *err_out);
/* Read argument key as a u64 decimal string. Missing and optional: 0, *v_out untouched. */
int proto_args_u64(const proto_start_t *s, const char *key, bool required, uint64_t *v_out,
                   proto_err_t *err_out);

/* A response's first RESP frame: {"content_type":"...","size":"<u64>"}, both optional. */
typedef struct {
    bool has_size;
    uint64_t size;                                 /* bytes of the body to follow */
    char content_type[PROTO_MAX_CONTENT_TYPE + 1]; /* "" = absent */
} proto_meta_t;

int proto_meta_encode(const proto_meta_t *m, char **json_out, size_t *len_out);
int proto_meta_decode(const char *json, size_t len, proto_meta_t *m_out, proto_err_t *err_out);

/*
 * The flow-control credit message (docs/protocol/oap1.md, "Flow control"):
 * {"frames":<n>,"op":"credit"} with 1 <= n <= PROTO_MAX_CREDIT.
 */
int proto_credit_encode(uint32_t frames, char **json_out, size_t *len_out);
int proto_credit_decode(const char *json, size_t len, uint32_t *frames_out, proto_err_t *err_out);

#endif
