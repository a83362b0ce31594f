/*
 * mn_node.c - `ron node`: the kernel process. Owns the loop, the config
 * store, the kernel event bus (whose events it logs, one JSON line each),
 * the kernel's metrics registry, the capability authority (mn_auth.c), the
 * supervisor (child processes in the macro profile, in-process service hosts
 * in micro), the admin port, and the
 * signals: SIGHUP reloads; SIGINT/SIGTERM (ron_wait_for_ctrl_c) publish
 * SHUTDOWN and stop the children in reverse start order within
 * supervisor.stop_timeout_ms, after which the node exits 0.
 * Invariants: a reload reads and validates the file on a worker thread, then
 * swaps the snapshot and hands it to the supervisor in the same loop turn
 * (the supervisor borrows the current snapshot); one reload at a time; a
 * second stop signal is ignored; a shutdown that overruns stop_timeout_ms +
 * MN_EXIT_SLACK_MS ends the process anyway (exit 0; children were SIGKILLed
 * at stop_timeout_ms and die with us through PR_SET_PDEATHSIG).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "mn_internal.h"
#include "ron_ctrl_c.h"
#include "ron_err.h"
#include "ron_kms.h"
#include "ron_log.h"
#include "ron_transport.h"
#include "ron_util.h"

/* After stop_timeout_ms (<= 1500 ms): the node exits within 2 s (DESIGN §11). */
#define MN_EXIT_SLACK_MS 400u

struct mn_node {
    uv_loop_t *loop;
    ron_config_store_t *store;
    const ron_config_t *cfg; /* current snapshot (a view into store) */
    ron_bus_t *bus;
    ron_bus_sub_t *sub;
    uv_async_t bus_wake;
    met_registry_t *reg;
    met_counter_t *reload_ok;
    met_counter_t *reload_failed;
    met_gauge_t *config_version;
    met_counter_t *bus_dropped;
    uint64_t bus_dropped_seen;
    mn_sup_t *sup; /* children (macro) or in-process hosts (micro) */
    mn_admin_t *admin;
    mn_auth_t *auth;                       /* capability authority (mn_auth.c) */
    kms_keystore_t *keys;                  /* node keys (RAM only in amnesia) */
    char node_id[2 * KMS_NODE_ID_LEN + 1]; /* hex of BLAKE3(identity public key) */
    ron_ctrl_c_t *ctrl_c;                  /* SIGINT/SIGTERM -> SHUTDOWN -> node_stop */
    uv_signal_t sig_hup;
    uv_timer_t exit_timer;
    bool stopping;
    bool reloading;    /* a reload's worker is running */
    bool reload_again; /* SIGHUP arrived meanwhile: reload once more */
    int exit_code;
    uint64_t started_ms;
    uint64_t stop_ms; /* when the stop began */
};

const char *
mn__node_id(const mn_node_t *n)
{
    return n->node_id[0] != '\0' ? n->node_id : NULL;
}

/*
 * Amnesia: before any key or content exists, forbid core dumps (RLIMIT_CORE
 * 0, soft and hard) and make the process non-dumpable, so a crash cannot
 * write keys or content to disk and no same-user process can read our memory
 * through /proc/<pid>/mem or ptrace (DESIGN §6). Without amnesia: nothing.
 */
static int
node_amnesia_harden(const ron_config_t *cfg, char *err, size_t errcap)
{
    struct rlimit rl = {0, 0};

    if (!ron_config_amnesia(cfg))
        return 0;
    if (setrlimit(RLIMIT_CORE, &rl) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        int rc = -errno;
        snprintf(err, errcap, "amnesia: no core dumps: %s", ron_strerror(rc));
        return rc;
    }
    ron_info("amnesia: core dumps off (RLIMIT_CORE 0), process not dumpable");
    return 0;
}

/* Open the key store, creating the keys on first start (ron-kms). */
static int
node_keys_open(mn_node_t *n, char *err, size_t errcap)
{
    uint8_t id[KMS_NODE_ID_LEN];
    int rc = kms_node_keys_open_or_create(n->cfg->data_dir, ron_config_amnesia(n->cfg), &n->keys,
                                          err, errcap);
    /* The passphrase has done its work (or failed): out of the environment
     * before any child starts, so neither /proc/PID/environ nor a child
     * shows it; children get the identity seed on a pipe (mn_ident.c). */
    if (kms_env_scrub() > 0)
        ron_info("%s read and wiped from the environment", KMS_ENV_PASSPHRASE);
    if (rc < 0)
        return rc;
    kms_keystore_node_id(n->keys, id);
    ron_hex_encode(n->node_id, id, sizeof id);
    mn__ident_set(n->keys);
    mn__shared_keys_set(n->keys); /* in-process services (micro) share the node's id */
    return 0;
}

