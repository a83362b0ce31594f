/*
 * mn_auth.c - the node's capability authority and the process guard.
 *
 * Why here: enforcement happens in every process that serves a boundary,
 * but the keys and the revocation list must have one owner, the kernel.
 * The kernel derives the capability master from the identity seed
 * (guard_master_derive), opens the authority (<data-dir>/auth, RAM in
 * amnesia), answers the children's auth_sync and the app port's
 * auth_revoke, auth_rotate and auth_show over ron-bus, pushes `{"auth":<page>}` to every child after
 * each change, rotates the key generation on a 60 s timer, and keeps
 * <data-dir>/operator.cap alive (amnesia: printed once on stderr). It hands
 * the master to every child through a pipe inherited as fd 6
 * (RON_CAPKEY_FD), never through the disk or the environment.
 *
 * The process guard (ron_node_guard) is what every service of a process
 * enforces with: a child builds it from the master before its service
 * starts and follows the authority through the kernel (mn_service.c); the
 * micro profile has one guard, service "node", fed here directly, shared by
 * every in-process service.
 *
 * Invariants: every copy of the master lives in sodium memory and is wiped;
 * a change is persisted (by the authority) before it is pushed or answered;
 * operator.cap is replaced atomically (0600) and never written in amnesia.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "mn_internal.h"
#include "ron_auth.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_util.h"

#define MN_AUTH_TICK_MS 60000u      /* rotation check period */
#define MN_AUTH_DIR "auth"          /* under the data dir */
#define MN_AUDIT_DIR "audit"        /* under the data dir */
#define MN_AUTH_EVENT_PREFIX "{\"auth\":"
/* a push or sync answer: page JSON of GUARD_SYNC_PAGE entries and its frame */
#define MN_AUTH_PAGE_MAX (GUARD_SYNC_PAGE * (GUARD_MAX_ENTRY_JSON + 2) + 128)

/* ---- the process guard ---- */

static guard_t *proc_guard;   /* ron_node_guard() */
static bool proc_guard_fed;   /* fed by the authority in this process (micro) */
static uint8_t *proc_master;  /* child: the master read from fd 6, until the guard exists */

guard_t *
ron_node_guard(void)
{
    return proc_guard;
}

bool
mn__guard_fed_here(void)
{
    return proc_guard_fed;
}

int
mn__capkey_read_fd(int fd)
{
    return mn__secret_read_fd(fd, &proc_master, GUARD_MASTER_LEN);
}

bool
mn__capkey_held(void)
{
    return proc_master != NULL;
}

int
mn__guard_build(const char *service, const ron_config_t *cfg)
{
    char audit[RON_CONFIG_PATH_MAX + 16];
    guard_opts_t o = {0};
    guard_t *g = NULL;
    int rc;

    if (proc_master == NULL)
        return RON_ENOKEYS;
    if (!ron_config_amnesia(cfg)) {
        snprintf(audit, sizeof audit, "%s/%s", cfg->data_dir, MN_AUDIT_DIR);
        o.audit_dir = audit;
    }
    o.service = service;
    o.master = proc_master;
    o.policy_file = cfg->policy_file;
    rc = guard_new(&o, &g);
    sodium_free(proc_master); /* the guard holds its own copy: wipe ours */
    proc_master = NULL;
    if (rc < 0)
        return rc;
    proc_guard = g;
    proc_guard_fed = false;
    return 0;
}

void
mn__guard_forget(void)
{
    guard_free(proc_guard);
    proc_guard = NULL;
    proc_guard_fed = false;
    sodium_free(proc_master);
    proc_master = NULL;
}

int
mn__auth_event_page(const void *payload, size_t len, const char **page_out, size_t *page_len_out)
{
    const char *p = payload;
    size_t pl = strlen(MN_AUTH_EVENT_PREFIX);

    if (len < pl + 2 || memcmp(p, MN_AUTH_EVENT_PREFIX, pl) != 0 || p[len - 1] != '}')
        return RON_EINVAL;
    *page_out = p + pl;
    *page_len_out = len - pl - 1;
    return 0;
}

