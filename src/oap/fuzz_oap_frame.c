/*
 * fuzz_oap_frame.c - libFuzzer target for the OAP/1 decoder.
 * The input is a byte stream. It is decoded twice: once with oap_frame_parse
 * over the whole buffer, once through the incremental decoder fed in chunk
 * sizes derived from the input bytes. Both must yield the same frames and the
 * same final error (spec §5 rule 3). Every frame must re-encode to exactly its
 * input bytes; COMP payloads are inflated (bounded, spec §5 rule 4); frames
 * also pass through HELLO parsing, credit parsing and a stream table, which
 * must never crash whatever they return. Any disagreement aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oap.h"
#include "ron_err.h"

#define FUZZ_MAX_FRAMES 4096 /* frames compared per input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond)
{
    if (!cond)
        abort();
}

static void
exercise(const oap_frame_t *f, oap_streams_t *t, size_t idx, uint32_t max_frame)
{
    uint8_t *out = NULL, *enc;
    size_t out_len = 0;
    proto_hello_t h;
    bool bare;
    uint32_t frames;

    /* Re-encode: the same bytes come back. */
    enc = malloc(f->len);
    check(oap_frame_encode(f, max_frame, enc, f->len) == (ssize_t)f->len);
    free(enc);
    if (f->flags & OAP_F_COMP) {
        int rc = oap_inflate(f, max_frame, &out, &out_len);
        check(rc == 0 || rc == RON_EBOMB || rc == RON_ECOMPRESS);
        check(out_len <= (size_t)OAP_INFLATE_FACTOR * max_frame);
        free(out);
    }
    if (idx == 0)
        (void)oap_hello_parse(f, &h, &bare, NULL);
    (void)oap_credit_parse(f, &frames);
    (void)oap_streams_recv(t, f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static oap_frame_t ref[FUZZ_MAX_FRAMES];
    static size_t ref_off[FUZZ_MAX_FRAMES];
    const uint32_t max_frame = OAP_MAX_FRAME;
    size_t nref = 0, off = 0, got = 0, pos = 0, k = 0;
    int ref_err = RON_EAGAIN, dec_err = RON_EAGAIN, rc;
    oap_streams_t t;
    oap_decoder_t d;
    oap_frame_t f;

    /* Reference: one-shot parsing of the whole buffer. */
    while (nref < FUZZ_MAX_FRAMES) {
        ssize_t n = oap_frame_parse(data + off, size - off, max_frame, &ref[nref]);
        if (n < 0) {
            ref_err = (int)n;
            break;
        }
        check(n >= (ssize_t)OAP_HDR_LEN && (size_t)n <= size - off);
        ref_off[nref++] = off;
        off += (size_t)n;
    }

    /* Incremental: chunk sizes from the input itself. */
    oap_decoder_init(&d, max_frame);
    oap_streams_init(&t, 8, 4);
    while (got < nref) {
        if (pos < size) {
            size_t c = size ? 1 + (data[k++ % size] * 131u) % 4099u : 1;
            if (c > size - pos)
                c = size - pos;
            rc = oap_decoder_feed(&d, data + pos, c);
            if (rc == 0)
                pos += c;
            else
                check(rc == RON_EFLOOD || rc == d.error);
        }
        while (got < nref && (rc = oap_decoder_next(&d, &f)) == 0) {
            const oap_frame_t *r = &ref[got];
            check(f.len == r->len && f.flags == r->flags && f.code == r->code &&
                  f.app_proto_id == r->app_proto_id && f.corr_id == r->corr_id &&
                  f.cap_len == r->cap_len && f.payload_len == r->payload_len &&
                  memcmp(f.tenant_id, r->tenant_id, 16) == 0);
            check(memcmp(f.payload, data + ref_off[got] + OAP_HDR_LEN + f.cap_len, f.payload_len) ==
                  0);
            /* zero copy: the view points into the decoder's buffer */
            check(f.payload >= d.buf && f.payload + f.payload_len <= d.buf + d.cap);
            exercise(&f, &t, got, max_frame);
            got++;
        }
        if (got < nref)
            check(rc == RON_EAGAIN && pos < size);
    }
    if (nref < FUZZ_MAX_FRAMES) {
        /* Feed the rest: the decoder must end in the reference's state. */
        for (;;) {
            dec_err = oap_decoder_next(&d, &f);
            if (dec_err != RON_EAGAIN || pos >= size)
                break;
            size_t c = size - pos < OAP_CHUNK ? size - pos : OAP_CHUNK;
            rc = oap_decoder_feed(&d, data + pos, c);
            check(rc == 0); /* less than one frame is left: always fits */
            pos += c;
        }
        check(dec_err == ref_err);
    }
    oap_streams_close(&t);
    oap_decoder_close(&d);
    return 0;
}
