/*
 * bench_overlay.c - single-stream verified transfer between two overlay
 * endpoints over the real peer transport (mutual TLS 1.3 on loopback): the
 * provider serves an object from a RAM store on its own thread and loop,
 * the fetcher verifies every piece and writes it into a fresh RAM store
 * with the chaining value the check computed (sto_put_write_piece: one
 * BLAKE3 pass per piece; the commit still checks the root). Prints
 * one markdown row per run and the median.
 * Usage: bench_overlay [MiB (1024)] [runs (5)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <uv.h>

#include "ron_err.h"
#include "svc_overlay.h"
#include "tx_peer.h"

static int
tl_send(void *link, const oap_frame_t *f)
{
    return tx_peer_send(link, f);
}

static int
tl_consume(void *link, uint64_t corr_id, bool mine, uint32_t n)
{
    return tx_peer_consume(link, corr_id, mine, n);
}

static void
tl_pause(void *link, bool paused)
{
    tx_peer_session_pause(link, paused);
}

static void
tl_close(void *link)
{
    tx_peer_session_close(link);
}

static const ovl_link_ops_t tl_ops = {tl_send, tl_consume, tl_pause, tl_close};

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    kms_keystore_t *ks;
    tx_peer_t *p;
    sto_store_t *store;
    ovl_node_t *node;
    ovl_session_t *sess;
    ovl_session_stats_t last; /* the session's counters when it closed */
    char addr[64];
} bnode_t;

static void
on_session(tx_peer_session_t *s, void *arg)
{
    bnode_t *n = arg;
    ovl_session_t *os = NULL;

    if (ovl_session_new(n->node, &tl_ops, s, tx_peer_session_id(s), tx_peer_session_max_frame(s),
                        uv_now(&n->loop), &os) == 0) {
        tx_peer_session_set_data(s, os);
        n->sess = os;
    }
}

static void
on_frame(tx_peer_session_t *s, const oap_frame_t *f, void *arg)
{
    bnode_t *n = arg;
    ovl_session_t *os = tx_peer_session_data(s);

    if (os != NULL)
        ovl_session_recv(os, f, uv_now(&n->loop));
}

static void
on_writable(tx_peer_session_t *s, void *arg)
{
    ovl_session_t *os = tx_peer_session_data(s);

    (void)arg;
    if (os != NULL)
        ovl_session_writable(os);
}

static void
on_close(tx_peer_session_t *s, int reason, void *arg)
{
    bnode_t *n = arg;
    ovl_session_t *os = tx_peer_session_data(s);

    if (os == NULL)
        return;
    ovl_session_stats(os, &n->last);
    ovl_session_closed(os, reason);
    ovl_session_free(os);
    tx_peer_session_set_data(s, NULL);
    if (n->sess == os)
        n->sess = NULL;
}

static int
bnode_start(bnode_t *n, bool listen)
{
    kms_opts_t o;
    char err[256];
    tx_peer_callbacks_t cb = {on_session, on_frame, on_writable, on_close, n};
    tx_peer_config_t pc;
    sto_config_t sc = {0};
    ovl_config_t oc = {0};

    memset(&o, 0, sizeof(o));
    o.amnesia = true;
    o.create = true;
    if (uv_loop_init(&n->loop) != 0 || kms_keystore_open(&o, &n->ks, err, sizeof(err)) != 0)
        return -1;
    tx_peer_config_default(&pc);
    if (tx_peer_new(&n->loop, n->ks, &pc, &cb, &n->p) != 0)
        return -1;
    if (listen && tx_peer_listen(n->p, "127.0.0.1:0", n->addr, sizeof(n->addr)) != 0)
        return -1;
    if (sto_open(&sc, &n->store) != 0)
        return -1;
    memcpy(oc.node_id, tx_peer_node_id(n->p), OVL_ID_LEN);
    oc.store = n->store;
    return ovl_node_new(&oc, &n->node);
}

static void
closed_cb(void *arg)
{
    (void)arg;
}

