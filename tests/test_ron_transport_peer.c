/*
 * test_ron_transport_peer.c - peer sessions (tx_peer.h) over real sockets on
 * loopback and real TLS 1.3, all on one libuv loop (no threads): identities
 * from RAM key stores (ron-kms amnesia), ids learned both ways, every reject
 * reason provoked and counted, HELLO, frames both ways, and backpressure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "ron_err.h"
#include "tx_internal.h"
#include "tx_peer.h"

#define NODES 3
#define MAX_SESS 8
#define BIG 65536u

typedef struct node node_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE returning */
    int closed;      /* tx_peer_close callbacks */
} world_t;

struct node {
    world_t *w;
    kms_keystore_t *ks;
    tx_peer_t *p;
    uint8_t id[KMS_NODE_ID_LEN];
    char addr[TX_ADDR_MAX];
    tx_peer_session_t *sess[MAX_SESS]; /* sessions that reached on_session */
    int n_sess;
    int n_closed;
    int last_close_rc;
    int frames;     /* frames delivered */
    uint64_t bytes; /* payload bytes delivered */
    char last_payload[64];
    bool answer;  /* answer REQ|START|END frames with RESP|END "pong" */
    int writable; /* on_writable calls */
    /* a sender pumping EVENT frames to sess[0] until RON_EAGAIN */
    bool pumping;
    int sent;
    int send_limit;
    int eagain;
    uint64_t stream_corr; /* pump sends REQ frames of this stream instead of events */
    bool consume;         /* report every delivered frame as finished (grants credit) */
    size_t max_queue;     /* the node's configured bound */
    bool pause_each;      /* pause reading after every delivered frame */
    uint32_t seq_bad;     /* frames whose payload did not carry the expected sequence */
};

static uint8_t big[BIG];

static void
tick_cb(uv_timer_t *t)
{
    (void)t;
}

static void
world_init(world_t *w)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    assert_int_equal(uv_timer_init(&w->loop, &w->tick), 0);
    assert_int_equal(uv_timer_start(&w->tick, tick_cb, 5, 5), 0);
}

/* Run the loop until *flag >= want or ms pass. Returns whether it got there. */
static bool
run_until(world_t *w, const int *flag, int want, uint64_t ms)
{
    uv_update_time(&w->loop);
    uint64_t end = uv_now(&w->loop) + ms;
    while (*flag < want && uv_now(&w->loop) < end)
        (void)uv_run(&w->loop, UV_RUN_ONCE);
    return *flag >= want;
}

static void
run_for(world_t *w, uint64_t ms)
{
    int never = 0;
    (void)run_until(w, &never, 1, ms);
}

static void
pump(node_t *n)
{
    oap_frame_t f;

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_EVENT;
    f.app_proto_id = OAP_APP_OVERLAY;
    f.payload = big;
    f.payload_len = BIG;
    while (n->pumping && n->sent < n->send_limit && n->n_sess > 0) {
        if (n->stream_corr != 0) {
            f.flags = (uint16_t)(OAP_F_REQ | (n->sent == 0 ? OAP_F_START : 0));
            f.corr_id = n->stream_corr;
        }
        int rc = tx_peer_send(n->sess[0], &f);
        if (rc == RON_EAGAIN) {
            n->eagain++;
            /* the queue never holds more than its bound plus one frame of records */
            assert_true(tx_peer_session_queued(n->sess[0]) <= n->max_queue + BIG + 4096);
            return;
        }
        assert_int_equal(rc, 0);
        n->sent++;
    }
}

static void
on_session(tx_peer_session_t *s, void *arg)
{
    node_t *n = arg;

    assert_true(n->n_sess < MAX_SESS);
    n->sess[n->n_sess++] = s;
}

static void
on_frame(tx_peer_session_t *s, const oap_frame_t *f, void *arg)
{
    node_t *n = arg;

    n->frames++;
    n->bytes += f->payload_len;
    if (n->pause_each) { /* payload: 4-byte frame index, then bytes (index + i) */
        uint32_t idx = 0;
        bool ok = f->payload_len >= 4;
        if (ok)
            memcpy(&idx, f->payload, 4);
        ok = ok && idx == (uint32_t)(n->frames - 1);
        for (size_t i = 4; ok && i < f->payload_len; i++)
            ok = f->payload[i] == (uint8_t)(idx + i);
        if (!ok)
            n->seq_bad++;
        tx_peer_session_pause(s, true);
    }
    if (n->consume)
        assert_int_equal(tx_peer_consume(s, f->corr_id, (f->flags & OAP_F_RESP) != 0, 1), 0);
    size_t l =
        f->payload_len < sizeof n->last_payload - 1 ? f->payload_len : sizeof n->last_payload - 1;
    memcpy(n->last_payload, f->payload, l);
    n->last_payload[l] = '\0';
    if (n->answer && (f->flags & OAP_F_REQ) && (f->flags & OAP_F_START)) {
        oap_frame_t r;
        memset(&r, 0, sizeof r);
        r.flags = OAP_F_RESP | OAP_F_END;
        r.code = 200;
        r.app_proto_id = f->app_proto_id;
        r.corr_id = f->corr_id;
        r.payload = (const uint8_t *)"pong";
        r.payload_len = 4;
        assert_int_equal(tx_peer_send(s, &r), 0);
    }
}

static void
on_writable(tx_peer_session_t *s, void *arg)
{
    node_t *n = arg;

    (void)s;
    n->writable++;
    pump(n);
}

static void
on_close(tx_peer_session_t *s, int rc, void *arg)
{
    node_t *n = arg;

    n->n_closed++;
    n->last_close_rc = rc;
    for (int i = 0; i < n->n_sess; i++) {
        if (n->sess[i] == s) {
            n->sess[i] = n->sess[--n->n_sess];
            break;
        }
    }
}

