/*
 * svc_storage.h - the content-addressed object store of svc-storage.
 *
 * A synchronous library. Two backends share one API:
 *   - the file store (sto_config_t.dir set): each object is one file under
 *     <dir>/objects/ (a header, its bytes, its BLAKE3 outboard), put
 *     through <dir>/tmp/ (fdatasync, rename, directory fsync); one LMDB
 *     environment under <dir>/meta/ holds only metadata (index, pins, cache
 *     order, totals), which the object files' headers can rebuild.
 *     Layout: docs/protocol/storage-format.md.
 *   - the RAM store (dir NULL): the same operations in process memory, for
 *     amnesia; nothing touches the filesystem; bounded by the quota.
 *
 * Thread rules. Every call may block (disk, fsync, LMDB write txns, hashing),
 * so the service runs them on worker threads (uv_queue_work), never on a
 * loop. A sto_store_t is shared: any number of threads may call any store
 * function at once. A sto_put_t and a sto_reader_t belong to one thread at a
 * time (hand them between threads only with a happens-before edge, as
 * uv_queue_work provides). Only one process may open a file store writable
 * (an exclusive lock enforces it); other processes (the gateway) open it with
 * read_only = 1 and use the reader and stat/list calls.
 *
 * Invariants: an address is BLAKE3-256 of the object's bytes (what b3sum
 * prints); no byte leaves sto_reader_read() before the 64 KiB piece holding
 * it has been verified against the address; an acknowledged put (commit
 * returned 0) survives kill -9 and power loss; GC never removes a pinned
 * object.
 */
#ifndef SVC_STORAGE_H
#define SVC_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sto_tree.h"

/* ---- limits ---- */
#define STO_ADDR_LEN 32 /* BLAKE3-256 */
#define STO_TENANT_LEN 16 /* tenant ids are 128-bit (OAP/1 header) */
#define STO_MAX_OBJECT_DEFAULT (64ull << 30) /* issue 3: default max object, 64 GiB */
#define STO_MAP_SIZE_DEFAULT (1ull << 30) /* LMDB map: metadata only, ~100 B/object */
#define STO_CTYPE_MAX 127 /* content type bytes kept (longer ones are refused) */
#define STO_LIST_MAX 1024 /* entries one sto_list() call returns at most */
#define STO_SIZE_UNKNOWN UINT64_MAX /* sto_put_begin(): size not declared */
#define STO_PARTIAL_BATCH_MAX 16u /* pieces per sto_partial_pieces_add(): 1 MiB, its nodes on the heap */

typedef struct sto_store sto_store_t;   /* opaque; shared between threads */
typedef struct sto_put sto_put_t;       /* one streamed put; one thread at a time */
typedef struct sto_reader sto_reader_t; /* one open object; one thread at a time */
typedef struct sto_partial sto_partial_t; /* a partial object; shared between threads */

/* Called with the address of each object GC evicts (from the thread running
 * the GC, with the store's lock held: record it and return; never call the
 * store from here). */
typedef void (*sto_evict_fn)(void *arg, const uint8_t addr[STO_ADDR_LEN]);

typedef struct {
    const char *dir;     /* store directory (created), e.g. <data-dir>/store; NULL = RAM store */
    uint64_t max_object; /* bytes; 0 = STO_MAX_OBJECT_DEFAULT */
    uint64_t quota;      /* store-size quota in bytes (stored objects); 0 = unlimited */
    uint64_t map_size;   /* LMDB map size in bytes; 0 = STO_MAP_SIZE_DEFAULT; fixed */
    int read_only;       /* 1: reader process (no recovery, no writes, no lock) */
} sto_config_t;

typedef enum {
    STO_STATE_CACHE = 0,  /* no pins: GC may evict it */
    STO_STATE_PINNED = 1, /* at least one tenant pins it: GC never evicts it */
} sto_state_t;

typedef struct {
    uint8_t addr[STO_ADDR_LEN];
    uint64_t size;                /* bytes */
    uint64_t created;             /* unix seconds of the first commit */
    uint32_t pins;                /* sum of all tenants' pin counts */
    sto_state_t state;            /* PINNED iff pins > 0 */
    char ctype[STO_CTYPE_MAX + 1]; /* content type, "" when unknown; NUL-terminated */
} sto_stat_t;

