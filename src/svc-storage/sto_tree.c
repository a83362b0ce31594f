/*
 * sto_tree.c - BLAKE3 verified streaming: piece hashing, outboard, proofs.
 * The address is plain BLAKE3; this file computes the same tree with the
 * library's internal primitives (blake3_impl.h) so it can stop at 64 KiB
 * pieces: hash_many over the chunks of a batch of pieces, then the parent
 * levels of every piece batched, then the tree above the pieces one parent at
 * a time, emitting each parent node (left CV || right CV) in post-order.
 * Invariants: chunk counters are global chunk indices; a parent node is
 * emitted exactly once, after both of its subtrees; nothing trusts a size
 * until the last piece verified under it (sto_tree_size_verify).
 */
#include "sto_tree.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "blake3_impl.h"
#include "ron_err.h"
#include "ron_util.h"

uint64_t
sto_tree_pieces(uint64_t size)
{
    if (size == 0)
        return 1;
    return (size - 1) / STO_PIECE_LEN + 1;
}

uint64_t
sto_tree_outboard_len(uint64_t size)
{
    return (sto_tree_pieces(size) - 1) * STO_TREE_NODE_LEN;
}

size_t
sto_tree_piece_len(uint64_t size, uint64_t piece)
{
    uint64_t n = sto_tree_pieces(size);

    if (piece >= n)
        return 0;
    if (piece + 1 < n)
        return STO_PIECE_LEN;
    return (size_t)(size - piece * STO_PIECE_LEN);
}

/* ---- BLAKE3 primitives -------------------------------------------------- */

#define CHUNKS_PER_PIECE (STO_PIECE_LEN / STO_TREE_CHUNK_LEN) /* 64 */
#define BLOCKS_PER_CHUNK (STO_TREE_CHUNK_LEN / BLAKE3_BLOCK_LEN) /* 16 */
#define BATCH_PIECES     8u  /* pieces hashed together: fills AVX2's 8 lanes at every level */
#define BATCH_CHUNKS     (BATCH_PIECES * CHUNKS_PER_PIECE)

/* Working memory of the batch hasher (about 28 KiB). */
typedef struct {
    const uint8_t *in[BATCH_CHUNKS];
    uint8_t a[BATCH_CHUNKS * STO_TREE_HASH_LEN]; /* chunk CVs, then every other level */
    uint8_t b[BATCH_CHUNKS * STO_TREE_HASH_LEN / 2];
} tree_scratch_t;

/* out = chaining value of the parent node block (left CV || right CV). */
static void
tree_parent_cv(const uint8_t block[static STO_TREE_NODE_LEN], int is_root,
               uint8_t out[static STO_TREE_HASH_LEN])
{
    uint32_t cv[8];

    memcpy(cv, IV, sizeof cv);
    blake3_compress_in_place(cv, block, BLAKE3_BLOCK_LEN, 0,
                             (uint8_t)(PARENT | (is_root ? ROOT : 0)));
    store_cv_words(out, cv);
}

/*
 * Hash n (1..BATCH_PIECES) full pieces at data, the first being piece
 * first_piece: tops_out[k] gets piece k's top parent block (its two halves'
 * CVs) and cvs_out[k] its non-root chaining value. The chunks of all n pieces
 * go through one hash_many call, then each parent level of all n pieces
 * through one more, so every SIMD lane stays busy down to the piece's top.
 * Outputs go to the other buffer (ping-pong): hash_many's inputs and output
 * must not overlap.
 */
static void
tree_hash_full_pieces(tree_scratch_t *sc, const uint8_t *data, size_t n, uint64_t first_piece,
                      uint8_t tops_out[][STO_TREE_NODE_LEN], uint8_t cvs_out[][STO_TREE_HASH_LEN])
{
    size_t count = n * CHUNKS_PER_PIECE, i;
    uint8_t *src = sc->a, *dst = sc->b, *t;

    for (i = 0; i < count; i++)
        sc->in[i] = data + i * STO_TREE_CHUNK_LEN;
    blake3_hash_many(sc->in, count, BLOCKS_PER_CHUNK, IV, first_piece * CHUNKS_PER_PIECE, true,
                     0, CHUNK_START, CHUNK_END, sc->a);
    /* Pairs never straddle pieces: each piece's CVs are contiguous and even. */
    while (count > 2 * n) {
        count /= 2;
        for (i = 0; i < count; i++)
            sc->in[i] = src + i * STO_TREE_NODE_LEN;
        blake3_hash_many(sc->in, count, 1, IV, 0, false, PARENT, 0, 0, dst);
        t = src;
        src = dst;
        dst = t;
    }
    for (i = 0; i < n; i++) {
        memcpy(tops_out[i], src + i * STO_TREE_NODE_LEN, STO_TREE_NODE_LEN);
        sc->in[i] = src + i * STO_TREE_NODE_LEN;
    }
    blake3_hash_many(sc->in, n, 1, IV, 0, false, PARENT, 0, 0, &cvs_out[0][0]);
}

