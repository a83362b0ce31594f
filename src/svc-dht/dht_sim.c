/*
 * dht_sim.c - runs the real svc-dht core for N virtual nodes on virtual time.
 * One event queue (a binary heap ordered by time, then insertion order, so a
 * run is a pure function of its seed) delivers datagrams with lognormal
 * one-way latency and random loss, fires each node's dht_next_deadline,
 * replaces nodes (churn: a node vanishes silently and a fresh one with a new
 * id joins at its address slot with a new port) and starts lookups. Nodes
 * join over time by bootstrapping from a random earlier node; after the
 * network settles, lookups of random keys alternate between hedged and
 * plain, and their hops, latency and requests are reported as percentiles,
 * split into the walk towards the key and the final round (converged_ms),
 * with what the slowest 1 % and 0.1 % waited for (timeouts, hedges, rounds)
 * and the routing tables' quality at the end (size, stale contacts).
 * Loss applies from the end of the initial join phase on (settling, churn
 * joins and lookups): the network forms on clean links. A mass join at
 * 200 nodes/s under 2 % loss leaves a few nodes known to almost nobody,
 * which bucket refresh repairs only slowly (docs/protocol/dht.md §9).
 *
 * --check runs correctness properties for CTest (a small network, no loss
 * or churn): every plain lookup finds the DHT_K closest live nodes a
 * brute-force scan finds, but those whose reply took over the 1 s timeout;
 * hedged lookups, which do not wait for an overdue node, find >= 95 % of
 * them on average and the closest one first in >= 95 %; provider records
 * and a name record published by some nodes are found by others; a provider
 * record with a bad signature is refused (403), counted and never served.
 * Exit status 0 when every property held, 1 otherwise, 2 on bad usage.
 *
 * --table-mem N measures one node instead: RssAnon growth of a dht_t with N
 * routing-table contacts, then with DHT_MAX_LOOKUPS lookups in flight.
 *
 * Datagram buffers come from a pool and events from a preallocated heap,
 * so the hot path does not allocate.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "svc_dht.h"

#define NEVER UINT64_MAX
#define WALL_OFFSET_MS 1764000000000LL

typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
rng_next(rng_t *r) /* xoshiro256** */
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

static double
rng_unit(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static void
rng_seed(rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

static void
rng_fill(rng_t *r, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng_next(r);
        memcpy(out + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* ---- options ---- */

typedef struct {
    unsigned nodes, lookups;
    double churn_per_hour; /* fraction of nodes replaced per hour */
    double median_ms, p99_ms, loss;
    double join_rate;   /* nodes per second while the network forms */
    double settle_s;    /* after the last join, before lookups */
    double lookup_rate; /* lookups per second */
    uint64_t seed;
    bool check;
    unsigned table_mem; /* --table-mem N: measure one node with N contacts instead */
} opts_t;

/* ---- events ---- */

enum { EV_DELIVER = 1, EV_TIMER, EV_JOIN, EV_CHURN, EV_LOOKUP };

typedef struct {
    uint64_t t, seq;
    uint32_t kind, node, buf;
} event_t;

typedef struct {
    dht_addr_t from;
    uint16_t len, to_port;
    uint8_t data[DHT_MAX_DATAGRAM];
} packet_t;

typedef struct {
    dht_t *d;
    uint8_t id[DHT_ID_LEN];
    uint8_t sk[64];
    uint16_t port; /* current incarnation */
    bool alive;
    uint64_t sched; /* time of the pending timer event, NEVER if none */
    uint64_t joined;
} node_t;

typedef struct {
    uint32_t node;
    uint16_t port;
    uint32_t id;
    bool hedge, done;
    bool aborted; /* its node left (churn) before the lookup finished */
    uint8_t target[DHT_ID_LEN];
    uint64_t started;
    dht_lookup_stats_t st;
    uint32_t n_closest, exact, overlap;
    dht_contact_t closest[DHT_K];
    int expect; /* check mode: -1 node lookup, else index of the expected value */
    uint32_t n_providers;
    bool has_name;
} meas_t;

typedef struct {
    opts_t o;
    rng_t rng;
    uint64_t now, seq;
    node_t *nodes;
    event_t *heap;
    size_t nheap, capheap;
    packet_t *pool;
    uint32_t *pool_free;
    uint32_t npool_free, capool;
    meas_t *meas;
    uint32_t nmeas, capmeas, meas_done, meas_started;
    uint32_t joined;
    uint64_t datagrams, lost, events, churned;
    double mu, sigma;
    bool measuring;
    uint8_t *scratch;
    uint64_t join_end; /* ms: all initial nodes joined */
} sim_t;

static void
heap_push(sim_t *s, uint64_t t, uint32_t kind, uint32_t node, uint32_t buf)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 65536;
        s->heap = realloc(s->heap, s->capheap * sizeof *s->heap);
        if (s->heap == NULL)
            abort();
    }
    event_t e = {t, s->seq++, kind, node, buf};
    size_t i = s->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p].t < e.t || (s->heap[p].t == e.t && s->heap[p].seq < e.seq))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static event_t
heap_pop(sim_t *s)
{
    event_t top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap &&
            (s->heap[c + 1].t < s->heap[c].t ||
             (s->heap[c + 1].t == s->heap[c].t && s->heap[c + 1].seq < s->heap[c].seq)))
            c++;
        if (last.t < s->heap[c].t || (last.t == s->heap[c].t && last.seq < s->heap[c].seq))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nheap > 0)
        s->heap[i] = last;
    return top;
}

