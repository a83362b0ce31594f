/*
 * idx_lmdb.c - the durable backend: one LMDB environment in
 * <data_dir>/index/ with two databases, "names" (canonical name -> binary
 * record) and "meta" ("format" -> decimal IDX_FORMAT_VERSION).
 * Invariants: a publish is one write txn (read current, compare, put,
 * commit), so a crash leaves either the old or the new record; commits sync
 * (no MDB_NOSYNC), so a publish that returned 0 survives kill -9 and power
 * loss; MDB_NOTLS lets any thread use its own read txn; reader slots of
 * dead processes are cleared at open.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lmdb.h>

#include "ron_fs.h"
#include "idx_internal.h"
#include "ron_err.h"
#include "ron_util.h"

struct idx_backend {
    MDB_env *env;
    MDB_dbi names;
    MDB_dbi meta;
};

/* LMDB results: 0, system errno (positive) or MDB_* (negative). */
static int
err_from_mdb(int rc)
{
    if (rc == 0)
        return 0;
    if (rc == MDB_NOTFOUND)
        return RON_ENOTFOUND;
    if (rc == MDB_MAP_FULL)
        return RON_EIDXFULL;
    if (rc > 0)
        return -rc;
    return RON_ESTORE;
}

static int
lmdb_publish(idx_backend_t *b, const name_record_t *rec, const uint8_t *bin, size_t len,
             name_err_t *err)
{
    MDB_txn *txn = NULL;
    MDB_val key = {strlen(rec->name), (void *)rec->name}, val;
    name_record_t cur;
    bool have = false;
    int rc;

    rc = err_from_mdb(mdb_txn_begin(b->env, NULL, 0, &txn));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_get(txn, b->names, &key, &val));
    if (rc == 0) {
        if (name_record_decode(&cur, val.mv_data, val.mv_size, NULL) < 0) {
            rc = RON_ESTORE; /* defensive: we only ever store encoded records */
            goto out;
        }
        have = true;
    } else if (rc != RON_ENOTFOUND) {
        goto out;
    }
    rc = name_record_supersedes(have ? &cur : NULL, rec, err);
    if (rc < 0)
        goto out;
    val.mv_size = len;
    val.mv_data = (void *)bin;
    rc = err_from_mdb(mdb_put(txn, b->names, &key, &val, 0));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_txn_commit(txn));
    txn = NULL; /* commit releases txn even when it fails */
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

static int
lmdb_resolve(idx_backend_t *b, const char *name, name_record_t *rec_out)
{
    MDB_txn *txn = NULL;
    MDB_val key = {strlen(name), (void *)name}, val;
    int rc;

    rc = err_from_mdb(mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_get(txn, b->names, &key, &val));
    if (rc < 0)
        goto out;
    if (name_record_decode(rec_out, val.mv_data, val.mv_size, NULL) < 0 ||
        strcmp(rec_out->name, name) != 0)
        rc = RON_ESTORE; /* defensive: corrupt value or key/value mismatch */
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

static bool
has_prefix(const MDB_val *key, const char *prefix, size_t plen)
{
    return key->mv_size >= plen && memcmp(key->mv_data, prefix, plen) == 0;
}

static int
lmdb_list(idx_backend_t *b, const char *prefix, const char *after, name_record_t *out, size_t cap,
          size_t *n_out, bool *more_out)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val key, val;
    size_t plen = strlen(prefix), alen = strlen(after), n = 0;
    const char *start = (alen > 0 && strcmp(after, prefix) > 0) ? after : prefix;
    int rc;

    rc = err_from_mdb(mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_cursor_open(txn, b->names, &cur));
    if (rc < 0)
        goto out;
    key.mv_size = strlen(start);
    key.mv_data = (void *)start;
    rc = mdb_cursor_get(cur, &key, &val, key.mv_size > 0 ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && alen > 0 && key.mv_size == alen && memcmp(key.mv_data, after, alen) == 0)
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT); /* after is exclusive */
    while (rc == 0 && has_prefix(&key, prefix, plen)) {
        if (n == cap) {
            *more_out = true;
            break;
        }
        if (name_record_decode(&out[n], val.mv_data, val.mv_size, NULL) < 0) {
            rc = RON_ESTORE;
            goto out;
        }
        n++;
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : err_from_mdb(rc);
out:
    *n_out = rc == 0 ? n : 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

static int
lmdb_count(idx_backend_t *b, uint64_t *n_out)
{
    MDB_txn *txn = NULL;
    MDB_stat st;
    int rc = err_from_mdb(mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn));
    if (rc < 0)
        return rc;
    rc = err_from_mdb(mdb_stat(txn, b->names, &st));
    if (rc == 0)
        *n_out = st.ms_entries;
    mdb_txn_abort(txn);
    return rc;
}

static void
lmdb_close(idx_backend_t *b)
{
    if (b->env != NULL)
        mdb_env_close(b->env);
    free(b);
}

static const idx_ops_t lmdb_ops = {lmdb_publish, lmdb_resolve, lmdb_list, lmdb_count, lmdb_close};

/* Open both databases and write or check the format version. */
static int
lmdb_init_dbs(idx_backend_t *b)
{
    MDB_txn *txn = NULL;
    MDB_val key = {6, "format"}, val;
    char want[16];
    int rc;

    snprintf(want, sizeof want, "%d", IDX_FORMAT_VERSION);
    rc = err_from_mdb(mdb_txn_begin(b->env, NULL, 0, &txn));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_dbi_open(txn, "names", MDB_CREATE, &b->names));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_dbi_open(txn, "meta", MDB_CREATE, &b->meta));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_get(txn, b->meta, &key, &val));
    if (rc == RON_ENOTFOUND) {
        val.mv_size = strlen(want);
        val.mv_data = want;
        rc = err_from_mdb(mdb_put(txn, b->meta, &key, &val, 0));
    } else if (rc == 0 && (val.mv_size != strlen(want) || memcmp(val.mv_data, want, val.mv_size) != 0)) {
        rc = RON_EVERSION;
    }
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_txn_commit(txn));
    txn = NULL;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

int
idx__lmdb_open(const idx_config_t *cfg, idx_backend_t **b_out, const idx_ops_t **ops_out)
{
    idx_backend_t *b = NULL;
    size_t map = cfg->map_size != 0 ? cfg->map_size : IDX_MAP_SIZE_DEFAULT;
    char dir[4096];
    int rc, dead;

    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0' || map < IDX_MAP_SIZE_MIN)
        return RON_EINVAL;
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, IDX_SUBDIR) >= sizeof dir)
        return RON_EINVAL;
    if ((rc = ron_mkdir_private(dir)) < 0)
        return rc;
    b = ron_xcalloc(1, sizeof *b);
    rc = err_from_mdb(mdb_env_create(&b->env));
    if (rc < 0) {
        b->env = NULL;
        goto out;
    }
    rc = err_from_mdb(mdb_env_set_maxdbs(b->env, 2));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_env_set_mapsize(b->env, map));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_env_open(b->env, dir, MDB_NOTLS, 0600));
    if (rc < 0)
        goto out;
    rc = err_from_mdb(mdb_reader_check(b->env, &dead)); /* slots of killed processes */
    if (rc < 0)
        goto out;
    rc = lmdb_init_dbs(b);
out:
    if (rc < 0) {
        lmdb_close(b);
        return rc;
    }
    *b_out = b;
    *ops_out = &lmdb_ops;
    return 0;
}
