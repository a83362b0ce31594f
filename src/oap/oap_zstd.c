/*
 * oap_zstd.c - COMP payloads (spec §5 rule 4): bounded zstd inflate, deflate,
 * and the mapping of codec errors to error-envelope statuses.
 * Invariants: inflate output never exceeds OAP_INFLATE_FACTOR x max_frame and
 * never allocates past that bound; the decompressor's window is limited to
 * the same bound, so a frame cannot make zstd reserve a large window either.
 */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "oap.h"
#include "oap_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define OAP__INFLATE_MIN_ALLOC 65536u /* first output allocation */

static int
window_log_for(size_t bound)
{
    int log = 10; /* zstd's smallest window log */
    while (log < 31 && ((size_t)1 << log) < bound)
        log++;
    return log;
}

static int
inflate_err(size_t zr)
{
    /* A frame asking for a window beyond the bound would exceed it in memory. */
    if (ZSTD_getErrorCode(zr) == ZSTD_error_frameParameter_windowTooLarge)
        return RON_EBOMB;
    return RON_ECOMPRESS;
}

/* Grow *buf so it holds at least one more byte, capped at bound. Returns false at the cap. */
static bool
out_grow(uint8_t **buf, size_t *cap, size_t bound)
{
    size_t ncap;

    if (*cap >= bound)
        return false;
    ncap = *cap * 2;
    if (ncap < OAP__INFLATE_MIN_ALLOC)
        ncap = OAP__INFLATE_MIN_ALLOC;
    if (ncap > bound)
        ncap = bound;
    *buf = ron_xrealloc(*buf, ncap);
    *cap = ncap;
    return true;
}

/*
 * Run ds over in into *buf (grown up to bound). When the output sits at the
 * bound, decoding continues into a one-byte probe: any byte there is a bomb.
 * Returns 0 with *len_out, RON_EBOMB, or RON_ECOMPRESS (malformed, truncated).
 */
static int
inflate_run(ZSTD_DStream *ds, ZSTD_inBuffer *in, uint8_t **buf, size_t *cap, size_t bound,
            size_t *len_out)
{
    ZSTD_outBuffer ob = {*buf, *cap, 0};
    size_t zr = 1; /* "frame not finished" until the decoder says otherwise */
    uint8_t probe;

    for (;;) {
        if (in->pos == in->size && zr == 0)
            break; /* every frame of the payload ended cleanly */
        if (ob.pos == ob.size && out_grow(buf, cap, bound)) {
            ob.dst = *buf;
            ob.size = *cap;
        } else if (ob.pos == ob.size) {
            ZSTD_outBuffer pb = {&probe, 1, 0};
            zr = ZSTD_decompressStream(ds, &pb, in);
            if (ZSTD_isError(zr))
                return inflate_err(zr);
            if (pb.pos != 0)
                return RON_EBOMB;
            if (in->pos == in->size && zr != 0)
                return RON_ECOMPRESS; /* truncated */
            continue;
        }
        zr = ZSTD_decompressStream(ds, &ob, in);
        if (ZSTD_isError(zr))
            return inflate_err(zr);
        if (in->pos == in->size && ob.pos < ob.size) {
            /* Input used up and output not full: nothing more will come. */
            if (zr != 0)
                return RON_ECOMPRESS; /* truncated frame */
            break;
        }
    }
    *len_out = ob.pos;
    return 0;
}

int
oap_inflate(const oap_frame_t *f, uint32_t max_frame, uint8_t **out, size_t *out_len)
{
    size_t bound = (size_t)OAP_INFLATE_FACTOR * oap__limit(max_frame);
    ZSTD_inBuffer in = {f->payload, f->payload_len, 0};
    ZSTD_DStream *ds = NULL;
    unsigned long long hint;
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (f->payload_len == 0)
        return RON_ECOMPRESS; /* a zstd frame is never empty */
    hint = ZSTD_getFrameContentSize(f->payload, f->payload_len);
    if (hint == ZSTD_CONTENTSIZE_ERROR)
        return RON_ECOMPRESS;
    if (hint != ZSTD_CONTENTSIZE_UNKNOWN && hint > bound)
        return RON_EBOMB; /* the declared size alone overruns: refuse before any work */
    ds = ZSTD_createDStream();
    if (ds == NULL)
        abort(); /* OOM, as ron_xmalloc */
    if (ZSTD_isError(ZSTD_DCtx_setParameter(ds, ZSTD_d_windowLogMax, window_log_for(bound)))) {
        rc = RON_ECOMPRESS;
        goto out;
    }
    if (hint != ZSTD_CONTENTSIZE_UNKNOWN && hint > 0) {
        /* The declared size is only a first allocation, already capped above. */
        cap = (size_t)hint;
        buf = ron_xmalloc(cap);
    }
    rc = inflate_run(ds, &in, &buf, &cap, bound, &len);
    if (rc == 0) {
        *out = buf;
        *out_len = len;
        buf = NULL;
    }
out:
    ZSTD_freeDStream(ds);
    free(buf);
    return rc;
}

int
oap_deflate(const uint8_t *src, size_t len, int level, uint8_t **out, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(len);
    uint8_t *buf = ron_xmalloc(cap ? cap : 1);
    size_t zr = ZSTD_compress(buf, cap, src, len, level);

    if (ZSTD_isError(zr)) {
        free(buf);
        *out = NULL;
        *out_len = 0;
        return RON_ECOMPRESS;
    }
    *out = buf;
    *out_len = zr;
    return 0;
}
