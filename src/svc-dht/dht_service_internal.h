/*
 * dht_service_internal.h - shared by the files of the DHT node service only
 * (dht_service.h is its API):
 *   dht_service.c          life cycle, driving the core (pump, timers,
 *                          events), housekeeping, metrics;
 *   dht_service_ops.c      the `dht` bus protocol: request checks, answers,
 *                          requests that wait for a lookup;
 *   dht_service_provide.c  provides (queued, published, waited for), the
 *                          overlay address they point to, the re-announce
 *                          of the store's objects;
 *   dht_service_net.c      the UDP socket, addresses and seeds (numeric or
 *                          resolved names);
 *   dht_service_save.c     the routing table file.
 * Invariants: loop-thread state only; every bus request in pend[] is
 * answered exactly once (by the ops, a provide's outcome, its timeout, or
 * 503 at stop).
 */
#ifndef DHT_SERVICE_INTERNAL_H
#define DHT_SERVICE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "dht_service.h"
#include "proto_svc.h"
#include "ron_metrics.h"

typedef enum {
    OP_FIND = 0,
    OP_PROVIDE,
    OP_UNPROVIDE,
    OP_NAME_PUT,
    OP_NAME_GET,
    OP_STATUS,
    OP_COUNT,
    OP_BAD = OP_COUNT /* unparseable or unknown op: metrics only */
} op_t;

/* The state a provide that waited (wait_ms) is answered with. */
enum { PS_ANNOUNCED = 0, PS_UNANNOUNCED, PS_PENDING, PS_QUEUED, PS_COUNT };

/* Gauges and counters beside the request counters (dht_service.c). */
enum { G_CONTACTS, G_RECORDS, G_PROVIDED, G_PENDING, G_BOOTSTRAPPED, G_COUNT };
enum {
    C_LOOKUPS,
    C_RX,
    C_TX,
    C_RX_MALFORMED,
    C_RX_FORGED,
    C_RX_UNSOLICITED,
    C_RX_SEED_MISMATCH,
    C_RX_DROPPED,
    C_TX_DROPPED,
    C_LOOKUPS_JOINED,
    C_REQUESTS_TIMEOUT,
    C_REQUESTS_HEDGED,
    C_PROVIDES_QUEUED,
    C_COUNT
};

typedef struct {
    rbus_req_t *req; /* NULL: free slot */
    op_t op;
    uint32_t lookup_id; /* OP_PROVIDE: the publish's id (dht_provide_tracked) */
    bool queued;        /* OP_PROVIDE: not published yet (no contact or overlay address) */
    uint64_t deadline;
    unsigned limit;
    uint8_t key[DHT_ID_LEN];
} pend_t;

typedef struct {
    uint8_t key[DHT_ID_LEN];
    bool announced; /* dht_provide accepted it */
} prov_t;

/* A seed given by host name: resolved with uv_getaddrinfo, retried until it resolves. */
typedef struct {
    char host[DHT_SVC_HOST_MAX];
    uint16_t port;
    bool has_id; /* "ID@host:port": the node expected there */
    uint8_t id[DHT_ID_LEN];
    bool resolved;
    uint64_t next_try;
    uv_getaddrinfo_t *req; /* in flight, or NULL */
} seed_name_t;

struct dht_service {
    uv_loop_t *loop;
    rbus_t *bus;
    guard_t *guard; /* NULL: no enforcement (unit tests) */
    dht_t *dht;
    uint8_t id[DHT_ID_LEN];
    uint8_t *sk; /* sodium_malloc copy of the node's secret key, for the core */
    uv_udp_t udp;
    uv_timer_t timer; /* dht_next_deadline */
    uv_timer_t house; /* DHT_SVC_HOUSE_MS */
    int open_handles;
    bool stopping;
    char bound[DHT_SVC_ADDR_MAX];
    uint8_t rxbuf[2048];
    uint8_t txbuf[DHT_MAX_DATAGRAM];

    dht_seed_t seeds[DHT_MAX_SEEDS];
    size_t nseeds;
    uint64_t seed_logged;       /* ms of the last log of a refused seed datagram (rate limit) */
    uint64_t seed_refused_seen; /* rx_seed_mismatch already logged about */
    seed_name_t names[DHT_MAX_SEEDS]; /* seeds given by host name, resolved on the thread pool */
    size_t nnames;
    bool bootstrapped;
    bool boot_called;

    char *table_path; /* NULL: amnesia */
    uint64_t next_save;
    uint8_t *saved; /* last blob written */
    size_t saved_len;

    bool have_overlay;
    rbus_peer_t *overlay; /* NULL when advertise is configured or no endpoint */
    bool overlay_asking;
    uint64_t next_overlay_ask;

    rbus_peer_t *storage; /* NULL: no re-announce, or done */
    bool list_done;       /* close storage (and a no longer needed overlay) at the next tick */
    bool list_asking;
    uint64_t next_list_ask;
    unsigned list_tries;
    char list_after[3 + 2 * DHT_ID_LEN + 1];

