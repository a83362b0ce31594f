/*
 * mn_service.c - the service host: the side of the supervisor that runs one
 * service. It connects to the kernel's ron-bus endpoint, says HELLO,
 * receives the config snapshot, starts the service, sends a heartbeat with
 * its metrics every supervisor.heartbeat_ms, and applies the config updates
 * the kernel publishes. The same host runs in a child process (`ron service
 * NAME`, Unix-socket transport, macro profile) and inside the node's own
 * loop (in-process transport, micro profile): services never learn which.
 * In a child, SIGTERM stops it (exit 0) and SIGINT is ignored: a terminal's
 * Ctrl-C reaches the whole process group, and the kernel decides the order.
 * Capabilities: a child builds the process guard (ron_node_guard) from the
 * master it inherited on fd 6 right after the HELLO answer, syncs it with
 * the kernel's authority (auth_sync, page after page) and only then starts
 * the service, so a restarted child never serves before it knows every
 * revocation; it then applies the kernel's {"auth":..} pushes (a gap, or a
 * heartbeat answer naming a newer head, makes it sync) and sends a
 * heartbeat at once after each change so /metrics shows the new head. The
 * host appends guard_metrics_render() to the process's metrics once. In
 * the micro profile the node's guard is fed by the kernel in the same
 * process: hosts there neither sync nor render it.
 * Invariants: at most one heartbeat in flight; a kernel silent for
 * MN_KERNEL_LOST_MS ends the host (exit code 1); teardown runs on a fresh
 * loop turn, never inside a ron-bus callback; on_exit runs once, after every
 * handle of the host is closed.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "mn_internal.h"
#include "oap.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_transport.h"
#include "ron_util.h"

#define MN_KERNEL_LOST_MS 5000u /* no answered heartbeat for this long: the kernel is gone */
#define MN_HELLO_TRIES 25u      /* HELLO attempts, 200 ms apart */
#define MN_SYNC_TRIES 25u       /* failed auth_sync attempts before start, 200 ms apart */

struct mn_host {
    uv_loop_t *loop;
    const ron_service_def_t *def;
    void (*on_exit)(void *arg, int code);
    void *exit_arg;
    void *state;
    bool started;
    bool stopping;
    rbus_t *bus;
    rbus_peer_t *kernel;
    ron_config_t cfg;
    uv_timer_t timer; /* HELLO retry, then heartbeat, then teardown */
    unsigned hello_tries;
    bool hb_inflight;
    uint64_t last_ok_ms;
    int listen_fd;
    int listen_fd2; /* second listener until attach_listener2 takes it, or -1 */
    int exit_code;
    char *mbuf; /* metrics text scratch, MN_MAX_METRICS bytes */
    /* capabilities: this host's process guard follows the kernel's authority */
    bool own_guard;      /* the guard was built here from the inherited master */
    bool sync_inflight;  /* an auth_sync is in flight */
    bool sync_again;     /* sync once more when it answers */
    unsigned sync_tries; /* failures before start */
    bool hb_again;       /* a heartbeat is wanted as soon as the one in flight answers */
    guard_entry_t *entries; /* GUARD_SYNC_PAGE, for decoding pages */
};

typedef mn_host_t svc_run_t;

static void run_stop(svc_run_t *r, int code);
static void send_hello(svc_run_t *r);
static void heartbeat_tick(uv_timer_t *t);
static void sync_send(svc_run_t *r);
static void service_start(svc_run_t *r);

