/*
 * rc_ops.c - libron's operations over the connection of rc_conn.c: the
 * retry loop, single-frame requests (stat, list, pin, names, kernel ops),
 * the streamed put (hashing what it sends, waiting for the node's credit)
 * and the streamed get (granting credit as its sink consumes, hashing whole
 * objects, resuming after a lost connection).
 * Invariants: an attempt that fails mid-stream drops the connection, so a
 * retry starts clean; an idempotency key is drawn once per call and reused
 * by its retries; a put whose source cannot be rewound is not retried once
 * a body byte went out.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blake3.h"
#include "rc_internal.h"
#include "ron_err.h"
#include "ron_util.h"

_Static_assert(sizeof(((ron_client_error_t *)0)->message) == PROTO_MAX_MESSAGE + 1,
               "error message size follows ron-proto");
_Static_assert(sizeof(((ron_client_error_t *)0)->slug) == PROTO_MAX_SLUG + 1,
               "slug size follows ron-proto");
_Static_assert(sizeof(((ron_client_error_t *)0)->reason) == PROTO_MAX_REASON + 1,
               "reason size follows ron-proto");

/* ---- lifecycle ---- */

int
ron_client_new(const ron_client_opts_t *opts, ron_client_t **c_out)
{
    ron_client_opts_t def = {0};
    ron_client_t *c;
    int rc;

    if (opts == NULL)
        opts = &def;
    if (opts->max_retries > RON_CLIENT_RETRIES_LIMIT)
        return RON_EINVAL;
    if (opts->cap != NULL && strlen(opts->cap) > RON_CLIENT_MAX_CAP)
        return RON_ETOOBIG;
    c = ron_xcalloc(1, sizeof *c);
    c->fd = -1;
    rc = ron_client_node_parse(opts->node != NULL ? opts->node : RON_CLIENT_DEFAULT_NODE,
                               &c->node);
    if (rc < 0) {
        free(c);
        return rc;
    }
    snprintf(c->port_s, sizeof c->port_s, "%u", (unsigned)c->node.port);
    if (opts->cap != NULL && opts->cap[0] != '\0') {
        c->cap = ron_xstrdup(opts->cap);
        c->cap_len = strlen(c->cap);
    }
    memcpy(c->tenant, opts->tenant, sizeof c->tenant);
    c->timeout_ms = opts->timeout_ms != 0 ? opts->timeout_ms : RON_CLIENT_TIMEOUT_MS;
    c->max_retries = opts->max_retries < 0 ? RON_CLIENT_MAX_RETRIES : (unsigned)opts->max_retries;
    snprintf(c->ua, sizeof c->ua, "%s", opts->ua != NULL ? opts->ua : "libron/1");
    *c_out = c;
    return 0;
}

void
ron_client_free(ron_client_t *c)
{
    if (c == NULL)
        return;
    rc__drop(c);
    if (c->cap != NULL)
        explicit_bzero(c->cap, strlen(c->cap)); /* a capability: wiped, not just freed */
    free(c->cap);
    free(c);
}

void
ron_client_set_timeout(ron_client_t *c, uint32_t timeout_ms)
{
    c->timeout_ms = timeout_ms != 0 ? timeout_ms : RON_CLIENT_TIMEOUT_MS;
}

const ron_client_error_t *
ron_client_last_error(const ron_client_t *c)
{
    return &c->err;
}

/* ---- retry loop ---- */

/* One attempt of an operation; returns 0 or a negative code (c->err set). */
typedef int (*attempt_fn)(ron_client_t *c, void *ctx);
/* Whether the operation may be retried after this failure (NULL: always). */
typedef bool (*may_retry_fn)(void *ctx);

static void
sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int
run(ron_client_t *c, attempt_fn fn, may_retry_fn may, void *ctx)
{
    unsigned attempt;
    int rc;

    for (attempt = 0;; attempt++) {
        c->conn_lost = false;
        rc__progress(c);
        rc = fn(c, ctx);
        c->err.attempts = attempt + 1;
        if (rc >= 0) {
            memset(&c->err, 0, sizeof c->err);
            c->err.attempts = attempt + 1;
            return rc;
        }
        c->err.rc = rc;
        if (!(c->conn_lost || (rc == RON_EREMOTE && c->err.retryable)))
            return rc;
        if (attempt >= c->max_retries || (may != NULL && !may(ctx)))
            return rc;
        sleep_ms(ron_client_backoff_ms(attempt, c->err.retry_after_ms,
                                       ron_rand_below(UINT64_MAX)));
    }
}

