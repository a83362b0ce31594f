/*
 * ovl_session.c - overlay peer sessions and content transfer
 * (docs/protocol/overlay.md). A session is a state machine fed frames, link
 * writability and time; it never blocks on the peer. Provider side: each
 * transfer holds one prepared piece frame and sends it when the link and
 * the stream's credit allow, so a slow fetcher bounds what we queue to the
 * stream window. Fetcher side: the last piece comes first and binds the
 * size, every piece is checked against the address before on_piece sees it,
 * and the first one that fails ends the fetch as RON_EBADPIECE.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "ovl_internal.h"
#include "ron_err.h"
#include "ron_proto.h"
#include "ron_util.h"

struct ovl_node {
    ovl_config_t cfg;
    char advertise[OVL_ADDR_MAX + 1];
    ovl_peer_t *peers; /* OVL_PEERS_MAX slots */
    size_t n_peers;
    ovl_node_stats_t stats;
};

typedef struct ovl_xfer { /* provider side of one transfer */
    struct ovl_xfer *next;
    uint64_t corr_id;
    sto_reader_t *r;
    uint64_t size, npieces, first, count;
    uint64_t sent, total; /* pieces sent, pieces to send */
    bool cancelled;       /* the fetcher ended its direction early */
    bool ready;           /* buf holds the next piece's payload */
    bool sized;           /* the fetcher stated the size: no size proof, range in order */
    size_t buf_len;
    uint8_t *buf; /* OVL_PIECE_PAYLOAD_MAX */
} ovl_xfer_t;

enum { FETCH_META = 0, FETCH_PIECES, FETCH_DRAIN };

struct ovl_fetch {
    struct ovl_fetch *next;
    ovl_session_t *s;
    uint64_t corr_id;
    uint8_t addr[STO_ADDR_LEN];
    uint64_t offset, length;
    ovl_fetch_cb_t cb;
    int state;
    uint64_t size, npieces, first, count;
    uint64_t got, total; /* piece frames received, piece frames expected */
    uint64_t known;      /* the size the GET stated (OVL_SIZE_UNKNOWN: none) */
    uint8_t *cap;        /* the capability the GET carries (owned), or NULL; kept for a resend */
    size_t cap_len;
};

static void
fetch_free(ovl_fetch_t *ft)
{
    if (ft->cap != NULL)
        sodium_memzero(ft->cap, ft->cap_len);
    free(ft->cap);
    free(ft);
}

typedef struct { /* a control frame waiting for the link */
    uint16_t flags, code, app;
    uint64_t corr_id;
    uint8_t *payload;
    size_t len;
} ovl_ctrl_t;

struct ovl_session {
    ovl_node_t *n;
    const ovl_link_ops_t *ops;
    void *link;
    uint8_t peer_id[OVL_ID_LEN];
    char peer_addr[OVL_ADDR_MAX + 1];
    uint32_t max_frame;
    ovl_xfer_t *xfers;
    size_t n_xfers;
    ovl_fetch_t *fetches;
    uint64_t next_corr;
    ovl_ctrl_t ctrl[OVL_CTRL_QUEUE_MAX];
    size_t n_ctrl;
    bool paused;
    uint64_t ping_seq, next_ping, next_gossip;
    uint32_t outstanding; /* PINGs sent since the peer was last heard */
    bool goodbye_sent, goodbye_recv, link_closing, closed;
    bool no_sized; /* the peer refused a GET with "size" (an older peer): never send it again */
    ovl_session_stats_t st;
};

/* ---- node ---- */

