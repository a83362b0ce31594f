/*
 * cmd_cap.c - the offline capability commands (DESIGN.md §11,
 * docs/protocol/capabilities.md):
 *   ron cap attenuate TOKEN CAVEAT...   print TOKEN narrowed by the caveats
 *   ron cap verify TOKEN [--key FILE] [--json] [--now T] [request options]
 * Both work on the token alone, without a node: attenuation needs no key,
 * and verify checks structure, caveat grammar, time (with the 60 s skew)
 * and, given the root key, the signature. TOKEN "-" reads one line from
 * stdin, so a token need not appear in the process list.
 *   ron cap mint --ops OPS [--ttl DUR] [--tenant T] [--max-bytes N] [--prefix P]
 * asks the node's app port (op cap_mint, app-port.md §5c) for a fresh token
 * narrowed from the caller's capability (which must allow mint) and prints
 * only the token. `ron cap revoke` is in cmd_cap_revoke.c.
 * Exit codes: 0 ok, 1 the token fails verification (or the node refused),
 * 2 bad usage or input (a malformed token or caveat argument).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"
#include "cmd_client.h"
#include "oap.h"
#include "ron_auth.h"
#include "ron_err.h"
#include "ron_util.h"

static const char cap_usage[] =
    "usage: ron cap attenuate TOKEN CAVEAT...\n"
    "       ron cap verify TOKEN [--key FILE] [--json] [--now UNIX]\n"
    "                    [--op OP] [--tenant HEX] [--size N] [--addr b3:HEX] [--name NAME]\n"
    "       ron cap mint --ops OPS [--ttl DUR] [--tenant HEX] [--max-bytes N] [--prefix b3:HEX]\n"
    "       ron cap revoke ID [--until UNIX] | --epoch   (ron cap revoke --help)\n"
    "  attenuate: print TOKEN with the caveats appended (offline; it can only narrow).\n"
    "    A caveat is `key = value`: tenant, ops, expires, not-before, max-bytes,\n"
    "    prefix, name-prefix, rate (docs/protocol/capabilities.md).\n"
    "  verify: check TOKEN offline: encoding, identifier, every caveat, time (60 s\n"
    "    skew) and, with --key FILE (the root key as 64-128 hex digits, mode 0600),\n"
    "    the signature. --op and the other request options check a request too.\n"
    "  mint: ask the node (app port) for a fresh token narrowed from yours (see\n"
    "    ron cap mint --help).\n"
    "  TOKEN - reads the token from stdin.\n"
    "  Exit 0 ok, 1 the token fails verification, 2 bad usage or malformed input.\n";

/* Read TOKEN ("-": one line of stdin) into buf. Returns its length or -1. */
static long
token_arg(const char *arg, char *buf, size_t cap)
{
    size_t n;

    if (strcmp(arg, "-") != 0) {
        n = strlen(arg);
        if (n >= cap)
            return -1;
        memcpy(buf, arg, n + 1);
        return (long)n;
    }
    if (fgets(buf, (int)cap, stdin) == NULL)
        return -1;
    n = strcspn(buf, "\r\n");
    if (buf[n] == '\0' && n == cap - 1)
        return -1; /* longer than any token */
    buf[n] = '\0';
    return (long)n;
}

