/*
 * sto_fetch.c - the sans-I/O fetch scheduler (policy in sto_fetch.h). It
 * exists apart from the service so the decisions that make a fetch fast and
 * robust (split, hedge, retry elsewhere, ban liars) are tested with virtual
 * time, deterministically, without peers.
 *
 * State: one byte per piece (not wanted / wanted / held) plus the number of
 * live requests that cover it and have not delivered it; the requests in
 * flight (a small array, each with a mask of the pieces it delivered); the
 * providers with their in-flight count, failures, slow marks and backoff.
 * A wanted piece is askable when it is not held and no request covers it.
 */
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_util.h"
#include "sto_fetch.h"
#include "sto_tree.h"

enum { P_NONE = 0, P_WANT = 1, P_HAVE = 2 };
enum { PROV_OK = 0, PROV_DROPPED = 1, PROV_BANNED = 2 };

typedef struct {
    uint8_t id[STO_FETCH_ID_LEN];
    uint32_t inflight;
    uint32_t fails;      /* retryable failures in a row */
    uint32_t slow;       /* times one of its requests was hedged */
    uint64_t not_before; /* backoff end (ms) */
    uint8_t state;
} prov_t;

typedef struct {
    uint64_t id;
    size_t prov;
    uint64_t first, count;    /* pieces (0, 0 for a probe while the size is unknown) */
    uint64_t offset, length;  /* bytes asked */
    uint64_t progress_ms;     /* start, or the last piece it delivered */
    uint8_t mask;             /* pieces (bit i = first + i) it delivered */
    bool probe;               /* sent while the size was unknown */
    bool hedged;              /* another request duplicates it */
    bool is_hedge;
    bool cancelling;          /* a CANCEL was decided; its pieces are released */
    bool penalized;           /* its provider was already charged (timeout) */
    uint64_t partner;         /* a hedge: the id of the request it duplicates */
} req_t;

typedef struct {
    uint64_t off, len;
} want_t;

struct sto_fetch {
    sto_fetch_limits_t lim;
    uint64_t size;            /* UINT64_MAX while unknown */
    uint64_t past_end;        /* while the size is unknown: an offset known past the end */
    uint64_t npieces;
    uint8_t *pst;             /* npieces states */
    uint8_t *pin;             /* npieces: live requests covering it, not delivered */
    uint64_t scan;            /* no askable piece below this index */
    uint64_t wanted_left;     /* wanted pieces not yet held */
    uint64_t held;            /* pieces held */
    want_t wants[STO_FETCH_MAX_WANTS];
    size_t nwants;
    prov_t prov[STO_FETCH_MAX_PROVIDERS];
    size_t nprov;
    req_t *reqs;
    size_t nreqs, capreqs;
    uint64_t next_id;
    uint64_t samples[STO_FETCH_SAMPLES]; /* gaps between progress events (ms) */
    size_t nsamples, sample_pos;
    sto_fetch_stats_t st;
};

/* ---- helpers ---- */

static uint32_t
lim_or(uint32_t v, uint32_t def)
{
    return v != 0 ? v : def;
}

static uint64_t
hedge_after(const sto_fetch_t *f)
{
    uint64_t sorted[STO_FETCH_SAMPLES], med, thr;
    size_t i, j, n = f->nsamples;

    if (n == 0)
        return f->lim.hedge_floor_ms;
    memcpy(sorted, f->samples, n * sizeof sorted[0]);
    for (i = 1; i < n; i++) { /* insertion sort: at most 32 samples */
        uint64_t v = sorted[i];
        for (j = i; j > 0 && sorted[j - 1] > v; j--)
            sorted[j] = sorted[j - 1];
        sorted[j] = v;
    }
    med = sorted[n / 2];
    thr = 2 * med;
    return thr > f->lim.hedge_floor_ms ? thr : f->lim.hedge_floor_ms;
}

static void
sample_add(sto_fetch_t *f, uint64_t ms)
{
    f->samples[f->sample_pos] = ms;
    f->sample_pos = (f->sample_pos + 1) % STO_FETCH_SAMPLES;
    if (f->nsamples < STO_FETCH_SAMPLES)
        f->nsamples++;
}

static req_t *
req_find(sto_fetch_t *f, uint64_t id)
{
    for (size_t i = 0; i < f->nreqs; i++)
        if (f->reqs[i].id == id)
            return &f->reqs[i];
    return NULL;
}

