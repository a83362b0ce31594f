/*
 * test_svc_storage.c - the object store (svc_storage.h) over both backends:
 * every behavioural test runs once on the file store (real files, real
 * LMDB, in a fresh temporary directory) and once on the RAM store; tests of
 * durability (reopen, recovery, kill -9) run on the file store only.
 * Random data comes from a seeded generator; the seed is printed.
 * Argument "threads" runs only the multi-threaded test (for TSan).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "blake3.h"
#include "ron_err.h"
#include "ron_log.h"
#include "sto_internal.h"
#include "svc_storage.h"

#define P STO_PIECE_LEN

typedef struct {
    int ram;
    char dir[256];   /* temp dir holding the store */
    char sdir[300];  /* <dir>/store */
    sto_config_t cfg;
    sto_store_t *s;
} fx_t;

static const uint8_t T1[STO_TENANT_LEN] = {1};
static const uint8_t T2[STO_TENANT_LEN] = {2};
static uint64_t rng_state;

static uint64_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *
rnd_bytes(size_t n)
{
    uint8_t *b = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)rnd();
    return b;
}

static void
b3(const void *buf, size_t len, uint8_t out[32])
{
    blake3_hasher h;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, buf, len);
    blake3_hasher_finalize(&h, out, 32);
}

static int
rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
fx_open(fx_t *f)
{
    return sto_open(&f->cfg, &f->s);
}

static int
setup_backend(void **state, int ram, uint64_t quota, uint64_t max_object)
{
    fx_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    f->ram = ram;
    snprintf(f->dir, sizeof(f->dir), "%s/sto-test-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->sdir, sizeof(f->sdir), "%s/store", f->dir);
    f->cfg.dir = ram ? NULL : f->sdir;
    f->cfg.quota = quota;
    f->cfg.max_object = max_object;
    f->cfg.map_size = 64u << 20;
    if (fx_open(f) != 0)
        return -1;
    *state = f;
    return 0;
}

static int setup_file(void **state) { return setup_backend(state, 0, 0, 0); }
static int setup_ram(void **state) { return setup_backend(state, 1, 0, 0); }

static int
teardown(void **state)
{
    fx_t *f = *state;
    sto_close(f->s);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Put buf in random-sized writes. */
static int
put_chunked(sto_store_t *s, const uint8_t *tenant, const uint8_t *buf, size_t len,
            const uint8_t *expected, uint8_t addr[32])
{
    sto_put_t *p;
    size_t off = 0;
    int rc = sto_put_begin(s, tenant, expected, "application/octet-stream", STO_SIZE_UNKNOWN, &p);
    if (rc < 0)
        return rc;
    while (off < len) {
        size_t n = 1 + rnd() % (3 * P / 2);
        if (n > len - off)
            n = len - off;
        if ((rc = sto_put_write(p, buf + off, n)) < 0) {
            sto_put_abort(p);
            return rc;
        }
        off += n;
    }
    return sto_put_commit(p, addr);
}

static void
check_range(sto_reader_t *r, const uint8_t *want, uint64_t size, uint64_t off, size_t len)
{
    uint8_t *got = malloc(len + 1);
    ssize_t n = sto_reader_read(r, off, got, len);
    size_t expect = off >= size ? 0 : (size - off < len ? (size_t)(size - off) : len);
    assert_int_equal(n, (ssize_t)expect);
    if (expect > 0)
        assert_memory_equal(got, want + off, expect);
    free(got);
}

static void
test_put_get_round_trips_sizes_and_ranges_at_piece_boundaries(void **state)
{
    fx_t *f = *state;
    static const size_t sizes[] = {0, 1, 1023, 1024, 65535, 65536, 65537, 131072, 200000,
                                   3 * 1024 * 1024 + 17};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        uint8_t *buf = rnd_bytes(n), addr[32], want[32];
        sto_reader_t *r;
        sto_stat_t st;

        assert_int_equal(put_chunked(f->s, T1, buf, n, NULL, addr), 0);
        b3(buf, n, want);
        assert_memory_equal(addr, want, 32);
        assert_int_equal(sto_stat(f->s, addr, &st), 0);
        assert_int_equal(st.size, n);
        assert_string_equal(st.ctype, "application/octet-stream");
        assert_int_equal(st.state, STO_STATE_PINNED);
        assert_int_equal(sto_reader_open(f->s, addr, &r), 0);
        assert_int_equal(sto_reader_size(r), n);
        check_range(r, buf, n, 0, n + 10);
        uint64_t offs[] = {0, 1, P - 1, P, P + 1, 2 * P - 1, 2 * P, n / 2, n > 0 ? n - 1 : 0, n};
        for (size_t j = 0; j < sizeof(offs) / sizeof(offs[0]); j++) {
            check_range(r, buf, n, offs[j], 1);
            check_range(r, buf, n, offs[j], P);
            check_range(r, buf, n, offs[j], 1 + rnd() % (3 * P));
        }
        for (int j = 0; j < 20; j++) {
            uint64_t off = n > 0 ? rnd() % n : 0;
            check_range(r, buf, n, off, 1 + rnd() % (n + 1));
        }
        sto_reader_close(r);
        free(buf);
    }
}

static void
test_same_object_twice_keeps_one_copy_and_one_pin_per_tenant(void **state)
{
    fx_t *f = *state;
    uint8_t *buf = rnd_bytes(100000), a1[32], a2[32], a3[32];
    sto_totals_t t;
    uint32_t c;
    sto_stat_t st;

    assert_int_equal(sto_put_buf(f->s, T1, buf, 100000, NULL, a1), 0);
    assert_int_equal(sto_put_buf(f->s, T1, buf, 100000, NULL, a2), 0);
    assert_memory_equal(a1, a2, 32);
    assert_int_equal(sto_pin_count(f->s, T1, a1, &c), 0);
    assert_int_equal(c, 1); /* a retried put does not pile up references */
    assert_int_equal(sto_put_buf(f->s, T2, buf, 100000, NULL, a3), 0);
    assert_int_equal(sto_stat(f->s, a1, &st), 0);
    assert_int_equal(st.pins, 2);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 1);
    assert_int_equal(t.stored_bytes, 100000);
    assert_int_equal(t.pinned_bytes, 100000);
    assert_int_equal(sto_has(f->s, a1), 1);
    free(buf);
}

