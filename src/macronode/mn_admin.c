/*
 * mn_admin.c - the admin port (default 127.0.0.1:8080) on the ron-transport
 * HTTP/1.1 server with its hardening layer (admin_limits.*):
 *   GET /metrics        kernel registry + every service's metrics, service="NAME"
 *   GET /healthz        200 when every service is healthy, else 503 naming them
 *   GET /readyz         reads: 503 only when the node cannot serve at all
 *                       (shutting down, or every service quarantined/stopped)
 *   GET /readyz?write=1 writes: 503 as soon as anything degrades (fails first):
 *                       a service restarting, unhealthy or quarantined, or the
 *                       admin server above 80 % of its connection/inflight caps
 *   GET /version        version, commit, build type, dependency versions
 *   GET /admin/status            what `ron status` prints (plus "dumpable":
 *                                false in amnesia, PR_GET_DUMPABLE)
 *   POST /admin/reload           what SIGHUP does
 *   POST /admin/release/<svc>    lift a quarantine
 * The /admin/ routes answer only loopback peers until capabilities arrive
 * (a later issue): anything else gets 403.
 * Invariants: every answer goes through tx_respond*, so limits, timeouts and
 * the error envelope apply to every route; a 503 carries Retry-After.
 */
#include <arpa/inet.h>
#include <blake3.h>
#include <http_parser.h>
#include <jansson.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <zstd.h>

#include "mn_internal.h"
#include "ron_build_info.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_transport.h"
#include "ron_util.h"

/* Writes stop being ready above this share of max_conns or max_inflight. */
#define MN_WRITE_INFLIGHT_PCT 80u

struct mn_admin {
    mn_node_t *node;
    tx_server_t *srv;
    char addr[TX_ADDR_MAX];
    met_family_t *rejects;
    met_counter_t *reject_ctr[TX_REJECT__COUNT];
    uint64_t reject_seen[TX_REJECT__COUNT];
    met_gauge_t *conns;
    met_gauge_t *inflight;
    met_family_t *svc_up;
    met_family_t *svc_healthy;
    met_family_t *svc_quarantined;
};

static const char *const svc_label[] = {"service"};
static const met_desc_t desc_up = {MET_GAUGE, "service_up",
                                   "1 when the service's process is running.", svc_label, 1};
static const met_desc_t desc_healthy = {MET_GAUGE, "service_healthy",
                                        "1 when the service answers heartbeats.", svc_label, 1};
static const met_desc_t desc_quarantined = {MET_GAUGE, "service_quarantined",
                                            "1 while the service is quarantined.", svc_label, 1};

static const tx_header_t json_hdr[] = {{"Content-Type", "application/json"}};

static void
respond_json(tx_request_t *req, int status, json_t *body, uint64_t retry_after_s)
{
    char *txt = json_dumps(body, JSON_COMPACT);
    char ra[24];
    tx_header_t h[2] = {json_hdr[0], {"Retry-After", ra}};
    if (txt == NULL)
        abort(); /* jansson fails only on OOM */
    snprintf(ra, sizeof ra, "%llu", (unsigned long long)retry_after_s);
    tx_respond(req, status, h, retry_after_s > 0 ? 2 : 1, txt, strlen(txt));
    free(txt);
}

static bool
peer_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss == NULL)
        return false;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

/* ---- readiness ---- */

typedef struct {
    bool read;
    bool write;
    char why[160]; /* reason the weaker of the two is false */
} readiness_t;

