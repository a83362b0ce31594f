/*
 * test_svc_dht.c - the sans-I/O DHT core driven with fake time and fake
 * peers: the XOR metric and bucket index, the datagram codec's strictness,
 * bucket eviction only after failed liveness pings, the anti-amplification
 * rule and its tokens, signed provider records and their limits, name
 * records under ron-naming's acceptance rule, routing-table save/load,
 * deadline reporting, and lookups on scripted peers in virtual time (the walk
 * and final-round times a lookup reports; a hedged lookup sends exactly one
 * extra request, to the next-closest peer, when a request outlives the
 * threshold, and does not wait for it; a hedge that outlives it too gets two;
 * a plain lookup waits for the timeout); a tracked publish reports how many
 * of the closest nodes accepted its record once every PROVIDE ended, and a
 * publish nobody accepted is tried again soon.
 * Multi-node behaviour (lookups against brute force) is the dht_sim_small
 * CTest entry.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "ron_err.h"
#include "svc_dht.h"

#define WALL 1764000000000LL /* unix ms at now = 0 */

static dht_msg_t msg, out; /* large: kept off the stack */

static dht_t *
node_new(uint8_t first, const dht_config_t *base)
{
    dht_config_t cfg;
    if (base != NULL)
        cfg = *base;
    else
        dht_config_init(&cfg);
    memset(cfg.id, 0, DHT_ID_LEN);
    cfg.id[0] = first;
    cfg.seed[0] = first;
    cfg.wall_offset_ms = WALL;
    dht_t *d = dht_new(&cfg, 0, NULL);
    assert_non_null(d);
    return d;
}

static dht_addr_t
addr4(uint8_t last, uint16_t port)
{
    dht_addr_t a;
    memset(&a, 0, sizeof a);
    a.family = 4;
    a.ip[0] = 192;
    a.ip[1] = 0;
    a.ip[2] = 2;
    a.ip[3] = last;
    a.port = port;
    return a;
}

static void
msg_reset(dht_msg_t *m, uint8_t op, bool reply)
{
    memset(m, 0, offsetof(dht_msg_t, contacts));
    m->op = op;
    m->reply = reply;
    m->status = reply ? 200 : 0;
    m->txid = 1234;
}

/* Encode m and feed it to d from `from`; returns dht_input's result and the datagram length. */
static int
feed(dht_t *d, const dht_msg_t *m, const dht_addr_t *from, uint64_t now, size_t *len_out)
{
    uint8_t buf[DHT_MAX_DATAGRAM];
    ssize_t n = dht_msg_encode(m, buf, sizeof buf);
    assert_true(n > 0);
    if (len_out != NULL)
        *len_out = (size_t)n;
    return dht_input(d, buf, (size_t)n, from, now);
}

/* Take the next datagram d wants to send, decoded into *m; its size, or 0. */
static size_t
take(dht_t *d, dht_msg_t *m, dht_addr_t *to)
{
    uint8_t buf[DHT_MAX_DATAGRAM];
    ssize_t n = dht_output_next(d, buf, sizeof buf, to);
    if (n == RON_EAGAIN)
        return 0;
    assert_true(n > 0);
    assert_int_equal(dht_msg_decode(m, buf, (size_t)n), 0);
    return (size_t)n;
}

static void
drain(dht_t *d)
{
    dht_addr_t to;
    while (take(d, &out, &to) > 0)
        ;
}

/* A PING from a peer with id {first, second, 0...} at 192.0.2.last. */
static void
ping_from(dht_t *d, uint8_t first, uint8_t second, uint8_t last, uint64_t now)
{
    dht_addr_t a = addr4(last, 5302);
    msg_reset(&msg, DHT_OP_PING, false);
    msg.sender[0] = first;
    msg.sender[1] = second;
    assert_int_equal(feed(d, &msg, &a, now, NULL), 0);
}

/* ---- ids ---- */

static void
test_dht_xor_metric_and_bucket_index(void **state)
{
    (void)state;
    uint8_t a[DHT_ID_LEN] = {0}, b[DHT_ID_LEN] = {0}, t[DHT_ID_LEN] = {0};
    assert_int_equal(dht_id_common_bits(a, b), 256);
    b[0] = 0x80;
    assert_int_equal(dht_id_common_bits(a, b), 0);
    b[0] = 0x01;
    assert_int_equal(dht_id_common_bits(a, b), 7);
    b[0] = 0;
    b[31] = 0x01;
    assert_int_equal(dht_id_common_bits(a, b), 255);
    b[31] = 0;
    b[9] = 0x20;
    assert_int_equal(dht_id_common_bits(a, b), 74);
    /* distance: a = 0..., b = 0x20 at byte 9; target 0x30 at byte 9 -> b closer */
    t[9] = 0x30;
    assert_true(dht_id_distance_cmp(t, b, a) < 0);
    assert_true(dht_id_distance_cmp(t, a, b) > 0);
    assert_int_equal(dht_id_distance_cmp(t, a, a), 0);
}

/* ---- codec ---- */

