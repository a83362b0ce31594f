/*
 * svc_dht.h - Kademlia DHT core: routing table, iterative hedged lookups,
 * signed provider records and name records (DESIGN.md §5,
 * docs/protocol/dht.md).
 *
 * The core is sans-I/O: a dht_t never opens a socket, reads a clock or asks
 * the OS for randomness. The caller feeds it datagrams (dht_input) and time
 * (dht_tick, every `now` is milliseconds of one monotonic clock the caller
 * chooses), drains the datagrams it wants sent (dht_output_next) and the
 * events it raised (dht_event_next), and calls dht_tick again by
 * dht_next_deadline. Its randomness comes from the seed in its config. So the
 * same code runs on a libuv UDP socket and inside dht_sim with thousands of
 * nodes on virtual time.
 *
 * Every datagram is one OAP/1 frame (app_proto_id 5, no HELLO) of at most
 * DHT_MAX_DATAGRAM bytes with a compact binary payload; replies are at most
 * DHT_AMP_FACTOR times their request until the requester echoes a token.
 * One thread owns a dht_t; every function below is "owner thread only".
 */
#ifndef SVC_DHT_H
#define SVC_DHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ron_naming.h"

/* ---- limits and protocol constants (each with its reason) ---- */
#define DHT_ID_LEN 32u            /* BLAKE3-256: node ids and keys share the b3 address space */
#define DHT_K 20u                 /* bucket size and lookup result size (Kademlia k) */
#define DHT_ALPHA 3u              /* parallel requests per lookup (Kademlia alpha) */
#define DHT_BUCKETS 256u          /* one bucket per shared-prefix length */
#define DHT_REPLACEMENTS 8u       /* newcomers kept per full bucket until a contact dies */
#define DHT_MAX_FAILS 3u          /* consecutive timeouts that evict a contact with no stand-in */
#define DHT_LIVENESS_TRIES 2u     /* ... or with one: lossy links must not empty the table */
#define DHT_MAX_DATAGRAM 1200u    /* whole OAP/1 frame: below every path MTU, no IP fragments */
#define DHT_AMP_FACTOR 3u         /* reply <= 3 x request until the requester echoes a token */
#define DHT_PAD_UNTOKENED 400u    /* untokened lookup requests are padded so 3x fits a full reply */
#define DHT_TOKEN_LEN 8u          /* keyed BLAKE3 of the requester's address, truncated */
#define DHT_TOKEN_ROTATE_MS 300000u   /* secret rotation; the previous secret stays valid */
#define DHT_REQUEST_TIMEOUT_MS 1000u  /* a request without a reply by then has failed */
#define DHT_MAX_INFLIGHT 1024u    /* outstanding requests per node; more are refused */
#define DHT_MAX_LOOKUPS 128u      /* concurrent lookups per node (RON_EBUSY beyond) */
#define DHT_LOOKUP_CANDIDATES 64u /* shortlist of a lookup: the closest ids heard of */
#define DHT_RTT_SAMPLES 128u      /* recent request round trips behind the hedge threshold */
#define DHT_HEDGE_PCT 95u         /* a step slower than this percentile gets one extra request */
#define DHT_HEDGE_MIN_SAMPLES 32u /* no hedging before this many round trips were observed */
#define DHT_PROVIDER_TTL_S 86400u /* provider and name records live 24 h ... */
#define DHT_REPUBLISH_MS 43200000u    /* ... and their publisher renews them every 12 h */
#define DHT_PUBLISH_RETRY_MS 10000u   /* a publish no node accepted is tried again after 10 s, */
#define DHT_PUBLISH_RETRY_MAX_MS 600000u /* doubling up to 10 min (a lone node stays cheap) */
#define DHT_MAX_FUTURE_S 300u     /* a record's ts may lead our clock by 5 min (skew) */
#define DHT_REFRESH_MS 3600000u   /* a bucket without traffic for 1 h is refreshed by a lookup */
#define DHT_MAINT_MS 10000u       /* period of housekeeping (expiry, refresh, republish) */
#define DHT_SELF_LOOKUP_MIN_MS 10000u /* self-lookups repeat from 10 s after joining, doubling
                                         while they find nothing new, up to DHT_REFRESH_MS */