/* ---- single-frame requests ---- */

typedef struct {
    uint16_t app;
    const char *payload; /* START payload JSON */
    size_t payload_len;
    char *answer; /* out: new memory */
    uint16_t status;
} req_ctx_t;

/* The START frame of a new stream on c (cap and tenant set). */
static void
start_frame(ron_client_t *c, oap_frame_t *f, uint16_t app, uint16_t flags, const char *payload,
            size_t len)
{
    memset(f, 0, sizeof *f);
    f->flags = (uint16_t)(OAP_F_REQ | OAP_F_START | flags);
    f->app_proto_id = app;
    memcpy(f->tenant_id, c->tenant, sizeof f->tenant_id);
    f->corr_id = rc__corr(c);
    f->cap = (const uint8_t *)c->cap;
    f->cap_len = (uint16_t)c->cap_len;
    f->payload = (const uint8_t *)payload;
    f->payload_len = len;
}

/* The first answer frame of stream corr: RESP on our stream. */
static int
answer_frame(ron_client_t *c, uint64_t corr, oap_frame_t *f)
{
    int rc;
    while ((rc = rc__recv(c, f, true)) == OAP_STREAM_CONTROL)
        ;
    if (rc < 0)
        return rc;
    if (f->corr_id != corr || !(f->flags & OAP_F_RESP)) {
        rc__drop(c);
        return rc__fail(c, RON_EPROTO, "node answered on an unexpected stream");
    }
    return 0;
}

static int
request_attempt(ron_client_t *c, void *arg)
{
    req_ctx_t *r = arg;
    oap_frame_t f;
    uint64_t corr;
    int rc;

    if ((rc = rc__ensure(c)) < 0)
        return rc;
    if (r->payload_len + OAP_HDR_LEN + c->cap_len > c->max_frame)
        return rc__fail(c, RON_ETOOBIG, "request larger than the node's max_frame");
    start_frame(c, &f, r->app, OAP_F_END, r->payload, r->payload_len);
    corr = f.corr_id;
    if ((rc = rc__send(c, &f)) < 0)
        return rc;
    if ((rc = answer_frame(c, corr, &f)) < 0)
        return rc;
    if (!(f.flags & OAP_F_END)) {
        rc__drop(c);
        return rc__fail(c, RON_EPROTO, "node sent a streamed answer to a single-frame request");
    }
    r->status = f.code;
    if (f.code >= 400)
        return rc__error_frame(c, &f);
    free(r->answer);
    r->answer = ron_xmalloc(f.payload_len + 1);
    memcpy(r->answer, f.payload, f.payload_len);
    r->answer[f.payload_len] = '\0';
    return 0;
}

/* Build {"op":op, ...args, "idem"?} compactly. Returns new memory or NULL. */
static char *
start_payload(const char *op, json_t *args, const char *idem)
{
    char *s = NULL;
    size_t len;
    if (idem != NULL)
        json_object_set_new(args, "idem", json_string(idem));
    if (proto_start_encode(op, args, &s, &len) < 0)
        return NULL;
    return s;
}

