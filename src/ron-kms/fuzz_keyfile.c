/*
 * fuzz_keyfile.c - libFuzzer target for the key file parser
 * (kms_keyfile_parse): any bytes must parse or be refused, never crash or
 * read out of bounds. Each input is parsed as given and once more with its
 * last 32 bytes replaced by a correct BLAKE3 checksum, so the fuzzer reaches
 * the field checks behind the checksum. A file that parses must also survive
 * the unseal step with a fixed (wrong) sealing key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <blake3.h>
#include <sodium.h>

#include "kms_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
one(const uint8_t *data, size_t size)
{
    static const uint8_t key[KMS__SEAL_KEY_LEN] = {1};
    uint8_t seed[KMS_SEED_LEN];
    kms__file_t f;
    kms_keyfile_info_t info;

    if (kms_keyfile_parse(data, size, &info) != 0)
        return;
    if (kms__file_parse(data, size, &f) != 0)
        abort(); /* the two entry points must agree */
    if (f.ad_len + f.sk_len + KMS__TAG_LEN + KMS__SUM_LEN != size)
        abort();
    if (sodium_init() < 0)
        abort();
    (void)kms__file_open_seed(&f, f.info.seal == KMS_SEAL_NONE ? NULL : key, seed);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t fixed[KMS_FILE_MAX];
    blake3_hasher h;

    one(data, size);
    if (size < KMS__SUM_LEN || size > sizeof fixed)
        return 0;
    memcpy(fixed, data, size);
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, fixed, size - KMS__SUM_LEN);
    blake3_hasher_finalize(&h, fixed + size - KMS__SUM_LEN, KMS__SUM_LEN);
    one(fixed, size);
    return 0;
}
