/*
 * ron_auth.h - capabilities: macaroons in the v1 serialization (the format
 * libmacaroons, pymacaroons, Go's macaroon and macaroons.js read and
 * extend), minted with libmacaroons, attenuated and verified by our own
 * strict, allocation-free codec; revocation by identifier and by epoch; a
 * bounded verdict cache for the hot path.
 *
 * A token is base64url (padding optional) of v1 packets `LLLLkey value\n`
 * (LLLL = 4 hex digits, the packet's whole length): `location` (optional),
 * `identifier`, one `cid` per first-party caveat, `signature` (32 bytes).
 * signature = HMAC-SHA256 chained from the derived root key over the
 * identifier and then each caveat. The identifier is
 * `ron1:<kid>:<epoch>:<32 hex>` and every caveat is `key = value` with a key
 * from DESIGN.md §6; all caveats must hold, so adding one can only narrow.
 * An `ancestor = <32 hex>` caveat names the nonce of a token this one was
 * minted from (its lineage): revoking that identifier revokes this token too.
 * The format, caveats, ops and errors: docs/protocol/capabilities.md.
 *
 * One call checks a request: auth_verify(verifier, token, request) gives
 * allow, or a deny reason and its RON_ECAP* code.
 *
 * Thread rules: auth_verify, auth_grant_check and every auth_revocation_*
 * function are thread-safe. Keys are added to a verifier before it is
 * shared (auth_verifier_add_key is not safe against concurrent verifies).
 */
#ifndef RON_AUTH_H
#define RON_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ---- */
#define AUTH_MAX_TOKEN 4096      /* base64 chars of a token: it rides in an HTTP header */
#define AUTH_MAX_RAW 3072        /* decoded bytes: AUTH_MAX_TOKEN * 3 / 4 */
#define AUTH_MAX_CAVEATS 32      /* first-party caveats: bounds verification to 33 HMACs */
#define AUTH_MAX_CAVEAT_LEN 255  /* bytes of one caveat (`key = value`) */
#define AUTH_MAX_LOCATION 255    /* bytes of the location hint */
#define AUTH_MAX_KID 16          /* bytes of a key id: [a-z0-9] */
#define AUTH_ID_MAX 64           /* bytes of an identifier: ron1: + kid + epoch + 32 hex */
#define AUTH_NONCE_LEN 16        /* the identifier's 128 random bits */
#define AUTH_SIG_LEN 32          /* HMAC-SHA256 */
#define AUTH_TENANT_LEN 16       /* tenant caveat: 32 hex digits */
#define AUTH_MAX_NAME_PREFIX 253 /* bytes of a name-prefix value (a DNS-length name) */
#define AUTH_MAX_RATE 1000000u   /* requests per second in a rate caveat */
#define AUTH_SKEW 60             /* seconds of clock skew allowed on expires and not-before */
#define AUTH_MAX_KEYS 8          /* root keys (kids) one verifier holds: current + grace */
#define AUTH_MIN_KEY 32          /* bytes of a root key at least */
#define AUTH_MAX_KEY 64          /* bytes of a root key at most */
#define AUTH_CACHE_TTL_MS 1000  /* a cached verdict lives at most this long (revocation converges) \
                                 */
#define AUTH_CACHE_MAX 65536    /* cache slots at most */
#define AUTH_REVOKE_MAX 1000000 /* revoked identifiers one set may hold */
#define AUTH_EPOCH_UNKNOWN UINT64_MAX /* a revoked identifier whose epoch is not known */
#define AUTH_LOCATION "ron"     /* location hint of minted tokens */
#define AUTH_MAX_ANCESTORS 8    /* distinct `ancestor` caveats one token may carry */

/* DESIGN.md §6's `ops` vocabulary, as bits of a mask. HEAD counts as get. */
typedef enum {
    AUTH_OP_GET = 0,
    AUTH_OP_PUT,
    AUTH_OP_PIN,
    AUTH_OP_NAME,
    AUTH_OP_SEND,
    AUTH_OP_RECV,
    AUTH_OP_ADMIN,
    AUTH_OP_MINT,
    AUTH_OP_COUNT
} auth_op_t;

#define AUTH_OPS_ALL ((1u << AUTH_OP_COUNT) - 1u)

