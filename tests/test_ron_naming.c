/*
 * test_ron_naming.c - addresses (exact lowercase form, precise offsets in
 * errors, routing prefixes), name normalization (valid and invalid tables,
 * RFC 3492 §7.1 punycode vectors through libidn2, length limits), records
 * (canonical signing bytes, sign/verify, binary and JSON forms, strict JSON)
 * and every branch of the acceptance rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "ron_err.h"
#include "ron_naming.h"

#define S(lit) lit, sizeof(lit) - 1
#define NOW 1764000000LL

static const char ADDR_HEX[] =
    "b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

/* ---- addresses ---- */

static void
test_addr_parses_and_formats_back_exactly(void **state)
{
    (void)state;
    name_addr_t a;
    char text[NAME_ADDR_TEXT_LEN + 1];
    assert_int_equal(name_addr_parse(&a, ADDR_HEX, strlen(ADDR_HEX), NULL), 0);
    assert_int_equal(a.b[0], 0xaf);
    assert_int_equal(a.b[31], 0x62);
    name_addr_format(&a, text);
    assert_string_equal(text, ADDR_HEX);
}

static void
expect_addr_error(const char *s, size_t len, long pos, const char *needle)
{
    name_addr_t a;
    name_err_t e;
    assert_int_equal(name_addr_parse(&a, s, len, &e), RON_EADDR);
    assert_int_equal(e.code, RON_EADDR);
    assert_int_equal(e.pos, pos);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
}

static void
test_addr_rejects_each_malformation_naming_the_offset(void **state)
{
    (void)state;
    char buf[80];
    strcpy(buf, ADDR_HEX);
    buf[10] = 'A';
    expect_addr_error(buf, strlen(buf), 10, "uppercase hex digit 'A' at offset 10");
    strcpy(buf, ADDR_HEX);
    buf[66] = 'g';
    expect_addr_error(buf, strlen(buf), 66, "character 'g' at offset 66");
    strcpy(buf, ADDR_HEX);
    buf[0] = 'B';
    expect_addr_error(buf, strlen(buf), 0, "lowercase \"b3:\"");
    expect_addr_error(ADDR_HEX + 3, 64, 0, "must start with \"b3:\"");
    expect_addr_error(ADDR_HEX, strlen(ADDR_HEX) - 1, 66, "63 hex digits");
    snprintf(buf, sizeof buf, "%s0", ADDR_HEX);
    expect_addr_error(buf, strlen(buf), 67, "65 hex digits");
    expect_addr_error(S("b3:"), 3, "0 hex digits");
    expect_addr_error(S(""), 0, "must start");
    strcpy(buf, ADDR_HEX);
    buf[20] = '\0'; /* an embedded NUL is a bad character, not an end */
    expect_addr_error(buf, strlen(ADDR_HEX), 20, "\\x00 at offset 20");
    strcpy(buf, ADDR_HEX);
    buf[5] = ' ';
    expect_addr_error(buf, strlen(buf), 5, "offset 5");
}

static void
test_addr_prefix_parses_and_matches_by_nibble(void **state)
{
    (void)state;
    name_addr_t a;
    name_addr_prefix_t p;
    name_err_t e;
    assert_int_equal(name_addr_parse(&a, ADDR_HEX, strlen(ADDR_HEX), NULL), 0);
    assert_int_equal(name_addr_prefix_parse(&p, S("b3:af1"), NULL), 0);
    assert_int_equal(p.nibbles, 3);
    assert_true(name_addr_prefix_matches(&p, &a));
    assert_int_equal(name_addr_prefix_parse(&p, S("b3:af2"), NULL), 0);
    assert_false(name_addr_prefix_matches(&p, &a));
    assert_int_equal(name_addr_prefix_parse(&p, S("b3:a"), NULL), 0);
    assert_true(name_addr_prefix_matches(&p, &a));
    assert_int_equal(name_addr_prefix_parse(&p, S("b3:b"), NULL), 0);
    assert_false(name_addr_prefix_matches(&p, &a));
    assert_int_equal(name_addr_prefix_parse(&p, ADDR_HEX, strlen(ADDR_HEX), NULL), 0);
    assert_int_equal(p.nibbles, 64);
    assert_true(name_addr_prefix_matches(&p, &a));
    assert_int_equal(name_addr_prefix_parse(&p, S("b3:"), &e), RON_EADDR);
    assert_non_null(strstr(e.msg, "expected 1 to 64"));
    assert_int_equal(name_addr_prefix_parse(&p, S("b3:aF"), &e), RON_EADDR);
    assert_int_equal(e.pos, 4);
}

/* ---- names ---- */

