/*
 * sto_file.c - the file backend of the object store: object bytes and
 * outboards as files under <dir>/objects/, puts staged in <dir>/tmp/, and
 * one LMDB environment in <dir>/meta/ holding only metadata (object index,
 * per-tenant pins, cache order, totals). Layout and crash ordering:
 * docs/protocol/storage-format.md.
 * Invariants (crash-only): an index entry is written only after both of its
 * files are durable under their final names (fdatasync, rename, directory
 * fsync); GC deletes the index entry first and the files after, so a crash
 * leaves at worst files without an entry, which the next writable open
 * deletes, together with every temporary file. Store mutations run under
 * s->lock, so a commit, a pin change and GC never interleave; readers take no
 * lock (LMDB read txns, immutable files).
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

#define FORMAT_TEXT "ron-store 1\n"

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
        if (strcmp(buf, FORMAT_TEXT) != 0) {
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

/* 1 when both files of addr exist with the sizes the record implies. */
static int
object_files_ok(sto_store_t *s, const uint8_t *addr, uint64_t size)
{
    char *data = sto__file_object_path(s, addr, ""), *ob = sto__file_object_path(s, addr, ".ob");
    struct stat st;
    int ok = stat(data, &st) == 0 && (uint64_t)st.st_size == size && stat(ob, &st) == 0 &&
             (uint64_t)st.st_size == STO_OB_HDR_LEN + sto_tree_outboard_len(size);

    free(data);
    free(ob);
    return ok;
}

/* Drop index entries with missing or incomplete files and any pin or cache
 * row without its object; recompute the totals. One write txn. */
static int
index_repair(sto_store_t *s)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    sto__totals_t t = {0};
    sto__rec_t rec;
    int rc, op, dropped = 0;

    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = mdb_err(mdb_cursor_open(txn, s->db_obj, &c))) < 0)
        goto out;
    for (op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
        if (k.mv_size != STO_ADDR_LEN || sto__rec_decode(v.mv_data, v.mv_size, &rec) < 0 ||
            !object_files_ok(s, k.mv_data, rec.size)) {
            if ((rc = mdb_err(mdb_cursor_del(c, 0))) < 0)
                goto out;
            dropped++;
            continue;
        }
        t.objects++;
        t.stored_bytes += rec.size;
        if (rec.state == STO_STATE_PINNED)
            t.pinned_bytes += rec.size;
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
    if ((rc = totals_put(s, txn, &t)) < 0)
        goto out;
    rc = mdb_err(mdb_txn_commit(txn));
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

/* Name "<64 hex>" or "<64 hex>.ob" -> addr; 0 or -1. */
static int
object_name_parse(const char *name, uint8_t addr[static STO_ADDR_LEN])
{
    char hex[65];
    size_t n = strlen(name);

    if (n != 64 && !(n == 67 && strcmp(name + 64, ".ob") == 0))
        return -1;
    memcpy(hex, name, 64);
    hex[64] = '\0';
    return sto_addr_parse(hex, addr) == 0 ? 0 : -1;
}

/* Delete object files the index does not name (puts that crashed between
 * rename and index commit, GC that crashed after its commit). */
static int
orphans_remove(sto_store_t *s)
{
    char *odir = path_join(s->dir, "objects");
    DIR *d = opendir(odir), *sd;
    struct dirent *e, *f;
    MDB_txn *txn = NULL;
    int rc = 0, removed = 0;

    if (d == NULL) {
        rc = -errno;
        goto out;
    }
    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) < 0)
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
            sto__rec_t rec;
            if (f->d_name[0] == '.')
                continue;
            if (object_name_parse(f->d_name, addr) == 0 && rec_get(s, txn, addr, &rec) == 0)
                continue;
            if (unlinkat(dirfd(sd), f->d_name, 0) == 0)
                removed++;
        }
        closedir(sd);
    }
    if (removed > 0)
        ron_info("svc-storage: recovery removed %d object files absent from the index", removed);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (d != NULL)
        closedir(d);
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
    return mdb_err(mdb_txn_commit(txn));
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
    rc = mdb_err(mdb_env_open(s->env, p, MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0), 0600));
    free(p);
    if (rc < 0)
        return rc;
    if ((rc = dbis_open(s)) < 0)
        return rc;
    if (s->read_only)
        return 0;
    if ((rc = tmp_clear(s)) < 0 || (rc = index_repair(s)) < 0 || (rc = orphans_remove(s)) < 0)
        return rc;
    return 0;
}

void
sto__file_close(sto_store_t *s)
{
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
    for (int which = 0; which < 2; which++) {
        snprintf(name, sizeof(name), "tmp/%02x%02x%02x%02x%02x%02x%02x%02x.%s", rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], which == 0 ? "dat" : "ob");
        *(which == 0 ? &p->tmp_data : &p->tmp_ob) = path_join(p->s->dir, name);
    }
    p->fd = open(p->tmp_data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0)
        return -errno;
    p->ob_fd = open(p->tmp_ob, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->ob_fd < 0)
        return -errno;
    return 0;
}

void
sto__file_put_discard(sto_put_t *p)
{
    if (p->fd >= 0)
        close(p->fd);
    if (p->ob_fd >= 0)
        close(p->ob_fd);
    p->fd = p->ob_fd = -1;
    if (p->tmp_data != NULL)
        unlink(p->tmp_data);
    if (p->tmp_ob != NULL)
        unlink(p->tmp_ob);
    free(p->tmp_data);
    free(p->tmp_ob);
    p->tmp_data = p->tmp_ob = NULL;
}

