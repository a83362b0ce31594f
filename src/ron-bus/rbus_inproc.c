/*
 * rbus_inproc.c - ron-bus in-process transport (micronode): endpoints that
 * share a hub on one loop exchange frames through in-memory queues.
 *
 * A connection is a pair of inproc_conn_t joined by ->other. Sending encodes
 * the frame once into a message on the receiver's inbox (the one copy: the
 * sender's payload is borrowed), or, for rbus_respond_owned, writes the
 * header into the sender's own block before its payload and queues that
 * block (no copy); the hub's idle handle delivers inboxes on a later loop
 * turn, in order, at most INPROC_BATCH frames a turn. While a frame is
 * being delivered, rbus_frame_take hands its block to the callback, which
 * then frees it (no copy on the receiving side either). The sender's
 * q_bytes/q_frames are its messages still in the receiver's inbox.
 * Invariants: a closing side's messages already queued are delivered before
 * the other side learns of the close; an inproc_conn_t is in the hub's ready
 * list only while it has something to deliver and is reading.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rbus_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define INPROC_BATCH 256u /* frames delivered per connection per loop turn: fairness */

typedef struct inproc_msg_s {
    struct inproc_msg_s *next;
    size_t len;    /* frame bytes at data */
    uint8_t *data; /* the frame: inline[] below, or inside own */
    void *own;     /* the sender's block holding the frame (send_owned), or NULL */
    uint8_t inline_data[];
} inproc_msg_t;

/* The message being delivered on this thread (rbus_frame_take), and whether
 * its block was taken. Thread-local: each loop (hub) runs on one thread. */
static _Thread_local inproc_msg_t *deliver_cur;
static _Thread_local bool deliver_taken;

/* Free message m, whose block own (m->own, read before m's delivery: a
 * taken inline message is the receiver's, maybe freed already) goes too
 * unless the receiver took it. */
static void
msg_free(inproc_msg_t *m, void *own, bool taken)
{
    if (own != NULL) {
        if (!taken)
            free(own);
        free(m);
    } else if (!taken) {
        free(m);
    }
}

void *
rbus__inproc_frame_take(const oap_frame_t *f)
{
    inproc_msg_t *m = deliver_cur;

    if (m == NULL || deliver_taken || f->payload < m->data || f->payload > m->data + m->len)
        return NULL;
    deliver_taken = true;
    return m->own != NULL ? m->own : (void *)m;
}

typedef struct inproc_conn_s {
    rbus_conn_t base;
    rbus_hub_t *hub;
    struct inproc_conn_s *other;        /* NULL once the other side closed */
    struct inproc_conn_s *rprev, *rnext; /* hub ready list */
    bool ready;
    bool other_gone;                    /* report loss once the inbox drains */
    inproc_msg_t *head, *tail;          /* inbox */
    uint32_t max_frame;
} inproc_conn_t;

struct rbus_hub_s {
    uv_loop_t *loop;
    uv_idle_t idle;
    rbus_t *listeners;                  /* by hub_next */
    inproc_conn_t *ready, *ready_tail; /* FIFO of connections with work */
    uint32_t nready;
};

static void hub_idle_cb(uv_idle_t *idle);

static void
hub_ready_add(inproc_conn_t *c)
{
    rbus_hub_t *h = c->hub;

    if (c->ready || !c->base.reading || (c->head == NULL && !c->other_gone))
        return;
    c->ready = true;
    c->rnext = NULL;
    c->rprev = h->ready_tail;
    if (h->ready_tail != NULL)
        h->ready_tail->rnext = c;
    else
        h->ready = c;
    h->ready_tail = c;
    h->nready++;
    uv_idle_start(&h->idle, hub_idle_cb);
}

static void
hub_ready_remove(inproc_conn_t *c)
{
    rbus_hub_t *h = c->hub;

    if (!c->ready)
        return;
    if (c->rprev != NULL)
        c->rprev->rnext = c->rnext;
    else
        h->ready = c->rnext;
    if (c->rnext != NULL)
        c->rnext->rprev = c->rprev;
    else
        h->ready_tail = c->rprev;
    c->rprev = c->rnext = NULL;
    c->ready = false;
    h->nready--;
}

