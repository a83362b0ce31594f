/*
 * cmd_registry.c - `ron registry` (docs/runbooks/registry.md).
 * Offline, files only:
 *   ron registry verify [FILE] [--head VERSION:b3:HEX] [--data-dir DIR]
 *   ron registry check FILE            (a descriptor set: strict parse, id)
 *   ron registry sign FILE --key KEY   (an approval of that descriptor set)
 *   ron registry pubkey --key KEY
 * Online, through the node's app port (app_proto_id 9, forwarded to the
 * `registry` service; writes from loopback only):
 *   ron registry head | signers | show [VERSION] | propose FILE |
 *                approve ID --key KEY | commit ID
 * Exit 0 success, 1 failure (one-line reason), 2 bad usage or bad input.
 * KEY is a file holding a 32-byte Ed25519 seed, raw or as 64 hex digits,
 * readable by its owner only. `show` prints the canonical log line, so
 * lines shown in order form a log `verify` checks.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "cmd_client.h"
#include "oap.h"
#include "ron_config.h"
#include "ron_err.h"
#include "ron_util.h"
#include "svc_registry.h"


static const char registry_usage[] =
    "usage: ron registry verify [FILE] [--head VERSION:b3:HEX] [--data-dir DIR]\n"
    "       ron registry check FILE\n"
    "       ron registry sign FILE --key KEY\n"
    "       ron registry pubkey --key KEY\n"
    "       ron registry head | signers | show [VERSION] [--node ADDR] [--cap T]\n"
    "       ron registry propose FILE | approve ID --key KEY | commit ID [--node ADDR] [--cap T]\n"
    "  verify: replay a registry log from genesis (hash chain, versions, M-of-N\n"
    "    approvals under the signer set in force); --head also catches a cut tail.\n"
    "    FILE defaults to <data-dir>/registry/registry.log.\n"
    "  check: parse a descriptor set strictly; print its id and canonical form.\n"
    "  sign: print the approval {\"id\",\"pk\",\"sig\"} of the descriptor set in FILE\n"
    "    with the Ed25519 seed in KEY (raw 32 bytes or 64 hex, mode 0600).\n"
    "  pubkey: print the public key (64 hex) of the seed in KEY.\n"
    "  head, signers: the node's head / signer set in force (JSON). show: the\n"
    "    committed record of VERSION (default the head), one canonical log line.\n"
    "  propose: send the descriptor set in FILE; prints its id. approve: sign the\n"
    "    proposal ID with KEY and send it; prints approvals so far. commit: commit\n"
    "    ID once it holds M approvals; prints the new version and its hash.\n"
    "    Writes are answered for loopback clients only.\n"
    "  Exit 0 ok, 1 failed (one-line reason), 2 bad usage or bad input.\n";

/* Read a whole small file (at most max bytes) into a new buffer. */
static int
file_read(const char *path, size_t max, char **out, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL)
        return -errno;
    buf = ron_xmalloc(max + 2);
    n = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        fclose(f);
        free(buf);
        return -EIO;
    }
    fclose(f);
    if (n > max) {
        free(buf);
        return RON_ETOOBIG;
    }
    buf[n] = '\0';
    *out = buf;
    *len_out = n;
    return 0;
}

/* Parse the descriptor set in path into d and its id. Returns an exit code. */
static int
desc_load(const char *path, reg_desc_t *d, uint8_t id[REG_HASH_LEN])
{
    char *txt = NULL;
    size_t n;
    reg_err_t err = {{0}};
    int rc = file_read(path, REG_MAX_DESC, &txt, &n);

    if (rc == RON_ETOOBIG)
        return ron_cmd_fail(RON_EXIT_USAGE, "registry: %s is larger than %u bytes", path,
                            REG_MAX_DESC);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "registry: cannot read %s: %s", path, ron_strerror(rc));
    rc = reg_desc_parse(txt, n, d, &err);
    free(txt);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "registry: %s: %s", path, err.msg);
    if (reg_desc_id(d, id) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "registry: %s: not a valid descriptor set", path);
    return RON_EXIT_OK;
}

/* Options: one positional FILE and --key / --head / --data-dir. */
typedef struct {
    const char *file, *key, *head, *data_dir;
} reg_args_t;

