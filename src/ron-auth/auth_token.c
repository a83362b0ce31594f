/*
 * auth_token.c - the v1 macaroon codec: base64, packets, the HMAC-SHA256
 * chain, offline attenuation, and the strict parse that tools use.
 * Outside bytes are read only through lengths checked against the
 * AUTH_MAX_* limits first; the decoded token lives in a caller buffer of
 * AUTH_MAX_RAW bytes and the parse is a set of views into it (no
 * allocation). Packets must come in the order libmacaroons writes them:
 * location (optional), identifier, cid..., signature, and nothing after.
 */
/* SHA256_Init/Update/Final: deprecated in OpenSSL 3 but the cheapest way to
 * the SHA-NI code for the many tiny messages of a macaroon chain (EVP costs
 * a context per call). */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>

#include "auth_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* ---- base64 ---- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0..63, or 0xff for a byte outside both alphabets; filled once. */
static uint8_t b64_val[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void
b64_init(void)
{
    memset(b64_val, 0xff, sizeof b64_val);
    for (int i = 0; i < 64; i++)
        b64_val[(unsigned char)b64url[i]] = (uint8_t)i;
    b64_val['+'] = 62;
    b64_val['/'] = 63;
}

long
auth__b64_decode(const char *token, size_t len, uint8_t raw[static AUTH_MAX_RAW])
{
    size_t n = len, o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    pthread_once(&b64_once, b64_init);
    if (len == 0 || len > AUTH_MAX_TOKEN)
        return RON_ECAPFORMAT;
    if (token[n - 1] == '=') { /* padding: then the length is a multiple of 4 */
        if (len % 4 != 0)
            return RON_ECAPFORMAT;
        n--;
        if (token[n - 1] == '=')
            n--;
    }
    if (n % 4 == 1)
        return RON_ECAPFORMAT;
    for (size_t i = 0; i < n; i++) {
        uint8_t v = b64_val[(unsigned char)token[i]];
        if (v == 0xff)
            return RON_ECAPFORMAT;
        acc = acc << 6 | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= AUTH_MAX_RAW) /* defensive: len <= AUTH_MAX_TOKEN bounds o */
                return RON_ECAPFORMAT;
            raw[o++] = (uint8_t)(acc >> bits);
        }
    }
    if ((acc & ((1u << bits) - 1u)) != 0) /* non-canonical trailing bits */
        return RON_ECAPFORMAT;
    return (long)o;
}

long
auth__b64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t need = len / 3 * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
    size_t o = 0, i = 0;

    if (need + 1 > cap)
        return RON_ETOOBIG;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = '\0';
    return (long)o;
}

/* ---- packets ---- */

typedef enum { PK_LOCATION, PK_IDENTIFIER, PK_CID, PK_SIGNATURE, PK_OTHER } pk_kind_t;

static pk_kind_t
pk_kind(const uint8_t *k, size_t len)
{
    if (len == 8 && memcmp(k, "location", 8) == 0)
        return PK_LOCATION;
    if (len == 10 && memcmp(k, "identifier", 10) == 0)
        return PK_IDENTIFIER;
    if (len == 3 && memcmp(k, "cid", 3) == 0)
        return PK_CID;
    if (len == 9 && memcmp(k, "signature", 9) == 0)
        return PK_SIGNATURE;
    return PK_OTHER; /* vid, cl (third-party caveats) and anything else: refused */
}

/* Read one packet at raw[*off..len): key and value views. */
static int
pk_next(const uint8_t *raw, size_t len, size_t *off, pk_kind_t *kind, auth__view_t *val)
{
    size_t left = len - *off, plen = 0, sp;
    const uint8_t *p = raw + *off;

    if (left < 4)
        return RON_ECAPFORMAT;
    for (int i = 0; i < 4; i++) {
        int d = ron_hex_digit((char)p[i]);
        if (d < 0)
            return RON_ECAPFORMAT;
        plen = plen << 4 | (size_t)d;
    }
    if (plen < 4 + 3 || plen > left || p[plen - 1] != '\n') /* "k v\n" at least: 1+1+0+1 */
        return RON_ECAPFORMAT;
    for (sp = 4; sp < plen - 1 && p[sp] != ' '; sp++)
        ;
    if (sp == 4 || sp >= plen - 1)
        return RON_ECAPFORMAT;
    *kind = pk_kind(p + 4, sp - 4);
    val->p = p + sp + 1;
    val->len = plen - 1 - (sp + 1);
    *off += plen;
    return 0;
}

