/*
 * sto_service_hold.c - a fetch's verified pieces in memory (docs/protocol/
 * storage.md "Fetch on miss", step 4): the gets waiting for an object being
 * fetched are answered from the records an overlay answer just brought, as
 * soon as they verify against the address on the loop, instead of after
 * the worker call that stores them in the partial object and a second one
 * that reads them back. The store job still stores every record (the
 * object becomes cache as before); this only changes where a get's bytes
 * come from while they are in memory anyway.
 *
 * Verification here is the store job's own (sto_partial_piece_add_cv): the
 * size is trusted only once the last piece hashed to the address under it
 * (sto_tree_proof_verify), or from the partial object, whose creation
 * checked the same; a record with the overlay's chaining value has that
 * value folded up its proof to the address (sto_tree_proof_nodes_cv, a few
 * hashes), one without has its bytes hashed. A record that fails is never
 * held: the store job fails it too and the provider is charged there, and
 * the get waits for the piece from elsewhere. A file partial re-verifies
 * what it reads back because bytes on disk may have outlived a crash;
 * bytes that verified in this process's memory have not left it.
 *
 * A held OP_F_STORE job keeps its answer's memory (its data and records)
 * after its worker call returns, within STO_SVC_HOLD_FETCH per fetch and
 * STO_SVC_HOLD_TOTAL in all (the oldest stored job of a fetch goes first),
 * so the gets a reader sends after its first answer (the gateway's window)
 * find their pieces still there; the hold is freed when the fetch ends. A
 * fetch only pins wait for holds nothing (they need the committed object).
 *
 * Loop thread only. While a held job's worker call runs, the loop only
 * reads its data and records, which the worker only reads too.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ron_util.h"
#include "sto_service_internal.h"

/* Piece bytes of the records of j that verified. */
static uint64_t
hold_job_bytes(const job_t *j)
{
    uint64_t n = 0;

    for (size_t k = 0; k < j->nrec; k++)
        if (j->recs[k].ok)
            n += j->recs[k].len;
    return n;
}

/* Verify record r of j as piece r->piece of the object (f->addr, size).
 * cv_ok: size is verified, so the overlay's chaining value may stand for
 * the bytes (folded to the address); otherwise the bytes are hashed, which
 * binds size when r is the last piece. Returns 0 or a tree error. */
static int
hold_verify(const svc_fetch_t *f, const job_t *j, const rec_t *r, uint64_t size, bool cv_ok)
{
    uint8_t nodes[STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN];
    uint64_t offs[STO_TREE_MAX_DEPTH];
    const uint8_t *proof = j->data + r->proof_off;
    size_t n;

    if (cv_ok && r->has_cv && sto_tree_pieces(size) > 1 &&
        r->len == sto_tree_piece_len(size, r->piece))
        return sto_tree_proof_nodes_cv(f->addr, size, r->piece, r->cv, proof, r->proof_len, nodes,
                                       offs, &n);
    return sto_tree_proof_verify(f->addr, size, r->piece, j->data + r->bytes_off, r->len, proof,
                                 r->proof_len);
}

void
sto__hold_add(svc_fetch_t *f, job_t *j)
{
    sto_service_t *s = f->svc;
    uint64_t last;
    bool any = false;

    if (!f->read)
        return; /* only pins wait: nothing reads the records before the store has them */
    if (!f->size_ok && f->partial != NULL) {
        f->size_ok = true; /* the partial's creation bound it (or an earlier run's did) */
        f->vsize = sto_partial_size(f->partial);
    }
    if (f->size_ok && j->size != f->vsize)
        return; /* defensive: fetch_on_fetched refuses an answer of another size */
    last = sto_tree_pieces(j->size) - 1;
    if (!f->size_ok) {
        /* the last piece binds the size: nothing is held before it verified */
        for (size_t k = 0; k < j->nrec; k++) {
            if (j->recs[k].piece != last)
                continue;
            if (hold_verify(f, j, &j->recs[k], j->size, false) == 0) {
                j->recs[k].ok = true;
                f->size_ok = true;
                f->vsize = j->size;
            }
            break;
        }
        if (!f->size_ok)
            return;
    }
    for (size_t k = 0; k < j->nrec; k++) {
        if (!j->recs[k].ok)
            j->recs[k].ok = hold_verify(f, j, &j->recs[k], f->vsize, true) == 0;
        any = any || j->recs[k].ok;
    }
    if (!any)
        return;
    j->held = true;
    j->stored = false;
    j->hold_next = f->hold;
    f->hold = j;
    f->hold_bytes += hold_job_bytes(j);
    s->hold_bytes += hold_job_bytes(j);
}

