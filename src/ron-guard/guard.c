/*
 * guard.c - the process guard: one per enforcing process, consulted by
 * every boundary of it (gateway, app port, overlay, bus services).
 *
 * Why this shape: guard_check runs on every request of every boundary, on
 * many threads, while the owner's loop applies the authority's pushes
 * (revocations, epoch raises, key rotations). Revocation state lives in an
 * auth_revocation_t, which is itself thread-safe, so a revocation reaches
 * the next check without any lock here. Root keys live in the verifier,
 * whose add/remove are not safe against auth_verify; a reader-writer lock
 * (writer-preferring, so a rotation is never starved by a busy boundary)
 * lets every check verify in parallel and makes the rare key change wait
 * for the checks in flight. Rates are bounded token-bucket tables
 * (guard_rate.c); counters are atomics; the audit log has its own lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard_internal.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_policy.h"
#include "ron_utf8.h"
#include "ron_util.h"

#define GUARD_CACHE_DEFAULT 4096
#define GUARD_RAM_AUDIT 8192      /* records the amnesia audit ring keeps (a few MiB at most) */
#define GUARD_RETIRED_POLICIES 16 /* replaced policies kept alive (their reasons) */
#define GUARD_MAX_SERVICE 31

/* Rejection slugs, the metric's reason label. */
enum {
    SLUG_REQUIRED = 0,
    SLUG_INVALID,
    SLUG_REVOKED,
    SLUG_EXPIRED,
    SLUG_FORBIDDEN,
    SLUG_RATE,
    SLUG_COUNT
};
static const char *const slug_names[SLUG_COUNT] = {"capability_required", "capability_invalid",
                                                   "capability_revoked",  "capability_expired",
                                                   "forbidden",           "rate_limited"};

struct guard {
    char service[GUARD_MAX_SERVICE + 1];
    uint8_t *master;            /* sodium_malloc */
    pthread_rwlock_t keys_lock; /* write: key changes; read: verify, mint */
    auth_verifier_t *ver;
    auth_revocation_t *rev;
    size_t n_kids; /* under keys_lock */
    char kids[GUARD_MAX_KIDS][AUTH_MAX_KID + 1];
    _Atomic uint64_t head;

    pthread_mutex_t pol_mu;
    pol_policy_t *pol;
    pol_policy_t *retired[GUARD_RETIRED_POLICIES]; /* keep reasons valid for results */
    size_t n_retired;

    aud_log_t *aud;
    guard__rate_t src_rate, tok_rate;

    pthread_mutex_t self_mu;
    char self_tok[AUTH_MAX_TOKEN + 1];
    size_t self_len;
    int64_t self_issued;
    uint64_t self_epoch;
    char self_kid[AUTH_MAX_KID + 1];

    _Atomic uint64_t allowed, rejected;
    _Atomic uint64_t by_slug[SLUG_COUNT];
    _Atomic uint64_t audit_errors;
};

int
guard_status_of(int code)
{
    switch (code) {
    case 0:
        return 200;
    case RON_ECAPNEEDED:
    case RON_ECAPFORMAT:
    case RON_ECAPCAVEAT:
    case RON_ECAPKID:
    case RON_ECAPSIG:
    case RON_ECAPREVOKED:
    case RON_ECAPEXPIRED:
        return 401;
    case RON_ECAPDENY:
    case RON_ECAPDEPTH:
    case RON_EPOLDENY:
        return 403;
    case RON_EFLOOD:
        return 429;
    default:
        return 500;
    }
}

static int
slug_of(int code)
{
    switch (code) {
    case RON_ECAPNEEDED:
        return SLUG_REQUIRED;
    case RON_ECAPREVOKED:
        return SLUG_REVOKED;
    case RON_ECAPEXPIRED:
        return SLUG_EXPIRED;
    case RON_ECAPDENY:
    case RON_ECAPDEPTH:
    case RON_EPOLDENY:
        return SLUG_FORBIDDEN;
    case RON_EFLOOD:
        return SLUG_RATE;
    default:
        return SLUG_INVALID;
    }
}

