/*
 * mn_util.c - binding the public TCP listeners the kernel hands to its
 * children, and naming how a child ended.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mn_internal.h"
#include "ron_err.h"
#include "ron_util.h"

int
mn__listen_tcp(const char *addr, char *bound_out, size_t bound_cap)
{
    char host[RON_CONFIG_ADDR_MAX];
    struct sockaddr_storage ss;
    socklen_t sl;
    int port, fd = -1, one = 1, rc;

    memset(&ss, 0, sizeof ss);
    if (ron_addr_split(addr, host, sizeof host, &port) < 0)
        return RON_EINVAL;
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        sl = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        sl = sizeof(struct sockaddr_in6);
    } else {
        return RON_EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char h[INET6_ADDRSTRLEN];
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof h);
            snprintf(bound_out, bound_cap, "%s:%u", h,
                     ntohs(((struct sockaddr_in *)&ss)->sin_port));
        } else {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof h);
            snprintf(bound_out, bound_cap, "[%s]:%u", h,
                     ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
        }
    }
    return fd;
}

void
mn__exit_reason(char *out, size_t cap, int64_t exit_status, int term_signal)
{
    if (term_signal != 0)
        snprintf(out, cap, "signal %d (%s)", term_signal, strsignal(term_signal));
    else
        snprintf(out, cap, "exit %lld", (long long)exit_status);
}
