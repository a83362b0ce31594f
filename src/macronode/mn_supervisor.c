/*
 * mn_supervisor.c - the kernel's supervisor. Macro profile: one child
 * process per service, started as `ron service NAME` with uv_spawn, its
 * public listener bound here and inherited as fd 3 (a second one, the
 * gateway's HTTPS, as fd 4; the identity seed on a pipe as fd 5 for a
 * service that signs as the node; the capability master on a pipe as fd 6
 * for every child), its stderr collected line
 * by line through a pipe, its HELLO and heartbeats received over ron-bus
 * (Unix sockets). Micro profile: the same service host runs inside this
 * loop, over ron-bus's in-process transport, with the same HELLO, heartbeats,
 * config updates and restart policy. Restarts follow the restart policy of
 * ron-kernel (backoff 100 ms .. 30 s with jitter, reset after 10 s healthy,
 * quarantine at the 6th crash in 60 s).
 *
 * Invariants: a service has at most one live process; each uv_process_t and
 * log pipe lives in its own heap block freed by its close callback, so a
 * restart never reuses a handle libuv still owns; the listening socket stays
 * open in the kernel across restarts (connections queue in its backlog while
 * the child is down); a HELLO is accepted only from the pid spawned for that
 * service; SERVICE_CRASHED is published for every unexpected exit.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mn_internal.h"
#include "oap.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

extern char **environ;

typedef struct mn_svc mn_svc_t;

typedef struct {
    uv_process_t proc;
    uv_pipe_t log;
    mn_svc_t *svc;    /* NULL once the service forgot this child */
    int open_handles; /* proc and log; freed at 0 */
    bool exited;
    char line[MN_MAX_LOG_LINE];
    size_t line_len;
} mn_child_t;

struct mn_svc {
    mn_sup_t *sup;
    char name[RON_CONFIG_NAME_MAX];
    mn_svc_state_t state;
    mn_child_t *child; /* live process (macro), or NULL */
    mn_host_t *host;   /* live in-process host (micro), or NULL */
    int pid;
    uv_timer_t restart_timer;
    ron_restart_policy_t policy;
    bool healthy;
    uint64_t spawned_ms; /* monotonic ms of the last spawn */
    uint64_t last_hb_ms; /* monotonic ms of the last HELLO or heartbeat */
    uint64_t restarts;
    uint64_t config_version;
    char last_exit[96];
    int listen_fd; /* -1: none */
    char listen_addr[RON_CONFIG_ADDR_MAX];
    int listen_fd2; /* second listener (listen_addr2), -1: none */
    char listen_addr2[RON_CONFIG_ADDR_MAX];
    char *metrics; /* last metrics text from the child */
    size_t metrics_len;
    met_counter_t *restarts_total;
    met_counter_t *crashes_total;
};

struct mn_sup {
    uv_loop_t *loop;
    const ron_config_t *cfg;
    char self_exe[1024];
    ron_bus_t *bus;
    met_registry_t *reg;
    rbus_t *rbus;
    bool inproc;     /* micro profile: services run in this loop */
    rbus_hub_t *hub; /* micro: the in-process ron-bus hub */
    char bus_dir[RBUS_MAX_DIR];
    uint8_t secret[RBUS_SECRET_LEN];
    mn_svc_t *svcs;
    size_t n;
    uv_timer_t health_timer;
    uv_timer_t stop_timer;
    bool stopping;
    uint64_t stop_deadline_ms;
    void (*stop_done)(void *arg);
    void *stop_arg;
    int open_handles; /* health_timer, stop_timer, restart timers */
    bool freeing;
    mn_admin_t *admin; /* answers status/reload/release asked over ron-bus; may be NULL */
    mn_auth_t *auth;   /* the capability authority (auth_sync, auth_revoke); may be NULL */
    char *auth_metrics; /* micro: scratch for the node guard's metrics */
};

static void svc_spawn(mn_svc_t *v);
static void sup_stop_next(mn_sup_t *s);

const char *
mn__svc_state_name(mn_svc_state_t st)
{
    switch (st) {
    case MN_SVC_STARTING:
        return "starting";
    case MN_SVC_RUNNING:
        return "running";
    case MN_SVC_RESTARTING:
        return "restarting";
    case MN_SVC_QUARANTINED:
        return "quarantined";
    case MN_SVC_STOPPING:
        return "stopping";
    case MN_SVC_STOPPED:
        return "stopped";
    }
    return "unknown";
}

static void
publish(mn_sup_t *s, const ron_kernel_event_t *ev)
{
    if (s->bus != NULL)
        ron_bus_publish(s->bus, ev);
}

