/*
 * rc_internal.h - shared between the files of src/ron-app-sdk/ and its tests.
 *
 * rc_conn.c owns the connection: socket, HELLO, frame I/O with deadlines and
 * the stream table (credit). rc_ops.c builds operations on it and runs the
 * retry loop. rc_util.c holds the pure helpers of libron.h.
 * Invariant: c->fd >= 0 exactly when a HELLO succeeded and no frame error
 * has happened since; any socket or decode failure closes it (rc__drop), so
 * the next operation starts on a fresh connection and never sees frames of
 * an aborted stream.
 */
#ifndef RC_INTERNAL_H
#define RC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "libron.h"
#include "oap.h"

struct ron_client {
    ron_client_node_t node;
    char port_s[8];
    char *cap;          /* owned; NULL: none */
    size_t cap_len;
    uint8_t tenant[16];
    uint32_t timeout_ms;
    unsigned max_retries;
    char ua[64];

    int fd;             /* -1: not connected */
    uint32_t max_frame; /* negotiated */
    oap_decoder_t dec;
    oap_streams_t streams;
    uint64_t next_corr;
    uint64_t deadline;  /* ms, monotonic: the current wait gives up here */
    bool conn_lost;     /* the last failure came from the connection (retryable) */
    ron_client_error_t err;
};

/* Push the wait deadline to now + timeout (called on every bit of progress). */
void rc__progress(ron_client_t *c);

/* Connect and say HELLO unless connected. Connection failures set conn_lost. */
int rc__ensure(ron_client_t *c);

/* Close the connection (if any) and forget its streams. */
void rc__drop(ron_client_t *c);

/* A fresh corr_id on this connection (never 0). */
uint64_t rc__corr(ron_client_t *c);

/*
 * Send one frame (header, cap, payload gathered without copying), accounting
 * it in the stream table first: RON_EAGAIN when the stream has no credit
 * (nothing sent). Socket errors drop the connection and set conn_lost.
 */
int rc__send(ron_client_t *c, const oap_frame_t *f);

/*
 * Receive the next frame: 0 and a stream frame in *f, or OAP_STREAM_CONTROL
 * (1) after applying a credit frame (nothing for the caller in *f).
 * wait false: return RON_EAGAIN at once when no whole frame is available.
 * The frame's views stay valid until the next rc__recv / rc__drop.
 * A connection-level error envelope (corr_id 0) fills c->err and returns
 * RON_EREMOTE. Socket and decode errors drop the connection.
 */
int rc__recv(ron_client_t *c, oap_frame_t *f, bool wait);

/* Grant credit for n consumed frames of our stream corr_id when due. */
int rc__consume(ron_client_t *c, uint64_t corr_id, uint32_t n);

/* Fill c->err from an error frame (code >= 400) and return RON_EREMOTE. */
int rc__error_frame(ron_client_t *c, const oap_frame_t *f);

/* Set c->err to a local failure rc with a formatted message; returns rc. */
int rc__fail(ron_client_t *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parse a u64 from a JSON decimal string (or a non-negative integer). */
int rc__json_u64(const void *json_value, uint64_t *v_out);

#endif
