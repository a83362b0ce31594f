/*
 * auth_mint.c - minting with libmacaroons, so the tokens this node issues
 * are exactly what the reference implementation writes (v1 serialization,
 * base64url without padding). Every caveat is checked against our grammar
 * before libmacaroons sees it, and the result is re-read by our own strict
 * parser, so a token we hand out is one we accept.
 */
#include <errno.h>
#include <macaroons.h>
#include <stdlib.h>
#include <string.h>

#include "auth_internal.h"
#include "ron_err.h"
#include "ron_util.h"

long
auth_mint(const uint8_t *key, size_t key_len, const char *id, const char *const *caveats, size_t n,
          char *out, size_t cap)
{
    enum macaroon_returncode err = MACAROON_SUCCESS;
    struct macaroon *m = NULL;
    auth_grant_t g;
    auth_token_t *check = NULL;
    char buf[AUTH_MAX_TOKEN + 1];
    long rc;

    if (key == NULL || key_len < AUTH_MIN_KEY || key_len > AUTH_MAX_KEY || id == NULL ||
        auth_id_parse(id, strlen(id), &(auth_id_t){0}) < 0)
        return RON_EINVAL;
    if (n > AUTH_MAX_CAVEATS)
        return RON_ECAPFORMAT;
    auth_grant_init(&g);
    for (size_t i = 0; i < n; i++)
        if (auth_caveat_apply(&g, caveats[i], strlen(caveats[i])) < 0)
            return RON_ECAPCAVEAT;
    m = macaroon_create((const unsigned char *)AUTH_LOCATION, strlen(AUTH_LOCATION), key, key_len,
                        (const unsigned char *)id, strlen(id), &err);
    for (size_t i = 0; m != NULL && i < n; i++) {
        struct macaroon *next = macaroon_add_first_party_caveat(
            m, (const unsigned char *)caveats[i], strlen(caveats[i]), &err);
        macaroon_destroy(m);
        m = next;
    }
    if (m == NULL) {
        rc = -ENOMEM; /* libmacaroons fails only on allocation here */
        goto out;
    }
    if (macaroon_serialize_size_hint(m) > sizeof buf ||
        macaroon_serialize(m, buf, sizeof buf, &err) < 0) {
        rc = RON_ETOOBIG;
        goto out;
    }
    rc = (long)strlen(buf);
    if (rc > AUTH_MAX_TOKEN || (size_t)rc + 1 > cap) {
        rc = RON_ETOOBIG;
        goto out;
    }
    check = ron_xmalloc(sizeof *check);                 /* 8 KiB: not on the stack */
    if (auth_token_parse(buf, (size_t)rc, check) < 0) { /* defensive: we read what we write */
        rc = RON_ECAPFORMAT;
        goto out;
    }
    memcpy(out, buf, (size_t)rc + 1);
out:
    free(check);
    if (m != NULL)
        macaroon_destroy(m);
    return rc;
}
