/*
 * test_svc_index.c - the name index over both backends (LMDB in a temp
 * data directory, RAM for amnesia): publish applies every acceptance rule
 * and a refusal changes nothing, resolve, paged prefix listing, bounds
 * (map full, max_records), concurrent publishers and resolvers (label
 * `threads`), and for LMDB: reopen keeps everything, a foreign format is
 * refused, and kill -9 of a child publishing records never loses one it
 * acknowledged.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
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
#include <lmdb.h>
#include <sodium.h>

#include "ron_err.h"
#include "svc_index.h"

#define NOW 1764000000LL

typedef struct {
    bool amnesia;
    char dir[256];
    idx_t *idx;
} fx_t;

static bool lmdb_mode = false, ram_mode = true;

typedef struct {
    uint8_t pk[32];
    uint8_t sk[64];
} kp_t;

static void
kp_make(kp_t *k, uint8_t seed_byte)
{
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof seed);
    crypto_sign_ed25519_seed_keypair(k->pk, k->sk, seed);
}

static name_record_t
rec_make(const char *name, uint64_t seq, const kp_t *signer, const kp_t *new_owner)
{
    name_record_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "%s", name);
    for (int i = 0; i < 32; i++)
        r.addr.b[i] = (uint8_t)(i + seq);
    r.seq = seq;
    r.ts = (uint64_t)NOW;
    if (new_owner != NULL) {
        r.has_new_owner = true;
        memcpy(r.new_owner, new_owner->pk, 32);
    }
    assert_int_equal(name_record_sign(&r, signer->sk), 0);
    return r;
}

static void
rm_rf(const char *dir)
{
    char path[512];
    const char *subs[] = {"index/data.mdb", "index/lock.mdb", "index", ""};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        if (remove(path) < 0 && errno != ENOENT)
            fail_msg("remove %s: %s", path, strerror(errno));
    }
}

static idx_t *
fx_open(fx_t *f, size_t map_size, size_t max_records)
{
    idx_config_t cfg = {.data_dir = f->dir,
                        .amnesia = f->amnesia,
                        .map_size = map_size,
                        .max_records = max_records};
    idx_t *idx = NULL;
    int rc = idx_new(&cfg, &idx);
    if (rc != 0)
        fail_msg("idx_new: %s", ron_strerror(rc));
    assert_int_equal(idx_is_amnesia(idx), f->amnesia);
    return idx;
}

static int
setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    f->amnesia = *(bool *)*state;
    snprintf(f->dir, sizeof f->dir, "/tmp/ron-idx-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    f->idx = fx_open(f, 0, 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx_t *f = *state;
    idx_free(f->idx);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static bool
rec_eq(const name_record_t *a, const name_record_t *b)
{
    return strcmp(a->name, b->name) == 0 && memcmp(a->addr.b, b->addr.b, 32) == 0 &&
           a->seq == b->seq && a->ts == b->ts && memcmp(a->owner, b->owner, 32) == 0 &&
           a->has_new_owner == b->has_new_owner &&
           (!a->has_new_owner || memcmp(a->new_owner, b->new_owner, 32) == 0) &&
           memcmp(a->sig, b->sig, 64) == 0;
}

static void
expect_current(idx_t *idx, const name_record_t *want)
{
    name_record_t got;
    assert_int_equal(idx_resolve(idx, want->name, &got), 0);
    assert_true(rec_eq(&got, want));
}

/* ---- behaviour common to both backends ---- */

