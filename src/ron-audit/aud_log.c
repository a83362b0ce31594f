/*
 * aud_log.c - the file and RAM sinks. Appending serializes and hashes the
 * record on the caller's thread under the log's mutex (the chain needs one
 * order) and copies it into the pending buffer; one writer thread swaps that
 * buffer out, writes it with one write(2) loop and one fdatasync, then
 * reports durability. A batch waits at most batch_ms after its first record
 * (or until AUD_BATCH_MAX_BYTES, or until someone flushes), so one sync is
 * shared by every record that arrived meanwhile. Checkpoints are written only
 * after the records they cover are synced, so a crash can never leave a
 * checkpoint ahead of the durable log.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aud_internal.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_util.h"

typedef struct {
    aud_ack_cb cb;
    void *arg;
    uint64_t seq;
} ack_t;

typedef struct {
    uint64_t seq;
    uint8_t head[AUD_HASH_LEN];
} mark_t;

typedef struct {
    char *p;
    size_t len, cap;
    ack_t *acks;
    size_t nacks, acks_cap;
    mark_t *marks; /* every ckpt_every-th record: checkpointed once this batch is synced */
    size_t nmarks, marks_cap;
} batch_t;

struct aud_log {
    bool ram;
    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* writer waits: records pending, flush wanted, stop */
    pthread_cond_t cv_done; /* appenders and flushers wait: a batch finished */
    uint64_t seq;           /* newest record's seq */
    uint8_t head[AUD_HASH_LEN];
    bool closed;
    aud_stats_t st;
    /* file sink */
    int fd, cfd;
    batch_t pend, work;
    uint64_t first_pending_ns;
    uint64_t flush_want;
    bool stop;
    uint8_t *sk;            /* sodium_malloc, NULL: no checkpoints */
    uint64_t ckpt_seq, ckpt_ns;
    uint8_t durable_head[AUD_HASH_LEN];
    unsigned batch_ms, ckpt_every, ckpt_ms;
    pthread_t thr;
    bool thr_started;
    /* RAM sink */
    char **ring;
    size_t *ring_len;
    size_t ring_cap, ring_start, ring_n;
};

static uint64_t
wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
deadline_ts(struct timespec *ts, uint64_t mono_ns)
{
    /* cv clocks are CLOCK_MONOTONIC (pthread_condattr_setclock below). */
    ts->tv_sec = (time_t)(mono_ns / 1000000000u);
    ts->tv_nsec = (long)(mono_ns % 1000000000u);
}

static int
log_alloc(aud_log_t **out)
{
    aud_log_t *log = ron_xcalloc(1, sizeof *log);
    pthread_condattr_t ca;

    pthread_mutex_init(&log->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->cv_work, &ca);
    pthread_cond_init(&log->cv_done, &ca);
    pthread_condattr_destroy(&ca);
    memcpy(log->head, aud_genesis, AUD_HASH_LEN);
    log->fd = log->cfd = -1;
    *out = log;
    return 0;
}

static void
log_free(aud_log_t *log)
{
    if (log->fd >= 0)
        close(log->fd);
    if (log->cfd >= 0)
        close(log->cfd);
    if (log->sk != NULL)
        sodium_free(log->sk); /* sodium_free wipes */
    free(log->pend.p);
    free(log->pend.acks);
    free(log->pend.marks);
    free(log->work.p);
    free(log->work.acks);
    free(log->work.marks);
    for (size_t i = 0; i < log->ring_n; i++)
        free(log->ring[(log->ring_start + i) % log->ring_cap]);
    free(log->ring);
    free(log->ring_len);
    pthread_cond_destroy(&log->cv_work);
    pthread_cond_destroy(&log->cv_done);
    pthread_mutex_destroy(&log->mu);
    free(log);
}

/* ---- opening: resume after the last complete line, cut a torn tail ---- */

/*
 * Find the last complete line of fd (size bytes): cut bytes after the last
 * newline (torn tail, counted in *torn), and copy that line into line
 * (AUD_MAX_RECORD bytes + 1). *line_len 0 when the file holds no line.
 */
