/*
 * dht.c - the sans-I/O node: datagram dispatch, request tracking, tokens and
 * the anti-amplification rule, the outgoing queue, events, timers,
 * bootstrap, publishing and housekeeping. Bytes and time come in through
 * dht_input/dht_tick; bytes go out through dht_output_next.
 * Invariants: nothing here blocks, reads a clock or draws randomness except
 * from d->rng; a reply never exceeds DHT_AMP_FACTOR x its request unless the
 * request echoed a valid token; every dropped datagram is counted once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <blake3.h>
#include <sodium.h>

#include "dht_internal.h"
#include "oap.h"
#include "ron_err.h"
#include "ron_util.h"

#define MSG_HDR (OAP_HDR_LEN + 2u + DHT_ID_LEN + DHT_TOKEN_LEN)
#define OUT_ENTRY_HDR (2u + sizeof(dht_addr_t))
#define SEED_REPING_MS 5000u

/* ---- randomness ---- */

void
dht__rng_init(dht__rng_t *r, const uint8_t seed[static 32])
{
    memcpy(r->key, seed, 32);
    r->counter = 0;
    r->pos = sizeof r->buf;
}

void
dht__rng_bytes(dht__rng_t *r, uint8_t *out, size_t n)
{
    while (n > 0) {
        if (r->pos == sizeof r->buf) {
            blake3_hasher h;
            uint8_t ctr[8];
            memcpy(ctr, &r->counter, 8);
            r->counter++;
            blake3_hasher_init_keyed(&h, r->key);
            blake3_hasher_update(&h, ctr, sizeof ctr);
            blake3_hasher_finalize(&h, r->buf, sizeof r->buf);
            r->pos = 0;
        }
        size_t take = sizeof r->buf - r->pos;
        if (take > n)
            take = n;
        memcpy(out, r->buf + r->pos, take);
        sodium_memzero(r->buf + r->pos, take); /* used randomness is not kept */
        r->pos += (uint32_t)take;
        out += take;
        n -= take;
    }
}

uint64_t
dht__rng_u64(dht__rng_t *r)
{
    uint64_t v;
    dht__rng_bytes(r, (uint8_t *)&v, sizeof v);
    return v;
}

uint64_t
dht__wall_s(const dht_t *d, uint64_t now)
{
    int64_t ms = (int64_t)now + d->cfg.wall_offset_ms;
    return ms < 0 ? 0 : (uint64_t)ms / 1000;
}

/* ---- lifecycle ---- */

void
dht_config_init(dht_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->hedge = true;
}

dht_t *
dht_new(const dht_config_t *cfg, uint64_t now, int *rc_out)
{
    uint8_t hk[16];
    dht_t *d;

    if (cfg->sk != NULL) {
        uint8_t id[DHT_ID_LEN];
        dht_id_of_key(id, cfg->sk + 32);
        if (memcmp(id, cfg->id, DHT_ID_LEN) != 0) {
            if (rc_out != NULL)
                *rc_out = RON_EINVAL;
            return NULL;
        }
    }
    d = ron_xcalloc(1, sizeof *d);
    d->cfg = *cfg;
    if (cfg->sk != NULL)
        memcpy(d->pk, cfg->sk + 32, NAME_KEY_LEN);
    dht__rng_init(&d->rng, cfg->seed);
    dht__rng_bytes(&d->rng, d->secret[0], 32);
    dht__rng_bytes(&d->rng, d->secret[1], 32);
    d->secret_rotated = now;
    dht__rng_bytes(&d->rng, hk, sizeof hk);
    dht__map_init(&d->store.by_key, hk);
    dht__rng_bytes(&d->rng, hk, sizeof hk);
    dht__map_init(&d->store.by_peer, hk);
    d->store.free_head = DHT__NIL;
    d->next_maint = now + DHT_MAINT_MS;
    d->ev_free = DHT__NIL;
    d->self_at = DHT__NEVER;
    d->self_interval = DHT_SELF_LOOKUP_MIN_MS;
    if (rc_out != NULL)
        *rc_out = 0;
    return d;
}