static void
test_idx_publish_then_resolve_returns_the_record(void **state)
{
    fx_t *f = *state;
    kp_t a;
    name_record_t got;
    uint64_t n;
    kp_make(&a, 1);
    name_record_t r = rec_make("photos.alice", 1, &a, NULL);
    assert_int_equal(idx_resolve(f->idx, "photos.alice", &got), RON_ENOTFOUND);
    assert_int_equal(idx_publish(f->idx, &r, NOW, NULL), 0);
    expect_current(f->idx, &r);
    assert_int_equal(idx_count(f->idx, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(idx_resolve(f->idx, "Photos.alice", &got), RON_ENAME);
    assert_int_equal(idx_resolve(f->idx, "photos", &got), RON_ENAME);
    assert_int_equal(idx_resolve(f->idx, "video.alice", &got), RON_ENOTFOUND);
}

static void
test_idx_publish_applies_every_acceptance_rule_and_refusals_change_nothing(void **state)
{
    fx_t *f = *state;
    kp_t a, b, m;
    name_err_t e;
    kp_make(&a, 1);
    kp_make(&b, 2);
    kp_make(&m, 3);
    name_record_t r1 = rec_make("photos.alice", 1, &a, NULL);
    assert_int_equal(idx_publish(f->idx, &r1, NOW, &e), 0);

    name_record_t bad = rec_make("photos.alice", 2, &a, NULL);
    bad.sig[5] ^= 1;
    assert_int_equal(idx_publish(f->idx, &bad, NOW, &e), RON_ENAMESIG);
    name_record_t other = rec_make("photos.alice", 9, &m, NULL);
    assert_int_equal(idx_publish(f->idx, &other, NOW, &e), RON_ENAMEOWNER);
    name_record_t stale = rec_make("photos.alice", 1, &a, NULL);
    stale.addr.b[0] ^= 0xff;
    assert_int_equal(name_record_sign(&stale, a.sk), 0);
    assert_int_equal(idx_publish(f->idx, &stale, NOW, &e), RON_ENAMESTALE);
    name_record_t older = rec_make("photos.alice", 0, &a, NULL);
    assert_int_equal(idx_publish(f->idx, &older, NOW, &e), RON_ENAMESTALE);
    assert_int_equal(idx_publish(f->idx, &r1, NOW, &e), RON_ENAMEDUP);
    name_record_t future = rec_make("photos.alice", 2, &a, NULL);
    future.ts = NOW + NAME_MAX_FUTURE_S + 1;
    assert_int_equal(name_record_sign(&future, a.sk), 0);
    assert_int_equal(idx_publish(f->idx, &future, NOW, &e), RON_ENAMEFUTURE);
    expect_current(f->idx, &r1);

    name_record_t r2 = rec_make("photos.alice", 2, &a, NULL);
    assert_int_equal(idx_publish(f->idx, &r2, NOW, &e), 0);
    expect_current(f->idx, &r2);
    name_record_t xfer = rec_make("photos.alice", 3, &a, &b);
    assert_int_equal(idx_publish(f->idx, &xfer, NOW, &e), 0);
    expect_current(f->idx, &xfer);
    name_record_t by_old = rec_make("photos.alice", 4, &a, NULL);
    assert_int_equal(idx_publish(f->idx, &by_old, NOW, &e), RON_ENAMEOWNER);
    name_record_t by_new = rec_make("photos.alice", 4, &b, NULL);
    assert_int_equal(idx_publish(f->idx, &by_new, NOW, &e), 0);
    expect_current(f->idx, &by_new);
}

static void
test_idx_list_pages_by_prefix_in_name_order(void **state)
{
    fx_t *f = *state;
    kp_t a;
    kp_make(&a, 1);
    char name[64];
    /* 25 under "p", and a few around them that must not appear */
    for (int i = 0; i < 25; i++) {
        snprintf(name, sizeof name, "p%02d.alice", i);
        name_record_t r = rec_make(name, 1, &a, NULL);
        assert_int_equal(idx_publish(f->idx, &r, NOW, NULL), 0);
    }
    const char *others[] = {"o.alice", "q.alice", "a.b", "zz.top"};
    for (size_t i = 0; i < 4; i++) {
        name_record_t r = rec_make(others[i], 1, &a, NULL);
        assert_int_equal(idx_publish(f->idx, &r, NOW, NULL), 0);
    }
    name_record_t page[10];
    size_t n, total = 0;
    bool more = true;
    char after[NAME_MAX_LEN + 1] = "";
    int pages = 0;
    while (more && pages < 10) {
        assert_int_equal(idx_list(f->idx, "p", after, page, 10, &n, &more), 0);
        for (size_t i = 0; i < n; i++) {
            snprintf(name, sizeof name, "p%02zu.alice", total + i);
            assert_string_equal(page[i].name, name);
        }
        total += n;
        if (n > 0)
            strcpy(after, page[n - 1].name);
        pages++;
    }
    assert_int_equal(total, 25);
    assert_int_equal(pages, 3);
    assert_int_equal(idx_list(f->idx, "", NULL, page, 10, &n, &more), 0);
    assert_int_equal(n, 10);
    assert_true(more);
    assert_string_equal(page[0].name, "a.b");
    assert_string_equal(page[1].name, "o.alice");
    assert_int_equal(idx_list(f->idx, "zz", NULL, page, 10, &n, &more), 0);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_int_equal(idx_list(f->idx, "x", NULL, page, 10, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_false(more);
    /* an `after` before the prefix starts at the prefix; one past it ends */
    assert_int_equal(idx_list(f->idx, "p", "a", page, 10, &n, &more), 0);
    assert_string_equal(page[0].name, "p00.alice");
    assert_int_equal(idx_list(f->idx, "p", "p24.alice", page, 10, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_int_equal(idx_list(f->idx, "p", NULL, page, 0, &n, &more), RON_EINVAL);
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(idx_list(f->idx, longp, NULL, page, 10, &n, &more), RON_EINVAL);
}

typedef struct {
    idx_t *idx;
    int id;
    int published;
    int resolved;
} worker_t;

static void *
worker(void *arg)
{
    worker_t *w = arg;
    kp_t k;
    char name[64];
    kp_make(&k, (uint8_t)(10 + w->id));
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "n%d.t%d", i % 8, w->id);
        name_record_t r = rec_make(name, (uint64_t)i, &k, NULL), got;
        if (idx_publish(w->idx, &r, NOW, NULL) == 0)
            w->published++;
        snprintf(name, sizeof name, "n%d.t%d", i % 8, (w->id + 1) % 4);
        if (idx_resolve(w->idx, name, &got) == 0 && name_record_verify(&got, NULL) == 0)
            w->resolved++;
    }
    return NULL;
}

static void
test_idx_concurrent_publishers_and_resolvers_stay_consistent(void **state)
{
    fx_t *f = *state;
    pthread_t th[4];
    worker_t w[4];
    uint64_t n;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){f->idx, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i].published, 40); /* seq rises per name: every one accepted */
    assert_int_equal(idx_count(f->idx, &n), 0);
    assert_int_equal(n, 32);
    for (int t = 0; t < 4; t++)
        for (int k = 0; k < 8; k++) {
            char name[64];
            name_record_t got;
            snprintf(name, sizeof name, "n%d.t%d", k, t);
            assert_int_equal(idx_resolve(f->idx, name, &got), 0);
            assert_int_equal(got.seq, 32 + k); /* the last of i = k, k+8, ..., k+32 */
        }
}

/* ---- bounds ---- */

static void
test_idx_ram_refuses_new_names_beyond_max_records(void **state)
{
    (void)state;
    fx_t f = {.amnesia = true};
    kp_t a;
    kp_make(&a, 1);
    idx_t *idx = fx_open(&f, 0, 3);
    char name[32];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "n%d.full", i);
        name_record_t r = rec_make(name, 1, &a, NULL);
        assert_int_equal(idx_publish(idx, &r, NOW, NULL), i < 3 ? 0 : RON_EIDXFULL);
    }
    name_record_t up = rec_make("n0.full", 2, &a, NULL); /* updates still fit */
    assert_int_equal(idx_publish(idx, &up, NOW, NULL), 0);
    idx_free(idx);
}

