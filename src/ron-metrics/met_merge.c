/*
 * met_merge.c - strict parser for Prometheus text format 0.0.4 and the merger
 * that joins the kernel's exposition with every child's under a service label.
 *
 * A child's text is untrusted. The parser accepts a subset of what the
 * Prometheus parser accepts (no colons in names, floats in plain decimal or
 * +Inf/-Inf/NaN, int64 timestamps of at most 18 digits, escapes \\ \" \n
 * only, UTF-8) and re-renders each accepted line canonically, so the merged
 * output always parses. Invariants: every byte read is inside the input; a
 * family's name passes the promtool lints for its type; no family name is a
 * derived sample name (_bucket, _sum, _count) of a histogram or summary
 * family; totals never exceed the MET_MERGE_* limits.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "met_internal.h"
#include "ron_utf8.h"
#include "ron_err.h"
#include "ron_metrics.h"
#include "ron_util.h"

#define NO_HELP "No help text given."

typedef struct {
    char *name;
    size_t nlen;
    int type;             /* MET__UNSET until a TYPE line or a sample fixes it */
    char *help;           /* escaped as received (validated); NULL when none yet */
    size_t help_len;
    met__buf_t lines;     /* rendered sample lines, inputs in order */
    size_t nsamples;
    uint32_t idx;         /* index in the merger's fams */
    uint32_t input;       /* the input the flags below describe */
    bool seen_help;       /* this input gave HELP */
    bool seen_type;       /* this input gave TYPE */
    bool seen_sample;     /* this input gave a sample */
    bool bad;             /* this input's samples of it are refused (bad or clashing TYPE) */
} mfam_t;

/* A series already in the output: its key is a prefix of a rendered line. */
typedef struct {
    uint32_t fam;         /* index into fams */
    uint32_t off;         /* offset of the line in the family's lines */
    uint32_t len;         /* key length; 0 marks an empty slot (keys are never empty) */
    uint32_t hash;
} series_t;

struct met_merge {
    mfam_t **fams;
    size_t nfams;
    size_t cap;
    uint32_t *slots;      /* open addressing: 0 empty, else index + 1 */
    size_t nslots;        /* power of two, > 2 * nfams */
    size_t nsamples;      /* across all inputs, <= MET_MERGE_MAX_SAMPLES */
    uint32_t input;       /* number of met_merge_add calls so far */
    series_t *sslots;     /* open addressing set of every series accepted */
    size_t nsslots;       /* power of two, > 2 * nseries */
    size_t nseries;
    uint64_t seed;        /* random hash basis: a child cannot aim collisions */
};

typedef struct {
    const char *n, *v;    /* label name; value as received (escaped, without quotes) */
    size_t nl, vl;
} lbl_t;

typedef struct {
    const char *name;
    size_t nlen;
    lbl_t labels[MET_MERGE_MAX_LABELS];
    size_t nlabels;
    const char *value, *ts;
    size_t vlen, tslen;   /* tslen 0: no timestamp */
} sample_t;

/* Parser state of one input. */
typedef struct {
    met_merge_t *m;
    const char *service;  /* NULL: no label added */
    mfam_t *cur;          /* family of the last HELP/TYPE/sample of this input */
    met_merge_stats_t st;
} pstate_t;

met_merge_t *
met_merge_new(void)
{
    met_merge_t *m = ron_xcalloc(1, sizeof *m);
    if (ron_random_bytes(&m->seed, sizeof m->seed) < 0)
        m->seed = ron_now_ns(); /* defensive: getrandom does not fail after boot */
    m->seed |= 1;
    return m;
}

void
met_merge_free(met_merge_t *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nfams; i++) {
        free(m->fams[i]->name);
        free(m->fams[i]->help);
        met__buf_free(&m->fams[i]->lines);
        free(m->fams[i]);
    }
    free(m->fams);
    free(m->slots);
    free(m->sslots);
    free(m);
}

/* ---- family table ---- */

