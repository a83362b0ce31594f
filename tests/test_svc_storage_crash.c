/*
 * test_svc_storage_crash.c - the storage service as a real child process
 * (`ron service storage`, the binary `ron node` starts) killed with SIGKILL
 * during puts. The test plays the kernel's part of ron-bus (HELLO with the
 * config snapshot, heartbeats, the capability master on fd 6 and auth_sync
 * from a capability authority in RAM) so it knows the bus directory and
 * secret, and is a storage client over Unix sockets with the operator's
 * capability (the child enforces capabilities, as every node child does). Checked after every kill:
 * the request in flight failed fast with RON_EUNAVAIL (not at its deadline), and after the restart
 * every acknowledged object is stored whole (get returns its verified bytes) and no temporary file
 * is left.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "blake3.h"
#include "bus_fixture.h"
#include "ron_bus.h"
#include "ron_config.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_util.h"
#include "sto_service.h"

#define WAIT_MS 10000u
#define KILLS 6
#define OBJ_MAX (900u * 1024u)
#define CHUNK (128u * 1024u)

extern char **environ;

typedef struct {
    uv_loop_t loop;
    char busdir[RBUS_MAX_DIR];
    char tmp[64];
    char hex[2 * RBUS_SECRET_LEN + 1];
    char *snapshot; /* {"config":...} */
    rbus_t *kernel, *cli;
    rbus_peer_t *peer;
    pid_t child;
    bool done;
    int status;
    uint16_t code;
    json_t *json;
    uint8_t *raw;
    size_t raw_len;
    uint64_t answered_ms;
    /* the kernel's capability authority (RAM) and the operator's token */
    uint8_t master[GUARD_MASTER_LEN];
    guard_authority_t *auth;
    char op_token[AUTH_MAX_TOKEN + 1];
} fx_t;

/* The kernel's side: HELLO gets the snapshot, auth_sync a page of the
 * authority's entries, heartbeats get 200. */
static void
kernel_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    fx_t *fx = arg;
    json_t *msg = json_loadb((const char *)f->payload, f->payload_len, 0, NULL);
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (op != NULL && strcmp(op, "hello") == 0) {
        rbus_respond(req, 200, fx->snapshot, strlen(fx->snapshot));
    } else if (op != NULL && strcmp(op, "auth_sync") == 0) {
        const char *after_s = json_string_value(json_object_get(msg, "after"));
        uint64_t after = 0, head;
        guard_entry_t *e = calloc(GUARD_SYNC_PAGE, sizeof *e);
        size_t cap = GUARD_SYNC_PAGE * (GUARD_MAX_ENTRY_JSON + 2) + 128, n;
        char *page = malloc(cap);
        bool more = false;
        long len;
        if (after_s != NULL)
            (void)ron_parse_u64(after_s, strlen(after_s), &after);
        n = guard_authority_since(fx->auth, after, e, GUARD_SYNC_PAGE, &more);
        head = more ? e[n - 1].seq : guard_authority_head(fx->auth);
        len = guard_page_encode(after, head, e, n, page, cap);
        if (len > 0)
            rbus_respond(req, 200, page, (size_t)len);
        else
            rbus_respond_error(req, 500, "cannot encode the page");
        free(page);
        free(e);
    } else {
        rbus_respond(req, 200, "{}", 2);
    }
    json_decref(msg);
}

static void
child_spawn(fx_t *fx)
{
    const char *bindir = getenv("RON_BINARY_DIR");
    char bin[512], e_dir[RBUS_MAX_DIR + 32], e_sec[2 * RBUS_SECRET_LEN + 32];
    char e_cap[] = "RON_CAPKEY_FD=6";
    size_t n = 0;
    char **env;
    int capfd[2];
    pid_t pid;

    assert_non_null(bindir);
    snprintf(bin, sizeof bin, "%s/ron", bindir);
    snprintf(e_dir, sizeof e_dir, "%s=%s", RBUS_ENV_DIR, fx->busdir);
    snprintf(e_sec, sizeof e_sec, "%s=%s", RBUS_ENV_SECRET, fx->hex);
    while (environ[n] != NULL)
        n++;
    env = calloc(n + 4, sizeof *env);
    memcpy(env, environ, n * sizeof *env);
    env[n] = e_dir;
    env[n + 1] = e_sec;
    env[n + 2] = e_cap;
    /* the capability master, as the kernel hands it to every child: a pipe on fd 6 */
    assert_int_equal(pipe(capfd), 0);
    assert_int_equal(write(capfd[1], fx->master, GUARD_MASTER_LEN), GUARD_MASTER_LEN);
    close(capfd[1]);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[] = {bin, "service", "storage", NULL};
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 2); /* the child's JSON logs would drown cmocka's output */
        if (dup2(capfd[0], 6) < 0)
            _exit(126);
        if (capfd[0] != 6)
            close(capfd[0]);
        execve(bin, argv, env);
        _exit(127);
    }
    close(capfd[0]);
    free(env);
    fx->child = pid;
}

