/*
 * bench_http_server.c - the tiny server bench/http.sh measures: GET /healthz
 * answers 200 "ok" through the full hardening layer, configured from a JSON
 * file of tx_config_t knobs (bench/config/admin-bench.json). The integration
 * tests of TLS and HTTP/2 drive it too: --tls DIR serves HTTPS with the
 * certificate in DIR (generated on first start); GET /big?n=BYTES streams n
 * bytes with tx_respond_write and its drain callback; GET /slow?ms=N
 * answers after N ms; POST /echo answers the body's length.
 * Usage: bench_http_server ADDR [CONFIG.json] [--tls DIR]; prints "port N"
 * when ready and serves until SIGINT/SIGTERM, then prints its counters.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <jansson.h>

#include <openssl/ssl.h>

#include "ron_err.h"
#include "ron_transport.h"

static uint8_t big_piece[16 << 10]; /* what /big streams, borrowed by each write */

typedef struct {
    tx_request_t *req;
    uint64_t left;
} big_t;

static void
big_pump(tx_request_t *req, void *arg)
{
    big_t *b = arg;

    while (b->left > 0) {
        size_t n = b->left < sizeof big_piece ? (size_t)b->left : sizeof big_piece;
        int rc = tx_respond_write(req, big_piece, n, NULL, NULL);
        if (rc == RON_EAGAIN)
            return; /* big_pump runs again on drain */
        if (rc < 0)
            break;
        b->left -= n;
    }
    tx_respond_end(req);
    free(b);
}

typedef struct {
    uv_timer_t t;
    tx_request_t *req;
} slow_t;

static void
slow_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
slow_fire(uv_timer_t *t)
{
    slow_t *w = t->data;
    static const tx_header_t hdrs[] = {{"Content-Type", "text/plain"}};

    tx_respond(w->req, 200, hdrs, 1, "slow", 4);
    uv_close((uv_handle_t *)&w->t, slow_closed);
}

static void
on_request(tx_request_t *req, void *arg)
{
    const tx_request_view_t *v = tx_request_view(req);
    static const tx_header_t hdrs[] = {{"Content-Type", "text/plain"}};
    uv_loop_t *loop = arg;
    char proto[64];

    if (strcmp(v->path, "/healthz") == 0) {
        tx_respond(req, 200, hdrs, 1, "ok", 2);
    } else if (strcmp(v->path, "/proto") == 0) {
        int n = snprintf(proto, sizeof proto, "HTTP/%u host=%s", v->http_major,
                         tx_request_header(req, "host") ? tx_request_header(req, "host") : "-");
        tx_respond(req, 200, hdrs, 1, proto, (size_t)n);
    } else if (strcmp(v->path, "/echo") == 0) {
        int n = snprintf(proto, sizeof proto, "%zu", v->body_len);
        tx_respond(req, 200, hdrs, 1, proto, (size_t)n);
    } else if (strcmp(v->path, "/big") == 0 && strncmp(v->query, "n=", 2) == 0) {
        big_t *b = calloc(1, sizeof *b);
        b->req = req;
        b->left = strtoull(v->query + 2, NULL, 10);
        if (tx_respond_start(req, 200, hdrs, 1, (int64_t)b->left, big_pump, b) < 0) {
            free(b);
            return;
        }
        big_pump(req, b);
    } else if (strcmp(v->path, "/slow") == 0 && strncmp(v->query, "ms=", 3) == 0) {
        slow_t *w = calloc(1, sizeof *w);
        w->req = req;
        uv_timer_init(loop, &w->t);
        w->t.data = w;
        uv_timer_start(&w->t, slow_fire, strtoull(v->query + 3, NULL, 10), 0);
    } else {
        tx_respond_error(req, 404, NULL, NULL, 0);
    }
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

    const char *tls_dir = NULL, *config = NULL;
    SSL_CTX *ctx = NULL;

    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDR [CONFIG.json] [--tls DIR]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--tls") == 0 && i + 1 < argc)
            tls_dir = argv[++i];
        else
            config = argv[i];
    }
    memset(big_piece, 'x', sizeof big_piece);
    signal(SIGPIPE, SIG_IGN); /* a client closing mid-answer must not kill the server (as ron node) */
    /* thousands of connections need thousands of fds */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&cfg, 0, sizeof cfg);
    if (config != NULL && load_config(config, &cfg) < 0)
        return 2;
    if (tls_dir != NULL) {
        tx_tls_config_t tc;
        tx_tls_config_default(&tc);
        tc.cert_dir = tls_dir;
        if ((rc = tx_tls_ctx_new(&tc, &ctx)) < 0) {
            fprintf(stderr, "tls: %s\n", ron_strerror(rc));
            return 1;
        }
    }
    if ((rc = tx_listener_bind(loop, argv[1], &l)) < 0) {
        fprintf(stderr, "bind %s: %s\n", argv[1], ron_strerror(rc));
        return 1;
    }
    s = tx_server_new(loop, &cfg, on_request, loop);
    rc = ctx != NULL ? tx_server_attach_tls(s, l, ctx) : tx_server_attach(s, l);
    SSL_CTX_free(ctx); /* the listener holds its own reference */
    if (rc < 0) {
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
    fprintf(stderr, "h2_conns %llu h2_upgrades %llu h2_streams %llu tls_handshakes %llu\n",
            (unsigned long long)st->h2_conns, (unsigned long long)st->h2_upgrades,
            (unsigned long long)st->h2_streams, (unsigned long long)st->tls_handshakes);
    for (int i = 0; i < TX_REJECT__COUNT; i++)
        fprintf(stderr, "reject %s %llu\n", tx_reject_name((tx_reject_t)i),
                (unsigned long long)st->rejects[i]);
    for (int i = 0; i < TX_TLS_FAIL__COUNT; i++)
        fprintf(stderr, "tls_fail %s %llu\n", tx_tls_fail_name((tx_tls_fail_t)i),
                (unsigned long long)st->tls_failures[i]);
    tx_server_close(s, NULL, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}
