/*
 * mn_gateway.c - the built-in `gateway` service: svc-gateway's routes on the
 * public HTTP listener the kernel binds for it (config key `http`), and on
 * an HTTPS listener when the operator opts in (key `https`, a second
 * listener: fd 4 in a child), over the node's object store (<data_dir>/store,
 * or the RAM store in amnesia) and name index (<data_dir>/index, or RAM).
 * Micro profile: every service runs in this process, so the gateway shares
 * the one store and index handle of the process (mn_shared.c) with the
 * storage and index services (and the app port): an object or name put
 * through any of them is visible to all. Macro profile: when the node also
 * runs the `storage` service on a disk store, only that service opens the
 * store writable: the gateway opens it read-only for its verified reads
 * (LMDB and the store's files allow readers in other processes) and sends
 * uploads to the service over ron-bus (storage protocol, gw_set_storage);
 * when it runs the `index` service, names are resolved and published
 * through it over ron-bus (gw_set_index) and the gateway opens no index.
 * Alone, or in amnesia (a RAM store lives in one process), the gateway
 * opens the store itself as before.
 * HTTPS certificate: https_cert/https_key when configured; else an ECDSA
 * P-256 pair generated on first start into <data_dir>/tls (kept), or, in
 * amnesia, made in RAM at every start. Private keys live in OpenSSL's
 * secure heap. ALPN offers h2 and http/1.1.
 * Upload bodies stream (gw_head): up to the store's maximum object size
 * with bounded memory; other request bodies keep the transport's 1 MiB
 * cap. Capabilities: the gateway enforces with the process guard
 * (ron_node_guard: reads as `get`, uploads as `put`, name publishing as
 * `name`; docs/protocol/gateway.md "Capabilities") and forwards the
 * client's capability and tenant to the storage and index services. Its
 * metrics are the gateway's counters (the host appends the guard's).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "mn_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "svc_gateway.h"

#define MGW_N_COUNTERS 15
#define MGW_STORE_WAIT_MS 3000u /* macro: wait this long for storage to create the store */
#define MGW_STORE_POLL_MS 10u
#define MGW_TLS_SUBDIR "tls" /* generated certificate and key, under the data directory */

typedef struct {
    sto_store_t *store;   /* from mn_shared.c */
    idx_t *idx;           /* from mn_shared.c, or NULL when names go to the index service */
    bool remote;          /* uploads go to the storage service */
    bool remote_index;    /* names go to the index service */
    rbus_peer_t *storage; /* outbound peer to "storage" (remote only) */
    bool fetching;        /* the node fetches on miss (storage, dht and overlay run) */
    rbus_peer_t *fetch;   /* outbound peer to "storage" for misses when not remote */
    rbus_peer_t *index;   /* outbound peer to "index" (remote_index only) */
    uv_loop_t *loop;
    char data_dir[RON_CONFIG_PATH_MAX];
    bool amnesia;
    char https_cert[RON_CONFIG_PATH_MAX];
    char https_key[RON_CONFIG_PATH_MAX];
    gw_t *gw;
    tx_server_t *srv;
    met_registry_t *reg;
    met_counter_t *counters[MGW_N_COUNTERS];
    uint64_t last[MGW_N_COUNTERS]; /* values already added to the counters */
    met_gauge_t *active;
    met_gauge_t *buffered;
    met_gauge_t *config_version;
} mgw_t;

static const struct {
    const char *name;
    const char *help;
    size_t off;
} mgw_counters[MGW_N_COUNTERS] = {
    {"gateway_requests_total", "Requests routed by the gateway.", offsetof(gw_stats_t, requests)},
    {"gateway_objects_served_total", "GET/HEAD object responses finished whole.",
     offsetof(gw_stats_t, objects_served)},
    {"gateway_served_bytes_total", "Object body bytes handed to the transport.",
     offsetof(gw_stats_t, bytes_served)},
    {"gateway_not_modified_total", "304 answers.", offsetof(gw_stats_t, not_modified)},
    {"gateway_range_unsatisfiable_total", "416 answers.", offsetof(gw_stats_t, unsatisfiable)},
    {"gateway_puts_created_total", "Uploads that stored a new object (201).",
     offsetof(gw_stats_t, puts_created)},
    {"gateway_puts_existing_total", "PUTs of an object already stored (200).",
     offsetof(gw_stats_t, puts_existing)},
    {"gateway_bad_digest_total", "PUTs whose body did not hash to the address (409).",
     offsetof(gw_stats_t, bad_digest)},
    {"gateway_corrupt_before_head_total", "Verification failures answered with 502.",
     offsetof(gw_stats_t, corrupt_before)},
    {"gateway_corrupt_aborted_total", "Verification failures that cut a stream.",
     offsetof(gw_stats_t, corrupt_aborted)},
    {"gateway_client_gone_total", "Streams ended because the client went away.",
     offsetof(gw_stats_t, client_gone)},
    {"gateway_names_resolved_total", "Names resolved (302).", offsetof(gw_stats_t, names_resolved)},
    {"gateway_names_published_total", "Name records published (201/200).",
     offsetof(gw_stats_t, names_published)},
    {"gateway_names_refused_total", "Name records the acceptance rule refused.",
     offsetof(gw_stats_t, names_refused)},
    {"gateway_auth_rejected_total", "Requests the guard refused (401, 403, 429).",
     offsetof(gw_stats_t, auth_rejected)},
};