/* The bytes of piece i in f's hold (piece length under f->vsize), or NULL. */
static const uint8_t *
hold_find(const svc_fetch_t *f, uint64_t i)
{
    for (const job_t *h = f->hold; h != NULL; h = h->hold_next)
        for (size_t k = 0; k < h->nrec; k++)
            if (h->recs[k].ok && h->recs[k].piece == i)
                return h->data + h->recs[k].bytes_off;
    return NULL;
}

bool
sto__hold_serve(svc_fetch_t *f, job_t *j)
{
    sto_service_t *s = f->svc;
    uint64_t size = f->vsize, end, pos;

    if (j->op != OP_GET || !f->size_ok)
        return false;
    j->rc = 0;
    j->got = 0;
    j->past_end = j->offset > size;
    end = j->past_end ? j->offset : size - j->offset < j->length ? size : j->offset + j->length;
    /* every piece first: a get that must wait costs no copy */
    for (pos = j->offset; pos < end; pos = (pos / STO_PIECE_LEN + 1) * STO_PIECE_LEN)
        if (hold_find(f, pos / STO_PIECE_LEN) == NULL)
            return false;
    j->size = size;
    if (!j->past_end) {
        free(j->data);
        j->data = ron_xmalloc(STO__GET_HEADROOM + (size_t)(end - j->offset) + 1);
        for (pos = j->offset; pos < end;) {
            uint64_t i = pos / STO_PIECE_LEN, next = (i + 1) * STO_PIECE_LEN;
            uint64_t take = (next < end ? next : end) - pos;
            memcpy(j->data + STO__GET_HEADROOM + (pos - j->offset),
                   hold_find(f, i) + (pos - i * STO_PIECE_LEN), (size_t)take);
            pos += take;
        }
        j->got = (ssize_t)(end - j->offset);
    }
    met_counter_inc(s->hold_gets);
    sto__get_answer(s, j);
    return true;
}

/* Take j out of f's hold and free it (its worker call has returned). */
static void
hold_drop(svc_fetch_t *f, job_t *j)
{
    uint64_t bytes = hold_job_bytes(j);

    for (job_t **pp = &f->hold; *pp != NULL; pp = &(*pp)->hold_next)
        if (*pp == j) {
            *pp = j->hold_next;
            break;
        }
    f->hold_bytes -= bytes;
    f->svc->hold_bytes -= bytes;
    j->held = false;
    j->hold_next = NULL;
    sto__fetch_job_free(j);
}

void
sto__hold_stored(svc_fetch_t *f, job_t *j)
{
    j->stored = true;
    /* over the fetch's bound: its oldest stored jobs go first (j may be one) */
    while (f->hold_bytes > STO_SVC_HOLD_FETCH) {
        job_t *oldest = NULL;
        for (job_t *h = f->hold; h != NULL; h = h->hold_next)
            if (h->stored)
                oldest = h;
        if (oldest == NULL)
            break; /* every one is still in a worker call: its memory is needed anyway */
        hold_drop(f, oldest);
    }
    if (j->held && f->svc->hold_bytes > STO_SVC_HOLD_TOTAL)
        hold_drop(f, j);
}

void
sto__hold_release(svc_fetch_t *f)
{
    while (f->hold != NULL)
        hold_drop(f, f->hold);
}

bool
sto__hold_get(sto_service_t *s, job_t *j)
{
    svc_fetch_t *f = s->stopping ? NULL : sto__fetch_find(s, j->addr);

    if (f == NULL)
        return false;
    j->svc = s;
    if (sto__hold_serve(f, j)) {
        sto__job_free(j);
        return true;
    }
    /* a fetch that is fetching: join it now (the worker call would only find
     * the object absent, or a partial without the range); an idle or
     * completed one leaves the get to the store */
    if (f->whole || (f->waiters == NULL && f->reqs == NULL && f->jobs == 0 && !f->opening &&
                     !f->finding))
        return false;
    sto__fetch_join(s, j);
    return true;
}
