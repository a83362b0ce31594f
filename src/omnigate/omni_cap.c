/*
 * omni_cap.c - capabilities on the app port (app-port.md §1b): the guard's
 * view of a request and its calls. A request is checked by the process guard
 * when its START arrives, before anything is forwarded (a refusal changes
 * nothing). What the guard leaves pending is enforced here as it becomes
 * known: a put's max-bytes as the body arrives, its prefix once the address
 * is known. Also the app port's own capability ops: cap_mint (a token
 * narrowed from the caller's grant) and cap_revoke's per-caller rate and
 * audit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* ---------------------------------------------------------------- capabilities */

/* The capability op each op needs (app-port.md §1b); -1: open to anyone. */
static const int op_auth[OMNI_OP__COUNT] = {
    [OMNI_OP_PING] = -1,
    [OMNI_OP_PUT] = AUTH_OP_PUT,
    [OMNI_OP_GET] = AUTH_OP_GET,
    [OMNI_OP_STAT] = AUTH_OP_GET,
    [OMNI_OP_LIST] = AUTH_OP_PIN,
    [OMNI_OP_PIN] = AUTH_OP_PIN,
    [OMNI_OP_UNPIN] = AUTH_OP_PIN,
    [OMNI_OP_GC] = AUTH_OP_ADMIN,
    [OMNI_OP_PUBLISH] = AUTH_OP_NAME,
    [OMNI_OP_RESOLVE] = AUTH_OP_GET,
    [OMNI_OP_NAMES] = AUTH_OP_GET,
    [OMNI_OP_STATUS] = AUTH_OP_ADMIN,
    [OMNI_OP_RELOAD] = AUTH_OP_ADMIN,
    [OMNI_OP_RELEASE] = AUTH_OP_ADMIN,
    [OMNI_OP_REG_HEAD] = AUTH_OP_GET,
    [OMNI_OP_REG_GET] = AUTH_OP_GET,
    [OMNI_OP_REG_SIGNERS] = AUTH_OP_GET,
    [OMNI_OP_REG_PROPOSE] = AUTH_OP_ADMIN,
    [OMNI_OP_REG_APPROVE] = AUTH_OP_ADMIN,
    [OMNI_OP_REG_COMMIT] = AUTH_OP_ADMIN,
    [OMNI_OP_CHALLENGE] = -1, /* how a key holder gets a capability */
    [OMNI_OP_REDEEM] = -1,
    [OMNI_OP_CAP_MINT] = AUTH_OP_MINT,
    [OMNI_OP_CAP_REVOKE] = AUTH_OP_MINT, /* by id; by epoch: admin (omni_request_parse) */
    [OMNI_OP_KEY_ROTATE] = AUTH_OP_ADMIN,
    [OMNI_OP_KEY_SHOW] = AUTH_OP_ADMIN,
    [OMNI_OP_PASS_ROTATE] = AUTH_OP_ADMIN,
};

int
omni__op_auth(omni_op_t op, bool revoke_epoch)
{
    if (op == OMNI_OP_CAP_REVOKE && revoke_epoch)
        return AUTH_OP_ADMIN; /* raising the epoch kills every token */
    return (unsigned)op < OMNI_OP__COUNT ? op_auth[op] : -1;
}

static bool
tenant_is_set(const uint8_t t[16])
{
    for (size_t i = 0; i < 16; i++)
        if (t[i] != 0)
            return true;
    return false;
}

/* The guard's view of q, with size as the body size. Views into q. */
static void
rq_guard_req(const omni_rq_t *q, uint64_t size, guard_req_t *req)
{
    memset(req, 0, sizeof *req);
    req->op = (auth_op_t)q->r.auth_op;
    req->token = q->cap_len > 0 ? (const char *)q->cap : NULL;
    req->token_len = q->cap_len;
    req->tenant = tenant_is_set(q->tenant) ? q->tenant : NULL;
    req->addr = q->r.auth_addr[0] != '\0' ? q->r.auth_addr : NULL;
    req->name = q->r.auth_name[0] != '\0' ? q->r.auth_name : NULL;
    req->size = size;
    req->source = q->c != NULL && q->c->has_peer ? (const struct sockaddr *)&q->c->peer : NULL;
    req->target = req->addr != NULL   ? req->addr
                  : req->name != NULL ? req->name
                                      : omni_op_name(q->r.op);
}

/* Answer q with the guard's refusal: its status, slug as the reason, its sentence. */
static void
rq_refuse(omni_rq_t *q, const guard_result_t *res)
{
    omni__rq_error(q, (uint16_t)res->status, res->reason, res->slug,
                   res->status == 429 ? res->retry_after_s * 1000u : 0);
}

/*
 * Check q's capability (or its absence) with the guard. Allowed: returns
 * true with *res filled and q's pending constraints kept (max-bytes, a put's
 * prefix). Refused: answers q (nothing was forwarded) and returns false.
 */