bool
ovl__addr_ok(const char *addr)
{
    size_t i, n = strlen(addr);

    if (n == 0 || n > OVL_ADDR_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (addr[i] <= 0x20 || addr[i] >= 0x7f || addr[i] == '"' || addr[i] == '\\')
            return false;
    return true;
}

int
ovl_node_new(const ovl_config_t *cfg, ovl_node_t **n_out)
{
    ovl_node_t *n;

    if (cfg->advertise != NULL && !ovl__addr_ok(cfg->advertise))
        return RON_EINVAL;
    n = ron_xcalloc(1, sizeof(*n));
    n->cfg = *cfg;
    if (cfg->advertise != NULL)
        strcpy(n->advertise, cfg->advertise);
    n->cfg.advertise = NULL;
    if (n->cfg.ping_ms == 0)
        n->cfg.ping_ms = OVL_PING_MS_DEFAULT;
    if (n->cfg.dead_missed == 0)
        n->cfg.dead_missed = OVL_DEAD_MISSED_DEFAULT;
    if (n->cfg.gossip_ms == 0)
        n->cfg.gossip_ms = OVL_GOSSIP_MS_DEFAULT;
    if (n->cfg.max_transfers == 0)
        n->cfg.max_transfers = OVL_MAX_TRANSFERS_DEFAULT;
    n->peers = ron_xcalloc(OVL_PEERS_MAX, sizeof(*n->peers));
    *n_out = n;
    return 0;
}

void
ovl_node_free(ovl_node_t *n)
{
    if (n == NULL)
        return;
    free(n->peers);
    free(n);
}

void
ovl_node_stats(const ovl_node_t *n, ovl_node_stats_t *out)
{
    *out = n->stats;
}

int
ovl_node_peer_learn(ovl_node_t *n, const uint8_t id[static OVL_ID_LEN], const char *addr,
                    uint64_t ts)
{
    size_t i, oldest = 0;

    if (!ovl__addr_ok(addr))
        return RON_EINVAL;
    if (memcmp(id, n->cfg.node_id, OVL_ID_LEN) == 0)
        return 0;
    for (i = 0; i < n->n_peers; i++) {
        if (memcmp(n->peers[i].id, id, OVL_ID_LEN) == 0) {
            if (ts <= n->peers[i].ts)
                return 0;
            strcpy(n->peers[i].addr, addr);
            n->peers[i].ts = ts;
            return 1;
        }
        if (n->peers[i].ts < n->peers[oldest].ts)
            oldest = i;
    }
    if (n->n_peers < OVL_PEERS_MAX) {
        i = n->n_peers++;
    } else {
        if (ts <= n->peers[oldest].ts)
            return 0;
        i = oldest;
    }
    memcpy(n->peers[i].id, id, OVL_ID_LEN);
    strcpy(n->peers[i].addr, addr);
    n->peers[i].ts = ts;
    return 1;
}

static int
peer_newer(const void *a, const void *b)
{
    const ovl_peer_t *x = a, *y = b;

    return x->ts > y->ts ? -1 : x->ts < y->ts ? 1 : 0;
}

size_t
ovl_node_peers(const ovl_node_t *n, ovl_peer_t *out, size_t cap)
{
    ovl_peer_t *all = ron_xcalloc(n->n_peers + 1, sizeof(*all));
    size_t k = n->n_peers < cap ? n->n_peers : cap;

    memcpy(all, n->peers, n->n_peers * sizeof(*all));
    qsort(all, n->n_peers, sizeof(*all), peer_newer);
    memcpy(out, all, k * sizeof(*out));
    free(all);
    return k;
}

/* ---- sending ---- */

static void
sess_fail(ovl_session_t *s, int rc)
{
    (void)rc;
    if (s->link_closing || s->closed)
        return;
    s->link_closing = true;
    s->ops->close(s->link);
}

static int
sess_raw_cap(ovl_session_t *s, uint16_t flags, uint16_t code, uint16_t app, uint64_t corr_id,
             const uint8_t *cap, size_t cap_len, const uint8_t *payload, size_t len)
{
    oap_frame_t f;
    int rc;

    memset(&f, 0, sizeof(f));
    f.cap = cap;
    f.cap_len = (uint16_t)cap_len;
    f.flags = flags;
    f.code = code;
    f.app_proto_id = app;
    f.corr_id = corr_id;
    f.payload = payload;
    f.payload_len = len;
    rc = s->ops->send(s->link, &f);
    if (rc == 0)
        s->st.frames_out++;
    else if (rc == RON_EAGAIN)
        s->st.send_stalls++;
    return rc;
}

static int
sess_raw(ovl_session_t *s, uint16_t flags, uint16_t code, uint16_t app, uint64_t corr_id,
         const uint8_t *payload, size_t len)
{
    return sess_raw_cap(s, flags, code, app, corr_id, NULL, 0, payload, len);
}

static void
ctrl_flush(ovl_session_t *s)
{
    size_t i = 0;

    while (i < s->n_ctrl && !s->link_closing && !s->closed) {
        ovl_ctrl_t *c = &s->ctrl[i];
        int rc = sess_raw(s, c->flags, c->code, c->app, c->corr_id, c->payload, c->len);
        if (rc == RON_EAGAIN)
            break;
        free(c->payload);
        i++;
        if (rc < 0) {
            sess_fail(s, rc);
            break;
        }
    }
    memmove(s->ctrl, s->ctrl + i, (s->n_ctrl - i) * sizeof(s->ctrl[0]));
    s->n_ctrl -= i;
    if (s->n_ctrl == 0 && s->paused && !s->link_closing) {
        s->paused = false;
        s->ops->pause(s->link, false);
    }
}

/* Send a control frame now, or queue it behind others; a full queue drops the peer. */
static int
sess_ctrl(ovl_session_t *s, uint16_t flags, uint16_t code, uint16_t app, uint64_t corr_id,
          const void *payload, size_t len)
{
    ovl_ctrl_t *c;
    int rc = RON_EAGAIN;

    if (s->link_closing || s->closed)
        return RON_ECLOSED;
    if (s->n_ctrl == 0) {
        rc = sess_raw(s, flags, code, app, corr_id, payload, len);
        if (rc != RON_EAGAIN) {
            if (rc < 0)
                sess_fail(s, rc);
            return rc;
        }
    }
    if (s->n_ctrl >= OVL_CTRL_QUEUE_MAX) {
        s->n->stats.slow_peers++;
        sess_fail(s, RON_EFLOOD);
        return RON_EFLOOD;
    }
    c = &s->ctrl[s->n_ctrl++];
    c->flags = flags;
    c->code = code;
    c->app = app;
    c->corr_id = corr_id;
    c->len = len;
    c->payload = ron_xmalloc(len > 0 ? len : 1);
    if (len > 0)
        memcpy(c->payload, payload, len);
    if (s->n_ctrl > s->st.ctrl_queued_max)
        s->st.ctrl_queued_max = s->n_ctrl;
    if (!s->paused) {
        s->paused = true;
        s->ops->pause(s->link, true);
    }
    return 0;
}

/* An error envelope as the RESP|END answer on stream corr_id; reason
 * (may be NULL) and retry_after_ms (0: none) are optional. */
static void
sess_error_ex(ovl_session_t *s, uint64_t corr_id, uint16_t status, const char *slug,
              const char *reason, uint32_t retry_after_ms, const char *message)
{
    proto_error_t e;
    char json[PROTO_MAX_ERROR_JSON];
    ssize_t n;

    proto_error_init(&e, status, corr_id, message);
    if (slug != NULL)
        snprintf(e.code, sizeof(e.code), "%s", slug);
    if (reason != NULL)
        snprintf(e.reason, sizeof(e.reason), "%s", reason);
    e.has_retry_after = retry_after_ms > 0;
    e.retry_after_ms = retry_after_ms;
    n = proto_error_write(&e, json, sizeof(json));
    if (n < 0 && slug != NULL) { /* a slug outside the spec table: the status's own */
        snprintf(e.code, sizeof(e.code), "%s", proto_status_slug(status));
        n = proto_error_write(&e, json, sizeof(json));
    }
    if (n < 0)
        return;
    sess_ctrl(s, OAP_F_RESP | OAP_F_END, status, OAP_APP_OVERLAY, corr_id, json, (size_t)n);
}

static void
sess_error(ovl_session_t *s, uint64_t corr_id, uint16_t status, const char *slug,
           const char *message)
{
    sess_error_ex(s, corr_id, status, slug, NULL, 0, message);
}

static void
sess_gossip(ovl_session_t *s)
{
    ovl_peer_t list[OVL_GOSSIP_MAX], recent[OVL_GOSSIP_MAX];
    char json[OVL_MSG_MAX];
    size_t n = 0, k, i, len;

    if (s->n->advertise[0] != '\0') {
        memcpy(list[0].id, s->n->cfg.node_id, OVL_ID_LEN);
        strcpy(list[0].addr, s->n->advertise);
        list[0].ts = (uint64_t)time(NULL);
        n = 1;
    }
    k = ovl_node_peers(s->n, recent, OVL_GOSSIP_MAX);
    for (i = 0; i < k && n < OVL_GOSSIP_MAX; i++)
        if (memcmp(recent[i].id, s->peer_id, OVL_ID_LEN) != 0)
            list[n++] = recent[i];
    len = ovl__msg_peers(json, sizeof(json), list, n);
    if (len > 0 && sess_ctrl(s, OAP_F_EVENT, 0, OAP_APP_OVERLAY, 0, json, len) == 0)
        s->st.gossip_sent++;
}

/* Close the link once a GOODBYE was exchanged and nothing is in flight. */
static void
sess_check_drain(ovl_session_t *s)
{
    if ((s->goodbye_sent || s->goodbye_recv) && s->xfers == NULL && s->fetches == NULL &&
        s->n_ctrl == 0)
        sess_fail(s, 0);
}

/* ---- provider ---- */

static void
xfer_free(ovl_xfer_t *x)
{
    sto_reader_close(x->r);
    free(x->buf);
    free(x);
}

static void
xfer_unlink(ovl_session_t *s, ovl_xfer_t *x)
{
    ovl_xfer_t **pp;

    for (pp = &s->xfers; *pp != NULL; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            s->n_xfers--;
            break;
        }
    xfer_free(x);
}

/* The piece sent k-th: the last piece first (it binds the size), then the
 * range in order; when the range holds the last piece, total = count and k
 * stops before reaching it again. A GET that stated the size the fetcher
 * verified earlier (sized) gets the range alone, in order. */
static uint64_t
xfer_piece(uint64_t npieces, uint64_t first, uint64_t k, bool sized)
{
    if (sized)
        return first + k;
    return k == 0 ? npieces - 1 : first + k - 1;
}

static int
xfer_prepare(ovl_xfer_t *x)
{
    uint64_t idx = xfer_piece(x->npieces, x->first, x->sent, x->sized);
    size_t plen = sto_tree_piece_len(x->size, idx), proof_len = 0;
    ssize_t got;
    int rc;

    rc = sto_reader_proof(x->r, idx, x->buf + OVL_PIECE_HDR_LEN, STO_TREE_MAX_PROOF, &proof_len);
    if (rc < 0)
        return rc;
    ovl__piece_hdr(x->buf, idx, proof_len);
    if (plen > 0) {
        got = sto_reader_read(x->r, idx * STO_PIECE_LEN, x->buf + OVL_PIECE_HDR_LEN + proof_len,
                              plen);
        if (got < 0)
            return (int)got;
        if ((size_t)got != plen)
            return RON_EDIGEST;
    }
    x->buf_len = OVL_PIECE_HDR_LEN + proof_len + plen;
    x->ready = true;
    return 0;
}

/* Send what one transfer can; returns 1 if it progressed, 0 if blocked, -1 if it ended. */
static int
xfer_step(ovl_session_t *s, ovl_xfer_t *x)
{
    int rc;

    if (x->cancelled) {
        rc = sess_raw(s, OAP_F_RESP | OAP_F_END, 0, OAP_APP_OVERLAY, x->corr_id, NULL, 0);
        if (rc == RON_EAGAIN)
            return 0;
        xfer_unlink(s, x);
        return -1;
    }
    if (!x->ready && (rc = xfer_prepare(x)) < 0) {
        sess_error(s, x->corr_id, 409, "bad_digest", "provider's copy does not verify");
        xfer_unlink(s, x);
        return -1;
    }
    rc = sess_raw(s, OAP_F_RESP | (x->sent + 1 == x->total ? OAP_F_END : 0), 0, OAP_APP_OVERLAY,
                  x->corr_id, x->buf, x->buf_len);
    if (rc == RON_EAGAIN)
        return 0;
    if (rc < 0) {
        sess_fail(s, rc);
        return 0;
    }
    x->ready = false;
    s->st.pieces_sent++;
    s->st.piece_bytes_sent += x->buf_len;
    if (++x->sent == x->total) {
        xfer_unlink(s, x);
        return -1;
    }
    return 1;
}

static void
sess_pump(ovl_session_t *s)
{
    bool progress = true;
    unsigned rounds = 0;

    while (progress && s->n_ctrl == 0 && !s->link_closing && !s->closed && rounds++ < 4096) {
        ovl_xfer_t *x = s->xfers, *next;
        progress = false;
        for (; x != NULL && s->n_ctrl == 0 && !s->link_closing; x = next) {
            next = x->next;
            if (xfer_step(s, x) != 0)
                progress = true;
        }
    }
}

/* Pieces covering [offset, offset + length) of an object of size bytes. */
static int
range_pieces(uint64_t size, uint64_t offset, uint64_t length, uint64_t *first, uint64_t *count)
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
    end = (length == OVL_LEN_TO_END || length > size - offset) ? size : offset + length;
    *first = offset / STO_PIECE_LEN;
    *count = (end - 1) / STO_PIECE_LEN - *first + 1;
    return 0;
}

