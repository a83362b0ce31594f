/*
 * test_omnigate.c - the app port's connection state machine over real TCP
 * sockets on 127.0.0.1, with the real storage service (RAM store) behind it
 * on an in-process ron-bus hub. The server runs on the test's loop; each
 * test's client runs in a thread with blocking sockets (5 s receive
 * timeout) and records the first failed check, which the main thread
 * asserts once the client is done. Every wait is bounded in time; every
 * test ends with uv_loop_close() == 0.
 */
#include <arpa/inet.h>
#include <blake3.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "guard_fixture.h"
#include "omni_internal.h"
#include "omnigate.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_util.h"
#include "sto_service.h"

#define WAIT_MS 20000u /* a client thread must finish within this */

/* ---- fixture: loop, storage service, app port ---- */

typedef struct fx fx_t;
typedef void (*client_fn)(fx_t *fx);

struct fx {
    uv_loop_t loop;
    rbus_hub_t *hub;
    rbus_t *sbus, *abus;
    rbus_peer_t *storage;
    sto_service_t *svc;
    omni_t *g;
    int port;
    /* enforcement (fx_guard): an authority in RAM and the app's guard */
    guard_authority_t *auth;
    guard_t *guard;
    char op_tok[AUTH_MAX_TOKEN + 1]; /* the operator capability */
    char tok[AUTH_MAX_TOKEN + 1];    /* a test's narrower token */
    char tok2[AUTH_MAX_TOKEN + 1];
    char tok3[AUTH_MAX_TOKEN + 1]; /* minted from tok (records tok as its ancestor) */
    char addr[68];                   /* an object a test stored */
    /* client thread */
    client_fn fn;
    volatile int done;
    int fail_line;
    char fail_text[160];
};

static void
fx_open(fx_t *fx, const omni_config_t *oc)
{
    rbus_config_t sc = {0}, ac = {0};
    sto_config_t cfg = {0}; /* RAM store */
    sto_store_t *store = NULL;
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof sa;
    int rc = 0, fd;

    memset(fx, 0, sizeof *fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(sto_open(&cfg, &store), 0);
    fx->hub = rbus_hub_new(&fx->loop);
    sc.transport = ac.transport = RBUS_TRANSPORT_INPROC;
    sc.hub = ac.hub = fx->hub;
    sc.name = "storage";
    ac.name = "app";
    fx->sbus = rbus_new(&fx->loop, &sc, &rc);
    fx->abus = rbus_new(&fx->loop, &ac, &rc);
    assert_non_null(fx->sbus);
    assert_non_null(fx->abus);
    assert_int_equal(sto_service_new(&fx->loop, fx->sbus, store, NULL, &fx->svc), 0);
    assert_int_equal(rbus_listen(fx->sbus), 0);
    fx->storage = rbus_connect(fx->abus, "storage", &rc);
    assert_non_null(fx->storage);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    fx->port = ntohs(sa.sin_port);
    fx->g = omni_new(&fx->loop, oc);
    assert_int_equal(omni_listen_fd(fx->g, fd), 0);
    omni_set_peers(fx->g, fx->storage, NULL, NULL);
}

static void
closed_cb(void *arg)
{
    *(int *)arg = 1;
}

static void
fx_close(fx_t *fx)
{
    int closed = 0;

    omni_set_peers(fx->g, NULL, NULL, NULL);
    omni_close(fx->g, closed_cb, &closed);
    rbus_peer_close(fx->storage);
    sto_service_free(fx->svc);
    rbus_free(fx->abus);
    rbus_free(fx->sbus);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    rbus_hub_free(fx->hub);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    guard_fx_close(fx->auth, fx->guard);
}

/* Bring the guard up to the authority's head, page by page. */
static void
fx_sync(fx_t *fx)
{
    guard_fx_sync(fx->guard, fx->auth);
}

/* Enforce: an authority in RAM, a guard following it, the operator token. */
static void
fx_guard(fx_t *fx)
{
    uint8_t seed[32];

    memset(seed, 0x5a, sizeof seed);
    guard_fx_open(seed, "app", NULL, &fx->auth, &fx->guard, NULL, fx->op_tok, sizeof fx->op_tok);
    omni_set_guard(fx->g, fx->guard);
}

/* Mint a token of ops (and max_bytes, 0: none) under the guard; id_out may be NULL. */
static void
fx_mint(fx_t *fx, uint32_t ops, uint64_t max_bytes, char *out, size_t cap, char *id_out)
{
    auth_grant_t all;
    guard_mint_req_t m = {.ops = ops, .ttl = 600, .max_bytes = max_bytes};
    char id[AUTH_ID_MAX + 1];

    auth_grant_init(&all);
    assert_true(guard_mint(fx->guard, &all, "test", &m, out, cap, id) > 0);
    if (id_out != NULL)
        memcpy(id_out, id, sizeof id);
}

/* Mint a token of ops from the token whose identifier is parent_id: it
 * records that token as its ancestor (guard_mint's lineage). */
static void
fx_mint_child(fx_t *fx, const char *parent_id, uint32_t ops, char *out, size_t cap)
{
    auth_grant_t all;
    guard_mint_req_t m = {.ops = ops, .ttl = 600};
    char id[AUTH_ID_MAX + 1];

    auth_grant_init(&all);
    assert_true(guard_mint(fx->guard, &all, parent_id, &m, out, cap, id) > 0);
}

static void *
client_main(void *arg)
{
    fx_t *fx = arg;
    fx->fn(fx);
    __atomic_store_n(&fx->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void tick_cb(uv_timer_t *t) { (void)t; }

/* Run fn in a thread while the loop serves; then assert it passed. */
static void
fx_run_client(fx_t *fx, client_fn fn)
{
    pthread_t th;
    uv_timer_t tick;
    uint64_t until = ron_now_ms() + WAIT_MS;

    fx->fn = fn;
    fx->done = 0;
    uv_timer_init(&fx->loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    assert_int_equal(pthread_create(&th, NULL, client_main, fx), 0);
    while (!__atomic_load_n(&fx->done, __ATOMIC_ACQUIRE) && ron_now_ms() < until)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->done); /* else the client hangs: a bug */
    pthread_join(th, NULL);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    if (fx->fail_line != 0)
        fail_msg("client check failed at line %d: %s", fx->fail_line, fx->fail_text);
}

/* ---- a tiny blocking OAP/1 client (client thread only) ---- */

#define CK(fx, cond)                                                                   \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            if ((fx)->fail_line == 0) {                                                \
                (fx)->fail_line = __LINE__;                                            \
                snprintf((fx)->fail_text, sizeof (fx)->fail_text, "%s", #cond);        \
            }                                                                          \
            return;                                                                    \
        }                                                                              \
    } while (0)

typedef struct {
    uint16_t flags, code, app;
    uint64_t corr;
    uint8_t *payload; /* NUL-terminated copy */
    size_t len;
} cframe_t;

static int
cli_connect(fx_t *fx)
{
    struct sockaddr_in sa = {0};
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)fx->port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static bool
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

static bool
read_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}

static const char *cli_cap; /* token of every START but HELLO's (client thread), or NULL */
static bool cli_put_unsized; /* cli_put declares no size (client thread) */

static bool
cli_send(int fd, uint16_t flags, uint16_t app, uint64_t corr, const void *payload, size_t len)
{
    oap_frame_t f = {.flags = flags, .app_proto_id = app, .corr_id = corr,
                     .payload = payload, .payload_len = len};
    uint8_t hdr[OAP_HDR_LEN];
    f.tenant_id[15] = 7; /* tenant 7 for every request */
    if ((flags & OAP_F_START) && app != 0 && cli_cap != NULL) {
        f.cap = (const uint8_t *)cli_cap;
        f.cap_len = (uint16_t)strlen(cli_cap);
    }
    if (oap_header_encode(&f, OAP_MAX_FRAME, hdr) < 0)
        return false;
    return write_all(fd, hdr, sizeof hdr) && write_all(fd, f.cap, f.cap_len) &&
           write_all(fd, payload, len);
}

