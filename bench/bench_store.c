/*
 * bench_store.c - object store benchmark helper for bench/store.sh.
 *   bench_store put FILE STOREDIR      stream FILE into a file store in 1 MiB
 *                                      writes; prints seconds from begin to
 *                                      acknowledged commit
 *   bench_store ram FILE               the same streamed put into a RAM store
 *                                      (amnesia), reading FILE through a
 *                                      mapping as b3sum does: seconds
 *   bench_store lat STOREDIR N         N durable 1 MiB puts of distinct
 *                                      bytes, each followed by one round of
 *                                      the same syscalls by hand (write a
 *                                      new 1 MiB file, fdatasync, rename,
 *                                      fsync the directory); prints "p50
 *                                      p95" in microseconds for each, one
 *                                      line each
 *   bench_store get STOREDIR N         N distinct 1 MiB objects put, then
 *                                      read whole through the verified reader,
 *                                      each followed by the floor (open +
 *                                      pread of its file's 1 MiB, unverified);
 *                                      warm cache; "p50 p95" us, one line each
 *   bench_store getbus STOREDIR N      the same gets through the storage
 *                                      service over ron-bus (Unix sockets,
 *                                      sto_client_get to /dev/null); p50 p95
 * Release builds only; numbers are wall-clock, CLOCK_MONOTONIC.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ron_bus.h"
#include "sto_client.h"
#include "sto_service.h"
#include "svc_storage.h"

#define MIB (1u << 20)

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*
 * Stream file into a store (dir NULL: RAM store) in 1 MiB writes. The file
 * store reads with read(2), as dd does; the RAM store reads from a mapping
 * of the file, as `b3sum` does, so both sides of that ratio get their input
 * without a copy.
 */
static int
do_put(const char *file, const char *dir)
{
    static const uint8_t tenant[STO_TENANT_LEN] = {1};
    sto_config_t cfg = {.dir = dir}; /* dir NULL: RAM store */
    sto_store_t *s;
    sto_put_t *p;
    uint8_t *buf = malloc(MIB), addr[STO_ADDR_LEN];
    const uint8_t *map = NULL;
    char hex[68];
    struct stat st;
    ssize_t n;
    int fd = open(file, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) != 0 || sto_open(&cfg, &s) != 0)
        return 1;
    double t0 = now();
    if (dir == NULL && st.st_size > 0) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (map == MAP_FAILED)
            return 1;
    }
    if (sto_put_begin(s, tenant, NULL, NULL, (uint64_t)st.st_size, &p) != 0)
        return 1;
    if (map != NULL) {
        for (off_t off = 0; off < st.st_size; off += MIB) {
            size_t len = st.st_size - off < (off_t)MIB ? (size_t)(st.st_size - off) : MIB;
            if (sto_put_write(p, map + off, len) != 0)
                return 1;
        }
    } else {
        while ((n = read(fd, buf, MIB)) > 0)
            if (sto_put_write(p, buf, (size_t)n) != 0)
                return 1;
    }
    if (sto_put_commit(p, addr) != 0)
        return 1;
    double t1 = now();
    sto_addr_format(addr, hex);
    printf("%.3f %s\n", t1 - t0, hex);
    if (map != NULL)
        munmap((void *)map, (size_t)st.st_size);
    sto_close(s);
    close(fd);
    free(buf);
    return 0;
}

/* One round of the floor: the syscalls of a durable 1 MiB file, by hand. */
static int
floor_once(const char *fdir, int i, const uint8_t *buf)
{
    char tmp[600], fin[600];
    int fd, dfd;

    snprintf(tmp, sizeof(tmp), "%s/tmp-%d", fdir, i);
    snprintf(fin, sizeof(fin), "%s/obj-%d", fdir, i);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || write(fd, buf, MIB) != (ssize_t)MIB || fdatasync(fd) != 0)
        return 1;
    close(fd);
    if (rename(tmp, fin) != 0)
        return 1;
    dfd = open(fdir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0 || fsync(dfd) != 0)
        return 1;
    close(dfd);
    return 0;
}

