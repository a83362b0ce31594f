/*
 * ron_delayrelay.c - a packet-level delay relay for the multi-host tests.
 * This kernel has no netem, so the netns test bed (docs/runbooks/netns-test.md)
 * routes every packet between node namespaces through a TUN device in a
 * "router" namespace; this program reads each IP packet from the TUN device,
 * holds it for the configured delay (fixed + uniform jitter, chosen per
 * destination subnet, first matching --route wins, else the default), then
 * writes it back unchanged, so the kernel routes it on to its destination
 * with its addresses preserved. --throttle also limits the rate of packets
 * from a source subnet (a bottleneck link: packets leave it one after the
 * other at the configured rate, tail-dropped past DR_THROTTLE_BACKLOG_MS of
 * backlog), which makes a provider "slow" for the chaos tests. It is a test
 * tool, not part of the node.
 * Invariants: at most --queue packets (and DR_MAX_QUEUE_BYTES) are held;
 * a packet that does not fit is dropped and counted, never blocks reading;
 * every held packet is released at or after its due time, earliest first
 * (a min-heap on due time, ties in arrival order); SIGTERM/SIGINT stop the
 * loop, flush nothing further, print the counters and exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* ---- limits ---- */
#define DR_MAX_PACKET       65535u            /* largest IP packet a TUN read returns */
#define DR_DEFAULT_QUEUE    4096u             /* packets held at once, default */
#define DR_MAX_QUEUE        1000000u          /* --queue ceiling: keeps the heap allocation sane */
#define DR_MAX_QUEUE_BYTES  (256u << 20)      /* bytes held at once: bounds memory whatever the MTU */
#define DR_MAX_ROUTES       64u               /* --route entries */
#define DR_MAX_DELAY_MS     600000u           /* 10 min: anything longer is a typo */
#define DR_READS_PER_TURN   256u              /* reads before releasing due packets again */
#define DR_MAX_THROTTLES    16u               /* --throttle entries */
#define DR_MAX_RATE_KBIT    100000000u        /* 100 Gbit/s: anything faster is no throttle */
#define DR_THROTTLE_BACKLOG_MS 300u           /* a bottleneck's queue, in time; tail drop past it */

/* One held packet. */
typedef struct {
    uint64_t due_ns;   /* CLOCK_MONOTONIC ns at which it is written back */
    uint64_t seq;      /* arrival order: breaks ties so equal delays keep order */
    uint32_t len;      /* bytes in data */
    uint8_t *data;     /* malloc'd copy, owned by the heap */
} dr_pkt_t;

/* A delay rule for destinations inside family/prefix. */
typedef struct {
    int      family;           /* AF_INET or AF_INET6 */
    uint8_t  addr[16];         /* network address, host bits cleared */
    unsigned prefix;           /* prefix length in bits */
    uint32_t delay_ms;         /* fixed delay */
    uint32_t jitter_ms;        /* extra uniform [0, jitter] */
    uint32_t rate_kbit;        /* --throttle only: rate of the bottleneck, > 0 */
    uint64_t busy_until_ns;    /* --throttle only: when the bottleneck is free again */
} dr_route_t;

typedef struct {
    /* configuration */
    const char *dev;
    const char *stats_path;
    uint32_t    delay_ms;
    uint32_t    jitter_ms;
    uint32_t    queue_max;
    dr_route_t  routes[DR_MAX_ROUTES];
    unsigned    n_routes;
    dr_route_t  throttles[DR_MAX_THROTTLES];  /* matched on the source address */
    unsigned    n_throttles;
    uint64_t    rng;           /* xorshift64 state, never 0 */
    /* state */
    int         fd;
    dr_pkt_t   *heap;          /* min-heap on (due_ns, seq), n_held <= queue_max */
    uint32_t    n_held;
    uint64_t    bytes_held;    /* <= DR_MAX_QUEUE_BYTES */
    uint64_t    next_seq;
    /* counters */
    uint64_t    rx_packets, rx_bytes;     /* read from the TUN device */
    uint64_t    tx_packets, tx_bytes;     /* written back after their delay */
    uint64_t    drop_queue;               /* queue (count or bytes) full */
    uint64_t    drop_throttle;            /* a throttle's backlog past DR_THROTTLE_BACKLOG_MS */
    uint64_t    drop_write;               /* write back failed */
    uint64_t    drop_shutdown;            /* still held when stopping */
} dr_relay_t;

static volatile sig_atomic_t dr_stop_flag;

