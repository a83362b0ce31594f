/*
 * cmd.h - subcommands of the `ron` binary. Each takes argc/argv starting at
 * its own name and returns the process exit code: 0 success, 1 operation
 * failed (one-line reason on stderr), 2 bad usage or bad input.
 */
#ifndef RON_CMD_H
#define RON_CMD_H

enum { RON_EXIT_OK = 0, RON_EXIT_FAIL = 1, RON_EXIT_USAGE = 2 };

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} ron_cmd_t;

int cmd_version(int argc, char **argv);
int cmd_node(int argc, char **argv);
int cmd_service(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_reload(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_oap(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_pin(int argc, char **argv);
int cmd_unpin(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_name(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_cap(int argc, char **argv);
int cmd_cap_revoke(int argc, char **argv); /* `ron cap revoke` (cmd_cap_revoke.c) */
int cmd_registry(int argc, char **argv);
int cmd_passport(int argc, char **argv);

/* Print "ron: <msg>" to stderr and return code. */
int ron_cmd_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
