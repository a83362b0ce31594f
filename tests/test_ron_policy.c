/*
 * test_ron_policy.c - ron-policy: strict bundle parsing (errors name the
 * JSON path), first match wins, default deny, every match field,
 * obligations, a 1,000-rule bundle, the shipped default policy, hot reload
 * with refusal and rollback, and (argument "threads") readers evaluating
 * while another thread reloads and rolls back.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ron_err.h"
#include "ron_policy.h"

#define TENANT_HEX "00112233445566778899aabbccddeeff"

static pol_policy_t *
compile_ok(const char *json)
{
    pol_err_t err;
    pol_policy_t *p = pol_compile(json, strlen(json), &err);
    if (p == NULL)
        fail_msg("bundle refused: %s", err.msg);
    return p;
}

static void
expect_refused(const char *json, int code, const char *path)
{
    pol_err_t err;
    pol_policy_t *p = pol_compile(json, strlen(json), &err);
    if (p != NULL) {
        pol_policy_unref(p);
        fail_msg("bundle accepted, expected %s at %s: %s", ron_errname(code), path, json);
    }
    assert_int_equal(err.code, code);
    assert_string_equal(err.path, path);
    assert_non_null(strstr(err.msg, path)); /* the sentence names the field too */
}

static pol_request_t
anon_req(pol_op_t op)
{
    pol_request_t r = {.anonymous = true, .op = op};
    return r;
}

static pol_request_t
cap_req(pol_op_t op, const char *tenant_hex)
{
    pol_request_t r = {.anonymous = false, .op = op};
    if (tenant_hex != NULL) {
        r.has_tenant = true;
        for (int i = 0; i < POL_TENANT_LEN; i++) {
            unsigned v;
            assert_int_equal(sscanf(tenant_hex + 2 * i, "%2x", &v), 1);
            r.tenant[i] = (uint8_t)v;
        }
    }
    return r;
}

/* Evaluate and return the matching rule id ("default-deny" when none). */
static const char *
eval_id(const pol_policy_t *p, const pol_request_t *req, pol_effect_t *effect_out)
{
    pol_decision_t d;
    assert_int_equal(pol_eval(p, req, &d), 0);
    if (effect_out != NULL)
        *effect_out = d.effect;
    return d.rule_id;
}

static void
test_pol_refuses_malformed_bundles_naming_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int code;
        const char *path;
    } cases[] = {
        {"{\"version\":1,\"rules\":[", RON_EPOLICY, "$"},
        {"[]", RON_EPOLICY, "$"},
        {"{\"rules\":[]}", RON_EPOLICY, "$.version"},
        {"{\"version\":2,\"rules\":[]}", RON_EPOLICY, "$.version"},
        {"{\"version\":\"1\",\"rules\":[]}", RON_EPOLICY, "$.version"},
        {"{\"version\":1}", RON_EPOLICY, "$.rules"},
        {"{\"version\":1,\"rules\":{}}", RON_EPOLICY, "$.rules"},
        {"{\"version\":1,\"rules\":[],\"extra\":true}", RON_EPOLICY, "$.extra"},
        {"{\"version\":1,\"rules\":[7]}", RON_EPOLICY, "$.rules[0]"},
        {"{\"version\":1,\"rules\":[{\"effect\":\"allow\"}]}", RON_EPOLICY, "$.rules[0].id"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a b\",\"effect\":\"allow\"}]}", RON_EPOLICY,
         "$.rules[0].id"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\"}]}", RON_EPOLICY, "$.rules[0].effect"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"permit\"}]}", RON_EPOLICY,
         "$.rules[0].effect"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{}}]}", RON_EPOLICY,
         "$.rules[0].when"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\"},"
         "{\"id\":\"b\",\"effect\":\"allow\",\"match\":{\"opz\":[\"get\"]}}]}",
         RON_EPOLICY, "$.rules[1].match.opz"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"ops\":[\"get\",\"delete\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.ops[1]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"ops\":[\"get\",\"get\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.ops[1]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"match\":{\"ops\":[]}}]}",
         RON_EPOLICY, "$.rules[0].match.ops"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"tenant\":\"0011\"}}]}",
         RON_EPOLICY, "$.rules[0].match.tenant"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"tenant\":\"00112233445566778899AABBCCDDEEFF\"}}]}",
         RON_EPOLICY, "$.rules[0].match.tenant"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"tenant\":\"" TENANT_HEX "\",\"anonymous\":true}}]}",
         RON_EPOLICY, "$.rules[0].match.anonymous"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"anonymous\":1}}]}",
         RON_EPOLICY, "$.rules[0].match.anonymous"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"max_body\":-1}}]}",
         RON_EPOLICY, "$.rules[0].match.max_body"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"max_body\":1.5}}]}",
         RON_EPOLICY, "$.rules[0].match.max_body"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"min_body\":10,\"max_body\":9}}]}",
         RON_EPOLICY, "$.rules[0].match.max_body"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"tags\":[\"ok\",\"not ok\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.tags[1]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"tags\":[\"x\",\"x\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.tags[1]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"source\":[\"10.0.0.1/8\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.source[0]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"source\":[\"10.0.0.0/33\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.source[0]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"match\":{\"source\":[\"::1/128\",\"example.org/8\"]}}]}",
         RON_EPOLICY, "$.rules[0].match.source[1]"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"obligations\":{\"rate\":\"5/min\"}}]}",
         RON_EPOLICY, "$.rules[0].obligations.rate"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"obligations\":{\"rate\":\"0/s\"}}]}",
         RON_EPOLLIMIT, "$.rules[0].obligations.rate"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"obligations\":{\"burst\":3}}]}",
         RON_EPOLICY, "$.rules[0].obligations.burst"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"obligations\":{\"audit\":\"yes\"}}]}",
         RON_EPOLICY, "$.rules[0].obligations.audit"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
         "\"obligations\":{\"quota\":1}}]}",
         RON_EPOLICY, "$.rules[0].obligations.quota"},
        {"{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"reason\":\"a\\nb\"}]}",
         RON_EPOLICY, "$.rules[0].reason"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(cases[i].json, cases[i].code, cases[i].path);
}

