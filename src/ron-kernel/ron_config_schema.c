/*
 * ron_config_schema.c - the key table (name, type, bounds, reloadability and
 * the one-line doc `ron config keys` prints), the defaults of every key, and
 * the lookups over the table (by path, by section, the RON_* variable name).
 * Invariant: each key's bounds here are the ones every source is checked
 * against; the defaults satisfy them (ron_config_validate accepts them).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_config_internal.h"

static const char *const profile_choices[] = {"macro", "micro", NULL};
static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};

#define SZ(f) sizeof(((ron_config_t *)0)->f)
/* clang-format off */
#define U64K(p, f, lo, hi, rl, doc) \
    {{p, "u64", rl, doc}, CFG_K_U64, CFG_OFF(f), 0, 0, 0, lo, hi, false, NULL}
#define ADDRK(p, f, o, rl, doc) \
    {{p, "address", rl, doc}, CFG_K_ADDR, CFG_OFF(f), SZ(f), 0, 0, 0, 0, o, NULL}
/* The hardening knobs of one HTTP listener (ron_config_http_limits_t). f is
 * a member path (OFF(f.x)): it cannot be parenthesized. */
/* NOLINTBEGIN(bugprone-macro-parentheses) */
#define HTTP_LIMIT_KEYS(g, f, who) \
    U64K(g ".max_conns", f.max_conns, 1, 1000000, false, who ": open connections at once"), \
    U64K(g ".max_inflight", f.max_inflight, 1, 1000000, false, who ": requests in flight"), \
    U64K(g ".rate_rps", f.rate_rps, 1, 10000000, false, who ": requests per second per source"), \
    U64K(g ".rate_burst", f.rate_burst, 1, 10000000, false, who ": token bucket depth per source"), \
    U64K(g ".header_timeout_ms", f.header_timeout_ms, 100, 600000, false, \
         who ": request head deadline"), \
    U64K(g ".body_timeout_ms", f.body_timeout_ms, 100, 600000, false, \
         who ": request body deadline"), \
    U64K(g ".idle_timeout_ms", f.idle_timeout_ms, 100, 600000, false, \
         who ": keep-alive idle deadline"), \
    U64K(g ".max_body", f.max_body, 1024, 64u << 20, false, \
         who ": buffered (non-streamed) body cap in bytes"), \
    U64K(g ".max_header", f.max_header, 1024, 1u << 20, false, who ": request head cap in bytes")
/* NOLINTEND(bugprone-macro-parentheses) */
/* clang-format on */

