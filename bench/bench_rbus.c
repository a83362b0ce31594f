/*
 * bench_rbus.c - ron-bus request/response over Unix sockets between two
 * processes (server and client pinned to different cores when the machine
 * has two): requests/s and latency percentiles for small requests with a
 * fixed number in flight. One run per invocation; bench/rbus.sh repeats runs
 * and takes medians.
 *
 *   bench_rbus [--mode bus|inproc|raw] [--window W] [--requests N] [--size B]
 *
 * --mode inproc runs micronode's in-process transport: both endpoints on one
 * loop in one process (one core), for comparison with the socket path.
 * --mode raw is the floor a user could build by hand: the same frame sizes
 * written and read with blocking write(2)/read(2) on a socketpair, no
 * framing, no event loop. Output: one line "mode=.. window=.. requests=..
 * rps=.. p50_us=.. p99_us=..". With RBUS_BENCH_DEBUG set, p90/p95/p98 go
 * to stderr too (to see where a tail starts).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"

#define APP_BENCH 100

typedef struct {
    uv_loop_t *loop;
    rbus_peer_t *peer;
    uint8_t payload[4096];
    size_t size;
    uint64_t total, issued, done, warmup;
    uint64_t *lat_ns;              /* one per measured request */
    uint64_t *sent_at;             /* per window slot */
    uint64_t t_start, t_end;
    int failed;
} client_t;