static void
readiness(mn_admin_t *a, readiness_t *r)
{
    mn_node_t *n = a->node;
    const tx_stats_t *st = tx_server_stats(a->srv);
    const tx_config_t *tc = tx_server_config(a->srv);
    size_t count = mn__node_service_count(n), serving = 0;

    r->read = r->write = true;
    r->why[0] = '\0';
    if (mn__node_stopping(n)) {
        r->read = r->write = false;
        snprintf(r->why, sizeof r->why, "shutting down");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        mn_svc_info_t info;
        mn__node_service_info(n, i, &info);
        /* a process that runs or is coming back can still serve reads */
        if (info.state == MN_SVC_RUNNING || info.state == MN_SVC_STARTING ||
            info.state == MN_SVC_RESTARTING)
            serving++;
        if (!(info.state == MN_SVC_RUNNING && info.healthy) && r->write) {
            r->write = false;
            snprintf(r->why, sizeof r->why, "service %s %s", info.name,
                     info.state == MN_SVC_RUNNING ? "unhealthy" : mn__svc_state_name(info.state));
        }
    }
    if (count > 0 && serving == 0) {
        r->read = false;
        snprintf(r->why, sizeof r->why, "no service can serve (all quarantined or stopped)");
    }
    if (r->write && st->inflight * 100 >= (uint64_t)tc->max_inflight * MN_WRITE_INFLIGHT_PCT) {
        r->write = false;
        snprintf(r->why, sizeof r->why, "overloaded: %llu requests in flight",
                 (unsigned long long)st->inflight);
    }
    if (r->write && st->conns_active * 100 >= (uint64_t)tc->max_conns * MN_WRITE_INFLIGHT_PCT) {
        r->write = false;
        snprintf(r->why, sizeof r->why, "overloaded: %llu connections",
                 (unsigned long long)st->conns_active);
    }
}

static void
route_readyz(mn_admin_t *a, tx_request_t *req, bool write)
{
    readiness_t r;
    json_t *b;
    bool ok;
    readiness(a, &r);
    ok = write ? r.write : r.read;
    b = json_pack("{s:b, s:s}", "ready", ok, "mode", write ? "write" : "read");
    if (!ok)
        json_object_set_new(b, "reason", json_string(r.why));
    respond_json(req, ok ? 200 : 503, b,
                 ok ? 0 : mn__node_config(a->node)->readiness_retry_after_s);
    json_decref(b);
}

static void
route_healthz(mn_admin_t *a, tx_request_t *req)
{
    mn_node_t *n = a->node;
    json_t *bad = json_array(), *b;
    size_t count = mn__node_service_count(n);
    bool ok;
    for (size_t i = 0; i < count; i++) {
        mn_svc_info_t info;
        mn__node_service_info(n, i, &info);
        if (!(info.state == MN_SVC_RUNNING && info.healthy))
            json_array_append_new(bad, json_string(info.name));
    }
    ok = json_array_size(bad) == 0 && !mn__node_stopping(n);
    b = json_pack("{s:s}", "status", ok ? "ok" : "unhealthy");
    if (!ok)
        json_object_set(b, "unhealthy", bad);
    respond_json(req, ok ? 200 : 503, b, ok ? 0 : mn__node_config(n)->readiness_retry_after_s);
    json_decref(bad);
    json_decref(b);
}

/* ---- metrics ---- */

static void
admin_update_metrics(mn_admin_t *a)
{
    const tx_stats_t *st = tx_server_stats(a->srv);
    for (int i = 0; i < TX_REJECT__COUNT; i++) {
        if (st->rejects[i] > a->reject_seen[i]) {
            met_counter_add(a->reject_ctr[i], st->rejects[i] - a->reject_seen[i]);
            a->reject_seen[i] = st->rejects[i];
        }
    }
    met_gauge_set(a->conns, (double)st->conns_active);
    met_gauge_set(a->inflight, (double)st->inflight);
}

static void
route_metrics(mn_admin_t *a, tx_request_t *req)
{
    mn_node_t *n = a->node;
    met_registry_t *reg;
    met_merge_t *m = met_merge_new();
    char *text = NULL, *out = NULL;
    size_t len = 0, out_len = 0;
    size_t count = mn__node_service_count(n);
    static const tx_header_t h[] = {{"Content-Type", MET_CONTENT_TYPE}};

    admin_update_metrics(a);
    reg = mn__node_registry(n);
    /* per-service gauges, set at each scrape from the supervisor's view */
    for (size_t i = 0; i < count; i++) {
        mn_svc_info_t info;
        const char *v[1];
        mn__node_service_info(n, i, &info);
        v[0] = info.name;
        met_gauge_set(met_family_gauge(a->svc_up, v), info.pid != 0 ? 1 : 0);
        met_gauge_set(met_family_gauge(a->svc_healthy, v), info.healthy ? 1 : 0);
        met_gauge_set(met_family_gauge(a->svc_quarantined, v),
                      info.state == MN_SVC_QUARANTINED ? 1 : 0);
    }
    met_registry_render(reg, &text, &len);
    met_merge_add(m, NULL, text, len, NULL);
    mn__sup_metrics(mn__node_sup(n), m);
    met_merge_render(m, &out, &out_len);
    tx_respond(req, 200, h, 1, out, out_len);
    free(out);
    free(text);
    met_merge_free(m);
}

