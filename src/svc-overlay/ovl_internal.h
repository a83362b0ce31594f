/*
 * ovl_internal.h - what the overlay's files share: message encoders
 * (ovl_msg.c) for ovl_session.c. Not a public header.
 */
#ifndef OVL_INTERNAL_H
#define OVL_INTERNAL_H

#include "svc_overlay.h"

/* Write the 10-byte piece header (u64 piece, u16 proof_len, big-endian). */
void ovl__piece_hdr(uint8_t *out, uint64_t piece, size_t proof_len);
/* Encoders: compact JSON into out (cap bytes); return the length, 0 if it did not fit. */
size_t ovl__msg_seq(char *out, size_t cap, bool pong, uint64_t seq);
size_t ovl__msg_goodbye(char *out, size_t cap, const char *reason);
size_t ovl__msg_peers(char *out, size_t cap, const ovl_peer_t *p, size_t n_peers);
size_t ovl__msg_get(char *out, size_t cap, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                    uint64_t length, uint64_t known);
size_t ovl__msg_meta(char *out, size_t cap, uint64_t size, uint64_t first, uint64_t count);
/* Is addr a usable dial address (1..OVL_ADDR_MAX printable ASCII, no quote or backslash)? */
bool ovl__addr_ok(const char *addr);

#endif