/* Why a token was refused (AUTH_OK: allowed). Each maps to a RON_ECAP* code. */
typedef enum {
    AUTH_OK = 0,
    AUTH_DENY_FORMAT, /* RON_ECAPFORMAT: not base64url of v1 packets, a limit, a bad identifier */
    AUTH_DENY_CAVEAT, /* RON_ECAPCAVEAT: a caveat with an unknown key or a malformed value */
    AUTH_DENY_KID,    /* RON_ECAPKID: the identifier names a key the verifier lacks */
    AUTH_DENY_SIGNATURE, /* RON_ECAPSIG: the HMAC chain does not end in the signature */
    AUTH_DENY_REVOKED,   /* RON_ECAPREVOKED: its identifier is revoked */
    AUTH_DENY_EPOCH,     /* RON_ECAPREVOKED: its epoch is below the current one */
    AUTH_DENY_EXPIRED,   /* RON_ECAPEXPIRED: now > expires + AUTH_SKEW */
    AUTH_DENY_NOT_YET,   /* RON_ECAPEXPIRED: now < not-before - AUTH_SKEW */
    AUTH_DENY_OP,        /* RON_ECAPDENY: the op is outside the ops caveats' intersection */
    AUTH_DENY_TENANT,    /* RON_ECAPDENY: the request's tenant is not the caveat's */
    AUTH_DENY_SIZE,      /* RON_ECAPDENY: the request's size exceeds max-bytes */
    AUTH_DENY_PREFIX,    /* RON_ECAPDENY: the object address lacks the prefix */
    AUTH_DENY_NAME,      /* RON_ECAPDENY: the name lacks the name-prefix */
    AUTH_REASON_COUNT
} auth_reason_t;

/* Request constraints a verification left to the host (bits of auth_verdict_t.pending). */
#define AUTH_PENDING_SIZE 1u /* max-bytes with request size unknown: enforce grant.max_bytes */
#define AUTH_PENDING_ADDR 2u /* prefix with no address yet: auth_grant_check once it is known */
#define AUTH_PENDING_NAME 4u /* name-prefix with no name in the request */
#define AUTH_PENDING_RATE 8u /* a rate caveat: the host keeps the token bucket */

#define AUTH_SIZE_UNKNOWN UINT64_MAX

/* One request, as the enforcing service sees it. Everything is borrowed. */
typedef struct {
    auth_op_t op;
    bool has_tenant; /* the request names a tenant (OAP/1 START) */
    uint8_t tenant[AUTH_TENANT_LEN];
    const char *addr; /* "b3:<64 hex>" the request names, or NULL (not known yet) */
    uint64_t size;    /* bytes written (put) or served; AUTH_SIZE_UNKNOWN if unknown */
    const char *name; /* the name published or resolved, or NULL */
    int64_t now;      /* unix seconds */
} auth_request_t;

/* What a token allows: its caveats folded together (all must hold). */
typedef struct {
    uint32_t ops;     /* mask of 1 << auth_op_t: intersection of ops caveats */
    bool has_tenant;  /* a tenant caveat: the host acts as this tenant */
    uint8_t conflict; /* auth_reason_t: two caveats contradict (two tenants,
                         disjoint prefixes), so nothing is allowed; 0 none */
    uint8_t tenant[AUTH_TENANT_LEN];
    int64_t not_before;      /* unix s, largest not-before; INT64_MIN when none */
    int64_t expires;         /* unix s, smallest expires; INT64_MAX when none */
    uint64_t max_bytes;      /* smallest max-bytes; UINT64_MAX when none */
    uint32_t rate;           /* smallest rate (per s); 0 when none */
    uint8_t prefix_len;      /* hex digits of the longest prefix caveat (0: none) */
    char prefix[65];         /* those digits, NUL-terminated (without "b3:") */
    uint8_t name_prefix_len; /* bytes of the longest name-prefix (0: none) */
    char name_prefix[AUTH_MAX_NAME_PREFIX + 1];
    uint8_t n_ancestors; /* distinct `ancestor` caveats: the token dies when any is revoked */
    uint8_t ancestors[AUTH_MAX_ANCESTORS][AUTH_NONCE_LEN]; /* their nonces, in caveat order */
} auth_grant_t;

/* The parts of an identifier `ron1:<kid>:<epoch>:<32 hex>`. */
typedef struct {
    char kid[AUTH_MAX_KID + 1];
    uint64_t epoch;
    uint8_t nonce[AUTH_NONCE_LEN];
} auth_id_t;

