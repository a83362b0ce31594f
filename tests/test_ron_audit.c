/*
 * test_ron_audit.c - ron-audit on real files in temp dirs: the canonical
 * record form, the chain round trip, each kind of tampering reported with the
 * right sequence number, batching (fsyncs counted by the log's own stats),
 * kill -9 during appends (the durable prefix always verifies), the RAM sink's
 * bound, and concurrent appenders.
 * Run with no argument for the main group, with "threads" for the
 * multi-threaded group (the CTest entry labelled `threads`, run under TSan).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "ron_audit.h"
#include "ron_err.h"
#include "ron_util.h"

typedef struct {
    char dir[64];
    char log[128];
    char ckpt[128];
    uint8_t pk[AUD_PK_LEN];
    uint8_t sk[AUD_SK_LEN];
} fx_t;

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
fx_setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);

    assert_non_null(fx);
    assert_true(sodium_init() >= 0);
    strcpy(fx->dir, "/tmp/ron-audit-test-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->log, sizeof fx->log, "%s/audit/audit.log", fx->dir);
    snprintf(fx->ckpt, sizeof fx->ckpt, "%s/audit/checkpoints", fx->dir);
    crypto_sign_ed25519_keypair(fx->pk, fx->sk);
    *state = fx;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *fx = *state;

    nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static aud_file_opts_t
fx_opts(fx_t *fx, unsigned ckpt_every)
{
    return (aud_file_opts_t){.log_path = fx->log, .ckpt_path = fx->ckpt, .sign_sk = fx->sk,
                             .ckpt_every = ckpt_every, .ckpt_ms = 60000};
}

static void
event_of(uint64_t i, aud_event_t *ev, char *target, size_t cap)
{
    snprintf(target, cap, "b3:%064llx", (unsigned long long)i);
    *ev = (aud_event_t){.kind = (aud_kind_t)(i % AUD_KIND_COUNT),
                        .actor = "ron1:1:0:0123456789abcdef0123456789abcdef",
                        .tenant = "00112233445566778899aabbccddeeff",
                        .op = "pin",
                        .target = target,
                        .outcome = (aud_outcome_t)(i % AUD_OUTCOME_COUNT),
                        .reason = i % 7 == 0 ? "quota \"hard\" limit\n" : ""};
}

/* Append n records to a fresh or existing log with checkpoints every ckpt_every. */
static void
write_log(fx_t *fx, uint64_t n, unsigned ckpt_every)
{
    aud_file_opts_t o = fx_opts(fx, ckpt_every);
    aud_log_t *log = NULL;
    char target[80];
    aud_event_t ev;

    assert_int_equal(aud_log_open_file(&o, &log), 0);
    for (uint64_t i = 0; i < n; i++) {
        event_of(i, &ev, target, sizeof target);
        assert_int_equal(aud_append(log, &ev, NULL, NULL, NULL), 0);
    }
    assert_int_equal(aud_log_close(log), 0);
}

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static void
spew(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

/* Byte offset of the start of 1-based line n (len when past the end). */
static size_t
line_off(const char *buf, size_t len, size_t n)
{
    size_t off = 0;

    for (size_t i = 1; i < n && off < len; i++) {
        const char *nl = memchr(buf + off, '\n', len - off);
        assert_non_null(nl);
        off = (size_t)(nl - buf) + 1;
    }
    return off;
}

static int
verify(fx_t *fx, aud_report_t *rep)
{
    return aud_verify_file(fx->log, fx->ckpt, fx->pk, rep);
}

/* ------------------------------------------------------------ records */

static void
test_record_round_trip_is_canonical_and_escapes_fields(void **state)
{
    aud_event_t ev = {.ts_ms = 1700000000123, .kind = AUD_NAME_PUBLISHED, .actor = "anon",
                      .tenant = "", .op = "name", .target = "caf\xc3\xa9 \"x\"\\y",
                      .outcome = AUD_DENIED, .reason = "tab\there\x7f"};
    char line[AUD_MAX_RECORD], bad[AUD_MAX_RECORD];
    uint8_t h[AUD_HASH_LEN];
    aud_record_t rec;
    int n;

    (void)state;
    n = aud_record_encode(&ev, 42, aud_genesis, line, sizeof line, h);
    assert_true(n > 0);
    assert_int_equal(line[n - 1], '\n');
    assert_non_null(strstr(line, "\"target\":\"caf\xc3\xa9 \\\"x\\\"\\\\y\""));
    assert_non_null(strstr(line, "\"reason\":\"tab\\u0009here\\u007f\""));
    assert_int_equal(aud_record_parse(line, (size_t)n, &rec), 0);
    assert_int_equal(rec.seq, 42);
    assert_int_equal(rec.ts_ms, 1700000000123);
    assert_int_equal(rec.kind, AUD_NAME_PUBLISHED);
    assert_int_equal(rec.outcome, AUD_DENIED);
    assert_string_equal(rec.target, ev.target);
    assert_string_equal(rec.reason, ev.reason);
    assert_memory_equal(rec.hash, h, AUD_HASH_LEN);
    assert_memory_equal(rec.computed, h, AUD_HASH_LEN);

    /* Non-canonical spellings of the same record are refused. */
    static const char *const from[] = {"{\"seq\":42", ",\"ts\":", "\"denied\"", "tab\\u0009"};
    static const char *const to[] = {"{\"seq\":042", ", \"ts\":", "\"DENIED\"", "tab\\t"};
    for (size_t i = 0; i < 4; i++) {
        char *at = strstr(line, from[i]);
        size_t pre;
        assert_non_null(at);
        pre = (size_t)(at - line);
        snprintf(bad, sizeof bad, "%.*s%s%s", (int)pre, line, to[i], at + strlen(from[i]));
        assert_int_equal(aud_record_parse(bad, strlen(bad), &rec), RON_EAUDIT);
    }
    /* Upper-case hex in the hash. */
    memcpy(bad, line, (size_t)n);
    for (int i = n - 4; i > n - 70; i--)
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = (char)(bad[i] - 32);
            break;
        }
    assert_int_equal(aud_record_parse(bad, (size_t)n, &rec), RON_EAUDIT);
}

