/*
 * dht_lookup.c - iterative Kademlia lookups with hedging.
 * A lookup keeps a shortlist of the closest ids heard of, asks DHT_ALPHA of
 * them at a time until the closest one has answered without naming anyone
 * closer, then (the final round of the Kademlia paper) all of the DHT_K
 * closest not yet asked at once, and finishes when the DHT_K closest
 * candidates still in the running have all replied. Hedging: a request
 * slower than the node's observed p95 round trip is marked overdue; it stops
 * counting against DHT_ALPHA and drops out of the top k, so exactly one more
 * request (its hedge) goes to the next-closest candidate, and the lookup
 * never waits on it (its reply is still used if it comes). When a hedge is
 * overdue itself, its step gets two more requests instead of one (see
 * dht__lookup_overdue). A hop is one round: table contacts are round 1,
 * a contact learned from a round-r reply is round r + 1. A lookup reports
 * the round of its closest result node (hops: how many rounds reached the
 * key's owner) and the deepest round among all its result nodes (rounds),
 * and when its final round began (converged_ms): the time before it is the
 * walk towards the key, the time after it the wait for the k closest.
 * Invariants: cand[] is sorted by distance to the target; inflight counts
 * the INFLIGHT candidates that are not overdue.
 */
#include <stdlib.h>
#include <string.h>

#include "dht_internal.h"
#include "ron_err.h"
#include "ron_util.h"

static int
u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void
dht__rtt_sample(dht_t *d, uint32_t ms)
{
    uint32_t tmp[DHT_RTT_SAMPLES];

    d->rtt[d->rtt_pos] = ms;
    d->rtt_pos = (d->rtt_pos + 1) % DHT_RTT_SAMPLES;
    if (d->rtt_n < DHT_RTT_SAMPLES)
        d->rtt_n++;
    if (++d->rtt_since < 16 || d->rtt_n < DHT_HEDGE_MIN_SAMPLES)
        return;
    d->rtt_since = 0;
    memcpy(tmp, d->rtt, d->rtt_n * sizeof tmp[0]);
    qsort(tmp, d->rtt_n, sizeof tmp[0], u32_cmp);
    d->hedge_ms = tmp[(d->rtt_n * DHT_HEDGE_PCT + 99) / 100 - 1];
    if (d->hedge_ms == 0)
        d->hedge_ms = 1;
}

uint32_t
dht_hedge_threshold(const dht_t *d)
{
    return d->hedge_ms;
}

static dht__cand_t *
cand_find(dht__lookup_t *L, const uint8_t *id)
{
    for (uint32_t i = 0; i < L->ncand; i++)
        if (memcmp(L->cand[i].id, id, DHT_ID_LEN) == 0)
            return &L->cand[i];
    return NULL;
}

static void
cand_insert(dht_t *d, dht__lookup_t *L, const uint8_t *id, const dht_addr_t *addr, uint8_t hop)
{
    uint32_t pos, i;
    dht__cand_t *known;

    if (memcmp(id, d->cfg.id, DHT_ID_LEN) == 0)
        return;
    if ((known = cand_find(L, id)) != NULL) {
        if (hop < known->hop)
            known->hop = hop; /* its round is that of the earliest reply naming it */
        return;
    }
    for (pos = L->ncand; pos > 0; pos--)
        if (dht_id_distance_cmp(L->res.target, L->cand[pos - 1].id, id) < 0)
            break;
    if (L->ncand == DHT_LOOKUP_CANDIDATES) {
        /* full: the farthest candidate without a request in flight makes room */
        for (i = L->ncand; i > pos; i--)
            if (L->cand[i - 1].state != DHT__C_INFLIGHT)
                break;
        if (i == pos)
            return;
        memmove(&L->cand[i - 1], &L->cand[i], (L->ncand - i) * sizeof L->cand[0]);
        L->ncand--;
    }
    memmove(&L->cand[pos + 1], &L->cand[pos], (L->ncand - pos) * sizeof L->cand[0]);
    memset(&L->cand[pos], 0, sizeof L->cand[pos]);
    memcpy(L->cand[pos].id, id, DHT_ID_LEN);
    L->cand[pos].addr = *addr;
    L->cand[pos].hop = hop;
    L->ncand++;
}

