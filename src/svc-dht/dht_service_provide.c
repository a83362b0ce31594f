/*
 * dht_service_provide.c - what the DHT node service announces: provide
 * requests queued until the overlay address is known and the table has a
 * contact, then published; provides with wait_ms answered with their
 * publish's outcome (or when the wait is over); the overlay address asked
 * from the overlay endpoint's `status`; the objects of the store, paged
 * from its `list` at start and re-announced.
 * Invariants: nprov_queued counts the prov[] keys not yet announced;
 * nprov_wait the provide requests waiting in pend[].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht_service_internal.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_log.h"
#include "ron_proto.h"
#include "ron_util.h"

const char *const dht__svc_provide_states[PS_COUNT] = {"announced", "unannounced", "pending",
                                                       "queued"};

static int prov_publish(dht_service_t *s, const uint8_t key[static DHT_ID_LEN], uint64_t now);

prov_t *
dht__svc_prov_find(dht_service_t *s, const uint8_t key[static DHT_ID_LEN])
{
    for (size_t i = 0; i < s->nprov; i++)
        if (memcmp(s->prov[i].key, key, DHT_ID_LEN) == 0)
            return &s->prov[i];
    return NULL;
}

/* Queue key for announcing. Returns 0 or RON_EBUSY (DHT_MAX_LOCAL keys). */
int
dht__svc_prov_add(dht_service_t *s, const uint8_t key[static DHT_ID_LEN])
{
    if (dht__svc_prov_find(s, key) != NULL)
        return 0;
    if (s->nprov >= DHT_MAX_LOCAL)
        return RON_EBUSY;
    memcpy(s->prov[s->nprov].key, key, DHT_ID_LEN);
    s->prov[s->nprov].announced = false;
    s->nprov++;
    s->nprov_queued++;
    return 0;
}

bool
dht__svc_ready(const dht_service_t *s)
{
    return s->have_overlay && dht_table_size(s->dht) > 0;
}

/* Announce queued keys while the core accepts them. */
void
dht__svc_flush_provides(dht_service_t *s)
{
    uint64_t now = ron_now_ms();
    if (!dht__svc_ready(s) || s->nprov_queued == 0)
        return;
    for (size_t i = 0; i < s->nprov && s->nprov_queued > 0; i++) {
        int rc;
        if (s->prov[i].announced)
            continue;
        rc = prov_publish(s, s->prov[i].key, now);
        if (rc == RON_EBUSY)
            break; /* lookups at their limit: the next housekeeping tick retries */
        if (rc < 0)
            ron_warn("dht: cannot provide: %s", ron_strerror(rc));
        s->prov[i].announced = true;
        s->nprov_queued--;
    }
    dht__svc_pump(s);
}

/* Answer a provide that waited: the state, and the counts of its publish
 * (res NULL: it has none yet). Frees its pend slot (p may be NULL). */
static void
provide_answer(dht_service_t *s, pend_t *p, rbus_req_t *req, int state,
               const dht_lookup_result_t *res)
{
    char an[16], se[16];

    snprintf(an, sizeof an, "%u", res != NULL ? res->store_acked : 0u);
    snprintf(se, sizeof se, "%u", res != NULL ? res->store_sent : 0u);
    s->provide_outcome[state]++;
    dht__svc_answer_ok(s, OP_PROVIDE, req,
                       json_pack("{s:s, s:s, s:s}", "state", dht__svc_provide_states[state],
                                 "announced", an, "sent", se));
    if (p != NULL) {
        p->req = NULL;
        s->npend--;
        s->nprov_wait--;
    }
}

/* The publish p waits for has every PROVIDE's outcome. */
void
dht__svc_provide_done(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res)
{
    provide_answer(s, p, p->req, res->store_acked > 0 ? PS_ANNOUNCED : PS_UNANNOUNCED, res);
}

/* Answer the provides whose wait is over (the record stays queued or on its
 * way, and is retried). Returns the next deadline, or UINT64_MAX. */
uint64_t
dht__svc_provide_expire(dht_service_t *s, uint64_t now)
{
    uint64_t next = UINT64_MAX;

    for (size_t i = 0; i < DHT_SVC_MAX_PENDING && s->nprov_wait > 0; i++) {
        pend_t *p = &s->pend[i];
        if (p->req == NULL || p->op != OP_PROVIDE)
            continue;
        if (now >= p->deadline)
            provide_answer(s, p, p->req, p->queued ? PS_QUEUED : PS_PENDING, NULL);
        else if (p->deadline < next)
            next = p->deadline;
    }
    return next;
}

