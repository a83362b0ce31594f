/*
 * test_svc_storage_tree.c - the verified-streaming tree code (sto_tree.h):
 * roots against the real b3sum binary at the edges of chunks, pieces and
 * powers of two; chunking invariance of root and outboard; piece, range,
 * proof and size verification, each with the corruption it must catch. The
 * expected dependency of a piece on an outboard node comes from a reference
 * post-order enumeration written here, not from the code under test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <blake3.h>
#include <cmocka.h>

#include "ron_err.h"
#include "ron_util.h"
#include "sto_tree.h"

#define KIB 1024ull
#define PIECE ((uint64_t)STO_PIECE_LEN)

/* Deterministic content: a byte pattern that differs between pieces. */
static uint8_t *
make_data(size_t len, uint32_t seed)
{
    uint8_t *p = ron_xmalloc(len > 0 ? len : 1);
    uint32_t x = seed * 2654435761u + 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

static void
to_hex(const uint8_t *b, size_t n, char *out)
{
    ron_hex_encode(out, b, n);
}

/* Root printed by /usr/bin/b3sum for these bytes (through a temp file). */
static void
b3sum_hex(const uint8_t *data, size_t len, char hex_out[65])
{
    char path[] = "/tmp/ron-tree-test-XXXXXX", cmd[128], line[160];
    int fd = mkstemp(path);
    FILE *f;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    snprintf(cmd, sizeof cmd, "b3sum --no-names %s", path);
    f = popen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    pclose(f);
    unlink(path);
    memcpy(hex_out, line, 64);
    hex_out[64] = '\0';
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
    size_t calls;
} sink_t;

static int
sink_cb(void *arg, const uint8_t *bytes, size_t len)
{
    sink_t *s = arg;

    assert_true(len > 0 && len <= STO_TREE_OUT_BATCH);
    assert_true(s->len + len <= s->cap);
    memcpy(s->p + s->len, bytes, len);
    s->len += len;
    s->calls++;
    return 0;
}

/* Hash data whole; returns the outboard (caller frees). */
static uint8_t *
hash_whole(const uint8_t *data, size_t len, uint8_t root[32])
{
    uint8_t *ob = ron_xmalloc(sto_tree_outboard_len(len) + 1);

    assert_int_equal(sto_tree_hash(data, len, root, ob), 0);
    return ob;
}

/* ---- sizes ---------------------------------------------------------------- */

static void
test_tree_sizes_follow_piece_count(void **state)
{
    (void)state;
    assert_int_equal(sto_tree_pieces(0), 1);
    assert_int_equal(sto_tree_pieces(1), 1);
    assert_int_equal(sto_tree_pieces(PIECE), 1);
    assert_int_equal(sto_tree_pieces(PIECE + 1), 2);
    assert_int_equal(sto_tree_pieces(UINT64_MAX), (UINT64_MAX >> 16) + 1);
    assert_int_equal(sto_tree_outboard_len(0), 0);
    assert_int_equal(sto_tree_outboard_len(PIECE), 0);
    assert_int_equal(sto_tree_outboard_len(3 * PIECE + 1), 3 * 64);
    assert_int_equal(sto_tree_piece_len(0, 0), 0);
    assert_int_equal(sto_tree_piece_len(3 * PIECE + 7, 2), PIECE);
    assert_int_equal(sto_tree_piece_len(3 * PIECE + 7, 3), 7);
    assert_int_equal(sto_tree_piece_len(3 * PIECE + 7, 4), 0);
    assert_int_equal(sto_tree_proof_len(PIECE, 0), 0);
    /* 5 pieces: ((0 1)(2 3)) 4 -> pieces 0..3 at depth 3, piece 4 at depth 1. */
    assert_int_equal(sto_tree_proof_len(5 * PIECE, 0), 3 * 32);
    assert_int_equal(sto_tree_proof_len(5 * PIECE, 4), 32);
    assert_int_equal(sto_tree_proof_len(5 * PIECE, 5), 0);
    assert_true(sto_tree_proof_len(UINT64_MAX, 0) <= STO_TREE_MAX_PROOF);
    assert_int_equal(sto_tree_proof_len(UINT64_MAX, 0), 48 * 32);
}

/* ---- roots equal b3sum ------------------------------------------------------ */

static void
check_root_against_b3sum(size_t len)
{
    uint8_t *data = make_data(len, (uint32_t)len), root[32], *ob;
    char want[65], got[65];

    ob = hash_whole(data, len, root);
    b3sum_hex(data, len, want);
    to_hex(root, 32, got);
    if (strcmp(want, got) != 0)
        fail_msg("size %zu: b3sum %s, sto_tree %s", len, want, got);
    /* Every piece verifies against that root with the outboard. */
    for (uint64_t i = 0; i < sto_tree_pieces(len); i++)
        assert_int_equal(sto_tree_piece_verify(root, len, ob, sto_tree_outboard_len(len), i,
                                               data + i * PIECE, sto_tree_piece_len(len, i)),
                         0);
    free(ob);
    free(data);
}

static void
test_tree_root_equals_b3sum_at_chunk_and_piece_edges(void **state)
{
    static const size_t sizes[] = {0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049,
                                   65535, 65536, 65537, 3 * 65536 + 1024 + 1};

    (void)state;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        check_root_against_b3sum(sizes[i]);
}

static void
test_tree_root_equals_b3sum_at_powers_of_two_pieces(void **state)
{
    (void)state;
    for (unsigned k = 1; k <= 6; k++) {
        size_t base = (size_t)(PIECE << k);

        check_root_against_b3sum(base - 1);
        check_root_against_b3sum(base);
        check_root_against_b3sum(base + 1);
    }
    check_root_against_b3sum(5 * 1024 * 1024 + 12345); /* several MiB, 81 pieces */
}

/* The public BLAKE3 hasher agrees at every size of a dense sweep over the
 * first pieces (cheap, so many sizes). */
static void
test_tree_root_equals_blake3_library_on_size_sweep(void **state)
{
    size_t max = 9 * PIECE + 3000;
    uint8_t *data = make_data(max, 7), root[32], want[32];
    blake3_hasher b;

    (void)state;
    for (size_t len = 0; len <= max; len += (len < 4096 ? 61 : 7919)) {
        blake3_hasher_init(&b);
        blake3_hasher_update(&b, data, len);
        blake3_hasher_finalize(&b, want, 32);
        assert_int_equal(sto_tree_hash(data, len, root, NULL), 0);
        if (memcmp(root, want, 32) != 0)
            fail_msg("size %zu differs from blake3_hasher", len);
    }
    free(data);
}

/* ---- chunking invariance ------------------------------------------------------ */

static void
test_tree_any_chunking_gives_same_root_and_outboard(void **state)
{
    static const size_t lens[] = {0, 1000, PIECE, 8 * PIECE, 8 * PIECE + 1, 17 * PIECE + 4321,
                                  33 * PIECE};
    uint32_t x = 12345;

    (void)state;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t len = lens[li], oblen = sto_tree_outboard_len(len);
        uint8_t *data = make_data(len, 99), root[32], *ob = hash_whole(data, len, root);

        for (int round = 0; round < 6; round++) {
            sink_t s = {ron_xmalloc(oblen + 1), 0, oblen, 0};
            sto_tree_hasher_t *h = sto_tree_hasher_new(sink_cb, &s);
            uint8_t r2[32];
            uint64_t size = 0;
            size_t off = 0;

            while (off < len) {
                size_t step;

                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                /* Mix byte-sized, odd, piece-sized and multi-batch steps. */
                switch (round) {
                case 0: step = 1 + x % 97; break;
                case 1: step = 1 + x % 70000; break;
                case 2: step = PIECE; break;
                case 3: step = 1 + x % (1200 * 1024); break;
                case 4: step = 4096; break;
                default: step = len; break;
                }
                if (step > len - off)
                    step = len - off;
                assert_int_equal(sto_tree_hasher_update(h, data + off, step), 0);
                off += step;
                if (round == 0 && off > 300000)
                    round = 1;          /* keep the byte-sized round short */
            }
            assert_int_equal(sto_tree_hasher_size(h), len);
            assert_int_equal(sto_tree_hasher_finish(h, r2, &size), 0);
            assert_int_equal(size, len);
            assert_memory_equal(r2, root, 32);
            assert_int_equal(s.len, oblen);
            if (oblen > 0)
                assert_memory_equal(s.p, ob, oblen);
            /* Reset reuses the hasher for a new object. */
            sto_tree_hasher_reset(h);
            s.len = 0;
            assert_int_equal(sto_tree_hasher_update(h, data, len), 0);
            assert_int_equal(sto_tree_hasher_finish(h, r2, NULL), 0);
            assert_memory_equal(r2, root, 32);
            sto_tree_hasher_free(h);
            free(s.p);
        }
        free(ob);
        free(data);
    }
}