static void
test_name_normalizes_valid_names(void **state)
{
    (void)state;
    static const char *const table[][2] = {
        {"photos.alice", "photos.alice"},
        {"Photos.ALICE", "photos.alice"},
        {"a.b", "a.b"},
        {"a-b.c-d", "a-b.c-d"},
        {"0.a", "0.a"},
        {"123.a1", "123.a1"},
        {"xn--bcher-kva.de", "xn--bcher-kva.de"},
        {"XN--BCHER-KVA.de", "xn--bcher-kva.de"},
        {"b\303\274cher.de", "xn--bcher-kva.de"},              /* bücher */
        {"B\303\234CHER.de", "xn--bcher-kva.de"},              /* BÜCHER: mapped to lowercase */
        {"\357\274\241\357\274\242\357\274\243.de", "abc.de"}, /* fullwidth ABC */
        {"a\343\200\202b", "a.b"},                             /* U+3002 separator */
        {"a\357\274\216b", "a.b"},                             /* U+FF0E separator */
        {"a\357\275\241b", "a.b"},                             /* U+FF61 separator */
        {"faß.de", "xn--fa-hia.de"},                           /* non-transitional: ß kept */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char out[NAME_MAX_LEN + 1];
        name_err_t e = {0};
        int rc = name_normalize(table[i][0], strlen(table[i][0]), out, &e);
        if (rc != 0)
            fail_msg("\"%s\": %s", table[i][0], e.msg);
        assert_string_equal(out, table[i][1]);
        assert_int_equal(name_check(out, strlen(out), NULL), 0);
    }
}

static void
test_name_rejects_invalid_names_naming_label_and_reason(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int label;
        const char *needle;
    } table[] = {
        {"", -1, "empty"},
        {"photos", 0, "one label"},
        {".a.b", 0, "starts with a dot"},
        {"a..b", 1, "two dots in a row at offset 2"},
        {"a.b.", 2, "ends with a dot"},
        {"a_b.c", 0, "character '_' at offset 1"},
        {"ok.a b", 1, "character \\x20 at offset 4"},
        {"ok.a/b", 1, "character '/' at offset 4"},
        {"-a.b", 0, "starts with a hyphen"},
        {"a.b-", 1, "ends with a hyphen"},
        {"ab--cd.e", 0, "reserved for IDNA"},
        {"xn--abc-.e", 0, "ends with a hyphen"},
        {"ok.xn--zz", 1, "xn--zz"},
        {"xn--wca.com", 0, "IDNA2008"},                    /* encodes uppercase U+00DC */
        {"xn--u-ccb.com", 0, "not a canonical A-label"},   /* u + U+0308, not NFC */
        {"xn--ls8h.la", 0, "IDNA2008"},                    /* emoji A-label */
        {"\360\237\222\251.la", 0, "cannot be converted"}, /* emoji U-label */
        {"\342\222\210.com", 0, "cannot be converted"},    /* U+2488 maps to "1." */
        {"ok.\377\376", 1, "cannot be converted"},         /* not UTF-8 */
        {"1.2", 1, "all digits"},
        {"www.example.123", 2, "all digits"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char out[NAME_MAX_LEN + 1];
        name_err_t e = {0};
        assert_int_equal(name_normalize(table[i].in, strlen(table[i].in), out, &e), RON_ENAME);
        assert_int_equal(e.code, RON_ENAME);
        if (e.label != table[i].label || strstr(e.msg, table[i].needle) == NULL)
            fail_msg("\"%s\": label %d (want %d), \"%s\" lacks \"%s\"", table[i].in, e.label,
                     table[i].label, e.msg, table[i].needle);
    }
    char out[NAME_MAX_LEN + 1];
    name_err_t e;
    assert_int_equal(name_normalize("a\0b.c", 5, out, &e), RON_ENAME);
    assert_int_equal(e.pos, 1);
}

static void
test_name_enforces_label_and_name_lengths(void **state)
{
    (void)state;
    char in[NAME_MAX_INPUT + 8], out[NAME_MAX_LEN + 1];
    name_err_t e;

    memset(in, 'a', 63);
    strcpy(in + 63, ".b");
    assert_int_equal(name_normalize(in, strlen(in), out, &e), 0); /* 63 is fine */
    memset(in, 'a', 64);
    strcpy(in + 64, ".b");
    assert_int_equal(name_normalize(in, strlen(in), out, &e), RON_ENAME);
    assert_int_equal(e.label, 0);
    assert_non_null(strstr(e.msg, "64 bytes long"));
    /* labels of 63, 63, 63 and 61 bytes: 253 with the dots */
    size_t n = 0;
    for (int l = 0; l < 4; l++) {
        memset(in + n, 'a' + l, l < 3 ? 63 : 61);
        n += l < 3 ? 63 : 61;
        in[n++] = '.';
    }
    in[--n] = '\0';
    assert_int_equal(n, 253);
    assert_int_equal(name_normalize(in, n, out, &e), 0);
    assert_int_equal(strlen(out), 253);
    in[n] = 'd'; /* 254 */
    assert_int_equal(name_normalize(in, n + 1, out, &e), RON_ENAME);
    assert_int_equal(e.label, 3);
    assert_non_null(strstr(e.msg, "exceeds 253"));
    memset(in, 'a', NAME_MAX_INPUT + 1);
    assert_int_equal(name_normalize(in, NAME_MAX_INPUT + 1, out, &e), RON_ENAME);
    assert_non_null(strstr(e.msg, "at most 1024"));
}

