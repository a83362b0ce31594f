/*
 * dht_internal.h - the node's state, shared by the svc-dht files and its tests.
 * Invariants: a bucket's contacts are ordered least recently seen first;
 * every in-flight request has a slot in d->reqs[0..nreqs); a lookup's
 * shortlist is sorted by XOR distance to its target, closest first.
 */
#ifndef DHT_INTERNAL_H
#define DHT_INTERNAL_H

#include "svc_dht.h"

#define DHT__NIL UINT32_MAX
#define DHT__NEVER UINT64_MAX

/* ---- seeded randomness: BLAKE3 in keyed XOF mode as a DRBG ---- */
typedef struct {
    uint8_t key[32];
    uint64_t counter; /* blocks produced */
    uint8_t buf[64];
    uint32_t pos; /* next unused byte of buf; 64 = empty */
} dht__rng_t;

void dht__rng_init(dht__rng_t *r, const uint8_t seed[static 32]);
void dht__rng_bytes(dht__rng_t *r, uint8_t *out, size_t n);
uint64_t dht__rng_u64(dht__rng_t *r);

/* ---- routing table ---- */
typedef struct {
    uint8_t id[DHT_ID_LEN];
    dht_addr_t addr;
    uint64_t last_seen; /* ms; 0 = never heard from (loaded or seeded) */
    uint8_t fails;      /* consecutive timeouts */
    bool has_token;
    uint8_t token[DHT_TOKEN_LEN]; /* its last token for us */
    uint64_t token_at;            /* ms it came: valid for DHT_TOKEN_ROTATE_MS at least */
} dht__contact_t;

typedef struct {
    dht__contact_t *c;      /* DHT_K + DHT_REPLACEMENTS slots, allocated on first use */
    uint8_t n;              /* contacts in c[0..n), least recently seen first */
    uint8_t nrep;           /* replacements in c[DHT_K .. DHT_K + nrep), oldest first */
    bool pinging;           /* a liveness ping to c[0] is in flight */
    uint64_t refreshed;     /* ms of the last lookup into this bucket */
} dht__bucket_t;

/* ---- records ---- */
typedef struct { /* open addressing, linear probing, backward-shift deletion */
    uint8_t (*keys)[DHT_ID_LEN];
    uint32_t *vals;
    uint32_t cap; /* power of two, or 0 */
    uint32_t n;
    uint8_t hkey[16]; /* SipHash key: peers cannot choose colliding keys */
} dht__map_t;

enum { DHT__REC_FREE = 0, DHT__REC_PROVIDER = 1, DHT__REC_NAME = 2 };

typedef struct {
    uint8_t kind;            /* DHT__REC_* */
    uint8_t peer[DHT_ID_LEN]; /* per-peer accounting key of the sender (local: all 0xff) */
    uint32_t next;           /* next record under the same key, or DHT__NIL */
    uint64_t expires_ms;     /* drop after this time */
    dht_provider_t prov;     /* kind PROVIDER (prov.key is the record's key) */
    name_record_t *name;     /* kind NAME, owned */
    uint8_t key[DHT_ID_LEN]; /* the key it is stored under */
} dht__rec_t;

typedef struct {
    dht__rec_t *recs;
    uint32_t cap, n; /* slots allocated; records in use */
    uint32_t free_head;
    dht__map_t by_key;  /* key -> first record index */
    dht__map_t by_peer; /* peer -> records count */
} dht__store_t;

/* What this node publishes itself and renews. */
typedef struct {
    uint8_t key[DHT_ID_LEN];
    bool is_name;
    uint64_t next_publish; /* ms */
    uint8_t retries;       /* publishes in a row no node accepted (retry backoff) */
    name_record_t *name;   /* owned, is_name only */
} dht__local_t;

/* ---- requests and lookups ---- */
enum {
    DHT__P_LOOKUP = 1, /* a lookup step */
    DHT__P_LIVENESS,   /* ping of a bucket's least recently seen contact */
    DHT__P_SEED,       /* bootstrap ping to a seed address */
    DHT__P_STORE,      /* PROVIDE to one of the closest nodes */
};