void
dht_free(dht_t *d)
{
    if (d == NULL)
        return;
    dht__table_free(d);
    dht__store_free(d);
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        free(d->lookups[i]);
    for (uint32_t i = 0; i < d->nlocal; i++)
        free(d->local[i].name);
    free(d->local);
    free(d->reqs);
    free(d->out);
    free(d->rx_msg);
    free(d->tx_msg);
    sodium_memzero(d->secret, sizeof d->secret);
    sodium_memzero(&d->rng, sizeof d->rng);
    free(d);
}

const dht_stats_t *
dht_stats(const dht_t *d)
{
    return &d->stats;
}

/* ---- tokens ---- */

static void
token_of(const uint8_t secret[static 32], const dht_addr_t *a, uint8_t out[static DHT_TOKEN_LEN])
{
    blake3_hasher h;
    uint8_t buf[19];
    buf[0] = a->family;
    memcpy(buf + 1, a->ip, 16);
    buf[17] = (uint8_t)(a->port >> 8);
    buf[18] = (uint8_t)a->port;
    blake3_hasher_init_keyed(&h, secret);
    blake3_hasher_update(&h, buf, sizeof buf);
    blake3_hasher_finalize(&h, out, DHT_TOKEN_LEN);
}

static bool
token_valid(const dht_t *d, const dht_msg_t *m, const dht_addr_t *from)
{
    uint8_t t[DHT_TOKEN_LEN];
    if (!(m->flags & DHT_MSG_F_TOKEN))
        return false;
    for (unsigned i = 0; i < 2; i++) {
        token_of(d->secret[i], from, t);
        if (sodium_memcmp(t, m->token, DHT_TOKEN_LEN) == 0)
            return true;
    }
    return false;
}

/* ---- output queue and events ---- */

static int
out_push(dht_t *d, const dht_msg_t *m, const dht_addr_t *to, size_t *len_out)
{
    size_t need = OUT_ENTRY_HDR + DHT_MAX_DATAGRAM;
    ssize_t n;

    if (d->out_pos == d->out_len)
        d->out_pos = d->out_len = 0;
    if (d->out_len - d->out_pos + need > DHT_MAX_OUT_BYTES) {
        d->stats.tx_dropped++;
        return RON_EFLOOD;
    }
    if (d->out_len + need > d->out_cap) {
        if (d->out_pos > 0) { /* compact before growing */
            memmove(d->out, d->out + d->out_pos, d->out_len - d->out_pos);
            d->out_len -= d->out_pos;
            d->out_pos = 0;
        }
        if (d->out_len + need > d->out_cap) {
            d->out_cap = d->out_cap ? d->out_cap * 2 : 4096;
            while (d->out_cap < d->out_len + need)
                d->out_cap *= 2;
            d->out = ron_xrealloc(d->out, d->out_cap);
        }
    }
    n = dht_msg_encode(m, d->out + d->out_len + OUT_ENTRY_HDR, DHT_MAX_DATAGRAM);
    if (n < 0)
        return (int)n; /* our own bug: the callers size every message */
    d->out[d->out_len] = (uint8_t)(n >> 8);
    d->out[d->out_len + 1] = (uint8_t)n;
    memcpy(d->out + d->out_len + 2, to, sizeof *to);
    d->out_len += OUT_ENTRY_HDR + (size_t)n;
    d->stats.tx_datagrams++;
    d->stats.tx_bytes += (uint64_t)n;
    if (len_out != NULL)
        *len_out = (size_t)n;
    return 0;
}

ssize_t
dht_output_next(dht_t *d, uint8_t *buf, size_t cap, dht_addr_t *to_out)
{
    size_t n;
    if (d->out_pos == d->out_len)
        return RON_EAGAIN;
    n = (size_t)d->out[d->out_pos] << 8 | d->out[d->out_pos + 1];
    if (n > cap)
        return -ENOBUFS;
    memcpy(to_out, d->out + d->out_pos + 2, sizeof *to_out);
    memcpy(buf, d->out + d->out_pos + OUT_ENTRY_HDR, n);
    d->out_pos += OUT_ENTRY_HDR + n;
    return (ssize_t)n;
}

void
dht__emit(dht_t *d, uint32_t what)
{
    if (d->ev_n == DHT_MAX_EVENTS) {
        /* defensive: user lookups and tracked publishes check for room when they start */
        if (what != DHT__NIL)
            dht__lookup_free(d, what);
        return;
    }
    d->ev[(d->ev_head + d->ev_n) % DHT_MAX_EVENTS] = what;
    d->ev_n++;
}