static void
test_dht_msg_roundtrips_and_rejects_malformed(void **state)
{
    (void)state;
    uint8_t buf[DHT_MAX_DATAGRAM + 8];
    ssize_t n;

    msg_reset(&msg, DHT_OP_FIND_NODE, true);
    msg.n_contacts = DHT_K;
    for (unsigned i = 0; i < DHT_K; i++) {
        memset(msg.contacts[i].id, (int)i + 1, DHT_ID_LEN);
        msg.contacts[i].addr = addr4((uint8_t)i, 5302);
    }
    n = dht_msg_encode(&msg, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n <= DHT_MAX_DATAGRAM);
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), 0);
    assert_int_equal(out.n_contacts, DHT_K);
    assert_memory_equal(out.contacts[7].id, msg.contacts[7].id, DHT_ID_LEN);
    assert_true(dht_addr_equal(&out.contacts[7].addr, &msg.contacts[7].addr));
    /* one byte short, one byte more, a wrong app_proto_id */
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n - 1), RON_EPROTO);
    buf[11] = 4;
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), RON_EPROTO);
    buf[11] = 5;
    /* a count over DHT_K */
    buf[38 + 42] = DHT_K + 1;
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), RON_EPROTO);

    /* requests may carry zero padding, not other bytes; replies none */
    msg_reset(&msg, DHT_OP_FIND_VALUE, false);
    msg.pad = 100;
    n = dht_msg_encode(&msg, buf, sizeof buf);
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), 0);
    assert_int_equal(out.pad, 100);
    buf[n - 1] = 1;
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), RON_EPROTO);
    msg_reset(&msg, DHT_OP_PING, true);
    msg.pad = 4;
    assert_int_equal(dht_msg_encode(&msg, buf, sizeof buf), RON_EINVAL);
    /* an absent token must be all zero; unknown flags and ops are refused */
    msg_reset(&msg, DHT_OP_PING, false);
    n = dht_msg_encode(&msg, buf, sizeof buf);
    buf[38 + 2 + DHT_ID_LEN] = 1;
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), RON_EPROTO);
    buf[38 + 2 + DHT_ID_LEN] = 0;
    buf[38 + 1] = 0x80;
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), RON_EPROTO);
    buf[38 + 1] = 0;
    buf[38] = 9;
    assert_int_equal(dht_msg_decode(&out, buf, (size_t)n), RON_EPROTO);
    assert_int_equal(dht_msg_decode(&out, buf, DHT_MAX_DATAGRAM + 1), RON_ETOOBIG);
}

/* ---- routing table ---- */

/* Fill bucket 0 of a node with id 0x00... with 20 peers 0x80 + i. */
static dht_t *
full_bucket_node(void)
{
    dht_t *d = node_new(0x00, NULL);
    for (uint8_t i = 0; i < DHT_K; i++)
        ping_from(d, (uint8_t)(0x80 + i), 0, (uint8_t)(10 + i), 0);
    drain(d);
    assert_int_equal(dht_table_size(d), DHT_K);
    return d;
}

static void
test_dht_bucket_keeps_live_node_over_newcomer(void **state)
{
    (void)state;
    dht_t *d = full_bucket_node();
    dht_addr_t to, lrs = addr4(10, 5302);
    uint8_t buf[DHT_MAX_DATAGRAM];

    ping_from(d, 0xf0, 0, 99, 100); /* newcomer into the full bucket */
    assert_true(take(d, &out, &to) > 0); /* our PONG to it */
    assert_true(take(d, &out, &to) > 0); /* liveness ping to the least recently seen */
    assert_int_equal(out.op, DHT_OP_PING);
    assert_false(out.reply);
    assert_true(dht_addr_equal(&to, &lrs));
    /* it answers: it stays, the newcomer does not get in */
    uint64_t txid = out.txid;
    msg_reset(&msg, DHT_OP_PING, true);
    msg.txid = txid;
    msg.sender[0] = 0x80;
    ssize_t n = dht_msg_encode(&msg, buf, sizeof buf);
    assert_int_equal(dht_input(d, buf, (size_t)n, &lrs, 150), 0);
    dht_tick(d, 5000);
    assert_int_equal(dht_table_size(d), DHT_K);
    assert_int_equal(dht_stats(d)->evictions, 0);
    dht_contact_t c[DHT_K];
    uint8_t target[DHT_ID_LEN] = {0xf0};
    size_t got = dht_table_closest(d, target, c, DHT_K);
    for (size_t i = 0; i < got; i++)
        assert_int_not_equal(c[i].id[0], 0xf0);
    dht_free(d);
}

static void
test_dht_bucket_evicts_node_after_failed_liveness_pings(void **state)
{
    (void)state;
    dht_t *d = full_bucket_node();
    dht_addr_t to;

    ping_from(d, 0xf0, 0, 99, 100);
    drain(d);
    dht_tick(d, 1100); /* first ping timed out: one more chance */
    assert_int_equal(dht_table_size(d), DHT_K);
    assert_true(take(d, &out, &to) > 0);
    assert_int_equal(out.op, DHT_OP_PING);
    dht_tick(d, 2200); /* second one too: evicted, the newcomer takes its place */
    assert_int_equal(dht_stats(d)->evictions, 1);
    assert_int_equal(dht_table_size(d), DHT_K);
    dht_contact_t c[1];
    uint8_t target[DHT_ID_LEN] = {0xf0};
    assert_int_equal(dht_table_closest(d, target, c, 1), 1);
    assert_int_equal(c[0].id[0], 0xf0);
    dht_free(d);
}

/* ---- anti-amplification ---- */

