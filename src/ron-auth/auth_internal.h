/*
 * auth_internal.h - ron-auth internals shared by its files and its tests:
 * the zero-copy parse of a v1 token (views into the decoded bytes), the
 * HMAC-SHA256 chain, and the v1 encoder.
 */
#ifndef RON_AUTH_INTERNAL_H
#define RON_AUTH_INTERNAL_H

#include "ron_auth.h"

/* A byte range inside a decoded token. */
typedef struct {
    const uint8_t *p;
    size_t len;
} auth__view_t;

/* A token's packets, as views into its decoded bytes. */
typedef struct {
    bool has_location;
    auth__view_t location;
    auth__view_t id;
    size_t n_caveats;
    auth__view_t caveats[AUTH_MAX_CAVEATS];
    const uint8_t *sig; /* AUTH_SIG_LEN bytes */
} auth__parsed_t;

/*
 * Decode base64url (or standard base64; padding optional, trailing bits
 * zero) token[0..len) into raw (AUTH_MAX_RAW bytes). Returns the decoded
 * length or RON_ECAPFORMAT.
 */
long auth__b64_decode(const char *token, size_t len, uint8_t raw[static AUTH_MAX_RAW]);

/* Encode in[0..len) as base64url without padding into out (NUL-terminated).
 * Returns the length, or RON_ETOOBIG when out[0..cap) is too small. */
long auth__b64_encode(const uint8_t *in, size_t len, char *out, size_t cap);

/* Split decoded v1 bytes into packets. Returns 0 or RON_ECAPFORMAT. */
int auth__packets_parse(const uint8_t *raw, size_t len, auth__parsed_t *out);

/* Decode and split token[0..len) (raw holds the bytes the views point into). */
int auth__token_split(const char *token, size_t len, uint8_t raw[static AUTH_MAX_RAW],
                      auth__parsed_t *out);

/* Serialize p (its views) with sig as base64url v1 into out[0..cap). Returns
 * the length or RON_ETOOBIG. */
long auth__token_encode(const auth__parsed_t *p, const uint8_t sig[static AUTH_SIG_LEN], char *out,
                        size_t cap);

/* HMAC-SHA256 with a 32-byte key (the macaroon chain step). */
void auth__hmac(uint8_t out[static AUTH_SIG_LEN], const uint8_t key[static AUTH_SIG_LEN],
                const uint8_t *msg, size_t len);

/* libmacaroons' key derivation: HMAC-SHA256 keyed "macaroons-key-generator"
 * (zero-padded) over the root key. */
void auth__derive_key(uint8_t out[static AUTH_SIG_LEN], const uint8_t *key, size_t len);

/* The signature chain: sig0 = HMAC(derived, id), sig_i = HMAC(sig_i-1, caveat_i). */
void auth__chain(uint8_t out[static AUTH_SIG_LEN], const uint8_t derived[static AUTH_SIG_LEN],
                 const auth__parsed_t *p);

/* Fold every caveat of p into *g. Returns 0 or RON_ECAPCAVEAT with *bad_out
 * the index of the first bad caveat. */
int auth__fold(const auth__parsed_t *p, auth_grant_t *g, int *bad_out);

/* True if kid[0..len) is 1..AUTH_MAX_KID bytes of [a-z0-9]. */
bool auth__kid_ok(const char *kid, size_t len);

#endif