/* Largest power of two strictly below n (n >= 2): the left subtree's width. */
static uint64_t
tree_left_width(uint64_t n)
{
    return 1ull << highest_one(n - 1);
}

/* Merge n >= 1 chaining values in BLAKE3's shape (left = largest power of two
 * below n); is_root flags the top parent. n == 1 copies (the caller flagged
 * the single node). */
static void
tree_merge(const uint8_t (*cvs)[STO_TREE_HASH_LEN], size_t n, int is_root,
           uint8_t out[static STO_TREE_HASH_LEN])
{
    uint8_t block[STO_TREE_NODE_LEN];
    size_t left;

    if (n == 1) {
        memcpy(out, cvs[0], STO_TREE_HASH_LEN);
        return;
    }
    left = (size_t)tree_left_width(n);
    tree_merge(cvs, left, 0, block);
    tree_merge(cvs + left, n - left, 0, block + STO_TREE_HASH_LEN);
    tree_parent_cv(block, is_root, out);
}

/*
 * Chaining value of a piece of len bytes (0..STO_PIECE_LEN) at piece index
 * `piece`, flagged as the root when it is the whole object. Full chunks go
 * through hash_many; a short last chunk (or the lone chunk of a root) is
 * compressed block by block.
 */
static void
tree_piece_cv(tree_scratch_t *sc, const uint8_t *data, size_t len, uint64_t piece, int is_root,
              uint8_t out[static STO_TREE_HASH_LEN])
{
    uint8_t (*cvs)[STO_TREE_HASH_LEN] = (uint8_t (*)[STO_TREE_HASH_LEN])sc->a;
    size_t full = len / STO_TREE_CHUNK_LEN, nchunks = full, i;
    uint64_t counter0 = piece * CHUNKS_PER_PIECE;

    for (i = 0; i < full; i++)
        sc->in[i] = data + i * STO_TREE_CHUNK_LEN;
    if (full == 1 && len == STO_TREE_CHUNK_LEN && is_root)
        full = 0;                      /* a lone 1 KiB chunk needs ROOT: by hand below */
    if (full > 0)
        blake3_hash_many(sc->in, full, BLOCKS_PER_CHUNK, IV, counter0, true, 0, CHUNK_START,
                         CHUNK_END, sc->a);
    if (len == 0 || full * STO_TREE_CHUNK_LEN < len) {
        const uint8_t *p = data + full * STO_TREE_CHUNK_LEN;
        size_t rem = len - full * STO_TREE_CHUNK_LEN, off = 0;
        int lone = is_root && full == 0;
        uint32_t cv[8];
        uint8_t block[BLAKE3_BLOCK_LEN];

        memcpy(cv, IV, sizeof cv);
        do {
            size_t blen = rem - off < BLAKE3_BLOCK_LEN ? rem - off : BLAKE3_BLOCK_LEN;
            int last = off + blen >= rem;
            uint8_t flags = (uint8_t)((off == 0 ? CHUNK_START : 0) |
                                      (last ? CHUNK_END | (lone ? ROOT : 0) : 0));

            memset(block, 0, sizeof block);
            if (blen > 0)
                memcpy(block, p + off, blen);
            blake3_compress_in_place(cv, block, (uint8_t)blen, counter0 + full, flags);
            off += blen;
        } while (off < rem);
        store_cv_words(cvs[full], cv);
        nchunks = full + 1;
    }
    tree_merge((const uint8_t (*)[STO_TREE_HASH_LEN])cvs, nchunks, is_root && nchunks > 1, out);
}

/* ---- streaming hasher --------------------------------------------------- */

