/*
 * ron_kms.h - the node's key store (ron-kms, first part): the Ed25519
 * identity key (node id = BLAKE3 of its public key) and the name-signing
 * keys (DESIGN.md §5, §6).
 *
 * Persistent mode keeps one file per key in <data_dir>/keys/ (directory mode
 * 0700, files 0600; format in docs/protocol/keystore.md). A missing key is
 * created on first start: temp file, fsync, rename, directory fsync. At rest
 * a key's secret is sealed with XChaCha20-Poly1305 under a key derived from
 * a secret kept apart from it: a passphrase stretched with Argon2id
 * (RON_PASSPHRASE, or kms_opts_t.passphrase), or a file of 32+ random bytes
 * named by RON_ROOT_SECRET_FILE (BLAKE3 derive_key). With neither, secrets are
 * stored in the clear (mode 0600) and every open logs a loud warning.
 * Amnesia mode generates keys in RAM and writes nothing.
 *
 * Invariants: secret bytes live only in sodium_malloc memory, kept
 * PROT_NONE except while a signature is being made, and are wiped by
 * sodium_free when the key store is freed; they leave this component only
 * through kms_key_export_seed / kms_key_export_to (the TLS hook). Every key
 * file carries an algorithm identifier, so post-quantum hybrids can be added
 * as new algorithms. A file that is malformed, tampered with (any byte), or
 * readable by others is refused; a wrong passphrase or secret is RON_EAUTH
 * and never yields a key.
 */
#ifndef RON_KMS_H
#define RON_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sizes of the Ed25519 algorithm and of ids. */
#define KMS_PK_LEN 32      /* Ed25519 public key */
#define KMS_SEED_LEN 32    /* Ed25519 secret seed (what a key file seals) */
#define KMS_SIG_LEN 64     /* Ed25519 detached signature */
#define KMS_NODE_ID_LEN 32 /* BLAKE3-256 of the identity public key */

/* Limits. */
#define KMS_MAX_NAME_KEYS 16     /* name-<i>.key files loaded; more is a config error */
#define KMS_FILE_MAX 16384       /* a key file larger than this is refused unread */
#define KMS_KEY_MAX 8192         /* public/secret key bytes per file (room for PQ keys) */
#define KMS_SECRET_FILE_MIN 32   /* RON_ROOT_SECRET_FILE must hold at least this many bytes */
#define KMS_SECRET_FILE_MAX 4096 /* ... and at most this many (it is a key, not a document) */
#define KMS_PASSPHRASE_MAX 1024  /* longer passphrases are refused */
#define KMS_KDF_OPSLIMIT_MAX 16  /* Argon2id passes accepted from a file (bounds work) */
#define KMS_KDF_MEMLIMIT_MAX (1ULL << 30) /* Argon2id bytes accepted from a file (bounds RAM) */
#define KMS_PATH_MAX 1024                 /* data_dir + "/keys/name-NN.key" must fit */

/* Environment variables read by kms_opts_from_env. */
#define KMS_ENV_PASSPHRASE "RON_PASSPHRASE"
#define KMS_ENV_SECRET_FILE "RON_ROOT_SECRET_FILE"

/* Algorithm identifiers stored in every key file (u16). */
typedef enum { KMS_ALG_ED25519 = 1 } kms_alg_t;

/* What a key is for. */
typedef enum { KMS_ROLE_IDENTITY = 1, KMS_ROLE_NAME = 2 } kms_role_t;

/* How a key file's secret is protected at rest. */
typedef enum {
    KMS_SEAL_NONE = 0,        /* clear text, mode 0600, loud warning */
    KMS_SEAL_PASSPHRASE = 1,  /* Argon2id(passphrase, salt) -> XChaCha20-Poly1305 */
    KMS_SEAL_SECRET_FILE = 2, /* BLAKE3 derive_key(secret file, salt) -> XChaCha20-Poly1305 */
} kms_seal_t;

/* How to open a key store. Every pointer is borrowed for the call only. */
typedef struct {
    const char *data_dir;    /* keys live in <data_dir>/keys; unused in amnesia */
    bool amnesia;            /* RAM only: generate fresh keys, write nothing */
    bool create;             /* create missing keys (node start); false: RON_ENOKEYS */
    const char *passphrase;  /* NULL: none; NUL-terminated, <= KMS_PASSPHRASE_MAX bytes */
    const char *secret_file; /* NULL: none; path of a file of 32..4096 secret bytes */
    uint64_t kdf_opslimit;   /* Argon2id passes for new files; 0: crypto_pwhash_OPSLIMIT_MODERATE */
    uint64_t kdf_memlimit;   /* Argon2id bytes for new files; 0: crypto_pwhash_MEMLIMIT_MODERATE */
} kms_opts_t;

