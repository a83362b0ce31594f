/*
 * ron_util.c - allocation, clocks, hex and decimal helpers.
 */
#include "ron_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ron_err.h"

static void
ron_oom(size_t n)
{
    fprintf(stderr, "ron: out of memory allocating %zu bytes\n", n);
    abort();
}

void *
ron_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        ron_oom(n);
    return p;
}

void *
ron_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        ron_oom(n * size);
    return p;
}

void *
ron_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        ron_oom(n);
    return q;
}

char *
ron_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(ron_xmalloc(n), s, n);
}

uint64_t
ron_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
ron_now_ms(void)
{
    return ron_now_ns() / 1000000u;
}

int64_t
ron_unix_time(void)
{
    return (int64_t)time(NULL);
}

void
ron_hex_encode(char *out, const uint8_t *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int
ron_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
ron_hex_decode(uint8_t *out, size_t len, const char *hex, size_t hex_len)
{
    if (hex_len != 2 * len)
        return RON_EINVAL;
    for (size_t i = 0; i < len; i++) {
        int hi = ron_hex_digit(hex[2 * i]), lo = ron_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return RON_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int
ron_parse_u64(const char *s, size_t len, uint64_t *v_out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return RON_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return RON_EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return RON_EINVAL;
        v = v * 10 + d;
    }
    *v_out = v;
    return 0;
}

int
ron_random_bytes(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* xorshift64*: fast, per thread, good enough for jitter. */
uint64_t
ron_rand_below(uint64_t bound)
{
    static _Thread_local uint64_t state;
    while (state == 0)
        (void)ron_random_bytes(&state, sizeof state);
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (state * 0x2545F4914F6CDD1DULL) % bound;
}
