/*
 * svc_passport.h - svc-passport: a key holder proves possession of an
 * Ed25519 key by signing a fresh, single-use challenge and receives a
 * short-lived capability (a ron-auth macaroon) for what ron-policy grants
 * that key; the capability root keys and the passport's own signing key
 * live in a keyring that rotates them by age and on demand.
 *
 * Flow (docs/protocol/passport.md): pass_challenge_issue gives 32 random
 * bytes valid PASS_CHALLENGE_TTL seconds, signed by the passport's current
 * signing key; the holder signs pass_redeem_message() (domain, node id,
 * challenge, its public key, requested ops, ttl, tenant) and pass_redeem
 * checks the challenge (issued here, unused, unexpired), the signature, and
 * the policy for every requested op (subject: the key as a tag, the tenant),
 * then mints a token. A passport given the node's guard (every node host
 * does) mints under the node's capability keys (guard_mint: kid r<gen>), so
 * its tokens verify at every boundary of the node (gateway, app port, bus
 * services, overlay) and revoke like any other; without one (a library user,
 * unit tests) it mints under its own `c<n>` keys, which only pass_verify and
 * pass_keyring_load_verifier know. With the guard the keyring holds no
 * `c<n>` key (those of an older keyring are dropped and wiped at open) and a
 * rotation asked for "cap" rotates nothing: the kernel rotates the node's.
 *
 * Keyring: one entry per key with a kid (`c<n>` capability root keys, `p<n>`
 * passport signing keys). The current key of a kind is replaced when it is
 * rotate_every seconds old (pass_tick) or on demand (pass_rotate); the one
 * it replaces keeps verifying for `grace` seconds, then is dropped and its
 * tokens fail with the `kid` reason. Persistent keyrings are one file sealed
 * with XChaCha20-Poly1305 under a key derived from the node identity key
 * (ron-kms, itself sealed under the node's root secret); amnesia keeps them
 * in RAM. Secrets live in sodium_malloc memory, wiped when dropped.
 *
 * Sans-I/O apart from the keyring file: every function takes `now` (unix
 * seconds), so tests drive a virtual clock. A pass_t is not thread-safe: one
 * loop thread owns it.
 */
#ifndef SVC_PASSPORT_H
#define SVC_PASSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ron_auth.h"
#include "ron_guard.h"
#include "ron_kms.h"
#include "ron_policy.h"

/* ---- limits ---- */
#define PASS_NONCE_LEN 32                 /* challenge bytes: 256 random bits */
#define PASS_CHALLENGE_TTL 60             /* s a challenge may be redeemed: one round trip + skew */
#define PASS_MAX_CHALLENGES 4096          /* outstanding challenges: bounds memory per node */
#define PASS_TTL_DEFAULT 3600u            /* s of a token when the request names no ttl */
#define PASS_TTL_MAX 86400u               /* s of a token at most: longer requests are clamped */
#define PASS_ROTATE_MAX (30 * 86400)      /* s a key may stay current (DESIGN.md §6) */
#define PASS_GRACE_DEFAULT (7 * 86400)    /* s a replaced key keeps verifying by default */
#define PASS_KEYRING_MAX AUTH_MAX_KEYS    /* keys of one kind: what one auth verifier holds */
#define PASS_MAX_REQ 2048u                /* JSON bytes of one request (a redeem is < 400) */
#define PASS_KEYRING_FILE_MAX 4096u       /* bytes of a keyring file: 16 keys of < 120 B + header */
#define PASS_MSG_LEN (24 + 32 + 32 + 32 + 4 + 4 + 1 + 16) /* pass_redeem_message bytes: 145 */
#define PASS_CHALLENGE_MSG_LEN (28 + 32 + 32 + 8)        /* pass_challenge_message bytes: 100 */

/* Domain separation strings (with their NUL) of the two signed messages. */
#define PASS_REDEEM_DOMAIN "ron-passport-redeem-v1"       /* 22 bytes + NUL, zero-padded to 24 */
#define PASS_CHALLENGE_DOMAIN "ron-passport-challenge-v1" /* 25 bytes + NUL, zero-padded to 28 */

/* The policy tag every passport evaluation carries (besides the key's hex). */
#define PASS_POLICY_TAG "passport"