int
auth__packets_parse(const uint8_t *raw, size_t len, auth__parsed_t *out)
{
    size_t off = 0;
    pk_kind_t kind;
    auth__view_t v;

    memset(out, 0, sizeof *out);
    if (pk_next(raw, len, &off, &kind, &v) < 0)
        return RON_ECAPFORMAT;
    if (kind == PK_LOCATION) {
        if (v.len > AUTH_MAX_LOCATION)
            return RON_ECAPFORMAT;
        out->has_location = true;
        out->location = v;
        if (pk_next(raw, len, &off, &kind, &v) < 0)
            return RON_ECAPFORMAT;
    }
    if (kind != PK_IDENTIFIER || v.len == 0 || v.len > AUTH_ID_MAX)
        return RON_ECAPFORMAT;
    out->id = v;
    for (;;) {
        if (pk_next(raw, len, &off, &kind, &v) < 0)
            return RON_ECAPFORMAT;
        if (kind != PK_CID)
            break;
        if (out->n_caveats == AUTH_MAX_CAVEATS || v.len == 0 || v.len > AUTH_MAX_CAVEAT_LEN)
            return RON_ECAPFORMAT;
        out->caveats[out->n_caveats++] = v;
    }
    if (kind != PK_SIGNATURE || v.len != AUTH_SIG_LEN || off != len)
        return RON_ECAPFORMAT;
    out->sig = v.p;
    return 0;
}

int
auth__token_split(const char *token, size_t len, uint8_t raw[static AUTH_MAX_RAW],
                  auth__parsed_t *out)
{
    long n = auth__b64_decode(token, len, raw);

    if (n < 0)
        return (int)n;
    return auth__packets_parse(raw, (size_t)n, out);
}

/* Append the packet "LLLLkey value\n" to buf[*o..cap); key is klen bytes. */
static int
pk_put(uint8_t *buf, size_t cap, size_t *o, const char *key, size_t klen, const uint8_t *val,
       size_t len)
{
    static const char hexd[] = "0123456789abcdef";
    size_t plen = 4 + klen + 1 + len + 1;
    uint8_t *p = buf + *o;

    if (plen > 0xffff || plen > cap - *o)
        return RON_ETOOBIG;
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)hexd[(plen >> (12 - 4 * i)) & 0xf];
    memcpy(p + 4, key, klen);
    p[4 + klen] = ' ';
    if (len > 0)
        memcpy(p + 5 + klen, val, len);
    p[plen - 1] = '\n';
    *o += plen;
    return 0;
}

#define PK_PUT(buf, o, key, val, len)                                                              \
    pk_put((buf), sizeof(buf), (o), (key), sizeof(key) - 1, (val), (len))

long
auth__token_encode(const auth__parsed_t *p, const uint8_t sig[static AUTH_SIG_LEN], char *out,
                   size_t cap)
{
    uint8_t raw[AUTH_MAX_RAW];
    size_t o = 0;
    int rc = 0;

    if (p->has_location)
        rc = PK_PUT(raw, &o, "location", p->location.p, p->location.len);
    if (rc == 0)
        rc = PK_PUT(raw, &o, "identifier", p->id.p, p->id.len);
    for (size_t i = 0; rc == 0 && i < p->n_caveats; i++)
        rc = PK_PUT(raw, &o, "cid", p->caveats[i].p, p->caveats[i].len);
    if (rc == 0)
        rc = PK_PUT(raw, &o, "signature", sig, AUTH_SIG_LEN);
    if (rc < 0)
        return rc;
    long n = auth__b64_encode(raw, o, out, cap < AUTH_MAX_TOKEN + 1 ? cap : AUTH_MAX_TOKEN + 1);
    return n < 0 ? RON_ETOOBIG : n;
}

/* ---- HMAC chain ---- */