static void
test_record_encode_rejects_bad_fields(void **state)
{
    char line[AUD_MAX_RECORD], big[AUD_MAX_TARGET + 2];
    uint8_t h[AUD_HASH_LEN];
    aud_event_t ev = {.kind = AUD_PIN, .actor = "a", .tenant = "ABCD", .op = "pin"};

    (void)state;
    assert_int_equal(aud_record_encode(&ev, 1, aud_genesis, line, sizeof line, h), RON_EINVAL);
    ev.tenant = NULL;
    ev.actor = "\xff\xfe";
    assert_int_equal(aud_record_encode(&ev, 1, aud_genesis, line, sizeof line, h), RON_EINVAL);
    ev.actor = "a";
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ev.target = big;
    assert_int_equal(aud_record_encode(&ev, 1, aud_genesis, line, sizeof line, h), RON_ETOOBIG);
    ev.target = NULL;
    ev.kind = AUD_KIND_COUNT;
    assert_int_equal(aud_record_encode(&ev, 1, aud_genesis, line, sizeof line, h), RON_EINVAL);
    ev.kind = AUD_PIN;
    assert_true(aud_record_encode(&ev, 1, aud_genesis, line, sizeof line, h) > 0);
}

/* ------------------------------------------------------------ file log */

static void
test_file_log_chain_round_trip_verifies_and_resumes(void **state)
{
    fx_t *fx = *state;
    aud_report_t rep;
    aud_record_t rec;
    char *buf;
    size_t len, off;

    write_log(fx, 500, 100);
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.verdict, AUD_V_OK);
    assert_int_equal(rep.records, 500);
    assert_int_equal(rep.first_seq, 1);
    assert_int_equal(rep.last_seq, 500);
    assert_int_equal(rep.ckpt_seq, 500);
    assert_true(rep.checkpoints >= 5);
    assert_int_equal(rep.torn_bytes, 0);

    write_log(fx, 10, 100); /* reopen: the chain continues */
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.last_seq, 510);
    assert_int_equal(rep.ckpt_seq, 510);
    buf = slurp(fx->log, &len);
    off = line_off(buf, len, 501);
    assert_int_equal(aud_record_parse(buf + off, (size_t)(strchr(buf + off, '\n') - (buf + off)) + 1,
                                      &rec),
                     0);
    assert_int_equal(rec.seq, 501);
    free(buf);
}