/* One entry per key; the formatter's one-field-per-line layout would hide that. */
/* clang-format off */
const cfg_key_t cfg__keys[] = {
    {{"profile", "enum", false, "macro (one process per service) or micro (one process)"},
     CFG_K_ENUM, CFG_OFF(profile), 0, 0, 0, 0, 0, false, profile_choices},
    {{"data_dir", "string", false,
      "data directory (default $RON_DATA_DIR, $XDG_DATA_HOME/ron, ~/.local/share/ron)"},
     CFG_K_PATH, CFG_OFF(data_dir), SZ(data_dir), 0, 0, 0, 0, false, NULL},
    {{"amnesia", "bool", false, "RAM only, nothing on disk (default: on for micro, off for macro)"},
     CFG_K_BOOL, CFG_OFF(amnesia), 0, 0, 0, 0, 0, false, NULL},
    ADDRK("admin", admin, false, false, "admin port: /metrics /healthz /readyz /version"),
    ADDRK("http", http, false, false, "gateway HTTP listener"),
    ADDRK("https", https, true, false, "gateway HTTPS listener (empty: none; opt-in)"),
    {{"https_cert", "string", false, "gateway HTTPS certificate chain, PEM (empty: generated)"},
     CFG_K_PATH, CFG_OFF(https_cert), SZ(https_cert), 0, 0, 0, 0, true, NULL},
    {{"https_key", "string", false, "gateway HTTPS private key, PEM (with https_cert)"},
     CFG_K_PATH, CFG_OFF(https_key), SZ(https_key), 0, 0, 0, 0, true, NULL},
    ADDRK("app", app, false, false, "app OAP/1 listener"),
    ADDRK("overlay", overlay, false, false, "overlay TCP listener"),
    ADDRK("dht", dht, false, false, "DHT UDP socket"),
    ADDRK("advertise", advertise, true, false, "address peers should dial (empty: the listener's)"),
    {{"seeds", "list", false, "DHT bootstrap seeds, [ID@]HOST:PORT (env: comma-separated)"},
     CFG_K_LIST, CFG_OFF(seeds), SZ(seeds[0]), RON_CONFIG_MAX_SEEDS, CFG_OFF(n_seeds), 0, 0, true, NULL},
    {{"log.level", "enum", true, "debug, info, warn or error"},
     CFG_K_ENUM, CFG_OFF(log_level), SZ(log_level), 0, 0, 0, 0, false, level_choices},
    U64K("bus.capacity", bus_capacity, 16, 1u << 20, false, "kernel event bus capacity (events)"),
    HTTP_LIMIT_KEYS("admin_limits", admin_limits, "admin port"),
    HTTP_LIMIT_KEYS("gateway_limits", gateway_limits, "gateway HTTP(S)"),
    U64K("readiness.retry_after_s", readiness_retry_after_s, 1, 3600, true,
         "Retry-After seconds on a 503 from /readyz and /healthz"),
    U64K("supervisor.backoff_initial_ms", supervisor.backoff_initial_ms, 1, 60000, false,
         "first restart delay"),
    U64K("supervisor.backoff_max_ms", supervisor.backoff_max_ms, 1, 3600000, false,
         "restart delay cap"),
    U64K("supervisor.healthy_reset_ms", supervisor.healthy_reset_ms, 100, 3600000, false,
         "healthy running time that resets the backoff"),
    U64K("supervisor.quarantine_crashes", supervisor.quarantine_crashes, 1,
         RON_RESTART_MAX_QUARANTINE, false,
         "crashes within the window that quarantine a service"),
    U64K("supervisor.quarantine_window_ms", supervisor.quarantine_window_ms, 1000, 3600000, false,
         "sliding crash window"),
    U64K("supervisor.heartbeat_ms", supervisor.heartbeat_ms, 50, 60000, true,
         "child heartbeat period"),
    U64K("supervisor.unhealthy_after_ms", supervisor.unhealthy_after_ms, 100, 600000, true,
         "heartbeat silence after which a child is unhealthy"),
    U64K("supervisor.stop_timeout_ms", supervisor.stop_timeout_ms, 100, 1500, true,
         "budget to stop all children before SIGKILL (the node exits within 2 s)"),
    {{"services", "list", false, "services the kernel runs, in start order (env: comma-separated)"},
     CFG_K_LIST, CFG_OFF(services), SZ(services[0]), RON_CONFIG_MAX_SERVICES, CFG_OFF(n_services), 0, 0, true,
     NULL},
    ADDRK("echo.addr", echo_addr, true, false, "echo service TCP listener (empty: none)"),
    {{"echo.banner", "string", true, "line the echo service sends each new connection"},
     CFG_K_STR, CFG_OFF(echo_banner), SZ(echo_banner), 0, 0, 0, 0, true, NULL},
    {{"policy_file", "string", true,
      "policy bundle JSON every enforcing process uses (empty: the shipped default)"},
     CFG_K_PATH, CFG_OFF(policy_file), SZ(policy_file), 0, 0, 0, 0, true, NULL},
    U64K("auth_rotate_every_s", auth_rotate_every_s, 1, 30 * 86400, false,
         "seconds a capability key generation stays current (at most 30 days)"),
    U64K("auth_grace_s", auth_grace_s, 1, 30 * 86400, false,
         "seconds a replaced capability key generation keeps verifying"),
};

const size_t cfg__n_keys = RON_ARRAY_LEN(cfg__keys);

