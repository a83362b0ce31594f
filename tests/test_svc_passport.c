/*
 * test_svc_passport.c - svc-passport: challenge/response against real
 * Ed25519 keys, real policy bundles and real ron-auth tokens; the keyring
 * on disk (sealed under a real ron-kms key store, tampering refused);
 * rotation by age on a virtual clock; the strict request parser; the
 * passport protocol over a real in-process ron-bus. Every wait is bounded.
 */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "bus_fixture.h"
#include "pass_internal.h"
#include "pass_service.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"

#define T0 1900000000LL /* virtual clock start, unix s */
#define DAY 86400LL
#define WAIT_MS 10000u

typedef struct {
    kms_keystore_t *kms;
    pol_store_t *pol;
    auth_revocation_t *rev;
    pass_t *p;
    uint8_t pk[32], sk[64]; /* the key holder */
    char pkhex[65];
    char tmp[64];
} fx_t;

static kms_keystore_t *
kms_ram(void)
{
    kms_opts_t o = {.amnesia = true, .create = true};
    kms_keystore_t *ks = NULL;
    char err[256];
    assert_int_equal(kms_keystore_open(&o, &ks, err, sizeof err), 0);
    return ks;
}

/* A policy that grants the holder's key get and put (with a rate), denies it
 * admin explicitly, and denies everything else by default. */
static pol_store_t *
policy_for(const char *pkhex)
{
    char js[1024];
    pol_err_t err;
    pol_policy_t *p;
    snprintf(js, sizeof js,
             "{\"version\":1,\"rules\":["
             "{\"id\":\"holder-rw\",\"effect\":\"allow\",\"match\":{\"tags\":[\"passport\",\"%s\"],"
             "\"ops\":[\"get\",\"put\"]},\"obligations\":{\"rate\":\"50/s\"}},"
             "{\"id\":\"holder-pin\",\"effect\":\"allow\",\"match\":{\"tags\":[\"%s\"],"
             "\"ops\":[\"pin\"]}},"
             "{\"id\":\"no-admin\",\"effect\":\"deny\",\"match\":{\"ops\":[\"admin\"]}}]}",
             pkhex, pkhex);
    p = pol_compile(js, strlen(js), &err);
    if (p == NULL)
        fail_msg("policy: %s", err.msg);
    return pol_store_new(p);
}

static void
fx_open_with(fx_t *fx, const char *keyring, int64_t rotate_every, int64_t grace)
{
    pass_opts_t o = {0};
    char err[256];
    if (fx->kms == NULL)
        fx->kms = kms_ram();
    if (fx->pol == NULL) {
        crypto_sign_keypair(fx->pk, fx->sk);
        ron_hex_encode(fx->pkhex, fx->pk, 32);
        fx->pol = policy_for(fx->pkhex);
        fx->rev = auth_revocation_new(1000);
    }
    o.keyring_path = keyring;
    o.kms = fx->kms;
    o.policy = fx->pol;
    o.rev = fx->rev;
    o.rotate_every = rotate_every;
    o.grace = grace;
    if (pass_new(&o, T0, &fx->p, err, sizeof err) != 0)
        fail_msg("pass_new: %s", err);
}

static void
fx_open(fx_t *fx)
{
    memset(fx, 0, sizeof *fx);
    assert_true(sodium_init() >= 0);
    fx_open_with(fx, NULL, 0, 0);
}

static void
fx_close(fx_t *fx)
{
    pass_free(fx->p);
    pol_store_free(fx->pol);
    auth_revocation_free(fx->rev);
    kms_keystore_free(fx->kms);
    if (fx->tmp[0] != '\0')
        bus_fx_rm_tree(fx->tmp);
}

/* Answer challenge c for ops/ttl with the secret key sk (of pk). */
static void
answer(const pass_challenge_t *c, const uint8_t pk[32], const uint8_t sk[64], uint32_t ops,
       uint32_t ttl, pass_redeem_t *r)
{
    uint8_t msg[PASS_MSG_LEN];
    memset(r, 0, sizeof *r);
    memcpy(r->nonce, c->nonce, PASS_NONCE_LEN);
    memcpy(r->pk, pk, 32);
    r->ops = ops;
    r->ttl = ttl;
    pass_redeem_message(c->node_id, r, msg);
    crypto_sign_detached(r->sig, NULL, msg, sizeof msg, sk);
}

static const uint32_t GETPUT = 1u << AUTH_OP_GET | 1u << AUTH_OP_PUT;

static int
verify_at(fx_t *fx, const char *token, auth_op_t op, int64_t now, auth_verdict_t *vd)
{
    auth_request_t req = {.op = op, .size = AUTH_SIZE_UNKNOWN, .now = now};
    return pass_verify(fx->p, token, strlen(token), &req, vd);
}

/* ---- challenge/response ---- */

/* The guard's decision on token for op at the node's boundaries. */
static int
guard_on(guard_t *g, const char *token, auth_op_t op, guard_result_t *res)
{
    guard_req_t req = {.op = op, .token = token, .token_len = strlen(token),
                       .size = AUTH_SIZE_UNKNOWN, .target = "test"};
    return guard_check(g, &req, res);
}