static void
node_start(world_t *w, node_t *n, const tx_peer_config_t *cfg, bool listen)
{
    kms_opts_t o;
    char err[256];
    tx_peer_callbacks_t cb = {on_session, on_frame, on_writable, on_close, n};
    tx_peer_config_t def;

    memset(n, 0, sizeof *n);
    n->w = w;
    memset(&o, 0, sizeof o);
    o.amnesia = true;
    o.create = true;
    assert_int_equal(kms_keystore_open(&o, &n->ks, err, sizeof err), 0);
    kms_keystore_node_id(n->ks, n->id);
    if (cfg == NULL) {
        tx_peer_config_default(&def);
        cfg = &def;
    }
    assert_int_equal(tx_peer_new(&w->loop, n->ks, cfg, &cb, &n->p), 0);
    n->max_queue = cfg->max_queue != 0 ? cfg->max_queue : TX_PEER_DEFAULT_MAX_QUEUE;
    assert_memory_equal(tx_peer_node_id(n->p), n->id, KMS_NODE_ID_LEN);
    if (listen)
        assert_int_equal(tx_peer_listen(n->p, "127.0.0.1:0", n->addr, sizeof n->addr), 0);
}

static void
closed_cb(void *arg)
{
    world_t *w = arg;
    w->closed++;
}

/* Close every node, run the loop dry, and check nothing is left. */
static void
world_end(world_t *w, node_t *nodes, int count)
{
    for (int i = 0; i < count; i++)
        tx_peer_close(nodes[i].p, closed_cb, w);
    assert_true(run_until(w, &w->closed, count, 5000));
    for (int i = 0; i < count; i++)
        kms_keystore_free(nodes[i].ks);
    uv_close((uv_handle_t *)&w->tick, NULL);
    (void)uv_run(&w->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&w->loop), 0);
}

/* A connected pair: b dialed a. */
static void
connect_pair(world_t *w, node_t *a, node_t *b)
{
    tx_peer_session_t *s;

    assert_int_equal(tx_peer_dial(b->p, a->addr, a->id, &s), 0);
    assert_non_null(s);
    assert_true(run_until(w, &a->n_sess, 1, 5000));
    assert_true(run_until(w, &b->n_sess, 1, 5000));
}

static void
test_peer_handshake_both_ways_learns_ids(void **state)
{
    world_t w;
    node_t n[2];

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    node_start(&w, &n[1], NULL, true);
    assert_memory_not_equal(n[0].id, n[1].id, KMS_NODE_ID_LEN);
    connect_pair(&w, &n[0], &n[1]);
    /* the listener learned the dialer's id from its certificate, and vice versa */
    assert_memory_equal(tx_peer_session_id(n[0].sess[0]), n[1].id, KMS_NODE_ID_LEN);
    assert_memory_equal(tx_peer_session_id(n[1].sess[0]), n[0].id, KMS_NODE_ID_LEN);
    assert_false(tx_peer_session_is_dialer(n[0].sess[0]));
    assert_true(tx_peer_session_is_dialer(n[1].sess[0]));
    /* and the other way round */
    connect_pair(&w, &n[1], &n[0]);
    assert_true(run_until(&w, &n[0].n_sess, 2, 5000));
    assert_true(run_until(&w, &n[1].n_sess, 2, 5000));
    assert_memory_equal(tx_peer_session_id(n[1].sess[1]), n[0].id, KMS_NODE_ID_LEN);
    assert_memory_equal(tx_peer_session_id(n[0].sess[1]), n[1].id, KMS_NODE_ID_LEN);
    assert_int_equal(tx_peer_stats(n[0].p)->established, 2);
    assert_int_equal(tx_peer_stats(n[1].p)->established, 2);
    for (int r = 0; r < TX_PEER_REJ__COUNT; r++)
        assert_int_equal(tx_peer_stats(n[0].p)->rejects[r], 0);
    world_end(&w, n, 2);
}

/* A listener handed over as a bound, listening descriptor (the kernel's
 * way) serves handshakes like one tx_peer bound itself; a descriptor that
 * does not listen is refused and stays the caller's. */
static void
test_peer_listen_fd_adopts_an_inherited_listener(void **state)
{
    world_t w;
    node_t n[2];
    int fd = -1, sock;

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, false);
    node_start(&w, &n[1], NULL, false);
    sock = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(sock >= 0);
    assert_int_equal(tx_peer_listen_fd(n[0].p, sock, n[0].addr, sizeof n[0].addr), RON_EINVAL);
    assert_int_equal(close(sock), 0); /* still ours */
    assert_int_equal(tx_socket_bind("127.0.0.1:0", 16, &fd), 0);
    assert_int_equal(tx_peer_listen_fd(n[0].p, fd, n[0].addr, sizeof n[0].addr), 0);
    assert_int_equal(strncmp(n[0].addr, "127.0.0.1:", 10), 0);
    assert_string_not_equal(n[0].addr, "127.0.0.1:0");
    connect_pair(&w, &n[0], &n[1]);
    assert_memory_equal(tx_peer_session_id(n[0].sess[0]), n[1].id, KMS_NODE_ID_LEN);
    assert_int_equal(tx_peer_stats(n[0].p)->accepted, 1);
    world_end(&w, n, 2);
}

