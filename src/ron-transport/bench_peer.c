/*
 * bench_peer.c - single-stream throughput of OAP/1 data frames over one peer
 * TLS 1.3 session on loopback (bench/peer.sh). Both endpoints run in this
 * process on one libuv loop, as two nodes would on one core: the dialer
 * streams 64 KiB REQ frames on one stream under per-stream credit, the
 * listener reports each frame finished at once (credit back). Prints the
 * median GB/s of the runs, by wall clock and per CPU second of the process
 * (user + system: what `openssl speed` counts), as two markdown table rows.
 * Usage: bench_peer [runs] [MiB per run]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>

#include <uv.h>

#include "ron_err.h"
#include "ron_transport.h"
#include "tx_peer.h"

#define BENCH_CHUNK 65536u

typedef struct {
    uv_loop_t loop;
    tx_peer_session_t *tx, *rx;
    uint64_t corr;
    uint64_t to_send, sent, received; /* frames */
    uint64_t t0, t1;                  /* ns */
    bool done;
} bench_t;

static uint8_t chunk[BENCH_CHUNK];
static bench_t *g;

static void
bench_pump(bench_t *b)
{
    oap_frame_t f;

    memset(&f, 0, sizeof f);
    f.app_proto_id = OAP_APP_OVERLAY;
    f.corr_id = b->corr;
    f.payload = chunk;
    f.payload_len = BENCH_CHUNK;
    while (b->tx != NULL && b->sent < b->to_send) {
        f.flags = (uint16_t)(OAP_F_REQ | (b->sent == 0 ? OAP_F_START : 0) |
                             (b->sent + 1 == b->to_send ? OAP_F_END : 0));
        int rc = tx_peer_send(b->tx, &f);
        if (rc == RON_EAGAIN)
            return;
        if (rc < 0) {
            fprintf(stderr, "bench_peer: send: %s\n", ron_strerror(rc));
            exit(1);
        }
        b->sent++;
    }
}

static void
on_session(tx_peer_session_t *s, void *arg)
{
    bench_t *b = g;

    (void)arg;
    if (tx_peer_session_is_dialer(s))
        b->tx = s;
    else
        b->rx = s;
}

static void
on_frame(tx_peer_session_t *s, const oap_frame_t *f, void *arg)
{
    bench_t *b = g;

    (void)arg;
    (void)tx_peer_consume(s, f->corr_id, false, 1);
    if (++b->received == b->to_send) {
        b->t1 = uv_hrtime();
        b->done = true;
    }
}

static void
on_writable(tx_peer_session_t *s, void *arg)
{
    (void)s, (void)arg;
    bench_pump(g);
}

/* CPU seconds (user + system) of this process. */
static double
cpu_seconds(void)
{
    struct rusage ru;

    (void)getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 1024;
    kms_keystore_t *ka = NULL, *kb = NULL;
    tx_peer_t *pa = NULL, *pb = NULL;
    tx_peer_callbacks_t cb = {on_session, on_frame, on_writable, NULL, NULL};
    tx_peer_config_t cfg;
    kms_opts_t o;
    char err[256], addr[TX_ADDR_MAX];
    double gbps[64], gbpc[64];
    bench_t b;
    tx_peer_session_t *s;

    if (runs < 1 || runs > 64 || mib < 1) {
        fprintf(stderr, "usage: bench_peer [runs 1..64] [MiB per run]\n");
        return 2;
    }
    memset(&b, 0, sizeof b);
    g = &b;
    memset(chunk, 0xa5, sizeof chunk);
    if (tx_tls_secure_heap_init() < 0 || uv_loop_init(&b.loop) < 0)
        return 1;
    memset(&o, 0, sizeof o);
    o.amnesia = true;
    o.create = true;
    if (kms_keystore_open(&o, &ka, err, sizeof err) < 0 ||
        kms_keystore_open(&o, &kb, err, sizeof err) < 0) {
        fprintf(stderr, "bench_peer: keys: %s\n", err);
        return 1;
    }
    tx_peer_config_default(&cfg);
    cfg.idle_ms = 600000;
    if (tx_peer_new(&b.loop, ka, &cfg, &cb, &pa) < 0 ||
        tx_peer_new(&b.loop, kb, &cfg, &cb, &pb) < 0 ||
        tx_peer_listen(pa, "127.0.0.1:0", addr, sizeof addr) < 0)
        return 1;
    if (tx_peer_dial(pb, addr, tx_peer_node_id(pa), &s) < 0)
        return 1;
    while (b.tx == NULL || b.rx == NULL)
        if (uv_run(&b.loop, UV_RUN_ONCE) == 0)
            return 1;
    for (int r = 0; r < runs; r++) {
        b.corr++;
        b.to_send = mib * 16; /* 64 KiB frames per MiB */
        b.sent = b.received = 0;
        b.done = false;
        double c0 = cpu_seconds();
        b.t0 = uv_hrtime();
        bench_pump(&b);
        while (!b.done)
            (void)uv_run(&b.loop, UV_RUN_ONCE);
        gbps[r] = (double)(b.to_send * BENCH_CHUNK) / (double)(b.t1 - b.t0);
        gbpc[r] = (double)(b.to_send * BENCH_CHUNK) / 1e9 / (cpu_seconds() - c0);
    }
    qsort(gbps, (size_t)runs, sizeof gbps[0], cmp_double);
    qsort(gbpc, (size_t)runs, sizeof gbpc[0], cmp_double);
    printf("| OAP/1 64 KiB data frames, one stream, one peer session: wall clock | %.2f GB/s | "
           "%d x %llu MiB |\n",
           gbps[runs / 2], runs, (unsigned long long)mib);
    printf("| the same per CPU second (user + system, both ends) | %.2f GB/s | %d x %llu MiB |\n",
           gbpc[runs / 2], runs, (unsigned long long)mib);
    tx_peer_close(pa, NULL, NULL);
    tx_peer_close(pb, NULL, NULL);
    (void)uv_run(&b.loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&b.loop);
    kms_keystore_free(ka);
    kms_keystore_free(kb);
    return 0;
}