static uint32_t
name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static mfam_t *
fam_find(const met_merge_t *m, const char *s, size_t n)
{
    if (m->nslots == 0)
        return NULL;
    size_t mask = m->nslots - 1;
    for (size_t i = name_hash(s, n) & mask; m->slots[i] != 0; i = (i + 1) & mask) {
        mfam_t *f = m->fams[m->slots[i] - 1];
        if (f->nlen == n && memcmp(f->name, s, n) == 0)
            return f;
    }
    return NULL;
}

static void
slot_insert(met_merge_t *m, size_t idx)
{
    const mfam_t *f = m->fams[idx];
    size_t mask = m->nslots - 1;
    size_t i = name_hash(f->name, f->nlen) & mask;
    while (m->slots[i] != 0)
        i = (i + 1) & mask;
    m->slots[i] = (uint32_t)idx + 1;
}

static bool
ends_with(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

/* True if a family named s (n bytes) of this type would share sample names
 * with an existing family: x_bucket/x_sum/x_count beside a histogram or
 * summary x, or the other way round. */
static bool
fam_collides(const met_merge_t *m, const char *s, size_t n, int type)
{
    static const char *const sufs[] = {"_bucket", "_sum", "_count"};
    char tmp[MET_MAX_NAME + 8];

    for (size_t i = 0; i < RON_ARRAY_LEN(sufs); i++) {
        size_t k = strlen(sufs[i]);
        if (ends_with(s, n, sufs[i])) {
            const mfam_t *base = fam_find(m, s, n - k);
            if (base != NULL && (base->type == MET_HISTOGRAM ||
                                 (base->type == MET__SUMMARY && i > 0)))
                return true;
        }
        if (type == MET_HISTOGRAM || (type == MET__SUMMARY && i > 0)) {
            memcpy(tmp, s, n);
            memcpy(tmp + n, sufs[i], k);
            if (fam_find(m, tmp, n + k) != NULL)
                return true;
        }
    }
    return false;
}

/* Find the family named s or create it (type unset). NULL when the name is
 * unfit, collides, or the family limit is reached. */
static mfam_t *
fam_get(met_merge_t *m, const char *s, size_t n)
{
    mfam_t *f = fam_find(m, s, n);
    if (f != NULL)
        return f;
    if (m->nfams == MET_MERGE_MAX_FAMILIES || !met__family_lint_ok(s, n, MET__UNSET) ||
        fam_collides(m, s, n, MET__UNSET))
        return NULL;
    f = ron_xcalloc(1, sizeof *f);
    f->name = ron_xmalloc(n + 1);
    memcpy(f->name, s, n);
    f->name[n] = '\0';
    f->nlen = n;
    f->input = UINT32_MAX;
    f->idx = (uint32_t)m->nfams;
    if (m->nfams == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 32;
        m->fams = ron_xrealloc(m->fams, m->cap * sizeof(mfam_t *));
    }
    m->fams[m->nfams++] = f;
    if (2 * m->nfams >= m->nslots) {
        free(m->slots);
        m->nslots = m->nslots ? m->nslots * 2 : 64;
        m->slots = ron_xcalloc(m->nslots, sizeof *m->slots);
        for (size_t i = 0; i < m->nfams; i++)
            slot_insert(m, i);
    } else {
        slot_insert(m, m->nfams - 1);
    }
    return f;
}

/* Reset f's per-input flags when this input first touches it. */
static void
fam_touch(const pstate_t *ps, mfam_t *f)
{
    if (f->input != ps->m->input) {
        f->input = ps->m->input;
        f->seen_help = f->seen_type = f->seen_sample = f->bad = false;
    }
}

/* ---- lexing ---- */

typedef struct {
    const char *p;
    size_t left;
} cur_t;

static void
skip_blank(cur_t *c)
{
    while (c->left > 0 && (*c->p == ' ' || *c->p == '\t')) {
        c->p++;
        c->left--;
    }
}

/* Take bytes up to a blank or the end; returns the length. */
static size_t
take_token(cur_t *c, const char **tok)
{
    *tok = c->p;
    size_t n = 0;
    while (n < c->left && c->p[n] != ' ' && c->p[n] != '\t')
        n++;
    c->p += n;
    c->left -= n;
    return n;
}

static size_t
take_name(cur_t *c, const char **tok)
{
    *tok = c->p;
    size_t n = 0;
    while (n < c->left && ((c->p[n] >= 'a' && c->p[n] <= 'z') || (c->p[n] >= 'A' && c->p[n] <= 'Z') ||
                           c->p[n] == '_' || (n > 0 && c->p[n] >= '0' && c->p[n] <= '9')))
        n++;
    c->p += n;
    c->left -= n;
    return n;
}

static bool
is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* [+-]?(d+(.d*)?|.d+)([eE][+-]?d+)? | [+-]?Inf | NaN, without overflow. */
static bool
float_ok(const char *s, size_t n)
{
    char tmp[65];
    size_t i = 0, digits = 0;

    if (n == 0 || n > 64)
        return false;
    if ((n == 3 && memcmp(s, "NaN", 3) == 0) || (n == 3 && memcmp(s, "Inf", 3) == 0) ||
        (n == 4 && (memcmp(s, "+Inf", 4) == 0 || memcmp(s, "-Inf", 4) == 0)))
        return true;
    if (s[i] == '+' || s[i] == '-')
        i++;
    while (i < n && is_digit(s[i]))
        i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i]))
            i++, digits++;
    }
    if (digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t e = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        while (i < n && is_digit(s[i]))
            i++, e++;
        if (e == 0)
            return false;
    }
    if (i != n)
        return false;
    /* Go's ParseFloat fails on out-of-range values: refuse them here. */
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    (void)strtod(tmp, NULL);
    return errno == 0;
}