static void
test_peer_dial_with_wrong_id_fails_with_epeerid_and_is_counted(void **state)
{
    world_t w;
    node_t n[3];
    tx_peer_session_t *s;

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    node_start(&w, &n[1], NULL, false);
    node_start(&w, &n[2], NULL, false);
    /* n[1] dials n[0]'s address expecting n[2]'s id */
    assert_int_equal(tx_peer_dial(n[1].p, n[0].addr, n[2].id, &s), 0);
    assert_true(run_until(&w, &n[1].n_closed, 1, 5000));
    assert_int_equal(n[1].last_close_rc, RON_EPEERID);
    assert_int_equal(n[1].n_sess, 0);
    assert_int_equal(tx_peer_stats(n[1].p)->rejects[TX_PEER_REJ_WRONG_ID], 1);
    assert_int_equal(tx_peer_stats(n[1].p)->established, 0);
    /* the listener saw the dialer's alert and opened nothing */
    run_for(&w, 100);
    assert_int_equal(n[0].n_sess, 0);
    assert_int_equal(tx_peer_stats(n[0].p)->established, 0);
    /* dialing our own id is refused at once */
    assert_int_equal(tx_peer_dial(n[1].p, n[0].addr, n[1].id, &s), RON_EPEERSELF);
    assert_int_equal(tx_peer_stats(n[1].p)->rejects[TX_PEER_REJ_SELF], 1);
    assert_int_equal(tx_peer_dial(n[1].p, "not-an-address", n[0].id, &s), RON_EINVAL);
    world_end(&w, n, 3);
}

/* A client context with a self-signed certificate of key (NULL: none) and ALPN wire list. */
static SSL_CTX *
client_ctx(EVP_PKEY *key, const unsigned char *alpn, unsigned alpn_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION), 1);
    if (key != NULL) {
        X509 *x = X509_new();
        assert_non_null(x);
        assert_int_equal(X509_set_version(x, 2), 1);
        assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
        assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -60));
        assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
        assert_int_equal(X509_set_pubkey(x, key), 1);
        assert_int_equal(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                                    (const unsigned char *)"test", -1, -1, 0),
                         1);
        assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(x)), 1);
        assert_true(
            X509_sign(x, key, EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256()) > 0);
        assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
        X509_free(x);
    }
    if (alpn != NULL)
        assert_int_equal(SSL_CTX_set_alpn_protos(ctx, alpn, alpn_len), 0);
    return ctx;
}

/* n[1] dials n[0] through ctx; n[0] must count reject r and open nothing. */
static void
expect_listener_reject(SSL_CTX *ctx, tx_peer_reject_t r)
{
    world_t w;
    node_t n[2];
    tx_peer_session_t *s;

    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    node_start(&w, &n[1], NULL, false);
    tx__peer_client_ctx_set(n[1].p, ctx);
    SSL_CTX_free(ctx);
    assert_int_equal(tx_peer_dial(n[1].p, n[0].addr, n[0].id, &s), 0);
    assert_true(run_until(&w, &n[1].n_closed, 1, 5000));
    assert_true(n[1].last_close_rc < 0);
    run_for(&w, 50);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[r], 1);
    assert_int_equal(tx_peer_stats(n[0].p)->established, 0);
    assert_int_equal(n[0].n_sess, 0);
    assert_int_equal(tx_peer_stats(n[0].p)->open, 0);
    world_end(&w, n, 2);
}

static void
test_peer_listener_rejects_client_without_certificate(void **state)
{
    (void)state;
    expect_listener_reject(client_ctx(NULL, (const unsigned char *)"\x05oap/1", 6),
                           TX_PEER_REJ_NO_CERT);
}

static void
test_peer_listener_rejects_rsa_client_certificate(void **state)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);

    (void)state;
    assert_non_null(k);
    expect_listener_reject(client_ctx(k, (const unsigned char *)"\x05oap/1", 6),
                           TX_PEER_REJ_BAD_CERT);
    EVP_PKEY_free(k);
}

static void
test_peer_listener_rejects_p256_client_certificate(void **state)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");

    (void)state;
    assert_non_null(k);
    expect_listener_reject(client_ctx(k, (const unsigned char *)"\x05oap/1", 6),
                           TX_PEER_REJ_BAD_CERT);
    EVP_PKEY_free(k);
}

static void
test_peer_listener_rejects_other_alpn(void **state)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

    (void)state;
    assert_non_null(k);
    expect_listener_reject(client_ctx(k, (const unsigned char *)"\x02h2", 3), TX_PEER_REJ_BAD_ALPN);
    EVP_PKEY_free(k);
}

static void
test_peer_listener_rejects_missing_alpn(void **state)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

    (void)state;
    assert_non_null(k);
    expect_listener_reject(client_ctx(k, NULL, 0), TX_PEER_REJ_BAD_ALPN);
    EVP_PKEY_free(k);
}

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t req;
    int connected;
    int eof;
} raw_client_t;

static void
raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char buf[4096];
    (void)h, (void)s;
    *b = uv_buf_init(buf, sizeof buf);
}

static void
raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    raw_client_t *c = st->data;
    (void)b;
    if (n < 0)
        c->eof = 1;
}

static void
raw_connected(uv_connect_t *req, int status)
{
    raw_client_t *c = req->handle->data;
    assert_int_equal(status, 0);
    c->connected = 1;
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, raw_alloc, raw_read), 0);
}

static void
test_peer_silent_client_hits_handshake_timeout(void **state)
{
    world_t w;
    node_t n[1];
    tx_peer_config_t cfg;
    raw_client_t c;
    struct sockaddr_storage ss;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&cfg);
    cfg.handshake_ms = 200;
    node_start(&w, &n[0], &cfg, true);
    memset(&c, 0, sizeof c);
    assert_int_equal(tx__addr_parse(n[0].addr, &ss), 0);
    assert_int_equal(uv_tcp_init(&w.loop, &c.tcp), 0);
    c.tcp.data = &c;
    assert_int_equal(uv_tcp_connect(&c.req, &c.tcp, (struct sockaddr *)&ss, raw_connected), 0);
    assert_true(run_until(&w, &c.connected, 1, 2000));
    run_for(&w, 100);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_HANDSHAKE_TIMEOUT], 0);
    /* the listener hangs up on the silent client after handshake_ms */
    assert_true(run_until(&w, &c.eof, 1, 3000));
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_HANDSHAKE_TIMEOUT], 1);
    assert_int_equal(tx_peer_stats(n[0].p)->open, 0);
    uv_close((uv_handle_t *)&c.tcp, NULL);
    world_end(&w, n, 1);
}

