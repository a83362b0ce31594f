/*
 * dht_table.c - the Kademlia routing table: 256 buckets indexed by the bits a
 * contact's id shares with ours, DHT_K contacts each (least recently seen
 * first) plus a small replacement cache, liveness checks before eviction,
 * bucket refresh, closest-contact queries, and the save/load blob.
 * Invariants: an id appears at most once in the table (contacts and
 * replacements together); our own id never does; a full bucket evicts a
 * contact only after it failed a ping or DHT_MAX_FAILS requests in a row.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <blake3.h>

#include "dht_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"
#include "ron_util.h"

#define SAVE_VERSION 1u
#define SAVE_SUM_LEN 32u

static const uint8_t save_magic[4] = {'R', 'D', 'H', 'T'};

dht__bucket_t *
dht__bucket_of(dht_t *d, const uint8_t id[static DHT_ID_LEN])
{
    unsigned b = dht_id_common_bits(d->cfg.id, id);
    return b >= DHT_BUCKETS ? NULL : &d->buckets[b];
}

static dht__contact_t *
bucket_find(dht__bucket_t *bk, const uint8_t *id, unsigned from, unsigned to)
{
    if (bk->c == NULL)
        return NULL;
    for (unsigned i = from; i < to; i++)
        if (memcmp(bk->c[i].id, id, DHT_ID_LEN) == 0)
            return &bk->c[i];
    return NULL;
}

dht__contact_t *
dht__table_find(dht_t *d, const uint8_t id[static DHT_ID_LEN])
{
    dht__bucket_t *bk = dht__bucket_of(d, id);
    return bk == NULL ? NULL : bucket_find(bk, id, 0, bk->n);
}

/* Remove entry i of c[lo..lo+n) keeping order. */
static void
remove_at(dht__contact_t *c, unsigned i, unsigned n)
{
    memmove(&c[i], &c[i + 1], (n - 1 - i) * sizeof *c);
}

/* Promote the newest replacement into the contacts (room must exist). */
static void
promote(dht_t *d, dht__bucket_t *bk)
{
    if (bk->nrep == 0 || bk->n >= DHT_K)
        return;
    bk->nrep--;
    /* newest replacement last; contacts stay ordered by last_seen: it goes in as most recent */
    bk->c[bk->n++] = bk->c[DHT_K + bk->nrep];
    d->table_n++;
}

/* Keep d->top after a contact left bucket bk. */
static void
top_update(dht_t *d, const dht__bucket_t *bk)
{
    if (bk->n > 0 || (size_t)(bk - d->buckets) + 1 != d->top)
        return;
    while (d->top > 0 && d->buckets[d->top - 1].n == 0)
        d->top--;
}

/* Evict contact c of bk (dead): the newest replacement takes its place. */
static void
evict(dht_t *d, dht__bucket_t *bk, const dht__contact_t *c)
{
    remove_at(bk->c, (unsigned)(c - bk->c), bk->n);
    bk->n--;
    d->table_n--;
    d->stats.evictions++;
    promote(d, bk);
    top_update(d, bk);
}

static void
replacement_add(dht__bucket_t *bk, const dht__contact_t *nc)
{
    dht__contact_t *rep = &bk->c[DHT_K];
    for (unsigned i = 0; i < bk->nrep; i++)
        if (memcmp(rep[i].id, nc->id, DHT_ID_LEN) == 0) {
            remove_at(rep, i, bk->nrep);
            bk->nrep--;
            break;
        }
    if (bk->nrep == DHT_REPLACEMENTS) {
        remove_at(rep, 0, bk->nrep); /* the oldest goes */
        bk->nrep--;
    }
    rep[bk->nrep++] = *nc;
}

