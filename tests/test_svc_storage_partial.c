/*
 * test_svc_storage_partial.c - partial objects (sto_partial.c) in the file
 * store and the RAM store: pieces verified on the way in and again on the
 * way out, served before the object is whole, kept across a reopen,
 * completed into a normal cache object, evicted by GC, and left usable or
 * absent (never complete with unverified bytes) by kill -9 at any moment.
 * Real store in a temporary directory; the crash test forks writer children
 * and kills them with SIGKILL.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ron_err.h"
#include "svc_storage.h"

typedef struct {
    uint8_t *data;
    size_t len;
    uint8_t root[STO_ADDR_LEN];
    uint8_t *ob;
} obj_t;

static void
obj_make(obj_t *o, size_t len, uint32_t seed)
{
    o->len = len;
    o->data = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        o->data[i] = (uint8_t)(seed >> 16);
    }
    o->ob = malloc(sto_tree_outboard_len(len) + 1);
    assert_int_equal(sto_tree_hash(o->data, len, o->root, o->ob), 0);
}

static void
obj_free(obj_t *o)
{
    free(o->data);
    free(o->ob);
}

static size_t
obj_proof(const obj_t *o, uint64_t piece, uint8_t proof[STO_TREE_MAX_PROOF])
{
    size_t n = 0;
    assert_int_equal(sto_tree_proof_extract_buf(o->len, piece, o->ob, sto_tree_outboard_len(o->len),
                                                proof, STO_TREE_MAX_PROOF, &n),
                     0);
    return n;
}

static const uint8_t *
obj_piece(const obj_t *o, uint64_t piece, size_t *len_out)
{
    *len_out = sto_tree_piece_len(o->len, piece);
    return o->data + piece * STO_PIECE_LEN;
}

static int
piece_add(sto_partial_t *p, const obj_t *o, uint64_t piece)
{
    uint8_t proof[STO_TREE_MAX_PROOF];
    size_t plen = obj_proof(o, piece, proof), len;
    const uint8_t *b = obj_piece(o, piece, &len);
    return sto_partial_piece_add(p, piece, b, len, proof, plen);
}

static int
partial_create(sto_store_t *s, const obj_t *o, sto_partial_t **p)
{
    uint8_t proof[STO_TREE_MAX_PROOF];
    uint64_t last = sto_tree_pieces(o->len) - 1;
    size_t plen = obj_proof(o, last, proof), len;
    const uint8_t *b = obj_piece(o, last, &len);
    return sto_partial_create(s, o->root, o->len, b, len, proof, plen, p);
}

static char *
tmpdir_new(void)
{
    char *d = strdup("/tmp/ron-partial-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void
rm_rf(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

static sto_store_t *
store_open(const char *dir, uint64_t quota)
{
    sto_config_t cfg = {.dir = dir, .quota = quota};
    sto_store_t *s = NULL;
    assert_int_equal(sto_open(&cfg, &s), 0);
    return s;
}

/* ---- the same behaviour in both stores ---- */