static int
args_parse(const char *cmd, int argc, char **argv, reg_args_t *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--key") == 0 && i + 1 < argc) {
            a->key = argv[++i];
        } else if (strcmp(s, "--head") == 0 && i + 1 < argc) {
            a->head = argv[++i];
        } else if (strcmp(s, "--data-dir") == 0 && i + 1 < argc) {
            a->data_dir = argv[++i];
        } else if (s[0] != '-' && a->file == NULL) {
            a->file = s;
        } else {
            fprintf(stderr, "ron registry %s: unexpected argument '%s'\n%s", cmd, s,
                    registry_usage);
            return RON_EXIT_USAGE;
        }
    }
    return RON_EXIT_OK;
}

static int
registry_verify(const reg_args_t *a)
{
    ron_config_t cfg; /* only for the default data dir, shared with `ron node` */
    char path[RON_CONFIG_PATH_MAX + 32], hex[2 * REG_HASH_LEN + 1];
    const char *file = a->file, *colon;
    uint8_t want[REG_HASH_LEN];
    uint64_t want_v = 0;
    reg_report_t rep;
    char *log = NULL;
    size_t n;
    int rc;

    if (a->key != NULL)
        return ron_cmd_fail(RON_EXIT_USAGE, "registry verify: --key does not apply");
    if (a->head != NULL) {
        colon = strchr(a->head, ':');
        if (colon == NULL || ron_parse_u64(a->head, (size_t)(colon - a->head), &want_v) < 0 ||
            want_v == 0 || strncmp(colon + 1, "b3:", 3) != 0 || strlen(colon + 4) != 64 ||
            ron_hex_decode(want, sizeof want, colon + 4, 64) < 0)
            return ron_cmd_fail(RON_EXIT_USAGE,
                                "registry verify: --head needs VERSION:b3:<64 hex>");
    }
    if (file == NULL) {
        const char *dd = a->data_dir;
        if (dd == NULL) {
            ron_config_defaults(&cfg);
            dd = cfg.data_dir;
        }
        if (dd[0] == '\0')
            return ron_cmd_fail(RON_EXIT_USAGE, "registry verify: empty --data-dir");
        snprintf(path, sizeof path, "%s/registry/registry.log", dd);
        file = path;
    }
    rc = file_read(file, REG_MAX_LOG_HARD, &log, &n);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "registry verify: cannot read %s: %s", file,
                            ron_strerror(rc));
    rc = reg_verify_buf(log, n, want_v, a->head != NULL ? want : NULL, &rep);
    free(log);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "registry verify: %s: version %" PRIu64 ": %s", file,
                            rep.bad_version, rep.err.msg);
    ron_hex_encode(hex, rep.head, REG_HASH_LEN);
    printf("ok: %" PRIu64 " versions, head b3:%s%s\n", rep.versions, hex,
           a->head == NULL ? " (tail not pinned: --head)" : "");
    return RON_EXIT_OK;
}

static int
registry_check(const reg_args_t *a)
{
    reg_desc_t *d;
    uint8_t id[REG_HASH_LEN];
    char hex[2 * REG_HASH_LEN + 1], *txt;
    size_t n;
    int rc;

    if (a->file == NULL || a->key != NULL || a->head != NULL)
        return ron_cmd_fail(RON_EXIT_USAGE, "registry check: needs FILE only");
    d = ron_xcalloc(1, sizeof *d);
    rc = desc_load(a->file, d, id);
    if (rc == RON_EXIT_OK && reg_desc_encode(d, &txt, &n) == 0) {
        ron_hex_encode(hex, id, REG_HASH_LEN);
        printf("id %s version %" PRIu64 "\n%s\n", hex, d->version, txt);
        free(txt);
    }
    free(d);
    return rc;
}

/* Load the seed in a->key into a key pair (sk in sodium memory). */
static int
keypair_load(const reg_args_t *a, uint8_t pk[REG_KEY_LEN], uint8_t **sk_out)
{
    uint8_t *seed;
    int rc;

    if (a->key == NULL || a->key[0] == '\0')
        return ron_cmd_fail(RON_EXIT_USAGE, "registry: needs --key FILE");
    if (sodium_init() < 0 || (seed = sodium_malloc(CLI_SEED_LEN)) == NULL)
        return ron_cmd_fail(RON_EXIT_FAIL, "registry: libsodium unavailable");
    if ((*sk_out = sodium_malloc(REG_SK_LEN)) == NULL) {
        sodium_free(seed);
        return ron_cmd_fail(RON_EXIT_FAIL, "registry: out of secure memory");
    }
    if ((rc = cli_seed_read("registry", a->key, seed)) == RON_EXIT_OK)
        crypto_sign_seed_keypair(pk, *sk_out, seed);
    sodium_free(seed);
    return rc;
}