static void
svc_set_health(mn_svc_t *v, bool ok)
{
    ron_kernel_event_t ev;
    if (v->healthy == ok)
        return;
    v->healthy = ok;
    ron_kernel_event_health(&ev, v->name, ok);
    publish(v->sup, &ev);
}

static mn_svc_t *
sup_find(const mn_sup_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->svcs[i].name, name) == 0)
            return &s->svcs[i];
    return NULL;
}

/* ---- child handles ---- */

static void
child_handle_closed(uv_handle_t *h)
{
    mn_child_t *c = h->data;
    if (--c->open_handles == 0)
        free(c);
}

static void
child_log_flush(mn_child_t *c)
{
    if (c->line_len == 0)
        return;
    c->line[c->line_len++] = '\n';
    /* one write per line, so lines of several children never interleave */
    if (write(2, c->line, c->line_len) < 0) {
        /* stderr gone: nothing sensible left to do with a log line */
    }
    c->line_len = 0;
}

static void
child_log_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char scratch[4096];
    (void)h, (void)hint;
    buf->base = scratch; /* loop thread only; copied into the line at once */
    buf->len = sizeof scratch;
}

static void
child_log_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    mn_child_t *c = st->data;
    if (n < 0) {
        child_log_flush(c);
        uv_close((uv_handle_t *)st, child_handle_closed);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            child_log_flush(c);
        } else if (c->line_len < MN_MAX_LOG_LINE - 2) {
            c->line[c->line_len++] = ch;
        } else {
            child_log_flush(c); /* over-long line: cut; the rest follows as a new line */
            c->line[c->line_len++] = ch;
        }
    }
}

/* ---- restart decisions ---- */

static void
svc_restart_due(uv_timer_t *t)
{
    mn_svc_t *v = t->data;
    if (v->state != MN_SVC_RESTARTING || v->sup->stopping)
        return;
    v->restarts++;
    if (v->restarts_total != NULL)
        met_counter_inc(v->restarts_total);
    svc_spawn(v);
}

/* The child of v ended (or never started): decide. reason is copied. */
static void
svc_crashed(mn_svc_t *v, const char *reason)
{
    mn_sup_t *s = v->sup;
    ron_kernel_event_t ev;
    uint64_t delay = 0;

    snprintf(v->last_exit, sizeof v->last_exit, "%s", reason);
    v->pid = 0;
    svc_set_health(v, false);
    free(v->metrics); /* a dead process's numbers are not exported as current */
    v->metrics = NULL;
    v->metrics_len = 0;
    if (s->stopping) {
        v->state = MN_SVC_STOPPED;
        return;
    }
    if (v->crashes_total != NULL)
        met_counter_inc(v->crashes_total);
    ron_kernel_event_service_crashed(&ev, v->name, reason);
    publish(s, &ev);
    if (ron_restart_on_crash(&v->policy, ron_now_ms(), &delay) == RON_RESTART_QUARANTINE) {
        v->state = MN_SVC_QUARANTINED;
        ron_error("service %s quarantined: %u crashes within %llu ms (last: %s); "
                  "`ron release %s` lets it run again",
                  v->name, (unsigned)s->cfg->supervisor.quarantine_crashes,
                  (unsigned long long)s->cfg->supervisor.quarantine_window_ms, reason, v->name);
        return;
    }
    v->state = MN_SVC_RESTARTING;
    ron_warn("service %s crashed (%s); restart in %llu ms", v->name, reason,
             (unsigned long long)delay);
    uv_timer_start(&v->restart_timer, svc_restart_due, delay, 0);
}

static void
child_exited(uv_process_t *p, int64_t exit_status, int term_signal)
{
    mn_child_t *c = p->data;
    mn_svc_t *v = c->svc;
    char reason[96];

    c->exited = true;
    uv_close((uv_handle_t *)&c->proc, child_handle_closed);
    if (v == NULL)
        return;
    v->child = NULL;
    c->svc = NULL;
    mn__exit_reason(reason, sizeof reason, exit_status, term_signal);
    if (v->state == MN_SVC_STOPPING || v->sup->stopping) {
        snprintf(v->last_exit, sizeof v->last_exit, "%s", reason);
        v->state = MN_SVC_STOPPED;
        v->pid = 0;
        v->healthy = false;
        ron_info("service %s stopped (%s)", v->name, reason);
        sup_stop_next(v->sup);
        return;
    }
    svc_crashed(v, reason);
}

