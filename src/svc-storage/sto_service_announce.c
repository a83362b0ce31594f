/*
 * sto_service_announce.c - a put's answer waits for its announcement
 * (DESIGN.md §4; docs/protocol/storage.md "Announcing a put"): a put_commit
 * that stored an object asks the dht endpoint to provide the address and is
 * answered once the provider record reached the closest nodes of the DHT, or
 * when lim.announce_wait_ms passed, so a get on any node of the network right
 * after the answer finds the object. The answer says how far the record got
 * (announce_state). Loop thread only; at most STO_SVC_ANNOUNCE_MAX answers
 * wait at once, so lookups keep room on the bus connection to the dht.
 */
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_util.h"
#include "sto_service_internal.h"

enum { ANN_ANNOUNCED = 0, ANN_UNANNOUNCED, ANN_PENDING, ANN_QUEUED, ANN_UNAVAILABLE };
static const char *const ann_states[5] = {"announced", "unannounced", "pending", "queued",
                                          "unavailable"};

/* A put_commit answer waiting for dht provide (linked in s->anns until its
 * callback runs; req NULL once answered because the service stops). */
typedef struct put_ann {
    struct put_ann *next;
    sto_service_t *svc;
    rbus_req_t *req;
    json_t *o; /* the answer */
} put_ann_t;

void
sto__put_ann_metrics(sto_service_t *s)
{
    static const char *const sl[] = {"state"};
    static const met_desc_t desc = {MET_COUNTER, "storage_put_announces_total",
                                    "Put answers by how far their provider record got in the DHT "
                                    "before the answer (announce_state).",
                                    sl, 1, NULL, 0, 0};
    met_family_t *fam = NULL;

    met_family_register(s->reg, &desc, &fam);
    for (size_t i = 0; i < RON_ARRAY_LEN(ann_states); i++)
        s->ann_res[i] = met_family_counter(fam, &ann_states[i]);
}

/* Answer the put with o (taken), plus what became of its announcement. */
static void
put_ann_answer(sto_service_t *s, rbus_req_t *req, json_t *o, int state, uint64_t announced)
{
    met_counter_inc(s->ann_res[state]);
    json_object_set_new(o, "announced", sto__json_u64(announced));
    json_object_set_new(o, "announce_state", json_string(ann_states[state]));
    sto__answer_ok(s, OP_PUT_COMMIT, req, o, NULL, 0);
}

static void
put_ann_done(void *arg, const dht_client_result_t *res)
{
    put_ann_t *a = arg;
    sto_service_t *s = a->svc;
    int state = ANN_UNAVAILABLE;

    for (put_ann_t **pp = &s->anns; *pp != NULL; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            s->nanns--;
            break;
        }
    if (res->status == 0 && res->code == 200 && res->provide_state != NULL) {
        for (int i = 0; i < ANN_UNAVAILABLE; i++)
            if (strcmp(res->provide_state, ann_states[i]) == 0)
                state = i;
    } else if (res->status == RON_ETIMEOUT) {
        state = ANN_PENDING; /* the dht did not answer in time: the record may be on its way */
    }
    if (a->req != NULL)
        put_ann_answer(s, a->req, a->o, state, state == ANN_ANNOUNCED ? res->announced : 0);
    else
        json_decref(a->o);
    free(a);
    sto__svc_maybe_free(s);
}

/*
 * put_commit j succeeded with answer o (taken): announce the address (dht
 * provide, again when it was stored before) and answer once the provider
 * record reached the closest nodes of the DHT or lim.announce_wait_ms
 * passed, so a get on any node right after the answer finds it. No dht
 * endpoint: answered at once, as before.
 */
void
sto__put_ann_start(sto_service_t *s, const job_t *j, json_t *o)
{
    char tok[AUTH_MAX_TOKEN + 1];
    put_ann_t *a;

    if (s->dht == NULL || s->stopping) {
        sto__answer_ok(s, OP_PUT_COMMIT, j->req, o, NULL, 0);
        if (s->dht == NULL)
            met_counter_inc(s->provides[1]);
        return;
    }
    if (s->lim.announce_wait_ms == UINT32_MAX) {
        sto__answer_ok(s, OP_PUT_COMMIT, j->req, o, NULL, 0);
        sto__svc_provide(s, j->addr);
        return;
    }
    if (s->nanns >= STO_SVC_ANNOUNCE_MAX) { /* the bus connection stays usable for lookups */
        sto__svc_provide(s, j->addr);
        put_ann_answer(s, j->req, o, ANN_PENDING, 0);
        return;
    }
    a = ron_xcalloc(1, sizeof *a);
    a->svc = s;
    a->req = j->req;
    a->o = o;
    if (dht_client_provide_wait(s->dht, j->addr, sto__svc_self_token(s, tok), s->lim.announce_wait_ms,
                                put_ann_done, a) < 0) {
        met_counter_inc(s->provides[1]);
        put_ann_answer(s, j->req, o, ANN_UNAVAILABLE, 0);
        free(a);
        return;
    }
    met_counter_inc(s->provides[0]);
    a->next = s->anns;
    s->anns = a;
    s->nanns++;
}

void
sto__put_ann_stop(sto_service_t *s)
{
    for (put_ann_t *a = s->anns; a != NULL; a = a->next)
        if (a->req != NULL) {
            put_ann_answer(s, a->req, a->o, ANN_PENDING, 0);
            a->req = NULL;
            a->o = NULL;
        }
}
