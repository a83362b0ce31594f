/*
 * ovl_service.c - the overlay as a node service: glue between tx_peer
 * sessions and ovl_session_t, the dial-on-demand session table, and the
 * `overlay` ron-bus protocol (fetch, peers, status).
 *
 * Why this shape: the core (ovl_session.c) is sans-I/O and knows nothing of
 * sockets, clocks or the bus; this file owns those. A bus fetch is a relay:
 * the pieces the core verified are collected with their proofs exactly as
 * they arrived (ovl_fetch_cb_t.on_record) and answered in one frame, so the
 * caller (svc-storage) can keep the proofs and verify again.
 *
 * Invariants: one loop thread; a glue session (gsess_t) lives from its
 * tx_peer dial or on_session until tx_peer's on_close, which frees its
 * ovl_session_t; every bus fetch is answered exactly once (200, an error,
 * or 503 when its session or the service goes away); a fetch runs on one
 * session and holds at most OVL_SVC_PIECES_MAX records; every loop over
 * sessions or fetches is bounded by max_sessions + tx_peer's max_conns and
 * max_fetches.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ovl_client.h"
#include "ovl_internal.h"
#include "ovl_service.h"
#include "ron_err.h"
#include "ron_guard.h"
#include "ron_log.h"
#include "ron_metrics.h"
#include "ron_proto.h"
#include "ron_util.h"
#include "sto_tree.h"

typedef struct gsess gsess_t;
typedef struct gfetch gfetch_t;

struct gsess { /* one tx_peer session and its overlay session */
    gsess_t *next;
    ovl_service_t *svc;
    tx_peer_session_t *ps;
    ovl_session_t *os; /* NULL until the handshake is done */
    uint8_t id[OVL_ID_LEN];
    char addr[OVL_ADDR_MAX + 1]; /* the address dialled, or "" when accepted */
    bool dialer;
    bool bad; /* closed because the peer lied: its fetches end 502 */
    uint64_t next_tick, last_used;
    unsigned n_fetches;
};

struct gfetch { /* one bus fetch */
    gfetch_t *next;
    ovl_service_t *svc;
    rbus_req_t *req;
    gsess_t *gs;
    ovl_fetch_t *ft; /* NULL while the session is being dialled */
    uint8_t addr[STO_ADDR_LEN];
    uint64_t offset, length, size, deadline;
    uint64_t known; /* the size the requester verified (OVL_SIZE_UNKNOWN: none) */
    size_t n_rec;
    uint8_t cvs[OVL_SVC_PIECES_MAX][STO_TREE_HASH_LEN]; /* each record's chaining value */
    uint8_t *raw;            /* SVC_HEADROOM bytes, then the records */
    size_t raw_len, raw_cap; /* bytes of records, room for them */
    char *cap;               /* the bus request's "cap" for the provider, or NULL (wiped) */
    size_t cap_len;
};

/* Room before the records for the answer's u32 length and JSON, so the
 * answer goes out without copying the records again. */
#define SVC_HEADROOM (128u + RBUS_HEADROOM) /* the answer JSON, then the bus frame header */

typedef struct {
    uint8_t id[OVL_ID_LEN];
    uint64_t until;
} bad_t;

#define SVC_N_REJ TX_PEER_REJ__COUNT

struct ovl_service {
    uv_loop_t *loop;
    ovl_service_config_t cfg;
    guard_t *guard;              /* NULL: every peer's get is served (no enforcement) */
    met_counter_t *m_refused[3]; /* peers' gets refused: capability (401), forbidden, rate */
    tx_peer_t *p;
    ovl_node_t *node;
    uv_timer_t timer;
    bool closing;
    int pending_close; /* handles still closing: tx_peer, timer */
    void (*close_cb)(void *arg);
    void *close_arg;
    char listen[OVL_ADDR_MAX + 1];
    char advertise[OVL_ADDR_MAX + 1];
    uint8_t id[OVL_ID_LEN];
    gsess_t *sessions;
    size_t n_sessions, n_dialled;
    gfetch_t *fetches;
    size_t n_fetches;
    bad_t bad[OVL_SVC_BAD_MAX];
    size_t n_bad;
    ovl_session_stats_t gone; /* summed stats of freed sessions */
    ovl_service_stats_t st;
    met_registry_t *reg;
    met_counter_t *m_sent, *m_recv, *m_bad;
    met_gauge_t *m_sessions;
    met_gauge_t *m_queued;                   /* all sessions' queued output bytes */
    met_counter_t *m_budget_waits, *m_released;
    uint64_t seen_budget_waits, seen_released;
    met_counter_t *m_fetch[6];
    met_counter_t *m_rej[SVC_N_REJ];
    uint64_t seen_sent, seen_recv, seen_bad, seen_fetch[6], seen_rej[SVC_N_REJ];
};

static void svc_arm(ovl_service_t *s);

/* The bus client (its own component) restates the geometry it parses. */
_Static_assert(OVL_CLIENT_PIECE_LEN == STO_PIECE_LEN, "piece length");
_Static_assert(OVL_CLIENT_PROOF_MAX == STO_TREE_MAX_PROOF, "proof bound");
_Static_assert(OVL_CLIENT_REC_HDR_LEN == OVL_PIECE_HDR_LEN, "record header");
_Static_assert(OVL_SVC_MAX_FRAME >= OVL_MIN_MAX_FRAME && OVL_SVC_MAX_FRAME <= OAP_MAX_FRAME,
               "a piece frame fits the max_frame peer links offer");
_Static_assert(OVL_CLIENT_FETCH_MAX_LEN == OVL_SVC_FETCH_MAX_LEN, "fetch length bound");
_Static_assert(OVL_CLIENT_CV_LEN == STO_TREE_HASH_LEN, "chaining value length");
_Static_assert(OVL_CLIENT_PIECES_MAX == OVL_SVC_PIECES_MAX, "records per answer");
_Static_assert(OVL_CLIENT_ID_LEN == OVL_ID_LEN && OVL_CLIENT_OBJ_LEN == STO_ADDR_LEN, "ids");
_Static_assert(OVL_CLIENT_NET_ADDR_MAX == OVL_ADDR_MAX, "address bound");
_Static_assert(SVC_HEADROOM >= RBUS_HEADROOM + 4 + 43 + 3 * 20, "room for the answer's JSON");
_Static_assert(OVL_CLIENT_CAP_MAX == AUTH_MAX_TOKEN, "a capability for the provider");

