/*
 * mn_gateway.c - the built-in `gateway` service: svc-gateway's routes on the
 * public HTTP listener the kernel binds for it (config key `http`), over the
 * node's object store (<data_dir>/store, or the RAM store in amnesia) and
 * name index (<data_dir>/index, or RAM). When the node also runs the
 * `storage` service on a disk store, only that service opens the store
 * writable: the gateway opens it read-only for its verified reads (LMDB
 * and the store's files allow readers in other processes) and sends
 * uploads to the service over ron-bus (storage protocol, gw_set_storage).
 * Alone, or in amnesia (a RAM store lives in one process), the gateway
 * opens the store itself as before.
 * Upload bodies stream (gw_head): up to the store's maximum object size
 * with bounded memory; other request bodies keep the transport's 1 MiB
 * cap. Its metrics are the gateway's counters.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mn_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "svc_gateway.h"

#define MGW_N_COUNTERS 14
#define MGW_STORE_WAIT_MS 3000u /* macro: wait this long for storage to create the store */
#define MGW_STORE_POLL_MS 10u

typedef struct {
    sto_store_t *store;
    idx_t *idx;
    bool remote;          /* uploads go to the storage service */
    rbus_peer_t *storage; /* outbound peer to "storage" (remote only) */
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
};

static void
mgw_free(mgw_t *g)
{
    gw_free(g->gw);
    idx_free(g->idx);
    sto_close(g->store);
    met_registry_free(g->reg);
    free(g);
}

static void
mgw_gw_idle(void *arg)
{
    mgw_free(arg);
}

/* True when the node runs the storage service on a disk store. */
static bool
mgw_storage_remote(const ron_config_t *cfg)
{
    if (ron_config_amnesia(cfg))
        return false;
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i], "storage") == 0)
            return true;
    return false;
}

/*
 * Open the node's store: read-only when the storage service owns it (macro:
 * waiting up to MGW_STORE_WAIT_MS for it to create the store; past that the
 * start fails and the kernel restarts the gateway with backoff), else
 * writable, or read-only when another process holds it anyway.
 */
static int
mgw_open_store(mgw_t *g, const ron_config_t *cfg)
{
    char dir[RON_CONFIG_PATH_MAX + 8];
    sto_config_t sc = {0};
    int rc;

    if (!ron_config_amnesia(cfg)) {
        snprintf(dir, sizeof dir, "%s/store", cfg->data_dir);
        sc.dir = dir;
    }
    sc.read_only = g->remote;
    rc = sto_open(&sc, &g->store);
    /* A fresh data directory: the storage child creates the store as it
     * starts, next to us. Wait for it rather than exit and be restarted
     * (macro only: in micro it runs on this very loop). */
    for (uint64_t t0 = ron_now_ms(); rc == -ENOENT && g->remote &&
                                     cfg->profile == RON_PROFILE_MACRO &&
                                     ron_now_ms() - t0 < MGW_STORE_WAIT_MS;) {
        usleep(MGW_STORE_POLL_MS * 1000u);
        rc = sto_open(&sc, &g->store);
    }
    if (rc == RON_EBUSY) {
        ron_log(RON_LOG_INFO, "gateway: store held by another process; serving it read-only");
        sc.read_only = 1;
        rc = sto_open(&sc, &g->store);
    }
    return rc;
}

static int
mgw_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mgw_t *g = ron_xcalloc(1, sizeof *g);
    idx_config_t ic = {.data_dir = cfg->data_dir, .amnesia = ron_config_amnesia(cfg)};
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
    g->remote = mgw_storage_remote(cfg);
    if ((rc = mgw_open_store(g, cfg)) < 0) {
        ron_log(RON_LOG_ERROR, "gateway: store: %s", ron_strerror(rc));
        goto fail;
    }
    if ((rc = idx_new(&ic, &g->idx)) < 0) {
        ron_log(RON_LOG_ERROR, "gateway: index: %s", ron_strerror(rc));
        goto fail;
    }
    gc.store = g->store;
    gc.index = g->idx;
    g->gw = gw_new(loop, &gc);
    rc = tx_listener_from_fd(loop, listen_fd, &l);
    listen_fd = -1; /* taken */
    if (rc < 0)
        goto fail;
    tx_config_default(&tc);
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
    return mn__metrics_render(g->reg, buf, cap);
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
    if (g->storage != NULL) {
        gw_set_storage(g->gw, NULL);
        rbus_peer_close(g->storage); /* uploads in flight answer 503 */
        g->storage = NULL;
    }
    tx_server_close(g->srv, mgw_srv_closed, g);
}

/* Connect to the storage service (reconnecting with backoff while it restarts). */
static int
mgw_serve_bus(void *state, rbus_t *bus)
{
    mgw_t *g = state;
    int rc = 0;

    if (!g->remote)
        return 0;
    g->storage = rbus_connect(bus, "storage", &rc);
    if (g->storage == NULL)
        return rc;
    gw_set_storage(g->gw, g->storage);
    return 0;
}

static const char *
mgw_listen_addr(const ron_config_t *cfg)
{
    return cfg->http;
}

const ron_service_def_t mn__svc_gateway = {
    "gateway", mgw_listen_addr, mgw_start, mgw_apply, mgw_metrics, mgw_stop, mgw_serve_bus,
};