static void
provider_start(ovl_session_t *s, const oap_frame_t *f)
{
    ovl_msg_t *m = ron_xmalloc(sizeof(*m));
    ovl_xfer_t *x;
    sto_reader_t *r = NULL;
    uint64_t first = 0, count = 0;
    char json[256];
    size_t len;
    int rc;

    if (s->goodbye_sent || s->goodbye_recv) {
        sess_error(s, f->corr_id, 503, NULL, "session closing");
        goto out;
    }
    if (ovl_msg_parse(f->payload, f->payload_len, m) < 0 || m->type != OVL_MSG_GET) {
        sess_error(s, f->corr_id, 400, NULL, "malformed get");
        goto out;
    }
    if (s->n_xfers >= s->n->cfg.max_transfers) {
        s->st.refused_busy++;
        sess_error(s, f->corr_id, 429, NULL, "too many transfers");
        goto out;
    }
    if (s->max_frame < OVL_MIN_MAX_FRAME) {
        sess_error(s, f->corr_id, 413, NULL, "max_frame too small for a piece frame");
        goto out;
    }
    if (s->n->cfg.authorize != NULL) {
        ovl_deny_t d = {0};
        if (s->n->cfg.authorize(s->n->cfg.auth_arg, s->link, m->addr, f->cap, f->cap_len, &d) < 0) {
            s->st.refused_auth++;
            sess_error_ex(s, f->corr_id, d.status != 0 ? d.status : 403, d.slug, d.reason,
                          d.retry_after_ms, d.message != NULL ? d.message : "refused");
            goto out;
        }
    }
    rc = s->n->cfg.store != NULL ? sto_reader_open(s->n->cfg.store, m->addr, &r) : RON_ENOTFOUND;
    if (rc == RON_ENOTFOUND) {
        s->st.not_found++;
        sess_error(s, f->corr_id, 404, NULL, "object not held here");
        goto out;
    }
    if (rc < 0) {
        sess_error(s, f->corr_id, rc == RON_EDIGEST ? 409 : 500,
                   rc == RON_EDIGEST ? "bad_digest" : NULL, "provider cannot read the object");
        goto out;
    }
    if (range_pieces(sto_reader_size(r), m->offset, m->length, &first, &count) < 0) {
        sess_error(s, f->corr_id, 416, NULL, "range outside the object");
        goto out;
    }
    x = ron_xcalloc(1, sizeof(*x));
    x->corr_id = f->corr_id;
    x->r = r;
    r = NULL;
    x->size = sto_reader_size(x->r);
    x->npieces = sto_tree_pieces(x->size);
    x->first = first;
    x->count = count;
    /* a stated size that is not ours is not trusted: the size proof goes out
     * as usual and the fetcher, which expects none, refuses the answer */
    x->sized = m->known == x->size;
    if (x->sized)
        s->st.sized_served++;
    x->total = (x->sized || x->npieces - 1 < first + count) ? count : count + 1;
    x->buf = ron_xmalloc(OVL_PIECE_PAYLOAD_MAX);
    x->next = s->xfers;
    s->xfers = x;
    s->n_xfers++;
    s->st.served++;
    len = ovl__msg_meta(json, sizeof(json), x->size, first, count);
    sess_ctrl(s, OAP_F_RESP, 200, OAP_APP_OVERLAY, f->corr_id, json, len);
    sess_pump(s);
out:
    sto_reader_close(r);
    free(m);
}