static void
pin_to_cpu(int cpu)
{
    cpu_set_t set;

    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
report(const char *mode, unsigned window, uint64_t n, uint64_t *lat, uint64_t elapsed_ns)
{
    qsort(lat, n, sizeof *lat, cmp_u64);
    if (getenv("RBUS_BENCH_DEBUG") != NULL)
        fprintf(stderr, "p90 %.1f p95 %.1f p98 %.1f\n", lat[n * 90 / 100] / 1e3, lat[n * 95 / 100] / 1e3, lat[n * 98 / 100] / 1e3);
    printf("mode=%s window=%u requests=%llu rps=%.0f p50_us=%.1f p99_us=%.1f\n", mode, window,
           (unsigned long long)n, (double)n * 1e9 / (double)elapsed_ns, lat[n / 2] / 1e3,
           lat[(n * 99) / 100] / 1e3);
}

/* ---- bus mode ---- */

static void
serve_echo(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    (void)arg;
    rbus_respond(req, 200, f->payload, f->payload_len);
}

static client_t *g_client; /* the one client of this process */

static void issue(client_t *c, uint64_t slot);

static void
on_reply(void *arg, int status, const oap_frame_t *resp)
{
    uint64_t slot = (uint64_t)(uintptr_t)arg;
    client_t *c = g_client;
    uint64_t now = ron_now_ns();

    if (status != 0 || resp->code != 200) {
        c->failed++;
        uv_stop(c->loop);
        return;
    }
    if (c->done >= c->warmup)
        c->lat_ns[c->done - c->warmup] = now - c->sent_at[slot];
    c->done++;
    if (c->done == c->warmup)
        c->t_start = now;
    if (c->done == c->total) {
        c->t_end = now;
        uv_stop(c->loop);
        return;
    }
    if (c->issued < c->total)
        issue(c, slot);
}

static void
issue(client_t *c, uint64_t slot)
{
    c->sent_at[slot] = ron_now_ns();
    c->issued++;
    if (rbus_request(c->peer, APP_BENCH, c->payload, c->size, 5000, on_reply,
                     (void *)(uintptr_t)slot) < 0) {
        c->failed++;
        uv_stop(c->loop);
    }
}

static int
bus_server(const char *dir, const uint8_t *secret)
{
    uv_loop_t loop;
    rbus_config_t cfg = {.transport = RBUS_TRANSPORT_UNIX, .name = "bench-srv", .dir = dir};

    pin_to_cpu(1);
    memcpy(cfg.secret, secret, RBUS_SECRET_LEN);
    uv_loop_init(&loop);
    rbus_t *b = rbus_new(&loop, &cfg, NULL);
    if (b == NULL || rbus_handle(b, APP_BENCH, serve_echo, NULL) < 0 || rbus_listen(b) < 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    return 0;
}

static void
up_check(uv_timer_t *t)
{
    client_t *c = t->data;

    if (rbus_peer_is_up(c->peer))
        uv_stop(c->loop);
}

static int
bus_client(client_t *c, const char *dir, const uint8_t *secret, unsigned window)
{
    uv_loop_t *loop = uv_default_loop();
    rbus_config_t cfg = {.transport = RBUS_TRANSPORT_UNIX, .name = "bench-cli", .dir = dir};
    uv_timer_t t;
    uint64_t until = ron_now_ms() + 5000;

    memcpy(cfg.secret, secret, RBUS_SECRET_LEN);
    c->loop = loop;
    g_client = c;
    rbus_t *b = rbus_new(loop, &cfg, NULL);
    c->peer = rbus_connect(b, "bench-srv", NULL);
    uv_timer_init(loop, &t);
    t.data = c;
    uv_timer_start(&t, up_check, 1, 1);
    while (!rbus_peer_is_up(c->peer) && ron_now_ms() < until)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    if (!rbus_peer_is_up(c->peer)) {
        fprintf(stderr, "bench_rbus: server did not come up\n");
        return 1;
    }
    for (unsigned i = 0; i < window && c->issued < c->total; i++)
        issue(c, i);
    uv_run(loop, UV_RUN_DEFAULT);
    if (c->failed) {
        fprintf(stderr, "bench_rbus: %d requests failed\n", c->failed);
        return 1;
    }
    report("bus", window, c->total - c->warmup, c->lat_ns, c->t_end - c->t_start);
    rbus_free(b);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

/* ---- inproc mode: micronode's transport, both endpoints on one loop ---- */

static int
inproc_run(client_t *c, unsigned window)
{
    uv_loop_t *loop = uv_default_loop();
    rbus_hub_t *hub = rbus_hub_new(loop);
    rbus_config_t scfg = {.transport = RBUS_TRANSPORT_INPROC, .name = "bench-srv", .hub = hub};
    rbus_config_t ccfg = {.transport = RBUS_TRANSPORT_INPROC, .name = "bench-cli", .hub = hub};
    rbus_t *srv = rbus_new(loop, &scfg, NULL), *cli = rbus_new(loop, &ccfg, NULL);
    uv_timer_t t;

    pin_to_cpu(0);
    c->loop = loop;
    g_client = c;
    if (srv == NULL || cli == NULL || rbus_handle(srv, APP_BENCH, serve_echo, NULL) < 0 ||
        rbus_listen(srv) < 0)
        return 1;
    c->peer = rbus_connect(cli, "bench-srv", NULL);
    uv_timer_init(loop, &t);
    t.data = c;
    uv_timer_start(&t, up_check, 1, 1);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    for (unsigned i = 0; i < window && c->issued < c->total; i++)
        issue(c, i);
    uv_run(loop, UV_RUN_DEFAULT);
    if (c->failed)
        return 1;
    report("inproc", window, c->total - c->warmup, c->lat_ns, c->t_end - c->t_start);
    rbus_free(cli);
    rbus_free(srv);
    rbus_hub_free(hub);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

/* ---- raw mode: blocking socketpair echo of the same frame size ---- */

static int
full_io(int fd, uint8_t *buf, size_t n, bool wr)
{
    size_t off = 0;

    while (off < n) {
        ssize_t r = wr ? write(fd, buf + off, n - off) : read(fd, buf + off, n - off);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)r;
    }
    return 0;
}

static int
raw_server(int fd, size_t frame)
{
    uint8_t buf[4096 + OAP_HDR_LEN];

    pin_to_cpu(1);
    while (full_io(fd, buf, frame, false) == 0)
        if (full_io(fd, buf, frame, true) < 0)
            break;
    return 0;
}

static int
raw_client(client_t *c, int fd, unsigned window, size_t frame)
{
    uint8_t buf[4096 + OAP_HDR_LEN] = {0};
    uint64_t head = 0; /* replies are in order: slot = index % window */

    for (unsigned i = 0; i < window && c->issued < c->total; i++) {
        c->sent_at[i] = ron_now_ns();
        c->issued++;
        if (full_io(fd, buf, frame, true) < 0)
            return 1;
    }
    while (c->done < c->total) {
        if (full_io(fd, buf, frame, false) < 0)
            return 1;
        uint64_t now = ron_now_ns(), slot = head++ % window;
        if (c->done >= c->warmup)
            c->lat_ns[c->done - c->warmup] = now - c->sent_at[slot];
        c->done++;
        if (c->done == c->warmup)
            c->t_start = now;
        if (c->issued < c->total) {
            c->sent_at[slot] = ron_now_ns();
            c->issued++;
            if (full_io(fd, buf, frame, true) < 0)
                return 1;
        }
    }
    c->t_end = ron_now_ns();
    report("raw", window, c->total - c->warmup, c->lat_ns, c->t_end - c->t_start);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *mode = "bus";
    unsigned window = 1;
    uint64_t requests = 100000;
    size_t size = 32;
    client_t c = {0};
    char dir[RBUS_MAX_DIR];
    uint8_t secret[RBUS_SECRET_LEN];
    int sv[2] = {-1, -1}, rc, st;
    pid_t pid;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--mode") == 0)
            mode = argv[i + 1];
        else if (strcmp(argv[i], "--window") == 0)
            window = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--requests") == 0)
            requests = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--size") == 0)
            size = (size_t)atoi(argv[i + 1]);
    }
    if (window < 1 || window > RBUS_MAX_INFLIGHT || size > 4096 || requests < 100 ||
        (strcmp(mode, "bus") != 0 && strcmp(mode, "raw") != 0 && strcmp(mode, "inproc") != 0)) {
        fprintf(stderr, "usage: bench_rbus [--mode bus|inproc|raw] [--window 1..64] [--requests N>=100] [--size B<=4096]\n");
        return 2;
    }
    c.size = size;
    c.warmup = requests / 10;
    c.total = requests + c.warmup;
    c.lat_ns = ron_xcalloc(requests, sizeof *c.lat_ns);
    c.sent_at = ron_xcalloc(window, sizeof *c.sent_at);
    if (strcmp(mode, "inproc") == 0) {
        rc = inproc_run(&c, window);
    } else if (strcmp(mode, "bus") == 0) {
        if (rbus_dir_create(dir, sizeof dir) < 0 || rbus_secret_generate(secret) < 0)
            return 1;
        pid = fork();
        if (pid == 0)
            _exit(bus_server(dir, secret));
        pin_to_cpu(0);
        rc = bus_client(&c, dir, secret, window);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        rbus_dir_remove(dir);
    } else {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
            return 1;
        pid = fork();
        if (pid == 0) {
            close(sv[0]);
            _exit(raw_server(sv[1], OAP_HDR_LEN + size));
        }
        close(sv[1]);
        pin_to_cpu(0);
        rc = raw_client(&c, sv[0], window, OAP_HDR_LEN + size);
        close(sv[0]);
        waitpid(pid, &st, 0);
    }
    free(c.lat_ns);
    free(c.sent_at);
    return rc;
}
