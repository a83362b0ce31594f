/*
 * proto.c - control-plane DTOs over jansson: the status table of spec §3,
 * error envelope, HELLO, START, response metadata and credit.
 * Invariants: decoding rejects duplicate keys (JSON_REJECT_DUPLICATES), floats,
 * out-of-range integers, oversized strings and (outside HELLO) unknown keys,
 * and every rejection names its field; encoding writes compact JSON with keys
 * sorted (JSON_SORT_KEYS), so it is canonical and never contains a float.
 * The error envelope is the one DTO written by hand (proto_error_write): into
 * a caller's buffer without allocation, keys in spec §3 order, for OAP/1
 * error frames and HTTP error bodies alike.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_proto.h"
#include "ron_utf8.h"
#include "ron_util.h"

/* ---- status table (spec §3; order matters for slug -> status) ---- */

static const proto_status_t status_table[] = {
    {400, "bad_request", false, false},
    {401, "unauthorized", false, false},
    {403, "forbidden", false, false},
    {404, "not_found", false, false},
    {405, "method_not_allowed", false, false},
    {408, "timeout", true, false},
    {409, "conflict", false, false},
    {413, "payload_too_large", false, false},
    {416, "range_not_satisfiable", false, false},
    {426, "proto_mismatch", false, false},
    {429, "quota_exhausted", true, true},
    {431, "headers_too_large", false, false},
    {500, "internal", true, false},
    {502, "bad_gateway", true, false},
    {503, "unavailable", true, true},
    {504, "timeout", true, false},
    {507, "insufficient_storage", true, true},
};

/* Extra slugs that share a status with a table row. */
static const proto_status_t status_aliases[] = {
    {409, "bad_digest", false, false}, /* bytes do not match their address */
};

const proto_status_t *
proto_status_find(uint16_t status)
{
    for (size_t i = 0; i < RON_ARRAY_LEN(status_table); i++)
        if (status_table[i].status == status)
            return &status_table[i];
    return NULL;
}

const char *
proto_status_slug(uint16_t status)
{
    const proto_status_t *s = proto_status_find(status);
    return s != NULL ? s->slug : "internal";
}

bool
proto_status_is_retryable(uint16_t status)
{
    const proto_status_t *s = proto_status_find(status);
    return s != NULL && s->retryable;
}

int
proto_slug_status(const char *slug, uint16_t *status_out)
{
    for (size_t i = 0; i < RON_ARRAY_LEN(status_table); i++)
        if (strcmp(status_table[i].slug, slug) == 0) {
            *status_out = status_table[i].status;
            return 0;
        }
    for (size_t i = 0; i < RON_ARRAY_LEN(status_aliases); i++)
        if (strcmp(status_aliases[i].slug, slug) == 0) {
            *status_out = status_aliases[i].status;
            return 0;
        }
    return RON_EINVAL;
}

/* ---- strict decoding helpers ---- */

__attribute__((format(printf, 3, 4))) static int fail(proto_err_t *err, const char *field,
                                                      const char *fmt, ...);

static int
fail(proto_err_t *err, const char *field, const char *fmt, ...)
{
    va_list ap;
    char what[120];

    if (err == NULL)
        return RON_EJSON;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(err->field, sizeof err->field, "%s", field);
    if (field[0] != '\0')
        snprintf(err->text, sizeof err->text, "field \"%s\": %s", field, what);
    else
        snprintf(err->text, sizeof err->text, "%s", what);
    return RON_EJSON;
}

/* Parse json as one object, rejecting duplicate keys (named in err). */
static int
load_object(const char *json, size_t len, json_t **obj_out, proto_err_t *err)
{
    json_error_t je;
    json_t *j;

    *obj_out = NULL;
    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (len > PROTO_MAX_JSON)
        return fail(err, "", "document larger than %u bytes", PROTO_MAX_JSON);
    j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        if (json_error_code(&je) == json_error_duplicate_key) {
            /* jansson's text ends with: near '"<key>"' */
            char key[64] = "";
            const char *q = strstr(je.text, "near '\"");
            if (q != NULL) {
                q += 7;
                size_t n = strcspn(q, "\"");
                snprintf(key, sizeof key, "%.*s", (int)RON_MIN(n, sizeof key - 1), q);
            }
            return fail(err, key, "duplicate key");
        }
        return fail(err, "", "malformed JSON: %s", je.text);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(err, "", "expected a JSON object");
    }
    *obj_out = j;
    return 0;
}