static void
provider_req(ovl_session_t *s, const oap_frame_t *f)
{
    ovl_xfer_t *x;

    if (f->flags & OAP_F_START) {
        provider_start(s, f);
        return;
    }
    if (!(f->flags & OAP_F_END))
        return; /* the request direction carries no data in this protocol */
    for (x = s->xfers; x != NULL; x = x->next)
        if (x->corr_id == f->corr_id) {
            x->cancelled = true; /* the fetcher gave up: end our direction */
            sess_pump(s);
            return;
        }
}

/* ---- fetcher ---- */

static void
fetch_unlink(ovl_session_t *s, ovl_fetch_t *ft)
{
    ovl_fetch_t **pp;

    for (pp = &s->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == ft) {
            *pp = ft->next;
            return;
        }
}

/* End the fetch for its owner; a stream still open on the peer's side drains first. */
static void
fetch_end(ovl_session_t *s, ovl_fetch_t *ft, int rc, bool resp_ended)
{
    ovl_fetch_cb_t cb = ft->cb;

    if (ft->state != FETCH_DRAIN) {
        if (rc == 0)
            s->st.fetches_ok++;
        else
            s->st.fetches_failed++;
        sess_ctrl(s, OAP_F_REQ | OAP_F_END, 0, OAP_APP_OVERLAY, ft->corr_id, NULL, 0);
    }
    if (resp_ended) {
        fetch_unlink(s, ft);
        fetch_free(ft);
    } else {
        ft->state = FETCH_DRAIN;
    }
    if (cb.on_done != NULL)
        cb.on_done(cb.arg, rc);
}