/* Publish key now (dht_provide); when provide requests wait for it while
 * it was queued, publish it tracked and make them wait for that publish. */
static int
prov_publish(dht_service_t *s, const uint8_t key[static DHT_ID_LEN], uint64_t now)
{
    bool waiting = false;
    uint32_t id = 0;
    int rc;

    for (size_t i = 0; i < DHT_SVC_MAX_PENDING && s->nprov_wait > 0 && !waiting; i++)
        waiting = s->pend[i].req != NULL && s->pend[i].op == OP_PROVIDE && s->pend[i].queued &&
                  memcmp(s->pend[i].key, key, DHT_ID_LEN) == 0;
    if (!waiting)
        return dht_provide(s->dht, key, now);
    rc = dht_provide_tracked(s->dht, key, now, &id);
    for (size_t i = 0; rc == 0 && i < DHT_SVC_MAX_PENDING; i++) {
        pend_t *p = &s->pend[i];
        if (p->req != NULL && p->op == OP_PROVIDE && p->queued &&
            memcmp(p->key, key, DHT_ID_LEN) == 0) {
            p->queued = false;
            p->lookup_id = id;
        }
    }
    return rc;
}

/*
 * A provide with wait_ms (key already in prov[]): publish it now (again,
 * when it was announced before: the caller wants to know it is out there)
 * and answer once the publish has its outcome or wait_ms passed; a queued
 * one waits for the queue. A lone node (no seed, no contact) answers
 * "queued" at once: nobody is there to announce to until a node finds it.
 */
void
dht__svc_provide_wait(dht_service_t *s, rbus_req_t *req, const uint8_t key[static DHT_ID_LEN],
                      uint64_t wait_ms)
{
    uint64_t now = ron_now_ms();
    prov_t *pv = dht__svc_prov_find(s, key);
    pend_t *p = NULL;
    uint32_t id = 0;
    bool queued = true;

    if (dht_table_size(s->dht) == 0 && s->nseeds + s->nnames == 0) {
        provide_answer(s, NULL, req, PS_QUEUED, NULL);
        return;
    }
    for (size_t i = 0; i < DHT_SVC_MAX_PENDING && p == NULL; i++)
        if (s->pend[i].req == NULL)
            p = &s->pend[i];
    if (p == NULL || s->npend >= DHT_SVC_MAX_PENDING || s->nprov_wait >= DHT_SVC_PROVIDE_WAITS) {
        dht__svc_flush_provides(s); /* too many wait: announced as before, not waited for */
        provide_answer(s, NULL, req, PS_PENDING, NULL);
        return;
    }
    if (dht__svc_ready(s)) {
        if (dht_provide_tracked(s->dht, key, now, &id) == 0) {
            queued = false;
            if (pv != NULL && !pv->announced) {
                pv->announced = true;
                s->nprov_queued--;
            }
        } else if (pv != NULL && pv->announced) {
            pv->announced = false; /* lookups at their limit: the queue retries it */
            s->nprov_queued++;
        }
    }
    p->req = req;
    p->op = OP_PROVIDE;
    p->lookup_id = id;
    p->queued = queued;
    p->limit = 0;
    p->deadline = now + wait_ms;
    memcpy(p->key, key, DHT_ID_LEN);
    s->npend++;
    s->nprov_wait++;
    dht__svc_pump(s);
}

/* The JSON object of a framed 200 answer (new), or NULL. */
static json_t *
answer_json(int status, const oap_frame_t *resp)
{
    if (status < 0 || resp->code != 200)
        return NULL;
    return proto_json_unframe(resp->payload, resp->payload_len, 0);
}

/* Send o (taken) as one framed request on p; to the storage endpoint (list
 * needs the pin op) with the service's own capability when it has a guard. */
static int
request_json(dht_service_t *s, rbus_peer_t *p, uint16_t proto, json_t *o, rbus_reply_cb cb,
             void *arg)
{
    rbus_request_opts_t ro = {.app_proto_id = proto, .deadline_ms = DHT_SVC_RETRY_MS * 5};
    char tok[AUTH_MAX_TOKEN + 1];
    char *txt = json_dumps(o, JSON_COMPACT);
    size_t jl;
    uint8_t *buf;
    int rc;
    json_decref(o);
    if (txt == NULL)
        return RON_EINVAL;
    jl = strlen(txt);
    buf = ron_xmalloc(4 + jl);
    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    free(txt);
    if (s->guard != NULL && proto == OAP_APP_STORAGE) {
        long n = guard_self_token(s->guard, tok, sizeof tok);
        if (n > 0) {
            ro.cap = tok;
            ro.cap_len = (size_t)n;
        }
    }
    rc = rbus_request_ex(p, &ro, buf, 4 + jl, cb, arg);
    free(buf);
    return rc;
}

