/*
 * test_ron_guard.c - ron-guard: the entry/page codec, key derivation, the
 * authority (in RAM and persisted), a guard following it, the decision
 * order of guard_check (401/403/429 with their slugs), counting and
 * auditing of rejections, minting by narrowing, minted tokens dying with
 * their ancestors (lineage, bounded depth), the service's own token,
 * and guard_check on four threads while guard_apply revokes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <blake3.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard_internal.h"
#include "ron_err.h"
#include "ron_util.h"

static const uint8_t test_seed[32] = "ron-guard test identity seed 32";

static void
test_master(uint8_t m[GUARD_MASTER_LEN])
{
    guard_master_derive(test_seed, m);
}

static char *
tmpdir_make(void)
{
    char *d = strdup("/tmp/test_ron_guard.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void
tmpdir_remove(char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

static guard_authority_t *
authority_ram(int64_t now)
{
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_authority_opts_t o = {.master = m};
    guard_authority_t *a = NULL;
    assert_int_equal(guard_authority_open(&o, now, &a), 0);
    return a;
}

static guard_t *
guard_make(const char *policy_file)
{
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_opts_t o = {.service = "test", .master = m, .policy_file = policy_file};
    guard_t *g = NULL;
    assert_int_equal(guard_new(&o, &g), 0);
    return g;
}

/* Bring g up to a's head through pages as the kernel would send them. */
static void
guard_follow(guard_t *g, guard_authority_t *a)
{
    static guard_entry_t e[GUARD_SYNC_PAGE], d[GUARD_SYNC_PAGE];
    static char page[GUARD__PAGE_MAX_JSON];
    for (int i = 0; i < 10000; i++) {
        bool more = false;
        uint64_t prev = guard_head(g);
        size_t n = guard_authority_since(a, prev, e, GUARD_SYNC_PAGE, &more);
        uint64_t head = more ? e[n - 1].seq : guard_authority_head(a);
        long w = guard_page_encode(prev, head, e, n, page, sizeof page);
        assert_true(w > 0);
        uint64_t p2, h2;
        long m = guard_page_decode(page, (size_t)w, &p2, &h2, d, GUARD_SYNC_PAGE);
        assert_int_equal(m, (long)n);
        assert_int_equal(guard_apply(g, p2, h2, d, (size_t)m), 0);
        if (!more)
            return;
    }
    fail_msg("guard_follow did not converge");
}

/* Mint under the authority's current kid with these caveats. */
static long
mint_with(guard_authority_t *a, const char *kid, uint64_t epoch, const char *const *cav, size_t n,
          char *out, size_t cap, char *id_out)
{
    uint8_t m[GUARD_MASTER_LEN], key[GUARD_KEY_LEN];
    char id[AUTH_ID_MAX + 1];
    test_master(m);
    guard_root_key(m, kid ? kid : guard_authority_kid(a), key);
    assert_int_equal(auth_id_new(id, kid ? kid : guard_authority_kid(a), epoch), 0);
    if (id_out)
        strcpy(id_out, id);
    return auth_mint(key, sizeof key, id, cav, n, out, cap);
}

static int
check_tok(guard_t *g, auth_op_t op, const char *tok, guard_result_t *r)
{
    guard_req_t q = {.op = op,
                     .token = tok,
                     .token_len = tok ? strlen(tok) : 0,
                     .size = AUTH_SIZE_UNKNOWN,
                     .target = "b3:00ff"};
    return guard_check(g, &q, r);
}

/* ---- codec ---- */

static void
test_guard_entries_and_pages_round_trip(void **state)
{
    (void)state;
    guard_entry_t e[3] = {0}, d[3];
    char buf[GUARD_MAX_ENTRY_JSON + 1], page[2048];
    e[0] = (guard_entry_t){.seq = 7, .kind = GUARD_E_KIDS, .n_kids = 2};
    strcpy(e[0].kids[0], "r2");
    strcpy(e[0].kids[1], "r1");
    e[1] = (guard_entry_t){.seq = 8, .kind = GUARD_E_EPOCH, .epoch = UINT64_MAX};
    e[2] = (guard_entry_t){.seq = UINT64_MAX, .kind = GUARD_E_REVOKE, .until = INT64_MAX};
    memset(e[2].nonce, 0xab, AUTH_NONCE_LEN);
    int n = guard_entry_encode(&e[0], buf, sizeof buf);
    assert_string_equal(buf, "{\"seq\":\"7\",\"kind\":\"kids\",\"kids\":[\"r2\",\"r1\"]}");
    for (int i = 0; i < 3; i++) {
        n = guard_entry_encode(&e[i], buf, sizeof buf);
        assert_true(n > 0 && n <= GUARD_MAX_ENTRY_JSON);
        assert_int_equal(guard_entry_decode(buf, (size_t)n, &d[0]), 0);
        assert_memory_equal(&d[0], &e[i], sizeof d[0]);
    }
    assert_int_equal(guard_entry_encode(&e[0], buf, 10), RON_ETOOBIG);
    long w = guard_page_encode(6, UINT64_MAX, e, 3, page, sizeof page);
    assert_true(w > 0);
    uint64_t prev, head;
    assert_int_equal(guard_page_decode(page, (size_t)w, &prev, &head, d, 3), 3);
    assert_int_equal(prev, 6);
    assert_true(head == UINT64_MAX);
    assert_memory_equal(d, e, sizeof e);
    /* Fewer slots than entries: too big, not truncated. */
    assert_int_equal(guard_page_decode(page, (size_t)w, &prev, &head, d, 2), RON_ETOOBIG);
    assert_int_equal(guard_page_encode(0, 1, e, 3, page, 40), RON_ETOOBIG);
}

static void
test_guard_codec_refuses_what_the_kernel_would_not_write(void **state)
{
    (void)state;
    static const char *const bad_entries[] = {
        "{\"seq\":\"0\",\"kind\":\"epoch\",\"epoch\":\"1\"}",  /* seq 0 */
        "{\"seq\":\"01\",\"kind\":\"epoch\",\"epoch\":\"1\"}", /* leading zero */
        "{\"seq\":7,\"kind\":\"epoch\",\"epoch\":\"1\"}",      /* number, not string */
        "{\"seq\":\"7\",\"kind\":\"epoch\",\"epoch\":\"-1\"}", /* sign */
        "{\"seq\":\"7\",\"kind\":\"epoch\",\"epoch\":\"18446744073709551616\"}", /* overflow */
        "{\"seq\":\"7\",\"kind\":\"epoch\",\"epoch\":\"1\",\"x\":1}",            /* unknown key */
        "{\"seq\":\"7\",\"kind\":\"epoch\",\"epoch\":\"1\",\"epoch\":\"2\"}",    /* duplicate */
        "{\"seq\":\"7\",\"kind\":\"kids\",\"kids\":[]}",
        "{\"seq\":\"7\",\"kind\":\"kids\",\"kids\":[\"r1\",\"r2\",\"r3\"]}",
        "{\"seq\":\"7\",\"kind\":\"kids\",\"kids\":[\"r1\",\"r1\"]}",
        "{\"seq\":\"7\",\"kind\":\"kids\",\"kids\":[\"R1\"]}",
        "{\"seq\":\"7\",\"kind\":\"kids\",\"kids\":[\"r12345678901234567\"]}",
        "{\"seq\":\"7\",\"kind\":\"revoke\",\"nonce\":\"00112233445566778899AABBCCDDEEFF\","
        "\"until\":\"0\"}",
        "{\"seq\":\"7\",\"kind\":\"revoke\",\"nonce\":\"0011\",\"until\":\"0\"}",
        "{\"seq\":\"7\",\"kind\":\"revoke\",\"nonce\":\"00112233445566778899aabbccddeeff\","
        "\"until\":\"9223372036854775808\"}",
        "{\"seq\":\"7\",\"kind\":\"revoke\",\"nonce\":\"00112233445566778899aabbccddeeff\"}",
        "{\"seq\":\"7\",\"kind\":\"revoke\",\"nonce\":\"00112233445566778899aabbccddeeff\","
        "\"until\":\"0\",\"epoch\":\"18446744073709551615\"}", /* the unknown marker */
        "{\"seq\":\"7\",\"kind\":\"revoke\",\"nonce\":\"00112233445566778899aabbccddeeff\","
        "\"until\":\"0\",\"epoch\":3}",
        "{\"seq\":\"7\",\"kind\":\"other\"}",
        "[\"seq\"]",
        "{\"seq\":\"7\",\"kind\":\"epoch\",\"epoch\":\"1\"} trailing",
        "",
    };
    guard_entry_t e;
    for (size_t i = 0; i < RON_ARRAY_LEN(bad_entries); i++)
        assert_int_equal(guard_entry_decode(bad_entries[i], strlen(bad_entries[i]), &e), RON_EJSON);
    static const char *const bad_pages[] = {
        "{\"prev\":\"3\",\"head\":\"2\",\"entries\":[]}",
        "{\"prev\":\"0\",\"head\":\"2\",\"entries\":[{\"seq\":\"3\",\"kind\":\"epoch\","
        "\"epoch\":\"1\"}]}",
        "{\"prev\":\"1\",\"head\":\"2\",\"entries\":[{\"seq\":\"1\",\"kind\":\"epoch\","
        "\"epoch\":\"1\"}]}",
        "{\"prev\":\"0\",\"head\":\"3\",\"entries\":[{\"seq\":\"2\",\"kind\":\"epoch\","
        "\"epoch\":\"1\"},{\"seq\":\"2\",\"kind\":\"epoch\",\"epoch\":\"2\"}]}",
        "{\"prev\":\"0\",\"head\":\"2\"}",
        "{\"prev\":\"0\",\"head\":\"2\",\"entries\":[],\"more\":true}",
        "{\"prev\":\"0\",\"head\":\"2\",\"entries\":{}}",
    };
    uint64_t p, h;
    guard_entry_t es[4];
    for (size_t i = 0; i < RON_ARRAY_LEN(bad_pages); i++)
        assert_int_equal(guard_page_decode(bad_pages[i], strlen(bad_pages[i]), &p, &h, es, 4),
                         RON_EJSON);
    guard_entry_t k = {.seq = 1, .kind = GUARD_E_KIDS, .n_kids = 3};
    char buf[200];
    assert_int_equal(guard_entry_encode(&k, buf, sizeof buf), RON_EINVAL);
    k.n_kids = 1;
    strcpy(k.kids[0], "Bad");
    assert_int_equal(guard_entry_encode(&k, buf, sizeof buf), RON_EINVAL);
}