const ron_config_t *
mn__node_config(const mn_node_t *n)
{
    return n->cfg;
}

mn_sup_t *
mn__node_sup(mn_node_t *n)
{
    return n->sup;
}

met_registry_t *
mn__node_registry(mn_node_t *n)
{
    ron_bus_stats_t st;
    ron_bus_stats(n->bus, &st);
    if (st.overflow_dropped > n->bus_dropped_seen) {
        met_counter_add(n->bus_dropped, st.overflow_dropped - n->bus_dropped_seen);
        n->bus_dropped_seen = st.overflow_dropped;
    }
    met_gauge_set(n->config_version, (double)n->cfg->version);
    return n->reg;
}

bool
mn__node_stopping(const mn_node_t *n)
{
    return n->stopping;
}

uint64_t
mn__node_uptime_ms(const mn_node_t *n)
{
    return ron_now_ms() - n->started_ms;
}

size_t
mn__node_service_count(const mn_node_t *n)
{
    return n->sup != NULL ? mn__sup_count(n->sup) : 0;
}

void
mn__node_service_info(const mn_node_t *n, size_t i, mn_svc_info_t *out)
{
    mn__sup_info(n->sup, i, out);
}

static void
apply_log_level(const ron_config_t *cfg)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(cfg->log_level, names[i]) == 0)
            ron_log_set_level((ron_log_level_t)i);
}

/* ---- events ---- */

static void
bus_drain(uv_async_t *a)
{
    mn_node_t *n = a->data;
    ron_kernel_event_t ev;
    char json[RON_KERNEL_EVENT_JSON_MAX];
    while (n->sub != NULL && ron_bus_recv(n->sub, &ev) == 0) {
        if (ron_kernel_event_encode(&ev, json, sizeof json) < 0)
            continue;
        ron_log(ev.kind == RON_EV_SERVICE_CRASHED ? RON_LOG_WARN : RON_LOG_INFO, "event %s", json);
    }
}

/* ---- reload ---- */

/* A reload in flight: the file is read and validated on a worker thread. */
typedef struct {
    uv_work_t work;
    mn_node_t *n;
    ron_config_t next; /* built by the worker */
    char err[RON_CONFIG_ERR_MAX];
    int rc;
    mn_reload_cb cb;
    void *arg;
} mn_reload_t;

static void
reload_work(uv_work_t *w)
{
    mn_reload_t *r = ron_container_of(w, mn_reload_t, work);
    /* the store's sources never change after start: safe to read here */
    r->rc = ron_config_store_build(r->n->store, &r->next, r->err, sizeof r->err);
}

static void reload_done(uv_work_t *w, int status);

static void
reload_start(mn_node_t *n, mn_reload_cb cb, void *arg)
{
    mn_reload_t *r = ron_xcalloc(1, sizeof *r);
    r->n = n;
    r->cb = cb;
    r->arg = arg;
    n->reloading = true;
    uv_queue_work(n->loop, &r->work, reload_work, reload_done);
}