static void
inbox_free(inproc_conn_t *c)
{
    inproc_msg_t *m;

    while ((m = c->head) != NULL) {
        c->head = m->next;
        if (c->other != NULL) {
            c->other->base.q_bytes -= m->len;
            c->other->base.q_frames--;
        }
        msg_free(m, m->own, false);
    }
    c->tail = NULL;
}

static void
conn_destroy(inproc_conn_t *c)
{
    hub_ready_remove(c);
    inbox_free(c);
    if (c->other != NULL) {
        c->other->other = NULL;
        c->other->other_gone = true;
        c->other->base.q_bytes = 0;
        c->other->base.q_frames = 0;
        if (c->other->base.peer != NULL)
            rbus__conn_drained(&c->other->base); /* a paused side must still hear the loss */
        hub_ready_add(c->other);
    }
    free(c);
}

/* Deliver up to INPROC_BATCH frames of c's inbox. Returns true if c still has work. */
static bool
conn_deliver(inproc_conn_t *c)
{
    for (uint32_t n = 0; n < INPROC_BATCH; n++) {
        inproc_msg_t *m = c->head;
        oap_frame_t f;
        ssize_t r;
        int rc;

        if (m == NULL) {
            if (c->other_gone) {
                rbus__conn_lost(&c->base, RON_ECLOSED);
                conn_destroy(c);
            }
            return false;
        }
        c->head = m->next;
        if (c->head == NULL)
            c->tail = NULL;
        if (c->other != NULL) {
            c->other->base.q_bytes -= m->len;
            c->other->base.q_frames--;
            if (c->other->base.peer != NULL)
                rbus__conn_drained(&c->other->base);
        }
        r = oap_frame_parse(m->data, m->len, c->max_frame, &f);
        if (r < 0) {
            rbus__conn_proto_error(&c->base, (int)r);
            msg_free(m, m->own, false);
            return false;
        }
        {
            inproc_msg_t *prev_cur = deliver_cur; /* defensive: deliveries never nest */
            bool prev_taken = deliver_taken, taken;
            void *own = m->own;
            deliver_cur = m;
            deliver_taken = false;
            rc = rbus__conn_frame(&c->base, &f, m->len);
            taken = deliver_taken;
            deliver_cur = prev_cur;
            deliver_taken = prev_taken;
            msg_free(m, own, taken);
        }
        if (rc < 0 || !c->base.reading)
            return false;
    }
    return true;
}

static void
hub_idle_cb(uv_idle_t *idle)
{
    rbus_hub_t *h = ron_container_of(idle, rbus_hub_t, idle);
    uint32_t n = h->nready;

    /* Round robin: each connection ready now gets one batch; any that stays
     * busy goes to the back, and connections that become ready wait a turn. */
    while (n-- > 0 && h->ready != NULL) {
        inproc_conn_t *c = h->ready;
        hub_ready_remove(c);
        if (conn_deliver(c))
            hub_ready_add(c);
    }
    if (h->ready == NULL)
        uv_idle_stop(&h->idle);
}

/* Queue m on c's peer's inbox. */
static void
inbox_push(inproc_conn_t *c, inproc_msg_t *m)
{
    rbus_conn_t *base = &c->base;
    inproc_conn_t *o = c->other;

    m->next = NULL;
    if (o->tail != NULL)
        o->tail->next = m;
    else
        o->head = m;
    o->tail = m;
    base->q_bytes += m->len;
    base->q_frames++;
    hub_ready_add(o);
}

static void
inproc_send(rbus_conn_t *base, const uint8_t hdr[static OAP_HDR_LEN], const void *payload,
            size_t len)
{
    inproc_conn_t *c = ron_container_of(base, inproc_conn_t, base);
    inproc_msg_t *m;

    if (c->other == NULL)
        return; /* the loss reaches the core through other_gone */
    m = ron_xmalloc(sizeof *m + OAP_HDR_LEN + len);
    m->own = NULL;
    m->data = m->inline_data;
    m->len = OAP_HDR_LEN + len;
    memcpy(m->data, hdr, OAP_HDR_LEN);
    if (len > 0)
        memcpy(m->data + OAP_HDR_LEN, payload, len);
    inbox_push(c, m);
}