static void
test_verify_reports_edited_byte_with_its_seq(void **state)
{
    fx_t *fx = *state;
    aud_report_t rep;
    size_t len, off;
    char *buf, *orig;

    write_log(fx, 300, 100);
    orig = slurp(fx->log, &len);
    buf = malloc(len + 1);
    memcpy(buf, orig, len + 1);
    off = line_off(buf, len, 37);
    off = (size_t)(strstr(buf + off, "\"target\":\"b3:") - buf) + 14; /* a hex digit of the target */
    buf[off] = buf[off] == '0' ? '1' : '0';
    spew(fx->log, buf, len);
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_EDITED);
    assert_int_equal(rep.bad_seq, 37);
    assert_int_equal(rep.line, 37);

    memcpy(buf, orig, len + 1);
    off = line_off(buf, len, 212);
    off = (size_t)(strstr(buf + off, "\"hash\":\"") - buf) + 20; /* the stored hash itself */
    buf[off] = buf[off] == '0' ? '1' : '0';
    spew(fx->log, buf, len);
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_EDITED);
    assert_int_equal(rep.bad_seq, 212);

    memcpy(buf, orig, len + 1);
    off = line_off(buf, len, 99);
    buf[off + 1] = '['; /* breaks the syntax */
    spew(fx->log, buf, len);
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_MALFORMED);
    assert_int_equal(rep.bad_seq, 99);
    free(buf);
    free(orig);
}

static void
test_verify_reports_dropped_record(void **state)
{
    fx_t *fx = *state;
    aud_report_t rep;
    size_t len, a, b;
    char *buf;

    write_log(fx, 300, 100);
    buf = slurp(fx->log, &len);
    a = line_off(buf, len, 50);
    b = line_off(buf, len, 51);
    memmove(buf + a, buf + b, len - b);
    spew(fx->log, buf, len - (b - a));
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_DROPPED);
    assert_int_equal(rep.bad_seq, 50);
    assert_non_null(strstr(rep.reason, "expected seq 50"));
    free(buf);
}

static void
test_verify_reports_swapped_records_as_reordered(void **state)
{
    fx_t *fx = *state;
    aud_report_t rep;
    size_t len, a, b, c;
    char *buf, *out;

    write_log(fx, 300, 100);
    buf = slurp(fx->log, &len);
    a = line_off(buf, len, 20);
    b = line_off(buf, len, 21);
    c = line_off(buf, len, 22);
    out = malloc(len);
    memcpy(out, buf, a);
    memcpy(out + a, buf + b, c - b);
    memcpy(out + a + (c - b), buf + a, b - a);
    memcpy(out + c, buf + c, len - c);
    spew(fx->log, out, len);
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_REORDERED);
    assert_int_equal(rep.bad_seq, 20);
    free(out);
    free(buf);
}

static void
test_verify_reports_cut_tail_as_truncated(void **state)
{
    fx_t *fx = *state;
    aud_report_t rep;
    size_t len;
    char *buf;

    write_log(fx, 300, 100); /* close writes a final checkpoint at 300 */
    buf = slurp(fx->log, &len);
    spew(fx->log, buf, line_off(buf, len, 298));
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_TRUNCATED);
    assert_int_equal(rep.bad_seq, 298);
    assert_int_equal(rep.last_seq, 297);
    free(buf);
}