static uint32_t
pool_get(sim_t *s)
{
    if (s->npool_free == 0) {
        uint32_t old = s->capool;
        s->capool = old ? old * 2 : 4096;
        s->pool = realloc(s->pool, (size_t)s->capool * sizeof *s->pool);
        s->pool_free = realloc(s->pool_free, (size_t)s->capool * sizeof *s->pool_free);
        if (s->pool == NULL || s->pool_free == NULL)
            abort();
        for (uint32_t i = old; i < s->capool; i++)
            s->pool_free[s->npool_free++] = i;
    }
    return s->pool_free[--s->npool_free];
}

static void
pool_put(sim_t *s, uint32_t i)
{
    s->pool_free[s->npool_free++] = i;
}

/* ---- addresses: slot i is 10.x.y.z, its port tells incarnations apart ---- */

static dht_addr_t
addr_of(uint32_t i, uint16_t port)
{
    dht_addr_t a;
    memset(&a, 0, sizeof a);
    a.family = 4;
    a.ip[0] = 10;
    a.ip[1] = (uint8_t)(i >> 16);
    a.ip[2] = (uint8_t)(i >> 8);
    a.ip[3] = (uint8_t)i;
    a.port = port;
    return a;
}

static uint32_t
slot_of(const dht_addr_t *a)
{
    return (uint32_t)a->ip[1] << 16 | (uint32_t)a->ip[2] << 8 | a->ip[3];
}

static uint64_t
latency_ms(sim_t *s)
{
    double u1 = rng_unit(&s->rng), u2 = rng_unit(&s->rng);
    double z = sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-300)) * cos(2 * M_PI * u2);
    double v = exp(s->mu + s->sigma * z);
    return v < 1 ? 1 : (uint64_t)v;
}

/* ---- nodes ---- */

static void
node_schedule(sim_t *s, uint32_t i)
{
    node_t *n = &s->nodes[i];
    uint64_t dl = dht_next_deadline(n->d);
    if (dl < s->now)
        dl = s->now;
    if (dl < n->sched) {
        n->sched = dl;
        heap_push(s, dl, EV_TIMER, i, 0);
    }
}

static meas_t *
meas_find(sim_t *s, uint32_t node, uint16_t port, uint32_t id)
{
    /* lookups in flight at once are few: scan back from the newest */
    for (uint32_t k = s->nmeas; k > 0 && k + 4096 > s->nmeas; k--) {
        meas_t *m = &s->meas[k - 1];
        if (m->node == node && m->port == port && m->id == id && !m->done)
            return m;
    }
    return NULL;
}

static void
node_flush(sim_t *s, uint32_t i)
{
    node_t *n = &s->nodes[i];
    dht_addr_t to;
    dht_event_t ev;
    ssize_t len;

    while ((len = dht_output_next(n->d, s->scratch, DHT_MAX_DATAGRAM, &to)) > 0) {
        s->datagrams++;
        /* loss starts once the network has formed (see the file comment) */
        if (s->o.loss > 0 && s->now >= s->join_end && rng_unit(&s->rng) < s->o.loss) {
            s->lost++;
            continue;
        }
        uint32_t b = pool_get(s);
        packet_t *p = &s->pool[b];
        p->from = addr_of(i, n->port);
        p->len = (uint16_t)len;
        p->to_port = to.port;
        memcpy(p->data, s->scratch, (size_t)len);
        heap_push(s, s->now + latency_ms(s), EV_DELIVER, slot_of(&to), b);
    }
    while (dht_event_next(n->d, &ev) == 0) {
        if (ev.type != DHT_EV_LOOKUP_DONE)
            continue;
        meas_t *m = meas_find(s, i, n->port, ev.result->id);
        if (m == NULL)
            continue;
        m->done = true;
        m->st = ev.result->stats;
        m->n_closest = ev.result->n_closest;
        memcpy(m->closest, ev.result->closest, sizeof m->closest);
        m->n_providers = ev.result->n_providers;
        m->has_name = ev.result->has_name;
        s->meas_done++;
    }
    node_schedule(s, i);
}

static void
node_start(sim_t *s, uint32_t i)
{
    node_t *n = &s->nodes[i];
    uint8_t pk[32], seed[32];
    dht_config_t cfg;

    rng_fill(&s->rng, seed, sizeof seed);
    crypto_sign_seed_keypair(pk, n->sk, seed);
    dht_id_of_key(n->id, pk);
    dht_config_init(&cfg);
    memcpy(cfg.id, n->id, DHT_ID_LEN);
    cfg.sk = n->sk;
    cfg.overlay_addr = addr_of(i, 5301);
    rng_fill(&s->rng, cfg.seed, sizeof cfg.seed);
    cfg.wall_offset_ms = WALL_OFFSET_MS;
    n->port = (uint16_t)(n->port + 1 == 0 ? 1 : n->port + 1);
    n->d = dht_new(&cfg, s->now, NULL);
    if (n->d == NULL)
        abort();
    n->alive = true;
    n->sched = NEVER;
    n->joined = s->now;
    if (s->joined > 0) {
        /* seed: a random live node other than this one */
        for (int tries = 0; tries < 64; tries++) {
            uint32_t j = (uint32_t)(rng_next(&s->rng) % s->joined);
            if (j == i || !s->nodes[j].alive)
                continue;
            dht_addr_t seed_addr = addr_of(j, s->nodes[j].port);
            (void)dht_bootstrap(n->d, &seed_addr, 1, s->now);
            break;
        }
    }
    node_flush(s, i);
}

static void
node_stop(sim_t *s, uint32_t i)
{
    for (uint32_t k = s->nmeas; k > 0 && k + 4096 > s->nmeas; k--) {
        meas_t *m = &s->meas[k - 1];
        if (m->node == i && m->port == s->nodes[i].port && !m->done) {
            m->done = m->aborted = true;
            s->meas_done++;
        }
    }
    dht_free(s->nodes[i].d);
    s->nodes[i].d = NULL;
    s->nodes[i].alive = false;
}