static void
test_peer_per_peer_ceiling_rejects_extra_session(void **state)
{
    world_t w;
    node_t n[2];
    tx_peer_config_t cfg;
    tx_peer_session_t *s;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&cfg);
    cfg.max_per_peer = 1;
    node_start(&w, &n[0], &cfg, true);
    node_start(&w, &n[1], NULL, true); /* the dialer allows 2 of its own */
    connect_pair(&w, &n[0], &n[1]);
    /* a second session from the same node is refused by the listener */
    assert_int_equal(tx_peer_dial(n[1].p, n[0].addr, n[0].id, &s), 0);
    assert_true(run_until(&w, &n[1].n_closed, 1, 5000));
    assert_true(n[1].last_close_rc < 0);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_PER_PEER_LIMIT], 1);
    assert_int_equal(n[0].n_sess, 1);
    assert_int_equal(n[1].n_sess, 1);
    /* a dialer at its own ceiling refuses before connecting */
    assert_int_equal(tx_peer_dial(n[0].p, n[1].addr, n[1].id, &s), RON_EPEERLIMIT);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_PER_PEER_LIMIT], 2);
    world_end(&w, n, 2);
}

static void
test_peer_global_ceiling_refuses_connection_past_max_conns(void **state)
{
    world_t w;
    node_t n[3];
    tx_peer_config_t cfg;
    tx_peer_session_t *s;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&cfg);
    cfg.max_conns = 1;
    node_start(&w, &n[0], &cfg, true);
    node_start(&w, &n[1], NULL, false);
    node_start(&w, &n[2], NULL, false);
    connect_pair(&w, &n[0], &n[1]);
    assert_int_equal(tx_peer_dial(n[2].p, n[0].addr, n[0].id, &s), 0);
    assert_true(run_until(&w, &n[2].n_closed, 1, 5000));
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_TOO_MANY_CONNS], 1);
    assert_int_equal(n[0].n_sess, 1);
    /* the full node does not dial either */
    assert_int_equal(tx_peer_dial(n[0].p, "127.0.0.1:9", n[2].id, &s), RON_EBUSY);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_TOO_MANY_CONNS], 2);
    world_end(&w, n, 3);
}

static void
test_peer_hello_negotiates_and_frames_flow_both_ways(void **state)
{
    world_t w;
    node_t n[2];
    tx_peer_config_t cfg;
    oap_frame_t f;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&cfg);
    cfg.max_frame = 131072;
    cfg.max_inflight = 2;
    node_start(&w, &n[0], &cfg, true);
    node_start(&w, &n[1], NULL, false);
    n[0].answer = true;
    n[1].answer = true;
    connect_pair(&w, &n[0], &n[1]);
    /* HELLO: the smaller max_frame on both sides; the listener's max_inflight binds the dialer */
    assert_int_equal(tx_peer_session_max_frame(n[0].sess[0]), 131072);
    assert_int_equal(tx_peer_session_max_frame(n[1].sess[0]), 131072);
    assert_int_equal(tx_peer_session_max_inflight(n[1].sess[0]), 2);
    /* dialer -> listener request, answered */
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_START | OAP_F_END;
    f.app_proto_id = OAP_APP_OVERLAY;
    f.corr_id = 7;
    f.payload = (const uint8_t *)"ping";
    f.payload_len = 4;
    assert_int_equal(tx_peer_send(n[1].sess[0], &f), 0);
    assert_true(run_until(&w, &n[1].frames, 1, 5000));
    assert_int_equal(n[0].frames, 1);
    assert_string_equal(n[0].last_payload, "ping");
    assert_string_equal(n[1].last_payload, "pong");
    /* listener -> dialer request, answered */
    f.corr_id = 9;
    f.payload = (const uint8_t *)"hi";
    f.payload_len = 2;
    assert_int_equal(tx_peer_send(n[0].sess[0], &f), 0);
    assert_true(run_until(&w, &n[0].frames, 2, 5000));
    assert_string_equal(n[1].last_payload, "hi");
    assert_string_equal(n[0].last_payload, "pong");
    /* a frame over the negotiated max_frame is refused locally */
    f.corr_id = 11;
    f.payload = big;
    f.payload_len = 131072;
    assert_int_equal(tx_peer_send(n[1].sess[0], &f), RON_ETOOBIG);
    /* streams in flight: the dialer may open 2, the third waits */
    f.flags = OAP_F_REQ | OAP_F_START;
    f.payload_len = 1;
    n[0].answer = false;
    for (uint64_t c = 20; c < 22; c++) {
        f.corr_id = c;
        assert_int_equal(tx_peer_send(n[1].sess[0], &f), 0);
    }
    f.corr_id = 22;
    assert_int_equal(tx_peer_send(n[1].sess[0], &f), RON_EBUSY);
    assert_true(run_until(&w, &n[0].frames, 4, 5000));
    assert_int_equal(tx_peer_stats(n[0].p)->streams_refused, 0);
    /* a graceful close reaches the other side */
    tx_peer_session_close(n[1].sess[0]);
    assert_true(run_until(&w, &n[0].n_closed, 1, 5000));
    assert_int_equal(n[0].last_close_rc, RON_ECLOSED);
    assert_int_equal(n[1].last_close_rc, 0);
    world_end(&w, n, 2);
}

