/*
 * mn_shared.c - one object store and one name index per process. In the
 * micro profile every service runs in the node's process: the storage and
 * index services, the gateway and the app port must see the same objects
 * and names, which two handles cannot give (two RAM stores are two stores;
 * LMDB refuses a second open of one environment in a process). So each of
 * them acquires the handle here: the first acquire opens it, later ones
 * count a reference, the last release closes it. In the macro profile each
 * child is its own process and the same calls open its own handle.
 * Invariants: loop thread only (no lock); a handle is closed only when no
 * user holds it; a store first opened read-only is never handed to a user
 * that asked for a writable one.
 */
#include <errno.h>
#include <stdio.h>

#include <sodium.h>

#include "mn_internal.h"
#include "ron_err.h"
#include "ron_kms.h"
#include "ron_log.h"

#define MN_STORE_SUBDIR "store" /* under the node's data directory */

static struct {
    sto_store_t *store;
    bool store_ro;
    unsigned store_refs;
    idx_t *idx;
    unsigned idx_refs;
    kms_keystore_t *node_keys; /* the node's own (mn__shared_keys_set): not ours to free */
    kms_keystore_t *keys;      /* opened here (a child), freed by the last release */
    unsigned keys_refs;
} mn_shared;

int
mn__shared_store_acquire(const ron_config_t *cfg, bool read_only, sto_store_t **out)
{
    char dir[RON_CONFIG_PATH_MAX + 16];
    sto_config_t sc = {0};
    int rc;

    *out = NULL;
    if (mn_shared.store != NULL) {
        if (mn_shared.store_ro && !read_only)
            return RON_EBUSY; /* opened read-only: cannot serve a writer */
        mn_shared.store_refs++;
        *out = mn_shared.store;
        return 0;
    }
    if (!ron_config_amnesia(cfg)) {
        snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, MN_STORE_SUBDIR);
        sc.dir = dir;
    }
    sc.read_only = read_only;
    if ((rc = sto_open(&sc, &mn_shared.store)) < 0) {
        mn_shared.store = NULL;
        return rc;
    }
    ron_info("%s store open%s", sc.dir != NULL ? sc.dir : "RAM (amnesia)",
             read_only ? " (read-only)" : "");
    mn_shared.store_ro = read_only;
    mn_shared.store_refs = 1;
    *out = mn_shared.store;
    return 0;
}

void
mn__shared_store_release(sto_store_t *st)
{
    if (st == NULL)
        return;
    if (st != mn_shared.store || mn_shared.store_refs == 0) {
        sto_close(st); /* not ours: a handle opened outside the registry */
        return;
    }
    if (--mn_shared.store_refs == 0) {
        sto_close(mn_shared.store);
        mn_shared.store = NULL;
    }
}

int
mn__shared_index_acquire(const ron_config_t *cfg, idx_t **out)
{
    idx_config_t ic = {.data_dir = cfg->data_dir, .amnesia = ron_config_amnesia(cfg)};
    int rc;

    *out = NULL;
    if (mn_shared.idx != NULL) {
        mn_shared.idx_refs++;
        *out = mn_shared.idx;
        return 0;
    }
    if ((rc = idx_new(&ic, &mn_shared.idx)) < 0) {
        mn_shared.idx = NULL;
        return rc;
    }
    mn_shared.idx_refs = 1;
    *out = mn_shared.idx;
    return 0;
}

void
mn__shared_index_release(idx_t *idx)
{
    if (idx == NULL)
        return;
    if (idx != mn_shared.idx || mn_shared.idx_refs == 0) {
        idx_free(idx);
        return;
    }
    if (--mn_shared.idx_refs == 0) {
        idx_free(mn_shared.idx);
        mn_shared.idx = NULL;
    }
}

void
mn__shared_refs(unsigned *store_refs, unsigned *index_refs)
{
    *store_refs = mn_shared.store_refs;
    *index_refs = mn_shared.idx_refs;
}

void
mn__shared_keys_set(kms_keystore_t *ks)
{
    mn_shared.node_keys = ks;
}

/*
 * A macronode child's store from the identity seed the kernel handed over
 * (needs_identity): the child needs no passphrase (the kernel took it out of
 * the environment before any child started) and, in amnesia, gets the key
 * that lives only in the kernel's RAM. Returns 0, RON_ENOKEYS when no seed
 * was handed over, or an error of ron-kms (logged).
 */
static int
keys_from_handoff(const ron_config_t *cfg, kms_keystore_t **out)
{
    uint8_t *seed = sodium_malloc(KMS_SEED_LEN);
    char err[256] = "";
    int rc = seed == NULL ? -ENOMEM : ron_node_identity_seed(seed);

    if (rc < 0)
        goto out;
    if (ron_config_amnesia(cfg))
        rc = kms_keystore_from_identity_seed(seed, out);
    else
        rc = kms_keystore_from_handoff(cfg->data_dir, seed, out, err, sizeof err);
    if (rc < 0)
        ron_error("node keys: %s", err[0] != '\0' ? err : ron_strerror(rc));
out:
    sodium_free(seed); /* wipes it */
    return rc;
}

int
mn__shared_keys_acquire(const ron_config_t *cfg, const kms_keystore_t **out)
{
    char err[256];
    int rc;

    *out = NULL;
    if (mn_shared.node_keys != NULL) {
        *out = mn_shared.node_keys;
        return 0;
    }
    if (mn_shared.keys == NULL) {
        rc = keys_from_handoff(cfg, &mn_shared.keys);
        if (rc == RON_ENOKEYS && ron_config_amnesia(cfg))
            ron_error("node keys: the node's identity key was not handed over");
        if (rc < 0 && (rc != RON_ENOKEYS || ron_config_amnesia(cfg))) {
            mn_shared.keys = NULL;
            return rc;
        }
    }
    if (mn_shared.keys == NULL) { /* no seed handed over (outside a node host): the files */
        rc = kms_node_keys_open_or_create(cfg->data_dir, false, &mn_shared.keys, err, sizeof err);
        if (rc < 0) {
            ron_error("node keys: %s", err);
            mn_shared.keys = NULL;
            return rc;
        }
    }
    mn_shared.keys_refs++;
    *out = mn_shared.keys;
    return 0;
}

void
mn__shared_keys_release(const kms_keystore_t *ks)
{
    if (ks == NULL || ks == mn_shared.node_keys || ks != mn_shared.keys)
        return;
    if (mn_shared.keys_refs > 0 && --mn_shared.keys_refs == 0) {
        kms_keystore_free(mn_shared.keys);
        mn_shared.keys = NULL;
    }
}