static int
failing_cb(void *arg, const uint8_t *bytes, size_t len)
{
    (void)bytes;
    (void)len;
    return ++*(int *)arg >= 1 ? -28 : 0;  /* -ENOSPC */
}

static void
test_tree_output_callback_error_stops_the_hasher(void **state)
{
    int calls = 0;
    sto_tree_hasher_t *h = sto_tree_hasher_new(failing_cb, &calls);
    uint8_t *data = make_data(200 * PIECE, 3), root[32];

    (void)state;
    /* 200 pieces -> 199 nodes, more than one 4 KiB batch of 64 nodes. */
    assert_int_equal(sto_tree_hasher_update(h, data, 200 * PIECE), -28);
    assert_int_equal(sto_tree_hasher_update(h, data, 1), -28);
    assert_int_equal(sto_tree_hasher_finish(h, root, NULL), -28);
    assert_int_equal(calls, 1);
    sto_tree_hasher_reset(h);
    calls = -100;
    assert_int_equal(sto_tree_hasher_update(h, data, 3 * PIECE), 0);
    assert_int_equal(sto_tree_hasher_finish(h, root, NULL), 0);
    sto_tree_hasher_free(h);
    sto_tree_hasher_free(NULL);
    free(data);
}

/* ---- corruption ------------------------------------------------------------- */

