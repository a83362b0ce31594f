/*
 * gw_guard.c - the gateway's capability checks through ron-guard.
 *
 * Capabilities (gw_set_guard): each route is decided by the guard once its
 * path is validated and before its first store, index or bus call, so a
 * refusal changes nothing. The token stays a view into the request (the
 * Authorization header or the query) all along the hot path: guard_check
 * keys its verdict cache on it, and nothing here copies or parses it. Bus
 * requests made for the client carry it (and the tenant) in their cap
 * section; only a remote read, whose gets outlive the request's views,
 * keeps a copy (gw_remote.c).
 *
 * It is a file of its own because every route uses it and none owns it:
 * refusals (401 with WWW-Authenticate, 429 with Retry-After, late refusals
 * of pending constraints, and the storage service's own refusals) are
 * answered the same way whichever route made them.
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gw_internal.h"

/* The value of the query parameter cap in q (a view), without base64
 * padding ("=" or "%3D": it is optional), or NULL. */
static const char *
gw_query_cap(const char *q, size_t *len_out)
{
    for (const char *p = q; *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n >= 4 && memcmp(p, "cap=", 4) == 0) {
            const char *v = p + 4;
            n -= 4;
            for (;;) {
                if (n >= 1 && v[n - 1] == '=')
                    n--;
                else if (n >= 3 && v[n - 3] == '%' && v[n - 2] == '3' &&
                         (v[n - 1] == 'D' || v[n - 1] == 'd'))
                    n -= 3;
                else
                    break;
            }
            *len_out = n;
            return v;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return NULL;
}

/*
 * The client's capability: `Authorization: Bearer <token>` (scheme
 * case-insensitive, RFC 6750), else `?cap=<token>`. A view into the request
 * (valid until it is answered); *tok_out NULL when none came. Returns 0, or
 * RON_ECAPFORMAT for an Authorization of another scheme or an empty token.
 */
int
gw__token(tx_request_t *req, const char **tok_out, size_t *len_out)
{
    const char *a = tx_request_header(req, "Authorization");
    const char *q = tx_request_view(req)->query;

    *tok_out = NULL;
    *len_out = 0;
    if (a != NULL) {
        if (strncasecmp(a, "Bearer", 6) != 0 || (a[6] != ' ' && a[6] != '\t'))
            return RON_ECAPFORMAT;
        a += 7;
        while (*a == ' ' || *a == '\t')
            a++;
        *tok_out = a;
        *len_out = strlen(a);
    } else if (q[0] != '\0') {
        *tok_out = gw_query_cap(q, len_out);
    }
    if (*tok_out != NULL && *len_out == 0) {
        *tok_out = NULL;
        return RON_ECAPFORMAT;
    }
    return 0;
}

/* The guard's request for req: everything borrowed from the request. */
static void
gw_guard_req(tx_request_t *req, auth_op_t op, const char *addr, const char *name, uint64_t size,
             const char *target, guard_req_t *out)
{
    const tx_request_view_t *v = tx_request_view(req);

    memset(out, 0, sizeof *out);
    out->op = op;
    out->addr = addr;
    out->name = name;
    out->size = size;
    out->target = target; /* an address, a name or a path: never the query */
    if (v->peer != NULL && v->peer->ss_family != AF_UNSPEC)
        out->source = (const struct sockaddr *)v->peer;
}

/* Answer a refusal: the envelope with the guard's status, slug and sentence;
 * 401 with WWW-Authenticate (RFC 6750), 429 with Retry-After. */
static void
gw_refuse(gw_t *gw, tx_request_t *req, const guard_result_t *res, const char *message)
{
    tx_header_t h[1];
    char ra[16];
    size_t n = 0;
    int status = guard_status_of(res->code);

    gw->stats.auth_rejected++;
    if (status == 401) {
        h[n++] = (tx_header_t){"WWW-Authenticate",
                               res->anonymous ? "Bearer" : "Bearer error=\"invalid_token\""};
    } else if (status == 429) {
        snprintf(ra, sizeof ra, "%u", res->retry_after_s > 0 ? res->retry_after_s : 1u);
        h[n++] = (tx_header_t){"Retry-After", ra};
    }
    gw__error_retry(req, status, message != NULL ? message : res->reason, res->slug, h, n,
                    status == 429 ? (res->retry_after_s > 0 ? res->retry_after_s : 1u) * 1000u : 0);
}

/*
 * Decide req with the guard (none: allowed). Allowed: true, with whom it
 * acts for in *a. Refused: the refusal is answered (and counted and audited
 * by the guard), false. The token is never copied here: the verdict cache
 * keys on it, and nothing on this path allocates.
 */
bool
gw__authorize(gw_t *gw, tx_request_t *req, auth_op_t op, const char *addr, const char *name,
              uint64_t size, const char *target, gw_auth_t *a)
{
    guard_req_t gr;
    guard_result_t res;
    const char *tok;
    size_t tok_len;
    int rc;

    memcpy(a->tenant, gw->cfg.tenant, STO_TENANT_LEN);
    a->max_bytes = UINT64_MAX;
    a->pending = 0;
    if (gw->guard == NULL)
        return true;
    rc = gw__token(req, &tok, &tok_len);
    gw_guard_req(req, op, addr, name, size, target, &gr);
    gr.token = tok;
    gr.token_len = tok_len;
    if (rc < 0)
        rc = guard_reject(gw->guard, &gr, rc, &res);
    else
        rc = guard_check(gw->guard, &gr, &res);
    if (rc != 0) {
        gw_refuse(gw, req, &res, NULL);
        return false;
    }
    if (!res.anonymous) {
        if (res.verdict.grant.has_tenant)
            memcpy(a->tenant, res.verdict.grant.tenant, STO_TENANT_LEN);
        a->max_bytes = res.verdict.grant.max_bytes;
        a->pending = res.verdict.pending;
    }
    return true;
}

/* Refuse req after guard_check allowed it: a pending constraint failed
 * (code RON_ECAPDENY). Counted and audited as a rejection. */
void
gw__refuse_late(gw_t *gw, tx_request_t *req, auth_op_t op, const char *target, int code,
                const char *message)
{
    guard_req_t gr;
    guard_result_t res;

    gw_guard_req(req, op, NULL, NULL, AUTH_SIZE_UNKNOWN, target, &gr);
    (void)gw__token(req, &gr.token, &gr.token_len);
    (void)guard_reject(gw->guard, &gr, code, &res);
    gw_refuse(gw, req, &res, message);
}

/* The storage service refused the capability the gateway forwarded (it
 * checks on its own: a revocation may reach it first). rc RON_ECAPNEEDED
 * (its 401) or RON_ECAPDENY (its 403); nothing was stored or read. */
void
gw__storage_refused(gw_t *gw, tx_request_t *req, int rc)
{
    tx_header_t h = {"WWW-Authenticate", "Bearer error=\"invalid_token\""};

    gw->stats.auth_rejected++;
    if (rc == RON_ECAPNEEDED)
        gw__error(req, 401, "the storage service refused the capability", "capability_invalid", &h,
                  1);
    else
        gw__error(req, 403, "the storage service does not allow this request", "forbidden", NULL,
                  0);
}

void
gw_set_guard(gw_t *gw, guard_t *guard)
{
    gw->guard = guard;
}