static uint32_t
random_live(sim_t *s, uint64_t min_age_ms)
{
    for (;;) {
        uint32_t j = (uint32_t)(rng_next(&s->rng) % s->joined);
        if (s->nodes[j].alive && s->now >= s->nodes[j].joined + min_age_ms)
            return j;
    }
}

static meas_t *
meas_new(sim_t *s)
{
    if (s->nmeas == s->capmeas) {
        s->capmeas = s->capmeas ? s->capmeas * 2 : 1024;
        s->meas = realloc(s->meas, s->capmeas * sizeof *s->meas);
        if (s->meas == NULL)
            abort();
    }
    meas_t *m = &s->meas[s->nmeas++];
    memset(m, 0, sizeof *m);
    m->expect = -1;
    return m;
}

static int
start_lookup(sim_t *s, uint32_t i, const uint8_t *target, dht_lookup_kind_t kind, bool hedge,
             meas_t **out)
{
    uint32_t id;
    node_t *n = &s->nodes[i];
    if (dht_lookup(n->d, target, kind, hedge ? 0 : DHT_LOOKUP_F_NO_HEDGE, s->now, &id) < 0)
        return -1;
    meas_t *m = meas_new(s);
    m->node = i;
    m->port = n->port;
    m->id = id;
    m->hedge = hedge;
    m->started = s->now;
    memcpy(m->target, target, DHT_ID_LEN);
    s->meas_started++;
    if (out != NULL)
        *out = m;
    node_flush(s, i);
    return 0;
}

/* ---- the event loop ---- */

static void
run_until(sim_t *s, uint64_t t_end, bool (*stop)(sim_t *))
{
    while (s->nheap > 0 && s->heap[0].t <= t_end) {
        if (stop != NULL && stop(s))
            return;
        event_t e = heap_pop(s);
        if (e.t / 60000 != s->now / 60000 && !s->o.check)
            fprintf(stderr, "dht_sim: %4.0f s virtual, %u nodes, %llu datagrams, lookups %u/%u\n",
                    (double)e.t / 1000, s->joined, (unsigned long long)s->datagrams, s->meas_done,
                    2 * s->o.lookups);
        s->now = e.t;
        s->events++;
        node_t *n = e.node < s->o.nodes ? &s->nodes[e.node] : NULL;
        switch (e.kind) {
        case EV_DELIVER: {
            packet_t *p = &s->pool[e.buf];
            if (n != NULL && n->alive && n->port == p->to_port) {
                (void)dht_input(n->d, p->data, p->len, &p->from, s->now);
                node_flush(s, e.node);
            }
            pool_put(s, e.buf);
            break;
        }
        case EV_TIMER:
            if (n->alive && n->sched == e.t) {
                n->sched = NEVER;
                dht_tick(n->d, s->now);
                node_flush(s, e.node);
            }
            break;
        case EV_JOIN:
            node_start(s, e.node);
            s->joined++;
            if (s->joined < s->o.nodes)
                heap_push(s, s->now + (uint64_t)(1000.0 / s->o.join_rate), EV_JOIN, s->joined, 0);
            break;
        case EV_CHURN: {
            uint32_t j = random_live(s, 0);
            node_stop(s, j);
            node_start(s, j);
            s->churned++;
            double mean_ms = 3600e3 / (s->o.churn_per_hour * s->o.nodes);
            heap_push(s, s->now + (uint64_t)(-log(1 - rng_unit(&s->rng)) * mean_ms) + 1, EV_CHURN,
                      UINT32_MAX, 0);
            break;
        }
        case EV_LOOKUP: {
            uint8_t target[DHT_ID_LEN];
            uint32_t j = random_live(s, 60000);
            rng_fill(&s->rng, target, sizeof target);
            (void)start_lookup(s, j, target, DHT_LOOKUP_NODES, s->meas_started % 2 == 0, NULL);
            if (s->meas_started < 2 * s->o.lookups)
                heap_push(s, s->now + (uint64_t)(1000.0 / s->o.lookup_rate), EV_LOOKUP,
                          UINT32_MAX, 0);
            break;
        }
        default:
            break;
        }
    }
    if (s->now < t_end && (stop == NULL || !stop(s)))
        s->now = t_end;
}

static bool
all_measured(sim_t *s)
{
    return s->meas_started >= 2 * s->o.lookups && s->meas_done >= s->meas_started;
}

/* ---- brute force ---- */

static const uint8_t *cmp_target;
static int
id_cmp(const void *a, const void *b)
{
    return dht_id_distance_cmp(cmp_target, a, b);
}

/* The DHT_K closest live node ids to target, origin excluded. */
static size_t
brute_closest(sim_t *s, const uint8_t *target, uint32_t origin, uint8_t (*ids)[DHT_ID_LEN])
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->joined; i++) {
        if (!s->nodes[i].alive || i == origin)
            continue;
        const uint8_t *id = s->nodes[i].id;
        if (n < DHT_K) {
            memcpy(ids[n++], id, DHT_ID_LEN);
        } else if (dht_id_distance_cmp(target, id, ids[DHT_K - 1]) < 0) {
            memcpy(ids[DHT_K - 1], id, DHT_ID_LEN);
        } else {
            continue;
        }
        cmp_target = target;
        qsort(ids, n, DHT_ID_LEN, id_cmp); /* n <= 20: cheap */
    }
    return n;
}

static void
score(sim_t *s, meas_t *m)
{
    uint8_t ids[DHT_K][DHT_ID_LEN];
    size_t n = brute_closest(s, m->target, m->node, ids);
    m->overlap = 0;
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < m->n_closest; j++)
            if (memcmp(ids[i], m->closest[j].id, DHT_ID_LEN) == 0) {
                m->overlap++;
                break;
            }
    m->exact = (m->overlap == n && m->n_closest == n);
}

