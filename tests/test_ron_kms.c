/*
 * test_ron_kms.c - ron-kms: key creation, modes, sealing round trips, wrong
 * secrets, tampering at every byte, amnesia, node id against b3sum,
 * signatures, the passphrase wiped from the environment, and a child's store
 * from a handed-over identity seed. Each test works in its own temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <blake3.h>
#include <sodium.h>

#include "kms_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

/* Cheap Argon2id limits so the passphrase tests run in well under a second. */
#define TEST_OPS 1
#define TEST_MEM (8u << 20)

typedef struct {
    char root[256];   /* temp dir */
    char data[300];   /* root/data: the data dir */
    char keys[320];   /* root/data/keys */
    char log[300];    /* root/log: ron_log output */
    char secret[300]; /* root/secret: a root secret file */
    int log_fd;
} fx_t;

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int
fx_setup(void **state)
{
    fx_t *fx = ron_xcalloc(1, sizeof *fx);
    snprintf(fx->root, sizeof fx->root, "/tmp/ron-kms-test-XXXXXX");
    assert_non_null(mkdtemp(fx->root));
    snprintf(fx->data, sizeof fx->data, "%s/data", fx->root);
    snprintf(fx->keys, sizeof fx->keys, "%s/keys", fx->data);
    snprintf(fx->log, sizeof fx->log, "%s/log", fx->root);
    snprintf(fx->secret, sizeof fx->secret, "%s/secret", fx->root);
    fx->log_fd = open(fx->log, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fx->log_fd >= 0);
    ron_log_set_fd(fx->log_fd);
    *state = fx;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *fx = *state;
    ron_log_set_fd(2);
    close(fx->log_fd);
    nftw(fx->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void
opts(kms_opts_t *o, const fx_t *fx, bool create)
{
    memset(o, 0, sizeof *o);
    o->data_dir = fx->data;
    o->create = create;
    o->kdf_opslimit = TEST_OPS;
    o->kdf_memlimit = TEST_MEM;
}

static kms_keystore_t *
open_ok(const kms_opts_t *o)
{
    kms_keystore_t *ks = NULL;
    char err[512];
    int rc = kms_keystore_open(o, &ks, err, sizeof err);
    if (rc != 0)
        fail_msg("kms_keystore_open: %s (%s)", err, ron_errname(rc));
    return ks;
}

static int
open_rc(const kms_opts_t *o, char *err, size_t cap)
{
    kms_keystore_t *ks = NULL;
    int rc = kms_keystore_open(o, &ks, err, cap);
    if (rc == 0)
        kms_keystore_free(ks);
    else
        assert_null(ks);
    return rc;
}

static size_t
file_read_all(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    assert_non_null(f);
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Rewrite path in place (same inode, same mode). */
static void
file_write_all(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static mode_t
mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static void
write_secret(const fx_t *fx, size_t len, uint8_t fill)
{
    uint8_t buf[64];
    int fd = open(fx->secret, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0 && len <= sizeof buf);
    memset(buf, fill, sizeof buf);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static size_t
count_substr(const char *path, const char *needle)
{
    char buf[16384];
    FILE *f = fopen(path, "r");
    size_t n, count = 0;
    assert_non_null(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (const char *p = buf; (p = strstr(p, needle)) != NULL; p++)
        count++;
    return count;
}

static void
test_kms_first_open_creates_keys_with_private_modes(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char path[400];
    kms_keystore_t *ks;
    uint8_t buf[KMS_FILE_MAX];

    opts(&o, fx, true);
    ks = open_ok(&o);
    assert_int_equal(mode_of(fx->data), 0700);
    assert_int_equal(mode_of(fx->keys), 0700);
    snprintf(path, sizeof path, "%s/identity.key", fx->keys);
    assert_int_equal(mode_of(path), 0600);
    assert_int_equal(file_read_all(path, buf, sizeof buf), KMS__ED25519_FILE_LEN);
    assert_memory_equal(buf, KMS__MAGIC, KMS__MAGIC_LEN);
    snprintf(path, sizeof path, "%s/name-0.key", fx->keys);
    assert_int_equal(mode_of(path), 0600);
    snprintf(path, sizeof path, "%s/.identity.key.tmp", fx->keys);
    assert_int_equal(access(path, F_OK), -1); /* the temp file was renamed */
    assert_string_equal(kms_keystore_dir(ks), fx->keys);
    assert_int_equal(kms_keystore_seal(ks), KMS_SEAL_NONE);
    assert_int_equal(kms_keystore_name_key_count(ks), 1);
    assert_int_equal(kms_key_role(kms_keystore_identity(ks)), KMS_ROLE_IDENTITY);
    assert_int_equal(kms_key_alg(kms_keystore_identity(ks)), KMS_ALG_ED25519);
    assert_int_equal(kms_key_role(kms_keystore_name_key(ks, 0)), KMS_ROLE_NAME);
    assert_null(kms_keystore_name_key(ks, 1));
    assert_memory_not_equal(kms_key_public(kms_keystore_identity(ks)),
                            kms_key_public(kms_keystore_name_key(ks, 0)), KMS_PK_LEN);
    kms_keystore_free(ks);
}

static void
test_kms_second_open_loads_the_same_keys(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *a, *b;
    uint8_t ida[KMS_NODE_ID_LEN], idb[KMS_NODE_ID_LEN];

    opts(&o, fx, true);
    a = open_ok(&o);
    o.create = false;
    b = open_ok(&o);
    kms_keystore_node_id(a, ida);
    kms_keystore_node_id(b, idb);
    assert_memory_equal(ida, idb, sizeof ida);
    assert_memory_equal(kms_key_public(kms_keystore_name_key(a, 0)),
                        kms_key_public(kms_keystore_name_key(b, 0)), KMS_PK_LEN);
    kms_keystore_free(a);
    kms_keystore_free(b);
}

static void
test_kms_open_without_create_reports_no_keys_and_writes_nothing(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char err[512];
    kms_keyfile_info_t infos[4];
    size_t n = 9;

    opts(&o, fx, false);
    assert_int_equal(open_rc(&o, err, sizeof err), RON_ENOKEYS);
    assert_non_null(strstr(err, fx->keys));
    assert_int_equal(access(fx->data, F_OK), -1);
    assert_int_equal(kms_keys_inspect(fx->data, infos, 4, &n, err, sizeof err), RON_ENOKEYS);
    assert_int_equal(n, 0);
}

static void
test_kms_passphrase_sealed_round_trip(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *a, *b;
    uint8_t buf[KMS_FILE_MAX], *seed = sodium_malloc(KMS_SEED_LEN);
    char path[400];
    size_t len;

    opts(&o, fx, true);
    o.passphrase = "correct horse battery staple";
    a = open_ok(&o);
    assert_int_equal(kms_keystore_seal(a), KMS_SEAL_PASSPHRASE);
    o.create = false;
    b = open_ok(&o);
    assert_memory_equal(kms_key_public(kms_keystore_identity(a)),
                        kms_key_public(kms_keystore_identity(b)), KMS_PK_LEN);
    assert_memory_equal(kms_key_public(kms_keystore_name_key(a, 0)),
                        kms_key_public(kms_keystore_name_key(b, 0)), KMS_PK_LEN);
    /* The seed is not in the file in the clear. */
    snprintf(path, sizeof path, "%s/identity.key", fx->keys);
    len = file_read_all(path, buf, sizeof buf);
    assert_int_equal(kms_key_export_seed(kms_keystore_identity(b), seed), 0);
    assert_null(memmem(buf, len, seed, KMS_SEED_LEN));
    assert_int_equal(buf[13], KMS_SEAL_PASSPHRASE);
    assert_int_equal(count_substr(fx->log, "NOT SEALED"), 0);
    sodium_free(seed);
    kms_keystore_free(a);
    kms_keystore_free(b);
}

static void
test_kms_wrong_passphrase_is_eauth(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char err[512];

    opts(&o, fx, true);
    o.passphrase = "right";
    kms_keystore_free(open_ok(&o));
    o.passphrase = "wrong";
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EAUTH);
    assert_non_null(strstr(err, "wrong passphrase"));
    o.passphrase = NULL; /* no secret at all: locked, not garbage */
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EKEYLOCKED);
    assert_non_null(strstr(err, KMS_ENV_PASSPHRASE));
}

static void
test_kms_secret_file_sealed_round_trip(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *a, *b;
    uint8_t buf[KMS_FILE_MAX];
    char path[400];

    write_secret(fx, 32, 0x5a);
    opts(&o, fx, true);
    o.secret_file = fx->secret;
    a = open_ok(&o);
    assert_int_equal(kms_keystore_seal(a), KMS_SEAL_SECRET_FILE);
    b = open_ok(&o);
    assert_memory_equal(kms_key_public(kms_keystore_identity(a)),
                        kms_key_public(kms_keystore_identity(b)), KMS_PK_LEN);
    snprintf(path, sizeof path, "%s/name-0.key", fx->keys);
    file_read_all(path, buf, sizeof buf);
    assert_int_equal(buf[13], KMS_SEAL_SECRET_FILE);
    kms_keystore_free(a);
    kms_keystore_free(b);
}

static void
test_kms_wrong_secret_file_is_eauth(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char err[512];

    write_secret(fx, 40, 0x11);
    opts(&o, fx, true);
    o.secret_file = fx->secret;
    kms_keystore_free(open_ok(&o));
    write_secret(fx, 40, 0x12);
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EAUTH);
    assert_non_null(strstr(err, "wrong secret file"));
    o.secret_file = NULL;
    o.passphrase = "x"; /* the other kind of secret cannot open it either */
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EKEYLOCKED);
}

static void
test_kms_refuses_bad_secret_configuration(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char err[512], inside[400];

    opts(&o, fx, true);
    write_secret(fx, 31, 1); /* one byte short */
    o.secret_file = fx->secret;
    assert_int_equal(open_rc(&o, err, sizeof err), RON_ECONFIG);
    write_secret(fx, 32, 1);
    o.passphrase = "also";
    assert_int_equal(open_rc(&o, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "only one"));
    o.passphrase = NULL;
    assert_int_equal(chmod(fx->secret, 0644), 0);
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EKEYPERM);
    /* A secret beside the keys is no seal. */
    opts(&o, fx, true);
    kms_keystore_free(open_ok(&o));
    snprintf(inside, sizeof inside, "%s/root.secret", fx->keys);
    assert_int_equal(rename(fx->secret, inside), 0);
    assert_int_equal(chmod(inside, 0600), 0);
    o.secret_file = inside;
    assert_int_equal(open_rc(&o, err, sizeof err), RON_ECONFIG);
    assert_non_null(strstr(err, "apart"));
}

/* Flip every byte of path in turn: each flip is refused, the original opens. */
static void
flip_every_byte(const char *path, const kms_opts_t *o)
{
    uint8_t orig[KMS_FILE_MAX], buf[KMS_FILE_MAX];
    size_t len = file_read_all(path, orig, sizeof orig);
    char err[512];

    assert_int_equal(len, KMS__ED25519_FILE_LEN);
    for (size_t i = 0; i < len; i++) {
        memcpy(buf, orig, len);
        buf[i] ^= 0xff;
        file_write_all(path, buf, len);
        int rc = open_rc(o, err, sizeof err);
        if (rc != RON_EKEYFILE)
            fail_msg("flipped byte %zu of %s: got %s", i, path, ron_errname(rc));
        assert_non_null(strstr(err, "tampered"));
    }
    /* A truncated or extended file is refused too. */
    file_write_all(path, orig, len - 1);
    assert_int_equal(open_rc(o, err, sizeof err), RON_EKEYFILE);
    memcpy(buf, orig, len);
    buf[len] = 0;
    file_write_all(path, buf, len + 1);
    assert_int_equal(open_rc(o, err, sizeof err), RON_EKEYFILE);
    file_write_all(path, orig, len);
    assert_int_equal(open_rc(o, err, sizeof err), 0);
}

static void
test_kms_refuses_a_key_file_with_any_byte_flipped(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char path[400];

    opts(&o, fx, true); /* unsealed */
    kms_keystore_free(open_ok(&o));
    o.create = false;
    snprintf(path, sizeof path, "%s/identity.key", fx->keys);
    flip_every_byte(path, &o);
    snprintf(path, sizeof path, "%s/name-0.key", fx->keys);
    flip_every_byte(path, &o);
}

static void
test_kms_refuses_a_sealed_key_file_with_any_byte_flipped(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char path[400];

    write_secret(fx, 32, 7);
    opts(&o, fx, true);
    o.secret_file = fx->secret;
    kms_keystore_free(open_ok(&o));
    o.create = false;
    snprintf(path, sizeof path, "%s/identity.key", fx->keys);
    flip_every_byte(path, &o);
}

/* Tamper with byte i and recompute the checksum, as a forger would. */
static int
forge(const char *path, size_t i, const kms_opts_t *o)
{
    uint8_t orig[KMS_FILE_MAX], buf[KMS_FILE_MAX];
    size_t len = file_read_all(path, orig, sizeof orig);
    blake3_hasher h;
    char err[512];
    int rc;

    memcpy(buf, orig, len);
    buf[i] ^= 0x01;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, buf, len - KMS__SUM_LEN);
    blake3_hasher_finalize(&h, buf + len - KMS__SUM_LEN, KMS__SUM_LEN);
    file_write_all(path, buf, len);
    rc = open_rc(o, err, sizeof err);
    file_write_all(path, orig, len);
    return rc;
}

