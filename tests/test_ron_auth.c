/*
 * test_ron_auth.c - ron-auth: tokens minted with libmacaroons verify with
 * our verifier and ours with libmacaroons' (tampered ones fail in both);
 * the caveat grammar (every key, strict values, unknown keys refused);
 * attenuation only narrows; clock skew on expires and not-before; the
 * request checks (op, tenant, size, prefix, name) and what is left pending;
 * identifiers; strict parsing limits; revocation by identifier and by
 * epoch, the bounded revocation set; the lineage (`ancestor`) caveat, which
 * revocation honours and nobody can strip; the verdict cache and its 1 s expiry;
 * and (argument "threads") verifiers racing a revocation.
 */
#include <macaroons.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "auth_internal.h"
#include "ron_auth.h"
#include "ron_err.h"
#include "ron_util.h"

#define TENANT_HEX "00112233445566778899aabbccddeeff"
#define NOW 1800000000

static const uint8_t root_key[32] = "ron-auth test root key 32 bytes";
static const uint8_t other_key[32] = "another root key, not the right";

typedef struct {
    char tok[AUTH_MAX_TOKEN + 1];
    char id[AUTH_ID_MAX + 1];
} minted_t;

static void
mint_with(minted_t *m, const char *kid, uint64_t epoch, const char *const *cav, size_t n)
{
    assert_int_equal(auth_id_new(m->id, kid, epoch), 0);
    long len = auth_mint(root_key, sizeof root_key, m->id, cav, n, m->tok, sizeof m->tok);
    if (len < 0)
        fail_msg("mint failed: %s", ron_strerror((int)len));
    assert_int_equal((size_t)len, strlen(m->tok));
}

#define MINT(m, ...)                                                                               \
    do {                                                                                           \
        const char *cav_[] = {__VA_ARGS__};                                                        \
        mint_with((m), "k1", 0, cav_, sizeof cav_ / sizeof cav_[0]);                               \
    } while (0)

static auth_verifier_t *
verifier(auth_revocation_t *rev, size_t cache)
{
    auth_verifier_t *v = auth_verifier_new(rev, cache);
    assert_non_null(v);
    assert_int_equal(auth_verifier_add_key(v, "k1", root_key, sizeof root_key), 0);
    return v;
}

static auth_request_t
req_of(auth_op_t op)
{
    auth_request_t r = {.op = op, .size = AUTH_SIZE_UNKNOWN, .now = NOW};
    return r;
}

static auth_reason_t
check(auth_verifier_t *v, const char *tok, const auth_request_t *req)
{
    auth_verdict_t vd;
    int rc = auth_verify(v, tok, strlen(tok), req, &vd);
    assert_int_equal(rc, auth_reason_code(vd.reason));
    return vd.reason;
}

static auth_reason_t
check_op(auth_verifier_t *v, const char *tok, auth_op_t op)
{
    auth_request_t r = req_of(op);
    return check(v, tok, &r);
}

/* libmacaroons' own verifier; every first-party caveat satisfied. */
static int
accept_all(void *f, const unsigned char *pred, size_t len)
{
    (void)f;
    (void)pred;
    (void)len;
    return 0;
}

static bool
libmacaroons_verifies(const char *tok, const uint8_t *key, size_t key_len)
{
    enum macaroon_returncode err;
    struct macaroon *m = macaroon_deserialize(tok, &err);
    struct macaroon_verifier *v = macaroon_verifier_create();
    bool ok;

    if (m == NULL) {
        macaroon_verifier_destroy(v);
        return false;
    }
    macaroon_verifier_satisfy_general(v, accept_all, NULL, &err);
    ok = macaroon_verify(v, m, key, key_len, NULL, 0, &err) == 0;
    macaroon_verifier_destroy(v);
    macaroon_destroy(m);
    return ok;
}

/* Re-encode tok with one decoded byte changed at the first occurrence of
 * needle (in the decoded bytes), keeping the encoding valid. */
static void
tamper(const char *tok, const char *needle, char repl, char *out, size_t cap)
{
    uint8_t raw[AUTH_MAX_RAW];
    long n = auth__b64_decode(tok, strlen(tok), raw);
    assert_true(n > 0);
    uint8_t *at = memmem(raw, (size_t)n, needle, strlen(needle));
    assert_non_null(at);
    *at = (uint8_t)repl;
    assert_true(auth__b64_encode(raw, (size_t)n, out, cap) > 0);
}

/* ---- interop with libmacaroons ---- */

static void
test_auth_token_minted_by_libmacaroons_verifies_with_ours(void **st)
{
    (void)st;
    minted_t m;
    MINT(&m, "ops = get,put", "tenant = " TENANT_HEX, "expires = 1900000000", "max-bytes = 1048576",
         "prefix = b3:ab");
    auth_verifier_t *v = verifier(NULL, 0);
    auth_request_t r = req_of(AUTH_OP_PUT);
    auth_verdict_t vd;
    r.size = 1000;
    r.addr = "b3:ab01";
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_int_equal(vd.reason, AUTH_OK);
    assert_string_equal(vd.id.kid, "k1");
    assert_true(vd.grant.has_tenant);
    assert_int_equal(vd.grant.ops, 1u << AUTH_OP_GET | 1u << AUTH_OP_PUT);
    assert_int_equal(vd.grant.max_bytes, 1048576);
    assert_int_equal(vd.pending, 0);
    assert_true(libmacaroons_verifies(m.tok, root_key, sizeof root_key));
    assert_false(libmacaroons_verifies(m.tok, other_key, sizeof other_key));
    auth_verifier_free(v);
}

