/*
 * test_ron_metrics.c - the registry (registration rules, bounded children,
 * atomic updates from many threads), the text exposition (exact text and
 * `promtool check metrics`), and the merger of several expositions.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ron_err.h"
#include "ron_metrics.h"

/* Run promtool check metrics on text; return its exit status and put what it
 * printed in out (NUL-terminated). */
static int
promtool_check(const char *text, size_t len, char *out, size_t outcap)
{
    char path[] = "/tmp/ron_metrics_XXXXXX";
    char cmd[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    snprintf(cmd, sizeof cmd, "/usr/bin/promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outcap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static void
assert_promtool_clean(const char *text, size_t len)
{
    char out[4096];
    int rc = promtool_check(text, len, out, sizeof out);
    if (rc != 0 || out[0] != '\0')
        fprintf(stderr, "promtool (rc %d): %s\n--- text ---\n%s", rc, out, text);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "");
}

static char *
render(met_registry_t *r)
{
    char *text;
    size_t len;
    assert_int_equal(met_registry_render(r, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void
test_counter_family_counts_per_label_value(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_family_t *f;
    assert_int_equal(met_family_register(r, &MET_DESC_REJECTED, &f), 0);
    met_counter_t *busy = met_family_counter(f, (const char *[]){"busy"});
    met_counter_t *busy2 = met_family_counter(f, (const char *[]){"busy"});
    met_counter_t *tb = met_family_counter(f, (const char *[]){"too_large"});
    assert_ptr_equal(busy, busy2);
    assert_ptr_not_equal(busy, tb);
    met_counter_inc(busy);
    met_counter_add(busy2, 4);
    met_counter_inc(tb);
    assert_int_equal(met_counter_get(busy), 5);
    assert_int_equal(met_counter_get(tb), 1);
    assert_int_equal(met_family_children(f), 2);
    char *text = render(r);
    assert_string_equal(text, "# HELP rejected_total Requests refused, by reason.\n"
                              "# TYPE rejected_total counter\n"
                              "rejected_total{reason=\"busy\"} 5\n"
                              "rejected_total{reason=\"too_large\"} 1\n");
    free(text);
    met_registry_free(r);
}

static void
test_registration_refuses_names_promtool_would_lint(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_counter_t *c;
    met_gauge_t *g;
    met_family_t *f;
    assert_int_equal(met_counter_register(r, "requests", "h", &c), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "depth_total", "h", &g), RON_EINVAL);
    assert_int_equal(met_counter_register(r, "badName_total", "h", &c), RON_EINVAL);
    assert_int_equal(met_counter_register(r, "a:b_total", "h", &c), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "wait_milliseconds", "h", &g), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "wait_ms", "h", &g), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "queue_gauge", "h", &g), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "queue_count", "h", &g), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "9lives", "h", &g), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "depth", "", &g), RON_EINVAL);
    assert_int_equal(met_gauge_register(r, "depth", "bad \xff utf8", &g), RON_EINVAL);
    met_desc_t d = {MET_COUNTER, "x_total", "h", (const char *[]){"le"}, 1};
    assert_int_equal(met_family_register(r, &d, &f), RON_EINVAL);
    d.labels = (const char *[]){"__x"};
    assert_int_equal(met_family_register(r, &d, &f), RON_EINVAL);
    d.labels = (const char *[]){"a", "a"};
    d.nlabels = 2;
    assert_int_equal(met_family_register(r, &d, &f), RON_EINVAL);
    d.labels = (const char *[]){"peerId"};
    d.nlabels = 1;
    assert_int_equal(met_family_register(r, &d, &f), RON_EINVAL);
    met_desc_t h = {MET_HISTOGRAM, "size_bytes", "h", NULL, 0, (const double[]){1, 1}, 2};
    assert_int_equal(met_family_register(r, &h, &f), RON_EINVAL);
    h.buckets = (const double[]){1, INFINITY};
    assert_int_equal(met_family_register(r, &h, &f), RON_EINVAL);
    h.buckets = (const double[]){1, 2};
    assert_int_equal(met_family_register(r, &h, &f), 0);
    met_desc_t bg = {MET_GAUGE, "x", "h", NULL, 0, (const double[]){1}, 1};
    assert_int_equal(met_family_register(r, &bg, &f), RON_EINVAL);
    char *text = render(r);
    assert_null(strstr(text, "requests"));
    free(text);
    met_registry_free(r);
}