static bool
timestamp_ok(const char *s, size_t n)
{
    size_t i = (n > 0 && s[0] == '-') ? 1 : 0;
    if (n - i == 0 || n - i > 18)
        return false;
    for (; i < n; i++)
        if (!is_digit(s[i]))
            return false;
    return true;
}

/* Check an escaped text (help or label value) up to its end; for a label
 * value stop at the closing quote. Returns the raw length or -1. */
static ssize_t
scan_escaped(const char *p, size_t left, bool label_value)
{
    size_t i = 0;
    while (i < left) {
        char ch = p[i];
        if (label_value && ch == '"')
            break;
        if (ch == '\\') {
            if (i + 1 >= left)
                return -1;
            char e = p[i + 1];
            if (e != '\\' && e != 'n' && !(label_value && e == '"'))
                return -1;
            i += 2;
            continue;
        }
        i++;
    }
    if (label_value && i >= left)
        return -1; /* no closing quote */
    if (!ron_utf8_valid(p, i))
        return -1;
    return (ssize_t)i;
}

/* Parse "name{labels} value [ts]" (leading blanks already skipped). */
static bool
parse_sample(cur_t *c, sample_t *s)
{
    s->nlen = take_name(c, &s->name);
    if (!met__name_ok(s->name, s->nlen))
        return false;
    s->nlabels = 0;
    skip_blank(c);
    if (c->left > 0 && *c->p == '{') {
        c->p++, c->left--;
        for (;;) {
            skip_blank(c);
            if (c->left > 0 && *c->p == '}')
                break;
            if (s->nlabels == MET_MERGE_MAX_LABELS)
                return false;
            lbl_t *l = &s->labels[s->nlabels++];
            l->nl = take_name(c, &l->n);
            if (!met__label_name_ok(l->n, l->nl))
                return false;
            for (size_t i = 0; i + 1 < s->nlabels; i++)
                if (s->labels[i].nl == l->nl && memcmp(s->labels[i].n, l->n, l->nl) == 0)
                    return false;
            skip_blank(c);
            if (c->left == 0 || *c->p != '=')
                return false;
            c->p++, c->left--;
            skip_blank(c);
            if (c->left == 0 || *c->p != '"')
                return false;
            c->p++, c->left--;
            ssize_t vl = scan_escaped(c->p, c->left, true);
            if (vl < 0)
                return false;
            l->v = c->p;
            l->vl = (size_t)vl;
            c->p += vl + 1, c->left -= (size_t)vl + 1;
            skip_blank(c);
            if (c->left > 0 && *c->p == ',') {
                c->p++, c->left--;
                continue;
            }
            if (c->left > 0 && *c->p == '}')
                break;
            return false;
        }
        c->p++, c->left--;
    }
    skip_blank(c);
    s->vlen = take_token(c, &s->value);
    if (!float_ok(s->value, s->vlen))
        return false;
    skip_blank(c);
    s->tslen = take_token(c, &s->ts);
    if (s->tslen > 0 && !timestamp_ok(s->ts, s->tslen))
        return false;
    skip_blank(c);
    return c->left == 0;
}