static void
child_kill(fx_t *fx, int sig)
{
    int st;
    kill(fx->child, sig);
    assert_int_equal(waitpid(fx->child, &st, 0), fx->child);
    fx->child = 0;
}

static void
on_reply(void *arg, int status, const oap_frame_t *resp)
{
    fx_t *fx = arg;
    fx->done = true;
    fx->status = status;
    fx->answered_ms = ron_now_ms();
    if (status < 0)
        return;
    fx->code = resp->code;
    bus_fx_answer_split(resp, &fx->json, &fx->raw, &fx->raw_len);
}

/*
 * Send one request; when kill_child, SIGKILL the child right after sending.
 * Returns rbus status (0 or RON_E*) and leaves the code in fx->code.
 */
static int
send_req(fx_t *fx, const void *raw, size_t raw_len, bool kill_child, const char *fmt, ...)
{
    char js[512];
    uint8_t *buf;
    size_t len;
    uint64_t end = ron_now_ms() + 2 * WAIT_MS;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(js, sizeof js, fmt, ap);
    va_end(ap);
    buf = bus_fx_frame(js, raw, raw_len, &len);
    json_decref(fx->json);
    free(fx->raw);
    fx->json = NULL;
    fx->raw = NULL;
    fx->raw_len = 0;
    fx->done = false;
    fx->code = 0;
    {
        rbus_request_opts_t o = {.app_proto_id = OAP_APP_STORAGE, .deadline_ms = WAIT_MS};
        o.cap = fx->op_token; /* the operator's capability: the child enforces */
        o.cap_len = strlen(fx->op_token);
        rc = rbus_request_ex(fx->peer, &o, buf, len, on_reply, fx);
    }
    free(buf);
    if (rc < 0)
        return rc;
    if (kill_child) {
        uv_run(&fx->loop, UV_RUN_NOWAIT); /* hand the frame to the socket */
        kill(fx->child, SIGKILL);
    }
    while (!fx->done && ron_now_ms() < end)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->done);
    return fx->status;
}

/* Wait until the (re)started child answers list. */
static void
wait_serving(fx_t *fx)
{
    uint64_t end = ron_now_ms() + WAIT_MS;
    while (ron_now_ms() < end) {
        if (send_req(fx, NULL, 0, false, "{\"op\":\"list\"}") == 0 && fx->code == 200)
            return;
        uint64_t pause = ron_now_ms() + 50;
        while (ron_now_ms() < pause)
            uv_run(&fx->loop, UV_RUN_NOWAIT), usleep(5000);
    }
    fail_msg("storage child did not serve within %u ms", WAIT_MS);
}

static void
fill(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (uint8_t)(seed >> 16);
    }
}

static size_t
count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Object files under <store>/objects/<ab>/ (one per object in format 2). */
static size_t
count_object_files(const char *objdir)
{
    DIR *d = opendir(objdir);
    struct dirent *e;
    char sub[512];
    size_t n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof sub, "%s/%s", objdir, e->d_name);
        n += count_files(sub);
    }
    closedir(d);
    return n;
}

typedef struct {
    char addr[68];
    uint32_t seed;
    size_t size;
} acked_t;

/* Every acknowledged object is whole: get returns exactly its bytes. */
static void
check_acked(fx_t *fx, const acked_t *a, size_t n)
{
    uint8_t *want = malloc(OBJ_MAX), *back = malloc(OBJ_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t got = 0;
        fill(want, a[i].size, a[i].seed);
        while (got < a[i].size) {
            assert_int_equal(send_req(fx, NULL, 0, false,
                                      "{\"op\":\"get\",\"address\":\"%s\",\"offset\":\"%zu\"}",
                                      a[i].addr, got),
                             0);
            assert_int_equal(fx->code, 200);
            assert_true(fx->raw_len > 0);
            memcpy(back + got, fx->raw, fx->raw_len);
            got += fx->raw_len;
        }
        assert_int_equal(got, a[i].size);
        assert_memory_equal(back, want, a[i].size);
    }
    free(want);
    free(back);
}