static void
test_register_twice_shares_identical_family_and_refuses_different(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_family_t *a, *b;
    met_counter_t *c1, *c2;
    met_gauge_t *g;
    assert_int_equal(met_family_register(r, &MET_DESC_SERVICE_RESTARTS, &a), 0);
    assert_int_equal(met_family_register(r, &MET_DESC_SERVICE_RESTARTS, &b), 0);
    assert_ptr_equal(a, b);
    assert_int_equal(met_counter_register(r, "service_restarts_total", "Other help.", &c1),
                     -EEXIST);
    assert_int_equal(met_counter_register(r, "x_total", "h", &c1), 0);
    assert_int_equal(met_counter_register(r, "x_total", "h", &c2), 0);
    assert_ptr_equal(c1, c2);
    assert_int_equal(met_gauge_register(r, "x_total", "h", &g), RON_EINVAL);
    met_registry_free(r);
}

static void
test_family_caps_children_and_routes_excess_to_overflow_child(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_family_t *f;
    met_desc_t d = {MET_COUNTER, "peer_frames_total", "Frames by peer.",
                    (const char *[]){"peer"}, 1, NULL, 0, 4};
    assert_int_equal(met_family_register(r, &d, &f), 0);
    char v[16];
    for (int i = 0; i < 100; i++) {
        snprintf(v, sizeof v, "p%d", i);
        met_counter_inc(met_family_counter(f, (const char *[]){v}));
    }
    assert_int_equal(met_family_children(f), 5);
    met_counter_t *o = met_family_counter(f, (const char *[]){"another"});
    assert_int_equal(met_counter_get(o), 96);
    /* a known child is still found once the family is full */
    assert_int_equal(met_counter_get(met_family_counter(f, (const char *[]){"p3"})), 1);
    char *text = render(r);
    assert_non_null(strstr(text, "peer_frames_total{peer=\"" MET_OVERFLOW_VALUE "\"} 96\n"));
    free(text);
    met_registry_free(r);
}

static void
test_overlong_or_invalid_utf8_label_values_go_to_overflow(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_family_t *f;
    assert_int_equal(met_family_register(r, &MET_DESC_REJECTED, &f), 0);
    char big[MET_MAX_LABEL_VALUE + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    met_counter_t *a = met_family_counter(f, (const char *[]){big});
    met_counter_t *b = met_family_counter(f, (const char *[]){"\xc3\x28"});
    met_counter_t *ok = met_family_counter(f, (const char *[]){"caf\xc3\xa9"});
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, ok);
    big[MET_MAX_LABEL_VALUE] = '\0'; /* exactly the limit fits */
    assert_ptr_not_equal(met_family_counter(f, (const char *[]){big}), a);
    met_registry_free(r);
}

static void
test_histogram_renders_cumulative_buckets_sum_and_count(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_histogram_t *h;
    assert_int_equal(
        met_histogram_register(r, "obj_size_bytes", "Object sizes.", (const double[]){1, 10}, 2,
                               &h),
        0);
    met_histogram_observe(h, 0.5);
    met_histogram_observe(h, 1);   /* le is inclusive */
    met_histogram_observe(h, 7);
    met_histogram_observe(h, 1000);
    met_histogram_observe(h, NAN); /* counted in +Inf */
    assert_int_equal(met_histogram_count(h), 5);
    char *text = render(r);
    assert_string_equal(text, "# HELP obj_size_bytes Object sizes.\n"
                              "# TYPE obj_size_bytes histogram\n"
                              "obj_size_bytes_bucket{le=\"1\"} 2\n"
                              "obj_size_bytes_bucket{le=\"10\"} 3\n"
                              "obj_size_bytes_bucket{le=\"+Inf\"} 5\n"
                              "obj_size_bytes_sum NaN\n"
                              "obj_size_bytes_count 5\n");
    free(text);
    met_registry_free(r);
}

/* Seeded property test: binary-search bucket choice equals a linear scan. */
static void
test_histogram_observe_matches_a_linear_bucket_scan(void **state)
{
    (void)state;
    unsigned seed = (unsigned)time(NULL);
    const char *env = getenv("RON_TEST_SEED");
    if (env != NULL)
        seed = (unsigned)strtoul(env, NULL, 10);
    srand(seed);
    static const double bounds[] = {-5, -0.5, 0, 1e-9, 0.25, 1, 3, 1e6};
    const size_t nb = sizeof bounds / sizeof bounds[0];
    met_registry_t *r = met_registry_new();
    met_histogram_t *h;
    assert_int_equal(met_histogram_register(r, "prop_seconds", "p", bounds, nb, &h), 0);
    uint64_t want[sizeof bounds / sizeof bounds[0] + 1] = {0};
    for (int i = 0; i < 20000; i++) {
        double v;
        switch (rand() % 4) {
        case 0:
            v = bounds[(size_t)rand() % nb]; /* exactly on a bound */
            break;
        case 1:
            v = nextafter(bounds[(size_t)rand() % nb], rand() % 2 ? INFINITY : -INFINITY);
            break;
        case 2:
            v = ((double)rand() / RAND_MAX - 0.5) * 20;
            break;
        default:
            v = (rand() % 2 ? 1 : -1) * ldexp((double)rand() / RAND_MAX, rand() % 80 - 40);
        }
        size_t b = 0;
        while (b < nb && !(v <= bounds[b]))
            b++;
        want[b]++;
        met_histogram_observe(h, v);
    }
    char *text = render(r);
    uint64_t cum = 0;
    const char *p = text;
    for (size_t b = 0; b <= nb; b++) {
        cum += want[b];
        p = strstr(p, "prop_seconds_bucket{");
        assert_non_null(p);
        p = strstr(p, "} ") + 2;
        unsigned long long got = strtoull(p, NULL, 10);
        if (got != cum)
            fail_msg("seed %u: bucket %zu: cumulative %llu, want %llu", seed, b, got,
                     (unsigned long long)cum);
    }
    assert_int_equal(met_histogram_count(h), 20000);
    free(text);
    met_registry_free(r);
}