static void
test_auth_attenuated_by_us_verifies_with_libmacaroons(void **st)
{
    (void)st;
    minted_t m;
    char att[AUTH_MAX_TOKEN + 1];
    const char *more[] = {"ops = get", "max-bytes = 10"};
    MINT(&m, "ops = get,put");
    long n = auth_attenuate(m.tok, strlen(m.tok), more, 2, att, sizeof att);
    assert_true(n > 0);
    assert_true(libmacaroons_verifies(att, root_key, sizeof root_key));

    /* and the same caveat added by libmacaroons gives the same bytes */
    enum macaroon_returncode err;
    struct macaroon *lm = macaroon_deserialize(m.tok, &err), *lm2, *lm3;
    lm2 =
        macaroon_add_first_party_caveat(lm, (const unsigned char *)more[0], strlen(more[0]), &err);
    lm3 =
        macaroon_add_first_party_caveat(lm2, (const unsigned char *)more[1], strlen(more[1]), &err);
    char ser[AUTH_MAX_TOKEN + 1];
    assert_int_equal(macaroon_serialize(lm3, ser, sizeof ser, &err), 0);
    assert_string_equal(ser, att);
    macaroon_destroy(lm);
    macaroon_destroy(lm2);
    macaroon_destroy(lm3);

    auth_verifier_t *v = verifier(NULL, 0);
    auth_request_t r = req_of(AUTH_OP_GET);
    r.size = 10;
    assert_int_equal(check(v, att, &r), AUTH_OK);
    r.size = 11;
    assert_int_equal(check(v, att, &r), AUTH_DENY_SIZE);
    assert_int_equal(check_op(v, att, AUTH_OP_PUT), AUTH_DENY_OP);
    auth_verifier_free(v);
}

static void
test_auth_tampered_token_fails_in_both_verifiers(void **st)
{
    (void)st;
    minted_t m;
    char bad[AUTH_MAX_TOKEN + 1];
    MINT(&m, "ops = get", "max-bytes = 100");
    auth_verifier_t *v = verifier(NULL, 0);

    tamper(m.tok, "ops = get", 'O', bad, sizeof bad); /* caveat text: "Ops" is unknown */
    assert_int_equal(check_op(v, bad, AUTH_OP_GET), AUTH_DENY_CAVEAT);
    assert_false(libmacaroons_verifies(bad, root_key, sizeof root_key));
    tamper(m.tok, "100", '9', bad, sizeof bad); /* max-bytes = 900: widened */
    assert_int_equal(check_op(v, bad, AUTH_OP_GET), AUTH_DENY_SIGNATURE);
    assert_false(libmacaroons_verifies(bad, root_key, sizeof root_key));
    tamper(m.tok, "ron1:k1:0:", '1', bad, sizeof bad); /* identifier */
    assert_int_not_equal(check_op(v, bad, AUTH_OP_GET), AUTH_OK);
    assert_false(libmacaroons_verifies(bad, root_key, sizeof root_key));

    /* dropping the last caveat (the usual widening attack) */
    const char *more[] = {"ops = get"};
    char wide[AUTH_MAX_TOKEN + 1], narrow[AUTH_MAX_TOKEN + 1];
    MINT(&m, "max-bytes = 100");
    assert_true(auth_attenuate(m.tok, strlen(m.tok), more, 1, narrow, sizeof narrow) > 0);
    uint8_t raw[AUTH_MAX_RAW];
    auth__parsed_t p;
    assert_int_equal(auth__token_split(narrow, strlen(narrow), raw, &p), 0);
    p.n_caveats--;
    assert_true(auth__token_encode(&p, p.sig, wide, sizeof wide) > 0);
    assert_int_equal(check_op(v, wide, AUTH_OP_PUT), AUTH_DENY_SIGNATURE);
    assert_false(libmacaroons_verifies(wide, root_key, sizeof root_key));

    /* another key of the same kid */
    auth_verifier_t *v2 = auth_verifier_new(NULL, 0);
    assert_int_equal(auth_verifier_add_key(v2, "k1", other_key, sizeof other_key), 0);
    assert_int_equal(check_op(v2, m.tok, AUTH_OP_GET), AUTH_DENY_SIGNATURE);
    auth_verifier_free(v2);
    auth_verifier_free(v);
}

/* ---- caveats ---- */

static int
apply(const char *c)
{
    auth_grant_t g;
    auth_grant_init(&g);
    return auth_caveat_apply(&g, c, strlen(c));
}

