/*
 * mn_internal.h - shared between the files of src/macronode/ only.
 *
 * Kernel <-> child protocol on ron-bus (app_proto_id OAP_APP_KERNEL), JSON
 * payloads:
 *   child -> kernel request  {"op":"hello","service":S,"pid":"P"}
 *                    answer  200 {"config":{...snapshot...}}
 *   child -> kernel request  {"op":"heartbeat","service":S,"config_version":"V",
 *                             "metrics":"<prometheus text>"}
 *                    answer  200 {}
 *                    answer  200 {"auth_head":"H"}  (the authority's newest change:
 *                             a child whose guard is behind syncs)
 *   kernel -> children event {"config":{...snapshot...}}  (after a reload)
 *   child -> kernel request  {"op":"status"|"reload","service":S}, or
 *                            {"op":"release","service":S,"target":T}
 *                    answer  what /admin/status, /admin/reload and
 *                            /admin/release/T answer (mn__admin_bus_op);
 *                            the app port forwards its kernel protocol here
 *
 * Capabilities (docs/protocol/capabilities.md, "Node plumbing"):
 *   child -> kernel request  {"op":"auth_sync","service":S,"after":"N"}
 *                    answer  200 {"prev":"N","head":"H","entries":[...]} (guard_page_encode,
 *                            at most GUARD_SYNC_PAGE entries; a full page: ask again
 *                            with after=H); 400 when after is past the head
 *   kernel -> children event {"auth":{"prev":"P","head":"H","entries":[...]}} after
 *                            every change (revoke, epoch, rotation); a child whose
 *                            guard_apply says RON_EAGAIN syncs from its guard_head
 *   app -> kernel request    {"op":"auth_revoke","service":"app","id":"ron1:..","until":"T"}
 *                            or {"op":"auth_revoke","service":"app","epoch":"next"|"N"}
 *                    answer  200 {"epoch":"E","head":"H"} once persisted and pushed;
 *                            400 (malformed id, until or epoch), 507 (revocation list full)
 *   app -> kernel request    {"op":"auth_rotate","service":"app"} (ron key rotate)
 *                    answer  200 the key generation as auth_show gives it, after
 *                            the new kids are persisted and pushed and operator.cap
 *                            re-minted under the new kid
 *   app -> kernel request    {"op":"auth_show","service":"app"} (ron key show)
 *                    answer  200 {"kid","prev_kid" ("" none),"prev_until" (unix s its
 *                            grace ends, "0" none),"gen_started","rotate_every_s",
 *                            "grace_s","epoch","head","revoked"} (decimal strings)
 *   The caller (the app port) has checked its client's capability; the kernel
 *   trusts the authenticated bus peer.
 * Every child inherits the capability master (32 bytes) on a pipe, fd 6,
 * RON_CAPKEY_FD=6; it builds its guard after the HELLO answer, syncs until
 * caught up, and only then starts its service.
 * The kernel accepts a HELLO only from the pid it spawned for that service
 * (SO_PEERCRED through ron-bus), on a connection that already passed the
 * per-boot secret check.
 */
#ifndef MN_INTERNAL_H
#define MN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "macronode.h"
#include "ron_bus.h"
#include "ron_config.h"
#include "ron_guard.h"
#include "ron_kernel.h"
#include "ron_kms.h"
#include "ron_metrics.h"
#include "ron_transport.h"
#include "svc_index.h"
#include "svc_storage.h"

#define MN_KERNEL_ENDPOINT "kernel"        /* ron-bus name the kernel listens under */
#define MN_BUS_DIR_STALE_S 60u             /* a dead kernel's bus directory is swept after this */
#define MN_ENV_LISTEN_FD "RON_LISTEN_FD"   /* fd of the inherited public listener */
#define MN_ENV_LISTEN_FD2 "RON_LISTEN_FD2" /* fd of a second one (listen_addr2) */
#define MN_ENV_IDENTITY_FD "RON_IDENTITY_FD" /* pipe holding the identity seed (needs_identity) */
#define MN_IDENTITY_FD 5                     /* the child's fd number of that pipe */
#define MN_ENV_CAPKEY_FD "RON_CAPKEY_FD"     /* pipe holding the capability master */
#define MN_CAPKEY_FD 6                       /* the child's fd number of that pipe (every child) */

