/*
 * fuzz_omni_request.c - libFuzzer target for the app port's request parser
 * (omni_request_parse): the first input byte picks the app (0, 1, 2, 6 or
 * any other), the rest is a START frame's JSON payload. Whatever it
 * returns, the parser must not crash or leak; a success must name a known
 * op of that app, and what it forwards must be a JSON object without
 * "idem" whose "op" is set.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnigate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond)
{
    if (!cond)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t apps[] = {0, 1, 2, 6, 3, 7, 9};
    omni_request_t r;
    proto_err_t err;
    uint16_t app;
    json_t *o;

    if (size == 0)
        return 0;
    app = apps[data[0] % (sizeof apps / sizeof apps[0])];
    if (omni_request_parse(app, data + 1, size - 1, "app", &r, &err) < 0) {
        check(r.fwd == NULL);
        check(err.text[0] != '\0');
        return 0;
    }
    check((unsigned)r.op < OMNI_OP__COUNT);
    check(r.app_proto_id == app);
    check(strcmp(omni_op_name(r.op), "invalid") != 0);
    if (r.fwd != NULL) {
        o = json_loadb(r.fwd, r.fwd_len, 0, NULL);
        check(o != NULL && json_is_object(o));
        check(json_object_get(o, "idem") == NULL);
        check(json_is_string(json_object_get(o, "op")));
        json_decref(o);
    } else {
        check(r.op == OMNI_OP_PING || r.op == OMNI_OP_GET);
    }
    omni_request_close(&r);
    return 0;
}