void
cfg__errf(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

const ron_config_key_info_t *
ron_config_key_at(size_t i)
{
    return i < cfg__n_keys ? &cfg__keys[i].info : NULL;
}

const cfg_key_t *
cfg__key_find(const char *path)
{
    for (size_t i = 0; i < cfg__n_keys; i++)
        if (strcmp(cfg__keys[i].info.path, path) == 0)
            return &cfg__keys[i];
    return NULL;
}

/* Is prefix (e.g. "admin_limits") the object part of some key path? */
bool
cfg__key_is_section(const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < cfg__n_keys; i++)
        if (strncmp(cfg__keys[i].info.path, prefix, n) == 0 && cfg__keys[i].info.path[n] == '.')
            return true;
    return false;
}

void
ron_config_env_name(const char *path, char *out, size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return;
    for (const char *p = "RON_"; *p != '\0' && n + 1 < cap; p++)
        out[n++] = *p;
    for (const char *p = path; *p != '\0' && n + 1 < cap; p++) {
        char c = *p;
        if (c == '.' || c == '-')
            c = '_';
        else if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        out[n++] = c;
    }
    out[n] = '\0';
}

const char *
cfg__env_value(const char *name, const char *entry)
{
    size_t nl = strlen(name);
    return strncmp(entry, name, nl) == 0 && entry[nl] == '=' ? entry + nl + 1 : NULL;
}

static void
default_data_dir(char *out, size_t cap)
{
    const char *e = getenv("RON_DATA_DIR");
    const char *x = getenv("XDG_DATA_HOME");
    const char *h = getenv("HOME");
    if (e != NULL && e[0] != '\0')
        snprintf(out, cap, "%s", e);
    else if (x != NULL && x[0] != '\0')
        snprintf(out, cap, "%s/ron", x);
    else
        snprintf(out, cap, "%s/.local/share/ron", h != NULL && h[0] != '\0' ? h : ".");
}

void
ron_config_defaults(ron_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->profile = RON_PROFILE_MACRO;
    default_data_dir(cfg->data_dir, sizeof cfg->data_dir);
    snprintf(cfg->admin, sizeof cfg->admin, "127.0.0.1:8080");
    snprintf(cfg->http, sizeof cfg->http, "127.0.0.1:8090");
    cfg->https[0] = '\0'; /* opt-in: --https ADDR (conventionally 127.0.0.1:8443) */
    snprintf(cfg->app, sizeof cfg->app, "127.0.0.1:9090");
    snprintf(cfg->overlay, sizeof cfg->overlay, "0.0.0.0:5301");
    snprintf(cfg->dht, sizeof cfg->dht, "0.0.0.0:5302");
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    cfg->bus_capacity = 4096;
    cfg->admin_limits = (ron_config_http_limits_t){
        .max_conns = 1024,
        .max_inflight = 512,
        .rate_rps = 500,
        .rate_burst = 500,
        .header_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .max_body = 1u << 20,
        .max_header = 16u << 10,
    };
    cfg->gateway_limits = cfg->admin_limits;
    cfg->readiness_retry_after_s = 1;
    cfg->auth_rotate_every_s = 30 * 86400; /* GUARD_ROTATE_EVERY */
    cfg->auth_grace_s = 7 * 86400;         /* GUARD_GRACE_DEFAULT */
    cfg->supervisor = (ron_config_supervisor_t){
        .backoff_initial_ms = 100,
        .backoff_max_ms = 30000,
        .healthy_reset_ms = 10000,
        .quarantine_crashes = 6,
        .quarantine_window_ms = 60000,
        .heartbeat_ms = 500,
        .unhealthy_after_ms = 1500,
        .stop_timeout_ms = 1500,
    };
    /* out of the box a node serves content (store, names, HTTP, the app port)
     * and joins the peer network (DHT, overlay) */
    static const char *const dflt[] = {"storage", "index", "gateway", "app", "dht", "overlay"};
    for (size_t i = 0; i < sizeof dflt / sizeof dflt[0]; i++)
        snprintf(cfg->services[i], sizeof cfg->services[i], "%s", dflt[i]);
    cfg->n_services = sizeof dflt / sizeof dflt[0];
    snprintf(cfg->echo_banner, sizeof cfg->echo_banner, "ron echo");
}