/* ---- the operator capability ---- */

int
mn__auth_token_alive(const guard_authority_t *a, const uint8_t master[static GUARD_MASTER_LEN],
                     const char *tok, size_t len, int64_t now)
{
    auth_revocation_t *rev = auth_revocation_new(GUARD_MAX_REVOKED);
    auth_verifier_t *v = auth_verifier_new(rev, 0);
    guard_entry_t *e = ron_xcalloc(GUARD_SYNC_PAGE, sizeof *e);
    auth_request_t req = {.op = AUTH_OP_ADMIN, .size = AUTH_SIZE_UNKNOWN, .now = now};
    auth_verdict_t vd;
    uint8_t *key = sodium_malloc(GUARD_KEY_LEN);
    uint64_t after = 0;
    bool more = true;
    int rc = 0;

    if (rev == NULL || v == NULL || key == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    while (more) {
        size_t n = guard_authority_since(a, after, e, GUARD_SYNC_PAGE, &more);
        for (size_t i = 0; i < n; i++) {
            if (e[i].kind == GUARD_E_KIDS) {
                for (size_t k = 0; k < e[i].n_kids; k++) {
                    guard_root_key(master, e[i].kids[k], key);
                    (void)auth_verifier_add_key(v, e[i].kids[k], key, GUARD_KEY_LEN);
                }
            } else if (e[i].kind == GUARD_E_EPOCH) {
                auth_revocation_raise_epoch(rev, e[i].epoch);
            } else if (e[i].kind == GUARD_E_REVOKE) {
                (void)auth_revocation_add_epoch(rev, e[i].nonce, e[i].epoch, e[i].until, now);
            }
            after = e[i].seq;
        }
        if (n == 0)
            break;
    }
    rc = auth_verify(v, tok, len, &req, &vd);
    if (rc == 0 && strcmp(vd.id.kid, guard_authority_kid(a)) != 0)
        rc = RON_ECAPKID; /* alive only until the old generation's grace ends */
out:
    sodium_free(key);
    free(e);
    auth_verifier_free(v);
    auth_revocation_free(rev);
    return rc;
}

/* ---- the kernel's authority ---- */

struct mn_auth {
    uv_loop_t *loop;
    guard_authority_t *auth;
    uint8_t *master;  /* sodium memory */
    char *operator;   /* the operator capability in force (sodium memory), or NULL */
    bool amnesia;
    char data_dir[RON_CONFIG_PATH_MAX];
    rbus_t *bus;      /* publishes pushes (macro); NULL: none */
    guard_t *node_guard; /* micro: the process guard, fed here */
    uv_timer_t tick;
    char *page;       /* push / sync scratch, MN_AUTH_PAGE_MAX bytes */
    guard_entry_t *entries; /* GUARD_SYNC_PAGE */
};

/* Write tok as <data-dir>/operator.cap atomically (0600). Returns 0 or -errno. */
static int
operator_write(const char *dir, const char *tok)
{
    char tmp[RON_CONFIG_PATH_MAX + 32], dst[RON_CONFIG_PATH_MAX + 32];
    size_t len = strlen(tok), off = 0;
    int fd, rc = 0;

    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, GUARD_OPERATOR_FILE);
    snprintf(dst, sizeof dst, "%s/%s", dir, GUARD_OPERATOR_FILE);
    if (unlink(tmp) < 0 && errno != ENOENT)
        return -errno;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, 0600) < 0) {
        rc = -errno;
        goto out;
    }
    while (off <= len) { /* the token, then a newline */
        const char *p = off < len ? tok + off : "\n";
        size_t k = off < len ? len - off : 1;
        ssize_t n = write(fd, p, k);
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
    rc = close(fd) < 0 ? -errno : 0;
    fd = -1;
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = -errno;
    if (rc == 0)
        rc = ron_fsync_dir(dir);
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* Read <data-dir>/operator.cap into sodium memory. Returns it or NULL. */
static char *
operator_read(const char *dir)
{
    char path[RON_CONFIG_PATH_MAX + 32];
    char *buf = NULL;
    ssize_t n;
    size_t got = 0;
    int fd;

    snprintf(path, sizeof path, "%s/%s", dir, GUARD_OPERATOR_FILE);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    buf = sodium_malloc(AUTH_MAX_TOKEN + 2);
    while (buf != NULL && got < AUTH_MAX_TOKEN + 1) {
        n = read(fd, buf + got, AUTH_MAX_TOKEN + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (buf == NULL)
        return NULL;
    while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == '\r' || buf[got - 1] == ' '))
        got--;
    buf[got] = '\0';
    if (got == 0 || got > AUTH_MAX_TOKEN) {
        sodium_free(buf);
        return NULL;
    }
    return buf;
}

/*
 * Keep the operator capability alive: when the one in force no longer
 * verifies (epoch raised, revoked, generation replaced), mint a new one and
 * write it (persistent) or print it (amnesia). first: at start.
 */
static int
operator_keep(mn_auth_t *a, bool first)
{
    int64_t now = ron_unix_time();
    long n;
    int rc;

    if (first && !a->amnesia)
        a->operator = operator_read(a->data_dir);
    if (a->operator != NULL &&
        mn__auth_token_alive(a->auth, a->master, a->operator, strlen(a->operator), now) == 0)
        return 0;
    if (a->operator == NULL && (a->operator = sodium_malloc(AUTH_MAX_TOKEN + 2)) == NULL)
        return -ENOMEM;
    n = guard_authority_mint_operator(a->auth, a->operator, AUTH_MAX_TOKEN + 1);
    if (n < 0) {
        ron_error("operator capability: cannot mint: %s", ron_strerror((int)n));
        sodium_free(a->operator);
        a->operator = NULL;
        return (int)n;
    }
    if (a->amnesia) {
        /* one write of one line: never on disk, never in the JSON log */
        fprintf(stderr, "operator capability: %s\n", a->operator);
        fflush(stderr);
        ron_info("operator capability minted (kid %s, epoch %llu): printed on stderr",
                 guard_authority_kid(a->auth), (unsigned long long)guard_authority_epoch(a->auth));
        return 0;
    }
    if ((rc = operator_write(a->data_dir, a->operator)) < 0) {
        ron_error("operator capability: cannot write %s/%s: %s", a->data_dir,
                  GUARD_OPERATOR_FILE, ron_strerror(rc));
        /* not on disk, so not in force: the next change or tick tries again */
        sodium_free(a->operator);
        a->operator = NULL;
        return rc;
    }
    ron_info("operator capability %s %s/%s (kid %s, epoch %llu)", first ? "written to" : "re-minted in",
             a->data_dir, GUARD_OPERATOR_FILE, guard_authority_kid(a->auth),
             (unsigned long long)guard_authority_epoch(a->auth));
    return 0;
}

static void auth_tick(uv_timer_t *t);
static void auth_tick_once(mn_auth_t *a);

/* Push the change (prev, head] of entry e: to the node guard (micro) and to every child. */
static void
auth_push(mn_auth_t *a, uint64_t prev, const guard_entry_t *e)
{
    uint64_t head = guard_authority_head(a->auth);
    size_t pl = strlen(MN_AUTH_EVENT_PREFIX);
    long n;

    if (a->node_guard != NULL) {
        int rc = guard_apply(a->node_guard, prev, head, e, 1);
        if (rc < 0)
            ron_error("node guard: cannot apply change %llu: %s", (unsigned long long)head,
                      ron_strerror(rc));
    }
    if (a->bus == NULL)
        return;
    memcpy(a->page, MN_AUTH_EVENT_PREFIX, pl);
    n = guard_page_encode(prev, head, e, 1, a->page + pl, MN_AUTH_PAGE_MAX - pl - 2);
    if (n < 0) {
        ron_error("auth push: cannot encode change %llu: %s", (unsigned long long)head,
                  ron_strerror((int)n));
        return;
    }
    a->page[pl + (size_t)n] = '}';
    (void)rbus_publish(a->bus, OAP_APP_KERNEL, a->page, pl + (size_t)n + 1);
}

/*
 * Arm the tick: every MN_AUTH_TICK_MS, or sooner when a previous kid's grace
 * ends before that (a short auth_grace_s), so its tokens stop verifying when
 * the grace ends rather than up to a minute later.
 */
static void
auth_arm(mn_auth_t *a)
{
    guard_authority_info_t in;
    uint64_t ms = MN_AUTH_TICK_MS;
    int64_t now = ron_unix_time();

    guard_authority_info(a->auth, &in);
    if (in.prev_kid[0] != '\0') {
        int64_t left = in.prev_until > now ? in.prev_until - now : 0;
        if ((uint64_t)left * 1000u + 100u < ms)
            ms = (uint64_t)left * 1000u + 100u;
    }
    uv_timer_start(&a->tick, auth_tick, ms, 0);
}

static void
auth_tick(uv_timer_t *t)
{
    mn_auth_t *a = t->data;
    auth_tick_once(a);
    auth_arm(a);
}

static void
auth_tick_once(mn_auth_t *a)
{
    guard_entry_t e;
    uint64_t prev = guard_authority_head(a->auth);
    int rc = guard_authority_tick(a->auth, ron_unix_time(), false, &e);

    if (rc < 0) {
        ron_error("key rotation check failed: %s", ron_strerror(rc));
        return;
    }
    if (rc == 0) {
        if (a->operator == NULL && !a->amnesia)
            (void)operator_keep(a, false); /* its last write failed */
        return;
    }
    ron_info("capability keys now %s (change %llu)", guard_authority_kid(a->auth),
             (unsigned long long)guard_authority_head(a->auth));
    auth_push(a, prev, &e);
    (void)operator_keep(a, false);
}

/* Bring a fresh node guard to the authority's head. */
static int
node_guard_sync(mn_auth_t *a)
{
    uint64_t after = guard_head(a->node_guard);
    bool more = true;
    int rc = 0;

    while (more && rc == 0) {
        size_t n = guard_authority_since(a->auth, after, a->entries, GUARD_SYNC_PAGE, &more);
        uint64_t head = more && n > 0 ? a->entries[n - 1].seq : guard_authority_head(a->auth);
        rc = guard_apply(a->node_guard, after, head, a->entries, n);
        after = head;
        if (n == 0)
            break;
    }
    return rc;
}

int
mn__auth_open(uv_loop_t *loop, const ron_config_t *cfg, const kms_keystore_t *keys,
              mn_auth_t **out, char *err, size_t errcap)
{
    mn_auth_t *a = ron_xcalloc(1, sizeof *a);
    char dir[RON_CONFIG_PATH_MAX + 16];
    guard_authority_opts_t o = {0};
    uint8_t *seed = NULL;
    int rc;

    *out = NULL;
    a->loop = loop;
    a->amnesia = ron_config_amnesia(cfg);
    snprintf(a->data_dir, sizeof a->data_dir, "%s", cfg->data_dir);
    a->page = ron_xmalloc(MN_AUTH_PAGE_MAX);
    a->entries = ron_xcalloc(GUARD_SYNC_PAGE, sizeof *a->entries);
    if (sodium_init() < 0 || (seed = sodium_malloc(KMS_SEED_LEN)) == NULL ||
        (a->master = sodium_malloc(GUARD_MASTER_LEN)) == NULL) {
        rc = -ENOMEM;
        snprintf(err, errcap, "capability master: no secure memory");
        goto fail;
    }
    if ((rc = kms_key_export_seed(kms_keystore_identity(keys), seed)) < 0) {
        snprintf(err, errcap, "capability master: %s", ron_strerror(rc));
        goto fail;
    }
    guard_master_derive(seed, a->master);
    sodium_free(seed);
    seed = NULL;
    if (!a->amnesia) {
        snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, MN_AUDIT_DIR);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            rc = -errno;
            snprintf(err, errcap, "%s: %s", dir, ron_strerror(rc));
            goto fail;
        }
        snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, MN_AUTH_DIR);
        o.dir = dir;
    }
    o.master = a->master;
    o.rotate_every = (int64_t)cfg->auth_rotate_every_s; /* 1..30 days (config); 0: default */
    o.grace = (int64_t)cfg->auth_grace_s;
    if ((rc = guard_authority_open(&o, ron_unix_time(), &a->auth)) < 0) {
        snprintf(err, errcap, "capability authority %s: %s", o.dir != NULL ? o.dir : "(RAM)",
                 ron_strerror(rc));
        goto fail;
    }
    if (cfg->profile == RON_PROFILE_MICRO) {
        guard_opts_t go = {.service = "node", .master = a->master,
                           .policy_file = cfg->policy_file};
        if (!a->amnesia) {
            snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, MN_AUDIT_DIR);
            go.audit_dir = dir;
        }
        if ((rc = guard_new(&go, &a->node_guard)) < 0 || (rc = node_guard_sync(a)) < 0) {
            snprintf(err, errcap, "node guard: %s", ron_strerror(rc));
            goto fail;
        }
        proc_guard = a->node_guard;
        proc_guard_fed = true;
    }
    if ((rc = operator_keep(a, true)) < 0) {
        snprintf(err, errcap, "operator capability: %s", ron_strerror(rc));
        goto fail;
    }
    uv_timer_init(loop, &a->tick);
    a->tick.data = a;
    auth_arm(a);
    ron_info("capability authority open: kid %s, epoch %llu, change %llu%s",
             guard_authority_kid(a->auth), (unsigned long long)guard_authority_epoch(a->auth),
             (unsigned long long)guard_authority_head(a->auth), a->amnesia ? " (RAM)" : "");
    *out = a;
    return 0;
