/*
 * omni_req.c - the app port's request parser: a START frame's JSON payload
 * checked against app-port.md and turned into the JSON the owning service
 * takes over ron-bus. Pure: no I/O, no state; fuzzed by fuzz_omni_request.c.
 * Invariants: only the fields app-port.md lists for the op pass (unknown ->
 * RON_EJSON naming the field); `idem` is stripped before forwarding (it is
 * the app port's business); the forwarded JSON is compact and small (it is
 * built from at most OMNI_MAX_JSON input bytes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni_internal.h"
#include "ron_err.h"
#include "ron_naming.h"

typedef struct {
    uint16_t app;
    const char *name;   /* op on the app port */
    const char *bus_op; /* op at the service (NULL: handled here) */
    const char *const fields[8];
} op_def_t;

static const op_def_t ops[OMNI_OP__COUNT] = {
    [OMNI_OP_PING] = {OAP_APP_CONTROL, "ping", NULL, {NULL}},
    [OMNI_OP_PUT] = {OAP_APP_STORAGE, "put", "put_begin", {"size", "content_type", "expect", NULL}},
    [OMNI_OP_GET] = {OAP_APP_STORAGE, "get", NULL, {"address", "offset", "length", NULL}},
    [OMNI_OP_STAT] = {OAP_APP_STORAGE, "stat", "stat", {"address", NULL}},
    [OMNI_OP_LIST] = {OAP_APP_STORAGE, "list", "list", {"after", "limit", NULL}},
    [OMNI_OP_PIN] = {OAP_APP_STORAGE, "pin", "pin", {"address", "idem", NULL}},
    [OMNI_OP_UNPIN] = {OAP_APP_STORAGE, "unpin", "unpin", {"address", "idem", NULL}},
    [OMNI_OP_GC] = {OAP_APP_STORAGE, "gc", "gc", {"target", "idem", NULL}},
    [OMNI_OP_PUBLISH] = {OAP_APP_INDEX, "publish", "publish", {"record", "idem", NULL}},
    [OMNI_OP_RESOLVE] = {OAP_APP_INDEX, "resolve", "resolve", {"name", NULL}},
    [OMNI_OP_NAMES] = {OAP_APP_INDEX, "list", "list", {"prefix", "after", "limit", NULL}},
    [OMNI_OP_STATUS] = {OAP_APP_KERNEL, "status", "status", {NULL}},
    [OMNI_OP_RELOAD] = {OAP_APP_KERNEL, "reload", "reload", {NULL}},
    [OMNI_OP_RELEASE] = {OAP_APP_KERNEL, "release", "release", {"service", NULL}},
    [OMNI_OP_REG_HEAD] = {OAP_APP_REGISTRY, "head", "head", {NULL}},
    [OMNI_OP_REG_GET] = {OAP_APP_REGISTRY, "get", "get", {"version", NULL}},
    [OMNI_OP_REG_SIGNERS] = {OAP_APP_REGISTRY, "signers", "signers", {NULL}},
    [OMNI_OP_REG_PROPOSE] = {OAP_APP_REGISTRY, "propose", "propose", {"descriptor", "idem", NULL}},
    [OMNI_OP_REG_APPROVE] = {OAP_APP_REGISTRY,
                             "approve",
                             "approve",
                             {"id", "pk", "sig", "idem", NULL}},
    [OMNI_OP_REG_COMMIT] = {OAP_APP_REGISTRY, "commit", "commit", {"id", "idem", NULL}},
    /* svc-passport checks the values strictly (docs/protocol/passport.md) */
    [OMNI_OP_CHALLENGE] = {OAP_APP_AUTH, "challenge", "challenge", {NULL}},
    [OMNI_OP_REDEEM] = {OAP_APP_AUTH,
                        "redeem",
                        "redeem",
                        {"challenge", "pk", "ops", "ttl", "tenant", "sig", NULL}},
    [OMNI_OP_CAP_MINT] = {OAP_APP_KERNEL,
                          "cap_mint",
                          NULL,
                          {"ops", "ttl", "tenant", "max_bytes", "prefix", NULL}},
    /* the kernel checks the identifier and the numbers (capabilities.md) */
    [OMNI_OP_CAP_REVOKE] = {OAP_APP_KERNEL,
                            "cap_revoke",
                            "auth_revoke",
                            {"id", "epoch", "until", "idem", NULL}},
    /* the node's capability key generation (DESIGN.md §11 `ron key rotate` / `show`) */
    [OMNI_OP_KEY_ROTATE] = {OAP_APP_KERNEL, "key_rotate", "auth_rotate", {NULL}},
    [OMNI_OP_KEY_SHOW] = {OAP_APP_KERNEL, "key_show", "auth_show", {NULL}},
    /* svc-passport's signing key on demand; it checks "keys" (passport.md) */
    [OMNI_OP_PASS_ROTATE] = {OAP_APP_AUTH, "rotate", "rotate", {"keys", NULL}},
};

