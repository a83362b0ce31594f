/*
 * kms_key_internal.h - the in-memory key pair, shared by the files of src/ron-kms/.
 */
#ifndef KMS_KEY_INTERNAL_H
#define KMS_KEY_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "ron_kms.h"

struct kms_key {
    kms_alg_t alg;
    kms_role_t role;
    uint32_t index;
    int64_t created;        /* unix seconds */
    uint8_t pk[KMS_PK_LEN]; /* public: ordinary memory */
    uint8_t *sk;            /* sodium_malloc, 64 bytes (seed || pk); PROT_NONE when idle */
    pthread_mutex_t mu;     /* held while sk is readable */
};

/* A key pair from seed (borrowed; the caller wipes it). Returns new (kms__key_free), or NULL
 * when sodium_malloc fails. */
kms_key_t *kms__key_from_seed(kms_role_t role, uint32_t index, int64_t created,
                              const uint8_t seed[static KMS_SEED_LEN]);
/* Wipe and free k. NULL does nothing. */
void kms__key_free(kms_key_t *k);

#endif