static int
status_rc(uint16_t code)
{
    switch (code) {
    case 404:
        return RON_ENOTFOUND;
    case 416:
        return RON_ERANGE;
    case 409:
        return RON_EDIGEST; /* the provider's own copy failed its check */
    case 429:
        return RON_EBUSY;
    case 401:
        return RON_ECAPNEEDED; /* the provider wants a (valid) capability */
    case 403:
        return RON_ECAPDENY;
    default:
        return RON_EPEERERR;
    }
}

/* Verify and deliver one piece frame; returns 0, OVL_PIECE_HOLD, or a negative code. */
static int
fetch_piece(ovl_session_t *s, ovl_fetch_t *ft, const oap_frame_t *f)
{
    uint64_t idx, want;
    const uint8_t *proof, *bytes;
    uint8_t cv[STO_TREE_HASH_LEN];
    size_t proof_len, len;
    int rc;

    if (ovl_piece_parse(f->payload, f->payload_len, &idx, &proof, &proof_len, &bytes, &len) < 0)
        return RON_EBADPIECE;
    want = xfer_piece(ft->npieces, ft->first, ft->got, ft->known != OVL_SIZE_UNKNOWN);
    if (idx != want)
        return RON_EBADPIECE;
    /* One BLAKE3 pass: the first frame is the last piece, so this is
     * sto_tree_size_verify for it (which binds the size), and the proof check
     * of every later piece; the CV it computed goes to on_piece_cv. A sized
     * fetch verified the size before (the META matched it): every piece is
     * checked under it, the last one too when the range holds it. */
    rc = sto_tree_proof_verify_cv(ft->addr, ft->size, idx, bytes, len, proof, proof_len, cv);
    if (rc < 0)
        return RON_EBADPIECE;
    ft->got++;
    s->st.pieces_recv++;
    s->st.piece_bytes_recv += len;
    if (ft->cb.on_record_cv != NULL &&
        (rc = ft->cb.on_record_cv(ft->cb.arg, idx, ft->size, f->payload, f->payload_len, cv)) < 0)
        return rc;
    if (ft->cb.on_record_cv == NULL && ft->cb.on_record != NULL &&
        (rc = ft->cb.on_record(ft->cb.arg, idx, ft->size, f->payload, f->payload_len)) < 0)
        return rc;
    if (idx < ft->first || idx >= ft->first + ft->count)
        return 0; /* the size proof of a range that ends before the last piece */
    if (ft->cb.on_piece_cv != NULL)
        return ft->cb.on_piece_cv(ft->cb.arg, idx, ft->size, bytes, len, cv);
    if (ft->cb.on_piece == NULL)
        return 0;
    return ft->cb.on_piece(ft->cb.arg, idx, ft->size, bytes, len);
}

/* A peer that answered 400 to a GET with "size" predates the field: ask it
 * again without, on a new stream, and never send the field to it again. */