static void
test_dht_reply_over_3x_request_is_truncated_until_token_echoed(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    dht_addr_t req_from = addr4(200, 4000), to;
    size_t req_len, rep_len;

    for (uint8_t i = 0; i < 40; i++)
        ping_from(d, (uint8_t)(0x80 + i), (uint8_t)i, (uint8_t)(10 + i), 0);
    drain(d);
    /* an unpadded FIND_NODE without a token: the reply may be 3x its size only */
    msg_reset(&msg, DHT_OP_FIND_NODE, false);
    msg.sender[0] = 0x7f;
    msg.target[0] = 0x90;
    assert_int_equal(feed(d, &msg, &req_from, 10, &req_len), 0);
    rep_len = take(d, &out, &to);
    assert_true(rep_len > 0 && rep_len <= 3 * req_len);
    assert_true(out.flags & DHT_MSG_F_TRUNCATED);
    assert_true(out.n_contacts < DHT_K);
    assert_int_equal(dht_stats(d)->tx_truncated, 1);
    /* echo the token: the full reply comes back */
    uint8_t token[DHT_TOKEN_LEN];
    memcpy(token, out.token, sizeof token);
    msg.flags = DHT_MSG_F_TOKEN;
    memcpy(msg.token, token, sizeof token);
    assert_int_equal(feed(d, &msg, &req_from, 20, &req_len), 0);
    rep_len = take(d, &out, &to);
    assert_true(rep_len > 3 * req_len);
    assert_false(out.flags & DHT_MSG_F_TRUNCATED);
    assert_int_equal(out.n_contacts, DHT_K);
    /* the same token from another address (a spoofed victim) is worthless */
    dht_addr_t victim = addr4(201, 4000);
    assert_int_equal(feed(d, &msg, &victim, 30, &req_len), 0);
    rep_len = take(d, &out, &to);
    assert_true(rep_len <= 3 * req_len);
    assert_true(out.flags & DHT_MSG_F_TRUNCATED);
    /* padding to DHT_PAD_UNTOKENED buys a full reply without a token */
    msg.flags = 0;
    memset(msg.token, 0, sizeof msg.token);
    msg.pad = (uint16_t)(DHT_PAD_UNTOKENED - 38 - 42 - DHT_ID_LEN);
    assert_int_equal(feed(d, &msg, &victim, 40, &req_len), 0);
    assert_int_equal(req_len, DHT_PAD_UNTOKENED);
    take(d, &out, &to);
    assert_false(out.flags & DHT_MSG_F_TRUNCATED);
    assert_int_equal(out.n_contacts, DHT_K);
    dht_free(d);
}

/* ---- provider records ---- */

static void
provider_make(dht_provider_t *p, const uint8_t *key, uint8_t *sk, uint64_t ts, uint32_t ttl)
{
    uint8_t pk[32];
    crypto_sign_keypair(pk, sk);
    memset(p, 0, sizeof *p);
    memcpy(p->key, key, DHT_ID_LEN);
    p->addr = addr4(50, 5301);
    p->ts = ts;
    p->ttl = ttl;
    assert_int_equal(dht_provider_sign(p, sk), 0);
}

static uint16_t
provide(dht_t *d, const dht_provider_t *p, const dht_addr_t *from)
{
    dht_addr_t to;
    msg_reset(&msg, DHT_OP_PROVIDE, false);
    msg.sender[0] = 0x99;
    msg.n_providers = 1;
    msg.providers[0] = *p;
    (void)feed(d, &msg, from, 0, NULL);
    assert_true(take(d, &out, &to) > 0);
    assert_true(out.reply);
    drain(d);
    return out.status;
}

static void
test_dht_provider_records_verified_expired_and_limited(void **state)
{
    (void)state;
    dht_config_t cfg;
    uint8_t key[DHT_ID_LEN] = {0x55}, key2[DHT_ID_LEN] = {0x56}, key3[DHT_ID_LEN] = {0x57};
    uint8_t sk[64];
    uint64_t now_s = WALL / 1000;
    dht_provider_t p;
    dht_addr_t a = addr4(60, 7000), b = addr4(61, 7000), to;

    dht_config_init(&cfg);
    cfg.max_per_key = 2;
    cfg.max_per_peer = 2;
    dht_t *d = node_new(0x00, &cfg);

    provider_make(&p, key, sk, now_s, DHT_PROVIDER_TTL_S);
    assert_int_equal(dht_provider_verify(&p, (int64_t)now_s), 0);
    p.sig[0] ^= 1;
    assert_int_equal(dht_provider_verify(&p, (int64_t)now_s), RON_EDHTSIG);
    assert_int_equal(provide(d, &p, &a), 403);
    assert_int_equal(dht_stats(d)->rx_forged, 1);
    /* expired, and a TTL over 24 h */
    provider_make(&p, key, sk, now_s - DHT_PROVIDER_TTL_S - 1, DHT_PROVIDER_TTL_S);
    assert_int_equal(dht_provider_verify(&p, (int64_t)now_s), RON_EDHTEXPIRED);
    assert_int_equal(provide(d, &p, &a), 400);
    provider_make(&p, key, sk, now_s, DHT_PROVIDER_TTL_S + 1);
    assert_int_equal(dht_provider_verify(&p, (int64_t)now_s), RON_EDHTRECORD);
    /* per key: two providers, the third is refused */
    provider_make(&p, key, sk, now_s, 3600);
    assert_int_equal(provide(d, &p, &a), 200);
    provider_make(&p, key, sk, now_s, 3600);
    assert_int_equal(provide(d, &p, &b), 200);
    provider_make(&p, key, sk, now_s, 3600);
    assert_int_equal(provide(d, &p, &b), 429);
    /* per peer: address a already stored one; one more, then refused */
    provider_make(&p, key2, sk, now_s, 3600);
    assert_int_equal(provide(d, &p, &a), 200);
    provider_make(&p, key3, sk, now_s, 3600);
    assert_int_equal(provide(d, &p, &a), 429);
    assert_int_equal(dht_stats(d)->records_rejected_limit, 2);
    /* FIND_VALUE serves the two verified providers of key */
    msg_reset(&msg, DHT_OP_FIND_VALUE, false);
    msg.sender[0] = 0x98;
    memcpy(msg.target, key, DHT_ID_LEN);
    msg.pad = (uint16_t)(DHT_PAD_UNTOKENED - 38 - 42 - DHT_ID_LEN);
    assert_int_equal(feed(d, &msg, &b, 0, NULL), 0);
    assert_true(take(d, &out, &to) > 0);
    assert_int_equal(out.n_providers, 2);
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(dht_provider_verify(&out.providers[i], (int64_t)now_s), 0);
    /* records expire with their TTL (housekeeping runs every DHT_MAINT_MS) */
    dht_tick(d, 3600u * 1000 + DHT_MAINT_MS);
    assert_int_equal(dht_stats(d)->records_expired, 3);
    dht_free(d);
}