int
dht_event_next(dht_t *d, dht_event_t *ev_out)
{
    uint32_t what;

    if (d->ev_free != DHT__NIL) {
        dht__lookup_free(d, d->ev_free);
        d->ev_free = DHT__NIL;
    }
    if (d->ev_n == 0)
        return RON_EAGAIN;
    what = d->ev[d->ev_head];
    d->ev_head = (d->ev_head + 1) % DHT_MAX_EVENTS;
    d->ev_n--;
    if (what == DHT__NIL) {
        ev_out->type = DHT_EV_BOOTSTRAPPED;
        ev_out->result = NULL;
        return 0;
    }
    ev_out->type =
        d->lookups[what]->purpose == DHT__L_PUBLISH ? DHT_EV_PUBLISHED : DHT_EV_LOOKUP_DONE;
    ev_out->result = &d->lookups[what]->res;
    d->ev_free = what;
    return 0;
}

/* ---- requests ---- */

int
dht__send_request(dht_t *d, dht_msg_t *m, const dht_addr_t *to, const uint8_t *id,
                  const uint8_t *token, uint8_t purpose, uint64_t now, dht__req_t **req_out)
{
    dht__req_t *req;
    size_t len = 0;
    int rc;

    if (d->nreqs >= DHT_MAX_INFLIGHT)
        return RON_EFLOOD;
    if (d->reqs == NULL)
        d->reqs = ron_xcalloc(DHT_MAX_INFLIGHT, sizeof *d->reqs);
    m->txid = dht__rng_u64(&d->rng);
    m->reply = false;
    m->status = 0;
    memcpy(m->sender, d->cfg.id, DHT_ID_LEN);
    if (token != NULL) {
        m->flags |= DHT_MSG_F_TOKEN;
        memcpy(m->token, token, DHT_TOKEN_LEN);
        m->pad = 0;
    } else {
        m->flags &= (uint8_t)~DHT_MSG_F_TOKEN;
        memset(m->token, 0, DHT_TOKEN_LEN);
    }
    rc = out_push(d, m, to, &len);
    if (rc < 0)
        return rc;
    req = &d->reqs[d->nreqs++];
    memset(req, 0, sizeof *req);
    req->txid = m->txid;
    req->to = *to;
    if (id != NULL) {
        memcpy(req->id, id, DHT_ID_LEN);
        req->has_id = true;
    }
    req->op = m->op;
    req->purpose = purpose;
    req->req_len = (uint16_t)len;
    req->lookup = DHT__NIL;
    req->sent = now;
    req->hedge_at = DHT__NEVER;
    d->stats.requests_sent++;
    if (req_out != NULL)
        *req_out = req;
    return 0;
}

static dht__req_t *
req_find(dht_t *d, uint64_t txid, const dht_addr_t *from)
{
    for (uint32_t i = 0; i < d->nreqs; i++)
        if (d->reqs[i].txid == txid && dht_addr_equal(&d->reqs[i].to, from))
            return &d->reqs[i];
    return NULL;
}

/* Remove a request (swap with the last) and return a copy of it. */
static dht__req_t
req_take(dht_t *d, dht__req_t *req)
{
    dht__req_t copy = *req;
    *req = d->reqs[--d->nreqs];
    return copy;
}

static void
req_failed(dht_t *d, dht__req_t *req, uint64_t now)
{
    if (req->has_id)
        dht__table_failed(d, req->id, &req->to);
    switch (req->purpose) {
    case DHT__P_LOOKUP:
        dht__lookup_failed(d, req, now);
        break;
    case DHT__P_LIVENESS:
        dht__table_liveness_result(d, req->bucket, req->id, false, now);
        break;
    case DHT__P_STORE:
        dht__publish_store_done(d, req, -1, now);
        break;
    default:
        break;
    }
}

/* ---- answering requests ---- */

static size_t
contacts_size(const dht_msg_t *m)
{
    size_t n = 1;
    for (unsigned i = 0; i < m->n_contacts; i++)
        n += DHT_ID_LEN + dht__addr_wire_len(&m->contacts[i].addr);
    return n;
}

static size_t
providers_size(const dht_msg_t *m)
{
    size_t n = 1;
    for (unsigned i = 0; i < m->n_providers; i++)
        n += NAME_KEY_LEN + dht__addr_wire_len(&m->providers[i].addr) + 8 + 4 + NAME_SIG_LEN;
    return n;
}