static void
check_lifecycle(sto_store_t *s)
{
    obj_t o;
    sto_partial_t *p = NULL, *p2 = NULL;
    sto_reader_t *r = NULL;
    sto_stat_t st;
    sto_totals_t t;
    uint8_t *buf = malloc(6 * STO_PIECE_LEN);
    uint64_t size, verified;
    uint64_t n;

    obj_make(&o, 5 * STO_PIECE_LEN + 1000, 7); /* 6 pieces, the last short */
    n = sto_tree_pieces(o.len);
    assert_int_equal(sto_partial_open(s, o.root, &p), RON_ENOTFOUND);
    assert_int_equal(partial_create(s, &o, &p), 0);
    assert_int_equal(sto_partial_size(p), o.len);
    assert_true(sto_partial_piece_has(p, n - 1));
    assert_int_equal(sto_partial_verified(p), 1000);
    /* a second handle is the same object */
    assert_int_equal(sto_partial_open(s, o.root, &p2), 0);
    assert_true(sto_partial_piece_has(p2, n - 1));
    sto_partial_close(p2);

    assert_int_equal(piece_add(p, &o, 2), 0);
    assert_int_equal(piece_add(p, &o, 2), 1); /* already present */
    assert_int_equal(piece_add(p, &o, 0), 0);
    /* present ranges are served before the object is whole, verified */
    assert_int_equal(sto_partial_read(p, 10, buf, 100), 100);
    assert_memory_equal(buf, o.data + 10, 100);
    assert_int_equal(sto_partial_read(p, 2 * STO_PIECE_LEN, buf, STO_PIECE_LEN), STO_PIECE_LEN);
    assert_memory_equal(buf, o.data + 2 * STO_PIECE_LEN, STO_PIECE_LEN);
    assert_int_equal(sto_partial_read(p, o.len - 1000, buf, 5000), 1000);
    assert_memory_equal(buf, o.data + o.len - 1000, 1000);
    /* a range touching an absent piece: fetch first */
    assert_int_equal(sto_partial_read(p, STO_PIECE_LEN - 1, buf, 2), RON_EAGAIN);
    assert_int_equal(sto_partial_read(p, o.len, buf, 10), 0);
    assert_int_equal(sto_partial_stat(s, o.root, &size, &verified), 0);
    assert_int_equal(size, o.len);
    assert_int_equal(verified, 2 * STO_PIECE_LEN + 1000);
    assert_int_equal(sto_partial_complete(p), RON_EAGAIN);
    /* not a stored object yet */
    assert_int_equal(sto_has(s, o.root), 0);
    assert_int_equal(sto_totals(s, &t), 0);
    assert_int_equal(t.partial_bytes, o.len);

    for (uint64_t i = 0; i < n; i++)
        assert_true(piece_add(p, &o, i) >= 0);
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    /* now a normal cache object */
    assert_int_equal(sto_stat(s, o.root, &st), 0);
    assert_int_equal(st.state, STO_STATE_CACHE);
    assert_int_equal(st.pins, 0);
    assert_int_equal(st.size, o.len);
    assert_int_equal(sto_reader_open(s, o.root, &r), 0);
    assert_int_equal(sto_reader_read(r, 0, buf, 6 * STO_PIECE_LEN), (ssize_t)o.len);
    assert_memory_equal(buf, o.data, o.len);
    sto_reader_close(r);
    assert_int_equal(sto_partial_open(s, o.root, &p), RON_ENOTFOUND);
    assert_int_equal(sto_totals(s, &t), 0);
    assert_int_equal(t.partial_bytes, 0);
    /* creating it again: the whole object is there */
    assert_int_equal(partial_create(s, &o, &p), -EEXIST);
    free(buf);
    obj_free(&o);
}

static void
check_bad_pieces(sto_store_t *s)
{
    obj_t o, other;
    sto_partial_t *p = NULL;
    uint8_t proof[STO_TREE_MAX_PROOF], *bad = malloc(STO_PIECE_LEN);
    size_t plen, len;
    const uint8_t *b;
    sto_totals_t t;

    obj_make(&o, 4 * STO_PIECE_LEN, 11);
    obj_make(&other, 4 * STO_PIECE_LEN, 12);
    /* a lie about the size or a last piece of another object: nothing is created */
    plen = obj_proof(&o, 3, proof);
    b = obj_piece(&o, 3, &len);
    assert_int_equal(sto_partial_create(s, o.root, o.len + STO_PIECE_LEN, b, len, proof, plen, &p),
                     RON_EPROTO);
    assert_int_equal(sto_partial_create(s, o.root, o.len - 1, b, len - 1, proof, plen, &p),
                     RON_EDIGEST);
    plen = obj_proof(&other, 3, proof);
    b = obj_piece(&other, 3, &len);
    assert_int_equal(sto_partial_create(s, o.root, o.len, b, len, proof, plen, &p), RON_EDIGEST);
    assert_int_equal(sto_partial_open(s, o.root, &p), RON_ENOTFOUND);
    assert_int_equal(sto_totals(s, &t), 0);
    assert_int_equal(t.partial_bytes, 0);

    assert_int_equal(partial_create(s, &o, &p), 0);
    /* a flipped byte, a proof of another piece, a short piece, a bad index */
    plen = obj_proof(&o, 1, proof);
    b = obj_piece(&o, 1, &len);
    memcpy(bad, b, len);
    bad[100] ^= 1;
    assert_int_equal(sto_partial_piece_add(p, 1, bad, len, proof, plen), RON_EDIGEST);
    plen = obj_proof(&o, 0, proof);
    assert_int_equal(sto_partial_piece_add(p, 1, b, len, proof, plen), RON_EDIGEST);
    assert_int_equal(sto_partial_piece_add(p, 1, b, len - 1, proof, plen), RON_EDIGEST);
    assert_int_equal(sto_partial_piece_add(p, 1, b, len, proof, plen - 32), RON_EPROTO);
    assert_int_equal(sto_partial_piece_add(p, 9, b, len, proof, plen), RON_EINVAL);
    assert_false(sto_partial_piece_has(p, 1));
    assert_int_equal(sto_partial_verified(p), STO_PIECE_LEN);
    sto_partial_close(p);
    free(bad);
    obj_free(&o);
    obj_free(&other);
}

