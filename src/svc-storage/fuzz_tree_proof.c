/*
 * fuzz_tree_proof.c - libFuzzer target for piece proofs (outside bytes: a
 * peer sends a claimed size, a piece index, a proof and the piece).
 * Input: [8: size, LE][8: piece, LE][2: proof length, LE][proof][piece bytes].
 * Whatever they hold, sto_tree_proof_verify and sto_tree_size_verify must
 * return 0, RON_EDIGEST, RON_EPROTO or RON_EINVAL without touching memory
 * they were not given, and must accept only under the root the tail bytes
 * really hash to. The tail bytes (up to 12 pieces) are also hashed as an
 * object of their own: every piece of it must verify with its extracted
 * proof, and the same proof with one bit flipped must not. Any breach aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "sto_tree.h"

#define FUZZ_MAX_OBJECT (12 * STO_PIECE_LEN) /* bytes hashed as an object per input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond)
{
    if (!cond)
        abort();
}

static uint64_t
le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int
known(int rc)
{
    return rc == 0 || rc == RON_EDIGEST || rc == RON_EPROTO || rc == RON_EINVAL;
}

/* Hash tail as an object; each piece verifies with its proof, and fails with a
 * flipped proof bit chosen by the input. */
static void
round_trip(const uint8_t *tail, size_t len, unsigned flip)
{
    uint64_t obj_len = len > FUZZ_MAX_OBJECT ? FUZZ_MAX_OBJECT : len;
    uint64_t n = sto_tree_pieces(obj_len), ob_len = sto_tree_outboard_len(obj_len);
    uint8_t root[STO_TREE_HASH_LEN], proof[STO_TREE_MAX_PROOF];
    uint8_t *ob = malloc(ob_len + 1);
    size_t proof_len;

    check(ob != NULL);
    check(sto_tree_hash(tail, obj_len, root, ob) == 0);
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *piece = tail + i * STO_PIECE_LEN;
        size_t plen = sto_tree_piece_len(obj_len, i);

        check(sto_tree_proof_extract_buf(obj_len, i, ob, ob_len, proof, sizeof proof,
                                         &proof_len) == 0);
        check(sto_tree_proof_verify(root, obj_len, i, piece, plen, proof, proof_len) == 0);
        if (proof_len > 0) {
            proof[flip % proof_len] ^= (uint8_t)(1u << (flip % 8));
            check(sto_tree_proof_verify(root, obj_len, i, piece, plen, proof, proof_len) ==
                  RON_EDIGEST);
        }
    }
    free(ob);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t fixed_root[STO_TREE_HASH_LEN] = {1, 2, 3};
    uint64_t claimed, piece;
    size_t proof_len, rest_len;
    const uint8_t *proof, *rest;
    uint8_t root[STO_TREE_HASH_LEN];
    int rc;

    if (size < 18)
        return 0;
    claimed = le64(data);
    piece = le64(data + 8);
    proof_len = (size_t)data[16] | (size_t)data[17] << 8;
    if (proof_len > size - 18)
        proof_len = size - 18;
    proof = data + 18;
    rest = proof + proof_len;
    rest_len = size - 18 - proof_len;

    /* A made-up root: nothing verifies (a match would be a BLAKE3 break). */
    rc = sto_tree_proof_verify(fixed_root, claimed, piece, rest, rest_len, proof, proof_len);
    check(known(rc) && rc != 0);
    rc = sto_tree_size_verify(fixed_root, claimed, rest, rest_len, proof, proof_len);
    check(known(rc) && rc != 0);
    (void)sto_tree_proof_len(claimed, piece);
    (void)sto_tree_piece_len(claimed, piece);

    /* The real root of the tail: a single-piece claim verifies only when it
     * is the truth; any proof of a multi-piece claim is checked, not trusted. */
    if (rest_len <= STO_PIECE_LEN) {
        check(sto_tree_hash(rest, rest_len, root, NULL) == 0);
        rc = sto_tree_proof_verify(root, claimed, piece, rest, rest_len, proof, proof_len);
        check(known(rc));
        if (rc == 0)
            check(claimed == rest_len && piece == 0 && proof_len == 0);
    }
    round_trip(rest, rest_len, (unsigned)(claimed ^ piece));
    return 0;
}
