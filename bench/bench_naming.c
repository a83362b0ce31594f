/*
 * bench_naming.c - ron-naming and svc-index costs, each the median of RUNS
 * timed runs: name normalization (ASCII and Unicode through libidn2), record
 * verification against raw Ed25519 verification (the floor), resolve on
 * both backends, and publish on both backends; the durable LMDB publish is
 * set against the floor of one 4 KiB pwrite + fdatasync in the same
 * directory, since each acknowledged publish syncs once.
 * Usage: bench_naming [runs] [dir]   (prints a markdown table; dir for LMDB,
 * default /tmp)
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ron_util.h"
#include "svc_index.h"

#define RUNS_DEFAULT 7
#define NAMES 2000 /* records in each index for resolve */
#define NOW 1764000000LL

static volatile uint64_t sink;
static uint8_t sk[64];

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static name_record_t
rec_for(int i, uint64_t seq)
{
    name_record_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "n%06d.bench", i);
    r.seq = seq;
    r.ts = NOW;
    name_record_sign(&r, sk);
    return r;
}

typedef double (*op_fn)(void *arg, int n); /* returns seconds for n operations */

static double
op_norm(void *arg, int n)
{
    const char *s = arg;
    char out[NAME_MAX_LEN + 1];
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < n; i++)
        sink += (uint64_t)name_normalize(s, strlen(s), out, NULL) + (uint8_t)out[0];
    return (double)(ron_now_ns() - t0) / 1e9;
}

static double
op_verify(void *arg, int n)
{
    const name_record_t *r = arg;
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < n; i++)
        sink += (uint64_t)name_record_verify(r, NULL);
    return (double)(ron_now_ns() - t0) / 1e9;
}

static double
op_raw_verify(void *arg, int n)
{
    const name_record_t *r = arg;
    uint8_t msg[NAME_SIGNING_MAX];
    ssize_t len = name_record_signing_bytes(r, msg, sizeof msg);
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < n; i++)
        sink += (uint64_t)crypto_sign_ed25519_verify_detached(r->sig, msg, (size_t)len, r->owner);
    return (double)(ron_now_ns() - t0) / 1e9;
}

static double
op_resolve(void *arg, int n)
{
    idx_t *idx = arg;
    name_record_t got;
    char name[32];
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "n%06d.bench", (int)((unsigned)i * 7919u % NAMES));
        sink += (uint64_t)idx_resolve(idx, name, &got) + got.seq;
    }
    return (double)(ron_now_ns() - t0) / 1e9;
}

static uint64_t pub_seq = 1;

static double
op_publish(void *arg, int n)
{
    idx_t *idx = arg;
    name_record_t *recs = malloc((size_t)n * sizeof *recs);
    for (int i = 0; i < n; i++) /* signing is the client's cost, not the index's */
        recs[i] = rec_for(i % NAMES, pub_seq + (uint64_t)(i / NAMES));
    pub_seq += (uint64_t)(n / NAMES) + 1;
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < n; i++)
        if (idx_publish(idx, &recs[i], NOW, NULL) != 0)
            abort();
    double s = (double)(ron_now_ns() - t0) / 1e9;
    free(recs);
    return s;
}

static double
op_fsync_floor(void *arg, int n)
{
    const char *dir = arg;
    char path[512];
    uint8_t page[4096] = {1};
    snprintf(path, sizeof path, "%s/floor.tmp", dir);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    uint64_t t0 = ron_now_ns();
    for (int i = 0; i < n; i++)
        if (pwrite(fd, page, sizeof page, (off_t)(i % 16) * 4096) != sizeof page ||
            fdatasync(fd) != 0)
            abort();
    double s = (double)(ron_now_ns() - t0) / 1e9;
    close(fd);
    unlink(path);
    return s;
}

static double
measure(op_fn fn, void *arg, int n, int runs)
{
    double rate[32];
    fn(arg, n / 10 + 1); /* warm up */
    for (int r = 0; r < runs; r++)
        rate[r] = n / fn(arg, n);
    return median(rate, runs);
}

static void
row(const char *what, double ops, double anchor, const char *anchor_name)
{
    if (anchor > 0)
        printf("| %s | %.0f | %.1f µs | %.2f× %s |\n", what, ops, 1e6 / ops, ops / anchor,
               anchor_name);
    else
        printf("| %s | %.0f | %.1f µs | |\n", what, ops, 1e6 / ops);
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : RUNS_DEFAULT;
    const char *base = argc > 2 ? argv[2] : "/tmp";
    char dir[512];
    uint8_t pk[32], seed[32];
    idx_t *lm = NULL, *ram = NULL;

    if (runs < 5 || runs > 32 || sodium_init() < 0)
        return 2;
    memset(seed, 7, sizeof seed);
    crypto_sign_ed25519_seed_keypair(pk, sk, seed);
    snprintf(dir, sizeof dir, "%s/ron-bench-naming-XXXXXX", base);
    if (mkdtemp(dir) == NULL)
        return 1;
    idx_config_t lc = {.data_dir = dir}, rc = {.amnesia = true};
    if (idx_new(&lc, &lm) != 0 || idx_new(&rc, &ram) != 0)
        return 1;
    for (int i = 0; i < NAMES; i++) {
        name_record_t r = rec_for(i, 0);
        if (idx_publish(ram, &r, NOW, NULL) != 0)
            return 1;
    }
    /* fill LMDB in one go through the API (one sync each) */
    for (int i = 0; i < NAMES; i++) {
        name_record_t r = rec_for(i, 0);
        if (idx_publish(lm, &r, NOW, NULL) != 0)
            return 1;
    }
    name_record_t one = rec_for(1, 1);

    printf("| operation | ops/s (median of %d) | per op | ratio |\n|---|---:|---:|---|\n", runs);
    double raw = measure(op_raw_verify, &one, 2000, runs);
    row("Ed25519 verify (libsodium, floor)", raw, 0, "");
    row("name_record_verify", measure(op_verify, &one, 2000, runs), raw, "of raw verify");
    row("name_normalize \"photos.alice\"", measure(op_norm, "Photos.Alice", 100000, runs), 0, "");
    row("name_normalize \"bücher.example\" (libidn2)",
        measure(op_norm,
                "b\xc3\xbc"
                "cher.example",
                20000, runs),
        0, "");
    row("idx_resolve, RAM, 2k names", measure(op_resolve, ram, 200000, runs), 0, "");
    row("idx_resolve, LMDB, 2k names", measure(op_resolve, lm, 200000, runs), 0, "");
    row("idx_publish, RAM (verify + insert)", measure(op_publish, ram, 2000, runs), raw,
        "of raw verify");
    double floor = measure(op_fsync_floor, dir, 200, runs);
    row("floor: 4 KiB pwrite + fdatasync", floor, 0, "");
    row("idx_publish, LMDB (durable)", measure(op_publish, lm, 200, runs), floor,
        "of the fdatasync floor");
    idx_free(lm);
    idx_free(ram);
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/index/lock.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/index", dir);
    rmdir(path);
    rmdir(dir);
    return sink == 42 ? 3 : 0; /* keeps sink observable */
}