static void
test_pass_with_the_node_guard_mints_tokens_every_boundary_verifies(void **state)
{
    fx_t fx;
    uint8_t seed[32], master[GUARD_MASTER_LEN];
    guard_authority_opts_t ao = {0};
    guard_opts_t go = {0};
    guard_authority_t *a = NULL;
    guard_t *g = NULL;
    guard_entry_t e[GUARD_SYNC_PAGE];
    guard_result_t gr;
    pass_opts_t o = {0};
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    auth_token_t tok;
    bool more = false;
    size_t n;
    int64_t now = ron_unix_time();
    char err[256], ring[96];
    (void)state;

    /* the node: an authority in RAM and the guard of the passport's process */
    memset(seed, 7, sizeof seed);
    guard_master_derive(seed, master);
    ao.master = master;
    go.service = "passport";
    go.master = master;
    assert_int_equal(guard_authority_open(&ao, now, &a), 0);
    assert_int_equal(guard_new(&go, &g), 0);
    n = guard_authority_since(a, 0, e, GUARD_SYNC_PAGE, &more);
    assert_int_equal(guard_apply(g, 0, guard_authority_head(a), e, n), 0);

    memset(&fx, 0, sizeof fx);
    fx.kms = kms_ram();
    crypto_sign_keypair(fx.pk, fx.sk);
    ron_hex_encode(fx.pkhex, fx.pk, 32);
    fx.pol = policy_for(fx.pkhex);
    o.kms = fx.kms;
    o.policy = fx.pol;
    /* a keyring written by a passport without a guard holds a c<n> key ... */
    snprintf(fx.tmp, sizeof fx.tmp, "/tmp/ron-pass-XXXXXX");
    assert_non_null(mkdtemp(fx.tmp));
    snprintf(ring, sizeof ring, "%s/keyring", fx.tmp);
    o.keyring_path = ring;
    assert_int_equal(pass_new(&o, now, &fx.p, err, sizeof err), 0);
    assert_string_not_equal(pass_current_kid(fx.p, PASS_KEY_CAP), "");
    pass_free(fx.p);
    /* ... which a passport with the node's guard drops at open */
    o.guard = g;
    assert_int_equal(pass_new(&o, now, &fx.p, err, sizeof err), 0);
    /* no capability key of its own: only the signing key */
    {
        pass_key_info_t keys[4];
        pass_keys(fx.p, keys, 4, &n);
        assert_int_equal(n, 1);
        assert_int_equal(keys[0].kind, PASS_KEY_SIGN);
        assert_string_equal(pass_current_kid(fx.p, PASS_KEY_CAP), "");
        assert_int_equal(pass_rotate(fx.p, 1u << PASS_KEY_CAP, now), 0);
        pass_keys(fx.p, keys, 4, &n);
        assert_int_equal(n, 1);
        /* and the file says so: opened again, still only the signing key */
        pass_free(fx.p);
        assert_int_equal(pass_new(&o, now, &fx.p, err, sizeof err), 0);
        pass_keys(fx.p, keys, 4, &n);
        assert_int_equal(n, 1);
    }
    assert_int_equal(pass_challenge_issue(fx.p, now, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT, 600, &r);
    assert_int_equal(pass_redeem(fx.p, &r, now, &res), 0);
    /* under the node's current kid, not the passport's c<n> */
    assert_string_equal(res.kid, guard_authority_kid(a));
    assert_int_equal(res.expires, now + 600);
    assert_int_equal(auth_token_parse(res.token, res.token_len, &tok), 0);
    assert_string_equal(tok.id_str, res.id);
    assert_true(tok.grant.ops == GETPUT && tok.grant.rate == 50 && tok.grant.expires <= now + 600);
    for (size_t i = 0; i < tok.n_caveats; i++) /* no caveat written twice */
        for (size_t k = i + 1; k < tok.n_caveats; k++)
            assert_string_not_equal(tok.caveats[i], tok.caveats[k]);
    /* the guard (any boundary's) allows what was granted, nothing more */
    assert_int_equal(guard_on(g, res.token, AUTH_OP_PUT, &gr), 0);
    assert_int_equal(guard_on(g, res.token, AUTH_OP_PIN, &gr), RON_ECAPDENY);
    assert_int_equal(gr.status, 403);
    /* and it revokes like any node token */
    assert_int_equal(guard_authority_revoke(a, res.id, strlen(res.id), 0, now, &e[0]), 0);
    assert_int_equal(guard_apply(g, e[0].seq - 1, e[0].seq, e, 1), 0);
    assert_int_equal(guard_on(g, res.token, AUTH_OP_GET, &gr), RON_ECAPREVOKED);
    assert_string_equal(gr.slug, "capability_revoked");
    fx_close(&fx);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_pass_signed_challenge_gets_token_for_granted_ops(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    auth_token_t tok;
    auth_verdict_t vd;
    uint8_t msg[PASS_CHALLENGE_MSG_LEN], node[32];
    pass_key_info_t keys[4];
    size_t n;
    char exp[64];
    (void)state;

    fx_open(&fx);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    assert_int_equal(c.expires, T0 + PASS_CHALLENGE_TTL);
    kms_keystore_node_id(fx.kms, node);
    assert_memory_equal(c.node_id, node, 32);
    /* the challenge is signed by the passport's current signing key */
    pass_keys(fx.p, keys, 4, &n);
    assert_int_equal(n, 2);
    pass_challenge_message(&c, msg);
    for (size_t i = 0; i < n; i++)
        if (keys[i].kind == PASS_KEY_SIGN) {
            assert_string_equal(keys[i].kid, c.sign_kid);
            assert_int_equal(kms_verify(keys[i].pk, msg, sizeof msg, c.sig), 0);
        }

    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0 + 1, &res), 0);
    assert_int_equal(res.reason, PASS_OK);
    assert_int_equal(res.ttl, PASS_TTL_DEFAULT);
    assert_int_equal(res.expires, T0 + 1 + 3600);
    assert_int_equal(res.rate, 50);
    assert_string_equal(res.kid, pass_current_kid(fx.p, PASS_KEY_CAP));
    assert_int_equal(res.token_len, strlen(res.token));

    assert_int_equal(auth_token_parse(res.token, res.token_len, &tok), 0);
    assert_string_equal(tok.id_str, res.id);
    assert_string_equal(tok.id.kid, res.kid);
    assert_int_equal(tok.n_caveats, 4);
    assert_string_equal(tok.caveats[0], "ops = get,put");
    snprintf(exp, sizeof exp, "expires = %lld", (long long)(T0 + 1 + 3600));
    assert_string_equal(tok.caveats[1], exp);
    assert_string_equal(tok.caveats[3], "rate = 50/s");

    assert_int_equal(verify_at(&fx, res.token, AUTH_OP_PUT, T0 + 10, &vd), 0);
    assert_int_equal(verify_at(&fx, res.token, AUTH_OP_PIN, T0 + 10, &vd), RON_ECAPDENY);
    assert_int_equal(verify_at(&fx, res.token, AUTH_OP_GET, T0 + 2 * 3600, &vd), RON_ECAPEXPIRED);
    fx_close(&fx);
}