static void
test_verify_reports_log_shorter_than_earlier_checkpoint_and_open_refuses_it(void **state)
{
    fx_t *fx = *state;
    aud_file_opts_t o = fx_opts(fx, 100);
    aud_log_t *log = NULL;
    aud_report_t rep;
    size_t len;
    char *buf;

    write_log(fx, 300, 100);
    buf = slurp(fx->log, &len);
    spew(fx->log, buf, line_off(buf, len, 151));
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_TRUNCATED);
    assert_int_equal(rep.bad_seq, 151);
    assert_non_null(strstr(rep.reason, "truncated"));
    assert_int_equal(aud_log_open_file(&o, &log), RON_EAUDITCHAIN);
    assert_null(log);
    free(buf);
}

static void
test_verify_reports_forged_checkpoint_signature_and_foreign_key(void **state)
{
    fx_t *fx = *state;
    uint8_t pk2[AUD_PK_LEN], sk2[AUD_SK_LEN];
    aud_report_t rep;
    size_t len, off;
    char *buf, *orig;

    write_log(fx, 300, 100);
    orig = slurp(fx->ckpt, &len);
    buf = malloc(len + 1);
    memcpy(buf, orig, len + 1);
    off = line_off(buf, len, 2);
    off = (size_t)(strstr(buf + off, "\"sig\":\"") - buf) + 10;
    buf[off] = buf[off] == '0' ? '1' : '0';
    spew(fx->ckpt, buf, len);
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_CKPT_SIG);
    assert_int_equal(rep.bad_seq, 200);
    assert_int_equal(rep.line, 2);

    /* A checkpoint file re-signed with another key fails against the pinned key. */
    spew(fx->ckpt, orig, len);
    crypto_sign_ed25519_keypair(pk2, sk2);
    assert_int_equal(aud_verify_file(fx->log, fx->ckpt, pk2, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_CKPT_SIG);
    assert_int_equal(rep.bad_seq, 100);
    /* Unpinned, it verifies under the key it names. */
    assert_int_equal(aud_verify_file(fx->log, fx->ckpt, NULL, &rep), 0);
    free(buf);
    free(orig);
}

/* Re-chain the whole log after editing record `edit`: only checkpoints can tell. */
static void
test_verify_catches_fully_rechained_log_by_its_checkpoints(void **state)
{
    fx_t *fx = *state;
    uint8_t prev[AUD_HASH_LEN], h[AUD_HASH_LEN];
    aud_record_t rec;
    aud_report_t rep;
    size_t len, pos = 0, olen = 0;
    char *buf, *out;

    write_log(fx, 250, 100);
    buf = slurp(fx->log, &len);
    out = malloc(len + AUD_MAX_RECORD);
    memcpy(prev, aud_genesis, AUD_HASH_LEN);
    while (pos < len) {
        size_t n = (size_t)(strchr(buf + pos, '\n') - (buf + pos)) + 1;
        aud_event_t ev;
        int w;
        assert_int_equal(aud_record_parse(buf + pos, n, &rec), 0);
        if (rec.seq == 30)
            strcpy(rec.target, "b3:forged");
        ev = (aud_event_t){rec.ts_ms, rec.kind, rec.actor, rec.tenant,
                           rec.op,    rec.target, rec.outcome, rec.reason};
        w = aud_record_encode(&ev, rec.seq, prev, out + olen, AUD_MAX_RECORD, h);
        assert_true(w > 0);
        olen += (size_t)w;
        memcpy(prev, h, AUD_HASH_LEN);
        pos += n;
    }
    spew(fx->log, out, olen);
    assert_int_equal(aud_verify_file(fx->log, NULL, NULL, &rep), 0); /* the chain alone is fooled */
    assert_int_equal(verify(fx, &rep), RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_CKPT_MISMATCH);
    assert_int_equal(rep.bad_seq, 100);
    free(out);
    free(buf);
}