static int
registry_sign(const reg_args_t *a, bool only_pubkey)
{
    reg_desc_t *d = NULL;
    uint8_t pk[REG_KEY_LEN], id[REG_HASH_LEN], sig[REG_SIG_LEN], *sk = NULL;
    char pkh[2 * REG_KEY_LEN + 1], idh[2 * REG_HASH_LEN + 1], sigh[2 * REG_SIG_LEN + 1];
    int rc;

    if (a->head != NULL || a->data_dir != NULL || (only_pubkey == (a->file != NULL)))
        return ron_cmd_fail(RON_EXIT_USAGE, only_pubkey ? "registry pubkey: needs --key KEY only"
                                                        : "registry sign: needs FILE --key KEY");
    if (!only_pubkey) {
        d = ron_xcalloc(1, sizeof *d);
        if ((rc = desc_load(a->file, d, id)) != RON_EXIT_OK)
            goto out;
    }
    if ((rc = keypair_load(a, pk, &sk)) != RON_EXIT_OK)
        goto out;
    ron_hex_encode(pkh, pk, REG_KEY_LEN);
    if (only_pubkey) {
        printf("%s\n", pkh);
        goto out;
    }
    if (reg_approval_sign(id, sk, sig) < 0) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "registry sign: cannot sign");
        goto out;
    }
    ron_hex_encode(idh, id, REG_HASH_LEN);
    ron_hex_encode(sigh, sig, REG_SIG_LEN);
    printf("{\"id\":\"%s\",\"pk\":\"%s\",\"sig\":\"%s\"}\n", idh, pkh, sigh);
out:
    sodium_free(sk);
    free(d);
    return rc;
}

/* ---- online: through the app port ---- */