static void
host_exited(void *arg, int code)
{
    mn_svc_t *v = arg;
    char reason[48];
    v->host = NULL;
    snprintf(reason, sizeof reason, "exit %d", code);
    if (v->state == MN_SVC_STOPPING || v->sup->stopping) {
        snprintf(v->last_exit, sizeof v->last_exit, "%s", reason);
        v->state = MN_SVC_STOPPED;
        v->pid = 0;
        v->healthy = false;
        ron_info("service %s stopped (%s)", v->name, reason);
        sup_stop_next(v->sup);
        return;
    }
    svc_crashed(v, reason);
}

/* Micro profile: run the service host in this loop over the in-process bus. */
static void
svc_host_start(mn_svc_t *v)
{
    mn_sup_t *s = v->sup;
    rbus_config_t bc;
    int rc = 0, fd = v->listen_fd >= 0 ? dup(v->listen_fd) : -1;

    memset(&bc, 0, sizeof bc);
    bc.transport = RBUS_TRANSPORT_INPROC;
    bc.name = v->name;
    bc.hub = s->hub;
    v->state = MN_SVC_STARTING;
    v->spawned_ms = ron_now_ms();
    v->last_hb_ms = v->spawned_ms;
    v->pid = (int)getpid();
    v->host = mn__host_new(s->loop, ron_service_find(v->name), &bc, fd, host_exited, v, &rc);
    if (v->host != NULL && v->listen_fd2 >= 0)
        mn__host_listen2(v->host, dup(v->listen_fd2));
    if (v->host == NULL) {
        char reason[96];
        snprintf(reason, sizeof reason, "host: %s", ron_strerror(rc));
        svc_crashed(v, reason);
    }
}

