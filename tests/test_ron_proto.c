/*
 * test_ron_proto.c - control-plane DTOs: the status table of spec §3, exact
 * canonical encodings, strict decoding (unknown, wrong-typed and duplicate
 * fields named in the error), u64 as decimal strings, HELLO's tolerance of
 * unknown keys, START arguments, response metadata and credit; the strict
 * JSON bus service skeleton (proto_svc.h): frame checks, op table, counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto_svc.h"
#include "ron_err.h"
#include "ron_proto.h"

#define S(lit) lit, sizeof(lit) - 1

static void
test_proto_status_table_matches_spec(void **state)
{
    (void)state;
    static const struct {
        uint16_t status;
        const char *slug;
        bool retryable;
    } want[] = {
        {400, "bad_request", false},
        {401, "unauthorized", false},
        {403, "forbidden", false},
        {404, "not_found", false},
        {405, "method_not_allowed", false},
        {408, "timeout", true},
        {409, "conflict", false},
        {413, "payload_too_large", false},
        {416, "range_not_satisfiable", false},
        {426, "proto_mismatch", false},
        {429, "quota_exhausted", true},
        {431, "headers_too_large", false},
        {500, "internal", true},
        {502, "bad_gateway", true},
        {503, "unavailable", true},
        {504, "timeout", true},
        {507, "insufficient_storage", true},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(proto_status_slug(want[i].status), want[i].slug);
        assert_int_equal(proto_status_is_retryable(want[i].status), want[i].retryable);
        const proto_status_t *s = proto_status_find(want[i].status);
        assert_non_null(s);
        assert_int_equal(s->retry_after,
                         want[i].status == 429 || want[i].status == 503 || want[i].status == 507);
    }
    assert_null(proto_status_find(200));
    assert_string_equal(proto_status_slug(599), "internal");
    assert_false(proto_status_is_retryable(200));
}

static void
test_proto_slug_maps_back_to_status(void **state)
{
    (void)state;
    uint16_t st;
    assert_int_equal(proto_slug_status("not_found", &st), 0);
    assert_int_equal(st, 404);
    assert_int_equal(proto_slug_status("bad_digest", &st), 0);
    assert_int_equal(st, 409);
    assert_int_equal(proto_slug_status("timeout", &st), 0);
    assert_int_equal(st, 408); /* first row naming it */
    assert_int_equal(proto_slug_status("proto_mismatch", &st), 0);
    assert_int_equal(st, 426);
    assert_int_equal(proto_slug_status("rejected", &st), RON_EINVAL);
    assert_int_equal(proto_slug_status("", &st), RON_EINVAL);
}

static void
test_proto_error_encodes_in_spec_order_with_u64_as_string(void **state)
{
    (void)state;
    proto_error_t e;
    char *j;
    size_t n;

    proto_error_init(&e, 404, 18446744073709551615ULL, "no such object");
    assert_int_equal(proto_error_encode(&e, &j, &n), 0);
    assert_string_equal(j, "{\"code\":\"not_found\",\"message\":\"no such object\","
                           "\"retryable\":false,\"corr_id\":\"18446744073709551615\"}");
    assert_int_equal(n, strlen(j));
    free(j);

    proto_error_init(&e, 429, 9223372036854775808ULL, "slow down");
    e.has_retry_after = true;
    e.retry_after_ms = 1500;
    assert_int_equal(proto_error_encode(&e, &j, &n), 0);
    assert_string_equal(j, "{\"code\":\"quota_exhausted\",\"message\":\"slow down\","
                           "\"retryable\":true,\"corr_id\":\"9223372036854775808\","
                           "\"retry_after_ms\":1500}");
    free(j);

    proto_error_init(&e, 413, 7, "inflate overran");
    strcpy(e.reason, "compression_bomb");
    assert_int_equal(proto_error_encode(&e, &j, &n), 0);
    assert_string_equal(j,
                        "{\"code\":\"payload_too_large\",\"message\":\"inflate overran\","
                        "\"retryable\":false,\"corr_id\":\"7\",\"reason\":\"compression_bomb\"}");
    free(j);

    strcpy(e.code, "no_such_slug");
    assert_int_equal(proto_error_encode(&e, &j, &n), RON_EINVAL);
}

static void
test_proto_error_write_matches_encode_without_allocating(void **state)
{
    (void)state;
    proto_error_t e;
    char buf[PROTO_MAX_ERROR_JSON], *j;
    size_t n;
    ssize_t w;

    proto_error_init(&e, 503, 42, "busy \"now\"\\\n\t\x7f caf\xc3\xa9");
    strcpy(e.reason, "max_conns");
    e.has_retry_after = true;
    e.retry_after_ms = 2000;
    w = proto_error_write(&e, buf, sizeof buf);
    assert_int_equal(w, strlen(buf));
    assert_string_equal(buf, "{\"code\":\"unavailable\",\"message\":"
                             "\"busy \\\"now\\\"\\\\\\n\\u0009\\u007f caf\xc3\xa9\","
                             "\"retryable\":true,\"corr_id\":\"42\",\"reason\":\"max_conns\","
                             "\"retry_after_ms\":2000}");
    assert_int_equal(proto_error_encode(&e, &j, &n), 0);
    assert_string_equal(j, buf);
    free(j);
    strcpy(e.code, "nope");
    assert_int_equal(proto_error_write(&e, buf, sizeof buf), RON_EINVAL);
}