static int
tail_line(int fd, size_t maxline, char *line, size_t *line_len, uint64_t *torn)
{
    struct stat sb;
    char *buf = NULL;
    size_t n, end, start;
    off_t size, off;
    ssize_t got;
    int rc = 0;

    *line_len = 0;
    if (fstat(fd, &sb) < 0)
        return -errno;
    size = sb.st_size;
    n = (size_t)(size < (off_t)(2 * maxline + 2) ? size : (off_t)(2 * maxline + 2));
    if (n == 0)
        return 0;
    off = size - (off_t)n;
    buf = ron_xmalloc(n);
    got = pread(fd, buf, n, off);
    if (got != (ssize_t)n) {
        rc = got < 0 ? -errno : -EIO;
        goto out;
    }
    end = n;
    while (end > 0 && buf[end - 1] != '\n')
        end--;
    if (end < n) {
        if (end == 0 && off > 0) { /* no newline in the window: a tail longer than any line */
            rc = RON_EAUDIT;
            goto out;
        }
        *torn = n - end;
        if (ftruncate(fd, off + (off_t)end) < 0 || fdatasync(fd) < 0) {
            rc = -errno;
            goto out;
        }
    }
    if (end == 0)
        goto out;
    start = end - 1;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    if (start == 0 && off > 0) {
        rc = RON_EAUDIT;
        goto out;
    }
    if (end - start > maxline) {
        rc = RON_EAUDIT;
        goto out;
    }
    memcpy(line, buf + start, end - start);
    *line_len = end - start;
out:
    free(buf);
    return rc;
}

static int
open_rw(const char *path, int *fd_out)
{
    char dir[4096];
    size_t n = strlen(path);
    int fd, rc;

    if (n >= sizeof dir)
        return -ENAMETOOLONG;
    memcpy(dir, path, n + 1);
    if ((rc = ron_mkdir_p(dirname(dir))) < 0)
        return rc;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    memcpy(dir, path, n + 1);
    (void)ron_fsync_dir(dirname(dir));
    *fd_out = fd;
    return 0;
}

static void *writer_main(void *arg);