static size_t
reply_size(const dht_msg_t *m, size_t name_len)
{
    size_t n = MSG_HDR;
    if (m->op == DHT_OP_FIND_NODE)
        n += contacts_size(m);
    else if (m->op == DHT_OP_FIND_VALUE)
        n += DHT_ID_LEN + ((m->flags & DHT_MSG_F_NAME) ? 2 + name_len : 0) + providers_size(m) +
             contacts_size(m);
    return n;
}

/* Drop contacts, then providers, then the name record until r fits in limit. */
static bool
reply_fit(dht_msg_t *r, size_t name_len, size_t limit)
{
    bool cut = false;
    while (reply_size(r, name_len) > limit) {
        cut = true;
        if (r->n_contacts > 0)
            r->n_contacts--;
        else if (r->n_providers > 0)
            r->n_providers--;
        else if (r->flags & DHT_MSG_F_NAME)
            r->flags &= (uint8_t)~DHT_MSG_F_NAME;
        else
            break; /* a bare header always fits: 3 x any request exceeds it */
    }
    return cut;
}

static void
fill_contacts(const dht_t *d, dht_msg_t *r, const uint8_t *target, const uint8_t *skip)
{
    const dht__contact_t *c[DHT_K];
    size_t n = dht__table_closest(d, target, c, DHT_K);
    r->n_contacts = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(c[i]->id, skip, DHT_ID_LEN) == 0)
            continue; /* the requester knows itself */
        memcpy(r->contacts[r->n_contacts].id, c[i]->id, DHT_ID_LEN);
        r->contacts[r->n_contacts].addr = c[i]->addr;
        r->n_contacts++;
    }
}

static uint16_t
provide_status(dht_t *d, const dht_msg_t *m, const dht_addr_t *from, uint64_t now)
{
    uint8_t peer[DHT_ID_LEN];
    int64_t wall = (int64_t)dht__wall_s(d, now);
    int rc;

    dht__peer_key(from, peer);
    if (m->flags & DHT_MSG_F_NAME) {
        rc = name_record_validate(&m->name, wall, NULL);
        if (rc == 0)
            rc = dht__store_name(d, &m->name, peer, now);
    } else {
        rc = dht_provider_verify(&m->providers[0], wall);
        if (rc == 0)
            rc = dht__store_provider(d, &m->providers[0], peer, now);
    }
    switch (rc) {
    case 0:
        return 200;
    case RON_EDHTSIG:
    case RON_ENAMESIG:
        d->stats.rx_forged++;
        return 403;
    case RON_EDHTLIMIT:
        return 429;
    case RON_ENAMEOWNER:
    case RON_ENAMESTALE:
        return 409;
    default:
        return 400;
    }
}

static void
answer(dht_t *d, const dht_msg_t *m, size_t req_len, const dht_addr_t *from, uint64_t now)
{
    dht_msg_t *r = d->tx_msg;
    size_t limit = DHT_MAX_DATAGRAM, name_len = 0;

    memset(r, 0, offsetof(dht_msg_t, contacts));
    r->txid = m->txid;
    r->reply = true;
    r->status = 200;
    r->op = m->op;
    memcpy(r->sender, d->cfg.id, DHT_ID_LEN);
    token_of(d->secret[0], from, r->token);
    if (!token_valid(d, m, from) && DHT_AMP_FACTOR * req_len < limit)
        limit = DHT_AMP_FACTOR * req_len;
    switch (m->op) {
    case DHT_OP_FIND_NODE:
        fill_contacts(d, r, m->target, m->sender);
        break;
    case DHT_OP_FIND_VALUE: {
        const name_record_t *nr = dht__store_get_name(d, m->target);
        const dht_provider_t *p[DHT_MSG_MAX_PROVIDERS];
        size_t np = dht__store_get_providers(d, m->target, p, DHT_MSG_MAX_PROVIDERS);
        memcpy(r->target, m->target, DHT_ID_LEN);
        if (nr != NULL) {
            uint8_t tmp[NAME_RECORD_MAX];
            ssize_t n = name_record_encode(nr, tmp, sizeof tmp);
            if (n > 0) {
                r->flags |= DHT_MSG_F_NAME;
                r->name = *nr;
                name_len = (size_t)n;
            }
        }
        for (size_t i = 0; i < np; i++)
            r->providers[i] = *p[i];
        r->n_providers = (uint8_t)np;
        fill_contacts(d, r, m->target, m->sender);
        break;
    }
    case DHT_OP_PROVIDE:
        r->status = provide_status(d, m, from, now);
        break;
    default:
        break;
    }
    (void)reply_fit(r, name_len, DHT_MAX_DATAGRAM); /* room, not amplification */
    if (limit < DHT_MAX_DATAGRAM && reply_fit(r, name_len, limit)) {
        r->flags |= DHT_MSG_F_TRUNCATED;
        d->stats.tx_truncated++;
    }
    (void)out_push(d, r, from, NULL);
}