static void
test_default_latency_buckets_render_shortest_bounds(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_family_t *f;
    assert_int_equal(met_family_register(r, &MET_DESC_REQUEST_LATENCY, &f), 0);
    met_histogram_t *h = met_family_histogram(f, (const char *[]){"/healthz"});
    met_histogram_observe(h, 0.003);
    met_histogram_observe(h, 0.0005);
    assert_true(fabs(met_histogram_sum(h) - 0.0035) < 1e-12);
    char *text = render(r);
    assert_non_null(strstr(text, "request_latency_seconds_bucket{route=\"/healthz\",le=\"0.0005\"} 1\n"
                                 "request_latency_seconds_bucket{route=\"/healthz\",le=\"0.001\"} 1\n"
                                 "request_latency_seconds_bucket{route=\"/healthz\",le=\"0.0025\"} 1\n"
                                 "request_latency_seconds_bucket{route=\"/healthz\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(text, "request_latency_seconds_bucket{route=\"/healthz\",le=\"2.5\"} 2\n"
                                 "request_latency_seconds_bucket{route=\"/healthz\",le=\"5\"} 2\n"
                                 "request_latency_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 2\n"
                                 "request_latency_seconds_sum{route=\"/healthz\"} 0.0035\n"));
    free(text);
    met_registry_free(r);
}

static void
test_render_escapes_label_values_and_help(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_family_t *f;
    met_desc_t d = {MET_GAUGE, "odd_value", "Help with \\ and\nnewline \"quoted\".",
                    (const char *[]){"v"}, 1};
    assert_int_equal(met_family_register(r, &d, &f), 0);
    met_gauge_set(met_family_gauge(f, (const char *[]){"a\"b\\c\nd"}), -2.5);
    char *text = render(r);
    assert_string_equal(text,
                        "# HELP odd_value Help with \\\\ and\\nnewline \"quoted\".\n"
                        "# TYPE odd_value gauge\n"
                        "odd_value{v=\"a\\\"b\\\\c\\nd\"} -2.5\n");
    free(text);
    met_registry_free(r);
}

/* render_buf copies the same text as render, and only when it fits with room for a NUL. */
static void
test_render_buf_copies_the_text_only_when_it_fits(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_counter_t *c;
    char buf[256];
    assert_int_equal(met_counter_register(r, "alpha_total", "a", &c), 0);
    met_counter_inc(c);
    char *text = render(r);
    size_t len = strlen(text);
    assert_int_equal(met_registry_render_buf(r, buf, sizeof buf), len);
    assert_memory_equal(buf, text, len);
    assert_int_equal(met_registry_render_buf(r, buf, len + 1), len);
    assert_int_equal(met_registry_render_buf(r, buf, len), 0); /* no room for a NUL */
    assert_int_equal(met_registry_render_buf(r, buf, 0), 0);
    free(text);
    met_registry_free(r);
}

static void
test_render_sorts_families_by_name_and_children_by_values(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_gauge_t *g;
    met_counter_t *c;
    met_family_t *f;
    assert_int_equal(met_gauge_register(r, "zeta", "z", &g), 0);
    assert_int_equal(met_counter_register(r, "alpha_total", "a", &c), 0);
    assert_int_equal(met_family_register(r, &MET_DESC_REJECTED, &f), 0);
    met_family_counter(f, (const char *[]){"zz"});
    met_family_counter(f, (const char *[]){"aa"});
    met_family_counter(f, (const char *[]){"m"});
    met_gauge_set(g, 1e21);
    char *text = render(r);
    assert_string_equal(text, "# HELP alpha_total a\n# TYPE alpha_total counter\nalpha_total 0\n"
                              "# HELP rejected_total Requests refused, by reason.\n"
                              "# TYPE rejected_total counter\n"
                              "rejected_total{reason=\"aa\"} 0\n"
                              "rejected_total{reason=\"m\"} 0\n"
                              "rejected_total{reason=\"zz\"} 0\n"
                              "# HELP zeta z\n# TYPE zeta gauge\nzeta 1e+21\n");
    free(text);
    met_registry_free(r);
}

/* A registry with every kind, labels, odd values and the overflow child. */
static met_registry_t *
registry_every_kind(const char *tag)
{
    met_registry_t *r = met_registry_new();
    met_family_t *f;
    met_counter_t *c;
    met_gauge_t *g;
    met_histogram_t *h;
    assert_int_equal(met_family_register(r, &MET_DESC_REJECTED, &f), 0);
    met_counter_add(met_family_counter(f, (const char *[]){"quote\"back\\slash\nnewline"}), 3);
    met_counter_inc(met_family_counter(f, (const char *[]){tag}));
    met_counter_inc(met_family_counter(f, (const char *[]){""}));
    met_counter_inc(met_family_counter(f, (const char *[]){"caf\xc3\xa9 \xe2\x9c\x93"}));
    assert_int_equal(met_family_register(r, &MET_DESC_REQUEST_LATENCY, &f), 0);
    met_histogram_observe(met_family_histogram(f, (const char *[]){"/o/{addr}"}), 0.02);
    met_histogram_observe(met_family_histogram(f, (const char *[]){"/o/{addr}"}), 7);
    met_histogram_observe(met_family_histogram(f, (const char *[]){"a\"b"}), 0.0001);
    assert_int_equal(met_family_register(r, &MET_DESC_INFLIGHT, &f), 0);
    met_gauge_inc(met_family_gauge(f, NULL));
    assert_int_equal(met_family_register(r, &MET_DESC_BUS_OVERFLOW, &f), 0);
    met_counter_add(met_family_counter(f, NULL), UINT64_MAX);
    assert_int_equal(met_family_register(r, &MET_DESC_SERVICE_RESTARTS, &f), 0);
    met_counter_inc(met_family_counter(f, (const char *[]){"svc-storage"}));
    assert_int_equal(met_family_register(r, &MET_DESC_MERGE_REJECTED, &f), 0);
    met_counter_add(met_family_counter(f, (const char *[]){"svc-storage"}), 2);
    met_desc_t small = {MET_COUNTER, "peer_frames_total", "Frames \\ per \"peer\"\nsecond line.",
                        (const char *[]){"peer", "dir"}, 2, NULL, 0, 1};
    assert_int_equal(met_family_register(r, &small, &f), 0);
    met_counter_inc(met_family_counter(f, (const char *[]){"p1", "in"}));
    met_counter_inc(met_family_counter(f, (const char *[]){"p2", "in"})); /* overflow */
    assert_int_equal(met_gauge_register(r, "temperature_celsius", "Odd values.", &g), 0);
    met_gauge_set(g, -INFINITY);
    assert_int_equal(met_gauge_register(r, "ratio", "Small value.", &g), 0);
    met_gauge_set(g, 1e-300);
    assert_int_equal(met_counter_register(r, "starts_total", "Starts.", &c), 0);
    assert_int_equal(met_histogram_register(r, "obj_size_bytes", "Sizes.",
                                            (const double[]){-1, 0, 1e6}, 3, &h),
                     0);
    met_histogram_observe(h, 5);
    return r;
}

static void
test_registry_text_passes_promtool(void **state)
{
    (void)state;
    met_registry_t *r = registry_every_kind("kernel");
    char *text = render(r);
    assert_non_null(strstr(text, "bus_overflow_dropped_total 18446744073709551615\n"));
    assert_promtool_clean(text, strlen(text));
    free(text);
    met_registry_free(r);
}

#define NTHREADS 8
#define NITER 20000

static void *
hammer(void *arg)
{
    met_registry_t *r = arg;
    met_family_t *f;
    met_counter_t *c;
    met_gauge_t *g;
    met_histogram_t *h;
    /* registration and lookup race too: every thread registers the same families */
    assert_int_equal(met_counter_register(r, "hits_total", "Hits.", &c), 0);
    assert_int_equal(met_gauge_register(r, "inflight_requests", "Requests being served now.", &g),
                     0);
    assert_int_equal(met_histogram_register(r, "wait_seconds", "Waits.", NULL, 0, &h), 0);
    assert_int_equal(met_family_register(r, &MET_DESC_REJECTED, &f), 0);
    for (int i = 0; i < NITER; i++) {
        met_counter_inc(c);
        met_gauge_inc(g);
        met_histogram_observe(h, (i % 4) * 0.25);
        if (i % 100 == 0) {
            char v[16];
            snprintf(v, sizeof v, "r%d", i % 7);
            met_counter_inc(met_family_counter(f, (const char *[]){v}));
        }
        met_gauge_dec(g);
    }
    return NULL;
}

static void *
scrape(void *arg)
{
    for (int i = 0; i < 20; i++) {
        char *text;
        size_t len;
        met_registry_render(arg, &text, &len);
        free(text);
    }
    return NULL;
}

static void
test_threads_concurrent_updates_give_exact_totals(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    pthread_t t[NTHREADS + 1];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, r), 0);
    assert_int_equal(pthread_create(&t[NTHREADS], NULL, scrape, r), 0);
    for (int i = 0; i <= NTHREADS; i++)
        pthread_join(t[i], NULL);

    met_counter_t *c;
    met_gauge_t *g;
    met_histogram_t *h;
    met_family_t *f;
    assert_int_equal(met_counter_register(r, "hits_total", "Hits.", &c), 0);
    assert_int_equal(met_gauge_register(r, "inflight_requests", "Requests being served now.", &g),
                     0);
    assert_int_equal(met_histogram_register(r, "wait_seconds", "Waits.", NULL, 0, &h), 0);
    assert_int_equal(met_family_register(r, &MET_DESC_REJECTED, &f), 0);
    assert_int_equal(met_counter_get(c), (uint64_t)NTHREADS * NITER);
    assert_true(met_gauge_get(g) == 0.0);
    assert_int_equal(met_histogram_count(h), (uint64_t)NTHREADS * NITER);
    /* 0, .25, .5, .75 each NITER/4 times per thread: exact in binary floating point */
    assert_true(met_histogram_sum(h) == NTHREADS * (NITER / 4) * 1.5);
    assert_int_equal(met_family_children(f), 7);
    uint64_t total = 0;
    char v[16];
    for (int i = 0; i < 7; i++) {
        snprintf(v, sizeof v, "r%d", i);
        total += met_counter_get(met_family_counter(f, (const char *[]){v}));
    }
    assert_int_equal(total, (uint64_t)NTHREADS * (NITER / 100));
    met_registry_free(r);
}

