/*
 * ron_ctrl_c.h - ron_wait_for_ctrl_c, the frozen kernel API's shutdown
 * trigger (DESIGN.md §3), for a libuv loop: the first SIGINT or SIGTERM
 * publishes SHUTDOWN on the kernel bus and tells the owner to stop; the
 * owner then stops its services (the node: in reverse start order within
 * supervisor.stop_timeout_ms) and exits 0. Nothing here blocks the loop.
 */
#ifndef RON_CTRL_C_H
#define RON_CTRL_C_H

#include <uv.h>

#include "ron_kernel.h"

typedef struct ron_ctrl_c ron_ctrl_c_t;

/* Called once, on the loop thread, with the signal that asked to stop. */
typedef void (*ron_ctrl_c_cb)(void *arg, int signum);

/*
 * Watch for SIGINT and SIGTERM on loop. On the first one, publish SHUTDOWN
 * on bus (borrowed; may be NULL) and call cb(arg, signum); later signals are
 * ignored (a second Ctrl-C does not cut a clean stop short). Returns a new
 * watcher, or NULL with *rc_out set to a libuv error. Loop thread only.
 */
ron_ctrl_c_t *ron_wait_for_ctrl_c(uv_loop_t *loop, ron_bus_t *bus, ron_ctrl_c_cb cb, void *arg,
                                  int *rc_out);

/* The signal that asked to stop, or 0 while none has. */
int ron_ctrl_c_signalled(const ron_ctrl_c_t *w);

/* Stop watching and free w once libuv has closed its handles. NULL is a no-op. */
void ron_ctrl_c_close(ron_ctrl_c_t *w);

#endif
