/*
 * dht_service_ops.c - the `dht` bus protocol of the DHT node service
 * (docs/protocol/dht.md §10): each request checked strictly by proto_svc
 * (unknown op or key: 400), its fields, its capability (ron-guard), then
 * answered at once or made to wait for a lookup (find_providers, name_get;
 * a lookup already running for the same key is joined).
 * Invariants: every request is answered exactly once and counted once by
 * op and status; a waiting request holds one pend[] slot until answered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht_service_internal.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_util.h"

/* The ops and the keys each allows beside "op" (docs/protocol/dht.md §10). */
static const char *const find_fields[] = {"address", "limit", NULL};
static const char *const provide_fields[] = {"address", "wait_ms", NULL};
static const char *const unprovide_fields[] = {"address", NULL};
static const char *const name_put_fields[] = {"record", NULL};
static const char *const name_get_fields[] = {"name", NULL};
static const proto_svc_op_t ops[OP_COUNT] = {
    [OP_FIND] = {"find_providers", find_fields},      [OP_PROVIDE] = {"provide", provide_fields},
    [OP_UNPROVIDE] = {"unprovide", unprovide_fields}, [OP_NAME_PUT] = {"name_put", name_put_fields},
    [OP_NAME_GET] = {"name_get", name_get_fields},    [OP_STATUS] = {"status", NULL},
};
/* The dht answers 504 (a lookup that did not finish), never 507. */
static const uint16_t statuses[] = {200, 400, 401, 403, 404, 409, 429, 500, 503, 504};
const proto_svc_desc_t dht__svc_desc = {
    .what = "dht",
    .metric = "dht_bus_requests_total",
    .help = "Requests of the dht bus protocol by op and status.",
    .ops = ops,
    .n_ops = OP_COUNT,
    .max_json = DHT_SVC_MAX_JSON,
    .frame_message = "payload is not a 4-byte JSON length and that much JSON",
    .statuses = statuses,
    .n_statuses = RON_ARRAY_LEN(statuses),
};

void
dht__svc_answer_error(dht_service_t *s, op_t op, rbus_req_t *req, uint16_t code, const char *slug,
                      const char *reason, const char *message)
{
    proto_svc_count(s->ps, (int)op, code);
    rbus_respond_error_ex(req, code, slug, reason,
                          code == 429 || code == 503 ? DHT_SVC_RETRY_MS : 0, message);
}

/*
 * The capability check of a request (docs/protocol/dht.md §10): provide
 * and unprovide need the put op for the address, name_put the name op for
 * the record's name; find_providers, name_get and status are reads (get:
 * public under the default policy). The token is the frame's cap section,
 * the tenant its tenant_id. Returns true when allowed (or no guard); false
 * after answering the rejection (guard_check counted and audited it).
 */
static bool
svc_authorize(dht_service_t *s, op_t op, rbus_req_t *req, const oap_frame_t *f, const char *addr,
              const char *name)
{
    static const uint8_t zero[16];
    guard_req_t gr = {0};
    guard_result_t res;

    if (s->guard == NULL)
        return true;
    gr.op = op == OP_PROVIDE || op == OP_UNPROVIDE ? AUTH_OP_PUT
            : op == OP_NAME_PUT                    ? AUTH_OP_NAME
                                                   : AUTH_OP_GET;
    gr.token = f->cap_len > 0 ? (const char *)f->cap : NULL;
    gr.token_len = f->cap_len;
    gr.tenant = memcmp(f->tenant_id, zero, sizeof zero) != 0 ? f->tenant_id : NULL;
    gr.addr = addr;
    gr.size = AUTH_SIZE_UNKNOWN;
    gr.name = name;
    gr.target = addr != NULL ? addr : name != NULL ? name : proto_svc_op_name(s->ps, (int)op);
    gr.forwarded = true; /* a bus request: its rate caveat was charged at the edge */
    if (guard_check(s->guard, &gr, &res) == 0)
        return true;
    proto_svc_count(s->ps, (int)op, (uint16_t)res.status);
    rbus_respond_error_ex(req, (uint16_t)res.status, res.slug, res.slug, res.retry_after_s * 1000u,
                          res.reason);
    return false;
}

/* Answer 200 with o (taken), framed as a u32 length and the JSON. */
void
dht__svc_answer_ok(dht_service_t *s, op_t op, rbus_req_t *req, json_t *o)
{
    uint8_t *buf;
    size_t len;

    if (proto_svc_frame_ok(s->ps, (int)op, o, &buf, &len) < 0) {
        dht__svc_answer_error(s, op, req, 500, NULL, NULL, "cannot encode the answer");
        return;
    }
    rbus_respond(req, 200, buf, len);
    free(buf);
}

