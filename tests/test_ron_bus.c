/*
 * test_ron_bus.c - ron-bus over real Unix sockets (in a private temp
 * directory) and over the in-process hub, with fork()ed peer processes where
 * a process boundary matters (SIGKILL of a server). Every wait is bounded in
 * time; every loop test ends with uv_loop_close() == 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rbus_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"
#include "ron_util.h"

#define APP_ECHO 1
#define APP_EVENTS OAP_APP_KERNEL

/* Run the loop until cond holds or ms pass; a repeating tick keeps it from blocking. */
static void tick_cb(uv_timer_t *t) { (void)t; }
#define RUN_UNTIL(loop, cond, ms)                                                   \
    do {                                                                            \
        uv_timer_t tick_;                                                           \
        uint64_t until_ = ron_now_ms() + (ms);                                      \
        uv_timer_init((loop), &tick_);                                              \
        uv_timer_start(&tick_, tick_cb, 5, 5);                                      \
        while (!(cond) && ron_now_ms() < until_)                                    \
            uv_run((loop), UV_RUN_ONCE);                                            \
        uv_close((uv_handle_t *)&tick_, NULL);                                      \
        uv_run((loop), UV_RUN_NOWAIT);                                              \
    } while (0)

/* ---- the service under test, written once against rbus_ ---- */

typedef struct {
    rbus_req_t *held[4 * RBUS_MAX_INFLIGHT]; /* requests "hang" left unanswered */
    int nheld;
    int served;
} svc_t;

static void
svc_handle(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    svc_t *s = arg;

    s->served++;
    if (f->payload_len == 4 && memcmp(f->payload, "hang", 4) == 0 &&
        s->nheld < (int)RON_ARRAY_LEN(s->held)) {
        s->held[s->nheld++] = req;
        return;
    }
    rbus_respond(req, 200, f->payload, f->payload_len);
}

static void
svc_register(rbus_t *b, svc_t *s)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(rbus_handle(b, APP_ECHO, svc_handle, s), 0);
}

/* Answer the held requests (their connection may be gone: RON_ECLOSED then). */
static void
svc_release(svc_t *s)
{
    for (int i = 0; i < s->nheld; i++)
        rbus_respond(s->held[i], 200, "late", 4);
    s->nheld = 0;
}

/* ---- replies ---- */

typedef struct {
    int calls;
    int status;
    uint16_t code;
    char body[64];
    uint64_t at_ms;
} reply_t;

static void
reply_cb(void *arg, int status, const oap_frame_t *resp)
{
    reply_t *r = arg;

    r->calls++;
    r->status = status;
    r->at_ms = ron_now_ms();
    if (resp != NULL) {
        r->code = resp->code;
        size_t n = RON_MIN(resp->payload_len, sizeof r->body - 1);
        memcpy(r->body, resp->payload, n);
        r->body[n] = '\0';
    }
}

typedef struct {
    int up, down;
    rbus_peer_t *last;
} peers_t;

static void
peer_cb(void *arg, rbus_peer_t *p, bool up)
{
    peers_t *x = arg;

    if (up) {
        x->up++;
        x->last = p;
    } else {
        x->down++;
    }
}

/* ---- fixtures ---- */

typedef struct {
    uv_loop_t loop;
    char dir[RBUS_MAX_DIR];
    uint8_t secret[RBUS_SECRET_LEN];
    rbus_hub_t *hub;
} fx_t;

static void
fx_init(fx_t *fx)
{
    memset(fx, 0, sizeof *fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(rbus_dir_create(fx->dir, sizeof fx->dir), 0);
    assert_int_equal(rbus_secret_generate(fx->secret), 0);
    fx->hub = rbus_hub_new(&fx->loop);
}

static void
fx_close(fx_t *fx)
{
    rbus_hub_free(fx->hub);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    rbus_dir_remove(fx->dir);
}

static rbus_t *
fx_bus(fx_t *fx, rbus_transport_t t, const char *name)
{
    rbus_config_t cfg = {.transport = t, .name = name, .dir = fx->dir, .hub = fx->hub};
    int rc = -1;
    rbus_t *b;

    memcpy(cfg.secret, fx->secret, RBUS_SECRET_LEN);
    b = rbus_new(&fx->loop, &cfg, &rc);
    assert_non_null(b);
    assert_int_equal(rc, 0);
    return b;
}

static void
request_sync(fx_t *fx, rbus_peer_t *p, const char *body, uint32_t deadline, reply_t *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(rbus_request(p, APP_ECHO, body, strlen(body), deadline, reply_cb, r), 0);
    assert_int_equal(r->calls, 0); /* never completed from inside rbus_request */
    RUN_UNTIL(&fx->loop, r->calls > 0, 3000);
    assert_int_equal(r->calls, 1);
}

/* ---- tests ---- */

static void
roundtrip_on(rbus_transport_t t)
{
    fx_t fx;
    svc_t svc;
    reply_t r;
    rbus_stats_t st;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, t, "storage");
    rbus_t *cli = fx_bus(&fx, t, "gateway");
    svc_register(srv, &svc);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "storage", NULL);
    assert_non_null(p);
    /* Sent while connecting: waits for HELLO, then goes out. */
    request_sync(&fx, p, "hello", 2000, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "hello");
    assert_true(rbus_peer_is_up(p));
    assert_string_equal(rbus_peer_name(p), "storage");
    assert_int_equal(rbus_peer_pid(p), getpid());
    for (int i = 0; i < 20; i++) {
        request_sync(&fx, p, "again", 2000, &r);
        assert_string_equal(r.body, "again");
    }
    rbus_stats_get(srv, &st);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.requests_received, 21);
    assert_int_equal(st.responses_sent, 21);
    rbus_stats_get(cli, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.requests_sent, 21);
    assert_int_equal(st.responses_received, 21);
    assert_true(st.frames_out >= 22 && st.frames_in >= 22);
    rbus_peer_close(p);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_same_service_answers_over_unix_sockets(void **state)
{
    (void)state;
    roundtrip_on(RBUS_TRANSPORT_UNIX);
}

static void
test_bus_same_service_answers_in_process(void **state)
{
    (void)state;
    roundtrip_on(RBUS_TRANSPORT_INPROC);
}

/* ---- owned answers (rbus_respond_owned) and rbus_frame_take ---- */

typedef struct {
    uint8_t *sent; /* the payload the handler handed over (its address) */
    size_t len;
    int req_taken; /* request frames rbus_frame_take gave the handler */
} owned_svc_t;

static void
owned_handle(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    owned_svc_t *s = arg;
    uint8_t *buf = malloc(RBUS_HEADROOM + 7 + f->payload_len);
    /* a request sent by copy can be kept too (in process): its views stay valid */
    void *req_block = rbus_frame_take(f);

    assert_non_null(buf);
    s->req_taken += req_block != NULL;
    s->sent = buf + RBUS_HEADROOM + 7; /* any offset past the headroom */
    s->len = f->payload_len;
    for (size_t i = 0; i < f->payload_len; i++)
        s->sent[i] = (uint8_t)(f->payload[i] ^ 0x5a);
    assert_int_equal(rbus_respond_owned(req, 200, buf, s->sent, s->len), 0);
    free(req_block);
}

typedef struct {
    int calls;
    uint16_t code;
    const uint8_t *payload; /* as delivered */
    uint8_t *taken;         /* rbus_frame_take's block, or NULL */
    bool second_take_null;
    bool no_take; /* leave the frame to the bus */
    uint8_t body[64];
    size_t len;
} owned_reply_t;

static void
owned_reply_cb(void *arg, int status, const oap_frame_t *resp)
{
    owned_reply_t *r = arg;

    r->calls++;
    assert_int_equal(status, 0);
    r->code = resp->code;
    r->payload = resp->payload;
    r->len = RON_MIN(resp->payload_len, sizeof r->body);
    r->taken = r->no_take ? NULL : rbus_frame_take(resp);
    r->second_take_null = r->no_take || rbus_frame_take(resp) == NULL;
    memcpy(r->body, resp->payload, r->len);
}

