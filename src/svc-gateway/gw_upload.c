/*
 * gw_upload.c - POST /o and PUT /o/b3:<hex>: streamed uploads into the
 * local store or through the storage service (gw_set_storage).
 *
 * gw_head (the transport's head hook) opts their bodies in, each piece
 * goes into the put (sto_put_write on the thread pool, hashing as it goes,
 * or put_write to the storage service) and is released only once written,
 * so an upload of any size holds one piece; commit checks a PUT's address
 * (409 bad_digest, nothing stored). Without the hook the transport's
 * buffered body is stored the same way, as one piece. The token's
 * max-bytes is enforced as the body streams in, since a chunked body's
 * size is unknown until it ends.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_internal.h"

static bool gw_ctype_ok(const char *ct);

/*
 * One upload is a small state machine driven by gw_up_step: begin the put
 * (on the thread pool, or put_begin over ron-bus), then write each piece
 * the transport hands over and release it only once written (reading from
 * the client pauses meanwhile: bounded memory), then commit at the end of
 * the body. At most one store operation is in flight. A store error, or
 * the transport's abort (client gone, idle, cap), ends it: the put is
 * aborted (its temporary bytes deleted) and the request answered at once
 * (the transport discards the rest of the body).
 */
typedef enum { GW_OP_BEGIN, GW_OP_WRITE, GW_OP_COMMIT } gw_op_t;

static void gw_up_step(gw_up_t *u);

static void
gw_up_free(gw_up_t *u)
{
    gw_t *gw = u->gw;

    free(u);
    gw__release(gw);
}

/* The local code for the storage service's error status (storage.md §errors). */
static int
gw_put_remote_rc(uint16_t code)
{
    switch (code) {
    case 401: /* the service refused the forwarded capability */
        return RON_ECAPNEEDED;
    case 403:
        return RON_ECAPDENY;
    case 409: /* bad_digest: the only 409 one put_begin..commit chain can meet */
        return RON_EDIGEST;
    case 413:
        return RON_ETOOBIG;
    case 507:
        return RON_ESTOREFULL;
    case 429: /* the service sheds load */
    case 503: /* the service is stopping */
        return RON_EUNAVAIL;
    default:
        return RON_ESTORE;
    }
}

/* Answer u's request from rc (and u->addr, u->had), then free u. */
static void
gw_up_answer(gw_up_t *u, int rc)
{
    gw_t *gw = u->gw;
    char text[68], loc[80], json[200];
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0;
    int code;

    if (rc == RON_ECAPNEEDED || rc == RON_ECAPDENY) {
        gw__storage_refused(gw, u->req, rc);
    } else if (rc == RON_EDIGEST) {
        gw->stats.bad_digest++;
        gw__error(u->req, 409, "body does not hash to the address", "bad_digest", NULL, 0);
    } else if (rc == RON_ETOOBIG) {
        gw__error(u->req, 413, NULL, "object_too_large", NULL, 0);
    } else if (rc == RON_ESTOREFULL) {
        tx_header_t ra = {"Retry-After", "60"};
        gw__error(u->req, 507, NULL, "store_full", &ra, 1);
    } else if (rc == RON_EUNAVAIL || rc == RON_ETIMEOUT || rc == RON_EBUSY || rc == RON_ESHUTDOWN) {
        tx_header_t ra = {"Retry-After", "1"};
        gw__error(u->req, 503, ron_strerror(rc), "storage_unavailable", &ra, 1);
    } else if (rc < 0) {
        gw__error(u->req, 500, ron_strerror(rc), "store_failed", NULL, 0);
    } else {
        sto_addr_format(u->addr, text);
        snprintf(loc, sizeof loc, "/o/%s", text);
        snprintf(json, sizeof json, "{\"address\":\"%s\",\"cid\":\"%s\"}", text, text + 3);
        code = u->put && u->had == 1 ? 200 : 201;
        code == 201 ? gw->stats.puts_created++ : gw->stats.puts_existing++;
        h[n++] = (tx_header_t){"Content-Type", "application/json"};
        h[n++] = (tx_header_t){"Location", loc};
        n += gw__cors(h + n);
        (void)tx_respond(u->req, code, h, n, json, strlen(json));
    }
    gw_up_free(u);
}

