/*
 * guard_internal.h - shared between the files of ron-guard and its tests:
 * strict decimal and kid syntax helpers, the bounded token-bucket table used
 * for per-source and per-token rates, and the state file codec of the
 * authority (exposed so tests can build tampered files).
 */
#ifndef GUARD_INTERNAL_H
#define GUARD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ron_guard.h"

/* Bytes of a page of GUARD_SYNC_PAGE entries with generous whitespace. */
#define GUARD__PAGE_MAX_JSON ((size_t)GUARD_SYNC_PAGE * (GUARD_MAX_ENTRY_JSON + 16) + 256)

/* A kid of 1..AUTH_MAX_KID bytes of [a-z0-9]. */
bool guard__kid_ok(const char *kid, size_t len);

/* Canonical decimal u64 (no leading zeros, no sign). Returns 0 or RON_EJSON. */
int guard__u64_parse(const char *s, size_t len, uint64_t *v_out);

/* ---- token buckets ---- */

#define GUARD__RATE_KEY 24 /* bytes of a bucket key */

typedef struct guard__bucket {
    uint8_t key[GUARD__RATE_KEY];
    double tokens;
    uint64_t last_ns;
    int32_t lru_prev, lru_next; /* LRU list (front: most recent) */
    int32_t chain;              /* next in the hash chain */
    bool used;
} guard__bucket_t;

typedef struct {
    pthread_mutex_t mu;
    uint8_t seed[16]; /* SipHash key: chains an attacker cannot aim at */
    size_t slots, n;
    guard__bucket_t *b;
    int32_t *heads; /* 2 * slots chain heads */
    int32_t lru_head, lru_tail;
    uint64_t evicted;
} guard__rate_t;

/* Create a table of slots buckets (1..GUARD_RATE_SLOTS). Returns 0 or RON_EINVAL. */
int guard__rate_init(guard__rate_t *r, size_t slots);
void guard__rate_destroy(guard__rate_t *r);

/*
 * Take one token from the bucket of key (rate per s, depth burst >= 1),
 * creating it full, evicting the least recently used bucket when the table
 * is full. Returns true when allowed; otherwise *retry_after_s gets the
 * seconds until a token is back (>= 1). now_ns: monotonic. Thread-safe.
 */
bool guard__rate_take(guard__rate_t *r, const uint8_t key[static GUARD__RATE_KEY], uint32_t rate,
                      uint32_t burst, uint64_t now_ns, uint32_t *retry_after_s);

/* ---- authority state file ---- */

typedef struct {
    uint64_t seq;
    int64_t until;
    uint64_t epoch; /* the identifier's epoch: dropped once the epoch passes it */
    uint8_t nonce[AUTH_NONCE_LEN];
} guard__revoked_t;

typedef struct {
    uint64_t gen;        /* current generation (>= 1) */
    int64_t gen_started; /* unix s it became current */
    uint64_t prev_gen;   /* the generation in grace, 0: none */
    int64_t prev_until;  /* unix s its grace ends */
    uint64_t epoch, epoch_seq, kids_seq, head;
    size_t n_revoked;
    guard__revoked_t *revoked; /* seq ascending */
} guard__state_t;

/* Serialize st (format 2: RONGST2), MAC under key, into a new buffer (*out,
 * *len_out; free it). */
int guard__state_encode(const guard__state_t *st, const uint8_t key[static 32], uint8_t **out,
                        size_t *len_out);

/* Parse buf strictly (MAC, sizes, invariants) into st (st->revoked malloc'd).
 * Format 1 (RONGST1, records without an epoch) is read with every record's
 * epoch taken as the epoch in force, so the next raise drops them; any other
 * magic is refused. Returns 0 or RON_EKEYFILE. */
int guard__state_decode(const uint8_t *buf, size_t len, const uint8_t key[static 32],
                        guard__state_t *st);

/* The state MAC key: BLAKE3 keyed by master over "ron-guard state key v1". */
void guard__state_key(const uint8_t master[static GUARD_MASTER_LEN], uint8_t key_out[static 32]);

/* The audit checkpoint key's seed: BLAKE3 derive_key("ron-guard audit key v1", master). */
void guard__audit_seed(const uint8_t master[static GUARD_MASTER_LEN], uint8_t seed_out[static 32]);

/* The guard's audit log (tests read the RAM sink). */
aud_log_t *guard__audit_log(guard_t *g);

#endif