static void
fetch_resend_unsized(ovl_session_t *s, ovl_fetch_t *ft)
{
    uint64_t old = ft->corr_id;
    char json[256];
    size_t len;
    int rc;

    s->no_sized = true;
    s->st.sized_refused++;
    sess_ctrl(s, OAP_F_REQ | OAP_F_END, 0, OAP_APP_OVERLAY, old, NULL, 0);
    ft->known = OVL_SIZE_UNKNOWN;
    ft->corr_id = ++s->next_corr;
    len = ovl__msg_get(json, sizeof(json), ft->addr, ft->offset, ft->length, OVL_SIZE_UNKNOWN);
    rc = sess_raw_cap(s, OAP_F_REQ | OAP_F_START, 0, OAP_APP_OVERLAY, ft->corr_id, ft->cap,
                      ft->cap_len, (const uint8_t *)json, len);
    if (rc < 0) {
        s->st.fetches_failed++;
        ft->state = FETCH_DRAIN; /* the old stream is closed both ways: no REQ|END again */
        fetch_end(s, ft, rc == RON_EAGAIN ? RON_EBUSY : rc, true);
    }
}

static void
fetcher_resp(ovl_session_t *s, const oap_frame_t *f)
{
    ovl_fetch_t *ft;
    bool end = (f->flags & OAP_F_END) != 0;
    uint32_t consumed = 1;
    int rc = 0;

    for (ft = s->fetches; ft != NULL; ft = ft->next)
        if (ft->corr_id == f->corr_id)
            break;
    if (ft == NULL) {
        s->ops->consume(s->link, f->corr_id, true, 1);
        return;
    }
    if (ft->state == FETCH_DRAIN) {
        if (end) {
            fetch_unlink(s, ft);
            fetch_free(ft);
        } else {
            s->ops->consume(s->link, f->corr_id, true, 1);
        }
        return;
    }
    if (ft->state == FETCH_META) {
        ovl_msg_t *m;
        if (f->code == 400 && end && ft->known != OVL_SIZE_UNKNOWN) {
            fetch_resend_unsized(s, ft);
            return;
        }
        if (f->code != 200) {
            fetch_end(s, ft, status_rc(f->code), end);
            return;
        }
        m = ron_xmalloc(sizeof(*m));
        rc = ovl_msg_parse(f->payload, f->payload_len, m);
        if (rc == 0 && m->type == OVL_MSG_META && !end) {
            uint64_t first = 0, count = 0;
            ft->size = m->size;
            ft->npieces = sto_tree_pieces(m->size);
            if (range_pieces(m->size, ft->offset, ft->length, &first, &count) < 0 ||
                first != m->first || count != m->count)
                rc = RON_EBADPIECE;
            if (ft->known != OVL_SIZE_UNKNOWN && m->size != ft->known)
                rc = RON_EBADPIECE; /* we verified the size: another one is a lie */
            ft->first = first;
            ft->count = count;
            ft->total = (ft->known != OVL_SIZE_UNKNOWN || ft->npieces - 1 < first + count)
                            ? count
                            : count + 1;
        } else {
            rc = RON_EBADPIECE;
        }
        free(m);
        if (rc < 0) {
            s->st.bad_pieces++;
            s->n->stats.bad_providers++;
            fetch_end(s, ft, RON_EBADPIECE, end);
            return;
        }
        ft->state = FETCH_PIECES;
        s->ops->consume(s->link, f->corr_id, true, 1);
        return;
    }
    if (f->code != 0 && f->code != 200) {
        fetch_end(s, ft, status_rc(f->code), end);
        return;
    }
    rc = fetch_piece(s, ft, f);
    if (rc == RON_EBADPIECE) {
        s->st.bad_pieces++;
        s->n->stats.bad_providers++;
    }
    if (rc < 0) {
        fetch_end(s, ft, rc, end);
        if (!end)
            s->ops->consume(s->link, f->corr_id, true, 1);
        return;
    }
    if (rc == OVL_PIECE_HOLD)
        consumed = 0;
    if (ft->got == ft->total) {
        fetch_end(s, ft, end ? 0 : RON_EBADPIECE, end);
        if (!end) {
            s->st.bad_pieces++;
            s->n->stats.bad_providers++;
            s->ops->consume(s->link, f->corr_id, true, 1);
        }
        return;
    }
    if (end) {
        s->st.bad_pieces++;
        s->n->stats.bad_providers++;
        fetch_end(s, ft, RON_EBADPIECE, true); /* ended before the range was complete */
        return;
    }
    if (consumed > 0)
        s->ops->consume(s->link, f->corr_id, true, consumed);
}

int
ovl_fetch_start(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                uint64_t length, const ovl_fetch_cb_t *cb, ovl_fetch_t **f_out)
{
    return ovl_fetch_start_full(s, addr, offset, length, OVL_SIZE_UNKNOWN, NULL, 0, cb, f_out);
}

int
ovl_fetch_start_cap(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                    uint64_t length, const uint8_t *cap, size_t cap_len, const ovl_fetch_cb_t *cb,
                    ovl_fetch_t **f_out)
{
    return ovl_fetch_start_full(s, addr, offset, length, OVL_SIZE_UNKNOWN, cap, cap_len, cb,
                                f_out);
}

