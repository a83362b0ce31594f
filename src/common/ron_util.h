/*
 * ron_util.h - small helpers: allocation that aborts on OOM, container_of,
 * monotonic time, hex, u64 decimal text. Limits elsewhere stop peers from
 * choosing how much we allocate, so OOM here is our bug or the OS's.
 */
#ifndef RON_UTIL_H
#define RON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RON_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define ron_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define RON_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RON_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Allocate or abort. Returns new memory (caller frees). */
void *ron_xmalloc(size_t n);
void *ron_xcalloc(size_t n, size_t size);
void *ron_xrealloc(void *p, size_t n);
char *ron_xstrdup(const char *s);

/* Monotonic clock in nanoseconds / milliseconds. Thread-safe. */
uint64_t ron_now_ns(void);
uint64_t ron_now_ms(void);
/* Wall clock, seconds since the epoch. */
int64_t ron_unix_time(void);

/* Write 2*len lowercase hex digits and a NUL into out (2*len+1 bytes). */
void ron_hex_encode(char *out, const uint8_t *in, size_t len);
/* Value 0..15 of a hex digit (either case), or -1. */
int ron_hex_digit(char c);
/* Parse exactly 2*len hex digits (either case). Returns 0 or RON_EINVAL. */
int ron_hex_decode(uint8_t *out, size_t len, const char *hex, size_t hex_len);

/* Parse a decimal u64 with no sign, spaces or leading '+'; rejects overflow
 * and empty input. Returns 0 or RON_EINVAL. */
int ron_parse_u64(const char *s, size_t len, uint64_t *v_out);

/* Fill buf with random bytes from the OS (getrandom). Returns 0 or -errno. */
int ron_random_bytes(void *buf, size_t len);
/* Uniform random u64 in [0, bound) (bound > 0), from a per-thread PRNG seeded
 * from the OS. Not for keys: for jitter and sampling. */
uint64_t ron_rand_below(uint64_t bound);

#endif
