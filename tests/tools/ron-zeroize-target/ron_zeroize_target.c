/*
 * ron_zeroize_target.c - the process tests/integration/test_zeroize_scan.py
 * scans for key bytes (issue 5, "Zeroization proven"). It drives the real
 * key code of a node: ron-kms unseals the identity and name keys with the
 * root secret file (RON_ROOT_SECRET_FILE), ron-transport's SSL_CTX factory
 * loads the HTTPS key from a PEM file into OpenSSL's secure heap and serves
 * two handshakes (TLS 1.3 and 1.2), a peer endpoint built on the identity
 * key completes a mutual TLS 1.3 session with a second endpoint, and both
 * Ed25519 keys sign. Then it stops on "live" so the test can scan a process
 * whose keys are alive (the positive control), destroys everything as a
 * node does at exit (SSL_free, SSL_CTX_free, tx_peer_close,
 * kms_keystore_free) and stops again on "destroyed" for the scan that must
 * find nothing. It is a test tool, not part of the node.
 *
 *   ron-zeroize-target init DATA_DIR MASK_HEX
 *       create the sealed key store (RON_ROOT_SECRET_FILE set) and print
 *       "identity <hex>" and "name <hex>": each key's seed XOR the 32-byte
 *       mask, computed byte by byte inside kms_key_export_to, so the test
 *       learns the seeds only masked.
 *   ron-zeroize-target run DATA_DIR CERT_PEM KEY_PEM [--leak-control]
 *       as above; reads "destroy" and "exit" lines on stdin and answers
 *       "live <pid>" and "destroyed". --leak-control reads the root secret
 *       file once more through stdio and frees it unwiped (a deliberate
 *       leak that the scan must find: proof that the test can fail).
 *
 * Invariants: the tool never copies a key itself (except the deliberate
 * leak); every wait on stdin or on the loop is bounded (a closed stdin
 * ends the process; the handshakes give up after ZT_LOOP_MAX turns).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "ron_err.h"
#include "ron_kms.h"
#include "ron_transport.h"
#include "tx_peer.h"

/* ---- limits ---- */
#define ZT_LOOP_MAX 2000  /* loop turns / handshake steps before giving up */
#define ZT_LINE_MAX 64    /* a command line on stdin */
#define ZT_LEAK_MAX 4096  /* bytes the leak control reads */

typedef struct {
    uv_loop_t loop;
    int sessions; /* on_session calls (2: both ends of the peer session) */
    int closed;   /* tx_peer_close callbacks */
} zt_t;

static zt_t zt;

static int
zt_fail(const char *what, int rc)
{
    fprintf(stderr, "ron-zeroize-target: %s: %s\n", what, rc < 0 ? ron_strerror(rc) : "failed");
    ERR_print_errors_fp(stderr);
    return 1;
}

/* Wait for `want` on stdin; false on EOF or anything else. */
static bool
zt_expect(const char *want)
{
    char line[ZT_LINE_MAX];

    if (fgets(line, sizeof line, stdin) == NULL)
        return false;
    line[strcspn(line, "\n")] = '\0';
    return strcmp(line, want) == 0;
}

/* ---- init: print each seed masked ---- */

typedef struct {
    const uint8_t *mask;
    char hex[2 * KMS_SEED_LEN + 1];
} zt_masked_t;

static int
zt_mask_cb(const uint8_t *seed, size_t len, void *arg)
{
    static const char digits[] = "0123456789abcdef";
    zt_masked_t *m = arg;

    for (size_t i = 0; i < len && i < KMS_SEED_LEN; i++) {
        unsigned v = (unsigned)(seed[i] ^ m->mask[i]);
        m->hex[2 * i] = digits[v >> 4];
        m->hex[2 * i + 1] = digits[v & 15];
    }
    m->hex[2 * KMS_SEED_LEN] = '\0';
    return 0;
}