/* ---- merge ---- */

static char *
merge_render(met_merge_t *m)
{
    char *text;
    size_t len;
    assert_int_equal(met_merge_render(m, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void
add_ok(met_merge_t *m, const char *svc, const char *text, size_t samples)
{
    met_merge_stats_t st;
    assert_int_equal(met_merge_add(m, svc, text, strlen(text), &st), 0);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.samples, samples);
}

static void
test_merge_labels_samples_by_service_with_help_and_type_once(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    add_ok(m, NULL,
           "# HELP service_restarts_total Restarts.\n# TYPE service_restarts_total counter\n"
           "service_restarts_total{service=\"storage\"} 2\n",
           1);
    add_ok(m, "storage",
           "# HELP rejected_total Refused.\n# TYPE rejected_total counter\n"
           "rejected_total{reason=\"busy\"} 3\n"
           "# HELP up_ratio Up.\n# TYPE up_ratio gauge\nup_ratio 1 1700000000000\n",
           2);
    add_ok(m, "index",
           "# HELP rejected_total Other help ignored.\n# TYPE rejected_total counter\n"
           "rejected_total{reason=\"busy\"} 4\nrejected_total{reason=\"timeout\",} 1\n",
           2);
    char *text = merge_render(m);
    assert_string_equal(text,
                        "# HELP rejected_total Refused.\n# TYPE rejected_total counter\n"
                        "rejected_total{service=\"storage\",reason=\"busy\"} 3\n"
                        "rejected_total{service=\"index\",reason=\"busy\"} 4\n"
                        "rejected_total{service=\"index\",reason=\"timeout\"} 1\n"
                        "# HELP service_restarts_total Restarts.\n"
                        "# TYPE service_restarts_total counter\n"
                        "service_restarts_total{service=\"storage\"} 2\n"
                        "# HELP up_ratio Up.\n# TYPE up_ratio gauge\n"
                        "up_ratio{service=\"storage\"} 1 1700000000000\n");
    assert_promtool_clean(text, strlen(text));
    free(text);
    met_merge_free(m);
}

static void
test_merge_labels_histogram_buckets_and_renames_service_label(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    add_ok(m, "gw",
           "# HELP lat_seconds L.\n# TYPE lat_seconds histogram\n"
           "lat_seconds_bucket{le=\"0.5\"} 1\nlat_seconds_bucket{le=\"+Inf\"} 2\n"
           "lat_seconds_sum 0.75\nlat_seconds_count 2\n"
           "# HELP peers Peers.\n# TYPE peers gauge\npeers{service=\"dht\"} 4\n",
           5);
    char *text = merge_render(m);
    assert_string_equal(text, "# HELP lat_seconds L.\n# TYPE lat_seconds histogram\n"
                              "lat_seconds_bucket{service=\"gw\",le=\"0.5\"} 1\n"
                              "lat_seconds_bucket{service=\"gw\",le=\"+Inf\"} 2\n"
                              "lat_seconds_sum{service=\"gw\"} 0.75\n"
                              "lat_seconds_count{service=\"gw\"} 2\n"
                              "# HELP peers Peers.\n# TYPE peers gauge\n"
                              "peers{service=\"gw\",exported_service=\"dht\"} 4\n");
    assert_promtool_clean(text, strlen(text));
    free(text);
    met_merge_free(m);
}

static void
test_merge_rejects_each_garbage_line_and_keeps_the_rest(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "garbage",
        "x_total",
        "x_total 1 2 3",
        "x_total abc",
        "x_total 1e999",
        "x_total 0x10",
        "x_total 1 99999999999999999999",
        "x_total{a=\"b} 1",
        "x_total{a=b} 1",
        "x_total{a=\"b\" 1",
        "x_total{a=\"\\t\"} 1",
        "x_total{a=\"1\",a=\"2\"} 1",
        "x_total{__name__=\"y\"} 1",
        "x_total{1a=\"y\"} 1",
        "x_total{a=\"\xff\"} 1",
        "ns:x_total 1",
        "# HELP",
        "# HELP x_total",
        "# HELP x_total bad \\t escape",
        "# TYPE y_total",
        "# TYPE y_total countr",
        "# TYPE z_total counter extra",
        "# TYPE wait_ms gauge",
        "wait_ms 1",
        "# TYPE requests counter",
        "{} 1",
        "x_total\t{a=\"b\"}\t1\t\t",            /* valid: blanks and tabs between tokens */
    };
    met_merge_t *m = met_merge_new();
    char text[4096];
    size_t len = 0;
    len += (size_t)snprintf(text + len, sizeof text - len,
                            "# HELP x_total X.\n# TYPE x_total counter\n# a comment\n\n");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "%s\n", bad[i]);
    len += (size_t)snprintf(text + len, sizeof text - len, "x_total 7");  /* no final newline */
    met_merge_stats_t st;
    assert_int_equal(met_merge_add(m, "s1", text, len, &st), 0);
    assert_int_equal(st.samples, 2);
    assert_int_equal(st.rejected, sizeof bad / sizeof bad[0] - 1);
    char *out = merge_render(m);
    assert_string_equal(out, "# HELP x_total X.\n# TYPE x_total counter\n"
                             "x_total{service=\"s1\",a=\"b\"} 1\nx_total{service=\"s1\"} 7\n");
    assert_promtool_clean(out, strlen(out));
    free(out);
    met_merge_free(m);
}

