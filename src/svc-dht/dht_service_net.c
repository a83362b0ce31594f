/*
 * dht_service_net.c - the network side of the DHT node service: the UDP
 * socket (datagrams in to dht_input, the core's datagrams out with
 * uv_udp_try_send: a full socket buffer drops one as the network would),
 * addresses as text and sockaddrs, and the seeds: numeric ones at once,
 * host names resolved on the thread pool and retried until they resolve.
 * Invariants: a resolution in flight holds one open_handles count, so the
 * service memory outlives its callback.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dht_service_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

typedef struct {
    uv_getaddrinfo_t req;
    dht_service_t *svc;
    size_t slot;
} resolve_t;

int
dht_service_addr_parse(const char *s, dht_addr_t *a)
{
    char host[64];
    const char *colon;
    size_t hl;
    uint64_t port;

    memset(a, 0, sizeof *a);
    if (s == NULL)
        return RON_EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return RON_EINVAL;
        hl = (size_t)(end - s - 1);
        if (hl == 0 || hl >= sizeof host)
            return RON_EINVAL;
        memcpy(host, s + 1, hl);
        host[hl] = '\0';
        colon = end + 1;
        if (inet_pton(AF_INET6, host, a->ip) != 1)
            return RON_EINVAL;
        a->family = 6;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return RON_EINVAL;
        hl = (size_t)(colon - s);
        if (hl == 0 || hl >= sizeof host)
            return RON_EINVAL;
        memcpy(host, s, hl);
        host[hl] = '\0';
        if (inet_pton(AF_INET, host, a->ip) != 1)
            return RON_EINVAL;
        a->family = 4;
    }
    if (ron_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port == 0 || port > 65535) {
        memset(a, 0, sizeof *a);
        return RON_EINVAL;
    }
    a->port = (uint16_t)port;
    return 0;
}

void
dht_service_addr_format(const dht_addr_t *a, char out[static DHT_SVC_ADDR_MAX])
{
    char h[INET6_ADDRSTRLEN] = "";
    if (a->family == 6) {
        inet_ntop(AF_INET6, a->ip, h, sizeof h);
        snprintf(out, DHT_SVC_ADDR_MAX, "[%s]:%u", h, a->port);
    } else {
        inet_ntop(AF_INET, a->ip, h, sizeof h);
        snprintf(out, DHT_SVC_ADDR_MAX, "%s:%u", h, a->port);
    }
}

void
dht__svc_addr_from_sockaddr(const struct sockaddr *sa, dht_addr_t *a)
{
    memset(a, 0, sizeof *a);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        a->family = 4;
        memcpy(a->ip, &in->sin_addr, 4);
        a->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            a->family = 4;
            memcpy(a->ip, (const uint8_t *)&in6->sin6_addr + 12, 4);
        } else {
            a->family = 6;
            memcpy(a->ip, &in6->sin6_addr, 16);
        }
        a->port = ntohs(in6->sin6_port);
    }
}

static socklen_t
addr_to_sockaddr(const dht_addr_t *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (a->family == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a->ip, 4);
        in->sin_port = htons(a->port);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, a->ip, 16);
    in6->sin6_port = htons(a->port);
    return sizeof *in6;
}

/*
 * "[ID@]HOST:PORT". A numeric host fills a and returns 0; a host name (DNS
 * syntax) fills name_out and returns 1; anything else is RON_EINVAL.
 */
