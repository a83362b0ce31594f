/*
 * test_oap.c - OAP/1 codec: hand-written byte vectors in both directions,
 * every decoder rule and reject case of spec §5, chunking invariance, a seeded
 * random round trip (RON_TEST_SEED=<n> replays one), zero-copy views, bounded
 * zstd inflate against a real bomb, HELLO and stream bookkeeping.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "oap.h"
#include "ron_err.h"
#include "ron_util.h"

/* ---- hand-written vectors (from the layout table, not from our encoder) ---- */

/* clang-format off */

/* HELLO: REQ|START|END, app 0, corr_id 1, payload {"ua":"x"} (10 bytes): len 48. */
static const uint8_t vec_hello[] = {
    0x00, 0x00, 0x00, 0x30,                         /* len 48 */
    0x00, 0x01,                                     /* ver 1 */
    0x00, 0x19,                                     /* REQ|START|END */
    0x00, 0x00,                                     /* code 0 */
    0x00, 0x00,                                     /* app_proto_id 0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* tenant */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00,                                     /* cap_len 0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* corr_id 1 */
    '{', '"', 'u', 'a', '"', ':', '"', 'x', '"', '}',
};

/* START with cap: REQ|START, app 1, tenant 00 11 .. ff, cap "cap", corr_id
 * 0xfedcba9876543210 (above 2^63), payload "hi": len 43. */
static const uint8_t vec_start_cap[] = {
    0x00, 0x00, 0x00, 0x2b,                         /* len 43 */
    0x00, 0x01,                                     /* ver 1 */
    0x00, 0x09,                                     /* REQ|START */
    0x00, 0x00,                                     /* code 0 */
    0x00, 0x01,                                     /* app_proto_id 1 (storage) */
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, /* tenant */
    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
    0x00, 0x03,                                     /* cap_len 3 */
    0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10, /* corr_id */
    'c', 'a', 'p',                                  /* cap */
    'h', 'i',                                       /* payload */
};

/* Error answer: RESP|END, code 404, app 1, corr_id 2^64-1, no payload: len 38. */
static const uint8_t vec_resp_404[] = {
    0x00, 0x00, 0x00, 0x26,                         /* len 38 */
    0x00, 0x01,                                     /* ver 1 */
    0x00, 0x12,                                     /* RESP|END */
    0x01, 0x94,                                     /* code 404 */
    0x00, 0x01,                                     /* app_proto_id 1 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* tenant */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00,                                     /* cap_len 0 */
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* corr_id */
};

/* clang-format on */

/* A valid 38-byte header template for reject cases: REQ, no cap, len 38. */
static void
hdr_template(uint8_t h[OAP_HDR_LEN])
{
    memset(h, 0, OAP_HDR_LEN);
    h[3] = 0x26; /* len 38 */
    h[5] = 0x01; /* ver 1 */
    h[7] = 0x01; /* REQ */
}

/* ---- seeded PRNG (xorshift64*) ---- */

static uint64_t rng_state;

static uint64_t
rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t
rng_below(uint64_t n)
{
    return n ? rng_next() % n : 0;
}

static uint64_t
seed_init(const char *test)
{
    const char *env = getenv("RON_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : 0;
    if (seed == 0) {
        uint8_t b[8];
        FILE *f = fopen("/dev/urandom", "rb");
        assert_non_null(f);
        assert_int_equal(fread(b, 1, 8, f), 8);
        fclose(f);
        memcpy(&seed, b, 8);
        seed |= 1;
    }
    rng_state = seed;
    /* Printed always, so a failure's output carries it: RON_TEST_SEED replays it. */
    print_message("%s: seed %llu (rerun with RON_TEST_SEED=%llu)\n", test, (unsigned long long)seed,
                  (unsigned long long)seed);
    return seed;
}

/* ---- byte vectors, both directions ---- */

static void
test_oap_parses_hand_written_hello(void **state)
{
    (void)state;
    oap_frame_t f;
    ssize_t n = oap_frame_parse(vec_hello, sizeof vec_hello, OAP_MAX_FRAME, &f);
    assert_int_equal(n, 48);
    assert_int_equal(f.len, 48);
    assert_int_equal(f.ver, 1);
    assert_int_equal(f.flags, OAP_F_REQ | OAP_F_START | OAP_F_END);
    assert_int_equal(f.code, 0);
    assert_int_equal(f.app_proto_id, OAP_APP_CONTROL);
    assert_int_equal(f.cap_len, 0);
    assert_null(f.cap);
    assert_true(f.corr_id == 1);
    assert_int_equal(f.payload_len, 10);
    assert_memory_equal(f.payload, "{\"ua\":\"x\"}", 10);
    assert_ptr_equal(f.payload, vec_hello + 38);
}

static void
test_oap_parses_hand_written_start_with_cap_and_high_corr_id(void **state)
{
    (void)state;
    oap_frame_t f;
    static const uint8_t tenant[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                       0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    assert_int_equal(oap_frame_parse(vec_start_cap, sizeof vec_start_cap, OAP_MAX_FRAME, &f), 43);
    assert_int_equal(f.flags, OAP_F_REQ | OAP_F_START);
    assert_int_equal(f.app_proto_id, OAP_APP_STORAGE);
    assert_memory_equal(f.tenant_id, tenant, 16);
    assert_int_equal(f.cap_len, 3);
    assert_memory_equal(f.cap, "cap", 3);
    assert_true(f.corr_id == 0xfedcba9876543210ULL);
    assert_true(f.corr_id > (1ULL << 63));
    assert_int_equal(f.payload_len, 2);
    assert_memory_equal(f.payload, "hi", 2);
}

static void
test_oap_parses_hand_written_error_response(void **state)
{
    (void)state;
    oap_frame_t f;
    assert_int_equal(oap_frame_parse(vec_resp_404, sizeof vec_resp_404, OAP_MAX_FRAME, &f), 38);
    assert_int_equal(f.flags, OAP_F_RESP | OAP_F_END);
    assert_int_equal(f.code, 404);
    assert_true(f.corr_id == UINT64_MAX);
    assert_int_equal(f.payload_len, 0);
}

static void
check_encodes_to(const oap_frame_t *f, const uint8_t *want, size_t want_len)
{
    uint8_t out[128], hdr[OAP_HDR_LEN];
    assert_int_equal(oap_frame_size(f), want_len);
    assert_int_equal(oap_frame_encode(f, OAP_MAX_FRAME, out, sizeof out), (ssize_t)want_len);
    assert_memory_equal(out, want, want_len);
    assert_int_equal(oap_header_encode(f, OAP_MAX_FRAME, hdr), 0);
    assert_memory_equal(hdr, want, OAP_HDR_LEN);
}

static void
test_oap_encodes_hand_written_vectors_byte_for_byte(void **state)
{
    (void)state;
    oap_frame_t f;

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_START | OAP_F_END;
    f.corr_id = 1;
    f.payload = (const uint8_t *)"{\"ua\":\"x\"}";
    f.payload_len = 10;
    f.len = 999; /* ignored: the encoder computes len */
    f.ver = 7;   /* ignored: the encoder always writes 1 */
    check_encodes_to(&f, vec_hello, sizeof vec_hello);

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_START;
    f.app_proto_id = OAP_APP_STORAGE;
    for (int i = 0; i < 16; i++)
        f.tenant_id[i] = (uint8_t)(i * 0x11);
    f.cap = (const uint8_t *)"cap";
    f.cap_len = 3;
    f.corr_id = 0xfedcba9876543210ULL;
    f.payload = (const uint8_t *)"hi";
    f.payload_len = 2;
    check_encodes_to(&f, vec_start_cap, sizeof vec_start_cap);

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_RESP | OAP_F_END;
    f.code = 404;
    f.app_proto_id = 1;
    f.corr_id = UINT64_MAX;
    check_encodes_to(&f, vec_resp_404, sizeof vec_resp_404);
}

/* ---- reject cases (spec §5 rule 2) ---- */

static void
test_oap_rejects_version_other_than_1(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN];
    oap_frame_t f;
    hdr_template(h);
    h[5] = 0x02;
    assert_int_equal(oap_header_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_EVERSION);
    h[5] = 0x00;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_EVERSION);
    h[4] = 0x01; /* 0x0101: the high byte counts too */
    h[5] = 0x01;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_EVERSION);
}

static void
test_oap_rejects_len_below_header_size(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN];
    oap_frame_t f;
    hdr_template(h);
    h[3] = 37;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_ELENGTH);
    h[3] = 0;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_ELENGTH);
}

