/*
 * sto_service_fetch.c - fetch on miss for the storage service (DESIGN.md §4;
 * docs/protocol/storage.md "Fetch on miss"): a get of an object this node
 * lacks finds providers through the dht endpoint, asks the overlay for the
 * wanted pieces (sto_fetch.c decides which of whom), stores each piece in a
 * partial object once it verifies against the address, serves the waiting
 * gets from the pieces verified in memory (sto_service_hold.c) or else from
 * what is stored, and commits the object as cache when every piece is in;
 * the provider records this node announces and withdraws live here too.
 * Loop thread only, except sto__fetch_job_work and sto__on_evict.
 * Invariants: a fetch lives until nothing waits and nothing (lookup,
 * overlay request, worker job) is in flight; no byte reaches the store or a
 * requester before it verified against the address (sto_partial on a
 * worker, or sto__hold_add on the loop for a requester).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "sto_service_internal.h"

/* The worker half of one OP_F_STORE job: verify and store its records. */
static void
store_work(sto_store_t *st, job_t *j)
{
    uint64_t last;
    size_t k;

    j->rc = 0;
    if (j->partial == NULL) {
        /* the first answer: its last piece binds the size and creates the partial */
        last = sto_tree_pieces(j->size) - 1;
        for (k = 0; k < j->nrec && j->recs[k].piece != last; k++)
            ;
        if (k == j->nrec) {
            /* a sized answer (no size proof) whose partial the fetch no longer
             * holds: completed meanwhile, or open it again */
            if (sto_has(st, j->addr) == 1) {
                j->rc = 1;
                return;
            }
            if (sto_partial_open(st, j->addr, &j->partial) < 0) {
                j->rc = RON_EAGAIN; /* not the provider's fault: ask again */
                return;
            }
            j->created = j->reopened = true; /* the job's own handle */
            goto add;
        }
        j->rc =
            sto_partial_create(st, j->addr, j->size, j->data + j->recs[k].bytes_off, j->recs[k].len,
                               j->data + j->recs[k].proof_off, j->recs[k].proof_len, &j->partial);
        if (j->rc == -EEXIST) {
            j->rc = 1;
            return;
        }
        if (j->rc < 0)
            return;
        j->created = true; /* the job's own handle */
    }
add:
    /* in groups: the pieces in a row go to the file in one write (and their map bits in one) */
    for (k = 0; k < j->nrec; k += STO_PARTIAL_BATCH_MAX) {
        sto_piece_in_t in[STO_PARTIAL_BATCH_MAX];
        size_t n = RON_MIN(j->nrec - k, (size_t)STO_PARTIAL_BATCH_MAX);
        for (size_t i = 0; i < n; i++) {
            const rec_t *r = &j->recs[k + i];
            in[i] = (sto_piece_in_t){.piece = r->piece,
                                     .bytes = j->data + r->bytes_off,
                                     .len = r->len,
                                     .cv = r->has_cv ? r->cv : NULL,
                                     .proof = j->data + r->proof_off,
                                     .proof_len = r->proof_len};
        }
        (void)sto_partial_pieces_add(j->partial, in, n, j->rec_rc + k);
    }
}

/* The worker half of a fetch's own jobs. */
void
sto__fetch_job_work(sto_store_t *st, job_t *j)
{
    switch (j->op) {
    case OP_F_OPEN:
        if (sto_has(st, j->addr) == 1) {
            j->rc = 1; /* whole already (completed meanwhile) */
            break;
        }
        j->rc = sto_partial_open(st, j->addr, &j->partial);
        if (j->rc == 0) {
            uint64_t n;
            j->size = sto_partial_size(j->partial);
            n = sto_tree_pieces(j->size);
            j->have = ron_xmalloc(n);
            for (uint64_t i = 0; i < n; i++)
                j->have[i] = sto_partial_piece_has(j->partial, i);
        }
        break;
    case OP_F_STORE:
        for (job_t *b = j; b != NULL; b = b->batch)
            store_work(st, b);
        break;
    case OP_F_COMPLETE:
        j->rc = sto_partial_complete(j->partial);
        break;
    default:
        break;
    }
}

