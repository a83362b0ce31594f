/*
 * ovl_evil_peer.c - a test peer for chaos and integration tests (built,
 * never installed): a real overlay node (ovl_service over tx_peer, mutual
 * TLS with a node key) that serves one file through the real overlay code,
 * and can lie or crawl on purpose: --corrupt-piece N flips a byte of piece
 * N as it leaves (after the provider's own verified read, so only the
 * fetcher's check can catch it), --rate B sends piece frames at B bytes/s.
 * With --fetch it is instead a fetcher: it dials a node's overlay port
 * with the node id pinned and fetches an object through the real `overlay`
 * bus protocol (an in-process bus), verifying every piece. With --hold N
 * it dials a node's overlay port N times, each session from its own fresh
 * node key (one overlay service per key, all on one loop), and keeps them
 * open with the overlay's own keepalive: the load of N peers for memory
 * benchmarks, without N processes; --big-frame makes each send one frame
 * as large as the node agreed to take (an overlay EVENT it drops), the
 * most a peer may legally make it buffer.
 * Why a separate binary: chaos tests need a peer that misbehaves in ways a
 * node never does, on the real wire format, killable on its own.
 * Invariants: one loop; every output line is one JSON object; exit 0 on
 * SIGTERM/SIGINT (serve) or success (fetch), 1 on failure, 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ovl_client.h"
#include "ovl_service.h"
#include "ron_err.h"
#include "ron_util.h"

#define EVIL_MAX_FILE (256u << 20) /* bytes of --file served from RAM */
#define EVIL_REFILL_MS 20u         /* throttle refill period */
#define EVIL_HOLD_MAX 1024u        /* sessions --hold may open */
#define EVIL_HOLD_POLL_MS 200u     /* --hold: session count checked this often */

typedef struct {
    uv_loop_t *loop;
    ovl_service_t *svc;
    uv_signal_t sig_int, sig_term;
    uv_timer_t refill;
    bool corrupt;
    bool corrupt_all; /* --corrupt-piece all: every piece frame sent */
    uint64_t corrupt_piece;
    uint64_t rate; /* bytes/s of piece frames; 0 = unlimited */
    double tokens;
    uint64_t last_ms;
    uint8_t buf[OVL_PIECE_PAYLOAD_MAX];
    /* fetch mode */
    rbus_hub_t *hub;
    rbus_t *srv, *cli;
    rbus_peer_t *peer;
    uint8_t addr[STO_ADDR_LEN], pid[OVL_ID_LEN];
    char paddr[OVL_ADDR_MAX + 1];
    uint64_t start, next, end, size, got;
    const char *cap; /* --cap: the capability sent to the provider, or NULL */
    int out_fd;
    int exit_code;
    /* hold mode: one key and one overlay service per session */
    uint32_t n_hold;
    kms_keystore_t **hold_ks;
    ovl_service_t **hold_svc;
    tx_peer_session_t **hold_ps; /* the one session of hold_svc[i] */
    bool *hold_sent;             /* its big frame went out */
    bool big_frame;
    uint8_t *big;       /* zero payload of the largest frame (OAP_MAX_FRAME) */
    uint64_t hold_last; /* session count last printed */
} evil_t;

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: ovl_evil_peer [options] --file PATH            serve PATH's bytes\n"
            "       ovl_evil_peer [options] --fetch ID@HOST:PORT --address b3:HEX\n"
            "A test peer on the real overlay code (mutual TLS 1.3, OAP/1 app 4).\n"
            "\n"
            "Serve mode prints one line {\"id\",\"addr\",\"address\",\"size\"} once it listens,\n"
            "then serves until SIGTERM/SIGINT (exit 0).\n"
            "  --file PATH          object to serve (at most 256 MiB, held in a RAM store)\n"
            "  --listen HOST:PORT   numeric listen address (default 127.0.0.1:0)\n"
            "  --advertise ADDR     address to gossip (default: the bound one)\n"
            "  --corrupt-piece N    flip one byte of piece N (0-based, 64 KiB pieces) in every\n"
            "                       frame that carries it; the proof is left intact; N = all:\n"
            "                       of every piece sent\n"
            "  --rate BYTES         send piece frames at BYTES per second at most (a trickle;\n"
            "                       burst: one frame; below ~14000 no 64 KiB piece arrives\n"
            "                       within a node's 5 s fetch timeout)\n"
            "\n"
            "Fetch mode fetches through the `overlay` bus protocol and prints\n"
            "{\"ok\":true,\"size\",\"bytes\"} (exit 0) or {\"ok\":false,\"status\",\"error\"} "
            "(exit 1).\n"
            "  --fetch ID@HOST:PORT the provider: node id (64 hex) and overlay address\n"
            "  --address b3:HEX     the object\n"
            "  --offset N --length N  a range (default: the whole object)\n"
            "  --out PATH           write the fetched bytes there\n"
            "  --cap TOKEN          send this capability with every get (for a node whose\n"
            "                       policy denies anonymous get)\n"
            "\n"
            "Hold mode dials ID@HOST:PORT N times, each from a fresh node key, keeps the\n"
            "sessions open (overlay keepalive) and prints {\"sessions\":\"N\"} whenever the\n"
            "number established changes, until SIGTERM/SIGINT (exit 0).\n"
            "  --hold N --dial ID@HOST:PORT   (N: 1..1024)\n"
            "  --big-frame          each session sends one zero-filled overlay EVENT frame of\n"
            "                       the negotiated max_frame (the node drops it as bad gossip)\n"
            "\n"
            "Both modes:\n"
            "  --key-dir DIR        node keys in DIR/keys (created when absent);\n"
            "                       default: a fresh key in RAM\n"
            "  --help               this text\n");
}

