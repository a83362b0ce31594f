/*
 * ron_utf8.h - UTF-8 validation (RFC 3629): no overlongs, no surrogates,
 * nothing above U+10FFFF. One implementation for every component that
 * checks or sanitises text from outside (JSON strings, metric labels, logs).
 */
#ifndef RON_UTF8_H
#define RON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the valid UTF-8 sequence at s, reading at most n bytes,
 * or 0 when s does not start one within n bytes (or n == 0). */
size_t ron_utf8_seq_len(const uint8_t *s, size_t n);

/* True when s[0..n) is valid UTF-8 and holds no NUL byte. */
bool ron_utf8_valid(const char *s, size_t n);

#endif
