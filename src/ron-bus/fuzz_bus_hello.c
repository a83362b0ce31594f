/*
 * fuzz_bus_hello.c - libFuzzer target for the ron-bus HELLO payload parser
 * (peer bytes: the only JSON the bus parses before a peer is trusted).
 * Invariants checked: no crash or leak; on success the name is a valid
 * endpoint name and negotiated limits are within their bounds; on failure
 * the output is zeroed (no partial secret left behind).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rbus_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rbus_hello_t h, zero;
    int rc = rbus__hello_parse(data, size, &h);

    memset(&zero, 0, sizeof zero);
    if (rc < 0) {
        if (memcmp(&h, &zero, sizeof h) != 0)
            abort();
        return 0;
    }
    if (h.name[0] != '\0' && !rbus__name_is_valid(h.name, strlen(h.name)))
        abort();
    if (h.max_frame != 0 && (h.max_frame < OAP_MIN_MAX_FRAME || h.max_frame > OAP_MAX_FRAME))
        abort();
    if (h.max_inflight > RBUS_MAX_INFLIGHT)
        abort();
    return 0;
}