static void
test_peer_idle_session_is_closed_and_counted(void **state)
{
    world_t w;
    node_t n[2];
    tx_peer_config_t cfg;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&cfg);
    cfg.idle_ms = 200;
    node_start(&w, &n[0], &cfg, true);
    node_start(&w, &n[1], NULL, false);
    connect_pair(&w, &n[0], &n[1]);
    assert_true(run_until(&w, &n[0].n_closed, 1, 3000));
    assert_int_equal(n[0].last_close_rc, RON_ETIMEOUT);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_IDLE_TIMEOUT], 1);
    assert_true(run_until(&w, &n[1].n_closed, 1, 3000));
    world_end(&w, n, 2);
}

static void
test_peer_stream_credit_paces_sender_until_reader_consumes(void **state)
{
    world_t w;
    node_t n[2];

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    node_start(&w, &n[1], NULL, false);
    connect_pair(&w, &n[0], &n[1]);
    n[1].stream_corr = 77;
    n[1].pumping = true;
    n[1].send_limit = 200;
    pump(&n[1]);
    /* one window of frames, then no credit: the sender waits */
    assert_int_equal(n[1].sent, OAP_STREAM_WINDOW);
    assert_true(run_until(&w, &n[0].frames, OAP_STREAM_WINDOW, 5000));
    run_for(&w, 100);
    assert_int_equal(n[1].sent, OAP_STREAM_WINDOW);
    assert_int_equal(n[1].writable, 0);
    /* the reader finishes frames: credit flows back, on_writable resumes the sender */
    for (uint32_t i = 0; i < OAP_STREAM_WINDOW; i++)
        assert_int_equal(tx_peer_consume(n[0].sess[0], 77, false, 1), 0);
    n[0].consume = true;
    assert_true(run_until(&w, &n[0].frames, 200, 10000));
    assert_int_equal(n[1].sent, 200);
    assert_true(n[1].writable >= 1);
    assert_int_equal(n[0].bytes, 200ull * BIG);
    world_end(&w, n, 2);
}

/* n[1] pumps 64 KiB EVENT frames at n[0], which stops reading. */
static void
slow_reader_setup(world_t *w, node_t *n, uint32_t write_timeout_ms)
{
    tx_peer_config_t cfg;

    world_init(w);
    tx_peer_config_default(&cfg);
    cfg.max_queue = 512u << 10;
    cfg.max_queue_hard = 1u << 20;
    cfg.write_timeout_ms = write_timeout_ms;
    node_start(w, &n[0], NULL, true);
    node_start(w, &n[1], &cfg, false);
    connect_pair(w, &n[0], &n[1]);
    tx_peer_session_pause(n[0].sess[0], true);
    assert_true(tx_peer_session_is_reading_paused(n[0].sess[0]));
    n[1].pumping = true;
    n[1].send_limit = 2000; /* 125 MiB: far more than the socket buffers hold */
    pump(&n[1]);
}

/* A reader that pauses after every frame: the ciphertext left in the read
 * buffer is kept for later, and every frame arrives whole and in order. */
static void
test_peer_reader_pausing_after_each_frame_gets_every_frame_intact(void **state)
{
    world_t w;
    node_t n[2];
    uint8_t payload[3000];
    oap_frame_t f;
    const int total = 120;

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    node_start(&w, &n[1], NULL, false);
    connect_pair(&w, &n[0], &n[1]);
    n[0].pause_each = true;
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_EVENT;
    f.app_proto_id = OAP_APP_OVERLAY;
    f.payload = payload;
    for (int k = 0; k < total; k++) { /* sizes vary so frames straddle TLS records */
        uint32_t idx = (uint32_t)k;
        f.payload_len = 4 + (size_t)(k * 37) % (sizeof payload - 4);
        memcpy(payload, &idx, 4);
        for (size_t i = 4; i < f.payload_len; i++)
            payload[i] = (uint8_t)(idx + i);
        assert_int_equal(tx_peer_send(n[1].sess[0], &f), 0);
    }
    assert_true(run_until(&w, &n[0].frames, 1, 5000));
    for (int round = 0; round < 10 * total && n[0].frames < total; round++) {
        int before = n[0].frames;
        assert_true(tx_peer_session_is_reading_paused(n[0].sess[0]));
        run_for(&w, 1); /* nothing arrives while paused */
        assert_int_equal(n[0].frames, before);
        tx_peer_session_pause(n[0].sess[0], false);
        (void)run_until(&w, &n[0].frames, before + 1, 2000);
    }
    assert_int_equal(n[0].frames, total);
    assert_int_equal(n[0].seq_bad, 0);
    assert_int_equal(n[0].n_closed, 0);
    world_end(&w, n, 2);
}

static void
test_peer_slow_reader_bounds_sender_queue(void **state)
{
    world_t w;
    node_t n[2];

    (void)state;
    slow_reader_setup(&w, n, 10000);
    /* the kernel buffers fill, then the sender's queue, then sends answer RON_EAGAIN */
    int sent = -1;
    for (int i = 0; i < 100 && sent != n[1].sent; i++) {
        sent = n[1].sent;
        run_for(&w, 150);
    }
    assert_int_equal(sent, n[1].sent);
    assert_true(sent < n[1].send_limit);
    assert_true(n[1].eagain > 0);
    assert_true(tx_peer_session_is_reading_paused(n[1].sess[0]));
    assert_true(tx_peer_session_queued(n[1].sess[0]) > (256u << 10));
    assert_true(tx_peer_stats(n[1].p)->read_pauses >= 1);
    run_for(&w, 200);
    assert_int_equal(n[1].sent, sent); /* nothing more while the reader sleeps */
    /* the reader wakes: every frame sent arrives, and the sender is told it may write */
    n[1].send_limit = sent + 10;
    tx_peer_session_pause(n[0].sess[0], false);
    assert_true(run_until(&w, &n[0].frames, sent + 10, 20000));
    assert_int_equal(n[0].frames, n[1].sent);
    assert_true(n[1].writable >= 1);
    assert_int_equal(n[0].bytes, (uint64_t)n[0].frames * BIG);
    assert_int_equal(n[1].n_closed, 0);
    world_end(&w, n, 2);
}