static int
handle_reply(dht_t *d, const dht_msg_t *m, const dht_addr_t *from, uint64_t now)
{
    dht__req_t *p = req_find(d, m->txid, from), req;

    if (p == NULL || p->op != m->op) {
        d->stats.rx_unsolicited++;
        return RON_ENOTFOUND;
    }
    req = req_take(d, p);
    if (req.has_id && memcmp(req.id, m->sender, DHT_ID_LEN) != 0) {
        /* another node answers at that address now: the old one is gone */
        d->stats.rx_id_mismatch++;
        req_failed(d, &req, now);
        dht__table_seen(d, m->sender, from, m->token, now);
        return 0;
    }
    dht__rtt_sample(d, (uint32_t)(now - req.sent));
    dht__table_seen(d, m->sender, from, m->token, now);
    switch (req.purpose) {
    case DHT__P_LOOKUP:
        memcpy(req.id, m->sender, DHT_ID_LEN);
        dht__lookup_reply(d, &req, m, now);
        break;
    case DHT__P_LIVENESS:
        dht__table_liveness_result(d, req.bucket, req.id, true, now);
        break;
    case DHT__P_SEED:
        if (d->booting) {
            bool running = false;
            for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
                if (d->lookups[i] != NULL && d->lookups[i]->purpose == DHT__L_BOOT)
                    running = true;
            uint32_t slot;
            if (!running && dht__lookup_new(d, d->cfg.id, DHT_LOOKUP_NODES, DHT__L_BOOT,
                                            d->cfg.hedge, now, &slot) == 0)
                dht__lookup_run(d, slot, now);
        }
        break;
    default: /* DHT__P_STORE */
        if (m->status == 200)
            d->stats.provide_acks++;
        else
            d->stats.provide_refused++;
        dht__publish_store_done(d, &req, m->status == 200 ? 1 : 0, now);
        break;
    }
    return 0;
}

/* A pinned seed's address speaking as another id: refuse and remember it. */
static bool
seed_mismatch(dht_t *d, const uint8_t sender[static DHT_ID_LEN], const dht_addr_t *from)
{
    for (uint32_t i = 0; i < d->nseeds; i++) {
        const dht_seed_t *s = &d->seeds[i];
        if (!s->has_id || !dht_addr_equal(&s->addr, from) ||
            memcmp(s->id, sender, DHT_ID_LEN) == 0)
            continue;
        d->stats.rx_seed_mismatch++;
        d->seed_refused = true;
        d->refused_seed = *s;
        memcpy(d->refused_id, sender, DHT_ID_LEN);
        return true;
    }
    return false;
}

int
dht_seed_mismatch_last(const dht_t *d, dht_seed_t *seed_out, uint8_t id_out[static DHT_ID_LEN])
{
    if (!d->seed_refused)
        return RON_ENOTFOUND;
    *seed_out = d->refused_seed;
    memcpy(id_out, d->refused_id, DHT_ID_LEN);
    return 0;
}

int
dht_input(dht_t *d, const uint8_t *buf, size_t len, const dht_addr_t *from, uint64_t now)
{
    dht_msg_t *m;
    int rc;

    d->stats.rx_datagrams++;
    d->stats.rx_bytes += len;
    if (!dht__addr_valid(from)) {
        d->stats.rx_malformed++;
        return RON_EPROTO;
    }
    if (d->rx_msg == NULL) { /* ~3.5 KiB each, kept off small stacks */
        d->rx_msg = ron_xmalloc(sizeof *d->rx_msg);
        d->tx_msg = ron_xmalloc(sizeof *d->tx_msg);
    }
    m = d->rx_msg;
    rc = dht_msg_decode(m, buf, len);
    if (rc == 0 && memcmp(m->sender, d->cfg.id, DHT_ID_LEN) == 0)
        rc = RON_EPROTO; /* our own id from elsewhere: a reflection or a spoof */
    if (rc < 0) {
        d->stats.rx_malformed++;
        goto out;
    }
    if (seed_mismatch(d, m->sender, from)) {
        rc = RON_EPEERID; /* not the node the operator named at that address */
        goto out;
    }
    if (m->reply) {
        rc = handle_reply(d, m, from, now);
        goto out;
    }
    answer(d, m, len, from, now);
    dht__table_seen(d, m->sender, from, NULL, now);
    rc = 0;
out:
    return rc;
}