typedef enum {
    MN_SVC_STARTING,    /* spawned, no HELLO yet */
    MN_SVC_RUNNING,     /* HELLO received */
    MN_SVC_RESTARTING,  /* exited; restart timer armed */
    MN_SVC_QUARANTINED, /* too many crashes; waits for release */
    MN_SVC_STOPPING,    /* shutdown in progress */
    MN_SVC_STOPPED,
} mn_svc_state_t;

const char *mn__svc_state_name(mn_svc_state_t s);

typedef struct mn_sup mn_sup_t;
typedef struct mn_auth mn_auth_t;

/* One row of `ron status`. Strings are views valid until the next loop turn. */
typedef struct {
    const char *name;
    mn_svc_state_t state;
    int pid; /* 0 when not running */
    bool healthy;
    uint64_t restarts;       /* restarts since the node started */
    uint32_t crash_streak;   /* crashes since the last backoff reset */
    uint64_t config_version; /* last version the child reported */
    const char *last_exit;   /* "exit 3", "signal 9 (Killed)", or "" */
    const char *listen_addr; /* bound public listener, or "" */
} mn_svc_info_t;

/*
 * Create a supervisor for cfg->services (cfg borrowed until the next
 * mn__sup_config or mn__sup_free). Binds every public listener now. Kernel
 * events go to bus; service_restarts_total and friends to reg. Returns NULL
 * with a reason in err on failure.
 */
mn_sup_t *mn__sup_new(uv_loop_t *loop, const ron_config_t *cfg, const char *self_exe,
                      ron_bus_t *bus, met_registry_t *reg, char *err, size_t errcap);
/* Start the ron-bus endpoint and every child in config order. Returns 0 or a code. */
int mn__sup_start(mn_sup_t *s, char *err, size_t errcap);
/* A new snapshot (borrowed as above): send it to every child. */
void mn__sup_config(mn_sup_t *s, const ron_config_t *cfg);
/* Stop children in reverse start order (SIGTERM, SIGKILL when the budget
 * runs out); done(arg) runs once all are gone. */
void mn__sup_stop(mn_sup_t *s, void (*done)(void *arg), void *arg);
/* Release a quarantined service. Returns 0, RON_ENOTFOUND, or RON_EINVAL when
 * it is not quarantined. */
int mn__sup_release(mn_sup_t *s, const char *name);
size_t mn__sup_count(const mn_sup_t *s);
void mn__sup_info(const mn_sup_t *s, size_t i, mn_svc_info_t *out);
/* Merge every child's last metrics text into m with service="NAME". */
void mn__sup_metrics(mn_sup_t *s, met_merge_t *m);
/* Let the kernel endpoint answer auth_sync/auth_revoke through a (NULL:
 * 503), hand every child the master, and push changes on the endpoint. */
void mn__sup_set_auth(mn_sup_t *s, mn_auth_t *a);
/* Close handles; memory goes once the loop runs the close callbacks. */
void mn__sup_free(mn_sup_t *s);

/* The built-in `health` service (mn_health.c). */
extern const ron_service_def_t mn__svc_health;
/* The `storage` and `index` services (mn_storage.c): svc-storage and
 * svc-index served over ron-bus. */
extern const ron_service_def_t mn__svc_storage;
extern const ron_service_def_t mn__svc_index;
/* The built-in `gateway` service (mn_gateway.c). */
extern const ron_service_def_t mn__svc_gateway;
/* The built-in `app` service (mn_app.c): the app port (src/omnigate). */
extern const ron_service_def_t mn__svc_app;
/* The `registry` service (mn_registry.c): svc-registry over ron-bus; not in
 * the default service list. */