static void
test_merge_refuses_type_clash_and_duplicate_metadata(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    met_merge_stats_t st;
    add_ok(m, "a", "# HELP depth D.\n# TYPE depth gauge\ndepth 1\n", 1);
    const char *b = "# HELP depth D.\n# TYPE depth counter\ndepth 2\n"
                    "# HELP other O.\n# HELP other O again.\n# TYPE other gauge\n"
                    "# TYPE other gauge\nother 3\n"
                    "# HELP late L.\nlate 1\n# TYPE late gauge\nlate 2\n";
    assert_int_equal(met_merge_add(m, "b", b, strlen(b), &st), 0);
    /* rejected: TYPE counter, depth 2, second HELP, second TYPE, TYPE after
     * a sample and the sample after that TYPE */
    assert_int_equal(st.rejected, 6);
    assert_int_equal(st.samples, 2);
    char *out = merge_render(m);
    assert_string_equal(out, "# HELP depth D.\n# TYPE depth gauge\ndepth{service=\"a\"} 1\n"
                             "# HELP late L.\n# TYPE late untyped\nlate{service=\"b\"} 1\n"
                             "# HELP other O.\n# TYPE other gauge\nother{service=\"b\"} 3\n");
    free(out);
    met_merge_free(m);
}

static void
test_merge_refuses_a_second_sample_of_the_same_series(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    met_merge_stats_t st;
    add_ok(m, NULL, "# HELP up_ratio U.\n# TYPE up_ratio gauge\nup_ratio{service=\"a\"} 1\n", 1);
    const char *a = "# HELP up_ratio U.\n# TYPE up_ratio gauge\n"
                    "up_ratio{z=\"1\",b=\"2\"} 1\n"
                    "up_ratio{b=\"2\",z=\"1\"} 2\n"   /* same series, labels reordered */
                    "up_ratio{b=\"2\"} 3\n"
                    "up_ratio 4\n"                      /* is up_ratio{service=\"a\"} of the kernel */
                    "up_ratio{b=\"2\"} 5 1700000000000\n"; /* a timestamp is no new series */
    assert_int_equal(met_merge_add(m, "a", a, strlen(a), &st), 0);
    assert_int_equal(st.samples, 2);
    assert_int_equal(st.rejected, 3);
    add_ok(m, "b", "up_ratio{z=\"1\",b=\"2\"} 1\nup_ratio 4\n", 2); /* other service: new series */
    char *out = merge_render(m);
    assert_string_equal(out, "# HELP up_ratio U.\n# TYPE up_ratio gauge\n"
                             "up_ratio{service=\"a\"} 1\n"
                             "up_ratio{service=\"a\",b=\"2\",z=\"1\"} 1\n"
                             "up_ratio{service=\"a\",b=\"2\"} 3\n"
                             "up_ratio{service=\"b\",b=\"2\",z=\"1\"} 1\n"
                             "up_ratio{service=\"b\"} 4\n");
    assert_promtool_clean(out, strlen(out));
    free(out);
    met_merge_free(m);
}

