/*
 * kms_key.c - one key pair in memory: the public key in ordinary memory,
 * the Ed25519 secret key (seed || public key, libsodium's form) in
 * sodium_malloc memory that is PROT_NONE except inside kms_key_sign and the
 * export hooks. A per-key mutex makes those calls safe from any thread, since
 * two threads must not race on the page protection.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <blake3.h>
#include <sodium.h>

#include "kms_key_internal.h"
#include "ron_err.h"
#include "ron_util.h"

kms_key_t *
kms__key_from_seed(kms_role_t role, uint32_t index, int64_t created,
                   const uint8_t seed[static KMS_SEED_LEN])
{
    kms_key_t *k = ron_xcalloc(1, sizeof *k);
    k->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    if (k->sk == NULL) {
        free(k);
        return NULL;
    }
    k->alg = KMS_ALG_ED25519;
    k->role = role;
    k->index = index;
    k->created = created;
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    sodium_mprotect_noaccess(k->sk);
    pthread_mutex_init(&k->mu, NULL);
    return k;
}

void
kms__key_free(kms_key_t *k)
{
    if (k == NULL)
        return;
    sodium_mprotect_readwrite(k->sk);
    sodium_free(k->sk); /* zeroes the secret before unmapping */
    pthread_mutex_destroy(&k->mu);
    free(k);
}

kms_alg_t
kms_key_alg(const kms_key_t *k)
{
    return k->alg;
}

kms_role_t
kms_key_role(const kms_key_t *k)
{
    return k->role;
}

uint32_t
kms_key_index(const kms_key_t *k)
{
    return k->index;
}

const uint8_t *
kms_key_public(const kms_key_t *k)
{
    return k->pk;
}

/* Unlock the secret for reading; the mutex is held until key_lock_end. */
static uint8_t *
key_lock(const kms_key_t *k)
{
    kms_key_t *m = (kms_key_t *)k; /* the mutex and protection are not logical state */
    pthread_mutex_lock(&m->mu);
    sodium_mprotect_readonly(m->sk);
    return m->sk;
}

static void
key_lock_end(const kms_key_t *k)
{
    kms_key_t *m = (kms_key_t *)k;
    sodium_mprotect_noaccess(m->sk);
    pthread_mutex_unlock(&m->mu);
}

int
kms_key_sign(const kms_key_t *k, const uint8_t *msg, size_t len,
             uint8_t sig_out[static KMS_SIG_LEN])
{
    const uint8_t *sk = key_lock(k);
    crypto_sign_detached(sig_out, NULL, msg, len, sk);
    key_lock_end(k);
    return 0;
}

int
kms_verify(const uint8_t pk[static KMS_PK_LEN], const uint8_t *msg, size_t len,
           const uint8_t sig[static KMS_SIG_LEN])
{
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0 ? 0 : RON_EAUTH;
}

void
kms_node_id_of(const uint8_t pk[static KMS_PK_LEN], uint8_t id_out[static KMS_NODE_ID_LEN])
{
    blake3_hasher h;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, pk, KMS_PK_LEN);
    blake3_hasher_finalize(&h, id_out, KMS_NODE_ID_LEN);
}

int
kms_key_export_seed(const kms_key_t *k, uint8_t *seed_out)
{
    const uint8_t *sk = key_lock(k);
    memcpy(seed_out, sk, KMS_SEED_LEN); /* libsodium's secret key starts with the seed */
    key_lock_end(k);
    return 0;
}

int
kms_key_export_to(const kms_key_t *k, int (*cb)(const uint8_t *seed, size_t len, void *arg),
                  void *arg)
{
    const uint8_t *sk = key_lock(k);
    int rc = cb(sk, KMS_SEED_LEN, arg);
    key_lock_end(k);
    return rc;
}

const char *
kms_alg_name(kms_alg_t alg)
{
    return alg == KMS_ALG_ED25519 ? "ed25519" : "unknown";
}

const char *
kms_role_name(kms_role_t role)
{
    switch (role) {
    case KMS_ROLE_IDENTITY:
        return "identity";
    case KMS_ROLE_NAME:
        return "name";
    }
    return "unknown";
}

const char *
kms_seal_name(kms_seal_t seal)
{
    switch (seal) {
    case KMS_SEAL_NONE:
        return "none";
    case KMS_SEAL_PASSPHRASE:
        return "passphrase";
    case KMS_SEAL_SECRET_FILE:
        return "secret-file";
    }
    return "unknown";
}