int
dht__svc_seed_parse(const char *seed, dht_seed_t *a, seed_name_t *name_out)
{
    const char *at = strchr(seed, '@'), *colon;
    uint8_t id[DHT_ID_LEN];
    uint64_t port;
    size_t hl;

    memset(a, 0, sizeof *a);
    if (at != NULL) {
        if (at - seed != 2 * DHT_ID_LEN || ron_hex_decode(id, DHT_ID_LEN, seed, 2 * DHT_ID_LEN) < 0)
            return RON_EINVAL;
        seed = at + 1;
    }
    if (dht_service_addr_parse(seed, &a->addr) == 0) {
        a->has_id = at != NULL;
        if (a->has_id)
            memcpy(a->id, id, DHT_ID_LEN);
        return 0;
    }
    colon = strrchr(seed, ':');
    if (colon == NULL || seed[0] == '[')
        return RON_EINVAL;
    hl = (size_t)(colon - seed);
    if (hl == 0 || hl >= DHT_SVC_HOST_MAX ||
        ron_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port == 0 || port > 65535)
        return RON_EINVAL;
    for (size_t i = 0; i < hl; i++) {
        char c = seed[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return RON_EINVAL;
    }
    memset(name_out, 0, sizeof *name_out);
    memcpy(name_out->host, seed, hl);
    name_out->port = (uint16_t)port;
    name_out->has_id = at != NULL;
    if (name_out->has_id)
        memcpy(name_out->id, id, DHT_ID_LEN);
    return 1;
}

void
dht__svc_flush_out(dht_service_t *s)
{
    dht_addr_t to;
    ssize_t n;

    while ((n = dht_output_next(s->dht, s->txbuf, sizeof s->txbuf, &to)) > 0) {
        struct sockaddr_storage ss;
        uv_buf_t b = uv_buf_init((char *)s->txbuf, (unsigned)n);
        (void)addr_to_sockaddr(&to, &ss);
        if (uv_udp_try_send(&s->udp, &b, 1, (const struct sockaddr *)&ss) < 0)
            s->tx_send_failed++;
    }
}

/* Log a datagram refused because a seed named another node (at most one
 * line per DHT_SVC_SEED_LOG_MS: an impostor must not flood the log). */
static void
seed_log_refused(dht_service_t *s)
{
    uint64_t now = ron_now_ms(), n = dht_stats(s->dht)->rx_seed_mismatch;
    char want[2 * DHT_ID_LEN + 1], got[2 * DHT_ID_LEN + 1], at[DHT_SVC_ADDR_MAX];
    uint8_t id[DHT_ID_LEN];
    dht_seed_t sd;

    if (n == s->seed_refused_seen ||
        (s->seed_logged != 0 && now < s->seed_logged + DHT_SVC_SEED_LOG_MS) ||
        dht_seed_mismatch_last(s->dht, &sd, id) < 0)
        return;
    ron_hex_encode(want, sd.id, DHT_ID_LEN);
    ron_hex_encode(got, id, DHT_ID_LEN);
    dht_service_addr_format(&sd.addr, at);
    ron_warn("dht: seed %s answered as node %s, not %s as configured: refused (%llu so far)", at,
             got, want, (unsigned long long)n);
    s->seed_refused_seen = n;
    s->seed_logged = now;
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = ron_container_of(req, resolve_t, req);
    dht_service_t *s = r->svc;
    seed_name_t *n = &s->names[r->slot];
    dht_addr_t a = {0};

    n->req = NULL;
    for (struct addrinfo *ai = res; status == 0 && ai != NULL && a.family == 0; ai = ai->ai_next)
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            dht__svc_addr_from_sockaddr(ai->ai_addr, &a);
    uv_freeaddrinfo(res);
    free(r);
    if (s->stopping) {
        dht__svc_release(s);
        return;
    }
    if (a.family == 0) {
        /* retried: quickly while we know nobody, slowly once we do */
        n->next_try = ron_now_ms() + (dht_table_size(s->dht) == 0 ? 10000u : 60000u);
        ron_warn("dht: seed %s: cannot resolve: %s (retrying)", n->host,
                 status < 0 ? uv_strerror(status) : "no IPv4/IPv6 address");
    } else if (s->nseeds < DHT_MAX_SEEDS) {
        char text[DHT_SVC_ADDR_MAX];
        dht_seed_t *sd = &s->seeds[s->nseeds++];
        a.port = n->port;
        n->resolved = true;
        memset(sd, 0, sizeof *sd);
        sd->addr = a;
        sd->has_id = n->has_id;
        memcpy(sd->id, n->id, DHT_ID_LEN);
        dht_service_addr_format(&a, text);
        ron_info("dht: seed %s is %s", n->host, text);
        s->boot_called = dht_bootstrap_seeds(s->dht, s->seeds, s->nseeds, ron_now_ms()) == 0;
        dht__svc_pump(s);
    }
    dht__svc_release(s);
}

/* Start resolving the seed names that are due. */
void
dht__svc_resolve_names(dht_service_t *s)
{
    struct addrinfo hints;
    uint64_t now = ron_now_ms();

    memset(&hints, 0, sizeof hints);
    /* the socket's own family: a v4 socket cannot send to a v6 seed (nor a V6ONLY one to v4) */
    hints.ai_family = s->bound[0] == '[' ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    for (size_t i = 0; i < s->nnames; i++) {
        seed_name_t *n = &s->names[i];
        resolve_t *r;
        if (n->resolved || n->req != NULL || now < n->next_try)
            continue;
        r = ron_xcalloc(1, sizeof *r);
        r->svc = s;
        r->slot = i;
        if (uv_getaddrinfo(s->loop, &r->req, on_resolved, n->host, NULL, &hints) < 0) {
            free(r);
            n->next_try = now + 10000u;
            continue;
        }
        n->req = &r->req;
        s->open_handles++;
    }
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    dht_service_t *s = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)s->rxbuf, sizeof s->rxbuf);
}

static void
on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
        unsigned flags)
{
    dht_service_t *s = h->data;
    dht_addr_t a;
    (void)flags;

    if (nread <= 0 || from == NULL || s->stopping)
        return;
    dht__svc_addr_from_sockaddr(from, &a);
    if (a.family == 0 || a.port == 0)
        return;
    if (dht_input(s->dht, (const uint8_t *)buf->base, (size_t)nread, &a, ron_now_ms()) < 0)
        s->rx_dropped++;
    seed_log_refused(s);
    dht__svc_pump(s);
}

void
dht__svc_udp_start(dht_service_t *s)
{
    uv_udp_recv_start(&s->udp, on_alloc, on_recv);
}