static void
test_oap_rejects_len_below_header_plus_cap(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN + 4];
    oap_frame_t f;
    hdr_template(h);
    h[7] = 0x09; /* REQ|START */
    h[3] = 40;   /* len 40 */
    h[29] = 3;   /* cap_len 3 > 40 - 38 */
    assert_int_equal(oap_header_parse(h, OAP_HDR_LEN, OAP_MAX_FRAME, &f), RON_ELENGTH);
    h[29] = 2; /* exactly fits: ok */
    assert_int_equal(oap_frame_parse(h, 40, OAP_MAX_FRAME, &f), 40);
    assert_int_equal(f.cap_len, 2);
    assert_int_equal(f.payload_len, 0);
    /* cap_len 0xffff with a small len */
    h[28] = 0xff;
    h[29] = 0xff;
    assert_int_equal(oap_header_parse(h, OAP_HDR_LEN, OAP_MAX_FRAME, &f), RON_ELENGTH);
}

static void
test_oap_rejects_frame_longer_than_max(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN];
    oap_frame_t f;
    hdr_template(h);
    /* len = 1 MiB + 1 */
    h[0] = 0x00, h[1] = 0x10, h[2] = 0x00, h[3] = 0x01;
    assert_int_equal(oap_header_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_ETOOBIG);
    /* exactly 1 MiB: header is fine, the body is simply not here yet */
    h[3] = 0x00;
    assert_int_equal(oap_header_parse(h, sizeof h, OAP_MAX_FRAME, &f), 0);
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_EAGAIN);
    /* against a negotiated smaller limit */
    assert_int_equal(oap_header_parse(h, sizeof h, 4096, &f), RON_ETOOBIG);
    /* 0xffffffff */
    h[0] = h[1] = h[2] = h[3] = 0xff;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_ETOOBIG);
    /* a caller limit above the spec's ceiling is clamped to 1 MiB */
    h[0] = 0x00, h[1] = 0x10, h[2] = 0x00, h[3] = 0x01;
    assert_int_equal(oap_header_parse(h, sizeof h, UINT32_MAX, &f), RON_ETOOBIG);
}

static void
test_oap_rejects_each_reserved_flag_bit(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN];
    oap_frame_t f;
    for (int bit = 8; bit < 16; bit++) {
        hdr_template(h);
        h[6] = (uint8_t)(1u << (bit - 8));
        assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_EFLAGS);
    }
    /* all 8 defined bits together are fine */
    hdr_template(h);
    h[7] = 0xff;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), 38);
}

static void
test_oap_rejects_cap_without_start(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN + 1];
    oap_frame_t f;
    hdr_template(h);
    h[3] = 39;
    h[29] = 1;
    h[7] = 0x01 | 0x10; /* REQ|END: no START */
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), RON_ECAPSTART);
    h[7] |= 0x08;
    assert_int_equal(oap_frame_parse(h, sizeof h, OAP_MAX_FRAME, &f), 39);
}

static void
test_oap_waits_on_incomplete_header_and_body(void **state)
{
    (void)state;
    oap_frame_t f;
    for (size_t n = 0; n < OAP_HDR_LEN; n++) {
        assert_int_equal(oap_header_parse(vec_hello, n, OAP_MAX_FRAME, &f), RON_EAGAIN);
        assert_int_equal(oap_frame_parse(vec_hello, n, OAP_MAX_FRAME, &f), RON_EAGAIN);
    }
    for (size_t n = OAP_HDR_LEN; n < sizeof vec_hello; n++)
        assert_int_equal(oap_frame_parse(vec_hello, n, OAP_MAX_FRAME, &f), RON_EAGAIN);
    /* Trailing bytes of the next frame are not consumed. */
    uint8_t two[sizeof vec_hello + 5];
    memcpy(two, vec_hello, sizeof vec_hello);
    memcpy(two + sizeof vec_hello, vec_resp_404, 5);
    assert_int_equal(oap_frame_parse(two, sizeof two, OAP_MAX_FRAME, &f), 48);
}

static void
test_oap_encoder_rejects_bad_frames(void **state)
{
    (void)state;
    static uint8_t big[OAP_MAX_FRAME];
    uint8_t out[64], hdr[OAP_HDR_LEN];
    oap_frame_t f;

    memset(&f, 0, sizeof f);
    f.flags = 0x0100;
    assert_int_equal(oap_header_encode(&f, OAP_MAX_FRAME, hdr), RON_EFLAGS);
    assert_int_equal(oap_frame_encode(&f, OAP_MAX_FRAME, out, sizeof out), RON_EFLAGS);

    f.flags = OAP_F_REQ;
    f.cap = (const uint8_t *)"c";
    f.cap_len = 1;
    assert_int_equal(oap_frame_encode(&f, OAP_MAX_FRAME, out, sizeof out), RON_ECAPSTART);

    f.flags = OAP_F_REQ | OAP_F_START;
    f.payload = big;
    f.payload_len = OAP_MAX_FRAME - OAP_HDR_LEN; /* 1 MiB + 1 with the cap */
    assert_int_equal(oap_header_encode(&f, OAP_MAX_FRAME, hdr), RON_ETOOBIG);
    f.payload_len = OAP_MAX_FRAME - OAP_HDR_LEN - 1; /* exactly 1 MiB */
    assert_int_equal(oap_header_encode(&f, OAP_MAX_FRAME, hdr), 0);
    assert_int_equal(hdr[1], 0x10);
    assert_int_equal(oap_header_encode(&f, 4096, hdr), RON_ETOOBIG);
    f.payload_len = SIZE_MAX - 10; /* no overflow in the length sum */
    assert_int_equal(oap_header_encode(&f, OAP_MAX_FRAME, hdr), RON_ETOOBIG);

    f.payload = (const uint8_t *)"0123456789";
    f.payload_len = 10;
    assert_int_equal(oap_frame_encode(&f, OAP_MAX_FRAME, out, 48), -ENOBUFS);
    assert_int_equal(oap_frame_encode(&f, OAP_MAX_FRAME, out, 10), -ENOBUFS);
    assert_int_equal(oap_frame_encode(&f, OAP_MAX_FRAME, out, 49), 49);
}

/* ---- incremental decoder (spec §5 rules 1-3, 5) ---- */

/* Concatenate the three vectors into one stream. */
static size_t
vec_stream(uint8_t *out)
{
    size_t n = 0;
    memcpy(out + n, vec_hello, sizeof vec_hello), n += sizeof vec_hello;
    memcpy(out + n, vec_start_cap, sizeof vec_start_cap), n += sizeof vec_start_cap;
    memcpy(out + n, vec_resp_404, sizeof vec_resp_404), n += sizeof vec_resp_404;
    return n;
}

static void
test_oap_decoder_yields_same_frames_fed_byte_by_byte(void **state)
{
    (void)state;
    uint8_t s[256];
    size_t n = vec_stream(s);
    oap_decoder_t d;
    oap_frame_t f;
    int got = 0;

    oap_decoder_init(&d, OAP_MAX_FRAME);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(oap_decoder_feed(&d, s + i, 1), 0);
        int rc = oap_decoder_next(&d, &f);
        if (rc == RON_EAGAIN)
            continue;
        assert_int_equal(rc, 0);
        switch (got++) {
        case 0:
            assert_int_equal(i + 1, sizeof vec_hello);
            assert_memory_equal(f.payload, "{\"ua\":\"x\"}", 10);
            break;
        case 1:
            assert_true(f.corr_id == 0xfedcba9876543210ULL);
            assert_memory_equal(f.cap, "cap", 3);
            assert_memory_equal(f.payload, "hi", 2);
            break;
        case 2:
            assert_int_equal(f.code, 404);
            assert_int_equal(i + 1, n);
            break;
        }
    }
    assert_int_equal(got, 3);
    assert_int_equal(oap_decoder_next(&d, &f), RON_EAGAIN);
    oap_decoder_close(&d);
}

static void
test_oap_decoder_yields_many_frames_fed_at_once(void **state)
{
    (void)state;
    uint8_t s[256];
    size_t n = vec_stream(s);
    oap_decoder_t d;
    oap_frame_t f;

    oap_decoder_init(&d, OAP_MAX_FRAME);
    assert_int_equal(oap_decoder_feed(&d, s, n), 0);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(f.len, 48);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(f.len, 43);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(f.len, 38);
    assert_int_equal(oap_decoder_next(&d, &f), RON_EAGAIN);
    oap_decoder_close(&d);
}

/* A drained decoder gives its buffer back; one with a partial frame keeps it. */
static void
test_oap_decoder_release_frees_only_a_drained_buffer(void **state)
{
    (void)state;
    uint8_t s[256];
    size_t n = vec_stream(s);
    oap_decoder_t d;
    oap_frame_t f;

    oap_decoder_init(&d, OAP_MAX_FRAME);
    assert_int_equal(oap_decoder_release(&d), 0); /* nothing allocated */
    assert_int_equal(oap_decoder_feed(&d, s, sizeof vec_hello + 5), 0);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(oap_decoder_release(&d), 0); /* 5 bytes of the next frame wait */
    assert_non_null(d.buf);
    assert_int_equal(oap_decoder_feed(&d, s + sizeof vec_hello + 5, n - sizeof vec_hello - 5), 0);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(oap_decoder_next(&d, &f), RON_EAGAIN);
    size_t cap = d.cap;
    assert_true(cap > 0);
    assert_int_equal(oap_decoder_release(&d), cap);
    assert_null(d.buf);
    assert_int_equal(d.cap, 0);
    /* and it decodes on as before */
    assert_int_equal(oap_decoder_feed(&d, s, n), 0);
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(f.len, 48);
    oap_decoder_close(&d);
}