static int
cap_attenuate(int argc, char **argv)
{
    char tok[AUTH_MAX_TOKEN + 2], out[AUTH_MAX_TOKEN + 1];
    long len, n;

    if (argc < 3) {
        fprintf(stderr, "%s", cap_usage);
        return RON_EXIT_USAGE;
    }
    len = token_arg(argv[1], tok, sizeof tok);
    if (len < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "cap attenuate: token missing or over %d bytes",
                            AUTH_MAX_TOKEN);
    for (int i = 2; i < argc; i++) {
        auth_grant_t g;
        auth_grant_init(&g);
        if (auth_caveat_apply(&g, argv[i], strlen(argv[i])) < 0)
            return ron_cmd_fail(RON_EXIT_USAGE,
                                "cap attenuate: caveat '%s' is not `key = value` with a known key "
                                "and a valid value",
                                argv[i]);
    }
    n = auth_attenuate(tok, (size_t)len, (const char *const *)argv + 2, (size_t)(argc - 2), out,
                       sizeof out);
    if (n == RON_ECAPFORMAT)
        return ron_cmd_fail(RON_EXIT_USAGE,
                            "cap attenuate: token malformed or would exceed %d caveats",
                            AUTH_MAX_CAVEATS);
    if (n < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "cap attenuate: %s", ron_strerror((int)n));
    printf("%s\n", out);
    return RON_EXIT_OK;
}

/* Read a root key file: 64..128 hex digits, optional trailing newline,
 * not readable by group or others. Returns the key length or -1 (msg set). */