struct sto_tree_hasher {
    sto_tree_out_cb cb;        /* NULL: root only */
    void *cb_arg;
    int err;                   /* sticky: a code from cb */
    uint64_t size;             /* bytes fed */
    uint64_t pieces_done;      /* full pieces pushed onto stack */
    size_t stack_len;          /* == popcount(pieces_done) between calls */
    uint8_t stack[STO_TREE_MAX_DEPTH + 1][STO_TREE_HASH_LEN]; /* CVs of complete subtrees */
    uint8_t root_block[STO_TREE_NODE_LEN]; /* block of stack[0] when stack_len == 1 */
    size_t out_len;            /* outboard bytes held in out, < STO_TREE_OUT_BATCH */
    uint8_t out[STO_TREE_OUT_BATCH];
    uint8_t tops[BATCH_PIECES][STO_TREE_NODE_LEN];
    uint8_t cvs[BATCH_PIECES][STO_TREE_HASH_LEN];
    tree_scratch_t sc;
    size_t buf_len;            /* bytes in buf, < BATCH_PIECES * STO_PIECE_LEN between calls */
    uint8_t buf[BATCH_PIECES * STO_PIECE_LEN];
};

static int
tree_out_flush(sto_tree_hasher_t *h)
{
    int rc = 0;

    if (h->out_len > 0 && h->cb != NULL && h->err == 0)
        rc = h->err = h->cb(h->cb_arg, h->out, h->out_len);
    h->out_len = 0;
    return rc;
}

/* Append one parent node to the outboard (post-order: called as it completes). */
static int
tree_out_node(sto_tree_hasher_t *h, const uint8_t block[static STO_TREE_NODE_LEN])
{
    if (h->cb == NULL)
        return 0;
    memcpy(h->out + h->out_len, block, STO_TREE_NODE_LEN);
    h->out_len += STO_TREE_NODE_LEN;
    if (h->out_len == STO_TREE_OUT_BATCH)
        return tree_out_flush(h);
    return 0;
}

/*
 * Push the CV of a full piece (top: its top block) and merge every subtree
 * it completes: after k pieces the stack holds one CV per set bit of k, so
 * merges happen exactly when an aligned power-of-two run of pieces ends. Each
 * merge's block is final then (whether or not it later turns out to be the
 * root, which only changes its CV's flag), so it is emitted at once: that is
 * post-order. top (STO_TREE_NODE_LEN bytes) is read for piece 0 only and may
 * be NULL for any later piece.
 */
static int
tree_push(sto_tree_hasher_t *h, const uint8_t cv[static STO_TREE_HASH_LEN], const uint8_t *top)
{
    uint8_t block[STO_TREE_NODE_LEN];
    int rc;

    memcpy(h->stack[h->stack_len++], cv, STO_TREE_HASH_LEN);
    h->pieces_done++;
    if (h->stack_len == 1) /* only for piece 0: later pushes find a non-empty stack */
        memcpy(h->root_block, top, STO_TREE_NODE_LEN);
    while (h->stack_len > (size_t)popcnt(h->pieces_done)) {
        memcpy(block, h->stack[h->stack_len - 2], STO_TREE_HASH_LEN);
        memcpy(block + STO_TREE_HASH_LEN, h->stack[h->stack_len - 1], STO_TREE_HASH_LEN);
        h->stack_len--;
        tree_parent_cv(block, 0, h->stack[h->stack_len - 1]);
        if (h->stack_len == 1)
            memcpy(h->root_block, block, STO_TREE_NODE_LEN);
        if ((rc = tree_out_node(h, block)) < 0)
            return rc;
    }
    return 0;
}

/* Hash n full pieces at data (1..BATCH_PIECES) and push them. */
static int
tree_feed_pieces(sto_tree_hasher_t *h, const uint8_t *data, size_t n)
{
    size_t i;
    int rc;

    tree_hash_full_pieces(&h->sc, data, n, h->pieces_done, h->tops, h->cvs);
    for (i = 0; i < n; i++)
        if ((rc = tree_push(h, h->cvs[i], h->tops[i])) < 0)
            return rc;
    return 0;
}

sto_tree_hasher_t *
sto_tree_hasher_new(sto_tree_out_cb cb, void *arg)
{
    sto_tree_hasher_t *h = ron_xmalloc(sizeof *h);

    h->cb = cb;
    h->cb_arg = arg;
    sto_tree_hasher_reset(h);
    return h;
}

