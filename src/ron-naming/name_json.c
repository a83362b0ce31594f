/*
 * name_json.c - the JSON form of a name record (HTTP PUT /n/<name>, the app
 * port). Encoding is written by hand in a fixed key order (every value is
 * LDH or hex, so nothing needs escaping). Decoding is strict: duplicate,
 * unknown or missing keys, non-string values, u64 with leading zeros, and
 * uppercase hex are refused, each with a message naming the field.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "name_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define KEY_PREFIX "ed25519:"
#define KEY_PREFIX_LEN 8

static void
hex_lower(char *out, const uint8_t *in, size_t n)
{
    ron_hex_encode(out, in, n);
}

char *
name_record_to_json(const name_record_t *rec)
{
    char addr[NAME_ADDR_TEXT_LEN + 1], owner[2 * NAME_KEY_LEN + 1], nowner[2 * NAME_KEY_LEN + 1];
    char sig[2 * NAME_SIG_LEN + 1], nfield[2 * NAME_KEY_LEN + 32];
    char *out;
    uint8_t tmp[NAME_SIGNING_MAX];

    if (name_record_signing_bytes(rec, tmp, sizeof tmp) < 0) /* validates rec */
        return NULL;
    name_addr_format(&rec->addr, addr);
    hex_lower(owner, rec->owner, NAME_KEY_LEN);
    hex_lower(sig, rec->sig, NAME_SIG_LEN);
    nfield[0] = '\0';
    if (rec->has_new_owner) {
        hex_lower(nowner, rec->new_owner, NAME_KEY_LEN);
        snprintf(nfield, sizeof nfield, ",\"new_owner\":\"" KEY_PREFIX "%s\"", nowner);
    }
    out = ron_xmalloc(NAME_JSON_MAX);
    snprintf(
        out, NAME_JSON_MAX,
        "{\"name\":\"%s\",\"addr\":\"%s\",\"seq\":\"%llu\",\"ts\":\"%llu\",\"owner\":\"" KEY_PREFIX
        "%s\"%s,\"sig\":\"%s\"}",
        rec->name, addr, (unsigned long long)rec->seq, (unsigned long long)rec->ts, owner, nfield,
        sig);
    return out;
}

struct json_t *
name_record_to_object(const name_record_t *rec)
{
    char *txt = name_record_to_json(rec);
    json_t *o = txt != NULL ? json_loads(txt, JSON_REJECT_DUPLICATES, NULL) : NULL;

    free(txt);
    return o;
}

