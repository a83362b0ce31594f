/*
 * ovl_client.c - the `overlay` bus endpoint's client: one framed JSON
 * request per call, the answer decoded into a piece list (views) or a
 * status. Why here and not in svc-storage: the answer's records are the
 * overlay's piece frames, whose layout belongs to svc-overlay; storage gets
 * decoded pieces and never parses the wire format itself.
 * Invariants: a record's byte length comes from the size and its index
 * (as sto_tree_piece_len computes it), so an answer parses only when every record lines
 * up and the bytes end exactly after the last one; each callback runs once.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ovl_client.h"
#include "ron_err.h"
#include "ron_proto.h"
#include "ron_util.h"

/* Pieces of an object of size bytes (1 for an empty one). */
static uint64_t
oc_pieces(uint64_t size)
{
    return size == 0 ? 1 : (size - 1) / OVL_CLIENT_PIECE_LEN + 1;
}

/* Byte length of piece idx of an object of size bytes. */
static size_t
oc_piece_len(uint64_t size, uint64_t idx)
{
    uint64_t lo = idx * OVL_CLIENT_PIECE_LEN;
    if (lo >= size)
        return 0;
    return (size_t)(size - lo < OVL_CLIENT_PIECE_LEN ? size - lo : OVL_CLIENT_PIECE_LEN);
}

typedef struct {
    ovl_client_fetch_cb fetch_cb;
    ovl_client_json_cb json_cb;
    void *arg;
} oc_call_t;

/* Frame JSON text as u32 length || JSON and send it. */
static int
oc_send(rbus_peer_t *peer, const char *txt, size_t jl, uint32_t deadline_ms, oc_call_t *c,
        rbus_reply_cb reply)
{
    uint8_t *buf = ron_xmalloc(4 + jl);
    int rc;

    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    rc = rbus_request(peer, OAP_APP_OVERLAY, buf, 4 + jl,
                      deadline_ms != 0 ? deadline_ms : OVL_CLIENT_DEADLINE_MS, reply, c);
    free(buf);
    return rc;
}

/* Map an error answer to a status code. */
static int
oc_error(const oap_frame_t *resp)
{
    proto_error_t e;

    switch (resp->code) {
    case 400:
        return RON_EINVAL;
    case 404:
        return RON_ENOTFOUND;
    case 416:
        return RON_ERANGE;
    case 429:
        return RON_EBUSY;
    case 401:
        return RON_ECAPNEEDED; /* the provider wants a (valid) capability */
    case 403:
        return RON_ECAPDENY;
    case 502:
        if (proto_error_decode((const char *)resp->payload, resp->payload_len, &e, NULL) == 0 &&
            strcmp(e.reason, "bad_piece") == 0)
            return RON_EBADPIECE;
        return RON_EPEERERR;
    case 503:
        return RON_EUNAVAIL;
    case 504:
        return RON_ETIMEOUT;
    default:
        return RON_EPEERERR;
    }
}