static void
dr_on_signal(int sig)
{
    (void)sig;
    dr_stop_flag = 1;
}

static uint64_t
dr_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t
dr_rand(dr_relay_t *r)
{
    uint64_t x = r->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->rng = x;
    return x;
}

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: ron-delayrelay --dev NAME [options]\n"
        "\n"
        "Hold every IP packet read from TUN device NAME for a delay, then write it\n"
        "back unchanged (addresses preserved) so the kernel routes it on. Used by\n"
        "`make netns-test` (docs/runbooks/netns-test.md) because the kernel has no netem.\n"
        "\n"
        "options:\n"
        "  --dev NAME          TUN device to attach to (created if absent; needs root)\n"
        "  --delay MS          default one-way delay in ms (default 0)\n"
        "  --jitter MS         extra uniform delay in [0, MS] ms (default 0)\n"
        "  --route CIDR=MS[+J] delay (and jitter) for packets whose destination is in\n"
        "                      CIDR (e.g. 10.77.0.3/32=40+10); repeatable, first match\n"
        "                      wins, at most %u\n"
        "  --throttle CIDR=KBIT\n"
        "                      limit packets whose source is in CIDR to KBIT kbit/s\n"
        "                      (after their delay, one after the other, tail-dropped\n"
        "                      past %u ms of backlog); repeatable, at most %u\n"
        "  --queue N           packets held at once (default %u, at most %u); packets\n"
        "                      that do not fit are dropped and counted\n"
        "  --stats FILE        write the counters as JSON to FILE every second and at exit\n"
        "  --seed N            jitter random seed (default: from the clock)\n"
        "  -h, --help          this text\n"
        "\n"
        "SIGTERM or SIGINT stops it; the counters are printed to stderr as one JSON\n"
        "line. Exit status: 0 stopped by a signal, 1 runtime error, 2 bad usage.\n",
        DR_MAX_ROUTES, DR_THROTTLE_BACKLOG_MS, DR_MAX_THROTTLES, DR_DEFAULT_QUEUE,
        DR_MAX_QUEUE);
}

/* Parse a decimal u32 in [0, max] that fills the whole of s. */
static int
dr_parse_u32(const char *s, uint32_t max, uint32_t *v_out)
{
    char *end = NULL;
    unsigned long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > max)
        return -EINVAL;
    *v_out = (uint32_t)v;
    return 0;
}

/* Parse "MS" or "MS+JITTER" (the text after '=' in --route). */
static int
dr_parse_delay(char *s, uint32_t *delay_out, uint32_t *jitter_out)
{
    char *plus = strchr(s, '+');

    *jitter_out = 0;
    if (plus != NULL) {
        *plus = '\0';
        if (dr_parse_u32(plus + 1, DR_MAX_DELAY_MS, jitter_out) < 0)
            return -EINVAL;
    }
    return dr_parse_u32(s, DR_MAX_DELAY_MS, delay_out);
}

/* Parse "ADDR[/PREFIX]" into rt's family, addr and prefix. s is modified. */
static int
dr_cidr_parse(dr_route_t *rt, char *s)
{
    char *slash;
    uint32_t prefix;
    unsigned max_prefix, i;

    slash = strchr(s, '/');
    if (slash != NULL)
        *slash = '\0';
    memset(rt->addr, 0, sizeof rt->addr);
    if (inet_pton(AF_INET, s, rt->addr) == 1) {
        rt->family = AF_INET;
        max_prefix = 32;
    } else if (inet_pton(AF_INET6, s, rt->addr) == 1) {
        rt->family = AF_INET6;
        max_prefix = 128;
    } else {
        return -EINVAL;
    }
    prefix = max_prefix;
    if (slash != NULL && dr_parse_u32(slash + 1, max_prefix, &prefix) < 0)
        return -EINVAL;
    rt->prefix = prefix;
    for (i = 0; i < 16; i++) {          /* clear host bits so matching is a compare */
        unsigned bit = i * 8;
        if (bit >= prefix)
            rt->addr[i] = 0;
        else if (bit + 8 > prefix)
            rt->addr[i] &= (uint8_t)(0xffu << (8 - (prefix - bit)));
    }
    return 0;
}

/* Parse "CIDR=MS[+J]" (--route) into rt. s is modified. */
static int
dr_route_parse(dr_route_t *rt, char *s)
{
    char *eq = strchr(s, '=');

    if (eq == NULL)
        return -EINVAL;
    *eq = '\0';
    if (dr_parse_delay(eq + 1, &rt->delay_ms, &rt->jitter_ms) < 0)
        return -EINVAL;
    return dr_cidr_parse(rt, s);
}

