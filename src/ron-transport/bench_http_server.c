/*
 * bench_http_server.c - the tiny server bench/http.sh measures: GET /healthz
 * answers 200 "ok" through the full hardening layer, configured from a JSON
 * file of tx_config_t knobs (bench/config/admin-bench.json).
 * Usage: bench_http_server ADDR [CONFIG.json]; prints "port N" when ready
 * and serves until SIGINT/SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include <jansson.h>

#include "ron_err.h"
#include "ron_transport.h"

static void
on_request(tx_request_t *req, void *arg)
{
    const tx_request_view_t *v = tx_request_view(req);
    static const tx_header_t hdrs[] = {{"Content-Type", "text/plain"}};

    (void)arg;
    if (strcmp(v->path, "/healthz") == 0)
        tx_respond(req, 200, hdrs, 1, "ok", 2);
    else
        tx_respond_error(req, 404, NULL, NULL, 0);
}

static int
load_config(const char *path, tx_config_t *cfg)
{
    json_error_t err;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    int rc;

    if (j == NULL) {
        fprintf(stderr, "%s:%d: %s\n", path, err.line, err.text);
        return RON_ECONFIG;
    }
    json_int_t max_conns = 0, max_inflight = 0, rate_rps = 0, rate_burst = 0, header_ms = 0,
               body_ms = 0, idle_ms = 0, max_body = 0;
    rc = json_unpack_ex(j, &err, JSON_STRICT,
                        "{s?I, s?I, s?I, s?I, s?I, s?I, s?I, s?I}", "max_conns", &max_conns,
                        "max_inflight", &max_inflight, "rate_rps", &rate_rps, "rate_burst",
                        &rate_burst, "header_timeout_ms", &header_ms, "body_timeout_ms",
                        &body_ms, "idle_timeout_ms", &idle_ms, "max_body", &max_body);
    json_decref(j);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", path, err.text);
        return RON_ECONFIG;
    }
    cfg->max_conns = (uint32_t)max_conns;
    cfg->max_inflight = (uint32_t)max_inflight;
    cfg->rate_rps = (uint32_t)rate_rps;
    cfg->rate_burst = (uint32_t)rate_burst;
    cfg->header_timeout_ms = (uint32_t)header_ms;
    cfg->body_timeout_ms = (uint32_t)body_ms;
    cfg->idle_timeout_ms = (uint32_t)idle_ms;
    cfg->max_body = (uint32_t)max_body;
    return 0;
}

static void
on_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    uv_stop(h->loop);
}

int
main(int argc, char **argv)
{
    uv_loop_t *loop = uv_default_loop();
    tx_config_t cfg;
    tx_listener_t *l;
    tx_server_t *s;
    uv_signal_t sigint, sigterm;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDR [CONFIG.json]\n", argv[0]);
        return 2;
    }
    /* thousands of connections need thousands of fds */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&cfg, 0, sizeof cfg);
    if (argc > 2 && load_config(argv[2], &cfg) < 0)
        return 2;
    if ((rc = tx_listener_bind(loop, argv[1], &l)) < 0) {
        fprintf(stderr, "bind %s: %s\n", argv[1], ron_strerror(rc));
        return 1;
    }
    s = tx_server_new(loop, &cfg, on_request, NULL);
    if ((rc = tx_server_attach(s, l)) < 0) {
        fprintf(stderr, "listen: %s\n", ron_strerror(rc));
        return 1;
    }
    printf("port %u\n", tx_listener_port(l));
    fflush(stdout);
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    const tx_stats_t *st = tx_server_stats(s);
    fprintf(stderr, "requests %llu rate_rejects %llu refused %llu\n",
            (unsigned long long)st->requests, (unsigned long long)st->rejects[TX_REJECT_RATE],
            (unsigned long long)st->rejects[TX_REJECT_MAX_CONNS]);
    tx_server_close(s, NULL, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}
