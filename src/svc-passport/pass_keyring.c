/*
 * pass_keyring.c - the passport keyring: capability root keys and passport
 * signing keys, each with a kid, in one sodium_malloc array; its file
 * codec and atomic save.
 *
 * File (all integers big-endian; docs/protocol/passport.md):
 *   off  size  meaning
 *   0    8     magic "RONPKR1\n"
 *   8    1     version 1
 *   9    1     seal: 0 clear (mode 0600, checksummed), 1 XChaCha20-Poly1305
 *   10   24    nonce (zero when clear)
 *   34   4     body length L (plaintext)
 *   38   L     body, +16 bytes tag when sealed (header = associated data),
 *              or followed by BLAKE2b-256 of bytes 0..38+L when clear
 * body: u32 next kid number, u8 count, then per key: u8 kind, u8 kid
 * length, kid, i64 created, i64 retired, 32 secret, 32 public key.
 * Invariants: a decoded keyring has distinct kids of [a-z0-9] and at most
 * one current key per kind; plaintext bodies exist only in sodium_malloc
 * memory; any byte changed in a file makes it RON_EPASSKEYRING.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "pass_internal.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_util.h"

#define ENTRY_MAX (2 + AUTH_MAX_KID + 16 + 2 * PASS__SECRET_LEN)
#define BODY_MAX (5 + PASS__MAX_ENTRIES * ENTRY_MAX)

void
pass__keyring_init(pass__keyring_t *kr, const char *path, const uint8_t *seal)
{
    memset(kr, 0, sizeof *kr);
    kr->keys = sodium_malloc(PASS__MAX_ENTRIES * sizeof *kr->keys);
    if (kr->keys == NULL)
        abort(); /* OOM, as ron_xmalloc */
    sodium_memzero(kr->keys, PASS__MAX_ENTRIES * sizeof *kr->keys);
    kr->next_seq = 1;
    kr->path = path != NULL ? ron_xstrdup(path) : NULL;
    if (seal != NULL) {
        kr->seal = sodium_malloc(PASS__SECRET_LEN);
        if (kr->seal == NULL)
            abort();
        memcpy(kr->seal, seal, PASS__SECRET_LEN);
    }
}

void
pass__keyring_close(pass__keyring_t *kr)
{
    sodium_free(kr->keys); /* wipes */
    sodium_free(kr->seal);
    free(kr->path);
    memset(kr, 0, sizeof *kr);
}

pass__key_t *
pass__keyring_current(pass__keyring_t *kr, pass_key_kind_t kind)
{
    for (size_t i = 0; i < kr->n; i++)
        if (kr->keys[i].kind == kind && kr->keys[i].retired == 0)
            return &kr->keys[i];
    return NULL;
}

static void
drop_at(pass__keyring_t *kr, size_t i)
{
    memmove(&kr->keys[i], &kr->keys[i + 1], (kr->n - i - 1) * sizeof kr->keys[0]);
    kr->n--;
    sodium_memzero(&kr->keys[kr->n], sizeof kr->keys[0]);
}

void
pass__keyring_add(pass__keyring_t *kr, pass_key_kind_t kind, int64_t now)
{
    pass__key_t *cur = pass__keyring_current(kr, kind), *k;
    size_t count = 0, oldest = SIZE_MAX;

    if (cur != NULL)
        cur->retired = now > cur->created ? now : cur->created;
    for (size_t i = 0; i < kr->n; i++)
        if (kr->keys[i].kind == kind) {
            count++;
            if (oldest == SIZE_MAX || kr->keys[i].retired < kr->keys[oldest].retired)
                oldest = i;
        }
    if (count >= PASS_KEYRING_MAX) /* full: the oldest replaced key goes before its grace ends */
        drop_at(kr, oldest);
    k = &kr->keys[kr->n++];
    sodium_memzero(k, sizeof *k);
    k->kind = (uint8_t)kind;
    snprintf(k->kid, sizeof k->kid, "%c%u", kind == PASS_KEY_CAP ? 'c' : 'p', kr->next_seq++);
    k->created = now;
    randombytes_buf(k->secret, sizeof k->secret);
    if (kind == PASS_KEY_SIGN)
        crypto_sign_seed_keypair(k->pk, k->sk, k->secret);
}

int
pass__keyring_drop(pass__keyring_t *kr, int64_t grace, int64_t now)
{
    int dropped = 0;
    size_t i = 0;
    while (i < kr->n) {
        const pass__key_t *k = &kr->keys[i];
        if (k->retired != 0 && k->retired <= now - grace) {
            drop_at(kr, i);
            dropped++;
        } else {
            i++;
        }
    }
    return dropped;
}

