/*
 * omni_content.c - the content ops that stream bytes through the storage
 * service: put (put_begin -> put_writes as body frames arrive -> put_commit)
 * and get (stat -> gets of OMNI_BUS_CHUNK bytes while the client grants
 * credit, sent in order whatever order they come back in).
 *
 * A put's body frames queue as pieces (omni_piece_t) with room before their
 * bytes for the put_write's prefix and JSON, so a write is sent from the
 * piece itself; a body frame is credited back only once the storage service
 * answered it as written, so the client cannot run ahead of the store. The
 * capability's max-bytes is enforced as the bytes come, its prefix once the
 * commit names the address. A get asks for no more chunks than the stream
 * has credit for, and none while the connection's output is over its bound.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni_internal.h"
#include "ron_err.h"
#include "ron_naming.h"
#include "ron_util.h"

/* ---------------------------------------------------------------- put */

/* A put starts with put_begin (the parsed request's JSON); body frames queue meanwhile. */
void
omni__rq_put_start(omni_rq_t *q)
{
    int rc;

    q->state = OMNI_RQ_PUT_BEGIN;
    q->begin_inflight = true;
    rc = omni__rq_bus(q, OAP_APP_STORAGE, q->r.fwd, q->r.fwd_len);
    if (rc < 0) {
        q->begin_inflight = false;
        omni__rq_bus_failed(q, rc);
    }
}

/* put_begin answered (o): the put is open at the storage service; its START frame is done. */
void
omni__on_put_begun(omni_rq_t *q, json_t *o)
{
    if (!omni__json_u64_field(o, "put_id", &q->put_id)) {
        omni__rq_error(q, 502, "put_begin answer without put_id", NULL, 0);
        return;
    }
    q->put_open = true;
    q->state = OMNI_RQ_PUT_OPEN;
    omni__rq_consume(q, 1); /* the START frame */
}

/*
 * A body frame of a put (len bytes of payload, copied): refused past the
 * capability's max-bytes, else queued as a piece until the storage service
 * wrote it.
 */
void
omni__rq_put_body(omni_rq_t *q, const uint8_t *payload, size_t len)
{
    omni_conn_t *c = q->c;
    omni_piece_t *p;

    if (len > q->max_bytes - RON_MIN(q->received, q->max_bytes)) {
        /* over the capability's max-bytes: refused as the bytes come */
        omni__rq_over_max_bytes(q, len);
        omni__rq_consume(q, 1); /* discarded */
        omni__rq_put_abort(q);
        return;
    }
    p = ron_xmalloc(sizeof *p + OMNI_PIECE_HEAD + len);
    q->received += len;
    p->next = NULL;
    p->len = len;
    p->off = 0;
    p->sent = 0;
    if (len > 0)
        memcpy(OMNI_PIECE_DATA(p), payload, len);
    if (q->tail != NULL)
        q->tail->next = p;
    else
        q->head = p;
    q->tail = p;
    c->in_bytes += len;
    c->g->stats.input_bytes += len;
    omni__conn_set_reading(c);
}

/*
 * Send a put_write of p's bytes [p->sent, p->sent + wlen) at offset q->sent,
 * its prefix and JSON written just before the bytes (into the piece's room
 * or over bytes already sent, restored after the call).
 */
static int
rq_put_write(omni_rq_t *q, omni_piece_t *p, size_t wlen)
{
    char js[OMNI_PIECE_HEAD - 4];
    uint8_t save[OMNI_PIECE_HEAD], *at = OMNI_PIECE_DATA(p) + p->sent, *h;
    int n =
        snprintf(js, sizeof js, "{\"offset\":\"%llu\",\"op\":\"put_write\",\"put_id\":\"%llu\"}",
                 (unsigned long long)q->sent, (unsigned long long)q->put_id);
    size_t hl;
    int rc;

    if (n < 0 || (size_t)n >= sizeof js)
        return RON_EINVAL; /* cannot happen: two u64s fit */
    hl = 4 + (size_t)n;
    h = at - hl;
    memcpy(save, h, hl);
    (void)proto_json_frame(h, js, (uint32_t)n);
    rc = omni__rq_bus_payload(q, OAP_APP_STORAGE, h, hl + wlen, omni__rq_bus_reply, q);
    memcpy(h, save, hl);
    return rc;
}

/* A fire-and-forget put_abort (the answer does not matter). */
static void
abort_reply(void *arg, int status, const oap_frame_t *resp)
{
    (void)status;
    (void)resp;
    omni__unref(arg);
}

