/*
 * test_ron_transport_tls.c - pins the one SSL_CTX factory (protocol floor,
 * options, ciphers, ALPN, verification) and its certificate handling, with
 * in-memory handshakes between an OpenSSL client and the server SSL that
 * tx_conn runs (memory BIOs): no sockets, no loop. The wire paths (curl,
 * openssl s_client, raw HTTP/2 frames) are in tests/integration/test_http2_tls.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <openssl/ssl.h>

#include "ron_err.h"
#include "ron_transport.h"
#include "tx_internal.h"

static char tmpdir[] = "/tmp/ron-tx-tls-XXXXXX";

static SSL_CTX *
server_ctx(const char *alpn, bool tls13_only)
{
    tx_tls_config_t cfg;
    SSL_CTX *ctx = NULL;
    char dir[256];

    tx_tls_config_default(&cfg);
    snprintf(dir, sizeof dir, "%s/certs", tmpdir);
    cfg.cert_dir = dir;
    cfg.alpn = alpn;
    cfg.tls13_only = tls13_only;
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), 0);
    assert_non_null(ctx);
    return ctx;
}

static void
move_bytes(SSL *from, SSL *to)
{
    char buf[16384];
    int n;

    while ((n = BIO_read(SSL_get_wbio(from), buf, sizeof buf)) > 0)
        assert_int_equal(BIO_write(SSL_get_rbio(to), buf, n), n);
}

/* Run a handshake in memory; returns 1 when both sides completed, else 0. */
static int
handshake(SSL *cli, SSL *srv, int *srv_err)
{
    *srv_err = 0;
    for (int i = 0; i < 20; i++) {
        int c = SSL_do_handshake(cli);
        move_bytes(cli, srv);
        int s = SSL_do_handshake(srv);
        if (s <= 0 && SSL_get_error(srv, s) != SSL_ERROR_WANT_READ) {
            *srv_err = SSL_get_error(srv, s);
            return 0;
        }
        move_bytes(srv, cli);
        if (c == 1 && s == 1)
            return 1;
    }
    return 0;
}

static SSL *
client_new(SSL_CTX **cctx, const char *alpn_wire, size_t alpn_len, int max_version)
{
    SSL *cli;
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());

    *cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(*cctx);
    SSL_CTX_set_verify(*cctx, SSL_VERIFY_NONE, NULL);
    if (max_version != 0) {
        SSL_CTX_set_security_level(*cctx, 0); /* let the client really try old versions */
        SSL_CTX_set_cipher_list(*cctx, "DEFAULT@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(*cctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(*cctx, max_version);
    }
    cli = SSL_new(*cctx);
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(cli, rb, wb);
    SSL_set_connect_state(cli);
    if (alpn_wire != NULL)
        assert_int_equal(SSL_set_alpn_protos(cli, (const uint8_t *)alpn_wire, (unsigned)alpn_len), 0);
    return cli;
}

static void
test_ssl_ctx_pins_floor_options_ciphers_and_verification(void **state)
{
    (void)state;
    SSL_CTX *ctx = server_ctx(NULL, false);

    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    uint64_t o = SSL_CTX_get_options(ctx);
    assert_true(o & SSL_OP_NO_COMPRESSION);
    assert_true(o & SSL_OP_NO_RENEGOTIATION);
    assert_true(o & SSL_OP_CIPHER_SERVER_PREFERENCE);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
    /* modern ciphers only: AEAD, and forward secret (ECDHE) below TLS 1.3 */
    STACK_OF(SSL_CIPHER) *cs = SSL_CTX_get_ciphers(ctx);
    assert_true(sk_SSL_CIPHER_num(cs) > 0);
    for (int i = 0; i < sk_SSL_CIPHER_num(cs); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(cs, i);
        assert_true(SSL_CIPHER_is_aead(c));
        int kx = SSL_CIPHER_get_kx_nid(c);
        assert_true(kx == NID_kx_ecdhe || kx == NID_kx_any);
    }
    SSL_CTX_free(ctx);
    ctx = server_ctx(NULL, true);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
    SSL_CTX_free(ctx);
}

static const char *
negotiate(SSL_CTX *ctx, const char *wire, size_t len, char *out, size_t cap)
{
    SSL_CTX *cctx;
    SSL *cli = client_new(&cctx, wire, len, 0), *srv = tx__tls_ssl_new(ctx);
    const unsigned char *p = NULL;
    unsigned n = 0;
    int err;

    assert_int_equal(handshake(cli, srv, &err), 1);
    SSL_get0_alpn_selected(srv, &p, &n);
    snprintf(out, cap, "%.*s", (int)n, (const char *)p);
    /* TLS 1.3 is what a modern client gets */
    assert_int_equal(SSL_version(srv), TLS1_3_VERSION);
    SSL_free(cli);
    SSL_free(srv);
    SSL_CTX_free(cctx);
    return out;
}

