/*
 * auth_caveat.c - the caveat language of DESIGN.md §6 and identifiers.
 * A caveat is exactly `key = value` (one space each side of '='); the keys
 * are tenant, ops, expires, not-before, max-bytes, prefix, name-prefix,
 * rate and ancestor, and any other key is an error (so a verifier never
 * skips a caveat it does not understand, the lineage caveat included). Folding a caveat into a grant can
 * only narrow it (intersection of ops, smallest expiry and size, longest
 * prefix, largest not-before); caveats that contradict each other leave a
 * grant that allows nothing. Pure functions, no allocation.
 */
#include <stdio.h>
#include <string.h>

#include "auth_internal.h"
#include "ron_err.h"
#include "ron_util.h"

static const char *const op_names[AUTH_OP_COUNT] = {"get",  "put",  "pin",   "name",
                                                    "send", "recv", "admin", "mint"};

static const char *const reason_names[AUTH_REASON_COUNT] = {
    "ok",      "format",  "caveat", "kid",    "signature", "revoked", "epoch",
    "expired", "not-yet", "op",     "tenant", "size",      "prefix",  "name"};

const char *
auth_op_name(auth_op_t op)
{
    return (unsigned)op < AUTH_OP_COUNT ? op_names[op] : "?";
}

int
auth_op_parse(const char *s, size_t len, auth_op_t *op_out)
{
    for (int i = 0; i < AUTH_OP_COUNT; i++)
        if (strlen(op_names[i]) == len && memcmp(s, op_names[i], len) == 0) {
            *op_out = (auth_op_t)i;
            return 0;
        }
    return RON_EINVAL;
}

const char *
auth_reason_name(auth_reason_t r)
{
    return (unsigned)r < AUTH_REASON_COUNT ? reason_names[r] : "?";
}

int
auth_reason_code(auth_reason_t r)
{
    switch (r) {
    case AUTH_OK:
        return 0;
    case AUTH_DENY_FORMAT:
        return RON_ECAPFORMAT;
    case AUTH_DENY_CAVEAT:
        return RON_ECAPCAVEAT;
    case AUTH_DENY_KID:
        return RON_ECAPKID;
    case AUTH_DENY_SIGNATURE:
        return RON_ECAPSIG;
    case AUTH_DENY_REVOKED:
    case AUTH_DENY_EPOCH:
        return RON_ECAPREVOKED;
    case AUTH_DENY_EXPIRED:
    case AUTH_DENY_NOT_YET:
        return RON_ECAPEXPIRED;
    default:
        return RON_ECAPDENY;
    }
}

/* ---- small strict scanners ---- */

static bool
is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Decimal without sign, spaces or leading zeros ("0" alone is fine). */
static int
dec_parse(const char *s, size_t len, uint64_t *v_out)
{
    if (len == 0 || (len > 1 && s[0] == '0'))
        return RON_EINVAL;
    return ron_parse_u64(s, len, v_out);
}

bool
auth__kid_ok(const char *kid, size_t len)
{
    if (len == 0 || len > AUTH_MAX_KID)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((kid[i] >= 'a' && kid[i] <= 'z') || (kid[i] >= '0' && kid[i] <= '9')))
            return false;
    return true;
}

/* ---- identifiers ---- */

int
auth_id_new(char out[static AUTH_ID_MAX + 1], const char *kid, uint64_t epoch)
{
    uint8_t nonce[AUTH_NONCE_LEN];
    char hex[2 * AUTH_NONCE_LEN + 1];

    if (kid == NULL || !auth__kid_ok(kid, strlen(kid)))
        return RON_EINVAL;
    if (ron_random_bytes(nonce, sizeof nonce) < 0)
        return RON_EINVAL; /* defensive: getrandom does not fail on Linux >= 3.17 */
    ron_hex_encode(hex, nonce, sizeof nonce);
    snprintf(out, AUTH_ID_MAX + 1, "ron1:%s:%llu:%s", kid, (unsigned long long)epoch, hex);
    return 0;
}

