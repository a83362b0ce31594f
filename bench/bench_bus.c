/*
 * bench_bus.c - kernel event bus: publish -> deliver throughput and latency
 * with N subscriber threads. The publisher stamps each CONFIG_UPDATED event
 * with CLOCK_MONOTONIC ns in its version field; each subscriber polls its
 * cursor and records now - stamp for every 8th event it receives.
 *
 *   bench_bus [--subs N] [--events N] [--capacity N] [--rate EV_PER_S]
 *             [--pub-cpu C] [--sub-cpus C1,C2,...]
 *
 * --rate 0 (default) publishes flat out: the figure is events/s delivered to
 * each subscriber (the bus is lossy, so a slower subscriber loses events and
 * the loss is printed). --rate R paces the publisher at R events/s, so the
 * latency percentiles are hand-off latency rather than queueing delay.
 * Threads are pinned with pthread_setaffinity_np (publisher to --pub-cpu,
 * subscribers round-robin over --sub-cpus). An idle subscriber spins briefly,
 * then yields; when subscribers outnumber their CPUs it yields at once.
 * Prints one line of key=value.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_kernel.h"
#include "ron_util.h"

#define SAMPLE_EVERY 8
#define MAX_SUBS 16
#define MAX_CPUS 64

typedef struct {
    ron_bus_sub_t *sub;
    int cpu;
    uint64_t received;
    uint64_t first_ns, last_ns;
    uint32_t *lat; /* ns, capped at UINT32_MAX */
    size_t nlat, caplat;
} sub_t;

static ron_bus_t *g_bus;
static uint64_t g_events;
static uint64_t g_rate;
static int g_pub_cpu;
static _Atomic int g_ready;
static _Atomic int g_go;
static _Atomic int g_done;
static uint64_t g_pub_start_ns, g_pub_end_ns;
static unsigned g_spin = 256; /* idle polls before sched_yield; 0 when subscribers share a core */

static void
pin(int cpu)
{
    cpu_set_t set;
    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        fprintf(stderr, "bench_bus: cannot pin to cpu %d\n", cpu);
}