int
pass__keyring_drop_kind(pass__keyring_t *kr, pass_key_kind_t kind)
{
    int dropped = 0;
    size_t i = 0;
    while (i < kr->n) {
        if (kr->keys[i].kind == kind) {
            drop_at(kr, i);
            dropped++;
        } else {
            i++;
        }
    }
    return dropped;
}

/* ---- codec ---- */

static void
put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t
get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put_i64(uint8_t *p, int64_t s)
{
    uint64_t v = (uint64_t)s;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static int64_t
get_i64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

/* Serialize the entries into body (sodium_malloc, BODY_MAX). Returns its length. */
static size_t
body_encode(const pass__keyring_t *kr, uint8_t *body)
{
    size_t o = 0;
    put_u32(body, kr->next_seq);
    body[4] = (uint8_t)kr->n;
    o = 5;
    for (size_t i = 0; i < kr->n; i++) {
        const pass__key_t *k = &kr->keys[i];
        size_t kl = strlen(k->kid);
        body[o++] = k->kind;
        body[o++] = (uint8_t)kl;
        memcpy(body + o, k->kid, kl);
        o += kl;
        put_i64(body + o, k->created);
        put_i64(body + o + 8, k->retired);
        o += 16;
        memcpy(body + o, k->secret, PASS__SECRET_LEN);
        memcpy(body + o + PASS__SECRET_LEN, k->pk, KMS_PK_LEN);
        o += PASS__SECRET_LEN + KMS_PK_LEN;
    }
    return o;
}

long
pass__keyring_encode(const pass__keyring_t *kr, uint8_t *buf, size_t cap)
{
    uint8_t *body = sodium_malloc(BODY_MAX);
    size_t bl, total;
    long rc;

    if (body == NULL)
        abort();
    bl = body_encode(kr, body);
    total = PASS__HDR_LEN + bl + (kr->seal != NULL ? crypto_aead_xchacha20poly1305_ietf_ABYTES
                                                   : PASS__SUM_LEN);
    if (total > cap) {
        rc = RON_ETOOBIG;
        goto out;
    }
    for (size_t i = 0; i < 8; i++) /* the magic without its NUL */
        buf[i] = (uint8_t)PASS__MAGIC[i];
    buf[8] = 1;
    buf[9] = kr->seal != NULL ? 1 : 0;
    memset(buf + 10, 0, 24);
    put_u32(buf + 34, (uint32_t)bl);
    if (kr->seal != NULL) {
        randombytes_buf(buf + 10, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(buf + PASS__HDR_LEN, NULL, body, bl, buf,
                                                   PASS__HDR_LEN, NULL, buf + 10, kr->seal);
    } else {
        memcpy(buf + PASS__HDR_LEN, body, bl);
        crypto_generichash(buf + PASS__HDR_LEN + bl, PASS__SUM_LEN, buf, PASS__HDR_LEN + bl, NULL,
                           0);
    }
    rc = (long)total;
out:
    sodium_free(body);
    return rc;
}

static bool
kid_ok(const char *kid, size_t len)
{
    if (len == 0 || len > AUTH_MAX_KID)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((kid[i] >= 'a' && kid[i] <= 'z') || (kid[i] >= '0' && kid[i] <= '9')))
            return false;
    return true;
}

/* Parse body[0..bl) into kr (empty). Returns 0 or RON_EPASSKEYRING. */
static int
body_decode(pass__keyring_t *kr, const uint8_t *body, size_t bl)
{
    size_t o = 5, n;
    bool cur[3] = {false, false, false};

    if (bl < 5)
        return RON_EPASSKEYRING;
    kr->next_seq = get_u32(body);
    n = body[4];
    if (n > PASS__MAX_ENTRIES)
        return RON_EPASSKEYRING;
    for (size_t i = 0; i < n; i++) {
        pass__key_t *k = &kr->keys[i];
        size_t kl;
        uint8_t pk[KMS_PK_LEN];
        if (bl - o < 2)
            return RON_EPASSKEYRING;
        k->kind = body[o];
        kl = body[o + 1];
        o += 2;
        if ((k->kind != PASS_KEY_CAP && k->kind != PASS_KEY_SIGN) || bl - o < kl + 16 + 64 ||
            !kid_ok((const char *)body + o, kl))
            return RON_EPASSKEYRING;
        memcpy(k->kid, body + o, kl);
        k->kid[kl] = '\0';
        o += kl;
        k->created = get_i64(body + o);
        k->retired = get_i64(body + o + 8);
        o += 16;
        memcpy(k->secret, body + o, PASS__SECRET_LEN);
        memcpy(k->pk, body + o + PASS__SECRET_LEN, KMS_PK_LEN);
        o += PASS__SECRET_LEN + KMS_PK_LEN;
        if (k->created < 0 || k->retired < 0 || (k->retired != 0 && k->retired < k->created))
            return RON_EPASSKEYRING;
        if (k->retired == 0) {
            if (cur[k->kind])
                return RON_EPASSKEYRING; /* two current keys of one kind */
            cur[k->kind] = true;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(kr->keys[j].kid, k->kid) == 0)
                return RON_EPASSKEYRING;
        if (k->kind == PASS_KEY_SIGN) { /* the public key must be the seed's */
            crypto_sign_seed_keypair(pk, k->sk, k->secret);
            if (sodium_memcmp(pk, k->pk, KMS_PK_LEN) != 0)
                return RON_EPASSKEYRING;
        }
        kr->n = i + 1;
    }
    return o == bl ? 0 : RON_EPASSKEYRING;
}

int
pass__keyring_decode(pass__keyring_t *kr, const uint8_t *buf, size_t len)
{
    uint8_t *body = NULL;
    uint8_t sum[PASS__SUM_LEN];
    size_t bl;
    int rc = RON_EPASSKEYRING;

    if (len < PASS__HDR_LEN || len > PASS_KEYRING_FILE_MAX || memcmp(buf, PASS__MAGIC, 8) != 0 ||
        buf[8] != 1 || buf[9] > 1)
        return RON_EPASSKEYRING;
    bl = get_u32(buf + 34);
    if (bl > BODY_MAX)
        return RON_EPASSKEYRING;
    body = sodium_malloc(BODY_MAX);
    if (body == NULL)
        abort();
    if (buf[9] == 1) {
        if (kr->seal == NULL || len != PASS__HDR_LEN + bl + crypto_aead_xchacha20poly1305_ietf_ABYTES ||
            crypto_aead_xchacha20poly1305_ietf_decrypt(body, NULL, NULL, buf + PASS__HDR_LEN,
                                                       len - PASS__HDR_LEN, buf, PASS__HDR_LEN,
                                                       buf + 10, kr->seal) != 0)
            goto out;
    } else {
        if (len != PASS__HDR_LEN + bl + PASS__SUM_LEN)
            goto out;
        crypto_generichash(sum, sizeof sum, buf, PASS__HDR_LEN + bl, NULL, 0);
        if (sodium_memcmp(sum, buf + PASS__HDR_LEN + bl, PASS__SUM_LEN) != 0)
            goto out;
        memcpy(body, buf + PASS__HDR_LEN, bl);
    }
    rc = body_decode(kr, body, bl);
out:
    if (rc < 0) {
        sodium_memzero(kr->keys, PASS__MAX_ENTRIES * sizeof kr->keys[0]);
        kr->n = 0;
    }
    sodium_free(body);
    return rc;
}

/* ---- file ---- */

int
pass__keyring_load(pass__keyring_t *kr)
{
    uint8_t *buf = NULL;
    struct stat st;
    ssize_t got;
    int fd, rc;

    fd = open(kr->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 1 : -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
        rc = RON_EKEYPERM;
        goto out;
    }
    if (st.st_size > (off_t)PASS_KEYRING_FILE_MAX) {
        rc = RON_EPASSKEYRING;
        goto out;
    }
    buf = sodium_malloc(PASS_KEYRING_FILE_MAX);
    if (buf == NULL)
        abort();
    got = read(fd, buf, PASS_KEYRING_FILE_MAX);
    if (got < 0) {
        rc = -errno;
        goto out;
    }
    rc = pass__keyring_decode(kr, buf, (size_t)got);
out:
    sodium_free(buf);
    close(fd);
    return rc;
}

/* The directory part of path into dir (cap bytes). */
static void
dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

int
pass__keyring_save(const pass__keyring_t *kr)
{
    char tmp[1100], dir[1024];
    uint8_t *buf = NULL;
    long len;
    int fd = -1, rc;

    if (kr->path == NULL)
        return 0;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", kr->path) >= sizeof tmp)
        return RON_EINVAL;
    dir_of(kr->path, dir, sizeof dir);
    if ((rc = ron_mkdir_private(dir)) < 0)
        return rc;
    buf = sodium_malloc(PASS_KEYRING_FILE_MAX);
    if (buf == NULL)
        abort();
    if ((len = pass__keyring_encode(kr, buf, PASS_KEYRING_FILE_MAX)) < 0) {
        rc = (int)len;
        goto out;
    }
    (void)unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if (write(fd, buf, (size_t)len) != (ssize_t)len || fsync(fd) < 0) {
        rc = errno != 0 ? -errno : -EIO;
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, kr->path) < 0) {
        rc = -errno;
        goto out;
    }
    rc = ron_fsync_dir(dir);
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        (void)unlink(tmp);
    sodium_free(buf);
    return rc;
}
