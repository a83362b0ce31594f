/*
 * ron_policy.h - declarative access policy: JSON bundles compiled into an
 * immutable, reference-counted rule set, evaluated per request.
 *
 * A bundle is an ordered list of rules; each rule matches on tenant,
 * operation (DESIGN.md §6 ops: get, put, pin, name, send, recv, admin,
 * mint), body size, tags and source address, and says allow or deny plus
 * obligations (a per-source rate, audit, log) the caller must carry out.
 * The first matching rule wins; a request no rule matches is denied.
 * The schema, with examples, is docs/protocol/policy.md.
 *
 * Parsing is strict: unknown or duplicate fields, duplicate rule ids, wrong
 * types and out-of-range values are refused with the JSON path at fault.
 * Evaluation allocates nothing and touches only the candidate rules of the
 * request's operation (precomputed per-op index, tag bitmasks).
 *
 * Thread rules: a compiled pol_policy_t is immutable, so any number of
 * threads may evaluate it while they hold a reference. pol_store_t swaps
 * policies under a mutex; every pol_store_* function is thread-safe.
 */
#ifndef RON_POLICY_H
#define RON_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ---- limits ---- */
#define POL_MAX_BUNDLE (1u << 20) /* bytes of bundle JSON: a control body (DESIGN.md §6, 1 MiB) */
#define POL_MAX_RULES 4096        /* rules in a bundle: bounds compile time and memory */
#define POL_MAX_TAGS 64           /* distinct tags in a bundle: one bit each in a u64 mask */
#define POL_MAX_RULE_TAGS 16      /* tags one rule may require */
#define POL_MAX_RULE_SOURCES 16   /* CIDR prefixes one rule may list */
#define POL_MAX_REQ_TAGS 32       /* tags one request may carry */
#define POL_MAX_ID_LEN 64         /* bytes of a rule id */
#define POL_MAX_TAG_LEN 64        /* bytes of a tag */
#define POL_MAX_REASON_LEN 200    /* bytes of a rule's reason (it may reach an error envelope) */
#define POL_MAX_RATE 1000000u     /* requests per second in a rate obligation */
#define POL_MAX_BURST 1000000u    /* token-bucket depth in a rate obligation */
#define POL_TENANT_LEN 16         /* tenant id bytes (DESIGN.md §6 caveat `tenant = <32 hex>`) */
#define POL_SCHEMA_VERSION 1      /* the only "version" this code reads */

/* Operations: DESIGN.md §6's `ops` vocabulary. HEAD counts as get. */
typedef enum {
    POL_OP_GET = 0,
    POL_OP_PUT,
    POL_OP_PIN,
    POL_OP_NAME,
    POL_OP_SEND,
    POL_OP_RECV,
    POL_OP_ADMIN,
    POL_OP_MINT,
    POL_OP_COUNT
} pol_op_t;

typedef enum { POL_DENY = 0, POL_ALLOW = 1 } pol_effect_t;

/* One request, as the enforcing service sees it. Everything is borrowed. */
typedef struct {
    bool anonymous;                 /* true: no capability came with the request */
    bool has_tenant;                /* tenant is valid (never with anonymous) */
    uint8_t tenant[POL_TENANT_LEN]; /* the capability's tenant caveat */
    pol_op_t op;
    uint64_t body_len;             /* bytes; 0 for reads */
    const char *const *tags;       /* n_tags NUL-terminated strings; may be NULL if n_tags 0 */
    size_t n_tags;                 /* <= POL_MAX_REQ_TAGS */
    const struct sockaddr *source; /* AF_INET or AF_INET6 peer, or NULL (local, unknown) */
} pol_request_t;

/* What the caller must do besides allowing or denying. */
typedef struct {
    uint32_t rate;  /* requests per second per source; 0 = no rate limit */
    uint32_t burst; /* token-bucket depth for rate (>= 1 when rate > 0) */
    bool audit;     /* write an audit record of this decision */
    bool log;       /* write an access-log line (never with the ?cap= value) */
} pol_obligations_t;

/* The outcome of one evaluation. Strings are views into the policy, valid
 * while the caller holds its reference. */
typedef struct {
    pol_effect_t effect;
    int32_t rule;                  /* index of the matching rule, or -1 (default deny) */
    const char *rule_id;           /* its id, or "default-deny" */
    const char *reason;            /* its reason, or "" */
    pol_obligations_t obligations; /* all zero for the default deny */
} pol_decision_t;

