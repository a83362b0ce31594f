/*
 * pass_req.c - the strict parser of passport requests (the JSON part of a
 * ron-bus request, docs/protocol/passport.md). Outside bytes: every field
 * is checked for type, length and syntax; unknown fields, duplicate keys and
 * fields of another op are refused, naming the field at fault.
 * Invariants: on error *out is zeroed; nothing is allocated past jansson's
 * own tree, which is freed before returning.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "pass_internal.h"
#include "ron_err.h"
#include "ron_proto.h"
#include "ron_util.h"

static const char *const op_names[PASS_REQ_COUNT] = {"challenge", "redeem", "rotate", "keys"};
static const char *const op_fields[PASS_REQ_COUNT][8] = {
    [PASS_REQ_CHALLENGE] = {NULL},
    [PASS_REQ_REDEEM] = {"challenge", "pk", "ops", "ttl", "tenant", "sig", NULL},
    [PASS_REQ_ROTATE] = {"keys", NULL},
    [PASS_REQ_KEYS] = {NULL},
};

typedef struct {
    char *field;
    char *err;
    size_t errcap;
} ctx_t;

static int
fail(ctx_t *c, const char *field, const char *what)
{
    if (c->field != NULL)
        snprintf(c->field, 32, "%s", field);
    if (c->err != NULL && c->errcap > 0)
        snprintf(c->err, c->errcap, "%s: %s", field, what);
    return RON_EPASSREQ;
}

/* Decode the lowercase hex string field into out[0..n). Required unless optional. */
static int
get_hex(ctx_t *c, json_t *o, const char *field, uint8_t *out, size_t n, bool optional,
        bool *present)
{
    json_t *v = json_object_get(o, field);
    const char *s;
    if (present != NULL)
        *present = v != NULL;
    if (v == NULL)
        return optional ? 0 : fail(c, field, "missing");
    if (!json_is_string(v))
        return fail(c, field, "must be a string");
    s = json_string_value(v);
    if (json_string_length(v) != 2 * n || strlen(s) != 2 * n)
        return fail(c, field, "wrong length of hex");
    for (size_t i = 0; i < 2 * n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return fail(c, field, "must be lowercase hex");
    return ron_hex_decode(out, n, s, 2 * n) < 0 ? fail(c, field, "must be lowercase hex") : 0;
}

static int
parse_redeem(ctx_t *c, json_t *o, pass_redeem_t *r)
{
    json_t *ops = json_object_get(o, "ops"), *ttl = json_object_get(o, "ttl"), *v;
    size_t i;
    int rc;

    if ((rc = get_hex(c, o, "challenge", r->nonce, PASS_NONCE_LEN, false, NULL)) < 0 ||
        (rc = get_hex(c, o, "pk", r->pk, KMS_PK_LEN, false, NULL)) < 0 ||
        (rc = get_hex(c, o, "tenant", r->tenant, AUTH_TENANT_LEN, true, &r->has_tenant)) < 0 ||
        (rc = get_hex(c, o, "sig", r->sig, KMS_SIG_LEN, false, NULL)) < 0)
        return rc;
    if (ops == NULL)
        return fail(c, "ops", "missing");
    if (!json_is_array(ops) || json_array_size(ops) == 0 || json_array_size(ops) > AUTH_OP_COUNT)
        return fail(c, "ops", "must be a non-empty array of at most 8 op names");
    json_array_foreach(ops, i, v) {
        auth_op_t op;
        if (!json_is_string(v) ||
            auth_op_parse(json_string_value(v), json_string_length(v), &op) < 0)
            return fail(c, "ops", "must name ops among get, put, pin, name, send, recv, admin, mint");
        if (r->ops & (1u << op))
            return fail(c, "ops", "repeats an op");
        r->ops |= 1u << op;
    }
    if (ttl != NULL) {
        json_int_t t;
        if (!json_is_integer(ttl))
            return fail(c, "ttl", "must be an integer");
        t = json_integer_value(ttl);
        if (t < 1 || t > (json_int_t)UINT32_MAX)
            return fail(c, "ttl", "must be 1..4294967295 seconds (more than 86400 is clamped)");
        r->ttl = (uint32_t)t;
    }
    return 0;
}

static int
parse_rotate(ctx_t *c, json_t *o, unsigned *kinds)
{
    json_t *keys = json_object_get(o, "keys"), *v;
    size_t i;

    if (keys == NULL) {
        *kinds = PASS_KEYS_ALL;
        return 0;
    }
    if (!json_is_array(keys) || json_array_size(keys) == 0 || json_array_size(keys) > 2)
        return fail(c, "keys", "must be a non-empty array of \"cap\", \"sign\"");
    json_array_foreach(keys, i, v) {
        const char *s = json_string_value(v);
        unsigned bit;
        if (s != NULL && strcmp(s, "cap") == 0 && json_string_length(v) == 3)
            bit = 1u << PASS_KEY_CAP;
        else if (s != NULL && strcmp(s, "sign") == 0 && json_string_length(v) == 4)
            bit = 1u << PASS_KEY_SIGN;
        else
            return fail(c, "keys", "must name \"cap\" or \"sign\"");
        if (*kinds & bit)
            return fail(c, "keys", "repeats a kind");
        *kinds |= bit;
    }
    return 0;
}

int
pass_request_parse(const char *json, size_t len, pass_request_t *out, char field_out[32],
                   char *err, size_t errcap)
{
    ctx_t c = {field_out, err, errcap};
    json_error_t jerr;
    json_t *o = NULL;
    const char *opname, *bad;
    int op = -1, rc;

    memset(out, 0, sizeof *out);
    if (field_out != NULL)
        field_out[0] = '\0';
    if (err != NULL && errcap > 0)
        err[0] = '\0';
    if (len > PASS_MAX_REQ) {
        fail(&c, "$", "request longer than 2048 bytes");
        return RON_ETOOBIG;
    }
    o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o)) {
        rc = fail(&c, "$", "not a JSON object (or duplicate keys)");
        goto out;
    }
    opname = json_string_value(json_object_get(o, "op"));
    for (int i = 0; opname != NULL && i < PASS_REQ_COUNT; i++)
        if (strcmp(opname, op_names[i]) == 0 &&
            json_string_length(json_object_get(o, "op")) == strlen(op_names[i]))
            op = i;
    if (op < 0) {
        rc = fail(&c, "op", "must be one of challenge, redeem, rotate, keys");
        goto out;
    }
    if ((bad = proto_json_unknown_key(o, "op", op_fields[op])) != NULL) {
        /* name the key only when it is a plain identifier: it reaches envelopes */
        size_t bl = strlen(bad), k = 0;
        while (k < bl && ((bad[k] >= 'a' && bad[k] <= 'z') || (bad[k] >= '0' && bad[k] <= '9') ||
                          bad[k] == '_'))
            k++;
        rc = fail(&c, bl > 0 && bl < 32 && k == bl ? bad : "$", "unknown field for this op");
        goto out;
    }
    out->op = (pass_req_op_t)op;
    if (op == PASS_REQ_REDEEM)
        rc = parse_redeem(&c, o, &out->redeem);
    else if (op == PASS_REQ_ROTATE)
        rc = parse_rotate(&c, o, &out->kinds);
    else
        rc = 0;
out:
    json_decref(o);
    if (rc < 0)
        memset(out, 0, sizeof *out);
    return rc;
}

const char *
pass__op_name(pass_req_op_t op)
{
    return (unsigned)op < PASS_REQ_COUNT ? op_names[op] : "invalid";
}
