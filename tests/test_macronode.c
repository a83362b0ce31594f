/*
 * test_macronode.c - pieces of the node runner that can be tested without a
 * whole node: listener binding (IPv4, IPv6, bad input), exit reasons, the
 * data directory's FORMAT file, and the echo service on a real loop with a
 * real socket (banner, echo, config update, metrics, clean stop), and the
 * micro profile's one store and index per process: the storage, index and
 * gateway services on one loop and one in-process ron-bus hub, with real
 * HTTP over a real socket (amnesia and a disk store). The
 * supervisor and the admin port are tested with real processes in
 * tests/integration/test_node_*.py.
 */
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "mn_internal.h"
#include "ron_auth.h"
#include "ron_err.h"
#include "ron_util.h"
#include "sto_client.h"

static void
test_mn_listen_tcp_binds_ipv4_and_ipv6_ephemeral_ports(void **state)
{
    char bound[RON_CONFIG_ADDR_MAX];
    int fd;
    (void)state;
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    assert_memory_equal(bound, "127.0.0.1:", 10);
    assert_true(atoi(bound + 10) > 0);
    close(fd);
    fd = mn__listen_tcp("[::1]:0", bound, sizeof bound);
    if (fd >= 0) { /* hosts without IPv6 loopback skip this half */
        assert_memory_equal(bound, "[::1]:", 6);
        close(fd);
    }
}

static void
test_mn_listen_tcp_rejects_bad_addresses(void **state)
{
    char bound[RON_CONFIG_ADDR_MAX];
    (void)state;
    assert_int_equal(mn__listen_tcp("localhost:80", bound, sizeof bound), RON_EINVAL);
    assert_int_equal(mn__listen_tcp("127.0.0.1", bound, sizeof bound), RON_EINVAL);
    assert_int_equal(mn__listen_tcp("127.0.0.1:99999", bound, sizeof bound), RON_EINVAL);
    assert_int_equal(mn__listen_tcp("[::1:80", bound, sizeof bound), RON_EINVAL);
}

static void
test_mn_listen_tcp_reports_address_in_use(void **state)
{
    char bound[RON_CONFIG_ADDR_MAX], again[RON_CONFIG_ADDR_MAX];
    int fd, fd2;
    (void)state;
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    fd2 = mn__listen_tcp(bound, again, sizeof again);
    assert_int_equal(fd2, -EADDRINUSE);
    close(fd);
}

static void
test_mn_exit_reason_names_signal_or_status(void **state)
{
    char r[96];
    (void)state;
    mn__exit_reason(r, sizeof r, 0, SIGKILL);
    assert_string_equal(r, "signal 9 (Killed)");
    mn__exit_reason(r, sizeof r, 3, 0);
    assert_string_equal(r, "exit 3");
}

static void
test_mn_data_dir_gets_format_file_and_refuses_unknown_layout(void **state)
{
    char dir[64] = "/tmp/ron_mn_test_XXXXXX", path[128], err[256];
    ron_config_t cfg;
    FILE *f;
    (void)state;
    assert_non_null(mkdtemp(dir));
    ron_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s/sub/dir", dir);
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/sub/dir/FORMAT", dir);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(err, sizeof err, f));
    assert_string_equal(err, "1\n");
    fclose(f);
    /* a second start accepts its own layout */
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), 0);
    f = fopen(path, "w");
    fputs("7\n", f);
    fclose(f);
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "layout version '7'"));
    unlink(path);
    snprintf(path, sizeof path, "%s/sub/dir", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

static void
test_mn_data_dir_untouched_in_amnesia(void **state)
{
    char err[256];
    ron_config_t cfg;
    struct stat st;
    (void)state;
    ron_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "/tmp/ron_mn_amnesia_%d/x", (int)getpid());
    cfg.amnesia = cfg.amnesia_set = true;
    assert_int_equal(mn__data_dir_prepare(&cfg, err, sizeof err), 0);
    assert_int_equal(stat(cfg.data_dir, &st), -1);
}

/* ---- the echo service on a real loop ---- */

typedef struct {
    uv_loop_t loop;
    uv_tcp_t client;
    uv_connect_t conn;
    uv_timer_t guard;
    const ron_service_def_t *def;
    void *svc;
    ron_config_t cfg;
    char got[256];
    size_t got_len;
    int step;
} echo_test_t;

