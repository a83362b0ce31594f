/*
 * dht_msg.c - DHT datagram codec, the XOR metric, and provider record signing.
 * Pure functions over caller buffers. Decoding is strict (docs/protocol/dht.md):
 * one OAP/1 frame filling the datagram exactly, every read bounds-checked by a
 * ron_rd_t cursor, every count checked against its limit before use, and no
 * byte left over except zero padding on requests.
 */
#include <string.h>

#include <blake3.h>
#include <sodium.h>

#include "dht_internal.h"
#include "oap.h"
#include "ron_bytes.h"
#include "ron_err.h"

#define HDR_LEN (2u + DHT_ID_LEN + DHT_TOKEN_LEN) /* op, flags, sender, token */

/* ---- ids ---- */

unsigned
dht_id_common_bits(const uint8_t a[static DHT_ID_LEN], const uint8_t b[static DHT_ID_LEN])
{
    for (unsigned i = 0; i < DHT_ID_LEN; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return i * 8 + (unsigned)__builtin_clzll(__builtin_bswap64(x ^ y));
    }
    return DHT_ID_LEN * 8;
}

int
dht_id_distance_cmp(const uint8_t target[static DHT_ID_LEN], const uint8_t a[static DHT_ID_LEN],
                    const uint8_t b[static DHT_ID_LEN])
{
    for (unsigned i = 0; i < DHT_ID_LEN; i++) {
        uint8_t da = a[i] ^ target[i], db = b[i] ^ target[i];
        if (da != db)
            return da < db ? -1 : 1;
    }
    return 0;
}

void
dht_id_of_key(uint8_t id_out[static DHT_ID_LEN], const uint8_t pk[static NAME_KEY_LEN])
{
    blake3_hasher h;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, pk, NAME_KEY_LEN);
    blake3_hasher_finalize(&h, id_out, DHT_ID_LEN);
}

void
dht_id_of_name(uint8_t id_out[static DHT_ID_LEN], const char *name)
{
    blake3_hasher h;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, name, strlen(name));
    blake3_hasher_finalize(&h, id_out, DHT_ID_LEN);
}

bool
dht__addr_valid(const dht_addr_t *a)
{
    if (a->port == 0)
        return false;
    if (a->family == 4) {
        for (unsigned i = 4; i < 16; i++)
            if (a->ip[i] != 0)
                return false;
        return true;
    }
    return a->family == 6;
}