/* Parse "CIDR=KBIT" (--throttle) into rt. s is modified. */
static int
dr_throttle_parse(dr_route_t *rt, char *s)
{
    char *eq = strchr(s, '=');

    if (eq == NULL)
        return -EINVAL;
    *eq = '\0';
    if (dr_parse_u32(eq + 1, DR_MAX_RATE_KBIT, &rt->rate_kbit) < 0 || rt->rate_kbit == 0)
        return -EINVAL;
    return dr_cidr_parse(rt, s);
}

static bool
dr_route_matches(const dr_route_t *rt, int family, const uint8_t *dst)
{
    unsigned full = rt->prefix / 8, rest = rt->prefix % 8;

    if (rt->family != family)
        return false;
    if (memcmp(rt->addr, dst, full) != 0)
        return false;
    if (rest == 0)
        return true;
    return (dst[full] & (uint8_t)(0xffu << (8 - rest))) == rt->addr[full];
}

/*
 * Due time of a packet read at now: its destination picks the delay rule,
 * then a throttle matching its source queues it behind that bottleneck's
 * earlier packets. Returns 0 and *due_out, or -ENOBUFS when the throttle's
 * backlog is full (the caller drops the packet).
 */
static int
dr_due_for(dr_relay_t *r, const uint8_t *pkt, uint32_t len, uint64_t now, uint64_t *due_out)
{
    uint32_t delay = r->delay_ms, jitter = r->jitter_ms;
    int family = 0;
    const uint8_t *dst = NULL, *src = NULL;
    unsigned i;

    if (len >= 20 && (pkt[0] >> 4) == 4) {
        family = AF_INET;
        src = pkt + 12;
        dst = pkt + 16;
    } else if (len >= 40 && (pkt[0] >> 4) == 6) {
        family = AF_INET6;
        src = pkt + 8;
        dst = pkt + 24;
    }
    for (i = 0; dst != NULL && i < r->n_routes; i++) {
        if (dr_route_matches(&r->routes[i], family, dst)) {
            delay = r->routes[i].delay_ms;
            jitter = r->routes[i].jitter_ms;
            break;
        }
    }
    uint64_t due = now + (uint64_t)delay * 1000000u;
    if (jitter > 0)
        due += dr_rand(r) % ((uint64_t)jitter * 1000000u + 1);
    for (i = 0; src != NULL && i < r->n_throttles; i++) {
        dr_route_t *t = &r->throttles[i];
        if (!dr_route_matches(t, family, src))
            continue;
        if (t->busy_until_ns > now + (uint64_t)DR_THROTTLE_BACKLOG_MS * 1000000u)
            return -ENOBUFS;
        if (t->busy_until_ns > due)
            due = t->busy_until_ns;
        /* serialization time: bits / (kbit/s) = ms; kept in ns */
        due += (uint64_t)len * 8u * 1000000u / t->rate_kbit;
        t->busy_until_ns = due;
        break;
    }
    *due_out = due;
    return 0;
}

/* ---- min-heap on (due_ns, seq) ---- */

static bool
dr_pkt_before(const dr_pkt_t *a, const dr_pkt_t *b)
{
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void
dr_heap_push(dr_relay_t *r, dr_pkt_t p)
{
    uint32_t i = r->n_held++;

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!dr_pkt_before(&p, &r->heap[parent]))
            break;
        r->heap[i] = r->heap[parent];
        i = parent;
    }
    r->heap[i] = p;
}

static dr_pkt_t
dr_heap_pop(dr_relay_t *r)
{
    dr_pkt_t top = r->heap[0];
    dr_pkt_t last = r->heap[--r->n_held];
    uint32_t i = 0;

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= r->n_held)
            break;
        if (c + 1 < r->n_held && dr_pkt_before(&r->heap[c + 1], &r->heap[c]))
            c++;
        if (!dr_pkt_before(&r->heap[c], &last))
            break;
        r->heap[i] = r->heap[c];
        i = c;
    }
    if (r->n_held > 0)
        r->heap[i] = last;
    return top;
}

/* ---- TUN device ---- */

