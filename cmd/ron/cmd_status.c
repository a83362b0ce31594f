/*
 * cmd_status.c - `ron status [--json]`, `ron reload`, `ron release SERVICE`:
 * kernel operations (app 6) on the node's app port through libron
 * (--node, RON_NODE, default 127.0.0.1:9090; capability as every client
 * command). With --admin ADDR, or RON_ADMIN set, they use the admin port's
 * HTTP routes instead (/admin/status, /admin/reload, /admin/release/NAME,
 * loopback only) - the path for nodes that run no app service.
 * The admin path is a small blocking HTTP/1.1 client: one request,
 * Connection: close, bounded response (STATUS_MAX_RESPONSE) and time
 * (STATUS_TIMEOUT_MS).
 */
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cmd.h"
#include "cmd_client.h"
#include "ron_config.h"
#include "ron_err.h"
#include "ron_util.h"

#define STATUS_MAX_RESPONSE (4u << 20) /* bytes of one admin answer */
#define STATUS_TIMEOUT_MS 5000         /* connect + request + answer */

typedef struct {
    int status;
    char *body; /* NUL-terminated, owned */
    size_t body_len;
} http_answer_t;

static int
wait_fd(int fd, short ev, uint64_t deadline)
{
    struct pollfd p = {fd, ev, 0};
    uint64_t now = ron_now_ms();
    int rc;
    if (now >= deadline)
        return RON_ETIMEOUT;
    rc = poll(&p, 1, (int)(deadline - now));
    if (rc == 0)
        return RON_ETIMEOUT;
    return rc < 0 ? -errno : 0;
}

/* One request to addr; fills ans. Returns 0 or a negative code with err set. */
static int
admin_request(const char *addr, const char *method, const char *path, http_answer_t *ans, char *err,
              size_t errcap)
{
    char host[RON_CONFIG_ADDR_MAX], port_s[8], req[512];
    struct addrinfo hints = {0}, *ai = NULL;
    uint64_t deadline = ron_now_ms() + STATUS_TIMEOUT_MS;
    char *buf = NULL, *hdr_end;
    size_t len = 0, cap = 0;
    int port, fd = -1, rc;
    uint64_t code;
    socklen_t sl = sizeof rc;

    memset(ans, 0, sizeof *ans);
    if (ron_addr_split(addr, host, sizeof host, &port) < 0) {
        snprintf(err, errcap, "bad admin address '%s' (HOST:PORT or [IPv6]:PORT)", addr);
        return RON_EINVAL;
    }
    snprintf(port_s, sizeof port_s, "%d", port);
    hints.ai_socktype = SOCK_STREAM;
    if ((rc = getaddrinfo(host, port_s, &hints, &ai)) != 0) {
        snprintf(err, errcap, "cannot resolve %s: %s", host, gai_strerror(rc));
        return RON_EINVAL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)) {
        rc = -errno;
        goto fail;
    }
    if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0)
        goto fail;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &rc, &sl) < 0 || rc != 0) {
        rc = rc != 0 ? -rc : -errno;
        goto fail;
    }
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", method,
             path, addr);
    for (size_t sent = 0; sent < strlen(req);) {
        ssize_t n = send(fd, req + sent, strlen(req) - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0)
                goto fail;
            continue;
        }
        if (n < 0) {
            rc = -errno;
            goto fail;
        }
        sent += (size_t)n;
    }
    for (;;) {
        ssize_t n;
        if (cap - len < 4096) {
            cap = cap == 0 ? 16384 : cap * 2;
            buf = ron_xrealloc(buf, cap);
        }
        n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EAGAIN) {
            if ((rc = wait_fd(fd, POLLIN, deadline)) < 0)
                goto fail;
            continue;
        }
        if (n < 0) {
            rc = -errno;
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > STATUS_MAX_RESPONSE) {
            rc = RON_ETOOBIG;
            goto fail;
        }
    }
    buf = ron_xrealloc(buf, len + 1);
    buf[len] = '\0';
    hdr_end = strstr(buf, "\r\n\r\n");
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || hdr_end == NULL ||
        ron_parse_u64(buf + 9, 3, &code) < 0) {
        rc = RON_EPROTO;
        goto fail;
    }
    ans->status = (int)code;
    ans->body_len = len - (size_t)(hdr_end + 4 - buf);
    ans->body = ron_xmalloc(ans->body_len + 1);
    memcpy(ans->body, hdr_end + 4, ans->body_len + 1);
    rc = 0;
    goto out;
fail:
    snprintf(err, errcap, "node at %s: %s", addr, ron_strerror(rc));
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}

/* Shared option parsing: --admin ADDR (or --admin=ADDR), --json; positional args out. */
typedef struct {
    const char *admin;
    bool json;
    const char *pos[4];
    int n_pos;
} admin_opts_t;