int
aud_log_open_file(const aud_file_opts_t *o, aud_log_t **log_out)
{
    char line[AUD_MAX_RECORD + 1];
    aud_log_t *log = NULL;
    aud_record_t *rec = NULL;
    aud_checkpoint_t cp;
    size_t len;
    int rc;

    if (o == NULL || o->log_path == NULL || (o->sign_sk != NULL && o->ckpt_path == NULL))
        return RON_EINVAL;
    if (sodium_init() < 0)
        return RON_EAUTH;
    log_alloc(&log);
    log->batch_ms = o->batch_ms ? o->batch_ms : AUD_DEFAULT_BATCH_MS;
    log->ckpt_every = o->ckpt_every ? o->ckpt_every : AUD_DEFAULT_CKPT_EVERY;
    log->ckpt_ms = o->ckpt_ms ? o->ckpt_ms : AUD_DEFAULT_CKPT_MS;
    if ((rc = open_rw(o->log_path, &log->fd)) < 0)
        goto out;
    rc = tail_line(log->fd, AUD_MAX_RECORD, line, &len, &log->st.torn_bytes);
    if (rc < 0)
        goto out;
    if (len > 0) {
        rec = ron_xmalloc(sizeof *rec);
        if (aud_record_parse(line, len, rec) < 0 ||
            memcmp(rec->hash, rec->computed, AUD_HASH_LEN) != 0) {
            rc = RON_EAUDIT;
            goto out;
        }
        log->seq = rec->seq;
        memcpy(log->head, rec->hash, AUD_HASH_LEN);
    }
    if (lseek(log->fd, 0, SEEK_END) < 0) {
        rc = -errno;
        goto out;
    }
    log->st.last_seq = log->st.durable_seq = log->seq;
    memcpy(log->durable_head, log->head, AUD_HASH_LEN);
    log->ckpt_seq = log->seq; /* an existing log without checkpoints gets one at the next batch */
    if (o->sign_sk != NULL) {
        uint64_t ctorn = 0;
        if ((rc = open_rw(o->ckpt_path, &log->cfd)) < 0)
            goto out;
        rc = tail_line(log->cfd, AUD_MAX_CHECKPOINT_LINE, line, &len, &ctorn);
        if (rc < 0)
            goto out;
        log->ckpt_seq = 0;
        if (len > 0) {
            if (aud_checkpoint_parse(line, len, &cp) < 0) {
                rc = RON_EAUDIT;
                goto out;
            }
            if (cp.seq > log->seq) { /* the log lost records its checkpoint vouched for */
                rc = RON_EAUDITCHAIN;
                goto out;
            }
            log->ckpt_seq = cp.seq;
        }
        if (lseek(log->cfd, 0, SEEK_END) < 0) {
            rc = -errno;
            goto out;
        }
        log->sk = sodium_malloc(AUD_SK_LEN);
        if (log->sk == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(log->sk, o->sign_sk, AUD_SK_LEN);
        sodium_mprotect_readonly(log->sk);
    }
    log->ckpt_ns = ron_now_ns();
    rc = -pthread_create(&log->thr, NULL, writer_main, log);
    if (rc < 0)
        goto out;
    log->thr_started = true;
    *log_out = log;
    log = NULL;
out:
    free(rec);
    if (log != NULL)
        log_free(log);
    return rc;
}

int
aud_log_new_ram(size_t capacity, aud_log_t **log_out)
{
    aud_log_t *log;

    if (capacity == 0 || capacity > AUD_MAX_RAM_RECORDS)
        return RON_EINVAL;
    log_alloc(&log);
    log->ram = true;
    log->ring_cap = capacity;
    log->ring = ron_xcalloc(capacity, sizeof *log->ring);
    log->ring_len = ron_xcalloc(capacity, sizeof *log->ring_len);
    *log_out = log;
    return 0;
}

/* ---- the writer thread ---- */

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writer thread, unlocked: append checkpoints of marks[0..n) and sync them once. */
static int
checkpoint_write(aud_log_t *log, const mark_t *marks, size_t n)
{
    char line[AUD_MAX_CHECKPOINT_LINE];
    uint64_t ts = wall_ms();
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        int len = aud_checkpoint_encode(marks[i].seq, ts, marks[i].head, log->sk, line, sizeof line);
        rc = len < 0 ? len : write_all(log->cfd, line, (size_t)len);
    }
    if (rc == 0 && fdatasync(log->cfd) < 0)
        rc = -errno;
    return rc;
}

/*
 * Writer thread, locked on entry and exit: checkpoint the marks of the batch
 * just synced (none when marks is NULL), plus the durable head when the time
 * is up or force is set.
 */
static void
checkpoint_maybe(aud_log_t *log, const mark_t *marks, size_t n, bool force)
{
    uint64_t seq = log->st.durable_seq, now = ron_now_ns();
    mark_t *all;
    size_t k = 0;
    int rc;

    if (log->sk == NULL || seq <= log->ckpt_seq || log->st.write_error != 0)
        return;
    all = ron_xmalloc((n + 1) * sizeof *all);
    for (size_t i = 0; i < n; i++)
        if (marks[i].seq > log->ckpt_seq)
            all[k++] = marks[i];
    if ((k == 0 || all[k - 1].seq != seq) &&
        (force || now - log->ckpt_ns >= (uint64_t)log->ckpt_ms * 1000000u)) {
        all[k].seq = seq;
        memcpy(all[k].head, log->durable_head, AUD_HASH_LEN);
        k++;
    }
    if (k == 0) {
        free(all);
        return;
    }
    pthread_mutex_unlock(&log->mu);
    rc = checkpoint_write(log, all, k);
    pthread_mutex_lock(&log->mu);
    if (rc < 0) {
        log->st.write_error = rc;
    } else {
        log->ckpt_seq = all[k - 1].seq;
        log->ckpt_ns = now;
        log->st.checkpoints += k;
    }
    free(all);
}

