/*
 * sto_client.h - a small client of the storage protocol over ron-bus
 * (docs/protocol/storage.md), for `ron put` / `ron get` and the app port:
 * stream a local file into the store, or an object into a file descriptor.
 *
 * Loop-thread only, asynchronous: each call runs a chain of single-frame
 * requests (put_begin, put_write of STO_SVC_MAX_CHUNK bytes each in order,
 * put_commit; or get of STO_SVC_MAX_CHUNK bytes each) and reports once
 * through its callback, never from inside the call. The local file is read
 * and written with plain read(2)/write(2) on the loop thread, one chunk per
 * step (a command-line client's loop does nothing else). A put has one
 * request in flight at a time (it holds at most two chunks of memory); a get
 * has up to STO_CLIENT_GET_WINDOW, so the service verifies the next chunks
 * while one travels, and holds at most that many chunks that arrived early.
 * On any failure after put_begin, the put is aborted (best effort).
 */
#ifndef STO_CLIENT_H
#define STO_CLIENT_H

#include <stdint.h>

#include "ron_bus.h"
#include "sto_service.h"

/* ---- limits ---- */
#define STO_CLIENT_DEADLINE_MS 30000u /* per request (a commit fsyncs a large object) */
#define STO_CLIENT_GET_WINDOW 4u      /* get requests in flight per transfer (1 MiB of chunks) */

/*
 * Outcome of a transfer: status 0 and code 200 on success; a negative
 * RON_E* with code 0 when the bus failed (RON_EUNAVAIL, RON_ETIMEOUT,
 * RON_EBUSY and RON_ESHUTDOWN: retryable) or -errno from the local file; or
 * RON_ESTORE with code the service's error status (400, 404, 409, 413, 416,
 * 429, 500, 503, 507).
 */
typedef void (*sto_client_put_cb)(void *arg, int status, uint16_t code,
                                  const uint8_t addr[STO_ADDR_LEN]);
typedef void (*sto_client_get_cb)(void *arg, int status, uint16_t code, uint64_t size);

/*
 * Put the file at path (borrowed) with content type ctype (borrowed, may be
 * NULL) through peer (an outbound peer connected to "storage"). cb gets the
 * address (a view valid during the call; NULL on failure). Returns 0 (cb
 * will be called), or, with cb never called: -errno (the file cannot be
 * opened), RON_EINVAL (not a regular file, ctype too long) or rbus_request's
 * error for the first request (RON_EUNAVAIL, RON_EBUSY, RON_ESHUTDOWN).
 */
int sto_client_put_file(rbus_peer_t *peer, const char *path, const char *ctype,
                        sto_client_put_cb cb, void *arg);

/*
 * Put the len bytes at buf (borrowed until cb runs) like
 * sto_client_put_file, with expect (copied, may be NULL) the address the
 * bytes must hash to: put_commit then answers 409 when they do not. Same
 * callback and returns (RON_EINVAL: ctype too long).
 */
int sto_client_put_buf(rbus_peer_t *peer, const void *buf, size_t len, const char *ctype,
                       const uint8_t *expect, sto_client_put_cb cb, void *arg);

/*
 * A streamed put, for bytes that arrive over time (the gateway's uploads):
 * begin, write pieces one at a time, then commit, or abort. Each operation
 * that returned 0 reports once through cb, on a later loop turn: begin and
 * write with status 0 and addr NULL when acknowledged, commit with the
 * address. At most one operation is in flight; the next one starts from
 * the callback (backpressure: a piece is acknowledged before the next is
 * sent). A callback with status < 0 (errors as for a transfer above; 409 at
 * commit when the bytes do not hash to expect) ends the put: it was aborted
 * and the handle is freed, as it is after a successful commit.
 */
typedef struct sto_client_put sto_client_put_t;

/*
 * Begin a put of unknown size with content type ctype (borrowed, may be
 * NULL) and expect (copied, may be NULL) the address the bytes must hash
 * to. Returns 0 with the handle in *put_out (cb reports the begin), or
 * RON_EINVAL (ctype too long) or rbus_request's error (cb never called).
 */
int sto_client_put_begin(rbus_peer_t *peer, const char *ctype, const uint8_t *expect,
                         sto_client_put_cb cb, void *arg, sto_client_put_t **put_out);

/* Whom a put acts for, when a service forwards its client's request. */
typedef struct {
    const uint8_t *tenant; /* STO_TENANT_LEN bytes (copied), or NULL: the node */
    const void *cap;       /* the client's capability as received (copied), or NULL */
    size_t cap_len;        /* its bytes, <= OAP_MAX_CAP */
} sto_client_auth_t;

/*
 * sto_client_put_begin acting for auth (may be NULL: as sto_client_put_begin):
 * every request of the put (begin, writes, commit, abort) carries
 * auth->tenant as its tenant_id and auth->cap in its cap section, so the
 * storage service checks the client's capability and pins for its tenant.
 * Same callback and returns, plus RON_EINVAL for a cap over OAP_MAX_CAP.
 */
int sto_client_put_begin_as(rbus_peer_t *peer, const sto_client_auth_t *auth, const char *ctype,
                            const uint8_t *expect, sto_client_put_cb cb, void *arg,
                            sto_client_put_t **put_out);

/*
 * Append len > 0 bytes (borrowed until cb runs; sent in pieces of at most
 * STO_SVC_MAX_CHUNK). Returns 0 (cb will run), RON_EINVAL (not begun, or an
 * operation in flight), or rbus_request's error (nothing sent; the put stays
 * open: abort it).
 */
int sto_client_put_write(sto_client_put_t *put, const void *data, size_t len);

/* Commit the put: cb gets the address. Returns as sto_client_put_write. */
int sto_client_put_commit(sto_client_put_t *put);

/*
 * Drop the put (the service deletes its temporary bytes) and free put; cb
 * is not called any more. With an operation in flight the abort is sent
 * when its answer arrives. NULL does nothing.
 */
void sto_client_put_abort(sto_client_put_t *put);

/*
 * Write the whole object addr (copied) to fd (borrowed, left open) through
 * peer; every byte was verified by the service. cb gets the object's size.
 * Returns 0 (cb will be called), or rbus_request's error for the first
 * request (cb never called).
 */
int sto_client_get(rbus_peer_t *peer, const uint8_t addr[STO_ADDR_LEN], int fd,
                   sto_client_get_cb cb, void *arg);

#endif