/* The upload cannot finish: drop the put, answer (loop thread, nothing in flight). */
static void
gw_up_fail(gw_up_t *u)
{
    sto_put_abort(u->lp); /* deletes its temporary file */
    u->lp = NULL;
    sto_client_put_abort(u->rp);
    u->rp = NULL;
    if (u->rc < 0) {
        gw_up_answer(u, u->rc);
        return;
    }
    switch (u->abort) {
    case RON_ECAPDENY:
        gw__refuse_late(u->gw, u->req, AUTH_OP_PUT,
                        u->put ? tx_request_view(u->req)->path + 3 : "/o", RON_ECAPDENY,
                        "the body is larger than the capability's max-bytes");
        break;
    case RON_ETOOBIG:
        gw__error(u->req, 413, NULL, "object_too_large", NULL, 0);
        break;
    case RON_ETIMEOUT:
        gw__error(u->req, 408, "no body bytes for too long", "body_timeout", NULL, 0);
        break;
    case RON_EPROTO:
        gw__error(u->req, 400, "malformed chunked body", "bad_body", NULL, 0);
        break;
    default: /* RON_ECLOSED: the answer only frees the request */
        u->gw->stats.client_gone++;
        (void)tx_respond_error(u->req, 400, NULL, NULL, 0);
        break;
    }
    gw_up_free(u);
}

/* The piece in hand is in the put: the transport may read the next one. */
static void
gw_up_piece_done(gw_up_t *u)
{
    u->piece = NULL;
    u->piece_len = 0;
    if (u->streamed)
        (void)tx_request_body_release(u->req);
}

/* Worker: one store operation (the put belongs to this thread meanwhile). */
static void
gw_up_work(uv_work_t *w)
{
    gw_up_t *u = w->data;
    sto_store_t *s = u->gw->cfg.store;

    switch ((gw_op_t)u->op) {
    case GW_OP_BEGIN:
        u->had = u->put ? sto_has(s, u->addr) : 0;
        u->rc = sto_put_begin(s, u->tenant, u->put ? u->addr : NULL,
                              u->ctype[0] != '\0' ? u->ctype : NULL,
                              u->streamed ? STO_SIZE_UNKNOWN : u->piece_len, &u->lp);
        break;
    case GW_OP_WRITE:
        u->rc = sto_put_write(u->lp, u->piece, u->piece_len);
        break;
    case GW_OP_COMMIT:
        u->rc = sto_put_commit(u->lp, u->addr);
        u->lp = NULL; /* commit frees it, whatever it returns */
        break;
    }
}

static void
gw_up_done(uv_work_t *w, int status)
{
    gw_up_t *u = w->data;

    u->busy = false;
    if (status < 0 && u->rc == 0)
        u->rc = status;
    if (u->op == GW_OP_COMMIT) {
        gw_up_answer(u, u->rc);
        return;
    }
    if (u->rc == 0 && u->op == GW_OP_BEGIN)
        u->begun = true;
    else if (u->rc == 0)
        gw_up_piece_done(u);
    gw_up_step(u);
}

/* The storage service acknowledged (or refused) the operation in flight. */
static void
gw_up_remote_done(void *arg, int status, uint16_t code, const uint8_t addr[STO_ADDR_LEN])
{
    gw_up_t *u = arg;

    u->busy = false;
    if (status < 0) {
        u->rp = NULL; /* ended and freed by the client */
        u->rc = status == RON_ESTORE ? gw_put_remote_rc(code) : status;
        if (u->op == GW_OP_COMMIT)
            gw_up_answer(u, u->rc);
        else
            gw_up_step(u);
        return;
    }
    if (u->op == GW_OP_COMMIT) {
        u->rp = NULL;
        memcpy(u->addr, addr, STO_ADDR_LEN);
        gw_up_answer(u, 0);
        return;
    }
    if (u->op == GW_OP_BEGIN)
        u->begun = true;
    else
        gw_up_piece_done(u);
    gw_up_step(u);
}

