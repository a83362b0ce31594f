/*
 * kms_file.c - the key file format: encode, parse and unseal one file
 * (layout in kms_internal.h and docs/protocol/keystore.md).
 * Pure functions over caller buffers: no I/O. The parser reads through
 * fixed offsets after checking the total length, checks every field against
 * its allowed values and the BLAKE3 checksum before anything is decrypted,
 * and never allocates, so it is safe on any bytes (fuzz_keyfile.c).
 */
#include <stdbool.h>
#include <string.h>

#include <blake3.h>
#include <sodium.h>

#include "kms_internal.h"
#include "ron_err.h"

static uint16_t
rd16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t
rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

static void
wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void
wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void
wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    wr32(p + 4, (uint32_t)v);
}

static void
checksum(const uint8_t *buf, size_t len, uint8_t out[static KMS__SUM_LEN])
{
    blake3_hasher h;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, buf, len);
    blake3_hasher_finalize(&h, out, KMS__SUM_LEN);
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* Checks of the seal-dependent fields; kdf limits bound the work a file can ask for. */
static int
check_seal_fields(const kms__file_t *f, const uint8_t *buf)
{
    const kms_keyfile_info_t *in = &f->info;
    switch (in->seal) {
    case KMS_SEAL_NONE:
        if (in->kdf_opslimit != 0 || in->kdf_memlimit != 0 ||
            !all_zero(buf + KMS__OFF_SALT, KMS__SALT_LEN + KMS__NONCE_LEN) ||
            !all_zero(f->sealed + f->sk_len, KMS__TAG_LEN))
            return RON_EKEYFILE;
        return 0;
    case KMS_SEAL_PASSPHRASE:
        if (in->kdf_opslimit < crypto_pwhash_OPSLIMIT_MIN ||
            in->kdf_opslimit > KMS_KDF_OPSLIMIT_MAX ||
            in->kdf_memlimit < crypto_pwhash_MEMLIMIT_MIN ||
            in->kdf_memlimit > KMS_KDF_MEMLIMIT_MAX)
            return RON_EKEYFILE;
        return 0;
    case KMS_SEAL_SECRET_FILE:
        if (in->kdf_opslimit != 0 || in->kdf_memlimit != 0)
            return RON_EKEYFILE;
        return 0;
    }
    return RON_EKEYFILE;
}

int
kms__file_parse(const uint8_t *buf, size_t len, kms__file_t *f_out)
{
    kms__file_t f;
    uint8_t sum[KMS__SUM_LEN];
    uint32_t pk_len, sk_len;

    memset(&f, 0, sizeof f);
    if (len < KMS__HDR_LEN + KMS__TAG_LEN + KMS__SUM_LEN || len > KMS_FILE_MAX)
        return RON_EKEYFILE;
    if (memcmp(buf, KMS__MAGIC, KMS__MAGIC_LEN) != 0 || rd16(buf + 8) != KMS__VERSION)
        return RON_EKEYFILE;
    pk_len = rd32(buf + 20);
    sk_len = rd32(buf + 24);
    if (pk_len > KMS_KEY_MAX || sk_len > KMS_KEY_MAX ||
        len != (size_t)KMS__HDR_LEN + pk_len + sk_len + KMS__TAG_LEN + KMS__SUM_LEN)
        return RON_EKEYFILE;
    checksum(buf, len - KMS__SUM_LEN, sum);
    if (sodium_memcmp(sum, buf + len - KMS__SUM_LEN, KMS__SUM_LEN) != 0)
        return RON_EKEYFILE;
    f.info.alg = (kms_alg_t)rd16(buf + 10);
    f.info.role = (kms_role_t)buf[12];
    f.info.seal = (kms_seal_t)buf[13];
    f.info.index = rd32(buf + 16);
    f.info.created = (int64_t)rd64(buf + 32);
    f.info.kdf_opslimit = rd64(buf + 40);
    f.info.kdf_memlimit = rd64(buf + 48);
    if (rd16(buf + 14) != 0 || rd32(buf + 28) != 0)
        return RON_EKEYFILE;
    /* Only Ed25519 today; a new algorithm adds its sizes here. */
    if (f.info.alg != KMS_ALG_ED25519 || pk_len != KMS_PK_LEN || sk_len != KMS_SEED_LEN)
        return RON_EKEYFILE;
    if (f.info.role == KMS_ROLE_IDENTITY) {
        if (f.info.index != 0)
            return RON_EKEYFILE;
    } else if (f.info.role != KMS_ROLE_NAME || f.info.index >= KMS_MAX_NAME_KEYS) {
        return RON_EKEYFILE;
    }
    memcpy(f.info.pk, buf + KMS__HDR_LEN, KMS_PK_LEN);
    f.salt = buf + KMS__OFF_SALT;
    f.nonce = buf + KMS__OFF_NONCE;
    f.ad = buf;
    f.ad_len = KMS__HDR_LEN + pk_len;
    f.sealed = buf + KMS__HDR_LEN + pk_len;
    f.sk_len = sk_len;
    if (check_seal_fields(&f, buf) < 0)
        return RON_EKEYFILE;
    *f_out = f;
    return 0;
}

