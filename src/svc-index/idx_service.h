/*
 * idx_service.h - svc-index as a ron-bus service: the index & naming
 * protocol (OAP/1 app_proto_id 2, docs/protocol/index.md) served from an
 * idx_t. Written against rbus_ only (macronode: own process over Unix
 * sockets; micronode: in-process). idx calls (an LMDB commit waits for
 * fsync) run on the libuv thread pool; handlers and answers on the loop.
 * Invariants: every request is answered exactly once; a publish answered
 * 200 is current and durable; the idx_t is closed only after the last
 * worker call has returned.
 */
#ifndef IDX_SERVICE_H
#define IDX_SERVICE_H

#include <stddef.h>

#include <uv.h>

#include "ron_bus.h"
#include "ron_guard.h"
#include "svc_index.h"

/* ---- limits ---- */
#define IDX_SVC_MAX_JSON 2048u    /* JSON bytes of one request (a record is < 700) */
#define IDX_SVC_LIST_DEFAULT 100u /* list page when "limit" is absent */
#define IDX_SVC_LIST_MAX 500u     /* list page at most: 500 records of < 700 B fit one frame */

typedef struct idx_service idx_service_t;

/*
 * Serve the index protocol on bus (borrowed, must outlive the service until
 * idx_service_free) from idx (taken: freed once the service is freed and its
 * last worker call has returned). Registers the OAP_APP_INDEX handler; does
 * not call rbus_listen(). Returns 0 and *svc_out, or RON_EBUSY (no handler
 * slot; idx is freed).
 */
int idx_service_new(uv_loop_t *loop, rbus_t *bus, idx_t *idx, idx_service_t **svc_out);

/*
 * As idx_service_new, but idx is borrowed: where the service would free it
 * (after idx_service_free and its last worker call, or on failure) it calls
 * release(arg, idx) once, on the loop instead, so an index shared by
 * several users of one process is released rather than freed.
 */
int idx_service_new_shared(uv_loop_t *loop, rbus_t *bus, idx_t *idx,
                           void (*release)(void *arg, idx_t *idx), void *arg,
                           idx_service_t **svc_out);

/* Stop: later requests are answered 503; memory and idx go once the worker
 * calls in flight return. Call it in the loop turn that frees the bus. NULL
 * does nothing. */
void idx_service_free(idx_service_t *svc);

/*
 * Carry names across nodes through the DHT (docs/protocol/index.md): after
 * a successful publish the record is sent to dht (`name_put`, fire and
 * forget, counted); a resolve that misses locally asks dht (`name_get`),
 * keeps the answer when ron-naming's acceptance rule takes it, and answers
 * it. dht is an outbound peer connected to the "dht" endpoint (borrowed:
 * close it before idx_service_free; its in-flight calls then complete).
 * NULL turns this off (the default).
 */
void idx_service_set_dht(idx_service_t *svc, rbus_peer_t *dht);

/*
 * Enforce capabilities on the index endpoint with g (borrowed; the
 * process's guard, ron_node_guard(), in a node; NULL, the default: no
 * enforcement). publish needs the name op for the record's name (a
 * name-prefix caveat applies); resolve and list need get (public under the
 * default policy). The token is the request frame's cap section, the
 * tenant its tenant_id; a rejection is answered with the error envelope
 * (401, 403 or 429) and changes nothing. With g set, the DHT requests the
 * service makes on its own behalf carry guard_self_token(g).
 */
void idx_service_set_guard(idx_service_t *svc, guard_t *g);

/* Append Prometheus text (requests by op and status) to buf (cap bytes).
 * Returns bytes written (0 when cap is too small). */
size_t idx_service_metrics(idx_service_t *svc, char *buf, size_t cap);

#endif
