/*
 * fuzz_proto_dto.c - libFuzzer target for the strict DTO decoders.
 * The first byte picks the DTO; the rest is the JSON. Whatever decodes must
 * re-encode, and the re-encoding must decode to the same value and encode to
 * the same bytes (canonical form). Any failure aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_proto.h"

static void
check(int cond)
{
    if (!cond)
        abort();
}

/* Encode twice through a decode and compare bytes. */
#define ROUND_TRIP(T, enc, dec, val)                                                               \
    do {                                                                                           \
        char *a = NULL, *b = NULL;                                                                 \
        size_t al = 0, bl = 0;                                                                     \
        T again;                                                                                   \
        check(enc(val, &a, &al) == 0);                                                             \
        check(dec(a, al, &again, NULL) == 0);                                                      \
        check(enc(&again, &b, &bl) == 0);                                                          \
        check(al == bl && memcmp(a, b, al) == 0);                                                  \
        free(a);                                                                                   \
        free(b);                                                                                   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data + 1;
    proto_err_t err;

    if (size < 1)
        return 0;
    size--;
    switch (data[0] % 6) {
    case 0: {
        proto_error_t e;
        if (proto_error_decode(json, size, &e, &err) == 0)
            ROUND_TRIP(proto_error_t, proto_error_encode, proto_error_decode, &e);
        else
            check(err.text[0] != '\0');
        break;
    }
    case 1: {
        proto_hello_t h;
        if (proto_hello_decode(json, size, &h, &err) == 0)
            ROUND_TRIP(proto_hello_t, proto_hello_encode, proto_hello_decode, &h);
        break;
    }
    case 2: {
        proto_hello_reply_t r;
        if (proto_hello_reply_decode(json, size, &r, &err) == 0)
            ROUND_TRIP(proto_hello_reply_t, proto_hello_reply_encode, proto_hello_reply_decode, &r);
        break;
    }
    case 3: {
        proto_start_t s;
        if (proto_start_decode(json, size, &s, &err) == 0) {
            char *a = NULL, *b = NULL;
            size_t al, bl;
            proto_start_t s2;
            check(proto_start_encode(s.op, s.args, &a, &al) == 0);
            check(proto_start_decode(a, al, &s2, NULL) == 0);
            check(strcmp(s.op, s2.op) == 0);
            check(proto_start_encode(s2.op, s2.args, &b, &bl) == 0);
            check(al == bl && memcmp(a, b, al) == 0);
            free(a);
            free(b);
            proto_start_close(&s2);
            proto_start_close(&s);
        }
        break;
    }
    case 4: {
        proto_meta_t m;
        if (proto_meta_decode(json, size, &m, &err) == 0)
            ROUND_TRIP(proto_meta_t, proto_meta_encode, proto_meta_decode, &m);
        break;
    }
    default: {
        uint32_t n, n2;
        if (proto_credit_decode(json, size, &n, &err) == 0) {
            char *a = NULL;
            size_t al;
            check(proto_credit_encode(n, &a, &al) == 0);
            check(proto_credit_decode(a, al, &n2, NULL) == 0 && n == n2);
            free(a);
        }
        break;
    }
    }
    return 0;
}