extern const ron_service_def_t mn__svc_registry;
/* The built-in `dht` service (mn_dht.c): svc-dht on the kernel's UDP socket. */
extern const ron_service_def_t mn__svc_dht;
/* The built-in `overlay` service (mn_overlay.c): peer sessions and verified
 * transfer over tx_peer, bus endpoint "overlay". */
extern const ron_service_def_t mn__svc_overlay;
/* The `passport` service (mn_passport.c): svc-passport over ron-bus; not
 * in the default service list. */
extern const ron_service_def_t mn__svc_passport;

/* ---- the service host (mn_service.c) ---- */

typedef struct mn_host mn_host_t;

/*
 * Run service def on loop: connect to the kernel endpoint with bc (copied;
 * Unix sockets in a child, in-process in the micro profile), HELLO, start,
 * heartbeat. listen_fd (taken; -1 for none) is the service's listener.
 * on_exit(arg, code) runs once, after the host has closed everything: code
 * 0 after mn__host_stop(h, 0), 1 when the kernel went away or the service
 * failed to start. Returns NULL with *rc_out set (ron-bus errors).
 */
mn_host_t *mn__host_new(uv_loop_t *loop, const ron_service_def_t *def, const rbus_config_t *bc,
                        int listen_fd, void (*on_exit)(void *arg, int code), void *arg,
                        int *rc_out);
/* Give the host the service's second listener (taken; def->listen_addr2),
 * handed to def->attach_listener2 once the service started. Call it right
 * after mn__host_new. */
void mn__host_listen2(mn_host_t *h, int fd);
/* Stop the service and close the host on a later loop turn; on_exit gets code. */
void mn__host_stop(mn_host_t *h, int code);

/* ---- the admin port (mn_admin.c) ---- */

typedef struct mn_node mn_node_t;
typedef struct mn_admin mn_admin_t;

/* Serve the admin routes on cfg->admin for node. Returns NULL with err. */
mn_admin_t *mn__admin_new(uv_loop_t *loop, mn_node_t *node, const ron_config_t *cfg, char *err,
                          size_t errcap);
/* The bound address ("127.0.0.1:8080"). */
const char *mn__admin_addr(const mn_admin_t *a);
/*
 * Answer req, a kernel request from a service (the app port), with what the
 * admin routes compute: op "status" (the JSON of /admin/status), "reload"
 * (of POST /admin/reload: {"changed","version"} or the error) or "release"
 * of service target (200 {}, 404, 409). Unknown op: 400.
 */
void mn__admin_bus_op(mn_admin_t *a, rbus_req_t *req, const char *op, const char *target);
/* Let the kernel endpoint answer admin ops through a (NULL: they answer 503). */
void mn__sup_set_admin(mn_sup_t *s, mn_admin_t *a);
void mn__admin_close(mn_admin_t *a);

/* What the admin routes need from the node (mn_node.c). */
/* The node id as 64 lowercase hex digits, or NULL before the keys are open. */
const char *mn__node_id(const mn_node_t *n);
const ron_config_t *mn__node_config(const mn_node_t *n);
mn_sup_t *mn__node_sup(mn_node_t *n);
met_registry_t *mn__node_registry(mn_node_t *n);
bool mn__node_stopping(const mn_node_t *n);
/* Outcome of a reload: rc 0 (changed or not, version now current) or an
 * error with err (a view valid during the call). */
typedef void (*mn_reload_cb)(void *arg, int rc, bool changed, uint64_t version, const char *err);
/* Start a reload (file read and validated on a worker thread); cb (may be
 * NULL) runs once, later, on the loop. Returns 0, RON_EBUSY (a reload is in
 * flight) or RON_ESHUTDOWN. */
