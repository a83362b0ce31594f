/*
 * sto_file.c - the file backend of the object store: each object is one
 * file under <dir>/objects/ (a header naming its size, address, put tenant
 * and content type, then its bytes, then its outboard), puts are staged in
 * <dir>/tmp/, and one LMDB environment in <dir>/meta/ holds the metadata
 * (object index, per-tenant pins, cache order, totals). Layout and crash
 * ordering: docs/protocol/storage-format.md.
 * Invariants (crash-only): an object file gets its final name only once it
 * is durable (fdatasync, rename, directory fsync), and from then on it is
 * authoritative: its header carries everything its put's index transaction
 * wrote, so recovery re-indexes a file whose transaction an OS crash undid
 * (LMDB runs MDB_NOMETASYNC; every other transaction is synced on commit).
 * GC removes files durably before it drops their index entries, so recovery
 * never resurrects an evicted object. Store mutations run under s->lock, so
 * a commit, a pin change and GC never interleave; readers take no lock
 * (LMDB read txns, immutable files).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ron_fs.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "sto_internal.h"

#define FORMAT_TEXT "ron-store 2\n"
#define FORMAT_TEXT_V1 "ron-store 1\n" /* separate .ob files; refused with a hint */

enum { PIN_ADD, PIN_ENSURE, PIN_DROP };

static int
mdb_err(int rc)
{
    if (rc == 0)
        return 0;
    if (rc == MDB_NOTFOUND)
        return RON_ENOTFOUND;
    if (rc > 0)
        return -rc;
    ron_error("svc-storage: lmdb: %s", mdb_strerror(rc));
    return RON_ESTORE;
}

/*
 * Commit txn and make it durable. The environment runs MDB_NOMETASYNC, so a
 * commit flushes its data pages but not the meta page that publishes them:
 * integrity holds, but an OS crash may undo the last commit. Every write
 * transaction but a new object's put is made durable here; a put's is not,
 * because its object file already carries everything it wrote (recovery
 * re-indexes the file: docs/protocol/storage-format.md).
 */
static int
txn_commit_durable(sto_store_t *s, MDB_txn *txn)
{
    int rc = mdb_err(mdb_txn_commit(txn));

    return rc < 0 ? rc : mdb_err(mdb_env_sync(s->env, 1));
}

static char *
path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = ron_xmalloc(n);

    snprintf(p, n, "%s/%s", a, b);
    return p;
}

char *
sto__file_object_path(const sto_store_t *s, const uint8_t *addr, const char *suffix)
{
    char hex[68], rel[128];

    sto_addr_format(addr, hex);
    snprintf(rel, sizeof(rel), "objects/%.2s/%s%s", hex + 3, hex + 3, suffix);
    return path_join(s->dir, rel);
}

/* ---- the syncer: a put's directory fsync beside its index commit ----
 *
 * After a new object's rename, two flushes remain: the directory (the name)
 * and LMDB (the index entry). They are independent: a crash that keeps the
 * entry but not the name leaves an entry without a file, which recovery
 * drops; one that keeps the name but not the entry leaves a file recovery
 * re-indexes; the put is acknowledged only after both. So one thread per
 * writable store fsyncs the directory while the committing thread commits.
 * One job at a time: jobs are submitted under s->lock only.
 */

struct sto__syncer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *dir; /* the job: fsync this directory (borrowed until done); NULL idle */
    int rc;          /* the job's result, valid once dir is NULL again */
    int stop;
};

static void *
syncer_main(void *arg)
{
    struct sto__syncer *y = arg;

    pthread_mutex_lock(&y->mu);
    for (;;) {
        while (y->dir == NULL && !y->stop)
            pthread_cond_wait(&y->cv, &y->mu);
        if (y->dir == NULL)
            break; /* stop, and no job left */
        const char *dir = y->dir;
        pthread_mutex_unlock(&y->mu);
        int rc = ron_fsync_dir(dir);
        pthread_mutex_lock(&y->mu);
        y->rc = rc;
        y->dir = NULL;
        pthread_cond_broadcast(&y->cv);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

static int
syncer_new(sto_store_t *s)
{
    struct sto__syncer *y = ron_xcalloc(1, sizeof(*y));
    int rc;

    pthread_mutex_init(&y->mu, NULL);
    pthread_cond_init(&y->cv, NULL);
    if ((rc = pthread_create(&y->thread, NULL, syncer_main, y)) != 0) {
        pthread_cond_destroy(&y->cv);
        pthread_mutex_destroy(&y->mu);
        free(y);
        return -rc;
    }
    s->syncer = y;
    return 0;
}

static void
syncer_free(struct sto__syncer *y)
{
    if (y == NULL)
        return;
    pthread_mutex_lock(&y->mu);
    y->stop = 1;
    pthread_cond_broadcast(&y->cv);
    pthread_mutex_unlock(&y->mu);
    pthread_join(y->thread, NULL);
    pthread_cond_destroy(&y->cv);
    pthread_mutex_destroy(&y->mu);
    free(y);
}

/* Start fsyncing dir (borrowed until syncer_wait returns). Lock held. */
static void
syncer_start(struct sto__syncer *y, const char *dir)
{
    pthread_mutex_lock(&y->mu);
    y->dir = dir;
    pthread_cond_broadcast(&y->cv);
    pthread_mutex_unlock(&y->mu);
}

/* Wait for the job syncer_start submitted; its result (0 or -errno). */
static int
syncer_wait(struct sto__syncer *y)
{
    int rc;

    pthread_mutex_lock(&y->mu);
    while (y->dir != NULL)
        pthread_cond_wait(&y->cv, &y->mu);
    rc = y->rc;
    pthread_mutex_unlock(&y->mu);
    return rc;
}

/* ---- FORMAT file ---- */

static int
format_check_or_write(sto_store_t *s)
{
    char *path = path_join(s->dir, "FORMAT"), *tmp = NULL;
    char buf[64];
    int fd = -1, rc = 0;
    ssize_t n;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        buf[n] = '\0';
        if (strcmp(buf, FORMAT_TEXT_V1) == 0) {
            ron_error("svc-storage: %s: store format 1 (data and .ob outboard in two files); "
                      "this node reads format 2 only: move the store aside and put its objects "
                      "again (docs/protocol/storage-format.md)", path);
            rc = RON_EVERSION;
        } else if (strcmp(buf, FORMAT_TEXT) != 0) {
            ron_error("svc-storage: %s: unsupported store format", path);
            rc = RON_EVERSION;
        }
        goto out;
    }
    if (errno != ENOENT || s->read_only) {
        rc = -errno;
        goto out;
    }
    tmp = path_join(s->dir, "FORMAT.tmp");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, FORMAT_TEXT, strlen(FORMAT_TEXT)) != (ssize_t)strlen(FORMAT_TEXT) ||
        fdatasync(fd) < 0 || rename(tmp, path) < 0) {
        rc = errno != 0 ? -errno : RON_ESTORE;
        goto out;
    }
    rc = ron_fsync_dir(s->dir);