static void
svc_spawn(mn_svc_t *v)
{
    mn_sup_t *s = v->sup;
    mn_child_t *c;

    if (s->inproc) {
        svc_host_start(v);
        return;
    }
    c = ron_xcalloc(1, sizeof *c);
    uv_process_options_t o;
    uv_stdio_container_t stdio[MN_CAPKEY_FD + 1];
    char *args[4];
    char **env = NULL;
    char e_dir[RBUS_MAX_DIR + 32], e_secret[2 * RBUS_SECRET_LEN + 32], e_fd[48], e_fd2[48],
        e_id[48], e_cap[48], hex[2 * RBUS_SECRET_LEN + 1];
    size_t n_env = 0, k = 0;
    const ron_service_def_t *def = ron_service_find(v->name);
    int rc, id_fd = -1, cap_fd = -1;

    if (def != NULL && def->needs_identity && (id_fd = mn__ident_pipe()) < 0) {
        char reason[96];
        snprintf(reason, sizeof reason, "identity: %s", ron_strerror(id_fd));
        free(c);
        svc_crashed(v, reason);
        return;
    }
    /* every child enforces on its boundaries: each gets the capability master */
    if ((cap_fd = mn__auth_capkey_pipe(s->auth)) < 0) {
        char reason[96];
        snprintf(reason, sizeof reason, "capability master: %s", ron_strerror(cap_fd));
        if (id_fd >= 0)
            close(id_fd);
        free(c);
        svc_crashed(v, reason);
        return;
    }

    for (char **e = environ; *e != NULL; e++)
        n_env++;
    env = ron_xcalloc(n_env + 7, sizeof *env);
    for (char **e = environ; *e != NULL; e++)
        if (strncmp(*e, RBUS_ENV_DIR "=", strlen(RBUS_ENV_DIR) + 1) != 0 &&
            strncmp(*e, RBUS_ENV_SECRET "=", strlen(RBUS_ENV_SECRET) + 1) != 0 &&
            strncmp(*e, MN_ENV_LISTEN_FD "=", strlen(MN_ENV_LISTEN_FD) + 1) != 0 &&
            strncmp(*e, MN_ENV_LISTEN_FD2 "=", strlen(MN_ENV_LISTEN_FD2) + 1) != 0 &&
            strncmp(*e, MN_ENV_IDENTITY_FD "=", strlen(MN_ENV_IDENTITY_FD) + 1) != 0 &&
            strncmp(*e, MN_ENV_CAPKEY_FD "=", strlen(MN_ENV_CAPKEY_FD) + 1) != 0 &&
            strncmp(*e, KMS_ENV_PASSPHRASE "=", strlen(KMS_ENV_PASSPHRASE) + 1) != 0)
            env[k++] = *e; /* never the passphrase: keys come on fds 5 and 6 */
    rbus_secret_hex(s->secret, hex);
    snprintf(e_dir, sizeof e_dir, "%s=%s", RBUS_ENV_DIR, s->bus_dir);
    snprintf(e_secret, sizeof e_secret, "%s=%s", RBUS_ENV_SECRET, hex);
    env[k++] = e_dir;
    env[k++] = e_secret;
    if (v->listen_fd >= 0) {
        snprintf(e_fd, sizeof e_fd, "%s=3", MN_ENV_LISTEN_FD);
        env[k++] = e_fd;
    }
    if (v->listen_fd2 >= 0) {
        snprintf(e_fd2, sizeof e_fd2, "%s=4", MN_ENV_LISTEN_FD2);
        env[k++] = e_fd2;
    }
    if (id_fd >= 0) {
        snprintf(e_id, sizeof e_id, "%s=%d", MN_ENV_IDENTITY_FD, MN_IDENTITY_FD);
        env[k++] = e_id;
    }
    snprintf(e_cap, sizeof e_cap, "%s=%d", MN_ENV_CAPKEY_FD, MN_CAPKEY_FD);
    env[k++] = e_cap;
    env[k] = NULL;

    args[0] = s->self_exe;
    args[1] = "service";
    args[2] = v->name;
    args[3] = NULL;

    uv_pipe_init(s->loop, &c->log, 0);
    c->log.data = c;
    c->proc.data = c;
    c->svc = v;
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 2;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&c->log;
    stdio[3].flags = UV_IGNORE;
    if (v->listen_fd >= 0) {
        stdio[3].flags = UV_INHERIT_FD;
        stdio[3].data.fd = v->listen_fd;
    }
    stdio[4].flags = UV_IGNORE;
    if (v->listen_fd2 >= 0) {
        stdio[4].flags = UV_INHERIT_FD;
        stdio[4].data.fd = v->listen_fd2;
    }
    stdio[MN_IDENTITY_FD].flags = UV_IGNORE;
    if (id_fd >= 0) {
        stdio[MN_IDENTITY_FD].flags = UV_INHERIT_FD;
        stdio[MN_IDENTITY_FD].data.fd = id_fd;
    }
    stdio[MN_CAPKEY_FD].flags = UV_INHERIT_FD;
    stdio[MN_CAPKEY_FD].data.fd = cap_fd;
    memset(&o, 0, sizeof o);
    o.exit_cb = child_exited;
    o.file = s->self_exe;
    o.args = args;
    o.env = env;
    o.stdio = stdio;
    o.stdio_count = MN_CAPKEY_FD + 1;

    v->state = MN_SVC_STARTING;
    v->spawned_ms = ron_now_ms();
    v->last_hb_ms = v->spawned_ms;
    rc = uv_spawn(s->loop, &c->proc, &o);
    free(env);
    if (id_fd >= 0)
        close(id_fd); /* the child has its copy (or was never started) */
    close(cap_fd);
    if (rc < 0) {
        char reason[96];
        /* uv_spawn failed: the process handle is still initialized and must be closed */
        c->open_handles = 2;
        c->svc = NULL;
        uv_close((uv_handle_t *)&c->proc, child_handle_closed);
        uv_close((uv_handle_t *)&c->log, child_handle_closed);
        snprintf(reason, sizeof reason, "spawn: %s", uv_strerror(rc));
        svc_crashed(v, reason);
        return;
    }
    c->open_handles = 2;
    v->child = c;
    v->pid = c->proc.pid;
    if (uv_read_start((uv_stream_t *)&c->log, child_log_alloc, child_log_read) < 0)
        uv_close((uv_handle_t *)&c->log, child_handle_closed);
}

/* ---- kernel side of ron-bus ---- */

static void
respond_json(rbus_req_t *req, json_t *body)
{
    char *txt = json_dumps(body, JSON_COMPACT);
    if (txt == NULL)
        abort(); /* jansson fails only on OOM */
    rbus_respond(req, 200, txt, strlen(txt));
    free(txt);
}

/* Payload of a config message: {"config":<snapshot>}. Returns new. */
static char *
config_payload(const ron_config_t *cfg)
{
    char *snap = ron_config_to_json(cfg);
    size_t n = strlen(snap) + 16;
    char *out = ron_xmalloc(n);
    snprintf(out, n, "{\"config\":%s}", snap);
    free(snap);
    return out;
}

static void
on_hello(mn_sup_t *s, mn_svc_t *v, rbus_req_t *req)
{
    char *payload = config_payload(s->cfg);
    v->state = MN_SVC_RUNNING;
    v->last_hb_ms = ron_now_ms();
    ron_info("service %s up (pid %d, %llu ms after spawn)", v->name, v->pid,
             (unsigned long long)(v->last_hb_ms - v->spawned_ms));
    svc_set_health(v, true);
    rbus_respond(req, 200, payload, strlen(payload));
    free(payload);
}

