/*
 * tx_peer.c - OAP/1 peer sessions over mutually authenticated TLS 1.3
 * (tx_peer.h; docs/protocol/peer-transport.md).
 *
 * A session is a TCP handle, an SSL over this file's own BIO pair, an
 * OAP/1 decoder and a stream table. The BIOs copy nothing on their own: the
 * SSL reads ciphertext straight out of the socket's read buffer (only what
 * is left when reading pauses is kept, in the session's hold buffer), and
 * writes its records straight into the write buffer that goes to uv_write.
 * Plaintext comes out into the decoder's buffer and whole frames go to the
 * application. Output frames are encrypted at once, the header in the same
 * TLS record as the start of the payload, and each batch of records is one
 * uv_write whose bytes count in the session's queue until its callback.
 * Invariants: a peer's id is only ever taken from the key of a certificate
 * that the TLS 1.3 CertificateVerify proved the peer holds; no frame reaches
 * the application before TLS, the id check, ALPN and HELLO all passed; the
 * identity seed is copied only into OpenSSL's secure heap (a PKCS#8 DER
 * that is cleansed, then the decoded key); session resumption and tickets are off, so
 * every connection proves its key again; a session's memory is freed only
 * in the last close callback of its handles; queued_total is the sum of the
 * sessions' queued bytes (both change in tx_peer_flush and
 * tx_peer_write_done only).
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"
#include "tx_peer.h"

#define TX_PEER_READ_BUF (64u << 10)     /* one socket read (shared by every session of the loop) */
#define TX_PEER_REC 16384u               /* TLS record plaintext, at most (SSL3_RT_MAX_PLAIN_LENGTH) */
#define TX_PEER_HOLD_MAX (4u * TX_PEER_READ_BUF) /* ciphertext kept across reads, at most */
#define TX_PEER_HELLO_CORR 1u            /* corr_id of the dialer's HELLO */
#define TX_PEER_CTRL_MAX 2048u           /* HELLO, its reply, error and credit frames fit */
#define TX_PEER_WBUF (OAP_CHUNK + 4096u) /* a write buffer: a 64 KiB frame's records fit */
#define TX_PEER_WBUF_CACHE                                                                         \
    16u /* spare write buffers kept per endpoint: freeing and                                      \
           re-faulting 64 KiB blocks cost a quarter of a transfer's CPU */
#define TX_PEER_TRIM_MIN (1u << 20) /* a sweep that released this much trims the heap */

static const char tx_peer_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const unsigned char tx_peer_alpn_wire[] = "\x05oap/1";

typedef enum {
    TX_PS_CONNECTING, /* dialer: TCP connect in progress */
    TX_PS_TLS,        /* TLS handshake */
    TX_PS_HELLO,      /* authenticated; waiting for HELLO (listener) or its reply (dialer) */
    TX_PS_OPEN,       /* frames flow */
    TX_PS_CLOSING     /* handles closing; nothing more happens */
} tx_ps_state_t;

struct tx_peer_session {
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake deadline, then idle / slow-peer checks */
    uv_connect_t connect;
    tx_peer_t *p;
    tx_peer_session_t *prev, *next;
    SSL *ssl;
    tx_ps_state_t state;
    bool dialer;
    bool reported;      /* on_session ran: on_close is owed */
    bool app_paused;    /* tx_peer_session_pause(true) */
    bool bp_paused;     /* our output to this peer is over max_queue */
    bool want_writable; /* a send met a full queue: call on_writable on drain */
    bool want_credit;   /* a send met a stream without credit: on_writable on a grant */
    bool linger;        /* close once the queue is written */
    bool in_pump;       /* frames are being delivered (no nested delivery) */
    bool cert_ok;       /* the verify callback accepted the certificate */
    bool streams_ready;
    bool rx_recent;     /* input arrived since the last sweep */
    bool ssl_released;  /* OpenSSL's buffers were freed by a sweep (until the next I/O) */
    int reject;                       /* tx_peer_reject_t found by a TLS callback, or -1 */
    int linger_rc;                    /* reason reported when a lingering close ends */
    int handles;                      /* open libuv handles; freed at 0 */
    uint8_t want_id[KMS_NODE_ID_LEN]; /* dialer: the id we mean to reach */
    uint8_t id[KMS_NODE_ID_LEN];      /* the peer's id, once proven */
    uint32_t max_frame;               /* negotiated */
    uint32_t max_inflight;            /* streams this side may open */
    oap_decoder_t dec;
    oap_streams_t streams;
    size_t queued;       /* ciphertext bytes handed to uv_write, not yet completed */
    uint64_t last_rx;    /* ms (uv_now) of the last frame received */
    uint64_t full_since; /* ms when the queue went over max_queue; 0 = not full */
    void *data;
    struct tx_peer_wreq *wcur; /* records the SSL wrote, not yet handed to uv_write */
    int werr;                  /* a uv_write error met inside the SSL's write */
    const uint8_t *in;         /* ciphertext not yet read by the SSL: a view of the */
    size_t in_len;             /* endpoint's read buffer during a read, else of hold */
    uint8_t *hold;             /* ciphertext kept across reads (input left while paused) */
    size_t hold_cap;
};

typedef struct tx_peer_listener {
    uv_tcp_t tcp;
    tx_peer_t *p;
    struct tx_peer_listener *next;
} tx_peer_listener_t;

struct tx_peer {
    uv_loop_t *loop;
    tx_peer_config_t cfg;
    char ua[TX_PEER_UA_MAX + 1];
    tx_peer_callbacks_t cb;
    SSL_CTX *srv_ctx; /* listener side: requires a client certificate */
    SSL_CTX *cli_ctx; /* dialer side: offers ALPN oap/1 only */
    uint8_t id[KMS_NODE_ID_LEN];
    tx_peer_listener_t *listeners;
    tx_peer_session_t *sessions;
    tx_peer_stats_t stats;
    unsigned pending; /* listeners and sessions whose handles are open */
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    struct tx_peer_wreq *wfree; /* spare write buffers of TX_PEER_WBUF bytes */
    unsigned n_wfree;           /* <= TX_PEER_WBUF_CACHE */
    size_t queued_total;        /* every session's queued bytes */
    bool budget_wait;           /* a send met a full budget: on_writable owed on relief */
    bool tx_recent;             /* something was written since the last sweep */
    uv_timer_t sweep;           /* releases idle sessions' buffers (unreferenced) */
    BIO_METHOD *bio_meth;       /* the sessions' BIOs (tx_peer_bio_*; one per process) */
    uint8_t stage[TX_PEER_REC]; /* a frame's header and first payload bytes: one record */
    uint8_t rbuf[TX_PEER_READ_BUF];
};

typedef struct tx_peer_wreq {
    uv_write_t req;
    size_t len;
    size_t cap;                     /* bytes of data */
    struct tx_peer_wreq *next_free; /* in tx_peer_t.wfree */
    uint8_t data[];
} tx_peer_wreq_t;

static void tx_peer_pump(tx_peer_session_t *s);
static int tx_peer_bio_attach(tx_peer_session_t *s);
static BIO_METHOD *tx_peer_bio_method(void);
static void tx_peer_wreq_put(tx_peer_t *p, struct tx_peer_wreq *w);
static void tx_peer_end(tx_peer_session_t *s, int rc);
static void tx_peer_sweep_cb(uv_timer_t *t);