#define DHT_MAX_SEEDS 16u         /* bootstrap addresses kept */
#define DHT_MAX_PROVIDERS_PER_KEY 20u  /* default per-key limit (k providers suffice) */
#define DHT_MAX_RECORDS_PER_PEER 256u  /* default per source-address limit */
#define DHT_MAX_RECORDS 65536u    /* default total records stored for others */
#define DHT_MAX_LOCAL 4096u       /* keys and names this node publishes itself */
#define DHT_MAX_OUT_BYTES 262144u /* queued outgoing bytes; beyond, datagrams are dropped */
#define DHT_MAX_EVENTS 256u       /* queued events; lookups beyond are refused (RON_EBUSY) */
#define DHT_MSG_MAX_PROVIDERS 8u  /* provider records one reply can carry */
#define DHT_SAVE_MAX (48u + DHT_BUCKETS * DHT_K * 52u) /* largest routing-table blob */

/* ---- message codes (docs/protocol/dht.md) ---- */
enum {
    DHT_OP_PING = 1,
    DHT_OP_FIND_NODE = 2,
    DHT_OP_FIND_VALUE = 3,
    DHT_OP_PROVIDE = 4,
};
enum {
    DHT_MSG_F_TOKEN = 0x01,     /* request: token field echoes the responder's token */
    DHT_MSG_F_TRUNCATED = 0x02, /* reply: cut to 3x the request; retry with the token */
    DHT_MSG_F_NAME = 0x04,      /* FIND_VALUE reply / PROVIDE request carries a name record */
};

/* A UDP endpoint. family 4 uses ip[0..4); the rest of ip is zero. */
typedef struct {
    uint8_t family; /* 4 or 6 */
    uint8_t ip[16]; /* network order */
    uint16_t port;  /* host order, != 0 */
} dht_addr_t;

typedef struct {
    uint8_t id[DHT_ID_LEN];
    dht_addr_t addr;
} dht_contact_t;

/* A provider record: "pk serves the object key at addr", signed by pk. */
typedef struct {
    uint8_t key[DHT_ID_LEN];   /* the object's b3 address */
    uint8_t pk[NAME_KEY_LEN];  /* provider's Ed25519 key; its node id is BLAKE3(pk) */
    dht_addr_t addr;           /* where to fetch it (the provider's overlay address) */
    uint64_t ts;               /* unix s when signed */
    uint32_t ttl;              /* s, <= DHT_PROVIDER_TTL_S; 0 withdraws the record */
    uint8_t sig[NAME_SIG_LEN]; /* Ed25519 over dht_provider_signing_bytes */
} dht_provider_t;

/* One decoded datagram. Field use by op and direction in docs/protocol/dht.md. */
typedef struct {
    uint64_t txid;   /* OAP corr_id: chosen by the requester, echoed by the reply */
    bool reply;      /* OAP RESP|END (else REQ|START|END) */
    uint16_t status; /* OAP code on replies: 200, or 4xx for a refused PROVIDE */
    uint8_t op;      /* DHT_OP_* */
    uint8_t flags;   /* DHT_MSG_F_* */
    uint8_t sender[DHT_ID_LEN];
    uint8_t token[DHT_TOKEN_LEN]; /* request: echoed (F_TOKEN); reply: fresh for the requester */
    uint8_t target[DHT_ID_LEN];   /* FIND_NODE/FIND_VALUE request; FIND_VALUE reply */
    uint16_t pad;        /* request: zero bytes appended (decoded: how many were present) */
    uint8_t n_contacts;  /* FIND_NODE/FIND_VALUE reply: <= DHT_K */
    uint8_t n_providers; /* FIND_VALUE reply: <= DHT_MSG_MAX_PROVIDERS; PROVIDE request: 1 */
    /* the scalar fields above come first: zeroing up to `contacts` clears them all */
    dht_contact_t contacts[DHT_K];
    dht_provider_t providers[DHT_MSG_MAX_PROVIDERS];
    name_record_t name; /* valid with DHT_MSG_F_NAME */
} dht_msg_t;