static int
zt_init(const char *data_dir, const char *mask_hex)
{
    uint8_t mask[KMS_SEED_LEN];
    kms_keystore_t *ks = NULL;
    zt_masked_t m = {.mask = mask};
    char err[256];
    int rc;

    if (strlen(mask_hex) != 2 * KMS_SEED_LEN)
        return zt_fail("mask must be 64 hex digits", 0);
    for (size_t i = 0; i < 2 * KMS_SEED_LEN; i++) {
        char c = mask_hex[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return zt_fail("mask must be 64 lowercase hex digits", 0);
        mask[i / 2] = (uint8_t)(i % 2 == 0 ? v << 4 : mask[i / 2] | v);
    }
    if ((rc = kms_node_keys_open_or_create(data_dir, false, &ks, err, sizeof err)) < 0) {
        fprintf(stderr, "ron-zeroize-target: %s\n", err);
        return 1;
    }
    (void)kms_key_export_to(kms_keystore_identity(ks), zt_mask_cb, &m);
    printf("identity %s\n", m.hex);
    (void)kms_key_export_to(kms_keystore_name_key(ks, 0), zt_mask_cb, &m);
    printf("name %s\n", m.hex);
    kms_keystore_free(ks);
    return 0;
}

/* ---- run: use every key, stop, destroy, stop ---- */

/* One handshake of a client at TLS version `ver` with a server SSL of sctx,
 * through a BIO pair, then one record each way. */
static int
zt_https_handshake(SSL_CTX *sctx, int ver)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *srv = NULL, *cli = NULL;
    BIO *a = NULL, *b = NULL;
    char buf[16];
    int rc = 1, done = 0;

    if (cctx == NULL || SSL_CTX_set_min_proto_version(cctx, ver) != 1 ||
        SSL_CTX_set_max_proto_version(cctx, ver) != 1 || (srv = SSL_new(sctx)) == NULL ||
        (cli = SSL_new(cctx)) == NULL || BIO_new_bio_pair(&a, 0, &b, 0) != 1)
        goto out;
    SSL_set_bio(srv, a, a);
    SSL_set_bio(cli, b, b);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    for (int i = 0; i < ZT_LOOP_MAX && done != 3; i++) {
        if (!(done & 1) && SSL_do_handshake(cli) == 1)
            done |= 1;
        if (!(done & 2) && SSL_do_handshake(srv) == 1)
            done |= 2;
    }
    if (done != 3 || SSL_version(cli) != ver || SSL_write(cli, "ping", 4) != 4 ||
        SSL_read(srv, buf, sizeof buf) != 4 || SSL_write(srv, "pong", 4) != 4 ||
        SSL_read(cli, buf, sizeof buf) != 4)
        goto out;
    rc = 0;
out:
    SSL_free(cli);
    SSL_free(srv); /* each frees its end of the pair */
    SSL_CTX_free(cctx);
    return rc;
}

static void
zt_on_session(tx_peer_session_t *s, void *arg)
{
    (void)s, (void)arg;
    zt.sessions++;
}

static void
zt_on_closed(void *arg)
{
    (void)arg;
    zt.closed++;
}

/* Read the root secret file through stdio and free it unwiped: a leak. */
static void
zt_leak_secret(void)
{
    const char *path = getenv(KMS_ENV_SECRET_FILE);
    FILE *f = path != NULL ? fopen(path, "rb") : NULL;
    char *copy = malloc(ZT_LEAK_MAX);

    if (f != NULL && copy != NULL) {
        size_t n = fread(copy, 1, ZT_LEAK_MAX, f);
        fprintf(stderr, "ron-zeroize-target: leak control: %zu secret bytes left unwiped\n", n);
    }
    if (f != NULL)
        (void)fclose(f);
    free(copy); /* deliberately not wiped */
}

