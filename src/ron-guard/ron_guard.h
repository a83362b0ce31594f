/*
 * ron_guard.h - enforcement at a node's boundaries (the gateway, the app
 * port, the overlay, ron-bus services) and the node's capability authority.
 *
 * Why one module: every boundary must decide the same way. A request comes
 * with a capability (a ron-auth macaroon) or without one; the guard verifies
 * the capability (signature, revocation, caveats), asks the policy (ron-policy;
 * anonymous content reads are allowed by the shipped default, rate-limited per
 * source), carries out the policy's obligations (per-source and per-token
 * rate limits), and counts and audits (ron-audit) every rejection. A
 * rejection is 401 (no capability where one is needed, or one that does not
 * verify: malformed, unknown key, bad signature, revoked, expired) or 403 (a
 * valid capability or anonymous request the caveats or the policy do not
 * allow), or 429 with Retry-After (a rate).
 *
 * Keys: the node's capability root keys are derived, one per key
 * generation, from a 32-byte capability master that is itself derived from
 * the node's identity seed (guard_master_derive), so no new secret needs
 * storing and the master never leaves the node's processes; a generation's
 * kid is "r<gen>". Rotating (at least every GUARD_ROTATE_EVERY) moves to the
 * next generation; the previous kid keeps verifying for the grace period,
 * then its tokens fail with the `kid` reason.
 *
 * The authority (guard_authority_t) lives in the kernel, one per node: it
 * owns the key generation, the revocation epoch and the revoked identifiers,
 * persisted in <data-dir>/auth/state (RAM only in amnesia). Every change
 * takes the next sequence number. Each enforcing process holds a guard_t
 * that follows the authority: it applies the authority's entries (kids in
 * force, epoch, revoked ids) in order, from a full sync at start
 * (guard_authority_since with after = 0) and from the pushes the kernel
 * sends on every change, so revocation reaches every boundary within
 * milliseconds (the requirement is 1 s). The bus protocol that carries them
 * is in docs/protocol/capabilities.md ("Enforcement").
 *
 * Thread rules: guard_check, guard_audit and guard_metrics_render are
 * thread-safe; everything else runs on the owner's loop thread.
 */
#ifndef RON_GUARD_H
#define RON_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ron_audit.h"
#include "ron_auth.h"

/* ---- limits ---- */
#define GUARD_MASTER_LEN 32               /* capability master, bytes */
#define GUARD_KEY_LEN 32                  /* one derived root key, bytes */
#define GUARD_MAX_KIDS 2                  /* kids in force: current + one in grace */
#define GUARD_ROTATE_EVERY (30 * 86400)   /* s a generation stays current at most */
#define GUARD_GRACE_DEFAULT (7 * 86400)   /* s a replaced generation keeps verifying */
#define GUARD_MAX_REVOKED 65536           /* revoked ids the authority keeps (expired ones pruned) */
#define GUARD_SYNC_PAGE 256               /* entries per sync answer or push */
#define GUARD_MAX_ENTRY_JSON 160          /* bytes of one encoded entry */
#define GUARD_RATE_SLOTS 4096             /* token buckets (per source, per token) held */
#define GUARD_SELF_TTL 3600               /* s a service's own token lives (renewed at half) */
#define GUARD_OPERATOR_FILE "operator.cap" /* in the data dir, mode 0600 */
#define GUARD_STATE_MAX (4u << 20)        /* bytes of <data-dir>/auth/state at most */
#define GUARD_MAX_LINEAGE AUTH_MAX_ANCESTORS /* ancestors a minted token records (mint depth) */

/* ---- keys ---- */

/* master_out = BLAKE3 derive_key("ron-guard capability master v1", seed). */
void guard_master_derive(const uint8_t identity_seed[static 32],
                         uint8_t master_out[static GUARD_MASTER_LEN]);

/* key_out = BLAKE3 keyed by master over "ron-guard root key v1:" + kid. */
void guard_root_key(const uint8_t master[static GUARD_MASTER_LEN], const char *kid,
                    uint8_t key_out[static GUARD_KEY_LEN]);

/* ---- authority entries (what the kernel pushes to every guard) ---- */

typedef enum {
    GUARD_E_KIDS = 1, /* the kids in force, current first */
    GUARD_E_EPOCH,    /* the revocation epoch */
    GUARD_E_REVOKE,   /* one revoked identifier (its nonce) */
} guard_entry_kind_t;