static void
test_peer_slow_reader_is_dropped_after_write_timeout(void **state)
{
    world_t w;
    node_t n[2];

    (void)state;
    slow_reader_setup(&w, n, 300);
    assert_true(run_until(&w, &n[1].n_closed, 1, 10000));
    assert_int_equal(n[1].last_close_rc, RON_EFLOOD);
    assert_int_equal(tx_peer_stats(n[1].p)->rejects[TX_PEER_REJ_SLOW_PEER], 1);
    world_end(&w, n, 2);
}

/* One 64 KiB EVENT frame to s; checks the node's bound on the way. Returns
 * tx_peer_send's answer. */
static int
send_big_checked(node_t *n, tx_peer_session_t *s, size_t total_bound, int *budget_refusals)
{
    oap_frame_t f;
    int rc;

    memset(&f, 0, sizeof f);
    f.flags = OAP_F_EVENT;
    f.app_proto_id = OAP_APP_OVERLAY;
    f.payload = big;
    f.payload_len = BIG;
    rc = tx_peer_send(s, &f);
    /* all sessions together: the bound plus one frame's records, never more */
    assert_true(tx_peer_stats(n->p)->queued <= total_bound + BIG + 4096);
    if (rc == RON_EAGAIN && tx_peer_session_queued(s) < n->max_queue)
        (*budget_refusals)++; /* refused by the node's budget, not the session's own */
    return rc;
}

/* The node-wide output budget: four peers that stop reading can together
 * hold no more than max_queue_total of the sender's memory (each far under
 * its own max_queue), are paused and then dropped as slow peers, and a fifth
 * peer that reads gets on_writable and its frames flow again. */
static void
test_peer_node_budget_bounds_all_queues_and_drops_stalled_peers(void **state)
{
    world_t w;
    node_t n[3];
    tx_peer_config_t lc, sc;
    tx_peer_session_t *s, *healthy = NULL;
    const size_t budget = 1u << 20;
    int budget_refusals = 0;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&lc);
    lc.max_per_peer = 8;
    tx_peer_config_default(&sc);
    sc.max_per_peer = 8;
    sc.max_queue = 1u << 20; /* a session alone would pause at 512 KiB: never reached here */
    sc.max_queue_hard = 2u << 20;
    sc.max_queue_total = budget;
    sc.write_timeout_ms = 500;
    node_start(&w, &n[0], &lc, true);  /* stalls: reads nothing */
    node_start(&w, &n[1], &sc, false); /* the sender */
    node_start(&w, &n[2], NULL, true); /* reads */
    for (int i = 0; i < 4; i++)
        assert_int_equal(tx_peer_dial(n[1].p, n[0].addr, n[0].id, &s), 0);
    assert_int_equal(tx_peer_dial(n[1].p, n[2].addr, n[2].id, &s), 0);
    assert_true(run_until(&w, &n[0].n_sess, 4, 5000));
    assert_true(run_until(&w, &n[1].n_sess, 5, 5000));
    for (int i = 0; i < 4; i++)
        tx_peer_session_pause(n[0].sess[i], true);
    for (int i = 0; i < n[1].n_sess; i++)
        if (memcmp(tx_peer_session_id(n[1].sess[i]), n[2].id, KMS_NODE_ID_LEN) == 0)
            healthy = n[1].sess[i];
    assert_non_null(healthy);
    /* fill: the stalled sessions until refused, the healthy one a frame a round */
    uv_update_time(&w.loop);
    uint64_t end = uv_now(&w.loop) + 20000;
    while (n[1].n_closed < 4 && uv_now(&w.loop) < end) {
        for (int i = 0; i < n[1].n_sess; i++) {
            s = n[1].sess[i];
            if (s == healthy)
                (void)send_big_checked(&n[1], s, budget, &budget_refusals);
            else
                for (int k = 0; k < 64 && send_big_checked(&n[1], s, budget, &budget_refusals) == 0;
                     k++)
                    ;
        }
        run_for(&w, 10);
    }
    /* the budget refused sends (no session reached its own bound), the
     * stalled peers were dropped as slow, the reader stayed */
    assert_true(budget_refusals > 0);
    assert_true(tx_peer_stats(n[1].p)->budget_waits > 0);
    assert_int_equal(n[1].n_closed, 4);
    assert_int_equal(n[1].last_close_rc, RON_EFLOOD);
    assert_int_equal(tx_peer_stats(n[1].p)->rejects[TX_PEER_REJ_SLOW_PEER], 4);
    assert_int_equal(n[1].n_sess, 1);
    assert_ptr_equal(n[1].sess[0], healthy);
    assert_true(n[1].writable >= 1); /* told once the total fell */
    /* the healthy peer's frames flow again */
    int before = n[2].frames;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(send_big_checked(&n[1], healthy, budget, &budget_refusals), 0);
        run_for(&w, 5);
    }
    assert_true(run_until(&w, &n[2].frames, before + 20, 5000));
    run_for(&w, 50);
    assert_true(tx_peer_stats(n[1].p)->queued < budget / 2);
    world_end(&w, n, 3);
}

