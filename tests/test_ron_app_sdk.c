/*
 * test_ron_app_sdk.c - unit tests of libron's pure parts: node address,
 * byte range and content address parsing, the retry backoff schedule, how
 * the node, data dir and capability are found, idempotency keys, option
 * checks, and the bounded retry loop against a port nobody listens on.
 * Transfers against a real node are tested by
 * tests/integration/test_cli_content.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <netinet/in.h>

#include "libron.h"
#include "ron_err.h"
#include "ron_util.h"

static void
test_node_parse_accepts_host_port_ipv6_and_id(void **state)
{
    ron_client_node_t n;
    char s[160];
    (void)state;

    assert_int_equal(ron_client_node_parse("127.0.0.1:9090", &n), 0);
    assert_string_equal(n.host, "127.0.0.1");
    assert_int_equal(n.port, 9090);
    assert_false(n.has_id);
    assert_int_equal(ron_client_node_parse("[::1]:1", &n), 0);
    assert_string_equal(n.host, "::1");
    assert_int_equal(n.port, 1);
    assert_int_equal(ron_client_node_parse("node.example:65535", &n), 0);
    assert_string_equal(n.host, "node.example");
    snprintf(s, sizeof s, "%s@localhost:9090",
             "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF");
    assert_int_equal(ron_client_node_parse(s, &n), 0);
    assert_true(n.has_id);
    assert_int_equal(n.id[0], 0x00);
    assert_int_equal(n.id[1], 0x11);
    assert_int_equal(n.id[31], 0xff);
    assert_string_equal(n.host, "localhost");
}

static void
test_node_parse_rejects_malformed_addresses(void **state)
{
    static const char *bad[] = {
        "", "127.0.0.1", "127.0.0.1:", ":9090", "127.0.0.1:0", "127.0.0.1:65536",
        "127.0.0.1:90x", "::1:9090", "[::1]9090", "[127.0.0.1]:9090", "[::1:9090",
        "abcd@127.0.0.1:9090", "host name:9090", "127.0.0.1:-1", "127.0.0.1:+80",
        "0011223344556677889900112233445566778899001122334455667788990011@h:1x",
    };
    ron_client_node_t n;
    (void)state;

    for (size_t i = 0; i < RON_ARRAY_LEN(bad); i++)
        assert_int_equal(ron_client_node_parse(bad[i], &n), RON_EINVAL);
    assert_int_equal(ron_client_node_parse(NULL, &n), RON_EINVAL);
}

static void
test_range_parse_is_inclusive_and_open_ended(void **state)
{
    uint64_t off, len;
    (void)state;

    assert_int_equal(ron_client_range_parse("0-65535", &off, &len), 0);
    assert_true(off == 0 && len == 65536);
    assert_int_equal(ron_client_range_parse("65536-65536", &off, &len), 0);
    assert_true(off == 65536 && len == 1);
    assert_int_equal(ron_client_range_parse("131072-", &off, &len), 0);
    assert_true(off == 131072 && len == RON_CLIENT_TO_END);
    assert_int_equal(ron_client_range_parse("18446744073709551614-18446744073709551614", &off,
                                            &len), 0);
    assert_true(len == 1);
}

static void
test_range_parse_rejects_reversed_empty_and_junk(void **state)
{
    static const char *bad[] = {"", "-", "-5", "5", "10-5", "a-b", "1-2-3", " 1-2", "1- 2",
                                "1-18446744073709551616", "0-18446744073709551615", "+1-2"};
    uint64_t off, len;
    (void)state;

    for (size_t i = 0; i < RON_ARRAY_LEN(bad); i++)
        assert_int_equal(ron_client_range_parse(bad[i], &off, &len), RON_EINVAL);
}

static void
test_addr_check_wants_lowercase_b3_hex_of_64_digits(void **state)
{
    char a[80];
    (void)state;

    memset(a, 'a', sizeof a);
    memcpy(a, "b3:", 3);
    a[67] = '\0';
    assert_int_equal(ron_client_addr_check(a), 0);
    a[10] = 'A';
    assert_int_equal(ron_client_addr_check(a), RON_EADDR);
    a[10] = 'g';
    assert_int_equal(ron_client_addr_check(a), RON_EADDR);
    a[10] = 'a';
    a[66] = '\0';
    assert_int_equal(ron_client_addr_check(a), RON_EADDR);
    a[66] = 'a';
    a[0] = 'B';
    assert_int_equal(ron_client_addr_check(a), RON_EADDR);
    assert_int_equal(ron_client_addr_check(NULL), RON_EADDR);
    assert_int_equal(ron_client_addr_check("b3:"), RON_EADDR);
}

static void
test_backoff_is_full_jitter_exponential_capped_and_honours_retry_after(void **state)
{
    (void)state;
    /* r = 0 gives 0 (full jitter starts at zero) */
    assert_int_equal(ron_client_backoff_ms(0, 0, 0), 0);
    /* the ceiling doubles per attempt: r = ceiling gives the ceiling */
    assert_int_equal(ron_client_backoff_ms(0, 0, 100), 100);
    assert_int_equal(ron_client_backoff_ms(1, 0, 200), 200);
    assert_int_equal(ron_client_backoff_ms(2, 0, 400), 400);
    /* never above the ceiling: r wraps modulo ceiling + 1 */
    assert_int_equal(ron_client_backoff_ms(0, 0, 101), 0);
    for (uint64_t r = 0; r < 5000; r += 37)
        assert_true(ron_client_backoff_ms(3, 0, r * 7919) <= 800);
    /* capped at RON_CLIENT_BACKOFF_MAX_MS, even for huge attempt numbers */
    assert_int_equal(ron_client_backoff_ms(10, 0, RON_CLIENT_BACKOFF_MAX_MS),
                     RON_CLIENT_BACKOFF_MAX_MS);
    assert_true(ron_client_backoff_ms(200, 0, UINT64_MAX) <= RON_CLIENT_BACKOFF_MAX_MS);
    /* the node's retry_after_ms is a floor, itself capped */
    assert_int_equal(ron_client_backoff_ms(0, 1500, 3), 1500);
    assert_int_equal(ron_client_backoff_ms(0, UINT32_MAX, 3), RON_CLIENT_RETRY_AFTER_MAX_MS);
}