fail:
    sodium_free(seed);
    if (proc_guard == a->node_guard) {
        proc_guard = NULL;
        proc_guard_fed = false;
    }
    guard_free(a->node_guard);
    guard_authority_close(a->auth);
    sodium_free(a->master);
    sodium_free(a->operator);
    free(a->page);
    free(a->entries);
    free(a);
    return rc;
}

void
mn__auth_set_bus(mn_auth_t *a, rbus_t *bus)
{
    if (a != NULL)
        a->bus = bus;
}

uint64_t
mn__auth_head(const mn_auth_t *a)
{
    return a != NULL ? guard_authority_head(a->auth) : 0;
}

int
mn__auth_capkey_pipe(mn_auth_t *a)
{
    if (a == NULL)
        return RON_ENOKEYS;
    return mn__secret_pipe(a->master, GUARD_MASTER_LEN);
}

/* One page of changes after `after` into a->page. Returns its length or a code. */
static long
auth_page(mn_auth_t *a, uint64_t after)
{
    bool more = false;
    size_t n = guard_authority_since(a->auth, after, a->entries, GUARD_SYNC_PAGE, &more);
    uint64_t head = more && n > 0 ? a->entries[n - 1].seq : guard_authority_head(a->auth);

    if (after > guard_authority_head(a->auth))
        return RON_EINVAL;
    return guard_page_encode(after, head, a->entries, n, a->page, MN_AUTH_PAGE_MAX);
}