static void
test_merge_refuses_names_that_collide_with_histogram_series(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    met_merge_stats_t st;
    add_ok(m, "a", "# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_count 1\n", 1);
    const char *b = "# HELP h_seconds_count C.\n# TYPE h_seconds_count gauge\n"
                    "h_seconds_bucket 1\nh_seconds_sum{le=\"1\"} 1\nh_seconds 1\n"
                    "h_seconds_bucket{le=\"1\"} 1\n";
    assert_int_equal(met_merge_add(m, "b", b, strlen(b), &st), 0);
    assert_int_equal(st.samples, 1); /* the last line, a bucket of a's histogram */
    assert_int_equal(st.rejected, 5);
    const char *c = "# HELP x_sum S.\nx_sum 1\n# HELP x Q.\n# TYPE x summary\nx{quantile=\"1\"} 1\n";
    assert_int_equal(met_merge_add(m, "c", c, strlen(c), &st), 0);
    assert_int_equal(st.samples, 1);
    assert_int_equal(st.rejected, 2);
    char *out = merge_render(m);
    assert_promtool_clean(out, strlen(out));
    free(out);
    met_merge_free(m);
}

static void
test_merge_refuses_oversized_input_and_bad_service_names(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    met_merge_stats_t st;
    size_t big = MET_MERGE_MAX_INPUT + 1;
    char *text = malloc(big);
    memset(text, '\n', big);
    assert_int_equal(met_merge_add(m, "a", text, big, &st), RON_ETOOBIG);
    assert_int_equal(met_merge_add(m, "", "x 1\n", 4, &st), RON_EINVAL);
    assert_int_equal(met_merge_add(m, "\xff", "x 1\n", 4, &st), RON_EINVAL);
    /* an overlong line is rejected, the next one kept */
    size_t n = MET_MERGE_MAX_LINE + 1;
    memset(text, 'a', n);
    memcpy(text + n, "\nb 1\n", 5);
    assert_int_equal(met_merge_add(m, "a", text, n + 5, &st), 0);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.samples, 1);
    free(text);
    char *out = merge_render(m);
    assert_string_equal(out, "# HELP b No help text given.\n# TYPE b untyped\nb{service=\"a\"} 1\n");
    assert_promtool_clean(out, strlen(out));
    free(out);
    met_merge_free(m);
}