typedef struct {
    uint64_t objects;      /* objects in the index */
    uint64_t stored_bytes; /* sum of their sizes */
    uint64_t pinned_bytes; /* sum of the sizes of pinned objects */
    uint64_t quota;        /* the configured quota (0 = unlimited) */
    uint64_t corruptions;  /* pieces that failed verification since open (this process) */
    uint64_t partial_bytes; /* sizes of the partial objects held (not in stored_bytes) */
} sto_totals_t;

/* ---- lifecycle ---- */

/*
 * Open (creating when missing) the store cfg describes; *store_out returns
 * new, freed by sto_close(). Writable file stores run crash recovery first:
 * temporary files are removed, index entries whose files are missing or of
 * the wrong size are dropped, object files absent from the index are
 * re-indexed from their headers (deleted when malformed), totals are
 * recomputed. cfg and cfg->dir are borrowed (dir is copied).
 * Returns 0, RON_EINVAL (bad config), RON_EVERSION (store FORMAT of another
 * version), RON_EBUSY (another process holds the store writable), RON_ESTORE
 * (LMDB failed), or -errno.
 */
int sto_open(const sto_config_t *cfg, sto_store_t **store_out);

/* Close the store. Every put must be committed or aborted and every reader
 * closed first. NULL does nothing. */
void sto_close(sto_store_t *s);

/* Nonzero for a RAM store. */
int sto_is_ram(const sto_store_t *s);

/* ---- put (streamed) ---- */

/*
 * Start a put for tenant (STO_TENANT_LEN bytes, copied), or with tenant NULL
 * a cache copy (an object fetched from peers: stored unpinned, evictable).
 * expected (STO_ADDR_LEN bytes, copied, may be NULL) is the address the bytes
 * must hash to; ctype (copied, may be NULL) the content type. declared is the
 * size the caller announces, or STO_SIZE_UNKNOWN; it is checked up front and
 * must then equal the bytes written.
 * *put_out returns new; it is freed by sto_put_commit() or sto_put_abort().
 * Returns 0, RON_EINVAL (ctype longer than STO_CTYPE_MAX or not printable
 * ASCII, read-only store), RON_ETOOBIG (declared > max_object),
 * RON_ESTOREFULL (pinned bytes + declared would exceed the quota), or -errno.
 */
int sto_put_begin(sto_store_t *s, const uint8_t *tenant, const uint8_t *expected,
                  const char *ctype, uint64_t declared, sto_put_t **put_out);

/*
 * Append len bytes (borrowed) to the put. Returns 0, RON_ETOOBIG (past
 * max_object or past the declared size), RON_ESTOREFULL (RAM store: past the
 * quota), or -errno. After an error, later writes and the commit return it.
 */
int sto_put_write(sto_put_t *p, const void *buf, size_t len);

/*
 * sto_put_write() of one whole piece that the caller has just verified
 * against the put's expected address with its proof, passing the piece's
 * chaining value that the check computed (sto_tree_proof_verify_cv over
 * these very bytes): the store keeps the bytes and folds cv into its tree
 * instead of hashing them again, so a fetched piece costs one BLAKE3 pass.
 * The commit still derives the root from the CVs and refuses it unless it is
 * the expected address (RON_EDIGEST). Without an expected address, for a
 * partial piece, off a piece boundary, or for piece 0, this is
 * sto_put_write(). Same returns.
 */
int sto_put_write_piece(sto_put_t *p, const void *buf, size_t len,
                        const uint8_t cv[static STO_TREE_HASH_LEN]);

/*
 * Finish the put: check the address, make the bytes durable, record them and
 * pin the object for the put's tenant (a tenant that already pins it keeps
 * its count: retried puts do not pile up references; a cache copy adds no
 * pin). When 0 is returned the object is durable (acknowledge it). Always
 * frees p. addr_out may be NULL. A failed sto_put_write() makes commit return
 * that error. Returns 0, RON_EDIGEST (bytes do not hash to expected: nothing was
 * stored), RON_EINVAL (fewer bytes than declared), RON_ESTOREFULL (pinned
 * bytes would exceed the quota: nothing stored), RON_ESTORE, or -errno.
 */