/* The JSON part of a 200 answer (views into payload), or -1. */
static int
oc_split(const uint8_t *payload, size_t len, const char **json, size_t *jl, const uint8_t **raw,
         size_t *raw_len)
{
    uint32_t n;

    if (len < 4)
        return -1;
    n = (uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 | (uint32_t)payload[2] << 8 |
        payload[3];
    if (n > len - 4)
        return -1;
    *json = (const char *)payload + 4;
    *jl = n;
    *raw = payload + 4 + n;
    *raw_len = len - 4 - n;
    return 0;
}

static int
oc_u64(json_t *o, const char *name, uint64_t *out)
{
    json_t *v = json_object_get(o, name);
    const char *sv = json_string_value(v);

    if (sv == NULL)
        return -1;
    return ron_parse_u64(sv, json_string_length(v), out) < 0 ? -1 : 0;
}

static uint64_t
oc_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int
ovl_client_fetch_decode(const uint8_t *payload, size_t len, ovl_client_fetch_result_t *res)
{
    const char *json;
    const uint8_t *raw;
    size_t jl, raw_len, off = 0;
    json_t *o;
    uint64_t npieces, total, k;
    bool sized, cvs;
    int rc = RON_EPROTO;

    memset(res, 0, sizeof *res);
    if (oc_split(payload, len, &json, &jl, &raw, &raw_len) < 0)
        return RON_EPROTO;
    o = json_loadb(json, jl, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o) || oc_u64(o, "size", &res->size) < 0 ||
        oc_u64(o, "first", &res->first) < 0 || oc_u64(o, "count", &res->count) < 0)
        goto out;
    cvs = json_is_true(json_object_get(o, "cv"));
    npieces = oc_pieces(res->size);
    if (res->count == 0 || res->first >= npieces || res->count > npieces - res->first)
        goto out;
    /* a sized fetch's answer holds the range alone, in order (its first record
     * is piece `first`); otherwise the last piece comes first (the two orders
     * agree when the range is the last piece alone) */
    sized = raw_len >= 8 && oc_be64(raw) == res->first;
    total = sized || res->first + res->count == npieces ? res->count : res->count + 1;
    if (total > OVL_CLIENT_PIECES_MAX)
        goto out;
    if (cvs) { /* each record's chaining value follows the records */
        if (raw_len < total * OVL_CLIENT_CV_LEN)
            goto out;
        raw_len -= (size_t)total * OVL_CLIENT_CV_LEN;
    }
    for (k = 0; k < total; k++) {
        ovl_client_piece_t *p = &res->pieces[k];
        uint64_t want = sized ? res->first + k : k == 0 ? npieces - 1 : res->first + k - 1;
        size_t plen = oc_piece_len(res->size, want);
        if (raw_len - off < OVL_CLIENT_REC_HDR_LEN)
            goto out;
        p->rec = raw + off;
        p->piece = 0;
        for (int i = 0; i < 8; i++)
            p->piece = p->piece << 8 | raw[off + (size_t)i];
        p->proof_len = (size_t)raw[off + 8] << 8 | raw[off + 9];
        if (p->piece != want || p->proof_len > OVL_CLIENT_PROOF_MAX || p->proof_len % 32 != 0 ||
            raw_len - off - OVL_CLIENT_REC_HDR_LEN < p->proof_len + plen)
            goto out;
        p->proof = raw + off + OVL_CLIENT_REC_HDR_LEN;
        p->bytes = p->proof + p->proof_len;
        p->len = plen;
        p->rec_len = OVL_CLIENT_REC_HDR_LEN + p->proof_len + plen;
        off += p->rec_len;
    }
    if (off != raw_len)
        goto out;
    for (k = 0; cvs && k < total; k++)
        res->pieces[k].cv = raw + raw_len + k * OVL_CLIENT_CV_LEN;
    res->n_pieces = (size_t)total;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

static void
oc_fetch_reply(void *arg, int status, const oap_frame_t *resp)
{
    oc_call_t *c = arg;
    ovl_client_fetch_result_t *res;

    if (status < 0) {
        c->fetch_cb(c->arg, status, 0, NULL);
    } else if (resp->code != 200) {
        c->fetch_cb(c->arg, oc_error(resp), resp->code, NULL);
    } else {
        res = ron_xmalloc(sizeof *res);
        if (ovl_client_fetch_decode(resp->payload, resp->payload_len, res) < 0) {
            c->fetch_cb(c->arg, RON_EPROTO, 200, NULL);
        } else {
            res->frame = resp;
            c->fetch_cb(c->arg, 0, 200, res);
        }
        free(res);
    }
    free(c);
}

void *
ovl_client_fetch_take(const ovl_client_fetch_result_t *res)
{
    return res->frame != NULL ? rbus_frame_take(res->frame) : NULL;
}

int
ovl_client_fetch(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN], uint64_t offset,
                 uint64_t length, const uint8_t provider_id[static OVL_CLIENT_ID_LEN],
                 const char *provider_addr, uint32_t deadline_ms, ovl_client_fetch_cb cb, void *arg)
{
    return ovl_client_fetch_full(peer, addr, offset, length, OVL_CLIENT_SIZE_UNKNOWN, provider_id,
                                 provider_addr, NULL, deadline_ms, cb, arg);
}

int
ovl_client_fetch_cap(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                     uint64_t offset, uint64_t length,
                     const uint8_t provider_id[static OVL_CLIENT_ID_LEN], const char *provider_addr,
                     const char *cap, uint32_t deadline_ms, ovl_client_fetch_cb cb, void *arg)
{
    return ovl_client_fetch_full(peer, addr, offset, length, OVL_CLIENT_SIZE_UNKNOWN, provider_id,
                                 provider_addr, cap, deadline_ms, cb, arg);
}

