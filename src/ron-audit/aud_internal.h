/*
 * aud_internal.h - shared between the files of ron-audit and its tests: the
 * checkpoint signing message and the lowercase-hex helper used by both the
 * record and the checkpoint parsers.
 */
#ifndef AUD_INTERNAL_H
#define AUD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ron_audit.h"

#define AUD__CKPT_CTX "ron-audit/ckpt/1" /* 16 bytes, no NUL */
#define AUD__CKPT_MSG_LEN (16 + 8 + 8 + AUD_HASH_LEN)

/* The 64 bytes an Ed25519 checkpoint signature covers. */
void aud__ckpt_msg(uint8_t msg[static AUD__CKPT_MSG_LEN], uint64_t seq, uint64_t ts_ms,
                   const uint8_t head[static AUD_HASH_LEN]);

/* Decode exactly 2*len lowercase hex digits; 0 or RON_EAUDIT. */
int aud__hex_lower(uint8_t *out, size_t len, const char *hex);

#endif