static void
inproc_send_owned(rbus_conn_t *base, const uint8_t hdr[static OAP_HDR_LEN], void *buf,
                  uint8_t *payload, size_t len)
{
    inproc_conn_t *c = ron_container_of(base, inproc_conn_t, base);
    inproc_msg_t *m;

    if (c->other == NULL) {
        free(buf);
        return; /* the loss reaches the core through other_gone */
    }
    m = ron_xmalloc(sizeof *m);
    m->own = buf;
    m->data = payload - OAP_HDR_LEN; /* the caller left RBUS_HEADROOM (= OAP_HDR_LEN) free */
    m->len = OAP_HDR_LEN + len;
    memcpy(m->data, hdr, OAP_HDR_LEN);
    inbox_push(c, m);
}

static void
inproc_close(rbus_conn_t *base, bool flush)
{
    (void)flush; /* queued messages sit in the other side's inbox and are delivered anyway */
    conn_destroy(ron_container_of(base, inproc_conn_t, base));
}

static void
inproc_set_reading(rbus_conn_t *base, bool on)
{
    inproc_conn_t *c = ron_container_of(base, inproc_conn_t, base);

    base->reading = on;
    if (on)
        hub_ready_add(c);
    else
        hub_ready_remove(c);
}

static void
inproc_set_max_frame(rbus_conn_t *base, uint32_t max_frame)
{
    ron_container_of(base, inproc_conn_t, base)->max_frame = max_frame;
}

static const rbus_conn_ops_t inproc_ops = {inproc_send, inproc_close, inproc_set_reading,
                                           inproc_set_max_frame, inproc_send_owned};
_Static_assert(RBUS_HEADROOM == OAP_HDR_LEN, "RBUS_HEADROOM is the frame header");

static inproc_conn_t *
inproc_conn_new(rbus_hub_t *h, uint32_t max_frame)
{
    inproc_conn_t *c = ron_xcalloc(1, sizeof *c);

    c->base.ops = &inproc_ops;
    c->hub = h;
    c->max_frame = max_frame;
    return c;
}

rbus_hub_t *
rbus_hub_new(uv_loop_t *loop)
{
    rbus_hub_t *h = ron_xcalloc(1, sizeof *h);

    h->loop = loop;
    uv_idle_init(loop, &h->idle);
    return h;
}

static void
hub_closed_cb(uv_handle_t *handle)
{
    free(ron_container_of(handle, rbus_hub_t, idle));
}

void
rbus_hub_free(rbus_hub_t *h)
{
    if (h != NULL)
        uv_close((uv_handle_t *)&h->idle, hub_closed_cb);
}

int
rbus__inproc_listen(rbus_t *b)
{
    for (rbus_t *l = b->hub->listeners; l != NULL; l = l->hub_next)
        if (strcmp(l->name, b->name) == 0)
            return RON_EBUSY;
    b->hub_next = b->hub->listeners;
    b->hub->listeners = b;
    return 0;
}

void
rbus__inproc_unlisten(rbus_t *b)
{
    for (rbus_t **l = &b->hub->listeners; *l != NULL; l = &(*l)->hub_next)
        if (*l == b) {
            *l = b->hub_next;
            break;
        }
}

int
rbus__inproc_connect(rbus_peer_t *p)
{
    rbus_t *b = p->bus, *srv = NULL;
    inproc_conn_t *cc, *sc;

    for (rbus_t *l = b->hub->listeners; l != NULL; l = l->hub_next)
        if (strcmp(l->name, p->name) == 0)
            srv = l;
    if (srv == NULL || srv->closing)
        return RON_EUNAVAIL;
    cc = inproc_conn_new(b->hub, b->max_frame);
    sc = inproc_conn_new(b->hub, srv->max_frame);
    cc->other = sc;
    sc->other = cc;
    cc->base.peer = p;
    p->conn = &cc->base;
    rbus__conn_accepted(srv, &sc->base, getuid(), getpid());
    rbus__conn_connected(&cc->base, 0, getuid(), getpid());
    return 0;
}