/* ---- timers ---- */

/* Start the lookup of a record's key; the caller fills what it publishes,
 * then runs it. NULL when no lookup slot is free (republish retries). */
static dht__lookup_t *
publish_lookup(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now, uint32_t *slot_out)
{
    if (dht__lookup_new(d, key, DHT_LOOKUP_NODES, DHT__L_PUBLISH, d->cfg.hedge, now, slot_out) < 0)
        return NULL;
    return d->lookups[*slot_out];
}

/* Look up p's key, then send p (copied) to the closest nodes. */
static void
publish_provider(dht_t *d, const dht_provider_t *p, uint64_t now)
{
    uint32_t slot;
    dht__lookup_t *L = publish_lookup(d, p->key, now, &slot);
    if (L == NULL)
        return;
    L->pub_prov = *p;
    dht__lookup_run(d, slot, now);
}

/* Look up BLAKE3(name), then send the record (copied) to the closest nodes. */
static void
publish_name(dht_t *d, const name_record_t *nr, uint64_t now)
{
    uint8_t key[DHT_ID_LEN];
    uint32_t slot;
    dht__lookup_t *L;

    dht_id_of_name(key, nr->name);
    L = publish_lookup(d, key, now, &slot);
    if (L == NULL)
        return;
    L->pub_is_name = true;
    L->pub_name = *nr;
    dht__lookup_run(d, slot, now);
}

static int
provider_make(dht_t *d, const uint8_t *key, uint32_t ttl, uint64_t now, dht_provider_t *p)
{
    memset(p, 0, sizeof *p);
    memcpy(p->key, key, DHT_ID_LEN);
    p->addr = d->cfg.overlay_addr;
    p->ts = dht__wall_s(d, now);
    p->ttl = ttl;
    return dht_provider_sign(p, d->cfg.sk);
}

static void
republish(dht_t *d, uint64_t now)
{
    for (uint32_t i = 0; i < d->nlocal && d->nlookups < DHT_MAX_LOOKUPS / 2; i++) {
        dht__local_t *l = &d->local[i];
        dht_provider_t p;
        if (l->next_publish > now)
            continue;
        l->next_publish = now + DHT_REPUBLISH_MS;
        if (l->is_name) {
            (void)dht__store_name(d, l->name, dht__local_peer(), now);
            publish_name(d, l->name, now);
        } else if (provider_make(d, l->key, DHT_PROVIDER_TTL_S, now, &p) == 0) {
            (void)dht__store_provider(d, &p, dht__local_peer(), now);
            publish_provider(d, &p, now);
        }
    }
}

static void
ping_seeds(dht_t *d, uint64_t now)
{
    dht_msg_t m;
    for (uint32_t i = 0; i < d->nseeds; i++) {
        memset(&m, 0, offsetof(dht_msg_t, contacts));
        m.op = DHT_OP_PING;
        (void)dht__send_request(d, &m, &d->seeds[i].addr, NULL, NULL, DHT__P_SEED, now, NULL);
    }
    d->next_seed_ping = now + SEED_REPING_MS;
}

static void
maintain(dht_t *d, uint64_t now)
{
    if (now >= d->secret_rotated + DHT_TOKEN_ROTATE_MS) {
        memcpy(d->secret[1], d->secret[0], 32);
        dht__rng_bytes(&d->rng, d->secret[0], 32);
        d->secret_rotated = now;
    }
    dht__store_expire(d, now);
    republish(d, now);
    if (d->table_n == 0 && d->nseeds > 0 && now >= d->next_seed_ping)
        ping_seeds(d, now);
    if (now >= d->self_at && d->table_n > 0) {
        uint32_t slot;
        d->self_at = DHT__NEVER; /* set again when this lookup finishes */
        if (dht__lookup_new(d, d->cfg.id, DHT_LOOKUP_NODES, d->booting ? DHT__L_BOOT : DHT__L_SELF,
                            d->cfg.hedge, now, &slot) == 0)
            dht__lookup_run(d, slot, now);
        else
            d->self_at = now + DHT_SELF_LOOKUP_MIN_MS;
    }
    dht__table_refresh(d, now);
    d->next_maint = now + DHT_MAINT_MS;
}