void
omni__rq_put_abort(omni_rq_t *q)
{
    char js[64];
    uint8_t buf[4 + sizeof js];
    size_t n;

    if (!q->put_open || q->g->storage == NULL || q->inflight > 0)
        return; /* with writes in flight: the last answer calls again */
    q->put_open = false;
    n = (size_t)snprintf(js, sizeof js, "{\"op\":\"put_abort\",\"put_id\":\"%llu\"}",
                         (unsigned long long)q->put_id);
    n = proto_json_frame(buf, js, (uint32_t)n);
    (void)omni__bus_send(q, OAP_APP_STORAGE, buf, n, abort_reply, q->g);
}

/*
 * Mark n more bytes of q's queued body as written and credit every frame
 * now written whole (empty frames at the head included).
 */
static void
rq_put_ack(omni_rq_t *q, uint64_t n)
{
    uint32_t frames = 0;

    while (q->head != NULL) {
        omni_piece_t *p = q->head;
        size_t k = (size_t)RON_MIN(n, (uint64_t)(p->len - p->off));
        p->off += k;
        n -= k;
        q->written += k;
        q->c->in_bytes -= k;
        q->g->stats.input_bytes -= k;
        if (p->off < p->len)
            break;
        q->head = p->next;
        if (q->head == NULL)
            q->tail = NULL;
        free(p);
        frames++;
    }
    omni__rq_consume(q, frames);
}

/* Keep up to OMNI_PUT_PIPELINE put_writes in flight; commit after the last and the END. */
void
omni__rq_put_next(omni_rq_t *q)
{
    char js[128];
    int n, rc;

    if (q->state != OMNI_RQ_PUT_OPEN)
        return;
    rq_put_ack(q, 0); /* empty frames at the head */
    /* keep up to OMNI_PUT_PIPELINE writes in flight; the service runs them in order */
    while (q->inflight < OMNI_PUT_PIPELINE) {
        omni_piece_t *p = q->head;
        size_t wlen;
        while (p != NULL && p->sent == p->len)
            p = p->next;
        if (p == NULL)
            break;
        wlen = RON_MIN(p->len - p->sent, (size_t)OMNI_BUS_CHUNK);
        rc = rq_put_write(q, p, wlen);
        if (rc < 0) {
            omni__rq_bus_failed(q, rc);
            omni__rq_put_abort(q);
            return;
        }
        p->sent += wlen;
        q->sent += wlen;
    }
    /* the commit waits for the writes in flight and for the client's END */
    if (q->inflight > 0 || q->head != NULL || !q->req_ended)
        return;
    q->state = OMNI_RQ_PUT_COMMIT;
    n = snprintf(js, sizeof js, "{\"op\":\"put_commit\",\"put_id\":\"%llu\"}",
                 (unsigned long long)q->put_id);
    rc = omni__rq_bus(q, OAP_APP_STORAGE, js, (size_t)n);
    if (rc < 0) {
        omni__rq_bus_failed(q, rc);
        omni__rq_put_abort(q);
    }
}

void
omni__rq_drop_pieces(omni_rq_t *q)
{
    uint32_t frames = 0;

    while (q->head != NULL) {
        omni_piece_t *p = q->head;
        q->head = p->next;
        if (q->c != NULL) {
            q->c->in_bytes -= p->len - p->off;
            q->g->stats.input_bytes -= p->len - p->off;
        }
        frames++;
        free(p);
    }
    q->tail = NULL;
    omni__rq_consume(q, frames);
    if (q->c != NULL)
        omni__conn_set_reading(q->c);
}

/* A put_write answered with the put's total: those bytes are in the store. */
void
omni__on_put_written(omni_rq_t *q, json_t *o)
{
    uint64_t total = 0;

    if (!omni__json_u64_field(o, "written", &total) || total < q->written || total > q->sent) {
        omni__rq_error(q, 502, "put_write answer with a bad written count", NULL, 0);
        return;
    }
    rq_put_ack(q, total - q->written);
    omni__conn_set_reading(q->c);
}