static bool
is_piece(const oap_frame_t *f)
{
    return f->app_proto_id == OAP_APP_OVERLAY && (f->flags & OAP_F_RESP) && f->code == 0 &&
           f->payload_len >= OVL_PIECE_HDR_LEN;
}

static void
refill(evil_t *e)
{
    uint64_t now = uv_now(e->loop);
    /* burst: one piece frame, or two refill periods' worth at high rates */
    double tick = (double)e->rate * 2.0 * EVIL_REFILL_MS / 1000.0,
           cap = tick > OVL_PIECE_PAYLOAD_MAX ? tick : (double)OVL_PIECE_PAYLOAD_MAX;

    e->tokens += (double)e->rate * (double)(now - e->last_ms) / 1000.0;
    if (e->tokens > cap)
        e->tokens = cap;
    e->last_ms = now;
}

static void
refill_tick(uv_timer_t *t)
{
    evil_t *e = t->data;
    refill(e);
    ovl_service_kick(e->svc);
}

static int
evil_send(void *arg, tx_peer_session_t *ps, const oap_frame_t *f)
{
    evil_t *e = arg;
    oap_frame_t g;
    uint64_t idx = 0;
    int rc;

    if (!is_piece(f))
        return tx_peer_send(ps, f);
    if (e->rate > 0) {
        refill(e);
        if (e->tokens < (double)f->payload_len)
            return RON_EAGAIN; /* refill_tick kicks the sessions */
    }
    for (int i = 0; i < 8; i++)
        idx = idx << 8 | f->payload[i];
    if (e->corrupt && (e->corrupt_all || idx == e->corrupt_piece) &&
        f->payload_len > OVL_PIECE_HDR_LEN) {
        g = *f;
        memcpy(e->buf, f->payload, f->payload_len);
        e->buf[f->payload_len - 1] ^= 0x5a;
        g.payload = e->buf;
        rc = tx_peer_send(ps, &g);
    } else {
        rc = tx_peer_send(ps, f);
    }
    if (rc == 0 && e->rate > 0)
        e->tokens -= (double)f->payload_len;
    return rc;
}

static void
evil_closed(void *arg)
{
    evil_t *e = arg;
    e->svc = NULL;
}