static void
mgw_free(mgw_t *g)
{
    gw_free(g->gw);
    mn__shared_index_release(g->idx);
    mn__shared_store_release(g->store);
    met_registry_free(g->reg);
    free(g);
}

static void
mgw_gw_idle(void *arg)
{
    mgw_free(arg);
}

/* True when the node runs service name (in any process). */
static bool
mgw_runs(const ron_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i], name) == 0)
            return true;
    return false;
}

/* True when the node runs service name in another process (macro profile). */
static bool
mgw_runs_apart(const ron_config_t *cfg, const char *name)
{
    if (cfg->profile != RON_PROFILE_MACRO)
        return false;
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i], name) == 0)
            return true;
    return false;
}

/*
 * Acquire the process's store: read-only when the storage service owns it
 * (macro: waiting up to MGW_STORE_WAIT_MS for it to create the store; past
 * that the start fails and the kernel restarts the gateway with backoff),
 * else writable, or read-only when another process holds it anyway.
 */
static int
mgw_open_store(mgw_t *g, const ron_config_t *cfg)
{
    int rc = mn__shared_store_acquire(cfg, g->remote, &g->store);

    /* A fresh data directory: the storage child creates the store as it
     * starts, next to us (no directory yet: -ENOENT; its LMDB tables not
     * yet committed: RON_ENOTFOUND). Wait for it rather than exit and be
     * restarted. */
    for (uint64_t t0 = ron_now_ms(); (rc == -ENOENT || rc == RON_ENOTFOUND) && g->remote &&
                                     ron_now_ms() - t0 < MGW_STORE_WAIT_MS;) {
        usleep(MGW_STORE_POLL_MS * 1000u);
        rc = mn__shared_store_acquire(cfg, true, &g->store);
    }
    if (rc == RON_EBUSY && !g->remote) {
        ron_log(RON_LOG_INFO, "gateway: store held by another process; serving it read-only");
        rc = mn__shared_store_acquire(cfg, true, &g->store);
    }
    return rc;
}

static int
mgw_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mgw_t *g = ron_xcalloc(1, sizeof *g);
    gw_config_t gc = {0};
    tx_config_t tc;
    tx_listener_t *l;
    int rc;

    g->reg = met_registry_new();
    for (size_t i = 0; i < MGW_N_COUNTERS; i++)
        met_counter_register(g->reg, mgw_counters[i].name, mgw_counters[i].help, &g->counters[i]);
    met_gauge_register(g->reg, "gateway_active_requests", "Requests with state in the gateway.",
                       &g->active);
    met_gauge_register(g->reg, "gateway_buffered_bytes", "Bytes of stream buffers held.",
                       &g->buffered);
    met_gauge_register(g->reg, "gateway_config_version",
                       "Version of the config snapshot the service runs.", &g->config_version);
    met_gauge_set(g->config_version, (double)cfg->version);
    if (listen_fd < 0) {
        rc = RON_ECONFIG; /* no `http` listener */
        goto fail;
    }
    g->loop = loop;
    g->amnesia = ron_config_amnesia(cfg);
    snprintf(g->data_dir, sizeof g->data_dir, "%s", cfg->data_dir);
    snprintf(g->https_cert, sizeof g->https_cert, "%s", cfg->https_cert);
    snprintf(g->https_key, sizeof g->https_key, "%s", cfg->https_key);
    /* a RAM store lives in one process: in amnesia the gateway keeps its own */
    g->remote = !g->amnesia && mgw_runs_apart(cfg, "storage");
    g->remote_index = !g->amnesia && mgw_runs_apart(cfg, "index");
    g->fetching = mgw_runs(cfg, "storage") && mgw_runs(cfg, "dht") && mgw_runs(cfg, "overlay");
    if ((rc = mgw_open_store(g, cfg)) < 0) {
        ron_log(RON_LOG_ERROR, "gateway: store: %s", ron_strerror(rc));
        goto fail;
    }
    if (!g->remote_index && (rc = mn__shared_index_acquire(cfg, &g->idx)) < 0) {
        ron_log(RON_LOG_ERROR, "gateway: index: %s", ron_strerror(rc));
        goto fail;
    }
    gc.store = g->store;
    gc.index = g->idx;
    g->gw = gw_new(loop, &gc);
    gw_set_guard(g->gw, ron_node_guard()); /* the process guard (NULL outside a node host) */
    rc = tx_listener_from_fd(loop, listen_fd, &l);
    listen_fd = -1; /* taken */
    if (rc < 0)
        goto fail;
    mn__tx_config(&tc, &cfg->gateway_limits);
    g->srv = tx_server_new(loop, &tc, gw_handle, g->gw);
    tx_server_set_head_hook(g->srv, gw_head, g->gw); /* uploads stream */
    if ((rc = tx_server_attach(g->srv, l)) < 0) {
        tx_server_close(g->srv, NULL, NULL); /* nothing was served: no request holds gw */
        g->srv = NULL;
        goto fail;
    }
    *state_out = g;
    return 0;
