/*
 * pass.c - svc-passport's core: challenges, redeem (signature, policy,
 * minting), rotation by age and on demand, and the verifier over the keys
 * held now. Sans-I/O except the keyring file (pass_keyring.c); `now` comes
 * from the caller, so tests run a virtual clock.
 * Invariants: a challenge is in the outstanding set from issue until it is
 * swept (PASS_CHALLENGE_TTL after its expiry) and is redeemable at most once;
 * the internal verifier holds exactly the capability keys of the keyring
 * (rebuilt on every change); every secret is in sodium_malloc memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pass_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

typedef struct {
    uint8_t nonce[PASS_NONCE_LEN];
    int64_t expires;
    bool used;
} challenge_t;

struct pass {
    pass__keyring_t kr;
    uint8_t node_id[KMS_NODE_ID_LEN];
    pol_store_t *policy;
    auth_revocation_t *rev;
    guard_t *guard; /* mint under the node's keys; NULL: under our c<n> keys */
    int64_t rotate_every;
    int64_t grace;
    auth_verifier_t *verifier; /* the capability keys held now */
    challenge_t *ch;           /* PASS_MAX_CHALLENGES slots */
    size_t n_ch;
};

static const char *const reason_names[PASS_REASON_COUNT] = {
    "ok", "foreign", "replay", "expired", "signature", "policy",
};

const char *
pass_reason_name(pass_reason_t r)
{
    return (unsigned)r < PASS_REASON_COUNT ? reason_names[r] : "?";
}

int
pass_reason_code(pass_reason_t r)
{
    switch (r) {
    case PASS_OK:
        return 0;
    case PASS_DENY_FOREIGN:
        return RON_EPASSFOREIGN;
    case PASS_DENY_REPLAY:
        return RON_EPASSREPLAY;
    case PASS_DENY_EXPIRED:
        return RON_EPASSEXPIRED;
    case PASS_DENY_SIGNATURE:
        return RON_EPASSSIG;
    default:
        return RON_EPASSDENY;
    }
}

const char *
pass_key_kind_name(pass_key_kind_t k)
{
    return k == PASS_KEY_CAP ? "cap" : k == PASS_KEY_SIGN ? "sign" : "?";
}

/* ---- messages ---- */

static void
put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void
pass_redeem_message(const uint8_t node_id[static KMS_NODE_ID_LEN], const pass_redeem_t *r,
                    uint8_t out[static PASS_MSG_LEN])
{
    uint8_t *o = out;
    memset(o, 0, 24);
    memcpy(o, PASS_REDEEM_DOMAIN, sizeof PASS_REDEEM_DOMAIN);
    o += 24;
    memcpy(o, node_id, KMS_NODE_ID_LEN);
    o += KMS_NODE_ID_LEN;
    memcpy(o, r->nonce, PASS_NONCE_LEN);
    o += PASS_NONCE_LEN;
    memcpy(o, r->pk, KMS_PK_LEN);
    o += KMS_PK_LEN;
    put_u32(o, r->ops);
    put_u32(o + 4, r->ttl);
    o[8] = r->has_tenant ? 1 : 0;
    o += 9;
    if (r->has_tenant)
        memcpy(o, r->tenant, AUTH_TENANT_LEN);
    else
        memset(o, 0, AUTH_TENANT_LEN);
}

void
pass_challenge_message(const pass_challenge_t *c, uint8_t out[static PASS_CHALLENGE_MSG_LEN])
{
    uint64_t e = (uint64_t)c->expires;
    memset(out, 0, 28);
    memcpy(out, PASS_CHALLENGE_DOMAIN, sizeof PASS_CHALLENGE_DOMAIN);
    memcpy(out + 28, c->node_id, KMS_NODE_ID_LEN);
    memcpy(out + 60, c->nonce, PASS_NONCE_LEN);
    for (int i = 0; i < 8; i++)
        out[92 + i] = (uint8_t)(e >> (56 - 8 * i));
}

/* ---- keys ---- */

/* Rebuild the internal verifier from the keyring. */
static void
verifier_rebuild(pass_t *p)
{
    auth_verifier_t *v = auth_verifier_new(p->rev, 0);
    if (v == NULL)
        abort(); /* cache_slots 0 is always in range */
    auth_verifier_free(p->verifier);
    p->verifier = v;
    (void)pass_verifier_load(p, v); /* kids and key sizes are ours: cannot fail */
}