typedef struct {
    sto_store_t *s;
    const uint8_t *buf;
    size_t len;
    uint8_t tenant[STO_TENANT_LEN];
    uint8_t addr[32];
    int rc;
} put_job_t;

static void *
put_thread(void *arg)
{
    put_job_t *j = arg;
    char name[16];
    snprintf(name, sizeof(name), "sto-put-%u", j->tenant[0]);
    pthread_setname_np(pthread_self(), name);
    j->rc = sto_put_buf(j->s, j->tenant, j->buf, j->len, "text/plain", j->addr);
    if (j->rc == 0) {
        /* read it back from this thread too: readers run beside writers */
        sto_reader_t *r;
        uint8_t tmp[4096];
        j->rc = sto_reader_open(j->s, j->addr, &r);
        if (j->rc == 0) {
            ssize_t n = sto_reader_read(r, j->len / 2, tmp, sizeof(tmp));
            if (n < 0)
                j->rc = (int)n;
            sto_reader_close(r);
        }
    }
    return NULL;
}

static void
test_concurrent_puts_of_same_object_store_one_copy(void **state)
{
    fx_t *f = *state;
    enum { N = 4 };
    size_t len = 5 * P + 123;
    uint8_t *buf = rnd_bytes(len), want[32];
    pthread_t th[N];
    put_job_t jobs[N];
    sto_totals_t t;
    sto_stat_t st;

    b3(buf, len, want);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            jobs[i] = (put_job_t){.s = f->s, .buf = buf, .len = len};
            jobs[i].tenant[0] = (uint8_t)(i + 1);
            assert_int_equal(pthread_create(&th[i], NULL, put_thread, &jobs[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(jobs[i].rc, 0);
            assert_memory_equal(jobs[i].addr, want, 32);
        }
    }
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 1);
    assert_int_equal(t.stored_bytes, len);
    assert_int_equal(sto_stat(f->s, want, &st), 0);
    assert_int_equal(st.pins, N);
    free(buf);
}

static size_t
count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char sub[600];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            n += count_files(sub);
        else
            n++;
    }
    closedir(d);
    return n;
}

static size_t
count_sub(const fx_t *f, const char *sub)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/%s", f->sdir, sub);
    return count_files(p);
}

static void
test_expected_address_mismatch_stores_nothing(void **state)
{
    fx_t *f = *state;
    uint8_t *buf = rnd_bytes(150000), wrong[32], addr[32], right[32];
    sto_totals_t t;

    b3(buf, 150000, right);
    memcpy(wrong, right, 32);
    wrong[5] ^= 1;
    assert_int_equal(put_chunked(f->s, T1, buf, 150000, wrong, addr), RON_EDIGEST);
    assert_int_equal(sto_has(f->s, wrong), 0);
    assert_int_equal(sto_has(f->s, right), 0);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 0);
    assert_int_equal(t.stored_bytes, 0);
    if (!f->ram) {
        assert_int_equal(count_sub(f, "tmp"), 0);
        assert_int_equal(count_sub(f, "objects"), 0);
    }
    /* the right address is accepted */
    assert_int_equal(put_chunked(f->s, T1, buf, 150000, right, addr), 0);
    assert_memory_equal(addr, right, 32);
    /* a declared size the bytes fall short of is refused too */
    sto_put_t *p;
    assert_int_equal(sto_put_begin(f->s, T1, NULL, NULL, 10, &p), 0);
    assert_int_equal(sto_put_write(p, buf, 5), 0);
    assert_int_equal(sto_put_commit(p, addr), RON_EINVAL);
    free(buf);
}

/* Pieces written with the CVs their proof check computed make the same
 * object as plain writes; a CV that is not the verified one fails the commit
 * (the root comes out of the CVs) and stores nothing; without an expected
 * address the CV is ignored and the bytes are hashed. */