static void
test_guard_keys_derive_per_kid_and_per_seed(void **state)
{
    (void)state;
    uint8_t m1[GUARD_MASTER_LEN], m2[GUARD_MASTER_LEN], seed2[32] = {1};
    uint8_t k1[GUARD_KEY_LEN], k1b[GUARD_KEY_LEN], k2[GUARD_KEY_LEN], k3[GUARD_KEY_LEN];
    test_master(m1);
    guard_master_derive(seed2, m2);
    assert_memory_not_equal(m1, m2, GUARD_MASTER_LEN);
    assert_memory_not_equal(m1, test_seed, 32);
    guard_root_key(m1, "r1", k1);
    guard_root_key(m1, "r1", k1b);
    guard_root_key(m1, "r2", k2);
    guard_root_key(m2, "r1", k3);
    assert_memory_equal(k1, k1b, GUARD_KEY_LEN);
    assert_memory_not_equal(k1, k2, GUARD_KEY_LEN);
    assert_memory_not_equal(k1, k3, GUARD_KEY_LEN);
}

/* ---- guard_check ---- */

static void
test_guard_anonymous_get_allowed_and_put_needs_a_capability(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_GET, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.anonymous);
    assert_string_equal(r.actor, "anon");
    assert_int_equal(check_tok(g, AUTH_OP_PUT, NULL, &r), RON_ECAPNEEDED);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.slug, "capability_required");
    assert_true(strlen(r.reason) > 0);
    /* The operator's token does everything. */
    char tok[AUTH_MAX_TOKEN + 1];
    assert_true(guard_authority_mint_operator(a, tok, sizeof tok) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), 0);
    assert_false(r.anonymous);
    assert_int_equal(strncmp(r.actor, "ron1:r1:0:", 10), 0);
    assert_int_equal(check_tok(g, AUTH_OP_ADMIN, tok, &r), 0);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_bad_unknown_kid_revoked_and_expired_tokens_get_401_with_their_slug(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    guard_result_t r;
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];

    assert_int_equal(check_tok(g, AUTH_OP_PUT, "not a token!", &r), RON_ECAPFORMAT);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.slug, "capability_invalid");
    assert_string_equal(r.actor, "anon");

    assert_true(mint_with(a, "r9", 0, NULL, 0, tok, sizeof tok, id) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPKID);
    assert_string_equal(r.slug, "capability_invalid");
    assert_string_equal(r.actor, id);

    /* Tampered: flip one character of the signature's base64. */
    assert_true(mint_with(a, NULL, 0, NULL, 0, tok, sizeof tok, id) > 0);
    size_t l = strlen(tok);
    tok[l - 3] = tok[l - 3] == 'A' ? 'B' : 'A';
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPSIG);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.slug, "capability_invalid");

    const char *expired[] = {"expires = 1000000000"};
    assert_true(mint_with(a, NULL, 0, expired, 1, tok, sizeof tok, id) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPEXPIRED);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.slug, "capability_expired");

    assert_true(mint_with(a, NULL, 0, NULL, 0, tok, sizeof tok, id) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), 0);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, 0, NULL), 0);
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPREVOKED);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.slug, "capability_revoked");
    assert_string_equal(r.actor, id);

    /* An epoch raise kills every older token. */
    assert_true(mint_with(a, NULL, 0, NULL, 0, tok, sizeof tok, id) > 0);
    assert_int_equal(guard_authority_raise_epoch(a, 0, NULL), 1);
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPREVOKED);
    assert_string_equal(r.slug, "capability_revoked");
    assert_true(mint_with(a, NULL, 1, NULL, 0, tok, sizeof tok, id) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), 0);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_get_only_token_doing_put_is_403_forbidden(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    guard_result_t r;
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];
    const char *get_only[] = {"ops = get"};
    assert_true(mint_with(a, NULL, 0, get_only, 1, tok, sizeof tok, id) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPDENY);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.slug, "forbidden");
    assert_string_equal(r.actor, id);
    assert_int_equal(guard_status_of(RON_ECAPDENY), 403);
    assert_int_equal(guard_status_of(RON_EFLOOD), 429);
    assert_int_equal(guard_status_of(RON_ECAPNEEDED), 401);
    assert_int_equal(guard_status_of(RON_EPOLDENY), 403);
    assert_int_equal(guard_status_of(RON_EINVAL), 500);
    guard_free(g);
    guard_authority_close(a);
}

static char *
policy_write(const char *dir, const char *json)
{
    char *p = malloc(512);
    snprintf(p, 512, "%s/policy.json", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    return p;
}

static void
test_guard_policy_deny_is_403_with_the_policy_reason_and_reload_rolls_back(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *pf = policy_write(
        dir, "{\"version\":1,\"rules\":["
             "{\"id\":\"no-admin\",\"effect\":\"deny\",\"match\":{\"anonymous\":false,"
             "\"ops\":[\"admin\"]},\"reason\":\"administration is closed on this node\"},"
             "{\"id\":\"bearer\",\"effect\":\"allow\",\"match\":{\"anonymous\":false}},"
             "{\"id\":\"anon\",\"effect\":\"deny\",\"match\":{\"anonymous\":true},"
             "\"reason\":\"this node serves only capability holders\"}]}");
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(pf);
    guard_follow(g, a);
    guard_result_t r;
    char tok[AUTH_MAX_TOKEN + 1];
    assert_true(guard_authority_mint_operator(a, tok, sizeof tok) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), 0);
    assert_int_equal(check_tok(g, AUTH_OP_ADMIN, tok, &r), RON_EPOLDENY);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.slug, "forbidden");
    assert_string_equal(r.reason, "administration is closed on this node");
    /* This policy denies anonymous reads: 401, capability required. */
    assert_int_equal(check_tok(g, AUTH_OP_GET, NULL, &r), RON_ECAPNEEDED);
    assert_string_equal(r.reason, "this node serves only capability holders");

    /* A broken bundle changes nothing; the default brings anonymous reads back. */
    char *bad = policy_write(dir, "{\"version\":1,\"rules\":[{\"id\":\"x\"}]}");
    assert_int_equal(guard_policy_reload(g, bad), RON_EPOLICY);
    assert_int_equal(check_tok(g, AUTH_OP_GET, NULL, &r), RON_ECAPNEEDED);
    assert_int_equal(guard_policy_reload(g, NULL), 0);
    assert_int_equal(check_tok(g, AUTH_OP_GET, NULL, &r), 0);
    assert_int_equal(check_tok(g, AUTH_OP_ADMIN, tok, &r), 0);
    /* A malformed policy file makes guard_new fail with the policy's code. */
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_opts_t o = {.service = "test", .master = m, .policy_file = bad};
    guard_t *g2 = (guard_t *)1;
    assert_int_equal(guard_new(&o, &g2), RON_EPOLICY);
    assert_null(g2);
    guard_free(g);
    guard_authority_close(a);
    free(pf);
    free(bad);
    tmpdir_remove(dir);
}

static void
test_guard_per_source_rate_gives_429_with_retry_after(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *pf =
        policy_write(dir, "{\"version\":1,\"rules\":[{\"id\":\"slow-read\",\"effect\":\"allow\","
                          "\"match\":{\"anonymous\":true,\"ops\":[\"get\"]},"
                          "\"obligations\":{\"rate\":\"1/s\",\"burst\":3}}]}");
    guard_t *g = guard_make(pf);
    struct sockaddr_in a1 = {.sin_family = AF_INET, .sin_port = htons(1000)};
    struct sockaddr_in a2 = {.sin_family = AF_INET, .sin_port = htons(1000)};
    inet_pton(AF_INET, "192.0.2.1", &a1.sin_addr);
    inet_pton(AF_INET, "192.0.2.2", &a2.sin_addr);
    guard_req_t q = {
        .op = AUTH_OP_GET, .size = AUTH_SIZE_UNKNOWN, .source = (struct sockaddr *)&a1};
    guard_result_t r;
    for (int i = 0; i < 3; i++)
        assert_int_equal(guard_check(g, &q, &r), 0);
    /* Another port of the same address shares the bucket. */
    a1.sin_port = htons(2000);
    assert_int_equal(guard_check(g, &q, &r), RON_EFLOOD);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.slug, "rate_limited");
    assert_true(r.retry_after_s >= 1);
    /* Another source has its own bucket; a local request (no source) has none. */
    q.source = (struct sockaddr *)&a2;
    assert_int_equal(guard_check(g, &q, &r), 0);
    q.source = NULL;
    for (int i = 0; i < 10; i++)
        assert_int_equal(guard_check(g, &q, &r), 0);
    guard_free(g);
    free(pf);
    tmpdir_remove(dir);
}