static void
test_merge_of_kernel_and_children_registries_passes_promtool(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    const char *names[] = {NULL, "svc-storage", "svc\"odd\\name\n", "svc-index"};
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        met_registry_t *r = registry_every_kind(names[i] ? names[i] : "kernel");
        char *text = render(r);
        met_merge_stats_t st;
        assert_int_equal(met_merge_add(m, names[i], text, strlen(text), &st), 0);
        assert_int_equal(st.rejected, 0);
        assert_true(st.samples > 20);
        total += st.samples;
        free(text);
        met_registry_free(r);
    }
    const char *junk = "# TYPE starts_total gauge\nstarts_total 1\nnot a metric\n";
    met_merge_stats_t st;
    assert_int_equal(met_merge_add(m, "evil", junk, strlen(junk), &st), 0);
    assert_int_equal(st.rejected, 3);
    char *out = merge_render(m);
    assert_non_null(strstr(out, "rejected_total{service=\"svc\\\"odd\\\\name\\n\",reason=\"\"} 1\n"));
    assert_non_null(strstr(out, "request_latency_seconds_bucket{service=\"svc-index\","
                                "route=\"/o/{addr}\",le=\"+Inf\"} 2\n"));
    assert_promtool_clean(out, strlen(out));

    /* the output parses again without a single rejected line */
    met_merge_t *again = met_merge_new();
    assert_int_equal(met_merge_add(again, NULL, out, strlen(out), &st), 0);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.samples, total);
    char *out2 = merge_render(again);
    assert_string_equal(out, out2);
    free(out2);
    met_merge_free(again);
    free(out);
    met_merge_free(m);
}