int sto_put_commit(sto_put_t *p, uint8_t addr_out[STO_ADDR_LEN]);

/*
 * sto_put_commit(), also telling whether the object is new: *created_out
 * (may be NULL) is set to false when the address was already stored before
 * this commit (checked just before it, so two concurrent puts of the same
 * new bytes may both say true). Same returns.
 */
int sto_put_commit_ex(sto_put_t *p, uint8_t addr_out[STO_ADDR_LEN], bool *created_out);

/*
 * sto_put_commit_ex() with a last check: once the bytes are hashed and
 * before anything is made durable, check(arg, addr) sees the address; a
 * negative return aborts the put (nothing stored) and is returned. For a
 * capability whose prefix caveat can only be checked once the address is
 * known. check runs on the caller's thread. Same returns otherwise.
 */
int sto_put_commit_check(sto_put_t *p, int (*check)(void *arg, const uint8_t addr[STO_ADDR_LEN]),
                         void *arg, uint8_t addr_out[STO_ADDR_LEN], bool *created_out);

/* Drop the put and its temporary files. NULL does nothing. */
void sto_put_abort(sto_put_t *p);

/* Put len bytes in one call (begin, write, commit); tenant as for
 * sto_put_begin(). Same errors. */
int sto_put_buf(sto_store_t *s, const uint8_t *tenant, const void *buf, size_t len,
                const char *ctype, uint8_t addr_out[STO_ADDR_LEN]);

/* ---- metadata ---- */

/* Fill *st_out for addr. Returns 0, RON_ENOTFOUND, RON_ESTORE. */
int sto_stat(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], sto_stat_t *st_out);

/* 1 when addr is stored, 0 when not, or a negative error. */
int sto_has(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN]);

/*
 * List objects in address order, starting after `after` (borrowed; NULL =
 * from the first). Writes at most cap (<= STO_LIST_MAX) entries to out and
 * their number to *n_out; a page shorter than cap is the last. Returns 0,
 * RON_EINVAL, RON_ESTORE.
 */
int sto_list(sto_store_t *s, const uint8_t *after, sto_stat_t *out, size_t cap, size_t *n_out);

/* Set the content type of a stored object (the gateway's sniffed type); ctype
 * borrowed. Returns 0, RON_ENOTFOUND, RON_EINVAL (too long, not printable
 * ASCII 0x20..0x7e, or read-only). */
int sto_set_ctype(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], const char *ctype);

/* Fill *t_out. Returns 0 or RON_ESTORE. */
int sto_totals(sto_store_t *s, sto_totals_t *t_out);

/* ---- pins ---- */

/*
 * Add one pin reference for tenant on a stored object (a cache object
 * becomes pinned). Returns 0, RON_ENOTFOUND, RON_ESTOREFULL (pinning a cache
 * object would put pinned bytes over the quota), RON_EINVAL (read-only).
 */
int sto_pin(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
            const uint8_t addr[static STO_ADDR_LEN]);

/*
 * Drop one pin reference of tenant. When the object's last reference goes it
 * becomes cache (GC may then evict it). Returns 0, RON_ENOTFOUND (tenant
 * holds no pin on addr), RON_EINVAL (read-only).
 */
int sto_unpin(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
              const uint8_t addr[static STO_ADDR_LEN]);

/* Write tenant's pin count on addr (0 when none) to *count_out. Returns 0 or RON_ESTORE. */
int sto_pin_count(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
                  const uint8_t addr[static STO_ADDR_LEN], uint32_t *count_out);

/*
 * List the addresses tenant pins, in address order after `after` (NULL = from
 * the first): at most cap (<= STO_LIST_MAX) addresses to addrs_out (cap *
 * STO_ADDR_LEN bytes), their number to *n_out. Returns 0, RON_EINVAL, RON_ESTORE.
 */
int sto_pin_list(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
                 const uint8_t *after, uint8_t *addrs_out, size_t cap, size_t *n_out);

/*
 * Evict cache objects, oldest (by the time they became cache) first, until
 * stored bytes <= target; pinned objects are never evicted. Freed bytes go
 * to *freed_out (may be NULL). Commits run this themselves when a new object
 * would push stored bytes over the quota. Returns 0, RON_EINVAL (read-only),
 * RON_ESTORE, or -errno.
 */