int
pass_verifier_load(const pass_t *p, auth_verifier_t *v)
{
    int rc;
    for (size_t i = 0; i < p->kr.n; i++) {
        const pass__key_t *k = &p->kr.keys[i];
        if (k->kind != PASS_KEY_CAP)
            continue;
        if ((rc = auth_verifier_add_key(v, k->kid, k->secret, PASS__SECRET_LEN)) < 0)
            return rc;
    }
    return 0;
}

/* Rotate by age and drop ended graces in RAM. Returns changes. */
static int
keys_tick(pass_t *p, int64_t now)
{
    static const pass_key_kind_t kinds[] = {PASS_KEY_CAP, PASS_KEY_SIGN};
    int changes = 0;
    for (size_t i = 0; i < RON_ARRAY_LEN(kinds); i++) {
        const pass__key_t *cur = pass__keyring_current(&p->kr, kinds[i]);
        if (kinds[i] == PASS_KEY_CAP && p->guard != NULL)
            continue; /* tokens are minted under the node's keys */
        if (cur == NULL || now - cur->created >= p->rotate_every) {
            pass__keyring_add(&p->kr, kinds[i], now);
            changes++;
        }
    }
    changes += pass__keyring_drop(&p->kr, p->grace, now);
    if (p->guard != NULL) /* c<n> keys of a keyring from before: nothing needs them */
        changes += pass__keyring_drop_kind(&p->kr, PASS_KEY_CAP);
    return changes;
}

int
pass_tick(pass_t *p, int64_t now)
{
    int changes = keys_tick(p, now), rc;
    if (changes == 0)
        return 0;
    verifier_rebuild(p);
    ron_info("passport: keys rotated or dropped (cap %s, sign %s)",
             pass_current_kid(p, PASS_KEY_CAP), pass_current_kid(p, PASS_KEY_SIGN));
    if ((rc = pass__keyring_save(&p->kr)) < 0)
        return rc;
    return changes;
}

int
pass_rotate(pass_t *p, unsigned kinds, int64_t now)
{
    if ((kinds & PASS_KEYS_ALL) == 0 || (kinds & ~PASS_KEYS_ALL) != 0)
        return RON_EINVAL;
    if ((kinds & (1u << PASS_KEY_CAP)) != 0 && p->guard == NULL) /* else: the node rotates */
        pass__keyring_add(&p->kr, PASS_KEY_CAP, now);
    if (kinds & (1u << PASS_KEY_SIGN))
        pass__keyring_add(&p->kr, PASS_KEY_SIGN, now);
    (void)pass__keyring_drop(&p->kr, p->grace, now);
    verifier_rebuild(p);
    ron_info("passport: keys rotated on demand (cap %s, sign %s)",
             pass_current_kid(p, PASS_KEY_CAP), pass_current_kid(p, PASS_KEY_SIGN));
    return pass__keyring_save(&p->kr);
}

void
pass_keys(const pass_t *p, pass_key_info_t *keys, size_t cap, size_t *n_out)
{
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) /* current keys first */
        for (size_t i = 0; i < p->kr.n && n < cap; i++) {
            const pass__key_t *k = &p->kr.keys[i];
            if ((k->retired == 0) != (pass == 0))
                continue;
            memset(&keys[n], 0, sizeof keys[n]);
            keys[n].kind = (pass_key_kind_t)k->kind;
            memcpy(keys[n].kid, k->kid, sizeof k->kid);
            keys[n].created = k->created;
            keys[n].retired = k->retired;
            keys[n].drop_at = k->retired != 0 ? k->retired + p->grace : 0;
            if (k->kind == PASS_KEY_SIGN)
                memcpy(keys[n].pk, k->pk, KMS_PK_LEN);
            n++;
        }
    *n_out = n;
}

const char *
pass_current_kid(const pass_t *p, pass_key_kind_t kind)
{
    const pass__key_t *k = pass__keyring_current((pass__keyring_t *)&p->kr, kind);
    return k != NULL ? k->kid : "";
}

int
pass_verify(pass_t *p, const char *token, size_t len, const auth_request_t *req,
            auth_verdict_t *out)
{
    return auth_verify(p->verifier, token, len, req, out);
}

/* ---- lifecycle ---- */

/* kms_key_export_to callback: derive the keyring seal from the identity seed. */
static int
seal_derive(const uint8_t *seed, size_t len, void *arg)
{
    static const char ctx[] = "ron-passport keyring seal v1";
    return crypto_generichash(arg, PASS__SECRET_LEN, (const uint8_t *)ctx, sizeof ctx - 1, seed,
                              len) == 0
               ? 0
               : RON_EAUTH;
}