static void
piece_want(sto_fetch_t *f, uint64_t first, uint64_t last)
{
    for (uint64_t i = first; i <= last && i < f->npieces; i++) {
        if (f->pst[i] == P_NONE) {
            f->pst[i] = P_WANT;
            f->wanted_left++;
            if (i < f->scan)
                f->scan = i;
        }
    }
}

/* Mark the pieces covering bytes [off, off + len) wanted (size known). */
static void
want_apply(sto_fetch_t *f, uint64_t off, uint64_t len)
{
    uint64_t end;

    if (f->size == 0) {
        piece_want(f, 0, 0); /* the one empty piece */
        return;
    }
    if (len == 0 || off >= f->size)
        return;
    end = len > f->size - off ? f->size : off + len;
    piece_want(f, off / STO_PIECE_LEN, (end - 1) / STO_PIECE_LEN);
}

/* Release request r's claim on the pieces it has not delivered. */
static void
req_release(sto_fetch_t *f, req_t *r)
{
    for (uint64_t i = 0; i < r->count; i++) {
        uint64_t p = r->first + i;
        if (r->mask & (1u << i))
            continue;
        if (p < f->npieces && f->pin[p] > 0)
            f->pin[p]--;
        if (p < f->npieces && f->pst[p] == P_WANT && f->pin[p] == 0 && p < f->scan)
            f->scan = p;
    }
}

/* A probe learns its pieces once the size is known. */
static void
req_bind_probe(sto_fetch_t *f, req_t *r)
{
    uint64_t end;

    r->first = r->count = 0;
    if (f->size == 0) {
        r->count = 1;
    } else if (r->offset < f->size) {
        end = r->length > f->size - r->offset ? f->size : r->offset + r->length;
        r->first = r->offset / STO_PIECE_LEN;
        r->count = (end - 1) / STO_PIECE_LEN - r->first + 1;
    }
    if (r->count > 8)
        r->count = 8; /* the mask's width; a probe asks at most STO_FETCH_REQ_PIECES */
    if (!r->cancelling)
        for (uint64_t i = 0; i < r->count; i++)
            f->pin[r->first + i]++;
}

/* Best provider for a new request (not `avoid`), or SIZE_MAX. */
static size_t
prov_pick(const sto_fetch_t *f, uint64_t now, size_t avoid)
{
    size_t best = SIZE_MAX;

    for (size_t i = 0; i < f->nprov; i++) {
        const prov_t *p = &f->prov[i];
        if (i == avoid || p->state != PROV_OK || now < p->not_before ||
            p->inflight >= f->lim.per_provider)
            continue;
        if (best == SIZE_MAX || p->inflight < f->prov[best].inflight ||
            (p->inflight == f->prov[best].inflight &&
             (p->slow < f->prov[best].slow ||
              (p->slow == f->prov[best].slow && p->fails < f->prov[best].fails))))
            best = i;
    }
    return best;
}

static size_t
live_count(const sto_fetch_t *f, bool hedges)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nreqs; i++)
        if (!f->reqs[i].cancelling && f->reqs[i].is_hedge == hedges)
            n++;
    return n;
}

static req_t *
req_new(sto_fetch_t *f, size_t prov, uint64_t now)
{
    req_t *r;

    if (f->nreqs == f->capreqs) {
        f->capreqs = f->capreqs ? f->capreqs * 2 : 8;
        f->reqs = ron_xrealloc(f->reqs, f->capreqs * sizeof *f->reqs);
    }
    r = &f->reqs[f->nreqs++];
    memset(r, 0, sizeof *r);
    r->id = ++f->next_id;
    r->prov = prov;
    r->progress_ms = now;
    f->prov[prov].inflight++;
    f->st.sent++;
    return r;
}

static void
action_fill(sto_fetch_action_t *out, const req_t *r, sto_fetch_kind_t kind)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->req_id = r->id;
    out->provider = r->prov;
    out->offset = r->offset;
    out->length = r->length;
    out->first = r->first;
    out->count = r->count;
    out->hedge = r->is_hedge;
}

/* Pieces [first, first + count) as a byte range. */
static void
req_set_bytes(const sto_fetch_t *f, req_t *r)
{
    uint64_t end;

    r->offset = r->first * STO_PIECE_LEN;
    end = (r->first + r->count) * STO_PIECE_LEN;
    if (end > f->size)
        end = f->size;
    r->length = end > r->offset ? end - r->offset : 1; /* an empty object: its one piece */
    if (f->size == 0)
        r->offset = 0;
}

