/*
 * pol_internal.h - the compiled form of a policy, shared by pol_compile.c
 * (which builds it), pol_eval.c (which reads it) and the tests.
 * Invariants: a pol_policy_t never changes after pol_compile returns it;
 * by_op lists rule indexes in ascending (bundle) order; every tag bit set in
 * a rule's mask names an entry of tags[]; src_off + src_n <= n_cidrs.
 */
#ifndef POL_INTERNAL_H
#define POL_INTERNAL_H

#include <stdatomic.h>

#include "ron_policy.h"

#define POL__TAG_SLOTS 128 /* open-addressing table of tag names: > 2 x POL_MAX_TAGS */
#define POL__OPS_ALL ((uint8_t)((1u << POL_OP_COUNT) - 1))

enum { POL__WHO_ANY = 0, POL__WHO_ANON = 1, POL__WHO_CAP = 2 };

typedef struct {
    uint8_t family; /* AF_INET or AF_INET6 (IPv4-mapped IPv6 is stored as IPv4) */
    uint8_t bits;   /* prefix length: <= 32 or <= 128 */
    uint8_t addr[16];
} pol__cidr_t;

/* What the evaluation loop reads, packed together for the cache. */
typedef struct {
    uint64_t tag_mask; /* tags the request must carry (all of them) */
    uint64_t min_body; /* bytes, inclusive */
    uint64_t max_body; /* bytes, inclusive; UINT64_MAX when unset */
    uint8_t tenant[POL_TENANT_LEN];
    uint16_t src_off; /* first of src_n prefixes in cidrs[]; src_n 0 = any source */
    uint16_t src_n;
    uint8_t who; /* POL__WHO_* */
    bool has_tenant;
    uint8_t ops; /* bit per pol_op_t (copy of the rule's, for the tenant walk) */
} pol__match_t;

/* One distinct tenant of the bundle: its rules, all ops, in bundle order. */
typedef struct {
    uint8_t tenant[POL_TENANT_LEN];
    uint32_t off; /* first of n rule numbers in tenant_rules[] */
    uint32_t n;   /* 0 = empty slot */
} pol__tenant_t;

typedef struct {
    char *id;     /* owned */
    char *reason; /* owned; "" when absent */
    pol_effect_t effect;
    uint8_t ops; /* bit per pol_op_t */
    pol_obligations_t obligations;
} pol__rule_t;

struct pol_policy {
    atomic_size_t refs;
    uint64_t revision;
    uint32_t n_rules;
    pol__match_t *match; /* n_rules */
    pol__rule_t *rules;  /* n_rules */
    /* Candidates by op, split by tenant: a request walks, merged in bundle
     * order, its op's rules without a tenant and its own tenant's rules. */
    uint32_t *by_op[POL_OP_COUNT]; /* views into by_op_all: rules without a tenant */
    uint32_t n_by_op[POL_OP_COUNT];
    uint32_t *by_op_all;    /* owned */
    pol__tenant_t *tenants; /* owned; open addressing, tenant_mask + 1 slots, or NULL */
    uint32_t tenant_mask;   /* slots - 1 (slots a power of two > 2 x distinct tenants) */
    uint32_t *tenant_rules; /* owned */
    pol__cidr_t *cidrs;     /* owned */
    uint32_t n_cidrs;
    uint32_t n_tags;
    char *tags[POL_MAX_TAGS];          /* owned; index = bit */
    int16_t tag_slot[POL__TAG_SLOTS];  /* tag index or -1 */
    uint32_t tag_hash[POL__TAG_SLOTS]; /* hash of the tag in that slot */
};

/* FNV-1a of s[0..len). */
uint32_t pol__tag_hash(const char *s, size_t len);

/* Index of tag s in p, or -1. */
int pol__tag_find(const pol_policy_t *p, const char *s, size_t len);

/* Slot of tenant t in p->tenants (empty slot if absent); p->tenants != NULL. */
uint32_t pol__tenant_slot(const pol_policy_t *p, const uint8_t t[static POL_TENANT_LEN]);

/* Release everything p owns, and p. */
void pol__policy_destroy(pol_policy_t *p);

/* Store a family/address from sa into c (bits untouched). Returns 0 or RON_EINVAL. */
int pol__cidr_from_sockaddr(pol__cidr_t *c, const struct sockaddr *sa);

#endif
