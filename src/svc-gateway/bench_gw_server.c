/*
 * bench_gw_server.c - the gateway on its own: a tx_server with gw_handle over
 * a file store (--dir) or the RAM store (no --dir), and an optional name
 * index (--index, a data directory). For the curl integration test and
 * gateway benchmarks until `ron node` runs the gateway as a service. Prints
 * "port <n>" on stdout once listening; stops on SIGINT or SIGTERM.
 *
 *   bench_gw_server [--addr 127.0.0.1:0] [--dir DIR] [--index DIR]
 *                   [--max-body BYTES] [--chunk BYTES] [--no-rate]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "svc_gateway.h"

typedef struct {
    tx_server_t *srv;
    gw_t *gw;
    uv_signal_t sig_int, sig_term;
} serve_t;

static void
serve_gw_closed(void *arg)
{
    (void)arg; /* the loop ends: nothing is left on it */
}

static void
serve_srv_closed(void *arg)
{
    serve_t *s = arg;
    gw_close(s->gw, serve_gw_closed, s);
}

static void
serve_stop(uv_signal_t *h, int signum)
{
    serve_t *s = h->data;

    const gw_stats_t *st = gw_stats(s->gw);

    (void)signum;
    /* for benchmarks: how the requests were served */
    fprintf(stderr, "requests %llu readers_reused %llu inline_reads %llu\n",
            (unsigned long long)st->requests, (unsigned long long)st->readers_reused,
            (unsigned long long)st->inline_reads);
    tx_server_close(s->srv, serve_srv_closed, s);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
}

static int
usage(void)
{
    fprintf(stderr, "usage: bench_gw_server [--addr A] [--dir D] [--index D] [--max-body N] "
                    "[--chunk N] [--no-rate]\n");
    return 2;
}

int
main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0", *dir = NULL, *index_dir = NULL;
    sto_config_t sc = {0};
    idx_config_t ic = {0};
    gw_config_t gc = {0};
    tx_config_t tc;
    tx_listener_t *l = NULL;
    sto_store_t *store = NULL;
    idx_t *idx = NULL;
    gw_t *gw = NULL;
    serve_t s = {0};
    uv_loop_t loop;
    int rc = 1;

    signal(SIGPIPE, SIG_IGN); /* a gone client is an error code, not a signal */
    tx_config_default(&tc);
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--no-rate") == 0) {
            tc.rate_disabled = true;
            continue;
        }
        if (v == NULL)
            return usage();
        if (strcmp(argv[i], "--addr") == 0)
            addr = v;
        else if (strcmp(argv[i], "--dir") == 0)
            dir = v;
        else if (strcmp(argv[i], "--index") == 0)
            index_dir = v;
        else if (strcmp(argv[i], "--max-body") == 0)
            tc.max_body = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--chunk") == 0)
            gc.chunk = (uint32_t)strtoul(v, NULL, 10);
        else
            return usage();
        i++;
    }
    sc.dir = dir;
    if ((rc = sto_open(&sc, &store)) < 0) {
        fprintf(stderr, "store: %s\n", ron_strerror(rc));
        return 1;
    }
    if (index_dir != NULL) {
        ic.data_dir = index_dir;
        if ((rc = idx_new(&ic, &idx)) < 0) {
            fprintf(stderr, "index: %s\n", ron_strerror(rc));
            goto out;
        }
    }
    uv_loop_init(&loop);
    gc.store = store;
    gc.index = idx;
    gw = gw_new(&loop, &gc);
    s.gw = gw;
    if ((rc = tx_listener_bind(&loop, addr, &l)) < 0) {
        fprintf(stderr, "bind %s: %s\n", addr, ron_strerror(rc));
        goto out_loop;
    }
    printf("port %u\n", tx_listener_port(l));
    fflush(stdout);
    s.srv = tx_server_new(&loop, &tc, gw_handle, gw);
    tx_server_set_head_hook(s.srv, gw_head, gw); /* uploads stream, as in the node */
    if ((rc = tx_server_attach(s.srv, l)) < 0)
        goto out_loop;
    uv_signal_init(&loop, &s.sig_int);
    uv_signal_init(&loop, &s.sig_term);
    s.sig_int.data = s.sig_term.data = &s;
    uv_signal_start(&s.sig_int, serve_stop, SIGINT);
    uv_signal_start(&s.sig_term, serve_stop, SIGTERM);
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = 0;
out_loop:
    if (rc < 0) {
        if (s.srv != NULL)
            tx_server_close(s.srv, serve_srv_closed, &s);
        else
            gw_close(gw, serve_gw_closed, &s);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    gw_free(gw);
    uv_loop_close(&loop);
out:
    idx_free(idx);
    sto_close(store);
    return rc < 0 ? 1 : 0;
}