static void
on_heartbeat(mn_svc_t *v, json_t *msg, rbus_req_t *req)
{
    json_t *m = json_object_get(msg, "metrics"), *ver = json_object_get(msg, "config_version");
    json_t *ok;
    char head[24];
    uint64_t cv;
    v->last_hb_ms = ron_now_ms();
    if (json_is_string(ver) &&
        ron_parse_u64(json_string_value(ver), strlen(json_string_value(ver)), &cv) == 0)
        v->config_version = cv;
    if (json_is_string(m) && json_string_length(m) <= MN_MAX_METRICS) {
        free(v->metrics);
        v->metrics_len = json_string_length(m);
        v->metrics = ron_xmalloc(v->metrics_len + 1);
        memcpy(v->metrics, json_string_value(m), v->metrics_len + 1);
    }
    /* the authority's head: a child that missed a push (dropped event) syncs */
    snprintf(head, sizeof head, "%llu", (unsigned long long)mn__auth_head(v->sup->auth));
    ok = json_pack("{s:s}", "auth_head", head);
    respond_json(req, ok);
    json_decref(ok);
}

static void
kernel_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    mn_sup_t *s = arg;
    rbus_peer_t *peer = rbus_req_peer(req);
    json_error_t jerr;
    json_t *msg =
        json_loadb((const char *)f->payload, f->payload_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *op = json_string_value(json_object_get(msg, "op"));
    const char *name = json_string_value(json_object_get(msg, "service"));
    mn_svc_t *v = name != NULL ? sup_find(s, name) : NULL;

    if (msg == NULL || op == NULL || name == NULL) {
        rbus_respond_error(req, 400, "expected {\"op\",\"service\"}");
    } else if (v == NULL) {
        rbus_respond_error(req, 404, "no such service");
    } else if (peer == NULL || v->pid == 0 || rbus_peer_pid(peer) != (pid_t)v->pid) {
        /* only the process we spawned for this service may speak for it */
        ron_warn("refused %s from pid %d for service %s (spawned pid %d)", op,
                 peer != NULL ? (int)rbus_peer_pid(peer) : 0, name, v->pid);
        rbus_respond_error(req, 403, "not the process spawned for this service");
    } else if (strcmp(op, "hello") == 0) {
        on_hello(s, v, req);
    } else if (strcmp(op, "heartbeat") == 0) {
        on_heartbeat(v, msg, req);
    } else if (strcmp(op, "auth_sync") == 0 || strcmp(op, "auth_revoke") == 0 ||
               strcmp(op, "auth_rotate") == 0 || strcmp(op, "auth_show") == 0) {
        mn__auth_bus_op(s->auth, req, name, op, msg);
    } else if (strcmp(op, "status") == 0 || strcmp(op, "reload") == 0 ||
               strcmp(op, "release") == 0) {
        if (s->admin != NULL)
            mn__admin_bus_op(s->admin, req, op,
                             json_string_value(json_object_get(msg, "target")));
        else
            rbus_respond_error(req, 503, "the admin port is not up");
    } else {
        rbus_respond_error(req, 400, "unknown op");
    }
    json_decref(msg);
}

/* ---- health ---- */

static void
sup_health_tick(uv_timer_t *t)
{
    mn_sup_t *s = t->data;
    uint64_t now = ron_now_ms();
    const ron_config_supervisor_t *sc = &s->cfg->supervisor;
    for (size_t i = 0; i < s->n; i++) {
        mn_svc_t *v = &s->svcs[i];
        if (v->state == MN_SVC_RUNNING) {
            bool ok = now - v->last_hb_ms <= sc->unhealthy_after_ms;
            if (ok != v->healthy)
                ron_log(ok ? RON_LOG_INFO : RON_LOG_WARN,
                        "service %s %s (last heartbeat %llu ms ago)", v->name,
                        ok ? "healthy again" : "unhealthy",
                        (unsigned long long)(now - v->last_hb_ms));
            svc_set_health(v, ok);
            if (ok)
                ron_restart_on_healthy(&v->policy, now);
        } else if (v->state == MN_SVC_STARTING && v->child != NULL &&
                   now - v->spawned_ms > RON_MAX(5000, 4 * sc->unhealthy_after_ms)) {
            ron_warn("service %s: no HELLO within %llu ms; killing pid %d", v->name,
                     (unsigned long long)(now - v->spawned_ms), v->pid);
            uv_process_kill(&v->child->proc, SIGKILL);
        }
    }
}

/* ---- shutdown ---- */

