/*
 * tx_h2_internal.h - what tx_h2.c (the nghttp2 session, its callbacks and
 * the streams) and tx_h2_answer.c (answers on a stream) share and nothing
 * else includes: the per-connection HTTP/2 state and the tx__h2_ helpers one
 * calls in the other.
 */
#ifndef TX_H2_INTERNAL_H
#define TX_H2_INTERNAL_H

#include <nghttp2/nghttp2.h>

#include "tx_internal.h"

typedef struct tx_h2 {
    nghttp2_session *sess;
    tx_conn_t *c;
    tx_request_t *streams;         /* requests of open streams, linked by next */
    tx_chunk_t *done, *done_tail;  /* framed or dropped chunks whose done is due */
    uint64_t flood_start;          /* ms the current flood window began */
    uint32_t flood;                /* control frames in the window */
    bool in_recv;                  /* inside nghttp2_session_mem_recv */
    unsigned in_app;               /* inside a tx_respond* call: done callbacks wait */
    bool pumping;
    bool again;                    /* an answer changed while pumping: pump once more */
    bool terminated;               /* GOAWAY submitted by us */
} tx_h2_t;

/* Queue chunk k's done callback with status (run after framing, never
 * inside nghttp2 or a tx_respond* call). */
void tx__h2_done_push(tx_h2_t *h, tx_chunk_t *k, int status);
/* Answer r with its error (its reject_* fields) and count the reject. */
void tx__h2_answer_reject(tx_h2_t *h, tx_request_t *r);

#endif /* TX_H2_INTERNAL_H */
