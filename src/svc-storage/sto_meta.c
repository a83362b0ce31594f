/*
 * sto_meta.c - encoders and strict decoders of the object store's on-disk
 * records: the LMDB object record, totals and pin counts, and the header of
 * an object file. Pure functions over caller buffers, no I/O.
 * Invariants: a decoder reads no byte past len, accepts exactly the lengths
 * and values docs/protocol/storage-format.md allows, and rejects everything
 * else with RON_ESTORE (so a damaged record is reported, never trusted).
 */
#include <string.h>

#include "ron_err.h"
#include "sto_internal.h"

/* STO_OBJ_MAGIC as bytes (it has no terminating NUL on disk) */
static const uint8_t obj_magic[8] = {'R', 'O', 'N', 'S', 'T', 'O', 'B', '2'};

void
sto__put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t
sto__get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void
sto__put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t
sto__get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Returns the encoded length, or 0 when cap is too small (our bug). */
size_t
sto__rec_encode(const sto__rec_t *rec, uint8_t *out, size_t cap)
{
    size_t n = STO_REC_HDR_LEN + rec->ctype_len;

    if (cap < n || rec->ctype_len > STO_CTYPE_MAX)
        return 0;
    out[0] = 1;
    out[1] = rec->state;
    out[2] = (uint8_t)rec->ctype_len;
    out[3] = (uint8_t)(rec->ctype_len >> 8);
    sto__put_le32(out + 4, rec->pins);
    sto__put_le64(out + 8, rec->size);
    sto__put_le64(out + 16, rec->created);
    sto__put_le64(out + 24, rec->cache_since);
    memcpy(out + STO_REC_HDR_LEN, rec->ctype, rec->ctype_len);
    return n;
}

int
sto__rec_decode(const uint8_t *buf, size_t len, sto__rec_t *rec_out)
{
    if (len < STO_REC_HDR_LEN || buf[0] != 1)
        return RON_ESTORE;
    rec_out->state = buf[1];
    rec_out->ctype_len = (uint16_t)(buf[2] | buf[3] << 8);
    rec_out->pins = sto__get_le32(buf + 4);
    rec_out->size = sto__get_le64(buf + 8);
    rec_out->created = sto__get_le64(buf + 16);
    rec_out->cache_since = sto__get_le64(buf + 24);
    if (rec_out->state > STO_STATE_PINNED || rec_out->ctype_len > STO_CTYPE_MAX ||
        len != STO_REC_HDR_LEN + (size_t)rec_out->ctype_len)
        return RON_ESTORE;
    /* pinned iff pins > 0; a cache record carries the time it became cache */
    if ((rec_out->state == STO_STATE_PINNED) != (rec_out->pins > 0))
        return RON_ESTORE;
    memcpy(rec_out->ctype, buf + STO_REC_HDR_LEN, rec_out->ctype_len);
    rec_out->ctype[rec_out->ctype_len] = '\0';
    if (!sto__ctype_ok(rec_out->ctype) || strlen(rec_out->ctype) != rec_out->ctype_len)
        return RON_ESTORE; /* printable ASCII only, as sto_put_begin() admits */
    return 0;
}

uint64_t
sto__obj_file_len(uint64_t size)
{
    return STO_OBJ_HDR_LEN + size + sto_tree_outboard_len(size);
}

void
sto__obj_hdr_encode(const sto__obj_hdr_t *h, uint8_t out[static STO_OBJ_HDR_LEN])
{
    memset(out, 0, STO_OBJ_HDR_LEN);
    memcpy(out, obj_magic, sizeof(obj_magic));
    out[8] = (uint8_t)STO_FORMAT_VERSION; /* u16 version */
    out[10] = (uint8_t)(STO_OBJ_HDR_LEN & 0xff); /* u16 header length */
    out[11] = (uint8_t)(STO_OBJ_HDR_LEN >> 8);
    sto__put_le32(out + 12, h->piece_size);
    sto__put_le64(out + 16, h->size);
    memcpy(out + 24, h->root, STO_ADDR_LEN);
    sto__put_le64(out + 56, h->created);
    if (h->flags & STO_OBJ_PINNED)
        memcpy(out + 64, h->tenant, STO_TENANT_LEN);
    out[80] = h->flags;
    out[81] = (uint8_t)h->ctype_len;
    /* 82..127 reserved, zero */
    memcpy(out + 128, h->ctype, h->ctype_len); /* then zero up to 255 */
}

int
sto__obj_hdr_decode(const uint8_t *buf, size_t len, sto__obj_hdr_t *h_out)
{
    static const uint8_t zero[STO_TENANT_LEN];

    if (len < STO_OBJ_HDR_LEN || memcmp(buf, obj_magic, sizeof(obj_magic)) != 0)
        return RON_ESTORE;
    if (buf[8] != STO_FORMAT_VERSION || buf[9] != 0 || buf[10] != (STO_OBJ_HDR_LEN & 0xff) ||
        buf[11] != (STO_OBJ_HDR_LEN >> 8))
        return RON_ESTORE;
    h_out->piece_size = sto__get_le32(buf + 12);
    h_out->size = sto__get_le64(buf + 16);
    memcpy(h_out->root, buf + 24, STO_ADDR_LEN);
    h_out->created = sto__get_le64(buf + 56);
    memcpy(h_out->tenant, buf + 64, STO_TENANT_LEN);
    h_out->flags = buf[80];
    h_out->ctype_len = buf[81];
    if (h_out->piece_size != STO_PIECE_LEN || h_out->size > (1ull << 62) ||
        (h_out->flags & ~STO_OBJ_PINNED) != 0 || h_out->ctype_len > STO_CTYPE_MAX)
        return RON_ESTORE;
    if (!(h_out->flags & STO_OBJ_PINNED) && memcmp(h_out->tenant, zero, STO_TENANT_LEN) != 0)
        return RON_ESTORE; /* one canonical form: no tenant without the pin */
    for (size_t i = 82; i < 128; i++)
        if (buf[i] != 0)
            return RON_ESTORE;
    for (size_t i = 128 + h_out->ctype_len; i < STO_OBJ_HDR_LEN; i++)
        if (buf[i] != 0)
            return RON_ESTORE;
    memcpy(h_out->ctype, buf + 128, h_out->ctype_len);
    h_out->ctype[h_out->ctype_len] = '\0';
    if (!sto__ctype_ok(h_out->ctype) || strlen(h_out->ctype) != h_out->ctype_len)
        return RON_ESTORE; /* printable ASCII only, as sto_put_begin() admits */
    return 0;
}

void
sto__totals_encode(const sto__totals_t *t, uint8_t out[static STO_TOTALS_LEN])
{
    sto__put_le64(out, t->objects);
    sto__put_le64(out + 8, t->stored_bytes);
    sto__put_le64(out + 16, t->pinned_bytes);
}

int
sto__totals_decode(const uint8_t *buf, size_t len, sto__totals_t *t_out)
{
    if (len != STO_TOTALS_LEN)
        return RON_ESTORE;
    t_out->objects = sto__get_le64(buf);
    t_out->stored_bytes = sto__get_le64(buf + 8);
    t_out->pinned_bytes = sto__get_le64(buf + 16);
    if (t_out->pinned_bytes > t_out->stored_bytes)
        return RON_ESTORE;
    return 0;
}

int
sto__u32_decode(const uint8_t *buf, size_t len, uint32_t *v_out)
{
    if (len != 4)
        return RON_ESTORE;
    *v_out = sto__get_le32(buf);
    return 0;
}