static void
sup_stop_timer(uv_timer_t *t)
{
    mn_sup_t *s = t->data;
    bool past = ron_now_ms() >= s->stop_deadline_ms;
    for (size_t i = s->n; i-- > 0;) {
        mn_svc_t *v = &s->svcs[i];
        if (v->child == NULL || v->child->exited)
            continue;
        ron_warn("service %s did not stop in time; SIGKILL pid %d", v->name, v->pid);
        uv_process_kill(&v->child->proc, SIGKILL);
        if (!past)
            break; /* only the one being stopped now */
    }
    uv_timer_start(&s->stop_timer, sup_stop_timer, 50, 0);
}

static void
sup_stop_next(mn_sup_t *s)
{
    uint64_t now = ron_now_ms(), left;
    size_t alive = 0;
    mn_svc_t *target = NULL;

    if (!s->stopping)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (s->svcs[i].child != NULL || s->svcs[i].host != NULL) {
            alive++;
            target = &s->svcs[i]; /* the last started one still alive */
        }
    if (target == NULL) {
        uv_timer_stop(&s->stop_timer);
        if (s->stop_done != NULL) {
            void (*done)(void *) = s->stop_done;
            s->stop_done = NULL;
            done(s->stop_arg);
        }
        return;
    }
    if (target->state != MN_SVC_STOPPING) {
        target->state = MN_SVC_STOPPING;
        if (target->host != NULL)
            mn__host_stop(target->host, 0);
        else
            uv_process_kill(&target->child->proc, SIGTERM);
    }
    left = s->stop_deadline_ms > now ? s->stop_deadline_ms - now : 0;
    uv_timer_start(&s->stop_timer, sup_stop_timer, left / alive, 0);
}

void
mn__sup_stop(mn_sup_t *s, void (*done)(void *arg), void *arg)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    s->stop_deadline_ms = ron_now_ms() + s->cfg->supervisor.stop_timeout_ms;
    uv_timer_stop(&s->health_timer);
    for (size_t i = 0; i < s->n; i++) {
        mn_svc_t *v = &s->svcs[i];
        uv_timer_stop(&v->restart_timer);
        if (v->child == NULL && v->host == NULL)
            v->state = MN_SVC_STOPPED;
    }
    sup_stop_next(s);
}

/* ---- public operations ---- */

int
mn__sup_release(mn_sup_t *s, const char *name)
{
    mn_svc_t *v = sup_find(s, name);
    if (v == NULL)
        return RON_ENOTFOUND;
    if (v->state != MN_SVC_QUARANTINED || s->stopping)
        return RON_EINVAL;
    ron_restart_release(&v->policy);
    ron_info("service %s released from quarantine; starting it", v->name);
    svc_spawn(v);
    return 0;
}

void
mn__sup_config(mn_sup_t *s, const ron_config_t *cfg)
{
    char *payload = config_payload(cfg);
    s->cfg = cfg;
    if (s->rbus != NULL)
        rbus_publish(s->rbus, OAP_APP_KERNEL, payload, strlen(payload));
    free(payload);
}

size_t
mn__sup_count(const mn_sup_t *s)
{
    return s->n;
}

void
mn__sup_info(const mn_sup_t *s, size_t i, mn_svc_info_t *out)
{
    const mn_svc_t *v = &s->svcs[i];
    out->name = v->name;
    out->state = v->state;
    out->pid = v->pid;
    out->healthy = v->healthy;
    out->restarts = v->restarts;
    out->crash_streak = ron_restart_streak(&v->policy);
    out->config_version = v->config_version;
    out->last_exit = v->last_exit;
    out->listen_addr = v->listen_addr;
}

void
mn__sup_metrics(mn_sup_t *s, met_merge_t *m)
{
    if (s->inproc && s->auth != NULL) {
        /* micro: one guard for the process, rendered once, labelled service="node" */
        size_t n;
        if (s->auth_metrics == NULL)
            s->auth_metrics = ron_xmalloc(MN_MAX_METRICS);
        n = mn__auth_metrics(s->auth, s->auth_metrics, MN_MAX_METRICS);
        if (n > 0)
            met_merge_add(m, NULL, s->auth_metrics, n, NULL);
    }
    for (size_t i = 0; i < s->n; i++) {
        const mn_svc_t *v = &s->svcs[i];
        if (v->metrics != NULL)
            met_merge_add(m, v->name, v->metrics, v->metrics_len, NULL);
    }
}

/* ---- lifecycle ---- */

