/*
 * ovl_msg.c - the overlay's JSON messages and piece frames
 * (docs/protocol/overlay.md). Everything a peer sends is outside input, so
 * parsing is strict: one shape per op, unknown and duplicate keys refused,
 * u64 values as decimal strings, lists bounded before anything is copied.
 * Encoders write into caller buffers (no allocation on the transfer path).
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "ovl_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* u64 from a decimal string without leading zeros. */
static int
msg_u64(const json_t *v, uint64_t *out)
{
    const char *s;
    uint64_t x = 0;
    size_t i, n;

    if (!json_is_string(v))
        return RON_EJSON;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        return RON_EJSON;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return RON_EJSON;
        if (x > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return RON_EJSON;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *out = x;
    return 0;
}

/* Every key of o is in allowed (NULL-terminated)? */
static int
msg_only(const json_t *o, const char *const *allowed)
{
    const char *key;
    const json_t *v;

    json_object_foreach((json_t *)o, key, v)
    {
        size_t i;
        (void)v;
        for (i = 0; allowed[i] != NULL; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (allowed[i] == NULL)
            return RON_EJSON;
    }
    return 0;
}

/* Copy string v (1..cap-1 bytes, no NUL inside) into out. */
static int
msg_str(const json_t *v, char *out, size_t cap, bool allow_empty)
{
    size_t n;

    if (!json_is_string(v))
        return RON_EJSON;
    n = json_string_length(v);
    if ((n == 0 && !allow_empty) || n >= cap || memchr(json_string_value(v), 0, n) != NULL)
        return RON_EJSON;
    memcpy(out, json_string_value(v), n);
    out[n] = '\0';
    return 0;
}

static int
msg_peer(const json_t *o, ovl_peer_t *p)
{
    static const char *const keys[] = {"addr", "id", "ts", NULL};
    const json_t *id;

    if (!json_is_object(o) || msg_only(o, keys) < 0 || json_object_size(o) != 3)
        return RON_EJSON;
    id = json_object_get(o, "id");
    if (!json_is_string(id) || json_string_length(id) != 2 * OVL_ID_LEN ||
        ron_hex_decode(p->id, OVL_ID_LEN, json_string_value(id), 2 * OVL_ID_LEN) < 0)
        return RON_EJSON;
    if (msg_str(json_object_get(o, "addr"), p->addr, sizeof(p->addr), false) < 0)
        return RON_EJSON;
    return msg_u64(json_object_get(o, "ts"), &p->ts);
}

static int
msg_fill(const json_t *root, const char *op, ovl_msg_t *m)
{
    const json_t *v;

    if (strcmp(op, "ping") == 0 || strcmp(op, "pong") == 0) {
        static const char *const keys[] = {"op", "seq", NULL};
        m->type = op[1] == 'i' ? OVL_MSG_PING : OVL_MSG_PONG;
        if (msg_only(root, keys) < 0)
            return RON_EJSON;
        return msg_u64(json_object_get(root, "seq"), &m->seq);
    }
    if (strcmp(op, "goodbye") == 0) {
        static const char *const keys[] = {"op", "reason", NULL};
        m->type = OVL_MSG_GOODBYE;
        if (msg_only(root, keys) < 0)
            return RON_EJSON;
        v = json_object_get(root, "reason");
        return v == NULL ? 0 : msg_str(v, m->reason, sizeof(m->reason), true);
    }
    if (strcmp(op, "peers") == 0) {
        static const char *const keys[] = {"op", "peers", NULL};
        size_t i;
        m->type = OVL_MSG_PEERS;
        v = json_object_get(root, "peers");
        if (msg_only(root, keys) < 0 || !json_is_array(v) || json_array_size(v) > OVL_GOSSIP_MAX)
            return RON_EJSON;
        for (i = 0; i < json_array_size(v); i++)
            if (msg_peer(json_array_get(v, i), &m->peers[i]) < 0)
                return RON_EJSON;
        m->n_peers = i;
        return 0;
    }
    if (strcmp(op, "get") == 0) {
        static const char *const keys[] = {"addr", "length", "offset", "op", "size", NULL};
        char a[80];
        m->type = OVL_MSG_GET;
        m->length = OVL_LEN_TO_END;
        m->known = OVL_SIZE_UNKNOWN;
        if (msg_only(root, keys) < 0 ||
            msg_str(json_object_get(root, "addr"), a, sizeof(a), false) < 0 ||
            strncmp(a, "b3:", 3) != 0 || strlen(a) != 3 + 2 * STO_ADDR_LEN ||
            sto_addr_parse(a, m->addr) < 0)
            return RON_EJSON;
        if ((v = json_object_get(root, "offset")) != NULL && msg_u64(v, &m->offset) < 0)
            return RON_EJSON;
        if ((v = json_object_get(root, "length")) != NULL &&
            (msg_u64(v, &m->length) < 0 || m->length == 0 || m->length == OVL_LEN_TO_END))
            return RON_EJSON;
        if ((v = json_object_get(root, "size")) != NULL &&
            (msg_u64(v, &m->known) < 0 || m->known == OVL_SIZE_UNKNOWN))
            return RON_EJSON;
        return 0;
    }
    if (strcmp(op, "meta") == 0) {
        static const char *const keys[] = {"count", "first", "op", "size", NULL};
        m->type = OVL_MSG_META;
        if (msg_only(root, keys) < 0 || msg_u64(json_object_get(root, "size"), &m->size) < 0 ||
            msg_u64(json_object_get(root, "first"), &m->first) < 0 ||
            msg_u64(json_object_get(root, "count"), &m->count) < 0)
            return RON_EJSON;
        return 0;
    }
    return RON_EJSON;
}

int
ovl_msg_parse(const uint8_t *json, size_t len, ovl_msg_t *m_out)
{
    json_error_t jerr;
    json_t *root = NULL;
    const json_t *op;
    int rc = RON_EJSON;

    memset(m_out, 0, sizeof(*m_out));
    if (len == 0 || len > OVL_MSG_MAX)
        goto out;
    root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root))
        goto out;
    op = json_object_get(root, "op");
    if (!json_is_string(op))
        goto out;
    rc = msg_fill(root, json_string_value(op), m_out);
out:
    json_decref(root);
    if (rc < 0)
        memset(m_out, 0, sizeof(*m_out));
    return rc < 0 ? RON_EJSON : 0;
}