/* What went wrong in a bundle. code is the RON_E* value also returned. */
typedef struct {
    int code;      /* RON_EPOLICY, RON_EPOLLIMIT, RON_EPOLDUP */
    char path[96]; /* JSON path at fault, e.g. "$.rules[3].match.ops[1]", or "$" */
    char msg[200]; /* one sentence naming the path and what is wrong */
} pol_err_t;

typedef struct pol_policy pol_policy_t;
typedef struct pol_store pol_store_t;

/* ---- compiling and evaluating ---- */

/*
 * Compile the bundle json[0..len) into a new policy with one reference
 * (release it with pol_policy_unref). err (may be NULL) says where and why
 * a bundle is refused. Returns NULL with err->code RON_EPOLICY (malformed
 * JSON, unknown or missing field, wrong type or value), RON_EPOLLIMIT (a
 * POL_MAX_* limit exceeded) or RON_EPOLDUP (two rules with one id).
 * Thread-safe.
 */
pol_policy_t *pol_compile(const char *json, size_t len, pol_err_t *err);

/*
 * Compile the shipped default policy (the same bytes as
 * config/policy-default.json; see pol_default_bundle). Never returns NULL.
 */
pol_policy_t *pol_policy_default(void);

/* The shipped default bundle as a NUL-terminated JSON string (static). */
const char *pol_default_bundle(void);

/* Add a reference to p and return p. Thread-safe. */
pol_policy_t *pol_policy_ref(pol_policy_t *p);

/* Drop a reference; the last one frees p. NULL does nothing. Thread-safe. */
void pol_policy_unref(pol_policy_t *p);

/* Number of rules in p. */
size_t pol_policy_rule_count(const pol_policy_t *p);

/* The bundle's "revision" (0 when it had none). */
uint64_t pol_policy_revision(const pol_policy_t *p);

/*
 * Evaluate req against p into *out: the first rule, in bundle order, whose
 * every match field holds decides; none matching is a default deny.
 * Allocates nothing and takes no lock. Returns 0, or RON_EINVAL (out left as
 * a default deny) if req is malformed: op out of range, a tenant on an
 * anonymous request, more than POL_MAX_REQ_TAGS tags or a NULL tag.
 * Thread-safe while the caller holds a reference to p.
 */
int pol_eval(const pol_policy_t *p, const pol_request_t *req, pol_decision_t *out);

/* Name of op ("get", ...), or "?" when out of range. */
const char *pol_op_name(pol_op_t op);

/* Parse an op name (exact, lowercase) into *op_out. Returns 0 or RON_EINVAL. */
int pol_op_parse(const char *s, pol_op_t *op_out);

/* ---- hot reload with rollback ---- */

/*
 * Create a store holding initial (takes the reference; not NULL: a node
 * without a bundle passes pol_policy_default()). Returns new; free with
 * pol_store_free.
 */
pol_store_t *pol_store_new(pol_policy_t *initial);

/* Free s and drop its references. NULL does nothing. No reader may still use s. */
void pol_store_free(pol_store_t *s);

/*
 * Return a new reference to the current policy (release it with
 * pol_policy_unref). A reload does not disturb a reference already taken.
 * Thread-safe.
 */
pol_policy_t *pol_store_acquire(pol_store_t *s);

/*
 * Compile json[0..len) and make it current; the policy it replaces becomes
 * the previous one (the one before that is released). A bundle that does not
 * compile changes nothing: returns its error code (as pol_compile, err
 * filled). Returns 0 on success. Thread-safe.
 */
int pol_store_load(pol_store_t *s, const char *json, size_t len, pol_err_t *err);

/* Make p current as pol_store_load does (takes the reference). Thread-safe. */
void pol_store_swap(pol_store_t *s, pol_policy_t *p);

/*
 * Restore the previous policy; the current one is released, and there is no
 * previous one afterwards (a second rollback fails). Returns 0, or
 * RON_EPOLNOPREV if there is nothing to roll back to. Thread-safe.
 */
int pol_store_rollback(pol_store_t *s);

/* How many times the current policy changed (load, swap, rollback). Thread-safe. */
uint64_t pol_store_generation(pol_store_t *s);

#endif
