/*
 * test_svc_registry_service.c - the registry protocol (OAP/1 app_proto_id 9,
 * docs/protocol/registry.md) over real ron-buses: in-process and over Unix
 * sockets, with a file log in a temporary directory and with RAM. A client
 * walks propose -> approve -> commit with M = 2 of N = 3, reads the head,
 * a version (whose record verifies offline) and the signer set, and gets
 * the documented error envelope for each kind of bad request.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "bus_fixture.h"
#include "reg_service.h"
#include "ron_bus.h"
#include "ron_err.h"
#include "ron_util.h"

typedef bus_fx_t fx_t; /* svc: the reg_service_t */

static void
fx_open(fx_t *fx, bool use_unix, bool amnesia)
{
    char path[128];
    reg_opts_t o = {0};
    reg_service_t *svc = NULL;
    reg_t *reg = NULL;

    bus_fx_open(fx, use_unix, "registry", "/tmp/ron-regsvc-XXXXXX", OAP_APP_REGISTRY);
    fx->need_json = true;
    snprintf(path, sizeof path, "%s/registry.log", fx->tmp);
    o.path = amnesia ? NULL : path;
    assert_int_equal(reg_open(&o, &reg, NULL), 0);
    assert_int_equal(reg_service_new(&fx->loop, fx->srv, reg, &svc), 0);
    fx->svc = svc;
    bus_fx_connect(fx);
}

static void
fx_close(fx_t *fx)
{
    char metrics[16384];
    size_t n = reg_service_metrics(fx->svc, metrics, sizeof metrics - 1);
    metrics[n] = '\0';
    assert_non_null(strstr(metrics, "registry_requests_total{op=\"commit\",status=\"200\"} 1"));
    reg_service_free(fx->svc);
    bus_fx_close(fx);
}

static void
approve(fx_t *fx, const char *idhex, const uint8_t pk[32], const uint8_t sk[64])
{
    uint8_t id[REG_HASH_LEN], sig[REG_SIG_LEN];
    char pkh[65], sigh[129];
    assert_int_equal(ron_hex_decode(id, sizeof id, idhex, strlen(idhex)), 0);
    assert_int_equal(reg_approval_sign(id, sk, sig), 0);
    ron_hex_encode(pkh, pk, 32);
    ron_hex_encode(sigh, sig, sizeof sig);
    bus_fx_call(fx, "{\"op\":\"approve\",\"id\":\"%s\",\"pk\":\"%s\",\"sig\":\"%s\"}", idhex, pkh, sigh);
}

static void
protocol_walk(bool use_unix, bool amnesia)
{
    fx_t fx;
    uint8_t pk[4][32], sk[4][64];
    reg_desc_t *d = calloc(1, sizeof *d);
    reg_report_t rep;
    char *desc, id[65], *line;
    size_t n;

    assert_true(sodium_init() >= 0);
    for (int i = 0; i < 4; i++)
        crypto_sign_keypair(pk[i], sk[i]);
    fx_open(&fx, use_unix, amnesia);

    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"head\"}"), 200);
    assert_string_equal(bus_fx_jstr(fx.json, "version"), "0");
    assert_true(json_is_true(json_object_get(fx.json, "writable")));
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"signers\"}"), 404);

    d->version = 1;
    d->n_peers = 1;
    strcpy(d->peers[0], "[::1]:5302");
    d->threshold = 2;
    d->n_signers = 3;
    memcpy(d->signers, pk, 3 * 32);
    assert_int_equal(reg_desc_encode(d, &desc, &n), 0);
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"propose\",\"descriptor\":%s}", desc), 200);
    snprintf(id, sizeof id, "%s", bus_fx_jstr(fx.json, "id"));
    assert_string_equal(bus_fx_jstr(fx.json, "version"), "1");

    approve(&fx, id, pk[0], sk[0]);
    assert_int_equal(fx.code, 200);
    assert_string_equal(bus_fx_jstr(fx.json, "approvals"), "1");
    assert_string_equal(bus_fx_jstr(fx.json, "threshold"), "2");
    approve(&fx, id, pk[0], sk[0]);
    assert_int_equal(fx.code, 409);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "duplicate_approval");
    approve(&fx, id, pk[3], sk[3]);
    assert_int_equal(fx.code, 403);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "unknown_signer");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"commit\",\"id\":\"%s\"}", id), 409);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "quorum");
    approve(&fx, id, pk[2], sk[2]);
    assert_int_equal(fx.code, 200);
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"commit\",\"id\":\"%s\"}", id), 200);
    assert_string_equal(bus_fx_jstr(fx.json, "version"), "1");
    assert_string_equal(bus_fx_jstr(fx.json, "hash") + 3, id);
    /* the same proposal again: its base is gone */
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"propose\",\"descriptor\":%s}", desc), 409);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "stale_base");

    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"get\",\"version\":\"1\"}"), 200);
    n = strlen(bus_fx_jstr(fx.json, "record"));
    line = malloc(n + 1);
    memcpy(line, bus_fx_jstr(fx.json, "record"), n);
    line[n] = '\n';
    assert_int_equal(reg_verify_buf(line, n + 1, 1, NULL, &rep), 0);
    free(line);
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"get\",\"version\":\"2\"}"), 404);
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"signers\"}"), 200);
    assert_string_equal(bus_fx_jstr(fx.json, "threshold"), "2");
    assert_int_equal(json_array_size(json_object_get(fx.json, "keys")), 3);

    /* bad requests: one 400 each, naming the field */
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"head\",\"x\":1}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "x");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"get\",\"version\":1}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "version");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"commit\",\"id\":\"zz\"}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "id");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"propose\",\"descriptor\":{\"v\":1}}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "descriptor");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"propose\",\"descriptor\":{\"v\":1,\"v\":1}}"), 400);
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"rename\"}"), 400);
    assert_string_equal(bus_fx_jstr(fx.json, "reason"), "op");
    assert_int_equal(bus_fx_call(&fx, "{\"op\":\"commit\",\"id\":\"%064d\"}", 0), 404);

    free(desc);
    free(d);
    fx_close(&fx);
}

static void
test_registry_service_walks_propose_approve_commit_in_process_ram(void **state)
{
    (void)state;
    protocol_walk(false, true);
}

static void
test_registry_service_walks_propose_approve_commit_over_unix_sockets_with_a_file(void **state)
{
    (void)state;
    protocol_walk(true, false);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_service_walks_propose_approve_commit_in_process_ram),
        cmocka_unit_test(
            test_registry_service_walks_propose_approve_commit_over_unix_sockets_with_a_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