/* The keyring seal for kms into *seal_out (sodium memory, caller frees), or
 * NULL when the node's keys are unsealed. Returns 0 or a kms error. */
static int
seal_for(const kms_keystore_t *kms, uint8_t **seal_out)
{
    uint8_t *seal;
    int rc;

    *seal_out = NULL;
    if (kms_keystore_seal(kms) == KMS_SEAL_NONE)
        return 0;
    seal = sodium_malloc(PASS__SECRET_LEN);
    if (seal == NULL)
        abort();
    if ((rc = kms_key_export_to(kms_keystore_identity(kms), seal_derive, seal)) < 0) {
        sodium_free(seal);
        return rc;
    }
    *seal_out = seal;
    return 0;
}

int
pass_keyring_load_verifier(const char *path, const kms_keystore_t *kms, int64_t grace,
                           int64_t now, auth_verifier_t *v)
{
    pass__keyring_t kr;
    uint8_t *seal = NULL;
    int rc;

    if (sodium_init() < 0)
        abort();
    if ((rc = seal_for(kms, &seal)) < 0)
        return rc;
    pass__keyring_init(&kr, path, seal);
    sodium_free(seal);
    rc = pass__keyring_load(&kr);
    if (rc == 1)
        rc = RON_ENOTFOUND;
    for (size_t i = 0; rc == 0 && i < kr.n; i++) {
        const pass__key_t *k = &kr.keys[i];
        if (k->kind != PASS_KEY_CAP || (k->retired != 0 && k->retired <= now - grace))
            continue;
        rc = auth_verifier_add_key(v, k->kid, k->secret, PASS__SECRET_LEN);
    }
    pass__keyring_close(&kr);
    return rc;
}

int
pass_new(const pass_opts_t *o, int64_t now, pass_t **p_out, char *err, size_t errcap)
{
    uint8_t *seal = NULL;
    pass_t *p = NULL;
    int rc;

    if (sodium_init() < 0)
        abort(); /* no usable randomness: nothing here may run */
    if (o->kms == NULL || o->policy == NULL || o->rotate_every < 0 ||
        o->rotate_every > PASS_ROTATE_MAX || o->grace < 0) {
        snprintf(err, errcap, "passport: options out of range (rotate_every 0..%d s, grace >= 0)",
                 PASS_ROTATE_MAX);
        return RON_EINVAL;
    }
    p = ron_xcalloc(1, sizeof *p);
    p->policy = o->policy;
    p->rev = o->rev;
    p->guard = o->guard;
    p->rotate_every = o->rotate_every != 0 ? o->rotate_every : PASS_ROTATE_MAX;
    p->grace = o->grace != 0 ? o->grace : PASS_GRACE_DEFAULT;
    p->ch = ron_xcalloc(PASS_MAX_CHALLENGES, sizeof *p->ch);
    kms_keystore_node_id(o->kms, p->node_id);
    if (o->keyring_path != NULL && kms_keystore_seal(o->kms) != KMS_SEAL_NONE) {
        if ((rc = seal_for(o->kms, &seal)) < 0) {
            snprintf(err, errcap, "passport: cannot derive the keyring seal: %s",
                     ron_strerror(rc));
            goto out;
        }
    } else if (o->keyring_path != NULL) {
        ron_warn("passport: the node's keys are unsealed, so the keyring %s is stored UNSEALED "
                 "(mode 0600); set RON_PASSPHRASE or RON_ROOT_SECRET_FILE",
                 o->keyring_path);
    }
    pass__keyring_init(&p->kr, o->keyring_path, seal);
    if (o->keyring_path != NULL) {
        rc = pass__keyring_load(&p->kr);
        if (rc < 0) {
            snprintf(err, errcap, "passport: keyring %s: %s", o->keyring_path, ron_strerror(rc));
            goto out;
        }
    }
    if (keys_tick(p, now) > 0 && (rc = pass__keyring_save(&p->kr)) < 0) {
        snprintf(err, errcap, "passport: cannot write the keyring %s: %s", o->keyring_path,
                 ron_strerror(rc));
        goto out;
    }
    verifier_rebuild(p);
    *p_out = p;
    p = NULL;
    rc = 0;
out:
    sodium_free(seal);
    pass_free(p);
    return rc;
}

void
pass_free(pass_t *p)
{
    if (p == NULL)
        return;
    pass__keyring_close(&p->kr);
    auth_verifier_free(p->verifier);
    sodium_memzero(p->ch, PASS_MAX_CHALLENGES * sizeof *p->ch);
    free(p->ch);
    free(p);
}