static void
owned_on(rbus_transport_t t)
{
    fx_t fx;
    owned_svc_t svc = {0};
    owned_reply_t r = {0};
    static const char msg[] = "zero-copy answer";

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, t, "overlay");
    rbus_t *cli = fx_bus(&fx, t, "storage");
    assert_int_equal(rbus_handle(srv, APP_ECHO, owned_handle, &svc), 0);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "overlay", NULL);
    assert_non_null(p);
    for (int round = 0; round < 3; round++) {
        memset(&r, 0, sizeof r);
        r.no_take = round == 2; /* then the bus frees the block (ASan checks the leak) */
        assert_int_equal(rbus_request(p, APP_ECHO, msg, sizeof msg - 1, 2000, owned_reply_cb, &r),
                         0);
        RUN_UNTIL(&fx.loop, r.calls > 0, 3000);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.code, 200);
        assert_int_equal(r.len, sizeof msg - 1);
        for (size_t i = 0; i < r.len; i++)
            assert_int_equal(r.body[i], (uint8_t)(msg[i] ^ 0x5a));
        assert_true(r.second_take_null);
        if (t == RBUS_TRANSPORT_INPROC) {
            /* in process: delivered in the handler's own memory, kept by the taker */
            assert_ptr_equal(r.payload, svc.sent);
            if (r.no_take)
                continue;
            assert_non_null(r.taken);
            assert_true(r.payload > r.taken);
            free(r.taken);
        } else {
            /* over a socket: copied, nothing to take */
            assert_null(r.taken);
        }
    }
    assert_int_equal(svc.req_taken, t == RBUS_TRANSPORT_INPROC ? 3 : 0);
    /* rbus_frame_take outside a delivery: nothing */
    {
        oap_frame_t f = {.payload = (const uint8_t *)msg, .payload_len = 1};
        assert_null(rbus_frame_take(&f));
    }
    rbus_peer_close(p);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_owned_answer_is_copied_over_unix_sockets(void **state)
{
    (void)state;
    owned_on(RBUS_TRANSPORT_UNIX);
}

static void
test_bus_owned_answer_reaches_the_taker_without_a_copy_in_process(void **state)
{
    (void)state;
    owned_on(RBUS_TRANSPORT_INPROC);
}

/* ---- large frames over a Unix socket are handed to the taker ---- */

static uint8_t
big_byte(size_t len, size_t i)
{
    return (uint8_t)(i * 7u + len);
}

/* Answers a request of a u32be length with that many pattern bytes, every
 * other answer handed over (rbus_respond_owned), the others copied. */
static void
big_handle(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    int *n = arg;
    size_t len;
    uint8_t *block, *out;

    assert_int_equal(f->payload_len, 4);
    len = ron_get_u32be(f->payload);
    block = malloc(RBUS_HEADROOM + len + 1);
    assert_non_null(block);
    out = block + RBUS_HEADROOM;
    for (size_t i = 0; i < len; i++)
        out[i] = big_byte(len, i);
    if ((*n)++ % 2 == 0) {
        assert_int_equal(rbus_respond_owned(req, 200, block, out, len), 0);
        return;
    }
    assert_int_equal(rbus_respond(req, 200, out, len), 0);
    free(block);
}

typedef struct {
    int calls, taken, intact;
    bool no_take;
} big_reply_t;

static void
big_reply_cb(void *arg, int status, const oap_frame_t *resp)
{
    big_reply_t *r = arg;
    uint8_t *block = NULL;
    bool ok = status == 0 && resp->code == 200;

    r->calls++;
    if (ok && !r->no_take) {
        block = rbus_frame_take(resp);
        if (block != NULL) {
            r->taken++;
            ok = rbus_frame_take(resp) == NULL; /* at most one take */
        }
    }
    for (size_t i = 0; ok && i < resp->payload_len; i++)
        ok = resp->payload[i] == big_byte(resp->payload_len, i);
    r->intact += ok;
    free(block); /* the views stayed valid until here */
}

static void
test_bus_large_answers_over_unix_sockets_reach_the_taker_in_their_own_buffer(void **state)
{
    /* mixed sizes in flight at once (more than the socket buffers: answers
     * wait in the sender, copied or in their own block): small ones are
     * copied out, large ones taken */
    static const uint32_t sizes[] = {900000, 900000, 17,     200000, 65536 + 100, 5,
                                     900000, 70000,  900000, 1000,   900000,      900000};
    enum { N = sizeof sizes / sizeof sizes[0] };
    big_reply_t r[N];
    fx_t fx;
    int calls, answered = 0;

    (void)state;
    memset(r, 0, sizeof r);
    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "overlay");
    rbus_t *cli = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "storage");
    assert_int_equal(rbus_handle(srv, APP_ECHO, big_handle, &answered), 0);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "overlay", NULL);
    assert_non_null(p);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < N; i++) {
            uint8_t q[4];
            memset(&r[i], 0, sizeof r[i]);
            r[i].no_take = round == 1 && i % 3 == 0; /* left to the bus: it reads on */
            ron_put_u32be(q, sizes[i]);
            assert_int_equal(rbus_request(p, APP_ECHO, q, 4, 5000, big_reply_cb, &r[i]), 0);
        }
        for (int spin = 0; spin < 500; spin++) {
            calls = 0;
            for (size_t i = 0; i < N; i++)
                calls += r[i].calls;
            if (calls == N)
                break;
            RUN_UNTIL(&fx.loop, false, 10);
        }
        for (size_t i = 0; i < N; i++) {
            assert_int_equal(r[i].calls, 1);
            assert_int_equal(r[i].intact, 1);
            if (sizes[i] < 64 * 1024 || r[i].no_take)
                assert_int_equal(r[i].taken, 0); /* small: copied */
            else if (sizes[i] == 900000)
                assert_int_equal(r[i].taken, 1); /* large: its own buffer */
            /* (200000, 65636 and 70000 after a 900000 are copied: the buffer
             * sized for that one is over twice theirs, too much to hand over) */
        }
    }
    rbus_peer_close(p);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

/* Answers with the request frame's tenant_id as 32 hex digits, then, when
 * the frame has a cap section, "|<cap>|<payload>". */
static void
tenant_handle(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    char out[128];
    int n = 0;

    (void)arg;
    for (int i = 0; i < 16; i++)
        n += snprintf(out + n, sizeof out - (size_t)n, "%02x", f->tenant_id[i]);
    if (f->cap_len > 0)
        n += snprintf(out + n, sizeof out - (size_t)n, "|%.*s|%.*s", (int)f->cap_len,
                      (const char *)f->cap, (int)f->payload_len, (const char *)f->payload);
    rbus_respond(req, 200, out, (size_t)n);
}