static void
stop_cb(uv_async_t *a)
{
    bnode_t *n = a->data;

    tx_peer_close(n->p, closed_cb, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static void
provider_thread(void *arg)
{
    bnode_t *n = arg;

    uv_run(&n->loop, UV_RUN_DEFAULT);
}

typedef struct {
    sto_put_t *put;
    uint8_t *last; /* the last piece arrives first: held until the end */
    size_t last_len;
    uint8_t last_cv[STO_TREE_HASH_LEN];
    uint64_t npieces, got;
    int done, rc;
} sink_t;

/* Every piece verified (one BLAKE3 pass, cv from it) goes into the store
 * without being hashed again (sto_put_write_piece). */
static int
sink_piece(void *arg, uint64_t piece, uint64_t size, const uint8_t *bytes, size_t len,
           const uint8_t *cv)
{
    sink_t *k = arg;

    k->npieces = sto_tree_pieces(size);
    k->got++;
    if (piece == k->npieces - 1) {
        k->last = malloc(len + 1);
        memcpy(k->last, bytes, len);
        memcpy(k->last_cv, cv, STO_TREE_HASH_LEN);
        k->last_len = len;
        if (k->npieces > 1)
            return 0;
    } else if (sto_put_write_piece(k->put, bytes, len, cv) < 0) {
        return RON_ESTORE;
    }
    if (piece == k->npieces - 1 || piece == k->npieces - 2)
        if (sto_put_write_piece(k->put, k->last, k->last_len, k->last_cv) < 0)
            return RON_ESTORE;
    return 0;
}

static void
sink_done(void *arg, int rc)
{
    sink_t *k = arg;

    k->done = 1;
    k->rc = rc;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds used so far by the thread whose CPU clock is clk. */
static double
cpu_s(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 1024;
    int runs = argc > 2 ? atoi(argv[2]) : 5, i;
    size_t size = mib << 20;
    bnode_t a, b;
    uv_thread_t th;
    uint8_t addr[STO_ADDR_LEN], got_addr[STO_ADDR_LEN];
    sto_put_t *put;
    double rates[64], fcpu[64], pcpu[64];
    clockid_t pclk;
    uint8_t *chunk;
    size_t off;
    tx_peer_session_t *ds;
    uint64_t seed = 7;

    if (runs < 1 || runs > 64 || mib == 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    if (bnode_start(&a, true) != 0 || bnode_start(&b, false) != 0) {
        fprintf(stderr, "bench_overlay: setup failed\n");
        return 1;
    }
    /* the object: pseudo-random bytes, put into the provider's RAM store */
    chunk = malloc(1 << 20);
    if (sto_put_begin(a.store, NULL, NULL, NULL, size, &put) != 0)
        return 1;
    for (off = 0; off < size; off += 1 << 20) {
        for (size_t j = 0; j < (1 << 20); j += 8) { /* splitmix64: fast, not compressible */
            uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            memcpy(chunk + j, &z, 8);
        }
        if (sto_put_write(put, chunk, 1 << 20) != 0)
            return 1;
    }
    if (sto_put_commit(put, addr) != 0)
        return 1;
    free(chunk);
    a.stop.data = &a;
    uv_async_init(&a.loop, &a.stop, stop_cb);
    uv_thread_create(&th, provider_thread, &a);
    if (pthread_getcpuclockid(th, &pclk) != 0)
        return 1;
    uv_update_time(&b.loop); /* generating the object took a while: timers must not start stale */
    if (tx_peer_dial(b.p, a.addr, tx_peer_node_id(a.p), &ds) != 0)
        return 1;
    while (b.sess == NULL && tx_peer_stats(b.p)->open > 0)
        uv_run(&b.loop, UV_RUN_ONCE);
    if (b.sess == NULL) {
        fprintf(stderr, "bench_overlay: the peer session did not come up\n");
        return 1;
    }
    printf("| run | MiB | seconds | GB/s | fetcher CPU s/GiB | provider CPU s/GiB |\n"
           "|---:|---:|---:|---:|---:|---:|\n");
    for (i = 0; i < runs; i++) {
        sto_store_t *dst = NULL;
        sto_config_t sc = {0};
        sink_t k = {0};
        ovl_fetch_cb_t cb = {.on_done = sink_done, .arg = &k, .on_piece_cv = sink_piece};
        double t0, dt, f0, p0, gib = (double)size / (double)(1u << 30);

        sto_open(&sc, &dst);
        if (sto_put_begin(dst, NULL, addr, NULL, size, &k.put) != 0)
            return 1;
        t0 = now_s();
        f0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
        p0 = cpu_s(pclk);
        if (ovl_fetch_start(b.sess, addr, 0, OVL_LEN_TO_END, &cb, NULL) != 0)
            return 1;
        while (!k.done)
            uv_run(&b.loop, UV_RUN_ONCE);
        if (k.rc != 0 || sto_put_commit(k.put, got_addr) != 0 ||
            memcmp(addr, got_addr, STO_ADDR_LEN) != 0) {
            fprintf(stderr, "bench_overlay: transfer failed: %s\n", ron_strerror(k.rc));
            return 1;
        }
        dt = now_s() - t0;
        fcpu[i] = (cpu_s(CLOCK_THREAD_CPUTIME_ID) - f0) / gib;
        pcpu[i] = (cpu_s(pclk) - p0) / gib;
        rates[i] = (double)size / dt / 1e9;
        printf("| %d | %zu | %.3f | %.2f | %.3f | %.3f |\n", i + 1, mib, dt, rates[i], fcpu[i],
               pcpu[i]);
        fflush(stdout);
        free(k.last);
        sto_close(dst);
    }
    qsort(rates, (size_t)runs, sizeof(double), cmp_d);
    qsort(fcpu, (size_t)runs, sizeof(double), cmp_d);
    qsort(pcpu, (size_t)runs, sizeof(double), cmp_d);
    printf("\nmedian: %.2f GB/s\n", rates[runs / 2]);
    printf("median CPU: fetcher %.3f s/GiB, provider %.3f s/GiB\n", fcpu[runs / 2], pcpu[runs / 2]);
    uv_async_send(&a.stop);
    uv_thread_join(&th);
    printf("provider: %llu pieces sent, %llu sends met a full link or no credit\n",
           (unsigned long long)a.last.pieces_sent, (unsigned long long)a.last.send_stalls);
    uv_loop_close(&a.loop);
    tx_peer_close(b.p, closed_cb, NULL);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    ovl_node_free(a.node);
    ovl_node_free(b.node);
    sto_close(a.store);
    sto_close(b.store);
    kms_keystore_free(a.ks);
    kms_keystore_free(b.ks);
    return 0;
}