static void
apply_snapshot(svc_run_t *r, const char *json, size_t len, bool first)
{
    char err[RON_CONFIG_ERR_MAX];
    ron_config_t *next = ron_xmalloc(sizeof *next);
    uint64_t old_hb;
    if (ron_config_from_json(json, len, next, err, sizeof err) < 0) {
        ron_warn("config snapshot refused: %s", err);
        free(next);
        return;
    }
    if (!first && next->version <= r->cfg.version) {
        free(next);
        return;
    }
    old_hb = r->cfg.supervisor.heartbeat_ms;
    if (!first && r->own_guard && strcmp(r->cfg.policy_file, next->policy_file) != 0) {
        int rc = guard_policy_reload(ron_node_guard(), next->policy_file);
        if (rc < 0)
            ron_error("policy_file %s refused; the previous policy stays: %s",
                      next->policy_file[0] != '\0' ? next->policy_file : "(default)",
                      ron_strerror(rc));
        else
            ron_info("policy reloaded from %s",
                     next->policy_file[0] != '\0' ? next->policy_file : "the shipped default");
    }
    r->cfg = *next;
    free(next);
    if (strcmp(r->cfg.log_level, "debug") == 0)
        ron_log_set_level(RON_LOG_DEBUG);
    else if (strcmp(r->cfg.log_level, "warn") == 0)
        ron_log_set_level(RON_LOG_WARN);
    else if (strcmp(r->cfg.log_level, "error") == 0)
        ron_log_set_level(RON_LOG_ERROR);
    else
        ron_log_set_level(RON_LOG_INFO);
    if (!first) {
        ron_info("config version %llu applied", (unsigned long long)r->cfg.version);
        if (r->started && r->cfg.supervisor.heartbeat_ms != old_hb)
            uv_timer_start(&r->timer, heartbeat_tick, r->cfg.supervisor.heartbeat_ms,
                           r->cfg.supervisor.heartbeat_ms);
        if (r->started && r->def->apply_config != NULL)
            r->def->apply_config(r->state, &r->cfg);
    }
}

/* Send a heartbeat now (fresh metrics), or right after the one in flight. */
static void
heartbeat_now(svc_run_t *r)
{
    if (!r->started || r->stopping)
        return;
    if (r->hb_inflight) {
        r->hb_again = true;
        return;
    }
    heartbeat_tick(&r->timer);
}

static void
heartbeat_reply(void *arg, int status, const oap_frame_t *resp)
{
    svc_run_t *r = arg;
    r->hb_inflight = false;
    if (status == 0 && resp->code == 200) {
        r->last_ok_ms = ron_now_ms();
        if (r->own_guard && !r->stopping) {
            /* a push we missed (dropped on a full queue): the head tells */
            json_t *o = json_loadb((const char *)resp->payload, resp->payload_len, 0, NULL);
            const char *h = json_string_value(json_object_get(o, "auth_head"));
            uint64_t head;
            if (h != NULL && ron_parse_u64(h, strlen(h), &head) == 0 &&
                head > guard_head(ron_node_guard()))
                sync_send(r);
            json_decref(o);
        }
    }
    if (r->hb_again && status == 0) {
        r->hb_again = false;
        heartbeat_now(r);
    }
}

static void
heartbeat_tick(uv_timer_t *t)
{
    svc_run_t *r = t->data;
    json_t *msg;
    char ver[24], *txt;
    size_t n = 0;
    int rc;

    if (ron_now_ms() - r->last_ok_ms > MN_KERNEL_LOST_MS) {
        ron_error("kernel silent for %u ms; exiting", MN_KERNEL_LOST_MS);
        run_stop(r, 1);
        return;
    }
    if (r->hb_inflight)
        return;
    if (r->def->metrics != NULL)
        n = r->def->metrics(r->state, r->mbuf, MN_MAX_METRICS);
    if (r->own_guard && n < MN_MAX_METRICS) /* once per process: the host renders the guard */
        n += guard_metrics_render(ron_node_guard(), r->mbuf + n, MN_MAX_METRICS - n);
    r->mbuf[n < MN_MAX_METRICS ? n : MN_MAX_METRICS - 1] = '\0';
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)r->cfg.version);
    msg = json_pack("{s:s, s:s, s:s, s:s}", "op", "heartbeat", "service", r->def->name,
                    "config_version", ver, "metrics", r->mbuf);
    txt = msg != NULL ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (txt == NULL)
        return; /* metrics text not UTF-8: skip this beat, the next one retries */
    rc = rbus_request(r->kernel, OAP_APP_KERNEL, txt, strlen(txt),
                      (uint32_t)(2 * r->cfg.supervisor.heartbeat_ms), heartbeat_reply, r);
    free(txt);
    r->hb_inflight = rc == 0;
}