static void
reload_done(uv_work_t *w, int status)
{
    mn_reload_t *r = ron_container_of(w, mn_reload_t, work);
    mn_node_t *n = r->n;
    ron_kernel_event_t ev;
    bool changed = false;
    char old_policy[RON_CONFIG_PATH_MAX];

    snprintf(old_policy, sizeof old_policy, "%s", n->cfg->policy_file);
    n->reloading = false;
    if (status < 0 || n->stopping) {
        r->rc = RON_ESHUTDOWN;
        snprintf(r->err, sizeof r->err, "node is shutting down");
    } else if (r->rc == 0) {
        r->rc = ron_config_store_adopt(n->store, &r->next, &changed, r->err, sizeof r->err);
    }
    if (r->rc < 0 && r->rc != RON_ESHUTDOWN) {
        met_counter_inc(n->reload_failed);
        ron_error("config reload refused; keeping version %llu: %s",
                  (unsigned long long)n->cfg->version, r->err);
    } else if (r->rc == 0 && !changed) {
        met_counter_inc(n->reload_ok);
        ron_info("config reload: no change (version %llu)", (unsigned long long)n->cfg->version);
    } else if (r->rc == 0) {
        met_counter_inc(n->reload_ok);
        n->cfg = ron_config_store_current(n->store);
        apply_log_level(n->cfg);
        mn__auth_config(n->auth, old_policy, n->cfg);
        mn__sup_config(n->sup, n->cfg); /* same turn: the supervisor borrows the snapshot */
        ron_info("config reloaded: version %llu", (unsigned long long)n->cfg->version);
        ron_kernel_event_config_updated(&ev, n->cfg->version);
        ron_bus_publish(n->bus, &ev);
    }
    if (r->cb != NULL)
        r->cb(r->arg, r->rc, changed, n->cfg->version, r->err);
    free(r);
    if (n->reload_again && !n->stopping) {
        n->reload_again = false;
        reload_start(n, NULL, NULL);
    }
}

int
mn__node_reload(mn_node_t *n, mn_reload_cb cb, void *arg)
{
    if (n->stopping)
        return RON_ESHUTDOWN;
    if (n->reloading)
        return RON_EBUSY;
    reload_start(n, cb, arg);
    return 0;
}

static void
on_sighup(uv_signal_t *h, int signum)
{
    mn_node_t *n = h->data;
    (void)signum;
    ron_info("SIGHUP: reloading config");
    if (n->reloading)
        n->reload_again = true; /* read the file again once the current reload ends */
    else if (!n->stopping)
        reload_start(n, NULL, NULL);
}

/* ---- shutdown ---- */

static void
node_closed_all(mn_node_t *n)
{
    uv_timer_stop(&n->exit_timer);
    uv_close((uv_handle_t *)&n->exit_timer, NULL);
    ron_ctrl_c_close(n->ctrl_c);
    n->ctrl_c = NULL;
    uv_close((uv_handle_t *)&n->sig_hup, NULL);
    if (n->sub != NULL) {
        bus_drain(&n->bus_wake);
        ron_bus_unsubscribe(n->sub);
        n->sub = NULL;
    }
    uv_close((uv_handle_t *)&n->bus_wake, NULL);
    if (n->sup != NULL)
        mn__sup_set_admin(n->sup, NULL);
    mn__admin_close(n->admin);
    n->admin = NULL;
    mn__sup_free(n->sup);
    n->sup = NULL;
    mn__auth_close(n->auth); /* every in-process service is gone: the node guard may go */
    n->auth = NULL;
}

static void
children_stopped(void *arg)
{
    mn_node_t *n = arg;
    ron_info("all services stopped %llu ms after the stop request; exiting",
             (unsigned long long)(ron_now_ms() - n->stop_ms));
    node_closed_all(n);
}

static void
exit_deadline(uv_timer_t *t)
{
    (void)t;
    ron_error("shutdown overran its budget; exiting now");
    _exit(0);
}

/* SHUTDOWN is already on the bus (ron_wait_for_ctrl_c published it). */
static void
node_stop(mn_node_t *n)
{
    if (n->stopping)
        return;
    n->stopping = true;
    n->stop_ms = ron_now_ms();
    uv_timer_start(&n->exit_timer, exit_deadline,
                   n->cfg->supervisor.stop_timeout_ms + MN_EXIT_SLACK_MS, 0);
    mn__sup_stop(n->sup, children_stopped, n);
}

static void
on_stop_signal(void *arg, int signum)
{
    mn_node_t *n = arg;
    ron_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    node_stop(n);
}

/* ---- run ---- */