static void
et_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    echo_test_t *t = h->data;
    (void)hint;
    buf->base = t->got + t->got_len;
    buf->len = sizeof t->got - 1 - t->got_len;
}

static void et_write_done(uv_write_t *w, int status);

static void
et_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    echo_test_t *t = st->data;
    (void)buf;
    if (n <= 0)
        return;
    t->got_len += (size_t)n;
    t->got[t->got_len] = '\0';
    if (t->step == 0 && strchr(t->got, '\n') != NULL) {
        static uv_write_t w;
        uv_buf_t b = uv_buf_init("ping", 4);
        assert_string_equal(t->got, "hello test\n");
        t->step = 1;
        t->got_len = 0;
        uv_write(&w, st, &b, 1, et_write_done);
    } else if (t->step == 1 && t->got_len == 4) {
        assert_memory_equal(t->got, "ping", 4);
        t->step = 2;
        uv_close((uv_handle_t *)&t->client, NULL);
        uv_close((uv_handle_t *)&t->guard, NULL);
        t->def->stop(t->svc);
    }
}

static void
et_write_done(uv_write_t *w, int status)
{
    (void)w;
    assert_int_equal(status, 0);
}

static void
et_connected(uv_connect_t *c, int status)
{
    echo_test_t *t = c->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&t->client, et_alloc, et_read);
}

static void
et_guard(uv_timer_t *g)
{
    (void)g;
    fail_msg("echo test did not finish within 5 s");
}

static void
test_mn_echo_serves_banner_echoes_and_reports_metrics(void **state)
{
    echo_test_t *t = calloc(1, sizeof *t);
    char bound[RON_CONFIG_ADDR_MAX], err[256], *m = malloc(MN_MAX_METRICS);
    struct sockaddr_in sa;
    size_t mlen;
    int fd;
    (void)state;

    t->def = ron_service_find("echo");
    assert_non_null(t->def);
    assert_null(ron_service_find("nope"));
    ron_config_defaults(&t->cfg);
    t->cfg.version = 1;
    assert_int_equal(ron_config_set(&t->cfg, "echo.banner", "hello first", err, sizeof err), 0);
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(t->def->start(&t->loop, &t->cfg, fd, &t->svc), 0);

    /* a config update changes what new connections see */
    t->cfg.version = 2;
    assert_int_equal(ron_config_set(&t->cfg, "echo.banner", "hello test", err, sizeof err), 0);
    t->def->apply_config(t->svc, &t->cfg);

    uv_tcp_init(&t->loop, &t->client);
    t->client.data = t;
    t->conn.data = t;
    uv_ip4_addr("127.0.0.1", atoi(strrchr(bound, ':') + 1), &sa);
    uv_tcp_connect(&t->conn, &t->client, (struct sockaddr *)&sa, et_connected);
    uv_timer_init(&t->loop, &t->guard);
    uv_timer_start(&t->guard, et_guard, 5000, 0);

    /* metrics are valid before the loop runs and name the config version */
    mlen = t->def->metrics(t->svc, m, MN_MAX_METRICS);
    assert_true(mlen > 0);
    m[mlen] = '\0';
    assert_non_null(strstr(m, "echo_config_version 2\n"));

    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(t->step, 2);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    free(m);
    free(t);
}

/* ---- micro profile: one store and one index shared by the services ---- */

typedef struct {
    uv_loop_t loop;
    uv_async_t wake; /* the HTTP thread is done */
    rbus_hub_t *hub;
    rbus_t *bus[4]; /* storage, index, gateway, client */
    void *svc[3];   /* storage, index, gateway state */
    rbus_peer_t *storage;
    uint16_t port;
    /* one HTTP exchange on the client thread */
    uv_thread_t thread;
    const char *method;
    char path[128];
    const uint8_t *body;
    size_t body_len;
    int status;
    uint8_t *resp;
    size_t resp_len;
    bool http_done;
    /* one storage-protocol call */
    bool call_done;
    int call_status;
    uint8_t addr[STO_ADDR_LEN];
} share_t;

static void
sh_wake(uv_async_t *a)
{
    (void)a;
}

