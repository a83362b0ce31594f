/*
 * ron_metrics.h - Prometheus registry, text exposition (format 0.0.4) and the
 * merger the admin port uses to join every child process's metrics.
 *
 * Model: a registry holds metric families (counter, gauge, histogram), each
 * with a fixed list of label names. A family's children are its label-value
 * combinations; looking one up returns a handle the caller caches and updates
 * with plain atomics:
 *
 *   met_family_t *rej;
 *   static const char *const reason[] = {"reason"};
 *   met_desc_t d = {MET_COUNTER, "rejected_total", "Requests refused.", reason, 1};
 *   met_family_register(reg, &d, &rej);
 *   met_counter_t *busy = met_family_counter(rej, (const char *[]){"busy"});
 *   met_counter_inc(busy);                       // one relaxed atomic add
 *
 * Cardinality is bounded: a family holds at most max_children children; a
 * lookup past that bound (or with a value that is too long or not UTF-8)
 * returns the family's overflow child, whose label values are all
 * MET_OVERFLOW_VALUE, so a peer that chooses label values cannot grow memory.
 *
 * Names follow the rules `promtool check metrics` lints (snake_case, counters
 * end in _total and nothing else does, base units, no unit abbreviations, no
 * type in the name, non-empty help); registration refuses names that break
 * them, so every exposition we print passes promtool.
 *
 * Threads: every registry, family and metric function is thread-safe.
 * Updates are lock-free (relaxed C11 atomics); registration, child lookup and
 * rendering take a mutex and are meant for start-up, the first use of a label
 * set, and scrapes. A met_merge_t belongs to one thread at a time.
 *
 * Merging (the admin port's /metrics in macronode):
 *
 *   met_merge_t *m = met_merge_new();
 *   met_merge_add(m, NULL, kernel_text, kernel_len, NULL);      // no label added
 *   met_merge_add(m, "svc-storage", child_text, child_len, &st); // service="svc-storage"
 *   met_merge_render(m, &out, &out_len);                          // one valid exposition
 *   met_merge_free(m);
 */
#ifndef RON_METRICS_H
#define RON_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ---- */
#define MET_MAX_NAME 128u               /* metric and label name bytes: longer names are bugs */
#define MET_MAX_HELP 1024u              /* help text bytes, unescaped */
#define MET_MAX_LABELS 8u               /* label names per family in the registry */
#define MET_MAX_LABEL_VALUE 256u        /* label value bytes; longer values go to overflow */
#define MET_MAX_BUCKETS 64u             /* explicit histogram bounds (+Inf is implicit) */
#define MET_MAX_FAMILIES 4096u          /* families per registry */
#define MET_DEFAULT_MAX_CHILDREN 256u   /* children per family unless the desc says otherwise */
#define MET_MAX_CHILDREN 65536u         /* ceiling of a family's max_children */
#define MET_OVERFLOW_VALUE "__overflow__" /* every label value of an overflow child */

/* Merge limits: a child's text is untrusted. */
#define MET_MERGE_MAX_INPUT (4u << 20)  /* bytes of one input; larger inputs are refused whole */
#define MET_MERGE_MAX_LINE 8192u        /* bytes of one line; longer lines are rejected */
#define MET_MERGE_MAX_LABELS 32u        /* labels on one sample line */
#define MET_MERGE_MAX_FAMILIES 8192u    /* families across all inputs of one merge */
#define MET_MERGE_MAX_SAMPLES 200000u   /* sample lines across all inputs of one merge */
#define MET_MERGE_MAX_SERVICE 64u       /* bytes of a service name */

/* Default latency buckets, seconds (the blueprint's). */
#define MET_DEFAULT_BUCKETS_N 13u
extern const double MET_DEFAULT_BUCKETS[MET_DEFAULT_BUCKETS_N];

typedef enum { MET_COUNTER = 1, MET_GAUGE, MET_HISTOGRAM } met_type_t;

typedef struct met_registry met_registry_t;
typedef struct met_family met_family_t;
typedef struct met_counter met_counter_t;
typedef struct met_gauge met_gauge_t;
typedef struct met_histogram met_histogram_t;

