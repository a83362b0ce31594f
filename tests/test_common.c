/*
 * test_common.c - shared plumbing (errors, cursors, hex, decimal, logging)
 * and the BLAKE3 build checked against b3sum.
 */
#include <errno.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <blake3.h>

#include "ron_bytes.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_utf8.h"
#include "ron_util.h"

static void
test_strerror_names_project_and_system_codes(void **state)
{
    (void)state;
    assert_string_equal(ron_errname(RON_EPROTO), "RON_EPROTO");
    assert_string_equal(ron_strerror(RON_EBOMB), "decompressed size exceeds its bound");
    assert_string_equal(ron_errname(-2), "ENOENT");
    assert_string_equal(ron_strerror(-99999), "unknown error");
}

static void
test_cursor_refuses_reads_past_the_end(void **state)
{
    (void)state;
    const uint8_t buf[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
    ron_rd_t r = {buf, sizeof buf};
    uint32_t v32;
    uint16_t v16;
    uint64_t v64;
    assert_int_equal(ron_rd_u32be(&r, &v32), 0);
    assert_int_equal(v32, 0x01020304);
    assert_int_equal(ron_rd_u64be(&r, &v64), RON_EAGAIN);
    assert_int_equal(r.left, 3);
    assert_int_equal(ron_rd_u16be(&r, &v16), 0);
    assert_int_equal(v16, 0x0506);
    assert_int_equal(ron_rd_u16be(&r, &v16), RON_EAGAIN);
}

static void
test_big_endian_round_trips_extremes(void **state)
{
    (void)state;
    uint8_t b[8];
    ron_put_u64be(b, 0xfedcba9876543210ULL);
    assert_int_equal(b[0], 0xfe);
    assert_int_equal(b[7], 0x10);
    assert_true(ron_get_u64be(b) == 0xfedcba9876543210ULL);
    ron_put_u16be(b, 0xffff);
    assert_int_equal(ron_get_u16be(b), 0xffff);
}

static void
test_hex_decode_rejects_bad_digits_and_lengths(void **state)
{
    (void)state;
    uint8_t out[2];
    char hex[5];
    assert_int_equal(ron_hex_decode(out, 2, "aBc9", 4), 0);
    assert_int_equal(out[0], 0xab);
    ron_hex_encode(hex, out, 2);
    assert_string_equal(hex, "abc9");
    assert_int_equal(ron_hex_decode(out, 2, "abg9", 4), RON_EINVAL);
    assert_int_equal(ron_hex_decode(out, 2, "abc", 3), RON_EINVAL);
}

static void
test_parse_u64_accepts_max_and_rejects_overflow(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(ron_parse_u64("18446744073709551615", 20, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(ron_parse_u64("18446744073709551616", 20, &v), RON_EINVAL);
    assert_int_equal(ron_parse_u64("", 0, &v), RON_EINVAL);
    assert_int_equal(ron_parse_u64("-1", 2, &v), RON_EINVAL);
    assert_int_equal(ron_parse_u64("+1", 2, &v), RON_EINVAL);
}

static void
test_json_escape_quotes_controls_and_truncates(void **state)
{
    (void)state;
    char out[64];
    ron_json_escape(out, sizeof out, "a\"b\\c\n\x01");
    assert_string_equal(out, "a\\\"b\\\\c\\n\\u0001");
    ron_json_escape(out, 4, "abcdef");
    assert_string_equal(out, "abc");
}

static void
test_rand_below_stays_in_bounds(void **state)
{
    (void)state;
    int seen[4] = {0};
    for (int i = 0; i < 1000; i++) {
        uint64_t v = ron_rand_below(4);
        assert_true(v < 4);
        seen[v]++;
    }
    for (int i = 0; i < 4; i++)
        assert_true(seen[i] > 0);
}

static void
test_utf8_rejects_overlongs_surrogates_and_truncation(void **state)
{
    (void)state;
    const struct {
        const char *s;
        size_t n;
        bool ok;
    } cases[] = {
        {"plain ascii", 11, true},
        {"\xc3\xa9t\xc3\xa9", 5, true},           /* é t é */
        {"\xe2\x82\xac", 3, true},                 /* euro sign */
        {"\xf0\x9f\x92\xa9", 4, true},             /* U+1F4A9 */
        {"\xf4\x8f\xbf\xbf", 4, true},             /* U+10FFFF, the last code point */
        {"\xc0\xaf", 2, false},                     /* overlong '/' */
        {"\xe0\x80\xaf", 3, false},                /* overlong, three bytes */
        {"\xf0\x80\x80\xaf", 4, false},            /* overlong, four bytes */
        {"\xed\xa0\x80", 3, false},                /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, false},            /* above U+10FFFF */
        {"\xe2\x82", 2, false},                     /* truncated */
        {"\x80", 1, false},                          /* stray continuation */
        {"a\0b", 3, false},                          /* embedded NUL */
    };
    for (size_t i = 0; i < RON_ARRAY_LEN(cases); i++)
        if (ron_utf8_valid(cases[i].s, cases[i].n) != cases[i].ok)
            fail_msg("case %zu: expected %s", i, cases[i].ok ? "valid" : "invalid");
    /* the bound is respected: a valid 3-byte sequence seen through 2 bytes is invalid */
    assert_int_equal(ron_utf8_seq_len((const uint8_t *)"\xe2\x82\xac", 2), 0);
    assert_int_equal(ron_utf8_seq_len((const uint8_t *)"\xe2\x82\xac", 3), 3);
}

static void
test_mkdir_p_creates_private_nested_dirs_and_fsync_dir_reports_errors(void **state)
{
    (void)state;
    char base[] = "/tmp/ron_fs_XXXXXX", path[256];
    struct stat st;
    assert_non_null(mkdtemp(base));
    snprintf(path, sizeof path, "%s/a/b/c", base);
    assert_int_equal(ron_mkdir_p(path), 0);
    assert_int_equal(ron_mkdir_p(path), 0); /* existing: fine */
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(ron_fsync_dir(path), 0);
    snprintf(path, sizeof path, "%s/missing", base);
    assert_int_equal(ron_fsync_dir(path), -ENOENT);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    assert_int_equal(system(cmd), 0);
}

/* Hash len bytes of a fixed pattern with our BLAKE3 build and with b3sum. */
static void
check_blake3_against_b3sum(size_t len)
{
    uint8_t *data = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 31 + (i >> 13));
    char path[] = "/tmp/ron_b3_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);

    blake3_hasher h;
    uint8_t out[32];
    char ours[65], cmd[256], theirs[80] = {0};
    blake3_hasher_init(&h);
    /* Feed in uneven pieces so the incremental path is what we compare. */
    for (size_t off = 0; off < len;) {
        size_t n = RON_MIN(len - off, (size_t)7777);
        blake3_hasher_update(&h, data + off, n);
        off += n;
    }
    blake3_hasher_finalize(&h, out, sizeof out);
    ron_hex_encode(ours, out, 32);

    snprintf(cmd, sizeof cmd, "b3sum --no-names %s", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(theirs, sizeof theirs, p));
    assert_int_equal(pclose(p), 0);
    unlink(path);
    free(data);
    theirs[64] = '\0';
    if (strcmp(ours, theirs) != 0)
        fail_msg("BLAKE3 mismatch at %zu bytes: ours %s b3sum %s", len, ours, theirs);
}

static void
test_blake3_matches_b3sum(void **state)
{
    (void)state;
    const size_t sizes[] = {0,          1,          1023,           1024,           1025,
                            65535,      65536,      65537,          3 * 1048576 + 17,
                            8 * 1048576};
    for (size_t i = 0; i < RON_ARRAY_LEN(sizes); i++)
        check_blake3_against_b3sum(sizes[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_names_project_and_system_codes),
        cmocka_unit_test(test_cursor_refuses_reads_past_the_end),
        cmocka_unit_test(test_big_endian_round_trips_extremes),
        cmocka_unit_test(test_hex_decode_rejects_bad_digits_and_lengths),
        cmocka_unit_test(test_parse_u64_accepts_max_and_rejects_overflow),
        cmocka_unit_test(test_json_escape_quotes_controls_and_truncates),
        cmocka_unit_test(test_rand_below_stays_in_bounds),
        cmocka_unit_test(test_utf8_rejects_overlongs_surrogates_and_truncation),
        cmocka_unit_test(test_mkdir_p_creates_private_nested_dirs_and_fsync_dir_reports_errors),
        cmocka_unit_test(test_blake3_matches_b3sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