static bool
cli_send_json(int fd, uint16_t flags, uint16_t app, uint64_t corr, const char *json)
{
    return cli_send(fd, flags, app, corr, json, strlen(json));
}

/* Receive one frame (credit frames included). false on EOF/timeout/garbage. */
static bool
cli_recv(int fd, cframe_t *f)
{
    uint8_t hdr[OAP_HDR_LEN];
    oap_frame_t h;

    free(f->payload);
    memset(f, 0, sizeof *f);
    if (!read_all(fd, hdr, sizeof hdr) || oap_header_parse(hdr, sizeof hdr, OAP_MAX_FRAME, &h) < 0)
        return false;
    f->flags = h.flags;
    f->code = h.code;
    f->app = h.app_proto_id;
    f->corr = h.corr_id;
    f->len = h.len - OAP_HDR_LEN;
    f->payload = malloc(f->len + 1);
    if (!read_all(fd, f->payload, f->len))
        return false;
    f->payload[f->len] = '\0';
    return true;
}

/* Receive the next frame that is not a credit frame. */
static bool
cli_recv_data(int fd, cframe_t *f, uint32_t *credit)
{
    for (int i = 0; i < 10000; i++) {
        if (!cli_recv(fd, f))
            return false;
        if (f->app == 0 && (f->flags & OAP_F_EVENT)) {
            if (credit != NULL) {
                json_t *o = json_loads((const char *)f->payload, 0, NULL);
                *credit += (uint32_t)json_integer_value(json_object_get(o, "frames"));
                json_decref(o);
            }
            continue;
        }
        return true;
    }
    return false;
}

static bool
cli_hello(int fd)
{
    cframe_t f = {0};
    bool ok = cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 1, "{\"ua\":\"test\"}") &&
              cli_recv(fd, &f) && f.code == 200 && f.app == 0;
    free(f.payload);
    return ok;
}

/* True when the peer closed (EOF) within the receive timeout. */
static bool
cli_closed(int fd)
{
    uint8_t b[4096];
    for (int i = 0; i < 1000; i++) {
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0)
            return true;
        if (r < 0)
            return errno == ECONNRESET;
    }
    return false;
}

static const char *
jget(const cframe_t *f, const char *key, char *out, size_t cap)
{
    json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(out, cap, "%s", s != NULL ? s : "");
    json_decref(o);
    return out;
}

static void
fill(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (uint8_t)(seed >> 16);
    }
}

static void
b3_text(const uint8_t *b, size_t n, char out[68])
{
    blake3_hasher h;
    uint8_t d[32];
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, b, n);
    blake3_hasher_finalize(&h, d, 32);
    memcpy(out, "b3:", 3);
    for (int i = 0; i < 32; i++)
        snprintf(out + 3 + 2 * i, 3, "%02x", d[i]);
}

/*
 * Put n bytes in frames of chunk bytes on stream corr, honouring credit.
 * Returns the answer code (0 on a transport failure); addr gets the address.
 */
static uint16_t
cli_put(int fd, uint64_t corr, const uint8_t *b, size_t n, size_t chunk, const char *extra,
        char addr[68])
{
    char js[256];
    cframe_t f = {0};
    uint32_t credit = OAP_STREAM_WINDOW;
    size_t off = 0;
    uint16_t code = 0;

    if (cli_put_unsized)
        snprintf(js, sizeof js, "{\"op\":\"put\"%s}", extra);
    else
        snprintf(js, sizeof js, "{\"op\":\"put\",\"size\":\"%zu\"%s}", n, extra);
    if (!cli_send_json(fd, OAP_F_REQ | OAP_F_START | (n == 0 ? OAP_F_END : 0), 1, corr, js))
        return 0;
    credit--;
    while (off < n) {
        size_t len = RON_MIN(chunk, n - off);
        while (credit == 0) { /* wait for a grant */
            if (!cli_recv(fd, &f))
                goto out;
            if (f.app == 0 && (f.flags & OAP_F_EVENT) && f.corr == corr) {
                json_t *o = json_loads((const char *)f.payload, 0, NULL);
                credit += (uint32_t)json_integer_value(json_object_get(o, "frames"));
                json_decref(o);
            } else if (f.code >= 400) {
                code = f.code;
                goto out;
            }
        }
        if (!cli_send(fd, OAP_F_REQ | (off + len == n ? OAP_F_END : 0), 1, corr, b + off, len))
            goto out;
        credit--;
        off += len;
    }
    if (cli_recv_data(fd, &f, NULL)) {
        code = f.code;
        jget(&f, "address", addr, 68);
    }
out:
    free(f.payload);
    return code;
}

/* Get [offset, offset+length) (NULL = absent) into out; returns the status. */
static uint16_t
cli_get(int fd, uint64_t corr, const char *addr, const char *offset, const char *length,
        uint8_t *out, size_t cap, size_t *got_out, char meta_size[24])
{
    char js[256];
    int n = snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\"", addr);
    cframe_t f = {0};
    uint32_t frames = 0;
    uint16_t status;

    if (offset != NULL)
        n += snprintf(js + n, sizeof js - (size_t)n, ",\"offset\":\"%s\"", offset);
    if (length != NULL)
        n += snprintf(js + n, sizeof js - (size_t)n, ",\"length\":\"%s\"", length);
    snprintf(js + n, sizeof js - (size_t)n, "}");
    *got_out = 0;
    if (!cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, corr, js) ||
        !cli_recv_data(fd, &f, NULL))
        return 0;
    status = f.code;
    if (status >= 400 || (f.flags & OAP_F_END)) {
        free(f.payload);
        return status;
    }
    jget(&f, "size", meta_size, 24);
    for (int i = 0; i < 100000; i++) {
        if (!cli_recv_data(fd, &f, NULL) || f.code != status || *got_out + f.len > cap) {
            status = f.code >= 400 ? f.code : 0;
            break;
        }
        memcpy(out + *got_out, f.payload, f.len);
        *got_out += f.len;
        if (++frames % 8 == 0) {
            uint8_t cb[128];
            ssize_t cl = oap_credit_encode(corr, true, 8, cb, sizeof cb);
            if (cl < 0 || !write_all(fd, cb, (size_t)cl))
                break;
        }
        if (f.flags & OAP_F_END)
            break;
    }
    free(f.payload);
    return status;
}

/* ---- tests ---- */

static void
client_hello_and_ping(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    char v[64];

    CK(fx, fd >= 0);
    CK(fx, cli_hello(fd));
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 5, "{\"op\":\"ping\"}"));
    CK(fx, cli_recv(fd, &f) && f.code == 200 && f.corr == 5 && strcmp((char *)f.payload, "{}") == 0);
    CK(fx, f.flags == (OAP_F_RESP | OAP_F_END));
    CK(fx, cli_send(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 6, NULL, 0)); /* empty PING */
    CK(fx, cli_recv(fd, &f) && f.code == 200 && f.corr == 6);
    /* unknown op: 400 envelope naming op, connection stays */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 7, "{\"op\":\"frob\"}"));
    CK(fx, cli_recv(fd, &f) && f.code == 400 && f.corr == 7);
    CK(fx, strcmp(jget(&f, "reason", v, sizeof v), "op") == 0);
    CK(fx, strcmp(jget(&f, "corr_id", v, sizeof v), "7") == 0);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 8,
                         "{\"op\":\"stat\",\"address\":\"b3:00\",\"bogus\":\"1\"}"));
    CK(fx, cli_recv(fd, &f) && f.code == 400 && strcmp(jget(&f, "reason", v, sizeof v), "bogus") == 0);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 9, "{\"op\":\"ping\"}"));
    CK(fx, cli_recv(fd, &f) && f.code == 200);
    /* without a guard nothing is minted */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 6, 10,
                         "{\"op\":\"cap_mint\",\"ops\":[\"get\"]}"));
    CK(fx, cli_recv(fd, &f) && f.code == 403 &&
               strcmp(jget(&f, "reason", v, sizeof v), "no_authority") == 0);
    free(f.payload);
    close(fd);
}

