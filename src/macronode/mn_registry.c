/*
 * mn_registry.c - the built-in `registry` service: svc-registry
 * (reg_service.c) behind ron_service_def_t. start() opens the registry's log
 * <data_dir>/registry/registry.log (created 0600 in a 0700 directory), or a
 * RAM registry when amnesia is on; serve_bus() hands it the host's ron-bus
 * endpoint ("registry") and listens. The service is not in the default
 * service list: an operator names it in `services` to run it.
 * Invariants: a log that fails verification stops the service at start (a
 * tampered governance log is never served); the log file is locked by this
 * process only; stop() runs in the loop turn that frees the endpoint.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mn_internal.h"
#include "reg_service.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_util.h"

#define MN_REGISTRY_SUBDIR "registry"
#define MN_REGISTRY_FILE "registry.log"

typedef struct {
    uv_loop_t *loop;
    reg_t *reg; /* until serve_bus hands it to svc */
    reg_service_t *svc;
} mn_registry_t;

static int
registry_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mn_registry_t *m = ron_xcalloc(1, sizeof *m);
    char dir[4096], path[4200];
    reg_opts_t o = {0};
    reg_err_t err = {{0}};
    uint64_t v;
    int rc;

    if (listen_fd >= 0)
        close(listen_fd);
    m->loop = loop;
    if (!ron_config_amnesia(cfg)) {
        snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, MN_REGISTRY_SUBDIR);
        snprintf(path, sizeof path, "%s/%s", dir, MN_REGISTRY_FILE);
        if ((rc = ron_mkdir_p(dir)) < 0) {
            ron_error("registry: cannot create %s: %s", dir, ron_strerror(rc));
            free(m);
            return rc;
        }
        o.path = path;
    }
    if ((rc = reg_open(&o, &m->reg, &err)) < 0) {
        ron_error("registry: cannot open %s: %s (%s)", o.path != NULL ? o.path : "RAM",
                  ron_strerror(rc), err.msg);
        free(m);
        return rc;
    }
    reg_head(m->reg, &v, NULL, NULL);
    ron_info("registry open: %s, head version %llu", o.path != NULL ? o.path : "RAM (amnesia)",
             (unsigned long long)v);
    *state_out = m;
    return 0;
}

static int
registry_serve_bus(void *state, rbus_t *bus)
{
    mn_registry_t *m = state;
    reg_t *reg = m->reg;
    int rc;

    m->reg = NULL; /* the service holds it from here, even on failure */
    if ((rc = reg_service_new(m->loop, bus, reg, &m->svc)) < 0)
        return rc;
    reg_service_set_guard(m->svc, ron_node_guard()); /* writes need admin */
    return rbus_listen(bus);
}

static size_t
registry_metrics(void *state, char *buf, size_t cap)
{
    mn_registry_t *m = state;
    return m->svc != NULL ? reg_service_metrics(m->svc, buf, cap) : 0;
}

static void
registry_stop(void *state)
{
    mn_registry_t *m = state;
    reg_service_free(m->svc);
    reg_free(m->reg);
    free(m);
}

const ron_service_def_t mn__svc_registry = {
    "registry", NULL, registry_start, NULL, registry_metrics, registry_stop, registry_serve_bus,
};