static int
cand_send(dht_t *d, dht__lookup_t *L, uint32_t slot, dht__cand_t *c, uint64_t now)
{
    dht_msg_t m;
    dht__req_t *req;
    /* a token younger than one rotation is valid for sure; an older one may
     * get a truncated reply, so it is not used */
    const uint8_t *token =
        c->has_token && now < c->token_at + DHT_TOKEN_ROTATE_MS ? c->token : NULL;
    int rc;

    if (token == NULL) {
        dht__contact_t *tc = dht__table_find(d, c->id);
        if (tc != NULL && tc->has_token && now < tc->token_at + DHT_TOKEN_ROTATE_MS &&
            dht_addr_equal(&tc->addr, &c->addr))
            token = tc->token;
    }
    memset(&m, 0, offsetof(dht_msg_t, contacts));
    m.op = L->res.kind == DHT_LOOKUP_VALUE ? DHT_OP_FIND_VALUE : DHT_OP_FIND_NODE;
    memcpy(m.target, L->res.target, DHT_ID_LEN);
    /* without a token the reply may only be 3x the request: pad so a full one fits */
    m.pad = token != NULL ? 0 : (uint16_t)(DHT_PAD_UNTOKENED - (38u + 42u + DHT_ID_LEN));
    rc = dht__send_request(d, &m, &c->addr, c->id, token, DHT__P_LOOKUP, now, &req);
    if (rc < 0)
        return rc;
    req->lookup = slot;
    req->lookup_id = L->res.id;
    if (L->hedge && d->hedge_ms > 0)
        req->hedge_at = now + d->hedge_ms;
    c->state = DHT__C_INFLIGHT;
    c->level = L->send_level;
    L->inflight++;
    L->res.stats.requests++;
    return 0;
}

static void lookup_finish(dht_t *d, uint32_t slot, uint64_t now);

/* Send what the lookup may send; finish it when nothing is pending (an
 * internal lookup is then freed: callers must not touch it afterwards).
 * Returns the number of requests sent. */
static uint32_t
lookup_step(dht_t *d, uint32_t slot, uint64_t now)
{
    dht__lookup_t *L = d->lookups[slot];
    uint32_t seen = 0, sent = 0, width = DHT_ALPHA;
    bool pending = false;

    /* Kademlia's last round: once the closest candidate has answered without
     * naming anyone closer, ask all of the k closest not yet asked at once. */
    for (uint32_t i = 0; i < L->ncand; i++) {
        const dht__cand_t *c = &L->cand[i];
        if (c->state == DHT__C_FAILED || (c->state == DHT__C_INFLIGHT && c->overdue))
            continue;
        if (c->state == DHT__C_DONE) {
            width = DHT_K;
            if (!L->converged) {
                L->converged = true;
                L->res.stats.converged_ms = now - L->started;
            }
        }
        break;
    }
    for (uint32_t i = 0; i < L->ncand; i++) {
        dht__cand_t *c = &L->cand[i];
        if (c->state == DHT__C_FAILED || (c->state == DHT__C_INFLIGHT && c->overdue))
            continue;
        if (++seen > DHT_K)
            break;
        if (c->state == DHT__C_NEW) {
            if (L->inflight < width && cand_send(d, L, slot, c, now) < 0) {
                c->state = DHT__C_FAILED; /* our in-flight limit: skip it */
                continue;
            }
            if (c->state == DHT__C_INFLIGHT)
                sent++;
            pending = true;
        } else if (c->state == DHT__C_INFLIGHT) {
            pending = true;
        }
    }
    if (!pending)
        lookup_finish(d, slot, now);
    return sent;
}

