/*
 * tx_h2_answer.c - answers on an HTTP/2 stream: the head (with the
 * hop-by-hop headers HTTP/2 forbids dropped), a whole body, or a streamed
 * body through a data provider that nghttp2 pulls as the client's
 * flow-control window opens (tx_h2.c's invariants on memory hold here).
 * Invariant: a streamed body's chunks are borrowed until framed; each
 * chunk's done callback runs once, after framing, outside nghttp2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_h2_internal.h"

/* ---- answers ---- */

static ssize_t
tx_h2_read(nghttp2_session *sess, int32_t stream_id, uint8_t *buf, size_t length,
           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    tx_h2_t *h = ud;
    tx_request_t *r = src->ptr;
    size_t n = 0;
    tx_chunk_t *k;

    (void)sess, (void)stream_id;
    if (r->state == TX_REQ_ANSWERED) {
        n = r->out.len - r->out_off;
        if (n > length)
            n = length;
        memcpy(buf, r->out.p + r->out_off, n);
        r->out_off += n;
        if (r->out_off == r->out.len)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    while (n < length && (k = r->chunks) != NULL) {
        size_t take = k->len - k->off;
        if (take > length - n)
            take = length - n;
        if (take > 0)
            memcpy(buf + n, k->data + k->off, take);
        k->off += take;
        n += take;
        r->chunk_bytes -= take;
        if (k->off == k->len) {
            r->chunks = k->next;
            if (r->chunks == NULL)
                r->chunks_tail = NULL;
            tx__h2_done_push(h, k, 0); /* copied: no longer borrowed */
        }
    }
    if (r->chunks == NULL && r->state == TX_REQ_ENDED) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    return n == 0 ? NGHTTP2_ERR_DEFERRED : (ssize_t)n;
}

static bool
tx_h2_hop_header(const char *name)
{
    static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade", "content-length",
                                      "date", "x-corr-id"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    return false;
}

/* HEADERS for r (names lowercased, connection-specific ones dropped), then its body. */
static int
tx_h2_submit(tx_h2_t *h, tx_request_t *r, int status, const tx_header_t *hdrs, size_t n,
             int64_t content_length, bool body)
{
    nghttp2_nv *nv = ron_xcalloc(n + 4, sizeof *nv);
    tx_buf_t names = {0};
    size_t *nofs = ron_xcalloc(n + 1, sizeof *nofs);
    char st[8], cl[24], corr[24];
    const char *date = tx__server_date(h->c->srv);
    size_t cnt = 0;
    int rc;
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = tx_h2_read};

    for (size_t i = 0; i < n; i++) {
        nofs[i] = names.len;
        for (const uint8_t *p = (const uint8_t *)hdrs[i].name; *p != '\0'; p++) {
            uint8_t ch = *p;
            if (ch >= 'A' && ch <= 'Z')
                ch += 'a' - 'A'; /* HTTP/2 field names are lowercase */
            tx__buf_append(&names, &ch, 1);
        }
        tx__buf_append(&names, "", 1);
    }
    (void)snprintf(st, sizeof st, "%03d", status % 1000);
    (void)snprintf(corr, sizeof corr, "%llu", (unsigned long long)r->view.corr_id);
#define TX_NV(N, V)                                                                            \
    do {                                                                                       \
        nv[cnt].name = (uint8_t *)(N);                                                         \
        nv[cnt].namelen = strlen(N);                                                           \
        nv[cnt].value = (uint8_t *)(V);                                                        \
        nv[cnt].valuelen = strlen(V);                                                          \
        cnt++;                                                                                 \
    } while (0)
    TX_NV(":status", st);
    TX_NV("date", date);
    TX_NV("x-corr-id", corr);
    for (size_t i = 0; i < n; i++) {
        const char *name = (const char *)names.p + nofs[i];
        if (name[0] == '\0' || strpbrk(name, "\r\n: ") != NULL ||
            strpbrk(hdrs[i].value, "\r\n") != NULL || tx_h2_hop_header(name))
            continue;
        nv = ron_xrealloc(nv, (cnt + (n - i) + 2) * sizeof *nv);
        TX_NV(name, hdrs[i].value);
    }
    if (content_length >= 0 && status >= 200 && status != 204) {
        (void)snprintf(cl, sizeof cl, "%lld", (long long)content_length);
        TX_NV("content-length", cl);
    }
#undef TX_NV
    body = body && !r->is_head && status >= 200 && status != 204 && status != 304;
    rc = nghttp2_submit_response(h->sess, r->stream_id, nv, cnt, body ? &prd : NULL);
    free(nv);
    free(nofs);
    tx__buf_free(&names);
    return rc < 0 ? RON_ECLOSED : 0;
}