/* ---- report ---- */

static int
u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t
pct(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i == 0 ? 0 : i - 1];
}

/* The slowest lookups, and what they waited for. */
typedef struct {
    size_t n;
    double timeouts, hedged, rounds, conv_ms, final_ms;
} tail_t;

typedef struct {
    size_t n;
    uint64_t hops[4], rounds[4], lat[4], reqp[4], conv[4], fin[4];
    double req_mean, hedged_mean, timeouts_mean, exact, overlap;
    uint64_t hops_max, lat_max;
    tail_t tail[2]; /* the slowest 1 % and 0.1 % */
} summary_t;

static const meas_t *lat_sort_base;
static int
lat_idx_cmp(const void *a, const void *b)
{
    uint64_t x = lat_sort_base[*(const uint32_t *)a].st.latency_ms;
    uint64_t y = lat_sort_base[*(const uint32_t *)b].st.latency_ms;
    return x < y ? 1 : x > y ? -1 : 0; /* slowest first */
}

static summary_t
summarize(sim_t *s, bool hedge)
{
    static const double ps[4] = {50, 95, 99, 99.9};
    summary_t r;
    uint64_t *h = malloc(s->nmeas * sizeof *h), *l = malloc(s->nmeas * sizeof *l),
             *q = malloc(s->nmeas * sizeof *q), *rd = malloc(s->nmeas * sizeof *rd),
             *cv = malloc(s->nmeas * sizeof *cv), *fn = malloc(s->nmeas * sizeof *fn);
    uint32_t *idx = malloc(s->nmeas * sizeof *idx);
    double req = 0, hed = 0, tmo = 0, ex = 0, ov = 0;
    size_t n = 0;

    memset(&r, 0, sizeof r);
    for (uint32_t i = 0; i < s->nmeas; i++) {
        const meas_t *m = &s->meas[i];
        if (m->hedge != hedge || !m->done || m->aborted || m->expect >= 0)
            continue;
        h[n] = m->st.hops;
        rd[n] = m->st.rounds;
        l[n] = m->st.latency_ms;
        cv[n] = m->st.converged_ms;
        fn[n] = m->st.latency_ms - m->st.converged_ms;
        idx[n] = i;
        q[n] = m->st.requests;
        req += m->st.requests;
        hed += m->st.hedged;
        tmo += m->st.timeouts;
        ex += m->exact;
        ov += m->overlap;
        n++;
    }
    qsort(h, n, sizeof *h, u64_cmp);
    qsort(l, n, sizeof *l, u64_cmp);
    qsort(q, n, sizeof *q, u64_cmp);
    qsort(rd, n, sizeof *rd, u64_cmp);
    qsort(cv, n, sizeof *cv, u64_cmp);
    qsort(fn, n, sizeof *fn, u64_cmp);
    lat_sort_base = s->meas;
    qsort(idx, n, sizeof *idx, lat_idx_cmp);
    for (int t = 0; t < 2; t++) {
        tail_t *tl = &r.tail[t];
        tl->n = (size_t)ceil((double)n * (t == 0 ? 0.01 : 0.001));
        for (size_t k = 0; k < tl->n; k++) {
            const dht_lookup_stats_t *st = &s->meas[idx[k]].st;
            tl->timeouts += st->timeouts;
            tl->hedged += st->hedged;
            tl->rounds += st->rounds;
            tl->conv_ms += (double)st->converged_ms;
            tl->final_ms += (double)(st->latency_ms - st->converged_ms);
        }
        if (tl->n > 0) {
            tl->timeouts /= (double)tl->n;
            tl->hedged /= (double)tl->n;
            tl->rounds /= (double)tl->n;
            tl->conv_ms /= (double)tl->n;
            tl->final_ms /= (double)tl->n;
        }
    }
    r.n = n;
    for (int i = 0; i < 4; i++) {
        r.hops[i] = pct(h, n, ps[i]);
        r.rounds[i] = pct(rd, n, ps[i]);
        r.lat[i] = pct(l, n, ps[i]);
        r.reqp[i] = pct(q, n, ps[i]);
        r.conv[i] = pct(cv, n, ps[i]);
        r.fin[i] = pct(fn, n, ps[i]);
    }
    r.hops_max = n ? h[n - 1] : 0;
    r.lat_max = n ? l[n - 1] : 0;
    if (n > 0) {
        r.req_mean = req / (double)n;
        r.hedged_mean = hed / (double)n;
        r.timeouts_mean = tmo / (double)n;
        r.exact = ex / (double)n;
        r.overlap = ov / (double)n;
    }
    free(h);
    free(l);
    free(q);
    free(rd);
    free(cv);
    free(fn);
    free(idx);
    return r;
}

static long
rss_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return v;
}

/* Routing-table quality at the end: contacts per table, the share of them
 * that point at a node no longer there (churned), and how many tables hold
 * fewer than DHT_K contacts. The contacts are read back from each node's
 * dht_table_save blob (docs/protocol/dht.md section 7). */
