/*
 * reg_desc.c - descriptor sets and committed records: strict JSON parsing,
 * canonical encoding, ids and approval signatures. Pure functions, no I/O.
 * Invariants: every string that reaches the canonical encoding is from a
 * restricted ASCII alphabet (hex, key names, peer addresses without quote or
 * backslash), so the encoder needs no escaping and the bytes of a set are a
 * function of its contents alone: signers and revoked keys are sorted, peers
 * and trusted keys keep the proposer's order (it may mean preference).
 */
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blake3.h"
#include "reg_internal.h"
#include "ron_err.h"
#include "ron_util.h"

static const char *const desc_fields[] = {
    "v", "version", "prev", "policy", "bootstrap", "trusted_keys", "signers", "revoked", NULL};

void
reg__err(reg_err_t *err, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

/* The first key of o not in allowed (NULL-terminated), or NULL. */
static const char *
unknown_key(json_t *o, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        size_t i = 0;
        (void)v;
        while (allowed[i] != NULL && strcmp(allowed[i], k) != 0)
            i++;
        if (allowed[i] == NULL)
            return k;
    }
    return NULL;
}

/* 64 hex digits (either case) into out. Returns 0 or -1. */
static int
hex32(json_t *v, uint8_t out[static 32])
{
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) != 64)
        return -1;
    return ron_hex_decode(out, 32, s, 64) < 0 ? -1 : 0;
}

/* "b3:" + 64 hex into out. Returns 0 or -1. */
static int
b3hash(json_t *v, uint8_t out[static 32])
{
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) != 67 || memcmp(s, "b3:", 3) != 0)
        return -1;
    return ron_hex_decode(out, 32, s + 3, 64) < 0 ? -1 : 0;
}

/* A JSON integer in [lo, hi]. Returns 0 or -1. */
static int
uint_in(json_t *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    json_int_t i;
    if (!json_is_integer(v))
        return -1;
    i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < lo || (uint64_t)i > hi)
        return -1;
    *out = (uint64_t)i;
    return 0;
}