out:
    if (fd >= 0)
        close(fd);
    free(path);
    free(tmp);
    return rc;
}

/* ---- record helpers (inside a txn) ---- */

static int
rec_get(sto_store_t *s, MDB_txn *txn, const uint8_t *addr, sto__rec_t *rec)
{
    MDB_val k = {STO_ADDR_LEN, (void *)addr}, v;
    int rc = mdb_err(mdb_get(txn, s->db_obj, &k, &v));

    if (rc < 0)
        return rc;
    return sto__rec_decode(v.mv_data, v.mv_size, rec);
}

static int
rec_put(sto_store_t *s, MDB_txn *txn, const uint8_t *addr, const sto__rec_t *rec)
{
    uint8_t buf[STO_REC_HDR_LEN + STO_CTYPE_MAX];
    MDB_val k = {STO_ADDR_LEN, (void *)addr}, v = {sto__rec_encode(rec, buf, sizeof(buf)), buf};

    return mdb_err(mdb_put(txn, s->db_obj, &k, &v, 0));
}

static int
totals_get(sto_store_t *s, MDB_txn *txn, sto__totals_t *t)
{
    MDB_val k = {6, "totals"}, v;
    int rc = mdb_err(mdb_get(txn, s->db_meta, &k, &v));

    if (rc == RON_ENOTFOUND) {
        memset(t, 0, sizeof(*t));
        return 0;
    }
    if (rc < 0)
        return rc;
    return sto__totals_decode(v.mv_data, v.mv_size, t);
}

static int
totals_put(sto_store_t *s, MDB_txn *txn, const sto__totals_t *t)
{
    uint8_t buf[STO_TOTALS_LEN];
    MDB_val k = {6, "totals"}, v = {sizeof(buf), buf};

    sto__totals_encode(t, buf);
    return mdb_err(mdb_put(txn, s->db_meta, &k, &v, 0));
}

static void
cache_key(uint8_t out[static STO_CACHE_KEY_LEN], uint64_t since, const uint8_t *addr)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(since >> (56 - 8 * i)); /* big-endian: oldest sorts first */
    memcpy(out + 8, addr, STO_ADDR_LEN);
}

static int
cache_set(sto_store_t *s, MDB_txn *txn, uint64_t since, const uint8_t *addr, int add)
{
    uint8_t key[STO_CACHE_KEY_LEN];
    MDB_val k = {sizeof(key), key}, v = {0, ""};

    cache_key(key, since, addr);
    if (add)
        return mdb_err(mdb_put(txn, s->db_cache, &k, &v, 0));
    int rc = mdb_err(mdb_del(txn, s->db_cache, &k, NULL));
    return rc == RON_ENOTFOUND ? 0 : rc;
}

/*
 * Change tenant's pin count on addr inside txn, keeping the object record,
 * the cache order and the totals consistent with it.
 */