int
auth_id_parse(const char *s, size_t len, auth_id_t *out)
{
    const char *kid, *ep, *hex, *end = s + len;

    if (len < 5 || len > AUTH_ID_MAX || memcmp(s, "ron1:", 5) != 0)
        return RON_ECAPFORMAT;
    kid = s + 5;
    ep = memchr(kid, ':', (size_t)(end - kid));
    if (ep == NULL || !auth__kid_ok(kid, (size_t)(ep - kid)))
        return RON_ECAPFORMAT;
    ep++;
    hex = memchr(ep, ':', (size_t)(end - ep));
    if (hex == NULL || dec_parse(ep, (size_t)(hex - ep), &out->epoch) < 0)
        return RON_ECAPFORMAT;
    hex++;
    if ((size_t)(end - hex) != 2 * AUTH_NONCE_LEN || !is_lower_hex(hex, 2 * AUTH_NONCE_LEN))
        return RON_ECAPFORMAT;
    ron_hex_decode(out->nonce, AUTH_NONCE_LEN, hex, 2 * AUTH_NONCE_LEN);
    memcpy(out->kid, kid, (size_t)(ep - 1 - kid));
    out->kid[ep - 1 - kid] = '\0';
    return 0;
}

/* ---- caveats ---- */

void
auth_grant_init(auth_grant_t *g)
{
    memset(g, 0, sizeof *g);
    g->ops = AUTH_OPS_ALL;
    g->not_before = INT64_MIN;
    g->expires = INT64_MAX;
    g->max_bytes = UINT64_MAX;
}

static int
parse_ops(const char *v, size_t len, uint32_t *mask_out)
{
    uint32_t mask = 0;
    size_t i = 0;

    while (i <= len) {
        size_t j = i;
        auth_op_t op;
        while (j < len && v[j] != ',')
            j++;
        if (auth_op_parse(v + i, j - i, &op) < 0 || (mask & (1u << op)) != 0)
            return RON_ECAPCAVEAT; /* unknown, empty or repeated op */
        mask |= 1u << op;
        i = j + 1;
    }
    *mask_out = mask;
    return 0;
}

/* Fold a prefix (of chars) into cur[0..*cur_len): keep the longer when one
 * extends the other, else the two contradict. */
static bool
fold_prefix(char *cur, uint8_t *cur_len, const char *v, size_t len)
{
    size_t common = len < *cur_len ? len : *cur_len;

    if (memcmp(cur, v, common) != 0)
        return false;
    if (len > *cur_len) {
        memcpy(cur, v, len);
        cur[len] = '\0';
        *cur_len = (uint8_t)len;
    }
    return true;
}

/* The first contradiction is the one reported. */
static void
set_conflict(auth_grant_t *g, auth_reason_t r)
{
    if (g->conflict == AUTH_OK)
        g->conflict = (uint8_t)r;
}

static bool
is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* An ancestor's nonce joins the lineage (a repeat is folded away); more
 * than AUTH_MAX_ANCESTORS distinct ones make the caveat malformed. */
static int
fold_ancestor(auth_grant_t *g, const char *v, size_t vlen)
{
    uint8_t nonce[AUTH_NONCE_LEN];

    if (vlen != 2 * AUTH_NONCE_LEN || !is_lower_hex(v, vlen))
        return RON_ECAPCAVEAT;
    ron_hex_decode(nonce, sizeof nonce, v, vlen);
    for (size_t i = 0; i < g->n_ancestors; i++)
        if (memcmp(g->ancestors[i], nonce, AUTH_NONCE_LEN) == 0)
            return 0;
    if (g->n_ancestors >= AUTH_MAX_ANCESTORS)
        return RON_ECAPCAVEAT;
    memcpy(g->ancestors[g->n_ancestors++], nonce, AUTH_NONCE_LEN);
    return 0;
}

#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(s, lit, klen) == 0)