static int
dr_tun_open(const char *name, int *fd_out)
{
    struct ifreq ifr;
    int fd, rc;

    if (strlen(name) >= IFNAMSIZ)
        return -ENAMETOOLONG;
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    memcpy(ifr.ifr_name, name, strlen(name));
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/* ---- counters ---- */

static void
dr_stats_print(const dr_relay_t *r, FILE *f)
{
    fprintf(f,
        "{\"rx_packets\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ",\"tx_packets\":%" PRIu64
        ",\"tx_bytes\":%" PRIu64 ",\"held\":%" PRIu32 ",\"drop_queue\":%" PRIu64
        ",\"drop_throttle\":%" PRIu64 ",\"drop_write\":%" PRIu64 ",\"drop_shutdown\":%" PRIu64
        "}\n",
        r->rx_packets, r->rx_bytes, r->tx_packets, r->tx_bytes, r->n_held, r->drop_queue,
        r->drop_throttle, r->drop_write, r->drop_shutdown);
}

/* Write the counters to --stats atomically (temp + rename). */
static void
dr_stats_write(const dr_relay_t *r)
{
    char tmp[4096];
    FILE *f;

    if (r->stats_path == NULL)
        return;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", r->stats_path) >= (int)sizeof tmp)
        return;
    f = fopen(tmp, "w");
    if (f == NULL)
        return;
    dr_stats_print(r, f);
    if (fclose(f) == 0)
        (void)rename(tmp, r->stats_path);
}

/* ---- the loop ---- */

/* Read whatever the device has (bounded per turn) into the heap. */
static int
dr_read_some(dr_relay_t *r, uint8_t *buf)
{
    unsigned n;

    for (n = 0; n < DR_READS_PER_TURN; n++) {
        ssize_t len = read(r->fd, buf, DR_MAX_PACKET);
        dr_pkt_t p;

        if (len < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -errno;
        }
        if (len == 0)
            return 0;
        r->rx_packets++;
        r->rx_bytes += (uint64_t)len;
        if (r->n_held >= r->queue_max || r->bytes_held + (uint64_t)len > DR_MAX_QUEUE_BYTES) {
            r->drop_queue++;
            continue;
        }
        p.data = malloc((size_t)len);
        if (p.data == NULL) {
            r->drop_queue++;
            continue;
        }
        memcpy(p.data, buf, (size_t)len);
        p.len = (uint32_t)len;
        if (dr_due_for(r, buf, p.len, dr_now_ns(), &p.due_ns) < 0) {
            r->drop_throttle++;
            free(p.data);
            continue;
        }
        p.seq = r->next_seq++;
        r->bytes_held += p.len;
        dr_heap_push(r, p);
    }
    return 0;
}

/* Write back every packet that is due. */
static void
dr_release_due(dr_relay_t *r, uint64_t now)
{
    while (r->n_held > 0 && r->heap[0].due_ns <= now) {
        dr_pkt_t p = dr_heap_pop(r);
        ssize_t w = write(r->fd, p.data, p.len);

        if (w == (ssize_t)p.len) {
            r->tx_packets++;
            r->tx_bytes += p.len;
        } else {
            r->drop_write++;       /* the kernel refused it: a loss like any other */
        }
        r->bytes_held -= p.len;
        free(p.data);
    }
}

static int
dr_run(dr_relay_t *r)
{
    uint8_t *buf = malloc(DR_MAX_PACKET);
    uint64_t next_stats = 0;
    sigset_t block, empty;
    int rc = 0;

    if (buf == NULL)
        return -ENOMEM;
    /* Signals are delivered only inside ppoll, so a stop is never missed. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, NULL);
    sigemptyset(&empty);
    while (!dr_stop_flag) {
        struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
        uint64_t now = dr_now_ns(), wait_ns = 1000000000u;
        struct timespec ts;
        int n;

        dr_release_due(r, now);
        if (now >= next_stats) {
            dr_stats_write(r);
            next_stats = now + 1000000000u;
        }
        if (r->n_held > 0)
            wait_ns = r->heap[0].due_ns > now ? r->heap[0].due_ns - now : 0;
        if (next_stats - now < wait_ns)
            wait_ns = next_stats - now;
        ts.tv_sec = (time_t)(wait_ns / 1000000000u);
        ts.tv_nsec = (long)(wait_ns % 1000000000u);
        n = ppoll(&pfd, 1, &ts, &empty);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (n > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
            rc = -EIO;
            break;
        }
        if (n > 0 && (rc = dr_read_some(r, buf)) < 0)
            break;
    }
    while (r->n_held > 0) {
        dr_pkt_t p = dr_heap_pop(r);
        r->drop_shutdown++;
        r->bytes_held -= p.len;
        free(p.data);
    }
    free(buf);
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "dev", required_argument, NULL, 'd' },
        { "delay", required_argument, NULL, 'D' },
        { "jitter", required_argument, NULL, 'j' },
        { "route", required_argument, NULL, 'r' },
        { "throttle", required_argument, NULL, 't' },
        { "queue", required_argument, NULL, 'q' },
        { "stats", required_argument, NULL, 's' },
        { "seed", required_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    static dr_relay_t relay;
    dr_relay_t *r = &relay;
    struct sigaction sa;
    uint32_t seed = 0;
    bool have_seed = false;
    char route_buf[256];
    int c, rc, li = 0;

    r->queue_max = DR_DEFAULT_QUEUE;
    r->fd = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        switch (c) {
        case 'd':
            r->dev = optarg;
            break;
        case 'D':
            if (dr_parse_u32(optarg, DR_MAX_DELAY_MS, &r->delay_ms) < 0)
                goto bad_value;
            break;
        case 'j':
            if (dr_parse_u32(optarg, DR_MAX_DELAY_MS, &r->jitter_ms) < 0)
                goto bad_value;
            break;
        case 'r':
            if (r->n_routes >= DR_MAX_ROUTES) {
                fprintf(stderr, "ron-delayrelay: at most %u --route options\n", DR_MAX_ROUTES);
                return 2;
            }
            /* parsed on a copy: the error message shows the text as given */
            if (strlen(optarg) >= sizeof route_buf)
                goto bad_value;
            memcpy(route_buf, optarg, strlen(optarg) + 1);
            if (dr_route_parse(&r->routes[r->n_routes], route_buf) < 0)
                goto bad_value;
            r->n_routes++;
            break;
        case 't':
            if (r->n_throttles >= DR_MAX_THROTTLES) {
                fprintf(stderr, "ron-delayrelay: at most %u --throttle options\n",
                        DR_MAX_THROTTLES);
                return 2;
            }
            if (strlen(optarg) >= sizeof route_buf)
                goto bad_value;
            memcpy(route_buf, optarg, strlen(optarg) + 1);
            if (dr_throttle_parse(&r->throttles[r->n_throttles], route_buf) < 0)
                goto bad_value;
            r->n_throttles++;
            break;
        case 'q':
            if (dr_parse_u32(optarg, DR_MAX_QUEUE, &r->queue_max) < 0 || r->queue_max == 0)
                goto bad_value;
            break;
        case 's':
            r->stats_path = optarg;
            break;
        case 'S':
            if (dr_parse_u32(optarg, UINT32_MAX, &seed) < 0)
                goto bad_value;
            have_seed = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "ron-delayrelay: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            fprintf(stderr, "try: ron-delayrelay --help\n");
            return 2;
        }
        continue;
bad_value:
        fprintf(stderr, "ron-delayrelay: bad value for --%s: %s\n", opts[li].name, optarg);
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "ron-delayrelay: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    if (r->dev == NULL) {
        fprintf(stderr, "ron-delayrelay: --dev NAME is required (try --help)\n");
        return 2;
    }
    r->rng = have_seed ? seed : dr_now_ns();
    r->rng = r->rng * 0x9e3779b97f4a7c15ull + 1;  /* never 0: xorshift would stick */
    if (r->rng == 0)
        r->rng = 1;
    r->heap = calloc(r->queue_max, sizeof *r->heap);
    if (r->heap == NULL) {
        fprintf(stderr, "ron-delayrelay: out of memory for a queue of %" PRIu32 "\n",
                r->queue_max);
        return 1;
    }
    rc = dr_tun_open(r->dev, &r->fd);
    if (rc < 0) {
        fprintf(stderr, "ron-delayrelay: cannot attach to TUN device %s: %s\n", r->dev,
                strerror(-rc));
        free(r->heap);
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = dr_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fprintf(stderr, "ron-delayrelay: relaying on %s, delay %" PRIu32 " ms + jitter %" PRIu32
            " ms, %u routes, %u throttles, queue %" PRIu32 "\n", r->dev, r->delay_ms,
            r->jitter_ms, r->n_routes, r->n_throttles, r->queue_max);
    rc = dr_run(r);
    dr_stats_write(r);
    dr_stats_print(r, stderr);
    close(r->fd);
    free(r->heap);
    if (rc < 0) {
        fprintf(stderr, "ron-delayrelay: stopped on error: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}