void
sto_tree_hasher_free(sto_tree_hasher_t *h)
{
    free(h);
}

void
sto_tree_hasher_reset(sto_tree_hasher_t *h)
{
    h->err = 0;
    h->size = 0;
    h->pieces_done = 0;
    h->stack_len = 0;
    h->out_len = 0;
    h->buf_len = 0;
}

uint64_t
sto_tree_hasher_size(const sto_tree_hasher_t *h)
{
    return h->size;
}

int
sto_tree_hasher_update(sto_tree_hasher_t *h, const void *data, size_t len)
{
    const size_t batch = (size_t)BATCH_PIECES * STO_PIECE_LEN;
    const uint8_t *p = data;
    size_t take;
    int rc;

    if (h->err < 0)
        return h->err;
    if (len > UINT64_MAX - h->size)
        return RON_ETOOBIG;
    h->size += len;
    if (h->buf_len > 0 && h->buf_len % STO_PIECE_LEN == 0 && len >= STO_PIECE_LEN) {
        /* whole pieces are waiting and whole pieces follow: hash the waiting
         * ones now rather than copy a batch together (a piece fills the
         * SIMD lanes on its own; batching only helps its top levels) */
        if ((rc = tree_feed_pieces(h, h->buf, h->buf_len / STO_PIECE_LEN)) < 0)
            return rc;
        h->buf_len = 0;
    }
    if (h->buf_len > 0) {
        take = batch - h->buf_len < len ? batch - h->buf_len : len;
        memcpy(h->buf + h->buf_len, p, take);
        h->buf_len += take;
        p += take;
        len -= take;
        if (h->buf_len < batch)
            return 0;
        h->buf_len = 0;
        if ((rc = tree_feed_pieces(h, h->buf, BATCH_PIECES)) < 0)
            return rc;
    }
    /* Zero copy for whole pieces straight from the caller's buffer, a batch at a time. */
    while (len >= STO_PIECE_LEN) {
        size_t k = len / STO_PIECE_LEN < BATCH_PIECES ? len / STO_PIECE_LEN : BATCH_PIECES;
        if ((rc = tree_feed_pieces(h, p, k)) < 0)
            return rc;
        p += k * STO_PIECE_LEN;
        len -= k * STO_PIECE_LEN;
    }
    if (len > 0)
        memcpy(h->buf, p, len);
    h->buf_len = len;
    return 0;
}

int
sto_tree_hasher_update_piece(sto_tree_hasher_t *h, const void *data, size_t len,
                             const uint8_t cv[static STO_TREE_HASH_LEN])
{
    /* Piece 0 is always hashed: a one-piece object's root needs its top
     * block, which a CV does not give (tree_push keeps it as root_block). */
    if (h->err < 0 || h->buf_len != 0 || len != STO_PIECE_LEN || h->pieces_done == 0 ||
        h->size % STO_PIECE_LEN != 0 || len > UINT64_MAX - h->size)
        return sto_tree_hasher_update(h, data, len);
    h->size += len;
    return tree_push(h, cv, NULL);
}

int
sto_tree_hasher_finish(sto_tree_hasher_t *h, uint8_t root_out[static STO_TREE_HASH_LEN],
                       uint64_t *size_out)
{
    size_t full = h->buf_len / STO_PIECE_LEN, rest = h->buf_len % STO_PIECE_LEN;
    uint8_t cv[STO_TREE_HASH_LEN], block[STO_TREE_NODE_LEN];
    int rc;

    if (h->err < 0)
        return h->err;
    if (full > 0 && (rc = tree_feed_pieces(h, h->buf, full)) < 0)
        return rc;
    if (h->pieces_done == 0) {
        /* One piece, empty to just under 64 KiB: it is the root. */
        tree_piece_cv(&h->sc, h->buf, rest, 0, 1, root_out);
    } else if (rest == 0 && h->stack_len == 1) {
        /* A power of two of full pieces: the last merge (or piece 0) is the root. */
        tree_parent_cv(h->root_block, 1, root_out);
    } else {
        if (rest > 0)
            tree_piece_cv(&h->sc, h->buf + full * STO_PIECE_LEN, rest, h->pieces_done, 0, cv);
        else
            memcpy(cv, h->stack[--h->stack_len], STO_TREE_HASH_LEN);
        /* Merge the right edge, right to left; the last merge is the root. */
        while (h->stack_len > 0) {
            memcpy(block, h->stack[--h->stack_len], STO_TREE_HASH_LEN);
            memcpy(block + STO_TREE_HASH_LEN, cv, STO_TREE_HASH_LEN);
            tree_parent_cv(block, h->stack_len == 0, cv);
            if ((rc = tree_out_node(h, block)) < 0)
                return rc;
        }
        memcpy(root_out, cv, STO_TREE_HASH_LEN);
    }
    if ((rc = tree_out_flush(h)) < 0)
        return rc;
    if (size_out != NULL)
        *size_out = h->size;
    return 0;
}

