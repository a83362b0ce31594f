/*
 * dht_service.c - the DHT node service: the sans-I/O core (svc_dht.h) on a
 * libuv UDP socket, and the `dht` bus protocol (docs/protocol/dht.md §10).
 * This file: life cycle, driving the core, housekeeping and metrics; the
 * other files of the service are listed in dht_service_internal.h.
 *
 * Driving the core: every received datagram goes to dht_input, then the
 * service drains what the core queued (datagrams, sent with
 * uv_udp_try_send: UDP needs no write queue, a full socket buffer drops the
 * datagram as the network would; events, which answer waiting bus requests)
 * and re-arms one timer at dht_next_deadline. Time is the monotonic ms
 * clock; record timestamps use its offset to the wall clock, taken once.
 *
 * Bus requests that need the network (find_providers, name_get) start one
 * lookup each and wait for its DHT_EV_LOOKUP_DONE; at most
 * DHT_SVC_MAX_PENDING wait (429 beyond), each at most
 * DHT_SVC_LOOKUP_TIMEOUT_MS (504). Provide requests are queued until the
 * overlay address is known and the table has a contact; without wait_ms
 * they are answered at once, with it (svc-storage's puts) once their
 * publish knows which of the closest nodes accepted the record
 * (DHT_EV_PUBLISHED) or wait_ms passed (the service timer is armed for
 * it). A housekeeping timer retries queued provides, asks the overlay for
 * its address, pages the store's `list` to re-announce it, answers waiting
 * lookups past their deadline and saves the table.
 *
 * Invariants: every bus request is answered exactly once; the service
 * memory goes only after both uv handles are closed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "dht_service_internal.h"
#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"

/* The metrics beside the request counters (dht_service_metrics sets the
 * gauges and mirrors the counters into the registry at each render). */
static const char *const gauge_desc[G_COUNT][2] = {
    {"dht_contacts", "Contacts in the DHT routing table."},
    {"dht_records", "DHT records held (for others and this node)."},
    {"dht_provided", "Keys this node announces as a provider (queued ones included)."},
    {"dht_pending_requests", "Bus requests waiting for a DHT lookup."},
    {"dht_bootstrapped", "1 once the node has joined the DHT."},
};
static const char *const counter_desc[C_COUNT][2] = {
    {"dht_lookups_total", "DHT lookups started."},
    {"dht_rx_datagrams_total", "DHT datagrams received (dropped ones included)."},
    {"dht_tx_datagrams_total", "DHT datagrams queued for sending."},
    {"dht_rx_malformed_total", "DHT datagrams dropped as malformed."},
    {"dht_rx_forged_total", "DHT records dropped for a bad signature or TTL."},
    {"dht_rx_unsolicited_total", "DHT replies matching no request."},
    {"dht_rx_seed_mismatch_total",
     "DHT datagrams refused: a seed named its node id and another id spoke from there."},
    {"dht_rx_dropped_total", "DHT datagrams the core refused, for any reason."},
    {"dht_tx_dropped_total", "DHT datagrams dropped (queue full or socket refused)."},
    {"dht_lookups_joined_total",
     "Bus requests answered by a lookup of the same key already running."},
    {"dht_requests_timeout_total", "DHT requests that got no reply in time."},
    {"dht_requests_hedged_total", "DHT requests sent because a step was slower than p95."},
    {"dht_provides_queued_total",
     "Provide requests that waited for the overlay address or the first contact."},
};

static void
svc_events(dht_service_t *s)
{
    dht_event_t ev;
    while (dht_event_next(s->dht, &ev) == 0) {
        if (ev.type == DHT_EV_BOOTSTRAPPED) {
            if (!s->bootstrapped)
                ron_info("dht: bootstrapped, %zu contacts", dht_table_size(s->dht));
            s->bootstrapped = true;
            continue;
        }
        for (size_t i = 0; i < DHT_SVC_MAX_PENDING; i++) {
            pend_t *p = &s->pend[i];
            if (p->req == NULL || p->queued || p->lookup_id != ev.result->id)
                continue;
            if (ev.type == DHT_EV_PUBLISHED && p->op == OP_PROVIDE)
                dht__svc_provide_done(s, p, ev.result); /* every request that waits for it */
            else if (ev.type == DHT_EV_LOOKUP_DONE && p->op != OP_PROVIDE)
                dht__svc_pend_answer(s, p, ev.result); /* every request that joined it */
        }
    }
}