static bool
rq_authorize(omni_rq_t *q, guard_result_t *res)
{
    guard_req_t req;

    rq_guard_req(q, q->r.auth_size, &req);
    if (guard_check(q->g->guard, &req, res) != 0) {
        rq_refuse(q, res);
        return false;
    }
    snprintf(q->actor, sizeof q->actor, "%s", res->actor); /* cap_revoke's audit */
    if (res->anonymous)
        return true;
    q->max_bytes = res->verdict.grant.max_bytes;
    if (q->r.op == OMNI_OP_PUT && (res->verdict.pending & AUTH_PENDING_ADDR)) {
        q->grant = ron_xmalloc(sizeof *q->grant);
        *q->grant = res->verdict.grant;
    }
    return true;
}

/* A put's body passed its capability's max-bytes with n more bytes: refuse it. */
void
omni__rq_over_max_bytes(omni_rq_t *q, size_t n)
{
    guard_result_t res;
    guard_req_t req;

    rq_guard_req(q, q->received + n, &req);
    (void)guard_reject(q->g->guard, &req, RON_ECAPDENY, &res);
    omni__rq_error(q, (uint16_t)res.status,
                   "the body is larger than the capability's max-bytes allows", res.slug, 0);
}

/* A put with a prefix caveat stored addr: true when the prefix allows it,
 * else q is answered 403 (the storage service, which saw the token, should
 * have refused the commit already). */
bool
omni__rq_prefix_allows(omni_rq_t *q, const char *addr)
{
    auth_request_t ar = {
        .op = AUTH_OP_PUT, .addr = addr, .size = q->received, .now = ron_unix_time()};
    guard_result_t res;
    guard_req_t req;

    if (auth_grant_check(q->grant, &ar, NULL) != AUTH_DENY_PREFIX)
        return true;
    rq_guard_req(q, q->received, &req);
    req.addr = addr;
    req.target = addr;
    (void)guard_reject(q->g->guard, &req, RON_ECAPDENY, &res);
    omni__rq_error(q, (uint16_t)res.status,
                   "the object's address is outside the capability's prefix", res.slug, 0);
    return false;
}

/*
 * Whose revocations a caller's count towards: the root of its lineage (the
 * oldest ancestor its token records, or the token itself when it records
 * none), keyed by that token's nonce; without a verified token, its actor. A holder of
 * `mint` who mints fresh tokens to revoke with still draws on one count,
 * since every token minted from it (at any depth) names it or its ancestor.
 */
static void
revoker_key(const guard_result_t *res, char *out, size_t cap)
{
    const auth_grant_t *gr = &res->verdict.grant;
    const uint8_t *root;

    if (res->anonymous || res->verdict.reason != AUTH_OK) {
        snprintf(out, cap, "%s", res->actor[0] != '\0' ? res->actor : "anon");
        return;
    }
    /* a root token's own nonce, else the oldest ancestor's: one key per lineage */
    root = gr->n_ancestors > 0 ? gr->ancestors[gr->n_ancestors - 1] : res->verdict.id.nonce;
    snprintf(out, cap, "lineage:");
    for (size_t i = 0, n = strlen(out); i < AUTH_NONCE_LEN && n + 2 < cap; i++, n += 2)
        snprintf(out + n, cap - n, "%02x", root[i]);
}

/*
 * cap_revoke by id: at most OMNI_REVOKE_PER_MIN per caller (the revoking
 * token's lineage root, revoker_key) per minute, so one holder of `mint`
 * cannot fill the authority's revocation table at wire speed. Callers are held in a bounded
 * table; a new one takes a free slot or the one whose minute began first.
 * Returns true when allowed (and counts it); else *retry_ms is the wait.
 */
static bool
revoke_allowed(omni_t *g, const char *actor, uint64_t now_ms, uint32_t *retry_ms)
{
    omni_revoker_t *r = NULL, *spare = NULL, *oldest = NULL;

    for (size_t i = 0; i < OMNI_REVOKE_CALLERS && r == NULL; i++) {
        omni_revoker_t *c = &g->revokers[i];
        if (c->id[0] == '\0')
            spare = spare != NULL ? spare : c;
        else if (strcmp(c->id, actor) == 0)
            r = c;
        else if (oldest == NULL || c->window_ms < oldest->window_ms)
            oldest = c;
    }
    if (r == NULL) {
        r = spare != NULL ? spare : oldest;
        snprintf(r->id, sizeof r->id, "%s", actor);
        r->window_ms = now_ms;
        r->n = 0;
    }
    if (now_ms - r->window_ms >= 60000u) {
        r->window_ms = now_ms;
        r->n = 0;
    }
    if (r->n >= OMNI_REVOKE_PER_MIN) {
        *retry_ms = (uint32_t)(r->window_ms + 60000u - now_ms);
        return false;
    }
    r->n++;
    return true;
}

/* cap_revoke by id past the caller's rate: 429 (counted and audited by the guard). */
static void
rq_revoke_flood(omni_rq_t *q, uint32_t retry_ms)
{
    guard_result_t res;
    guard_req_t req;

    if (q->g->guard != NULL) {
        rq_guard_req(q, AUTH_SIZE_UNKNOWN, &req);
        (void)guard_reject(q->g->guard, &req, RON_EFLOOD, &res);
    }
    omni__rq_error(q, 429, "too many revocations by this capability; try again later",
                   "rate_limited", retry_ms > 0 ? retry_ms : 1);
}