static void
tenant_on(rbus_transport_t t)
{
    fx_t fx;
    reply_t r1 = {0}, r2 = {0}, r0 = {0}, r3 = {0}, r4 = {0};
    rbus_request_opts_t o = {.app_proto_id = APP_ECHO, .deadline_ms = 2000};

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, t, "storage");
    rbus_t *cli = fx_bus(&fx, t, "app");
    assert_int_equal(rbus_handle(srv, APP_ECHO, tenant_handle, NULL), 0);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "storage", NULL);
    assert_non_null(p);
    for (int i = 0; i < 16; i++)
        o.tenant_id[i] = (uint8_t)(0xa0 + i);
    /* queued while the connection says HELLO, then sent with its tenant */
    assert_int_equal(rbus_request_ex(p, &o, "x", 1, reply_cb, &r1), 0);
    RUN_UNTIL(&fx.loop, r1.calls > 0, 3000);
    assert_int_equal(r1.status, 0);
    assert_string_equal(r1.body, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    o.tenant_id[15] = 0x01;
    assert_int_equal(rbus_request_ex(p, &o, "x", 1, reply_cb, &r2), 0);
    RUN_UNTIL(&fx.loop, r2.calls > 0, 3000);
    assert_string_equal(r2.body, "a0a1a2a3a4a5a6a7a8a9aaabacadae01");
    /* plain rbus_request still sends tenant 0 */
    assert_int_equal(rbus_request(p, APP_ECHO, "x", 1, 2000, reply_cb, &r0), 0);
    RUN_UNTIL(&fx.loop, r0.calls > 0, 3000);
    assert_string_equal(r0.body, "00000000000000000000000000000000");
    /* a cap section travels in front of the payload, both intact */
    o.cap = "tok-1";
    o.cap_len = 5;
    assert_int_equal(rbus_request_ex(p, &o, "body", 4, reply_cb, &r3), 0);
    RUN_UNTIL(&fx.loop, r3.calls > 0, 3000);
    assert_string_equal(r3.body, "a0a1a2a3a4a5a6a7a8a9aaabacadae01|tok-1|body");
    o.cap_len = OAP_MAX_CAP + 1u; /* over the u16 field */
    assert_int_equal(rbus_request_ex(p, &o, "x", 1, reply_cb, &r4), RON_EINVAL);
    rbus_peer_close(p);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_request_ex_carries_the_tenant_over_unix_sockets(void **state)
{
    (void)state;
    tenant_on(RBUS_TRANSPORT_UNIX);
}

static void
test_bus_request_ex_carries_the_tenant_in_process(void **state)
{
    (void)state;
    tenant_on(RBUS_TRANSPORT_INPROC);
}

static void
test_bus_request_past_deadline_times_out_exactly_once(void **state)
{
    (void)state;
    fx_t fx;
    svc_t svc;
    reply_t r = {0};
    rbus_stats_t st;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "slow");
    rbus_t *cli = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "cli");
    svc_register(srv, &svc);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "slow", NULL);
    RUN_UNTIL(&fx.loop, rbus_peer_is_up(p), 3000);
    assert_true(rbus_peer_is_up(p));
    uint64_t t0 = ron_now_ms();
    assert_int_equal(rbus_request(p, APP_ECHO, "hang", 4, 100, reply_cb, &r), 0);
    RUN_UNTIL(&fx.loop, r.calls > 0, 3000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, RON_ETIMEOUT);
    assert_true(r.at_ms - t0 >= 90 && r.at_ms - t0 < 2000);
    /* The answer arrives late: counted, and the callback does not run again. */
    assert_int_equal(svc.nheld, 1);
    svc_release(&svc);
    rbus_stats_get(cli, &st);
    RUN_UNTIL(&fx.loop, (rbus_stats_get(cli, &st), st.responses_late == 1), 2000);
    assert_int_equal(st.responses_late, 1);
    assert_int_equal(st.requests_timeout, 1);
    assert_int_equal(r.calls, 1);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

/* A server in its own process: echo plus "hang", until killed. */
static pid_t
spawn_server(fx_t *fx, const char *name)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        uv_loop_t loop;
        svc_t svc;
        rbus_config_t cfg = {.transport = RBUS_TRANSPORT_UNIX, .name = name, .dir = fx->dir};
        memcpy(cfg.secret, fx->secret, RBUS_SECRET_LEN);
        uv_loop_init(&loop);
        rbus_t *b = rbus_new(&loop, &cfg, NULL);
        if (b == NULL)
            _exit(3);
        svc_register(b, &svc);
        if (rbus_listen(b) != 0)
            _exit(4);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(0);
    }
    return pid;
}

static void
test_bus_inflight_fails_fast_when_peer_is_killed_then_reconnects(void **state)
{
    (void)state;
    fx_t fx;
    reply_t r = {0}, busy = {0}, ok;
    rbus_stats_t st;
    int wst;

    fx_init(&fx);
    pid_t child = spawn_server(&fx, "victim");
    rbus_t *cli = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "kernel");
    peers_t seen = {0};
    rbus_on_peer(cli, peer_cb, &seen);
    rbus_peer_t *p = rbus_connect(cli, "victim", NULL);
    RUN_UNTIL(&fx.loop, rbus_peer_is_up(p), 5000); /* retries while the child binds */
    assert_true(rbus_peer_is_up(p));
    assert_int_equal(rbus_peer_pid(p), child);
    assert_int_equal(rbus_request(p, APP_ECHO, "hang", 4, 10000, reply_cb, &r), 0);
    RUN_UNTIL(&fx.loop, false, 100); /* let it reach the server */
    uint64_t t0 = ron_now_ms();
    assert_int_equal(kill(child, SIGKILL), 0);
    assert_int_equal(waitpid(child, &wst, 0), child);
    RUN_UNTIL(&fx.loop, r.calls > 0, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, RON_EUNAVAIL);
    assert_true(r.at_ms - t0 < 2000); /* fails fast, not at its 10 s deadline */
    assert_false(rbus_peer_is_up(p));
    /* While disconnected (backoff), requests fail fast too. */
    assert_int_equal(rbus_request(p, APP_ECHO, "x", 1, 1000, reply_cb, &busy), RON_EUNAVAIL);
    assert_int_equal(busy.calls, 0);
    /* The peer restarts: the bus reconnects on its own and requests succeed. */
    child = spawn_server(&fx, "victim");
    RUN_UNTIL(&fx.loop, rbus_peer_is_up(p), 5000);
    assert_true(rbus_peer_is_up(p));
    assert_int_equal(rbus_peer_pid(p), child);
    request_sync(&fx, p, "back", 2000, &ok);
    assert_int_equal(ok.status, 0);
    assert_string_equal(ok.body, "back");
    rbus_stats_get(cli, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.disconnects, 1);
    assert_true(st.requests_unavail >= 2);
    assert_int_equal(seen.up, 2); /* the owner hears down and up again */
    assert_int_equal(seen.down, 1);
    kill(child, SIGKILL);
    waitpid(child, &wst, 0);
    rbus_free(cli);
    fx_close(&fx);
}

static void
test_bus_reconnects_with_doubling_backoff_capped_at_one_second(void **state)
{
    (void)state;
    fx_t fx;
    rbus_stats_t st;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_INPROC, "later");
    rbus_t *cli = fx_bus(&fx, RBUS_TRANSPORT_INPROC, "cli");
    rbus_peer_t *p = rbus_connect(cli, "later", NULL);
    /* Attempts at 0, 50, 150, 350, 750, 1550 ms: six by 1.7 s, not a busy loop. */
    RUN_UNTIL(&fx.loop, false, 1700);
    rbus_stats_get(cli, &st);
    assert_true(st.connect_failures >= 3 && st.connect_failures <= 6);
    uint64_t before = st.connect_failures;
    RUN_UNTIL(&fx.loop, false, 1100);
    rbus_stats_get(cli, &st);
    assert_true(st.connect_failures - before <= 2); /* the delay is capped at 1 s */
    assert_true(st.connect_failures - before >= 1);
    /* The endpoint appears: the next attempt, at most 1 s away, succeeds. */
    assert_int_equal(rbus_listen(srv), 0);
    uint64_t t0 = ron_now_ms();
    RUN_UNTIL(&fx.loop, rbus_peer_is_up(p), 3000);
    assert_true(rbus_peer_is_up(p));
    assert_true(ron_now_ms() - t0 <= RBUS_BACKOFF_MAX_MS + 500);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_refuses_wrong_secret_and_counts_it(void **state)
{
    (void)state;
    fx_t fx;
    svc_t svc;
    rbus_stats_t st;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "kernel");
    svc_register(srv, &svc);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_config_t cfg = {.transport = RBUS_TRANSPORT_UNIX, .name = "intruder", .dir = fx.dir};
    memcpy(cfg.secret, fx.secret, RBUS_SECRET_LEN);
    cfg.secret[7] ^= 1;
    rbus_t *bad = rbus_new(&fx.loop, &cfg, NULL);
    rbus_peer_t *p = rbus_connect(bad, "kernel", NULL);
    RUN_UNTIL(&fx.loop, (rbus_stats_get(srv, &st), st.refused_secret >= 2), 3000);
    assert_true(st.refused_secret >= 2); /* refused again after its reconnect */
    assert_int_equal(st.accepted, 0);
    assert_int_equal(svc.served, 0);
    assert_false(rbus_peer_is_up(p));
    rbus_stats_get(bad, &st);
    assert_true(st.connect_failures >= 2);
    assert_int_equal(st.connects, 0);
    rbus_free(bad);
    rbus_free(srv);
    fx_close(&fx);
}

