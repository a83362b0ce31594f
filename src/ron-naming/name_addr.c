/*
 * name_addr.c - "b3:<hex>" addresses and routing prefixes.
 * Pure functions over caller buffers. Invariants: only lowercase hex is
 * accepted (one spelling per object); every rejection names the byte offset
 * and character at fault.
 */
#include <stdio.h>
#include <string.h>

#include "name_internal.h"
#include "ron_err.h"

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parse "b3:" + digits; max_digits 64; exact: require exactly 64. */
static int
addr_digits(const char *s, size_t len, bool exact, uint8_t out[static NAME_ADDR_LEN],
            size_t *ndigits_out, name_err_t *err)
{
    size_t n;

    if (len < 3 || memcmp(s, "b3:", 3) != 0) {
        if (len >= 3 && (s[0] == 'b' || s[0] == 'B') && s[1] == '3' && s[2] == ':')
            return name__err(err, RON_EADDR, -1, 0,
                             "address must start with lowercase \"b3:\", not \"B3:\"");
        return name__err(err, RON_EADDR, -1, 0,
                         "address must start with \"b3:\" followed by 64 lowercase hex digits");
    }
    memset(out, 0, NAME_ADDR_LEN);
    n = len - 3;
    for (size_t i = 0; i < n && i < 2 * NAME_ADDR_LEN; i++) {
        char c = s[3 + i];
        int v = hexval(c);
        if (v < 0) {
            char shown[8];
            name__char_show(c, shown, sizeof shown);
            if (c >= 'A' && c <= 'F')
                return name__err(err, RON_EADDR, -1, (long)(3 + i),
                                 "uppercase hex digit %s at offset %zu: addresses are lowercase",
                                 shown, 3 + i);
            return name__err(err, RON_EADDR, -1, (long)(3 + i),
                             "character %s at offset %zu is not a lowercase hex digit", shown,
                             3 + i);
        }
        out[i / 2] |= (uint8_t)(i % 2 == 0 ? v << 4 : v);
    }
    if (n > 2 * NAME_ADDR_LEN)
        return name__err(err, RON_EADDR, -1, (long)(3 + 2 * NAME_ADDR_LEN),
                         "address has %zu hex digits after \"b3:\"; expected %s64", n,
                         exact ? "" : "at most ");
    if (n == 0 || (exact && n != 2 * NAME_ADDR_LEN))
        return name__err(err, RON_EADDR, -1, (long)len,
                         "address has %zu hex digits after \"b3:\"; expected %s64", n,
                         exact ? "" : "1 to ");
    *ndigits_out = n;
    return 0;
}

int
name_addr_parse(name_addr_t *addr_out, const char *s, size_t len, name_err_t *err)
{
    size_t n;
    return addr_digits(s, len, true, addr_out->b, &n, err);
}

void
name_addr_format(const name_addr_t *addr, char out[static NAME_ADDR_TEXT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "b3:", 3);
    for (size_t i = 0; i < NAME_ADDR_LEN; i++) {
        out[3 + 2 * i] = hex[addr->b[i] >> 4];
        out[4 + 2 * i] = hex[addr->b[i] & 15];
    }
    out[NAME_ADDR_TEXT_LEN] = '\0';
}

int
name_addr_prefix_parse(name_addr_prefix_t *prefix_out, const char *s, size_t len, name_err_t *err)
{
    size_t n = 0;
    int rc = addr_digits(s, len, false, prefix_out->b, &n, err);
    if (rc == 0)
        prefix_out->nibbles = (uint8_t)n;
    return rc;
}

bool
name_addr_prefix_matches(const name_addr_prefix_t *prefix, const name_addr_t *addr)
{
    size_t full = prefix->nibbles / 2;
    if (memcmp(prefix->b, addr->b, full) != 0)
        return false;
    if (prefix->nibbles % 2 == 1)
        return (prefix->b[full] & 0xf0) == (addr->b[full] & 0xf0);
    return true;
}