static void
test_oap_decoder_rejects_bad_header_before_its_body_arrives(void **state)
{
    (void)state;
    uint8_t h[OAP_HDR_LEN];
    oap_decoder_t d;
    oap_frame_t f;

    hdr_template(h);
    h[1] = 0x20; /* len 2 MiB: over the limit */
    oap_decoder_init(&d, OAP_MAX_FRAME);
    assert_int_equal(oap_decoder_feed(&d, h, 37), 0);
    assert_int_equal(oap_decoder_next(&d, &f), RON_EAGAIN); /* rule 1: wait */
    assert_int_equal(oap_decoder_feed(&d, h + 37, 1), 0);
    assert_int_equal(oap_decoder_next(&d, &f), RON_ETOOBIG); /* rule 2: no body needed */
    /* sticky: the stream is dead, even for good bytes */
    assert_int_equal(oap_decoder_feed(&d, vec_hello, sizeof vec_hello), RON_ETOOBIG);
    assert_int_equal(oap_decoder_next(&d, &f), RON_ETOOBIG);
    assert_true(d.cap <= 4096); /* nothing was allocated for the announced body */
    oap_decoder_close(&d);
}

static void
test_oap_decoder_reports_each_reject_code(void **state)
{
    (void)state;
    struct {
        int off;
        uint8_t val;
        int want;
    } cases[] = {
        {5, 0x02, RON_EVERSION},   {3, 0x25, RON_ELENGTH}, {6, 0x80, RON_EFLAGS},
        {29, 0x01, RON_ECAPSTART}, {1, 0x11, RON_ETOOBIG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t h[OAP_HDR_LEN];
        oap_decoder_t d;
        oap_frame_t f;
        hdr_template(h);
        h[3] = 0x27; /* len 39 so a 1-byte cap would fit */
        h[cases[i].off] = cases[i].val;
        oap_decoder_init(&d, OAP_MAX_FRAME);
        assert_int_equal(oap_decoder_feed(&d, h, sizeof h), 0);
        assert_int_equal(oap_decoder_next(&d, &f), cases[i].want);
        oap_decoder_close(&d);
    }
}

static void
test_oap_decoder_payload_is_a_view_into_its_buffer(void **state)
{
    (void)state;
    static uint8_t frame[OAP_HDR_LEN + OAP_CHUNK];
    oap_frame_t f, g;
    oap_decoder_t d;
    uint8_t *p;
    size_t avail;

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_RESP;
    f.corr_id = 7;
    static uint8_t data[OAP_CHUNK];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 31);
    f.payload = data;
    f.payload_len = sizeof data;
    assert_int_equal(oap_frame_encode(&f, OAP_MAX_FRAME, frame, sizeof frame), sizeof frame);

    oap_decoder_init(&d, OAP_MAX_FRAME);
    /* read-callback style: reserve, "read" into it, commit */
    size_t off = 0;
    while (off < sizeof frame) {
        p = oap_decoder_reserve(&d, 10000, &avail);
        assert_non_null(p);
        size_t k = RON_MIN(avail, sizeof frame - off);
        memcpy(p, frame + off, k);
        oap_decoder_commit(&d, k);
        off += k;
    }
    assert_int_equal(oap_decoder_next(&d, &g), 0);
    assert_true(g.payload >= d.buf && g.payload + g.payload_len <= d.buf + d.cap);
    assert_ptr_equal(g.payload, d.buf + OAP_HDR_LEN);
    assert_memory_equal(g.payload, data, sizeof data);
    oap_decoder_close(&d);
}

static void
test_oap_decoder_refuses_to_buffer_past_one_frame_plus_chunk(void **state)
{
    (void)state;
    static uint8_t junk[OAP_CHUNK];
    oap_decoder_t d;
    oap_frame_t f;
    size_t fed = 0, avail;
    uint8_t h[OAP_HDR_LEN];

    /* A max_frame-sized frame whose body is still arriving. */
    hdr_template(h);
    h[1] = 0x10, h[3] = 0x00; /* len 1 MiB */
    oap_decoder_init(&d, OAP_MAX_FRAME);
    assert_int_equal(oap_decoder_feed(&d, h, sizeof h), 0);
    fed = sizeof h;
    while (fed + sizeof junk <= OAP_MAX_FRAME + OAP_CHUNK) {
        assert_int_equal(oap_decoder_feed(&d, junk, sizeof junk), 0);
        fed += sizeof junk;
    }
    assert_int_equal(oap_decoder_feed(&d, junk, sizeof junk), RON_EFLOOD);
    assert_int_equal(oap_decoder_feed(&d, junk, OAP_MAX_FRAME + OAP_CHUNK - fed), 0);
    assert_null(oap_decoder_reserve(&d, 1, &avail));
    assert_int_equal(avail, 0);
    assert_true(d.cap <= OAP_MAX_FRAME + OAP_CHUNK);
    /* EFLOOD is backpressure, not an error: the frame is whole and comes out */
    assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(f.len, OAP_MAX_FRAME);
    oap_decoder_close(&d);
}

static void
test_oap_decoder_max_frame_only_goes_down(void **state)
{
    (void)state;
    oap_decoder_t d;
    oap_frame_t f;
    oap_decoder_init(&d, OAP_MAX_FRAME);
    oap_decoder_set_max_frame(&d, 8192);
    assert_int_equal(d.max_frame, 8192);
    oap_decoder_set_max_frame(&d, OAP_MAX_FRAME);
    assert_int_equal(d.max_frame, 8192);
    uint8_t h[OAP_HDR_LEN];
    hdr_template(h);
    h[2] = 0x20, h[3] = 0x01; /* len 8193 */
    assert_int_equal(oap_decoder_feed(&d, h, sizeof h), 0);
    assert_int_equal(oap_decoder_next(&d, &f), RON_ETOOBIG);
    oap_decoder_close(&d);
    oap_decoder_init(&d, 0xffffffffu);
    assert_int_equal(d.max_frame, OAP_MAX_FRAME); /* clamped to the ceiling */
    oap_decoder_close(&d);
}

static void
test_oap_decoder_yields_good_frames_before_a_bad_one(void **state)
{
    (void)state;
    uint8_t s[256], bad[OAP_HDR_LEN];
    size_t n = vec_stream(s);
    oap_decoder_t d;
    oap_frame_t f;

    hdr_template(bad);
    bad[6] = 0x01; /* reserved bit 8 */
    memcpy(s + n, bad, sizeof bad);
    oap_decoder_init(&d, OAP_MAX_FRAME);
    assert_int_equal(oap_decoder_feed(&d, s, n + sizeof bad), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(oap_decoder_next(&d, &f), 0);
    assert_int_equal(oap_decoder_next(&d, &f), RON_EFLAGS);
    assert_int_equal(oap_decoder_next(&d, &f), RON_EFLAGS);
    oap_decoder_close(&d);
}

static void
test_oap_decoder_same_frames_for_every_split_point(void **state)
{
    (void)state;
    uint8_t s[256];
    size_t n = vec_stream(s);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b += 7) {
            oap_decoder_t d;
            oap_frame_t f;
            uint32_t lens[3];
            int got = 0, rc;
            const size_t cuts[4] = {0, a, b, n};
            oap_decoder_init(&d, OAP_MAX_FRAME);
            for (int c = 0; c < 3; c++) {
                assert_int_equal(oap_decoder_feed(&d, s + cuts[c], cuts[c + 1] - cuts[c]), 0);
                while ((rc = oap_decoder_next(&d, &f)) == 0) {
                    assert_true(got < 3);
                    lens[got++] = f.len;
                }
                assert_int_equal(rc, RON_EAGAIN);
            }
            assert_int_equal(got, 3);
            assert_int_equal(lens[0], 48);
            assert_int_equal(lens[1], 43);
            assert_int_equal(lens[2], 38);
            oap_decoder_close(&d);
        }
    }
}