static bool
peer_ok(const char *s, size_t n)
{
    if (n == 0 || n > REG_MAX_PEER_LEN || memchr(s, ':', n) == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

static bool
keyname_ok(const char *s, size_t n)
{
    if (n == 0 || n > REG_MAX_KEYNAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

static bool
key_in(const uint8_t (*keys)[REG_KEY_LEN], size_t n, const uint8_t *pk)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(keys[i], pk, REG_KEY_LEN) == 0)
            return true;
    return false;
}

/* Read a JSON array of distinct hex keys (at most max) into keys. */
static int
key_list(json_t *a, const char *field, size_t max, uint8_t (*keys)[REG_KEY_LEN], size_t *n_out,
         reg_err_t *err)
{
    size_t i;
    json_t *v;
    if (!json_is_array(a)) {
        reg__err(err, "%s: not an array", field);
        return RON_EREGDESC;
    }
    if (json_array_size(a) > max) {
        reg__err(err, "%s: more than %zu keys", field, max);
        return RON_EREGLIMIT;
    }
    json_array_foreach(a, i, v)
    {
        if (hex32(v, keys[i]) < 0) {
            reg__err(err, "%s[%zu]: not 64 hex digits", field, i);
            return RON_EREGDESC;
        }
        if (key_in((const uint8_t(*)[REG_KEY_LEN])keys, i, keys[i])) {
            reg__err(err, "%s[%zu]: repeated key", field, i);
            return RON_EREGDESC;
        }
    }
    *n_out = json_array_size(a);
    return 0;
}

static int
peers_from_json(json_t *a, reg_desc_t *d, reg_err_t *err)
{
    size_t i;
    json_t *v;
    if (!json_is_array(a)) {
        reg__err(err, "bootstrap: not an array");
        return RON_EREGDESC;
    }
    if (json_array_size(a) > REG_MAX_PEERS) {
        reg__err(err, "bootstrap: more than %u peers", REG_MAX_PEERS);
        return RON_EREGLIMIT;
    }
    json_array_foreach(a, i, v)
    {
        const char *s = json_string_value(v);
        size_t n = s != NULL ? json_string_length(v) : 0;
        if (s == NULL || !peer_ok(s, n)) {
            reg__err(err, "bootstrap[%zu]: not [ID@]HOST:PORT (1-%u printable bytes)", i,
                     REG_MAX_PEER_LEN);
            return RON_EREGDESC;
        }
        memcpy(d->peers[i], s, n + 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->peers[j], d->peers[i]) == 0) {
                reg__err(err, "bootstrap[%zu]: repeated peer", i);
                return RON_EREGDESC;
            }
    }
    d->n_peers = json_array_size(a);
    return 0;
}

static int
trusted_from_json(json_t *a, reg_desc_t *d, reg_err_t *err)
{
    static const char *const fields[] = {"name", "alg", "pk", NULL};
    size_t i;
    json_t *v;
    if (!json_is_array(a)) {
        reg__err(err, "trusted_keys: not an array");
        return RON_EREGDESC;
    }
    if (json_array_size(a) > REG_MAX_TRUSTED) {
        reg__err(err, "trusted_keys: more than %u keys", REG_MAX_TRUSTED);
        return RON_EREGLIMIT;
    }
    json_array_foreach(a, i, v)
    {
        json_t *name = json_object_get(v, "name");
        const char *alg = json_string_value(json_object_get(v, "alg"));
        const char *bad = json_is_object(v) ? unknown_key(v, fields) : "(not an object)";
        if (bad != NULL) {
            reg__err(err, "trusted_keys[%zu]: unknown field %.40s", i, bad);
            return RON_EREGDESC;
        }
        if (!json_is_string(name) ||
            !keyname_ok(json_string_value(name), json_string_length(name))) {
            reg__err(err, "trusted_keys[%zu].name: 1-%u bytes of [a-z0-9._-]", i, REG_MAX_KEYNAME);
            return RON_EREGDESC;
        }
        if (alg == NULL || strcmp(alg, "ed25519") != 0) {
            reg__err(err, "trusted_keys[%zu].alg: must be \"ed25519\"", i);
            return RON_EREGDESC;
        }
        if (hex32(json_object_get(v, "pk"), d->trusted[i].pk) < 0) {
            reg__err(err, "trusted_keys[%zu].pk: not 64 hex digits", i);
            return RON_EREGDESC;
        }
        memcpy(d->trusted[i].name, json_string_value(name), json_string_length(name) + 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->trusted[j].name, d->trusted[i].name) == 0) {
                reg__err(err, "trusted_keys[%zu].name: repeated", i);
                return RON_EREGDESC;
            }
    }
    d->n_trusted = json_array_size(a);
    return 0;
}

