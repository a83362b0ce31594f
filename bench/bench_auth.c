/*
 * bench_auth.c - capability verification rate of a 5-caveat token on one
 * thread (issue 5 target: >= 100,000 per second without the cache), ours
 * against libmacaroons' own verifier on the same tokens.
 * TOKENS distinct tokens (distinct identifiers, 5 caveats each: ops,
 * tenant, expires, max-bytes, prefix) are minted with libmacaroons; a run
 * verifies all of them in turn, PASSES times, and reports verifications per
 * second:
 *   - auth_verify, no cache: parse, key, HMAC chain, caveats, request;
 *   - libmacaroons: macaroon_deserialize + macaroon_verify with a general
 *     caveat checker that parses our caveats (what a service would do with
 *     the library alone), and the same with the macaroons deserialized
 *     beforehand (the library's verify alone);
 *   - auth_verify with the verdict cache, every token seen before (hits).
 * Usage: bench_auth [runs]; prints a markdown table of medians.
 */
#include <macaroons.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ron_auth.h"

#define TOKENS 2000
#define PASSES 10
#define MAX_RUNS 31
#define NOW 1800000000

static const uint8_t key[32] = "bench root key, thirty-two byte";
static char tokens[TOKENS][AUTH_MAX_TOKEN + 1];
static struct macaroon *parsed[TOKENS];

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static auth_request_t
request(void)
{
    auth_request_t r = {
        .op = AUTH_OP_PUT, .size = 4096, .addr = "b3:ab12", .now = NOW, .has_tenant = true};
    for (int i = 0; i < AUTH_TENANT_LEN; i++)
        r.tenant[i] = (uint8_t)(i * 0x11);
    return r;
}

/* libmacaroons' general checker: each caveat must be ours and hold. */
static int
general_check(void *f, const unsigned char *pred, size_t len)
{
    auth_grant_t g;
    unsigned pending;
    auth_grant_init(&g);
    if (auth_caveat_apply(&g, (const char *)pred, len) < 0)
        return -1;
    return auth_grant_check(&g, (const auth_request_t *)f, &pending) == AUTH_OK ? 0 : -1;
}

static double
run_ours(auth_verifier_t *v)
{
    auth_request_t r = request();
    auth_verdict_t vd;
    double t0 = now_s();
    for (int p = 0; p < PASSES; p++)
        for (int i = 0; i < TOKENS; i++)
            if (auth_verify(v, tokens[i], strlen(tokens[i]), &r, &vd) != 0) {
                fprintf(stderr, "bench_auth: token %d refused: %s\n", i,
                        auth_reason_name(vd.reason));
                exit(1);
            }
    return TOKENS * PASSES / (now_s() - t0);
}

static double
run_lib(bool deserialize)
{
    auth_request_t r = request();
    enum macaroon_returncode err;
    struct macaroon_verifier *v = macaroon_verifier_create();
    macaroon_verifier_satisfy_general(v, general_check, &r, &err);
    double t0 = now_s();
    for (int p = 0; p < PASSES; p++)
        for (int i = 0; i < TOKENS; i++) {
            struct macaroon *m = deserialize ? macaroon_deserialize(tokens[i], &err) : parsed[i];
            if (m == NULL || macaroon_verify(v, m, key, sizeof key, NULL, 0, &err) != 0) {
                fprintf(stderr, "bench_auth: libmacaroons refused token %d (%d)\n", i, err);
                exit(1);
            }
            if (deserialize)
                macaroon_destroy(m);
        }
    double rate = TOKENS * PASSES / (now_s() - t0);
    macaroon_verifier_destroy(v);
    return rate;
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    double ours[MAX_RUNS], cached[MAX_RUNS], lib[MAX_RUNS], lib_only[MAX_RUNS];
    enum macaroon_returncode err;

    if (runs < 1 || runs > MAX_RUNS)
        runs = 7;
    for (int i = 0; i < TOKENS; i++) {
        char id[AUTH_ID_MAX + 1];
        const char *cav[] = {"ops = get,put", "tenant = 00112233445566778899aabbccddeeff",
                             "expires = 1900000000", "max-bytes = 1048576", "prefix = b3:ab"};
        if (auth_id_new(id, "k1", 1) < 0 ||
            auth_mint(key, sizeof key, id, cav, 5, tokens[i], sizeof tokens[i]) < 0)
            return 1;
        parsed[i] = macaroon_deserialize(tokens[i], &err);
    }
    auth_verifier_t *plain = auth_verifier_new(NULL, 0);
    auth_verifier_t *withc = auth_verifier_new(NULL, 4096);
    auth_verifier_add_key(plain, "k1", key, sizeof key);
    auth_verifier_add_key(withc, "k1", key, sizeof key);
    uint64_t h0, m0, h1, m1, hits = 0, misses = 0;
    for (int i = 0; i < runs; i++) {
        ours[i] = run_ours(plain);
        lib[i] = run_lib(true);
        lib_only[i] = run_lib(false);
        run_ours(withc); /* untimed: (re)fill the cache, entries live 1 s */
        auth_verifier_cache_stats(withc, &h0, &m0);
        cached[i] = run_ours(withc);
        auth_verifier_cache_stats(withc, &h1, &m1);
        hits += h1 - h0;
        misses += m1 - m0;
    }
    double o = median(ours, runs), l = median(lib, runs), lo = median(lib_only, runs),
           c = median(cached, runs);
    printf("%d distinct tokens of %zu bytes (5 caveats) verified %d times each per run.\n\n",
           TOKENS, strlen(tokens[0]), PASSES);
    printf("| verifier | verifications/s | ratio |\n|---|---:|---|\n");
    printf("| libmacaroons: deserialize + macaroon_verify | %.0f | |\n", l);
    printf("| libmacaroons: macaroon_verify of pre-deserialized tokens | %.0f | %.2f× |\n", lo,
           lo / l);
    printf("| ron-auth auth_verify, no cache (parse, HMAC chain, caveats, request) | %.0f | "
           "%.2f× libmacaroons |\n",
           o, o / l);
    printf("| ron-auth auth_verify with the verdict cache (hit rate below) | %.0f | %.2f× "
           "libmacaroons |\n",
           c, c / l);
    printf("\nCache: %.1f%% of the timed cached runs' lookups were hits (entries live %d ms).\n",
           100.0 * (double)hits / (double)(hits + misses), AUTH_CACHE_TTL_MS);
    printf("\nTarget >= 100,000/s without the cache: %.0f/s (%s).\n", o,
           o >= 100000 ? "met" : "NOT met");
    for (int i = 0; i < TOKENS; i++)
        macaroon_destroy(parsed[i]);
    auth_verifier_free(plain);
    auth_verifier_free(withc);
    return 0;
}
