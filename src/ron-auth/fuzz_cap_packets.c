/*
 * fuzz_cap_packets.c - fuzz target for the decoded side of a token: v1
 * packets and the caveat language, without base64 in the way (so the
 * fuzzer reaches the caveat grammar directly).
 * Properties: the packet parser never reads out of bounds; packets that
 * parse re-encode to a base64 token that auth_token_parse reads back with
 * the same identifier, caveats and signature; and folding the caveats one
 * at a time only ever narrows the grant (ops a subset, expires and
 * max-bytes and rate never larger, not-before never smaller, prefixes only
 * longer, a tenant once set never changes without a conflict, ancestors
 * are only ever added), which is what makes attenuation safe.
 */
#include <stdlib.h>
#include <string.h>

#include "auth_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* b narrows a (or equals it). */
static bool
narrows(const auth_grant_t *a, const auth_grant_t *b)
{
    if (a->conflict != AUTH_OK && b->conflict != a->conflict)
        return false; /* a contradiction is never undone */
    if ((b->ops & ~a->ops) != 0 || b->expires > a->expires || b->not_before < a->not_before ||
        b->max_bytes > a->max_bytes)
        return false;
    if (a->rate != 0 && (b->rate == 0 || b->rate > a->rate))
        return false;
    if (b->prefix_len < a->prefix_len || b->name_prefix_len < a->name_prefix_len)
        return false;
    if (b->conflict == AUTH_OK && (memcmp(a->prefix, b->prefix, a->prefix_len) != 0 ||
                                   memcmp(a->name_prefix, b->name_prefix, a->name_prefix_len) != 0))
        return false;
    if (a->has_tenant && (!b->has_tenant || (b->conflict == AUTH_OK &&
                                             memcmp(a->tenant, b->tenant, AUTH_TENANT_LEN) != 0)))
        return false;
    /* the lineage only grows: every ancestor stays, in its place */
    if (b->n_ancestors < a->n_ancestors ||
        memcmp(a->ancestors, b->ancestors, (size_t)a->n_ancestors * AUTH_NONCE_LEN) != 0)
        return false;
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char tok[AUTH_MAX_TOKEN + 1];
    static auth_token_t t;
    auth__parsed_t p;
    auth_grant_t g, prev;

    if (size > AUTH_MAX_RAW || auth__packets_parse(data, size, &p) < 0)
        return 0;
    auth_grant_init(&g);
    for (size_t i = 0; i < p.n_caveats; i++) {
        prev = g;
        if (auth_caveat_apply(&g, (const char *)p.caveats[i].p, p.caveats[i].len) < 0)
            break;
        if (!narrows(&prev, &g))
            abort();
    }
    long n = auth__token_encode(&p, p.sig, tok, sizeof tok);
    if (n < 0)
        return 0; /* the raw input fits AUTH_MAX_RAW but its base64 may not fit AUTH_MAX_TOKEN */
    int rc = auth_token_parse(tok, (size_t)n, &t);
    bool id_ok = auth_id_parse((const char *)p.id.p, p.id.len, &(auth_id_t){0}) == 0;
    if (!id_ok) {
        if (rc != RON_ECAPFORMAT)
            abort();
        return 0;
    }
    if (rc != 0 && rc != RON_ECAPCAVEAT)
        abort();
    if (t.n_caveats != p.n_caveats || memcmp(t.sig, p.sig, AUTH_SIG_LEN) != 0 ||
        strlen(t.id_str) != p.id.len || memcmp(t.id_str, p.id.p, p.id.len) != 0)
        abort();
    for (size_t i = 0; i < p.n_caveats; i++)
        if (memcmp(t.caveats[i], p.caveats[i].p, p.caveats[i].len) != 0)
            abort();
    return 0;
}