/* A push {"auth":<page>}: apply it; a gap or a page we cannot read: sync. */
static void
auth_event(svc_run_t *r, const char *page, size_t len)
{
    guard_t *g = ron_node_guard();
    uint64_t prev = 0, head = 0, before;
    long n;
    int rc;

    if (!r->own_guard || g == NULL || r->stopping)
        return; /* micro: the kernel feeds the guard itself */
    before = guard_head(g);
    n = guard_page_decode(page, len, &prev, &head, r->entries, GUARD_SYNC_PAGE);
    if (n < 0) {
        ron_warn("capability push unreadable (%s); syncing", ron_strerror((int)n));
        sync_send(r);
        return;
    }
    rc = guard_apply(g, prev, head, r->entries, (size_t)n);
    if (rc == RON_EAGAIN) {
        sync_send(r); /* we missed a change before this one */
        return;
    }
    if (rc < 0) {
        ron_error("capability push %llu: %s; syncing", (unsigned long long)head,
                  ron_strerror(rc));
        sync_send(r);
        return;
    }
    if (guard_head(g) != before)
        heartbeat_now(r);
}

static void
config_event(void *arg, rbus_peer_t *p, const oap_frame_t *f)
{
    svc_run_t *r = arg;
    json_error_t jerr;
    json_t *msg, *cfg;
    const char *page;
    size_t page_len;
    (void)p;

    if (mn__auth_event_page(f->payload, f->payload_len, &page, &page_len) == 0) {
        auth_event(r, page, page_len);
        return;
    }
    msg = json_loadb((const char *)f->payload, f->payload_len, 0, &jerr);
    cfg = json_object_get(msg, "config");
    if (json_is_object(cfg)) {
        char *txt = json_dumps(cfg, JSON_COMPACT);
        if (txt != NULL)
            apply_snapshot(r, txt, strlen(txt), false);
        free(txt);
    }
    json_decref(msg);
}

static void
hello_retry(uv_timer_t *t)
{
    send_hello(t->data);
}

static void
hello_reply(void *arg, int status, const oap_frame_t *resp)
{
    svc_run_t *r = arg;
    json_error_t jerr;
    json_t *msg = NULL, *cfg;
    char *txt = NULL;
    int rc;

    if (r->stopping)
        return;
    if (status < 0 || resp->code != 200) {
        ron_warn("HELLO to kernel failed: %s",
                 status < 0 ? ron_strerror(status) : "refused by the kernel");
        if (++r->hello_tries >= MN_HELLO_TRIES) {
            run_stop(r, 1);
            return;
        }
        uv_timer_start(&r->timer, hello_retry, 200, 0);
        return;
    }
    msg = json_loadb((const char *)resp->payload, resp->payload_len, 0, &jerr);
    cfg = json_object_get(msg, "config");
    txt = json_is_object(cfg) ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (txt == NULL) {
        ron_error("HELLO answer without a config snapshot");
        run_stop(r, 1);
        return;
    }
    r->cfg.version = 0;
    apply_snapshot(r, txt, strlen(txt), true);
    free(txt);
    if (r->cfg.version == 0) {
        run_stop(r, 1);
        return;
    }
    if (mn__capkey_held() && ron_node_guard() == NULL) {
        /* a child: build the process guard, catch up with the authority, then start */
        if ((rc = mn__guard_build(r->def->name, &r->cfg)) < 0) {
            ron_error("service %s: capability guard: %s", r->def->name, ron_strerror(rc));
            run_stop(r, 1);
            return;
        }
        r->own_guard = true;
        sync_send(r);
        return;
    }
    service_start(r);
}

static void
sync_retry(uv_timer_t *t)
{
    sync_send(t->data);
}

/* An auth_sync failed: before start retry (bounded), after start the next
 * push or heartbeat answer retries. */
static void
sync_failed(svc_run_t *r, const char *why)
{
    ron_warn("capability sync failed: %s", why);
    if (r->started)
        return;
    if (++r->sync_tries >= MN_SYNC_TRIES) {
        ron_error("service %s: cannot sync capabilities with the kernel; exiting", r->def->name);
        run_stop(r, 1);
        return;
    }
    uv_timer_start(&r->timer, sync_retry, 200, 0);
}

