/*
 * ron_config.c - configuration snapshots: schema table, defaults, strict JSON
 * file loading, RON_* environment, command-line overrides, validation, diff,
 * and the reload store with rollback.
 * Invariants: a snapshot handed out by the store is never modified; every key
 * of the file format, the environment and the flags goes through the same
 * setter (cfg_set_json / ron_config_set), so the three sources cannot
 * disagree about types or ranges.
 */
#include "ron_config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ron_err.h"
#include "ron_kernel.h"
#include "ron_util.h"

typedef enum {
    K_STR,  /* free text */
    K_PATH, /* filesystem path */
    K_ADDR, /* host:port, may be empty when opt */
    K_U64,  /* integer in [min, max] */
    K_BOOL,
    K_ENUM, /* one of choices */
    K_LIST, /* list of names or seeds */
} kind_t;

typedef struct {
    ron_config_key_info_t info;
    kind_t kind;
    size_t off;   /* offset in ron_config_t */
    size_t cap;   /* bytes of a string field, or of one list element */
    size_t max_n; /* list: element count bound */
    size_t n_off; /* list: offset of the count */
    uint64_t min, max;
    bool opt; /* string/address may be empty */
    const char *const *choices;
} cfg_key_t;

static const char *const profile_choices[] = {"macro", "micro", NULL};
static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};

#define OFF(f) offsetof(ron_config_t, f)
#define SZ(f) sizeof(((ron_config_t *)0)->f)
/* clang-format off */
#define U64K(p, f, lo, hi, rl, doc) \
    {{p, "u64", rl, doc}, K_U64, OFF(f), 0, 0, 0, lo, hi, false, NULL}
#define ADDRK(p, f, o, rl, doc) \
    {{p, "address", rl, doc}, K_ADDR, OFF(f), SZ(f), 0, 0, 0, 0, o, NULL}
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
static const cfg_key_t keys[] = {
    {{"profile", "enum", false, "macro (one process per service) or micro (one process)"},
     K_ENUM, OFF(profile), 0, 0, 0, 0, 0, false, profile_choices},
    {{"data_dir", "string", false,
      "data directory (default $RON_DATA_DIR, $XDG_DATA_HOME/ron, ~/.local/share/ron)"},
     K_PATH, OFF(data_dir), SZ(data_dir), 0, 0, 0, 0, false, NULL},
    {{"amnesia", "bool", false, "RAM only, nothing on disk (default: on for micro, off for macro)"},
     K_BOOL, OFF(amnesia), 0, 0, 0, 0, 0, false, NULL},
    ADDRK("admin", admin, false, false, "admin port: /metrics /healthz /readyz /version"),
    ADDRK("http", http, false, false, "gateway HTTP listener"),
    ADDRK("https", https, true, false, "gateway HTTPS listener (empty: none; opt-in)"),
    {{"https_cert", "string", false, "gateway HTTPS certificate chain, PEM (empty: generated)"},
     K_PATH, OFF(https_cert), SZ(https_cert), 0, 0, 0, 0, true, NULL},
    {{"https_key", "string", false, "gateway HTTPS private key, PEM (with https_cert)"},
     K_PATH, OFF(https_key), SZ(https_key), 0, 0, 0, 0, true, NULL},
    ADDRK("app", app, false, false, "app OAP/1 listener"),
    ADDRK("overlay", overlay, false, false, "overlay TCP listener"),
    ADDRK("dht", dht, false, false, "DHT UDP socket"),
    ADDRK("advertise", advertise, true, false, "address peers should dial (empty: the listener's)"),
    {{"seeds", "list", false, "DHT bootstrap seeds, [ID@]HOST:PORT (env: comma-separated)"},
     K_LIST, OFF(seeds), SZ(seeds[0]), RON_CONFIG_MAX_SEEDS, OFF(n_seeds), 0, 0, true, NULL},
    {{"log.level", "enum", true, "debug, info, warn or error"},
     K_ENUM, OFF(log_level), SZ(log_level), 0, 0, 0, 0, false, level_choices},
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
     K_LIST, OFF(services), SZ(services[0]), RON_CONFIG_MAX_SERVICES, OFF(n_services), 0, 0, true,
     NULL},
    ADDRK("echo.addr", echo_addr, true, false, "echo service TCP listener (empty: none)"),
    {{"echo.banner", "string", true, "line the echo service sends each new connection"},
     K_STR, OFF(echo_banner), SZ(echo_banner), 0, 0, 0, 0, true, NULL},
    {{"policy_file", "string", true,
      "policy bundle JSON every enforcing process uses (empty: the shipped default)"},
     K_PATH, OFF(policy_file), SZ(policy_file), 0, 0, 0, 0, true, NULL},
    U64K("auth_rotate_every_s", auth_rotate_every_s, 1, 30 * 86400, false,
         "seconds a capability key generation stays current (at most 30 days)"),
    U64K("auth_grace_s", auth_grace_s, 1, 30 * 86400, false,
         "seconds a replaced capability key generation keeps verifying"),
};