void
dht_tick(dht_t *d, uint64_t now)
{
    for (uint32_t i = 0; i < d->nreqs;) {
        dht__req_t *r = &d->reqs[i];
        if (now >= r->sent + DHT_REQUEST_TIMEOUT_MS) {
            dht__req_t req = req_take(d, r);
            d->stats.requests_timeout++;
            req_failed(d, &req, now);
            continue; /* slot i now holds another request */
        }
        if (now >= r->hedge_at) {
            dht__req_t req;
            r->hedge_at = DHT__NEVER;
            req = *r; /* the step may append to (not move) d->reqs */
            if (req.purpose == DHT__P_LOOKUP)
                dht__lookup_overdue(d, &req, now);
        }
        i++;
    }
    if (now >= d->next_maint)
        maintain(d, now);
}

uint64_t
dht_next_deadline(const dht_t *d)
{
    uint64_t t = d->next_maint;
    for (uint32_t i = 0; i < d->nreqs; i++) {
        const dht__req_t *r = &d->reqs[i];
        if (r->sent + DHT_REQUEST_TIMEOUT_MS < t)
            t = r->sent + DHT_REQUEST_TIMEOUT_MS;
        if (r->hedge_at < t)
            t = r->hedge_at;
    }
    return t;
}

/* ---- bootstrap and publishing ---- */

int
dht_bootstrap(dht_t *d, const dht_addr_t *seeds, size_t n, uint64_t now)
{
    dht_seed_t s[DHT_MAX_SEEDS];

    memset(s, 0, sizeof s);
    for (size_t i = 0; i < n && i < DHT_MAX_SEEDS; i++)
        s[i].addr = seeds[i];
    for (size_t i = DHT_MAX_SEEDS; i < n; i++) /* not kept, but checked as before */
        if (!dht__addr_valid(&seeds[i]))
            return RON_EINVAL;
    return dht_bootstrap_seeds(d, s, n < DHT_MAX_SEEDS ? n : DHT_MAX_SEEDS, now);
}

int
dht_bootstrap_seeds(dht_t *d, const dht_seed_t *seeds, size_t n, uint64_t now)
{
    uint32_t slot;

    for (size_t i = 0; i < n; i++)
        if (!dht__addr_valid(&seeds[i].addr))
            return RON_EINVAL;
    if (n == 0 && d->table_n == 0)
        return RON_EINVAL;
    d->nseeds = 0;
    for (size_t i = 0; i < n && d->nseeds < DHT_MAX_SEEDS; i++)
        d->seeds[d->nseeds++] = seeds[i];
    d->booting = true;
    ping_seeds(d, now);
    if (d->table_n > 0 &&
        dht__lookup_new(d, d->cfg.id, DHT_LOOKUP_NODES, DHT__L_BOOT, d->cfg.hedge, now, &slot) == 0)
        dht__lookup_run(d, slot, now);
    return 0;
}

static uint32_t
local_find(const dht_t *d, const uint8_t *key, bool is_name)
{
    for (uint32_t i = 0; i < d->nlocal; i++)
        if (d->local[i].is_name == is_name && memcmp(d->local[i].key, key, DHT_ID_LEN) == 0)
            return i;
    return DHT__NIL;
}

static uint32_t
local_add(dht_t *d, const uint8_t *key, bool is_name)
{
    uint32_t i = local_find(d, key, is_name);
    if (i != DHT__NIL)
        return i;
    if (d->nlocal >= DHT_MAX_LOCAL)
        return DHT__NIL;
    if (d->local == NULL)
        d->local = ron_xcalloc(DHT_MAX_LOCAL, sizeof *d->local);
    i = d->nlocal++;
    memset(&d->local[i], 0, sizeof d->local[i]);
    memcpy(d->local[i].key, key, DHT_ID_LEN);
    d->local[i].is_name = is_name;
    return i;
}