static void
report_tables(sim_t *s)
{
    size_t total = 0, stale = 0, tables = 0, thin = 0;
    uint8_t *blob = malloc(DHT_SAVE_MAX);
    if (blob == NULL)
        abort();
    for (uint32_t i = 0; i < s->joined; i++) {
        if (!s->nodes[i].alive)
            continue;
        ssize_t len = dht_table_save(s->nodes[i].d, blob, DHT_SAVE_MAX);
        if (len < 0)
            abort();
        size_t n = (size_t)blob[37] << 8 | blob[38], pos = 39;
        tables++;
        total += n;
        thin += n < DHT_K;
        for (size_t k = 0; k < n; k++) {
            const uint8_t *id = blob + pos;
            dht_addr_t a;
            memset(&a, 0, sizeof a);
            a.family = blob[pos + DHT_ID_LEN];
            size_t iplen = a.family == 4 ? 4 : 16;
            memcpy(a.ip, blob + pos + DHT_ID_LEN + 1, iplen);
            pos += DHT_ID_LEN + 1 + iplen;
            a.port = (uint16_t)(blob[pos] << 8 | blob[pos + 1]);
            pos += 2;
            uint32_t j = slot_of(&a);
            stale += j >= s->joined || !s->nodes[j].alive || s->nodes[j].port != a.port ||
                     memcmp(s->nodes[j].id, id, DHT_ID_LEN) != 0;
        }
    }
    printf("- routing tables: %.1f contacts per node, %.2f %% of them stale (their node left), %zu "
           "tables with fewer than %u contacts\n",
           tables ? (double)total / (double)tables : 0.0,
           total ? 100.0 * (double)stale / (double)total : 0.0, thin, DHT_K);
    free(blob);
}

static void
report(sim_t *s, double wall_s)
{
    summary_t a = summarize(s, false), b = summarize(s, true);
    uint64_t hedged = 0, sent = 0, trunc = 0, unsol = 0, mal = 0, evict = 0, mism = 0;
    for (uint32_t i = 0; i < s->o.nodes; i++)
        if (s->nodes[i].alive) {
            const dht_stats_t *st = dht_stats(s->nodes[i].d);
            hedged += st->requests_hedged;
            sent += st->requests_sent;
            trunc += st->tx_truncated;
            unsol += st->rx_unsolicited;
            mal += st->rx_malformed;
            evict += st->evictions;
            mism += st->rx_id_mismatch;
        }
    printf("| lookups | n | hops to the closest node p50 / p95 / p99 / p99.9 / max | rounds for "
           "all k p50 / p99 | latency ms p50 / p95 / p99 / p99.9 / max | requests mean (p50 / "
           "p99) | hedged / timeouts per lookup | exact k closest | mean overlap |\n");
    printf("|---|---:|---|---|---|---|---|---:|---:|\n");
    const summary_t *v[2] = {&a, &b};
    for (int i = 0; i < 2; i++)
        printf("| %s | %zu | %llu / %llu / %llu / %llu / %llu | %llu / %llu | %llu / %llu / %llu / "
               "%llu / %llu | %.2f (%llu / %llu) | %.2f / %.2f | %.1f %% | %.2f / %u |\n",
               i == 0 ? "plain (no hedging)" : "hedged", v[i]->n,
               (unsigned long long)v[i]->hops[0], (unsigned long long)v[i]->hops[1],
               (unsigned long long)v[i]->hops[2], (unsigned long long)v[i]->hops[3],
               (unsigned long long)v[i]->hops_max, (unsigned long long)v[i]->rounds[0],
               (unsigned long long)v[i]->rounds[2], (unsigned long long)v[i]->lat[0],
               (unsigned long long)v[i]->lat[1], (unsigned long long)v[i]->lat[2],
               (unsigned long long)v[i]->lat[3], (unsigned long long)v[i]->lat_max,
               v[i]->req_mean, (unsigned long long)v[i]->reqp[0],
               (unsigned long long)v[i]->reqp[2], v[i]->hedged_mean, v[i]->timeouts_mean,
               100.0 * v[i]->exact, v[i]->overlap, DHT_K);
    printf("\n");
    printf("- hedging: p99.9 latency %.2fx lower (%llu ms -> %llu ms), p99 %.2fx; requests per "
           "lookup %+.1f %%\n",
           b.lat[3] ? (double)a.lat[3] / (double)b.lat[3] : 0.0, (unsigned long long)a.lat[3],
           (unsigned long long)b.lat[3], b.lat[2] ? (double)a.lat[2] / (double)b.lat[2] : 0.0,
           a.req_mean > 0 ? 100.0 * (b.req_mean / a.req_mean - 1) : 0.0);
    printf("\n");
    printf("Where the time goes: the walk towards the key (until the closest candidate has "
           "answered without naming a closer one) and the final round (waiting for the k "
           "closest); the slowest 1 %% and 0.1 %% of lookups, means.\n\n");
    printf("| lookups | walk ms p50 / p95 / p99 / p99.9 | final round ms p50 / p95 / p99 / p99.9 "
           "| slowest 1 %%: walk + final ms, timeouts, hedged, rounds | slowest 0.1 %%: walk + "
           "final ms, timeouts, hedged, rounds |\n");
    printf("|---|---|---|---|---|\n");
    for (int i = 0; i < 2; i++) {
        const tail_t *t1 = &v[i]->tail[0], *t2 = &v[i]->tail[1];
        printf("| %s | %llu / %llu / %llu / %llu | %llu / %llu / %llu / %llu | %.0f + %.0f, %.2f, "
               "%.2f, %.2f | %.0f + %.0f, %.2f, %.2f, %.2f |\n",
               i == 0 ? "plain (no hedging)" : "hedged", (unsigned long long)v[i]->conv[0],
               (unsigned long long)v[i]->conv[1], (unsigned long long)v[i]->conv[2],
               (unsigned long long)v[i]->conv[3], (unsigned long long)v[i]->fin[0],
               (unsigned long long)v[i]->fin[1], (unsigned long long)v[i]->fin[2],
               (unsigned long long)v[i]->fin[3], t1->conv_ms, t1->final_ms, t1->timeouts,
               t1->hedged, t1->rounds, t2->conv_ms, t2->final_ms, t2->timeouts, t2->hedged,
               t2->rounds);
    }
    printf("\n");
    uint32_t aborted = 0, unfinished = 0;
    for (uint32_t i = 0; i < s->nmeas; i++) {
        aborted += s->meas[i].aborted;
        unfinished += !s->meas[i].done;
    }
    printf("- lookups whose node left by churn before they finished: %u (excluded); unfinished: "
           "%u\n", aborted, unfinished);
    printf("- network: %u nodes, %llu replaced by churn, %llu datagrams (%llu lost), %llu "
           "events, %.0f s virtual\n",
           s->o.nodes, (unsigned long long)s->churned, (unsigned long long)s->datagrams,
           (unsigned long long)s->lost, (unsigned long long)s->events, (double)s->now / 1000);
    report_tables(s);
    printf("- live nodes' requests: %llu sent, %llu hedged (%.2f %%)\n", (unsigned long long)sent,
           (unsigned long long)hedged, sent ? 100.0 * (double)hedged / (double)sent : 0.0);
    printf("- live nodes' counters: %llu replies truncated (no token), %llu unsolicited, %llu "
           "malformed, %llu id mismatches, %llu evictions\n",
           (unsigned long long)trunc, (unsigned long long)unsol, (unsigned long long)mal,
           (unsigned long long)mism, (unsigned long long)evict);
    printf("- run: %.1f s wall clock, peak RSS %ld MiB (RssAnon now %ld MiB)\n", wall_s,
           rss_kib("VmHWM") / 1024, rss_kib("RssAnon") / 1024);
}