static void
test_node_find_prefers_flag_then_env_then_default(void **state)
{
    (void)state;
    unsetenv("RON_NODE");
    assert_string_equal(ron_client_node_find(NULL), "127.0.0.1:9090");
    setenv("RON_NODE", "", 1);
    assert_string_equal(ron_client_node_find(NULL), "127.0.0.1:9090");
    setenv("RON_NODE", "10.0.0.1:1", 1);
    assert_string_equal(ron_client_node_find(NULL), "10.0.0.1:1");
    assert_string_equal(ron_client_node_find("[::1]:2"), "[::1]:2");
    unsetenv("RON_NODE");
}

static void
test_data_dir_follows_flag_env_xdg_home(void **state)
{
    char out[RON_CLIENT_MAX_PATH];
    (void)state;

    setenv("RON_DATA_DIR", "/r", 1);
    setenv("XDG_DATA_HOME", "/x", 1);
    setenv("HOME", "/h", 1);
    assert_int_equal(ron_client_data_dir("/f", out, sizeof out), 0);
    assert_string_equal(out, "/f");
    assert_int_equal(ron_client_data_dir(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/r");
    unsetenv("RON_DATA_DIR");
    assert_int_equal(ron_client_data_dir(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/x/ron");
    unsetenv("XDG_DATA_HOME");
    assert_int_equal(ron_client_data_dir(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/h/.local/share/ron");
    unsetenv("HOME");
    assert_int_equal(ron_client_data_dir(NULL, out, sizeof out), RON_EINVAL);
    assert_int_equal(ron_client_data_dir("", out, sizeof out), RON_EINVAL);
    assert_int_equal(ron_client_data_dir("/a/long/path", out, 5), RON_ETOOBIG);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    chmod(path, mode);
}

static void
test_cap_find_prefers_flag_then_env_then_operator_cap_file(void **state)
{
    char dir[] = "/tmp/libron-test-XXXXXX", path[128];
    char *cap = NULL;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/operator.cap", dir);
    unsetenv("RON_CAP");
    /* no file, no env, no flag: no capability, not an error */
    assert_int_equal(ron_client_cap_find(NULL, dir, &cap), 0);
    assert_null(cap);
    write_file(path, "filetoken\n", 0600);
    assert_int_equal(ron_client_cap_find(NULL, dir, &cap), 0);
    assert_string_equal(cap, "filetoken");
    free(cap);
    assert_int_equal(ron_client_cap_find(NULL, NULL, &cap), 0);
    assert_null(cap);
    setenv("RON_CAP", "envtoken", 1);
    assert_int_equal(ron_client_cap_find(NULL, dir, &cap), 0);
    assert_string_equal(cap, "envtoken");
    free(cap);
    assert_int_equal(ron_client_cap_find("flagtoken", dir, &cap), 0);
    assert_string_equal(cap, "flagtoken");
    free(cap);
    unsetenv("RON_CAP");
    /* an unreadable file is skipped (unless we are root, who reads anything) */
    chmod(path, 0);
    assert_int_equal(ron_client_cap_find(NULL, dir, &cap), 0);
    if (geteuid() != 0)
        assert_null(cap);
    free(cap);
    unlink(path);
    rmdir(dir);
}

static void
test_cap_find_refuses_oversized_tokens(void **state)
{
    char *big = malloc(RON_CLIENT_MAX_CAP + 2), *cap = NULL;
    (void)state;

    memset(big, 'x', RON_CLIENT_MAX_CAP + 1);
    big[RON_CLIENT_MAX_CAP + 1] = '\0';
    assert_int_equal(ron_client_cap_find(big, NULL, &cap), RON_ETOOBIG);
    assert_null(cap);
    free(big);
}

static void
test_idem_keys_are_32_hex_and_differ(void **state)
{
    char a[RON_CLIENT_IDEM_LEN + 1], b[RON_CLIENT_IDEM_LEN + 1];
    (void)state;

    ron_client_idem_new(a);
    ron_client_idem_new(b);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
}

static void
test_client_new_checks_node_retries_and_cap(void **state)
{
    ron_client_opts_t o = {0};
    ron_client_t *c = NULL;
    char *big;
    (void)state;

    o.node = "nonsense";
    assert_int_equal(ron_client_new(&o, &c), RON_EINVAL);
    o.node = "127.0.0.1:1";
    o.max_retries = RON_CLIENT_RETRIES_LIMIT + 1;
    assert_int_equal(ron_client_new(&o, &c), RON_EINVAL);
    o.max_retries = 0;
    big = malloc(RON_CLIENT_MAX_CAP + 2);
    memset(big, 'c', RON_CLIENT_MAX_CAP + 1);
    big[RON_CLIENT_MAX_CAP + 1] = '\0';
    o.cap = big;
    assert_int_equal(ron_client_new(&o, &c), RON_ETOOBIG);
    free(big);
    o.cap = "token";
    assert_int_equal(ron_client_new(&o, &c), 0);
    ron_client_free(c);
    ron_client_free(NULL);
    assert_int_equal(ron_client_new(NULL, &c), 0);
    ron_client_free(c);
}

/* A port nobody listens on: bind, read the port, close. */
static uint16_t
closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void
test_node_down_fails_after_bounded_retries(void **state)
{
    ron_client_opts_t o = {0};
    ron_client_t *c;
    ron_client_stat_t st;
    char node[64], addr[RON_CLIENT_ADDR_LEN + 1];
    uint64_t t0;
    (void)state;

    snprintf(node, sizeof node, "127.0.0.1:%u", (unsigned)closed_port());
    o.node = node;
    o.max_retries = 3;
    assert_int_equal(ron_client_new(&o, &c), 0);
    memset(addr, 'a', sizeof addr);
    memcpy(addr, "b3:", 3);
    addr[RON_CLIENT_ADDR_LEN] = '\0';
    t0 = ron_now_ms();
    assert_int_equal(ron_client_stat(c, addr, &st), -ECONNREFUSED);
    /* 3 retries: at most 100 + 200 + 400 ms of backoff */
    assert_true(ron_now_ms() - t0 < 3000);
    assert_int_equal(ron_client_last_error(c)->attempts, 4);
    assert_int_equal(ron_client_last_error(c)->status, 0);
    /* a malformed address never reaches the network */
    assert_int_equal(ron_client_stat(c, "b3:zz", &st), RON_EADDR);
    assert_int_equal(ron_client_last_error(c)->rc, RON_EADDR);
    ron_client_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_parse_accepts_host_port_ipv6_and_id),
        cmocka_unit_test(test_node_parse_rejects_malformed_addresses),
        cmocka_unit_test(test_range_parse_is_inclusive_and_open_ended),
        cmocka_unit_test(test_range_parse_rejects_reversed_empty_and_junk),
        cmocka_unit_test(test_addr_check_wants_lowercase_b3_hex_of_64_digits),
        cmocka_unit_test(test_backoff_is_full_jitter_exponential_capped_and_honours_retry_after),
        cmocka_unit_test(test_node_find_prefers_flag_then_env_then_default),
        cmocka_unit_test(test_data_dir_follows_flag_env_xdg_home),
        cmocka_unit_test(test_cap_find_prefers_flag_then_env_then_operator_cap_file),
        cmocka_unit_test(test_cap_find_refuses_oversized_tokens),
        cmocka_unit_test(test_idem_keys_are_32_hex_and_differ),
        cmocka_unit_test(test_client_new_checks_node_retries_and_cap),
        cmocka_unit_test(test_node_down_fails_after_bounded_retries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
