/*
 * dht_client.c - the client side of the `dht` bus protocol
 * (docs/protocol/dht.md §10): one request frame (a big-endian u32 JSON
 * length, then compact JSON) and one answer, 200 framed the same way or the
 * spec §3 envelope alone. Answers are checked before a caller sees them:
 * ids are 64 lowercase hex digits, counts decimal strings, and a name record
 * is parsed by ron-naming and its signature verified again here, so a
 * confused service cannot hand the index an unsigned record.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht_client.h"
#include "dht_service.h"
#include "ron_err.h"
#include "ron_proto.h"
#include "ron_util.h"

typedef enum { CALL_PROVIDERS, CALL_PLAIN, CALL_NAME, CALL_STATUS, CALL_PROVIDE } call_kind_t;

static const char *const provide_states[] = {"announced", "unannounced", "pending", "queued"};

typedef struct {
    dht_client_cb cb;
    void *arg;
    call_kind_t kind;
} dht_call_t;

/* Copy the string field key of o (absent or not a string: "") into out. */
static void
dht_client_text(json_t *o, const char *key, char *out, size_t cap)
{
    const char *v = json_string_value(json_object_get(o, key));
    snprintf(out, cap, "%s", v != NULL ? v : "");
}

/* 64 lowercase hex digits into id. Returns 0 or -1. */
static int
dht_client_hex_id(json_t *v, uint8_t id[static DHT_ID_LEN])
{
    const char *s = json_string_value(v);
    if (s == NULL || strlen(s) != 2 * DHT_ID_LEN)
        return -1;
    for (const char *p = s; *p != '\0'; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return -1;
    return ron_hex_decode(id, DHT_ID_LEN, s, 2 * DHT_ID_LEN) < 0 ? -1 : 0;
}

static int
dht_client_u64(json_t *v, uint64_t *out)
{
    const char *s = json_string_value(v);
    return s != NULL && ron_parse_u64(s, strlen(s), out) == 0 ? 0 : -1;
}

static int
dht_client_addr(json_t *v, char out[static DHT_CLIENT_ADDR_MAX])
{
    const char *s = json_string_value(v);
    dht_addr_t a;
    if (s == NULL || strlen(s) >= DHT_CLIENT_ADDR_MAX || dht_service_addr_parse(s, &a) < 0)
        return -1;
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int
dht_client_parse_providers(json_t *o, dht_client_provider_t *out, size_t *n_out)
{
    json_t *a = json_object_get(o, "providers"), *p;
    size_t i;
    if (!json_is_array(a) || json_array_size(a) > DHT_CLIENT_MAX_PROVIDERS)
        return -1;
    json_array_foreach(a, i, p) {
        if (!json_is_object(p) || json_object_size(p) != 2 ||
            dht_client_hex_id(json_object_get(p, "id"), out[i].id) < 0 ||
            dht_client_addr(json_object_get(p, "addr"), out[i].addr) < 0)
            return -1;
    }
    *n_out = json_array_size(a);
    return 0;
}

static int
dht_client_parse_status(json_t *o, dht_client_status_t *st)
{
    json_t *b = json_object_get(o, "bootstrapped");
    if (dht_client_hex_id(json_object_get(o, "id"), st->id) < 0 ||
        dht_client_addr(json_object_get(o, "addr"), st->addr) < 0 ||
        dht_client_u64(json_object_get(o, "contacts"), &st->contacts) < 0 ||
        dht_client_u64(json_object_get(o, "records"), &st->records) < 0 ||
        dht_client_u64(json_object_get(o, "provided"), &st->provided) < 0 || !json_is_boolean(b))
        return -1;
    st->bootstrapped = json_is_true(b);
    return 0;
}

static int
dht_client_parse_name(json_t *o, name_record_t *rec)
{
    if (name_record_from_object(rec, json_object_get(o, "record"), NULL) < 0 ||
        name_record_verify(rec, NULL) < 0)
        return -1;
    return 0;
}

static void
dht_client_reply(void *arg, int status, const oap_frame_t *resp)
{
    dht_call_t *c = arg;
    dht_client_result_t res = {.status = status, .reason = "", .message = ""};
    char reason[DHT_CLIENT_TEXT_MAX], message[DHT_CLIENT_TEXT_MAX];
    dht_client_provider_t provs[DHT_CLIENT_MAX_PROVIDERS];
    dht_client_status_t st;
    name_record_t rec;
    json_error_t jerr;
    json_t *o = NULL;

    if (status < 0)
        goto out;
    res.code = resp->code;
    if (resp->code != 200) {
        o = json_loadb((const char *)resp->payload, resp->payload_len, 0, &jerr);
        dht_client_text(o, "reason", reason, sizeof reason);
        dht_client_text(o, "message", message, sizeof message);
        res.reason = reason;
        res.message = message;
        goto out;
    }
    if ((o = proto_json_unframe(resp->payload, resp->payload_len, JSON_REJECT_DUPLICATES)) == NULL)
        goto bad;
    switch (c->kind) {
    case CALL_PROVIDERS:
        if (dht_client_parse_providers(o, provs, &res.n_providers) < 0)
            goto bad;
        res.providers = provs;
        res.complete = json_is_true(json_object_get(o, "complete"));
        break;
    case CALL_PROVIDE: {
        const char *ps = json_string_value(json_object_get(o, "state"));
        for (size_t i = 0; ps != NULL && i < RON_ARRAY_LEN(provide_states); i++)
            if (strcmp(ps, provide_states[i]) == 0)
                res.provide_state = provide_states[i];
        if (res.provide_state == NULL ||
            dht_client_u64(json_object_get(o, "announced"), &res.announced) < 0 ||
            dht_client_u64(json_object_get(o, "sent"), &res.sent) < 0 || res.announced > res.sent)
            goto bad;
        break;
    }
    case CALL_NAME:
        if (dht_client_parse_name(o, &rec) < 0)
            goto bad;
        res.rec = &rec;
        break;
    case CALL_STATUS:
        memset(&st, 0, sizeof st);
        if (dht_client_parse_status(o, &st) < 0)
            goto bad;
        res.status_info = &st;
        break;
    default:
        break;
    }
    goto out;
bad:
    res.status = RON_EPROTO;
out:
    if (c->cb != NULL)
        c->cb(c->arg, &res);
    json_decref(o);
    free(c);
}

/* Send the JSON text of o (taken) as one framed request, with the
 * capability cap (NUL-terminated, or NULL: none) in its cap section. */
static int
dht_client_send_within(rbus_peer_t *peer, json_t *o, const char *cap, call_kind_t kind,
                       uint32_t deadline_ms, dht_client_cb cb, void *arg)
{
    rbus_request_opts_t ro = {.app_proto_id = OAP_APP_DHT, .deadline_ms = deadline_ms};
    char *txt = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    dht_call_t *c;
    uint8_t *buf;
    size_t jl;
    int rc;

    json_decref(o);
    if (txt == NULL)
        return RON_EINVAL;
    jl = strlen(txt);
    if (jl > DHT_SVC_MAX_JSON) {
        free(txt);
        return RON_EINVAL;
    }
    buf = ron_xmalloc(4 + jl);
    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    free(txt);
    c = ron_xcalloc(1, sizeof *c);
    c->cb = cb;
    c->arg = arg;
    c->kind = kind;
    if (cap != NULL) {
        ro.cap = cap;
        ro.cap_len = strlen(cap);
    }
    rc = rbus_request_ex(peer, &ro, buf, 4 + jl, dht_client_reply, c);
    free(buf);
    if (rc < 0)
        free(c);
    return rc;
}

static int
dht_client_send(rbus_peer_t *peer, json_t *o, const char *cap, call_kind_t kind, dht_client_cb cb,
                void *arg)
{
    return dht_client_send_within(peer, o, cap, kind, DHT_CLIENT_DEADLINE_MS, cb, arg);
}

static void
dht_client_b3(char out[static 3 + 2 * DHT_ID_LEN + 1], const uint8_t addr[static DHT_ID_LEN])
{
    out[0] = 'b';
    out[1] = '3';
    out[2] = ':';
    ron_hex_encode(out + 3, addr, DHT_ID_LEN);
}

int
dht_client_find_providers(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                          unsigned limit, dht_client_cb cb, void *arg)
{
    return dht_client_find_providers_within(peer, addr, limit, NULL, 0, cb, arg);
}

int
dht_client_find_providers_cap(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                              unsigned limit, const char *cap, dht_client_cb cb, void *arg)
{
    return dht_client_find_providers_within(peer, addr, limit, cap, 0, cb, arg);
}

int
dht_client_find_providers_within(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN],
                                 unsigned limit, const char *cap, uint32_t deadline_ms,
                                 dht_client_cb cb, void *arg)
{
    char a[3 + 2 * DHT_ID_LEN + 1], lim[16];
    json_t *o;

    if (limit > DHT_CLIENT_MAX_PROVIDERS || deadline_ms > DHT_CLIENT_DEADLINE_MS)
        return RON_EINVAL;
    if (deadline_ms == 0)
        deadline_ms = DHT_CLIENT_DEADLINE_MS;
    dht_client_b3(a, addr);
    o = json_pack("{s:s, s:s}", "op", "find_providers", "address", a);
    if (o != NULL && limit > 0) {
        snprintf(lim, sizeof lim, "%u", limit);
        json_object_set_new(o, "limit", json_string(lim));
    }
    return dht_client_send_within(peer, o, cap, CALL_PROVIDERS, deadline_ms, cb, arg);
}

int
dht_client_provide(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN], dht_client_cb cb,
                   void *arg)
{
    return dht_client_provide_cap(peer, addr, NULL, cb, arg);
}

