/*
 * reg_service.h - svc-registry as a ron-bus service: the registry protocol
 * (OAP/1 app_proto_id 9, docs/protocol/registry.md) served from a reg_t.
 * Written against rbus_ only (macronode: own process over Unix sockets;
 * micronode: in-process). Every registry call runs on the libuv thread pool
 * (a commit waits for fdatasync), so reads never wait on the loop; answers
 * go out on the loop.
 * Invariants: every request is answered exactly once; a commit answered 200
 * is durable (file log) or held in RAM (amnesia); the reg_t is freed only
 * after the last worker call has returned.
 */
#ifndef REG_SERVICE_H
#define REG_SERVICE_H

#include <stddef.h>

#include <uv.h>

#include "ron_bus.h"
#include "ron_guard.h"
#include "svc_registry.h"

/* ---- limits ---- */
#define REG_SVC_MAX_JSON (REG_MAX_DESC + 1024u) /* one request: a descriptor and the envelope */
#define REG_SVC_MAX_JOBS 64u                    /* requests in flight; more get 503 */

typedef struct reg_service reg_service_t;

/*
 * Serve the registry protocol on bus (borrowed; must outlive the service
 * until reg_service_free) from reg (taken: freed once the service is freed
 * and its last worker call has returned). Registers the OAP_APP_REGISTRY
 * handler; does not call rbus_listen(). Returns 0 and *svc_out, or
 * RON_EBUSY (no handler slot; reg is freed). Loop thread only.
 */
int reg_service_new(uv_loop_t *loop, rbus_t *bus, reg_t *reg, reg_service_t **svc_out);

/* Stop: later requests are answered 503; memory and reg go once the worker
 * calls in flight return. Call it in the loop turn that frees the bus. NULL
 * does nothing. Loop thread only. */
void reg_service_free(reg_service_t *svc);

/*
 * Enforce capabilities on the registry endpoint with g (borrowed; the
 * process's guard, ron_node_guard(), in a node; NULL, the default: no
 * enforcement). propose, approve and commit need the admin op (the M-of-N
 * signatures are still required); head, get and signers need get (public
 * under the default policy). The token is the request frame's cap section;
 * a rejection is answered with the error envelope (401, 403 or 429) and
 * changes nothing. Loop thread only.
 */
void reg_service_set_guard(reg_service_t *svc, guard_t *g);

/* Append Prometheus text (requests by op and status, head version) to buf
 * (cap bytes). Returns bytes written (0 when cap is too small). */
size_t reg_service_metrics(reg_service_t *svc, char *buf, size_t cap);

#endif