static void
test_auth_caveat_grammar_accepts_each_key_and_refuses_the_rest(void **st)
{
    (void)st;
    static const char *const good[] = {
        "tenant = " TENANT_HEX,
        "ops = get",
        "ops = get,put,pin,name,send,recv,admin,mint",
        "expires = 1800000000",
        "not-before = 0",
        "max-bytes = 18446744073709551615",
        "prefix = b3:a",
        "prefix = b3:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "name-prefix = blog.",
        "name-prefix = a-b_c.d9",
        "rate = 1/s",
        "rate = 1000000/s",
        "ancestor = 0123456789abcdef0123456789abcdef"};
    static const char *const bad[] = {
        "color = red", /* unknown key */
        "Ops = get",   /* keys are lowercase */
        "ops=get",     /* exactly one space each side */
        "ops  = get",
        "ops = ",
        "ops =get",
        " ops = get",
        "ops = get ",
        "ops = get,",    /* empty op */
        "ops = get,get", /* repeated */
        "ops = delete",
        "ops = GET",
        "ops = get, put",
        "tenant = 00112233445566778899AABBCCDDEEFF", /* uppercase */
        "tenant = 0011",
        "tenant = " TENANT_HEX "00",
        "expires = -1",
        "expires = 01",
        "expires = 1e9",
        "expires = 9223372036854775808",
        "not-before = x",
        "max-bytes = 18446744073709551616",
        "max-bytes = ",
        "prefix = ab",
        "prefix = b3:",
        "prefix = b3:AB",
        "prefix = b3:xyz",
        "prefix = b3:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
        "name-prefix = Blog",
        "name-prefix = a/b",
        "rate = 0/s",
        "rate = 10",
        "rate = 1000001/s",
        "rate = 5/m",
        "ancestor = 0123",
        "ancestor = 0123456789ABCDEF0123456789ABCDEF",
        "ancestor = 0123456789abcdef0123456789abcdef0",
        "ancestor = ron1:r1:0:0123456789abcdef0123456789abcdef",
        "ops = get\n",
        "ops = g\x01t",
        "expires = 1 = 2"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (apply(good[i]) != 0)
            fail_msg("refused good caveat '%s'", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (apply(bad[i]) != RON_ECAPCAVEAT)
            fail_msg("accepted bad caveat '%s'", bad[i]);
    char longc[AUTH_MAX_CAVEAT_LEN + 2];
    memset(longc, 'a', sizeof longc - 1);
    longc[sizeof longc - 1] = '\0';
    memcpy(longc, "name-prefix = ", 14);
    assert_int_equal(apply(longc), RON_ECAPCAVEAT);
}

static void
test_auth_unknown_caveat_key_fails_verification(void **st)
{
    (void)st;
    minted_t m;
    char out[AUTH_MAX_TOKEN + 1];
    const char *cav[] = {"color = red"};
    assert_int_equal(auth_id_new(m.id, "k1", 0), 0);
    assert_int_equal(auth_mint(root_key, sizeof root_key, m.id, cav, 1, out, sizeof out),
                     RON_ECAPCAVEAT);

    /* a token minted elsewhere with that caveat: its signature holds, it still fails */
    enum macaroon_returncode err;
    struct macaroon *a = macaroon_create((const unsigned char *)"ron", 3, root_key, sizeof root_key,
                                         (const unsigned char *)m.id, strlen(m.id), &err);
    struct macaroon *b =
        macaroon_add_first_party_caveat(a, (const unsigned char *)cav[0], strlen(cav[0]), &err);
    assert_int_equal(macaroon_serialize(b, out, sizeof out, &err), 0);
    assert_true(libmacaroons_verifies(out, root_key, sizeof root_key));
    auth_verifier_t *v = verifier(NULL, 0);
    auth_request_t r = req_of(AUTH_OP_GET);
    auth_verdict_t vd;
    assert_int_equal(auth_verify(v, out, strlen(out), &r, &vd), RON_ECAPCAVEAT);
    assert_int_equal(vd.caveat, 0);
    /* and we refuse to extend it */
    const char *more[] = {"ops = get"};
    char att[AUTH_MAX_TOKEN + 1];
    assert_int_equal(auth_attenuate(out, strlen(out), more, 1, att, sizeof att), RON_ECAPCAVEAT);
    macaroon_destroy(a);
    macaroon_destroy(b);
    auth_verifier_free(v);
}

static void
test_auth_attenuation_only_narrows(void **st)
{
    (void)st;
    minted_t m;
    char a1[AUTH_MAX_TOKEN + 1], a2[AUTH_MAX_TOKEN + 1];
    auth_verifier_t *v = verifier(NULL, 0);
    MINT(&m, "ops = get", "max-bytes = 100", "expires = 1800000100", "prefix = b3:ab",
         "name-prefix = blog.");

    /* a later caveat naming more never widens an earlier one */
    const char *wider[] = {"ops = get,put,admin", "max-bytes = 1000000", "expires = 1900000000",
                           "prefix = b3:a", "name-prefix = b"};
    assert_true(auth_attenuate(m.tok, strlen(m.tok), wider, 5, a1, sizeof a1) > 0);
    auth_token_t t;
    assert_int_equal(auth_token_parse(a1, strlen(a1), &t), 0);
    assert_int_equal(t.n_caveats, 10);
    assert_int_equal(t.grant.ops, 1u << AUTH_OP_GET);
    assert_int_equal(t.grant.max_bytes, 100);
    assert_int_equal(t.grant.expires, 1800000100);
    assert_string_equal(t.grant.prefix, "ab");
    assert_string_equal(t.grant.name_prefix, "blog.");
    assert_int_equal(check_op(v, a1, AUTH_OP_PUT), AUTH_DENY_OP);
    assert_int_equal(check_op(v, a1, AUTH_OP_ADMIN), AUTH_DENY_OP);
    auth_request_t r = req_of(AUTH_OP_GET);
    r.size = 101;
    assert_int_equal(check(v, a1, &r), AUTH_DENY_SIZE);
    r.size = 100;
    r.addr = "b3:a0";
    assert_int_equal(check(v, a1, &r), AUTH_DENY_PREFIX);
    r.addr = "b3:ab99";
    r.name = "bob";
    assert_int_equal(check(v, a1, &r), AUTH_DENY_NAME);
    r.name = "blog.example";
    assert_int_equal(check(v, a1, &r), AUTH_OK);
    r.now = 1800000100 + AUTH_SKEW + 1;
    assert_int_equal(check(v, a1, &r), AUTH_DENY_EXPIRED);

    /* narrower caveats do narrow; disjoint ones allow nothing */
    const char *narrower[] = {"ops = put"};
    assert_true(auth_attenuate(m.tok, strlen(m.tok), narrower, 1, a2, sizeof a2) > 0);
    assert_int_equal(check_op(v, a2, AUTH_OP_GET), AUTH_DENY_OP);
    assert_int_equal(check_op(v, a2, AUTH_OP_PUT), AUTH_DENY_OP);
    const char *two_tenants[] = {"tenant = " TENANT_HEX,
                                 "tenant = ffffffffffffffffffffffffffffffff"};
    assert_true(auth_attenuate(m.tok, strlen(m.tok), two_tenants, 2, a2, sizeof a2) > 0);
    assert_int_equal(check_op(v, a2, AUTH_OP_GET), AUTH_DENY_TENANT);
    const char *disjoint[] = {"prefix = b3:ac"};
    assert_true(auth_attenuate(m.tok, strlen(m.tok), disjoint, 1, a2, sizeof a2) > 0);
    r = req_of(AUTH_OP_GET);
    assert_int_equal(check(v, a2, &r), AUTH_DENY_PREFIX);
    auth_verifier_free(v);
}

static void
test_auth_expires_and_not_before_allow_60s_of_skew(void **st)
{
    (void)st;
    minted_t m;
    auth_verifier_t *v = verifier(NULL, 0);
    auth_request_t r = req_of(AUTH_OP_GET);
    MINT(&m, "not-before = 1800000000", "expires = 1800000100");

    r.now = 1800000000 - AUTH_SKEW;
    assert_int_equal(check(v, m.tok, &r), AUTH_OK);
    r.now = 1800000000 - AUTH_SKEW - 1;
    assert_int_equal(check(v, m.tok, &r), AUTH_DENY_NOT_YET);
    r.now = 1800000100 + AUTH_SKEW;
    assert_int_equal(check(v, m.tok, &r), AUTH_OK);
    r.now = 1800000100 + AUTH_SKEW + 1;
    auth_verdict_t vd;
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), RON_ECAPEXPIRED);
    assert_int_equal(vd.reason, AUTH_DENY_EXPIRED);
    auth_verifier_free(v);
}