static void
test_omni_answers_hello_then_ping_and_refuses_unknown_ops_with_envelopes(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_hello_and_ping);
    assert_int_equal(omni_stats(fx.g)->accepted, 1);
    fx_close(&fx);
}

static void
client_not_hello(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    char v[64];

    CK(fx, fd >= 0);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 3, "{\"op\":\"list\"}"));
    CK(fx, cli_recv(fd, &f) && f.code == 426);
    CK(fx, strcmp(jget(&f, "code", v, sizeof v), "proto_mismatch") == 0);
    CK(fx, cli_closed(fd));
    close(fd);
    /* a bad header after HELLO: envelope, then close */
    fd = cli_connect(fx);
    CK(fx, fd >= 0 && cli_hello(fd));
    uint8_t bad[OAP_HDR_LEN] = {0, 0, 0, 38, 0, 2}; /* version 2 */
    CK(fx, write_all(fd, bad, sizeof bad));
    CK(fx, cli_recv(fd, &f) && f.code == 426 && (f.flags & OAP_F_END));
    CK(fx, cli_closed(fd));
    close(fd);
    /* a body frame of a stream never started: 400, close */
    fd = cli_connect(fx);
    CK(fx, fd >= 0 && cli_hello(fd));
    CK(fx, cli_send(fd, OAP_F_REQ, 1, 77, "x", 1));
    CK(fx, cli_recv(fd, &f) && f.code == 400 && f.corr == 77);
    CK(fx, cli_closed(fd));
    free(f.payload);
    close(fd);
}

static void
test_omni_closes_with_an_envelope_on_non_hello_and_malformed_frames(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_not_hello);
    assert_true(omni_stats(fx.g)->rej_hello >= 1);
    assert_true(omni_stats(fx.g)->rej_proto >= 2);
    fx_close(&fx);
}

static void
client_put_get(fx_t *fx)
{
    int fd = cli_connect(fx);
    size_t n = 3 * 1024 * 1024 + 17, got = 0;
    uint8_t *b = malloc(n), *back = malloc(n);
    char addr[68] = "", want[68], size[24] = "";

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, n, 11);
    b3_text(b, n, want);
    /* 1 MiB - 38 frames: each split into 256 KiB put_writes */
    CK(fx, cli_put(fd, 10, b, n, OAP_MAX_FRAME - OAP_HDR_LEN, "", addr) == 201);
    CK(fx, strcmp(addr, want) == 0);
    /* again, in small frames (many credit rounds): already stored, 200 */
    CK(fx, cli_put(fd, 11, b, n, 40000, "", addr) == 200);
    CK(fx, cli_get(fd, 12, addr, NULL, NULL, back, n, &got, size) == 200);
    CK(fx, got == n && memcmp(back, b, n) == 0);
    CK(fx, strcmp(size, "3145745") == 0);
    /* a range across a 64 KiB piece boundary: 206 */
    CK(fx, cli_get(fd, 13, addr, "65530", "100", back, n, &got, size) == 206);
    CK(fx, got == 100 && memcmp(back, b + 65530, 100) == 0);
    /* offset at the end: 416 */
    CK(fx, cli_get(fd, 14, addr, "3145745", NULL, back, n, &got, size) == 416);
    /* empty object */
    CK(fx, cli_put(fd, 15, b, 0, 1, "", addr) == 201);
    b3_text(b, 0, want);
    CK(fx, strcmp(addr, want) == 0);
    CK(fx, cli_get(fd, 16, addr, NULL, NULL, back, n, &got, size) == 200 && got == 0);
    /* expect that does not match: 409 bad_digest */
    CK(fx, cli_put(fd, 17, b, 1000, 1000,
                   ",\"expect\":\"b3:0000000000000000000000000000000000000000000000000000000000000000\"",
                   addr) == 409);
    free(b);
    free(back);
    close(fd);
}

static void
test_omni_put_streams_with_credit_and_get_returns_verified_bytes_and_ranges(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_put_get);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    assert_int_equal(omni_stats(fx.g)->input_bytes, 0);
    fx_close(&fx);
}

static void
client_streams(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    int n429 = 0;

    CK(fx, fd >= 0 && cli_hello(fd));
    /* 64 puts left open, then a 65th START */
    for (uint64_t i = 1; i <= OAP_MAX_INFLIGHT + 1; i++)
        CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START, 1, 100 + i, "{\"op\":\"put\"}"));
    /* (the storage service may refuse some of the 64 puts itself: 429 on their ids) */
    for (int i = 0; i < 500 && n429 == 0; i++) {
        CK(fx, cli_recv(fd, &f));
        if (f.code == 429 && f.corr == 100 + OAP_MAX_INFLIGHT + 1) {
            char v[64];
            CK(fx, strcmp(jget(&f, "code", v, sizeof v), "quota_exhausted") == 0);
            n429++;
        }
    }
    CK(fx, n429 == 1);
    /* the connection still works */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 5, "{\"op\":\"ping\"}"));
    for (int i = 0; i < 500; i++) {
        CK(fx, cli_recv(fd, &f));
        if (f.corr == 5 && f.app == 0 && !(f.flags & OAP_F_EVENT))
            break;
    }
    CK(fx, f.code == 200 && f.corr == 5);
    free(f.payload);
    close(fd);
}

static void
test_omni_answers_429_to_the_65th_open_stream_and_keeps_the_connection(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_streams);
    assert_int_equal(omni_stats(fx.g)->rej_streams, 1);
    fx_close(&fx);
    /* the connection went away with 64 open puts: all aborted (checked by the
     * storage service's leak-free close under ASan) */
}

static void
client_timeouts(fx_t *fx)
{
    int fd = cli_connect(fx), fd2, fd3;
    cframe_t f = {0};

    CK(fx, fd >= 0);
    /* no HELLO: 408 after the (test's 200 ms) HELLO timeout, then close */
    CK(fx, cli_recv(fd, &f) && f.code == 408);
    CK(fx, cli_closed(fd));
    close(fd);
    /* HELLO and nothing else: closed when idle */
    fd2 = cli_connect(fx);
    CK(fx, fd2 >= 0 && cli_hello(fd2));
    /* connection limit is 1: a second connection gets 503 and is closed */
    fd3 = cli_connect(fx);
    CK(fx, fd3 >= 0 && cli_recv(fd3, &f) && f.code == 503);
    CK(fx, cli_closed(fd3));
    close(fd3);
    CK(fx, cli_closed(fd2));
    close(fd2);
    free(f.payload);
}

static void
test_omni_enforces_hello_timeout_idle_close_and_connection_limit(void **state)
{
    (void)state;
    fx_t fx;
    omni_config_t oc = {.max_conns = 1, .hello_timeout_ms = 200, .idle_ms = 300};
    fx_open(&fx, &oc);
    fx_run_client(&fx, client_timeouts);
    assert_int_equal(omni_stats(fx.g)->rej_hello_timeout, 1);
    assert_int_equal(omni_stats(fx.g)->rej_idle, 1);
    assert_int_equal(omni_stats(fx.g)->rej_conns, 1);
    fx_close(&fx);
}

static size_t max_output_seen;