/* put_commit answered: 201 for a new object, 200 when it was already stored. */
void
omni__on_put_committed(omni_rq_t *q, json_t *o)
{
    json_t *a = json_object_get(o, "address"), *sz = json_object_get(o, "size"), *ans;
    char *txt;

    q->put_open = false;
    if (!json_is_string(a) || !json_is_string(sz)) {
        omni__rq_error(q, 502, "put_commit answer without address", NULL, 0);
        return;
    }
    if (q->grant != NULL && !omni__rq_prefix_allows(q, json_string_value(a)))
        return; /* answered 403 */
    ans = json_pack("{s:O, s:O}", "address", a, "size", sz);
    txt = json_dumps(ans, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(ans);
    if (txt == NULL)
        abort(); /* jansson fails only on OOM */
    omni__rq_answer(q, json_is_false(json_object_get(o, "created")) ? 200 : 201, txt, strlen(txt));
    free(txt);
}

/* ---------------------------------------------------------------- get */

/* The get's address as text ("b3:" + 64 lowercase hex). */
static void
rq_addr_text(const omni_rq_t *q, char out[static NAME_ADDR_TEXT_LEN + 1])
{
    name_addr_t a;

    memcpy(a.b, q->r.addr, sizeof a.b);
    name_addr_format(&a, out);
}

/* Ask the storage service for len bytes of the get's object at off, answered to cb(arg). */
static int
rq_storage_get(omni_rq_t *q, uint64_t off, size_t len, rbus_reply_cb cb, void *arg)
{
    char js[200], addr[NAME_ADDR_TEXT_LEN + 1];
    int n;

    rq_addr_text(q, addr);
    n = snprintf(js, sizeof js,
                 "{\"address\":\"%s\",\"length\":\"%zu\",\"offset\":\"%llu\",\"op\":\"get\"}", addr,
                 len, (unsigned long long)off);
    return omni__rq_bus_cb(q, OAP_APP_STORAGE, js, (size_t)n, cb, arg);
}

/* A get starts with a stat of its object (size and content type, for the range). */
void
omni__rq_get_start(omni_rq_t *q)
{
    char js[128], addr[NAME_ADDR_TEXT_LEN + 1];
    int n, rc;

    rq_addr_text(q, addr);
    n = snprintf(js, sizeof js, "{\"address\":\"%s\",\"op\":\"stat\"}", addr);
    q->state = OMNI_RQ_GET_STAT;
    rc = omni__rq_bus(q, OAP_APP_STORAGE, js, (size_t)n);
    if (rc < 0)
        omni__rq_bus_failed(q, rc);
}

/*
 * The stat of a get answered 404: not stored here. Once, a one-byte storage
 * get stands in for it (it fetches the object from peers and tells the size).
 * Returns true when it was sent (or failed and q was answered).
 */
bool
omni__rq_get_probe(omni_rq_t *q)
{
    int rc;

    if (q->probed)
        return false;
    q->probed = true;
    rc = rq_storage_get(q, q->r.has_offset ? q->r.offset : 0, 1, omni__rq_bus_reply, q);
    if (rc < 0)
        omni__rq_bus_failed(q, rc);
    return true;
}

/* stat answered for a get: check the range, send the metadata frame. */
void
omni__on_get_stat(omni_rq_t *q, json_t *o)
{
    uint64_t size = 0;
    const char *ct = json_string_value(json_object_get(o, "content_type"));
    json_t *meta;
    char a[24], b[24], s[24], *txt;

    if (!omni__json_u64_field(o, "size", &size)) {
        omni__rq_error(q, 502, "stat answer without size", NULL, 0);
        return;
    }
    q->pos = q->r.has_offset ? q->r.offset : 0;
    if (q->pos >= size && !(q->pos == 0 && size == 0)) {
        omni__rq_error(q, 416, "offset at or past the end of the object", "offset", 0);
        return;
    }
    q->end = size;
    if (q->r.has_length && q->r.length < size - q->pos)
        q->end = q->pos + q->r.length;
    q->status = q->r.has_offset || q->r.has_length ? 206 : 200;
    q->next_off = q->pos;
    snprintf(a, sizeof a, "%llu", (unsigned long long)(q->end - q->pos));
    snprintf(b, sizeof b, "%llu", (unsigned long long)q->pos);
    snprintf(s, sizeof s, "%llu", (unsigned long long)size);
    meta = json_pack("{s:s, s:s, s:s}", "length", a, "offset", b, "size", s);
    if (ct != NULL && ct[0] != '\0')
        json_object_set_new(meta, "content_type", json_string(ct));
    txt = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(meta);
    if (txt == NULL)
        abort();
    (void)omni__rq_send(q, 0, q->status, txt, strlen(txt)); /* the first frame: credit is fresh */
    free(txt);
    q->state = OMNI_RQ_GET_DATA;
}

/* A chunk is finished (sent or dropped): its bytes leave the connection's get budget. */
static void
chunk_release(omni_rq_t *q, omni_chunk_t *k)
{
    if (q->c != NULL)
        q->c->get_bytes -= k->len;
    free(k->data);
    k->data = NULL;
    k->used = k->ready = false;
}

/* q is answered: chunks answered but never sent are gone with the stream. */
void
omni__rq_drop_chunks(omni_rq_t *q)
{
    for (size_t i = 0; i < OMNI_GET_PIPELINE; i++) {
        omni_chunk_t *k = &q->chunks[i];
        if (k->used && k->ready)
            chunk_release(q, k);
    }
}

/* Send the chunks that are next in order; the last one carries END. */
static void
rq_get_flush(omni_rq_t *q)
{
    for (bool more = true; more && q->state == OMNI_RQ_GET_DATA;) {
        more = false;
        for (size_t i = 0; i < OMNI_GET_PIPELINE; i++) {
            omni_chunk_t *k = &q->chunks[i];
            if (!k->used || !k->ready || k->off != q->pos)
                continue;
            q->pos += k->len;
            (void)omni__rq_send(q, q->pos == q->end ? OAP_F_END : 0, q->status, k->data, k->len);
            chunk_release(q, k);
            more = true;
        }
        if (q->pos == q->end) {
            omni__count_request(q->g, OAP_APP_STORAGE, "get", q->status);
            q->state = OMNI_RQ_DONE;
        }
    }
}

/* A chunk came back. In order: sent at once; else kept until its turn. */
static void
rq_chunk_reply(void *arg, int status, const oap_frame_t *resp)
{
    omni_chunk_t *k = arg;
    omni_rq_t *q = k->q;
    omni_t *g = q->g;
    json_t *o = NULL;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    uint64_t n = 0;

    q->inflight--;
    if (q->c == NULL || q->state != OMNI_RQ_GET_DATA) {
        chunk_release(q, k); /* the stream ended meanwhile (an error, or the connection went) */
    } else if (status < 0) {
        chunk_release(q, k);
        omni__rq_bus_failed(q, status);
    } else if (resp->code >= 400) {
        chunk_release(q, k);
        omni__rq_forward_error(q, resp); /* a piece failed verification: 500 corrupt */
    } else if (omni__answer_json(resp, true, &o, &raw, &raw_len) < 0 ||
               !omni__json_u64_field(o, "length", &n) || n != raw_len || raw_len != k->len) {
        chunk_release(q, k);
        omni__rq_error(q, 500, "storage answered a wrong length", "corrupt", 0);
    } else {
        k->data = ron_xmalloc(raw_len);
        memcpy(k->data, raw, raw_len);
        k->ready = true;
        rq_get_flush(q);
    }
    json_decref(o);
    omni__rq_step(q);
    omni__unref(g);
}

/*
 * Ask for the next chunks of a get: up to OMNI_GET_PIPELINE in flight, never
 * more than the stream's send credit (each becomes one frame), and none while
 * the connection's output is over its bound.
 */
void
omni__rq_get_next(omni_rq_t *q)
{
    omni_conn_t *c = q->c;
    const oap_stream_t *s;
    uint64_t chunk = RON_MIN((uint64_t)OMNI_BUS_CHUNK, (uint64_t)(c->max_frame - OAP_HDR_LEN));
    uint32_t outstanding = 0;
    int rc;

    if (q->pend_err != NULL) {
        if (omni__rq_send(q, OAP_F_END, q->pend_code, q->pend_err, q->pend_len) == 0) {
            free(q->pend_err);
            q->pend_err = NULL;
        }
        return;
    }
    if (q->state != OMNI_RQ_GET_DATA)
        return;
    if (q->pos == q->end) { /* empty range: the meta frame, then an empty END */
        if (omni__rq_send(q, OAP_F_END, q->status, NULL, 0) == 0) {
            omni__count_request(q->g, OAP_APP_STORAGE, "get", q->status);
            q->state = OMNI_RQ_DONE;
        }
        return;
    }
    for (size_t i = 0; i < OMNI_GET_PIPELINE; i++)
        outstanding += q->chunks[i].used;
    for (size_t i = 0; i < OMNI_GET_PIPELINE && q->next_off < q->end; i++) {
        omni_chunk_t *k = &q->chunks[i];
        s = oap_streams_find(&c->st, q->corr_id, false);
        if (s == NULL || outstanding >= s->send_credit ||
            c->out_bytes + c->get_bytes >= q->g->cfg.max_output)
            return; /* a credit frame or the output draining calls again */
        if (k->used)
            continue;
        k->q = q;
        k->used = true;
        k->ready = false;
        k->off = q->next_off;
        k->len = (size_t)RON_MIN(chunk, q->end - q->next_off);
        rc = rq_storage_get(q, k->off, k->len, rq_chunk_reply, k);
        if (rc < 0) {
            k->used = false;
            omni__rq_bus_failed(q, rc);
            return;
        }
        q->next_off += k->len;
        c->get_bytes += k->len;
        outstanding++;
    }
}