/* One request; the answer JSON (parsed, new) in *o_out. Returns an exit code. */
static int
remote(ron_client_t *c, const char *what, const char *op, json_t *args, json_t **o_out)
{
    char *txt = args != NULL ? json_dumps(args, JSON_COMPACT) : NULL, *ans = NULL;
    bool write =
        strcmp(op, "propose") == 0 || strcmp(op, "approve") == 0 || strcmp(op, "commit") == 0;
    int rc = ron_client_request(c, OAP_APP_REGISTRY, op, txt, write, &ans, NULL);

    free(txt);
    if (rc < 0)
        return cli_fail(c, what, rc);
    *o_out = ans != NULL ? json_loads(ans, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(ans);
    if (!json_is_object(*o_out)) {
        json_decref(*o_out);
        return ron_cmd_fail(RON_EXIT_FAIL, "%s: the node sent a malformed answer", what);
    }
    return RON_EXIT_OK;
}

static const char *
field(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v != NULL ? v : "?";
}

/* The request fields of sub from o's arguments into args. Returns an exit code. */
static int
online_args(const char *sub, const cli_opts_t *o, json_t *args)
{
    bool is_approve = strcmp(sub, "approve") == 0, is_commit = strcmp(sub, "commit") == 0;
    uint8_t id[REG_HASH_LEN], pk[REG_KEY_LEN], sig[REG_SIG_LEN], *sk = NULL;
    char hex[2 * REG_SIG_LEN + 1], *txt;
    reg_desc_t *d;
    size_t n;
    int rc = RON_EXIT_OK;

    if ((is_approve || is_commit) &&
        (strlen(o->pos[0]) != 2 * REG_HASH_LEN ||
         ron_hex_decode(id, REG_HASH_LEN, o->pos[0], strlen(o->pos[0])) < 0))
        return ron_cmd_fail(RON_EXIT_USAGE, "registry %s: ID is 64 hex digits", sub);
    if (strcmp(sub, "show") == 0 && o->n_pos == 1) {
        uint64_t v;
        if (ron_parse_u64(o->pos[0], strlen(o->pos[0]), &v) < 0)
            return ron_cmd_fail(RON_EXIT_USAGE, "registry show: VERSION is a decimal number");
        json_object_set_new(args, "version", json_string(o->pos[0]));
    }
    if (strcmp(sub, "propose") == 0) {
        d = ron_xcalloc(1, sizeof *d);
        if ((rc = desc_load(o->pos[0], d, id)) == RON_EXIT_OK &&
            reg_desc_encode(d, &txt, &n) == 0) {
            json_object_set_new(args, "descriptor", json_loadb(txt, n, 0, NULL));
            free(txt);
        }
        free(d);
        return rc;
    }
    if (is_approve) {
        reg_args_t ka = {.key = cli_get(o, "--key")};
        if ((rc = keypair_load(&ka, pk, &sk)) == RON_EXIT_OK && reg_approval_sign(id, sk, sig) < 0)
            rc = ron_cmd_fail(RON_EXIT_FAIL, "registry approve: cannot sign");
        sodium_free(sk);
        if (rc != RON_EXIT_OK)
            return rc;
        ron_hex_encode(hex, pk, REG_KEY_LEN);
        json_object_set_new(args, "pk", json_string(hex));
        ron_hex_encode(hex, sig, REG_SIG_LEN);
        json_object_set_new(args, "sig", json_string(hex));
    }
    if (is_approve || is_commit)
        json_object_set_new(args, "id", json_string(o->pos[0]));
    return RON_EXIT_OK;
}

/* Print the answer of sub. */
static void
online_print(const char *sub, json_t *ans)
{
    char *txt;
    if (strcmp(sub, "propose") == 0)
        printf("%s\n", field(ans, "id"));
    else if (strcmp(sub, "approve") == 0)
        printf("approvals %s of %s\n", field(ans, "approvals"), field(ans, "threshold"));
    else if (strcmp(sub, "commit") == 0)
        printf("version %s %s\n", field(ans, "version"), field(ans, "hash"));
    else if (strcmp(sub, "show") == 0)
        printf("%s\n", field(ans, "record"));
    else if ((txt = json_dumps(ans, JSON_COMPACT | JSON_PRESERVE_ORDER)) != NULL) {
        printf("%s\n", txt);
        free(txt);
    }
}

static int
registry_online(const char *sub, int argc, char **argv)
{
    cli_opts_t o;
    ron_client_t *c = NULL;
    json_t *args = json_object(), *ans = NULL;
    bool is_show = strcmp(sub, "show") == 0;
    char what[32];
    int want_pos = strcmp(sub, "propose") == 0 || strcmp(sub, "approve") == 0 ||
                   strcmp(sub, "commit") == 0,
        rc;

    memset(&o, 0, sizeof o);
    snprintf(what, sizeof what, "registry %s", sub);
    if (strcmp(sub, "approve") == 0)
        cli_opt(&o, "--key", true);
    if ((rc = cli_parse(&o, argc, argv, registry_usage)) != 0) {
        rc = rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
        goto out;
    }
    if (o.n_pos != want_pos && !(is_show && o.n_pos <= 1)) {
        rc = ron_cmd_fail(RON_EXIT_USAGE, "registry %s: wrong number of arguments", sub);
        goto out;
    }
    if ((rc = online_args(sub, &o, args)) != RON_EXIT_OK ||
        (rc = cli_client(&o, "registry", &c)) != RON_EXIT_OK)
        goto out;
    if (is_show && o.n_pos == 0) { /* the head's version */
        if ((rc = remote(c, what, "head", NULL, &ans)) != RON_EXIT_OK)
            goto out;
        json_object_set_new(args, "version", json_string(field(ans, "version")));
        json_decref(ans);
        ans = NULL;
    }
    rc = remote(c, what, is_show ? "get" : sub, json_object_size(args) > 0 ? args : NULL, &ans);
    if (rc == RON_EXIT_OK)
        online_print(sub, ans);
out:
    json_decref(ans);
    json_decref(args);
    ron_client_free(c);
    return rc;
}

int
cmd_registry(int argc, char **argv)
{
    reg_args_t a;
    const char *sub = argc >= 2 ? argv[1] : "";
    int rc;

    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        printf("%s", registry_usage);
        return RON_EXIT_OK;
    }
    if (strcmp(sub, "head") == 0 || strcmp(sub, "signers") == 0 || strcmp(sub, "show") == 0 ||
        strcmp(sub, "propose") == 0 || strcmp(sub, "approve") == 0 || strcmp(sub, "commit") == 0)
        return registry_online(sub, argc - 1, argv + 1);
    if (strcmp(sub, "verify") != 0 && strcmp(sub, "check") != 0 && strcmp(sub, "sign") != 0 &&
        strcmp(sub, "pubkey") != 0) {
        fprintf(stderr, "%s", registry_usage);
        return RON_EXIT_USAGE;
    }
    if ((rc = args_parse(sub, argc - 1, argv + 1, &a)) != RON_EXIT_OK)
        return rc;
    if (strcmp(sub, "verify") == 0)
        return registry_verify(&a);
    if (strcmp(sub, "check") == 0)
        return registry_check(&a);
    return registry_sign(&a, strcmp(sub, "pubkey") == 0);
}