static void
test_guard_rate_caveat_gives_429_per_token(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1], att[AUTH_MAX_TOKEN + 1], other[AUTH_MAX_TOKEN + 1];
    const char *rate[] = {"rate = 2/s"};
    assert_true(mint_with(a, NULL, 0, rate, 1, tok, sizeof tok, NULL) > 0);
    assert_true(mint_with(a, NULL, 0, rate, 1, other, sizeof other, NULL) > 0);
    const char *narrow[] = {"ops = get"};
    assert_true(auth_attenuate(tok, strlen(tok), narrow, 1, att, sizeof att) > 0);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
    /* An attenuation shares its parent's bucket (same identifier). */
    assert_int_equal(check_tok(g, AUTH_OP_GET, att, &r), 0);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_EFLOOD);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.slug, "rate_limited");
    assert_true(r.retry_after_s >= 1);
    assert_int_equal(check_tok(g, AUTH_OP_GET, other, &r), 0);
    guard_free(g);
    guard_authority_close(a);
}

/* A put crosses the gateway (the edge) and then storage's bus endpoint, both
 * checking the same token: the rate caveat is charged once, at the edge, so a
 * token with rate = 1/s can still upload. */
static void
test_guard_forwarded_requests_do_not_charge_the_rate_caveat_again(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1];
    const char *rate[] = {"rate = 1/s"};
    assert_true(mint_with(a, NULL, 0, rate, 1, tok, sizeof tok, NULL) > 0);
    guard_result_t r;
    guard_req_t q = {.op = AUTH_OP_PUT,
                     .token = tok,
                     .token_len = strlen(tok),
                     .size = 10,
                     .target = "put"};
    assert_int_equal(guard_check(g, &q, &r), 0); /* the edge: charged */
    q.forwarded = true;
    for (int i = 0; i < 3; i++) /* put_begin, commit, ...: not charged */
        assert_int_equal(guard_check(g, &q, &r), 0);
    q.forwarded = false;
    assert_int_equal(guard_check(g, &q, &r), RON_EFLOOD); /* the edge again: over its rate */
    assert_int_equal(r.status, 429);
    /* a forwarded request still gets every other check */
    assert_int_equal(guard_authority_revoke(a, r.actor, strlen(r.actor), 0, time(NULL), NULL), 0);
    guard_follow(g, a);
    q.forwarded = true;
    assert_int_equal(guard_check(g, &q, &r), RON_ECAPREVOKED);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_rate_table_is_bounded_and_evicts_the_least_recently_used(void **state)
{
    (void)state;
    guard__rate_t r;
    assert_int_equal(guard__rate_init(&r, 0), RON_EINVAL);
    assert_int_equal(guard__rate_init(&r, GUARD_RATE_SLOTS + 1), RON_EINVAL);
    assert_int_equal(guard__rate_init(&r, 4), 0);
    uint8_t k[6][GUARD__RATE_KEY] = {{0}};
    for (int i = 0; i < 6; i++)
        k[i][0] = (uint8_t)(i + 1);
    uint32_t retry = 0;
    const uint64_t t = 1000000000ull;
    /* rate 1/s, depth 1: one request, then 429 for about a second. */
    for (int i = 0; i < 4; i++)
        assert_true(guard__rate_take(&r, k[i], 1, 1, t, &retry));
    assert_false(guard__rate_take(&r, k[0], 1, 1, t, &retry));
    assert_int_equal(retry, 1);
    /* k[0] was just used: the least recently used is k[1]; k[4] evicts it. */
    assert_true(guard__rate_take(&r, k[4], 1, 1, t, &retry));
    assert_int_equal(r.n, 4);
    assert_int_equal(r.evicted, 1);
    assert_true(guard__rate_take(&r, k[1], 1, 1, t, &retry));  /* forgotten: full again */
    assert_false(guard__rate_take(&r, k[0], 1, 1, t, &retry)); /* still empty */
    /* Refill with time: half a second gives nothing at 1/s, a full one a token. */
    assert_false(guard__rate_take(&r, k[1], 1, 1, t + 500000000ull, &retry));
    assert_true(guard__rate_take(&r, k[1], 1, 1, t + 1000000000ull, &retry));
    assert_true(guard__rate_take(&r, k[5], 1, 1, t, &retry));
    assert_int_equal(r.n, 4);
    assert_int_equal(r.evicted, 3);
    guard__rate_destroy(&r);
}

static void
collect_lines(void *arg, const char *line, size_t len)
{
    char *buf = arg;
    size_t have = strlen(buf);
    if (have + len + 1 < 65536) {
        memcpy(buf + have, line, len);
        buf[have + len] = '\0';
    }
}

static void
test_guard_rejections_are_counted_and_audited_without_the_token(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];
    const char *get_only[] = {"ops = get"};
    assert_true(mint_with(a, NULL, 0, get_only, 1, tok, sizeof tok, id) > 0);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_PUT, NULL, &r), RON_ECAPNEEDED);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, NULL, &r), RON_ECAPNEEDED);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPDENY);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
    char bad[AUTH_MAX_TOKEN + 8];
    snprintf(bad, sizeof bad, "%sx", tok);
    assert_int_equal(check_tok(g, AUTH_OP_GET, bad, &r), RON_ECAPFORMAT);
    /* A target too long or not UTF-8 is cleaned, never a lost record. */
    char longt[2000];
    memset(longt, 'z', sizeof longt - 1);
    longt[sizeof longt - 1] = '\0';
    longt[5] = (char)0xff;
    guard_req_t ql = {.op = AUTH_OP_PUT, .target = longt};
    assert_int_equal(guard_check(g, &ql, &r), RON_ECAPNEEDED);
    /* A late rejection (pending constraint) counts too. */
    guard_req_t q = {
        .op = AUTH_OP_PUT, .token = tok, .token_len = strlen(tok), .target = "b3:late"};
    assert_int_equal(guard_reject(g, &q, RON_ECAPDENY, &r), RON_ECAPDENY);
    assert_string_equal(r.actor, id);

    static char text[16384];
    size_t n = guard_metrics_render(g, text, sizeof text);
    assert_true(n > 0);
    assert_non_null(
        strstr(text, "guard_rejected_total{service=\"test\",reason=\"capability_required\"} 3\n"));
    assert_non_null(
        strstr(text, "guard_rejected_total{service=\"test\",reason=\"forbidden\"} 2\n"));
    assert_non_null(
        strstr(text, "guard_rejected_total{service=\"test\",reason=\"capability_invalid\"} 1\n"));
    assert_non_null(strstr(text, "guard_checks_total{service=\"test\",result=\"allowed\"} 1\n"));
    assert_non_null(strstr(text, "guard_checks_total{service=\"test\",result=\"rejected\"} 6\n"));
    char want[64];
    snprintf(want, sizeof want, "guard_authority_head{service=\"test\"} %llu\n",
             (unsigned long long)guard_authority_head(a));
    assert_non_null(strstr(text, want));
    assert_null(strstr(text, tok));
    assert_int_equal(guard_metrics_render(g, text, 64), 0);

    static char log[65536];
    log[0] = '\0';
    assert_int_equal(aud_log_ram_each(guard__audit_log(g), collect_lines, log), 0);
    assert_non_null(strstr(log, "\"kind\":\"rejected\""));
    assert_non_null(strstr(log, "\"actor\":\"anon\""));
    assert_non_null(strstr(log, id));
    assert_non_null(strstr(log, "capability_required"));
    assert_non_null(strstr(log, "b3:late"));
    /* The token's text, or a long piece of it, never reaches the log. */
    char piece[41];
    memcpy(piece, tok + strlen(tok) - 40, 40);
    piece[40] = '\0';
    assert_null(strstr(log, piece));
    assert_null(strstr(log, tok));
    aud_report_t rep;
    assert_int_equal(aud_verify_buf(log, strlen(log), NULL, 0, NULL, true, &rep), 0);
    assert_int_equal(rep.records, 6);
    assert_non_null(strstr(log, "\"target\":\"zzzzz?zzz"));
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_mint_only_narrows_the_parent(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char parent_tok[AUTH_MAX_TOKEN + 1], tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];
    char pexp[40];
    snprintf(pexp, sizeof pexp, "expires = %lld", (long long)ron_unix_time() + 7200);
    const char *pcav[] = {"ops = get,put,mint", pexp, "tenant = 00112233445566778899aabbccddeeff",
                          "max-bytes = 1000", "prefix = b3:ab"};
    assert_true(mint_with(a, NULL, 0, pcav, 5, parent_tok, sizeof parent_tok, NULL) > 0);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_MINT, parent_tok, &r), 0);
    const auth_grant_t *pg = &r.verdict.grant;
    uint8_t other_tenant[16] = {9};

    guard_mint_req_t m = {.ops = 1u << AUTH_OP_ADMIN};
    assert_int_equal(guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id), RON_ECAPDENY);
    m = (guard_mint_req_t){.ops = 1u << AUTH_OP_GET, .ttl = 86400};
    assert_int_equal(guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id), RON_ECAPDENY);
    m = (guard_mint_req_t){.ops = 1u << AUTH_OP_GET, .tenant = other_tenant};
    assert_int_equal(guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id), RON_ECAPDENY);
    m = (guard_mint_req_t){.ops = 1u << AUTH_OP_GET, .max_bytes = 1001};
    assert_int_equal(guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id), RON_ECAPDENY);
    m = (guard_mint_req_t){.ops = 1u << AUTH_OP_GET, .prefix = "b3:ac"};
    assert_int_equal(guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id), RON_ECAPDENY);
    m = (guard_mint_req_t){.ops = 0};
    assert_int_equal(guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id), RON_EINVAL);

    m = (guard_mint_req_t){
        .ops = 1u << AUTH_OP_PUT, .ttl = 600, .max_bytes = 10, .prefix = "b3:abcd"};
    long n = guard_mint(g, pg, r.actor, &m, tok, sizeof tok, id);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(tok));
    auth_token_t t;
    assert_int_equal(auth_token_parse(tok, (size_t)n, &t), 0);
    assert_string_equal(t.id_str, id);
    assert_int_equal(t.grant.ops, 1u << AUTH_OP_PUT);
    assert_true(t.grant.has_tenant); /* inherited */
    assert_int_equal(t.grant.max_bytes, 10);
    assert_string_equal(t.grant.prefix, "abcd");
    assert_true(t.grant.expires <= ron_unix_time() + 600);
    guard_req_t q = {
        .op = AUTH_OP_PUT, .token = tok, .token_len = (size_t)n, .size = 5, .addr = "b3:abcd00"};
    assert_int_equal(guard_check(g, &q, &r), 0);
    q.op = AUTH_OP_GET;
    assert_int_equal(guard_check(g, &q, &r), RON_ECAPDENY);
    /* Without the mint op nothing can be minted. */
    q.op = AUTH_OP_PUT;
    assert_int_equal(guard_check(g, &q, &r), 0);
    m = (guard_mint_req_t){.ops = 1u << AUTH_OP_PUT};
    assert_int_equal(guard_mint(g, &r.verdict.grant, r.actor, &m, tok, sizeof tok, id),
                     RON_ECAPDENY);

    static char log[65536];
    log[0] = '\0';
    assert_int_equal(aud_log_ram_each(guard__audit_log(g), collect_lines, log), 0);
    assert_non_null(strstr(log, "\"kind\":\"cap_issued\""));
    guard_free(g);
    guard_authority_close(a);
}

