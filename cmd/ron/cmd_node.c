/*
 * cmd_node.c - `ron node` (run a node in the foreground) and `ron service
 * NAME` (how the kernel starts a child; not for people). DESIGN.md §11.
 * Flags become config overrides applied after the file and the environment
 * (DESIGN.md §8); `--set PATH=VALUE` reaches any key.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cmd.h"
#include "macronode.h"
#include "ron_config.h"
#include "ron_err.h"

extern char **environ;

#define NODE_MAX_FLAGS 64
#define NODE_MMAP_THRESHOLD (2u << 20) /* bytes: buffers below come from the heap */
#define NODE_TRIM_THRESHOLD (16u << 20) /* bytes of free heap top kept before trimming */

/*
 * Node processes move content in buffers of 64 KiB to 1 MiB (overlay piece
 * records, bus frames of up to 256 KiB of object bytes, app-port chunks),
 * one or more per request. With glibc's defaults each such buffer was either
 * a fresh mmap or a heap top that had just been trimmed: every request took
 * its pages from the kernel again (page faults, zeroing, munmap), which was
 * a quarter of a fetching micronode's loop-thread CPU (bench/results/xfer.md).
 * Fixed thresholds keep freed buffers for reuse; at most 16 MiB of free heap
 * top is kept. Object buffers of the RAM store map their own memory.
 */
static void
node_malloc_tune(void)
{
    (void)mallopt(M_MMAP_THRESHOLD, (int)NODE_MMAP_THRESHOLD);
    (void)mallopt(M_TRIM_THRESHOLD, (int)NODE_TRIM_THRESHOLD);
}

static void
node_usage(FILE *out)
{
    fprintf(out, "usage: ron node [--profile micro|macro] [--config FILE] [--data-dir DIR]\n"
                 "                [--admin ADDR] [--http ADDR] [--https ADDR] [--app ADDR]\n"
                 "                [--overlay ADDR] [--dht ADDR] [--advertise ADDR]\n"
                 "                [--seed [ID@]HOST:PORT]... [--amnesia|--no-amnesia]\n"
                 "                [--log-level LEVEL] [--set KEY=VALUE]...\n"
                 "\n"
                 "Run a node in the foreground; logs go to stderr as JSON lines. SIGHUP (or\n"
                 "`ron reload`) reloads the config; SIGINT/SIGTERM stop it within 2 s.\n"
                 "Settings come from built-in defaults, then --config FILE (JSON; unknown keys\n"
                 "are refused), then RON_* environment variables, then these flags.\n"
                 "Addresses are IPv4:port or [IPv6]:port; port 0 picks a free port.\n"
                 "\n"
                 "config keys (env name: RON_ + key in upper snake case; * = reloadable):\n");
    for (size_t i = 0;; i++) {
        const ron_config_key_info_t *k = ron_config_key_at(i);
        char env[96];
        if (k == NULL)
            break;
        ron_config_env_name(k->path, env, sizeof env);
        fprintf(out, "  %c %-32s %-8s %s\n", k->reloadable ? '*' : ' ', k->path, k->type, k->doc);
    }
    fprintf(out, "\nSee docs/runbooks/node.md and docs/runbooks/config.md.\n");
}

/* Flags that map straight onto a config key. */
static const struct {
    const char *flag;
    const char *key;
} flag_keys[] = {
    {"--profile", "profile"},     {"--data-dir", "data_dir"}, {"--admin", "admin"},
    {"--http", "http"},           {"--https", "https"},       {"--app", "app"},
    {"--overlay", "overlay"},     {"--dht", "dht"},           {"--advertise", "advertise"},
    {"--log-level", "log.level"},
};

/* Is a (possibly "--flag=value") a flag that takes a value? */
static bool
node_flag_known(const char *a)
{
    size_t n = strcspn(a, "=");
    static const char *const other[] = {"--config", "--seed", "--set"};
    for (size_t k = 0; k < sizeof flag_keys / sizeof flag_keys[0]; k++)
        if (strlen(flag_keys[k].flag) == n && strncmp(a, flag_keys[k].flag, n) == 0)
            return true;
    for (size_t k = 0; k < sizeof other / sizeof other[0]; k++)
        if (strlen(other[k]) == n && strncmp(a, other[k], n) == 0)
            return true;
    return false;
}

