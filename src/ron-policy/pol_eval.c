/*
 * pol_eval.c - evaluation of a compiled policy, its reference count, and the
 * op vocabulary.
 * The hot path: look up the request's tags once (a bitmask), normalize its
 * source address once, then walk only the rules indexed under its op, in
 * bundle order, comparing packed integers. No allocation, no lock, no
 * string comparison per rule.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"
#include "ron_err.h"

static const char *const op_names[POL_OP_COUNT] = {"get",  "put",  "pin",   "name",
                                                   "send", "recv", "admin", "mint"};

const char *
pol_op_name(pol_op_t op)
{
    return (unsigned)op < POL_OP_COUNT ? op_names[op] : "?";
}

int
pol_op_parse(const char *s, pol_op_t *op_out)
{
    for (int i = 0; i < POL_OP_COUNT; i++)
        if (strcmp(s, op_names[i]) == 0) {
            *op_out = (pol_op_t)i;
            return 0;
        }
    return RON_EINVAL;
}

uint32_t
pol__tag_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

int
pol__tag_find(const pol_policy_t *p, const char *s, size_t len)
{
    uint32_t h = pol__tag_hash(s, len);
    uint32_t slot = h % POL__TAG_SLOTS;

    for (int probes = 0; probes < POL__TAG_SLOTS; probes++) {
        int idx = p->tag_slot[slot];
        if (idx < 0)
            return -1;
        if (p->tag_hash[slot] == h && strncmp(p->tags[idx], s, len) == 0 &&
            p->tags[idx][len] == '\0')
            return idx;
        slot = (slot + 1) % POL__TAG_SLOTS;
    }
    return -1;
}

int
pol__cidr_from_sockaddr(pol__cidr_t *c, const struct sockaddr *sa)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(c->addr, 0, sizeof c->addr);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        c->family = AF_INET;
        memcpy(c->addr, &in->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        const uint8_t *a = (const uint8_t *)&in6->sin6_addr;
        if (memcmp(a, v4mapped, sizeof v4mapped) == 0) {
            c->family = AF_INET;
            memcpy(c->addr, a + 12, 4);
        } else {
            c->family = AF_INET6;
            memcpy(c->addr, a, 16);
        }
        return 0;
    }
    return RON_EINVAL;
}

static bool
cidr_contains(const pol__cidr_t *net, const pol__cidr_t *a)
{
    unsigned full = net->bits / 8u, rest = net->bits % 8u;

    if (net->family != a->family)
        return false;
    if (memcmp(net->addr, a->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8u - rest));
    return (net->addr[full] & mask) == (a->addr[full] & mask);
}

static bool
source_matches(const pol_policy_t *p, const pol__match_t *m, const pol__cidr_t *src)
{
    if (src == NULL)
        return false;
    for (unsigned i = 0; i < m->src_n; i++)
        if (cidr_contains(&p->cidrs[m->src_off + i], src))
            return true;
    return false;
}

uint32_t
pol__tenant_slot(const pol_policy_t *p, const uint8_t t[static POL_TENANT_LEN])
{
    uint64_t a, b;

    memcpy(&a, t, 8);
    memcpy(&b, t + 8, 8);
    /* murmur3's 64-bit finalizer over both halves: tenants that differ only
     * in a few bytes (sequential ids) still spread over the low bits */
    uint64_t h = a ^ (b * 0x9e3779b97f4a7c15ull);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    uint32_t k = (uint32_t)h;
    for (uint32_t probes = 0; probes <= p->tenant_mask; probes++) {
        k &= p->tenant_mask;
        const pol__tenant_t *e = &p->tenants[k];
        if (e->n == 0 || memcmp(e->tenant, t, POL_TENANT_LEN) == 0)
            return k;
        k++;
    }
    return 0; /* defensive: the table is never full (slots > 2 x tenants) */
}