int
kms_keyfile_parse(const uint8_t *buf, size_t len, kms_keyfile_info_t *info_out)
{
    kms__file_t f;
    int rc = kms__file_parse(buf, len, &f);
    if (rc == 0)
        *info_out = f.info;
    return rc;
}

long
kms__file_encode(const kms_keyfile_info_t *info, const uint8_t salt[static KMS__SALT_LEN],
                 const uint8_t *seal_key, const uint8_t seed[static KMS_SEED_LEN], uint8_t *out,
                 size_t cap)
{
    const size_t len = KMS__ED25519_FILE_LEN;
    uint8_t *sealed;
    unsigned long long clen = 0;

    if (cap < len || info->alg != KMS_ALG_ED25519)
        return RON_EINVAL;
    memset(out, 0, len);
    /* binary magic, not a C string */
    memcpy(out, KMS__MAGIC, KMS__MAGIC_LEN); /* NOLINT(bugprone-not-null-terminated-result) */
    wr16(out + 8, KMS__VERSION);
    wr16(out + 10, (uint16_t)info->alg);
    out[12] = (uint8_t)info->role;
    out[13] = (uint8_t)info->seal;
    wr32(out + 16, info->index);
    wr32(out + 20, KMS_PK_LEN);
    wr32(out + 24, KMS_SEED_LEN);
    wr64(out + 32, (uint64_t)info->created);
    memcpy(out + KMS__HDR_LEN, info->pk, KMS_PK_LEN);
    sealed = out + KMS__HDR_LEN + KMS_PK_LEN;
    if (info->seal == KMS_SEAL_NONE) {
        memcpy(sealed, seed, KMS_SEED_LEN); /* tag stays zero */
    } else {
        if (seal_key == NULL)
            return RON_EINVAL;
        if (info->seal == KMS_SEAL_PASSPHRASE) {
            wr64(out + 40, info->kdf_opslimit);
            wr64(out + 48, info->kdf_memlimit);
        }
        memcpy(out + KMS__OFF_SALT, salt, KMS__SALT_LEN);
        randombytes_buf(out + KMS__OFF_NONCE, KMS__NONCE_LEN);
        crypto_aead_xchacha20poly1305_ietf_encrypt(sealed, &clen, seed, KMS_SEED_LEN, out,
                                                   KMS__HDR_LEN + KMS_PK_LEN, NULL,
                                                   out + KMS__OFF_NONCE, seal_key);
    }
    checksum(out, len - KMS__SUM_LEN, out + len - KMS__SUM_LEN);
    return (long)len;
}

int
kms__file_open_seed(const kms__file_t *f, const uint8_t *seal_key, uint8_t *seed_out)
{
    unsigned long long mlen = 0;

    if (f->sk_len != KMS_SEED_LEN)
        return RON_EKEYFILE; /* defensive: the parser allows only Ed25519 */
    if (f->info.seal == KMS_SEAL_NONE) {
        memcpy(seed_out, f->sealed, KMS_SEED_LEN);
        return 0;
    }
    if (seal_key == NULL)
        return RON_EKEYLOCKED;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(seed_out, &mlen, NULL, f->sealed,
                                                   f->sk_len + KMS__TAG_LEN, f->ad, f->ad_len,
                                                   f->nonce, seal_key) != 0) {
        sodium_memzero(seed_out, KMS_SEED_LEN);
        return RON_EAUTH;
    }
    return 0;
}