/* Send {"op":op,"address":"b3:<hex>"} (provide, unprovide): an empty 200 answers it. */
static int
send_address_op(rbus_peer_t *peer, const char *op, const uint8_t addr[static DHT_ID_LEN],
                const char *cap, dht_client_cb cb, void *arg)
{
    char a[3 + 2 * DHT_ID_LEN + 1];
    dht_client_b3(a, addr);
    return dht_client_send(peer, json_pack("{s:s, s:s}", "op", op, "address", a), cap, CALL_PLAIN,
                           cb, arg);
}

int
dht_client_provide_cap(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN], const char *cap,
                       dht_client_cb cb, void *arg)
{
    return send_address_op(peer, "provide", addr, cap, cb, arg);
}

int
dht_client_provide_wait(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN], const char *cap,
                        uint32_t wait_ms, dht_client_cb cb, void *arg)
{
    char a[3 + 2 * DHT_ID_LEN + 1], w[16];

    if (wait_ms == 0 || wait_ms > DHT_SVC_PROVIDE_WAIT_MAX || cb == NULL)
        return RON_EINVAL;
    dht_client_b3(a, addr);
    snprintf(w, sizeof w, "%u", wait_ms);
    return dht_client_send_within(
        peer, json_pack("{s:s, s:s, s:s}", "op", "provide", "address", a, "wait_ms", w), cap,
        CALL_PROVIDE, wait_ms + DHT_CLIENT_PROVIDE_SLACK_MS, cb, arg);
}