/* A bound (or listening) Unix socket at dir/name; returns its fd. */
static int
sock_at(const char *dir, const char *name, bool listening)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, name);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    if (listening)
        assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/* Set dir's modification time age_s seconds into the past. */
static void
age_dir(const char *dir, time_t age_s)
{
    struct timespec ts[2] = {{.tv_sec = time(NULL) - age_s}, {.tv_sec = time(NULL) - age_s}};
    assert_int_equal(utimensat(AT_FDCWD, dir, ts, 0), 0);
}

static void
test_stale_bus_directories_are_swept_and_live_ones_kept(void **state)
{
    (void)state;
    char dead[RBUS_MAX_DIR], live[RBUS_MAX_DIR], young[RBUS_MAX_DIR];
    struct stat sb;
    int lfd;

    /* a kernel killed with -9: its socket file stays, nobody listens */
    assert_int_equal(rbus_dir_create(dead, sizeof dead), 0);
    close(sock_at(dead, "kernel.sock", true));
    age_dir(dead, 120);
    /* a running kernel: an old directory whose socket accepts */
    assert_int_equal(rbus_dir_create(live, sizeof live), 0);
    lfd = sock_at(live, "kernel.sock", true);
    age_dir(live, 120);
    /* a kernel starting right now: nothing bound yet, but young */
    assert_int_equal(rbus_dir_create(young, sizeof young), 0);

    /* at most RBUS_DIR_SWEEP_MAX a call: other runs may have left more behind */
    for (int i = 0; i < 64 && rbus_dir_sweep_stale(60) > 0; i++)
        ;
    assert_int_equal(stat(dead, &sb), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(stat(live, &sb), 0);
    assert_int_equal(stat(young, &sb), 0);

    close(lfd);
    rbus_dir_remove(live);
    rbus_dir_remove(young);
}

static void
test_bus_directory_is_0700_and_socket_0600(void **state)
{
    (void)state;
    fx_t fx;
    struct stat sb;
    char path[RBUS_MAX_PATH];
    rbus_config_t cfg = {.transport = RBUS_TRANSPORT_UNIX, .name = "kernel"};
    char longdir[200];
    int rc = 0;

    fx_init(&fx);
    assert_int_equal(stat(fx.dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0700);
    assert_int_equal(sb.st_uid, getuid());
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "kernel");
    assert_int_equal(rbus_listen(srv), 0);
    assert_int_equal(rbus_listen(srv), RON_EBUSY);
    snprintf(path, sizeof path, "%s/kernel.sock", fx.dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISSOCK(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    rbus_free(srv);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    assert_int_equal(stat(path, &sb), -1); /* the socket file goes with the endpoint */
    /* A directory too long for sun_path is refused with a clear error. */
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = '\0';
    cfg.dir = longdir;
    assert_null(rbus_new(&fx.loop, &cfg, &rc));
    assert_int_equal(rc, RON_EPATHLEN);
    cfg.dir = fx.dir;
    cfg.name = "Bad/Name";
    assert_null(rbus_new(&fx.loop, &cfg, &rc));
    assert_int_equal(rc, RON_EINVAL);
    fx_close(&fx);
}

/* ---- raw socket helpers: speak to the bus by hand ---- */

static int
raw_connect(const char *dir, const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);

    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s.sock", dir, name);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void
raw_send_frame(int fd, uint16_t flags, uint16_t app, uint64_t corr, const char *body, size_t len)
{
    oap_frame_t f = {.flags = flags, .app_proto_id = app, .corr_id = corr,
                     .payload = (const uint8_t *)body, .payload_len = len};
    uint8_t buf[1024];
    ssize_t n = oap_frame_encode(&f, OAP_MAX_FRAME, buf, sizeof buf);

    assert_true(n > 0);
    assert_int_equal(write(fd, buf, (size_t)n), n);
}

/* Read into buf (while running the loop) until EOF or ms pass. Returns bytes, sets *eof. */
static size_t
raw_read_until_eof(uv_loop_t *loop, int fd, uint8_t *buf, size_t cap, uint64_t ms, bool *eof)
{
    size_t got = 0;
    uint64_t until = ron_now_ms() + ms;

    *eof = false;
    while (!*eof && ron_now_ms() < until) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            *eof = true;
        else if (n > 0)
            got += (size_t)n;
        else
            usleep(1000);
    }
    return got;
}

static void
test_bus_refuses_uid_not_allowed_with_error_envelope(void **state)
{
    (void)state;
    fx_t fx;
    rbus_stats_t st;
    uint8_t buf[2048];
    oap_frame_t f;
    bool eof;

    fx_init(&fx);
    rbus_config_t cfg = {.transport = RBUS_TRANSPORT_UNIX, .name = "kernel", .dir = fx.dir,
                         .allowed_uid_set = true, .allowed_uid = getuid() + 1};
    memcpy(cfg.secret, fx.secret, RBUS_SECRET_LEN);
    rbus_t *srv = rbus_new(&fx.loop, &cfg, NULL);
    assert_int_equal(rbus_listen(srv), 0);
    int fd = raw_connect(fx.dir, "kernel");
    size_t n = raw_read_until_eof(&fx.loop, fd, buf, sizeof buf, 3000, &eof);
    assert_true(eof);
    assert_true(oap_frame_parse(buf, n, OAP_MAX_FRAME, &f) > 0);
    assert_int_equal(f.code, 403);
    assert_true(f.flags & OAP_F_RESP);
    assert_non_null(memmem(f.payload, f.payload_len, "\"forbidden\"", 11));
    close(fd);
    /* And a real bus client is refused the same way (SO_PEERCRED on accept). */
    rbus_t *cli = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "child");
    rbus_peer_t *p = rbus_connect(cli, "kernel", NULL);
    RUN_UNTIL(&fx.loop, (rbus_stats_get(srv, &st), st.refused_uid >= 2), 3000);
    assert_true(st.refused_uid >= 2);
    assert_int_equal(st.accepted, 0);
    assert_false(rbus_peer_is_up(p));
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_closes_connection_on_oversize_frame(void **state)
{
    (void)state;
    fx_t fx;
    svc_t svc;
    rbus_stats_t st;
    uint8_t buf[4096];
    char hello[256], hex[2 * RBUS_SECRET_LEN + 1];
    oap_frame_t f;
    bool eof;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "kernel");
    svc_register(srv, &svc);
    assert_int_equal(rbus_listen(srv), 0);
    int fd = raw_connect(fx.dir, "kernel");
    rbus_secret_hex(fx.secret, hex);
    int hl = snprintf(hello, sizeof hello, "{\"name\":\"raw\",\"bus_secret\":\"%s\",\"x\":[1]}", hex);
    raw_send_frame(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 0, hello, (size_t)hl);
    /* A header announcing 2 MiB: over max_frame, rejected before any body. */
    uint8_t hdr[OAP_HDR_LEN] = {0};
    ron_put_u32be(hdr, 2u << 20);
    ron_put_u16be(hdr + 4, 1);
    ron_put_u16be(hdr + 6, OAP_F_REQ | OAP_F_START | OAP_F_END);
    ron_put_u16be(hdr + 10, APP_ECHO);
    assert_int_equal(write(fd, hdr, sizeof hdr), (ssize_t)sizeof hdr);
    size_t n = raw_read_until_eof(&fx.loop, fd, buf, sizeof buf, 3000, &eof);
    assert_true(eof);
    ssize_t a = oap_frame_parse(buf, n, OAP_MAX_FRAME, &f);
    assert_true(a > 0);
    assert_int_equal(f.code, 200); /* HELLO accepted */
    assert_true(oap_frame_parse(buf + a, n - (size_t)a, OAP_MAX_FRAME, &f) > 0);
    assert_int_equal(f.code, 413);
    assert_non_null(memmem(f.payload, f.payload_len, "payload_too_large", 17));
    close(fd);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.proto_errors, 1);
    assert_int_equal(svc.served, 0);
    rbus_free(srv);
    fx_close(&fx);
}

