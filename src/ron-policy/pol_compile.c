/*
 * pol_compile.c - strict parser of policy bundles (docs/protocol/policy.md)
 * and the compiler that turns one into the immutable pol_policy_t that
 * pol_eval.c reads.
 * Invariants: every refusal names the JSON path at fault; nothing is
 * allocated from a count in the bundle before that count is checked
 * against its POL_MAX_* limit; a refused bundle leaks nothing.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pol_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define MAX_JSON_INT 9007199254740991LL /* 2^53 - 1: what every JSON reader keeps exact */

typedef struct {
    pol_policy_t *p;
    pol_err_t *err;
    uint32_t cidr_cap;
} build_t;

/* Format a JSON path into out (96 bytes), truncating a long one (paths
 * are bounded: ids and keys past the limits are refused before they nest). */
static void __attribute__((format(printf, 2, 3)))
path_fmt(char out[static 96], const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(out, 96, fmt, ap);
    va_end(ap);
}

static int __attribute__((format(printf, 4, 5)))
fail(build_t *b, int code, const char *path, const char *fmt, ...)
{
    char what[160];
    va_list ap;

    if (b->err == NULL)
        return code;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    for (char *c = what; *c != '\0'; c++) /* jansson quotes input: keep the sentence printable */
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    b->err->code = code;
    snprintf(b->err->path, sizeof b->err->path, "%s", path);
    snprintf(b->err->msg, sizeof b->err->msg, "%s: %s", path, what);
    return code;
}

/* Refuse any key of obj not in allowed (NULL-terminated). */
static int
check_keys(build_t *b, json_t *obj, const char *path, const char *const *allowed)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char sub[96];
            path_fmt(sub, "%s.%s", path, key);
            return fail(b, RON_EPOLICY, sub, "unknown field");
        }
    }
    return 0;
}

static int
get_uint(build_t *b, json_t *v, const char *path, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v))
        return fail(b, RON_EPOLICY, path, "must be an integer");
    json_int_t n = json_integer_value(v);
    if (n < 0 || (uint64_t)n > max)
        return fail(b, n < 0 ? RON_EPOLICY : RON_EPOLLIMIT, path, "must be between 0 and %llu",
                    (unsigned long long)max);
    *out = (uint64_t)n;
    return 0;
}

