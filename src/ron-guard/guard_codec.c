/*
 * guard_codec.c - the authority's entries and pages as JSON, and the key
 * derivation. Why strict: pages come over the bus from the kernel and are
 * the only thing that changes which tokens a boundary accepts, so a page
 * that is not exactly what the kernel writes is refused whole (unknown keys,
 * numbers not as canonical decimal strings, sequence numbers out of order or
 * outside the page's range) rather than half-applied.
 */
#include <blake3.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "guard_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define GUARD__MASTER_CONTEXT "ron-guard capability master v1"
#define GUARD__ROOT_PREFIX "ron-guard root key v1:"

void
guard_master_derive(const uint8_t identity_seed[static 32],
                    uint8_t master_out[static GUARD_MASTER_LEN])
{
    blake3_hasher h;
    blake3_hasher_init_derive_key(&h, GUARD__MASTER_CONTEXT);
    blake3_hasher_update(&h, identity_seed, 32);
    blake3_hasher_finalize(&h, master_out, GUARD_MASTER_LEN);
    sodium_memzero(&h, sizeof h); /* a memset of a dead local may be optimized away */
}

void
guard_root_key(const uint8_t master[static GUARD_MASTER_LEN], const char *kid,
               uint8_t key_out[static GUARD_KEY_LEN])
{
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, master);
    blake3_hasher_update(&h, GUARD__ROOT_PREFIX, strlen(GUARD__ROOT_PREFIX));
    blake3_hasher_update(&h, kid, strlen(kid));
    blake3_hasher_finalize(&h, key_out, GUARD_KEY_LEN);
    sodium_memzero(&h, sizeof h); /* a memset of a dead local may be optimized away */
}