int
dht__lookup_new(dht_t *d, const uint8_t target[static DHT_ID_LEN], dht_lookup_kind_t kind,
                uint8_t purpose, bool hedge, uint64_t now, uint32_t *slot_out)
{
    const dht__contact_t *c[DHT_K];
    dht__lookup_t *L;
    dht__bucket_t *bk;
    uint32_t slot;
    size_t n;

    if (d->nlookups >= DHT_MAX_LOOKUPS || (purpose == DHT__L_USER && d->ev_n >= DHT_MAX_EVENTS))
        return RON_EBUSY;
    for (slot = 0; slot < DHT_MAX_LOOKUPS; slot++)
        if (d->lookups[slot] == NULL && slot != d->ev_free)
            break;
    if (slot == DHT_MAX_LOOKUPS)
        return RON_EBUSY;
    L = ron_xcalloc(1, sizeof *L);
    d->lookups[slot] = L;
    d->nlookups++;
    L->used = true;
    L->purpose = purpose;
    L->hedge = hedge;
    L->started = now;
    L->res.id = ++d->next_lookup_id;
    L->res.kind = kind;
    memcpy(L->res.target, target, DHT_ID_LEN);
    n = dht__table_closest(d, target, c, DHT_K);
    for (size_t i = 0; i < n; i++) {
        cand_insert(d, L, c[i]->id, &c[i]->addr, 1);
        dht__cand_t *cd = cand_find(L, c[i]->id);
        if (cd != NULL && c[i]->has_token) {
            cd->has_token = true;
            memcpy(cd->token, c[i]->token, DHT_TOKEN_LEN);
            cd->token_at = c[i]->token_at;
        }
    }
    bk = dht__bucket_of(d, target);
    if (bk != NULL)
        bk->refreshed = now;
    d->stats.lookups_started++;
    *slot_out = slot;
    return 0;
}

void
dht__lookup_run(dht_t *d, uint32_t slot, uint64_t now)
{
    (void)lookup_step(d, slot, now);
}

int
dht_lookup(dht_t *d, const uint8_t target[static DHT_ID_LEN], dht_lookup_kind_t kind,
           unsigned flags, uint64_t now, uint32_t *id_out)
{
    uint32_t slot;
    int rc;

    if (kind != DHT_LOOKUP_NODES && kind != DHT_LOOKUP_VALUE)
        return RON_EINVAL;
    rc = dht__lookup_new(d, target, kind, DHT__L_USER,
                         d->cfg.hedge && !(flags & DHT_LOOKUP_F_NO_HEDGE), now, &slot);
    if (rc < 0)
        return rc;
    if (id_out != NULL)
        *id_out = d->lookups[slot]->res.id;
    dht__lookup_run(d, slot, now);
    return 0;
}

static dht__lookup_t *
lookup_of(dht_t *d, const dht__req_t *req)
{
    dht__lookup_t *L;
    if (req->lookup >= DHT_MAX_LOOKUPS)
        return NULL;
    L = d->lookups[req->lookup];
    if (L == NULL || L->reported || L->res.id != req->lookup_id)
        return NULL;
    return L;
}

/* Merge a verified name record: keep the first owner heard, its highest seq. */
static void
merge_name(dht_t *d, dht__lookup_t *L, const name_record_t *rec, uint64_t now)
{
    uint8_t key[DHT_ID_LEN];
    int64_t wall = (int64_t)dht__wall_s(d, now);

    dht_id_of_name(key, rec->name);
    if (memcmp(key, L->res.target, DHT_ID_LEN) != 0 || name_record_validate(rec, wall, NULL) < 0) {
        d->stats.rx_forged++;
        return;
    }
    if (!L->res.has_name || name_record_supersedes(&L->res.name, rec, NULL) == 0) {
        L->res.name = *rec;
        L->res.has_name = true;
    }
}

static void
merge_provider(dht_t *d, dht__lookup_t *L, const dht_provider_t *p, uint64_t now)
{
    if (p->ttl == 0 || dht_provider_verify(p, (int64_t)dht__wall_s(d, now)) < 0) {
        d->stats.rx_forged++;
        return;
    }
    for (uint32_t i = 0; i < L->res.n_providers; i++)
        if (memcmp(L->res.providers[i].pk, p->pk, NAME_KEY_LEN) == 0) {
            if (p->ts > L->res.providers[i].ts)
                L->res.providers[i] = *p;
            return;
        }
    if (L->res.n_providers < DHT_MAX_PROVIDERS_PER_KEY)
        L->res.providers[L->res.n_providers++] = *p;
}