/* ---- small helpers ---- */

static uint64_t
now_ms(const ovl_service_t *s)
{
    return uv_now(s->loop);
}

static json_t *
json_u64(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return json_string(b);
}

static json_t *
json_id(const uint8_t id[OVL_ID_LEN])
{
    char b[2 * OVL_ID_LEN + 1];
    ron_hex_encode(b, id, OVL_ID_LEN);
    return json_string(b);
}

/* Answer 200 with o (taken) framed as u32 length + JSON + raw. */
static void
answer_ok(rbus_req_t *req, json_t *o, const uint8_t *raw, size_t raw_len)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    size_t jl;
    uint8_t *buf;

    json_decref(o);
    if (txt == NULL) {
        rbus_respond_error(req, 500, "cannot encode the answer");
        return;
    }
    jl = strlen(txt);
    buf = ron_xmalloc(4 + jl + raw_len);
    (void)proto_json_frame(buf, txt, (uint32_t)jl);
    if (raw_len > 0)
        memcpy(buf + 4 + jl, raw, raw_len);
    (void)rbus_respond(req, 200, buf, 4 + jl + raw_len);
    free(buf);
    free(txt);
}

/* Pieces covering [offset, offset + length) of an object of size bytes
 * (the rule of overlay.md §3). */
static int
svc_range(uint64_t size, uint64_t offset, uint64_t length, uint64_t *first, uint64_t *count)
{
    uint64_t end;

    if (size == 0) {
        if (offset != 0)
            return RON_ERANGE;
        *first = 0;
        *count = 1;
        return 0;
    }
    if (offset >= size)
        return RON_ERANGE;
    end = length > size - offset ? size : offset + length;
    *first = offset / STO_PIECE_LEN;
    *count = (end - 1) / STO_PIECE_LEN - *first + 1;
    return 0;
}

bool
ovl_service_is_bad(const ovl_service_t *s, const uint8_t id[static OVL_ID_LEN])
{
    uint64_t now = now_ms(s);

    for (size_t i = 0; i < s->n_bad; i++)
        if (s->bad[i].until > now && memcmp(s->bad[i].id, id, OVL_ID_LEN) == 0)
            return true;
    return false;
}

static void
bad_remember(ovl_service_t *s, const uint8_t id[OVL_ID_LEN])
{
    uint64_t now = now_ms(s), until = now + OVL_SVC_BAD_MS;
    size_t slot = s->n_bad, i;

    for (i = 0; i < s->n_bad; i++)
        if (memcmp(s->bad[i].id, id, OVL_ID_LEN) == 0 || s->bad[i].until <= now) {
            slot = i;
            break;
        }
    if (slot == s->n_bad && s->n_bad == OVL_SVC_BAD_MAX) {
        slot = 0; /* full of live entries: replace the one that ends first */
        for (i = 1; i < s->n_bad; i++)
            if (s->bad[i].until < s->bad[slot].until)
                slot = i;
    } else if (slot == s->n_bad) {
        s->n_bad++;
    }
    memcpy(s->bad[slot].id, id, OVL_ID_LEN);
    s->bad[slot].until = until;
}

/* ---- bus fetches ---- */

enum { FR_OK, FR_NOT_FOUND, FR_BAD, FR_UNAVAIL, FR_TIMEOUT, FR_OTHER };
static const char *const fetch_results[6] = {"ok",          "not_found", "bad_piece",
                                             "unavailable", "timeout",   "other"};

static void
fetch_free(ovl_service_t *s, gfetch_t *f)
{
    gfetch_t **pp;

    for (pp = &s->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            s->n_fetches--;
            break;
        }
    if (f->gs != NULL) {
        f->gs->n_fetches--;
        f->gs->last_used = now_ms(s);
    }
    if (f->cap != NULL) {
        explicit_bzero(f->cap, f->cap_len);
        free(f->cap);
    }
    free(f->raw);
    free(f);
}