static void
test_auth_request_checks_tenant_size_and_leave_unknowns_pending(void **st)
{
    (void)st;
    minted_t m;
    auth_verifier_t *v = verifier(NULL, 0);
    auth_request_t r = req_of(AUTH_OP_PUT);
    auth_verdict_t vd;
    MINT(&m, "tenant = " TENANT_HEX, "max-bytes = 5", "prefix = b3:ff", "name-prefix = x",
         "rate = 20/s");

    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_int_equal(vd.pending,
                     AUTH_PENDING_SIZE | AUTH_PENDING_ADDR | AUTH_PENDING_NAME | AUTH_PENDING_RATE);
    assert_int_equal(vd.grant.rate, 20);
    r.has_tenant = true;
    memset(r.tenant, 0xff, sizeof r.tenant);
    assert_int_equal(check(v, m.tok, &r), AUTH_DENY_TENANT);
    assert_int_equal(ron_hex_decode(r.tenant, sizeof r.tenant, TENANT_HEX, 32), 0);
    r.size = 5;
    r.addr = "b3:ff00";
    r.name = "xy";
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_int_equal(vd.pending, AUTH_PENDING_RATE);
    r.addr = "ff00"; /* not an address */
    assert_int_equal(check(v, m.tok, &r), AUTH_DENY_PREFIX);
    r.op = AUTH_OP_COUNT;
    assert_int_equal(check(v, m.tok, &r), AUTH_DENY_OP);
    /* the host finishes a pending check once it knows the address */
    auth_request_t late = req_of(AUTH_OP_PUT);
    late.addr = "b3:fe";
    assert_int_equal(auth_grant_check(&vd.grant, &late, NULL), AUTH_DENY_PREFIX);
    auth_verifier_free(v);
}

/* ---- identifiers, keys, parsing ---- */

static void
test_auth_identifier_syntax_is_strict(void **st)
{
    (void)st;
    auth_id_t id;
    char fresh[AUTH_ID_MAX + 1], again[AUTH_ID_MAX + 1];
    static const char *const bad[] = {
        "ron2:k1:0:00112233445566778899aabbccddeeff",
        "ron1::0:00112233445566778899aabbccddeeff",
        "ron1:K1:0:00112233445566778899aabbccddeeff",
        "ron1:k1:00:00112233445566778899aabbccddeeff",
        "ron1:k1:-1:00112233445566778899aabbccddeeff",
        "ron1:k1:0:00112233445566778899AABBCCDDEEFF",
        "ron1:k1:0:00112233445566778899aabbccddee",
        "ron1:k1:0:00112233445566778899aabbccddeeff0",
        "ron1:k1:0",
        "ron1:k1:18446744073709551616:00112233445566778899aabbccddeeff",
        "ron1:k12345678901234567:0:00112233445566778899aabbccddeeff"};
    const char *ok = "ron1:k1:42:00112233445566778899aabbccddeeff";
    assert_int_equal(auth_id_parse(ok, strlen(ok), &id), 0);
    assert_string_equal(id.kid, "k1");
    assert_int_equal(id.epoch, 42);
    assert_int_equal(id.nonce[15], 0xff);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (auth_id_parse(bad[i], strlen(bad[i]), &id) != RON_ECAPFORMAT)
            fail_msg("accepted identifier '%s'", bad[i]);
    assert_int_equal(auth_id_new(fresh, "k2", 7), 0);
    assert_int_equal(auth_id_new(again, "k2", 7), 0);
    assert_string_not_equal(fresh, again); /* 128 random bits each */
    assert_int_equal(auth_id_parse(fresh, strlen(fresh), &id), 0);
    assert_int_equal(auth_id_new(fresh, "K2", 7), RON_EINVAL);
}

static void
test_auth_unknown_kid_and_removed_key_fail(void **st)
{
    (void)st;
    minted_t m;
    const char *none[] = {"ops = get"};
    mint_with(&m, "k9", 0, none, 1);
    auth_verifier_t *v = verifier(NULL, 16);
    assert_int_equal(check_op(v, m.tok, AUTH_OP_GET), AUTH_DENY_KID);
    assert_int_equal(auth_verifier_add_key(v, "k9", root_key, sizeof root_key), 0);
    assert_int_equal(check_op(v, m.tok, AUTH_OP_GET), AUTH_OK);
    assert_int_equal(auth_verifier_remove_key(v, "k9"), 0);
    assert_int_equal(check_op(v, m.tok, AUTH_OP_GET), AUTH_DENY_KID); /* cache emptied too */
    assert_int_equal(auth_verifier_remove_key(v, "k9"), RON_ENOTFOUND);
    assert_int_equal(auth_verifier_add_key(v, "k1", root_key, 16), RON_EINVAL);
    for (int i = 0; i < AUTH_MAX_KEYS - 1; i++) {
        char kid[16];
        snprintf(kid, sizeof kid, "x%u", (unsigned)i);
        assert_int_equal(auth_verifier_add_key(v, kid, root_key, sizeof root_key), 0);
    }
    assert_int_equal(auth_verifier_add_key(v, "full", root_key, sizeof root_key), RON_EBUSY);
    auth_verifier_free(v);
}