/* RFC 3492 §7.1 samples, lowercased (case annotations do not survive
 * IDNA's mapping), as {id, U-label, punycode}. */
static const char *const rfc3492[][3] = {
    {"A",
     "\331\204\331\212\331\207\331\205\330\247\330\250\330\252\331\203\331\204\331\205\331\210\330"
     "\264\330\271\330\261\330\250\331\212\330\237",
     "egbpdaj6bu4bxfgehfvwxn"},
    {"B",
     "\344\273\226\344\273\254\344\270\272\344\273\200\344\271\210\344\270\215\350\257\264\344\270"
     "\255\346\226\207",
     "ihqwcrb4cv8a8dqg056pqjye"},
    {"C",
     "\344\273\226\345\200\221\347\210\262\344\273\200\351\272\275\344\270\215\350\252\252\344\270"
     "\255\346\226\207",
     "ihqwctvzc91f659drss3x8bo0yb"},
    {"D", "pro\304\215prost\304\233nemluv\303\255\304\215esky", "proprostnemluvesky-uyb24dma41a"},
    {"E",
     "\327\234\327\236\327\224\327\224\327\235\327\244\327\251\327\225\327\230\327\234\327\220\327"
     "\236\327\223\327\221\327\250\327\231\327\235\327\242\327\221\327\250\327\231\327\252",
     "4dbcagdahymbxekheh6e0a7fei0b"},
    {"F",
     "\340\244\257\340\244\271\340\244\262\340\245\213\340\244\227\340\244\271\340\244\277\340\244"
     "\250\340\245\215\340\244\246\340\245\200\340\244\225\340\245\215\340\244\257\340\245\213\340"
     "\244\202\340\244\250\340\244\271\340\245\200\340\244\202\340\244\254\340\245\213\340\244\262"
     "\340\244\270\340\244\225\340\244\244\340\245\207\340\244\271\340\245\210\340\244\202",
     "i1baa7eci9glrd9b2ae1bj0hfcgg6iyaf8o0a1dig0cd"},
    {"G",
     "\343\201\252\343\201\234\343\201\277\343\202\223\343\201\252\346\227\245\346\234\254\350\252"
     "\236\343\202\222\350\251\261\343\201\227\343\201\246\343\201\217\343\202\214\343\201\252\343"
     "\201\204\343\201\256\343\201\213",
     "n8jok5ay5dzabd5bym9f0cm5685rrjetr6pdxa"},
    {"H",
     "\354\204\270\352\263\204\354\235\230\353\252\250\353\223\240\354\202\254\353\236\214\353\223"
     "\244\354\235\264\355\225\234\352\265\255\354\226\264\353\245\274\354\235\264\355\225\264\355"
     "\225\234\353\213\244\353\251\264\354\226\274\353\247\210\353\202\230\354\242\213\354\235\204"
     "\352\271\214",
     "989aomsvi5e83db1d2a355cv1e0vak1dwrv93d5xbh15a0dt30a5jpsd879ccm6fea98c"},
    {"I",
     "\320\277\320\276\321\207\320\265\320\274\321\203\320\266\320\265\320\276\320\275\320\270\320"
     "\275\320\265\320\263\320\276\320\262\320\276\321\200\321\217\321\202\320\277\320\276\321\200"
     "\321\203\321\201\321\201\320\272\320\270",
     "b1abfaaepdrnnbgefbadotcwatmq2g4l"},
    {"J", "porqu\303\251nopuedensimplementehablarenespa\303\261ol",
     "porqunopuedensimplementehablarenespaol-fmd56a"},
    {"K",
     "t\341\272\241isaoh\341\273\215kh\303\264ngth\341\273\203ch\341\273\211n\303\263iti\341\272"
     "\277ngvi\341\273\207t",
     "tisaohkhngthchnitingvit-kjcr8268qyxafd2f1b9g"},
    {"L", "3\345\271\264b\347\265\204\351\207\221\345\205\253\345\205\210\347\224\237",
     "3b-ww4c5e180e575a65lsy2b"},
    {"M", "\345\256\211\345\256\244\345\245\210\347\276\216\346\201\265-with-super-monkeys",
     "-with-super-monkeys-pc58ag80a8qai00g7n9n"},
    {"N",
     "hello-another-way-"
     "\343\201\235\343\202\214\343\201\236\343\202\214\343\201\256\345\240\264\346\211\200",
     "hello-another-way--fc4qua05auwb3674vfr0b"},
    {"O", "\343\201\262\343\201\250\343\201\244\345\261\213\346\240\271\343\201\256\344\270\2132",
     "2-u9tlzr9756bt3uc0v"},
    {"P", "maji\343\201\247koi\343\201\231\343\202\2135\347\247\222\345\211\215",
     "majikoi5-783gue6qz075azm5e"},
    {"Q", "\343\203\221\343\203\225\343\202\243\343\203\274de\343\203\253\343\203\263\343\203\220",
     "de-jg4avhby1noc0d"},
    {"R", "\343\201\235\343\201\256\343\202\271\343\203\224\343\203\274\343\203\211\343\201\247",
     "d9juau41awczczp"},
};

