/*
 * auth_verify.c - the one-call request check, the verdict cache and the
 * revocation set.
 * auth_verify: cache lookup by SHA-256 of the token text; on a miss, strict
 * parse, key by kid, HMAC chain, constant-time compare, then a cache
 * insert. Revocation (identifier, the ancestors its lineage caveats name,
 * and epoch) and the request check run on
 * every call, hit or miss, so a revocation takes effect on the next request
 * and a cached entry only saves the signature work for AUTH_CACHE_TTL_MS.
 * Only tokens whose signature holds are cached.
 * Root keys are derived once and kept in sodium_malloc memory.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* SHA256_Init etc.: see auth_token.c */

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "auth_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* ---- revocation set ---- */

typedef struct {
    uint8_t nonce[AUTH_NONCE_LEN];
    int64_t until;  /* unix s; 0: for ever */
    uint64_t epoch; /* the identifier's epoch; AUTH_EPOCH_UNKNOWN: kept by raises */
    bool used;
} rev_slot_t;

struct auth_revocation {
    pthread_mutex_t mu;
    rev_slot_t *slots; /* open addressing, linear probing; n_slots a power of two */
    size_t n_slots;    /* >= 2 * max: probes stay short */
    size_t count;
    size_t max;
    uint64_t epoch; /* atomic: read without the lock */
    uint8_t seed[crypto_shorthash_KEYBYTES]; /* keys rev_hash */
};

/*
 * Keyed (SipHash under a random seed): a revoked identifier is whatever a
 * caller of cap_revoke names, not a random nonce, so unkeyed its bits could
 * be chosen to pile every entry into one linear-probing run.
 */
static size_t
rev_hash(const auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN])
{
    uint8_t d[crypto_shorthash_BYTES];
    uint64_t h;

    crypto_shorthash(d, nonce, AUTH_NONCE_LEN, r->seed);
    memcpy(&h, d, sizeof h);
    return (size_t)h & (r->n_slots - 1);
}

auth_revocation_t *
auth_revocation_new(size_t max)
{
    auth_revocation_t *r;
    size_t n = 16;

    if (max == 0 || max > AUTH_REVOKE_MAX || sodium_init() < 0)
        return NULL;
    while (n < 2 * max)
        n *= 2;
    r = ron_xcalloc(1, sizeof *r);
    randombytes_buf(r->seed, sizeof r->seed);
    r->slots = ron_xcalloc(n, sizeof *r->slots);
    r->n_slots = n;
    r->max = max;
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void
auth_revocation_free(auth_revocation_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r->slots);
    free(r);
}

static rev_slot_t *
rev_find(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN], bool *found)
{
    size_t i = rev_hash(r, nonce);

    for (size_t probes = 0; probes < r->n_slots; probes++) {
        rev_slot_t *s = &r->slots[i];
        if (!s->used || memcmp(s->nonce, nonce, AUTH_NONCE_LEN) == 0) {
            *found = s->used;
            return s;
        }
        i = (i + 1) & (r->n_slots - 1);
    }
    *found = false;
    return NULL; /* defensive: count <= max < n_slots leaves a free slot */
}

/* Rebuild the table without entries whose token has expired by now (by_time)
 * and without entries of an epoch below min_epoch. */
static void
rev_rebuild(auth_revocation_t *r, bool by_time, int64_t now, uint64_t min_epoch)
{
    rev_slot_t *old = r->slots;
    bool found;

    r->slots = ron_xcalloc(r->n_slots, sizeof *r->slots);
    r->count = 0;
    for (size_t i = 0; i < r->n_slots; i++) {
        if (!old[i].used || (by_time && old[i].until != 0 && now - AUTH_SKEW > old[i].until) ||
            (old[i].epoch != AUTH_EPOCH_UNKNOWN && old[i].epoch < min_epoch))
            continue;
        rev_slot_t *s = rev_find(r, old[i].nonce, &found);
        *s = old[i];
        r->count++;
    }
    free(old);
}

int
auth_revocation_add(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN], int64_t until,
                    int64_t now)
{
    return auth_revocation_add_epoch(r, nonce, AUTH_EPOCH_UNKNOWN, until, now);
}