static void
test_idx_amnesia_writes_nothing_to_the_data_dir(void **state)
{
    fx_t *f = *state; /* RAM mode fixture: its dir must stay empty */
    kp_t a;
    kp_make(&a, 1);
    name_record_t r = rec_make("photos.alice", 1, &a, NULL);
    assert_int_equal(idx_publish(f->idx, &r, NOW, NULL), 0);
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    int entries = 0;
    while ((de = readdir(d)) != NULL)
        entries += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    assert_int_equal(entries, 0);
}

/* ---- LMDB only ---- */

static void
test_idx_lmdb_reopen_keeps_every_record(void **state)
{
    fx_t *f = *state;
    kp_t a;
    char name[32];
    kp_make(&a, 1);
    name_record_t recs[50];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "r%d.keep", i);
        recs[i] = rec_make(name, (uint64_t)i, &a, NULL);
        assert_int_equal(idx_publish(f->idx, &recs[i], NOW, NULL), 0);
    }
    idx_free(f->idx);
    f->idx = fx_open(f, 0, 0);
    for (int i = 0; i < 50; i++)
        expect_current(f->idx, &recs[i]);
    /* the rules still hold across the reopen */
    name_record_t stale = rec_make("r7.keep", 7, &a, NULL);
    assert_int_equal(idx_publish(f->idx, &stale, NOW, NULL), RON_ENAMEDUP);
    struct stat st;
    char path[512];
    snprintf(path, sizeof path, "%s/index", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
}

static void
test_idx_lmdb_map_full_refuses_without_damage(void **state)
{
    fx_t *f = *state;
    kp_t a;
    char name[64];
    int i, rc = 0;
    kp_make(&a, 1);
    idx_free(f->idx);
    rm_rf(f->dir);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    f->idx = fx_open(f, IDX_MAP_SIZE_MIN, 0);
    for (i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "record-%04d.fills-the-map", i);
        name_record_t r = rec_make(name, 1, &a, NULL);
        rc = idx_publish(f->idx, &r, NOW, NULL);
        if (rc != 0)
            break;
    }
    assert_int_equal(rc, RON_EIDXFULL);
    assert_true(i > 10);
    name_record_t first = rec_make("record-0000.fills-the-map", 1, &a, NULL);
    expect_current(f->idx, &first);
    uint64_t n;
    assert_int_equal(idx_count(f->idx, &n), 0);
    assert_int_equal(n, (uint64_t)i);
}