static void
sync_reply(void *arg, int status, const oap_frame_t *resp)
{
    svc_run_t *r = arg;
    guard_t *g = ron_node_guard();
    uint64_t prev = 0, head = 0;
    long n;
    int rc;

    r->sync_inflight = false;
    if (r->stopping || g == NULL)
        return;
    if (status < 0 || resp->code != 200) {
        sync_failed(r, status < 0 ? ron_strerror(status) : "refused by the kernel");
        return;
    }
    n = guard_page_decode((const char *)resp->payload, resp->payload_len, &prev, &head,
                          r->entries, GUARD_SYNC_PAGE);
    if (n < 0) {
        sync_failed(r, ron_strerror((int)n));
        return;
    }
    rc = guard_apply(g, prev, head, r->entries, (size_t)n);
    if (rc < 0 && rc != RON_EAGAIN) {
        sync_failed(r, ron_strerror(rc));
        return;
    }
    if (rc == RON_EAGAIN || n == GUARD_SYNC_PAGE || r->sync_again) {
        r->sync_again = false; /* a full page, or a push came meanwhile: ask again */
        sync_send(r);
        return;
    }
    if (!r->started) {
        ron_info("capabilities in step with the kernel (change %llu)",
                 (unsigned long long)guard_head(g));
        service_start(r);
    } else {
        heartbeat_now(r);
    }
}

static void
sync_send(svc_run_t *r)
{
    char body[160];
    int rc;

    if (r->stopping)
        return;
    if (r->sync_inflight) {
        r->sync_again = true;
        return;
    }
    snprintf(body, sizeof body, "{\"after\":\"%llu\",\"op\":\"auth_sync\",\"service\":\"%s\"}",
             (unsigned long long)guard_head(ron_node_guard()), r->def->name);
    rc = rbus_request(r->kernel, OAP_APP_KERNEL, body, strlen(body), 2000, sync_reply, r);
    if (rc < 0) {
        sync_failed(r, ron_strerror(rc));
        return;
    }
    r->sync_inflight = true;
}

/* Start the service: the config is applied and the guard (if any) in step. */
static void
service_start(svc_run_t *r)
{
    int rc = r->def->start(r->loop, &r->cfg, r->listen_fd, &r->state);
    r->listen_fd = -1; /* taken by the service */
    if (rc < 0) {
        ron_error("service %s failed to start: %s", r->def->name, ron_strerror(rc));
        run_stop(r, 1);
        return;
    }
    r->started = true;
    if (r->listen_fd2 >= 0) {
        int fd2 = r->listen_fd2;
        r->listen_fd2 = -1;
        if (r->def->attach_listener2 == NULL) {
            close(fd2);
        } else if ((rc = r->def->attach_listener2(r->state, fd2)) < 0) {
            ron_error("service %s: second listener: %s", r->def->name, ron_strerror(rc));
            run_stop(r, 1);
            return;
        }
    }
    if (r->def->serve_bus != NULL && (rc = r->def->serve_bus(r->state, r->bus)) < 0) {
        ron_error("service %s cannot serve ron-bus: %s", r->def->name, ron_strerror(rc));
        run_stop(r, 1);
        return;
    }
    r->last_ok_ms = ron_now_ms();
    ron_info("service %s started (config version %llu)", r->def->name,
             (unsigned long long)r->cfg.version);
    uv_timer_start(&r->timer, heartbeat_tick, r->cfg.supervisor.heartbeat_ms,
                   r->cfg.supervisor.heartbeat_ms);
}

static void
send_hello(svc_run_t *r)
{
    char body[160];
    int rc;
    snprintf(body, sizeof body, "{\"op\":\"hello\",\"service\":\"%s\",\"pid\":\"%d\"}",
             r->def->name, (int)getpid());
    rc = rbus_request(r->kernel, OAP_APP_KERNEL, body, strlen(body), 2000, hello_reply, r);
    if (rc < 0) {
        if (++r->hello_tries >= MN_HELLO_TRIES) {
            ron_error("cannot reach the kernel over ron-bus: %s", ron_strerror(rc));
            run_stop(r, 1);
            return;
        }
        uv_timer_start(&r->timer, hello_retry, 200, 0);
    }
}