/* Blocking HTTP/1.1 exchange with Connection: close (client thread). */
static void
sh_http_thread(void *arg)
{
    share_t *t = arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(t->port)};
    struct timeval tv = {10, 0};
    char head[512];
    size_t cap = 1u << 20, len = 0;
    uint8_t *buf = malloc(cap);
    int fd = socket(AF_INET, SOCK_STREAM, 0), n;
    const uint8_t *p = NULL;

    t->status = -1;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        goto out;
    n = snprintf(head, sizeof head,
                 "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                 t->method, t->path, t->body_len);
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n ||
        (t->body_len > 0 && send(fd, t->body, t->body_len, MSG_NOSIGNAL) != (ssize_t)t->body_len))
        goto out;
    for (ssize_t r; len < cap && (r = recv(fd, buf + len, cap - len, 0)) > 0;)
        len += (size_t)r;
    if (len < 12 || (p = memmem(buf, len, "\r\n\r\n", 4)) == NULL)
        goto out;
    t->status = atoi((const char *)buf + 9);
    p += 4;
    t->resp_len = len - (size_t)(p - buf);
    t->resp = malloc(t->resp_len + 1);
    memcpy(t->resp, p, t->resp_len);
    t->resp[t->resp_len] = '\0';
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    t->http_done = true;
    uv_async_send(&t->wake);
}

/* Run the loop until *flag is set (at most 10 s). */
static void
sh_run_until(share_t *t, const bool *flag)
{
    uint64_t t0 = uv_now(&t->loop);
    while (!*flag && uv_now(&t->loop) - t0 < 10000) {
        uv_run(&t->loop, UV_RUN_ONCE);
        uv_update_time(&t->loop);
    }
    assert_true(*flag);
}

static int
sh_http(share_t *t, const char *method, const char *path, const void *body, size_t len)
{
    free(t->resp);
    t->resp = NULL;
    t->method = method;
    snprintf(t->path, sizeof t->path, "%s", path);
    t->body = body;
    t->body_len = len;
    t->http_done = false;
    assert_int_equal(uv_thread_create(&t->thread, sh_http_thread, t), 0);
    sh_run_until(t, &t->http_done);
    uv_thread_join(&t->thread);
    return t->status;
}

static void
sh_put_done(void *arg, int status, uint16_t code, const uint8_t addr[STO_ADDR_LEN])
{
    share_t *t = arg;
    (void)code;
    t->call_status = status;
    if (status == 0)
        memcpy(t->addr, addr, STO_ADDR_LEN);
    t->call_done = true;
}

static void
sh_get_done(void *arg, int status, uint16_t code, uint64_t size)
{
    share_t *t = arg;
    (void)code;
    (void)size;
    t->call_status = status;
    t->call_done = true;
}

static void
sh_bytes(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        b[i] = (uint8_t)seed;
    }
}