static void
test_put_write_piece_uses_verified_cvs_and_refuses_a_wrong_one(void **state)
{
    fx_t *f = *state;
    size_t len = 11 * P + 999, oblen = sto_tree_outboard_len(len);
    uint8_t *buf = rnd_bytes(len), *ob = malloc(oblen), root[32], addr[32], bogus[32];
    uint8_t proof[STO_TREE_MAX_PROOF], cv[32];
    uint64_t n = sto_tree_pieces(len);
    sto_totals_t t;
    size_t proof_len;

    assert_int_equal(sto_tree_hash(buf, len, root, ob), 0);
    memset(bogus, 0x33, sizeof bogus);
    for (int round = 0; round < 3; round++) {
        sto_put_t *p;
        const uint8_t *expected = round == 2 ? NULL : root;
        assert_int_equal(sto_put_begin(f->s, NULL, expected, NULL, len, &p), 0);
        for (uint64_t i = 0; i < n; i++) {
            size_t plen = sto_tree_piece_len(len, i);
            assert_int_equal(sto_tree_proof_extract_buf(len, i, ob, oblen, proof, sizeof proof,
                                                        &proof_len), 0);
            assert_int_equal(sto_tree_proof_verify_cv(root, len, i, buf + i * P, plen, proof,
                                                      proof_len, cv), 0);
            assert_int_equal(sto_put_write_piece(p, buf + i * P, plen,
                                                 round == 1 || i != 3 ? cv : bogus), 0);
        }
        if (round == 0) { /* piece 3's CV was wrong */
            assert_int_equal(sto_put_commit(p, addr), RON_EDIGEST);
            assert_int_equal(sto_has(f->s, root), 0);
            assert_int_equal(sto_totals(f->s, &t), 0);
            assert_int_equal(t.objects, 0);
            continue;
        }
        assert_int_equal(sto_put_commit(p, addr), 0);
        assert_memory_equal(addr, root, 32);
        /* the stored copy reads back and verifies (outboard included) */
        sto_reader_t *r;
        uint8_t *back = malloc(len);
        assert_int_equal(sto_reader_open(f->s, root, &r), 0);
        assert_int_equal(sto_reader_read(r, 0, back, len), (ssize_t)len);
        assert_memory_equal(back, buf, len);
        sto_reader_close(r);
        free(back);
    }
    free(ob);
    free(buf);
}

/* Flip the byte at off of the stored object. */
static void
corrupt(fx_t *f, const uint8_t *addr, uint64_t off)
{
    if (f->ram) {
        assert_int_equal(sto__ram_corrupt(f->s, addr, off), 0);
        return;
    }
    char *path = sto__file_object_path(f->s, addr, "");
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_true(fd >= 0);
    off += STO_OBJ_HDR_LEN; /* the object's bytes follow the file header */
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
    free(path);
}

static void
test_corrupted_byte_fails_its_piece_only(void **state)
{
    fx_t *f = *state;
    size_t len = 4 * P + 1000;
    uint8_t *buf = rnd_bytes(len), addr[32], *got = malloc(len);
    sto_reader_t *r;
    sto_totals_t t;

    ron_log_set_level(RON_LOG_ERROR + 1); /* the corruption errors are expected */
    assert_int_equal(sto_put_buf(f->s, T1, buf, len, NULL, addr), 0);
    corrupt(f, addr, 2 * P + 777);
    assert_int_equal(sto_reader_open(f->s, addr, &r), 0);
    /* pieces 0, 1, 3 and the last are served */
    assert_int_equal(sto_reader_read(r, 0, got, 2 * P), 2 * P);
    assert_memory_equal(got, buf, 2 * P);
    assert_int_equal(sto_reader_read(r, 3 * P, got, len), len - 3 * P);
    assert_memory_equal(got, buf + 3 * P, len - 3 * P);
    assert_int_equal(sto_reader_read(r, 2 * P - 10, got, 5), 5);
    /* any range touching piece 2 fails, whole or partial */
    assert_int_equal(sto_reader_read(r, 2 * P, got, P), RON_EDIGEST);
    assert_int_equal(sto_reader_read(r, 2 * P + 700, got, 10), RON_EDIGEST);
    assert_int_equal(sto_reader_read(r, 0, got, len), RON_EDIGEST);
    assert_int_equal(sto_reader_read(r, 2 * P - 1, got, 2), RON_EDIGEST);
    sto_reader_close(r);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_true(t.corruptions >= 4);
    /* a corrupt last piece fails at open: the size is never trusted unverified */
    corrupt(f, addr, len - 1);
    assert_int_equal(sto_reader_open(f->s, addr, &r), RON_EDIGEST);
    ron_log_set_level(RON_LOG_INFO);
    free(buf);
    free(got);
}