static void
test_proto_error_write_cuts_only_the_message_to_fit_and_stays_valid(void **state)
{
    (void)state;
    proto_error_t e, back;
    proto_err_t err;
    char full[PROTO_MAX_ERROR_JSON], small[PROTO_MIN_ERROR_BUF];
    char msg[PROTO_MAX_MESSAGE + 1];
    ssize_t n;

    /* 341 three-byte characters plus a quote: the cut may not split either */
    for (size_t i = 0; i + 3 <= PROTO_MAX_MESSAGE - 1; i += 3)
        memcpy(msg + i, "\xe2\x82\xac", 3);
    msg[PROTO_MAX_MESSAGE - 1] = '"';
    msg[PROTO_MAX_MESSAGE] = '\0';
    proto_error_init(&e, 429, 18446744073709551615ULL, msg);
    memset(e.reason, '\x01', PROTO_MAX_REASON); /* worst case: every byte six wide */
    e.reason[PROTO_MAX_REASON] = '\0';
    e.has_retry_after = true;
    e.retry_after_ms = UINT32_MAX;

    n = proto_error_write(&e, full, sizeof full);
    assert_true(n > 0 && (size_t)n < sizeof full);
    assert_int_equal(proto_error_decode(full, (size_t)n, &back, &err), 0);
    assert_string_equal(back.message, msg);

    /* at the largest field values the message has 29 bytes of room at most */
    for (size_t cap = sizeof small; cap > sizeof small - 29; cap--) {
        n = proto_error_write(&e, small, cap);
        assert_true(n > 0 && (size_t)n < cap);
        assert_int_equal(proto_error_decode(small, (size_t)n, &back, &err), 0);
        assert_int_equal(strncmp(back.message, msg, strlen(back.message)), 0);
        assert_int_equal(strlen(back.message) % 3, 0); /* whole characters only */
        assert_string_equal(back.reason, e.reason);
        assert_true(back.retry_after_ms == UINT32_MAX);
        assert_true(back.corr_id == 18446744073709551615ULL);
    }
    /* with an empty message the envelope needs exactly its length + 1; less is refused */
    e.message[0] = '\0';
    n = proto_error_write(&e, small, sizeof small);
    assert_true(n > 0);
    assert_int_equal(proto_error_write(&e, small, (size_t)n + 1), n);
    assert_int_equal(proto_error_write(&e, small, (size_t)n), RON_ETOOBIG);
}

static void
test_proto_error_write_replaces_invalid_utf8_and_decodes(void **state)
{
    (void)state;
    proto_error_t e, back;
    proto_err_t err;
    char buf[PROTO_MAX_ERROR_JSON];
    ssize_t n;

    /* stray continuation, overlong '/', a surrogate, a cut sequence at the end */
    proto_error_init(&e, 400, 1,
                     "a\x80"
                     "b\xc0\xaf"
                     "c\xed\xa0\x80"
                     "d\xe2\x82");
    n = proto_error_write(&e, buf, sizeof buf);
    assert_true(n > 0);
    assert_string_equal(buf, "{\"code\":\"bad_request\",\"message\":\"a\\ufffdb\\ufffd\\ufffdc"
                             "\\ufffd\\ufffd\\ufffdd\\ufffd\\ufffd\",\"retryable\":false,"
                             "\"corr_id\":\"1\"}");
    assert_int_equal(proto_error_decode(buf, (size_t)n, &back, &err), 0);
}

static void
test_proto_error_decodes_and_round_trips(void **state)
{
    (void)state;
    proto_error_t e;
    proto_err_t err;
    char *j;
    size_t n;
    const char in[] = "{\"retryable\":true,\"message\":\"later\",\"code\":\"unavailable\","
                      "\"corr_id\":\"12345678901234567890\",\"retry_after_ms\":250}";
    assert_int_equal(proto_error_decode(S(in), &e, &err), 0);
    assert_string_equal(e.code, "unavailable");
    assert_string_equal(e.message, "later");
    assert_true(e.retryable);
    assert_true(e.corr_id == 12345678901234567890ULL);
    assert_true(e.has_retry_after);
    assert_int_equal(e.retry_after_ms, 250);
    assert_string_equal(e.reason, "");
    assert_int_equal(proto_error_encode(&e, &j, &n), 0);
    proto_error_t e2;
    assert_int_equal(proto_error_decode(j, n, &e2, &err), 0);
    assert_memory_equal(&e, &e2, sizeof e);
    free(j);
}

/* Decode must fail with RON_EJSON and name field. */
static void
expect_error_field(const char *json, const char *field)
{
    proto_error_t e;
    proto_err_t err;
    assert_int_equal(proto_error_decode(json, strlen(json), &e, &err), RON_EJSON);
    assert_string_equal(err.field, field);
    if (field[0] != '\0')
        assert_non_null(strstr(err.text, field));
}