/* Puts and floor rounds alternate, so both see the same (shared) disk. */
static int
do_lat(const char *dir, int n)
{
    static const uint8_t tenant[STO_TENANT_LEN] = {1};
    sto_config_t cfg = {.dir = dir};
    sto_store_t *s;
    uint8_t *buf = malloc(MIB);
    double *put = calloc((size_t)n, sizeof(double)), *floor_ = calloc((size_t)n, sizeof(double));
    char fdir[512];

    for (size_t i = 0; i < MIB; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    if (sto_open(&cfg, &s) != 0)
        return 1;
    snprintf(fdir, sizeof(fdir), "%s-floor", dir);
    mkdir(fdir, 0700);
    for (int i = 0; i < n; i++) {
        memcpy(buf, &i, sizeof(i)); /* distinct objects */
        buf[8] = 0x5a;
        double t0 = now();
        if (sto_put_buf(s, tenant, buf, MIB, NULL, NULL) != 0)
            return 1;
        put[i] = now() - t0;
        buf[8] = 0xa5;
        t0 = now();
        if (floor_once(fdir, i, buf) != 0)
            return 1;
        floor_[i] = now() - t0;
    }
    sto_close(s);
    qsort(put, (size_t)n, sizeof(double), cmp_double);
    qsort(floor_, (size_t)n, sizeof(double), cmp_double);
    printf("put %.0f %.0f\n", put[n / 2] * 1e6, put[(n * 95) / 100] * 1e6);
    printf("floor %.0f %.0f\n", floor_[n / 2] * 1e6, floor_[(n * 95) / 100] * 1e6);
    free(buf);
    free(put);
    free(floor_);
    return 0;
}

/* Fill buf with MIB bytes, distinct per i. */
static void
obj_fill(uint8_t *buf, int i)
{
    for (size_t k = 0; k < MIB; k++)
        buf[k] = (uint8_t)(k * 2654435761u >> 13);
    memcpy(buf, &i, sizeof(i));
    buf[8] = 0x3c;
}

static void
print_p(const char *label, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    printf("%s %.0f %.0f\n", label, v[n / 2] * 1e6, v[(n * 95) / 100] * 1e6);
}

/* Put n distinct 1 MiB objects into the file store at dir; addrs_out gets
 * n addresses. */
static int
put_objects(sto_store_t *s, int n, uint8_t *addrs_out)
{
    static const uint8_t tenant[STO_TENANT_LEN] = {1};
    uint8_t *buf = malloc(MIB);

    for (int i = 0; i < n; i++) {
        obj_fill(buf, i);
        if (sto_put_buf(s, tenant, buf, MIB, NULL, addrs_out + (size_t)i * STO_ADDR_LEN) != 0)
            return 1;
    }
    free(buf);
    return 0;
}

/*
 * Local reads of 1 MiB objects, warm page cache: the verified reader
 * (sto_reader_open + one sto_reader_read of the whole object + close) and,
 * in the same rounds, the floor: open + pread of the same object file's
 * 1 MiB, unverified.
 */
static int
do_get(const char *dir, int n)
{
    sto_config_t cfg = {.dir = dir};
    sto_store_t *s;
    uint8_t *addrs = malloc((size_t)n * STO_ADDR_LEN), *buf = malloc(MIB);
    double *get = calloc((size_t)n, sizeof(double)), *floor_ = calloc((size_t)n, sizeof(double));
    char hex[68], path[600];

    if (sto_open(&cfg, &s) != 0 || put_objects(s, n, addrs) != 0)
        return 1;
    for (int round = 0; round < 2; round++) { /* round 0 warms the cache */
        for (int i = 0; i < n; i++) {
            const uint8_t *a = addrs + (size_t)i * STO_ADDR_LEN;
            sto_reader_t *r;
            double t0 = now();
            if (sto_reader_open(s, a, &r) != 0 || sto_reader_read(r, 0, buf, MIB) != (ssize_t)MIB)
                return 1;
            sto_reader_close(r);
            get[i] = now() - t0;
            sto_addr_format(a, hex);
            snprintf(path, sizeof(path), "%s/objects/%.2s/%s", dir, hex + 3, hex + 3);
            t0 = now();
            int fd = open(path, O_RDONLY);
            if (fd < 0 || pread(fd, buf, MIB, 0) != (ssize_t)MIB) /* 1 MiB of the file, as is */
                return 1;
            close(fd);
            floor_[i] = now() - t0;
        }
    }
    sto_close(s);
    print_p("get", get, n);
    print_p("floor", floor_, n);
    free(addrs);
    free(buf);
    free(get);
    free(floor_);
    return 0;
}

typedef struct {
    int done, status;
    uint16_t code;
    uint64_t size;
} bus_get_t;

static void
bus_get_done(void *arg, int status, uint16_t code, uint64_t size)
{
    bus_get_t *g = arg;
    g->done = 1;
    g->status = status;
    g->code = code;
    g->size = size;
}

/*
 * The same gets through the storage service over ron-bus: the service
 * (sto_service) and a client (sto_client_get into /dev/null) on one loop in
 * this process, talking over the Unix-socket transport, as `ron get` talks
 * to a macronode's storage child (4 requests of 256 KiB per object).
 */
static int
do_getbus(const char *dir, int n)
{
    sto_config_t cfg = {.dir = dir};
    rbus_config_t sc = {0}, cc = {0};
    char busdir[RBUS_MAX_DIR];
    sto_store_t *s;
    sto_service_t *svc;
    rbus_t *srv, *cli;
    rbus_peer_t *peer;
    uv_loop_t loop;
    uint8_t *addrs = malloc((size_t)n * STO_ADDR_LEN);
    double *get = calloc((size_t)n, sizeof(double));
    int rc = 0, devnull = open("/dev/null", O_WRONLY);

    if (devnull < 0 || sto_open(&cfg, &s) != 0 || put_objects(s, n, addrs) != 0)
        return 1;
    uv_loop_init(&loop);
    if (rbus_dir_create(busdir, sizeof(busdir)) != 0 || rbus_secret_generate(sc.secret) != 0)
        return 1;
    memcpy(cc.secret, sc.secret, sizeof(sc.secret));
    sc.transport = cc.transport = RBUS_TRANSPORT_UNIX;
    sc.dir = cc.dir = busdir;
    sc.name = "storage";
    cc.name = "bench";
    if ((srv = rbus_new(&loop, &sc, &rc)) == NULL || (cli = rbus_new(&loop, &cc, &rc)) == NULL ||
        sto_service_new(&loop, srv, s, NULL, &svc) != 0 || rbus_listen(srv) != 0 ||
        (peer = rbus_connect(cli, "storage", &rc)) == NULL)
        return 1;
    for (int round = 0; round < 2; round++) { /* round 0 warms the cache and the connection */
        for (int i = 0; i < n; i++) {
            bus_get_t g = {0};
            double t0 = now();
            const uint8_t *a = addrs + (size_t)i * STO_ADDR_LEN;
            if (sto_client_get(peer, a, devnull, bus_get_done, &g) != 0)
                return 1;
            while (!g.done && now() - t0 < 10.0)
                uv_run(&loop, UV_RUN_ONCE);
            if (!g.done || g.status != 0 || g.code != 200 || g.size != MIB)
                return 1;
            get[i] = now() - t0;
        }
    }
    sto_service_free(svc);
    rbus_peer_close(peer);
    rbus_free(cli);
    rbus_free(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rbus_dir_remove(busdir);
    close(devnull);
    print_p("getbus", get, n);
    free(addrs);
    free(get);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "put") == 0)
        return do_put(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "ram") == 0)
        return do_put(argv[2], NULL);
    if (argc == 4 && strcmp(argv[1], "lat") == 0)
        return do_lat(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "get") == 0)
        return do_get(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "getbus") == 0)
        return do_getbus(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: bench_store put FILE STOREDIR | ram FILE | lat STOREDIR N | "
                    "get STOREDIR N | getbus STOREDIR N\n");
    return 2;
}