/* Write what the socket takes of buf[*off..len) and, when drain, read and discard. */
static void
raw_pump(uv_loop_t *loop, int fd, const uint8_t *buf, size_t len, size_t *off, bool drain,
         size_t *read_total)
{
    static uint8_t sink[65536];
    ssize_t n;

    uv_run(loop, UV_RUN_NOWAIT);
    if (*off < len && (n = send(fd, buf + *off, len - *off, MSG_DONTWAIT)) > 0)
        *off += (size_t)n;
    while (drain && (n = recv(fd, sink, sizeof sink, MSG_DONTWAIT)) > 0)
        *read_total += (size_t)n;
    usleep(200);
}

static void
test_bus_stops_reading_a_peer_that_does_not_read_its_responses(void **state)
{
    (void)state;
    fx_t fx;
    svc_t svc;
    rbus_stats_t st;
    char hello[256], hex[2 * RBUS_SECRET_LEN + 1];
    const size_t body = 100000, nreq = RBUS_MAX_INFLIGHT, frame = OAP_HDR_LEN + body;
    size_t len = nreq * frame, off = 0, got = 0;
    uint8_t *buf = ron_xcalloc(1, len);
    uint64_t until;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "storage");
    svc_register(srv, &svc);
    assert_int_equal(rbus_listen(srv), 0);
    int fd = raw_connect(fx.dir, "storage");
    rbus_secret_hex(fx.secret, hex);
    int hl = snprintf(hello, sizeof hello, "{\"name\":\"raw\",\"bus_secret\":\"%s\"}", hex);
    raw_send_frame(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, 0, 0, hello, (size_t)hl);
    for (size_t i = 0; i < nreq; i++) {
        oap_frame_t f = {.flags = OAP_F_REQ | OAP_F_START | OAP_F_END, .app_proto_id = APP_ECHO,
                         .corr_id = i + 1, .payload = buf + i * frame + OAP_HDR_LEN,
                         .payload_len = body};
        assert_int_equal(oap_header_encode(&f, OAP_MAX_FRAME, buf + i * frame), 0);
    }
    /* 6.4 MB of answers pile up unread: over RBUS_MAX_SEND_BYTES the server
     * stops reading this connection instead of queueing without bound. */
    until = ron_now_ms() + 5000;
    do {
        raw_pump(&fx.loop, fd, buf, len, &off, false, &got);
        rbus_stats_get(srv, &st);
    } while (st.send_paused == 0 && ron_now_ms() < until);
    assert_int_equal(st.send_paused, 1);
    for (int i = 0; i < 100; i++)
        raw_pump(&fx.loop, fd, buf, len, &off, false, &got);
    rbus_stats_get(srv, &st);
    uint64_t before = st.requests_received;
    for (int i = 0; i < 200; i++)
        raw_pump(&fx.loop, fd, buf, len, &off, false, &got);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.requests_received, before); /* paused: nothing more read */
    assert_true(before < nreq);
    /* Once the client reads, the queue drains, reading resumes, all are served. */
    until = ron_now_ms() + 5000;
    do {
        raw_pump(&fx.loop, fd, buf, len, &off, true, &got);
    } while (got < nreq * frame && ron_now_ms() < until);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.requests_received, nreq);
    assert_int_equal(st.requests_rejected, 0);
    assert_true(got >= nreq * frame);
    close(fd);
    free(buf);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_refuses_connection_that_does_not_say_hello_first(void **state)
{
    (void)state;
    fx_t fx;
    rbus_stats_t st;
    uint8_t buf[2048];
    oap_frame_t f;
    bool eof;

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "kernel");
    assert_int_equal(rbus_listen(srv), 0);
    int fd = raw_connect(fx.dir, "kernel");
    raw_send_frame(fd, OAP_F_REQ | OAP_F_START | OAP_F_END, APP_ECHO, 9, "hi", 2);
    size_t n = raw_read_until_eof(&fx.loop, fd, buf, sizeof buf, 3000, &eof);
    assert_true(eof);
    assert_true(oap_frame_parse(buf, n, OAP_MAX_FRAME, &f) > 0);
    assert_int_equal(f.code, 426);
    close(fd);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.refused_proto, 1);
    /* Silence is refused too, once RBUS_HELLO_TIMEOUT_MS has passed. */
    uint64_t t0 = ron_now_ms();
    fd = raw_connect(fx.dir, "kernel");
    n = raw_read_until_eof(&fx.loop, fd, buf, sizeof buf, 5000, &eof);
    assert_true(eof);
    assert_true(ron_now_ms() - t0 >= RBUS_HELLO_TIMEOUT_MS - 100);
    assert_true(oap_frame_parse(buf, n, OAP_MAX_FRAME, &f) > 0);
    assert_int_equal(f.code, 426);
    close(fd);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.refused_proto, 2);
    rbus_free(srv);
    fx_close(&fx);
}

/* A loop stalled past RBUS_HELLO_TIMEOUT_MS (load, long synchronous work
 * between turns) keeps its connections: the stale clock at connect does not
 * shorten the HELLO deadline, and a HELLO waiting unread when the timer
 * fires is read before the connection is judged. Both transports. */
static void
test_bus_hello_survives_a_loop_stalled_past_its_timeout(void **state)
{
    (void)state;
    fx_t fx;
    svc_t s_in, s_ux;
    reply_t r;
    rbus_stats_t st;

    fx_init(&fx);
    rbus_t *srv_in = fx_bus(&fx, RBUS_TRANSPORT_INPROC, "st-in");
    rbus_t *srv_ux = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "st-ux");
    rbus_t *cli_in = fx_bus(&fx, RBUS_TRANSPORT_INPROC, "cli-in");
    rbus_t *cli_ux = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "cli-ux");
    svc_register(srv_in, &s_in);
    svc_register(srv_ux, &s_ux);
    assert_int_equal(rbus_listen(srv_in), 0);
    assert_int_equal(rbus_listen(srv_ux), 0);
    usleep((RBUS_HELLO_TIMEOUT_MS + 300) * 1000); /* the loop's clock goes stale */
    rbus_peer_t *p_in = rbus_connect(cli_in, "st-in", NULL);
    rbus_peer_t *p_ux = rbus_connect(cli_ux, "st-ux", NULL);
    assert_non_null(p_in);
    assert_non_null(p_ux);
    /* Unix: turn until the listener has accepted; its HELLO clock runs. */
    for (int i = 0; i < 2000 && srv_ux->peers == NULL; i++)
        uv_run(&fx.loop, UV_RUN_NOWAIT), usleep(500);
    assert_non_null(srv_ux->peers);
    usleep((RBUS_HELLO_TIMEOUT_MS + 300) * 1000); /* stalled, HELLOs unread */
    request_sync(&fx, p_in, "in", 2000, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.body, "in");
    request_sync(&fx, p_ux, "ux", 2000, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.body, "ux");
    rbus_stats_get(srv_in, &st);
    assert_int_equal(st.refused_proto, 0);
    rbus_stats_get(srv_ux, &st);
    assert_int_equal(st.refused_proto, 0);
    rbus_stats_get(cli_in, &st);
    assert_int_equal(st.connect_failures, 0);
    rbus_stats_get(cli_ux, &st);
    assert_int_equal(st.connect_failures, 0);
    rbus_peer_close(p_in);
    rbus_peer_close(p_ux);
    rbus_free(cli_in);
    rbus_free(cli_ux);
    rbus_free(srv_in);
    rbus_free(srv_ux);
    fx_close(&fx);
}

static void
test_bus_gives_up_on_listener_that_never_answers_hello(void **state)
{
    (void)state;
    fx_t fx;
    reply_t r = {0};
    rbus_stats_t st;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    fx_init(&fx);
    /* A socket that completes connections in its backlog but never speaks. */
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/mute.sock", fx.dir);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 8), 0);
    rbus_t *cli = fx_bus(&fx, RBUS_TRANSPORT_UNIX, "cli");
    rbus_peer_t *p = rbus_connect(cli, "mute", NULL);
    uint64_t t0 = ron_now_ms();
    assert_int_equal(rbus_request(p, APP_ECHO, "x", 1, 10000, reply_cb, &r), 0);
    RUN_UNTIL(&fx.loop, r.calls > 0, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, RON_EUNAVAIL); /* at the HELLO timeout, not the 10 s deadline */
    assert_true(r.at_ms - t0 >= RBUS_HELLO_TIMEOUT_MS - 100 && r.at_ms - t0 < 4000);
    rbus_stats_get(cli, &st);
    assert_int_equal(st.connect_failures, 1);
    assert_int_equal(st.connects, 0);
    rbus_free(cli);
    close(lfd);
    fx_close(&fx);
}

