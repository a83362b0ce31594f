/*
 * ron_event.c - kernel events: setters with bounded inline strings, and the
 * strict JSON form that carries an event between processes over ron-bus.
 * Invariants: every string in an event built here is NUL-terminated, fits
 * its inline array and is valid UTF-8; decoding rejects unknown, missing or
 * duplicate keys, wrong types, over-long strings and non-canonical u64 text,
 * and looks at no more than RON_KERNEL_EVENT_JSON_MAX bytes.
 */
#include <string.h>

#include <jansson.h>

#include "ron_err.h"
#include "ron_kernel.h"
#include "ron_utf8.h"
#include "ron_util.h"

_Static_assert(sizeof(ron_kernel_event_t) % 8 == 0, "the bus copies events in 8-byte words");

static const char *const ron_kind_names[] = {
    [RON_EV_HEALTH] = "HEALTH",
    [RON_EV_CONFIG_UPDATED] = "CONFIG_UPDATED",
    [RON_EV_SERVICE_CRASHED] = "SERVICE_CRASHED",
    [RON_EV_SHUTDOWN] = "SHUTDOWN",
};

const char *
ron_kernel_event_kind_name(uint32_t kind)
{
    if (kind >= RON_ARRAY_LEN(ron_kind_names))
        return NULL;
    return ron_kind_names[kind];
}

size_t
ron_kernel_str_copy(char *dst, size_t cap, const char *src)
{
    const unsigned char *s = (const unsigned char *)(src != NULL ? src : "");
    size_t n = 0, left = strlen((const char *)s);

    while (left > 0) {
        size_t k = ron_utf8_seq_len(s, left);
        if (k == 0) {
            if (n + 1 >= cap)
                break;
            dst[n++] = '?';
            s++;
            left--;
            continue;
        }
        if (n + k >= cap)
            break; /* cut before a character that does not fit whole */
        memcpy(dst + n, s, k);
        n += k;
        s += k;
        left -= k;
    }
    dst[n] = 0;
    return n;
}

void
ron_kernel_event_health(ron_kernel_event_t *ev, const char *service, bool ok)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = RON_EV_HEALTH;
    ev->ok = ok ? 1 : 0;
    ron_kernel_str_copy(ev->service, sizeof ev->service, service);
}

void
ron_kernel_event_config_updated(ron_kernel_event_t *ev, uint64_t version)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = RON_EV_CONFIG_UPDATED;
    ev->version = version;
}

void
ron_kernel_event_service_crashed(ron_kernel_event_t *ev, const char *service, const char *reason)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = RON_EV_SERVICE_CRASHED;
    ron_kernel_str_copy(ev->service, sizeof ev->service, service);
    ron_kernel_str_copy(ev->reason, sizeof ev->reason, reason);
}

void
ron_kernel_event_shutdown(ron_kernel_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = RON_EV_SHUTDOWN;
}

/* strncmp over the whole inline array: both sides are NUL-terminated. */
static bool
inline_str_equal(const char *a, const char *b, size_t cap)
{
    return strncmp(a, b, cap) == 0;
}

bool
ron_kernel_event_equal(const ron_kernel_event_t *a, const ron_kernel_event_t *b)
{
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case RON_EV_HEALTH:
        return (a->ok != 0) == (b->ok != 0) &&
               inline_str_equal(a->service, b->service, sizeof a->service);
    case RON_EV_CONFIG_UPDATED:
        return a->version == b->version;
    case RON_EV_SERVICE_CRASHED:
        return inline_str_equal(a->service, b->service, sizeof a->service) &&
               inline_str_equal(a->reason, b->reason, sizeof a->reason);
    case RON_EV_SHUTDOWN:
        return true;
    default:
        return false;
    }
}

/* The inline string must be terminated within its array and valid UTF-8
 * (an event filled by hand, not by a setter, might not be). */
static json_t *
inline_str_json(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        return NULL;
    return json_stringn(s, n); /* NULL when not valid UTF-8 */
}

