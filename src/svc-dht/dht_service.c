/*
 * dht_service.c - the DHT node service: the sans-I/O core (svc_dht.h) on a
 * libuv UDP socket, and the `dht` bus protocol (docs/protocol/dht.md §10).
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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "dht_service.h"
#include "proto_svc.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_guard.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_proto.h"
#include "ron_util.h"

typedef enum {
    OP_FIND = 0,
    OP_PROVIDE,
    OP_UNPROVIDE,
    OP_NAME_PUT,
    OP_NAME_GET,
    OP_STATUS,
    OP_COUNT,
    OP_BAD = OP_COUNT
} op_t;

/* The ops and the keys each allows beside "op" (docs/protocol/dht.md §10). */
static const char *const find_fields[] = {"address", "limit", NULL};
static const char *const provide_fields[] = {"address", "wait_ms", NULL};
static const char *const unprovide_fields[] = {"address", NULL};
static const char *const name_put_fields[] = {"record", NULL};
static const char *const name_get_fields[] = {"name", NULL};
static const proto_svc_op_t ops[OP_COUNT] = {
    [OP_FIND] = {"find_providers", find_fields},   [OP_PROVIDE] = {"provide", provide_fields},
    [OP_UNPROVIDE] = {"unprovide", unprovide_fields}, [OP_NAME_PUT] = {"name_put", name_put_fields},
    [OP_NAME_GET] = {"name_get", name_get_fields}, [OP_STATUS] = {"status", NULL},
};
/* The dht answers 504 (a lookup that did not finish), never 507. */
static const uint16_t statuses[] = {200, 400, 401, 403, 404, 409, 429, 500, 503, 504};
static const proto_svc_desc_t svc_desc = {
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

/* The metrics beside the request counters: gauges set and the core's
 * counters (dht_stats) mirrored into the registry at each render. */
enum { G_CONTACTS, G_RECORDS, G_PROVIDED, G_PENDING, G_BOOTSTRAPPED, G_COUNT };
static const char *const gauge_desc[G_COUNT][2] = {
    {"dht_contacts", "Contacts in the DHT routing table."},
    {"dht_records", "DHT records held (for others and this node)."},
    {"dht_provided", "Keys this node announces as a provider (queued ones included)."},
    {"dht_pending_requests", "Bus requests waiting for a DHT lookup."},
    {"dht_bootstrapped", "1 once the node has joined the DHT."},
};
enum {
    C_LOOKUPS,
    C_RX,
    C_TX,
    C_RX_MALFORMED,
    C_RX_FORGED,
    C_RX_UNSOLICITED,
    C_RX_SEED_MISMATCH,
    C_RX_DROPPED,
    C_TX_DROPPED,
    C_LOOKUPS_JOINED,
    C_REQUESTS_TIMEOUT,
    C_REQUESTS_HEDGED,
    C_PROVIDES_QUEUED,
    C_COUNT
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

typedef struct {
    rbus_req_t *req; /* NULL: free slot */
    op_t op;
    uint32_t lookup_id; /* OP_PROVIDE: the publish's id (dht_provide_tracked) */
    bool queued;        /* OP_PROVIDE: not published yet (no contact or overlay address) */
    uint64_t deadline;
    unsigned limit;
    uint8_t key[DHT_ID_LEN];
} pend_t;

typedef struct {
    uint8_t key[DHT_ID_LEN];
    bool announced; /* dht_provide accepted it */
} prov_t;

typedef struct dht_service dht_service_t;

/* A seed given by host name: resolved with uv_getaddrinfo, retried until it resolves. */
typedef struct {
    char host[DHT_SVC_HOST_MAX];
    uint16_t port;
    bool has_id; /* "ID@host:port": the node expected there */
    uint8_t id[DHT_ID_LEN];
    bool resolved;
    uint64_t next_try;
    uv_getaddrinfo_t *req; /* in flight, or NULL */
} seed_name_t;

typedef struct {
    uv_getaddrinfo_t req;
    dht_service_t *svc;
    size_t slot;
} resolve_t;

struct dht_service {
    uv_loop_t *loop;
    rbus_t *bus;
    guard_t *guard; /* NULL: no enforcement (unit tests) */
    dht_t *dht;
    uint8_t id[DHT_ID_LEN];
    uint8_t *sk; /* sodium_malloc copy of the node's secret key, for the core */
    uv_udp_t udp;
    uv_timer_t timer; /* dht_next_deadline */
    uv_timer_t house; /* DHT_SVC_HOUSE_MS */
    int open_handles;
    bool stopping;
    char bound[DHT_SVC_ADDR_MAX];
    uint8_t rxbuf[2048];
    uint8_t txbuf[DHT_MAX_DATAGRAM];

    dht_seed_t seeds[DHT_MAX_SEEDS];
    size_t nseeds;
    uint64_t seed_logged; /* ms of the last log of a refused seed datagram (rate limit) */
    uint64_t seed_refused_seen; /* rx_seed_mismatch already logged about */
    seed_name_t names[DHT_MAX_SEEDS]; /* seeds given by host name, resolved on the thread pool */
    size_t nnames;
    bool bootstrapped;
    bool boot_called;

    char *table_path; /* NULL: amnesia */
    uint64_t next_save;
    uint8_t *saved;   /* last blob written */
    size_t saved_len;

    bool have_overlay;
    rbus_peer_t *overlay;   /* NULL when advertise is configured or no endpoint */
    bool overlay_asking;
    uint64_t next_overlay_ask;

    rbus_peer_t *storage;   /* NULL: no re-announce, or done */
    bool list_done;         /* close storage (and a no longer needed overlay) at the next tick */
    bool list_asking;
    uint64_t next_list_ask;
    unsigned list_tries;
    char list_after[3 + 2 * DHT_ID_LEN + 1];

    prov_t *prov; /* DHT_MAX_LOCAL slots */
    size_t nprov;
    size_t nprov_queued;

    pend_t pend[DHT_SVC_MAX_PENDING];
    size_t npend;

    proto_svc_t *ps; /* op table, request checks, counters by op and status, metrics */
    met_gauge_t *m_gauge[G_COUNT];
    met_counter_t *m_counter[C_COUNT];
    uint64_t m_seen[C_COUNT]; /* what m_counter already holds */
    met_counter_t *m_waits[4]; /* dht_provide_waits_total{state} */
    uint64_t m_waits_seen[4];
    uint64_t tx_send_failed;
    uint64_t rx_dropped;      /* datagrams dht_input refused (every reason) */
    uint64_t provides_queued; /* provide requests that had to wait */
    uint64_t announced_from_store;
    uint64_t lookups_joined; /* requests that waited for a lookup already running */
    uint64_t provide_outcome[4]; /* waited provides by answer state (provide_states) */
    size_t nprov_wait; /* provide requests waiting in pend[] */
};

/* ---- addresses ---- */

int
dht_service_addr_parse(const char *s, dht_addr_t *a)
{
    char host[64];
    const char *colon;
    size_t hl;
    uint64_t port;

    memset(a, 0, sizeof *a);
    if (s == NULL)
        return RON_EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return RON_EINVAL;
        hl = (size_t)(end - s - 1);
        if (hl == 0 || hl >= sizeof host)
            return RON_EINVAL;
        memcpy(host, s + 1, hl);
        host[hl] = '\0';
        colon = end + 1;
        if (inet_pton(AF_INET6, host, a->ip) != 1)
            return RON_EINVAL;
        a->family = 6;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return RON_EINVAL;
        hl = (size_t)(colon - s);
        if (hl == 0 || hl >= sizeof host)
            return RON_EINVAL;
        memcpy(host, s, hl);
        host[hl] = '\0';
        if (inet_pton(AF_INET, host, a->ip) != 1)
            return RON_EINVAL;
        a->family = 4;
    }
    if (ron_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port == 0 || port > 65535) {
        memset(a, 0, sizeof *a);
        return RON_EINVAL;
    }
    a->port = (uint16_t)port;
    return 0;
}

void
dht_service_addr_format(const dht_addr_t *a, char out[static DHT_SVC_ADDR_MAX])
{
    char h[INET6_ADDRSTRLEN] = "";
    if (a->family == 6) {
        inet_ntop(AF_INET6, a->ip, h, sizeof h);
        snprintf(out, DHT_SVC_ADDR_MAX, "[%s]:%u", h, a->port);
    } else {
        inet_ntop(AF_INET, a->ip, h, sizeof h);
        snprintf(out, DHT_SVC_ADDR_MAX, "%s:%u", h, a->port);
    }
}

static void
addr_from_sockaddr(const struct sockaddr *sa, dht_addr_t *a)
{
    memset(a, 0, sizeof *a);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        a->family = 4;
        memcpy(a->ip, &in->sin_addr, 4);
        a->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            a->family = 4;
            memcpy(a->ip, (const uint8_t *)&in6->sin6_addr + 12, 4);
        } else {
            a->family = 6;
            memcpy(a->ip, &in6->sin6_addr, 16);
        }
        a->port = ntohs(in6->sin6_port);
    }
}

