/*
 * omni_server.c - the app port object (omni_t): its configuration, the
 * listener, the peers and guard it forwards to and checks with, its metrics
 * and its lifetime. omni_t counts a reference for its listener, each
 * connection and each bus request in flight, so that a bus answer arriving
 * after omni_close still finds it; the last reference frees it and calls
 * omni_close's done callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omni_internal.h"
#include "ron_metrics.h"
#include "ron_util.h"

/* ---------------------------------------------------------------- lifetime */

void
omni__unref(omni_t *g)
{
    if (--g->refs > 0 || !g->closing)
        return;
    omni__idem_free(g->idem);
    met_registry_free(g->reg);
    if (g->done != NULL)
        g->done(g->done_arg);
    free(g);
}

static const char *
app_name(uint16_t app)
{
    switch (app) {
    case OAP_APP_CONTROL:
        return "control";
    case OAP_APP_STORAGE:
        return "storage";
    case OAP_APP_INDEX:
        return "naming";
    case OAP_APP_KERNEL:
        return "kernel";
    case OAP_APP_REGISTRY:
        return "registry";
    case OAP_APP_AUTH:
        return "passport";
    default:
        return "other";
    }
}

void
omni__count_request(omni_t *g, uint16_t app, const char *op, uint16_t status)
{
    char st[8];
    snprintf(st, sizeof st, "%u", (unsigned)status);
    met_counter_inc(
        met_family_counter(g->m_requests, (const char *const[]){app_name(app), op, st}));
    g->stats.requests++;
}

void
omni__count_reject(omni_t *g, const char *reason, uint64_t *ctr)
{
    (*ctr)++;
    met_counter_inc(met_family_counter(g->m_rejects, (const char *const[]){reason}));
}

/* ---------------------------------------------------------------- the server */

omni_t *
omni_new(uv_loop_t *loop, const omni_config_t *cfg)
{
    omni_t *g = ron_xcalloc(1, sizeof *g);
    static const char *const req_labels[] = {"app", "op", "status"};
    static const char *const rej_labels[] = {"reason"};
    const met_desc_t req_desc = {MET_COUNTER,
                                 "app_requests_total",
                                 "App port requests answered, by app, op and status.",
                                 req_labels,
                                 3,
                                 NULL,
                                 0,
                                 0};
    const met_desc_t rej_desc = {MET_COUNTER,
                                 "app_rejects_total",
                                 "App port connections or streams refused, by reason.",
                                 rej_labels,
                                 1,
                                 NULL,
                                 0,
                                 0};

    g->loop = loop;
    if (cfg != NULL)
        g->cfg = *cfg;
    if (g->cfg.max_conns == 0)
        g->cfg.max_conns = OMNI_MAX_CONNS;
    if (g->cfg.hello_timeout_ms == 0)
        g->cfg.hello_timeout_ms = OMNI_HELLO_TIMEOUT_MS;
    if (g->cfg.idle_ms == 0)
        g->cfg.idle_ms = OMNI_IDLE_MS;
    if (g->cfg.max_output == 0)
        g->cfg.max_output = OMNI_MAX_OUTPUT;
    snprintf(g->service, sizeof g->service, "%s",
             cfg != NULL && cfg->service != NULL ? cfg->service : "app");
    g->cfg.service = g->service;
    g->idem = omni__idem_new();
    g->reg = met_registry_new();
    met_gauge_register(g->reg, "app_connections", "Open app port connections.", &g->m_conns);
    met_gauge_register(g->reg, "app_unsent_bytes",
                       "Answer bytes written but not yet taken by the kernel, all connections.",
                       &g->m_unsent);
    met_gauge_register(g->reg, "app_queued_put_bytes",
                       "Put body bytes received but not yet written to the store.", &g->m_queued);
    met_counter_register(g->reg, "app_bytes_in_total", "Frame bytes read on the app port.",
                         &g->m_in);
    met_counter_register(g->reg, "app_bytes_out_total", "Frame bytes written on the app port.",
                         &g->m_out);
    met_family_register(g->reg, &req_desc, &g->m_requests);
    met_family_register(g->reg, &rej_desc, &g->m_rejects);
    g->refs = 1; /* dropped by omni_close */
    return g;
}

int
omni_listen_fd(omni_t *g, int listen_fd)
{
    int rc;

    uv_tcp_init(g->loop, &g->listener);
    g->listener.data = g;
    g->listening = true;
    g->refs++;
    if ((rc = uv_tcp_open(&g->listener, listen_fd)) < 0) {
        close(listen_fd);
        return rc;
    }
    return uv_listen((uv_stream_t *)&g->listener, 1024, omni__conn_accept);
}

void
omni_set_peers(omni_t *g, rbus_peer_t *storage, rbus_peer_t *index, rbus_peer_t *kernel)
{
    g->storage = storage;
    g->index = index;
    g->kernel = kernel;
}

void
omni_set_guard(omni_t *g, guard_t *guard)
{
    g->guard = guard;
}

void
omni_set_registry(omni_t *g, rbus_peer_t *registry)
{
    g->registry = registry;
}

void
omni_set_passport_peer(omni_t *g, rbus_peer_t *passport)
{
    g->passport = passport;
}

const omni_stats_t *
omni_stats(omni_t *g)
{
    return &g->stats;
}

size_t
omni_metrics(omni_t *g, char *buf, size_t cap)
{
    char *text = NULL;
    size_t len = 0;

    met_counter_add(g->m_in, g->stats.bytes_in - g->seen_in);
    g->seen_in = g->stats.bytes_in;
    met_counter_add(g->m_out, g->stats.bytes_out - g->seen_out);
    g->seen_out = g->stats.bytes_out;
    met_gauge_set(g->m_unsent, (double)g->stats.output_bytes);
    met_gauge_set(g->m_queued, (double)g->stats.input_bytes);
    if (met_registry_render(g->reg, &text, &len) < 0 || len > cap) {
        free(text);
        return 0;
    }
    memcpy(buf, text, len);
    free(text);
    return len;
}

static void
listener_closed(uv_handle_t *h)
{
    omni__unref(h->data);
}

void
omni_close(omni_t *g, void (*done)(void *arg), void *arg)
{
    if (g == NULL)
        return;
    g->closing = true;
    g->done = done;
    g->done_arg = arg;
    while (g->conns != NULL)
        omni__conn_close(g->conns);
    if (g->listening)
        uv_close((uv_handle_t *)&g->listener, listener_closed);
    omni__unref(g); /* omni_new's reference */
}