static void
test_idx_lmdb_refuses_another_format_version(void **state)
{
    fx_t *f = *state;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    MDB_val key = {6, "format"}, val = {2, "99"};
    char path[512];
    idx_free(f->idx);
    f->idx = NULL;
    snprintf(path, sizeof path, "%s/index", f->dir);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_put(txn, meta, &key, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    idx_config_t cfg = {.data_dir = f->dir};
    idx_t *idx = NULL;
    assert_int_equal(idx_new(&cfg, &idx), RON_EVERSION);
    assert_null(idx);
    cfg.data_dir = NULL;
    assert_int_equal(idx_new(&cfg, &idx), RON_EINVAL);
    cfg.data_dir = "/nonexistent/ron-idx-test";
    assert_int_equal(idx_new(&cfg, &idx), -ENOENT);
    cfg.data_dir = f->dir;
    cfg.map_size = 4096;
    assert_int_equal(idx_new(&cfg, &idx), RON_EINVAL);
}

/* Child: publish seq 1, 2, ... of one name, writing each acknowledged seq
 * (8 bytes) to the pipe after idx_publish returns 0. Never returns. */
static void
child_publish(const char *dir, int wfd, uint64_t from)
{
    idx_config_t cfg = {.data_dir = dir};
    idx_t *idx = NULL;
    kp_t a;
    char name[32];
    kp_make(&a, 1);
    if (idx_new(&cfg, &idx) != 0)
        _exit(2);
    for (uint64_t s = from; s < from + 100000; s++) {
        snprintf(name, sizeof name, "k%llu.kill", (unsigned long long)(s % 5));
        name_record_t r = rec_make(name, s, &a, NULL);
        if (idx_publish(idx, &r, NOW, NULL) != 0)
            _exit(3);
        if (write(wfd, &s, sizeof s) != sizeof s)
            _exit(4);
    }
    _exit(0);
}

static void
test_idx_lmdb_kill9_never_loses_an_acknowledged_record(void **state)
{
    fx_t *f = *state;
    uint64_t next = 1;
    idx_free(f->idx);
    f->idx = NULL;
    for (int round = 0; round < 10; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_publish(f->dir, fds[1], next);
        }
        close(fds[1]);
        /* let it acknowledge a few, then kill it at a random moment */
        uint64_t acked = 0, s;
        int want = 3 + (int)(randombytes_uniform(20));
        for (int k = 0; k < want && read(fds[0], &s, sizeof s) == sizeof s; k++)
            acked = s;
        struct timespec ts = {0, (long)randombytes_uniform(3000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        while (read(fds[0], &s, sizeof s) == sizeof s) /* acks written before death */
            acked = s;
        close(fds[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_true(acked >= next);
        /* every acknowledged seq is there: each name holds at least its last acked seq */
        idx_t *idx = fx_open(f, 0, 0);
        uint64_t top = acked;
        for (uint64_t k = 0; k < 5 && top >= next + k; k++) {
            uint64_t s_k = top - k; /* the last acked seq of name (top - k) % 5 */
            char name[32];
            name_record_t got;
            snprintf(name, sizeof name, "k%llu.kill", (unsigned long long)(s_k % 5));
            assert_int_equal(idx_resolve(idx, name, &got), 0);
            assert_true(got.seq >= s_k);
            assert_int_equal(name_record_verify(&got, NULL), 0);
            if (got.seq > next)
                next = got.seq;
        }
        /* an unacknowledged commit may also have landed: continue above both */
        for (int k = 0; k < 5; k++) {
            char name[32];
            name_record_t got;
            snprintf(name, sizeof name, "k%d.kill", k);
            if (idx_resolve(idx, name, &got) == 0 && got.seq >= next)
                next = got.seq;
        }
        next++;
        idx_free(idx);
    }
    f->idx = fx_open(f, 0, 0); /* for teardown */
}

int
main(void)
{
    if (sodium_init() < 0)
        return 1;
#define BOTH(t)                                                                                    \
    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &lmdb_mode),                      \
        cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &ram_mode)
#define LMDB(t) cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, &lmdb_mode)
    const struct CMUnitTest tests[] = {
        BOTH(test_idx_publish_then_resolve_returns_the_record),
        BOTH(test_idx_publish_applies_every_acceptance_rule_and_refusals_change_nothing),
        BOTH(test_idx_list_pages_by_prefix_in_name_order),
        BOTH(test_idx_concurrent_publishers_and_resolvers_stay_consistent),
        cmocka_unit_test(test_idx_ram_refuses_new_names_beyond_max_records),
        cmocka_unit_test_prestate_setup_teardown(test_idx_amnesia_writes_nothing_to_the_data_dir,
                                                 setup, teardown, &ram_mode),
        LMDB(test_idx_lmdb_reopen_keeps_every_record),
        LMDB(test_idx_lmdb_map_full_refuses_without_damage),
        LMDB(test_idx_lmdb_refuses_another_format_version),
        LMDB(test_idx_lmdb_kill9_never_loses_an_acknowledged_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
