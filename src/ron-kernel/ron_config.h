/*
 * ron_config.h - the node's configuration: immutable snapshots built from
 * built-in defaults, then a JSON file, then RON_* environment variables, then
 * command-line flags, in that order (DESIGN.md §8).
 *
 * Every key is described once in a schema table (ron_config.c): its dotted
 * path, type, range, whether a reload may change it, and a one-line doc. The
 * environment name of a key is RON_ plus its path in upper snake case
 * (admin_limits.max_conns -> RON_ADMIN_LIMITS_MAX_CONNS). Unknown keys and
 * wrong types are errors that name the key.
 *
 * A ron_config_store_t owns the current snapshot and its u64 version. A reload
 * builds and validates a complete new snapshot first; any error keeps the old
 * one; a change to a restart-only key is refused; an unchanged snapshot keeps
 * its version; a changed one takes version + 1. Snapshots are never modified
 * after they are published, so readers may keep a pointer until they drop
 * their reference.
 */
#ifndef RON_CONFIG_H
#define RON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits: sizes of the fixed fields of a snapshot, each a hard bound on input. */
#define RON_CONFIG_ADDR_MAX 64        /* "[ipv6%scope]:port" fits with room */
#define RON_CONFIG_PATH_MAX 1024      /* data_dir; longer paths are refused */
#define RON_CONFIG_NAME_MAX 32        /* service names: [a-z0-9-]{1,31} */
#define RON_CONFIG_MAX_SERVICES 16    /* services the kernel supervises */
#define RON_CONFIG_MAX_SEEDS 16       /* DHT bootstrap seeds */
#define RON_CONFIG_TEXT_MAX 128       /* free-text values (echo.banner) */
#define RON_CONFIG_FILE_MAX (1 << 20) /* a config file larger than 1 MiB is refused */
#define RON_CONFIG_ERR_MAX 256        /* size of an error message buffer */

typedef enum { RON_PROFILE_MACRO = 0, RON_PROFILE_MICRO = 1 } ron_profile_t;

/* Hardening knobs of one HTTP server (DESIGN.md §6 defaults). */
typedef struct {
    uint64_t max_conns;         /* open connections; the excess is refused */
    uint64_t max_inflight;      /* requests being handled at once (512) */
    uint64_t rate_rps;          /* requests per second per source IP (500) */
    uint64_t rate_burst;        /* token bucket depth per source */
    uint64_t header_timeout_ms; /* whole request head must arrive within (5000) */
    uint64_t body_timeout_ms;   /* body must arrive within (5000) */
    uint64_t idle_timeout_ms;   /* keep-alive idle (5000) */
    uint64_t max_body;          /* bytes (1 MiB) */
    uint64_t max_header;        /* bytes of the request head (16 KiB) */
} ron_config_http_limits_t;

/* Supervisor knobs (restart policy and child health). */
typedef struct {
    uint64_t backoff_initial_ms;   /* first restart delay (100) */
    uint64_t backoff_max_ms;       /* cap of the doubling delay (30000) */
    uint64_t healthy_reset_ms;     /* healthy running that resets the backoff (10000) */
    uint64_t quarantine_crashes;   /* crashes within the window that quarantine (6) */
    uint64_t quarantine_window_ms; /* sliding window (60000) */
    uint64_t heartbeat_ms;         /* child heartbeat period (500) */
    uint64_t unhealthy_after_ms;   /* silence after which a child is unhealthy (1500) */
    uint64_t stop_timeout_ms;      /* SIGTERM -> SIGKILL budget for all children (1500) */
} ron_config_supervisor_t;

/* One immutable snapshot. Strings are NUL-terminated inside their arrays. */
typedef struct {
    uint64_t version; /* 1 for the first snapshot, +1 per change */
    ron_profile_t profile;
    char data_dir[RON_CONFIG_PATH_MAX];
    bool amnesia;
    bool amnesia_set; /* false: follows the profile (micro -> on) */
    char admin[RON_CONFIG_ADDR_MAX];
    char http[RON_CONFIG_ADDR_MAX];
    char https[RON_CONFIG_ADDR_MAX];      /* empty (default): no HTTPS listener */
    char https_cert[RON_CONFIG_PATH_MAX]; /* PEM chain; empty: generated (ECDSA P-256) */
    char https_key[RON_CONFIG_PATH_MAX];  /* PEM private key, with https_cert */
    char app[RON_CONFIG_ADDR_MAX];
    char overlay[RON_CONFIG_ADDR_MAX];
    char dht[RON_CONFIG_ADDR_MAX];
    char advertise[RON_CONFIG_ADDR_MAX];                        /* empty: none */
    char seeds[RON_CONFIG_MAX_SEEDS][RON_CONFIG_ADDR_MAX + 80]; /* "[ID@]HOST:PORT" */
    size_t n_seeds;
    char log_level[8];     /* debug|info|warn|error */
    uint64_t bus_capacity; /* kernel event bus ring (4096) */
    ron_config_http_limits_t admin_limits;
    ron_config_http_limits_t gateway_limits; /* the gateway's HTTP and HTTPS listeners */
    uint64_t readiness_retry_after_s; /* Retry-After on a 503 from /readyz (1) */
    ron_config_supervisor_t supervisor;
    char services[RON_CONFIG_MAX_SERVICES][RON_CONFIG_NAME_MAX];
    size_t n_services;
    char echo_addr[RON_CONFIG_ADDR_MAX];   /* echo service TCP listener; empty: none */
    char echo_banner[RON_CONFIG_TEXT_MAX]; /* line the echo service sends first */
    char policy_file[RON_CONFIG_PATH_MAX]; /* policy bundle JSON; empty: the shipped default */
    uint64_t auth_rotate_every_s; /* capability key generation's life (30 days, at most) */
    uint64_t auth_grace_s;        /* a replaced generation's grace (7 days) */
} ron_config_t;

