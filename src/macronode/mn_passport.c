/*
 * mn_passport.c - the built-in `passport` service: svc-passport
 * (pass_service.c) behind ron_service_def_t. Not in the default service
 * list: an operator adds it (`services = [..., "passport"]`) once a grant
 * policy exists. start() takes the node's identity (mn__shared_keys_acquire:
 * the node's key store in micro, the seed the kernel hands a macro child, so
 * no child needs the passphrase; node id and the keyring's seal), the grant policy <data_dir>/passport/policy.json
 * (absent: a bundle with no rules, so every redeem is denied until the
 * operator writes one; read in amnesia too) and the keyring
 * <data_dir>/passport/keyring (RAM in amnesia); serve_bus() serves the passport protocol on the endpoint
 * "passport" (docs/protocol/passport.md). A timer checks policy.json every
 * MN_PASS_POLICY_CHECK_MS and loads it when its mtime or size changed; a
 * bundle that does not compile is logged and the one in force stays.
 * Invariants: the pass_t belongs to the service from serve_bus() on; the key
 * store and the policy outlive it (freed in the timer's close callback,
 * after the service).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mn_internal.h"
#include "pass_service.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

#define MN_PASS_POLICY_CHECK_MS 1000u /* policy.json edits take effect within 1 s */
#define MN_PASS_DENY_ALL "{\"version\":1,\"description\":\"passport: no grant policy\",\"rules\":[]}"

typedef struct {
    uv_loop_t *loop;
    const kms_keystore_t *kms; /* mn__shared_keys_acquire: the node's identity */
    pol_store_t *policy;
    pass_t *p; /* until serve_bus hands it to svc */
    pass_service_t *svc;
    uv_timer_t timer;                          /* policy.json check */
    char pol_path[RON_CONFIG_PATH_MAX + 32];   /* "" in amnesia without a data dir */
    struct timespec pol_mtime;                 /* of the bundle in force (0: none) */
    off_t pol_size;
} mn_passport_t;

/* Read the grant policy at path into a new store; absent: deny all. */
static int
policy_open(const char *path, pol_store_t **out)
{
    char *buf = NULL;
    pol_policy_t *pol;
    pol_err_t perr;
    FILE *f = path != NULL ? fopen(path, "rb") : NULL;
    size_t n = 0;
    int rc = 0;

    if (f == NULL && path != NULL && errno != ENOENT) {
        ron_error("passport: cannot read %s: %s", path, strerror(errno));
        return -errno;
    }
    if (f != NULL) {
        buf = ron_xmalloc(POL_MAX_BUNDLE + 1);
        n = fread(buf, 1, POL_MAX_BUNDLE + 1, f);
        fclose(f);
        if (n > POL_MAX_BUNDLE) {
            ron_error("passport: %s is larger than %u bytes", path, POL_MAX_BUNDLE);
            rc = RON_EPOLLIMIT;
            goto out;
        }
        pol = pol_compile(buf, n, &perr);
    } else {
        ron_warn("passport: no grant policy%s%s: every redeem is denied",
                 path != NULL ? " at " : "", path != NULL ? path : "");
        pol = pol_compile(MN_PASS_DENY_ALL, strlen(MN_PASS_DENY_ALL), &perr);
    }
    if (pol == NULL) {
        ron_error("passport: %s: %s", path, perr.msg);
        rc = perr.code;
        goto out;
    }
    *out = pol_store_new(pol);
out:
    free(buf);
    return rc;
}

/* Timer: load policy.json when it changed since the last look. */
static void
policy_check(uv_timer_t *t)
{
    mn_passport_t *m = t->data;
    struct stat st;
    char *buf;
    FILE *f;
    size_t n;
    pol_err_t perr;

    if (stat(m->pol_path, &st) < 0 || (st.st_mtim.tv_sec == m->pol_mtime.tv_sec &&
                                       st.st_mtim.tv_nsec == m->pol_mtime.tv_nsec &&
                                       st.st_size == m->pol_size))
        return;
    m->pol_mtime = st.st_mtim;
    m->pol_size = st.st_size;
    if (st.st_size > (off_t)POL_MAX_BUNDLE || (f = fopen(m->pol_path, "rb")) == NULL) {
        ron_error("passport: cannot load %s (unreadable or over %u bytes); the policy in force "
                  "stays",
                  m->pol_path, POL_MAX_BUNDLE);
        return;
    }
    buf = ron_xmalloc(POL_MAX_BUNDLE + 1);
    n = fread(buf, 1, POL_MAX_BUNDLE + 1, f);
    fclose(f);
    if (n > POL_MAX_BUNDLE || pol_store_load(m->policy, buf, n, &perr) < 0)
        ron_error("passport: %s not loaded (%s); the policy in force stays", m->pol_path,
                  n > POL_MAX_BUNDLE ? "too large" : perr.msg);
    else
        ron_info("passport: grant policy %s loaded", m->pol_path);
    free(buf);
}