static int
sup_bind_listeners(mn_sup_t *s, char *err, size_t errcap)
{
    for (size_t i = 0; i < s->n; i++) {
        mn_svc_t *v = &s->svcs[i];
        const ron_service_def_t *def = ron_service_find(v->name);
        const char *addr;
        int fd;
        if (def == NULL) {
            snprintf(err, errcap, "unknown service '%s' (built in: %s)", v->name,
                     ron_service_names());
            return RON_ECONFIG;
        }
        addr = def->listen_addr != NULL ? def->listen_addr(s->cfg) : NULL;
        if (addr != NULL && addr[0] != '\0') {
            fd = def->listen_udp ? mn__listen_udp(addr, v->listen_addr, sizeof v->listen_addr)
                                 : mn__listen_tcp(addr, v->listen_addr, sizeof v->listen_addr);
            if (fd < 0) {
                snprintf(err, errcap, "service %s: cannot listen on %s: %s", v->name, addr,
                         ron_strerror(fd));
                return fd;
            }
            v->listen_fd = fd;
            ron_info("service %s: %s on %s (socket held by the kernel)", v->name,
                     def->listen_udp ? "udp" : "listening", v->listen_addr);
        }
        addr = def->listen_addr2 != NULL ? def->listen_addr2(s->cfg) : NULL;
        if (addr != NULL && addr[0] != '\0') {
            fd = mn__listen_tcp(addr, v->listen_addr2, sizeof v->listen_addr2);
            if (fd < 0) {
                snprintf(err, errcap, "service %s: cannot listen on %s: %s", v->name, addr,
                         ron_strerror(fd));
                return fd;
            }
            v->listen_fd2 = fd;
            ron_info("service %s: listening on %s too (socket held by the kernel)", v->name,
                     v->listen_addr2);
        }
    }
    return 0;
}

mn_sup_t *
mn__sup_new(uv_loop_t *loop, const ron_config_t *cfg, const char *self_exe, ron_bus_t *bus,
            met_registry_t *reg, char *err, size_t errcap)
{
    mn_sup_t *s = ron_xcalloc(1, sizeof *s);
    met_family_t *restarts = NULL, *crashes = NULL;
    static const char *const svc_label[] = {"service"};
    met_desc_t crash_desc = {MET_COUNTER,
                             "service_crashes_total",
                             "Unexpected exits of a service's process.",
                             svc_label,
                             1,
                             NULL,
                             0,
                             0};
    ron_restart_config_t rc_cfg = {
        .base_ms = (uint32_t)cfg->supervisor.backoff_initial_ms,
        .cap_ms = (uint32_t)cfg->supervisor.backoff_max_ms,
        .healthy_reset_ms = (uint32_t)cfg->supervisor.healthy_reset_ms,
        .window_ms = (uint32_t)cfg->supervisor.quarantine_window_ms,
        .quarantine_crashes = (uint32_t)cfg->supervisor.quarantine_crashes,
    };

    s->loop = loop;
    s->cfg = cfg;
    s->bus = bus;
    s->reg = reg;
    snprintf(s->self_exe, sizeof s->self_exe, "%s", self_exe);
    s->n = cfg->n_services;
    s->inproc = cfg->profile == RON_PROFILE_MICRO;
    s->svcs = ron_xcalloc(s->n ? s->n : 1, sizeof *s->svcs);
    uv_timer_init(loop, &s->health_timer);
    s->health_timer.data = s;
    uv_timer_init(loop, &s->stop_timer);
    s->stop_timer.data = s;
    s->open_handles = 2;
    if (reg != NULL) {
        met_family_register(reg, &MET_DESC_SERVICE_RESTARTS, &restarts);
        met_family_register(reg, &crash_desc, &crashes);
    }
    for (size_t i = 0; i < s->n; i++) {
        mn_svc_t *v = &s->svcs[i];
        const char *name = cfg->services[i];
        v->sup = s;
        v->listen_fd = -1;
        v->listen_fd2 = -1;
        v->state = MN_SVC_STOPPED;
        snprintf(v->name, sizeof v->name, "%s", name);
        if (ron_restart_init(&v->policy, &rc_cfg, 0) < 0) {
            snprintf(err, errcap, "supervisor settings out of range for the restart policy");
            goto fail;
        }
        if (restarts != NULL)
            v->restarts_total = met_family_counter(restarts, (const char *const[]){name});
        if (crashes != NULL)
            v->crashes_total = met_family_counter(crashes, (const char *const[]){name});
        uv_timer_init(loop, &v->restart_timer);
        v->restart_timer.data = v;
        s->open_handles++;
    }
    if (sup_bind_listeners(s, err, errcap) < 0)
        goto fail;
    return s;
fail:
    mn__sup_free(s);
    return NULL;
}

