/*
 * macronode.h - the node runner (`ron node`), the child runner
 * (`ron service NAME`) and the table of built-in services.
 *
 * In the macro profile the `ron node` process is the kernel: it binds the
 * admin port and every public listener, starts one child per configured
 * service as `ron service NAME` (the same binary), hands each child the
 * listening sockets it serves, collects its stderr, watches its heartbeats
 * and restarts it with backoff (quarantine at the 6th crash in 60 s). In the
 * micro profile the same service code runs inside the node's own loop.
 *
 * Services are written once against ron_service_def_t and do not know which
 * profile runs them.
 */
#ifndef MACRONODE_H
#define MACRONODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ron_bus.h"
#include "ron_config.h"
#include "ron_guard.h"

/* Limits */
/* A child's metrics text per heartbeat: a larger one is not sent (child)
 * or not kept (kernel). */
#define MN_MAX_METRICS (128u << 10)
/* A child's log line: a longer one is cut into several. */
#define MN_MAX_LOG_LINE 4096u
/* How often the kernel checks heartbeats: bounds the detection delay. */
#define MN_HEALTH_TICK_MS 100u

/* A built-in service. Every callback runs on the service's loop thread. */
typedef struct {
    const char *name;
    /* address of the public listener the kernel binds for it ("" or NULL: none) */
    const char *(*listen_addr)(const ron_config_t *cfg);
    /*
     * Start on loop with the first snapshot (borrowed: copy what you keep).
     * listen_fd is the inherited listening socket, or -1. Returns 0 and a
     * state, or a negative code (the process then exits 1).
     */
    int (*start)(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out);
    /* Apply a newer snapshot (borrowed). */
    void (*apply_config)(void *state, const ron_config_t *cfg);
    /* Append Prometheus text of this service's own metrics to buf (cap bytes);
     * return bytes written. */
    size_t (*metrics)(void *state, char *buf, size_t cap);
    /* Close every handle; the loop then ends. */
    void (*stop)(void *state);
    /* Optional (NULL: none). Called once right after start() succeeded, with
     * the host's ron-bus endpoint (named after the service; borrowed until
     * stop): register handlers and rbus_listen() to serve other processes.
     * A negative return stops the service (exit 1). stop() runs in the same
     * loop turn as the endpoint's rbus_free(). */
    int (*serve_bus)(void *state, rbus_t *bus);
    /* Optional (NULL: none). Address of a second public listener the kernel
     * binds for the service, e.g. the gateway's HTTPS ("" or NULL: none
     * today); handed over like the first (fd 4 in a child). */
    const char *(*listen_addr2)(const ron_config_t *cfg);
    /* Optional. Called once right after start() succeeded (before
     * serve_bus) with the second listener's fd (taken) when there is one. A
     * negative return stops the service (exit 1). */
    int (*attach_listener2)(void *state, int fd);
    /* Optional (false: TCP). The kernel binds listen_addr as a UDP socket
     * (port 0 works) and hands it over like a TCP listener: start() gets it
     * as listen_fd (fd 3 in a child). For the DHT. */
    bool listen_udp;
    /* Optional (false: none). The service signs as the node (the DHT's
     * provider records, the overlay's TLS certificate): the kernel hands it
     * the identity key's seed (a child reads it from an inherited pipe,
     * RON_IDENTITY_FD; in-process hosts read the kernel's key store), which
     * it gets with ron_node_identity_seed(). */
    bool needs_identity;
} ron_service_def_t;

/*
 * The node's identity key seed (KMS_SEED_LEN bytes) for a service whose
 * definition sets needs_identity: copied into seed_out, which the caller
 * keeps in sodium_malloc memory and wipes. Returns 0, or RON_ENOKEYS when
 * this process was not handed the key (a service without needs_identity,
 * or the kernel's key store is not open).
 */
int ron_node_identity_seed(uint8_t *seed_out);

/*
 * The process guard: what every service of this process enforces with
 * (docs/protocol/capabilities.md, "Node plumbing"). A child (macro) builds
 * it from the capability master the kernel hands it, and brings it to the
 * authority's head, before its service's start() runs; in the micro profile
 * it is the node's one guard (service "node"), fed by the authority in the
 * same process. NULL when none (a service constructed outside a node host:
 * unit tests, library users). Borrowed; valid until the service's stop()
 * returned. The host appends guard_metrics_render() to the process's
 * metrics once: services must not render it themselves.
 */
guard_t *ron_node_guard(void);

/* The built-in service called name, or NULL. */
const ron_service_def_t *ron_service_find(const char *name);

/* Comma-separated names of the built-in services, for messages. */
const char *ron_service_names(void);

/*
 * Run the node in the foreground until SIGINT/SIGTERM (exit 0) or a fatal
 * startup error (1): bind the admin port, start the services (children in
 * the macro profile, in-process in micro), serve until stopped. store is
 * taken (freed before returning). self_exe (borrowed) is the binary children
 * run. Blocks the calling thread; installs SIGINT/SIGTERM/SIGHUP handlers.
 * Returns the process exit code.
 */
int ron_node_run(ron_config_store_t *store, const char *self_exe);

/*
 * Run `ron service NAME` as a child of the kernel: connect to the kernel over
 * ron-bus (RON_BUS_DIR, RON_BUS_SECRET), say HELLO, receive the config
 * snapshot, start the service on the inherited listener (RON_LISTEN_FD, and
 * RON_LISTEN_FD2 for a second one),
 * heartbeat with its metrics, apply config updates, exit 0 on SIGTERM and 1
 * when the kernel goes away. Returns the process exit code (2 for an unknown
 * service or a missing kernel environment).
 */
int ron_service_run(const char *name);

#endif
