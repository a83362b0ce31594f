/*
 * gw_names.c - the name routes: GET/HEAD and PUT /n/<name>.
 *
 * GET /n/<name> resolves through svc-index (in-process on the thread pool,
 * or the index service over ron-bus) and answers 302 to /o/b3:<hex>;
 * PUT /n/<name> takes a JSON record (ron-naming's form) and publishes it
 * under the acceptance rule. The name is normalized and the guard decides
 * the request before any index call; index requests carry the client's
 * capability and tenant.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_internal.h"

/* One GET/HEAD or PUT of /n/<name>. */
typedef struct {
    uv_work_t work;
    gw_t *gw;
    tx_request_t *req;
    bool put;
    char name[NAME_MAX_LEN + 1];
    name_record_t rec; /* PUT: the candidate; GET: the current record */
    bool had;          /* PUT: the name had a record before */
    int rc;
    name_err_t err;
    uint8_t tenant[STO_TENANT_LEN]; /* whom index requests act for */
} gw_name_t;

/* Whom q's index requests act for: its tenant and the client's capability
 * (a view into the unanswered request; the index client copies it). */
static void
gw_name_auth(const gw_name_t *q, idx_client_auth_t *auth)
{
    const char *tok;
    size_t tok_len;

    memset(auth, 0, sizeof *auth);
    auth->tenant = q->tenant;
    if (gw__token(q->req, &tok, &tok_len) == 0 && tok != NULL) {
        auth->cap = tok;
        auth->cap_len = tok_len;
    }
}

static void
gw_name_work(uv_work_t *w)
{
    gw_name_t *q = w->data;
    idx_t *idx = q->gw->cfg.index;
    name_record_t cur;

    if (!q->put) {
        q->rc = idx_resolve(idx, q->name, &q->rec);
        return;
    }
    q->had = idx_resolve(idx, q->name, &cur) == 0;
    q->rc = idx_publish(idx, &q->rec, (int64_t)time(NULL), &q->err);
}

/* Is rc a failure to reach the index (nothing was decided: a retry is safe)? */
static bool
gw_index_unreachable(int rc)
{
    return rc == RON_EUNAVAIL || rc == RON_ETIMEOUT || rc == RON_EBUSY || rc == RON_ESHUTDOWN;
}

/*
 * The Location of a resolved name: /o/<addr>, plus the request's own
 * `?cap=<token>` when the capability came in the query (a browser link
 * carries no Authorization header, so the object's URL needs the token as
 * well to be readable). Only a base64url token is carried: nothing the
 * client sent can reach the header but those characters.
 */
static void
gw_name_location(tx_request_t *req, const char *addr_text, char *loc, size_t cap)
{
    const char *tok = NULL;
    size_t tl = 0, i;

    if (tx_request_header(req, "Authorization") == NULL && gw__token(req, &tok, &tl) == 0 &&
        tok != NULL && tl <= AUTH_MAX_TOKEN) {
        for (i = 0; i < tl && (isalnum((unsigned char)tok[i]) || tok[i] == '-' || tok[i] == '_'); i++)
            ;
        if (i == tl) {
            snprintf(loc, cap, "/o/%s?cap=%.*s", addr_text, (int)tl, tok);
            return;
        }
    }
    snprintf(loc, cap, "/o/%s", addr_text);
}