/* Fill d from the object o. */
static int
desc_from_json(json_t *o, reg_desc_t *d, reg_err_t *err)
{
    static const char *const sfields[] = {"threshold", "keys", NULL};
    const char *bad;
    json_t *sg;
    uint64_t v;
    int rc;

    memset(d, 0, sizeof *d);
    if (!json_is_object(o)) {
        reg__err(err, "descriptor: not a JSON object");
        return RON_EREGDESC;
    }
    if ((bad = unknown_key(o, desc_fields)) != NULL) {
        reg__err(err, "%.40s: unknown field", bad);
        return RON_EREGDESC;
    }
    for (size_t i = 0; desc_fields[i] != NULL; i++)
        if (json_object_get(o, desc_fields[i]) == NULL) {
            reg__err(err, "%s: missing", desc_fields[i]);
            return RON_EREGDESC;
        }
    if (uint_in(json_object_get(o, "v"), REG_FORMAT, REG_FORMAT, &v) < 0) {
        reg__err(err, "v: must be %u", REG_FORMAT);
        return RON_EREGDESC;
    }
    if (uint_in(json_object_get(o, "version"), 1, INT64_MAX, &d->version) < 0) {
        reg__err(err, "version: not an integer >= 1");
        return RON_EREGDESC;
    }
    if (b3hash(json_object_get(o, "prev"), d->prev) < 0) {
        reg__err(err, "prev: not b3:<64 hex>");
        return RON_EREGDESC;
    }
    if (b3hash(json_object_get(o, "policy"), d->policy) < 0) {
        reg__err(err, "policy: not b3:<64 hex>");
        return RON_EREGDESC;
    }
    if ((rc = peers_from_json(json_object_get(o, "bootstrap"), d, err)) < 0 ||
        (rc = trusted_from_json(json_object_get(o, "trusted_keys"), d, err)) < 0)
        return rc;
    sg = json_object_get(o, "signers");
    if (!json_is_object(sg) || (bad = unknown_key(sg, sfields)) != NULL) {
        reg__err(err, "signers: not an object of threshold and keys");
        return RON_EREGDESC;
    }
    if ((rc = key_list(json_object_get(sg, "keys"), "signers.keys", REG_MAX_SIGNERS, d->signers,
                       &d->n_signers, err)) < 0)
        return rc;
    if (d->n_signers == 0) {
        reg__err(err, "signers.keys: empty");
        return RON_EREGDESC;
    }
    if (uint_in(json_object_get(sg, "threshold"), 1, d->n_signers, &v) < 0) {
        reg__err(err, "signers.threshold: not an integer in 1..%zu", d->n_signers);
        return RON_EREGDESC;
    }
    d->threshold = (uint32_t)v;
    if ((rc = key_list(json_object_get(o, "revoked"), "revoked", REG_MAX_REVOKED, d->revoked,
                       &d->n_revoked, err)) < 0)
        return rc;
    for (size_t i = 0; i < d->n_revoked; i++)
        if (reg__is_signer(d, d->revoked[i])) {
            reg__err(err, "revoked[%zu]: is also a signer", i);
            return RON_EREGDESC;
        }
    return 0;
}

static json_t *
load_strict(const char *json, size_t len, reg_err_t *err)
{
    json_error_t jerr;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL)
        reg__err(err, "JSON: %.100s (line %d)", jerr.text, jerr.line);
    return o;
}

int
reg_desc_parse(const char *json, size_t len, reg_desc_t *d_out, reg_err_t *err)
{
    json_t *o;
    int rc;

    if (len > REG_MAX_DESC) {
        reg__err(err, "descriptor: over %u bytes", REG_MAX_DESC);
        return RON_EREGLIMIT;
    }
    if ((o = load_strict(json, len, err)) == NULL)
        return RON_EREGDESC;
    rc = desc_from_json(o, d_out, err);
    json_decref(o);
    return rc;
}

bool
reg__is_signer(const reg_desc_t *d, const uint8_t pk[static REG_KEY_LEN])
{
    return key_in((const uint8_t(*)[REG_KEY_LEN])d->signers, d->n_signers, pk);
}

bool
reg__is_revoked(const reg_desc_t *d, const uint8_t pk[static REG_KEY_LEN])
{
    return key_in((const uint8_t(*)[REG_KEY_LEN])d->revoked, d->n_revoked, pk);
}

static int
key_cmp(const void *a, const void *b)
{
    return memcmp(a, b, REG_KEY_LEN);
}

