/*
 * aud_record.c - the canonical form of audit records and checkpoints:
 * compact JSON lines with a fixed key order (docs/protocol/audit.md). The
 * parsers accept only that exact form: a record is parsed field by field and
 * then re-encoded, and any byte difference makes it malformed, so one event
 * has one encoding and one hash. Both parsers read outside bytes (a log on
 * disk may have been edited by anyone) and have a fuzz target.
 */
#include <blake3.h>
#include <sodium.h>
#include <string.h>

#include "aud_internal.h"
#include "ron_err.h"
#include "ron_utf8.h"
#include "ron_util.h"

const uint8_t aud_genesis[AUD_HASH_LEN] = {0};

static const char *const kind_names[AUD_KIND_COUNT] = {
    "cap_issued", "cap_revoked", "policy_changed", "name_published",
    "pin",        "unpin",       "admin",          "rejected",
};
static const char *const outcome_names[AUD_OUTCOME_COUNT] = {"ok", "denied", "error"};

const char *
aud_kind_name(aud_kind_t kind)
{
    return (unsigned)kind < AUD_KIND_COUNT ? kind_names[kind] : NULL;
}

const char *
aud_outcome_name(aud_outcome_t outcome)
{
    return (unsigned)outcome < AUD_OUTCOME_COUNT ? outcome_names[outcome] : NULL;
}

/* ---- writer ---- */

typedef struct {
    char *p;
    size_t len, cap;
    bool over;
} wbuf_t;