typedef struct {
    uint8_t *p;
} tree_mem_out_t;

static int
tree_mem_out(void *arg, const uint8_t *bytes, size_t len)
{
    tree_mem_out_t *m = arg;

    memcpy(m->p, bytes, len);
    m->p += len;
    return 0;
}

int
sto_tree_hash(const void *data, size_t len, uint8_t root_out[static STO_TREE_HASH_LEN],
              uint8_t *outboard_out)
{
    tree_mem_out_t m = {outboard_out};
    sto_tree_hasher_t *h = sto_tree_hasher_new(outboard_out != NULL ? tree_mem_out : NULL, &m);
    int rc;

    rc = sto_tree_hasher_update(h, data, len);
    if (rc == 0)
        rc = sto_tree_hasher_finish(h, root_out, NULL);
    sto_tree_hasher_free(h);
    return rc;
}

/* ---- paths, proofs, verification ---------------------------------------- */

/*
 * The path from the root down to piece `piece` of an n-piece tree: for each
 * level, top-down, the outboard offset of the sibling's CV (a half of the
 * ancestor's node) and whether the piece's side is the left one. The
 * subtree of pieces [a, a + w) owns the post-order node range starting at
 * node s: its own node is node s + w - 2, its left subtree's nodes start at s
 * and its right subtree's at s + left - 1.
 */
typedef struct {
    uint64_t sib_off[STO_TREE_MAX_DEPTH]; /* byte offset of the sibling CV in the outboard */
    uint8_t on_left[STO_TREE_MAX_DEPTH];  /* 1: the piece's side is the left half */
} tree_path_t;

/* Fill path (may be NULL) and return the depth of piece in an n-piece tree. */
static size_t
tree_path(uint64_t n, uint64_t piece, tree_path_t *path)
{
    uint64_t a = 0, w = n, s = 0, left, node;
    size_t d = 0;

    while (w > 1) {
        left = tree_left_width(w);
        node = s + w - 2;
        if (piece < a + left) {
            if (path != NULL) {
                path->sib_off[d] = node * STO_TREE_NODE_LEN + STO_TREE_HASH_LEN;
                path->on_left[d] = 1;
            }
            w = left;
        } else {
            if (path != NULL) {
                path->sib_off[d] = node * STO_TREE_NODE_LEN;
                path->on_left[d] = 0;
            }
            a += left;
            s += left - 1;
            w -= left;
        }
        d++;
    }
    return d;
}

size_t
sto_tree_proof_len(uint64_t size, uint64_t piece)
{
    uint64_t n = sto_tree_pieces(size);

    if (piece >= n)
        return 0;
    return tree_path(n, piece, NULL) * STO_TREE_HASH_LEN;
}

int
sto_tree_proof_extract(uint64_t size, uint64_t piece, sto_tree_read_fn read, void *arg,
                       uint8_t *proof_out, size_t cap, size_t *len_out)
{
    uint64_t n = sto_tree_pieces(size);
    tree_path_t path;
    size_t d, i;
    int rc;

    if (piece >= n)
        return RON_EINVAL;
    d = tree_path(n, piece, &path);
    if (cap < d * STO_TREE_HASH_LEN)
        return RON_EINVAL;
    /* The proof is bottom-up: the deepest sibling first. */
    for (i = 0; i < d; i++) {
        rc = read(arg, path.sib_off[d - 1 - i], proof_out + i * STO_TREE_HASH_LEN,
                  STO_TREE_HASH_LEN);
        if (rc < 0)
            return rc;
    }
    *len_out = d * STO_TREE_HASH_LEN;
    return 0;
}