static void
test_pins_count_per_tenant_and_last_unpin_makes_cache(void **state)
{
    fx_t *f = *state;
    uint8_t *buf = rnd_bytes(5000), addr[32], other[32] = {9}, list[32 * 4];
    uint32_t c;
    sto_stat_t st;
    sto_totals_t t;
    size_t n;

    assert_int_equal(sto_put_buf(f->s, T1, buf, 5000, NULL, addr), 0);
    assert_int_equal(sto_pin(f->s, T1, addr), 0);
    assert_int_equal(sto_pin(f->s, T2, addr), 0);
    assert_int_equal(sto_pin_count(f->s, T1, addr, &c), 0);
    assert_int_equal(c, 2);
    assert_int_equal(sto_pin_count(f->s, T2, addr, &c), 0);
    assert_int_equal(c, 1);
    assert_int_equal(sto_pin(f->s, T1, other), RON_ENOTFOUND);
    assert_int_equal(sto_pin_list(f->s, T2, NULL, list, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(list, addr, 32);
    assert_int_equal(sto_unpin(f->s, T1, addr), 0);
    assert_int_equal(sto_unpin(f->s, T1, addr), 0);
    assert_int_equal(sto_unpin(f->s, T1, addr), RON_ENOTFOUND);
    assert_int_equal(sto_stat(f->s, addr, &st), 0);
    assert_int_equal(st.state, STO_STATE_PINNED);
    assert_int_equal(st.pins, 1);
    assert_int_equal(sto_unpin(f->s, T2, addr), 0);
    assert_int_equal(sto_stat(f->s, addr, &st), 0);
    assert_int_equal(st.state, STO_STATE_CACHE);
    assert_int_equal(st.pins, 0);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.pinned_bytes, 0);
    assert_int_equal(t.stored_bytes, 5000);
    assert_int_equal(sto_pin_list(f->s, T2, NULL, list, 4, &n), 0);
    assert_int_equal(n, 0);
    /* pinning a cache object makes it pinned again */
    assert_int_equal(sto_pin(f->s, T2, addr), 0);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.pinned_bytes, 5000);
    free(buf);
}

static void
reopen_with(fx_t *f, uint64_t quota, uint64_t max_object)
{
    /* a RAM store starts again empty; a file store keeps its objects */
    sto_close(f->s);
    f->cfg.quota = quota;
    f->cfg.max_object = max_object;
    assert_int_equal(fx_open(f), 0);
}

static void
test_gc_evicts_oldest_cache_first_and_never_pinned(void **state)
{
    fx_t *f = *state;
    size_t len = 300000;
    uint8_t *a = rnd_bytes(len), *b = rnd_bytes(len), *c = rnd_bytes(len), *d = rnd_bytes(len);
    uint8_t aa[32], ab[32], ac[32], ad[32];
    uint64_t freed;
    sto_totals_t t;

    reopen_with(f, 1000000, 0);
    assert_int_equal(sto_put_buf(f->s, T1, a, len, NULL, aa), 0);
    assert_int_equal(sto_put_buf(f->s, T1, b, len, NULL, ab), 0);
    assert_int_equal(sto_put_buf(f->s, T1, c, len, NULL, ac), 0);
    assert_int_equal(sto_unpin(f->s, T1, aa), 0);
    assert_int_equal(sto_unpin(f->s, T1, ab), 0);
    /* 4 x 300 kB > 1 MB: the commit evicts the oldest cache object, a */
    assert_int_equal(sto_put_buf(f->s, T1, d, len, NULL, ad), 0);
    assert_int_equal(sto_has(f->s, aa), 0);
    assert_int_equal(sto_has(f->s, ab), 1);
    assert_int_equal(sto_has(f->s, ac), 1);
    assert_int_equal(sto_has(f->s, ad), 1);
    /* a cache copy (tenant NULL: fetched from peers) is stored unpinned */
    uint8_t *e = rnd_bytes(1000), ae[32];
    sto_stat_t st;
    assert_int_equal(sto_put_buf(f->s, NULL, e, 1000, NULL, ae), 0);
    assert_int_equal(sto_stat(f->s, ae, &st), 0);
    assert_int_equal(st.state, STO_STATE_CACHE);
    assert_int_equal(st.pins, 0);
    assert_int_equal(sto_put_buf(f->s, NULL, c, len, NULL, ac), 0); /* pinned stays pinned */
    assert_int_equal(sto_stat(f->s, ac, &st), 0);
    assert_int_equal(st.pins, 1);
    free(e);
    /* GC to zero removes every cache object and no pinned one */
    assert_int_equal(sto_gc(f->s, 0, &freed), 0);
    assert_int_equal(freed, len + 1000);
    assert_int_equal(sto_has(f->s, ae), 0);
    assert_int_equal(sto_has(f->s, ab), 0);
    assert_int_equal(sto_has(f->s, ac), 1);
    assert_int_equal(sto_has(f->s, ad), 1);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 2);
    assert_int_equal(t.stored_bytes, 2 * len);
    if (!f->ram)
        assert_int_equal(count_sub(f, "objects"), 2); /* one file per object */
    sto_reader_t *r;
    assert_int_equal(sto_reader_open(f->s, ac, &r), 0);
    check_range(r, c, len, 0, len);
    sto_reader_close(r);
    free(a);
    free(b);
    free(c);
    free(d);
}