/* Answer f's request with rc (0: the records) and free f. */
static void
fetch_answer(ovl_service_t *s, gfetch_t *f, int rc)
{
    rbus_req_t *req = f->req;
    uint64_t first = 0, count = 0;
    int res = FR_OTHER;

    f->req = NULL;
    switch (rc) {
    case 0: {
        char js[SVC_HEADROOM];
        size_t jl;
        uint8_t *p;
        (void)svc_range(f->size, f->offset, f->length, &first, &count);
        jl = (size_t)snprintf(
            js, sizeof js,
            "{\"count\":\"%llu\",\"cv\":true,\"first\":\"%llu\",\"size\":\"%llu\"}",
            (unsigned long long)count, (unsigned long long)first, (unsigned long long)f->size);
        if (f->raw == NULL || f->raw_len + f->n_rec * STO_TREE_HASH_LEN > f->raw_cap) {
            f->raw_cap = f->raw_len + f->n_rec * STO_TREE_HASH_LEN;
            f->raw = ron_xrealloc(f->raw, SVC_HEADROOM + f->raw_cap);
        }
        /* the records, then each one's chaining value (overlay.md §6) */
        memcpy(f->raw + SVC_HEADROOM + f->raw_len, f->cvs, f->n_rec * STO_TREE_HASH_LEN);
        /* jl <= 43 + 3 x 20 (three u64s and the keys): RBUS_HEADROOM stays free before p */
        p = f->raw + SVC_HEADROOM - 4 - jl;
        (void)proto_json_frame(p, js, (uint32_t)jl);
        /* the block goes to the bus as it is (in process: to storage without a copy) */
        (void)rbus_respond_owned(req, 200, f->raw, p,
                                 4 + jl + f->raw_len + f->n_rec * STO_TREE_HASH_LEN);
        f->raw = NULL;
        res = FR_OK;
        s->st.fetches_ok++;
        break;
    }
    case RON_ENOTFOUND:
        rbus_respond_error(req, 404, "the provider does not hold the object");
        res = FR_NOT_FOUND;
        break;
    case RON_ERANGE:
        rbus_respond_error(req, 416, "range outside the object");
        break;
    case RON_EBUSY:
        rbus_respond_error_ex(req, 429, NULL, "busy", 100, "the provider is at its limit");
        s->st.fetches_busy++;
        break;
    case RON_EBADPIECE:
        rbus_respond_error_ex(req, 502, NULL, "bad_piece", 0,
                              "the provider sent a piece that does not verify");
        res = FR_BAD;
        break;
    case RON_EDIGEST:
        rbus_respond_error_ex(req, 502, NULL, "provider_corrupt", 0,
                              "the provider's own copy failed its check");
        break;
    case RON_ETIMEOUT:
        rbus_respond_error_ex(req, 504, NULL, NULL, 0, "no progress from the provider");
        res = FR_TIMEOUT;
        s->st.fetches_timeout++;
        break;
    case RON_EINVAL:
        rbus_respond_error(req, 400, "cannot dial that provider address");
        break;
    case RON_ECAPNEEDED: /* the provider's answer, not this bus request's */
        rbus_respond_error_ex(req, 401, NULL, "provider_capability", 0,
                              "the provider wants a valid capability (bus field cap)");
        break;
    case RON_ECAPDENY:
        rbus_respond_error_ex(req, 403, NULL, "provider_forbidden", 0,
                              "the provider's policy or the capability's caveats refuse it");
        break;
    default: /* the link died, dial/TLS/id check failed, provider closing */
        rbus_respond_error_ex(req, 503, NULL, "peer_unavailable", 100, ron_strerror(rc));
        res = FR_UNAVAIL;
        break;
    }
    if (rc != 0)
        s->st.fetches_failed++;
    met_counter_inc(s->m_fetch[res]);
    fetch_free(s, f);
}

static int
fetch_on_record(void *arg, uint64_t piece, uint64_t size, const uint8_t *rec, size_t len,
                const uint8_t *cv)
{
    gfetch_t *f = arg;

    (void)piece;
    if (f->n_rec >= OVL_SVC_PIECES_MAX)
        return RON_EBADPIECE; /* more than the range can hold: the core refuses it first */
    if (f->raw_len + len > f->raw_cap) {
        f->raw_cap = f->raw_len + len > 2 * f->raw_cap ? f->raw_len + len : 2 * f->raw_cap;
        f->raw = ron_xrealloc(f->raw, SVC_HEADROOM + f->raw_cap);
    }
    memcpy(f->raw + SVC_HEADROOM + f->raw_len, rec, len);
    memcpy(f->cvs[f->n_rec], cv, STO_TREE_HASH_LEN);
    f->raw_len += len;
    f->n_rec++;
    f->size = size;
    f->deadline = now_ms(f->svc) + f->svc->cfg.fetch_timeout_ms;
    return 0;
}

static void
fetch_on_done(void *arg, int rc)
{
    gfetch_t *f = arg;
    ovl_service_t *s = f->svc;
    gsess_t *gs = f->gs;

    f->ft = NULL;
    if (rc == RON_EBADPIECE && gs != NULL) {
        s->st.bad_pieces++;
        bad_remember(s, gs->id);
        if (!gs->bad) {
            gs->bad = true;
            ron_warn("overlay: peer %02x%02x%02x%02x… sent a piece that does not verify; "
                     "closing its session, refused for %u s",
                     gs->id[0], gs->id[1], gs->id[2], gs->id[3], OVL_SVC_BAD_MS / 1000u);
            tx_peer_session_close(gs->ps);
        }
    } else if (rc < 0 && gs != NULL && gs->bad) {
        rc = RON_EBADPIECE; /* other fetches of a lying peer end with it */
    }
    fetch_answer(s, f, rc);
    svc_arm(s);
}

/* Start f on its session (open now). */
static void
fetch_go(ovl_service_t *s, gfetch_t *f)
{
    ovl_fetch_cb_t cb = {NULL, fetch_on_done, f, NULL, NULL, fetch_on_record};
    int rc;

    f->deadline = now_ms(s) + s->cfg.fetch_timeout_ms;
    if (f->raw == NULL) {
        /* room for every record the range can bring, at once: growing it piece by
         * piece copied the records already held again (a third of the bytes) */
        uint64_t n = f->length / STO_PIECE_LEN + 2 + (f->known == OVL_SIZE_UNKNOWN);
        f->raw_cap = (size_t)(n < OVL_SVC_PIECES_MAX ? n : OVL_SVC_PIECES_MAX) *
                     (OVL_PIECE_PAYLOAD_MAX + STO_TREE_HASH_LEN);
        f->raw = ron_xmalloc(SVC_HEADROOM + f->raw_cap);
    }
    rc = ovl_fetch_start_full(f->gs->os, f->addr, f->offset, f->length, f->known,
                              (const uint8_t *)f->cap, f->cap_len, &cb, &f->ft);
    if (rc < 0)
        fetch_answer(s, f, rc == RON_EBUSY ? RON_EBUSY : RON_EUNAVAIL);
}

/* ---- peers' gets: the capability check (overlay.md §3 "Capabilities") ---- */

/*
 * The core's authorize hook: a peer's get is op get on the address, with
 * the token of the START frame's cap section (none: anonymous, allowed
 * when the policy allows anonymous get, the default). No source is passed,
 * so the policy's per-source request rate (meant for HTTP and app-port
 * clients: 100/s by default) does not apply: one peer's verified transfer
 * is thousands of 256 KiB gets a second, and peers are already bounded by
 * the overlay's own ceilings (sessions per peer and in all, streams in
 * flight, send queues; overlay.md §2). A capability's rate caveat still
 * applies per token.
 * guard_check counts and audits a rejection; the service counts it too
 * (overlay_gets_refused_total{reason}).
 */