static void
test_auth_parser_refuses_malformed_tokens_and_limits(void **st)
{
    (void)st;
    minted_t m;
    auth_token_t t;
    char buf[2 * AUTH_MAX_TOKEN];
    MINT(&m, "ops = get");
    size_t len = strlen(m.tok);

    assert_int_equal(auth_token_parse(m.tok, len, &t), 0);
    assert_string_equal(t.location, "ron");
    assert_string_equal(t.id_str, m.id);
    /* padding and the standard alphabet are read; trailing garbage is not */
    snprintf(buf, sizeof buf, "%s%s", m.tok, len % 4 == 2 ? "==" : len % 4 == 3 ? "=" : "");
    assert_int_equal(auth_token_parse(buf, strlen(buf), &t), 0);
    for (char *c = buf; *c; c++)
        *c = *c == '-' ? '+' : *c == '_' ? '/' : *c;
    assert_int_equal(auth_token_parse(buf, strlen(buf), &t), 0);
    snprintf(buf, sizeof buf, "%s=", m.tok);
    if (len % 4 != 3)
        assert_int_equal(auth_token_parse(buf, strlen(buf), &t), RON_ECAPFORMAT);
    snprintf(buf, sizeof buf, "%s ", m.tok);
    assert_int_equal(auth_token_parse(buf, strlen(buf), &t), RON_ECAPFORMAT);
    snprintf(buf, sizeof buf, "%sA", m.tok); /* trailing bytes after the signature */
    assert_int_equal(auth_token_parse(buf, strlen(buf), &t), RON_ECAPFORMAT);
    assert_int_equal(auth_token_parse(m.tok, len - 1, &t), RON_ECAPFORMAT);
    assert_int_equal(auth_token_parse("", 0, &t), RON_ECAPFORMAT);
    memset(buf, 'A', AUTH_MAX_TOKEN + 4);
    assert_int_equal(auth_token_parse(buf, AUTH_MAX_TOKEN + 4, &t), RON_ECAPFORMAT);

    /* AUTH_MAX_CAVEATS, and one more is refused by mint, attenuate and parse */
    const char *cav[AUTH_MAX_CAVEATS + 1];
    for (int i = 0; i <= AUTH_MAX_CAVEATS; i++)
        cav[i] = "ops = get";
    char big[AUTH_MAX_TOKEN + 1], big2[AUTH_MAX_TOKEN + 1];
    assert_int_equal(auth_id_new(m.id, "k1", 0), 0);
    assert_true(auth_mint(root_key, 32, m.id, cav, AUTH_MAX_CAVEATS, big, sizeof big) > 0);
    assert_int_equal(auth_token_parse(big, strlen(big), &t), 0);
    assert_int_equal(auth_mint(root_key, 32, m.id, cav, AUTH_MAX_CAVEATS + 1, big2, sizeof big2),
                     RON_ECAPFORMAT);
    assert_int_equal(auth_attenuate(big, strlen(big), cav, 1, big2, sizeof big2), RON_ECAPFORMAT);
    enum macaroon_returncode err;
    struct macaroon *lm = macaroon_deserialize(big, &err);
    struct macaroon *lm2 =
        macaroon_add_first_party_caveat(lm, (const unsigned char *)"ops = get", 9, &err);
    assert_int_equal(macaroon_serialize(lm2, big2, sizeof big2, &err), 0);
    assert_int_equal(auth_token_parse(big2, strlen(big2), &t), RON_ECAPFORMAT);
    macaroon_destroy(lm2);

    /* third-party caveats are not ours */
    lm2 = macaroon_add_third_party_caveat(lm, (const unsigned char *)"x", 1, root_key, 32,
                                          (const unsigned char *)"tp", 2, &err);
    assert_int_equal(macaroon_serialize(lm2, big2, sizeof big2, &err), 0);
    assert_int_equal(auth_token_parse(big2, strlen(big2), &t), RON_ECAPFORMAT);
    macaroon_destroy(lm2);
    macaroon_destroy(lm);

    /* a foreign identifier */
    struct macaroon *f = macaroon_create((const unsigned char *)"ron", 3, root_key, 32,
                                         (const unsigned char *)"user-42", 7, &err);
    assert_int_equal(macaroon_serialize(f, big2, sizeof big2, &err), 0);
    assert_int_equal(auth_token_parse(big2, strlen(big2), &t), RON_ECAPFORMAT);
    macaroon_destroy(f);
    /* a small cap is refused, not overrun */
    assert_int_equal(auth_attenuate(m.tok, len, NULL, 0, buf, 16), RON_ETOOBIG);
}

/* ---- revocation ---- */

static void
test_auth_revoking_an_id_kills_the_token_and_its_attenuations(void **st)
{
    (void)st;
    minted_t m, other;
    char att[AUTH_MAX_TOKEN + 1];
    const char *more[] = {"ops = get"};
    auth_revocation_t *rev = auth_revocation_new(16);
    auth_verifier_t *v = verifier(rev, 64);
    auth_id_t id;
    MINT(&m, "ops = get,put");
    MINT(&other, "ops = get,put");
    assert_true(auth_attenuate(m.tok, strlen(m.tok), more, 1, att, sizeof att) > 0);
    assert_int_equal(check_op(v, m.tok, AUTH_OP_GET), AUTH_OK);
    assert_int_equal(check_op(v, att, AUTH_OP_GET), AUTH_OK); /* now cached */

    assert_int_equal(auth_id_parse(m.id, strlen(m.id), &id), 0);
    assert_int_equal(auth_revocation_add(rev, id.nonce, 0, NOW), 0);
    assert_true(auth_revocation_has(rev, id.nonce));
    assert_int_equal(check_op(v, m.tok, AUTH_OP_GET), AUTH_DENY_REVOKED);
    assert_int_equal(check_op(v, att, AUTH_OP_GET), AUTH_DENY_REVOKED);
    assert_int_equal(check_op(v, other.tok, AUTH_OP_GET), AUTH_OK);
    assert_int_equal(auth_revocation_add(rev, id.nonce, 0, NOW), 0); /* idempotent */
    assert_int_equal(auth_revocation_count(rev), 1);
    auth_verifier_free(v);
    auth_revocation_free(rev);
}

/* Remove the first caveat packet starting with `cav` from tok's decoded
 * packets and re-encode, keeping the signature: a holder stripping a caveat. */
