/*
 * idx.c - the public svc-index API: argument checks, record validation
 * (syntax, signature, timestamp) before any lock or write txn, then the
 * backend (idx_lmdb.c or idx_ram.c) for the atomic compare-and-store.
 */
#include <stdlib.h>
#include <string.h>

#include "idx_internal.h"
#include "ron_err.h"
#include "ron_util.h"

struct idx {
    idx_backend_t *b;
    const idx_ops_t *ops;
    bool amnesia;
};

int
idx_new(const idx_config_t *cfg, idx_t **idx_out)
{
    idx_t *idx;
    int rc;

    *idx_out = NULL;
    idx = ron_xcalloc(1, sizeof *idx);
    idx->amnesia = cfg->amnesia;
    if (cfg->amnesia)
        rc = idx__ram_open(cfg, &idx->b, &idx->ops);
    else
        rc = idx__lmdb_open(cfg, &idx->b, &idx->ops);
    if (rc < 0) {
        free(idx);
        return rc;
    }
    *idx_out = idx;
    return 0;
}

void
idx_free(idx_t *idx)
{
    if (idx == NULL)
        return;
    idx->ops->close(idx->b);
    free(idx);
}

bool
idx_is_amnesia(const idx_t *idx)
{
    return idx->amnesia;
}

int
idx_publish(idx_t *idx, const name_record_t *rec, int64_t now, name_err_t *err)
{
    uint8_t bin[NAME_RECORD_MAX];
    ssize_t n;
    int rc;

    rc = name_record_validate(rec, now, err); /* the expensive part, outside the writer */
    if (rc < 0)
        return rc;
    n = name_record_encode(rec, bin, sizeof bin);
    if (n < 0)
        return (int)n;
    return idx->ops->publish(idx->b, rec, bin, (size_t)n, err);
}

int
idx_resolve(idx_t *idx, const char *name, name_record_t *rec_out)
{
    size_t len = strnlen(name, NAME_MAX_LEN + 1);
    if (len > NAME_MAX_LEN || name_check(name, len, NULL) < 0)
        return RON_ENAME;
    return idx->ops->resolve(idx->b, name, rec_out);
}

int
idx_list(idx_t *idx, const char *prefix, const char *after, name_record_t *out, size_t cap,
         size_t *n_out, bool *more_out)
{
    *n_out = 0;
    *more_out = false;
    if (prefix == NULL)
        prefix = "";
    if (after == NULL)
        after = "";
    if (cap == 0 || strnlen(prefix, NAME_MAX_LEN + 1) > NAME_MAX_LEN ||
        strnlen(after, NAME_MAX_LEN + 1) > NAME_MAX_LEN)
        return RON_EINVAL;
    return idx->ops->list(idx->b, prefix, after, out, RON_MIN(cap, (size_t)IDX_LIST_MAX), n_out,
                          more_out);
}

int
idx_count(idx_t *idx, uint64_t *n_out)
{
    return idx->ops->count(idx->b, n_out);
}
