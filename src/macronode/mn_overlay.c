/*
 * mn_overlay.c - the built-in `overlay` service: svc-overlay's node service
 * (ovl_service.h) behind ron_service_def_t. The kernel binds the overlay's
 * TCP listener (config key `overlay`) and hands it over, so a restarted
 * child loses no queued connection; the node's identity key comes from
 * mn_shared.c (the node's own store in micro, <data_dir>/keys in a macro
 * child); content is served from the node's store opened read-only, as the
 * gateway does: in micro the one shared handle, in a macro child a
 * read-only open of the storage service's store (waiting for storage to
 * create it on a fresh data directory). serve_bus() answers the `overlay`
 * bus protocol (fetch, peers, status) for storage and other services.
 * Peers' gets are checked with the process guard (ron_node_guard()): a
 * node whose policy denies anonymous get serves only capability holders.
 * Invariants: stop() closes the service; the store and keys are released
 * only after every session is gone (no reader outlives the store).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mn_internal.h"
#include "ovl_service.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

#define MOV_STORE_WAIT_MS 3000u /* macro: wait this long for storage to create the store */
#define MOV_STORE_POLL_MS 10u

typedef struct {
    const kms_keystore_t *keys;
    sto_store_t *store;
    ovl_service_t *svc;
} mov_t;

static void
mov_free(mov_t *m)
{
    mn__shared_store_release(m->store);
    mn__shared_keys_release(m->keys);
    free(m);
}

/* True when the node runs service name in another process (macro profile). */
static bool
mov_runs_apart(const ron_config_t *cfg, const char *name)
{
    if (cfg->profile != RON_PROFILE_MACRO)
        return false;
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i], name) == 0)
            return true;
    return false;
}

/* The node's store, read-only; NULL (serve nothing, every get 404) when none exists. */
static sto_store_t *
mov_store(const ron_config_t *cfg)
{
    sto_store_t *st = NULL;
    bool apart = mov_runs_apart(cfg, "storage");
    int rc;

    if (apart && ron_config_amnesia(cfg))
        ron_warn("overlay: amnesia in the macro profile: the storage service's RAM store lives "
                 "in its own process; this one serves an empty store (use --profile micro)");
    rc = mn__shared_store_acquire(cfg, true, &st);
    /* a fresh data directory: the storage child creates the store next to us */
    for (uint64_t t0 = ron_now_ms(); apart && (rc == -ENOENT || rc == RON_ENOTFOUND) &&
                                     ron_now_ms() - t0 < MOV_STORE_WAIT_MS;) {
        usleep(MOV_STORE_POLL_MS * 1000u);
        rc = mn__shared_store_acquire(cfg, true, &st);
    }
    if (rc < 0) {
        ron_warn("overlay: no store to serve (%s); peers get 404", ron_strerror(rc));
        return NULL;
    }
    return st;
}

static int
mov_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mov_t *m = ron_xcalloc(1, sizeof *m);
    ovl_service_config_t oc = {0};
    char id[2 * OVL_ID_LEN + 1];
    int rc;

    *state_out = NULL;
    if ((rc = mn__shared_keys_acquire(cfg, &m->keys)) < 0) {
        if (listen_fd >= 0)
            close(listen_fd);
        free(m);
        return rc;
    }
    if ((rc = tx_tls_secure_heap_init()) < 0) /* the node key's TLS copy stays locked */
        ron_warn("overlay: no OpenSSL secure heap: %s", ron_strerror(rc));
    m->store = mov_store(cfg);
    oc.keys = m->keys;
    oc.store = m->store;
    oc.listen_fd = listen_fd; /* taken */
    oc.listen = cfg->overlay; /* only without an inherited listener */
    oc.advertise = cfg->advertise;
    if ((rc = ovl_service_new(loop, &oc, &m->svc)) < 0) {
        ron_error("overlay: cannot start on %s: %s", cfg->overlay, ron_strerror(rc));
        mov_free(m);
        return rc;
    }
    /* peers' gets are checked (anonymous allowed unless the policy denies it); the
     * listener accepts only once the loop runs, after start() returns */
    ovl_service_set_guard(m->svc, ron_node_guard());
    ron_hex_encode(id, ovl_service_node_id(m->svc), OVL_ID_LEN);
    ron_info("overlay: node %s on %s, advertising %s", id, ovl_service_listen_addr(m->svc),
             ovl_service_advertise(m->svc));
    *state_out = m;
    return 0;
}

static int
mov_serve_bus(void *state, rbus_t *bus)
{
    mov_t *m = state;
    int rc = ovl_service_serve(m->svc, bus);

    return rc < 0 ? rc : rbus_listen(bus);
}

static size_t
mov_metrics(void *state, char *buf, size_t cap)
{
    mov_t *m = state;
    return ovl_service_metrics(m->svc, buf, cap);
}

static void
mov_closed(void *arg)
{
    mov_free(arg);
}

static void
mov_stop(void *state)
{
    mov_t *m = state;

    if (m == NULL)
        return;
    ovl_service_close(m->svc, mov_closed, m);
}

static const char *
mov_listen_addr(const ron_config_t *cfg)
{
    return cfg->overlay;
}

const ron_service_def_t mn__svc_overlay = {
    "overlay", mov_listen_addr, mov_start, NULL, mov_metrics, mov_stop, mov_serve_bus,
    /* its TLS identity must be the node's, also in macro amnesia */
    .needs_identity = true,
};