/* Reference post-order: node k covers pieces [a, a + w), left part [a, a + l). */
typedef struct {
    uint64_t a, w, l;
} ref_node_t;

static size_t
ref_postorder(uint64_t a, uint64_t w, ref_node_t *out, size_t k)
{
    uint64_t l = 1;

    if (w == 1)
        return k;
    while (l * 2 < w)
        l *= 2;                         /* largest power of two below w */
    k = ref_postorder(a, l, out, k);
    k = ref_postorder(a + l, w - l, out, k);
    out[k].a = a;
    out[k].w = w;
    out[k].l = l;
    return k + 1;
}

static void
test_tree_flipped_object_byte_fails_exactly_its_piece(void **state)
{
    size_t len = 13 * PIECE + 5000, oblen = sto_tree_outboard_len(len);
    uint8_t *data = make_data(len, 5), root[32], *ob = hash_whole(data, len, root);
    size_t where[] = {0, PIECE - 1, PIECE, 6 * PIECE + 777, 12 * PIECE + 65535, 13 * PIECE,
                      len - 1};
    uint64_t n = sto_tree_pieces(len);

    (void)state;
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        data[where[w]] ^= 0x01;
        for (uint64_t i = 0; i < n; i++) {
            int rc = sto_tree_piece_verify(root, len, ob, oblen, i, data + i * PIECE,
                                           sto_tree_piece_len(len, i));

            assert_int_equal(rc, i == where[w] / PIECE ? RON_EDIGEST : 0);
        }
        data[where[w]] ^= 0x01;
    }
    free(ob);
    free(data);
}