static int
sh_rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void
micro_services_share(bool amnesia)
{
    static const char *const names[4] = {"storage", "index", "gateway", "client"};
    const ron_service_def_t *defs[3] = {&mn__svc_storage, &mn__svc_index, &mn__svc_gateway};
    share_t *t = calloc(1, sizeof *t);
    ron_config_t *cfg = malloc(sizeof *cfg);
    size_t na = 300000, nb = 100001;
    uint8_t *a = malloc(na), *b = malloc(nb), *back;
    char text[68], path[128], bound[64], dir[64] = "";
    unsigned sref, iref;
    int rc = 0, fd, mfd;

    assert_non_null(t);
    sh_bytes(a, na, 7);
    sh_bytes(b, nb, 11);
    ron_config_defaults(cfg);
    cfg->profile = RON_PROFILE_MICRO;
    cfg->amnesia = amnesia;
    cfg->amnesia_set = true;
    cfg->version = 1;
    if (!amnesia) {
        snprintf(dir, sizeof dir, "/tmp/ron_mn_share.XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", dir);
    }
    assert_int_equal(uv_loop_init(&t->loop), 0);
    uv_async_init(&t->loop, &t->wake, sh_wake);
    t->hub = rbus_hub_new(&t->loop);
    for (int i = 0; i < 4; i++) {
        rbus_config_t bc = {.transport = RBUS_TRANSPORT_INPROC, .name = names[i], .hub = t->hub};
        assert_non_null(t->bus[i] = rbus_new(&t->loop, &bc, &rc));
    }
    /* in start order, as the node would: every service holds a reference */
    fd = mn__listen_tcp("127.0.0.1:0", bound, sizeof bound);
    assert_true(fd >= 0);
    t->port = (uint16_t)atoi(strrchr(bound, ':') + 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(defs[i]->start(&t->loop, cfg, i == 2 ? fd : -1, &t->svc[i]), 0);
        assert_int_equal(defs[i]->serve_bus(t->svc[i], t->bus[i]), 0);
    }
    mn__shared_refs(&sref, &iref);
    assert_int_equal(sref, 2); /* storage + gateway: one store */
    assert_int_equal(iref, 2); /* index + gateway: one index */
    assert_non_null(t->storage = rbus_connect(t->bus[3], "storage", &rc));

    /* put through the storage protocol -> served by the gateway */
    assert_int_equal(sto_client_put_buf(t->storage, a, na, NULL, NULL, sh_put_done, t), 0);
    sh_run_until(t, &t->call_done);
    assert_int_equal(t->call_status, 0);
    sto_addr_format(t->addr, text);
    snprintf(path, sizeof path, "/o/%s", text);
    assert_int_equal(sh_http(t, "GET", path, NULL, 0), 200);
    assert_int_equal(t->resp_len, na);
    assert_memory_equal(t->resp, a, na);

    /* POST through the gateway -> read through the storage protocol */
    assert_int_equal(sh_http(t, "POST", "/o", b, nb), 201);
    assert_non_null(strstr((char *)t->resp, "\"address\":\"b3:"));
    snprintf(text, sizeof text, "%.67s", strstr((char *)t->resp, "b3:"));
    assert_int_equal(sto_addr_parse(text, t->addr), 0);
    mfd = memfd_create("share", 0);
    assert_true(mfd >= 0);
    t->call_done = false;
    assert_int_equal(sto_client_get(t->storage, t->addr, mfd, sh_get_done, t), 0);
    sh_run_until(t, &t->call_done);
    assert_int_equal(t->call_status, 0);
    back = malloc(nb);
    assert_int_equal(pread(mfd, back, nb, 0), (ssize_t)nb);
    assert_memory_equal(back, b, nb);
    free(back);
    close(mfd);

    /* stop as the hosts do (stop, then free the endpoint in the same turn) */
    rbus_peer_close(t->storage);
    rbus_free(t->bus[3]);
    for (int i = 2; i >= 0; i--) {
        defs[i]->stop(t->svc[i]);
        rbus_free(t->bus[i]);
    }
    uv_close((uv_handle_t *)&t->wake, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    rbus_hub_free(t->hub);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    mn__shared_refs(&sref, &iref);
    assert_int_equal(sref, 0); /* the last release closed them */
    assert_int_equal(iref, 0);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    if (dir[0] != '\0')
        nftw(dir, sh_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(t->resp);
    free(t);
    free(cfg);
    free(a);
    free(b);
}

static void
test_mn_micro_amnesia_storage_and_gateway_share_one_ram_store(void **state)
{
    (void)state;
    micro_services_share(true);
}

static void
test_mn_micro_disk_store_is_opened_once_for_storage_and_gateway(void **state)
{
    (void)state;
    micro_services_share(false);
}

/* ---- capabilities: the authority's plumbing (mn_auth.c) ---- */

static void
test_mn_auth_event_page_extracts_the_page_and_refuses_other_events(void **state)
{
    static const char ev[] = "{\"auth\":{\"prev\":\"1\",\"head\":\"2\",\"entries\":[]}}";
    const char *page = NULL;
    size_t len = 0;
    (void)state;
    assert_int_equal(mn__auth_event_page(ev, strlen(ev), &page, &len), 0);
    assert_int_equal(len, strlen("{\"prev\":\"1\",\"head\":\"2\",\"entries\":[]}"));
    assert_memory_equal(page, "{\"prev\":\"1\",\"head\":\"2\",\"entries\":[]}", len);
    assert_int_equal(mn__auth_event_page("{\"config\":{}}", 13, &page, &len), RON_EINVAL);
    assert_int_equal(mn__auth_event_page("{\"auth\":", 8, &page, &len), RON_EINVAL);
    assert_int_equal(mn__auth_event_page("{\"auth\":[1]", 11, &page, &len), RON_EINVAL);
    assert_int_equal(mn__auth_event_page("", 0, &page, &len), RON_EINVAL);
}

static void
test_mn_auth_operator_token_dies_with_revocation_epoch_and_rotation(void **state)
{
    uint8_t seed[32], master[GUARD_MASTER_LEN], other[GUARD_MASTER_LEN];
    guard_authority_opts_t o = {0};
    guard_authority_t *a = NULL;
    guard_entry_t e;
    char tok[AUTH_MAX_TOKEN + 1];
    auth_token_t t;
    int64_t now = 1800000000;
    long n;
    (void)state;
    assert_true(sodium_init() >= 0);
    memset(seed, 7, sizeof seed);
    guard_master_derive(seed, master);
    seed[0] = 8;
    guard_master_derive(seed, other);
    o.master = master;
    assert_int_equal(guard_authority_open(&o, now, &a), 0);
    n = guard_authority_mint_operator(a, tok, sizeof tok);
    assert_true(n > 0);
    assert_int_equal(mn__auth_token_alive(a, master, tok, (size_t)n, now), 0);
    /* another node's master: the signature does not hold */
    assert_int_equal(mn__auth_token_alive(a, other, tok, (size_t)n, now), RON_ECAPSIG);
    assert_int_equal(mn__auth_token_alive(a, master, "garbage", 7, now), RON_ECAPFORMAT);
    /* revoked by its identifier */
    assert_int_equal(auth_token_parse(tok, (size_t)n, &t), 0);
    assert_int_equal(guard_authority_revoke(a, t.id_str, strlen(t.id_str), 0, now, &e), 0);
    assert_int_equal(mn__auth_token_alive(a, master, tok, (size_t)n, now), RON_ECAPREVOKED);
    /* a fresh one lives until the epoch is raised */
    n = guard_authority_mint_operator(a, tok, sizeof tok);
    assert_int_equal(mn__auth_token_alive(a, master, tok, (size_t)n, now), 0);
    assert_int_equal(guard_authority_raise_epoch(a, 0, &e), 1);
    assert_int_equal(mn__auth_token_alive(a, master, tok, (size_t)n, now), RON_ECAPREVOKED);
    /* a rotation: the old kid still verifies in its grace, but is not the current one */
    n = guard_authority_mint_operator(a, tok, sizeof tok);
    assert_int_equal(mn__auth_token_alive(a, master, tok, (size_t)n, now), 0);
    assert_int_equal(guard_authority_tick(a, now + 1, true, &e), 1);
    assert_int_equal(mn__auth_token_alive(a, master, tok, (size_t)n, now + 1), RON_ECAPKID);
    guard_authority_close(a);
}

static void
auth_closed_run(uv_loop_t *loop, mn_auth_t *a)
{
    mn__auth_close(a);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

static void
file_read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;
    assert_non_null(f);
    n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void
test_mn_auth_keeps_operator_cap_until_an_epoch_raise_kills_it(void **state)
{
    char dir[64] = "/tmp/ron_mn_auth_XXXXXX", path[160], err[256];
    char first[AUTH_MAX_TOKEN + 2], again[AUTH_MAX_TOKEN + 2], third[AUTH_MAX_TOKEN + 2];
    uint8_t seed[KMS_SEED_LEN], master[GUARD_MASTER_LEN], piped[GUARD_MASTER_LEN];
    kms_keystore_t *ks = NULL;
    guard_authority_opts_t o = {0};
    guard_authority_t *ga = NULL;
    guard_entry_t e;
    mn_auth_t *a = NULL;
    ron_config_t cfg;
    uv_loop_t loop;
    struct stat st;
    int fd;
    (void)state;
    assert_non_null(mkdtemp(dir));
    ron_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.amnesia = false;
    cfg.amnesia_set = true;
    assert_int_equal(kms_node_keys_open_or_create(dir, false, &ks, err, sizeof err), 0);
    assert_int_equal(kms_key_export_seed(kms_keystore_identity(ks), seed), 0);
    guard_master_derive(seed, master);
    uv_loop_init(&loop);

    assert_int_equal(mn__auth_open(&loop, &cfg, ks, &a, err, sizeof err), 0);
    assert_null(ron_node_guard()); /* macro: the kernel enforces nothing itself */
    /* every child gets the master on a pipe */
    fd = mn__auth_capkey_pipe(a);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, piped, sizeof piped), (ssize_t)sizeof piped);
    assert_memory_equal(piped, master, sizeof master);
    close(fd);
    snprintf(path, sizeof path, "%s/operator.cap", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    file_read_all(path, first, sizeof first);
    auth_closed_run(&loop, a);

    /* a restart keeps it */
    assert_int_equal(mn__auth_open(&loop, &cfg, ks, &a, err, sizeof err), 0);
    file_read_all(path, again, sizeof again);
    assert_string_equal(first, again);
    auth_closed_run(&loop, a);

    /* an epoch raised while the node was down kills it: the next start re-mints */
    snprintf(path, sizeof path, "%s/auth", dir);
    o.dir = path;
    o.master = master;
    assert_int_equal(guard_authority_open(&o, ron_unix_time(), &ga), 0);
    assert_int_equal(guard_authority_raise_epoch(ga, 0, &e), 1);
    guard_authority_close(ga);
    assert_int_equal(mn__auth_open(&loop, &cfg, ks, &a, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/operator.cap", dir);
    file_read_all(path, third, sizeof third);
    assert_string_not_equal(first, third);
    auth_closed_run(&loop, a);
    assert_int_equal(uv_loop_close(&loop), 0);
    kms_keystore_free(ks);
    nftw(dir, sh_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void
test_mn_auth_micro_node_guard_is_in_step_and_writes_nothing_in_amnesia(void **state)
{
    char dir[64] = "/tmp/ron_mn_authm_XXXXXX", path[160], err[256];
    kms_keystore_t *ks = NULL;
    mn_auth_t *a = NULL;
    ron_config_t cfg;
    uv_loop_t loop;
    struct stat st;
    (void)state;
    assert_non_null(mkdtemp(dir));
    ron_config_defaults(&cfg);
    cfg.profile = RON_PROFILE_MICRO;
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    assert_true(ron_config_amnesia(&cfg));
    assert_int_equal(kms_node_keys_open_or_create(dir, true, &ks, err, sizeof err), 0);
    uv_loop_init(&loop);
    assert_int_equal(mn__auth_open(&loop, &cfg, ks, &a, err, sizeof err), 0);
    assert_non_null(ron_node_guard());
    assert_true(mn__guard_fed_here());
    assert_int_equal(guard_head(ron_node_guard()), mn__auth_head(a));
    snprintf(path, sizeof path, "%s/operator.cap", dir);
    assert_int_equal(stat(path, &st), -1);
    snprintf(path, sizeof path, "%s/auth", dir);
    assert_int_equal(stat(path, &st), -1);
    auth_closed_run(&loop, a);
    assert_null(ron_node_guard());
    assert_int_equal(uv_loop_close(&loop), 0);
    kms_keystore_free(ks);
    rmdir(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mn_listen_tcp_binds_ipv4_and_ipv6_ephemeral_ports),
        cmocka_unit_test(test_mn_listen_tcp_rejects_bad_addresses),
        cmocka_unit_test(test_mn_listen_tcp_reports_address_in_use),
        cmocka_unit_test(test_mn_exit_reason_names_signal_or_status),
        cmocka_unit_test(test_mn_data_dir_gets_format_file_and_refuses_unknown_layout),
        cmocka_unit_test(test_mn_data_dir_untouched_in_amnesia),
        cmocka_unit_test(test_mn_echo_serves_banner_echoes_and_reports_metrics),
        cmocka_unit_test(test_mn_micro_amnesia_storage_and_gateway_share_one_ram_store),
        cmocka_unit_test(test_mn_micro_disk_store_is_opened_once_for_storage_and_gateway),
        cmocka_unit_test(test_mn_auth_event_page_extracts_the_page_and_refuses_other_events),
        cmocka_unit_test(test_mn_auth_operator_token_dies_with_revocation_epoch_and_rotation),
        cmocka_unit_test(test_mn_auth_keeps_operator_cap_until_an_epoch_raise_kills_it),
        cmocka_unit_test(test_mn_auth_micro_node_guard_is_in_step_and_writes_nothing_in_amnesia),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