/* ---- version and status ---- */

static void
route_version(tx_request_t *req)
{
    char hp[32];
    unsigned long v = http_parser_version();
    json_t *b;
    snprintf(hp, sizeof hp, "%lu.%lu.%lu", (v >> 16) & 255, (v >> 8) & 255, v & 255);
    b = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}}", "version",
                  RON_VERSION_STRING, "git_commit", RON_GIT_COMMIT, "build_type", RON_BUILD_TYPE,
                  "dependencies", "libuv", uv_version_string(), "openssl",
                  OpenSSL_version(OPENSSL_VERSION), "jansson", jansson_version_str(), "zstd",
                  ZSTD_versionString(), "libsodium", sodium_version_string(), "blake3",
                  blake3_version(), "http-parser", hp, "nghttp2", nghttp2_version(0)->version_str);
    respond_json(req, 200, b, 0);
    json_decref(b);
}

static json_t *
status_json(mn_admin_t *a)
{
    mn_node_t *n = a->node;
    const ron_config_t *cfg = mn__node_config(n);
    json_t *svcs = json_array(), *b;
    readiness_t r;
    char ver[24];
    size_t count = mn__node_service_count(n);

    readiness(a, &r);
    for (size_t i = 0; i < count; i++) {
        mn_svc_info_t info;
        char cv[24];
        mn__node_service_info(n, i, &info);
        snprintf(cv, sizeof cv, "%llu", (unsigned long long)info.config_version);
        json_array_append_new(
            svcs, json_pack("{s:s, s:i, s:s, s:b, s:I, s:i, s:s, s:s, s:s}", "name", info.name,
                            "pid", info.pid, "state", mn__svc_state_name(info.state), "healthy",
                            info.healthy, "restarts", (json_int_t)info.restarts, "crash_streak",
                            (int)info.crash_streak, "config_version", cv, "last_exit",
                            info.last_exit, "listen", info.listen_addr));
    }
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)cfg->version);
    b = json_pack("{s:o, s:s, s:s, s:s, s:I, s:b, s:{s:b, s:b}, s:o}", "node_id",
                  mn__node_id(n) != NULL ? json_string(mn__node_id(n)) : json_null(), "profile",
                  cfg->profile == RON_PROFILE_MICRO ? "micro" : "macro", "version",
                  RON_VERSION_STRING, "config_version", ver, "uptime_ms",
                  (json_int_t)mn__node_uptime_ms(n), "amnesia", ron_config_amnesia(cfg), "ready",
                  "read", r.read, "write", r.write, "services", svcs);
    json_object_set_new(b, "dumpable", json_boolean(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1));
    if (!r.write)
        json_object_set_new(b, "not_ready_reason", json_string(r.why));
    return b;
}

static void
reload_answer(void *arg, int rc, bool changed, uint64_t version, const char *err)
{
    tx_request_t *req = arg;
    char ver[24];
    json_t *b;
    if (rc < 0) {
        tx_respond_error(req, rc == RON_ESHUTDOWN ? 503 : 400, err, "config_rejected",
                         rc == RON_ESHUTDOWN ? 1 : 0);
        return;
    }
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)version);
    b = json_pack("{s:b, s:s}", "changed", changed, "version", ver);
    respond_json(req, 200, b, 0);
    json_decref(b);
}

static void
route_reload(mn_admin_t *a, tx_request_t *req)
{
    int rc = mn__node_reload(a->node, reload_answer, req);
    if (rc == RON_EBUSY)
        tx_respond_error(req, 503, "a reload is in progress", "reload_in_progress", 1);
    else if (rc < 0)
        tx_respond_error(req, 503, "node is shutting down", NULL, 1);
}