/* ---- fetch on miss (DESIGN.md §4; docs/protocol/storage.md "Fetch on miss") ---- */

enum { FR_COMPLETE = 0, FR_NOT_FOUND = 1, FR_FAILED = 2 };

static void fetch_on_timer(uv_timer_t *t);

const char *
sto__svc_self_token(sto_service_t *s, char buf[static AUTH_MAX_TOKEN + 1])
{
    if (s->guard == NULL || guard_self_token(s->guard, buf, AUTH_MAX_TOKEN + 1) < 0)
        return NULL;
    return buf;
}

void
sto__svc_provide(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN])
{
    char tok[AUTH_MAX_TOKEN + 1];
    bool sent = s->dht != NULL && !s->stopping &&
                dht_client_provide_cap(s->dht, addr, sto__svc_self_token(s, tok), NULL, NULL) == 0;
    met_counter_inc(s->provides[sent ? 0 : 1]);
}

/* The store's eviction hook: a worker thread, the store's lock held. */
void
sto__on_evict(void *arg, const uint8_t addr[STO_ADDR_LEN])
{
    sto_service_t *s = arg;

    pthread_mutex_lock(&s->evmu);
    if (s->nevq == s->capevq) {
        s->capevq = s->capevq != 0 ? s->capevq * 2 : 16;
        s->evq = ron_xrealloc(s->evq, s->capevq * STO_ADDR_LEN);
    }
    memcpy(s->evq[s->nevq++], addr, STO_ADDR_LEN);
    pthread_mutex_unlock(&s->evmu);
    uv_async_send(&s->evasync);
}

/* On the loop: withdraw the provider records of what GC evicted. */
void
sto__on_evasync(uv_async_t *a)
{
    sto_service_t *s = a->data;
    uint8_t(*q)[STO_ADDR_LEN];
    char tok[AUTH_MAX_TOKEN + 1];
    const char *cap = NULL;
    size_t n;

    pthread_mutex_lock(&s->evmu);
    q = s->evq;
    n = s->nevq;
    s->evq = NULL;
    s->nevq = s->capevq = 0;
    pthread_mutex_unlock(&s->evmu);
    if (n > 0 && s->dht != NULL)
        cap = sto__svc_self_token(s, tok);
    for (size_t i = 0; i < n; i++) {
        if (s->dht != NULL && !s->stopping)
            (void)dht_client_unprovide_cap(s->dht, q[i], cap, NULL, NULL);
        met_counter_inc(s->unprovides);
    }
    free(q);
}

/* 1 when a lookup for addr found no provider less than miss_ttl_ms ago. */
bool
sto__miss_known(const sto_service_t *s, const uint8_t addr[STO_ADDR_LEN], uint64_t now)
{
    for (size_t i = 0; i < STO_SVC_MISS_MAX; i++)
        if (s->miss[i].until_ms > now && memcmp(s->miss[i].addr, addr, STO_ADDR_LEN) == 0)
            return true;
    return false;
}

/* Remember that a lookup for addr found no provider (replacing its own
 * entry, else an expired one, else the oldest). */
static void
miss_remember(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN], uint64_t now)
{
    size_t slot = SIZE_MAX;

    for (size_t i = 0; i < STO_SVC_MISS_MAX && slot == SIZE_MAX; i++)
        if (memcmp(s->miss[i].addr, addr, STO_ADDR_LEN) == 0)
            slot = i;
    for (size_t i = 0; i < STO_SVC_MISS_MAX && slot == SIZE_MAX; i++)
        if (s->miss[i].until_ms <= now)
            slot = i;
    if (slot == SIZE_MAX) {
        slot = s->miss_next;
        s->miss_next = (s->miss_next + 1) % STO_SVC_MISS_MAX;
    }
    memcpy(s->miss[slot].addr, addr, STO_ADDR_LEN);
    s->miss[slot].until_ms = now + s->lim.miss_ttl_ms;
}

svc_fetch_t *
sto__fetch_find(sto_service_t *s, const uint8_t addr[STO_ADDR_LEN])
{
    for (svc_fetch_t *f = s->fetches; f != NULL; f = f->next)
        if (!f->ended && memcmp(f->addr, addr, STO_ADDR_LEN) == 0)
            return f;
    return NULL;
}