/* The outcome of auth_verify. */
typedef struct {
    auth_reason_t reason; /* AUTH_OK when allowed */
    int caveat;           /* index of the caveat at fault, or -1 */
    unsigned pending;     /* AUTH_PENDING_* bits, when allowed */
    bool cached;          /* the signature check came from the verdict cache */
    auth_id_t id;         /* valid from AUTH_DENY_KID on (the identifier parsed) */
    auth_grant_t grant;   /* valid when allowed */
} auth_verdict_t;

/* A parsed token (auth_token_parse): copies, for tools and tests. */
typedef struct {
    char location[AUTH_MAX_LOCATION + 1];
    char id_str[AUTH_ID_MAX + 1];
    auth_id_t id;
    size_t n_caveats;
    char caveats[AUTH_MAX_CAVEATS][AUTH_MAX_CAVEAT_LEN + 1];
    uint8_t sig[AUTH_SIG_LEN];
    auth_grant_t grant; /* the caveats folded (valid when parse returned 0) */
} auth_token_t;

typedef struct auth_verifier auth_verifier_t;
typedef struct auth_revocation auth_revocation_t;

/* ---- names ---- */

/* Name of op ("get", ...), or "?" when out of range. */
const char *auth_op_name(auth_op_t op);

/* Parse an op name (exact, lowercase) into *op_out. Returns 0 or RON_EINVAL. */
int auth_op_parse(const char *s, size_t len, auth_op_t *op_out);

/* Short name of a reason ("ok", "signature", "expired", ...). */
const char *auth_reason_name(auth_reason_t r);

/* The RON_ECAP* code of a reason (0 for AUTH_OK). */
int auth_reason_code(auth_reason_t r);

/* ---- identifiers and caveats ---- */

/*
 * Write a fresh identifier `ron1:<kid>:<epoch>:<32 random hex>` into out
 * (NUL-terminated, at most AUTH_ID_MAX bytes). Returns 0, or RON_EINVAL if
 * kid is not 1..AUTH_MAX_KID bytes of [a-z0-9].
 */
int auth_id_new(char out[static AUTH_ID_MAX + 1], const char *kid, uint64_t epoch);

/*
 * Parse an identifier s[0..len) into *out. Strict: prefix `ron1:`, kid of
 * [a-z0-9], epoch in decimal without leading zeros, 32 lowercase hex.
 * Returns 0 or RON_ECAPFORMAT.
 */
int auth_id_parse(const char *s, size_t len, auth_id_t *out);

/*
 * Check one caveat s[0..len) and fold it into *g (start from
 * auth_grant_init). Returns 0, or RON_ECAPCAVEAT for an unknown key or a
 * malformed value (the grammar is docs/protocol/capabilities.md).
 */
int auth_caveat_apply(auth_grant_t *g, const char *s, size_t len);

/* Set *g to the grant of a token without caveats: everything allowed. */
void auth_grant_init(auth_grant_t *g);

/*
 * Check req against the folded caveats g alone (no signature, revocation or
 * identifier): what auth_verify does after the signature holds. pending_out
 * (may be NULL) gets the AUTH_PENDING_* constraints left to the host.
 * Returns AUTH_OK or the first failing reason. Thread-safe.
 */
auth_reason_t auth_grant_check(const auth_grant_t *g, const auth_request_t *req,
                               unsigned *pending_out);

/* ---- tokens ---- */

/*
 * Parse token[0..len) strictly into *out (caveats folded into out->grant)
 * without checking its signature. Returns 0, RON_ECAPFORMAT (encoding,
 * packets, limits, identifier, third-party caveats) or RON_ECAPCAVEAT.
 */
int auth_token_parse(const char *token, size_t len, auth_token_t *out);

/*
 * Mint a token with libmacaroons: identifier id (from auth_id_new), root key
 * key[0..key_len) (AUTH_MIN_KEY..AUTH_MAX_KEY bytes), location AUTH_LOCATION,
 * then each of the n caveats in order (each checked first). Writes the
 * base64url token, NUL-terminated, into out[0..cap). Returns its length,
 * RON_EINVAL (key size, identifier), RON_ECAPCAVEAT, RON_ECAPFORMAT (too
 * many caveats), RON_ETOOBIG (cap too small or token over AUTH_MAX_TOKEN)
 * or -ENOMEM.
 */
long auth_mint(const uint8_t *key, size_t key_len, const char *id, const char *const *caveats,
               size_t n, char *out, size_t cap);

/*
 * Attenuate token[0..len) offline: append the n caveats (each checked),
 * chaining the signature, and write the new token, NUL-terminated, into
 * out[0..cap). No key is needed; the result can only allow less. Returns
 * the new length, RON_ECAPFORMAT (malformed token or more than
 * AUTH_MAX_CAVEATS in all), RON_ECAPCAVEAT or RON_ETOOBIG.
 */