static long
key_file_read(const char *path, uint8_t key[static AUTH_MAX_KEY], char *msg, size_t cap)
{
    char hex[2 * AUTH_MAX_KEY + 3];
    struct stat st;
    ssize_t n;
    long rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(msg, cap, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || (st.st_mode & 077) != 0) {
        snprintf(msg, cap, "%s is open to group or others (chmod 600)", path);
        goto out;
    }
    n = read(fd, hex, sizeof hex - 1);
    if (n < 0) {
        snprintf(msg, cap, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r'))
        n--;
    if (n < 2 * AUTH_MIN_KEY || n > 2 * AUTH_MAX_KEY || n % 2 != 0 ||
        ron_hex_decode(key, (size_t)n / 2, hex, (size_t)n) < 0) {
        snprintf(msg, cap, "%s: a root key is %d to %d hex digits", path, 2 * AUTH_MIN_KEY,
                 2 * AUTH_MAX_KEY);
        goto out;
    }
    rc = n / 2;
out:
    explicit_bzero(hex, sizeof hex);
    close(fd);
    return rc;
}

static json_t *
grant_json(const auth_grant_t *g)
{
    json_t *o = json_object(), *ops = json_array();
    char hex[2 * AUTH_TENANT_LEN + 1];

    for (int i = 0; i < AUTH_OP_COUNT; i++)
        if (g->ops & (1u << i))
            json_array_append_new(ops, json_string(auth_op_name((auth_op_t)i)));
    json_object_set_new(o, "ops", ops);
    if (g->has_tenant) {
        ron_hex_encode(hex, g->tenant, AUTH_TENANT_LEN);
        json_object_set_new(o, "tenant", json_string(hex));
    }
    if (g->not_before != INT64_MIN)
        json_object_set_new(o, "not_before", json_integer(g->not_before));
    if (g->expires != INT64_MAX)
        json_object_set_new(o, "expires", json_integer(g->expires));
    if (g->max_bytes != UINT64_MAX) /* as a string: it may pass 2^53 */
        json_object_set_new(o, "max_bytes", json_sprintf("%" PRIu64, g->max_bytes));
    if (g->prefix_len > 0)
        json_object_set_new(o, "prefix", json_sprintf("b3:%s", g->prefix));
    if (g->name_prefix_len > 0)
        json_object_set_new(o, "name_prefix", json_string(g->name_prefix));
    if (g->rate > 0)
        json_object_set_new(o, "rate", json_integer(g->rate));
    if (g->n_ancestors > 0) {
        json_t *anc = json_array();
        char nh[2 * AUTH_NONCE_LEN + 1];
        for (size_t i = 0; i < g->n_ancestors; i++) {
            ron_hex_encode(nh, g->ancestors[i], AUTH_NONCE_LEN);
            json_array_append_new(anc, json_string(nh));
        }
        json_object_set_new(o, "ancestors", anc);
    }
    if (g->conflict != AUTH_OK)
        json_object_set_new(o, "conflict", json_string(auth_reason_name(g->conflict)));
    return o;
}

static void
grant_print(const auth_grant_t *g)
{
    char hex[2 * AUTH_TENANT_LEN + 1];
    const char *sep = "";

    printf("grant:     ops ");
    for (int i = 0; i < AUTH_OP_COUNT; i++)
        if (g->ops & (1u << i)) {
            printf("%s%s", sep, auth_op_name((auth_op_t)i));
            sep = ",";
        }
    if (g->ops == 0)
        printf("(none)");
    if (g->has_tenant) {
        ron_hex_encode(hex, g->tenant, AUTH_TENANT_LEN);
        printf("; tenant %s", hex);
    }
    if (g->not_before != INT64_MIN)
        printf("; not-before %" PRId64, g->not_before);
    if (g->expires != INT64_MAX)
        printf("; expires %" PRId64, g->expires);
    if (g->max_bytes != UINT64_MAX)
        printf("; max-bytes %" PRIu64, g->max_bytes);
    if (g->prefix_len > 0)
        printf("; prefix b3:%s", g->prefix);
    if (g->name_prefix_len > 0)
        printf("; name-prefix %s", g->name_prefix);
    if (g->rate > 0)
        printf("; rate %" PRIu32 "/s", g->rate);
    if (g->n_ancestors > 0)
        printf("; dies with %u ancestor%s", (unsigned)g->n_ancestors,
               g->n_ancestors == 1 ? "" : "s");
    if (g->conflict != AUTH_OK)
        printf("; caveats contradict (%s): nothing allowed", auth_reason_name(g->conflict));
    printf("\n");
}

typedef struct {
    const char *token, *key, *op, *tenant, *size, *addr, *name, *now;
    bool json;
} verify_args_t;

static int
verify_parse_args(int argc, char **argv, verify_args_t *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        static const char *const opts[] = {"--key",  "--op",   "--tenant", "--size",
                                           "--addr", "--name", "--now"};
        const char **dst[] = {&a->key, &a->op, &a->tenant, &a->size, &a->addr, &a->name, &a->now};
        bool matched = false;
        for (size_t k = 0; k < sizeof opts / sizeof opts[0] && !matched; k++)
            if (strcmp(argv[i], opts[k]) == 0 && i + 1 < argc) {
                *dst[k] = argv[++i];
                matched = true;
            }
        if (matched)
            continue;
        if (strcmp(argv[i], "--json") == 0)
            a->json = true;
        else if (a->token == NULL && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
            a->token = argv[i];
        else
            return ron_cmd_fail(RON_EXIT_USAGE, "cap verify: unexpected argument '%s'", argv[i]);
    }
    if (a->token == NULL)
        return ron_cmd_fail(RON_EXIT_USAGE, "cap verify: no TOKEN (see ron cap --help)");
    return 0;
}

/* Build the request of --op etc. Returns 0 or an exit code. */
static int
verify_request(const verify_args_t *a, auth_request_t *req)
{
    uint64_t v;

    memset(req, 0, sizeof *req);
    req->size = AUTH_SIZE_UNKNOWN;
    req->now = ron_unix_time();
    req->addr = a->addr;
    req->name = a->name;
    if (a->now != NULL) {
        if (ron_parse_u64(a->now, strlen(a->now), &v) < 0 || v > (uint64_t)INT64_MAX)
            return ron_cmd_fail(RON_EXIT_USAGE, "cap verify: --now needs unix seconds");
        req->now = (int64_t)v;
    }
    if (a->op != NULL && auth_op_parse(a->op, strlen(a->op), &req->op) < 0)
        return ron_cmd_fail(
            RON_EXIT_USAGE,
            "cap verify: --op is one of get, put, pin, name, send, recv, admin, mint");
    if (a->tenant != NULL) {
        if (strlen(a->tenant) != 2 * AUTH_TENANT_LEN ||
            ron_hex_decode(req->tenant, AUTH_TENANT_LEN, a->tenant, strlen(a->tenant)) < 0)
            return ron_cmd_fail(RON_EXIT_USAGE, "cap verify: --tenant needs 32 hex digits");
        req->has_tenant = true;
    }
    if (a->size != NULL) {
        if (ron_parse_u64(a->size, strlen(a->size), &v) < 0 || v == AUTH_SIZE_UNKNOWN)
            return ron_cmd_fail(RON_EXIT_USAGE, "cap verify: --size needs a byte count");
        req->size = v;
    }
    return 0;
}

static int
cap_verify(int argc, char **argv)
{
    verify_args_t a;
    auth_request_t req;
    auth_token_t *t = NULL;
    auth_verifier_t *v = NULL;
    auth_verdict_t vd;
    auth_reason_t reason;
    uint8_t key[AUTH_MAX_KEY];
    char tok[AUTH_MAX_TOKEN + 2], msg[256] = "";
    const char *sig_state = "unchecked";
    long len, key_len;
    int rc, exit_code;

    if ((rc = verify_parse_args(argc, argv, &a)) != 0)
        return rc;
    if ((rc = verify_request(&a, &req)) != 0)
        return rc;
    len = token_arg(a.token, tok, sizeof tok);
    if (len < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "cap verify: token missing or over %d bytes",
                            AUTH_MAX_TOKEN);
    t = ron_xmalloc(sizeof *t);
    rc = auth_token_parse(tok, (size_t)len, t);
    if (rc == RON_ECAPFORMAT) {
        exit_code = ron_cmd_fail(RON_EXIT_USAGE, "cap verify: %s", ron_strerror(rc));
        goto out;
    }
    /* Without --op, ask for an op the token allows (none: it allows nothing). */
    for (int i = 0; a.op == NULL && rc == 0 && i < AUTH_OP_COUNT; i++)
        if (t->grant.ops & (1u << i)) {
            req.op = (auth_op_t)i;
            break;
        }
    if (a.key != NULL) {
        key_len = key_file_read(a.key, key, msg, sizeof msg);
        if (key_len < 0) {
            exit_code = ron_cmd_fail(RON_EXIT_USAGE, "cap verify: %s", msg);
            goto out;
        }
        v = auth_verifier_new(NULL, 0);
        if (v == NULL || auth_verifier_add_key(v, t->id.kid, key, (size_t)key_len) < 0) {
            exit_code = ron_cmd_fail(RON_EXIT_FAIL, "cap verify: cannot load the key");
            goto out;
        }
        auth_verify(v, tok, (size_t)len, &req, &vd);
        reason = vd.reason;
        sig_state = reason == AUTH_DENY_SIGNATURE ? "bad" : "verified";
    } else if (rc == RON_ECAPCAVEAT) {
        reason = AUTH_DENY_CAVEAT;
    } else {
        reason = auth_grant_check(&t->grant, &req, NULL);
    }
    exit_code = reason == AUTH_OK ? RON_EXIT_OK : RON_EXIT_FAIL;
    if (a.json) {
        json_t *o = json_object(), *cav = json_array();
        char hex[2 * AUTH_SIG_LEN + 1];
        for (size_t i = 0; i < t->n_caveats; i++)
            json_array_append_new(cav, json_string(t->caveats[i]));
        ron_hex_encode(hex, t->sig, AUTH_SIG_LEN);
        json_object_set_new(o, "ok", json_boolean(reason == AUTH_OK));
        json_object_set_new(o, "reason", json_string(auth_reason_name(reason)));
        json_object_set_new(o, "id", json_string(t->id_str));
        json_object_set_new(o, "kid", json_string(t->id.kid));
        json_object_set_new(o, "epoch", json_sprintf("%" PRIu64, t->id.epoch));
        json_object_set_new(o, "location", json_string(t->location));
        json_object_set_new(o, "caveats", cav);
        json_object_set_new(o, "signature", json_string(sig_state));
        json_object_set_new(o, "signature_hex", json_string(hex));
        if (rc == 0)
            json_object_set_new(o, "grant", grant_json(&t->grant));
        char *s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("id:        %s (kid %s, epoch %" PRIu64 ")\n", t->id_str, t->id.kid, t->id.epoch);
        for (size_t i = 0; i < t->n_caveats; i++)
            printf("caveat:    %s\n", t->caveats[i]);
        if (rc == 0)
            grant_print(&t->grant);
        printf("signature: %s\n", a.key != NULL ? sig_state : "unchecked (no --key)");
    }
    fflush(stdout); /* the report first, then the one-line reason */
    if (reason != AUTH_OK)
        ron_cmd_fail(RON_EXIT_FAIL, "cap verify: %s (%s)", ron_strerror(auth_reason_code(reason)),
                     auth_reason_name(reason));
out:
    explicit_bzero(key, sizeof key);
    auth_verifier_free(v);
    free(t);
    return exit_code;
}

static const char mint_usage[] =
    "usage: ron cap mint --ops OPS [--ttl DUR] [--tenant HEX] [--max-bytes N] [--prefix b3:HEX]\n"
    "                    [--node ADDR] [--cap TOKEN] [--data-dir DIR]\n"
    "Ask the node for a fresh capability and print only the token. It is minted under\n"
    "the node's keys from your capability (which must allow mint) and can only narrow\n"
    "it: OPS comma-separated among get, put, pin, name, send, recv, admin, mint; DUR\n"
    "seconds or with a unit s, m, h, d (default 1h, at most 30d); HEX a tenant of 32\n"
    "hex digits; N the most bytes one put may write; b3:HEX an address prefix.\n"
    CLI_COMMON_HELP;

/* "90", "90s", "15m", "2h", "7d" into seconds (1..UINT32_MAX). Returns 0 or -1. */
static int
dur_parse(const char *s, uint32_t *out)
{
    size_t n = strlen(s);
    uint64_t v = 0, mul = 1;

    if (n == 0)
        return -1;
    switch (s[n - 1]) {
    case 's':
        n--;
        break;
    case 'm':
        mul = 60;
        n--;
        break;
    case 'h':
        mul = 3600;
        n--;
        break;
    case 'd':
        mul = 86400;
        n--;
        break;
    default:
        break;
    }
    if (ron_parse_u64(s, n, &v) < 0 || v == 0 || v > UINT32_MAX / mul)
        return -1;
    *out = (uint32_t)(v * mul);
    return 0;
}

/* The cap_mint arguments of the options, as JSON text (new), or NULL after printing why. */
static char *
mint_args(const cli_opts_t *o)
{
    const char *ops = cli_get(o, "--ops"), *ttl = cli_get(o, "--ttl"),
               *tenant = cli_get(o, "--tenant"), *maxb = cli_get(o, "--max-bytes"),
               *prefix = cli_get(o, "--prefix");
    json_t *a = json_object(), *arr = json_array();
    uint8_t t[AUTH_TENANT_LEN];
    uint32_t mask = 0, secs = 0;
    uint64_t v = 0;
    char *txt = NULL;
    const char *p = ops;

    json_object_set_new(a, "ops", arr);
    while (p != NULL && *p != '\0') {
        size_t n = strcspn(p, ",");
        auth_op_t op;
        if (auth_op_parse(p, n, &op) < 0 || (mask & (1u << op)) != 0) {
            ron_cmd_fail(RON_EXIT_USAGE, "cap mint: --ops takes distinct ops among get, put, "
                                         "pin, name, send, recv, admin, mint, comma-separated");
            goto out;
        }
        mask |= 1u << op;
        json_array_append_new(arr, json_string(auth_op_name(op)));
        p += n + (p[n] == ',');
    }
    if (mask == 0) {
        ron_cmd_fail(RON_EXIT_USAGE, "cap mint: --ops is required (e.g. --ops get,put)");
        goto out;
    }
    if (ttl != NULL) {
        if (dur_parse(ttl, &secs) < 0) {
            ron_cmd_fail(RON_EXIT_USAGE, "cap mint: --ttl takes a duration such as 3600, 15m, "
                                         "2h or 7d");
            goto out;
        }
        json_object_set_new(a, "ttl", json_sprintf("%" PRIu32, secs));
    }
    if (tenant != NULL) {
        if (strlen(tenant) != 2 * AUTH_TENANT_LEN ||
            ron_hex_decode(t, AUTH_TENANT_LEN, tenant, strlen(tenant)) < 0) {
            ron_cmd_fail(RON_EXIT_USAGE, "cap mint: --tenant takes 32 hex digits");
            goto out;
        }
        char hex[2 * AUTH_TENANT_LEN + 1];
        ron_hex_encode(hex, t, AUTH_TENANT_LEN); /* lowercase, as the node wants it */
        json_object_set_new(a, "tenant", json_string(hex));
    }
    if (maxb != NULL) {
        if (ron_parse_u64(maxb, strlen(maxb), &v) < 0 || v == 0) {
            ron_cmd_fail(RON_EXIT_USAGE, "cap mint: --max-bytes takes a byte count above 0");
            goto out;
        }
        json_object_set_new(a, "max_bytes", json_sprintf("%" PRIu64, v));
    }
    if (prefix != NULL) {
        size_t n = strlen(prefix);
        bool ok = n > 3 && n <= 67 && strncmp(prefix, "b3:", 3) == 0;
        for (size_t k = 3; ok && k < n; k++)
            ok = (prefix[k] >= '0' && prefix[k] <= '9') || (prefix[k] >= 'a' && prefix[k] <= 'f');
        if (!ok) {
            ron_cmd_fail(RON_EXIT_USAGE,
                         "cap mint: --prefix takes b3: and 1 to 64 lowercase hex digits");
            goto out;
        }
        json_object_set_new(a, "prefix", json_string(prefix));
    }
    txt = json_dumps(a, JSON_COMPACT);
out:
    json_decref(a);
    return txt;
}

static int
cap_mint(int argc, char **argv)
{
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    char *args = NULL, *ans = NULL;
    json_t *j = NULL;
    const char *tok;
    int rc;

    cli_opt(&o, "--ops", true);
    cli_opt(&o, "--ttl", true);
    cli_opt(&o, "--tenant", true);
    cli_opt(&o, "--max-bytes", true);
    cli_opt(&o, "--prefix", true);
    if ((rc = cli_parse(&o, argc, argv, mint_usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0) {
        fputs(mint_usage, stderr);
        return RON_EXIT_USAGE;
    }
    if ((args = mint_args(&o)) == NULL)
        return RON_EXIT_USAGE;
    if ((rc = cli_client(&o, "cap mint", &c)) != RON_EXIT_OK)
        goto out;
    if ((rc = ron_client_request(c, OAP_APP_KERNEL, "cap_mint", args, false, &ans, NULL)) < 0) {
        rc = cli_fail(c, "cap mint", rc);
        goto out;
    }
    j = json_loads(ans, 0, NULL);
    tok = json_string_value(json_object_get(j, "token"));
    if (tok == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "cap mint: malformed answer from the node");
        goto out;
    }
    printf("%s\n", tok);
    rc = RON_EXIT_OK;
out:
    json_decref(j);
    if (ans != NULL)
        explicit_bzero(ans, strlen(ans)); /* holds the token */
    free(ans);
    free(args);
    ron_client_free(c);
    return rc;
}

int
cmd_cap(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "attenuate") == 0)
        return cap_attenuate(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cap_verify(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "mint") == 0)
        return cap_mint(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "revoke") == 0)
        return cmd_cap_revoke(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s", cap_usage);
        return RON_EXIT_OK;
    }
    fprintf(stderr, "%s", cap_usage);
    return RON_EXIT_USAGE;
}