static const char *
reason_sentence(int code)
{
    switch (code) {
    case RON_ECAPNEEDED:
        return "this request needs a capability";
    case RON_ECAPFORMAT:
        return "the capability is malformed";
    case RON_ECAPCAVEAT:
        return "the capability has a malformed or unknown caveat";
    case RON_ECAPKID:
        return "the capability names a key this node does not hold";
    case RON_ECAPSIG:
        return "the capability's signature does not verify";
    case RON_ECAPREVOKED:
        return "the capability has been revoked";
    case RON_ECAPEXPIRED:
        return "the capability has expired or is not valid yet";
    case RON_ECAPDENY:
        return "the capability does not allow this request";
    case RON_ECAPDEPTH:
        return "the capability is too many mints deep to mint from";
    case RON_EPOLDENY:
        return "the node's policy does not allow this request";
    case RON_EFLOOD:
        return "too many requests: slow down";
    default:
        return "the request could not be checked";
    }
}

static bool
service_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GUARD_MAX_SERVICE)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- policy ---- */

static int
policy_load(const char *path, pol_policy_t **out)
{
    if (path == NULL || path[0] == '\0') {
        *out = pol_policy_default();
        return 0;
    }
    int rc = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        ron_error("guard: policy file %s: %s", path, ron_strerror(rc));
        return rc;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > (off_t)POL_MAX_BUNDLE) {
        rc = RON_EPOLLIMIT;
        ron_error("guard: policy file %s is not a regular file of at most %u bytes", path,
                  POL_MAX_BUNDLE);
        goto out;
    }
    size_t len = (size_t)sb.st_size;
    buf = ron_xmalloc(len + 1);
    for (size_t off = 0; off < len;) {
        ssize_t r = read(fd, buf + off, len - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : RON_EPOLICY;
            goto out;
        }
        off += (size_t)r;
    }
    pol_err_t err;
    *out = pol_compile(buf, len, &err);
    if (*out == NULL) {
        rc = err.code;
        ron_error("guard: policy file %s refused: %s", path, err.msg);
    }
out:
    close(fd);
    free(buf);
    return rc;
}

static pol_policy_t *
policy_acquire(guard_t *g)
{
    pthread_mutex_lock(&g->pol_mu);
    pol_policy_t *p = pol_policy_ref(g->pol);
    pthread_mutex_unlock(&g->pol_mu);
    return p;
}

int
guard_policy_reload(guard_t *g, const char *path)
{
    pol_policy_t *p = NULL;
    int rc = policy_load(path, &p);
    if (rc != 0)
        return rc;
    char target[AUD_MAX_TARGET + 1];
    snprintf(target, sizeof target, "%s", path && path[0] ? path : "default");
    char reason[64];
    snprintf(reason, sizeof reason, "revision %llu, %zu rules",
             (unsigned long long)pol_policy_revision(p), pol_policy_rule_count(p));
    pthread_mutex_lock(&g->pol_mu);
    if (g->n_retired == GUARD_RETIRED_POLICIES) {
        pol_policy_unref(g->retired[0]);
        memmove(g->retired, g->retired + 1, (GUARD_RETIRED_POLICIES - 1) * sizeof(pol_policy_t *));
        g->n_retired--;
    }
    g->retired[g->n_retired++] = g->pol;
    g->pol = p;
    pthread_mutex_unlock(&g->pol_mu);
    guard_audit(g, AUD_POLICY_CHANGED, NULL, "reload", target, AUD_OK, reason);
    return 0;
}

/* ---- life cycle ---- */

