/*
 * met_text.c - text-format plumbing for ron-metrics: the growable buffer,
 * escaping, float formatting, UTF-8 checks and the name lints.
 * The lints mirror promtool 2.42's (client_golang promlint) so that a name we
 * accept never makes `promtool check metrics` complain.
 */
#include "met_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_util.h"

void
met__buf_add(met__buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = ron_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
met__buf_puts(met__buf_t *b, const char *s)
{
    met__buf_add(b, s, strlen(s));
}

void
met__buf_printf(met__buf_t *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    /* Only short numeric formats use this: a longer result is our bug. */
    if (n < 0 || (size_t)n >= sizeof tmp)
        abort();
    met__buf_add(b, tmp, (size_t)n);
}

void
met__buf_escape(met__buf_t *b, const char *s, size_t n, bool label_value)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        if (s[i] == '\\')
            rep = "\\\\";
        else if (s[i] == '\n')
            rep = "\\n";
        else if (s[i] == '"' && label_value)
            rep = "\\\"";
        if (rep == NULL)
            continue;
        met__buf_add(b, s + run, i - run);
        met__buf_add(b, rep, 2);
        run = i + 1;
    }
    met__buf_add(b, s + run, n - run);
}

void
met__buf_double(met__buf_t *b, double v)
{
    char tmp[40];
    if (isnan(v)) {
        met__buf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        met__buf_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Fewest significant digits that read back as the same double, printed
     * as Go's strconv.FormatFloat(v, 'g', -1, 64) does (what Prometheus
     * clients print): exponent form when exp < -4 or exp >= 6. */
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
    int exp = (int)strtol(strchr(tmp, 'e') + 1, NULL, 10);
    if (exp >= -4 && exp < 6)
        snprintf(tmp, sizeof tmp, "%.*f", prec - 1 - exp > 0 ? prec - 1 - exp : 0, v);
    met__buf_puts(b, tmp);
}

char *
met__buf_take(met__buf_t *b, size_t *len_out)
{
    if (b->p == NULL)
        met__buf_add(b, "", 0);
    char *p = b->p;
    *len_out = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void
met__buf_free(met__buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static bool
is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

bool
met__name_ok(const char *s, size_t n)
{
    if (n == 0 || n > MET_MAX_NAME || !is_alpha_(s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!is_alpha_(s[i]) && !(s[i] >= '0' && s[i] <= '9'))
            return false;
    return true;
}

bool
met__label_name_ok(const char *s, size_t n)
{
    return met__name_ok(s, n) && !(n >= 2 && s[0] == '_' && s[1] == '_');
}

static bool
has_camel_case(const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] >= 'a' && s[i] <= 'z' && s[i + 1] >= 'A' && s[i + 1] <= 'Z')
            return true;
    return false;
}

static bool
ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* True if lower-cased name contains "_w_" or ends with "_w". */
static bool
has_word(const char *lower, size_t n, const char *w)
{
    char pat[32];
    int k = snprintf(pat, sizeof pat, "_%s_", w);
    if (memmem(lower, n, pat, (size_t)k) != NULL)
        return true;
    pat[k - 1] = '\0';
    return ends_with(lower, n, pat);
}

/* A token of the name that is a unit promlint wants in another form. */
static bool
token_is_non_base_unit(const char *t, size_t n)
{
    static const char *const base[] = {"amperes", "bytes",  "celsius", "grams",  "joules",
                                       "kelvin",  "meters", "metres",  "seconds", "volts"};
    static const char *const other[] = {"minutes", "hours",  "days",   "weeks",    "kelvins",
                                        "fahrenheit", "rankine", "inches", "yards", "miles",
                                        "bits",    "calories", "pounds", "ounces"};
    static const char *const prefixes[] = {"pico", "nano", "micro", "milli", "centi", "deci",
                                           "deca", "hecto", "kilo", "kibi", "mega", "mibi",
                                           "giga", "gibi", "tera", "tebi", "peta", "pebi", ""};
    for (size_t p = 0; p < RON_ARRAY_LEN(prefixes); p++) {
        size_t pl = strlen(prefixes[p]);
        if (n <= pl || memcmp(t, prefixes[p], pl) != 0)
            continue;
        for (size_t u = 0; u < RON_ARRAY_LEN(other); u++)
            if (n - pl == strlen(other[u]) && memcmp(t + pl, other[u], n - pl) == 0)
                return true;
        for (size_t u = 0; pl > 0 && u < RON_ARRAY_LEN(base); u++)
            if (n - pl == strlen(base[u]) && memcmp(t + pl, base[u], n - pl) == 0)
                return true;
    }
    return false;
}

bool
met__family_lint_ok(const char *s, size_t n, int type)
{
    static const char *const types[] = {"counter", "gauge", "histogram", "summary"};
    static const char *const abbrev[] = {"s",  "ms", "us", "ns", "sec", "b", "kb",
                                         "mb", "gb", "tb", "pb", "m",   "h", "d"};
    char lower[MET_MAX_NAME];
    bool untyped = type == MET__UNTYPED || type == MET__UNSET;

    if (!met__name_ok(s, n) || has_camel_case(s, n))
        return false;
    if (type == MET_COUNTER && !ends_with(s, n, "_total"))
        return false;
    if (!untyped && type != MET_COUNTER && ends_with(s, n, "_total"))
        return false;
    if (!untyped && type != MET_HISTOGRAM && ends_with(s, n, "_bucket"))
        return false;
    if (!untyped && type != MET_HISTOGRAM && type != MET__SUMMARY &&
        (ends_with(s, n, "_count") || ends_with(s, n, "_sum")))
        return false;
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    for (size_t i = 0; i < RON_ARRAY_LEN(types); i++)
        if (has_word(lower, n, types[i]))
            return false;
    for (size_t i = 0; i < RON_ARRAY_LEN(abbrev); i++)
        if (has_word(lower, n, abbrev[i]))
            return false;
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && s[i] != '_')
            continue;
        if (token_is_non_base_unit(s + start, i - start))
            return false;
        start = i + 1;
    }
    return true;
}

bool
met__label_lint_ok(const char *l, size_t n, int type)
{
    bool untyped = type == MET__UNTYPED || type == MET__UNSET;
    if (!met__label_name_ok(l, n) || has_camel_case(l, n))
        return false;
    if (!untyped && type != MET_HISTOGRAM && n == 2 && memcmp(l, "le", 2) == 0)
        return false;
    if (!untyped && type != MET__SUMMARY && n == 8 && memcmp(l, "quantile", 8) == 0)
        return false;
    return true;
}

const char *
met__type_name(int type)
{
    switch (type) {
    case MET_COUNTER:
        return "counter";
    case MET_GAUGE:
        return "gauge";
    case MET_HISTOGRAM:
        return "histogram";
    case MET__SUMMARY:
        return "summary";
    default:
        return "untyped";
    }
}