typedef struct {
    int n;
    char last[32];
} events_t;

static void
event_cb(void *arg, rbus_peer_t *p, const oap_frame_t *f)
{
    events_t *e = arg;

    (void)p;
    assert_true(f->flags & OAP_F_EVENT);
    e->n++;
    size_t n = RON_MIN(f->payload_len, sizeof e->last - 1);
    memcpy(e->last, f->payload, n);
    e->last[n] = '\0';
}

static void
events_on(rbus_transport_t t)
{
    fx_t fx;
    events_t sub = {0}, other = {0};
    rbus_stats_t st;
    int delivered = 0;

    fx_init(&fx);
    rbus_t *kern = fx_bus(&fx, t, "kernel");
    rbus_t *a = fx_bus(&fx, t, "svc-a");
    rbus_t *b = fx_bus(&fx, t, "svc-b");
    assert_int_equal(rbus_listen(kern), 0);
    rbus_peer_t *pa = rbus_connect(a, "kernel", NULL);
    rbus_peer_t *pb = rbus_connect(b, "kernel", NULL);
    assert_int_equal(rbus_subscribe(pa, APP_EVENTS, event_cb, &sub), 0);
    assert_int_equal(rbus_subscribe(pb, APP_ECHO, event_cb, &other), 0);
    assert_int_equal(rbus_subscribe(pa, 0, event_cb, &sub), RON_EINVAL);
    /* Publish until the subscription has reached the kernel (bounded). */
    RUN_UNTIL(&fx.loop, (delivered = rbus_publish(kern, APP_EVENTS, "cfg:1", 5)) == 1, 3000);
    assert_int_equal(delivered, 1);
    assert_int_equal(rbus_publish(kern, APP_EVENTS, "cfg:2", 5), 1);
    RUN_UNTIL(&fx.loop, sub.n == 2, 3000);
    assert_int_equal(sub.n, 2);
    assert_string_equal(sub.last, "cfg:2");
    assert_int_equal(other.n, 0); /* svc-b subscribed to another app id */
    rbus_stats_get(kern, &st);
    assert_int_equal(st.events_published, 2);
    rbus_stats_get(a, &st);
    assert_int_equal(st.events_received, 2);
    rbus_peer_close(pa);
    rbus_peer_close(pb);
    rbus_free(a);
    rbus_free(b);
    rbus_free(kern);
    fx_close(&fx);
}

static void
test_bus_delivers_events_only_to_subscribers_over_unix(void **state)
{
    (void)state;
    events_on(RBUS_TRANSPORT_UNIX);
}

static void
test_bus_delivers_events_only_to_subscribers_in_process(void **state)
{
    (void)state;
    events_on(RBUS_TRANSPORT_INPROC);
}

static void
queue_full_on(rbus_transport_t t)
{
    fx_t fx;
    svc_t svc;
    static reply_t r[8];
    reply_t small[RBUS_MAX_INFLIGHT + 1];
    rbus_stats_t st;
    size_t big = OAP_MAX_FRAME - OAP_HDR_LEN;
    uint8_t *payload = ron_xcalloc(1, big);
    int ok = 0, rc = 0;

    memset(r, 0, sizeof r);
    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, t, "storage");
    rbus_t *cli = fx_bus(&fx, t, "gateway");
    peers_t sp = {0};
    events_t ev = {0};
    int delivered = 0;
    svc_register(srv, &svc);
    rbus_on_peer(srv, peer_cb, &sp);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "storage", NULL);
    RUN_UNTIL(&fx.loop, rbus_peer_is_up(p) && sp.up == 1, 3000);
    assert_true(rbus_peer_is_up(p));
    /* The server subscribes to the client's events over the same connection. */
    assert_int_equal(rbus_subscribe(sp.last, APP_EVENTS, event_cb, &ev), 0);
    RUN_UNTIL(&fx.loop, (delivered = rbus_publish(cli, APP_EVENTS, "e", 1)) == 1, 3000);
    assert_int_equal(delivered, 1);
    RUN_UNTIL(&fx.loop, ev.n >= 1, 3000);
    /* Without running the loop nothing drains: the send queue fills and the
     * next request fails fast with RON_EBUSY. */
    for (int i = 0; i < 8; i++) {
        rc = rbus_request(p, APP_ECHO, payload, big, 5000, reply_cb, &r[i]);
        if (rc != 0)
            break;
        ok++;
    }
    assert_int_equal(rc, RON_EBUSY);
    assert_true(ok >= 4 && ok < 8);
    rbus_stats_get(cli, &st);
    assert_int_equal(st.requests_busy, 1);
    assert_true(st.send_queue_bytes > 3 * (size_t)OAP_MAX_FRAME);
    /* Small events still fit until the queue is full to the byte or frame
     * bound; then an event for that subscriber is dropped and counted. */
    int queued = 0;
    while (queued <= (int)RBUS_MAX_SEND_FRAMES && rbus_publish(cli, APP_EVENTS, "fill", 4) == 1)
        queued++;
    assert_true(queued <= (int)RBUS_MAX_SEND_FRAMES);
    rbus_stats_get(cli, &st);
    assert_int_equal(st.events_dropped, 1);
    assert_int_equal(st.events_published, 1 + queued);
    /* Once the loop runs, the queue drains and every accepted request completes. */
    RUN_UNTIL(&fx.loop, r[ok - 1].calls == 1 && ev.n == 1 + queued, 5000);
    for (int i = 0; i < ok; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].code, 200);
    }
    assert_int_equal(ev.n, 1 + queued); /* the dropped one never arrives */
    /* The in-flight bound: RBUS_MAX_INFLIGHT requests, then RON_EBUSY. */
    memset(small, 0, sizeof small);
    for (unsigned i = 0; i < RBUS_MAX_INFLIGHT; i++)
        assert_int_equal(rbus_request(p, APP_ECHO, "hang", 4, 5000, reply_cb, &small[i]), 0);
    assert_int_equal(rbus_request(p, APP_ECHO, "hang", 4, 5000, reply_cb, &small[RBUS_MAX_INFLIGHT]),
                     RON_EBUSY);
    RUN_UNTIL(&fx.loop, svc.nheld == (int)RBUS_MAX_INFLIGHT, 3000);
    assert_int_equal(svc.nheld, RBUS_MAX_INFLIGHT);
    rbus_stats_get(cli, &st);
    assert_int_equal(st.requests_inflight, RBUS_MAX_INFLIGHT);
    assert_int_equal(st.peers_up, 1);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.requests_serving, RBUS_MAX_INFLIGHT);
    svc_release(&svc);
    RUN_UNTIL(&fx.loop, small[RBUS_MAX_INFLIGHT - 1].calls == 1, 3000);
    for (unsigned i = 0; i < RBUS_MAX_INFLIGHT; i++)
        assert_int_equal(small[i].calls, 1);
    assert_int_equal(small[RBUS_MAX_INFLIGHT].calls, 0);
    rbus_stats_get(cli, &st);
    assert_int_equal(st.requests_inflight, 0);
    assert_int_equal(st.send_queue_bytes, 0);
    rbus_stats_get(srv, &st);
    assert_int_equal(st.requests_serving, 0);
    free(payload);
    rbus_free(cli);
    rbus_free(srv);
    fx_close(&fx);
}

static void
test_bus_full_send_queue_fails_fast_with_ebusy_over_unix(void **state)
{
    (void)state;
    queue_full_on(RBUS_TRANSPORT_UNIX);
}

static void
test_bus_full_send_queue_fails_fast_with_ebusy_in_process(void **state)
{
    (void)state;
    queue_full_on(RBUS_TRANSPORT_INPROC);
}