/* ---- line handlers ---- */

static const lbl_t *
find_label(const sample_t *s, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < s->nlabels; i++)
        if (s->labels[i].nl == n && memcmp(s->labels[i].n, name, n) == 0)
            return &s->labels[i];
    return NULL;
}

/* True if sample name s belongs to family f given f's type; *suffix_out is
 * the suffix ("", "_bucket", "_sum", "_count"). */
static bool
sample_in_family(const mfam_t *f, const sample_t *s, const char **suffix_out)
{
    static const char *const sufs[] = {"", "_bucket", "_sum", "_count"};
    for (size_t i = 0; i < RON_ARRAY_LEN(sufs); i++) {
        size_t k = strlen(sufs[i]);
        if (s->nlen != f->nlen + k || memcmp(s->name, f->name, f->nlen) != 0 ||
            memcmp(s->name + f->nlen, sufs[i], k) != 0)
            continue;
        bool ok = f->type == MET_HISTOGRAM ? i > 0 : f->type == MET__SUMMARY ? i != 1 : i == 0;
        if (ok)
            *suffix_out = sufs[i];
        return ok;
    }
    return false;
}

/* Structural checks of a sample against its family type. */
static bool
sample_fits(const pstate_t *ps, const mfam_t *f, const sample_t *s, const char *suffix)
{
    int type = f->type == MET__UNSET ? MET__UNTYPED : f->type;
    bool has_exported = false;

    for (size_t i = 0; i < s->nlabels; i++) {
        if (!met__label_lint_ok(s->labels[i].n, s->labels[i].nl, type))
            return false;
        if (s->labels[i].nl == 16 && memcmp(s->labels[i].n, "exported_service", 16) == 0)
            has_exported = true;
    }
    if (ps->service != NULL && has_exported && find_label(s, "service") != NULL)
        return false; /* the rename would duplicate a label */
    const lbl_t *le = find_label(s, "le");
    const lbl_t *q = find_label(s, "quantile");
    bool bucket = type == MET_HISTOGRAM && strcmp(suffix, "_bucket") == 0;
    bool quantile = type == MET__SUMMARY && suffix[0] == '\0';
    /* le only (and always) on buckets, quantile only on quantile lines. */
    if (type == MET_HISTOGRAM && (bucket != (le != NULL) || (le && !float_ok(le->v, le->vl))))
        return false;
    if (type == MET__SUMMARY && (quantile != (q != NULL) || (q && !float_ok(q->v, q->vl))))
        return false;
    return true;
}

/* A label as rendered: the input's name (prefixed when renamed) and value. */
typedef struct {
    char name[MET_MAX_NAME + 16];
    size_t nl;
    const lbl_t *l;
    int rank;             /* 0 service (first, like the label we add), 2 le and quantile
                           * (last, by convention), 1 the rest */
} rlbl_t;

static int
rlbl_cmp(const rlbl_t *a, const rlbl_t *b)
{
    if (a->rank != b->rank)
        return a->rank - b->rank;
    int c = memcmp(a->name, b->name, RON_MIN(a->nl, b->nl));
    return c != 0 ? c : (a->nl > b->nl) - (a->nl < b->nl);
}

