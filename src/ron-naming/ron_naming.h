/*
 * ron_naming.h - content addresses, human names and signed name records.
 * A pure library: no I/O, no global state, every function thread-safe.
 *
 *   address  "b3:" + 64 lowercase hex = BLAKE3-256 of an object's bytes;
 *            uppercase is rejected, not normalized, so each object has one
 *            spelling (URLs, ETags, caches and capability prefixes agree).
 *   name     IDNA ASCII, lowercase, labels [a-z0-9-]{1,63} without an edge
 *            hyphen, whole name <= 253 bytes, at least two labels, last
 *            label not all digits. Unicode labels are mapped (UTS #46
 *            non-transitional, NFC) and converted to xn-- form by libidn2;
 *            xn-- labels given in ASCII must round-trip.
 *   record   {name, addr, seq, ts, owner key, [new owner key], signature},
 *            Ed25519 over domain-separated canonical bytes (see
 *            docs/protocol/naming.md for the byte table and JSON form).
 *
 * Errors carry a name_err_t naming the label (0-based index) or byte offset
 * at fault and a sentence a user can act on.
 */
#ifndef RON_NAMING_H
#define RON_NAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- limits ---- */
#define NAME_ADDR_LEN 32u       /* BLAKE3-256 digest */
#define NAME_ADDR_TEXT_LEN 67  /* "b3:" + 64 hex, without the NUL */
#define NAME_MAX_LEN 253       /* DNS limit on a name in text form */
#define NAME_MAX_LABEL 63      /* DNS limit on one label */
#define NAME_MAX_INPUT 1024    /* bytes of (Unicode) input normalization reads: bounds idn2 work */
#define NAME_KEY_LEN 32        /* Ed25519 public key */
#define NAME_SECRET_KEY_LEN 64 /* libsodium Ed25519 secret key (seed || public key) */
#define NAME_SIG_LEN 64        /* Ed25519 signature */
#define NAME_MAX_FUTURE_S 300  /* a record's ts may lead our clock by at most 5 min (skew) */
#define NAME_KEY_ALG_ED25519 1 /* algorithm byte of keys in the canonical bytes */
#define NAME_DOMAIN "ron-name-v1" /* signing domain; NUL-terminated in the bytes */
#define NAME_DOMAIN_LEN 12        /* strlen(NAME_DOMAIN) + its NUL */
/* Canonical record bytes: domain, name length + name, addr, seq, ts, owner
 * alg + key, transfer flag [+ alg + key]; the binary record adds the signature. */
#define NAME_SIGNING_MAX                                                                           \
    (NAME_DOMAIN_LEN + 1 + NAME_MAX_LEN + NAME_ADDR_LEN + 8 + 8 + 1 + NAME_KEY_LEN + 1 + 1 +       \
     NAME_KEY_LEN)
#define NAME_RECORD_MAX (NAME_SIGNING_MAX + NAME_SIG_LEN)
#define NAME_JSON_MAX 1024 /* a record's JSON form is < 700 bytes; more is refused */

/* What went wrong, precisely. code is the RON_E* value also returned. */
typedef struct {
    int code;      /* RON_EADDR, RON_ENAME, RON_ERECORD, RON_ENAMESIG, ... */
    int label;     /* 0-based index of the offending label, or -1 */
    long pos;      /* 0-based byte offset in the input at fault, or -1 */
    char msg[200]; /* one sentence; labels are counted from 1 in it */
} name_err_t;

/* ---- addresses ---- */

typedef struct {
    uint8_t b[NAME_ADDR_LEN];
} name_addr_t;

/* A routing prefix "b3:" + 1..64 lowercase hex digits (DESIGN.md §6 caveat
 * `prefix = b3:<hex prefix>`, spec OAP1 §7). */
typedef struct {
    uint8_t b[NAME_ADDR_LEN]; /* digits packed high nibble first; unused nibbles 0 */
    uint8_t nibbles;          /* 1..64 */
} name_addr_prefix_t;

/*
 * Parse s[0..len) as "b3:" + exactly 64 lowercase hex digits into addr_out.
 * Returns 0 or RON_EADDR with err (may be NULL) naming the offset and the
 * character at fault: a missing or uppercase "b3:" prefix, an uppercase hex
 * digit, a non-hex character, or the wrong number of digits.
 */
int name_addr_parse(name_addr_t *addr_out, const char *s, size_t len, name_err_t *err);

/* Write "b3:<64 lowercase hex>" and a NUL into out. */
void name_addr_format(const name_addr_t *addr, char out[static NAME_ADDR_TEXT_LEN + 1]);

/* Parse "b3:" + 1..64 lowercase hex digits. Returns 0 or RON_EADDR (err as above). */
int name_addr_prefix_parse(name_addr_prefix_t *prefix_out, const char *s, size_t len,
                           name_err_t *err);

/* Does addr start with prefix? */
bool name_addr_prefix_matches(const name_addr_prefix_t *prefix, const name_addr_t *addr);

/* ---- names ---- */

/*
 * Normalize in[0..len) (UTF-8) to the canonical name written into out
 * (NUL-terminated, at most NAME_MAX_LEN bytes). Labels are separated by '.'
 * or by U+3002, U+FF0E, U+FF61 (RFC 3490 §3.1). ASCII is lowercased; a
 * label with non-ASCII is converted by libidn2 (NFC, UTS #46
 * non-transitional mapping, IDNA2008 rules) to its xn-- form; an xn-- label
 * must be a valid A-label. Returns 0 or RON_ENAME with err (may be NULL)
 * naming the label and reason: empty label, character not allowed, edge
 * hyphen, reserved "??--" label, bad A-label, unconvertible Unicode, label
 * over 63 or name over 253 bytes, a single label, an all-digit last label.
 */