static void
send_liveness_ping(dht_t *d, dht__bucket_t *bk, const dht__contact_t *c, uint64_t now)
{
    dht_msg_t m;
    dht__req_t *req;

    memset(&m, 0, offsetof(dht_msg_t, contacts));
    m.op = DHT_OP_PING;
    if (dht__send_request(d, &m, &c->addr, c->id, c->has_token ? c->token : NULL,
                          DHT__P_LIVENESS, now, &req) == 0) {
        req->bucket = (uint16_t)(bk - d->buckets);
        bk->pinging = true;
    }
}

void
dht__table_seen(dht_t *d, const uint8_t id[static DHT_ID_LEN], const dht_addr_t *addr,
                const uint8_t *token, uint64_t now)
{
    dht__bucket_t *bk = dht__bucket_of(d, id);
    dht__contact_t *c, nc;

    if (bk == NULL)
        return; /* our own id */
    if (bk->c == NULL)
        bk->c = ron_xcalloc(DHT_K + DHT_REPLACEMENTS, sizeof *bk->c);
    c = bucket_find(bk, id, 0, bk->n);
    if (c != NULL) {
        /* Known: most recently seen now. Its address stays: an unsigned datagram
         * from elsewhere claiming the id must not redirect traffic. */
        if (!dht_addr_equal(&c->addr, addr))
            return;
        nc = *c;
        remove_at(bk->c, (unsigned)(c - bk->c), bk->n);
        nc.last_seen = now;
        nc.fails = 0;
        if (token != NULL) {
            nc.has_token = true;
            memcpy(nc.token, token, DHT_TOKEN_LEN);
            nc.token_at = now;
        }
        bk->c[bk->n - 1] = nc;
        return;
    }
    memset(&nc, 0, sizeof nc);
    memcpy(nc.id, id, DHT_ID_LEN);
    nc.addr = *addr;
    nc.last_seen = now;
    if (token != NULL) {
        nc.has_token = true;
        memcpy(nc.token, token, DHT_TOKEN_LEN);
        nc.token_at = now;
    }
    if (bk->n < DHT_K) {
        bk->c[bk->n++] = nc;
        d->table_n++;
        if ((size_t)(bk - d->buckets) + 1 > d->top)
            d->top = (uint16_t)(bk - d->buckets + 1);
        /* it may have waited among the replacements */
        c = bucket_find(bk, id, DHT_K, DHT_K + bk->nrep);
        if (c != NULL) {
            remove_at(&bk->c[DHT_K], (unsigned)(c - &bk->c[DHT_K]), bk->nrep);
            bk->nrep--;
        }
        return;
    }
    replacement_add(bk, &nc);
    if (!bk->pinging)
        send_liveness_ping(d, bk, &bk->c[0], now);
}

void
dht__table_liveness_result(dht_t *d, uint16_t bucket, const uint8_t id[static DHT_ID_LEN],
                           bool alive, uint64_t now)
{
    dht__bucket_t *bk = &d->buckets[bucket];
    dht__contact_t *c;

    bk->pinging = false;
    c = bucket_find(bk, id, 0, bk->n);
    if (alive || c == NULL)
        return; /* a reply already made it most recently seen (table_seen) */
    /* One lost datagram is not death: ping once more before evicting. */
    if (c->fails < DHT_LIVENESS_TRIES) {
        send_liveness_ping(d, bk, c, now);
        return;
    }
    evict(d, bk, c);
}

void
dht__table_failed(dht_t *d, const uint8_t id[static DHT_ID_LEN], const dht_addr_t *addr)
{
    dht__bucket_t *bk = dht__bucket_of(d, id);
    dht__contact_t *c;

    if (bk == NULL || (c = bucket_find(bk, id, 0, bk->n)) == NULL || !dht_addr_equal(&c->addr, addr))
        return;
    c->fails++;
    if (bk->pinging && c == &bk->c[0])
        return; /* its liveness ping decides */
    /* With a stand-in at hand two failures in a row evict; alone, a few more. */
    if ((bk->nrep > 0 && c->fails >= DHT_LIVENESS_TRIES) || c->fails >= DHT_MAX_FAILS) {
        evict(d, bk, c);
    }
}