#define N_KEYS RON_ARRAY_LEN(keys)

static void
errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
errf(char *err, size_t cap, const char *fmt, ...)
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
    return i < N_KEYS ? &keys[i].info : NULL;
}

static const cfg_key_t *
key_find(const char *path)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].info.path, path) == 0)
            return &keys[i];
    return NULL;
}

/* Is prefix (e.g. "admin_limits") the object part of some key path? */
static bool
key_is_section(const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < N_KEYS; i++)
        if (strncmp(keys[i].info.path, prefix, n) == 0 && keys[i].info.path[n] == '.')
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

/* ---- setting one key ---- */

static int
set_string(const cfg_key_t *k, ron_config_t *cfg, const char *v, char *err, size_t cap)
{
    char *dst = (char *)cfg + k->off;
    if (strlen(v) >= k->cap) {
        errf(err, cap, "key '%s': value longer than %zu bytes", k->info.path, k->cap - 1);
        return RON_ECONFIG;
    }
    for (const char *p = v; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20) {
            errf(err, cap, "key '%s': control character in value", k->info.path);
            return RON_ECONFIG;
        }
    memset(dst, 0, k->cap);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int
set_u64(const cfg_key_t *k, ron_config_t *cfg, uint64_t v, char *err, size_t cap)
{
    if (v < k->min || v > k->max) {
        errf(err, cap, "key '%s': %llu out of range [%llu, %llu]", k->info.path,
             (unsigned long long)v, (unsigned long long)k->min, (unsigned long long)k->max);
        return RON_ECONFIG;
    }
    *(uint64_t *)(void *)((char *)cfg + k->off) = v;
    return 0;
}

static int
set_enum(const cfg_key_t *k, ron_config_t *cfg, const char *v, char *err, size_t cap)
{
    for (size_t i = 0; k->choices[i] != NULL; i++) {
        if (strcmp(k->choices[i], v) != 0)
            continue;
        if (k->off == OFF(profile))
            cfg->profile = (ron_profile_t)i;
        else
            return set_string(k, cfg, v, err, cap);
        return 0;
    }
    errf(err, cap, "key '%s': '%s' is not one of the allowed values", k->info.path, v);
    return RON_ECONFIG;
}

static int
set_bool(const cfg_key_t *k, ron_config_t *cfg, bool v)
{
    (void)k;
    cfg->amnesia = v;
    cfg->amnesia_set = true;
    return 0;
}

static int
list_add(const cfg_key_t *k, ron_config_t *cfg, const char *v, size_t vlen, char *err, size_t cap)
{
    size_t *n = (size_t *)(void *)((char *)cfg + k->n_off);
    char *dst;
    if (*n >= k->max_n) {
        errf(err, cap, "key '%s': more than %zu entries", k->info.path, k->max_n);
        return RON_ECONFIG;
    }
    if (vlen == 0 || vlen >= k->cap) {
        errf(err, cap, "key '%s': entry empty or longer than %zu bytes", k->info.path, k->cap - 1);
        return RON_ECONFIG;
    }
    dst = (char *)cfg + k->off + *n * k->cap;
    memset(dst, 0, k->cap);
    memcpy(dst, v, vlen);
    (*n)++;
    return 0;
}

static void
list_clear(const cfg_key_t *k, ron_config_t *cfg)
{
    *(size_t *)(void *)((char *)cfg + k->n_off) = 0;
    memset((char *)cfg + k->off, 0, k->cap * k->max_n);
}

int
ron_config_set(ron_config_t *cfg, const char *path, const char *value, char *err, size_t cap)
{
    const cfg_key_t *k = key_find(path);
    uint64_t u;
    if (k == NULL) {
        errf(err, cap, "unknown key '%s'", path);
        return RON_ECONFIG;
    }
    switch (k->kind) {
    case K_STR:
    case K_PATH:
    case K_ADDR:
        return set_string(k, cfg, value, err, cap);
    case K_ENUM:
        return set_enum(k, cfg, value, err, cap);
    case K_U64:
        if (ron_parse_u64(value, strlen(value), &u) < 0) {
            errf(err, cap, "key '%s': '%s' is not an unsigned integer", path, value);
            return RON_ECONFIG;
        }
        return set_u64(k, cfg, u, err, cap);
    case K_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            return set_bool(k, cfg, true);
        if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            return set_bool(k, cfg, false);
        errf(err, cap, "key '%s': '%s' is not a boolean (true/false/1/0)", path, value);
        return RON_ECONFIG;
    case K_LIST: {
        list_clear(k, cfg);
        const char *p = value;
        while (*p != '\0') {
            const char *c = strchr(p, ',');
            size_t n = c != NULL ? (size_t)(c - p) : strlen(p);
            int rc = list_add(k, cfg, p, n, err, cap);
            if (rc < 0)
                return rc;
            p += n;
            if (*p == ',')
                p++;
        }
        return 0;
    }
    }
    return RON_ECONFIG;
}

/* Set key k from a JSON value, checking its JSON type. */
static int
cfg_set_json(ron_config_t *cfg, const cfg_key_t *k, json_t *v, char *err, size_t cap)
{
    switch (k->kind) {
    case K_STR:
    case K_PATH:
    case K_ADDR:
    case K_ENUM:
        if (!json_is_string(v))
            goto wrong;
        return k->kind == K_ENUM ? set_enum(k, cfg, json_string_value(v), err, cap)
                                 : set_string(k, cfg, json_string_value(v), err, cap);
    case K_U64:
        if (!json_is_integer(v))
            goto wrong;
        if (json_integer_value(v) < 0) {
            errf(err, cap, "key '%s': negative value", k->info.path);
            return RON_ECONFIG;
        }
        return set_u64(k, cfg, (uint64_t)json_integer_value(v), err, cap);
    case K_BOOL:
        if (!json_is_boolean(v))
            goto wrong;
        return set_bool(k, cfg, json_is_true(v));
    case K_LIST: {
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            goto wrong;
        list_clear(k, cfg);
        json_array_foreach(v, i, e) {
            int rc;
            if (!json_is_string(e)) {
                errf(err, cap, "key '%s': entry %zu is not a string", k->info.path, i);
                return RON_ECONFIG;
            }
            rc = list_add(k, cfg, json_string_value(e), strlen(json_string_value(e)), err, cap);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    }
wrong:
    errf(err, cap, "key '%s': expected %s", k->info.path,
         k->kind == K_U64 ? "an integer" : k->kind == K_BOOL ? "a boolean"
                                       : k->kind == K_LIST ? "an array of strings"
                                                           : "a string");
    return RON_ECONFIG;
}

/* Apply a JSON object whose keys live under prefix ("" for the top). */
static int
cfg_apply_object(ron_config_t *cfg, json_t *obj, const char *prefix, bool allow_version,
                 char *err, size_t cap)
{
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        char path[128];
        const cfg_key_t *k;
        int rc;
        if (snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", name) >=
            (int)sizeof path) {
            errf(err, cap, "unknown key '%.64s...'", path);
            return RON_ECONFIG;
        }
        if (allow_version && prefix[0] == '\0' && strcmp(name, "version") == 0)
            continue;
        k = key_find(path);
        if (k != NULL) {
            rc = cfg_set_json(cfg, k, v, err, cap);
        } else if (key_is_section(path)) {
            if (!json_is_object(v)) {
                errf(err, cap, "key '%s': expected an object", path);
                return RON_ECONFIG;
            }
            rc = cfg_apply_object(cfg, v, path, false, err, cap);
        } else {
            errf(err, cap, "unknown key '%s'", path);
            return RON_ECONFIG;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int
cfg_load_file(ron_config_t *cfg, const char *file, char *err, size_t cap)
{
    char *buf = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    struct stat st;
    ssize_t got = 0;
    int fd = -1, rc = 0;

    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = -errno;
        errf(err, cap, "config file %s: %s", file, strerror(errno));
        goto out;
    }
    if (st.st_size > RON_CONFIG_FILE_MAX) {
        rc = RON_ETOOBIG;
        errf(err, cap, "config file %s: larger than %d bytes", file, RON_CONFIG_FILE_MAX);
        goto out;
    }
    buf = ron_xmalloc((size_t)st.st_size + 1);
    while (got < st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)(st.st_size - got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : RON_ECONFIG;
            errf(err, cap, "config file %s: short read", file);
            goto out;
        }
        got += n;
    }
    root = json_loadb(buf, (size_t)got, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rc = RON_ECONFIG;
        errf(err, cap, "config file %s: line %d: %s", file, jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = RON_ECONFIG;
        errf(err, cap, "config file %s: top level must be an object", file);
        goto out;
    }
    {
        char kerr[RON_CONFIG_ERR_MAX];
        rc = cfg_apply_object(cfg, root, "", false, kerr, sizeof kerr);
        if (rc < 0)
            errf(err, cap, "config file %s: %s", file, kerr);
    }
out:
    json_decref(root);
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int
cfg_load_env(ron_config_t *cfg, char *const *envp, char *err, size_t cap)
{
    if (envp == NULL)
        return 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[96];
        size_t nl;
        ron_config_env_name(keys[i].info.path, name, sizeof name);
        nl = strlen(name);
        for (char *const *e = envp; *e != NULL; e++) {
            char kerr[RON_CONFIG_ERR_MAX];
            int rc;
            if (strncmp(*e, name, nl) != 0 || (*e)[nl] != '=')
                continue;
            rc = ron_config_set(cfg, keys[i].info.path, *e + nl + 1, kerr, sizeof kerr);
            if (rc < 0) {
                errf(err, cap, "environment %s: %s", name, kerr);
                return rc;
            }
        }
    }
    return 0;
}

int
ron_addr_split(const char *addr, char *host_out, size_t host_cap, int *port_out)
{
    const char *colon, *hs, *he;
    uint64_t port;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL || rb[1] != ':')
            return RON_EINVAL;
        hs = addr + 1, he = rb, colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return RON_EINVAL;
        hs = addr, he = colon;
    }
    if (he == hs || (size_t)(he - hs) >= host_cap)
        return RON_EINVAL;
    if (ron_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port > 65535)
        return RON_EINVAL;
    memcpy(host_out, hs, (size_t)(he - hs));
    host_out[he - hs] = '\0';
    *port_out = (int)port;
    return 0;
}

/* An address key must be a numeric IPv4/IPv6 literal with a port. */
static int
addr_check(const char *path, const char *addr, char *err, size_t cap)
{
    char host[RON_CONFIG_ADDR_MAX];
    unsigned char bin[16];
    int port;
    if (ron_addr_split(addr, host, sizeof host, &port) < 0 ||
        (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)) {
        errf(err, cap, "key '%s': '%s' is not an address (IPv4:port or [IPv6]:port)", path, addr);
        return RON_ECONFIG;
    }
    return 0;
}

/* A seed is [ID@]HOST:PORT; HOST may be a name. */
static int
seed_check(const char *seed, char *err, size_t cap)
{
    const char *at = strchr(seed, '@');
    const char *hp = at != NULL ? at + 1 : seed;
    char host[RON_CONFIG_ADDR_MAX];
    int port;
    if (at != NULL) {
        for (const char *p = seed; p < at; p++)
            if (!isalnum((unsigned char)*p) && *p != ':')
                goto bad;
        if (at == seed)
            goto bad;
    }
    if (ron_addr_split(hp, host, sizeof host, &port) < 0 || port == 0)
        goto bad;
    return 0;
bad:
    errf(err, cap, "key 'seeds': '%s' is not [ID@]HOST:PORT", seed);
    return RON_ECONFIG;
}

static bool
name_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
            return false;
    return true;
}

int
ron_config_validate(const ron_config_t *cfg, char *err, size_t cap)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key_t *k = &keys[i];
        const char *s = (const char *)cfg + k->off;
        if (k->kind == K_ADDR) {
            if (s[0] == '\0' && k->opt)
                continue;
            if (addr_check(k->info.path, s, err, cap) < 0)
                return RON_ECONFIG;
        } else if (k->kind == K_U64) {
            uint64_t v = *(const uint64_t *)(const void *)s;
            if (v < k->min || v > k->max) {
                errf(err, cap, "key '%s': out of range", k->info.path);
                return RON_ECONFIG;
            }
        }
    }
    if ((cfg->bus_capacity & (cfg->bus_capacity - 1)) != 0) {
        errf(err, cap, "key 'bus.capacity': %llu is not a power of two",
             (unsigned long long)cfg->bus_capacity);
        return RON_ECONFIG;
    }
    if (cfg->data_dir[0] == '\0') {
        errf(err, cap, "key 'data_dir': empty");
        return RON_ECONFIG;
    }
    for (size_t i = 0; i < cfg->n_seeds; i++)
        if (seed_check(cfg->seeds[i], err, cap) < 0)
            return RON_ECONFIG;
    for (size_t i = 0; i < cfg->n_services; i++) {
        if (!name_ok(cfg->services[i])) {
            errf(err, cap, "key 'services': '%s' is not a service name ([a-z0-9-]+)",
                 cfg->services[i]);
            return RON_ECONFIG;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->services[i], cfg->services[j]) == 0) {
                errf(err, cap, "key 'services': '%s' listed twice", cfg->services[i]);
                return RON_ECONFIG;
            }
    }
    if (cfg->supervisor.backoff_max_ms < cfg->supervisor.backoff_initial_ms) {
        errf(err, cap, "key 'supervisor.backoff_max_ms': below supervisor.backoff_initial_ms");
        return RON_ECONFIG;
    }
    if (cfg->supervisor.unhealthy_after_ms <= cfg->supervisor.heartbeat_ms) {
        errf(err, cap, "key 'supervisor.unhealthy_after_ms': must exceed supervisor.heartbeat_ms");
        return RON_ECONFIG;
    }
    if ((cfg->https_cert[0] == '\0') != (cfg->https_key[0] == '\0')) {
        errf(err, cap, "keys 'https_cert' and 'https_key': give both or neither");
        return RON_ECONFIG;
    }
    return 0;
}