typedef struct kms_keystore kms_keystore_t;
typedef struct kms_key kms_key_t;

/* What a key file says in the clear (no secret needed to read it). */
typedef struct {
    kms_alg_t alg;
    kms_role_t role;
    uint32_t index; /* 0 for the identity key; i for name-<i>.key */
    kms_seal_t seal;
    int64_t created;       /* unix seconds */
    uint64_t kdf_opslimit; /* 0 unless KMS_SEAL_PASSPHRASE */
    uint64_t kdf_memlimit; /* 0 unless KMS_SEAL_PASSPHRASE */
    uint8_t pk[KMS_PK_LEN];
} kms_keyfile_info_t;

/*
 * Fill o with zeros and data_dir/amnesia/create as given, then take the
 * passphrase from RON_PASSPHRASE and the secret file from
 * RON_ROOT_SECRET_FILE when set and non-empty. data_dir is borrowed; the
 * environment strings are views valid until the environment changes.
 */
void kms_opts_from_env(kms_opts_t *o, const char *data_dir, bool amnesia, bool create);

/*
 * Open the key store described by o: load every key in <data_dir>/keys,
 * creating the identity key and name key 0 when missing and o->create is set
 * (the directory too, mode 0700), under flock on the key directory so
 * concurrent first starts agree; in amnesia generate both in RAM. Logs a
 * loud warning (ron_warn) when any key is, or would be, stored unsealed.
 * On error *ks_out is untouched and err (errcap bytes) gets a one-line
 * reason naming the file. Returns 0 or:
 *   RON_ENOKEYS    no identity key and o->create is false;
 *   RON_EAUTH      wrong passphrase or secret (the AEAD tag does not verify);
 *   RON_EKEYLOCKED a file is sealed and the secret it needs is not configured;
 *   RON_EKEYPERM   the directory or a file is open to group/others, not a
 *                  regular file/directory, or owned by another user;
 *   RON_EKEYFILE   a file is malformed or tampered with (checksum, magic,
 *                  sizes, algorithm, or its secret does not match its public key);
 *   RON_ECONFIG    both a passphrase and a secret file are set, the secret file
 *                  is too short/long or lies in the keys directory, or the
 *                  passphrase is too long;
 *   -errno         the file system failed.
 * Blocking (file I/O, Argon2id): call it before the loop runs or from a worker.
 */
int kms_keystore_open(const kms_opts_t *o, kms_keystore_t **ks_out, char *err, size_t errcap);

/*
 * Node start: kms_opts_from_env(data_dir, amnesia, create = true) then
 * kms_keystore_open, and log the node id (info). Returns as kms_keystore_open.
 */
int kms_node_keys_open_or_create(const char *data_dir, bool amnesia, kms_keystore_t **ks_out,
                                 char *err, size_t errcap);

/*
 * A RAM-only (amnesia) store whose identity key is the one of seed (copied;
 * KMS_SEED_LEN bytes) and whose name key 0 is fresh: how a macronode child in
 * amnesia takes the identity the kernel handed it, so its TLS id is the
 * node's. Writes nothing. Returns 0 with *ks_out, or RON_EAUTH / -ENOMEM.
 */
int kms_keystore_from_identity_seed(const uint8_t seed[static KMS_SEED_LEN],
                                    kms_keystore_t **ks_out);

/*
 * A macronode child's view of the node's persistent key store, built from
 * the identity seed the kernel handed it (fd RON_IDENTITY_FD), so the child
 * needs neither the passphrase nor the secret file. The public part of
 * <data_dir>/keys/identity.key is read without its secret (modes and
 * checksum checked as kms_keys_inspect does) and must hold seed's public key
 * (else RON_EKEYFILE: the kernel and the files disagree); the store reports
 * that file's seal and the key directory. It holds no name keys (count 0):
 * only the kernel and the CLI sign names. Returns 0 with *ks_out, or an
 * error as kms_keys_inspect with err.
 */
int kms_keystore_from_handoff(const char *data_dir, const uint8_t seed[static KMS_SEED_LEN],
                              kms_keystore_t **ks_out, char *err, size_t errcap);

/*
 * Take RON_PASSPHRASE out of this process once the key store is open:
 * overwrite every `RON_PASSPHRASE=...` string of the environment in place
 * (name and value: the block /proc/PID/environ shows) with zeros, after
 * removing it from environ (unsetenv), so neither /proc/PID/environ nor a
 * child started later sees it. A view from kms_opts_from_env is dead
 * afterwards. The strings must be writable (as exec and setenv leave them;
 * not a putenv of a literal). Not thread-safe (as setenv): call it before
 * threads run. Returns the number of entries wiped.
 */
