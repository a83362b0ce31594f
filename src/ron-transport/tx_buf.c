/*
 * tx_buf.c - the growable byte buffer the HTTP layers serialize into.
 * Growth aborts on OOM (ron_xrealloc); the callers bound what goes in.
 */
#include <stdlib.h>
#include <string.h>

#include "ron_util.h"
#include "tx_internal.h"

void
tx__buf_reserve(tx_buf_t *b, size_t extra)
{
    size_t need = b->len + extra;
    size_t cap;

    if (need <= b->cap)
        return;
    cap = b->cap != 0 ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->p = ron_xrealloc(b->p, cap);
    b->cap = cap;
}

void
tx__buf_append(tx_buf_t *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    tx__buf_reserve(b, len);
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

void
tx__buf_append_str(tx_buf_t *b, const char *s)
{
    tx__buf_append(b, s, strlen(s));
}

void
tx__buf_append_u64(tx_buf_t *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    tx__buf_append(b, tmp + i, sizeof tmp - i);
}

void
tx__buf_free(tx_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
