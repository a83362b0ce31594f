/*
 * ron_audit.h - ron-audit: an append-only, hash-chained, tamper-evident log
 * of security events (capabilities issued and revoked, policy changes, names
 * published, pins, admin actions, rejected requests).
 *
 * Why this shape: operators must be able to see who did what, and an
 * attacker with write access to the disk must not be able to edit, drop,
 * reorder or cut records without `ron audit verify` noticing. Each record
 * carries its sequence number and the BLAKE3 hash of the record before it;
 * signed checkpoints of (sequence, head hash), kept in a separate file, catch
 * a cut tail, which a hash chain alone cannot. Appending is cheap on the
 * caller's thread (serialize, hash, copy into a buffer under a mutex); one
 * writer thread writes batches and syncs each with one fdatasync, so the
 * disk cost is shared by every record of a batch. The format is in
 * docs/protocol/audit.md; operating it in docs/runbooks/audit.md.
 */
#ifndef RON_AUDIT_H
#define RON_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits. */
#define AUD_MAX_RECORD 4096              /* one serialized record line, newline included */
#define AUD_MAX_ACTOR 128                /* cap id, key fingerprint or "anon" */
#define AUD_MAX_OP 32                    /* operation name (get, put, mint, ...) */
#define AUD_MAX_TARGET 512               /* address, name, cap id, policy version */
#define AUD_MAX_REASON 256               /* short human reason */
#define AUD_MAX_PENDING (2u << 20)       /* queued bytes before aud_append blocks (backpressure) */
#define AUD_BATCH_MAX_BYTES (1u << 20)   /* a batch is written once it holds this much */
#define AUD_DEFAULT_BATCH_MS 10          /* a record waits at most this long before its sync */
#define AUD_DEFAULT_CKPT_EVERY 1000      /* checkpoint at least every N records ... */
#define AUD_DEFAULT_CKPT_MS 1000         /* ... or every T ms while records arrive */
#define AUD_MAX_RAM_RECORDS (1u << 20)   /* RAM sink ring capacity ceiling */
#define AUD_MAX_CHECKPOINT_LINE 512      /* one checkpoint line, newline included */

#define AUD_HASH_LEN 32                  /* BLAKE3 */
#define AUD_PK_LEN 32                    /* Ed25519 public key */
#define AUD_SK_LEN 64                    /* Ed25519 secret key (libsodium layout) */
#define AUD_SIG_LEN 64
#define AUD_TENANT_HEX_LEN 32

/* What happened. The names on the wire are in aud_kind_name(). */
typedef enum {
    AUD_CAP_ISSUED = 0,
    AUD_CAP_REVOKED,
    AUD_POLICY_CHANGED,
    AUD_NAME_PUBLISHED,
    AUD_PIN,
    AUD_UNPIN,
    AUD_ADMIN,
    AUD_REJECTED,
    AUD_KIND_COUNT
} aud_kind_t;

typedef enum { AUD_OK = 0, AUD_DENIED, AUD_ERROR, AUD_OUTCOME_COUNT } aud_outcome_t;

/*
 * One event as the caller describes it. Strings are borrowed, NUL-terminated
 * UTF-8 (NULL means ""); tenant is "" or 32 lowercase hex. ts_ms 0 means now.
 */
typedef struct {
    uint64_t ts_ms;
    aud_kind_t kind;
    const char *actor;
    const char *tenant;
    const char *op;
    const char *target;
    aud_outcome_t outcome;
    const char *reason;
} aud_event_t;

/* A parsed record (views into the parsed line's own buffer). */
typedef struct {
    uint64_t seq;
    uint64_t ts_ms;
    aud_kind_t kind;
    aud_outcome_t outcome;
    char actor[AUD_MAX_ACTOR + 1];
    char tenant[AUD_TENANT_HEX_LEN + 1];
    char op[AUD_MAX_OP + 1];
    char target[AUD_MAX_TARGET + 1];
    char reason[AUD_MAX_REASON + 1];
    uint8_t prev[AUD_HASH_LEN];
    uint8_t hash[AUD_HASH_LEN];      /* as stored in the line */
    uint8_t computed[AUD_HASH_LEN];  /* BLAKE3 of the line without its hash field */
} aud_record_t;

