/*
 * svc_registry.h - svc-registry: the node's signed descriptor sets (policy
 * bundle hash, bootstrap peers, trusted keys) under M-of-N multi-signature
 * governance, kept as a hash chain of versions.
 *
 * Why this shape: a descriptor set decides whom the node trusts, so no single
 * key may change it. Each version names the BLAKE3 hash of the version before
 * it and carries the Ed25519 approvals of at least M of the N signers in force
 * at the version before (the signer set and M are themselves part of the
 * committed state, so changing them needs M of the current signers). Anyone
 * holding the log can replay it from genesis and find an edited, dropped or
 * reordered version; with the expected head (version and hash) a cut tail is
 * found too. Writes go propose -> approve -> commit; a commit whose base is no
 * longer the head is refused, so no update is lost. Committed versions live in
 * an append-only file (one canonical JSON line per version, fdatasync before a
 * commit is acknowledged) or in RAM (amnesia); open proposals live in RAM only.
 * Reads keep working while writes are refused (read-only store, full log, or a
 * failed write). The formats are in docs/protocol/registry.md.
 *
 * Thread rule: every reg_t function takes the registry's own mutex, so any
 * thread may call them; a commit holds it across its fdatasync.
 */
#ifndef SVC_REGISTRY_H
#define SVC_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ---- */
#define REG_MAX_DESC (64u << 10) /* canonical descriptor bytes (a full one is < 40 KiB) */
#define REG_MAX_RECORD (REG_MAX_DESC + 4096u) /* one log line: descriptor + 16 approvals */
#define REG_MAX_SIGNERS 16u                   /* N: governance keys; more is not governance */
#define REG_MAX_REVOKED 64u                   /* revoked keys kept forever (cumulative) */
#define REG_MAX_PEERS 64u                     /* bootstrap peers */
#define REG_MAX_PEER_LEN 255u                 /* "[ID@]HOST:PORT" */
#define REG_MAX_TRUSTED 64u                   /* trusted keys */
#define REG_MAX_KEYNAME 64u                   /* trusted key name, [a-z0-9._-] */
#define REG_MAX_PROPOSALS 32u /* open proposals; stale, then the oldest unapproved, evicted */
#define REG_DEFAULT_MAX_LOG (16u << 20) /* committed log bytes (all kept in RAM for reads) */
#define REG_MAX_LOG_HARD (256u << 20)   /* a log file larger than this is not opened */

#define REG_KEY_LEN 32u  /* Ed25519 public key */
#define REG_SK_LEN 64u   /* Ed25519 secret key (libsodium layout) */
#define REG_SIG_LEN 64u  /* Ed25519 signature */
#define REG_HASH_LEN 32u /* BLAKE3-256 */
#define REG_FORMAT 1u    /* the descriptor's "v" */

/* Domain separation of approvals: signed bytes = this string, its NUL, then
 * the 32-byte proposal id (BLAKE3 of the canonical descriptor). */
#define REG_SIGN_DOMAIN "ron-registry/v1/approve"
#define REG_SIGN_MSG_LEN (sizeof REG_SIGN_DOMAIN + REG_HASH_LEN)

/* A short human reason for a refusal (parsers and verifiers fill it). */
typedef struct {
    char msg[160];
} reg_err_t;

typedef struct {
    char name[REG_MAX_KEYNAME + 1];
    uint8_t pk[REG_KEY_LEN];
} reg_trusted_t;

/* One descriptor set, parsed. About 25 KiB: keep it on the heap. */
typedef struct {
    uint64_t version;             /* >= 1; head + 1 when proposed */
    uint8_t prev[REG_HASH_LEN];   /* hash of version - 1; zeros for version 1 */
    uint8_t policy[REG_HASH_LEN]; /* BLAKE3 address of the policy bundle */
    size_t n_peers;
    char peers[REG_MAX_PEERS][REG_MAX_PEER_LEN + 1];
    size_t n_trusted;
    reg_trusted_t trusted[REG_MAX_TRUSTED];
    uint32_t threshold;                            /* M: 1 <= M <= n_signers */
    size_t n_signers;                              /* N */
    uint8_t signers[REG_MAX_SIGNERS][REG_KEY_LEN]; /* distinct */
    size_t n_revoked;
    uint8_t revoked[REG_MAX_REVOKED][REG_KEY_LEN]; /* distinct, disjoint from signers */
} reg_desc_t;