/* Tear down on a fresh loop turn, never from inside a ron-bus callback. */
static void
host_closed(uv_handle_t *h)
{
    svc_run_t *r = h->data;
    if (r->on_exit != NULL)
        r->on_exit(r->exit_arg, r->exit_code);
    free(r->mbuf);
    free(r->entries);
    free(r);
}

static void
run_teardown(uv_timer_t *t)
{
    svc_run_t *r = t->data;
    if (r->started && r->def->stop != NULL)
        r->def->stop(r->state);
    if (r->kernel != NULL)
        rbus_peer_close(r->kernel);
    r->kernel = NULL;
    rbus_free(r->bus);
    r->bus = NULL;
    if (r->listen_fd >= 0)
        close(r->listen_fd);
    r->listen_fd = -1;
    if (r->listen_fd2 >= 0)
        close(r->listen_fd2);
    r->listen_fd2 = -1;
    uv_close((uv_handle_t *)&r->timer, host_closed);
}

static void
run_stop(svc_run_t *r, int code)
{
    if (r->stopping)
        return;
    r->stopping = true;
    r->exit_code = code;
    uv_timer_stop(&r->timer);
    uv_timer_start(&r->timer, run_teardown, 0, 0);
}

void
mn__host_listen2(mn_host_t *h, int fd)
{
    if (h->listen_fd2 >= 0)
        close(h->listen_fd2);
    h->listen_fd2 = fd;
}

void
mn__host_stop(mn_host_t *h, int code)
{
    run_stop(h, code);
}

mn_host_t *
mn__host_new(uv_loop_t *loop, const ron_service_def_t *def, const rbus_config_t *bc, int listen_fd,
             void (*on_exit)(void *arg, int code), void *arg, int *rc_out)
{
    svc_run_t *r = ron_xcalloc(1, sizeof *r);
    int rc = 0;

    r->loop = loop;
    r->def = def;
    r->on_exit = on_exit;
    r->exit_arg = arg;
    r->listen_fd = listen_fd;
    r->listen_fd2 = -1;
    r->mbuf = ron_xmalloc(MN_MAX_METRICS);
    r->entries = ron_xcalloc(GUARD_SYNC_PAGE, sizeof *r->entries);
    r->bus = rbus_new(loop, bc, &rc);
    if (r->bus == NULL)
        goto fail;
    r->kernel = rbus_connect(r->bus, MN_KERNEL_ENDPOINT, &rc);
    if (r->kernel == NULL)
        goto fail;
    rbus_subscribe(r->kernel, OAP_APP_KERNEL, config_event, r);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    send_hello(r);
    return r;
fail:
    rbus_free(r->bus);
    free(r->mbuf);
    free(r->entries);
    free(r);
    if (listen_fd >= 0)
        close(listen_fd);
    *rc_out = rc;
    return NULL;
}

/* ---- `ron service NAME` ---- */

typedef struct {
    uv_signal_t sigterm;
    mn_host_t *host;
    int code;
} child_main_t;

static void
on_sigterm(uv_signal_t *h, int signum)
{
    child_main_t *m = h->data;
    (void)signum;
    ron_info("SIGTERM: stopping");
    mn__host_stop(m->host, 0);
}

static void
child_host_exit(void *arg, int code)
{
    child_main_t *m = arg;
    m->code = code;
    uv_close((uv_handle_t *)&m->sigterm, NULL);
}

