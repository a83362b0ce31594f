/*
 * gw_routes.c - the gateway's routes on the ron-transport handler API:
 * dispatch, the shared responses, and the gateway's lifecycle.
 *
 * gw_handle validates the path (an object address is "b3:" and 64
 * lowercase hex, nothing else) and the method, then hands the request to
 * its route: GET/HEAD /o/b3:<hex> (gw_get.c, after the guard allowed it),
 * POST /o and PUT /o/b3:<hex> (gw_upload.c), /n/<name> (gw_names.c).
 * Everything a client can get wrong is answered here with the envelope and
 * CORS headers, before any store, index or bus call.
 *
 * Lifecycle: every request that holds state counts in stats.active and
 * calls gw__release when its state is gone; gw_close's callback runs once
 * none is left and the closer handle is closed (a later loop turn), so a
 * caller is never re-entered from gw_close itself.
 */

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "gw_internal.h"

static void gw_close_check(gw_t *gw);

/* A request's state is gone: count it, and finish a pending gw_close. */
void
gw__release(gw_t *gw)
{
    gw->stats.active--;
    if (gw->closing)
        gw_close_check(gw);
}

size_t
gw__cors(tx_header_t *h)
{
    h[0] = (tx_header_t){"Access-Control-Allow-Origin", GW_CORS_ORIGIN};
    h[1] = (tx_header_t){"Access-Control-Expose-Headers", GW_CORS_EXPOSE};
    return 2;
}

/* The envelope (retry_after_ms in it when > 0) with CORS headers and extra
 * (may be NULL) added. */
void
gw__error_retry(tx_request_t *req, int status, const char *message, const char *reason,
                const tx_header_t *extra, size_t n_extra, uint32_t retry_after_ms)
{
    char body[TX_ENVELOPE_MAX];
    tx_header_t h[GW_MAX_HDRS];
    size_t n = 0, len;

    len = tx_envelope_format(body, sizeof body, status, message, reason,
                             tx_request_view(req)->corr_id, retry_after_ms);
    h[n++] = (tx_header_t){"Content-Type", "application/json"};
    n += gw__cors(h + n);
    for (size_t i = 0; i < n_extra && n < GW_MAX_HDRS; i++)
        h[n++] = extra[i];
    (void)tx_respond(req, status, h, n, body, len);
}

/* The envelope with CORS headers and extra (may be NULL) added. */
void
gw__error(tx_request_t *req, int status, const char *message, const char *reason,
          const tx_header_t *extra, size_t n_extra)
{
    gw__error_retry(req, status, message, reason, extra, n_extra, 0);
}

void
gw__preflight(tx_request_t *req)
{
    tx_header_t h[] = {
        {"Access-Control-Allow-Origin", GW_CORS_ORIGIN},
        {"Access-Control-Allow-Methods", GW_CORS_METHODS},
        {"Access-Control-Allow-Headers", GW_CORS_HEADERS},
        {"Access-Control-Max-Age", GW_CORS_MAX_AGE},
    };
    (void)tx_respond(req, 204, h, sizeof h / sizeof h[0], NULL, 0);
}

void
gw__not_allowed(tx_request_t *req, const char *allow)
{
    tx_header_t h = {"Allow", allow};
    gw__error(req, 405, NULL, "method_not_allowed", &h, 1);
}