static void
test_tree_flipped_outboard_byte_fails_exactly_dependent_pieces(void **state)
{
    size_t len = 13 * PIECE + 5000, oblen = sto_tree_outboard_len(len);
    uint8_t *data = make_data(len, 6), root[32], *ob = hash_whole(data, len, root);
    uint64_t n = sto_tree_pieces(len);
    ref_node_t nodes[16];

    (void)state;
    assert_int_equal(ref_postorder(0, n, nodes, 0), n - 1);
    for (size_t k = 0; k < n - 1; k++) {
        for (int half = 0; half < 2; half++) {
            size_t off = k * 64 + (size_t)half * 32 + (k * 7 + (size_t)half * 13) % 32;
            /* The left half is the CV of [a, a+l): pieces in the right part use it. */
            uint64_t lo = half == 0 ? nodes[k].a + nodes[k].l : nodes[k].a;
            uint64_t hi = half == 0 ? nodes[k].a + nodes[k].w : nodes[k].a + nodes[k].l;

            ob[off] ^= 0x80;
            for (uint64_t i = 0; i < n; i++) {
                int rc = sto_tree_piece_verify(root, len, ob, oblen, i, data + i * PIECE,
                                               sto_tree_piece_len(len, i));

                if (rc != (i >= lo && i < hi ? RON_EDIGEST : 0))
                    fail_msg("node %zu half %d piece %llu: rc %d", k, half,
                             (unsigned long long)i, rc);
            }
            ob[off] ^= 0x80;
        }
    }
    /* An outboard of the wrong length is refused outright. */
    assert_int_equal(sto_tree_piece_verify(root, len, ob, oblen - 1, 0, data, PIECE),
                     RON_EDIGEST);
    free(ob);
    free(data);
}

typedef struct {
    const uint8_t *p;
    size_t len;
    size_t reads;
} reader_t;

/* Outboard reader; past its end it reads zeros (what a forger might send). */
static int
reader_fn(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
    reader_t *r = arg;

    r->reads++;
    for (size_t i = 0; i < len; i++)
        buf[i] = off + i < r->len ? r->p[off + i] : 0;
    return 0;
}

static void
test_tree_range_verify_reports_first_bad_piece(void **state)
{
    size_t len = 21 * PIECE + 99, oblen = sto_tree_outboard_len(len);
    uint8_t *data = make_data(len, 8), root[32], *ob = hash_whole(data, len, root);
    reader_t r = {ob, oblen, 0};
    uint64_t bad = 0;

    (void)state;
    assert_int_equal(sto_tree_range_verify_fn(root, len, reader_fn, &r, 0, data, len, &bad), 0);
    /* Neighbours share their upper siblings: far fewer reads than 22 paths. */
    assert_true(r.reads <= 2 * sto_tree_pieces(len) + 5);
    assert_int_equal(sto_tree_range_verify_fn(root, len, reader_fn, &r, 3, data + 3 * PIECE,
                                              10 * PIECE, &bad), 0);
    assert_int_equal(sto_tree_range_verify_fn(root, len, reader_fn, &r, 20, data + 20 * PIECE,
                                              PIECE + 99, &bad), 0);
    data[11 * PIECE + 5] ^= 4;
    data[15 * PIECE + 5] ^= 4;
    assert_int_equal(sto_tree_range_verify_fn(root, len, reader_fn, &r, 2, data + 2 * PIECE,
                                              len - 2 * PIECE, &bad), RON_EDIGEST);
    assert_int_equal(bad, 11);
    /* Ranges that do not end on a piece boundary are refused. */
    assert_int_equal(sto_tree_range_verify_fn(root, len, reader_fn, &r, 0, data, PIECE + 1, &bad),
                     RON_EINVAL);
    assert_int_equal(sto_tree_range_verify_fn(root, len, reader_fn, &r, 22, data, PIECE, &bad),
                     RON_EINVAL);
    free(ob);
    free(data);
}