int
ron_service_run(const char *name)
{
    const ron_service_def_t *def = ron_service_find(name);
    const char *fd_env = getenv(MN_ENV_LISTEN_FD), *fd2_env = getenv(MN_ENV_LISTEN_FD2);
    child_main_t m;
    rbus_config_t bc;
    char dir[RBUS_MAX_DIR];
    uv_loop_t loop;
    int rc, listen_fd = -1, listen_fd2 = -1;

    memset(&m, 0, sizeof m);
    if (def == NULL) {
        fprintf(stderr, "ron: unknown service '%s' (built in: %s)\n", name, ron_service_names());
        return 2;
    }
    ron_log_set_service(name);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* before OpenSSL's first allocation: its freed blocks are wiped (key temporaries) */
    (void)tx_tls_heap_wipe_install();
    if (getppid() == 1)
        return 1; /* the kernel died before we got here */
    if (rbus_config_from_env(&bc, name) < 0) {
        fprintf(stderr, "ron: `ron service` is started by `ron node`, not by hand\n");
        return 2;
    }
    if (fd_env != NULL) {
        uint64_t v;
        if (ron_parse_u64(fd_env, strlen(fd_env), &v) < 0 || v < 3 || v > 1024) {
            fprintf(stderr, "ron: %s=%s is not an inherited descriptor\n", MN_ENV_LISTEN_FD,
                    fd_env);
            return 2;
        }
        listen_fd = (int)v;
    }
    if (fd2_env != NULL) {
        uint64_t v;
        if (ron_parse_u64(fd2_env, strlen(fd2_env), &v) < 0 || v < 3 || v > 1024 ||
            (int)v == listen_fd) {
            fprintf(stderr, "ron: %s=%s is not an inherited descriptor\n", MN_ENV_LISTEN_FD2,
                    fd2_env);
            return 2;
        }
        listen_fd2 = (int)v;
        /* a second listener is the gateway's HTTPS: its key goes in the secure heap */
        if (tx_tls_secure_heap_init() < 0) {
            fprintf(stderr, "ron: cannot set up OpenSSL's secure heap\n");
            return 1;
        }
    }
    if (getenv(MN_ENV_IDENTITY_FD) != NULL) {
        const char *id_env = getenv(MN_ENV_IDENTITY_FD);
        uint64_t v;
        if (ron_parse_u64(id_env, strlen(id_env), &v) < 0 || v != MN_IDENTITY_FD ||
            mn__ident_read_fd((int)v) < 0) {
            fprintf(stderr, "ron: %s=%s: cannot read the identity key\n", MN_ENV_IDENTITY_FD,
                    id_env);
            return 2;
        }
        unsetenv(MN_ENV_IDENTITY_FD);
    }
    {
        /* every child enforces: the kernel always hands over the capability master */
        const char *cap_env = getenv(MN_ENV_CAPKEY_FD);
        uint64_t v;
        if (cap_env == NULL || ron_parse_u64(cap_env, strlen(cap_env), &v) < 0 ||
            v != MN_CAPKEY_FD || mn__capkey_read_fd((int)v) < 0) {
            fprintf(stderr, "ron: %s=%s: cannot read the capability master\n", MN_ENV_CAPKEY_FD,
                    cap_env != NULL ? cap_env : "(unset)");
            mn__ident_forget();
            return 2;
        }
        unsetenv(MN_ENV_CAPKEY_FD);
    }
    unsetenv(MN_ENV_LISTEN_FD);
    unsetenv(MN_ENV_LISTEN_FD2);
    snprintf(dir, sizeof dir, "%s", bc.dir);
    bc.dir = dir;
    uv_loop_init(&loop);
    m.host = mn__host_new(&loop, def, &bc, listen_fd, child_host_exit, &m, &rc);
    explicit_bzero(bc.secret, sizeof bc.secret);
    if (m.host != NULL && listen_fd2 >= 0)
        mn__host_listen2(m.host, listen_fd2);
    else if (listen_fd2 >= 0)
        close(listen_fd2);
    if (m.host == NULL) {
        ron_error("ron-bus: %s", ron_strerror(rc));
        m.code = 1;
    } else {
        uv_signal_init(&loop, &m.sigterm);
        m.sigterm.data = &m;
        uv_signal_start(&m.sigterm, on_sigterm, SIGTERM);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        ron_warn("loop closed with handles still open");
    mn__guard_forget(); /* every service has stopped: nothing holds the guard */
    mn__ident_forget();
    return m.code;
}