const char *
tx_peer_reject_name(tx_peer_reject_t r)
{
    static const char *const names[TX_PEER_REJ__COUNT] = {
        [TX_PEER_REJ_WRONG_ID] = "wrong_id",
        [TX_PEER_REJ_NO_CERT] = "no_cert",
        [TX_PEER_REJ_BAD_CERT] = "bad_cert",
        [TX_PEER_REJ_BAD_ALPN] = "bad_alpn",
        [TX_PEER_REJ_TLS] = "tls",
        [TX_PEER_REJ_HANDSHAKE_TIMEOUT] = "handshake_timeout",
        [TX_PEER_REJ_TOO_MANY_CONNS] = "too_many_conns",
        [TX_PEER_REJ_PER_PEER_LIMIT] = "per_peer_limit",
        [TX_PEER_REJ_PROTO_MISMATCH] = "proto_mismatch",
        [TX_PEER_REJ_PROTOCOL] = "protocol",
        [TX_PEER_REJ_IDLE_TIMEOUT] = "idle_timeout",
        [TX_PEER_REJ_SLOW_PEER] = "slow_peer",
        [TX_PEER_REJ_SELF] = "self",
    };
    if ((unsigned)r >= TX_PEER_REJ__COUNT)
        return "unknown";
    return names[r];
}

void
tx_peer_config_default(tx_peer_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
}

/* The error a reject reason reports to on_close. */
static int
tx_peer_reject_rc(tx_peer_reject_t r)
{
    switch (r) {
    case TX_PEER_REJ_WRONG_ID:
        return RON_EPEERID;
    case TX_PEER_REJ_NO_CERT:
    case TX_PEER_REJ_BAD_CERT:
        return RON_EPEERCERT;
    case TX_PEER_REJ_BAD_ALPN:
        return RON_EALPN;
    case TX_PEER_REJ_HANDSHAKE_TIMEOUT:
    case TX_PEER_REJ_IDLE_TIMEOUT:
        return RON_ETIMEOUT;
    case TX_PEER_REJ_TOO_MANY_CONNS:
        return RON_EBUSY;
    case TX_PEER_REJ_PER_PEER_LIMIT:
        return RON_EPEERLIMIT;
    case TX_PEER_REJ_PROTO_MISMATCH:
        return RON_EVERSION;
    case TX_PEER_REJ_PROTOCOL:
        return RON_EPROTO;
    case TX_PEER_REJ_SLOW_PEER:
        return RON_EFLOOD;
    case TX_PEER_REJ_SELF:
        return RON_EPEERSELF;
    default:
        return RON_ETLS;
    }
}

/* Count a reject and end the session with its error. */
static void
tx_peer_reject(tx_peer_session_t *s, tx_peer_reject_t r)
{
    if (s->state == TX_PS_CLOSING)
        return;
    s->p->stats.rejects[r]++;
    tx_peer_end(s, tx_peer_reject_rc(r));
}

/* ---- certificates and contexts ---- */

/* RFC 8410 PrivateKeyInfo of an Ed25519 key: this prefix, then the 32-byte seed. */
static const uint8_t tx_peer_pkcs8_prefix[16] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
                                                 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20};

static int
tx_peer_seed_cb(const uint8_t *seed, size_t len, void *arg)
{
    EVP_PKEY **key = arg;
    size_t n = sizeof tx_peer_pkcs8_prefix + len;
    uint8_t *der = OPENSSL_secure_malloc(n);
    const unsigned char *p = der;

    /* Decoded from DER the seed lands in OpenSSL's secure heap: OpenSSL 3.0's
     * EVP_PKEY_new_raw_private_key would keep it in plain heap memory
     * (OSSL_PARAM_get_octet_string allocates it there). The DER is built in
     * the secure heap and cleansed; the decoder's temporaries are wiped as
     * they are freed (tx_tls_heap_wipe_install). */
    if (der == NULL || len != 32)
        goto out;
    memcpy(der, tx_peer_pkcs8_prefix, sizeof tx_peer_pkcs8_prefix);
    memcpy(der + sizeof tx_peer_pkcs8_prefix, seed, len);
    *key = d2i_PrivateKey(EVP_PKEY_ED25519, NULL, &p, (long)n);
out:
    OPENSSL_secure_clear_free(der, n);
    return *key != NULL ? 0 : RON_ETLS;
}

/* A self-signed certificate for key, CN = the node id in hex, and the id
 * again as a URI subject alternative name (ron:node:<hex>): X.509 clients
 * and scanners expect a SAN; peers read only the key. */
static int
tx_peer_cert_make(EVP_PKEY *key, const uint8_t id[static KMS_NODE_ID_LEN], X509 **x_out)
{
    static const char hex[] = "0123456789abcdef";
    char cn[2 * KMS_NODE_ID_LEN + 1], san[2 * KMS_NODE_ID_LEN + 16];
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    X509_EXTENSION *ext = NULL;
    X509 *x = NULL;
    X509_NAME *name;
    int rc = RON_ETLS;

    for (size_t i = 0; i < KMS_NODE_ID_LEN; i++) {
        cn[2 * i] = hex[id[i] >> 4];
        cn[2 * i + 1] = hex[id[i] & 15];
    }
    cn[2 * KMS_NODE_ID_LEN] = '\0';
    if ((x = X509_new()) == NULL || RAND_bytes(serial, sizeof serial) != 1)
        goto out;
    serial[0] &= 0x7f;
    if ((bn = BN_bin2bn(serial, sizeof serial, NULL)) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto out;
    if (X509_set_version(x, 2) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)TX_PEER_CERT_DAYS * 86400) == NULL ||
        X509_set_pubkey(x, key) != 1)
        goto out;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1)
        goto out;
    (void)snprintf(san, sizeof san, "URI:ron:node:%s", cn);
    if ((ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san)) == NULL ||
        X509_add_ext(x, ext, -1) != 1 || X509_sign(x, key, NULL) <= 0)
        goto out;
    *x_out = x;
    x = NULL;
    rc = 0;
out:
    X509_EXTENSION_free(ext);
    BN_free(bn);
    X509_free(x);
    return rc;
}

/*
 * Check a peer's leaf certificate: an Ed25519 key, a valid self-signature,
 * and (dialer) BLAKE3 of the key equal to the id we dialed. Sets s->id.
 * Returns -1 (accepted) or the reject reason (>= 0).
 */
static int
tx_peer_cert_check(tx_peer_session_t *s, X509 *x)
{
    EVP_PKEY *pk = X509_get0_pubkey(x);
    uint8_t raw[KMS_PK_LEN], id[KMS_NODE_ID_LEN];
    size_t len = sizeof raw;

    if (pk == NULL || EVP_PKEY_get_id(pk) != EVP_PKEY_ED25519 ||
        EVP_PKEY_get_raw_public_key(pk, raw, &len) != 1 || len != KMS_PK_LEN ||
        X509_verify(x, pk) != 1)
        return TX_PEER_REJ_BAD_CERT;
    kms_node_id_of(raw, id);
    if (s->dialer && memcmp(id, s->want_id, sizeof id) != 0)
        return TX_PEER_REJ_WRONG_ID;
    memcpy(s->id, id, sizeof id);
    return -1;
}

/* Accept "self-signed" and ignore dates: the only trust is the key's hash. */
static int
tx_peer_verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    tx_peer_session_t *s = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    int r;

    (void)preverify_ok;
    if (s == NULL) /* defensive: every SSL of this file carries its session */
        return 0;
    if (X509_STORE_CTX_get_error_depth(xs) != 0)
        return 1; /* extra chain certificates carry no trust here */
    if (s->cert_ok)
        return 1;
    r = tx_peer_cert_check(s, X509_STORE_CTX_get_current_cert(xs));
    if (r >= 0) {
        s->reject = r;
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    s->cert_ok = true;
    return 1;
}