static int
pin_change(sto_store_t *s, MDB_txn *txn, const uint8_t *tenant, const uint8_t *addr, int mode)
{
    uint8_t key[STO_PIN_KEY_LEN];
    MDB_val k = {sizeof(key), key}, v;
    uint8_t cbuf[4];
    sto__rec_t rec;
    sto__totals_t t;
    uint32_t count = 0;
    int rc;

    if ((rc = rec_get(s, txn, addr, &rec)) < 0 || (rc = totals_get(s, txn, &t)) < 0)
        return rc;
    memcpy(key, tenant, STO_TENANT_LEN);
    memcpy(key + STO_TENANT_LEN, addr, STO_ADDR_LEN);
    rc = mdb_err(mdb_get(txn, s->db_pin, &k, &v));
    if (rc == 0)
        rc = sto__u32_decode(v.mv_data, v.mv_size, &count);
    if (rc < 0 && rc != RON_ENOTFOUND)
        return rc;
    if (mode == PIN_ENSURE && count > 0)
        return 0;
    if (mode == PIN_DROP) {
        if (count == 0)
            return RON_ENOTFOUND;
        count--;
        rec.pins--;
    } else {
        if (count == UINT32_MAX || rec.pins == UINT32_MAX)
            return RON_EINVAL;
        count++;
        rec.pins++;
    }
    if (mode != PIN_DROP && rec.pins == 1) {
        /* cache -> pinned */
        if (s->quota != 0 && t.pinned_bytes + rec.size > s->quota)
            return RON_ESTOREFULL;
        if ((rc = cache_set(s, txn, rec.cache_since, addr, 0)) < 0)
            return rc;
        rec.state = STO_STATE_PINNED;
        rec.cache_since = 0;
        t.pinned_bytes += rec.size;
    } else if (mode == PIN_DROP && rec.pins == 0) {
        /* pinned -> cache */
        rec.state = STO_STATE_CACHE;
        rec.cache_since = sto__cache_stamp(s);
        if ((rc = cache_set(s, txn, rec.cache_since, addr, 1)) < 0)
            return rc;
        t.pinned_bytes -= rec.size;
    }
    if (count == 0) {
        rc = mdb_err(mdb_del(txn, s->db_pin, &k, NULL));
    } else {
        sto__put_le32(cbuf, count);
        v.mv_size = 4;
        v.mv_data = cbuf;
        rc = mdb_err(mdb_put(txn, s->db_pin, &k, &v, 0));
    }
    if (rc < 0 || (rc = rec_put(s, txn, addr, &rec)) < 0)
        return rc;
    return totals_put(s, txn, &t);
}

/* ---- open, recovery, close ---- */

static int
tmp_clear(sto_store_t *s)
{
    char *tdir = path_join(s->dir, "tmp");
    DIR *d = opendir(tdir);
    struct dirent *e;
    int removed = 0;

    if (d == NULL) {
        int rc = -errno;
        free(tdir);
        return rc;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    free(tdir);
    if (removed > 0)
        ron_info("svc-storage: recovery removed %d temporary files", removed);
    return 0;
}

/* 1 when the object file of addr exists with the length the record implies. */
static int
object_file_ok(sto_store_t *s, const uint8_t *addr, uint64_t size)
{
    char *path = sto__file_object_path(s, addr, "");
    struct stat st;
    int ok = stat(path, &st) == 0 && (uint64_t)st.st_size == sto__obj_file_len(size);

    free(path);
    return ok;
}

/* Drop index entries with missing or incomplete files and any pin or cache
 * row without its object. One write txn. */
static int
index_repair(sto_store_t *s)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    sto__rec_t rec;
    int rc, op, dropped = 0;

    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = mdb_err(mdb_cursor_open(txn, s->db_obj, &c))) < 0)
        goto out;
    for (op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
        if (k.mv_size != STO_ADDR_LEN || sto__rec_decode(v.mv_data, v.mv_size, &rec) < 0 ||
            !object_file_ok(s, k.mv_data, rec.size)) {
            if ((rc = mdb_err(mdb_cursor_del(c, 0))) < 0)
                goto out;
            dropped++;
        }
    }
    if (rc != MDB_NOTFOUND && (rc = mdb_err(rc)) < 0)
        goto out;
    mdb_cursor_close(c);
    /* pins and cache rows must name an indexed object in the matching state */
    for (int pass = 0; pass < 2; pass++) {
        MDB_dbi dbi = pass == 0 ? s->db_pin : s->db_cache;
        size_t aoff = pass == 0 ? STO_TENANT_LEN : 8;
        if ((rc = mdb_err(mdb_cursor_open(txn, dbi, &c))) < 0) {
            c = NULL;
            goto out;
        }
        for (op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
            int keep = k.mv_size == aoff + STO_ADDR_LEN &&
                       rec_get(s, txn, (uint8_t *)k.mv_data + aoff, &rec) == 0 &&
                       (pass == 0 ? rec.state == STO_STATE_PINNED
                                  : rec.state == STO_STATE_CACHE);
            if (!keep && (rc = mdb_err(mdb_cursor_del(c, 0))) < 0)
                goto out;
        }
        if (rc != MDB_NOTFOUND && (rc = mdb_err(rc)) < 0)
            goto out;
        mdb_cursor_close(c);
        c = NULL;
    }
    rc = txn_commit_durable(s, txn);
    txn = NULL;
    if (dropped > 0)
        ron_warn("svc-storage: recovery dropped %d index entries with missing or incomplete files",
                 dropped);
out:
    if (c != NULL)
        mdb_cursor_close(c);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

/*
 * Insert the index entry a put's transaction wrote, from the object file's
 * header h: the record, the tenant's pin (or, for a cache copy, a cache
 * row). Totals are recomputed by index_repair. Inside txn.
 */