/* Describes a family. Every pointer is borrowed: registration copies it. */
typedef struct {
    met_type_t type;
    const char *name;                /* [a-zA-Z_][a-zA-Z0-9_]*, promtool lint-clean */
    const char *help;                /* non-empty, at most MET_MAX_HELP bytes, UTF-8 */
    const char *const *labels;       /* nlabels label names; none may be "le" or start "__" */
    size_t nlabels;                  /* 0..MET_MAX_LABELS */
    const double *buckets;           /* histograms: strictly increasing finite bounds */
    size_t nbuckets;                 /* 0 = MET_DEFAULT_BUCKETS; else 1..MET_MAX_BUCKETS */
    size_t max_children;             /* 0 = MET_DEFAULT_MAX_CHILDREN; else <= MET_MAX_CHILDREN */
} met_desc_t;

/* ---- golden metrics (DESIGN.md §7): shared names so every service agrees ---- */
#define MET_NAME_REQUEST_LATENCY "request_latency_seconds"    /* histogram {route} */
#define MET_NAME_REJECTED "rejected_total"                     /* counter {reason} */
#define MET_NAME_INFLIGHT "inflight_requests"                  /* gauge */
#define MET_NAME_BUS_OVERFLOW "bus_overflow_dropped_total"     /* counter */
#define MET_NAME_SERVICE_RESTARTS "service_restarts_total"     /* counter {service} */
#define MET_NAME_MERGE_REJECTED "metrics_merge_rejected_lines_total" /* counter {service} */
extern const met_desc_t MET_DESC_REQUEST_LATENCY; /* default latency buckets, label "route" */
extern const met_desc_t MET_DESC_REJECTED;        /* label "reason" */
extern const met_desc_t MET_DESC_INFLIGHT;        /* no labels */
extern const met_desc_t MET_DESC_BUS_OVERFLOW;    /* no labels */
extern const met_desc_t MET_DESC_SERVICE_RESTARTS; /* label "service" */
extern const met_desc_t MET_DESC_MERGE_REJECTED;  /* label "service": met_merge_stats_t.rejected */

/* ---- registry ---- */

/* Return a new empty registry (caller frees with met_registry_free). */
met_registry_t *met_registry_new(void);

/* Free r and every family and child in it; handles die with it. NULL is a no-op.
 * No other thread may use r or its handles during or after the call. */
void met_registry_free(met_registry_t *r);

/*
 * Register the family d describes, or find the identical one already there
 * (same type, help, labels, buckets and max_children), so two modules can
 * share a family by registering it twice. A family with no labels gets its
 * only child now. Sets *fam_out to a handle valid until met_registry_free.
 * Returns 0, RON_EINVAL if d breaks a rule of met_desc_t, -EEXIST if the
 * name is taken by a different family, or RON_EBUSY at MET_MAX_FAMILIES.
 */
int met_family_register(met_registry_t *r, const met_desc_t *d, met_family_t **fam_out);

/*
 * Return the child of f (a counter family) with these label values (one per
 * label name, borrowed; NULL when the family has no labels), creating it when
 * new. Returns the overflow child when the family is full or a value is longer
 * than MET_MAX_LABEL_VALUE or not valid UTF-8. Never NULL. Cache the handle:
 * this takes the family's mutex. Calling it on a family of another type is a bug (assert).
 */
met_counter_t *met_family_counter(met_family_t *f, const char *const *values);
met_gauge_t *met_family_gauge(met_family_t *f, const char *const *values);
met_histogram_t *met_family_histogram(met_family_t *f, const char *const *values);

/* Number of children of f, overflow child included. */
size_t met_family_children(met_family_t *f);

/* Shortcuts for a family without labels: register and return its only child. */
int met_counter_register(met_registry_t *r, const char *name, const char *help,
                         met_counter_t **c_out);
int met_gauge_register(met_registry_t *r, const char *name, const char *help, met_gauge_t **g_out);
/* buckets NULL (nbuckets 0) means MET_DEFAULT_BUCKETS. */
int met_histogram_register(met_registry_t *r, const char *name, const char *help,
                           const double *buckets, size_t nbuckets, met_histogram_t **h_out);

/* ---- updates: lock-free, any thread ---- */