/* ---- name records ---- */

static uint16_t
publish_name(dht_t *d, const name_record_t *rec, const dht_addr_t *from)
{
    dht_addr_t to;
    msg_reset(&msg, DHT_OP_PROVIDE, false);
    msg.sender[0] = 0x99;
    msg.flags = DHT_MSG_F_NAME;
    msg.name = *rec;
    (void)feed(d, &msg, from, 0, NULL);
    assert_true(take(d, &out, &to) > 0);
    drain(d);
    return out.status;
}

static void
test_dht_name_records_follow_acceptance_rule(void **state)
{
    (void)state;
    uint8_t pka[32], ska[64], pkb[32], skb[64];
    name_record_t rec;
    dht_addr_t a = addr4(70, 7000), to;
    dht_t *d = node_new(0x00, NULL);

    crypto_sign_keypair(pka, ska);
    crypto_sign_keypair(pkb, skb);
    memset(&rec, 0, sizeof rec);
    strcpy(rec.name, "photos.alice");
    memset(rec.addr.b, 0xab, sizeof rec.addr.b);
    rec.seq = 1;
    rec.ts = WALL / 1000;
    assert_int_equal(name_record_sign(&rec, ska), 0);
    assert_int_equal(publish_name(d, &rec, &a), 200);
    /* another key cannot take the name; a stale seq is refused; a forgery is counted */
    rec.seq = 5;
    assert_int_equal(name_record_sign(&rec, skb), 0);
    assert_int_equal(publish_name(d, &rec, &a), 409);
    rec.seq = 1;
    memset(rec.addr.b, 0xcd, sizeof rec.addr.b);
    assert_int_equal(name_record_sign(&rec, ska), 0);
    assert_int_equal(publish_name(d, &rec, &a), 409);
    rec.seq = 2;
    assert_int_equal(name_record_sign(&rec, ska), 0);
    rec.sig[3] ^= 1;
    assert_int_equal(publish_name(d, &rec, &a), 403);
    rec.sig[3] ^= 1;
    assert_int_equal(publish_name(d, &rec, &a), 200);
    /* served under BLAKE3(name) */
    msg_reset(&msg, DHT_OP_FIND_VALUE, false);
    msg.sender[0] = 0x98;
    dht_id_of_name(msg.target, "photos.alice");
    msg.pad = (uint16_t)(DHT_PAD_UNTOKENED - 38 - 42 - DHT_ID_LEN);
    assert_int_equal(feed(d, &msg, &a, 0, NULL), 0);
    assert_true(take(d, &out, &to) > 0);
    assert_true(out.flags & DHT_MSG_F_NAME);
    assert_int_equal(out.name.seq, 2);
    assert_int_equal(out.name.addr.b[0], 0xcd);
    dht_free(d);
}

/* ---- save / load ---- */