static void
w_raw(wbuf_t *w, const char *s, size_t n)
{
    if (n == 0)
        return; /* s may be NULL for an absent field */
    if (w->over || n > w->cap - w->len) {
        w->over = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void
w_lit(wbuf_t *w, const char *s)
{
    w_raw(w, s, strlen(s));
}

static void
w_u64(wbuf_t *w, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    w_raw(w, tmp + i, sizeof tmp - i);
}

static void
w_hex(wbuf_t *w, const uint8_t *b, size_t n)
{
    char tmp[2 * 64 + 1];

    ron_hex_encode(tmp, b, n);
    w_raw(w, tmp, 2 * n);
}

/* A JSON string: only '"', '\\', control bytes and DEL are escaped. */
static void
w_str(wbuf_t *w, const char *s, size_t n)
{
    static const char hx[] = "0123456789abcdef";

    size_t run = 0; /* bytes before i that need no escape, copied in one go */

    w_raw(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '"' && c != '\\' && c >= 0x20 && c != 0x7f) {
            run++;
            continue;
        }
        w_raw(w, s + i - run, run);
        run = 0;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            w_raw(w, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
            w_raw(w, e, 6);
        }
    }
    w_raw(w, s + n - run, run);
    w_raw(w, "\"", 1);
}

static int
check_str(const char *s, size_t max, size_t *len_out)
{
    size_t n = s == NULL ? 0 : strlen(s);

    if (n > max)
        return RON_ETOOBIG;
    if (n > 0 && !ron_utf8_valid(s, n))
        return RON_EINVAL;
    *len_out = n;
    return 0;
}

static bool
tenant_ok(const char *t, size_t n)
{
    if (n == 0)
        return true;
    if (n != AUD_TENANT_HEX_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
            return false;
    return true;
}

int
aud_record_encode(const aud_event_t *ev, uint64_t seq, const uint8_t prev[static AUD_HASH_LEN],
                  char *out, size_t outcap, uint8_t hash_out[static AUD_HASH_LEN])
{
    size_t la, lt, lo, lg, lr;
    wbuf_t w = {out, 0, outcap < AUD_MAX_RECORD ? outcap : AUD_MAX_RECORD, false};
    blake3_hasher h;
    int rc;

    if (aud_kind_name(ev->kind) == NULL || aud_outcome_name(ev->outcome) == NULL)
        return RON_EINVAL;
    if ((rc = check_str(ev->actor, AUD_MAX_ACTOR, &la)) < 0 ||
        (rc = check_str(ev->tenant, AUD_TENANT_HEX_LEN, &lt)) < 0 ||
        (rc = check_str(ev->op, AUD_MAX_OP, &lo)) < 0 ||
        (rc = check_str(ev->target, AUD_MAX_TARGET, &lg)) < 0 ||
        (rc = check_str(ev->reason, AUD_MAX_REASON, &lr)) < 0)
        return rc;
    if (!tenant_ok(ev->tenant, lt))
        return RON_EINVAL;
    w_lit(&w, "{\"seq\":");
    w_u64(&w, seq);
    w_lit(&w, ",\"ts\":");
    w_u64(&w, ev->ts_ms);
    w_lit(&w, ",\"kind\":\"");
    w_lit(&w, aud_kind_name(ev->kind));
    w_lit(&w, "\",\"actor\":");
    w_str(&w, ev->actor, la);
    w_lit(&w, ",\"tenant\":");
    w_str(&w, ev->tenant, lt);
    w_lit(&w, ",\"op\":");
    w_str(&w, ev->op, lo);
    w_lit(&w, ",\"target\":");
    w_str(&w, ev->target, lg);
    w_lit(&w, ",\"outcome\":\"");
    w_lit(&w, aud_outcome_name(ev->outcome));
    w_lit(&w, "\",\"reason\":");
    w_str(&w, ev->reason, lr);
    w_lit(&w, ",\"prev\":\"");
    w_hex(&w, prev, AUD_HASH_LEN);
    w_lit(&w, "\"");
    if (w.over)
        return RON_ETOOBIG;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, w.p, w.len);
    blake3_hasher_finalize(&h, hash_out, AUD_HASH_LEN);
    w_lit(&w, ",\"hash\":\"");
    w_hex(&w, hash_out, AUD_HASH_LEN);
    w_lit(&w, "\"}\n");
    if (w.over)
        return RON_ETOOBIG;
    return (int)w.len;
}

/* ---- reader ---- */

typedef struct {
    const char *p;
    size_t left;
} rd_t;

static bool
r_lit(rd_t *r, const char *s)
{
    size_t n = strlen(s);

    if (r->left < n || memcmp(r->p, s, n) != 0)
        return false;
    r->p += n;
    r->left -= n;
    return true;
}

/* Canonical decimal: no sign, no leading zero, fits in 64 bits. */
static bool
r_u64(rd_t *r, uint64_t *v_out)
{
    uint64_t v = 0;
    size_t i = 0;

    while (i < r->left && r->p[i] >= '0' && r->p[i] <= '9') {
        unsigned d = (unsigned)(r->p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        i++;
    }
    if (i == 0 || (i > 1 && r->p[0] == '0'))
        return false;
    r->p += i;
    r->left -= i;
    *v_out = v;
    return true;
}

/* A string into out (max bytes + NUL); escapes as w_str writes them only. */
static bool
r_str(rd_t *r, char *out, size_t max)
{
    size_t n = 0;

    if (!r_lit(r, "\""))
        return false;
    for (;;) {
        unsigned char c;
        if (r->left == 0)
            return false;
        c = (unsigned char)*r->p;
        r->p++;
        r->left--;
        if (c == '"')
            break;
        if (c == '\\') {
            if (r->left == 0)
                return false;
            c = (unsigned char)*r->p;
            r->p++;
            r->left--;
            if (c == 'u') {
                int hi, lo;
                if (r->left < 4 || r->p[0] != '0' || r->p[1] != '0')
                    return false;
                hi = ron_hex_digit(r->p[2]);
                lo = ron_hex_digit(r->p[3]);
                if (hi < 0 || lo < 0)
                    return false;
                c = (unsigned char)(hi << 4 | lo);
                r->p += 4;
                r->left -= 4;
            } else if (c != '"' && c != '\\') {
                return false;
            }
        }
        if (n >= max)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return true;
}

static bool
r_name(rd_t *r, const char *const *names, unsigned count, unsigned *v_out)
{
    char tmp[32];

    if (!r_str(r, tmp, sizeof tmp - 1))
        return false;
    for (unsigned i = 0; i < count; i++)
        if (strcmp(tmp, names[i]) == 0) {
            *v_out = i;
            return true;
        }
    return false;
}

int
aud__hex_lower(uint8_t *out, size_t len, const char *hex)
{
    for (size_t i = 0; i < 2 * len; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return RON_EAUDIT;
    return ron_hex_decode(out, len, hex, 2 * len) < 0 ? RON_EAUDIT : 0;
}

static bool
r_hex(rd_t *r, uint8_t *out, size_t n)
{
    if (!r_lit(r, "\"") || r->left < 2 * n + 1 || aud__hex_lower(out, n, r->p) < 0)
        return false;
    r->p += 2 * n;
    r->left -= 2 * n;
    return r_lit(r, "\"");
}

int
aud_record_parse(const char *line, size_t len, aud_record_t *rec)
{
    rd_t r = {line, len};
    unsigned kind, outcome;
    char again[AUD_MAX_RECORD];
    uint8_t h[AUD_HASH_LEN];
    aud_event_t ev;
    size_t body;
    int n;

    if (len > 0 && line[len - 1] == '\n')
        r.left = --len;
    if (len >= AUD_MAX_RECORD)
        return RON_EAUDIT;
    if (!r_lit(&r, "{\"seq\":") || !r_u64(&r, &rec->seq) || !r_lit(&r, ",\"ts\":") ||
        !r_u64(&r, &rec->ts_ms) || !r_lit(&r, ",\"kind\":") ||
        !r_name(&r, kind_names, AUD_KIND_COUNT, &kind) || !r_lit(&r, ",\"actor\":") ||
        !r_str(&r, rec->actor, AUD_MAX_ACTOR) || !r_lit(&r, ",\"tenant\":") ||
        !r_str(&r, rec->tenant, AUD_TENANT_HEX_LEN) || !r_lit(&r, ",\"op\":") ||
        !r_str(&r, rec->op, AUD_MAX_OP) || !r_lit(&r, ",\"target\":") ||
        !r_str(&r, rec->target, AUD_MAX_TARGET) || !r_lit(&r, ",\"outcome\":") ||
        !r_name(&r, outcome_names, AUD_OUTCOME_COUNT, &outcome) ||
        !r_lit(&r, ",\"reason\":") || !r_str(&r, rec->reason, AUD_MAX_REASON) ||
        !r_lit(&r, ",\"prev\":") || !r_hex(&r, rec->prev, AUD_HASH_LEN))
        return RON_EAUDIT;
    body = len - r.left;
    if (!r_lit(&r, ",\"hash\":") || !r_hex(&r, rec->hash, AUD_HASH_LEN) || !r_lit(&r, "}") ||
        r.left != 0)
        return RON_EAUDIT;
    rec->kind = (aud_kind_t)kind;
    rec->outcome = (aud_outcome_t)outcome;
    /* Canonical iff re-encoding gives the same bytes (strlen also rejects NULs). */
    ev = (aud_event_t){rec->ts_ms,  rec->kind,   rec->actor,   rec->tenant,
                       rec->op,     rec->target, rec->outcome, rec->reason};
    n = aud_record_encode(&ev, rec->seq, rec->prev, again, sizeof again, h);
    if (n < 0 || (size_t)n != len + 1 || memcmp(again, line, body) != 0)
        return RON_EAUDIT;
    memcpy(rec->computed, h, AUD_HASH_LEN);
    return 0;
}

/* ---- checkpoints ---- */

static void
put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

void
aud__ckpt_msg(uint8_t msg[static AUD__CKPT_MSG_LEN], uint64_t seq, uint64_t ts_ms,
              const uint8_t head[static AUD_HASH_LEN])
{
    static const uint8_t ctx[16] = AUD__CKPT_CTX; /* exactly 16 bytes, no NUL */

    memcpy(msg, ctx, sizeof ctx);
    put_u64be(msg + 16, seq);
    put_u64be(msg + 24, ts_ms);
    memcpy(msg + 32, head, AUD_HASH_LEN);
}

int
aud_checkpoint_encode(uint64_t seq, uint64_t ts_ms, const uint8_t head[static AUD_HASH_LEN],
                      const uint8_t sk[static AUD_SK_LEN], char *out, size_t outcap)
{
    uint8_t msg[AUD__CKPT_MSG_LEN], sig[AUD_SIG_LEN];
    wbuf_t w = {out, 0, outcap, false};

    aud__ckpt_msg(msg, seq, ts_ms, head);
    crypto_sign_ed25519_detached(sig, NULL, msg, sizeof msg, sk);
    w_lit(&w, "{\"seq\":");
    w_u64(&w, seq);
    w_lit(&w, ",\"ts\":");
    w_u64(&w, ts_ms);
    w_lit(&w, ",\"head\":\"");
    w_hex(&w, head, AUD_HASH_LEN);
    w_lit(&w, "\",\"key\":\"");
    w_hex(&w, sk + 32, AUD_PK_LEN); /* libsodium keeps the public key in the second half */
    w_lit(&w, "\",\"sig\":\"");
    w_hex(&w, sig, AUD_SIG_LEN);
    w_lit(&w, "\"}\n");
    return w.over ? RON_ETOOBIG : (int)w.len;
}

int
aud_checkpoint_parse(const char *line, size_t len, aud_checkpoint_t *cp)
{
    rd_t r = {line, len};

    if (len > 0 && line[len - 1] == '\n')
        r.left = --len;
    if (!r_lit(&r, "{\"seq\":") || !r_u64(&r, &cp->seq) || !r_lit(&r, ",\"ts\":") ||
        !r_u64(&r, &cp->ts_ms) || !r_lit(&r, ",\"head\":") || !r_hex(&r, cp->head, AUD_HASH_LEN) ||
        !r_lit(&r, ",\"key\":") || !r_hex(&r, cp->pk, AUD_PK_LEN) || !r_lit(&r, ",\"sig\":") ||
        !r_hex(&r, cp->sig, AUD_SIG_LEN) || !r_lit(&r, "}") || r.left != 0)
        return RON_EAUDIT;
    return 0;
}

bool
aud_checkpoint_sig_ok(const aud_checkpoint_t *cp)
{
    uint8_t msg[AUD__CKPT_MSG_LEN];

    aud__ckpt_msg(msg, cp->seq, cp->ts_ms, cp->head);
    return crypto_sign_ed25519_verify_detached(cp->sig, msg, sizeof msg, cp->pk) == 0;
}