/* One "path=value" override from the command line. Borrowed strings. */
typedef struct {
    const char *path;
    const char *value;
} ron_config_kv_t;

/* Where a snapshot comes from. Every pointer is borrowed. */
typedef struct {
    const char *file;             /* JSON config file, or NULL */
    char *const *envp;            /* NULL-terminated "NAME=value" list, or NULL */
    const ron_config_kv_t *flags; /* command-line overrides, applied last */
    size_t n_flags;
} ron_config_src_t;

/* Fill cfg with the built-in defaults (version 0). Never fails. */
void ron_config_defaults(ron_config_t *cfg);

/*
 * Build a snapshot from src: defaults, file, environment, flags, then
 * validate. On error, write a one-line reason naming the key (and the file)
 * into err (errcap bytes) and return RON_ECONFIG (bad key, type, value or
 * JSON), RON_ETOOBIG (file over RON_CONFIG_FILE_MAX) or -errno (file cannot be
 * read). cfg_out is written only on success. Any thread.
 */
int ron_config_build(const ron_config_src_t *src, ron_config_t *cfg_out, char *err, size_t errcap);

/*
 * Set the key at path from its text form, as the environment and flags do
 * (booleans: true/false/1/0; lists: comma-separated). Returns 0 or
 * RON_ECONFIG with the reason in err. Does not validate cross-key rules.
 */
int ron_config_set(ron_config_t *cfg, const char *path, const char *value, char *err,
                   size_t errcap);

/* Check every value and cross-key rule. Returns 0 or RON_ECONFIG with err. */
int ron_config_validate(const ron_config_t *cfg, char *err, size_t errcap);

/* Is amnesia on (explicit setting, else on for micro, off for macro)? */
bool ron_config_amnesia(const ron_config_t *cfg);

/*
 * Compare two snapshots key by key (the version is ignored). Returns the
 * number of differing keys and, when first_out is not NULL, the path of the
 * first one (a static string). restart_only_out, when not NULL, receives the
 * path of the first differing key that a reload may not change, or NULL.
 */
size_t ron_config_diff(const ron_config_t *a, const ron_config_t *b, const char **first_out,
                       const char **restart_only_out);

/*
 * Encode cfg as one JSON object in the file format, plus "version" as a
 * decimal string. Returns new memory (caller frees), never NULL.
 */
char *ron_config_to_json(const ron_config_t *cfg);

/*
 * Decode what ron_config_to_json wrote (strict: unknown keys refused) into
 * cfg_out, version included. Returns 0 or RON_ECONFIG/RON_EJSON with err.
 */
int ron_config_from_json(const char *json, size_t len, ron_config_t *cfg_out, char *err,
                         size_t errcap);

/* Environment name of a key path into out ("RON_" + upper snake case). */
void ron_config_env_name(const char *path, char *out, size_t cap);

/* Schema introspection for docs and `ron node --help`. */
typedef struct {
    const char *path;
    const char *type; /* "string", "address", "u64", "bool", "enum", "list" */
    bool reloadable;
    const char *doc;
} ron_config_key_info_t;

/* The i-th key of the schema, or NULL past the end. */
const ron_config_key_info_t *ron_config_key_at(size_t i);

/* ---- The store: current snapshot, version, reload with rollback ---- */

typedef struct ron_config_store ron_config_store_t;

/*
 * Build the first snapshot (version 1) from src and keep src for reloads:
 * its strings and arrays are copied. Returns 0 or an error as
 * ron_config_build, with *store_out untouched. Loop thread only.
 */
int ron_config_store_new(const ron_config_src_t *src, ron_config_store_t **store_out, char *err,
                         size_t errcap);
void ron_config_store_free(ron_config_store_t *store);

/* The current snapshot; a view valid until the next successful reload. */
const ron_config_t *ron_config_store_current(const ron_config_store_t *store);

/*
 * Build the next snapshot from the kept sources (the file is read again)
 * into next_out, validated, version 0. Reads only the store's sources, which
 * never change, so it may run on a worker thread while the loop thread keeps
 * using the store. Returns as ron_config_build.
 */
int ron_config_store_build(const ron_config_store_t *store, ron_config_t *next_out, char *err,
                           size_t errcap);

/*
 * Adopt next (borrowed; from ron_config_store_build) as the current snapshot
 * when it differs from it: version + 1, *changed_out true, the old snapshot
 * freed. Unchanged: nothing happens. A difference in a restart-only key is
 * refused with RON_ECONFIG naming the key (the current snapshot stays).
 * Loop thread only.
 */
int ron_config_store_adopt(ron_config_store_t *store, const ron_config_t *next, bool *changed_out,
                           char *err, size_t errcap);

/*
 * Build and adopt in one call, on the calling thread (the file is read again). On any error
 * (build, validation, or a change to a restart-only key, named in err) the
 * current snapshot stays and the error is returned. On success *changed_out
 * says whether anything changed; only a change bumps the version.
 */
int ron_config_store_reload(ron_config_store_t *store, bool *changed_out, char *err, size_t errcap);

/*
 * Parse "host:port" / "[v6]:port" into host_out (brackets removed) and port.
 * Returns 0 or RON_EINVAL. Pure.
 */
int ron_addr_split(const char *addr, char *host_out, size_t host_cap, int *port_out);

#endif