const char *
proto_json_unknown_key(const json_t *obj, const char *except, const char *const *allowed)
{
    for (void *it = json_object_iter((json_t *)obj); it != NULL;
         it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        bool ok = except != NULL && strcmp(key, except) == 0;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok)
            return key;
    }
    return NULL;
}

/* Reject any key of obj not in allowed (NULL-terminated). */
static int
only_keys(const json_t *obj, const char *const *allowed, proto_err_t *err)
{
    const char *key = proto_json_unknown_key(obj, NULL, allowed);
    return key != NULL ? fail(err, key, "unknown field") : 0;
}

/* Copy string field key into dst (cap bytes incl. NUL). Missing: RON_EJSON if
 * required, else dst = "". null_ok treats JSON null as missing. */
static int
get_str(const json_t *obj, const char *key, bool required, bool null_ok, char *dst, size_t cap,
        proto_err_t *err)
{
    json_t *v = json_object_get(obj, key);

    dst[0] = '\0';
    if (v == NULL || (null_ok && json_is_null(v))) {
        if (required)
            return fail(err, key, "missing");
        return 0;
    }
    if (!json_is_string(v))
        return fail(err, key, "expected string");
    if (json_string_length(v) >= cap)
        return fail(err, key, "longer than %zu bytes", cap - 1);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* Integer field in [lo, hi]. Missing and optional: 0 and *present_out = false. */
static int
get_u32(const json_t *obj, const char *key, bool required, uint32_t lo, uint32_t hi,
        uint32_t *v_out, bool *present_out, proto_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    json_int_t n;

    if (present_out != NULL)
        *present_out = false;
    if (v == NULL) {
        if (required)
            return fail(err, key, "missing");
        return 0;
    }
    if (!json_is_integer(v))
        return fail(err, key, "expected integer");
    n = json_integer_value(v);
    if (n < (json_int_t)lo || n > (json_int_t)hi)
        return fail(err, key, "out of range %u..%u", lo, hi);
    *v_out = (uint32_t)n;
    if (present_out != NULL)
        *present_out = true;
    return 0;
}

/* A u64 carried as a decimal string. */
static int
get_u64str(const json_t *obj, const char *key, bool required, uint64_t *v_out, bool *present_out,
           proto_err_t *err)
{
    json_t *v = json_object_get(obj, key);

    if (present_out != NULL)
        *present_out = false;
    if (v == NULL) {
        if (required)
            return fail(err, key, "missing");
        return 0;
    }
    if (!json_is_string(v))
        return fail(err, key, "expected decimal string");
    if (ron_parse_u64(json_string_value(v), json_string_length(v), v_out) < 0 ||
        (json_string_length(v) > 1 && json_string_value(v)[0] == '0'))
        return fail(err, key, "expected decimal u64 without leading zeros");
    if (present_out != NULL)
        *present_out = true;
    return 0;
}

static int
get_bool(const json_t *obj, const char *key, bool *v_out, proto_err_t *err)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL)
        return fail(err, key, "missing");
    if (!json_is_boolean(v))
        return fail(err, key, "expected boolean");
    *v_out = json_is_true(v);
    return 0;
}

/* Array of small integers (versions). */
static int
get_u32_array(const json_t *obj, const char *key, bool required, uint32_t *out, size_t max,
              size_t *n_out, proto_err_t *err)
{
    json_t *v = json_object_get(obj, key);

    *n_out = 0;
    if (v == NULL) {
        if (required)
            return fail(err, key, "missing");
        return 0;
    }
    if (!json_is_array(v))
        return fail(err, key, "expected array");
    if (json_array_size(v) > max)
        return fail(err, key, "more than %zu entries", max);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > UINT16_MAX)
            return fail(err, key, "entry %zu: expected integer 0..65535", i);
        out[i] = (uint32_t)json_integer_value(e);
    }
    *n_out = json_array_size(v);
    return 0;
}