static void
test_torn_tail_is_ignored_by_verify_and_cut_on_reopen(void **state)
{
    fx_t *fx = *state;
    static const char torn[] = "{\"seq\":201,\"ts\":17000";
    aud_file_opts_t o = fx_opts(fx, 100);
    aud_event_t ev = {.kind = AUD_ADMIN, .op = "reload", .outcome = AUD_OK};
    aud_log_t *log = NULL;
    aud_report_t rep;
    aud_stats_t st;
    uint64_t seq = 0;
    FILE *f;

    write_log(fx, 200, 100);
    f = fopen(fx->log, "ab");
    assert_non_null(f);
    fputs(torn, f);
    fclose(f);
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.torn_bytes, strlen(torn));
    assert_int_equal(rep.last_seq, 200);

    assert_int_equal(aud_log_open_file(&o, &log), 0);
    aud_log_stats(log, &st);
    assert_int_equal(st.torn_bytes, strlen(torn));
    assert_int_equal(aud_append(log, &ev, NULL, NULL, &seq), 0);
    assert_int_equal(seq, 201);
    assert_int_equal(aud_log_close(log), 0);
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.torn_bytes, 0);
    assert_int_equal(rep.last_seq, 201);
}

static void
test_checkpoint_written_after_ckpt_ms_without_close_and_torn_checkpoint_ignored(void **state)
{
    fx_t *fx = *state;
    aud_file_opts_t o = fx_opts(fx, 1000);
    aud_event_t ev = {.kind = AUD_POLICY_CHANGED, .op = "reload", .target = "policy v2"};
    aud_log_t *log = NULL;
    aud_report_t rep;
    aud_stats_t st;
    FILE *f;

    o.ckpt_ms = 20;
    assert_int_equal(aud_log_open_file(&o, &log), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aud_append(log, &ev, NULL, NULL, NULL), 0);
    for (int i = 0; i < 300; i++) { /* at most 3 s */
        aud_log_stats(log, &st);
        if (st.checkpoints > 0)
            break;
        usleep(10000);
    }
    assert_int_equal(st.checkpoints, 1);
    assert_int_equal(verify(fx, &rep), 0); /* read while the log is still open */
    assert_int_equal(rep.ckpt_seq, 5);
    assert_int_equal(aud_log_close(log), 0);

    f = fopen(fx->ckpt, "ab");
    assert_non_null(f);
    fputs("{\"seq\":9,\"ts\":1", f);
    fclose(f);
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.checkpoints, 1);
    write_log(fx, 3, 1000); /* reopening cuts the torn checkpoint line */
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.last_seq, 8);
    assert_int_equal(rep.ckpt_seq, 8);
}

static void
test_open_refuses_log_whose_last_record_was_edited(void **state)
{
    fx_t *fx = *state;
    aud_file_opts_t o = fx_opts(fx, 100);
    aud_log_t *log = NULL;
    size_t len, off;
    char *buf;

    write_log(fx, 10, 100);
    buf = slurp(fx->log, &len);
    off = (size_t)(strstr(buf + line_off(buf, len, 10), "\"op\":\"pin") - buf) + 6;
    buf[off] = 'P';
    spew(fx->log, buf, len);
    assert_int_equal(aud_log_open_file(&o, &log), RON_EAUDIT);
    assert_null(log);
    free(buf);
}

static void
err_ack(void *arg, uint64_t seq, int rc)
{
    int *last = arg;

    (void)seq;
    *last = rc;
}

static void
test_write_error_reaches_ack_flush_and_later_appends(void **state)
{
    aud_file_opts_t o = {.log_path = "/dev/full"};
    aud_event_t ev = {.kind = AUD_ADMIN, .op = "gc"};
    aud_log_t *log = NULL;
    int ack_rc = 1;

    (void)state;
    if (access("/dev/full", W_OK) != 0)
        skip();
    assert_int_equal(aud_log_open_file(&o, &log), 0);
    assert_int_equal(aud_append(log, &ev, err_ack, &ack_rc, NULL), 0);
    assert_int_equal(aud_log_flush(log), -ENOSPC);
    assert_int_equal(aud_append(log, &ev, NULL, NULL, NULL), -ENOSPC);
    assert_int_equal(aud_log_close(log), -ENOSPC);
    assert_int_equal(ack_rc, -ENOSPC); /* close joined the writer that ran the callback */
}

