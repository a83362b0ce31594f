/*
 * fuzz_gw_range.c - libFuzzer target for the gateway's header parsers. The
 * first 8 bytes are the representation size (little endian, low 24 bits kept
 * so ranges land inside it often), the rest the header value, given to
 * gw_range_parse, gw_etag_match, gw_if_range_ok and gw_sniff. Checks: the
 * ranges written are sorted, disjoint, not touching, inside the size and at
 * most GW_MAX_RANGES; the multipart length is their bytes plus framing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svc_gateway.h"

static void
check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t len = 0;
    gw_range_t r[GW_MAX_RANGES];
    size_t n = 99;
    char *s;

    if (size < 8)
        return 0;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)data[i] << (8 * i);
    if (data[7] & 0x80)
        len &= 0xFFFFFF;
    s = malloc(size - 8 + 1);
    check(s != NULL);
    memcpy(s, data + 8, size - 8);
    s[size - 8] = '\0';

    gw_range_result_t res = gw_range_parse(s, len, r, &n);
    if (res == GW_RANGE_PARTIAL) {
        uint64_t bytes = 0;
        check(n >= 1 && n <= GW_MAX_RANGES);
        for (size_t i = 0; i < n; i++) {
            check(r[i].first <= r[i].last && r[i].last < len);
            if (i > 0)
                check(r[i].first > r[i - 1].last + 1);
            bytes += r[i].last - r[i].first + 1;
        }
        check(bytes <= len);
        check(gw_multipart_length(r, n, "0123456789abcdef01234567", "text/plain", len) > bytes);
    } else {
        check(n == 0);
    }
    (void)gw_etag_match(s, "\"b3:0123\"");
    (void)gw_if_range_ok(s, "\"b3:0123\"");
    (void)gw_sniff(data + 8, size - 8, (data[0] & 1) != 0);
    free(s);
    return 0;
}
