/*
 * rc_util.c - libron's pure helpers: node address, byte range and content
 * address parsing, the retry backoff schedule, idempotency keys, and how the
 * `ron` client commands find the node, the data dir and the capability
 * (DESIGN.md §11). Only ron_client_cap_find touches the file system.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rc_internal.h"
#include "ron_err.h"
#include "ron_util.h"

int
ron_client_node_parse(const char *s, ron_client_node_t *node_out)
{
    const char *at, *hp, *colon, *host, *port;
    size_t host_len;
    uint64_t p;

    memset(node_out, 0, sizeof *node_out);
    if (s == NULL || s[0] == '\0')
        return RON_EINVAL;
    at = strchr(s, '@');
    hp = s;
    if (at != NULL) {
        if (at - s != 64 || ron_hex_decode(node_out->id, 32, s, 64) < 0)
            return RON_EINVAL;
        node_out->has_id = true;
        hp = at + 1;
    }
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (close == NULL || close[1] != ':')
            return RON_EINVAL;
        host = hp + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
        if (memchr(host, ':', host_len) == NULL)
            return RON_EINVAL; /* brackets are for IPv6 only */
    } else {
        colon = strrchr(hp, ':');
        if (colon == NULL || memchr(hp, ':', (size_t)(colon - hp)) != NULL)
            return RON_EINVAL; /* no port, or an IPv6 address without brackets */
        host = hp;
        host_len = (size_t)(colon - hp);
        port = colon + 1;
    }
    if (host_len == 0 || host_len > RON_CLIENT_MAX_HOST ||
        ron_parse_u64(port, strlen(port), &p) < 0 || p == 0 || p > 65535)
        return RON_EINVAL;
    for (size_t i = 0; i < host_len; i++)
        if (host[i] <= ' ' || host[i] == '@' || host[i] == '[' || host[i] == ']' ||
            host[i] == '/' || (unsigned char)host[i] >= 0x7f)
            return RON_EINVAL;
    memcpy(node_out->host, host, host_len);
    node_out->host[host_len] = '\0';
    node_out->port = (uint16_t)p;
    return 0;
}

int
ron_client_range_parse(const char *s, uint64_t *offset_out, uint64_t *length_out)
{
    const char *dash;
    uint64_t a, b;

    if (s == NULL || (dash = strchr(s, '-')) == NULL || dash == s)
        return RON_EINVAL;
    if (ron_parse_u64(s, (size_t)(dash - s), &a) < 0)
        return RON_EINVAL;
    if (dash[1] == '\0') {
        *offset_out = a;
        *length_out = RON_CLIENT_TO_END;
        return 0;
    }
    if (ron_parse_u64(dash + 1, strlen(dash + 1), &b) < 0 || b < a || b == UINT64_MAX)
        return RON_EINVAL;
    *offset_out = a;
    *length_out = b - a + 1;
    return 0;
}

int
ron_client_addr_check(const char *addr)
{
    if (addr == NULL || strlen(addr) != RON_CLIENT_ADDR_LEN || strncmp(addr, "b3:", 3) != 0)
        return RON_EADDR;
    for (size_t i = 3; i < RON_CLIENT_ADDR_LEN; i++)
        if (!((addr[i] >= '0' && addr[i] <= '9') || (addr[i] >= 'a' && addr[i] <= 'f')))
            return RON_EADDR;
    return 0;
}

uint32_t
ron_client_backoff_ms(unsigned attempt, uint32_t retry_after_ms, uint64_t r)
{
    uint64_t ceil = RON_CLIENT_BACKOFF_MAX_MS;
    uint32_t d;

    if (attempt < 16)
        ceil = RON_MIN(ceil, (uint64_t)RON_CLIENT_BACKOFF_BASE_MS << attempt);
    d = (uint32_t)(r % (ceil + 1));
    retry_after_ms = RON_MIN(retry_after_ms, (uint32_t)RON_CLIENT_RETRY_AFTER_MAX_MS);
    return RON_MAX(d, retry_after_ms);
}

const char *
ron_client_node_find(const char *flag)
{
    const char *e;
    if (flag != NULL)
        return flag;
    e = getenv(RON_CLIENT_ENV_NODE);
    return e != NULL && e[0] != '\0' ? e : RON_CLIENT_DEFAULT_NODE;
}

int
ron_client_data_dir(const char *flag, char *out, size_t cap)
{
    const char *e;
    int n;

    if (flag != NULL) {
        if (flag[0] == '\0')
            return RON_EINVAL;
        n = snprintf(out, cap, "%s", flag);
    } else if ((e = getenv(RON_CLIENT_ENV_DATA_DIR)) != NULL && e[0] != '\0') {
        n = snprintf(out, cap, "%s", e);
    } else if ((e = getenv("XDG_DATA_HOME")) != NULL && e[0] != '\0') {
        n = snprintf(out, cap, "%s/ron", e);
    } else if ((e = getenv("HOME")) != NULL && e[0] != '\0') {
        n = snprintf(out, cap, "%s/.local/share/ron", e);
    } else {
        return RON_EINVAL;
    }
    return n < 0 || (size_t)n >= cap ? RON_ETOOBIG : 0;
}

/* Strip trailing whitespace (a token file usually ends with a newline). */
static char *
token_dup(const char *s, size_t len)
{
    char *t;
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' ||
                       s[len - 1] == '\t'))
        len--;
    if (len == 0)
        return NULL;
    t = ron_xmalloc(len + 1);
    memcpy(t, s, len);
    t[len] = '\0';
    return t;
}

int
ron_client_cap_find(const char *flag, const char *data_dir, char **cap_out)
{
    char path[RON_CLIENT_MAX_PATH + 32];
    char buf[RON_CLIENT_MAX_CAP + 2];
    const char *e;
    size_t len = 0;
    int fd, rc = 0;

    *cap_out = NULL;
    if (flag != NULL || ((e = getenv(RON_CLIENT_ENV_CAP)) != NULL && e[0] != '\0')) {
        const char *t = flag != NULL ? flag : e;
        if (strlen(t) > RON_CLIENT_MAX_CAP)
            return RON_ETOOBIG;
        *cap_out = token_dup(t, strlen(t));
        return 0;
    }
    if (data_dir == NULL)
        return 0;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", data_dir, RON_CLIENT_CAP_FILE) >= sizeof path)
        return RON_ETOOBIG;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT || errno == EACCES || errno == ENOTDIR || errno == EPERM ? 0
                                                                                          : -errno;
    while (len < sizeof buf) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > RON_CLIENT_MAX_CAP) {
        rc = RON_ETOOBIG;
        goto out;
    }
    *cap_out = token_dup(buf, len);
out:
    explicit_bzero(buf, sizeof buf); /* the token file's text */
    close(fd);
    return rc;
}

void
ron_client_idem_new(char out[static RON_CLIENT_IDEM_LEN + 1])
{
    uint8_t b[RON_CLIENT_IDEM_LEN / 2];
    if (ron_random_bytes(b, sizeof b) < 0) {
        /* Defensive: getrandom cannot fail on Linux >= 3.17; fall back to the PRNG. */
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (uint8_t)ron_rand_below(256);
    }
    ron_hex_encode(out, b, sizeof b);
}

int
rc__json_u64(const void *json_value, uint64_t *v_out)
{
    const json_t *v = json_value;
    if (json_is_string(v))
        return ron_parse_u64(json_string_value(v), json_string_length(v), v_out);
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *v_out = (uint64_t)json_integer_value(v);
        return 0;
    }
    return RON_EJSON;
}