static void
client_slow_reader(fx_t *fx)
{
    int fd = cli_connect(fx);
    size_t n = 2 * 1024 * 1024, got = 0;
    uint8_t *b = malloc(n), *back = malloc(n);
    char addr[68] = "", js[128], size[24];
    int rcv = 4096;

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, n, 5);
    CK(fx, cli_put(fd, 1, b, n, 500000, "", addr) == 201);
    /* 40 gets started, nothing read for a while: the server must stop */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    for (uint64_t i = 0; i < 40; i++) {
        snprintf(js, sizeof js, "{\"op\":\"get\",\"address\":\"%s\"}", addr);
        CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 100 + i, js));
    }
    usleep(1500 * 1000);
    close(fd); /* gone with 40 gets stalled: the server cleans up */
    /* and still serves */
    fd = cli_connect(fx);
    CK(fx, fd >= 0 && cli_hello(fd));
    CK(fx, cli_get(fd, 500, addr, NULL, NULL, back, n, &got, size) == 200);
    CK(fx, got == n && memcmp(back, b, n) == 0);
    free(b);
    free(back);
    close(fd);
}

static void
watch_output(uv_timer_t *t)
{
    fx_t *fx = t->data;
    size_t o = omni_stats(fx->g)->output_bytes;
    if (o > max_output_seen)
        max_output_seen = o;
}

static void
test_omni_bounds_output_for_a_client_that_stops_reading(void **state)
{
    (void)state;
    fx_t fx;
    uv_timer_t w;
    fx_open(&fx, NULL);
    max_output_seen = 0;
    uv_timer_init(&fx.loop, &w);
    w.data = &fx;
    uv_timer_start(&w, watch_output, 2, 2);
    fx_run_client(&fx, client_slow_reader);
    uv_close((uv_handle_t *)&w, NULL);
    /* 40 x 2 MiB were asked for; output stays near its bound (4 MiB + a frame per stream) */
    assert_true(max_output_seen > 0);
    assert_true(max_output_seen <= OMNI_MAX_OUTPUT + 40u * (OMNI_BUS_CHUNK + 1024u));
    assert_true(omni_stats(fx.g)->read_paused >= 1);
    fx_close(&fx);
}

static void
client_idem(fx_t *fx)
{
    int fd = cli_connect(fx);
    uint8_t b[100];
    char addr[68] = "", js[256], v[32];
    cframe_t f = {0};

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, sizeof b, 9);
    CK(fx, cli_put(fd, 1, b, sizeof b, 100, "", addr) == 201); /* pins: 1 */
    snprintf(js, sizeof js, "{\"op\":\"unpin\",\"address\":\"%s\",\"idem\":\"u-1\"}", addr);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 2, js));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 200);
    CK(fx, strcmp(jget(&f, "pins", v, sizeof v), "0") == 0);
    /* the same key again: the remembered answer (a real unpin would be 404) */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 3, js));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 200 && f.corr == 3);
    CK(fx, strcmp(jget(&f, "pins", v, sizeof v), "0") == 0);
    /* without the key it runs: 404 (not pinned) */
    snprintf(js, sizeof js, "{\"op\":\"unpin\",\"address\":\"%s\"}", addr);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 4, js));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 404 && f.corr == 4);
    CK(fx, strcmp(jget(&f, "corr_id", v, sizeof v), "4") == 0);
    /* a malformed key: 400 */
    snprintf(js, sizeof js, "{\"op\":\"pin\",\"address\":\"%s\",\"idem\":\"a b\"}", addr);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 5, js));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 400 &&
               strcmp(jget(&f, "reason", v, sizeof v), "idem") == 0);
    /* naming is not connected here: 503, retryable */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 2, 6,
                         "{\"op\":\"resolve\",\"name\":\"x.ron\"}"));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 503);
    CK(fx, strstr((char *)f.payload, "\"retryable\":true") != NULL);
    free(f.payload);
    close(fd);
}

static void
test_omni_repeats_the_remembered_answer_for_an_idempotency_key(void **state)
{
    (void)state;
    fx_t fx;
    char buf[16384];
    size_t n;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_idem);
    n = omni_metrics(fx.g, buf, sizeof buf - 1);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "app_requests_total{app=\"storage\",op=\"unpin\",status=\"200\"} 2"));
    assert_non_null(strstr(buf, "app_requests_total{app=\"storage\",op=\"put\",status=\"201\"} 1"));
    assert_non_null(strstr(buf, "app_connections 0"));
    fx_close(&fx);
}

static void
client_small_frames(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    uint8_t b[64];
    char addr[68], v[32];
    json_t *o;

    CK(fx, fd >= 0);
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 1, "{\"max_frame\":4096}"));
    CK(fx, cli_recv(fd, &f) && f.code == 200);
    o = json_loadb((const char *)f.payload, f.len, 0, NULL);
    CK(fx, json_integer_value(json_object_get(o, "max_frame")) == 4096);
    json_decref(o);
    for (int i = 0; i < 40; i++) { /* 40 objects: a list answer of ~8 KiB */
        fill(b, sizeof b, (uint32_t)i + 100);
        CK(fx, cli_put(fd, 10 + (uint64_t)i, b, sizeof b, sizeof b, "", addr) == 201);
    }
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 99, "{\"op\":\"list\"}"));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 413 && f.corr == 99);
    CK(fx, strcmp(jget(&f, "reason", v, sizeof v), "max_frame") == 0);
    /* the stream is finished and the connection goes on */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 1, 99,
                         "{\"op\":\"list\",\"limit\":\"2\"}"));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 200 && f.corr == 99);
    free(f.payload);
    close(fd);
}

static void
test_omni_answers_413_when_a_json_answer_exceeds_the_negotiated_max_frame(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_small_frames);
    fx_close(&fx);
}

static void
client_comp_and_body(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    uint8_t b[200000], back[200000];
    uint8_t *z = NULL;
    size_t zlen = 0, got = 0;
    char want[68], addr[68], size[24], v[32];
    const char *start = "{\"op\":\"put\"}";

    CK(fx, fd >= 0 && cli_hello(fd));
    memset(b, 'a', sizeof b); /* compresses well */
    b3_text(b, sizeof b, want);
    /* START and body both zstd-compressed (COMP): inflated by the port */
    CK(fx, oap_deflate((const uint8_t *)start, strlen(start), 3, &z, &zlen) == 0);
    CK(fx, cli_send(fd, OAP_F_REQ | OAP_F_START | OAP_F_COMP, 1, 3, z, zlen));
    free(z);
    CK(fx, oap_deflate(b, sizeof b, 3, &z, &zlen) == 0 && zlen < 1000);
    CK(fx, cli_send(fd, OAP_F_REQ | OAP_F_END | OAP_F_COMP, 1, 3, z, zlen));
    free(z);
    CK(fx, cli_recv_data(fd, &f, NULL) && f.code == 201 && f.corr == 3);
    CK(fx, strcmp(jget(&f, "address", addr, sizeof addr), want) == 0);
    CK(fx, cli_get(fd, 4, addr, NULL, NULL, back, sizeof back, &got, size) == 200);
    CK(fx, got == sizeof b && memcmp(back, b, got) == 0);
    /* a body on an op that takes none: 400 reason body (both frames in one
     * write, so the port sees the body before the store answers) */
    {
        const char *js = "{\"op\":\"gc\",\"target\":\"0\"}";
        uint8_t two[2 * OAP_HDR_LEN + 64];
        oap_frame_t f1 = {.flags = OAP_F_REQ | OAP_F_START, .app_proto_id = 1, .corr_id = 5,
                          .payload = (const uint8_t *)js, .payload_len = strlen(js)};
        oap_frame_t f2 = {.flags = OAP_F_REQ | OAP_F_END, .app_proto_id = 1, .corr_id = 5,
                          .payload = (const uint8_t *)"junk", .payload_len = 4};
        ssize_t n1 = oap_frame_encode(&f1, OAP_MAX_FRAME, two, sizeof two);
        CK(fx, n1 > 0);
        ssize_t n2 = oap_frame_encode(&f2, OAP_MAX_FRAME, two + n1, sizeof two - (size_t)n1);
        CK(fx, n2 > 0 && write_all(fd, two, (size_t)(n1 + n2)));
    }
    CK(fx, cli_recv_data(fd, &f, NULL) && f.corr == 5 && f.code == 400);
    CK(fx, strcmp(jget(&f, "reason", v, sizeof v), "body") == 0);
    /* one answer only, and the connection goes on */
    CK(fx, cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 6, "{\"op\":\"ping\"}"));
    CK(fx, cli_recv_data(fd, &f, NULL) && f.corr == 6 && f.code == 200);
    free(f.payload);
    close(fd);
}

