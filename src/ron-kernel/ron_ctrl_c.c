/*
 * ron_ctrl_c.c - ron_wait_for_ctrl_c: SIGINT/SIGTERM -> SHUTDOWN on the
 * kernel bus -> the owner's stop callback, once.
 * Invariants: the callback runs at most once; the memory is freed only in
 * the close callback of the last of the two signal handles.
 */
#include <signal.h>
#include <stdlib.h>

#include "ron_ctrl_c.h"
#include "ron_util.h"

struct ron_ctrl_c {
    uv_signal_t sig_int;
    uv_signal_t sig_term;
    ron_bus_t *bus;
    ron_ctrl_c_cb cb;
    void *arg;
    int signalled;
    int open; /* handles not yet closed */
};

static void
ctrl_c_fired(uv_signal_t *h, int signum)
{
    ron_ctrl_c_t *w = h->data;
    ron_kernel_event_t ev;
    if (w->signalled)
        return;
    w->signalled = signum;
    if (w->bus != NULL) {
        ron_kernel_event_shutdown(&ev);
        ron_bus_publish(w->bus, &ev);
    }
    w->cb(w->arg, signum);
}

static void
ctrl_c_closed(uv_handle_t *h)
{
    ron_ctrl_c_t *w = h->data;
    if (--w->open == 0)
        free(w);
}

ron_ctrl_c_t *
ron_wait_for_ctrl_c(uv_loop_t *loop, ron_bus_t *bus, ron_ctrl_c_cb cb, void *arg, int *rc_out)
{
    ron_ctrl_c_t *w = ron_xcalloc(1, sizeof *w);
    int rc;

    w->bus = bus;
    w->cb = cb;
    w->arg = arg;
    uv_signal_init(loop, &w->sig_int);
    uv_signal_init(loop, &w->sig_term);
    w->sig_int.data = w->sig_term.data = w;
    w->open = 2;
    if ((rc = uv_signal_start(&w->sig_int, ctrl_c_fired, SIGINT)) < 0 ||
        (rc = uv_signal_start(&w->sig_term, ctrl_c_fired, SIGTERM)) < 0) {
        ron_ctrl_c_close(w);
        *rc_out = rc;
        return NULL;
    }
    return w;
}

int
ron_ctrl_c_signalled(const ron_ctrl_c_t *w)
{
    return w->signalled;
}

void
ron_ctrl_c_close(ron_ctrl_c_t *w)
{
    if (w == NULL)
        return;
    uv_close((uv_handle_t *)&w->sig_int, ctrl_c_closed);
    uv_close((uv_handle_t *)&w->sig_term, ctrl_c_closed);
}