static void
test_pass_tenant_is_bound_into_the_token(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    auth_token_t tok;
    uint8_t msg[PASS_MSG_LEN];
    (void)state;

    fx_open(&fx);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, 1u << AUTH_OP_GET, 600, &r);
    r.has_tenant = true;
    memset(r.tenant, 0xab, sizeof r.tenant);
    pass_redeem_message(c.node_id, &r, msg); /* the tenant is part of what is signed */
    crypto_sign_detached(r.sig, NULL, msg, sizeof msg, fx.sk);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), 0);
    assert_int_equal(auth_token_parse(res.token, res.token_len, &tok), 0);
    assert_true(tok.grant.has_tenant);
    assert_memory_equal(tok.grant.tenant, r.tenant, 16);
    assert_int_equal(res.ttl, 600);
    fx_close(&fx);
}

static void
test_pass_replayed_challenge_is_refused(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    (void)state;

    fx_open(&fx);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), 0);
    assert_int_equal(pass_redeem(fx.p, &r, T0 + 1, &res), RON_EPASSREPLAY);
    assert_int_equal(res.reason, PASS_DENY_REPLAY);
    assert_string_equal(pass_reason_name(res.reason), "replay");
    assert_int_equal(res.token_len, 0);
    fx_close(&fx);
}

static void
test_pass_expired_challenge_is_refused(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    (void)state;

    fx_open(&fx);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0 + PASS_CHALLENGE_TTL + 1, &res), RON_EPASSEXPIRED);
    assert_string_equal(pass_reason_name(res.reason), "expired");
    /* at its expiry exactly it still works */
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0 + PASS_CHALLENGE_TTL, &res), 0);
    fx_close(&fx);
}

static void
test_pass_foreign_challenge_is_refused(void **state)
{
    fx_t fx, other;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    (void)state;

    fx_open(&fx);
    fx_open(&other);
    /* issued by another node's passport */
    assert_int_equal(pass_challenge_issue(other.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSFOREIGN);
    assert_string_equal(pass_reason_name(res.reason), "foreign");
    /* made up */
    randombytes_buf(r.nonce, sizeof r.nonce);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSFOREIGN);
    fx_close(&other);
    fx_close(&fx);
}

static void
test_pass_response_signed_by_wrong_key_is_refused(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    uint8_t pk2[32], sk2[64];
    (void)state;

    fx_open(&fx);
    crypto_sign_keypair(pk2, sk2);
    /* names the holder's key but is signed by another */
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, sk2, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSSIG);
    assert_string_equal(pass_reason_name(res.reason), "signature");
    /* the challenge is used up by the failed attempt */
    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSREPLAY);
    /* signed for another node */
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    c.node_id[0] ^= 1;
    answer(&c, fx.pk, fx.sk, GETPUT, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSSIG);
    /* ops changed after signing */
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, 1u << AUTH_OP_GET, 0, &r);
    r.ops = GETPUT;
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSSIG);
    fx_close(&fx);
}

static void
test_pass_policy_deny_gives_no_token(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    uint8_t pk2[32], sk2[64];
    (void)state;

    fx_open(&fx);
    /* one op outside the grant refuses the whole request */
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT | 1u << AUTH_OP_ADMIN, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSDENY);
    assert_int_equal(res.reason, PASS_DENY_POLICY);
    assert_string_equal(res.rule_id, "no-admin");
    assert_string_equal(res.denied_op, "admin");
    assert_int_equal(res.token_len, 0);
    /* a key the policy does not name gets nothing (default deny) */
    crypto_sign_keypair(pk2, sk2);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, pk2, sk2, 1u << AUTH_OP_GET, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), RON_EPASSDENY);
    assert_string_equal(res.rule_id, "default-deny");
    /* the holder's own pin rule carries no rate */
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, 1u << AUTH_OP_PIN, 0, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), 0);
    assert_int_equal(res.rate, 0);
    fx_close(&fx);
}