static char *
u64_text(uint64_t v, char buf[static 21])
{
    snprintf(buf, 21, "%llu", (unsigned long long)v);
    return buf;
}

/* Dump obj canonically and take it. */
static int
dump(json_t *obj, char **json_out, size_t *len_out)
{
    char *s;

    if (obj == NULL)
        return RON_EINVAL;
    s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    if (s == NULL)
        return RON_EINVAL;
    *json_out = s;
    *len_out = strlen(s);
    return 0;
}

/* ---- error envelope ---- */

void
proto_error_init(proto_error_t *e, uint16_t status, uint64_t corr_id, const char *message)
{
    const proto_status_t *s = proto_status_find(status);

    memset(e, 0, sizeof *e);
    if (s == NULL)
        s = proto_status_find(500);
    snprintf(e->code, sizeof e->code, "%s", s->slug);
    snprintf(e->message, sizeof e->message, "%s", message != NULL ? message : "");
    e->retryable = s->retryable;
    e->corr_id = corr_id;
}

/* Append s JSON-escaped at out + *pos, whole characters only, while they end
 * at or before end. */
static void
esc_put(char *out, size_t *pos, size_t end, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *stop = p + strlen(s);

    while (p < stop) {
        char esc[8];
        const char *src = esc;
        size_t k, in = 1, n = ron_utf8_seq_len(p, (size_t)(stop - p));

        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p, k = 2;
        } else if (*p == '\n') {
            esc[0] = '\\', esc[1] = 'n', k = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            k = 6;
        } else if (n == 0) {
            src = "\\ufffd", k = 6;
        } else {
            src = (const char *)p, k = n, in = n;
        }
        if (k > end - *pos)
            return;
        memcpy(out + *pos, src, k);
        *pos += k;
        p += in;
    }
}

ssize_t
proto_error_write(const proto_error_t *e, char *out, size_t cap)
{
    /* everything after the message, built first so only the message gives way */
    char tail[PROTO_MIN_ERROR_BUF];
    size_t tl, hl, pos;
    uint16_t st;
    int n;

    if (proto_slug_status(e->code, &st) < 0)
        return RON_EINVAL;
    n = snprintf(tail, sizeof tail, "\",\"retryable\":%s,\"corr_id\":\"%llu\"",
                 e->retryable ? "true" : "false", (unsigned long long)e->corr_id);
    tl = (size_t)n;
    if (e->reason[0] != '\0') {
        static const char key[] = ",\"reason\":\"";
        memcpy(tail + tl, key, sizeof key - 1); /* the tail is terminated below */
        tl += sizeof key - 1;
        esc_put(tail, &tl, tl + (size_t)6 * PROTO_MAX_REASON, e->reason);
        tail[tl++] = '"';
    }
    if (e->has_retry_after)
        tl += (size_t)snprintf(tail + tl, sizeof tail - tl, ",\"retry_after_ms\":%lu",
                               (unsigned long)e->retry_after_ms);
    tail[tl++] = '}';
    hl = 9 + strlen(e->code) + 13; /* {"code":"<slug>","message":" */
    if (cap < hl + tl + 1)
        return RON_ETOOBIG;
    pos = (size_t)snprintf(out, cap, "{\"code\":\"%s\",\"message\":\"", e->code);
    esc_put(out, &pos, cap - 1 - tl, e->message);
    memcpy(out + pos, tail, tl);
    pos += tl;
    out[pos] = '\0';
    return (ssize_t)pos;
}

int
proto_error_encode(const proto_error_t *e, char **json_out, size_t *len_out)
{
    char *buf = ron_xmalloc(PROTO_MAX_ERROR_JSON);
    ssize_t n = proto_error_write(e, buf, PROTO_MAX_ERROR_JSON);

    if (n < 0) {
        free(buf);
        return (int)n;
    }
    *json_out = ron_xrealloc(buf, (size_t)n + 1);
    *len_out = (size_t)n;
    return 0;
}