static int
index_from_header(sto_store_t *s, MDB_txn *txn, const sto__obj_hdr_t *h)
{
    uint8_t key[STO_PIN_KEY_LEN], cbuf[4];
    MDB_val k = {sizeof(key), key}, v = {sizeof(cbuf), cbuf};
    sto__rec_t rec = {0};
    int rc;

    rec.size = h->size;
    rec.created = h->created;
    rec.ctype_len = h->ctype_len;
    memcpy(rec.ctype, h->ctype, h->ctype_len + 1u);
    if (h->flags & STO_OBJ_PINNED) {
        rec.state = STO_STATE_PINNED;
        rec.pins = 1;
        memcpy(key, h->tenant, STO_TENANT_LEN);
        memcpy(key + STO_TENANT_LEN, h->root, STO_ADDR_LEN);
        sto__put_le32(cbuf, 1);
        if ((rc = mdb_err(mdb_put(txn, s->db_pin, &k, &v, 0))) < 0)
            return rc;
    } else {
        rec.state = STO_STATE_CACHE;
        rec.cache_since = sto__cache_stamp(s);
        if ((rc = cache_set(s, txn, rec.cache_since, h->root, 1)) < 0)
            return rc;
    }
    return rec_put(s, txn, h->root, &rec);
}

/*
 * Decide the fate of object file name in directory dfd that the index does
 * not name: 1 to re-index it (*h_out filled), 0 to delete it. A file is
 * re-indexed only when its name is an address, its header decodes, names
 * that address, and the file has exactly the length its size implies.
 */
static int
orphan_header(int dfd, const char *name, sto__obj_hdr_t *h_out)
{
    uint8_t addr[STO_ADDR_LEN], hdr[STO_OBJ_HDR_LEN];
    struct stat st;
    int fd, ok;

    if (strlen(name) != 64 || sto_addr_parse(name, addr) < 0)
        return 0;
    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ok = fstat(fd, &st) == 0 && pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
         sto__obj_hdr_decode(hdr, sizeof(hdr), h_out) == 0 &&
         memcmp(h_out->root, addr, STO_ADDR_LEN) == 0 &&
         (uint64_t)st.st_size == sto__obj_file_len(h_out->size);
    close(fd);
    return ok;
}

/*
 * Object files are authoritative: every well-formed object file the index
 * does not name is indexed from its header (a put whose index commit an OS
 * crash undid, or a put killed between its rename and its commit); any
 * other file under objects/ is deleted (including the file of an entry
 * index_repair dropped for its length). Then the totals are recomputed.
 * One write txn. GC removes files durably before it commits, so no evicted
 * object comes back here.
 */
/* Recompute the totals from the object records. Inside txn. */
static int
totals_recompute(sto_store_t *s, MDB_txn *txn)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    sto__totals_t t = {0};
    sto__rec_t rec;
    int rc, op;

    if ((rc = mdb_err(mdb_cursor_open(txn, s->db_obj, &c))) < 0)
        return rc;
    for (op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
        if ((rc = sto__rec_decode(v.mv_data, v.mv_size, &rec)) < 0)
            break; /* index_repair dropped undecodable records: defensive */
        t.objects++;
        t.stored_bytes += rec.size;
        if (rec.state == STO_STATE_PINNED)
            t.pinned_bytes += rec.size;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND && (rc = mdb_err(rc)) < 0)
        return rc;
    return totals_put(s, txn, &t);
}

static int
orphans_reindex(sto_store_t *s)
{
    char *odir = path_join(s->dir, "objects");
    DIR *d = opendir(odir), *sd;
    struct dirent *e, *f;
    MDB_txn *txn = NULL;
    int rc = 0, removed = 0, added = 0;

    if (d == NULL) {
        rc = -errno;
        goto out;
    }
    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int sfd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0 || (sd = fdopendir(sfd)) == NULL) {
            if (sfd >= 0)
                close(sfd);
            continue;
        }
        while ((f = readdir(sd)) != NULL) {
            uint8_t addr[STO_ADDR_LEN];
            sto__obj_hdr_t h;
            sto__rec_t rec;
            if (f->d_name[0] == '.')
                continue;
            if (strlen(f->d_name) == 64 && sto_addr_parse(f->d_name, addr) == 0 &&
                rec_get(s, txn, addr, &rec) == 0)
                continue;
            if (orphan_header(dirfd(sd), f->d_name, &h)) {
                if ((rc = index_from_header(s, txn, &h)) < 0) {
                    closedir(sd);
                    goto out;
                }
                added++;
            } else if (unlinkat(dirfd(sd), f->d_name, 0) == 0) {
                removed++;
            }
        }
        closedir(sd);
    }
    if ((rc = totals_recompute(s, txn)) < 0)
        goto out;
    rc = txn_commit_durable(s, txn);
    txn = NULL;
    if (added > 0)
        ron_warn("svc-storage: recovery re-indexed %d object files from their headers", added);
    if (removed > 0)
        ron_info("svc-storage: recovery removed %d files that are not object files", removed);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (d != NULL)
        closedir(d);
    free(odir);
    return rc;
}

/* Create the 256 fan-out directories objects/00..ff once, so no put pays
 * for a mkdir and the fsync of objects/ that would make it durable. */