static void
test_pass_ttl_is_clamped_to_24h(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    pass_redeem_t r;
    pass_result_t res;
    auth_verdict_t vd;
    (void)state;

    fx_open(&fx);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    answer(&c, fx.pk, fx.sk, GETPUT, 30 * 86400, &r);
    assert_int_equal(pass_redeem(fx.p, &r, T0, &res), 0);
    assert_int_equal(res.ttl, PASS_TTL_MAX);
    assert_int_equal(res.expires, T0 + 86400);
    assert_int_equal(verify_at(&fx, res.token, AUTH_OP_GET, T0 + 86400, &vd), 0);
    assert_int_equal(verify_at(&fx, res.token, AUTH_OP_GET, T0 + 86400 + AUTH_SKEW + 1, &vd),
                     RON_ECAPEXPIRED);
    fx_close(&fx);
}

static void
test_pass_outstanding_challenges_are_bounded_and_swept(void **state)
{
    fx_t fx;
    pass_challenge_t c;
    (void)state;

    fx_open(&fx);
    for (size_t i = 0; i < PASS_MAX_CHALLENGES; i++)
        assert_int_equal(pass_challenge_issue(fx.p, T0, &c), 0);
    assert_int_equal(pass_challenge_issue(fx.p, T0, &c), RON_EBUSY);
    assert_int_equal(pass_challenge_count(fx.p), PASS_MAX_CHALLENGES);
    /* once expired for PASS_CHALLENGE_TTL they are swept */
    assert_int_equal(pass_challenge_issue(fx.p, T0 + 2 * PASS_CHALLENGE_TTL + 1, &c), 0);
    assert_int_equal(pass_challenge_count(fx.p), 1);
    fx_close(&fx);
}

/* ---- rotation ---- */

static void
redeem_token(fx_t *fx, int64_t now, pass_result_t *res)
{
    pass_challenge_t c;
    pass_redeem_t r;
    assert_int_equal(pass_challenge_issue(fx->p, now, &c), 0);
    answer(&c, fx->pk, fx->sk, GETPUT, PASS_TTL_MAX, &r);
    assert_int_equal(pass_redeem(fx->p, &r, now, res), 0);
}

static void
test_pass_rotation_by_age_keeps_old_kid_through_grace_then_fails(void **state)
{
    fx_t fx;
    pass_result_t *old = malloc(sizeof *old), *neu = malloc(sizeof *neu);
    auth_verdict_t vd;
    auth_request_t req = {.op = AUTH_OP_GET, .size = AUTH_SIZE_UNKNOWN};
    char kid1[AUTH_MAX_KID + 1];
    int64_t rot = 30 * DAY, grace = 7 * DAY, t;
    (void)state;

    memset(&fx, 0, sizeof fx);
    assert_true(sodium_init() >= 0);
    fx_open_with(&fx, NULL, rot, grace);
    snprintf(kid1, sizeof kid1, "%s", pass_current_kid(fx.p, PASS_KEY_CAP));
    assert_int_equal(pass_tick(fx.p, T0 + rot - 1), 0); /* not yet 30 days old */
    t = T0 + rot - 3600;
    redeem_token(&fx, t, old);
    assert_string_equal(old->kid, kid1);

    assert_true(pass_tick(fx.p, T0 + rot) > 0); /* 30 days: both kinds rotate */
    assert_string_not_equal(pass_current_kid(fx.p, PASS_KEY_CAP), kid1);
    redeem_token(&fx, T0 + rot, neu);
    assert_string_not_equal(neu->kid, kid1);

    /* the old kid verifies in grace. A fresh token under it would have
     * expired long before the grace ends, so check its signature against
     * a request at a time inside its validity: the key is what matters. */
    req.now = T0 + rot;
    assert_int_equal(pass_verify(fx.p, old->token, old->token_len, &req, &vd), 0);
    assert_int_equal(pass_tick(fx.p, T0 + rot + grace - 1), 0);
    assert_int_equal(pass_verify(fx.p, old->token, old->token_len, &req, &vd), 0);
    /* grace over: the old key is dropped and its tokens fail with kid */
    assert_int_equal(pass_tick(fx.p, T0 + rot + grace), 2);
    assert_int_equal(pass_verify(fx.p, old->token, old->token_len, &req, &vd), RON_ECAPKID);
    assert_int_equal(vd.reason, AUTH_DENY_KID);
    assert_string_equal(vd.id.kid, kid1);
    assert_int_equal(pass_verify(fx.p, neu->token, neu->token_len, &req, &vd), 0);
    free(old);
    free(neu);
    fx_close(&fx);
}