static int
admin_opts(int argc, char **argv, bool allow_json, admin_opts_t *o, const char *usage)
{
    memset(o, 0, sizeof *o);
    o->admin = getenv("RON_ADMIN");
    if (o->admin == NULL || o->admin[0] == '\0')
        o->admin = "127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", usage);
            return 1;
        } else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc) {
            o->admin = argv[++i];
        } else if (strncmp(argv[i], "--admin=", 8) == 0) {
            o->admin = argv[i] + 8;
        } else if (allow_json && strcmp(argv[i], "--json") == 0) {
            o->json = true;
        } else if (argv[i][0] != '-' && o->n_pos < 4) {
            o->pos[o->n_pos++] = argv[i];
        } else {
            fprintf(stderr, "%s", usage);
            return -1;
        }
    }
    return 0;
}

/* The "message" of an error envelope, or the body itself. */
static const char *
envelope_message(const http_answer_t *a, char *out, size_t cap)
{
    json_error_t je;
    json_t *j = json_loads(a->body, 0, &je);
    const char *m = json_string_value(json_object_get(j, "message"));
    snprintf(out, cap, "%s", m != NULL ? m : a->body);
    json_decref(j);
    return out;
}

static void
print_status(json_t *st)
{
    json_t *svcs = json_object_get(st, "services"), *s, *ready = json_object_get(st, "ready");
    size_t i;
    bool r = json_is_true(json_object_get(ready, "read"));
    bool w = json_is_true(json_object_get(ready, "write"));
    const char *why = json_string_value(json_object_get(st, "not_ready_reason"));
    const char *id = json_string_value(json_object_get(st, "node_id"));

    printf("node id   %s\n", id != NULL ? id : "(none yet)");
    printf("profile   %s\n", json_string_value(json_object_get(st, "profile")));
    printf("ready     reads %s, writes %s%s%s%s\n", r ? "yes" : "no", w ? "yes" : "no",
           why != NULL ? " (" : "", why != NULL ? why : "", why != NULL ? ")" : "");
    printf("config    version %s\n", json_string_value(json_object_get(st, "config_version")));
    printf("\n%-16s %8s  %-12s %-9s %8s  %s\n", "SERVICE", "PID", "STATE", "HEALTH", "RESTARTS",
           "LAST EXIT");
    json_array_foreach(svcs, i, s)
    {
        const char *le = json_string_value(json_object_get(s, "last_exit"));
        printf("%-16s %8lld  %-12s %-9s %8lld  %s\n", json_string_value(json_object_get(s, "name")),
               (long long)json_integer_value(json_object_get(s, "pid")),
               json_string_value(json_object_get(s, "state")),
               json_is_true(json_object_get(s, "healthy")) ? "healthy" : "unhealthy",
               (long long)json_integer_value(json_object_get(s, "restarts")),
               le != NULL && le[0] ? le : "-");
    }
}

static int
status_admin(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron status [--json] [--admin ADDR]\n"
        "Node id, profile, readiness, and each service with pid, state (running,\n"
        "restarting, quarantined), health and restart count. Reads the node's admin\n"
        "port: --admin ADDR, else $RON_ADMIN, else 127.0.0.1:8080.\n";
    admin_opts_t o;
    http_answer_t a;
    char err[256];
    json_error_t je;
    json_t *st;
    int rc = admin_opts(argc, argv, true, &o, usage);

    if (rc != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0) {
        fprintf(stderr, "%s", usage);
        return RON_EXIT_USAGE;
    }
    if (admin_request(o.admin, "GET", "/admin/status", &a, err, sizeof err) < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s", err);
    if (a.status != 200) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "status: HTTP %d: %s", a.status,
                          envelope_message(&a, err, sizeof err));
        free(a.body);
        return rc;
    }
    st = json_loads(a.body, 0, &je);
    if (st == NULL) {
        free(a.body);
        return ron_cmd_fail(RON_EXIT_FAIL, "status: malformed answer from the node");
    }
    if (o.json)
        printf("%s\n", a.body);
    else
        print_status(st);
    json_decref(st);
    free(a.body);
    return RON_EXIT_OK;
}

static int
reload_admin(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron reload [--admin ADDR]\n"
        "Ask the node to re-read its config (as SIGHUP does). An invalid config, or one\n"
        "changing a key that needs a restart, is refused and the old one stays.\n";
    admin_opts_t o;
    http_answer_t a;
    char err[512];
    json_error_t je;
    json_t *j;
    int rc = admin_opts(argc, argv, false, &o, usage);

    if (rc != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0) {
        fprintf(stderr, "%s", usage);
        return RON_EXIT_USAGE;
    }
    if (admin_request(o.admin, "POST", "/admin/reload", &a, err, sizeof err) < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s", err);
    if (a.status != 200) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "reload refused: %s",
                          envelope_message(&a, err, sizeof err));
        free(a.body);
        return rc;
    }
    j = json_loads(a.body, 0, &je);
    printf("%s: config version %s\n",
           json_is_true(json_object_get(j, "changed")) ? "reloaded" : "unchanged",
           json_string_value(json_object_get(j, "version")) != NULL
               ? json_string_value(json_object_get(j, "version"))
               : "?");
    json_decref(j);
    free(a.body);
    return RON_EXIT_OK;
}