/* Append the canonical line of s to f: name{service="..",labels sorted by
 * name, le/quantile last} value [ts]; a service label of a pass-through
 * input goes first too, so rendering is a fixed point. Returns the length of the series key
 * (the line up to the blank before the value). */
static size_t
render_sample(const pstate_t *ps, mfam_t *f, const sample_t *s)
{
    met__buf_t *b = &f->lines;
    size_t start = b->len;
    rlbl_t ls[MET_MERGE_MAX_LABELS];
    bool braces = ps->service != NULL || s->nlabels > 0;

    for (size_t i = 0; i < s->nlabels; i++) {
        const lbl_t *l = &s->labels[i];
        rlbl_t *r = &ls[i];
        bool renamed = ps->service != NULL && l->nl == 7 && memcmp(l->n, "service", 7) == 0;
        size_t pl = renamed ? 9 : 0;
        memcpy(r->name, "exported_", pl);
        memcpy(r->name + pl, l->n, l->nl);
        r->nl = pl + l->nl;
        r->l = l;
        r->rank = (r->nl == 7 && memcmp(r->name, "service", 7) == 0)     ? 0
                  : (l->nl == 2 && memcmp(l->n, "le", 2) == 0) ||
                            (l->nl == 8 && memcmp(l->n, "quantile", 8) == 0)
                      ? 2
                      : 1;
        for (size_t k = i; k > 0 && rlbl_cmp(&ls[k - 1], &ls[k]) > 0; k--) {
            rlbl_t t = ls[k];
            ls[k] = ls[k - 1];
            ls[k - 1] = t;
        }
    }
    met__buf_add(b, s->name, s->nlen);
    if (braces)
        met__buf_add(b, "{", 1);
    if (ps->service != NULL) {
        met__buf_puts(b, "service=\"");
        met__buf_escape(b, ps->service, strlen(ps->service), true);
        met__buf_add(b, "\"", 1);
    }
    for (size_t i = 0; i < s->nlabels; i++) {
        if (i > 0 || ps->service != NULL)
            met__buf_add(b, ",", 1);
        met__buf_add(b, ls[i].name, ls[i].nl);
        met__buf_add(b, "=\"", 2);
        met__buf_add(b, ls[i].l->v, ls[i].l->vl);
        met__buf_add(b, "\"", 1);
    }
    if (braces)
        met__buf_add(b, "}", 1);
    size_t keylen = b->len - start;
    met__buf_add(b, " ", 1);
    met__buf_add(b, s->value, s->vlen);
    if (s->tslen > 0) {
        met__buf_add(b, " ", 1);
        met__buf_add(b, s->ts, s->tslen);
    }
    met__buf_add(b, "\n", 1);
    return keylen;
}

/* ---- series set: refuses a second sample of the same series ---- */

static uint32_t
series_hash(const met_merge_t *m, const char *k, size_t n)
{
    uint64_t h = m->seed;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return (uint32_t)(h ^ h >> 32);
}

static const char *
series_key(const met_merge_t *m, const series_t *e)
{
    return m->fams[e->fam]->lines.p + e->off;
}

/* Insert the key at fam's lines[off, off+len) unless present. Returns false
 * for a duplicate. */
static bool
series_insert(met_merge_t *m, uint32_t fam, size_t off, size_t len)
{
    const char *key = m->fams[fam]->lines.p + off;
    uint32_t h = series_hash(m, key, len);

    if (2 * (m->nseries + 1) > m->nsslots) {
        size_t ncap = m->nsslots ? m->nsslots * 2 : 64;
        series_t *slots = ron_xcalloc(ncap, sizeof *slots);
        for (size_t i = 0; i < m->nsslots; i++) {
            if (m->sslots[i].len == 0)
                continue;
            size_t j = m->sslots[i].hash & (ncap - 1);
            while (slots[j].len != 0)
                j = (j + 1) & (ncap - 1);
            slots[j] = m->sslots[i];
        }
        free(m->sslots);
        m->sslots = slots;
        m->nsslots = ncap;
    }
    size_t mask = m->nsslots - 1;
    size_t i = h & mask;
    for (; m->sslots[i].len != 0; i = (i + 1) & mask) {
        const series_t *e = &m->sslots[i];
        if (e->hash == h && e->len == len && memcmp(series_key(m, e), key, len) == 0)
            return false;
    }
    m->sslots[i] = (series_t){fam, (uint32_t)off, (uint32_t)len, h};
    m->nseries++;
    return true;
}

