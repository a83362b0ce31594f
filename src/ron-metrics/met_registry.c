/*
 * met_registry.c - the metric registry: families, their bounded children, the
 * lock-free update paths and the text exposition.
 * Invariants: a child is never freed or moved before met_registry_free, so
 * handles stay valid; a family holds at most max_children children plus one
 * overflow child; counts and sums are only touched with atomics, structure
 * only under the family's mutex (registry's mutex for the family list).
 * Lock order: registry before family.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "met_internal.h"
#include "ron_utf8.h"
#include "ron_err.h"
#include "ron_metrics.h"
#include "ron_util.h"

const double MET_DEFAULT_BUCKETS[MET_DEFAULT_BUCKETS_N] = {
    .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5};

static const char *const label_route[] = {"route"};
static const char *const label_reason[] = {"reason"};
static const char *const label_service[] = {"service"};

const met_desc_t MET_DESC_REQUEST_LATENCY = {
    MET_HISTOGRAM, MET_NAME_REQUEST_LATENCY, "Time from request start to response end, seconds.",
    label_route, 1};
const met_desc_t MET_DESC_REJECTED = {MET_COUNTER, MET_NAME_REJECTED,
                                      "Requests refused, by reason.", label_reason, 1};
const met_desc_t MET_DESC_INFLIGHT = {MET_GAUGE, MET_NAME_INFLIGHT,
                                      "Requests being served now."};
const met_desc_t MET_DESC_BUS_OVERFLOW = {MET_COUNTER, MET_NAME_BUS_OVERFLOW,
                                          "Bus events lost by subscribers that fell behind."};
const met_desc_t MET_DESC_SERVICE_RESTARTS = {
    MET_COUNTER, MET_NAME_SERVICE_RESTARTS, "Restarts of a supervised service.", label_service, 1};
const met_desc_t MET_DESC_MERGE_REJECTED = {
    MET_COUNTER, MET_NAME_MERGE_REJECTED,
    "Lines of a service's metrics text the merger refused.", label_service, 1};

typedef struct {
    char *key;                  /* label values, each followed by '\0' */
    size_t keylen;
    _Atomic uint64_t v;         /* counter value, or a gauge's double bits */
    _Atomic uint64_t sum_bits;  /* histogram: double bits of the sum */
    _Atomic uint64_t *buckets;  /* histogram: nbuckets + 1 counts, not cumulative; last is +Inf */
    const double *bounds;       /* histogram: the family's bounds (owned by the family) */
    size_t nbuckets;
} met_child_t;

struct met_family {
    int type;                   /* MET_COUNTER, MET_GAUGE or MET_HISTOGRAM */
    char *name;
    char *help;
    char **labels;              /* nlabels names */
    size_t nlabels;
    double *bounds;             /* histogram: nbuckets bounds, strictly increasing */
    size_t nbuckets;
    size_t max_children;        /* bound of nchildren, overflow child excluded */
    pthread_mutex_t mu;         /* guards the fields below */
    met_child_t **children;     /* creation order; the overflow child is not in it */
    size_t nchildren;
    size_t cap;
    uint32_t *slots;            /* open addressing: 0 empty, else index + 1 into children */
    size_t nslots;              /* power of two, > 2 * nchildren */
    met_child_t *overflow;      /* created on first need */
};

struct met_registry {
    pthread_mutex_t mu;
    met_family_t **fams;
    size_t nfams;
    size_t cap;
};

