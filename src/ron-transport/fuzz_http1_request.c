/*
 * fuzz_http1_request.c - libFuzzer target for the sans-I/O HTTP/1.1 request
 * side (tx_http1.c): the first input byte picks a chunk size, the rest is fed
 * in chunks of that size, and every request that comes out is answered
 * (head, body, error envelope) so serialization runs on parsed values too.
 * Requests whose target starts with "/s" stream their body (capped at 8 KiB,
 * past the buffered cap), as the head hook of a server would make them.
 * Checks: views stay inside their caps, a streamed body stays within its
 * cap; nothing leaks (ASan).
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "tx_internal.h"

typedef struct {
    tx_http1_t h;
    tx_buf_t out;
    const tx_config_t *cfg;
    unsigned requests;
    tx_request_t *streamed; /* handed over at its head, body still parsing */
} fz_t;

static int
fz_on_head(void *arg, tx_request_t *r)
{
    fz_t *f = arg;

    /* refuse one request in three, as a rate limit would */
    if (++f->requests % 3 == 0) {
        r->reject_reason = TX_REJECT_RATE;
        r->retry_after_s = 1;
        return 429;
    }
    return 0;
}

static void
fz_body(tx_request_t *req, const uint8_t *data, size_t len, int status, void *arg)
{
    (void)req, (void)data, (void)len, (void)status, (void)arg;
}

static void
fz_on_hook(void *arg, tx_request_t *r)
{
    (void)arg;
    if (strncmp(r->view.path, "/s", 2) == 0) {
        r->in_hook = true;
        (void)tx_request_stream_body(r, fz_body, NULL, 8192);
        r->in_hook = false;
    }
}

static void
fz_on_stream(void *arg, tx_request_t *r)
{
    (void)arg;
    assert(r->bstream && r->view.body == NULL);
    ((fz_t *)arg)->streamed = r; /* the parser keeps it as cur until its body ends */
}

static void
fz_on_request(void *arg, tx_request_t *r)
{
    fz_t *f = arg;
    const tx_request_view_t *v = tx_request_view(r);

    if (r->bstream) {
        /* its body ended (complete, or cut off with reject_status) */
        assert(r == f->streamed);
        assert(r->body_total <= 8192);
        assert(r->bcomplete || r->reject_status != 0);
        f->streamed = NULL;
        tx__http1_request_recycle(&f->h, r);
        return;
    }

    assert(v->body_len <= f->cfg->max_decoded);
    assert(r->header_bytes <= f->cfg->max_header_bytes || r->reject_status == 431);
    if (r->reject_status != 0) {
        tx__http1_error(&f->out, v->http_minor, r->reject_status, tx__reject_message(r->reject_reason),
                        r->reject_detail, r->retry_after_s, r->keep_alive, v->corr_id, NULL,
                        r->is_head);
    } else {
        tx_header_t h[1] = {{"Content-Type", "text/plain"}};
        tx__http1_head(&f->out, v->http_minor, 200, h, 1, (int64_t)v->body_len, r->keep_alive,
                       v->corr_id, "Thu, 01 Jan 1970 00:00:00 GMT");
        for (size_t i = 0; i < v->n_headers; i++)
            assert(v->headers[i].name != NULL && v->headers[i].value != NULL);
        assert(strlen(v->path) + strlen(v->query) < f->cfg->max_header_bytes + 2);
        tx__buf_append(&f->out, v->body, v->body_len);
    }
    f->out.len = 0;
    tx__http1_request_recycle(&f->h, r);
}

static const tx_http1_cbs_t fz_cbs = {.on_head = fz_on_head,
                                      .on_hook = fz_on_hook,
                                      .on_stream = fz_on_stream,
                                      .on_request = fz_on_request};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tx_config_t cfg;
    fz_t f;
    uint64_t corr = 1;
    struct sockaddr_storage peer;
    size_t chunk, off = 0;

    tx_config_default(&cfg);
    cfg.max_body = 4096;
    cfg.max_header_bytes = 2048;
    cfg.max_headers = 20;
    cfg.max_decoded = 16384;
    memset(&f, 0, sizeof f);
    memset(&peer, 0, sizeof peer);
    f.cfg = &cfg;
    if (size == 0)
        return 0;
    chunk = (size_t)data[0] + 1;
    data++;
    size--;
    tx__http1_init(&f.h, &cfg, &fz_cbs, &f, &corr, &peer);
    /* bounded: every feed consumes at least one byte or stops parsing (a
     * streamed head may stop before its last byte once) */
    for (unsigned stalls = 0; off < size && !f.h.failed && stalls < 2;) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t used = tx__http1_feed(&f.h, data + off, n);
        off += used;
        stalls = used == 0 ? stalls + 1 : 0;
        if (f.streamed != NULL)
            f.streamed->body.len = 0; /* handed over as a piece and released */
    }
    if (f.h.cur != NULL && f.h.cur == f.streamed)
        f.h.cur = NULL; /* owned by the "app": freed below */
    tx__request_free(f.streamed);
    tx__http1_free(&f.h);
    tx__buf_free(&f.out);
    return 0;
}
