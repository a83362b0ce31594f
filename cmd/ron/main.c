/*
 * main.c - the `ron` command: dispatch to a subcommand (DESIGN.md §11).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "ron_build_info.h"

static const ron_cmd_t commands[] = {
    {"version", cmd_version, "print version, commit and build type"},
    {"node", cmd_node, "run a node in the foreground (ron node --help)"},
    {"service", cmd_service, "run one service under the kernel (started by ron node)"},
    {"status", cmd_status, "node id, profile, readiness and services of a running node"},
    {"reload", cmd_reload, "make a running node re-read its config"},
    {"release", cmd_release, "let a quarantined service run again"},
    {"oap", cmd_oap, "decode / encode raw OAP/1 frames (debugging the wire)"},
    {"key", cmd_key, "show the node id and public keys (ron key show [--json])"},
    {"put", cmd_put, "store a file (or stdin) and print its address b3:<hex>"},
    {"get", cmd_get, "fetch an object by address, verified (-o FILE, --range A-B)"},
    {"stat", cmd_stat, "size, state and pins of an object"},
    {"ls", cmd_ls, "list the objects a node holds"},
    {"pin", cmd_pin, "pin an object for this tenant (ron pin ls lists pins)"},
    {"unpin", cmd_unpin, "drop a pin"},
    {"gc", cmd_gc, "evict unpinned objects (--target BYTES)"},
    {"name", cmd_name, "publish and resolve names (ron name publish|resolve)"},
    {"audit", cmd_audit, "check an audit log and its signed checkpoints (ron audit verify [FILE])"},
    {"cap", cmd_cap, "attenuate and check capabilities offline (ron cap attenuate|verify)"},
};

int
ron_cmd_fail(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("ron: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: ron <command> [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`ron <command> --help` describes one command.\n"
                 "Exit codes: 0 success, 1 operation failed, 2 bad usage or input.\n");
}

int
cmd_version(int argc, char **argv)
{
    (void)argc, (void)argv;
    printf("ron %s (commit %s, %s build)\n", RON_VERSION_STRING, RON_GIT_COMMIT, RON_BUILD_TYPE);
    return RON_EXIT_OK;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return RON_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return RON_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "ron: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return RON_EXIT_USAGE;
}