int mn__node_reload(mn_node_t *n, mn_reload_cb cb, void *arg);
uint64_t mn__node_uptime_ms(const mn_node_t *n);
/* Services of either profile (micro: in-process hosts, pid = the node's). */
size_t mn__node_service_count(const mn_node_t *n);
void mn__node_service_info(const mn_node_t *n, size_t i, mn_svc_info_t *out);

/* ---- one store and one index per process (mn_shared.c) ---- */

/*
 * The process's object store (<data_dir>/store, or RAM in amnesia): the
 * first acquire opens it (read-only when read_only), later ones share it and
 * count a reference. Returns 0 and *out, RON_EBUSY when it is open
 * read-only and a writable one is asked for, or sto_open's error. Loop
 * thread only.
 */
int mn__shared_store_acquire(const ron_config_t *cfg, bool read_only, sto_store_t **out);
/* Drop one reference; the last closes the store (every reader and put of
 * the caller done). A handle not from the registry is closed. NULL: nothing. */
void mn__shared_store_release(sto_store_t *st);
/* The process's name index (<data_dir>/index, or RAM): as for the store. */
int mn__shared_index_acquire(const ron_config_t *cfg, idx_t **out);
void mn__shared_index_release(idx_t *idx);
/*
 * The node's identity keys. The node registers its own key store (set;
 * NULL when it frees it): in the micro profile the services in its process
 * share it. A child (macro) opens <data_dir>/keys itself on the first
 * acquire (RAM keys of its own in amnesia: a different id, warned), shared
 * by reference count. Returns 0 and *out (borrowed until release), or
 * ron-kms's error. Loop thread only.
 */
void mn__shared_keys_set(kms_keystore_t *ks);
int mn__shared_keys_acquire(const ron_config_t *cfg, const kms_keystore_t **out);
void mn__shared_keys_release(const kms_keystore_t *ks);
/* Current reference counts (0: closed), for tests and checks. */
void mn__shared_refs(unsigned *store_refs, unsigned *index_refs);

/* ---- the identity key for services that sign as the node (mn_ident.c) ---- */

/* Kernel: remember the node's key store (borrowed until the node exits). */
void mn__ident_set(const kms_keystore_t *keys);
/* Kernel: a pipe (O_CLOEXEC) already holding secret[0..len) (len fits a
 * pipe buffer); returns its read end, which a spawn dup2s into the child,
 * or a negative code. The identity seed (fd 5) and the capability master
 * (fd 6) travel this way. */
int mn__secret_pipe(const uint8_t *secret, size_t len);
/* Child: read exactly len bytes from fd (taken, closed) into *slot, a
 * sodium_malloc buffer allocated when *slot is NULL; on a short read or an
 * error *slot is freed and NULL. Returns 0 or a negative code. */
int mn__secret_read_fd(int fd, uint8_t **slot, size_t len);
/* Kernel: a pipe already holding the identity seed; returns its read end
 * (O_CLOEXEC; the spawn dup2s it into the child) or a negative code. */
int mn__ident_pipe(void);
/* Child: read the seed from fd (taken, closed) into sodium memory.
 * Returns 0 or a negative code. */
int mn__ident_read_fd(int fd);
/* Wipe and drop what this process holds (a child at exit). */
void mn__ident_forget(void);

/* ---- capabilities (mn_auth.c) ---- */

/*
 * Kernel: derive the capability master from keys' identity seed, open the
 * authority (<data_dir>/auth, RAM in amnesia; <data_dir>/audit created),
 * keep operator.cap alive (amnesia: printed on stderr), start the 60 s
 * rotation timer; micro profile: build the node guard (service "node",
 * ron_node_guard()) fed directly. Returns 0 and *out, or a code with err.
 */
int mn__auth_open(uv_loop_t *loop, const ron_config_t *cfg, const kms_keystore_t *keys,
                  mn_auth_t **out, char *err, size_t errcap);
