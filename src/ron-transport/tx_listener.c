/*
 * tx_listener.c - TCP listening sockets: bind "HOST:PORT" or "[v6]:PORT"
 * (numeric hosts, plus "localhost"), or adopt a socket the kernel bound and
 * handed over. A listener knows nothing of HTTP: tx_server_attach gives it
 * a server, and later protocols (OAP/1, TLS) can attach their own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

int
tx__addr_parse(const char *addr, struct sockaddr_storage *ss)
{
    char host[TX_ADDR_MAX];
    const char *colon, *port_s;
    size_t hl;
    uint64_t port;

    memset(ss, 0, sizeof *ss);
    if (addr == NULL)
        return RON_EINVAL;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return RON_EINVAL;
        hl = (size_t)(end - addr - 1);
        if (hl >= sizeof host)
            return RON_EINVAL;
        memcpy(host, addr + 1, hl);
        port_s = end + 2;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return RON_EINVAL;
        hl = (size_t)(colon - addr);
        if (hl >= sizeof host)
            return RON_EINVAL;
        memcpy(host, addr, hl);
        port_s = colon + 1;
    }
    host[hl] = '\0';
    if (ron_parse_u64(port_s, strlen(port_s), &port) < 0 || port > 65535)
        return RON_EINVAL;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
    } else if (addr[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
    } else {
        return RON_EINVAL;
    }
    return 0;
}

int
tx_socket_bind(const char *addr, int backlog, int *fd_out)
{
    struct sockaddr_storage ss;
    int fd = -1, one = 1, rc;

    if ((rc = tx__addr_parse(addr, &ss)) < 0)
        return rc;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) < 0)
        goto fail;
    if (listen(fd, backlog) < 0)
        goto fail;
    *fd_out = fd;
    return 0;
fail:
    rc = -errno;
    close(fd);
    return rc;
}

static tx_listener_t *
tx_listener_alloc(uv_loop_t *loop)
{
    tx_listener_t *l = ron_xcalloc(1, sizeof *l);

    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    return l;
}

static void
tx_listener_free_cb(uv_handle_t *h)
{
    tx_listener_t *l = h->data;
    void (*cb)(void *) = l->close_cb;
    void *arg = l->close_arg;

    SSL_CTX_free(l->tls); /* connections hold their own references through their SSL */
    free(l);
    if (cb != NULL)
        cb(arg);
}

int
tx_listener_from_fd(uv_loop_t *loop, int fd, tx_listener_t **l_out)
{
    int acc = 0, type = 0;
    socklen_t sl = sizeof acc;
    tx_listener_t *l;
    int rc;

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl) < 0 || !acc)
        return RON_EINVAL;
    sl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0 || type != SOCK_STREAM)
        return RON_EINVAL;
    l = tx_listener_alloc(loop);
    if ((rc = uv_tcp_open(&l->tcp, fd)) < 0) {
        /* the handle never owned fd: the caller keeps it */
        uv_close((uv_handle_t *)&l->tcp, tx_listener_free_cb);
        return rc;
    }
    *l_out = l;
    return 0;
}

int
tx_listener_bind(uv_loop_t *loop, const char *addr, tx_listener_t **l_out)
{
    int fd, rc;

    if ((rc = tx_socket_bind(addr, 1024, &fd)) < 0)
        return rc;
    if ((rc = tx_listener_from_fd(loop, fd, l_out)) < 0)
        close(fd);
    return rc;
}

uint16_t
tx_listener_port(const tx_listener_t *l)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;

    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void
tx_listener_addr(const tx_listener_t *l, char out[static TX_ADDR_MAX])
{
    struct sockaddr_storage ss;
    char host[INET6_ADDRSTRLEN];
    int len = sizeof ss;

    out[0] = '\0';
    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
        (void)snprintf(out, TX_ADDR_MAX, "%s:%u", host, tx_listener_port(l));
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
        (void)snprintf(out, TX_ADDR_MAX, "[%s]:%u", host, tx_listener_port(l));
    }
}

void
tx_listener_close(tx_listener_t *l, void (*cb)(void *arg), void *arg)
{
    l->close_cb = cb;
    l->close_arg = arg;
    uv_close((uv_handle_t *)&l->tcp, tx_listener_free_cb);
}