/* Lift name's quarantine: 0, RON_ENOTFOUND, or RON_EINVAL (not quarantined). */
static int
admin_release(mn_admin_t *a, const char *name)
{
    mn_sup_t *s = mn__node_sup(a->node);
    return s != NULL ? mn__sup_release(s, name) : RON_ENOTFOUND;
}

static void
route_release(mn_admin_t *a, tx_request_t *req, const char *name)
{
    int rc = admin_release(a, name);
    json_t *b;
    if (rc == RON_ENOTFOUND) {
        tx_respond_error(req, 404, "no such supervised service", NULL, 0);
        return;
    }
    if (rc < 0) {
        tx_respond_error(req, 409, "service is not quarantined", NULL, 0);
        return;
    }
    b = json_pack("{s:s}", "released", name);
    respond_json(req, 200, b, 0);
    json_decref(b);
}

/* ---- the same operations over ron-bus (the app port's kernel protocol) ---- */

static void
bus_respond_json(rbus_req_t *req, json_t *body)
{
    char *txt = json_dumps(body, JSON_COMPACT);
    if (txt == NULL)
        abort(); /* jansson fails only on OOM */
    rbus_respond(req, 200, txt, strlen(txt));
    free(txt);
}

static void
bus_reload_answer(void *arg, int rc, bool changed, uint64_t version, const char *err)
{
    rbus_req_t *req = arg;
    char ver[24];
    json_t *b;
    if (rc < 0) {
        rbus_respond_error_ex(req, rc == RON_ESHUTDOWN ? 503 : 400, NULL, "config_rejected",
                              rc == RON_ESHUTDOWN ? 1000 : 0, err);
        return;
    }
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)version);
    b = json_pack("{s:b, s:s}", "changed", changed, "version", ver);
    bus_respond_json(req, b);
    json_decref(b);
}

void
mn__admin_bus_op(mn_admin_t *a, rbus_req_t *req, const char *op, const char *target)
{
    json_t *b;
    int rc;

    if (strcmp(op, "status") == 0) {
        b = status_json(a);
        bus_respond_json(req, b);
        json_decref(b);
    } else if (strcmp(op, "reload") == 0) {
        rc = mn__node_reload(a->node, bus_reload_answer, req);
        if (rc == RON_EBUSY)
            rbus_respond_error_ex(req, 503, NULL, "reload_in_progress", 1000,
                                  "a reload is in progress");
        else if (rc < 0)
            rbus_respond_error_ex(req, 503, NULL, NULL, 1000, "node is shutting down");
    } else if (strcmp(op, "release") == 0) {
        rc = target != NULL ? admin_release(a, target) : RON_EINVAL;
        if (target == NULL)
            rbus_respond_error_ex(req, 400, NULL, "service", 0, "service: missing");
        else if (rc == RON_ENOTFOUND)
            rbus_respond_error_ex(req, 404, NULL, NULL, 0, "no such supervised service");
        else if (rc < 0)
            rbus_respond_error_ex(req, 409, NULL, NULL, 0, "service is not quarantined");
        else
            rbus_respond(req, 200, "{}", 2);
    } else {
        rbus_respond_error(req, 400, "unknown op");
    }
}