/* Sessions that go quiet give their buffers back (decoder, OpenSSL's record
 * buffers), and still work afterwards. */
static void
test_peer_idle_sessions_release_their_buffers_and_still_work(void **state)
{
    world_t w;
    node_t n[2];
    oap_frame_t f;

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    node_start(&w, &n[1], NULL, false);
    connect_pair(&w, &n[0], &n[1]);
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_EVENT;
    f.app_proto_id = OAP_APP_OVERLAY;
    f.payload = big;
    f.payload_len = BIG; /* the receiver's decoder grows to hold it */
    assert_int_equal(tx_peer_send(n[1].sess[0], &f), 0);
    assert_true(run_until(&w, &n[0].frames, 1, 5000));
    assert_int_equal(tx_peer_stats(n[0].p)->buffers_released, 0);
    /* quiet for two sweeps: released (at least the 64 KiB frame's buffer) */
    run_for(&w, 2 * TX_PEER_RELEASE_MS + 300);
    assert_true(tx_peer_stats(n[0].p)->buffers_released >= BIG);
    /* and frames still flow both ways */
    assert_int_equal(tx_peer_send(n[1].sess[0], &f), 0);
    assert_true(run_until(&w, &n[0].frames, 2, 5000));
    assert_int_equal(tx_peer_send(n[0].sess[0], &f), 0);
    assert_true(run_until(&w, &n[1].frames, 1, 5000));
    assert_int_equal(n[0].bytes, 2ull * BIG);
    assert_int_equal(n[0].n_closed + n[1].n_closed, 0);
    world_end(&w, n, 2);
}

/* ---- a hand-driven TLS client that may break the protocol after TLS ---- */

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t req;
    SSL *ssl;
    int connected;
    int hs_done;
    int eof;
    uint8_t in[65536]; /* plaintext received */
    size_t in_len;
} tls_client_t;

static void
tls_client_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void
tls_client_flush(tls_client_t *c)
{
    size_t n = BIO_ctrl_pending(SSL_get_wbio(c->ssl));
    if (n == 0)
        return;
    uv_write_t *w = malloc(sizeof *w + n);
    assert_non_null(w);
    char *data = (char *)(w + 1);
    assert_int_equal(BIO_read(SSL_get_wbio(c->ssl), data, (int)n), (int)n);
    uv_buf_t b = uv_buf_init(data, (unsigned)n);
    assert_int_equal(uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, tls_client_written), 0);
}

static void
tls_client_drive(tls_client_t *c)
{
    if (!c->hs_done) {
        if (SSL_do_handshake(c->ssl) == 1)
            c->hs_done = 1;
        tls_client_flush(c);
        if (!c->hs_done)
            return;
    }
    for (;;) {
        int r = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof c->in - c->in_len));
        if (r <= 0)
            break;
        c->in_len += (size_t)r;
    }
    tls_client_flush(c);
}

static void
tls_client_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    tls_client_t *c = st->data;
    if (n < 0) {
        c->eof = 1;
        return;
    }
    assert_int_equal(BIO_write(SSL_get_rbio(c->ssl), b->base, (int)n), (int)n);
    tls_client_drive(c);
}

static void
tls_client_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char buf[65536];
    (void)h, (void)s;
    *b = uv_buf_init(buf, sizeof buf);
}

static void
tls_client_connected(uv_connect_t *req, int status)
{
    tls_client_t *c = req->handle->data;
    assert_int_equal(status, 0);
    c->connected = 1;
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, tls_client_alloc, tls_client_read), 0);
    tls_client_drive(c);
}

/* Connect c (Ed25519 certificate, ALPN oap/1) to addr and finish TLS. */
static void
tls_client_start(world_t *w, tls_client_t *c, const char *addr)
{
    struct sockaddr_storage ss;
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    SSL_CTX *ctx;

    memset(c, 0, sizeof *c);
    assert_non_null(k);
    ctx = client_ctx(k, (const unsigned char *)"\x05oap/1", 6);
    EVP_PKEY_free(k);
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    assert_non_null(c->ssl);
    SSL_set_bio(c->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(c->ssl);
    assert_int_equal(tx__addr_parse(addr, &ss), 0);
    assert_int_equal(uv_tcp_init(&w->loop, &c->tcp), 0);
    c->tcp.data = c;
    assert_int_equal(uv_tcp_connect(&c->req, &c->tcp, (struct sockaddr *)&ss, tls_client_connected),
                     0);
    assert_true(run_until(w, &c->hs_done, 1, 5000));
}

static void
tls_client_send(tls_client_t *c, const oap_frame_t *f)
{
    uint8_t buf[1024];
    ssize_t n = oap_frame_encode(f, OAP_MAX_FRAME, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(SSL_write(c->ssl, buf, (int)n), (int)n);
    tls_client_flush(c);
}

static void
tls_client_end(tls_client_t *c)
{
    uv_close((uv_handle_t *)&c->tcp, NULL);
    SSL_free(c->ssl);
}

/* Codes of the frames c received, in order, into codes (at most cap). */
static int
tls_client_codes(const tls_client_t *c, uint16_t *codes, int cap)
{
    int n = 0;
    size_t off = 0;
    oap_frame_t f;
    ssize_t l;

    while (n < cap && (l = oap_frame_parse(c->in + off, c->in_len - off, OAP_MAX_FRAME, &f)) > 0) {
        codes[n++] = f.code;
        off += (size_t)l;
    }
    return n;
}

static void
test_peer_first_frame_not_hello_is_answered_426_and_counted(void **state)
{
    world_t w;
    node_t n[1];
    tls_client_t c;
    oap_frame_t f;
    uint16_t codes[4];

    (void)state;
    world_init(&w);
    node_start(&w, &n[0], NULL, true);
    tls_client_start(&w, &c, n[0].addr);
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_START | OAP_F_END;
    f.app_proto_id = OAP_APP_OVERLAY;
    f.corr_id = 5;
    tls_client_send(&c, &f);
    assert_true(run_until(&w, &c.eof, 1, 5000));
    assert_int_equal(tls_client_codes(&c, codes, 4), 1);
    assert_int_equal(codes[0], 426);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_PROTO_MISMATCH], 1);
    assert_int_equal(tx_peer_stats(n[0].p)->established, 0);
    assert_int_equal(n[0].n_sess, 0);
    tls_client_end(&c);
    world_end(&w, n, 1);
}