int
ovl_piece_parse(const uint8_t *payload, size_t len, uint64_t *piece_out, const uint8_t **proof_out,
                size_t *proof_len_out, const uint8_t **bytes_out, size_t *bytes_len_out)
{
    uint64_t piece = 0;
    size_t pl, i;

    if (len < OVL_PIECE_HDR_LEN)
        return RON_EPROTO;
    for (i = 0; i < 8; i++)
        piece = (piece << 8) | payload[i];
    pl = ((size_t)payload[8] << 8) | payload[9];
    if (pl > STO_TREE_MAX_PROOF || pl % STO_TREE_HASH_LEN != 0 || len - OVL_PIECE_HDR_LEN < pl ||
        len - OVL_PIECE_HDR_LEN - pl > STO_PIECE_LEN)
        return RON_EPROTO;
    *piece_out = piece;
    *proof_out = payload + OVL_PIECE_HDR_LEN;
    *proof_len_out = pl;
    *bytes_out = payload + OVL_PIECE_HDR_LEN + pl;
    *bytes_len_out = len - OVL_PIECE_HDR_LEN - pl;
    return 0;
}

void
ovl__piece_hdr(uint8_t *out, uint64_t piece, size_t proof_len)
{
    size_t i;

    for (i = 0; i < 8; i++)
        out[i] = (uint8_t)(piece >> (56 - 8 * i));
    out[8] = (uint8_t)(proof_len >> 8);
    out[9] = (uint8_t)proof_len;
}

/* JSON string body of s (printable ASCII kept, anything else as \u00XX). */
static size_t
msg_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s != '\0' && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

size_t
ovl__msg_seq(char *out, size_t cap, bool pong, uint64_t seq)
{
    int n = snprintf(out, cap, "{\"op\":\"%s\",\"seq\":\"%llu\"}", pong ? "pong" : "ping",
                     (unsigned long long)seq);
    return n < 0 ? 0 : (size_t)n;
}

size_t
ovl__msg_goodbye(char *out, size_t cap, const char *reason)
{
    char esc[OVL_REASON_MAX * 6 + 8];
    int n;

    msg_escape(esc, sizeof(esc), reason != NULL ? reason : "");
    n = snprintf(out, cap, "{\"op\":\"goodbye\",\"reason\":\"%s\"}", esc);
    return n < 0 ? 0 : (size_t)n;
}

size_t
ovl__msg_peers(char *out, size_t cap, const ovl_peer_t *p, size_t n_peers)
{
    size_t n = 0, i;
    char hex[2 * OVL_ID_LEN + 1];
    char esc[OVL_ADDR_MAX * 6 + 8];

    n += (size_t)snprintf(out + n, cap - n, "{\"op\":\"peers\",\"peers\":[");
    for (i = 0; i < n_peers && n < cap; i++) {
        ron_hex_encode(hex, p[i].id, OVL_ID_LEN);
        msg_escape(esc, sizeof(esc), p[i].addr);
        n += (size_t)snprintf(out + n, cap - n, "%s{\"addr\":\"%s\",\"id\":\"%s\",\"ts\":\"%llu\"}",
                              i > 0 ? "," : "", esc, hex, (unsigned long long)p[i].ts);
    }
    if (n < cap)
        n += (size_t)snprintf(out + n, cap - n, "]}");
    return n < cap ? n : 0;
}

size_t
ovl__msg_get(char *out, size_t cap, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
             uint64_t length, uint64_t known)
{
    char a[68], len[48] = "", sz[48] = "";
    int n;

    sto_addr_format(addr, a);
    if (length != OVL_LEN_TO_END)
        snprintf(len, sizeof len, "\"length\":\"%llu\",", (unsigned long long)length);
    if (known != OVL_SIZE_UNKNOWN)
        snprintf(sz, sizeof sz, ",\"size\":\"%llu\"", (unsigned long long)known);
    n = snprintf(out, cap, "{\"addr\":\"%s\",%s\"offset\":\"%llu\",\"op\":\"get\"%s}", a, len,
                 (unsigned long long)offset, sz);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t
ovl__msg_meta(char *out, size_t cap, uint64_t size, uint64_t first, uint64_t count)
{
    int n = snprintf(
        out, cap, "{\"count\":\"%llu\",\"first\":\"%llu\",\"op\":\"meta\",\"size\":\"%llu\"}",
        (unsigned long long)count, (unsigned long long)first, (unsigned long long)size);
    return n < 0 ? 0 : (size_t)n;
}
