/*
 * gen_dht_corpus.c - writes the seed corpus of fuzz_dht_datagram: a valid
 * datagram of every op and direction (signed records included) and edge
 * cases (limits, padding, truncation, malformations). Build and run from the
 * repository root after a build:
 *   cc -Isrc/svc-dht -Isrc/ron-naming -Isrc/common tests/corpus/gen_dht_corpus.c \
 *      build/asan/src/svc-dht/libsvc-dht.a build/asan/src/oap/liboap.a \
 *      build/asan/src/ron-proto/libron-proto.a build/asan/src/ron-naming/libron-naming.a \
 *      build/asan/src/common/libcommon.a build/asan/libblake3.a \
 *      -lsodium -ljansson -lidn2 -lzstd -fsanitize=address,undefined -o /tmp/gen && /tmp/gen
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "svc_dht.h"

#define DIR "tests/corpus/dht_datagram/"

static dht_msg_t m;
static uint8_t sk[64], pk[32];

static void
put(const char *name, const uint8_t *b, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, DIR "%s", name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b, 1, n, f) != n)
        abort();
    fclose(f);
}

static size_t
enc(const char *name, uint8_t *b)
{
    ssize_t n = dht_msg_encode(&m, b, DHT_MAX_DATAGRAM);
    if (n < 0) {
        fprintf(stderr, "%s: %zd\n", name, n);
        abort();
    }
    put(name, b, (size_t)n);
    return (size_t)n;
}

static void
reset(uint8_t op, bool reply)
{
    memset(&m, 0, offsetof(dht_msg_t, contacts));
    m.op = op;
    m.reply = reply;
    m.status = reply ? 200 : 0;
    m.txid = 0x0102030405060708ull;
    memset(m.sender, 0x11, DHT_ID_LEN);
    if (reply)
        memset(m.token, 0x22, DHT_TOKEN_LEN);
}

static dht_addr_t
a4(uint8_t x)
{
    dht_addr_t a = {.family = 4, .ip = {10, 0, 0, x}, .port = 5302};
    return a;
}

static dht_addr_t
a6(uint8_t x)
{
    dht_addr_t a = {.family = 6, .ip = {0x20, 0x01, 0x0d, 0xb8, [15] = x}, .port = 5302};
    return a;
}

static void
prov(dht_provider_t *p, uint8_t keyb, bool v6)
{
    memset(p, 0, sizeof *p);
    memset(p->key, keyb, DHT_ID_LEN);
    p->addr = v6 ? a6(9) : a4(9);
    p->ts = 1764000000;
    p->ttl = DHT_PROVIDER_TTL_S;
    if (dht_provider_sign(p, sk) != 0)
        abort();
}

int
main(void)
{
    uint8_t b[DHT_MAX_DATAGRAM];
    size_t n;

    if (sodium_init() < 0)
        return 1;
    uint8_t seed[32] = {7};
    crypto_sign_seed_keypair(pk, sk, seed);

    reset(DHT_OP_PING, false);
    enc("ping_req", b);
    reset(DHT_OP_PING, false);
    m.flags = DHT_MSG_F_TOKEN;
    memset(m.token, 0x33, DHT_TOKEN_LEN);
    enc("ping_req_token", b);
    reset(DHT_OP_PING, true);
    enc("ping_rep", b);

    reset(DHT_OP_FIND_NODE, false);
    memset(m.target, 0x44, DHT_ID_LEN);
    enc("find_node_req", b);
    m.pad = (uint16_t)(DHT_PAD_UNTOKENED - 38 - 42 - 32);
    enc("find_node_req_padded", b);
    reset(DHT_OP_FIND_NODE, true);
    enc("find_node_rep_empty", b);
    m.n_contacts = DHT_K;
    for (unsigned i = 0; i < DHT_K; i++) {
        memset(m.contacts[i].id, (int)i, DHT_ID_LEN);
        m.contacts[i].addr = a4((uint8_t)i);
    }
    enc("find_node_rep_20_v4", b);
    for (unsigned i = 0; i < DHT_K; i++)
        m.contacts[i].addr = a6((uint8_t)i);
    enc("find_node_rep_20_v6", b);
    m.n_contacts = 6;
    m.flags = DHT_MSG_F_TRUNCATED;
    enc("find_node_rep_truncated", b);

    reset(DHT_OP_FIND_VALUE, false);
    memset(m.target, 0x55, DHT_ID_LEN);
    enc("find_value_req", b);
    reset(DHT_OP_FIND_VALUE, true);
    memset(m.target, 0x55, DHT_ID_LEN);
    m.n_providers = 3;
    for (unsigned i = 0; i < 3; i++)
        prov(&m.providers[i], 0x55, i == 2);
    m.n_contacts = 2;
    m.contacts[0].addr = a4(1);
    m.contacts[1].addr = a6(2);
    enc("find_value_rep_providers", b);
    reset(DHT_OP_FIND_VALUE, true);
    dht_id_of_name(m.target, "photos.alice");
    m.flags = DHT_MSG_F_NAME;
    memset(&m.name, 0, sizeof m.name);
    strcpy(m.name.name, "photos.alice");
    memset(m.name.addr.b, 0xab, 32);
    m.name.seq = 3;
    m.name.ts = 1764000000;
    if (name_record_sign(&m.name, sk) != 0)
        abort();
    enc("find_value_rep_name", b);
    /* a transfer record */
    m.name.has_new_owner = true;
    memset(m.name.new_owner, 0x66, 32);
    if (name_record_sign(&m.name, sk) != 0)
        abort();
    enc("find_value_rep_name_transfer", b);

    reset(DHT_OP_PROVIDE, false);
    m.n_providers = 1;
    prov(&m.providers[0], 0x77, false);
    enc("provide_req_provider", b);
    m.providers[0].sig[0] ^= 1;
    enc("provide_req_forged", b);
    prov(&m.providers[0], 0x77, true);
    m.providers[0].ttl = 0;
    if (dht_provider_sign(&m.providers[0], sk) != 0)
        abort();
    enc("provide_req_withdrawal", b);
    reset(DHT_OP_PROVIDE, false);
    m.flags = DHT_MSG_F_NAME;
    memset(&m.name, 0, sizeof m.name);
    strcpy(m.name.name, "photos.alice");
    m.name.seq = 1;
    m.name.ts = 1764000000;
    if (name_record_sign(&m.name, sk) != 0)
        abort();
    enc("provide_req_name", b);
    reset(DHT_OP_PROVIDE, true);
    enc("provide_rep_ok", b);
    m.status = 429;
    enc("provide_rep_429", b);

    /* malformed edge cases */
    reset(DHT_OP_FIND_NODE, false);
    n = enc("bad_trailing_nonzero", b);
    b[n - 1] = 0;
    b[3] = (uint8_t)(n + 1);
    b[n] = 1;
    put("bad_trailing_nonzero", b, n + 1);
    reset(DHT_OP_PING, false);
    n = enc("bad_app_proto", b);
    b[11] = 4;
    put("bad_app_proto", b, n);
    reset(DHT_OP_PING, false);
    n = enc("bad_op", b);
    b[38] = 0;
    put("bad_op", b, n);
    reset(DHT_OP_FIND_NODE, true);
    m.n_contacts = 1;
    m.contacts[0].addr = a4(1);
    n = enc("bad_count", b);
    b[38 + 42] = 21;
    put("bad_count", b, n);
    b[38 + 42] = 1;
    b[38 + 42 + 1 + 32] = 5; /* family 5 */
    put("bad_family", b, n);
    put("bad_truncated_header", b, 20);
    return 0;
}
