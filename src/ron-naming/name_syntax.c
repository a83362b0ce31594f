/*
 * name_syntax.c - name normalization: lowercase, IDNA ASCII (libidn2), LDH
 * labels of 1..63 bytes, whole name <= 253 bytes, at least two labels.
 * Invariants: the output of name_normalize is a fixed point (normalizing it
 * again returns it unchanged); input is bounded by NAME_MAX_INPUT before
 * libidn2 sees it; every rejection names the label (0-based in the struct,
 * 1-based in the message) and the reason.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "name_internal.h"
#include "ron_err.h"

int
name__err(name_err_t *err, int code, int label, long pos, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        err->label = label;
        err->pos = pos;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void
name__char_show(char c, char *buf, size_t cap)
{
    unsigned char u = (unsigned char)c;
    if (u > 0x20 && u < 0x7f && u != '\'')
        snprintf(buf, cap, "'%c'", c);
    else
        snprintf(buf, cap, "\\x%02x", u);
}

static bool
is_ldh(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* Length of a label separator at in[i] ('.', U+3002, U+FF0E, U+FF61), or 0. */
static size_t
sep_len(const char *in, size_t len, size_t i)
{
    const unsigned char *u = (const unsigned char *)in + i;
    size_t left = len - i;
    if (u[0] == '.')
        return 1;
    if (left >= 3 && u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x82)
        return 3;
    if (left >= 3 && u[0] == 0xef && u[1] == 0xbc && u[2] == 0x8e)
        return 3;
    if (left >= 3 && u[0] == 0xef && u[1] == 0xbd && u[2] == 0xa1)
        return 3;
    return 0;
}

/* Length of the valid UTF-8 sequence at p[0..left), or 0 when invalid. */
static size_t
utf8_seq(const unsigned char *p, size_t left)
{
    size_t n;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4;
    else
        return 0;
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
        return 0; /* overlong, surrogate, above U+10FFFF */
    return n;
}

/* Show a label for a message: valid UTF-8 as is, other bytes and controls
 * as \xNN, cut at a character boundary with "..." so it fits cap. The
 * result is always valid UTF-8 (messages end up in JSON envelopes). */
static void
label_show(const char *p, size_t n, char *buf, size_t cap)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t k = 0, i = 0;

    while (i < n) {
        size_t sl = utf8_seq(u + i, n - i);
        size_t need = (sl == 0 || u[i] < 0x20 || u[i] == 0x7f) ? 4 : sl;
        if (k + need + 4 > cap) {
            memcpy(buf + k, "...", 4);
            return;
        }
        if (need == 4 && (sl == 0 || sl == 1)) {
            snprintf(buf + k, cap - k, "\\x%02x", u[i]);
            i++;
        } else {
            memcpy(buf + k, u + i, sl);
            i += sl;
        }
        k += need;
    }
    buf[k] = '\0';
}

/* An xn-- label (lowercase LDH) must decode to a U-label that encodes back
 * to exactly the same A-label under IDNA2008 without mapping. */
static int
alabel_check(const char *lab, int idx, long off, name_err_t *err)
{
    char *u = NULL;
    uint8_t *back = NULL;
    int rc, irc;

    irc = idn2_to_unicode_8z8z(lab, &u, 0);
    if (irc != IDN2_OK) {
        rc = name__err(err, RON_ENAME, idx, off,
                       "label %d \"%s\" is not valid punycode after \"xn--\" (%s)", idx + 1, lab,
                       idn2_strerror(irc));
        goto out;
    }
    irc = idn2_lookup_u8((const uint8_t *)u, &back, IDN2_NFC_INPUT | IDN2_NO_TR46);
    if (irc != IDN2_OK) {
        rc = name__err(err, RON_ENAME, idx, off,
                       "label %d \"%s\" decodes to a label IDNA2008 does not allow (%s)", idx + 1,
                       lab, idn2_strerror(irc));
        goto out;
    }
    if (strcmp((const char *)back, lab) != 0) {
        rc = name__err(err, RON_ENAME, idx, off,
                       "label %d \"%s\" is not a canonical A-label (its Unicode form encodes as "
                       "\"%.63s\")",
                       idx + 1, lab, (const char *)back);
        goto out;
    }
    rc = 0;
out:
    free(u);
    free(back);
    return rc;
}

/* Check and lowercase an ASCII label p[0..n) into out. */
static int
label_ascii(const char *p, size_t n, int idx, long off, char out[static NAME_MAX_LABEL + 1],
            name_err_t *err)
{
    char shown[8], lab[80];

    label_show(p, n, lab, sizeof lab);
    if (n > NAME_MAX_LABEL)
        return name__err(err, RON_ENAME, idx, off,
                         "label %d \"%s\" is %zu bytes long; a label has at most 63", idx + 1, lab,
                         n);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (!is_ldh(c)) {
            name__char_show(p[i], shown, sizeof shown);
            return name__err(err, RON_ENAME, idx, off + (long)i,
                             "label %d \"%s\": character %s at offset %ld is not allowed "
                             "(letters, digits and '-' only)",
                             idx + 1, lab, shown, off + (long)i);
        }
        out[i] = c;
    }
    out[n] = '\0';
    if (out[0] == '-' || out[n - 1] == '-')
        return name__err(err, RON_ENAME, idx, out[0] == '-' ? off : off + (long)n - 1,
                         "label %d \"%s\" %s with a hyphen", idx + 1, lab,
                         out[0] == '-' ? "starts" : "ends");
    if (n >= 4 && out[2] == '-' && out[3] == '-') {
        if (out[0] == 'x' && out[1] == 'n')
            return alabel_check(out, idx, off, err);
        return name__err(err, RON_ENAME, idx, off + 2,
                         "label %d \"%s\": hyphens in the 3rd and 4th positions are reserved "
                         "for IDNA (\"xn--\")",
                         idx + 1, lab);
    }
    return 0;
}

