/*
 * tx_tls.c - the one SSL_CTX factory of the project and the TLS record
 * layer of a connection. The factory pins the server's TLS settings (floor,
 * ciphers, ALPN, no compression, no renegotiation, no client certificate)
 * and loads or generates its ECDSA P-256 certificate; tests pin each of
 * these. The record layer is a server SSL over two memory BIOs: tx_conn.c
 * moves ciphertext between the socket and the BIOs, and plaintext between
 * the SSL and the protocol (HTTP/1.1, HTTP/2, later OAP/1), so TLS never
 * sees a socket and HTTP never sees a record.
 * Invariants: a generated key file is created 0600 under a temporary name
 * and renamed into place after fsync, so a crash never leaves a partial key
 * that a restart would load; an existing pair is reused, never overwritten;
 * private keys (generated, or read from a file) live in OpenSSL's secure
 * heap once tx_tls_secure_heap_init ran, and every buffer that held key
 * bytes is cleansed before it is freed (ours explicitly; OpenSSL's own
 * temporaries through the wiping allocator of tx_tls_heap_wipe_install,
 * which tests/integration/test_zeroize_scan.py proves by scanning a
 * process's memory); an ephemeral pair never leaves RAM.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "tx_internal.h"

/* TLS 1.2 suites: ECDHE with AEAD only (ECDSA for our certificate, RSA for a configured one). */
static const char tx_tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";
static const char tx_tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

static int tx_alpn_index = -1; /* SSL_CTX ex_data slot of the ALPN wire list */

void
tx_tls_config_default(tx_tls_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
}

/* "h2,http/1.1" -> wire format (length-prefixed). Returns the length, or 0 if invalid. */
static size_t
tx_alpn_wire(const char *list, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *p = list;

    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t l = e != NULL ? (size_t)(e - p) : strlen(p);
        if (l == 0 || l > 255 || n + 1 + l > cap)
            return 0;
        out[n++] = (uint8_t)l;
        for (size_t i = 0; i < l; i++) /* length-prefixed, not a C string */
            out[n++] = (uint8_t)p[i];
        p += l;
        if (*p == ',')
            p++;
    }
    return n;
}

static void
tx_alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

/* The first protocol of the server's list the client offers; none: no ALPN. */
static int
tx_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
               const unsigned char *in, unsigned int inlen, void *arg)
{
    const uint8_t *srv = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tx_alpn_index);

    (void)arg;
    if (srv == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 1; i < (size_t)srv[0] + 1;) {
        uint8_t sl = srv[i];
        const uint8_t *sp = srv + i + 1;
        for (unsigned j = 0; j < inlen;) {
            uint8_t cl = in[j];
            if (j + 1u + cl > inlen)
                break;
            if (cl == sl && memcmp(in + j + 1, sp, sl) == 0) {
                *out = sp;
                *outlen = sl;
                return SSL_TLSEXT_ERR_OK;
            }
            j += 1u + cl;
        }
        i += 1u + sl;
    }
    return SSL_TLSEXT_ERR_NOACK; /* browsers then speak HTTP/1.1; we sniff either way */
}

/* Write len bytes to dir/name atomically (tmp + fsync + rename) with mode. */
static int
tx_write_file_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    int fd, rc = 0;

    if ((size_t)snprintf(dst, sizeof dst, "%s/%s", dir, name) >= sizeof dst ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp)
        return RON_EINVAL;
    (void)unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, (const uint8_t *)data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0 || fchmod(fd, mode) < 0) {
        rc = -errno;
        goto out;
    }
out:
    close(fd);
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = -errno;
    if (rc < 0)
        (void)unlink(tmp);
    return rc;
}

/* PEM of a BIO-writing function into a malloc'd buffer. */
static int
tx_bio_take(BIO *b, char **out, size_t *len)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);

    if (n <= 0)
        return RON_ETLS;
    *out = ron_xmalloc((size_t)n);
    memcpy(*out, p, (size_t)n);
    *len = (size_t)n;
    return 0;
}

/* A new ECDSA P-256 key (its scalar in OpenSSL's secure heap when that is
 * initialized) and a self-signed certificate for host. */
