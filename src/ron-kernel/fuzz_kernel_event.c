/*
 * fuzz_kernel_event.c - libFuzzer target for ron_kernel_event_decode(), the
 * parser of kernel events arriving from other processes over ron-bus.
 * Properties checked on every input: decode never reads past len; a decoded
 * event has terminated, valid strings and re-encodes; the encoding decodes
 * to an equal event and re-encodes to the same bytes (canonical form).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ron_kernel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ron_kernel_event_t ev, back;
    char out[RON_KERNEL_EVENT_JSON_MAX], out2[RON_KERNEL_EVENT_JSON_MAX];

    if (ron_kernel_event_decode((const char *)data, size, &ev) < 0)
        return 0;
    if (memchr(ev.service, 0, sizeof ev.service) == NULL ||
        memchr(ev.reason, 0, sizeof ev.reason) == NULL)
        abort();
    int n = ron_kernel_event_encode(&ev, out, sizeof out);
    if (n <= 0)
        abort(); /* everything decode accepts must encode */
    if (ron_kernel_event_decode(out, (size_t)n, &back) != 0 || !ron_kernel_event_equal(&ev, &back))
        abort();
    int n2 = ron_kernel_event_encode(&back, out2, sizeof out2);
    if (n2 != n || memcmp(out, out2, (size_t)n) != 0)
        abort();
    return 0;
}