typedef struct {
    const uint8_t *p;
    uint64_t len;
} tree_mem_in_t;

static int
tree_mem_read(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
    const tree_mem_in_t *m = arg;

    if (off > m->len || len > m->len - off)
        return RON_EDIGEST;         /* defensive: lengths are checked by the callers */
    memcpy(buf, m->p + off, len);
    return 0;
}

int
sto_tree_proof_extract_buf(uint64_t size, uint64_t piece, const uint8_t *outboard,
                           size_t outboard_len, uint8_t *proof_out, size_t cap,
                           size_t *len_out)
{
    tree_mem_in_t m = {outboard, outboard_len};

    if (outboard_len != sto_tree_outboard_len(size))
        return RON_EDIGEST;
    return sto_tree_proof_extract(size, piece, tree_mem_read, &m, proof_out, cap, len_out);
}

/* Fold the piece's CV up its path with the bottom-up sibling CVs of proof and
 * compare with root. n >= 2 (a one-piece object has no path). With nodes
 * not NULL, the block folded at top-down level l goes to nodes + 64*l and
 * its outboard offset to offs[l]. */
static int
tree_cv_fold(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t n, uint64_t piece,
             const uint8_t cv_in[static STO_TREE_HASH_LEN], const uint8_t *proof,
             size_t proof_len, uint8_t *nodes, uint64_t *offs)
{
    tree_path_t path;
    uint8_t cv[STO_TREE_HASH_LEN], block[STO_TREE_NODE_LEN];
    size_t d = tree_path(n, piece, &path), i, lvl;

    if (proof_len != d * STO_TREE_HASH_LEN)
        return RON_EPROTO;
    memcpy(cv, cv_in, sizeof cv);
    for (i = 0; i < d; i++) {
        lvl = d - 1 - i;               /* path is top-down, proof bottom-up */
        if (path.on_left[lvl]) {
            memcpy(block, cv, STO_TREE_HASH_LEN);
            memcpy(block + STO_TREE_HASH_LEN, proof + i * STO_TREE_HASH_LEN, STO_TREE_HASH_LEN);
        } else {
            memcpy(block, proof + i * STO_TREE_HASH_LEN, STO_TREE_HASH_LEN);
            memcpy(block + STO_TREE_HASH_LEN, cv, STO_TREE_HASH_LEN);
        }
        tree_parent_cv(block, lvl == 0, cv);
        if (nodes != NULL) {
            memcpy(nodes + lvl * STO_TREE_NODE_LEN, block, STO_TREE_NODE_LEN);
            offs[lvl] = path.sib_off[lvl] & ~(uint64_t)(STO_TREE_NODE_LEN - 1);
        }
    }
    return memcmp(cv, root, STO_TREE_HASH_LEN) == 0 ? 0 : RON_EDIGEST;
}

static int
tree_cv_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t n, uint64_t piece,
               const uint8_t cv_in[static STO_TREE_HASH_LEN], const uint8_t *proof,
               size_t proof_len)
{
    return tree_cv_fold(root, n, piece, cv_in, proof, proof_len, NULL, NULL);
}

/* The CV of piece `piece` (len bytes) of an n-piece object, the root when n
 * is 1: one pass over the bytes; a full piece of a larger object goes through
 * tree_hash_full_pieces, so its parent levels are hash_many calls too (not
 * 63 single compressions). */
static void
tree_piece_cv_of(const uint8_t *bytes, size_t len, uint64_t piece, uint64_t n,
                 uint8_t cv[static STO_TREE_HASH_LEN])
{
    tree_scratch_t *sc = ron_xmalloc(sizeof *sc);

    if (len == STO_PIECE_LEN && n > 1) {
        uint8_t top[1][STO_TREE_NODE_LEN], cvs[1][STO_TREE_HASH_LEN];
        tree_hash_full_pieces(sc, bytes, 1, piece, top, cvs);
        memcpy(cv, cvs[0], STO_TREE_HASH_LEN);
    } else {
        tree_piece_cv(sc, bytes, len, piece, n == 1, cv);
    }
    free(sc);
}