/* Convert a label with non-ASCII bytes through libidn2, then check the result. */
static int
label_unicode(const char *p, size_t n, int idx, long off, char out[static NAME_MAX_LABEL + 1],
              name_err_t *err)
{
    char in[NAME_MAX_INPUT + 1], lab[80];
    uint8_t *res = NULL;
    int rc, irc;
    size_t rn;

    label_show(p, n, lab, sizeof lab);
    memcpy(in, p, n); /* n <= NAME_MAX_INPUT, checked by the caller */
    in[n] = '\0';
    irc = idn2_lookup_u8((const uint8_t *)in, &res,
                         IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL | IDN2_USE_STD3_ASCII_RULES);
    if (irc != IDN2_OK) {
        rc = name__err(err, RON_ENAME, idx, off,
                       "label %d \"%s\" cannot be converted to IDNA ASCII: %s", idx + 1, lab,
                       idn2_strerror(irc));
        goto out;
    }
    rn = strlen((const char *)res);
    for (size_t i = 0; i < rn; i++)
        if (!is_ldh((char)res[i])) { /* a mapping that yields a dot or symbol */
            rc = name__err(err, RON_ENAME, idx, off,
                           "label %d \"%s\" maps to \"%.63s\", which is not a single label of "
                           "letters, digits and '-'",
                           idx + 1, lab, (const char *)res);
            goto out;
        }
    if (rn == 0 || rn > NAME_MAX_LABEL) {
        rc = name__err(err, RON_ENAME, idx, off,
                       "label %d \"%s\" is %zu bytes in IDNA ASCII; a label has 1 to 63", idx + 1,
                       lab, rn);
        goto out;
    }
    rc = label_ascii((const char *)res, rn, idx, off, out, err);
    if (rc < 0 && err != NULL) { /* say which Unicode label it came from */
        char inner[sizeof err->msg];
        memcpy(inner, err->msg, sizeof inner);
        name__err(err, rc, idx, off, "from \"%s\": %s", lab, inner);
    }
out:
    free(res);
    return rc;
}

static int
label_normalize(const char *p, size_t n, int idx, long off, char out[static NAME_MAX_LABEL + 1],
                name_err_t *err)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return label_unicode(p, n, idx, off, out, err);
    return label_ascii(p, n, idx, off, out, err);
}

int
name_normalize(const char *in, size_t len, char out[static NAME_MAX_LEN + 1], name_err_t *err)
{
    char lab[NAME_MAX_LABEL + 1];
    size_t o = 0, start = 0, last_start = 0;
    int idx = 0, rc;

    out[0] = '\0';
    if (len == 0)
        return name__err(err, RON_ENAME, -1, 0, "name is empty");
    if (len > NAME_MAX_INPUT)
        return name__err(err, RON_ENAME, -1, NAME_MAX_INPUT,
                         "name input is %zu bytes; at most %d are read", len, NAME_MAX_INPUT);
    for (size_t i = 0; i < len; i++)
        if (in[i] == '\0')
            return name__err(err, RON_ENAME, -1, (long)i, "NUL byte at offset %zu", i);
    for (;;) {
        size_t j = start, sl = 0, ln;
        while (j < len && (sl = sep_len(in, len, j)) == 0)
            j++;
        if (j == start)
            return name__err(err, RON_ENAME, idx, (long)start,
                             start == 0 ? "label %d is empty: the name starts with a dot"
                                        : "label %d is empty: two dots in a row at offset %zu",
                             idx + 1, start);
        rc = label_normalize(in + start, j - start, idx, (long)start, lab, err);
        if (rc < 0)
            return rc;
        ln = strlen(lab);
        if (o + (idx > 0) + ln > NAME_MAX_LEN)
            return name__err(err, RON_ENAME, idx, (long)start,
                             "name exceeds 253 bytes in IDNA ASCII at label %d", idx + 1);
        if (idx > 0)
            out[o++] = '.';
        memcpy(out + o, lab, ln + 1);
        last_start = o;
        o += ln;
        idx++;
        if (j >= len)
            break;
        start = j + sl;
        if (start >= len)
            return name__err(err, RON_ENAME, idx, (long)j,
                             "label %d is empty: the name ends with a dot", idx + 1);
    }
    if (idx < 2)
        return name__err(err, RON_ENAME, 0, 0,
                         "\"%s\" has one label; a name needs at least two, like \"photos.alice\" "
                         "(single labels are reserved for registry-governed top-level names)",
                         out);
    if (strspn(out + last_start, "0123456789") == o - last_start)
        return name__err(err, RON_ENAME, idx - 1, -1,
                         "the last label \"%s\" is all digits; it would read as an IP address",
                         out + last_start);
    return 0;
}

int
name_check(const char *name, size_t len, name_err_t *err)
{
    char canon[NAME_MAX_LEN + 1];
    int rc = name_normalize(name, len, canon, err);
    if (rc < 0)
        return rc;
    if (strlen(canon) != len || memcmp(canon, name, len) != 0)
        return name__err(err, RON_ENAME, -1, -1, "name is not in canonical form; expected \"%s\"",
                         canon);
    return 0;
}
