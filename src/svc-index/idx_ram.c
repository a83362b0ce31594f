/*
 * idx_ram.c - the amnesia backend: records in a sorted array of heap
 * copies under a rwlock, bounded by max_records. Nothing touches the disk.
 * Invariants: recs[0..n) is strictly increasing by strcmp of the name;
 * publish compares and writes under the write lock, so it is atomic with
 * respect to every other call.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "idx_internal.h"
#include "ron_err.h"
#include "ron_util.h"

struct idx_backend {
    pthread_rwlock_t lock;
    name_record_t **recs; /* sorted by name */
    size_t n, cap;        /* n <= cap, n <= max */
    size_t max;
};

/* Index of the first record whose name is >= name. */
static size_t
lower_bound(const idx_backend_t *b, const char *name)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(b->recs[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int
ram_publish(idx_backend_t *b, const name_record_t *rec, const uint8_t *bin, size_t len,
            name_err_t *err)
{
    (void)bin;
    (void)len;
    int rc;
    pthread_rwlock_wrlock(&b->lock);
    size_t i = lower_bound(b, rec->name);
    bool have = i < b->n && strcmp(b->recs[i]->name, rec->name) == 0;
    rc = name_record_supersedes(have ? b->recs[i] : NULL, rec, err);
    if (rc < 0)
        goto out;
    if (have) {
        *b->recs[i] = *rec;
        goto out;
    }
    if (b->n == b->max) {
        rc = RON_EIDXFULL;
        goto out;
    }
    if (b->n == b->cap) {
        b->cap = b->cap == 0 ? 64 : b->cap * 2;
        b->recs = ron_xrealloc(b->recs, b->cap * sizeof *b->recs); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
    }
    memmove(&b->recs[i + 1], &b->recs[i], (b->n - i) * sizeof *b->recs); /* NOLINT(bugprone-sizeof-expression) */
    b->recs[i] = ron_xmalloc(sizeof *rec);
    *b->recs[i] = *rec;
    b->n++;
out:
    pthread_rwlock_unlock(&b->lock);
    return rc;
}

static int
ram_resolve(idx_backend_t *b, const char *name, name_record_t *rec_out)
{
    int rc = RON_ENOTFOUND;
    pthread_rwlock_rdlock(&b->lock);
    size_t i = lower_bound(b, name);
    if (i < b->n && strcmp(b->recs[i]->name, name) == 0) {
        *rec_out = *b->recs[i];
        rc = 0;
    }
    pthread_rwlock_unlock(&b->lock);
    return rc;
}

static int
ram_list(idx_backend_t *b, const char *prefix, const char *after, name_record_t *out, size_t cap,
         size_t *n_out, bool *more_out)
{
    size_t plen = strlen(prefix), n = 0, i;
    pthread_rwlock_rdlock(&b->lock);
    if (after[0] != '\0' && strcmp(after, prefix) >= 0) {
        i = lower_bound(b, after);
        if (i < b->n && strcmp(b->recs[i]->name, after) == 0)
            i++; /* after is exclusive */
    } else {
        i = lower_bound(b, prefix);
    }
    for (; i < b->n && strncmp(b->recs[i]->name, prefix, plen) == 0; i++) {
        if (n == cap) {
            *more_out = true;
            break;
        }
        out[n++] = *b->recs[i];
    }
    pthread_rwlock_unlock(&b->lock);
    *n_out = n;
    return 0;
}

static int
ram_count(idx_backend_t *b, uint64_t *n_out)
{
    pthread_rwlock_rdlock(&b->lock);
    *n_out = b->n;
    pthread_rwlock_unlock(&b->lock);
    return 0;
}

static void
ram_close(idx_backend_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        explicit_bzero(b->recs[i], sizeof *b->recs[i]); /* amnesia: leave nothing behind */
        free(b->recs[i]);
    }
    free(b->recs);
    pthread_rwlock_destroy(&b->lock);
    free(b);
}

static const idx_ops_t ram_ops = {ram_publish, ram_resolve, ram_list, ram_count, ram_close};

int
idx__ram_open(const idx_config_t *cfg, idx_backend_t **b_out, const idx_ops_t **ops_out)
{
    idx_backend_t *b = ron_xcalloc(1, sizeof *b);
    int rc = pthread_rwlock_init(&b->lock, NULL);
    if (rc != 0) {
        free(b);
        return -rc;
    }
    b->max = cfg->max_records != 0 ? cfg->max_records : IDX_RAM_MAX_RECORDS_DEFAULT;
    *b_out = b;
    *ops_out = &ram_ops;
    return 0;
}