/* ---- check mode ---- */

static int failures;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "dht_sim: FAILED: " __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static bool
lookups_done(sim_t *s)
{
    return s->meas_done >= s->meas_started;
}

static void
run_lookups_to_end(sim_t *s)
{
    uint64_t limit = s->now + 600000;
    run_until(s, limit, lookups_done);
}

/* Inject one datagram from a fake peer into node i and return the node's reply status. */
static int
inject_forged_provider(sim_t *s, uint32_t i, const uint8_t *key)
{
    dht_msg_t *m = calloc(1, sizeof *m);
    uint8_t pk[32], sk[64], buf[DHT_MAX_DATAGRAM];
    dht_addr_t from = addr_of(s->o.nodes + 7, 9999), to;
    int status = -1;
    ssize_t n;

    crypto_sign_keypair(pk, sk);
    m->op = DHT_OP_PROVIDE;
    m->txid = 77;
    memset(m->sender, 0xee, DHT_ID_LEN);
    m->n_providers = 1;
    memcpy(m->providers[0].key, key, DHT_ID_LEN);
    m->providers[0].addr = addr_of(s->o.nodes + 7, 5301);
    m->providers[0].ts = (uint64_t)((s->now + WALL_OFFSET_MS) / 1000);
    m->providers[0].ttl = DHT_PROVIDER_TTL_S;
    if (dht_provider_sign(&m->providers[0], sk) != 0)
        abort();
    m->providers[0].sig[5] ^= 1; /* forged */
    n = dht_msg_encode(m, buf, sizeof buf);
    if (n < 0)
        abort();
    (void)dht_input(s->nodes[i].d, buf, (size_t)n, &from, s->now);
    while ((n = dht_output_next(s->nodes[i].d, buf, sizeof buf, &to)) > 0)
        if (dht_addr_equal(&to, &from) && dht_msg_decode(m, buf, (size_t)n) == 0 && m->reply)
            status = m->status;
    node_flush(s, i);
    free(m);
    return status;
}

