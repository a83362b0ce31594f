/*
 * cmd_client.h - what the `ron` client commands (put, get, stat, ls, pin,
 * unpin, gc, name, status, reload, release) share: option parsing, finding
 * the node and the capability (DESIGN.md §11), making a libron client, and
 * turning a libron failure into the one-line reason and exit code.
 */
#ifndef RON_CMD_CLIENT_H
#define RON_CMD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "libron.h"

#define CLI_MAX_POS 4       /* positional arguments a client command takes */
#define CLI_MAX_OPTS 8      /* command-specific options */
#define CLI_SEED_LEN 32     /* an Ed25519 seed */
#define CLI_KEYFILE_MAX 256 /* bytes of a seed file read: 64 hex digits and a newline fit */

/* Common options, and the command's own (--name VALUE or --name=VALUE; flags alone). */
typedef struct {
    const char *node;     /* --node [ID@]HOST:PORT */
    const char *cap;      /* --cap TOKEN */
    const char *data_dir; /* --data-dir DIR */
    const char *pos[CLI_MAX_POS];
    int n_pos;
    const char *names[CLI_MAX_OPTS];  /* the command's options, e.g. "-o", "--range" */
    bool takes_value[CLI_MAX_OPTS];
    const char *values[CLI_MAX_OPTS]; /* value given, or "" for a flag, or NULL */
    int n_opts;
} cli_opts_t;

/* Declare a command-specific option before cli_parse. */
void cli_opt(cli_opts_t *o, const char *name, bool takes_value);

/* The value of a declared option (NULL when not given; "" for a given flag). */
const char *cli_get(const cli_opts_t *o, const char *name);

/*
 * Parse argv[1..argc) (argv[0] is the command's name). --help/-h prints usage
 * on stdout and returns 1; bad usage prints it on stderr and returns -1;
 * else 0. "-" is a positional argument; "--" ends options.
 */
int cli_parse(cli_opts_t *o, int argc, char **argv, const char *usage);

/*
 * Make a client from o: node from --node, RON_NODE or the default; the
 * capability from --cap, RON_CAP or <data-dir>/operator.cap. Returns
 * RON_EXIT_OK with *c_out, or the exit code after printing a reason.
 */
int cli_client(const cli_opts_t *o, const char *what, ron_client_t **c_out);

/* Print "ron: what: slug: message" (or the local reason) for the failure rc
 * of c and return RON_EXIT_FAIL. */
int cli_fail(const ron_client_t *c, const char *what, int rc);

/*
 * Read the Ed25519 seed in the key file path (mode 0600 or tighter: no one
 * else may read it; 32 raw bytes, or 64 hex digits and trailing whitespace)
 * into seed (the caller's sodium memory). Needs sodium_init first. Prints
 * "ron: what: ..." and returns RON_EXIT_FAIL (unreadable, readable by others)
 * or RON_EXIT_USAGE (not a seed); else RON_EXIT_OK.
 */
int cli_seed_read(const char *what, const char *path, uint8_t seed[static CLI_SEED_LEN]);

/* Common lines for every client command's --help. */
#define CLI_COMMON_HELP                                                                            \
    "Node: --node [ID@]HOST:PORT, else $RON_NODE, else 127.0.0.1:9090 (the app port).\n"          \
    "Capability: --cap TOKEN, else $RON_CAP, else <data-dir>/operator.cap when readable\n"       \
    "(data dir: --data-dir DIR, else $RON_DATA_DIR, else $XDG_DATA_HOME/ron, else\n"            \
    "~/.local/share/ron). Exit codes: 0 ok, 1 operation failed, 2 bad usage or input.\n"

#endif
