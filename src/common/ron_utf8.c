/*
 * ron_utf8.c - bounded UTF-8 sequence checks.
 */
#include "ron_utf8.h"

static bool
is_cont(uint8_t c)
{
    return (c & 0xc0) == 0x80;
}

size_t
ron_utf8_seq_len(const uint8_t *s, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && is_cont(s[1]) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        /* E0 needs A0..BF (no overlong), ED needs 80..9F (no surrogate). */
        uint8_t lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        if (n < 3 || s[1] < lo || s[1] > hi || !is_cont(s[2]))
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        /* F0 needs 90..BF (no overlong), F4 needs 80..8F (<= U+10FFFF). */
        uint8_t lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        if (n < 4 || s[1] < lo || s[1] > hi || !is_cont(s[2]) || !is_cont(s[3]))
            return 0;
        return 4;
    }
    return 0;
}

bool
ron_utf8_valid(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = ron_utf8_seq_len(p + i, n - i);
        if (k == 0 || p[i] == 0)
            return false;
        i += k;
    }
    return true;
}