int
sto_tree_proof_verify_cv(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                         uint64_t piece, const uint8_t *bytes, size_t len,
                         const uint8_t *proof, size_t proof_len,
                         uint8_t cv_out[static STO_TREE_HASH_LEN])
{
    uint64_t n = sto_tree_pieces(size);
    uint8_t cv[STO_TREE_HASH_LEN];
    int rc;

    if (piece >= n)
        return RON_EINVAL;
    if (len != sto_tree_piece_len(size, piece))
        return RON_EDIGEST;
    if (proof_len != tree_path(n, piece, NULL) * STO_TREE_HASH_LEN)
        return RON_EPROTO;
    tree_piece_cv_of(bytes, len, piece, n, cv);
    if (n == 1)
        rc = memcmp(cv, root, STO_TREE_HASH_LEN) == 0 ? 0 : RON_EDIGEST;
    else
        rc = tree_cv_verify(root, n, piece, cv, proof, proof_len);
    if (rc == 0)
        memcpy(cv_out, cv, STO_TREE_HASH_LEN);
    return rc;
}

int
sto_tree_proof_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                      uint64_t piece, const uint8_t *bytes, size_t len,
                      const uint8_t *proof, size_t proof_len)
{
    uint8_t cv[STO_TREE_HASH_LEN];

    return sto_tree_proof_verify_cv(root, size, piece, bytes, len, proof, proof_len, cv);
}

int
sto_tree_proof_nodes(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                     uint64_t piece, const uint8_t *bytes, size_t len,
                     const uint8_t *proof, size_t proof_len, uint8_t *nodes_out,
                     uint64_t *offs_out, size_t *n_out)
{
    uint64_t n = sto_tree_pieces(size);
    uint8_t cv[STO_TREE_HASH_LEN];
    uint8_t nodes[STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN];
    uint64_t offs[STO_TREE_MAX_DEPTH];
    size_t d;
    int rc;

    *n_out = 0;
    if (piece >= n)
        return RON_EINVAL;
    if (len != sto_tree_piece_len(size, piece))
        return RON_EDIGEST;
    d = tree_path(n, piece, NULL);
    if (proof_len != d * STO_TREE_HASH_LEN)
        return RON_EPROTO;
    tree_piece_cv_of(bytes, len, piece, n, cv);
    if (n == 1)
        return memcmp(cv, root, STO_TREE_HASH_LEN) == 0 ? 0 : RON_EDIGEST;
    rc = tree_cv_fold(root, n, piece, cv, proof, proof_len, nodes, offs);
    if (rc < 0)
        return rc;
    memcpy(nodes_out, nodes, d * STO_TREE_NODE_LEN);
    memcpy(offs_out, offs, d * sizeof offs[0]);
    *n_out = d;
    return 0;
}

int
sto_tree_proof_nodes_cv(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                        uint64_t piece, const uint8_t cv[static STO_TREE_HASH_LEN],
                        const uint8_t *proof, size_t proof_len, uint8_t *nodes_out,
                        uint64_t *offs_out, size_t *n_out)
{
    uint64_t n = sto_tree_pieces(size);
    uint8_t nodes[STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN];
    uint64_t offs[STO_TREE_MAX_DEPTH];
    size_t d;
    int rc;

    *n_out = 0;
    if (piece >= n || n == 1)
        return RON_EINVAL;
    d = tree_path(n, piece, NULL);
    if (proof_len != d * STO_TREE_HASH_LEN)
        return RON_EPROTO;
    rc = tree_cv_fold(root, n, piece, cv, proof, proof_len, nodes, offs);
    if (rc < 0)
        return rc;
    memcpy(nodes_out, nodes, d * STO_TREE_NODE_LEN);
    memcpy(offs_out, offs, d * sizeof offs[0]);
    *n_out = d;
    return 0;
}

int
sto_tree_piece_verify_fn(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                         sto_tree_read_fn read, void *arg, uint64_t piece,
                         const uint8_t *bytes, size_t len)
{
    uint8_t proof[STO_TREE_MAX_PROOF];
    size_t proof_len;
    int rc;

    rc = sto_tree_proof_extract(size, piece, read, arg, proof, sizeof proof, &proof_len);
    if (rc < 0)
        return rc;
    return sto_tree_proof_verify(root, size, piece, bytes, len, proof, proof_len);
}

int
sto_tree_piece_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                      const uint8_t *outboard, size_t outboard_len, uint64_t piece,
                      const uint8_t *bytes, size_t len)
{
    tree_mem_in_t m = {outboard, outboard_len};

    if (outboard_len != sto_tree_outboard_len(size))
        return RON_EDIGEST;
    return sto_tree_piece_verify_fn(root, size, tree_mem_read, &m, piece, bytes, len);
}