/* ---- lifecycle ---- */

sto_fetch_t *
sto_fetch_new(uint64_t size, const sto_fetch_limits_t *lim)
{
    sto_fetch_t *f = ron_xcalloc(1, sizeof *f);
    sto_fetch_limits_t l = {0};

    if (lim != NULL)
        l = *lim;
    f->lim.inflight = lim_or(l.inflight, STO_FETCH_INFLIGHT);
    f->lim.per_provider = lim_or(l.per_provider, STO_FETCH_PER_PROVIDER);
    f->lim.max_fails = lim_or(l.max_fails, STO_FETCH_MAX_FAILS);
    f->lim.hedge_floor_ms = lim_or(l.hedge_floor_ms, STO_FETCH_HEDGE_FLOOR_MS);
    f->lim.timeout_ms = lim_or(l.timeout_ms, STO_FETCH_TIMEOUT_MS);
    f->lim.backoff_ms = lim_or(l.backoff_ms, STO_FETCH_BACKOFF_MS);
    f->size = UINT64_MAX;
    f->past_end = UINT64_MAX;
    if (size != UINT64_MAX)
        (void)sto_fetch_set_size(f, size);
    return f;
}

void
sto_fetch_free(sto_fetch_t *f)
{
    if (f == NULL)
        return;
    free(f->pst);
    free(f->pin);
    free(f->reqs);
    free(f);
}

/* ---- inputs ---- */

int
sto_fetch_provider_add(sto_fetch_t *f, const uint8_t id[static STO_FETCH_ID_LEN], size_t *idx_out)
{
    size_t i;

    for (i = 0; i < f->nprov; i++) {
        if (memcmp(f->prov[i].id, id, STO_FETCH_ID_LEN) == 0) {
            /* a dropped provider named again once the fetch is stuck gets another chance */
            if (f->prov[i].state == PROV_DROPPED && sto_fetch_state(f) == STO_FETCH_STUCK) {
                f->prov[i].state = PROV_OK;
                f->prov[i].fails = 0;
            }
            goto out;
        }
    }
    if (f->nprov == STO_FETCH_MAX_PROVIDERS)
        return RON_ETOOBIG;
    memset(&f->prov[i], 0, sizeof f->prov[i]);
    memcpy(f->prov[i].id, id, STO_FETCH_ID_LEN);
    f->nprov++;
out:
    if (idx_out != NULL)
        *idx_out = i;
    return 0;
}

const uint8_t *
sto_fetch_provider_id(const sto_fetch_t *f, size_t idx)
{
    return idx < f->nprov ? f->prov[idx].id : NULL;
}

size_t
sto_fetch_providers_usable(const sto_fetch_t *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nprov; i++)
        if (f->prov[i].state == PROV_OK)
            n++;
    return n;
}

void
sto_fetch_want(sto_fetch_t *f, uint64_t offset, uint64_t length)
{
    if (f->size != UINT64_MAX) {
        want_apply(f, offset, length);
        return;
    }
    if (length == 0)
        return;
    if (f->nwants == STO_FETCH_MAX_WANTS) {
        /* too many ranges while the size is unknown: keep one span over all */
        uint64_t lo = offset, hi = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
        for (size_t i = 0; i < f->nwants; i++) {
            uint64_t e = f->wants[i].len > UINT64_MAX - f->wants[i].off
                             ? UINT64_MAX
                             : f->wants[i].off + f->wants[i].len;
            if (f->wants[i].off < lo)
                lo = f->wants[i].off;
            if (e > hi)
                hi = e;
        }
        f->wants[0].off = lo;
        f->wants[0].len = hi - lo;
        f->nwants = 1;
        return;
    }
    f->wants[f->nwants].off = offset;
    f->wants[f->nwants].len = length;
    f->nwants++;
}

int
sto_fetch_set_size(sto_fetch_t *f, uint64_t size)
{
    if (f->size != UINT64_MAX)
        return f->size == size ? 0 : RON_EINVAL;
    if (size == UINT64_MAX)
        return RON_EINVAL;
    f->size = size;
    f->npieces = sto_tree_pieces(size);
    f->pst = ron_xcalloc(f->npieces, 1);
    f->pin = ron_xcalloc(f->npieces, 1);
    f->scan = f->npieces;
    for (size_t i = 0; i < f->nwants; i++)
        want_apply(f, f->wants[i].off, f->wants[i].len);
    f->nwants = 0;
    for (size_t i = 0; i < f->nreqs; i++)
        if (f->reqs[i].probe)
            req_bind_probe(f, &f->reqs[i]);
    return 0;
}