int
auth_caveat_apply(auth_grant_t *g, const char *s, size_t len)
{
    const char *eq = NULL, *v;
    size_t klen, vlen;
    uint64_t n;

    if (len > AUTH_MAX_CAVEAT_LEN)
        return RON_ECAPCAVEAT;
    for (size_t i = 0; i + 3 <= len; i++)
        if (s[i] == ' ' && s[i + 1] == '=' && s[i + 2] == ' ') {
            eq = s + i;
            break;
        }
    if (eq == NULL || eq == s || eq + 3 == s + len)
        return RON_ECAPCAVEAT;
    klen = (size_t)(eq - s);
    v = eq + 3;
    vlen = len - klen - 3;
    for (size_t i = 0; i < vlen; i++)
        if (v[i] <= ' ' || v[i] > '~') /* printable ASCII, no spaces */
            return RON_ECAPCAVEAT;
    if (KEY_IS("tenant")) {
        uint8_t t[AUTH_TENANT_LEN];
        if (vlen != 2 * AUTH_TENANT_LEN || !is_lower_hex(v, vlen))
            return RON_ECAPCAVEAT;
        ron_hex_decode(t, sizeof t, v, vlen);
        if (g->has_tenant && memcmp(g->tenant, t, sizeof t) != 0)
            set_conflict(g, AUTH_DENY_TENANT);
        memcpy(g->tenant, t, sizeof t);
        g->has_tenant = true;
    } else if (KEY_IS("ops")) {
        uint32_t mask;
        if (parse_ops(v, vlen, &mask) < 0)
            return RON_ECAPCAVEAT;
        g->ops &= mask;
    } else if (KEY_IS("expires") || KEY_IS("not-before")) {
        if (dec_parse(v, vlen, &n) < 0 || n > (uint64_t)INT64_MAX)
            return RON_ECAPCAVEAT;
        if (s[0] == 'e' && (int64_t)n < g->expires)
            g->expires = (int64_t)n;
        if (s[0] == 'n' && (int64_t)n > g->not_before)
            g->not_before = (int64_t)n;
    } else if (KEY_IS("max-bytes")) {
        if (dec_parse(v, vlen, &n) < 0)
            return RON_ECAPCAVEAT;
        if (n < g->max_bytes)
            g->max_bytes = n;
    } else if (KEY_IS("prefix")) {
        if (vlen < 4 || vlen > 3 + 64 || memcmp(v, "b3:", 3) != 0 || !is_lower_hex(v + 3, vlen - 3))
            return RON_ECAPCAVEAT;
        if (!fold_prefix(g->prefix, &g->prefix_len, v + 3, vlen - 3))
            set_conflict(g, AUTH_DENY_PREFIX);
    } else if (KEY_IS("name-prefix")) {
        if (vlen > AUTH_MAX_NAME_PREFIX)
            return RON_ECAPCAVEAT;
        for (size_t i = 0; i < vlen; i++)
            if (!is_name_char(v[i]))
                return RON_ECAPCAVEAT;
        if (!fold_prefix(g->name_prefix, &g->name_prefix_len, v, vlen))
            set_conflict(g, AUTH_DENY_NAME);
    } else if (KEY_IS("rate")) {
        if (vlen < 3 || memcmp(v + vlen - 2, "/s", 2) != 0 || dec_parse(v, vlen - 2, &n) < 0 ||
            n == 0 || n > AUTH_MAX_RATE)
            return RON_ECAPCAVEAT;
        if (g->rate == 0 || n < g->rate)
            g->rate = (uint32_t)n;
    } else if (KEY_IS("ancestor")) {
        return fold_ancestor(g, v, vlen);
    } else {
        return RON_ECAPCAVEAT; /* an unknown key fails verification */
    }
    return 0;
}

auth_reason_t
auth_grant_check(const auth_grant_t *g, const auth_request_t *req, unsigned *pending_out)
{
    unsigned pending = 0;

    if (pending_out != NULL)
        *pending_out = 0;
    if (g->conflict != AUTH_OK)
        return (auth_reason_t)g->conflict;
    int64_t now = req->now < 0 ? 0 : req->now; /* defensive: keeps the subtractions in range */
    if (now > g->expires && now - g->expires > AUTH_SKEW)
        return AUTH_DENY_EXPIRED;
    if (now < g->not_before && g->not_before - now > AUTH_SKEW)
        return AUTH_DENY_NOT_YET;
    if ((unsigned)req->op >= AUTH_OP_COUNT || (g->ops & (1u << req->op)) == 0)
        return AUTH_DENY_OP;
    if (g->has_tenant && req->has_tenant && memcmp(g->tenant, req->tenant, AUTH_TENANT_LEN) != 0)
        return AUTH_DENY_TENANT;
    if (g->max_bytes != UINT64_MAX) {
        if (req->size == AUTH_SIZE_UNKNOWN)
            pending |= AUTH_PENDING_SIZE;
        else if (req->size > g->max_bytes)
            return AUTH_DENY_SIZE;
    }
    if (g->prefix_len > 0) {
        if (req->addr == NULL)
            pending |= AUTH_PENDING_ADDR;
        else if (strncmp(req->addr, "b3:", 3) != 0 ||
                 strncmp(req->addr + 3, g->prefix, g->prefix_len) != 0)
            return AUTH_DENY_PREFIX;
    }
    if (g->name_prefix_len > 0) {
        if (req->name == NULL)
            pending |= AUTH_PENDING_NAME;
        else if (strncmp(req->name, g->name_prefix, g->name_prefix_len) != 0)
            return AUTH_DENY_NAME;
    }
    if (g->rate != 0)
        pending |= AUTH_PENDING_RATE;
    if (pending_out != NULL)
        *pending_out = pending;
    return AUTH_OK;
}