static void
test_pinned_bytes_over_quota_refused_as_insufficient_storage(void **state)
{
    fx_t *f = *state;
    size_t len = 600000;
    uint8_t *a = rnd_bytes(len), *b = rnd_bytes(len), aa[32], ab[32];
    sto_put_t *p;
    sto_totals_t t;

    reopen_with(f, 1000000, 0);
    assert_int_equal(sto_put_buf(f->s, T1, a, len, NULL, aa), 0);
    /* checked up front from the declared size */
    assert_int_equal(sto_put_begin(f->s, T1, NULL, NULL, len, &p), RON_ESTOREFULL);
    /* and at commit when no size was declared */
    assert_int_equal(put_chunked(f->s, T2, b, len, NULL, ab), RON_ESTOREFULL);
    assert_int_equal(sto_has(f->s, ab), 0);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 1);
    assert_int_equal(t.pinned_bytes, len);
    if (!f->ram)
        assert_int_equal(count_sub(f, "tmp"), 0);
    /* unpinned, the old object makes room: it is cache and gets evicted */
    assert_int_equal(sto_unpin(f->s, T1, aa), 0);
    assert_int_equal(put_chunked(f->s, T2, b, len, NULL, ab), 0);
    assert_int_equal(sto_has(f->s, aa), 0);
    /* pinning a cache object over the quota is refused the same way (only
     * reachable when the quota was lowered: stored bytes stay within it) */
    if (!f->ram) {
        uint8_t *c = rnd_bytes(300000), ac[32];
        reopen_with(f, 1000000, 0);
        assert_int_equal(sto_put_buf(f->s, T1, c, 300000, NULL, ac), 0);
        assert_int_equal(sto_unpin(f->s, T2, ab), 0); /* b: cache, 600 kB */
        reopen_with(f, 800000, 0);
        assert_int_equal(sto_pin(f->s, T1, ab), RON_ESTOREFULL);
        assert_int_equal(sto_totals(f->s, &t), 0);
        assert_int_equal(t.pinned_bytes, 300000);
        assert_int_equal(sto_has(f->s, ab), 1);
        free(c);
    }
    free(a);
    free(b);
}

static void
test_object_over_max_size_refused(void **state)
{
    fx_t *f = *state;
    uint8_t *buf = rnd_bytes(200000), addr[32];
    sto_put_t *p;

    reopen_with(f, 0, 100000);
    assert_int_equal(sto_put_begin(f->s, T1, NULL, NULL, 100001, &p), RON_ETOOBIG);
    assert_int_equal(put_chunked(f->s, T1, buf, 200000, NULL, addr), RON_ETOOBIG);
    /* after a failed write the put only reports that error */
    assert_int_equal(sto_put_begin(f->s, T1, NULL, NULL, STO_SIZE_UNKNOWN, &p), 0);
    assert_int_equal(sto_put_write(p, buf, 100001), RON_ETOOBIG);
    assert_int_equal(sto_put_write(p, buf, 1), RON_ETOOBIG);
    assert_int_equal(sto_put_commit(p, addr), RON_ETOOBIG);
    if (!f->ram)
        assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(put_chunked(f->s, T1, buf, 100000, NULL, addr), 0);
    free(buf);
}

static void
test_list_pages_through_every_object_in_order(void **state)
{
    fx_t *f = *state;
    enum { N = 25 };
    uint8_t seen[N][32];
    sto_stat_t page[7];
    size_t n, total = 0;
    uint8_t last[32];
    int have_last = 0;

    for (int i = 0; i < N; i++) {
        uint8_t *buf = rnd_bytes(100 + (size_t)i);
        assert_int_equal(sto_put_buf(f->s, T1, buf, 100 + (size_t)i, NULL, seen[i]), 0);
        free(buf);
    }
    do {
        assert_int_equal(sto_list(f->s, have_last ? last : NULL, page, 7, &n), 0);
        for (size_t i = 0; i < n; i++) {
            if (have_last || i > 0)
                assert_true(memcmp(i > 0 ? page[i - 1].addr : last, page[i].addr, 32) < 0);
            total++;
        }
        if (n > 0) {
            memcpy(last, page[n - 1].addr, 32);
            have_last = 1;
        }
    } while (n == 7);
    assert_int_equal(total, N);
    assert_int_equal(sto_list(f->s, NULL, page, STO_LIST_MAX + 1, &n), RON_EINVAL);
    /* the gateway's sniffed content type sticks */
    assert_int_equal(sto_set_ctype(f->s, seen[3], "image/png"), 0);
    sto_stat_t st;
    assert_int_equal(sto_stat(f->s, seen[3], &st), 0);
    assert_string_equal(st.ctype, "image/png");
    /* a content type becomes an HTTP header: no CR/LF or other controls */
    assert_int_equal(sto_set_ctype(f->s, seen[3], "text/html\r\nX-Evil: 1"), RON_EINVAL);
    sto_put_t *p;
    assert_int_equal(sto_put_begin(f->s, T1, NULL, "a\nb", STO_SIZE_UNKNOWN, &p), RON_EINVAL);
}

static void
test_addr_format_and_parse_round_trip(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    char s[68];
    for (int i = 0; i < 32; i++)
        a[i] = (uint8_t)(i * 7 + 3);
    sto_addr_format(a, s);
    assert_int_equal(strncmp(s, "b3:", 3), 0);
    assert_int_equal(sto_addr_parse(s, b), 0);
    assert_memory_equal(a, b, 32);
    assert_int_equal(sto_addr_parse(s + 3, b), 0);
    assert_int_equal(sto_addr_parse("b3:zz", b), RON_EINVAL);
    s[10] = 'g';
    assert_int_equal(sto_addr_parse(s, b), RON_EINVAL);
}

/* ---- file store only ---- */