int
ovl_fetch_start_sized(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                      uint64_t length, uint64_t known, const ovl_fetch_cb_t *cb,
                      ovl_fetch_t **f_out)
{
    return ovl_fetch_start_full(s, addr, offset, length, known, NULL, 0, cb, f_out);
}

int
ovl_fetch_start_full(ovl_session_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                     uint64_t length, uint64_t known, const uint8_t *cap, size_t cap_len,
                     const ovl_fetch_cb_t *cb, ovl_fetch_t **f_out)
{
    ovl_fetch_t *ft;
    char json[256];
    size_t len;
    int rc;

    if (length == 0 || cap_len > OAP_MAX_CAP)
        return RON_EINVAL;
    if (s->closed || s->link_closing || s->goodbye_sent || s->goodbye_recv)
        return RON_ECLOSED;
    if (s->max_frame < OVL_MIN_MAX_FRAME)
        return RON_EINVAL;
    ft = ron_xcalloc(1, sizeof(*ft));
    ft->s = s;
    ft->corr_id = ++s->next_corr;
    memcpy(ft->addr, addr, STO_ADDR_LEN);
    ft->offset = offset;
    ft->length = length;
    ft->known = s->no_sized ? OVL_SIZE_UNKNOWN : known;
    ft->cb = *cb;
    if (cap_len > 0) {
        ft->cap = ron_xmalloc(cap_len);
        memcpy(ft->cap, cap, cap_len);
        ft->cap_len = cap_len;
    }
    len = ovl__msg_get(json, sizeof(json), addr, offset, length, ft->known);
    rc = sess_raw_cap(s, OAP_F_REQ | OAP_F_START, 0, OAP_APP_OVERLAY, ft->corr_id, ft->cap,
                      ft->cap_len, (const uint8_t *)json, len);
    if (rc < 0) {
        fetch_free(ft);
        return rc == RON_EAGAIN ? RON_EBUSY : rc;
    }
    ft->next = s->fetches;
    s->fetches = ft;
    if (f_out != NULL)
        *f_out = ft;
    return 0;
}

void
ovl_fetch_release(ovl_fetch_t *f, uint32_t n)
{
    if (n > 0 && !f->s->closed)
        f->s->ops->consume(f->s->link, f->corr_id, true, n);
}

void
ovl_fetch_cancel(ovl_fetch_t *f)
{
    ovl_session_t *s = f->s;

    if (f->state == FETCH_DRAIN)
        return;
    memset(&f->cb, 0, sizeof f->cb);
    fetch_end(s, f, RON_ECLOSED, false); /* no callback left to hear it */
}

/* ---- sessions ---- */

int
ovl_session_new(ovl_node_t *n, const ovl_link_ops_t *ops, void *link,
                const uint8_t peer_id[static OVL_ID_LEN], uint32_t max_frame, uint64_t now_ms,
                ovl_session_t **s_out)
{
    ovl_session_t *s;

    if (ops == NULL || ops->send == NULL || ops->consume == NULL || ops->pause == NULL ||
        ops->close == NULL)
        return RON_EINVAL;
    s = ron_xcalloc(1, sizeof(*s));
    s->n = n;
    s->ops = ops;
    s->link = link;
    memcpy(s->peer_id, peer_id, OVL_ID_LEN);
    s->max_frame = max_frame;
    s->next_ping = now_ms + n->cfg.ping_ms;
    s->next_gossip = now_ms + n->cfg.gossip_ms;
    n->stats.sessions++;
    *s_out = s;
    sess_gossip(s);
    return 0;
}

static void
sess_learn(ovl_session_t *s, const ovl_msg_t *m)
{
    uint64_t now = (uint64_t)time(NULL);
    size_t i;

    s->st.gossip_recv++;
    for (i = 0; i < m->n_peers; i++) {
        const ovl_peer_t *p = &m->peers[i];
        if (p->ts > now + OVL_GOSSIP_FUTURE_S || !ovl__addr_ok(p->addr)) {
            s->n->stats.gossip_dropped++;
            continue;
        }
        if (memcmp(p->id, s->peer_id, OVL_ID_LEN) == 0)
            strcpy(s->peer_addr, p->addr);
        if (ovl_node_peer_learn(s->n, p->id, p->addr, p->ts) == 1)
            s->n->stats.gossip_learned++;
    }
}

static int
sess_control(ovl_session_t *s, const oap_frame_t *f)
{
    ovl_msg_t *m = ron_xmalloc(sizeof(*m));
    char json[128];
    int rc;

    rc = ovl_msg_parse(f->payload, f->payload_len, m);
    if (rc < 0 || f->flags != OAP_F_EVENT) {
        rc = RON_EPROTO;
        goto out;
    }
    switch (m->type) {
    case OVL_MSG_PING:
        sess_ctrl(s, OAP_F_EVENT, 0, OAP_APP_CONTROL, 0, json,
                  ovl__msg_seq(json, sizeof(json), true, m->seq));
        break;
    case OVL_MSG_PONG:
        s->st.pongs_recv++;
        break;
    case OVL_MSG_GOODBYE:
        s->goodbye_recv = true;
        break;
    default:
        rc = RON_EPROTO;
    }
out:
    free(m);
    return rc;
}