/* Find the family a sample belongs to: the current one, else by its name,
 * else by its name less a _bucket/_sum/_count suffix, else a new untyped
 * family of its own name. NULL if none can take it. */
static mfam_t *
sample_family(pstate_t *ps, const sample_t *s, const char **suffix_out)
{
    static const char *const sufs[] = {"_bucket", "_sum", "_count"};
    mfam_t *f;

    if (ps->cur != NULL && sample_in_family(ps->cur, s, suffix_out))
        return ps->cur;
    f = fam_find(ps->m, s->name, s->nlen);
    if (f != NULL)
        return sample_in_family(f, s, suffix_out) ? f : NULL;
    for (size_t i = 0; i < RON_ARRAY_LEN(sufs); i++) {
        size_t k = strlen(sufs[i]);
        if (!ends_with(s->name, s->nlen, sufs[i]))
            continue;
        f = fam_find(ps->m, s->name, s->nlen - k);
        if (f != NULL && sample_in_family(f, s, suffix_out))
            return f;
    }
    *suffix_out = "";
    return fam_get(ps->m, s->name, s->nlen);
}

static bool
on_sample(pstate_t *ps, cur_t *c)
{
    sample_t s;
    const char *suffix = "";
    mfam_t *f;

    if (!parse_sample(c, &s) || ps->m->nsamples >= MET_MERGE_MAX_SAMPLES)
        return false;
    f = sample_family(ps, &s, &suffix);
    if (f == NULL)
        return false;
    fam_touch(ps, f);
    ps->cur = f;
    if (f->bad || !sample_fits(ps, f, &s, suffix))
        return false;
    if (f->type == MET__UNSET)
        f->type = MET__UNTYPED;
    size_t off = f->lines.len;
    size_t keylen = render_sample(ps, f, &s);
    if (!series_insert(ps->m, f->idx, off, keylen)) {
        f->lines.len = off; /* a second sample of one series: drop the line */
        f->lines.p[off] = '\0';
        return false;
    }
    f->seen_sample = true;
    f->nsamples++;
    ps->m->nsamples++;
    ps->st.samples++;
    return true;
}

static int
type_of(const char *s, size_t n)
{
    static const struct {
        const char *name;
        int type;
    } types[] = {{"counter", MET_COUNTER},     {"gauge", MET_GAUGE},
                 {"histogram", MET_HISTOGRAM}, {"summary", MET__SUMMARY},
                 {"untyped", MET__UNTYPED}};
    for (size_t i = 0; i < RON_ARRAY_LEN(types); i++)
        if (strlen(types[i].name) == n && memcmp(types[i].name, s, n) == 0)
            return types[i].type;
    return -1;
}

/* "# HELP name text" or "# TYPE name type"; c is after the keyword. */
static bool
on_meta(pstate_t *ps, cur_t *c, bool is_help)
{
    const char *name, *arg;
    size_t nlen, alen;

    if (c->left == 0 || (*c->p != ' ' && *c->p != '\t'))
        return false;
    skip_blank(c);
    nlen = take_name(c, &name);
    if (c->left > 0 && *c->p != ' ' && *c->p != '\t')
        return false;
    mfam_t *f = fam_get(ps->m, name, nlen);
    if (f == NULL)
        return false;
    fam_touch(ps, f);
    ps->cur = f;
    skip_blank(c);
    if (is_help) {
        ssize_t n = scan_escaped(c->p, c->left, false);
        if (f->seen_help || f->seen_sample || n <= 0 || (size_t)n > MET_MAX_HELP)
            return false;
        f->seen_help = true;
        if (f->help == NULL) {
            f->help = ron_xmalloc((size_t)n);
            memcpy(f->help, c->p, (size_t)n);
            f->help_len = (size_t)n;
        }
        return true;
    }
    alen = take_token(c, &arg);
    skip_blank(c);
    int type = type_of(arg, alen);
    if (f->seen_type && type == f->type && c->left == 0)
        return false; /* a repeated TYPE: only the line is refused */
    if (c->left != 0 || type < 0 || f->seen_type || f->seen_sample ||
        (f->type != MET__UNSET && f->type != type) ||
        (f->type == MET__UNSET && (!met__family_lint_ok(f->name, f->nlen, type) ||
                                   fam_collides(ps->m, f->name, f->nlen, type)))) {
        f->bad = true; /* its samples would be read with the wrong type */
        return false;
    }
    f->seen_type = true;
    f->type = type;
    return true;
}