static void
test_reopen_after_close_keeps_objects_pins_and_ctype(void **state)
{
    fx_t *f = *state;
    uint8_t *buf = rnd_bytes(333333), addr[32];
    uint32_t c;
    sto_stat_t st;
    sto_reader_t *r;

    assert_int_equal(sto_put_buf(f->s, T1, buf, 333333, "video/mp4", addr), 0);
    assert_int_equal(sto_pin(f->s, T2, addr), 0);
    reopen_with(f, 0, 0);
    assert_int_equal(sto_stat(f->s, addr, &st), 0);
    assert_int_equal(st.size, 333333);
    assert_int_equal(st.pins, 2);
    assert_string_equal(st.ctype, "video/mp4");
    assert_int_equal(sto_pin_count(f->s, T2, addr, &c), 0);
    assert_int_equal(c, 1);
    assert_int_equal(sto_reader_open(f->s, addr, &r), 0);
    assert_string_equal(sto_reader_ctype(r), "video/mp4");
    check_range(r, buf, 333333, 0, 333333);
    sto_reader_close(r);
    free(buf);
}

static void
touch(const char *path, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    close(fd);
}

static void
test_open_removes_tmp_files_orphans_and_entries_without_files(void **state)
{
    fx_t *f = *state;
    uint8_t *a = rnd_bytes(70000), *b = rnd_bytes(80000), aa[32], ab[32], orphan[32];
    char path[600];
    sto_totals_t t;

    assert_int_equal(sto_put_buf(f->s, T1, a, 70000, NULL, aa), 0);
    assert_int_equal(sto_put_buf(f->s, T1, b, 80000, NULL, ab), 0);
    sto_close(f->s);
    f->s = NULL;
    /* a crashed put's temporaries, an orphan object, and a lost data file */
    snprintf(path, sizeof(path), "%s/tmp/deadbeef.dat", f->sdir);
    touch(path, 1000);
    snprintf(path, sizeof(path), "%s/tmp/deadbeef.ob", f->sdir);
    touch(path, 64);
    memset(orphan, 0xab, 32);
    snprintf(path, sizeof(path), "%s/objects/ab", f->sdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/objects/ab/%s", f->sdir,
             "abababababababababababababababababababababababababababababababab");
    touch(path, 10);
    sto_store_t tmp = {.dir = f->sdir};
    char *lost = sto__file_object_path(&tmp, ab, "");
    assert_int_equal(truncate(lost, 79999), 0); /* incomplete: dropped */
    free(lost);
    assert_int_equal(fx_open(f), 0);
    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(sto_has(f->s, orphan), 0);
    assert_int_equal(sto_has(f->s, aa), 1);
    assert_int_equal(sto_has(f->s, ab), 0);
    assert_int_equal(count_sub(f, "objects"), 1);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 1);
    assert_int_equal(t.stored_bytes, 70000);
    assert_int_equal(t.pinned_bytes, 70000);
    free(a);
    free(b);
}

/* Drop every row of every database of the store's LMDB environment, as an
 * OS crash that undid index commits would (the store is closed). */
