/*
 * bench_libron.c - latency of libron operations against a running node's app
 * port, one client, one connection (what an application linking libron sees;
 * no process start per operation, unlike timing `ron get`).
 *   bench_libron get NODE ADDR N    N whole-object gets of ADDR (verified), to a counting sink
 *   bench_libron put NODE SIZE N    N puts of distinct SIZE-byte buffers
 * Prints "<op> p50 <ms> p95 <ms> p99 <ms> n <N>". Used by bench/ingest.sh.
 * Every request carries the capability the CLI would send ($RON_CAP, else
 * <data dir>/operator.cap; none when neither exists): puts need one, and a
 * capability bearer's gets are not held to the anonymous per-source rate.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libron.h"
#include "ron_err.h"
#include "ron_util.h"

static int
count_sink(void *arg, const uint8_t *data, size_t len)
{
    (void)data;
    *(uint64_t *)arg += len;
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double
pct(const uint64_t *ns, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)ns[i] / 1e6;
}

int
main(int argc, char **argv)
{
    ron_client_opts_t o = {0};
    ron_client_t *c = NULL;
    uint64_t n, size = 0, *ns;
    uint8_t *buf = NULL;
    char addr[RON_CLIENT_ADDR_LEN + 1], dir[RON_CLIENT_MAX_PATH];
    char *cap = NULL;
    int rc = 0;

    if (argc != 5 || ron_parse_u64(argv[4], strlen(argv[4]), &n) < 0 || n == 0 || n > 1000000 ||
        (strcmp(argv[1], "get") != 0 && strcmp(argv[1], "put") != 0)) {
        fprintf(stderr, "usage: bench_libron get NODE ADDR N | put NODE SIZE N\n");
        return 2;
    }
    o.node = argv[2];
    rc = ron_client_cap_find(NULL, ron_client_data_dir(NULL, dir, sizeof dir) == 0 ? dir : NULL,
                             &cap);
    if (rc < 0) {
        fprintf(stderr, "bench_libron: capability: %s\n", ron_errname(rc));
        return 2;
    }
    o.cap = cap;
    rc = ron_client_new(&o, &c);
    free(cap);
    if (rc < 0) {
        fprintf(stderr, "bench_libron: bad node %s\n", argv[2]);
        return 2;
    }
    if (strcmp(argv[1], "put") == 0) {
        if (ron_parse_u64(argv[3], strlen(argv[3]), &size) < 0 || size > (1u << 30)) {
            fprintf(stderr, "bench_libron: bad size\n");
            ron_client_free(c);
            return 2;
        }
        buf = ron_xmalloc(size + 8);
        ron_random_bytes(buf, size + 8);
    }
    ns = ron_xcalloc(n, sizeof *ns);
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        uint64_t t0 = ron_now_ns(), got = 0;
        if (buf != NULL) {
            memcpy(buf, &i, size >= 8 ? 8 : size); /* distinct objects */
            rc = ron_client_put_buf(c, buf, size, NULL, addr, NULL);
        } else {
            rc = ron_client_get(c, argv[3], 0, RON_CLIENT_TO_END, count_sink, &got, NULL);
        }
        ns[i] = ron_now_ns() - t0;
    }
    if (rc < 0) {
        fprintf(stderr, "bench_libron: %s: %s\n", ron_errname(rc),
                ron_client_last_error(c)->message);
    } else {
        qsort(ns, n, sizeof *ns, cmp_u64);
        printf("%s p50 %.3f p95 %.3f p99 %.3f n %" PRIu64 "\n", argv[1], pct(ns, n, 0.5),
               pct(ns, n, 0.95), pct(ns, n, 0.99), n);
    }
    free(ns);
    free(buf);
    ron_client_free(c);
    return rc < 0 ? 1 : 0;
}