static void
test_peer_stream_past_max_inflight_is_answered_429_then_bad_frame_closes(void **state)
{
    world_t w;
    node_t n[1];
    tx_peer_config_t cfg;
    tls_client_t c;
    oap_frame_t f;
    uint8_t hello[256];
    proto_hello_t h;
    uint16_t codes[8];
    ssize_t hl;

    (void)state;
    world_init(&w);
    tx_peer_config_default(&cfg);
    cfg.max_inflight = 2;
    node_start(&w, &n[0], &cfg, true);
    tls_client_start(&w, &c, n[0].addr);
    memset(&h, 0, sizeof h);
    hl = oap_hello_encode(&h, 1, false, hello, sizeof hello);
    assert_true(hl > 0);
    assert_int_equal(SSL_write(c.ssl, hello, (int)hl), (int)hl);
    tls_client_flush(&c);
    assert_true(run_until(&w, &n[0].n_sess, 1, 5000));
    /* three streams opened at once: the third is refused with 429, the session lives */
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_START;
    f.app_proto_id = OAP_APP_OVERLAY;
    for (uint64_t i = 1; i <= 3; i++) {
        f.corr_id = 100 + i;
        tls_client_send(&c, &f);
    }
    assert_true(run_until(&w, &n[0].frames, 2, 5000));
    run_for(&w, 100);
    assert_int_equal(n[0].frames, 2);
    assert_int_equal(tx_peer_stats(n[0].p)->streams_refused, 1);
    assert_int_equal(tls_client_codes(&c, codes, 8), 2); /* HELLO reply, then 429 */
    assert_int_equal(codes[0], 200);
    assert_int_equal(codes[1], 429);
    /* a frame of a stream never started is a protocol error: 400, then close */
    f.flags = OAP_F_REQ;
    f.corr_id = 999;
    tls_client_send(&c, &f);
    assert_true(run_until(&w, &c.eof, 1, 5000));
    assert_int_equal(tls_client_codes(&c, codes, 8), 3);
    assert_int_equal(codes[2], 400);
    assert_int_equal(tx_peer_stats(n[0].p)->rejects[TX_PEER_REJ_PROTOCOL], 1);
    assert_int_equal(n[0].last_close_rc, RON_EPROTO);
    tls_client_end(&c);
    world_end(&w, n, 1);
}

static void
test_peer_reject_names_are_stable(void **state)
{
    (void)state;
    assert_string_equal(tx_peer_reject_name(TX_PEER_REJ_WRONG_ID), "wrong_id");
    assert_string_equal(tx_peer_reject_name(TX_PEER_REJ_HANDSHAKE_TIMEOUT), "handshake_timeout");
    assert_string_equal(tx_peer_reject_name(TX_PEER_REJ__COUNT), "unknown");
    for (int r = 0; r < TX_PEER_REJ__COUNT; r++)
        assert_string_not_equal(tx_peer_reject_name((tx_peer_reject_t)r), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_handshake_both_ways_learns_ids),
        cmocka_unit_test(test_peer_listen_fd_adopts_an_inherited_listener),
        cmocka_unit_test(test_peer_dial_with_wrong_id_fails_with_epeerid_and_is_counted),
        cmocka_unit_test(test_peer_listener_rejects_client_without_certificate),
        cmocka_unit_test(test_peer_listener_rejects_rsa_client_certificate),
        cmocka_unit_test(test_peer_listener_rejects_p256_client_certificate),
        cmocka_unit_test(test_peer_listener_rejects_other_alpn),
        cmocka_unit_test(test_peer_listener_rejects_missing_alpn),
        cmocka_unit_test(test_peer_silent_client_hits_handshake_timeout),
        cmocka_unit_test(test_peer_per_peer_ceiling_rejects_extra_session),
        cmocka_unit_test(test_peer_global_ceiling_refuses_connection_past_max_conns),
        cmocka_unit_test(test_peer_hello_negotiates_and_frames_flow_both_ways),
        cmocka_unit_test(test_peer_idle_session_is_closed_and_counted),
        cmocka_unit_test(test_peer_stream_credit_paces_sender_until_reader_consumes),
        cmocka_unit_test(test_peer_slow_reader_bounds_sender_queue),
        cmocka_unit_test(test_peer_reader_pausing_after_each_frame_gets_every_frame_intact),
        cmocka_unit_test(test_peer_slow_reader_is_dropped_after_write_timeout),
        cmocka_unit_test(test_peer_node_budget_bounds_all_queues_and_drops_stalled_peers),
        cmocka_unit_test(test_peer_idle_sessions_release_their_buffers_and_still_work),
        cmocka_unit_test(test_peer_first_frame_not_hello_is_answered_426_and_counted),
        cmocka_unit_test(test_peer_stream_past_max_inflight_is_answered_429_then_bad_frame_closes),
        cmocka_unit_test(test_peer_reject_names_are_stable),
    };
    assert_int_equal(tx_tls_secure_heap_init(), 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