static void
test_bus_answers_404_for_app_without_handler_and_serves_both_directions(void **state)
{
    (void)state;
    fx_t fx;
    svc_t svc_child;
    reply_t r;
    peers_t kp = {0};

    fx_init(&fx);
    rbus_t *kern = fx_bus(&fx, RBUS_TRANSPORT_INPROC, "kernel");
    rbus_t *child = fx_bus(&fx, RBUS_TRANSPORT_INPROC, "child");
    rbus_on_peer(kern, peer_cb, &kp);
    assert_int_equal(rbus_listen(kern), 0);
    svc_register(child, &svc_child);
    rbus_peer_t *p = rbus_connect(child, "kernel", NULL);
    /* kern has no handler for APP_ECHO. */
    request_sync(&fx, p, "x", 2000, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.code, 404);
    assert_non_null(strstr(r.body, "not_found"));
    /* The kernel can call the child back over the child's own connection. */
    assert_int_equal(kp.up, 1);
    assert_true(rbus_peer_is_inbound(kp.last));
    assert_false(rbus_peer_is_inbound(p));
    assert_string_equal(rbus_peer_name(kp.last), "child");
    request_sync(&fx, kp.last, "metrics?", 2000, &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "metrics?");
    rbus_free(child); /* the kernel hears its inbound peer go away */
    RUN_UNTIL(&fx.loop, kp.down == 1, 2000);
    assert_int_equal(kp.down, 1);
    rbus_free(kern);
    fx_close(&fx);
}

typedef struct {
    rbus_peer_t *peer;
    rbus_t *bus;
    int calls;
    int status;
} closer_t;

/* Close the peer from inside its own reply callback. */
static void
close_peer_in_reply(void *arg, int status, const oap_frame_t *resp)
{
    closer_t *c = arg;

    (void)resp;
    c->calls++;
    c->status = status;
    rbus_peer_close(c->peer);
}

/* Free the whole serving endpoint from inside its handler, answering first. */
static void
free_bus_in_handler(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    closer_t *c = arg;

    c->calls++;
    rbus_respond(req, 200, f->payload, f->payload_len);
    rbus_free(c->bus);
}

static void
reentrancy_on(rbus_transport_t t)
{
    fx_t fx;
    closer_t in_reply = {0}, in_handler = {0};
    closer_t second = {0};

    fx_init(&fx);
    rbus_t *srv = fx_bus(&fx, t, "srv");
    rbus_t *cli = fx_bus(&fx, t, "cli");
    in_handler.bus = srv;
    assert_int_equal(rbus_handle(srv, APP_ECHO, free_bus_in_handler, &in_handler), 0);
    assert_int_equal(rbus_listen(srv), 0);
    rbus_peer_t *p = rbus_connect(cli, "srv", NULL);
    in_reply.peer = p;
    second.peer = p;
    assert_int_equal(rbus_request(p, APP_ECHO, "a", 1, 3000, close_peer_in_reply, &in_reply), 0);
    assert_int_equal(rbus_request(p, APP_ECHO, "b", 1, 3000, close_peer_in_reply, &second), 0);
    RUN_UNTIL(&fx.loop, in_reply.calls > 0 && second.calls > 0, 3000);
    /* The first reply closes p: the second request completes then, with
     * RON_ESHUTDOWN (or its answer if it came in the same batch), once. */
    assert_int_equal(in_reply.calls, 1);
    assert_int_equal(second.calls, 1);
    assert_int_equal(in_reply.status, 0);
    assert_true(second.status == RON_ESHUTDOWN || second.status == 0);
    assert_true(in_handler.calls >= 1);
    RUN_UNTIL(&fx.loop, false, 50);
    rbus_free(cli);
    fx_close(&fx);
}

static void
test_bus_survives_closing_from_inside_its_callbacks_over_unix(void **state)
{
    (void)state;
    reentrancy_on(RBUS_TRANSPORT_UNIX);
}

static void
test_bus_survives_closing_from_inside_its_callbacks_in_process(void **state)
{
    (void)state;
    reentrancy_on(RBUS_TRANSPORT_INPROC);
}

/* ---- seeded random interleavings: every accepted request completes exactly once ---- */

#define CHAOS_REQS 1500
#define CHAOS_CLIENTS 3

typedef struct {
    int calls[CHAOS_REQS];
    bool accepted[CHAOS_REQS];
    int n;
} chaos_t;

static int chaos_outcome[4]; /* ok, timeout, unavail, shutdown */

static void
chaos_reply(void *arg, int status, const oap_frame_t *resp)
{
    int *calls = arg;

    (void)resp;
    chaos_outcome[status == 0 ? 0 : status == RON_ETIMEOUT ? 1 : status == RON_EUNAVAIL ? 2 : 3]++;
    assert_int_equal(*calls, 0); /* exactly once */
    assert_true(status == 0 || status == RON_ETIMEOUT || status == RON_EUNAVAIL ||
                status == RON_ESHUTDOWN);
    (*calls)++;
}

static uint64_t
chaos_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static rbus_t *
chaos_server(fx_t *fx, rbus_transport_t t, svc_t *svc)
{
    rbus_t *b = fx_bus(fx, t, "chaos");
    int nheld = svc->nheld;
    rbus_req_t *held[RON_ARRAY_LEN(svc->held)];

    /* keep requests still held from an earlier incarnation: they must still be answered */
    memcpy(held, svc->held, sizeof held);
    svc_register(b, svc);
    memcpy(svc->held, held, sizeof held);
    svc->nheld = nheld;
    assert_int_equal(rbus_listen(b), 0);
    return b;
}

static void
chaos_on(rbus_transport_t t, uint64_t seed)
{
    fx_t fx;
    svc_t svc = {0};
    static chaos_t ch;
    rbus_t *cli[CHAOS_CLIENTS];
    rbus_peer_t *peer[CHAOS_CLIENTS];
    uint64_t x = seed;
    char name[16];

    memset(&ch, 0, sizeof ch);
    memset(chaos_outcome, 0, sizeof chaos_outcome);
    fx_init(&fx);
    rbus_t *srv = chaos_server(&fx, t, &svc);
    for (int i = 0; i < CHAOS_CLIENTS; i++) {
        snprintf(name, sizeof name, "c%d", i);
        cli[i] = fx_bus(&fx, t, name);
        peer[i] = rbus_connect(cli[i], "chaos", NULL);
    }
    while (ch.n < CHAOS_REQS) {
        uint64_t r = chaos_rand(&x) % 100;
        int c = (int)(chaos_rand(&x) % CHAOS_CLIENTS);
        if (r < 55) {
            const char *body = chaos_rand(&x) % 2 ? "hang" : "echo";
            uint32_t deadline = 5 + (uint32_t)(chaos_rand(&x) % 100);
            int rc = rbus_request(peer[c], APP_ECHO, body, 4, deadline, chaos_reply, &ch.calls[ch.n]);
            assert_true(rc == 0 || rc == RON_EUNAVAIL || rc == RON_EBUSY);
            ch.accepted[ch.n++] = rc == 0;
        } else if (r < 62 && svc.nheld > 0) {
            int k = (int)(chaos_rand(&x) % (uint64_t)svc.nheld);
            rbus_respond(svc.held[k], 200, "late", 4);
            svc.held[k] = svc.held[--svc.nheld];
        } else if (r < 73) {
            rbus_peer_close(peer[c]);
            peer[c] = rbus_connect(cli[c], "chaos", NULL);
        } else if (r < 75) {
            rbus_free(srv);
            srv = chaos_server(&fx, t, &svc);
        } else {
            if (r >= 92)
                usleep(3000); /* let deadlines pass */
            uv_run(&fx.loop, UV_RUN_NOWAIT);
        }
        if (svc.nheld >= (int)RBUS_MAX_INFLIGHT)
            svc_release(&svc);
    }
    svc_release(&svc);
    int pending = 0;
    for (int i = 0; i < CHAOS_REQS; i++)
        pending += ch.accepted[i] && ch.calls[i] == 0;
    RUN_UNTIL(&fx.loop, ({
        pending = 0;
        for (int i = 0; i < CHAOS_REQS; i++)
            pending += ch.accepted[i] && ch.calls[i] == 0;
        svc_release(&svc);
        pending == 0;
    }), 5000);
    if (pending != 0)
        print_error("seed %llu: %d requests never completed\n", (unsigned long long)seed, pending);
    assert_int_equal(pending, 0);
    for (int i = 0; i < CHAOS_REQS; i++)
        assert_int_equal(ch.calls[i], ch.accepted[i] ? 1 : 0);
    print_message("chaos outcomes: ok %d, timeout %d, unavailable %d, shutdown %d\n",
                  chaos_outcome[0], chaos_outcome[1], chaos_outcome[2], chaos_outcome[3]);
    /* the run really mixed answers, expired deadlines and lost connections */
    assert_true(chaos_outcome[0] > 0 && chaos_outcome[1] > 0 && chaos_outcome[2] > 0);
    for (int i = 0; i < CHAOS_CLIENTS; i++) {
        rbus_peer_close(peer[i]);
        rbus_free(cli[i]);
    }
    rbus_free(srv);
    svc_release(&svc);
    fx_close(&fx);
}