typedef struct {
    uint64_t seq;
    uint64_t ts_ms;
    uint8_t head[AUD_HASH_LEN];
    uint8_t pk[AUD_PK_LEN];
    uint8_t sig[AUD_SIG_LEN];
} aud_checkpoint_t;

/* "cap_issued", ...; NULL when out of range. */
const char *aud_kind_name(aud_kind_t kind);
const char *aud_outcome_name(aud_outcome_t outcome);

/* The genesis value: the `prev` of record 1 (32 zero bytes). */
extern const uint8_t aud_genesis[AUD_HASH_LEN];

/*
 * Serialize record `seq` of ev chained to prev into out (outcap bytes, at
 * least AUD_MAX_RECORD), newline included; hash_out gets the record's hash.
 * Returns the length, RON_EINVAL for a bad kind/outcome/tenant or invalid
 * UTF-8, RON_ETOOBIG when a field or the line is over its limit. Any thread.
 */
int aud_record_encode(const aud_event_t *ev, uint64_t seq, const uint8_t prev[static AUD_HASH_LEN],
                      char *out, size_t outcap, uint8_t hash_out[static AUD_HASH_LEN]);

/*
 * Parse one record line (len bytes, the trailing newline optional) that must
 * be exactly in canonical form. Returns 0, or RON_EAUDIT when it is not.
 * rec_out->computed is filled; comparing it with rec_out->hash is the
 * caller's business (aud_verify_* do it). Any thread.
 */
int aud_record_parse(const char *line, size_t len, aud_record_t *rec_out);

/* Checkpoint line: encode (signs with sk; returns the length) and parse. */
int aud_checkpoint_encode(uint64_t seq, uint64_t ts_ms, const uint8_t head[static AUD_HASH_LEN],
                          const uint8_t sk[static AUD_SK_LEN], char *out, size_t outcap);
int aud_checkpoint_parse(const char *line, size_t len, aud_checkpoint_t *cp_out);
/* true when cp's signature is valid under its own key. */
bool aud_checkpoint_sig_ok(const aud_checkpoint_t *cp);

/* ---- sinks ---- */

typedef struct aud_log aud_log_t;

/*
 * Durable-ack callback: runs on the writer thread once the batch holding
 * record seq is synced (rc 0) or failed to write (rc < 0). For the RAM sink it
 * runs on the appending thread before aud_append returns. Must not call back
 * into the log.
 */
typedef void (*aud_ack_cb)(void *arg, uint64_t seq, int rc);

typedef struct {
    const char *log_path;        /* required; created mode 0600 */
    const char *ckpt_path;       /* NULL: no checkpoints */
    const uint8_t *sign_sk;      /* AUD_SK_LEN bytes, borrowed (copied); NULL: no checkpoints */
    unsigned batch_ms;           /* 0: AUD_DEFAULT_BATCH_MS */
    unsigned ckpt_every;         /* 0: AUD_DEFAULT_CKPT_EVERY */
    unsigned ckpt_ms;            /* 0: AUD_DEFAULT_CKPT_MS */
} aud_file_opts_t;

typedef struct {
    uint64_t records;            /* appended since open */
    uint64_t last_seq;           /* sequence number of the newest record */
    uint64_t durable_seq;        /* newest record known synced (file) or stored (RAM) */
    uint64_t batches;            /* batches written */
    uint64_t fsyncs;             /* fdatasync calls on the log */
    uint64_t checkpoints;        /* checkpoints written */
    uint64_t dropped;            /* RAM sink: oldest records dropped */
    uint64_t torn_bytes;         /* bytes of a torn tail cut at open */
    int write_error;             /* first write/sync error, 0 if none */
} aud_stats_t;

/*
 * Open (or create) a file log and start its writer thread. An existing log
 * resumes after its last complete record; a torn last line (no newline, left
 * by a crash) is cut off first and counted in torn_bytes. The log's
 * directory is created if missing. Returns 0, -errno, or RON_EAUDIT when the
 * last complete record does not parse. Any thread.
 */