static int
tx_tls_make(const char *host, EVP_PKEY **key_out, X509 **x_out)
{
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509_NAME *name;
    X509_EXTENSION *ext = NULL;
    char san[300];
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    int rc = RON_ETLS;

    if ((key = EVP_EC_gen("P-256")) == NULL || (x = X509_new()) == NULL)
        goto out;
    if (RAND_bytes(serial, sizeof serial) != 1)
        goto out;
    serial[0] &= 0x7f; /* a positive serial */
    if ((bn = BN_bin2bn(serial, sizeof serial, NULL)) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto out;
    if (X509_set_version(x, 2) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)TX_TLS_CERT_DAYS * 86400) == NULL ||
        X509_set_pubkey(x, key) != 1)
        goto out;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1)
        goto out;
    (void)snprintf(san, sizeof san, "DNS:%s,IP:127.0.0.1,IP:::1", host);
    if ((ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san)) == NULL ||
        X509_add_ext(x, ext, -1) != 1)
        goto out;
    if (X509_sign(x, key, EVP_sha256()) <= 0)
        goto out;
    *key_out = key;
    *x_out = x;
    key = NULL;
    x = NULL;
    rc = 0;
out:
    BN_free(bn);
    X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(key); /* frees the scalar with BN_clear_free */
    return rc;
}