/* ---- ids and the XOR metric ---- */

/* Shared leading bits of a and b (0..256): the bucket index of b in a's table. */
unsigned dht_id_common_bits(const uint8_t a[static DHT_ID_LEN], const uint8_t b[static DHT_ID_LEN]);

/* Compare the XOR distances of a and b to target: <0 when a is closer, 0 when equal. */
int dht_id_distance_cmp(const uint8_t target[static DHT_ID_LEN], const uint8_t a[static DHT_ID_LEN],
                        const uint8_t b[static DHT_ID_LEN]);

/* The node id of an Ed25519 public key: BLAKE3(pk). */
void dht_id_of_key(uint8_t id_out[static DHT_ID_LEN], const uint8_t pk[static NAME_KEY_LEN]);

/* The key a name record is stored under: BLAKE3 of the canonical name. */
void dht_id_of_name(uint8_t id_out[static DHT_ID_LEN], const char *name);

/* Do a and b name the same endpoint? */
bool dht_addr_equal(const dht_addr_t *a, const dht_addr_t *b);

/* ---- messages (docs/protocol/dht.md) ---- */

/*
 * Encode m as one OAP/1 frame into out. Returns its length; RON_ETOOBIG when
 * it would exceed min(cap, DHT_MAX_DATAGRAM); RON_EINVAL for a message that
 * violates the format (counts over limits, a malformed name record, a bad
 * address family, pad on a reply).
 */
ssize_t dht_msg_encode(const dht_msg_t *m, uint8_t *out, size_t cap);

/*
 * Decode one datagram strictly: exactly one OAP/1 frame of exactly len bytes,
 * app_proto_id 5, flags REQ|START|END or RESP|END, no cap, tenant 0, a known
 * op, counts within limits, every field present and nothing left over except
 * zero padding on requests. No signature is checked. Returns 0 or
 * RON_EPROTO (RON_ETOOBIG when len > DHT_MAX_DATAGRAM).
 */
int dht_msg_decode(dht_msg_t *m_out, const uint8_t *buf, size_t len);

/* ---- provider records ---- */

#define DHT_PROVIDER_DOMAIN "ron-dht-provider-v1" /* signing domain, NUL included in the bytes */
#define DHT_PROVIDER_SIGNING_MAX 128u

/* Write p's signing bytes (without sig) into buf. Returns their length or RON_EINVAL. */
ssize_t dht_provider_signing_bytes(const dht_provider_t *p,
                                   uint8_t buf[static DHT_PROVIDER_SIGNING_MAX]);

/* Set p->pk from sk (libsodium Ed25519 secret key, borrowed) and sign p.
 * Returns 0, RON_EINVAL (bad address) or RON_EAUTH (libsodium failed). */
int dht_provider_sign(dht_provider_t *p, const uint8_t sk[static NAME_SECRET_KEY_LEN]);

/*
 * Check p at unix time now_s: signature by p->pk, ttl <= DHT_PROVIDER_TTL_S,
 * ts <= now_s + DHT_MAX_FUTURE_S, and not expired (ts + ttl > now_s, except a
 * withdrawal, ttl 0). Returns 0, RON_EDHTSIG, RON_EDHTEXPIRED or RON_EDHTRECORD.
 */
int dht_provider_verify(const dht_provider_t *p, int64_t now_s);

/* ---- the node ---- */

typedef struct dht dht_t;