/* Sign, store and publish this node's record for key; *id_out (may be
 * NULL) gets the publish's id when notify asks for its DHT_EV_PUBLISHED. */
static int
provide(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now, bool notify,
        uint32_t *id_out)
{
    dht_provider_t p;
    dht__lookup_t *L;
    uint32_t i, slot;
    int rc;

    if (d->cfg.sk == NULL || !dht__addr_valid(&d->cfg.overlay_addr))
        return RON_EINVAL;
    if (d->nlookups >= DHT_MAX_LOOKUPS || (notify && d->ev_n >= DHT_MAX_EVENTS))
        return RON_EBUSY;
    i = local_add(d, key, false);
    if (i == DHT__NIL)
        return RON_EBUSY;
    rc = provider_make(d, key, DHT_PROVIDER_TTL_S, now, &p);
    if (rc < 0)
        return rc;
    d->local[i].next_publish = now + DHT_REPUBLISH_MS;
    (void)dht__store_provider(d, &p, dht__local_peer(), now);
    L = publish_lookup(d, p.key, now, &slot);
    if (L == NULL)
        return 0; /* cannot happen (a slot was free): the retry publishes it */
    L->pub_prov = p;
    L->pub_notify = notify;
    if (id_out != NULL)
        *id_out = L->res.id;
    dht__lookup_run(d, slot, now);
    return 0;
}

int
dht_provide(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now)
{
    return provide(d, key, now, false, NULL);
}

int
dht_provide_tracked(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now,
                    uint32_t *id_out)
{
    return provide(d, key, now, true, id_out);
}

/*
 * A publish has every PROVIDE's outcome: when no node accepted it and the
 * record is still ours to publish, try again soon (backing off) rather than
 * at the next republish 12 h away; then report it or free its slot.
 */
void
dht__publish_done(dht_t *d, uint32_t slot, uint64_t now)
{
    dht__lookup_t *L = d->lookups[slot];
    bool withdrawal = !L->pub_is_name && L->pub_prov.ttl == 0;
    uint32_t i = withdrawal ? DHT__NIL : local_find(d, L->res.target, L->pub_is_name);

    if (i != DHT__NIL) {
        dht__local_t *l = &d->local[i];
        if (L->res.store_acked > 0) {
            l->retries = 0;
        } else {
            uint64_t wait = (uint64_t)DHT_PUBLISH_RETRY_MS << (l->retries < 16 ? l->retries : 16);
            if (wait > DHT_PUBLISH_RETRY_MAX_MS)
                wait = DHT_PUBLISH_RETRY_MAX_MS;
            if (l->retries < UINT8_MAX)
                l->retries++;
            if (now + wait < l->next_publish)
                l->next_publish = now + wait;
        }
    }
    if (L->pub_notify) {
        dht__emit(d, slot); /* freed once the event is taken */
        return;
    }
    dht__lookup_free(d, slot);
}

int
dht_unprovide(dht_t *d, const uint8_t key[static DHT_ID_LEN], uint64_t now)
{
    dht_provider_t p;
    uint32_t i = local_find(d, key, false);
    int rc;

    if (i == DHT__NIL)
        return RON_ENOTFOUND;
    d->local[i] = d->local[--d->nlocal];
    rc = provider_make(d, key, 0, now, &p);
    if (rc < 0)
        return rc;
    (void)dht__store_provider(d, &p, dht__local_peer(), now);
    publish_provider(d, &p, now);
    return 0;
}

int
dht_name_publish(dht_t *d, const name_record_t *rec, uint64_t now)
{
    uint8_t key[DHT_ID_LEN];
    uint32_t i;
    int rc;

    if (d->nlookups >= DHT_MAX_LOOKUPS)
        return RON_EBUSY;
    rc = dht__store_name(d, rec, dht__local_peer(), now);
    if (rc < 0)
        return rc;
    dht_id_of_name(key, rec->name);
    i = local_add(d, key, true);
    if (i == DHT__NIL)
        return RON_EBUSY;
    if (d->local[i].name == NULL)
        d->local[i].name = ron_xmalloc(sizeof *rec);
    *d->local[i].name = *rec;
    d->local[i].next_publish = now + DHT_REPUBLISH_MS;
    publish_name(d, rec, now);
    return 0;
}
