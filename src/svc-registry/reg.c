/*
 * reg.c - the registry: committed versions (an append-only file or RAM), the
 * head, and open proposals with their approvals. Governance rules live in
 * reg_desc.c (reg__check_*), chain replay in reg_verify.c.
 * Invariants: the committed log in memory is exactly the file's verified
 * prefix; the head moves only after its line is written and fdatasync'd;
 * a proposal commits only when its base is the head and it holds at least
 * M approvals of distinct signers in force at that head; once a write fails
 * the registry refuses writes (the file may hold bytes it does not know).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reg_internal.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_util.h"

typedef struct {
    bool used;
    uint64_t seq;      /* order of proposing: the oldest unapproved one is evicted first */
    reg_record_t *rec; /* desc, approvals so far, hash = the proposal id */
} reg_prop_t;

struct reg {
    pthread_mutex_t mu;
    int fd;             /* -1: RAM */
    bool read_only;     /* by the operator (reg_set_read_only) */
    bool fixed_ro;      /* opened read-only or a write failed: for good */
    uint64_t max_log;   /* bytes */
    uint64_t log_bytes; /* committed bytes, newlines included (= file size) */
    char **lines;       /* lines[v - 1]: record of version v, NUL-terminated */
    size_t *line_len;
    size_t n, cap;
    reg_record_t *head; /* NULL: nothing committed */
    reg_prop_t props[REG_MAX_PROPOSALS];
    uint64_t prop_seq; /* last reg_prop_t.seq given */
};

static void
lines_push(reg_t *r, const char *line, size_t n)
{
    if (r->n == r->cap) {
        r->cap = r->cap != 0 ? 2 * r->cap : 16;
        r->lines = ron_xrealloc(r->lines, r->cap * sizeof *r->lines);
        r->line_len = ron_xrealloc(r->line_len, r->cap * sizeof *r->line_len);
    }
    r->lines[r->n] = ron_xmalloc(n + 1);
    memcpy(r->lines[r->n], line, n);
    r->lines[r->n][n] = '\0';
    r->line_len[r->n++] = n;
    r->log_bytes += n + 1;
}

/* Read all of fd (size bytes) into a new buffer. */
static int
read_all(int fd, size_t size, char **out)
{
    char *buf = ron_xmalloc(size + 1);
    size_t got = 0;
    while (got < size) {
        ssize_t k = pread(fd, buf + got, size - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            free(buf);
            return k < 0 ? -errno : -EIO;
        }
        got += (size_t)k;
    }
    *out = buf;
    return 0;
}

/* Load the verified prefix of buf into r. */
static void
load_lines(reg_t *r, const char *buf, size_t good_len)
{
    size_t pos = 0;
    reg_err_t err;
    while (pos < good_len) {
        const char *nl = memchr(buf + pos, '\n', good_len - pos);
        size_t n = (size_t)(nl - buf - pos);
        lines_push(r, buf + pos, n);
        pos += n + 1;
    }
    if (r->n > 0) {
        r->head = ron_xcalloc(1, sizeof *r->head);
        /* verified just before: cannot fail */
        (void)reg__record_parse(r->lines[r->n - 1], r->line_len[r->n - 1], r->head, &err);
    }
}