static int
fanout_create(sto_store_t *s)
{
    char *odir = path_join(s->dir, "objects");
    char name[3];
    int created = 0, rc = 0, dfd = open(odir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (dfd < 0) {
        rc = -errno;
        goto out;
    }
    for (int i = 0; i < 256 && rc == 0; i++) {
        snprintf(name, sizeof(name), "%02x", i);
        if (mkdirat(dfd, name, 0700) == 0)
            created++;
        else if (errno != EEXIST)
            rc = -errno;
    }
    if (rc == 0 && created > 0 && fsync(dfd) < 0)
        rc = -errno;
    close(dfd);
out:
    free(odir);
    return rc;
}

static int
dbis_open(sto_store_t *s)
{
    MDB_txn *txn = NULL;
    unsigned fl = s->read_only ? 0 : MDB_CREATE;
    int rc = mdb_err(mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn));

    if (rc < 0)
        return rc;
    if ((rc = mdb_err(mdb_dbi_open(txn, "objects", fl, &s->db_obj))) < 0 ||
        (rc = mdb_err(mdb_dbi_open(txn, "pins", fl, &s->db_pin))) < 0 ||
        (rc = mdb_err(mdb_dbi_open(txn, "cache", fl, &s->db_cache))) < 0 ||
        (rc = mdb_err(mdb_dbi_open(txn, "meta", fl, &s->db_meta))) < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return s->read_only ? mdb_err(mdb_txn_commit(txn)) : txn_commit_durable(s, txn);
}

int
sto__file_open(sto_store_t *s, const sto_config_t *cfg, uint64_t map_size)
{
    char *p = NULL;
    int rc;

    s->dir = ron_xstrdup(cfg->dir);
    if (!s->read_only && (rc = ron_mkdir_private(s->dir)) < 0)
        return rc;
    if ((rc = format_check_or_write(s)) < 0)
        return rc;
    if (!s->read_only) {
        static const char *const sub[] = {"objects", "tmp", "meta"};
        for (size_t i = 0; i < 3; i++) {
            p = path_join(s->dir, sub[i]);
            rc = ron_mkdir_private(p);
            free(p);
            if (rc < 0)
                return rc;
        }
        p = path_join(s->dir, "LOCK");
        s->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        free(p);
        if (s->lock_fd < 0)
            return -errno;
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0)
            return errno == EWOULDBLOCK ? RON_EBUSY : -errno;
    }
    if ((rc = mdb_err(mdb_env_create(&s->env))) < 0) {
        s->env = NULL;
        return rc;
    }
    mdb_env_set_maxdbs(s->env, 4);
    if ((rc = mdb_err(mdb_env_set_mapsize(s->env, (size_t)map_size))) < 0)
        return rc;
    p = path_join(s->dir, "meta");
    /* MDB_NOMETASYNC: one flush per commit; see txn_commit_durable() */
    rc = mdb_err(mdb_env_open(s->env, p,
                              MDB_NOTLS | (s->read_only ? MDB_RDONLY : MDB_NOMETASYNC), 0600));
    free(p);
    if (rc < 0)
        return rc;
    if ((rc = dbis_open(s)) < 0)
        return rc;
    if (s->read_only)
        return 0;
    if ((rc = tmp_clear(s)) < 0 || (rc = fanout_create(s)) < 0 || (rc = index_repair(s)) < 0 ||
        (rc = orphans_reindex(s)) < 0 || (rc = sto__partial_recover(s)) < 0 ||
        (rc = syncer_new(s)) < 0)
        return rc;
    return 0;
}

void
sto__file_close(sto_store_t *s)
{
    syncer_free(s->syncer);
    if (s->env != NULL)
        mdb_env_close(s->env);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s->dir);
}

/* ---- put ---- */