fail:
    if (listen_fd >= 0)
        close(listen_fd);
    *state_out = NULL;
    if (g->gw != NULL)
        gw_close(g->gw, mgw_gw_idle, g); /* its timer handle closes on a later turn */
    else
        mgw_free(g);
    return rc;
}

static void
mgw_apply(void *state, const ron_config_t *cfg)
{
    mgw_t *g = state;
    met_gauge_set(g->config_version, (double)cfg->version);
}

static size_t
mgw_metrics(void *state, char *buf, size_t cap)
{
    mgw_t *g = state;
    const gw_stats_t *st = gw_stats(g->gw);

    for (size_t i = 0; i < MGW_N_COUNTERS; i++) {
        uint64_t v;
        memcpy(&v, (const char *)st + mgw_counters[i].off, sizeof v);
        met_counter_add(g->counters[i], v - g->last[i]);
        g->last[i] = v;
    }
    met_gauge_set(g->active, (double)st->active);
    met_gauge_set(g->buffered, (double)st->buffered);
    return met_registry_render_buf(g->reg, buf, cap);
}

static void
mgw_srv_closed(void *arg)
{
    mgw_t *g = arg;
    gw_close(g->gw, mgw_gw_idle, g);
}

static void
mgw_stop(void *state)
{
    mgw_t *g = state;

    if (g == NULL)
        return;
    gw_set_fetch(g->gw, NULL);
    if (g->fetch != NULL) {
        rbus_peer_close(g->fetch); /* misses in flight answer 503 */
        g->fetch = NULL;
    }
    if (g->storage != NULL) {
        gw_set_storage(g->gw, NULL);
        rbus_peer_close(g->storage); /* uploads in flight answer 503 */
        g->storage = NULL;
    }
    if (g->index != NULL) {
        gw_set_index(g->gw, NULL);
        rbus_peer_close(g->index); /* name requests in flight answer 503 */
        g->index = NULL;
    }
    tx_server_close(g->srv, mgw_srv_closed, g);
}

/* Connect to the storage and index services it does not serve itself
 * (reconnecting with backoff while they restart). */
static int
mgw_serve_bus(void *state, rbus_t *bus)
{
    mgw_t *g = state;
    int rc = 0;

    if (g->remote) {
        if ((g->storage = rbus_connect(bus, "storage", &rc)) == NULL)
            return rc;
        gw_set_storage(g->gw, g->storage);
    }
    if (g->remote_index) {
        if ((g->index = rbus_connect(bus, "index", &rc)) == NULL)
            return rc;
        gw_set_index(g->gw, g->index);
    }
    if (g->fetching) {
        /* a local miss reads through storage's get, which fetches from peers */
        if (g->storage == NULL && (g->fetch = rbus_connect(bus, "storage", &rc)) == NULL)
            return rc;
        gw_set_fetch(g->gw, g->storage != NULL ? g->storage : g->fetch);
    }
    return 0;
}

/* Serve HTTPS on fd (taken) with the configured or generated certificate. */
static int
mgw_attach_https(void *state, int fd)
{
    mgw_t *g = state;
    char dir[RON_CONFIG_PATH_MAX + 8] = "";
    const char *what = dir;
    tx_tls_config_t tc;
    tx_listener_t *l;
    SSL_CTX *ctx = NULL;
    int rc;

    tx_tls_config_default(&tc);
    if (g->https_cert[0] != '\0') {
        tc.cert_path = g->https_cert;
        tc.key_path = g->https_key;
        what = g->https_cert;
    } else if (g->amnesia) {
        tc.ephemeral = true; /* nothing on disk: a new pair in RAM at every start */
        what = "generated in RAM";
    } else {
        snprintf(dir, sizeof dir, "%s/%s", g->data_dir, MGW_TLS_SUBDIR);
        tc.cert_dir = dir;
    }
    if ((rc = tx_tls_secure_heap_init()) < 0 || (rc = tx_tls_ctx_new(&tc, &ctx)) < 0) {
        ron_log(RON_LOG_ERROR, "gateway: HTTPS certificate (%s): %s", what, ron_strerror(rc));
        close(fd);
        return rc;
    }
    if ((rc = tx_listener_from_fd(g->loop, fd, &l)) == 0)
        rc = tx_server_attach_tls(g->srv, l, ctx); /* takes its own reference on ctx */
    SSL_CTX_free(ctx);
    if (rc == 0)
        ron_log(RON_LOG_INFO, "gateway: HTTPS on (ALPN h2, http/1.1; certificate %s)", what);
    return rc;
}

static const char *
mgw_listen_addr2(const ron_config_t *cfg)
{
    return cfg->https;
}

static const char *
mgw_listen_addr(const ron_config_t *cfg)
{
    return cfg->http;
}

const ron_service_def_t mn__svc_gateway = {
    "gateway", mgw_listen_addr, mgw_start,        mgw_apply,        mgw_metrics,
    mgw_stop,  mgw_serve_bus,   mgw_listen_addr2, mgw_attach_https,
};