/* Listener: select "oap/1" or fail the handshake with no_application_protocol. */
static int
tx_peer_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned int inlen, void *arg)
{
    tx_peer_session_t *s = SSL_get_app_data(ssl);

    (void)arg;
    for (unsigned j = 0; j < inlen;) {
        unsigned l = in[j];
        if (j + 1 + l > inlen)
            break;
        if (l == sizeof tx_peer_alpn_wire - 2 && memcmp(in + j + 1, TX_PEER_ALPN, l) == 0) {
            *out = in + j + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        j += 1 + l;
    }
    if (s != NULL)
        s->reject = TX_PEER_REJ_BAD_ALPN;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* TLS 1.3 only, mutual authentication, no resumption, our key and certificate. */
static SSL_CTX *
tx_peer_ctx_new(bool server, EVP_PKEY *key, X509 *x)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, tx_peer_suites) != 1 ||
        SSL_CTX_set1_groups_list(ctx, "X25519:P-256") != 1 ||
        SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, tx_peer_verify_cb);
    if (server) {
        if (SSL_CTX_set_num_tickets(ctx, 0) != 1)
            goto fail;
        SSL_CTX_set_alpn_select_cb(ctx, tx_peer_alpn_select, NULL);
    } else if (SSL_CTX_set_alpn_protos(ctx, tx_peer_alpn_wire, sizeof tx_peer_alpn_wire - 1) !=
               0) { /* 0 is success here */
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int
tx_peer_new(uv_loop_t *loop, const kms_keystore_t *ks, const tx_peer_config_t *cfg,
            const tx_peer_callbacks_t *cb, tx_peer_t **p_out)
{
    tx_peer_t *p = NULL;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    int rc;

    *p_out = NULL;
    if (loop == NULL || ks == NULL || cfg == NULL ||
        kms_key_alg(kms_keystore_identity(ks)) != KMS_ALG_ED25519)
        return RON_EINVAL;
    p = ron_xcalloc(1, sizeof *p);
    p->loop = loop;
    p->cfg = *cfg;
    if (cb != NULL)
        p->cb = *cb;
#define TX_PEER_DEF(f, v)                                                                          \
    if (p->cfg.f == 0)                                                                             \
    p->cfg.f = (v)
    TX_PEER_DEF(max_conns, TX_PEER_DEFAULT_MAX_CONNS);
    TX_PEER_DEF(max_per_peer, TX_PEER_DEFAULT_MAX_PER_PEER);
    TX_PEER_DEF(max_inflight, OAP_MAX_INFLIGHT);
    TX_PEER_DEF(max_frame, OAP_MAX_FRAME);
    TX_PEER_DEF(handshake_ms, TX_PEER_DEFAULT_HANDSHAKE_MS);
    TX_PEER_DEF(idle_ms, TX_PEER_DEFAULT_IDLE_MS);
    TX_PEER_DEF(write_timeout_ms, TX_PEER_DEFAULT_WRITE_TIMEOUT_MS);
    TX_PEER_DEF(max_queue, TX_PEER_DEFAULT_MAX_QUEUE);
    TX_PEER_DEF(max_queue_hard, TX_PEER_DEFAULT_MAX_QUEUE_HARD);
    TX_PEER_DEF(max_queue_total, TX_PEER_DEFAULT_MAX_QUEUE_TOTAL);
#undef TX_PEER_DEF
    rc = RON_EINVAL;
    if (p->cfg.max_queue_hard < p->cfg.max_queue || p->cfg.max_queue_total < p->cfg.max_queue ||
        p->cfg.max_frame > OAP_MAX_FRAME ||
        p->cfg.max_frame < OAP_MIN_MAX_FRAME)
        goto out;
    (void)snprintf(p->ua, sizeof p->ua, "%s", cfg->ua != NULL ? cfg->ua : "ron-c");
    p->cfg.ua = p->ua;
    kms_keystore_node_id(ks, p->id);
    rc = RON_ETLS;
    if (kms_key_export_to(kms_keystore_identity(ks), tx_peer_seed_cb, &key) < 0 || key == NULL)
        goto out;
    if ((p->bio_meth = tx_peer_bio_method()) == NULL || tx_peer_cert_make(key, p->id, &x) < 0 ||
        (p->srv_ctx = tx_peer_ctx_new(true, key, x)) == NULL ||
        (p->cli_ctx = tx_peer_ctx_new(false, key, x)) == NULL)
        goto out;
    (void)uv_timer_init(loop, &p->sweep);
    p->sweep.data = p;
    (void)uv_timer_start(&p->sweep, tx_peer_sweep_cb, TX_PEER_RELEASE_MS, TX_PEER_RELEASE_MS);
    uv_unref((uv_handle_t *)&p->sweep); /* never keeps a loop alive by itself */
    p->pending++;                       /* until tx_peer_close closes it */
    *p_out = p;
    p = NULL;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(key); /* the contexts keep their references */
    if (p != NULL) {
        SSL_CTX_free(p->srv_ctx);
        SSL_CTX_free(p->cli_ctx);
        free(p);
    }
    ERR_clear_error();
    return rc;
}

const tx_peer_stats_t *
tx_peer_stats(const tx_peer_t *p)
{
    return &p->stats;
}

const uint8_t *
tx_peer_node_id(const tx_peer_t *p)
{
    return p->id;
}

/* ---- session lifecycle ---- */

static void
tx_peer_maybe_free(tx_peer_t *p)
{
    if (!p->closing || p->pending > 0)
        return;
    void (*cb)(void *) = p->close_cb;
    void *arg = p->close_arg;
    while (p->wfree != NULL) {
        tx_peer_wreq_t *w = p->wfree;
        p->wfree = w->next_free;
        free(w);
    }
    SSL_CTX_free(p->srv_ctx);
    SSL_CTX_free(p->cli_ctx);
    free(p);
    if (cb != NULL)
        cb(arg);
}

static void
tx_peer_handle_closed(uv_handle_t *h)
{
    tx_peer_session_t *s = h->data;
    tx_peer_t *p = s->p;

    if (--s->handles > 0)
        return;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        p->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    SSL_free(s->ssl);
    if (s->wcur != NULL)
        tx_peer_wreq_put(p, s->wcur);
    free(s->hold);
    oap_decoder_close(&s->dec);
    if (s->streams_ready)
        oap_streams_close(&s->streams);
    free(s);
    p->pending--;
    tx_peer_maybe_free(p);
}

/* End s now: tell the application (when it knows the session), close handles. */
static void
tx_peer_end(tx_peer_session_t *s, int rc)
{
    tx_peer_t *p = s->p;

    if (s->state == TX_PS_CLOSING)
        return;
    s->state = TX_PS_CLOSING;
    p->stats.open--;
    (void)uv_read_stop((uv_stream_t *)&s->tcp);
    if ((s->dialer || s->reported) && p->cb.on_close != NULL)
        p->cb.on_close(s, rc, p->cb.arg);
    uv_close((uv_handle_t *)&s->timer, tx_peer_handle_closed);
    uv_close((uv_handle_t *)&s->tcp, tx_peer_handle_closed);
}

/* Stop reading and end s with rc once what is queued has been written. */
static void
tx_peer_linger(tx_peer_session_t *s, int rc)
{
    if (s->state == TX_PS_CLOSING || s->linger)
        return;
    s->linger = true;
    s->linger_rc = rc;
    (void)uv_read_stop((uv_stream_t *)&s->tcp);
    if (s->queued == 0)
        tx_peer_end(s, rc);
}

static tx_peer_session_t *
tx_peer_session_new(tx_peer_t *p, bool dialer)
{
    tx_peer_session_t *s = ron_xcalloc(1, sizeof *s);

    s->p = p;
    s->dialer = dialer;
    s->reject = -1;
    s->max_frame = p->cfg.max_frame;
    (void)uv_tcp_init(p->loop, &s->tcp);
    (void)uv_timer_init(p->loop, &s->timer);
    s->tcp.data = s;
    s->timer.data = s;
    s->handles = 2;
    oap_decoder_init(&s->dec, p->cfg.max_frame);
    s->next = p->sessions;
    if (p->sessions != NULL)
        p->sessions->prev = s;
    p->sessions = s;
    p->pending++;
    p->stats.open++;
    s->ssl = tx__tls_ssl_new(dialer ? p->cli_ctx : p->srv_ctx);
    if (s->ssl != NULL && tx_peer_bio_attach(s) < 0) {
        SSL_free(s->ssl);
        s->ssl = NULL; /* the callers end the session as RON_ETLS */
    }
    if (s->ssl != NULL) {
        SSL_set_app_data(s->ssl, s);
        if (dialer)
            SSL_set_connect_state(s->ssl);
    }
    return s;
}

/* Sessions open or opening with id (a dial counts under the id it expects). */
static uint32_t
tx_peer_count_id(const tx_peer_t *p, const uint8_t id[static KMS_NODE_ID_LEN],
                 const tx_peer_session_t *except)
{
    uint32_t n = 0;

    for (const tx_peer_session_t *s = p->sessions; s != NULL; s = s->next) {
        if (s == except || s->state == TX_PS_CLOSING)
            continue;
        if (s->dialer ? memcmp(s->want_id, id, KMS_NODE_ID_LEN) == 0
                      : s->state >= TX_PS_HELLO && memcmp(s->id, id, KMS_NODE_ID_LEN) == 0)
            n++;
    }
    return n;
}

/* ---- output ---- */

static tx_peer_wreq_t *
tx_peer_wreq_get(tx_peer_t *p, size_t n)
{
    tx_peer_wreq_t *w = p->wfree;

    if (n <= TX_PEER_WBUF && w != NULL) {
        p->wfree = w->next_free;
        p->n_wfree--;
        return w;
    }
    size_t cap = n < TX_PEER_WBUF ? TX_PEER_WBUF : n;
    w = ron_xmalloc(sizeof *w + cap);
    w->cap = cap;
    return w;
}

static void
tx_peer_wreq_put(tx_peer_t *p, tx_peer_wreq_t *w)
{
    if (w->cap != TX_PEER_WBUF || p->n_wfree >= TX_PEER_WBUF_CACHE) {
        free(w);
        return;
    }
    w->next_free = p->wfree;
    p->wfree = w;
    p->n_wfree++;
}

static void tx_peer_arm_timer(tx_peer_session_t *s);
static void tx_peer_read_start(tx_peer_session_t *s);

/* Stop reading from s: its output is not being taken (a slow peer); its
 * write_timeout_ms clock starts. */
static void
tx_peer_slow_pause(tx_peer_session_t *s)
{
    s->bp_paused = true;
    s->p->stats.read_pauses++;
    (void)uv_read_stop((uv_stream_t *)&s->tcp);
    if (s->full_since == 0) {
        s->full_since = uv_now(s->p->loop);
        if (s->state == TX_PS_OPEN)
            tx_peer_arm_timer(s);
    }
}

/* The node's budget is full: every session whose bytes the kernel does not
 * take is a slow peer (paused now, dropped after write_timeout_ms unless it
 * drains); the others drain by themselves. */
static void
tx_peer_budget_squeeze(tx_peer_t *p)
{
    for (tx_peer_session_t *s = p->sessions; s != NULL; s = s->next)
        if (s->state == TX_PS_OPEN && !s->bp_paused &&
            uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) > 0)
            tx_peer_slow_pause(s);
}