static void
test_dht_table_save_load_roundtrip_and_rejects_corruption(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL), *e = node_new(0x00, NULL), *f = node_new(0x01, NULL);
    uint8_t *blob = malloc(DHT_SAVE_MAX);
    dht_contact_t c1[DHT_K], c2[DHT_K];
    uint8_t target[DHT_ID_LEN] = {0x42};
    ssize_t n;

    for (uint8_t i = 0; i < 30; i++)
        ping_from(d, (uint8_t)(i * 8 + 1), i, (uint8_t)(10 + i), 0);
    drain(d);
    n = dht_table_save(d, blob, DHT_SAVE_MAX);
    assert_true(n > 0);
    assert_int_equal(dht_table_save(d, blob, 10), -ENOBUFS);
    n = dht_table_save(d, blob, DHT_SAVE_MAX);
    assert_int_equal(dht_table_load(e, blob, (size_t)n, 0), 0);
    assert_int_equal(dht_table_size(e), dht_table_size(d));
    assert_int_equal(dht_table_closest(e, target, c2, DHT_K), dht_table_closest(d, target, c1, DHT_K));
    assert_memory_equal(c1, c2, sizeof c1[0] * 5);
    /* another node's blob, a flipped byte, a truncated blob, trailing bytes */
    assert_int_equal(dht_table_load(f, blob, (size_t)n, 0), RON_EDHTBLOB);
    blob[50] ^= 1;
    assert_int_equal(dht_table_load(e, blob, (size_t)n, 0), RON_EDHTBLOB);
    blob[50] ^= 1;
    assert_int_equal(dht_table_load(e, blob, (size_t)n - 1, 0), RON_EDHTBLOB);
    assert_int_equal(dht_table_load(e, blob, 3, 0), RON_EDHTBLOB);
    assert_int_equal(dht_table_size(f), 0);
    free(blob);
    dht_free(d);
    dht_free(e);
    dht_free(f);
}

/* ---- deadlines ---- */

static void
test_dht_deadline_reports_request_timeout_then_housekeeping(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    dht_addr_t seed = addr4(1, 5302), to;

    assert_int_equal(dht_next_deadline(d), DHT_MAINT_MS);
    assert_int_equal(dht_bootstrap(d, &seed, 1, 500), 0);
    assert_true(take(d, &out, &to) > 0);
    assert_int_equal(out.op, DHT_OP_PING);
    assert_int_equal(dht_next_deadline(d), 500 + DHT_REQUEST_TIMEOUT_MS);
    dht_tick(d, 500 + DHT_REQUEST_TIMEOUT_MS - 1);
    assert_int_equal(dht_stats(d)->requests_timeout, 0);
    dht_tick(d, 500 + DHT_REQUEST_TIMEOUT_MS);
    assert_int_equal(dht_stats(d)->requests_timeout, 1);
    assert_int_equal(dht_next_deadline(d), DHT_MAINT_MS);
    assert_int_equal(dht_bootstrap(d, NULL, 0, 600), RON_EINVAL);
    dht_free(d);
}

static void
test_dht_drops_and_counts_malformed_and_unsolicited(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    dht_addr_t a = addr4(9, 9), to;
    uint8_t junk[50] = {0};

    assert_int_equal(dht_input(d, junk, sizeof junk, &a, 0), RON_EPROTO);
    assert_int_equal(dht_stats(d)->rx_malformed, 1);
    msg_reset(&msg, DHT_OP_PING, true);
    msg.sender[0] = 0x44;
    assert_int_equal(feed(d, &msg, &a, 0, NULL), RON_ENOTFOUND);
    assert_int_equal(dht_stats(d)->rx_unsolicited, 1);
    assert_int_equal(take(d, &out, &to), 0); /* nothing answered */
    dht_free(d);
}

/* ---- lookups on scripted peers ---- */

/* Peer i of the lookup tests: id {0x80 + i, i, 0...} at 192.0.2.(10 + i), so
 * peer i is the i-th closest to the target {0x80, 0...}. Peers 0..19 are in
 * the table; peers 20.. are known only from replies. */
enum { TABLE_PEERS = 20, PEERS = 24 };

typedef struct {
    uint64_t txid[PEERS];
    bool asked[PEERS];
} asked_t;

static void
peers_add(dht_t *d)
{
    for (uint8_t i = 0; i < TABLE_PEERS; i++)
        ping_from(d, (uint8_t)(0x80 + i), i, (uint8_t)(10 + i), 0);
    drain(d);
    assert_int_equal(dht_table_size(d), TABLE_PEERS);
}

/* Take the FIND_NODE requests d queued; returns how many; *last_peer: the last one's peer. */
static unsigned
take_requests(dht_t *d, asked_t *a, int *last_peer)
{
    dht_addr_t to;
    unsigned n = 0;
    while (take(d, &out, &to) > 0) {
        assert_int_equal(out.op, DHT_OP_FIND_NODE);
        assert_false(out.reply);
        int i = to.ip[3] - 10;
        assert_true(i >= 0 && i < PEERS);
        a->txid[i] = out.txid;
        a->asked[i] = true;
        if (last_peer != NULL)
            *last_peer = i;
        n++;
    }
    return n;
}

/* Peer i answers its request, naming peers first .. first + n - 1 (n may be 0). */
static void
answer_naming(dht_t *d, asked_t *a, int i, uint64_t now, int first, int n)
{
    dht_addr_t from = addr4((uint8_t)(10 + i), 5302);
    assert_true(a->asked[i]);
    msg_reset(&msg, DHT_OP_FIND_NODE, true);
    msg.txid = a->txid[i];
    msg.sender[0] = (uint8_t)(0x80 + i);
    msg.sender[1] = (uint8_t)i;
    memset(msg.token, 0x5a, sizeof msg.token);
    for (int k = 0; k < n; k++) {
        dht_contact_t *c = &msg.contacts[msg.n_contacts++];
        memset(c->id, 0, DHT_ID_LEN);
        c->id[0] = (uint8_t)(0x80 + first + k);
        c->id[1] = (uint8_t)(first + k);
        c->addr = addr4((uint8_t)(10 + first + k), 5302);
    }
    assert_int_equal(feed(d, &msg, &from, now, NULL), 0);
    a->asked[i] = false;
}

