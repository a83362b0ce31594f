/*
 * sto_service.h - svc-storage as a ron-bus service: the storage protocol
 * (OAP/1 app_proto_id 1, docs/protocol/storage.md) served from a sto_store_t.
 *
 * Written against rbus_ only, so the same code runs in its own process
 * (macronode, Unix sockets) and inside the node (micronode, in-process hub).
 * Every store call runs on the libuv thread pool (uv_queue_work): the store
 * blocks on disk, LMDB and fsync. Handlers and completions run on the loop
 * thread, which alone touches the service's tables; a put is used by one
 * worker at a time (a put with a call in flight answers 409 put_busy).
 *
 * Invariants: every request is answered exactly once (rbus_respond); an open
 * put whose connection goes away, or which is idle for put_idle_ms, is
 * aborted (its temporary files removed); open puts are bounded per
 * connection and in total (429 quota_exhausted beyond); a chunk is at most
 * STO_SVC_MAX_CHUNK bytes; a put acknowledged by put_commit is durable.
 */
#ifndef STO_SERVICE_H
#define STO_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ron_bus.h"
#include "ron_guard.h"
#include "svc_storage.h"

/* ---- limits ---- */
#define STO_SVC_MAX_CHUNK (256u << 10)     /* raw bytes of one put_write or get */
#define STO_SVC_MAX_JSON 4096u             /* JSON bytes of one request */
#define STO_SVC_PUTS_PER_CONN 16u          /* default open puts per connection */
#define STO_SVC_PUTS_TOTAL 256u            /* default open puts in all */
#define STO_SVC_PUT_IDLE_MS 30000u         /* default idle put lifetime */
#define STO_SVC_PUT_QUEUE 8u               /* put_writes of one put queued or running */
#define STO_SVC_LIST_DEFAULT 100u          /* list page when "limit" is absent */
#define STO_SVC_LIST_MAX 256u              /* list page at most (bounds one response) */
#define STO_SVC_RETRY_AFTER_MS 1000u       /* retry_after_ms of 429 and 507 answers */
#define STO_SVC_FETCH_WAIT_MS 25000u       /* a get waiting for a fetch answers 504 past it */
#define STO_SVC_FETCH_FINDS 2u             /* lookups per fetch: the second only when every
                                              provider the first found failed */
#define STO_SVC_FETCH_FIND_GAP_MS 400u     /* between two lookups of one fetch */
#define STO_SVC_FETCH_FIND_MS 5000u        /* a lookup not answered by then: the gets get 504 */
#define STO_SVC_MISS_TTL_MS 0u             /* "no provider found" kept per address (404 at once):
                                              off by default, as it would hide an object put
                                              elsewhere meanwhile (storage.md "Fetch on miss") */
#define STO_SVC_MISS_MAX 256u              /* addresses kept so (the oldest entry is replaced) */
#define STO_SVC_FETCH_LINGER_MS 3000u      /* an idle fetch is kept this long for the next get */
#define STO_SVC_FETCH_AHEAD_MAX (1u << 20) /* bytes a get's "ahead" may add to what is fetched */
#define STO_SVC_HOLD_FETCH (2u << 20)      /* verified piece bytes a fetch keeps in memory after
                                              storing them, so the gets that follow are answered
                                              without reading them back (storage.md) */
#define STO_SVC_HOLD_TOTAL (16u << 20)     /* ... all fetches together */
#define STO_SVC_ANNOUNCE_WAIT_MS 2000u     /* a put's answer waits this long at most for its
                                              provider record to reach the DHT */
#define STO_SVC_ANNOUNCE_WAIT_MAX 10000u   /* ... configurable up to this (DHT_SVC_PROVIDE_WAIT_MAX) */
#define STO_SVC_ANNOUNCE_MAX 32u           /* puts waiting so at once: half the bus connection's
                                              in-flight bound, the rest is for lookups; beyond,
                                              a put is answered at once ("pending") */

typedef struct sto_service sto_service_t;