static void
test_kms_refuses_forged_key_files_with_a_valid_checksum(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char path[400];
    const size_t pk = KMS__HDR_LEN, ct = KMS__HDR_LEN + KMS_PK_LEN;

    write_secret(fx, 32, 9);
    opts(&o, fx, true);
    o.secret_file = fx->secret;
    kms_keystore_free(open_ok(&o));
    snprintf(path, sizeof path, "%s/identity.key", fx->keys);
    assert_int_equal(forge(path, 33, &o), RON_EAUTH);      /* created: associated data */
    assert_int_equal(forge(path, pk + 5, &o), RON_EAUTH);  /* public key: associated data */
    assert_int_equal(forge(path, ct + 3, &o), RON_EAUTH);  /* ciphertext */
    assert_int_equal(forge(path, ct + 40, &o), RON_EAUTH); /* tag */
    assert_int_equal(forge(path, KMS__OFF_NONCE, &o), RON_EAUTH);
    /* Unsealed: a swapped public key no longer matches the secret. */
    nftw(fx->data, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    opts(&o, fx, true);
    kms_keystore_free(open_ok(&o));
    assert_int_equal(forge(path, pk, &o), RON_EKEYFILE);
    assert_int_equal(forge(path, ct, &o), RON_EKEYFILE);
    assert_int_equal(forge(path, 12, &o), RON_EKEYFILE); /* role says "name" */
}

static void
test_kms_refuses_key_files_and_dirs_open_to_others(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char path[400], link[400], err[512];

    opts(&o, fx, true);
    kms_keystore_free(open_ok(&o));
    snprintf(path, sizeof path, "%s/identity.key", fx->keys);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EKEYPERM);
    assert_non_null(strstr(err, "0640"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(chmod(fx->keys, 0755), 0);
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EKEYPERM);
    assert_int_equal(chmod(fx->keys, 0700), 0);
    /* A symbolic link in place of a key file is refused. */
    snprintf(link, sizeof link, "%s/name-0.key", fx->keys);
    snprintf(path, sizeof path, "%s/real.key", fx->root);
    assert_int_equal(rename(link, path), 0);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(open_rc(&o, err, sizeof err), RON_EKEYPERM);
}

static void
test_kms_unsealed_store_works_and_warns_on_every_open(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *a, *b;

    opts(&o, fx, true);
    a = open_ok(&o);
    assert_int_equal(count_substr(fx->log, "KEYS ARE NOT SEALED"), 1);
    b = open_ok(&o);
    assert_int_equal(count_substr(fx->log, "KEYS ARE NOT SEALED"), 2);
    assert_int_equal(count_substr(fx->log, "\"level\":\"warn\""), 2);
    assert_memory_equal(kms_key_public(kms_keystore_identity(a)),
                        kms_key_public(kms_keystore_identity(b)), KMS_PK_LEN);
    kms_keystore_free(a);
    kms_keystore_free(b);
}

static void
test_kms_amnesia_keeps_keys_in_ram_and_writes_nothing(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *a, *b;
    uint8_t ida[KMS_NODE_ID_LEN], idb[KMS_NODE_ID_LEN], sig[KMS_SIG_LEN];
    struct stat before, after;

    assert_int_equal(mkdir(fx->data, 0700), 0);
    assert_int_equal(stat(fx->data, &before), 0);
    opts(&o, fx, true);
    o.amnesia = true;
    o.passphrase = "ignored in amnesia";
    a = open_ok(&o);
    b = open_ok(&o);
    assert_true(kms_keystore_is_amnesia(a));
    assert_string_equal(kms_keystore_dir(a), "");
    assert_int_equal(kms_keystore_name_key_count(a), 1);
    kms_keystore_node_id(a, ida);
    kms_keystore_node_id(b, idb);
    assert_memory_not_equal(ida, idb, sizeof ida); /* fresh keys every time */
    assert_int_equal(kms_key_sign(kms_keystore_name_key(a, 0), (const uint8_t *)"m", 1, sig), 0);
    assert_int_equal(
        kms_verify(kms_key_public(kms_keystore_name_key(a, 0)), (const uint8_t *)"m", 1, sig), 0);
    assert_int_equal(stat(fx->data, &after), 0);
    assert_int_equal(after.st_nlink, before.st_nlink);
    assert_int_equal(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
    assert_int_equal(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
    assert_int_equal(access(fx->keys, F_OK), -1);
    assert_int_equal(count_substr(fx->log, "NOT SEALED"), 0);
    kms_keystore_free(a);
    kms_keystore_free(b);
}

static void
test_kms_node_id_is_b3sum_of_the_public_key(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *ks;
    uint8_t id[KMS_NODE_ID_LEN], want[KMS_NODE_ID_LEN];
    char path[400], cmd[600], line[128], hex[2 * KMS_NODE_ID_LEN + 1];
    FILE *f, *p;

    if (system("command -v b3sum >/dev/null 2>&1") != 0)
        skip();
    opts(&o, fx, true);
    ks = open_ok(&o);
    kms_keystore_node_id(ks, id);
    kms_node_id_of(kms_key_public(kms_keystore_identity(ks)), want);
    assert_memory_equal(id, want, sizeof id);
    snprintf(path, sizeof path, "%s/pk.bin", fx->root);
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(kms_key_public(kms_keystore_identity(ks)), 1, KMS_PK_LEN, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "b3sum --no-names '%s'", path);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(line, sizeof line, p));
    assert_int_equal(pclose(p), 0);
    ron_hex_encode(hex, id, sizeof id);
    assert_int_equal(strncmp(line, hex, 64), 0);
    kms_keystore_free(ks);
}

static void
test_kms_signatures_verify_only_for_their_key_and_message(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *ks;
    const kms_key_t *id, *nk;
    const uint8_t msg[] = "name record: movie.example -> b3:00";
    uint8_t sig[KMS_SIG_LEN], bad[sizeof msg], pk[KMS_PK_LEN];

    opts(&o, fx, true);
    ks = open_ok(&o);
    id = kms_keystore_identity(ks);
    nk = kms_keystore_name_key(ks, 0);
    assert_int_equal(kms_key_sign(nk, msg, sizeof msg, sig), 0);
    assert_int_equal(kms_verify(kms_key_public(nk), msg, sizeof msg, sig), 0);
    assert_int_equal(kms_verify(kms_key_public(id), msg, sizeof msg, sig), RON_EAUTH);
    memcpy(bad, msg, sizeof msg);
    bad[0] ^= 1;
    assert_int_equal(kms_verify(kms_key_public(nk), bad, sizeof bad, sig), RON_EAUTH);
    sig[10] ^= 1;
    assert_int_equal(kms_verify(kms_key_public(nk), msg, sizeof msg, sig), RON_EAUTH);
    /* A signature by a reopened store verifies under the stored public key. */
    memcpy(pk, kms_key_public(id), KMS_PK_LEN);
    kms_keystore_free(ks);
    ks = open_ok(&o);
    assert_int_equal(kms_key_sign(kms_keystore_identity(ks), msg, sizeof msg, sig), 0);
    assert_int_equal(kms_verify(pk, msg, sizeof msg, sig), 0);
    kms_keystore_free(ks);
}

static int
export_cb(const uint8_t *seed, size_t len, void *arg)
{
    uint8_t pk[KMS_PK_LEN], *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    assert_int_equal(len, KMS_SEED_LEN);
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_free(sk);
    return memcmp(pk, arg, KMS_PK_LEN) == 0 ? 42 : -1;
}

static void
test_kms_export_hooks_give_the_seed_of_the_public_key(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *ks;
    uint8_t *seed = sodium_malloc(KMS_SEED_LEN), *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    uint8_t pk[KMS_PK_LEN];
    const kms_key_t *k;

    opts(&o, fx, true);
    ks = open_ok(&o);
    k = kms_keystore_identity(ks);
    assert_int_equal(kms_key_export_seed(k, seed), 0);
    crypto_sign_seed_keypair(pk, sk, seed);
    assert_memory_equal(pk, kms_key_public(k), KMS_PK_LEN);
    assert_int_equal(kms_key_export_to(k, export_cb, (void *)kms_key_public(k)), 42);
    sodium_free(seed);
    sodium_free(sk);
    kms_keystore_free(ks);
}

static void
test_kms_inspect_reads_public_keys_without_the_secret(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *ks;
    kms_keyfile_info_t infos[KMS_MAX_NAME_KEYS + 1];
    size_t n = 0;
    char err[512];

    opts(&o, fx, true);
    o.passphrase = "p";
    ks = open_ok(&o);
    assert_int_equal(kms_keys_inspect(fx->data, infos, RON_ARRAY_LEN(infos), &n, err, sizeof err),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(infos[0].role, KMS_ROLE_IDENTITY);
    assert_int_equal(infos[0].seal, KMS_SEAL_PASSPHRASE);
    assert_int_equal(infos[0].kdf_opslimit, TEST_OPS);
    assert_int_equal(infos[0].kdf_memlimit, TEST_MEM);
    assert_memory_equal(infos[0].pk, kms_key_public(kms_keystore_identity(ks)), KMS_PK_LEN);
    assert_int_equal(infos[1].role, KMS_ROLE_NAME);
    assert_int_equal(infos[1].index, 0);
    assert_memory_equal(infos[1].pk, kms_key_public(kms_keystore_name_key(ks, 0)), KMS_PK_LEN);
    kms_keystore_free(ks);
}

static void
test_kms_keyfile_parse_refuses_every_truncation(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    char path[400];
    uint8_t buf[KMS_FILE_MAX];
    size_t len;
    kms_keyfile_info_t info;

    opts(&o, fx, true);
    kms_keystore_free(open_ok(&o));
    snprintf(path, sizeof path, "%s/name-0.key", fx->keys);
    len = file_read_all(path, buf, sizeof buf);
    assert_int_equal(kms_keyfile_parse(buf, len, &info), 0);
    assert_int_equal(info.role, KMS_ROLE_NAME);
    for (size_t l = 0; l < len; l++)
        assert_int_equal(kms_keyfile_parse(buf, l, &info), RON_EKEYFILE);
}

static void
test_kms_concurrent_first_opens_agree_on_one_identity(void **state)
{
    fx_t *fx = *state;
    enum { N = 4 };
    int fds[N][2];
    pid_t pids[N];
    uint8_t ids[N][KMS_NODE_ID_LEN];
    kms_opts_t o;
    kms_keystore_t *ks;
    uint8_t id[KMS_NODE_ID_LEN];

    opts(&o, fx, true);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) { /* child: no cmocka here, only an exit code */
            char err[512];
            int rc = kms_keystore_open(&o, &ks, err, sizeof err);
            if (rc == 0) {
                kms_keystore_node_id(ks, id);
                rc = write(fds[i][1], id, sizeof id) == (ssize_t)sizeof id ? 0 : 1;
                kms_keystore_free(ks);
            }
            _exit(rc == 0 ? 0 : 3);
        }
        close(fds[i][1]);
    }
    for (int i = 0; i < N; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        assert_int_equal(read(fds[i][0], ids[i], KMS_NODE_ID_LEN), KMS_NODE_ID_LEN);
        close(fds[i][0]);
    }
    ks = open_ok(&o);
    kms_keystore_node_id(ks, id);
    for (int i = 0; i < N; i++)
        assert_memory_equal(ids[i], id, KMS_NODE_ID_LEN);
    kms_keystore_free(ks);
}

static void
test_kms_opts_from_env_reads_passphrase_and_secret_file(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;

    setenv(KMS_ENV_PASSPHRASE, "from env", 1);
    setenv(KMS_ENV_SECRET_FILE, "", 1); /* empty means unset */
    kms_opts_from_env(&o, fx->data, false, true);
    assert_string_equal(o.passphrase, "from env");
    assert_null(o.secret_file);
    assert_string_equal(o.data_dir, fx->data);
    assert_true(o.create);
    assert_false(o.amnesia);
    assert_int_equal(o.kdf_opslimit, 0); /* 0: MODERATE limits for new files */
    unsetenv(KMS_ENV_PASSPHRASE);
    setenv(KMS_ENV_SECRET_FILE, fx->secret, 1);
    kms_opts_from_env(&o, fx->data, true, false);
    assert_null(o.passphrase);
    assert_string_equal(o.secret_file, fx->secret);
    assert_true(o.amnesia);
    unsetenv(KMS_ENV_SECRET_FILE);
}

static void
test_kms_env_scrub_zeroes_the_passphrase_entry_in_place_and_unsets_it(void **state)
{
    (void)state;
    static const char entry[] = KMS_ENV_PASSPHRASE "=scrub me 0123456789";
    setenv(KMS_ENV_PASSPHRASE, "scrub me 0123456789", 1);
    char *value = getenv(KMS_ENV_PASSPHRASE);
    assert_non_null(value);
    char *start = value - (sizeof KMS_ENV_PASSPHRASE); /* "NAME=" precedes the value */
    assert_memory_equal(start, entry, sizeof entry);
    setenv("RON_KMS_TEST_OTHER", "kept", 1);

    assert_int_equal(kms_env_scrub(), 1);
    assert_null(getenv(KMS_ENV_PASSPHRASE));
    for (size_t i = 0; i < sizeof entry - 1; i++) /* name and value: the bytes are gone */
        assert_int_equal(start[i], 0);
    assert_string_equal(getenv("RON_KMS_TEST_OTHER"), "kept"); /* nothing else touched */
    assert_int_equal(kms_env_scrub(), 0);
    unsetenv("RON_KMS_TEST_OTHER");
}

static void
test_kms_handoff_store_takes_the_file_seal_and_refuses_another_identity(void **state)
{
    fx_t *fx = *state;
    kms_opts_t o;
    kms_keystore_t *ks, *h = NULL;
    uint8_t *seed = sodium_malloc(KMS_SEED_LEN), a[KMS_NODE_ID_LEN], b[KMS_NODE_ID_LEN];
    char err[512];

    assert_non_null(seed);
    randombytes_buf(seed, KMS_SEED_LEN);
    assert_true(kms_keystore_from_handoff(fx->data, seed, &h, err, sizeof err) < 0); /* no store */
    assert_null(h);

    opts(&o, fx, true);
    o.passphrase = "handed over, never typed again";
    ks = open_ok(&o);
    /* a seed that is not the identity's: the kernel and the files disagree */
    assert_int_equal(kms_keystore_from_handoff(fx->data, seed, &h, err, sizeof err), RON_EKEYFILE);
    assert_null(h);
    assert_non_null(strstr(err, "identity.key"));

    assert_int_equal(kms_key_export_seed(kms_keystore_identity(ks), seed), 0);
    assert_int_equal(kms_keystore_from_handoff(fx->data, seed, &h, err, sizeof err), 0);
    assert_int_equal(kms_keystore_seal(h), KMS_SEAL_PASSPHRASE); /* no passphrase needed */
    assert_false(kms_keystore_is_amnesia(h));
    assert_string_equal(kms_keystore_dir(h), kms_keystore_dir(ks));
    assert_int_equal(kms_keystore_name_key_count(h), 0);
    assert_null(kms_keystore_name_key(h, 0));
    kms_keystore_node_id(ks, a);
    kms_keystore_node_id(h, b);
    assert_memory_equal(a, b, KMS_NODE_ID_LEN);
    uint8_t sig[KMS_SIG_LEN];
    assert_int_equal(kms_key_sign(kms_keystore_identity(h), (const uint8_t *)"m", 1, sig), 0);
    assert_int_equal(kms_verify(kms_key_public(kms_keystore_identity(ks)), (const uint8_t *)"m", 1,
                                sig),
                     0);
    sodium_free(seed);
    kms_keystore_free(h);
    kms_keystore_free(ks);
}

static void
test_kms_error_codes_have_names(void **state)
{
    (void)state;
    assert_string_equal(ron_errname(RON_EKEYFILE), "RON_EKEYFILE");
    assert_string_equal(ron_errname(RON_EKEYPERM), "RON_EKEYPERM");
    assert_string_equal(ron_errname(RON_EKEYLOCKED), "RON_EKEYLOCKED");
    assert_string_equal(ron_errname(RON_ENOKEYS), "RON_ENOKEYS");
    assert_string_equal(kms_seal_name(KMS_SEAL_SECRET_FILE), "secret-file");
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_kms_first_open_creates_keys_with_private_modes),
        T(test_kms_second_open_loads_the_same_keys),
        T(test_kms_open_without_create_reports_no_keys_and_writes_nothing),
        T(test_kms_passphrase_sealed_round_trip),
        T(test_kms_wrong_passphrase_is_eauth),
        T(test_kms_secret_file_sealed_round_trip),
        T(test_kms_wrong_secret_file_is_eauth),
        T(test_kms_refuses_bad_secret_configuration),
        T(test_kms_refuses_a_key_file_with_any_byte_flipped),
        T(test_kms_refuses_a_sealed_key_file_with_any_byte_flipped),
        T(test_kms_refuses_forged_key_files_with_a_valid_checksum),
        T(test_kms_refuses_key_files_and_dirs_open_to_others),
        T(test_kms_unsealed_store_works_and_warns_on_every_open),
        T(test_kms_amnesia_keeps_keys_in_ram_and_writes_nothing),
        T(test_kms_node_id_is_b3sum_of_the_public_key),
        T(test_kms_signatures_verify_only_for_their_key_and_message),
        T(test_kms_export_hooks_give_the_seed_of_the_public_key),
        T(test_kms_inspect_reads_public_keys_without_the_secret),
        T(test_kms_keyfile_parse_refuses_every_truncation),
        T(test_kms_concurrent_first_opens_agree_on_one_identity),
        T(test_kms_opts_from_env_reads_passphrase_and_secret_file),
        T(test_kms_error_codes_have_names),
        T(test_kms_env_scrub_zeroes_the_passphrase_entry_in_place_and_unsets_it),
        T(test_kms_handoff_store_takes_the_file_seal_and_refuses_another_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
