/*
 * bench_audit.c - audit append rate to the file sink against the floor a
 * user would otherwise get: the same bytes written with plain write(2) calls
 * through a 64 KiB buffer and one fdatasync every 10 ms. Also the time from
 * aud_append to its durable ack (sampled every 64th record), flat out and
 * paced at 20,000 records/s for 1 s (every record sampled). Prints a
 * markdown table of medians. Usage: bench_audit [runs] [dir] [records]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ron_audit.h"
#include "ron_util.h"

typedef struct {
    uint64_t *t_append, *t_ack;
} lat_t;

static void
on_ack(void *arg, uint64_t seq, int rc)
{
    lat_t *l = arg;

    if (rc == 0)
        l->t_ack[seq / 64] = ron_now_ns();
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Append 20,000 records/s for 1 s; p50/p99/max of append -> durable ack in ms. */
static int
paced(const char *log_path, const char *ckpt_path, const uint8_t *sk, double out[3])
{
    enum { N = 20000 };
    aud_file_opts_t o = {.log_path = log_path, .ckpt_path = ckpt_path, .sign_sk = sk};
    lat_t l = {calloc(N / 64 + 2, 8), calloc(N / 64 + 2, 8)};
    double *lat = calloc(N / 64 + 2, sizeof *lat);
    aud_log_t *log = NULL;
    uint64_t t0;
    size_t m = 0;

    unlink(log_path);
    unlink(ckpt_path);
    if (aud_log_open_file(&o, &log) < 0)
        return -1;
    t0 = ron_now_ns();
    for (uint64_t i = 1; i <= N; i++) {
        aud_event_t ev = {.kind = AUD_REJECTED, .actor = "anon", .op = "put",
                          .target = "/o", .outcome = AUD_DENIED, .reason = "no capability"};
        while (ron_now_ns() - t0 < i * 50000u)
            ;
        if (i % 64 == 0) {
            l.t_append[i / 64] = ron_now_ns();
            aud_append(log, &ev, on_ack, &l, NULL);
        } else {
            aud_append(log, &ev, NULL, NULL, NULL);
        }
    }
    aud_log_close(log);
    for (uint64_t i = 1; i <= N / 64; i++)
        if (l.t_ack[i] >= l.t_append[i])
            lat[m++] = (double)(l.t_ack[i] - l.t_append[i]) / 1e6;
    qsort(lat, m, sizeof *lat, cmp_d);
    out[0] = lat[m / 2];
    out[1] = lat[m * 99 / 100];
    out[2] = lat[m - 1];
    free(lat);
    free(l.t_append);
    free(l.t_ack);
    return 0;
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    uint64_t n = argc > 3 ? strtoull(argv[3], NULL, 10) : 200000;
    double pl[64][3], q50[64], q99[64], qmax[64], rate[64], floor_rate[64], p50[64], pmax[64], syncs[64], bytes_per = 0;
    uint8_t pk[AUD_PK_LEN], sk[AUD_SK_LEN];
    char log_path[512], ckpt_path[512], floor_path[512], target[80];

    if (runs < 1 || runs > 64 || n < 1000 || sodium_init() < 0)
        return 2;
    crypto_sign_ed25519_keypair(pk, sk);
    snprintf(log_path, sizeof log_path, "%s/bench-audit-%d.log", dir, (int)getpid());
    snprintf(ckpt_path, sizeof ckpt_path, "%s/bench-audit-%d.ckpt", dir, (int)getpid());
    snprintf(floor_path, sizeof floor_path, "%s/bench-audit-%d.floor", dir, (int)getpid());
    for (int r = 0; r < runs; r++) {
        aud_file_opts_t o = {.log_path = log_path, .ckpt_path = ckpt_path, .sign_sk = sk};
        lat_t l = {calloc(n / 64 + 2, 8), calloc(n / 64 + 2, 8)};
        double *lat = calloc(n / 64 + 2, sizeof *lat);
        aud_log_t *log = NULL;
        aud_stats_t st;
        struct stat sb;
        uint64_t t0, t1, last_sync;
        char *bytes, *buf;
        size_t off = 0, fill = 0, m = 0;
        int fd;

        unlink(log_path);
        unlink(ckpt_path);
        if (aud_log_open_file(&o, &log) < 0)
            return 1;
        t0 = ron_now_ns();
        for (uint64_t i = 1; i <= n; i++) {
            aud_event_t ev = {.kind = AUD_CAP_ISSUED, .actor = "ron1:1:0:0123456789abcdef0123456789abcdef",
                              .tenant = "00112233445566778899aabbccddeeff", .op = "mint",
                              .target = target, .outcome = AUD_OK, .reason = ""};
            snprintf(target, sizeof target, "cap %llu", (unsigned long long)i);
            if (i % 64 == 0) {
                l.t_append[i / 64] = ron_now_ns();
                aud_append(log, &ev, on_ack, &l, NULL);
            } else {
                aud_append(log, &ev, NULL, NULL, NULL);
            }
        }
        aud_log_flush(log);
        t1 = ron_now_ns();
        aud_log_stats(log, &st);
        aud_log_close(log);
        rate[r] = (double)n / ((double)(t1 - t0) / 1e9);
        syncs[r] = (double)st.fsyncs;
        for (uint64_t i = 1; i <= n / 64; i++)
            if (l.t_ack[i] >= l.t_append[i])
                lat[m++] = (double)(l.t_ack[i] - l.t_append[i]) / 1e6;
        p50[r] = median(lat, (int)m);
        pmax[r] = lat[m - 1];
        free(lat);
        free(l.t_append);
        free(l.t_ack);

        /* The floor: the same bytes, buffered writes, one fdatasync per 10 ms. */
        fd = open(log_path, O_RDONLY);
        if (fd < 0 || fstat(fd, &sb) < 0)
            return 1;
        bytes = malloc((size_t)sb.st_size);
        if (read(fd, bytes, (size_t)sb.st_size) != sb.st_size)
            return 1;
        close(fd);
        bytes_per = (double)sb.st_size / (double)n;
        buf = malloc(65536);
        unlink(floor_path);
        fd = open(floor_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        t0 = last_sync = ron_now_ns();
        while (off < (size_t)sb.st_size) {
            size_t line = (size_t)((char *)memchr(bytes + off, '\n', (size_t)sb.st_size - off) -
                                   (bytes + off)) + 1;
            if (fill + line > 65536) {
                if (write(fd, buf, fill) != (ssize_t)fill)
                    return 1;
                fill = 0;
            }
            memcpy(buf + fill, bytes + off, line);
            fill += line;
            off += line;
            if (ron_now_ns() - last_sync >= 10000000u) {
                if (write(fd, buf, fill) != (ssize_t)fill)
                    return 1;
                fill = 0;
                fdatasync(fd);
                last_sync = ron_now_ns();
            }
        }
        if (write(fd, buf, fill) != (ssize_t)fill)
            return 1;
        fdatasync(fd);
        t1 = ron_now_ns();
        close(fd);
        floor_rate[r] = (double)n / ((double)(t1 - t0) / 1e9);
        free(buf);
        free(bytes);
        if (paced(log_path, ckpt_path, sk, pl[r]) < 0)
            return 1;
        q50[r] = pl[r][0];
        q99[r] = pl[r][1];
        qmax[r] = pl[r][2];
    }
    unlink(log_path);
    unlink(ckpt_path);
    unlink(floor_path);
    printf("%llu records of %.0f bytes a run, %d runs (medians):\n\n", (unsigned long long)n,
           bytes_per, runs);
    printf("| measure | ron-audit file sink | write + fdatasync/10 ms floor | ratio |\n");
    printf("|---|---|---|---|\n");
    {
        double a = median(rate, runs), f = median(floor_rate, runs);
        printf("| records/s | %.0f | %.0f | %.2fx |\n", a, f, a / f);
    }
    printf("| fdatasyncs a run (log) | %.0f | | |\n", median(syncs, runs));
    printf("| append -> durable ack, median of run medians | %.2f ms | | |\n", median(p50, runs));
    printf("| append -> durable ack, median of run maxima | %.2f ms | | |\n", median(pmax, runs));
    printf("\nPaced at 20,000 records/s for 1 s (every 64th record timed), medians of %d runs:\n\n",
           runs);
    printf("| append -> durable ack | p50 | p99 | max |\n|---|---|---|---|\n");
    printf("| ron-audit file sink | %.2f ms | %.2f ms | %.2f ms |\n", median(q50, runs),
           median(q99, runs), median(qmax, runs));
    return 0;
}