/* Generate an ECDSA P-256 key and a self-signed certificate for host into dir. */
static int
tx_tls_generate(const char *dir, const char *host)
{
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    BIO *kb = NULL, *cb = NULL;
    char *kpem = NULL, *cpem = NULL;
    size_t klen = 0, clen = 0;
    int rc;

    if ((rc = tx_tls_make(host, &key, &x)) < 0)
        return rc;
    rc = RON_ETLS;
    if ((kb = BIO_new(BIO_s_secmem())) == NULL || (cb = BIO_new(BIO_s_mem())) == NULL ||
        PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_X509(cb, x) != 1 || tx_bio_take(kb, &kpem, &klen) < 0 ||
        tx_bio_take(cb, &cpem, &clen) < 0)
        goto out;
    /* the key first: a certificate without its key is never left behind */
    if ((rc = tx_write_file_atomic(dir, TX_TLS_KEY_FILE, kpem, klen, 0600)) < 0)
        goto out;
    rc = tx_write_file_atomic(dir, TX_TLS_CERT_FILE, cpem, clen, 0644);
out:
    if (kpem != NULL)
        OPENSSL_cleanse(kpem, klen);
    free(kpem);
    free(cpem);
    BIO_free(kb); /* a secure-memory BIO: its buffer is cleansed as it is freed */
    BIO_free(cb);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/*
 * Load the PEM private key at path into ctx. The file is read into
 * OpenSSL's secure heap (plain memory when it is not initialized) and
 * cleansed as it is freed; the decoded key's scalar lives in the secure
 * heap too. Returns 0, -errno, RON_ETOOBIG or RON_ETLS.
 */
static int
tx_tls_use_key_file(SSL_CTX *ctx, const char *path)
{
    struct stat st;
    EVP_PKEY *key = NULL;
    BIO *b = NULL;
    char *buf = NULL;
    size_t len = 0;
    int fd, rc = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > TX_TLS_KEY_FILE_MAX) {
        rc = RON_ETOOBIG;
        goto out;
    }
    if ((buf = OPENSSL_secure_malloc((size_t)st.st_size)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto out;
        }
        len += (size_t)n;
    }
    rc = RON_ETLS;
    if ((b = BIO_new_mem_buf(buf, (int)len)) == NULL ||
        (key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1)
        goto out;
    rc = 0;
out:
    close(fd);
    BIO_free(b);
    EVP_PKEY_free(key); /* ctx keeps its own reference */
    if (buf != NULL)
        OPENSSL_secure_clear_free(buf, (size_t)st.st_size);
    return rc;
}

/* OpenSSL's allocator (tx_tls_heap_wipe_install): libc's, with every block
 * wiped before it goes back. malloc_usable_size covers the whole block. */
static void *
tx_heap_malloc(size_t num, const char *file, int line)
{
    (void)file, (void)line;
    return malloc(num);
}

static void
tx_heap_free(void *addr, const char *file, int line)
{
    (void)file, (void)line;
    if (addr == NULL)
        return;
    OPENSSL_cleanse(addr, malloc_usable_size(addr));
    free(addr);
}

/* realloc never leaves the old block behind unwiped: move and wipe by hand */
static void *
tx_heap_realloc(void *addr, size_t num, const char *file, int line)
{
    void *p;
    size_t old;

    if (addr == NULL)
        return tx_heap_malloc(num, file, line);
    if (num == 0) {
        tx_heap_free(addr, file, line);
        return NULL;
    }
    old = malloc_usable_size(addr);
    if (num <= old)
        return addr; /* shrinking in place: the tail stays ours until the block is freed */
    if ((p = malloc(num)) == NULL)
        return NULL;
    memcpy(p, addr, old);
    tx_heap_free(addr, file, line);
    return p;
}

int
tx_tls_heap_wipe_install(void)
{
    static int installed;

    if (installed)
        return 0;
    if (CRYPTO_set_mem_functions(tx_heap_malloc, tx_heap_realloc, tx_heap_free) != 1) {
        ron_warn("transport: OpenSSL allocated before its heap could be made to wipe freed "
                 "blocks; key temporaries may stay in freed memory");
        return RON_ETLS;
    }
    installed = 1;
    return 0;
}

int
tx_tls_secure_heap_init(void)
{
    int rc;

    if (CRYPTO_secure_malloc_initialized())
        return 0;
    (void)tx_tls_heap_wipe_install(); /* warns when too late; the secure heap still helps */
    rc = CRYPTO_secure_malloc_init(TX_TLS_SECURE_HEAP, TX_TLS_SECURE_MIN);
    if (rc == 0)
        return RON_ETLS;
    if (rc == 2)
        ron_warn("transport: TLS secure heap not locked in RAM (RLIMIT_MEMLOCK); "
                 "keys may be swapped");
    return 0;
}

/* The certificate and key files in dir (paths into cpath and kpath), made
 * (a self-signed pair for host) when either is missing. Returns 0,
 * RON_EINVAL when a path does not fit, or the error of mkdir or generation. */
static int
tx_tls_dir_files(const char *dir, const char *host, char cpath[static PATH_MAX],
                 char kpath[static PATH_MAX])
{
    struct stat st;
    int rc;

    if ((size_t)snprintf(cpath, PATH_MAX, "%s/%s", dir, TX_TLS_CERT_FILE) >= PATH_MAX ||
        (size_t)snprintf(kpath, PATH_MAX, "%s/%s", dir, TX_TLS_KEY_FILE) >= PATH_MAX)
        return RON_EINVAL;
    if (stat(cpath, &st) == 0 && stat(kpath, &st) == 0)
        return 0;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    rc = tx_tls_generate(dir, host);
    return rc < 0 ? rc : 0;
}

/* The server policy of ctx: versions, ciphers, groups, options, no client
 * certificate, and the ALPN list (wire format, wlen bytes) the select
 * callback offers. Returns 0 or RON_ETLS. */
static int
tx_tls_ctx_setup(SSL_CTX *ctx, bool tls13_only, const uint8_t *wire, size_t wlen)
{
    uint8_t *alpn;

    if (SSL_CTX_set_min_proto_version(ctx, tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, tx_tls12_ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, tx_tls13_suites) != 1 ||
        SSL_CTX_set1_groups_list(ctx, "X25519:P-256") != 1)
        return RON_ETLS;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* HTTPS clients bring no certificate */
    alpn = ron_xmalloc(wlen + 1);
    alpn[0] = (uint8_t)wlen;
    memcpy(alpn + 1, wire, wlen);
    if (SSL_CTX_set_ex_data(ctx, tx_alpn_index, alpn) != 1) {
        free(alpn);
        return RON_ETLS;
    }
    SSL_CTX_set_alpn_select_cb(ctx, tx_alpn_select, NULL);
    return 0;
}

int
tx_tls_ctx_new(const tx_tls_config_t *cfg, SSL_CTX **out)
{
    SSL_CTX *ctx = NULL;
    EVP_PKEY *mkey = NULL; /* an ephemeral pair, made in memory */
    X509 *mx = NULL;
    char cpath[PATH_MAX], kpath[PATH_MAX];
    const char *cert = cfg->cert_path, *key = cfg->key_path;
    const char *host = cfg->hostname != NULL ? cfg->hostname : "localhost";
    uint8_t wire[512];
    size_t wlen;
    int rc = RON_EINVAL;

    *out = NULL;
    wlen = tx_alpn_wire(cfg->alpn != NULL ? cfg->alpn : TX_TLS_DEFAULT_ALPN, wire, sizeof wire);
    if (wlen == 0 || wlen > 255 || (cert == NULL) != (key == NULL) ||
        (cert == NULL && cfg->cert_dir == NULL && !cfg->ephemeral))
        goto out;
    if (cert == NULL && cfg->cert_dir == NULL) {
        if ((rc = tx_tls_make(host, &mkey, &mx)) < 0)
            goto out;
    } else if (cert == NULL) {
        if ((rc = tx_tls_dir_files(cfg->cert_dir, host, cpath, kpath)) < 0)
            goto out;
        cert = cpath;
        key = kpath;
    }
    rc = RON_ETLS;
    if (tx_alpn_index < 0)
        tx_alpn_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tx_alpn_free);
    if (tx_alpn_index < 0 || (ctx = SSL_CTX_new(TLS_server_method())) == NULL)
        goto out;
    if (tx_tls_ctx_setup(ctx, cfg->tls13_only, wire, wlen) < 0)
        goto out;
    if (mkey != NULL) {
        if (SSL_CTX_use_certificate(ctx, mx) != 1 || SSL_CTX_use_PrivateKey(ctx, mkey) != 1)
            goto out;
    } else if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
               (rc = tx_tls_use_key_file(ctx, key)) < 0) {
        rc = rc < 0 ? rc : RON_ETLS;
        goto out;
    }
    rc = RON_ETLS;
    if (SSL_CTX_check_private_key(ctx) != 1)
        goto out;
    *out = ctx;
    ctx = NULL;
    rc = 0;