/* Queued bytes fell: once the total is back under half the budget, the
 * sessions whose sends it refused may write again. */
static void
tx_peer_budget_relief(tx_peer_t *p)
{
    if (!p->budget_wait || p->queued_total > p->cfg.max_queue_total / 2)
        return;
    p->budget_wait = false;
    /* sessions are unlinked only in close callbacks, never during this walk */
    for (tx_peer_session_t *s = p->sessions; s != NULL; s = s->next) {
        if (s->state != TX_PS_OPEN || s->linger || !s->want_writable ||
            s->queued > p->cfg.max_queue / 2)
            continue;
        s->want_writable = false;
        if (p->cb.on_writable != NULL)
            p->cb.on_writable(s, p->cb.arg);
    }
}

static void
tx_peer_write_done(uv_write_t *req, int status)
{
    tx_peer_wreq_t *w = (tx_peer_wreq_t *)req;
    tx_peer_session_t *s = req->handle->data;
    tx_peer_t *p = s->p;

    s->queued -= w->len;
    p->queued_total -= w->len;
    p->stats.queued = p->queued_total;
    tx_peer_wreq_put(p, w);
    tx_peer_budget_relief(p);
    if (s->state == TX_PS_CLOSING)
        return;
    if (status < 0) {
        tx_peer_end(s, status);
        return;
    }
    if (s->linger) {
        if (s->queued == 0)
            tx_peer_end(s, s->linger_rc);
        return;
    }
    if (s->bp_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) <= p->cfg.max_queue / 4) {
        s->bp_paused = false;
        s->full_since = 0;
        tx_peer_read_start(s);
        tx_peer_pump(s); /* input that waited in the SSL while we were paused */
        if (s->state == TX_PS_CLOSING)
            return;
    }
    if (s->want_writable && s->queued <= p->cfg.max_queue / 2 && s->state == TX_PS_OPEN) {
        s->want_writable = false;
        if (p->cb.on_writable != NULL)
            p->cb.on_writable(s, p->cb.arg);
    }
}

/* Hand the records the SSL produced to the socket. Returns 0 or a libuv error. */
static int
tx_peer_flush(tx_peer_session_t *s)
{
    tx_peer_wreq_t *w = s->wcur;
    uv_buf_t b;
    int rc;

    if (s->werr < 0)
        return s->werr;
    if (w == NULL)
        return 0;
    s->wcur = NULL;
    b = uv_buf_init((char *)w->data, (unsigned)w->len);
    if ((rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, tx_peer_write_done)) < 0) {
        tx_peer_wreq_put(s->p, w);
        s->werr = rc;
        return rc;
    }
    s->queued += w->len;
    s->p->queued_total += w->len;
    s->p->stats.queued = s->p->queued_total;
    s->p->tx_recent = true;
    s->ssl_released = false;
    /* bytes the kernel has not taken: the peer is not reading */
    if (!s->bp_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) >= s->p->cfg.max_queue / 2)
        tx_peer_slow_pause(s); /* stop taking its input until it reads ours */
    return 0;
}

/* ---- the sessions' BIOs: the SSL's ciphertext without copies of our own ---- */

/* The SSL's records go straight into the write buffer that uv_write takes. */
static int
tx_peer_bio_write(BIO *b, const char *in, int inl)
{
    tx_peer_session_t *s = BIO_get_data(b);
    tx_peer_wreq_t *w;

    BIO_clear_retry_flags(b);
    if (s == NULL || inl <= 0)
        return inl < 0 ? -1 : 0;
    if (s->wcur != NULL && s->wcur->cap - s->wcur->len < (size_t)inl && tx_peer_flush(s) < 0)
        return -1; /* the socket failed: the SSL call fails, the caller ends the session */
    if (s->wcur == NULL) {
        s->wcur = tx_peer_wreq_get(s->p, (size_t)inl);
        s->wcur->len = 0;
    }
    w = s->wcur;
    memcpy(w->data + w->len, in, (size_t)inl);
    w->len += (size_t)inl;
    return inl;
}

/* The SSL reads ciphertext from the socket's buffer (or hold): "retry" when empty. */
static int
tx_peer_bio_read(BIO *b, char *out, int outl)
{
    tx_peer_session_t *s = BIO_get_data(b);
    size_t n;

    BIO_clear_retry_flags(b);
    if (s == NULL || outl <= 0)
        return 0;
    if (s->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    n = s->in_len < (size_t)outl ? s->in_len : (size_t)outl;
    memcpy(out, s->in, n);
    s->in += n;
    s->in_len -= n;
    return (int)n;
}

static long
tx_peer_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    tx_peer_session_t *s = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING: /* ciphertext the SSL may still read */
        return s != NULL && SSL_get_rbio(s->ssl) == b ? (long)s->in_len : 0;
    case BIO_CTRL_WPENDING:
        return s != NULL && s->wcur != NULL && SSL_get_wbio(s->ssl) == b ? (long)s->wcur->len
                                                                            : 0;
    default:
        return 0;
    }
}

static int
tx_peer_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *tx_peer_bio_meth; /* made once per process: BIO type indexes are few */
static pthread_once_t tx_peer_bio_once = PTHREAD_ONCE_INIT;

