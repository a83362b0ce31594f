/*
 * fuzz_ovl_msg.c - the overlay's parsers take peer bytes: JSON messages
 * (ovl_msg_parse) and piece frame payloads (ovl_piece_parse). Neither may
 * crash, leak or read out of bounds on any input.
 */
#include <stddef.h>
#include <stdint.h>

#include "svc_overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ovl_msg_t m;
    uint64_t piece;
    const uint8_t *proof, *bytes;
    size_t proof_len, len;

    (void)ovl_msg_parse(data, size, &m);
    (void)ovl_piece_parse(data, size, &piece, &proof, &proof_len, &bytes, &len);
    return 0;
}