static void
answer(dht_t *d, asked_t *a, int i, uint64_t now)
{
    answer_naming(d, a, i, now, 0, 0);
}

/* Answer every request d sends `delay` ms after it was sent, until none is left. */
static uint64_t
answer_all(dht_t *d, uint64_t now, uint64_t delay)
{
    asked_t a;
    memset(&a, 0, sizeof a);
    while (take_requests(d, &a, NULL) > 0) {
        now += delay;
        for (int i = 0; i < PEERS; i++)
            if (a.asked[i])
                answer(d, &a, i, now);
    }
    return now;
}

static const dht_lookup_result_t *
lookup_done(dht_t *d)
{
    dht_event_t ev;
    assert_int_equal(dht_event_next(d, &ev), 0);
    assert_int_equal(ev.type, DHT_EV_LOOKUP_DONE);
    return ev.result;
}

static bool
result_has(const dht_lookup_result_t *r, int peer)
{
    for (uint32_t k = 0; k < r->n_closest; k++)
        if (r->closest[k].id[0] == 0x80 + peer && r->closest[k].id[1] == peer)
            return true;
    return false;
}

static void
test_dht_lookup_reports_walk_and_final_round_times(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    uint8_t target[DHT_ID_LEN] = {0x80};
    asked_t a;

    memset(&a, 0, sizeof a);
    peers_add(d);
    assert_int_equal(dht_lookup(d, target, DHT_LOOKUP_NODES, DHT_LOOKUP_F_NO_HEDGE, 1000, NULL), 0);
    assert_int_equal(take_requests(d, &a, NULL), DHT_ALPHA); /* peers 0, 1, 2 */
    assert_true(a.asked[0] && a.asked[1] && a.asked[2]);
    /* a farther peer answers first: the walk goes on, one request at a time */
    answer(d, &a, 1, 1040);
    assert_int_equal(take_requests(d, &a, NULL), 1);
    assert_true(a.asked[3]);
    /* the closest answers without naming anyone closer at 1100: the final
     * round asks all the other k closest at once */
    answer(d, &a, 0, 1100);
    assert_int_equal(take_requests(d, &a, NULL), TABLE_PEERS - 4);
    for (int i = 2; i < TABLE_PEERS; i++)
        if (i != 7)
            answer(d, &a, i, 1150);
    assert_int_equal(dht_event_next(d, &(dht_event_t){0}), RON_EAGAIN); /* waits for peer 7 */
    answer(d, &a, 7, 1350);
    const dht_lookup_result_t *r = lookup_done(d);
    assert_int_equal(r->n_closest, TABLE_PEERS);
    assert_int_equal(r->stats.latency_ms, 350);
    assert_int_equal(r->stats.converged_ms, 100); /* the walk; the final round took 250 */
    assert_int_equal(r->stats.requests, TABLE_PEERS);
    assert_int_equal(r->stats.hops, 1);
    dht_free(d);
}

/*
 * Warm the hedge threshold up to 100 ms, then look up the target from t0:
 * the closest peer answers at +50 naming peers 20, 21 and 22, the final
 * round asks peers 3..19 at +50, all answer at +80 but peer 5, which stays
 * silent. Returns how many requests went out when peer 5's request turned
 * +150 (its hedge time), *extra_peer: to which peer.
 */
static unsigned
lookup_with_silent_peer(dht_t *d, unsigned flags, asked_t *a, uint64_t *t0_out, int *extra_peer)
{
    uint8_t target[DHT_ID_LEN] = {0x80};
    uint64_t now = 0;

    peers_add(d);
    for (int k = 0; k < 2; k++) { /* 2 x 20 round trips of 100 ms */
        assert_int_equal(dht_lookup(d, target, DHT_LOOKUP_NODES, DHT_LOOKUP_F_NO_HEDGE, now, NULL),
                         0);
        now = answer_all(d, now, 100);
        (void)lookup_done(d);
    }
    assert_int_equal(dht_hedge_threshold(d), 100);
    memset(a, 0, sizeof *a);
    uint64_t t0 = *t0_out = now + 1000;
    assert_int_equal(dht_lookup(d, target, DHT_LOOKUP_NODES, flags, t0, NULL), 0);
    assert_int_equal(take_requests(d, a, NULL), DHT_ALPHA);
    answer_naming(d, a, 0, t0 + 50, 20, 3);
    assert_int_equal(take_requests(d, a, NULL), TABLE_PEERS - DHT_ALPHA); /* peers 3..19 */
    assert_false(a->asked[20] || a->asked[21]); /* 21st and 22nd closest: not yet */
    for (int i = 1; i < TABLE_PEERS; i++)
        if (i != 5)
            answer(d, a, i, t0 + 80);
    dht_tick(d, t0 + 149);
    assert_int_equal(take_requests(d, a, NULL), 0);
    dht_tick(d, t0 + 150); /* peer 5 is now slower than the threshold */
    return take_requests(d, a, extra_peer);
}