static void
hold_closed(void *arg)
{
    ovl_service_t **slot = arg;
    *slot = NULL;
}

static void
evil_stop(evil_t *e)
{
    for (uint32_t i = 0; i < e->n_hold; i++)
        if (e->hold_svc[i] != NULL)
            ovl_service_close(e->hold_svc[i], hold_closed, &e->hold_svc[i]);
    uv_close((uv_handle_t *)&e->sig_int, NULL);
    uv_close((uv_handle_t *)&e->sig_term, NULL);
    uv_close((uv_handle_t *)&e->refill, NULL);
    if (e->peer != NULL)
        rbus_peer_close(e->peer);
    e->peer = NULL;
    if (e->cli != NULL)
        rbus_free(e->cli);
    if (e->srv != NULL)
        rbus_free(e->srv);
    e->cli = e->srv = NULL;
    if (e->svc != NULL)
        ovl_service_close(e->svc, evil_closed, e);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    evil_stop(s->data);
}

/* Read the file at path into a new RAM store. */
static int
load_file(const char *path, sto_store_t **st_out, uint8_t addr[STO_ADDR_LEN], uint64_t *size_out)
{
    sto_config_t sc = {0};
    struct stat sb;
    uint8_t *buf = NULL;
    ssize_t n;
    size_t off = 0;
    int fd, rc;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > EVIL_MAX_FILE) {
        close(fd);
        return RON_EINVAL;
    }
    buf = ron_xmalloc((size_t)sb.st_size + 1);
    while (off < (size_t)sb.st_size && (n = read(fd, buf + off, (size_t)sb.st_size - off)) > 0)
        off += (size_t)n;
    close(fd);
    if (off != (size_t)sb.st_size) {
        free(buf);
        return -EIO;
    }
    if ((rc = sto_open(&sc, st_out)) == 0 &&
        (rc = sto_put_buf(*st_out, NULL, buf, off, NULL, addr)) < 0) {
        sto_close(*st_out);
        *st_out = NULL;
    }
    *size_out = off;
    free(buf);
    return rc;
}

/* ---- hold mode ---- */

static void
hold_tick(uv_timer_t *t)
{
    evil_t *e = t->data;
    ovl_service_stats_t st;
    uint64_t n = 0;

    for (uint32_t i = 0; i < e->n_hold; i++) {
        ovl_service_stats(e->hold_svc[i], &st);
        n += st.sessions;
        /* one session per service: while it counts, hold_ps[i] is open */
        if (e->big_frame && st.sessions == 1 && !e->hold_sent[i]) {
            oap_frame_t f = {0};
            f.ver = OAP_VERSION;
            f.flags = OAP_F_EVENT;
            f.app_proto_id = OAP_APP_OVERLAY;
            f.payload = e->big;
            f.payload_len = tx_peer_session_max_frame(e->hold_ps[i]) - OAP_HDR_LEN;
            e->hold_sent[i] = tx_peer_send(e->hold_ps[i], &f) == 0;
        }
    }
    if (n != e->hold_last) {
        printf("{\"sessions\":\"%llu\"}\n", (unsigned long long)n);
        fflush(stdout);
        e->hold_last = n;
    }
}

/* N keys, N overlay services without a listener, one dial each. The dial
 * goes straight to the service's transport, so the service takes the
 * session as a peer's (no idle close) and runs its keepalive. */
