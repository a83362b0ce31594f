/*
 * rbus_hello.c - HELLO payload parsing for ron-bus, and the small checks
 * around it (endpoint names, constant-time secret comparison).
 * HELLO is the one forward-compatible message of OAP/1: unknown keys are
 * ignored, known keys are type- and range-checked. Input is peer bytes:
 * bounded by RBUS_MAX_HELLO before jansson sees it; fuzzed by fuzz_bus_hello.c.
 */
#include <string.h>

#include <jansson.h>

#include "rbus_internal.h"
#include "ron_err.h"
#include "ron_util.h"

bool
rbus__name_is_valid(const char *s, size_t len)
{
    if (len == 0 || len >= RBUS_MAX_NAME || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
              ch == '.'))
            return false;
    }
    return true;
}

bool
rbus__ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    volatile uint8_t d = 0;

    for (size_t i = 0; i < n; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

static int
hello_u32(json_t *o, const char *key, uint32_t lo, uint32_t hi, uint32_t *v_out)
{
    json_t *v = json_object_get(o, key);

    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo)
        return RON_EPROTO;
    *v_out = json_integer_value(v) > (json_int_t)hi ? hi : (uint32_t)json_integer_value(v);
    return 0;
}

static int
hello_versions(json_t *o)
{
    json_t *v = json_object_get(o, "versions"), *e;
    size_t i;

    if (v == NULL)
        return 0;
    if (!json_is_array(v))
        return RON_EPROTO;
    json_array_foreach(v, i, e) {
        if (json_is_integer(e) && json_integer_value(e) == OAP_VERSION)
            return 0;
    }
    return RON_EVERSION;
}

int
rbus__hello_parse(const uint8_t *buf, size_t len, rbus_hello_t *out)
{
    json_t *o = NULL, *v;
    int rc = 0;

    memset(out, 0, sizeof *out);
    if (len > RBUS_MAX_HELLO)
        return RON_ETOOBIG;
    if (len == 0)
        return 0; /* spec §4: every HELLO field is optional */
    o = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (o == NULL || !json_is_object(o)) {
        rc = RON_EJSON;
        goto out;
    }
    if ((v = json_object_get(o, "name")) != NULL) {
        if (!json_is_string(v) || !rbus__name_is_valid(json_string_value(v), json_string_length(v))) {
            rc = RON_EPROTO;
            goto out;
        }
        memcpy(out->name, json_string_value(v), json_string_length(v) + 1);
    }
    if ((v = json_object_get(o, "bus_secret")) != NULL && json_is_string(v) &&
        json_string_length(v) == (size_t)2 * RBUS_SECRET_LEN &&
        ron_hex_decode(out->secret, RBUS_SECRET_LEN, json_string_value(v), json_string_length(v)) == 0)
        out->has_secret = true;
    if ((rc = hello_u32(o, "max_frame", OAP_MIN_MAX_FRAME, OAP_MAX_FRAME, &out->max_frame)) < 0)
        goto out;
    if ((rc = hello_u32(o, "max_inflight", 1, RBUS_MAX_INFLIGHT, &out->max_inflight)) < 0)
        goto out;
    rc = hello_versions(o);
out:
    if (rc < 0)
        memset(out, 0, sizeof *out); /* never leave a partial secret behind */
    json_decref(o);
    return rc;
}