int
auth_revocation_add_epoch(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN],
                          uint64_t epoch, int64_t until, int64_t now)
{
    int rc = 0;
    bool found;

    pthread_mutex_lock(&r->mu);
    rev_slot_t *s = rev_find(r, nonce, &found);
    if (found) {
        if (s->until != 0 && (until == 0 || until > s->until))
            s->until = until;
        if (s->epoch != AUTH_EPOCH_UNKNOWN && (epoch == AUTH_EPOCH_UNKNOWN || epoch > s->epoch))
            s->epoch = epoch; /* kept at least as long as either asks */
        goto out;
    }
    if (r->count >= r->max) {
        rev_rebuild(r, true, now, 0);
        if (r->count >= r->max) {
            rc = RON_ECAPFULL;
            goto out;
        }
        s = rev_find(r, nonce, &found);
    }
    memcpy(s->nonce, nonce, AUTH_NONCE_LEN);
    s->until = until;
    s->epoch = epoch;
    s->used = true;
    r->count++;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

bool
auth_revocation_has(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN])
{
    bool found;

    pthread_mutex_lock(&r->mu);
    if (r->count == 0)
        found = false;
    else
        rev_find(r, nonce, &found);
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* True if the token's own nonce or any ancestor's is revoked: one lock for all. */
static bool
rev_has_lineage(auth_revocation_t *r, const uint8_t nonce[static AUTH_NONCE_LEN],
                const auth_grant_t *g)
{
    bool found = false;

    pthread_mutex_lock(&r->mu);
    if (r->count > 0) {
        rev_find(r, nonce, &found);
        for (size_t i = 0; !found && i < g->n_ancestors; i++)
            rev_find(r, g->ancestors[i], &found);
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

size_t
auth_revocation_count(auth_revocation_t *r)
{
    size_t n;

    pthread_mutex_lock(&r->mu);
    n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

uint64_t
auth_revocation_raise_epoch(auth_revocation_t *r, uint64_t epoch)
{
    uint64_t cur = __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE);

    while (epoch > cur && !__atomic_compare_exchange_n(&r->epoch, &cur, epoch, false,
                                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
    if (epoch > cur) {
        /* entries of an older epoch are revoked by the epoch itself now */
        pthread_mutex_lock(&r->mu);
        if (r->count > 0)
            rev_rebuild(r, false, 0, epoch);
        pthread_mutex_unlock(&r->mu);
    }
    return epoch > cur ? epoch : cur;
}

uint64_t
auth_revocation_epoch(auth_revocation_t *r)
{
    return __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE);
}

/* ---- verifier ---- */

typedef struct {
    char kid[AUTH_MAX_KID + 1];
    uint8_t *derived; /* AUTH_SIG_LEN bytes of sodium_malloc memory; NULL: slot free */
} key_slot_t;

#define CACHE_WAYS 4 /* slots per set: distinct hot tokens rarely evict each other */

typedef struct {
    uint8_t hash[SHA256_DIGEST_LENGTH]; /* SHA-256 of the token text */
    uint64_t stamp_ms;                  /* monotonic; 0: empty */
    auth_id_t id;
    auth_grant_t grant;
} cache_slot_t;

struct auth_verifier {
    auth_revocation_t *rev; /* borrowed, may be NULL */
    key_slot_t keys[AUTH_MAX_KEYS];
    pthread_mutex_t cache_mu;
    cache_slot_t *cache;   /* n_cache slots in sets of CACHE_WAYS; NULL: no cache */
    size_t n_cache;        /* a multiple of CACHE_WAYS */
    uint64_t hits, misses; /* under cache_mu */
};

auth_verifier_t *
auth_verifier_new(auth_revocation_t *rev, size_t cache_slots)
{
    auth_verifier_t *v;

    if (cache_slots > AUTH_CACHE_MAX || sodium_init() < 0)
        return NULL;
    v = ron_xcalloc(1, sizeof *v);
    v->rev = rev;
    pthread_mutex_init(&v->cache_mu, NULL);
    if (cache_slots > 0) {
        v->n_cache = (cache_slots + CACHE_WAYS - 1) / CACHE_WAYS * CACHE_WAYS;
        v->cache = ron_xcalloc(v->n_cache, sizeof *v->cache);
    }
    return v;
}

void
auth_verifier_free(auth_verifier_t *v)
{
    if (v == NULL)
        return;
    for (int i = 0; i < AUTH_MAX_KEYS; i++)
        sodium_free(v->keys[i].derived); /* wipes */
    pthread_mutex_destroy(&v->cache_mu);
    free(v->cache);
    free(v);
}

static key_slot_t *
key_find(auth_verifier_t *v, const char *kid)
{
    for (int i = 0; i < AUTH_MAX_KEYS; i++)
        if (v->keys[i].derived != NULL && strcmp(v->keys[i].kid, kid) == 0)
            return &v->keys[i];
    return NULL;
}

int
auth_verifier_add_key(auth_verifier_t *v, const char *kid, const uint8_t *key, size_t key_len)
{
    key_slot_t *k;

    if (kid == NULL || !auth__kid_ok(kid, strlen(kid)) || key_len < AUTH_MIN_KEY ||
        key_len > AUTH_MAX_KEY)
        return RON_EINVAL;
    k = key_find(v, kid);
    for (int i = 0; k == NULL && i < AUTH_MAX_KEYS; i++)
        if (v->keys[i].derived == NULL)
            k = &v->keys[i];
    if (k == NULL)
        return RON_EBUSY;
    if (k->derived == NULL) {
        k->derived = sodium_malloc(AUTH_SIG_LEN);
        if (k->derived == NULL)
            return RON_EBUSY;
    }
    auth__derive_key(k->derived, key, key_len);
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    return 0;
}

int
auth_verifier_remove_key(auth_verifier_t *v, const char *kid)
{
    key_slot_t *k = key_find(v, kid);

    if (k == NULL)
        return RON_ENOTFOUND;
    sodium_free(k->derived);
    k->derived = NULL;
    k->kid[0] = '\0';
    /* Cached verdicts under this key must go with it. */
    pthread_mutex_lock(&v->cache_mu);
    for (size_t i = 0; i < v->n_cache; i++)
        v->cache[i].stamp_ms = 0;
    pthread_mutex_unlock(&v->cache_mu);
    return 0;
}

void
auth_verifier_cache_stats(auth_verifier_t *v, uint64_t *hits_out, uint64_t *misses_out)
{
    pthread_mutex_lock(&v->cache_mu);
    *hits_out = v->hits;
    *misses_out = v->misses;
    pthread_mutex_unlock(&v->cache_mu);
}

/* The set of CACHE_WAYS slots a hash maps to. */
static cache_slot_t *
cache_set(const auth_verifier_t *v, const uint8_t hash[static SHA256_DIGEST_LENGTH])
{
    uint64_t h;

    memcpy(&h, hash, sizeof h);
    return &v->cache[(size_t)(h % (v->n_cache / CACHE_WAYS)) * CACHE_WAYS];
}

static bool
cache_get(auth_verifier_t *v, const uint8_t hash[static SHA256_DIGEST_LENGTH], auth_verdict_t *out)
{
    uint64_t now = ron_now_ms();
    bool hit = false;

    pthread_mutex_lock(&v->cache_mu);
    cache_slot_t *set = cache_set(v, hash);
    for (int w = 0; w < CACHE_WAYS && !hit; w++) {
        cache_slot_t *s = &set[w];
        if (s->stamp_ms != 0 && now - s->stamp_ms < AUTH_CACHE_TTL_MS &&
            memcmp(s->hash, hash, sizeof s->hash) == 0) {
            out->id = s->id;
            out->grant = s->grant;
            hit = true;
        }
    }
    if (hit)
        v->hits++;
    else
        v->misses++;
    pthread_mutex_unlock(&v->cache_mu);
    return hit;
}

/* Store in the set's empty, expired or oldest slot. */
static void
cache_put(auth_verifier_t *v, const uint8_t hash[static SHA256_DIGEST_LENGTH],
          const auth_verdict_t *vd)
{
    uint64_t now = ron_now_ms();

    pthread_mutex_lock(&v->cache_mu);
    cache_slot_t *set = cache_set(v, hash), *s = &set[0];
    for (int w = 1; w < CACHE_WAYS; w++)
        if (set[w].stamp_ms < s->stamp_ms)
            s = &set[w];
    memcpy(s->hash, hash, sizeof s->hash);
    s->stamp_ms = now != 0 ? now : 1;
    s->id = vd->id;
    s->grant = vd->grant;
    pthread_mutex_unlock(&v->cache_mu);
}

/* Parse, key, HMAC chain: fill out->id and out->grant or a deny reason. */
static auth_reason_t
verify_signature(auth_verifier_t *v, const char *token, size_t len, auth_verdict_t *out)
{
    uint8_t raw[AUTH_MAX_RAW], sig[AUTH_SIG_LEN];
    auth__parsed_t p;
    key_slot_t *k;

    if (auth__token_split(token, len, raw, &p) < 0 ||
        auth_id_parse((const char *)p.id.p, p.id.len, &out->id) < 0)
        return AUTH_DENY_FORMAT;
    if (auth__fold(&p, &out->grant, &out->caveat) < 0)
        return AUTH_DENY_CAVEAT;
    k = key_find(v, out->id.kid);
    if (k == NULL)
        return AUTH_DENY_KID;
    auth__chain(sig, k->derived, &p);
    if (CRYPTO_memcmp(sig, p.sig, AUTH_SIG_LEN) != 0)
        return AUTH_DENY_SIGNATURE;
    return AUTH_OK;
}

int
auth_verify(auth_verifier_t *v, const char *token, size_t len, const auth_request_t *req,
            auth_verdict_t *out)
{
    uint8_t hash[SHA256_DIGEST_LENGTH];
    auth_reason_t r;

    memset(out, 0, sizeof *out);
    out->caveat = -1;
    if (len == 0 || len > AUTH_MAX_TOKEN) {
        r = AUTH_DENY_FORMAT;
        goto out;
    }
    if (v->cache != NULL) {
        SHA256_CTX c; /* not SHA256(): in OpenSSL 3 it fetches an EVP_MD by name */
        SHA256_Init(&c);
        SHA256_Update(&c, token, len);
        SHA256_Final(hash, &c);
        out->cached = cache_get(v, hash, out);
    }
    if (!out->cached) {
        r = verify_signature(v, token, len, out);
        if (r != AUTH_OK)
            goto out;
        if (v->cache != NULL)
            cache_put(v, hash, out);
    }
    if (v->rev != NULL && rev_has_lineage(v->rev, out->id.nonce, &out->grant)) {
        r = AUTH_DENY_REVOKED;
        goto out;
    }
    if (v->rev != NULL && out->id.epoch < auth_revocation_epoch(v->rev)) {
        r = AUTH_DENY_EPOCH;
        goto out;
    }
    r = auth_grant_check(&out->grant, req, &out->pending);
out:
    out->reason = r;
    return auth_reason_code(r);
}