static void
on_timer(uv_timer_t *t)
{
    dht_service_t *s = t->data;
    dht_tick(s->dht, ron_now_ms());
    dht__svc_pump(s);
}

/* Drain datagrams and events, then arm the timer for the next deadline. */
void
dht__svc_pump(dht_service_t *s)
{
    uint64_t now, next;
    if (s->stopping)
        return;
    dht__svc_flush_out(s);
    svc_events(s);
    dht__svc_flush_out(s);
    now = ron_now_ms();
    next = dht_next_deadline(s->dht);
    if (s->nprov_wait > 0) {
        uint64_t due = dht__svc_provide_expire(s, now);
        next = due < next ? due : next;
    }
    uv_timer_start(&s->timer, on_timer, next > now ? next - now : 0, 0);
}

static void
on_house(uv_timer_t *t)
{
    dht_service_t *s = t->data;
    uint64_t now = ron_now_ms();

    for (size_t i = 0; i < DHT_SVC_MAX_PENDING; i++)
        if (s->pend[i].req != NULL && s->pend[i].op != OP_PROVIDE && now >= s->pend[i].deadline) {
            dht__svc_answer_error(s, s->pend[i].op, s->pend[i].req, 504, "timeout", NULL,
                                  "the DHT lookup did not finish in time");
            s->pend[i].req = NULL;
            s->npend--;
        }
    if (!s->boot_called && dht_table_size(s->dht) > 0) {
        /* someone found us (no seeds of our own): join properly */
        s->boot_called = dht_bootstrap_seeds(s->dht, s->seeds, s->nseeds, now) == 0;
    }
    if (s->nseeds + s->nnames == 0 && dht_table_size(s->dht) > 0)
        s->bootstrapped = true;
    dht__svc_resolve_names(s);
    if (s->list_done && s->storage != NULL && !s->list_asking) {
        rbus_peer_close(s->storage);
        s->storage = NULL;
    }
    if (s->have_overlay && s->overlay != NULL && !s->overlay_asking) {
        rbus_peer_close(s->overlay); /* the address is known: stop reconnecting */
        s->overlay = NULL;
    }
    dht__svc_ask_overlay(s);
    dht__svc_ask_list(s);
    dht__svc_flush_provides(s);
    dht__svc_save(s, false);
    dht__svc_pump(s);
}

/* One of the things the memory waits for (handles, name resolutions) is done. */
void
dht__svc_release(dht_service_t *s)
{
    if (--s->open_handles > 0)
        return;
    dht_free(s->dht);
    sodium_free(s->sk);
    free(s->prov);
    free(s->saved);
    free(s->table_path);
    proto_svc_free(s->ps);
    free(s);
}

/* The service's metrics in its proto_svc registry. Returns 0 or a met_* error. */
static int
svc_metrics_register(dht_service_t *s)
{
    static const char *const state_label[] = {"state"};
    met_desc_t waits = {MET_COUNTER,
                        "dht_provide_waits_total",
                        "Provide requests that waited for their outcome (wait_ms), by the state "
                        "answered.",
                        state_label,
                        1,
                        NULL,
                        0,
                        0};
    met_registry_t *reg = proto_svc_registry(s->ps);
    met_family_t *fam;
    int rc = 0;

    for (size_t i = 0; i < G_COUNT && rc == 0; i++)
        rc = met_gauge_register(reg, gauge_desc[i][0], gauge_desc[i][1], &s->m_gauge[i]);
    for (size_t i = 0; i < C_COUNT && rc == 0; i++)
        rc = met_counter_register(reg, counter_desc[i][0], counter_desc[i][1], &s->m_counter[i]);
    if (rc == 0)
        rc = met_family_register(reg, &waits, &fam);
    for (size_t i = 0; i < RON_ARRAY_LEN(dht__svc_provide_states) && rc == 0; i++)
        s->m_waits[i] = met_family_counter(fam, (const char *const[]){dht__svc_provide_states[i]});
    return rc;
}

static void
on_closed(uv_handle_t *h)
{
    dht__svc_release(h->data);
}