static void
test_omni_inflates_compressed_requests_and_refuses_a_body_where_none_belongs(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_run_client(&fx, client_comp_and_body);
    fx_close(&fx);
}

/* ---- enforcement (a real guard) ---- */

/* One START|END request on app; the answer's first frame in *f. Returns its code (0: none). */
static uint16_t
cli_req(int fd, uint16_t app, uint64_t corr, const char *json, cframe_t *f)
{
    if (!cli_send_json(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, app, corr, json) ||
        !cli_recv_data(fd, f, NULL))
        return 0;
    return f->code;
}

/* True when f is the envelope of status with slug code and reason. */
static bool
is_envelope(const cframe_t *f, uint16_t status, const char *code, const char *reason)
{
    char v[64];
    return f->code == status && strcmp(jget(f, "code", v, sizeof v), code) == 0 &&
           strcmp(jget(f, "reason", v, sizeof v), reason) == 0;
}

static void
client_anonymous(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    uint8_t b[1000], back[1000];
    char js[160], size[24];
    size_t got = 0;

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, sizeof b, 3);
    cli_cap = fx->op_tok; /* the operator stores an object */
    CK(fx, cli_put(fd, 10, b, sizeof b, 400, "", fx->addr) == 201);
    cli_cap = NULL; /* anyone reads it */
    CK(fx, cli_get(fd, 11, fx->addr, NULL, NULL, back, sizeof back, &got, size) == 200);
    CK(fx, got == sizeof b && memcmp(back, b, got) == 0);
    snprintf(js, sizeof js, "{\"op\":\"stat\",\"address\":\"%s\"}", fx->addr);
    CK(fx, cli_req(fd, 1, 12, js, &f) == 200);
    /* but not write, list, collect or run the node: 401 capability_required */
    CK(fx, cli_req(fd, 1, 13, "{\"op\":\"put\",\"size\":\"0\"}", &f) == 401);
    CK(fx, is_envelope(&f, 401, "unauthorized", "capability_required"));
    CK(fx, strcmp(jget(&f, "corr_id", js, sizeof js), "13") == 0);
    CK(fx, cli_req(fd, 1, 14, "{\"op\":\"list\"}", &f) == 401);
    CK(fx, cli_req(fd, 1, 15, "{\"op\":\"gc\",\"target\":\"1\"}", &f) == 401);
    CK(fx, cli_req(fd, 6, 16, "{\"op\":\"status\"}", &f) == 401);
    CK(fx, cli_req(fd, 9, 17, "{\"op\":\"commit\",\"id\":\"ab\"}", &f) == 401);
    CK(fx, cli_req(fd, 6, 18, "{\"op\":\"cap_mint\",\"ops\":[\"get\"]}", &f) == 401);
    /* the passport stays open (its service is not running here: 503, not 401) */
    CK(fx, cli_req(fd, 7, 19, "{\"op\":\"challenge\"}", &f) == 503);
    /* the operator passes the admin check where loopback used to decide */
    cli_cap = fx->op_tok;
    CK(fx, cli_req(fd, 6, 20, "{\"op\":\"status\"}", &f) == 503);
    CK(fx, cli_req(fd, 1, 21, "{\"op\":\"list\"}", &f) == 200);
    cli_cap = NULL;
    free(f.payload);
    close(fd);
}

static void
test_omni_guard_allows_anonymous_get_and_answers_401_to_anonymous_writes(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_guard(&fx);
    fx_run_client(&fx, client_anonymous);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    fx_close(&fx);
}

static void
client_narrow_and_bad(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    uint8_t b[500], back[500];
    char addr[68] = "", size[24];
    size_t got = 0, n;

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, sizeof b, 5);
    cli_cap = fx->op_tok;
    CK(fx, cli_put(fd, 10, b, sizeof b, 500, "", fx->addr) == 201);
    /* a get-only token reads, and gets 403 for a put (nothing stored) */
    cli_cap = fx->tok;
    CK(fx, cli_get(fd, 11, fx->addr, NULL, NULL, back, sizeof back, &got, size) == 200);
    CK(fx, got == sizeof b);
    b[0] ^= 1;
    CK(fx, cli_put(fd, 12, b, sizeof b, 500, "", addr) == 403);
    CK(fx, cli_req(fd, 1, 13, "{\"op\":\"put\",\"size\":\"0\"}", &f) == 403);
    CK(fx, is_envelope(&f, 403, "forbidden", "forbidden"));
    /* nor run the node or write the registry: those need admin */
    CK(fx, cli_req(fd, 6, 20, "{\"op\":\"reload\"}", &f) == 403);
    CK(fx, cli_req(fd, 9, 21, "{\"op\":\"propose\",\"descriptor\":{}}", &f) == 403);
    CK(fx, cli_req(fd, 1, 22, "{\"op\":\"gc\",\"target\":\"1\"}", &f) == 403);
    /* a token that is not one: 401 capability_invalid */
    cli_cap = "not-a-token";
    CK(fx, cli_req(fd, 1, 14, "{\"op\":\"put\",\"size\":\"0\"}", &f) == 401);
    CK(fx, is_envelope(&f, 401, "unauthorized", "capability_invalid"));
    /* the operator token with its signature altered: 401 too (even for a get) */
    snprintf(fx->tok2, sizeof fx->tok2, "%s", fx->op_tok);
    n = strlen(fx->tok2);
    fx->tok2[n - 2] = fx->tok2[n - 2] == 'A' ? 'B' : 'A';
    cli_cap = fx->tok2;
    CK(fx, cli_get(fd, 15, fx->addr, NULL, NULL, back, sizeof back, &got, size) == 401);
    cli_cap = NULL;
    free(f.payload);
    close(fd);
}

static void
test_omni_guard_answers_403_to_a_get_only_token_put_and_401_to_a_bad_token(void **state)
{
    (void)state;
    fx_t fx;
    uint8_t b[500];
    char gone[68];
    fx_open(&fx, NULL);
    fx_guard(&fx);
    fx_mint(&fx, 1u << AUTH_OP_GET, 0, fx.tok, sizeof fx.tok, NULL);
    fx_run_client(&fx, client_narrow_and_bad);
    /* the refused put stored nothing */
    fill(b, sizeof b, 5);
    b[0] ^= 1;
    b3_text(b, sizeof b, gone);
    assert_int_not_equal(strcmp(gone, fx.addr), 0);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    fx_close(&fx);
}

static void
client_put_once(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    uint8_t b[300];
    char addr[68] = "";

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, sizeof b, (uint32_t)ron_now_ms());
    cli_cap = fx->tok;
    /* the put's status into fx->addr, the reason of a second put into fx->tok2 */
    snprintf(fx->addr, sizeof fx->addr, "%u", (unsigned)cli_put(fd, 10, b, sizeof b, 300, "", addr));
    CK(fx, cli_req(fd, 1, 11, "{\"op\":\"put\",\"size\":\"0\"}", &f) != 0);
    jget(&f, "reason", fx->tok2, sizeof fx->tok2);
    cli_cap = NULL;
    free(f.payload);
    close(fd);
}

