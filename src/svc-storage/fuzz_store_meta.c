/*
 * fuzz_store_meta.c - libFuzzer target for the object store's decoders of
 * on-disk bytes (sto_meta.c): the LMDB object record, totals and pin-count
 * values, and the object file header. The first input byte picks the
 * decoder; the rest is the record.
 * Properties checked: no decoder reads past len; whatever decodes re-encodes
 * to exactly the input bytes (each record has one canonical form) and a
 * decoded object record keeps the pinned-iff-pins invariant.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sto_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_rec(const uint8_t *p, size_t n)
{
    sto__rec_t rec;
    uint8_t out[STO_REC_HDR_LEN + STO_CTYPE_MAX];

    if (sto__rec_decode(p, n, &rec) < 0)
        return;
    if ((rec.state == STO_STATE_PINNED) != (rec.pins > 0) || rec.ctype_len > STO_CTYPE_MAX ||
        strlen(rec.ctype) != rec.ctype_len)
        abort();
    size_t m = sto__rec_encode(&rec, out, sizeof(out));
    if (m != n || memcmp(out, p, n) != 0)
        abort();
}

static void
fuzz_obj(const uint8_t *p, size_t n)
{
    sto__obj_hdr_t h;
    uint8_t out[STO_OBJ_HDR_LEN];

    if (sto__obj_hdr_decode(p, n, &h) < 0)
        return;
    if (h.ctype_len > STO_CTYPE_MAX || strlen(h.ctype) != h.ctype_len ||
        (h.flags & ~STO_OBJ_PINNED) != 0)
        abort();
    sto__obj_hdr_encode(&h, out);
    if (memcmp(out, p, STO_OBJ_HDR_LEN) != 0)
        abort(); /* one canonical form */
}

static void
fuzz_small(const uint8_t *p, size_t n)
{
    sto__totals_t t;
    uint8_t out[STO_TOTALS_LEN];
    uint32_t v;

    if (sto__totals_decode(p, n, &t) == 0) {
        if (t.pinned_bytes > t.stored_bytes)
            abort();
        sto__totals_encode(&t, out);
        if (memcmp(out, p, STO_TOTALS_LEN) != 0)
            abort();
    }
    if (sto__u32_decode(p, n, &v) == 0 && sto__get_le32(p) != v)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* copy so reads past the end hit ASan's redzone of an exact-size block */
    uint8_t *p = malloc(size - 1 + 1);
    memcpy(p, data + 1, size - 1);
    switch (data[0] % 3) {
    case 0:
        fuzz_rec(p, size - 1);
        break;
    case 1:
        fuzz_obj(p, size - 1);
        break;
    default:
        fuzz_small(p, size - 1);
        break;
    }
    free(p);
    return 0;
}