static int
hold_setup(evil_t *e, const char *target)
{
    ovl_service_config_t oc = {0};
    tx_peer_config_t pc;
    char err[256];
    int rc;

    e->hold_ks = ron_xcalloc(e->n_hold, sizeof(kms_keystore_t *));
    e->hold_svc = ron_xcalloc(e->n_hold, sizeof(ovl_service_t *));
    e->hold_ps = ron_xcalloc(e->n_hold, sizeof(tx_peer_session_t *));
    e->hold_sent = ron_xcalloc(e->n_hold, sizeof *e->hold_sent);
    if (e->big_frame)
        e->big = ron_xcalloc(1, OAP_MAX_FRAME);
    tx_peer_config_default(&pc);
    pc.max_frame = OAP_MAX_FRAME; /* offer the most: the node's offer decides */
    oc.peer = &pc;
    oc.listen_fd = -1;
    for (uint32_t i = 0; i < e->n_hold; i++) {
        if ((rc = kms_node_keys_open_or_create(NULL, true, &e->hold_ks[i], err, sizeof err)) < 0) {
            fprintf(stderr, "ovl_evil_peer: keys: %s\n", err);
            return rc;
        }
        oc.keys = e->hold_ks[i];
        if ((rc = ovl_service_new(e->loop, &oc, &e->hold_svc[i])) < 0)
            return rc;
        rc = tx_peer_dial(ovl_service_peer(e->hold_svc[i]), target, e->pid, &e->hold_ps[i]);
        if (rc < 0)
            return rc;
    }
    e->hold_last = UINT64_MAX;
    uv_timer_start(&e->refill, hold_tick, 0, EVIL_HOLD_POLL_MS);
    return 0;
}

/* ---- fetch mode ---- */

static void fetch_next(evil_t *e);

static void
fetch_fail(evil_t *e, int status, uint16_t code)
{
    printf("{\"ok\":false,\"status\":%u,\"error\":\"%s\"}\n", code, ron_strerror(status));
    fflush(stdout);
    e->exit_code = 1;
    evil_stop(e);
}

static void
on_fetched(void *arg, int status, uint16_t code, const ovl_client_fetch_result_t *res)
{
    evil_t *e = arg;

    if (status < 0) {
        fetch_fail(e, status, code);
        return;
    }
    e->size = res->size;
    if (e->end == UINT64_MAX || e->end > res->size)
        e->end = res->size;
    for (size_t i = 0; i < res->n_pieces; i++) {
        const ovl_client_piece_t *p = &res->pieces[i];
        uint64_t lo = p->piece * STO_PIECE_LEN, hi = lo + p->len, a, b;
        if (p->piece < res->first || p->piece >= res->first + res->count)
            continue; /* the size proof */
        a = lo > e->next ? lo : e->next;
        b = hi < e->end ? hi : e->end;
        if (b <= a)
            continue;
        if (e->out_fd >= 0 && pwrite(e->out_fd, p->bytes + (a - lo), (size_t)(b - a),
                                     (off_t)(a - e->start)) != (ssize_t)(b - a)) {
            fetch_fail(e, -errno, 0);
            return;
        }
    }
    {
        uint64_t upto = (res->first + res->count) * STO_PIECE_LEN;
        if (upto > e->end)
            upto = e->end;
        e->got += upto - e->next;
        e->next = upto;
    }
    if (e->next >= e->end) {
        printf("{\"ok\":true,\"size\":\"%llu\",\"bytes\":\"%llu\"}\n", (unsigned long long)e->size,
               (unsigned long long)e->got);
        fflush(stdout);
        e->exit_code = 0;
        evil_stop(e);
        return;
    }
    fetch_next(e);
}

static void
fetch_next(evil_t *e)
{
    uint64_t len = e->end - e->next;
    int rc;

    if (len > OVL_SVC_FETCH_MAX_LEN)
        len = OVL_SVC_FETCH_MAX_LEN;
    rc = ovl_client_fetch_cap(e->peer, e->addr, e->next, len, e->pid, e->paddr, e->cap, 0,
                              on_fetched, e);
    if (rc < 0)
        fetch_fail(e, rc, 0);
}

static int
fetch_setup(evil_t *e)
{
    rbus_config_t sc = {0}, cc = {0};
    int rc = 0;

    e->hub = rbus_hub_new(e->loop);
    sc.transport = cc.transport = RBUS_TRANSPORT_INPROC;
    sc.hub = cc.hub = e->hub;
    sc.name = "overlay";
    cc.name = "evil";
    if ((e->srv = rbus_new(e->loop, &sc, &rc)) == NULL ||
        (e->cli = rbus_new(e->loop, &cc, &rc)) == NULL)
        return rc;
    if ((rc = ovl_service_serve(e->svc, e->srv)) < 0 || (rc = rbus_listen(e->srv)) < 0)
        return rc;
    if ((e->peer = rbus_connect(e->cli, "overlay", &rc)) == NULL)
        return rc;
    fetch_next(e);
    return 0;
}

