/*
 * oap_decoder.c - incremental OAP/1 decoder (spec §5 rules 1-3, 5).
 * Bytes arrive in any chunking; whole frames come out as views into one
 * owned, growable buffer. Invariants: start <= end <= cap <= bound, where
 * bound = max_frame + OAP_CHUNK, so a peer never makes us buffer more than
 * one maximal frame plus one read; a header is validated as soon as its 38
 * bytes are buffered, before the body arrives; the first decode error is
 * sticky. Consumed bytes are reclaimed by moving the (partial) remainder to
 * the front only when the tail has no room, so whole payloads are never
 * copied once they are in the buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "oap.h"
#include "oap_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define OAP__DEC_MIN_ALLOC 4096u                     /* first allocation; grows by doubling */
#define OAP__DEC_COMPACT_MIN ((size_t)8 * OAP_CHUNK) /* free space after a move worth a copy */

static size_t
dec_bound(const oap_decoder_t *d)
{
    return (size_t)d->max_frame + OAP_CHUNK;
}

void
oap_decoder_init(oap_decoder_t *d, uint32_t max_frame)
{
    memset(d, 0, sizeof *d);
    d->max_frame = oap__limit(max_frame);
}

void
oap_decoder_close(oap_decoder_t *d)
{
    free(d->buf);
    memset(d, 0, sizeof *d);
}

void
oap_decoder_set_max_frame(oap_decoder_t *d, uint32_t max_frame)
{
    if (max_frame < d->max_frame)
        d->max_frame = max_frame;
}

size_t
oap_decoder_release(oap_decoder_t *d)
{
    size_t freed = d->cap;

    if (d->buf == NULL || d->error != 0 || d->start != d->end)
        return 0;
    free(d->buf);
    d->buf = NULL;
    d->cap = d->start = d->end = 0;
    return freed;
}

uint8_t *
oap_decoder_reserve(oap_decoder_t *d, size_t want, size_t *avail_out)
{
    size_t used = d->end - d->start;
    size_t bound = dec_bound(d);
    size_t room;

    *avail_out = 0;
    if (d->error != 0 || used >= bound)
        return NULL;
    room = bound - used;
    if (want == 0 || want > room)
        want = room;
    if (d->cap - d->end < want && d->start > 0 &&
        (used <= d->cap / 8 || d->cap - used >= OAP__DEC_COMPACT_MIN)) {
        /* Reclaim consumed bytes by moving the remainder (less than one frame)
         * to the front. Moving a large remainder often would copy payloads on
         * the hot path, so a buffer that is small next to its remainder grows
         * instead: each byte is then moved at most once per cap / used reads. */
        memmove(d->buf, d->buf + d->start, used);
        d->start = 0;
        d->end = used;
    }
    if (d->cap - d->end < want) {
        size_t ncap = d->cap * 2;
        if (ncap < d->end + want)
            ncap = d->end + want;
        if (ncap < OAP__DEC_MIN_ALLOC)
            ncap = OAP__DEC_MIN_ALLOC;
        if (ncap > bound)
            ncap = bound;
        d->buf = ron_xrealloc(d->buf, ncap);
        d->cap = ncap;
    }
    if (d->cap - d->end < want && d->start > 0) {
        /* Growth stopped at the bound: moving is the only way left. */
        memmove(d->buf, d->buf + d->start, used);
        d->start = 0;
        d->end = used;
    }
    *avail_out = RON_MIN(d->cap - d->end, room);
    return d->buf + d->end;
}

void
oap_decoder_commit(oap_decoder_t *d, size_t n)
{
    d->end += n;
}

int
oap_decoder_feed(oap_decoder_t *d, const uint8_t *data, size_t len)
{
    uint8_t *p;
    size_t avail;

    if (d->error != 0)
        return d->error;
    if (len == 0)
        return 0;
    p = oap_decoder_reserve(d, len, &avail);
    if (p == NULL || avail < len)
        return RON_EFLOOD;
    memcpy(p, data, len);
    oap_decoder_commit(d, len);
    return 0;
}

int
oap_decoder_next(oap_decoder_t *d, oap_frame_t *f_out)
{
    ssize_t n;

    if (d->error != 0)
        return d->error;
    if (d->start == d->end) {
        d->start = d->end = 0;
        return RON_EAGAIN;
    }
    n = oap_frame_parse(d->buf + d->start, d->end - d->start, d->max_frame, f_out);
    if (n == RON_EAGAIN)
        return RON_EAGAIN;
    if (n < 0) {
        d->error = (int)n;
        return d->error;
    }
    d->start += (size_t)n;
    if (d->start == d->end)
        d->start = d->end = 0; /* the data stays in place: views remain valid */
    return 0;
}