uint64_t
sto_fetch_size(const sto_fetch_t *f)
{
    return f->size;
}

void
sto_fetch_have(sto_fetch_t *f, uint64_t piece)
{
    if (piece >= f->npieces || f->pst[piece] == P_HAVE)
        return;
    if (f->pst[piece] == P_WANT)
        f->wanted_left--;
    f->pst[piece] = P_HAVE;
    f->held++;
}

uint64_t
sto_fetch_held(const sto_fetch_t *f)
{
    return f->held;
}

bool
sto_fetch_has(const sto_fetch_t *f, uint64_t piece)
{
    return piece < f->npieces && f->pst[piece] == P_HAVE;
}

int
sto_fetch_piece(sto_fetch_t *f, uint64_t req_id, uint64_t piece, uint64_t now_ms)
{
    req_t *r = req_find(f, req_id);
    uint64_t bit;

    if (r == NULL || piece < r->first || piece - r->first >= r->count || piece >= f->npieces)
        return 0;
    bit = piece - r->first;
    /* pieces that arrive together (one answer) are one progress event */
    if (now_ms >= r->progress_ms && (r->mask == 0 || now_ms > r->progress_ms))
        sample_add(f, now_ms - r->progress_ms);
    r->progress_ms = now_ms;
    if (!(r->mask & (1u << bit))) {
        r->mask |= (uint8_t)(1u << bit);
        if (!r->cancelling && f->pin[piece] > 0)
            f->pin[piece]--;
    }
    if (f->pst[piece] == P_HAVE) {
        f->st.dup_pieces++;
        return 0;
    }
    sto_fetch_have(f, piece);
    return 1;
}

void
sto_fetch_req_end(sto_fetch_t *f, uint64_t req_id, sto_fetch_end_t end, uint64_t now_ms)
{
    req_t *r = req_find(f, req_id);
    prov_t *p;

    if (r == NULL)
        return;
    p = &f->prov[r->prov];
    if (!r->cancelling)
        req_release(f, r);
    if (p->inflight > 0)
        p->inflight--;
    switch (end) {
    case STO_FETCH_OK:
        p->fails = 0;
        break;
    case STO_FETCH_RETRYABLE:
        if (r->penalized)
            break;
        f->st.failures++;
        p->fails++;
        if (p->fails >= f->lim.max_fails && p->state == PROV_OK)
            p->state = PROV_DROPPED;
        p->not_before = now_ms + f->lim.backoff_ms;
        break;
    case STO_FETCH_NOT_FOUND:
        f->st.failures++;
        if (p->state == PROV_OK)
            p->state = PROV_DROPPED;
        break;
    case STO_FETCH_BAD_PIECE:
        if (p->state != PROV_BANNED)
            f->st.bad++;
        p->state = PROV_BANNED;
        break;
    case STO_FETCH_PAST_END:
        /* not the provider's fault: the object is shorter than this probe's start */
        if (f->size == UINT64_MAX && r->offset < f->past_end)
            f->past_end = r->offset;
        break;
    case STO_FETCH_CANCELLED:
    default:
        break;
    }
    /* a failed hedge leaves its partner hedgeable again */
    if (r->is_hedge && end != STO_FETCH_OK) {
        req_t *o = req_find(f, r->partner);
        if (o != NULL)
            o->hedged = false;
    }
    *r = f->reqs[--f->nreqs];
}

/* ---- decisions ---- */

/* A live request whose pieces are all held but not all by it: cancel it. */
static req_t *
find_redundant(sto_fetch_t *f)
{
    bool done = sto_fetch_state(f) == STO_FETCH_DONE;

    for (size_t i = 0; i < f->nreqs; i++) {
        req_t *r = &f->reqs[i];
        bool all = true, mine = true;
        if (r->cancelling || (r->probe && f->size == UINT64_MAX))
            continue;
        for (uint64_t k = 0; k < r->count; k++) {
            if (f->pst[r->first + k] != P_HAVE)
                all = false;
            if (!(r->mask & (1u << k)))
                mine = false;
        }
        if ((all && !mine) || (done && !mine))
            return r;
    }
    return NULL;
}

