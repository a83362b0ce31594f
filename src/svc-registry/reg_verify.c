/*
 * reg_verify.c - replay of a registry log from genesis (reg_verify_buf):
 * the one definition of a valid chain, used by reg_open, `ron registry
 * verify` and the tests. Pure: bytes in, a report out.
 * Invariants: a version is accepted only when its line is canonical, its
 * hash is its descriptor's, it follows the version before (number, prev
 * hash, cumulative revocations) and carries at least M valid approvals of
 * distinct signers in force before it; the report's good prefix is exactly
 * the accepted versions.
 */
#include <stdlib.h>
#include <string.h>

#include "reg_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* Check one line as version rep->versions + 1 after prev (NULL: genesis). */
static int
verify_line(const char *line, size_t n, const reg_record_t *prev, reg_record_t *cur, reg_err_t *err)
{
    int rc;
    if ((rc = reg__record_parse(line, n, cur, err)) < 0)
        return rc;
    if ((rc = reg__check_link(prev != NULL ? &prev->desc : NULL, prev != NULL ? prev->hash : NULL,
                              &cur->desc, err)) < 0) {
        if (rc == RON_EREGSTALE) {
            char why[sizeof err->msg];
            memcpy(why, err->msg, sizeof why);
            reg__err(err, "%.120s: a version dropped, reordered or edited", why);
        }
        return rc;
    }
    return reg__check_approvals(prev != NULL ? &prev->desc : &cur->desc, cur, err);
}

int
reg_verify_buf(const char *log, size_t len, uint64_t expect_version, const uint8_t *expect_hash,
               reg_report_t *rep)
{
    reg_record_t *prev = ron_xcalloc(1, sizeof *prev), *cur = ron_xcalloc(1, sizeof *cur), *t;
    bool have_prev = false;
    size_t pos = 0;
    int rc = 0;

    memset(rep, 0, sizeof *rep);
    while (pos < len) {
        const char *nl = memchr(log + pos, '\n', len - pos);
        if (nl == NULL) {
            rep->torn = true;
            reg__err(&rep->err, "incomplete last line: a write was cut (truncated)");
            rc = RON_EREGCHAIN;
            break;
        }
        if (verify_line(log + pos, (size_t)(nl - log - pos), have_prev ? prev : NULL, cur,
                        &rep->err) < 0) {
            rc = RON_EREGCHAIN;
            break;
        }
        rep->versions++;
        memcpy(rep->head, cur->hash, REG_HASH_LEN);
        pos = (size_t)(nl - log) + 1;
        rep->good_len = pos;
        t = prev, prev = cur, cur = t;
        have_prev = true;
    }
    if (rc < 0) {
        rep->bad_version = rep->versions + 1;
    } else if (expect_version != 0 &&
               (rep->versions != expect_version ||
                (expect_hash != NULL && memcmp(rep->head, expect_hash, REG_HASH_LEN) != 0))) {
        rc = RON_EREGCHAIN;
        if (rep->versions < expect_version) {
            rep->bad_version = rep->versions + 1;
            reg__err(&rep->err, "log ends at version %llu, the head is %llu (truncated)",
                     (unsigned long long)rep->versions, (unsigned long long)expect_version);
        } else {
            rep->bad_version = expect_version;
            reg__err(&rep->err, "version %llu does not match the expected head",
                     (unsigned long long)expect_version);
        }
    }
    free(prev);
    free(cur);
    return rc;
}
