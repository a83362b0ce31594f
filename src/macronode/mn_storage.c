/*
 * mn_storage.c - the built-in `storage` and `index` services: svc-storage
 * (sto_service.c) and svc-index (idx_service.c) behind ron_service_def_t.
 * start() acquires the process's store (<data_dir>/store) and index
 * (<data_dir>/index), or RAM backends when amnesia is on, from mn_shared.c:
 * in micronode the gateway and the app port share the very same handles;
 * serve_bus() hands them the host's ron-bus endpoint ("storage" / "index")
 * and listens, so the gateway, the app port and `ron` commands reach them
 * over Unix sockets (macronode) or the in-process hub (micronode).
 * Both enforce capabilities on their endpoint with the process guard
 * (ron_node_guard(): sto_service_set_guard / idx_service_set_guard), set in
 * serve_bus before the endpoint listens, so no request is ever served
 * unchecked.
 * Invariants: the store is opened writable by this process only (the store's
 * lock); stop() runs in the loop turn that frees the endpoint, and the
 * services release the store and the index once their worker calls return.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idx_service.h"
#include "mn_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "sto_service.h"

typedef struct {
    uv_loop_t *loop;
    sto_store_t *store; /* until serve_bus hands it to svc */
    sto_service_t *svc;
    bool with_dht, with_overlay; /* the node runs them: fetch on miss, provider records */
    rbus_peer_t *dht, *ovl;      /* outbound peers to "dht" and "overlay" */
} mn_storage_t;

typedef struct {
    uv_loop_t *loop;
    idx_t *idx; /* until serve_bus hands it to svc */
    idx_service_t *svc;
    bool with_dht;     /* the node runs the dht service: names go across nodes */
    rbus_peer_t *dht;  /* outbound peer to "dht" */
} mn_index_t;

static int
storage_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mn_storage_t *m = ron_xcalloc(1, sizeof *m);
    int rc;

    if (listen_fd >= 0)
        close(listen_fd);
    m->loop = loop;
    for (size_t i = 0; i < cfg->n_services; i++) {
        m->with_dht = m->with_dht || strcmp(cfg->services[i], "dht") == 0;
        m->with_overlay = m->with_overlay || strcmp(cfg->services[i], "overlay") == 0;
    }
    if ((rc = mn__shared_store_acquire(cfg, false, &m->store)) < 0) {
        ron_error("storage: cannot open %s/store: %s",
                  ron_config_amnesia(cfg) ? "the RAM store" : cfg->data_dir, ron_strerror(rc));
        free(m);
        return rc;
    }
    *state_out = m;
    return 0;
}

static void
storage_release(void *arg, sto_store_t *store)
{
    (void)arg;
    mn__shared_store_release(store);
}

static int
storage_serve_bus(void *state, rbus_t *bus)
{
    mn_storage_t *m = state;
    sto_store_t *st = m->store;
    /* The gateway and the app port each carry many clients' puts over one
     * bus connection: the per-connection bound is the total one here. */
    sto_service_limits_t lim = {.puts_per_conn = STO_SVC_PUTS_TOTAL,
                                .release = storage_release};
    int rc;

    m->store = NULL; /* the service holds the reference from here, even on failure */
    if ((rc = sto_service_new(m->loop, bus, st, &lim, &m->svc)) < 0)
        return rc;
    sto_service_set_guard(m->svc, ron_node_guard());
    if (m->with_dht)
        m->dht = rbus_connect(bus, "dht", &rc);
    if (m->with_overlay)
        m->ovl = rbus_connect(bus, "overlay", &rc);
    sto_service_set_network(m->svc, m->dht, m->ovl);
    return rbus_listen(bus);
}

static size_t
storage_metrics(void *state, char *buf, size_t cap)
{
    mn_storage_t *m = state;
    return m->svc != NULL ? sto_service_metrics(m->svc, buf, cap) : 0;
}

static void
storage_stop(void *state)
{
    mn_storage_t *m = state;
    sto_service_free(m->svc);
    /* their calls in flight complete (failed) while the service lives */
    rbus_peer_close(m->dht);
    rbus_peer_close(m->ovl);
    mn__shared_store_release(m->store);
    free(m);
}

const ron_service_def_t mn__svc_storage = {
    "storage", NULL, storage_start, NULL, storage_metrics, storage_stop, storage_serve_bus,
};

static int
index_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mn_index_t *m = ron_xcalloc(1, sizeof *m);
    int rc;

    if (listen_fd >= 0)
        close(listen_fd);
    m->loop = loop;
    for (size_t i = 0; i < cfg->n_services; i++)
        m->with_dht = m->with_dht || strcmp(cfg->services[i], "dht") == 0;
    if ((rc = mn__shared_index_acquire(cfg, &m->idx)) < 0) {
        ron_error("index: cannot open the index under %s: %s", cfg->data_dir, ron_strerror(rc));
        free(m);
        return rc;
    }
    *state_out = m;
    return 0;
}

static void
index_release(void *arg, idx_t *idx)
{
    (void)arg;
    mn__shared_index_release(idx);
}

static int
index_serve_bus(void *state, rbus_t *bus)
{
    mn_index_t *m = state;
    idx_t *idx = m->idx;
    int rc;

    m->idx = NULL; /* the service holds the reference from here, even on failure */
    if ((rc = idx_service_new_shared(m->loop, bus, idx, index_release, NULL, &m->svc)) < 0)
        return rc;
    idx_service_set_guard(m->svc, ron_node_guard());
    if (m->with_dht && (m->dht = rbus_connect(bus, "dht", &rc)) != NULL)
        idx_service_set_dht(m->svc, m->dht);
    return rbus_listen(bus);
}

static size_t
index_metrics(void *state, char *buf, size_t cap)
{
    mn_index_t *m = state;
    return m->svc != NULL ? idx_service_metrics(m->svc, buf, cap) : 0;
}

static void
index_stop(void *state)
{
    mn_index_t *m = state;
    rbus_peer_close(m->dht); /* its calls in flight complete while the service lives */
    idx_service_free(m->svc);
    mn__shared_index_release(m->idx);
    free(m);
}

const ron_service_def_t mn__svc_index = {
    "index", NULL, index_start, NULL, index_metrics, index_stop, index_serve_bus,
};