/* ---- closest contacts ---- */

typedef struct {
    const dht__contact_t *c;
    uint8_t dist[DHT_ID_LEN];
} ranked_t;

static size_t
gather(const dht__bucket_t *bk, const uint8_t *target, ranked_t *r, size_t have, size_t cap)
{
    for (unsigned i = 0; i < bk->n && have < cap; i++) {
        r[have].c = &bk->c[i];
        for (unsigned j = 0; j < DHT_ID_LEN; j++)
            r[have].dist[j] = bk->c[i].id[j] ^ target[j];
        have++;
    }
    return have;
}

static bool
id_bit(const uint8_t *id, unsigned i)
{
    return (id[i / 8] >> (7 - i % 8)) & 1;
}

static void
ranked_sort(ranked_t *r, size_t n) /* insertion sort: n <= 2 k */
{
    for (size_t i = 1; i < n; i++) {
        ranked_t x = r[i];
        size_t j = i;
        while (j > 0 && memcmp(r[j - 1].dist, x.dist, DHT_ID_LEN) > 0) {
            r[j] = r[j - 1];
            j--;
        }
        r[j] = x;
    }
}

/*
 * Buckets come in a fixed order of distance to target, so only about n
 * contacts are ever looked at. With b = bits target shares with us:
 * bucket b is closest (its contacts share more than b bits with target).
 * Buckets j > b all differ from target first at bit b; among them bucket j
 * differs from the rest at bit j, where it is closer exactly when target's
 * bit j differs from ours: such buckets come first in ascending j, the
 * others last in descending j. Buckets b-1, b-2, ... follow, each farther.
 * Sorting by full distance is needed only within the gathered set.
 */
size_t
dht__table_closest(const dht_t *d, const uint8_t target[static DHT_ID_LEN],
                   const dht__contact_t **out, size_t n)
{
    ranked_t r[DHT_K * 2];
    uint16_t order[DHT_BUCKETS];
    size_t have = 0, cap = sizeof r / sizeof r[0], norder = 0;
    unsigned b = dht_id_common_bits(d->cfg.id, target);

    if (n > DHT_K)
        n = DHT_K;
    if (b < DHT_BUCKETS) {
        size_t front = 0, back = DHT_BUCKETS;
        uint16_t tmp[DHT_BUCKETS] = {0};
        order[norder++] = (uint16_t)b;
        for (unsigned j = b + 1; j < d->top; j++) {
            if (d->buckets[j].n == 0)
                continue;
            if (id_bit(d->cfg.id, j) != id_bit(target, j))
                tmp[front++] = (uint16_t)j;
            else
                tmp[--back] = (uint16_t)j; /* filled from the end: descending j */
        }
        memcpy(order + norder, tmp, front * sizeof tmp[0]);
        norder += front;
        memcpy(order + norder, tmp + back, (DHT_BUCKETS - back) * sizeof tmp[0]);
        norder += DHT_BUCKETS - back;
    }
    for (int i = (int)(b < DHT_BUCKETS ? b : DHT_BUCKETS) - 1; i >= 0; i--)
        if (d->buckets[i].n > 0)
            order[norder++] = (uint16_t)i;
    /* whole buckets until n are in hand: the last one may hold closer ones */
    for (size_t k = 0; k < norder && have < n; k++)
        have = gather(&d->buckets[order[k]], target, r, have, cap);
    ranked_sort(r, have);
    if (have > n)
        have = n;
    for (size_t i = 0; i < have; i++)
        out[i] = r[i].c;
    return have;
}

size_t
dht_table_closest(const dht_t *d, const uint8_t target[static DHT_ID_LEN], dht_contact_t *out,
                  size_t n)
{
    const dht__contact_t *c[DHT_K];
    size_t got = dht__table_closest(d, target, c, n);
    for (size_t i = 0; i < got; i++) {
        memcpy(out[i].id, c[i]->id, DHT_ID_LEN);
        out[i].addr = c[i]->addr;
    }
    return got;
}

