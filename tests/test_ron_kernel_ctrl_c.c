/*
 * test_ron_kernel_ctrl_c.c - ron_wait_for_ctrl_c on a real loop with real
 * signals: the first SIGTERM/SIGINT publishes SHUTDOWN on the kernel bus and
 * calls the owner once; a second signal is ignored; closing leaves the loop
 * empty.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "ron_ctrl_c.h"
#include "ron_err.h"

typedef struct {
    ron_ctrl_c_t *w;
    int calls;
    int signum;
    uv_timer_t t;
    int step;
} ctx_t;

static void
on_stop(void *arg, int signum)
{
    ctx_t *c = arg;
    c->calls++;
    c->signum = signum;
}

static void
tick(uv_timer_t *t)
{
    ctx_t *c = t->data;
    switch (c->step++) {
    case 0:
        kill(getpid(), c->signum == 0 ? SIGTERM : SIGINT);
        break;
    case 1:
        kill(getpid(), SIGINT); /* a second signal during the stop */
        break;
    default:
        ron_ctrl_c_close(c->w);
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    uv_timer_start(t, tick, 50, 0);
}

static void
test_ctrl_c_publishes_shutdown_and_calls_owner_once(void **state)
{
    uv_loop_t loop;
    ron_bus_t *bus = NULL;
    ron_bus_sub_t *sub = NULL;
    ron_kernel_event_t ev;
    ctx_t c = {0};
    int rc = 0;
    (void)state;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ron_bus_new(NULL, &bus), 0);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &sub), 0);
    c.w = ron_wait_for_ctrl_c(&loop, bus, on_stop, &c, &rc);
    assert_non_null(c.w);
    assert_int_equal(ron_ctrl_c_signalled(c.w), 0);
    uv_timer_init(&loop, &c.t);
    c.t.data = &c;
    uv_timer_start(&c.t, tick, 10, 0);
    uv_run(&loop, UV_RUN_DEFAULT);

    assert_int_equal(c.calls, 1);
    assert_int_equal(c.signum, SIGTERM);
    assert_int_equal(ron_bus_recv(sub, &ev), 0);
    assert_int_equal(ev.kind, RON_EV_SHUTDOWN);
    assert_int_equal(ron_bus_recv(sub, &ev), RON_EAGAIN); /* published once */
    ron_bus_unsubscribe(sub);
    ron_bus_free(bus);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_ctrl_c_without_bus_still_calls_owner(void **state)
{
    uv_loop_t loop;
    ctx_t c = {0};
    int rc = 0;
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    c.w = ron_wait_for_ctrl_c(&loop, NULL, on_stop, &c, &rc);
    assert_non_null(c.w);
    c.signum = -1; /* tick sends SIGINT first this time */
    uv_timer_init(&loop, &c.t);
    c.t.data = &c;
    uv_timer_start(&c.t, tick, 10, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.signum, SIGINT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctrl_c_publishes_shutdown_and_calls_owner_once),
        cmocka_unit_test(test_ctrl_c_without_bus_still_calls_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
