/*
 * oap_error.c - names for flags and the mapping of codec errors to the
 * error-envelope status/slug/reason of spec §3.
 */
#include <stdio.h>
#include <string.h>

#include "oap.h"
#include "ron_err.h"
#include "ron_proto.h"

static const char *const flag_names[8] = {
    "REQ", "RESP", "EVENT", "START", "END", "ACK_REQ", "COMP", "APP_E2E",
};

void
oap_error_status(int rc, uint16_t *status_out, const char **slug_out, const char **reason_out)
{
    *reason_out = NULL;
    switch (rc) {
    case RON_ETOOBIG:
        *status_out = 413;
        break;
    case RON_EBOMB:
        *status_out = 413;
        *reason_out = "compression_bomb";
        break;
    case RON_EVERSION:
        *status_out = 426;
        break;
    case RON_EFLOOD:
    case RON_EBUSY:
        *status_out = 429;
        break;
    case RON_ELENGTH:
    case RON_EFLAGS:
    case RON_ECAPSTART:
    case RON_ECOMPRESS:
    case RON_EPROTO:
    case RON_ESTREAM:
    case RON_ECREDIT:
    case RON_EJSON:
    case RON_EAGAIN: /* a truncated frame at the end of input */
        *status_out = 400;
        break;
    default:
        *status_out = 500;
        break;
    }
    *slug_out = proto_status_slug(*status_out);
}

int
oap_flags_from_names(const char *names, uint16_t *flags_out)
{
    uint16_t flags = 0;
    const char *p = names;

    while (*p != '\0') {
        size_t n = strcspn(p, "|");
        unsigned i;
        for (i = 0; i < 8; i++)
            if (strlen(flag_names[i]) == n && strncmp(p, flag_names[i], n) == 0)
                break;
        if (i == 8)
            return RON_EINVAL;
        flags |= (uint16_t)(1u << i);
        p += n;
        if (*p == '|') {
            p++;
            if (*p == '\0')
                return RON_EINVAL; /* trailing '|' */
        }
    }
    *flags_out = flags;
    return 0;
}

void
oap_flag_names(uint16_t flags, char *out, size_t cap)
{
    size_t n = 0;

    if (cap == 0)
        return;
    out[0] = '\0';
    for (unsigned i = 0; i < 16; i++) {
        char other[8];
        const char *name;
        int w;

        if ((flags & (1u << i)) == 0)
            continue;
        if (i < 8) {
            name = flag_names[i];
        } else {
            snprintf(other, sizeof other, "BIT%u", i); /* reserved bits, for diagnostics */
            name = other;
        }
        w = snprintf(out + n, cap - n, "%s%s", n ? "|" : "", name);
        if (w < 0 || (size_t)w >= cap - n) {
            out[n] = '\0'; /* truncated: keep only whole names */
            return;
        }
        n += (size_t)w;
    }
}