int sto_gc(sto_store_t *s, uint64_t target, uint64_t *freed_out);

/* ---- verified reader (the gateway links this) ---- */

/*
 * Open the committed object addr for reading; *r_out returns new, freed by
 * sto_reader_close(). The last piece is verified here, so the size is bound
 * to the address before any byte is served. Works on read-only stores.
 * Returns 0, RON_ENOTFOUND, RON_EDIGEST (stored bytes or outboard do not
 * match the address: logged and counted), or -errno.
 */
int sto_reader_open(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], sto_reader_t **r_out);

/* Size in bytes (bound by verification at open). */
uint64_t sto_reader_size(const sto_reader_t *r);

/* Content type ("" when unknown); a view valid until sto_reader_close(). */
const char *sto_reader_ctype(const sto_reader_t *r);

/*
 * Copy bytes [off, off + len) of the object, clipped at its end, into buf
 * (borrowed). Every 64 KiB piece the range touches is verified before any of
 * its bytes is returned; whole aligned pieces are read straight into buf
 * (pread, no extra copy) and verified there. Returns the count copied (0 at
 * or past the end), RON_EDIGEST when a piece fails verification (logged and
 * counted; buf then holds no verified bytes and must not be served), or
 * -errno.
 */
ssize_t sto_reader_read(sto_reader_t *r, uint64_t off, void *buf, size_t len);

/*
 * Write the proof of piece `piece` (the sibling chaining values from the
 * piece up to the root, docs/protocol/storage-tree.md) from the object's
 * outboard to proof_out (cap bytes; STO_TREE_MAX_PROOF always suffices) and
 * its length to *len_out, so a peer can verify the piece on its own (the
 * overlay sends it with each piece). The outboard was bound to the address
 * at open. Returns 0, RON_EINVAL (piece out of range, cap too small) or
 * RON_EDIGEST (outboard of the wrong length).
 */
int sto_reader_proof(const sto_reader_t *r, uint64_t piece, uint8_t *proof_out, size_t cap,
                     size_t *len_out);

/* Close the reader. NULL does nothing. */
void sto_reader_close(sto_reader_t *r);

/* ---- eviction hook ---- */

/* Call fn(arg, addr) for every object GC evicts from now on (fn NULL: none).
 * The service withdraws their provider records with it. */
void sto_evict_hook_set(sto_store_t *s, sto_evict_fn fn, void *arg);

/* ---- partial objects (fetched from peers; docs/protocol/storage-format.md) ---- */

/*
 * A partial object holds the verified pieces of an object fetched so far,
 * with a bitmap of which, and the outboard nodes their proofs carried, so
 * each piece is verified again whenever it is served. It is cache: never
 * pinned, evicted by GC (idle partials before cache objects), counted in
 * sto_totals_t.partial_bytes. When every piece is present,
 * sto_partial_complete turns it into a normal cache object. Writable stores
 * only (a read-only opener sees none).
 */

/*
 * Open the partial object addr (in memory, or on disk from an earlier run);
 * *p_out returns a handle, released by sto_partial_close. Returns 0 or
 * RON_ENOTFOUND.
 */
int sto_partial_open(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], sto_partial_t **p_out);

/*
 * Open or create the partial object addr of size bytes, given its last
 * piece (last_len bytes) and that piece's proof (peer bytes: anything is
 * safe), which bind the size (sto_tree_size_verify) before anything is
 * allocated; the last piece is stored. The quota is checked like a cache
 * put's (GC makes room). Returns 0; RON_EDIGEST / RON_EPROTO (the last piece
 * or proof does not verify under size); -EEXIST (the whole object is
 * stored: read it instead); RON_ETOOBIG (size > max_object);
 * RON_ESTOREFULL; RON_EINVAL (read-only); or -errno.
 */
int sto_partial_create(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t size,
                       const uint8_t *last, size_t last_len, const uint8_t *proof,
                       size_t proof_len, sto_partial_t **p_out);

/* The object's size (bound by its last piece). */
uint64_t sto_partial_size(const sto_partial_t *p);

