/*
 * name_internal.h - helpers shared by the ron-naming sources and its tests.
 */
#ifndef NAME_INTERNAL_H
#define NAME_INTERNAL_H

#include <stddef.h>

#include "ron_naming.h"

/* Fill err (if not NULL) and return code. */
int name__err(name_err_t *err, int code, int label, long pos, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Show byte c for a message: 'x' when printable ASCII, else \xNN. */
void name__char_show(char c, char *buf, size_t cap);

#endif