typedef struct {
    uint64_t seq; /* the authority's sequence number of this change (>= 1) */
    guard_entry_kind_t kind;
    size_t n_kids; /* GUARD_E_KIDS: 1..GUARD_MAX_KIDS */
    char kids[GUARD_MAX_KIDS][AUTH_MAX_KID + 1];
    uint64_t epoch;                /* GUARD_E_EPOCH; GUARD_E_REVOKE: the identifier's epoch
                                      (AUTH_EPOCH_UNKNOWN: not known, never dropped by a raise) */
    uint8_t nonce[AUTH_NONCE_LEN]; /* GUARD_E_REVOKE */
    int64_t until;                 /* GUARD_E_REVOKE: unix s (0: for ever) */
} guard_entry_t;

/*
 * Encode e as one JSON object into buf (cap bytes, NUL-terminated):
 *   {"seq":"7","kind":"kids","kids":["r2","r1"]}
 *   {"seq":"8","kind":"epoch","epoch":"3"}
 *   {"seq":"9","kind":"revoke","nonce":"<32 hex>","until":"1790000000","epoch":"3"}
 * (a revoke's "epoch" is absent when AUTH_EPOCH_UNKNOWN; a guard applying an
 * epoch entry drops the revocations of older epochs it holds)
 * Returns the length or RON_ETOOBIG / RON_EINVAL.
 */
int guard_entry_encode(const guard_entry_t *e, char *buf, size_t cap);

/* Parse one such object strictly (unknown keys, bad values: RON_EJSON). Returns 0. */
int guard_entry_decode(const char *json, size_t len, guard_entry_t *out);

/*
 * A page of entries: {"prev":"P","head":"H","entries":[...]} covering the
 * changes (P, H]. The kernel answers a sync and sends every push in this
 * form. guard_page_encode writes at most n entries; guard_page_decode
 * fills up to max entries and returns how many (or RON_EJSON / RON_ETOOBIG).
 */
long guard_page_encode(uint64_t prev, uint64_t head, const guard_entry_t *e, size_t n, char *buf,
                       size_t cap);
long guard_page_decode(const char *json, size_t len, uint64_t *prev_out, uint64_t *head_out,
                       guard_entry_t *out, size_t max);

/* ---- the authority (kernel side, one per node) ---- */

typedef struct guard_authority guard_authority_t;

typedef struct {
    const char *dir; /* <data-dir>/auth (created 0700), or NULL: RAM only (amnesia) */
    const uint8_t *master; /* GUARD_MASTER_LEN bytes, copied into sodium_malloc memory */
    int64_t rotate_every;  /* s; 0: GUARD_ROTATE_EVERY; 1..GUARD_ROTATE_EVERY */
    int64_t grace;         /* s; 0: GUARD_GRACE_DEFAULT */
} guard_authority_opts_t;

/*
 * Open the authority: load <dir>/state, or start at generation 1, epoch 0,
 * nothing revoked (and save that at once). A state file that does not parse
 * or fails its checksum is an error, never silently replaced. Returns 0,
 * RON_EINVAL, RON_EKEYFILE (state malformed) or -errno.
 */
int guard_authority_open(const guard_authority_opts_t *o, int64_t now, guard_authority_t **out);

/* Wipe and free. NULL does nothing. */
void guard_authority_close(guard_authority_t *a);

/* The sequence number of the newest change (>= 1 once open). */
uint64_t guard_authority_head(const guard_authority_t *a);

/*
 * The entries a guard that has applied everything up to `after` still
 * needs, oldest first, at most max: the kids and the epoch if they changed
 * after `after`, and each revocation made after it. after = 0 gives the whole
 * state. Returns the count; *more_out says whether more remain past them.
 */
size_t guard_authority_since(const guard_authority_t *a, uint64_t after, guard_entry_t *out,
                             size_t max, bool *more_out);

/*
 * Revoke the token identifier id[0..len) ("ron1:<kid>:<epoch>:<32 hex>"):
 * that token and every attenuation of it, until `until`. No token outlives
 * its kid, so `until` 0 (for ever) or past now + rotate_every + grace is
 * capped there. An identifier of an epoch below the one in force is dead
 * already: nothing changes (head stays, *entry_out zeroed) and 0 is
 * returned. Persisted (fsync) before it returns. *entry_out (may be NULL)
 * gets the new entry. Returns 0, RON_ECAPFORMAT (not an identifier),
 * RON_ECAPFULL, or -errno (nothing changed).
 */
int guard_authority_revoke(guard_authority_t *a, const char *id, size_t len, int64_t until,
                           int64_t now, guard_entry_t *entry_out);