static void
index_wipe(const fx_t *f)
{
    char path[400];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    static const char *const dbs[] = {"objects", "pins", "cache", "meta"};

    snprintf(path, sizeof(path), "%s/meta", f->sdir);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 64u << 20), 0);
    assert_int_equal(mdb_env_open(env, path, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(mdb_dbi_open(txn, dbs[i], 0, &dbi), 0);
        assert_int_equal(mdb_drop(txn, dbi, 0), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/*
 * Object files are authoritative: a put's index commit is not synced (its
 * file's header carries the same facts), so after an OS crash undid it the
 * next open rebuilds the entry from the file: size, created, content type,
 * the put's tenant pin or, for a cache copy, cache state. An object GC
 * evicted does not come back.
 */
static void
test_open_reindexes_object_files_whose_index_commit_was_lost(void **state)
{
    fx_t *f = *state;
    uint8_t *a = rnd_bytes(3 * P + 5), *b = rnd_bytes(4000), *c = rnd_bytes(P), aa[32], ab[32],
            ac[32];
    sto_stat_t sa, st;
    sto_totals_t t;
    uint32_t n;
    uint64_t freed;
    sto_reader_t *r;

    assert_int_equal(sto_put_buf(f->s, T1, a, 3 * P + 5, "image/png", aa), 0);
    assert_int_equal(sto_put_buf(f->s, NULL, b, 4000, NULL, ab), 0); /* cache copies */
    assert_int_equal(sto_put_buf(f->s, NULL, c, P, "text/plain", ac), 0);
    assert_int_equal(sto_stat(f->s, aa, &sa), 0);
    /* evict the oldest cache object (b) */
    assert_int_equal(sto_gc(f->s, 3 * P + 5 + 4000 + P - 1, &freed), 0);
    assert_int_equal(freed, 4000);
    sto_close(f->s);
    f->s = NULL;
    index_wipe(f);
    assert_int_equal(fx_open(f), 0);
    /* the pinned object: whole, pinned for T1, same metadata */
    assert_int_equal(sto_stat(f->s, aa, &st), 0);
    assert_int_equal(st.size, 3 * P + 5);
    assert_string_equal(st.ctype, "image/png");
    assert_int_equal(st.state, STO_STATE_PINNED);
    assert_int_equal(st.created, sa.created);
    assert_int_equal(sto_pin_count(f->s, T1, aa, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(sto_reader_open(f->s, aa, &r), 0);
    check_range(r, a, 3 * P + 5, 0, 3 * P + 5);
    sto_reader_close(r);
    /* the cache copy is cache again; the evicted one stays gone */
    assert_int_equal(sto_stat(f->s, ac, &st), 0);
    assert_int_equal(st.state, STO_STATE_CACHE);
    assert_int_equal(st.pins, 0);
    assert_string_equal(st.ctype, "text/plain");
    assert_int_equal(sto_has(f->s, ab), 0);
    assert_int_equal(sto_totals(f->s, &t), 0);
    assert_int_equal(t.objects, 2);
    assert_int_equal(t.pinned_bytes, 3 * P + 5);
    assert_int_equal(t.stored_bytes, 3 * P + 5 + P);
    assert_int_equal(count_sub(f, "objects"), 2);
    /* and it is evictable as cache: GC to zero removes it, not the pinned one */
    assert_int_equal(sto_gc(f->s, 0, &freed), 0);
    assert_int_equal(freed, P);
    assert_int_equal(sto_has(f->s, ac), 0);
    assert_int_equal(sto_has(f->s, aa), 1);
    free(a);
    free(b);
    free(c);
}

static void
test_open_refuses_store_of_another_format_version(void **state)
{
    fx_t *f = *state;
    char path[400];
    sto_store_t *s2;

    sto_close(f->s);
    f->s = NULL;
    snprintf(path, sizeof(path), "%s/FORMAT", f->sdir);
    /* the old layout (format 1: data and .ob in two files) and a newer one */
    static const char *const refused[] = {"ron-store 1\n", "ron-store 3\n"};
    ron_log_set_level(RON_LOG_ERROR + 1); /* the refusals are logged */
    for (size_t i = 0; i < 2; i++) {
        FILE *fp = fopen(path, "w");
        assert_non_null(fp);
        fputs(refused[i], fp);
        fclose(fp);
        assert_int_equal(sto_open(&f->cfg, &s2), RON_EVERSION);
    }
    ron_log_set_level(RON_LOG_INFO);
    FILE *fp = fopen(path, "w");
    fputs("ron-store 2\n", fp);
    fclose(fp);
    assert_int_equal(fx_open(f), 0);
}

static void
test_read_only_open_in_another_process_serves_and_second_writer_is_refused(void **state)
{
    fx_t *f = *state;
    uint8_t *buf = rnd_bytes(99999), addr[32];
    sto_store_t *w2;
    int st;

    assert_int_equal(sto_put_buf(f->s, T1, buf, 99999, NULL, addr), 0);
    assert_int_equal(sto_open(&f->cfg, &w2), RON_EBUSY);
    /* LMDB forbids one environment open twice in a process: the reader (as
     * the gateway does) lives in its own process */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sto_config_t ro = {.dir = f->sdir, .read_only = 1};
        sto_store_t *r_s;
        sto_reader_t *r;
        sto_put_t *p;
        uint8_t *got = malloc(70000);
        int ok = sto_open(&ro, &r_s) == 0 && sto_has(r_s, addr) == 1 &&
                 sto_reader_open(r_s, addr, &r) == 0 &&
                 sto_reader_read(r, 1000, got, 70000) == 70000 &&
                 memcmp(got, buf + 1000, 70000) == 0 &&
                 sto_put_begin(r_s, T1, NULL, NULL, STO_SIZE_UNKNOWN, &p) == RON_EINVAL;
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* the writer carries on */
    assert_int_equal(sto_put_buf(f->s, T2, buf, 5, NULL, addr), 0);
    free(buf);
}

/* The crash child: puts objects forever, writing each acknowledged address. */
static void
crash_child(const char *dir, int wfd, uint64_t seed)
{
    sto_config_t cfg = {.dir = dir, .map_size = 64u << 20};
    sto_store_t *s;
    uint8_t tenant[STO_TENANT_LEN] = {7};

    rng_state = seed;
    ron_log_set_level(RON_LOG_ERROR);
    if (sto_open(&cfg, &s) != 0)
        _exit(3);
    for (;;) {
        size_t len = (size_t)(rnd() % 4 == 0 ? rnd() % (5 * P) : rnd() % 3000);
        uint8_t *buf = rnd_bytes(len), addr[32];
        if (put_chunked(s, tenant, buf, len, NULL, addr) != 0)
            _exit(4);
        if (write(wfd, addr, 32) != 32)
            _exit(5);
        free(buf);
    }
}

static void
verify_whole(sto_store_t *s, const uint8_t *addr)
{
    sto_reader_t *r;
    uint8_t got[32];
    assert_int_equal(sto_reader_open(s, addr, &r), 0);
    uint64_t n = sto_reader_size(r);
    uint8_t *buf = malloc(n + 1);
    assert_int_equal(sto_reader_read(r, 0, buf, n), (ssize_t)n);
    b3(buf, n, got);
    assert_memory_equal(got, addr, 32);
    free(buf);
    sto_reader_close(r);
}

static void
test_kill9_during_puts_leaves_objects_whole_or_absent(void **state)
{
    fx_t *f = *state;
    enum { KILLS = 30 };
    uint8_t (*acked)[32] = malloc(sizeof(*acked) * 20000);
    size_t nacked = 0, verified = 0;
    uint64_t base = rnd();

    sto_close(f->s);
    f->s = NULL;
    for (int k = 0; k < KILLS; k++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            crash_child(f->sdir, pfd[1], base + (uint64_t)k * 7919);
        }
        close(pfd[1]);
        struct timespec ts = {0, (long)(5 + rnd() % 120) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
        ssize_t n;
        uint8_t part[32];
        size_t have = 0;
        while ((n = read(pfd[0], part + have, 32 - have)) > 0) {
            have += (size_t)n;
            if (have == 32) {
                if (nacked < 20000)
                    memcpy(acked[nacked++], part, 32);
                have = 0;
            }
        }
        close(pfd[0]);
        /* reopen: recovery runs; then every acknowledged put must be whole */
        assert_int_equal(fx_open(f), 0);
        assert_int_equal(count_sub(f, "tmp"), 0);
        for (; verified < nacked; verified++)
            verify_whole(f->s, acked[verified]);
        for (size_t i = 0; i < nacked; i++) {
            /* and still pinned for the put's tenant, whatever the index lost */
            uint32_t pins = 0;
            static const uint8_t t7[STO_TENANT_LEN] = {7};
            assert_int_equal(sto_pin_count(f->s, t7, acked[i], &pins), 0);
            assert_int_equal(pins, 1);
        }
        /* every indexed object opens (last piece verified) and has its two files */
        sto_totals_t t;
        assert_int_equal(sto_totals(f->s, &t), 0);
        /* files are authoritative: exactly one object file per indexed object */
        assert_int_equal(count_sub(f, "objects"), t.objects);
        sto_stat_t page[64];
        size_t got, seen = 0;
        uint8_t after[32];
        do {
            assert_int_equal(sto_list(f->s, seen > 0 ? after : NULL, page, 64, &got), 0);
            for (size_t i = 0; i < got; i++) {
                sto_reader_t *r;
                assert_int_equal(sto_reader_open(f->s, page[i].addr, &r), 0);
                sto_reader_close(r);
            }
            seen += got;
            if (got > 0)
                memcpy(after, page[got - 1].addr, 32);
        } while (got == 64);
        assert_int_equal(seen, t.objects);
        if (k == KILLS - 1) {
            /* the last round reads every object in full */
            seen = 0;
            do {
                assert_int_equal(sto_list(f->s, seen > 0 ? after : NULL, page, 64, &got), 0);
                for (size_t i = 0; i < got; i++)
                    verify_whole(f->s, page[i].addr);
                seen += got;
                if (got > 0)
                    memcpy(after, page[got - 1].addr, 32);
            } while (got == 64);
        }
        sto_close(f->s);
        f->s = NULL;
    }
    print_message("kill -9 x %d: %zu acknowledged puts, all intact\n", KILLS, nacked);
    assert_true(nacked > 0);
    assert_int_equal(fx_open(f), 0);
    free(acked);
}

#define BOTH(fn)                                                                  \
    cmocka_unit_test_setup_teardown(fn, setup_file, teardown),                    \
        cmocka_unit_test_setup_teardown(fn, setup_ram, teardown)

int
main(int argc, char **argv)
{
    const char *seed_env = getenv("RON_TEST_SEED");
    uint64_t seed = seed_env != NULL ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);

    rng_state = seed | 1;
    printf("# seed %llu (RON_TEST_SEED to repeat)\n", (unsigned long long)seed);
    const struct CMUnitTest threaded[] = {
        BOTH(test_concurrent_puts_of_same_object_store_one_copy),
    };
    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests(threaded, NULL, NULL);
    const struct CMUnitTest tests[] = {
        BOTH(test_put_get_round_trips_sizes_and_ranges_at_piece_boundaries),
        BOTH(test_same_object_twice_keeps_one_copy_and_one_pin_per_tenant),
        BOTH(test_concurrent_puts_of_same_object_store_one_copy),
        BOTH(test_expected_address_mismatch_stores_nothing),
        BOTH(test_put_write_piece_uses_verified_cvs_and_refuses_a_wrong_one),
        BOTH(test_corrupted_byte_fails_its_piece_only),
        BOTH(test_pins_count_per_tenant_and_last_unpin_makes_cache),
        BOTH(test_gc_evicts_oldest_cache_first_and_never_pinned),
        BOTH(test_pinned_bytes_over_quota_refused_as_insufficient_storage),
        BOTH(test_object_over_max_size_refused),
        BOTH(test_list_pages_through_every_object_in_order),
        cmocka_unit_test(test_addr_format_and_parse_round_trip),
        cmocka_unit_test_setup_teardown(test_reopen_after_close_keeps_objects_pins_and_ctype,
                                        setup_file, teardown),
        cmocka_unit_test_setup_teardown(
            test_open_removes_tmp_files_orphans_and_entries_without_files, setup_file, teardown),
        cmocka_unit_test_setup_teardown(
            test_open_reindexes_object_files_whose_index_commit_was_lost, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_store_of_another_format_version,
                                        setup_file, teardown),
        cmocka_unit_test_setup_teardown(
            test_read_only_open_in_another_process_serves_and_second_writer_is_refused, setup_file,
            teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_puts_leaves_objects_whole_or_absent,
                                        setup_file, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