static socklen_t
addr_to_sockaddr(const dht_addr_t *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (a->family == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a->ip, 4);
        in->sin_port = htons(a->port);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, a->ip, 16);
    in6->sin6_port = htons(a->port);
    return sizeof *in6;
}

/*
 * "[ID@]HOST:PORT". A numeric host fills a and returns 0; a host name (DNS
 * syntax) fills name_out and returns 1; anything else is RON_EINVAL.
 */
static int
seed_parse(const char *seed, dht_seed_t *a, seed_name_t *name_out)
{
    const char *at = strchr(seed, '@'), *colon;
    uint8_t id[DHT_ID_LEN];
    uint64_t port;
    size_t hl;

    memset(a, 0, sizeof *a);
    if (at != NULL) {
        if (at - seed != 2 * DHT_ID_LEN || ron_hex_decode(id, DHT_ID_LEN, seed, 2 * DHT_ID_LEN) < 0)
            return RON_EINVAL;
        seed = at + 1;
    }
    if (dht_service_addr_parse(seed, &a->addr) == 0) {
        a->has_id = at != NULL;
        if (a->has_id)
            memcpy(a->id, id, DHT_ID_LEN);
        return 0;
    }
    colon = strrchr(seed, ':');
    if (colon == NULL || seed[0] == '[')
        return RON_EINVAL;
    hl = (size_t)(colon - seed);
    if (hl == 0 || hl >= DHT_SVC_HOST_MAX ||
        ron_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port == 0 || port > 65535)
        return RON_EINVAL;
    for (size_t i = 0; i < hl; i++) {
        char c = seed[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return RON_EINVAL;
    }
    memset(name_out, 0, sizeof *name_out);
    memcpy(name_out->host, seed, hl);
    name_out->port = (uint16_t)port;
    name_out->has_id = at != NULL;
    if (name_out->has_id)
        memcpy(name_out->id, id, DHT_ID_LEN);
    return 1;
}

/* ---- answers ---- */

static void
answer_error(dht_service_t *s, op_t op, rbus_req_t *req, uint16_t code, const char *slug,
             const char *reason, const char *message)
{
    proto_svc_count(s->ps, (int)op, code);
    rbus_respond_error_ex(req, code, slug, reason, code == 429 || code == 503 ? DHT_SVC_RETRY_MS : 0,
                          message);
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
static void
answer_ok(dht_service_t *s, op_t op, rbus_req_t *req, json_t *o)
{
    uint8_t *buf;
    size_t len;

    if (proto_svc_frame_ok(s->ps, (int)op, o, &buf, &len) < 0) {
        answer_error(s, op, req, 500, NULL, NULL, "cannot encode the answer");
        return;
    }
    rbus_respond(req, 200, buf, len);
    free(buf);
}

static json_t *
record_json(const name_record_t *rec)
{
    char *txt = name_record_to_json(rec);
    json_t *o = txt != NULL ? json_loads(txt, 0, NULL) : NULL;
    free(txt);
    return o;
}

static uint64_t
unix_s(void)
{
    return (uint64_t)ron_unix_time();
}

/* ---- sending ---- */

static void svc_pump(dht_service_t *s);
static void provide_done(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res);
static uint64_t provide_expire(dht_service_t *s, uint64_t now);
static int prov_publish(dht_service_t *s, const uint8_t key[static DHT_ID_LEN], uint64_t now);

/* The state a provide that waited (wait_ms) is answered with. */
enum { PS_ANNOUNCED = 0, PS_UNANNOUNCED, PS_PENDING, PS_QUEUED };
static const char *const provide_states[4] = {"announced", "unannounced", "pending", "queued"};

static void
svc_flush_out(dht_service_t *s)
{
    dht_addr_t to;
    ssize_t n;

    while ((n = dht_output_next(s->dht, s->txbuf, sizeof s->txbuf, &to)) > 0) {
        struct sockaddr_storage ss;
        uv_buf_t b = uv_buf_init((char *)s->txbuf, (unsigned)n);
        (void)addr_to_sockaddr(&to, &ss);
        if (uv_udp_try_send(&s->udp, &b, 1, (const struct sockaddr *)&ss) < 0)
            s->tx_send_failed++;
    }
}

/* ---- waiting requests ---- */

static void
pend_answer(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res)
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
        answer_ok(s, p->op, p->req, o);
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
            answer_error(s, p->op, p->req, 404, NULL, NULL, "no record for this name in the DHT");
        } else {
            json_t *o = json_object();
            json_object_set_new(o, "record", record_json(best));
            answer_ok(s, p->op, p->req, o);
        }
    }
    p->req = NULL;
    s->npend--;
}

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
                provide_done(s, p, ev.result); /* every request that waits for it */
            else if (ev.type == DHT_EV_LOOKUP_DONE && p->op != OP_PROVIDE)
                pend_answer(s, p, ev.result); /* every request that joined it */
        }
    }
}

