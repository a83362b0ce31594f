/*
 * libron.h - libron, the C client library of a node's app port (ron-app-sdk,
 * DESIGN.md §2, §11; wire contract docs/protocol/app-port.md, OAP/1 over TCP).
 *
 * A blocking client: every call runs to completion on the calling thread,
 * waiting with poll() against a deadline, so applications need no event loop.
 * One ron_client_t holds one connection (opened on first use, HELLO
 * negotiating max_frame, reopened after a failure) and runs one operation at
 * a time; use one client per thread.
 *
 * Names: public symbols are ron_client_* / RON_CLIENT_*; helpers shared
 * between the library's files are rc__*. docs/sdk/libron.md is the guide.
 *
 * Invariants:
 *   - transfers stream: a put reads its source and a get hands bytes to its
 *     sink one data frame at a time, with credit-based flow control both ways
 *     (the client grants credit only as its sink consumes), so memory stays
 *     bounded (about RON_CLIENT_CHUNK + 2 x max_frame) for any object size;
 *   - a put hashes what it sends with BLAKE3 and fails with RON_EDIGEST when
 *     the node answers another address; a whole-object get hashes what it
 *     receives and fails with RON_EDIGEST when the bytes are not the address
 *     (a ranged get relies on the node's verified streaming);
 *   - retries (at most max_retries, full-jitter exponential backoff, never
 *     less than the node's retry_after_ms) follow a lost connection or a
 *     retryable error envelope (spec §3); pin, unpin, gc and name publish
 *     carry an idempotency key kept across retries, so a retry after a lost
 *     answer is not applied twice; a get resumes where its sink stopped; a
 *     put from a source that cannot be rewound (a pipe) is not retried once
 *     body bytes were sent;
 *   - every failure returns a negative RON_E* code (ron_err.h); when the node
 *     answered with an error envelope the code is RON_EREMOTE and
 *     ron_client_last_error() holds status, slug, message and reason.
 */
#ifndef LIBRON_H
#define LIBRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits and defaults ---- */
#define RON_CLIENT_DEFAULT_NODE "127.0.0.1:9090" /* DESIGN.md §8: the app port */
#define RON_CLIENT_TIMEOUT_MS 30000          /* default: longest wait without progress */
#define RON_CLIENT_CONNECT_TIMEOUT_MS 5000   /* connect + HELLO, within the timeout above */
#define RON_CLIENT_MAX_RETRIES 3             /* default retries after the first attempt */
#define RON_CLIENT_RETRIES_LIMIT 10          /* more are refused: bounded by design */
#define RON_CLIENT_BACKOFF_BASE_MS 100       /* backoff before retry n: [0, base * 2^n] */
#define RON_CLIENT_BACKOFF_MAX_MS 5000       /* ceiling of the exponential part */
#define RON_CLIENT_RETRY_AFTER_MAX_MS 30000  /* a node's retry_after_ms is honoured up to this */
#define RON_CLIENT_CHUNK 262144u             /* put data frame payload (<= max_frame - 38) */
#define RON_CLIENT_MAX_CAP 65535u            /* START cap section is u16-sized */
#define RON_CLIENT_ADDR_LEN 67               /* "b3:" + 64 lowercase hex, without the NUL */
#define RON_CLIENT_IDEM_LEN 32               /* idempotency key: 32 random hex digits */
#define RON_CLIENT_MAX_HOST 255              /* host part of a node address */
#define RON_CLIENT_MAX_PATH 1024             /* data dir and capability file paths */
#define RON_CLIENT_MAX_LIST 256              /* objects per list page (storage limit) */
#define RON_CLIENT_TO_END UINT64_MAX         /* get length: up to the end of the object */
#define RON_CLIENT_ENV_NODE "RON_NODE"
#define RON_CLIENT_ENV_CAP "RON_CAP"
#define RON_CLIENT_ENV_DATA_DIR "RON_DATA_DIR"
#define RON_CLIENT_CAP_FILE "operator.cap" /* in the data dir */

typedef struct ron_client ron_client_t;

