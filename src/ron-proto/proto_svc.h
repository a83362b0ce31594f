/*
 * proto_svc.h - the skeleton of a strict JSON bus service (the registry and
 * index protocols; docs/protocol/registry.md, index.md), so each service
 * writes only its own operations.
 *
 * Such a service takes one request frame holding a big-endian u32 JSON
 * length and that many bytes of compact JSON {"op":..., ...}, then nothing
 * (registry, index, dht) or raw bytes (storage: raw_follows); it answers 200
 * with the same framing, or an error with the spec §3 envelope alone. What proto_svc does for it:
 *   - the op table: each op's name and the keys allowed beside "op";
 *   - proto_svc_parse(): the frame checked strictly (short payload, length
 *     out of range or not matching the payload, JSON that is not an object,
 *     duplicate keys, unknown op, unknown key -> a 400 described in
 *     proto_svc_fail_t: reason and message, the answer the service sends);
 *   - per-op counters by status code (family `metric`{op,status}, statuses
 *     200 400 401 403 404 409 429 500 503 507 unless the service names its
 *     own, and "other"; op "invalid" for
 *     requests whose op is unknown) in a metrics registry the service may add
 *     its own metrics to, and their Prometheus text (proto_svc_metrics());
 *   - the service's table from its error codes to answers (proto_svc_rc_find)
 *     and the strict read of an optional string field (proto_svc_get_text);
 *   - proto_svc_frame_ok(): a 200 answer's bytes from a JSON object.
 * Sending stays with the service (ron-bus sits above ron-proto): it counts
 * with proto_svc_count() and answers with rbus_respond / rbus_respond_error_ex.
 * Loop thread only, like the services that use it; no I/O.
 */
#ifndef PROTO_SVC_H
#define PROTO_SVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ron_metrics.h"
#include "ron_proto.h"

/* ---- limits ---- */
#define PROTO_SVC_MAX_OPS 16u      /* ops of one service (the registry has 6) */
#define PROTO_SVC_MAX_MESSAGE 256u /* a refusal's message, NUL included: one line for a human */
#define PROTO_SVC_MAX_STATUSES 16u /* status codes counted by name (more count as "other") */

/* One operation: its name (the request's "op") and the keys allowed beside
 * "op" (NULL-terminated; NULL or {NULL}: none). Both borrowed for the
 * service's life (static tables). */
typedef struct {
    const char *name;
    const char *const *fields;
} proto_svc_op_t;

/* A service's description; borrowed for its life (a static const). */
typedef struct {
    const char *what;          /* in messages: "registry" -> "... follow registry requests" */
    const char *metric;        /* counter family: "registry_requests_total" */
    const char *help;          /* its HELP text */
    const proto_svc_op_t *ops; /* n_ops entries; an op is its index */
    size_t n_ops;              /* 1..PROTO_SVC_MAX_OPS */
    uint32_t max_json;         /* bound of the JSON part, bytes */
    bool raw_follows;          /* raw bytes may follow the JSON (else: exactly u32 + JSON) */
    const char *frame_message; /* message for a bad length prefix; NULL: the defaults */
    const uint16_t *statuses;  /* status codes counted by name; NULL: the default list */
    size_t n_statuses;         /* with statuses: 1..PROTO_SVC_MAX_STATUSES */
} proto_svc_desc_t;

/* A request that passed proto_svc_parse(). */
typedef struct {
    json_t *o;          /* the JSON object (new; the caller decrefs it) */
    int op;             /* its op, an index into the table */
    const uint8_t *raw; /* raw_follows: the bytes after the JSON (a view into the payload) */
    size_t raw_len;
} proto_svc_req_t;

/* A refused request: the error answer to send (code, reason, message). */
typedef struct {
    uint16_t code;                       /* 400 */
    char reason[PROTO_MAX_REASON + 1];   /* the bad field ("op", a key), "" = none */
    char message[PROTO_SVC_MAX_MESSAGE]; /* for the envelope's message */
} proto_svc_fail_t;

/* One row of a service's table from its own error codes to answers. */
typedef struct {
    int rc;                  /* a negative RON_E* code */
    uint16_t code;           /* the answer's status */
    const char *reason;      /* the envelope's reason, NULL: none */
    uint32_t retry_after_ms; /* 0: none */
} proto_svc_rc_t;

typedef struct proto_svc proto_svc_t;

/*
 * A service skeleton for d (borrowed; must outlive it) with a new metrics
 * registry holding the request counters. Returns 0 and *svc_out, or
 * RON_EINVAL (no ops, too many, a NULL name).
 */
int proto_svc_new(const proto_svc_desc_t *d, proto_svc_t **svc_out);

/* Free s and its registry (with every metric the service added). NULL: nothing. */
void proto_svc_free(proto_svc_t *s);

/* The metrics registry (a view, valid until proto_svc_free): the service
 * registers its own metrics here, beside the request counters. */
met_registry_t *proto_svc_registry(proto_svc_t *s);

/* The name of op: its table entry's, or "invalid" for n_ops and out of range. */
const char *proto_svc_op_name(const proto_svc_t *s, int op);

/* Count one answer to op (n_ops: unknown op) with status code (any code;
 * one outside the status list counts as "other"). */
void proto_svc_count(proto_svc_t *s, int op, uint16_t code);

/*
 * Check a request payload (the frame's payload, len bytes) strictly. Returns
 * 0 with *req_out; or RON_EJSON with req_out->o = NULL, req_out->op = the op
 * when it was known (n_ops otherwise) and *fail_out the 400 answer to send.
 * Counts nothing: the service counts the answer it sends.
 */
int proto_svc_parse(const proto_svc_t *s, const uint8_t *payload, size_t len,
                    proto_svc_req_t *req_out, proto_svc_fail_t *fail_out);

/*
 * Copy the optional string field name of o (at most cap - 1 bytes, no NUL
 * inside) into out. Returns 1 present, 0 absent, -1 malformed (not a
 * string, too long, a NUL inside).
 */
int proto_svc_get_text(const json_t *o, const char *name, char *out, size_t cap);

/* The row of map (n rows) for rc, or NULL (the caller's default, usually 500). */
const proto_svc_rc_t *proto_svc_rc_find(const proto_svc_rc_t *map, size_t n, int rc);

/*
 * A 200 answer's bytes: the u32 length then o (taken) as compact JSON in
 * insertion order. Returns 0 with *buf_out (new; free it) and *len_out, and
 * counts 200 for op; or -ENOMEM (o cannot be encoded), counting nothing.
 */
int proto_svc_frame_ok(proto_svc_t *s, int op, json_t *o, uint8_t **buf_out, size_t *len_out);

/*
 * The registry's metrics as Prometheus text into buf (cap bytes, not
 * NUL-terminated). Returns the length, or 0 when it does not fit.
 */
size_t proto_svc_metrics(proto_svc_t *s, char *buf, size_t cap);

#endif
