/*
 * mn_dht.c - the built-in `dht` service: svc-dht's node service
 * (dht_service.c) on the UDP socket the kernel binds for it (config key
 * `dht`, def.listen_udp), serving the `dht` ron-bus endpoint. Its node id
 * is the node's: the kernel hands it the identity key (def.needs_identity,
 * mn_ident.c), from which the Ed25519 secret key the core signs provider
 * records with is derived. Seeds and the advertised overlay address come
 * from the config (`seeds`, `advertise`); without `advertise` the overlay
 * service's `status` is asked when the node runs it. The routing table
 * lives in <data_dir>/dht/table (mode 0700 directory), never in amnesia.
 * The endpoint enforces capabilities with the process guard
 * (ron_node_guard()). Same code in both profiles.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dht_service.h"
#include "mn_internal.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_kms.h"
#include "ron_log.h"
#include "ron_util.h"

typedef struct {
    uv_loop_t *loop;
    int udp_fd; /* until serve_bus hands it to the service */
    uint8_t *sk; /* sodium memory: seed || public key */
    uint8_t id[DHT_ID_LEN];
    char *seeds[RON_CONFIG_MAX_SEEDS];
    size_t n_seeds;
    char advertise[RON_CONFIG_ADDR_MAX];
    bool has_overlay, has_storage;
    char table[RON_CONFIG_PATH_MAX + 16]; /* "" in amnesia */
    dht_service_t *svc;
} mn_dht_t;

static const char *
dht_listen_addr(const ron_config_t *cfg)
{
    return cfg->dht;
}

static bool
runs(const ron_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i], name) == 0)
            return true;
    return false;
}

static void
mdht_free(mn_dht_t *m)
{
    for (size_t i = 0; i < m->n_seeds; i++)
        free(m->seeds[i]);
    sodium_free(m->sk);
    if (m->udp_fd >= 0)
        close(m->udp_fd);
    free(m);
}

static int
dht_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mn_dht_t *m = ron_xcalloc(1, sizeof *m);
    uint8_t pk[KMS_PK_LEN], *seed = NULL;
    int rc;

    m->loop = loop;
    m->udp_fd = listen_fd;
    if (listen_fd < 0) {
        ron_error("dht: no UDP socket (config key `dht` is empty)");
        rc = RON_ECONFIG;
        goto fail;
    }
    if (sodium_init() < 0 || (m->sk = sodium_malloc(NAME_SECRET_KEY_LEN)) == NULL ||
        (seed = sodium_malloc(KMS_SEED_LEN)) == NULL) {
        rc = RON_EAUTH;
        goto fail;
    }
    if ((rc = ron_node_identity_seed(seed)) < 0) {
        ron_error("dht: the node's identity key was not handed over: %s", ron_strerror(rc));
        goto fail;
    }
    crypto_sign_seed_keypair(pk, m->sk, seed);
    dht_id_of_key(m->id, pk);
    for (size_t i = 0; i < cfg->n_seeds; i++)
        m->seeds[m->n_seeds++] = ron_xstrdup(cfg->seeds[i]);
    snprintf(m->advertise, sizeof m->advertise, "%s", cfg->advertise);
    m->has_overlay = runs(cfg, "overlay");
    m->has_storage = runs(cfg, "storage");
    if (!ron_config_amnesia(cfg)) {
        char dir[RON_CONFIG_PATH_MAX + 8];
        snprintf(dir, sizeof dir, "%s/dht", cfg->data_dir);
        if ((rc = ron_mkdir_private(dir)) < 0) {
            ron_error("dht: cannot create %s: %s", dir, ron_strerror(rc));
            goto fail;
        }
        snprintf(m->table, sizeof m->table, "%s/table", dir);
    }
    if (m->advertise[0] == '\0' && !m->has_overlay)
        ron_warn("dht: no `advertise` address and no overlay service: this node cannot announce "
                 "content (provide requests wait)");
    sodium_free(seed);
    *state_out = m;
    return 0;
fail:
    sodium_free(seed);
    mdht_free(m);
    return rc;
}

static int
dht_serve_bus(void *state, rbus_t *bus)
{
    mn_dht_t *m = state;
    dht_service_config_t dc = {0};
    char err[256] = "";
    int rc;

    memcpy(dc.id, m->id, DHT_ID_LEN);
    dc.sk = m->sk;
    dc.udp_fd = m->udp_fd;
    dc.seeds = (const char *const *)m->seeds;
    dc.n_seeds = m->n_seeds;
    dc.advertise = m->advertise;
    dc.overlay_endpoint = m->has_overlay ? "overlay" : NULL;
    dc.storage_endpoint = m->has_storage ? "storage" : NULL;
    dc.table_path = m->table[0] != '\0' ? m->table : NULL;
    m->udp_fd = -1; /* the service takes it, even on failure */
    if ((rc = dht_service_new(m->loop, bus, &dc, &m->svc, err, sizeof err)) < 0) {
        ron_error("%s", err);
        return rc;
    }
    dht_service_set_guard(m->svc, ron_node_guard()); /* before the endpoint listens */
    return rbus_listen(bus);
}

static size_t
dht_metrics(void *state, char *buf, size_t cap)
{
    mn_dht_t *m = state;
    return m->svc != NULL ? dht_service_metrics(m->svc, buf, cap) : 0;
}

static void
dht_stop(void *state)
{
    mn_dht_t *m = state;
    dht_service_free(m->svc);
    mdht_free(m);
}

const ron_service_def_t mn__svc_dht = {
    .name = "dht",
    .listen_addr = dht_listen_addr,
    .start = dht_start,
    .metrics = dht_metrics,
    .stop = dht_stop,
    .serve_bus = dht_serve_bus,
    .listen_udp = true,
    .needs_identity = true,
};
