/*
 * fuzz_policy_bundle.c - fuzz target for the policy bundle parser and the
 * evaluator it feeds. Properties: a refused bundle names a JSON path
 * starting with "$" and a message; a compiled bundle evaluates a spread of
 * requests (every op, anonymous or not, a few tags and sources) to a
 * decision whose rule index is in range, whose rule lists the request's op,
 * and whose effect is that rule's; none matching is the default deny; and
 * the indexed evaluation picks exactly the rule a plain scan of every rule
 * in bundle order picks (tenants are taken from the bundle's own rules).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
ref_source(const pol_policy_t *p, const pol__match_t *m, const struct sockaddr *sa)
{
    pol__cidr_t a;

    if (sa == NULL || pol__cidr_from_sockaddr(&a, sa) < 0)
        return false;
    for (unsigned k = 0; k < m->src_n; k++) {
        const pol__cidr_t *c = &p->cidrs[m->src_off + k];
        if (c->family != a.family)
            continue;
        bool in = true;
        for (unsigned bit = 0; bit < c->bits && in; bit++)
            in = ((c->addr[bit / 8] ^ a.addr[bit / 8]) & (0x80u >> (bit % 8))) == 0;
        if (in)
            return true;
    }
    return false;
}

/* The specification, executed literally: every rule, in order. */
static int32_t
ref_eval(const pol_policy_t *p, const pol_request_t *req)
{
    for (uint32_t i = 0; i < p->n_rules; i++) {
        const pol__match_t *m = &p->match[i];
        uint64_t need = m->tag_mask;
        if (!((p->rules[i].ops >> req->op) & 1u))
            continue;
        if ((m->who == POL__WHO_ANON && !req->anonymous) ||
            (m->who == POL__WHO_CAP && req->anonymous))
            continue;
        if (req->body_len < m->min_body || req->body_len > m->max_body)
            continue;
        for (size_t t = 0; t < req->n_tags; t++)
            for (uint32_t k = 0; k < p->n_tags; k++)
                if (strcmp(p->tags[k], req->tags[t]) == 0)
                    need &= ~(1ull << k);
        if (need != 0)
            continue;
        if (m->has_tenant &&
            (!req->has_tenant || memcmp(m->tenant, req->tenant, POL_TENANT_LEN) != 0))
            continue;
        if (m->src_n > 0 && !ref_source(p, m, req->source))
            continue;
        return (int32_t)i;
    }
    return -1;
}

static void
check_decision(const pol_policy_t *p, const pol_request_t *req)
{
    pol_decision_t d;

    if (pol_eval(p, req, &d) != 0 || d.rule != ref_eval(p, req))
        abort();
    if (d.rule < 0) {
        if (d.effect != POL_DENY || strcmp(d.rule_id, "default-deny") != 0)
            abort();
        return;
    }
    if ((uint32_t)d.rule >= p->n_rules)
        abort();
    const pol__rule_t *r = &p->rules[d.rule];
    if (!((r->ops >> req->op) & 1u) || r->effect != d.effect || strcmp(r->id, d.rule_id) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const tags[] = {"public", "bulk", "a", "tag-0", "eu"};
    pol_err_t err;
    pol_policy_t *p = pol_compile((const char *)data, size, &err);

    if (p == NULL) {
        if (err.code >= 0 || err.path[0] != '$' || err.msg[0] == '\0')
            abort();
        return 0;
    }
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET, "10.1.2.3", &v4.sin_addr);
    inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
    const struct sockaddr *sources[] = {NULL, (const struct sockaddr *)&v4,
                                        (const struct sockaddr *)&v6};
    for (int op = 0; op < POL_OP_COUNT; op++)
        for (int who = 0; who < 3; who++)
            for (int s = 0; s < 3; s++) {
                pol_request_t req = {.anonymous = who == 0,
                                     .has_tenant = who == 2,
                                     .op = (pol_op_t)op,
                                     .body_len = (uint64_t)op * 1000,
                                     .tags = tags,
                                     .n_tags = (size_t)(op % 6),
                                     .source = sources[s]};
                memset(req.tenant, 0xab, sizeof req.tenant);
                check_decision(p, &req);
                if (who != 2)
                    continue;
                for (uint32_t i = 0; i < p->n_rules && i < 8; i++) /* the bundle's tenants */
                    if (p->match[i].has_tenant) {
                        memcpy(req.tenant, p->match[i].tenant, POL_TENANT_LEN);
                        req.body_len = p->match[i].min_body;
                        check_decision(p, &req);
                    }
            }
    pol_policy_unref(p);
    return 0;
}