int
dht_client_unprovide(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN], dht_client_cb cb,
                     void *arg)
{
    return dht_client_unprovide_cap(peer, addr, NULL, cb, arg);
}

int
dht_client_unprovide_cap(rbus_peer_t *peer, const uint8_t addr[static DHT_ID_LEN], const char *cap,
                         dht_client_cb cb, void *arg)
{
    return send_address_op(peer, "unprovide", addr, cap, cb, arg);
}

int
dht_client_name_put(rbus_peer_t *peer, const name_record_t *rec, dht_client_cb cb, void *arg)
{
    return dht_client_name_put_cap(peer, rec, NULL, cb, arg);
}

int
dht_client_name_put_cap(rbus_peer_t *peer, const name_record_t *rec, const char *cap,
                        dht_client_cb cb, void *arg)
{
    json_t *r = name_record_to_object(rec);

    if (r == NULL)
        return RON_EINVAL;
    return dht_client_send(peer, json_pack("{s:s, s:o}", "op", "name_put", "record", r), cap,
                           CALL_PLAIN, cb, arg);
}

int
dht_client_name_get(rbus_peer_t *peer, const char *name, dht_client_cb cb, void *arg)
{
    return dht_client_name_get_cap(peer, name, NULL, cb, arg);
}

int
dht_client_name_get_cap(rbus_peer_t *peer, const char *name, const char *cap, dht_client_cb cb,
                        void *arg)
{
    if (strlen(name) > NAME_MAX_INPUT)
        return RON_EINVAL;
    return dht_client_send(peer, json_pack("{s:s, s:s}", "op", "name_get", "name", name), cap,
                           CALL_NAME, cb, arg);
}

int
dht_client_status(rbus_peer_t *peer, dht_client_cb cb, void *arg)
{
    return dht_client_send(peer, json_pack("{s:s}", "op", "status"), NULL, CALL_STATUS, cb, arg);
}