static void
test_dht_hedge_goes_to_next_closest_once_and_overdue_is_not_waited_for(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    int extra_peer = -1;
    uint64_t t0;
    asked_t a;

    assert_int_equal(lookup_with_silent_peer(d, 0, &a, &t0, &extra_peer), 1); /* one extra */
    assert_int_equal(extra_peer, 20); /* to the next-closest peer not yet asked */
    answer(d, &a, 20, t0 + 200);
    const dht_lookup_result_t *r = lookup_done(d);
    assert_int_equal(r->stats.hedged, 1);
    assert_int_equal(r->stats.timeouts, 0);
    assert_int_equal(r->stats.latency_ms, 200); /* done without waiting for peer 5 */
    assert_int_equal(r->stats.converged_ms, 50);
    assert_int_equal(r->stats.requests, TABLE_PEERS + 1);
    assert_int_equal(r->n_closest, DHT_K);
    assert_false(result_has(r, 5));
    assert_true(result_has(r, 0) && result_has(r, 20));
    assert_int_equal(dht_stats(d)->requests_hedged, 1);
    dht_free(d);
}

static void
test_dht_overdue_hedge_gets_two_more_requests(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    int extra_peer = -1;
    uint64_t t0;
    asked_t a;

    assert_int_equal(lookup_with_silent_peer(d, 0, &a, &t0, &extra_peer), 1);
    assert_int_equal(extra_peer, 20);
    /* peer 20, the hedge, is silent too: at its own hedge time the step gets
     * two requests, to peers 21 and 22 */
    dht_tick(d, t0 + 249);
    assert_int_equal(take_requests(d, &a, NULL), 0);
    dht_tick(d, t0 + 250);
    assert_int_equal(take_requests(d, &a, NULL), 2);
    assert_true(a.asked[21] && a.asked[22]);
    /* the closer one answering completes the k closest: peer 22 is not waited for */
    answer(d, &a, 21, t0 + 260);
    const dht_lookup_result_t *r = lookup_done(d);
    assert_int_equal(r->stats.latency_ms, 260);
    assert_int_equal(r->stats.hedged, 3); /* peer 5's hedge, peer 20's two */
    assert_int_equal(r->stats.requests, TABLE_PEERS + 3);
    assert_int_equal(r->n_closest, DHT_K);
    assert_true(result_has(r, 21));
    assert_false(result_has(r, 5) || result_has(r, 20) || result_has(r, 22));
    dht_free(d);
}

static void
test_dht_plain_lookup_waits_for_timeout_of_silent_peer(void **state)
{
    (void)state;
    dht_t *d = node_new(0x00, NULL);
    int extra_peer = -1, late = -1;
    uint64_t t0;
    asked_t a;

    assert_int_equal(lookup_with_silent_peer(d, DHT_LOOKUP_F_NO_HEDGE, &a, &t0, &extra_peer), 0);
    /* only peer 5's timeout frees its place among the k closest */
    dht_tick(d, t0 + 50 + DHT_REQUEST_TIMEOUT_MS - 1);
    assert_int_equal(take_requests(d, &a, NULL), 0);
    dht_tick(d, t0 + 50 + DHT_REQUEST_TIMEOUT_MS);
    assert_int_equal(take_requests(d, &a, &late), 1);
    assert_int_equal(late, 20);
    answer(d, &a, 20, t0 + 1100);
    const dht_lookup_result_t *r = lookup_done(d);
    assert_int_equal(r->stats.hedged, 0);
    assert_int_equal(r->stats.timeouts, 1);
    assert_int_equal(r->stats.latency_ms, 1100); /* waited for peer 5's timeout */
    assert_int_equal(r->stats.requests, TABLE_PEERS + 1);
    assert_int_equal(r->n_closest, DHT_K);
    assert_false(result_has(r, 5));
    assert_int_equal(dht_stats(d)->requests_hedged, 0);
    dht_free(d);
}

/* ---- tracked publishes ---- */

/* A node with a real key (provider records are signed) and an overlay address. */
static dht_t *
provider_node(uint8_t sk_out[static 64])
{
    dht_config_t cfg;
    uint8_t pk[32];
    dht_t *d;

    dht_config_init(&cfg);
    crypto_sign_keypair(pk, sk_out);
    dht_id_of_key(cfg.id, pk);
    cfg.sk = sk_out;
    cfg.overlay_addr = addr4(200, 5301);
    cfg.wall_offset_ms = WALL;
    d = dht_new(&cfg, 0, NULL);
    assert_non_null(d);
    return d;
}

/* Answer every FIND_NODE d sends (naming nobody) until its publish lookup
 * ends; the PROVIDE requests it then sends go into *prov. Returns their count. */
static unsigned
publish_walk(dht_t *d, uint64_t now, asked_t *prov)
{
    asked_t a;
    dht_addr_t to;
    unsigned n = 0;

    memset(&a, 0, sizeof a);
    memset(prov, 0, sizeof *prov);
    for (int round = 0; round < 50; round++) {
        bool any = false;
        while (take(d, &out, &to) > 0) {
            int i = to.ip[3] - 10;
            assert_true(i >= 0 && i < PEERS);
            if (out.op == DHT_OP_PROVIDE) {
                assert_int_equal(out.n_providers, 1);
                prov->txid[i] = out.txid;
                prov->asked[i] = true;
                n++;
                continue;
            }
            assert_int_equal(out.op, DHT_OP_FIND_NODE);
            a.txid[i] = out.txid;
            a.asked[i] = true;
            any = true;
        }
        if (!any)
            break;
        for (int i = 0; i < PEERS; i++)
            if (a.asked[i])
                answer(d, &a, i, now);
    }
    return n;
}