static void
test_pass_rotate_on_demand_new_kid_old_in_grace(void **state)
{
    fx_t fx;
    pass_result_t *old = malloc(sizeof *old);
    auth_verdict_t vd;
    pass_key_info_t keys[PASS__MAX_ENTRIES];
    char cap1[AUTH_MAX_KID + 1], sign1[AUTH_MAX_KID + 1];
    size_t n;
    (void)state;

    memset(&fx, 0, sizeof fx);
    assert_true(sodium_init() >= 0);
    fx_open_with(&fx, NULL, 0, 3600);
    snprintf(cap1, sizeof cap1, "%s", pass_current_kid(fx.p, PASS_KEY_CAP));
    snprintf(sign1, sizeof sign1, "%s", pass_current_kid(fx.p, PASS_KEY_SIGN));
    redeem_token(&fx, T0, old);
    assert_int_equal(pass_rotate(fx.p, 0, T0 + 10), RON_EINVAL);
    assert_int_equal(pass_rotate(fx.p, 1u << PASS_KEY_CAP, T0 + 10), 0);
    assert_string_not_equal(pass_current_kid(fx.p, PASS_KEY_CAP), cap1);
    assert_string_equal(pass_current_kid(fx.p, PASS_KEY_SIGN), sign1); /* only cap asked */
    pass_keys(fx.p, keys, PASS__MAX_ENTRIES, &n);
    assert_int_equal(n, 3);
    assert_string_equal(keys[2].kid, cap1);
    assert_int_equal(keys[2].retired, T0 + 10);
    assert_int_equal(keys[2].drop_at, T0 + 10 + 3600);
    assert_int_equal(verify_at(&fx, old->token, AUTH_OP_GET, T0 + 20, &vd), 0);
    assert_int_equal(pass_tick(fx.p, T0 + 10 + 3600), 1);
    assert_int_equal(verify_at(&fx, old->token, AUTH_OP_GET, T0 + 3600 + 20, &vd), RON_ECAPKID);
    /* rotations beyond PASS_KEYRING_MAX drop the oldest replaced key early */
    for (int i = 0; i < 2 * PASS_KEYRING_MAX; i++)
        assert_int_equal(pass_rotate(fx.p, PASS_KEYS_ALL, T0 + 4000 + i), 0);
    pass_keys(fx.p, keys, PASS__MAX_ENTRIES, &n);
    assert_int_equal(n, 2 * PASS_KEYRING_MAX);
    free(old);
    fx_close(&fx);
}

/* ---- keyring on disk ---- */