/* Mint a child of the token tok (checked first: its verdict is the parent
 * grant, its actor the parent's identifier) with ops get,mint. */
static long
mint_child(guard_t *g, const char *tok, char *out, size_t cap, char id[AUTH_ID_MAX + 1])
{
    guard_result_t r;
    guard_mint_req_t m = {.ops = (1u << AUTH_OP_GET) | (1u << AUTH_OP_MINT), .ttl = 600};
    assert_int_equal(check_tok(g, AUTH_OP_MINT, tok, &r), 0);
    return guard_mint(g, &r.verdict.grant, r.actor, &m, out, cap, id);
}

/* tok's ancestor caveats name exactly ids[0..n), in order. */
static void
assert_lineage(const char *tok, const char *const *ids, size_t n)
{
    auth_token_t *t = malloc(sizeof *t);
    auth_id_t id;
    assert_non_null(t);
    assert_int_equal(auth_token_parse(tok, strlen(tok), t), 0);
    assert_int_equal(t->grant.n_ancestors, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(auth_id_parse(ids[i], strlen(ids[i]), &id), 0);
        assert_memory_equal(t->grant.ancestors[i], id.nonce, AUTH_NONCE_LEN);
    }
    free(t);
}

static void
revoke_id(guard_t *g, guard_authority_t *a, const char *id)
{
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, ron_unix_time(), NULL), 0);
    guard_follow(g, a);
}

static void
assert_revoked(guard_t *g, const char *tok)
{
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPREVOKED);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.slug, "capability_revoked");
}

static void
test_guard_revoking_a_parent_kills_the_children_and_grandchildren_minted_from_it(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(ron_unix_time());
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char p[AUTH_MAX_TOKEN + 1], c[AUTH_MAX_TOKEN + 1], gc[AUTH_MAX_TOKEN + 1];
    char att[AUTH_MAX_TOKEN + 1], other[AUTH_MAX_TOKEN + 1];
    char pid[AUTH_ID_MAX + 1], cid[AUTH_ID_MAX + 1], gid[AUTH_ID_MAX + 1], oid[AUTH_ID_MAX + 1];
    guard_result_t r;

    /* P (operator-like: no caveats) -> C -> G, G attenuated offline; another root token */
    assert_true(mint_with(a, NULL, 0, NULL, 0, p, sizeof p, pid) > 0);
    assert_true(mint_with(a, NULL, 0, NULL, 0, other, sizeof other, oid) > 0);
    assert_true(mint_child(g, p, c, sizeof c, cid) > 0);
    assert_true(mint_child(g, c, gc, sizeof gc, gid) > 0);
    const char *more[] = {"ops = get"};
    assert_true(auth_attenuate(gc, strlen(gc), more, 1, att, sizeof att) > 0);
    const char *lc[] = {pid}, *lg[] = {cid, pid};
    assert_lineage(p, NULL, 0);
    assert_lineage(c, lc, 1);
    assert_lineage(gc, lg, 2); /* the parent first, then the parent's own lineage */
    assert_lineage(att, lg, 2); /* an attenuation keeps it */
    for (int i = 0; i < 2; i++) { /* the second round's verdicts come from the cache */
        assert_int_equal(check_tok(g, AUTH_OP_GET, c, &r), 0);
        assert_int_equal(check_tok(g, AUTH_OP_GET, gc, &r), 0);
        assert_int_equal(check_tok(g, AUTH_OP_GET, att, &r), 0);
    }
    assert_true(r.verdict.cached);

    revoke_id(g, a, pid);
    assert_revoked(g, p);
    assert_revoked(g, c);
    assert_revoked(g, gc);
    assert_revoked(g, att);
    assert_int_equal(check_tok(g, AUTH_OP_GET, other, &r), 0); /* not of this lineage */
    /* and nothing can be minted from the dead child any more */
    assert_int_equal(check_tok(g, AUTH_OP_MINT, c, &r), RON_ECAPREVOKED);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_revoking_a_child_kills_its_own_children_but_not_its_parent(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(ron_unix_time());
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char p[AUTH_MAX_TOKEN + 1], c[AUTH_MAX_TOKEN + 1], gc[AUTH_MAX_TOKEN + 1];
    char sib[AUTH_MAX_TOKEN + 1], tok[AUTH_MAX_TOKEN + 1];
    char pid[AUTH_ID_MAX + 1], cid[AUTH_ID_MAX + 1], gid[AUTH_ID_MAX + 1], sid[AUTH_ID_MAX + 1];
    char id[AUTH_ID_MAX + 1];
    guard_result_t r;

    assert_true(mint_with(a, NULL, 0, NULL, 0, p, sizeof p, pid) > 0);
    assert_true(mint_child(g, p, c, sizeof c, cid) > 0);
    assert_true(mint_child(g, c, gc, sizeof gc, gid) > 0);
    assert_true(mint_child(g, p, sib, sizeof sib, sid) > 0);
    revoke_id(g, a, cid);
    assert_revoked(g, c);
    assert_revoked(g, gc);
    assert_int_equal(check_tok(g, AUTH_OP_GET, p, &r), 0);   /* the parent lives */
    assert_int_equal(check_tok(g, AUTH_OP_GET, sib, &r), 0); /* and so does its other child */
    assert_true(mint_child(g, p, tok, sizeof tok, id) > 0);  /* and it still mints */
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_mint_past_the_lineage_depth_is_refused_with_403(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(ron_unix_time());
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    static char chain[GUARD_MAX_LINEAGE + 1][AUTH_MAX_TOKEN + 1];
    char ids[GUARD_MAX_LINEAGE + 1][AUTH_ID_MAX + 1], tok[AUTH_MAX_TOKEN + 1];
    char id[AUTH_ID_MAX + 1];
    guard_result_t r;

    assert_true(mint_with(a, NULL, 0, NULL, 0, chain[0], sizeof chain[0], ids[0]) > 0);
    for (int d = 1; d <= GUARD_MAX_LINEAGE; d++) /* token d has d ancestors */
        assert_true(mint_child(g, chain[d - 1], chain[d], sizeof chain[d], ids[d]) > 0);
    auth_token_t *t = malloc(sizeof *t);
    assert_non_null(t);
    assert_int_equal(auth_token_parse(chain[GUARD_MAX_LINEAGE], strlen(chain[GUARD_MAX_LINEAGE]),
                                      t),
                     0);
    assert_int_equal(t->grant.n_ancestors, GUARD_MAX_LINEAGE);
    free(t);
    assert_int_equal(check_tok(g, AUTH_OP_GET, chain[GUARD_MAX_LINEAGE], &r), 0);
    long n = mint_child(g, chain[GUARD_MAX_LINEAGE], tok, sizeof tok, id);
    assert_int_equal(n, RON_ECAPDEPTH);
    assert_int_equal(guard_status_of((int)n), 403);
    /* one level up still mints */
    assert_true(mint_child(g, chain[GUARD_MAX_LINEAGE - 1], tok, sizeof tok, id) > 0);
    /* the root's revocation reaches the deepest */
    revoke_id(g, a, ids[0]);
    assert_revoked(g, chain[GUARD_MAX_LINEAGE]);
    assert_revoked(g, tok);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_self_token_allows_every_op_and_is_cached_until_the_kid_changes(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    char t1[AUTH_MAX_TOKEN + 1], t2[AUTH_MAX_TOKEN + 1], t3[AUTH_MAX_TOKEN + 1];
    assert_int_equal(guard_self_token(g, t1, sizeof t1), RON_ECAPKID); /* no kid yet */
    guard_follow(g, a);
    long n = guard_self_token(g, t1, sizeof t1);
    assert_true(n > 0);
    assert_int_equal(guard_self_token(g, t2, sizeof t2), n);
    assert_string_equal(t1, t2);
    assert_int_equal(guard_self_token(g, t2, 10), RON_ETOOBIG);
    guard_result_t r;
    for (int op = 0; op < AUTH_OP_COUNT; op++)
        assert_int_equal(check_tok(g, (auth_op_t)op, t1, &r), 0);
    assert_true(r.verdict.grant.expires <= ron_unix_time() + GUARD_SELF_TTL);
    assert_int_equal(guard_authority_tick(a, 0, true, NULL), 1);
    guard_follow(g, a);
    assert_true(guard_self_token(g, t3, sizeof t3) > 0);
    assert_string_not_equal(t1, t3);
    assert_non_null(strstr(r.actor, ":r1:"));
    assert_int_equal(check_tok(g, AUTH_OP_PUT, t3, &r), 0);
    assert_non_null(strstr(r.actor, ":r2:"));
    guard_free(g);
    guard_authority_close(a);
}

/* ---- the authority ---- */

static void
test_guard_follows_the_authority_and_resyncs_after_a_missed_page(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_entry_t e[GUARD_SYNC_PAGE];
    bool more = true;
    /* A fresh guard knows no kid: every token fails `kid`. */
    char tok[AUTH_MAX_TOKEN + 1], id1[AUTH_ID_MAX + 1], id2[AUTH_ID_MAX + 1];
    assert_true(guard_authority_mint_operator(a, tok, sizeof tok) > 0);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPKID);
    assert_int_equal(guard_head(g), 0);
    size_t n = guard_authority_since(a, 0, e, GUARD_SYNC_PAGE, &more);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_int_equal(e[0].kind, GUARD_E_KIDS);
    assert_string_equal(e[0].kids[0], "r1");
    assert_int_equal(guard_apply(g, 0, guard_authority_head(a), e, n), 0);
    assert_int_equal(guard_head(g), guard_authority_head(a));
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);

    char t1[AUTH_MAX_TOKEN + 1], t2[AUTH_MAX_TOKEN + 1];
    assert_true(mint_with(a, NULL, 0, NULL, 0, t1, sizeof t1, id1) > 0);
    assert_true(mint_with(a, NULL, 0, NULL, 0, t2, sizeof t2, id2) > 0);
    guard_entry_t p1, p2;
    uint64_t h0 = guard_authority_head(a);
    assert_int_equal(guard_authority_revoke(a, id1, strlen(id1), 0, 0, &p1), 0);
    assert_int_equal(guard_authority_revoke(a, id2, strlen(id2), 0, 0, &p2), 0);
    assert_int_equal(p1.seq, h0 + 1);
    assert_int_equal(p2.seq, h0 + 2);
    /* The push of p1 was missed: p2's page says prev h0+1, the guard is at h0. */
    assert_int_equal(guard_apply(g, h0 + 1, h0 + 2, &p2, 1), RON_EAGAIN);
    assert_int_equal(guard_head(g), h0);
    assert_int_equal(check_tok(g, AUTH_OP_GET, t2, &r), 0);
    /* Re-sync from guard_head(). */
    n = guard_authority_since(a, guard_head(g), e, GUARD_SYNC_PAGE, &more);
    assert_int_equal(n, 2);
    assert_int_equal(guard_apply(g, h0, guard_authority_head(a), e, n), 0);
    assert_int_equal(check_tok(g, AUTH_OP_GET, t1, &r), RON_ECAPREVOKED);
    assert_int_equal(check_tok(g, AUTH_OP_GET, t2, &r), RON_ECAPREVOKED);
    /* Applying the same page again changes nothing. */
    assert_int_equal(guard_apply(g, h0, guard_authority_head(a), e, n), 0);
    assert_int_equal(guard_head(g), guard_authority_head(a));

    /* Many changes come in pages of at most max, in seq order. */
    for (int i = 0; i < 300; i++) {
        char id[AUTH_ID_MAX + 1];
        assert_int_equal(auth_id_new(id, "r1", 5), 0); /* kept by the raise to 5 */
        assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, 0, NULL), 0);
    }
    assert_int_equal(guard_authority_raise_epoch(a, 5, NULL), 5);
    n = guard_authority_since(a, 0, e, 100, &more);
    assert_int_equal(n, 100);
    assert_true(more);
    for (size_t i = 1; i < n; i++)
        assert_true(e[i].seq > e[i - 1].seq);
    n = guard_authority_since(a, guard_authority_head(a) - 1, e, 100, &more);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].kind, GUARD_E_EPOCH);
    assert_int_equal(e[0].epoch, 5);
    assert_false(more);
    guard_follow(g, a);
    assert_int_equal(guard_head(g), guard_authority_head(a));
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPREVOKED); /* epoch 0 < 5 */
    assert_int_equal(guard_authority_revoke(a, "ron1:bad", 8, 0, 0, NULL), RON_ECAPFORMAT);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_rotation_keeps_the_old_kid_through_grace_then_fails_with_kid(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_authority_opts_t o = {.master = m, .rotate_every = 100, .grace = 50};
    guard_authority_t *a = NULL;
    assert_int_equal(guard_authority_open(&o, t0, &a), 0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1];
    assert_true(guard_authority_mint_operator(a, tok, sizeof tok) > 0);
    guard_entry_t e;
    assert_int_equal(guard_authority_tick(a, t0 + 99, false, &e), 0);
    assert_string_equal(guard_authority_kid(a), "r1");
    assert_int_equal(guard_authority_tick(a, t0 + 100, false, &e), 1);
    assert_string_equal(guard_authority_kid(a), "r2");
    assert_int_equal(e.kind, GUARD_E_KIDS);
    assert_int_equal(e.n_kids, 2);
    assert_string_equal(e.kids[0], "r2");
    assert_string_equal(e.kids[1], "r1");
    assert_int_equal(e.seq, guard_authority_head(a));
    guard_follow(g, a);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), 0); /* r1 in grace */
    assert_int_equal(guard_authority_tick(a, t0 + 149, false, &e), 0);
    assert_int_equal(guard_authority_tick(a, t0 + 150, false, &e), 1);
    assert_int_equal(e.n_kids, 1);
    assert_string_equal(e.kids[0], "r2");
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), RON_ECAPKID);
    assert_string_equal(r.slug, "capability_invalid");
    assert_true(guard_authority_mint_operator(a, tok, sizeof tok) > 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, tok, &r), 0);
    assert_non_null(strstr(r.actor, ":r2:"));
    guard_free(g);
    guard_authority_close(a);
    o.rotate_every = GUARD_ROTATE_EVERY + 1;
    assert_int_equal(guard_authority_open(&o, t0, &a), RON_EINVAL);
}