/* Peer i answers its PROVIDE with status. */
static void
provide_reply(dht_t *d, const asked_t *prov, int i, uint16_t status, uint64_t now)
{
    dht_addr_t from = addr4((uint8_t)(10 + i), 5302);
    assert_true(prov->asked[i]);
    msg_reset(&msg, DHT_OP_PROVIDE, true);
    msg.txid = prov->txid[i];
    msg.status = status;
    msg.sender[0] = (uint8_t)(0x80 + i);
    msg.sender[1] = (uint8_t)i;
    memset(msg.token, 0x5a, sizeof msg.token);
    assert_int_equal(feed(d, &msg, &from, now, NULL), 0);
}

static void
test_dht_tracked_provide_reports_acks_once_every_store_ended(void **state)
{
    (void)state;
    uint8_t sk[64], key[DHT_ID_LEN] = {0x80, 0x42};
    dht_t *d = provider_node(sk);
    dht_event_t ev;
    asked_t prov;
    uint32_t id = 0;

    peers_add(d);
    assert_int_equal(dht_provide_tracked(d, key, 1000, &id), 0);
    assert_int_not_equal(id, 0);
    assert_int_equal(publish_walk(d, 1010, &prov), TABLE_PEERS); /* the k closest */
    /* two accept, one refuses: no event while the others are out */
    provide_reply(d, &prov, 0, 200, 1020);
    provide_reply(d, &prov, 1, 200, 1020);
    provide_reply(d, &prov, 2, 429, 1020);
    assert_int_equal(dht_event_next(d, &ev), RON_EAGAIN);
    /* the rest time out */
    dht_tick(d, 1010 + DHT_REQUEST_TIMEOUT_MS);
    assert_int_equal(dht_event_next(d, &ev), 0);
    assert_int_equal(ev.type, DHT_EV_PUBLISHED);
    assert_int_equal(ev.result->id, id);
    assert_memory_equal(ev.result->target, key, DHT_ID_LEN);
    assert_int_equal(ev.result->store_sent, TABLE_PEERS);
    assert_int_equal(ev.result->store_acked, 2);
    assert_int_equal(ev.result->store_refused, 1);
    assert_int_equal(dht_event_next(d, &ev), RON_EAGAIN);
    dht_free(d);
}

static void
test_dht_publish_no_node_accepted_is_retried_soon_with_backoff(void **state)
{
    (void)state;
    uint8_t sk[64], key[DHT_ID_LEN] = {0x80, 0x43};
    dht_t *d = provider_node(sk);
    dht_event_t ev;
    dht_addr_t to;
    asked_t prov;
    uint32_t id = 0;
    uint64_t now = 1000;
    unsigned finds;

    peers_add(d);
    assert_int_equal(dht_provide_tracked(d, key, now, &id), 0);
    assert_int_equal(publish_walk(d, now, &prov), TABLE_PEERS);
    now += DHT_REQUEST_TIMEOUT_MS; /* every PROVIDE times out */
    dht_tick(d, now);
    assert_int_equal(dht_event_next(d, &ev), 0);
    assert_int_equal(ev.type, DHT_EV_PUBLISHED);
    assert_int_equal(ev.result->store_acked, 0);
    /* the peers' contacts survive (they answered the lookup); no republish
     * 12 h away: a new publish of key within the retry time + a maintenance period */
    drain(d);
    dht_tick(d, now + DHT_PUBLISH_RETRY_MS + DHT_MAINT_MS);
    finds = 0;
    while (take(d, &out, &to) > 0)
        if (out.op == DHT_OP_FIND_NODE && memcmp(out.target, key, DHT_ID_LEN) == 0)
            finds++;
    assert_true(finds > 0);
    /* an untracked publish raises no event */
    assert_int_equal(dht_event_next(d, &ev), RON_EAGAIN);
    dht_free(d);
}

int
main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dht_xor_metric_and_bucket_index),
        cmocka_unit_test(test_dht_msg_roundtrips_and_rejects_malformed),
        cmocka_unit_test(test_dht_bucket_keeps_live_node_over_newcomer),
        cmocka_unit_test(test_dht_bucket_evicts_node_after_failed_liveness_pings),
        cmocka_unit_test(test_dht_reply_over_3x_request_is_truncated_until_token_echoed),
        cmocka_unit_test(test_dht_provider_records_verified_expired_and_limited),
        cmocka_unit_test(test_dht_name_records_follow_acceptance_rule),
        cmocka_unit_test(test_dht_table_save_load_roundtrip_and_rejects_corruption),
        cmocka_unit_test(test_dht_deadline_reports_request_timeout_then_housekeeping),
        cmocka_unit_test(test_dht_drops_and_counts_malformed_and_unsolicited),
        cmocka_unit_test(test_dht_lookup_reports_walk_and_final_round_times),
        cmocka_unit_test(test_dht_hedge_goes_to_next_closest_once_and_overdue_is_not_waited_for),
        cmocka_unit_test(test_dht_overdue_hedge_gets_two_more_requests),
        cmocka_unit_test(test_dht_plain_lookup_waits_for_timeout_of_silent_peer),
        cmocka_unit_test(test_dht_tracked_provide_reports_acks_once_every_store_ended),
        cmocka_unit_test(test_dht_publish_no_node_accepted_is_retried_soon_with_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