static void
test_name_converts_rfc3492_samples_to_punycode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc3492 / sizeof rfc3492[0]; i++) {
        const char *id = rfc3492[i][0];
        char in[512], want[512], out[NAME_MAX_LEN + 1];
        name_err_t e = {0};
        int rc;

        snprintf(in, sizeof in, "%s.example", rfc3492[i][1]);
        snprintf(want, sizeof want, "xn--%s.example", rfc3492[i][2]);
        rc = name_normalize(in, strlen(in), out, &e);
        if (strcmp(id, "A") == 0) {
            /* (A) ends in U+061F ARABIC QUESTION MARK, DISALLOWED in IDNA2008 */
            assert_int_equal(rc, RON_ENAME);
            assert_non_null(strstr(e.msg, "cannot be converted"));
        } else if (strcmp(id, "H") == 0) {
            /* (H) encodes to 72 bytes with "xn--": over the 63-byte label limit */
            assert_int_equal(rc, RON_ENAME);
            assert_int_equal(e.label, 0);
        } else {
            if (rc != 0)
                fail_msg("(%s): %s", id, e.msg);
            assert_string_equal(out, want);
            /* the A-label given in ASCII is accepted unchanged */
            rc = name_normalize(want, strlen(want), out, &e);
            if (rc != 0)
                fail_msg("(%s) A-label: %s", id, e.msg);
            assert_string_equal(out, want);
        }
    }
}

static void
test_name_check_reports_the_canonical_form(void **state)
{
    (void)state;
    name_err_t e;
    assert_int_equal(name_check(S("photos.alice"), &e), 0);
    assert_int_equal(name_check(S("Photos.alice"), &e), RON_ENAME);
    assert_non_null(strstr(e.msg, "expected \"photos.alice\""));
    assert_int_equal(name_check(S("b\303\274cher.de"), &e), RON_ENAME);
    assert_non_null(strstr(e.msg, "xn--bcher-kva.de"));
}

/* ---- records ---- */

typedef struct {
    uint8_t pk[32];
    uint8_t sk[64];
} kp_t;

static void
kp_make(kp_t *k, uint8_t seed_byte)
{
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof seed);
    crypto_sign_ed25519_seed_keypair(k->pk, k->sk, seed);
}

static name_record_t
rec_make(const char *name, uint64_t seq, const kp_t *signer, const kp_t *new_owner)
{
    name_record_t r;
    memset(&r, 0, sizeof r);
    strcpy(r.name, name);
    assert_int_equal(name_addr_parse(&r.addr, ADDR_HEX, strlen(ADDR_HEX), NULL), 0);
    r.addr.b[31] = (uint8_t)seq;
    r.seq = seq;
    r.ts = (uint64_t)NOW;
    if (new_owner != NULL) {
        r.has_new_owner = true;
        memcpy(r.new_owner, new_owner->pk, 32);
    }
    assert_int_equal(name_record_sign(&r, signer->sk), 0);
    return r;
}

static bool
rec_eq(const name_record_t *a, const name_record_t *b)
{
    return strcmp(a->name, b->name) == 0 && memcmp(a->addr.b, b->addr.b, 32) == 0 &&
           a->seq == b->seq && a->ts == b->ts && memcmp(a->owner, b->owner, 32) == 0 &&
           a->has_new_owner == b->has_new_owner &&
           (!a->has_new_owner || memcmp(a->new_owner, b->new_owner, 32) == 0) &&
           memcmp(a->sig, b->sig, 64) == 0;
}