int
dht_service_new(uv_loop_t *loop, rbus_t *bus, const dht_service_config_t *cfg,
                dht_service_t **svc_out, char *err, size_t errcap)
{
    dht_service_t *s = NULL;
    dht_config_t dc;
    struct sockaddr_storage ss;
    int namelen = sizeof ss, rc;
    uint64_t now = ron_now_ms();
    dht_addr_t adv = {0};

    if (cfg->sk == NULL) {
        snprintf(err, errcap, "dht: no node key");
        rc = RON_EINVAL;
        goto fail_fd;
    }
    if (cfg->advertise != NULL && cfg->advertise[0] != '\0' &&
        dht_service_addr_parse(cfg->advertise, &adv) < 0) {
        snprintf(err, errcap, "dht: advertise '%s' is not a numeric HOST:PORT", cfg->advertise);
        rc = RON_EINVAL;
        goto fail_fd;
    }
    s = ron_xcalloc(1, sizeof *s);
    if ((rc = proto_svc_new(&dht__svc_desc, &s->ps)) < 0 || (rc = svc_metrics_register(s)) < 0) {
        snprintf(err, errcap, "dht: cannot set up the metrics: %s", ron_strerror(rc));
        goto fail_fd;
    }
    if (sodium_init() < 0 || (s->sk = sodium_malloc(NAME_SECRET_KEY_LEN)) == NULL) {
        snprintf(err, errcap, "dht: libsodium cannot allocate key memory");
        rc = RON_EAUTH;
        goto fail_fd;
    }
    memcpy(s->sk, cfg->sk, NAME_SECRET_KEY_LEN);
    for (size_t i = 0; i < cfg->n_seeds && s->nseeds + s->nnames < DHT_MAX_SEEDS; i++) {
        int kind = dht__svc_seed_parse(cfg->seeds[i], &s->seeds[s->nseeds], &s->names[s->nnames]);
        if (kind < 0) {
            snprintf(err, errcap, "dht: seed '%s' is not [ID@]HOST:PORT", cfg->seeds[i]);
            rc = RON_EINVAL;
            goto fail_fd;
        }
        if (kind == 0)
            s->nseeds++;
        else
            s->nnames++;
    }
    s->loop = loop;
    s->bus = bus;
    memcpy(s->id, cfg->id, DHT_ID_LEN);
    dht_config_init(&dc);
    memcpy(dc.id, cfg->id, DHT_ID_LEN);
    dc.sk = s->sk;
    dc.hedge = !cfg->no_hedge;
    dc.overlay_addr = adv;
    if ((rc = ron_random_bytes(dc.seed, sizeof dc.seed)) < 0) {
        snprintf(err, errcap, "dht: no randomness: %s", ron_strerror(rc));
        goto fail_fd;
    }
    dc.wall_offset_ms = (int64_t)ron_unix_time() * 1000 - (int64_t)now;
    s->dht = dht_new(&dc, now, &rc);
    explicit_bzero(dc.seed, sizeof dc.seed);
    if (s->dht == NULL) {
        snprintf(err, errcap, "dht: the key does not match the node id");
        goto fail_fd;
    }
    uv_udp_init(loop, &s->udp);
    s->udp.data = s;
    if ((rc = uv_udp_open(&s->udp, cfg->udp_fd)) < 0) {
        snprintf(err, errcap, "dht: cannot use the UDP socket: %s", uv_strerror(rc));
        close(cfg->udp_fd);
        s->open_handles = 1;
        uv_close((uv_handle_t *)&s->udp, on_closed); /* frees s */
        return RON_EINVAL;
    }
    s->udp.data = s;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_init(loop, &s->house);
    s->house.data = s;
    s->open_handles = 3;
    s->prov = ron_xcalloc(DHT_MAX_LOCAL, sizeof *s->prov);
    if (uv_udp_getsockname(&s->udp, (struct sockaddr *)&ss, &namelen) == 0) {
        dht_addr_t b;
        dht__svc_addr_from_sockaddr((struct sockaddr *)&ss, &b);
        dht_service_addr_format(&b, s->bound);
    }
    if (cfg->table_path != NULL)
        s->table_path = ron_xstrdup(cfg->table_path);
    s->next_save = now + DHT_SVC_SAVE_MS;
    dht__svc_load(s);
    if (adv.family != 0) {
        s->have_overlay = true;
    } else if (cfg->overlay_endpoint != NULL) {
        s->overlay = rbus_connect(bus, cfg->overlay_endpoint, &rc);
    }
    if (cfg->storage_endpoint != NULL)
        s->storage = rbus_connect(bus, cfg->storage_endpoint, &rc);
    if ((rc = rbus_handle(bus, OAP_APP_DHT, dht__svc_on_request, s)) < 0) {
        snprintf(err, errcap, "dht: no ron-bus handler slot");
        dht_service_free(s);
        return rc;
    }
    if (s->nseeds > 0 || dht_table_size(s->dht) > 0)
        s->boot_called = dht_bootstrap_seeds(s->dht, s->seeds, s->nseeds, now) == 0;
    dht__svc_resolve_names(s);
    dht__svc_udp_start(s);
    uv_timer_start(&s->house, on_house, DHT_SVC_HOUSE_MS, DHT_SVC_HOUSE_MS);
    ron_info("dht: node %02x%02x%02x%02x... on udp %s, %zu seeds, table %s", s->id[0], s->id[1],
             s->id[2], s->id[3], s->bound, s->nseeds + s->nnames,
             s->table_path != NULL ? s->table_path : "not persisted (amnesia)");
    dht__svc_pump(s);
    *svc_out = s;
    return 0;
fail_fd:
    close(cfg->udp_fd);
    if (s != NULL) {
        if (s->dht != NULL)
            dht_free(s->dht);
        sodium_free(s->sk);
        proto_svc_free(s->ps);
        free(s);
    }
    return rc;
}