static void
admin_handle(tx_request_t *req, void *arg)
{
    mn_admin_t *a = arg;
    const tx_request_view_t *v = tx_request_view(req);
    bool get = strcmp(v->method, "GET") == 0 || strcmp(v->method, "HEAD") == 0;
    bool post = strcmp(v->method, "POST") == 0;
    const char *p = v->path;

    if (strncmp(p, "/admin/", 7) == 0) {
        if (!peer_is_loopback(v->peer)) {
            tx_respond_error(req, 403, "admin routes answer loopback only", NULL, 0);
        } else if (strcmp(p, "/admin/status") == 0 && get) {
            json_t *b = status_json(a);
            respond_json(req, 200, b, 0);
            json_decref(b);
        } else if (strcmp(p, "/admin/reload") == 0 && post) {
            route_reload(a, req);
        } else if (strncmp(p, "/admin/release/", 15) == 0 && post && p[15] != '\0') {
            route_release(a, req, p + 15);
        } else {
            bool known = strcmp(p, "/admin/status") == 0 || strcmp(p, "/admin/reload") == 0 ||
                         strncmp(p, "/admin/release/", 15) == 0;
            tx_respond_error(req, known ? 405 : 404, NULL, NULL, 0);
        }
        return;
    }
    if (strcmp(p, "/metrics") != 0 && strcmp(p, "/healthz") != 0 && strcmp(p, "/readyz") != 0 &&
        strcmp(p, "/version") != 0) {
        tx_respond_error(req, 404, NULL, NULL, 0);
    } else if (!get) {
        tx_respond_error(req, 405, NULL, NULL, 0);
    } else if (strcmp(p, "/metrics") == 0) {
        route_metrics(a, req);
    } else if (strcmp(p, "/healthz") == 0) {
        route_healthz(a, req);
    } else if (strcmp(p, "/readyz") == 0) {
        route_readyz(a, req, strstr(v->query, "write=1") != NULL);
    } else {
        route_version(req);
    }
}

mn_admin_t *
mn__admin_new(uv_loop_t *loop, mn_node_t *node, const ron_config_t *cfg, char *err, size_t errcap)
{
    mn_admin_t *a = ron_xcalloc(1, sizeof *a);
    const ron_config_http_limits_t *l = &cfg->admin_limits;
    met_registry_t *reg = mn__node_registry(node);
    static const char *const lab[] = {"reason"};
    met_desc_t rej = {MET_COUNTER,
                      "admin_http_rejected_total",
                      "Admin port requests or connections refused by the hardening layer.",
                      lab,
                      1,
                      NULL,
                      0,
                      0};
    tx_listener_t *lis = NULL;
    tx_config_t tc;
    int rc;

    a->node = node;
    tx_config_default(&tc);
    tc.max_conns = (uint32_t)l->max_conns;
    tc.max_inflight = (uint32_t)l->max_inflight;
    tc.rate_rps = (uint32_t)l->rate_rps;
    tc.rate_burst = (uint32_t)l->rate_burst;
    tc.header_timeout_ms = (uint32_t)l->header_timeout_ms;
    tc.body_timeout_ms = (uint32_t)l->body_timeout_ms;
    tc.idle_timeout_ms = (uint32_t)l->idle_timeout_ms;
    tc.max_body = (uint32_t)l->max_body;
    tc.max_header_bytes = (uint32_t)l->max_header;
    tc.retry_after_s = (uint32_t)cfg->readiness_retry_after_s;
    rc = tx_listener_bind(loop, cfg->admin, &lis);
    if (rc < 0) {
        snprintf(err, errcap, "admin port %s: %s", cfg->admin, ron_strerror(rc));
        free(a);
        return NULL;
    }
    tx_listener_addr(lis, a->addr);
    a->srv = tx_server_new(loop, &tc, admin_handle, a);
    if ((rc = tx_server_attach(a->srv, lis)) < 0) {
        snprintf(err, errcap, "admin port %s: %s", cfg->admin, ron_strerror(rc));
        tx_server_close(a->srv, NULL, NULL);
        free(a);
        return NULL;
    }
    met_family_register(reg, &rej, &a->rejects);
    for (int i = 0; i < TX_REJECT__COUNT; i++)
        a->reject_ctr[i] =
            met_family_counter(a->rejects, (const char *const[]){tx_reject_name((tx_reject_t)i)});
    met_gauge_register(reg, "admin_http_connections", "Open admin port connections.", &a->conns);
    met_gauge_register(reg, "admin_http_inflight_requests", "Admin requests being handled.",
                       &a->inflight);
    met_family_register(reg, &desc_up, &a->svc_up);
    met_family_register(reg, &desc_healthy, &a->svc_healthy);
    met_family_register(reg, &desc_quarantined, &a->svc_quarantined);
    return a;
}

const char *
mn__admin_addr(const mn_admin_t *a)
{
    return a->addr;
}

static void
admin_closed(void *arg)
{
    free(arg);
}

void
mn__admin_close(mn_admin_t *a)
{
    if (a == NULL)
        return;
    tx_server_close(a->srv, admin_closed, a);
}