static int
parse_u64_arg(const char *s, uint64_t *v)
{
    return ron_parse_u64(s, strlen(s), v);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"file", required_argument, NULL, 'f'},
        {"listen", required_argument, NULL, 'l'},
        {"advertise", required_argument, NULL, 'a'},
        {"corrupt-piece", required_argument, NULL, 'c'},
        {"rate", required_argument, NULL, 'r'},
        {"fetch", required_argument, NULL, 'F'},
        {"address", required_argument, NULL, 'A'},
        {"offset", required_argument, NULL, 'o'},
        {"length", required_argument, NULL, 'n'},
        {"out", required_argument, NULL, 'O'},
        {"key-dir", required_argument, NULL, 'k'},
        {"hold", required_argument, NULL, 'H'},
        {"dial", required_argument, NULL, 'D'},
        {"big-frame", no_argument, NULL, 'B'},
        {"cap", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    evil_t e;
    uv_loop_t loop;
    const char *file = NULL, *listen = "127.0.0.1:0", *advertise = NULL, *fetch = NULL,
               *address = NULL, *out = NULL, *key_dir = NULL, *dial = NULL;
    uint64_t offset = 0, length = UINT64_MAX, size = 0, hold = 0;
    kms_keystore_t *ks = NULL;
    sto_store_t *store = NULL;
    ovl_service_config_t oc = {0};
    uint8_t obj[STO_ADDR_LEN];
    char err[256], hex[2 * OVL_ID_LEN + 1], a[68];
    int c, rc;

    memset(&e, 0, sizeof e);
    e.out_fd = -1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'a':
            advertise = optarg;
            break;
        case 'c':
            e.corrupt = true;
            if (strcmp(optarg, "all") == 0)
                e.corrupt_all = true;
            else if (parse_u64_arg(optarg, &e.corrupt_piece) < 0)
                goto bad;
            break;
        case 'r':
            if (parse_u64_arg(optarg, &e.rate) < 0 || e.rate == 0)
                goto bad;
            break;
        case 'F':
            fetch = optarg;
            break;
        case 'A':
            address = optarg;
            break;
        case 'o':
            if (parse_u64_arg(optarg, &offset) < 0)
                goto bad;
            break;
        case 'n':
            if (parse_u64_arg(optarg, &length) < 0 || length == 0)
                goto bad;
            break;
        case 'O':
            out = optarg;
            break;
        case 'k':
            key_dir = optarg;
            break;
        case 'H':
            if (parse_u64_arg(optarg, &hold) < 0 || hold == 0 || hold > EVIL_HOLD_MAX)
                goto bad;
            break;
        case 'D':
            dial = optarg;
            break;
        case 'B':
            e.big_frame = true;
            break;
        case 'C':
            if (optarg[0] == '\0' || strlen(optarg) > OVL_CLIENT_CAP_MAX)
                goto bad;
            e.cap = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (optind != argc || (file != NULL) + (fetch != NULL) + (hold > 0) != 1 ||
        (hold > 0) != (dial != NULL) || (e.big_frame && hold == 0) ||
        (e.cap != NULL && fetch == NULL))
        goto bad;
    if (dial != NULL) {
        const char *at = strchr(dial, '@');
        if (at == NULL || at - dial != 2 * OVL_ID_LEN ||
            ron_hex_decode(e.pid, OVL_ID_LEN, dial, 2 * OVL_ID_LEN) < 0 ||
            strlen(at + 1) > OVL_ADDR_MAX)
            goto bad;
        snprintf(e.paddr, sizeof e.paddr, "%s", at + 1);
        e.n_hold = (uint32_t)hold;
        listen = NULL;
    }
    if (fetch != NULL) {
        const char *at = strchr(fetch, '@');
        if (address == NULL || at == NULL || at - fetch != 2 * OVL_ID_LEN ||
            ron_hex_decode(e.pid, OVL_ID_LEN, fetch, 2 * OVL_ID_LEN) < 0 ||
            strlen(at + 1) > OVL_ADDR_MAX || sto_addr_parse(address, e.addr) < 0)
            goto bad;
        snprintf(e.paddr, sizeof e.paddr, "%s", at + 1);
        listen = NULL;
    }
    signal(SIGPIPE, SIG_IGN);
    if (key_dir != NULL)
        rc = kms_node_keys_open_or_create(key_dir, false, &ks, err, sizeof err);
    else
        rc = kms_node_keys_open_or_create(NULL, true, &ks, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "ovl_evil_peer: keys: %s\n", err);
        return 1;
    }
    if (file != NULL && (rc = load_file(file, &store, obj, &size)) < 0) {
        fprintf(stderr, "ovl_evil_peer: %s: %s\n", file, ron_strerror(rc));
        kms_keystore_free(ks);
        return 1;
    }
    if (out != NULL && (e.out_fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        fprintf(stderr, "ovl_evil_peer: %s: %s\n", out, strerror(errno));
        sto_close(store);
        kms_keystore_free(ks);
        return 1;
    }
    uv_loop_init(&loop);
    e.loop = &loop;
    oc.keys = ks;
    oc.store = store;
    oc.listen_fd = -1;
    oc.listen = listen;
    oc.advertise = advertise;
    oc.send_hook = evil_send;
    oc.hook_arg = &e;
    if ((rc = ovl_service_new(&loop, &oc, &e.svc)) < 0) {
        fprintf(stderr, "ovl_evil_peer: cannot start: %s\n", ron_strerror(rc));
        e.exit_code = 1;
        goto out;
    }
    uv_signal_init(&loop, &e.sig_int);
    uv_signal_init(&loop, &e.sig_term);
    e.sig_int.data = e.sig_term.data = &e;
    uv_signal_start(&e.sig_int, on_signal, SIGINT);
    uv_signal_start(&e.sig_term, on_signal, SIGTERM);
    uv_timer_init(&loop, &e.refill);
    e.refill.data = &e;
    e.last_ms = uv_now(&loop);
    if (e.rate > 0)
        uv_timer_start(&e.refill, refill_tick, EVIL_REFILL_MS, EVIL_REFILL_MS);
    if (e.n_hold > 0) {
        if ((rc = hold_setup(&e, e.paddr)) < 0) {
            fprintf(stderr, "ovl_evil_peer: hold: %s\n", ron_strerror(rc));
            e.exit_code = 1;
            evil_stop(&e);
        }
    } else if (fetch != NULL) {
        e.start = e.next = offset;
        e.end = length == UINT64_MAX || length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
        if ((rc = fetch_setup(&e)) < 0) {
            fetch_fail(&e, rc, 0);
        }
    } else {
        ron_hex_encode(hex, ovl_service_node_id(e.svc), OVL_ID_LEN);
        sto_addr_format(obj, a);
        printf("{\"id\":\"%s\",\"addr\":\"%s\",\"address\":\"%s\",\"size\":\"%llu\"}\n", hex,
               ovl_service_advertise(e.svc), a, (unsigned long long)size);
        fflush(stdout);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
out:
    if (e.hub != NULL) {
        rbus_hub_free(e.hub);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    (void)uv_loop_close(&loop);
    if (e.out_fd >= 0)
        close(e.out_fd);
    sto_close(store);
    kms_keystore_free(ks);
    for (uint32_t i = 0; i < e.n_hold; i++)
        kms_keystore_free(e.hold_ks[i]);
    free(e.hold_ks);
    free(e.hold_svc);
    free(e.hold_ps);
    free(e.hold_sent);
    free(e.big);
    return e.exit_code;
bad:
    usage(stderr);
    return 2;
}