int
proto_error_decode(const char *json, size_t len, proto_error_t *e_out, proto_err_t *err)
{
    static const char *const keys[] = {"code",           "message", "retryable", "corr_id",
                                       "retry_after_ms", "reason",  NULL};
    json_t *o = NULL;
    uint16_t st;
    int rc;

    memset(e_out, 0, sizeof *e_out);
    rc = load_object(json, len, &o, err);
    if (rc < 0)
        goto out;
    if ((rc = only_keys(o, keys, err)) < 0 ||
        (rc = get_str(o, "code", true, false, e_out->code, sizeof e_out->code, err)) < 0 ||
        (rc = get_str(o, "message", true, false, e_out->message, sizeof e_out->message, err)) < 0 ||
        (rc = get_bool(o, "retryable", &e_out->retryable, err)) < 0 ||
        (rc = get_u64str(o, "corr_id", true, &e_out->corr_id, NULL, err)) < 0 ||
        (rc = get_u32(o, "retry_after_ms", false, 0, UINT32_MAX, &e_out->retry_after_ms,
                      &e_out->has_retry_after, err)) < 0 ||
        (rc = get_str(o, "reason", false, false, e_out->reason, sizeof e_out->reason, err)) < 0)
        goto out;
    if (proto_slug_status(e_out->code, &st) < 0)
        rc = fail(err, "code", "unknown slug \"%s\"", e_out->code);
out:
    json_decref(o);
    return rc;
}

/* ---- HELLO ---- */

int
proto_hello_encode(const proto_hello_t *h, char **json_out, size_t *len_out)
{
    json_t *o = json_object();

    if (h->ua[0] != '\0')
        json_object_set_new(o, "ua", json_string(h->ua));
    if (h->has_max_frame)
        json_object_set_new(o, "max_frame", json_integer(h->max_frame));
    if (h->n_versions > 0) {
        json_t *a = json_array();
        for (size_t i = 0; i < h->n_versions && i < PROTO_MAX_VERSIONS; i++)
            json_array_append_new(a, json_integer(h->versions[i]));
        json_object_set_new(o, "versions", a);
    }
    return dump(o, json_out, len_out);
}

int
proto_hello_decode(const char *json, size_t len, proto_hello_t *h_out, proto_err_t *err)
{
    json_t *o = NULL;
    int rc;

    memset(h_out, 0, sizeof *h_out);
    rc = load_object(json, len, &o, err);
    if (rc < 0)
        goto out;
    /* Unknown keys are ignored: HELLO is the forward-compatible message. */
    if ((rc = get_str(o, "ua", false, true, h_out->ua, sizeof h_out->ua, err)) < 0 ||
        (rc = get_u32(o, "max_frame", false, 0, UINT32_MAX, &h_out->max_frame,
                      &h_out->has_max_frame, err)) < 0 ||
        (rc = get_u32_array(o, "versions", false, h_out->versions, PROTO_MAX_VERSIONS,
                            &h_out->n_versions, err)) < 0)
        goto out;
out:
    json_decref(o);
    return rc;
}

int
proto_hello_reply_encode(const proto_hello_reply_t *r, char **json_out, size_t *len_out)
{
    json_t *o = json_object();
    json_t *v = json_array(), *t = json_array();

    for (size_t i = 0; i < r->n_versions && i < PROTO_MAX_VERSIONS; i++)
        json_array_append_new(v, json_integer(r->versions[i]));
    for (size_t i = 0; i < r->n_transports && i < PROTO_MAX_TRANSPORTS; i++)
        json_array_append_new(t, json_string(r->transports[i]));
    json_object_set_new(o, "max_frame", json_integer(r->max_frame));
    json_object_set_new(o, "max_inflight", json_integer(r->max_inflight));
    json_object_set_new(o, "flags_supported", json_integer(r->flags_supported));
    json_object_set_new(o, "versions", v);
    json_object_set_new(o, "transports", t);
    return dump(o, json_out, len_out);
}