long auth_attenuate(const char *token, size_t len, const char *const *caveats, size_t n, char *out,
                    size_t cap);

/* ---- revocation ---- */

/*
 * Create a revocation set holding at most max identifiers (1..AUTH_REVOKE_MAX)
 * and the epoch 0. Returns new, or NULL if max is out of range.
 */
auth_revocation_t *auth_revocation_new(size_t max);

/* Free r. NULL does nothing. No verifier may still use it. */
void auth_revocation_free(auth_revocation_t *r);

/*
 * Revoke the identifier with this nonce (a token and every attenuation of
 * it) until unix time `until` (0: for ever; after until + AUTH_SKEW the
 * entry may be dropped, since the token has expired by then). When the set
 * is full, entries past their until (by now) are dropped first. Returns 0
 * (also when already revoked; until is then raised), or RON_ECAPFULL.
 */
int auth_revocation_add(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN],
                        int64_t until, int64_t now);

/*
 * As auth_revocation_add, for an identifier of this epoch: an epoch raise
 * past it drops the entry (the epoch revokes its token anyway), so a raise
 * frees the set. AUTH_EPOCH_UNKNOWN (what auth_revocation_add uses): never
 * dropped by a raise. Re-adding keeps the later epoch and until.
 */
int auth_revocation_add_epoch(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN],
                              uint64_t epoch, int64_t until, int64_t now);

/* True if the nonce is revoked. */
bool auth_revocation_has(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN]);

/* Number of revoked identifiers held. */
size_t auth_revocation_count(auth_revocation_t *r);

/*
 * Raise the epoch to epoch: every token whose identifier's epoch is lower is
 * revoked, and revoked identifiers added with a lower epoch are dropped. A
 * lower value changes nothing. Returns the epoch now in force.
 */
uint64_t auth_revocation_raise_epoch(auth_revocation_t *r, uint64_t epoch);

/* The epoch in force. */
uint64_t auth_revocation_epoch(auth_revocation_t *r);

/* ---- verification ---- */

/*
 * Create a verifier consulting rev (borrowed, may be NULL: nothing revoked)
 * with a verdict cache of cache_slots entries (0: no cache; at most
 * AUTH_CACHE_MAX). The cache remembers, for at most AUTH_CACHE_TTL_MS, that
 * a token's signature holds and what it grants; revocation, time and the
 * request are checked on every call. Returns new, or NULL if cache_slots is
 * too large.
 */
auth_verifier_t *auth_verifier_new(auth_revocation_t *rev, size_t cache_slots);

/* Free v and wipe its keys. NULL does nothing. */
void auth_verifier_free(auth_verifier_t *v);

/*
 * Add the root key key[0..key_len) under kid (the derived key is kept in
 * sodium_malloc memory). Replaces a key of the same kid. Returns 0,
 * RON_EINVAL (kid syntax, key size) or RON_EBUSY (AUTH_MAX_KEYS held).
 * Not thread-safe against auth_verify.
 */
int auth_verifier_add_key(auth_verifier_t *v, const char *kid, const uint8_t *key, size_t key_len);

/* Drop the key of kid (its grace ended). Returns 0 or RON_ENOTFOUND. Not thread-safe. */
int auth_verifier_remove_key(auth_verifier_t *v, const char *kid);

/*
 * Check token[0..len) for req: parse strictly, look up the identifier's key,
 * check the HMAC chain (or find it in the cache), revocation by identifier
 * (its own nonce and every `ancestor` caveat's: AUTH_DENY_REVOKED) and epoch, every caveat (time with AUTH_SKEW) and the request against the
 * folded grant. Fills *out. Returns 0 (allowed), or the RON_ECAP* code of
 * out->reason: RON_ECAPFORMAT, RON_ECAPCAVEAT, RON_ECAPKID, RON_ECAPSIG,
 * RON_ECAPREVOKED, RON_ECAPEXPIRED or RON_ECAPDENY. Allocates nothing.
 * Thread-safe.
 */
int auth_verify(auth_verifier_t *v, const char *token, size_t len, const auth_request_t *req,
                auth_verdict_t *out);

/* Verdict cache counters (hits, misses) since creation. Thread-safe. */
void auth_verifier_cache_stats(auth_verifier_t *v, uint64_t *hits_out, uint64_t *misses_out);

#endif
