/*
 * fuzz_keyfile.c - libFuzzer target for the key file parser
 * (kms_keyfile_parse): any bytes must parse or be refused, never crash or
 * read out of bounds. A file that parses must also survive the unseal step
 * with a fixed (wrong) sealing key, which must refuse a sealed file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kms_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t key[KMS__SEAL_KEY_LEN] = {1};
    uint8_t seed[KMS_SEED_LEN];
    kms__file_t f;
    kms_keyfile_info_t info;

    if (kms_keyfile_parse(data, size, &info) != 0)
        return 0;
    if (kms__file_parse(data, size, &f) != 0)
        abort(); /* the two entry points must agree */
    if (f.ad_len + f.sk_len + KMS__TAG_LEN + KMS__SUM_LEN != size)
        abort();
    if (sodium_init() < 0)
        abort();
    (void)kms__file_open_seed(&f, f.info.seal == KMS_SEAL_NONE ? NULL : key, seed);
    return 0;
}