static void
on_timer(uv_timer_t *t)
{
    dht_service_t *s = t->data;
    dht_tick(s->dht, ron_now_ms());
    svc_pump(s);
}

/* Drain datagrams and events, then arm the timer for the next deadline. */
static void
svc_pump(dht_service_t *s)
{
    uint64_t now, next;
    if (s->stopping)
        return;
    svc_flush_out(s);
    svc_events(s);
    svc_flush_out(s);
    now = ron_now_ms();
    next = dht_next_deadline(s->dht);
    if (s->nprov_wait > 0) {
        uint64_t due = provide_expire(s, now);
        next = due < next ? due : next;
    }
    uv_timer_start(&s->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- persistence ---- */

static void
svc_save(dht_service_t *s, bool force)
{
    uint8_t *blob;
    ssize_t n;
    char tmp[4200];
    int fd = -1;

    if (s->table_path == NULL || (!force && ron_now_ms() < s->next_save))
        return;
    s->next_save = ron_now_ms() + DHT_SVC_SAVE_MS;
    blob = ron_xmalloc(DHT_SAVE_MAX);
    n = dht_table_save(s->dht, blob, DHT_SAVE_MAX);
    if (n < 0 || dht_table_size(s->dht) == 0 ||
        ((size_t)n == s->saved_len && memcmp(blob, s->saved, (size_t)n) == 0)) {
        free(blob);
        return; /* unchanged, or nothing worth keeping */
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", s->table_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, blob, (size_t)n) != n || fsync(fd) < 0 || close(fd) < 0 ||
        rename(tmp, s->table_path) < 0) {
        ron_warn("dht: cannot save the routing table to %s: %s", s->table_path, strerror(errno));
        if (fd >= 0)
            (void)unlink(tmp);
        free(blob);
        return;
    }
    {
        char dir[4200];
        char *slash;
        snprintf(dir, sizeof dir, "%s", s->table_path);
        slash = strrchr(dir, '/');
        if (slash != NULL) {
            *slash = '\0';
            (void)ron_fsync_dir(dir);
        }
    }
    free(s->saved);
    s->saved = blob;
    s->saved_len = (size_t)n;
}

static void
svc_load(dht_service_t *s)
{
    uint8_t *blob;
    ssize_t n;
    int fd, rc;

    if (s->table_path == NULL)
        return;
    fd = open(s->table_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    blob = ron_xmalloc(DHT_SAVE_MAX + 1);
    n = read(fd, blob, DHT_SAVE_MAX + 1);
    close(fd);
    if (n < 0 || (size_t)n > DHT_SAVE_MAX ||
        (rc = dht_table_load(s->dht, blob, (size_t)n, ron_now_ms())) < 0) {
        ron_warn("dht: routing table %s not loaded (%s); starting from the seeds", s->table_path,
                 n < 0 ? strerror(errno) : "malformed or another node's");
        free(blob);
        return;
    }
    ron_info("dht: loaded %zu contacts from %s", dht_table_size(s->dht), s->table_path);
    s->saved = blob;
    s->saved_len = (size_t)n;
}

/* ---- provides ---- */

static prov_t *
prov_find(dht_service_t *s, const uint8_t key[static DHT_ID_LEN])
{
    for (size_t i = 0; i < s->nprov; i++)
        if (memcmp(s->prov[i].key, key, DHT_ID_LEN) == 0)
            return &s->prov[i];
    return NULL;
}

/* Queue key for announcing. Returns 0 or RON_EBUSY (DHT_MAX_LOCAL keys). */
static int
prov_add(dht_service_t *s, const uint8_t key[static DHT_ID_LEN])
{
    if (prov_find(s, key) != NULL)
        return 0;
    if (s->nprov >= DHT_MAX_LOCAL)
        return RON_EBUSY;
    memcpy(s->prov[s->nprov].key, key, DHT_ID_LEN);
    s->prov[s->nprov].announced = false;
    s->nprov++;
    s->nprov_queued++;
    return 0;
}

static bool
svc_ready(const dht_service_t *s)
{
    return s->have_overlay && dht_table_size(s->dht) > 0;
}

/* Announce queued keys while the core accepts them. */
static void
svc_flush_provides(dht_service_t *s)
{
    uint64_t now = ron_now_ms();
    if (!svc_ready(s) || s->nprov_queued == 0)
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
    svc_pump(s);
}

/* ---- provides that wait for their outcome (wait_ms) ---- */

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
    answer_ok(s, OP_PROVIDE, req,
              json_pack("{s:s, s:s, s:s}", "state", provide_states[state], "announced", an, "sent",
                        se));
    if (p != NULL) {
        p->req = NULL;
        s->npend--;
        s->nprov_wait--;
    }
}

/* The publish p waits for has every PROVIDE's outcome. */
static void
provide_done(dht_service_t *s, pend_t *p, const dht_lookup_result_t *res)
{
    provide_answer(s, p, p->req, res->store_acked > 0 ? PS_ANNOUNCED : PS_UNANNOUNCED, res);
}

/* Answer the provides whose wait is over (the record stays queued or on its
 * way, and is retried). Returns the next deadline, or UINT64_MAX. */
static uint64_t
provide_expire(dht_service_t *s, uint64_t now)
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
static void
provide_wait(dht_service_t *s, rbus_req_t *req, const uint8_t key[static DHT_ID_LEN],
             uint64_t wait_ms)
{
    uint64_t now = ron_now_ms();
    prov_t *pv = prov_find(s, key);
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
        svc_flush_provides(s); /* too many wait: announced as before, not waited for */
        provide_answer(s, NULL, req, PS_PENDING, NULL);
        return;
    }
    if (svc_ready(s)) {
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
    svc_pump(s);
}

/* ---- overlay address ---- */

static uint32_t
be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The JSON object of a framed 200 answer (new), or NULL. */
static json_t *
answer_json(int status, const oap_frame_t *resp)
{
    json_error_t jerr;
    json_t *o;
    if (status < 0 || resp->code != 200 || resp->payload_len < 4 ||
        be32(resp->payload) != resp->payload_len - 4)
        return NULL;
    o = json_loadb((const char *)resp->payload + 4, resp->payload_len - 4, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
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
    svc_flush_provides(s);
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

static void
ask_overlay(dht_service_t *s)
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

/* ---- re-announce what the store holds ---- */

static void ask_list(dht_service_t *s);

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
    json_array_foreach(objs, i, e) {
        const char *a = json_string_value(json_object_get(e, "address"));
        uint8_t key[DHT_ID_LEN];
        if (a != NULL && strncmp(a, "b3:", 3) == 0 && strlen(a) == 3 + 2 * DHT_ID_LEN &&
            ron_hex_decode(key, DHT_ID_LEN, a + 3, 2 * DHT_ID_LEN) == 0 && prov_add(s, key) == 0)
            s->announced_from_store++;
    }
    next = json_string_value(json_object_get(o, "next"));
    if (next != NULL && strlen(next) < sizeof s->list_after && s->nprov < DHT_MAX_LOCAL) {
        snprintf(s->list_after, sizeof s->list_after, "%s", next);
        s->list_tries = 0;
        s->next_list_ask = 0;
        json_decref(o);
        ask_list(s);
    } else {
        ron_info("dht: re-announcing %llu objects of the store",
                 (unsigned long long)s->announced_from_store);
        s->list_done = true; /* not closed from inside its own reply callback */
        json_decref(o);
    }
    svc_flush_provides(s);
}

static void
ask_list(dht_service_t *s)
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

/* Log a datagram refused because a seed named another node (at most one
 * line per DHT_SVC_SEED_LOG_MS: an impostor must not flood the log). */
static void
seed_log_refused(dht_service_t *s)
{
    uint64_t now = ron_now_ms(), n = dht_stats(s->dht)->rx_seed_mismatch;
    char want[2 * DHT_ID_LEN + 1], got[2 * DHT_ID_LEN + 1], at[DHT_SVC_ADDR_MAX];
    uint8_t id[DHT_ID_LEN];
    dht_seed_t sd;

    if (n == s->seed_refused_seen ||
        (s->seed_logged != 0 && now < s->seed_logged + DHT_SVC_SEED_LOG_MS) ||
        dht_seed_mismatch_last(s->dht, &sd, id) < 0)
        return;
    ron_hex_encode(want, sd.id, DHT_ID_LEN);
    ron_hex_encode(got, id, DHT_ID_LEN);
    dht_service_addr_format(&sd.addr, at);
    ron_warn("dht: seed %s answered as node %s, not %s as configured: refused (%llu so far)", at,
             got, want, (unsigned long long)n);
    s->seed_refused_seen = n;
    s->seed_logged = now;
}

/* ---- seeds given by host name ---- */

static void svc_release(dht_service_t *s);

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = ron_container_of(req, resolve_t, req);
    dht_service_t *s = r->svc;
    seed_name_t *n = &s->names[r->slot];
    dht_addr_t a = {0};

    n->req = NULL;
    for (struct addrinfo *ai = res; status == 0 && ai != NULL && a.family == 0; ai = ai->ai_next)
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            addr_from_sockaddr(ai->ai_addr, &a);
    uv_freeaddrinfo(res);
    free(r);
    if (s->stopping) {
        svc_release(s);
        return;
    }
    if (a.family == 0) {
        /* retried: quickly while we know nobody, slowly once we do */
        n->next_try = ron_now_ms() + (dht_table_size(s->dht) == 0 ? 10000u : 60000u);
        ron_warn("dht: seed %s: cannot resolve: %s (retrying)", n->host,
                 status < 0 ? uv_strerror(status) : "no IPv4/IPv6 address");
    } else if (s->nseeds < DHT_MAX_SEEDS) {
        char text[DHT_SVC_ADDR_MAX];
        dht_seed_t *sd = &s->seeds[s->nseeds++];
        a.port = n->port;
        n->resolved = true;
        memset(sd, 0, sizeof *sd);
        sd->addr = a;
        sd->has_id = n->has_id;
        memcpy(sd->id, n->id, DHT_ID_LEN);
        dht_service_addr_format(&a, text);
        ron_info("dht: seed %s is %s", n->host, text);
        s->boot_called = dht_bootstrap_seeds(s->dht, s->seeds, s->nseeds, ron_now_ms()) == 0;
        svc_pump(s);
    }
    svc_release(s);
}

/* Start resolving the seed names that are due. */
static void
resolve_names(dht_service_t *s)
{
    struct addrinfo hints;
    uint64_t now = ron_now_ms();

    memset(&hints, 0, sizeof hints);
    /* the socket's own family: a v4 socket cannot send to a v6 seed (nor a V6ONLY one to v4) */
    hints.ai_family = s->bound[0] == '[' ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    for (size_t i = 0; i < s->nnames; i++) {
        seed_name_t *n = &s->names[i];
        resolve_t *r;
        if (n->resolved || n->req != NULL || now < n->next_try)
            continue;
        r = ron_xcalloc(1, sizeof *r);
        r->svc = s;
        r->slot = i;
        if (uv_getaddrinfo(s->loop, &r->req, on_resolved, n->host, NULL, &hints) < 0) {
            free(r);
            n->next_try = now + 10000u;
            continue;
        }
        n->req = &r->req;
        s->open_handles++;
    }
}

/* ---- housekeeping ---- */

static void
on_house(uv_timer_t *t)
{
    dht_service_t *s = t->data;
    uint64_t now = ron_now_ms();

    for (size_t i = 0; i < DHT_SVC_MAX_PENDING; i++)
        if (s->pend[i].req != NULL && s->pend[i].op != OP_PROVIDE && now >= s->pend[i].deadline) {
            answer_error(s, s->pend[i].op, s->pend[i].req, 504, "timeout", NULL,
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
    resolve_names(s);
    if (s->list_done && s->storage != NULL && !s->list_asking) {
        rbus_peer_close(s->storage);
        s->storage = NULL;
    }
    if (s->have_overlay && s->overlay != NULL && !s->overlay_asking) {
        rbus_peer_close(s->overlay); /* the address is known: stop reconnecting */
        s->overlay = NULL;
    }
    ask_overlay(s);
    ask_list(s);
    svc_flush_provides(s);
    svc_save(s, false);
    svc_pump(s);
}

/* ---- UDP ---- */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    dht_service_t *s = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)s->rxbuf, sizeof s->rxbuf);
}

static void
on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
        unsigned flags)
{
    dht_service_t *s = h->data;
    dht_addr_t a;
    (void)flags;

    if (nread <= 0 || from == NULL || s->stopping)
        return;
    addr_from_sockaddr(from, &a);
    if (a.family == 0 || a.port == 0)
        return;
    if (dht_input(s->dht, (const uint8_t *)buf->base, (size_t)nread, &a, ron_now_ms()) < 0)
        s->rx_dropped++;
    seed_log_refused(s);
    svc_pump(s);
}

