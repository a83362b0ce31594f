/*
 * sto_tree.h - BLAKE3 verified streaming: 64 KiB pieces and their outboard.
 * An object's address is the plain BLAKE3-256 of its bytes. BLAKE3 is a
 * Merkle tree over 1 KiB chunks; this module cuts it at 64 KiB pieces
 * (64 chunks) and keeps the tree's parent nodes above the piece level in an
 * "outboard" (64 bytes per parent node, post-order), so any piece can be
 * verified on its own against the root. Format: docs/protocol/storage-tree.md.
 * Included by svc_storage.h; pure functions and a heap hasher, no I/O.
 * Invariants: an object of size S has sto_tree_pieces(S) pieces (1 for S = 0)
 * and exactly sto_tree_outboard_len(S) = 64 * (pieces - 1) outboard bytes;
 * nothing here trusts a size until the last piece has verified under it.
 * Thread rule: every function is reentrant; a hasher is used by one thread at
 * a time.
 */
#ifndef STO_TREE_H
#define STO_TREE_H

#include <stddef.h>
#include <stdint.h>

/* Limits and sizes. */
#define STO_PIECE_LEN       65536u  /* bytes per piece: 64 BLAKE3 chunks (DESIGN.md §4) */
#define STO_TREE_CHUNK_LEN  1024u   /* BLAKE3 chunk: the tree's leaves */
#define STO_TREE_HASH_LEN   32u     /* a chaining value or root (the address bytes) */
#define STO_TREE_NODE_LEN   64u     /* one outboard parent node: left CV || right CV */
#define STO_TREE_MAX_DEPTH  48u     /* sizes < 2^64 have < 2^48 pieces: <= 48 levels above them */
#define STO_TREE_MAX_PROOF  (STO_TREE_MAX_DEPTH * STO_TREE_HASH_LEN) /* 1536 bytes */
#define STO_TREE_OUT_BATCH  4096u   /* outboard bytes handed to the output callback at once, at most */

/* Number of pieces of an object of size bytes: ceil(size / 64 KiB), and 1 for
 * size 0 (one empty piece, whose hash is the root). */
uint64_t sto_tree_pieces(uint64_t size);

/* Outboard bytes of an object of size bytes: 64 * (sto_tree_pieces(size) - 1). */
uint64_t sto_tree_outboard_len(uint64_t size);

/* Length of piece `piece` of an object of size bytes: 64 KiB for every piece
 * but the last, size - 64 KiB * (pieces - 1) for the last, 0 when piece is out
 * of range (and for the one piece of an empty object). */
size_t sto_tree_piece_len(uint64_t size, uint64_t piece);

/* Bytes of the proof of piece `piece` (32 per level above it, at most
 * STO_TREE_MAX_PROOF); 0 for a one-piece object or a piece out of range. */
size_t sto_tree_proof_len(uint64_t size, uint64_t piece);

/*
 * Outboard output: called with the next len (1..STO_TREE_OUT_BATCH) bytes of
 * the outboard, in order; the concatenation of every call is the outboard.
 * bytes is a view valid during the call only. Return 0, or a negative code
 * that the hasher call that triggered it returns unchanged (the hasher is
 * then unusable until sto_tree_hasher_reset).
 */
typedef int (*sto_tree_out_cb)(void *arg, const uint8_t *bytes, size_t len);

/*
 * Outboard input: read exactly len bytes at byte offset off of the outboard
 * into buf. Return 0 or a negative code (passed through unchanged); a short
 * outboard is an error of the callee's choice (RON_EDIGEST suits a file that
 * is too short for its recorded size).
 */
typedef int (*sto_tree_read_fn)(void *arg, uint64_t off, uint8_t *buf, size_t len);

/* Streaming hasher: opaque, about 0.6 MiB on the heap (a batch of 8 pieces). */
typedef struct sto_tree_hasher sto_tree_hasher_t;

/*
 * Return a new hasher that hands outboard bytes to cb(arg, ...) as they
 * become final (cb may be NULL: root only). Memory stays bounded whatever the
 * object size: at most STO_TREE_OUT_BATCH outboard bytes are held back.
 * Aborts on out of memory (ron_xmalloc).
 */
sto_tree_hasher_t *sto_tree_hasher_new(sto_tree_out_cb cb, void *arg);