bool
guard__kid_ok(const char *kid, size_t len)
{
    if (len == 0 || len > AUTH_MAX_KID)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = kid[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

int
guard__u64_parse(const char *s, size_t len, uint64_t *v_out)
{
    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return RON_EJSON;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return RON_EJSON;
    return ron_parse_u64(s, len, v_out) == 0 ? 0 : RON_EJSON;
}

/* ---- encode ---- */

static int
entry_check(const guard_entry_t *e)
{
    if (e->seq == 0)
        return RON_EINVAL;
    switch (e->kind) {
    case GUARD_E_KIDS:
        if (e->n_kids < 1 || e->n_kids > GUARD_MAX_KIDS)
            return RON_EINVAL;
        for (size_t i = 0; i < e->n_kids; i++) {
            size_t l = strnlen(e->kids[i], AUTH_MAX_KID + 1);
            if (!guard__kid_ok(e->kids[i], l))
                return RON_EINVAL;
            for (size_t j = 0; j < i; j++)
                if (strcmp(e->kids[i], e->kids[j]) == 0)
                    return RON_EINVAL;
        }
        return 0;
    case GUARD_E_EPOCH:
        return 0;
    case GUARD_E_REVOKE:
        return e->until < 0 ? RON_EINVAL : 0;
    default:
        return RON_EINVAL;
    }
}

int
guard_entry_encode(const guard_entry_t *e, char *buf, size_t cap)
{
    if (e == NULL || buf == NULL)
        return RON_EINVAL;
    int rc = entry_check(e);
    if (rc != 0)
        return rc;
    int n;
    switch (e->kind) {
    case GUARD_E_KIDS:
        if (e->n_kids == 1)
            n = snprintf(buf, cap, "{\"seq\":\"%llu\",\"kind\":\"kids\",\"kids\":[\"%s\"]}",
                         (unsigned long long)e->seq, e->kids[0]);
        else
            n = snprintf(buf, cap, "{\"seq\":\"%llu\",\"kind\":\"kids\",\"kids\":[\"%s\",\"%s\"]}",
                         (unsigned long long)e->seq, e->kids[0], e->kids[1]);
        break;
    case GUARD_E_EPOCH:
        n = snprintf(buf, cap, "{\"seq\":\"%llu\",\"kind\":\"epoch\",\"epoch\":\"%llu\"}",
                     (unsigned long long)e->seq, (unsigned long long)e->epoch);
        break;
    default: {
        char hex[AUTH_NONCE_LEN * 2 + 1];
        ron_hex_encode(hex, e->nonce, AUTH_NONCE_LEN);
        if (e->epoch == AUTH_EPOCH_UNKNOWN)
            n = snprintf(buf, cap,
                         "{\"seq\":\"%llu\",\"kind\":\"revoke\",\"nonce\":\"%s\",\"until\":\"%lld\"}",
                         (unsigned long long)e->seq, hex, (long long)e->until);
        else
            n = snprintf(buf, cap,
                         "{\"seq\":\"%llu\",\"kind\":\"revoke\",\"nonce\":\"%s\",\"until\":\"%lld\","
                         "\"epoch\":\"%llu\"}",
                         (unsigned long long)e->seq, hex, (long long)e->until,
                         (unsigned long long)e->epoch);
        break;
    }
    }
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return RON_ETOOBIG;
    }
    return n;
}

long
guard_page_encode(uint64_t prev, uint64_t head, const guard_entry_t *e, size_t n, char *buf,
                  size_t cap)
{
    if (buf == NULL || (n > 0 && e == NULL) || prev > head)
        return RON_EINVAL;
    size_t off = 0;
    int w = snprintf(buf, cap, "{\"prev\":\"%llu\",\"head\":\"%llu\",\"entries\":[",
                     (unsigned long long)prev, (unsigned long long)head);
    if (w < 0 || (size_t)w >= cap)
        goto toobig;
    off = (size_t)w;
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            if (off + 1 >= cap)
                goto toobig;
            buf[off++] = ',';
        }
        int r = guard_entry_encode(&e[i], buf + off, cap - off);
        if (r == RON_ETOOBIG)
            goto toobig;
        if (r < 0)
            return r;
        off += (size_t)r;
    }
    if (off + 3 > cap)
        goto toobig;
    buf[off++] = ']';
    buf[off++] = '}';
    buf[off] = '\0';
    return (long)off;
toobig:
    if (cap > 0)
        buf[0] = '\0';
    return RON_ETOOBIG;
}

/* ---- decode ---- */

static int
str_u64(json_t *v, uint64_t *out)
{
    if (!json_is_string(v))
        return RON_EJSON;
    return guard__u64_parse(json_string_value(v), json_string_length(v), out);
}