typedef struct {
    uint32_t puts_per_conn; /* 0 = STO_SVC_PUTS_PER_CONN */
    uint32_t puts_total;    /* 0 = STO_SVC_PUTS_TOTAL */
    uint32_t put_idle_ms;   /* 0 = STO_SVC_PUT_IDLE_MS */
    uint32_t miss_ttl_ms;   /* 0 = STO_SVC_MISS_TTL_MS (0: no miss memory) */
    uint32_t announce_wait_ms; /* 0 = STO_SVC_ANNOUNCE_WAIT_MS; at most STO_SVC_ANNOUNCE_WAIT_MAX;
                                  UINT32_MAX: answer puts at once (announce in the background) */
    /* Optional (NULL: sto_close): called once, on the loop, with the store
     * when the service lets go of it (freed and its last worker call
     * returned, or sto_service_new failed), so a store shared by several
     * users of one process is released rather than closed. */
    void (*release)(void *arg, sto_store_t *store);
    void *release_arg;
} sto_service_limits_t;

/*
 * Serve the storage protocol on bus (borrowed; must outlive the service
 * until sto_service_free) from store (taken: closed, or given to
 * lim->release, once the service is freed and its last worker call has
 * returned). Registers the handler for
 * OAP_APP_STORAGE and the bus's peer callback; does not call rbus_listen().
 * lim may be NULL (defaults). Returns 0 and *svc_out, or RON_EBUSY (the bus
 * has no room for a handler; the store is closed).
 */
int sto_service_new(uv_loop_t *loop, rbus_t *bus, sto_store_t *store,
                    const sto_service_limits_t *lim, sto_service_t **svc_out);

/*
 * Stop serving: new requests are answered 503, open puts are aborted, and
 * the memory and the store are released once the worker calls in flight
 * return (run the loop). Call it before rbus_free(bus). NULL does nothing.
 */
void sto_service_free(sto_service_t *svc);

/*
 * Turn on the network parts (docs/protocol/storage.md, "Fetch on miss"):
 * dht and ovl are outbound peers connected to the node's "dht" and
 * "overlay" endpoints (borrowed; close them only after sto_service_free,
 * whose fetches finish when their calls complete). With both set, a get of
 * an absent object or of a range a partial object lacks asks dht
 * find_providers and fetches the pieces over overlay fetch (sto_fetch.h),
 * keeping them in a partial object and answering as soon as the get's
 * pieces verified; "local":true turns that off per get. A miss costs one
 * lookup (deadline STO_SVC_FETCH_FIND_MS): when it finds no provider the
 * gets answer 404 at once, and further gets of that address answer 404
 * without a lookup for lim->miss_ttl_ms when it is set (none by default; at
 * most STO_SVC_MISS_MAX addresses; only when the lookup heard from every node
 * it asked). With dht set, a
 * put_commit announces its object (dht provide) and answers once the provider
 * record reached the DHT's closest nodes or announce_wait_ms passed
 * ("announced", "announce_state" in the answer: docs/protocol/storage.md); a
 * completed fetch announces it too, and GC evictions withdraw it (dht
 * unprovide). Either may be NULL.
 */
void sto_service_set_network(sto_service_t *svc, rbus_peer_t *dht, rbus_peer_t *ovl);

/*
 * Enforce capabilities on the storage endpoint with g (borrowed; the
 * process's guard, ron_node_guard(), in a node; NULL, the default: no
 * enforcement, for unit tests and library users). Each request is checked
 * with guard_check: the token is the request frame's cap section, the
 * tenant its tenant_id; put_begin needs the put op (its declared size and
 * expected address checked), put_write stays within the token's max-bytes,
 * put_commit checks the token again with the hashed address (a prefix
 * caveat) before anything is stored; get and stat need get (public under
 * the default policy); pin, unpin and list need pin; gc needs admin. A
 * rejection is answered with the error envelope (401, 403 or 429, the
 * guard's slug and reason) and changes nothing. With g set, the service's
 * own requests (provide, unprovide, find_providers) carry
 * guard_self_token(g). See docs/protocol/storage.md "Capabilities".
 */
void sto_service_set_guard(sto_service_t *svc, guard_t *g);

/* Append the Prometheus text of the service's metrics (requests by op and
 * status, bytes in/out, open puts) to buf (cap bytes). Returns bytes written
 * (0 when cap is too small). */
size_t sto_service_metrics(sto_service_t *svc, char *buf, size_t cap);

/* Open puts now (for tests and metrics). */
size_t sto_service_open_puts(const sto_service_t *svc);

#endif
