/*
 * bench_tree.c - throughput of the verified-streaming tree code against
 * b3sum --num-threads 1 on the same file, in the same run.
 * Each round runs, in turn: b3sum (spawned, timed wall clock, with its
 * output checked against our root), our hasher over the file in 1 MiB
 * read(2)s, in 256 KiB read(2)s (a copy that stays in a 512 KiB L2), and
 * through mmap(2) (MAP_POPULATE), our hasher over the same bytes in memory, the BLAKE3 library's
 * own blake3_hasher_update over memory (root only, no outboard: the upper
 * bound for the same code), and verification of every piece in 1 MiB ranges
 * (the read path). Outboard bytes go to a memory buffer. Rounds interleave so
 * that load on the machine hits every row alike; each row is the median.
 * Usage: bench_tree FILE [runs]   (prints a markdown table)
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <blake3.h>

#include "ron_util.h"
#include "sto_tree.h"

#define RUNS_DEFAULT 7
#define READ_LEN (1u << 20) /* file mode: bytes per read(2) */

extern char **environ;

typedef struct {
    uint8_t *p;
    size_t len, cap;
} sink_t;

static int
sink_cb(void *arg, const uint8_t *bytes, size_t len)
{
    sink_t *s = arg;

    if (s->len + len > s->cap)
        return -1;
    memcpy(s->p + s->len, bytes, len);
    s->len += len;
    return 0;
}

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

static double
now_s(void)
{
    return (double)ron_now_ns() / 1e9;
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_tree: %s\n", what);
    exit(1);
}

/* b3sum --num-threads 1 --no-names path: seconds; its hex into hex_out. */
static double
run_b3sum(const char *path, char hex_out[65])
{
    char *argv[] = {"b3sum", "--num-threads", "1", "--no-names", (char *)path, NULL};
    int fds[2], status;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    double t0, t1;
    ssize_t n;

    if (pipe(fds) < 0)
        die("pipe");
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    t0 = now_s();
    if (posix_spawnp(&pid, "b3sum", &fa, NULL, argv, environ) != 0)
        die("cannot run b3sum");
    close(fds[1]);
    n = read(fds[0], hex_out, 64);
    waitpid(pid, &status, 0);
    t1 = now_s();
    close(fds[0]);
    posix_spawn_file_actions_destroy(&fa);
    if (n != 64 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("b3sum failed");
    hex_out[64] = '\0';
    return t1 - t0;
}

static double
run_file(const char *path, sto_tree_hasher_t *h, sink_t *s, uint8_t *buf, size_t read_len,
         uint8_t root[32])
{
    int fd = open(path, O_RDONLY);
    double t0 = now_s();
    ssize_t n;

    if (fd < 0)
        die("open");
    sto_tree_hasher_reset(h);
    s->len = 0;
    while ((n = read(fd, buf, read_len)) > 0)
        if (sto_tree_hasher_update(h, buf, (size_t)n) < 0)
            die("update");
    if (n < 0 || sto_tree_hasher_finish(h, root, NULL) < 0)
        die("read/finish");
    close(fd);
    return now_s() - t0;
}

static double
run_mmap(const char *path, size_t len, sto_tree_hasher_t *h, sink_t *s, uint8_t root[32])
{
    int fd = open(path, O_RDONLY);
    double t0 = now_s();
    void *m;

    if (fd < 0)
        die("open");
    m = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED)
        die("mmap");
    sto_tree_hasher_reset(h);
    s->len = 0;
    if (sto_tree_hasher_update(h, m, len) < 0 || sto_tree_hasher_finish(h, root, NULL) < 0)
        die("mmap hash");
    munmap(m, len);
    close(fd);
    return now_s() - t0;
}

static double
run_mem(const uint8_t *data, size_t len, sto_tree_hasher_t *h, sink_t *s, uint8_t root[32])
{
    double t0 = now_s();

    sto_tree_hasher_reset(h);
    s->len = 0;
    if (sto_tree_hasher_update(h, data, len) < 0 || sto_tree_hasher_finish(h, root, NULL) < 0)
        die("mem");
    return now_s() - t0;
}

static double
run_lib(const uint8_t *data, size_t len, uint8_t root[32])
{
    blake3_hasher b;
    double t0 = now_s();

    blake3_hasher_init(&b);
    blake3_hasher_update(&b, data, len);
    blake3_hasher_finalize(&b, root, 32);
    return now_s() - t0;
}

typedef struct {
    const uint8_t *p;
    size_t len;
} ob_t;

