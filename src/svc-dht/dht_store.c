/*
 * dht_store.c - records this node holds for others (and its own): provider
 * records per key and one name record per BLAKE3(name), with limits per key,
 * per source address and in total, and expiry after their TTL.
 * Records arrive verified (dht.c checks signatures before storing). Lookups
 * by key and by peer go through SipHash-keyed open-addressing maps, so a peer
 * choosing keys cannot make a probe chain long.
 * Invariants: store.n records are in use; every record of a key is on that
 * key's chain (by_key maps the key to its head); by_peer counts the records
 * each source stored.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dht_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* ---- map ---- */

void
dht__map_init(dht__map_t *m, const uint8_t hkey[static 16])
{
    memset(m, 0, sizeof *m);
    memcpy(m->hkey, hkey, 16);
}

void
dht__map_free(dht__map_t *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->n = 0;
}

static uint32_t
map_slot(const dht__map_t *m, const uint8_t *key)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, key, DHT_ID_LEN, m->hkey);
    memcpy(&v, h, sizeof v);
    return (uint32_t)v & (m->cap - 1);
}

uint32_t
dht__map_get(const dht__map_t *m, const uint8_t key[static DHT_ID_LEN])
{
    if (m->cap == 0)
        return DHT__NIL;
    for (uint32_t i = map_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->vals[i] == DHT__NIL)
            return DHT__NIL;
        if (memcmp(m->keys[i], key, DHT_ID_LEN) == 0)
            return m->vals[i];
    }
}

static void
map_grow(dht__map_t *m)
{
    dht__map_t old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->n = 0;
    m->keys = ron_xmalloc((size_t)m->cap * DHT_ID_LEN);
    m->vals = ron_xmalloc((size_t)m->cap * sizeof *m->vals);
    memset(m->vals, 0xff, (size_t)m->cap * sizeof *m->vals);
    for (uint32_t i = 0; i < old.cap; i++)
        if (old.vals[i] != DHT__NIL)
            dht__map_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

void
dht__map_put(dht__map_t *m, const uint8_t key[static DHT_ID_LEN], uint32_t val)
{
    if ((m->n + 1) * 2 > m->cap)
        map_grow(m);
    for (uint32_t i = map_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->vals[i] == DHT__NIL) {
            memcpy(m->keys[i], key, DHT_ID_LEN);
            m->vals[i] = val;
            m->n++;
            return;
        }
        if (memcmp(m->keys[i], key, DHT_ID_LEN) == 0) {
            m->vals[i] = val;
            return;
        }
    }
}