static void
test_kill_9_during_puts_keeps_acknowledged_objects_and_fails_fast(void **state)
{
    fx_t fx;
    rbus_config_t kc = {0}, cc = {0};
    ron_config_t *cfg = calloc(1, sizeof *cfg);
    acked_t acked[KILLS * 2];
    size_t n_acked = 0, n_failed_fast = 0, n_maybe = 0; /* n_maybe: commits cut by the kill */
    uint8_t *obj = malloc(OBJ_MAX);
    char tmpdir[160], objdir[160], *snap;
    int rc = 0;
    (void)state;

    memset(&fx, 0, sizeof fx);
    assert_int_equal(uv_loop_init(&fx.loop), 0);
    snprintf(fx.tmp, sizeof fx.tmp, "/tmp/ron-stocrash-XXXXXX");
    assert_non_null(mkdtemp(fx.tmp));
    {
        uint8_t seed[32];
        guard_authority_opts_t ao = {0};
        assert_true(sodium_init() >= 0);
        randombytes_buf(seed, sizeof seed);
        guard_master_derive(seed, fx.master);
        ao.master = fx.master;
        assert_int_equal(guard_authority_open(&ao, (int64_t)time(NULL), &fx.auth), 0);
        assert_true(guard_authority_mint_operator(fx.auth, fx.op_token, sizeof fx.op_token) > 0);
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/store/tmp", fx.tmp);
    snprintf(objdir, sizeof objdir, "%s/store/objects", fx.tmp);
    ron_config_defaults(cfg);
    cfg->version = 1;
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", fx.tmp);
    cfg->amnesia = false;
    cfg->amnesia_set = true;
    snprintf(cfg->services[0], sizeof cfg->services[0], "storage");
    cfg->n_services = 1;
    snap = ron_config_to_json(cfg);
    assert_non_null(snap);
    fx.snapshot = malloc(strlen(snap) + 16);
    sprintf(fx.snapshot, "{\"config\":%s}", snap);
    free(snap);

    assert_int_equal(rbus_dir_create(fx.busdir, sizeof fx.busdir), 0);
    assert_int_equal(rbus_secret_generate(kc.secret), 0);
    rbus_secret_hex(kc.secret, fx.hex);
    memcpy(cc.secret, kc.secret, sizeof kc.secret);
    kc.transport = cc.transport = RBUS_TRANSPORT_UNIX;
    kc.dir = cc.dir = fx.busdir;
    kc.name = "kernel";
    cc.name = "client";
    fx.kernel = rbus_new(&fx.loop, &kc, &rc);
    assert_non_null(fx.kernel);
    assert_int_equal(rbus_handle(fx.kernel, OAP_APP_KERNEL, kernel_request, &fx), 0);
    assert_int_equal(rbus_listen(fx.kernel), 0);
    fx.cli = rbus_new(&fx.loop, &cc, &rc);
    assert_non_null(fx.cli);
    child_spawn(&fx);
    fx.peer = rbus_connect(fx.cli, "storage", &rc);
    assert_non_null(fx.peer);
    wait_serving(&fx);

    for (int k = 0; k < KILLS; k++) {
        size_t size = 300u * 1024u + (size_t)k * 97u * 1024u + (size_t)k;
        size_t nchunks = (size_t)((size + CHUNK - 1) / CHUNK);
        /* the chunk whose write is in flight at the kill; every third time, the commit */
        size_t kill_at = k % 3 == 2 ? nchunks : (size_t)k % 3;
        char id[24];
        uint64_t t0;

        /* one whole put, acknowledged */
        fill(obj, size, 1000u + (uint32_t)k);
        assert_int_equal(send_req(&fx, NULL, 0, false, "{\"op\":\"put_begin\"}"), 0);
        assert_int_equal(fx.code, 200);
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(fx.json, "put_id")));
        for (size_t off = 0; off < size; off += CHUNK) {
            size_t len = size - off < CHUNK ? size - off : CHUNK;
            assert_int_equal(send_req(&fx, obj + off, len, false,
                                      "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"%zu\"}",
                                      id, off),
                             0);
            assert_int_equal(fx.code, 200);
        }
        assert_int_equal(send_req(&fx, NULL, 0, false, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id),
                         0);
        assert_int_equal(fx.code, 200);
        snprintf(acked[n_acked].addr, 68, "%s",
                 json_string_value(json_object_get(fx.json, "address")));
        acked[n_acked].seed = 1000u + (uint32_t)k;
        acked[n_acked++].size = size;

        /* a second put, killed while a write or its commit is in flight */
        fill(obj, size, 2000u + (uint32_t)k);
        assert_int_equal(send_req(&fx, NULL, 0, false, "{\"op\":\"put_begin\"}"), 0);
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(fx.json, "put_id")));
        for (size_t c = 0; c <= nchunks; c++) {
            bool last = c == nchunks, doit = c == kill_at;
            size_t off = c * CHUNK, len = last ? 0 : (size - off < CHUNK ? size - off : CHUNK);
            t0 = ron_now_ms();
            if (last)
                rc = send_req(&fx, NULL, 0, doit, "{\"op\":\"put_commit\",\"put_id\":\"%s\"}", id);
            else
                rc = send_req(&fx, obj + off, len, doit,
                              "{\"op\":\"put_write\",\"put_id\":\"%s\",\"offset\":\"%zu\"}", id,
                              off);
            if (!doit) {
                assert_int_equal(rc, 0);
                continue;
            }
            if (rc == 0 && fx.code == 200 && last) {
                /* the commit won the race: it is acknowledged, so it must survive */
                snprintf(acked[n_acked].addr, 68, "%s",
                         json_string_value(json_object_get(fx.json, "address")));
                acked[n_acked].seed = 2000u + (uint32_t)k;
                acked[n_acked++].size = size;
            } else if (rc != 0) {
                /* in flight at the kill: fails at once and retryably, not at the deadline */
                assert_int_equal(rc, RON_EUNAVAIL);
                assert_true(fx.answered_ms - t0 < WAIT_MS / 4);
                n_failed_fast++;
                n_maybe += last;
            }
            /* else: the child answered the write just before it died (acknowledged,
             * but the put itself is not: it must not appear) */
            break;
        }
        {
            int st;
            assert_int_equal(waitpid(fx.child, &st, 0), fx.child);
            assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        }
        child_spawn(&fx);
        wait_serving(&fx);
        assert_int_equal(count_files(tmpdir), 0); /* recovery removed the dead put's files */
        check_acked(&fx, acked, n_acked);
        assert_int_equal(send_req(&fx, NULL, 0, false, "{\"op\":\"list\",\"limit\":\"256\"}"), 0);
        /* acknowledged ones, plus at most the commits whose answer the kill cut off */
        assert_true(json_array_size(json_object_get(fx.json, "objects")) >= n_acked);
        assert_true(json_array_size(json_object_get(fx.json, "objects")) <= n_acked + n_maybe);
        /* object files are authoritative: after recovery each file is an
         * indexed object (none orphaned, none re-created), and every
         * acknowledged object is pinned (its put's pin survived) */
        assert_int_equal(count_object_files(objdir),
                         json_array_size(json_object_get(fx.json, "objects")));
        for (size_t i = 0; i < n_acked; i++) {
            assert_int_equal(send_req(&fx, NULL, 0, false, "{\"op\":\"stat\",\"address\":\"%s\"}",
                                      acked[i].addr),
                             0);
            assert_int_equal(fx.code, 200);
            assert_string_equal(json_string_value(json_object_get(fx.json, "state")), "pinned");
        }
    }

    assert_true(n_failed_fast > 0); /* the kills did hit requests in flight */
    child_kill(&fx, SIGTERM);
    rbus_peer_close(fx.peer);
    rbus_free(fx.cli);
    rbus_free(fx.kernel);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx.loop), 0);
    rbus_dir_remove(fx.busdir);
    bus_fx_rm_tree(fx.tmp);
    json_decref(fx.json);
    free(fx.raw);
    free(fx.snapshot);
    free(cfg);
    free(obj);
    guard_authority_close(fx.auth);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_9_during_puts_keeps_acknowledged_objects_and_fails_fast),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