/* What a keyring entry is for. */
typedef enum { PASS_KEY_CAP = 1, PASS_KEY_SIGN = 2 } pass_key_kind_t;

#define PASS_KEYS_ALL (1u << PASS_KEY_CAP | 1u << PASS_KEY_SIGN)

/* Why a redeem was refused (PASS_OK: a token was minted). */
typedef enum {
    PASS_OK = 0,
    PASS_DENY_FOREIGN,   /* RON_EPASSFOREIGN: not a challenge this passport issued */
    PASS_DENY_REPLAY,    /* RON_EPASSREPLAY: the challenge was already redeemed */
    PASS_DENY_EXPIRED,   /* RON_EPASSEXPIRED: the challenge is past its expiry */
    PASS_DENY_SIGNATURE, /* RON_EPASSSIG: the response is not signed by the key it names */
    PASS_DENY_POLICY,    /* RON_EPASSDENY: policy denies the key a requested op */
    PASS_REASON_COUNT
} pass_reason_t;

/* A challenge, as pass_challenge_issue gives it. */
typedef struct {
    uint8_t nonce[PASS_NONCE_LEN];
    int64_t expires;                 /* unix s; redeemable while now <= expires */
    uint8_t node_id[KMS_NODE_ID_LEN]; /* the node the response must name */
    char sign_kid[AUTH_MAX_KID + 1];  /* passport signing key that signed it */
    uint8_t sig[KMS_SIG_LEN];         /* Ed25519 over pass_challenge_message */
} pass_challenge_t;

/* A redeem request: the key holder's answer to a challenge. */
typedef struct {
    uint8_t nonce[PASS_NONCE_LEN]; /* the challenge */
    uint8_t pk[KMS_PK_LEN];        /* the holder's Ed25519 public key */
    uint32_t ops;                  /* mask of 1 << auth_op_t, not 0 */
    uint32_t ttl;                  /* s asked for; 0: PASS_TTL_DEFAULT; clamped to PASS_TTL_MAX */
    bool has_tenant;
    uint8_t tenant[AUTH_TENANT_LEN];
    uint8_t sig[KMS_SIG_LEN]; /* Ed25519 by pk over pass_redeem_message */
} pass_redeem_t;

/* The outcome of pass_redeem. */
typedef struct {
    pass_reason_t reason;
    char token[AUTH_MAX_TOKEN + 1]; /* NUL-terminated, when reason is PASS_OK */
    size_t token_len;
    char id[AUTH_ID_MAX + 1];   /* the token's identifier */
    char kid[AUTH_MAX_KID + 1]; /* capability root key it was minted under */
    int64_t expires;            /* unix s */
    uint32_t ttl;               /* s granted (after the clamp) */
    uint32_t ops;               /* mask granted (= requested) */
    uint32_t rate;              /* rate caveat from a policy obligation; 0 none */
    char rule_id[POL_MAX_ID_LEN + 1]; /* on PASS_DENY_POLICY: the deciding rule */
    char denied_op[8];                /* ... and the op it denied */
} pass_result_t;

/* One keyring entry, public part (pass_keys). */
typedef struct {
    pass_key_kind_t kind;
    char kid[AUTH_MAX_KID + 1];
    int64_t created; /* unix s */
    int64_t retired; /* unix s it stopped being current; 0: current */
    int64_t drop_at; /* unix s its grace ends (retired + grace); 0: current */
    uint8_t pk[KMS_PK_LEN]; /* PASS_KEY_SIGN: the public key; zero otherwise */
} pass_key_info_t;

/* How to open a passport. Pointers are borrowed; kms, policy and rev must
 * outlive the pass_t. */
typedef struct {
    const char *keyring_path;   /* keyring file; NULL: RAM only (amnesia) */
    const kms_keystore_t *kms;  /* node id, and the keyring's seal (identity key) */
    pol_store_t *policy;        /* grants (evaluated per requested op) */
    auth_revocation_t *rev;     /* may be NULL: epoch of minted ids, revocation when verifying */
    int64_t rotate_every;       /* s a key stays current; 0: PASS_ROTATE_MAX; 1..PASS_ROTATE_MAX */
    int64_t grace;              /* s a replaced key keeps verifying; 0: PASS_GRACE_DEFAULT */
    guard_t *guard;             /* the node's guard: mint under the node's keys (NULL: the
                                   passport's own c<n> keys) */
} pass_opts_t;

