/*
 * cmd_content.c - the content commands of DESIGN.md §11 over libron:
 * `ron put FILE|-`, `ron get ADDR [-o FILE] [--range A-B]`, `ron stat ADDR`,
 * `ron ls`, `ron pin ADDR`, `ron unpin ADDR`, `ron pin ls`, `ron gc`.
 * Invariants: `ron put` prints only the address on stdout; `ron get -o FILE`
 * writes a temporary file beside FILE and renames it only after every byte
 * arrived and (for a whole object) verified, so a failed get never leaves a
 * partial file under the final name; bad usage or a malformed address exits
 * 2 before any network traffic.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"
#include "cmd_client.h"
#include "ron_err.h"
#include "ron_util.h"

static int
usage_fail(const char *usage)
{
    fprintf(stderr, "%s", usage);
    return RON_EXIT_USAGE;
}

static int
addr_arg(const char *what, const char *addr)
{
    if (ron_client_addr_check(addr) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE,
                            "%s: malformed address '%s' (b3: and 64 lowercase hex digits)", what,
                            addr);
    return RON_EXIT_OK;
}

int
cmd_put(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron put FILE|- [--content-type TYPE] [--node ADDR] [--cap TOKEN]\n"
        "Store FILE (or stdin with -), streamed, and print its address b3:<hex> (the\n"
        "BLAKE3 of the bytes, as b3sum prints it) and nothing else on stdout. The\n"
        "address the node answers is checked against the bytes sent. A file is sent\n"
        "again on a retry; stdin is not retried once bytes were sent.\n" CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    char addr[RON_CLIENT_ADDR_LEN + 1];
    int fd = -1, rc;

    cli_opt(&o, "--content-type", true);
    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1)
        return usage_fail(usage);
    if (strcmp(o.pos[0], "-") == 0) {
        fd = STDIN_FILENO;
    } else if ((fd = open(o.pos[0], O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
        return ron_cmd_fail(RON_EXIT_FAIL, "put: cannot open %s: %s", o.pos[0], strerror(errno));
    }
    if ((rc = cli_client(&o, "put", &c)) != RON_EXIT_OK)
        goto out;
    rc = ron_client_put_fd(c, fd, cli_get(&o, "--content-type"), addr, NULL);
    if (rc == RON_EINVAL)
        rc = ron_cmd_fail(RON_EXIT_USAGE, "put: %s", ron_client_last_error(c)->message);
    else if (rc < 0)
        rc = cli_fail(c, "put", rc);
    else
        rc = printf("%s\n", addr) < 0 || fflush(stdout) != 0
                 ? ron_cmd_fail(RON_EXIT_FAIL, "put: cannot write stdout")
                 : RON_EXIT_OK;
out:
    ron_client_free(c);
    if (fd > STDIN_FILENO)
        close(fd);
    return rc;
}

/*
 * 1 when path names something other than a regular file (a device such as
 * /dev/null, a FIFO, a socket): such a target is written in place, since
 * renaming a temporary file over it would replace the device or pipe itself.
 */