static int
svc_authorize(void *arg, void *link, const uint8_t addr[STO_ADDR_LEN], const uint8_t *cap,
              size_t cap_len, ovl_deny_t *deny)
{
    (void)link;
    ovl_service_t *s = arg;
    guard_req_t gr = {0};
    guard_result_t res;
    char hex[68];

    if (s->guard == NULL)
        return 0;
    sto_addr_format(addr, hex);
    gr.op = AUTH_OP_GET;
    gr.token = cap_len > 0 ? (const char *)cap : NULL;
    gr.token_len = cap_len;
    gr.addr = hex;
    gr.size = AUTH_SIZE_UNKNOWN;
    gr.target = hex;
    if (guard_check(s->guard, &gr, &res) == 0)
        return 0;
    met_counter_inc(s->m_refused[res.status == 429 ? 2 : res.status == 403 ? 1 : 0]);
    deny->status = (uint16_t)res.status;
    deny->slug = res.slug;
    deny->reason = res.slug;
    deny->message = res.reason;
    deny->retry_after_ms = res.retry_after_s * 1000u;
    return res.code < 0 ? res.code : RON_ECAPDENY;
}

void
ovl_service_set_guard(ovl_service_t *s, guard_t *g)
{
    s->guard = g;
}

/* ---- sessions ---- */

static int
gl_send(void *link, const oap_frame_t *f)
{
    gsess_t *gs = link;
    if (gs->svc->cfg.send_hook != NULL)
        return gs->svc->cfg.send_hook(gs->svc->cfg.hook_arg, gs->ps, f);
    return tx_peer_send(gs->ps, f);
}

static int
gl_consume(void *link, uint64_t corr_id, bool mine, uint32_t n)
{
    gsess_t *gs = link;
    return tx_peer_consume(gs->ps, corr_id, mine, n);
}

static void
gl_pause(void *link, bool paused)
{
    gsess_t *gs = link;
    tx_peer_session_pause(gs->ps, paused);
}

static void
gl_close(void *link)
{
    gsess_t *gs = link;
    tx_peer_session_close(gs->ps);
}

static const ovl_link_ops_t gl_ops = {gl_send, gl_consume, gl_pause, gl_close};

static gsess_t *
gsess_add(ovl_service_t *s, tx_peer_session_t *ps, const uint8_t id[OVL_ID_LEN], const char *addr,
          bool dialer)
{
    gsess_t *gs = ron_xcalloc(1, sizeof *gs);

    gs->svc = s;
    gs->ps = ps;
    memcpy(gs->id, id, OVL_ID_LEN);
    snprintf(gs->addr, sizeof gs->addr, "%s", addr != NULL ? addr : "");
    gs->dialer = dialer;
    gs->last_used = now_ms(s);
    gs->next_tick = UINT64_MAX;
    gs->next = s->sessions;
    s->sessions = gs;
    s->n_sessions++;
    if (dialer)
        s->n_dialled++;
    tx_peer_session_set_data(ps, gs);
    return gs;
}

/* An open session with id that can take a fetch (or one being dialled). */
static gsess_t *
gsess_find(ovl_service_t *s, const uint8_t id[OVL_ID_LEN])
{
    for (gsess_t *gs = s->sessions; gs != NULL; gs = gs->next)
        if (memcmp(gs->id, id, OVL_ID_LEN) == 0 && !gs->bad &&
            (gs->os == NULL ? gs->dialer : !ovl_session_is_closing(gs->os)))
            return gs;
    return NULL;
}

/* At the dialled-session bound: GOODBYE the least recently used idle one. */
static void
gsess_make_room(ovl_service_t *s)
{
    gsess_t *lru = NULL;

    if (s->n_dialled < s->cfg.max_sessions)
        return;
    for (gsess_t *gs = s->sessions; gs != NULL; gs = gs->next)
        if (gs->dialer && gs->os != NULL && gs->n_fetches == 0 && !ovl_session_is_closing(gs->os) &&
            (lru == NULL || gs->last_used < lru->last_used))
            lru = gs;
    if (lru != NULL)
        ovl_session_goodbye(lru->os, "idle");
}

static void
on_session(tx_peer_session_t *ps, void *arg)
{
    ovl_service_t *s = arg;
    gsess_t *gs = tx_peer_session_data(ps);
    int rc;

    if (gs == NULL) /* accepted */
        gs = gsess_add(s, ps, tx_peer_session_id(ps), NULL, false);
    rc = ovl_session_new(s->node, &gl_ops, gs, tx_peer_session_id(ps),
                         tx_peer_session_max_frame(ps), now_ms(s), &gs->os);
    if (rc < 0) {
        tx_peer_session_close(ps);
        return;
    }
    gs->next_tick = now_ms(s); /* first tick on the next timer run */
    /* fetches waiting for this dial start now */
    for (gfetch_t *f = s->fetches, *next; f != NULL; f = next) {
        next = f->next;
        if (f->gs == gs && f->ft == NULL)
            fetch_go(s, f);
    }
    svc_arm(s);
}

static void
on_frame(tx_peer_session_t *ps, const oap_frame_t *f, void *arg)
{
    ovl_service_t *s = arg;
    gsess_t *gs = tx_peer_session_data(ps);

    if (gs != NULL && gs->os != NULL)
        (void)ovl_session_recv(gs->os, f, now_ms(s));
}

static void
on_writable(tx_peer_session_t *ps, void *arg)
{
    gsess_t *gs = tx_peer_session_data(ps);

    (void)arg;
    if (gs != NULL && gs->os != NULL)
        ovl_session_writable(gs->os);
}

static void
stats_add(ovl_session_stats_t *acc, const ovl_session_stats_t *x)
{
    acc->piece_bytes_sent += x->piece_bytes_sent;
    acc->piece_bytes_recv += x->piece_bytes_recv;
    acc->pieces_sent += x->pieces_sent;
    acc->pieces_recv += x->pieces_recv;
    acc->bad_pieces += x->bad_pieces;
}