met_registry_t *
met_registry_new(void)
{
    met_registry_t *r = ron_xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

static void
child_free(met_child_t *c)
{
    if (c == NULL)
        return;
    free(c->key);
    free(c->buckets);
    free(c);
}

static void
family_free(met_family_t *f)
{
    for (size_t i = 0; i < f->nchildren; i++)
        child_free(f->children[i]);
    child_free(f->overflow);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->labels);
    free(f->children);
    free(f->slots);
    free(f->bounds);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void
met_registry_free(met_registry_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nfams; i++)
        family_free(r->fams[i]);
    free(r->fams);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Check d against the rules of met_desc_t; resolve default buckets. */
static int
desc_check(const met_desc_t *d, const double **bounds_out, size_t *nbounds_out)
{
    const double *b = d->buckets;
    size_t nb = d->nbuckets;

    if (d->type != MET_COUNTER && d->type != MET_GAUGE && d->type != MET_HISTOGRAM)
        return RON_EINVAL;
    if (d->name == NULL || !met__family_lint_ok(d->name, strlen(d->name), (int)d->type))
        return RON_EINVAL;
    if (d->help == NULL || d->help[0] == '\0' || strlen(d->help) > MET_MAX_HELP ||
        !ron_utf8_valid(d->help, strlen(d->help)))
        return RON_EINVAL;
    if (d->nlabels > MET_MAX_LABELS || (d->nlabels > 0 && d->labels == NULL))
        return RON_EINVAL;
    if (d->max_children > MET_MAX_CHILDREN)
        return RON_EINVAL;
    for (size_t i = 0; i < d->nlabels; i++) {
        const char *l = d->labels[i];
        if (l == NULL || !met__label_lint_ok(l, strlen(l), (int)d->type) ||
            strcmp(l, "le") == 0 || strcmp(l, "quantile") == 0)
            return RON_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->labels[j], l) == 0)
                return RON_EINVAL;
    }
    if (d->type != MET_HISTOGRAM) {
        if (b != NULL || nb != 0)
            return RON_EINVAL;
    } else if (nb == 0) {
        b = MET_DEFAULT_BUCKETS;
        nb = MET_DEFAULT_BUCKETS_N;
    } else {
        if (b == NULL || nb > MET_MAX_BUCKETS)
            return RON_EINVAL;
        for (size_t i = 0; i < nb; i++)
            if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
                return RON_EINVAL;
    }
    *bounds_out = b;
    *nbounds_out = nb;
    return 0;
}

static bool
family_matches(const met_family_t *f, const met_desc_t *d, const double *b, size_t nb)
{
    size_t maxc = d->max_children ? d->max_children : MET_DEFAULT_MAX_CHILDREN;
    if (f->type != (int)d->type || strcmp(f->help, d->help) != 0 || f->nlabels != d->nlabels ||
        f->nbuckets != nb || f->max_children != maxc)
        return false;
    for (size_t i = 0; i < nb; i++)
        if (f->bounds[i] != b[i])
            return false;
    for (size_t i = 0; i < d->nlabels; i++)
        if (strcmp(f->labels[i], d->labels[i]) != 0)
            return false;
    return true;
}

static met_child_t *
child_new(const met_family_t *f, const char *key, size_t keylen)
{
    met_child_t *c = ron_xcalloc(1, sizeof *c);
    c->key = ron_xmalloc(keylen + 1);
    memcpy(c->key, key, keylen);
    c->key[keylen] = '\0';
    c->keylen = keylen;
    if (f->type == MET_HISTOGRAM) {
        c->buckets = ron_xcalloc(f->nbuckets + 1, sizeof *c->buckets);
        c->bounds = f->bounds;
        c->nbuckets = f->nbuckets;
    }
    return c;
}

static uint32_t
key_hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 16777619u;
    return h;
}

/* Insert children[idx] into the slot table. Family mutex held. */
static void
slots_insert(met_family_t *f, size_t idx)
{
    const met_child_t *c = f->children[idx];
    size_t mask = f->nslots - 1;
    for (size_t i = key_hash(c->key, c->keylen) & mask;; i = (i + 1) & mask) {
        if (f->slots[i] == 0) {
            f->slots[i] = (uint32_t)idx + 1;
            return;
        }
    }
}

/* Add c to f's children, growing the arrays. Family mutex held. */
static void
family_add_child(met_family_t *f, met_child_t *c)
{
    if (f->nchildren == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->children = ron_xrealloc(f->children, f->cap * sizeof(met_child_t *));
    }
    f->children[f->nchildren++] = c;
    if (2 * f->nchildren >= f->nslots) {
        free(f->slots);
        f->nslots = f->nslots ? f->nslots * 2 : 16;
        f->slots = ron_xcalloc(f->nslots, sizeof *f->slots);
        for (size_t i = 0; i < f->nchildren; i++)
            slots_insert(f, i);
    } else {
        slots_insert(f, f->nchildren - 1);
    }
}

