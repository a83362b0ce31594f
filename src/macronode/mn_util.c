/*
 * mn_util.c - binding the public TCP listeners (and the DHT's UDP
 * socket) the kernel hands to its
 * children, naming how a child ended, and preparing the data directory
 * (mode 0700, FORMAT file with the layout version, written atomically).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ron_fs.h"
#include "mn_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* Parse addr into ss. Returns its length or RON_EINVAL. */
static socklen_t
util_sockaddr(const char *addr, struct sockaddr_storage *ss, int *rc_out)
{
    char host[RON_CONFIG_ADDR_MAX];
    int port;

    memset(ss, 0, sizeof *ss);
    *rc_out = 0;
    if (ron_addr_split(addr, host, sizeof host, &port) < 0) {
        *rc_out = RON_EINVAL;
        return 0;
    }
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        return sizeof(struct sockaddr_in);
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        return sizeof(struct sockaddr_in6);
    }
    *rc_out = RON_EINVAL;
    return 0;
}

static void
util_bound(int fd, char *bound_out, size_t bound_cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[INET6_ADDRSTRLEN];

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof h);
        snprintf(bound_out, bound_cap, "%s:%u", h, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof h);
        snprintf(bound_out, bound_cap, "[%s]:%u", h,
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    }
}

/* Bind a socket of type on addr (and listen for TCP). Returns the fd or a code. */
static int
util_bind(const char *addr, int type, char *bound_out, size_t bound_cap)
{
    struct sockaddr_storage ss;
    int fd, one = 1, rc;
    socklen_t sl = util_sockaddr(addr, &ss, &rc);

    if (rc < 0)
        return rc;
    fd = socket(ss.ss_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (type == SOCK_STREAM)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
        (type == SOCK_STREAM && listen(fd, 1024) < 0)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    util_bound(fd, bound_out, bound_cap);
    return fd;
}

int
mn__listen_tcp(const char *addr, char *bound_out, size_t bound_cap)
{
    return util_bind(addr, SOCK_STREAM, bound_out, bound_cap);
}

int
mn__listen_udp(const char *addr, char *bound_out, size_t bound_cap)
{
    return util_bind(addr, SOCK_DGRAM, bound_out, bound_cap);
}

void
mn__exit_reason(char *out, size_t cap, int64_t exit_status, int term_signal)
{
    if (term_signal != 0)
        snprintf(out, cap, "signal %d (%s)", term_signal, strsignal(term_signal));
    else
        snprintf(out, cap, "exit %lld", (long long)exit_status);
}

int
mn__data_dir_prepare(const ron_config_t *cfg, char *err, size_t errcap)
{
    char path[RON_CONFIG_PATH_MAX + 16], tmp[RON_CONFIG_PATH_MAX + 32], buf[32];
    ssize_t n;
    int fd, rc;

    if (ron_config_amnesia(cfg))
        return 0; /* amnesia: nothing is written to disk */
    if ((rc = ron_mkdir_p(cfg->data_dir)) < 0) {
        snprintf(err, errcap, "data dir %s: %s", cfg->data_dir, ron_strerror(rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/FORMAT", cfg->data_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\r\n ")] = '\0';
        if (strcmp(buf, MN_DATA_FORMAT) != 0) {
            snprintf(err, errcap, "data dir %s has layout version '%s'; this ron uses %s",
                     cfg->data_dir, buf, MN_DATA_FORMAT);
            return RON_ECONFIG;
        }
        return 0;
    }
    if (errno != ENOENT) {
        rc = -errno;
        snprintf(err, errcap, "%s: %s", path, ron_strerror(rc));
        return rc;
    }
    snprintf(tmp, sizeof tmp, "%s/.FORMAT.tmp", cfg->data_dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, MN_DATA_FORMAT "\n", strlen(MN_DATA_FORMAT) + 1) < 0 ||
        fdatasync(fd) < 0 || rename(tmp, path) < 0) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        snprintf(err, errcap, "%s: %s", path, ron_strerror(rc));
        return rc;
    }
    close(fd);
    (void)ron_fsync_dir(cfg->data_dir); /* best effort: FORMAT is rewritten if lost */
    return 0;
}

void
mn__tx_config(tx_config_t *tc, const ron_config_http_limits_t *l)
{
    tx_config_default(tc);
    tc->max_conns = (uint32_t)l->max_conns;
    tc->max_inflight = (uint32_t)l->max_inflight;
    tc->rate_rps = (uint32_t)l->rate_rps;
    tc->rate_burst = (uint32_t)l->rate_burst;
    tc->header_timeout_ms = (uint32_t)l->header_timeout_ms;
    tc->body_timeout_ms = (uint32_t)l->body_timeout_ms;
    tc->idle_timeout_ms = (uint32_t)l->idle_timeout_ms;
    tc->max_body = (uint32_t)l->max_body;
    tc->max_header_bytes = (uint32_t)l->max_header;
}