int
name_record_from_object(name_record_t *rec_out, const struct json_t *o, name_err_t *err)
{
    char *txt;
    int rc;

    if (!json_is_object(o))
        return name__err(err, RON_ERECORD, -1, 0, "record JSON must be an object");
    if ((txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        return name__err(err, -ENOMEM, -1, 0, "record JSON cannot be encoded");
    rc = name_record_from_json(rec_out, txt, strlen(txt), err);
    free(txt);
    return rc;
}

/* Get key's string value (view) or fail naming the key. */
static int
get_str(json_t *obj, const char *key, bool required, const char **s_out, size_t *len_out,
        name_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    *s_out = NULL;
    if (v == NULL) {
        if (!required)
            return 0;
        return name__err(err, RON_ERECORD, -1, -1, "field \"%s\" is missing", key);
    }
    if (!json_is_string(v))
        return name__err(err, RON_ERECORD, -1, -1, "field \"%s\": expected a string", key);
    *s_out = json_string_value(v);
    *len_out = json_string_length(v);
    if (strlen(*s_out) != *len_out)
        return name__err(err, RON_ERECORD, -1, -1, "field \"%s\" contains a NUL character", key);
    return 0;
}

static int
lower_hex(uint8_t *out, size_t n, const char *s, size_t len, const char *key, name_err_t *err)
{
    if (len != 2 * n)
        return name__err(err, RON_ERECORD, -1, -1, "field \"%s\": expected %zu hex digits, got %zu",
                         key, 2 * n, len);
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            char shown[8];
            name__char_show(s[i], shown, sizeof shown);
            return name__err(err, RON_ERECORD, -1, (long)i,
                             "field \"%s\": character %s at offset %zu is not a lowercase hex "
                             "digit",
                             key, shown, i);
        }
    return ron_hex_decode(out, n, s, len) == 0
               ? 0
               : name__err(err, RON_ERECORD, -1, -1, "field \"%s\": bad hex", key);
}

static int
get_key(json_t *obj, const char *key, bool required, bool *present_out,
        uint8_t out[static NAME_KEY_LEN], name_err_t *err)
{
    const char *s;
    size_t len = 0;
    int rc = get_str(obj, key, required, &s, &len, err);
    if (rc < 0)
        return rc;
    if (present_out != NULL)
        *present_out = s != NULL;
    if (s == NULL)
        return 0;
    if (len < KEY_PREFIX_LEN || memcmp(s, KEY_PREFIX, KEY_PREFIX_LEN) != 0)
        return name__err(err, RON_ERECORD, -1, 0,
                         "field \"%s\": expected \"ed25519:\" followed by 64 lowercase hex digits",
                         key);
    return lower_hex(out, NAME_KEY_LEN, s + KEY_PREFIX_LEN, len - KEY_PREFIX_LEN, key, err);
}

static int
get_u64(json_t *obj, const char *key, uint64_t *v_out, name_err_t *err)
{
    const char *s;
    size_t len = 0;
    int rc = get_str(obj, key, true, &s, &len, err);
    if (rc < 0)
        return rc;
    if (len > 1 && s[0] == '0')
        return name__err(err, RON_ERECORD, -1, 0, "field \"%s\": leading zero in \"%.24s\"", key,
                         s);
    if (ron_parse_u64(s, len, v_out) < 0)
        return name__err(err, RON_ERECORD, -1, -1,
                         "field \"%s\": expected a decimal u64 string (0..18446744073709551615)",
                         key);
    return 0;
}

static int
record_from_obj(json_t *obj, name_record_t *rec, name_err_t *err)
{
    static const char *const allowed[] = {"name", "addr", "seq", "ts", "owner", "new_owner", "sig"};
    const char *s;
    size_t len = 0;
    int rc;

    for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        bool ok = false;
        for (size_t i = 0; i < RON_ARRAY_LEN(allowed); i++)
            ok = ok || strcmp(key, allowed[i]) == 0;
        if (!ok)
            return name__err(err, RON_ERECORD, -1, -1, "unknown field \"%.40s\"", key);
    }
    if ((rc = get_str(obj, "name", true, &s, &len, err)) < 0)
        return rc;
    if (len > NAME_MAX_LEN || (rc = name_check(s, len, err)) < 0) {
        if (len > NAME_MAX_LEN)
            return name__err(err, RON_ERECORD, -1, -1, "field \"name\" is over 253 bytes");
        char inner[sizeof err->msg];
        if (err == NULL)
            return RON_ERECORD;
        memcpy(inner, err->msg, sizeof inner);
        return name__err(err, RON_ERECORD, err->label, err->pos, "field \"name\": %s", inner);
    }
    memcpy(rec->name, s, len + 1);
    if ((rc = get_str(obj, "addr", true, &s, &len, err)) < 0)
        return rc;
    if ((rc = name_addr_parse(&rec->addr, s, len, err)) < 0) {
        if (err == NULL)
            return RON_ERECORD;
        char inner[sizeof err->msg];
        memcpy(inner, err->msg, sizeof inner);
        return name__err(err, RON_ERECORD, -1, err->pos, "field \"addr\": %s", inner);
    }
    if ((rc = get_u64(obj, "seq", &rec->seq, err)) < 0)
        return rc;
    if ((rc = get_u64(obj, "ts", &rec->ts, err)) < 0)
        return rc;
    if ((rc = get_key(obj, "owner", true, NULL, rec->owner, err)) < 0)
        return rc;
    if ((rc = get_key(obj, "new_owner", false, &rec->has_new_owner, rec->new_owner, err)) < 0)
        return rc;
    if ((rc = get_str(obj, "sig", true, &s, &len, err)) < 0)
        return rc;
    if ((rc = lower_hex(rec->sig, NAME_SIG_LEN, s, len, "sig", err)) < 0)
        return rc;
    if (rec->has_new_owner && memcmp(rec->new_owner, rec->owner, NAME_KEY_LEN) == 0)
        return name__err(err, RON_ERECORD, -1, -1,
                         "field \"new_owner\" equals \"owner\" (leave it out unless transferring)");
    return 0;
}

int
name_record_from_json(name_record_t *rec_out, const char *json, size_t len, name_err_t *err)
{
    json_error_t je;
    json_t *obj = NULL;
    name_record_t rec;
    int rc;

    memset(&rec, 0, sizeof rec);
    if (len > NAME_JSON_MAX) {
        rc = name__err(err, RON_ETOOBIG, -1, NAME_JSON_MAX, "record JSON is %zu bytes; at most %d",
                       len, NAME_JSON_MAX);
        goto out;
    }
    obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (obj == NULL) {
        rc = name__err(err, RON_EJSON, -1, je.position, "record JSON: %s", je.text);
        goto out;
    }
    if (!json_is_object(obj)) {
        rc = name__err(err, RON_ERECORD, -1, 0, "record JSON must be an object");
        goto out;
    }
    rc = record_from_obj(obj, &rec, err);
    if (rc == 0)
        *rec_out = rec;
out:
    json_decref(obj);
    return rc;
}