bool
dht_addr_equal(const dht_addr_t *a, const dht_addr_t *b)
{
    return a->family == b->family && a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

size_t
dht__addr_wire_len(const dht_addr_t *a)
{
    return a->family == 4 ? 7u : 19u;
}

/* ---- writer ---- */

typedef struct {
    uint8_t *p;
    size_t left;
    bool over; /* sticky: something did not fit */
} wr_t;

static void
wr_bytes(wr_t *w, const void *src, size_t n)
{
    if (w->over || w->left < n) {
        w->over = true;
        return;
    }
    memcpy(w->p, src, n);
    w->p += n;
    w->left -= n;
}

static void
wr_u8(wr_t *w, uint8_t v)
{
    wr_bytes(w, &v, 1);
}

static void
wr_u16(wr_t *w, uint16_t v)
{
    uint8_t b[2];
    ron_put_u16be(b, v);
    wr_bytes(w, b, 2);
}

static void
wr_u32(wr_t *w, uint32_t v)
{
    uint8_t b[4];
    ron_put_u32be(b, v);
    wr_bytes(w, b, 4);
}

static void
wr_u64(wr_t *w, uint64_t v)
{
    uint8_t b[8];
    ron_put_u64be(b, v);
    wr_bytes(w, b, 8);
}

static void
wr_addr(wr_t *w, const dht_addr_t *a)
{
    wr_u8(w, a->family);
    wr_bytes(w, a->ip, a->family == 4 ? 4 : 16);
    wr_u16(w, a->port);
}

/* Provider record body; with_key false inside a FIND_VALUE reply (key = target). */
static void
wr_provider(wr_t *w, const dht_provider_t *p, bool with_key)
{
    if (with_key)
        wr_bytes(w, p->key, DHT_ID_LEN);
    wr_bytes(w, p->pk, NAME_KEY_LEN);
    wr_addr(w, &p->addr);
    wr_u64(w, p->ts);
    wr_u32(w, p->ttl);
    wr_bytes(w, p->sig, NAME_SIG_LEN);
}

static int
wr_name(wr_t *w, const name_record_t *rec)
{
    uint8_t buf[NAME_RECORD_MAX];
    ssize_t n = name_record_encode(rec, buf, sizeof buf);
    if (n < 0)
        return RON_EINVAL;
    wr_u16(w, (uint16_t)n);
    wr_bytes(w, buf, (size_t)n);
    return 0;
}

static bool
msg_flags_ok(const dht_msg_t *m)
{
    unsigned allowed;
    if (!m->reply)
        allowed = DHT_MSG_F_TOKEN | (m->op == DHT_OP_PROVIDE ? DHT_MSG_F_NAME : 0);
    else
        allowed = DHT_MSG_F_TRUNCATED | (m->op == DHT_OP_FIND_VALUE ? DHT_MSG_F_NAME : 0);
    return (m->flags & ~allowed) == 0;
}

static bool
status_ok(const dht_msg_t *m)
{
    if (!m->reply)
        return m->status == 0;
    if (m->op != DHT_OP_PROVIDE)
        return m->status == 200;
    return m->status == 200 || m->status == 400 || m->status == 403 || m->status == 409 ||
           m->status == 429;
}

static int
msg_body_encode(const dht_msg_t *m, wr_t *w)
{
    wr_u8(w, m->op);
    wr_u8(w, m->flags);
    wr_bytes(w, m->sender, DHT_ID_LEN);
    wr_bytes(w, m->token, DHT_TOKEN_LEN);
    switch (m->op) {
    case DHT_OP_PING:
        break;
    case DHT_OP_FIND_NODE:
        if (!m->reply) {
            wr_bytes(w, m->target, DHT_ID_LEN);
            break;
        }
        if (m->n_contacts > DHT_K)
            return RON_EINVAL;
        wr_u8(w, m->n_contacts);
        for (unsigned i = 0; i < m->n_contacts; i++) {
            if (!dht__addr_valid(&m->contacts[i].addr))
                return RON_EINVAL;
            wr_bytes(w, m->contacts[i].id, DHT_ID_LEN);
            wr_addr(w, &m->contacts[i].addr);
        }
        break;
    case DHT_OP_FIND_VALUE:
        wr_bytes(w, m->target, DHT_ID_LEN);
        if (!m->reply)
            break;
        if ((m->flags & DHT_MSG_F_NAME) && wr_name(w, &m->name) < 0)
            return RON_EINVAL;
        if (m->n_providers > DHT_MSG_MAX_PROVIDERS || m->n_contacts > DHT_K)
            return RON_EINVAL;
        wr_u8(w, m->n_providers);
        for (unsigned i = 0; i < m->n_providers; i++) {
            if (!dht__addr_valid(&m->providers[i].addr))
                return RON_EINVAL;
            wr_provider(w, &m->providers[i], false);
        }
        wr_u8(w, m->n_contacts);
        for (unsigned i = 0; i < m->n_contacts; i++) {
            if (!dht__addr_valid(&m->contacts[i].addr))
                return RON_EINVAL;
            wr_bytes(w, m->contacts[i].id, DHT_ID_LEN);
            wr_addr(w, &m->contacts[i].addr);
        }
        break;
    case DHT_OP_PROVIDE:
        if (m->reply)
            break;
        if (m->flags & DHT_MSG_F_NAME) {
            if (wr_name(w, &m->name) < 0)
                return RON_EINVAL;
        } else {
            if (m->n_providers != 1 || !dht__addr_valid(&m->providers[0].addr))
                return RON_EINVAL;
            wr_provider(w, &m->providers[0], true);
        }
        break;
    default:
        return RON_EINVAL;
    }
    if (m->pad > 0) {
        if (m->reply)
            return RON_EINVAL;
        if (w->left < m->pad)
            w->over = true;
        else {
            memset(w->p, 0, m->pad);
            w->p += m->pad;
            w->left -= m->pad;
        }
    }
    return 0;
}

ssize_t
dht_msg_encode(const dht_msg_t *m, uint8_t *out, size_t cap)
{
    oap_frame_t f;
    size_t limit = cap < DHT_MAX_DATAGRAM ? cap : DHT_MAX_DATAGRAM;
    wr_t w;
    int rc;

    if (limit < OAP_HDR_LEN)
        return RON_ETOOBIG;
    if (!msg_flags_ok(m) || !status_ok(m))
        return RON_EINVAL;
    w.p = out + OAP_HDR_LEN;
    w.left = limit - OAP_HDR_LEN;
    w.over = false;
    rc = msg_body_encode(m, &w);
    if (rc < 0)
        return rc;
    if (w.over)
        return RON_ETOOBIG;
    memset(&f, 0, sizeof f);
    f.flags = m->reply ? (OAP_F_RESP | OAP_F_END) : (OAP_F_REQ | OAP_F_START | OAP_F_END);
    f.code = m->status;
    f.app_proto_id = OAP_APP_DHT;
    f.corr_id = m->txid;
    f.payload_len = (size_t)(w.p - (out + OAP_HDR_LEN));
    rc = oap_header_encode(&f, DHT_MAX_DATAGRAM, out);
    if (rc < 0)
        return rc;
    return (ssize_t)(OAP_HDR_LEN + f.payload_len);
}

/* ---- reader ---- */

static int
rd_addr(ron_rd_t *r, dht_addr_t *a)
{
    const uint8_t *p;
    memset(a, 0, sizeof *a);
    if (r->left < 1)
        return RON_EPROTO;
    a->family = r->p[0];
    r->p++;
    r->left--;
    if (a->family != 4 && a->family != 6)
        return RON_EPROTO;
    if (ron_rd_bytes(r, a->family == 4 ? 4 : 16, &p) < 0 || ron_rd_u16be(r, &a->port) < 0)
        return RON_EPROTO;
    memcpy(a->ip, p, a->family == 4 ? 4 : 16);
    return a->port == 0 ? RON_EPROTO : 0;
}

static int
rd_copy(ron_rd_t *r, void *dst, size_t n)
{
    const uint8_t *p;
    if (ron_rd_bytes(r, n, &p) < 0)
        return RON_EPROTO;
    memcpy(dst, p, n);
    return 0;
}

static int
rd_u8(ron_rd_t *r, uint8_t *v)
{
    return rd_copy(r, v, 1);
}

static int
rd_provider(ron_rd_t *r, dht_provider_t *p, bool with_key)
{
    if ((with_key && rd_copy(r, p->key, DHT_ID_LEN) < 0) || rd_copy(r, p->pk, NAME_KEY_LEN) < 0 ||
        rd_addr(r, &p->addr) < 0 || ron_rd_u64be(r, &p->ts) < 0 || ron_rd_u32be(r, &p->ttl) < 0 ||
        rd_copy(r, p->sig, NAME_SIG_LEN) < 0)
        return RON_EPROTO;
    return 0;
}

static int
rd_name(ron_rd_t *r, name_record_t *rec)
{
    uint16_t n;
    const uint8_t *p;
    if (ron_rd_u16be(r, &n) < 0 || n > NAME_RECORD_MAX || ron_rd_bytes(r, n, &p) < 0)
        return RON_EPROTO;
    return name_record_decode(rec, p, n, NULL) < 0 ? RON_EPROTO : 0;
}

static int
rd_contacts(ron_rd_t *r, dht_msg_t *m)
{
    if (rd_u8(r, &m->n_contacts) < 0 || m->n_contacts > DHT_K)
        return RON_EPROTO;
    for (unsigned i = 0; i < m->n_contacts; i++)
        if (rd_copy(r, m->contacts[i].id, DHT_ID_LEN) < 0 || rd_addr(r, &m->contacts[i].addr) < 0)
            return RON_EPROTO;
    return 0;
}

static int
msg_body_decode(dht_msg_t *m, ron_rd_t *r)
{
    if (rd_u8(r, &m->op) < 0 || rd_u8(r, &m->flags) < 0 || rd_copy(r, m->sender, DHT_ID_LEN) < 0 ||
        rd_copy(r, m->token, DHT_TOKEN_LEN) < 0)
        return RON_EPROTO;
    if (m->op < DHT_OP_PING || m->op > DHT_OP_PROVIDE || !msg_flags_ok(m) || !status_ok(m))
        return RON_EPROTO;
    if (!m->reply && !(m->flags & DHT_MSG_F_TOKEN))
        for (unsigned i = 0; i < DHT_TOKEN_LEN; i++)
            if (m->token[i] != 0)
                return RON_EPROTO; /* an absent token is all zero: one spelling */
    switch (m->op) {
    case DHT_OP_PING:
        return 0;
    case DHT_OP_FIND_NODE:
        if (!m->reply)
            return rd_copy(r, m->target, DHT_ID_LEN);
        return rd_contacts(r, m);
    case DHT_OP_FIND_VALUE:
        if (rd_copy(r, m->target, DHT_ID_LEN) < 0)
            return RON_EPROTO;
        if (!m->reply)
            return 0;
        if ((m->flags & DHT_MSG_F_NAME) && rd_name(r, &m->name) < 0)
            return RON_EPROTO;
        if (rd_u8(r, &m->n_providers) < 0 || m->n_providers > DHT_MSG_MAX_PROVIDERS)
            return RON_EPROTO;
        for (unsigned i = 0; i < m->n_providers; i++) {
            if (rd_provider(r, &m->providers[i], false) < 0)
                return RON_EPROTO;
            memcpy(m->providers[i].key, m->target, DHT_ID_LEN);
        }
        return rd_contacts(r, m);
    default: /* DHT_OP_PROVIDE */
        if (m->reply)
            return 0;
        if (m->flags & DHT_MSG_F_NAME)
            return rd_name(r, &m->name);
        m->n_providers = 1;
        return rd_provider(r, &m->providers[0], true);
    }
}

int
dht_msg_decode(dht_msg_t *m_out, const uint8_t *buf, size_t len)
{
    static const uint8_t zero16[16];
    oap_frame_t f;
    ssize_t n;
    ron_rd_t r;
    int rc;

    if (len > DHT_MAX_DATAGRAM)
        return RON_ETOOBIG;
    n = oap_frame_parse(buf, len, DHT_MAX_DATAGRAM, &f);
    if (n < 0 || (size_t)n != len)
        return RON_EPROTO;
    if (f.app_proto_id != OAP_APP_DHT || f.cap_len != 0 || memcmp(f.tenant_id, zero16, 16) != 0)
        return RON_EPROTO;
    memset(m_out, 0, offsetof(dht_msg_t, contacts));
    m_out->n_contacts = 0;
    m_out->n_providers = 0;
    m_out->pad = 0;
    if (f.flags == (OAP_F_REQ | OAP_F_START | OAP_F_END))
        m_out->reply = false;
    else if (f.flags == (OAP_F_RESP | OAP_F_END))
        m_out->reply = true;
    else
        return RON_EPROTO;
    m_out->txid = f.corr_id;
    m_out->status = f.code;
    r.p = f.payload;
    r.left = f.payload_len;
    rc = msg_body_decode(m_out, &r);
    if (rc < 0)
        return RON_EPROTO;
    if (r.left > 0) {
        if (m_out->reply)
            return RON_EPROTO;
        for (size_t i = 0; i < r.left; i++)
            if (r.p[i] != 0)
                return RON_EPROTO;
        m_out->pad = (uint16_t)r.left;
    }
    return 0;
}

/* ---- provider records ---- */

ssize_t
dht_provider_signing_bytes(const dht_provider_t *p, uint8_t buf[static DHT_PROVIDER_SIGNING_MAX])
{
    wr_t w = {buf, DHT_PROVIDER_SIGNING_MAX, false};
    if (!dht__addr_valid(&p->addr))
        return RON_EINVAL;
    wr_bytes(&w, DHT_PROVIDER_DOMAIN, sizeof DHT_PROVIDER_DOMAIN); /* with its NUL */
    wr_bytes(&w, p->key, DHT_ID_LEN);
    wr_bytes(&w, p->pk, NAME_KEY_LEN);
    wr_addr(&w, &p->addr);
    wr_u64(&w, p->ts);
    wr_u32(&w, p->ttl);
    if (w.over)
        return RON_EINVAL; /* defensive: the maximum fits by construction */
    return (ssize_t)(w.p - buf);
}

int
dht_provider_sign(dht_provider_t *p, const uint8_t sk[static NAME_SECRET_KEY_LEN])
{
    uint8_t buf[DHT_PROVIDER_SIGNING_MAX];
    ssize_t n;

    if (sodium_init() < 0)
        return RON_EAUTH;
    memcpy(p->pk, sk + 32, NAME_KEY_LEN); /* libsodium: sk = seed || pk */
    n = dht_provider_signing_bytes(p, buf);
    if (n < 0)
        return (int)n;
    if (crypto_sign_detached(p->sig, NULL, buf, (unsigned long long)n, sk) != 0)
        return RON_EAUTH;
    return 0;
}

int
dht_provider_verify(const dht_provider_t *p, int64_t now_s)
{
    uint8_t buf[DHT_PROVIDER_SIGNING_MAX];
    ssize_t n = dht_provider_signing_bytes(p, buf);

    if (n < 0 || p->ttl > DHT_PROVIDER_TTL_S)
        return RON_EDHTRECORD;
    if (sodium_init() < 0)
        return RON_EAUTH;
    if (crypto_sign_verify_detached(p->sig, buf, (unsigned long long)n, p->pk) != 0)
        return RON_EDHTSIG;
    if (now_s < 0 || p->ts > (uint64_t)now_s + DHT_MAX_FUTURE_S)
        return RON_EDHTEXPIRED;
    if (p->ttl != 0 && p->ts + p->ttl <= (uint64_t)now_s)
        return RON_EDHTEXPIRED;
    return 0;
}