static void
test_oap_decoder_streams_large_frames_within_its_bound(void **state)
{
    (void)state;
    /* Mixed sizes, so the decoder both grows and moves partial frames. */
    static const size_t plen[] = {
        40000, OAP_MAX_FRAME - OAP_HDR_LEN, 300000, 5, OAP_MAX_FRAME - OAP_HDR_LEN, 65536, 1};
    enum { N = sizeof plen / sizeof plen[0] };
    size_t len = 0, pos = 0, off = 0;
    uint8_t *stream, *data = malloc(OAP_MAX_FRAME);
    oap_decoder_t d;
    oap_frame_t f;
    int got = 0;

    for (size_t i = 0; i < OAP_MAX_FRAME; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    for (int i = 0; i < N; i++)
        len += OAP_HDR_LEN + plen[i];
    stream = malloc(len);
    for (int i = 0; i < N; i++) {
        memset(&f, 0, sizeof f);
        f.flags = OAP_F_RESP;
        f.corr_id = (uint64_t)i;
        f.payload = data;
        f.payload_len = plen[i];
        ssize_t n = oap_frame_encode(&f, OAP_MAX_FRAME, stream + off, len - off);
        assert_int_equal(n, OAP_HDR_LEN + plen[i]);
        off += (size_t)n;
    }
    oap_decoder_init(&d, OAP_MAX_FRAME);
    while (pos < len) {
        size_t avail;
        uint8_t *p = oap_decoder_reserve(&d, OAP_CHUNK, &avail);
        assert_non_null(p);
        size_t k = RON_MIN(RON_MIN(avail, (size_t)OAP_CHUNK), len - pos);
        memcpy(p, stream + pos, k);
        oap_decoder_commit(&d, k);
        pos += k;
        while (oap_decoder_next(&d, &f) == 0) {
            assert_true(f.corr_id == (uint64_t)got);
            assert_int_equal(f.payload_len, plen[got]);
            assert_memory_equal(f.payload, data, plen[got]);
            got++;
        }
        assert_true(d.cap <= OAP_MAX_FRAME + OAP_CHUNK);
    }
    assert_int_equal(got, N);
    oap_decoder_close(&d);
    free(stream);
    free(data);
}

/* ---- property: random frames round-trip through any chunking ---- */

typedef struct {
    oap_frame_t f;
    uint8_t cap[300];
    uint8_t *payload;
} rand_frame_t;

static void
rand_frame(rand_frame_t *r)
{
    memset(&r->f, 0, sizeof r->f);
    r->f.flags = (uint16_t)(rng_next() & OAP_F_KNOWN);
    r->f.code = (uint16_t)rng_next();
    r->f.app_proto_id = (uint16_t)rng_next();
    for (int i = 0; i < 16; i++)
        r->f.tenant_id[i] = (uint8_t)rng_next();
    /* bias corr_id to extremes: above 2^63, 2^64-1, 0 */
    switch (rng_below(4)) {
    case 0:
        r->f.corr_id = rng_next() | (1ULL << 63);
        break;
    case 1:
        r->f.corr_id = UINT64_MAX - rng_below(3);
        break;
    case 2:
        r->f.corr_id = rng_below(3);
        break;
    default:
        r->f.corr_id = rng_next();
        break;
    }
    if (r->f.flags & OAP_F_START) {
        r->f.cap_len = (uint16_t)rng_below(sizeof r->cap + 1);
        for (size_t i = 0; i < r->f.cap_len; i++)
            r->cap[i] = (uint8_t)rng_next();
        r->f.cap = r->cap;
    }
    size_t plen = rng_below(8) == 0 ? rng_below(70000) : rng_below(200);
    r->payload = malloc(plen ? plen : 1);
    for (size_t i = 0; i < plen; i++)
        r->payload[i] = (uint8_t)rng_next();
    r->f.payload = r->payload;
    r->f.payload_len = plen;
}

static void
assert_frames_equal(const oap_frame_t *a, const oap_frame_t *b, uint64_t seed, int idx)
{
    if (a->flags != b->flags || a->code != b->code || a->app_proto_id != b->app_proto_id ||
        a->cap_len != b->cap_len || a->corr_id != b->corr_id || a->payload_len != b->payload_len ||
        memcmp(a->tenant_id, b->tenant_id, 16) != 0 ||
        (a->cap_len && memcmp(a->cap, b->cap, a->cap_len) != 0) ||
        (a->payload_len && memcmp(a->payload, b->payload, a->payload_len) != 0))
        fail_msg("frame %d differs (seed %llu)", idx, (unsigned long long)seed);
}

#define PROP_FRAMES 400

static void
test_oap_random_frames_round_trip_through_random_chunking(void **state)
{
    (void)state;
    uint64_t seed = seed_init(__func__);
    rand_frame_t *rf = calloc(PROP_FRAMES, sizeof *rf);
    size_t total = 0, off = 0;
    uint8_t *stream;

    for (int i = 0; i < PROP_FRAMES; i++) {
        rand_frame(&rf[i]);
        total += oap_frame_size(&rf[i].f);
    }
    stream = malloc(total);
    for (int i = 0; i < PROP_FRAMES; i++) {
        ssize_t n = oap_frame_encode(&rf[i].f, OAP_MAX_FRAME, stream + off, total - off);
        if (n < 0)
            fail_msg("encode %d failed %zd (seed %llu)", i, n, (unsigned long long)seed);
        /* oap_frame_parse agrees with what was encoded */
        oap_frame_t p;
        if (oap_frame_parse(stream + off, total - off, OAP_MAX_FRAME, &p) != n)
            fail_msg("parse %d (seed %llu)", i, (unsigned long long)seed);
        assert_frames_equal(&rf[i].f, &p, seed, i);
        off += (size_t)n;
    }

    /* Three chunkings: one byte at a time over the first frames, random
     * chunks, and whole-buffer bursts; each must give the same frames. */
    for (int mode = 0; mode < 3; mode++) {
        oap_decoder_t d;
        oap_frame_t f;
        int got = 0;
        size_t pos = 0;
        size_t limit = mode == 0 ? RON_MIN(total, (size_t)20000) : total;
        oap_decoder_init(&d, OAP_MAX_FRAME);
        while (pos < limit) {
            size_t k = mode == 0 ? 1 : mode == 1 ? 1 + rng_below(9000) : 1 + rng_below(OAP_CHUNK);
            k = RON_MIN(k, limit - pos);
            int rc = oap_decoder_feed(&d, stream + pos, k);
            if (rc == RON_EFLOOD) {
                /* drain and retry: the bound is backpressure */
                while ((rc = oap_decoder_next(&d, &f)) == 0)
                    assert_frames_equal(&rf[got].f, &f, seed, got), got++;
                assert_int_equal(rc, RON_EAGAIN);
                continue;
            }
            assert_int_equal(rc, 0);
            pos += k;
            while ((rc = oap_decoder_next(&d, &f)) == 0)
                assert_frames_equal(&rf[got].f, &f, seed, got), got++;
            if (rc != RON_EAGAIN)
                fail_msg("decoder error %d at %zu (seed %llu)", rc, pos, (unsigned long long)seed);
        }
        if (mode != 0 && got != PROP_FRAMES)
            fail_msg("mode %d got %d frames (seed %llu)", mode, got, (unsigned long long)seed);
        oap_decoder_close(&d);
    }
    for (int i = 0; i < PROP_FRAMES; i++)
        free(rf[i].payload);
    free(rf);
    free(stream);
}

/* ---- compression (spec §5 rule 4) ---- */

static void
test_oap_inflate_round_trips_comp_payload(void **state)
{
    (void)state;
    static uint8_t src[200000];
    uint8_t *z, *out;
    size_t zlen, olen;
    oap_frame_t f;

    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)("abcabcabd"[i % 9]);
    assert_int_equal(oap_deflate(src, sizeof src, 3, &z, &zlen), 0);
    assert_true(zlen < sizeof src / 10);
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_RESP | OAP_F_COMP;
    f.payload = z;
    f.payload_len = zlen;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), 0);
    assert_int_equal(olen, sizeof src);
    assert_memory_equal(out, src, sizeof src);
    free(out);
    free(z);

    /* empty input compresses and inflates to empty */
    assert_int_equal(oap_deflate(src, 0, 3, &z, &zlen), 0);
    f.payload = z;
    f.payload_len = zlen;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), 0);
    assert_int_equal(olen, 0);
    free(out);
    free(z);
}

/* Stream-compress n zero bytes without ever holding them (content size unknown
 * unless pledge). Returns new memory. */
static uint8_t *
zeros_compressed(size_t n, int pledge, size_t *zlen_out)
{
    static uint8_t zero[1 << 20];
    ZSTD_CCtx *c = ZSTD_createCCtx();
    size_t cap = 1 << 20, len = 0;
    uint8_t *z = malloc(cap);
    if (pledge)
        ZSTD_CCtx_setPledgedSrcSize(c, n);
    while (n > 0) {
        size_t k = n < sizeof zero ? n : sizeof zero;
        ZSTD_inBuffer in = {zero, k, 0};
        n -= k;
        ZSTD_EndDirective e = n == 0 ? ZSTD_e_end : ZSTD_e_continue;
        size_t r;
        do {
            ZSTD_outBuffer o = {z + len, cap - len, 0};
            r = ZSTD_compressStream2(c, &o, &in, e);
            assert_false(ZSTD_isError(r));
            len += o.pos;
        } while (in.pos < in.size || (e == ZSTD_e_end && r != 0));
    }
    ZSTD_freeCCtx(c);
    *zlen_out = len;
    return z;
}