out:
    if (rc == RON_ETLS) {
        char why[256];
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        ron_warn("transport: TLS context refused: %s", why);
    }
    SSL_CTX_free(ctx);
    X509_free(mx);
    EVP_PKEY_free(mkey); /* ctx keeps its own reference */
    ERR_clear_error();
    return rc;
}

/* ---- the record layer ---- */

SSL *
tx__tls_ssl_new(SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    BIO *rb, *wb;

    if (ssl == NULL)
        return NULL;
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        return NULL;
    }
    BIO_set_mem_eof_return(rb, -1); /* empty: "retry", not EOF */
    SSL_set_bio(ssl, rb, wb);
    SSL_set_accept_state(ssl);
    return ssl;
}

void
tx__tls_take_output(SSL *ssl, tx_buf_t *out)
{
    BIO *wb = SSL_get_wbio(ssl);
    size_t n;

    while ((n = BIO_ctrl_pending(wb)) > 0) {
        tx__buf_reserve(out, n);
        int got = BIO_read(wb, out->p + out->len, (int)n);
        if (got <= 0)
            break;
        out->len += (size_t)got;
    }
}

int
tx__tls_encrypt(SSL *ssl, const uv_buf_t *bufs, unsigned nbufs, tx_buf_t *out)
{
    for (unsigned i = 0; i < nbufs; i++) {
        if (bufs[i].len == 0)
            continue;
        /* a memory BIO never blocks: the whole buffer becomes records */
        if (SSL_write(ssl, bufs[i].base, (int)bufs[i].len) != (int)bufs[i].len) {
            ERR_clear_error();
            return RON_ETLS;
        }
        tx__tls_take_output(ssl, out);
    }
    return 0;
}

tx_tls_fail_t
tx__tls_fail_reason(int ssl_err, unsigned long err)
{
    if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
        return TX_TLS_FAIL_EOF;
    if (ERR_GET_LIB(err) != ERR_LIB_SSL)
        return TX_TLS_FAIL_OTHER;
    switch (ERR_GET_REASON(err)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_VERSION_TOO_LOW:
        return TX_TLS_FAIL_VERSION;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
        return TX_TLS_FAIL_CIPHER;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
        return TX_TLS_FAIL_PLAINTEXT;
    default:
        return TX_TLS_FAIL_OTHER;
    }
}