static void
check_tiny_objects(sto_store_t *s)
{
    obj_t e, one;
    sto_partial_t *p = NULL;
    sto_reader_t *r = NULL;
    uint8_t buf[64];

    obj_make(&e, 0, 1);
    assert_int_equal(partial_create(s, &e, &p), 0);
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    assert_int_equal(sto_reader_open(s, e.root, &r), 0);
    assert_int_equal(sto_reader_size(r), 0);
    sto_reader_close(r);
    obj_make(&one, 33, 2);
    assert_int_equal(partial_create(s, &one, &p), 0);
    assert_int_equal(sto_partial_read(p, 0, buf, sizeof buf), 33);
    assert_memory_equal(buf, one.data, 33);
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    assert_int_equal(sto_has(s, one.root), 1);
    obj_free(&e);
    obj_free(&one);
}

static uint8_t evicted[8][STO_ADDR_LEN];
static int n_evicted;

static void
on_evict(void *arg, const uint8_t addr[STO_ADDR_LEN])
{
    (void)arg;
    if (n_evicted < 8)
        memcpy(evicted[n_evicted], addr, STO_ADDR_LEN);
    n_evicted++;
}

static void
check_gc(sto_store_t *s)
{
    obj_t a, b, c;
    sto_partial_t *pa = NULL, *pb = NULL, *pc = NULL;
    uint8_t addr[STO_ADDR_LEN];
    uint64_t freed = 0;
    sto_totals_t t;

    obj_make(&a, 3 * STO_PIECE_LEN, 21);
    obj_make(&b, 3 * STO_PIECE_LEN, 22);
    obj_make(&c, 2 * STO_PIECE_LEN, 23);
    assert_int_equal(sto_gc(s, 0, &freed), 0); /* what earlier checks left */
    sto_evict_hook_set(s, on_evict, NULL);
    n_evicted = 0;
    assert_int_equal(partial_create(s, &a, &pa), 0);
    assert_int_equal(partial_create(s, &b, &pb), 0);
    sto_partial_close(pa); /* idle: evictable */
    /* a pinned object and a cache object */
    uint8_t tenant[STO_TENANT_LEN] = {1};
    assert_int_equal(sto_put_buf(s, tenant, c.data, c.len, NULL, addr), 0);
    assert_int_equal(sto_put_buf(s, NULL, a.data, 100, NULL, addr), 0);
    assert_int_equal(sto_gc(s, 0, &freed), 0);
    /* the idle partial and the cache object went; the open partial and the pin stay */
    assert_int_equal(freed, a.len + 100);
    assert_int_equal(sto_partial_open(s, a.root, &pa), RON_ENOTFOUND);
    assert_true(sto_partial_piece_has(pb, 2));
    assert_int_equal(sto_has(s, c.root), 1);
    assert_int_equal(sto_has(s, addr), 0);
    /* the hook heard of the evicted object (not of partials: never announced) */
    assert_int_equal(n_evicted, 1);
    assert_memory_equal(evicted[0], addr, STO_ADDR_LEN);
    assert_int_equal(sto_totals(s, &t), 0);
    assert_int_equal(t.partial_bytes, b.len);
    sto_partial_close(pb);
    /* a RAM partial idles in memory; a file one on disk: both evictable now */
    assert_int_equal(sto_gc(s, 0, &freed), 0);
    assert_int_equal(freed, b.len);
    assert_int_equal(sto_partial_open(s, b.root, &pc), RON_ENOTFOUND);
    sto_evict_hook_set(s, NULL, NULL);
    obj_free(&a);
    obj_free(&b);
    obj_free(&c);
}