static bool
is_special_target(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

/* A temporary file beside path: "<dir>/.<base>.ron-XXXXXX". */
static int
temp_beside(const char *path, char *tmp, size_t cap)
{
    char *d = ron_xstrdup(path), *b = ron_xstrdup(path);
    int fd = -1, n = snprintf(tmp, cap, "%s/.%s.ron-XXXXXX", dirname(d), basename(b));

    if (n > 0 && (size_t)n < cap)
        fd = mkostemp(tmp, O_CLOEXEC);
    else
        errno = ENAMETOOLONG;
    free(d);
    free(b);
    return fd;
}

int
cmd_get(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron get ADDR [-o FILE] [--range A-B] [--node ADDR] [--cap TOKEN]\n"
        "Fetch the object ADDR (b3:<hex>) to stdout, or to FILE with -o: written to a\n"
        "temporary file beside FILE and renamed when complete, so a failed get leaves\n"
        "no partial FILE (a device or FIFO such as /dev/null is written in place). A whole object is verified against its address here; a\n"
        "range (--range A-B, inclusive byte offsets, or A- to the end) is verified by\n"
        "the node piece by piece.\n" CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    const char *out, *range;
    char tmp[4200];
    uint64_t off = 0, len = RON_CLIENT_TO_END;
    int fd = STDOUT_FILENO, rc;
    mode_t um;

    tmp[0] = '\0';
    cli_opt(&o, "-o", true);
    cli_opt(&o, "--range", true);
    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1)
        return usage_fail(usage);
    if ((rc = addr_arg("get", o.pos[0])) != RON_EXIT_OK)
        return rc;
    range = cli_get(&o, "--range");
    if (range != NULL && ron_client_range_parse(range, &off, &len) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "get: bad --range '%s' (A-B inclusive, or A-)",
                            range);
    out = cli_get(&o, "-o");
    if (out != NULL && out[0] == '\0')
        return ron_cmd_fail(RON_EXIT_USAGE, "get: empty -o FILE");
    if ((rc = cli_client(&o, "get", &c)) != RON_EXIT_OK)
        return rc;
    if (out != NULL && strcmp(out, "-") != 0 && is_special_target(out)) {
        fd = open(out, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = ron_cmd_fail(RON_EXIT_FAIL, "get: cannot open %s: %s", out, strerror(errno));
            goto out;
        }
    } else if (out != NULL && strcmp(out, "-") != 0) {
        fd = temp_beside(out, tmp, sizeof tmp);
        if (fd < 0) {
            rc = ron_cmd_fail(RON_EXIT_FAIL, "get: cannot create a file beside %s: %s", out,
                              strerror(errno));
            tmp[0] = '\0';
            goto out;
        }
    }
    rc = ron_client_get_fd(c, o.pos[0], off, len, fd, NULL);
    if (rc < 0) {
        rc = cli_fail(c, "get", rc);
        goto out;
    }
    if (tmp[0] != '\0') {
        um = umask(0);
        umask(um);
        if (fchmod(fd, 0666 & ~um) < 0 || close(fd) < 0 || rename(tmp, out) < 0) {
            fd = -1;
            rc = ron_cmd_fail(RON_EXIT_FAIL, "get: cannot write %s: %s", out, strerror(errno));
            goto out;
        }
        fd = -1;
        tmp[0] = '\0';
    }
    rc = RON_EXIT_OK;
out:
    if (fd > STDOUT_FILENO)
        close(fd);
    if (tmp[0] != '\0')
        unlink(tmp);
    ron_client_free(c);
    return rc;
}

static void
print_stat(const ron_client_stat_t *st)
{
    printf("address       %s\n", st->address);
    printf("size          %" PRIu64 "\n", st->size);
    printf("state         %s\n", st->state);
    printf("pins          %" PRIu64 "\n", st->pins);
    printf("created       %" PRIu64 "\n", st->created);
    if (st->content_type[0] != '\0')
        printf("content type  %s\n", st->content_type);
}

int
cmd_stat(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron stat ADDR [--node ADDR] [--cap TOKEN]\n"
        "Print the size, state (pinned or cache), this tenant's pin count, creation\n"
        "time and content type of the object ADDR.\n" CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    ron_client_stat_t st;
    int rc;

    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1)
        return usage_fail(usage);
    if ((rc = addr_arg("stat", o.pos[0])) != RON_EXIT_OK)
        return rc;
    if ((rc = cli_client(&o, "stat", &c)) != RON_EXIT_OK)
        return rc;
    rc = ron_client_stat(c, o.pos[0], &st);
    if (rc < 0)
        rc = cli_fail(c, "stat", rc);
    else
        print_stat(&st);
    ron_client_free(c);
    return rc < 0 ? RON_EXIT_FAIL : rc;
}

/* List every object page by page; pinned_only keeps those this tenant pinned. */
static int
list_all(ron_client_t *c, const char *what, bool pinned_only)
{
    ron_client_stat_t *items = ron_xcalloc(RON_CLIENT_MAX_LIST, sizeof *items);
    char next[RON_CLIENT_ADDR_LEN + 1], after[RON_CLIENT_ADDR_LEN + 1];
    bool first = true;
    size_t n;
    int rc = RON_EXIT_OK;

    /* Bounded: each page moves the cursor strictly forward through the object set. */
    for (;;) {
        int r = ron_client_list(c, first ? NULL : after, RON_CLIENT_MAX_LIST, items, &n, next);
        if (r < 0) {
            rc = cli_fail(c, what, r);
            break;
        }
        for (size_t i = 0; i < n; i++)
            if (!pinned_only || items[i].pins > 0) /* pins: this tenant's count */
                printf("%s %12" PRIu64 " %s\n", items[i].address, items[i].size, items[i].state);
        if (next[0] == '\0' || (!first && strcmp(next, after) <= 0))
            break;
        memcpy(after, next, sizeof after);
        first = false;
    }
    free(items);
    return rc;
}