static void
test_merge_stops_at_family_and_sample_limits_counting_the_rest(void **state)
{
    (void)state;
    met_merge_t *m = met_merge_new();
    met_merge_stats_t st;
    size_t cap = (MET_MERGE_MAX_FAMILIES + 10) * 16;
    char *text = malloc(cap);
    size_t len = 0;
    for (unsigned i = 0; i < MET_MERGE_MAX_FAMILIES + 10; i++)
        len += (size_t)snprintf(text + len, cap - len, "f%u 1\n", i);
    assert_int_equal(met_merge_add(m, "a", text, len, &st), 0);
    assert_int_equal(st.samples, MET_MERGE_MAX_FAMILIES);
    assert_int_equal(st.rejected, 10);
    free(text);
    met_merge_free(m);

    m = met_merge_new();
    size_t n = MET_MERGE_MAX_SAMPLES + 5;
    cap = n * 20;
    text = malloc(cap);
    len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "a{i=\"%zu\"} 1\n", i);
    assert_int_equal(met_merge_add(m, NULL, text, len, &st), 0);
    assert_int_equal(st.samples, MET_MERGE_MAX_SAMPLES);
    assert_int_equal(st.rejected, 5);
    assert_int_equal(met_merge_add(m, "b", "b 1\n", 4, &st), 0);
    assert_int_equal(st.rejected, 1);
    free(text);
    met_merge_free(m);
}

static void
test_registry_refuses_families_past_its_limit(void **state)
{
    (void)state;
    met_registry_t *r = met_registry_new();
    met_gauge_t *g;
    char name[32];
    for (unsigned i = 0; i < MET_MAX_FAMILIES; i++) {
        snprintf(name, sizeof name, "g%u", i);
        assert_int_equal(met_gauge_register(r, name, "h", &g), 0);
    }
    assert_int_equal(met_gauge_register(r, "one_more", "h", &g), RON_EBUSY);
    assert_int_equal(met_gauge_register(r, "g7", "h", &g), 0); /* existing ones still found */
    met_registry_free(r);
}

static void
test_merge_of_every_fuzz_seed_passes_promtool(void **state)
{
    (void)state;
    const char *src = getenv("RON_SOURCE_DIR");
    char dir[1024], path[2048];
    snprintf(dir, sizeof dir, "%s/tests/corpus/metrics_text", src ? src : ".");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int files = 0;
    static char buf[1 << 16];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        met_merge_t *m = met_merge_new();
        assert_int_equal(met_merge_add(m, NULL, buf, n, NULL), 0);
        assert_int_equal(met_merge_add(m, "svc", buf, n, NULL), 0);
        char *out = merge_render(m);
        assert_promtool_clean(out, strlen(out));
        free(out);
        met_merge_free(m);
        files++;
    }
    closedir(d);
    assert_true(files >= 10);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_family_counts_per_label_value),
        cmocka_unit_test(test_registration_refuses_names_promtool_would_lint),
        cmocka_unit_test(test_register_twice_shares_identical_family_and_refuses_different),
        cmocka_unit_test(test_family_caps_children_and_routes_excess_to_overflow_child),
        cmocka_unit_test(test_overlong_or_invalid_utf8_label_values_go_to_overflow),
        cmocka_unit_test(test_histogram_renders_cumulative_buckets_sum_and_count),
        cmocka_unit_test(test_histogram_observe_matches_a_linear_bucket_scan),
        cmocka_unit_test(test_default_latency_buckets_render_shortest_bounds),
        cmocka_unit_test(test_render_escapes_label_values_and_help),
        cmocka_unit_test(test_render_sorts_families_by_name_and_children_by_values),
        cmocka_unit_test(test_registry_text_passes_promtool),
        cmocka_unit_test(test_threads_concurrent_updates_give_exact_totals),
        cmocka_unit_test(test_merge_labels_samples_by_service_with_help_and_type_once),
        cmocka_unit_test(test_merge_labels_histogram_buckets_and_renames_service_label),
        cmocka_unit_test(test_merge_rejects_each_garbage_line_and_keeps_the_rest),
        cmocka_unit_test(test_merge_refuses_type_clash_and_duplicate_metadata),
        cmocka_unit_test(test_merge_refuses_a_second_sample_of_the_same_series),
        cmocka_unit_test(test_merge_refuses_names_that_collide_with_histogram_series),
        cmocka_unit_test(test_merge_refuses_oversized_input_and_bad_service_names),
        cmocka_unit_test(test_merge_of_kernel_and_children_registries_passes_promtool),
        cmocka_unit_test(test_merge_of_every_fuzz_seed_passes_promtool),
        cmocka_unit_test(test_merge_stops_at_family_and_sample_limits_counting_the_rest),
        cmocka_unit_test(test_registry_refuses_families_past_its_limit),
        cmocka_unit_test(test_render_buf_copies_the_text_only_when_it_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