/* "b3:" then 64 lowercase hex, nothing else. */
bool
gw__addr_parse(const char *s, uint8_t addr_out[static STO_ADDR_LEN])
{
    if (strncmp(s, "b3:", 3) != 0 || strlen(s) != GW_ADDR_TEXT_LEN)
        return false;
    for (size_t i = 3; i < GW_ADDR_TEXT_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return sto_addr_parse(s, addr_out) == 0;
}

void
gw_handle(tx_request_t *req, void *arg)
{
    gw_t *gw = arg;
    const tx_request_view_t *v = tx_request_view(req);
    const char *m = v->method;
    uint8_t addr[STO_ADDR_LEN];

    gw->stats.requests++;
    if (strcmp(v->path, "/o") == 0 || strcmp(v->path, "/o/") == 0) {
        if (strcmp(m, "POST") == 0)
            gw__put_begin(gw, req, NULL);
        else if (strcmp(m, "OPTIONS") == 0)
            gw__preflight(req);
        else
            gw__not_allowed(req, "POST, OPTIONS");
        return;
    }
    if (strncmp(v->path, "/o/", 3) == 0) {
        bool get = strcmp(m, "GET") == 0, head = strcmp(m, "HEAD") == 0;
        bool put = strcmp(m, "PUT") == 0, opt = strcmp(m, "OPTIONS") == 0;
        if (!get && !head && !put && !opt) {
            gw__not_allowed(req, "GET, HEAD, PUT, OPTIONS");
            return;
        }
        if (!gw__addr_parse(v->path + 3, addr)) {
            gw__error(req, 400, "an object address is b3: and 64 lowercase hex digits",
                      "bad_address", NULL, 0);
            return;
        }
        if (opt) {
            gw__preflight(req);
        } else if (put) {
            gw__put_begin(gw, req, addr);
        } else {
            gw_auth_t a;
            if (gw__authorize(gw, req, AUTH_OP_GET, v->path + 3, NULL, 0, v->path + 3, &a))
                gw__get_begin(gw, req, addr, head, &a);
        }
        return;
    }
    if (strncmp(v->path, "/n/", 3) == 0) {
        gw__name_route(gw, req, v->path + 3);
        return;
    }
    gw__error(req, 404, "no such route", "no_route", NULL, 0);
}

gw_t *
gw_new(uv_loop_t *loop, const gw_config_t *cfg)
{
    gw_t *gw = ron_xcalloc(1, sizeof *gw);

    gw->loop = loop;
    gw->cfg = *cfg;
    if (gw->cfg.chunk == 0)
        gw->cfg.chunk = GW_CHUNK_DEFAULT;
    if (gw->cfg.chunk < GW_CHUNK_MIN)
        gw->cfg.chunk = GW_CHUNK_MIN;
    if (gw->cfg.chunk > GW_CHUNK_MAX)
        gw->cfg.chunk = GW_CHUNK_MAX;
    if (gw->cfg.max_upload == 0)
        gw->cfg.max_upload = STO_MAX_OBJECT_DEFAULT;
    uv_timer_init(loop, &gw->closer);
    gw->closer.data = gw;
    return gw;
}

const gw_stats_t *
gw_stats(const gw_t *gw)
{
    return &gw->stats;
}

static void
gw_closer_closed(uv_handle_t *h)
{
    gw_t *gw = h->data;

    gw->closer_closed = true;
    gw_close_check(gw);
}

/* Closing: once no request holds state and the closer handle is closed (a
 * later loop turn), run the callback. */
static void
gw_close_check(gw_t *gw)
{
    void (*cb)(void *arg) = gw->closed_cb;

    if (gw->stats.active == 0) {
        gw__cache_clear(gw);
        gw__bodies_clear(gw);
    }
    if (gw->stats.active == 0 && !uv_is_closing((uv_handle_t *)&gw->closer))
        uv_close((uv_handle_t *)&gw->closer, gw_closer_closed);
    if (gw->stats.active == 0 && gw->closer_closed && cb != NULL) {
        gw->closed_cb = NULL;
        cb(gw->closed_arg);
    }
}

void
gw_close(gw_t *gw, void (*cb)(void *arg), void *arg)
{
    gw->closing = true;
    gw->closed_cb = cb;
    gw->closed_arg = arg;
    gw_close_check(gw);
}

void
gw_free(gw_t *gw)
{
    if (gw == NULL)
        return;
    assert(gw->closer_closed);
    free(gw->hooked); /* refused by the transport, never routed */
    free(gw);
}
