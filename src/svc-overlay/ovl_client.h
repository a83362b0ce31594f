/*
 * ovl_client.h - a client of the `overlay` ron-bus endpoint (app_proto_id
 * OAP_APP_OVERLAY; docs/protocol/overlay.md §6), for svc-storage's fetch on
 * miss: ask the overlay service for a range of an object from one provider
 * and get back the verified pieces with their proofs, decoded.
 *
 * Loop-thread only, asynchronous: each call sends one request and reports
 * once through its callback, never from inside the call. The piece list
 * holds views into the answer frame, valid during the callback only (copy
 * what you keep).
 */
#ifndef OVL_CLIENT_H
#define OVL_CLIENT_H

#include <stdint.h>

#include "ovl_service.h"
#include "ron_bus.h"

/* ---- limits ---- */
#define OVL_CLIENT_DEADLINE_MS                                                                     \
    30000u /* bus deadline of one fetch (the service answers 504 first) */

/* One piece record as the provider sent it and the overlay verified it. */
typedef struct {
    uint64_t piece;       /* index of the 64 KiB piece */
    const uint8_t *proof; /* sibling chaining values, bottom-up (storage-tree.md) */
    size_t proof_len;
    const uint8_t *bytes; /* the piece: sto_tree_piece_len(size, piece) bytes */
    size_t len;
    const uint8_t *rec; /* the whole record (u64 piece, u16 proof_len, proof, bytes) */
    size_t rec_len;
} ovl_client_piece_t;

/* A fetch's answer. */
typedef struct {
    uint64_t size;  /* the object's size (bound by the last piece's proof) */
    uint64_t first; /* first piece of the range */
    uint64_t count; /* pieces of the range */
    size_t n_pieces;
    /* in wire order: the object's last piece first when it lies outside the
     * range (it only proves the size), then first .. first + count - 1 */
    ovl_client_piece_t pieces[OVL_SVC_PIECES_MAX];
} ovl_client_fetch_result_t;

/*
 * Outcome of a fetch: status 0, code 200 and res. Otherwise res is NULL and
 * status is one of: RON_ENOTFOUND (404), RON_ERANGE (416), RON_EBUSY (429,
 * retryable), RON_EBADPIECE (502 bad_piece: the provider lied, now or in
 * the last 10 minutes: do not ask it again), RON_EPEERERR (502 otherwise,
 * e.g. the provider's own copy is damaged), RON_EUNAVAIL (503: dial, TLS,
 * id check or the link failed; retryable), RON_ETIMEOUT (504, or the bus
 * deadline; retryable), RON_EINVAL (400), RON_EPROTO (an answer that does
 * not parse) with code the status (0 when the bus itself failed: then
 * status is rbus's RON_EUNAVAIL, RON_ETIMEOUT, RON_EBUSY or RON_ESHUTDOWN).
 */
typedef void (*ovl_client_fetch_cb)(void *arg, int status, uint16_t code,
                                    const ovl_client_fetch_result_t *res);

/*
 * Fetch bytes [offset, offset + length) of object addr (length 1 ..
 * OVL_SVC_FETCH_MAX_LEN) from the provider with node id provider_id at
 * provider_addr ("HOST:PORT", borrowed), through peer (an outbound peer
 * connected to "overlay"). deadline_ms 0 = OVL_CLIENT_DEADLINE_MS. Returns
 * 0 (cb will run once), RON_EINVAL (length, address), or rbus_request's
 * error (cb never runs).
 */
int ovl_client_fetch(rbus_peer_t *peer, const uint8_t addr[static STO_ADDR_LEN], uint64_t offset,
                     uint64_t length, const uint8_t provider_id[static OVL_ID_LEN],
                     const char *provider_addr, uint32_t deadline_ms, ovl_client_fetch_cb cb,
                     void *arg);

/*
 * Decode a 200 answer's payload (u32 json_len || JSON || records) into res
 * (views into payload). Returns 0 or RON_EPROTO. Exposed for tests and for
 * callers that use rbus_request directly.
 */
int ovl_client_fetch_decode(const uint8_t *payload, size_t len, ovl_client_fetch_result_t *res);

/*
 * Ask for `peers` or `status` (op, borrowed): cb gets the answer's JSON text
 * (a view valid during the call; NULL on failure) with status and code as
 * above. Returns 0 or rbus_request's error.
 */
typedef void (*ovl_client_json_cb)(void *arg, int status, uint16_t code, const char *json,
                                   size_t len);
int ovl_client_query(rbus_peer_t *peer, const char *op, ovl_client_json_cb cb, void *arg);

#endif