int
sto__file_put_open(sto_put_t *p)
{
    uint8_t rnd[8];
    char name[40];

    if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
        return -errno;
    snprintf(name, sizeof(name), "tmp/%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    p->tmp_data = path_join(p->s->dir, name);
    p->fd = open(p->tmp_data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0)
        return -errno;
    /* the bytes follow the header, which the commit writes at offset 0 */
    if (lseek(p->fd, STO_OBJ_HDR_LEN, SEEK_SET) < 0)
        return -errno;
    if (p->declared != STO_SIZE_UNKNOWN) {
        /* the outboard's final place is known: write it there as it comes */
        p->ob_fd = p->fd;
        p->ob_base = STO_OBJ_HDR_LEN + p->declared;
        return 0;
    }
    size_t n = strlen(p->tmp_data) + 4;
    p->tmp_ob = ron_xmalloc(n);
    snprintf(p->tmp_ob, n, "%s.ob", p->tmp_data);
    p->ob_fd = open(p->tmp_ob, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->ob_fd < 0)
        return -errno;
    p->ob_base = 0;
    return 0;
}

void
sto__file_put_discard(sto_put_t *p)
{
    if (p->ob_fd >= 0 && p->ob_fd != p->fd)
        close(p->ob_fd);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = p->ob_fd = -1;
    if (p->tmp_data != NULL)
        unlink(p->tmp_data);
    if (p->tmp_ob != NULL)
        unlink(p->tmp_ob);
    free(p->tmp_data);
    free(p->tmp_ob);
    p->tmp_data = p->tmp_ob = NULL;
}

/* Append the spilled outboard (size was not declared) after the bytes. */
static int
put_ob_append(sto_put_t *p)
{
    off_t in = 0, out = (off_t)(STO_OBJ_HDR_LEN + p->len);
    uint8_t buf[16384];

    while ((uint64_t)in < p->ob_written) {
        uint64_t left = p->ob_written - (uint64_t)in;
        size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
        ssize_t n = pread(p->ob_fd, buf, want, in);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : RON_ESTORE;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = pwrite(p->fd, buf + done, (size_t)(n - done), out + done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return -errno;
            done += w;
        }
        in += n;
        out += n;
    }
    return 0;
}

/* Make the temporary object file whole and durable: outboard in place,
 * header at offset 0, one fdatasync. */
static int
put_sync(sto_put_t *p, const uint8_t *root)
{
    uint8_t hdr[STO_OBJ_HDR_LEN];
    sto__obj_hdr_t h = {.size = p->len, .piece_size = STO_PIECE_LEN};
    int rc;

    if (p->ob_fd != p->fd && (rc = put_ob_append(p)) < 0)
        return rc;
    memcpy(h.root, root, STO_ADDR_LEN);
    h.created = p->created = sto__now_us() / 1000000u;
    if (p->pin) {
        h.flags = STO_OBJ_PINNED;
        memcpy(h.tenant, p->tenant, STO_TENANT_LEN);
    }
    h.ctype_len = (uint16_t)strlen(p->ctype);
    memcpy(h.ctype, p->ctype, h.ctype_len + 1u);
    sto__obj_hdr_encode(&h, hdr);
    if (pwrite(p->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
        return errno != 0 ? -errno : RON_ESTORE;
    if (fdatasync(p->fd) < 0)
        return -errno;
    return 0;
}

/* Move the durable temporary file to its final name; *dir_out returns new
 * the directory to fsync to make the name durable. Lock held. */
static int
put_publish(sto_put_t *p, const uint8_t *root, char **dir_out)
{
    char *path = sto__file_object_path(p->s, root, "");
    char *sub = ron_xstrdup(path);
    int rc = 0;

    *strrchr(sub, '/') = '\0';
    if (rename(p->tmp_data, path) < 0) {
        rc = -errno;
        if (rc == -ENOENT && mkdir(sub, 0700) == 0) {
            /* defensive: a fan-out directory removed since open; make it durable */
            char *odir = ron_xstrdup(sub);
            *strrchr(odir, '/') = '\0';
            rc = ron_fsync_dir(odir);
            free(odir);
            if (rc == 0 && rename(p->tmp_data, path) < 0)
                rc = -errno;
        }
    }
    if (rc == 0) {
        free(p->tmp_data);
        p->tmp_data = NULL;
        *dir_out = sub;
        sub = NULL;
    }
    free(path);
    free(sub);
    return rc;
}

/* Insert a new object as cache, then pin it for the put's tenant (unless
 * the put stores a cache copy). A new object's transaction is not made
 * durable here (its file's header carries it); a pin added to an object
 * already stored is. */
static int
put_index(sto_put_t *p, const uint8_t *root)
{
    sto_store_t *s = p->s;
    MDB_txn *txn = NULL;
    sto__rec_t rec = {0};
    sto__totals_t t;
    int rc, fresh = 0;

    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = rec_get(s, txn, root, &rec)) == RON_ENOTFOUND) {
        fresh = 1;
        memset(&rec, 0, sizeof(rec));
        rec.size = p->len;
        rec.created = p->created != 0 ? p->created : sto__now_us() / 1000000u; /* as the header */
        rec.cache_since = sto__cache_stamp(s);
        rec.state = STO_STATE_CACHE;
        rec.ctype_len = (uint16_t)strlen(p->ctype);
        memcpy(rec.ctype, p->ctype, rec.ctype_len);
        if ((rc = rec_put(s, txn, root, &rec)) < 0 ||
            (rc = cache_set(s, txn, rec.cache_since, root, 1)) < 0 ||
            (rc = totals_get(s, txn, &t)) < 0)
            goto out;
        t.objects++;
        t.stored_bytes += rec.size;
        if ((rc = totals_put(s, txn, &t)) < 0)
            goto out;
    } else if (rc < 0) {
        goto out;
    }
    if (p->pin && (rc = pin_change(s, txn, p->tenant, root, PIN_ENSURE)) < 0)
        goto out;
    rc = fresh ? mdb_err(mdb_txn_commit(txn)) : txn_commit_durable(s, txn);
    txn = NULL;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

int
sto__file_commit(sto_put_t *p, const uint8_t root[static STO_ADDR_LEN])
{
    sto_store_t *s = p->s;
    sto_stat_t st;
    sto__totals_t t;
    char *dir = NULL;
    int rc, drc;

    /* already stored (idempotent put): only the pin is added, and these
     * bytes need not be made durable */
    if (sto__file_stat(s, root, &st) == 0) {
        pthread_mutex_lock(&s->lock);
        rc = sto__file_stat(s, root, &st);
        if (rc == 0)
            rc = put_index(p, root);
        pthread_mutex_unlock(&s->lock);
        if (rc != RON_ENOTFOUND)
            return rc;
        /* evicted meanwhile: store these bytes after all */
    }
    /* the slow part (fdatasync of the bytes) runs outside the lock */
    if ((rc = put_sync(p, root)) < 0)
        return rc;
    pthread_mutex_lock(&s->lock);
    rc = sto__file_stat(s, root, &st);
    if (rc == 0) {
        rc = put_index(p, root);
        goto out;
    }
    if (rc != RON_ENOTFOUND || (rc = sto__file_totals(s, &t)) < 0)
        goto out;
    if (s->quota != 0) {
        if (t.pinned_bytes + p->len > s->quota) {
            rc = RON_ESTOREFULL;
            goto out;
        }
        if (t.stored_bytes + p->len > s->quota &&
            (rc = sto__file_gc(s, s->quota - p->len, NULL)) < 0)
            goto out;
    }
    if ((rc = put_publish(p, root, &dir)) < 0)
        goto out;
    /* the name's fsync and the index commit's flush run side by side */
    syncer_start(s->syncer, dir);
    rc = put_index(p, root);
    drc = syncer_wait(s->syncer);
    if (rc < 0) {
        /* not acknowledged: take the file back (no one else indexed it: lock
         * held), so a failing index (a full map) leaves no file for the next
         * open to re-index */
        char *path = sto__file_object_path(s, root, "");
        unlink(path);
        free(path);
    } else {
        rc = drc;
    }
out:
    pthread_mutex_unlock(&s->lock);
    free(dir);
    return rc;
}

/* ---- metadata ---- */

int
sto__file_stat(sto_store_t *s, const uint8_t *addr, sto_stat_t *st)
{
    MDB_txn *txn = NULL;
    sto__rec_t rec;
    int rc = mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));

    if (rc < 0)
        return rc;
    rc = rec_get(s, txn, addr, &rec);
    mdb_txn_abort(txn);
    if (rc == 0)
        sto__stat_from_rec(st, addr, &rec);
    return rc;
}