/*
 * Add piece `piece` (len bytes, borrowed) with its proof (proof_len bytes):
 * verified first (sto_tree_proof_nodes), then stored with the outboard nodes
 * its proof authenticated, then marked present. Returns 0 (stored), 1
 * (already present: nothing done), RON_EDIGEST / RON_EPROTO (it does not
 * verify: a bad provider), RON_EINVAL (piece out of range), RON_ENOTFOUND
 * (the partial was completed or evicted meanwhile), or -errno.
 */
int sto_partial_piece_add(sto_partial_t *p, uint64_t piece, const uint8_t *bytes, size_t len,
                          const uint8_t *proof, size_t proof_len);

/*
 * sto_partial_piece_add for a piece whose chaining value cv (32 bytes) a
 * check in this node computed from these bytes (the overlay's, passed over
 * the node's bus): cv is folded up the proof to the address
 * (sto_tree_proof_nodes_cv), the bytes are not hashed again. NULL cv, a
 * one-piece object or a len that is not the piece's length: as
 * sto_partial_piece_add. Returns as sto_partial_piece_add.
 */
int sto_partial_piece_add_cv(sto_partial_t *p, uint64_t piece, const uint8_t *bytes, size_t len,
                             const uint8_t *cv, const uint8_t *proof, size_t proof_len);

/* One piece for sto_partial_pieces_add(): the arguments of sto_partial_piece_add_cv. */
typedef struct {
    uint64_t piece;
    const uint8_t *bytes;
    size_t len;
    const uint8_t *cv; /* NULL: the bytes are hashed */
    const uint8_t *proof;
    size_t proof_len;
} sto_piece_in_t;

/*
 * sto_partial_piece_add_cv for n pieces (1..STO_PARTIAL_BATCH_MAX; borrows
 * in), rc_out[k] being what it returns for in[k]. Each piece verifies on its
 * own (a bad one is refused, the others stored); the pieces of a file
 * partial that follow each other (consecutive indices, in order) are
 * written with one pwritev and their map bits with one write, after their
 * bytes and nodes (a kill -9 leaves a piece absent or stored whole, as one
 * at a time). Returns 0, or RON_EINVAL (n out of range: nothing done).
 */
int sto_partial_pieces_add(sto_partial_t *p, const sto_piece_in_t *in, size_t n, int *rc_out);

/* true when piece is present (verified when it was added). */
bool sto_partial_piece_has(sto_partial_t *p, uint64_t piece);

/* Bytes of the pieces present. */
uint64_t sto_partial_verified(sto_partial_t *p);

/*
 * Copy bytes [off, off + len) clipped at the end into buf, every piece
 * verified against the outboard nodes before any of its bytes is copied.
 * Returns the count (0 at or past the end), RON_EAGAIN when a piece of the
 * range is not present (fetch it), RON_EDIGEST when a present piece no
 * longer verifies (it is marked absent again, logged and counted), -errno.
 */
ssize_t sto_partial_read(sto_partial_t *p, uint64_t off, void *buf, size_t len);

/*
 * Every piece present: verify them all once more against the filled
 * outboard and commit the object as cache, like a cache put (durable,
 * indexed, evictable); the partial is gone (its handles only await
 * sto_partial_close). Returns 0, RON_EAGAIN (pieces missing), RON_EDIGEST
 * (a piece failed: marked absent, fetch it again), RON_ESTOREFULL,
 * RON_ENOTFOUND (already completed or evicted), or -errno.
 */
int sto_partial_complete(sto_partial_t *p);

/* Release a handle. NULL does nothing. */
void sto_partial_close(sto_partial_t *p);

/* Size and verified bytes of the partial object addr. Returns 0 or RON_ENOTFOUND. */
int sto_partial_stat(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t *size_out,
                     uint64_t *verified_out);

/* ---- addresses ---- */

/* Write "b3:<64 lowercase hex>" and a NUL to out (68 bytes). */
void sto_addr_format(const uint8_t addr[static STO_ADDR_LEN], char out[static 68]);

/* Parse "b3:<64 hex>" (or bare 64 hex). Returns 0 or RON_EINVAL. */
int sto_addr_parse(const char *s, uint8_t addr_out[static STO_ADDR_LEN]);

#endif