/* put_begin at the storage service, for the client: its tenant and its
 * capability (a view into the unanswered request; the client copies it). */
static int
gw_up_remote_begin(gw_up_t *u)
{
    gw_t *gw = u->gw;
    sto_client_auth_t auth = {.tenant = u->tenant};
    const char *tok;
    size_t tok_len;

    if (gw__token(u->req, &tok, &tok_len) == 0 && tok != NULL) {
        auth.cap = tok;
        auth.cap_len = tok_len;
    }
    return sto_client_put_begin_as(gw->cfg.storage, &auth, u->ctype[0] != '\0' ? u->ctype : NULL,
                                   u->put ? u->addr : NULL, gw_up_remote_done, u, &u->rp);
}

/* Start store operation op (nothing in flight). */
static void
gw_up_start(gw_up_t *u, gw_op_t op)
{
    gw_t *gw = u->gw;
    int rc;

    u->op = (int)op;
    u->busy = true;
    if (u->remote) {
        switch (op) {
        case GW_OP_BEGIN:
            /* PUT of a stored object answers 200: the read-only view says so */
            u->had = u->put ? sto_has(gw->cfg.store, u->addr) : 0;
            rc = gw_up_remote_begin(u);
            break;
        case GW_OP_WRITE:
            rc = sto_client_put_write(u->rp, u->piece, u->piece_len);
            break;
        default:
            rc = sto_client_put_commit(u->rp);
            break;
        }
    } else {
        rc = uv_queue_work(gw->loop, &u->work, gw_up_work, gw_up_done);
    }
    if (rc < 0) {
        u->busy = false;
        u->rc = rc;
        gw_up_fail(u);
    }
}

static void
gw_up_step(gw_up_t *u)
{
    if (u->busy)
        return;
    if (u->rc < 0 || u->abort != 0)
        gw_up_fail(u);
    else if (!u->begun)
        gw_up_start(u, GW_OP_BEGIN);
    else if (u->piece_len > 0)
        gw_up_start(u, GW_OP_WRITE);
    else if (u->ended)
        gw_up_start(u, GW_OP_COMMIT);
    /* else: wait for the transport's next piece */
}

/* The transport's body events (tx_body_fn). */
static void
gw_up_body(tx_request_t *req, const uint8_t *data, size_t len, int status, void *arg)
{
    gw_up_t *u = arg;

    (void)req;
    if (status < 0) {
        u->abort = status; /* may come while a piece is being written: step waits */
    } else if (len > 0 && len > u->max_bytes - u->received) {
        /* past the capability's max-bytes: refused, the put dropped */
        u->received = u->max_bytes;
        u->abort = RON_ECAPDENY;
    } else if (len > 0) {
        u->received += len;
        u->piece = data;
        u->piece_len = len;
    } else {
        u->ended = true;
    }
    gw_up_step(u);
}

/* The upload routes: POST /o, PUT /o/b3:<hex> (addr_out set, *put_out true). */
static bool
gw_is_upload(const tx_request_view_t *v, uint8_t addr_out[static STO_ADDR_LEN], bool *put_out)
{
    if (strcmp(v->path, "/o") == 0 || strcmp(v->path, "/o/") == 0) {
        *put_out = false;
        return strcmp(v->method, "POST") == 0;
    }
    *put_out = true;
    return strncmp(v->path, "/o/", 3) == 0 && strcmp(v->method, "PUT") == 0 &&
           gw__addr_parse(v->path + 3, addr_out);
}