static void
tx_peer_bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ron tx_peer");

    if (m == NULL || BIO_meth_set_write(m, tx_peer_bio_write) != 1 ||
        BIO_meth_set_read(m, tx_peer_bio_read) != 1 ||
        BIO_meth_set_ctrl(m, tx_peer_bio_ctrl) != 1 ||
        BIO_meth_set_create(m, tx_peer_bio_create) != 1) {
        BIO_meth_free(m);
        return;
    }
    tx_peer_bio_meth = m; /* lives as long as the process */
}

/* The BIO method of every session (NULL if OpenSSL refused it). */
static BIO_METHOD *
tx_peer_bio_method(void)
{
    (void)pthread_once(&tx_peer_bio_once, tx_peer_bio_method_make);
    return tx_peer_bio_meth;
}

/* Give s's SSL our BIOs in place of the memory BIOs it was made with. */
static int
tx_peer_bio_attach(tx_peer_session_t *s)
{
    BIO *rb = BIO_new(s->p->bio_meth), *wb = BIO_new(s->p->bio_meth);

    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        return RON_ETLS;
    }
    BIO_set_data(rb, s);
    BIO_set_data(wb, s);
    SSL_set_bio(s->ssl, rb, wb); /* frees the memory BIOs */
    return 0;
}

/*
 * After the SSL has read what it can: keep the ciphertext it left (the
 * session paused, or closes) in s->hold, since the read buffer belongs to
 * the next read of any session. Usually nothing is left and nothing is copied.
 */
static void
tx_peer_keep_input(tx_peer_session_t *s)
{
    if (s->in_len == 0) {
        s->in = NULL;
        return;
    }
    if (s->in == s->hold)
        return;
    if (s->hold != NULL && s->in > s->hold && s->in < s->hold + s->hold_cap) {
        memmove(s->hold, s->in, s->in_len);
    } else {
        if (s->in_len > s->hold_cap) {
            free(s->hold);
            s->hold = ron_xmalloc(s->in_len);
            s->hold_cap = s->in_len;
        }
        memcpy(s->hold, s->in, s->in_len);
    }
    s->in = s->hold;
}

/*
 * Encrypt and queue one frame. internal frames (HELLO, errors, credit) pass
 * the soft bound but not the hard one. Returns 0, RON_EAGAIN, RON_EFLOOD
 * (the session was dropped), an encoder error, or RON_ECLOSED.
 */
static int
tx_peer_ssl_write(tx_peer_session_t *s, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) { /* the BIO never blocks: each call writes all it is given */
        size_t w = 0;
        if (SSL_write_ex(s->ssl, (const uint8_t *)buf + done, len - done, &w) != 1 || w == 0)
            return RON_ETLS;
        done += w;
    }
    return 0;
}

/*
 * SSL_write the frame hdr || cap || payload so that the header does not
 * get a TLS record of its own: the header, the cap and the first payload
 * bytes are gathered into one full record (a 16 KiB copy), the rest of the
 * payload goes to the SSL in place. Returns 0 or RON_ETLS.
 */
static int
tx_peer_ssl_gather(tx_peer_session_t *s, const uint8_t hdr[static OAP_HDR_LEN],
                   const oap_frame_t *f)
{
    const uint8_t *src[3] = {hdr, f->cap, f->payload};
    size_t len[3] = {OAP_HDR_LEN, f->cap_len, f->payload_len}, used = 0, i;
    uint8_t *stage = s->p->stage;

    for (i = 0; i < 3 && used < TX_PEER_REC; i++) {
        size_t k = len[i] < TX_PEER_REC - used ? len[i] : TX_PEER_REC - used;
        if (k > 0)
            memcpy(stage + used, src[i], k);
        used += k;
        src[i] += k;
        len[i] -= k;
    }
    if (tx_peer_ssl_write(s, stage, used) < 0)
        return RON_ETLS;
    for (i = 0; i < 3; i++)
        if (len[i] > 0 && tx_peer_ssl_write(s, src[i], len[i]) < 0)
            return RON_ETLS;
    return 0;
}

static int
tx_peer_write_frame(tx_peer_session_t *s, const oap_frame_t *f, bool internal)
{
    uint8_t hdr[OAP_HDR_LEN];
    size_t size = oap_frame_size(f);
    int rc;

    if (internal && s->queued + size > s->p->cfg.max_queue_hard) {
        tx_peer_reject(s, TX_PEER_REJ_SLOW_PEER);
        return RON_EFLOOD;
    }
    if ((rc = oap_header_encode(f, s->max_frame, hdr)) < 0)
        return rc;
    if (tx_peer_ssl_gather(s, hdr, f) < 0) {
        ERR_clear_error();
        tx_peer_end(s, RON_ETLS);
        return RON_ECLOSED;
    }
    s->p->stats.frames_out++;
    s->p->stats.bytes_out += size;
    if ((rc = tx_peer_flush(s)) < 0) {
        tx_peer_end(s, rc);
        return RON_ECLOSED;
    }
    return 0;
}

/* Queue an already-encoded control frame (HELLO, its reply, an error, a credit). */
static int
tx_peer_write_encoded(tx_peer_session_t *s, const uint8_t *buf, size_t len)
{
    oap_frame_t f;
    ssize_t n = oap_frame_parse(buf, len, OAP_MAX_FRAME, &f);

    if (n < 0) /* defensive: our own encoders made it */
        return (int)n;
    return tx_peer_write_frame(s, &f, true);
}

/* Answer an error envelope (status, message) on corr_id, then close with rc. */
static void
tx_peer_fail_with(tx_peer_session_t *s, tx_peer_reject_t r, uint16_t status, uint64_t corr_id,
                  const char *message)
{
    uint8_t buf[TX_PEER_CTRL_MAX];
    ssize_t n = oap_error_encode(status, OAP_APP_CONTROL, corr_id, message, NULL, buf, sizeof buf);

    s->p->stats.rejects[r]++;
    if (n > 0 && tx_peer_write_encoded(s, buf, (size_t)n) < 0)
        return;
    tx_peer_linger(s, tx_peer_reject_rc(r));
}

int
tx_peer_send(tx_peer_session_t *s, const oap_frame_t *f)
{
    uint8_t hdr[OAP_HDR_LEN];
    int rc;

    if (s->state != TX_PS_OPEN || s->linger)
        return RON_ECLOSED;
    if (s->queued >= s->p->cfg.max_queue) {
        s->want_writable = true;
        return RON_EAGAIN;
    }
    if (s->p->queued_total >= s->p->cfg.max_queue_total &&
        (s->queued >= TX_PEER_BUDGET_FLOOR || oap_frame_size(f) > TX_PEER_BUDGET_FLOOR)) {
        s->want_writable = true;
        s->p->budget_wait = true;
        s->p->stats.budget_waits++;
        tx_peer_budget_squeeze(s->p);
        return RON_EAGAIN;
    }
    if ((rc = oap_header_encode(f, s->max_frame, hdr)) < 0) /* validate before accounting */
        return rc;
    if ((rc = oap_streams_send(&s->streams, f)) < 0) {
        if (rc == RON_EAGAIN)
            s->want_credit = true; /* on_writable when a grant arrives */
        return rc;
    }
    return tx_peer_write_frame(s, f, false);
}

int
tx_peer_consume(tx_peer_session_t *s, uint64_t corr_id, bool mine, uint32_t n)
{
    uint8_t buf[TX_PEER_CTRL_MAX];
    uint32_t grant;
    ssize_t len;

    if (s->state != TX_PS_OPEN || s->linger)
        return RON_ECLOSED;
    grant = oap_streams_consume(&s->streams, corr_id, mine, n);
    if (grant == 0)
        return 0;
    len = oap_credit_encode(corr_id, mine, grant, buf, sizeof buf);
    if (len < 0)
        return (int)len;
    return tx_peer_write_encoded(s, buf, (size_t)len);
}

/* ---- timers ---- */

