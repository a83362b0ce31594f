/*
 * tx_envelope.c - the JSON error envelope of spec §3 and the status table
 * (status -> slug, retryable, reason phrase). Kept in one place so that
 * ron-proto's canonical envelope can replace it without touching the server.
 * Pure functions: no allocation.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ron_log.h"
#include "ron_transport.h"

typedef struct {
    int status;
    const char *slug;
    bool retryable;
    const char *phrase;
} tx_status_row_t;

/* spec §3, plus the success and interim statuses the server writes. */
static const tx_status_row_t tx_status_table[] = {
    {100, "continue", false, "Continue"},
    {200, "ok", false, "OK"},
    {201, "created", false, "Created"},
    {202, "accepted", false, "Accepted"},
    {204, "no_content", false, "No Content"},
    {206, "partial_content", false, "Partial Content"},
    {301, "moved", false, "Moved Permanently"},
    {302, "found", false, "Found"},
    {304, "not_modified", false, "Not Modified"},
    {400, "bad_request", false, "Bad Request"},
    {401, "unauthorized", false, "Unauthorized"},
    {403, "forbidden", false, "Forbidden"},
    {404, "not_found", false, "Not Found"},
    {405, "method_not_allowed", false, "Method Not Allowed"},
    {408, "timeout", true, "Request Timeout"},
    {409, "conflict", false, "Conflict"},
    {413, "payload_too_large", false, "Payload Too Large"},
    {416, "range_not_satisfiable", false, "Range Not Satisfiable"},
    {417, "bad_request", false, "Expectation Failed"},
    {426, "proto_mismatch", false, "Upgrade Required"},
    {429, "quota_exhausted", true, "Too Many Requests"},
    {431, "headers_too_large", false, "Request Header Fields Too Large"},
    {500, "internal", true, "Internal Server Error"},
    {501, "bad_request", false, "Not Implemented"},
    {502, "bad_gateway", true, "Bad Gateway"},
    {503, "unavailable", true, "Service Unavailable"},
    {504, "timeout", true, "Gateway Timeout"},
    {505, "proto_mismatch", false, "HTTP Version Not Supported"},
    {507, "insufficient_storage", true, "Insufficient Storage"},
};

static const tx_status_row_t *
tx_status_find(int status)
{
    for (size_t i = 0; i < sizeof tx_status_table / sizeof tx_status_table[0]; i++)
        if (tx_status_table[i].status == status)
            return &tx_status_table[i];
    return NULL;
}

const char *
tx_status_slug(int status)
{
    const tx_status_row_t *r = tx_status_find(status);
    return r != NULL ? r->slug : "internal";
}

bool
tx_status_retryable(int status)
{
    const tx_status_row_t *r = tx_status_find(status);
    return r != NULL ? r->retryable : status >= 500;
}

const char *
tx_status_reason(int status)
{
    const tx_status_row_t *r = tx_status_find(status);
    return r != NULL ? r->phrase : "Unknown";
}

size_t
tx_envelope_format(char *out, size_t cap, int status, const char *message, const char *reason,
                   uint64_t corr_id, uint32_t retry_after_ms)
{
    char msg[200], rsn[80], extra[128];
    int n;

    if (cap == 0)
        return 0;
    ron_json_escape(msg, sizeof msg, message != NULL ? message : tx_status_reason(status));
    extra[0] = '\0';
    if (reason != NULL) {
        ron_json_escape(rsn, sizeof rsn, reason);
        (void)snprintf(extra, sizeof extra, ",\"reason\":\"%s\"", rsn);
    }
    if (retry_after_ms > 0) {
        size_t el = strlen(extra);
        (void)snprintf(extra + el, sizeof extra - el, ",\"retry_after_ms\":%" PRIu32, retry_after_ms);
    }
    n = snprintf(out, cap, "{\"code\":\"%s\",\"message\":\"%s\",\"retryable\":%s,\"corr_id\":\"%" PRIu64 "\"%s}",
                 tx_status_slug(status), msg, tx_status_retryable(status) ? "true" : "false",
                 corr_id, extra);
    if (n < 0)
        n = 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