/* One line without its '\n'. Returns false if it is rejected. */
static bool
on_line(pstate_t *ps, const char *line, size_t len)
{
    cur_t c = {line, len};
    const char *kw;
    size_t kwlen;

    if (len > MET_MERGE_MAX_LINE)
        return false;
    skip_blank(&c);
    if (c.left == 0)
        return true; /* blank line */
    if (*c.p != '#')
        return on_sample(ps, &c);
    c.p++, c.left--;
    skip_blank(&c);
    kwlen = take_token(&c, &kw);
    if (kwlen == 4 && memcmp(kw, "HELP", 4) == 0)
        return on_meta(ps, &c, true);
    if (kwlen == 4 && memcmp(kw, "TYPE", 4) == 0)
        return on_meta(ps, &c, false);
    return true; /* other comments are ignored */
}

int
met_merge_add(met_merge_t *m, const char *service, const char *text, size_t len,
              met_merge_stats_t *stats_out)
{
    pstate_t ps = {m, service, NULL, {0, 0}};

    if (stats_out != NULL)
        *stats_out = ps.st;
    if (service != NULL) {
        size_t n = strnlen(service, MET_MERGE_MAX_SERVICE + 1);
        if (n == 0 || n > MET_MERGE_MAX_SERVICE || !ron_utf8_valid(service, n))
            return RON_EINVAL;
    }
    if (len > MET_MERGE_MAX_INPUT)
        return RON_ETOOBIG;
    m->input++;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        if (!on_line(&ps, text + pos, end - pos))
            ps.st.rejected++;
        pos = end + 1;
    }
    if (stats_out != NULL)
        *stats_out = ps.st;
    return 0;
}

static int
cmp_mfam(const void *a, const void *b)
{
    return strcmp((*(mfam_t *const *)a)->name, (*(mfam_t *const *)b)->name);
}

int
met_merge_render(met_merge_t *m, char **text_out, size_t *len_out)
{
    met__buf_t b = {0};
    mfam_t **sorted = ron_xmalloc((m->nfams ? m->nfams : 1) * sizeof(mfam_t *));

    if (m->nfams > 0)
        memcpy(sorted, m->fams, m->nfams * sizeof(mfam_t *));
    qsort(sorted, m->nfams, sizeof(mfam_t *), cmp_mfam);
    for (size_t i = 0; i < m->nfams; i++) {
        const mfam_t *f = sorted[i];
        if (f->nsamples == 0)
            continue;
        met__buf_puts(&b, "# HELP ");
        met__buf_add(&b, f->name, f->nlen);
        met__buf_add(&b, " ", 1);
        if (f->help != NULL)
            met__buf_add(&b, f->help, f->help_len);
        else
            met__buf_puts(&b, NO_HELP);
        met__buf_puts(&b, "\n# TYPE ");
        met__buf_add(&b, f->name, f->nlen);
        met__buf_add(&b, " ", 1);
        met__buf_puts(&b, met__type_name(f->type));
        met__buf_add(&b, "\n", 1);
        met__buf_add(&b, f->lines.p, f->lines.len);
    }
    free(sorted);
    *text_out = met__buf_take(&b, len_out);
    return 0;
}