void
dht__lookup_reply(dht_t *d, dht__req_t *req, const dht_msg_t *m, uint64_t now)
{
    dht__lookup_t *L = lookup_of(d, req);
    dht__cand_t *c;
    uint8_t hop;

    if (L == NULL)
        return;
    c = cand_find(L, req->id);
    if (c == NULL || c->state != DHT__C_INFLIGHT)
        return;
    if (!c->overdue)
        L->inflight--;
    c->state = DHT__C_DONE;
    c->has_token = true;
    memcpy(c->token, m->token, DHT_TOKEN_LEN);
    c->token_at = now;
    hop = c->hop;
    if (m->op == DHT_OP_FIND_VALUE && memcmp(m->target, L->res.target, DHT_ID_LEN) == 0) {
        if (m->flags & DHT_MSG_F_NAME)
            merge_name(d, L, &m->name, now);
        for (unsigned i = 0; i < m->n_providers; i++)
            merge_provider(d, L, &m->providers[i], now);
    }
    for (unsigned i = 0; i < m->n_contacts; i++)
        cand_insert(d, L, m->contacts[i].id, &m->contacts[i].addr, (uint8_t)(hop + 1));
    lookup_step(d, req->lookup, now);
}

void
dht__lookup_failed(dht_t *d, dht__req_t *req, uint64_t now)
{
    dht__lookup_t *L = lookup_of(d, req);
    dht__cand_t *c;

    if (L == NULL)
        return;
    L->res.stats.timeouts++;
    c = cand_find(L, req->id);
    if (c == NULL || c->state != DHT__C_INFLIGHT)
        return;
    if (!c->overdue)
        L->inflight--;
    c->state = DHT__C_FAILED;
    lookup_step(d, req->lookup, now);
}

void
dht__lookup_overdue(dht_t *d, dht__req_t *req, uint64_t now)
{
    dht__lookup_t *L = lookup_of(d, req);
    dht__cand_t *c;

    if (L == NULL)
        return;
    c = cand_find(L, req->id);
    if (c == NULL || c->state != DHT__C_INFLIGHT || c->overdue)
        return;
    c->overdue = true;
    L->inflight--;
    L->res.stats.hedged++; /* counted before the step: it may finish and free L */
    /* what this step sends is the overdue request's hedge (one, or the
     * final round when it was the closest): one level deeper */
    uint8_t level = c->level;
    L->send_level = (uint8_t)(level < UINT8_MAX ? level + 1 : level);
    if (lookup_step(d, req->lookup, now) > 0)
        d->stats.requests_hedged++;
    if ((L = lookup_of(d, req)) == NULL)
        return; /* finished */
    if (level > 0) {
        /* A hedge that is itself overdue: this step has now waited two
         * thresholds, and chains of such waits make the lookup's tail (the
         * slowest 0.1 % wait for about six, dht_sim shows). One more request,
         * to the next-closest candidate not yet asked (beyond the k closest
         * in the final round: it then only stands in if another is overdue
         * too), besides the one the step just sent. */
        for (uint32_t i = 0; i < L->ncand; i++) {
            if (L->cand[i].state != DHT__C_NEW)
                continue;
            if (cand_send(d, L, req->lookup, &L->cand[i], now) == 0) {
                d->stats.requests_hedged++;
                L->res.stats.hedged++;
            }
            break;
        }
    }
    L->send_level = 0;
}

/* Send the record a publish lookup carries to each of the closest nodes;
 * each request names the lookup's slot, so its outcome is counted
 * (dht__publish_store_done). */
static void
publish_send(dht_t *d, uint32_t slot, dht__lookup_t *L, uint64_t now)
{
    dht_msg_t m;
    dht__req_t *req;

    memset(&m, 0, offsetof(dht_msg_t, contacts));
    m.op = DHT_OP_PROVIDE;
    if (L->pub_is_name) {
        m.flags = DHT_MSG_F_NAME;
        m.name = L->pub_name;
    } else {
        m.n_providers = 1;
        m.providers[0] = L->pub_prov;
    }
    for (uint32_t i = 0; i < L->res.n_closest; i++) {
        if (dht__send_request(d, &m, &L->res.closest[i].addr, L->res.closest[i].id, NULL,
                              DHT__P_STORE, now, &req) < 0)
            continue; /* our in-flight limit: counted as not accepted */
        req->lookup = slot;
        req->lookup_id = L->res.id;
        L->res.store_sent++;
        L->stores_out++;
    }
}

