/*
 * bench_gw_server.c - the gateway on its own: a tx_server with gw_handle over
 * a file store (--dir) or the RAM store (no --dir), and an optional name
 * index (--index, a data directory). For the curl integration test and
 * gateway benchmarks until `ron node` runs the gateway as a service. Prints
 * "port <n>" on stdout once listening; stops on SIGINT or SIGTERM.
 *
 * --guard enforces capabilities as a node's gateway does: a capability
 * authority in RAM under a random master, the gateway's guard following it,
 * the policy bundle of --policy (the format of the node's `policy_file`;
 * default: the shipped one); it prints "cap <token>" (the operator's
 * capability: every op) and "getcap <token>" (get only) before "port".
 *
 *   bench_gw_server [--addr 127.0.0.1:0] [--dir DIR] [--index DIR]
 *                   [--max-body BYTES] [--chunk BYTES] [--no-rate]
 *                   [--guard [--policy FILE]]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

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
    fprintf(stderr, "requests %llu readers_reused %llu inline_reads %llu auth_rejected %llu\n",
            (unsigned long long)st->requests, (unsigned long long)st->readers_reused,
            (unsigned long long)st->inline_reads, (unsigned long long)st->auth_rejected);
    tx_server_close(s->srv, serve_srv_closed, s);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
}

static int
usage(void)
{
    fprintf(stderr, "usage: bench_gw_server [--addr A] [--dir D] [--index D] [--max-body N] "
                    "[--chunk N] [--no-rate] [--guard [--policy FILE]]\n");
    return 2;
}

/* An authority in RAM and a guard following it; prints the operator's and
 * a get-only capability. Returns 0 or a code (reason printed). */
static int
serve_guard(const char *policy, guard_authority_t **auth_out, guard_t **guard_out)
{
    uint8_t master[GUARD_MASTER_LEN];
    guard_authority_opts_t ao = {0};
    guard_opts_t go = {.service = "gateway", .policy_file = policy};
    guard_entry_t e[8];
    guard_req_t gr = {.op = AUTH_OP_MINT};
    guard_result_t res;
    guard_mint_req_t m = {.ops = 1u << AUTH_OP_GET, .ttl = 86400};
    static char op[AUTH_MAX_TOKEN + 1], get[AUTH_MAX_TOKEN + 1];
    char id[AUTH_ID_MAX + 1];
    bool more;
    size_t n;
    long len;
    int rc;

    if (sodium_init() < 0)
        return RON_EINVAL;
    randombytes_buf(master, sizeof master);
    ao.master = go.master = master;
    rc = guard_authority_open(&ao, (int64_t)time(NULL), auth_out);
    if (rc == 0)
        rc = guard_new(&go, guard_out);
    sodium_memzero(master, sizeof master);
    if (rc < 0) {
        fprintf(stderr, "guard: %s\n", ron_strerror(rc));
        return rc;
    }
    n = guard_authority_since(*auth_out, 0, e, sizeof e / sizeof e[0], &more);
    if ((rc = guard_apply(*guard_out, 0, guard_authority_head(*auth_out), e, n)) < 0) {
        fprintf(stderr, "guard: apply: %s\n", ron_strerror(rc));
        return rc;
    }
    if ((len = guard_authority_mint_operator(*auth_out, op, sizeof op)) < 0) {
        fprintf(stderr, "guard: operator: %s\n", ron_strerror((int)len));
        return (int)len;
    }
    gr.token = op;
    gr.token_len = (size_t)len;
    if ((rc = guard_check(*guard_out, &gr, &res)) < 0 ||
        (len = guard_mint(*guard_out, &res.verdict.grant, res.actor, &m, get, sizeof get, id)) <
            0) {
        fprintf(stderr, "guard: mint: %s\n", ron_strerror(rc < 0 ? rc : (int)len));
        return rc < 0 ? rc : (int)len;
    }
    printf("cap %s\ngetcap %s\n", op, get);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0", *dir = NULL, *index_dir = NULL, *policy = NULL;
    bool guarded = false;
    guard_authority_t *auth = NULL;
    guard_t *guard = NULL;
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
        if (strcmp(argv[i], "--guard") == 0) {
            guarded = true;
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
        else if (strcmp(argv[i], "--policy") == 0)
            policy = v;
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
    if (guarded && (rc = serve_guard(policy, &auth, &guard)) < 0)
        goto out;
    uv_loop_init(&loop);
    gc.store = store;
    gc.index = idx;
    gw = gw_new(&loop, &gc);
    gw_set_guard(gw, guard);
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
    guard_free(guard);
    guard_authority_close(auth);
    idx_free(idx);
    sto_close(store);
    return rc < 0 ? 1 : 0;
}