void
gw_head(tx_request_t *req, void *arg)
{
    gw_t *gw = arg;
    uint8_t addr[STO_ADDR_LEN];
    bool put;
    gw_up_t *u;

    if (gw->hooked != NULL) {
        /* the transport refused the last one itself after the hook: never routed */
        free(gw->hooked);
        gw->hooked = NULL;
    }
    if (!gw_is_upload(tx_request_view(req), addr, &put))
        return;
    u = ron_xcalloc(1, sizeof *u);
    u->gw = gw;
    u->req = req;
    u->streamed = true;
    u->work.data = u;
    if (tx_request_stream_body(req, gw_up_body, u, gw->cfg.max_upload) < 0) {
        free(u); /* answered by the transport (413, 415) */
        return;
    }
    gw->hooked = u; /* gw_handle runs next, for this very request */
}

/* Decide an upload (u->req, to addr or NULL: POST) with the guard; refused:
 * answered, false. The size is the announced body (Content-Length, or the
 * buffered body); a chunked body's size is unknown until it ends, so the
 * token's max-bytes is enforced as it streams in (gw_up_body). */
static bool
gw_up_authorize(gw_up_t *u, const uint8_t *addr)
{
    const tx_request_view_t *v = tx_request_view(u->req);
    const char *cl = tx_request_header(u->req, "Content-Length");
    uint64_t size = AUTH_SIZE_UNKNOWN;
    gw_auth_t a;

    if (!u->streamed)
        size = v->body_len;
    else if (cl == NULL || ron_parse_u64(cl, strlen(cl), &size) < 0)
        size = AUTH_SIZE_UNKNOWN;
    if (!gw__authorize(u->gw, u->req, AUTH_OP_PUT, addr != NULL ? v->path + 3 : NULL, NULL, size,
                       addr != NULL ? v->path + 3 : "/o", &a))
        return false;
    if (addr == NULL && (a.pending & AUTH_PENDING_ADDR) != 0) {
        /* the address of a POST is known only once stored: too late */
        gw__refuse_late(u->gw, u->req, AUTH_OP_PUT, "/o", RON_ECAPDENY,
                        "a capability limited to an address prefix uploads with PUT /o/b3:<hex>");
        return false;
    }
    memcpy(u->tenant, a.tenant, STO_TENANT_LEN);
    u->max_bytes = a.max_bytes;
    return true;
}

void
gw__put_begin(gw_t *gw, tx_request_t *req, const uint8_t *addr)
{
    const tx_request_view_t *v = tx_request_view(req);
    const char *ct = tx_request_header(req, "Content-Type");
    gw_up_t *u = gw->hooked;

    if (u != NULL && u->req == req) {
        gw->hooked = NULL; /* streamed: its body comes to gw_up_body */
    } else {
        /* a server without the head hook: the body is buffered whole */
        u = ron_xcalloc(1, sizeof *u);
        u->gw = gw;
        u->req = req;
        u->work.data = u;
        u->piece = v->body;
        u->piece_len = v->body_len;
        u->ended = true;
    }
    gw->stats.active++;
    if (!gw_up_authorize(u, addr)) {
        gw_up_free(u); /* answered: nothing was read or stored */
        return;
    }
    if (ct != NULL && !gw_ctype_ok(ct)) {
        gw__error(req, 400, "Content-Type must be 1-127 printable ASCII bytes", "bad_content_type",
                  NULL, 0);
        gw_up_free(u);
        return;
    }
    u->put = addr != NULL;
    if (addr != NULL)
        memcpy(u->addr, addr, STO_ADDR_LEN);
    if (ct != NULL)
        snprintf(u->ctype, sizeof u->ctype, "%s", ct);
    u->remote = gw->cfg.storage != NULL;
    gw_up_step(u);
}

void
gw_set_storage(gw_t *gw, rbus_peer_t *peer)
{
    gw->cfg.storage = peer;
}

/* What the store keeps as a content type: 1..STO_CTYPE_MAX printable ASCII bytes. */
static bool
gw_ctype_ok(const char *ct)
{
    size_t n = strlen(ct);

    if (n == 0 || n > STO_CTYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)ct[i] < 0x20 || (unsigned char)ct[i] > 0x7E)
            return false;
    return true;
}
