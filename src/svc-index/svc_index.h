/*
 * svc_index.h - the name index's storage: name -> current signed record.
 * A synchronous library; the ron-bus service and HTTP routes wrap it.
 *
 * Two backends with one API:
 *   LMDB  one environment in <data_dir>/index/ (data.mdb, lock.mdb) with a
 *         fixed map size; every publish is one write txn that reads the
 *         current record, applies the ron-naming acceptance rule and writes,
 *         so a record is either wholly current or absent after a crash, and
 *         one acknowledged (returned 0) is durable (LMDB syncs on commit).
 *   RAM   for amnesia: a sorted array under a rwlock; nothing touches disk.
 *
 * Values are ron-naming's binary record form (signing bytes + signature),
 * keyed by the canonical name, so the store is also the wire format the DHT
 * will carry. Records are verified on publish, not again on resolve.
 *
 * Thread rule: every function may be called from any thread on the same
 * idx_t (LMDB serializes writers and opens with MDB_NOTLS; the RAM backend
 * takes its lock), except idx_free, which must be the last call. A publish
 * holds the writer for microseconds (the signature is checked before the
 * write txn begins); callers on a libuv loop still run it with
 * uv_queue_work, since an LMDB commit waits for fsync.
 */
#ifndef SVC_INDEX_H
#define SVC_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ron_naming.h"

/* ---- limits ---- */
#define IDX_MAP_SIZE_DEFAULT                                                                       \
    ((size_t)256 << 20) /* LMDB map: ~1M records of <= 400 B with B-tree overhead */
#define IDX_MAP_SIZE_MIN                                                                           \
    ((size_t)64 << 10) /* below this LMDB cannot hold its own meta pages usefully */
#define IDX_RAM_MAX_RECORDS_DEFAULT                                                                \
    1000000                  /* RAM backend bound: ~450 MB at worst, amnesia nodes are small */
#define IDX_LIST_MAX 1000    /* records per list page: bounds one read txn and one reply */
#define IDX_FORMAT_VERSION 1 /* meta "format" key; bumped on a layout change */
#define IDX_SUBDIR "index"   /* under the node's data directory */

typedef struct idx idx_t;

typedef struct {
    const char *data_dir; /* borrowed; the LMDB environment lives in <data_dir>/index/ */
    bool amnesia;         /* RAM backend; data_dir is ignored and may be NULL */
    size_t map_size;      /* LMDB map size in bytes, >= IDX_MAP_SIZE_MIN; 0: default */
    size_t max_records;   /* RAM backend bound; 0: IDX_RAM_MAX_RECORDS_DEFAULT */
} idx_config_t;

/*
 * Open the index described by cfg (borrowed) into *idx_out (free with
 * idx_free). LMDB: creates <data_dir>/index/ (mode 0700) if missing, clears
 * reader slots left by dead processes, and writes or checks the format
 * version. Returns 0, RON_EINVAL (no data_dir without amnesia, map_size too
 * small), RON_EVERSION (an index of another format), RON_ESTORE, or -errno
 * (the data directory is missing or unwritable).
 */
int idx_new(const idx_config_t *cfg, idx_t **idx_out);

/* Close the index and free it. idx_free(NULL) does nothing. */
void idx_free(idx_t *idx);

/* Is this the RAM (amnesia) backend? */
bool idx_is_amnesia(const idx_t *idx);

/*
 * Publish rec (borrowed) if the acceptance rule (name_record_accept, now in
 * unix seconds) admits it over the current record of its name, atomically.
 * Returns 0 once the record is current (and, on LMDB, durable), or the
 * rule's refusal with err (may be NULL) saying why: RON_ERECORD,
 * RON_ENAMESIG, RON_ENAMEFUTURE, RON_ENAMEOWNER, RON_ENAMESTALE,
 * RON_ENAMEDUP (this exact record is already current: a retry may treat it
 * as done); or RON_EIDXFULL (map or max_records full), RON_ESTORE, -errno.
 * A refused record changes nothing.
 */
int idx_publish(idx_t *idx, const name_record_t *rec, int64_t now, name_err_t *err);

/*
 * Copy the current record of name (canonical, NUL-terminated; normalize user
 * input with name_normalize first) into rec_out. Returns 0, RON_ENOTFOUND,
 * RON_ENAME (name not canonical), or RON_ESTORE (a stored value no longer
 * decodes: logged-worthy corruption).
 */
int idx_resolve(idx_t *idx, const char *name, name_record_t *rec_out);

/*
 * List current records whose names start with prefix ("" for all; compared
 * bytewise, at most NAME_MAX_LEN bytes), in bytewise name order, after the
 * name `after` (exclusive; NULL or "" to start at the beginning): the cursor
 * for the next page is the last name returned. Writes at most
 * min(cap, IDX_LIST_MAX) records into out, their count into *n_out, and
 * whether more follow into *more_out. Returns 0, RON_EINVAL (cap 0, prefix
 * or after too long), or RON_ESTORE.
 */
int idx_list(idx_t *idx, const char *prefix, const char *after, name_record_t *out, size_t cap,
             size_t *n_out, bool *more_out);

/* Number of names in the index into *n_out. Returns 0 or RON_ESTORE. */
int idx_count(idx_t *idx, uint64_t *n_out);

#endif