int
proto_hello_reply_decode(const char *json, size_t len, proto_hello_reply_t *r_out, proto_err_t *err)
{
    json_t *o = NULL, *t;
    int rc;

    memset(r_out, 0, sizeof *r_out);
    rc = load_object(json, len, &o, err);
    if (rc < 0)
        goto out;
    if ((rc = get_u32(o, "max_frame", true, 0, UINT32_MAX, &r_out->max_frame, NULL, err)) < 0 ||
        (rc = get_u32(o, "max_inflight", true, 0, UINT32_MAX, &r_out->max_inflight, NULL, err)) <
            0 ||
        (rc = get_u32(o, "flags_supported", true, 0, UINT16_MAX, &r_out->flags_supported, NULL,
                      err)) < 0 ||
        (rc = get_u32_array(o, "versions", true, r_out->versions, PROTO_MAX_VERSIONS,
                            &r_out->n_versions, err)) < 0)
        goto out;
    t = json_object_get(o, "transports");
    if (t == NULL) {
        rc = fail(err, "transports", "missing");
        goto out;
    }
    if (!json_is_array(t)) {
        rc = fail(err, "transports", "expected array");
        goto out;
    }
    if (json_array_size(t) > PROTO_MAX_TRANSPORTS) {
        rc = fail(err, "transports", "more than %u entries", PROTO_MAX_TRANSPORTS);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(t); i++) {
        json_t *e = json_array_get(t, i);
        if (!json_is_string(e) || json_string_length(e) > PROTO_MAX_TRANSPORT) {
            rc = fail(err, "transports", "entry %zu: expected string of at most %u bytes", i,
                      PROTO_MAX_TRANSPORT);
            goto out;
        }
        memcpy(r_out->transports[i], json_string_value(e), json_string_length(e) + 1);
    }
    r_out->n_transports = json_array_size(t);
out:
    json_decref(o);
    return rc;
}

/* ---- START ---- */

static bool
op_name_is_valid(const char *op)
{
    size_t n = strlen(op);
    if (n == 0 || n > PROTO_MAX_OP)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)op[i]) || isdigit((unsigned char)op[i]) || op[i] == '_' ||
              op[i] == '.'))
            return false;
    return true;
}

/* Whether j (recursively) holds a float. */
static bool
has_real(const json_t *j)
{
    if (json_is_real(j))
        return true;
    if (json_is_object(j)) {
        for (void *it = json_object_iter((json_t *)j); it != NULL;
             it = json_object_iter_next((json_t *)j, it))
            if (has_real(json_object_iter_value(it)))
                return true;
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++)
            if (has_real(json_array_get(j, i)))
                return true;
    }
    return false;
}

int
proto_start_decode(const char *json, size_t len, proto_start_t *s_out, proto_err_t *err)
{
    json_t *o = NULL;
    int rc;

    memset(s_out, 0, sizeof *s_out);
    rc = load_object(json, len, &o, err);
    if (rc < 0)
        goto out;
    if ((rc = get_str(o, "op", true, false, s_out->op, sizeof s_out->op, err)) < 0)
        goto out;
    if (!op_name_is_valid(s_out->op)) {
        rc = fail(err, "op", "expected 1..%u chars of [a-z0-9_.]", PROTO_MAX_OP);
        goto out;
    }
    for (void *it = json_object_iter(o); it != NULL; it = json_object_iter_next(o, it)) {
        const char *k = json_object_iter_key(it);
        json_t *v = json_object_iter_value(it);
        if (has_real(v)) {
            rc = fail(err, k, "floats are not allowed");
            goto out;
        }
    }
    json_object_del(o, "op");
    s_out->args = o;
    o = NULL;
out:
    json_decref(o);
    return rc;
}

void
proto_start_close(proto_start_t *s)
{
    json_decref(s->args);
    s->args = NULL;
}

