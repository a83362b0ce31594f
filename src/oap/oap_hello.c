/*
 * oap_hello.c - control frames: HELLO and its negotiation (spec §4), error
 * envelope frames (spec §3) and flow-control credit frames
 * (docs/protocol/oap1.md). JSON bodies come from ron-proto.
 * Invariants: max_frame is only ever negotiated downward and never below
 * OAP_MIN_MAX_FRAME; anything but a HELLO as the first frame is answered with
 * proto_mismatch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oap.h"
#include "oap_internal.h"
#include "ron_err.h"

/* Encode f with a JSON payload (takes json: freed here). */
static ssize_t
encode_with_json(oap_frame_t *f, char *json, size_t json_len, uint8_t *out, size_t cap)
{
    ssize_t n;

    f->payload = (const uint8_t *)json;
    f->payload_len = json_len;
    n = oap_frame_encode(f, OAP_MAX_FRAME, out, cap);
    free(json);
    return n;
}

ssize_t
oap_error_frame_encode(const proto_error_t *e, uint16_t app_proto_id, uint8_t *out, size_t cap)
{
    oap_frame_t f;
    uint16_t status;
    char *json;
    size_t len;
    int rc;

    if (proto_slug_status(e->code, &status) < 0)
        return RON_EINVAL;
    rc = proto_error_encode(e, &json, &len);
    if (rc < 0)
        return rc;
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_RESP | OAP_F_END;
    f.code = status;
    f.app_proto_id = app_proto_id;
    f.corr_id = e->corr_id;
    return encode_with_json(&f, json, len, out, cap);
}

ssize_t
oap_error_encode(uint16_t status, uint16_t app_proto_id, uint64_t corr_id, const char *message,
                 const char *reason, uint8_t *out, size_t cap)
{
    proto_error_t e;

    proto_error_init(&e, status, corr_id, message);
    if (reason != NULL)
        snprintf(e.reason, sizeof e.reason, "%s", reason);
    return oap_error_frame_encode(&e, app_proto_id, out, cap);
}

ssize_t
oap_hello_encode(const proto_hello_t *h, uint64_t corr_id, bool bare, uint8_t *out, size_t cap)
{
    oap_frame_t f;
    char *json;
    size_t len;
    int rc = proto_hello_encode(h, &json, &len);

    if (rc < 0)
        return rc;
    memset(&f, 0, sizeof f);
    f.flags = bare ? OAP_F_REQ : (OAP_F_REQ | OAP_F_START | OAP_F_END);
    f.app_proto_id = OAP_APP_CONTROL;
    f.corr_id = corr_id;
    return encode_with_json(&f, json, len, out, cap);
}

static bool
lists_version_1(const uint32_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == OAP_VERSION)
            return true;
    return false;
}

int
oap_hello_parse(const oap_frame_t *f, proto_hello_t *h_out, bool *bare_out, proto_err_t *err_out)
{
    const uint16_t full = OAP_F_REQ | OAP_F_START | OAP_F_END;
    int rc;

    memset(h_out, 0, sizeof *h_out);
    if (f->app_proto_id != OAP_APP_CONTROL || f->code != 0 ||
        (f->flags != full && f->flags != OAP_F_REQ))
        return RON_EVERSION;
    *bare_out = f->flags == OAP_F_REQ;
    if (f->payload_len == 0)
        return 0; /* every field is optional */
    rc = proto_hello_decode((const char *)f->payload, f->payload_len, h_out, err_out);
    if (rc < 0)
        return rc;
    if (h_out->n_versions > 0 && !lists_version_1(h_out->versions, h_out->n_versions))
        return RON_EVERSION;
    return 0;
}

uint32_t
oap_hello_negotiate(uint32_t ours, uint32_t theirs)
{
    uint32_t m = oap__limit(ours);

    if (theirs != 0 && theirs < m)
        m = theirs;
    if (m < OAP_MIN_MAX_FRAME)
        m = OAP_MIN_MAX_FRAME;
    return m;
}