void
pass_node_id(const pass_t *p, uint8_t id_out[static KMS_NODE_ID_LEN])
{
    memcpy(id_out, p->node_id, KMS_NODE_ID_LEN);
}

/* ---- challenges ---- */

static void
challenges_sweep(pass_t *p, int64_t now)
{
    size_t w = 0;
    for (size_t i = 0; i < p->n_ch; i++)
        if (p->ch[i].expires + PASS_CHALLENGE_TTL >= now)
            p->ch[w++] = p->ch[i];
    p->n_ch = w;
}

int
pass_challenge_issue(pass_t *p, int64_t now, pass_challenge_t *out)
{
    const pass__key_t *sk = pass__keyring_current(&p->kr, PASS_KEY_SIGN);
    uint8_t msg[PASS_CHALLENGE_MSG_LEN];
    challenge_t *c;

    challenges_sweep(p, now);
    if (p->n_ch >= PASS_MAX_CHALLENGES)
        return RON_EBUSY;
    c = &p->ch[p->n_ch++];
    randombytes_buf(c->nonce, sizeof c->nonce);
    c->expires = now + PASS_CHALLENGE_TTL;
    c->used = false;
    memset(out, 0, sizeof *out);
    memcpy(out->nonce, c->nonce, PASS_NONCE_LEN);
    out->expires = c->expires;
    memcpy(out->node_id, p->node_id, KMS_NODE_ID_LEN);
    snprintf(out->sign_kid, sizeof out->sign_kid, "%s", sk->kid);
    pass_challenge_message(out, msg);
    crypto_sign_detached(out->sig, NULL, msg, sizeof msg, sk->sk);
    return 0;
}

size_t
pass_challenge_count(const pass_t *p)
{
    return p->n_ch;
}

/* ---- redeem ---- */

/* Evaluate policy for every op of r; fills rule/op on a deny and the
 * smallest rate obligation. Returns true when every op is allowed. */
static bool
policy_allows(pass_t *p, const pass_redeem_t *r, pass_result_t *out)
{
    char pkhex[2 * KMS_PK_LEN + 1];
    const char *tags[2] = {PASS_POLICY_TAG, pkhex};
    pol_policy_t *pol = pol_store_acquire(p->policy);
    pol_request_t req = {0};
    pol_decision_t d;
    bool ok = true;

    ron_hex_encode(pkhex, r->pk, KMS_PK_LEN);
    req.anonymous = false;
    req.has_tenant = r->has_tenant;
    memcpy(req.tenant, r->tenant, POL_TENANT_LEN);
    req.tags = tags;
    req.n_tags = 2;
    for (int op = 0; op < AUTH_OP_COUNT && ok; op++) {
        if (!(r->ops & (1u << op)))
            continue;
        req.op = (pol_op_t)op; /* the two vocabularies are the same, in the same order */
        if (pol_eval(pol, &req, &d) < 0 || d.effect != POL_ALLOW) {
            snprintf(out->rule_id, sizeof out->rule_id, "%s", d.rule_id);
            snprintf(out->denied_op, sizeof out->denied_op, "%s", auth_op_name((auth_op_t)op));
            ok = false;
        } else if (d.obligations.rate != 0 &&
                   (out->rate == 0 || d.obligations.rate < out->rate)) {
            out->rate = d.obligations.rate;
        }
    }
    pol_policy_unref(pol);
    return ok;
}

/*
 * Mint under the node's keys with the guard: a full parent grant narrowed to
 * r's ops, ttl and tenant, then cavs[0..n) appended (they only narrow).
 */
static int
mint_guard(pass_t *p, const pass_redeem_t *r, const char *const cavs[static 5], size_t n,
           pass_result_t *out)
{
    guard_mint_req_t m = {.ops = r->ops, .ttl = out->ttl,
                          .tenant = r->has_tenant ? r->tenant : NULL};
    char actor[32], pkhex[2 * KMS_PK_LEN + 1];
    char *tok = sodium_malloc(AUTH_MAX_TOKEN + 1);
    auth_token_t *t = ron_xmalloc(sizeof *t);
    const char *add[5];
    size_t n_add = 0;
    auth_grant_t all;
    auth_id_t id;
    long len;
    int rc;

    if (tok == NULL)
        abort();
    auth_grant_init(&all);
    ron_hex_encode(pkhex, r->pk, KMS_PK_LEN);
    snprintf(actor, sizeof actor, "passport:%.16s", pkhex);
    len = guard_mint(p->guard, &all, actor, &m, tok, AUTH_MAX_TOKEN + 1, out->id);
    if (len < 0) {
        rc = (int)len;
        goto out;
    }
    if ((rc = auth_token_parse(tok, (size_t)len, t)) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) { /* append only what guard_mint did not write */
        bool have = false;
        for (size_t k = 0; k < t->n_caveats && !have; k++)
            have = strcmp(t->caveats[k], cavs[i]) == 0;
        if (!have)
            add[n_add++] = cavs[i];
    }
    len = auth_attenuate(tok, (size_t)len, add, n_add, out->token, sizeof out->token);
    if (len < 0) {
        rc = (int)len;
        goto out;
    }
    out->token_len = (size_t)len;
    if ((rc = auth_id_parse(out->id, strlen(out->id), &id)) < 0)
        goto out;
    snprintf(out->kid, sizeof out->kid, "%s", id.kid);
    rc = 0;
out:
    sodium_free(tok); /* wiped */
    free(t);
    return rc;
}