    prov_t *prov; /* DHT_MAX_LOCAL slots */
    size_t nprov;
    size_t nprov_queued;

    pend_t pend[DHT_SVC_MAX_PENDING];
    size_t npend;

    proto_svc_t *ps; /* op table, request checks, counters by op and status, metrics */
    met_gauge_t *m_gauge[G_COUNT];
    met_counter_t *m_counter[C_COUNT];
    uint64_t m_seen[C_COUNT];         /* what m_counter already holds */
    met_counter_t *m_waits[PS_COUNT]; /* dht_provide_waits_total{state} */
    uint64_t m_waits_seen[PS_COUNT];
    uint64_t tx_send_failed;
    uint64_t rx_dropped;      /* datagrams dht_input refused (every reason) */
    uint64_t provides_queued; /* provide requests that had to wait */
    uint64_t announced_from_store;
    uint64_t lookups_joined; /* requests that waited for a lookup already running */
    uint64_t
        provide_outcome[PS_COUNT]; /* waited provides by answer state (dht__svc_provide_states) */
    size_t nprov_wait;             /* provide requests waiting in pend[] */
};

/* The `dht` protocol's description for proto_svc (dht_service_ops.c). */
extern const proto_svc_desc_t dht__svc_desc;
/* PS_* as answered and counted: "announced", ... (dht_service_provide.c). */
extern const char *const dht__svc_provide_states[PS_COUNT];

/* ---- dht_service.c ---- */

/* Drain datagrams and events, then arm the timer for the next deadline. */
void dht__svc_pump(dht_service_t *s);
/* One of the things the memory waits for (handles, name resolutions) is done. */
void dht__svc_release(dht_service_t *s);

/* ---- dht_service_ops.c ---- */

/* The OAP_APP_DHT handler (rbus_handle): check, authorize, answer or wait. */
void dht__svc_on_request(void *arg, rbus_req_t *req, const oap_frame_t *f);
/* Answer an error (counted for op); 429 and 503 carry DHT_SVC_RETRY_MS. */
void dht__svc_answer_error(dht_service_t *s, op_t op, rbus_req_t *req, uint16_t code,
                           const char *slug, const char *reason, const char *message);
/* Answer 200 with o (taken), framed as a u32 length and the JSON. */
void dht__svc_answer_ok(dht_service_t *s, op_t op, rbus_req_t *req, json_t *o);
/* Answer the find_providers or name_get request p waits with, from the
 * lookup's result res (NULL: none) and what this node holds; frees p. */
void dht__svc_pend_answer(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res);

/* ---- dht_service_provide.c ---- */

/* The prov[] slot of key, or NULL. */
prov_t *dht__svc_prov_find(dht_service_t *s, const uint8_t key[static DHT_ID_LEN]);
/* Queue key for announcing. Returns 0 or RON_EBUSY (DHT_MAX_LOCAL keys). */
int dht__svc_prov_add(dht_service_t *s, const uint8_t key[static DHT_ID_LEN]);
/* Provides can be published: the overlay address is known and the table has a contact. */
bool dht__svc_ready(const dht_service_t *s);
/* Announce queued keys while the core accepts them. */
void dht__svc_flush_provides(dht_service_t *s);
/* A provide with wait_ms (key already in prov[]): publish and wait for the outcome. */
void dht__svc_provide_wait(dht_service_t *s, rbus_req_t *req, const uint8_t key[static DHT_ID_LEN],
                           uint64_t wait_ms);
/* The publish p waits for has every PROVIDE's outcome: answer p. */
void dht__svc_provide_done(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res);
/* Answer the provides whose wait is over. Returns the next deadline, or UINT64_MAX. */
uint64_t dht__svc_provide_expire(dht_service_t *s, uint64_t now);
/* Ask the overlay endpoint for its address, when unknown and due. */
void dht__svc_ask_overlay(dht_service_t *s);
/* Ask the storage endpoint for the next page of its objects, when due. */
void dht__svc_ask_list(dht_service_t *s);

/* ---- dht_service_net.c ---- */

/* "[ID@]HOST:PORT": a numeric host fills a and returns 0; a host name fills
 * name_out and returns 1; anything else is RON_EINVAL. */
int dht__svc_seed_parse(const char *seed, dht_seed_t *a, seed_name_t *name_out);
/* sa as a dht_addr_t (family 0: neither IPv4 nor IPv6). */
void dht__svc_addr_from_sockaddr(const struct sockaddr *sa, dht_addr_t *a);
/* Start receiving datagrams into the core. */
void dht__svc_udp_start(dht_service_t *s);
/* Send the datagrams the core queued. */
void dht__svc_flush_out(dht_service_t *s);
/* Start resolving the seed names that are due. */
void dht__svc_resolve_names(dht_service_t *s);

/* ---- dht_service_save.c ---- */

/* Write the routing table (temp + fsync + rename) when due or forced and changed. */
void dht__svc_save(dht_service_t *s, bool force);
/* Load the routing table file, when there is one that fits. */
void dht__svc_load(dht_service_t *s);

#endif