static void
test_omni_guard_answers_401_to_a_revoked_token_once_the_revocation_is_applied(void **state)
{
    (void)state;
    fx_t fx;
    char id[AUTH_ID_MAX + 1];
    guard_entry_t e;

    fx_open(&fx, NULL);
    fx_guard(&fx);
    fx_mint(&fx, 1u << AUTH_OP_PUT | 1u << AUTH_OP_GET, 0, fx.tok, sizeof fx.tok, id);
    fx_run_client(&fx, client_put_once);
    assert_string_equal(fx.addr, "201");
    assert_int_equal(guard_authority_revoke(fx.auth, id, strlen(id), 0, ron_unix_time(), &e), 0);
    fx_sync(&fx);
    fx_run_client(&fx, client_put_once);
    assert_string_equal(fx.addr, "401");
    assert_string_equal(fx.tok2, "capability_revoked");
    fx_close(&fx);
}

static void
client_max_bytes(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    size_t n = 300000;
    uint8_t *b = malloc(n);
    char addr[68] = "";

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, n, 9);
    b3_text(b, n, fx->addr);
    cli_cap = fx->tok; /* put, at most 100000 bytes a put */
    /* no size declared: refused as the bytes pass the bound */
    cli_put_unsized = true;
    CK(fx, cli_put(fd, 10, b, n, 40000, "", addr) == 403);
    cli_put_unsized = false;
    /* a declared size over it: refused at once */
    CK(fx, cli_req(fd, 1, 11, "{\"op\":\"put\",\"size\":\"100001\"}", &f) == 403);
    CK(fx, is_envelope(&f, 403, "forbidden", "forbidden"));
    /* within it: stored, declared or not */
    CK(fx, cli_put(fd, 12, b, 100000, 40000, "", addr) == 201);
    cli_put_unsized = true;
    CK(fx, cli_put(fd, 13, b + 1, 100000, 40000, "", addr) == 201);
    cli_put_unsized = false;
    cli_cap = NULL;
    free(f.payload);
    free(b);
    close(fd);
}

/* stat answered on the bus: records the status in *arg. */
static void
stat_reply(void *arg, int status, const oap_frame_t *resp)
{
    *(int *)arg = status < 0 ? status : resp->code;
}

static void
test_omni_guard_refuses_a_put_past_the_capability_max_bytes_as_the_bytes_arrive(void **state)
{
    (void)state;
    fx_t fx;
    char js[128];
    uint8_t buf[4 + sizeof js];
    rbus_request_opts_t o = {.app_proto_id = OAP_APP_STORAGE, .deadline_ms = 5000};
    int st = 0, n;

    fx_open(&fx, NULL);
    fx_guard(&fx);
    fx_mint(&fx, 1u << AUTH_OP_PUT, 100000, fx.tok, sizeof fx.tok, NULL);
    fx_run_client(&fx, client_max_bytes);
    for (int i = 0; i < 200 && sto_service_open_puts(fx.svc) != 0; i++)
        uv_run(&fx.loop, UV_RUN_NOWAIT); /* the aborts in flight */
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    /* the refused 300000 bytes are not in the store */
    n = snprintf(js, sizeof js, "{\"address\":\"%s\",\"op\":\"stat\"}", fx.addr);
    memcpy(buf + 4, js, (size_t)n);
    (void)proto_json_frame(buf, js, (uint32_t)n);
    o.cap = fx.op_tok;
    o.cap_len = strlen(fx.op_tok);
    assert_int_equal(rbus_request_ex(fx.storage, &o, buf, 4 + (size_t)n, stat_reply, &st), 0);
    for (int i = 0; i < 2000 && st == 0; i++)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(st, 404);
    fx_close(&fx);
}

static void
client_prefix(fx_t *fx)
{
    int fd = cli_connect(fx);
    uint8_t in[64], out[64];
    char a1[68], a2[68], addr[68] = "";
    bool have_in = false, have_out = false;

    CK(fx, fd >= 0 && cli_hello(fd));
    /* one object whose address starts with b3:0, one whose does not */
    for (uint32_t seed = 1; seed < 2000 && !(have_in && have_out); seed++) {
        uint8_t b[64];
        char a[68];
        fill(b, sizeof b, seed);
        b3_text(b, sizeof b, a);
        if (a[3] == '0' && !have_in) {
            memcpy(in, b, sizeof b);
            memcpy(a1, a, sizeof a);
            have_in = true;
        } else if (a[3] != '0' && !have_out) {
            memcpy(out, b, sizeof b);
            memcpy(a2, a, sizeof a);
            have_out = true;
        }
    }
    CK(fx, have_in && have_out);
    cli_cap = fx->tok; /* put, prefix = b3:0 */
    CK(fx, cli_put(fd, 10, in, sizeof in, 64, "", addr) == 201 && strcmp(addr, a1) == 0);
    CK(fx, cli_put(fd, 11, out, sizeof out, 64, "", addr) == 403);
    /* with expect, the address is known at once: refused before anything is sent on */
    {
        char extra[96];
        snprintf(extra, sizeof extra, ",\"expect\":\"%s\"", a2);
        CK(fx, cli_put(fd, 12, out, sizeof out, 64, extra, addr) == 403);
    }
    cli_cap = NULL;
    close(fd);
}

static void
test_omni_guard_answers_403_to_a_put_outside_the_capability_prefix(void **state)
{
    (void)state;
    fx_t fx;
    auth_grant_t all;
    guard_mint_req_t m = {.ops = 1u << AUTH_OP_PUT, .ttl = 600, .prefix = "b3:0"};
    char id[AUTH_ID_MAX + 1];

    fx_open(&fx, NULL);
    fx_guard(&fx);
    auth_grant_init(&all);
    assert_true(guard_mint(fx.guard, &all, "test", &m, fx.tok, sizeof fx.tok, id) > 0);
    fx_run_client(&fx, client_prefix);
    assert_int_equal(sto_service_open_puts(fx.svc), 0);
    fx_close(&fx);
}

static void
client_rate(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    int n429 = 0;

    CK(fx, fd >= 0 && cli_hello(fd));
    cli_cap = fx->tok; /* rate = 2/s */
    for (uint64_t i = 0; i < 6 && n429 == 0; i++) {
        uint16_t code = cli_req(fd, 1, 10 + i, "{\"op\":\"list\"}", &f);
        CK(fx, code == 200 || code == 429);
        if (code == 429) {
            CK(fx, is_envelope(&f, 429, "quota_exhausted", "rate_limited"));
            json_t *o = json_loadb((const char *)f.payload, f.len, 0, NULL);
            json_int_t ra = json_integer_value(json_object_get(o, "retry_after_ms"));
            json_decref(o);
            CK(fx, ra > 0 && ra <= 1000); /* the next token of a 2/s bucket */
            n429++;
        }
    }
    CK(fx, n429 == 1);
    cli_cap = NULL;
    free(f.payload);
    close(fd);
}

static void
test_omni_guard_answers_429_past_a_token_rate(void **state)
{
    (void)state;
    fx_t fx;
    const char *rate[] = {"rate = 2/s"};
    char base[AUTH_MAX_TOKEN + 1];

    fx_open(&fx, NULL);
    fx_guard(&fx);
    fx_mint(&fx, 1u << AUTH_OP_PIN, 0, base, sizeof base, NULL);
    assert_true(auth_attenuate(base, strlen(base), rate, 1, fx.tok, sizeof fx.tok) > 0);
    fx_run_client(&fx, client_rate);
    fx_close(&fx);
}