/* Answer q's request from q->rc (and q->rec, q->had, q->err) and free q. */
static void
gw_name_answer(gw_name_t *q)
{
    gw_t *gw = q->gw;
    const char *msg = q->err.msg[0] != '\0' ? q->err.msg : NULL;
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0;

    if (gw_index_unreachable(q->rc)) {
        tx_header_t ra = {"Retry-After", "1"};
        gw__error(q->req, 503, ron_strerror(q->rc), "index_unavailable", &ra, 1);
    } else if (!q->put) {
        char text[NAME_ADDR_TEXT_LEN + 1], loc[16 + NAME_ADDR_TEXT_LEN + AUTH_MAX_TOKEN];
        if (q->rc == RON_ENOTFOUND) {
            gw__error(q->req, 404, "no record for this name", "name_not_found", NULL, 0);
        } else if (q->rc < 0) {
            gw__error(q->req, 500, ron_strerror(q->rc), "index_failed", NULL, 0);
        } else {
            name_addr_format(&q->rec.addr, text);
            gw_name_location(q->req, text, loc, sizeof loc);
            h[n++] = (tx_header_t){"Location", loc};
            h[n++] = (tx_header_t){"Cache-Control", GW_CACHE_NONE};
            n += gw__cors(h + n);
            gw->stats.names_resolved++;
            (void)tx_respond(q->req, 302, h, n, NULL, 0);
        }
    } else if (q->rc == 0 || q->rc == RON_ENAMEDUP) {
        char *json = name_record_to_json(&q->rec);
        int code = q->rc == 0 && !q->had ? 201 : 200;
        h[n++] = (tx_header_t){"Content-Type", "application/json"};
        n += gw__cors(h + n);
        gw->stats.names_published++;
        (void)tx_respond(q->req, code, h, n, json, json != NULL ? strlen(json) : 0);
        free(json);
    } else {
        int code = 500;
        const char *reason = "index_failed";
        switch (q->rc) {
        case RON_ERECORD:
            code = 400;
            reason = "bad_record";
            break;
        case RON_ENAMEFUTURE:
            code = 400;
            reason = "future_timestamp";
            break;
        case RON_ENAMESIG:
        case RON_EAUTH:
            code = 403;
            reason = "bad_signature";
            break;
        case RON_ENAMEOWNER:
            code = 403;
            reason = "wrong_owner";
            break;
        case RON_ENAMESTALE:
            code = 409;
            reason = "stale_seq";
            break;
        case RON_EIDXFULL:
            code = 507;
            reason = "index_full";
            break;
        default:
            msg = ron_strerror(q->rc);
            break;
        }
        if (code < 500)
            gw->stats.names_refused++;
        if (code == 507) {
            tx_header_t ra = {"Retry-After", "60"};
            gw__error(q->req, code, msg, reason, &ra, 1);
        } else {
            gw__error(q->req, code, msg, reason, NULL, 0);
        }
    }
    free(q);
    gw__release(gw);
}

static void
gw_name_done(uv_work_t *w, int status)
{
    gw_name_t *q = w->data;

    if (status < 0 && q->rc == 0)
        q->rc = status;
    gw_name_answer(q);
}

/* The local code for an index service answer that is not 200 (index.md §errors). */
static int
gw_index_remote_rc(const idx_client_result_t *res)
{
    switch (res->code) {
    case 400:
        return strcmp(res->reason, "ts") == 0 ? RON_ENAMEFUTURE : RON_ERECORD;
    case 403:
        return strcmp(res->reason, "owner") == 0 ? RON_ENAMEOWNER : RON_ENAMESIG;
    case 404:
        return RON_ENOTFOUND;
    case 409:
        return RON_ENAMESTALE;
    case 429: /* the bus sheds load */
    case 503: /* the service is stopping */
        return RON_EUNAVAIL;
    case 507:
        return RON_EIDXFULL;
    default:
        return RON_ESTORE;
    }
}

/* Take the outcome of one index request into q: 0 when it was a 200. */
static int
gw_name_remote_rc(gw_name_t *q, const idx_client_result_t *res)
{
    if (res->status < 0)
        return q->rc = res->status;
    if (res->code == 200)
        return q->rc = 0;
    if (res->code != 404 && res->message[0] != '\0')
        snprintf(q->err.msg, sizeof q->err.msg, "%s", res->message);
    return q->rc = gw_index_remote_rc(res);
}

static void
gw_name_published(void *arg, const idx_client_result_t *res)
{
    gw_name_t *q = arg;

    if (gw_name_remote_rc(q, res) == 0 && res->unchanged)
        q->rc = RON_ENAMEDUP;
    gw_name_answer(q);
}