int
sto__file_list(sto_store_t *s, const uint8_t *after, sto_stat_t *out, size_t cap, size_t *n)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    uint8_t zero[STO_ADDR_LEN] = {0};
    MDB_val k = {STO_ADDR_LEN, (void *)(after != NULL ? after : zero)}, v;
    sto__rec_t rec;
    int rc, op = MDB_SET_RANGE;

    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) < 0)
        return rc;
    if ((rc = mdb_err(mdb_cursor_open(txn, s->db_obj, &c))) < 0)
        goto out;
    while (*n < cap && (rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        if (after != NULL && memcmp(k.mv_data, after, STO_ADDR_LEN) == 0)
            continue;
        if ((rc = sto__rec_decode(v.mv_data, v.mv_size, &rec)) < 0)
            goto out;
        sto__stat_from_rec(&out[(*n)++], k.mv_data, &rec);
    }
    rc = rc == MDB_NOTFOUND ? 0 : mdb_err(rc);
out:
    if (c != NULL)
        mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return rc;
}

int
sto__file_set_ctype(sto_store_t *s, const uint8_t *addr, const char *ctype)
{
    MDB_txn *txn = NULL;
    sto__rec_t rec;
    int rc;

    pthread_mutex_lock(&s->lock);
    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = rec_get(s, txn, addr, &rec)) < 0)
        goto out;
    rec.ctype_len = (uint16_t)strlen(ctype);
    memcpy(rec.ctype, ctype, rec.ctype_len);
    if ((rc = rec_put(s, txn, addr, &rec)) < 0)
        goto out;
    rc = txn_commit_durable(s, txn);
    txn = NULL;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto__file_totals(sto_store_t *s, sto__totals_t *t)
{
    MDB_txn *txn = NULL;
    int rc = mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));

    if (rc < 0)
        return rc;
    rc = totals_get(s, txn, t);
    mdb_txn_abort(txn);
    return rc;
}

int
sto__file_pin(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, int delta)
{
    MDB_txn *txn = NULL;
    int rc;

    pthread_mutex_lock(&s->lock);
    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = pin_change(s, txn, tenant, addr, delta > 0 ? PIN_ADD : PIN_DROP)) < 0)
        goto out;
    rc = txn_commit_durable(s, txn);
    txn = NULL;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto__file_pin_count(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, uint32_t *c)
{
    uint8_t key[STO_PIN_KEY_LEN];
    MDB_val k = {sizeof(key), key}, v;
    MDB_txn *txn = NULL;
    int rc = mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));

    if (rc < 0)
        return rc;
    memcpy(key, tenant, STO_TENANT_LEN);
    memcpy(key + STO_TENANT_LEN, addr, STO_ADDR_LEN);
    rc = mdb_err(mdb_get(txn, s->db_pin, &k, &v));
    if (rc == 0)
        rc = sto__u32_decode(v.mv_data, v.mv_size, c);
    else if (rc == RON_ENOTFOUND)
        rc = 0;
    mdb_txn_abort(txn);
    return rc;
}

int
sto__file_pin_list(sto_store_t *s, const uint8_t *tenant, const uint8_t *after, uint8_t *out,
                   size_t cap, size_t *n)
{
    uint8_t key[STO_PIN_KEY_LEN] = {0};
    MDB_val k = {sizeof(key), key}, v;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    int rc, op = MDB_SET_RANGE;

    memcpy(key, tenant, STO_TENANT_LEN);
    if (after != NULL)
        memcpy(key + STO_TENANT_LEN, after, STO_ADDR_LEN);
    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) < 0)
        return rc;
    if ((rc = mdb_err(mdb_cursor_open(txn, s->db_pin, &c))) < 0)
        goto out;
    while (*n < cap && (rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        if (k.mv_size != STO_PIN_KEY_LEN || memcmp(k.mv_data, tenant, STO_TENANT_LEN) != 0)
            break;
        const uint8_t *a = (const uint8_t *)k.mv_data + STO_TENANT_LEN;
        if (after != NULL && memcmp(a, after, STO_ADDR_LEN) == 0)
            continue;
        memcpy(out + STO_ADDR_LEN * (*n)++, a, STO_ADDR_LEN);
    }
    rc = rc == MDB_NOTFOUND || rc == 0 ? 0 : mdb_err(rc);
out:
    if (c != NULL)
        mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return rc;
}

