/*
 * oap_stream.c - per-connection stream bookkeeping (spec §2.1): open streams
 * bounded by max_inflight per side, START/END state per direction, and
 * credit-based flow control in frames. Pure: the caller moves the bytes.
 * Invariants: a stream exists from its REQ|START until both directions have
 * ended; per stream, recv_credit + frames received but not yet consumed never
 * exceeds the window, so a receiver buffers at most `window` frames of a
 * stream; a sender never sends more frames than it has credit for.
 */
#include <stdlib.h>
#include <string.h>

#include "oap.h"
#include "ron_err.h"
#include "ron_util.h"

/* Home slot: murmur3's 64-bit finalizer, so sequential or shifted ids spread.
 * A peer choosing colliding ids only lengthens probes within the bounded table. */
static uint32_t
slot_of(const oap_streams_t *t, uint64_t corr_id, bool mine)
{
    uint64_t h = corr_id ^ (mine ? 0x9e3779b97f4a7c15ULL : 0);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return (uint32_t)h & (t->nslots - 1);
}

void
oap_streams_init(oap_streams_t *t, uint32_t max_inflight, uint32_t window)
{
    uint32_t n = 8;

    memset(t, 0, sizeof *t);
    if (max_inflight == 0)
        max_inflight = 1;
    if (window < 2)
        window = 2;
    /* Both sides may hold max_inflight streams; keep the load at or below 1/2. */
    while (n < 4u * max_inflight)
        n *= 2;
    t->slots = ron_xcalloc(n, sizeof *t->slots);
    t->nslots = n;
    t->max_inflight = max_inflight;
    t->window = window;
}

void
oap_streams_close(oap_streams_t *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static oap_stream_t *
find(const oap_streams_t *t, uint64_t corr_id, bool mine)
{
    for (uint32_t i = slot_of(t, corr_id, mine), k = 0; k < t->nslots;
         i = (i + 1) & (t->nslots - 1), k++) {
        oap_stream_t *s = &t->slots[i];
        if (!s->used)
            return NULL;
        if (s->corr_id == corr_id && s->mine == mine)
            return s;
    }
    return NULL;
}

const oap_stream_t *
oap_streams_find(const oap_streams_t *t, uint64_t corr_id, bool mine)
{
    return find(t, corr_id, mine);
}

static oap_stream_t *
insert(oap_streams_t *t, uint64_t corr_id, bool mine)
{
    uint32_t i = slot_of(t, corr_id, mine);

    /* Cannot loop forever: the count limits keep the table at most half full. */
    while (t->slots[i].used)
        i = (i + 1) & (t->nslots - 1);
    oap_stream_t *s = &t->slots[i];
    memset(s, 0, sizeof *s);
    s->used = true;
    s->corr_id = corr_id;
    s->mine = mine;
    if (mine)
        t->n_mine++;
    else
        t->n_theirs++;
    return s;
}

/* Remove s with backward-shift deletion (no tombstones). */
static void
erase(oap_streams_t *t, oap_stream_t *s)
{
    uint32_t mask = t->nslots - 1;
    uint32_t i = (uint32_t)(s - t->slots), j = i;

    if (s->mine)
        t->n_mine--;
    else
        t->n_theirs--;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->slots[j].used)
            break;
        uint32_t home = slot_of(t, t->slots[j].corr_id, t->slots[j].mine);
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    memset(&t->slots[i], 0, sizeof t->slots[i]);
}

void
oap_streams_remove(oap_streams_t *t, uint64_t corr_id, bool mine)
{
    oap_stream_t *s = find(t, corr_id, mine);
    if (s != NULL)
        erase(t, s);
}

/* Role check shared by recv and send: exactly one of REQ and RESP. */
static bool
has_one_role(uint16_t flags)
{
    return ((flags & OAP_F_REQ) != 0) != ((flags & OAP_F_RESP) != 0);
}

/*
 * Apply frame f to the table. towards_us: f was received. Credit is checked
 * on recv_credit (received) or send_credit (sent).
 */