int name_normalize(const char *in, size_t len, char out[static NAME_MAX_LEN + 1], name_err_t *err);

/* Is name[0..len) already canonical (normalize would return it unchanged)?
 * Returns 0, or RON_ENAME with err saying why or what the canonical form is. */
int name_check(const char *name, size_t len, name_err_t *err);

/* ---- records ---- */

typedef struct {
    char name[NAME_MAX_LEN + 1];     /* canonical, NUL-terminated */
    name_addr_t addr;                /* what the name points to */
    uint64_t seq;                    /* strictly increases per name */
    uint64_t ts;                     /* unix seconds when signed; informational but bounded */
    uint8_t owner[NAME_KEY_LEN];     /* signer: the key the name is bound to */
    bool has_new_owner;              /* a transfer: new_owner is the key from now on */
    uint8_t new_owner[NAME_KEY_LEN]; /* != owner when has_new_owner */
    uint8_t sig[NAME_SIG_LEN];       /* Ed25519 by owner over name_record_signing_bytes */
} name_record_t;

/* The key that may publish the next record after rec: new_owner for a
 * transfer, else owner. Returns a view into rec. */
const uint8_t *name_record_next_owner(const name_record_t *rec);

/*
 * Write rec's canonical signing bytes (without sig) into buf (cap >=
 * NAME_SIGNING_MAX always suffices). Returns their length, or RON_ERECORD
 * when rec->name is not canonical or a transfer names its owner, or
 * RON_ETOOBIG when cap is too small.
 */
ssize_t name_record_signing_bytes(const name_record_t *rec, uint8_t *buf, size_t cap);

/*
 * Set rec->owner to sk's public key and rec->sig to the Ed25519 signature
 * of rec's signing bytes. sk is a libsodium Ed25519 secret key (borrowed;
 * keep it in sodium_malloc memory). Returns 0, RON_ERECORD (as above) or
 * RON_EAUTH if libsodium cannot initialize.
 */
int name_record_sign(name_record_t *rec, const uint8_t sk[static NAME_SECRET_KEY_LEN]);

/* Check rec's syntax and signature by rec->owner. Returns 0, RON_ERECORD,
 * RON_ENAMESIG (or RON_EAUTH if libsodium cannot initialize), with err
 * (may be NULL). */
int name_record_verify(const name_record_t *rec, name_err_t *err);

/*
 * Binary form (storage, ron-bus, DHT): the signing bytes followed by the
 * 64-byte signature. encode writes at most NAME_RECORD_MAX bytes and returns
 * the length, RON_ERECORD (rec malformed) or RON_ETOOBIG (cap). decode
 * accepts exactly one record of exactly len bytes (no signature check) and
 * returns 0 or RON_ERECORD with err naming the offset.
 */
ssize_t name_record_encode(const name_record_t *rec, uint8_t *buf, size_t cap);
int name_record_decode(name_record_t *rec_out, const uint8_t *buf, size_t len, name_err_t *err);

/*
 * JSON form (HTTP and app port), compact, keys in this order:
 *   {"name":"photos.alice","addr":"b3:<64 hex>","seq":"<u64>","ts":"<u64>",
 *    "owner":"ed25519:<64 hex>"[,"new_owner":"ed25519:<64 hex>"],
 *    "sig":"<128 hex>"}
 * to_json returns a new NUL-terminated string (free() it) or NULL when rec
 * is malformed. from_json is strict: duplicate or unknown keys, missing
 * keys, non-string values, numbers instead of decimal strings, leading
 * zeros, uppercase hex and a non-canonical name are refused with
 * RON_ERECORD (RON_EJSON for malformed JSON, RON_ETOOBIG over
 * NAME_JSON_MAX), err naming the field. No signature check.
 */
char *name_record_to_json(const name_record_t *rec);
/*
 * The same JSON form as a jansson object (new; json_decref it), for the bus
 * services and clients that put a record inside their own JSON, or NULL
 * when rec is malformed. struct json_t is jansson's json_t.
 */
struct json_t *name_record_to_object(const name_record_t *rec);
/*
 * name_record_from_json() of o (borrowed), a record inside a bus service's
 * or client's own JSON: the same checks and errors, RON_ERECORD when o is
 * not an object.
 */
int name_record_from_object(name_record_t *rec_out, const struct json_t *o, name_err_t *err);
int name_record_from_json(name_record_t *rec_out, const char *json, size_t len, name_err_t *err);

/* ---- acceptance ---- */

/*
 * Check a candidate on its own: syntax, signature by its owner, and ts <=
 * now + NAME_MAX_FUTURE_S (now in unix seconds). Returns 0, RON_ERECORD,
 * RON_ENAMESIG or RON_ENAMEFUTURE with err (may be NULL).
 */
int name_record_validate(const name_record_t *cand, int64_t now, name_err_t *err);

/*
 * Compare an already validated candidate with the current record of the
 * same name (cur NULL: none yet, and any candidate is accepted). Accepts
 * when cand->owner is name_record_next_owner(cur) and cand->seq > cur->seq.
 * Returns 0, RON_EINVAL (names differ: caller bug), RON_ENAMEOWNER (another
 * key), RON_ENAMEDUP (byte-identical to cur: callers may treat it as done)
 * or RON_ENAMESTALE (seq not above cur's), with err (may be NULL).
 */
int name_record_supersedes(const name_record_t *cur, const name_record_t *cand, name_err_t *err);

/* The acceptance rule: name_record_validate, then name_record_supersedes. */
int name_record_accept(const name_record_t *cur, const name_record_t *cand, int64_t now,
                       name_err_t *err);

#endif
