/*
 * idx_internal.h - the backend interface behind svc_index.h. idx.c checks
 * arguments and validates records (signature outside any lock or txn); a
 * backend then compares with the current record and writes atomically.
 */
#ifndef IDX_INTERNAL_H
#define IDX_INTERNAL_H

#include "svc_index.h"

typedef struct idx_backend idx_backend_t;

typedef struct {
    /* Apply name_record_supersedes against the current record and store rec
     * (already validated; bin/len is its binary form) atomically. */
    int (*publish)(idx_backend_t *b, const name_record_t *rec, const uint8_t *bin, size_t len,
                   name_err_t *err);
    int (*resolve)(idx_backend_t *b, const char *name, name_record_t *rec_out);
    /* prefix and after already bounded; cap in 1..IDX_LIST_MAX. */
    int (*list)(idx_backend_t *b, const char *prefix, const char *after, name_record_t *out,
                size_t cap, size_t *n_out, bool *more_out);
    int (*count)(idx_backend_t *b, uint64_t *n_out);
    void (*close)(idx_backend_t *b);
} idx_ops_t;

int idx__lmdb_open(const idx_config_t *cfg, idx_backend_t **b_out, const idx_ops_t **ops_out);
int idx__ram_open(const idx_config_t *cfg, idx_backend_t **b_out, const idx_ops_t **ops_out);

#endif