/* How to reach and talk to a node. Pointers are borrowed for ron_client_new only. */
typedef struct {
    const char *node;      /* "[ID@]HOST:PORT" or "[ID@][IPv6]:PORT"; NULL: the default */
    const char *cap;       /* capability token sent in every START; NULL or "": none */
    uint8_t tenant[16];    /* tenant_id of every frame; all zero: none */
    uint32_t timeout_ms;   /* longest wait without progress; 0: RON_CLIENT_TIMEOUT_MS */
    int max_retries;       /* < 0: RON_CLIENT_MAX_RETRIES; 0: never retry */
    const char *ua;        /* HELLO user agent; NULL: "libron/1" */
} ron_client_opts_t;

/* The last failure of a client: the error envelope when the node sent one. */
typedef struct {
    int rc;               /* what the failed call returned (0 after a success) */
    uint16_t status;      /* envelope status (404, 503, ...); 0 when the node sent none */
    char slug[32];        /* "not_found", ...; "" without an envelope */
    char message[1025];   /* the node's message, or a local explanation */
    char reason[64];      /* envelope reason ("corrupt", a field name) or "" */
    bool retryable;       /* envelope retryable */
    uint32_t retry_after_ms; /* envelope hint; 0: none */
    unsigned attempts;    /* attempts made by the failed call (1 + retries) */
} ron_client_error_t;

/* A parsed node address. */
typedef struct {
    char host[RON_CLIENT_MAX_HOST + 1]; /* without IPv6 brackets */
    uint16_t port;
    bool has_id;
    uint8_t id[32]; /* node id (BLAKE3 of its key); pinned once the app port speaks TLS */
} ron_client_node_t;

/* Metadata of a get's answer. */
typedef struct {
    uint16_t status;        /* 200 whole object, 206 range */
    uint64_t size;          /* size of the whole object */
    uint64_t offset;        /* first byte served */
    uint64_t length;        /* bytes served */
    char content_type[256]; /* "" when the node sent none */
} ron_client_get_info_t;

/* One object as stat and list describe it. */
typedef struct {
    char address[RON_CLIENT_ADDR_LEN + 1];
    uint64_t size;          /* bytes */
    uint64_t created;       /* unix seconds */
    uint64_t pins;          /* this tenant's pin count */
    char state[16];         /* "pinned" or "cache" */
    char content_type[256]; /* "" when none */
} ron_client_stat_t;

/*
 * A get's sink: called with each verified data frame in order (data is a view
 * valid during the call). Return 0 to go on, or a negative code to stop the
 * get, which then returns that code without retrying.
 */
typedef int (*ron_client_sink_fn)(void *arg, const uint8_t *data, size_t len);

/* ---- lifecycle ---- */

/*
 * Make a client for opts (NULL: every default). Connects lazily, at the first
 * operation. Returns 0 with *c_out (free with ron_client_free), RON_EINVAL for
 * a malformed node address or max_retries above RON_CLIENT_RETRIES_LIMIT, or
 * RON_ETOOBIG for a capability longer than RON_CLIENT_MAX_CAP. Any thread.
 */
int ron_client_new(const ron_client_opts_t *opts, ron_client_t **c_out);

/* Close the connection and free c. NULL does nothing. */
void ron_client_free(ron_client_t *c);

/* Change the wait bound (0: the default) for the following operations. */
void ron_client_set_timeout(ron_client_t *c, uint32_t timeout_ms);

/* The last failure (rc 0 after a success). A view valid until the next call on c. */
const ron_client_error_t *ron_client_last_error(const ron_client_t *c);

/* ---- storage (app 1) ---- */

/*
 * Store the bytes read from fd (borrowed; read from its current offset to
 * EOF), streamed, with optional content_type (NULL: none). Writes the address
 * into addr_out and the size into *size_out (may be NULL). A regular file is
 * rewound and sent again on a retry; any other source is retried only when no
 * body byte had been sent. Returns 0; RON_EDIGEST when the node's address is
 * not the BLAKE3 of the bytes sent; RON_EREMOTE (envelope in last_error:
 * 413, 507, ...); RON_ETIMEOUT; a connection error (-ECONNREFUSED,
 * RON_ECLOSED, ...) after the retries; -errno reading fd.
 */
