/*
 * proto_svc.c - the strict JSON bus service skeleton (proto_svc.h): the
 * registry and index services had each their own copy of the op lookup,
 * the frame checks, the counters by op and status and their rendering;
 * one copy here keeps their answers and metrics the same by construction.
 * Invariants: a refusal always names a code and a message; the counters
 * exist for every (op, status) pair from the start, so an idle service
 * renders zeros rather than nothing (what dashboards and tests read).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto_svc.h"
#include "ron_err.h"
#include "ron_util.h"

/* The status codes counted by name unless a service names its own (proto_svc.h). */
static const uint16_t default_statuses[] = {200, 400, 401, 403, 404, 409, 429, 500, 503, 507};

struct proto_svc {
    const proto_svc_desc_t *d;
    const uint16_t *statuses; /* counted by name; any other counts as "other" */
    size_t n_statuses;
    met_registry_t *reg;
    /* [op, or n_ops for "invalid"][status index, or n_statuses for "other"] */
    met_counter_t *req[PROTO_SVC_MAX_OPS + 1][PROTO_SVC_MAX_STATUSES + 1];
};

int
proto_svc_new(const proto_svc_desc_t *d, proto_svc_t **svc_out)
{
    static const char *const labels[] = {"op", "status"};
    met_desc_t desc = {MET_COUNTER, NULL, NULL, labels, 2, NULL, 0, 0};
    met_family_t *fam = NULL;
    proto_svc_t *s;
    int rc;

    if (d == NULL || d->n_ops == 0 || d->n_ops > PROTO_SVC_MAX_OPS || d->ops == NULL ||
        (d->statuses != NULL && (d->n_statuses == 0 || d->n_statuses > PROTO_SVC_MAX_STATUSES)))
        return RON_EINVAL;
    for (size_t i = 0; i < d->n_ops; i++)
        if (d->ops[i].name == NULL)
            return RON_EINVAL;
    s = ron_xcalloc(1, sizeof *s);
    s->d = d;
    s->statuses = d->statuses != NULL ? d->statuses : default_statuses;
    s->n_statuses = d->statuses != NULL ? d->n_statuses : RON_ARRAY_LEN(default_statuses);
    s->reg = met_registry_new();
    desc.name = d->metric;
    desc.help = d->help;
    if ((rc = met_family_register(s->reg, &desc, &fam)) < 0) {
        proto_svc_free(s);
        return rc;
    }
    for (size_t op = 0; op <= d->n_ops; op++)
        for (size_t i = 0; i <= s->n_statuses; i++) {
            char code[8];
            const char *vals[2] = {proto_svc_op_name(s, (int)op), code};
            if (i < s->n_statuses)
                snprintf(code, sizeof code, "%u", s->statuses[i]);
            else
                snprintf(code, sizeof code, "other");
            s->req[op][i] = met_family_counter(fam, vals);
        }
    *svc_out = s;
    return 0;
}

void
proto_svc_free(proto_svc_t *s)
{
    if (s == NULL)
        return;
    met_registry_free(s->reg);
    free(s);
}

met_registry_t *
proto_svc_registry(proto_svc_t *s)
{
    return s->reg;
}

const char *
proto_svc_op_name(const proto_svc_t *s, int op)
{
    if (op < 0 || (size_t)op >= s->d->n_ops)
        return "invalid";
    return s->d->ops[op].name;
}

void
proto_svc_count(proto_svc_t *s, int op, uint16_t code)
{
    size_t o = op < 0 || (size_t)op > s->d->n_ops ? s->d->n_ops : (size_t)op;
    size_t i = 0;

    while (i < s->n_statuses && s->statuses[i] != code)
        i++;
    met_counter_inc(s->req[o][i]);
}

/* Fill f with a 400 naming reason (may be NULL) and the formatted message. */
static int refuse(proto_svc_fail_t *f, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
refuse(proto_svc_fail_t *f, const char *reason, const char *fmt, ...)
{
    va_list ap;

    f->code = 400;
    snprintf(f->reason, sizeof f->reason, "%s", reason != NULL ? reason : "");
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    return RON_EJSON;
}

int
proto_svc_parse(const proto_svc_t *s, const uint8_t *payload, size_t len, proto_svc_req_t *req_out,
                proto_svc_fail_t *fail_out)
{
    static const char *const none[] = {NULL};
    const proto_svc_desc_t *d = s->d;
    json_t *o = NULL;
    json_error_t jerr;
    const char *opname, *bad;
    int op = (int)d->n_ops, rc;
    uint32_t jl;

    memset(req_out, 0, sizeof *req_out);
    req_out->op = op;
    if (len < 4)
        return refuse(fail_out, NULL, "%s",
                      d->frame_message != NULL ? d->frame_message
                                               : "payload shorter than its 4-byte JSON length");
    jl = (uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 | (uint32_t)payload[2] << 8 |
         payload[3];
    if (jl > d->max_json || jl > len - 4 || (!d->raw_follows && jl != len - 4)) {
        if (d->frame_message != NULL)
            return refuse(fail_out, NULL, "%s", d->frame_message);
        if (d->raw_follows)
            return refuse(fail_out, NULL, "JSON length out of range");
        return refuse(fail_out, NULL, "JSON length out of range (no raw bytes follow %s requests)",
                      d->what);
    }
    o = json_loadb((const char *)payload + 4, jl, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o)) {
        rc = refuse(fail_out, NULL, "request JSON is not an object");
        goto fail;
    }
    opname = json_string_value(json_object_get(o, "op"));
    for (size_t i = 0; opname != NULL && i < d->n_ops; i++)
        if (strcmp(opname, d->ops[i].name) == 0)
            op = (int)i;
    if (op == (int)d->n_ops) {
        rc = refuse(fail_out, "op", "op: unknown operation '%.64s'", opname != NULL ? opname : "");
        goto fail;
    }
    req_out->op = op;
    bad = proto_json_unknown_key(o, "op", d->ops[op].fields != NULL ? d->ops[op].fields : none);
    if (bad != NULL) {
        rc = refuse(fail_out, bad, "%.64s: unknown field for %s", bad, d->ops[op].name);
        goto fail;
    }
    req_out->o = o;
    req_out->raw = payload + 4 + jl;
    req_out->raw_len = len - 4 - jl;
    return 0;
fail:
    json_decref(o);
    return rc;
}

int
proto_svc_get_text(const json_t *o, const char *name, char *out, size_t cap)
{
    json_t *v = json_object_get(o, name);
    size_t n;

    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return -1;
    n = json_string_length(v);
    if (n >= cap || strlen(json_string_value(v)) != n)
        return -1;
    memcpy(out, json_string_value(v), n + 1);
    return 1;
}

const proto_svc_rc_t *
proto_svc_rc_find(const proto_svc_rc_t *map, size_t n, int rc)
{
    for (size_t i = 0; i < n; i++)
        if (map[i].rc == rc)
            return &map[i];
    return NULL;
}

int
proto_svc_frame_ok(proto_svc_t *s, int op, json_t *o, uint8_t **buf_out, size_t *len_out)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t jl;

    json_decref(o);
    if (txt == NULL)
        return -ENOMEM;
    jl = strlen(txt);
    *buf_out = ron_xmalloc(4 + jl);
    *len_out = proto_json_frame(*buf_out, txt, (uint32_t)jl);
    free(txt);
    proto_svc_count(s, op, 200);
    return 0;
}

size_t
proto_svc_metrics(proto_svc_t *s, char *buf, size_t cap)
{
    return met_registry_render_buf(s->reg, buf, cap);
}