static bool
json_u64(json_t *msg, const char *key, uint64_t *v)
{
    const char *s = json_string_value(json_object_get(msg, key));
    return s != NULL && ron_parse_u64(s, strlen(s), v) == 0;
}

static void
auth_sync_op(mn_auth_t *a, rbus_req_t *req, json_t *msg)
{
    uint64_t after = 0;
    long n;

    if (json_object_get(msg, "after") != NULL && !json_u64(msg, "after", &after)) {
        rbus_respond_error_ex(req, 400, NULL, "after", 0, "after: expected a decimal string");
        return;
    }
    n = auth_page(a, after);
    if (n == RON_EINVAL) {
        rbus_respond_error_ex(req, 400, NULL, "after", 0, "after: past the authority's head");
        return;
    }
    if (n < 0) {
        rbus_respond_error(req, 500, ron_strerror((int)n));
        return;
    }
    rbus_respond(req, 200, a->page, (size_t)n);
}

static void
auth_revoke_op(mn_auth_t *a, const char *service, rbus_req_t *req, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    json_t *ep = json_object_get(msg, "epoch");
    uint64_t prev = guard_authority_head(a->auth), until = 0, epoch = 0;
    guard_entry_t e;
    char body[96];
    int rc;

    if ((id == NULL) == (ep == NULL)) {
        rbus_respond_error_ex(req, 400, NULL, "id", 0, "give exactly one of id and epoch");
        return;
    }
    if (json_object_get(msg, "until") != NULL && !json_u64(msg, "until", &until)) {
        rbus_respond_error_ex(req, 400, NULL, "until", 0, "until: expected a decimal string");
        return;
    }
    if (id != NULL) {
        if (until > INT64_MAX) {
            rbus_respond_error_ex(req, 400, NULL, "until", 0, "until: out of range");
            return;
        }
        rc = guard_authority_revoke(a->auth, id, strlen(id), (int64_t)until, ron_unix_time(), &e);
        if (rc == RON_ECAPFORMAT) {
            rbus_respond_error_ex(req, 400, NULL, "id", 0,
                                  "id: expected a token identifier ron1:<kid>:<epoch>:<32 hex>");
            return;
        }
    } else {
        if (!(json_is_string(ep) && strcmp(json_string_value(ep), "next") == 0) &&
            (!json_u64(msg, "epoch", &epoch) || epoch == 0 || epoch > INT64_MAX)) {
            rbus_respond_error_ex(req, 400, NULL, "epoch", 0,
                                  "epoch: expected \"next\" or a decimal string >= 1");
            return;
        }
        if (epoch > guard_authority_epoch(a->auth) + 1) {
            /* one step at most: a jump (to 2^63-1) would leave nothing to raise to */
            rbus_respond_error_ex(req, 400, NULL, "epoch", 0,
                                  "epoch: at most the epoch in force + 1");
            return;
        }
        {
            int64_t r = guard_authority_raise_epoch(a->auth, epoch, &e);
            rc = r < 0 ? (int)r : 0;
        }
    }
    if (rc < 0) {
        rbus_respond_error(req, rc == RON_ECAPFULL ? 507 : 500, ron_strerror(rc));
        return;
    }
    if (guard_authority_head(a->auth) != prev) {
        if (id != NULL)
            ron_info("revoked %s for %s (change %llu)", id, service,
                     (unsigned long long)guard_authority_head(a->auth));
        else
            ron_info("revocation epoch raised to %llu for %s (change %llu)",
                     (unsigned long long)guard_authority_epoch(a->auth), service,
                     (unsigned long long)guard_authority_head(a->auth));
        auth_push(a, prev, &e);
        (void)operator_keep(a, false);
    }
    snprintf(body, sizeof body, "{\"epoch\":\"%llu\",\"head\":\"%llu\"}",
             (unsigned long long)guard_authority_epoch(a->auth),
             (unsigned long long)guard_authority_head(a->auth));
    rbus_respond(req, 200, body, strlen(body));
}

