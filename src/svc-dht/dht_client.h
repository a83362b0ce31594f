/*
 * dht_client.h - a small client of the node's `dht` endpoint over ron-bus
 * (docs/protocol/dht.md §10): find providers of an object, announce or
 * withdraw this node as a provider, put and get name records, read the
 * DHT's status. Used by svc-storage (providers) and svc-index (names) so
 * that neither hand-writes the JSON of the protocol.
 *
 * Loop-thread only, asynchronous: each call sends one request frame (a
 * big-endian u32 JSON length, then compact JSON) and reports once through
 * its callback, never from inside the call. Answers are parsed strictly
 * where they feed a decision: provider ids and addresses are checked, and a
 * name record goes through ron-naming's parser and signature check again.
 */
#ifndef DHT_CLIENT_H
#define DHT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ron_bus.h"
#include "ron_naming.h"
#include "svc_dht.h"

/* ---- limits ---- */
#define DHT_CLIENT_DEADLINE_MS 12000u  /* per request: lookups answer 504 at 10 s, plus slack */
#define DHT_CLIENT_TEXT_MAX 256u       /* bytes kept of an answer's reason and message */
#define DHT_CLIENT_ADDR_MAX 64u        /* "[v6]:PORT" text of a network address, NUL included */
#define DHT_CLIENT_MAX_PROVIDERS 20u   /* providers one find_providers answer may carry */
#define DHT_CLIENT_PROVIDE_SLACK_MS 1000u /* provide_wait's deadline beyond its wait_ms */

/* One provider of an object: its node id and its overlay address. */
typedef struct {
    uint8_t id[DHT_ID_LEN];
    char addr[DHT_CLIENT_ADDR_MAX]; /* "HOST:PORT" or "[v6]:PORT" */
} dht_client_provider_t;

/* The `status` answer. */
typedef struct {
    uint8_t id[DHT_ID_LEN];         /* this node's id */
    char addr[DHT_CLIENT_ADDR_MAX]; /* the DHT's bound UDP address */
    uint64_t contacts;              /* routing-table contacts */
    uint64_t records;               /* records held for others and ourselves */
    uint64_t provided;              /* keys this node announces (queued ones included) */
    bool bootstrapped;
} dht_client_status_t;

/* The outcome of one request (views valid during the callback). */
typedef struct {
    int status;          /* 0: answered (see code); else RON_EUNAVAIL, RON_ETIMEOUT,
                            RON_EBUSY, RON_ESHUTDOWN (retryable: not answered) or
                            RON_EPROTO (an answer that does not parse) */
    uint16_t code;       /* the service's status: 200, 400, 404, 409, 429, 503, 504 */
    const char *reason;  /* the envelope's reason ("" when none or 200) */
    const char *message; /* the envelope's message ("" when none or 200) */
    size_t n_providers;  /* 200 find_providers */
    const dht_client_provider_t *providers;
    bool complete;       /* 200 find_providers: every node the lookup asked answered, so
                            no provider means none in the DHT (false when not said) */
    const char *provide_state; /* 200 provide with a wait: "announced", "unannounced",
                                  "pending" or "queued" (dht.md §10); else NULL */
    uint64_t announced;  /* ... nodes that accepted the record */
    uint64_t sent;       /* ... nodes it was sent to */
    const name_record_t *rec;          /* 200 name_get: the verified record; else NULL */
    const dht_client_status_t *status_info; /* 200 status; else NULL */
} dht_client_result_t;

typedef void (*dht_client_cb)(void *arg, const dht_client_result_t *res);

/*
 * Ask for up to limit (1..DHT_CLIENT_MAX_PROVIDERS; 0 = the service's
 * default, 8) providers of the object addr through peer (an outbound peer
 * connected to "dht"). The service runs one DHT lookup. Returns 0 (cb will
 * be called), RON_EINVAL (limit), or rbus_request's error (cb never called).
 */
int dht_client_find_providers(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                              unsigned limit, dht_client_cb cb, void *arg);

/*
 * As dht_client_find_providers_cap (cap: NULL for none), with the request's
 * deadline deadline_ms (1..DHT_CLIENT_DEADLINE_MS; 0 = DHT_CLIENT_DEADLINE_MS)
 * instead of the default: past it cb gets status RON_ETIMEOUT and a late
 * answer is dropped. For a caller that must answer a miss soon (svc-storage's
 * fetch on miss).
 */
int dht_client_find_providers_within(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                                     unsigned limit, const char *cap, uint32_t deadline_ms,
                                     dht_client_cb cb, void *arg);

/*
 * Announce (provide) or withdraw (unprovide) this node as a provider of
 * addr. cb may be NULL (fire and forget: the answer is dropped). Returns as
 * dht_client_find_providers.
 */
int dht_client_provide(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN], dht_client_cb cb,
                       void *arg);
int dht_client_unprovide(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                         dht_client_cb cb, void *arg);

/*
 * Announce this node as a provider of addr (cap as in the _cap calls below)
 * and wait for the outcome, at most wait_ms (1..DHT_SVC_PROVIDE_WAIT_MAX):
 * the service answers once the record's publish knows which of the closest
 * nodes accepted it, or when wait_ms passed (res->provide_state, announced,
 * sent). The request's deadline is wait_ms + DHT_CLIENT_PROVIDE_SLACK_MS
 * (RON_ETIMEOUT past it). cb must not be NULL. Returns 0 (cb will be
 * called), RON_EINVAL (wait_ms, cb), or rbus_request's error.
 */
int dht_client_provide_wait(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                            const char *cap, uint32_t wait_ms, dht_client_cb cb, void *arg);

/* Store and publish a signed name record (borrowed) in the DHT. cb may be
 * NULL. Returns as dht_client_find_providers (RON_EINVAL: rec malformed). */
int dht_client_name_put(rbus_peer_t *peer, const name_record_t *rec, dht_client_cb cb, void *arg);

/* Look up the record of name (borrowed; user input, normalized by the
 * service). Returns as dht_client_find_providers (RON_EINVAL: too long). */
int dht_client_name_get(rbus_peer_t *peer, const char *name, dht_client_cb cb, void *arg);

/* Read the DHT's status. Returns as dht_client_find_providers. */
int dht_client_status(rbus_peer_t *peer, dht_client_cb cb, void *arg);

/*
 * The same requests with a capability: cap (a NUL-terminated token,
 * borrowed; NULL: none) rides in the request frame's cap section, as the
 * enforcing `dht` endpoint wants it (provide and unprovide need the put op,
 * name_put the name op; find_providers and name_get are public reads under
 * the default policy). A service asking on its own behalf passes its
 * guard_self_token(); one asking for a client forwards the client's token.
 */
int dht_client_find_providers_cap(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                                  unsigned limit, const char *cap, dht_client_cb cb, void *arg);
int dht_client_provide_cap(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                           const char *cap, dht_client_cb cb, void *arg);
int dht_client_unprovide_cap(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                             const char *cap, dht_client_cb cb, void *arg);
int dht_client_name_put_cap(rbus_peer_t *peer, const name_record_t *rec, const char *cap,
                            dht_client_cb cb, void *arg);
int dht_client_name_get_cap(rbus_peer_t *peer, const char *name, const char *cap, dht_client_cb cb,
                            void *arg);

#endif