static void
test_oap_inflate_stops_a_100_mib_zero_bomb(void **state)
{
    (void)state;
    size_t zlen, olen = 12345;
    uint8_t *out = (uint8_t *)&olen;
    oap_frame_t f;

    /* Without a declared size: the bound is hit while streaming. */
    uint8_t *z = zeros_compressed(100u << 20, 0, &zlen);
    assert_true(zlen < OAP_MAX_FRAME); /* fits in one frame */
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_COMP;
    f.payload = z;
    f.payload_len = zlen;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_EBOMB);
    assert_null(out);
    assert_int_equal(olen, 0);
    free(z);

    /* With the size declared in the frame header: refused up front. */
    z = zeros_compressed(100u << 20, 1, &zlen);
    f.payload = z;
    f.payload_len = zlen;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_EBOMB);
    free(z);

    uint16_t st;
    const char *slug, *reason;
    oap_error_status(RON_EBOMB, &st, &slug, &reason);
    assert_int_equal(st, 413);
    assert_string_equal(slug, "payload_too_large");
    assert_string_equal(reason, "compression_bomb");
}

static void
test_oap_inflate_accepts_exactly_the_bound_and_refuses_one_more_byte(void **state)
{
    (void)state;
    const uint32_t mf = 4096; /* bound 32 KiB */
    size_t zlen, olen;
    uint8_t *z, *out;
    oap_frame_t f;

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_COMP;
    for (int pledge = 0; pledge < 2; pledge++) {
        z = zeros_compressed(OAP_INFLATE_FACTOR * mf, pledge, &zlen);
        f.payload = z;
        f.payload_len = zlen;
        assert_int_equal(oap_inflate(&f, mf, &out, &olen), 0);
        assert_int_equal(olen, OAP_INFLATE_FACTOR * mf);
        free(out);
        free(z);
        z = zeros_compressed(OAP_INFLATE_FACTOR * mf + 1, pledge, &zlen);
        f.payload = z;
        f.payload_len = zlen;
        assert_int_equal(oap_inflate(&f, mf, &out, &olen), RON_EBOMB);
        free(z);
    }
}

static void
test_oap_inflate_rejects_malformed_and_truncated_data(void **state)
{
    (void)state;
    static uint8_t src[50000];
    uint8_t *z, *out;
    size_t zlen, olen;
    oap_frame_t f;

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_COMP;
    f.payload = (const uint8_t *)"definitely not zstd";
    f.payload_len = 19;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_ECOMPRESS);
    f.payload_len = 0;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_ECOMPRESS);

    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i * i >> 3);
    assert_int_equal(oap_deflate(src, sizeof src, 1, &z, &zlen), 0);
    f.payload = z;
    f.payload_len = zlen - 3; /* truncated */
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_ECOMPRESS);
    f.payload_len = zlen;
    z[0] ^= 0xff; /* corrupted magic */
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_ECOMPRESS);
    free(z);
}

static void
test_oap_inflate_refuses_window_larger_than_bound(void **state)
{
    (void)state;
    /* A frame header asking for a 2^27 window, content size unknown: zstd
     * would reserve 128 MiB before producing a byte. */
    ZSTD_CCtx *c = ZSTD_createCCtx();
    static uint8_t src[1 << 16];
    uint8_t z[1 << 17];
    ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 27);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
    ZSTD_inBuffer in = {src, sizeof src, 0};
    ZSTD_outBuffer o = {z, sizeof z, 0};
    /* continue first, so the size is unknown when the frame header is written */
    assert_false(ZSTD_isError(ZSTD_compressStream2(c, &o, &in, ZSTD_e_continue)));
    assert_int_equal(ZSTD_compressStream2(c, &o, &in, ZSTD_e_end), 0);
    ZSTD_freeCCtx(c);
    oap_frame_t f;
    uint8_t *out;
    size_t olen;
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_COMP;
    f.payload = z;
    f.payload_len = o.pos;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_EBOMB);
}

static void
test_oap_inflate_joins_concatenated_zstd_frames(void **state)
{
    (void)state;
    uint8_t *a, *b, *cat, *out;
    size_t al, bl, olen;
    oap_frame_t f;
    assert_int_equal(oap_deflate((const uint8_t *)"first-", 6, 1, &a, &al), 0);
    assert_int_equal(oap_deflate((const uint8_t *)"second", 6, 1, &b, &bl), 0);
    cat = malloc(al + bl);
    memcpy(cat, a, al);
    memcpy(cat + al, b, bl);
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_RESP | OAP_F_COMP;
    f.payload = cat;
    f.payload_len = al + bl;
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), 0);
    assert_int_equal(olen, 12);
    assert_memory_equal(out, "first-second", 12);
    free(out);
    f.payload_len = al + bl - 1; /* the second frame cut short */
    assert_int_equal(oap_inflate(&f, OAP_MAX_FRAME, &out, &olen), RON_ECOMPRESS);
    free(a);
    free(b);
    free(cat);
}

/* ---- errors and names ---- */

static void
test_oap_maps_codec_errors_to_envelope_status(void **state)
{
    (void)state;
    uint16_t st;
    const char *slug, *reason;
    oap_error_status(RON_ETOOBIG, &st, &slug, &reason);
    assert_int_equal(st, 413);
    assert_string_equal(slug, "payload_too_large");
    assert_null(reason);
    oap_error_status(RON_EVERSION, &st, &slug, &reason);
    assert_int_equal(st, 426);
    assert_string_equal(slug, "proto_mismatch");
    int bad[] = {RON_ELENGTH, RON_EFLAGS, RON_ECAPSTART, RON_ECOMPRESS};
    for (size_t i = 0; i < 4; i++) {
        oap_error_status(bad[i], &st, &slug, &reason);
        assert_int_equal(st, 400);
        assert_string_equal(slug, "bad_request");
    }
}

static void
test_oap_names_flags(void **state)
{
    (void)state;
    char b[128];
    oap_flag_names(OAP_F_REQ | OAP_F_START | OAP_F_END, b, sizeof b);
    assert_string_equal(b, "REQ|START|END");
    oap_flag_names(0, b, sizeof b);
    assert_string_equal(b, "");
    oap_flag_names(0xff, b, sizeof b);
    assert_string_equal(b, "REQ|RESP|EVENT|START|END|ACK_REQ|COMP|APP_E2E");
    oap_flag_names(OAP_F_REQ | OAP_F_RESP, b, 6);
    assert_string_equal(b, "REQ"); /* truncation keeps whole names */
}

/* ---- HELLO (spec §4) ---- */

static void
decode_one(const uint8_t *buf, size_t len, oap_frame_t *f)
{
    assert_int_equal(oap_frame_parse(buf, len, OAP_MAX_FRAME, f), (ssize_t)len);
}

static void
test_oap_hello_parses_hand_written_request(void **state)
{
    (void)state;
    oap_frame_t f;
    proto_hello_t h;
    bool bare = true;
    decode_one(vec_hello, sizeof vec_hello, &f);
    assert_int_equal(oap_hello_parse(&f, &h, &bare, NULL), 0);
    assert_false(bare);
    assert_string_equal(h.ua, "x");
    assert_false(h.has_max_frame);
}

static void
test_oap_hello_encodes_both_forms(void **state)
{
    (void)state;
    /* Bare REQ HELLO as the Rust implementation sends it: {"ua":null} is what it
     * writes; ours omits absent fields, so an empty hello is "{}". */
    /* clang-format off */
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, '{', '}',
    };
    /* clang-format on */
    proto_hello_t h;
    uint8_t out[256];
    oap_frame_t f;
    bool bare;
    memset(&h, 0, sizeof h);
    assert_int_equal(oap_hello_encode(&h, 9, true, out, sizeof out), sizeof want);
    assert_memory_equal(out, want, sizeof want);
    strcpy(h.ua, "ron/0.1");
    h.has_max_frame = true;
    h.max_frame = 65536;
    ssize_t n = oap_hello_encode(&h, 1, false, out, sizeof out);
    assert_true(n > 0);
    decode_one(out, (size_t)n, &f);
    assert_int_equal(f.flags, OAP_F_REQ | OAP_F_START | OAP_F_END);
    assert_int_equal(oap_hello_parse(&f, &h, &bare, NULL), 0);
    assert_int_equal(h.max_frame, 65536);
    assert_int_equal(oap_hello_encode(&h, 1, false, out, 40), -ENOBUFS);
}

static void
check_answer(const uint8_t *req, size_t req_len, uint32_t want_mf, uint16_t want_flags)
{
    proto_hello_reply_t offer, r;
    uint8_t out[512];
    size_t len;
    uint32_t mf = 0, cmf = 0;
    oap_frame_t f, a;

    decode_one(req, req_len, &f);
    oap_hello_reply_init(&offer, OAP_MAX_FRAME, "tcp+tls");
    assert_int_equal(oap_hello_answer(&f, &offer, out, sizeof out, &len, &mf), 0);
    assert_int_equal(mf, want_mf);
    decode_one(out, len, &a);
    assert_int_equal(a.flags, want_flags);
    assert_int_equal(a.code, 200);
    assert_int_equal(a.app_proto_id, 0);
    assert_true(a.corr_id == f.corr_id);
    assert_int_equal(oap_hello_reply_parse(&a, f.corr_id, OAP_MAX_FRAME, &r, &cmf, NULL), 0);
    assert_int_equal(cmf, want_mf); /* both sides agree */
    assert_int_equal(r.max_inflight, OAP_MAX_INFLIGHT);
    assert_int_equal(r.flags_supported, 255);
    assert_int_equal(r.n_versions, 1);
    assert_int_equal(r.versions[0], 1);
    assert_string_equal(r.transports[0], "tcp+tls");
}