static int
decide_cancel(sto_fetch_t *f, req_t *r, sto_fetch_action_t *out)
{
    req_release(f, r);
    r->cancelling = true;
    action_fill(out, r, STO_FETCH_CANCEL);
    return 1;
}

static int
decide_timeouts(sto_fetch_t *f, uint64_t now, sto_fetch_action_t *out)
{
    for (size_t i = 0; i < f->nreqs; i++) {
        req_t *r = &f->reqs[i];
        prov_t *p = &f->prov[r->prov];
        if (r->cancelling || now < r->progress_ms + f->lim.timeout_ms)
            continue;
        /* charged now, so the pieces go elsewhere at once */
        r->penalized = true;
        f->st.failures++;
        p->fails++;
        if (p->fails >= f->lim.max_fails && p->state == PROV_OK)
            p->state = PROV_DROPPED;
        p->not_before = now + f->lim.backoff_ms;
        return decide_cancel(f, r, out);
    }
    return 0;
}

static int
decide_hedge(sto_fetch_t *f, uint64_t now, sto_fetch_action_t *out)
{
    uint64_t thr = hedge_after(f);

    if (live_count(f, true) >= f->lim.inflight)
        return 0;
    for (size_t i = 0; i < f->nreqs; i++) {
        req_t *r = &f->reqs[i], *h;
        uint64_t lo = UINT64_MAX, hi = 0;
        size_t prov;
        if (r->cancelling || r->hedged || r->is_hedge || now < r->progress_ms + thr)
            continue;
        if (f->size != UINT64_MAX) {
            for (uint64_t k = 0; k < r->count; k++) {
                if (f->pst[r->first + k] == P_HAVE)
                    continue;
                if (lo == UINT64_MAX)
                    lo = r->first + k;
                hi = r->first + k;
            }
            if (lo == UINT64_MAX)
                continue;
        }
        prov = prov_pick(f, now, r->prov);
        if (prov == SIZE_MAX)
            return 0;
        r->hedged = true;
        f->prov[r->prov].slow++;
        h = req_new(f, prov, now);
        r = &f->reqs[i]; /* req_new may move the array */
        h->is_hedge = true;
        h->partner = r->id;
        f->st.hedges++;
        if (f->size == UINT64_MAX) {
            h->probe = true;
            h->offset = r->offset;
            h->length = r->length;
        } else {
            h->first = lo;
            h->count = hi - lo + 1;
            for (uint64_t k = 0; k < h->count; k++)
                f->pin[h->first + k]++;
            req_set_bytes(f, h);
        }
        action_fill(out, h, STO_FETCH_SEND);
        return 1;
    }
    return 0;
}

/* The first run of askable pieces at or after f->scan, up to STO_FETCH_REQ_PIECES. */
static bool
next_run(sto_fetch_t *f, uint64_t *first_out, uint64_t *count_out)
{
    uint64_t i = f->scan, n = 0;

    while (i < f->npieces && !(f->pst[i] == P_WANT && f->pin[i] == 0))
        i++;
    f->scan = i;
    if (i >= f->npieces)
        return false;
    while (i + n < f->npieces && n < STO_FETCH_REQ_PIECES && f->pst[i + n] == P_WANT &&
           f->pin[i + n] == 0)
        n++;
    *first_out = i;
    *count_out = n;
    return true;
}

/* A live (not cancelled) probe or probe hedge that starts at offset off. */
static bool
probe_covers(const sto_fetch_t *f, uint64_t off)
{
    for (size_t i = 0; i < f->nreqs; i++)
        if (!f->reqs[i].cancelling && f->reqs[i].probe && f->reqs[i].offset == off)
            return true;
    return false;
}

/* Size unknown: probe the lowest wanted range in consecutive spans of
 * STO_FETCH_REQ_PIECES pieces (the first from the range's start to a piece
 * boundary), up to STO_FETCH_PROBES at once, none at or past f->past_end.
 * Whichever answers first tells the size; the others bring their pieces. */