static void
tx_peer_timer_cb(uv_timer_t *t)
{
    tx_peer_session_t *s = t->data;
    const tx_peer_config_t *c = &s->p->cfg;
    uint64_t now = uv_now(s->p->loop);

    if (s->state == TX_PS_CLOSING)
        return;
    if (s->linger) { /* an error answer that the peer does not read: give up on it */
        tx_peer_end(s, s->linger_rc);
        return;
    }
    if (s->state != TX_PS_OPEN) {
        tx_peer_reject(s, TX_PEER_REJ_HANDSHAKE_TIMEOUT);
        return;
    }
    if (s->full_since != 0 && now >= s->full_since + c->write_timeout_ms) {
        tx_peer_reject(s, TX_PEER_REJ_SLOW_PEER);
        return;
    }
    if (now >= s->last_rx + c->idle_ms) {
        tx_peer_reject(s, TX_PEER_REJ_IDLE_TIMEOUT);
        return;
    }
    tx_peer_arm_timer(s);
}

/* Established: wake at the next idle or slow-peer deadline. */
static void
tx_peer_arm_timer(tx_peer_session_t *s)
{
    const tx_peer_config_t *c = &s->p->cfg;
    uint64_t now = uv_now(s->p->loop), due = s->last_rx + c->idle_ms;

    if (s->full_since != 0 && s->full_since + c->write_timeout_ms < due)
        due = s->full_since + c->write_timeout_ms;
    (void)uv_timer_start(&s->timer, tx_peer_timer_cb, due > now ? due - now : 0, 0);
}

/* ---- input ---- */

static void
tx_peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tx_peer_session_t *s = h->data;

    (void)suggested;
    *buf = uv_buf_init((char *)s->p->rbuf, sizeof s->p->rbuf);
}

static void
tx_peer_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    tx_peer_session_t *s = st->data;

    if (s->state == TX_PS_CLOSING || n == 0)
        return;
    s->rx_recent = true;
    s->ssl_released = false;
    if (n < 0) {
        if (s->state == TX_PS_TLS)
            tx_peer_reject(s, s->reject >= 0 ? (tx_peer_reject_t)s->reject : TX_PEER_REJ_TLS);
        else
            tx_peer_end(s, RON_ECLOSED);
        return;
    }
    if (s->in_len > 0) { /* input kept from before: the new bytes go behind it */
        if (s->in_len + (size_t)n > TX_PEER_HOLD_MAX) {
            /* defensive: reading stops whenever input is left over, so this
             * would be a peer we failed to pause */
            tx_peer_reject(s, TX_PEER_REJ_SLOW_PEER);
            return;
        }
        if (s->in_len + (size_t)n > s->hold_cap) {
            s->hold_cap = s->in_len + (size_t)n;
            s->hold = ron_xrealloc(s->hold, s->hold_cap);
        }
        memcpy(s->hold + s->in_len, buf->base, (size_t)n);
        s->in = s->hold;
        s->in_len += (size_t)n;
    } else {
        s->in = (const uint8_t *)buf->base; /* read in place: no copy */
        s->in_len = (size_t)n;
    }
    tx_peer_pump(s);
}

static void
tx_peer_read_start(tx_peer_session_t *s)
{
    if (s->state != TX_PS_CLOSING && !s->linger && !s->app_paused && !s->bp_paused)
        (void)uv_read_start((uv_stream_t *)&s->tcp, tx_peer_alloc, tx_peer_on_read);
}

/* Why a handshake failed, from the callbacks' note or OpenSSL's queue. */
static tx_peer_reject_t
tx_peer_tls_reason(tx_peer_session_t *s)
{
    unsigned long e = ERR_peek_last_error();

    if (s->reject >= 0)
        return (tx_peer_reject_t)s->reject;
    if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
        switch (ERR_GET_REASON(e)) {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            return TX_PEER_REJ_NO_CERT;
        case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
        case SSL_R_NO_APPLICATION_PROTOCOL:
            return TX_PEER_REJ_BAD_ALPN;
        default:
            break;
        }
    }
    return TX_PEER_REJ_TLS;
}

/* TLS done: check what the callbacks could not, then start HELLO. */
static void
tx_peer_tls_done(tx_peer_session_t *s)
{
    tx_peer_t *p = s->p;
    const unsigned char *alpn = NULL;
    unsigned alen = 0;

    SSL_get0_alpn_selected(s->ssl, &alpn, &alen);
    if (alen != sizeof tx_peer_alpn_wire - 2 || memcmp(alpn, TX_PEER_ALPN, alen) != 0) {
        tx_peer_reject(s, TX_PEER_REJ_BAD_ALPN); /* the dialer offered none */
        return;
    }
    if (SSL_get0_peer_certificate(s->ssl) == NULL) {
        tx_peer_reject(s, TX_PEER_REJ_NO_CERT); /* defensive: FAIL_IF_NO_PEER_CERT */
        return;
    }
    if (!s->cert_ok) { /* defensive: the verify callback always runs on a certificate */
        tx_peer_reject(s, TX_PEER_REJ_BAD_CERT);
        return;
    }
    if (!s->dialer && tx_peer_count_id(p, s->id, s) >= p->cfg.max_per_peer) {
        tx_peer_reject(s, TX_PEER_REJ_PER_PEER_LIMIT);
        return;
    }
    s->state = TX_PS_HELLO;
    if (s->dialer) {
        proto_hello_t h;
        uint8_t buf[TX_PEER_CTRL_MAX];
        ssize_t n;

        memset(&h, 0, sizeof h);
        (void)snprintf(h.ua, sizeof h.ua, "%s", p->ua);
        h.has_max_frame = true;
        h.max_frame = p->cfg.max_frame;
        h.n_versions = 1;
        h.versions[0] = OAP_VERSION;
        n = oap_hello_encode(&h, TX_PEER_HELLO_CORR, false, buf, sizeof buf);
        if (n < 0) {
            tx_peer_end(s, (int)n);
            return;
        }
        (void)tx_peer_write_encoded(s, buf, (size_t)n);
    }
}

/* HELLO (listener) or its reply (dialer) arrived: the session opens or fails. */
static void
tx_peer_hello(tx_peer_session_t *s, const oap_frame_t *f)
{
    tx_peer_t *p = s->p;
    uint32_t mf = 0, inflight = p->cfg.max_inflight;

    if (!s->dialer) {
        proto_hello_reply_t offer;
        uint8_t buf[TX_PEER_CTRL_MAX];
        size_t len = 0;
        int rc;

        oap_hello_reply_init(&offer, p->cfg.max_frame, "tcp+tls");
        offer.max_inflight = p->cfg.max_inflight;
        rc = oap_hello_answer(f, &offer, buf, sizeof buf, &len, &mf);
        if (rc == RON_EVERSION) {
            p->stats.rejects[TX_PEER_REJ_PROTO_MISMATCH]++;
            if (tx_peer_write_encoded(s, buf, len) == 0)
                tx_peer_linger(s, RON_EVERSION);
            return;
        }
        if (rc < 0 || tx_peer_write_encoded(s, buf, len) < 0) {
            tx_peer_end(s, rc < 0 ? rc : RON_ECLOSED);
            return;
        }
    } else {
        proto_hello_reply_t r;
        if (oap_hello_reply_parse(f, TX_PEER_HELLO_CORR, p->cfg.max_frame, &r, &mf, NULL) < 0) {
            tx_peer_reject(s, TX_PEER_REJ_PROTO_MISMATCH);
            return;
        }
        if (r.max_inflight > 0 && r.max_inflight < inflight)
            inflight = r.max_inflight;
    }
    if (s->state == TX_PS_CLOSING)
        return;
    s->max_frame = mf;
    s->max_inflight = inflight;
    oap_decoder_set_max_frame(&s->dec, mf);
    oap_streams_init(&s->streams, inflight, OAP_STREAM_WINDOW);
    s->streams_ready = true;
    s->state = TX_PS_OPEN;
    s->last_rx = uv_now(p->loop);
    p->stats.established++;
    tx_peer_arm_timer(s);
    s->reported = true;
    if (p->cb.on_session != NULL)
        p->cb.on_session(s, p->cb.arg);
}

