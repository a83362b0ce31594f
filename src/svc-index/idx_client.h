/*
 * idx_client.h - a small client of the index & naming protocol over ron-bus
 * (docs/protocol/index.md), for the gateway's /n/ routes when the node runs
 * the index as its own service: resolve a name, publish a record.
 *
 * Loop-thread only, asynchronous: each call sends one request frame and
 * reports once through its callback, never from inside the call. The
 * answer's error envelope (spec §3) is handed back as status, reason and
 * message so a caller can map it to its own protocol.
 */
#ifndef IDX_CLIENT_H
#define IDX_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "ron_bus.h"
#include "ron_naming.h"

/* ---- limits ---- */
#define IDX_CLIENT_DEADLINE_MS 5000u /* per request (a publish waits for an LMDB commit) */
#define IDX_CLIENT_TEXT_MAX 256u     /* bytes kept of an answer's reason and message */

/* The outcome of one request (views valid during the callback). */
typedef struct {
    int status;               /* 0: answered (see code); else RON_EUNAVAIL, RON_ETIMEOUT,
                                 RON_EBUSY, RON_ESHUTDOWN (retryable: not answered) or
                                 RON_EPROTO (an answer that does not parse) */
    uint16_t code;            /* the service's status: 200, 400, 403, 404, 409, 500, 503, 507 */
    const char *reason;       /* the envelope's reason ("" when none or 200) */
    const char *message;      /* the envelope's message ("" when none or 200) */
    const name_record_t *rec; /* 200 resolve: the current record; else NULL */
    bool unchanged;           /* 200 publish: this exact record was already current */
} idx_client_result_t;

typedef void (*idx_client_cb)(void *arg, const idx_client_result_t *res);

/*
 * Resolve name (borrowed; user input, normalized by the service) through
 * peer (an outbound peer connected to "index"). Returns 0 (cb will be
 * called), RON_EINVAL (name too long), or rbus_request's error (cb never
 * called).
 */
int idx_client_resolve(rbus_peer_t *peer, const char *name, idx_client_cb cb, void *arg);

/* Publish rec (borrowed) through peer. Returns as idx_client_resolve. */
int idx_client_publish(rbus_peer_t *peer, const name_record_t *rec, idx_client_cb cb, void *arg);

/* Whom a request acts for, when a service forwards its client's request. */
typedef struct {
    const uint8_t *tenant; /* 16 bytes (copied), or NULL: the node */
    const void *cap;       /* the client's capability as received (copied), or NULL */
    size_t cap_len;        /* its bytes, <= OAP_MAX_CAP */
} idx_client_auth_t;

/* idx_client_resolve / idx_client_publish acting for auth (may be NULL):
 * the request carries auth->tenant as tenant_id and auth->cap in its cap
 * section, so the index service checks the client's capability. Same
 * returns, plus RON_EINVAL for a cap over OAP_MAX_CAP. */
int idx_client_resolve_as(rbus_peer_t *peer, const idx_client_auth_t *auth, const char *name,
                          idx_client_cb cb, void *arg);
int idx_client_publish_as(rbus_peer_t *peer, const idx_client_auth_t *auth,
                          const name_record_t *rec, idx_client_cb cb, void *arg);

#endif