static void
strip_caveat(const char *tok, const char *cav, char *out, size_t cap)
{
    uint8_t raw[AUTH_MAX_RAW];
    char needle[AUTH_MAX_CAVEAT_LEN + 8];
    long n = auth__b64_decode(tok, strlen(tok), raw);
    assert_true(n > 0);
    snprintf(needle, sizeof needle, "cid %s", cav);
    uint8_t *at = memmem(raw, (size_t)n, needle, strlen(needle));
    assert_non_null(at);
    at -= 4; /* LLLL: the packet's whole length in hex */
    char len_hex[5] = {(char)at[0], (char)at[1], (char)at[2], (char)at[3], '\0'};
    size_t plen = strtoul(len_hex, NULL, 16);
    assert_true(plen > 4 && at + plen <= raw + n);
    memmove(at, at + plen, (size_t)(raw + n - (at + plen)));
    assert_true(auth__b64_encode(raw, (size_t)n - plen, out, cap) > 0);
}

static void
test_auth_ancestor_caveat_revokes_with_its_ancestor_and_cannot_be_stripped(void **st)
{
    (void)st;
    minted_t parent, child, other;
    char anc[64], att[AUTH_MAX_TOKEN + 1], stripped[AUTH_MAX_TOKEN + 1];
    const char *more[] = {"ops = get"};
    auth_revocation_t *rev = auth_revocation_new(16);
    auth_verifier_t *v = verifier(rev, 64);
    auth_id_t pid;

    MINT(&parent, "ops = get,mint");
    assert_int_equal(auth_id_parse(parent.id, strlen(parent.id), &pid), 0);
    snprintf(anc, sizeof anc, "ancestor = %s", parent.id + strlen(parent.id) - 32);
    MINT(&child, "ops = get,put", anc);
    MINT(&other, "ops = get,put");
    assert_true(auth_attenuate(child.tok, strlen(child.tok), more, 1, att, sizeof att) > 0);
    auth_token_t *t = malloc(sizeof *t);
    assert_int_equal(auth_token_parse(att, strlen(att), t), 0);
    assert_int_equal(t->grant.n_ancestors, 1); /* the attenuation keeps the lineage */
    assert_memory_equal(t->grant.ancestors[0], pid.nonce, AUTH_NONCE_LEN);
    free(t);
    for (int i = 0; i < 2; i++) { /* the second round comes from the verdict cache */
        assert_int_equal(check_op(v, child.tok, AUTH_OP_GET), AUTH_OK);
        assert_int_equal(check_op(v, att, AUTH_OP_GET), AUTH_OK);
    }

    /* dropping the ancestor packet breaks the HMAC chain */
    strip_caveat(child.tok, "ancestor = ", stripped, sizeof stripped);
    assert_int_equal(check_op(v, stripped, AUTH_OP_GET), AUTH_DENY_SIGNATURE);
    assert_false(libmacaroons_verifies(stripped, root_key, sizeof root_key));

    /* revoking the parent's identifier kills the child and its attenuation, nothing else */
    assert_int_equal(auth_revocation_add(rev, pid.nonce, 0, NOW), 0);
    assert_int_equal(check_op(v, parent.tok, AUTH_OP_GET), AUTH_DENY_REVOKED);
    assert_int_equal(check_op(v, child.tok, AUTH_OP_GET), AUTH_DENY_REVOKED);
    assert_int_equal(check_op(v, att, AUTH_OP_GET), AUTH_DENY_REVOKED);
    assert_int_equal(check_op(v, other.tok, AUTH_OP_GET), AUTH_OK);
    auth_verifier_free(v);
    auth_revocation_free(rev);
}

static void
test_auth_more_ancestors_than_the_limit_fail_as_a_caveat(void **st)
{
    (void)st;
    char cv[AUTH_MAX_ANCESTORS + 1][64];
    const char *cav[AUTH_MAX_ANCESTORS + 1];
    minted_t m;
    char out[AUTH_MAX_TOKEN + 1];

    for (int i = 0; i < AUTH_MAX_ANCESTORS + 1; i++) {
        snprintf(cv[i], sizeof cv[i], "ancestor = %032x", i + 1);
        cav[i] = cv[i];
    }
    cav[AUTH_MAX_ANCESTORS] = cv[0]; /* a repeat folds away: still the limit */
    mint_with(&m, "k1", 0, cav, AUTH_MAX_ANCESTORS + 1);
    auth_verifier_t *v = verifier(NULL, 0);
    assert_int_equal(check_op(v, m.tok, AUTH_OP_GET), AUTH_OK);
    /* one distinct ancestor more: libmacaroons signs it, we refuse it */
    enum macaroon_returncode err;
    struct macaroon *a = macaroon_create((const unsigned char *)"ron", 3, root_key, sizeof root_key,
                                         (const unsigned char *)m.id, strlen(m.id), &err);
    for (int i = 0; i < AUTH_MAX_ANCESTORS + 1; i++) {
        struct macaroon *b = macaroon_add_first_party_caveat(
            a, (const unsigned char *)cv[i], strlen(cv[i]), &err);
        macaroon_destroy(a);
        a = b;
    }
    assert_int_equal(macaroon_serialize(a, out, sizeof out, &err), 0);
    assert_true(libmacaroons_verifies(out, root_key, sizeof root_key));
    auth_verdict_t vd;
    auth_request_t r = req_of(AUTH_OP_GET);
    assert_int_equal(auth_verify(v, out, strlen(out), &r, &vd), RON_ECAPCAVEAT);
    assert_int_equal(vd.caveat, AUTH_MAX_ANCESTORS);
    macaroon_destroy(a);
    auth_verifier_free(v);
}

static void
test_auth_raising_the_epoch_kills_every_older_token(void **st)
{
    (void)st;
    minted_t e0, e1, e2;
    const char *cav[] = {"ops = get"};
    auth_revocation_t *rev = auth_revocation_new(4);
    auth_verifier_t *v = verifier(rev, 64);
    mint_with(&e0, "k1", 0, cav, 1);
    mint_with(&e1, "k1", 1, cav, 1);
    mint_with(&e2, "k1", 2, cav, 1);
    assert_int_equal(check_op(v, e0.tok, AUTH_OP_GET), AUTH_OK);
    assert_int_equal(auth_revocation_raise_epoch(rev, 2), 2);
    assert_int_equal(auth_revocation_raise_epoch(rev, 1), 2); /* never lowered */
    assert_int_equal(auth_revocation_epoch(rev), 2);
    assert_int_equal(check_op(v, e0.tok, AUTH_OP_GET), AUTH_DENY_EPOCH);
    assert_int_equal(check_op(v, e1.tok, AUTH_OP_GET), AUTH_DENY_EPOCH);
    assert_int_equal(check_op(v, e2.tok, AUTH_OP_GET), AUTH_OK);
    auth_verifier_free(v);
    auth_revocation_free(rev);
}