static void
test_proto_error_rejects_bad_fields_by_name(void **state)
{
    (void)state;
#define OK_TAIL "\"message\":\"m\",\"retryable\":false,\"corr_id\":\"1\""
    expect_error_field("{\"code\":\"not_found\"," OK_TAIL ",\"extra\":1}", "extra");
    expect_error_field("{\"code\":\"not_found\"," OK_TAIL ",\"code\":\"conflict\"}", "code");
    expect_error_field("{\"code\":404," OK_TAIL "}", "code");
    expect_error_field("{\"code\":\"nope\"," OK_TAIL "}", "code");
    expect_error_field("{\"code\":\"not_found\",\"message\":\"m\",\"retryable\":\"no\","
                       "\"corr_id\":\"1\"}",
                       "retryable");
    expect_error_field("{\"code\":\"not_found\",\"message\":\"m\",\"retryable\":false,"
                       "\"corr_id\":1}",
                       "corr_id");
    expect_error_field("{\"code\":\"not_found\",\"message\":\"m\",\"retryable\":false,"
                       "\"corr_id\":\"18446744073709551616\"}",
                       "corr_id");
    expect_error_field("{\"code\":\"not_found\",\"message\":\"m\",\"retryable\":false,"
                       "\"corr_id\":\"-1\"}",
                       "corr_id");
    expect_error_field("{\"code\":\"not_found\",\"message\":\"m\",\"retryable\":false,"
                       "\"corr_id\":\"007\"}",
                       "corr_id");
    expect_error_field("{\"code\":\"not_found\",\"message\":\"m\",\"retryable\":false}", "corr_id");
    expect_error_field("{\"code\":\"not_found\"," OK_TAIL ",\"retry_after_ms\":1.5}",
                       "retry_after_ms");
    expect_error_field("{\"code\":\"not_found\"," OK_TAIL ",\"retry_after_ms\":-1}",
                       "retry_after_ms");
    expect_error_field("{\"code\":\"not_found\"," OK_TAIL ",\"reason\":false}", "reason");
    expect_error_field("[1,2]", "");
    expect_error_field("{\"code\":", "");
    expect_error_field("{\"code\":\"not_found\"," OK_TAIL "} trailing", "");
    expect_error_field("", "");
}

static void
test_proto_error_rejects_oversized_message(void **state)
{
    (void)state;
    size_t n = PROTO_MAX_MESSAGE + 1;
    char *big = malloc(n + 200);
    int w = snprintf(big, 100,
                     "{\"code\":\"internal\",\"retryable\":true,\"corr_id\":\"0\","
                     "\"message\":\"");
    memset(big + w, 'a', n);
    strcpy(big + w + n, "\"}");
    expect_error_field(big, "message");
    free(big);
}

static void
test_proto_hello_ignores_unknown_keys_but_checks_known_ones(void **state)
{
    (void)state;
    proto_hello_t h;
    proto_err_t err;
    assert_int_equal(
        proto_hello_decode(S("{\"ua\":\"ron/0.1\",\"max_frame\":65536,\"pq_hybrid\":true}"), &h,
                           &err),
        0);
    assert_string_equal(h.ua, "ron/0.1");
    assert_true(h.has_max_frame);
    assert_int_equal(h.max_frame, 65536);
    assert_int_equal(h.n_versions, 0);
    /* the Rust implementation's form */
    assert_int_equal(proto_hello_decode(S("{\"ua\":null}"), &h, &err), 0);
    assert_string_equal(h.ua, "");
    assert_false(h.has_max_frame);
    assert_int_equal(proto_hello_decode(S("{}"), &h, &err), 0);
    assert_int_equal(proto_hello_decode(S("{\"versions\":[1,2]}"), &h, &err), 0);
    assert_int_equal(h.n_versions, 2);
    assert_int_equal(h.versions[1], 2);

    assert_int_equal(proto_hello_decode(S("{\"max_frame\":\"big\"}"), &h, &err), RON_EJSON);
    assert_string_equal(err.field, "max_frame");
    assert_int_equal(proto_hello_decode(S("{\"max_frame\":1e6}"), &h, &err), RON_EJSON);
    assert_string_equal(err.field, "max_frame");
    assert_int_equal(proto_hello_decode(S("{\"ua\":\"a\",\"ua\":\"b\"}"), &h, &err), RON_EJSON);
    assert_string_equal(err.field, "ua");
    assert_int_equal(proto_hello_decode(S("{\"ua\":5}"), &h, &err), RON_EJSON);
    assert_string_equal(err.field, "ua");
}

static void
test_proto_hello_encodes_canonically(void **state)
{
    (void)state;
    proto_hello_t h = {.ua = "ron/0.1", .has_max_frame = true, .max_frame = 1048576};
    char *j;
    size_t n;
    assert_int_equal(proto_hello_encode(&h, &j, &n), 0);
    assert_string_equal(j, "{\"max_frame\":1048576,\"ua\":\"ron/0.1\"}");
    free(j);
    memset(&h, 0, sizeof h);
    assert_int_equal(proto_hello_encode(&h, &j, &n), 0);
    assert_string_equal(j, "{}");
    free(j);
}