static int
decide_probe(sto_fetch_t *f, uint64_t now, sto_fetch_action_t *out)
{
    const uint64_t span = STO_FETCH_REQ_PIECES * (uint64_t)STO_PIECE_LEN;
    uint64_t off, len, end, live = 0;
    size_t prov, w = SIZE_MAX;
    req_t *r;

    if (f->nwants == 0)
        return 0;
    for (size_t i = 0; i < f->nreqs; i++)
        if (!f->reqs[i].cancelling && f->reqs[i].probe && !f->reqs[i].is_hedge)
            live++;
    if (live >= STO_FETCH_PROBES)
        return 0;
    for (size_t i = 0; i < f->nwants; i++) /* the lowest wanted range not known past the end */
        if (f->wants[i].off < f->past_end && (w == SIZE_MAX || f->wants[i].off < f->wants[w].off))
            w = i;
    if (w == SIZE_MAX)
        return 0;
    off = f->wants[w].off;
    end = f->wants[w].len > UINT64_MAX - off ? UINT64_MAX : off + f->wants[w].len;
    len = span - off % STO_PIECE_LEN;
    for (uint64_t k = 0; k < STO_FETCH_PROBES && off < end && off < f->past_end; k++) {
        if (len > end - off)
            len = end - off;
        if (!probe_covers(f, off)) {
            prov = prov_pick(f, now, SIZE_MAX);
            if (prov == SIZE_MAX)
                return 0;
            r = req_new(f, prov, now);
            r->probe = true;
            r->offset = off;
            r->length = len;
            action_fill(out, r, STO_FETCH_SEND);
            return 1;
        }
        off += len;
        len = span;
    }
    return 0;
}

static int
decide_send(sto_fetch_t *f, uint64_t now, sto_fetch_action_t *out)
{
    uint64_t first, count;
    size_t prov;
    req_t *r;

    if (live_count(f, false) >= f->lim.inflight)
        return 0;
    if (f->size == UINT64_MAX)
        return decide_probe(f, now, out);
    prov = prov_pick(f, now, SIZE_MAX);
    if (prov == SIZE_MAX || !next_run(f, &first, &count))
        return 0;
    r = req_new(f, prov, now);
    r->first = first;
    r->count = count;
    for (uint64_t k = 0; k < count; k++)
        f->pin[first + k]++;
    req_set_bytes(f, r);
    action_fill(out, r, STO_FETCH_SEND);
    return 1;
}

int
sto_fetch_next(sto_fetch_t *f, uint64_t now_ms, sto_fetch_action_t *out)
{
    req_t *r = find_redundant(f);

    if (r != NULL)
        return decide_cancel(f, r, out);
    if (decide_timeouts(f, now_ms, out))
        return 1;
    if (sto_fetch_state(f) == STO_FETCH_DONE)
        return 0;
    if (decide_send(f, now_ms, out))
        return 1;
    return decide_hedge(f, now_ms, out);
}

uint64_t
sto_fetch_wake_ms(const sto_fetch_t *f, uint64_t now_ms)
{
    uint64_t wake = UINT64_MAX, thr = hedge_after(f);
    bool need = sto_fetch_state(f) == STO_FETCH_RUNNING;

    for (size_t i = 0; i < f->nreqs; i++) {
        const req_t *r = &f->reqs[i];
        if (r->cancelling)
            continue;
        if (r->progress_ms + f->lim.timeout_ms < wake)
            wake = r->progress_ms + f->lim.timeout_ms;
        /* a hedge that fell due but found no provider waits for an event */
        if (!r->hedged && !r->is_hedge && r->progress_ms + thr > now_ms &&
            r->progress_ms + thr < wake)
            wake = r->progress_ms + thr;
    }
    for (size_t i = 0; need && i < f->nprov; i++)
        if (f->prov[i].state == PROV_OK && f->prov[i].not_before > now_ms &&
            f->prov[i].not_before < wake)
            wake = f->prov[i].not_before;
    return wake;
}

sto_fetch_state_t
sto_fetch_state(const sto_fetch_t *f)
{
    bool any_live = false;

    if (f->size != UINT64_MAX ? f->wanted_left == 0 : f->nwants == 0)
        return STO_FETCH_DONE;
    for (size_t i = 0; i < f->nreqs && !any_live; i++)
        any_live = !f->reqs[i].cancelling;
    if (any_live || sto_fetch_providers_usable(f) > 0)
        return STO_FETCH_RUNNING;
    return STO_FETCH_STUCK;
}

size_t
sto_fetch_inflight(const sto_fetch_t *f)
{
    return f->nreqs;
}

void
sto_fetch_stats(const sto_fetch_t *f, sto_fetch_stats_t *out)
{
    *out = f->st;
}