static int
node_init(mn_node_t *n, char *err, size_t errcap)
{
    ron_bus_opts_t bo = {.capacity = (uint32_t)n->cfg->bus_capacity};
    int rc;

    if ((rc = ron_bus_new(&bo, &n->bus)) < 0) {
        snprintf(err, errcap, "bus.capacity %llu: must be a power of two",
                 (unsigned long long)n->cfg->bus_capacity);
        return RON_ECONFIG;
    }
    uv_async_init(n->loop, &n->bus_wake, bus_drain);
    n->bus_wake.data = n;
    ron_bus_subscribe(n->bus, &n->bus_wake, &n->sub);
    n->reg = met_registry_new();
    met_counter_register(n->reg, "config_reloads_total", "Config reloads applied or unchanged.",
                         &n->reload_ok);
    met_counter_register(n->reg, "config_reload_failures_total",
                         "Config reloads refused (the old snapshot stayed).", &n->reload_failed);
    met_gauge_register(n->reg, "config_version", "Version of the current config snapshot.",
                       &n->config_version);
    met_counter_register(n->reg, MET_NAME_BUS_OVERFLOW,
                         "Kernel bus events lost by subscribers that fell behind.",
                         &n->bus_dropped);
    uv_timer_init(n->loop, &n->exit_timer);
    uv_signal_init(n->loop, &n->sig_hup);
    n->sig_hup.data = n;
    n->ctrl_c = ron_wait_for_ctrl_c(n->loop, n->bus, on_stop_signal, n, &rc);
    if (n->ctrl_c == NULL) {
        snprintf(err, errcap, "signal handlers: %s", uv_strerror(rc));
        return rc;
    }
    return 0;
}

int
ron_node_run(ron_config_store_t *store, const char *self_exe)
{
    mn_node_t *n = ron_xcalloc(1, sizeof *n);
    uv_loop_t loop;
    char err[512] = "";
    int rc;

    signal(SIGPIPE, SIG_IGN);
    /* before OpenSSL's first allocation: its freed blocks are wiped (key temporaries) */
    (void)tx_tls_heap_wipe_install();
    uv_loop_init(&loop);
    n->loop = &loop;
    n->store = store;
    n->cfg = ron_config_store_current(store);
    n->started_ms = ron_now_ms();
    n->exit_code = 1;
    ron_log_set_service("kernel");
    apply_log_level(n->cfg);
    /* micro: the gateway runs here; its HTTPS key goes in OpenSSL's secure
     * heap, which must exist before any key does */
    if (n->cfg->profile == RON_PROFILE_MICRO && n->cfg->https[0] != '\0' &&
        tx_tls_secure_heap_init() < 0) {
        snprintf(err, sizeof err, "cannot set up OpenSSL's secure heap");
        goto fail;
    }
    if (node_amnesia_harden(n->cfg, err, sizeof err) < 0 ||
        mn__data_dir_prepare(n->cfg, err, sizeof err) < 0 ||
        node_keys_open(n, err, sizeof err) < 0 || node_init(n, err, sizeof err) < 0 ||
        mn__auth_open(&loop, n->cfg, n->keys, &n->auth, err, sizeof err) < 0)
        goto fail;
    n->sup = mn__sup_new(&loop, n->cfg, self_exe, n->bus, n->reg, err, sizeof err);
    if (n->sup == NULL)
        goto fail;
    n->admin = mn__admin_new(&loop, n, n->cfg, err, sizeof err);
    if (n->admin == NULL)
        goto fail;
    mn__sup_set_admin(n->sup, n->admin);
    mn__sup_set_auth(n->sup, n->auth);
    if (mn__sup_start(n->sup, err, sizeof err) < 0)
        goto fail;
    uv_signal_start(&n->sig_hup, on_sighup, SIGHUP);
    ron_info("node up: profile %s, admin http://%s, config version %llu, amnesia %s",
             n->cfg->profile == RON_PROFILE_MICRO ? "micro" : "macro", mn__admin_addr(n->admin),
             (unsigned long long)n->cfg->version, ron_config_amnesia(n->cfg) ? "on" : "off");
    n->exit_code = 0;
    uv_run(&loop, UV_RUN_DEFAULT);
    goto out;
fail:
    ron_error("node failed to start: %s", err);
    fprintf(stderr, "ron: %s\n", err);
    if (n->sup != NULL) {
        n->stopping = true;
        mn__sup_stop(n->sup, children_stopped, n);
    } else if (n->bus != NULL) {
        node_closed_all(n);
    }
out:
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = n->exit_code;
    if (uv_loop_close(&loop) != 0)
        ron_warn("loop closed with handles still open");
    ron_bus_free(n->bus);
    met_registry_free(n->reg);
    mn__ident_set(NULL);
    mn__shared_keys_set(NULL);
    kms_keystore_free(n->keys); /* wipes the secret keys */
    ron_config_store_free(store);
    free(n);
    return rc;
}
