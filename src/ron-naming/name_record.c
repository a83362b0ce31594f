/*
 * name_record.c - signed name records: canonical signing bytes, Ed25519
 * sign/verify (libsodium), the binary form, and the acceptance rule.
 * Invariants: signing bytes are only produced for a canonical name and a
 * transfer to a different key, so a verified record is always well formed;
 * decode reads through a bounded cursor and accepts exactly one record.
 *
 * Canonical signing bytes (n = name length):
 *   offset      size  meaning
 *   0           12    "ron-name-v1\0" (domain separation)
 *   12          1     n, 1..253
 *   13          n     name, canonical IDNA ASCII
 *   13+n        32    addr: BLAKE3-256 digest
 *   45+n        8     seq, u64 big-endian
 *   53+n        8     ts, unix seconds, u64 big-endian
 *   61+n        1     owner key algorithm (1 = Ed25519)
 *   62+n        32    owner public key
 *   94+n        1     transfer flag: 0 = none, 1 = new owner follows
 *   95+n        1+32  (transfer only) new owner algorithm (1) and key
 * The binary record is these bytes followed by the 64-byte signature.
 */
#include <string.h>

#include <sodium.h>

#include "name_internal.h"
#include "ron_bytes.h"
#include "ron_err.h"

const uint8_t *
name_record_next_owner(const name_record_t *rec)
{
    return rec->has_new_owner ? rec->new_owner : rec->owner;
}

/* Syntax of a record in memory: canonical name, a transfer to another key. */
static int
record_check(const name_record_t *rec, name_err_t *err)
{
    size_t n = strnlen(rec->name, sizeof rec->name);
    int rc;

    if (n == sizeof rec->name)
        return name__err(err, RON_ERECORD, -1, -1, "record name is not NUL-terminated");
    rc = name_check(rec->name, n, err);
    if (rc < 0) {
        if (err != NULL)
            err->code = RON_ERECORD;
        return RON_ERECORD;
    }
    if (rec->has_new_owner && memcmp(rec->new_owner, rec->owner, NAME_KEY_LEN) == 0)
        return name__err(err, RON_ERECORD, -1, -1,
                         "record is a transfer to its own owner key (leave new_owner out)");
    return 0;
}

static size_t
signing_len(size_t n, bool transfer)
{
    return NAME_DOMAIN_LEN + 1 + n + NAME_ADDR_LEN + 8 + 8 + 1 + NAME_KEY_LEN + 1 +
           (transfer ? 1 + NAME_KEY_LEN : 0);
}

static size_t
signing_write(const name_record_t *rec, uint8_t *p)
{
    size_t n = strlen(rec->name);
    uint8_t *start = p;

    memcpy(p, NAME_DOMAIN, NAME_DOMAIN_LEN); /* includes the NUL */
    p += NAME_DOMAIN_LEN;
    *p++ = (uint8_t)n;
    memcpy(p, rec->name, n);
    p += n;
    memcpy(p, rec->addr.b, NAME_ADDR_LEN);
    p += NAME_ADDR_LEN;
    ron_put_u64be(p, rec->seq);
    p += 8;
    ron_put_u64be(p, rec->ts);
    p += 8;
    *p++ = NAME_KEY_ALG_ED25519;
    memcpy(p, rec->owner, NAME_KEY_LEN);
    p += NAME_KEY_LEN;
    *p++ = rec->has_new_owner ? 1 : 0;
    if (rec->has_new_owner) {
        *p++ = NAME_KEY_ALG_ED25519;
        memcpy(p, rec->new_owner, NAME_KEY_LEN);
        p += NAME_KEY_LEN;
    }
    return (size_t)(p - start);
}

ssize_t
name_record_signing_bytes(const name_record_t *rec, uint8_t *buf, size_t cap)
{
    int rc = record_check(rec, NULL);
    if (rc < 0)
        return rc;
    if (cap < signing_len(strlen(rec->name), rec->has_new_owner))
        return RON_ETOOBIG;
    return (ssize_t)signing_write(rec, buf);
}