static int
zt_run(const char *data_dir, const char *cert, const char *key, bool leak)
{
    static const uint8_t msg[] = "ron-zeroize-target signs this";
    kms_keystore_t *ks = NULL, *other = NULL;
    tx_peer_t *pa = NULL, *pb = NULL;
    tx_peer_callbacks_t cb = {zt_on_session, NULL, NULL, NULL, NULL};
    tx_peer_config_t pcfg;
    tx_tls_config_t tcfg;
    tx_peer_session_t *s;
    SSL_CTX *ctx = NULL;
    kms_opts_t o;
    uint8_t sig[KMS_SIG_LEN];
    char err[256], addr[TX_ADDR_MAX];
    int rc;

    if ((rc = tx_tls_secure_heap_init()) < 0)
        return zt_fail("secure heap", rc);
    if (uv_loop_init(&zt.loop) < 0)
        return zt_fail("loop", 0);
    if ((rc = kms_node_keys_open_or_create(data_dir, false, &ks, err, sizeof err)) < 0) {
        fprintf(stderr, "ron-zeroize-target: %s\n", err);
        return 1;
    }
    if (kms_keystore_seal(ks) != KMS_SEAL_SECRET_FILE)
        return zt_fail("the key store is not sealed with the root secret file", 0);
    /* the signing keys sign (and the signatures verify) */
    if (kms_key_sign(kms_keystore_identity(ks), msg, sizeof msg, sig) < 0 ||
        kms_verify(kms_key_public(kms_keystore_identity(ks)), msg, sizeof msg, sig) < 0 ||
        kms_key_sign(kms_keystore_name_key(ks, 0), msg, sizeof msg, sig) < 0 ||
        kms_verify(kms_key_public(kms_keystore_name_key(ks, 0)), msg, sizeof msg, sig) < 0)
        return zt_fail("sign", 0);
    /* the HTTPS key: the SSL_CTX factory loads it; two handshakes sign with it */
    tx_tls_config_default(&tcfg);
    tcfg.cert_path = cert;
    tcfg.key_path = key;
    if ((rc = tx_tls_ctx_new(&tcfg, &ctx)) < 0)
        return zt_fail("HTTPS context", rc);
    if (zt_https_handshake(ctx, TLS1_3_VERSION) != 0 || zt_https_handshake(ctx, TLS1_2_VERSION) != 0)
        return zt_fail("HTTPS handshake", 0);
    /* the peer TLS key (the identity seed in OpenSSL's secure heap): a mutual TLS session */
    memset(&o, 0, sizeof o);
    o.amnesia = true;
    o.create = true;
    if (kms_keystore_open(&o, &other, err, sizeof err) < 0)
        return zt_fail(err, 0);
    tx_peer_config_default(&pcfg);
    if ((rc = tx_peer_new(&zt.loop, ks, &pcfg, &cb, &pa)) < 0 ||
        (rc = tx_peer_new(&zt.loop, other, &pcfg, &cb, &pb)) < 0 ||
        (rc = tx_peer_listen(pa, "127.0.0.1:0", addr, sizeof addr)) < 0 ||
        (rc = tx_peer_dial(pb, addr, tx_peer_node_id(pa), &s)) < 0)
        return zt_fail("peer endpoints", rc);
    for (int i = 0; i < ZT_LOOP_MAX && zt.sessions < 2; i++)
        (void)uv_run(&zt.loop, UV_RUN_ONCE);
    if (zt.sessions < 2)
        return zt_fail("peer session", 0);

    printf("live %ld\n", (long)getpid());
    (void)fflush(stdout);
    if (!zt_expect("destroy"))
        return zt_fail("expected \"destroy\" on stdin", 0);

    SSL_CTX_free(ctx);
    tx_peer_close(pa, zt_on_closed, NULL);
    tx_peer_close(pb, zt_on_closed, NULL);
    for (int i = 0; i < ZT_LOOP_MAX && zt.closed < 2; i++)
        (void)uv_run(&zt.loop, UV_RUN_NOWAIT);
    (void)uv_run(&zt.loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&zt.loop);
    kms_keystore_free(other);
    kms_keystore_free(ks);
    if (leak)
        zt_leak_secret();
    printf("destroyed\n");
    (void)fflush(stdout);
    (void)zt_expect("exit");
    return 0;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "init") == 0)
        return zt_init(argv[2], argv[3]);
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "run") == 0 &&
        (argc == 5 || strcmp(argv[5], "--leak-control") == 0))
        return zt_run(argv[2], argv[3], argv[4], argc == 6);
    fprintf(stderr, "usage: ron-zeroize-target init DATA_DIR MASK_HEX\n"
                    "       ron-zeroize-target run DATA_DIR CERT_PEM KEY_PEM [--leak-control]\n");
    return 2;
}