/* Raise the epoch to epoch (0: the current one + 1); persisted first. Every
 * revoked identifier of an older epoch is dropped (the epoch kills its
 * token). Returns the epoch in force or -errno. *entry_out as above. */
int64_t guard_authority_raise_epoch(guard_authority_t *a, uint64_t epoch, guard_entry_t *entry_out);

/*
 * Rotate when the current generation is rotate_every old (force: now), and
 * drop a previous generation past its grace. Returns 1 and *entry_out (the
 * new kids entry) when the kids changed, 0 when not, or -errno.
 */
int guard_authority_tick(guard_authority_t *a, int64_t now, bool force, guard_entry_t *entry_out);

/* The current kid, the epoch in force. */
const char *guard_authority_kid(const guard_authority_t *a);
uint64_t guard_authority_epoch(const guard_authority_t *a);

/* The authority's key generation and revocation state, for `ron key show`. */
typedef struct {
    char kid[AUTH_MAX_KID + 1];      /* current */
    char prev_kid[AUTH_MAX_KID + 1]; /* in grace, or "" */
    int64_t gen_started;             /* unix s the current kid became current */
    int64_t prev_until;              /* unix s the previous kid's grace ends (0: none) */
    int64_t rotate_every, grace;     /* s, as opened */
    uint64_t epoch, head;
    size_t n_revoked;
} guard_authority_info_t;

void guard_authority_info(const guard_authority_t *a, guard_authority_info_t *out);

/*
 * Mint the operator capability (ops = every op, no expiry) under the current
 * kid and epoch into out (cap bytes, NUL-terminated). Returns its length or
 * a code of auth_mint. The kernel writes it to <data-dir>/operator.cap (mode
 * 0600) on first start and again whenever a rotation's grace or an epoch
 * raise would leave the old one dead.
 */
long guard_authority_mint_operator(guard_authority_t *a, char *out, size_t cap);

/* ---- the guard (one per enforcing process) ---- */

typedef struct guard guard_t;

typedef struct {
    const char *service;   /* "gateway", "app", "storage", ... or "node" (micro): metrics
                              label, audit file name, actor of its own records */
    const uint8_t *master; /* GUARD_MASTER_LEN bytes (copied, sodium memory) */
    const char *audit_dir; /* <data-dir>/audit: log <service>.log, checkpoints
                              <service>.ckpt; NULL: RAM sink (amnesia) */
    const char *policy_file; /* policy bundle JSON; NULL or "": the shipped default */
    size_t cache_slots;    /* verdict cache; 0: 4096 */
} guard_opts_t;

/*
 * Create a guard knowing no kid yet (every token fails `kid` until the first
 * GUARD_E_KIDS entry is applied). Returns 0, RON_EINVAL, a RON_EPOL* code
 * with the reason logged (policy file), or an error of aud_log_open_file.
 */
int guard_new(const guard_opts_t *o, guard_t **out);

/* Flush the audit log, wipe keys, free. NULL does nothing. */
void guard_free(guard_t *g);

/*
 * Apply a page (prev, head] of n entries from the authority. Returns 0 (now
 * at head), or RON_EAGAIN when prev is past what this guard has applied (it
 * missed a page: sync with guard_head() as `after`). Entries at or below the
 * guard's head are skipped, so a page may be applied twice.
 */
int guard_apply(guard_t *g, uint64_t prev, uint64_t head, const guard_entry_t *e, size_t n);

/* The authority sequence number this guard has applied up to. */
uint64_t guard_head(const guard_t *g);

/* Replace the policy from path (NULL or "": the shipped default). On error
 * the old policy stays (rollback) and the code is returned; a change is
 * audited as policy_changed. */
int guard_policy_reload(guard_t *g, const char *path);

/* One request at a boundary. Everything is borrowed. */
typedef struct {
    auth_op_t op;
    const char *token; /* the capability as received (base64url), or NULL: anonymous */
    size_t token_len;
    const uint8_t *tenant; /* 16 bytes the request names (OAP/1 tenant_id), or NULL */
    const char *addr;      /* "b3:<hex>" the request names, or NULL */
    uint64_t size;         /* body bytes (put) or AUTH_SIZE_UNKNOWN */
    const char *name;      /* name published or resolved, or NULL */
    const struct sockaddr *source; /* the client's address; NULL: local (no per-source rate) */
    const char *target;    /* what the audit record names (address, name, path); NULL: "" */
    int64_t now;           /* unix s; 0: the clock */
    bool forwarded;        /* came over ron-bus from a node service that checked it at its edge
                              (gateway, app port): the token's rate caveat, charged once there,
                              is not charged again; everything else is checked */
} guard_req_t;

