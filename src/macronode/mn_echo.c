/*
 * mn_echo.c - the built-in `echo` service and the table of built-in
 * services (echo, health from mn_health.c, storage and index from mn_storage.c). echo serves TCP on the listener the kernel hands it
 * (echo.addr): each connection first receives echo.banner and a newline, then gets back every byte
 * it sends. It is small on purpose: it makes restarts, health, config updates and metrics real
 * before the storage services exist. Invariants: at most ECHO_MAX_CONNS connections (the excess is
 * closed at accept); a connection idle for ECHO_IDLE_MS is closed; a peer that does not read its
 * echoes has reading paused once ECHO_MAX_QUEUE bytes wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mn_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

#define ECHO_MAX_CONNS 256u         /* open echo connections */
#define ECHO_IDLE_MS 30000u         /* idle connection lifetime */
#define ECHO_MAX_QUEUE (256u << 10) /* unsent echo bytes per connection before reads pause */
#define ECHO_READ_BUF 16384u        /* bytes read per callback */

typedef struct echo echo_t;

typedef struct {
    uv_tcp_t tcp;
    uv_timer_t idle;
    echo_t *e;
    int open; /* handles still open */
    bool closing;
    bool paused;
} echo_conn_t;

typedef struct {
    uv_write_t req;
    echo_conn_t *c;
    char data[];
} echo_wr_t;

struct echo {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    bool stopping;
    size_t n_conns;
    char banner[RON_CONFIG_TEXT_MAX + 1];
    met_registry_t *reg;
    met_counter_t *accepted;
    met_counter_t *refused;
    met_counter_t *bytes;
    met_gauge_t *active;
    met_gauge_t *config_version;
    echo_conn_t **conns; /* open connections, for stop */
};

static void
conn_closed(uv_handle_t *h)
{
    echo_conn_t *c = h->data;
    if (--c->open == 0)
        free(c);
}

static void
conn_close(echo_conn_t *c)
{
    echo_t *e = c->e;
    if (c->closing)
        return;
    c->closing = true;
    for (size_t i = 0; i < e->n_conns; i++)
        if (e->conns[i] == c) {
            e->conns[i] = e->conns[--e->n_conns];
            break;
        }
    met_gauge_set(e->active, (double)e->n_conns);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_close((uv_handle_t *)&c->idle, conn_closed);
}

static void
conn_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

static void
conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h, (void)hint;
    buf->base = ron_xmalloc(ECHO_READ_BUF);
    buf->len = ECHO_READ_BUF;
}

static void conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void
conn_written(uv_write_t *req, int status)
{
    echo_wr_t *w = ron_container_of(req, echo_wr_t, req);
    echo_conn_t *c = w->c;
    free(w);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->paused && !c->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < ECHO_MAX_QUEUE / 2) {
        c->paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
    }
}

static void
conn_send(echo_conn_t *c, const char *data, size_t len)
{
    echo_wr_t *w = ron_xmalloc(sizeof *w + len);
    uv_buf_t b;
    memcpy(w->data, data, len);
    w->c = c;
    b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_written) < 0) {
        free(w);
        conn_close(c);
    }
}

static void
conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    echo_conn_t *c = st->data;
    if (n > 0 && !c->closing) {
        met_counter_add(c->e->bytes, (uint64_t)n);
        uv_timer_again(&c->idle);
        conn_send(c, buf->base, (size_t)n);
        if (uv_stream_get_write_queue_size(st) >= ECHO_MAX_QUEUE) {
            c->paused = true;
            uv_read_stop(st);
        }
    } else if (n < 0) {
        conn_close(c);
    }
    free(buf->base);
}

