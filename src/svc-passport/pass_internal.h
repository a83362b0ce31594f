/*
 * pass_internal.h - svc-passport internals shared by pass.c, pass_keyring.c,
 * pass_req.c, pass_service.c and the tests: the keyring (entries, file
 * codec, rotation steps).
 * Invariants: key entries (secrets included) live in one sodium_malloc
 * array, wiped by sodium_free; at most one entry per kind has retired == 0
 * (the current one) once a keyring is open.
 */
#ifndef PASS_INTERNAL_H
#define PASS_INTERNAL_H

#include "svc_passport.h"

#define PASS__SECRET_LEN 32u                       /* capability root key / Ed25519 seed */
#define PASS__MAX_ENTRIES (2 * PASS_KEYRING_MAX)   /* both kinds */
#define PASS__MAGIC "RONPKR1\n"                    /* keyring file magic, 8 bytes */
#define PASS__HDR_LEN 38u                          /* magic 8, version 1, seal 1, nonce 24, len 4 */
#define PASS__SUM_LEN 32u                          /* BLAKE2b-256 of an unsealed file */

typedef struct {
    uint8_t kind; /* pass_key_kind_t */
    char kid[AUTH_MAX_KID + 1];
    int64_t created; /* unix s */
    int64_t retired; /* unix s; 0: current */
    uint8_t secret[PASS__SECRET_LEN];
    uint8_t pk[KMS_PK_LEN]; /* PASS_KEY_SIGN only */
    uint8_t sk[64];         /* PASS_KEY_SIGN: the expanded secret key (never written to disk) */
} pass__key_t;

typedef struct {
    pass__key_t *keys; /* sodium_malloc, PASS__MAX_ENTRIES slots */
    size_t n;
    uint32_t next_seq; /* next kid number, shared by both kinds */
    char *path;        /* NULL: RAM only */
    uint8_t *seal;     /* sodium_malloc 32 bytes, or NULL: stored unsealed */
} pass__keyring_t;

/* Set up an empty keyring (path and seal copied; both may be NULL). */
void pass__keyring_init(pass__keyring_t *kr, const char *path, const uint8_t *seal);
/* Wipe and free everything kr holds. */
void pass__keyring_close(pass__keyring_t *kr);
/* The current key of kind, or NULL. */
pass__key_t *pass__keyring_current(pass__keyring_t *kr, pass_key_kind_t kind);
/* Add a fresh current key of kind at now; the old current one retires. */
void pass__keyring_add(pass__keyring_t *kr, pass_key_kind_t kind, int64_t now);
/* Drop replaced keys with retired + grace <= now. Returns how many. */
int pass__keyring_drop(pass__keyring_t *kr, int64_t grace, int64_t now);
/* Drop (wipe) every key of kind, current or not. Returns how many. */
int pass__keyring_drop_kind(pass__keyring_t *kr, pass_key_kind_t kind);
/* Encode kr into buf[0..cap) (sealed when kr->seal). Returns bytes or RON_ETOOBIG. */
long pass__keyring_encode(const pass__keyring_t *kr, uint8_t *buf, size_t cap);
/* Decode a file's bytes into kr (empty before). Returns 0 or RON_EPASSKEYRING. */
int pass__keyring_decode(pass__keyring_t *kr, const uint8_t *buf, size_t len);
/* Load kr->path: 0, 1 when the file does not exist, RON_EKEYPERM, RON_EPASSKEYRING, -errno. */
int pass__keyring_load(pass__keyring_t *kr);
/* Write kr->path atomically (temp, fsync, rename, dir fsync). No path: 0. */
int pass__keyring_save(const pass__keyring_t *kr);
/* Name of a request op ("challenge", ...), or "invalid". */
const char *pass__op_name(pass_req_op_t op);

#endif
