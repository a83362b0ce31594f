/*
 * pass_service.h - svc-passport as a ron-bus service: the passport protocol
 * (OAP/1 app_proto_id 7, OAP_APP_AUTH, on the endpoint "passport";
 * docs/protocol/passport.md) served from a pass_t. Written against rbus_
 * only (macronode: own process over Unix sockets; micronode: in-process).
 * Every request is answered on the loop thread: challenges and redeems are
 * microseconds; rotation writes the keyring (< 1 KiB, one fsync) at most
 * once per rotation. A timer runs pass_tick every PASS_SVC_TICK_MS, so
 * keys rotate by age while the service runs.
 * Invariants: every request is answered exactly once; the service is
 * freed in the loop turn that frees its bus, so no request follows.
 */
#ifndef PASS_SERVICE_H
#define PASS_SERVICE_H

#include <stddef.h>

#include <uv.h>

#include "ron_bus.h"
#include "svc_passport.h"

/* ---- limits ---- */
#define PASS_SVC_TICK_MS 60000u        /* rotation-by-age check period: a key is late < 1 min */
#define PASS_SVC_RETRY_AFTER_MS 1000u  /* Retry-After of a 503 (challenge set full) */

typedef struct pass_service pass_service_t;

/*
 * Serve the passport protocol on bus (borrowed, must outlive the service
 * until pass_service_free) from p (taken: freed, keys wiped, by
 * pass_service_free). now_fn (NULL: ron_unix_time) gives unix seconds; tests
 * pass a virtual clock. Registers the OAP_APP_AUTH handler and starts the
 * tick timer; does not call rbus_listen(). Returns 0 and *svc_out, or
 * RON_EBUSY (no handler slot; p is freed).
 */
int pass_service_new(uv_loop_t *loop, rbus_t *bus, pass_t *p, int64_t (*now_fn)(void),
                     pass_service_t **svc_out);

/* Stop: free p (wiping its keys) now and close the timer (the service's
 * memory goes in its close callback). Call it in the loop turn that frees
 * the bus (the bus has no way to unregister a handler). NULL does nothing. */
void pass_service_free(pass_service_t *svc);

/* Append Prometheus text (requests by op and status) to buf (cap bytes).
 * Returns bytes written (0 when cap is too small). */
size_t pass_service_metrics(pass_service_t *svc, char *buf, size_t cap);

#endif