/* One frame from the peer. */
static void
tx_peer_frame(tx_peer_session_t *s, const oap_frame_t *f)
{
    tx_peer_t *p = s->p;
    int rc;

    p->stats.frames_in++;
    p->stats.bytes_in += f->len;
    s->last_rx = uv_now(p->loop);
    if (s->state == TX_PS_HELLO) {
        tx_peer_hello(s, f);
        return;
    }
    rc = oap_streams_recv(&s->streams, f);
    if (rc == OAP_STREAM_CONTROL) { /* a credit grant: a sender may be waiting for it */
        if (s->want_credit) {
            s->want_credit = false;
            if (p->cb.on_writable != NULL)
                p->cb.on_writable(s, p->cb.arg);
        }
        return;
    }
    if (rc == RON_EBUSY) {
        uint8_t buf[TX_PEER_CTRL_MAX];
        ssize_t n = oap_error_encode(429, f->app_proto_id, f->corr_id, "too many streams in flight",
                                     NULL, buf, sizeof buf);
        p->stats.streams_refused++;
        if (n > 0)
            (void)tx_peer_write_encoded(s, buf, (size_t)n);
        return;
    }
    if (rc < 0) {
        tx_peer_fail_with(s, TX_PEER_REJ_PROTOCOL, 400, f->corr_id, ron_strerror(rc));
        return;
    }
    if (p->cb.on_frame != NULL)
        p->cb.on_frame(s, f, p->cb.arg);
}

static void tx_peer_pump_once(tx_peer_session_t *s);

/* Drive the handshake, then decrypt into the decoder and deliver frames;
 * what the SSL did not read is kept for later. */
static void
tx_peer_pump(tx_peer_session_t *s)
{
    if (s->in_pump)
        return;
    tx_peer_pump_once(s);
    tx_peer_keep_input(s);
}

static void
tx_peer_pump_once(tx_peer_session_t *s)
{
    oap_frame_t f;
    int r, rc;

    if (s->in_pump)
        return;
    if (s->state == TX_PS_TLS) {
        r = SSL_do_handshake(s->ssl);
        if ((rc = tx_peer_flush(s)) < 0) {
            tx_peer_end(s, rc);
            return;
        }
        if (r != 1) {
            int e = SSL_get_error(s->ssl, r);
            if (e != SSL_ERROR_WANT_READ)
                tx_peer_reject(s, tx_peer_tls_reason(s));
            ERR_clear_error();
            return;
        }
        tx_peer_tls_done(s);
    }
    s->in_pump = true;
    while ((s->state == TX_PS_HELLO || s->state == TX_PS_OPEN) && !s->linger) {
        if (s->app_paused || s->bp_paused)
            goto out; /* what is buffered stays in the decoder and the SSL until resumed */
        if ((rc = oap_decoder_next(&s->dec, &f)) == 0) {
            tx_peer_frame(s, &f);
            continue;
        }
        if (rc != RON_EAGAIN) {
            uint16_t status;
            const char *slug, *reason;
            oap_error_status(rc, &status, &slug, &reason);
            tx_peer_fail_with(
                s, s->state == TX_PS_HELLO ? TX_PEER_REJ_PROTO_MISMATCH : TX_PEER_REJ_PROTOCOL,
                status, 0, ron_strerror(rc));
            goto out;
        }
        size_t avail = 0;
        uint8_t *dst = oap_decoder_reserve(&s->dec, 0, &avail);
        if (dst == NULL) { /* defensive: the decoder was just drained */
            tx_peer_fail_with(s, TX_PEER_REJ_PROTOCOL, 400, 0, "frame buffer bound");
            goto out;
        }
        r = SSL_read(s->ssl, dst, avail > INT32_MAX ? INT32_MAX : (int)avail);
        if (r <= 0) {
            int e = SSL_get_error(s->ssl, r);
            oap_decoder_commit(&s->dec, 0);
            if (e == SSL_ERROR_WANT_READ) {
                if ((rc = tx_peer_flush(s)) < 0)
                    tx_peer_end(s, rc);
            } else if (e == SSL_ERROR_ZERO_RETURN) {
                tx_peer_end(s, RON_ECLOSED);
            } else if (s->state == TX_PS_HELLO) {
                tx_peer_reject(s, tx_peer_tls_reason(s)); /* the listener refused us */
            } else {
                tx_peer_end(s, RON_ETLS);
            }
            ERR_clear_error();
            goto out;
        }
        oap_decoder_commit(&s->dec, (size_t)r);
    }
out:
    s->in_pump = false;
}

void
tx_peer_session_pause(tx_peer_session_t *s, bool paused)
{
    if (s->state == TX_PS_CLOSING || s->app_paused == paused)
        return;
    s->app_paused = paused;
    if (paused) {
        (void)uv_read_stop((uv_stream_t *)&s->tcp);
        return;
    }
    tx_peer_read_start(s);
    tx_peer_pump(s); /* frames already decrypted or buffered */
}

/* ---- accept and dial ---- */

static void
tx_peer_free_handle(uv_handle_t *h)
{
    free(h);
}

static void
tx_peer_on_conn(uv_stream_t *ls, int status)
{
    tx_peer_listener_t *l = ls->data;
    tx_peer_t *p = l->p;
    tx_peer_session_t *s;

    if (status < 0 || p->closing)
        return;
    if (p->stats.open >= p->cfg.max_conns) {
        uv_tcp_t *t = ron_xmalloc(sizeof *t);
        (void)uv_tcp_init(p->loop, t);
        (void)uv_accept(ls, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, tx_peer_free_handle);
        p->stats.rejects[TX_PEER_REJ_TOO_MANY_CONNS]++;
        return;
    }
    s = tx_peer_session_new(p, false);
    p->stats.accepted++;
    s->state = TX_PS_TLS;
    if (uv_accept(ls, (uv_stream_t *)&s->tcp) < 0 || s->ssl == NULL) {
        tx_peer_end(s, RON_ETLS);
        return;
    }
    (void)uv_tcp_nodelay(&s->tcp, 1); /* small control frames (credit) must not wait */
    (void)uv_timer_start(&s->timer, tx_peer_timer_cb, p->cfg.handshake_ms, 0);
    tx_peer_read_start(s);
}

static void
tx_peer_listener_closed(uv_handle_t *h)
{
    tx_peer_listener_t *l = h->data;
    tx_peer_t *p = l->p;

    free(l);
    p->pending--;
    tx_peer_maybe_free(p);
}

/* Write l's bound address to bound_out ("127.0.0.1:43121", "[::1]:43121"). */
static void
tx_peer_bound_addr(tx_peer_listener_t *l, char *bound_out, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "";

    if (bound_out == NULL || cap == 0)
        return;
    bound_out[0] = '\0';
    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        (void)uv_ip6_name(a, host, sizeof host);
        (void)snprintf(bound_out, cap, "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        (void)uv_ip4_name(a, host, sizeof host);
        (void)snprintf(bound_out, cap, "%s:%u", host, ntohs(a->sin_port));
    }
}

int
tx_peer_listen(tx_peer_t *p, const char *addr, char *bound_out, size_t cap)
{
    struct sockaddr_storage ss;
    tx_peer_listener_t *l;
    int rc;

    if (p->closing)
        return RON_ESHUTDOWN;
    if ((rc = tx__addr_parse(addr, &ss)) < 0)
        return rc;
    l = ron_xcalloc(1, sizeof *l);
    l->p = p;
    (void)uv_tcp_init(p->loop, &l->tcp);
    l->tcp.data = l;
    p->pending++;
    if ((rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&l->tcp, 128, tx_peer_on_conn)) < 0) {
        uv_close((uv_handle_t *)&l->tcp, tx_peer_listener_closed);
        return rc;
    }
    l->next = p->listeners;
    p->listeners = l;
    tx_peer_bound_addr(l, bound_out, cap);
    return 0;
}