/* Sibling CVs read for the previous piece of a range, by top-down level:
 * neighbouring pieces share all but their lowest levels, so a range reads
 * about two CVs per piece instead of its depth. */
typedef struct {
    uint64_t off[STO_TREE_MAX_DEPTH];
    uint8_t valid[STO_TREE_MAX_DEPTH];
    uint8_t cv[STO_TREE_MAX_DEPTH][STO_TREE_HASH_LEN];
} tree_sib_cache_t;

/* sto_tree_proof_extract for piece of an n-piece tree through the cache. */
static int
tree_proof_read_cached(uint64_t n, uint64_t piece, sto_tree_read_fn read, void *arg,
                       tree_sib_cache_t *c, uint8_t *proof_out, size_t *len_out)
{
    tree_path_t path;
    size_t d = tree_path(n, piece, &path), l;
    int rc;

    for (l = 0; l < d; l++) {
        if (!c->valid[l] || c->off[l] != path.sib_off[l]) {
            c->valid[l] = 0;
            if ((rc = read(arg, path.sib_off[l], c->cv[l], STO_TREE_HASH_LEN)) < 0)
                return rc;
            c->off[l] = path.sib_off[l];
            c->valid[l] = 1;
        }
        memcpy(proof_out + (d - 1 - l) * STO_TREE_HASH_LEN, c->cv[l], STO_TREE_HASH_LEN);
    }
    *len_out = d * STO_TREE_HASH_LEN;
    return 0;
}

int
sto_tree_range_verify_fn(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                         sto_tree_read_fn read, void *arg, uint64_t first_piece,
                         const uint8_t *bytes, size_t len, uint64_t *bad_piece_out)
{
    uint64_t n = sto_tree_pieces(size), piece = first_piece;
    uint8_t tops[BATCH_PIECES][STO_TREE_NODE_LEN], cvs[BATCH_PIECES][STO_TREE_HASH_LEN];
    uint8_t proof[STO_TREE_MAX_PROOF];
    size_t proof_len, k, i, plen;
    tree_scratch_t *sc = NULL;
    tree_sib_cache_t cache;
    int rc = 0;

    if (first_piece >= n)
        return RON_EINVAL;
    memset(cache.valid, 0, sizeof cache.valid);
    /* Whole pieces only: the range must end on a piece boundary of size. */
    if (len > size - first_piece * STO_PIECE_LEN ||
        (len % STO_PIECE_LEN != 0 && first_piece * STO_PIECE_LEN + len != size) ||
        (len == 0 && size != 0))
        return RON_EINVAL;
    if (n == 1) {
        rc = sto_tree_proof_verify(root, size, 0, bytes, len, NULL, 0);
        if (rc == RON_EDIGEST && bad_piece_out != NULL)
            *bad_piece_out = 0;
        return rc;
    }
    sc = ron_xmalloc(sizeof *sc);
    while (len > 0) {
        /* Full pieces in batches; a short last piece on its own. */
        k = len / STO_PIECE_LEN < BATCH_PIECES ? len / STO_PIECE_LEN : BATCH_PIECES;
        if (k > 0) {
            tree_hash_full_pieces(sc, bytes, k, piece, tops, cvs);
            plen = k * STO_PIECE_LEN;
        } else {
            tree_piece_cv(sc, bytes, len, piece, 0, cvs[0]);
            k = 1;
            plen = len;
        }
        for (i = 0; i < k; i++, piece++) {
            rc = tree_proof_read_cached(n, piece, read, arg, &cache, proof, &proof_len);
            if (rc == 0)
                rc = tree_cv_verify(root, n, piece, cvs[i], proof, proof_len);
            if (rc < 0) {
                if (rc == RON_EDIGEST && bad_piece_out != NULL)
                    *bad_piece_out = piece;
                goto out;
            }
        }
        bytes += plen;
        len -= plen;
    }
out:
    free(sc);
    return rc;
}

int
sto_tree_size_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                     const uint8_t *last, size_t last_len,
                     const uint8_t *proof, size_t proof_len)
{
    return sto_tree_proof_verify(root, size, sto_tree_pieces(size) - 1, last, last_len,
                                 proof, proof_len);
}