void
dht__map_del(dht__map_t *m, const uint8_t key[static DHT_ID_LEN])
{
    uint32_t i, j, mask = m->cap - 1;

    if (m->cap == 0)
        return;
    for (i = map_slot(m, key);; i = (i + 1) & mask) {
        if (m->vals[i] == DHT__NIL)
            return;
        if (memcmp(m->keys[i], key, DHT_ID_LEN) == 0)
            break;
    }
    /* backward-shift: pull later entries of the cluster into the hole */
    for (j = (i + 1) & mask; m->vals[j] != DHT__NIL; j = (j + 1) & mask) {
        uint32_t home = map_slot(m, m->keys[j]);
        bool movable = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            memcpy(m->keys[i], m->keys[j], DHT_ID_LEN);
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->vals[i] = DHT__NIL;
    m->n--;
}

/* ---- records ---- */

void
dht__peer_key(const dht_addr_t *a, uint8_t out[static DHT_ID_LEN])
{
    memset(out, 0, DHT_ID_LEN);
    out[0] = a->family;
    memcpy(out + 1, a->ip, 16); /* the port is not part of a peer: one host, one quota */
}

static const uint8_t local_peer[DHT_ID_LEN] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static uint32_t
max_records(const dht_t *d)
{
    return d->cfg.max_records ? d->cfg.max_records : DHT_MAX_RECORDS;
}

static bool
is_local(const uint8_t *peer)
{
    return memcmp(peer, local_peer, DHT_ID_LEN) == 0;
}

/* Can one more record from peer be stored? */
static int
limits_ok(const dht_t *d, const uint8_t *peer)
{
    uint32_t per_peer = d->cfg.max_per_peer ? d->cfg.max_per_peer : DHT_MAX_RECORDS_PER_PEER;
    uint32_t count;

    if (d->store.n >= max_records(d))
        return RON_EDHTLIMIT;
    if (is_local(peer))
        return 0;
    count = dht__map_get(&d->store.by_peer, peer);
    if (count != DHT__NIL && count >= per_peer)
        return RON_EDHTLIMIT;
    return 0;
}

static uint32_t
rec_alloc(dht_t *d, const uint8_t *key, const uint8_t *peer)
{
    dht__store_t *s = &d->store;
    uint32_t i, head, count;

    if (s->free_head == DHT__NIL) {
        uint32_t old = s->cap;
        s->cap = old ? old * 2 : 16;
        s->recs = ron_xrealloc(s->recs, (size_t)s->cap * sizeof *s->recs);
        for (i = old; i < s->cap; i++) {
            s->recs[i].kind = DHT__REC_FREE;
            s->recs[i].next = i + 1 < s->cap ? i + 1 : DHT__NIL;
        }
        s->free_head = old;
    }
    i = s->free_head;
    s->free_head = s->recs[i].next;
    memset(&s->recs[i], 0, sizeof s->recs[i]);
    memcpy(s->recs[i].key, key, DHT_ID_LEN);
    memcpy(s->recs[i].peer, peer, DHT_ID_LEN);
    head = dht__map_get(&s->by_key, key);
    s->recs[i].next = head;
    dht__map_put(&s->by_key, key, i);
    count = dht__map_get(&s->by_peer, peer);
    dht__map_put(&s->by_peer, peer, count == DHT__NIL ? 1 : count + 1);
    s->n++;
    d->stats.records_stored++;
    return i;
}

static void
rec_remove(dht_t *d, uint32_t i)
{
    dht__store_t *s = &d->store;
    dht__rec_t *r = &s->recs[i];
    uint32_t head = dht__map_get(&s->by_key, r->key), count;

    if (head == i) {
        if (r->next == DHT__NIL)
            dht__map_del(&s->by_key, r->key);
        else
            dht__map_put(&s->by_key, r->key, r->next);
    } else {
        for (uint32_t j = head; j != DHT__NIL; j = s->recs[j].next)
            if (s->recs[j].next == i) {
                s->recs[j].next = r->next;
                break;
            }
    }
    count = dht__map_get(&s->by_peer, r->peer);
    if (count != DHT__NIL && count > 1)
        dht__map_put(&s->by_peer, r->peer, count - 1);
    else
        dht__map_del(&s->by_peer, r->peer);
    if (r->kind == DHT__REC_NAME)
        free(r->name);
    r->name = NULL;
    r->kind = DHT__REC_FREE;
    r->next = s->free_head;
    s->free_head = i;
    s->n--;
}

/* Milliseconds of life left for a record signed at ts_s with ttl_s, from now. */
static uint64_t
expiry(const dht_t *d, uint64_t ts_s, uint32_t ttl_s, uint64_t now)
{
    uint64_t wall = dht__wall_s(d, now), end = ts_s + ttl_s;
    if (end > wall + DHT_PROVIDER_TTL_S)
        end = wall + DHT_PROVIDER_TTL_S;
    return end <= wall ? now : now + (end - wall) * 1000;
}

int
dht__store_provider(dht_t *d, const dht_provider_t *p, const uint8_t peer[static DHT_ID_LEN],
                    uint64_t now)
{
    dht__store_t *s = &d->store;
    uint32_t per_key = d->cfg.max_per_key ? d->cfg.max_per_key : DHT_MAX_PROVIDERS_PER_KEY;
    uint32_t n_key = 0, i;
    int rc;

    for (i = dht__map_get(&s->by_key, p->key); i != DHT__NIL; i = s->recs[i].next) {
        dht__rec_t *r = &s->recs[i];
        if (r->kind != DHT__REC_PROVIDER)
            continue;
        if (memcmp(r->prov.pk, p->pk, NAME_KEY_LEN) == 0) {
            if (p->ts < r->prov.ts)
                return 0; /* we hold a newer one: nothing to do */
            if (p->ttl == 0) {
                rec_remove(d, i); /* a signed withdrawal */
                return 0;
            }
            r->prov = *p;
            r->expires_ms = expiry(d, p->ts, p->ttl, now);
            return 0;
        }
        n_key++;
    }
    if (p->ttl == 0)
        return 0; /* withdrawal of something we do not hold */
    if (n_key >= per_key || (rc = limits_ok(d, peer)) < 0) {
        d->stats.records_rejected_limit++;
        return RON_EDHTLIMIT;
    }
    i = rec_alloc(d, p->key, peer);
    s->recs[i].kind = DHT__REC_PROVIDER;
    s->recs[i].prov = *p;
    s->recs[i].expires_ms = expiry(d, p->ts, p->ttl, now);
    return 0;
}

static uint32_t
name_index(const dht_t *d, const uint8_t *key)
{
    for (uint32_t i = dht__map_get(&d->store.by_key, key); i != DHT__NIL; i = d->store.recs[i].next)
        if (d->store.recs[i].kind == DHT__REC_NAME)
            return i;
    return DHT__NIL;
}

int
dht__store_name(dht_t *d, const name_record_t *rec, const uint8_t peer[static DHT_ID_LEN],
                uint64_t now)
{
    uint8_t key[DHT_ID_LEN];
    uint64_t wall = dht__wall_s(d, now);
    uint32_t i;
    int rc;

    dht_id_of_name(key, rec->name);
    i = name_index(d, key);
    rc = name_record_accept(i == DHT__NIL ? NULL : d->store.recs[i].name, rec, (int64_t)wall, NULL);
    if (rc == RON_ENAMEDUP) {
        d->store.recs[i].expires_ms = now + (uint64_t)DHT_PROVIDER_TTL_S * 1000;
        return 0;
    }
    if (rc < 0)
        return rc;
    if (i == DHT__NIL) {
        if (limits_ok(d, peer) < 0) {
            d->stats.records_rejected_limit++;
            return RON_EDHTLIMIT;
        }
        i = rec_alloc(d, key, peer);
        d->store.recs[i].kind = DHT__REC_NAME;
        d->store.recs[i].name = ron_xmalloc(sizeof *rec);
    }
    *d->store.recs[i].name = *rec;
    d->store.recs[i].expires_ms = now + (uint64_t)DHT_PROVIDER_TTL_S * 1000;
    return 0;
}

const name_record_t *
dht__store_get_name(const dht_t *d, const uint8_t key[static DHT_ID_LEN])
{
    uint32_t i = name_index(d, key);
    return i == DHT__NIL ? NULL : d->store.recs[i].name;
}

size_t
dht__store_get_providers(const dht_t *d, const uint8_t key[static DHT_ID_LEN],
                         const dht_provider_t **out, size_t n)
{
    size_t got = 0;
    for (uint32_t i = dht__map_get(&d->store.by_key, key); i != DHT__NIL && got < n;
         i = d->store.recs[i].next)
        if (d->store.recs[i].kind == DHT__REC_PROVIDER)
            out[got++] = &d->store.recs[i].prov;
    return got;
}

void
dht__store_expire(dht_t *d, uint64_t now)
{
    for (uint32_t i = 0; i < d->store.cap; i++) {
        dht__rec_t *r = &d->store.recs[i];
        if (r->kind == DHT__REC_FREE || r->expires_ms > now)
            continue;
        rec_remove(d, i);
        d->stats.records_expired++;
    }
}

void
dht__store_free(dht_t *d)
{
    for (uint32_t i = 0; i < d->store.cap; i++)
        if (d->store.recs[i].kind == DHT__REC_NAME)
            free(d->store.recs[i].name);
    free(d->store.recs);
    dht__map_free(&d->store.by_key);
    dht__map_free(&d->store.by_peer);
    memset(&d->store, 0, sizeof d->store);
    d->store.free_head = DHT__NIL;
}

const uint8_t *
dht__local_peer(void)
{
    return local_peer;
}