/* ---- size ------------------------------------------------------------------- */

static int
claim_size(const uint8_t root[32], const uint8_t *data, size_t real_len, const uint8_t *ob,
           size_t oblen, uint64_t claimed)
{
    uint64_t last = sto_tree_pieces(claimed) - 1;
    size_t plen = sto_tree_piece_len(claimed, last), have;
    uint8_t *piece = ron_xcalloc(1, plen + 1), proof[STO_TREE_MAX_PROOF];
    reader_t r = {ob, oblen, 0};
    size_t proof_len;
    int rc;

    have = last * PIECE < real_len ? real_len - last * PIECE : 0;
    memcpy(piece, data + (have ? last * PIECE : 0), have < plen ? have : plen);
    assert_int_equal(sto_tree_proof_extract(claimed, last, reader_fn, &r, proof, sizeof proof,
                                            &proof_len), 0);
    rc = sto_tree_size_verify(root, claimed, piece, plen, proof, proof_len);
    free(piece);
    return rc;
}

static void
test_tree_claimed_size_that_disagrees_with_tree_is_rejected(void **state)
{
    static const uint64_t lens[] = {0, 1, 1024, 65536, 65537, 5 * PIECE, 5 * PIECE + 3000};

    (void)state;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint64_t len = lens[li];
        uint8_t *data = make_data(len + 2 * PIECE, 11), root[32];
        uint8_t *ob = hash_whole(data, len, root);
        size_t oblen = sto_tree_outboard_len(len);
        const int64_t deltas[] = {-(int64_t)PIECE - 1, -(int64_t)PIECE, -1025, -1, 1, 1024,
                                  (int64_t)PIECE, (int64_t)PIECE + 1};

        assert_int_equal(claim_size(root, data, len, ob, oblen, len), 0);
        for (size_t d = 0; d < sizeof deltas / sizeof deltas[0]; d++) {
            if (deltas[d] < 0 && (uint64_t)-deltas[d] > len)
                continue;
            if (claim_size(root, data, len, ob, oblen, len + (uint64_t)deltas[d]) != RON_EDIGEST)
                fail_msg("size %llu accepted as %lld", (unsigned long long)len,
                         (long long)(len + (uint64_t)deltas[d]));
        }
        free(ob);
        free(data);
    }
}

/* Why the last piece goes first: a middle piece proves nothing about the size.
 * Piece 0 of a 5-piece object also verifies under a 6-piece claim, with a
 * proof whose top sibling is piece 4's CV standing for the subtree [4, 6). */
static void
test_tree_middle_piece_does_not_bind_size(void **state)
{
    uint64_t len = 5 * PIECE, claimed = 6 * PIECE;
    uint8_t *data = make_data(len, 12), root[32], *ob = hash_whole(data, len, root);
    uint8_t proof[STO_TREE_MAX_PROOF];
    size_t proof_len;

    (void)state;
    assert_int_equal(sto_tree_proof_extract_buf(len, 0, ob, sto_tree_outboard_len(len), proof,
                                                sizeof proof, &proof_len), 0);
    assert_int_equal(proof_len, 3 * 32);
    assert_int_equal(sto_tree_proof_len(claimed, 0), 3 * 32);
    assert_int_equal(sto_tree_proof_verify(root, claimed, 0, data, PIECE, proof, proof_len), 0);
    /* ...but the last piece under the false claim cannot be made to verify. */
    assert_int_equal(claim_size(root, data, len, ob, sto_tree_outboard_len(len), claimed),
                     RON_EDIGEST);
    free(ob);
    free(data);
}

/* ---- proofs ----------------------------------------------------------------- */