static void
test_alpn_follows_server_preference_and_is_a_parameter(void **state)
{
    (void)state;
    SSL_CTX *ctx = server_ctx(NULL, false);
    char got[32];

    assert_string_equal(negotiate(ctx, "\x08http/1.1\x02h2", 12, got, sizeof got), "h2");
    assert_string_equal(negotiate(ctx, "\x08http/1.1", 9, got, sizeof got), "http/1.1");
    assert_string_equal(negotiate(ctx, "\x03""foo", 4, got, sizeof got), ""); /* no overlap: no ALPN */
    assert_string_equal(negotiate(ctx, NULL, 0, got, sizeof got), "");
    SSL_CTX_free(ctx);
    /* the peers' list of issue 4 is just another parameter */
    ctx = server_ctx("oap/1,h2", false);
    assert_string_equal(negotiate(ctx, "\x02h2\x05oap/1", 9, got, sizeof got), "oap/1");
    SSL_CTX_free(ctx);
    tx_tls_config_t bad;
    SSL_CTX *none = NULL;
    tx_tls_config_default(&bad);
    bad.cert_dir = tmpdir;
    bad.alpn = "h2,,http/1.1";
    assert_int_equal(tx_tls_ctx_new(&bad, &none), RON_EINVAL);
    assert_null(none);
}

static void
test_tls11_client_is_refused_and_classified_as_version(void **state)
{
    (void)state;
    SSL_CTX *ctx = server_ctx(NULL, false), *cctx;
    SSL *cli = client_new(&cctx, NULL, 0, TLS1_1_VERSION), *srv = tx__tls_ssl_new(ctx);
    int err;

    assert_int_equal(handshake(cli, srv, &err), 0);
    assert_int_equal(tx__tls_fail_reason(err, ERR_peek_last_error()), TX_TLS_FAIL_VERSION);
    ERR_clear_error();
    SSL_free(cli);
    SSL_free(srv);
    SSL_CTX_free(cctx);
    /* TLS 1.2 stays allowed (browsers) */
    cli = client_new(&cctx, NULL, 0, TLS1_2_VERSION);
    srv = tx__tls_ssl_new(ctx);
    assert_int_equal(handshake(cli, srv, &err), 1);
    assert_int_equal(SSL_version(srv), TLS1_2_VERSION);
    assert_string_equal(tx_tls_fail_name(TX_TLS_FAIL_VERSION), "version");
    SSL_free(cli);
    SSL_free(srv);
    SSL_CTX_free(cctx);
    SSL_CTX_free(ctx);
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 8192);

    assert_non_null(f);
    assert_true(fread(buf, 1, 8191, f) > 0);
    fclose(f);
    return buf;
}

static void
test_generated_certificate_is_p256_key_0600_and_reused(void **state)
{
    (void)state;
    char dir[256], crt[300], key[300];
    struct stat st;
    SSL_CTX *ctx;

    snprintf(dir, sizeof dir, "%s/gen", tmpdir);
    snprintf(crt, sizeof crt, "%s/%s", dir, TX_TLS_CERT_FILE);
    snprintf(key, sizeof key, "%s/%s", dir, TX_TLS_KEY_FILE);
    tx_tls_config_t cfg;
    tx_tls_config_default(&cfg);
    cfg.cert_dir = dir;
    cfg.hostname = "gw.example";
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), 0);
    SSL_CTX_free(ctx);
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *first = slurp(crt), *first_key = slurp(key);
    /* ECDSA P-256, self-signed, for the hostname */
    FILE *f = fopen(crt, "r");
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    EVP_PKEY *pk = X509_get0_pubkey(x);
    char group[64];
    size_t gl = 0;
    assert_int_equal(EVP_PKEY_get_base_id(pk), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_get_group_name(pk, group, sizeof group, &gl), 1);
    assert_string_equal(group, "prime256v1");
    assert_int_equal(X509_check_host(x, "gw.example", 0, 0, NULL), 1);
    assert_int_equal(X509_verify(x, pk), 1);
    X509_free(x);
    /* a second start reuses the pair */
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), 0);
    SSL_CTX_free(ctx);
    char *second = slurp(crt), *second_key = slurp(key);
    assert_string_equal(first, second);
    assert_string_equal(first_key, second_key);
    /* the same files configured by path */
    tx_tls_config_default(&cfg);
    cfg.cert_path = crt;
    cfg.key_path = key;
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), 0);
    SSL_CTX_free(ctx);
    cfg.key_path = NULL; /* one without the other */
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), RON_EINVAL);
    cfg.cert_path = "/nonexistent/c.pem";
    cfg.key_path = "/nonexistent/k.pem";
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), RON_ETLS);
    free(first);
    free(second);
    free(first_key);
    free(second_key);
}

