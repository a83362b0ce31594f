/*
 * fuzz_cap_token.c - fuzz target for the capability token parser (base64,
 * v1 packets, identifier, caveat grammar) and the verifier behind it.
 * Properties: parsing never crashes or reads out of bounds; a token that
 * parses re-encodes (attenuation by nothing) to one that parses to the
 * same fields; attenuating it with "ops = get" adds exactly one caveat and
 * never widens the ops; and the verifier, holding a key the input cannot
 * know, never allows it (a parsed token then fails on its signature or
 * its kid, an unparsed one on its format or a caveat).
 */
#include <stdlib.h>
#include <string.h>

#include "auth_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static auth_verifier_t *
fuzz_verifier(void)
{
    static auth_verifier_t *v;
    static const uint8_t key[AUTH_MIN_KEY] = "fuzz root key: 32 bytes exactly";

    if (v == NULL) {
        v = auth_verifier_new(NULL, 0);
        if (v == NULL || auth_verifier_add_key(v, "k1", key, sizeof key) < 0)
            abort();
    }
    return v;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static auth_token_t a, b;
    static char out[AUTH_MAX_TOKEN + 1];
    const char *more[] = {"ops = get"};
    auth_request_t req = {.op = AUTH_OP_GET, .size = 1, .now = 1700000000};
    auth_verdict_t vd;
    const char *tok = (const char *)data;
    int rc = auth_token_parse(tok, size, &a);
    int vrc = auth_verify(fuzz_verifier(), tok, size, &req, &vd);

    if (vrc == 0 || vd.reason == AUTH_OK)
        abort(); /* nobody knows the key */
    if (rc < 0) {
        if (rc != RON_ECAPFORMAT && rc != RON_ECAPCAVEAT)
            abort();
        if ((vd.reason == AUTH_DENY_FORMAT) != (rc == RON_ECAPFORMAT))
            abort();
        return 0;
    }
    if (vd.reason != AUTH_DENY_SIGNATURE && vd.reason != AUTH_DENY_KID)
        abort();
    long n = auth_attenuate(tok, size, NULL, 0, out, sizeof out);
    if (n < 0) {
        if (n != RON_ETOOBIG) /* a padded or standard-alphabet input may grow */
            abort();
        return 0;
    }
    if (auth_token_parse(out, (size_t)n, &b) < 0 || b.n_caveats != a.n_caveats ||
        strcmp(a.id_str, b.id_str) != 0 || memcmp(a.sig, b.sig, AUTH_SIG_LEN) != 0 ||
        strcmp(a.location, b.location) != 0)
        abort();
    for (size_t i = 0; i < a.n_caveats; i++)
        if (strcmp(a.caveats[i], b.caveats[i]) != 0)
            abort();
    n = auth_attenuate(tok, size, more, 1, out, sizeof out);
    if (n >= 0) {
        if (auth_token_parse(out, (size_t)n, &b) < 0 || b.n_caveats != a.n_caveats + 1 ||
            (b.grant.ops & ~a.grant.ops) != 0 || (b.grant.ops & ~(1u << AUTH_OP_GET)) != 0)
            abort();
    } else if (n != RON_ETOOBIG && !(n == RON_ECAPFORMAT && a.n_caveats == AUTH_MAX_CAVEATS)) {
        abort();
    }
    return 0;
}
