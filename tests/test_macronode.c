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
#include <fcntl.h>
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

/* The master's pipe: close-on-exec in the kernel (no other child inherits
 * it), read whole across short writes, closed after reading; a short pipe is
 * an error that leaves no master behind. */
static void
test_mn_capkey_pipe_is_cloexec_read_whole_and_closed(void **state)
{
    uint8_t m[GUARD_MASTER_LEN];
    int fds[2];
    (void)state;
    for (size_t i = 0; i < sizeof m; i++)
        m[i] = (uint8_t)(i * 7 + 1);
    /* two short writes, then EOF: read whole, the fd closed */
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    assert_int_equal(write(fds[1], m, 5), 5);
    assert_int_equal(write(fds[1], m + 5, sizeof m - 5), (ssize_t)(sizeof m - 5));
    close(fds[1]);
    assert_int_equal(mn__capkey_read_fd(fds[0]), 0);
    assert_true(mn__capkey_held());
    assert_int_equal(fcntl(fds[0], F_GETFD), -1); /* closed */
    mn__guard_forget();
    assert_false(mn__capkey_held());
    /* cut short: an error, nothing held, the fd closed */
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    assert_int_equal(write(fds[1], m, 31), 31);
    close(fds[1]);
    assert_true(mn__capkey_read_fd(fds[0]) < 0);
    assert_false(mn__capkey_held());
    assert_int_equal(fcntl(fds[0], F_GETFD), -1);
}

/* ---- the kernel's auth ops over a real (in-process) bus (review, H9) ---- */

typedef struct {
    bool done;
    int status;
    uint16_t code;
    char *body; /* 64 KiB */
} kreply_t;

static void
kauth_handle(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    json_t *msg =
        json_loadb((const char *)f->payload, f->payload_len, JSON_REJECT_DUPLICATES, NULL);
    const char *op = json_string_value(json_object_get(msg, "op"));
    mn__auth_bus_op(arg, req, "app", op != NULL ? op : "", msg);
    json_decref(msg);
}

static void
kreply_cb(void *arg, int status, const oap_frame_t *resp)
{
    kreply_t *r = arg;
    size_t n = 0;
    r->done = true;
    r->status = status;
    if (status == 0 && resp != NULL) {
        r->code = resp->code;
        n = RON_MIN(resp->payload_len, (size_t)65535);
        memcpy(r->body, resp->payload, n);
    }
    r->body[n] = '\0';
}

static void
ktick(uv_timer_t *t)
{
    (void)t;
}

/* Send json to the kernel endpoint and run the loop (at most 5 s) until it answers. */
static uint16_t
kask(uv_loop_t *loop, rbus_peer_t *p, const char *json, kreply_t *r)
{
    uv_timer_t tick;
    uint64_t until = ron_now_ms() + 5000;
    r->done = false;
    r->code = 0;
    assert_int_equal(rbus_request(p, OAP_APP_KERNEL, json, strlen(json), 4000, kreply_cb, r), 0);
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, ktick, 5, 5);
    while (!r->done && ron_now_ms() < until)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_true(r->done);
    assert_int_equal(r->status, 0);
    return r->code;
}

/* Apply one auth_sync answer to g; returns the page's entry count, *head_out its head. */
static long
ksync(uv_loop_t *loop, rbus_peer_t *p, guard_t *g, kreply_t *r, guard_entry_t *e,
      uint64_t *head_out)
{
    char req[128];
    uint64_t prev = 0;
    long n;
    snprintf(req, sizeof req, "{\"op\":\"auth_sync\",\"service\":\"app\",\"after\":\"%llu\"}",
             (unsigned long long)guard_head(g));
    assert_int_equal(kask(loop, p, req, r), 200);
    n = guard_page_decode(r->body, strlen(r->body), &prev, head_out, e, GUARD_SYNC_PAGE);
    assert_true(n >= 0);
    assert_int_equal(prev, guard_head(g));
    assert_int_equal(guard_apply(g, prev, *head_out, e, (size_t)n), 0);
    return n;
}