/* Run op with args (taken) and parse the 2xx answer into *ans_out (new ref). */
static int
call_json(ron_client_t *c, uint16_t app, const char *op, json_t *args, bool idem, json_t **ans_out,
          uint16_t *status_out)
{
    char key[RON_CLIENT_IDEM_LEN + 1];
    req_ctx_t r = {.app = app};
    char *payload;
    json_error_t je;
    int rc;

    if (idem)
        ron_client_idem_new(key);
    payload = start_payload(op, args, idem ? key : NULL);
    json_decref(args);
    if (payload == NULL)
        return rc__fail(c, RON_EINVAL, "cannot encode the %s request", op);
    r.payload = payload;
    r.payload_len = strlen(payload);
    rc = run(c, request_attempt, NULL, &r);
    free(payload);
    if (status_out != NULL)
        *status_out = r.status;
    if (rc < 0)
        goto out;
    if (ans_out != NULL) {
        *ans_out = json_loads(r.answer, JSON_REJECT_DUPLICATES, &je);
        if (*ans_out == NULL || !json_is_object(*ans_out)) {
            json_decref(*ans_out);
            *ans_out = NULL;
            rc = rc__fail(c, RON_EJSON, "malformed %s answer from the node", op);
        }
    }
out:
    free(r.answer);
    return rc;
}