const char *
omni_op_name(omni_op_t op)
{
    return (unsigned)op < OMNI_OP__COUNT ? ops[op].name : "invalid";
}

static void
err_set(proto_err_t *e, const char *field, const char *text)
{
    if (e == NULL)
        return;
    snprintf(e->field, sizeof e->field, "%s", field);
    snprintf(e->text, sizeof e->text, "field \"%s\": %s", field, text);
}

static bool
idem_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > OMNI_MAX_IDEM)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* b3: + 64 lowercase hex into 32 bytes (ron-naming's address syntax). */
static bool
addr_parse(const char *s, uint8_t out[32])
{
    name_addr_t a;

    if (name_addr_parse(&a, s, strlen(s), NULL) < 0)
        return false;
    memcpy(out, a.b, sizeof a.b);
    return true;
}

static int
parse_get(const proto_start_t *s, omni_request_t *r, proto_err_t *err)
{
    const char *a = NULL;
    int rc;

    if ((rc = proto_args_str(s, "address", true, &a, err)) < 0)
        return rc;
    if (!addr_parse(a, r->addr)) {
        err_set(err, "address", "expected b3: and 64 lowercase hex digits");
        return RON_EJSON;
    }
    r->has_offset = json_object_get(s->args, "offset") != NULL;
    r->has_length = json_object_get(s->args, "length") != NULL;
    if ((rc = proto_args_u64(s, "offset", false, &r->offset, err)) < 0 ||
        (rc = proto_args_u64(s, "length", false, &r->length, err)) < 0)
        return rc;
    return 0;
}

/* Copy a string argument the guard checks (absent, not a string or too long: ""). */
static void
auth_str(const proto_start_t *s, json_t *from, const char *key, char *out, size_t cap)
{
    const char *v = json_string_value(json_object_get(from != NULL ? from : s->args, key));

    out[0] = '\0';
    if (v != NULL && strlen(v) < cap)
        memcpy(out, v, strlen(v) + 1);
}

/* Lowercase hex of exactly 2 * n digits into out. */
static bool
hex_parse(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return false;
    for (size_t i = 0; i < 2 * n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (size_t k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            v = v * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* cap_mint's fields: ops (array of op names), ttl, tenant, max_bytes, prefix. */
static int
parse_mint(const proto_start_t *s, omni_mint_t *m, proto_err_t *err)
{
    json_t *list = json_object_get(s->args, "ops"), *v;
    const char *str = NULL;
    uint64_t u = 0;
    size_t i;
    int rc;

    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > AUTH_OP_COUNT) {
        err_set(err, "ops", "expected a non-empty array of op names");
        return RON_EJSON;
    }
    json_array_foreach(list, i, v)
    {
        auth_op_t op;
        const char *name = json_string_value(v);
        if (name == NULL || auth_op_parse(name, strlen(name), &op) < 0 ||
            (m->ops & (1u << op)) != 0) {
            err_set(err, "ops",
                    "expected distinct ops of get, put, pin, name, send, recv, "
                    "admin, mint");
            return RON_EJSON;
        }
        m->ops |= 1u << op;
    }
    if ((rc = proto_args_u64(s, "ttl", false, &u, err)) < 0)
        return rc;
    if (u > UINT32_MAX) {
        err_set(err, "ttl", "seconds out of range");
        return RON_EJSON;
    }
    m->ttl = (uint32_t)u;
    if ((rc = proto_args_u64(s, "max_bytes", false, &m->max_bytes, err)) < 0)
        return rc;
    if ((rc = proto_args_str(s, "tenant", false, &str, err)) < 0)
        return rc;
    if (str != NULL) {
        if (!hex_parse(str, m->tenant, AUTH_TENANT_LEN)) {
            err_set(err, "tenant", "expected 32 lowercase hex digits");
            return RON_EJSON;
        }
        m->has_tenant = true;
    }
    str = NULL;
    if ((rc = proto_args_str(s, "prefix", false, &str, err)) < 0)
        return rc;
    if (str != NULL) {
        size_t n = strlen(str);
        bool ok = n > 3 && n <= 67 && strncmp(str, "b3:", 3) == 0;
        for (size_t k = 3; ok && k < n; k++)
            ok = (str[k] >= '0' && str[k] <= '9') || (str[k] >= 'a' && str[k] <= 'f');
        if (!ok) {
            err_set(err, "prefix", "expected b3: and 1 to 64 lowercase hex digits");
            return RON_EJSON;
        }
        memcpy(m->prefix, str, n + 1);
    }
    return 0;
}

/* What the guard checks: the address, name and declared size the request names. */
static int
parse_auth(const proto_start_t *s, omni_request_t *r, proto_err_t *err)
{
    json_t *rec;
    int rc;

    switch (r->op) {
    case OMNI_OP_PUT:
        if ((rc = proto_args_u64(s, "size", false, &r->auth_size, err)) < 0)
            return rc;
        auth_str(s, NULL, "expect", r->auth_addr, sizeof r->auth_addr);
        break;
    case OMNI_OP_GET:
    case OMNI_OP_STAT:
    case OMNI_OP_PIN:
    case OMNI_OP_UNPIN:
        auth_str(s, NULL, "address", r->auth_addr, sizeof r->auth_addr);
        break;
    case OMNI_OP_RESOLVE:
        auth_str(s, NULL, "name", r->auth_name, sizeof r->auth_name);
        if (r->auth_name[0] == '\0') {
            err_set(err, "name", "expected a name of at most 253 bytes");
            return RON_EJSON;
        }
        break;
    case OMNI_OP_PUBLISH:
        rec = json_object_get(s->args, "record");
        if (!json_is_object(rec)) {
            err_set(err, "record", "expected the signed record object");
            return RON_EJSON;
        }
        auth_str(s, rec, "name", r->auth_name, sizeof r->auth_name);
        auth_str(s, rec, "addr", r->auth_addr, sizeof r->auth_addr);
        if (r->auth_name[0] == '\0') {
            err_set(err, "record", "expected a record naming a name of at most 253 bytes");
            return RON_EJSON;
        }
        break;
    case OMNI_OP_CAP_MINT:
        return parse_mint(s, &r->mint, err);
    default:
        break;
    }
    return 0;
}

/* The forwarded JSON: the args without idem, op renamed, service added for the kernel. */
static int
build_fwd(const proto_start_t *s, const op_def_t *d, const char *service, omni_request_t *r)
{
    json_t *o = json_deep_copy(s->args);
    char *txt;

    if (o == NULL)
        return RON_EJSON;
    json_object_del(o, "idem");
    json_object_set_new(o, "op", json_string(d->bus_op));
    if (d->app == OAP_APP_KERNEL) {
        if (strcmp(d->bus_op, "release") == 0) {
            /* the kernel's request names the sender in "service": the
             * service to release travels as "target" */
            json_object_set(o, "target", json_object_get(o, "service"));
        }
        json_object_set_new(o, "service", json_string(service != NULL ? service : "app"));
    }
    txt = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (txt == NULL)
        return RON_EJSON;
    r->fwd = txt;
    r->fwd_len = strlen(txt);
    return 0;
}

/* The op named op on app into r->op and *d_out; an unknown one is RON_EJSON naming the field. */
static int
op_find(uint16_t app, const char *op, omni_request_t *r, const op_def_t **d_out, proto_err_t *err)
{
    bool app_known = false;

    *d_out = NULL;
    for (size_t i = 0; i < OMNI_OP__COUNT; i++) {
        if (ops[i].app != app)
            continue;
        app_known = true;
        if (strcmp(ops[i].name, op) == 0) {
            *d_out = &ops[i];
            r->op = (omni_op_t)i;
        }
    }
    if (*d_out != NULL)
        return 0;
    err_set(err, app_known ? "op" : "app_proto_id",
            app_known ? "unknown operation" : "no operations on this app_proto_id");
    return RON_EJSON;
}

/* The args d allows, idem, and the ops' own required fields (release, cap_revoke). */
static int
parse_args(const proto_start_t *s, const op_def_t *d, omni_request_t *r, proto_err_t *err)
{
    const char *idem = NULL, *svc = NULL, *id = NULL, *epoch = NULL, *until = NULL;
    int rc;

    if ((rc = proto_args_only(s, d->fields, err)) < 0 ||
        (rc = proto_args_str(s, "idem", false, &idem, err)) < 0)
        return rc;
    if (idem != NULL) {
        if (!idem_ok(idem)) {
            err_set(err, "idem", "expected 1..64 of [A-Za-z0-9_-]");
            return RON_EJSON;
        }
        snprintf(r->idem, sizeof r->idem, "%s", idem);
    }
    if (r->op == OMNI_OP_RELEASE)
        return proto_args_str(s, "service", true, &svc, err);
    if (r->op == OMNI_OP_CAP_REVOKE) {
        if ((rc = proto_args_str(s, "id", false, &id, err)) < 0 ||
            (rc = proto_args_str(s, "epoch", false, &epoch, err)) < 0 ||
            (rc = proto_args_str(s, "until", false, &until, err)) < 0)
            return rc;
        if ((id == NULL) == (epoch == NULL)) {
            err_set(err, "id", "give exactly one of id and epoch");
            return RON_EJSON;
        }
        r->revoke_epoch = epoch != NULL;
    }
    return 0;
}

int
omni_request_parse(uint16_t app_proto_id, const uint8_t *json, size_t len, const char *service,
                   omni_request_t *r_out, proto_err_t *err_out)
{
    proto_start_t s = {0};
    const op_def_t *d = NULL;
    int rc;

    memset(r_out, 0, sizeof *r_out);
    r_out->app_proto_id = app_proto_id;
    r_out->auth_op = -1;
    r_out->auth_size = AUTH_SIZE_UNKNOWN;
    if (len > OMNI_MAX_JSON) {
        err_set(err_out, "payload", "request JSON over 4096 bytes");
        return RON_EJSON;
    }
    if (app_proto_id == OAP_APP_CONTROL && len == 0) {
        r_out->op = OMNI_OP_PING; /* an empty PING */
        return 0;
    }
    if ((rc = proto_start_decode((const char *)json, len, &s, err_out)) < 0)
        return rc;
    if ((rc = op_find(app_proto_id, s.op, r_out, &d, err_out)) < 0 ||
        (rc = parse_args(&s, d, r_out, err_out)) < 0)
        goto out;
    r_out->auth_op = omni__op_auth(r_out->op, r_out->revoke_epoch);
    if ((rc = parse_auth(&s, r_out, err_out)) < 0)
        goto out;
    if (r_out->op == OMNI_OP_GET)
        rc = parse_get(&s, r_out, err_out);
    else if (d->bus_op != NULL)
        rc = build_fwd(&s, d, service, r_out);
out:
    proto_start_close(&s);
    if (rc < 0)
        omni_request_close(r_out);
    return rc;
}

void
omni_request_close(omni_request_t *r)
{
    free(r->fwd);
    r->fwd = NULL;
    r->fwd_len = 0;
}
