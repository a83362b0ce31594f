/*
 * ryker_uv.c - libuv glue: wakes an actor on its loop when its mailbox gets
 * work. Producers signal a uv_async_t (coalesced by libuv); the callback
 * hands the mailbox to the actor and re-arms itself while messages remain
 * (or a close the actor has not yet seen from ryk_mailbox_recv),
 * so a consumer that takes a batch per turn still drains everything and
 * other handles on the loop get their turn in between.
 */
#include "ron_util.h"
#include "ryker.h"
#include "ryker_internal.h"

static void
on_async(uv_async_t *a)
{
    ryk_uv_t *u = ron_container_of(a, ryk_uv_t, async);
    if (u->mb == NULL)
        return; /* defensive: a wake-up that raced ryk_uv_close */
    u->cb(u, u->mb, u->arg);
    if (u->mb != NULL && ryk__mailbox_has_work(u->mb))
        uv_async_send(&u->async);
}

int
ryk_uv_init(ryk_uv_t *u, uv_loop_t *loop, ryk_mailbox_t *mb, ryk_uv_cb cb, void *arg)
{
    int rc = uv_async_init(loop, &u->async, on_async);
    if (rc < 0)
        return rc;
    u->mb = mb;
    u->cb = cb;
    u->arg = arg;
    u->close_cb = NULL;
    if (ryk__mailbox_bind(mb, &u->async))
        uv_async_send(&u->async);
    return 0;
}

static void
on_close(uv_handle_t *h)
{
    ryk_uv_t *u = ron_container_of((uv_async_t *)h, ryk_uv_t, async);
    if (u->close_cb != NULL)
        u->close_cb(u);
}

void
ryk_uv_close(ryk_uv_t *u, ryk_uv_close_cb close_cb)
{
    if (u->mb != NULL)
        ryk__mailbox_bind(u->mb, NULL);
    u->mb = NULL;
    u->close_cb = close_cb;
    uv_close((uv_handle_t *)&u->async, on_close);
}