/* A node down for longer than a rotation period rotates late: the old kid's
 * grace counts from when the rotation was due, so a token of it whose
 * revocation was pruned meanwhile (kept rotate_every + grace) cannot verify
 * again through a fresh grace. */
static void
test_guard_late_rotation_gives_the_old_kid_no_fresh_grace(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_authority_opts_t o = {.master = m, .rotate_every = 100, .grace = 50};
    guard_authority_t *a = NULL;
    assert_int_equal(guard_authority_open(&o, t0, &a), 0);
    guard_entry_t e;
    /* due at t0 + 100, noticed at t0 + 120: grace ends at t0 + 150 */
    assert_int_equal(guard_authority_tick(a, t0 + 120, false, &e), 1);
    assert_int_equal(e.n_kids, 2);
    assert_int_equal(guard_authority_tick(a, t0 + 149, false, &e), 0);
    assert_int_equal(guard_authority_tick(a, t0 + 150, false, &e), 1);
    assert_int_equal(e.n_kids, 1);
    /* r2 due at t0 + 220, noticed at t0 + 1000 (the node was down): r2 is
     * past its grace already, so only r3 is in force */
    assert_int_equal(guard_authority_tick(a, t0 + 1000, false, &e), 1);
    assert_string_equal(guard_authority_kid(a), "r3");
    assert_int_equal(e.n_kids, 1);
    assert_string_equal(e.kids[0], "r3");
    /* a forced rotation before its due time still gives a full grace */
    assert_int_equal(guard_authority_tick(a, t0 + 1010, true, &e), 1);
    assert_int_equal(e.n_kids, 2);
    assert_int_equal(guard_authority_tick(a, t0 + 1059, false, &e), 0);
    assert_int_equal(guard_authority_tick(a, t0 + 1060, false, &e), 1);
    assert_int_equal(e.n_kids, 1);
    guard_authority_close(a);
}

static guard_authority_t *
authority_dir(const char *dir, int64_t now, int *rc_out)
{
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_authority_opts_t o = {.dir = dir, .master = m, .rotate_every = 100, .grace = 50};
    guard_authority_t *a = NULL;
    *rc_out = guard_authority_open(&o, now, &a);
    return a;
}