static void
echo_accept(uv_stream_t *server, int status)
{
    echo_t *e = server->data;
    echo_conn_t *c;
    char line[RON_CONFIG_TEXT_MAX + 2];
    if (status < 0 || e->stopping)
        return;
    c = ron_xcalloc(1, sizeof *c);
    c->e = e;
    uv_tcp_init(e->loop, &c->tcp);
    uv_timer_init(e->loop, &c->idle);
    c->tcp.data = c;
    c->idle.data = c;
    c->open = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || e->n_conns >= ECHO_MAX_CONNS) {
        met_counter_inc(e->refused);
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        uv_close((uv_handle_t *)&c->idle, conn_closed);
        return;
    }
    e->conns[e->n_conns++] = c;
    met_counter_inc(e->accepted);
    met_gauge_set(e->active, (double)e->n_conns);
    uv_timer_start(&c->idle, conn_idle, ECHO_IDLE_MS, ECHO_IDLE_MS);
    snprintf(line, sizeof line, "%s\n", e->banner);
    conn_send(c, line, strlen(line));
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

static void
echo_apply(void *state, const ron_config_t *cfg)
{
    echo_t *e = state;
    snprintf(e->banner, sizeof e->banner, "%s", cfg->echo_banner);
    met_gauge_set(e->config_version, (double)cfg->version);
}

static void
echo_listener_closed(uv_handle_t *h)
{
    echo_t *e = h->data;
    met_registry_free(e->reg);
    free(e->conns);
    free(e);
}

static int
echo_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    echo_t *e = ron_xcalloc(1, sizeof *e);
    int rc;

    e->loop = loop;
    e->conns = ron_xcalloc(ECHO_MAX_CONNS, sizeof(echo_conn_t *));
    e->reg = met_registry_new();
    met_counter_register(e->reg, "echo_connections_accepted_total", "Echo connections accepted.",
                         &e->accepted);
    met_counter_register(e->reg, "echo_connections_refused_total",
                         "Echo connections closed at accept (limit reached).", &e->refused);
    met_counter_register(e->reg, "echo_received_bytes_total", "Bytes received and echoed.",
                         &e->bytes);
    met_gauge_register(e->reg, "echo_connections", "Open echo connections.", &e->active);
    met_gauge_register(e->reg, "echo_config_version",
                       "Version of the config snapshot the service runs.", &e->config_version);
    echo_apply(e, cfg);
    if (listen_fd >= 0) {
        uv_tcp_init(loop, &e->listener);
        e->listener.data = e;
        if ((rc = uv_tcp_open(&e->listener, listen_fd)) < 0 ||
            (rc = uv_listen((uv_stream_t *)&e->listener, 1024, echo_accept)) < 0) {
            ron_error("echo: cannot serve the inherited listener: %s", uv_strerror(rc));
            uv_close((uv_handle_t *)&e->listener, echo_listener_closed);
            *state_out = NULL;
            return rc;
        }
        e->listening = true;
    }
    *state_out = e;
    return 0;
}

static size_t
echo_metrics(void *state, char *buf, size_t cap)
{
    echo_t *e = state;
    return met_registry_render_buf(e->reg, buf, cap);
}

static void
echo_stop(void *state)
{
    echo_t *e = state;
    e->stopping = true;
    while (e->n_conns > 0)
        conn_close(e->conns[0]);
    if (e->listening) {
        uv_close((uv_handle_t *)&e->listener, echo_listener_closed);
    } else {
        met_registry_free(e->reg);
        free(e->conns);
        free(e);
    }
}

static const char *
echo_listen_addr(const ron_config_t *cfg)
{
    return cfg->echo_addr;
}

static const ron_service_def_t svc_echo = {
    "echo", echo_listen_addr, echo_start, echo_apply, echo_metrics, echo_stop,
};

/* The built-in services, by name. */
static const ron_service_def_t *const services[] = {
    &svc_echo,        &mn__svc_health, &mn__svc_storage, &mn__svc_index,   &mn__svc_gateway,
    &mn__svc_app,     &mn__svc_dht,    &mn__svc_overlay, &mn__svc_registry,
    &mn__svc_passport};

const ron_service_def_t *
ron_service_find(const char *name)
{
    for (size_t i = 0; i < RON_ARRAY_LEN(services); i++)
        if (strcmp(services[i]->name, name) == 0)
            return services[i];
    return NULL;
}

const char *
ron_service_names(void)
{
    return "echo, health, storage, index, gateway, app, dht, overlay, registry, passport";
}
