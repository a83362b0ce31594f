/*
 * aud_verify.c - checks a log and its checkpoints and names the first thing
 * wrong: a malformed line, a record whose contents do not match its hash
 * (edited), a missing or out-of-order sequence number (dropped/reordered), a
 * broken prev link, a checkpoint with a bad signature or a head that is not
 * the log's hash at that seq, or a log that ends before its last checkpoint
 * (truncated). Bytes after the last newline are a torn tail from a crash:
 * counted, reported and ignored, so the durable prefix verifies.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aud_internal.h"
#include "ron_err.h"
#include "ron_util.h"

static const char *const verdict_names[] = {
    "ok",      "malformed", "edited",         "chain",          "dropped",
    "reordered", "truncated", "checkpoint-signature", "checkpoint-mismatch",
    "checkpoint-malformed",
};

const char *
aud_verdict_name(aud_verdict_t v)
{
    return (unsigned)v < sizeof verdict_names / sizeof *verdict_names ? verdict_names[v] : "?";
}

static int
fail(aud_report_t *rep, aud_verdict_t v, uint64_t seq, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
fail(aud_report_t *rep, aud_verdict_t v, uint64_t seq, uint64_t line, const char *fmt, ...)
{
    va_list ap;

    rep->verdict = v;
    rep->bad_seq = seq;
    rep->line = line;
    va_start(ap, fmt);
    vsnprintf(rep->reason, sizeof rep->reason, fmt, ap);
    va_end(ap);
    return RON_EAUDITCHAIN;
}

/* Next complete line of buf from *pos; false at the end (a torn tail is not a line). */
static bool
next_line(const char *buf, size_t len, size_t *pos, const char **line, size_t *n)
{
    const char *nl;

    if (*pos >= len)
        return false;
    nl = memchr(buf + *pos, '\n', len - *pos);
    if (nl == NULL)
        return false;
    *line = buf + *pos;
    *n = (size_t)(nl - *line) + 1;
    *pos += *n;
    return true;
}

/* The seq a line claims, without a full parse (for telling dropped from reordered). */
static bool
line_seq(const char *line, size_t n, uint64_t *seq)
{
    uint64_t v = 0;
    size_t i = 7;

    if (n < 8 || memcmp(line, "{\"seq\":", 7) != 0)
        return false;
    for (; i < n && line[i] >= '0' && line[i] <= '9' && i < 27; i++)
        v = v * 10 + (uint64_t)(line[i] - '0');
    *seq = v;
    return i > 7;
}

static bool
seq_appears_later(const char *buf, size_t len, size_t pos, uint64_t want)
{
    const char *line;
    size_t n;
    uint64_t s;

    while (next_line(buf, len, &pos, &line, &n))
        if (line_seq(line, n, &s) && s == want)
            return true;
    return false;
}

static int
load_checkpoints(const char *ckpt, size_t len, const uint8_t *pk, aud_report_t *rep,
                 aud_checkpoint_t **cps_out, size_t *n_out)
{
    aud_checkpoint_t *cps = NULL, cp;
    uint8_t key[AUD_PK_LEN];
    bool have_key = pk != NULL;
    size_t n = 0, cap = 0, pos = 0, ln;
    const char *line;
    uint64_t lineno = 0;
    int rc = 0;

    if (have_key)
        memcpy(key, pk, AUD_PK_LEN);
    while (ckpt != NULL && next_line(ckpt, len, &pos, &line, &ln)) {
        lineno++;
        if (aud_checkpoint_parse(line, ln, &cp) < 0) {
            rc = fail(rep, AUD_V_CKPT_MALFORMED, 0, lineno,
                      "checkpoint line %" PRIu64 " is malformed", lineno);
            goto out;
        }
        if (!have_key) {
            memcpy(key, cp.pk, AUD_PK_LEN);
            have_key = true;
        }
        if (sodium_memcmp(key, cp.pk, AUD_PK_LEN) != 0) {
            rc = fail(rep, AUD_V_CKPT_SIG, cp.seq, lineno,
                      "checkpoint of seq %" PRIu64 " (line %" PRIu64 ") is signed by another key",
                      cp.seq, lineno);
            goto out;
        }
        if (!aud_checkpoint_sig_ok(&cp)) {
            rc = fail(rep, AUD_V_CKPT_SIG, cp.seq, lineno,
                      "checkpoint of seq %" PRIu64 " (line %" PRIu64 ") has a bad signature",
                      cp.seq, lineno);
            goto out;
        }
        if (cp.seq == 0 || (n > 0 && cp.seq <= cps[n - 1].seq)) {
            rc = fail(rep, AUD_V_CKPT_MALFORMED, cp.seq, lineno,
                      "checkpoint line %" PRIu64 " does not advance the sequence", lineno);
            goto out;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            cps = ron_xrealloc(cps, cap * sizeof *cps);
        }
        cps[n++] = cp;
    }
    rep->checkpoints = n;
    rep->ckpt_seq = n > 0 ? cps[n - 1].seq : 0;
out:
    if (rc < 0) {
        free(cps);
        cps = NULL;
        n = 0;
    }
    *cps_out = cps;
    *n_out = n;
    return rc;
}