static void
test_pass_keyring_persists_sealed_and_refuses_tampering(void **state)
{
    fx_t fx;
    kms_opts_t ko = {0};
    char secret[128], keyring[128], err[256], cap1[AUTH_MAX_KID + 1];
    uint8_t buf[PASS_KEYRING_FILE_MAX], rnd[32];
    pass_result_t *old = malloc(sizeof *old);
    auth_verdict_t vd;
    pass_opts_t o = {0};
    pass_t *p2 = NULL;
    struct stat st;
    ssize_t len;
    int fd;
    (void)state;

    memset(&fx, 0, sizeof fx);
    assert_true(sodium_init() >= 0);
    snprintf(fx.tmp, sizeof fx.tmp, "/tmp/ron-pass-XXXXXX");
    assert_non_null(mkdtemp(fx.tmp));
    snprintf(secret, sizeof secret, "%s/root.secret", fx.tmp);
    fd = open(secret, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    randombytes_buf(rnd, sizeof rnd);
    assert_int_equal(write(fd, rnd, sizeof rnd), (ssize_t)sizeof rnd);
    close(fd);
    ko.data_dir = fx.tmp;
    ko.create = true;
    ko.secret_file = secret;
    assert_int_equal(kms_keystore_open(&ko, &fx.kms, err, sizeof err), 0);
    assert_int_equal(kms_keystore_seal(fx.kms), KMS_SEAL_SECRET_FILE);
    snprintf(keyring, sizeof keyring, "%s/passport/keyring", fx.tmp);
    fx_open_with(&fx, keyring, 0, 0);
    snprintf(cap1, sizeof cap1, "%s", pass_current_kid(fx.p, PASS_KEY_CAP));
    redeem_token(&fx, T0, old);
    assert_int_equal(stat(keyring, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* sealed: the root key's bytes do not appear in the file */
    fd = open(keyring, O_RDONLY);
    len = read(fd, buf, sizeof buf);
    close(fd);
    assert_true(len > (ssize_t)PASS__HDR_LEN);
    assert_int_equal(buf[9], 1);

    /* reopened: same keys, the old token still verifies */
    pass_free(fx.p);
    fx.p = NULL;
    fx_open_with(&fx, keyring, 0, 0);
    assert_string_equal(pass_current_kid(fx.p, PASS_KEY_CAP), cap1);
    assert_int_equal(verify_at(&fx, old->token, AUTH_OP_GET, T0 + 5, &vd), 0);
    /* rotated, saved, reopened: the new kid is current, the old one in grace */
    assert_int_equal(pass_rotate(fx.p, PASS_KEYS_ALL, T0 + 10), 0);
    pass_free(fx.p);
    fx.p = NULL;
    fx_open_with(&fx, keyring, 0, 0);
    assert_string_not_equal(pass_current_kid(fx.p, PASS_KEY_CAP), cap1);
    assert_int_equal(verify_at(&fx, old->token, AUTH_OP_GET, T0 + 20, &vd), 0);
    pass_free(fx.p);
    fx.p = NULL;

    /* another process's verifier, loaded read-only from the file */
    {
        auth_verifier_t *v = auth_verifier_new(NULL, 0);
        auth_request_t req = {.op = AUTH_OP_GET, .size = AUTH_SIZE_UNKNOWN, .now = T0 + 20};
        assert_int_equal(pass_keyring_load_verifier(keyring, fx.kms, 3600, T0 + 20, v), 0);
        assert_int_equal(auth_verify(v, old->token, old->token_len, &req, &vd), 0);
        auth_verifier_free(v);
        v = auth_verifier_new(NULL, 0); /* past the old key's grace: it is left out */
        assert_int_equal(pass_keyring_load_verifier(keyring, fx.kms, 3600, T0 + 10 + 3600, v), 0);
        assert_int_equal(auth_verify(v, old->token, old->token_len, &req, &vd), RON_ECAPKID);
        auth_verifier_free(v);
        v = auth_verifier_new(NULL, 0);
        snprintf(err, sizeof err, "%s/none", fx.tmp);
        assert_int_equal(pass_keyring_load_verifier(err, fx.kms, 3600, T0, v), RON_ENOTFOUND);
        auth_verifier_free(v);
    }

    o.keyring_path = keyring;
    o.kms = fx.kms;
    o.policy = fx.pol;
    /* one byte flipped anywhere is refused */
    fd = open(keyring, O_RDONLY);
    len = read(fd, buf, sizeof buf);
    close(fd);
    for (ssize_t i = 0; i < len; i += 7) {
        buf[i] ^= 0x40;
        fd = open(keyring, O_WRONLY | O_TRUNC);
        assert_int_equal(write(fd, buf, (size_t)len), len);
        close(fd);
        assert_int_equal(pass_new(&o, T0, &p2, err, sizeof err), RON_EPASSKEYRING);
        buf[i] ^= 0x40;
    }
    /* another node's seal (a RAM key store) cannot open it */
    fd = open(keyring, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, buf, (size_t)len), len);
    close(fd);
    {
        kms_opts_t ko2 = {0};
        kms_keystore_t *sealed_other = NULL;
        char d2[128];
        snprintf(d2, sizeof d2, "%s/other", fx.tmp);
        ko2.data_dir = d2;
        ko2.create = true;
        ko2.secret_file = secret;
        assert_int_equal(kms_keystore_open(&ko2, &sealed_other, err, sizeof err), 0);
        o.kms = sealed_other;
        assert_int_equal(pass_new(&o, T0, &p2, err, sizeof err), RON_EPASSKEYRING);
        kms_keystore_free(sealed_other);
        o.kms = fx.kms;
    }
    /* a keyring open to others is refused */
    assert_int_equal(chmod(keyring, 0644), 0);
    assert_int_equal(pass_new(&o, T0, &p2, err, sizeof err), RON_EKEYPERM);
    assert_int_equal(chmod(keyring, 0600), 0);
    assert_int_equal(pass_new(&o, T0, &p2, err, sizeof err), 0);
    pass_free(p2);
    free(old);
    fx_close(&fx);
}

static void
test_pass_keys_are_wiped_when_dropped(void **state)
{
    pass__keyring_t kr;
    static const uint8_t zero[sizeof(pass__key_t)];
    (void)state;
    assert_true(sodium_init() >= 0);
    pass__keyring_init(&kr, NULL, NULL);
    pass__keyring_add(&kr, PASS_KEY_CAP, T0);
    pass__keyring_add(&kr, PASS_KEY_CAP, T0 + 1);
    assert_int_equal(kr.n, 2);
    assert_int_equal(pass__keyring_drop(&kr, 10, T0 + 11), 1);
    assert_int_equal(kr.n, 1);
    /* the slot the dropped key moved out of is all zero */
    assert_memory_equal(&kr.keys[1], zero, sizeof zero);
    pass__keyring_close(&kr);
}

/* ---- signed messages: the layout docs/protocol/passport.md documents ---- */

static void
test_pass_signed_messages_have_the_documented_layout(void **state)
{
    pass_redeem_t r;
    pass_challenge_t c;
    uint8_t node[32], m[PASS_MSG_LEN], cm[PASS_CHALLENGE_MSG_LEN];
    (void)state;

    assert_int_equal(PASS_MSG_LEN, 145);
    assert_int_equal(PASS_CHALLENGE_MSG_LEN, 100);
    memset(&r, 0, sizeof r);
    memset(node, 0x11, sizeof node);
    memset(r.nonce, 0x22, sizeof r.nonce);
    memset(r.pk, 0x33, sizeof r.pk);
    r.ops = 0x01020304;
    r.ttl = 0x05060708;
    r.has_tenant = true;
    memset(r.tenant, 0x44, sizeof r.tenant);
    pass_redeem_message(node, &r, m);
    assert_memory_equal(m, "ron-passport-redeem-v1\0\0", 24);
    assert_int_equal(m[24], 0x11);
    assert_int_equal(m[55], 0x11);
    assert_int_equal(m[56], 0x22);
    assert_int_equal(m[88], 0x33);
    assert_memory_equal(m + 120, "\x01\x02\x03\x04\x05\x06\x07\x08\x01", 9);
    assert_int_equal(m[129], 0x44);
    assert_int_equal(m[144], 0x44);
    r.has_tenant = false;
    pass_redeem_message(node, &r, m);
    assert_int_equal(m[128], 0);
    assert_int_equal(m[144], 0); /* no tenant: zeros, whatever the struct holds */

    memset(&c, 0, sizeof c);
    memset(c.node_id, 0x11, sizeof c.node_id);
    memset(c.nonce, 0x22, sizeof c.nonce);
    c.expires = 0x0102030405060708LL;
    pass_challenge_message(&c, cm);
    assert_memory_equal(cm, "ron-passport-challenge-v1\0\0\0", 28);
    assert_int_equal(cm[28], 0x11);
    assert_int_equal(cm[60], 0x22);
    assert_memory_equal(cm + 92, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
}

/* ---- request parser ---- */

static void
test_pass_request_parser_is_strict(void **state)
{
    pass_request_t r;
    char field[32], err[160], js[1024];
    const char *hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    (void)state;

    snprintf(js, sizeof js,
             "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[\"get\",\"put\"],"
             "\"ttl\":600,\"tenant\":\"00112233445566778899aabbccddeeff\",\"sig\":\"%s%s\"}",
             hex64, hex64, hex64, hex64);
    assert_int_equal(pass_request_parse(js, strlen(js), &r, field, err, sizeof err), 0);
    assert_int_equal(r.op, PASS_REQ_REDEEM);
    assert_int_equal(r.redeem.ops, GETPUT);
    assert_int_equal(r.redeem.ttl, 600);
    assert_true(r.redeem.has_tenant);

#define REFUSED(text, fld)                                                                        \
    do {                                                                                          \
        assert_int_equal(pass_request_parse(text, strlen(text), &r, field, err, sizeof err),      \
                         RON_EPASSREQ);                                                           \
        assert_string_equal(field, fld);                                                          \
    } while (0)
    REFUSED("{\"op\":\"challenge\",\"x\":1}", "x");
    REFUSED("{\"op\":\"delete\"}", "op");
    REFUSED("{\"op\":\"challenge\",\"op\":\"keys\"}", "$");
    REFUSED("[1]", "$");
    REFUSED("{\"op\":\"rotate\",\"keys\":[\"cap\",\"cap\"]}", "keys");
    REFUSED("{\"op\":\"rotate\",\"keys\":[\"tls\"]}", "keys");
    REFUSED("{\"op\":\"keys\",\"challenge\":\"00\"}", "challenge");
    snprintf(js, sizeof js, "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[\"get\",\"get\"],\"sig\":\"%s%s\"}",
             hex64, hex64, hex64, hex64);
    REFUSED(js, "ops");
    snprintf(js, sizeof js, "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[],\"sig\":\"%s%s\"}",
             hex64, hex64, hex64, hex64);
    REFUSED(js, "ops");
    snprintf(js, sizeof js, "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[\"get\"],\"ttl\":0,\"sig\":\"%s%s\"}",
             hex64, hex64, hex64, hex64);
    REFUSED(js, "ttl");
    snprintf(js, sizeof js, "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[\"get\"],\"sig\":\"%s\"}",
             hex64, hex64, hex64);
    REFUSED(js, "sig");
    snprintf(js, sizeof js, "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%.63sA\",\"ops\":[\"get\"],\"sig\":\"%s%s\"}",
             hex64, hex64, hex64, hex64);
    REFUSED(js, "pk");
    snprintf(js, sizeof js, "{\"op\":\"redeem\",\"pk\":\"%s\",\"ops\":[\"get\"],\"sig\":\"%s%s\"}",
             hex64, hex64, hex64);
    REFUSED(js, "challenge");
#undef REFUSED
    memset(js, ' ', sizeof js);
    assert_int_equal(pass_request_parse(js, PASS_MAX_REQ + 1, &r, field, err, sizeof err),
                     RON_ETOOBIG);
}

/* ---- over ron-bus ---- */

static int64_t virtual_now = T0;

static int64_t
vclock(void)
{
    return virtual_now;
}

static void
service_over_bus(bool use_unix)
{
    fx_t fx;
    bus_fx_t b;
    pass_service_t *svc = NULL;
    pass_challenge_t c;
    pass_redeem_t r;
    char chex[65], sighex[129], js[1024], token[AUTH_MAX_TOKEN + 1], kid[AUTH_MAX_KID + 1];
    auth_token_t tok;

    fx_open(&fx);
    bus_fx_open(&b, use_unix, "passport", NULL, OAP_APP_AUTH);
    b.need_json = true;
    virtual_now = T0;
    assert_int_equal(pass_service_new(&b.loop, b.srv, fx.p, vclock, &svc), 0);
    b.svc = svc;
    fx.p = NULL; /* the service owns it */
    bus_fx_connect(&b);

    assert_int_equal(bus_fx_call(&b, "{\"op\":\"challenge\"}"), 200);
    memset(&c, 0, sizeof c);
    assert_int_equal(ron_hex_decode(c.nonce, 32, bus_fx_jstr(b.json, "challenge"), 64), 0);
    assert_int_equal(ron_hex_decode(c.node_id, 32, bus_fx_jstr(b.json, "node_id"), 64), 0);
    assert_int_equal(json_integer_value(json_object_get(b.json, "expires")), T0 + 60);
    answer(&c, fx.pk, fx.sk, GETPUT, 7200, &r);
    ron_hex_encode(chex, c.nonce, 32);
    ron_hex_encode(sighex, r.sig, 64);
    snprintf(js, sizeof js,
             "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[\"get\",\"put\"],"
             "\"ttl\":7200,\"sig\":\"%s\"}",
             chex, fx.pkhex, sighex);
    assert_int_equal(bus_fx_call(&b, "%s", js), 200);
    snprintf(token, sizeof token, "%s", bus_fx_jstr(b.json, "token"));
    snprintf(kid, sizeof kid, "%s", bus_fx_jstr(b.json, "kid"));
    assert_int_equal(json_integer_value(json_object_get(b.json, "ttl")), 7200);
    assert_int_equal(auth_token_parse(token, strlen(token), &tok), 0);
    assert_string_equal(tok.id.kid, kid);

    /* replay: 401 with the reason named */
    assert_int_equal(bus_fx_call(&b, "%s", js), 401);
    assert_string_equal(bus_fx_jstr(b.json, "code"), "unauthorized");
    assert_string_equal(bus_fx_jstr(b.json, "reason"), "replay");
    /* malformed: 400 naming the field */
    assert_int_equal(bus_fx_call(&b, "{\"op\":\"redeem\",\"pk\":\"zz\"}"), 400);
    assert_string_equal(bus_fx_jstr(b.json, "reason"), "challenge");
    assert_int_equal(bus_fx_call(&b, "{\"op\":\"challenge\",\"extra\":true}"), 400);
    assert_string_equal(bus_fx_jstr(b.json, "reason"), "extra");
    /* policy deny: 403 naming the rule */
    assert_int_equal(bus_fx_call(&b, "{\"op\":\"challenge\"}"), 200);
    assert_int_equal(ron_hex_decode(c.nonce, 32, bus_fx_jstr(b.json, "challenge"), 64), 0);
    answer(&c, fx.pk, fx.sk, 1u << AUTH_OP_ADMIN, 0, &r);
    ron_hex_encode(chex, c.nonce, 32);
    ron_hex_encode(sighex, r.sig, 64);
    assert_int_equal(bus_fx_call(&b,
                          "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"ops\":[\"admin\"],"
                          "\"sig\":\"%s\"}",
                          chex, fx.pkhex, sighex),
                     403);
    assert_string_equal(bus_fx_jstr(b.json, "reason"), "policy");
    assert_non_null(strstr(bus_fx_jstr(b.json, "message"), "no-admin"));

    /* keys, then rotate: a new cap kid, the old one listed with its drop time */
    assert_int_equal(bus_fx_call(&b, "{\"op\":\"keys\"}"), 200);
    assert_string_equal(bus_fx_jstr(b.json, "cap_kid"), kid);
    assert_int_equal(json_array_size(json_object_get(b.json, "keys")), 2);
    virtual_now = T0 + 100;
    assert_int_equal(bus_fx_call(&b, "{\"op\":\"rotate\",\"keys\":[\"cap\"]}"), 200);
    assert_string_not_equal(bus_fx_jstr(b.json, "cap_kid"), kid);
    assert_int_equal(json_array_size(json_object_get(b.json, "keys")), 3);
    {
        json_t *old = json_array_get(json_object_get(b.json, "keys"), 2);
        assert_string_equal(bus_fx_jstr(old, "kid"), kid);
        assert_int_equal(json_integer_value(json_object_get(old, "drop_at")),
                         T0 + 100 + PASS_GRACE_DEFAULT);
    }

    pass_service_free(b.svc);
    bus_fx_close(&b);
    fx_close(&fx);
}

static void
test_pass_service_challenge_redeem_rotate_over_bus_inproc(void **state)
{
    (void)state;
    service_over_bus(false);
}

static void
test_pass_service_challenge_redeem_rotate_over_bus_unix(void **state)
{
    (void)state;
    service_over_bus(true);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_signed_challenge_gets_token_for_granted_ops),
        cmocka_unit_test(test_pass_with_the_node_guard_mints_tokens_every_boundary_verifies),
        cmocka_unit_test(test_pass_tenant_is_bound_into_the_token),
        cmocka_unit_test(test_pass_replayed_challenge_is_refused),
        cmocka_unit_test(test_pass_expired_challenge_is_refused),
        cmocka_unit_test(test_pass_foreign_challenge_is_refused),
        cmocka_unit_test(test_pass_response_signed_by_wrong_key_is_refused),
        cmocka_unit_test(test_pass_policy_deny_gives_no_token),
        cmocka_unit_test(test_pass_ttl_is_clamped_to_24h),
        cmocka_unit_test(test_pass_outstanding_challenges_are_bounded_and_swept),
        cmocka_unit_test(test_pass_rotation_by_age_keeps_old_kid_through_grace_then_fails),
        cmocka_unit_test(test_pass_rotate_on_demand_new_kid_old_in_grace),
        cmocka_unit_test(test_pass_keyring_persists_sealed_and_refuses_tampering),
        cmocka_unit_test(test_pass_keys_are_wiped_when_dropped),
        cmocka_unit_test(test_pass_signed_messages_have_the_documented_layout),
        cmocka_unit_test(test_pass_request_parser_is_strict),
        cmocka_unit_test(test_pass_service_challenge_redeem_rotate_over_bus_inproc),
        cmocka_unit_test(test_pass_service_challenge_redeem_rotate_over_bus_unix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