static uint64_t
chaos_seed(void)
{
    const char *env = getenv("RON_SEED");
    uint64_t seed = env != NULL ? strtoull(env, NULL, 10) : (ron_now_ns() | 1);

    print_message("chaos seed %llu (RON_SEED=%llu to replay)\n", (unsigned long long)seed,
                  (unsigned long long)seed);
    return seed;
}

static void
test_bus_random_interleavings_complete_every_request_once_over_unix(void **state)
{
    (void)state;
    chaos_on(RBUS_TRANSPORT_UNIX, chaos_seed());
}

static void
test_bus_random_interleavings_complete_every_request_once_in_process(void **state)
{
    (void)state;
    chaos_on(RBUS_TRANSPORT_INPROC, chaos_seed());
}

static void
test_bus_hello_parse_ignores_unknown_keys_and_checks_known_ones(void **state)
{
    (void)state;
    rbus_hello_t h;
    char hex[65], buf[256];
    uint8_t sec[RBUS_SECRET_LEN];

    for (unsigned i = 0; i < RBUS_SECRET_LEN; i++)
        sec[i] = (uint8_t)i;
    rbus_secret_hex(sec, hex);
    snprintf(buf, sizeof buf, "{\"ua\":\"x\",\"name\":\"svc-a\",\"bus_secret\":\"%s\",\"max_frame\":99999999,"
             "\"future\":{\"a\":[1,2]},\"versions\":[2,1]}", hex);
    assert_int_equal(rbus__hello_parse((const uint8_t *)buf, strlen(buf), &h), 0);
    assert_string_equal(h.name, "svc-a");
    assert_true(h.has_secret);
    assert_memory_equal(h.secret, sec, RBUS_SECRET_LEN);
    assert_int_equal(h.max_frame, OAP_MAX_FRAME); /* only ever negotiated down */
    assert_int_equal(rbus__hello_parse((const uint8_t *)"", 0, &h), 0);
    assert_false(h.has_secret);
#define BAD(s, rc) assert_int_equal(rbus__hello_parse((const uint8_t *)(s), strlen(s), &h), (rc))
    BAD("{\"versions\":[2]}", RON_EVERSION);
    BAD("{\"name\":\"../etc\"}", RON_EPROTO);
    BAD("{\"name\":7}", RON_EPROTO);
    BAD("{\"max_frame\":100}", RON_EPROTO);
    BAD("{\"max_frame\":\"1\"}", RON_EPROTO);
    BAD("[1]", RON_EJSON);
    BAD("{\"a\":1,\"a\":2}", RON_EJSON);
    BAD("{", RON_EJSON);
#undef BAD
    assert_int_equal(rbus__hello_parse((const uint8_t *)"{\"bus_secret\":\"zz\"}", 19, &h), 0);
    assert_false(h.has_secret);
    assert_true(rbus__ct_equal(sec, sec, sizeof sec));
    uint8_t other[RBUS_SECRET_LEN];
    memcpy(other, sec, sizeof other);
    other[31] ^= 0x80;
    assert_false(rbus__ct_equal(sec, other, sizeof sec));
}

static void
test_bus_config_from_env_reads_and_hides_the_secret(void **state)
{
    (void)state;
    rbus_config_t cfg;
    uint8_t sec[RBUS_SECRET_LEN];
    char hex[65];

    assert_int_equal(rbus_secret_generate(sec), 0);
    rbus_secret_hex(sec, hex);
    setenv(RBUS_ENV_DIR, "/tmp/ron-x", 1);
    setenv(RBUS_ENV_SECRET, hex, 1);
    assert_int_equal(rbus_config_from_env(&cfg, "child"), 0);
    assert_memory_equal(cfg.secret, sec, sizeof sec);
    assert_string_equal(cfg.dir, "/tmp/ron-x");
    assert_null(getenv(RBUS_ENV_SECRET)); /* not inherited by grandchildren */
    setenv(RBUS_ENV_SECRET, "abc", 1);
    assert_int_equal(rbus_config_from_env(&cfg, "child"), RON_ECONFIG);
    unsetenv(RBUS_ENV_SECRET);
    unsetenv(RBUS_ENV_DIR);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bus_same_service_answers_over_unix_sockets),
        cmocka_unit_test(test_bus_same_service_answers_in_process),
        cmocka_unit_test(test_bus_owned_answer_is_copied_over_unix_sockets),
        cmocka_unit_test(test_bus_owned_answer_reaches_the_taker_without_a_copy_in_process),
        cmocka_unit_test(test_bus_large_answers_over_unix_sockets_reach_the_taker_in_their_own_buffer),
        cmocka_unit_test(test_bus_request_ex_carries_the_tenant_over_unix_sockets),
        cmocka_unit_test(test_bus_request_ex_carries_the_tenant_in_process),
        cmocka_unit_test(test_bus_request_past_deadline_times_out_exactly_once),
        cmocka_unit_test(test_bus_inflight_fails_fast_when_peer_is_killed_then_reconnects),
        cmocka_unit_test(test_bus_reconnects_with_doubling_backoff_capped_at_one_second),
        cmocka_unit_test(test_bus_refuses_wrong_secret_and_counts_it),
        cmocka_unit_test(test_bus_directory_is_0700_and_socket_0600),
        cmocka_unit_test(test_stale_bus_directories_are_swept_and_live_ones_kept),
        cmocka_unit_test(test_bus_refuses_uid_not_allowed_with_error_envelope),
        cmocka_unit_test(test_bus_closes_connection_on_oversize_frame),
        cmocka_unit_test(test_bus_refuses_connection_that_does_not_say_hello_first),
        cmocka_unit_test(test_bus_stops_reading_a_peer_that_does_not_read_its_responses),
        cmocka_unit_test(test_bus_gives_up_on_listener_that_never_answers_hello),
        cmocka_unit_test(test_bus_hello_survives_a_loop_stalled_past_its_timeout),
        cmocka_unit_test(test_bus_delivers_events_only_to_subscribers_over_unix),
        cmocka_unit_test(test_bus_delivers_events_only_to_subscribers_in_process),
        cmocka_unit_test(test_bus_full_send_queue_fails_fast_with_ebusy_over_unix),
        cmocka_unit_test(test_bus_full_send_queue_fails_fast_with_ebusy_in_process),
        cmocka_unit_test(test_bus_answers_404_for_app_without_handler_and_serves_both_directions),
        cmocka_unit_test(test_bus_survives_closing_from_inside_its_callbacks_over_unix),
        cmocka_unit_test(test_bus_survives_closing_from_inside_its_callbacks_in_process),
        cmocka_unit_test(test_bus_random_interleavings_complete_every_request_once_over_unix),
        cmocka_unit_test(test_bus_random_interleavings_complete_every_request_once_in_process),
        cmocka_unit_test(test_bus_hello_parse_ignores_unknown_keys_and_checks_known_ones),
        cmocka_unit_test(test_bus_config_from_env_reads_and_hides_the_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