/* Mint the token for r (policy already allowed it). */
static int
mint(pass_t *p, const pass_redeem_t *r, int64_t now, pass_result_t *out)
{
    const pass__key_t *ck = pass__keyring_current(&p->kr, PASS_KEY_CAP);
    char cav[5][80];
    const char *cavs[5];
    size_t n = 0, o;
    long len;
    int rc;

    out->ttl = r->ttl == 0 ? PASS_TTL_DEFAULT : r->ttl > PASS_TTL_MAX ? PASS_TTL_MAX : r->ttl;
    out->expires = now + out->ttl;
    out->ops = r->ops;
    o = (size_t)snprintf(cav[n], sizeof cav[n], "ops = ");
    for (int op = 0; op < AUTH_OP_COUNT; op++)
        if (r->ops & (1u << op))
            o += (size_t)snprintf(cav[n] + o, sizeof cav[n] - o, "%s%s",
                                  cav[n][o - 1] == ' ' ? "" : ",", auth_op_name((auth_op_t)op));
    n++;
    snprintf(cav[n++], sizeof cav[0], "expires = %lld", (long long)out->expires);
    snprintf(cav[n++], sizeof cav[0], "not-before = %lld", (long long)now);
    if (r->has_tenant) {
        char hex[2 * AUTH_TENANT_LEN + 1];
        ron_hex_encode(hex, r->tenant, AUTH_TENANT_LEN);
        snprintf(cav[n++], sizeof cav[0], "tenant = %s", hex);
    }
    if (out->rate != 0)
        snprintf(cav[n++], sizeof cav[0], "rate = %u/s", out->rate);
    for (size_t i = 0; i < n; i++)
        cavs[i] = cav[i];
    if (p->guard != NULL)
        return mint_guard(p, r, cavs, n, out);
    snprintf(out->kid, sizeof out->kid, "%s", ck->kid);
    rc = auth_id_new(out->id, ck->kid, p->rev != NULL ? auth_revocation_epoch(p->rev) : 0);
    if (rc < 0)
        return rc;
    len = auth_mint(ck->secret, PASS__SECRET_LEN, out->id, cavs, n, out->token, sizeof out->token);
    if (len < 0)
        return (int)len;
    out->token_len = (size_t)len;
    return 0;
}

int
pass_redeem(pass_t *p, const pass_redeem_t *r, int64_t now, pass_result_t *out)
{
    uint8_t msg[PASS_MSG_LEN];
    challenge_t *c = NULL;

    memset(out, 0, sizeof *out);
    if (r->ops == 0 || (r->ops & ~AUTH_OPS_ALL) != 0)
        return RON_EINVAL;
    for (size_t i = 0; i < p->n_ch && c == NULL; i++)
        if (memcmp(p->ch[i].nonce, r->nonce, PASS_NONCE_LEN) == 0)
            c = &p->ch[i];
    if (c == NULL)
        out->reason = PASS_DENY_FOREIGN;
    else if (c->used)
        out->reason = PASS_DENY_REPLAY;
    else if (now > c->expires)
        out->reason = PASS_DENY_EXPIRED;
    if (c != NULL)
        c->used = true; /* every attempt uses the challenge up */
    if (out->reason != PASS_OK)
        return pass_reason_code(out->reason);
    pass_redeem_message(p->node_id, r, msg);
    if (kms_verify(r->pk, msg, sizeof msg, r->sig) < 0) {
        out->reason = PASS_DENY_SIGNATURE;
        return RON_EPASSSIG;
    }
    if (!policy_allows(p, r, out)) {
        out->reason = PASS_DENY_POLICY;
        return RON_EPASSDENY;
    }
    return mint(p, r, now, out);
}
