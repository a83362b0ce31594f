/*
 * oap_frame.c - OAP/1 frame header parser and encoder (spec §1, §2, §5 rule 2).
 * Pure functions over caller buffers: no I/O, no allocation.
 * Invariants: the header is validated in full (version, length bounds,
 * reserved flags, cap only with START) before any cap or payload byte is
 * looked at; decoded cap and payload are views into the caller's buffer.
 */
#include <errno.h>
#include <string.h>

#include "oap.h"
#include "oap_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"

uint32_t
oap__limit(uint32_t max_frame)
{
    /* 1 MiB is the ceiling (spec §1): a larger limit from a caller is clamped. */
    return max_frame > OAP_MAX_FRAME ? OAP_MAX_FRAME : max_frame;
}

int
oap_header_parse(const uint8_t *buf, size_t len, uint32_t max_frame, oap_frame_t *f_out)
{
    if (len < OAP_HDR_LEN)
        return RON_EAGAIN;
    /* Fixed offsets of the layout table; all 38 bytes were checked above. */
    f_out->len = ron_get_u32be(buf + 0);
    f_out->ver = ron_get_u16be(buf + 4);
    f_out->flags = ron_get_u16be(buf + 6);
    f_out->code = ron_get_u16be(buf + 8);
    f_out->app_proto_id = ron_get_u16be(buf + 10);
    memcpy(f_out->tenant_id, buf + 12, sizeof f_out->tenant_id);
    f_out->cap_len = ron_get_u16be(buf + 28);
    f_out->corr_id = ron_get_u64be(buf + 30);
    f_out->cap = NULL;
    f_out->payload = NULL;
    f_out->payload_len = 0;

    if (f_out->ver != OAP_VERSION)
        return RON_EVERSION;
    if ((uint64_t)f_out->len < (uint64_t)OAP_HDR_LEN + f_out->cap_len)
        return RON_ELENGTH;
    if (f_out->len > oap__limit(max_frame))
        return RON_ETOOBIG;
    if ((f_out->flags & ~OAP_F_KNOWN) != 0)
        return RON_EFLAGS;
    if (f_out->cap_len != 0 && (f_out->flags & OAP_F_START) == 0)
        return RON_ECAPSTART;
    f_out->payload_len = f_out->len - OAP_HDR_LEN - f_out->cap_len;
    return 0;
}

ssize_t
oap_frame_parse(const uint8_t *buf, size_t len, uint32_t max_frame, oap_frame_t *f_out)
{
    int rc = oap_header_parse(buf, len, max_frame, f_out);

    if (rc < 0)
        return rc;
    if (len < f_out->len)
        return RON_EAGAIN;
    f_out->cap = f_out->cap_len != 0 ? buf + OAP_HDR_LEN : NULL;
    f_out->payload = buf + OAP_HDR_LEN + f_out->cap_len;
    return (ssize_t)f_out->len;
}

size_t
oap_frame_size(const oap_frame_t *f)
{
    return OAP_HDR_LEN + (size_t)f->cap_len + f->payload_len;
}

int
oap_header_encode(const oap_frame_t *f, uint32_t max_frame, uint8_t out[static OAP_HDR_LEN])
{
    uint64_t total = (uint64_t)OAP_HDR_LEN + f->cap_len + (uint64_t)f->payload_len;

    if ((f->flags & ~OAP_F_KNOWN) != 0)
        return RON_EFLAGS;
    if (f->cap_len != 0 && (f->flags & OAP_F_START) == 0)
        return RON_ECAPSTART;
    if (f->payload_len > OAP_MAX_FRAME || total > oap__limit(max_frame))
        return RON_ETOOBIG;
    ron_put_u32be(out + 0, (uint32_t)total);
    ron_put_u16be(out + 4, OAP_VERSION);
    ron_put_u16be(out + 6, f->flags);
    ron_put_u16be(out + 8, f->code);
    ron_put_u16be(out + 10, f->app_proto_id);
    memcpy(out + 12, f->tenant_id, 16);
    ron_put_u16be(out + 28, f->cap_len);
    ron_put_u64be(out + 30, f->corr_id);
    return 0;
}

ssize_t
oap_frame_encode(const oap_frame_t *f, uint32_t max_frame, uint8_t *out, size_t cap)
{
    uint8_t hdr[OAP_HDR_LEN];
    size_t n;
    int rc;

    /* Validate into a scratch header first: out may be shorter than 38 bytes. */
    rc = oap_header_encode(f, max_frame, hdr);
    if (rc < 0)
        return rc;
    n = oap_frame_size(f);
    if (cap < n)
        return -ENOBUFS;
    memcpy(out, hdr, OAP_HDR_LEN);
    if (f->cap_len != 0)
        memcpy(out + OAP_HDR_LEN, f->cap, f->cap_len);
    if (f->payload_len != 0)
        memcpy(out + OAP_HDR_LEN + f->cap_len, f->payload, f->payload_len);
    return (ssize_t)n;
}