/*
 * Without a guard nothing is checked by capability, so what only an
 * operator may do answers loopback peers only: kernel operations (as the
 * admin port's /admin/ routes) and registry writes (the signatures decide
 * what commits; this keeps strangers from filling the proposal table); and
 * there is no authority to mint with. Returns true when q may go on, else
 * answers q.
 */
static bool
rq_admit_unguarded(omni_rq_t *q)
{
    bool loopback = q->c != NULL && q->c->loopback;

    if (q->r.op == OMNI_OP_CAP_MINT) {
        omni__rq_error(q, 403, "this app port has no capability authority to mint with",
                       "no_authority", 0);
        return false;
    }
    if (q->r.app_proto_id == OAP_APP_KERNEL && !loopback) {
        omni__rq_error(q, 403, "kernel operations answer loopback peers only", "loopback", 0);
        return false;
    }
    if (q->r.op >= OMNI_OP_REG_PROPOSE && q->r.op <= OMNI_OP_REG_COMMIT && !loopback) {
        omni__rq_error(q, 403, "registry writes answer loopback peers only", "loopback", 0);
        return false;
    }
    return true;
}

bool
omni__rq_admit(omni_rq_t *q, guard_result_t *res)
{
    uint32_t retry_ms = 0;

    if (q->g->guard != NULL) {
        if (q->r.auth_op >= 0 && !rq_authorize(q, res))
            return false; /* refused by the guard: answered, nothing forwarded */
    } else if (!rq_admit_unguarded(q)) {
        return false;
    }
    if (q->r.op == OMNI_OP_CAP_REVOKE && !q->r.revoke_epoch) {
        char key[AUTH_ID_MAX + 1];
        revoker_key(res, key, sizeof key);
        if (!revoke_allowed(q->g, key, ron_now_ms(), &retry_ms)) {
            rq_revoke_flood(q, retry_ms);
            return false;
        }
    }
    return true;
}

/* cap_mint: a token narrowed from the caller's verified grant (res). */
void
omni__rq_mint(omni_rq_t *q, const guard_result_t *res)
{
    const omni_mint_t *m = &q->r.mint;
    guard_mint_req_t mr = {.ops = m->ops,
                           .ttl = m->ttl,
                           .tenant = m->has_tenant ? m->tenant : NULL,
                           .max_bytes = m->max_bytes,
                           .prefix = m->prefix[0] != '\0' ? m->prefix : NULL};
    char *tok = ron_xmalloc(AUTH_MAX_TOKEN + 1), id[AUTH_ID_MAX + 1];
    long n;

    if (res->anonymous) {
        omni__rq_error(q, 401, "minting needs a capability allowing mint", "capability_required",
                       0);
        goto out;
    }
    n = guard_mint(q->g->guard, &res->verdict.grant, res->actor, &mr, tok, AUTH_MAX_TOKEN + 1, id);
    if (n < 0) {
        int st = guard_status_of((int)n);
        char why[96];
        snprintf(why, sizeof why,
                 "the capability is already %d mints deep; mint from one of its ancestors",
                 GUARD_MAX_LINEAGE);
        if (n == RON_ECAPDEPTH)
            omni__rq_error(q, 403, why, "lineage_too_deep", 0);
        else if (st == 403)
            omni__rq_error(q, 403, "the token asked for is wider than the caller's capability",
                           "capability_wider", 0);
        else if (n == RON_EINVAL)
            omni__rq_error(q, 400, "ops, ttl, tenant, max_bytes or prefix out of range", "mint", 0);
        else
            omni__rq_error(q, 500, ron_strerror((int)n), NULL, 0);
        goto out;
    }
    {
        json_t *o = json_pack("{s:s, s:s%}", "id", id, "token", tok, (size_t)n);
        char *txt = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (txt == NULL)
            abort(); /* jansson fails only on OOM */
        omni__rq_answer(q, 200, txt, strlen(txt));
        explicit_bzero(txt, strlen(txt)); /* a bearer secret */
        free(txt);
    }
out:
    explicit_bzero(tok, AUTH_MAX_TOKEN + 1);
    free(tok);
}

/* A revocation the kernel made: audited as cap_revoked (actor: the caller's token id). */
void
omni__revoke_audit(omni_rq_t *q)
{
    json_t *o = json_loadb(q->r.fwd, q->r.fwd_len, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *ep = json_string_value(json_object_get(o, "epoch"));
    char target[AUTH_ID_MAX + 16];

    if (id != NULL)
        snprintf(target, sizeof target, "%s", id);
    else
        snprintf(target, sizeof target, "epoch:%s", ep != NULL ? ep : "");
    if (q->g->guard != NULL)
        (void)guard_audit(q->g->guard, AUD_CAP_REVOKED, q->actor[0] != '\0' ? q->actor : "anon",
                          "cap_revoke", target, AUD_OK, NULL);
    json_decref(o);
}