/* The resolve that answers a GET, or that tells a PUT whether the name had a
 * record (201 or 200), then sends the publish. */
static void
gw_name_resolved(void *arg, const idx_client_result_t *res)
{
    gw_name_t *q = arg;
    int rc = gw_name_remote_rc(q, res);

    if (rc == 0 && !q->put)
        q->rec = *res->rec;
    if (!q->put || (rc < 0 && rc != RON_ENOTFOUND)) {
        gw_name_answer(q);
        return;
    }
    q->had = rc == 0;
    q->rc = 0;
    q->err.msg[0] = '\0';
    if (q->gw->index == NULL) {
        rc = RON_EUNAVAIL;
    } else {
        idx_client_auth_t auth;
        gw_name_auth(q, &auth);
        rc = idx_client_publish_as(q->gw->index, &auth, &q->rec, gw_name_published, q);
    }
    if (rc < 0) {
        q->rc = rc == RON_EINVAL ? RON_ERECORD : rc;
        gw_name_answer(q);
    }
}

void
gw_set_index(gw_t *gw, rbus_peer_t *peer)
{
    gw->index = peer;
}

void
gw__name_route(gw_t *gw, tx_request_t *req, const char *seg)
{
    const tx_request_view_t *v = tx_request_view(req);
    bool get = strcmp(v->method, "GET") == 0 || strcmp(v->method, "HEAD") == 0;
    bool put = strcmp(v->method, "PUT") == 0;
    char raw[GW_NAME_PATH_MAX + 1];
    gw_name_t *q;
    name_err_t err = {0};
    gw_auth_t a;
    int rc;

    if (strcmp(v->method, "OPTIONS") == 0) {
        gw__preflight(req);
        return;
    }
    if (!get && !put) {
        gw__not_allowed(req, "GET, HEAD, PUT, OPTIONS");
        return;
    }
    if (gw_path_decode(seg, strlen(seg), raw, sizeof raw) < 0) {
        gw__error(req, 400, "the name is not one well-formed path segment", "bad_name", NULL, 0);
        return;
    }
    q = ron_xcalloc(1, sizeof *q);
    if (name_normalize(raw, strlen(raw), q->name, &err) < 0) {
        gw__error(req, 400, err.msg, "bad_name", NULL, 0);
        free(q);
        return;
    }
    if (!gw__authorize(gw, req, put ? AUTH_OP_NAME : AUTH_OP_GET, NULL, q->name,
                       put ? v->body_len : 0, q->name, &a)) {
        free(q);
        return;
    }
    memcpy(q->tenant, a.tenant, STO_TENANT_LEN);
    if (gw->cfg.index == NULL && gw->index == NULL) {
        gw__error(req, 503, "this gateway serves no names", "no_index", NULL, 0);
        free(q);
        return;
    }
    if (put) {
        rc = name_record_from_json(&q->rec, (const char *)v->body, v->body_len, &err);
        if (rc < 0) {
            gw__error(req, rc == RON_ETOOBIG ? 413 : 400, err.msg, "bad_record", NULL, 0);
            free(q);
            return;
        }
        if (strcmp(q->rec.name, q->name) != 0) {
            gw__error(req, 400, "the record's name is not the name in the path", "name_mismatch",
                      NULL, 0);
            free(q);
            return;
        }
    }
    q->gw = gw;
    q->req = req;
    q->put = put;
    q->work.data = q;
    gw->stats.active++;
    if (gw->cfg.index == NULL) {
        /* the index service: resolve (GET, or PUT's 201-or-200), then publish */
        idx_client_auth_t auth;
        gw_name_auth(q, &auth);
        rc = idx_client_resolve_as(gw->index, &auth, q->name, gw_name_resolved, q);
        if (rc < 0) {
            q->rc = rc;
            gw_name_answer(q);
        }
        return;
    }
    rc = uv_queue_work(gw->loop, &q->work, gw_name_work, gw_name_done);
    if (rc < 0) {
        q->rc = rc;
        gw_name_done(&q->work, 0);
    }
}