static void
test_oap_hello_answer_mirrors_form_and_negotiates_downward(void **state)
{
    (void)state;
    proto_hello_t h;
    uint8_t req[256];
    ssize_t n;

    check_answer(vec_hello, sizeof vec_hello, OAP_MAX_FRAME, OAP_F_RESP | OAP_F_END);
    memset(&h, 0, sizeof h);
    h.has_max_frame = true;
    h.max_frame = 65536;
    n = oap_hello_encode(&h, 3, true, req, sizeof req);
    check_answer(req, (size_t)n, 65536, OAP_F_RESP); /* bare REQ -> bare RESP */
    h.max_frame = 8u << 20;                          /* asking for more than 1 MiB gets 1 MiB */
    n = oap_hello_encode(&h, 4, false, req, sizeof req);
    check_answer(req, (size_t)n, OAP_MAX_FRAME, OAP_F_RESP | OAP_F_END);
    h.max_frame = 100; /* never below the floor */
    n = oap_hello_encode(&h, 5, false, req, sizeof req);
    check_answer(req, (size_t)n, OAP_MIN_MAX_FRAME, OAP_F_RESP | OAP_F_END);

    assert_int_equal(oap_hello_negotiate(OAP_MAX_FRAME, 0), OAP_MAX_FRAME);
    assert_int_equal(oap_hello_negotiate(8192, 65536), 8192);
    assert_int_equal(oap_hello_negotiate(UINT32_MAX, UINT32_MAX), OAP_MAX_FRAME);
    assert_int_equal(oap_hello_negotiate(0, 0), OAP_MIN_MAX_FRAME);
}

/* The first frame is not an acceptable HELLO: expect a 426 proto_mismatch frame. */
static void
expect_mismatch(const oap_frame_t *first)
{
    proto_hello_reply_t offer;
    uint8_t out[2048];
    size_t len = 0;
    uint32_t mf = 77;
    oap_frame_t a;
    proto_error_t e;

    oap_hello_reply_init(&offer, OAP_MAX_FRAME, "unix");
    assert_int_equal(oap_hello_answer(first, &offer, out, sizeof out, &len, &mf), RON_EVERSION);
    assert_int_equal(mf, 77);
    decode_one(out, len, &a);
    assert_int_equal(a.flags, OAP_F_RESP | OAP_F_END);
    assert_int_equal(a.code, 426);
    assert_true(a.corr_id == first->corr_id);
    assert_int_equal(proto_error_decode((const char *)a.payload, a.payload_len, &e, NULL), 0);
    assert_string_equal(e.code, "proto_mismatch");
    assert_false(e.retryable);
    assert_true(e.corr_id == first->corr_id);
}

static void
test_oap_hello_answer_refuses_anything_else_with_proto_mismatch(void **state)
{
    (void)state;
    oap_frame_t f;
    uint8_t buf[256];
    proto_hello_t h;
    ssize_t n;

    decode_one(vec_start_cap, sizeof vec_start_cap, &f); /* storage START first */
    expect_mismatch(&f);
    decode_one(vec_resp_404, sizeof vec_resp_404, &f); /* a response first */
    expect_mismatch(&f);
    decode_one(vec_hello, sizeof vec_hello, &f);
    f.flags = OAP_F_REQ | OAP_F_START; /* not one of the two forms */
    expect_mismatch(&f);
    f.flags = OAP_F_REQ;
    f.code = 200;
    expect_mismatch(&f);
    memset(&h, 0, sizeof h);
    h.n_versions = 1;
    h.versions[0] = 2; /* asks for version 2 only */
    n = oap_hello_encode(&h, 8, false, buf, sizeof buf);
    decode_one(buf, (size_t)n, &f);
    expect_mismatch(&f);
    h.n_versions = 2;
    h.versions[1] = 1; /* 2 or 1: fine */
    n = oap_hello_encode(&h, 8, false, buf, sizeof buf);
    decode_one(buf, (size_t)n, &f);
    bool bare;
    assert_int_equal(oap_hello_parse(&f, &h, &bare, NULL), 0);
    f.payload = (const uint8_t *)"{\"max_frame\":\"x\"}"; /* malformed HELLO JSON */
    f.payload_len = 17;
    proto_err_t err;
    assert_int_equal(oap_hello_parse(&f, &h, &bare, &err), RON_EJSON);
    assert_string_equal(err.field, "max_frame");
    expect_mismatch(&f);
}

static void
test_oap_hello_reply_parse_rejects_errors_and_strangers(void **state)
{
    (void)state;
    uint8_t out[512];
    oap_frame_t f;
    proto_hello_reply_t r;
    uint32_t mf;
    ssize_t n = oap_error_encode(426, 0, 1, "no", NULL, out, sizeof out);
    assert_true(n > 0);
    decode_one(out, (size_t)n, &f);
    assert_int_equal(oap_hello_reply_parse(&f, 1, OAP_MAX_FRAME, &r, &mf, NULL), RON_EVERSION);

    proto_hello_reply_t offer;
    size_t len;
    decode_one(vec_hello, sizeof vec_hello, &f);
    oap_hello_reply_init(&offer, 65536, "unix");
    assert_int_equal(oap_hello_answer(&f, &offer, out, sizeof out, &len, &mf), 0);
    assert_int_equal(mf, 65536);
    decode_one(out, len, &f);
    assert_int_equal(oap_hello_reply_parse(&f, 2, OAP_MAX_FRAME, &r, &mf, NULL), RON_EVERSION);
    assert_int_equal(oap_hello_reply_parse(&f, 1, 16384, &r, &mf, NULL), 0);
    assert_int_equal(mf, 16384); /* our own smaller limit wins */
}

static void
test_oap_error_frame_carries_envelope(void **state)
{
    (void)state;
    uint8_t out[512];
    oap_frame_t f;
    proto_error_t e;
    ssize_t n = oap_error_encode(413, OAP_APP_STORAGE, 0x8000000000000001ULL, "too big",
                                 "compression_bomb", out, sizeof out);
    decode_one(out, (size_t)n, &f);
    assert_int_equal(f.flags, OAP_F_RESP | OAP_F_END);
    assert_int_equal(f.code, 413);
    assert_int_equal(f.app_proto_id, OAP_APP_STORAGE);
    assert_int_equal(proto_error_decode((const char *)f.payload, f.payload_len, &e, NULL), 0);
    assert_string_equal(e.code, "payload_too_large");
    assert_string_equal(e.reason, "compression_bomb");
    assert_true(e.corr_id == 0x8000000000000001ULL);
    assert_int_equal(oap_error_encode(413, 1, 1, "m", NULL, out, 40), -ENOBUFS);
    memset(&e, 0, sizeof e);
    strcpy(e.code, "bogus");
    assert_int_equal(oap_error_frame_encode(&e, 1, out, sizeof out), RON_EINVAL);
}

/* ---- streams and credit (spec §2.1) ---- */

static oap_frame_t
sf(uint16_t flags, uint64_t corr_id)
{
    oap_frame_t f;
    memset(&f, 0, sizeof f);
    f.flags = flags;
    f.corr_id = corr_id;
    f.app_proto_id = OAP_APP_STORAGE;
    return f;
}

enum { REQ = OAP_F_REQ, RESP = OAP_F_RESP, START = OAP_F_START, END = OAP_F_END };

static void
test_oap_stream_single_frame_exchange_opens_and_closes(void **state)
{
    (void)state;
    oap_streams_t c, s;
    oap_frame_t f;
    oap_streams_init(&c, 4, 8);
    oap_streams_init(&s, 4, 8);
    f = sf(REQ | START | END, 1);
    assert_int_equal(oap_streams_send(&c, &f), 0);
    assert_int_equal(oap_streams_recv(&s, &f), 0);
    assert_non_null(oap_streams_find(&c, 1, true));
    assert_non_null(oap_streams_find(&s, 1, false));
    assert_int_equal(s.n_theirs, 1);
    f = sf(RESP | END, 1);
    assert_int_equal(oap_streams_send(&s, &f), 0);
    assert_int_equal(oap_streams_recv(&c, &f), 0);
    assert_null(oap_streams_find(&c, 1, true));
    assert_null(oap_streams_find(&s, 1, false));
    assert_int_equal(s.n_theirs, 0);
    assert_int_equal(c.n_mine, 0);
    /* the corr_id may be reused once the stream is gone */
    f = sf(REQ | START, 1);
    assert_int_equal(oap_streams_recv(&s, &f), 0);
    oap_streams_close(&c);
    oap_streams_close(&s);
}