static met_family_t *
family_new(const met_desc_t *d, const double *b, size_t nb)
{
    met_family_t *f = ron_xcalloc(1, sizeof *f);
    f->type = (int)d->type;
    f->name = ron_xstrdup(d->name);
    f->help = ron_xstrdup(d->help);
    f->nlabels = d->nlabels;
    f->labels = ron_xcalloc(d->nlabels ? d->nlabels : 1, sizeof *f->labels);
    for (size_t i = 0; i < d->nlabels; i++)
        f->labels[i] = ron_xstrdup(d->labels[i]);
    f->nbuckets = nb;
    if (nb > 0) {
        f->bounds = ron_xmalloc(nb * sizeof *f->bounds);
        memcpy(f->bounds, b, nb * sizeof *b);
    }
    f->max_children = d->max_children ? d->max_children : MET_DEFAULT_MAX_CHILDREN;
    pthread_mutex_init(&f->mu, NULL);
    if (f->nlabels == 0)
        family_add_child(f, child_new(f, "", 0));
    return f;
}

int
met_family_register(met_registry_t *r, const met_desc_t *d, met_family_t **fam_out)
{
    const double *b = NULL;
    size_t nb = 0;
    int rc = desc_check(d, &b, &nb);
    if (rc < 0)
        return rc;

    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->nfams; i++) {
        if (strcmp(r->fams[i]->name, d->name) != 0)
            continue;
        if (!family_matches(r->fams[i], d, b, nb)) {
            rc = -EEXIST;
            goto out;
        }
        *fam_out = r->fams[i];
        goto out;
    }
    if (r->nfams == MET_MAX_FAMILIES) {
        rc = RON_EBUSY;
        goto out;
    }
    if (r->nfams == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->fams = ron_xrealloc(r->fams, r->cap * sizeof(met_family_t *));
    }
    r->fams[r->nfams] = family_new(d, b, nb);
    *fam_out = r->fams[r->nfams++];
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Find or create the child for values. Returns the overflow child when the
 * family is full or a value is unfit. */
static met_child_t *
family_child(met_family_t *f, const char *const *values)
{
    char key[MET_MAX_LABELS * (MET_MAX_LABEL_VALUE + 1)];
    size_t keylen = 0;
    bool fit = true;
    met_child_t *c = NULL;

    assert(f->nlabels == 0 || values != NULL);
    for (size_t i = 0; i < f->nlabels && fit; i++) {
        assert(values[i] != NULL);
        size_t n = strnlen(values[i], MET_MAX_LABEL_VALUE + 1);
        if (n > MET_MAX_LABEL_VALUE || !ron_utf8_valid(values[i], n)) {
            fit = false;
            break;
        }
        memcpy(key + keylen, values[i], n);
        keylen += n;
        key[keylen++] = '\0';
    }

    pthread_mutex_lock(&f->mu);
    if (fit) {
        size_t mask = f->nslots - 1;
        for (size_t i = key_hash(key, keylen) & mask; f->nslots > 0 && f->slots[i] != 0;
             i = (i + 1) & mask) {
            met_child_t *x = f->children[f->slots[i] - 1];
            if (x->keylen == keylen && memcmp(x->key, key, keylen) == 0) {
                c = x;
                goto out;
            }
        }
        if (f->nchildren < f->max_children) {
            c = child_new(f, key, keylen);
            family_add_child(f, c);
            goto out;
        }
    }
    if (f->overflow == NULL) {
        keylen = 0;
        for (size_t i = 0; i < f->nlabels; i++) {
            memcpy(key + keylen, MET_OVERFLOW_VALUE, sizeof MET_OVERFLOW_VALUE);
            keylen += sizeof MET_OVERFLOW_VALUE;
        }
        f->overflow = child_new(f, key, keylen);
    }
    c = f->overflow;
out:
    pthread_mutex_unlock(&f->mu);
    return c;
}

met_counter_t *
met_family_counter(met_family_t *f, const char *const *values)
{
    assert(f->type == MET_COUNTER);
    return (met_counter_t *)family_child(f, values);
}

met_gauge_t *
met_family_gauge(met_family_t *f, const char *const *values)
{
    assert(f->type == MET_GAUGE);
    return (met_gauge_t *)family_child(f, values);
}

met_histogram_t *
met_family_histogram(met_family_t *f, const char *const *values)
{
    assert(f->type == MET_HISTOGRAM);
    return (met_histogram_t *)family_child(f, values);
}

size_t
met_family_children(met_family_t *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->nchildren + (f->overflow != NULL);
    pthread_mutex_unlock(&f->mu);
    return n;
}