/* ---- descriptor sets (pure functions, any thread) ---- */

/*
 * Parse a descriptor set from JSON (len bytes, any key order and
 * whitespace) into d_out: exactly the fields v, version, prev, policy,
 * bootstrap, trusted_keys, signers, revoked; unknown or duplicate keys,
 * floats, out-of-range numbers and over-limit arrays are refused. Returns 0,
 * RON_EREGDESC (err says which field) or RON_EREGLIMIT.
 */
int reg_desc_parse(const char *json, size_t len, reg_desc_t *d_out, reg_err_t *err);

/*
 * The canonical bytes of d (compact JSON, fixed key order, lowercase hex):
 * what is hashed and what the log stores. Returns new (*out_len bytes, NUL
 * terminated) in *out, or RON_EREGDESC when d breaks a rule reg_desc_parse
 * checks. The caller frees *out.
 */
int reg_desc_encode(const reg_desc_t *d, char **out, size_t *out_len);

/* The id of d: BLAKE3 of its canonical bytes (also the next version's prev).
 * Returns 0 or RON_EREGDESC. */
int reg_desc_id(const reg_desc_t *d, uint8_t id_out[static REG_HASH_LEN]);

/* The bytes an approval signs for proposal id: REG_SIGN_DOMAIN, NUL, id. */
void reg_sign_message(const uint8_t id[static REG_HASH_LEN],
                      uint8_t msg_out[static REG_SIGN_MSG_LEN]);

/* Sign proposal id with sk (borrowed, libsodium layout). Returns 0 or RON_EAUTH. */
int reg_approval_sign(const uint8_t id[static REG_HASH_LEN], const uint8_t sk[static REG_SK_LEN],
                      uint8_t sig_out[static REG_SIG_LEN]);

/* Whether sig is pk's approval of proposal id. */
bool reg_approval_verifies(const uint8_t id[static REG_HASH_LEN],
                           const uint8_t pk[static REG_KEY_LEN],
                           const uint8_t sig[static REG_SIG_LEN]);

/* ---- verification of a whole log ---- */

typedef struct {
    uint64_t versions;          /* versions that verified (the good prefix) */
    uint8_t head[REG_HASH_LEN]; /* hash of the last good version (zeros: none) */
    size_t good_len;            /* bytes of the good prefix */
    uint64_t bad_version;       /* the version where it fails (0: none) */
    bool torn;                  /* the failure is an incomplete last line */
    reg_err_t err;              /* what is wrong with bad_version */
} reg_report_t;

/*
 * Replay a log (len bytes, one record line per version) from genesis: each
 * line canonical, versions 1, 2, ... in order, each prev the hash of the
 * line before, each version approved by >= M distinct signers of the set in
 * force before it (version 1: its own), revocations cumulative. When
 * expect_version is non-zero, the log must end exactly at that version with
 * hash expect_hash (catches a cut tail). Fills rep (always). Returns 0, or
 * RON_EREGCHAIN with rep->bad_version and rep->err saying where and why.
 */
int reg_verify_buf(const char *log, size_t len, uint64_t expect_version, const uint8_t *expect_hash,
                   reg_report_t *rep);

/* ---- the registry ---- */

typedef struct reg reg_t;

typedef struct {
    const char *path; /* the log file (created 0600); NULL keeps everything in RAM */
    bool read_only;   /* refuse every write; the file is opened O_RDONLY */
    uint64_t max_log; /* bytes of committed log allowed; 0 = REG_DEFAULT_MAX_LOG */
} reg_opts_t;