/* Pieces added with the chaining value the overlay's check computed
 * (sto_partial_piece_add_cv, the bus path of a fetch): the cv is folded up
 * the proof to the address, so a wrong cv (or a proof that does not lead
 * to the address) is refused and the piece stays absent; with every piece
 * in, the object completes and reads back equal through the verified reader. */
static void
check_cv_adds(sto_store_t *s)
{
    obj_t o;
    sto_partial_t *p = NULL;
    uint8_t proof[STO_TREE_MAX_PROOF], cv[STO_TREE_HASH_LEN];
    uint64_t n;

    obj_make(&o, 5 * STO_PIECE_LEN + 99, 77);
    n = sto_tree_pieces(o.len);
    assert_int_equal(partial_create(s, &o, &p), 0);
    for (uint64_t i = 0; i + 1 < n; i++) {
        size_t plen = obj_proof(&o, i, proof), len;
        const uint8_t *b = obj_piece(&o, i, &len);
        assert_int_equal(sto_tree_proof_verify_cv(o.root, o.len, i, b, len, proof, plen, cv), 0);
        if (i == 2) {
            uint8_t bad[STO_TREE_HASH_LEN];
            memcpy(bad, cv, sizeof bad);
            bad[5] ^= 0x40;
            assert_int_equal(sto_partial_piece_add_cv(p, i, b, len, bad, proof, plen), RON_EDIGEST);
            assert_false(sto_partial_piece_has(p, i));
            proof[0] ^= 1; /* the right cv with a proof that leads elsewhere */
            assert_int_equal(sto_partial_piece_add_cv(p, i, b, len, cv, proof, plen), RON_EDIGEST);
            assert_false(sto_partial_piece_has(p, i));
            proof[0] ^= 1;
        }
        assert_int_equal(sto_partial_piece_add_cv(p, i, b, len, cv, proof, plen), 0);
        assert_true(sto_partial_piece_has(p, i));
    }
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    {
        sto_reader_t *r = NULL;
        uint8_t *back = malloc(o.len);
        assert_int_equal(sto_reader_open(s, o.root, &r), 0);
        assert_int_equal(sto_reader_read(r, 0, back, o.len), (ssize_t)o.len);
        assert_memory_equal(back, o.data, o.len);
        sto_reader_close(r);
        free(back);
    }
    obj_free(&o);
}

static void
test_pieces_added_with_the_overlays_cv_are_folded_to_the_address(void **state)
{
    char *d = tmpdir_new();
    sto_store_t *ram = store_open(NULL, 0), *file = store_open(d, 0);

    (void)state;
    check_cv_adds(ram);
    check_cv_adds(file);
    sto_close(ram);
    sto_close(file);
    rm_rf(d);
    free(d);
}

static void
test_ram_partial_lifecycle(void **state)
{
    sto_store_t *s = store_open(NULL, 0);
    (void)state;
    check_lifecycle(s);
    check_bad_pieces(s);
    check_tiny_objects(s);
    check_gc(s);
    sto_close(s);
}

static void
test_file_partial_lifecycle(void **state)
{
    char *d = tmpdir_new();
    sto_store_t *s = store_open(d, 0);
    (void)state;
    check_lifecycle(s);
    check_bad_pieces(s);
    check_tiny_objects(s);
    check_gc(s);
    sto_close(s);
    rm_rf(d);
    free(d);
}

/* in[k] for piece i of o (proof into proofs[k]) */
static void
batch_in(const obj_t *o, uint64_t i, sto_piece_in_t *in, uint8_t proof[STO_TREE_MAX_PROOF])
{
    size_t len;
    in->piece = i;
    in->bytes = obj_piece(o, i, &len);
    in->len = len;
    in->cv = NULL;
    in->proof = proof;
    in->proof_len = obj_proof(o, i, proof);
}

/* Pieces added in batches: each verifies on its own, runs and gaps and
 * repeats are stored right, and the object completes from them (in dir,
 * a file store, reopened between the batches). */