/* ---- bus requests ---- */

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
        answer_error(s, op, req, 429, NULL, "pending", "too many DHT requests waiting");
        return;
    }
    if (dht_table_size(s->dht) == 0 && s->nseeds + s->nnames > 0 && !held_any(s, op, key)) {
        /* seeded but no contact yet (starting, or the seeds are down): an empty
         * answer would claim nobody has it */
        answer_error(s, op, req, 503, NULL, "not_joined",
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
        answer_error(s, op, req, 429, NULL, "lookups", "too many DHT lookups running");
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
    svc_pump(s);
}

static void
do_status(dht_service_t *s, rbus_req_t *req)
{
    char hex[2 * DHT_ID_LEN + 1], c[24], r[24], p[24];
    ron_hex_encode(hex, s->id, DHT_ID_LEN);
    snprintf(c, sizeof c, "%zu", dht_table_size(s->dht));
    snprintf(r, sizeof r, "%zu", dht_record_count(s->dht));
    snprintf(p, sizeof p, "%zu", s->nprov);
    answer_ok(s, OP_STATUS, req,
              json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "id", hex, "addr", s->bound, "contacts",
                        c, "records", r, "provided", p, "bootstrapped", s->bootstrapped));
}

static void
do_name_put(dht_service_t *s, rbus_req_t *req, const oap_frame_t *f, json_t *o)
{
    json_t *rj = json_object_get(o, "record");
    char *txt = json_is_object(rj) ? json_dumps(rj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    name_record_t rec;
    name_err_t nerr = {0};
    int rc;

    if (txt == NULL) {
        answer_error(s, OP_NAME_PUT, req, 400, NULL, "record", "record: missing or not an object");
        return;
    }
    rc = name_record_from_json(&rec, txt, strlen(txt), &nerr);
    free(txt);
    if (rc == 0 && !svc_authorize(s, OP_NAME_PUT, req, f, NULL, rec.name))
        return;
    if (rc == 0)
        rc = name_record_validate(&rec, (int64_t)unix_s(), &nerr);
    if (rc == 0)
        rc = dht_name_publish(s->dht, &rec, ron_now_ms());
    switch (rc) {
    case 0:
    case RON_ENAMEDUP:
        svc_pump(s);
        answer_ok(s, OP_NAME_PUT, req, json_object());
        break;
    case RON_ENAMESTALE:
        answer_error(s, OP_NAME_PUT, req, 409, NULL, "stale_seq",
                     "the DHT holds a record of this name with a higher seq");
        break;
    case RON_ENAMEOWNER:
        answer_error(s, OP_NAME_PUT, req, 409, NULL, "owner",
                     "the name is bound to another key in the DHT");
        break;
    case RON_EBUSY:
        answer_error(s, OP_NAME_PUT, req, 429, NULL, "lookups", "the DHT is busy");
        break;
    default:
        answer_error(s, OP_NAME_PUT, req, 400, NULL, "record",
                     nerr.msg[0] != '\0' ? nerr.msg : ron_strerror(rc));
        break;
    }
}

static void
on_request(void *arg, rbus_req_t *req, const oap_frame_t *f)
{
    dht_service_t *s = arg;
    proto_svc_req_t in;
    proto_svc_fail_t fail;
    json_t *o;
    op_t op;
    uint8_t key[DHT_ID_LEN];

    if (s->stopping) {
        answer_error(s, OP_BAD, req, 503, NULL, NULL, "dht is stopping");
        return;
    }
    if (proto_svc_parse(s->ps, f->payload, f->payload_len, &in, &fail) < 0) {
        answer_error(s, (op_t)in.op, req, fail.code, NULL,
                     fail.reason[0] != '\0' ? fail.reason : NULL, fail.message);
        return;
    }
    o = in.o;
    op = (op_t)in.op;
    switch (op) {
    case OP_FIND: {
        char lim[8];
        uint64_t v = DHT_SVC_PROVIDERS_DEFAULT;
        int r;
        if (get_b3(o, key) < 0) {
            answer_error(s, op, req, 400, NULL, "address", "address: missing or not b3:<64 hex>");
            break;
        }
        if ((r = proto_svc_get_text(o, "limit", lim, sizeof lim)) < 0 ||
            (r > 0 && (ron_parse_u64(lim, strlen(lim), &v) < 0 || v == 0 ||
                       v > DHT_SVC_PROVIDERS_MAX))) {
            answer_error(s, op, req, 400, NULL, "limit", "limit: a decimal string 1..20");
            break;
        }
        if (!svc_authorize(s, op, req, f, json_string_value(json_object_get(o, "address")), NULL))
            break;
        start_wait(s, op, req, key, (unsigned)v);
        break;
    }
    case OP_PROVIDE: {
        char w[8];
        uint64_t wait = 0;
        int r;
        if (get_b3(o, key) < 0) {
            answer_error(s, op, req, 400, NULL, "address", "address: missing or not b3:<64 hex>");
            break;
        }
        if ((r = proto_svc_get_text(o, "wait_ms", w, sizeof w)) < 0 ||
            (r > 0 && (ron_parse_u64(w, strlen(w), &wait) < 0 || wait == 0 ||
                       wait > DHT_SVC_PROVIDE_WAIT_MAX))) {
            answer_error(s, op, req, 400, NULL, "wait_ms", "wait_ms: a decimal string 1..10000");
            break;
        }
        if (!svc_authorize(s, op, req, f, json_string_value(json_object_get(o, "address")), NULL))
            break;
        if (prov_add(s, key) < 0) {
            answer_error(s, op, req, 429, NULL, "provided", "this node provides too many keys");
            break;
        }
        if (!svc_ready(s))
            s->provides_queued++;
        if (wait > 0) {
            provide_wait(s, req, key, wait);
            break;
        }
        svc_flush_provides(s);
        answer_ok(s, op, req, json_object());
        break;
    }
    case OP_UNPROVIDE: {
        prov_t *p;
        if (get_b3(o, key) < 0) {
            answer_error(s, op, req, 400, NULL, "address", "address: missing or not b3:<64 hex>");
            break;
        }
        if (!svc_authorize(s, op, req, f, json_string_value(json_object_get(o, "address")), NULL))
            break;
        if ((p = prov_find(s, key)) == NULL) {
            answer_error(s, op, req, 404, NULL, NULL, "this node does not provide that address");
            break;
        }
        if (p->announced)
            (void)dht_unprovide(s->dht, key, ron_now_ms());
        else
            s->nprov_queued--;
        *p = s->prov[--s->nprov];
        svc_pump(s);
        answer_ok(s, op, req, json_object());
        break;
    }
    case OP_NAME_PUT:
        do_name_put(s, req, f, o);
        break;
    case OP_NAME_GET: {
        char raw[NAME_MAX_INPUT + 1], name[NAME_MAX_LEN + 1];
        name_err_t nerr;
        if (proto_svc_get_text(o, "name", raw, sizeof raw) <= 0) {
            answer_error(s, op, req, 400, NULL, "name", "name: missing or malformed");
            break;
        }
        if (name_normalize(raw, strlen(raw), name, &nerr) < 0) {
            answer_error(s, op, req, 400, NULL, "name", nerr.msg);
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
    json_decref(o);
}

/* ---- life cycle ---- */

/* One of the things the memory waits for (handles, name resolutions) is done. */
static void
svc_release(dht_service_t *s)
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
    for (size_t i = 0; i < RON_ARRAY_LEN(provide_states) && rc == 0; i++)
        s->m_waits[i] = met_family_counter(fam, (const char *const[]){provide_states[i]});
    return rc;
}

static void
on_closed(uv_handle_t *h)
{
    svc_release(h->data);
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
    if ((rc = proto_svc_new(&svc_desc, &s->ps)) < 0 || (rc = svc_metrics_register(s)) < 0) {
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
        int kind = seed_parse(cfg->seeds[i], &s->seeds[s->nseeds], &s->names[s->nnames]);
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
        addr_from_sockaddr((struct sockaddr *)&ss, &b);
        dht_service_addr_format(&b, s->bound);
    }
    if (cfg->table_path != NULL)
        s->table_path = ron_xstrdup(cfg->table_path);
    s->next_save = now + DHT_SVC_SAVE_MS;
    svc_load(s);
    if (adv.family != 0) {
        s->have_overlay = true;
    } else if (cfg->overlay_endpoint != NULL) {
        s->overlay = rbus_connect(bus, cfg->overlay_endpoint, &rc);
    }
    if (cfg->storage_endpoint != NULL)
        s->storage = rbus_connect(bus, cfg->storage_endpoint, &rc);
    if ((rc = rbus_handle(bus, OAP_APP_DHT, on_request, s)) < 0) {
        snprintf(err, errcap, "dht: no ron-bus handler slot");
        dht_service_free(s);
        return rc;
    }
    if (s->nseeds > 0 || dht_table_size(s->dht) > 0)
        s->boot_called = dht_bootstrap_seeds(s->dht, s->seeds, s->nseeds, now) == 0;
    resolve_names(s);
    uv_udp_recv_start(&s->udp, on_alloc, on_recv);
    uv_timer_start(&s->house, on_house, DHT_SVC_HOUSE_MS, DHT_SVC_HOUSE_MS);
    ron_info("dht: node %02x%02x%02x%02x... on udp %s, %zu seeds, table %s", s->id[0], s->id[1],
             s->id[2], s->id[3], s->bound, s->nseeds + s->nnames,
             s->table_path != NULL ? s->table_path : "not persisted (amnesia)");
    svc_pump(s);
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
    svc_save(s, true);
    s->stopping = true;
    for (size_t i = 0; i < DHT_SVC_MAX_PENDING; i++)
        if (s->pend[i].req != NULL) {
            answer_error(s, s->pend[i].op, s->pend[i].req, 503, NULL, NULL, "dht is stopping");
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
    for (size_t i = 0; i < RON_ARRAY_LEN(provide_states); i++)
        counter_to(s->m_waits[i], s->provide_outcome[i], &s->m_waits_seen[i]);
    return proto_svc_metrics(s->ps, buf, cap);
}