static void
test_record_signing_bytes_follow_the_documented_layout(void **state)
{
    (void)state;
    kp_t a, b;
    kp_make(&a, 1);
    kp_make(&b, 2);
    name_record_t r = rec_make("photos.alice", 0x0102030405060708ULL, &a, &b);
    uint8_t buf[NAME_SIGNING_MAX];
    size_t n = 12; /* strlen("photos.alice") */
    ssize_t len = name_record_signing_bytes(&r, buf, sizeof buf);

    assert_int_equal(len, 95 + n + 33);
    assert_memory_equal(buf, "ron-name-v1\0", 12);
    assert_int_equal(buf[12], n);
    assert_memory_equal(buf + 13, "photos.alice", n);
    assert_memory_equal(buf + 13 + n, r.addr.b, 32);
    assert_int_equal(buf[45 + n], 0x01);
    assert_int_equal(buf[52 + n], 0x08);
    assert_int_equal(buf[53 + n + 4], (uint8_t)(NOW >> 24));
    assert_int_equal(buf[61 + n], 1);
    assert_memory_equal(buf + 62 + n, a.pk, 32);
    assert_int_equal(buf[94 + n], 1);
    assert_int_equal(buf[95 + n], 1);
    assert_memory_equal(buf + 96 + n, b.pk, 32);
    r.has_new_owner = false;
    assert_int_equal(name_record_signing_bytes(&r, buf, sizeof buf), 95 + n);
    assert_int_equal(buf[94 + n], 0);
    assert_int_equal(name_record_signing_bytes(&r, buf, 95 + n - 1), RON_ETOOBIG);
    strcpy(r.name, "Photos.alice"); /* never signs a non-canonical name */
    assert_int_equal(name_record_signing_bytes(&r, buf, sizeof buf), RON_ERECORD);
}

static void
test_record_signature_covers_every_field(void **state)
{
    (void)state;
    kp_t a, b;
    name_err_t e;
    kp_make(&a, 1);
    kp_make(&b, 2);
    name_record_t good = rec_make("photos.alice", 5, &a, NULL);
    assert_memory_equal(good.owner, a.pk, 32);
    assert_int_equal(name_record_verify(&good, &e), 0);

    name_record_t r = good;
    strcpy(r.name, "photos.alicf");
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    r = good;
    r.addr.b[0] ^= 1;
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    r = good;
    r.seq++;
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    r = good;
    r.ts++;
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    r = good;
    memcpy(r.owner, b.pk, 32);
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    r = good;
    r.has_new_owner = true;
    memcpy(r.new_owner, b.pk, 32);
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    r = good;
    r.sig[63] ^= 0x40;
    assert_int_equal(name_record_verify(&r, &e), RON_ENAMESIG);
    assert_non_null(strstr(e.msg, "does not verify"));
    /* a transfer to its own owner is malformed, signed or not */
    r = good;
    r.has_new_owner = true;
    memcpy(r.new_owner, a.pk, 32);
    assert_int_equal(name_record_sign(&r, a.sk), RON_ERECORD);
    assert_int_equal(name_record_verify(&r, &e), RON_ERECORD);
}

static void
test_record_binary_form_round_trips_and_rejects_every_truncation(void **state)
{
    (void)state;
    kp_t a, b;
    kp_make(&a, 1);
    kp_make(&b, 2);
    for (int transfer = 0; transfer < 2; transfer++) {
        name_record_t r = rec_make("photos.alice", 9, &a, transfer ? &b : NULL), back;
        uint8_t buf[NAME_RECORD_MAX + 1];
        name_err_t e;
        ssize_t n = name_record_encode(&r, buf, sizeof buf);
        assert_true(n > 0);
        assert_int_equal(name_record_decode(&back, buf, (size_t)n, &e), 0);
        assert_true(rec_eq(&r, &back));
        for (ssize_t k = 0; k < n; k++)
            assert_int_equal(name_record_decode(&back, buf, (size_t)k, &e), RON_ERECORD);
        buf[n] = 0;
        assert_int_equal(name_record_decode(&back, buf, (size_t)n + 1, &e), RON_ERECORD);
        assert_non_null(strstr(e.msg, "1 bytes after the signature"));
        buf[0] = 'R';
        assert_int_equal(name_record_decode(&back, buf, (size_t)n, &e), RON_ERECORD);
        buf[0] = 'r';
        buf[61 + 12] = 2; /* owner algorithm */
        assert_int_equal(name_record_decode(&back, buf, (size_t)n, &e), RON_ERECORD);
        assert_non_null(strstr(e.msg, "algorithm 2"));
        buf[61 + 12] = 1;
        buf[13] = 'P'; /* non-canonical name */
        assert_int_equal(name_record_decode(&back, buf, (size_t)n, &e), RON_ERECORD);
        buf[13] = 'p';
        buf[16] = '\0'; /* a NUL inside the name must not shorten it */
        assert_int_equal(name_record_decode(&back, buf, (size_t)n, &e), RON_ERECORD);
        assert_non_null(strstr(e.msg, "NUL"));
        buf[16] = 't';
        buf[94 + 12] = 7; /* transfer flag */
        assert_int_equal(name_record_decode(&back, buf, (size_t)n, &e), RON_ERECORD);
    }
}