typedef struct {
    uint8_t id[DHT_ID_LEN];   /* this node's id (BLAKE3 of its key when sk is set) */
    const uint8_t *sk;        /* borrowed Ed25519 secret key (NAME_SECRET_KEY_LEN) or NULL:
                                 needed only to publish provider records */
    dht_addr_t overlay_addr;  /* address provider records point to (family 0: unset) */
    uint8_t seed[32];         /* all randomness (tokens, txids, refresh ids) derives from it */
    int64_t wall_offset_ms;   /* unix ms = now + this, for record timestamps and TTLs */
    uint32_t max_records;     /* records stored for others; 0 = DHT_MAX_RECORDS */
    uint32_t max_per_key;     /* providers per key; 0 = DHT_MAX_PROVIDERS_PER_KEY */
    uint32_t max_per_peer;    /* records per source address; 0 = DHT_MAX_RECORDS_PER_PEER */
    bool hedge;               /* hedge lookup steps slower than the observed p95 */
} dht_config_t;

/* Set cfg to defaults: zero id and seed, no key, hedging on. */
void dht_config_init(dht_config_t *cfg);

/*
 * Create a node (returns new; dht_free releases it). cfg is copied, cfg->sk
 * borrowed and must outlive the node. Returns NULL with *rc_out (may be
 * NULL) RON_EINVAL when cfg->sk does not match cfg->id.
 */
dht_t *dht_new(const dht_config_t *cfg, uint64_t now, int *rc_out);
void dht_free(dht_t *d);

/*
 * Handle one received datagram (buf borrowed) from `from` at time now.
 * Returns 0 when it was used; otherwise the datagram was dropped and counted:
 * RON_EPROTO/RON_ETOOBIG (malformed), RON_EDHTSIG (forged record),
 * RON_ENOTFOUND (a reply nobody asked for), RON_EFLOOD (in-flight limit).
 */
int dht_input(dht_t *d, const uint8_t *buf, size_t len, const dht_addr_t *from, uint64_t now);

/* Run timers due at now (timeouts, hedges, housekeeping). Cheap when nothing is due. */
void dht_tick(dht_t *d, uint64_t now);

/* The time by which dht_tick must be called next (absolute, same clock as now). */
uint64_t dht_next_deadline(const dht_t *d);

/*
 * Take the next queued datagram: copies it into buf (cap >= DHT_MAX_DATAGRAM
 * always suffices) and its destination into to_out. Returns its length,
 * RON_EAGAIN when nothing is queued, or -ENOBUFS when cap is too small
 * (the datagram stays queued).
 */
ssize_t dht_output_next(dht_t *d, uint8_t *buf, size_t cap, dht_addr_t *to_out);

/* ---- lookups ---- */

typedef enum {
    DHT_LOOKUP_NODES = 1, /* the DHT_K closest nodes to a target */
    DHT_LOOKUP_VALUE = 2, /* providers and the name record stored under a key */
} dht_lookup_kind_t;

enum { DHT_LOOKUP_F_NO_HEDGE = 1 }; /* plain Kademlia for this lookup (baseline) */

typedef struct {
    uint32_t hops;       /* round that found the closest node: table contacts are round 1 */
    uint32_t rounds;     /* deepest round among all DHT_K result nodes */
    uint32_t requests;   /* requests sent, hedges included */
    uint32_t hedged;     /* of which extra requests sent because a step was slower than p95 */
    uint32_t timeouts;   /* requests that got no reply in DHT_REQUEST_TIMEOUT_MS */
    uint64_t latency_ms; /* start to completion */
    uint64_t converged_ms; /* start to the final round: the closest candidate had answered
                              without naming a closer one (latency_ms when it never did) */
} dht_lookup_stats_t;

typedef struct {
    uint32_t id; /* as returned by dht_lookup */
    dht_lookup_kind_t kind;
    uint8_t target[DHT_ID_LEN];
    uint32_t n_closest; /* responsive nodes, closest first */
    dht_contact_t closest[DHT_K];
    uint32_t n_providers; /* verified, unexpired, one per provider key */
    dht_provider_t providers[DHT_MAX_PROVIDERS_PER_KEY];
    bool has_name; /* a verified name record; the highest seq of the first owner heard */
    name_record_t name;
    bool complete; /* every candidate asked answered (none timed out or was left overdue),
                      or DHT_K did: an absent value is absent from the k closest */
    /* a publish (DHT_EV_PUBLISHED): its record's PROVIDE to each node of closest */
    uint32_t store_sent;    /* PROVIDE requests sent */
    uint32_t store_acked;   /* ... accepted (200) */
    uint32_t store_refused; /* ... refused (4xx); the rest timed out */
    dht_lookup_stats_t stats;
} dht_lookup_result_t;