/* Free h (NULL does nothing). */
void sto_tree_hasher_free(sto_tree_hasher_t *h);

/* Start a new object with the same callback. */
void sto_tree_hasher_reset(sto_tree_hasher_t *h);

/*
 * Feed len bytes (borrowed for the call), in any chunking: the root and
 * outboard do not depend on how the input was cut. cb may run several times.
 * Returns 0, a code from cb, or RON_ETOOBIG past 2^64 - 1 bytes in total.
 */
int sto_tree_hasher_update(sto_tree_hasher_t *h, const void *data, size_t len);

/*
 * Feed one whole piece (len == STO_PIECE_LEN, borrowed) whose chaining value
 * cv the caller computed from these very bytes while verifying them against
 * the object's address (sto_tree_proof_verify_cv), so the bytes are not
 * hashed a second time: the piece's CV is folded into the tree as if it had
 * been hashed here. Only at a piece boundary and after piece 0 (whose top
 * block a one-piece root needs); anywhere else, or for any other len, this
 * is sto_tree_hasher_update. The root still comes out of the CVs, so a
 * caller that compares it with the address (sto_put_commit with an
 * expected address does) catches a CV that is not the verified one.
 * Returns as sto_tree_hasher_update.
 */
int sto_tree_hasher_update_piece(sto_tree_hasher_t *h, const void *data, size_t len,
                                 const uint8_t cv[static STO_TREE_HASH_LEN]);

/*
 * End the object: deliver the remaining outboard bytes through cb, write the
 * address to root_out and the object size to *size_out (size_out may be
 * NULL). Returns 0 or a code from cb. Call sto_tree_hasher_reset before
 * feeding another object.
 */
int sto_tree_hasher_finish(sto_tree_hasher_t *h, uint8_t root_out[static STO_TREE_HASH_LEN],
                           uint64_t *size_out);

/* Bytes fed to h since it was created or reset. */
uint64_t sto_tree_hasher_size(const sto_tree_hasher_t *h);

/*
 * Whole-buffer convenience: hash len bytes of data into root_out and, when
 * outboard_out is not NULL, write the sto_tree_outboard_len(len) outboard
 * bytes to it (caller's buffer, that large). Returns 0.
 */
int sto_tree_hash(const void *data, size_t len, uint8_t root_out[static STO_TREE_HASH_LEN],
                  uint8_t *outboard_out);

/*
 * Extract the proof of piece `piece` of an object of size bytes from its
 * outboard, read through read(arg, ...): the sibling chaining values from the
 * piece up to the root, 32 bytes each, bottom-up (docs/protocol/
 * storage-tree.md). Writes sto_tree_proof_len(size, piece) bytes to proof_out
 * (cap bytes available; STO_TREE_MAX_PROOF always suffices) and that length
 * to *len_out. Nothing is verified here. Returns 0, RON_EINVAL when piece is
 * out of range or cap is too small, or a code from read.
 */
int sto_tree_proof_extract(uint64_t size, uint64_t piece, sto_tree_read_fn read, void *arg,
                           uint8_t *proof_out, size_t cap, size_t *len_out);

/* Same, from an outboard in memory (outboard_len bytes, borrowed). Returns
 * RON_EDIGEST when outboard_len != sto_tree_outboard_len(size). */
int sto_tree_proof_extract_buf(uint64_t size, uint64_t piece, const uint8_t *outboard,
                               size_t outboard_len, uint8_t *proof_out, size_t cap,
                               size_t *len_out);

/*
 * Verify that len bytes are piece `piece` of the object with address root
 * and the claimed size, given the piece's proof (outside bytes: any content
 * is safe). Returns 0; RON_EDIGEST when len is not the piece's length under
 * size or the bytes and proof do not hash to root; RON_EPROTO when proof_len
 * is not sto_tree_proof_len(size, piece); RON_EINVAL when piece is out of
 * range. A success binds size only for the last piece (see
 * sto_tree_size_verify).
 */
int sto_tree_proof_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                          uint64_t piece, const uint8_t *bytes, size_t len,
                          const uint8_t *proof, size_t proof_len);