static int
get_bool(build_t *b, json_t *v, const char *path, bool *out)
{
    if (!json_is_boolean(v))
        return fail(b, RON_EPOLICY, path, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

/* Identifier-like strings (rule ids, tags): 1..max bytes of [A-Za-z0-9._:-]. */
static int
get_ident(build_t *b, json_t *v, const char *path, size_t max, const char **out, size_t *len_out)
{
    if (!json_is_string(v))
        return fail(b, RON_EPOLICY, path, "must be a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0)
        return fail(b, RON_EPOLICY, path, "must not be empty");
    if (len > max)
        return fail(b, RON_EPOLLIMIT, path, "is %zu bytes, more than %zu", len, max);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return fail(b, RON_EPOLICY, path, "byte %zu is not one of A-Z a-z 0-9 . _ : -", i);
    }
    *out = s;
    *len_out = len;
    return 0;
}

/* Free text (description, reason): <= max bytes, no control characters. */
static int
get_text(build_t *b, json_t *v, const char *path, size_t max, const char **out)
{
    if (!json_is_string(v))
        return fail(b, RON_EPOLICY, path, "must be a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len > max)
        return fail(b, RON_EPOLLIMIT, path, "is %zu bytes, more than %zu", len, max);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail(b, RON_EPOLICY, path, "byte %zu is a control character", i);
    *out = s;
    return 0;
}

static int
parse_ops(build_t *b, json_t *v, const char *path, uint8_t *ops_out)
{
    char sub[96];
    uint8_t ops = 0;
    size_t i;
    json_t *e;

    if (!json_is_array(v))
        return fail(b, RON_EPOLICY, path, "must be an array of operation names");
    if (json_array_size(v) == 0)
        return fail(b, RON_EPOLICY, path, "must not be empty (omit it to match every operation)");
    if (json_array_size(v) > POL_OP_COUNT)
        return fail(b, RON_EPOLLIMIT, path, "lists more than %d operations", POL_OP_COUNT);
    json_array_foreach(v, i, e)
    {
        pol_op_t op;
        path_fmt(sub, "%s[%zu]", path, i);
        if (!json_is_string(e) || pol_op_parse(json_string_value(e), &op) < 0)
            return fail(b, RON_EPOLICY, sub,
                        "must be one of get, put, pin, name, send, recv, admin, mint");
        if (ops & (1u << op))
            return fail(b, RON_EPOLICY, sub, "repeats operation \"%s\"", pol_op_name(op));
        ops |= (uint8_t)(1u << op);
    }
    *ops_out = ops;
    return 0;
}

/* Intern tag s (bundle-wide) and return its bit index. */
static int
tag_intern(build_t *b, const char *path, const char *s, size_t len, int *idx_out)
{
    pol_policy_t *p = b->p;
    int idx = pol__tag_find(p, s, len);
    if (idx >= 0) {
        *idx_out = idx;
        return 0;
    }
    if (p->n_tags >= POL_MAX_TAGS)
        return fail(b, RON_EPOLLIMIT, path, "the bundle uses more than %d distinct tags",
                    POL_MAX_TAGS);
    uint32_t h = pol__tag_hash(s, len);
    uint32_t slot = h % POL__TAG_SLOTS;
    while (p->tag_slot[slot] >= 0) /* never full: slots > 2 x POL_MAX_TAGS */
        slot = (slot + 1) % POL__TAG_SLOTS;
    idx = (int)p->n_tags++;
    p->tags[idx] = ron_xstrdup(s);
    p->tag_slot[slot] = (int16_t)idx;
    p->tag_hash[slot] = h;
    *idx_out = idx;
    return 0;
}

static int
parse_tags(build_t *b, json_t *v, const char *path, uint64_t *mask_out)
{
    char sub[96];
    uint64_t mask = 0;
    size_t i, len = 0;
    json_t *e;
    const char *s = NULL;
    int rc, idx = 0;

    if (!json_is_array(v))
        return fail(b, RON_EPOLICY, path, "must be an array of tags");
    if (json_array_size(v) > POL_MAX_RULE_TAGS)
        return fail(b, RON_EPOLLIMIT, path, "lists more than %d tags", POL_MAX_RULE_TAGS);
    json_array_foreach(v, i, e)
    {
        path_fmt(sub, "%s[%zu]", path, i);
        if ((rc = get_ident(b, e, sub, POL_MAX_TAG_LEN, &s, &len)) < 0)
            return rc;
        if ((rc = tag_intern(b, sub, s, len, &idx)) < 0)
            return rc;
        if (mask & (1ull << idx))
            return fail(b, RON_EPOLICY, sub, "repeats tag \"%s\"", s);
        mask |= 1ull << idx;
    }
    *mask_out = mask;
    return 0;
}

/* "a.b.c.d/n" or "x:y::z/n"; host bits must be zero. */
static int
parse_cidr(build_t *b, json_t *v, const char *path, pol__cidr_t *c)
{
    char addr[64];
    const char *s, *slash;
    uint64_t bits = 0;

    if (!json_is_string(v))
        return fail(b, RON_EPOLICY, path, "must be a string \"address/prefix-length\"");
    s = json_string_value(v);
    slash = strchr(s, '/');
    if (slash == NULL || (size_t)(slash - s) >= sizeof addr || slash[1] == '\0' ||
        ron_parse_u64(slash + 1, strlen(slash + 1), &bits) < 0)
        return fail(b, RON_EPOLICY, path, "must be \"address/prefix-length\" (CIDR)");
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    memset(c, 0, sizeof *c);
    if (inet_pton(AF_INET, addr, c->addr) == 1) {
        c->family = AF_INET;
        if (bits > 32)
            return fail(b, RON_EPOLICY, path, "IPv4 prefix length must be 0..32");
    } else if (inet_pton(AF_INET6, addr, c->addr) == 1) {
        c->family = AF_INET6;
        if (bits > 128)
            return fail(b, RON_EPOLICY, path, "IPv6 prefix length must be 0..128");
    } else {
        return fail(b, RON_EPOLICY, path, "\"%s\" is not an IPv4 or IPv6 address", addr);
    }
    c->bits = (uint8_t)bits;
    size_t alen = c->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < alen; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : (bits > 8 * i ? (unsigned)(bits - 8 * i) : 0);
        uint8_t host = keep == 8 ? 0 : (uint8_t)(0xffu >> keep);
        if (c->addr[i] & host)
            return fail(b, RON_EPOLICY, path, "has bits set past the prefix length");
    }
    return 0;
}

static int
parse_sources(build_t *b, json_t *v, const char *path, pol__match_t *m)
{
    pol_policy_t *p = b->p;
    char sub[96];
    size_t i;
    json_t *e;
    int rc;

    if (!json_is_array(v))
        return fail(b, RON_EPOLICY, path, "must be an array of CIDR prefixes");
    if (json_array_size(v) == 0)
        return fail(b, RON_EPOLICY, path, "must not be empty (omit it to match every source)");
    if (json_array_size(v) > POL_MAX_RULE_SOURCES)
        return fail(b, RON_EPOLLIMIT, path, "lists more than %d prefixes", POL_MAX_RULE_SOURCES);
    if (p->n_cidrs + json_array_size(v) > b->cidr_cap) {
        b->cidr_cap = b->cidr_cap * 2 + POL_MAX_RULE_SOURCES;
        p->cidrs = ron_xrealloc(p->cidrs, b->cidr_cap * sizeof *p->cidrs);
    }
    m->src_off = (uint16_t)p->n_cidrs;
    json_array_foreach(v, i, e)
    {
        path_fmt(sub, "%s[%zu]", path, i);
        if ((rc = parse_cidr(b, e, sub, &p->cidrs[p->n_cidrs])) < 0)
            return rc;
        p->n_cidrs++;
    }
    if (p->n_cidrs > UINT16_MAX)
        return fail(b, RON_EPOLLIMIT, path, "the bundle lists more than 65535 prefixes");
    m->src_n = (uint16_t)json_array_size(v);
    return 0;
}

static int
parse_match(build_t *b, json_t *v, const char *path, pol__match_t *m, uint8_t *ops)
{
    static const char *const keys[] = {"tenant",   "anonymous", "ops",    "min_body",
                                       "max_body", "tags",      "source", NULL};
    char sub[96];
    json_t *f;
    int rc;

    if (!json_is_object(v))
        return fail(b, RON_EPOLICY, path, "must be an object");
    if ((rc = check_keys(b, v, path, keys)) < 0)
        return rc;
    if ((f = json_object_get(v, "tenant")) != NULL) {
        path_fmt(sub, "%s.tenant", path);
        if (!json_is_string(f) || json_string_length(f) != 2 * POL_TENANT_LEN ||
            ron_hex_decode(m->tenant, POL_TENANT_LEN, json_string_value(f), 2 * POL_TENANT_LEN) < 0)
            return fail(b, RON_EPOLICY, sub, "must be 32 lowercase hex digits");
        for (const char *c = json_string_value(f); *c; c++)
            if (*c >= 'A' && *c <= 'F')
                return fail(b, RON_EPOLICY, sub, "must be 32 lowercase hex digits");
        m->has_tenant = true;
        m->who = POL__WHO_CAP;
    }
    if ((f = json_object_get(v, "anonymous")) != NULL) {
        bool anon = false;
        path_fmt(sub, "%s.anonymous", path);
        if ((rc = get_bool(b, f, sub, &anon)) < 0)
            return rc;
        if (anon && m->has_tenant)
            return fail(b, RON_EPOLICY, sub,
                        "cannot be true with a tenant (anonymous requests have none)");
        m->who = anon ? POL__WHO_ANON : POL__WHO_CAP;
    }
    if ((f = json_object_get(v, "ops")) != NULL) {
        path_fmt(sub, "%s.ops", path);
        if ((rc = parse_ops(b, f, sub, ops)) < 0)
            return rc;
    }
    if ((f = json_object_get(v, "min_body")) != NULL) {
        path_fmt(sub, "%s.min_body", path);
        if ((rc = get_uint(b, f, sub, MAX_JSON_INT, &m->min_body)) < 0)
            return rc;
    }
    if ((f = json_object_get(v, "max_body")) != NULL) {
        path_fmt(sub, "%s.max_body", path);
        if ((rc = get_uint(b, f, sub, MAX_JSON_INT, &m->max_body)) < 0)
            return rc;
        if (m->max_body < m->min_body)
            return fail(b, RON_EPOLICY, sub, "is less than min_body");
    }
    if ((f = json_object_get(v, "tags")) != NULL) {
        path_fmt(sub, "%s.tags", path);
        if ((rc = parse_tags(b, f, sub, &m->tag_mask)) < 0)
            return rc;
    }
    if ((f = json_object_get(v, "source")) != NULL) {
        path_fmt(sub, "%s.source", path);
        if ((rc = parse_sources(b, f, sub, m)) < 0)
            return rc;
    }
    return 0;
}

/* "N/s" with 1 <= N <= POL_MAX_RATE. */
static int
parse_rate(build_t *b, json_t *v, const char *path, uint32_t *rate_out)
{
    const char *s = NULL;
    size_t len = 0;
    uint64_t n = 0;

    if (!json_is_string(v))
        return fail(b, RON_EPOLICY, path, "must be a string \"N/s\"");
    s = json_string_value(v);
    len = json_string_length(v);
    if (len < 3 || strcmp(s + len - 2, "/s") != 0 || ron_parse_u64(s, len - 2, &n) < 0)
        return fail(b, RON_EPOLICY, path, "must be \"N/s\" with N a decimal count");
    if (n == 0 || n > POL_MAX_RATE)
        return fail(b, RON_EPOLLIMIT, path, "N must be between 1 and %u", POL_MAX_RATE);
    *rate_out = (uint32_t)n;
    return 0;
}

static int
parse_obligations(build_t *b, json_t *v, const char *path, pol_obligations_t *o)
{
    static const char *const keys[] = {"rate", "burst", "audit", "log", NULL};
    char sub[96];
    json_t *f;
    uint64_t burst = 0;
    int rc;

    if (!json_is_object(v))
        return fail(b, RON_EPOLICY, path, "must be an object");
    if ((rc = check_keys(b, v, path, keys)) < 0)
        return rc;
    if ((f = json_object_get(v, "rate")) != NULL) {
        path_fmt(sub, "%s.rate", path);
        if ((rc = parse_rate(b, f, sub, &o->rate)) < 0)
            return rc;
        o->burst = o->rate;
    }
    if ((f = json_object_get(v, "burst")) != NULL) {
        path_fmt(sub, "%s.burst", path);
        if (o->rate == 0)
            return fail(b, RON_EPOLICY, sub, "needs a rate beside it");
        if ((rc = get_uint(b, f, sub, POL_MAX_BURST, &burst)) < 0)
            return rc;
        if (burst == 0)
            return fail(b, RON_EPOLICY, sub, "must be at least 1");
        o->burst = (uint32_t)burst;
    }
    if ((f = json_object_get(v, "audit")) != NULL) {
        path_fmt(sub, "%s.audit", path);
        if ((rc = get_bool(b, f, sub, &o->audit)) < 0)
            return rc;
    }
    if ((f = json_object_get(v, "log")) != NULL) {
        path_fmt(sub, "%s.log", path);
        if ((rc = get_bool(b, f, sub, &o->log)) < 0)
            return rc;
    }
    return 0;
}

static int
parse_rule(build_t *b, json_t *v, uint32_t idx)
{
    static const char *const keys[] = {"id", "effect", "match", "obligations", "reason", NULL};
    pol__rule_t *r = &b->p->rules[idx];
    pol__match_t *m = &b->p->match[idx];
    char path[96], sub[96];
    const char *s = NULL;
    size_t len = 0;
    json_t *f;
    int rc;

    path_fmt(path, "$.rules[%u]", idx);
    m->max_body = UINT64_MAX;
    r->ops = POL__OPS_ALL;
    r->reason = ron_xstrdup("");
    if (!json_is_object(v))
        return fail(b, RON_EPOLICY, path, "must be an object");
    if ((rc = check_keys(b, v, path, keys)) < 0)
        return rc;
    path_fmt(sub, "%s.id", path);
    if ((f = json_object_get(v, "id")) == NULL)
        return fail(b, RON_EPOLICY, sub, "is missing");
    if ((rc = get_ident(b, f, sub, POL_MAX_ID_LEN, &s, &len)) < 0)
        return rc;
    r->id = ron_xstrdup(s);
    path_fmt(sub, "%s.effect", path);
    if ((f = json_object_get(v, "effect")) == NULL)
        return fail(b, RON_EPOLICY, sub, "is missing");
    if (json_is_string(f) && strcmp(json_string_value(f), "allow") == 0)
        r->effect = POL_ALLOW;
    else if (json_is_string(f) && strcmp(json_string_value(f), "deny") == 0)
        r->effect = POL_DENY;
    else
        return fail(b, RON_EPOLICY, sub, "must be \"allow\" or \"deny\"");
    if ((f = json_object_get(v, "match")) != NULL) {
        path_fmt(sub, "%s.match", path);
        if ((rc = parse_match(b, f, sub, m, &r->ops)) < 0)
            return rc;
    }
    if ((f = json_object_get(v, "obligations")) != NULL) {
        path_fmt(sub, "%s.obligations", path);
        if ((rc = parse_obligations(b, f, sub, &r->obligations)) < 0)
            return rc;
    }
    if ((f = json_object_get(v, "reason")) != NULL) {
        path_fmt(sub, "%s.reason", path);
        if ((rc = get_text(b, f, sub, POL_MAX_REASON_LEN, &s)) < 0)
            return rc;
        free(r->reason);
        r->reason = ron_xstrdup(s);
    }
    return 0;
}

typedef struct {
    const char *id;
    uint32_t idx; /* rule number in bundle order */
} id_ref_t;

static int
cmp_id_refs(const void *a, const void *b)
{
    const id_ref_t *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c != 0 ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Refuse two rules with one id: sort (id, number) pairs, compare neighbours. */
static int
check_duplicate_ids(build_t *b)
{
    pol_policy_t *p = b->p;
    id_ref_t *sorted;
    int rc = 0;

    if (p->n_rules < 2)
        return 0;
    sorted = ron_xmalloc(p->n_rules * sizeof(id_ref_t));
    for (uint32_t i = 0; i < p->n_rules; i++)
        sorted[i] = (id_ref_t){p->rules[i].id, i};
    qsort(sorted, p->n_rules, sizeof(id_ref_t), cmp_id_refs);
    for (uint32_t i = 1; i < p->n_rules && rc == 0; i++) {
        if (strcmp(sorted[i - 1].id, sorted[i].id) == 0) {
            /* equal ids sort by number: name the later one, cite the earlier */
            char path[96];
            path_fmt(path, "$.rules[%u].id", sorted[i].idx);
            rc = fail(b, RON_EPOLDUP, path, "repeats the id \"%s\" of $.rules[%u]", sorted[i].id,
                      sorted[i - 1].idx);
        }
    }
    free(sorted);
    return rc;
}

/* Group the rules that name a tenant by tenant, in bundle order. */
static void
build_tenant_index(pol_policy_t *p)
{
    uint32_t with = 0, slots = 8, pos = 0;
    uint32_t *fill;

    for (uint32_t i = 0; i < p->n_rules; i++)
        with += p->match[i].has_tenant;
    if (with == 0)
        return;
    while (slots <= 2 * with)
        slots *= 2;
    p->tenants = ron_xcalloc(slots, sizeof *p->tenants);
    p->tenant_mask = slots - 1;
    p->tenant_rules = ron_xmalloc(with * sizeof *p->tenant_rules);
    for (uint32_t i = 0; i < p->n_rules; i++) { /* count per tenant */
        if (!p->match[i].has_tenant)
            continue;
        pol__tenant_t *t = &p->tenants[pol__tenant_slot(p, p->match[i].tenant)];
        memcpy(t->tenant, p->match[i].tenant, POL_TENANT_LEN);
        t->n++;
    }
    for (uint32_t k = 0; k < slots; k++) {
        p->tenants[k].off = pos;
        pos += p->tenants[k].n;
    }
    fill = ron_xcalloc(slots, sizeof *fill);
    for (uint32_t i = 0; i < p->n_rules; i++) { /* ascending i: bundle order per tenant */
        if (!p->match[i].has_tenant)
            continue;
        uint32_t k = pol__tenant_slot(p, p->match[i].tenant);
        p->tenant_rules[p->tenants[k].off + fill[k]++] = i;
    }
    free(fill);
}

/* Per-op candidate lists of the rules without a tenant, in bundle order,
 * in one allocation; then the per-tenant lists. */
static void
build_index(pol_policy_t *p)
{
    size_t total = 0, pos = 0;

    for (uint32_t i = 0; i < p->n_rules; i++)
        p->match[i].ops = p->rules[i].ops;
    for (int op = 0; op < POL_OP_COUNT; op++)
        for (uint32_t i = 0; i < p->n_rules; i++)
            total += !p->match[i].has_tenant && ((p->rules[i].ops >> op) & 1u);
    p->by_op_all = ron_xmalloc((total ? total : 1) * sizeof *p->by_op_all);
    for (int op = 0; op < POL_OP_COUNT; op++) {
        p->by_op[op] = p->by_op_all + pos;
        p->n_by_op[op] = 0;
        for (uint32_t i = 0; i < p->n_rules; i++)
            if (!p->match[i].has_tenant && ((p->rules[i].ops >> op) & 1u)) {
                p->by_op_all[pos++] = i;
                p->n_by_op[op]++;
            }
    }
    build_tenant_index(p);
}

static int
parse_bundle(build_t *b, json_t *root)
{
    static const char *const keys[] = {"version", "revision", "description", "rules", NULL};
    pol_policy_t *p = b->p;
    json_t *f, *rule;
    uint64_t version = 0;
    const char *s = NULL;
    size_t i;
    int rc;

    if (!json_is_object(root))
        return fail(b, RON_EPOLICY, "$", "must be an object");
    if ((rc = check_keys(b, root, "$", keys)) < 0)
        return rc;
    if ((f = json_object_get(root, "version")) == NULL)
        return fail(b, RON_EPOLICY, "$.version", "is missing");
    if ((rc = get_uint(b, f, "$.version", MAX_JSON_INT, &version)) < 0)
        return rc;
    if (version != POL_SCHEMA_VERSION)
        return fail(b, RON_EPOLICY, "$.version", "must be %d (this node reads schema version %d)",
                    POL_SCHEMA_VERSION, POL_SCHEMA_VERSION);
    if ((f = json_object_get(root, "revision")) != NULL &&
        (rc = get_uint(b, f, "$.revision", MAX_JSON_INT, &p->revision)) < 0)
        return rc;
    if ((f = json_object_get(root, "description")) != NULL &&
        (rc = get_text(b, f, "$.description", POL_MAX_REASON_LEN, &s)) < 0)
        return rc;
    if ((f = json_object_get(root, "rules")) == NULL)
        return fail(b, RON_EPOLICY, "$.rules", "is missing");
    if (!json_is_array(f))
        return fail(b, RON_EPOLICY, "$.rules", "must be an array");
    if (json_array_size(f) > POL_MAX_RULES)
        return fail(b, RON_EPOLLIMIT, "$.rules", "has %zu rules, more than %d", json_array_size(f),
                    POL_MAX_RULES);
    p->match = ron_xcalloc(json_array_size(f) + 1, sizeof *p->match);
    p->rules = ron_xcalloc(json_array_size(f) + 1, sizeof *p->rules);
    json_array_foreach(f, i, rule)
    {
        p->n_rules = (uint32_t)i + 1; /* so destroy frees this rule's strings too */
        if ((rc = parse_rule(b, rule, (uint32_t)i)) < 0)
            return rc;
    }
    if ((rc = check_duplicate_ids(b)) < 0)
        return rc;
    build_index(p);
    return 0;
}

pol_policy_t *
pol_compile(const char *json, size_t len, pol_err_t *err)
{
    build_t b = {.err = err};
    json_error_t jerr;
    json_t *root = NULL;
    int rc;

    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (json == NULL) {
        fail(&b, RON_EPOLICY, "$", "no bundle given");
        return NULL;
    }
    if (len > POL_MAX_BUNDLE) {
        fail(&b, RON_EPOLLIMIT, "$", "bundle is %zu bytes, more than %u", len, POL_MAX_BUNDLE);
        return NULL;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        fail(&b, RON_EPOLICY, "$", "malformed JSON at line %d column %d: %s", jerr.line,
             jerr.column, jerr.text);
        return NULL;
    }
    b.p = ron_xcalloc(1, sizeof *b.p);
    atomic_init(&b.p->refs, 1);
    for (int i = 0; i < POL__TAG_SLOTS; i++)
        b.p->tag_slot[i] = -1;
    rc = parse_bundle(&b, root);
    json_decref(root);
    if (rc < 0) {
        pol__policy_destroy(b.p);
        return NULL;
    }
    return b.p;
}