bool
ron_config_amnesia(const ron_config_t *cfg)
{
    return cfg->amnesia_set ? cfg->amnesia : cfg->profile == RON_PROFILE_MICRO;
}

int
ron_config_build(const ron_config_src_t *src, ron_config_t *cfg_out, char *err, size_t cap)
{
    ron_config_t *cfg = ron_xmalloc(sizeof *cfg);
    int rc;

    ron_config_defaults(cfg);
    if (src->file != NULL && (rc = cfg_load_file(cfg, src->file, err, cap)) < 0)
        goto out;
    if ((rc = cfg_load_env(cfg, src->envp, err, cap)) < 0)
        goto out;
    for (size_t i = 0; i < src->n_flags; i++) {
        char kerr[RON_CONFIG_ERR_MAX];
        rc = ron_config_set(cfg, src->flags[i].path, src->flags[i].value, kerr, sizeof kerr);
        if (rc < 0) {
            errf(err, cap, "command line: %s", kerr);
            goto out;
        }
    }
    if ((rc = ron_config_validate(cfg, err, cap)) < 0)
        goto out;
    memcpy(cfg_out, cfg, sizeof *cfg);
out:
    free(cfg);
    return rc;
}

/* ---- diff and JSON ---- */

static bool
key_equal(const cfg_key_t *k, const ron_config_t *a, const ron_config_t *b)
{
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
    switch (k->kind) {
    case K_STR:
    case K_PATH:
    case K_ADDR:
        return strcmp(pa, pb) == 0;
    case K_ENUM:
        if (k->off == OFF(profile))
            return a->profile == b->profile;
        return strcmp(pa, pb) == 0;
    case K_U64:
        return *(const uint64_t *)(const void *)pa == *(const uint64_t *)(const void *)pb;
    case K_BOOL:
        return ron_config_amnesia(a) == ron_config_amnesia(b) && a->amnesia_set == b->amnesia_set;
    case K_LIST: {
        size_t na = *(const size_t *)(const void *)((const char *)a + k->n_off);
        size_t nb = *(const size_t *)(const void *)((const char *)b + k->n_off);
        if (na != nb)
            return false;
        for (size_t i = 0; i < na; i++)
            if (strcmp(pa + i * k->cap, pb + i * k->cap) != 0)
                return false;
        return true;
    }
    }
    return false;
}