size_t
dht_table_size(const dht_t *d)
{
    return d->table_n;
}

/* ---- refresh ---- */

void
dht__random_in_bucket(dht_t *d, unsigned b, uint8_t id_out[static DHT_ID_LEN])
{
    dht__rng_bytes(&d->rng, id_out, DHT_ID_LEN);
    /* copy our first b bits, flip bit b */
    for (unsigned i = 0; i < b / 8; i++)
        id_out[i] = d->cfg.id[i];
    if (b < DHT_BUCKETS) {
        unsigned byte = b / 8, bit = 7 - b % 8;
        uint8_t keep = (uint8_t)(0xff << (bit + 1)); /* bits above `bit` come from our id */
        id_out[byte] = (uint8_t)((d->cfg.id[byte] & keep) | (id_out[byte] & ~keep & 0xff));
        id_out[byte] = (uint8_t)(id_out[byte] ^ ((id_out[byte] ^ ~d->cfg.id[byte]) & (1u << bit)));
    }
}

/*
 * Refresh stale buckets up to one past the deepest non-empty one (deeper
 * buckets are empty for want of nodes, not of lookups), a few at a time.
 */
void
dht__table_refresh(dht_t *d, uint64_t now)
{
    int deepest = (int)d->top - 1;
    for (int i = 0; i <= deepest + 1 && i < (int)DHT_BUCKETS && d->refresh_running < DHT_ALPHA;
         i++) {
        dht__bucket_t *bk = &d->buckets[i];
        uint8_t target[DHT_ID_LEN];
        if (now < bk->refreshed + DHT_REFRESH_MS && bk->refreshed != 0)
            continue;
        uint32_t slot;
        dht__random_in_bucket(d, (unsigned)i, target);
        if (dht__lookup_new(d, target, DHT_LOOKUP_NODES, DHT__L_REFRESH, d->cfg.hedge, now,
                            &slot) < 0)
            return;
        bk->refreshed = now;
        d->refresh_running++;
        dht__lookup_run(d, slot, now);
    }
}

void
dht__table_free(dht_t *d)
{
    for (unsigned i = 0; i < DHT_BUCKETS; i++) {
        free(d->buckets[i].c);
        d->buckets[i].c = NULL;
    }
}

/* ---- save / load ----
 *   offset size field
 *   0      4    magic "RDHT"
 *   4      1    version 1
 *   5      32   node id the table belongs to
 *   37     2    count (<= DHT_BUCKETS * DHT_K)
 *   39     ...  count x (id 32, family 1, ip 4|16, port 2)
 *   end-32 32   BLAKE3 of everything before
 */

ssize_t
dht_table_save(const dht_t *d, uint8_t *buf, size_t cap)
{
    size_t need = 4 + 1 + DHT_ID_LEN + 2 + SAVE_SUM_LEN, pos, count = 0;
    blake3_hasher h;

    for (unsigned b = 0; b < DHT_BUCKETS; b++)
        for (unsigned i = 0; i < d->buckets[b].n; i++)
            need += DHT_ID_LEN + 1 + dht__addr_wire_len(&d->buckets[b].c[i].addr) + 2;
    if (need > cap)
        return -ENOBUFS;
    memcpy(buf, save_magic, sizeof save_magic);
    buf[4] = SAVE_VERSION;
    memcpy(buf + 5, d->cfg.id, DHT_ID_LEN);
    pos = 5 + DHT_ID_LEN + 2;
    for (unsigned b = 0; b < DHT_BUCKETS; b++)
        for (unsigned i = 0; i < d->buckets[b].n; i++) {
            const dht__contact_t *c = &d->buckets[b].c[i];
            size_t iplen = c->addr.family == 4 ? 4 : 16;
            memcpy(buf + pos, c->id, DHT_ID_LEN);
            pos += DHT_ID_LEN;
            buf[pos++] = c->addr.family;
            memcpy(buf + pos, c->addr.ip, iplen);
            pos += iplen;
            ron_put_u16be(buf + pos, c->addr.port);
            pos += 2;
            count++;
        }
    ron_put_u16be(buf + 5 + DHT_ID_LEN, (uint16_t)count);
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, buf, pos);
    blake3_hasher_finalize(&h, buf + pos, SAVE_SUM_LEN);
    return (ssize_t)(pos + SAVE_SUM_LEN);
}