static void
check_batches(sto_store_t **sp, const char *dir)
{
    static uint8_t proofs[STO_PARTIAL_BATCH_MAX + 1][STO_TREE_MAX_PROOF];
    sto_piece_in_t in[STO_PARTIAL_BATCH_MAX + 1];
    int rc[STO_PARTIAL_BATCH_MAX + 1];
    const uint64_t first[] = {0, 1, 2, 3, 5, 6, 7, 7, 19, 99};
    sto_partial_t *p = NULL;
    uint8_t *bad = malloc(STO_PIECE_LEN);
    uint8_t buf[300];
    size_t n = 0;
    obj_t o;

    obj_make(&o, 20 * STO_PIECE_LEN - 1000, 11);
    assert_int_equal(partial_create(*sp, &o, &p), 0); /* holds piece 19 */
    for (size_t k = 0; k < sizeof first / sizeof first[0]; k++)
        batch_in(&o, first[k] < 20 ? first[k] : 0, &in[k], proofs[k]);
    in[9].piece = 99; /* past the end */
    memcpy(bad, in[5].bytes, STO_PIECE_LEN);
    bad[100] ^= 1;
    in[5].bytes = bad; /* piece 6 altered */
    assert_int_equal(sto_partial_pieces_add(p, in, 10, rc), 0);
    const int want[] = {0, 0, 0, 0, 0, RON_EDIGEST, 0, 1, 1, RON_EINVAL};
    for (size_t k = 0; k < 10; k++)
        assert_int_equal(rc[k], want[k]);
    assert_int_equal(sto_partial_pieces_add(p, in, 0, rc), RON_EINVAL);
    assert_int_equal(sto_partial_pieces_add(p, in, STO_PARTIAL_BATCH_MAX + 1, rc), RON_EINVAL);
    assert_int_equal(sto_partial_complete(p), RON_EAGAIN);
    if (dir != NULL) { /* what the batch stored is on disk, the refused piece is not */
        sto_partial_close(p);
        sto_close(*sp);
        *sp = store_open(dir, 0);
        assert_int_equal(sto_partial_open(*sp, o.root, &p), 0);
    }
    for (uint64_t i = 0; i < 20; i++)
        assert_int_equal(sto_partial_piece_has(p, i), i <= 3 || i == 5 || i == 7 || i == 19);
    assert_int_equal(sto_partial_read(p, 2 * STO_PIECE_LEN - 100, buf, sizeof buf), sizeof buf);
    assert_memory_equal(buf, o.data + 2 * STO_PIECE_LEN - 100, sizeof buf);
    /* the rest, the last piece again among them */
    for (uint64_t i = 4; i < 20; i++)
        if (i != 5 && i != 7)
            batch_in(&o, i, &in[n], proofs[n]), n++;
    assert_int_equal(sto_partial_pieces_add(p, in, n, rc), 0);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(rc[k], in[k].piece == 19 ? 1 : 0);
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    assert_int_equal(sto_has(*sp, o.root), 1);
    free(bad);
    obj_free(&o);
}

static void
test_pieces_added_in_batches_verify_one_by_one_and_complete(void **state)
{
    char *d = tmpdir_new();
    sto_store_t *s = store_open(d, 0);
    sto_store_t *r = store_open(NULL, 0); /* a RAM store: one piece at a time inside */
    (void)state;

    check_batches(&s, d);
    sto_close(s);
    check_batches(&r, NULL);
    sto_close(r);
    rm_rf(d);
    free(d);
}

static void
test_file_partial_survives_reopen(void **state)
{
    char *d = tmpdir_new();
    sto_store_t *s = store_open(d, 0);
    sto_partial_t *p = NULL;
    sto_totals_t t;
    uint8_t buf[100];
    obj_t o;
    (void)state;

    obj_make(&o, 10 * STO_PIECE_LEN, 5);
    assert_int_equal(partial_create(s, &o, &p), 0);
    assert_int_equal(piece_add(p, &o, 4), 0);
    sto_partial_close(p);
    sto_close(s);
    s = store_open(d, 0);
    assert_int_equal(sto_totals(s, &t), 0);
    assert_int_equal(t.partial_bytes, o.len);
    assert_int_equal(sto_partial_open(s, o.root, &p), 0);
    assert_true(sto_partial_piece_has(p, 4));
    assert_true(sto_partial_piece_has(p, 9));
    assert_false(sto_partial_piece_has(p, 3));
    assert_int_equal(sto_partial_read(p, 4 * STO_PIECE_LEN + 7, buf, sizeof buf), sizeof buf);
    assert_memory_equal(buf, o.data + 4 * STO_PIECE_LEN + 7, sizeof buf);
    for (uint64_t i = 0; i < 10; i++)
        assert_true(piece_add(p, &o, i) >= 0);
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    sto_close(s);
    /* complete and indexed after a reopen; the partial files are gone */
    s = store_open(d, 0);
    assert_int_equal(sto_has(s, o.root), 1);
    assert_int_equal(sto_partial_open(s, o.root, &p), RON_ENOTFOUND);
    sto_close(s);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s/partial')\"", d);
    assert_int_equal(system(cmd), 0);
    rm_rf(d);
    free(d);
    obj_free(&o);
}