static void
client_mint(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    uint8_t b[200], back[200];
    char addr[68] = "", size[24];
    size_t got = 0;

    CK(fx, fd >= 0 && cli_hello(fd));
    fill(b, sizeof b, 21);
    cli_cap = fx->op_tok;
    CK(fx, cli_put(fd, 9, b, sizeof b, 200, "", fx->addr) == 201);
    /* the operator mints a get-only token */
    CK(fx, cli_req(fd, 6, 10, "{\"op\":\"cap_mint\",\"ops\":[\"get\"],\"ttl\":\"60\"}", &f) ==
               200);
    jget(&f, "token", fx->tok, sizeof fx->tok);
    CK(fx, strncmp(jget(&f, "id", size, sizeof size), "ron1:", 5) == 0);
    cli_cap = fx->tok;
    CK(fx, cli_get(fd, 11, fx->addr, NULL, NULL, back, sizeof back, &got, size) == 200);
    CK(fx, cli_put(fd, 12, b, 100, 100, "", addr) == 403);
    /* it cannot mint: 403 */
    CK(fx, cli_req(fd, 6, 13, "{\"op\":\"cap_mint\",\"ops\":[\"get\"]}", &f) == 403);
    /* a get+mint token cannot mint wider than itself */
    cli_cap = fx->op_tok;
    CK(fx, cli_req(fd, 6, 14, "{\"op\":\"cap_mint\",\"ops\":[\"get\",\"mint\"]}", &f) == 200);
    jget(&f, "token", fx->tok2, sizeof fx->tok2);
    cli_cap = fx->tok2;
    CK(fx, cli_req(fd, 6, 15, "{\"op\":\"cap_mint\",\"ops\":[\"put\"]}", &f) == 403);
    CK(fx, is_envelope(&f, 403, "forbidden", "capability_wider"));
    CK(fx, cli_req(fd, 6, 16, "{\"op\":\"cap_mint\",\"ops\":[\"get\"],\"max_bytes\":\"10\","
                              "\"prefix\":\"b3:0\"}", &f) == 200);
    /* malformed asks: 400 naming the field */
    CK(fx, cli_req(fd, 6, 17, "{\"op\":\"cap_mint\",\"ops\":[]}", &f) == 400);
    CK(fx, is_envelope(&f, 400, "bad_request", "ops"));
    CK(fx, cli_req(fd, 6, 18, "{\"op\":\"cap_mint\",\"ops\":[\"get\"],\"tenant\":\"AB\"}", &f) ==
               400);
    CK(fx, is_envelope(&f, 400, "bad_request", "tenant"));
    cli_cap = NULL;
    free(f.payload);
    close(fd);
}

static void
test_omni_cap_mint_narrows_the_caller_capability_and_refuses_wider_asks(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_guard(&fx);
    fx_run_client(&fx, client_mint);
    fx_close(&fx);
}

static void
test_omni_allows_kernel_ops_only_from_loopback_peers(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

    memset(&ss, 0, sizeof ss);
    s4->sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.5", &s4->sin_addr);
    assert_true(omni__addr_is_loopback(&ss));
    inet_pton(AF_INET, "10.0.0.1", &s4->sin_addr);
    assert_false(omni__addr_is_loopback(&ss));
    memset(&ss, 0, sizeof ss);
    s6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::1", &s6->sin6_addr);
    assert_true(omni__addr_is_loopback(&ss));
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &s6->sin6_addr);
    assert_true(omni__addr_is_loopback(&ss));
    inet_pton(AF_INET6, "::ffff:192.168.1.1", &s6->sin6_addr);
    assert_false(omni__addr_is_loopback(&ss));
    inet_pton(AF_INET6, "2001:db8::1", &s6->sin6_addr);
    assert_false(omni__addr_is_loopback(&ss));
    assert_false(omni__addr_is_loopback(NULL));
}

static void
test_omni_request_parser_checks_fields_per_op(void **state)
{
    (void)state;
    omni_request_t r;
    proto_err_t e;
    const char *ok_get = "{\"op\":\"get\",\"address\":\"b3:"
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
                         "\"offset\":\"5\"}";

    assert_int_equal(omni_request_parse(1, (const uint8_t *)ok_get, strlen(ok_get), "app", &r, &e), 0);
    assert_int_equal(r.op, OMNI_OP_GET);
    assert_true(r.has_offset && !r.has_length && r.offset == 5);
    assert_int_equal(r.addr[0], 0x01);
    omni_request_close(&r);
#define BAD(app, js, fld)                                                                 \
    do {                                                                                    \
        assert_int_equal(omni_request_parse(app, (const uint8_t *)js, strlen(js), "app", &r, &e), \
                         RON_EJSON);                                                        \
        assert_string_equal(e.field, fld);                                                  \
    } while (0)
    BAD(1, "{\"op\":\"put\",\"address\":\"x\"}", "address");
    BAD(1, "{\"op\":\"nope\"}", "op");
    BAD(3, "{\"op\":\"send\"}", "app_proto_id");
    BAD(1, "{\"op\":\"get\",\"address\":\"b3:XX\"}", "address");
    BAD(1, "{\"op\":\"gc\",\"target\":\"1\",\"idem\":\"\"}", "idem");
    BAD(6, "{\"op\":\"release\"}", "service");
    BAD(2, "{\"op\":\"resolve\",\"name\":\"a\",\"idem\":\"k\"}", "idem");
    /* forwarded: idem dropped, the kernel told who asks */
    const char *rel = "{\"op\":\"release\",\"service\":\"storage\"}";
    assert_int_equal(omni_request_parse(6, (const uint8_t *)rel, strlen(rel), "app", &r, &e), 0);
    assert_string_equal(r.fwd, "{\"op\":\"release\",\"service\":\"app\",\"target\":\"storage\"}");
    omni_request_close(&r);
    const char *pin = "{\"op\":\"pin\",\"address\":\"b3:1\",\"idem\":\"K_1\"}";
    assert_int_equal(omni_request_parse(1, (const uint8_t *)pin, strlen(pin), "app", &r, &e), 0);
    assert_string_equal(r.fwd, "{\"address\":\"b3:1\",\"op\":\"pin\"}");
    assert_string_equal(r.idem, "K_1");
    omni_request_close(&r);
}

static void
test_omni_request_parser_forwards_registry_ops_strictly(void **state)
{
    (void)state;
    omni_request_t r;
    proto_err_t e;
    const char *commit = "{\"op\":\"commit\",\"id\":\"ab\",\"idem\":\"K_2\"}";
    const char *get = "{\"op\":\"get\",\"version\":\"3\"}";

    assert_int_equal(omni_request_parse(9, (const uint8_t *)commit, strlen(commit), "app", &r, &e),
                     0);
    assert_int_equal(r.op, OMNI_OP_REG_COMMIT);
    assert_string_equal(r.fwd, "{\"id\":\"ab\",\"op\":\"commit\"}");
    assert_string_equal(r.idem, "K_2");
    omni_request_close(&r);
    /* "get" on app 9 is the registry's, not storage's */
    assert_int_equal(omni_request_parse(9, (const uint8_t *)get, strlen(get), "app", &r, &e), 0);
    assert_int_equal(r.op, OMNI_OP_REG_GET);
    assert_string_equal(r.fwd, "{\"op\":\"get\",\"version\":\"3\"}");
    omni_request_close(&r);
    BAD(9, "{\"op\":\"approve\",\"id\":\"a\",\"pk\":\"b\",\"sig\":\"c\",\"x\":1}", "x");
    BAD(9, "{\"op\":\"head\",\"idem\":\"k\"}", "idem");
    BAD(9, "{\"op\":\"put\"}", "op");
}