typedef struct pass pass_t;

/* ---- names ---- */

/* Short name of a reason: "ok", "foreign", "replay", "expired", "signature", "policy". */
const char *pass_reason_name(pass_reason_t r);

/* The RON_EPASS* code of a reason (0 for PASS_OK). */
int pass_reason_code(pass_reason_t r);

/* "cap" or "sign". */
const char *pass_key_kind_name(pass_key_kind_t k);

/* ---- messages (what each side signs) ---- */

/*
 * Write the bytes a key holder signs to redeem r (r->sig is ignored) at
 * node node_id into out: PASS_REDEEM_DOMAIN padded to 24 bytes, node id,
 * challenge, public key, ops (u32 BE), ttl (u32 BE), tenant flag (1 byte),
 * tenant (16 bytes, zero when none). Pure.
 */
void pass_redeem_message(const uint8_t node_id[static KMS_NODE_ID_LEN], const pass_redeem_t *r,
                         uint8_t out[static PASS_MSG_LEN]);

/*
 * Write the bytes the passport signs for challenge c into out:
 * PASS_CHALLENGE_DOMAIN padded to 28 bytes, node id, nonce, expires (u64 BE). Pure.
 */
void pass_challenge_message(const pass_challenge_t *c, uint8_t out[static PASS_CHALLENGE_MSG_LEN]);

/* ---- lifecycle ---- */

/*
 * Open a passport: load the keyring at o->keyring_path (unsealing it with a
 * key derived from the identity key when the key store is sealed), or
 * create it with one key of each kind (file mode 0600, directory 0700;
 * temp file, fsync, rename), then rotate keys past their age (as
 * pass_tick(now)). err (errcap bytes) gets a one-line reason. Returns 0 and
 * *p_out, or RON_EINVAL (options), RON_EPASSKEYRING (malformed, tampered
 * with or under another seal), RON_EKEYPERM (file open to others) or -errno.
 * Blocking (file I/O).
 */
int pass_new(const pass_opts_t *o, int64_t now, pass_t **p_out, char *err, size_t errcap);

/* Wipe every key and free p. NULL does nothing. */
void pass_free(pass_t *p);

/* The node id challenges and redeem messages name. */
void pass_node_id(const pass_t *p, uint8_t id_out[static KMS_NODE_ID_LEN]);

/* ---- challenge and redeem ---- */

/*
 * Issue a fresh challenge into *out, after sweeping challenges expired for
 * longer than PASS_CHALLENGE_TTL. Returns 0, or RON_EBUSY when
 * PASS_MAX_CHALLENGES are outstanding.
 */
int pass_challenge_issue(pass_t *p, int64_t now, pass_challenge_t *out);

/* Number of challenges held (issued or redeemed, not yet swept). */
size_t pass_challenge_count(const pass_t *p);

/*
 * Redeem r: the challenge must be one this passport issued (else foreign),
 * not redeemed before (replay: every attempt uses it up, so a wrong
 * signature cannot be retried), unexpired, and r->sig must be pk's signature
 * of pass_redeem_message; then every requested op must be allowed by policy
 * for {anonymous: false, tenant: r's, op, tags: PASS_POLICY_TAG and the
 * key's 64 lowercase hex}. On success mints a token under the current
 * capability root key with caveats `ops`, `expires = now + ttl`,
 * `not-before = now`, `tenant` (when asked) and `rate` (the smallest rate
 * obligation of the allowing rules). With the node's guard the token is
 * minted by guard_mint (the node's current kid and epoch, audited as
 * cap_issued with actor "passport:<first 16 hex of the key>") and then
 * attenuated with the same caveats, so it expires no later than now + ttl
 * by this clock either. Fills *out. Returns 0, the RON_EPASS* code of
 * out->reason, RON_EINVAL (no ops or ops outside AUTH_OPS_ALL), or a
 * minting error (ron-auth's or guard_mint's).
 */