int
ovl_session_recv(ovl_session_t *s, const oap_frame_t *f, uint64_t now_ms)
{
    int rc = 0;

    (void)now_ms;
    if (s->closed || s->link_closing)
        return RON_ECLOSED;
    s->st.frames_in++;
    s->outstanding = 0;
    if (f->app_proto_id == OAP_APP_CONTROL) {
        rc = sess_control(s, f);
    } else if (f->app_proto_id != OAP_APP_OVERLAY) {
        if (f->flags & OAP_F_START)
            sess_error(s, f->corr_id, 400, NULL, "only app_proto_id 4 is served on peer links");
        if (f->flags & (OAP_F_REQ | OAP_F_RESP))
            s->ops->consume(s->link, f->corr_id, (f->flags & OAP_F_RESP) != 0, 1);
    } else if (f->flags == OAP_F_EVENT) {
        ovl_msg_t *m = ron_xmalloc(sizeof(*m));
        if (ovl_msg_parse(f->payload, f->payload_len, m) == 0 && m->type == OVL_MSG_PEERS)
            sess_learn(s, m);
        else
            s->n->stats.gossip_dropped++;
        free(m);
    } else if (f->flags & OAP_F_REQ) {
        provider_req(s, f);
        s->ops->consume(s->link, f->corr_id, false, 1);
    } else if (f->flags & OAP_F_RESP) {
        fetcher_resp(s, f);
    } else {
        rc = RON_EPROTO;
    }
    if (rc < 0) {
        sess_fail(s, rc);
        return rc;
    }
    sess_check_drain(s);
    return 0;
}

void
ovl_session_writable(ovl_session_t *s)
{
    if (s->closed || s->link_closing)
        return;
    ctrl_flush(s);
    sess_pump(s);
    sess_check_drain(s);
}

int64_t
ovl_session_tick(ovl_session_t *s, uint64_t now_ms)
{
    char json[128];
    uint64_t next;

    if (s->closed || s->link_closing)
        return RON_ECLOSED;
    if (now_ms >= s->next_ping) {
        if (s->outstanding >= s->n->cfg.dead_missed) {
            s->n->stats.dead_peers++;
            sess_fail(s, RON_ETIMEOUT);
            return RON_ETIMEOUT;
        }
        if (s->outstanding > 0)
            s->st.pings_missed++;
        s->outstanding++;
        s->st.pings_sent++;
        sess_ctrl(s, OAP_F_EVENT, 0, OAP_APP_CONTROL, 0, json,
                  ovl__msg_seq(json, sizeof(json), false, ++s->ping_seq));
        s->next_ping = now_ms + s->n->cfg.ping_ms;
    }
    if (now_ms >= s->next_gossip) {
        sess_gossip(s);
        s->next_gossip = now_ms + s->n->cfg.gossip_ms;
    }
    if (s->link_closing)
        return RON_ECLOSED;
    next = s->next_ping < s->next_gossip ? s->next_ping : s->next_gossip;
    return (int64_t)(next - now_ms);
}

void
ovl_session_goodbye(ovl_session_t *s, const char *reason)
{
    char json[OVL_REASON_MAX * 6 + 64];
    char r[OVL_REASON_MAX + 1];

    if (s->closed || s->link_closing || s->goodbye_sent)
        return;
    snprintf(r, sizeof(r), "%s", reason != NULL ? reason : "");
    s->goodbye_sent = true;
    sess_ctrl(s, OAP_F_EVENT, 0, OAP_APP_CONTROL, 0, json, ovl__msg_goodbye(json, sizeof(json), r));
    sess_check_drain(s);
}

void
ovl_session_closed(ovl_session_t *s, int reason)
{
    size_t i;

    if (s->closed)
        return;
    s->closed = true;
    while (s->fetches != NULL) {
        ovl_fetch_t *ft = s->fetches;
        ovl_fetch_cb_t cb = ft->cb;
        bool live = ft->state != FETCH_DRAIN;
        s->fetches = ft->next;
        fetch_free(ft);
        if (live) {
            s->st.fetches_failed++;
            if (cb.on_done != NULL)
                cb.on_done(cb.arg, reason < 0 ? reason : RON_ECLOSED);
        }
    }
    while (s->xfers != NULL)
        xfer_unlink(s, s->xfers);
    for (i = 0; i < s->n_ctrl; i++)
        free(s->ctrl[i].payload);
    s->n_ctrl = 0;
}

void
ovl_session_free(ovl_session_t *s)
{
    if (s == NULL)
        return;
    if (!s->closed)
        ovl_session_closed(s, RON_ECLOSED);
    free(s);
}

void
ovl_session_stats(const ovl_session_t *s, ovl_session_stats_t *out)
{
    *out = s->st;
}

const char *
ovl_session_peer_addr(const ovl_session_t *s)
{
    return s->peer_addr;
}

bool
ovl_session_is_closing(const ovl_session_t *s)
{
    return s->closed || s->link_closing || s->goodbye_sent || s->goodbye_recv;
}