size_t
ron_config_diff(const ron_config_t *a, const ron_config_t *b, const char **first_out,
                const char **restart_only_out)
{
    size_t n = 0;
    if (first_out != NULL)
        *first_out = NULL;
    if (restart_only_out != NULL)
        *restart_only_out = NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (key_equal(&keys[i], a, b))
            continue;
        if (n++ == 0 && first_out != NULL)
            *first_out = keys[i].info.path;
        if (!keys[i].info.reloadable && restart_only_out != NULL && *restart_only_out == NULL)
            *restart_only_out = keys[i].info.path;
    }
    return n;
}

/* Find or create the object for a dotted path's section inside root. */
static json_t *
json_section(json_t *root, const char *path, const char **leaf_out)
{
    const char *dot = strchr(path, '.');
    json_t *sec;
    char name[64];
    if (dot == NULL) {
        *leaf_out = path;
        return root;
    }
    snprintf(name, sizeof name, "%.*s", (int)(dot - path), path);
    sec = json_object_get(root, name);
    if (sec == NULL) {
        sec = json_object();
        json_object_set_new(root, name, sec);
    }
    *leaf_out = dot + 1;
    return sec;
}

char *
ron_config_to_json(const ron_config_t *cfg)
{
    json_t *root = json_object();
    char ver[24];
    char *out;

    snprintf(ver, sizeof ver, "%llu", (unsigned long long)cfg->version);
    json_object_set_new(root, "version", json_string(ver));
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key_t *k = &keys[i];
        const char *p = (const char *)cfg + k->off, *leaf;
        json_t *sec = json_section(root, k->info.path, &leaf), *v = NULL;
        switch (k->kind) {
        case K_STR:
        case K_PATH:
        case K_ADDR:
            v = json_string(p);
            break;
        case K_ENUM:
            v = json_string(k->off == OFF(profile) ? k->choices[cfg->profile] : p);
            break;
        case K_U64:
            v = json_integer((json_int_t) * (const uint64_t *)(const void *)p);
            break;
        case K_BOOL:
            if (cfg->amnesia_set)
                v = json_boolean(cfg->amnesia);
            break;
        case K_LIST: {
            size_t n = *(const size_t *)(const void *)((const char *)cfg + k->n_off);
            v = json_array();
            for (size_t j = 0; j < n; j++)
                json_array_append_new(v, json_string(p + j * k->cap));
            break;
        }
        }
        if (v != NULL)
            json_object_set_new(sec, leaf, v);
    }
    out = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (out == NULL)
        abort(); /* jansson fails only on OOM */
    return out;
}