int kms_env_scrub(void);

/* Wipe every secret (sodium_free) and free ks. NULL does nothing. */
void kms_keystore_free(kms_keystore_t *ks);

/* The identity key; a view valid until kms_keystore_free. Never NULL. */
const kms_key_t *kms_keystore_identity(const kms_keystore_t *ks);
/* Number of name-signing keys (>= 1 after a successful open; 0 from kms_keystore_from_handoff). */
size_t kms_keystore_name_key_count(const kms_keystore_t *ks);
/* The i-th name key (i < count), a view as above; NULL when out of range. */
const kms_key_t *kms_keystore_name_key(const kms_keystore_t *ks, size_t i);
/* The node id: BLAKE3-256 of the identity public key. */
void kms_keystore_node_id(const kms_keystore_t *ks, uint8_t id_out[static KMS_NODE_ID_LEN]);
/* Seal used for files this store writes (KMS_SEAL_NONE in amnesia). */
kms_seal_t kms_keystore_seal(const kms_keystore_t *ks);
/* The key directory, or "" in amnesia. A view valid until kms_keystore_free. */
const char *kms_keystore_dir(const kms_keystore_t *ks);
/* Is this a RAM-only (amnesia) store? */
bool kms_keystore_is_amnesia(const kms_keystore_t *ks);

/* The key's algorithm, role and index. */
kms_alg_t kms_key_alg(const kms_key_t *k);
kms_role_t kms_key_role(const kms_key_t *k);
uint32_t kms_key_index(const kms_key_t *k);
/* The public key (KMS_PK_LEN bytes); a view valid until kms_keystore_free. */
const uint8_t *kms_key_public(const kms_key_t *k);

/*
 * Sign msg (len bytes, borrowed) with k: Ed25519, detached, into sig_out.
 * Returns 0. Any thread (a per-key mutex guards the secret's protection).
 */
int kms_key_sign(const kms_key_t *k, const uint8_t *msg, size_t len,
                 uint8_t sig_out[static KMS_SIG_LEN]);

/*
 * Check an Ed25519 detached signature of msg by pk. Returns 0 or RON_EAUTH.
 * Pure; any thread.
 */
int kms_verify(const uint8_t pk[static KMS_PK_LEN], const uint8_t *msg, size_t len,
               const uint8_t sig[static KMS_SIG_LEN]);

/* node id of a public key: BLAKE3-256(pk). Pure. */
void kms_node_id_of(const uint8_t pk[static KMS_PK_LEN], uint8_t id_out[static KMS_NODE_ID_LEN]);

/*
 * The TLS hook: copy k's 32-byte Ed25519 seed into seed_out, which must be
 * sodium_malloc memory of at least KMS_SEED_LEN bytes that the caller wipes
 * and frees (sodium_free). OpenSSL takes a seed as the raw private key
 * (EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, ...)). Returns 0.
 * Any thread.
 */
int kms_key_export_seed(const kms_key_t *k, uint8_t *seed_out);

/*
 * The same hook without a caller buffer: call cb(seed, KMS_SEED_LEN, arg)
 * with a view of the seed valid during the call only (the memory goes back
 * to PROT_NONE afterwards); cb must not keep the pointer. Returns cb's
 * result. Any thread; cb runs on the calling thread.
 */
int kms_key_export_to(const kms_key_t *k, int (*cb)(const uint8_t *seed, size_t len, void *arg),
                      void *arg);

/*
 * Parse one key file's bytes (borrowed) and check its format and checksum,
 * without decrypting anything. Returns 0 with info_out filled, or
 * RON_EKEYFILE. Pure; this is the fuzz target's entry point.
 */
int kms_keyfile_parse(const uint8_t *buf, size_t len, kms_keyfile_info_t *info_out);

/*
 * Read the public part of every key file in <data_dir>/keys without any
 * secret (for `ron key show`): the identity key first, then name keys by
 * index, at most cap entries into infos (count in *n_out). Checks modes and
 * checksums as kms_keystore_open does. Returns 0, RON_ENOKEYS when there is
 * no identity key, or an error as kms_keystore_open with err.
 */
int kms_keys_inspect(const char *data_dir, kms_keyfile_info_t *infos, size_t cap, size_t *n_out,
                     char *err, size_t errcap);

/* Short names: "ed25519"; "identity"/"name"; "none"/"passphrase"/"secret-file". */
const char *kms_alg_name(kms_alg_t alg);
const char *kms_role_name(kms_role_t role);
const char *kms_seal_name(kms_seal_t seal);

#endif