int ron_client_put_fd(ron_client_t *c, int fd, const char *content_type,
                      char addr_out[static RON_CLIENT_ADDR_LEN + 1], uint64_t *size_out);

/* As ron_client_put_fd for len bytes at buf (borrowed; always retryable). */
int ron_client_put_buf(ron_client_t *c, const void *buf, size_t len, const char *content_type,
                       char addr_out[static RON_CLIENT_ADDR_LEN + 1], uint64_t *size_out);

/*
 * Fetch length bytes (RON_CLIENT_TO_END: to the end) of the object addr from
 * offset, handing them to sink in order. With offset 0 and length
 * RON_CLIENT_TO_END the whole object is hashed and checked against addr
 * before the call returns 0 (RON_EDIGEST otherwise; the sink has then seen
 * bytes that did not verify, so write them somewhere temporary). After a
 * lost connection the get resumes at the first byte the sink has not seen.
 * info_out (may be NULL) gets the answer's metadata. Returns 0; RON_EADDR
 * for a malformed addr; RON_EREMOTE (404 not_found, 416
 * range_not_satisfiable, 500 corrupt, ...); RON_EDIGEST; RON_EPROTO when the
 * node sent fewer or more bytes than announced; the sink's code; RON_ETIMEOUT
 * or a connection error after the retries.
 */
int ron_client_get(ron_client_t *c, const char *addr, uint64_t offset, uint64_t length,
                   ron_client_sink_fn sink, void *arg, ron_client_get_info_t *info_out);

/* ron_client_get writing to fd (borrowed; write errors are -errno, not retried). */
int ron_client_get_fd(ron_client_t *c, const char *addr, uint64_t offset, uint64_t length, int fd,
                      ron_client_get_info_t *info_out);

/* Describe the object addr. Returns 0, RON_EADDR, RON_EREMOTE (404), or as ron_client_get. */
int ron_client_stat(ron_client_t *c, const char *addr, ron_client_stat_t *st_out);

/*
 * One page of the objects held, in address order, after the address after
 * (NULL: from the start), at most limit (1..RON_CLIENT_MAX_LIST) into items.
 * *n_out gets the count; next_out (may be NULL) gets the cursor of the next
 * page, or "" when this was the last. Returns 0, RON_EINVAL, or as stat.
 */
int ron_client_list(ron_client_t *c, const char *after, unsigned limit, ron_client_stat_t *items,
                    size_t *n_out, char next_out[RON_CLIENT_ADDR_LEN + 1]);

/* Pin / unpin addr for the client's tenant; *pins_out (may be NULL) gets the
 * tenant's count after the call. A node that lacks addr fetches it whole
 * (verified) before pinning (docs/protocol/storage.md, "A pin that fetches").
 * Idempotent across retries. Returns as stat. */
int ron_client_pin(ron_client_t *c, const char *addr, uint64_t *pins_out);
int ron_client_unpin(ron_client_t *c, const char *addr, uint64_t *pins_out);

/* Evict unpinned (cache) objects until target bytes are freed or none is
 * left; *freed_out (may be NULL) gets the bytes freed. Idempotent across
 * retries. Returns 0, RON_EREMOTE, or a connection error. */
int ron_client_gc(ron_client_t *c, uint64_t target, uint64_t *freed_out);

/* ---- naming (app 2) ---- */

/*
 * Publish a signed name record given in ron-naming's JSON form (borrowed;
 * sign it with name_record_sign or ron-kms first). *unchanged_out (may be
 * NULL) tells that this exact record was already current. Idempotent across
 * retries. Returns 0, RON_EREMOTE (400 malformed, 403 bad signature or
 * another owner, 409 stale seq), or a connection error.
 */
int ron_client_name_publish(ron_client_t *c, const char *record_json, bool *unchanged_out);

/*
 * The current record of name as JSON in new memory (*record_json_out, caller
 * frees). Returns 0, RON_EREMOTE (404 when the name has no record), or a
 * connection error.
 */
int ron_client_name_resolve(ron_client_t *c, const char *name, char **record_json_out);

/* ---- kernel (app 6) ---- */