/* Does rule number i's match hold for the request (op already checked)? */
static inline bool
rule_matches(const pol_policy_t *p, uint32_t i, const pol_request_t *req, uint8_t who,
             uint64_t tags, const pol__cidr_t *src)
{
    const pol__match_t *m = &p->match[i];

    if (m->who != POL__WHO_ANY && m->who != who)
        return false;
    if (req->body_len < m->min_body || req->body_len > m->max_body)
        return false;
    if ((m->tag_mask & ~tags) != 0)
        return false;
    if (m->has_tenant && (!req->has_tenant || memcmp(m->tenant, req->tenant, POL_TENANT_LEN) != 0))
        return false;
    return m->src_n == 0 || source_matches(p, m, src);
}

static void
decide_default(pol_decision_t *out)
{
    memset(out, 0, sizeof *out);
    out->effect = POL_DENY;
    out->rule = -1;
    out->rule_id = "default-deny";
    out->reason = "";
}

int
pol_eval(const pol_policy_t *p, const pol_request_t *req, pol_decision_t *out)
{
    pol__cidr_t src_buf, *src = NULL;
    uint64_t tags = 0;

    decide_default(out);
    if ((unsigned)req->op >= POL_OP_COUNT || (req->anonymous && req->has_tenant) ||
        req->n_tags > POL_MAX_REQ_TAGS || (req->n_tags > 0 && req->tags == NULL))
        return RON_EINVAL;
    for (size_t i = 0; i < req->n_tags; i++) {
        if (req->tags[i] == NULL)
            return RON_EINVAL;
        if (p->n_tags > 0) {
            int idx = pol__tag_find(p, req->tags[i], strlen(req->tags[i]));
            if (idx >= 0)
                tags |= 1ull << idx;
        }
    }
    if (req->source != NULL && pol__cidr_from_sockaddr(&src_buf, req->source) == 0)
        src = &src_buf;

    const uint8_t who = req->anonymous ? POL__WHO_ANON : POL__WHO_CAP;
    const uint8_t opbit = (uint8_t)(1u << req->op);
    const uint32_t *any = p->by_op[req->op], *mine = NULL;
    uint32_t n_any = p->n_by_op[req->op], n_mine = 0, i = 0, j = 0, hit = UINT32_MAX;
    if (req->has_tenant && p->tenants != NULL) {
        const pol__tenant_t *t = &p->tenants[pol__tenant_slot(p, req->tenant)];
        mine = p->tenant_rules + t->off;
        n_mine = t->n;
    }
    /* Merge the two ascending lists: the first rule in bundle order wins. */
    while (i < n_any || j < n_mine) {
        uint32_t r;
        if (j >= n_mine || (i < n_any && any[i] < mine[j])) {
            r = any[i++];
        } else {
            r = mine[j++];
            if (!(p->match[r].ops & opbit))
                continue;
        }
        if (rule_matches(p, r, req, who, tags, src)) {
            hit = r;
            break;
        }
    }
    if (hit != UINT32_MAX) {
        const pol__rule_t *rule = &p->rules[hit];
        out->effect = rule->effect;
        out->rule = (int32_t)hit;
        out->rule_id = rule->id;
        out->reason = rule->reason;
        out->obligations = rule->obligations;
    }
    return 0;
}

pol_policy_t *
pol_policy_ref(pol_policy_t *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void
pol_policy_unref(pol_policy_t *p)
{
    if (p == NULL)
        return;
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        pol__policy_destroy(p);
}

void
pol__policy_destroy(pol_policy_t *p)
{
    if (p == NULL)
        return;
    for (uint32_t i = 0; i < p->n_rules; i++) {
        free(p->rules[i].id);
        free(p->rules[i].reason);
    }
    for (uint32_t i = 0; i < p->n_tags; i++)
        free(p->tags[i]);
    free(p->rules);
    free(p->match);
    free(p->by_op_all);
    free(p->tenants);
    free(p->tenant_rules);
    free(p->cidrs);
    free(p);
}

size_t
pol_policy_rule_count(const pol_policy_t *p)
{
    return p->n_rules;
}

uint64_t
pol_policy_revision(const pol_policy_t *p)
{
    return p->revision;
}