static void
test_oap_stream_refuses_one_more_than_max_inflight(void **state)
{
    (void)state;
    oap_streams_t t;
    oap_frame_t f;
    uint16_t st;
    const char *slug, *reason;
    oap_streams_init(&t, 3, 8);
    for (uint64_t i = 0; i < 3; i++) {
        f = sf(REQ | START, 100 + i);
        assert_int_equal(oap_streams_recv(&t, &f), 0);
    }
    f = sf(REQ | START, 200);
    assert_int_equal(oap_streams_recv(&t, &f), RON_EBUSY);
    oap_error_status(RON_EBUSY, &st, &slug, &reason);
    assert_int_equal(st, 429);
    assert_string_equal(slug, "quota_exhausted");
    assert_null(oap_streams_find(&t, 200, false));
    /* our own streams count separately, and wait (EBUSY) at the same bound */
    for (uint64_t i = 0; i < 3; i++) {
        f = sf(REQ | START, 100 + i); /* same ids, other side: distinct streams */
        assert_int_equal(oap_streams_send(&t, &f), 0);
    }
    f = sf(REQ | START, 300);
    assert_int_equal(oap_streams_send(&t, &f), RON_EBUSY);
    /* finish one of the peer's streams: room again */
    f = sf(REQ | END, 101);
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    f = sf(RESP | END, 101);
    assert_int_equal(oap_streams_send(&t, &f), 0);
    f = sf(REQ | START, 200);
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    oap_streams_close(&t);
}

static void
test_oap_stream_rejects_state_violations(void **state)
{
    (void)state;
    oap_streams_t t;
    oap_frame_t f;
    oap_streams_init(&t, 8, 8);
    f = sf(REQ, 5); /* data before START */
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM);
    f = sf(RESP, 5); /* response to a stream we never opened */
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM);
    f = sf(REQ | START, 5);
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM); /* duplicate START */
    f = sf(RESP | START, 6);
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM); /* only the opener starts */
    f = sf(REQ | RESP, 5);
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM); /* both roles */
    f = sf(END, 5);
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM); /* no role */
    f = sf(OAP_F_EVENT | END, 5);
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM); /* an event cannot end a stream */
    f = sf(OAP_F_EVENT, 77); /* a standalone event belongs to no stream */
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    assert_int_equal(oap_streams_send(&t, &f), 0);
    assert_null(oap_streams_find(&t, 77, false));
    f = sf(OAP_F_EVENT | OAP_F_ACK_REQ, 77);
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    f = sf(REQ | END, 5);
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    f = sf(REQ, 5);
    assert_int_equal(oap_streams_recv(&t, &f), RON_ESTREAM); /* after END */
    /* our side too: sending after our END */
    f = sf(RESP | END, 5);
    assert_int_equal(oap_streams_send(&t, &f), 0);
    assert_int_equal(oap_streams_send(&t, &f), RON_ESTREAM); /* stream gone */
    f = sf(REQ, 9);
    assert_int_equal(oap_streams_send(&t, &f), RON_ESTREAM); /* our data before our START */
    oap_streams_close(&t);
}

static void
test_oap_stream_sender_without_credit_waits_until_granted(void **state)
{
    (void)state;
    oap_streams_t c, s;
    oap_frame_t f, cf;
    uint8_t buf[128];
    oap_streams_init(&c, 4, 4);
    oap_streams_init(&s, 4, 4);
    f = sf(REQ | START, 7);
    assert_int_equal(oap_streams_send(&c, &f), 0);
    assert_int_equal(oap_streams_recv(&s, &f), 0);
    f = sf(REQ, 7);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(oap_streams_send(&c, &f), 0);
        assert_int_equal(oap_streams_recv(&s, &f), 0);
    }
    assert_int_equal(oap_streams_send(&c, &f), RON_EAGAIN);  /* window of 4 used */
    assert_int_equal(oap_streams_send(&c, &f), RON_EAGAIN);  /* still waiting, no change */
    assert_int_equal(oap_streams_recv(&s, &f), RON_ECREDIT); /* a sender that ignores it */
    /* the server's application consumes 1: below the batch, no grant yet */
    assert_int_equal(oap_streams_consume(&s, 7, false, 1), 0);
    /* consumes 1 more: window/2 reached, grant 2 */
    uint32_t g = oap_streams_consume(&s, 7, false, 1);
    assert_int_equal(g, 2);
    ssize_t n = oap_credit_encode(7, false, g, buf, sizeof buf);
    assert_true(n > 0);
    decode_one(buf, (size_t)n, &cf);
    assert_int_equal(cf.flags, OAP_F_EVENT | OAP_F_RESP);
    assert_int_equal(oap_streams_recv(&c, &cf), OAP_STREAM_CONTROL);
    assert_int_equal(oap_streams_find(&c, 7, true)->send_credit, 2);
    assert_int_equal(oap_streams_send(&c, &f), 0);
    assert_int_equal(oap_streams_recv(&s, &f), 0);
    f = sf(REQ | END, 7);
    assert_int_equal(oap_streams_send(&c, &f), 0);
    assert_int_equal(oap_streams_recv(&s, &f), 0);
    assert_int_equal(oap_streams_send(&c, &f), RON_ESTREAM);
    /* no credit goes out for a direction that has ended */
    assert_int_equal(oap_streams_consume(&s, 7, false, 10), 0);
    oap_streams_close(&c);
    oap_streams_close(&s);
}

static void
test_oap_credit_frame_matches_hand_written_bytes(void **state)
{
    (void)state;
    /* clang-format off */
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x40,                         /* len 64 */
        0x00, 0x01, 0x00, 0x05,                         /* ver 1, EVENT|REQ */
        0x00, 0x00, 0x00, 0x00,                         /* code 0, app 0 */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* tenant */
        0x00, 0x00,                                     /* cap_len */
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, /* corr_id 2^63 + 5 */
        '{', '"', 'f', 'r', 'a', 'm', 'e', 's', '"', ':', '8', ',', '"', 'o', 'p', '"', ':',
        '"', 'c', 'r', 'e', 'd', 'i', 't', '"', '}',
    };
    /* clang-format on */
    uint8_t out[128];
    oap_frame_t f;
    uint32_t frames;
    assert_int_equal(oap_credit_encode(0x8000000000000005ULL, true, 8, out, sizeof out),
                     sizeof want);
    assert_memory_equal(out, want, sizeof want);
    decode_one(want, sizeof want, &f);
    assert_int_equal(oap_credit_parse(&f, &frames), 1);
    assert_int_equal(frames, 8);
    assert_int_equal(oap_credit_encode(1, true, 0, out, sizeof out), RON_EINVAL);
    /* not credit frames */
    decode_one(vec_hello, sizeof vec_hello, &f);
    assert_int_equal(oap_credit_parse(&f, &frames), 0);
    decode_one(want, sizeof want, &f);
    f.payload_len -= 1;
    assert_int_equal(oap_credit_parse(&f, &frames), RON_EJSON);
}

static void
test_oap_stream_credit_for_unknown_stream_is_ignored_and_overflow_rejected(void **state)
{
    (void)state;
    oap_streams_t t;
    oap_frame_t f, cf;
    uint8_t buf[128];
    oap_streams_init(&t, 4, 4);
    ssize_t n = oap_credit_encode(99, true, 5, buf, sizeof buf);
    decode_one(buf, (size_t)n, &cf);
    assert_int_equal(oap_streams_recv(&t, &cf), OAP_STREAM_CONTROL);
    f = sf(REQ | START, 99);
    assert_int_equal(oap_streams_recv(&t, &f), 0); /* peer opened 99: its credit is for our RESP */
    for (int i = 0; i < 20; i++)
        assert_int_equal(oap_streams_recv(&t, &cf), OAP_STREAM_CONTROL);
    n = oap_credit_encode(99, true, PROTO_MAX_CREDIT, buf, sizeof buf);
    decode_one(buf, (size_t)n, &cf);
    assert_int_equal(oap_streams_recv(&t, &cf), RON_ECREDIT);
    /* HELLO and other control frames are not stream frames */
    decode_one(vec_hello, sizeof vec_hello, &f);
    assert_int_equal(oap_streams_recv(&t, &f), 0);
    assert_int_equal(oap_streams_send(&t, &f), 0);
    oap_streams_close(&t);
}

/* Two peers exchange a long transfer with a small window; the receiver
 * consumes at a random pace; nothing exceeds credit and everything arrives. */