int
ron_config_from_json(const char *json, size_t len, ron_config_t *cfg_out, char *err, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr), *ver;
    ron_config_t *cfg = ron_xmalloc(sizeof *cfg);
    uint64_t v = 0;
    int rc;

    ron_config_defaults(cfg);
    if (root == NULL || !json_is_object(root)) {
        errf(err, cap, "config snapshot: %s", root == NULL ? jerr.text : "not an object");
        rc = RON_EJSON;
        goto out;
    }
    ver = json_object_get(root, "version");
    if (ver == NULL || !json_is_string(ver) ||
        ron_parse_u64(json_string_value(ver), strlen(json_string_value(ver)), &v) < 0) {
        errf(err, cap, "config snapshot: key 'version': expected a decimal string");
        rc = RON_ECONFIG;
        goto out;
    }
    if ((rc = cfg_apply_object(cfg, root, "", true, err, cap)) < 0)
        goto out;
    if ((rc = ron_config_validate(cfg, err, cap)) < 0)
        goto out;
    cfg->version = v;
    memcpy(cfg_out, cfg, sizeof *cfg);
out:
    json_decref(root);
    free(cfg);
    return rc;
}

/* ---- the store ---- */

struct ron_config_store {
    char *file;               /* owned copy, or NULL */
    char **envp;              /* owned copies of the config keys' RON_* entries only */
    ron_config_kv_t *flags;   /* owned copies */
    size_t n_flags;
    ron_config_t *cur;        /* current snapshot */
};