static int
passport_start(uv_loop_t *loop, const ron_config_t *cfg, int listen_fd, void **state_out)
{
    mn_passport_t *m = ron_xcalloc(1, sizeof *m);
    bool amnesia = ron_config_amnesia(cfg);
    char ring[RON_CONFIG_PATH_MAX + 32], err[256];
    pass_opts_t o = {0};
    struct stat st;
    int rc;

    if (listen_fd >= 0)
        close(listen_fd);
    m->loop = loop;
    if (cfg->data_dir[0] != '\0')
        snprintf(m->pol_path, sizeof m->pol_path, "%s/passport/policy.json", cfg->data_dir);
    if (m->pol_path[0] != '\0' && stat(m->pol_path, &st) == 0) {
        m->pol_mtime = st.st_mtim;
        m->pol_size = st.st_size;
    }
    snprintf(ring, sizeof ring, "%s/passport/keyring", cfg->data_dir);
    /* the node's identity: its key store (micro) or the seed the kernel hands a child */
    if ((rc = mn__shared_keys_acquire(cfg, &m->kms)) < 0) {
        ron_error("passport: the node's keys are not available: %s", ron_strerror(rc));
        goto fail;
    }
    /* read even in amnesia: reading writes nothing */
    if ((rc = policy_open(m->pol_path[0] != '\0' ? m->pol_path : NULL, &m->policy)) < 0)
        goto fail;
    o.keyring_path = amnesia ? NULL : ring;
    o.kms = m->kms;
    o.policy = m->policy;
    o.guard = ron_node_guard(); /* mint under the node's keys: verified node-wide */
    if ((rc = pass_new(&o, ron_unix_time(), &m->p, err, sizeof err)) < 0) {
        ron_error("%s", err);
        goto fail;
    }
    if (o.guard != NULL)
        ron_info("passport: signing key %s; tokens minted under the node's capability keys",
                 pass_current_kid(m->p, PASS_KEY_SIGN));
    else
        ron_info("passport: capability key %s, signing key %s",
                 pass_current_kid(m->p, PASS_KEY_CAP), pass_current_kid(m->p, PASS_KEY_SIGN));
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    if (m->pol_path[0] != '\0')
        uv_timer_start(&m->timer, policy_check, MN_PASS_POLICY_CHECK_MS, MN_PASS_POLICY_CHECK_MS);
    *state_out = m;
    return 0;
fail:
    pol_store_free(m->policy);
    mn__shared_keys_release(m->kms);
    free(m);
    return rc;
}

static int
passport_serve_bus(void *state, rbus_t *bus)
{
    mn_passport_t *m = state;
    pass_t *p = m->p;
    int rc;

    m->p = NULL; /* the service owns it from here, even on failure */
    if ((rc = pass_service_new(m->loop, bus, p, NULL, &m->svc)) < 0)
        return rc;
    return rbus_listen(bus);
}

static size_t
passport_metrics(void *state, char *buf, size_t cap)
{
    mn_passport_t *m = state;
    return m->svc != NULL ? pass_service_metrics(m->svc, buf, cap) : 0;
}

static void
timer_closed(uv_handle_t *h)
{
    mn_passport_t *m = h->data;
    pol_store_free(m->policy);
    mn__shared_keys_release(m->kms);
    free(m);
}

static void
passport_stop(void *state)
{
    mn_passport_t *m = state;
    pass_service_free(m->svc); /* frees the pass_t (keys wiped) */
    pass_free(m->p);
    m->p = NULL;
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, timer_closed);
}

const ron_service_def_t mn__svc_passport = {
    "passport", NULL, passport_start, NULL, passport_metrics, passport_stop, passport_serve_bus,
    /* the node id, and the keyring's seal derived from the identity key */
    .needs_identity = true,
};
