/*
 * bench_registry.c - svc-registry costs, each against the floor a user
 * would otherwise pay for the same guarantee:
 *   commit: propose + 2 approvals (2-of-3) + commit to a file log (append +
 *     fdatasync), per version; floor: append the same line and fdatasync.
 *   verify: replay a log from genesis (canonical check, hash chain, two
 *     Ed25519 verifications per version); floor: BLAKE3 of each line and two
 *     libsodium verifications, nothing else.
 * Prints a markdown table of medians over RUNS runs.
 * Usage: bench_registry RUNS DIR VERSIONS
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blake3.h"
#include "ron_util.h"
#include "svc_registry.h"

static int
dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, dbl_cmp);
    return v[n / 2];
}

static uint8_t pk[3][32], sk[3][64];

/* Commit versions to a new log at path; returns ms per commit. */
static double
run_commits(const char *path, unsigned versions)
{
    reg_opts_t o = {.path = path};
    reg_desc_t *d = calloc(1, sizeof *d);
    uint8_t id[REG_HASH_LEN], sig[REG_SIG_LEN];
    reg_t *reg;
    uint64_t t0, v;

    unlink(path);
    if (reg_open(&o, &reg, NULL) < 0)
        exit(1);
    t0 = ron_now_ns();
    for (unsigned i = 0; i < versions; i++) {
        memset(d, 0, sizeof *d);
        reg_head(reg, &v, d->prev, NULL);
        d->version = v + 1;
        memset(d->policy, (int)(i & 0xff), sizeof d->policy);
        d->n_peers = 2;
        snprintf(d->peers[0], sizeof d->peers[0], "seed-%u.example:5302", i);
        snprintf(d->peers[1], sizeof d->peers[1], "127.0.0.1:5302");
        d->threshold = 2;
        d->n_signers = 3;
        memcpy(d->signers, pk, sizeof pk);
        if (reg_propose(reg, d, id, NULL) < 0)
            exit(2);
        for (int k = 0; k < 2; k++)
            if (reg_approval_sign(id, sk[k], sig) < 0 ||
                reg_approve(reg, id, pk[k], sig, NULL, NULL) < 0)
                exit(3);
        if (reg_commit(reg, id, NULL, NULL) < 0)
            exit(4);
    }
    t0 = ron_now_ns() - t0;
    reg_free(reg);
    free(d);
    return (double)t0 / 1e6 / versions;
}

/* The floor of a commit: append each line of log and fdatasync. */
static double
run_floor_appends(const char *path, const char *log, size_t len, unsigned versions)
{
    int fd;
    uint64_t t0;
    size_t pos = 0;

    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
    if (fd < 0)
        exit(5);
    t0 = ron_now_ns();
    while (pos < len) {
        const char *nl = memchr(log + pos, '\n', len - pos);
        size_t n = (size_t)(nl - log - pos) + 1;
        if (write(fd, log + pos, n) != (ssize_t)n || fdatasync(fd) < 0)
            exit(6);
        pos += n;
    }
    t0 = ron_now_ns() - t0;
    close(fd);
    unlink(path);
    return (double)t0 / 1e6 / versions;
}

/* The floor of verification: BLAKE3 of each line and two signature checks
 * (valid signatures of each line's hash, made before the clock starts). */
static double
run_floor_verify(const char *log, size_t len, unsigned versions)
{
    uint8_t(*sig)[2][REG_SIG_LEN] = calloc(versions, sizeof *sig);
    uint8_t msg[REG_SIGN_MSG_LEN], h[32];
    size_t pos = 0;
    unsigned i = 0, bad = 0;
    uint64_t t0;

    for (pos = 0, i = 0; pos < len && i < versions; i++) {
        const char *nl = memchr(log + pos, '\n', len - pos);
        size_t n = (size_t)(nl - log - pos);
        blake3_hasher b;
        blake3_hasher_init(&b);
        blake3_hasher_update(&b, log + pos, n);
        blake3_hasher_finalize(&b, h, sizeof h);
        reg_sign_message(h, msg);
        for (int k = 0; k < 2; k++)
            crypto_sign_detached(sig[i][k], NULL, msg, sizeof msg, sk[k]);
        pos += n + 1;
    }
    t0 = ron_now_ns();
    for (pos = 0, i = 0; pos < len && i < versions; i++) {
        const char *nl = memchr(log + pos, '\n', len - pos);
        size_t n = (size_t)(nl - log - pos);
        blake3_hasher b;
        blake3_hasher_init(&b);
        blake3_hasher_update(&b, log + pos, n);
        blake3_hasher_finalize(&b, h, sizeof h);
        reg_sign_message(h, msg);
        for (int k = 0; k < 2; k++)
            bad += crypto_sign_verify_detached(sig[i][k], msg, sizeof msg, pk[k]) != 0;
        pos += n + 1;
    }
    t0 = ron_now_ns() - t0;
    free(sig);
    if (bad != 0)
        exit(8);
    return versions / ((double)t0 / 1e9);
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    unsigned versions = argc > 3 ? (unsigned)atoi(argv[3]) : 200;
    double *c = calloc((size_t)runs, sizeof *c), *cf = calloc((size_t)runs, sizeof *cf),
           *vr = calloc((size_t)runs, sizeof *vr), *vf = calloc((size_t)runs, sizeof *vf);
    char path[512], floor_path[512];
    reg_report_t rep;

    if (runs < 1 || versions < 1 || sodium_init() < 0)
        return 2;
    for (int i = 0; i < 3; i++) {
        uint8_t seed[32];
        memset(seed, 0x70 + i, sizeof seed);
        crypto_sign_seed_keypair(pk[i], sk[i], seed);
    }
    snprintf(path, sizeof path, "%s/bench-registry-%d.log", dir, (int)getpid());
    snprintf(floor_path, sizeof floor_path, "%s/bench-registry-floor-%d.log", dir, (int)getpid());
    for (int r = 0; r < runs; r++) {
        FILE *f;
        char *log = malloc(64u << 20);
        size_t len;
        uint64_t t0;

        c[r] = run_commits(path, versions);
        f = fopen(path, "rb");
        len = fread(log, 1, 64u << 20, f);
        fclose(f);
        cf[r] = run_floor_appends(floor_path, log, len, versions);
        t0 = ron_now_ns();
        if (reg_verify_buf(log, len, 0, NULL, &rep) < 0 || rep.versions != versions)
            return 7;
        vr[r] = versions / ((double)(ron_now_ns() - t0) / 1e9);
        vf[r] = run_floor_verify(log, len, versions);
        free(log);
        unlink(path);
    }
    printf("| measure (%u versions, 2-of-3, median of %d runs) | svc-registry | floor | ratio |\n",
           versions, runs);
    printf("|---|---:|---:|---:|\n");
    double mc = median(c, runs), mcf = median(cf, runs), mv = median(vr, runs),
           mvf = median(vf, runs);
    printf("| commit latency, ms (propose + 2 approvals + append + fdatasync) | %.3f | %.3f "
           "(append + fdatasync) | %.2fx |\n",
           mc, mcf, mc / mcf);
    printf("| chain verify, versions/s | %.0f | %.0f (BLAKE3 + 2 Ed25519 verifies) | %.2fx |\n", mv,
           mvf, mv / mvf);
    free(c);
    free(cf);
    free(vr);
    free(vf);
    return 0;
}