typedef struct {
    uint64_t txid;
    dht_addr_t to;
    uint8_t id[DHT_ID_LEN]; /* expected responder id (has_id) */
    bool has_id;
    uint8_t op, purpose;
    uint16_t req_len;   /* bytes of the request: a reply may be 3x this */
    uint32_t lookup;    /* slot index (DHT__P_LOOKUP) */
    uint32_t lookup_id; /* and the lookup's id, to detect reuse of the slot */
    uint64_t sent;      /* ms */
    uint64_t hedge_at;  /* ms; DHT__NEVER when not hedgeable or already hedged */
    uint16_t bucket;    /* DHT__P_LIVENESS */
} dht__req_t;

enum { DHT__C_NEW = 0, DHT__C_INFLIGHT, DHT__C_DONE, DHT__C_FAILED };

typedef struct {
    uint8_t id[DHT_ID_LEN];
    dht_addr_t addr;
    uint8_t state;    /* DHT__C_* */
    uint8_t hop;      /* round: 1 for table contacts, parent's + 1 otherwise */
    bool overdue;     /* slower than the hedge threshold; replaced in the top k */
    uint8_t level;    /* 0: asked in turn; n: asked as the hedge of a level n - 1 request */
    bool has_token;
    uint8_t token[DHT_TOKEN_LEN];
    uint64_t token_at; /* ms */
} dht__cand_t;

enum { DHT__L_USER = 0, DHT__L_REFRESH, DHT__L_BOOT, DHT__L_PUBLISH, DHT__L_SELF };

typedef struct {
    bool used;
    bool reported;    /* done; its event is queued (slot freed once taken) */
    uint8_t purpose;  /* DHT__L_* */
    bool hedge;
    uint32_t inflight; /* requests in flight that are not overdue */
    uint64_t started;
    bool converged;     /* the final round began (res.stats.converged_ms is set) */
    uint8_t send_level; /* level of the requests the current step sends */
    dht_lookup_result_t res;
    dht__cand_t cand[DHT_LOOKUP_CANDIDATES];
    uint32_t ncand;
    bool pub_is_name;      /* DHT__L_PUBLISH: sends pub_name, else pub_prov */
    bool pub_notify;       /* DHT__L_PUBLISH: emit DHT_EV_PUBLISHED once the PROVIDEs ended */
    uint32_t stores_out;   /* DHT__L_PUBLISH: PROVIDEs in flight (the slot lives until 0) */
    dht_provider_t pub_prov;
    name_record_t pub_name;
} dht__lookup_t;

struct dht {
    dht_config_t cfg;
    uint8_t pk[NAME_KEY_LEN];
    dht__rng_t rng;
    dht_stats_t stats;

    dht__bucket_t buckets[DHT_BUCKETS];
    size_t table_n;
    uint16_t top; /* 1 + the deepest non-empty bucket, 0 when empty */

    uint8_t secret[2][32]; /* token MAC keys: current, previous */
    uint64_t secret_rotated;

    dht__req_t *reqs; /* DHT_MAX_INFLIGHT slots, allocated on first use */
    uint32_t nreqs;

    dht__lookup_t *lookups[DHT_MAX_LOOKUPS]; /* allocated per lookup */
    uint32_t next_lookup_id;
    uint32_t nlookups;

    uint32_t rtt[DHT_RTT_SAMPLES]; /* ring of recent round trips, ms */
    uint32_t rtt_n, rtt_pos, rtt_since;
    uint32_t hedge_ms; /* current threshold, 0 = not yet */

    dht__store_t store;
    dht__local_t *local; /* DHT_MAX_LOCAL slots, allocated on first use */
    uint32_t nlocal;

    dht_seed_t seeds[DHT_MAX_SEEDS];
    uint32_t nseeds;
    bool seed_refused;               /* a datagram broke a seed's pinned id */
    dht_seed_t refused_seed;         /* the last one: its seed */
    uint8_t refused_id[DHT_ID_LEN];  /* and the id it carried */
    bool booting; /* between dht_bootstrap and the end of the self-lookup */
    uint64_t next_seed_ping;
    uint64_t self_at;       /* next self-lookup, ms; DHT__NEVER before bootstrap */
    uint64_t self_interval; /* ms, DHT_SELF_LOOKUP_MIN_MS .. DHT_REFRESH_MS */
    uint64_t self_digest;   /* of the last self-lookup's result, to see whether it changed */
    uint64_t next_maint;
    uint32_t refresh_running;

    uint8_t *out; /* queued datagrams: [u16 len][dht_addr_t][bytes]... */
    size_t out_len, out_pos, out_cap;