static void
check_properties(sim_t *s)
{
    enum { NPROV = 20 };
    uint8_t keys[NPROV][DHT_ID_LEN], forged_key[DHT_ID_LEN], name_key[DHT_ID_LEN];
    uint32_t providers[NPROV];
    name_record_t rec;

    /* 1. node lookups against brute force */
    s->o.lookups = s->o.lookups / 2;
    heap_push(s, s->now, EV_LOOKUP, UINT32_MAX, 0);
    run_until(s, s->now + 3600000, all_measured);
    uint32_t plain = 0, plain_exact = 0, hedged = 0, hedged_exact = 0, hedged_overlap = 0;
    uint32_t hedged_first = 0, worst = DHT_K;
    for (uint32_t i = 0; i < s->nmeas; i++) {
        meas_t *m = &s->meas[i];
        CHECK(m->done, "lookup %u did not finish", i);
        score(s, m);
        if (m->hedge) {
            uint8_t ids[DHT_K][DHT_ID_LEN];
            hedged++;
            hedged_exact += m->exact;
            hedged_overlap += m->overlap;
            brute_closest(s, m->target, m->node, ids);
            hedged_first += m->n_closest > 0 && memcmp(m->closest[0].id, ids[0], DHT_ID_LEN) == 0;
            if (m->overlap < worst)
                worst = m->overlap;
        } else {
            /* a node whose reply took longer than the 1 s timeout is out */
            plain++;
            plain_exact += m->exact || m->overlap + m->st.timeouts >= DHT_K;
        }
    }
    printf("check: plain lookups exact (but timed-out nodes) %u/%u; hedged: exact %u/%u, closest node first %u/%u, "
           "mean overlap %.2f/%u, worst %u/%u\n",
           plain_exact, plain, hedged_exact, hedged, hedged_first, hedged,
           hedged ? (double)hedged_overlap / hedged : 0.0, DHT_K, worst, DHT_K);
    CHECK(plain > 0 && plain_exact == plain,
          "plain lookups must find the k closest (but nodes that timed out)");
    /* a hedged lookup does not wait for an overdue node, so its result may
     * hold the next-closest nodes instead of a slow member or two */
    CHECK(hedged > 0 && hedged_overlap * 100 >= hedged * DHT_K * 95,
          "hedged lookups must find >= 95 %% of the k closest on average");
    CHECK(hedged_first * 100 >= hedged * 95, "hedged lookups must find the closest node first");

    /* 2. provider records and a name record */
    for (int k = 0; k < NPROV; k++) {
        rng_fill(&s->rng, keys[k], DHT_ID_LEN);
        providers[k] = random_live(s, 0);
        CHECK(dht_provide(s->nodes[providers[k]].d, keys[k], s->now) == 0, "dht_provide");
        node_flush(s, providers[k]);
    }
    uint32_t owner = random_live(s, 0);
    memset(&rec, 0, sizeof rec);
    strcpy(rec.name, "photos.alice");
    rec.seq = 1;
    rec.ts = (uint64_t)((s->now + WALL_OFFSET_MS) / 1000);
    memset(rec.addr.b, 0xab, sizeof rec.addr.b);
    CHECK(name_record_sign(&rec, s->nodes[owner].sk) == 0, "name_record_sign");
    CHECK(dht_name_publish(s->nodes[owner].d, &rec, s->now) == 0, "dht_name_publish");
    node_flush(s, owner);
    run_until(s, s->now + 20000, NULL);

    /* 3. a forged provider record is refused by a node closest to its key */
    rng_fill(&s->rng, forged_key, DHT_ID_LEN);
    uint8_t ids[DHT_K][DHT_ID_LEN];
    brute_closest(s, forged_key, UINT32_MAX, ids);
    uint32_t victim = 0;
    for (uint32_t i = 0; i < s->joined; i++)
        if (memcmp(s->nodes[i].id, ids[0], DHT_ID_LEN) == 0)
            victim = i;
    uint64_t forged_before = dht_stats(s->nodes[victim].d)->rx_forged;
    CHECK(inject_forged_provider(s, victim, forged_key) == 403, "forged record answered 403");
    CHECK(dht_stats(s->nodes[victim].d)->rx_forged == forged_before + 1, "forged record counted");

    /* 4. other nodes find them */
    uint32_t first = s->nmeas;
    for (int k = 0; k < NPROV; k++) {
        meas_t *m;
        uint32_t j = random_live(s, 0);
        if (start_lookup(s, j, keys[k], DHT_LOOKUP_VALUE, k % 2 == 0, &m) == 0)
            m->expect = k;
    }
    dht_id_of_name(name_key, rec.name);
    meas_t *mn = NULL, *mf = NULL;
    (void)start_lookup(s, random_live(s, 0), name_key, DHT_LOOKUP_VALUE, true, &mn);
    if (mn != NULL)
        mn->expect = NPROV;
    (void)start_lookup(s, random_live(s, 0), forged_key, DHT_LOOKUP_VALUE, true, &mf);
    if (mf != NULL)
        mf->expect = NPROV + 1;
    run_lookups_to_end(s);
    uint32_t found = 0;
    for (uint32_t i = first; i < s->nmeas; i++) {
        meas_t *m = &s->meas[i];
        CHECK(m->done, "value lookup %u finished", i);
        if (m->expect < NPROV)
            found += m->n_providers >= 1;
        else if (m->expect == NPROV)
            CHECK(m->has_name, "name record found");
        else
            CHECK(m->n_providers == 0, "forged record never served");
    }
    printf("check: provider records found %u/%d, name record %s, forged record refused\n", found,
           NPROV, mn != NULL && mn->has_name ? "found" : "MISSING");
    CHECK(found == NPROV, "every provider record must be found");
}

/* ---- memory of one node ---- */

/*
 * One dht_t with n routing-table contacts (PINGs from ids crafted to fill
 * buckets 0, 1, 2, ... with DHT_K each, every bucket's replacement cache
 * allocated with it) and DHT_MAX_LOOKUPS lookups in flight, their requests
 * queued: the core's share of a node's memory, as RssAnon growth.
 */
static int
table_mem(const opts_t *o)
{
    dht_config_t cfg;
    dht_msg_t *m = calloc(1, sizeof *m);
    uint8_t buf[DHT_MAX_DATAGRAM], target[DHT_ID_LEN];
    dht_addr_t to;
    rng_t rng;
    unsigned lookups = 0;
    int rc = 1;

    if (m == NULL)
        return 1;
    rng_seed(&rng, o->seed);
    long before = rss_kib("RssAnon");
    dht_config_init(&cfg);
    rng_fill(&rng, cfg.id, DHT_ID_LEN);
    rng_fill(&rng, cfg.seed, sizeof cfg.seed);
    cfg.wall_offset_ms = WALL_OFFSET_MS;
    dht_t *d = dht_new(&cfg, 0, NULL);
    if (d == NULL)
        goto out;
    for (unsigned k = 0; k < o->table_mem; k++) {
        unsigned b = k / DHT_K; /* shares exactly b leading bits with us */
        memset(m, 0, offsetof(dht_msg_t, contacts));
        m->op = DHT_OP_PING;
        m->txid = k + 1;
        rng_fill(&rng, m->sender, DHT_ID_LEN);
        for (unsigned bit = 0; bit <= b; bit++) {
            uint8_t mask = (uint8_t)(0x80u >> (bit % 8)), want = cfg.id[bit / 8] & mask;
            if (bit == b)
                want ^= mask;
            m->sender[bit / 8] = (uint8_t)((m->sender[bit / 8] & ~mask) | want);
        }
        ssize_t n = dht_msg_encode(m, buf, sizeof buf);
        dht_addr_t from = addr_of(k + 1, 5302);
        if (n < 0 || dht_input(d, buf, (size_t)n, &from, 1) != 0)
            goto out;
        while (dht_output_next(d, buf, sizeof buf, &to) > 0)
            ;
    }
    long filled = rss_kib("RssAnon");
    for (unsigned k = 0; k < DHT_MAX_LOOKUPS; k++) {
        rng_fill(&rng, target, DHT_ID_LEN);
        if (dht_lookup(d, target, DHT_LOOKUP_NODES, 0, 2, NULL) == 0)
            lookups++;
    }
    long busy = rss_kib("RssAnon");
    printf("| %zu | %u | %ld | %ld | %ld |\n", dht_table_size(d), lookups, filled - before,
           busy - before, busy);
    rc = dht_table_size(d) == o->table_mem ? 0 : 1;
out:
    dht_free(d);
    free(m);
    return rc;
}