void
mn__sup_set_admin(mn_sup_t *s, mn_admin_t *a)
{
    s->admin = a;
}

void
mn__sup_set_auth(mn_sup_t *s, mn_auth_t *a)
{
    s->auth = a;
    mn__auth_set_bus(a, s->inproc ? NULL : s->rbus);
}

int
mn__sup_start(mn_sup_t *s, char *err, size_t errcap)
{
    rbus_config_t bc;
    int rc;

    memset(&bc, 0, sizeof bc);
    bc.name = MN_KERNEL_ENDPOINT;
    if (s->inproc) {
        s->hub = rbus_hub_new(s->loop);
        bc.transport = RBUS_TRANSPORT_INPROC;
        bc.hub = s->hub;
        goto endpoint;
    }
    /* kernels of this user that died by kill -9 or a crash left their socket
     * directories behind: take them away before adding ours */
    if ((rc = rbus_dir_sweep_stale(MN_BUS_DIR_STALE_S)) > 0)
        ron_info("removed %d ron-bus directories left by kernels that are gone", rc);
    if ((rc = rbus_dir_create(s->bus_dir, sizeof s->bus_dir)) < 0) {
        snprintf(err, errcap, "ron-bus directory: %s", ron_strerror(rc));
        return rc;
    }
    if ((rc = rbus_secret_generate(s->secret)) < 0) {
        snprintf(err, errcap, "per-boot secret: %s", ron_strerror(rc));
        return rc;
    }
    bc.transport = RBUS_TRANSPORT_UNIX;
    bc.dir = s->bus_dir;
    memcpy(bc.secret, s->secret, sizeof bc.secret);
endpoint:
    s->rbus = rbus_new(s->loop, &bc, &rc);
    explicit_bzero(bc.secret, sizeof bc.secret);
    if (s->rbus == NULL || (rc = rbus_handle(s->rbus, OAP_APP_KERNEL, kernel_request, s)) < 0 ||
        (rc = rbus_listen(s->rbus)) < 0) {
        snprintf(err, errcap, "ron-bus endpoint in %s: %s", s->bus_dir, ron_strerror(rc));
        return rc;
    }
    mn__auth_set_bus(s->auth, s->inproc ? NULL : s->rbus);
    if (s->inproc)
        ron_info("ron-bus in-process: services run inside the node");
    else
        ron_info("ron-bus listening in %s", s->bus_dir);
    for (size_t i = 0; i < s->n; i++)
        svc_spawn(&s->svcs[i]);
    uv_timer_start(&s->health_timer, sup_health_tick, MN_HEALTH_TICK_MS, MN_HEALTH_TICK_MS);
    return 0;
}

static void
sup_release_handle(mn_sup_t *s)
{
    if (--s->open_handles == 0) {
        for (size_t i = 0; i < s->n; i++)
            free(s->svcs[i].metrics);
        free(s->auth_metrics);
        free(s->svcs);
        free(s);
    }
}

static void
sup_handle_closed(uv_handle_t *h)
{
    sup_release_handle(h->data);
}

static void
svc_timer_closed(uv_handle_t *h)
{
    sup_release_handle(((mn_svc_t *)h->data)->sup);
}

void
mn__sup_free(mn_sup_t *s)
{
    if (s == NULL || s->freeing)
        return;
    s->freeing = true;
    for (size_t i = 0; i < s->n; i++) {
        mn_svc_t *v = &s->svcs[i];
        if (v->child != NULL) {
            /* defensive: free is called after stop; a live child is killed */
            uv_process_kill(&v->child->proc, SIGKILL);
            v->child->svc = NULL;
            v->child = NULL;
        }
        if (v->listen_fd >= 0)
            close(v->listen_fd);
        if (v->listen_fd2 >= 0)
            close(v->listen_fd2);
        if (v->restart_timer.loop != NULL)
            uv_close((uv_handle_t *)&v->restart_timer, svc_timer_closed);
    }
    mn__auth_set_bus(s->auth, NULL);
    if (s->rbus != NULL) {
        rbus_free(s->rbus);
        s->rbus = NULL;
    }
    if (s->hub != NULL) {
        rbus_hub_free(s->hub); /* every host is gone: the node frees us after the stop */
        s->hub = NULL;
    }
    if (s->bus_dir[0] != '\0')
        rbus_dir_remove(s->bus_dir);
    explicit_bzero(s->secret, sizeof s->secret);
    uv_close((uv_handle_t *)&s->health_timer, sup_handle_closed);
    uv_close((uv_handle_t *)&s->stop_timer, sup_handle_closed);
}