/*
 * sto_tree_proof_verify that also hands out, on success, the piece's
 * chaining value (non-root; the root itself for a one-piece object) to
 * cv_out, for sto_tree_hasher_update_piece / sto_put_write_piece: one
 * BLAKE3 pass over a received piece serves both the check and the store.
 */
int sto_tree_proof_verify_cv(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                             uint64_t piece, const uint8_t *bytes, size_t len,
                             const uint8_t *proof, size_t proof_len,
                             uint8_t cv_out[static STO_TREE_HASH_LEN]);

/*
 * Verify piece `piece` (len bytes) of the object (root, size) against its
 * outboard read through read(arg, ...). Returns 0, RON_EDIGEST, RON_EINVAL as
 * sto_tree_proof_verify, or a code from read.
 */
int sto_tree_piece_verify_fn(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                             sto_tree_read_fn read, void *arg, uint64_t piece,
                             const uint8_t *bytes, size_t len);

/* Same, from an outboard in memory (outboard_len bytes, borrowed); an
 * outboard of the wrong length gives RON_EDIGEST. */
int sto_tree_piece_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                          const uint8_t *outboard, size_t outboard_len, uint64_t piece,
                          const uint8_t *bytes, size_t len);

/*
 * Verify consecutive pieces first_piece, first_piece + 1, ... given as len
 * bytes (whole pieces: len is the sum of their lengths), hashing them as a
 * batch (faster than one call per piece for ranges of several pieces).
 * Returns 0; RON_EDIGEST with *bad_piece_out set to the first piece that
 * fails (bad_piece_out may be NULL); RON_EINVAL when the range is out of
 * bounds or len does not end on a piece boundary; or a code from read.
 */
int sto_tree_range_verify_fn(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                             sto_tree_read_fn read, void *arg, uint64_t first_piece,
                             const uint8_t *bytes, size_t len, uint64_t *bad_piece_out);

/*
 * Verify piece `piece` with its proof like sto_tree_proof_verify and, when it
 * verifies, write the outboard nodes on its path: node j (top-down) is the
 * 64 bytes nodes_out + 64*j that belong at outboard byte offset
 * offs_out[j]; their number goes to *n_out (<= STO_TREE_MAX_DEPTH; 0 for a
 * one-piece object). Every node so written is authenticated by the fold up
 * to root, so a receiver that fills an outboard from the proofs it verified
 * holds, once it has every piece, the object's exact outboard. nodes_out
 * holds STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN bytes, offs_out
 * STO_TREE_MAX_DEPTH entries. Returns as sto_tree_proof_verify (nothing is
 * written on an error).
 */
int sto_tree_proof_nodes(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                         uint64_t piece, const uint8_t *bytes, size_t len,
                         const uint8_t *proof, size_t proof_len, uint8_t *nodes_out,
                         uint64_t *offs_out, size_t *n_out);

/*
 * sto_tree_proof_nodes for a piece whose chaining value cv was computed from
 * its bytes by a check in this node (sto_tree_proof_verify_cv in the
 * overlay, passed over the node's own bus): the bytes are not hashed again,
 * cv is folded up the proof to root, which authenticates cv and the nodes
 * written. A one-piece object (whose "cv" is the root itself) and len that
 * is not the piece's length are refused with RON_EINVAL: use
 * sto_tree_proof_nodes.
 */
int sto_tree_proof_nodes_cv(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                            uint64_t piece, const uint8_t cv[static STO_TREE_HASH_LEN],
                            const uint8_t *proof, size_t proof_len, uint8_t *nodes_out,
                            uint64_t *offs_out, size_t *n_out);

/*
 * Verify that the object with address root has the claimed size, from its
 * last piece (last_len bytes, piece sto_tree_pieces(size) - 1) and that
 * piece's proof. BLAKE3 hashes no length field: only the tree's shape (which
 * nodes are parents, each chunk's counter and the last block's length) binds
 * the size, and only the path of the last piece spans the whole shape, so a
 * receiver checks the last piece first. Returns 0, RON_EDIGEST or RON_EPROTO
 * as sto_tree_proof_verify.
 */
int sto_tree_size_verify(const uint8_t root[static STO_TREE_HASH_LEN], uint64_t size,
                         const uint8_t *last, size_t last_len,
                         const uint8_t *proof, size_t proof_len);

#endif