/* A full set of revocations of epoch 0: a raise to 1 drops them (their tokens
 * die by the epoch), so new revocations fit again; unknown-epoch ones stay. */
static void
test_auth_epoch_raise_drops_revocations_of_older_epochs_from_a_full_set(void **st)
{
    (void)st;
    auth_revocation_t *rev = auth_revocation_new(3);
    uint8_t n[6][AUTH_NONCE_LEN];
    memset(n, 0, sizeof n);
    for (int i = 0; i < 6; i++)
        n[i][0] = (uint8_t)(i + 1);
    assert_int_equal(auth_revocation_add_epoch(rev, n[0], 0, 0, NOW), 0);
    assert_int_equal(auth_revocation_add_epoch(rev, n[1], 0, 0, NOW), 0);
    assert_int_equal(auth_revocation_add(rev, n[2], 0, NOW), 0); /* epoch unknown */
    assert_int_equal(auth_revocation_add_epoch(rev, n[3], 1, 0, NOW), RON_ECAPFULL);
    assert_int_equal(auth_revocation_raise_epoch(rev, 1), 1);
    assert_int_equal(auth_revocation_count(rev), 1);
    assert_false(auth_revocation_has(rev, n[0]));
    assert_true(auth_revocation_has(rev, n[2]));
    assert_int_equal(auth_revocation_add_epoch(rev, n[3], 1, 0, NOW), 0);
    assert_int_equal(auth_revocation_add_epoch(rev, n[4], 2, 0, NOW), 0);
    /* a raise to 2 drops epoch 1, keeps epoch 2; a lower raise drops nothing */
    assert_int_equal(auth_revocation_raise_epoch(rev, 2), 2);
    assert_false(auth_revocation_has(rev, n[3]));
    assert_true(auth_revocation_has(rev, n[4]));
    assert_int_equal(auth_revocation_raise_epoch(rev, 1), 2);
    assert_int_equal(auth_revocation_count(rev), 2);
    auth_revocation_free(rev);
}

static void
test_auth_revocation_set_is_bounded_and_drops_expired_entries_first(void **st)
{
    (void)st;
    auth_revocation_t *rev = auth_revocation_new(3);
    uint8_t n[5][AUTH_NONCE_LEN];
    memset(n, 0, sizeof n);
    for (int i = 0; i < 5; i++)
        n[i][0] = (uint8_t)(i + 1);
    assert_null(auth_revocation_new(0));
    assert_null(auth_revocation_new(AUTH_REVOKE_MAX + 1));
    assert_int_equal(auth_revocation_add(rev, n[0], NOW + 10, NOW), 0);
    assert_int_equal(auth_revocation_add(rev, n[1], 0, NOW), 0);
    assert_int_equal(auth_revocation_add(rev, n[2], NOW + 1000, NOW), 0);
    assert_int_equal(auth_revocation_add(rev, n[3], 0, NOW), RON_ECAPFULL);
    assert_int_equal(auth_revocation_count(rev), 3);
    /* later, n[0]'s token has expired (past its until and the skew): it makes room */
    assert_int_equal(auth_revocation_add(rev, n[3], 0, NOW + 10 + AUTH_SKEW + 1), 0);
    assert_false(auth_revocation_has(rev, n[0]));
    assert_true(auth_revocation_has(rev, n[1]));
    assert_true(auth_revocation_has(rev, n[2]));
    assert_true(auth_revocation_has(rev, n[3]));
    assert_int_equal(auth_revocation_add(rev, n[4], 0, NOW + 100), RON_ECAPFULL);
    auth_revocation_free(rev);
}

/* ---- cache ---- */

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void
test_auth_verdict_cache_hits_within_1s_and_expires_after(void **st)
{
    (void)st;
    minted_t m;
    auth_revocation_t *rev = auth_revocation_new(4);
    auth_verifier_t *v = verifier(rev, 32);
    auth_request_t r = req_of(AUTH_OP_GET);
    auth_verdict_t vd;
    uint64_t hits, misses;
    char bad[AUTH_MAX_TOKEN + 1];
    MINT(&m, "ops = get", "max-bytes = 10");

    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_false(vd.cached);
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_true(vd.cached);
    /* a hit still checks the request and the time */
    r.op = AUTH_OP_PUT;
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), RON_ECAPDENY);
    assert_true(vd.cached);
    assert_int_equal(vd.reason, AUTH_DENY_OP);
    /* bad signatures are never cached */
    tamper(m.tok, "10", '9', bad, sizeof bad);
    r.op = AUTH_OP_GET;
    assert_int_equal(auth_verify(v, bad, strlen(bad), &r, &vd), RON_ECAPSIG);
    assert_int_equal(auth_verify(v, bad, strlen(bad), &r, &vd), RON_ECAPSIG);
    assert_false(vd.cached);
    auth_verifier_cache_stats(v, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 3);
    /* an entry lives at most AUTH_CACHE_TTL_MS */
    sleep_ms(AUTH_CACHE_TTL_MS + 100);
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_false(vd.cached);
    /* revocation applies to a cached token at once */
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), 0);
    assert_true(vd.cached);
    assert_int_equal(auth_revocation_add(rev, vd.id.nonce, 0, NOW), 0);
    assert_int_equal(auth_verify(v, m.tok, strlen(m.tok), &r, &vd), RON_ECAPREVOKED);
    assert_null(auth_verifier_new(NULL, AUTH_CACHE_MAX + 1));
    auth_verifier_free(v);
    auth_revocation_free(rev);
}