static void
test_record_json_round_trips_in_fixed_key_order(void **state)
{
    (void)state;
    kp_t a, b;
    kp_make(&a, 1);
    kp_make(&b, 2);
    name_record_t r = rec_make("photos.alice", UINT64_MAX, &a, &b), back;
    name_err_t e;
    char *j = name_record_to_json(&r);
    assert_non_null(j);
    assert_true(strncmp(j, "{\"name\":\"photos.alice\",\"addr\":\"b3:af13", 37) == 0);
    assert_non_null(strstr(j, "\"seq\":\"18446744073709551615\",\"ts\":\"1764000000\",\"owner\":"
                              "\"ed25519:"));
    assert_non_null(strstr(j, "\",\"new_owner\":\"ed25519:"));
    assert_int_equal(name_record_from_json(&back, j, strlen(j), &e), 0);
    assert_true(rec_eq(&r, &back));
    assert_int_equal(name_record_verify(&back, &e), 0);
    free(j);
    r = rec_make("photos.alice", 0, &a, NULL);
    j = name_record_to_json(&r);
    assert_null(strstr(j, "new_owner"));
    assert_int_equal(name_record_from_json(&back, j, strlen(j), &e), 0);
    assert_true(rec_eq(&r, &back));
    free(j);
    strcpy(r.name, "photos");
    assert_null(name_record_to_json(&r));
}

static void
test_record_object_is_the_json_form_and_reads_back_strictly(void **state)
{
    (void)state;
    kp_t a, b;
    kp_make(&a, 1);
    kp_make(&b, 2);
    name_record_t r = rec_make("photos.alice", 7, &a, &b), back;
    name_err_t e;
    char *j = name_record_to_json(&r), *dumped;
    json_t *o = name_record_to_object(&r), *arr;

    assert_non_null(o);
    dumped = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(dumped, j); /* same bytes, same key order */
    assert_int_equal(name_record_from_object(&back, o, &e), 0);
    assert_true(rec_eq(&r, &back));
    /* the same strict checks as the JSON text: an unknown key is refused */
    json_object_set_new(o, "extra", json_string("x"));
    assert_int_equal(name_record_from_object(&back, o, &e), RON_ERECORD);
    assert_non_null(strstr(e.msg, "extra"));
    arr = json_array();
    assert_int_equal(name_record_from_object(&back, arr, &e), RON_ERECORD);
    assert_int_equal(name_record_from_object(&back, NULL, NULL), RON_ERECORD);
    json_decref(arr);
    json_decref(o);
    free(dumped);
    free(j);
    strcpy(r.name, "photos");
    assert_null(name_record_to_object(&r));
}

/* Replace the first occurrence of from in src by to. */
static char *
edit(const char *src, const char *from, const char *to)
{
    const char *p = strstr(src, from);
    assert_non_null(p);
    char *out = malloc(strlen(src) + strlen(to) + 1);
    size_t k = (size_t)(p - src);
    memcpy(out, src, k);
    strcpy(out + k, to);
    strcat(out, p + strlen(from));
    return out;
}