/* A growing text buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf_t;

static void
sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap != 0 ? 2 * b->cap : 4096;
        b->p = ron_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
sb_str(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void
sb_hex(sbuf_t *b, const uint8_t *bytes, size_t n, bool b3)
{
    char hex[2 * REG_SIG_LEN + 1];
    sb_str(b, b3 ? "\"b3:" : "\"");
    ron_hex_encode(hex, bytes, n);
    sb_put(b, hex, 2 * n);
    sb_str(b, "\"");
}

static void
sb_keys(sbuf_t *b, const uint8_t (*keys)[REG_KEY_LEN], size_t n)
{
    uint8_t sorted[REG_MAX_REVOKED][REG_KEY_LEN];
    memcpy(sorted, keys, n * REG_KEY_LEN);
    qsort(sorted, n, REG_KEY_LEN, key_cmp);
    sb_str(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sb_str(b, ",");
        sb_hex(b, sorted[i], REG_KEY_LEN, false);
    }
    sb_str(b, "]");
}

/* Defensive: d as built by a caller, not by the parser, must obey its rules. */
static bool
desc_valid(const reg_desc_t *d)
{
    if (d->version < 1 || d->version > INT64_MAX || d->n_peers > REG_MAX_PEERS ||
        d->n_trusted > REG_MAX_TRUSTED || d->n_signers == 0 || d->n_signers > REG_MAX_SIGNERS ||
        d->threshold < 1 || d->threshold > d->n_signers || d->n_revoked > REG_MAX_REVOKED)
        return false;
    for (size_t i = 0; i < d->n_peers; i++)
        if (!peer_ok(d->peers[i], strnlen(d->peers[i], REG_MAX_PEER_LEN + 1)))
            return false;
    for (size_t i = 0; i < d->n_trusted; i++)
        if (!keyname_ok(d->trusted[i].name, strnlen(d->trusted[i].name, REG_MAX_KEYNAME + 1)))
            return false;
    for (size_t i = 0; i < d->n_signers; i++)
        if (key_in((const uint8_t(*)[REG_KEY_LEN])d->signers, i, d->signers[i]))
            return false;
    for (size_t i = 0; i < d->n_revoked; i++)
        if (key_in((const uint8_t(*)[REG_KEY_LEN])d->revoked, i, d->revoked[i]) ||
            reg__is_signer(d, d->revoked[i]))
            return false;
    return true;
}

static void
desc_write(sbuf_t *b, const reg_desc_t *d)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)d->version);
    sb_str(b, "{\"v\":1,\"version\":");
    sb_str(b, num);
    sb_str(b, ",\"prev\":");
    sb_hex(b, d->prev, REG_HASH_LEN, true);
    sb_str(b, ",\"policy\":");
    sb_hex(b, d->policy, REG_HASH_LEN, true);
    sb_str(b, ",\"bootstrap\":[");
    for (size_t i = 0; i < d->n_peers; i++) {
        sb_str(b, i > 0 ? ",\"" : "\"");
        sb_str(b, d->peers[i]);
        sb_str(b, "\"");
    }
    sb_str(b, "],\"trusted_keys\":[");
    for (size_t i = 0; i < d->n_trusted; i++) {
        sb_str(b, i > 0 ? ",{\"name\":\"" : "{\"name\":\"");
        sb_str(b, d->trusted[i].name);
        sb_str(b, "\",\"alg\":\"ed25519\",\"pk\":");
        sb_hex(b, d->trusted[i].pk, REG_KEY_LEN, false);
        sb_str(b, "}");
    }
    snprintf(num, sizeof num, "%u", d->threshold);
    sb_str(b, "],\"signers\":{\"threshold\":");
    sb_str(b, num);
    sb_str(b, ",\"keys\":");
    sb_keys(b, (const uint8_t(*)[REG_KEY_LEN])d->signers, d->n_signers);
    sb_str(b, "},\"revoked\":");
    sb_keys(b, (const uint8_t(*)[REG_KEY_LEN])d->revoked, d->n_revoked);
    sb_str(b, "}");
}

int
reg_desc_encode(const reg_desc_t *d, char **out, size_t *out_len)
{
    sbuf_t b = {0};
    if (!desc_valid(d))
        return RON_EREGDESC;
    desc_write(&b, d);
    *out = b.p;
    *out_len = b.len;
    return 0;
}

int
reg_desc_id(const reg_desc_t *d, uint8_t id_out[static REG_HASH_LEN])
{
    char *txt;
    size_t n;
    blake3_hasher h;
    int rc = reg_desc_encode(d, &txt, &n);
    if (rc < 0)
        return rc;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, txt, n);
    blake3_hasher_finalize(&h, id_out, REG_HASH_LEN);
    free(txt);
    return 0;
}

