/*
 * mn_ident.c - handing the node's identity key to the services that sign
 * as the node (ron_service_def_t.needs_identity: the DHT's provider
 * records, the overlay's TLS certificate, the passport's node id and
 * keyring seal), so their ids equal the node id even in amnesia, where the
 * key exists only in the kernel's RAM, and so no child needs the passphrase
 * that unseals the key files (the kernel wipes RON_PASSPHRASE from its
 * environment before any child starts).
 *
 * Kernel: mn__ident_set(keys) remembers the key store; in-process hosts
 * (micro profile) read the seed from it directly. For a child, the
 * supervisor makes a pipe (mn__ident_pipe), writes the 32-byte seed into
 * it and closes its end, and the child inherits the read end as fd 5
 * (RON_IDENTITY_FD). The child (mn__ident_read_fd, before its loop runs)
 * reads the seed into sodium memory and closes the pipe. The seed never
 * touches the disk or the environment; only children that ask get it.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "mn_internal.h"
#include "ron_err.h"
#include "ron_kms.h"

static const kms_keystore_t *ident_keys; /* kernel: the node's key store */
static uint8_t *ident_seed;              /* child: the seed read from the pipe */

void
mn__ident_set(const kms_keystore_t *keys)
{
    ident_keys = keys;
}

int
mn__secret_pipe(const uint8_t *secret, size_t len)
{
    int fds[2], rc;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    /* a few dozen bytes fit any pipe buffer: the write never blocks */
    rc = write(fds[1], secret, len) == (ssize_t)len ? 0 : RON_EPROTO;
    close(fds[1]);
    if (rc < 0) {
        close(fds[0]);
        return rc;
    }
    return fds[0];
}

int
mn__secret_read_fd(int fd, uint8_t **slot, size_t len)
{
    size_t got = 0;
    int rc = 0;

    if (sodium_init() < 0 || (*slot == NULL && (*slot = sodium_malloc(len)) == NULL)) {
        close(fd);
        return RON_EAUTH;
    }
    while (got < len) {
        ssize_t n = read(fd, *slot + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : RON_EPROTO;
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (rc < 0) {
        sodium_free(*slot);
        *slot = NULL;
    }
    return rc;
}

int
mn__ident_pipe(void)
{
    uint8_t *seed;
    int rc;

    if (ident_keys == NULL)
        return RON_ENOKEYS;
    if (sodium_init() < 0 || (seed = sodium_malloc(KMS_SEED_LEN)) == NULL)
        return RON_EAUTH;
    kms_key_export_seed(kms_keystore_identity(ident_keys), seed);
    rc = mn__secret_pipe(seed, KMS_SEED_LEN);
    sodium_free(seed);
    return rc;
}

int
mn__ident_read_fd(int fd)
{
    return mn__secret_read_fd(fd, &ident_seed, KMS_SEED_LEN);
}

int
ron_node_identity_seed(uint8_t *seed_out)
{
    if (ident_seed != NULL) {
        memcpy(seed_out, ident_seed, KMS_SEED_LEN);
        return 0;
    }
    if (ident_keys != NULL)
        return kms_key_export_seed(kms_keystore_identity(ident_keys), seed_out);
    return RON_ENOKEYS;
}

void
mn__ident_forget(void)
{
    sodium_free(ident_seed); /* wipes it */
    ident_seed = NULL;
    ident_keys = NULL;
}