typedef enum {
    DHT_EV_LOOKUP_DONE = 1, /* result is set */
    DHT_EV_BOOTSTRAPPED = 2, /* the first self-lookup after dht_bootstrap finished */
    DHT_EV_PUBLISHED = 3,   /* a dht_provide_tracked publish has every PROVIDE's outcome:
                               result is set (id, target = key, closest, store_*) */
} dht_event_type_t;

typedef struct {
    dht_event_type_t type;
    const dht_lookup_result_t *result; /* view, valid until the next call on the node */
} dht_event_t;

/* Take the next event. Returns 0 or RON_EAGAIN when none is queued. */
int dht_event_next(dht_t *d, dht_event_t *ev_out);

/*
 * Start an iterative lookup of target (copied); completion is reported once
 * by a DHT_EV_LOOKUP_DONE event with the same id. flags: DHT_LOOKUP_F_*.
 * Returns 0, or RON_EBUSY when DHT_MAX_LOOKUPS are running or the event queue
 * is full.
 */
int dht_lookup(dht_t *d, const uint8_t target[static DHT_ID_LEN], dht_lookup_kind_t kind,
               unsigned flags, uint64_t now, uint32_t *id_out);

/*
 * Ping the seed addresses (copied; at most DHT_MAX_SEEDS are kept), learn
 * their ids, look up our own id, then refresh the buckets farther away.
 * Seeds are pinged again while the table stays empty. A DHT_EV_BOOTSTRAPPED
 * event follows the self-lookup. Returns 0 or RON_EINVAL (n == 0 with an
 * empty table, or a seed without a valid family/port).
 */
int dht_bootstrap(dht_t *d, const dht_addr_t *seeds, size_t n, uint64_t now);

/* A seed address, optionally with the node id expected there ("ID@HOST:PORT"). */
typedef struct {
    dht_addr_t addr;
    bool has_id;
    uint8_t id[DHT_ID_LEN];
} dht_seed_t;

/*
 * As dht_bootstrap, for seeds that may name the node they expect. A
 * datagram from a pinned seed's address whose sender is another id is
 * refused: no answer, no table entry (also later, whatever it claims),
 * counted in rx_seed_mismatch and remembered for dht_seed_mismatch_last.
 */
int dht_bootstrap_seeds(dht_t *d, const dht_seed_t *seeds, size_t n, uint64_t now);

/* The last datagram refused under that rule: the seed it came from (with
 * the id expected) and the id it carried. Returns 0, or RON_ENOTFOUND when
 * none was refused. */
int dht_seed_mismatch_last(const dht_t *d, dht_seed_t *seed_out, uint8_t id_out[static DHT_ID_LEN]);

/*
 * Announce that this node provides key: sign a record (cfg overlay_addr,
 * ts now, ttl DHT_PROVIDER_TTL_S), keep it in the store, look up key and send
 * it to the DHT_K closest nodes; repeated every DHT_REPUBLISH_MS.
 * Returns 0, RON_EINVAL (no sk or no overlay_addr), RON_EBUSY (DHT_MAX_LOCAL
 * keys) or the error of dht_lookup.
 */
int dht_provide(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now);

/*
 * As dht_provide, and report the outcome of this publish: once each node
 * the PROVIDE went to has accepted it, refused it or timed out
 * (DHT_REQUEST_TIMEOUT_MS), a DHT_EV_PUBLISHED event with the id stored in
 * *id_out follows (result->store_acked counts the nodes that hold the
 * record now; 0 when the lookup reached nobody). Every publish, tracked or
 * not, that no node accepted is tried again after DHT_PUBLISH_RETRY_MS,
 * doubling up to DHT_PUBLISH_RETRY_MAX_MS, until one does. Returns as
 * dht_provide, and RON_EBUSY when the event queue is full.
 */