static void
test_proto_hello_reply_round_trips_and_requires_fields(void **state)
{
    (void)state;
    proto_hello_reply_t r = {.max_frame = 1048576,
                             .max_inflight = 64,
                             .flags_supported = 255,
                             .n_versions = 1,
                             .versions = {1},
                             .n_transports = 2,
                             .transports = {"tcp+tls", "unix"}};
    proto_hello_reply_t r2;
    proto_err_t err;
    char *j;
    size_t n;
    assert_int_equal(proto_hello_reply_encode(&r, &j, &n), 0);
    assert_string_equal(j, "{\"flags_supported\":255,\"max_frame\":1048576,\"max_inflight\":64,"
                           "\"transports\":[\"tcp+tls\",\"unix\"],\"versions\":[1]}");
    assert_int_equal(proto_hello_reply_decode(j, n, &r2, &err), 0);
    assert_memory_equal(&r, &r2, sizeof r);
    free(j);
    /* exactly what the Rust implementation sends, plus an unknown key */
    assert_int_equal(proto_hello_reply_decode(
                         S("{\"max_frame\":1048576,\"max_inflight\":64,\"flags_supported\":255,"
                           "\"versions\":[1],\"transports\":[\"tcp+tls\"],\"future\":{}}"),
                         &r2, &err),
                     0);
    assert_int_equal(r2.n_transports, 1);
    assert_int_equal(proto_hello_reply_decode(S("{\"max_frame\":1048576,\"max_inflight\":64,"
                                                "\"versions\":[1],\"transports\":[]}"),
                                              &r2, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "flags_supported");
    assert_int_equal(proto_hello_reply_decode(S("{\"max_frame\":1048576,\"max_inflight\":64,"
                                                "\"flags_supported\":255,\"versions\":[1],"
                                                "\"transports\":[7]}"),
                                              &r2, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "transports");
}

static void
test_proto_start_keeps_args_and_checks_them_strictly(void **state)
{
    (void)state;
    proto_start_t s;
    proto_err_t err;
    const char *addr;
    uint64_t off = 0;
    static const char *const allowed[] = {"addr", "offset", NULL};

    assert_int_equal(proto_start_decode(S("{\"op\":\"get\",\"addr\":\"b3:00\","
                                          "\"offset\":\"18446744073709551615\"}"),
                                        &s, &err),
                     0);
    assert_string_equal(s.op, "get");
    assert_null(json_object_get(s.args, "op"));
    assert_int_equal(proto_args_only(&s, allowed, &err), 0);
    assert_int_equal(proto_args_str(&s, "addr", true, &addr, &err), 0);
    assert_string_equal(addr, "b3:00");
    assert_int_equal(proto_args_u64(&s, "offset", true, &off, &err), 0);
    assert_true(off == UINT64_MAX);
    assert_int_equal(proto_args_str(&s, "missing", false, &addr, &err), 0);
    assert_null(addr);
    assert_int_equal(proto_args_str(&s, "missing", true, &addr, &err), RON_EJSON);
    assert_string_equal(err.field, "missing");
    assert_int_equal(proto_args_u64(&s, "addr", true, &off, &err), RON_EJSON);
    assert_string_equal(err.field, "addr");
    static const char *const only_addr[] = {"addr", NULL};
    assert_int_equal(proto_args_only(&s, only_addr, &err), RON_EJSON);
    assert_string_equal(err.field, "offset");
    proto_start_close(&s);

    assert_int_equal(proto_start_decode(S("{\"addr\":\"x\"}"), &s, &err), RON_EJSON);
    assert_string_equal(err.field, "op");
    assert_int_equal(proto_start_decode(S("{\"op\":\"Get!\"}"), &s, &err), RON_EJSON);
    assert_string_equal(err.field, "op");
    assert_int_equal(proto_start_decode(S("{\"op\":\"get\",\"range\":[0,1.5]}"), &s, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "range");
    assert_int_equal(proto_start_decode(S("{\"op\":\"get\",\"a\":1,\"a\":2}"), &s, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "a");
}

static void
test_proto_start_encodes_with_sorted_keys(void **state)
{
    (void)state;
    json_t *args = json_pack("{s:s, s:[i,i]}", "addr", "b3:ab", "range", 0, 65535);
    char *j;
    size_t n;
    assert_int_equal(proto_start_encode("get", args, &j, &n), 0);
    assert_string_equal(j, "{\"addr\":\"b3:ab\",\"op\":\"get\",\"range\":[0,65535]}");
    free(j);
    assert_int_equal(proto_start_encode("GET", args, &j, &n), RON_EINVAL);
    json_object_set_new(args, "f", json_real(0.5));
    assert_int_equal(proto_start_encode("get", args, &j, &n), RON_EINVAL);
    json_decref(args);
    assert_int_equal(proto_start_encode("ping", NULL, &j, &n), 0);
    assert_string_equal(j, "{\"op\":\"ping\"}");
    free(j);
}

static void
test_proto_meta_round_trips_and_rejects_unknown(void **state)
{
    (void)state;
    proto_meta_t m = {.has_size = true, .size = 9007199254740993ULL, .content_type = "text/plain"};
    proto_meta_t m2;
    proto_err_t err;
    char *j;
    size_t n;
    assert_int_equal(proto_meta_encode(&m, &j, &n), 0);
    assert_string_equal(j, "{\"content_type\":\"text/plain\",\"size\":\"9007199254740993\"}");
    assert_int_equal(proto_meta_decode(j, n, &m2, &err), 0);
    assert_true(m2.size == 9007199254740993ULL); /* 2^53 + 1 survives */
    assert_string_equal(m2.content_type, "text/plain");
    free(j);
    assert_int_equal(proto_meta_decode(S("{}"), &m2, &err), 0);
    assert_false(m2.has_size);
    assert_int_equal(proto_meta_decode(S("{\"size\":\"1\",\"etag\":\"x\"}"), &m2, &err), RON_EJSON);
    assert_string_equal(err.field, "etag");
    assert_int_equal(proto_meta_decode(S("{\"size\":12}"), &m2, &err), RON_EJSON);
    assert_string_equal(err.field, "size");
}

static void
test_proto_credit_round_trips_and_bounds_frames(void **state)
{
    (void)state;
    proto_err_t err;
    uint32_t f;
    char *j;
    size_t n;
    assert_int_equal(proto_credit_encode(16, &j, &n), 0);
    assert_string_equal(j, "{\"frames\":16,\"op\":\"credit\"}");
    assert_int_equal(proto_credit_decode(j, n, &f, &err), 0);
    assert_int_equal(f, 16);
    free(j);
    assert_int_equal(proto_credit_encode(0, &j, &n), RON_EINVAL);
    assert_int_equal(proto_credit_encode(PROTO_MAX_CREDIT + 1, &j, &n), RON_EINVAL);
    assert_int_equal(proto_credit_decode(S("{\"op\":\"credit\",\"frames\":0}"), &f, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "frames");
    assert_int_equal(proto_credit_decode(S("{\"op\":\"ping\",\"frames\":1}"), &f, &err), RON_EJSON);
    assert_string_equal(err.field, "op");
    assert_int_equal(proto_credit_decode(S("{\"op\":\"credit\",\"frames\":1,\"x\":1}"), &f, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "x");
}

static void
test_proto_decoders_accept_unterminated_input(void **state)
{
    (void)state;
    /* len bounds the document: bytes after it are never read */
    const char buf[] = "{\"op\":\"credit\",\"frames\":3}GARBAGE";
    uint32_t f;
    assert_int_equal(proto_credit_decode(buf, 26, &f, NULL), 0);
    assert_int_equal(f, 3);
    assert_int_equal(proto_credit_decode(buf, 25, &f, NULL), RON_EJSON); /* NULL err is fine */
}

static void
test_proto_hello_lists_are_bounded_and_typed(void **state)
{
    (void)state;
    proto_hello_t h;
    proto_hello_reply_t r;
    proto_err_t err;
    assert_int_equal(proto_hello_decode(S("{\"versions\":1}"), &h, &err), RON_EJSON);
    assert_string_equal(err.field, "versions");
    assert_int_equal(proto_hello_decode(S("{\"versions\":[1,2,3,4,5,6,7,8,9]}"), &h, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "versions");
    assert_int_equal(proto_hello_decode(S("{\"versions\":[\"1\"]}"), &h, &err), RON_EJSON);
    assert_non_null(strstr(err.text, "entry 0"));
    assert_int_equal(proto_hello_decode(S("{\"versions\":[65536]}"), &h, &err), RON_EJSON);
#define REPLY_HEAD                                                                                 \
    "{\"max_frame\":1048576,\"max_inflight\":64,\"flags_supported\":255,\"versions\":[1]"
    assert_int_equal(proto_hello_reply_decode(S(REPLY_HEAD "}"), &r, &err), RON_EJSON);
    assert_string_equal(err.field, "transports");
    assert_int_equal(proto_hello_reply_decode(S(REPLY_HEAD ",\"transports\":\"tcp\"}"), &r, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "transports");
    assert_int_equal(proto_hello_reply_decode(
                         S(REPLY_HEAD ",\"transports\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\","
                                      "\"h\",\"i\"]}"),
                         &r, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "transports");
    assert_int_equal(proto_hello_reply_decode(S("{\"max_frame\":1048576,\"max_inflight\":64,"
                                                "\"flags_supported\":255,\"transports\":[]}"),
                                              &r, &err),
                     RON_EJSON);
    assert_string_equal(err.field, "versions");
    assert_int_equal(proto_hello_reply_decode(S("{\"max_frame\":-1}"), &r, &err), RON_EJSON);
    assert_string_equal(err.field, "max_frame");
}

static void
test_proto_error_init_falls_back_to_internal_and_truncates(void **state)
{
    (void)state;
    proto_error_t e;
    char big[PROTO_MAX_MESSAGE + 100];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    proto_error_init(&e, 299, 5, big);
    assert_string_equal(e.code, "internal");
    assert_true(e.retryable);
    assert_int_equal(strlen(e.message), PROTO_MAX_MESSAGE);
    proto_error_init(&e, 403, 5, NULL);
    assert_string_equal(e.code, "forbidden");
    assert_string_equal(e.message, "");
}

static void
test_proto_rejects_documents_over_the_size_limit(void **state)
{
    (void)state;
    size_t n = PROTO_MAX_JSON + 1;
    char *big = malloc(n);
    proto_meta_t m;
    proto_err_t err;
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    assert_int_equal(proto_meta_decode(big, n, &m, &err), RON_EJSON);
    assert_string_equal(err.field, "");
    assert_non_null(strstr(err.text, "larger than"));
    assert_int_equal(proto_meta_decode(big, n - 1, &m, &err), RON_EJSON); /* unbalanced */
    big[n - 2] = '}';
    assert_int_equal(proto_meta_decode(big, n - 1, &m, &err), 0);
    free(big);
}

/* ---- proto_svc: the strict JSON bus service skeleton ---- */

static const char *const svc_get_fields[] = {"key", "limit", NULL};
static const proto_svc_op_t svc_ops[] = {{"get", svc_get_fields}, {"ping", NULL}};
static const proto_svc_desc_t svc_desc = {.what = "demo",
                                          .metric = "demo_requests_total",
                                          .help = "Demo protocol requests by op and status.",
                                          .ops = svc_ops,
                                          .n_ops = 2,
                                          .max_json = 64};

/* u32 big-endian length of js then js into buf; returns the frame's length. */
static size_t
svc_frame(uint8_t *buf, const char *js)
{
    return proto_json_frame(buf, js, (uint32_t)strlen(js));
}

static void
test_proto_json_unframe_reads_only_an_exact_frame_of_an_object(void **state)
{
    uint8_t buf[128];
    size_t n = svc_frame(buf, "{\"a\":\"1\"}");
    json_t *o;
    (void)state;

    o = proto_json_unframe(buf, n, 0);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "a")), "1");
    json_decref(o);
    assert_null(proto_json_unframe(buf, 3, 0));     /* shorter than the length */
    assert_null(proto_json_unframe(buf, n - 1, 0)); /* length does not match */
    buf[n] = ' ';
    assert_null(proto_json_unframe(buf, n + 1, 0)); /* bytes after the JSON */
    assert_null(proto_json_unframe(buf, svc_frame(buf, "[1]"), 0));    /* not an object */
    assert_null(proto_json_unframe(buf, svc_frame(buf, "{\"a\":"), 0)); /* not JSON */
    n = svc_frame(buf, "{\"a\":1,\"a\":2}");
    o = proto_json_unframe(buf, n, 0);
    assert_non_null(o);
    json_decref(o);
    assert_null(proto_json_unframe(buf, n, JSON_REJECT_DUPLICATES));
}

static void
test_proto_svc_parse_accepts_known_ops_with_their_fields(void **state)
{
    proto_svc_t *s = NULL;
    proto_svc_fail_t fail;
    proto_svc_req_t in;
    uint8_t buf[128];
    (void)state;

    assert_int_equal(proto_svc_new(&svc_desc, &s), 0);
    assert_int_equal(
        proto_svc_parse(s, buf, svc_frame(buf, "{\"op\":\"get\",\"key\":\"a\"}"), &in, &fail), 0);
    assert_int_equal(in.op, 0);
    assert_string_equal(json_string_value(json_object_get(in.o, "key")), "a");
    assert_int_equal(in.raw_len, 0);
    json_decref(in.o);
    assert_int_equal(proto_svc_parse(s, buf, svc_frame(buf, "{\"op\":\"ping\"}"), &in, &fail), 0);
    assert_int_equal(in.op, 1);
    json_decref(in.o);
    assert_string_equal(proto_svc_op_name(s, 0), "get");
    assert_string_equal(proto_svc_op_name(s, 2), "invalid");
    assert_string_equal(proto_svc_op_name(s, -1), "invalid");
    proto_svc_free(s);
}

/* Parse js (framed) expecting a 400 with reason and a message containing msg; returns the op. */
static int
svc_refused(proto_svc_t *s, const uint8_t *payload, size_t len, const char *reason, const char *msg)
{
    proto_svc_fail_t fail;
    proto_svc_req_t in;
    assert_int_equal(proto_svc_parse(s, payload, len, &in, &fail), RON_EJSON);
    assert_null(in.o);
    assert_int_equal(fail.code, 400);
    assert_string_equal(fail.reason, reason);
    if (strstr(fail.message, msg) == NULL)
        fail_msg("message '%s' lacks '%s'", fail.message, msg);
    return in.op;
}

static void
test_proto_svc_parse_refuses_bad_frames_naming_the_field(void **state)
{
    static const uint8_t short_payload[] = {0, 0, 0};
    static const uint8_t long_len[] = {0, 0, 0, 50, '{', '}'};
    proto_svc_t *s = NULL;
    uint8_t buf[256];
    size_t n;
    (void)state;

    assert_int_equal(proto_svc_new(&svc_desc, &s), 0);
    assert_int_equal(
        svc_refused(s, short_payload, sizeof short_payload, "", "shorter than its 4-byte"), 2);
    assert_int_equal(svc_refused(s, long_len, sizeof long_len, "",
                                 "JSON length out of range (no raw bytes follow demo requests)"),
                     2);
    n = svc_frame(buf, "{\"op\":\"ping\"}");
    buf[n] = 'x'; /* raw bytes after the JSON */
    assert_int_equal(svc_refused(s, buf, n + 1, "", "out of range"), 2);
    n = svc_frame(buf,
                  "{\"op\":\"get\",\"key\":\"0123456789012345678901234567890123456789012345\"}");
    assert_int_equal(svc_refused(s, buf, n, "", "out of range"), 2); /* over max_json (64) */
    assert_int_equal(svc_refused(s, buf, svc_frame(buf, "[1]"), "", "not an object"), 2);
    assert_int_equal(svc_refused(s, buf, svc_frame(buf, "{\"op\":"), "", "not an object"), 2);
    assert_int_equal(svc_refused(s, buf, svc_frame(buf, "{\"op\":\"ping\",\"op\":\"get\"}"), "",
                                 "not an object"),
                     2);
    assert_int_equal(svc_refused(s, buf, svc_frame(buf, "{\"op\":\"delete\"}"), "op",
                                 "op: unknown operation 'delete'"),
                     2);
    assert_int_equal(
        svc_refused(s, buf, svc_frame(buf, "{\"key\":\"a\"}"), "op", "op: unknown operation ''"),
        2);
    /* an unknown key: refused by name, the op known (counted under it) */
    assert_int_equal(svc_refused(s, buf, svc_frame(buf, "{\"op\":\"get\",\"x\":1}"), "x",
                                 "x: unknown field for get"),
                     0);
    assert_int_equal(svc_refused(s, buf, svc_frame(buf, "{\"op\":\"ping\",\"key\":\"a\"}"), "key",
                                 "key: unknown field for ping"),
                     1);
    proto_svc_free(s);
}

static void
test_proto_svc_counts_by_op_and_status_and_frames_answers(void **state)
{
    proto_svc_t *s = NULL;
    met_counter_t *extra = NULL;
    char text[8192];
    uint8_t *buf = NULL;
    size_t n, len = 0;
    (void)state;

    assert_int_equal(proto_svc_new(&svc_desc, &s), 0);
    assert_int_equal(
        met_counter_register(proto_svc_registry(s), "demo_extra_total", "Extra.", &extra), 0);
    met_counter_inc(extra);
    assert_int_equal(
        proto_svc_frame_ok(s, 0, json_pack("{s:s,s:s}", "z", "1", "a", "2"), &buf, &len), 0);
    assert_int_equal(len, 4 + strlen("{\"z\":\"1\",\"a\":\"2\"}"));
    assert_memory_equal(buf, "\0\0\0\x11{\"z\":\"1\",\"a\":\"2\"}", len); /* insertion order */
    free(buf);
    proto_svc_count(s, 0, 404);
    proto_svc_count(s, 0, 404);
    proto_svc_count(s, 1, 418);
    proto_svc_count(s, 2, 400);
    proto_svc_count(s, 99, 503);
    n = proto_svc_metrics(s, text, sizeof text - 1);
    assert_true(n > 0);
    text[n] = '\0';
    assert_non_null(
        strstr(text, "# HELP demo_requests_total Demo protocol requests by op and status."));
    assert_non_null(strstr(text, "demo_requests_total{op=\"get\",status=\"200\"} 1\n"));
    assert_non_null(strstr(text, "demo_requests_total{op=\"get\",status=\"404\"} 2\n"));
    assert_non_null(strstr(text, "demo_requests_total{op=\"ping\",status=\"other\"} 1\n"));
    assert_non_null(strstr(text, "demo_requests_total{op=\"invalid\",status=\"400\"} 1\n"));
    assert_non_null(strstr(text, "demo_requests_total{op=\"invalid\",status=\"503\"} 1\n"));
    assert_non_null(strstr(text, "demo_requests_total{op=\"ping\",status=\"507\"} 0\n"));
    assert_non_null(strstr(text, "demo_extra_total 1\n"));
    assert_int_equal(proto_svc_metrics(s, text, 16), 0); /* does not fit */
    proto_svc_free(s);
}

/* A service whose requests carry raw bytes, with its own frame message and statuses. */
static void
test_proto_svc_raw_bytes_own_message_and_own_statuses(void **state)
{
    static const uint16_t mine[] = {200, 413};
    proto_svc_desc_t d = svc_desc;
    proto_svc_t *s = NULL;
    proto_svc_fail_t fail;
    proto_svc_req_t in;
    uint8_t buf[128];
    char text[8192];
    size_t n;
    (void)state;

    d.raw_follows = true;
    d.statuses = mine;
    d.n_statuses = 2;
    assert_int_equal(proto_svc_new(&d, &s), 0);
    n = svc_frame(buf, "{\"op\":\"ping\"}");
    memcpy(buf + n, "xyz", 3);
    assert_int_equal(proto_svc_parse(s, buf, n + 3, &in, &fail), 0);
    assert_int_equal(in.raw_len, 3);
    assert_memory_equal(in.raw, "xyz", 3);
    json_decref(in.o);
    buf[3] = 40; /* longer than the payload */
    assert_int_equal(proto_svc_parse(s, buf, n + 3, &in, &fail), RON_EJSON);
    assert_string_equal(fail.message,
                        "JSON length out of range"); /* raw may follow: no "(no raw" */
    proto_svc_count(s, 1, 413);
    proto_svc_count(s, 1, 404);
    n = proto_svc_metrics(s, text, sizeof text - 1);
    text[n] = '\0';
    assert_non_null(strstr(text, "demo_requests_total{op=\"ping\",status=\"413\"} 1\n"));
    assert_non_null(strstr(text, "demo_requests_total{op=\"ping\",status=\"other\"} 1\n"));
    assert_null(strstr(text, "status=\"404\""));
    proto_svc_free(s);

    d.raw_follows = false;
    d.frame_message = "payload is not a 4-byte JSON length and that much JSON";
    assert_int_equal(proto_svc_new(&d, &s), 0);
    assert_int_equal(svc_refused(s, buf, 2, "", d.frame_message), 2);
    assert_int_equal(svc_refused(s, buf, n + 3, "", d.frame_message), 2);
    proto_svc_free(s);
}

static void
test_proto_svc_get_text_and_rc_table(void **state)
{
    static const proto_svc_rc_t map[] = {{RON_EJSON, 400, "record", 0},
                                         {RON_EINVAL, 507, NULL, 1000}};
    json_t *o = json_loads("{\"a\":\"abc\",\"n\":1,\"z\":\"a\\u0000b\"}", JSON_ALLOW_NUL, NULL);
    char out[4];
    (void)state;

    assert_non_null(o);
    assert_int_equal(proto_svc_get_text(o, "a", out, sizeof out), 1);
    assert_string_equal(out, "abc");
    assert_int_equal(proto_svc_get_text(o, "a", out, 3), -1); /* too long */
    assert_int_equal(proto_svc_get_text(o, "n", out, sizeof out), -1);
    assert_int_equal(proto_svc_get_text(o, "z", out, sizeof out), -1); /* a NUL inside */
    assert_int_equal(proto_svc_get_text(o, "missing", out, sizeof out), 0);
    json_decref(o);
    assert_int_equal(proto_svc_rc_find(map, 2, RON_EINVAL)->code, 507);
    assert_int_equal(proto_svc_rc_find(map, 2, RON_EINVAL)->retry_after_ms, 1000);
    assert_string_equal(proto_svc_rc_find(map, 2, RON_EJSON)->reason, "record");
    assert_null(proto_svc_rc_find(map, 2, RON_ENOTFOUND));
}

static void
test_proto_svc_refuses_a_bad_op_table(void **state)
{
    static const proto_svc_op_t unnamed[] = {{NULL, NULL}};
    proto_svc_desc_t d = svc_desc;
    proto_svc_t *s = NULL;
    (void)state;

    d.n_ops = 0;
    assert_int_equal(proto_svc_new(&d, &s), RON_EINVAL);
    d.n_ops = PROTO_SVC_MAX_OPS + 1;
    assert_int_equal(proto_svc_new(&d, &s), RON_EINVAL);
    d.ops = unnamed;
    d.n_ops = 1;
    assert_int_equal(proto_svc_new(&d, &s), RON_EINVAL);
    d = svc_desc;
    d.statuses = (const uint16_t[]){200};
    d.n_statuses = PROTO_SVC_MAX_STATUSES + 1;
    assert_int_equal(proto_svc_new(&d, &s), RON_EINVAL);
    assert_null(s);
    proto_svc_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_status_table_matches_spec),
        cmocka_unit_test(test_proto_slug_maps_back_to_status),
        cmocka_unit_test(test_proto_error_encodes_in_spec_order_with_u64_as_string),
        cmocka_unit_test(test_proto_error_write_matches_encode_without_allocating),
        cmocka_unit_test(test_proto_error_write_cuts_only_the_message_to_fit_and_stays_valid),
        cmocka_unit_test(test_proto_error_write_replaces_invalid_utf8_and_decodes),
        cmocka_unit_test(test_proto_error_decodes_and_round_trips),
        cmocka_unit_test(test_proto_error_rejects_bad_fields_by_name),
        cmocka_unit_test(test_proto_error_rejects_oversized_message),
        cmocka_unit_test(test_proto_hello_ignores_unknown_keys_but_checks_known_ones),
        cmocka_unit_test(test_proto_hello_encodes_canonically),
        cmocka_unit_test(test_proto_hello_reply_round_trips_and_requires_fields),
        cmocka_unit_test(test_proto_start_keeps_args_and_checks_them_strictly),
        cmocka_unit_test(test_proto_start_encodes_with_sorted_keys),
        cmocka_unit_test(test_proto_meta_round_trips_and_rejects_unknown),
        cmocka_unit_test(test_proto_credit_round_trips_and_bounds_frames),
        cmocka_unit_test(test_proto_decoders_accept_unterminated_input),
        cmocka_unit_test(test_proto_hello_lists_are_bounded_and_typed),
        cmocka_unit_test(test_proto_error_init_falls_back_to_internal_and_truncates),
        cmocka_unit_test(test_proto_rejects_documents_over_the_size_limit),
        cmocka_unit_test(test_proto_json_unframe_reads_only_an_exact_frame_of_an_object),
        cmocka_unit_test(test_proto_svc_parse_accepts_known_ops_with_their_fields),
        cmocka_unit_test(test_proto_svc_parse_refuses_bad_frames_naming_the_field),
        cmocka_unit_test(test_proto_svc_counts_by_op_and_status_and_frames_answers),
        cmocka_unit_test(test_proto_svc_raw_bytes_own_message_and_own_statuses),
        cmocka_unit_test(test_proto_svc_get_text_and_rc_table),
        cmocka_unit_test(test_proto_svc_refuses_a_bad_op_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