void met_counter_inc(met_counter_t *c);             /* one relaxed atomic add */
void met_counter_add(met_counter_t *c, uint64_t n);
uint64_t met_counter_get(const met_counter_t *c);

void met_gauge_set(met_gauge_t *g, double v);       /* one atomic store */
void met_gauge_add(met_gauge_t *g, double d);       /* CAS loop on the value's bits */
void met_gauge_inc(met_gauge_t *g);
void met_gauge_dec(met_gauge_t *g);
double met_gauge_get(const met_gauge_t *g);

/* Count v in the first bucket whose bound is >= v (one atomic add, binary
 * search over the bounds) and add it to the sum (CAS loop). NaN is counted
 * in +Inf and added to the sum, as Prometheus clients do. */
void met_histogram_observe(met_histogram_t *h, double v);
uint64_t met_histogram_count(const met_histogram_t *h);
double met_histogram_sum(const met_histogram_t *h);

/* ---- exposition ---- */

/*
 * Render every family of r as Prometheus text format 0.0.4: for each family
 * (sorted by name) "# HELP", "# TYPE" and its samples, children sorted by
 * label values; histograms as cumulative _bucket{le=...} lines ending with
 * le="+Inf", then _sum and _count (= the +Inf bucket). Label values and help
 * are escaped. Sets *text_out to a new NUL-terminated string (caller frees
 * with free()) and *len_out to its length. Returns 0.
 */
int met_registry_render(met_registry_t *r, char **text_out, size_t *len_out);

/*
 * met_registry_render() into buf (cap bytes, not NUL-terminated; a caller
 * that adds a NUL passes cap - 1), for the services' *_metrics(buf, cap)
 * functions. Returns the length, or 0 when the text does not fit.
 */
size_t met_registry_render_buf(met_registry_t *r, char *buf, size_t cap);

/* The text/plain content type of format 0.0.4, for the HTTP response. */
#define MET_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- merging several expositions into one (the admin port's /metrics) ---- */

typedef struct met_merge met_merge_t;

/* Counts of one met_merge_add call (lines, not bytes). */
typedef struct {
    size_t samples;     /* sample lines accepted */
    size_t rejected;    /* lines rejected: syntax, bounds, lint, repeats, type clash */
} met_merge_stats_t;

/* Return a new empty merger (caller frees with met_merge_free). */
met_merge_t *met_merge_new(void);
void met_merge_free(met_merge_t *m);

/*
 * Parse text (len bytes, borrowed, untrusted, need not be NUL-terminated)
 * and add its families and samples to m. When service is not NULL, every
 * sample gets the label service="<service>" (a label already named service
 * is renamed exported_service, as Prometheus does for target labels); NULL
 * passes samples through unchanged (the kernel's own registry).
 *
 * Parsing is strict. A line is skipped and counted in stats_out->rejected
 * when it is not a valid HELP, TYPE, comment or sample line; is longer than
 * MET_MERGE_MAX_LINE; repeats a HELP or TYPE; declares a type that clashes
 * with what an earlier input declared for the same family (the family's
 * samples in this input are then all rejected); names a family promtool would
 * lint; repeats a series (same name and labels, in any order) already merged;
 * or comes after MET_MERGE_MAX_SAMPLES or MET_MERGE_MAX_FAMILIES. HELP and TYPE come from
 * the first input that gives them; a family no input gave HELP is rendered
 * with the help text "No help text given." (promtool requires one).
 * Returns 0, RON_ETOOBIG if len > MET_MERGE_MAX_INPUT (nothing added), or
 * RON_EINVAL if service is empty, longer than MET_MERGE_MAX_SERVICE or not UTF-8.
 * stats_out may be NULL.
 */
int met_merge_add(met_merge_t *m, const char *service, const char *text, size_t len,
                  met_merge_stats_t *stats_out);

/*
 * Render everything added so far as one exposition: each family once, sorted
 * by name, with its HELP and TYPE once, then its samples from every input in
 * the order the inputs were added. Each sample line is canonical: service
 * first, the other labels sorted by name, le/quantile last; rendering the
 * result again gives the same bytes. Sets *text_out to a new NUL-terminated
 * string (caller frees with free()) and *len_out. Returns 0.
 */
int met_merge_render(met_merge_t *m, char **text_out, size_t *len_out);

#endif