int dht_provide_tracked(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now,
                        uint32_t *id_out);

/* Stop providing key: forget it locally and send a signed withdrawal (ttl 0)
 * to the closest nodes. Returns 0 or RON_ENOTFOUND. */
int dht_unprovide(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now);

/*
 * Publish a signed name record (copied) under BLAKE3(name): validated with
 * ron-naming's acceptance rule against what this node holds, stored, sent to
 * the DHT_K closest nodes, and republished every DHT_REPUBLISH_MS.
 * Returns 0, an error of name_record_accept, or RON_EBUSY.
 */
int dht_name_publish(dht_t *d, const name_record_t *rec, uint64_t now);

/* ---- routing table ---- */

/* Contacts in the table (replacement caches excluded). */
size_t dht_table_size(const dht_t *d);

/* Copy the up to n closest contacts to target into out, closest first. Returns how many. */
size_t dht_table_closest(const dht_t *d, const uint8_t target[static DHT_ID_LEN],
                         dht_contact_t *out, size_t n);

/*
 * Serialize the table as a compact blob (format in docs/protocol/dht.md §7)
 * into buf (DHT_SAVE_MAX always suffices). Returns its length or -ENOBUFS.
 */
ssize_t dht_table_save(const dht_t *d, uint8_t *buf, size_t cap);

/*
 * Add the contacts of a blob written by dht_table_save for the same node id.
 * Strict: a wrong magic, version, node id, checksum, length, family, port,
 * duplicate or own id rejects the whole blob (RON_EDHTBLOB), nothing added.
 */
int dht_table_load(dht_t *d, const uint8_t *buf, size_t len, uint64_t now);

/* ---- statistics ---- */

typedef struct {
    uint64_t rx_datagrams, rx_bytes;    /* received, dropped ones included */
    uint64_t tx_datagrams, tx_bytes;    /* queued for sending */
    uint64_t rx_malformed;              /* not a well-formed DHT datagram */
    uint64_t rx_forged;                 /* records with a bad signature or bad TTL */
    uint64_t rx_unsolicited;            /* replies matching no request of ours */
    uint64_t rx_id_mismatch;            /* replies from an address whose id changed */
    uint64_t rx_seed_mismatch;          /* datagrams from a pinned seed's address, another id */
    uint64_t tx_truncated;              /* replies cut to 3x an untokened request */
    uint64_t tx_dropped;                /* outgoing queue full */
    uint64_t requests_sent, requests_timeout, requests_hedged;
    uint64_t records_stored, records_rejected_limit, records_expired;
    uint64_t provide_acks, provide_refused;
    uint64_t lookups_started, lookups_done;
    uint64_t evictions;                 /* contacts evicted after failed liveness checks */
} dht_stats_t;

/* A view of the node's counters, valid while the node lives. */
const dht_stats_t *dht_stats(const dht_t *d);

/* The hedge threshold now in use (ms): the observed p95 step, or 0 (not hedging yet). */
uint32_t dht_hedge_threshold(const dht_t *d);

/* ---- what a node service needs besides the above (dht_view.c) ---- */

/* Set the address provider records point to (copied; family 0 unsets it):
 * a node learns its overlay's address after the DHT is up. Records already
 * signed keep theirs until their next republish. */
void dht_set_overlay_addr(dht_t *d, const dht_addr_t *addr);

/* Records held (for others and for ourselves). */
size_t dht_record_count(const dht_t *d);

/* The name record held under key (BLAKE3 of the name), or NULL: a view valid
 * until the next call on the node. */
const name_record_t *dht_name_held(const dht_t *d, const uint8_t key[static DHT_ID_LEN]);

/* Copy up to n provider records held under key into out. Returns how many.
 * Not re-verified: check them with dht_provider_verify. */
size_t dht_providers_held(const dht_t *d, const uint8_t key[static DHT_ID_LEN],
                          dht_provider_t *out, size_t n);

#endif
