/*
 * mn_health.c - the built-in `health` service: no listener, no work; it
 * exists so a node can run more than one real child (stop order, crash
 * isolation, readiness with one service down) before the storage services
 * arrive. Its metrics: how often it reported and which config it runs.
 */
#include <stdlib.h>
#include <string.h>

#include "mn_internal.h"
#include "ron_util.h"

typedef struct {
    met_registry_t *reg;
    met_counter_t *reports;
    met_gauge_t *config_version;
    met_gauge_t *started;
} health_t;

static int
health_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    health_t *h = ron_xcalloc(1, sizeof *h);
    (void)loop, (void)listen_fd; /* no listener: listen_addr is NULL */
    h->reg = met_registry_new();
    met_counter_register(h->reg, "health_reports_total", "Metrics reports sent to the kernel.",
                         &h->reports);
    met_gauge_register(h->reg, "health_config_version",
                       "Version of the config snapshot the service runs.", &h->config_version);
    met_gauge_register(h->reg, "health_start_time_seconds",
                       "Unix time at which the service started.", &h->started);
    met_gauge_set(h->config_version, (double)cfg->version);
    met_gauge_set(h->started, (double)ron_unix_time());
    *state_out = h;
    return 0;
}

static void
health_apply(void *state, const ron_config_t *cfg)
{
    health_t *h = state;
    met_gauge_set(h->config_version, (double)cfg->version);
}

static size_t
health_metrics(void *state, char *buf, size_t cap)
{
    health_t *h = state;
    met_counter_inc(h->reports);
    return met_registry_render_buf(h->reg, buf, cap);
}

static void
health_stop(void *state)
{
    health_t *h = state;
    met_registry_free(h->reg);
    free(h);
}

const ron_service_def_t mn__svc_health = {
    "health", NULL, health_start, health_apply, health_metrics, health_stop,
};