static void
test_auth_verdict_cache_is_bounded_and_evicts_the_oldest(void **st)
{
    (void)st;
    minted_t m[5];
    auth_verifier_t *v = verifier(NULL, 4); /* one set of 4 slots: every token maps to it */
    auth_request_t r = req_of(AUTH_OP_GET);
    auth_verdict_t vd;

    for (int i = 0; i < 5; i++) {
        MINT(&m[i], "ops = get");
        assert_int_equal(auth_verify(v, m[i].tok, strlen(m[i].tok), &r, &vd), 0);
        assert_false(vd.cached);
        sleep_ms(2); /* distinct stamps: "oldest" is well defined */
    }
    for (int i = 4; i >= 1; i--) { /* the four newest are held */
        assert_int_equal(auth_verify(v, m[i].tok, strlen(m[i].tok), &r, &vd), 0);
        assert_true(vd.cached);
    }
    assert_int_equal(auth_verify(v, m[0].tok, strlen(m[0].tok), &r, &vd), 0);
    assert_false(vd.cached); /* the first was evicted by the fifth */
    auth_verifier_free(v);
}

/* ---- threads (argument "threads"; `make tsan` runs this label) ---- */

#define THREADS 4
#define THREAD_TOKENS 8

typedef struct {
    auth_verifier_t *v;
    minted_t *tokens;
    int revoked;       /* atomic: set once the revocation call returned */
    int allowed_after; /* atomic: allows of token 0 seen after revoked was set */
    int wrong_denials; /* atomic: refusals of the other tokens */
    int stop;          /* atomic */
} race_t;

static void *
race_worker(void *arg)
{
    race_t *r = arg;
    auth_request_t req = req_of(AUTH_OP_GET);
    auth_verdict_t vd;

    for (int i = 0; i < 200000 && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
        int k = i % THREAD_TOKENS;
        int was_revoked = __atomic_load_n(&r->revoked, __ATOMIC_ACQUIRE);
        int rc = auth_verify(r->v, r->tokens[k].tok, strlen(r->tokens[k].tok), &req, &vd);
        if (k == 0 && was_revoked && rc == 0)
            __atomic_add_fetch(&r->allowed_after, 1, __ATOMIC_RELAXED);
        if (k != 0 && rc != 0) /* cmocka's fail_msg is not for other threads */
            __atomic_add_fetch(&r->wrong_denials, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void
test_auth_threads_verify_while_one_revokes(void **st)
{
    (void)st;
    minted_t tokens[THREAD_TOKENS];
    pthread_t th[THREADS];
    auth_revocation_t *rev = auth_revocation_new(64);
    race_t r = {.v = verifier(rev, 64), .tokens = tokens};
    auth_id_t id;

    for (int i = 0; i < THREAD_TOKENS; i++)
        MINT(&tokens[i], "ops = get", "max-bytes = 10");
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_worker, &r), 0);
    sleep_ms(50);
    assert_int_equal(auth_id_parse(tokens[0].id, strlen(tokens[0].id), &id), 0);
    assert_int_equal(auth_revocation_add(rev, id.nonce, 0, NOW), 0);
    __atomic_store_n(&r.revoked, 1, __ATOMIC_RELEASE);
    sleep_ms(100);
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(r.allowed_after, 0); /* converged at once, cache or not */
    assert_int_equal(r.wrong_denials, 0);
    auth_verifier_free(r.v);
    auth_revocation_free(rev);
}

static void
test_auth_names_and_codes(void **st)
{
    (void)st;
    auth_op_t op;
    assert_int_equal(auth_op_parse("mint", 4, &op), 0);
    assert_int_equal(op, AUTH_OP_MINT);
    assert_int_equal(auth_op_parse("gets", 4, &op), RON_EINVAL);
    assert_string_equal(auth_op_name(AUTH_OP_RECV), "recv");
    assert_string_equal(auth_op_name(AUTH_OP_COUNT), "?");
    assert_string_equal(auth_reason_name(AUTH_DENY_SIGNATURE), "signature");
    assert_string_equal(auth_reason_name(AUTH_DENY_NAME), "name");
    assert_int_equal(auth_reason_code(AUTH_OK), 0);
    assert_int_equal(auth_reason_code(AUTH_DENY_EPOCH), RON_ECAPREVOKED);
    assert_int_equal(auth_reason_code(AUTH_DENY_NOT_YET), RON_ECAPEXPIRED);
    assert_int_equal(auth_reason_code(AUTH_DENY_PREFIX), RON_ECAPDENY);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest threads[] = {
        cmocka_unit_test(test_auth_threads_verify_while_one_revokes),
    };
    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests(threads, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_token_minted_by_libmacaroons_verifies_with_ours),
        cmocka_unit_test(test_auth_attenuated_by_us_verifies_with_libmacaroons),
        cmocka_unit_test(test_auth_tampered_token_fails_in_both_verifiers),
        cmocka_unit_test(test_auth_caveat_grammar_accepts_each_key_and_refuses_the_rest),
        cmocka_unit_test(test_auth_unknown_caveat_key_fails_verification),
        cmocka_unit_test(test_auth_attenuation_only_narrows),
        cmocka_unit_test(test_auth_expires_and_not_before_allow_60s_of_skew),
        cmocka_unit_test(test_auth_request_checks_tenant_size_and_leave_unknowns_pending),
        cmocka_unit_test(test_auth_identifier_syntax_is_strict),
        cmocka_unit_test(test_auth_unknown_kid_and_removed_key_fail),
        cmocka_unit_test(test_auth_parser_refuses_malformed_tokens_and_limits),
        cmocka_unit_test(test_auth_revoking_an_id_kills_the_token_and_its_attenuations),
        cmocka_unit_test(test_auth_raising_the_epoch_kills_every_older_token),
        cmocka_unit_test(test_auth_revocation_set_is_bounded_and_drops_expired_entries_first),
        cmocka_unit_test(test_auth_epoch_raise_drops_revocations_of_older_epochs_from_a_full_set),
        cmocka_unit_test(test_auth_verdict_cache_hits_within_1s_and_expires_after),
        cmocka_unit_test(test_auth_verdict_cache_is_bounded_and_evicts_the_oldest),
        cmocka_unit_test(test_auth_names_and_codes),
        cmocka_unit_test(test_auth_ancestor_caveat_revokes_with_its_ancestor_and_cannot_be_stripped),
        cmocka_unit_test(test_auth_more_ancestors_than_the_limit_fail_as_a_caveat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