    dht_msg_t *rx_msg, *tx_msg; /* scratch for dht_input and its reply (no malloc per datagram) */

    uint32_t ev[DHT_MAX_EVENTS]; /* ring: lookup slot, or DHT__NIL for BOOTSTRAPPED */
    uint32_t ev_head, ev_n;
    uint32_t ev_free; /* slot whose event was taken last; freed on the next call */
    dht_lookup_result_t boot_res;
};

/* dht.c */
uint64_t dht__wall_s(const dht_t *d, uint64_t now);
int dht__send_request(dht_t *d, dht_msg_t *m, const dht_addr_t *to, const uint8_t *id,
                      const uint8_t *token, uint8_t purpose, uint64_t now, dht__req_t **req_out);
void dht__emit(dht_t *d, uint32_t what);

/* dht_table.c */
dht__bucket_t *dht__bucket_of(dht_t *d, const uint8_t id[static DHT_ID_LEN]);
void dht__table_seen(dht_t *d, const uint8_t id[static DHT_ID_LEN], const dht_addr_t *addr,
                     const uint8_t *token, uint64_t now);
void dht__table_failed(dht_t *d, const uint8_t id[static DHT_ID_LEN], const dht_addr_t *addr);
void dht__table_liveness_result(dht_t *d, uint16_t bucket, const uint8_t id[static DHT_ID_LEN],
                                bool alive, uint64_t now);
dht__contact_t *dht__table_find(dht_t *d, const uint8_t id[static DHT_ID_LEN]);
size_t dht__table_closest(const dht_t *d, const uint8_t target[static DHT_ID_LEN],
                          const dht__contact_t **out, size_t n);
void dht__table_refresh(dht_t *d, uint64_t now);
void dht__random_in_bucket(dht_t *d, unsigned b, uint8_t id_out[static DHT_ID_LEN]);
void dht__table_free(dht_t *d);

/* dht_store.c */
void dht__map_init(dht__map_t *m, const uint8_t hkey[static 16]);
void dht__map_free(dht__map_t *m);
uint32_t dht__map_get(const dht__map_t *m, const uint8_t key[static DHT_ID_LEN]);
void dht__map_put(dht__map_t *m, const uint8_t key[static DHT_ID_LEN], uint32_t val);
void dht__map_del(dht__map_t *m, const uint8_t key[static DHT_ID_LEN]);
int dht__store_provider(dht_t *d, const dht_provider_t *p, const uint8_t peer[static DHT_ID_LEN],
                        uint64_t now);
int dht__store_name(dht_t *d, const name_record_t *rec, const uint8_t peer[static DHT_ID_LEN],
                    uint64_t now);
const name_record_t *dht__store_get_name(const dht_t *d, const uint8_t key[static DHT_ID_LEN]);
size_t dht__store_get_providers(const dht_t *d, const uint8_t key[static DHT_ID_LEN],
                                const dht_provider_t **out, size_t n);
void dht__store_expire(dht_t *d, uint64_t now);
void dht__store_free(dht_t *d);
void dht__peer_key(const dht_addr_t *a, uint8_t out[static DHT_ID_LEN]);
const uint8_t *dht__local_peer(void);

/* dht_lookup.c */
int dht__lookup_new(dht_t *d, const uint8_t target[static DHT_ID_LEN], dht_lookup_kind_t kind,
                    uint8_t purpose, bool hedge, uint64_t now, uint32_t *slot_out);
void dht__lookup_run(dht_t *d, uint32_t slot, uint64_t now);
void dht__lookup_reply(dht_t *d, dht__req_t *req, const dht_msg_t *m, uint64_t now);
void dht__lookup_failed(dht_t *d, dht__req_t *req, uint64_t now);
void dht__lookup_overdue(dht_t *d, dht__req_t *req, uint64_t now);
void dht__lookup_free(dht_t *d, uint32_t slot);
void dht__rtt_sample(dht_t *d, uint32_t ms);
void dht__publish_store_done(dht_t *d, const dht__req_t *req, int outcome, uint64_t now);
void dht__publish_done(dht_t *d, uint32_t slot, uint64_t now);

/* dht_msg.c */
size_t dht__addr_wire_len(const dht_addr_t *a);
bool dht__addr_valid(const dht_addr_t *a);

#endif