static void
test_record_json_is_strict_and_names_the_field(void **state)
{
    (void)state;
    kp_t a;
    kp_make(&a, 1);
    name_record_t r = rec_make("photos.alice", 7, &a, NULL), back;
    char *j = name_record_to_json(&r);
    char pk[65];
    for (int i = 0; i < 32; i++)
        sprintf(pk + 2 * i, "%02x", a.pk[i]);
    struct {
        const char *from, *to;
        int code;
        const char *needle;
    } cases[] = {
        {"{", "{\"extra\":\"1\",", RON_ERECORD, "unknown field \"extra\""},
        {"{", "{\"seq\":\"1\",", RON_EJSON, "duplicate"},
        {"\"seq\":\"7\"", "\"seq\":7", RON_ERECORD, "field \"seq\": expected a string"},
        {"\"seq\":\"7\"", "\"seq\":\"07\"", RON_ERECORD, "leading zero"},
        {"\"seq\":\"7\"", "\"seq\":\"-7\"", RON_ERECORD, "field \"seq\""},
        {"\"seq\":\"7\"", "\"seq\":\"18446744073709551616\"", RON_ERECORD, "field \"seq\""},
        {"\"seq\":\"7\",", "", RON_ERECORD, "field \"seq\" is missing"},
        {"photos.alice", "Photos.alice", RON_ERECORD, "expected \"photos.alice\""},
        {"photos.alice", "photos", RON_ERECORD, "field \"name\""},
        {"b3:af", "b3:AF", RON_ERECORD, "field \"addr\": uppercase"},
        {"ed25519:", "ED25519:", RON_ERECORD, "field \"owner\""},
        {"ed25519:", "ed25519:0", RON_ERECORD, "expected 64 hex digits, got 65"},
        {"\"sig\":\"", "\"sig\":\"A", RON_ERECORD, "field \"sig\""},
        {"\"sig\":\"", "\"new_owner\":\"ed25519:PK\",\"sig\":\"", RON_ERECORD, "new_owner"},
        {"}", "", RON_EJSON, "record JSON"},
        {"\"ts\":\"", "\"ts\":\"\\u0000", RON_EJSON, "is not allowed"},
    };
    name_err_t e;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *bad = edit(j, cases[i].from, cases[i].to);
        if (strstr(bad, "PK") != NULL) {
            char *t = edit(bad, "PK", pk);
            free(bad);
            bad = t;
        }
        int rc = name_record_from_json(&back, bad, strlen(bad), &e);
        if (rc != cases[i].code || strstr(e.msg, cases[i].needle) == NULL)
            fail_msg("case %zu: rc %d, \"%s\" lacks \"%s\"", i, rc, e.msg, cases[i].needle);
        free(bad);
    }
    assert_int_equal(name_record_from_json(&back, S("[]"), &e), RON_ERECORD);
    char big[NAME_JSON_MAX + 2];
    memset(big, ' ', sizeof big);
    assert_int_equal(name_record_from_json(&back, big, sizeof big, &e), RON_ETOOBIG);
    free(j);
}

/* ---- acceptance ---- */

static void
test_accept_first_valid_record_binds_the_name(void **state)
{
    (void)state;
    kp_t a;
    name_err_t e;
    kp_make(&a, 1);
    name_record_t r = rec_make("photos.alice", 0, &a, NULL);
    assert_int_equal(name_record_accept(NULL, &r, NOW, &e), 0);
    assert_memory_equal(name_record_next_owner(&r), a.pk, 32);
    r.sig[0] ^= 1; /* even a first record needs a valid signature */
    assert_int_equal(name_record_accept(NULL, &r, NOW, &e), RON_ENAMESIG);
}

static void
test_accept_same_key_needs_strictly_higher_seq(void **state)
{
    (void)state;
    kp_t a;
    name_err_t e;
    kp_make(&a, 1);
    name_record_t cur = rec_make("photos.alice", 5, &a, NULL);
    name_record_t next = rec_make("photos.alice", 6, &a, NULL);
    name_record_t same = rec_make("photos.alice", 5, &a, NULL);
    name_record_t older = rec_make("photos.alice", 4, &a, NULL);
    assert_int_equal(name_record_accept(&cur, &next, NOW, &e), 0);
    same.addr.b[0] ^= 1; /* a different record with an equal seq */
    assert_int_equal(name_record_sign(&same, a.sk), 0);
    assert_int_equal(name_record_accept(&cur, &same, NOW, &e), RON_ENAMESTALE);
    assert_non_null(strstr(e.msg, "seq 5 for \"photos.alice\" is not above the current seq 5"));
    assert_int_equal(name_record_accept(&cur, &older, NOW, &e), RON_ENAMESTALE);
    assert_int_equal(name_record_accept(&cur, &cur, NOW, &e), RON_ENAMEDUP);
}

static void
test_accept_refuses_other_keys_and_bad_signatures(void **state)
{
    (void)state;
    kp_t a, m;
    name_err_t e;
    kp_make(&a, 1);
    kp_make(&m, 3);
    name_record_t cur = rec_make("photos.alice", 5, &a, NULL);
    name_record_t mallory = rec_make("photos.alice", 99, &m, NULL);
    assert_int_equal(name_record_accept(&cur, &mallory, NOW, &e), RON_ENAMEOWNER);
    assert_non_null(strstr(e.msg, "bound to another key"));
    /* a's key copied in, mallory's signature: the signature fails first */
    memcpy(mallory.owner, a.pk, 32);
    assert_int_equal(name_record_accept(&cur, &mallory, NOW, &e), RON_ENAMESIG);
    name_record_t other = rec_make("photos.bob", 6, &a, NULL);
    assert_int_equal(name_record_accept(&cur, &other, NOW, &e), RON_EINVAL);
}

