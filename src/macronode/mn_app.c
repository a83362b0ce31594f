/*
 * mn_app.c - the built-in `app` service: the app port (src/omnigate,
 * docs/protocol/app-port.md) on the public TCP listener the kernel binds
 * for it (config key `app`). Requests are forwarded over the host's ron-bus
 * endpoint to the `storage`, `index` and `registry` services and to the kernel
 * ("kernel": status, reload, release), each through an outbound peer that
 * reconnects on its own while its target restarts; a target that is not
 * running answers 503 (retryable). Same code in both profiles: a child
 * process over Unix sockets (macro) or an in-process host on the hub
 * (micro). Invariants: the peers are handed to the app port only once
 * connected objects exist and taken back before they are closed.
 */
#include <stdlib.h>
#include <unistd.h>

#include "mn_internal.h"
#include "omnigate.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

typedef struct {
    omni_t *g;
    rbus_peer_t *storage, *index, *kernel, *registry, *passport;
    met_registry_t *reg;
    met_gauge_t *config_version;
} mapp_t;

static int
app_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mapp_t *m;
    int rc;

    *state_out = NULL;
    if (listen_fd < 0)
        return RON_ECONFIG; /* no `app` listener */
    m = ron_xcalloc(1, sizeof *m);
    m->g = omni_new(loop, NULL);
    omni_set_guard(m->g, ron_node_guard()); /* the process guard (NULL outside a node host) */
    m->reg = met_registry_new();
    met_gauge_register(m->reg, "app_config_version",
                       "Version of the config snapshot the service runs.", &m->config_version);
    met_gauge_set(m->config_version, (double)cfg->version);
    if ((rc = omni_listen_fd(m->g, listen_fd)) < 0) {
        ron_error("app: cannot serve the inherited listener: %s", ron_strerror(rc));
        omni_close(m->g, NULL, NULL);
        met_registry_free(m->reg);
        free(m);
        return rc;
    }
    *state_out = m;
    return 0;
}

static int
app_serve_bus(void *state, rbus_t *bus)
{
    mapp_t *m = state;
    int rc = 0;

    if ((m->storage = rbus_connect(bus, "storage", &rc)) == NULL ||
        (m->index = rbus_connect(bus, "index", &rc)) == NULL ||
        (m->kernel = rbus_connect(bus, MN_KERNEL_ENDPOINT, &rc)) == NULL ||
        (m->registry = rbus_connect(bus, "registry", &rc)) == NULL ||
        (m->passport = rbus_connect(bus, "passport", &rc)) == NULL)
        return rc;
    omni_set_peers(m->g, m->storage, m->index, m->kernel);
    omni_set_registry(m->g, m->registry);
    omni_set_passport_peer(m->g, m->passport);
    return 0;
}

static void
app_apply(void *state, const ron_config_t *cfg)
{
    mapp_t *m = state;
    met_gauge_set(m->config_version, (double)cfg->version);
}

static size_t
app_metrics(void *state, char *buf, size_t cap)
{
    mapp_t *m = state;
    size_t n = omni_metrics(m->g, buf, cap);
    return n + met_registry_render_buf(m->reg, buf + n, cap - n);
}

static void
app_stop(void *state)
{
    mapp_t *m = state;

    if (m == NULL)
        return;
    omni_set_peers(m->g, NULL, NULL, NULL);
    omni_set_registry(m->g, NULL);
    omni_set_passport_peer(m->g, NULL);
    omni_close(m->g, NULL, NULL); /* freed once its bus requests return */
    rbus_peer_close(m->storage);
    rbus_peer_close(m->index);
    rbus_peer_close(m->kernel);
    rbus_peer_close(m->registry);
    rbus_peer_close(m->passport);
    met_registry_free(m->reg);
    free(m);
}

static const char *
app_listen_addr(const ron_config_t *cfg)
{
    return cfg->app;
}

const ron_service_def_t mn__svc_app = {
    "app", app_listen_addr, app_start, app_apply, app_metrics, app_stop, app_serve_bus,
};