void
oap_hello_reply_init(proto_hello_reply_t *r, uint32_t max_frame, const char *transport)
{
    memset(r, 0, sizeof *r);
    r->max_frame = oap_hello_negotiate(max_frame, 0);
    r->max_inflight = OAP_MAX_INFLIGHT;
    r->flags_supported = OAP_F_KNOWN;
    r->n_versions = 1;
    r->versions[0] = OAP_VERSION;
    if (transport != NULL) {
        r->n_transports = 1;
        snprintf(r->transports[0], sizeof r->transports[0], "%s", transport);
    }
}

int
oap_hello_answer(const oap_frame_t *first, const proto_hello_reply_t *offer, uint8_t *out,
                 size_t cap, size_t *len_out, uint32_t *max_frame_out)
{
    proto_hello_reply_t r = *offer;
    proto_hello_t h;
    proto_err_t err;
    oap_frame_t f;
    bool bare = false;
    char *json;
    size_t len;
    ssize_t n;
    int rc;

    *len_out = 0;
    rc = oap_hello_parse(first, &h, &bare, &err);
    if (rc < 0) {
        const char *why = rc == RON_EJSON ? err.text : "expected HELLO with OAP/1";
        n = oap_error_encode(426, OAP_APP_CONTROL, first->corr_id, why, NULL, out, cap);
        if (n < 0)
            return (int)n;
        *len_out = (size_t)n;
        return RON_EVERSION;
    }
    r.max_frame = oap_hello_negotiate(offer->max_frame, h.has_max_frame ? h.max_frame : 0);
    rc = proto_hello_reply_encode(&r, &json, &len);
    if (rc < 0)
        return rc;
    memset(&f, 0, sizeof f);
    f.flags = bare ? OAP_F_RESP : (OAP_F_RESP | OAP_F_END);
    f.code = 200;
    f.app_proto_id = OAP_APP_CONTROL;
    f.corr_id = first->corr_id;
    n = encode_with_json(&f, json, len, out, cap);
    if (n < 0)
        return (int)n;
    *len_out = (size_t)n;
    *max_frame_out = r.max_frame;
    return 0;
}

int
oap_hello_reply_parse(const oap_frame_t *f, uint64_t corr_id, uint32_t ours,
                      proto_hello_reply_t *r_out, uint32_t *max_frame_out, proto_err_t *err_out)
{
    int rc;

    memset(r_out, 0, sizeof *r_out);
    if (f->app_proto_id != OAP_APP_CONTROL || f->code != 200 || f->corr_id != corr_id ||
        (f->flags != (OAP_F_RESP | OAP_F_END) && f->flags != OAP_F_RESP))
        return RON_EVERSION;
    rc = proto_hello_reply_decode((const char *)f->payload, f->payload_len, r_out, err_out);
    if (rc < 0)
        return rc;
    if (!lists_version_1(r_out->versions, r_out->n_versions))
        return RON_EVERSION;
    *max_frame_out = oap_hello_negotiate(ours, r_out->max_frame);
    return 0;
}

ssize_t
oap_credit_encode(uint64_t corr_id, bool mine, uint32_t frames, uint8_t *out, size_t cap)
{
    oap_frame_t f;
    char *json;
    size_t len;
    int rc = proto_credit_encode(frames, &json, &len);

    if (rc < 0)
        return rc;
    memset(&f, 0, sizeof f);
    f.flags = OAP_F_EVENT | (mine ? OAP_F_REQ : OAP_F_RESP);
    f.app_proto_id = OAP_APP_CONTROL;
    f.corr_id = corr_id;
    return encode_with_json(&f, json, len, out, cap);
}

int
oap_credit_parse(const oap_frame_t *f, uint32_t *frames_out)
{
    int rc;

    if (f->app_proto_id != OAP_APP_CONTROL ||
        (f->flags != (OAP_F_EVENT | OAP_F_REQ) && f->flags != (OAP_F_EVENT | OAP_F_RESP)))
        return 0;
    rc = proto_credit_decode((const char *)f->payload, f->payload_len, frames_out, NULL);
    return rc < 0 ? rc : 1;
}