int
cmd_ls(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron ls [--node ADDR] [--cap TOKEN]\n"
        "List the objects the node holds, one a line: address, size, state.\n" CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    int rc;

    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0)
        return usage_fail(usage);
    if ((rc = cli_client(&o, "ls", &c)) != RON_EXIT_OK)
        return rc;
    rc = list_all(c, "ls", false);
    ron_client_free(c);
    return rc;
}

static int
pin_cmd(int argc, char **argv, bool pin)
{
    static const char pin_usage[] =
        "usage: ron pin ADDR | ron pin ls   [--node ADDR] [--cap TOKEN]\n"
        "Pin the object ADDR for this tenant (pinned objects are never garbage\n"
        "collected) and print the tenant's pin count; `ron pin ls` lists the pinned\n"
        "objects. A node that lacks ADDR first fetches it whole from the nodes that\n"
        "provide it, verifying every piece (not_found: none does). Safe to retry: the\n"
        "node applies one pin per request, and a retry joins a fetch in "
        "progress.\n" CLI_COMMON_HELP;
    static const char unpin_usage[] =
        "usage: ron unpin ADDR [--node ADDR] [--cap TOKEN]\n"
        "Drop one pin of this tenant on ADDR and print the count left.\n" CLI_COMMON_HELP;
    const char *usage = pin ? pin_usage : unpin_usage, *what = pin ? "pin" : "unpin";
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    uint64_t pins = 0;
    int rc;

    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1)
        return usage_fail(usage);
    if (pin && strcmp(o.pos[0], "ls") == 0) {
        if ((rc = cli_client(&o, "pin ls", &c)) != RON_EXIT_OK)
            return rc;
        rc = list_all(c, "pin ls", true);
        ron_client_free(c);
        return rc;
    }
    if ((rc = addr_arg(what, o.pos[0])) != RON_EXIT_OK)
        return rc;
    if ((rc = cli_client(&o, what, &c)) != RON_EXIT_OK)
        return rc;
    rc = pin ? ron_client_pin(c, o.pos[0], &pins) : ron_client_unpin(c, o.pos[0], &pins);
    if (rc < 0)
        rc = cli_fail(c, what, rc);
    else
        printf("%s %s: %" PRIu64 " pin%s\n", pin ? "pinned" : "unpinned", o.pos[0], pins,
               pins == 1 ? "" : "s");
    ron_client_free(c);
    return rc < 0 ? RON_EXIT_FAIL : rc;
}

int
cmd_pin(int argc, char **argv)
{
    return pin_cmd(argc, argv, true);
}

int
cmd_unpin(int argc, char **argv)
{
    return pin_cmd(argc, argv, false);
}

int
cmd_gc(int argc, char **argv)
{
    static const char usage[] =
        "usage: ron gc [--target BYTES] [--node ADDR] [--cap TOKEN]\n"
        "Evict unpinned (cache) objects, oldest first, until BYTES are freed (default:\n"
        "every unpinned object), and print the bytes freed. Safe to retry.\n" CLI_COMMON_HELP;
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    const char *t;
    uint64_t target = UINT64_MAX, freed = 0;
    int rc;

    cli_opt(&o, "--target", true);
    if ((rc = cli_parse(&o, argc, argv, usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0)
        return usage_fail(usage);
    t = cli_get(&o, "--target");
    if (t != NULL && ron_parse_u64(t, strlen(t), &target) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "gc: bad --target '%s' (a byte count)", t);
    if ((rc = cli_client(&o, "gc", &c)) != RON_EXIT_OK)
        return rc;
    rc = ron_client_gc(c, target, &freed);
    if (rc < 0)
        rc = cli_fail(c, "gc", rc);
    else
        printf("freed %" PRIu64 " bytes\n", freed);
    ron_client_free(c);
    return rc < 0 ? RON_EXIT_FAIL : rc;
}