static void
on_close(tx_peer_session_t *ps, int reason, void *arg)
{
    ovl_service_t *s = arg;
    gsess_t *gs = tx_peer_session_data(ps), **pp;

    if (gs == NULL)
        return;
    if (gs->os != NULL) {
        ovl_session_stats_t st;
        ovl_session_closed(gs->os, reason); /* live fetches end: fetch_on_done */
        ovl_session_stats(gs->os, &st);
        stats_add(&s->gone, &st);
        ovl_session_free(gs->os);
        gs->os = NULL;
    }
    /* fetches still waiting for the dial */
    for (gfetch_t *f = s->fetches, *next; f != NULL; f = next) {
        next = f->next;
        if (f->gs == gs)
            fetch_answer(s, f, gs->bad ? RON_EBADPIECE : (reason < 0 ? reason : RON_ECLOSED));
    }
    for (pp = &s->sessions; *pp != NULL; pp = &(*pp)->next)
        if (*pp == gs) {
            *pp = gs->next;
            break;
        }
    s->n_sessions--;
    if (gs->dialer)
        s->n_dialled--;
    tx_peer_session_set_data(ps, NULL);
    free(gs);
    if (!s->closing)
        svc_arm(s);
}

/* ---- the timer: keepalive, gossip, fetch deadlines, idle sessions ---- */

static void
svc_tick(uv_timer_t *t)
{
    ovl_service_t *s = t->data;
    uint64_t now = now_ms(s);

    for (gsess_t *gs = s->sessions; gs != NULL; gs = gs->next) {
        if (gs->os == NULL || ovl_session_is_closing(gs->os))
            continue;
        if (gs->dialer && gs->n_fetches == 0 && now >= gs->last_used + s->cfg.idle_ms) {
            ovl_session_goodbye(gs->os, "idle");
            continue;
        }
        if (now >= gs->next_tick) {
            int64_t r = ovl_session_tick(gs->os, now);
            gs->next_tick = r < 0 ? UINT64_MAX : now + (uint64_t)r;
        }
    }
    for (gfetch_t *f = s->fetches, *next; f != NULL; f = next) {
        next = f->next;
        if (now >= f->deadline) {
            if (f->ft != NULL)
                ovl_fetch_cancel(f->ft);
            f->ft = NULL;
            fetch_answer(s, f, RON_ETIMEOUT);
        }
    }
    svc_arm(s);
}

/* (Re)start the timer for the earliest deadline. */
static void
svc_arm(ovl_service_t *s)
{
    uint64_t now = now_ms(s), next = UINT64_MAX;

    if (s->closing)
        return;
    for (gsess_t *gs = s->sessions; gs != NULL; gs = gs->next) {
        if (gs->os == NULL || ovl_session_is_closing(gs->os))
            continue;
        if (gs->next_tick < next)
            next = gs->next_tick;
        if (gs->dialer && gs->n_fetches == 0 && gs->last_used + s->cfg.idle_ms < next)
            next = gs->last_used + s->cfg.idle_ms;
    }
    for (gfetch_t *f = s->fetches; f != NULL; f = f->next)
        if (f->deadline < next)
            next = f->deadline;
    if (next == UINT64_MAX) {
        uv_timer_stop(&s->timer);
        return;
    }
    uv_timer_start(&s->timer, svc_tick, next > now ? next - now : 0, 0);
}

/* ---- the bus protocol ---- */

static const char *const fetch_keys[] = {"address", "offset", "length", "provider",
                                         "cap",     "size",   NULL};
static const char *const provider_keys[] = {"id", "addr", NULL};
static const char *const no_keys[] = {NULL};

/* Read u64 decimal string field name of o (no leading zeros). 1 present, 0 absent, -1 bad. */
static int
get_u64(json_t *o, const char *name, uint64_t *out)
{
    json_t *v = json_object_get(o, name);
    const char *sv;
    size_t n;

    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return -1;
    sv = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || (n > 1 && sv[0] == '0'))
        return -1;
    return ron_parse_u64(sv, n, out) < 0 ? -1 : 1;
}

static int
parse_id(json_t *v, uint8_t id[OVL_ID_LEN])
{
    const char *sv = json_string_value(v);

    if (sv == NULL || json_string_length(v) != 2 * OVL_ID_LEN)
        return -1;
    for (size_t i = 0; i < 2 * OVL_ID_LEN; i++)
        if (!((sv[i] >= '0' && sv[i] <= '9') || (sv[i] >= 'a' && sv[i] <= 'f')))
            return -1;
    return ron_hex_decode(id, OVL_ID_LEN, sv, 2 * OVL_ID_LEN) < 0 ? -1 : 0;
}