static void
fetch_timer_closed(uv_handle_t *h)
{
    svc_fetch_t *f = h->data;
    sto_service_t *s = f->svc;

    for (svc_fetch_t **pp = &s->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    sto_fetch_free(f->sched);
    free(f);
    sto__svc_maybe_free(s);
}

/* End f once nothing waits and nothing is in flight, after lingering
 * STO_SVC_FETCH_LINGER_MS: a reader that reads on chunk by chunk (the
 * gateway, `ron get`) finds its providers and partial object still there. */
static void
fetch_maybe_end(svc_fetch_t *f)
{
    uint64_t now = ron_now_ms();

    if (f->ended || f->waiters != NULL || f->reqs != NULL || f->jobs > 0 || f->finding ||
        f->opening)
        return;
    if (!f->svc->stopping && !f->whole && sto_fetch_state(f->sched) == STO_FETCH_RUNNING &&
        sto_fetch_inflight(f->sched) > 0)
        return;
    if (!f->svc->stopping && !f->whole && sto_fetch_providers_usable(f->sched) > 0) {
        if (f->linger_until == 0)
            f->linger_until = now + STO_SVC_FETCH_LINGER_MS;
        if (now < f->linger_until) {
            uv_timer_start(&f->timer, fetch_on_timer, f->linger_until - now, 0);
            return;
        }
    }
    f->ended = true;
    sto__hold_release(f);
    sto_partial_close(f->partial);
    f->partial = NULL;
    uv_close((uv_handle_t *)&f->timer, fetch_timer_closed);
}

/* Answer every waiting get with code (the fetch cannot serve them). */
static void
fetch_fail_waiters(svc_fetch_t *f, uint16_t code, const char *reason, const char *msg)
{
    sto_service_t *s = f->svc;
    char hex[68];

    met_counter_inc(s->fetch_res[code == 404 ? FR_NOT_FOUND : FR_FAILED]);
    if (f->waiters != NULL) {
        sto_addr_format(f->addr, hex);
        ron_log(code == 404 ? RON_LOG_DEBUG : RON_LOG_INFO,
                "storage: fetch of %s: %u %s (%u lookups, %zu providers usable)", hex, code, msg,
                f->finds, sto_fetch_providers_usable(f->sched));
    }
    while (f->waiters != NULL) {
        job_t *j = f->waiters;
        f->waiters = j->next;
        sto__answer_error(s, j->op, j->req, j->corr_id, code, NULL, reason,
                          code == 404 ? 0 : STO_SVC_RETRY_AFTER_MS, msg);
        sto__job_free(j);
    }
}

/* 1 when the pieces waiter j reads are all held (or its offset is past the end). */
static bool
fetch_waiter_ready(const svc_fetch_t *f, const job_t *j)
{
    uint64_t size = sto_fetch_size(f->sched), end;

    if (f->whole)
        return true;
    if (j->op == OP_PIN || size == UINT64_MAX)
        return false; /* a pin waits for the whole object (committed) */
    if (j->offset >= size)
        return true;
    end = j->length > size - j->offset ? size : j->offset + j->length;
    if (end == j->offset)
        end++;
    for (uint64_t i = j->offset / STO_PIECE_LEN; i <= (end - 1) / STO_PIECE_LEN; i++)
        if (!sto_fetch_has(f->sched, i))
            return false;
    return true;
}

/* Answer the gets whose pieces verified in memory (sto_service_hold.c), in
 * arrival order; run again those whose pieces are all stored: they read
 * them verified. */
static void
fetch_serve_ready(svc_fetch_t *f)
{
    sto_service_t *s = f->svc;
    job_t **pp = &f->waiters;
    uint64_t now = ron_now_ms();

    while (*pp != NULL) {
        job_t *j = *pp;
        if (sto__hold_serve(f, j)) {
            *pp = j->next;
            sto__job_free(j);
        } else if (fetch_waiter_ready(f, j)) {
            *pp = j->next;
            j->next = NULL;
            j->local = true; /* served from what is held now, never a second fetch */
            sto__queue_job(s, j);
        } else if (now >= j->deadline_ms) {
            *pp = j->next;
            sto__answer_error(s, j->op, j->req, j->corr_id, 504, "timeout", "fetch",
                              STO_SVC_RETRY_AFTER_MS, "the object could not be fetched in time");
            sto__job_free(j);
        } else {
            pp = &j->next;
        }
    }
}

/*
 * Hand the OP_F_STORE jobs waiting in f's queue to workers, at most
 * STO__FETCH_STORE_CALLS calls at once. Once the partial object exists,
 * one call stores every answer waiting, in arrival order (job->batch);
 * before, one answer per call (the first creates the partial).
 */
static void
fetch_store_dispatch(svc_fetch_t *f)
{
    while (f->sq_head != NULL && f->stores < STO__FETCH_STORE_CALLS) {
        job_t *head = f->sq_head;
        if (f->partial != NULL) {
            for (job_t *b = head; b != NULL; b = b->next) {
                b->batch = b->next;
                if (b->partial == NULL)
                    b->partial = f->partial;
            }
            f->sq_head = f->sq_tail = NULL;
        } else {
            f->sq_head = head->next;
            if (f->sq_head == NULL)
                f->sq_tail = NULL;
        }
        head->next = NULL;
        f->stores++;
        sto__queue_job(f->svc, head);
    }
}

/* Store the records of an overlay answer (j, taken): queued, then run by
 * fetch_store_dispatch. */
static void
fetch_store_queue(svc_fetch_t *f, job_t *j)
{
    j->fetch = f;
    memcpy(j->addr, f->addr, STO_ADDR_LEN);
    f->jobs++;
    j->next = NULL;
    if (f->sq_tail != NULL)
        f->sq_tail->next = j;
    else
        f->sq_head = j;
    f->sq_tail = j;
    fetch_store_dispatch(f);
}

static void
fetch_job_queue(svc_fetch_t *f, job_t *j)
{
    j->fetch = f;
    memcpy(j->addr, f->addr, STO_ADDR_LEN);
    f->jobs++;
    sto__queue_job(f->svc, j);
}

/* Every piece held and no job running: commit the object as cache. */
static void
fetch_try_complete(svc_fetch_t *f)
{
    uint64_t size = sto_fetch_size(f->sched), n;
    job_t *j;

    if (f->completing || f->whole || f->partial == NULL || f->jobs > 0 || size == UINT64_MAX)
        return;
    n = sto_tree_pieces(size);
    if (sto_fetch_held(f->sched) < n) /* a count: this runs on every pump */
        return;
    f->completing = true;
    j = ron_xcalloc(1, sizeof *j);
    j->op = OP_F_COMPLETE;
    j->partial = f->partial;
    fetch_job_queue(f, j);
}

static void
fetch_on_providers(void *arg, const dht_client_result_t *res)
{
    svc_fetch_t *f = arg;

    f->finding = false;
    f->find_err = 0;
    f->find_complete = false;
    f->next_find_ms = ron_now_ms() + STO_SVC_FETCH_FIND_GAP_MS;
    if (res->status == 0 && res->code == 200) {
        f->find_complete = res->complete;
        for (size_t i = 0; i < res->n_providers; i++) {
            size_t idx;
            if (sto_fetch_provider_add(f->sched, res->providers[i].id, &idx) < 0)
                break;
            snprintf(f->paddr[idx], sizeof f->paddr[idx], "%s", res->providers[i].addr);
            f->any_provider = true;
        }
    } else {
        f->find_err = res->status < 0    ? res->status
                      : res->code == 504 ? RON_ETIMEOUT
                      : res->code == 429 ? RON_EBUSY
                                         : RON_EUNAVAIL;
        f->last_err = f->find_err;
    }
    sto__fetch_pump(f);
}

static void
fetch_find_providers(svc_fetch_t *f)
{
    sto_service_t *s = f->svc;
    char tok[AUTH_MAX_TOKEN + 1];

    f->finds++;
    if (dht_client_find_providers_within(s->dht, f->addr, 0, sto__svc_self_token(s, tok),
                                         STO_SVC_FETCH_FIND_MS, fetch_on_providers, f) == 0) {
        f->finding = true;
    } else {
        f->find_err = f->last_err = RON_EUNAVAIL; /* the dht endpoint is down */
        f->next_find_ms = ron_now_ms() + STO_SVC_FETCH_FIND_GAP_MS;
    }
}

static sto_fetch_end_t
fetch_end_of(int status)
{
    switch (status) {
    case RON_ENOTFOUND:
    case RON_ERANGE:
    case RON_ECAPNEEDED: /* a private provider refuses us: as good as not holding it */
    case RON_ECAPDENY:
        return STO_FETCH_NOT_FOUND;
    case RON_EBADPIECE:
        return STO_FETCH_BAD_PIECE;
    default:
        return STO_FETCH_RETRYABLE;
    }
}

static void
fetch_on_fetched(void *arg, int status, uint16_t code, const ovl_client_fetch_result_t *res)
{
    ovl_req_t *r = arg;
    svc_fetch_t *f = r->f;
    sto_service_t *s = f->svc;
    job_t *j;
    size_t total = 0, off = 0;
    bool taken;
    (void)code;

    for (ovl_req_t **pp = &f->reqs; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (status == 0 && sto_fetch_size(f->sched) == UINT64_MAX &&
        sto_fetch_set_size(f->sched, res->size) < 0)
        status = RON_EBADPIECE;
    if (status == 0 && res->size != sto_fetch_size(f->sched))
        status = RON_EBADPIECE; /* cannot happen: the overlay verified the size */
    if (status == RON_ERANGE && !r->cancelled && sto_fetch_size(f->sched) != UINT64_MAX &&
        r->offset >= sto_fetch_size(f->sched)) {
        /* one of the probes sent at once started past the end the others found */
        sto_fetch_req_end(f->sched, r->req_id, STO_FETCH_PAST_END, ron_now_ms());
        free(r);
        sto__fetch_pump(f);
        return;
    }
    if (status == RON_ERANGE && sto_fetch_size(f->sched) == UINT64_MAX) {
        /* the probe's offset is past the end: so is every get from there on */
        bool all = true;
        for (job_t *w = f->waiters; w != NULL; w = w->next)
            all = all && w->offset >= r->offset;
        if (all) {
            while (f->waiters != NULL) {
                job_t *w = f->waiters;
                f->waiters = w->next;
                sto__answer_error(s, w->op, w->req, w->corr_id, 416, NULL, "offset", 0,
                                  "offset: past the end of the object");
                sto__job_free(w);
            }
            /* forget the wants past the end: a fresh scheduler, same providers (same
             * indices); answers still in flight name ids it ignores */
            sto_fetch_t *old = f->sched;
            const uint8_t *id;
            f->sched = sto_fetch_new(UINT64_MAX, NULL);
            for (size_t i = 0; (id = sto_fetch_provider_id(old, i)) != NULL; i++)
                (void)sto_fetch_provider_add(f->sched, id, NULL);
            sto_fetch_free(old);
            for (ovl_req_t *o = f->reqs; o != NULL; o = o->next)
                o->cancelled = true;
            free(r);
            sto__fetch_pump(f);
            return;
        }
        if (!r->cancelled) {
            /* a get before it still waits: the size comes from a probe before this one */
            sto_fetch_req_end(f->sched, r->req_id, STO_FETCH_PAST_END, ron_now_ms());
            free(r);
            sto__fetch_pump(f);
            return;
        }
    }
    if (status < 0 || s->stopping) {
        if (status < 0) {
            met_counter_inc(s->fetch_fail);
            f->last_err = status;
        }
        if (!r->cancelled)
            sto_fetch_req_end(f->sched, r->req_id,
                              status < 0 ? fetch_end_of(status) : STO_FETCH_CANCELLED,
                              ron_now_ms());
        free(r);
        sto__fetch_pump(f);
        return;
    }
    /* the records (views into the answer) for the worker: the answer's own
     * memory when the bus hands it over (in process), else a copy */
    j = ron_xcalloc(1, sizeof *j);
    j->data = ovl_client_fetch_take(res);
    taken = j->data != NULL;
    if (!taken) {
        for (size_t i = 0; i < res->n_pieces; i++)
            total += res->pieces[i].proof_len + res->pieces[i].len;
        j->data = ron_xmalloc(total + 1);
    }
    j->op = OP_F_STORE;
    j->size = res->size;
    j->req_id = r->req_id;
    j->cancelled = r->cancelled;
    j->partial = f->partial;
    j->nrec = res->n_pieces;
    j->recs = ron_xcalloc(j->nrec + 1, sizeof *j->recs);
    j->rec_rc = ron_xcalloc(j->nrec + 1, sizeof *j->rec_rc);
    for (size_t i = 0; i < res->n_pieces; i++) {
        const ovl_client_piece_t *p = &res->pieces[i];
        j->recs[i].piece = p->piece;
        j->recs[i].has_cv = p->cv != NULL;
        if (p->cv != NULL)
            memcpy(j->recs[i].cv, p->cv, STO_TREE_HASH_LEN);
        j->recs[i].proof_len = p->proof_len;
        j->recs[i].len = p->len;
        if (taken) { /* the views point into j->data */
            j->recs[i].proof_off = (size_t)(p->proof - j->data);
            j->recs[i].bytes_off = (size_t)(p->bytes - j->data);
            continue;
        }
        j->recs[i].proof_off = off;
        memcpy(j->data + off, p->proof, p->proof_len);
        off += p->proof_len;
        j->recs[i].bytes_off = off;
        memcpy(j->data + off, p->bytes, p->len);
        off += p->len;
    }
    free(r);
    sto__hold_add(f, j); /* verified on the loop: the waiting gets need not wait for the store */
    fetch_store_queue(f, j);
    fetch_serve_ready(f);
}

static void
fetch_on_timer(uv_timer_t *t)
{
    sto__fetch_pump(t->data);
}

/* Act on the scheduler's decisions, then on the fetch's state. */
void
sto__fetch_pump(svc_fetch_t *f)
{
    sto_service_t *s = f->svc;
    sto_fetch_action_t a;
    uint64_t now = ron_now_ms(), wake;

    if (s->stopping) {
        fetch_fail_waiters(f, 503, NULL, "storage is stopping");
        fetch_maybe_end(f);
        return;
    }
    while (!f->opening && sto_fetch_next(f->sched, now, &a) == 1) {
        if (a.kind == STO_FETCH_CANCEL) {
            for (ovl_req_t *r = f->reqs; r != NULL; r = r->next)
                if (r->req_id == a.req_id)
                    r->cancelled = true;
            sto_fetch_req_end(f->sched, a.req_id, STO_FETCH_CANCELLED, now);
            continue;
        }
        ovl_req_t *r = ron_xcalloc(1, sizeof *r);
        r->f = f;
        r->req_id = a.req_id;
        r->offset = a.offset;
        /* once the size is verified and the partial holds the last piece, the
         * overlay is told the size, so the provider sends no size proof */
        uint64_t known = f->partial != NULL ? sto_fetch_size(f->sched) : OVL_CLIENT_SIZE_UNKNOWN;
        if (ovl_client_fetch_sized(s->ovl, f->addr, a.offset, a.length, known,
                                   sto_fetch_provider_id(f->sched, a.provider),
                                   f->paddr[a.provider], 0, fetch_on_fetched, r) < 0) {
            free(r);
            f->last_err = RON_EUNAVAIL;
            sto_fetch_req_end(f->sched, a.req_id, STO_FETCH_RETRYABLE, now);
            continue;
        }
        r->next = f->reqs;
        f->reqs = r;
    }
    fetch_serve_ready(f);
    bool stuck = !f->opening && !f->finding && f->waiters != NULL && !f->whole &&
                 sto_fetch_state(f->sched) == STO_FETCH_STUCK;
    if (stuck && !f->any_provider) {
        /* a miss costs one lookup: none found is 404 now (and for a while) */
        if (f->find_err == RON_ETIMEOUT) {
            fetch_fail_waiters(f, 504, "lookup", "the provider lookup did not answer in time");
        } else if (f->find_err < 0) {
            fetch_fail_waiters(f, 503, "lookup", "the provider lookup failed");
        } else {
            if (f->find_complete && s->lim.miss_ttl_ms > 0) /* a node that did not answer may
                                                               hold the record */
                miss_remember(s, f->addr, now);
            fetch_fail_waiters(f, 404, NULL, "no provider of this object was found");
        }
        stuck = false;
    }
    if (stuck && f->finds < STO_SVC_FETCH_FINDS && now < f->next_find_ms) {
        /* every provider found failed: look once more in a moment (others may
         * have announced it since) */
        uv_timer_start(&f->timer, fetch_on_timer, f->next_find_ms - now, 0);
        return;
    }
    if (stuck) {
        if (f->finds < STO_SVC_FETCH_FINDS)
            fetch_find_providers(f);
        if (!f->finding)
            fetch_fail_waiters(f, 503, "providers", "every provider failed");
    }
    fetch_try_complete(f);
    /* wake for a hedge, a timeout, a backoff or a waiter's deadline */
    wake = sto_fetch_wake_ms(f->sched, now);
    for (job_t *j = f->waiters; j != NULL; j = j->next)
        if (j->deadline_ms < wake)
            wake = j->deadline_ms;
    if (!f->ended && wake != UINT64_MAX)
        uv_timer_start(&f->timer, fetch_on_timer, wake > now ? wake - now : 1, 0);
    fetch_maybe_end(f);
}

/* Want get j's range, and the bytes it said it reads next (its "ahead",
 * at most STO_SVC_FETCH_AHEAD_MAX): a reader with one get in flight (the
 * gateway) then finds its next chunk fetched, or on its way from several
 * providers, instead of starting a round trip per chunk. A pin wants the
 * whole object. */
static void
fetch_want_job(svc_fetch_t *f, const job_t *j)
{
    uint64_t len = j->length > 0 ? j->length : 1;
    uint64_t ahead = j->ahead < STO_SVC_FETCH_AHEAD_MAX ? j->ahead : STO_SVC_FETCH_AHEAD_MAX;

    if (j->op == OP_PIN) {
        sto_fetch_want(f->sched, 0, UINT64_MAX); /* every piece */
        return;
    }

    if (j->offset <= UINT64_MAX - len - ahead)
        len += ahead;
    sto_fetch_want(f->sched, j->offset, len);
}

/* The loop half of one OP_F_STORE job: the pieces it stored, the request's end. */
static void
store_done(sto_service_t *s, svc_fetch_t *f, job_t *j, uint64_t now)
{
    bool bad = false, retry = false, progress = false;

    if (j->rc == 1) {
        f->whole = true; /* the object was completed meanwhile */
    } else if (j->rc == RON_EAGAIN) {
        retry = true;
    } else if (j->rc < 0) {
        bad = true;
    } else {
        if (j->created && !j->reopened) /* its last piece went in with the creation */
            met_counter_add(s->fetch_bytes,
                            sto_tree_piece_len(j->size, sto_tree_pieces(j->size) - 1));
        if (f->partial == NULL)
            f->partial = j->partial; /* the job created it: the fetch keeps the handle */
        else if (j->created)
            sto_partial_close(j->partial); /* created twice at once: one handle is enough */
        for (size_t i = 0; i < j->nrec; i++) {
            if (j->rec_rc[i] < 0) {
                bad = bad || j->rec_rc[i] == RON_EDIGEST || j->rec_rc[i] == RON_EPROTO;
                continue;
            }
            if (j->rec_rc[i] == 0) {
                met_counter_add(s->fetch_bytes, j->recs[i].len);
                progress = true;
            }
            if (j->cancelled || sto_fetch_piece(f->sched, j->req_id, j->recs[i].piece, now) == 0)
                sto_fetch_have(f->sched, j->recs[i].piece);
        }
    }
    if (bad)
        met_counter_inc(s->fetch_fail);
    if (progress) /* a pin waits as long as verified pieces keep coming */
        for (job_t *w = f->waiters; w != NULL; w = w->next)
            if (w->op == OP_PIN)
                w->deadline_ms = now + STO_SVC_FETCH_WAIT_MS;
    if (!j->cancelled)
        sto_fetch_req_end(f->sched, j->req_id,
                          bad     ? STO_FETCH_BAD_PIECE
                          : retry ? STO_FETCH_RETRYABLE
                                  : STO_FETCH_OK,
                          now);
}

void
sto__fetch_job_free(job_t *j)
{
    free(j->have);
    free(j->recs);
    free(j->rec_rc);
    free(j->data);
    free(j);
}

/* A fetch job is done with: its fetch's hold may keep it (sto_service_hold.c). */
static void
fetch_job_free(job_t *j)
{
    if (j->held)
        sto__hold_stored(j->fetch, j);
    else
        sto__fetch_job_free(j);
}

/* A fetch job returned (loop). */
void
sto__fetch_job_done(sto_service_t *s, job_t *j)
{
    svc_fetch_t *f = j->fetch;
    uint64_t now = ron_now_ms();

    f->jobs--;
    switch (j->op) {
    case OP_F_OPEN:
        f->opening = false;
        if (j->rc == 1) {
            f->whole = true;
        } else if (j->rc == 0) {
            uint64_t n = sto_tree_pieces(j->size);
            f->partial = j->partial;
            (void)sto_fetch_set_size(f->sched, j->size);
            for (uint64_t i = 0; i < n; i++)
                if (j->have[i])
                    sto_fetch_have(f->sched, i);
        }
        for (job_t *w = f->waiters; w != NULL; w = w->next)
            fetch_want_job(f, w);
        if (!f->whole)
            fetch_find_providers(f);
        break;
    case OP_F_STORE: {
        job_t *b = j->batch;
        store_done(s, f, j, now);
        while (b != NULL) { /* the answers the same worker call stored after j */
            job_t *next = b->batch;
            f->jobs--;
            store_done(s, f, b, now);
            fetch_job_free(b);
            b = next;
        }
        f->stores--;
        fetch_store_dispatch(f);
        break;
    }
    case OP_F_COMPLETE:
        f->completing = false;
        if (j->rc == 0 || j->rc == RON_ENOTFOUND) {
            f->whole = true;
            sto_partial_close(f->partial);
            f->partial = NULL;
            if (j->rc == 0) {
                met_counter_inc(s->fetch_res[FR_COMPLETE]);
                sto__svc_provide(s, f->addr); /* a complete copy: this node provides it too */
            }
        } else {
            ron_warn("storage: completing a fetched object failed: %s", ron_strerror(j->rc));
            /* the pins waited for the object to be stored: tell them why it was not */
            for (job_t **pp = &f->waiters; *pp != NULL;) {
                job_t *w = *pp;
                if (w->op != OP_PIN) {
                    pp = &w->next;
                    continue;
                }
                *pp = w->next;
                sto__answer_rc(s, OP_PIN, w->req, w->corr_id, j->rc);
                sto__job_free(w);
            }
        }
        break;
    default:
        break;
    }
    fetch_job_free(j);
    sto__fetch_pump(f);
}

/* A get of an absent object (or of a range not held yet): join or start the fetch. */
void
sto__fetch_join(sto_service_t *s, job_t *j)
{
    svc_fetch_t *f = sto__fetch_find(s, j->addr);

    j->deadline_ms = ron_now_ms() + STO_SVC_FETCH_WAIT_MS;
    if (f != NULL)
        f->linger_until = 0; /* busy again */
    if (f == NULL) {
        job_t *oj;
        f = ron_xcalloc(1, sizeof *f);
        f->svc = s;
        memcpy(f->addr, j->addr, STO_ADDR_LEN);
        f->sched = sto_fetch_new(UINT64_MAX, NULL);
        uv_timer_init(s->loop, &f->timer);
        f->timer.data = f;
        f->next = s->fetches;
        s->fetches = f;
        /* first learn what a partial object already holds */
        f->opening = true;
        oj = ron_xcalloc(1, sizeof *oj);
        oj->op = OP_F_OPEN;
        fetch_job_queue(f, oj);
    }
    j->fetched = j->op == OP_PIN;
    f->read = f->read || j->op == OP_GET;
    j->next = NULL;
    job_t **tail = &f->waiters; /* in arrival order: ready ones are answered so */
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = j;
    if (f->opening)
        return; /* its range is wanted when the open returns */
    fetch_want_job(f, j);
    sto__fetch_pump(f);
}