static void
set_overlay(dht_service_t *s, const dht_addr_t *a, const char *text)
{
    dht_set_overlay_addr(s->dht, a);
    s->have_overlay = true;
    ron_info("dht: provider records point to overlay %s", text);
    dht__svc_flush_provides(s);
}

static void
on_overlay_status(void *arg, int status, const oap_frame_t *resp)
{
    dht_service_t *s = arg;
    json_t *o;
    const char *adv;
    dht_addr_t a;

    if (status == RON_ESHUTDOWN)
        return;
    s->overlay_asking = false;
    s->next_overlay_ask = ron_now_ms() + DHT_SVC_RETRY_MS;
    if (s->stopping || s->have_overlay)
        return;
    o = answer_json(status, resp);
    adv = json_string_value(json_object_get(o, "advertise"));
    if (adv != NULL && dht_service_addr_parse(adv, &a) == 0)
        set_overlay(s, &a, adv);
    else if (o != NULL)
        ron_warn("dht: the overlay's status has no usable \"advertise\" address");
    json_decref(o);
}

void
dht__svc_ask_overlay(dht_service_t *s)
{
    if (s->have_overlay || s->overlay == NULL || s->overlay_asking ||
        ron_now_ms() < s->next_overlay_ask)
        return;
    if (request_json(s, s->overlay, OAP_APP_OVERLAY, json_pack("{s:s}", "op", "status"),
                     on_overlay_status, s) == 0)
        s->overlay_asking = true;
    else
        s->next_overlay_ask = ron_now_ms() + DHT_SVC_RETRY_MS;
}

static void
on_list(void *arg, int status, const oap_frame_t *resp)
{
    dht_service_t *s = arg;
    json_t *o, *objs, *e;
    const char *next;
    size_t i;

    if (status == RON_ESHUTDOWN)
        return;
    s->list_asking = false;
    s->next_list_ask = ron_now_ms() + DHT_SVC_RETRY_MS;
    if (s->stopping || s->storage == NULL || s->list_done)
        return;
    o = answer_json(status, resp);
    objs = json_object_get(o, "objects");
    if (!json_is_array(objs)) {
        json_decref(o);
        return; /* not up yet: retried by housekeeping */
    }
    json_array_foreach(objs, i, e)
    {
        const char *a = json_string_value(json_object_get(e, "address"));
        uint8_t key[DHT_ID_LEN];
        if (a != NULL && strncmp(a, "b3:", 3) == 0 && strlen(a) == 3 + 2 * DHT_ID_LEN &&
            ron_hex_decode(key, DHT_ID_LEN, a + 3, 2 * DHT_ID_LEN) == 0 &&
            dht__svc_prov_add(s, key) == 0)
            s->announced_from_store++;
    }
    next = json_string_value(json_object_get(o, "next"));
    if (next != NULL && strlen(next) < sizeof s->list_after && s->nprov < DHT_MAX_LOCAL) {
        snprintf(s->list_after, sizeof s->list_after, "%s", next);
        s->list_tries = 0;
        s->next_list_ask = 0;
        json_decref(o);
        dht__svc_ask_list(s);
    } else {
        ron_info("dht: re-announcing %llu objects of the store",
                 (unsigned long long)s->announced_from_store);
        s->list_done = true; /* not closed from inside its own reply callback */
        json_decref(o);
    }
    dht__svc_flush_provides(s);
}

void
dht__svc_ask_list(dht_service_t *s)
{
    json_t *o;
    char lim[16];
    if (s->storage == NULL || s->list_done || s->list_asking || ron_now_ms() < s->next_list_ask)
        return;
    if (++s->list_tries > DHT_SVC_ANNOUNCE_TRIES) {
        ron_warn("dht: the storage endpoint did not answer `list`; nothing re-announced");
        s->list_done = true;
        return;
    }
    snprintf(lim, sizeof lim, "%u", DHT_SVC_LIST_PAGE);
    o = json_pack("{s:s, s:s}", "op", "list", "limit", lim);
    if (s->list_after[0] != '\0')
        json_object_set_new(o, "after", json_string(s->list_after));
    if (request_json(s, s->storage, OAP_APP_STORAGE, o, on_list, s) == 0)
        s->list_asking = true;
    else
        s->next_list_ask = ron_now_ms() + DHT_SVC_RETRY_MS;
}
