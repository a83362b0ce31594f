/*
 * gw_http.c - the gateway's HTTP semantics, sans I/O: Range evaluation
 * (RFC 9110 §14.1-14.4) with a bound on ranges and coalescing of
 * overlapping ones, multipart/byteranges framing (§14.6), If-None-Match and
 * If-Range against the object's strong ETag (§13.1), and content-type
 * sniffing from magic numbers for objects stored without a type. Pure
 * functions of their inputs: no allocation, no global state, thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ron_err.h"
#include "ron_utf8.h"
#include "svc_gateway.h"
#include "ron_util.h"

/* ---- Range ---- */

static const char *
gw_skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Parse 1*DIGIT at *pp, saturating at UINT64_MAX. Returns false when no digit. */
static bool
gw_digits(const char **pp, uint64_t *v_out)
{
    const char *p = *pp;
    uint64_t v = 0;

    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
        p++;
    }
    *pp = p;
    *v_out = v;
    return true;
}

static int
gw_range_cmp(const void *a, const void *b)
{
    const gw_range_t *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Sort by start and merge ranges that overlap or touch. Returns the new count. */
static size_t
gw_range_coalesce(gw_range_t *r, size_t n)
{
    size_t out = 0;

    qsort(r, n, sizeof r[0], gw_range_cmp);
    for (size_t i = 1; i < n; i++) {
        if (r[i].first <= r[out].last || r[i].first - r[out].last == 1) {
            if (r[i].last > r[out].last)
                r[out].last = r[i].last;
        } else {
            r[++out] = r[i];
        }
    }
    return out + 1;
}

gw_range_result_t
gw_range_parse(const char *value, uint64_t size, gw_range_t out[static GW_MAX_RANGES],
               size_t *n_out)
{
    const char *p;
    size_t n_spec = 0, n_sat = 0, n_elem = 0;

    *n_out = 0;
    if (value == NULL)
        return GW_RANGE_FULL;
    p = gw_skip_ows(value);
    if (strncasecmp(p, "bytes", 5) != 0)
        return GW_RANGE_FULL; /* another unit: ignored */
    p = gw_skip_ows(p + 5);
    if (*p != '=')
        return GW_RANGE_FULL;
    p++;
    for (;;) {
        uint64_t first = 0, last = 0;
        bool suffix = false, open = false;

        p = gw_skip_ows(p);
        if (*p == ',') { /* empty list element (RFC 9110 §5.6.1) */
            if (++n_elem > GW_MAX_RANGE_ELEMS)
                return GW_RANGE_FULL;
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        if (++n_elem > GW_MAX_RANGE_ELEMS || ++n_spec > GW_MAX_RANGES)
            return GW_RANGE_FULL;
        if (*p == '-') {
            p++;
            if (!gw_digits(&p, &last))
                return GW_RANGE_FULL;
            suffix = true;
            first = 0;
        } else {
            if (!gw_digits(&p, &first) || *p != '-')
                return GW_RANGE_FULL;
            p++;
            if (!gw_digits(&p, &last))
                open = true;
            else if (last < first)
                return GW_RANGE_FULL; /* invalid range-spec: the header is ignored */
        }
        p = gw_skip_ows(p);
        if (*p != ',' && *p != '\0')
            return GW_RANGE_FULL;
        /* Satisfiable? (§14.1.1: a suffix of 0 or any range of an empty
         * representation is not; a first-pos past the end is not.) */
        if (suffix) {
            if (last == 0 || size == 0)
                continue;
            out[n_sat].first = size > last ? size - last : 0;
            out[n_sat].last = size - 1;
        } else {
            if (first >= size)
                continue;
            out[n_sat].first = first;
            out[n_sat].last = open || last >= size ? size - 1 : last;
        }
        n_sat++;
    }
    if (n_spec == 0)
        return GW_RANGE_FULL;
    if (n_sat == 0)
        return GW_RANGE_UNSATISFIABLE;
    if (n_sat > 1)
        n_sat = gw_range_coalesce(out, n_sat);
    *n_out = n_sat;
    return GW_RANGE_PARTIAL;
}

/* ---- multipart/byteranges ---- */

size_t
gw_multipart_part_head(char *out, size_t cap, const char *boundary, const char *ctype,
                       const gw_range_t *r, uint64_t size)
{
    int n = snprintf(out, cap,
                     "\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %llu-%llu/%llu\r\n\r\n",
                     boundary, ctype, (unsigned long long)r->first, (unsigned long long)r->last,
                     (unsigned long long)size);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

size_t
gw_multipart_tail(char *out, size_t cap, const char *boundary)
{
    int n = snprintf(out, cap, "\r\n--%s--\r\n", boundary);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

uint64_t
gw_multipart_length(const gw_range_t *ranges, size_t n, const char *boundary, const char *ctype,
                    uint64_t size)
{
    char tmp[GW_PART_HEAD_MAX];
    uint64_t total = gw_multipart_tail(tmp, sizeof tmp, boundary);

    for (size_t i = 0; i < n; i++) {
        total += gw_multipart_part_head(tmp, sizeof tmp, boundary, ctype, &ranges[i], size);
        total += ranges[i].last - ranges[i].first + 1;
    }
    return total;
}

void
gw_multipart_boundary(const uint8_t addr[static STO_ADDR_LEN], char out[static GW_BOUNDARY_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    /* Hex of the address's first 12 bytes: an object containing a prefix of
     * its own hash at a line start is a 2^-96 event. */
    for (size_t i = 0; i < GW_BOUNDARY_LEN / 2; i++) {
        out[2 * i] = hex[addr[i] >> 4];
        out[2 * i + 1] = hex[addr[i] & 15];
    }
    out[GW_BOUNDARY_LEN] = '\0';
}

/* ---- conditional requests ---- */

/* etagc = %x21 / %x23-7E / obs-text */
static bool
gw_is_etagc(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c != 0x7F);
}

/*
 * Parse one entity-tag at *pp: [W/] DQUOTE *etagc DQUOTE. Writes a view of
 * the opaque part (without quotes) and whether it is weak. Returns false on
 * a syntax error.
 */
static bool
gw_etag_next(const char **pp, const char **op_out, size_t *olen_out, bool *weak_out)
{
    const char *p = *pp, *start;

    *weak_out = false;
    if (p[0] == 'W' && p[1] == '/') {
        *weak_out = true;
        p += 2;
    }
    if (*p != '"')
        return false;
    start = ++p;
    while (gw_is_etagc((unsigned char)*p))
        p++;
    if (*p != '"')
        return false;
    *op_out = start;
    *olen_out = (size_t)(p - start);
    *pp = p + 1;
    return true;
}

/* The opaque part of our own tag ("\"b3:..\"" -> b3:..). */
static bool
gw_etag_opaque(const char *etag, const char **op_out, size_t *olen_out)
{
    bool weak;
    const char *p = etag;
    return gw_etag_next(&p, op_out, olen_out, &weak) && *p == '\0';
}

bool
gw_etag_match(const char *if_none_match, const char *etag)
{
    const char *p, *mine;
    size_t mine_len;
    bool any = false;

    if (if_none_match == NULL || !gw_etag_opaque(etag, &mine, &mine_len))
        return false;
    p = gw_skip_ows(if_none_match);
    if (*p == '*')
        return *gw_skip_ows(p + 1) == '\0';
    for (;;) {
        const char *op;
        size_t olen;
        bool weak;

        p = gw_skip_ows(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        if (!gw_etag_next(&p, &op, &olen, &weak))
            return false; /* malformed: matches nothing */
        if (olen == mine_len && memcmp(op, mine, olen) == 0)
            any = true; /* weak comparison: W/ ignored */
        p = gw_skip_ows(p);
        if (*p != ',' && *p != '\0')
            return false;
    }
    return any;
}

bool
gw_if_range_ok(const char *if_range, const char *etag)
{
    const char *p, *op, *mine;
    size_t olen, mine_len;
    bool weak;

    if (if_range == NULL || !gw_etag_opaque(etag, &mine, &mine_len))
        return false;
    p = gw_skip_ows(if_range);
    if (!gw_etag_next(&p, &op, &olen, &weak) || weak)
        return false; /* an HTTP-date or a weak tag: send the whole object */
    if (*gw_skip_ows(p) != '\0')
        return false;
    return olen == mine_len && memcmp(op, mine, olen) == 0;
}

/* ---- paths ---- */

ssize_t
gw_path_decode(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)in[i];
        if (c == '%') {
            if (len - i < 3 || ron_hex_digit(in[i + 1]) < 0 || ron_hex_digit(in[i + 2]) < 0)
                return RON_EINVAL;
            c = ron_hex_digit(in[i + 1]) << 4 | ron_hex_digit(in[i + 2]);
            i += 2;
        }
        if (c == 0 || c == '/' || o + 1 >= cap)
            return RON_EINVAL;
        out[o++] = (char)c;
    }
    if (cap == 0)
        return RON_EINVAL;
    out[o] = '\0';
    return (ssize_t)o;
}

/* ---- sniffing ---- */

static bool
gw_has(const uint8_t *b, size_t len, size_t off, const char *magic, size_t mlen)
{
    return len >= off + mlen && memcmp(b + off, magic, mlen) == 0;
}

/* Valid UTF-8 without control bytes other than TAB LF FF CR; a sequence cut
 * at the window's end is excused unless the window is the whole object. */
static bool
gw_is_text(const uint8_t *b, size_t len, bool complete)
{
    size_t ok = len;

    for (size_t i = 0; i < len; i++) {
        uint8_t c = b[i];
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\f' && c != '\r') || c == 0x7F)
            return false;
    }
    if (ron_utf8_valid((const char *)b, len))
        return true;
    if (complete)
        return false;
    for (size_t k = 1; k <= 3 && k < len; k++) {
        ok = len - k;
        if (b[ok] >= 0xC2 && b[ok] <= 0xF4 && ron_utf8_valid((const char *)b, ok))
            return true;
    }
    return false;
}

static bool
gw_is_html(const uint8_t *b, size_t len)
{
    static const char *const tags[] = {
        "!doctype html", "html", "head",  "script", "iframe", "h1",   "div", "font",
        "table",         "a",    "style", "title",  "b",      "body", "br",  "p"};
    size_t i = 0;

    if (gw_has(b, len, 0, "\xEF\xBB\xBF", 3))
        i = 3;
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || b[i] == '\f'))
        i++;
    if (i >= len || b[i] != '<')
        return false;
    i++;
    if (gw_has(b, len, i, "!--", 3))
        return true;
    for (size_t t = 0; t < sizeof tags / sizeof tags[0]; t++) {
        size_t tl = strlen(tags[t]);
        if (len >= i + tl + 1 && strncasecmp((const char *)b + i, tags[t], tl) == 0 &&
            (b[i + tl] == ' ' || b[i + tl] == '>'))
            return true;
    }
    return false;
}

static const char *
gw_sniff_isobmff(const uint8_t *b, size_t len)
{
    if (gw_has(b, len, 8, "avif", 4) || gw_has(b, len, 8, "avis", 4))
        return "image/avif";
    if (gw_has(b, len, 8, "qt  ", 4))
        return "video/quicktime";
    if (gw_has(b, len, 8, "M4A ", 4))
        return "audio/mp4";
    return "video/mp4";
}

static const char *
gw_sniff_ebml(const uint8_t *b, size_t len)
{
    /* The DocType element holds "webm" or "matroska" early in the header. */
    for (size_t i = 4; i + 4 <= len && i < 64; i++)
        if (memcmp(b + i, "webm", 4) == 0)
            return "video/webm";
    return "video/x-matroska";
}

const char *
gw_sniff(const uint8_t *buf, size_t len, bool complete)
{
    const uint8_t *b = buf;
    size_t i = 0;

    if (len > GW_SNIFF_LEN) {
        len = GW_SNIFF_LEN;
        complete = false;
    }
    if (len == 0)
        return GW_CTYPE_DEFAULT;
    if (gw_has(b, len, 0, "\x89PNG\r\n\x1A\n", 8))
        return "image/png";
    if (gw_has(b, len, 0, "\xFF\xD8\xFF", 3))
        return "image/jpeg";
    if (gw_has(b, len, 0, "GIF87a", 6) || gw_has(b, len, 0, "GIF89a", 6))
        return "image/gif";
    if (gw_has(b, len, 0, "RIFF", 4) && gw_has(b, len, 8, "WEBP", 4))
        return "image/webp";
    if (gw_has(b, len, 0, "RIFF", 4) && gw_has(b, len, 8, "WAVE", 4))
        return "audio/wav";
    if (gw_has(b, len, 0, "%PDF-", 5))
        return "application/pdf";
    if (gw_has(b, len, 4, "ftyp", 4) && len >= 12)
        return gw_sniff_isobmff(b, len);
    if (gw_has(b, len, 0, "\x1A\x45\xDF\xA3", 4))
        return gw_sniff_ebml(b, len);
    if (gw_has(b, len, 0, "ID3", 3) ||
        (len >= 2 && b[0] == 0xFF && (b[1] & 0xE0) == 0xE0 && (b[1] & 0x06) == 0x02))
        return "audio/mpeg";
    if (gw_has(b, len, 0, "OggS\0", 5))
        return "application/ogg";
    if (gw_has(b, len, 0, "PK\x03\x04", 4) || gw_has(b, len, 0, "PK\x05\x06", 4))
        return "application/zip";
    if (gw_has(b, len, 0, "\x1F\x8B\x08", 3))
        return "application/gzip";
    if (gw_is_html(b, len))
        return "text/html; charset=utf-8";
    if (!gw_is_text(b, len, complete))
        return GW_CTYPE_DEFAULT;
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
        i++;
    if (i < len && (b[i] == '{' || b[i] == '['))
        return "application/json";
    return "text/plain; charset=utf-8";
}