static int
account(oap_streams_t *t, const oap_frame_t *f, bool towards_us)
{
    bool from_opener = (f->flags & OAP_F_REQ) != 0;
    /* mine: this side opened the stream. A frame from the opener that we send
     * means we opened it; one we receive means the peer did. */
    bool mine = towards_us ? !from_opener : from_opener;
    oap_stream_t *s;
    uint32_t *credit;
    uint8_t *dir;

    if ((f->flags & (OAP_F_REQ | OAP_F_RESP | OAP_F_START | OAP_F_END)) == 0 &&
        (f->flags & OAP_F_EVENT) != 0)
        return 0; /* a standalone event: fire-and-forget, belongs to no stream */
    if (!has_one_role(f->flags))
        return RON_ESTREAM;
    s = find(t, f->corr_id, mine);
    if (f->flags & OAP_F_START) {
        if (!from_opener || s != NULL)
            return RON_ESTREAM; /* RESP|START, or duplicate START */
        if ((mine ? t->n_mine : t->n_theirs) >= t->max_inflight)
            return RON_EBUSY;
        s = insert(t, f->corr_id, mine);
        s->app_proto_id = f->app_proto_id;
        s->req = OAP_DIR_OPEN;
        s->send_credit = t->window;
        s->recv_credit = t->window;
    } else if (s == NULL) {
        return RON_ESTREAM; /* data before START (or after the stream finished) */
    }
    dir = from_opener ? &s->req : &s->resp;
    if (*dir == OAP_DIR_ENDED)
        return RON_ESTREAM;
    credit = towards_us ? &s->recv_credit : &s->send_credit;
    if (*credit == 0) {
        if (!towards_us)
            return RON_EAGAIN; /* wait for a credit frame; nothing changed */
        return RON_ECREDIT;
    }
    (*credit)--;
    *dir = (f->flags & OAP_F_END) ? OAP_DIR_ENDED : OAP_DIR_OPEN;
    if (s->req == OAP_DIR_ENDED && s->resp == OAP_DIR_ENDED)
        erase(t, s);
    return 0;
}

int
oap_streams_recv(oap_streams_t *t, const oap_frame_t *f)
{
    uint32_t frames;
    oap_stream_t *s;
    int rc;

    if (f->app_proto_id == OAP_APP_CONTROL) {
        rc = oap_credit_parse(f, &frames);
        if (rc <= 0)
            return rc; /* not a credit frame (HELLO, PING, ...) or malformed */
        /* EVENT|REQ comes from the opener of a stream the peer opened. */
        s = find(t, f->corr_id, (f->flags & OAP_F_RESP) != 0);
        if (s == NULL)
            return OAP_STREAM_CONTROL; /* crossed an END: ignore */
        if (s->send_credit + frames > OAP_MAX_SEND_CREDIT)
            return RON_ECREDIT;
        s->send_credit += frames;
        return OAP_STREAM_CONTROL;
    }
    return account(t, f, true);
}

int
oap_streams_send(oap_streams_t *t, const oap_frame_t *f)
{
    if (f->app_proto_id == OAP_APP_CONTROL)
        return 0;
    return account(t, f, false);
}

uint32_t
oap_streams_consume(oap_streams_t *t, uint64_t corr_id, bool mine, uint32_t n)
{
    oap_stream_t *s = find(t, corr_id, mine);
    uint8_t peer_dir;
    uint32_t grant;

    if (s == NULL)
        return 0;
    s->recv_consumed += n;
    /* The peer's direction: the opener's (req) if the peer opened it. */
    peer_dir = mine ? s->resp : s->req;
    if (peer_dir == OAP_DIR_ENDED || s->recv_consumed < t->window / 2)
        return 0;
    grant = RON_MIN(s->recv_consumed, (uint32_t)PROTO_MAX_CREDIT);
    s->recv_consumed -= grant;
    s->recv_credit += grant;
    return grant;
}
