/*
 * kms_store.c - the key store: the directory <data_dir>/keys, loading and
 * creating key files, and the sealing key derived from the configured
 * secret (passphrase via Argon2id, or a secret file via BLAKE3 derive_key).
 *
 * Invariants: a key file is written once, atomically (temp file with
 * O_EXCL, fsync, rename, directory fsync), and never rewritten; every byte
 * that held a secret (passphrase copy, secret file, sealing key, seed, file
 * buffer) is in sodium_malloc memory and freed with sodium_free; nothing is
 * written in amnesia. The sealing key is derived once per (seal, salt, KDF
 * limits) during an open, so one Argon2id run serves all files a store wrote.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <blake3.h>
#include <sodium.h>

#include "ron_fs.h"
#include "kms_internal.h"
#include "kms_key_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

extern char **environ;

struct kms_keystore {
    bool amnesia;
    kms_seal_t seal; /* seal of files this store writes */
    char dir[KMS_PATH_MAX];
    kms_key_t *identity;
    kms_key_t *names[KMS_MAX_NAME_KEYS];
    size_t n_names;
};

/* State of one open: the configured secret and the cached sealing key. */
typedef struct {
    const kms_opts_t *o;
    kms_seal_t seal; /* what the options configure */
    uint8_t *secret; /* sodium_malloc: passphrase or secret file bytes; NULL if none */
    size_t secret_len;
    uint8_t *key; /* sodium_malloc, KMS__SEAL_KEY_LEN; valid when have_key */
    bool have_key;
    uint8_t salt[KMS__SALT_LEN]; /* salt, limits of the cached key */
    uint64_t ops, mem;
    char *err;
    size_t errcap;
} open_ctx_t;