static void
test_file_partial_damaged_on_disk_is_refetched(void **state)
{
    char *d = tmpdir_new(), path[600], hex[68];
    sto_store_t *s = store_open(d, 0);
    sto_partial_t *p = NULL;
    uint8_t buf[100];
    FILE *f;
    obj_t o;
    (void)state;

    obj_make(&o, 3 * STO_PIECE_LEN, 9);
    assert_int_equal(partial_create(s, &o, &p), 0);
    assert_int_equal(piece_add(p, &o, 0), 0);
    assert_int_equal(piece_add(p, &o, 1), 0);
    /* bit rot in piece 1 of the partial's file */
    sto_addr_format(o.root, hex);
    snprintf(path, sizeof path, "%s/partial/%s", d, hex + 3);
    f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 256 + STO_PIECE_LEN + 5, SEEK_SET);
    fputc(o.data[STO_PIECE_LEN + 5] ^ 0xff, f);
    fclose(f);
    assert_int_equal(sto_partial_read(p, 0, buf, sizeof buf), sizeof buf);
    assert_int_equal(sto_partial_read(p, STO_PIECE_LEN, buf, sizeof buf), RON_EDIGEST);
    assert_false(sto_partial_piece_has(p, 1)); /* to be fetched again */
    assert_int_equal(sto_partial_complete(p), RON_EAGAIN);
    assert_int_equal(piece_add(p, &o, 1), 0);
    assert_int_equal(sto_partial_complete(p), 0);
    sto_partial_close(p);
    sto_reader_t *r = NULL;
    assert_int_equal(sto_reader_open(s, o.root, &r), 0);
    assert_int_equal(sto_reader_read(r, STO_PIECE_LEN, buf, sizeof buf), sizeof buf);
    assert_memory_equal(buf, o.data + STO_PIECE_LEN, sizeof buf);
    sto_reader_close(r);
    sto_close(s);
    rm_rf(d);
    free(d);
    obj_free(&o);
}