static void
test_tree_proofs_verify_and_corrupted_proofs_fail(void **state)
{
    size_t len = 37 * PIECE + 123, oblen = sto_tree_outboard_len(len);
    uint8_t *data = make_data(len, 13), root[32], *ob = hash_whole(data, len, root);
    uint64_t n = sto_tree_pieces(len);
    uint8_t proof[STO_TREE_MAX_PROOF];
    size_t proof_len, plen;

    (void)state;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *piece = data + i * PIECE;

        plen = sto_tree_piece_len(len, i);
        assert_int_equal(sto_tree_proof_extract_buf(len, i, ob, oblen, proof, sizeof proof,
                                                    &proof_len), 0);
        assert_int_equal(proof_len, sto_tree_proof_len(len, i));
        assert_int_equal(sto_tree_proof_verify(root, len, i, piece, plen, proof, proof_len), 0);
        /* Every byte of the proof matters. */
        for (size_t b = 0; b < proof_len; b += 5) {
            proof[b] ^= 0x10;
            assert_int_equal(sto_tree_proof_verify(root, len, i, piece, plen, proof, proof_len),
                             RON_EDIGEST);
            proof[b] ^= 0x10;
        }
        /* Wrong length, wrong index, wrong root. */
        assert_int_equal(sto_tree_proof_verify(root, len, i, piece, plen, proof, proof_len - 32),
                         RON_EPROTO);
        if (i + 1 < n && sto_tree_proof_len(len, i + 1) == proof_len &&
            sto_tree_piece_len(len, i + 1) == plen)
            assert_int_equal(sto_tree_proof_verify(root, len, i + 1, piece, plen, proof,
                                                   proof_len), RON_EDIGEST);
        root[31] ^= 1;
        assert_int_equal(sto_tree_proof_verify(root, len, i, piece, plen, proof, proof_len),
                         RON_EDIGEST);
        root[31] ^= 1;
    }
    assert_int_equal(sto_tree_proof_verify(root, len, n, data, 0, proof, 0), RON_EINVAL);
    assert_int_equal(sto_tree_proof_extract_buf(len, 0, ob, oblen, proof, 32, &proof_len),
                     RON_EINVAL);
    free(ob);
    free(data);
}

/* The CV a proof check hands out, fed back with the piece, gives the same
 * root and outboard as hashing every byte; a wrong CV changes the root. */
static void
test_tree_verified_piece_cvs_build_same_root_and_outboard(void **state)
{
    static const size_t lens[] = {PIECE, 2 * PIECE, 9 * PIECE, 17 * PIECE + 4321, 33 * PIECE};

    (void)state;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t len = lens[li], oblen = sto_tree_outboard_len(len);
        uint8_t *data = make_data(len, 77), root[32], *ob = hash_whole(data, len, root);
        uint64_t n = sto_tree_pieces(len);

        for (int corrupt = 0; corrupt < 2; corrupt++) {
            sink_t s = {ron_xmalloc(oblen + 1), 0, oblen, 0};
            sto_tree_hasher_t *h = sto_tree_hasher_new(sink_cb, &s);
            uint8_t r2[32], proof[STO_TREE_MAX_PROOF], cv[32];
            size_t proof_len, plen;

            for (uint64_t i = 0; i < n; i++) {
                plen = sto_tree_piece_len(len, i);
                assert_int_equal(sto_tree_proof_extract_buf(len, i, ob, oblen, proof,
                                                            sizeof proof, &proof_len), 0);
                memset(cv, 0xee, sizeof cv);
                assert_int_equal(sto_tree_proof_verify_cv(root, len, i, data + i * PIECE, plen,
                                                          proof, proof_len, cv), 0);
                if (corrupt && i == n / 2 && i > 0)
                    cv[7] ^= 1; /* a CV that is not the one the check computed */
                assert_int_equal(sto_tree_hasher_update_piece(h, data + i * PIECE, plen, cv), 0);
            }
            assert_int_equal(sto_tree_hasher_size(h), len);
            assert_int_equal(sto_tree_hasher_finish(h, r2, NULL), 0);
            if (corrupt && n > 1) {
                assert_memory_not_equal(r2, root, 32);
            } else {
                assert_memory_equal(r2, root, 32);
                assert_int_equal(s.len, oblen);
                if (oblen > 0)
                    assert_memory_equal(s.p, ob, oblen);
            }
            sto_tree_hasher_free(h);
            free(s.p);
        }
        free(ob);
        free(data);
    }
}

