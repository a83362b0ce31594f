/*
 * cmd_passport.c - `ron passport login --key FILE [--ops OPS] [--ttl S]
 * [--tenant HEX] [--json]`: get a short-lived capability from a node's
 * passport (docs/protocol/passport.md) by proving possession of an Ed25519
 * key. Asks the app port for a challenge, signs the redeem message
 * (pass_redeem_message: domain, node id, challenge, public key, ops, ttl,
 * tenant) with the key in FILE (a 32-byte seed, raw or 64 hex digits, mode
 * 0600 as for `ron name publish --key`), redeems it and prints the token.
 * The seed lives in sodium_malloc memory and is wiped before exit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "cmd.h"
#include "cmd_client.h"
#include "oap.h"
#include "ron_err.h"
#include "ron_util.h"
#include "svc_passport.h"


static const char login_usage[] =
    "usage: ron passport login --key FILE [--ops OPS] [--ttl SECONDS] [--tenant HEX] [--json]\n"
    "                          [--node ADDR]\n"
    "Prove possession of the Ed25519 key whose 32-byte seed is in FILE (raw or 64 hex\n"
    "digits, mode 0600) to the node's passport and print the capability it grants:\n"
    "OPS (comma-separated, default get) for SECONDS (default 3600, at most 86400),\n"
    "bound to tenant HEX (32 hex digits) when given. The node's grant policy decides;\n"
    "a denied op refuses the whole request. --json prints the whole answer.\n" CLI_COMMON_HELP;

/* Parse "get,put" into a mask. Returns 0 or RON_EINVAL. */
static int
ops_parse(const char *s, uint32_t *mask_out)
{
    uint32_t mask = 0;
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        auth_op_t op;
        if (auth_op_parse(s, n, &op) < 0 || (mask & (1u << op)))
            return RON_EINVAL;
        mask |= 1u << op;
        s += n + (comma != NULL ? 1 : 0);
        if (comma != NULL && *s == '\0')
            return RON_EINVAL;
    }
    *mask_out = mask;
    return mask != 0 ? 0 : RON_EINVAL;
}

/* Hex field name of o into out[0..n). Returns 0 or RON_EPROTO. */
static int
hex_field(json_t *o, const char *name, uint8_t *out, size_t n)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s != NULL && ron_hex_decode(out, n, s, strlen(s)) == 0 ? 0 : RON_EPROTO;
}

/* The redeem request's fields for r as JSON text (caller frees). */
static char *
redeem_args(const pass_redeem_t *r)
{
    char hex[2 * KMS_SIG_LEN + 1];
    json_t *o = json_object(), *ops = json_array();
    char *txt;

    ron_hex_encode(hex, r->nonce, PASS_NONCE_LEN);
    json_object_set_new(o, "challenge", json_string(hex));
    ron_hex_encode(hex, r->pk, KMS_PK_LEN);
    json_object_set_new(o, "pk", json_string(hex));
    for (int op = 0; op < AUTH_OP_COUNT; op++)
        if (r->ops & (1u << op))
            json_array_append_new(ops, json_string(auth_op_name((auth_op_t)op)));
    json_object_set_new(o, "ops", ops);
    if (r->ttl != 0)
        json_object_set_new(o, "ttl", json_integer(r->ttl));
    if (r->has_tenant) {
        ron_hex_encode(hex, r->tenant, AUTH_TENANT_LEN);
        json_object_set_new(o, "tenant", json_string(hex));
    }
    ron_hex_encode(hex, r->sig, KMS_SIG_LEN);
    json_object_set_new(o, "sig", json_string(hex));
    txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return txt;
}