void
dht__publish_store_done(dht_t *d, const dht__req_t *req, int outcome, uint64_t now)
{
    dht__lookup_t *L;

    if (req->lookup >= DHT_MAX_LOOKUPS)
        return;
    L = d->lookups[req->lookup];
    if (L == NULL || L->res.id != req->lookup_id || L->purpose != DHT__L_PUBLISH ||
        L->stores_out == 0)
        return; /* defensive: the slot was reused */
    if (outcome > 0)
        L->res.store_acked++;
    else if (outcome == 0)
        L->res.store_refused++;
    if (--L->stores_out == 0)
        dht__publish_done(d, req->lookup, now);
}

static void
lookup_finish(dht_t *d, uint32_t slot, uint64_t now)
{
    dht__lookup_t *L = d->lookups[slot];
    uint32_t hops = 0;
    uint8_t purpose = L->purpose;

    for (uint32_t i = 0; i < L->ncand && L->res.n_closest < DHT_K; i++) {
        const dht__cand_t *c = &L->cand[i];
        if (c->state != DHT__C_DONE)
            continue;
        memcpy(L->res.closest[L->res.n_closest].id, c->id, DHT_ID_LEN);
        L->res.closest[L->res.n_closest].addr = c->addr;
        L->res.n_closest++;
        if (L->res.n_closest == 1)
            L->res.stats.hops = c->hop;
        if (c->hop > hops)
            hops = c->hop;
    }
    L->res.stats.rounds = hops;
    L->res.complete = true;
    for (uint32_t i = 0; i < L->ncand; i++)
        if (L->cand[i].state == DHT__C_FAILED || L->cand[i].state == DHT__C_INFLIGHT)
            L->res.complete = false; /* it may hold what we look for */
    if (L->res.n_closest >= DHT_K)
        L->res.complete = true;
    L->res.stats.latency_ms = now - L->started;
    if (!L->converged)
        L->res.stats.converged_ms = L->res.stats.latency_ms;
    d->stats.lookups_done++;
    switch (L->purpose) {
    case DHT__L_USER:
        L->reported = true;
        dht__emit(d, slot);
        return;
    case DHT__L_REFRESH:
        if (d->refresh_running > 0)
            d->refresh_running--;
        break;
    case DHT__L_BOOT:
    case DHT__L_SELF: {
        /* Our neighbourhood: look again soon while it keeps changing (joins
         * race each other, early tables are thin), less often once stable. */
        uint64_t digest = 0;
        for (uint32_t i = 0; i < L->res.n_closest; i++) {
            uint64_t v;
            memcpy(&v, L->res.closest[i].id, sizeof v);
            digest += v * 0x9e3779b97f4a7c15ull;
        }
        if (digest != d->self_digest || L->res.n_closest == 0)
            d->self_interval = DHT_SELF_LOOKUP_MIN_MS;
        else if ((d->self_interval *= 2) > DHT_REFRESH_MS)
            d->self_interval = DHT_REFRESH_MS;
        d->self_digest = digest;
        d->self_at = now + d->self_interval;
        if (purpose == DHT__L_BOOT && L->res.n_closest > 0) {
            d->booting = false;
            dht__emit(d, DHT__NIL);
        }
        break;
    }
    default: /* DHT__L_PUBLISH: the slot lives until every PROVIDE has its outcome */
        L->reported = true; /* late lookup replies are ignored */
        publish_send(d, slot, L, now);
        if (L->stores_out == 0)
            dht__publish_done(d, slot, now);
        return;
    }
    dht__lookup_free(d, slot);
    if (purpose == DHT__L_REFRESH || purpose == DHT__L_BOOT || purpose == DHT__L_SELF)
        dht__table_refresh(d, now);
}

void
dht__lookup_free(dht_t *d, uint32_t slot)
{
    free(d->lookups[slot]);
    d->lookups[slot] = NULL;
    d->nlookups--;
}