/* The key generation as JSON into buf: what auth_rotate and auth_show answer. */
static void
auth_info_json(const mn_auth_t *a, char *buf, size_t cap)
{
    guard_authority_info_t in;

    guard_authority_info(a->auth, &in);
    snprintf(buf, cap,
             "{\"epoch\":\"%llu\",\"gen_started\":\"%lld\",\"grace_s\":\"%lld\","
             "\"head\":\"%llu\",\"kid\":\"%s\",\"prev_kid\":\"%s\",\"prev_until\":\"%lld\","
             "\"revoked\":\"%zu\",\"rotate_every_s\":\"%lld\"}",
             (unsigned long long)in.epoch, (long long)in.gen_started, (long long)in.grace,
             (unsigned long long)in.head, in.kid, in.prev_kid, (long long)in.prev_until,
             in.n_revoked, (long long)in.rotate_every);
}

/* auth_rotate: the next key generation now; pushed, operator.cap re-minted. */
static void
auth_rotate_op(mn_auth_t *a, const char *service, rbus_req_t *req)
{
    uint64_t prev = guard_authority_head(a->auth);
    guard_entry_t e;
    char body[512];
    int rc = guard_authority_tick(a->auth, ron_unix_time(), true, &e);

    if (rc < 0) {
        ron_error("key rotation for %s failed: %s", service, ron_strerror(rc));
        rbus_respond_error(req, 500, ron_strerror(rc));
        return;
    }
    ron_info("capability keys rotated on demand (%s): now %s (change %llu)", service,
             guard_authority_kid(a->auth), (unsigned long long)guard_authority_head(a->auth));
    auth_push(a, prev, &e);
    (void)operator_keep(a, false);
    auth_arm(a); /* the previous kid's grace may end before the next minute */
    auth_info_json(a, body, sizeof body);
    rbus_respond(req, 200, body, strlen(body));
}