/* Is entry "NAME=value" the variable of a config key? Only those are kept for
 * reloads: other RON_* variables may hold secrets (RON_PASSPHRASE, RON_CAP)
 * that must not be copied into the heap for the life of the node. */
static bool
env_is_config_key(const char *entry)
{
    if (strncmp(entry, "RON_", 4) != 0)
        return false;
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[96];
        size_t nl;
        ron_config_env_name(keys[i].info.path, name, sizeof name);
        nl = strlen(name);
        if (strncmp(entry, name, nl) == 0 && entry[nl] == '=')
            return true;
    }
    return false;
}

static ron_config_src_t
store_src(const ron_config_store_t *s)
{
    return (ron_config_src_t){s->file, s->envp, s->flags, s->n_flags};
}

int
ron_config_store_new(const ron_config_src_t *src, ron_config_store_t **store_out, char *err,
                     size_t cap)
{
    ron_config_store_t *s = ron_xcalloc(1, sizeof *s);
    ron_config_src_t copy;
    size_t n_env = 0, j = 0;
    int rc;

    s->file = src->file != NULL ? ron_xstrdup(src->file) : NULL;
    for (char *const *e = src->envp; e != NULL && *e != NULL; e++)
        n_env += env_is_config_key(*e);
    s->envp = ron_xcalloc(n_env + 1, sizeof *s->envp);
    for (char *const *e = src->envp; e != NULL && *e != NULL; e++)
        if (env_is_config_key(*e))
            s->envp[j++] = ron_xstrdup(*e);
    s->flags = ron_xcalloc(src->n_flags + 1, sizeof *s->flags);
    for (size_t i = 0; i < src->n_flags; i++) {
        s->flags[i].path = ron_xstrdup(src->flags[i].path);
        s->flags[i].value = ron_xstrdup(src->flags[i].value);
    }
    s->n_flags = src->n_flags;
    s->cur = ron_xmalloc(sizeof *s->cur);
    copy = store_src(s);
    rc = ron_config_build(&copy, s->cur, err, cap);
    if (rc < 0) {
        ron_config_store_free(s);
        return rc;
    }
    s->cur->version = 1;
    *store_out = s;
    return 0;
}