int pass_redeem(pass_t *p, const pass_redeem_t *r, int64_t now, pass_result_t *out);

/* ---- keys ---- */

/*
 * Rotation by age: replace a current key that is rotate_every seconds old,
 * drop replaced keys whose grace ended, save the keyring when it changed.
 * Returns the number of keys added or dropped (0: nothing to do) or a
 * negative error of saving (the keyring in RAM still changed).
 */
int pass_tick(pass_t *p, int64_t now);

/*
 * Rotate on demand: give each kind in kinds (bits 1 << pass_key_kind_t) a
 * new current key; the replaced one enters its grace. When a kind already
 * holds PASS_KEYRING_MAX keys, its oldest replaced key is dropped first.
 * Saves the keyring. Returns 0, RON_EINVAL (no kind) or a save error.
 */
int pass_rotate(pass_t *p, unsigned kinds, int64_t now);

/* The public part of every key, current ones first, into keys[0..cap);
 * *n_out = how many (at most cap). */
void pass_keys(const pass_t *p, pass_key_info_t *keys, size_t cap, size_t *n_out);

/* The kid of the current key of kind (a view valid until the next rotation). */
const char *pass_current_kid(const pass_t *p, pass_key_kind_t kind);

/*
 * Verify token[0..len) for req with the capability root keys held now
 * (current and in grace) and opts.rev, as auth_verify does. A token of a
 * dropped key fails with RON_ECAPKID. Returns as auth_verify.
 */
int pass_verify(pass_t *p, const char *token, size_t len, const auth_request_t *req,
                auth_verdict_t *out);

/*
 * Load the capability root keys held now (current and in grace) into v,
 * another service's verifier, replacing keys of the same kid. Build a fresh
 * verifier after each rotation so dropped kids are gone. Returns 0 or an
 * auth_verifier_add_key error. Not thread-safe against verifies on v.
 */
int pass_verifier_load(const pass_t *p, auth_verifier_t *v);

/*
 * For services in other processes (the gateway, the app port): read the
 * keyring file at path (unsealed with kms' identity key, as pass_new does)
 * and add to v its capability root keys, current and in grace (a key
 * replaced at r is skipped once r + grace <= now; pass the passport's
 * grace). Read-only: never writes or rotates. Build a fresh verifier and
 * call this again after the passport rotates (it checks every minute).
 * Returns 0, RON_ENOTFOUND (no keyring yet),
 * RON_EPASSKEYRING, RON_EKEYPERM, -errno, or an auth_verifier_add_key error
 * (v then holds some of the keys). Blocking (file I/O).
 */
int pass_keyring_load_verifier(const char *path, const kms_keystore_t *kms, int64_t grace,
                               int64_t now, auth_verifier_t *v);

/* ---- the wire form (docs/protocol/passport.md) ---- */

typedef enum {
    PASS_REQ_CHALLENGE = 0,
    PASS_REQ_REDEEM,
    PASS_REQ_ROTATE,
    PASS_REQ_KEYS,
    PASS_REQ_COUNT
} pass_req_op_t;

/* A parsed request. */
typedef struct {
    pass_req_op_t op;
    pass_redeem_t redeem; /* PASS_REQ_REDEEM */
    unsigned kinds;       /* PASS_REQ_ROTATE: bits 1 << pass_key_kind_t */
} pass_request_t;

/*
 * Parse one request json[0..len) strictly into *out: an object with "op"
 * (challenge, redeem, rotate, keys) and exactly that op's fields (redeem:
 * "challenge" 64 hex, "pk" 64 hex, "ops" non-empty array of distinct op
 * names, "ttl" optional integer 1..2^32-1, "tenant" optional 32 lowercase
 * hex, "sig" 128 hex; rotate: "keys" optional array of distinct "cap",
 * "sign"). Duplicate keys, unknown fields and wrong types are refused.
 * field_out (may be NULL; 32 bytes) gets the field at fault and err
 * (errcap bytes) one sentence. Returns 0, RON_EPASSREQ or RON_ETOOBIG
 * (over PASS_MAX_REQ). Pure; the fuzz target's entry point.
 */
int pass_request_parse(const char *json, size_t len, pass_request_t *out, char field_out[32],
                       char *err, size_t errcap);

#endif