static void
test_pol_error_messages_stay_printable_for_control_bytes(void **state)
{
    (void)state;
    static const char bad[] = "{\"version\":1,\"rules\":[\x01\x1b[31m]}";
    pol_err_t err;
    assert_null(pol_compile(bad, sizeof bad - 1, &err));
    assert_int_equal(err.code, RON_EPOLICY);
    assert_string_equal(err.path, "$");
    for (const char *c = err.msg; *c != '\0'; c++)
        assert_true((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
}

static void
test_pol_refuses_duplicate_json_keys_and_rule_ids(void **state)
{
    (void)state;
    expect_refused("{\"version\":1,\"version\":1,\"rules\":[]}", RON_EPOLICY, "$");
    expect_refused("{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\"},"
                   "{\"id\":\"b\",\"effect\":\"deny\"},{\"id\":\"a\",\"effect\":\"deny\"}]}",
                   RON_EPOLDUP, "$.rules[2].id");
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral" /* extra_fmt: literals of this file */
/* A bundle of n rules, each {"id":"<prefix><i>","effect":"allow"<extra>}. */
static char *
many_rules(size_t n, const char *extra_fmt)
{
    size_t cap = 256 + n * (96 + (extra_fmt ? strlen(extra_fmt) + 32 : 0)), len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    len += (size_t)snprintf(s + len, cap - len, "{\"version\":1,\"rules\":[");
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(s + len, cap - len, "%s{\"id\":\"r%zu\",\"effect\":\"allow\"",
                                i ? "," : "", i);
        if (extra_fmt != NULL)
            len += (size_t)snprintf(s + len, cap - len, extra_fmt, i);
        len += (size_t)snprintf(s + len, cap - len, "}");
    }
    snprintf(s + len, cap - len, "]}");
    return s;
}
#pragma GCC diagnostic pop

static void
test_pol_refuses_bundles_over_limits(void **state)
{
    (void)state;
    char *s = many_rules(POL_MAX_RULES + 1, NULL);
    expect_refused(s, RON_EPOLLIMIT, "$.rules");
    free(s);
    /* 64 distinct tags fit; the 65th does not */
    s = many_rules(POL_MAX_TAGS, ",\"match\":{\"tags\":[\"t%zu\"]}");
    pol_policy_t *p = compile_ok(s);
    pol_policy_unref(p);
    free(s);
    s = many_rules(POL_MAX_TAGS + 1, ",\"match\":{\"tags\":[\"t%zu\"]}");
    expect_refused(s, RON_EPOLLIMIT, "$.rules[64].match.tags[0]");
    free(s);

    char id[POL_MAX_ID_LEN + 2], json[512];
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    snprintf(json, sizeof json, "{\"version\":1,\"rules\":[{\"id\":\"%s\",\"effect\":\"deny\"}]}",
             id);
    expect_refused(json, RON_EPOLLIMIT, "$.rules[0].id");
    snprintf(json, sizeof json,
             "{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"deny\",\"match\":"
             "{\"tags\":[\"%s\"]}}]}",
             id);
    expect_refused(json, RON_EPOLLIMIT, "$.rules[0].match.tags[0]");
    expect_refused(
        "{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"deny\",\"match\":{\"tags\":"
        "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\","
        "\"n\",\"o\",\"p\",\"q\"]}}]}",
        RON_EPOLLIMIT, "$.rules[0].match.tags");
    expect_refused("{\"version\":1,\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
                   "\"obligations\":{\"rate\":\"1000001/s\"}}]}",
                   RON_EPOLLIMIT, "$.rules[0].obligations.rate");

    size_t big = POL_MAX_BUNDLE + 1;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    huge[big] = '\0';
    expect_refused(huge, RON_EPOLLIMIT, "$");
    free(huge);
}

static void
test_pol_first_matching_rule_wins(void **state)
{
    (void)state;
    pol_policy_t *p =
        compile_ok("{\"version\":1,\"rules\":["
                   "{\"id\":\"deny-bulk\",\"effect\":\"deny\",\"match\":{\"tags\":[\"bulk\"]}},"
                   "{\"id\":\"allow-get\",\"effect\":\"allow\",\"match\":{\"ops\":[\"get\"]}},"
                   "{\"id\":\"deny-get\",\"effect\":\"deny\",\"match\":{\"ops\":[\"get\"]}},"
                   "{\"id\":\"allow-all\",\"effect\":\"allow\"}]}");
    pol_effect_t e;
    pol_request_t r = anon_req(POL_OP_GET);
    assert_string_equal(eval_id(p, &r, &e), "allow-get");
    assert_int_equal(e, POL_ALLOW);
    const char *bulk[] = {"bulk"};
    r.tags = bulk;
    r.n_tags = 1;
    assert_string_equal(eval_id(p, &r, &e), "deny-bulk");
    assert_int_equal(e, POL_DENY);
    r = anon_req(POL_OP_PUT);
    assert_string_equal(eval_id(p, &r, &e), "allow-all");
    assert_int_equal(e, POL_ALLOW);
    pol_decision_t d;
    assert_int_equal(pol_eval(p, &r, &d), 0);
    assert_int_equal(d.rule, 3);
    pol_policy_unref(p);
}

static void
test_pol_denies_when_no_rule_matches(void **state)
{
    (void)state;
    pol_policy_t *p = compile_ok("{\"version\":1,\"rules\":[]}");
    pol_decision_t d;
    for (int op = 0; op < POL_OP_COUNT; op++) {
        pol_request_t r = anon_req((pol_op_t)op);
        assert_int_equal(pol_eval(p, &r, &d), 0);
        assert_int_equal(d.effect, POL_DENY);
        assert_int_equal(d.rule, -1);
        assert_string_equal(d.rule_id, "default-deny");
        assert_int_equal(d.obligations.rate, 0);
        assert_false(d.obligations.audit);
    }
    pol_policy_unref(p);
    p = compile_ok("{\"version\":1,\"rules\":[{\"id\":\"only-pin\",\"effect\":\"allow\","
                   "\"match\":{\"ops\":[\"pin\"]}}]}");
    pol_request_t r = cap_req(POL_OP_PUT, NULL);
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    r.op = POL_OP_PIN;
    assert_string_equal(eval_id(p, &r, NULL), "only-pin");
    pol_policy_unref(p);
}

static void
test_pol_matches_tenant_and_anonymity(void **state)
{
    (void)state;
    pol_policy_t *p = compile_ok(
        "{\"version\":1,\"rules\":["
        "{\"id\":\"tenant\",\"effect\":\"allow\",\"match\":{\"tenant\":\"" TENANT_HEX "\"}},"
        "{\"id\":\"anon\",\"effect\":\"deny\",\"match\":{\"anonymous\":true}},"
        "{\"id\":\"cap\",\"effect\":\"allow\",\"match\":{\"anonymous\":false}}]}");
    pol_request_t r = cap_req(POL_OP_PUT, TENANT_HEX);
    assert_string_equal(eval_id(p, &r, NULL), "tenant");
    r = cap_req(POL_OP_PUT, "ff112233445566778899aabbccddeeff");
    assert_string_equal(eval_id(p, &r, NULL), "cap");
    r = cap_req(POL_OP_PUT, NULL); /* capability without a tenant caveat */
    assert_string_equal(eval_id(p, &r, NULL), "cap");
    r = anon_req(POL_OP_PUT);
    assert_string_equal(eval_id(p, &r, NULL), "anon");
    pol_policy_unref(p);
}

static void
test_pol_tenant_rules_and_shared_rules_keep_bundle_order(void **state)
{
    (void)state;
    /* Tenant rules and rules without a tenant are indexed apart; the walk
     * must still honour bundle order across the two. */
    pol_policy_t *p = compile_ok(
        "{\"version\":1,\"rules\":["
        "{\"id\":\"t1-pin\",\"effect\":\"deny\",\"match\":{\"tenant\":\"" TENANT_HEX "\","
        "\"ops\":[\"pin\"]}},"
        "{\"id\":\"big\",\"effect\":\"deny\",\"match\":{\"min_body\":2000}},"
        "{\"id\":\"t1-eu\",\"effect\":\"allow\",\"match\":{\"tenant\":\"" TENANT_HEX "\","
        "\"tags\":[\"eu\"]}},"
        "{\"id\":\"get\",\"effect\":\"allow\",\"match\":{\"ops\":[\"get\"]}},"
        "{\"id\":\"t1-all\",\"effect\":\"allow\",\"match\":{\"tenant\":\"" TENANT_HEX "\"}}]}");
    const char *eu[] = {"eu"};
    pol_request_t r = cap_req(POL_OP_PIN, TENANT_HEX);
    r.body_len = 5000;
    assert_string_equal(eval_id(p, &r, NULL), "t1-pin"); /* tenant rule before shared one */
    r.op = POL_OP_PUT;
    assert_string_equal(eval_id(p, &r, NULL), "big"); /* shared rule before tenant rules */
    r.body_len = 10;
    assert_string_equal(eval_id(p, &r, NULL), "t1-all");
    r.tags = eu;
    r.n_tags = 1;
    assert_string_equal(eval_id(p, &r, NULL), "t1-eu");
    r = cap_req(POL_OP_GET, TENANT_HEX);
    assert_string_equal(eval_id(p, &r, NULL), "get");
    r = cap_req(POL_OP_PIN, "ff112233445566778899aabbccddeeff");
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    pol_policy_unref(p);
}

static void
test_pol_matches_each_listed_op_only(void **state)
{
    (void)state;
    pol_policy_t *p = compile_ok("{\"version\":1,\"rules\":[{\"id\":\"w\",\"effect\":\"allow\","
                                 "\"match\":{\"ops\":[\"put\",\"name\",\"mint\"]}}]}");
    for (int op = 0; op < POL_OP_COUNT; op++) {
        pol_request_t r = cap_req((pol_op_t)op, NULL);
        bool listed = op == POL_OP_PUT || op == POL_OP_NAME || op == POL_OP_MINT;
        assert_string_equal(eval_id(p, &r, NULL), listed ? "w" : "default-deny");
    }
    pol_op_t op;
    assert_int_equal(pol_op_parse("admin", &op), 0);
    assert_int_equal(op, POL_OP_ADMIN);
    assert_int_equal(pol_op_parse("ADMIN", &op), RON_EINVAL);
    assert_string_equal(pol_op_name(POL_OP_RECV), "recv");
    assert_string_equal(pol_op_name(POL_OP_COUNT), "?");
    pol_policy_unref(p);
}

static void
test_pol_matches_body_bounds_inclusively(void **state)
{
    (void)state;
    pol_policy_t *p =
        compile_ok("{\"version\":1,\"rules\":["
                   "{\"id\":\"small\",\"effect\":\"allow\",\"match\":{\"max_body\":1024}},"
                   "{\"id\":\"medium\",\"effect\":\"allow\",\"match\":{\"min_body\":1025,"
                   "\"max_body\":1048576}}]}");
    pol_request_t r = cap_req(POL_OP_PUT, NULL);
    static const struct {
        uint64_t len;
        const char *id;
    } cases[] = {{0, "small"},        {1024, "small"},           {1025, "medium"},
                 {1048576, "medium"}, {1048577, "default-deny"}, {UINT64_MAX, "default-deny"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r.body_len = cases[i].len;
        assert_string_equal(eval_id(p, &r, NULL), cases[i].id);
    }
    pol_policy_unref(p);
}

static void
test_pol_matches_when_request_carries_every_rule_tag(void **state)
{
    (void)state;
    pol_policy_t *p = compile_ok(
        "{\"version\":1,\"rules\":["
        "{\"id\":\"eu-bulk\",\"effect\":\"deny\",\"match\":{\"tags\":[\"eu\",\"bulk\"]}},"
        "{\"id\":\"eu\",\"effect\":\"allow\",\"match\":{\"tags\":[\"eu\"]}}]}");
    pol_request_t r = cap_req(POL_OP_GET, NULL);
    const char *t1[] = {"bulk"}, *t2[] = {"eu"}, *t3[] = {"unknown", "bulk", "eu"};
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    r.tags = t1;
    r.n_tags = 1;
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    r.tags = t2;
    assert_string_equal(eval_id(p, &r, NULL), "eu");
    r.tags = t3;
    r.n_tags = 3;
    assert_string_equal(eval_id(p, &r, NULL), "eu-bulk");
    pol_policy_unref(p);
}

static void
test_pol_matches_source_prefixes(void **state)
{
    (void)state;
    pol_policy_t *p = compile_ok(
        "{\"version\":1,\"rules\":["
        "{\"id\":\"lan\",\"effect\":\"allow\",\"match\":{\"source\":[\"192.168.4.0/22\","
        "\"2001:db8:ab00::/40\"]}},"
        "{\"id\":\"all\",\"effect\":\"deny\",\"match\":{\"source\":[\"0.0.0.0/0\",\"::/0\"]}}]}");
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    pol_request_t r = anon_req(POL_OP_GET);
    static const struct {
        const char *addr;
        const char *id;
    } cases[] = {{"192.168.7.255", "lan"},      {"192.168.8.1", "all"},
                 {"2001:db8:abff::1", "lan"},   {"2001:db8:ac00::1", "all"},
                 {"::ffff:192.168.5.5", "lan"}, {"::ffff:10.0.0.1", "all"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (inet_pton(AF_INET, cases[i].addr, &v4.sin_addr) == 1)
            r.source = (const struct sockaddr *)&v4;
        else {
            assert_int_equal(inet_pton(AF_INET6, cases[i].addr, &v6.sin6_addr), 1);
            r.source = (const struct sockaddr *)&v6;
        }
        assert_string_equal(eval_id(p, &r, NULL), cases[i].id);
    }
    r.source = NULL; /* a local request (Unix socket) has no address: prefixes never match */
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    pol_policy_unref(p);
}

static void
test_pol_returns_the_matching_rules_obligations(void **state)
{
    (void)state;
    pol_policy_t *p = compile_ok(
        "{\"version\":1,\"revision\":42,\"rules\":["
        "{\"id\":\"pub\",\"effect\":\"allow\",\"match\":{\"ops\":[\"get\"]},"
        "\"obligations\":{\"rate\":\"50/s\",\"burst\":80,\"log\":true},\"reason\":\"public\"},"
        "{\"id\":\"audited\",\"effect\":\"deny\",\"obligations\":{\"rate\":\"7/s\","
        "\"audit\":true}}]}");
    pol_decision_t d;
    pol_request_t r = anon_req(POL_OP_GET);
    assert_int_equal(pol_eval(p, &r, &d), 0);
    assert_int_equal(d.obligations.rate, 50);
    assert_int_equal(d.obligations.burst, 80);
    assert_true(d.obligations.log);
    assert_false(d.obligations.audit);
    assert_string_equal(d.reason, "public");
    r.op = POL_OP_ADMIN;
    assert_int_equal(pol_eval(p, &r, &d), 0);
    assert_int_equal(d.effect, POL_DENY);
    assert_int_equal(d.obligations.rate, 7);
    assert_int_equal(d.obligations.burst, 7); /* burst defaults to the rate */
    assert_true(d.obligations.audit);
    assert_false(d.obligations.log);
    assert_string_equal(d.reason, "");
    assert_int_equal(pol_policy_revision(p), 42);
    assert_int_equal(pol_policy_rule_count(p), 2);
    pol_policy_unref(p);
}

static void
test_pol_eval_refuses_malformed_requests_with_a_deny(void **state)
{
    (void)state;
    pol_policy_t *p =
        compile_ok("{\"version\":1,\"rules\":[{\"id\":\"all\",\"effect\":\"allow\"}]}");
    pol_decision_t d;
    pol_request_t r = anon_req(POL_OP_GET);
    r.op = POL_OP_COUNT;
    assert_int_equal(pol_eval(p, &r, &d), RON_EINVAL);
    assert_int_equal(d.effect, POL_DENY);
    r = anon_req(POL_OP_GET);
    r.has_tenant = true;
    assert_int_equal(pol_eval(p, &r, &d), RON_EINVAL);
    r = anon_req(POL_OP_GET);
    const char *tags[POL_MAX_REQ_TAGS + 1] = {0};
    for (size_t i = 0; i < POL_MAX_REQ_TAGS + 1; i++)
        tags[i] = "t";
    r.tags = tags;
    r.n_tags = POL_MAX_REQ_TAGS + 1;
    assert_int_equal(pol_eval(p, &r, &d), RON_EINVAL);
    r.n_tags = 2;
    tags[1] = NULL;
    assert_int_equal(pol_eval(p, &r, &d), RON_EINVAL);
    assert_int_equal(d.effect, POL_DENY);
    r.n_tags = 1;
    assert_int_equal(pol_eval(p, &r, &d), 0);
    assert_int_equal(d.effect, POL_ALLOW);
    pol_policy_unref(p);
}

static void
test_pol_thousand_rules_each_request_finds_its_own_rule(void **state)
{
    (void)state;
    /* rule i: tenant i, ops get; the last rule (999) is the only one for tenant 999 */
    char *s = many_rules(1000, ",\"match\":{\"ops\":[\"get\",\"put\"],"
                               "\"tenant\":\"%032zx\"}");
    pol_policy_t *p = compile_ok(s);
    free(s);
    assert_int_equal(pol_policy_rule_count(p), 1000);
    for (size_t i = 0; i < 1000; i++) {
        char hex[33], want[16];
        snprintf(hex, sizeof hex, "%032zx", i);
        snprintf(want, sizeof want, "r%zu", i);
        pol_request_t r = cap_req(i % 2 ? POL_OP_PUT : POL_OP_GET, hex);
        pol_decision_t d;
        assert_int_equal(pol_eval(p, &r, &d), 0);
        assert_string_equal(d.rule_id, want);
        assert_int_equal(d.rule, (int32_t)i);
        r.op = POL_OP_PIN;
        assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    }
    pol_request_t r = cap_req(POL_OP_GET, "ffffffffffffffffffffffffffffffff");
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    pol_policy_unref(p);
}

static char *
read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    char *buf = malloc(POL_MAX_BUNDLE + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, POL_MAX_BUNDLE, f);
    fclose(f);
    buf[n] = '\0';
    *len_out = n;
    return buf;
}

static void
test_pol_default_matches_shipped_file(void **state)
{
    (void)state;
    const char *src = getenv("RON_SOURCE_DIR");
    char path[4096];
    size_t len;
    assert_non_null(src);
    snprintf(path, sizeof path, "%s/config/policy-default.json", src);
    char *file = read_file(path, &len);
    assert_int_equal(len, strlen(pol_default_bundle()));
    assert_memory_equal(file, pol_default_bundle(), len);
    free(file);
}

static void
test_pol_default_allows_anonymous_reads_rate_limited_and_denies_anonymous_writes(void **state)
{
    (void)state;
    pol_policy_t *p = pol_policy_default();
    pol_decision_t d;
    pol_request_t r = anon_req(POL_OP_GET);
    assert_int_equal(pol_eval(p, &r, &d), 0);
    assert_int_equal(d.effect, POL_ALLOW);
    assert_true(d.obligations.rate > 0);
    assert_true(d.obligations.burst >= d.obligations.rate);
    for (int op = POL_OP_PUT; op < POL_OP_COUNT; op++) {
        r = anon_req((pol_op_t)op);
        assert_int_equal(pol_eval(p, &r, &d), 0);
        assert_int_equal(d.effect, POL_DENY);
        assert_true(d.obligations.audit); /* rejected requests are audited */
        r = cap_req((pol_op_t)op, TENANT_HEX);
        assert_int_equal(pol_eval(p, &r, &d), 0);
        assert_int_equal(d.effect, POL_ALLOW);
        r = cap_req((pol_op_t)op, NULL);
        assert_int_equal(pol_eval(p, &r, &d), 0);
        assert_int_equal(d.effect, POL_ALLOW);
    }
    pol_policy_unref(p);
}

static void
test_pol_private_node_example_decides_as_documented(void **state)
{
    (void)state;
    const char *src = getenv("RON_SOURCE_DIR");
    char path[4096];
    size_t len;
    assert_non_null(src);
    snprintf(path, sizeof path, "%s/tests/corpus/policy_bundle/private_node.json", src);
    char *json = read_file(path, &len);
    pol_err_t err;
    pol_policy_t *p = pol_compile(json, len, &err);
    free(json);
    if (p == NULL)
        fail_msg("docs example refused: %s", err.msg);
    struct sockaddr_in lo = {.sin_family = AF_INET}, far = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &lo.sin_addr);
    inet_pton(AF_INET, "203.0.113.9", &far.sin_addr);
    pol_request_t r = cap_req(POL_OP_ADMIN, NULL);
    r.source = (const struct sockaddr *)&lo;
    assert_string_equal(eval_id(p, &r, NULL), "admin-local");
    r.source = (const struct sockaddr *)&far;
    assert_string_equal(eval_id(p, &r, NULL), "admin-remote");
    r = cap_req(POL_OP_PUT, TENANT_HEX);
    r.body_len = 67108865;
    assert_string_equal(eval_id(p, &r, NULL), "big-put");
    r.body_len = 67108864;
    assert_string_equal(eval_id(p, &r, NULL), "noisy-tenant");
    const char *tags[] = {"peak", "bulk"};
    r = cap_req(POL_OP_PUT, NULL);
    r.tags = tags;
    r.n_tags = 2;
    assert_string_equal(eval_id(p, &r, NULL), "bulk-off-peak");
    r.n_tags = 1;
    assert_string_equal(eval_id(p, &r, NULL), "members");
    r = anon_req(POL_OP_GET);
    assert_string_equal(eval_id(p, &r, NULL), "default-deny");
    pol_policy_unref(p);
}

static const char bundle_a[] =
    "{\"version\":1,\"revision\":1,\"rules\":["
    "{\"id\":\"a\",\"effect\":\"allow\",\"match\":{\"ops\":[\"get\"]}}]}";
static const char bundle_b[] = "{\"version\":1,\"revision\":2,\"rules\":["
                               "{\"id\":\"b\",\"effect\":\"deny\",\"match\":{\"ops\":[\"get\"]}}]}";
static const char bundle_bad[] =
    "{\"version\":1,\"revision\":3,\"rules\":["
    "{\"id\":\"c\",\"effect\":\"allow\",\"match\":{\"op\":[\"get\"]}}]}";

static void
test_pol_store_reloads_refuses_bad_bundle_and_rolls_back(void **state)
{
    (void)state;
    pol_err_t err;
    pol_store_t *s = pol_store_new(compile_ok(bundle_a));
    pol_request_t r = anon_req(POL_OP_GET);

    assert_int_equal(pol_store_rollback(s), RON_EPOLNOPREV);
    pol_policy_t *held = pol_store_acquire(s);
    assert_int_equal(pol_store_load(s, bundle_b, strlen(bundle_b), &err), 0);
    assert_int_equal(pol_store_generation(s), 1);
    /* a reader holding the old policy keeps it after the reload */
    assert_string_equal(eval_id(held, &r, NULL), "a");
    pol_policy_t *now = pol_store_acquire(s);
    assert_string_equal(eval_id(now, &r, NULL), "b");
    pol_policy_unref(now);

    assert_int_equal(pol_store_load(s, bundle_bad, strlen(bundle_bad), &err), RON_EPOLICY);
    assert_string_equal(err.path, "$.rules[0].match.op");
    assert_int_equal(pol_store_load(s, "{", 1, NULL), RON_EPOLICY);
    assert_int_equal(pol_store_generation(s), 1);
    now = pol_store_acquire(s);
    assert_string_equal(eval_id(now, &r, NULL), "b"); /* the current one stays */
    pol_policy_unref(now);

    assert_int_equal(pol_store_rollback(s), 0);
    assert_int_equal(pol_store_generation(s), 2);
    now = pol_store_acquire(s);
    assert_string_equal(eval_id(now, &r, NULL), "a");
    assert_int_equal(pol_policy_revision(now), 1);
    pol_policy_unref(now);
    assert_int_equal(pol_store_rollback(s), RON_EPOLNOPREV); /* one level only */

    pol_store_swap(s, pol_policy_default());
    now = pol_store_acquire(s);
    assert_string_equal(eval_id(now, &r, NULL), "public-read");
    pol_policy_unref(now);
    pol_policy_unref(held);
    pol_store_free(s);
    pol_store_free(NULL);
    pol_policy_unref(NULL);
}

/* ---- threads ---- */

#define READERS 3
#define RELOADS 300
#define READER_MAX_ROUNDS 200000

typedef struct {
    pol_store_t *store;
    volatile int *stop; /* written once by the main thread under the store's ordering */
    pthread_mutex_t *mu;
    long evals;
    int bad;
} reader_t;

static void *
reader_main(void *arg)
{
    reader_t *rd = arg;
    pol_request_t r = anon_req(POL_OP_GET);
    for (long i = 0; i < READER_MAX_ROUNDS; i++) {
        pthread_mutex_lock(rd->mu);
        int stop = *rd->stop;
        pthread_mutex_unlock(rd->mu);
        if (stop)
            break;
        pol_policy_t *p = pol_store_acquire(rd->store);
        pol_decision_t d;
        for (int k = 0; k < 10; k++) {
            if (pol_eval(p, &r, &d) != 0)
                rd->bad++;
            /* each policy decides consistently with its own revision */
            uint64_t rev = pol_policy_revision(p);
            if ((rev == 1 && d.effect != POL_ALLOW) || (rev == 2 && d.effect != POL_DENY))
                rd->bad++;
            rd->evals++;
        }
        pol_policy_unref(p);
    }
    return NULL;
}

static void
test_pol_store_readers_evaluate_consistently_during_reloads(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    volatile int stop = 0;
    pol_store_t *s = pol_store_new(compile_ok(bundle_a));
    pthread_t th[READERS];
    reader_t rd[READERS];

    for (int i = 0; i < READERS; i++) {
        rd[i] = (reader_t){.store = s, .stop = &stop, .mu = &mu};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
    }
    for (int i = 0; i < RELOADS; i++) {
        const char *b = i % 2 ? bundle_a : bundle_b;
        assert_int_equal(pol_store_load(s, b, strlen(b), NULL), 0);
        assert_int_equal(pol_store_load(s, bundle_bad, strlen(bundle_bad), NULL), RON_EPOLICY);
        if (i % 7 == 0)
            assert_int_equal(pol_store_rollback(s), 0);
    }
    pthread_mutex_lock(&mu);
    stop = 1;
    pthread_mutex_unlock(&mu);
    long total = 0;
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(rd[i].bad, 0);
        total += rd[i].evals;
    }
    assert_true(total > 0);
    pol_store_free(s);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_pol_refuses_malformed_bundles_naming_the_field),
        cmocka_unit_test(test_pol_refuses_duplicate_json_keys_and_rule_ids),
        cmocka_unit_test(test_pol_error_messages_stay_printable_for_control_bytes),
        cmocka_unit_test(test_pol_refuses_bundles_over_limits),
        cmocka_unit_test(test_pol_first_matching_rule_wins),
        cmocka_unit_test(test_pol_denies_when_no_rule_matches),
        cmocka_unit_test(test_pol_matches_tenant_and_anonymity),
        cmocka_unit_test(test_pol_tenant_rules_and_shared_rules_keep_bundle_order),
        cmocka_unit_test(test_pol_matches_each_listed_op_only),
        cmocka_unit_test(test_pol_matches_body_bounds_inclusively),
        cmocka_unit_test(test_pol_matches_when_request_carries_every_rule_tag),
        cmocka_unit_test(test_pol_matches_source_prefixes),
        cmocka_unit_test(test_pol_returns_the_matching_rules_obligations),
        cmocka_unit_test(test_pol_eval_refuses_malformed_requests_with_a_deny),
        cmocka_unit_test(test_pol_thousand_rules_each_request_finds_its_own_rule),
        cmocka_unit_test(test_pol_default_matches_shipped_file),
        cmocka_unit_test(
            test_pol_default_allows_anonymous_reads_rate_limited_and_denies_anonymous_writes),
        cmocka_unit_test(test_pol_private_node_example_decides_as_documented),
        cmocka_unit_test(test_pol_store_reloads_refuses_bad_bundle_and_rolls_back),
    };
    const struct CMUnitTest threaded[] = {
        cmocka_unit_test(test_pol_store_readers_evaluate_consistently_during_reloads),
    };
    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests_name("ron-policy threads", threaded, NULL, NULL);
    return cmocka_run_group_tests_name("ron-policy", unit, NULL, NULL);
}