static size_t
file_read(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void
file_write(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static void
test_guard_authority_state_survives_reopen_and_refuses_tampering(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    char *dir = tmpdir_make();
    char sub[512], path[600];
    snprintf(sub, sizeof sub, "%s/auth", dir);
    snprintf(path, sizeof path, "%s/state", sub);
    int rc;
    guard_authority_t *a = authority_dir(sub, t0, &rc);
    assert_int_equal(rc, 0);
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1], id_short[AUTH_ID_MAX + 1];
    assert_int_equal(guard_authority_raise_epoch(a, 3, NULL), 3);
    assert_true(mint_with(a, NULL, 3, NULL, 0, tok, sizeof tok, id) > 0);
    assert_int_equal(auth_id_new(id_short, "r1", 3), 0);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, NULL), 0);
    assert_int_equal(guard_authority_revoke(a, id_short, strlen(id_short), t0 + 120, t0, NULL), 0);
    assert_int_equal(guard_authority_tick(a, t0 + 100, false, NULL), 1);
    uint64_t head = guard_authority_head(a);
    guard_authority_close(a);

    a = authority_dir(sub, t0 + 101, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(guard_authority_head(a), head);
    assert_int_equal(guard_authority_epoch(a), 3);
    assert_string_equal(guard_authority_kid(a), "r2");
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    guard_result_t r;
    /* Re-mint the revoked id's token at epoch 3 is impossible; check the revocation itself. */
    guard_entry_t e[8];
    bool more;
    size_t n = guard_authority_since(a, 0, e, 8, &more);
    assert_int_equal(n, 4); /* epoch, two revocations, kids */
    assert_int_equal(e[0].kind, GUARD_E_EPOCH);
    assert_int_equal(e[1].kind, GUARD_E_REVOKE);
    assert_int_equal(e[1].until, t0 + 150); /* for ever: capped at rotate_every + grace */
    assert_int_equal(e[2].until, t0 + 120);
    assert_int_equal(e[3].kind, GUARD_E_KIDS);
    assert_int_equal(e[3].n_kids, 2);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPREVOKED);
    guard_free(g);
    guard_authority_close(a);

    /* Reopened past the short revocation's until (+ skew), it is pruned. */
    a = authority_dir(sub, t0 + 120 + AUTH_SKEW + 1, &rc);
    assert_int_equal(rc, 0);
    n = guard_authority_since(a, 0, e, 8, &more);
    assert_int_equal(n, 3);
    assert_int_equal(guard_authority_head(a), head);
    guard_authority_close(a);

    /* Tampered (one bit), truncated, grown, or under another master: refused, never replaced. */
    static uint8_t buf[1 << 16], orig[1 << 16];
    size_t len = file_read(path, orig, sizeof orig);
    assert_true(len > 32);
    size_t cuts[] = {len / 2, len - 1, 0};
    for (size_t i = 0; i < 3; i++) {
        file_write(path, orig, cuts[i]);
        assert_null(authority_dir(sub, t0 + 200, &rc));
        assert_int_equal(rc, RON_EKEYFILE);
    }
    memcpy(buf, orig, len);
    buf[20] ^= 1;
    file_write(path, buf, len);
    assert_null(authority_dir(sub, t0 + 200, &rc));
    assert_int_equal(rc, RON_EKEYFILE);
    assert_int_equal(file_read(path, buf, sizeof buf), len); /* still the tampered file */
    memcpy(buf, orig, len);
    buf[len] = 0;
    file_write(path, buf, len + 1);
    assert_null(authority_dir(sub, t0 + 200, &rc));
    assert_int_equal(rc, RON_EKEYFILE);
    file_write(path, orig, len);
    uint8_t other[GUARD_MASTER_LEN] = {7};
    guard_authority_opts_t o = {.dir = sub, .master = other};
    assert_int_equal(guard_authority_open(&o, t0 + 200, &a), RON_EKEYFILE);
    /* A state whose MAC holds but breaks an invariant is refused as well. */
    uint8_t key[32], mm[GUARD_MASTER_LEN];
    test_master(mm);
    guard__state_key(mm, key);
    guard__state_t st = {.gen = 1, .kids_seq = 5, .head = 4};
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    assert_int_equal(guard__state_encode(&st, key, &enc, &enc_len), 0);
    file_write(path, enc, enc_len);
    free(enc);
    assert_null(authority_dir(sub, t0 + 200, &rc));
    assert_int_equal(rc, RON_EKEYFILE);
    /* The original opens again. */
    file_write(path, orig, len);
    a = authority_dir(sub, t0 + 200, &rc);
    assert_int_equal(rc, 0);
    guard_authority_close(a);
    tmpdir_remove(dir);
}

/* An identifier "ron1:r1:<epoch>:<hex of i>" (distinct per i). */
static void
id_of(char out[static AUTH_ID_MAX + 1], uint64_t epoch, uint64_t i)
{
    snprintf(out, AUTH_ID_MAX + 1, "ron1:r1:%llu:%032llx", (unsigned long long)epoch,
             (unsigned long long)i);
}

/*
 * The reviewer's attack: a holder of `mint` fills every revocation slot with
 * chosen ids; revoke-by-id then fails (RON_ECAPFULL, 507). An epoch raise
 * must clear them, since every one of them names an older epoch.
 */
static void
test_guard_epoch_raise_drops_every_revocation_of_an_older_epoch_even_when_full(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    char *dir = tmpdir_make();
    char sub[512], path[600];
    snprintf(sub, sizeof sub, "%s/auth", dir);
    snprintf(path, sizeof path, "%s/state", sub);
    assert_int_equal(mkdir(sub, 0700), 0);
    /* A full table (built as a file: 65,536 revocations one by one would
     * rewrite the file each time), all of epoch 0. */
    uint8_t key[32], m[GUARD_MASTER_LEN];
    test_master(m);
    guard__state_key(m, key);
    guard__state_t st = {.gen = 1, .gen_started = t0, .kids_seq = 1,
                         .head = 1 + GUARD_MAX_REVOKED, .n_revoked = GUARD_MAX_REVOKED};
    st.revoked = calloc(GUARD_MAX_REVOKED, sizeof *st.revoked);
    assert_non_null(st.revoked);
    for (size_t i = 0; i < GUARD_MAX_REVOKED; i++) {
        st.revoked[i].seq = 2 + i;
        st.revoked[i].until = t0 + 1000;
        st.revoked[i].epoch = 0;
        memcpy(st.revoked[i].nonce, &i, sizeof i);
        st.revoked[i].nonce[15] = 0xee;
    }
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    assert_int_equal(guard__state_encode(&st, key, &enc, &enc_len), 0);
    file_write(path, enc, enc_len);
    free(enc);
    free(st.revoked);
    int rc;
    guard_authority_t *a = authority_dir(sub, t0, &rc);
    assert_int_equal(rc, 0);
    char id[AUTH_ID_MAX + 1];
    id_of(id, 0, 0x123456789ull);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, NULL), RON_ECAPFULL);
    /* The raise drops all of them; revocation by id works again. */
    guard_entry_t e;
    assert_int_equal(guard_authority_raise_epoch(a, 0, &e), 1);
    guard_authority_info_t info;
    guard_authority_info(a, &info);
    assert_int_equal(info.n_revoked, 0);
    assert_int_equal(info.epoch, 1);
    id_of(id, 1, 0x123456789ull);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, &e), 0);
    assert_int_equal(e.kind, GUARD_E_REVOKE);
    /* An id of the old epoch is dead already: accepted, nothing stored, head unchanged. */
    uint64_t head = guard_authority_head(a);
    id_of(id, 0, 0x42ull);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, &e), 0);
    assert_int_equal(guard_authority_head(a), head);
    assert_int_equal(e.seq, 0);
    guard_authority_close(a);
    /* Persisted: reopened, one revocation (of epoch 1), which the next raise drops too. */
    a = authority_dir(sub, t0 + 1, &rc);
    assert_int_equal(rc, 0);
    guard_authority_info(a, &info);
    assert_int_equal(info.n_revoked, 1);
    assert_int_equal(guard_authority_raise_epoch(a, 0, NULL), 2);
    guard_authority_info(a, &info);
    assert_int_equal(info.n_revoked, 0);
    guard_authority_close(a);
    tmpdir_remove(dir);
}

/* "For ever" means: until no token of the kids in force can live any more. */
static void
test_guard_revocation_for_ever_is_capped_at_rotate_every_plus_grace(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_authority_opts_t o = {.master = m, .rotate_every = 100, .grace = 50};
    guard_authority_t *a = NULL;
    assert_int_equal(guard_authority_open(&o, t0, &a), 0);
    char id[AUTH_ID_MAX + 1], id2[AUTH_ID_MAX + 1], id3[AUTH_ID_MAX + 1];
    guard_entry_t e;
    id_of(id, 0, 1);
    id_of(id2, 0, 2);
    id_of(id3, 0, 3);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, &e), 0);
    assert_int_equal(e.until, t0 + 150);
    assert_int_equal(guard_authority_revoke(a, id2, strlen(id2), INT64_MAX, t0, &e), 0);
    assert_int_equal(e.until, t0 + 150);
    assert_int_equal(guard_authority_revoke(a, id3, strlen(id3), t0 + 10, t0, &e), 0);
    assert_int_equal(e.until, t0 + 10); /* a shorter until stays */
    /* re-revoking for ever moves the until up to the cap of now */
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0 + 20, &e), 0);
    assert_int_equal(e.until, t0 + 170);
    /* A token minted at t0 under r1 is dead by then: r1 is replaced by t0 + 100
     * and its grace ends by t0 + 150. */
    assert_int_equal(guard_authority_tick(a, t0 + 100, false, NULL), 1);
    assert_int_equal(guard_authority_tick(a, t0 + 150, false, NULL), 1);
    guard_authority_info_t info;
    guard_authority_info(a, &info);
    assert_string_equal(info.kid, "r2");
    assert_string_equal(info.prev_kid, "");
    /* Past the cap (+ skew), every capped revocation is pruned. */
    assert_true(guard_authority_tick(a, t0 + 170 + AUTH_SKEW + 1, false, NULL) >= 0);
    guard_authority_info(a, &info);
    assert_int_equal(info.n_revoked, 0);
    guard_authority_close(a);
}

