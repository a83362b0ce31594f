/*
 * omni_internal.h - shared between the files of src/omnigate/ and its tests
 * only: the idempotency cache (omni_idem.c) and the loopback check used by
 * the connection code (omni_conn.c).
 */
#ifndef OMNI_INTERNAL_H
#define OMNI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "omnigate.h"

typedef struct omni_idem omni_idem_t;

/* A cache of OMNI_IDEM_ENTRIES answers, each kept OMNI_IDEM_TTL_MS. Returns new. */
omni_idem_t *omni__idem_new(void);
void omni__idem_free(omni_idem_t *c);

/*
 * Look up (tenant, app, op, idem) at time now_ms (monotonic). Returns the
 * remembered status and sets *json_out and *len_out (views valid until the next
 * put), or 0 when there is none (or it expired).
 */
uint16_t omni__idem_get(omni_idem_t *c, const uint8_t tenant[16], uint16_t app, omni_op_t op,
                        const char *idem, uint64_t now_ms, const char **json_out,
                        size_t *len_out);

/* Remember an answer (json copied; over OMNI_MAX_ANSWER bytes it is not kept). */
void omni__idem_put(omni_idem_t *c, const uint8_t tenant[16], uint16_t app, omni_op_t op,
                    const char *idem, uint64_t now_ms, uint16_t status, const char *json,
                    size_t len);

/* True for a loopback peer (127/8, ::1, ::ffff:127/104); NULL or other families: false. */
bool omni__addr_is_loopback(const struct sockaddr_storage *ss);

#endif