/* Evict cache, oldest first, until stored bytes <= target. Lock held.
 * Files go first (unlinked, their directories fsynced), then the index
 * entries (one durable txn): object files are authoritative at recovery, so
 * an evicted object's file must never outlive its index entry on disk. A
 * crash in between leaves entries without files, which recovery drops. */
int
sto__file_gc(sto_store_t *s, uint64_t target, uint64_t *freed)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    sto__totals_t t;
    sto__rec_t rec;
    uint8_t *victims = NULL;
    size_t nv = 0, capv = 0;
    uint64_t got = 0;
    int rc;

    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = totals_get(s, txn, &t)) < 0)
        goto out;
    if ((rc = mdb_err(mdb_cursor_open(txn, s->db_cache, &c))) < 0)
        goto out;
    while (t.stored_bytes > target && (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        uint8_t addr[STO_ADDR_LEN];
        if (k.mv_size != STO_CACHE_KEY_LEN) {
            rc = RON_ESTORE;
            goto out;
        }
        memcpy(addr, (uint8_t *)k.mv_data + 8, STO_ADDR_LEN);
        if ((rc = mdb_err(mdb_cursor_del(c, 0))) < 0)
            goto out;
        if ((rc = rec_get(s, txn, addr, &rec)) < 0)
            goto out;
        MDB_val ak = {STO_ADDR_LEN, addr};
        if ((rc = mdb_err(mdb_del(txn, s->db_obj, &ak, NULL))) < 0)
            goto out;
        t.objects--;
        t.stored_bytes -= rec.size;
        got += rec.size;
        if (nv == capv) {
            capv = capv != 0 ? capv * 2 : 16;
            victims = ron_xrealloc(victims, capv * STO_ADDR_LEN);
        }
        memcpy(victims + STO_ADDR_LEN * nv++, addr, STO_ADDR_LEN);
    }
    if (rc != 0 && rc != MDB_NOTFOUND && (rc = mdb_err(rc)) < 0)
        goto out;
    mdb_cursor_close(c);
    c = NULL;
    if ((rc = totals_put(s, txn, &t)) < 0)
        goto out;
    /* readers holding a file open keep reading it; new opens get ENOTFOUND */
    for (size_t i = 0; i < nv; i++) {
        char *d = sto__file_object_path(s, victims + STO_ADDR_LEN * i, "");
        if (unlink(d) < 0 && errno != ENOENT)
            rc = -errno;
        *strrchr(d, '/') = '\0';
        if (rc == 0)
            rc = ron_fsync_dir(d);
        free(d);
        if (rc < 0)
            goto out; /* the txn is aborted: unlinked entries are dropped at the next open */
    }
    rc = txn_commit_durable(s, txn);
    txn = NULL;
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < nv; i++)
        sto__evicted(s, victims + STO_ADDR_LEN * i);
    if (freed != NULL)
        *freed = got;
out:
    if (c != NULL)
        mdb_cursor_close(c);
    if (txn != NULL)
        mdb_txn_abort(txn);
    free(victims);
    return rc;
}

/* ---- reader ---- */

int
sto__file_reader_open(sto_reader_t *r)
{
    sto_store_t *s = r->s;
    sto_stat_t st;
    sto__obj_hdr_t h;
    struct stat fst;
    uint8_t hdr[STO_OBJ_HDR_LEN];
    char *path = NULL;
    int rc;

    if ((rc = sto__file_stat(s, r->addr, &st)) < 0)
        return rc;
    r->size = st.size;
    memcpy(r->ctype, st.ctype, sizeof(r->ctype));
    path = sto__file_object_path(s, r->addr, "");
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = errno == ENOENT ? RON_ENOTFOUND : -errno; /* evicted meanwhile */
        goto out;
    }
    if (fstat(r->fd, &fst) < 0 || (uint64_t)fst.st_size != sto__obj_file_len(r->size)) {
        sto__corruption(s, r->addr, 0, "object file length differs from the index's size");
        rc = RON_EDIGEST;
        goto out;
    }
    if (pread(r->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
        sto__obj_hdr_decode(hdr, sizeof(hdr), &h) < 0 || h.size != r->size ||
        memcmp(h.root, r->addr, STO_ADDR_LEN) != 0) {
        sto__corruption(s, r->addr, 0, "object file header does not match the object");
        rc = RON_EDIGEST;
        goto out;
    }
    static const uint8_t no_nodes[1];
    r->ob = no_nodes; /* a one-piece object has no outboard nodes */
    r->ob_len = (size_t)sto_tree_outboard_len(r->size);
    if (r->ob_len > 0) {
        /* map the file's tail from the page holding the outboard's first byte */
        uint64_t ob_off = STO_OBJ_HDR_LEN + r->size;
        uint64_t map_off = ob_off & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
        r->map_len = (size_t)((uint64_t)fst.st_size - map_off);
        r->map = mmap(NULL, r->map_len, PROT_READ, MAP_SHARED, r->fd, (off_t)map_off);
        if (r->map == MAP_FAILED) {
            r->map = NULL;
            rc = -errno;
            goto out;
        }
        r->ob = (const uint8_t *)r->map + (ob_off - map_off);
    }
    rc = 0;
out:
    free(path);
    return rc;
}

void
sto__file_reader_close(sto_reader_t *r)
{
    if (r->map != NULL)
        munmap(r->map, r->map_len);
    if (r->fd >= 0)
        close(r->fd);
}