/* A state file of format 1 (no epoch per record, "for ever" allowed) still opens. */
static void
test_guard_state_format_1_is_read_and_an_unknown_format_refused(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    char *dir = tmpdir_make();
    char sub[512], path[600];
    snprintf(sub, sizeof sub, "%s/auth", dir);
    snprintf(path, sizeof path, "%s/state", sub);
    assert_int_equal(mkdir(sub, 0700), 0);
    uint8_t key[32], m[GUARD_MASTER_LEN];
    test_master(m);
    guard__state_key(m, key);
    /* gen 1, epoch 2 (seq 2), kids seq 1, head 4, two records: seq 3 for ever, seq 4 until t0+5 */
    enum { HDR = 80, REC = 32, N = 2 };
    static uint8_t buf[HDR + N * REC + 32];
    memcpy(buf, "RONGST1\n", 8);
    const uint64_t hdr[9] = {1, (uint64_t)t0, 0, 0, 2, 2, 1, 4, N};
    for (int i = 0; i < 9; i++)
        for (int b = 0; b < 8; b++)
            buf[8 + 8 * i + b] = (uint8_t)(hdr[i] >> (8 * b));
    const uint64_t recs[N][2] = {{3, 0}, {4, (uint64_t)t0 + 5}};
    for (int r = 0; r < N; r++) {
        uint8_t *p = buf + HDR + r * REC;
        for (int b = 0; b < 8; b++) {
            p[b] = (uint8_t)(recs[r][0] >> (8 * b));
            p[8 + b] = (uint8_t)(recs[r][1] >> (8 * b));
        }
        memset(p + 16, 0xa0 + r, AUTH_NONCE_LEN);
    }
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, key);
    blake3_hasher_update(&h, buf, HDR + N * REC);
    blake3_hasher_finalize(&h, buf + HDR + N * REC, 32);
    file_write(path, buf, sizeof buf);
    int rc;
    guard_authority_t *a = authority_dir(sub, t0, &rc);
    assert_int_equal(rc, 0);
    guard_entry_t e[8];
    bool more;
    size_t n = guard_authority_since(a, 0, e, 8, &more);
    assert_int_equal(n, 4); /* kids, epoch, two revocations */
    assert_int_equal(e[2].kind, GUARD_E_REVOKE);
    assert_int_equal(e[2].until, t0 + 150); /* "for ever" capped on open */
    assert_int_equal(e[3].until, t0 + 5);
    guard_authority_close(a);
    /* Rewritten as format 2 at open; the records take the epoch in force (2),
     * so the next raise drops them. */
    uint8_t back[4096];
    size_t len = file_read(path, back, sizeof back);
    assert_int_equal(len, HDR + N * 40 + 32);
    assert_memory_equal(back, "RONGST2\n", 8);
    a = authority_dir(sub, t0, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(guard_authority_raise_epoch(a, 0, NULL), 3);
    guard_authority_info_t info;
    guard_authority_info(a, &info);
    assert_int_equal(info.n_revoked, 0);
    guard_authority_close(a);
    /* An unknown format is refused, never replaced. */
    len = file_read(path, back, sizeof back);
    back[6] = '9';
    file_write(path, back, len);
    assert_null(authority_dir(sub, t0, &rc));
    assert_int_equal(rc, RON_EKEYFILE);
    uint8_t again[4096];
    assert_int_equal(file_read(path, again, sizeof again), len);
    assert_memory_equal(again, back, len);
    tmpdir_remove(dir);
}

/* Metric value of guard_revoked for service "test". */
static long
guard_revoked_count(guard_t *g)
{
    static char text[16384];
    assert_true(guard_metrics_render(g, text, sizeof text) > 0);
    const char *p = strstr(text, "guard_revoked{service=\"test\"} ");
    assert_non_null(p);
    return strtol(p + strlen("guard_revoked{service=\"test\"} "), NULL, 10);
}

/* A guard follows the authority's drop: the pushed revoke entries carry the
 * identifier's epoch, and applying the epoch raise empties the guard's set of
 * the older ones (else a guard would fill up after two rounds of the attack). */
static void
test_guard_applying_an_epoch_raise_drops_its_older_revocations(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    guard_authority_t *a = authority_ram(t0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char id[AUTH_ID_MAX + 1], buf[GUARD_MAX_ENTRY_JSON + 1];
    guard_entry_t e, d;
    for (uint64_t i = 0; i < 100; i++) {
        id_of(id, 0, i + 1);
        assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, &e), 0);
    }
    id_of(id, 1, 1000); /* of the next epoch: kept by the raise */
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, t0, &e), 0);
    int n = guard_entry_encode(&e, buf, sizeof buf);
    assert_true(n > 0);
    assert_non_null(strstr(buf, "\"epoch\":\"1\""));
    assert_int_equal(guard_entry_decode(buf, (size_t)n, &d), 0);
    assert_int_equal(d.epoch, 1);
    guard_follow(g, a);
    assert_int_equal(guard_revoked_count(g), 101);
    assert_int_equal(guard_authority_raise_epoch(a, 0, NULL), 1);
    guard_follow(g, a);
    assert_int_equal(guard_revoked_count(g), 1);
    /* a fresh guard syncing from 0 gets the same */
    guard_t *g2 = guard_make(NULL);
    guard_follow(g2, a);
    assert_int_equal(guard_revoked_count(g2), 1);
    guard_free(g2);
    /* an entry without "epoch" (an older kernel's) decodes as unknown and re-encodes without it */
    const char *old = "{\"seq\":\"9\",\"kind\":\"revoke\",\"nonce\":"
                      "\"00112233445566778899aabbccddeeff\",\"until\":\"5\"}";
    assert_int_equal(guard_entry_decode(old, strlen(old), &d), 0);
    assert_true(d.epoch == AUTH_EPOCH_UNKNOWN);
    assert_int_equal(guard_entry_encode(&d, buf, sizeof buf), (int)strlen(old));
    assert_string_equal(buf, old);
    guard_free(g);
    guard_authority_close(a);
}

static void
test_guard_file_audit_log_verifies_with_its_derived_key(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char adir[512], logp[600], ckp[600];
    snprintf(adir, sizeof adir, "%s/audit", dir);
    snprintf(logp, sizeof logp, "%s/gateway.log", adir);
    snprintf(ckp, sizeof ckp, "%s/gateway.ckpt", adir);
    uint8_t m[GUARD_MASTER_LEN];
    test_master(m);
    guard_opts_t o = {.service = "gateway", .master = m, .audit_dir = adir};
    guard_t *g = NULL;
    assert_int_equal(guard_new(&o, &g), 0);
    guard_result_t r;
    for (int i = 0; i < 5; i++)
        assert_int_equal(check_tok(g, AUTH_OP_PUT, NULL, &r), RON_ECAPNEEDED);
    assert_int_equal(guard_audit(g, AUD_PIN, "ron1:r1:0:00", "pin", "b3:aa", AUD_OK, ""), 0);
    guard_free(g);
    uint8_t seed[32], pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    guard__audit_seed(m, seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    aud_report_t rep;
    assert_int_equal(aud_verify_file(logp, ckp, pk, &rep), 0);
    assert_int_equal(rep.records, 6);
    assert_true(rep.checkpoints >= 1);
    /* Reopen appends to the same chain. */
    assert_int_equal(guard_new(&o, &g), 0);
    assert_int_equal(check_tok(g, AUTH_OP_PUT, NULL, &r), RON_ECAPNEEDED);
    guard_free(g);
    assert_int_equal(aud_verify_file(logp, ckp, pk, &rep), 0);
    assert_int_equal(rep.records, 7);
    tmpdir_remove(dir);
}

/* ---- threads ---- */

/* ---- review (H9): hostile revocation ids, failed saves ---- */

/* A verdict cached while a token verified never outlives an epoch raise, a
 * revocation or the removal of its kid (the next check sees each). */
static void
test_guard_cached_verdict_does_not_outlive_epoch_revocation_or_kid(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    guard_authority_t *a = authority_ram(t0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1], tok2[AUTH_MAX_TOKEN + 1], tok3[AUTH_MAX_TOKEN + 1];
    char id[AUTH_ID_MAX + 1], id2[AUTH_ID_MAX + 1];
    guard_result_t r;
    assert_true(mint_with(a, NULL, 0, NULL, 0, tok, sizeof tok, id) > 0);
    assert_true(mint_with(a, NULL, 0, NULL, 0, tok2, sizeof tok2, id2) > 0);
    for (int i = 0; i < 3; i++) { /* warm: the later ones are cache hits */
        assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
        assert_int_equal(check_tok(g, AUTH_OP_GET, tok2, &r), 0);
    }
    assert_true(r.verdict.cached);
    assert_int_equal(guard_authority_revoke(a, id2, strlen(id2), 0, t0, NULL), 0);
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok2, &r), RON_ECAPREVOKED);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
    assert_int_equal(guard_authority_raise_epoch(a, 0, NULL), 1);
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPREVOKED);
    assert_string_equal(r.slug, "capability_revoked");
    /* a token of the new epoch under r1, cached, then r1 leaves (two rotations) */
    assert_true(mint_with(a, "r1", 1, NULL, 0, tok3, sizeof tok3, NULL) > 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(check_tok(g, AUTH_OP_GET, tok3, &r), 0);
    assert_true(r.verdict.cached);
    assert_int_equal(guard_authority_tick(a, t0 + 1, true, NULL), 1); /* r2, r1 in grace */
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok3, &r), 0);
    assert_int_equal(guard_authority_tick(a, t0 + 2, true, NULL), 1); /* r3, r2: r1 gone */
    guard_follow(g, a);
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok3, &r), RON_ECAPKID);
    assert_int_equal(r.status, 401);
    guard_free(g);
    guard_authority_close(a);
}

/*
 * Revocation ids are chosen by whoever calls cap_revoke (any 32 hex digits),
 * so the guard's revocation set must not let them pile up in one probe
 * chain: ids whose nonces share their first bytes' low bits used to cluster
 * in one run of the table, making every apply and every check with a token
 * scan the whole run under the set's lock.
 */