static int
audit_open(guard_t *g, const char *dir)
{
    if (dir == NULL)
        return aud_log_new_ram(GUARD_RAM_AUDIT, &g->aud);
    char log_path[PATH_MAX], ckpt_path[PATH_MAX];
    if ((size_t)snprintf(log_path, sizeof log_path, "%s/%s.log", dir, g->service) >=
            sizeof log_path ||
        (size_t)snprintf(ckpt_path, sizeof ckpt_path, "%s/%s.ckpt", dir, g->service) >=
            sizeof ckpt_path)
        return -ENAMETOOLONG;
    int rc = ron_mkdir_p(dir);
    if (rc != 0)
        return rc;
    /* Checkpoint key: Ed25519 from BLAKE3 derive_key("ron-guard audit key v1", master). */
    uint8_t *seed = sodium_malloc(32 + crypto_sign_SECRETKEYBYTES);
    if (seed == NULL)
        return -ENOMEM;
    uint8_t *sk = seed + 32;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    guard__audit_seed(g->master, seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    aud_file_opts_t o = {.log_path = log_path, .ckpt_path = ckpt_path, .sign_sk = sk};
    rc = aud_log_open_file(&o, &g->aud);
    sodium_free(seed);
    return rc;
}

int
guard_new(const guard_opts_t *o, guard_t **out)
{
    if (o == NULL || out == NULL || o->master == NULL || o->service == NULL ||
        !service_ok(o->service) || o->cache_slots > AUTH_CACHE_MAX)
        return RON_EINVAL;
    *out = NULL;
    if (sodium_init() < 0) /* idempotent; sodium_malloc needs it */
        return -ENOMEM;
    int rc;
    guard_t *g = ron_xcalloc(1, sizeof *g);
    snprintf(g->service, sizeof g->service, "%s", o->service);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&g->keys_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&g->pol_mu, NULL);
    pthread_mutex_init(&g->self_mu, NULL);
    guard__rate_init(&g->src_rate, GUARD_RATE_SLOTS);
    guard__rate_init(&g->tok_rate, GUARD_RATE_SLOTS);
    g->master = sodium_malloc(GUARD_MASTER_LEN);
    if (g->master == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(g->master, o->master, GUARD_MASTER_LEN);
    /* Twice the authority's bound: a guard never refuses a revocation the
     * authority kept (expired ones are dropped first when full). */
    g->rev = auth_revocation_new(2 * (size_t)GUARD_MAX_REVOKED);
    g->ver = auth_verifier_new(g->rev, o->cache_slots ? o->cache_slots : GUARD_CACHE_DEFAULT);
    if (g->rev == NULL || g->ver == NULL) {
        rc = RON_EINVAL;
        goto fail;
    }
    rc = policy_load(o->policy_file, &g->pol);
    if (rc != 0)
        goto fail;
    rc = audit_open(g, o->audit_dir);
    if (rc != 0) {
        ron_error("guard: audit log in %s: %s", o->audit_dir ? o->audit_dir : "RAM",
                  ron_strerror(rc));
        goto fail;
    }
    *out = g;
    return 0;
fail:
    guard_free(g);
    return rc;
}

void
guard_free(guard_t *g)
{
    if (g == NULL)
        return;
    if (g->aud != NULL)
        aud_log_close(g->aud);
    auth_verifier_free(g->ver);
    auth_revocation_free(g->rev);
    pol_policy_unref(g->pol);
    for (size_t i = 0; i < g->n_retired; i++)
        pol_policy_unref(g->retired[i]);
    guard__rate_destroy(&g->src_rate);
    guard__rate_destroy(&g->tok_rate);
    if (g->master != NULL)
        sodium_free(g->master);
    sodium_memzero(g->self_tok, sizeof g->self_tok);
    pthread_rwlock_destroy(&g->keys_lock);
    pthread_mutex_destroy(&g->pol_mu);
    pthread_mutex_destroy(&g->self_mu);
    free(g);
}

/* ---- following the authority ---- */

static int
apply_kids(guard_t *g, const guard_entry_t *e)
{
    uint8_t *key = sodium_malloc(GUARD_KEY_LEN);
    if (key == NULL)
        return -ENOMEM;
    int rc = 0;
    pthread_rwlock_wrlock(&g->keys_lock);
    /* Drop kids no longer in force first: AUTH_MAX_KEYS bounds the verifier. */
    for (size_t i = 0; i < g->n_kids; i++) {
        bool keep = false;
        for (size_t j = 0; j < e->n_kids; j++)
            keep = keep || strcmp(g->kids[i], e->kids[j]) == 0;
        if (!keep)
            auth_verifier_remove_key(g->ver, g->kids[i]);
    }
    /* The kids now held: those already held and those added (a kid whose
     * key could not be added is left out, so mint never uses it). */
    char held[GUARD_MAX_KIDS][AUTH_MAX_KID + 1];
    size_t n_held = 0;
    for (size_t j = 0; j < e->n_kids; j++) {
        bool have = false;
        for (size_t i = 0; i < g->n_kids; i++)
            have = have || strcmp(g->kids[i], e->kids[j]) == 0;
        if (!have) {
            guard_root_key(g->master, e->kids[j], key);
            int r = auth_verifier_add_key(g->ver, e->kids[j], key, GUARD_KEY_LEN);
            if (r != 0) {
                rc = rc ? rc : r;
                continue;
            }
        }
        memcpy(held[n_held++], e->kids[j], AUTH_MAX_KID + 1);
    }
    g->n_kids = n_held;
    memcpy(g->kids, held, n_held * sizeof held[0]);
    pthread_rwlock_unlock(&g->keys_lock);
    sodium_free(key);
    return rc;
}

int
guard_apply(guard_t *g, uint64_t prev, uint64_t head, const guard_entry_t *e, size_t n)
{
    if (g == NULL || prev > head || (n > 0 && e == NULL))
        return RON_EINVAL;
    uint64_t have = atomic_load(&g->head);
    if (prev > have)
        return RON_EAGAIN;
    int64_t now = ron_unix_time();
    for (size_t i = 0; i < n; i++) {
        if (e[i].seq <= have)
            continue; /* applied already */
        if (e[i].seq > head)
            return RON_EINVAL;
        int rc = 0;
        switch (e[i].kind) {
        case GUARD_E_KIDS:
            if (e[i].n_kids < 1 || e[i].n_kids > GUARD_MAX_KIDS)
                return RON_EINVAL;
            rc = apply_kids(g, &e[i]);
            break;
        case GUARD_E_EPOCH:
            auth_revocation_raise_epoch(g->rev, e[i].epoch);
            break;
        case GUARD_E_REVOKE:
            rc = auth_revocation_add_epoch(g->rev, e[i].nonce, e[i].epoch, e[i].until, now);
            break;
        default:
            return RON_EINVAL;
        }
        if (rc != 0)
            return rc;
        have = e[i].seq;
        atomic_store(&g->head, have);
    }
    if (head > have)
        atomic_store(&g->head, head);
    return 0;
}

uint64_t
guard_head(const guard_t *g)
{
    return atomic_load(&((guard_t *)g)->head);
}

/* ---- audit and counting ---- */

aud_log_t *
guard__audit_log(guard_t *g)
{
    return g->aud;
}

/* Copy src into dst (cap bytes) as valid UTF-8 that fits: invalid bytes
 * become '?', and a sequence that would not fit ends the copy, so a long
 * or odd target (a URL path) still makes a record instead of an error. */
static const char *
text_clean(char *dst, size_t cap, const char *src)
{
    size_t o = 0, n = src ? strlen(src) : 0;
    for (size_t i = 0; i < n;) {
        size_t l = ron_utf8_seq_len((const uint8_t *)src + i, n - i);
        size_t w = l ? l : 1;
        if (o + w >= cap)
            break;
        if (l == 0)
            dst[o] = '?';
        else
            memcpy(dst + o, src + i, l);
        o += w;
        i += w;
    }
    dst[o] = '\0';
    return dst;
}

int
guard_audit(guard_t *g, aud_kind_t kind, const char *actor, const char *op, const char *target,
            aud_outcome_t outcome, const char *reason)
{
    char a[AUD_MAX_ACTOR + 1], o[AUD_MAX_OP + 1], t[AUD_MAX_TARGET + 1], r[AUD_MAX_REASON + 1];
    aud_event_t ev = {.kind = kind,
                      .actor = text_clean(a, sizeof a, actor ? actor : g->service),
                      .op = text_clean(o, sizeof o, op),
                      .target = text_clean(t, sizeof t, target),
                      .outcome = outcome,
                      .reason = text_clean(r, sizeof r, reason)};
    int rc = aud_append(g->aud, &ev, NULL, NULL, NULL);
    if (rc != 0)
        atomic_fetch_add(&g->audit_errors, 1);
    return rc;
}

/* "ron1:<kid>:<epoch>:<32 hex>" (cut at AUTH_ID_MAX, as snprintf would).
 * Written by hand: it runs on every check with a token, and snprintf was
 * a third of guard_check's time there (perf, bench/gateway_auth.sh). */
static void
id_format(const auth_id_t *id, char out[static AUTH_ID_MAX + 1])
{
    char buf[8 + AUTH_MAX_KID + 24 + AUTH_NONCE_LEN * 2 + 1], dig[24];
    size_t n = 5, kl = strnlen(id->kid, AUTH_MAX_KID), d = 0;
    uint64_t e = id->epoch;

    memcpy(buf, "ron1:", sizeof "ron1:"); /* the NUL is overwritten below */
    memcpy(buf + n, id->kid, kl);
    n += kl;
    buf[n++] = ':';
    do {
        dig[d++] = (char)('0' + e % 10);
        e /= 10;
    } while (e > 0);
    while (d > 0)
        buf[n++] = dig[--d];
    buf[n++] = ':';
    ron_hex_encode(buf + n, id->nonce, AUTH_NONCE_LEN); /* NUL-terminates */
    n += AUTH_NONCE_LEN * 2;
    if (n > AUTH_ID_MAX)
        n = AUTH_ID_MAX;
    memcpy(out, buf, n);
    out[n] = '\0';
}

/* Fill out for a rejection with code, count it and audit it. */
static int
reject(guard_t *g, const guard_req_t *req, int code, const char *reason, const char *detail,
       guard_result_t *out)
{
    int s = slug_of(code);
    out->code = code;
    out->status = guard_status_of(code);
    out->slug = slug_names[s];
    out->reason = reason ? reason : reason_sentence(code);
    atomic_fetch_add(&g->rejected, 1);
    atomic_fetch_add(&g->by_slug[s], 1);
    char why[AUD_MAX_REASON + 1];
    if (detail != NULL && detail[0] != '\0')
        snprintf(why, sizeof why, "%s: %s", out->slug, detail);
    else
        snprintf(why, sizeof why, "%s", out->slug);
    guard_audit(g, AUD_REJECTED, out->actor, auth_op_name(req->op), req->target ? req->target : "",
                AUD_DENIED, why);
    return code;
}

static void
result_init(const guard_req_t *req, guard_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->status = 200;
    out->slug = "ok";
    out->reason = "";
    out->anonymous = req->token == NULL;
    memcpy(out->actor, "anon", sizeof "anon");
}

/* Bucket key of a source address for the policy rule `rule`; false: no address. */
static bool
source_key(const struct sockaddr *sa, int32_t rule, uint8_t key[static GUARD__RATE_KEY])
{
    memset(key, 0, GUARD__RATE_KEY);
    key[0] = 's';
    memcpy(key + 4, &rule, sizeof rule);
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        /* as IPv4-mapped IPv6, so both spellings share a bucket */
        key[8 + 10] = 0xff;
        key[8 + 11] = 0xff;
        memcpy(key + 8 + 12, &in->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(key + 8, &in6->sin6_addr, 16);
        return true;
    }
    return false;
}

static int
rate_source(guard_t *g, const guard_req_t *req, const pol_decision_t *d, guard_result_t *out)
{
    uint8_t key[GUARD__RATE_KEY];
    if (d->obligations.rate == 0 || !source_key(req->source, d->rule, key))
        return 0;
    uint32_t retry = 1;
    if (guard__rate_take(&g->src_rate, key, d->obligations.rate, d->obligations.burst, ron_now_ns(),
                         &retry))
        return 0;
    out->retry_after_s = retry;
    return reject(g, req, RON_EFLOOD, NULL, "per-source rate", out);
}

static void
obligations_do(guard_t *g, const guard_req_t *req, const pol_decision_t *d,
               const guard_result_t *out)
{
    if (d->obligations.audit) {
        char why[AUD_MAX_REASON + 1];
        snprintf(why, sizeof why, "allowed by policy rule %s", d->rule_id);
        guard_audit(g, AUD_ADMIN, out->actor, auth_op_name(req->op), req->target ? req->target : "",
                    AUD_OK, why);
    }
    if (d->obligations.log)
        ron_info("guard %s: allow %s actor=%s rule=%s", g->service, auth_op_name(req->op),
                 out->actor, d->rule_id);
}

int
guard_check(guard_t *g, const guard_req_t *req, guard_result_t *out)
{
    result_init(req, out);
    int64_t now = req->now ? req->now : ron_unix_time();
    pol_policy_t *p = policy_acquire(g);
    pol_decision_t d;
    pol_request_t pr = {.anonymous = req->token == NULL,
                        .op = (pol_op_t)req->op,
                        .body_len = req->size == AUTH_SIZE_UNKNOWN ? 0 : req->size,
                        .source = req->source};
    int rc;
    if ((unsigned)req->op >= AUTH_OP_COUNT) {
        rc = reject(g, req, RON_ECAPDENY, "unknown operation", "op", out);
        goto out;
    }
    if (req->token != NULL) {
        auth_request_t ar = {.op = req->op,
                             .has_tenant = req->tenant != NULL,
                             .addr = req->addr,
                             .size = req->size,
                             .name = req->name,
                             .now = now};
        if (req->tenant != NULL)
            memcpy(ar.tenant, req->tenant, AUTH_TENANT_LEN);
        pthread_rwlock_rdlock(&g->keys_lock);
        rc = auth_verify(g->ver, req->token, req->token_len, &ar, &out->verdict);
        pthread_rwlock_unlock(&g->keys_lock);
        if (out->verdict.reason == AUTH_OK || out->verdict.reason >= AUTH_DENY_KID)
            id_format(&out->verdict.id, out->actor);
        if (rc != 0) {
            rc = reject(g, req, rc, NULL, auth_reason_name(out->verdict.reason), out);
            goto out;
        }
        const auth_grant_t *gr = &out->verdict.grant;
        pr.has_tenant = gr->has_tenant;
        memcpy(pr.tenant, gr->tenant, POL_TENANT_LEN);
        if (pol_eval(p, &pr, &d) != 0 || d.effect != POL_ALLOW) {
            rc = reject(g, req, RON_EPOLDENY, d.reason[0] ? d.reason : NULL, d.rule_id, out);
            goto out;
        }
        if ((out->verdict.pending & AUTH_PENDING_RATE) && !req->forwarded) {
            uint8_t key[GUARD__RATE_KEY] = {'t'};
            uint32_t retry = 1;
            memcpy(key + 8, out->verdict.id.nonce, AUTH_NONCE_LEN);
            if (!guard__rate_take(&g->tok_rate, key, gr->rate, gr->rate, ron_now_ns(), &retry)) {
                out->retry_after_s = retry;
                rc = reject(g, req, RON_EFLOOD, NULL, "token rate", out);
                goto out;
            }
        }
    } else {
        if (pol_eval(p, &pr, &d) != 0 || d.effect != POL_ALLOW) {
            rc = reject(g, req, RON_ECAPNEEDED, d.reason[0] ? d.reason : NULL, d.rule_id, out);
            goto out;
        }
    }
    rc = rate_source(g, req, &d, out);
    if (rc != 0)
        goto out;
    obligations_do(g, req, &d, out);
    atomic_fetch_add(&g->allowed, 1);
out:
    pol_policy_unref(p);
    return rc;
}

int
guard_reject(guard_t *g, const guard_req_t *req, int code, guard_result_t *out)
{
    result_init(req, out);
    if (req->token != NULL) {
        auth_token_t *t = ron_xmalloc(sizeof *t);
        if (auth_token_parse(req->token, req->token_len, t) == 0)
            snprintf(out->actor, sizeof out->actor, "%s", t->id_str);
        sodium_memzero(t, sizeof *t);
        free(t);
    }
    if (code == 0)
        code = RON_ECAPDENY;
    return reject(g, req, code, NULL, "pending constraint", out);
}

/* ---- minting ---- */

static int
copy_kid(guard_t *g, char kid[static AUTH_MAX_KID + 1])
{
    pthread_rwlock_rdlock(&g->keys_lock);
    int rc = g->n_kids ? 0 : RON_ECAPKID;
    if (rc == 0)
        memcpy(kid, g->kids[0], AUTH_MAX_KID + 1);
    pthread_rwlock_unlock(&g->keys_lock);
    return rc;
}

static long
mint_under(guard_t *g, const char *kid, const char *const *cav, size_t n, char *out, size_t cap,
           char id[static AUTH_ID_MAX + 1])
{
    int rc = auth_id_new(id, kid, auth_revocation_epoch(g->rev));
    if (rc != 0)
        return rc;
    uint8_t *key = sodium_malloc(GUARD_KEY_LEN);
    if (key == NULL)
        return -ENOMEM;
    guard_root_key(g->master, kid, key);
    long len = auth_mint(key, GUARD_KEY_LEN, id, cav, n, out, cap);
    sodium_free(key);
    return len;
}

static bool
prefix_syntax_ok(const char *p)
{
    if (strncmp(p, "b3:", 3) != 0)
        return false;
    size_t n = strlen(p + 3);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[3 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

/*
 * The child's lineage after its other n caveats in cv: `ancestor = <nonce>`
 * for the parent's own identifier (when the parent is a token) and for each
 * of the parent's ancestors, so revoking any of them revokes the child.
 * The caller checked that they fit GUARD_MAX_LINEAGE. Returns the new n.
 */
static size_t
lineage_caveats(const auth_grant_t *parent, const auth_id_t *parent_id, bool has_parent_id,
                char cv[][AUTH_MAX_CAVEAT_LEN + 64], size_t n)
{
    char hex[2 * AUTH_NONCE_LEN + 1];

    if (has_parent_id) {
        ron_hex_encode(hex, parent_id->nonce, AUTH_NONCE_LEN);
        snprintf(cv[n++], AUTH_MAX_CAVEAT_LEN + 64, "ancestor = %s", hex);
    }
    for (size_t i = 0; i < parent->n_ancestors; i++) {
        ron_hex_encode(hex, parent->ancestors[i], AUTH_NONCE_LEN);
        snprintf(cv[n++], AUTH_MAX_CAVEAT_LEN + 64, "ancestor = %s", hex);
    }
    return n;
}

long
guard_mint(guard_t *g, const auth_grant_t *parent, const char *actor, const guard_mint_req_t *m,
           char *out, size_t cap, char id_out[static AUTH_ID_MAX + 1])
{
    if (g == NULL || parent == NULL || m == NULL || out == NULL || m->ops == 0 ||
        (m->ops & ~AUTH_OPS_ALL) != 0 || m->ttl > 86400u * 30)
        return RON_EINVAL;
    if (parent->conflict != 0 || !(parent->ops & (1u << AUTH_OP_MINT)) ||
        (m->ops & ~parent->ops) != 0)
        return RON_ECAPDENY;
    /* actor is the parent's identifier when the parent is a token (the app
     * port's cap_mint); a passport grant has none and starts a lineage */
    auth_id_t parent_id;
    bool actor_is_id = actor != NULL && auth_id_parse(actor, strlen(actor), &parent_id) == 0;
    if (parent->n_ancestors + (actor_is_id ? 1u : 0u) > GUARD_MAX_LINEAGE)
        return RON_ECAPDEPTH;
    int64_t now = ron_unix_time();
    int64_t expires = now + (m->ttl ? m->ttl : 3600);
    if (expires > parent->expires) {
        if (m->ttl != 0)
            return RON_ECAPDENY;
        expires = parent->expires; /* the default ttl is clipped to the parent's */
    }
    if (parent->has_tenant && m->tenant != NULL &&
        memcmp(parent->tenant, m->tenant, AUTH_TENANT_LEN) != 0)
        return RON_ECAPDENY;
    if (m->max_bytes != 0 && m->max_bytes > parent->max_bytes)
        return RON_ECAPDENY;
    if (m->prefix != NULL) {
        if (!prefix_syntax_ok(m->prefix))
            return RON_EINVAL;
        if (parent->prefix_len > 0 &&
            strncmp(m->prefix + 3, parent->prefix, parent->prefix_len) != 0)
            return RON_ECAPDENY;
    }

    /* Caveats (DESIGN.md §6): everything the parent had that bounds the child, narrowed. */
    char cv[8 + GUARD_MAX_LINEAGE][AUTH_MAX_CAVEAT_LEN + 64];
    const char *cav[8 + GUARD_MAX_LINEAGE];
    size_t n = 0;
    size_t off = (size_t)snprintf(cv[n], sizeof cv[n], "ops = ");
    for (int op = 0; op < AUTH_OP_COUNT; op++)
        if (m->ops & (1u << op))
            off += (size_t)snprintf(cv[n] + off, sizeof cv[n] - off, "%s%s", off > 6 ? "," : "",
                                    auth_op_name((auth_op_t)op));
    n++;
    snprintf(cv[n++], sizeof cv[0], "expires = %lld", (long long)expires);
    const uint8_t *tenant = m->tenant ? m->tenant : parent->has_tenant ? parent->tenant : NULL;
    if (tenant != NULL) {
        char hex[AUTH_TENANT_LEN * 2 + 1];
        ron_hex_encode(hex, tenant, AUTH_TENANT_LEN);
        snprintf(cv[n++], sizeof cv[0], "tenant = %s", hex);
    }
    uint64_t mb = m->max_bytes ? m->max_bytes : parent->max_bytes;
    if (mb != UINT64_MAX)
        snprintf(cv[n++], sizeof cv[0], "max-bytes = %llu", (unsigned long long)mb);
    if (m->prefix != NULL)
        snprintf(cv[n++], sizeof cv[0], "prefix = %s", m->prefix);
    else if (parent->prefix_len > 0)
        snprintf(cv[n++], sizeof cv[0], "prefix = b3:%s", parent->prefix);
    if (parent->name_prefix_len > 0)
        snprintf(cv[n++], sizeof cv[0], "name-prefix = %s", parent->name_prefix);
    if (parent->rate > 0)
        snprintf(cv[n++], sizeof cv[0], "rate = %u/s", parent->rate);
    if (parent->not_before != INT64_MIN)
        snprintf(cv[n++], sizeof cv[0], "not-before = %lld", (long long)parent->not_before);
    n = lineage_caveats(parent, &parent_id, actor_is_id, cv, n);
    for (size_t i = 0; i < n; i++)
        cav[i] = cv[i];

    char kid[AUTH_MAX_KID + 1];
    char id[AUTH_ID_MAX + 1];
    int rc = copy_kid(g, kid);
    if (rc != 0)
        return rc;
    long len = mint_under(g, kid, cav, n, out, cap, id);
    if (len < 0)
        return len;
    snprintf(id_out, AUTH_ID_MAX + 1, "%s", id);
    guard_audit(g, AUD_CAP_ISSUED, actor, "mint", id, AUD_OK, cv[0]);
    return len;
}

long
guard_self_token(guard_t *g, char *out, size_t cap)
{
    char kid[AUTH_MAX_KID + 1];
    int rc = copy_kid(g, kid);
    if (rc != 0)
        return rc;
    int64_t now = ron_unix_time();
    uint64_t epoch = auth_revocation_epoch(g->rev);
    long len;
    pthread_mutex_lock(&g->self_mu);
    if (g->self_len == 0 || strcmp(g->self_kid, kid) != 0 || g->self_epoch != epoch ||
        now - g->self_issued >= GUARD_SELF_TTL / 2 || now < g->self_issued) {
        char exp[40], id[AUTH_ID_MAX + 1];
        snprintf(exp, sizeof exp, "expires = %lld", (long long)now + GUARD_SELF_TTL);
        const char *cav[1] = {exp};
        len = mint_under(g, kid, cav, 1, g->self_tok, sizeof g->self_tok, id);
        if (len < 0) {
            g->self_len = 0;
            goto out;
        }
        g->self_len = (size_t)len;
        g->self_issued = now;
        g->self_epoch = epoch;
        memcpy(g->self_kid, kid, sizeof kid);
    }
    if (g->self_len + 1 > cap) {
        len = RON_ETOOBIG;
        goto out;
    }
    memcpy(out, g->self_tok, g->self_len + 1);
    len = (long)g->self_len;
out:
    pthread_mutex_unlock(&g->self_mu);
    return len;
}

/* ---- metrics ---- */

size_t
guard_metrics_render(guard_t *g, char *buf, size_t cap)
{
    size_t off = 0;
    int n;
    const char *s = g->service;
    uint64_t hits = 0, misses = 0;
    auth_verifier_cache_stats(g->ver, &hits, &misses);
    aud_stats_t as;
    aud_log_stats(g->aud, &as);
#define EMIT(...)                                                                                  \
    do {                                                                                           \
        n = snprintf(buf + off, cap - off, __VA_ARGS__);                                           \
        if (n < 0 || (size_t)n >= cap - off)                                                       \
            goto full;                                                                             \
        off += (size_t)n;                                                                          \
    } while (0)
    if (cap == 0)
        return 0;
    EMIT("# TYPE guard_checks_total counter\n");
    EMIT("guard_checks_total{service=\"%s\",result=\"allowed\"} %llu\n", s,
         (unsigned long long)atomic_load(&g->allowed));
    EMIT("guard_checks_total{service=\"%s\",result=\"rejected\"} %llu\n", s,
         (unsigned long long)atomic_load(&g->rejected));
    EMIT("# TYPE guard_rejected_total counter\n");
    for (int i = 0; i < SLUG_COUNT; i++)
        EMIT("guard_rejected_total{service=\"%s\",reason=\"%s\"} %llu\n", s, slug_names[i],
             (unsigned long long)atomic_load(&g->by_slug[i]));
    EMIT("# TYPE guard_authority_head gauge\n");
    EMIT("guard_authority_head{service=\"%s\"} %llu\n", s,
         (unsigned long long)atomic_load(&g->head));
    EMIT("# TYPE guard_epoch gauge\n");
    EMIT("guard_epoch{service=\"%s\"} %llu\n", s,
         (unsigned long long)auth_revocation_epoch(g->rev));
    EMIT("# TYPE guard_revoked gauge\n");
    EMIT("guard_revoked{service=\"%s\"} %zu\n", s, auth_revocation_count(g->rev));
    EMIT("# TYPE guard_cache_hits_total counter\n");
    EMIT("guard_cache_hits_total{service=\"%s\"} %llu\n", s, (unsigned long long)hits);
    EMIT("# TYPE guard_cache_misses_total counter\n");
    EMIT("guard_cache_misses_total{service=\"%s\"} %llu\n", s, (unsigned long long)misses);
    EMIT("# TYPE guard_audit_records_total counter\n");
    EMIT("guard_audit_records_total{service=\"%s\"} %llu\n", s, (unsigned long long)as.records);
    EMIT("# TYPE guard_audit_errors_total counter\n");
    EMIT("guard_audit_errors_total{service=\"%s\"} %llu\n", s,
         (unsigned long long)atomic_load(&g->audit_errors));
#undef EMIT
    return off;
full:
    buf[0] = '\0';
    return 0;
}