/* A failed check hands out no CV, and the fast path for full pieces agrees
 * with sto_tree_proof_verify on damaged bytes. */
static void
test_tree_verify_cv_leaves_cv_untouched_on_failure(void **state)
{
    size_t len = 5 * PIECE + 7, oblen = sto_tree_outboard_len(len);
    uint8_t *data = make_data(len, 5), root[32], *ob = hash_whole(data, len, root);
    uint8_t proof[STO_TREE_MAX_PROOF], cv[32], untouched[32];
    size_t proof_len;

    (void)state;
    memset(untouched, 0x5a, sizeof untouched);
    assert_int_equal(sto_tree_proof_extract_buf(len, 2, ob, oblen, proof, sizeof proof,
                                                &proof_len), 0);
    data[2 * PIECE + 1000] ^= 4;
    memcpy(cv, untouched, sizeof cv);
    assert_int_equal(sto_tree_proof_verify_cv(root, len, 2, data + 2 * PIECE, PIECE, proof,
                                              proof_len, cv), RON_EDIGEST);
    assert_memory_equal(cv, untouched, 32);
    assert_int_equal(sto_tree_proof_verify(root, len, 2, data + 2 * PIECE, PIECE, proof,
                                           proof_len), RON_EDIGEST);
    data[2 * PIECE + 1000] ^= 4;
    assert_int_equal(sto_tree_proof_verify_cv(root, len, 2, data + 2 * PIECE, PIECE, proof,
                                              proof_len, cv), 0);
    assert_memory_not_equal(cv, untouched, 32);
    free(ob);
    free(data);
}

static void
test_tree_single_piece_objects_verify_without_proof(void **state)
{
    static const size_t lens[] = {0, 1, 1024, 1025, PIECE};

    (void)state;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint8_t *data = make_data(lens[li], 21), root[32], *ob = hash_whole(data, lens[li], root);

        assert_int_equal(sto_tree_proof_verify(root, lens[li], 0, data, lens[li], NULL, 0), 0);
        assert_int_equal(sto_tree_piece_verify(root, lens[li], ob, 0, 0, data, lens[li]), 0);
        if (lens[li] > 0) {
            data[lens[li] / 2] ^= 1;
            assert_int_equal(sto_tree_proof_verify(root, lens[li], 0, data, lens[li], NULL, 0),
                             RON_EDIGEST);
        }
        free(ob);
        free(data);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_sizes_follow_piece_count),
        cmocka_unit_test(test_tree_root_equals_b3sum_at_chunk_and_piece_edges),
        cmocka_unit_test(test_tree_root_equals_b3sum_at_powers_of_two_pieces),
        cmocka_unit_test(test_tree_root_equals_blake3_library_on_size_sweep),
        cmocka_unit_test(test_tree_any_chunking_gives_same_root_and_outboard),
        cmocka_unit_test(test_tree_output_callback_error_stops_the_hasher),
        cmocka_unit_test(test_tree_flipped_object_byte_fails_exactly_its_piece),
        cmocka_unit_test(test_tree_flipped_outboard_byte_fails_exactly_dependent_pieces),
        cmocka_unit_test(test_tree_range_verify_reports_first_bad_piece),
        cmocka_unit_test(test_tree_claimed_size_that_disagrees_with_tree_is_rejected),
        cmocka_unit_test(test_tree_middle_piece_does_not_bind_size),
        cmocka_unit_test(test_tree_proofs_verify_and_corrupted_proofs_fail),
        cmocka_unit_test(test_tree_single_piece_objects_verify_without_proof),
        cmocka_unit_test(test_tree_verified_piece_cvs_build_same_root_and_outboard),
        cmocka_unit_test(test_tree_verify_cv_leaves_cv_untouched_on_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