void
ron_config_store_free(ron_config_store_t *s)
{
    if (s == NULL)
        return;
    free(s->file);
    for (char **e = s->envp; e != NULL && *e != NULL; e++)
        free(*e);
    free(s->envp);
    for (size_t i = 0; i < s->n_flags; i++) {
        free((char *)s->flags[i].path);
        free((char *)s->flags[i].value);
    }
    free(s->flags);
    free(s->cur);
    free(s);
}

const ron_config_t *
ron_config_store_current(const ron_config_store_t *s)
{
    return s->cur;
}

int
ron_config_store_build(const ron_config_store_t *s, ron_config_t *next_out, char *err, size_t cap)
{
    ron_config_src_t src = store_src(s);
    return ron_config_build(&src, next_out, err, cap);
}

int
ron_config_store_adopt(ron_config_store_t *s, const ron_config_t *next, bool *changed_out,
                       char *err, size_t cap)
{
    const char *first, *restart_only;

    *changed_out = false;
    if (ron_config_diff(s->cur, next, &first, &restart_only) == 0)
        return 0;
    if (restart_only != NULL) {
        errf(err, cap, "key '%s' needs a restart; reload refused", restart_only);
        return RON_ECONFIG;
    }
    {
        ron_config_t *cur = ron_xmalloc(sizeof *cur);
        memcpy(cur, next, sizeof *cur);
        cur->version = s->cur->version + 1;
        free(s->cur); /* the old snapshot's views end here (documented) */
        s->cur = cur;
    }
    *changed_out = true;
    return 0;
}

int
ron_config_store_reload(ron_config_store_t *s, bool *changed_out, char *err, size_t cap)
{
    ron_config_t *next = ron_xmalloc(sizeof *next);
    int rc;

    *changed_out = false;
    rc = ron_config_store_build(s, next, err, cap);
    if (rc == 0)
        rc = ron_config_store_adopt(s, next, changed_out, err, cap);
    free(next);
    return rc;
}
