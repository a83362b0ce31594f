/*
 * kms_internal.h - shared between the files of src/ron-kms/ and its tests only.
 *
 * Key file layout (docs/protocol/keystore.md has the full table). All
 * integers are big-endian. P = pk_len, S = sk_len.
 *   off  size  field
 *   0    8     magic "RONKEY1\n"
 *   8    2     format version (1)
 *   10   2     algorithm (kms_alg_t; 1 = Ed25519)
 *   12   1     role (1 identity, 2 name)
 *   13   1     seal (0 none, 1 passphrase, 2 secret file)
 *   14   2     reserved, zero
 *   16   4     key index (0 for identity; i for name-<i>.key)
 *   20   4     P: public key length (32 for Ed25519)
 *   24   4     S: secret length before sealing (32: the Ed25519 seed)
 *   28   4     reserved, zero
 *   32   8     created, unix seconds (signed)
 *   40   8     Argon2id opslimit (passphrase seal; else 0)
 *   48   8     Argon2id memlimit in bytes (passphrase seal; else 0)
 *   56   16    salt (KDF salt; zero when unsealed)
 *   72   24    XChaCha20-Poly1305 nonce (zero when unsealed)
 *   96   P     public key
 *   96+P S+16  sealed secret: ciphertext || tag (unsealed: secret || 16 zero bytes)
 *   -32  32    BLAKE3-256 of every preceding byte (detects damage; the AEAD tag,
 *              whose associated data is bytes [0, 96+P), detects forgery)
 */
#ifndef KMS_INTERNAL_H
#define KMS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ron_kms.h"

#define KMS__MAGIC "RONKEY1\n"
#define KMS__MAGIC_LEN 8
#define KMS__VERSION 1
#define KMS__HDR_LEN 96
#define KMS__SALT_LEN 16
#define KMS__NONCE_LEN 24
#define KMS__TAG_LEN 16
#define KMS__SUM_LEN 32
#define KMS__SEAL_KEY_LEN 32
#define KMS__OFF_SALT 56
#define KMS__OFF_NONCE 72
/* Size of an Ed25519 key file. */
#define KMS__ED25519_FILE_LEN                                                                      \
    (KMS__HDR_LEN + KMS_PK_LEN + KMS_SEED_LEN + KMS__TAG_LEN + KMS__SUM_LEN)
/* BLAKE3 derive_key context for secret-file sealing keys. */
#define KMS__SEAL_CONTEXT "RustyOnions-C 2026-11 ron-kms key file sealing key v1"

/* A parsed key file: views into the buffer given to kms__file_parse. */
typedef struct {
    kms_keyfile_info_t info;
    const uint8_t *salt;  /* KMS__SALT_LEN bytes */
    const uint8_t *nonce; /* KMS__NONCE_LEN bytes */
    const uint8_t *ad;    /* associated data: header and public key */
    size_t ad_len;
    const uint8_t *sealed; /* sk_len + KMS__TAG_LEN bytes */
    size_t sk_len;
} kms__file_t;

/* Parse and check buf (len bytes). Returns 0 or RON_EKEYFILE. Pure. */
int kms__file_parse(const uint8_t *buf, size_t len, kms__file_t *f_out);

/*
 * Encode a key file into out (cap >= KMS__ED25519_FILE_LEN) for the Ed25519
 * seed (borrowed): sealed under seal_key (KMS__SEAL_KEY_LEN bytes) with salt
 * when info->seal != KMS_SEAL_NONE, in the clear otherwise. Picks a random
 * nonce. Returns the file length or a negative code.
 */
long kms__file_encode(const kms_keyfile_info_t *info, const uint8_t salt[static KMS__SALT_LEN],
                      const uint8_t *seal_key, const uint8_t seed[static KMS_SEED_LEN],
                      uint8_t *out, size_t cap);

/*
 * Recover the seed of a parsed file into seed_out (KMS_SEED_LEN bytes,
 * sodium_malloc memory) with seal_key (NULL when unsealed). Returns 0,
 * RON_EAUTH (tag does not verify) or RON_EKEYFILE.
 */
int kms__file_open_seed(const kms__file_t *f, const uint8_t *seal_key, uint8_t *seed_out);

#endif