void
reg_sign_message(const uint8_t id[static REG_HASH_LEN], uint8_t msg_out[static REG_SIGN_MSG_LEN])
{
    memcpy(msg_out, REG_SIGN_DOMAIN, sizeof REG_SIGN_DOMAIN); /* with its NUL */
    memcpy(msg_out + sizeof REG_SIGN_DOMAIN, id, REG_HASH_LEN);
}

int
reg_approval_sign(const uint8_t id[static REG_HASH_LEN], const uint8_t sk[static REG_SK_LEN],
                  uint8_t sig_out[static REG_SIG_LEN])
{
    uint8_t msg[REG_SIGN_MSG_LEN];
    reg_sign_message(id, msg);
    return crypto_sign_detached(sig_out, NULL, msg, sizeof msg, sk) == 0 ? 0 : RON_EAUTH;
}

bool
reg_approval_verifies(const uint8_t id[static REG_HASH_LEN], const uint8_t pk[static REG_KEY_LEN],
                      const uint8_t sig[static REG_SIG_LEN])
{
    uint8_t msg[REG_SIGN_MSG_LEN];
    reg_sign_message(id, msg);
    return crypto_sign_verify_detached(sig, msg, sizeof msg, pk) == 0;
}

/* ---- records ---- */

static int
appr_cmp(const void *a, const void *b)
{
    return memcmp(((const reg_approval_t *)a)->pk, ((const reg_approval_t *)b)->pk, REG_KEY_LEN);
}

int
reg__record_encode(reg_record_t *r, char **out, size_t *out_len)
{
    sbuf_t b = {0};
    if (!desc_valid(&r->desc) || r->n_appr > REG_MAX_SIGNERS)
        return RON_EREGDESC;
    qsort(r->appr, r->n_appr, sizeof r->appr[0], appr_cmp);
    sb_str(&b, "{\"descriptor\":");
    desc_write(&b, &r->desc);
    sb_str(&b, ",\"approvals\":[");
    for (size_t i = 0; i < r->n_appr; i++) {
        sb_str(&b, i > 0 ? ",{\"pk\":" : "{\"pk\":");
        sb_hex(&b, r->appr[i].pk, REG_KEY_LEN, false);
        sb_str(&b, ",\"sig\":");
        sb_hex(&b, r->appr[i].sig, REG_SIG_LEN, false);
        sb_str(&b, "}");
    }
    sb_str(&b, "],\"hash\":");
    sb_hex(&b, r->hash, REG_HASH_LEN, true);
    sb_str(&b, "}");
    *out = b.p;
    *out_len = b.len;
    return 0;
}

static int
approvals_from_json(json_t *a, reg_record_t *r, reg_err_t *err)
{
    static const char *const fields[] = {"pk", "sig", NULL};
    size_t i;
    json_t *v;
    if (!json_is_array(a) || json_array_size(a) > REG_MAX_SIGNERS) {
        reg__err(err, "approvals: not an array of at most %u", REG_MAX_SIGNERS);
        return RON_EREGCHAIN;
    }
    json_array_foreach(a, i, v)
    {
        const char *s = json_string_value(json_object_get(v, "sig"));
        if (!json_is_object(v) || unknown_key(v, fields) != NULL ||
            hex32(json_object_get(v, "pk"), r->appr[i].pk) < 0 || s == NULL ||
            strlen(s) != 2 * REG_SIG_LEN ||
            ron_hex_decode(r->appr[i].sig, REG_SIG_LEN, s, 2 * REG_SIG_LEN) < 0) {
            reg__err(err, "approvals[%zu]: not {pk, sig} in hex", i);
            return RON_EREGCHAIN;
        }
    }
    r->n_appr = json_array_size(a);
    return 0;
}