int
cmd_node(int argc, char **argv)
{
    ron_config_kv_t flags[NODE_MAX_FLAGS];
    size_t n_flags = 0;
    const char *file = NULL;

    node_malloc_tune();
    char seeds[RON_CONFIG_MAX_SEEDS * 160] = "";
    bool have_seeds = false;
    char err[RON_CONFIG_ERR_MAX + 64];
    char exe[4096];
    size_t exe_len = sizeof exe;
    ron_config_store_t *store = NULL;
    ron_config_src_t src;
    int rc;

    for (int i = 1; i < argc; i++) {
        char *a = argv[i], *val = NULL, *eq;
        bool matched = false;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            node_usage(stdout);
            return RON_EXIT_OK;
        }
        if (strcmp(a, "--amnesia") == 0 || strcmp(a, "--no-amnesia") == 0) {
            if (n_flags == NODE_MAX_FLAGS)
                return ron_cmd_fail(RON_EXIT_USAGE, "too many flags");
            flags[n_flags++] = (ron_config_kv_t){"amnesia", a[2] == 'a' ? "true" : "false"};
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            return ron_cmd_fail(RON_EXIT_USAGE, "unexpected argument '%s' (see ron node --help)",
                                a);
        eq = strchr(a, '=');
        if (!node_flag_known(a))
            return ron_cmd_fail(RON_EXIT_USAGE, "unknown flag '%s' (see ron node --help)", a);
        if (eq != NULL && strncmp(a, "--set", 5) != 0) {
            *eq = '\0';
            val = eq + 1;
        } else if (strcmp(a, "--set") == 0 || eq == NULL) {
            if (i + 1 >= argc)
                return ron_cmd_fail(RON_EXIT_USAGE, "%s needs a value", a);
            val = argv[++i];
        } else {
            return ron_cmd_fail(RON_EXIT_USAGE, "use --set KEY=VALUE");
        }
        if (n_flags == NODE_MAX_FLAGS)
            return ron_cmd_fail(RON_EXIT_USAGE, "too many flags");
        if (strcmp(a, "--config") == 0) {
            file = val;
            continue;
        }
        if (strcmp(a, "--seed") == 0) {
            size_t used = strlen(seeds);
            if (used + strlen(val) + 2 > sizeof seeds)
                return ron_cmd_fail(RON_EXIT_USAGE, "too many seeds");
            snprintf(seeds + used, sizeof seeds - used, "%s%s", have_seeds ? "," : "", val);
            have_seeds = true;
            continue;
        }
        if (strcmp(a, "--set") == 0) {
            char *e = strchr(val, '=');
            if (e == NULL)
                return ron_cmd_fail(RON_EXIT_USAGE, "--set needs KEY=VALUE");
            *e = '\0';
            flags[n_flags++] = (ron_config_kv_t){val, e + 1};
            continue;
        }
        for (size_t k = 0; k < sizeof flag_keys / sizeof flag_keys[0]; k++)
            if (strcmp(a, flag_keys[k].flag) == 0) {
                flags[n_flags++] = (ron_config_kv_t){flag_keys[k].key, val};
                matched = true;
            }
        if (!matched)
            return ron_cmd_fail(RON_EXIT_USAGE, "unknown flag '%s' (see ron node --help)", a);
    }
    if (have_seeds) {
        if (n_flags == NODE_MAX_FLAGS)
            return ron_cmd_fail(RON_EXIT_USAGE, "too many flags");
        flags[n_flags++] = (ron_config_kv_t){"seeds", seeds};
    }
    src = (ron_config_src_t){file, environ, flags, n_flags};
    rc = ron_config_store_new(&src, &store, err, sizeof err);
    if (rc < 0)
        return ron_cmd_fail(rc == RON_ECONFIG || rc == RON_ETOOBIG || rc == -ENOENT ? RON_EXIT_USAGE
                                                                                    : RON_EXIT_FAIL,
                            "%s", err);
    if (uv_exepath(exe, &exe_len) < 0) {
        ron_config_store_free(store);
        return ron_cmd_fail(RON_EXIT_FAIL, "cannot find my own executable");
    }
    return ron_node_run(store, exe);
}

int
cmd_service(int argc, char **argv)
{
    node_malloc_tune();
    if (argc != 2 || strncmp(argv[1], "-", 1) == 0) {
        fprintf(stderr, "usage: ron service NAME\n"
                        "Started by `ron node` for each supervised service; not for people.\n");
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    }
    return ron_service_run(argv[1]);
}