static uint64_t
unix_s(void)
{
    return (uint64_t)ron_unix_time();
}

void
dht__svc_pend_answer(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res)
{
    int64_t now_s = (int64_t)unix_s();

    if (p->op == OP_FIND) {
        json_t *arr = json_array(), *o;
        dht_provider_t held[DHT_MAX_PROVIDERS_PER_KEY];
        const dht_provider_t *all[2 * DHT_MAX_PROVIDERS_PER_KEY];
        size_t n_all = 0, n_held = dht_providers_held(s->dht, p->key, held, RON_ARRAY_LEN(held));
        uint8_t seen[2 * DHT_MAX_PROVIDERS_PER_KEY][DHT_ID_LEN];
        size_t n_seen = 0;

        for (uint32_t i = 0; res != NULL && i < res->n_providers; i++)
            all[n_all++] = &res->providers[i];
        for (size_t i = 0; i < n_held; i++)
            all[n_all++] = &held[i];
        for (size_t i = 0; i < n_all && json_array_size(arr) < p->limit; i++) {
            const dht_provider_t *pr = all[i];
            uint8_t id[DHT_ID_LEN];
            char hex[2 * DHT_ID_LEN + 1], a[DHT_SVC_ADDR_MAX];
            bool dup = false;
            if (pr->ttl == 0 || dht_provider_verify(pr, now_s) < 0)
                continue;
            dht_id_of_key(id, pr->pk);
            if (memcmp(id, s->id, DHT_ID_LEN) == 0)
                continue; /* this node: the caller asks because it lacks the object */
            for (size_t k = 0; k < n_seen && !dup; k++)
                dup = memcmp(seen[k], id, DHT_ID_LEN) == 0;
            if (dup)
                continue;
            memcpy(seen[n_seen++], id, DHT_ID_LEN);
            ron_hex_encode(hex, id, DHT_ID_LEN);
            dht_service_addr_format(&pr->addr, a);
            json_array_append_new(arr, json_pack("{s:s, s:s}", "id", hex, "addr", a));
        }
        o = json_object();
        json_object_set_new(o, "providers", arr);
        /* every node the lookup asked answered: no provider here is a real absence */
        json_object_set_new(o, "complete", json_boolean(res != NULL && res->complete));
        dht__svc_answer_ok(s, p->op, p->req, o);
    } else {
        const name_record_t *held = dht_name_held(s->dht, p->key);
        const name_record_t *best = res != NULL && res->has_name ? &res->name : NULL;
        name_record_t copy;
        if (held != NULL && name_record_validate(held, now_s, NULL) == 0 &&
            (best == NULL || name_record_supersedes(best, held, NULL) == 0)) {
            copy = *held;
            best = &copy;
        }
        if (best == NULL) {
            dht__svc_answer_error(s, p->op, p->req, 404, NULL, NULL,
                                  "no record for this name in the DHT");
        } else {
            json_t *o = json_object();
            json_object_set_new(o, "record", name_record_to_object(best));
            dht__svc_answer_ok(s, p->op, p->req, o);
        }
    }
    p->req = NULL;
    s->npend--;
}

