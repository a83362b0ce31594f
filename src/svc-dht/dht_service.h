/*
 * dht_service.h - the DHT as a node service: a dht_t driven by a libuv UDP
 * socket and one timer, and the `dht` ron-bus endpoint (OAP/1 app_proto_id
 * 5, docs/protocol/dht.md §10) through which storage and index find
 * providers, announce content and carry name records across nodes.
 *
 * The service owns the UDP socket handed to it (bound by the kernel),
 * bootstraps from numeric seed addresses, persists the routing table
 * atomically (temp + fsync + rename, at most every DHT_SVC_SAVE_MS and at
 * stop; never in amnesia), learns the overlay address its provider records
 * point to (configured, or the overlay endpoint's `status`), queues provide
 * requests until that address is known and the table has contacts, and
 * re-announces what the local store holds (its `list`, paged) at start.
 * Loop-thread only.
 */
#ifndef DHT_SERVICE_H
#define DHT_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ron_bus.h"
#include "ron_guard.h"
#include "svc_dht.h"

/* ---- limits ---- */
#define DHT_SVC_MAX_JSON 2048u         /* request JSON bytes (a name record is < 700) */
#define DHT_SVC_MAX_PENDING 256u       /* bus requests waiting for a lookup; 429 beyond */
#define DHT_SVC_LOOKUP_TIMEOUT_MS 10000u /* a waiting request is answered 504 then */
#define DHT_SVC_PROVIDERS_DEFAULT 8u   /* find_providers answer size when no limit is given */
#define DHT_SVC_PROVIDERS_MAX 20u      /* ... and at most */
#define DHT_SVC_SAVE_MS 60000u         /* routing table written at most this often */
#define DHT_SVC_HOUSE_MS 500u          /* housekeeping: timeouts, queued provides, retries */
#define DHT_SVC_PROVIDE_WAIT_MAX 10000u /* provide's wait_ms at most (storage asks 2000) */
#define DHT_SVC_PROVIDE_WAITS 128u     /* provides waiting at once (of DHT_SVC_MAX_PENDING:
                                          lookups keep the rest); beyond: "pending" at once */
#define DHT_SVC_RETRY_MS 1000u         /* overlay status / storage list retry interval */
#define DHT_SVC_ANNOUNCE_TRIES 60u     /* storage list attempts before giving up re-announcing */
#define DHT_SVC_LIST_PAGE 256u         /* storage list page size (the storage maximum) */
#define DHT_SVC_SEED_LOG_MS 10000u     /* a refused seed datagram is logged at most this often */
#define DHT_SVC_ADDR_MAX 64u           /* "[v6]:PORT" text, NUL included */
#define DHT_SVC_HOST_MAX 254u          /* a seed's host name (DNS: 253 characters) */

typedef struct dht_service dht_service_t;

typedef struct {
    uint8_t id[DHT_ID_LEN];       /* the node id: BLAKE3 of the public key of sk */
    const uint8_t *sk;            /* libsodium Ed25519 secret key (64 B), copied into sodium memory */
    int udp_fd;                   /* taken: a bound UDP socket */
    const char *const *seeds;     /* "[ID@]HOST:PORT" (copied); a HOST name is resolved
                                     on the thread pool, retried until it resolves */
    size_t n_seeds;
    const char *advertise;        /* overlay address for provider records ("" / NULL: ask) */
    const char *overlay_endpoint; /* bus endpoint asked for `status` when advertise is empty
                                     (NULL: never ask; provides then wait) */
    const char *storage_endpoint; /* bus endpoint whose `list` is re-announced (NULL: none) */
    const char *table_path;       /* routing table file (NULL: not persisted, amnesia) */
    bool no_hedge;                /* plain Kademlia lookups (tests) */
} dht_service_config_t;

/*
 * Start the service on loop: take cfg->udp_fd into a uv_udp_t, create the
 * dht_t (seed from the OS), load the table from cfg->table_path when it
 * exists, bootstrap, and register the OAP_APP_DHT handler on bus (borrowed;
 * outlives the service until dht_service_free; rbus_listen() is left to the
 * caller). Returns 0 and *svc_out, or RON_EINVAL (a seed that is not
 * [ID@]HOST:PORT, a bad advertise address, sk missing) with a one-line
 * reason in err, or another code (fd unusable, no handler slot). The fd is
 * closed on failure.
 */
int dht_service_new(uv_loop_t *loop, rbus_t *bus, const dht_service_config_t *cfg,
                    dht_service_t **svc_out, char *err, size_t errcap);

/*
 * Enforce capabilities on the `dht` endpoint with g (borrowed; the
 * process's guard, ron_node_guard(), in a node; NULL, the default: no
 * enforcement). provide and unprovide need the put op, name_put the name
 * op for the record's name; find_providers, name_get and status need get
 * (public under the default policy). The token is the request frame's cap
 * section; a rejection is answered with the error envelope (401, 403 or
 * 429) and changes nothing. With g set, the service's own `list` requests
 * to the storage endpoint (the re-announce) carry guard_self_token(g).
 */
void dht_service_set_guard(dht_service_t *svc, guard_t *g);

/* Stop: save the table, answer waiting requests 503, close the handles;
 * memory goes once the loop has run their close callbacks. NULL does nothing. */
void dht_service_free(dht_service_t *svc);

/* Append Prometheus text (dht_contacts, dht_lookups_total,
 * dht_rx_malformed_total, ...) to buf (cap bytes). Returns bytes written
 * (0 when cap is too small). */
size_t dht_service_metrics(dht_service_t *svc, char *buf, size_t cap);

/* The bound UDP address ("127.0.0.1:41234"), a view valid while svc lives. */
const char *dht_service_addr(const dht_service_t *svc);

/* The core (for tests and the status op). */
dht_t *dht_service_dht(dht_service_t *svc);

/*
 * Parse "HOST:PORT" or "[v6]:PORT" with a numeric host and a port 1..65535
 * into a. Returns 0 or RON_EINVAL.
 */
int dht_service_addr_parse(const char *s, dht_addr_t *a);

/* Format a as "HOST:PORT" / "[v6]:PORT" into out (DHT_SVC_ADDR_MAX bytes). */
void dht_service_addr_format(const dht_addr_t *a, char out[static DHT_SVC_ADDR_MAX]);

#endif