static void
op_fetch(ovl_service_t *s, rbus_req_t *req, json_t *o)
{
    json_t *prov = json_object_get(o, "provider"), *addr_v = json_object_get(o, "address");
    json_t *cap_v = json_object_get(o, "cap");
    const char *bad, *paddr;
    uint8_t addr[STO_ADDR_LEN], pid[OVL_ID_LEN];
    uint64_t offset = 0, length = 0, known = OVL_SIZE_UNKNOWN;
    gsess_t *gs;
    gfetch_t *f;
    char msg[96];
    int rc;

    if ((bad = proto_json_unknown_key(o, "op", fetch_keys)) != NULL) {
        snprintf(msg, sizeof msg, "unknown field '%.40s'", bad);
        rbus_respond_error_ex(req, 400, NULL, "proto_json_unknown_key", 0, msg);
        return;
    }
    if (!json_is_string(addr_v) || json_string_length(addr_v) != 67 ||
        sto_addr_parse(json_string_value(addr_v), addr) < 0) {
        rbus_respond_error(req, 400, "address must be b3:<64 hex>");
        return;
    }
    if (get_u64(o, "offset", &offset) < 0 || get_u64(o, "length", &length) != 1 || length == 0 ||
        length > OVL_SVC_FETCH_MAX_LEN) {
        rbus_respond_error(req, 400, "offset must be a u64 string; length 1..262144");
        return;
    }
    if ((rc = get_u64(o, "size", &known)) < 0 || (rc == 1 && known == OVL_SIZE_UNKNOWN)) {
        rbus_respond_error(req, 400, "size must be a u64 string (the size already verified)");
        return;
    }
    if (!json_is_object(prov) || proto_json_unknown_key(prov, NULL, provider_keys) != NULL ||
        parse_id(json_object_get(prov, "id"), pid) < 0 ||
        (paddr = json_string_value(json_object_get(prov, "addr"))) == NULL ||
        !ovl__addr_ok(paddr)) {
        rbus_respond_error(req, 400, "provider must be {\"id\":<64 hex>,\"addr\":\"HOST:PORT\"}");
        return;
    }
    if (cap_v != NULL && (!json_is_string(cap_v) || json_string_length(cap_v) == 0 ||
                          json_string_length(cap_v) > AUTH_MAX_TOKEN)) {
        rbus_respond_error(req, 400, "cap must be a capability token (1..4096 chars)");
        return;
    }
    if (memcmp(pid, s->id, OVL_ID_LEN) == 0) {
        rbus_respond_error(req, 400, "the provider is this node");
        return;
    }
    if (ovl_service_is_bad(s, pid)) {
        s->st.bad_refused++;
        s->st.fetches_failed++;
        met_counter_inc(s->m_fetch[FR_BAD]);
        rbus_respond_error_ex(req, 502, NULL, "bad_piece", 0,
                              "the provider sent a bad piece recently; not asked again");
        return;
    }
    if (s->n_fetches >= s->cfg.max_fetches) {
        s->st.fetches_busy++;
        rbus_respond_error_ex(req, 429, NULL, "busy", 100, "too many fetches pending");
        return;
    }
    if ((gs = gsess_find(s, pid)) == NULL) {
        tx_peer_session_t *ps = NULL;
        gsess_make_room(s);
        rc = tx_peer_dial(s->p, paddr, pid, &ps);
        if (rc < 0) {
            s->st.fetches_failed++;
            met_counter_inc(s->m_fetch[rc == RON_EINVAL ? FR_OTHER : FR_UNAVAIL]);
            if (rc == RON_EINVAL)
                rbus_respond_error(req, 400, "provider addr must be a numeric HOST:PORT");
            else
                rbus_respond_error_ex(req, 503, NULL, "peer_unavailable", 100, ron_strerror(rc));
            return;
        }
        gs = gsess_add(s, ps, pid, paddr, true);
    }
    f = ron_xcalloc(1, sizeof *f);
    f->svc = s;
    f->req = req;
    f->gs = gs;
    memcpy(f->addr, addr, STO_ADDR_LEN);
    f->offset = offset;
    f->length = length;
    if (cap_v != NULL) {
        f->cap_len = json_string_length(cap_v);
        f->cap = ron_xmalloc(f->cap_len);
        memcpy(f->cap, json_string_value(cap_v), f->cap_len);
    }
    f->known = known;
    f->deadline = now_ms(s) + s->cfg.fetch_timeout_ms;
    f->next = s->fetches;
    s->fetches = f;
    s->n_fetches++;
    gs->n_fetches++;
    gs->last_used = now_ms(s);
    if (gs->os != NULL)
        fetch_go(s, f);
    svc_arm(s);
}

static void
op_peers(ovl_service_t *s, rbus_req_t *req)
{
    json_t *o = json_object(), *arr = json_array();
    ovl_peer_t *known = ron_xmalloc(OVL_PEERS_MAX * sizeof *known);
    size_t n_known = ovl_node_peers(s->node, known, OVL_PEERS_MAX);

    free(known);
    for (gsess_t *gs = s->sessions; gs != NULL; gs = gs->next) {
        json_t *e;
        ovl_session_stats_t st = {0};
        const char *a = gs->addr;
        if (gs->os == NULL)
            continue;
        ovl_session_stats(gs->os, &st);
        if (ovl_session_peer_addr(gs->os)[0] != '\0')
            a = ovl_session_peer_addr(gs->os);
        e = json_object();
        json_object_set_new(e, "id", json_id(gs->id));
        json_object_set_new(e, "addr", json_string(a));
        json_object_set_new(e, "dialer", json_boolean(gs->dialer));
        json_object_set_new(e, "piece_bytes_in", json_u64(st.piece_bytes_recv));
        json_object_set_new(e, "piece_bytes_out", json_u64(st.piece_bytes_sent));
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "sessions", arr);
    json_object_set_new(o, "known", json_u64(n_known));
    answer_ok(req, o, NULL, 0);
}

static void
op_status(ovl_service_t *s, rbus_req_t *req)
{
    json_t *o = json_object();
    ovl_service_stats_t st;

    ovl_service_stats(s, &st);
    json_object_set_new(o, "id", json_id(s->id));
    json_object_set_new(o, "advertise", json_string(s->advertise));
    json_object_set_new(o, "listen", json_string(s->listen));
    json_object_set_new(o, "sessions", json_u64(st.sessions));
    answer_ok(req, o, NULL, 0);
}

