/*
 * tx_decode.c - bounded decoding of request bodies sent with
 * Content-Encoding: zstd, or gzip/deflate when built with zlib (TX_HAVE_ZLIB).
 * Output grows as it is produced and never past limit: a compression bomb
 * costs at most limit + one step of memory before it is refused.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <zstd.h>
#ifdef TX_HAVE_ZLIB
#include <zlib.h>
#endif

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

#define TX_DECODE_STEP (64u << 10) /* output growth step */

static int
tx_grow(tx_buf_t *o, size_t limit)
{
    size_t want;

    if (o->len < o->cap)
        return 0;
    if (o->cap > limit)
        return RON_EBOMB;
    want = o->cap == 0 ? TX_DECODE_STEP : o->cap * 2;
    if (want > limit + 1)
        want = limit + 1; /* one byte past the limit proves the overrun */
    o->p = ron_xrealloc(o->p, want);
    o->cap = want;
    return 0;
}

static int
tx_decode_zstd(const uint8_t *in, size_t len, size_t limit, tx_buf_t *o)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer ib = {in, len, 0};
    size_t ret = 1;
    int rc = 0;

    if (d == NULL)
        return -ENOMEM;
    /* bound the window a frame may ask for (8 MiB, zstd's default max is 128 MiB) */
    ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 23);
    for (;;) {
        if ((rc = tx_grow(o, limit)) < 0)
            break;
        ZSTD_outBuffer ob = {o->p, o->cap, o->len};
        ret = ZSTD_decompressStream(d, &ob, &ib);
        o->len = ob.pos;
        if (ZSTD_isError(ret)) {
            rc = RON_ECOMPRESS;
            break;
        }
        if (o->len > limit) {
            rc = RON_EBOMB;
            break;
        }
        if (ib.pos == ib.size && ob.pos < ob.size) {
            rc = ret == 0 ? 0 : RON_ECOMPRESS; /* ret != 0: frame truncated */
            break;
        }
    }
    ZSTD_freeDCtx(d);
    return rc;
}

#ifdef TX_HAVE_ZLIB
static int
tx_decode_zlib(const uint8_t *in, size_t len, size_t limit, tx_buf_t *o, int wbits)
{
    z_stream z;
    int zrc = Z_OK, rc = 0;

    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, wbits) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    for (;;) {
        if ((rc = tx_grow(o, limit)) < 0)
            break;
        z.next_out = o->p + o->len;
        z.avail_out = (uInt)(o->cap - o->len);
        zrc = inflate(&z, Z_NO_FLUSH);
        o->len = o->cap - z.avail_out;
        if (o->len > limit) {
            rc = RON_EBOMB;
            break;
        }
        if (zrc == Z_STREAM_END) {
            rc = z.avail_in == 0 ? 0 : RON_ECOMPRESS; /* trailing garbage */
            break;
        }
        if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            rc = RON_ECOMPRESS;
            break;
        }
        if (z.avail_in == 0 && z.avail_out != 0) {
            rc = RON_ECOMPRESS; /* input ended inside the stream */
            break;
        }
    }
    inflateEnd(&z);
    return rc;
}
#endif

int
tx__decode(const char *enc, const uint8_t *in, size_t len, size_t limit, uint8_t **out,
           size_t *out_len)
{
    tx_buf_t o = {0};
    int rc;

    if (strcasecmp(enc, "identity") == 0) {
        if (len > limit)
            return RON_EBOMB;
        tx__buf_append(&o, in, len);
        rc = 0;
    } else if (strcasecmp(enc, "zstd") == 0) {
        rc = tx_decode_zstd(in, len, limit, &o);
#ifdef TX_HAVE_ZLIB
    } else if (strcasecmp(enc, "gzip") == 0 || strcasecmp(enc, "x-gzip") == 0) {
        rc = tx_decode_zlib(in, len, limit, &o, 16 + MAX_WBITS);
    } else if (strcasecmp(enc, "deflate") == 0) {
        rc = tx_decode_zlib(in, len, limit, &o, MAX_WBITS);
#endif
    } else {
        rc = RON_EINVAL;
    }
    if (rc < 0) {
        tx__buf_free(&o);
        return rc;
    }
    if (o.p == NULL)
        o.p = ron_xmalloc(1);
    *out = o.p;
    *out_len = o.len;
    return 0;
}