/* ---- main ---- */

static int
usage(void)
{
    fprintf(stderr,
            "usage: dht_sim [--nodes N] [--lookups N] [--churn FRACTION_PER_HOUR] [--median MS]\n"
            "               [--p99 MS] [--loss FRACTION] [--join-rate N_PER_S] [--settle S]\n"
            "               [--rate LOOKUPS_PER_S] [--seed N] [--check]\n"
            "       dht_sim --table-mem CONTACTS [--seed N]\n");
    return 2;
}

static bool
parse_args(int argc, char **argv, opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--check") == 0) {
            o->check = true;
            continue;
        }
        if (i + 1 >= argc)
            return false;
        char *end;
        double v = strtod(argv[++i], &end);
        if (*end != '\0' || v < 0 || v != v)
            return false;
        if (strcmp(a, "--nodes") == 0 && v >= 2 && v <= 1000000)
            o->nodes = (unsigned)v;
        else if (strcmp(a, "--lookups") == 0 && v >= 1 && v <= 10000000)
            o->lookups = (unsigned)v;
        else if (strcmp(a, "--churn") == 0 && v <= 10)
            o->churn_per_hour = v;
        else if (strcmp(a, "--median") == 0 && v >= 1)
            o->median_ms = v;
        else if (strcmp(a, "--p99") == 0 && v >= 1)
            o->p99_ms = v;
        else if (strcmp(a, "--loss") == 0 && v < 1)
            o->loss = v;
        else if (strcmp(a, "--join-rate") == 0 && v > 0)
            o->join_rate = v;
        else if (strcmp(a, "--settle") == 0)
            o->settle_s = v;
        else if (strcmp(a, "--rate") == 0 && v > 0)
            o->lookup_rate = v;
        else if (strcmp(a, "--table-mem") == 0 && v >= 1 && v <= 4000) /* 200 buckets: the
                                        crafted ids keep >= 56 random bits, so never collide */
            o->table_mem = (unsigned)v;
        else if (strcmp(a, "--seed") == 0)
            o->seed = (uint64_t)v;
        else
            return false;
    }
    return o->p99_ms >= o->median_ms;
}

int
main(int argc, char **argv)
{
    sim_t s;
    struct timespec t0, t1;
    opts_t o = {.nodes = 10000, .lookups = 10000, .churn_per_hour = 0.2, .median_ms = 50,
                .p99_ms = 300, .loss = 0.02, .join_rate = 200, .settle_s = 300,
                .lookup_rate = 50, .seed = 1};

    if (!parse_args(argc, argv, &o))
        return usage();
    if (o.check) { /* small, lossless, no churn: results are exact */
        o.loss = 0;
        o.churn_per_hour = 0;
        if (o.settle_s > 120)
            o.settle_s = 120;
    }
    if (sodium_init() < 0)
        return 1;
    if (o.table_mem > 0)
        return table_mem(&o);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&s, 0, sizeof s);
    s.o = o;
    rng_seed(&s.rng, o.seed);
    s.mu = log(o.median_ms);
    s.sigma = log(o.p99_ms / o.median_ms) / 2.3263478740408408;
    s.nodes = calloc(o.nodes, sizeof *s.nodes);
    s.scratch = malloc(DHT_MAX_DATAGRAM);
    if (s.nodes == NULL || s.scratch == NULL)
        return 1;

    heap_push(&s, 0, EV_JOIN, 0, 0);
    uint64_t join_end = (uint64_t)(o.nodes / o.join_rate * 1000.0);
    s.join_end = join_end;
    if (o.churn_per_hour > 0)
        heap_push(&s, join_end, EV_CHURN, UINT32_MAX, 0);
    run_until(&s, join_end + (uint64_t)(o.settle_s * 1000.0), NULL);
    size_t tables = 0;
    for (uint32_t i = 0; i < s.joined; i++)
        if (s.nodes[i].alive)
            tables += dht_table_size(s.nodes[i].d);
    fprintf(stderr, "dht_sim: %u nodes settled at %.0f s virtual: %.1f contacts per table, "
            "%llu datagrams\n", s.joined, (double)s.now / 1000,
            s.joined ? (double)tables / s.joined : 0.0, (unsigned long long)s.datagrams);

    if (o.check) {
        check_properties(&s);
    } else {
        /* bounded: a lookup that never finished would be a bug, reported below */
        uint64_t t_end = s.now + (uint64_t)(2.0 * o.lookups / o.lookup_rate * 1000.0) + 600000;
        heap_push(&s, s.now, EV_LOOKUP, UINT32_MAX, 0);
        run_until(&s, t_end, all_measured);
        for (uint32_t i = 0; i < s.nmeas; i++)
            if (s.meas[i].done && !s.meas[i].aborted)
                score(&s, &s.meas[i]);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!o.check)
        report(&s, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);

    for (uint32_t i = 0; i < o.nodes; i++)
        if (s.nodes[i].alive)
            node_stop(&s, i);
    free(s.nodes);
    free(s.heap);
    free(s.pool);
    free(s.pool_free);
    free(s.meas);
    free(s.scratch);
    if (o.check && failures > 0)
        return 1;
    return 0;
}
