/*
 * fuzz_pass_request.c - fuzz target for the passport request parser
 * (pass_request_parse: the JSON of every challenge/redeem/rotate/keys
 * request a node receives). Properties: a refused request names the field
 * at fault and says why, and leaves the output zeroed; an accepted one has
 * an op in range, a redeem has a non-empty ops mask within AUTH_OPS_ALL, a
 * rotate names at least one kind, and re-encoding the parsed request in
 * canonical form parses back to the very same struct.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pass_internal.h"
#include "ron_err.h"
#include "ron_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The canonical JSON of a parsed request into buf (cap bytes). */
static void
canonical(const pass_request_t *r, char *buf, size_t cap)
{
    char n[65], pk[65], sig[129], t[33];
    size_t o;
    const pass_redeem_t *d = &r->redeem;

    if (r->op != PASS_REQ_REDEEM && r->op != PASS_REQ_ROTATE) {
        snprintf(buf, cap, "{\"op\":\"%s\"}", pass__op_name(r->op));
        return;
    }
    if (r->op == PASS_REQ_ROTATE) {
        snprintf(buf, cap, "{\"op\":\"rotate\",\"keys\":[%s%s%s]}",
                 (r->kinds & (1u << PASS_KEY_CAP)) ? "\"cap\"" : "",
                 (r->kinds & (1u << PASS_KEY_CAP)) && (r->kinds & (1u << PASS_KEY_SIGN)) ? ","
                                                                                          : "",
                 (r->kinds & (1u << PASS_KEY_SIGN)) ? "\"sign\"" : "");
        return;
    }
    ron_hex_encode(n, d->nonce, sizeof d->nonce);
    ron_hex_encode(pk, d->pk, sizeof d->pk);
    ron_hex_encode(sig, d->sig, sizeof d->sig);
    ron_hex_encode(t, d->tenant, sizeof d->tenant);
    o = (size_t)snprintf(buf, cap, "{\"op\":\"redeem\",\"challenge\":\"%s\",\"pk\":\"%s\",\"sig\":\"%s\",\"ops\":[", n, pk, sig);
    for (int op = 0, first = 1; op < AUTH_OP_COUNT; op++)
        if (d->ops & (1u << op)) {
            o += (size_t)snprintf(buf + o, cap - o, "%s\"%s\"", first ? "" : ",",
                                  auth_op_name((auth_op_t)op));
            first = 0;
        }
    o += (size_t)snprintf(buf + o, cap - o, "]");
    if (d->ttl != 0)
        o += (size_t)snprintf(buf + o, cap - o, ",\"ttl\":%u", d->ttl);
    if (d->has_tenant)
        o += (size_t)snprintf(buf + o, cap - o, ",\"tenant\":\"%s\"", t);
    snprintf(buf + o, cap - o, "}");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const pass_request_t zero;
    pass_request_t r, r2;
    char field[32], err[160], buf[1024];
    int rc = pass_request_parse((const char *)data, size, &r, field, err, sizeof err);

    if (rc < 0) {
        if ((rc != RON_EPASSREQ && rc != RON_ETOOBIG) || field[0] == '\0' || err[0] == '\0' ||
            memcmp(&r, &zero, sizeof r) != 0)
            abort();
        return 0;
    }
    if ((unsigned)r.op >= PASS_REQ_COUNT)
        abort();
    if (r.op == PASS_REQ_REDEEM && (r.redeem.ops == 0 || (r.redeem.ops & ~AUTH_OPS_ALL) != 0))
        abort();
    if (r.op == PASS_REQ_ROTATE && (r.kinds == 0 || (r.kinds & ~PASS_KEYS_ALL) != 0))
        abort();
    canonical(&r, buf, sizeof buf);
    if (pass_request_parse(buf, strlen(buf), &r2, field, err, sizeof err) != 0 ||
        memcmp(&r, &r2, sizeof r) != 0)
        abort();
    return 0;
}