static void
test_guard_revocations_chosen_to_collide_keep_apply_and_check_fast(void **state)
{
    (void)state;
    enum { N = 40000, PAGE = 256 };
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];
    assert_true(mint_with(a, NULL, 0, NULL, 0, tok, sizeof tok, id) > 0);
    static guard_entry_t e[PAGE];
    uint64_t head = guard_head(g), t0 = ron_now_ms();
    for (uint64_t i = 0; i < N; i += PAGE) {
        for (size_t k = 0; k < PAGE; k++) {
            uint64_t v = (i + k + 1) << 40; /* the same slot under an unkeyed multiplicative hash */
            memset(&e[k], 0, sizeof e[k]);
            e[k].seq = head + i + k + 1;
            e[k].kind = GUARD_E_REVOKE;
            for (int b = 0; b < 8; b++)
                e[k].nonce[b] = (uint8_t)(v >> (8 * b));
        }
        assert_int_equal(guard_apply(g, head + i, head + i + PAGE, e, PAGE), 0);
        if (ron_now_ms() - t0 > 3000)
            fail_msg("applying %llu crafted revocations took over 3 s", (unsigned long long)i);
    }
    uint64_t t1 = ron_now_ms();
    guard_result_t r;
    for (int i = 0; i < 2000; i++)
        assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), 0);
    uint64_t t2 = ron_now_ms();
    print_message("apply %d crafted revocations: %llu ms; 2000 checks: %llu ms\n", N,
                  (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1));
    assert_true(t1 - t0 < 3000);
    assert_true(t2 - t1 < 2000);
    guard_free(g);
    guard_authority_close(a);
}

/* A save that fails (here: state.tmp cannot be created) changes nothing in memory. */
static void
test_guard_authority_failed_save_changes_nothing_in_memory(void **state)
{
    (void)state;
    const int64_t t0 = 1800000000;
    char *dir = tmpdir_make();
    char sub[512], tmp[600];
    snprintf(sub, sizeof sub, "%s/auth", dir);
    snprintf(tmp, sizeof tmp, "%s/state.tmp", sub);
    int rc;
    guard_authority_t *a = authority_dir(sub, t0, &rc);
    assert_int_equal(rc, 0);
    char id[AUTH_ID_MAX + 1], id2[AUTH_ID_MAX + 1];
    assert_int_equal(auth_id_new(id, "r1", 0), 0);
    assert_int_equal(auth_id_new(id2, "r1", 0), 0);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), t0 + 10, t0, NULL), 0);
    uint64_t head = guard_authority_head(a);
    guard_entry_t before[8], after[8];
    bool more;
    size_t nb = guard_authority_since(a, 0, before, 8, &more);

    assert_int_equal(mkdir(tmp, 0700), 0); /* open(O_WRONLY) of a directory: EISDIR */
    assert_true(guard_authority_revoke(a, id2, strlen(id2), 0, t0, NULL) < 0);
    assert_true(guard_authority_revoke(a, id, strlen(id), 0, t0, NULL) < 0); /* re-revoke */
    assert_true(guard_authority_raise_epoch(a, 0, NULL) < 0);
    assert_true(guard_authority_tick(a, t0 + 1, true, NULL) < 0);
    assert_int_equal(guard_authority_head(a), head);
    assert_int_equal(guard_authority_epoch(a), 0);
    assert_string_equal(guard_authority_kid(a), "r1");
    size_t na = guard_authority_since(a, 0, after, 8, &more);
    assert_int_equal(na, nb);
    assert_memory_equal(after, before, nb * sizeof before[0]);
    guard_authority_close(a);

    /* The file never changed either: it reopens at the same head. */
    assert_int_equal(rmdir(tmp), 0);
    a = authority_dir(sub, t0, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(guard_authority_head(a), head);
    assert_int_equal(guard_authority_revoke(a, id2, strlen(id2), 0, t0, NULL), 0);
    assert_int_equal(guard_authority_head(a), head + 1);
    guard_authority_close(a);
    tmpdir_remove(dir);
}

typedef struct {
    guard_t *g;
    const char *tok;
    _Atomic int stop;
    _Atomic long allowed, revoked, other;
} threads_ctx_t;

/* Check until the token is seen revoked (or stop, or 20 s). */
static void *
checker(void *arg)
{
    threads_ctx_t *c = arg;
    uint64_t deadline = ron_now_ms() + 20000;
    while (!atomic_load(&c->stop) && ron_now_ms() < deadline) {
        guard_result_t r;
        guard_req_t q = {.op = AUTH_OP_GET,
                         .token = c->tok,
                         .token_len = strlen(c->tok),
                         .size = AUTH_SIZE_UNKNOWN};
        int rc = guard_check(c->g, &q, &r);
        if (rc == 0) {
            atomic_fetch_add(&c->allowed, 1);
        } else if (rc == RON_ECAPREVOKED) {
            atomic_fetch_add(&c->revoked, 1);
            break;
        } else {
            atomic_fetch_add(&c->other, 1);
        }
    }
    return NULL;
}

static void
test_guard_checks_on_four_threads_while_apply_revokes_and_rotates(void **state)
{
    (void)state;
    guard_authority_t *a = authority_ram(0);
    guard_t *g = guard_make(NULL);
    guard_follow(g, a);
    char tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];
    assert_true(mint_with(a, NULL, 0, NULL, 0, tok, sizeof tok, id) > 0);
    threads_ctx_t c = {.g = g, .tok = tok};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, checker, &c), 0);
    /* While they check: rotations (key add/remove) and unrelated revocations, then ours. */
    for (int i = 0; i < 50; i++) {
        char other[AUTH_ID_MAX + 1];
        assert_int_equal(auth_id_new(other, "r1", 0), 0);
        assert_int_equal(guard_authority_revoke(a, other, strlen(other), 0, 0, NULL), 0);
        guard_follow(g, a);
        char self[AUTH_MAX_TOKEN + 1];
        assert_true(guard_self_token(g, self, sizeof self) > 0);
        usleep(1000);
    }
    assert_int_equal(guard_authority_tick(a, 0, true, NULL), 1); /* r1 stays in grace */
    guard_follow(g, a);
    assert_int_equal(guard_authority_revoke(a, id, strlen(id), 0, 0, NULL), 0);
    guard_follow(g, a);
    /* Every checker sees the revocation and stops by itself. */
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&c.other), 0);
    assert_int_equal(atomic_load(&c.revoked), 4);
    assert_true(atomic_load(&c.allowed) > 0);
    guard_result_t r;
    assert_int_equal(check_tok(g, AUTH_OP_GET, tok, &r), RON_ECAPREVOKED);
    static char text[16384];
    assert_true(guard_metrics_render(g, text, sizeof text) > 0);
    guard_free(g);
    guard_authority_close(a);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest threads[] = {
        cmocka_unit_test(test_guard_checks_on_four_threads_while_apply_revokes_and_rotates),
    };
    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests(threads, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_entries_and_pages_round_trip),
        cmocka_unit_test(test_guard_codec_refuses_what_the_kernel_would_not_write),
        cmocka_unit_test(test_guard_keys_derive_per_kid_and_per_seed),
        cmocka_unit_test(test_guard_anonymous_get_allowed_and_put_needs_a_capability),
        cmocka_unit_test(
            test_guard_bad_unknown_kid_revoked_and_expired_tokens_get_401_with_their_slug),
        cmocka_unit_test(test_guard_get_only_token_doing_put_is_403_forbidden),
        cmocka_unit_test(
            test_guard_policy_deny_is_403_with_the_policy_reason_and_reload_rolls_back),
        cmocka_unit_test(test_guard_per_source_rate_gives_429_with_retry_after),
        cmocka_unit_test(test_guard_rate_caveat_gives_429_per_token),
        cmocka_unit_test(test_guard_forwarded_requests_do_not_charge_the_rate_caveat_again),
        cmocka_unit_test(test_guard_rate_table_is_bounded_and_evicts_the_least_recently_used),
        cmocka_unit_test(test_guard_rejections_are_counted_and_audited_without_the_token),
        cmocka_unit_test(test_guard_mint_only_narrows_the_parent),
        cmocka_unit_test(
            test_guard_revoking_a_parent_kills_the_children_and_grandchildren_minted_from_it),
        cmocka_unit_test(test_guard_revoking_a_child_kills_its_own_children_but_not_its_parent),
        cmocka_unit_test(test_guard_mint_past_the_lineage_depth_is_refused_with_403),
        cmocka_unit_test(test_guard_self_token_allows_every_op_and_is_cached_until_the_kid_changes),
        cmocka_unit_test(test_guard_follows_the_authority_and_resyncs_after_a_missed_page),
        cmocka_unit_test(test_guard_rotation_keeps_the_old_kid_through_grace_then_fails_with_kid),
        cmocka_unit_test(test_guard_late_rotation_gives_the_old_kid_no_fresh_grace),
        cmocka_unit_test(test_guard_authority_state_survives_reopen_and_refuses_tampering),
        cmocka_unit_test(test_guard_file_audit_log_verifies_with_its_derived_key),
        cmocka_unit_test(
            test_guard_epoch_raise_drops_every_revocation_of_an_older_epoch_even_when_full),
        cmocka_unit_test(test_guard_revocation_for_ever_is_capped_at_rotate_every_plus_grace),
        cmocka_unit_test(test_guard_state_format_1_is_read_and_an_unknown_format_refused),
        cmocka_unit_test(test_guard_applying_an_epoch_raise_drops_its_older_revocations),
        cmocka_unit_test(test_guard_revocations_chosen_to_collide_keep_apply_and_check_fast),
        cmocka_unit_test(test_guard_authority_failed_save_changes_nothing_in_memory),
        cmocka_unit_test(test_guard_cached_verdict_does_not_outlive_epoch_revocation_or_kid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