static void
test_omni_request_parser_cap_revoke_takes_an_id_or_an_epoch_for_the_kernel(void **state)
{
    (void)state;
    omni_request_t r;
    proto_err_t e;
    const char *by_id = "{\"op\":\"cap_revoke\",\"id\":\"ron1:r1:0:ab\",\"until\":\"9\","
                        "\"idem\":\"K_3\"}";
    const char *by_epoch = "{\"op\":\"cap_revoke\",\"epoch\":\"next\"}";

    assert_int_equal(omni_request_parse(6, (const uint8_t *)by_id, strlen(by_id), "app", &r, &e),
                     0);
    assert_int_equal(r.op, OMNI_OP_CAP_REVOKE);
    assert_false(r.revoke_epoch);
    assert_string_equal(r.fwd, "{\"id\":\"ron1:r1:0:ab\",\"op\":\"auth_revoke\",\"service\":\"app\","
                               "\"until\":\"9\"}");
    assert_string_equal(r.idem, "K_3");
    omni_request_close(&r);
    assert_int_equal(
        omni_request_parse(6, (const uint8_t *)by_epoch, strlen(by_epoch), "app", &r, &e), 0);
    assert_true(r.revoke_epoch);
    assert_string_equal(r.fwd, "{\"epoch\":\"next\",\"op\":\"auth_revoke\",\"service\":\"app\"}");
    omni_request_close(&r);
    BAD(6, "{\"op\":\"cap_revoke\"}", "id");
    BAD(6, "{\"op\":\"cap_revoke\",\"id\":\"a\",\"epoch\":\"next\"}", "id");
    BAD(6, "{\"op\":\"cap_revoke\",\"id\":7}", "id");
    BAD(6, "{\"op\":\"cap_revoke\",\"epoch\":\"next\",\"until\":1}", "until");
    BAD(6, "{\"op\":\"cap_revoke\",\"id\":\"a\",\"token\":\"t\"}", "token");
    BAD(1, "{\"op\":\"cap_revoke\",\"id\":\"a\"}", "op");
}

/* cap_revoke by id with a mint token: OMNI_REVOKE_PER_MIN a minute, then 429;
 * the budget is the caller's lineage (a token minted from it draws on the
 * same budget; an unrelated token has its own), and key_rotate
 * needs admin. No kernel stands behind this app port: allowed requests are
 * forwarded and answered 503. */
static void
client_revoke_rate(fx_t *fx)
{
    int fd = cli_connect(fx);
    cframe_t f = {0};
    char js[160];
    uint64_t corr = 10;

    CK(fx, fd >= 0 && cli_hello(fd));
    cli_cap = fx->tok;
    for (unsigned i = 0; i < OMNI_REVOKE_PER_MIN; i++) {
        snprintf(js, sizeof js, "{\"op\":\"cap_revoke\",\"id\":\"ron1:r1:0:%032x\"}", i);
        CK(fx, cli_req(fd, 6, corr++, js, &f) == 503);
    }
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"cap_revoke\",\"id\":\"ron1:r1:0:ff\"}", &f) == 429);
    CK(fx, is_envelope(&f, 429, "quota_exhausted", "rate_limited"));
    cli_cap = fx->tok3; /* minted from tok: no fresh budget */
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"cap_revoke\",\"id\":\"ron1:r1:0:fe\"}", &f) == 429);
    cli_cap = fx->tok2; /* another caller: its own budget */
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"cap_revoke\",\"id\":\"ron1:r1:0:ff\"}", &f) == 503);
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"key_rotate\"}", &f) == 403); /* mint is not admin */
    cli_cap = fx->op_tok; /* the epoch is admin's, and not counted */
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"cap_revoke\",\"epoch\":\"next\"}", &f) == 503);
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"key_rotate\"}", &f) == 503);
    CK(fx, cli_req(fd, 6, corr++, "{\"op\":\"key_show\"}", &f) == 503);
    free(f.payload);
    close(fd);
}

static void
test_omni_cap_revoke_by_id_is_limited_per_caller_with_429(void **state)
{
    (void)state;
    fx_t fx;
    fx_open(&fx, NULL);
    fx_guard(&fx);
    char tok_id[AUTH_ID_MAX + 1];
    fx_mint(&fx, 1u << AUTH_OP_MINT, 0, fx.tok, sizeof fx.tok, tok_id);
    fx_mint(&fx, 1u << AUTH_OP_MINT, 0, fx.tok2, sizeof fx.tok2, NULL);
    fx_mint_child(&fx, tok_id, 1u << AUTH_OP_MINT, fx.tok3, sizeof fx.tok3);
    fx_run_client(&fx, client_revoke_rate);
    fx_close(&fx);
}

static void
test_omni_request_parser_forwards_key_rotate_show_and_passport_rotate(void **state)
{
    (void)state;
    omni_request_t r;
    proto_err_t e;
    const char *rot = "{\"op\":\"key_rotate\"}", *show = "{\"op\":\"key_show\"}",
               *prot = "{\"op\":\"rotate\",\"keys\":[\"sign\"]}";

    assert_int_equal(omni_request_parse(6, (const uint8_t *)rot, strlen(rot), "app", &r, &e), 0);
    assert_int_equal(r.op, OMNI_OP_KEY_ROTATE);
    assert_int_equal(r.auth_op, AUTH_OP_ADMIN);
    assert_string_equal(r.fwd, "{\"op\":\"auth_rotate\",\"service\":\"app\"}");
    omni_request_close(&r);
    assert_int_equal(omni_request_parse(6, (const uint8_t *)show, strlen(show), "app", &r, &e), 0);
    assert_int_equal(r.auth_op, AUTH_OP_ADMIN);
    assert_string_equal(r.fwd, "{\"op\":\"auth_show\",\"service\":\"app\"}");
    omni_request_close(&r);
    assert_int_equal(omni_request_parse(7, (const uint8_t *)prot, strlen(prot), "app", &r, &e), 0);
    assert_int_equal(r.op, OMNI_OP_PASS_ROTATE);
    assert_int_equal(r.auth_op, AUTH_OP_ADMIN);
    assert_string_equal(r.fwd, "{\"keys\":[\"sign\"],\"op\":\"rotate\"}");
    omni_request_close(&r);
    BAD(6, "{\"op\":\"key_rotate\",\"idem\":\"k\"}", "idem");
    BAD(6, "{\"op\":\"key_show\",\"kid\":\"r1\"}", "kid");
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as in the node: a peer gone mid-write is an error code */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_omni_request_parser_checks_fields_per_op),
        cmocka_unit_test(test_omni_request_parser_cap_revoke_takes_an_id_or_an_epoch_for_the_kernel),
        cmocka_unit_test(test_omni_allows_kernel_ops_only_from_loopback_peers),
        cmocka_unit_test(test_omni_request_parser_forwards_registry_ops_strictly),
        cmocka_unit_test(test_omni_answers_hello_then_ping_and_refuses_unknown_ops_with_envelopes),
        cmocka_unit_test(test_omni_closes_with_an_envelope_on_non_hello_and_malformed_frames),
        cmocka_unit_test(test_omni_put_streams_with_credit_and_get_returns_verified_bytes_and_ranges),
        cmocka_unit_test(test_omni_answers_429_to_the_65th_open_stream_and_keeps_the_connection),
        cmocka_unit_test(test_omni_enforces_hello_timeout_idle_close_and_connection_limit),
        cmocka_unit_test(test_omni_bounds_output_for_a_client_that_stops_reading),
        cmocka_unit_test(test_omni_repeats_the_remembered_answer_for_an_idempotency_key),
        cmocka_unit_test(test_omni_answers_413_when_a_json_answer_exceeds_the_negotiated_max_frame),
        cmocka_unit_test(test_omni_inflates_compressed_requests_and_refuses_a_body_where_none_belongs),
        cmocka_unit_test(test_omni_guard_allows_anonymous_get_and_answers_401_to_anonymous_writes),
        cmocka_unit_test(test_omni_guard_answers_403_to_a_get_only_token_put_and_401_to_a_bad_token),
        cmocka_unit_test(test_omni_guard_answers_401_to_a_revoked_token_once_the_revocation_is_applied),
        cmocka_unit_test(test_omni_guard_refuses_a_put_past_the_capability_max_bytes_as_the_bytes_arrive),
        cmocka_unit_test(test_omni_cap_mint_narrows_the_caller_capability_and_refuses_wider_asks),
        cmocka_unit_test(test_omni_guard_answers_429_past_a_token_rate),
        cmocka_unit_test(test_omni_guard_answers_403_to_a_put_outside_the_capability_prefix),
        cmocka_unit_test(test_omni_cap_revoke_by_id_is_limited_per_caller_with_429),
        cmocka_unit_test(test_omni_request_parser_forwards_key_rotate_show_and_passport_rotate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