static int fail(open_ctx_t *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
fail(open_ctx_t *c, int rc, const char *fmt, ...)
{
    va_list ap;
    if (c->errcap > 0) {
        va_start(ap, fmt);
        vsnprintf(c->err, c->errcap, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- files ---- */

/* The key directory must be a directory we own with no group/other bits. */
static int
dir_check(open_ctx_t *c, const char *dir)
{
    struct stat st;
    if (lstat(dir, &st) < 0)
        return errno == ENOENT ? fail(c, RON_ENOKEYS, "no key store in %s", dir)
                               : fail(c, -errno, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0)
        return fail(c, RON_EKEYPERM,
                    "key directory %s must be a directory owned by uid %u with mode 0700 "
                    "(it has mode %04o)",
                    dir, (unsigned)geteuid(), (unsigned)(st.st_mode & 07777));
    return 0;
}

/*
 * Read the key file at path into buf (KMS_FILE_MAX bytes). Returns the length,
 * -ENOENT, RON_EKEYPERM (not a regular file we own, mode open to others, or
 * a symlink), RON_EKEYFILE (too large) or -errno.
 */
static long
file_read(open_ctx_t *c, const char *path, uint8_t *buf)
{
    struct stat st;
    long len = 0, rc;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        if (errno == ELOOP)
            return fail(c, RON_EKEYPERM, "key file %s is a symbolic link", path);
        return fail(c, -errno, "%s: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) < 0) {
        rc = fail(c, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
        rc = fail(c, RON_EKEYPERM,
                  "key file %s must be a regular file owned by uid %u with mode 0600 "
                  "(it has mode %04o); refusing it",
                  path, (unsigned)geteuid(), (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size > KMS_FILE_MAX) {
        rc = fail(c, RON_EKEYFILE, "key file %s is larger than %d bytes", path, KMS_FILE_MAX);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, (size_t)KMS_FILE_MAX + 1 - (size_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = fail(c, -errno, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += n;
        if (len > KMS_FILE_MAX) {
            rc = fail(c, RON_EKEYFILE, "key file %s grew past %d bytes", path, KMS_FILE_MAX);
            goto out;
        }
    }
    rc = len;
out:
    close(fd);
    return rc;
}

/* Write buf as dir/base atomically: .base.tmp (0600, O_EXCL), fsync, rename, fsync dir. */
static int
file_write_atomic(open_ctx_t *c, const char *dir, const char *base, const uint8_t *buf, size_t len)
{
    char tmp[KMS_PATH_MAX + 32], dst[KMS_PATH_MAX + 32];
    size_t off = 0;
    int fd, rc = 0;

    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, base);
    snprintf(dst, sizeof dst, "%s/%s", dir, base);
    if (unlink(tmp) < 0 && errno != ENOENT) /* a crash may have left one */
        return fail(c, -errno, "%s: %s", tmp, strerror(errno));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail(c, -errno, "%s: %s", tmp, strerror(errno));
    if (fchmod(fd, 0600) < 0) { /* defensive: the umask can only clear bits */
        rc = -errno;
        goto out;
    }
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        rc = -errno;
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, dst) < 0) {
        rc = -errno;
        goto out;
    }
    rc = ron_fsync_dir(dir);
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0) {
        unlink(tmp);
        return fail(c, rc, "writing %s: %s", dst, ron_strerror(rc));
    }
    return 0;
}

/* ---- the configured secret and the sealing key ---- */

static int
secret_file_load(open_ctx_t *c, const char *keys_dir)
{
    const char *path = c->o->secret_file;
    char real[PATH_MAX], realdir[PATH_MAX];
    struct stat st;
    ssize_t n;
    int fd, rc = 0;

    if (realpath(path, real) == NULL)
        return fail(c, RON_ECONFIG, "%s=%s: %s", KMS_ENV_SECRET_FILE, path, strerror(errno));
    if (keys_dir != NULL && realpath(keys_dir, realdir) != NULL) {
        size_t dl = strlen(realdir);
        if (strncmp(real, realdir, dl) == 0 && real[dl] == '/')
            return fail(c, RON_ECONFIG,
                        "%s=%s lies in the key directory %s; keep the secret apart from the keys",
                        KMS_ENV_SECRET_FILE, path, keys_dir);
    }
    fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(c, RON_ECONFIG, "%s=%s: %s", KMS_ENV_SECRET_FILE, path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = fail(c, RON_ECONFIG, "%s=%s is not a regular file", KMS_ENV_SECRET_FILE, path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        rc = fail(c, RON_EKEYPERM, "%s=%s has mode %04o; make it 0600 or 0400", KMS_ENV_SECRET_FILE,
                  path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size < KMS_SECRET_FILE_MIN || st.st_size > KMS_SECRET_FILE_MAX) {
        rc = fail(c, RON_ECONFIG, "%s=%s must hold %d to %d bytes (it has %lld)",
                  KMS_ENV_SECRET_FILE, path, KMS_SECRET_FILE_MIN, KMS_SECRET_FILE_MAX,
                  (long long)st.st_size);
        goto out;
    }
    c->secret = sodium_malloc((size_t)st.st_size);
    if (c->secret == NULL) {
        rc = fail(c, -ENOMEM, "sodium_malloc failed");
        goto out;
    }
    n = read(fd, c->secret, (size_t)st.st_size);
    if (n != st.st_size) {
        rc = fail(c, RON_ECONFIG, "%s=%s: short read", KMS_ENV_SECRET_FILE, path);
        goto out;
    }
    c->secret_len = (size_t)n;
out:
    close(fd);
    return rc;
}

static int
secret_load(open_ctx_t *c, const char *keys_dir)
{
    const kms_opts_t *o = c->o;
    bool pass = o->passphrase != NULL, file = o->secret_file != NULL;

    c->seal = KMS_SEAL_NONE;
    if (pass && file)
        return fail(c, RON_ECONFIG,
                    "both a passphrase (%s) and a secret file (%s) are set; "
                    "set only one",
                    KMS_ENV_PASSPHRASE, KMS_ENV_SECRET_FILE);
    if (pass) {
        size_t len = strnlen(o->passphrase, KMS_PASSPHRASE_MAX + 1);
        if (len == 0 || len > KMS_PASSPHRASE_MAX)
            return fail(c, RON_ECONFIG, "the passphrase must have 1 to %d bytes",
                        KMS_PASSPHRASE_MAX);
        c->secret = sodium_malloc(len);
        if (c->secret == NULL)
            return fail(c, -ENOMEM, "sodium_malloc failed");
        memcpy(c->secret, o->passphrase, len);
        c->secret_len = len;
        c->seal = KMS_SEAL_PASSPHRASE;
        return 0;
    }
    if (file) {
        int rc = secret_file_load(c, keys_dir);
        if (rc < 0)
            return rc;
        c->seal = KMS_SEAL_SECRET_FILE;
    }
    return 0;
}

/*
 * The sealing key for (seal, salt, ops, mem): the cached one when they match,
 * else derived now (Argon2id or BLAKE3 derive_key) and cached. Returns 0,
 * RON_EKEYLOCKED when seal is not the configured one, or -ENOMEM.
 */
static int
seal_key_get(open_ctx_t *c, kms_seal_t seal, const uint8_t salt[static KMS__SALT_LEN], uint64_t ops,
             uint64_t mem, const char *path)
{
    if (seal != c->seal)
        return fail(c, RON_EKEYLOCKED, "key file %s is sealed with a %s but %s; set %s", path,
                    seal == KMS_SEAL_PASSPHRASE ? "passphrase" : "secret file",
                    c->seal == KMS_SEAL_NONE ? "no secret is configured"
                                             : "the other kind of secret is configured",
                    seal == KMS_SEAL_PASSPHRASE ? KMS_ENV_PASSPHRASE : KMS_ENV_SECRET_FILE);
    if (c->have_key && memcmp(salt, c->salt, KMS__SALT_LEN) == 0 && ops == c->ops && mem == c->mem)
        return 0;
    if (c->key == NULL && (c->key = sodium_malloc(KMS__SEAL_KEY_LEN)) == NULL)
        return fail(c, -ENOMEM, "sodium_malloc failed");
    c->have_key = false;
    if (seal == KMS_SEAL_PASSPHRASE) {
        if (crypto_pwhash(c->key, KMS__SEAL_KEY_LEN, (const char *)c->secret, c->secret_len, salt,
                          ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
            return fail(c, -ENOMEM, "Argon2id failed (out of memory for %llu bytes)",
                        (unsigned long long)mem);
    } else {
        blake3_hasher h;
        blake3_hasher_init_derive_key(&h, KMS__SEAL_CONTEXT);
        blake3_hasher_update(&h, c->secret, c->secret_len);
        blake3_hasher_update(&h, salt, KMS__SALT_LEN);
        blake3_hasher_finalize(&h, c->key, KMS__SEAL_KEY_LEN);
        sodium_memzero(&h, sizeof h);
    }
    memcpy(c->salt, salt, KMS__SALT_LEN);
    c->ops = ops;
    c->mem = mem;
    c->have_key = true;
    return 0;
}

/* ---- loading and creating keys ---- */

static void
key_path(char *out, size_t cap, const char *dir, kms_role_t role, uint32_t index)
{
    if (role == KMS_ROLE_IDENTITY)
        snprintf(out, cap, "%s/identity.key", dir);
    else
        snprintf(out, cap, "%s/name-%u.key", dir, (unsigned)index);
}

/* Read and parse path into f (views into buf); checks role and index. */
static int
key_file_parse(open_ctx_t *c, const char *path, kms_role_t role, uint32_t index, uint8_t *buf,
               kms__file_t *f)
{
    long len = file_read(c, path, buf);
    if (len < 0)
        return (int)len;
    if (kms__file_parse(buf, (size_t)len, f) < 0 || f->info.role != role || f->info.index != index)
        return fail(c, RON_EKEYFILE,
                    "key file %s is malformed or has been tampered with; refusing it", path);
    return 0;
}

static int
key_load(open_ctx_t *c, const char *path, kms_role_t role, uint32_t index, kms_key_t **out)
{
    uint8_t *buf = sodium_malloc(KMS_FILE_MAX + 1), *seed = sodium_malloc(KMS_SEED_LEN);
    kms__file_t f;
    kms_key_t *k = NULL;
    int rc;

    if (buf == NULL || seed == NULL) {
        rc = fail(c, -ENOMEM, "sodium_malloc failed");
        goto out;
    }
    if ((rc = key_file_parse(c, path, role, index, buf, &f)) < 0)
        goto out;
    if (f.info.seal != KMS_SEAL_NONE) {
        rc = seal_key_get(c, f.info.seal, f.salt, f.info.kdf_opslimit, f.info.kdf_memlimit, path);
        if (rc < 0)
            goto out;
    } else if (c->seal != KMS_SEAL_NONE) {
        ron_warn("KEY FILE %s IS STORED UNSEALED although a %s is configured: anyone who can "
                 "read it has this key",
                 path, kms_seal_name(c->seal));
    }
    rc = kms__file_open_seed(&f, f.info.seal != KMS_SEAL_NONE ? c->key : NULL, seed);
    if (rc == RON_EAUTH) {
        rc = fail(c, RON_EAUTH, "key file %s: wrong %s (the seal does not open)", path,
                  f.info.seal == KMS_SEAL_PASSPHRASE ? "passphrase" : "secret file");
        goto out;
    }
    if (rc < 0) {
        rc = fail(c, rc, "key file %s: %s", path, ron_strerror(rc));
        goto out;
    }
    if ((k = kms__key_from_seed(role, index, f.info.created, seed)) == NULL) {
        rc = fail(c, -ENOMEM, "sodium_malloc failed");
        goto out;
    }
    if (sodium_memcmp(k->pk, f.info.pk, KMS_PK_LEN) != 0) {
        rc = fail(c, RON_EKEYFILE, "key file %s: its secret does not match its public key", path);
        goto out;
    }
    *out = k;
    k = NULL;
out:
    kms__key_free(k);
    sodium_free(seed);
    sodium_free(buf);
    return rc;
}

/* A fresh key; in persistent mode also its file (dir != NULL). */
static int
key_create(open_ctx_t *c, const char *dir, kms_role_t role, uint32_t index, kms_key_t **out)
{
    uint8_t *seed = sodium_malloc(KMS_SEED_LEN), *buf = sodium_malloc(KMS__ED25519_FILE_LEN);
    kms_keyfile_info_t info;
    kms_key_t *k = NULL;
    char path[KMS_PATH_MAX + 32], base[32];
    long len;
    int rc = 0;

    if (seed == NULL || buf == NULL) {
        rc = fail(c, -ENOMEM, "sodium_malloc failed");
        goto out;
    }
    randombytes_buf(seed, KMS_SEED_LEN);
    memset(&info, 0, sizeof info);
    info.created = (int64_t)time(NULL);
    if ((k = kms__key_from_seed(role, index, info.created, seed)) == NULL) {
        rc = fail(c, -ENOMEM, "sodium_malloc failed");
        goto out;
    }
    if (dir == NULL)
        goto done;
    info.alg = KMS_ALG_ED25519;
    info.role = role;
    info.index = index;
    info.seal = c->seal;
    memcpy(info.pk, k->pk, KMS_PK_LEN);
    if (c->seal != KMS_SEAL_NONE) {
        uint8_t salt[KMS__SALT_LEN];
        uint64_t ops = 0, mem = 0;
        if (c->have_key) { /* reuse the salt and limits of a key already derived */
            memcpy(salt, c->salt, sizeof salt);
            ops = c->ops;
            mem = c->mem;
        } else {
            randombytes_buf(salt, sizeof salt);
            if (c->seal == KMS_SEAL_PASSPHRASE) {
                ops = c->o->kdf_opslimit ? c->o->kdf_opslimit : crypto_pwhash_OPSLIMIT_MODERATE;
                mem = c->o->kdf_memlimit ? c->o->kdf_memlimit : crypto_pwhash_MEMLIMIT_MODERATE;
            }
        }
        key_path(path, sizeof path, dir, role, index);
        if ((rc = seal_key_get(c, c->seal, salt, ops, mem, path)) < 0)
            goto out;
        info.kdf_opslimit = ops;
        info.kdf_memlimit = mem;
    }
    len = kms__file_encode(&info, c->salt, c->have_key ? c->key : NULL, seed, buf,
                           KMS__ED25519_FILE_LEN);
    if (len < 0) {
        rc = fail(c, (int)len, "encoding a key file: %s", ron_strerror((int)len));
        goto out;
    }
    if (role == KMS_ROLE_IDENTITY)
        snprintf(base, sizeof base, "identity.key");
    else
        snprintf(base, sizeof base, "name-%u.key", (unsigned)index);
    rc = file_write_atomic(c, dir, base, buf, (size_t)len);
    if (rc < 0)
        goto out;
    key_path(path, sizeof path, dir, role, index);
    ron_info("created %s key %s (%s, sealed: %s)", kms_role_name(role), path,
             kms_alg_name(KMS_ALG_ED25519), kms_seal_name(c->seal));
done:
    *out = k;
    k = NULL;
out:
    kms__key_free(k);
    sodium_free(buf);
    sodium_free(seed);
    return rc;
}

/* ---- the store ---- */

static int
store_keys_dir(open_ctx_t *c, const char *data_dir, char *dir_out)
{
    if (data_dir == NULL || data_dir[0] == '\0')
        return fail(c, RON_ECONFIG, "no data directory given for the key store");
    if (snprintf(dir_out, KMS_PATH_MAX, "%s/keys", data_dir) >= KMS_PATH_MAX - 24)
        return fail(c, -ENAMETOOLONG, "data directory path too long: %s", data_dir);
    return 0;
}

static int store_load_locked(open_ctx_t *c, kms_keystore_t *ks);

/* Load (or create) every key of a persistent store into ks, holding flock on its directory. */
static int
store_load(open_ctx_t *c, kms_keystore_t *ks)
{
    struct stat st;
    int lock_fd = -1, rc;

    if (c->o->create && lstat(ks->dir, &st) < 0 && errno == ENOENT) {
        if ((rc = ron_mkdir_p(ks->dir)) < 0)
            return fail(c, rc, "creating %s: %s", ks->dir, ron_strerror(rc));
    }
    if ((rc = dir_check(c, ks->dir)) < 0)
        return rc;
    /* Two nodes starting on one data dir: the second waits, then loads what the first created. */
    lock_fd = open(ks->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX) < 0) {
        rc = fail(c, -errno, "locking %s: %s", ks->dir, strerror(errno));
        goto out;
    }
    rc = store_load_locked(c, ks);
out:
    if (lock_fd >= 0)
        close(lock_fd); /* releases the lock */
    return rc;
}

static int
store_load_locked(open_ctx_t *c, kms_keystore_t *ks)
{
    char path[KMS_PATH_MAX + 32];
    int rc;

    key_path(path, sizeof path, ks->dir, KMS_ROLE_IDENTITY, 0);
    rc = key_load(c, path, KMS_ROLE_IDENTITY, 0, &ks->identity);
    if (rc == -ENOENT && !c->o->create)
        return fail(c, RON_ENOKEYS, "no identity key in %s", ks->dir);
    if (rc == -ENOENT)
        rc = key_create(c, ks->dir, KMS_ROLE_IDENTITY, 0, &ks->identity);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < KMS_MAX_NAME_KEYS; i++) {
        key_path(path, sizeof path, ks->dir, KMS_ROLE_NAME, i);
        rc = key_load(c, path, KMS_ROLE_NAME, i, &ks->names[i]);
        if (rc == -ENOENT)
            break; /* name keys are numbered without gaps */
        if (rc < 0)
            return rc;
        ks->n_names++;
    }
    if (ks->n_names == 0) {
        if (!c->o->create)
            return fail(c, RON_ENOKEYS, "no name key in %s", ks->dir);
        if ((rc = key_create(c, ks->dir, KMS_ROLE_NAME, 0, &ks->names[0])) < 0)
            return rc;
        ks->n_names = 1;
    }
    return 0;
}

void
kms_opts_from_env(kms_opts_t *o, const char *data_dir, bool amnesia, bool create)
{
    const char *p = getenv(KMS_ENV_PASSPHRASE), *f = getenv(KMS_ENV_SECRET_FILE);
    memset(o, 0, sizeof *o);
    o->data_dir = data_dir;
    o->amnesia = amnesia;
    o->create = create;
    o->passphrase = p != NULL && p[0] != '\0' ? p : NULL;
    o->secret_file = f != NULL && f[0] != '\0' ? f : NULL;
}

int
kms_keystore_open(const kms_opts_t *o, kms_keystore_t **ks_out, char *err, size_t errcap)
{
    open_ctx_t c = {.o = o, .err = err, .errcap = errcap};
    kms_keystore_t *ks = ron_xcalloc(1, sizeof *ks);
    int rc;

    if (errcap > 0)
        err[0] = '\0';
    if (sodium_init() < 0) {
        rc = fail(&c, RON_EAUTH, "libsodium failed to initialise");
        goto out;
    }
    ks->amnesia = o->amnesia;
    if (o->amnesia) { /* RAM only: no directory, no secret, no file */
        ks->seal = KMS_SEAL_NONE;
        if ((rc = key_create(&c, NULL, KMS_ROLE_IDENTITY, 0, &ks->identity)) < 0 ||
            (rc = key_create(&c, NULL, KMS_ROLE_NAME, 0, &ks->names[0])) < 0)
            goto out;
        ks->n_names = 1;
        goto out;
    }
    if ((rc = store_keys_dir(&c, o->data_dir, ks->dir)) < 0)
        goto out;
    if ((rc = secret_load(&c, ks->dir)) < 0)
        goto out;
    ks->seal = c.seal;
    if (c.seal == KMS_SEAL_NONE)
        ron_warn("KEYS ARE NOT SEALED: %s holds this node's secret keys in the clear (mode 0600); "
                 "set %s or %s to seal them at rest",
                 ks->dir, KMS_ENV_PASSPHRASE, KMS_ENV_SECRET_FILE);
    rc = store_load(&c, ks);
out:
    sodium_free(c.key);
    sodium_free(c.secret);
    if (rc < 0) {
        kms_keystore_free(ks);
        return rc;
    }
    *ks_out = ks;
    return 0;
}

int
kms_keystore_from_identity_seed(const uint8_t seed[static KMS_SEED_LEN], kms_keystore_t **ks_out)
{
    open_ctx_t c = {0};
    kms_keystore_t *ks;
    int rc;

    if (sodium_init() < 0)
        return RON_EAUTH;
    ks = ron_xcalloc(1, sizeof *ks);
    ks->amnesia = true;
    ks->seal = KMS_SEAL_NONE;
    ks->identity = kms__key_from_seed(KMS_ROLE_IDENTITY, 0, (int64_t)time(NULL), seed);
    if (ks->identity == NULL) {
        kms_keystore_free(ks);
        return -ENOMEM;
    }
    if ((rc = key_create(&c, NULL, KMS_ROLE_NAME, 0, &ks->names[0])) < 0) {
        kms_keystore_free(ks);
        return rc;
    }
    ks->n_names = 1;
    *ks_out = ks;
    return 0;
}

int
kms_keystore_from_handoff(const char *data_dir, const uint8_t seed[static KMS_SEED_LEN],
                          kms_keystore_t **ks_out, char *err, size_t errcap)
{
    kms_opts_t o = {.data_dir = data_dir};
    open_ctx_t c = {.o = &o, .err = err, .errcap = errcap};
    kms_keyfile_info_t info;
    kms_keystore_t *ks = NULL;
    size_t n = 0;
    int rc;

    if (sodium_init() < 0)
        return fail(&c, RON_EAUTH, "libsodium failed to initialise");
    if ((rc = kms_keys_inspect(data_dir, &info, 1, &n, err, errcap)) < 0)
        return rc;
    ks = ron_xcalloc(1, sizeof *ks);
    ks->seal = info.seal;
    ks->identity = kms__key_from_seed(KMS_ROLE_IDENTITY, 0, info.created, seed);
    if (ks->identity == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = store_keys_dir(&c, data_dir, ks->dir)) < 0)
        goto out;
    if (sodium_memcmp(kms_key_public(ks->identity), info.pk, KMS_PK_LEN) != 0) {
        rc = fail(&c, RON_EKEYFILE,
                  "%s/identity.key holds another public key than the identity handed over",
                  ks->dir);
        goto out;
    }
out:
    if (rc < 0) {
        kms_keystore_free(ks);
        return rc;
    }
    *ks_out = ks;
    return 0;
}

int
kms_env_scrub(void)
{
    static const char prefix[] = KMS_ENV_PASSPHRASE "=";
    char *found[16];
    int n = 0, wiped = 0;

    /* bounded: at most 16 entries per round, rounds until none is left */
    for (int round = 0; round < 64; round++) {
        n = 0;
        for (char **e = environ; *e != NULL && n < 16; e++)
            if (strncmp(*e, prefix, sizeof prefix - 1) == 0)
                found[n++] = *e;
        if (n == 0)
            break;
        unsetenv(KMS_ENV_PASSPHRASE); /* out of environ first: then nobody reads a half-wiped one */
        for (int i = 0; i < n; i++)
            sodium_memzero(found[i], strlen(found[i]));
        wiped += n;
    }
    return wiped;
}

int
kms_node_keys_open_or_create(const char *data_dir, bool amnesia, kms_keystore_t **ks_out, char *err,
                             size_t errcap)
{
    kms_opts_t o;
    uint8_t id[KMS_NODE_ID_LEN];
    char hex[2 * KMS_NODE_ID_LEN + 1];
    int rc;

    kms_opts_from_env(&o, data_dir, amnesia, true);
    if ((rc = kms_keystore_open(&o, ks_out, err, errcap)) < 0)
        return rc;
    kms_keystore_node_id(*ks_out, id);
    ron_hex_encode(hex, id, sizeof id);
    ron_info("node id %s (keys: %s, sealed: %s)", hex,
             amnesia ? "RAM only (amnesia)" : kms_keystore_dir(*ks_out),
             kms_seal_name(kms_keystore_seal(*ks_out)));
    return 0;
}

void
kms_keystore_free(kms_keystore_t *ks)
{
    if (ks == NULL)
        return;
    kms__key_free(ks->identity);
    for (size_t i = 0; i < ks->n_names; i++)
        kms__key_free(ks->names[i]);
    free(ks);
}

const kms_key_t *
kms_keystore_identity(const kms_keystore_t *ks)
{
    return ks->identity;
}

size_t
kms_keystore_name_key_count(const kms_keystore_t *ks)
{
    return ks->n_names;
}

const kms_key_t *
kms_keystore_name_key(const kms_keystore_t *ks, size_t i)
{
    return i < ks->n_names ? ks->names[i] : NULL;
}

void
kms_keystore_node_id(const kms_keystore_t *ks, uint8_t id_out[static KMS_NODE_ID_LEN])
{
    kms_node_id_of(ks->identity->pk, id_out);
}

kms_seal_t
kms_keystore_seal(const kms_keystore_t *ks)
{
    return ks->seal;
}

const char *
kms_keystore_dir(const kms_keystore_t *ks)
{
    return ks->dir;
}

bool
kms_keystore_is_amnesia(const kms_keystore_t *ks)
{
    return ks->amnesia;
}

/* ---- reading public parts only (`ron key show`) ---- */

static int
inspect_one(open_ctx_t *c, const char *dir, kms_role_t role, uint32_t index,
            kms_keyfile_info_t *info_out, uint8_t *buf)
{
    char path[KMS_PATH_MAX + 32];
    kms__file_t f;
    int rc;

    key_path(path, sizeof path, dir, role, index);
    if ((rc = key_file_parse(c, path, role, index, buf, &f)) < 0)
        return rc;
    *info_out = f.info;
    return 0;
}

int
kms_keys_inspect(const char *data_dir, kms_keyfile_info_t *infos, size_t cap, size_t *n_out,
                 char *err, size_t errcap)
{
    kms_opts_t o = {.data_dir = data_dir};
    open_ctx_t c = {.o = &o, .err = err, .errcap = errcap};
    char dir[KMS_PATH_MAX];
    uint8_t *buf = ron_xmalloc(KMS_FILE_MAX + 1); /* public parts only... */
    size_t n = 0;
    int rc;

    if (errcap > 0)
        err[0] = '\0';
    *n_out = 0;
    if ((rc = store_keys_dir(&c, data_dir, dir)) < 0 || (rc = dir_check(&c, dir)) < 0)
        goto out;
    if (cap == 0) {
        rc = fail(&c, RON_EINVAL, "no room for the identity key");
        goto out;
    }
    rc = inspect_one(&c, dir, KMS_ROLE_IDENTITY, 0, &infos[n], buf);
    if (rc == -ENOENT)
        rc = fail(&c, RON_ENOKEYS, "no identity key in %s", dir);
    if (rc < 0)
        goto out;
    n++;
    for (uint32_t i = 0; i < KMS_MAX_NAME_KEYS && n < cap; i++) {
        rc = inspect_one(&c, dir, KMS_ROLE_NAME, i, &infos[n], buf);
        if (rc == -ENOENT) {
            rc = 0;
            break;
        }
        if (rc < 0)
            goto out;
        n++;
    }
    *n_out = n;
out:
    sodium_memzero(buf, KMS_FILE_MAX + 1); /* ...but an unsealed file's buffer holds a seed */
    free(buf);
    return rc;
}