int
ovl_client_fetch_sized(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                       uint64_t offset, uint64_t length, uint64_t known,
                       const uint8_t provider_id[static OVL_CLIENT_ID_LEN],
                       const char *provider_addr, uint32_t deadline_ms, ovl_client_fetch_cb cb,
                       void *arg)
{
    return ovl_client_fetch_full(peer, addr, offset, length, known, provider_id, provider_addr,
                                 NULL, deadline_ms, cb, arg);
}

int
ovl_client_fetch_full(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                      uint64_t offset, uint64_t length, uint64_t known,
                      const uint8_t provider_id[static OVL_CLIENT_ID_LEN],
                      const char *provider_addr, const char *cap, uint32_t deadline_ms,
                      ovl_client_fetch_cb cb, void *arg)
{
    char a[3 + 2 * OVL_CLIENT_OBJ_LEN + 1] = "b3:", id[2 * OVL_CLIENT_ID_LEN + 1], off[24], len[24];
    char sz[24];
    json_t *o, *prov;
    char *txt;
    oc_call_t *c;
    int rc;

    if (length == 0 || length > OVL_CLIENT_FETCH_MAX_LEN || provider_addr == NULL ||
        strlen(provider_addr) > OVL_CLIENT_NET_ADDR_MAX ||
        (cap != NULL && (cap[0] == '\0' || strlen(cap) > OVL_CLIENT_CAP_MAX)))
        return RON_EINVAL;
    ron_hex_encode(a + 3, addr, OVL_CLIENT_OBJ_LEN);
    ron_hex_encode(id, provider_id, OVL_CLIENT_ID_LEN);
    snprintf(off, sizeof off, "%llu", (unsigned long long)offset);
    snprintf(len, sizeof len, "%llu", (unsigned long long)length);
    prov = json_pack("{s:s, s:s}", "id", id, "addr", provider_addr);
    o = json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "fetch", "address", a, "offset", off, "length",
                  len, "provider", prov);
    if (o != NULL && cap != NULL)
        json_object_set_new(o, "cap", json_string(cap));
    if (o != NULL && known != OVL_CLIENT_SIZE_UNKNOWN) {
        snprintf(sz, sizeof sz, "%llu", (unsigned long long)known);
        json_object_set_new(o, "size", json_string(sz));
    }
    txt = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (txt == NULL)
        return RON_EINVAL; /* provider_addr or cap not UTF-8 */
    c = ron_xcalloc(1, sizeof *c);
    c->fetch_cb = cb;
    c->arg = arg;
    rc = oc_send(peer, txt, strlen(txt), deadline_ms, c, oc_fetch_reply);
    if (cap != NULL)
        explicit_bzero(txt, strlen(txt)); /* it held the token */
    free(txt);
    if (rc < 0)
        free(c);
    return rc;
}

static void
oc_json_reply(void *arg, int status, const oap_frame_t *resp)
{
    oc_call_t *c = arg;
    const char *json;
    const uint8_t *raw;
    size_t jl, raw_len;

    if (status < 0)
        c->json_cb(c->arg, status, 0, NULL, 0);
    else if (resp->code != 200)
        c->json_cb(c->arg, oc_error(resp), resp->code, NULL, 0);
    else if (oc_split(resp->payload, resp->payload_len, &json, &jl, &raw, &raw_len) < 0)
        c->json_cb(c->arg, RON_EPROTO, 200, NULL, 0);
    else
        c->json_cb(c->arg, 0, 200, json, jl);
    free(c);
}

int
ovl_client_query(rbus_peer_t *peer, const char *op, ovl_client_json_cb cb, void *arg)
{
    char txt[64];
    oc_call_t *c;
    int rc, n;

    if (strcmp(op, "peers") != 0 && strcmp(op, "status") != 0)
        return RON_EINVAL;
    n = snprintf(txt, sizeof txt, "{\"op\":\"%s\"}", op);
    c = ron_xcalloc(1, sizeof *c);
    c->json_cb = cb;
    c->arg = arg;
    if ((rc = oc_send(peer, txt, (size_t)n, 0, c, oc_json_reply)) < 0)
        free(c);
    return rc;
}