int
name_record_sign(name_record_t *rec, const uint8_t sk[static NAME_SECRET_KEY_LEN])
{
    uint8_t msg[NAME_SIGNING_MAX];
    ssize_t n;

    if (sodium_init() < 0) /* idempotent; cheap after the first call */
        return RON_EAUTH;
    memcpy(rec->owner, sk + 32, NAME_KEY_LEN); /* libsodium sk = seed || pk */
    n = name_record_signing_bytes(rec, msg, sizeof msg);
    if (n < 0)
        return (int)n;
    crypto_sign_ed25519_detached(rec->sig, NULL, msg, (unsigned long long)n, sk);
    return 0;
}

int
name_record_verify(const name_record_t *rec, name_err_t *err)
{
    uint8_t msg[NAME_SIGNING_MAX];
    int rc = record_check(rec, err);

    if (rc < 0)
        return rc;
    if (sodium_init() < 0)
        return name__err(err, RON_EAUTH, -1, -1, "libsodium failed to initialize");
    size_t n = signing_write(rec, msg);
    if (crypto_sign_ed25519_verify_detached(rec->sig, msg, n, rec->owner) != 0)
        return name__err(err, RON_ENAMESIG, -1, -1,
                         "signature of the record for \"%s\" (seq %llu) does not verify under "
                         "its owner key",
                         rec->name, (unsigned long long)rec->seq);
    return 0;
}

ssize_t
name_record_encode(const name_record_t *rec, uint8_t *buf, size_t cap)
{
    int rc = record_check(rec, NULL);
    size_t n;

    if (rc < 0)
        return rc;
    n = signing_len(strlen(rec->name), rec->has_new_owner);
    if (cap < n + NAME_SIG_LEN)
        return RON_ETOOBIG;
    signing_write(rec, buf);
    memcpy(buf + n, rec->sig, NAME_SIG_LEN);
    return (ssize_t)(n + NAME_SIG_LEN);
}

/* Read n bytes or fail with a message naming the field and its offset. */
static int
rd_field(ron_rd_t *r, size_t n, const uint8_t **p, const uint8_t *base, const char *field,
         name_err_t *err)
{
    if (ron_rd_bytes(r, n, p) < 0)
        return name__err(err, RON_ERECORD, -1, (long)(r->p - base),
                         "record truncated in %s at offset %ld", field, (long)(r->p - base));
    return 0;
}

int
name_record_decode(name_record_t *rec_out, const uint8_t *buf, size_t len, name_err_t *err)
{
    ron_rd_t r = {buf, len};
    const uint8_t *p = NULL; /* set by every successful rd_field */
    name_record_t rec;
    int rc;

    memset(&rec, 0, sizeof rec);
    if (len > NAME_RECORD_MAX)
        return name__err(err, RON_ERECORD, -1, NAME_RECORD_MAX, "record is %zu bytes; at most %d",
                         len, NAME_RECORD_MAX);
    if ((rc = rd_field(&r, NAME_DOMAIN_LEN, &p, buf, "domain", err)) < 0)
        return rc;
    if (memcmp(p, NAME_DOMAIN, NAME_DOMAIN_LEN) != 0)
        return name__err(err, RON_ERECORD, -1, 0, "record does not start with \"ron-name-v1\\0\"");
    if ((rc = rd_field(&r, 1, &p, buf, "name length", err)) < 0)
        return rc;
    size_t n = p[0];
    if (n == 0 || n > NAME_MAX_LEN)
        return name__err(err, RON_ERECORD, -1, NAME_DOMAIN_LEN, "name length %zu is not 1..253", n);
    if ((rc = rd_field(&r, n, &p, buf, "name", err)) < 0)
        return rc;
    if (memchr(p, '\0', n) != NULL)
        return name__err(err, RON_ERECORD, -1, (long)(p - buf), "name contains a NUL byte");
    memcpy(rec.name, p, n);
    rec.name[n] = '\0';
    if ((rc = rd_field(&r, NAME_ADDR_LEN, &p, buf, "addr", err)) < 0)
        return rc;
    memcpy(rec.addr.b, p, NAME_ADDR_LEN);
    if ((rc = rd_field(&r, 16, &p, buf, "seq and ts", err)) < 0)
        return rc;
    rec.seq = ron_get_u64be(p);
    rec.ts = ron_get_u64be(p + 8);
    if ((rc = rd_field(&r, 1 + NAME_KEY_LEN, &p, buf, "owner", err)) < 0)
        return rc;
    if (p[0] != NAME_KEY_ALG_ED25519)
        return name__err(err, RON_ERECORD, -1, (long)(p - buf),
                         "owner key algorithm %u is not 1 (Ed25519)", p[0]);
    memcpy(rec.owner, p + 1, NAME_KEY_LEN);
    if ((rc = rd_field(&r, 1, &p, buf, "transfer flag", err)) < 0)
        return rc;
    if (p[0] > 1)
        return name__err(err, RON_ERECORD, -1, (long)(p - buf), "transfer flag %u is not 0 or 1",
                         p[0]);
    rec.has_new_owner = p[0] == 1;
    if (rec.has_new_owner) {
        if ((rc = rd_field(&r, 1 + NAME_KEY_LEN, &p, buf, "new owner", err)) < 0)
            return rc;
        if (p[0] != NAME_KEY_ALG_ED25519)
            return name__err(err, RON_ERECORD, -1, (long)(p - buf),
                             "new owner key algorithm %u is not 1 (Ed25519)", p[0]);
        memcpy(rec.new_owner, p + 1, NAME_KEY_LEN);
    }
    if ((rc = rd_field(&r, NAME_SIG_LEN, &p, buf, "signature", err)) < 0)
        return rc;
    memcpy(rec.sig, p, NAME_SIG_LEN);
    if (r.left != 0)
        return name__err(err, RON_ERECORD, -1, (long)(r.p - buf), "%zu bytes after the signature",
                         r.left);
    if ((rc = record_check(&rec, err)) < 0)
        return rc;
    *rec_out = rec;
    return 0;
}