static void
on_request(void *arg, rbus_req_t *req, const oap_frame_t *fr)
{
    ovl_service_t *s = arg;
    json_t *o = NULL, *opv;
    json_error_t jerr;
    const char *op, *bad;
    uint32_t jl;
    char msg[96];

    if (s->closing) {
        rbus_respond_error(req, 503, "overlay stopping");
        return;
    }
    if (fr->payload_len < 4) {
        rbus_respond_error(req, 400, "payload shorter than its 4-byte JSON length");
        return;
    }
    jl = (uint32_t)fr->payload[0] << 24 | (uint32_t)fr->payload[1] << 16 |
         (uint32_t)fr->payload[2] << 8 | fr->payload[3];
    if (jl > OVL_SVC_MAX_JSON || jl != fr->payload_len - 4) {
        rbus_respond_error(req, 400, "JSON length out of range (no raw bytes in requests)");
        return;
    }
    o = json_loadb((const char *)fr->payload + 4, jl, JSON_REJECT_DUPLICATES, &jerr);
    opv = json_object_get(o, "op");
    if (!json_is_object(o) || (op = json_string_value(opv)) == NULL) {
        rbus_respond_error(req, 400, "request must be a JSON object with a string op");
        goto out;
    }
    if (strcmp(op, "fetch") == 0) {
        op_fetch(s, req, o);
        goto out;
    }
    if (strcmp(op, "peers") != 0 && strcmp(op, "status") != 0) {
        rbus_respond_error(req, 400, "unknown op (fetch, peers, status)");
        goto out;
    }
    if ((bad = proto_json_unknown_key(o, "op", no_keys)) != NULL) {
        snprintf(msg, sizeof msg, "unknown field '%.40s'", bad);
        rbus_respond_error_ex(req, 400, NULL, "proto_json_unknown_key", 0, msg);
        goto out;
    }
    if (strcmp(op, "peers") == 0)
        op_peers(s, req);
    else
        op_status(s, req);
out:
    json_decref(o);
}

int
ovl_service_serve(ovl_service_t *s, rbus_t *bus)
{
    return rbus_handle(bus, OAP_APP_OVERLAY, on_request, s);
}

/* ---- life cycle ---- */

/* The advertise address: cfg's, else the bound one with 0.0.0.0 / :: as 127.0.0.1. */
static void
svc_advertise(ovl_service_t *s, const char *cfg_adv)
{
    const char *port;

    if (cfg_adv != NULL && cfg_adv[0] != '\0') {
        snprintf(s->advertise, sizeof s->advertise, "%s", cfg_adv);
        return;
    }
    if (s->listen[0] == '\0')
        return;
    port = strrchr(s->listen, ':');
    if (strncmp(s->listen, "0.0.0.0:", 8) == 0 || strncmp(s->listen, "[::]:", 5) == 0) {
        snprintf(s->advertise, sizeof s->advertise, "127.0.0.1%s", port);
        ron_warn("overlay: listening on %s, advertising %s: other machines cannot dial that; "
                 "set --advertise HOST:PORT",
                 s->listen, s->advertise);
        return;
    }
    snprintf(s->advertise, sizeof s->advertise, "%s", s->listen);
}

static void
svc_register_metrics(ovl_service_t *s)
{
    static const char *const fl[] = {"result"}, *const rl[] = {"reason"};
    static const met_desc_t fd = {MET_COUNTER,
                                  "overlay_fetches_total",
                                  "Bus fetches answered, by result.",
                                  fl,
                                  1,
                                  NULL,
                                  0,
                                  0};
    static const met_desc_t rd = {MET_COUNTER,
                                  "overlay_peer_rejects_total",
                                  "Peer connections refused or dropped by tx_peer, by reason.",
                                  rl,
                                  1,
                                  NULL,
                                  0,
                                  0};
    met_family_t *fam = NULL;

    s->reg = met_registry_new();
    met_counter_register(s->reg, "overlay_piece_bytes_sent_total",
                         "Piece frame bytes served to peers.", &s->m_sent);
    met_counter_register(s->reg, "overlay_piece_bytes_recv_total",
                         "Verified piece bytes received from peers.", &s->m_recv);
    met_counter_register(s->reg, "overlay_bad_pieces_total",
                         "Pieces or metadata from peers that did not verify.", &s->m_bad);
    met_gauge_register(s->reg, "overlay_sessions", "Peer sessions open (both directions).",
                       &s->m_sessions);
    met_gauge_register(s->reg, "overlay_peer_queued_bytes",
                       "Output bytes queued to peers now, all sessions together.", &s->m_queued);
    met_counter_register(s->reg, "overlay_peer_budget_waits_total",
                         "Sends held back because all sessions' queues reached the node's budget.",
                         &s->m_budget_waits);
    met_counter_register(s->reg, "overlay_peer_buffers_released_bytes_total",
                         "Buffer bytes idle peer sessions gave back.", &s->m_released);
    if (met_family_register(s->reg, &fd, &fam) == 0)
        for (size_t i = 0; i < 6; i++)
            s->m_fetch[i] = met_family_counter(fam, (const char *[]){fetch_results[i]});
    {
        static const char *const gl[] = {"reason"};
        static const char *const gr[3] = {"capability", "forbidden", "rate_limited"};
        static const met_desc_t gd = {MET_COUNTER,
                                      "overlay_gets_refused_total",
                                      "Peers' gets refused by the capability check, by reason.",
                                      gl,
                                      1,
                                      NULL,
                                      0,
                                      0};
        met_family_t *gf = NULL;
        if (met_family_register(s->reg, &gd, &gf) == 0)
            for (size_t i = 0; i < 3; i++)
                s->m_refused[i] = met_family_counter(gf, &gr[i]);
    }
    if (met_family_register(s->reg, &rd, &fam) == 0)
        for (size_t i = 0; i < SVC_N_REJ; i++)
            s->m_rej[i] =
                met_family_counter(fam, (const char *[]){tx_peer_reject_name((tx_peer_reject_t)i)});
}

