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
 *
 * A component of its own (only ron-bus, ron-proto and oap below it), so
 * svc-storage can use it although svc-overlay depends on svc-storage. The
 * piece geometry below is the storage tree's (storage-tree.md); svc-overlay
 * checks at compile time that it matches svc-storage's.
 */
#ifndef OVL_CLIENT_H
#define OVL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "ron_bus.h"

/* ---- limits ---- */
#define OVL_CLIENT_DEADLINE_MS 30000u    /* bus deadline of one fetch (the service: 504 first) */
#define OVL_CLIENT_FETCH_MAX_LEN 262144u /* bytes one fetch may ask for */
#define OVL_CLIENT_ID_LEN 32u            /* node ids (BLAKE3 of the node key) */
#define OVL_CLIENT_OBJ_LEN 32u           /* object addresses (b3 digests) */
#define OVL_CLIENT_CV_LEN 32u            /* a piece's BLAKE3 chaining value */
#define OVL_CLIENT_NET_ADDR_MAX 255u     /* bytes of a provider's "HOST:PORT" */
#define OVL_CLIENT_PIECE_LEN 65536u      /* storage tree piece (STO_PIECE_LEN) */
#define OVL_CLIENT_PROOF_MAX 1536u       /* bytes of one proof (STO_TREE_MAX_PROOF) */
#define OVL_CLIENT_REC_HDR_LEN 10u       /* record header: u64 piece, u16 proof_len */
#define OVL_CLIENT_CAP_MAX 4096u         /* chars of a token for the provider (AUTH_MAX_TOKEN) */
/* records in one answer: the range's pieces plus the size proof */
#define OVL_CLIENT_PIECES_MAX (OVL_CLIENT_FETCH_MAX_LEN / OVL_CLIENT_PIECE_LEN + 2u)

/* One piece record as the provider sent it and the overlay verified it. */
typedef struct {
    uint64_t piece;       /* index of the 64 KiB piece */
    const uint8_t *proof; /* sibling chaining values, bottom-up (storage-tree.md) */
    size_t proof_len;
    const uint8_t *bytes; /* the piece: 65536 bytes, fewer for the last (0 for an empty object) */
    size_t len;
    const uint8_t *rec; /* the whole record (u64 piece, u16 proof_len, proof, bytes) */
    size_t rec_len;
    /* the piece's BLAKE3 chaining value as the overlay's check computed it from
     * these bytes (32 bytes; NULL when the answer carried none) */
    const uint8_t *cv;
} ovl_client_piece_t;

/* A fetch's answer. */
typedef struct {
    uint64_t size;  /* the object's size (bound by the last piece's proof) */
    uint64_t first; /* first piece of the range */
    uint64_t count; /* pieces of the range */
    size_t n_pieces;
    /* in wire order: the object's last piece first when it lies outside the
     * range (it only proves the size) and the fetch did not state the size,
     * then first .. first + count - 1 */
    ovl_client_piece_t pieces[OVL_CLIENT_PIECES_MAX];
    const void *frame; /* private: the bus answer the views point into (ovl_client_fetch_take) */
} ovl_client_fetch_result_t;

/*
 * Keep the memory res's views point into, from inside the fetch callback
 * res was passed to: returns the start of a malloc block holding every
 * piece's proof, bytes and cv (the caller frees it; the views stay valid
 * until then), or NULL when the bus cannot hand it over (a Unix-socket
 * bus; a result not from a callback): the caller copies what it keeps.
 * Loop thread only.
 */
void *ovl_client_fetch_take(const ovl_client_fetch_result_t *res);

/*
 * Outcome of a fetch: status 0, code 200 and res. Otherwise res is NULL and
 * status is one of: RON_ENOTFOUND (404), RON_ERANGE (416), RON_EBUSY (429,
 * retryable), RON_EBADPIECE (502 bad_piece: the provider lied, now or in
 * the last 10 minutes: do not ask it again), RON_EPEERERR (502 otherwise,
 * e.g. the provider's own copy is damaged), RON_EUNAVAIL (503: dial, TLS,
 * id check or the link failed; retryable), RON_ECAPNEEDED (401: the
 * provider wants a valid capability), RON_ECAPDENY (403: the provider's
 * policy or the capability's caveats refuse it), RON_ETIMEOUT (504, or the bus
 * deadline; retryable), RON_EINVAL (400), RON_EPROTO (an answer that does
 * not parse) with code the status (0 when the bus itself failed: then
 * status is rbus's RON_EUNAVAIL, RON_ETIMEOUT, RON_EBUSY or RON_ESHUTDOWN).
 */
typedef void (*ovl_client_fetch_cb)(void *arg, int status, uint16_t code,
                                    const ovl_client_fetch_result_t *res);

/*
 * Fetch bytes [offset, offset + length) of object addr (length 1 ..
 * OVL_CLIENT_FETCH_MAX_LEN) from the provider with node id provider_id at
 * provider_addr ("HOST:PORT", borrowed), through peer (an outbound peer
 * connected to "overlay"). deadline_ms 0 = OVL_CLIENT_DEADLINE_MS. Returns
 * 0 (cb will run once), RON_EINVAL (length, address), or rbus_request's
 * error (cb never runs).
 */
int ovl_client_fetch(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                     uint64_t offset, uint64_t length,
                     const uint8_t provider_id[static OVL_CLIENT_ID_LEN], const char *provider_addr,
                     uint32_t deadline_ms, ovl_client_fetch_cb cb, void *arg);

#define OVL_CLIENT_SIZE_UNKNOWN UINT64_MAX /* ovl_client_fetch_sized: no size known */

/*
 * ovl_client_fetch for a caller that already verified the object's size
 * (known; OVL_CLIENT_SIZE_UNKNOWN: the same as ovl_client_fetch): the
 * request carries it as "size", so the answer holds the range's pieces
 * only, without the object's last piece as a size proof (overlay.md §3).
 * The overlay still verifies every piece against the address under that
 * size before it answers, and a provider that states another size is a
 * bad piece (502).
 */
int ovl_client_fetch_sized(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                           uint64_t offset, uint64_t length, uint64_t known,
                           const uint8_t provider_id[static OVL_CLIENT_ID_LEN],
                           const char *provider_addr, uint32_t deadline_ms,
                           ovl_client_fetch_cb cb, void *arg);

/*
 * ovl_client_fetch with a capability for the provider: cap (a
 * NUL-terminated token, 1..OVL_CLIENT_CAP_MAX chars; NULL: none) goes in
 * the request's "cap" field, and the overlay service puts it in the START
 * frame's cap section of its get, so a node whose policy denies anonymous
 * get serves us (overlay.md §3 "Capabilities"). Same returns.
 */
int ovl_client_fetch_cap(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                         uint64_t offset, uint64_t length,
                         const uint8_t provider_id[static OVL_CLIENT_ID_LEN],
                         const char *provider_addr, const char *cap, uint32_t deadline_ms,
                         ovl_client_fetch_cb cb, void *arg);

/* Both at once: a sized fetch (known) carrying a capability (cap; NULL: none). */
int ovl_client_fetch_full(rbus_peer_t *peer, const uint8_t addr[static OVL_CLIENT_OBJ_LEN],
                          uint64_t offset, uint64_t length, uint64_t known,
                          const uint8_t provider_id[static OVL_CLIENT_ID_LEN],
                          const char *provider_addr, const char *cap, uint32_t deadline_ms,
                          ovl_client_fetch_cb cb, void *arg);

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