int
ron_client_request(ron_client_t *c, uint16_t app_proto_id, const char *op,
                   const char *args_json, bool idem, char **answer_out, uint16_t *status_out)
{
    json_t *args, *ans = NULL;
    json_error_t je;
    int rc;

    if (answer_out != NULL)
        *answer_out = NULL;
    args = args_json != NULL ? json_loads(args_json, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (args == NULL || !json_is_object(args) || json_object_get(args, "op") != NULL) {
        json_decref(args);
        return rc__fail(c, RON_EINVAL, "args must be a JSON object without \"op\"");
    }
    rc = call_json(c, app_proto_id, op, args, idem, answer_out != NULL ? &ans : NULL, status_out);
    if (rc == 0 && answer_out != NULL)
        *answer_out = json_dumps(ans, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(ans);
    return rc;
}

static json_t *
u64_str(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return json_string(b);
}

static void
copy_str(char *out, size_t cap, json_t *v)
{
    snprintf(out, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static int
stat_from_json(json_t *o, ron_client_stat_t *st)
{
    memset(st, 0, sizeof *st);
    copy_str(st->address, sizeof st->address, json_object_get(o, "address"));
    copy_str(st->state, sizeof st->state, json_object_get(o, "state"));
    copy_str(st->content_type, sizeof st->content_type, json_object_get(o, "content_type"));
    if (ron_client_addr_check(st->address) < 0 ||
        rc__json_u64(json_object_get(o, "size"), &st->size) < 0)
        return RON_EJSON;
    /* Optional in older answers; 0 when absent. */
    (void)rc__json_u64(json_object_get(o, "created"), &st->created);
    (void)rc__json_u64(json_object_get(o, "pins"), &st->pins);
    return 0;
}

static int
bad_addr(ron_client_t *c, const char *addr)
{
    return rc__fail(c, RON_EADDR, "malformed address '%s' (b3: and 64 lowercase hex digits)",
                    addr != NULL ? addr : "");
}

int
ron_client_stat(ron_client_t *c, const char *addr, ron_client_stat_t *st_out)
{
    json_t *ans = NULL;
    int rc;

    if (ron_client_addr_check(addr) < 0)
        return bad_addr(c, addr);
    rc = call_json(c, OAP_APP_STORAGE, "stat", json_pack("{s:s}", "address", addr), false, &ans,
                   NULL);
    if (rc == 0 && stat_from_json(ans, st_out) < 0)
        rc = rc__fail(c, RON_EJSON, "malformed stat answer from the node");
    json_decref(ans);
    return rc;
}

int
ron_client_list(ron_client_t *c, const char *after, unsigned limit, ron_client_stat_t *items,
                size_t *n_out, char next_out[RON_CLIENT_ADDR_LEN + 1])
{
    json_t *args, *ans = NULL, *objs, *o;
    size_t i;
    int rc;

    *n_out = 0;
    if (next_out != NULL)
        next_out[0] = '\0';
    if (limit == 0 || limit > RON_CLIENT_MAX_LIST)
        return rc__fail(c, RON_EINVAL, "list limit must be 1..%u", RON_CLIENT_MAX_LIST);
    if (after != NULL && ron_client_addr_check(after) < 0)
        return bad_addr(c, after);
    args = json_pack("{s:o}", "limit", u64_str(limit));
    if (after != NULL)
        json_object_set_new(args, "after", json_string(after));
    rc = call_json(c, OAP_APP_STORAGE, "list", args, false, &ans, NULL);
    if (rc < 0)
        return rc;
    objs = json_object_get(ans, "objects");
    if (!json_is_array(objs) || json_array_size(objs) > limit) {
        rc = rc__fail(c, RON_EJSON, "malformed list answer from the node");
        goto out;
    }
    json_array_foreach(objs, i, o)
    {
        if (stat_from_json(o, &items[i]) < 0) {
            rc = rc__fail(c, RON_EJSON, "malformed list answer from the node");
            goto out;
        }
    }
    *n_out = json_array_size(objs);
    if (next_out != NULL && json_is_string(json_object_get(ans, "next"))) {
        copy_str(next_out, RON_CLIENT_ADDR_LEN + 1, json_object_get(ans, "next"));
        if (ron_client_addr_check(next_out) < 0)
            rc = rc__fail(c, RON_EJSON, "malformed list cursor from the node");
    }
out:
    json_decref(ans);
    return rc;
}

static int
pin_op(ron_client_t *c, const char *op, const char *addr, uint64_t *pins_out)
{
    json_t *ans = NULL;
    uint64_t pins = 0;
    int rc;

    if (ron_client_addr_check(addr) < 0)
        return bad_addr(c, addr);
    rc = call_json(c, OAP_APP_STORAGE, op, json_pack("{s:s}", "address", addr), true, &ans, NULL);
    if (rc == 0 && rc__json_u64(json_object_get(ans, "pins"), &pins) < 0)
        rc = rc__fail(c, RON_EJSON, "malformed %s answer from the node", op);
    if (rc == 0 && pins_out != NULL)
        *pins_out = pins;
    json_decref(ans);
    return rc;
}

int
ron_client_pin(ron_client_t *c, const char *addr, uint64_t *pins_out)
{
    return pin_op(c, "pin", addr, pins_out);
}

int
ron_client_unpin(ron_client_t *c, const char *addr, uint64_t *pins_out)
{
    return pin_op(c, "unpin", addr, pins_out);
}

int
ron_client_gc(ron_client_t *c, uint64_t target, uint64_t *freed_out)
{
    json_t *ans = NULL;
    uint64_t freed = 0;
    int rc;

    rc = call_json(c, OAP_APP_STORAGE, "gc", json_pack("{s:o}", "target", u64_str(target)), true,
                   &ans, NULL);
    if (rc == 0 && rc__json_u64(json_object_get(ans, "freed"), &freed) < 0)
        rc = rc__fail(c, RON_EJSON, "malformed gc answer from the node");
    if (rc == 0 && freed_out != NULL)
        *freed_out = freed;
    json_decref(ans);
    return rc;
}

/* ---- naming ---- */

int
ron_client_name_publish(ron_client_t *c, const char *record_json, bool *unchanged_out)
{
    json_t *rec, *ans = NULL;
    json_error_t je;
    const char *st;
    int rc;

    rec = record_json != NULL ? json_loads(record_json, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!json_is_object(rec)) {
        json_decref(rec);
        return rc__fail(c, RON_EINVAL, "the record is not a JSON object");
    }
    rc = call_json(c, OAP_APP_INDEX, "publish", json_pack("{s:o}", "record", rec), true, &ans,
                   NULL);
    st = json_string_value(json_object_get(ans, "status"));
    if (rc == 0 && unchanged_out != NULL)
        *unchanged_out = st != NULL && strcmp(st, "unchanged") == 0;
    json_decref(ans);
    return rc;
}

int
ron_client_name_resolve(ron_client_t *c, const char *name, char **record_json_out)
{
    json_t *ans = NULL, *rec;
    int rc;

    *record_json_out = NULL;
    if (name == NULL || name[0] == '\0')
        return rc__fail(c, RON_EINVAL, "empty name");
    rc = call_json(c, OAP_APP_INDEX, "resolve", json_pack("{s:s}", "name", name), false, &ans,
                   NULL);
    if (rc < 0)
        return rc;
    rec = json_object_get(ans, "record");
    if (!json_is_object(rec))
        rc = rc__fail(c, RON_EJSON, "malformed resolve answer from the node");
    else
        *record_json_out = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ans);
    return rc;
}

/* ---- kernel ---- */

int
ron_client_status(ron_client_t *c, char **json_out)
{
    json_t *ans = NULL;
    int rc;

    *json_out = NULL;
    rc = call_json(c, OAP_APP_KERNEL, "status", json_object(), false, &ans, NULL);
    if (rc == 0)
        *json_out = json_dumps(ans, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ans);
    return rc;
}

int
ron_client_reload(ron_client_t *c, bool *changed_out, uint64_t *version_out)
{
    json_t *ans = NULL;
    uint64_t v = 0;
    int rc;

    rc = call_json(c, OAP_APP_KERNEL, "reload", json_object(), false, &ans, NULL);
    if (rc == 0) {
        (void)rc__json_u64(json_object_get(ans, "version"), &v);
        if (changed_out != NULL)
            *changed_out = json_is_true(json_object_get(ans, "changed"));
        if (version_out != NULL)
            *version_out = v;
    }
    json_decref(ans);
    return rc;
}

int
ron_client_release(ron_client_t *c, const char *service)
{
    if (service == NULL || service[0] == '\0')
        return rc__fail(c, RON_EINVAL, "empty service name");
    return call_json(c, OAP_APP_KERNEL, "release", json_pack("{s:s}", "service", service), false,
                     NULL, NULL);
}

/* ---- put ---- */

typedef struct {
    int fd;              /* -1: from buf */
    const uint8_t *buf;
    size_t len;
    off_t start;         /* fd's offset at the call (regular files) */
    bool seekable;       /* regular file: rewind and resend on retry */
    bool has_size;
    uint64_t size;       /* declared size when known */
    const char *content_type;
    bool sent_body;      /* a body byte went out in some attempt */
    uint8_t *chunk;      /* RON_CLIENT_CHUNK bytes (fd sources) */
    char addr[RON_CLIENT_ADDR_LEN + 1];
    uint64_t got_size;
} put_ctx_t;

static bool
put_may_retry(void *arg)
{
    const put_ctx_t *p = arg;
    return p->fd < 0 || p->seekable || !p->sent_body;
}

/* The node answered on the put stream: an error, or the final answer. */
static int
put_answer(ron_client_t *c, put_ctx_t *p, const oap_frame_t *f, const char *hex_sent)
{
    json_t *ans;
    json_error_t je;
    const char *addr;
    int rc = 0;

    if (f->code >= 400) {
        rc = rc__error_frame(c, f);
        rc__drop(c); /* our direction may still be open: start clean next time */
        return rc;
    }
    if (!(f->flags & OAP_F_END) || (f->code != 200 && f->code != 201) || hex_sent == NULL) {
        rc__drop(c);
        return rc__fail(c, RON_EPROTO, "unexpected put answer (status %u) from the node",
                        (unsigned)f->code);
    }
    ans = json_loadb((const char *)f->payload, f->payload_len, JSON_REJECT_DUPLICATES, &je);
    addr = json_string_value(json_object_get(ans, "address"));
    if (addr == NULL || ron_client_addr_check(addr) < 0 ||
        rc__json_u64(json_object_get(ans, "size"), &p->got_size) < 0) {
        rc = rc__fail(c, RON_EJSON, "malformed put answer from the node");
    } else if (strcmp(addr + 3, hex_sent) != 0) {
        rc = rc__fail(c, RON_EDIGEST, "node stored %s but the bytes sent hash to b3:%s", addr,
                      hex_sent);
    } else {
        snprintf(p->addr, sizeof p->addr, "%s", addr);
    }
    json_decref(ans);
    return rc;
}

/* Send one REQ frame of the put stream, waiting for credit; an early answer
 * from the node (an error) is handled and returned as *answered. */
static int
put_send(ron_client_t *c, put_ctx_t *p, oap_frame_t *f, bool *answered)
{
    oap_frame_t in;
    int rc;

    for (;;) {
        rc = rc__recv(c, &in, false);
        if (rc == 0) {
            *answered = true;
            return put_answer(c, p, &in, NULL);
        }
        if (rc == OAP_STREAM_CONTROL)
            continue;
        if (rc != RON_EAGAIN)
            return rc;
        rc = rc__send(c, f);
        if (rc != RON_EAGAIN)
            return rc;
        rc = rc__recv(c, &in, true); /* no credit: wait for a credit frame or an answer */
        if (rc == 0) {
            *answered = true;
            return put_answer(c, p, &in, NULL);
        }
        if (rc < 0)
            return rc;
        /* OAP_STREAM_CONTROL: credit arrived; send again */
    }
}

/* Next piece of the source into data and n; n = 0 at the end. */
static int
put_read(put_ctx_t *p, size_t sent, size_t max, const uint8_t **data, size_t *n)
{
    if (p->fd < 0) {
        *n = RON_MIN(max, p->len - sent);
        *data = p->buf + sent;
        return 0;
    }
    for (;;) {
        ssize_t r = read(p->fd, p->chunk, RON_MIN(max, (size_t)RON_CLIENT_CHUNK));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        *n = (size_t)r;
        *data = p->chunk;
        return 0;
    }
}

static int
put_attempt(ron_client_t *c, void *arg)
{
    put_ctx_t *p = arg;
    blake3_hasher h;
    uint8_t digest[32];
    char hex[65], *payload = NULL;
    json_t *args;
    oap_frame_t f;
    uint64_t corr;
    size_t sent = 0, max;
    bool answered = false;
    int rc;

    if (p->fd >= 0 && p->seekable && lseek(p->fd, p->start, SEEK_SET) < 0)
        return rc__fail(c, -errno, "cannot rewind the source: %s", ron_strerror(-errno));
    if ((rc = rc__ensure(c)) < 0)
        return rc;
    args = json_object();
    if (p->has_size)
        json_object_set_new(args, "size", u64_str(p->size));
    if (p->content_type != NULL)
        json_object_set_new(args, "content_type", json_string(p->content_type));
    payload = start_payload("put", args, NULL);
    json_decref(args);
    if (payload == NULL)
        return rc__fail(c, RON_EINVAL, "cannot encode the put request (content type?)");
    start_frame(c, &f, OAP_APP_STORAGE, 0, payload, strlen(payload));
    corr = f.corr_id;
    rc = rc__send(c, &f);
    free(payload);
    if (rc < 0)
        return rc;
    blake3_hasher_init(&h);
    max = RON_MIN((size_t)RON_CLIENT_CHUNK, (size_t)(c->max_frame - OAP_HDR_LEN));
    for (;;) {
        const uint8_t *data = NULL;
        size_t n = 0;
        if ((rc = put_read(p, sent, max, &data, &n)) < 0) {
            rc__drop(c); /* the stream is half sent: abandon the connection */
            return rc__fail(c, rc, "reading the source: %s", ron_strerror(rc));
        }
        if (n == 0)
            break;
        memset(&f, 0, sizeof f);
        f.flags = OAP_F_REQ;
        f.app_proto_id = OAP_APP_STORAGE;
        memcpy(f.tenant_id, c->tenant, sizeof f.tenant_id);
        f.corr_id = corr;
        f.payload = data;
        f.payload_len = n;
        p->sent_body = true;
        rc = put_send(c, p, &f, &answered);
        if (rc < 0 || answered)
            return rc < 0 ? rc : rc__fail(c, RON_EPROTO, "node answered before the body ended");
        blake3_hasher_update(&h, data, n);
        sent += n;
    }
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_REQ | OAP_F_END;
    f.app_proto_id = OAP_APP_STORAGE;
    memcpy(f.tenant_id, c->tenant, sizeof f.tenant_id);
    f.corr_id = corr;
    rc = put_send(c, p, &f, &answered);
    if (rc < 0 || answered)
        return rc < 0 ? rc : rc__fail(c, RON_EPROTO, "node answered before the body ended");
    blake3_hasher_finalize(&h, digest, sizeof digest);
    ron_hex_encode(hex, digest, sizeof digest);
    if ((rc = answer_frame(c, corr, &f)) < 0)
        return rc;
    return put_answer(c, p, &f, hex);
}

static int
put_run(ron_client_t *c, put_ctx_t *p, char addr_out[static RON_CLIENT_ADDR_LEN + 1],
        uint64_t *size_out)
{
    int rc;

    if (p->content_type != NULL && strlen(p->content_type) > 127)
        return rc__fail(c, RON_EINVAL, "content type longer than 127 bytes");
    rc = run(c, put_attempt, put_may_retry, p);
    if (rc == 0) {
        memcpy(addr_out, p->addr, sizeof p->addr);
        if (size_out != NULL)
            *size_out = p->got_size;
    }
    return rc;
}

int
ron_client_put_fd(ron_client_t *c, int fd, const char *content_type,
                  char addr_out[static RON_CLIENT_ADDR_LEN + 1], uint64_t *size_out)
{
    put_ctx_t p = {.fd = fd, .content_type = content_type};
    struct stat st;
    int rc;

    if (fstat(fd, &st) < 0)
        return rc__fail(c, -errno, "source: %s", ron_strerror(-errno));
    if (S_ISREG(st.st_mode) && (p.start = lseek(fd, 0, SEEK_CUR)) >= 0) {
        p.seekable = true;
        p.has_size = true;
        p.size = st.st_size > p.start ? (uint64_t)(st.st_size - p.start) : 0;
    }
    p.chunk = ron_xmalloc(RON_CLIENT_CHUNK);
    rc = put_run(c, &p, addr_out, size_out);
    free(p.chunk);
    return rc;
}

int
ron_client_put_buf(ron_client_t *c, const void *buf, size_t len, const char *content_type,
                   char addr_out[static RON_CLIENT_ADDR_LEN + 1], uint64_t *size_out)
{
    put_ctx_t p = {.fd = -1, .buf = buf, .len = len, .has_size = true, .size = len,
                   .content_type = content_type};
    return put_run(c, &p, addr_out, size_out);
}

/* ---- get ---- */

typedef struct {
    const char *addr;
    uint64_t offset, length; /* as asked */
    ron_client_sink_fn sink;
    void *arg;
    bool whole;              /* verify the BLAKE3 of all bytes against addr */
    bool have_info;
    ron_client_get_info_t info;
    uint64_t delivered;      /* bytes the sink accepted, over all attempts */
    blake3_hasher h;
    bool sink_failed;
} get_ctx_t;

static bool
get_may_retry(void *arg)
{
    return !((get_ctx_t *)arg)->sink_failed;
}

static int
get_meta(ron_client_t *c, get_ctx_t *g, const oap_frame_t *f, uint64_t *expect_out)
{
    json_t *m;
    json_error_t je;
    uint64_t size, off = 0, len;
    int rc = 0;

    m = json_loadb((const char *)f->payload, f->payload_len, JSON_REJECT_DUPLICATES, &je);
    if (rc__json_u64(json_object_get(m, "size"), &size) < 0) {
        rc = rc__fail(c, RON_EJSON, "malformed get metadata from the node");
        goto out;
    }
    (void)rc__json_u64(json_object_get(m, "offset"), &off);
    if (rc__json_u64(json_object_get(m, "length"), &len) < 0)
        len = size - RON_MIN(off, size);
    if (g->have_info && size != g->info.size) {
        rc = rc__fail(c, RON_EPROTO, "object size changed between attempts");
        goto out;
    }
    if (off != g->offset + g->delivered || len > size || off > size - len) {
        rc = rc__fail(c, RON_EPROTO, "node served another range than asked");
        goto out;
    }
    if (!g->have_info) {
        g->have_info = true;
        g->info.status = f->code;
        g->info.size = size;
        g->info.offset = off;
        g->info.length = len;
        copy_str(g->info.content_type, sizeof g->info.content_type,
                 json_object_get(m, "content_type"));
    }
    *expect_out = len;
out:
    json_decref(m);
    if (rc < 0)
        rc__drop(c);
    return rc;
}

static int
get_attempt(ron_client_t *c, void *arg)
{
    get_ctx_t *g = arg;
    json_t *args;
    char *payload;
    oap_frame_t f;
    uint64_t corr, expect = 0, got = 0, off = g->offset + g->delivered;
    int rc;

    if (g->have_info && g->delivered == g->info.length)
        return 0; /* everything arrived before the connection went */
    if ((rc = rc__ensure(c)) < 0)
        return rc;
    args = json_pack("{s:s}", "address", g->addr);
    if (off > 0)
        json_object_set_new(args, "offset", u64_str(off));
    if (g->length != RON_CLIENT_TO_END)
        json_object_set_new(args, "length", u64_str(g->length - g->delivered));
    payload = start_payload("get", args, NULL);
    json_decref(args);
    if (payload == NULL)
        return rc__fail(c, RON_EINVAL, "cannot encode the get request");
    start_frame(c, &f, OAP_APP_STORAGE, OAP_F_END, payload, strlen(payload));
    corr = f.corr_id;
    rc = rc__send(c, &f);
    free(payload);
    if (rc < 0)
        return rc;
    if ((rc = answer_frame(c, corr, &f)) < 0)
        return rc;
    if (f.code >= 400)
        return rc__error_frame(c, &f);
    if (f.code != 200 && f.code != 206) {
        rc__drop(c);
        return rc__fail(c, RON_EPROTO, "unexpected get status %u", (unsigned)f.code);
    }
    if ((rc = get_meta(c, g, &f, &expect)) < 0)
        return rc;
    for (bool end = (f.flags & OAP_F_END) != 0; !end;) {
        if ((rc = rc__consume(c, corr, 1)) < 0)
            return rc;
        if ((rc = answer_frame(c, corr, &f)) < 0)
            return rc;
        if (f.code >= 400) { /* verification failed after the answer started */
            rc = rc__error_frame(c, &f);
            rc__drop(c);
            return rc;
        }
        end = (f.flags & OAP_F_END) != 0;
        if (f.payload_len > expect - got) {
            rc__drop(c);
            return rc__fail(c, RON_EPROTO, "node sent more bytes than announced");
        }
        if (f.payload_len > 0) {
            if ((rc = g->sink(g->arg, f.payload, f.payload_len)) < 0) {
                g->sink_failed = true;
                rc__drop(c);
                return rc__fail(c, rc, "writing the bytes: %s", ron_strerror(rc));
            }
            if (g->whole)
                blake3_hasher_update(&g->h, f.payload, f.payload_len);
            got += f.payload_len;
            g->delivered += f.payload_len;
        }
    }
    if (got != expect)
        return rc__fail(c, RON_EPROTO, "node sent %llu of %llu bytes", (unsigned long long)got,
                        (unsigned long long)expect);
    return 0;
}

int
ron_client_get(ron_client_t *c, const char *addr, uint64_t offset, uint64_t length,
               ron_client_sink_fn sink, void *arg, ron_client_get_info_t *info_out)
{
    get_ctx_t g = {.addr = addr, .offset = offset, .length = length, .sink = sink, .arg = arg};
    uint8_t digest[32];
    char hex[65];
    int rc;

    if (ron_client_addr_check(addr) < 0)
        return bad_addr(c, addr);
    if (length == 0)
        return rc__fail(c, RON_EINVAL, "empty range");
    g.whole = offset == 0 && length == RON_CLIENT_TO_END;
    blake3_hasher_init(&g.h);
    rc = run(c, get_attempt, get_may_retry, &g);
    if (rc == 0 && g.whole) {
        blake3_hasher_finalize(&g.h, digest, sizeof digest);
        ron_hex_encode(hex, digest, sizeof digest);
        if (strcmp(hex, addr + 3) != 0)
            rc = rc__fail(c, RON_EDIGEST, "the bytes received hash to b3:%s, not %s", hex, addr);
    }
    if (rc == 0 && info_out != NULL)
        *info_out = g.info;
    return rc;
}

static int
fd_sink(void *arg, const uint8_t *data, size_t len)
{
    int fd = *(int *)arg;
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int
ron_client_get_fd(ron_client_t *c, const char *addr, uint64_t offset, uint64_t length, int fd,
                  ron_client_get_info_t *info_out)
{
    return ron_client_get(c, addr, offset, length, fd_sink, &fd, info_out);
}