int aud_log_open_file(const aud_file_opts_t *opts, aud_log_t **log_out);

/*
 * A RAM log for amnesia: a ring of `capacity` records (1..AUD_MAX_RAM_RECORDS);
 * when full the oldest record is dropped and counted (never refused), and the
 * chain continues, so the kept window still verifies from its first record.
 */
int aud_log_new_ram(size_t capacity, aud_log_t **log_out);

/*
 * Queue one record. Returns once it is queued (file) or stored (RAM) with
 * its sequence number in *seq_out (may be NULL). cb (may be NULL) reports
 * durability. Blocks while AUD_MAX_PENDING bytes are queued. Returns
 * RON_EINVAL/RON_ETOOBIG as aud_record_encode, RON_ECLOSED after close, or
 * the writer's first write error. Any thread.
 */
int aud_append(aud_log_t *log, const aud_event_t *ev, aud_ack_cb cb, void *arg, uint64_t *seq_out);

/* Block until every record queued so far is synced; returns 0 or the write error. Any thread. */
int aud_log_flush(aud_log_t *log);

void aud_log_stats(aud_log_t *log, aud_stats_t *stats_out);

/*
 * RAM sink: call fn for each kept record line, oldest first (lines include
 * the newline), under the log's lock. Returns RON_EINVAL for a file log.
 */
int aud_log_ram_each(aud_log_t *log, void (*fn)(void *arg, const char *line, size_t len),
                     void *arg);

/*
 * Flush, write a final checkpoint (file sink with a key), stop the writer,
 * wipe the key and free. NULL does nothing. Returns the first write error or 0.
 */
int aud_log_close(aud_log_t *log);

/* ---- verification ---- */

typedef enum {
    AUD_V_OK = 0,
    AUD_V_MALFORMED,      /* a line is not a canonical record */
    AUD_V_EDITED,         /* a record's contents do not match its hash */
    AUD_V_CHAIN,          /* a record's prev is not the hash of the record before */
    AUD_V_DROPPED,        /* a sequence number is missing */
    AUD_V_REORDERED,      /* records are out of order */
    AUD_V_TRUNCATED,      /* the log ends before its last checkpoint */
    AUD_V_CKPT_SIG,       /* a checkpoint's signature is bad or by another key */
    AUD_V_CKPT_MISMATCH,  /* a checkpoint's head is not the log's hash at that seq */
    AUD_V_CKPT_MALFORMED, /* a checkpoint line does not parse or goes backwards */
} aud_verdict_t;

typedef struct {
    aud_verdict_t verdict;
    uint64_t bad_seq;        /* first bad sequence number (0 when OK) */
    uint64_t line;           /* 1-based line of the log (or checkpoint file) at fault */
    uint64_t records;        /* complete records checked */
    uint64_t first_seq, last_seq;
    uint8_t head[AUD_HASH_LEN];
    uint64_t checkpoints;    /* checkpoints checked */
    uint64_t ckpt_seq;       /* newest checkpoint's sequence number */
    uint64_t torn_bytes;     /* ignored torn tail of the log */
    char reason[256];        /* one line, what is wrong */
} aud_report_t;

/* Verdict slug: "ok", "edited", "dropped", ... */
const char *aud_verdict_name(aud_verdict_t v);

/*
 * Verify a log held in memory and optional checkpoints (ckpt NULL: none).
 * pk NULL trusts the first checkpoint's key (reported) but still requires
 * every checkpoint to use it; otherwise every checkpoint must be signed by
 * pk. from_genesis false lets the first record have any seq/prev (a RAM
 * window). Returns 0 when it verifies, RON_EAUDITCHAIN with the report
 * filled otherwise. Any thread.
 */
int aud_verify_buf(const char *log, size_t log_len, const char *ckpt, size_t ckpt_len,
                   const uint8_t *pk, bool from_genesis, aud_report_t *rep_out);

/* The same for files; ckpt_path NULL or missing file: no checkpoints. -errno if the log can't be read. */
int aud_verify_file(const char *log_path, const char *ckpt_path, const uint8_t *pk,
                    aud_report_t *rep_out);

#endif