static int
get_b3(const json_t *o, uint8_t key[static DHT_ID_LEN])
{
    char a[3 + 2 * DHT_ID_LEN + 1];
    if (proto_svc_get_text(o, "address", a, sizeof a) <= 0 || strncmp(a, "b3:", 3) != 0 ||
        strlen(a) != 3 + 2 * DHT_ID_LEN)
        return -1;
    for (const char *p = a + 3; *p != '\0'; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return -1;
    return ron_hex_decode(key, DHT_ID_LEN, a + 3, 2 * DHT_ID_LEN) < 0 ? -1 : 0;
}

/* The optional decimal string field name of o, 1..max, into *v (unchanged
 * when absent). Returns 0, or -1 when malformed or out of range. */
static int
get_decimal(const json_t *o, const char *name, uint64_t max, uint64_t *v)
{
    char t[8];
    uint64_t n;
    int r = proto_svc_get_text(o, name, t, sizeof t);

    if (r < 0 || (r > 0 && (ron_parse_u64(t, strlen(t), &n) < 0 || n == 0 || n > max)))
        return -1;
    if (r > 0)
        *v = n;
    return 0;
}

/* 1 when this node holds a record an answer for op and key would carry. */
static bool
held_any(const dht_service_t *s, op_t op, const uint8_t key[static DHT_ID_LEN])
{
    dht_provider_t held[DHT_MAX_PROVIDERS_PER_KEY];

    if (op == OP_FIND)
        return dht_providers_held(s->dht, key, held, RON_ARRAY_LEN(held)) > 0;
    return dht_name_held(s->dht, key) != NULL;
}

/*
 * Make req wait for a lookup of key: joins one already running for the
 * same op and key (many gets of one object ask once), else starts one.
 * Answers 429 when DHT_SVC_MAX_PENDING wait or no lookup can start.
 */
static void
start_wait(dht_service_t *s, op_t op, rbus_req_t *req, const uint8_t key[static DHT_ID_LEN],
           unsigned limit)
{
    uint64_t now = ron_now_ms();
    pend_t *p = NULL, *same = NULL;
    uint32_t id;

    if (s->npend >= DHT_SVC_MAX_PENDING) {
        dht__svc_answer_error(s, op, req, 429, NULL, "pending", "too many DHT requests waiting");
        return;
    }
    if (dht_table_size(s->dht) == 0 && s->nseeds + s->nnames > 0 && !held_any(s, op, key)) {
        /* seeded but no contact yet (starting, or the seeds are down): an empty
         * answer would claim nobody has it */
        dht__svc_answer_error(s, op, req, 503, NULL, "not_joined",
                              "the DHT has not reached any other node yet");
        return;
    }
    for (size_t i = 0; i < DHT_SVC_MAX_PENDING && same == NULL; i++)
        if (s->pend[i].req != NULL && s->pend[i].op == op &&
            memcmp(s->pend[i].key, key, DHT_ID_LEN) == 0)
            same = &s->pend[i];
    if (same != NULL) {
        id = same->lookup_id;
        s->lookups_joined++;
    } else if (dht_lookup(s->dht, key, DHT_LOOKUP_VALUE, 0, now, &id) < 0) {
        dht__svc_answer_error(s, op, req, 429, NULL, "lookups", "too many DHT lookups running");
        return;
    }
    for (size_t i = 0; i < DHT_SVC_MAX_PENDING && p == NULL; i++)
        if (s->pend[i].req == NULL)
            p = &s->pend[i];
    p->req = req;
    p->op = op;
    p->lookup_id = id;
    p->queued = false;
    p->limit = limit;
    p->deadline = now + DHT_SVC_LOOKUP_TIMEOUT_MS;
    memcpy(p->key, key, DHT_ID_LEN);
    s->npend++;
    dht__svc_pump(s);
}

static void
do_status(dht_service_t *s, rbus_req_t *req)
{
    char hex[2 * DHT_ID_LEN + 1], c[24], r[24], p[24];
    ron_hex_encode(hex, s->id, DHT_ID_LEN);
    snprintf(c, sizeof c, "%zu", dht_table_size(s->dht));
    snprintf(r, sizeof r, "%zu", dht_record_count(s->dht));
    snprintf(p, sizeof p, "%zu", s->nprov);
    dht__svc_answer_ok(s, OP_STATUS, req,
                       json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "id", hex, "addr", s->bound,
                                 "contacts", c, "records", r, "provided", p, "bootstrapped",
                                 s->bootstrapped));
}

static void
do_name_put(dht_service_t *s, rbus_req_t *req, const oap_frame_t *f, json_t *o)
{
    json_t *rj = json_object_get(o, "record");
    name_record_t rec;
    name_err_t nerr = {0};
    int rc;

    if (!json_is_object(rj)) {
        dht__svc_answer_error(s, OP_NAME_PUT, req, 400, NULL, "record",
                              "record: missing or not an object");
        return;
    }
    rc = name_record_from_object(&rec, rj, &nerr);
    if (rc == 0 && !svc_authorize(s, OP_NAME_PUT, req, f, NULL, rec.name))
        return;
    if (rc == 0)
        rc = name_record_validate(&rec, (int64_t)unix_s(), &nerr);
    if (rc == 0)
        rc = dht_name_publish(s->dht, &rec, ron_now_ms());
    switch (rc) {
    case 0:
    case RON_ENAMEDUP:
        dht__svc_pump(s);
        dht__svc_answer_ok(s, OP_NAME_PUT, req, json_object());
        break;
    case RON_ENAMESTALE:
        dht__svc_answer_error(s, OP_NAME_PUT, req, 409, NULL, "stale_seq",
                              "the DHT holds a record of this name with a higher seq");
        break;
    case RON_ENAMEOWNER:
        dht__svc_answer_error(s, OP_NAME_PUT, req, 409, NULL, "owner",
                              "the name is bound to another key in the DHT");
        break;
    case RON_EBUSY:
        dht__svc_answer_error(s, OP_NAME_PUT, req, 429, NULL, "lookups", "the DHT is busy");
        break;
    default:
        dht__svc_answer_error(s, OP_NAME_PUT, req, 400, NULL, "record",
                              nerr.msg[0] != '\0' ? nerr.msg : ron_strerror(rc));
        break;
    }
}