static void
count_ack(void *arg, uint64_t seq, int rc)
{
    uint64_t *c = arg; /* c[0] acks, c[1] errors, c[2] last seq (one writer thread: ordered) */

    c[0]++;
    if (rc != 0 || seq <= c[2])
        c[1]++;
    c[2] = seq;
}

static void
test_batching_syncs_many_appends_in_few_fdatasyncs(void **state)
{
    fx_t *fx = *state;
    aud_file_opts_t o = fx_opts(fx, 5000);
    aud_event_t ev;
    aud_log_t *log = NULL;
    aud_report_t rep;
    aud_stats_t st;
    uint64_t acks[3] = {0, 0, 0}, t0, ms;
    char target[80];
    enum { N = 20000 };
    struct stat sb;

    assert_int_equal(aud_log_open_file(&o, &log), 0);
    t0 = ron_now_ms();
    for (uint64_t i = 0; i < N; i++) {
        event_of(i, &ev, target, sizeof target);
        assert_int_equal(aud_append(log, &ev, count_ack, acks, NULL), 0);
    }
    assert_int_equal(aud_log_flush(log), 0);
    ms = ron_now_ms() - t0;
    aud_log_stats(log, &st);
    assert_int_equal(st.records, N);
    assert_int_equal(st.durable_seq, N);
    assert_int_equal(st.batches, st.fsyncs);
    /* One sync per batch; a batch gathers for 10 ms unless it fills 1 MiB first
     * (plus a flush's early batch). */
    assert_int_equal(stat(fx->log, &sb), 0);
    assert_true(st.fsyncs <= ms / AUD_DEFAULT_BATCH_MS + (uint64_t)sb.st_size / AUD_BATCH_MAX_BYTES + 2);
    assert_true(st.fsyncs * 50 <= N);
    assert_int_equal(aud_log_close(log), 0);
    assert_int_equal(acks[0], N);
    assert_int_equal(acks[1], 0);
    assert_int_equal(acks[2], N);
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.records, N);
}

static void
test_kill9_during_appends_leaves_a_durable_prefix_that_verifies(void **state)
{
    fx_t *fx = *state;
    aud_report_t rep;
    uint64_t before = 0;

    for (int round = 0; round < 12; round++) {
        pid_t pid = fork();
        int status;
        assert_true(pid >= 0);
        if (pid == 0) {
            aud_file_opts_t o = fx_opts(fx, 40);
            aud_log_t *log = NULL;
            char target[80];
            aud_event_t ev;
            uint64_t t0 = ron_now_ms();
            o.batch_ms = 2;
            o.ckpt_ms = 5;
            if (aud_log_open_file(&o, &log) < 0)
                _exit(3);
            for (uint64_t i = 0; ron_now_ms() - t0 < 10000; i++) {
                event_of(i, &ev, target, sizeof target);
                if (aud_append(log, &ev, NULL, NULL, NULL) < 0)
                    _exit(4);
            }
            _exit(5); /* not reached within the parent's kill */
        }
        usleep((useconds_t)(20000 + ron_rand_below(60000)));
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(verify(fx, &rep), 0);
        assert_true(rep.last_seq >= before);
        before = rep.last_seq;
    }
    assert_true(before > 0);
    assert_true(rep.checkpoints > 0);
}

static void
collect(void *arg, const char *line, size_t len)
{
    char **p = arg;

    memcpy(*p, line, len);
    *p += len;
}

