/*
 * fuzz_policy_bundle.c - fuzz target for the policy bundle parser and the
 * evaluator it feeds. Properties: a refused bundle names a JSON path
 * starting with "$" and a message; a compiled bundle evaluates a spread of
 * requests (every op, anonymous or not, a few tags and sources) to a
 * decision whose rule index is in range, whose rule lists the request's op,
 * and whose effect is that rule's; none matching is the default deny.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_decision(const pol_policy_t *p, const pol_request_t *req)
{
    pol_decision_t d;

    if (pol_eval(p, req, &d) != 0)
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
    static const char *const tags[] = {"public", "bulk", "a", "tag-0"};
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
                pol_request_t req = {.anonymous = who == 0, .has_tenant = who == 2,
                                     .op = (pol_op_t)op, .body_len = (uint64_t)op * 1000,
                                     .tags = tags, .n_tags = (size_t)(op % 5),
                                     .source = sources[s]};
                memset(req.tenant, 0xab, sizeof req.tenant);
                check_decision(p, &req);
            }
    pol_policy_unref(p);
    return 0;
}
