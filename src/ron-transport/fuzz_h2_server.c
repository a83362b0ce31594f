/*
 * fuzz_h2_server.c - libFuzzer target for what a cleartext connection does
 * with outside bytes before and after HTTP/2 takes over: the preface
 * sniffer (tx_conn.c), the "Upgrade: h2c" switch with its HTTP2-Settings
 * decoding, and the nghttp2 server session with our callbacks, limits and
 * answers (tx_h2.c). The transport is a socketpair adopted as a connection
 * of a real server on a private loop: the input is written to the client
 * end, then half-closed, and the loop runs (bounded) until the server has
 * closed the connection; the server's output is read and dropped.
 * Requests are answered by path so every answer kind runs: /s streams a
 * body in pieces, /e answers an error envelope, /h is held until the
 * connection is gone (answered late), anything else gets a small body.
 * Checks: no crash, no leak, no sanitizer report; the connection always ends.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include "ron_err.h"
#include "tx_internal.h"

static uv_loop_t fz_loop;
static tx_server_t *fz_srv;
static tx_request_t *fz_held[64];
static unsigned fz_nheld;
static const uint8_t fz_piece[1000];

static void
fz_stream(tx_request_t *req, void *arg)
{
    uintptr_t *left = arg;

    while (*left > 0) {
        int rc = tx_respond_write(req, fz_piece, sizeof fz_piece, NULL, NULL);
        if (rc == RON_EAGAIN)
            return;
        if (rc < 0)
            break;
        (*left)--;
    }
    tx_respond_end(req);
    free(left);
}

static void
fz_handler(tx_request_t *req, void *arg)
{
    const tx_request_view_t *v = tx_request_view(req);
    static const tx_header_t hdrs[] = {{"Content-Type", "text/plain"}, {"X-Upper", "A"}};

    (void)arg;
    if (strcmp(v->path, "/s") == 0) {
        uintptr_t *left = malloc(sizeof *left);
        *left = 3;
        if (tx_respond_start(req, 200, hdrs, 2, 3 * (int64_t)sizeof fz_piece, fz_stream, left) < 0) {
            free(left);
            return;
        }
        fz_stream(req, left);
    } else if (strcmp(v->path, "/e") == 0) {
        tx_respond_error(req, 429, NULL, "fuzz", 1);
    } else if (strcmp(v->path, "/h") == 0 && fz_nheld < 64) {
        fz_held[fz_nheld++] = req;
    } else {
        tx_respond(req, 200, hdrs, 2, v->body, v->body_len);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    struct sockaddr_storage peer = {0};
    struct sockaddr_in *in = (struct sockaddr_in *)&peer;
    uint8_t sink[65536];

    if (fz_srv == NULL) {
        tx_config_t cfg;
        tx_config_default(&cfg);
        cfg.rate_disabled = true;
        cfg.h2_flood_max = 50;
        cfg.h2_max_streams = 8;
        uv_loop_init(&fz_loop);
        fz_srv = tx_server_new(&fz_loop, &cfg, fz_handler, NULL);
    }
    if (size > (48u << 10))
        size = 48u << 10; /* fits the socket buffer: one write, no blocking */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return 0;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(0x7f000001);
    if (tx__conn_adopt(fz_srv, sv[0], &peer) < 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    /* bounded: the half-close ends every protocol state within a few turns */
    for (int i = 0; i < 2000 && fz_srv->conns != NULL; i++) {
        uv_run(&fz_loop, UV_RUN_NOWAIT);
        while (read(sv[1], sink, sizeof sink) > 0) {
        }
        if (i == 1000)
            tx__conn_close(fz_srv->conns); /* defensive: never hang the fuzzer */
    }
    close(sv[1]);
    for (unsigned i = 0; i < fz_nheld; i++)
        tx_respond(fz_held[i], 200, NULL, 0, "late", 4);
    fz_nheld = 0;
    for (int i = 0; i < 10; i++)
        uv_run(&fz_loop, UV_RUN_NOWAIT);
    assert(fz_srv->conns == NULL);
    if (getenv("FZ_STATS") != NULL) { /* to see what a corpus reaches */
        const tx_stats_t *st = tx_server_stats(fz_srv);
        fprintf(stderr, "h2_conns %llu upgrades %llu streams %llu requests %llu bytes_out %llu\n",
                (unsigned long long)st->h2_conns, (unsigned long long)st->h2_upgrades,
                (unsigned long long)st->h2_streams, (unsigned long long)st->requests,
                (unsigned long long)st->bytes_out);
    }
    return 0;
}
