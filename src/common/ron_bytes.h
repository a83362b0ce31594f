/*
 * ron_bytes.h - bounded big-endian cursors over caller buffers.
 * Every read checks the bytes left first and returns RON_EAGAIN when short,
 * so wire parsers never run past their input.
 */
#ifndef RON_BYTES_H
#define RON_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ron_err.h"

typedef struct {
    const uint8_t *p;
    size_t left;
} ron_rd_t;

static inline uint16_t ron_get_u16be(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t
ron_get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline uint64_t
ron_get_u64be(const uint8_t *p)
{
    return (uint64_t)ron_get_u32be(p) << 32 | ron_get_u32be(p + 4);
}
static inline void
ron_put_u16be(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void
ron_put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void
ron_put_u64be(uint8_t *p, uint64_t v)
{
    ron_put_u32be(p, (uint32_t)(v >> 32));
    ron_put_u32be(p + 4, (uint32_t)v);
}

static inline int
ron_rd_bytes(ron_rd_t *r, size_t n, const uint8_t **out)
{
    if (r->left < n)
        return RON_EAGAIN;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}
static inline int
ron_rd_u16be(ron_rd_t *r, uint16_t *v_out)
{
    const uint8_t *p;
    int rc = ron_rd_bytes(r, 2, &p);
    if (rc == 0)
        *v_out = ron_get_u16be(p);
    return rc;
}
static inline int
ron_rd_u32be(ron_rd_t *r, uint32_t *v_out)
{
    const uint8_t *p;
    int rc = ron_rd_bytes(r, 4, &p);
    if (rc == 0)
        *v_out = ron_get_u32be(p);
    return rc;
}
static inline int
ron_rd_u64be(ron_rd_t *r, uint64_t *v_out)
{
    const uint8_t *p;
    int rc = ron_rd_bytes(r, 8, &p);
    if (rc == 0)
        *v_out = ron_get_u64be(p);
    return rc;
}

#endif
