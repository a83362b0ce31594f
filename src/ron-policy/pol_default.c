/*
 * pol_default.c - the shipped default policy, compiled in so a node without
 * config/policy-default.json (micronode, a fresh install) still enforces it.
 * Invariant: these bytes equal config/policy-default.json exactly (the test
 * test_pol_default_matches_shipped_file compares them).
 */
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"

static const char default_bundle[] =
    "{\n"
    "  \"version\": 1,\n"
    "  \"revision\": 1,\n"
    "  \"description\": \"shipped default: public content reads, the rest needs a capability\",\n"
    "  \"rules\": [\n"
    "    {\n"
    "      \"id\": \"public-read\",\n"
    "      \"effect\": \"allow\",\n"
    "      \"match\": {\"anonymous\": true, \"ops\": [\"get\"]},\n"
    "      \"obligations\": {\"rate\": \"100/s\", \"burst\": 200},\n"
    "      \"reason\": \"content reads (GET/HEAD on /o and /n) are public, rate-limited per "
    "source\"\n"
    "    },\n"
    "    {\n"
    "      \"id\": \"anonymous-other\",\n"
    "      \"effect\": \"deny\",\n"
    "      \"match\": {\"anonymous\": true},\n"
    "      \"obligations\": {\"audit\": true},\n"
    "      \"reason\": \"writes and administration need a capability\"\n"
    "    },\n"
    "    {\n"
    "      \"id\": \"capability-bearer\",\n"
    "      \"effect\": \"allow\",\n"
    "      \"match\": {\"anonymous\": false},\n"
    "      \"reason\": \"a verified capability's own caveats bound what it may do\"\n"
    "    }\n"
    "  ]\n"
    "}\n";

const char *
pol_default_bundle(void)
{
    return default_bundle;
}

pol_policy_t *
pol_policy_default(void)
{
    pol_policy_t *p = pol_compile(default_bundle, sizeof default_bundle - 1, NULL);
    if (p == NULL)
        abort(); /* our own bug: the test suite compiles this bundle */
    return p;
}