static int
release_admin(int argc, char **argv)
{
    static const char usage[] = "usage: ron release SERVICE [--admin ADDR]\n"
                                "Let a quarantined service run again.\n";
    admin_opts_t o;
    http_answer_t a;
    char err[512], path[128];
    int rc = admin_opts(argc, argv, false, &o, usage);

    if (rc != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1 || strlen(o.pos[0]) >= RON_CONFIG_NAME_MAX ||
        strspn(o.pos[0], "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(o.pos[0])) {
        fprintf(stderr, "%s", usage);
        return RON_EXIT_USAGE;
    }
    snprintf(path, sizeof path, "/admin/release/%s", o.pos[0]);
    if (admin_request(o.admin, "POST", path, &a, err, sizeof err) < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s", err);
    if (a.status != 200) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "release %s: %s", o.pos[0],
                          envelope_message(&a, err, sizeof err));
        free(a.body);
        return rc;
    }
    printf("released %s\n", o.pos[0]);
    free(a.body);
    return RON_EXIT_OK;
}

/* ---- the app port (libron) ---- */

/* --admin given, or RON_ADMIN set: use the admin port's HTTP routes. */
static bool
use_admin(int argc, char **argv)
{
    const char *e = getenv("RON_ADMIN");
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--admin") == 0 || strncmp(argv[i], "--admin=", 8) == 0)
            return true;
    return e != NULL && e[0] != '\0';
}

int
cmd_status(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron status [--json] [--node ADDR] [--cap TOKEN] | [--admin ADDR]\n"
        "Node id, profile, readiness, and each service with pid, state (running,\n"
        "restarting, quarantined), health and restart count; --json prints the node's\n"
        "JSON. Asks the app port; with --admin ADDR (or $RON_ADMIN) the admin port.\n"
        CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    json_error_t je;
    json_t *st;
    char *json = NULL;
    int rc;

    if (use_admin(argc, argv))
        return status_admin(argc, argv);
    cli_opt(&o, "--json", false);
    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0) {
        fprintf(stderr, "%s", usage);
        return RON_EXIT_USAGE;
    }
    if ((rc = cli_client(&o, "status", &c)) != RON_EXIT_OK)
        return rc;
    rc = ron_client_status(c, &json);
    if (rc < 0) {
        rc = cli_fail(c, "status", rc);
        goto out;
    }
    st = json_loads(json, 0, &je);
    if (cli_get(&o, "--json") != NULL)
        printf("%s\n", json);
    else
        print_status(st);
    json_decref(st);
    rc = RON_EXIT_OK;
out:
    free(json);
    ron_client_free(c);
    return rc;
}

int
cmd_reload(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron reload [--node ADDR] [--cap TOKEN] | [--admin ADDR]\n"
        "Ask the node to re-read its config (as SIGHUP does). An invalid config, or one\n"
        "changing a key that needs a restart, is refused and the old one stays.\n"
        CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    uint64_t version = 0;
    bool changed = false;
    int rc;

    if (use_admin(argc, argv))
        return reload_admin(argc, argv);
    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0) {
        fprintf(stderr, "%s", usage);
        return RON_EXIT_USAGE;
    }
    if ((rc = cli_client(&o, "reload", &c)) != RON_EXIT_OK)
        return rc;
    rc = ron_client_reload(c, &changed, &version);
    if (rc < 0)
        rc = cli_fail(c, "reload refused", rc);
    else
        printf("%s: config version %llu\n", changed ? "reloaded" : "unchanged",
               (unsigned long long)version);
    ron_client_free(c);
    return rc < 0 ? RON_EXIT_FAIL : rc;
}

int
cmd_release(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron release SERVICE [--node ADDR] [--cap TOKEN] | [--admin ADDR]\n"
        "Let a quarantined service run again.\n" CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    char what[RON_CONFIG_NAME_MAX + 16];
    int rc;

    if (use_admin(argc, argv))
        return release_admin(argc, argv);
    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1 || strlen(o.pos[0]) >= RON_CONFIG_NAME_MAX ||
        strspn(o.pos[0], "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(o.pos[0])) {
        fprintf(stderr, "%s", usage);
        return RON_EXIT_USAGE;
    }
    if ((rc = cli_client(&o, "release", &c)) != RON_EXIT_OK)
        return rc;
    snprintf(what, sizeof what, "release %s", o.pos[0]);
    rc = ron_client_release(c, o.pos[0]);
    if (rc < 0)
        rc = cli_fail(c, what, rc);
    else
        printf("released %s\n", o.pos[0]);
    ron_client_free(c);
    return rc < 0 ? RON_EXIT_FAIL : rc;
}