static void
test_oap_stream_transfer_with_random_consumption_respects_window(void **state)
{
    (void)state;
    uint64_t seed = seed_init(__func__);
    oap_streams_t c, s;
    oap_frame_t f, cf;
    uint8_t buf[128];
    const uint32_t window = 6, total = 500;
    uint32_t sent = 0, delivered = 0, queued = 0, waits = 0;

    oap_streams_init(&c, 2, window);
    oap_streams_init(&s, 2, window);
    f = sf(REQ | START | END, 42);
    assert_int_equal(oap_streams_send(&c, &f), 0);
    assert_int_equal(oap_streams_recv(&s, &f), 0);
    for (int step = 0; step < 100000 && delivered < total; step++) {
        if (sent < total && rng_below(2)) {
            f = sf(RESP | (sent + 1 == total ? END : 0), 42);
            int rc = oap_streams_send(&s, &f);
            if (rc == RON_EAGAIN) {
                waits++;
            } else {
                assert_int_equal(rc, 0);
                sent++;
                if (oap_streams_recv(&c, &f) != 0)
                    fail_msg("recv failed at frame %u (seed %llu)", sent, (unsigned long long)seed);
                queued++;
                if (queued > window)
                    fail_msg("receiver buffers %u > window (seed %llu)", queued,
                             (unsigned long long)seed);
            }
        } else if (queued > 0) {
            uint32_t k = 1 + (uint32_t)rng_below(queued);
            queued -= k;
            delivered += k;
            uint32_t g = oap_streams_consume(&c, 42, true, k);
            if (g > 0) {
                ssize_t n = oap_credit_encode(42, true, g, buf, sizeof buf);
                decode_one(buf, (size_t)n, &cf);
                assert_int_equal(oap_streams_recv(&s, &cf), OAP_STREAM_CONTROL);
            }
        }
    }
    assert_int_equal(delivered, total);
    assert_true(waits > 0);
    assert_null(oap_streams_find(&c, 42, true));
    assert_null(oap_streams_find(&s, 42, false));
    oap_streams_close(&c);
    oap_streams_close(&s);
}

/* The hash table against a plain reference under random open/finish. */
static void
test_oap_stream_table_matches_reference_under_churn(void **state)
{
    (void)state;
    uint64_t seed = seed_init(__func__);
    enum { MAXI = 32, IDS = 64 };
    oap_streams_t t;
    bool open_ref[IDS][2];
    uint32_t n_ref[2] = {0, 0};
    memset(open_ref, 0, sizeof open_ref);
    oap_streams_init(&t, MAXI, 4);
    for (int step = 0; step < 20000; step++) {
        int idx = (int)rng_below(IDS);
        uint64_t id = idx % 2 ? (uint64_t)idx : (uint64_t)idx << 32; /* small and shifted ids */
        bool mine = rng_below(2);
        oap_frame_t f;
        int rc;
        if (!open_ref[idx][mine]) {
            f = sf(REQ | START, id);
            rc = mine ? oap_streams_send(&t, &f) : oap_streams_recv(&t, &f);
            if (n_ref[mine] >= MAXI) {
                if (rc != RON_EBUSY)
                    fail_msg("step %d: want EBUSY (seed %llu)", step, (unsigned long long)seed);
            } else {
                if (rc != 0)
                    fail_msg("step %d: open failed %d (seed %llu)", step, rc,
                             (unsigned long long)seed);
                open_ref[idx][mine] = true;
                n_ref[mine]++;
            }
        } else if (rng_below(4) == 0) {
            oap_streams_remove(&t, id, mine); /* aborted, e.g. after an error */
            open_ref[idx][mine] = false;
            n_ref[mine]--;
        } else {
            f = sf(REQ | END, id);
            rc = mine ? oap_streams_send(&t, &f) : oap_streams_recv(&t, &f);
            assert_int_equal(rc, 0);
            f = sf(RESP | END, id);
            rc = mine ? oap_streams_recv(&t, &f) : oap_streams_send(&t, &f);
            assert_int_equal(rc, 0);
            open_ref[idx][mine] = false;
            n_ref[mine]--;
        }
        for (int k = 0; k < IDS; k++)
            for (int m = 0; m < 2; m++)
                if ((oap_streams_find(&t, k % 2 ? (uint64_t)k : (uint64_t)k << 32, m) != NULL) !=
                    open_ref[k][m])
                    fail_msg("step %d: table disagrees on %d/%d (seed %llu)", step, k, m,
                             (unsigned long long)seed);
        assert_int_equal(t.n_mine, n_ref[1]);
        assert_int_equal(t.n_theirs, n_ref[0]);
    }
    oap_streams_close(&t);
}

static void
test_oap_flags_parse_from_names(void **state)
{
    (void)state;
    uint16_t fl;
    assert_int_equal(oap_flags_from_names("REQ|START|END", &fl), 0);
    assert_int_equal(fl, 0x19);
    assert_int_equal(oap_flags_from_names("", &fl), 0);
    assert_int_equal(fl, 0);
    assert_int_equal(oap_flags_from_names("APP_E2E|COMP|ACK_REQ", &fl), 0);
    assert_int_equal(fl, 0xe0);
    assert_int_equal(oap_flags_from_names("REQ|", &fl), RON_EINVAL);
    assert_int_equal(oap_flags_from_names("REQ||END", &fl), RON_EINVAL);
    assert_int_equal(oap_flags_from_names("req", &fl), RON_EINVAL);
    assert_int_equal(oap_flags_from_names("BIT8", &fl), RON_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oap_parses_hand_written_hello),
        cmocka_unit_test(test_oap_parses_hand_written_start_with_cap_and_high_corr_id),
        cmocka_unit_test(test_oap_parses_hand_written_error_response),
        cmocka_unit_test(test_oap_encodes_hand_written_vectors_byte_for_byte),
        cmocka_unit_test(test_oap_rejects_version_other_than_1),
        cmocka_unit_test(test_oap_rejects_len_below_header_size),
        cmocka_unit_test(test_oap_rejects_len_below_header_plus_cap),
        cmocka_unit_test(test_oap_rejects_frame_longer_than_max),
        cmocka_unit_test(test_oap_rejects_each_reserved_flag_bit),
        cmocka_unit_test(test_oap_rejects_cap_without_start),
        cmocka_unit_test(test_oap_waits_on_incomplete_header_and_body),
        cmocka_unit_test(test_oap_encoder_rejects_bad_frames),
        cmocka_unit_test(test_oap_decoder_yields_same_frames_fed_byte_by_byte),
        cmocka_unit_test(test_oap_decoder_yields_many_frames_fed_at_once),
        cmocka_unit_test(test_oap_decoder_release_frees_only_a_drained_buffer),
        cmocka_unit_test(test_oap_decoder_rejects_bad_header_before_its_body_arrives),
        cmocka_unit_test(test_oap_decoder_yields_good_frames_before_a_bad_one),
        cmocka_unit_test(test_oap_decoder_same_frames_for_every_split_point),
        cmocka_unit_test(test_oap_decoder_streams_large_frames_within_its_bound),
        cmocka_unit_test(test_oap_decoder_reports_each_reject_code),
        cmocka_unit_test(test_oap_decoder_payload_is_a_view_into_its_buffer),
        cmocka_unit_test(test_oap_decoder_refuses_to_buffer_past_one_frame_plus_chunk),
        cmocka_unit_test(test_oap_decoder_max_frame_only_goes_down),
        cmocka_unit_test(test_oap_random_frames_round_trip_through_random_chunking),
        cmocka_unit_test(test_oap_inflate_round_trips_comp_payload),
        cmocka_unit_test(test_oap_inflate_stops_a_100_mib_zero_bomb),
        cmocka_unit_test(test_oap_inflate_accepts_exactly_the_bound_and_refuses_one_more_byte),
        cmocka_unit_test(test_oap_inflate_rejects_malformed_and_truncated_data),
        cmocka_unit_test(test_oap_inflate_refuses_window_larger_than_bound),
        cmocka_unit_test(test_oap_inflate_joins_concatenated_zstd_frames),
        cmocka_unit_test(test_oap_maps_codec_errors_to_envelope_status),
        cmocka_unit_test(test_oap_names_flags),
        cmocka_unit_test(test_oap_flags_parse_from_names),
        cmocka_unit_test(test_oap_hello_parses_hand_written_request),
        cmocka_unit_test(test_oap_hello_encodes_both_forms),
        cmocka_unit_test(test_oap_hello_answer_mirrors_form_and_negotiates_downward),
        cmocka_unit_test(test_oap_hello_answer_refuses_anything_else_with_proto_mismatch),
        cmocka_unit_test(test_oap_hello_reply_parse_rejects_errors_and_strangers),
        cmocka_unit_test(test_oap_error_frame_carries_envelope),
        cmocka_unit_test(test_oap_stream_single_frame_exchange_opens_and_closes),
        cmocka_unit_test(test_oap_stream_refuses_one_more_than_max_inflight),
        cmocka_unit_test(test_oap_stream_rejects_state_violations),
        cmocka_unit_test(test_oap_stream_sender_without_credit_waits_until_granted),
        cmocka_unit_test(test_oap_credit_frame_matches_hand_written_bytes),
        cmocka_unit_test(
            test_oap_stream_credit_for_unknown_stream_is_ignored_and_overflow_rejected),
        cmocka_unit_test(test_oap_stream_transfer_with_random_consumption_respects_window),
        cmocka_unit_test(test_oap_stream_table_matches_reference_under_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