/*
 * Open a registry. A file log is read and verified whole; an incomplete last
 * line (a write cut by a crash) is truncated away, so the durable prefix is
 * what opens. A writable file is locked (flock) against a second writer.
 * Returns 0 and *reg_out, RON_EREGCHAIN (a complete line fails; err says
 * which version), RON_EBUSY (locked by another writer), RON_ETOOBIG (larger
 * than REG_MAX_LOG_HARD) or -errno.
 */
int reg_open(const reg_opts_t *opts, reg_t **reg_out, reg_err_t *err);

/* Close and free. NULL does nothing. */
void reg_free(reg_t *reg);

/* The head: version (0 when empty), its hash (zeros when empty), and whether
 * writes are accepted now. Any output may be NULL. */
void reg_head(reg_t *reg, uint64_t *version_out, uint8_t hash_out[REG_HASH_LEN],
              bool *writable_out);

/* The committed record line of version (no newline) as new text in *out
 * (*out_len bytes). Returns 0 or RON_ENOTFOUND. */
int reg_get(reg_t *reg, uint64_t version, char **out, size_t *out_len);

/* Copy the head descriptor (the signer set in force) into d_out. Returns 0 or
 * RON_ENOTFOUND when nothing is committed yet. */
int reg_current(reg_t *reg, reg_desc_t *d_out);

/*
 * Open a proposal for d (copied): d->version must be head + 1 and d->prev the
 * head's hash, and d's revoked list must keep every revoked key of the head.
 * Proposing an open proposal again is not an error. With REG_MAX_PROPOSALS
 * open, a stale one is dropped to make room, else the oldest one without
 * approvals. Returns 0 and its id, RON_EREGSTALE (wrong base), RON_EREGDESC
 * (err says why), RON_EREGRDONLY, or RON_EREGFULL (every open proposal is
 * current and approved at least once).
 */
int reg_propose(reg_t *reg, const reg_desc_t *d, uint8_t id_out[static REG_HASH_LEN],
                reg_err_t *err);

/*
 * Record pk's approval sig of proposal id. The approver must be a signer in
 * force at the proposal's base (for version 1: in the proposal's own set).
 * Returns 0 (and the approvals so far and the threshold, either pointer may
 * be NULL), RON_ENOTFOUND, RON_EREGSTALE, RON_EREGREVOKED, RON_EREGSIGNER,
 * RON_EREGDUP, RON_EREGSIG, or RON_EREGRDONLY.
 */
int reg_approve(reg_t *reg, const uint8_t id[static REG_HASH_LEN],
                const uint8_t pk[static REG_KEY_LEN], const uint8_t sig[static REG_SIG_LEN],
                size_t *approvals_out, uint32_t *threshold_out);

/* Approvals recorded on proposal id and the threshold it needs. Returns 0 or
 * RON_ENOTFOUND. */
int reg_proposal_status(reg_t *reg, const uint8_t id[static REG_HASH_LEN], size_t *approvals_out,
                        uint32_t *threshold_out);

/*
 * Commit proposal id: append its record and fdatasync (file log), then move
 * the head. Approvals pending on other proposals from keys that are no
 * longer signers (removed or revoked) are dropped. Returns 0 and the new
 * version (either pointer may be NULL), RON_ENOTFOUND, RON_EREGSTALE,
 * RON_EREGQUORUM, RON_EREGRDONLY, RON_EREGFULL (the log would exceed
 * max_log), or -errno from the write (the log is cut back and the registry
 * turns read-only).
 */
int reg_commit(reg_t *reg, const uint8_t id[static REG_HASH_LEN], uint64_t *version_out,
               uint8_t hash_out[REG_HASH_LEN]);

/* Refuse (true) or accept again (false) writes. A registry opened read-only
 * or turned read-only by a failed write stays read-only. */
void reg_set_read_only(reg_t *reg, bool read_only);

#endif