void
mn__auth_bus_op(mn_auth_t *a, rbus_req_t *req, const char *service, const char *op, json_t *msg)
{
    char body[512];

    if (a == NULL) {
        rbus_respond_error_ex(req, 503, NULL, NULL, 1000, "the capability authority is not open");
        return;
    }
    if (strcmp(op, "auth_sync") == 0) {
        auth_sync_op(a, req, msg);
    } else if (strcmp(op, "auth_rotate") == 0) {
        auth_rotate_op(a, service, req);
    } else if (strcmp(op, "auth_show") == 0) {
        auth_info_json(a, body, sizeof body);
        rbus_respond(req, 200, body, strlen(body));
    } else {
        auth_revoke_op(a, service, req, msg);
    }
}

void
mn__auth_config(mn_auth_t *a, const char *old_policy, const ron_config_t *cfg)
{
    int rc;

    if (a == NULL || a->node_guard == NULL || strcmp(old_policy, cfg->policy_file) == 0)
        return;
    rc = guard_policy_reload(a->node_guard, cfg->policy_file);
    if (rc < 0)
        ron_error("policy_file %s refused; the previous policy stays: %s",
                  cfg->policy_file[0] != '\0' ? cfg->policy_file : "(default)", ron_strerror(rc));
    else
        ron_info("policy reloaded from %s",
                 cfg->policy_file[0] != '\0' ? cfg->policy_file : "the shipped default");
}

size_t
mn__auth_metrics(mn_auth_t *a, char *buf, size_t cap)
{
    if (a == NULL || a->node_guard == NULL)
        return 0;
    return guard_metrics_render(a->node_guard, buf, cap);
}

static void
auth_closed(uv_handle_t *h)
{
    mn_auth_t *a = h->data;
    if (proc_guard == a->node_guard) {
        proc_guard = NULL;
        proc_guard_fed = false;
    }
    guard_free(a->node_guard);
    guard_authority_close(a->auth);
    sodium_free(a->master);
    sodium_free(a->operator);
    free(a->page);
    free(a->entries);
    free(a);
}

void
mn__auth_close(mn_auth_t *a)
{
    if (a == NULL)
        return;
    a->bus = NULL;
    uv_close((uv_handle_t *)&a->tick, auth_closed);
}