int
reg__record_parse(const char *line, size_t len, reg_record_t *r, reg_err_t *err)
{
    static const char *const fields[] = {"descriptor", "approvals", "hash", NULL};
    json_t *o = NULL;
    char *again = NULL;
    size_t alen;
    uint8_t id[REG_HASH_LEN];
    int rc = RON_EREGCHAIN;

    memset(r, 0, sizeof *r);
    if (len > REG_MAX_RECORD) {
        reg__err(err, "record over %u bytes", REG_MAX_RECORD);
        goto out;
    }
    if ((o = load_strict(line, len, err)) == NULL)
        goto out;
    if (!json_is_object(o) || unknown_key(o, fields) != NULL) {
        reg__err(err, "record: not an object of descriptor, approvals and hash");
        goto out;
    }
    if (desc_from_json(json_object_get(o, "descriptor"), &r->desc, err) < 0 ||
        approvals_from_json(json_object_get(o, "approvals"), r, err) < 0)
        goto out;
    if (b3hash(json_object_get(o, "hash"), r->hash) < 0) {
        reg__err(err, "hash: not b3:<64 hex>");
        goto out;
    }
    for (size_t i = 1; i < r->n_appr; i++)
        if (appr_cmp(&r->appr[i - 1], &r->appr[i]) >= 0) {
            reg__err(err, "approvals: not sorted by key or repeated");
            goto out;
        }
    if (reg__record_encode(r, &again, &alen) < 0 || alen != len || memcmp(again, line, len) != 0) {
        reg__err(err, "record is not in canonical form (edited)");
        goto out;
    }
    if (reg_desc_id(&r->desc, id) < 0 || memcmp(id, r->hash, REG_HASH_LEN) != 0) {
        reg__err(err, "hash does not match the descriptor (edited)");
        goto out;
    }
    rc = 0;
out:
    free(again);
    json_decref(o);
    return rc;
}

int
reg__check_link(const reg_desc_t *head, const uint8_t *head_hash, const reg_desc_t *d,
                reg_err_t *err)
{
    static const uint8_t zero[REG_HASH_LEN];
    uint64_t want = head != NULL ? head->version + 1 : 1;
    const uint8_t *prev = head != NULL ? head_hash : zero;

    if (d->version != want) {
        reg__err(err, "version %llu does not follow the head (expected %llu)",
                 (unsigned long long)d->version, (unsigned long long)want);
        return RON_EREGSTALE;
    }
    if (memcmp(d->prev, prev, REG_HASH_LEN) != 0) {
        reg__err(err, "prev is not the hash of version %llu", (unsigned long long)(want - 1));
        return RON_EREGSTALE;
    }
    for (size_t i = 0; head != NULL && i < head->n_revoked; i++)
        if (!reg__is_revoked(d, head->revoked[i])) {
            reg__err(err, "revoked: drops a key revoked at version %llu",
                     (unsigned long long)head->version);
            return RON_EREGDESC;
        }
    return 0;
}

int
reg__check_approvals(const reg_desc_t *in_force, const reg_record_t *r, reg_err_t *err)
{
    for (size_t i = 0; i < r->n_appr; i++) {
        for (size_t j = 0; j < i; j++)
            if (memcmp(r->appr[j].pk, r->appr[i].pk, REG_KEY_LEN) == 0) {
                reg__err(err, "approval %zu repeats a signer", i);
                return RON_EREGDUP;
            }
        if (!reg__is_signer(in_force, r->appr[i].pk)) {
            reg__err(err, "approval %zu is not from a signer in force", i);
            return RON_EREGSIGNER;
        }
        if (!reg_approval_verifies(r->hash, r->appr[i].pk, r->appr[i].sig)) {
            reg__err(err, "approval %zu: signature does not verify", i);
            return RON_EREGSIG;
        }
    }
    if (r->n_appr < in_force->threshold) {
        reg__err(err, "%zu approvals, the threshold is %u", r->n_appr, in_force->threshold);
        return RON_EREGQUORUM;
    }
    return 0;
}