/* Writer thread, locked: wait for a batch; false when stopping with nothing left. */
static bool
batch_wait(aud_log_t *log)
{
    struct timespec ts;

    while (log->pend.len == 0) {
        if (log->stop)
            return false;
        if (log->sk != NULL && log->st.durable_seq > log->ckpt_seq && log->st.write_error == 0) {
            checkpoint_maybe(log, NULL, 0, false);
            deadline_ts(&ts, log->ckpt_ns + (uint64_t)log->ckpt_ms * 1000000u + 1000000u);
            pthread_cond_timedwait(&log->cv_work, &log->mu, &ts);
        } else {
            pthread_cond_wait(&log->cv_work, &log->mu);
        }
    }
    deadline_ts(&ts, log->first_pending_ns + (uint64_t)log->batch_ms * 1000000u);
    while (!log->stop && log->flush_want <= log->st.durable_seq &&
           log->pend.len < AUD_BATCH_MAX_BYTES && ron_now_ns() < log->first_pending_ns +
                                                                     (uint64_t)log->batch_ms * 1000000u)
        pthread_cond_timedwait(&log->cv_work, &log->mu, &ts);
    return true;
}

static void *
writer_main(void *arg)
{
    aud_log_t *log = arg;
    uint8_t head[AUD_HASH_LEN];
    uint64_t last;
    batch_t tmp;
    int rc;

    pthread_mutex_lock(&log->mu);
    while (batch_wait(log)) {
        tmp = log->work;
        log->work = log->pend;
        log->pend = tmp;
        log->pend.len = 0;
        log->pend.nacks = 0;
        log->pend.nmarks = 0;
        last = log->seq;
        memcpy(head, log->head, AUD_HASH_LEN);
        rc = log->st.write_error;
        pthread_mutex_unlock(&log->mu);

        if (rc == 0)
            rc = write_all(log->fd, log->work.p, log->work.len);
        if (rc == 0 && fdatasync(log->fd) < 0)
            rc = -errno;

        pthread_mutex_lock(&log->mu);
        log->st.batches++;
        log->st.fsyncs++;
        if (rc < 0) {
            if (log->st.write_error == 0)
                log->st.write_error = rc;
        } else {
            log->st.durable_seq = last;
            memcpy(log->durable_head, head, AUD_HASH_LEN);
            checkpoint_maybe(log, log->work.marks, log->work.nmarks, false);
        }
        pthread_cond_broadcast(&log->cv_done);
        pthread_mutex_unlock(&log->mu);
        for (size_t i = 0; i < log->work.nacks; i++)
            log->work.acks[i].cb(log->work.acks[i].arg, log->work.acks[i].seq, rc);
        pthread_mutex_lock(&log->mu);
    }
    checkpoint_maybe(log, NULL, 0, true);
    pthread_cond_broadcast(&log->cv_done);
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

/* ---- appending ---- */

static int
ram_append(aud_log_t *log, const aud_event_t *ev, uint64_t *seq)
{
    char line[AUD_MAX_RECORD];
    uint8_t h[AUD_HASH_LEN];
    size_t slot;
    int n;

    n = aud_record_encode(ev, log->seq + 1, log->head, line, sizeof line, h);
    if (n < 0)
        return n;
    if (log->ring_n == log->ring_cap) {
        free(log->ring[log->ring_start]);
        log->ring_start = (log->ring_start + 1) % log->ring_cap;
        log->ring_n--;
        log->st.dropped++;
    }
    slot = (log->ring_start + log->ring_n) % log->ring_cap;
    log->ring[slot] = ron_xmalloc((size_t)n);
    memcpy(log->ring[slot], line, (size_t)n);
    log->ring_len[slot] = (size_t)n;
    log->ring_n++;
    *seq = ++log->seq;
    memcpy(log->head, h, AUD_HASH_LEN);
    log->st.durable_seq = log->seq;
    return 0;
}

static int
file_append(aud_log_t *log, const aud_event_t *ev, aud_ack_cb cb, void *arg, uint64_t *seq)
{
    batch_t *b = &log->pend;
    uint8_t h[AUD_HASH_LEN];
    int n;

    while (b->len >= AUD_MAX_PENDING && log->st.write_error == 0 && !log->closed)
        pthread_cond_wait(&log->cv_done, &log->mu);
    if (log->st.write_error != 0)
        return log->st.write_error;
    if (log->closed)
        return RON_ECLOSED;
    if (b->cap - b->len < AUD_MAX_RECORD) {
        b->cap = b->cap == 0 ? 64 * 1024 : b->cap * 2;
        b->p = ron_xrealloc(b->p, b->cap);
    }
    n = aud_record_encode(ev, log->seq + 1, log->head, b->p + b->len, AUD_MAX_RECORD, h);
    if (n < 0)
        return n;
    if (cb != NULL) {
        if (b->nacks == b->acks_cap) {
            b->acks_cap = b->acks_cap == 0 ? 64 : b->acks_cap * 2;
            b->acks = ron_xrealloc(b->acks, b->acks_cap * sizeof *b->acks);
        }
        b->acks[b->nacks++] = (ack_t){cb, arg, log->seq + 1};
    }
    if (b->len == 0) {
        log->first_pending_ns = ron_now_ns();
        pthread_cond_signal(&log->cv_work);
    }
    b->len += (size_t)n;
    if (b->len >= AUD_BATCH_MAX_BYTES)
        pthread_cond_signal(&log->cv_work);
    *seq = ++log->seq;
    memcpy(log->head, h, AUD_HASH_LEN);
    if (log->sk != NULL && log->seq % log->ckpt_every == 0) {
        if (b->nmarks == b->marks_cap) {
            b->marks_cap = b->marks_cap == 0 ? 8 : b->marks_cap * 2;
            b->marks = ron_xrealloc(b->marks, b->marks_cap * sizeof *b->marks);
        }
        b->marks[b->nmarks].seq = log->seq;
        memcpy(b->marks[b->nmarks++].head, h, AUD_HASH_LEN);
    }
    return 0;
}

int
aud_append(aud_log_t *log, const aud_event_t *ev, aud_ack_cb cb, void *arg, uint64_t *seq_out)
{
    aud_event_t e = *ev;
    uint64_t seq = 0;
    int rc;

    if (e.ts_ms == 0)
        e.ts_ms = wall_ms();
    pthread_mutex_lock(&log->mu);
    if (log->closed)
        rc = RON_ECLOSED;
    else
        rc = log->ram ? ram_append(log, &e, &seq) : file_append(log, &e, cb, arg, &seq);
    if (rc == 0) {
        log->st.records++;
        log->st.last_seq = seq;
    }
    pthread_mutex_unlock(&log->mu);
    if (rc == 0 && seq_out != NULL)
        *seq_out = seq;
    if (rc == 0 && log->ram && cb != NULL)
        cb(arg, seq, 0);
    return rc;
}

int
aud_log_flush(aud_log_t *log)
{
    uint64_t target;
    int rc;

    pthread_mutex_lock(&log->mu);
    target = log->seq;
    if (!log->ram) {
        if (log->flush_want < target)
            log->flush_want = target;
        pthread_cond_signal(&log->cv_work);
        while (log->st.durable_seq < target && log->st.write_error == 0 && log->thr_started)
            pthread_cond_wait(&log->cv_done, &log->mu);
    }
    rc = log->st.write_error;
    pthread_mutex_unlock(&log->mu);
    return rc;
}

void
aud_log_stats(aud_log_t *log, aud_stats_t *stats_out)
{
    pthread_mutex_lock(&log->mu);
    *stats_out = log->st;
    pthread_mutex_unlock(&log->mu);
}

int
aud_log_ram_each(aud_log_t *log, void (*fn)(void *arg, const char *line, size_t len), void *arg)
{
    if (!log->ram)
        return RON_EINVAL;
    pthread_mutex_lock(&log->mu);
    for (size_t i = 0; i < log->ring_n; i++) {
        size_t slot = (log->ring_start + i) % log->ring_cap;
        fn(arg, log->ring[slot], log->ring_len[slot]);
    }
    pthread_mutex_unlock(&log->mu);
    return 0;
}

int
aud_log_close(aud_log_t *log)
{
    int rc;

    if (log == NULL)
        return 0;
    rc = aud_log_flush(log);
    pthread_mutex_lock(&log->mu);
    log->closed = true;
    log->stop = true;
    pthread_cond_broadcast(&log->cv_work);
    pthread_cond_broadcast(&log->cv_done);
    pthread_mutex_unlock(&log->mu);
    if (log->thr_started)
        pthread_join(log->thr, NULL);
    if (rc == 0)
        rc = log->st.write_error;
    log_free(log);
    return rc;
}
