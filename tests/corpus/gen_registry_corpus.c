/*
 * gen_registry_corpus.c - writes the seed corpus of fuzz_registry_parse: a
 * valid descriptor set (minimal and full), a valid record line, valid logs
 * of one and three versions (with a signer-set change and a revocation), and
 * malformed neighbours (torn, reordered, edited). Build and run from the
 * repository root after a build:
 *   cc -Isrc/svc-registry -Isrc/common tests/corpus/gen_registry_corpus.c \
 *      build/asan/src/svc-registry/libsvc-registry.a build/asan/src/common/libcommon.a \
 *      build/asan/libblake3.a -lsodium -ljansson -luv -lpthread \
 *      -fsanitize=address,undefined -o /tmp/gen && /tmp/gen
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "reg_internal.h"

#define DIR "tests/corpus/registry_parse/"

static uint8_t pk[5][32], sk[5][64];

static void
put(const char *name, const char *data, size_t len)
{
    char path[256];
    FILE *f;
    snprintf(path, sizeof path, DIR "%s", name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len)
        exit(1);
    fclose(f);
}

/* Append to log the record of d approved by signers who[0..n). */
static void
commit(reg_t *reg, reg_desc_t *d, const int *who, size_t n)
{
    uint8_t id[32], sig[64];
    if (reg_propose(reg, d, id, NULL) < 0)
        exit(2);
    for (size_t i = 0; i < n; i++)
        if (reg_approval_sign(id, sk[who[i]], sig) < 0 ||
            reg_approve(reg, id, pk[who[i]], sig, NULL, NULL) < 0)
            exit(3);
    if (reg_commit(reg, id, NULL, NULL) < 0)
        exit(4);
}

int
main(void)
{
    reg_opts_t o = {.path = "/tmp/gen_registry_corpus.log"};
    reg_desc_t *d = calloc(1, sizeof *d);
    reg_t *reg;
    char *txt, *buf;
    size_t n, total = 0;
    static const int ab[] = {0, 1}, bd[] = {1, 3};
    FILE *f;

    if (sodium_init() < 0)
        return 1;
    remove(o.path);
    for (int i = 0; i < 5; i++) {
        uint8_t seed[32];
        memset(seed, 0x60 + i, sizeof seed);
        crypto_sign_seed_keypair(pk[i], sk[i], seed);
    }
    d->version = 1;
    d->n_peers = 2;
    strcpy(d->peers[0], "127.0.0.1:5302");
    strcpy(d->peers[1], "0123abcd@[::1]:5302");
    d->n_trusted = 1;
    strcpy(d->trusted[0].name, "passport.v1");
    memcpy(d->trusted[0].pk, pk[4], 32);
    d->threshold = 2;
    d->n_signers = 3;
    memcpy(d->signers, pk, 3 * 32);
    if (reg_desc_encode(d, &txt, &n) < 0)
        return 1;
    put("desc_full.json", txt, n);
    free(txt);
    if (reg_open(&o, &reg, NULL) < 0)
        return 1;
    commit(reg, d, ab, 2);
    /* v2: C revoked, D added */
    d->version = 2;
    reg_head(reg, NULL, d->prev, NULL);
    memcpy(d->signers[2], pk[3], 32);
    d->n_revoked = 1;
    memcpy(d->revoked[0], pk[2], 32);
    commit(reg, d, ab, 2);
    /* v3: new policy, approved by B and D */
    d->version = 3;
    reg_head(reg, NULL, d->prev, NULL);
    memset(d->policy, 0x33, 32);
    commit(reg, d, bd, 2);
    reg_free(reg);
    f = fopen(o.path, "rb");
    buf = malloc(1 << 20);
    total = fread(buf, 1, 1 << 20, f);
    fclose(f);
    put("log_three_versions", buf, total);
    n = (size_t)((char *)memchr(buf, '\n', total) - buf);
    put("record_v1", buf, n);
    put("log_one_version", buf, n + 1);
    put("log_torn", buf, total - 7);
    buf[n / 2] ^= 1;
    put("log_edited", buf, total);
    remove(o.path);
    free(buf);
    free(d);
    return 0;
}
