/*
 * tx_envelope.c - HTTP error bodies: the HTTP facts only. The spec §3 table
 * (slug, retryable) and the envelope's JSON belong to ron-proto; this file
 * adds what HTTP alone needs: the reason phrase of a status line, and which
 * spec §3 status answers an HTTP status the table does not list (417, 501,
 * 505, ...). Pure functions: no allocation.
 */
#include <stdio.h>

#include "ron_proto.h"
#include "ron_transport.h"

_Static_assert(TX_ENVELOPE_MAX >= PROTO_MIN_ERROR_BUF,
               "an error body buffer must hold any envelope (only its message gives way)");

typedef struct {
    int status;
    const char *phrase;
} tx_phrase_t;

/* RFC 9110 reason phrases of the statuses the server and its callers write. */
static const tx_phrase_t tx_phrases[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {413, "Payload Too Large"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {426, "Upgrade Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {507, "Insufficient Storage"},
};

const char *
tx_status_reason(int status)
{
    for (size_t i = 0; i < sizeof tx_phrases / sizeof tx_phrases[0]; i++)
        if (tx_phrases[i].status == status)
            return tx_phrases[i].phrase;
    return "Unknown";
}

/*
 * The spec §3 status whose slug and retryability an HTTP error status
 * carries: itself when the table lists it; 417 and 501 (the request asks for
 * something this server does not do) are bad_request; 505 is proto_mismatch;
 * any other 4xx is bad_request and anything else internal.
 */
static uint16_t
tx_status_envelope(int status)
{
    if (status > 0 && status <= UINT16_MAX && proto_status_find((uint16_t)status) != NULL)
        return (uint16_t)status;
    switch (status) {
    case 417:
    case 501: return 400;
    case 505: return 426;
    default: return status >= 400 && status < 500 ? 400 : 500;
    }
}

const char *
tx_status_slug(int status)
{
    return proto_status_slug(tx_status_envelope(status));
}

bool
tx_status_retryable(int status)
{
    return proto_status_is_retryable(tx_status_envelope(status));
}

size_t
tx_envelope_format(char *out, size_t cap, int status, const char *message, const char *reason,
                   uint64_t corr_id, uint32_t retry_after_ms)
{
    proto_error_t e;
    ssize_t n;

    if (cap == 0)
        return 0;
    proto_error_init(&e, tx_status_envelope(status), corr_id,
                     message != NULL ? message : tx_status_reason(status));
    if (reason != NULL)
        (void)snprintf(e.reason, sizeof e.reason, "%s", reason);
    e.has_retry_after = retry_after_ms > 0;
    e.retry_after_ms = retry_after_ms;
    n = proto_error_write(&e, out, cap);
    if (n < 0) {
        out[0] = '\0'; /* cap below PROTO_MIN_ERROR_BUF and the fields did not fit */
        return 0;
    }
    return (size_t)n;
}