/* Parse the options into r (without challenge and signature). Returns an exit code. */
static int
login_opts(const cli_opts_t *o, pass_redeem_t *r)
{
    const char *ops = cli_get(o, "--ops"), *ttl = cli_get(o, "--ttl"),
               *tenant = cli_get(o, "--tenant");
    uint64_t t;

    memset(r, 0, sizeof *r);
    if (o->n_pos != 0 || cli_get(o, "--key") == NULL || cli_get(o, "--key")[0] == '\0') {
        fputs(login_usage, stderr);
        return RON_EXIT_USAGE;
    }
    if (ops_parse(ops != NULL ? ops : "get", &r->ops) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE,
                            "passport login: --ops takes distinct ops among get, put, pin, "
                            "name, send, recv, admin, mint, comma-separated");
    if (ttl != NULL) {
        if (ron_parse_u64(ttl, strlen(ttl), &t) < 0 || t == 0 || t > UINT32_MAX)
            return ron_cmd_fail(RON_EXIT_USAGE,
                                "passport login: --ttl takes seconds, 1..4294967295");
        r->ttl = (uint32_t)t;
    }
    if (tenant != NULL) {
        if (strlen(tenant) != 2 * AUTH_TENANT_LEN ||
            ron_hex_decode(r->tenant, AUTH_TENANT_LEN, tenant, strlen(tenant)) < 0)
            return ron_cmd_fail(RON_EXIT_USAGE, "passport login: --tenant takes 32 hex digits");
        r->has_tenant = true;
    }
    return RON_EXIT_OK;
}

static int
cmd_passport_login(int argc, char **argv)
{
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    uint8_t *seed = NULL, *sk = NULL;
    uint8_t node_id[KMS_NODE_ID_LEN], msg[PASS_MSG_LEN];
    pass_redeem_t r;
    char *ans = NULL, *args = NULL;
    json_t *j = NULL;
    int rc;

    cli_opt(&o, "--key", true);
    cli_opt(&o, "--ops", true);
    cli_opt(&o, "--ttl", true);
    cli_opt(&o, "--tenant", true);
    cli_opt(&o, "--json", false);
    if ((rc = cli_parse(&o, argc, argv, login_usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if ((rc = login_opts(&o, &r)) != RON_EXIT_OK)
        return rc;
    if (sodium_init() < 0 || (seed = sodium_malloc(KMS_SEED_LEN)) == NULL ||
        (sk = sodium_malloc(crypto_sign_SECRETKEYBYTES)) == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "passport login: libsodium unavailable");
        goto out;
    }
    if ((rc = cli_seed_read("passport login", cli_get(&o, "--key"), seed)) != RON_EXIT_OK)
        goto out;
    crypto_sign_seed_keypair(r.pk, sk, seed);
    if ((rc = cli_client(&o, "passport login", &c)) != RON_EXIT_OK)
        goto out;
    if ((rc = ron_client_request(c, OAP_APP_AUTH, "challenge", NULL, false, &ans, NULL)) < 0) {
        rc = cli_fail(c, "passport login: challenge", rc);
        goto out;
    }
    j = json_loads(ans, 0, NULL);
    if (hex_field(j, "challenge", r.nonce, PASS_NONCE_LEN) < 0 ||
        hex_field(j, "node_id", node_id, KMS_NODE_ID_LEN) < 0) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "passport login: malformed challenge from the node");
        goto out;
    }
    pass_redeem_message(node_id, &r, msg);
    crypto_sign_detached(r.sig, NULL, msg, sizeof msg, sk);
    args = redeem_args(&r);
    free(ans);
    ans = NULL;
    if ((rc = ron_client_request(c, OAP_APP_AUTH, "redeem", args, false, &ans, NULL)) < 0) {
        rc = cli_fail(c, "passport login: redeem", rc);
        goto out;
    }
    json_decref(j);
    j = json_loads(ans, 0, NULL);
    if (json_string_value(json_object_get(j, "token")) == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "passport login: malformed answer from the node");
        goto out;
    }
    if (cli_get(&o, "--json") != NULL)
        printf("%s\n", ans);
    else
        printf("%s\n", json_string_value(json_object_get(j, "token")));
    rc = RON_EXIT_OK;
out:
    json_decref(j);
    free(args);
    if (ans != NULL)
        sodium_memzero(ans, strlen(ans)); /* holds the token */
    free(ans);
    ron_client_free(c);
    sodium_free(seed);
    sodium_free(sk);
    return rc;
}

int
cmd_passport(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "login") == 0)
        return cmd_passport_login(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(login_usage, stdout);
        return RON_EXIT_OK;
    }
    fputs(login_usage, stderr);
    return RON_EXIT_USAGE;
}