/* Close the timer; the rest (authority, node guard, master) goes in its
 * close callback, after every in-process service stopped. NULL: nothing. */
void mn__auth_close(mn_auth_t *a);
/* Where pushes go (the kernel's ron-bus endpoint; NULL: nowhere). */
void mn__auth_set_bus(mn_auth_t *a, rbus_t *bus);
/* The authority's newest change (0 for NULL). */
uint64_t mn__auth_head(const mn_auth_t *a);
/* A pipe already holding the master; returns its read end (O_CLOEXEC; the
 * spawn dup2s it to MN_CAPKEY_FD) or a negative code. */
int mn__auth_capkey_pipe(mn_auth_t *a);
/* Answer a child's "auth_sync", "auth_revoke", "auth_rotate" or "auth_show" (op) from service. */
void mn__auth_bus_op(mn_auth_t *a, rbus_req_t *req, const char *service, const char *op,
                     json_t *msg);
/* A reload to cfg: the node guard (micro) reloads a policy_file that is not
 * old_policy (rollback on error, reason logged). */
void mn__auth_config(mn_auth_t *a, const char *old_policy, const ron_config_t *cfg);
/* Micro: the node guard's metrics text into buf (cap bytes). Returns bytes written. */
size_t mn__auth_metrics(mn_auth_t *a, char *buf, size_t cap);

/*
 * Does tok still verify as the operator capability: every op, a kid in force
 * that is the current one, the epoch in force, not revoked? Pure apart from
 * reading a (master: GUARD_MASTER_LEN bytes). Returns 0 or the RON_ECAP* code.
 */
int mn__auth_token_alive(const guard_authority_t *a, const uint8_t master[static GUARD_MASTER_LEN],
                         const char *tok, size_t len, int64_t now);
/* The page inside a kernel event {"auth":<page>}: a view. Returns 0, or
 * RON_EINVAL when payload is not such an event. Pure. */
int mn__auth_event_page(const void *payload, size_t len, const char **page_out,
                        size_t *page_len_out);

/* Child: read the master from fd (taken, closed) into sodium memory. */
int mn__capkey_read_fd(int fd);
/* Child: does this process hold a master not yet turned into its guard? */
bool mn__capkey_held(void);
/* Child: build the process guard for service from the master (then wiped)
 * with cfg's audit dir and policy_file. Returns 0 or guard_new's code. */
int mn__guard_build(const char *service, const ron_config_t *cfg);
/* Is the process guard fed by the authority in this process (micro)? */
bool mn__guard_fed_here(void);
/* Child at exit: free the guard, wipe a master still held. */
void mn__guard_forget(void);

/* ---- small helpers (mn_util.c) ---- */

/* Bind a UDP socket on addr. Returns the fd or a negative code; bound_out
 * gets the address actually bound. */
int mn__listen_udp(const char *addr, char *bound_out, size_t bound_cap);

/* Transport defaults with one listener's hardening knobs (config) applied. */
void mn__tx_config(tx_config_t *tc, const ron_config_http_limits_t *l);

/* Bind a TCP listener on addr (backlog 1024). Returns the fd or a negative
 * code; bound_out gets the address actually bound ("127.0.0.1:41234"). */
int mn__listen_tcp(const char *addr, char *bound_out, size_t bound_cap);

#define MN_DATA_FORMAT "1" /* layout version in <data_dir>/FORMAT (DESIGN §8) */

/* Persistent mode: create data_dir (0700) and its FORMAT file, or check the
 * version of an existing one. Amnesia: touch nothing. Returns 0 or a code
 * with err set (RON_ECONFIG for a layout version we do not know). */
int mn__data_dir_prepare(const ron_config_t *cfg, char *err, size_t errcap);

/* Describe a child's end: "exit 3" or "signal 9 (Killed)". */
void mn__exit_reason(char *out, size_t cap, int64_t exit_status, int term_signal);

#endif