static inline void
relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *
sub_main(void *arg)
{
    sub_t *s = arg;
    ron_kernel_event_t ev;
    unsigned idle = 0;

    pin(s->cpu);
    atomic_fetch_add(&g_ready, 1);
    while (!atomic_load(&g_go))
        relax();
    for (;;) {
        int done = atomic_load_explicit(&g_done, memory_order_acquire);
        if (ron_bus_recv(s->sub, &ev) == 0) {
            idle = 0;
            if (ev.kind != RON_EV_CONFIG_UPDATED)
                continue; /* an overflow report */
            s->received++;
            if (s->received % SAMPLE_EVERY == 0 || s->first_ns == 0) {
                uint64_t now = ron_now_ns();
                if (s->first_ns == 0)
                    s->first_ns = now;
                s->last_ns = now;
                if (s->nlat < s->caplat) {
                    uint64_t d = now - ev.version;
                    s->lat[s->nlat++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
                }
            }
            continue;
        }
        if (done)
            break;
        if (++idle < g_spin)
            relax();
        else
            sched_yield(); /* share the core with other subscribers */
    }
    s->last_ns = ron_now_ns();
    return NULL;
}

static void *
pub_main(void *arg)
{
    ron_kernel_event_t ev;
    (void)arg;
    pin(g_pub_cpu);
    ron_kernel_event_config_updated(&ev, 0);
    uint64_t start = ron_now_ns();
    g_pub_start_ns = start;
    for (uint64_t i = 0; i < g_events; i++) {
        uint64_t now = ron_now_ns();
        if (g_rate != 0) {
            uint64_t due = start + i * 1000000000ull / g_rate;
            while (now < due) {
                relax();
                now = ron_now_ns();
            }
        }
        ev.version = now;
        ron_bus_publish(g_bus, &ev);
    }
    g_pub_end_ns = ron_now_ns();
    atomic_store_explicit(&g_done, 1, memory_order_release);
    return NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    int nsubs = 1, sub_cpus[MAX_CPUS] = {1}, nsub_cpus = 1;
    uint32_t capacity = RON_BUS_DEFAULT_CAPACITY;
    sub_t subs[MAX_SUBS];
    pthread_t th[MAX_SUBS], pt;

    g_events = 2000000;
    g_pub_cpu = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--subs") == 0)
            nsubs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--events") == 0)
            g_events = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--capacity") == 0)
            capacity = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--rate") == 0)
            g_rate = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--pub-cpu") == 0)
            g_pub_cpu = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--sub-cpus") == 0) {
            nsub_cpus = 0;
            for (char *t = strtok(argv[i + 1], ","); t != NULL && nsub_cpus < MAX_CPUS;
                 t = strtok(NULL, ","))
                sub_cpus[nsub_cpus++] = atoi(t);
        } else {
            fprintf(stderr, "bench_bus: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (nsubs < 1 || nsubs > MAX_SUBS || g_events == 0 || nsub_cpus == 0) {
        fprintf(stderr, "bench_bus: bad arguments\n");
        return 2;
    }
    if (nsubs > nsub_cpus)
        g_spin = 0; /* several subscribers per core: spinning only steals from the others */
    ron_bus_opts_t o = {.capacity = capacity};
    if (ron_bus_new(&o, &g_bus) < 0) {
        fprintf(stderr, "bench_bus: bad capacity %u\n", capacity);
        return 2;
    }
    for (int i = 0; i < nsubs; i++) {
        memset(&subs[i], 0, sizeof subs[i]);
        subs[i].cpu = sub_cpus[i % nsub_cpus];
        subs[i].caplat = g_events / SAMPLE_EVERY + 2;
        subs[i].lat = ron_xcalloc(subs[i].caplat, sizeof(uint32_t));
        if (ron_bus_subscribe(g_bus, NULL, &subs[i].sub) < 0)
            return 1;
        pthread_create(&th[i], NULL, sub_main, &subs[i]);
    }
    while (atomic_load(&g_ready) < nsubs)
        sched_yield();
    atomic_store(&g_go, 1);
    pthread_create(&pt, NULL, pub_main, NULL);
    pthread_join(pt, NULL);
    for (int i = 0; i < nsubs; i++)
        pthread_join(th[i], NULL);

    /* Per subscriber: events received / (its last receive - publisher start). */
    double min_rate = 1e300, sum_rate = 0;
    uint64_t total_recv = 0, min_recv = UINT64_MAX;
    size_t nlat = 0;
    for (int i = 0; i < nsubs; i++) {
        double secs = (double)(subs[i].last_ns - g_pub_start_ns) / 1e9;
        double r = (double)subs[i].received / secs;
        min_rate = r < min_rate ? r : min_rate;
        sum_rate += r;
        total_recv += subs[i].received;
        min_recv = subs[i].received < min_recv ? subs[i].received : min_recv;
        nlat += subs[i].nlat;
    }
    uint32_t *all = ron_xcalloc(nlat + 1, sizeof(uint32_t));
    size_t k = 0;
    for (int i = 0; i < nsubs; i++) {
        memcpy(all + k, subs[i].lat, subs[i].nlat * sizeof(uint32_t));
        k += subs[i].nlat;
        free(subs[i].lat);
        ron_bus_unsubscribe(subs[i].sub);
    }
    qsort(all, nlat, sizeof(uint32_t), cmp_u32);
    ron_bus_stats_t st;
    ron_bus_stats(g_bus, &st);
    double pub_secs = (double)(g_pub_end_ns - g_pub_start_ns) / 1e9;
    printf("subs=%d events=%llu rate=%llu publish_eps=%.0f deliver_eps_min=%.0f "
           "deliver_eps_sum=%.0f lost_pct=%.3f p50_ns=%u p99_ns=%u overflow_dropped=%llu\n",
           nsubs, (unsigned long long)g_events, (unsigned long long)g_rate,
           (double)g_events / pub_secs, min_rate, sum_rate,
           100.0 * (1.0 - (double)total_recv / ((double)g_events * nsubs)),
           nlat ? all[nlat / 2] : 0, nlat ? all[(nlat * 99) / 100] : 0,
           (unsigned long long)st.overflow_dropped);
    free(all);
    ron_bus_free(g_bus);
    (void)min_recv;
    return 0;
}
