/*
 * cmd_client.c - plumbing shared by the `ron` client commands: option
 * parsing (common --node/--cap/--data-dir plus each command's own), making a
 * libron client as DESIGN.md §11 says, one-line failure reasons, and
 * reading the Ed25519 seed file of the commands that sign (name publish,
 * registry, passport login).
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"
#include "cmd_client.h"
#include "ron_err.h"
#include "ron_util.h"

void
cli_opt(cli_opts_t *o, const char *name, bool takes_value)
{
    if (o->n_opts >= CLI_MAX_OPTS)
        return; /* our bug: a command declares at most CLI_MAX_OPTS */
    o->names[o->n_opts] = name;
    o->takes_value[o->n_opts] = takes_value;
    o->values[o->n_opts] = NULL;
    o->n_opts++;
}

const char *
cli_get(const cli_opts_t *o, const char *name)
{
    for (int i = 0; i < o->n_opts; i++)
        if (strcmp(o->names[i], name) == 0)
            return o->values[i];
    return NULL;
}

/* Match argv[*i] against name ("--x VALUE" or "--x=VALUE"); set *val. */
static int
match(const char *name, bool takes_value, int argc, char **argv, int *i, const char **val)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '\0') {
        if (!takes_value) {
            *val = "";
            return 1;
        }
        if (*i + 1 >= argc)
            return -1;
        *val = argv[++*i];
        return 1;
    }
    if (a[n] == '=' && takes_value) {
        *val = a + n + 1;
        return 1;
    }
    return 0;
}

int
cli_parse(cli_opts_t *o, int argc, char **argv, const char *usage)
{
    bool opts_done = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m = 0;
        if (!opts_done && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            printf("%s", usage);
            return 1;
        }
        if (opts_done || a[0] != '-' || strcmp(a, "-") == 0) {
            if (o->n_pos >= CLI_MAX_POS)
                goto bad;
            o->pos[o->n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if ((m = match("--node", true, argc, argv, &i, &o->node)) == 0 &&
            (m = match("--cap", true, argc, argv, &i, &o->cap)) == 0 &&
            (m = match("--data-dir", true, argc, argv, &i, &o->data_dir)) == 0) {
            for (int k = 0; k < o->n_opts && m == 0; k++)
                m = match(o->names[k], o->takes_value[k], argc, argv, &i, &o->values[k]);
        }
        if (m <= 0) {
            fprintf(stderr, "ron %s: %s '%s'\n", argv[0],
                    m < 0 ? "missing value after" : "unknown option", a);
            goto bad;
        }
    }
    return 0;
bad:
    fprintf(stderr, "%s", usage);
    return -1;
}

int
cli_client(const cli_opts_t *o, const char *what, ron_client_t **c_out)
{
    ron_client_opts_t co = {0};
    char dir[RON_CLIENT_MAX_PATH];
    char *cap = NULL;
    int rc;

    co.node = ron_client_node_find(o->node);
    co.max_retries = -1;
    co.ua = "ron";
    if (o->data_dir != NULL && o->data_dir[0] == '\0')
        return ron_cmd_fail(RON_EXIT_USAGE, "%s: empty --data-dir", what);
    rc = ron_client_data_dir(o->data_dir, dir, sizeof dir);
    rc = ron_client_cap_find(o->cap, rc == 0 ? dir : NULL, &cap);
    if (rc == RON_ETOOBIG)
        return ron_cmd_fail(RON_EXIT_USAGE, "%s: capability longer than %u bytes", what,
                            RON_CLIENT_MAX_CAP);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s: cannot read %s/%s: %s", what, dir,
                            RON_CLIENT_CAP_FILE, ron_strerror(rc));
    co.cap = cap;
    rc = ron_client_new(&co, c_out);
    if (cap != NULL)
        explicit_bzero(cap, strlen(cap)); /* the client holds its own copy */
    free(cap);
    if (rc == RON_EINVAL)
        return ron_cmd_fail(RON_EXIT_USAGE, "%s: bad node address '%s' ([ID@]HOST:PORT)", what,
                            co.node);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s: %s", what, ron_strerror(rc));
    return RON_EXIT_OK;
}

int
cli_fail(const ron_client_t *c, const char *what, int rc)
{
    const ron_client_error_t *e = ron_client_last_error(c);

    if (e->status != 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s: %s: %s%s%s%s", what, e->slug, e->message,
                            e->reason[0] ? " (reason " : "", e->reason, e->reason[0] ? ")" : "");
    if (e->message[0] != '\0')
        return ron_cmd_fail(RON_EXIT_FAIL, "%s: %s%s", what, e->message,
                            e->attempts > 1 ? " (after retries)" : "");
    return ron_cmd_fail(RON_EXIT_FAIL, "%s: %s", what, ron_strerror(rc));
}

int
cli_seed_read(const char *what, const char *path, uint8_t seed[static CLI_SEED_LEN])
{
    uint8_t *buf = sodium_malloc(CLI_KEYFILE_MAX + 1);
    size_t len = 0;
    struct stat st;
    int fd = -1, rc = RON_EXIT_OK;

    if (buf == NULL)
        return ron_cmd_fail(RON_EXIT_FAIL, "%s: out of secure memory", what);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "%s: cannot open key %s: %s", what, path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
        rc = ron_cmd_fail(RON_EXIT_FAIL,
                          "%s: key %s must be a regular file no one else can read (chmod 600)",
                          what, path);
        goto out;
    }
    while (len <= CLI_KEYFILE_MAX) {
        ssize_t n = read(fd, buf + len, CLI_KEYFILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    if (len == CLI_SEED_LEN) {
        memcpy(seed, buf, CLI_SEED_LEN);
    } else {
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
            len--;
        if (len != 2 * CLI_SEED_LEN ||
            ron_hex_decode(seed, CLI_SEED_LEN, (const char *)buf, len) < 0)
            rc = ron_cmd_fail(RON_EXIT_USAGE,
                              "%s: key %s is not a 32-byte Ed25519 seed (raw or 64 hex digits)",
                              what, path);
    }
out:
    if (fd >= 0)
        close(fd);
    sodium_free(buf); /* wipes it */
    return rc;
}
