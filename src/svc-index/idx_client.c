/*
 * idx_client.c - the client side of the index & naming protocol over
 * ron-bus (docs/protocol/index.md): one request frame (a big-endian u32 JSON
 * length, then compact JSON) and one answer, 200 framed the same way or the
 * spec §3 envelope alone. Parsing is strict where the answer feeds a
 * decision (a resolved record goes through ron-naming's parser again).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_client.h"
#include "idx_service.h"
#include "ron_err.h"
#include "ron_proto.h"
#include "ron_util.h"

typedef struct {
    idx_client_cb cb;
    void *arg;
    bool resolve;
} idx_call_t;

/* Copy the string field key of o (absent or not a string: "") into out. */
static void
idx_client_text(json_t *o, const char *key, char *out, size_t cap)
{
    const char *v = json_string_value(json_object_get(o, key));
    snprintf(out, cap, "%s", v != NULL ? v : "");
}

static void
idx_client_reply(void *arg, int status, const oap_frame_t *resp)
{
    idx_call_t *c = arg;
    idx_client_result_t res = {.status = status, .reason = "", .message = ""};
    char reason[IDX_CLIENT_TEXT_MAX], message[IDX_CLIENT_TEXT_MAX];
    name_record_t rec;
    name_err_t nerr;
    json_error_t jerr;
    json_t *o = NULL;

    if (status < 0)
        goto out;
    res.code = resp->code;
    if (resp->code != 200) {
        o = json_loadb((const char *)resp->payload, resp->payload_len, 0, &jerr);
        idx_client_text(o, "reason", reason, sizeof reason);
        idx_client_text(o, "message", message, sizeof message);
        res.reason = reason;
        res.message = message;
        goto out;
    }
    if ((o = proto_json_unframe(resp->payload, resp->payload_len, 0)) == NULL) {
        res.status = RON_EPROTO;
        goto out;
    }
    if (c->resolve) {
        if (name_record_from_object(&rec, json_object_get(o, "record"), &nerr) < 0)
            res.status = RON_EPROTO;
        else
            res.rec = &rec;
    } else {
        const char *st = json_string_value(json_object_get(o, "status"));
        res.unchanged = st != NULL && strcmp(st, "unchanged") == 0;
    }
out:
    c->cb(c->arg, &res);
    json_decref(o);
    free(c);
}

/* Send the JSON text of o (taken) as one framed request acting for auth (may be NULL). */
static int
idx_client_send(rbus_peer_t *peer, const idx_client_auth_t *auth, json_t *o, bool resolve,
                idx_client_cb cb, void *arg)
{
    rbus_request_opts_t ro = {.app_proto_id = OAP_APP_INDEX, .deadline_ms = IDX_CLIENT_DEADLINE_MS};
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    idx_call_t *c;
    uint8_t *buf;
    size_t jl;
    int rc;

    json_decref(o);
    if (txt == NULL)
        return RON_EINVAL;
    if (auth != NULL) {
        if (auth->tenant != NULL)
            memcpy(ro.tenant_id, auth->tenant, sizeof ro.tenant_id);
        ro.cap = auth->cap;
        ro.cap_len = auth->cap != NULL ? auth->cap_len : 0;
    }
    jl = strlen(txt);
    if (jl > IDX_SVC_MAX_JSON) {
        free(txt);
        return RON_EINVAL;
    }
    buf = ron_xmalloc(4 + jl);
    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    free(txt);
    c = ron_xcalloc(1, sizeof *c);
    c->cb = cb;
    c->arg = arg;
    c->resolve = resolve;
    rc = rbus_request_ex(peer, &ro, buf, 4 + jl, idx_client_reply, c); /* copies cap */
    free(buf);
    if (rc < 0)
        free(c);
    return rc;
}

int
idx_client_resolve_as(rbus_peer_t *peer, const idx_client_auth_t *auth, const char *name,
                      idx_client_cb cb, void *arg)
{
    if (strlen(name) > NAME_MAX_INPUT)
        return RON_EINVAL;
    return idx_client_send(peer, auth, json_pack("{s:s, s:s}", "op", "resolve", "name", name),
                           true, cb, arg);
}

int
idx_client_resolve(rbus_peer_t *peer, const char *name, idx_client_cb cb, void *arg)
{
    return idx_client_resolve_as(peer, NULL, name, cb, arg);
}

int
idx_client_publish_as(rbus_peer_t *peer, const idx_client_auth_t *auth, const name_record_t *rec,
                      idx_client_cb cb, void *arg)
{
    json_t *r = name_record_to_object(rec);

    if (r == NULL)
        return RON_EINVAL;
    return idx_client_send(peer, auth, json_pack("{s:s, s:o}", "op", "publish", "record", r),
                           false, cb, arg);
}

int
idx_client_publish(rbus_peer_t *peer, const name_record_t *rec, idx_client_cb cb, void *arg)
{
    return idx_client_publish_as(peer, NULL, rec, cb, arg);
}