static void
test_ram_sink_keeps_newest_window_drops_and_counts_oldest(void **state)
{
    aud_log_t *log = NULL;
    aud_event_t ev;
    aud_report_t rep;
    aud_stats_t st;
    uint64_t acks[3] = {0, 0, 0}, seq = 0;
    char target[80], *buf = malloc(100 * AUD_MAX_RECORD), *p = buf;

    (void)state;
    assert_int_equal(aud_log_new_ram(0, &log), RON_EINVAL);
    assert_int_equal(aud_log_new_ram(100, &log), 0);
    for (uint64_t i = 0; i < 250; i++) {
        event_of(i, &ev, target, sizeof target);
        assert_int_equal(aud_append(log, &ev, count_ack, acks, &seq), 0);
    }
    assert_int_equal(seq, 250);
    assert_int_equal(acks[0], 250);
    assert_int_equal(acks[1], 0);
    aud_log_stats(log, &st);
    assert_int_equal(st.dropped, 150);
    assert_int_equal(st.records, 250);
    assert_int_equal(aud_log_ram_each(log, collect, &p), 0);
    assert_int_equal(aud_verify_buf(buf, (size_t)(p - buf), NULL, 0, NULL, false, &rep), 0);
    assert_int_equal(rep.records, 100);
    assert_int_equal(rep.first_seq, 151);
    assert_int_equal(rep.last_seq, 250);
    assert_int_equal(aud_verify_buf(buf, (size_t)(p - buf), NULL, 0, NULL, true, &rep),
                     RON_EAUDITCHAIN);
    assert_int_equal(rep.verdict, AUD_V_DROPPED);
    assert_int_equal(rep.bad_seq, 1);
    assert_int_equal(aud_log_close(log), 0);
    free(buf);
}

/* ------------------------------------------------------------ threads */

typedef struct {
    aud_log_t *log;
    int id;
    uint64_t acks;
} worker_t;

static void
worker_ack(void *arg, uint64_t seq, int rc)
{
    worker_t *w = arg;

    (void)seq;
    if (rc == 0)
        w->acks++; /* writer thread only, read after close joins it */
}

static void *
worker_main(void *arg)
{
    worker_t *w = arg;
    char target[80];
    aud_event_t ev;

    for (uint64_t i = 0; i < 5000; i++) {
        event_of(i * 4 + (uint64_t)w->id, &ev, target, sizeof target);
        if (aud_append(w->log, &ev, worker_ack, w, NULL) != 0)
            break;
        if (i % 1000 == 999)
            aud_log_flush(w->log);
    }
    return NULL;
}

static void
test_threads_concurrent_appenders_share_one_chain(void **state)
{
    fx_t *fx = *state;
    aud_file_opts_t o = fx_opts(fx, 1000);
    worker_t w[4];
    pthread_t t[4];
    aud_report_t rep;

    o.ckpt_ms = 20;
    assert_int_equal(aud_log_open_file(&o, &w[0].log), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){w[0].log, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(aud_log_close(w[0].log), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i].acks, 5000);
    assert_int_equal(verify(fx, &rep), 0);
    assert_int_equal(rep.records, 20000);
    assert_int_equal(rep.ckpt_seq, 20000);
}

/* ------------------------------------------------------------ ron audit verify */