static void
test_mn_auth_bus_ops_page_refuse_bad_input_and_rewrite_operator_cap_after_a_failed_write(
    void **state)
{
    char dir[64] = "/tmp/ron_mn_authb_XXXXXX", path[160], obstacle[160], err[256], req[256];
    char first[AUTH_MAX_TOKEN + 2], now_cap[AUTH_MAX_TOKEN + 2];
    uint8_t seed[KMS_SEED_LEN], master[GUARD_MASTER_LEN];
    kms_keystore_t *ks = NULL;
    mn_auth_t *a = NULL;
    ron_config_t cfg;
    uv_loop_t loop;
    kreply_t r = {0};
    guard_entry_t *e = calloc(GUARD_SYNC_PAGE, sizeof *e);
    guard_t *g = NULL;
    guard_result_t res;
    auth_token_t *t = malloc(sizeof *t);
    uint64_t head = 0, h0;
    long n;
    int rc;
    (void)state;
    r.body = malloc(65536);
    assert_non_null(mkdtemp(dir));
    ron_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.amnesia = false;
    cfg.amnesia_set = true;
    assert_int_equal(kms_node_keys_open_or_create(dir, false, &ks, err, sizeof err), 0);
    assert_int_equal(kms_key_export_seed(kms_keystore_identity(ks), seed), 0);
    guard_master_derive(seed, master);
    guard_opts_t go = {.service = "test", .master = master};
    assert_int_equal(guard_new(&go, &g), 0);
    uv_loop_init(&loop);
    assert_int_equal(mn__auth_open(&loop, &cfg, ks, &a, err, sizeof err), 0);
    rbus_hub_t *hub = rbus_hub_new(&loop);
    rbus_config_t kc = {.transport = RBUS_TRANSPORT_INPROC, .name = "kernel", .hub = hub};
    rbus_config_t ac = {.transport = RBUS_TRANSPORT_INPROC, .name = "app", .hub = hub};
    rbus_t *kb = rbus_new(&loop, &kc, &rc), *ab = rbus_new(&loop, &ac, &rc);
    assert_non_null(kb);
    assert_non_null(ab);
    assert_int_equal(rbus_handle(kb, OAP_APP_KERNEL, kauth_handle, a), 0);
    assert_int_equal(rbus_listen(kb), 0);
    rbus_peer_t *p = rbus_connect(ab, "kernel", &rc);
    assert_non_null(p);
    rc = mn__auth_capkey_pipe(a); /* the kernel's end: close-on-exec */
    assert_true(rc >= 0);
    assert_true((fcntl(rc, F_GETFD) & FD_CLOEXEC) != 0);
    close(rc);

    /* malformed requests: 400, nothing changes */
    h0 = mn__auth_head(a);
    assert_int_equal(
        kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"id\":\"ron1:r1:0:zz\"}", &r),
        400);
    assert_int_equal(kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\"}", &r), 400);
    assert_int_equal(
        kask(&loop, p,
             "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":\"next\",\"id\":\"x\"}", &r),
        400);
    assert_int_equal(
        kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":\"0\"}", &r), 400);
    assert_int_equal(kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":7}", &r),
                     400);
    snprintf(
        req, sizeof req,
        "{\"op\":\"auth_revoke\",\"service\":\"app\",\"id\":\"ron1:r1:0:%s\",\"until\":\"-1\"}",
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab"
        "ab");
    assert_int_equal(kask(&loop, p, req, &r), 400);
    assert_int_equal(
        kask(&loop, p, "{\"op\":\"auth_sync\",\"service\":\"app\",\"after\":\"99999\"}", &r), 400);
    assert_int_equal(kask(&loop, p, "{\"op\":\"auth_sync\",\"service\":\"app\",\"after\":7}", &r),
                     400);
    /* an explicit epoch moves one step at most: a jump (to 2^63-1, say) would
     * leave no epoch to raise to ever after */
    assert_int_equal(
        kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":\"2\"}", &r), 400);
    assert_int_equal(kask(&loop, p,
                          "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":"
                          "\"9223372036854775807\"}",
                          &r),
                     400);
    assert_int_equal(mn__auth_head(a), h0);
    assert_int_equal(
        kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":\"1\"}", &r), 200);
    assert_non_null(strstr(r.body, "\"epoch\":\"1\""));
    assert_int_equal(mn__auth_head(a), h0 + 1);
    assert_int_equal(/* the same raise again: a no-op (idempotent) */
                     kask(&loop, p, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"epoch\":\"1\"}",
                          &r),
                     200);
    assert_int_equal(mn__auth_head(a), h0 + 1);
    h0++;

    /* more changes than a page: the first page's head is its last entry's seq */
    for (int i = 0; i < GUARD_SYNC_PAGE + 4; i++) {
        char id[AUTH_ID_MAX + 1];
        assert_int_equal(auth_id_new(id, "r1", 1), 0); /* epoch 0 ones are dead already */
        snprintf(req, sizeof req, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"id\":\"%s\"}", id);
        assert_int_equal(kask(&loop, p, req, &r), 200);
    }
    assert_int_equal(mn__auth_head(a), h0 + GUARD_SYNC_PAGE + 4);
    n = ksync(&loop, p, g, &r, e, &head);
    assert_int_equal(n, GUARD_SYNC_PAGE);
    assert_int_equal(head, e[GUARD_SYNC_PAGE - 1].seq);
    assert_true(head < mn__auth_head(a));
    n = ksync(&loop, p, g, &r, e, &head);
    assert_true(n > 0 && n < GUARD_SYNC_PAGE);
    assert_int_equal(head, mn__auth_head(a));
    assert_int_equal(guard_head(g), mn__auth_head(a));

    /* operator.cap: a write that fails leaves no token in force that is not on disk */
    snprintf(path, sizeof path, "%s/operator.cap", dir);
    file_read_all(path, first, sizeof first);
    first[strcspn(first, "\n")] = '\0';
    assert_int_equal(auth_token_parse(first, strlen(first), t), 0);
    snprintf(obstacle, sizeof obstacle, "%s/.operator.cap.tmp", dir);
    assert_int_equal(mkdir(obstacle, 0700), 0); /* unlink(2) of a directory fails */
    snprintf(req, sizeof req, "{\"op\":\"auth_revoke\",\"service\":\"app\",\"id\":\"%s\"}",
             t->id_str);
    assert_int_equal(kask(&loop, p, req, &r), 200); /* the revocation itself holds */
    file_read_all(path, now_cap, sizeof now_cap);
    now_cap[strcspn(now_cap, "\n")] = '\0';
    assert_string_equal(now_cap, first); /* could not be replaced */
    assert_int_equal(rmdir(obstacle), 0);
    /* the next change, even one that kills nothing, writes a live one */
    snprintf(req, sizeof req,
             "{\"op\":\"auth_revoke\",\"service\":\"app\",\"id\":\"ron1:r1:1:%s\"}",
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd"
             "cd");
    assert_int_equal(kask(&loop, p, req, &r), 200);
    file_read_all(path, now_cap, sizeof now_cap);
    now_cap[strcspn(now_cap, "\n")] = '\0';
    while (ksync(&loop, p, g, &r, e, &head) == GUARD_SYNC_PAGE)
        ;
    guard_req_t q = {.op = AUTH_OP_ADMIN,
                     .token = now_cap,
                     .token_len = strlen(now_cap),
                     .size = AUTH_SIZE_UNKNOWN};
    assert_int_equal(guard_check(g, &q, &res), 0);

    /* auth_show tells the generation; auth_rotate moves to the next one, pushes
     * it (a change) and re-mints operator.cap under the new kid, while a token
     * of the previous kid keeps verifying through the grace */
    assert_int_equal(kask(&loop, p, "{\"op\":\"auth_show\",\"service\":\"app\"}", &r), 200);
    assert_non_null(strstr(r.body, "\"kid\":\"r1\""));
    assert_non_null(strstr(r.body, "\"prev_kid\":\"\""));
    h0 = mn__auth_head(a);
    assert_int_equal(kask(&loop, p, "{\"op\":\"auth_rotate\",\"service\":\"app\"}", &r), 200);
    assert_non_null(strstr(r.body, "\"kid\":\"r2\""));
    assert_non_null(strstr(r.body, "\"prev_kid\":\"r1\""));
    assert_int_equal(mn__auth_head(a), h0 + 1);
    {
        char rotated[AUTH_MAX_TOKEN + 2];
        file_read_all(path, rotated, sizeof rotated);
        rotated[strcspn(rotated, "\n")] = '\0';
        assert_string_not_equal(rotated, now_cap);
        assert_int_equal(auth_token_parse(rotated, strlen(rotated), t), 0);
        assert_string_equal(t->id.kid, "r2");
        while (ksync(&loop, p, g, &r, e, &head) == GUARD_SYNC_PAGE)
            ;
        assert_int_equal(guard_head(g), mn__auth_head(a));
        q.token = rotated;
        q.token_len = strlen(rotated);
        assert_int_equal(guard_check(g, &q, &res), 0);
        q.token = now_cap; /* r1: in its grace */
        q.token_len = strlen(now_cap);
        assert_int_equal(guard_check(g, &q, &res), 0);
    }

    rbus_peer_close(p);
    rbus_free(ab);
    rbus_free(kb);
    uv_run(&loop, UV_RUN_NOWAIT);
    rbus_hub_free(hub);
    auth_closed_run(&loop, a);
    assert_int_equal(uv_loop_close(&loop), 0);
    guard_free(g);
    kms_keystore_free(ks);
    free(e);
    free(t);
    free(r.body);
    nftw(dir, sh_rm, 16, FTW_DEPTH | FTW_PHYS);
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
        cmocka_unit_test(
            test_mn_auth_bus_ops_page_refuse_bad_input_and_rewrite_operator_cap_after_a_failed_write),
        cmocka_unit_test(test_mn_capkey_pipe_is_cloexec_read_whole_and_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