static int
register_simple(met_registry_t *r, met_type_t type, const char *name, const char *help,
                const double *buckets, size_t nbuckets, met_child_t **c_out)
{
    met_desc_t d = {type, name, help, NULL, 0, buckets, nbuckets, 0};
    met_family_t *f;
    int rc = met_family_register(r, &d, &f);
    if (rc == 0)
        *c_out = family_child(f, NULL);
    return rc;
}

int
met_counter_register(met_registry_t *r, const char *name, const char *help,
                     met_counter_t **c_out)
{
    return register_simple(r, MET_COUNTER, name, help, NULL, 0, (met_child_t **)c_out);
}

int
met_gauge_register(met_registry_t *r, const char *name, const char *help, met_gauge_t **g_out)
{
    return register_simple(r, MET_GAUGE, name, help, NULL, 0, (met_child_t **)g_out);
}

int
met_histogram_register(met_registry_t *r, const char *name, const char *help,
                       const double *buckets, size_t nbuckets, met_histogram_t **h_out)
{
    return register_simple(r, MET_HISTOGRAM, name, help, buckets, nbuckets,
                           (met_child_t **)h_out);
}

/* ---- updates ---- */

static uint64_t
bits_of(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double
double_of(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static void
atomic_add_double(_Atomic uint64_t *a, double d)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, bits_of(double_of(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void
met_counter_inc(met_counter_t *c)
{
    atomic_fetch_add_explicit(&((met_child_t *)c)->v, 1, memory_order_relaxed);
}

void
met_counter_add(met_counter_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(&((met_child_t *)c)->v, n, memory_order_relaxed);
}

uint64_t
met_counter_get(const met_counter_t *c)
{
    return atomic_load_explicit(&((met_child_t *)c)->v, memory_order_relaxed);
}

void
met_gauge_set(met_gauge_t *g, double v)
{
    atomic_store_explicit(&((met_child_t *)g)->v, bits_of(v), memory_order_relaxed);
}

void
met_gauge_add(met_gauge_t *g, double d)
{
    atomic_add_double(&((met_child_t *)g)->v, d);
}

void
met_gauge_inc(met_gauge_t *g)
{
    met_gauge_add(g, 1.0);
}

void
met_gauge_dec(met_gauge_t *g)
{
    met_gauge_add(g, -1.0);
}

double
met_gauge_get(const met_gauge_t *g)
{
    return double_of(atomic_load_explicit(&((met_child_t *)g)->v, memory_order_relaxed));
}

void
met_histogram_observe(met_histogram_t *h, double v)
{
    met_child_t *c = (met_child_t *)h;
    size_t lo = 0, hi = c->nbuckets; /* first bound >= v is in [lo, hi]; hi = +Inf */

    if (isnan(v)) {
        lo = c->nbuckets;
    } else {
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c->bounds[mid] >= v)
                hi = mid;
            else
                lo = mid + 1;
        }
    }
    atomic_fetch_add_explicit(&c->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&c->sum_bits, v);
}

uint64_t
met_histogram_count(const met_histogram_t *h)
{
    met_child_t *c = (met_child_t *)h;
    uint64_t n = 0;
    for (size_t i = 0; i <= c->nbuckets; i++)
        n += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
    return n;
}

double
met_histogram_sum(const met_histogram_t *h)
{
    return double_of(atomic_load_explicit(&((met_child_t *)h)->sum_bits, memory_order_relaxed));
}

/* ---- exposition ---- */

static int
cmp_family(const void *a, const void *b)
{
    return strcmp((*(met_family_t *const *)a)->name, (*(met_family_t *const *)b)->name);
}

static int
cmp_child(const void *a, const void *b)
{
    const met_child_t *x = *(met_child_t *const *)a, *y = *(met_child_t *const *)b;
    int c = memcmp(x->key, y->key, RON_MIN(x->keylen, y->keylen));
    if (c != 0)
        return c;
    return x->keylen < y->keylen ? -1 : x->keylen > y->keylen;
}

/* Append "name<suffix>{labels[,le="bound"]} " for child c. */
static void
render_series(met__buf_t *b, const met_family_t *f, const met_child_t *c, const char *suffix,
              const double *le, bool le_inf)
{
    const char *v = c->key;
    bool any = f->nlabels > 0 || le != NULL || le_inf;

    met__buf_puts(b, f->name);
    met__buf_puts(b, suffix);
    if (any)
        met__buf_add(b, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t n = strlen(v);
        if (i > 0)
            met__buf_add(b, ",", 1);
        met__buf_puts(b, f->labels[i]);
        met__buf_add(b, "=\"", 2);
        met__buf_escape(b, v, n, true);
        met__buf_add(b, "\"", 1);
        v += n + 1;
    }
    if (le != NULL || le_inf) {
        met__buf_puts(b, f->nlabels > 0 ? ",le=\"" : "le=\"");
        if (le != NULL)
            met__buf_double(b, *le);
        else
            met__buf_puts(b, "+Inf");
        met__buf_add(b, "\"", 1);
    }
    if (any)
        met__buf_add(b, "}", 1);
    met__buf_add(b, " ", 1);
}

static void
render_child(met__buf_t *b, const met_family_t *f, const met_child_t *c)
{
    if (f->type == MET_COUNTER) {
        render_series(b, f, c, "", NULL, false);
        met__buf_printf(b, "%llu\n", (unsigned long long)atomic_load_explicit(
                                          &((met_child_t *)c)->v, memory_order_relaxed));
    } else if (f->type == MET_GAUGE) {
        render_series(b, f, c, "", NULL, false);
        met__buf_double(b, met_gauge_get((const met_gauge_t *)c));
        met__buf_add(b, "\n", 1);
    } else {
        uint64_t cum = 0;
        for (size_t i = 0; i <= f->nbuckets; i++) {
            cum += atomic_load_explicit(&((met_child_t *)c)->buckets[i], memory_order_relaxed);
            render_series(b, f, c, "_bucket", i < f->nbuckets ? &f->bounds[i] : NULL,
                          i == f->nbuckets);
            met__buf_printf(b, "%llu\n", (unsigned long long)cum);
        }
        render_series(b, f, c, "_sum", NULL, false);
        met__buf_double(b, met_histogram_sum((const met_histogram_t *)c));
        met__buf_add(b, "\n", 1);
        render_series(b, f, c, "_count", NULL, false);
        met__buf_printf(b, "%llu\n", (unsigned long long)cum);
    }
}

static void
render_family(met__buf_t *b, met_family_t *f)
{
    met__buf_puts(b, "# HELP ");
    met__buf_puts(b, f->name);
    met__buf_add(b, " ", 1);
    met__buf_escape(b, f->help, strlen(f->help), false);
    met__buf_puts(b, "\n# TYPE ");
    met__buf_puts(b, f->name);
    met__buf_add(b, " ", 1);
    met__buf_puts(b, met__type_name(f->type));
    met__buf_add(b, "\n", 1);

    pthread_mutex_lock(&f->mu);
    size_t n = f->nchildren;
    met_child_t **sorted = ron_xmalloc((n + 1) * sizeof(met_child_t *));
    if (n > 0)
        memcpy(sorted, f->children, n * sizeof(met_child_t *));
    if (f->overflow != NULL)
        sorted[n++] = f->overflow;
    pthread_mutex_unlock(&f->mu);

    qsort(sorted, n, sizeof(met_child_t *), cmp_child);
    for (size_t i = 0; i < n; i++)
        render_child(b, f, sorted[i]);
    free(sorted);
}

int
met_registry_render(met_registry_t *r, char **text_out, size_t *len_out)
{
    met__buf_t b = {0};

    pthread_mutex_lock(&r->mu);
    size_t n = r->nfams;
    met_family_t **sorted = ron_xmalloc((n ? n : 1) * sizeof(met_family_t *));
    if (n > 0)
        memcpy(sorted, r->fams, n * sizeof(met_family_t *));
    pthread_mutex_unlock(&r->mu); /* families are never removed before met_registry_free */

    qsort(sorted, n, sizeof(met_family_t *), cmp_family);
    for (size_t i = 0; i < n; i++)
        render_family(&b, sorted[i]);
    free(sorted);
    *text_out = met__buf_take(&b, len_out);
    return 0;
}

size_t
met_registry_render_buf(met_registry_t *r, char *buf, size_t cap)
{
    char *text = NULL;
    size_t len = 0;

    if (met_registry_render(r, &text, &len) < 0 || len >= cap) {
        free(text);
        return 0;
    }
    memcpy(buf, text, len);
    free(text);
    return len;
}