static void
test_accept_transfer_hands_the_name_to_the_new_key(void **state)
{
    (void)state;
    kp_t a, b, m;
    name_err_t e;
    kp_make(&a, 1);
    kp_make(&b, 2);
    kp_make(&m, 3);
    name_record_t cur = rec_make("photos.alice", 5, &a, NULL);
    name_record_t by_new = rec_make("photos.alice", 6, &b, NULL);
    assert_int_equal(name_record_accept(&cur, &by_new, NOW, &e), RON_ENAMEOWNER);
    name_record_t xfer = rec_make("photos.alice", 6, &a, &b);
    assert_int_equal(name_record_accept(&cur, &xfer, NOW, &e), 0);
    assert_memory_equal(name_record_next_owner(&xfer), b.pk, 32);
    /* after the transfer, the old key is refused and the new key needs a higher seq */
    name_record_t old_again = rec_make("photos.alice", 7, &a, NULL);
    assert_int_equal(name_record_accept(&xfer, &old_again, NOW, &e), RON_ENAMEOWNER);
    assert_non_null(strstr(e.msg, "transferred"));
    name_record_t new_stale = rec_make("photos.alice", 6, &b, NULL);
    assert_int_equal(name_record_accept(&xfer, &new_stale, NOW, &e), RON_ENAMESTALE);
    name_record_t new_ok = rec_make("photos.alice", 7, &b, NULL);
    assert_int_equal(name_record_accept(&xfer, &new_ok, NOW, &e), 0);
    /* a transfer signed by a stranger naming itself is just another key */
    name_record_t steal = rec_make("photos.alice", 8, &m, &b);
    assert_int_equal(name_record_accept(&new_ok, &steal, NOW, &e), RON_ENAMEOWNER);
    /* a first record may itself be a transfer: the name binds to the new key */
    name_record_t first = rec_make("gift.bob", 0, &a, &b);
    assert_int_equal(name_record_accept(NULL, &first, NOW, &e), 0);
    name_record_t b1 = rec_make("gift.bob", 1, &b, NULL);
    assert_int_equal(name_record_accept(&first, &b1, NOW, &e), 0);
}

static void
test_accept_bounds_the_timestamp_to_five_minutes_ahead(void **state)
{
    (void)state;
    kp_t a;
    name_err_t e;
    kp_make(&a, 1);
    name_record_t r = rec_make("photos.alice", 1, &a, NULL);
    r.ts = (uint64_t)NOW + NAME_MAX_FUTURE_S;
    assert_int_equal(name_record_sign(&r, a.sk), 0);
    assert_int_equal(name_record_accept(NULL, &r, NOW, &e), 0);
    r.ts++;
    assert_int_equal(name_record_sign(&r, a.sk), 0);
    assert_int_equal(name_record_accept(NULL, &r, NOW, &e), RON_ENAMEFUTURE);
    assert_non_null(strstr(e.msg, "301 s ahead"));
    r.ts = 0; /* the past is fine: seq orders records, not ts */
    assert_int_equal(name_record_sign(&r, a.sk), 0);
    assert_int_equal(name_record_accept(NULL, &r, NOW, &e), 0);
}

int
main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_parses_and_formats_back_exactly),
        cmocka_unit_test(test_addr_rejects_each_malformation_naming_the_offset),
        cmocka_unit_test(test_addr_prefix_parses_and_matches_by_nibble),
        cmocka_unit_test(test_name_normalizes_valid_names),
        cmocka_unit_test(test_name_rejects_invalid_names_naming_label_and_reason),
        cmocka_unit_test(test_name_enforces_label_and_name_lengths),
        cmocka_unit_test(test_name_converts_rfc3492_samples_to_punycode),
        cmocka_unit_test(test_name_check_reports_the_canonical_form),
        cmocka_unit_test(test_record_signing_bytes_follow_the_documented_layout),
        cmocka_unit_test(test_record_signature_covers_every_field),
        cmocka_unit_test(test_record_binary_form_round_trips_and_rejects_every_truncation),
        cmocka_unit_test(test_record_json_round_trips_in_fixed_key_order),
        cmocka_unit_test(test_record_json_is_strict_and_names_the_field),
        cmocka_unit_test(test_record_object_is_the_json_form_and_reads_back_strictly),
        cmocka_unit_test(test_accept_first_valid_record_binds_the_name),
        cmocka_unit_test(test_accept_same_key_needs_strictly_higher_seq),
        cmocka_unit_test(test_accept_refuses_other_keys_and_bad_signatures),
        cmocka_unit_test(test_accept_transfer_hands_the_name_to_the_new_key),
        cmocka_unit_test(test_accept_bounds_the_timestamp_to_five_minutes_ahead),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