static int
entry_from_json(json_t *o, guard_entry_t *out)
{
    if (!json_is_object(o))
        return RON_EJSON;
    memset(out, 0, sizeof *out);
    json_t *kind = json_object_get(o, "kind");
    if (!json_is_string(kind) || str_u64(json_object_get(o, "seq"), &out->seq) != 0 ||
        out->seq == 0)
        return RON_EJSON;
    const char *k = json_string_value(kind);
    size_t nkeys = json_object_size(o);
    if (strcmp(k, "kids") == 0 && json_string_length(kind) == 4) {
        json_t *arr = json_object_get(o, "kids");
        if (nkeys != 3 || !json_is_array(arr))
            return RON_EJSON;
        size_t n = json_array_size(arr);
        if (n < 1 || n > GUARD_MAX_KIDS)
            return RON_EJSON;
        out->kind = GUARD_E_KIDS;
        out->n_kids = n;
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(arr, i);
            if (!json_is_string(s) || !guard__kid_ok(json_string_value(s), json_string_length(s)))
                return RON_EJSON;
            memcpy(out->kids[i], json_string_value(s), json_string_length(s) + 1);
            for (size_t j = 0; j < i; j++)
                if (strcmp(out->kids[i], out->kids[j]) == 0)
                    return RON_EJSON;
        }
        return 0;
    }
    if (strcmp(k, "epoch") == 0 && json_string_length(kind) == 5) {
        if (nkeys != 3 || str_u64(json_object_get(o, "epoch"), &out->epoch) != 0)
            return RON_EJSON;
        out->kind = GUARD_E_EPOCH;
        return 0;
    }
    if (strcmp(k, "revoke") == 0 && json_string_length(kind) == 6) {
        json_t *nonce = json_object_get(o, "nonce");
        json_t *ep = json_object_get(o, "epoch");
        uint64_t until;
        out->epoch = AUTH_EPOCH_UNKNOWN; /* absent: an older kernel's entry */
        if (ep != NULL && (str_u64(ep, &out->epoch) != 0 || out->epoch == AUTH_EPOCH_UNKNOWN))
            return RON_EJSON;
        if (nkeys != (ep != NULL ? 5u : 4u) || !json_is_string(nonce) ||
            json_string_length(nonce) != AUTH_NONCE_LEN * 2 ||
            str_u64(json_object_get(o, "until"), &until) != 0 || until > INT64_MAX)
            return RON_EJSON;
        const char *hex = json_string_value(nonce);
        for (size_t i = 0; i < AUTH_NONCE_LEN * 2; i++)
            if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
                return RON_EJSON;
        if (ron_hex_decode(out->nonce, AUTH_NONCE_LEN, hex, AUTH_NONCE_LEN * 2) != 0)
            return RON_EJSON;
        out->kind = GUARD_E_REVOKE;
        out->until = (int64_t)until;
        return 0;
    }
    return RON_EJSON;
}

int
guard_entry_decode(const char *json, size_t len, guard_entry_t *out)
{
    if (json == NULL || out == NULL)
        return RON_EINVAL;
    if (len > GUARD_MAX_ENTRY_JSON)
        return RON_EJSON;
    json_error_t err;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (o == NULL)
        return RON_EJSON;
    int rc = entry_from_json(o, out);
    json_decref(o);
    return rc;
}

long
guard_page_decode(const char *json, size_t len, uint64_t *prev_out, uint64_t *head_out,
                  guard_entry_t *out, size_t max)
{
    if (json == NULL || prev_out == NULL || head_out == NULL || (max > 0 && out == NULL))
        return RON_EINVAL;
    if (len > GUARD__PAGE_MAX_JSON)
        return RON_ETOOBIG;
    json_error_t err;
    long rc = RON_EJSON;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (o == NULL)
        return RON_EJSON;
    uint64_t prev, head;
    json_t *arr = json_object_get(o, "entries");
    if (!json_is_object(o) || json_object_size(o) != 3 || !json_is_array(arr) ||
        str_u64(json_object_get(o, "prev"), &prev) != 0 ||
        str_u64(json_object_get(o, "head"), &head) != 0 || prev > head)
        goto out;
    size_t n = json_array_size(arr);
    if (n > max) {
        rc = RON_ETOOBIG;
        goto out;
    }
    uint64_t last = prev;
    for (size_t i = 0; i < n; i++) {
        if (entry_from_json(json_array_get(arr, i), &out[i]) != 0)
            goto out;
        /* Strictly increasing, inside (prev, head]. */
        if (out[i].seq <= last || out[i].seq > head)
            goto out;
        last = out[i].seq;
    }
    *prev_out = prev;
    *head_out = head;
    rc = (long)n;
out:
    json_decref(o);
    return rc;
}

void
guard__audit_seed(const uint8_t master[static GUARD_MASTER_LEN], uint8_t seed_out[static 32])
{
    blake3_hasher h;
    blake3_hasher_init_derive_key(&h, "ron-guard audit key v1");
    blake3_hasher_update(&h, master, GUARD_MASTER_LEN);
    blake3_hasher_finalize(&h, seed_out, 32);
    sodium_memzero(&h, sizeof h); /* a memset of a dead local may be optimized away */
}