/* Run `ron audit verify ARGS...` with output to files; returns its exit code, out/err filled. */
static int
run_ron(fx_t *fx, char *out, size_t outcap, char *err, size_t errcap, ...)
{
    const char *bindir = getenv("RON_BINARY_DIR");
    char bin[512], opath[160], epath[160], *argv[16], *buf;
    int n = 0, status;
    size_t len;
    va_list ap;
    pid_t pid;

    if (bindir == NULL)
        skip(); /* run by hand outside CTest */
    snprintf(bin, sizeof bin, "%s/ron", bindir);
    snprintf(opath, sizeof opath, "%s/out", fx->dir);
    snprintf(epath, sizeof epath, "%s/err", fx->dir);
    argv[n++] = bin;
    argv[n++] = (char *)"audit";
    argv[n++] = (char *)"verify";
    va_start(ap, errcap);
    for (char *a; (a = va_arg(ap, char *)) != NULL && n < 15;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(99);
        execv(bin, argv);
        _exit(98);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    buf = slurp(opath, &len);
    snprintf(out, outcap, "%s", buf);
    free(buf);
    buf = slurp(epath, &len);
    snprintf(err, errcap, "%s", buf);
    free(buf);
    return WEXITSTATUS(status);
}

static void
test_cli_audit_verify_exit_codes_and_one_line_reasons(void **state)
{
    fx_t *fx = *state;
    char out[1024], err[1024], key[2 * AUD_PK_LEN + 1], other[2 * AUD_PK_LEN + 1];
    uint8_t pk2[AUD_PK_LEN], sk2[AUD_SK_LEN];
    size_t len, a, b;
    char *buf;

    write_log(fx, 120, 50);
    ron_hex_encode(key, fx->pk, AUD_PK_LEN);
    crypto_sign_ed25519_keypair(pk2, sk2);
    ron_hex_encode(other, pk2, AUD_PK_LEN);
    /* Default paths under --data-dir. */
    assert_int_equal(run_ron(fx, out, sizeof out, err, sizeof err, "--data-dir", fx->dir, "--key",
                             key, NULL),
                     0);
    assert_non_null(strstr(out, "ok: 120 records (seq 1..120)"));
    assert_non_null(strstr(out, "3 checkpoints (last seq 120)"));
    assert_int_equal(run_ron(fx, out, sizeof out, err, sizeof err, fx->log, "--key", other, NULL),
                     1);
    assert_non_null(strstr(err, "checkpoint-signature at seq 50"));
    assert_int_equal(run_ron(fx, out, sizeof out, err, sizeof err, fx->log, "--key", "abc", NULL),
                     2);
    assert_int_equal(run_ron(fx, out, sizeof out, err, sizeof err, fx->log, "--bogus", NULL), 2);

    buf = slurp(fx->log, &len);
    spew(fx->log, buf, line_off(buf, len, 101));
    assert_int_equal(run_ron(fx, out, sizeof out, err, sizeof err, fx->log, NULL), 1);
    assert_non_null(strstr(err, "truncated at seq 101"));
    a = line_off(buf, len, 77);
    b = line_off(buf, len, 78);
    memmove(buf + a, buf + b, len - b);
    spew(fx->log, buf, len - (b - a));
    assert_int_equal(run_ron(fx, out, sizeof out, err, sizeof err, fx->log, NULL), 1);
    assert_non_null(strstr(err, "dropped at seq 77"));
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err)); /* one line */
    free(buf);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trip_is_canonical_and_escapes_fields),
        cmocka_unit_test(test_record_encode_rejects_bad_fields),
        cmocka_unit_test_setup_teardown(test_file_log_chain_round_trip_verifies_and_resumes,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_reports_edited_byte_with_its_seq, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_reports_dropped_record, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_reports_swapped_records_as_reordered, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_reports_cut_tail_as_truncated, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_verify_reports_log_shorter_than_earlier_checkpoint_and_open_refuses_it, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_verify_reports_forged_checkpoint_signature_and_foreign_key, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_catches_fully_rechained_log_by_its_checkpoints,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_ignored_by_verify_and_cut_on_reopen,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_batching_syncs_many_appends_in_few_fdatasyncs,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_kill9_during_appends_leaves_a_durable_prefix_that_verifies, fx_setup,
            fx_teardown),
        cmocka_unit_test(test_ram_sink_keeps_newest_window_drops_and_counts_oldest),
        cmocka_unit_test_setup_teardown(
            test_checkpoint_written_after_ckpt_ms_without_close_and_torn_checkpoint_ignored,
            fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_log_whose_last_record_was_edited,
                                        fx_setup, fx_teardown),
        cmocka_unit_test(test_write_error_reaches_ack_flush_and_later_appends),
        cmocka_unit_test_setup_teardown(test_cli_audit_verify_exit_codes_and_one_line_reasons,
                                        fx_setup, fx_teardown),
    };
    const struct CMUnitTest threaded[] = {
        cmocka_unit_test_setup_teardown(test_threads_concurrent_appenders_share_one_chain,
                                        fx_setup, fx_teardown),
    };

    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests_name("ron-audit threads", threaded, NULL, NULL);
    return cmocka_run_group_tests_name("ron-audit", tests, NULL, NULL);
}