int
ron_kernel_event_encode(const ron_kernel_event_t *ev, char *out, size_t cap)
{
    const char *kind = ron_kernel_event_kind_name(ev->kind);
    json_t *o = NULL, *svc = NULL, *reason = NULL;
    char num[24];
    size_t need;
    int rc = RON_EINVAL;

    if (kind == NULL)
        goto out;
    o = json_object();
    if (o == NULL || json_object_set_new(o, "kind", json_string(kind)) != 0)
        goto out;
    switch (ev->kind) {
    case RON_EV_HEALTH:
        if ((svc = inline_str_json(ev->service, sizeof ev->service)) == NULL)
            goto out;
        if (json_object_set_new(o, "service", svc) != 0 ||
            json_object_set_new(o, "ok", json_boolean(ev->ok != 0)) != 0)
            goto out;
        break;
    case RON_EV_CONFIG_UPDATED:
        snprintf(num, sizeof num, "%llu", (unsigned long long)ev->version);
        if (json_object_set_new(o, "version", json_string(num)) != 0)
            goto out;
        break;
    case RON_EV_SERVICE_CRASHED:
        svc = inline_str_json(ev->service, sizeof ev->service);
        reason = inline_str_json(ev->reason, sizeof ev->reason);
        if (svc == NULL || reason == NULL) {
            json_decref(svc);
            json_decref(reason);
            goto out;
        }
        if (json_object_set_new(o, "service", svc) != 0 ||
            json_object_set_new(o, "reason", reason) != 0)
            goto out;
        break;
    default:
        break;
    }
    /* JSON_PRESERVE_ORDER keeps insertion order: the canonical key order. */
    need = json_dumpb(o, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (need == 0)
        goto out;
    if (need + 1 > cap) {
        rc = RON_ETOOBIG;
        goto out;
    }
    if (json_dumpb(o, out, cap, JSON_COMPACT | JSON_PRESERVE_ORDER) != need)
        goto out;
    out[need] = 0;
    rc = (int)need;
out:
    json_decref(o);
    return rc;
}

/* Copy a JSON string value into an inline array; RON_EPROTO if not a string
 * or if it does not fit whole (a truncated name would name someone else). */
static int
decode_inline_str(json_t *v, char *dst, size_t cap)
{
    if (!json_is_string(v))
        return RON_EPROTO;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n >= cap || memchr(s, 0, n) != NULL)
        return RON_EPROTO; /* too long, or an embedded \u0000 */
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

/* Exactly these keys (besides "kind") for each kind. */
static bool
keys_are(json_t *o, const char *const *keys, size_t n)
{
    if (json_object_size(o) != n + 1)
        return false;
    for (size_t i = 0; i < n; i++)
        if (json_object_get(o, keys[i]) == NULL)
            return false;
    return true;
}

static int
decode_fields(json_t *o, ron_kernel_event_t *ev)
{
    static const char *const k_health[] = {"service", "ok"};
    static const char *const k_config[] = {"version"};
    static const char *const k_crash[] = {"service", "reason"};
    json_t *v;
    int rc;

    switch (ev->kind) {
    case RON_EV_HEALTH:
        if (!keys_are(o, k_health, 2))
            return RON_EPROTO;
        if ((rc = decode_inline_str(json_object_get(o, "service"), ev->service,
                                    sizeof ev->service)) < 0)
            return rc;
        v = json_object_get(o, "ok");
        if (!json_is_boolean(v))
            return RON_EPROTO;
        ev->ok = json_is_true(v) ? 1 : 0;
        return 0;
    case RON_EV_CONFIG_UPDATED:
        if (!keys_are(o, k_config, 1))
            return RON_EPROTO;
        v = json_object_get(o, "version");
        if (!json_is_string(v))
            return RON_EPROTO;
        /* Canonical decimal only: "0" or no leading zero, so one value has one text. */
        if (json_string_length(v) > 1 && json_string_value(v)[0] == '0')
            return RON_EPROTO;
        if (ron_parse_u64(json_string_value(v), json_string_length(v), &ev->version) < 0)
            return RON_EPROTO;
        return 0;
    case RON_EV_SERVICE_CRASHED:
        if (!keys_are(o, k_crash, 2))
            return RON_EPROTO;
        if ((rc = decode_inline_str(json_object_get(o, "service"), ev->service,
                                    sizeof ev->service)) < 0)
            return rc;
        return decode_inline_str(json_object_get(o, "reason"), ev->reason, sizeof ev->reason);
    case RON_EV_SHUTDOWN:
        return keys_are(o, NULL, 0) ? 0 : RON_EPROTO;
    default:
        return RON_EPROTO;
    }
}

int
ron_kernel_event_decode(const char *json, size_t len, ron_kernel_event_t *ev_out)
{
    json_t *o = NULL, *v;
    json_error_t err;
    const char *kind;
    int rc = RON_EPROTO;

    memset(ev_out, 0, sizeof *ev_out);
    if (len > RON_KERNEL_EVENT_JSON_MAX)
        return RON_ETOOBIG;
    /* REJECT_DUPLICATES: {"ok":true,"ok":false} must not pick one silently. */
    o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (o == NULL) {
        rc = json_error_code(&err) == json_error_duplicate_key ? RON_EPROTO : RON_EJSON;
        goto out;
    }
    if (!json_is_object(o))
        goto out;
    v = json_object_get(o, "kind");
    kind = json_string_value(v);
    if (kind == NULL)
        goto out;
    for (uint32_t k = RON_EV_HEALTH; k <= RON_EV_SHUTDOWN; k++)
        if (json_string_length(v) == strlen(ron_kind_names[k]) &&
            strcmp(kind, ron_kind_names[k]) == 0)
            ev_out->kind = k; /* the length check rejects "HEALTH\u0000x" */
    if (ev_out->kind == 0)
        goto out;
    rc = decode_fields(o, ev_out);
out:
    if (rc < 0)
        memset(ev_out, 0, sizeof *ev_out);
    json_decref(o);
    return rc;
}