/* Flip one byte at offset off of the data file of o's partial in store dir d. */
static void
partial_file_flip(const char *d, const obj_t *o, long off)
{
    char path[600], hex[68];
    FILE *f;
    int c;

    sto_addr_format(o->root, hex);
    snprintf(path, sizeof path, "%s/partial/%s", d, hex + 3);
    f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    c = fgetc(f);
    assert_true(c != EOF);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

/* Complete p, adding back every piece completion forgets (at most pieces
 * rounds), then check the stored object reads back whole and verified. */
static void
complete_and_check(sto_store_t *s, sto_partial_t *p, const obj_t *o, int *forgotten)
{
    uint64_t n = sto_tree_pieces(o->len);
    uint8_t *buf = malloc(o->len + 1);
    sto_reader_t *r = NULL;
    int rc = RON_EDIGEST;

    *forgotten = 0;
    for (uint64_t round = 0; round <= n && rc != 0; round++) {
        rc = sto_partial_complete(p);
        if (rc == 0)
            break;
        assert_int_equal(rc, RON_EDIGEST);
        for (uint64_t i = 0; i < n; i++)
            if (!sto_partial_piece_has(p, i)) {
                (*forgotten)++;
                assert_int_equal(piece_add(p, o, i), 0);
            }
    }
    assert_int_equal(rc, 0);
    sto_partial_close(p);
    assert_int_equal(sto_reader_open(s, o->root, &r), 0);
    assert_int_equal(sto_reader_read(r, 0, buf, o->len), (ssize_t)o->len);
    assert_memory_equal(buf, o->data, o->len);
    sto_reader_close(r);
    free(buf);
}

/*
 * Pieces stored through an earlier handle (their bits come from the map on
 * disk, as after a crash) are verified again at completion; pieces stored
 * through the completing handle verified as they were written. A byte of an
 * earlier piece damaged while the partial was closed is caught there: the
 * piece is forgotten, fetched again, and the object commits whole.
 */
static void
test_file_partial_pieces_from_an_earlier_handle_are_verified_at_completion(void **state)
{
    char *d = tmpdir_new();
    sto_store_t *s = store_open(d, 0);
    sto_partial_t *p = NULL;
    int forgotten;
    obj_t o;
    (void)state;

    obj_make(&o, 20 * STO_PIECE_LEN + 100, 21);
    assert_int_equal(partial_create(s, &o, &p), 0);
    for (uint64_t i = 0; i < 10; i++)
        assert_int_equal(piece_add(p, &o, i), 0);
    sto_partial_close(p);
    partial_file_flip(d, &o, 256 + 3 * STO_PIECE_LEN + 77);
    assert_int_equal(sto_partial_open(s, o.root, &p), 0);
    assert_true(sto_partial_piece_has(p, 3)); /* the map still claims it */
    for (uint64_t i = 10; i < 20; i++)
        assert_int_equal(piece_add(p, &o, i), 0);
    complete_and_check(s, p, &o, &forgotten);
    assert_int_equal(forgotten, 1);
    sto_close(s);
    rm_rf(d);
    free(d);
    obj_free(&o);
}

/*
 * An outboard node damaged while the partial was closed is either rewritten
 * by a piece stored afterwards (nodes come from each piece's verified proof)
 * or fails the completion check of the earlier pieces under it: the object
 * never commits with a wrong node, for a damaged byte anywhere in the
 * outboard.
 */
static void
test_file_partial_outboard_damaged_while_closed_never_commits(void **state)
{
    obj_t o;
    (void)state;

    obj_make(&o, 12 * STO_PIECE_LEN + 5, 23);
    for (uint64_t node = 0; node < 12; node++) {
        char *d = tmpdir_new();
        sto_store_t *s = store_open(d, 0);
        sto_partial_t *p = NULL;
        int forgotten;
        assert_int_equal(partial_create(s, &o, &p), 0);
        /* pieces 0-7 (and 12, with the create) before the close, 8-11 after:
         * the nodes over 0-7 only the completion check can vouch for */
        for (uint64_t i = 0; i < 8; i++)
            assert_int_equal(piece_add(p, &o, i), 0);
        sto_partial_close(p);
        partial_file_flip(d, &o, (long)(256 + o.len + node * STO_TREE_NODE_LEN + node % 64));
        assert_int_equal(sto_partial_open(s, o.root, &p), 0);
        for (uint64_t i = 8; i < 12; i++)
            assert_int_equal(piece_add(p, &o, i), 0);
        complete_and_check(s, p, &o, &forgotten);
        sto_close(s);
        rm_rf(d);
        free(d);
    }
    obj_free(&o);
}

static void
test_malformed_partial_files_are_dropped_at_open(void **state)
{
    char *d = tmpdir_new(), cmd[800], hex[68];
    sto_store_t *s = store_open(d, 0);
    sto_partial_t *p = NULL;
    sto_totals_t t;
    obj_t o;
    (void)state;

    obj_make(&o, 3 * STO_PIECE_LEN, 13);
    assert_int_equal(partial_create(s, &o, &p), 0);
    sto_partial_close(p);
    sto_close(s);
    /* a truncated data file, a stray file, a map without its data file */
    sto_addr_format(o.root, hex);
    snprintf(cmd, sizeof cmd,
             "truncate -s 1000 '%s/partial/%s' && touch '%s/partial/junk' '%s/partial/%064d.map'",
             d, hex + 3, d, d, 0);
    assert_int_equal(system(cmd), 0);
    s = store_open(d, 0);
    assert_int_equal(sto_partial_open(s, o.root, &p), RON_ENOTFOUND);
    assert_int_equal(sto_totals(s, &t), 0);
    assert_int_equal(t.partial_bytes, 0);
    sto_close(s);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s/partial')\"", d);
    assert_int_equal(system(cmd), 0);
    rm_rf(d);
    free(d);
    obj_free(&o);
}

/*
 * kill -9 a child that fills a partial object and completes it, at a
 * different moment each round. Afterwards the store opens, and the object
 * is either whole (every byte reads back verified), or a partial whose
 * present pieces all verify, or absent.
 */
static void
test_kill9_leaves_usable_partial_or_nothing(void **state)
{
    char *d = tmpdir_new();
    obj_t o;
    int whole = 0, partial = 0, absent = 0;
    (void)state;

    obj_make(&o, 48 * STO_PIECE_LEN + 3, 17);
    for (int round = 0; round < 12; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* one byte on the pipe per step: open, each piece, complete */
            sto_config_t cfg = {.dir = d};
            sto_store_t *s = NULL;
            sto_partial_t *p = NULL;
            close(fds[0]);
            if (sto_open(&cfg, &s) < 0 || (partial_create(s, &o, &p) < 0 && sto_has(s, o.root) != 1))
                _exit(2);
            (void)!write(fds[1], "o", 1);
            for (uint64_t i = 0; i < 49; i++) {
                if (p != NULL)
                    (void)piece_add(p, &o, (i * 5) % 49);
                (void)!write(fds[1], "p", 1);
            }
            if (p != NULL)
                (void)sto_partial_complete(p);
            (void)!write(fds[1], "c", 1);
            for (;;)
                pause(); /* wait for the kill */
        }
        close(fds[1]);
        /* kill at a different step each round, from before the open to after completion;
         * odd rounds kill right after the step, even ones a moment later */
        int target = round * 5 > 51 ? 51 : round * 5, got = 0; /* 51 steps in all */
        char ch;
        while (got < target && read(fds[0], &ch, 1) == 1)
            got++;
        if (round % 2 == 0) {
            struct timespec ts = {0, 300000L};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        close(fds[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st));

        sto_store_t *s = store_open(d, 0);
        sto_partial_t *p = NULL;
        sto_reader_t *r = NULL;
        uint8_t *buf = malloc(o.len);
        if (sto_has(s, o.root) == 1) {
            assert_int_equal(sto_reader_open(s, o.root, &r), 0);
            assert_int_equal(sto_reader_read(r, 0, buf, o.len), (ssize_t)o.len);
            assert_memory_equal(buf, o.data, o.len);
            sto_reader_close(r);
            assert_int_equal(sto_partial_open(s, o.root, &p), RON_ENOTFOUND);
            whole++;
            /* start over for the next round */
            uint64_t freed;
            assert_int_equal(sto_gc(s, 0, &freed), 0);
        } else if (sto_partial_open(s, o.root, &p) == 0) {
            for (uint64_t i = 0; i < 49; i++) {
                if (!sto_partial_piece_has(p, i))
                    continue;
                assert_true(sto_partial_read(p, i * STO_PIECE_LEN, buf, STO_PIECE_LEN) > 0);
                assert_memory_equal(buf, o.data + i * STO_PIECE_LEN,
                                    sto_tree_piece_len(o.len, i));
            }
            sto_partial_close(p);
            partial++;
            if (round % 2 == 1) { /* sometimes resume from it, sometimes drop it */
                uint64_t freed;
                assert_int_equal(sto_gc(s, 0, &freed), 0);
            }
        } else {
            absent++;
        }
        free(buf);
        sto_close(s);
    }
    /* the kills landed before, during and after the fill */
    assert_int_equal(whole + partial + absent, 12);
    assert_true(whole > 0);
    assert_true(partial > 0);
    rm_rf(d);
    free(d);
    obj_free(&o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ram_partial_lifecycle),
        cmocka_unit_test(test_pieces_added_with_the_overlays_cv_are_folded_to_the_address),
        cmocka_unit_test(test_file_partial_lifecycle),
        cmocka_unit_test(test_file_partial_survives_reopen),
        cmocka_unit_test(test_pieces_added_in_batches_verify_one_by_one_and_complete),
        cmocka_unit_test(test_file_partial_damaged_on_disk_is_refetched),
        cmocka_unit_test(
            test_file_partial_pieces_from_an_earlier_handle_are_verified_at_completion),
        cmocka_unit_test(test_file_partial_outboard_damaged_while_closed_never_commits),
        cmocka_unit_test(test_malformed_partial_files_are_dropped_at_open),
        cmocka_unit_test(test_kill9_leaves_usable_partial_or_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