int
aud_verify_buf(const char *log, size_t log_len, const char *ckpt, size_t ckpt_len,
               const uint8_t *pk, bool from_genesis, aud_report_t *rep)
{
    aud_checkpoint_t *cps = NULL;
    aud_record_t *rec = ron_xmalloc(sizeof *rec);
    uint8_t last_hash[AUD_HASH_LEN];
    size_t ncp = 0, k = 0, pos = 0, n;
    uint64_t lineno = 0, last = 0;
    const char *line;
    bool any = false;
    int rc;

    memset(rep, 0, sizeof *rep);
    memcpy(last_hash, aud_genesis, AUD_HASH_LEN);
    if (sodium_init() < 0) {
        rc = RON_EAUTH;
        goto out;
    }
    if ((rc = load_checkpoints(ckpt, ckpt_len, pk, rep, &cps, &ncp)) < 0)
        goto out;
    while (next_line(log, log_len, &pos, &line, &n)) {
        uint64_t want = last + 1;
        lineno++;
        if (aud_record_parse(line, n, rec) < 0) {
            rc = fail(rep, AUD_V_MALFORMED, any || from_genesis ? want : 0, lineno,
                      "line %" PRIu64 " is not a canonical audit record", lineno);
            goto out;
        }
        if (memcmp(rec->hash, rec->computed, AUD_HASH_LEN) != 0) {
            rc = fail(rep, AUD_V_EDITED, any || from_genesis ? want : rec->seq, lineno,
                      "record at line %" PRIu64 " does not match its hash (edited)", lineno);
            goto out;
        }
        if (!any && !from_genesis) {
            want = rec->seq;
            memcpy(last_hash, rec->prev, AUD_HASH_LEN);
            rep->first_seq = rec->seq;
            while (k < ncp && cps[k].seq < rec->seq)
                k++;
        }
        if (rec->seq != want) {
            bool later = seq_appears_later(log, log_len, pos, want);
            rc = fail(rep, later ? AUD_V_REORDERED : AUD_V_DROPPED, want, lineno,
                      "expected seq %" PRIu64 " at line %" PRIu64 ", found %" PRIu64 " (%s)", want,
                      lineno, rec->seq, later ? "records out of order" : "record missing");
            goto out;
        }
        if (memcmp(rec->prev, last_hash, AUD_HASH_LEN) != 0) {
            rc = fail(rep, AUD_V_CHAIN, want, lineno,
                      "seq %" PRIu64 ": prev is not the hash of the record before", want);
            goto out;
        }
        if (k < ncp && cps[k].seq == rec->seq) {
            if (memcmp(cps[k].head, rec->hash, AUD_HASH_LEN) != 0) {
                rc = fail(rep, AUD_V_CKPT_MISMATCH, rec->seq, lineno,
                          "seq %" PRIu64 ": hash differs from its signed checkpoint (log rewritten)",
                          rec->seq);
                goto out;
            }
            k++;
        }
        if (!any)
            rep->first_seq = rec->seq;
        any = true;
        last = rec->seq;
        memcpy(last_hash, rec->hash, AUD_HASH_LEN);
        rep->records++;
    }
    rep->torn_bytes = log_len - pos;
    rep->last_seq = last;
    memcpy(rep->head, last_hash, AUD_HASH_LEN);
    if (k < ncp) {
        rc = fail(rep, AUD_V_TRUNCATED, last + 1, lineno,
                  "log ends at seq %" PRIu64 " but a signed checkpoint covers seq %" PRIu64
                  " (truncated)",
                  last, cps[ncp - 1].seq);
        goto out;
    }
    snprintf(rep->reason, sizeof rep->reason, "ok");
    rc = 0;
out:
    free(rec);
    free(cps);
    return rc;
}

static int
read_file(const char *path, size_t max, char **buf_out, size_t *len_out)
{
    struct stat sb;
    char *buf = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &sb) < 0) {
        rc = -errno;
        goto out;
    }
    if ((uint64_t)sb.st_size > max) {
        rc = RON_ETOOBIG;
        goto out;
    }
    buf = ron_xmalloc((size_t)sb.st_size + 1);
    while (len < (size_t)sb.st_size) {
        ssize_t got = read(fd, buf + len, (size_t)sb.st_size - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            goto out;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    *buf_out = buf;
    *len_out = len;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

int
aud_verify_file(const char *log_path, const char *ckpt_path, const uint8_t *pk, aud_report_t *rep)
{
    char *log = NULL, *ckpt = NULL;
    size_t log_len = 0, ckpt_len = 0;
    int rc;

    memset(rep, 0, sizeof *rep);
    if ((rc = read_file(log_path, SIZE_MAX / 2, &log, &log_len)) < 0)
        return rc;
    if (ckpt_path != NULL) {
        rc = read_file(ckpt_path, SIZE_MAX / 2, &ckpt, &ckpt_len);
        if (rc == -ENOENT)
            rc = 0;
        if (rc < 0)
            goto out;
    }
    rc = aud_verify_buf(log, log_len, ckpt, ckpt_len, pk, true, rep);
out:
    free(log);
    free(ckpt);
    return rc;
}
