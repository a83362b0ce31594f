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

#include "ron_err.h"

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