int
name_record_validate(const name_record_t *cand, int64_t now, name_err_t *err)
{
    int rc = name_record_verify(cand, err);
    if (rc < 0)
        return rc;
    if (now >= 0 && cand->ts > (uint64_t)now + NAME_MAX_FUTURE_S)
        return name__err(err, RON_ENAMEFUTURE, -1, -1,
                         "record ts %llu is %llu s ahead of this node's clock (%lld); at most "
                         "%d s are allowed",
                         (unsigned long long)cand->ts,
                         (unsigned long long)(cand->ts - (uint64_t)now), (long long)now,
                         NAME_MAX_FUTURE_S);
    return 0;
}

int
name_record_supersedes(const name_record_t *cur, const name_record_t *cand, name_err_t *err)
{
    if (cur == NULL)
        return 0;
    if (strcmp(cur->name, cand->name) != 0)
        return name__err(err, RON_EINVAL, -1, -1, "records are for different names");
    if (cur->seq == cand->seq && cur->has_new_owner == cand->has_new_owner &&
        memcmp(cur->addr.b, cand->addr.b, NAME_ADDR_LEN) == 0 && cur->ts == cand->ts &&
        memcmp(cur->owner, cand->owner, NAME_KEY_LEN) == 0 &&
        (!cur->has_new_owner || memcmp(cur->new_owner, cand->new_owner, NAME_KEY_LEN) == 0) &&
        memcmp(cur->sig, cand->sig, NAME_SIG_LEN) == 0)
        return name__err(err, RON_ENAMEDUP, -1, -1, "\"%s\" already has this record (seq %llu)",
                         cand->name, (unsigned long long)cand->seq);
    if (memcmp(cand->owner, name_record_next_owner(cur), NAME_KEY_LEN) != 0)
        return name__err(err, RON_ENAMEOWNER, -1, -1,
                         "\"%s\" is bound to another key; only its owner may publish%s", cand->name,
                         cur->has_new_owner ? " (it was transferred)" : "");
    if (cand->seq <= cur->seq)
        return name__err(err, RON_ENAMESTALE, -1, -1,
                         "record seq %llu for \"%s\" is not above the current seq %llu",
                         (unsigned long long)cand->seq, cand->name, (unsigned long long)cur->seq);
    return 0;
}

int
name_record_accept(const name_record_t *cur, const name_record_t *cand, int64_t now,
                   name_err_t *err)
{
    int rc = name_record_validate(cand, now, err);
    if (rc < 0)
        return rc;
    return name_record_supersedes(cur, cand, err);
}