static int
open_file(reg_t *r, const reg_opts_t *o, reg_err_t *err)
{
    struct stat st;
    char *buf = NULL, *dir;
    reg_report_t rep;
    int rc;

    r->fd =
        open(o->path, o->read_only ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC,
             0600);
    if (r->fd < 0) {
        rc = -errno;
        reg__err(err, "cannot open %.100s: %s", o->path, ron_strerror(rc));
        return rc;
    }
    if (!o->read_only && flock(r->fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? RON_EBUSY : -errno;
        reg__err(err, "%.100s is locked by another writer", o->path);
        return rc;
    }
    if (fstat(r->fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size > REG_MAX_LOG_HARD) {
        reg__err(err, "%.100s is larger than %u bytes", o->path, REG_MAX_LOG_HARD);
        return RON_ETOOBIG;
    }
    if ((rc = read_all(r->fd, (size_t)st.st_size, &buf)) < 0)
        return rc;
    rc = reg_verify_buf(buf, (size_t)st.st_size, 0, NULL, &rep);
    if (rc < 0 && !rep.torn) {
        reg__err(err, "version %llu: %.120s", (unsigned long long)rep.bad_version, rep.err.msg);
        goto out;
    }
    if (rc < 0) { /* a commit cut by a crash was never acknowledged: drop it */
        ron_warn("registry: %s: dropping an incomplete last line (%zu bytes) after version %llu",
                 o->path, (size_t)st.st_size - rep.good_len, (unsigned long long)rep.versions);
        if (!o->read_only && (ftruncate(r->fd, (off_t)rep.good_len) < 0 || fdatasync(r->fd) < 0)) {
            rc = -errno;
            goto out;
        }
    }
    load_lines(r, buf, rep.good_len);
    if (!o->read_only && st.st_size == 0) { /* a new file: make its name durable */
        dir = ron_xstrdup(o->path);
        (void)ron_fsync_dir(dirname(dir));
        free(dir);
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

int
reg_open(const reg_opts_t *o, reg_t **reg_out, reg_err_t *err)
{
    reg_t *r = ron_xcalloc(1, sizeof *r);
    int rc = 0;

    pthread_mutex_init(&r->mu, NULL);
    r->fd = -1;
    r->fixed_ro = o->read_only;
    r->max_log = o->max_log != 0 ? o->max_log : REG_DEFAULT_MAX_LOG;
    if (o->path != NULL && (rc = open_file(r, o, err)) < 0) {
        reg_free(r);
        return rc;
    }
    *reg_out = r;
    return 0;
}

void
reg_free(reg_t *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->n; i++)
        free(r->lines[i]);
    for (size_t i = 0; i < REG_MAX_PROPOSALS; i++)
        free(r->props[i].rec);
    free(r->lines);
    free(r->line_len);
    free(r->head);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static bool
writable(const reg_t *r)
{
    return !r->read_only && !r->fixed_ro && r->log_bytes < r->max_log;
}

void
reg_head(reg_t *r, uint64_t *version_out, uint8_t hash_out[REG_HASH_LEN], bool *writable_out)
{
    pthread_mutex_lock(&r->mu);
    if (version_out != NULL)
        *version_out = r->n;
    if (hash_out != NULL) {
        if (r->head != NULL)
            memcpy(hash_out, r->head->hash, REG_HASH_LEN);
        else
            memset(hash_out, 0, REG_HASH_LEN);
    }
    if (writable_out != NULL)
        *writable_out = writable(r);
    pthread_mutex_unlock(&r->mu);
}

int
reg_get(reg_t *r, uint64_t version, char **out, size_t *out_len)
{
    int rc = RON_ENOTFOUND;
    pthread_mutex_lock(&r->mu);
    if (version >= 1 && version <= r->n) {
        *out_len = r->line_len[version - 1];
        *out = ron_xmalloc(*out_len + 1);
        memcpy(*out, r->lines[version - 1], *out_len + 1);
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int
reg_current(reg_t *r, reg_desc_t *d_out)
{
    int rc = RON_ENOTFOUND;
    pthread_mutex_lock(&r->mu);
    if (r->head != NULL) {
        *d_out = r->head->desc;
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void
reg_set_read_only(reg_t *r, bool read_only)
{
    pthread_mutex_lock(&r->mu);
    r->read_only = read_only;
    pthread_mutex_unlock(&r->mu);
}

/* Why writes are refused now, or 0. Lock held. */
static int
write_refusal(const reg_t *r, reg_err_t *err)
{
    if (r->read_only || r->fixed_ro) {
        reg__err(err, "the registry is read-only");
        return RON_EREGRDONLY;
    }
    if (r->log_bytes >= r->max_log) {
        reg__err(err, "the registry log is full (%llu bytes)", (unsigned long long)r->max_log);
        return RON_EREGFULL;
    }
    return 0;
}

static reg_prop_t *
prop_find(reg_t *r, const uint8_t id[static REG_HASH_LEN])
{
    for (size_t i = 0; i < REG_MAX_PROPOSALS; i++)
        if (r->props[i].used && memcmp(r->props[i].rec->hash, id, REG_HASH_LEN) == 0)
            return &r->props[i];
    return NULL;
}

static bool
prop_is_stale(const reg_t *r, const reg_prop_t *p)
{
    reg_err_t err;
    return reg__check_link(r->head != NULL ? &r->head->desc : NULL,
                           r->head != NULL ? r->head->hash : NULL, &p->rec->desc, &err) < 0;
}

static void
prop_drop(reg_prop_t *p)
{
    free(p->rec);
    p->rec = NULL;
    p->used = false;
}

/* A free slot; when all are taken, evict a stale proposal, else the oldest
 * one nobody has approved (so proposals cannot be used to lock governance
 * out: one with an approval is never evicted); NULL if none. */
static reg_prop_t *
prop_slot(reg_t *r)
{
    reg_prop_t *old = NULL;
    for (size_t i = 0; i < REG_MAX_PROPOSALS; i++)
        if (!r->props[i].used)
            return &r->props[i];
    for (size_t i = 0; i < REG_MAX_PROPOSALS; i++) {
        reg_prop_t *p = &r->props[i];
        if (prop_is_stale(r, p)) {
            old = p;
            break;
        }
        if (p->rec->n_appr == 0 && (old == NULL || p->seq < old->seq))
            old = p;
    }
    if (old != NULL)
        prop_drop(old);
    return old;
}

int
reg_propose(reg_t *r, const reg_desc_t *d, uint8_t id_out[static REG_HASH_LEN], reg_err_t *err)
{
    reg_prop_t *p;
    uint8_t id[REG_HASH_LEN];
    int rc;

    if (reg_desc_id(d, id) < 0) {
        reg__err(err, "descriptor breaks a rule of the format");
        return RON_EREGDESC;
    }
    pthread_mutex_lock(&r->mu);
    if ((rc = write_refusal(r, err)) < 0)
        goto out;
    if ((rc = reg__check_link(r->head != NULL ? &r->head->desc : NULL,
                              r->head != NULL ? r->head->hash : NULL, d, err)) < 0)
        goto out;
    if (prop_find(r, id) == NULL) {
        if ((p = prop_slot(r)) == NULL) {
            reg__err(err, "%u proposals are open", REG_MAX_PROPOSALS);
            rc = RON_EREGFULL;
            goto out;
        }
        p->used = true;
        p->seq = ++r->prop_seq;
        p->rec = ron_xcalloc(1, sizeof *p->rec);
        p->rec->desc = *d;
        memcpy(p->rec->hash, id, REG_HASH_LEN);
    }
    memcpy(id_out, id, REG_HASH_LEN);
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int
reg_approve(reg_t *r, const uint8_t id[static REG_HASH_LEN], const uint8_t pk[static REG_KEY_LEN],
            const uint8_t sig[static REG_SIG_LEN], size_t *approvals_out, uint32_t *threshold_out)
{
    reg_prop_t *p;
    const reg_desc_t *in_force;
    reg_record_t *rec;
    int rc = 0;

    pthread_mutex_lock(&r->mu);
    if ((p = prop_find(r, id)) == NULL) {
        rc = RON_ENOTFOUND;
        goto out;
    }
    rec = p->rec;
    in_force = r->head != NULL ? &r->head->desc : &rec->desc;
    if ((rc = write_refusal(r, NULL)) < 0)
        goto out;
    if (prop_is_stale(r, p))
        rc = RON_EREGSTALE;
    else if (reg__is_revoked(in_force, pk))
        rc = RON_EREGREVOKED;
    else if (!reg__is_signer(in_force, pk))
        rc = RON_EREGSIGNER;
    else if (!reg_approval_verifies(id, pk, sig))
        rc = RON_EREGSIG;
    for (size_t i = 0; rc == 0 && i < rec->n_appr; i++)
        if (memcmp(rec->appr[i].pk, pk, REG_KEY_LEN) == 0)
            rc = RON_EREGDUP;
    if (rc < 0)
        goto out;
    /* n_appr < REG_MAX_SIGNERS: every approver is a distinct signer */
    memcpy(rec->appr[rec->n_appr].pk, pk, REG_KEY_LEN);
    memcpy(rec->appr[rec->n_appr].sig, sig, REG_SIG_LEN);
    rec->n_appr++;
    if (approvals_out != NULL)
        *approvals_out = rec->n_appr;
    if (threshold_out != NULL)
        *threshold_out = in_force->threshold;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int
reg_proposal_status(reg_t *r, const uint8_t id[static REG_HASH_LEN], size_t *approvals_out,
                    uint32_t *threshold_out)
{
    reg_prop_t *p;
    int rc = RON_ENOTFOUND;
    pthread_mutex_lock(&r->mu);
    if ((p = prop_find(r, id)) != NULL) {
        *approvals_out = p->rec->n_appr;
        *threshold_out = (r->head != NULL ? &r->head->desc : &p->rec->desc)->threshold;
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Append line + newline to the file and make it durable. Lock held. */
static int
log_append(reg_t *r, const char *line, size_t n)
{
    char *buf;
    size_t done = 0;
    int rc = 0;

    if (r->fd < 0)
        return 0;
    buf = ron_xmalloc(n + 1);
    memcpy(buf, line, n);
    buf[n] = '\n';
    while (done < n + 1) {
        ssize_t k = write(r->fd, buf + done, n + 1 - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = k < 0 ? -errno : -EIO;
            break;
        }
        done += (size_t)k;
    }
    if (rc == 0 && fdatasync(r->fd) < 0)
        rc = -errno;
    if (rc < 0) {
        /* The file may hold part of the line, or a line the disk lost:
         * cut it back and stop writing (reopening re-verifies). */
        ron_error("registry: cannot append version %zu: %s; writes refused from now on", r->n + 1,
                  ron_strerror(rc));
        if (ftruncate(r->fd, (off_t)r->log_bytes) < 0) /* reopening drops a torn line */
            ron_error("registry: cannot cut the log back: %s", strerror(errno));
        r->fixed_ro = true;
    }
    free(buf);
    return rc;
}

/* After a commit: approvals on other proposals from keys that are no longer
 * signers (removed or revoked) are dropped. Lock held. */
static void
props_prune(reg_t *r)
{
    for (size_t i = 0; i < REG_MAX_PROPOSALS; i++) {
        reg_record_t *rec = r->props[i].rec;
        size_t k = 0;
        if (!r->props[i].used)
            continue;
        for (size_t j = 0; j < rec->n_appr; j++)
            if (reg__is_signer(&r->head->desc, rec->appr[j].pk) &&
                !reg__is_revoked(&r->head->desc, rec->appr[j].pk))
                rec->appr[k++] = rec->appr[j];
        rec->n_appr = k;
    }
}

int
reg_commit(reg_t *r, const uint8_t id[static REG_HASH_LEN], uint64_t *version_out,
           uint8_t hash_out[REG_HASH_LEN])
{
    reg_prop_t *p;
    char *line = NULL;
    size_t n;
    reg_err_t err;
    int rc;

    pthread_mutex_lock(&r->mu);
    if ((p = prop_find(r, id)) == NULL) {
        rc = RON_ENOTFOUND;
        goto out;
    }
    if ((rc = write_refusal(r, NULL)) < 0)
        goto out;
    if (prop_is_stale(r, p)) {
        rc = RON_EREGSTALE;
        goto out;
    }
    /* The approvals were checked one by one; checking them again as the
     * verifier will costs M signature checks and keeps one definition. */
    if ((rc = reg__check_approvals(r->head != NULL ? &r->head->desc : &p->rec->desc, p->rec,
                                   &err)) < 0)
        goto out;
    if ((rc = reg__record_encode(p->rec, &line, &n)) < 0)
        goto out;
    if (r->log_bytes + n + 1 > r->max_log) {
        rc = RON_EREGFULL;
        goto out;
    }
    if ((rc = log_append(r, line, n)) < 0)
        goto out;
    lines_push(r, line, n);
    free(r->head);
    r->head = p->rec;
    p->rec = NULL;
    p->used = false;
    props_prune(r);
    if (version_out != NULL)
        *version_out = r->n;
    if (hash_out != NULL)
        memcpy(hash_out, r->head->hash, REG_HASH_LEN);
out:
    pthread_mutex_unlock(&r->mu);
    free(line);
    return rc;
}