static int
load_parse(const dht_t *d, const uint8_t *buf, size_t len, dht_contact_t *out, size_t *n_out)
{
    uint8_t sum[SAVE_SUM_LEN];
    blake3_hasher h;
    ron_rd_t r;
    uint16_t count;
    const uint8_t *p;

    if (len < 5 + DHT_ID_LEN + 2 + SAVE_SUM_LEN || len > DHT_SAVE_MAX)
        return RON_EDHTBLOB;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, buf, len - SAVE_SUM_LEN);
    blake3_hasher_finalize(&h, sum, SAVE_SUM_LEN);
    if (memcmp(sum, buf + len - SAVE_SUM_LEN, SAVE_SUM_LEN) != 0)
        return RON_EDHTBLOB;
    if (memcmp(buf, save_magic, sizeof save_magic) != 0 || buf[4] != SAVE_VERSION ||
        memcmp(buf + 5, d->cfg.id, DHT_ID_LEN) != 0)
        return RON_EDHTBLOB;
    r.p = buf + 5 + DHT_ID_LEN;
    r.left = len - SAVE_SUM_LEN - 5 - DHT_ID_LEN;
    if (ron_rd_u16be(&r, &count) < 0 || count > DHT_BUCKETS * DHT_K)
        return RON_EDHTBLOB;
    for (unsigned i = 0; i < count; i++) {
        dht_contact_t *c = &out[i];
        if (ron_rd_bytes(&r, DHT_ID_LEN, &p) < 0 || r.left < 1)
            return RON_EDHTBLOB;
        memcpy(c->id, p, DHT_ID_LEN);
        memset(&c->addr, 0, sizeof c->addr);
        c->addr.family = r.p[0];
        r.p++;
        r.left--;
        if (c->addr.family != 4 && c->addr.family != 6)
            return RON_EDHTBLOB;
        if (ron_rd_bytes(&r, c->addr.family == 4 ? 4 : 16, &p) < 0)
            return RON_EDHTBLOB;
        memcpy(c->addr.ip, p, c->addr.family == 4 ? 4 : 16);
        if (ron_rd_u16be(&r, &c->addr.port) < 0 || c->addr.port == 0)
            return RON_EDHTBLOB;
        if (memcmp(c->id, d->cfg.id, DHT_ID_LEN) == 0)
            return RON_EDHTBLOB;
        for (unsigned j = 0; j < i; j++) /* load is rare: quadratic is fine at 5,120 */
            if (memcmp(out[j].id, c->id, DHT_ID_LEN) == 0)
                return RON_EDHTBLOB;
    }
    if (r.left != 0)
        return RON_EDHTBLOB;
    *n_out = count;
    return 0;
}

int
dht_table_load(dht_t *d, const uint8_t *buf, size_t len, uint64_t now)
{
    dht_contact_t *cs = ron_xcalloc(DHT_BUCKETS * DHT_K, sizeof *cs);
    size_t n = 0;
    int rc = load_parse(d, buf, len, cs, &n);

    if (rc < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        dht__bucket_t *bk = dht__bucket_of(d, cs[i].id);
        if (bk->n >= DHT_K || dht__table_find(d, cs[i].id) != NULL)
            continue;
        dht__table_seen(d, cs[i].id, &cs[i].addr, NULL, now);
        bk->c[bk->n - 1].last_seen = 0; /* not heard from in this run yet */
    }
out:
    free(cs);
    return rc;
}