void
dht_service_free(dht_service_t *s)
{
    if (s == NULL || s->stopping)
        return;
    dht__svc_save(s, true);
    s->stopping = true;
    for (size_t i = 0; i < DHT_SVC_MAX_PENDING; i++)
        if (s->pend[i].req != NULL) {
            dht__svc_answer_error(s, s->pend[i].op, s->pend[i].req, 503, NULL, NULL,
                                  "dht is stopping");
            s->pend[i].req = NULL;
        }
    s->npend = 0;
    s->nprov_wait = 0;
    rbus_peer_close(s->overlay);
    s->overlay = NULL;
    rbus_peer_close(s->storage);
    s->storage = NULL;
    for (size_t i = 0; i < s->nnames; i++)
        if (s->names[i].req != NULL)
            (void)uv_cancel((uv_req_t *)s->names[i].req); /* its callback still runs */
    uv_udp_recv_stop(&s->udp);
    uv_close((uv_handle_t *)&s->udp, on_closed);
    uv_close((uv_handle_t *)&s->timer, on_closed);
    uv_close((uv_handle_t *)&s->house, on_closed);
}

void
dht_service_set_guard(dht_service_t *s, guard_t *g)
{
    s->guard = g;
}

const char *
dht_service_addr(const dht_service_t *s)
{
    return s->bound;
}

dht_t *
dht_service_dht(dht_service_t *s)
{
    return s->dht;
}

/* Raise c to v, a monotonic count kept elsewhere (*seen: what c holds). */
static void
counter_to(met_counter_t *c, uint64_t v, uint64_t *seen)
{
    if (v > *seen) {
        met_counter_add(c, v - *seen);
        *seen = v;
    }
}

size_t
dht_service_metrics(dht_service_t *s, char *buf, size_t cap)
{
    const dht_stats_t *st = dht_stats(s->dht);
    const double g[G_COUNT] = {
        [G_CONTACTS] = (double)dht_table_size(s->dht),
        [G_RECORDS] = (double)dht_record_count(s->dht),
        [G_PROVIDED] = (double)s->nprov,
        [G_PENDING] = (double)s->npend,
        [G_BOOTSTRAPPED] = s->bootstrapped ? 1.0 : 0.0,
    };
    const uint64_t c[C_COUNT] = {
        [C_LOOKUPS] = st->lookups_started,
        [C_RX] = st->rx_datagrams,
        [C_TX] = st->tx_datagrams,
        [C_RX_MALFORMED] = st->rx_malformed,
        [C_RX_FORGED] = st->rx_forged,
        [C_RX_UNSOLICITED] = st->rx_unsolicited,
        [C_RX_SEED_MISMATCH] = st->rx_seed_mismatch,
        [C_RX_DROPPED] = s->rx_dropped,
        [C_TX_DROPPED] = st->tx_dropped + s->tx_send_failed,
        [C_LOOKUPS_JOINED] = s->lookups_joined,
        [C_REQUESTS_TIMEOUT] = st->requests_timeout,
        [C_REQUESTS_HEDGED] = st->requests_hedged,
        [C_PROVIDES_QUEUED] = s->provides_queued,
    };

    for (size_t i = 0; i < G_COUNT; i++)
        met_gauge_set(s->m_gauge[i], g[i]);
    for (size_t i = 0; i < C_COUNT; i++)
        counter_to(s->m_counter[i], c[i], &s->m_seen[i]);
    for (size_t i = 0; i < RON_ARRAY_LEN(dht__svc_provide_states); i++)
        counter_to(s->m_waits[i], s->provide_outcome[i], &s->m_waits_seen[i]);
    return proto_svc_metrics(s->ps, buf, cap);
}