static int
ob_read(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
    const ob_t *o = arg;

    if (off + len > o->len)
        return -1;
    memcpy(buf, o->p + off, len);
    return 0;
}

static double
run_verify(const uint8_t *data, size_t len, const uint8_t root[32], const sink_t *s)
{
    ob_t o = {s->p, s->len};
    double t0 = now_s();

    for (size_t off = 0; off < len; off += READ_LEN) {
        size_t n = len - off < READ_LEN ? len - off : READ_LEN;

        if (sto_tree_range_verify_fn(root, len, ob_read, &o, off / STO_PIECE_LEN, data + off, n,
                                     NULL) != 0)
            die("verify");
    }
    return now_s() - t0;
}

int
main(int argc, char **argv)
{
    int runs = argc > 2 ? atoi(argv[2]) : RUNS_DEFAULT;
    double tb[64], tf[64], tq[64], tp[64], tm[64], tl[64], tv[64];
    uint8_t root[32], r2[32], *data, *buf = ron_xmalloc(READ_LEN);
    char hex[65], ours[65];
    struct stat st;
    size_t len, off = 0;
    sink_t s;
    sto_tree_hasher_t *h;
    int fd;

    if (argc < 2 || runs < 1 || runs > 64)
        die("usage: bench_tree FILE [runs 1..64]");
    fd = open(argv[1], O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0)
        die("cannot open FILE");
    len = (size_t)st.st_size;
    data = ron_xmalloc(len + 1);
    while (off < len) {
        ssize_t n = read(fd, data + off, len - off);

        if (n <= 0)
            die("read");
        off += (size_t)n;
    }
    close(fd);
    s.cap = (size_t)sto_tree_outboard_len(len);
    s.p = ron_xmalloc(s.cap + 1);
    s.len = 0;
    h = sto_tree_hasher_new(sink_cb, &s);

    for (int r = 0; r < runs; r++) {
        tb[r] = run_b3sum(argv[1], hex);
        tf[r] = run_file(argv[1], h, &s, buf, READ_LEN, root);
        ron_hex_encode(ours, root, 32);
        if (strncmp(hex, ours, 64) != 0)
            die("root differs from b3sum");
        tq[r] = run_file(argv[1], h, &s, buf, READ_LEN / 4, r2);
        if (memcmp(root, r2, 32) != 0)
            die("256 KiB reads: root differs");
        tp[r] = run_mmap(argv[1], len, h, &s, r2);
        if (memcmp(root, r2, 32) != 0)
            die("mmap: root differs");
        tm[r] = run_mem(data, len, h, &s, r2);
        tl[r] = run_lib(data, len, root);
        if (memcmp(root, r2, 32) != 0 || s.len != s.cap)
            die("mem root or outboard length differs");
        tv[r] = run_verify(data, len, root, &s);
    }
    {
        double b = median(tb, runs), f = median(tf, runs), m = median(tm, runs);
        double q = median(tq, runs), mp = median(tp, runs);
        double l = median(tl, runs), v = median(tv, runs), gb = (double)len / 1e9;

        printf("%.0f MiB object, %d rounds, medians; outboard %zu bytes. Ratio = b3sum time / "
               "our time (> 1: faster than b3sum).\n\n", (double)len / 1048576, runs, s.cap);
        printf("| what | median s | GB/s | vs b3sum -t1 |\n|---|---:|---:|---:|\n");
        printf("| `b3sum --num-threads 1` on the file (mmap, process included) | %.3f | %.2f | "
               "1.00 |\n", b, gb / b);
        printf("| sto_tree hash + outboard, file in 1 MiB reads | %.3f | %.2f | %.2f |\n", f,
               gb / f, b / f);
        printf("| sto_tree hash + outboard, file in 256 KiB reads | %.3f | %.2f | %.2f |\n", q,
               gb / q, b / q);
        printf("| sto_tree hash + outboard, file through mmap | %.3f | %.2f | %.2f |\n", mp,
               gb / mp, b / mp);
        printf("| sto_tree hash + outboard, in memory | %.3f | %.2f | %.2f |\n", m, gb / m,
               b / m);
        printf("| BLAKE3 C library `blake3_hasher_update`, in memory (root only) | %.3f | %.2f | "
               "%.2f |\n", l, gb / l, b / l);
        printf("| sto_tree verify every piece in 1 MiB ranges, in memory | %.3f | %.2f | %.2f |\n",
               v, gb / v, b / v);
    }
    sto_tree_hasher_free(h);
    free(s.p);
    free(data);
    free(buf);
    return 0;
}