/* The decision. */
typedef struct {
    int code;          /* 0 allowed; else RON_ECAPNEEDED, a RON_ECAP* code, RON_EPOLDENY
                          or RON_EFLOOD */
    int status;        /* 200, 401, 403 or 429 */
    const char *slug;  /* "ok", "capability_required", "capability_invalid",
                          "capability_revoked", "capability_expired", "forbidden",
                          "rate_limited" */
    const char *reason; /* one human sentence for the error envelope (static or the policy's) */
    uint32_t retry_after_s; /* with 429 */
    bool anonymous;    /* no token came */
    char actor[AUTH_ID_MAX + 1]; /* the token's identifier, or "anon" */
    auth_verdict_t verdict;      /* when a token came: grant, pending constraints */
} guard_result_t;

/*
 * Decide req. With a token: auth_verify (401 when it does not verify, 403
 * when its caveats do not allow req), then the policy (403 on deny), then
 * the rate caveat per token (429). Without: the policy as anonymous (401
 * when it denies), then its rate obligation per source (429). A rejection
 * is counted (guard_rejected_total{service,reason}) and audited (kind
 * rejected, actor, op, target; never the token). The token itself is never
 * logged or stored. Returns out->code. Thread-safe.
 * Pending constraints (out->verdict.pending) stay the caller's: a body over
 * verdict.grant.max_bytes, an address outside the prefix once known
 * (auth_grant_check); guard_reject() reports such a late rejection.
 */
int guard_check(guard_t *g, const guard_req_t *req, guard_result_t *out);

/* Count and audit a rejection the caller decided after guard_check (a
 * pending constraint), filling *out as guard_check would. Returns out->code. */
int guard_reject(guard_t *g, const guard_req_t *req, int code, guard_result_t *out);

/* The HTTP/OAP status of a guard or RON_ECAP* code: 401, 403, 429; 500 otherwise. */
int guard_status_of(int code);

/*
 * Mint a token for a caller holding `parent` (a verified grant with the
 * mint op): ops, ttl (s; 0: 3600; at most 86400 * 30), tenant, max_bytes,
 * prefix may only narrow the parent's (wider asks are RON_ECAPDENY). Minted
 * under the current kid and epoch; audited as cap_issued with its id.
 * Lineage: when actor is an identifier (guard_result_t.actor of the parent
 * token) the child carries `ancestor = <nonce>` caveats for it and for every
 * ancestor of the parent (parent->ancestors), so revoking the parent or any
 * of its ancestors revokes the child; an actor that is not an identifier
 * (the passport naming a key) starts a new lineage. More than
 * GUARD_MAX_LINEAGE ancestors is RON_ECAPDEPTH (403): mint from an ancestor.
 */
typedef struct {
    uint32_t ops; /* mask of 1 << auth_op_t, not 0 */
    uint32_t ttl;
    const uint8_t *tenant; /* 16 bytes or NULL */
    uint64_t max_bytes;    /* 0: none */
    const char *prefix;    /* "b3:<hex prefix>" or NULL */
} guard_mint_req_t;

long guard_mint(guard_t *g, const auth_grant_t *parent, const char *actor,
                const guard_mint_req_t *m, char *out, size_t cap,
                char id_out[static AUTH_ID_MAX + 1]);

/*
 * The process's own capability for the bus requests it makes on its own
 * behalf (republish, GC's unprovide): every op, GUARD_SELF_TTL, renewed at
 * half-life. Written into out (cap bytes). Returns the length or a code.
 */
long guard_self_token(guard_t *g, char *out, size_t cap);

/* Append a record of what a service did (cap_issued, cap_revoked, pin,
 * name_published, admin, ...). Thread-safe. Returns 0 or an aud_append code. */
int guard_audit(guard_t *g, aud_kind_t kind, const char *actor, const char *op,
                const char *target, aud_outcome_t outcome, const char *reason);

/*
 * Append Prometheus text to buf (cap bytes): guard_checks_total{service,result},
 * guard_rejected_total{service,reason}, guard_authority_head{service},
 * guard_epoch{service}, guard_cache_hits_total / misses, audit records.
 * Returns bytes written (0 if it did not fit). Thread-safe.
 */
size_t guard_metrics_render(guard_t *g, char *buf, size_t cap);

#endif