/* The node's status JSON (as the admin port's /admin/status) in new memory
 * (*json_out, caller frees). Returns 0, RON_EREMOTE, or a connection error. */
int ron_client_status(ron_client_t *c, char **json_out);

/* Ask the node to re-read its config. *changed_out and *version_out may be
 * NULL. Returns 0, RON_EREMOTE (the refusal), or a connection error. */
int ron_client_reload(ron_client_t *c, bool *changed_out, uint64_t *version_out);

/* Let the quarantined service run again. Returns 0, RON_EREMOTE (404 unknown,
 * 409 not quarantined), or a connection error. */
int ron_client_release(ron_client_t *c, const char *service);

/*
 * Any single-frame operation: START payload {"op":op, ...fields of
 * args_json} (args_json: a JSON object text or NULL) on app_proto_id, with
 * "idem" added when idem is true (one key for every attempt). The answer's
 * JSON goes to new memory in *answer_out (caller frees; may be NULL) and its
 * status to *status_out (may be NULL). Returns 0, RON_EINVAL for bad
 * arguments, RON_EREMOTE, or a connection error.
 */
int ron_client_request(ron_client_t *c, uint16_t app_proto_id, const char *op,
                       const char *args_json, bool idem, char **answer_out, uint16_t *status_out);

/* ---- pure helpers (no I/O except where said) ---- */

/*
 * Parse "[ID@]HOST:PORT": HOST a name, an IPv4 address or a bracketed IPv6
 * address ("[::1]:9090"); PORT 1..65535; ID 64 hex digits. Returns 0 or
 * RON_EINVAL.
 */
int ron_client_node_parse(const char *s, ron_client_node_t *node_out);

/*
 * Parse a byte range "A-B" (inclusive, A <= B) or "A-" (to the end) into
 * *offset_out and *length_out (RON_CLIENT_TO_END for "A-"). Returns 0 or
 * RON_EINVAL.
 */
int ron_client_range_parse(const char *s, uint64_t *offset_out, uint64_t *length_out);

/* Check "b3:" + 64 lowercase hex. Returns 0 or RON_EADDR. */
int ron_client_addr_check(const char *addr);

/*
 * Backoff before retry number attempt (0 = the first retry): full jitter,
 * r mod (min(RON_CLIENT_BACKOFF_MAX_MS, RON_CLIENT_BACKOFF_BASE_MS << attempt)
 * + 1), but at least retry_after_ms (capped at RON_CLIENT_RETRY_AFTER_MAX_MS).
 * r is a uniform random number (the library passes ron_rand_below's).
 */
uint32_t ron_client_backoff_ms(unsigned attempt, uint32_t retry_after_ms, uint64_t r);

/*
 * The node address to use: flag when not NULL, else $RON_NODE when set and
 * non-empty, else RON_CLIENT_DEFAULT_NODE. Returns a view (flag, the
 * environment, or a static string).
 */
const char *ron_client_node_find(const char *flag);

/*
 * The data dir: flag when not NULL, else $RON_DATA_DIR, else
 * $XDG_DATA_HOME/ron, else $HOME/.local/share/ron (as `ron node`), into out
 * (cap bytes). Returns 0, RON_ETOOBIG, or RON_EINVAL when none can be formed.
 */
int ron_client_data_dir(const char *flag, char *out, size_t cap);

/*
 * The capability to send: flag when not NULL, else $RON_CAP when set and
 * non-empty, else the contents of <data_dir>/operator.cap (trailing
 * whitespace removed) when that file exists and is readable (data_dir NULL:
 * skip). Reads a file (blocking). Returns 0 with *cap_out new memory (caller
 * frees) or NULL when there is none; RON_ETOOBIG for a token or file over
 * RON_CLIENT_MAX_CAP; -errno for a file that exists but cannot be read for
 * another reason than permissions.
 */
int ron_client_cap_find(const char *flag, const char *data_dir, char **cap_out);

/* Write a fresh idempotency key (RON_CLIENT_IDEM_LEN random hex digits and a NUL). */
void ron_client_idem_new(char out[static RON_CLIENT_IDEM_LEN + 1]);

#endif