int
ovl_service_new(uv_loop_t *loop, const ovl_service_config_t *cfg, ovl_service_t **out)
{
    ovl_service_t *s;
    tx_peer_config_t pc;
    tx_peer_callbacks_t cb;
    ovl_config_t oc = {0};
    int rc, fd = cfg->listen_fd;

    *out = NULL;
    if (cfg->keys == NULL || (cfg->advertise != NULL && strlen(cfg->advertise) > OVL_ADDR_MAX)) {
        rc = RON_EINVAL;
        goto fail_fd;
    }
    s = ron_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->cfg = *cfg;
    s->cfg.advertise = NULL;
    s->cfg.listen = NULL;
    if (s->cfg.max_sessions == 0)
        s->cfg.max_sessions = OVL_SVC_MAX_SESSIONS;
    if (s->cfg.max_fetches == 0)
        s->cfg.max_fetches = OVL_SVC_MAX_FETCHES;
    if (s->cfg.fetch_timeout_ms == 0)
        s->cfg.fetch_timeout_ms = OVL_SVC_FETCH_TIMEOUT_MS;
    if (s->cfg.idle_ms == 0)
        s->cfg.idle_ms = OVL_SVC_IDLE_MS;
    if (cfg->peer != NULL)
        pc = *cfg->peer;
    else
        tx_peer_config_default(&pc);
    if (pc.max_frame == 0) /* what a peer can make us buffer per session */
        pc.max_frame = OVL_SVC_MAX_FRAME;
    s->cfg.peer = NULL;
    cb = (tx_peer_callbacks_t){on_session, on_frame, on_writable, on_close, s};
    if ((rc = tx_peer_new(loop, cfg->keys, &pc, &cb, &s->p)) < 0) {
        free(s);
        goto fail_fd;
    }
    memcpy(s->id, tx_peer_node_id(s->p), OVL_ID_LEN);
    if (fd >= 0) {
        rc = tx_peer_listen_fd(s->p, fd, s->listen, sizeof s->listen);
        if (rc == RON_EINVAL)
            close(fd);
        fd = -1;
    } else if (cfg->listen != NULL && cfg->listen[0] != '\0') {
        rc = tx_peer_listen(s->p, cfg->listen, s->listen, sizeof s->listen);
    }
    if (rc < 0)
        goto fail_peer;
    svc_advertise(s, cfg->advertise);
    memcpy(oc.node_id, s->id, OVL_ID_LEN);
    oc.advertise = s->advertise[0] != '\0' ? s->advertise : NULL;
    oc.store = cfg->store;
    oc.ping_ms = cfg->ping_ms;
    oc.gossip_ms = cfg->gossip_ms;
    oc.authorize = svc_authorize;
    oc.auth_arg = s;
    if ((rc = ovl_node_new(&oc, &s->node)) < 0)
        goto fail_peer;
    (void)uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    svc_register_metrics(s);
    *out = s;
    return 0;
fail_peer:
    tx_peer_close(s->p, free, s); /* frees s once its handles are closed */
    return rc;
fail_fd:
    if (fd >= 0)
        close(fd);
    return rc;
}

const char *
ovl_service_advertise(const ovl_service_t *s)
{
    return s->advertise;
}

const char *
ovl_service_listen_addr(const ovl_service_t *s)
{
    return s->listen;
}

const uint8_t *
ovl_service_node_id(const ovl_service_t *s)
{
    return s->id;
}

ovl_node_t *
ovl_service_node(ovl_service_t *s)
{
    return s->node;
}

tx_peer_t *
ovl_service_peer(ovl_service_t *s)
{
    return s->p;
}

void
ovl_service_stats(const ovl_service_t *s, ovl_service_stats_t *out)
{
    ovl_session_stats_t acc = s->gone;
    uint64_t open = 0;

    for (const gsess_t *gs = s->sessions; gs != NULL; gs = gs->next) {
        ovl_session_stats_t st;
        if (gs->os == NULL)
            continue; /* still dialling */
        open++;
        ovl_session_stats(gs->os, &st);
        stats_add(&acc, &st);
    }
    *out = s->st;
    out->piece_bytes_sent = acc.piece_bytes_sent;
    out->piece_bytes_recv = acc.piece_bytes_recv;
    out->bad_pieces = acc.bad_pieces;
    out->sessions = open;
}

static void
counter_to(met_counter_t *c, uint64_t v, uint64_t *seen)
{
    if (c != NULL && v > *seen)
        met_counter_add(c, v - *seen);
    if (v > *seen)
        *seen = v;
}

size_t
ovl_service_metrics(ovl_service_t *s, char *buf, size_t cap)
{
    ovl_service_stats_t st;
    const tx_peer_stats_t *ps = tx_peer_stats(s->p);
    char *txt = NULL;
    size_t len = 0;

    ovl_service_stats(s, &st);
    counter_to(s->m_sent, st.piece_bytes_sent, &s->seen_sent);
    counter_to(s->m_recv, st.piece_bytes_recv, &s->seen_recv);
    counter_to(s->m_bad, st.bad_pieces, &s->seen_bad);
    met_gauge_set(s->m_sessions, (double)st.sessions);
    met_gauge_set(s->m_queued, (double)ps->queued);
    counter_to(s->m_budget_waits, ps->budget_waits, &s->seen_budget_waits);
    counter_to(s->m_released, ps->buffers_released, &s->seen_released);
    for (size_t i = 0; i < SVC_N_REJ; i++)
        counter_to(s->m_rej[i], ps->rejects[i], &s->seen_rej[i]);
    if (met_registry_render(s->reg, &txt, &len) < 0 || len > cap) {
        free(txt);
        return 0;
    }
    memcpy(buf, txt, len);
    free(txt);
    return len;
}

void
ovl_service_kick(ovl_service_t *s)
{
    for (gsess_t *gs = s->sessions; gs != NULL; gs = gs->next)
        if (gs->os != NULL)
            ovl_session_writable(gs->os);
}

static void
svc_finish(ovl_service_t *s)
{
    void (*cb)(void *arg) = s->close_cb;
    void *arg = s->close_arg;

    if (--s->pending_close > 0)
        return;
    ovl_node_free(s->node);
    met_registry_free(s->reg);
    free(s);
    if (cb != NULL)
        cb(arg);
}

static void
svc_peer_closed(void *arg)
{
    svc_finish(arg);
}

static void
svc_timer_closed(uv_handle_t *h)
{
    svc_finish(h->data);
}

void
ovl_service_close(ovl_service_t *s, void (*cb)(void *arg), void *arg)
{
    if (s == NULL || s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    while (s->fetches != NULL) {
        gfetch_t *f = s->fetches;
        if (f->ft != NULL)
            ovl_fetch_cancel(f->ft);
        f->ft = NULL;
        fetch_answer(s, f, RON_ESHUTDOWN);
    }
    s->pending_close = 2;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, svc_timer_closed);
    tx_peer_close(s->p, svc_peer_closed, s); /* on_close runs for every session */
}