void
auth__hmac(uint8_t out[static AUTH_SIG_LEN], const uint8_t key[static AUTH_SIG_LEN],
           const uint8_t *msg, size_t len)
{
    uint8_t pad[SHA256_CBLOCK], inner[SHA256_DIGEST_LENGTH];
    SHA256_CTX c;

    for (int i = 0; i < AUTH_SIG_LEN; i++)
        pad[i] = key[i] ^ 0x36;
    memset(pad + AUTH_SIG_LEN, 0x36, sizeof pad - AUTH_SIG_LEN);
    SHA256_Init(&c);
    SHA256_Update(&c, pad, sizeof pad);
    SHA256_Update(&c, msg, len);
    SHA256_Final(inner, &c);
    for (int i = 0; i < AUTH_SIG_LEN; i++)
        pad[i] = key[i] ^ 0x5c;
    memset(pad + AUTH_SIG_LEN, 0x5c, sizeof pad - AUTH_SIG_LEN);
    SHA256_Init(&c);
    SHA256_Update(&c, pad, sizeof pad);
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(&c, sizeof c);
}

void
auth__derive_key(uint8_t out[static AUTH_SIG_LEN], const uint8_t *key, size_t len)
{
    uint8_t gen[AUTH_SIG_LEN] = "macaroons-key-generator"; /* zero-padded, as libmacaroons */

    auth__hmac(out, gen, key, len);
}

void
auth__chain(uint8_t out[static AUTH_SIG_LEN], const uint8_t derived[static AUTH_SIG_LEN],
            const auth__parsed_t *p)
{
    auth__hmac(out, derived, p->id.p, p->id.len);
    for (size_t i = 0; i < p->n_caveats; i++)
        auth__hmac(out, out, p->caveats[i].p, p->caveats[i].len);
}

/* ---- tokens ---- */

int
auth__fold(const auth__parsed_t *p, auth_grant_t *g, int *bad_out)
{
    auth_grant_init(g);
    *bad_out = -1;
    for (size_t i = 0; i < p->n_caveats; i++)
        if (auth_caveat_apply(g, (const char *)p->caveats[i].p, p->caveats[i].len) < 0) {
            *bad_out = (int)i;
            return RON_ECAPCAVEAT;
        }
    return 0;
}

int
auth_token_parse(const char *token, size_t len, auth_token_t *out)
{
    uint8_t raw[AUTH_MAX_RAW];
    auth__parsed_t p;
    int bad, rc;

    memset(out, 0, sizeof *out);
    rc = auth__token_split(token, len, raw, &p);
    if (rc < 0)
        return rc;
    if (auth_id_parse((const char *)p.id.p, p.id.len, &out->id) < 0)
        return RON_ECAPFORMAT;
    memcpy(out->id_str, p.id.p, p.id.len);
    if (p.has_location)
        memcpy(out->location, p.location.p, p.location.len);
    out->n_caveats = p.n_caveats;
    for (size_t i = 0; i < p.n_caveats; i++)
        memcpy(out->caveats[i], p.caveats[i].p, p.caveats[i].len);
    memcpy(out->sig, p.sig, AUTH_SIG_LEN);
    return auth__fold(&p, &out->grant, &bad);
}

long
auth_attenuate(const char *token, size_t len, const char *const *caveats, size_t n, char *out,
               size_t cap)
{
    uint8_t raw[AUTH_MAX_RAW], sig[AUTH_SIG_LEN];
    auth__parsed_t p;
    auth_grant_t g;
    int rc, bad;

    rc = auth__token_split(token, len, raw, &p);
    if (rc < 0)
        return rc;
    if (auth_id_parse((const char *)p.id.p, p.id.len, &(auth_id_t){0}) < 0)
        return RON_ECAPFORMAT;
    if (auth__fold(&p, &g, &bad) < 0)
        return RON_ECAPCAVEAT;
    if (n > AUTH_MAX_CAVEATS - p.n_caveats)
        return RON_ECAPFORMAT;
    memcpy(sig, p.sig, AUTH_SIG_LEN);
    for (size_t i = 0; i < n; i++) {
        size_t clen = strlen(caveats[i]);
        if (clen > AUTH_MAX_CAVEAT_LEN || auth_caveat_apply(&g, caveats[i], clen) < 0)
            return RON_ECAPCAVEAT;
        p.caveats[p.n_caveats].p = (const uint8_t *)caveats[i];
        p.caveats[p.n_caveats++].len = clen;
        auth__hmac(sig, sig, (const uint8_t *)caveats[i], clen);
    }
    return auth__token_encode(&p, sig, out, cap);
}