int
tx_peer_listen_fd(tx_peer_t *p, int fd, char *bound_out, size_t cap)
{
    int acc = 0, type = 0, rc;
    socklen_t sl = sizeof acc;
    tx_peer_listener_t *l;

    if (p->closing)
        return RON_ESHUTDOWN;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl) < 0 || !acc)
        return RON_EINVAL;
    sl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0 || type != SOCK_STREAM)
        return RON_EINVAL;
    l = ron_xcalloc(1, sizeof *l);
    l->p = p;
    (void)uv_tcp_init(p->loop, &l->tcp);
    l->tcp.data = l;
    p->pending++;
    /* uv_listen on a socket that already listens only starts watching it */
    if ((rc = uv_tcp_open(&l->tcp, fd)) < 0) {
        uv_close((uv_handle_t *)&l->tcp, tx_peer_listener_closed); /* fd stays the caller's */
        return rc;
    }
    if ((rc = uv_listen((uv_stream_t *)&l->tcp, 128, tx_peer_on_conn)) < 0) {
        uv_close((uv_handle_t *)&l->tcp, tx_peer_listener_closed); /* closes fd: taken */
        return rc;
    }
    l->next = p->listeners;
    p->listeners = l;
    tx_peer_bound_addr(l, bound_out, cap);
    return 0;
}

static void
tx_peer_on_connect(uv_connect_t *req, int status)
{
    tx_peer_session_t *s = req->handle->data;

    if (s->state == TX_PS_CLOSING)
        return;
    if (status < 0) {
        s->p->stats.connect_failures++;
        tx_peer_end(s, status);
        return;
    }
    s->state = TX_PS_TLS;
    (void)uv_tcp_nodelay(&s->tcp, 1);
    tx_peer_read_start(s);
    tx_peer_pump(s); /* sends the ClientHello */
}

int
tx_peer_dial(tx_peer_t *p, const char *addr, const uint8_t id[static KMS_NODE_ID_LEN],
             tx_peer_session_t **s_out)
{
    struct sockaddr_storage ss;
    tx_peer_session_t *s;
    int rc;

    *s_out = NULL;
    if (p->closing)
        return RON_ESHUTDOWN;
    if ((rc = tx__addr_parse(addr, &ss)) < 0)
        return rc;
    if (memcmp(id, p->id, KMS_NODE_ID_LEN) == 0) {
        p->stats.rejects[TX_PEER_REJ_SELF]++;
        return RON_EPEERSELF;
    }
    if (p->stats.open >= p->cfg.max_conns) {
        p->stats.rejects[TX_PEER_REJ_TOO_MANY_CONNS]++;
        return RON_EBUSY;
    }
    if (tx_peer_count_id(p, id, NULL) >= p->cfg.max_per_peer) {
        p->stats.rejects[TX_PEER_REJ_PER_PEER_LIMIT]++;
        return RON_EPEERLIMIT;
    }
    s = tx_peer_session_new(p, true);
    memcpy(s->want_id, id, KMS_NODE_ID_LEN);
    p->stats.dialed++;
    if (s->ssl == NULL || (rc = uv_tcp_connect(&s->connect, &s->tcp, (const struct sockaddr *)&ss,
                                               tx_peer_on_connect)) < 0) {
        s->dialer = false; /* not reported: the caller learns it from rc */
        tx_peer_end(s, RON_ETLS);
        return s->ssl == NULL ? RON_ETLS : rc;
    }
    (void)uv_timer_start(&s->timer, tx_peer_timer_cb, p->cfg.handshake_ms, 0);
    *s_out = s;
    return 0;
}

static void
tx_peer_sweep_closed(uv_handle_t *h)
{
    tx_peer_t *p = h->data;

    p->pending--;
    tx_peer_maybe_free(p);
}

/* Give back the buffers of sessions that received nothing since the last
 * sweep (nothing is buffered in them), and the spare write buffers when
 * nothing was written; trim the heap when that was a lot. */
static void
tx_peer_sweep_cb(uv_timer_t *t)
{
    tx_peer_t *p = t->data;
    size_t freed = 0;

    for (tx_peer_session_t *s = p->sessions; s != NULL; s = s->next) {
        if (s->rx_recent || s->state != TX_PS_OPEN) {
            s->rx_recent = false;
            continue;
        }
        if (s->in_len == 0 && s->hold != NULL) {
            freed += s->hold_cap;
            free(s->hold);
            s->hold = NULL;
            s->hold_cap = 0;
            s->in = NULL;
        }
        freed += oap_decoder_release(&s->dec);
        /* refused while records wait in them; allocated again by the next I/O */
        if (!s->ssl_released && s->wcur == NULL && SSL_free_buffers(s->ssl) == 1) {
            s->ssl_released = true;
            freed += 2 * TX_PEER_REC; /* about: one record buffer each way */
        }
    }
    if (!p->tx_recent) {
        while (p->wfree != NULL) {
            tx_peer_wreq_t *w = p->wfree;
            p->wfree = w->next_free;
            freed += w->cap;
            free(w);
        }
        p->n_wfree = 0;
    }
    p->tx_recent = false;
    p->stats.buffers_released += freed;
    if (freed >= TX_PEER_TRIM_MIN)
        (void)malloc_trim(0); /* freed blocks amid the heap go back to the kernel too */
}

void
tx_peer_close(tx_peer_t *p, void (*cb)(void *arg), void *arg)
{
    p->closing = true;
    p->close_cb = cb;
    p->close_arg = arg;
    uv_close((uv_handle_t *)&p->sweep, tx_peer_sweep_closed);
    for (tx_peer_listener_t *l = p->listeners; l != NULL; l = l->next)
        uv_close((uv_handle_t *)&l->tcp, tx_peer_listener_closed);
    p->listeners = NULL;
    for (tx_peer_session_t *s = p->sessions; s != NULL; s = s->next)
        tx_peer_end(s, 0);
    tx_peer_maybe_free(p); /* defensive: the sweep timer's close callback frees p */
}

void
tx__peer_client_ctx_set(tx_peer_t *p, SSL_CTX *ctx)
{
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, tx_peer_verify_cb);
    (void)SSL_CTX_up_ref(ctx);
    SSL_CTX_free(p->cli_ctx);
    p->cli_ctx = ctx;
}

/* ---- session accessors ---- */

const uint8_t *
tx_peer_session_id(const tx_peer_session_t *s)
{
    return s->id;
}

bool
tx_peer_session_is_dialer(const tx_peer_session_t *s)
{
    return s->dialer;
}

uint32_t
tx_peer_session_max_frame(const tx_peer_session_t *s)
{
    return s->max_frame;
}

uint32_t
tx_peer_session_max_inflight(const tx_peer_session_t *s)
{
    return s->max_inflight;
}

size_t
tx_peer_session_queued(const tx_peer_session_t *s)
{
    return s->queued;
}

int
tx_peer_session_peer_sockaddr(const tx_peer_session_t *s, struct sockaddr_storage *out)
{
    int len = (int)sizeof *out;

    memset(out, 0, sizeof *out);
    return uv_tcp_getpeername(&s->tcp, (struct sockaddr *)out, &len);
}

bool
tx_peer_session_is_reading_paused(const tx_peer_session_t *s)
{
    return s->app_paused || s->bp_paused;
}

void
tx_peer_session_set_data(tx_peer_session_t *s, void *data)
{
    s->data = data;
}

void *
tx_peer_session_data(const tx_peer_session_t *s)
{
    return s->data;
}

void
tx_peer_session_close(tx_peer_session_t *s)
{
    if (s->state == TX_PS_CLOSING)
        return;
    if (s->state == TX_PS_OPEN || s->state == TX_PS_HELLO) {
        (void)SSL_shutdown(s->ssl); /* close_notify */
        ERR_clear_error();
        if (tx_peer_flush(s) < 0) {
            tx_peer_end(s, 0);
            return;
        }
        tx_peer_linger(s, 0);
        return;
    }
    tx_peer_end(s, 0);
}