int
proto_start_encode(const char *op, const json_t *args, char **json_out, size_t *len_out)
{
    json_t *o;

    if (!op_name_is_valid(op))
        return RON_EINVAL;
    if (args != NULL &&
        (!json_is_object(args) || json_object_get(args, "op") != NULL || has_real(args)))
        return RON_EINVAL;
    o = args != NULL ? json_deep_copy(args) : json_object();
    json_object_set_new(o, "op", json_string(op));
    return dump(o, json_out, len_out);
}

int
proto_args_only(const proto_start_t *s, const char *const *allowed, proto_err_t *err)
{
    if (err != NULL)
        memset(err, 0, sizeof *err);
    return only_keys(s->args, allowed, err);
}

int
proto_args_str(const proto_start_t *s, const char *key, bool required, const char **v_out,
               proto_err_t *err)
{
    json_t *v = json_object_get(s->args, key);

    *v_out = NULL;
    if (v == NULL)
        return required ? fail(err, key, "missing") : 0;
    if (!json_is_string(v))
        return fail(err, key, "expected string");
    *v_out = json_string_value(v);
    return 0;
}

int
proto_args_u64(const proto_start_t *s, const char *key, bool required, uint64_t *v_out,
               proto_err_t *err)
{
    return get_u64str(s->args, key, required, v_out, NULL, err);
}

/* ---- response metadata ---- */

int
proto_meta_encode(const proto_meta_t *m, char **json_out, size_t *len_out)
{
    json_t *o = json_object();
    char num[21];

    if (m->has_size)
        json_object_set_new(o, "size", json_string(u64_text(m->size, num)));
    if (m->content_type[0] != '\0')
        json_object_set_new(o, "content_type", json_string(m->content_type));
    return dump(o, json_out, len_out);
}

int
proto_meta_decode(const char *json, size_t len, proto_meta_t *m_out, proto_err_t *err)
{
    static const char *const keys[] = {"size", "content_type", NULL};
    json_t *o = NULL;
    int rc;

    memset(m_out, 0, sizeof *m_out);
    rc = load_object(json, len, &o, err);
    if (rc < 0)
        goto out;
    if ((rc = only_keys(o, keys, err)) < 0 ||
        (rc = get_u64str(o, "size", false, &m_out->size, &m_out->has_size, err)) < 0 ||
        (rc = get_str(o, "content_type", false, false, m_out->content_type,
                      sizeof m_out->content_type, err)) < 0)
        goto out;
out:
    json_decref(o);
    return rc;
}

/* ---- credit ---- */

int
proto_credit_encode(uint32_t frames, char **json_out, size_t *len_out)
{
    if (frames == 0 || frames > PROTO_MAX_CREDIT)
        return RON_EINVAL;
    return dump(json_pack("{s:s, s:I}", "op", "credit", "frames", (json_int_t)frames), json_out,
                len_out);
}

int
proto_credit_decode(const char *json, size_t len, uint32_t *frames_out, proto_err_t *err)
{
    static const char *const keys[] = {"op", "frames", NULL};
    char op[PROTO_MAX_OP + 1];
    json_t *o = NULL;
    int rc;

    *frames_out = 0;
    rc = load_object(json, len, &o, err);
    if (rc < 0)
        goto out;
    if ((rc = only_keys(o, keys, err)) < 0 ||
        (rc = get_str(o, "op", true, false, op, sizeof op, err)) < 0)
        goto out;
    if (strcmp(op, "credit") != 0) {
        rc = fail(err, "op", "expected \"credit\"");
        goto out;
    }
    rc = get_u32(o, "frames", true, 1, PROTO_MAX_CREDIT, frames_out, NULL, err);
out:
    json_decref(o);
    return rc;
}

size_t
proto_json_frame(uint8_t *out, const char *json, uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    memcpy(out + 4, json, len);
    return 4 + (size_t)len;
}

json_t *
proto_json_unframe(const uint8_t *payload, size_t len, size_t flags)
{
    json_error_t jerr;
    json_t *o;

    if (len < 4 || ((uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 |
                    (uint32_t)payload[2] << 8 | payload[3]) != len - 4)
        return NULL;
    o = json_loadb((const char *)payload + 4, len - 4, flags, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}