static void
test_record_layer_encrypts_for_the_peer_after_handshake(void **state)
{
    (void)state;
    SSL_CTX *ctx = server_ctx(NULL, false), *cctx;
    SSL *cli = client_new(&cctx, NULL, 0, 0), *srv = tx__tls_ssl_new(ctx);
    tx_buf_t rec = {0};
    uv_buf_t b[2] = {uv_buf_init((char *)"hello ", 6), uv_buf_init((char *)"world", 5)};
    char got[32] = {0};
    int err;

    assert_int_equal(handshake(cli, srv, &err), 1);
    assert_int_equal(tx__tls_encrypt(srv, b, 2, &rec), 0);
    assert_true(rec.len > 11);
    assert_null(memmem(rec.p, rec.len, "hello", 5)); /* never plaintext on the wire */
    assert_int_equal(BIO_write(SSL_get_rbio(cli), rec.p, (int)rec.len), (int)rec.len);
    int n = 0, r;
    while (n < 11 && (r = SSL_read(cli, got + n, (int)sizeof got - 1 - n)) > 0)
        n += r;
    assert_string_equal(got, "hello world");
    tx__buf_free(&rec);
    SSL_free(cli);
    SSL_free(srv);
    SSL_CTX_free(cctx);
    SSL_CTX_free(ctx);
}

static int
setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    char cmd[300];

    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Secure heap bytes in use after building a context from cfg, and after
 * freeing it, against the baseline. */
static void
key_in_secure_heap(const tx_tls_config_t *cfg)
{
    size_t base = CRYPTO_secure_used();
    SSL_CTX *ctx = NULL;

    assert_int_equal(tx_tls_ctx_new(cfg, &ctx), 0);
    assert_true(CRYPTO_secure_used() > base); /* the key's secret scalar lives there */
    SSL_CTX_free(ctx);
    assert_int_equal(CRYPTO_secure_used(), base); /* and is freed (cleansed) with it */
}

static void
test_private_keys_live_in_the_secure_heap_and_go_with_their_context(void **state)
{
    tx_tls_config_t cfg;
    char dir[256], crt[300], key[300];
    struct stat st;

    (void)state;
    /* main() set it up, as a node does at start; again is a no-op */
    assert_int_equal(CRYPTO_secure_malloc_initialized(), 1);
    assert_int_equal(tx_tls_secure_heap_init(), 0);
    /* generated on first use into a directory, then read back from it */
    snprintf(dir, sizeof dir, "%s/heap", tmpdir);
    tx_tls_config_default(&cfg);
    cfg.cert_dir = dir;
    key_in_secure_heap(&cfg);
    key_in_secure_heap(&cfg);
    /* configured files */
    snprintf(crt, sizeof crt, "%s/%s", dir, TX_TLS_CERT_FILE);
    snprintf(key, sizeof key, "%s/%s", dir, TX_TLS_KEY_FILE);
    tx_tls_config_default(&cfg);
    cfg.cert_path = crt;
    cfg.key_path = key;
    key_in_secure_heap(&cfg);
    /* ephemeral (amnesia): made in RAM, nothing written anywhere */
    snprintf(dir, sizeof dir, "%s/eph", tmpdir);
    tx_tls_config_default(&cfg);
    cfg.ephemeral = true;
    key_in_secure_heap(&cfg);
    assert_int_equal(stat(dir, &st), -1);
    /* a key file that is not a key, or too large, is refused */
    tx_tls_config_default(&cfg);
    cfg.cert_path = crt;
    cfg.key_path = crt;
    SSL_CTX *ctx = NULL;
    assert_int_equal(tx_tls_ctx_new(&cfg, &ctx), RON_ETLS);
    assert_null(ctx);
}

int
main(void)
{
    if (tx_tls_secure_heap_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ssl_ctx_pins_floor_options_ciphers_and_verification),
        cmocka_unit_test(test_alpn_follows_server_preference_and_is_a_parameter),
        cmocka_unit_test(test_tls11_client_is_refused_and_classified_as_version),
        cmocka_unit_test(test_generated_certificate_is_p256_key_0600_and_reused),
        cmocka_unit_test(test_record_layer_encrypts_for_the_peer_after_handshake),
        cmocka_unit_test(test_private_keys_live_in_the_secure_heap_and_go_with_their_context),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