static void
tx_h2_kick(tx_h2_t *h)
{
    h->again = true;
    h->in_app++;
    tx__conn_pump(h->c);
    h->in_app--;
}

/* Answer r with its reject_* fields (the server's own answer). */
void
tx__h2_answer_reject(tx_h2_t *h, tx_request_t *r)
{
    tx_server_t *s = h->c->srv;
    char body[TX_ENVELOPE_MAX], ra[16];
    tx_header_t hd[2] = {{"content-type", "application/json"}, {"retry-after", ra}};
    size_t blen;

    if (r->reject_reason != TX_REJECT_RATE && r->reject_reason != TX_REJECT_INFLIGHT)
        tx__limits_count(&s->lim, r->reject_reason);
    blen = tx_envelope_format(body, sizeof body, r->reject_status,
                              tx__reject_message(r->reject_reason), r->reject_detail,
                              r->view.corr_id, r->retry_after_s * 1000u);
    (void)snprintf(ra, sizeof ra, "%u", r->retry_after_s);
    r->out.len = 0;
    tx__buf_append(&r->out, body, blen);
    r->out_off = 0;
    r->state = TX_REQ_ANSWERED;
    s->lim.stats.responses++;
    (void)tx_h2_submit(h, r, r->reject_status, hd, r->retry_after_s > 0 ? 2 : 1, (int64_t)blen,
                       true);
}

int
tx__h2_respond(tx_conn_t *c, tx_request_t *r, int status, const tx_header_t *hdrs, size_t n,
               const void *body, size_t len)
{
    r->out.len = 0;
    r->out_off = 0;
    if (!r->is_head)
        tx__buf_append(&r->out, body, len);
    r->state = TX_REQ_ANSWERED;
    int rc = tx_h2_submit(c->h2, r, status, hdrs, n, (int64_t)len, r->out.len > 0);
    tx_h2_kick(c->h2);
    return rc;
}

int
tx__h2_respond_error(tx_conn_t *c, tx_request_t *r, int status, const char *message,
                     const char *reason, uint32_t retry_after_s)
{
    char body[TX_ENVELOPE_MAX], ra[16];
    tx_header_t hd[2] = {{"content-type", "application/json"}, {"retry-after", ra}};
    size_t blen = tx_envelope_format(body, sizeof body, status, message, reason,
                                     r->view.corr_id, retry_after_s * 1000u);

    (void)snprintf(ra, sizeof ra, "%u", retry_after_s);
    r->out.len = 0;
    r->out_off = 0;
    if (!r->is_head)
        tx__buf_append(&r->out, body, blen);
    r->state = TX_REQ_ANSWERED;
    int rc = tx_h2_submit(c->h2, r, status, hd, retry_after_s > 0 ? 2 : 1, (int64_t)blen,
                          r->out.len > 0);
    tx_h2_kick(c->h2);
    return rc;
}

int
tx__h2_respond_start(tx_conn_t *c, tx_request_t *r, int status, const tx_header_t *hdrs,
                     size_t n, int64_t content_length)
{
    r->remaining = r->is_head ? 0 : content_length;
    r->state = TX_REQ_STREAMING;
    int rc = tx_h2_submit(c->h2, r, status, hdrs, n, content_length, true);
    tx_h2_kick(c->h2);
    return rc;
}

int
tx__h2_write(tx_conn_t *c, tx_request_t *r, tx_chunk_t *k)
{
    tx_h2_t *h = c->h2;

    if (k->len == 0) {
        tx__h2_done_push(h, k, 0); /* HEAD: nothing goes out */
    } else {
        tx__chunk_queue(r, k);
        (void)nghttp2_session_resume_data(h->sess, r->stream_id);
    }
    tx_h2_kick(h);
    return 0;
}

int
tx__h2_end(tx_conn_t *c, tx_request_t *r)
{
    tx_h2_t *h = c->h2;

    r->drain = NULL;
    r->want_drain = false;
    r->state = TX_REQ_ENDED;
    if (r->remaining > 0) /* shorter than its Content-Length: the client must not trust it */
        (void)nghttp2_submit_rst_stream(h->sess, NGHTTP2_FLAG_NONE, r->stream_id,
                                        NGHTTP2_INTERNAL_ERROR);
    else
        (void)nghttp2_session_resume_data(h->sess, r->stream_id);
    tx_h2_kick(h);
    return 0;
}