/* Make the temporary files durable: outboard header, fdatasync both. */
static int
put_sync(sto_put_t *p, const uint8_t *root)
{
    uint8_t hdr[STO_OB_HDR_LEN];
    sto__ob_hdr_t h = {.size = p->len, .piece_size = STO_PIECE_LEN};

    memcpy(h.root, root, STO_ADDR_LEN);
    sto__ob_hdr_encode(&h, hdr);
    if (pwrite(p->ob_fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
        return errno != 0 ? -errno : RON_ESTORE;
    if (fdatasync(p->fd) < 0 || fdatasync(p->ob_fd) < 0)
        return -errno;
    return 0;
}

/* Move the durable temporary files to their final names. Lock held. */
static int
put_publish(sto_put_t *p, const uint8_t *root)
{
    char *data = sto__file_object_path(p->s, root, ""), *ob = sto__file_object_path(p->s, root, ".ob");
    char *sub = ron_xstrdup(data);
    int rc = 0;

    *strrchr(sub, '/') = '\0';
    if (mkdir(sub, 0700) == 0) {
        /* a new fan-out directory: make its entry durable in objects/ */
        char *odir = ron_xstrdup(sub);
        *strrchr(odir, '/') = '\0';
        rc = ron_fsync_dir(odir);
        free(odir);
    } else if (errno != EEXIST) {
        rc = -errno;
    }
    /* outboard first: a data file never stands without its outboard */
    if (rc == 0 && (rename(p->tmp_ob, ob) < 0 || rename(p->tmp_data, data) < 0))
        rc = -errno;
    if (rc == 0) {
        free(p->tmp_ob);
        free(p->tmp_data);
        p->tmp_ob = p->tmp_data = NULL;
        rc = ron_fsync_dir(sub);
    }
    free(data);
    free(ob);
    free(sub);
    return rc;
}

/* Insert a new object as cache, then pin it for the put's tenant (unless
 * the put stores a cache copy). */
static int
put_index(sto_put_t *p, const uint8_t *root)
{
    sto_store_t *s = p->s;
    MDB_txn *txn = NULL;
    sto__rec_t rec = {0};
    sto__totals_t t;
    int rc;

    if ((rc = mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) < 0)
        goto out;
    if ((rc = rec_get(s, txn, root, &rec)) == RON_ENOTFOUND) {
        memset(&rec, 0, sizeof(rec));
        rec.size = p->len;
        rec.created = sto__now_us() / 1000000u;
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
    rc = mdb_err(mdb_txn_commit(txn));
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
    int rc;

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
    if ((rc = put_publish(p, root)) < 0)
        goto out;
    rc = put_index(p, root);
out:
    pthread_mutex_unlock(&s->lock);
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
    rc = mdb_err(mdb_txn_commit(txn));
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
    rc = mdb_err(mdb_txn_commit(txn));
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
 * Index entries go first (one txn), files after. */
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
    if ((rc = mdb_err(mdb_txn_commit(txn))) < 0) {
        txn = NULL;
        nv = 0;
        goto out;
    }
    txn = NULL;
    /* the index no longer names them: files can go (a crash here leaves
     * orphans the next open deletes) */
    for (size_t i = 0; i < nv; i++) {
        char *d = sto__file_object_path(s, victims + STO_ADDR_LEN * i, "");
        char *o = sto__file_object_path(s, victims + STO_ADDR_LEN * i, ".ob");
        unlink(d);
        unlink(o);
        free(d);
        free(o);
    }
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
    sto__ob_hdr_t h;
    struct stat fst;
    char *path = NULL;
    int ofd = -1, rc;

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
    if (fstat(r->fd, &fst) < 0 || (uint64_t)fst.st_size != r->size) {
        sto__corruption(s, r->addr, 0, "object file size differs from the index");
        rc = RON_EDIGEST;
        goto out;
    }
    free(path);
    path = sto__file_object_path(s, r->addr, ".ob");
    ofd = open(path, O_RDONLY | O_CLOEXEC);
    if (ofd < 0) {
        rc = errno == ENOENT ? RON_ENOTFOUND : -errno;
        goto out;
    }
    if (fstat(ofd, &fst) < 0 || fst.st_size < (off_t)STO_OB_HDR_LEN) {
        sto__corruption(s, r->addr, 0, "outboard file too short");
        rc = RON_EDIGEST;
        goto out;
    }
    r->map_len = (size_t)fst.st_size;
    r->map = mmap(NULL, r->map_len, PROT_READ, MAP_SHARED, ofd, 0);
    if (r->map == MAP_FAILED) {
        r->map = NULL;
        rc = -errno;
        goto out;
    }
    if (sto__ob_hdr_decode(r->map, r->map_len, &h) < 0 || h.size != r->size ||
        memcmp(h.root, r->addr, STO_ADDR_LEN) != 0) {
        sto__corruption(s, r->addr, 0, "outboard header does not match the object");
        rc = RON_EDIGEST;
        goto out;
    }
    r->ob = (const uint8_t *)r->map + STO_OB_HDR_LEN;
    r->ob_len = r->map_len - STO_OB_HDR_LEN;
    rc = 0;
out:
    if (ofd >= 0)
        close(ofd);
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