void
dht__svc_on_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    dht_service_t *s = arg;
    proto_svc_req_t in;
    proto_svc_fail_t fail;
    json_t *o;
    op_t op;
    uint8_t key[DHT_ID_LEN];
    const char *addr;

    if (s->stopping) {
        dht__svc_answer_error(s, OP_BAD, req, 503, NULL, NULL, "dht is stopping");
        return;
    }
    if (proto_svc_parse(s->ps, f->payload, f->payload_len, &in, &fail) < 0) {
        dht__svc_answer_error(s, (op_t)in.op, req, fail.code, NULL,
                              fail.reason[0] != '\0' ? fail.reason : NULL, fail.message);
        return;
    }
    o = in.o;
    op = (op_t)in.op;
    addr = json_string_value(json_object_get(o, "address"));
    if ((op == OP_FIND || op == OP_PROVIDE || op == OP_UNPROVIDE) && get_b3(o, key) < 0) {
        dht__svc_answer_error(s, op, req, 400, NULL, "address",
                              "address: missing or not b3:<64 hex>");
        goto out;
    }
    switch (op) {
    case OP_FIND: {
        uint64_t v = DHT_SVC_PROVIDERS_DEFAULT;
        if (get_decimal(o, "limit", DHT_SVC_PROVIDERS_MAX, &v) < 0) {
            dht__svc_answer_error(s, op, req, 400, NULL, "limit", "limit: a decimal string 1..20");
            break;
        }
        if (!svc_authorize(s, op, req, f, addr, NULL))
            break;
        start_wait(s, op, req, key, (unsigned)v);
        break;
    }
    case OP_PROVIDE: {
        uint64_t wait = 0;
        if (get_decimal(o, "wait_ms", DHT_SVC_PROVIDE_WAIT_MAX, &wait) < 0) {
            dht__svc_answer_error(s, op, req, 400, NULL, "wait_ms",
                                  "wait_ms: a decimal string 1..10000");
            break;
        }
        if (!svc_authorize(s, op, req, f, addr, NULL))
            break;
        if (dht__svc_prov_add(s, key) < 0) {
            dht__svc_answer_error(s, op, req, 429, NULL, "provided",
                                  "this node provides too many keys");
            break;
        }
        if (!dht__svc_ready(s))
            s->provides_queued++;
        if (wait > 0) {
            dht__svc_provide_wait(s, req, key, wait);
            break;
        }
        dht__svc_flush_provides(s);
        dht__svc_answer_ok(s, op, req, json_object());
        break;
    }
    case OP_UNPROVIDE: {
        prov_t *p;
        if (!svc_authorize(s, op, req, f, addr, NULL))
            break;
        if ((p = dht__svc_prov_find(s, key)) == NULL) {
            dht__svc_answer_error(s, op, req, 404, NULL, NULL,
                                  "this node does not provide that address");
            break;
        }
        if (p->announced)
            (void)dht_unprovide(s->dht, key, ron_now_ms());
        else
            s->nprov_queued--;
        *p = s->prov[--s->nprov];
        dht__svc_pump(s);
        dht__svc_answer_ok(s, op, req, json_object());
        break;
    }
    case OP_NAME_PUT:
        do_name_put(s, req, f, o);
        break;
    case OP_NAME_GET: {
        char raw[NAME_MAX_INPUT + 1], name[NAME_MAX_LEN + 1];
        name_err_t nerr;
        if (proto_svc_get_text(o, "name", raw, sizeof raw) <= 0) {
            dht__svc_answer_error(s, op, req, 400, NULL, "name", "name: missing or malformed");
            break;
        }
        if (name_normalize(raw, strlen(raw), name, &nerr) < 0) {
            dht__svc_answer_error(s, op, req, 400, NULL, "name", nerr.msg);
            break;
        }
        if (!svc_authorize(s, op, req, f, NULL, name))
            break;
        dht_id_of_name(key, name);
        start_wait(s, op, req, key, 0);
        break;
    }
    default:
        if (svc_authorize(s, op, req, f, NULL, NULL))
            do_status(s, req);
        break;
    }
out:
    json_decref(o);
}
