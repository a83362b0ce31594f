/*
 * cmd_name.c - `ron name publish NAME ADDR [--key FILE]` and `ron name
 * resolve NAME` (DESIGN.md §5, §11) over libron.
 * publish resolves the name first and signs a record with seq = current
 * seq + 1 (1 for a new name) and ts = now: with the node's name key 0 from
 * the local key store (ron-kms; the same data dir and RON_PASSPHRASE /
 * RON_ROOT_SECRET_FILE as `ron node`), or with --key FILE, a file holding a
 * 32-byte Ed25519 seed (raw, or 64 hex digits) that no one else may read.
 * Secrets stay in sodium_malloc memory and are wiped before exit.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "cmd_client.h"
#include "ron_err.h"
#include "ron_kms.h"
#include "ron_naming.h"
#include "ron_util.h"


static const char publish_usage[] =
    "usage: ron name publish NAME ADDR [--key FILE] [--data-dir DIR] [--node ADDR] [--cap T]\n"
    "Point NAME at the object ADDR with a record signed by the node's name key (from\n"
    "<data-dir>/keys; set RON_PASSPHRASE or RON_ROOT_SECRET_FILE as for `ron node`),\n"
    "or by the Ed25519 seed in FILE (32 raw bytes or 64 hex digits, mode 0600).\n"
    "seq is the current record's seq + 1, or 1 for a new name.\n" CLI_COMMON_HELP;
static const char resolve_usage[] =
    "usage: ron name resolve NAME [--json] [--node ADDR] [--cap TOKEN]\n"
    "Print the address NAME points to (or its whole signed record with --json).\n" CLI_COMMON_HELP;
static const char name_usage[] = "usage: ron name publish NAME ADDR [--key FILE]\n"
                                 "       ron name resolve NAME [--json]\n"
                                 "`ron name publish --help` and `ron name resolve --help` say more.\n";

/* Sign rec with the seed in path. Returns an exit code. */
static int
sign_with_file(name_record_t *rec, const char *path)
{
    uint8_t *seed = NULL, *sk = NULL;
    uint8_t pk[NAME_KEY_LEN];
    int rc;

    /* sodium_malloc needs sodium_init first (it reads the page size). */
    if (sodium_init() < 0 || (seed = sodium_malloc(KMS_SEED_LEN)) == NULL ||
        (sk = sodium_malloc(NAME_SECRET_KEY_LEN)) == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "name publish: libsodium unavailable");
        goto out;
    }
    if ((rc = cli_seed_read("name publish", path, seed)) != RON_EXIT_OK)
        goto out;
    crypto_sign_seed_keypair(pk, sk, seed);
    if (name_record_sign(rec, sk) < 0)
        rc = ron_cmd_fail(RON_EXIT_FAIL, "name publish: cannot sign the record");
out:
    sodium_free(seed);
    sodium_free(sk);
    return rc;
}

/* Sign rec with the node's name key 0 from data_dir. Returns an exit code. */
static int
sign_with_node_key(name_record_t *rec, const char *data_dir)
{
    kms_keystore_t *ks = NULL;
    const kms_key_t *k;
    kms_opts_t ko;
    uint8_t bytes[NAME_SIGNING_MAX];
    char err[512];
    ssize_t n;
    int rc;

    kms_opts_from_env(&ko, data_dir, false, false);
    rc = kms_keystore_open(&ko, &ks, err, sizeof err);
    kms_env_scrub(); /* read once: not left in /proc/PID/environ */
    if (rc == RON_ENOKEYS)
        return ron_cmd_fail(RON_EXIT_FAIL,
                            "name publish: no key store in %s/keys (start the node once, or "
                            "sign with --key FILE)",
                            data_dir);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "name publish: %s (%s)", err, ron_errname(rc));
    k = kms_keystore_name_key(ks, 0);
    memcpy(rec->owner, kms_key_public(k), NAME_KEY_LEN);
    n = name_record_signing_bytes(rec, bytes, sizeof bytes);
    if (n < 0 || kms_key_sign(k, bytes, (size_t)n, rec->sig) < 0)
        rc = ron_cmd_fail(RON_EXIT_FAIL, "name publish: cannot sign the record");
    else
        rc = RON_EXIT_OK;
    kms_keystore_free(ks);
    return rc;
}

/* seq of the current record + 1, or 1 when the name has none. Returns an exit code. */
static int
next_seq(ron_client_t *c, const char *name, uint64_t *seq_out)
{
    name_record_t cur;
    char *json = NULL;
    int rc = ron_client_name_resolve(c, name, &json);

    if (rc == RON_EREMOTE && ron_client_last_error(c)->status == 404) {
        *seq_out = 1;
        return RON_EXIT_OK;
    }
    if (rc < 0)
        return cli_fail(c, "name publish: resolving the current record", rc);
    rc = name_record_from_json(&cur, json, strlen(json), NULL);
    free(json);
    if (rc < 0 || cur.seq == UINT64_MAX)
        return ron_cmd_fail(RON_EXIT_FAIL, "name publish: malformed current record from the node");
    *seq_out = cur.seq + 1;
    return RON_EXIT_OK;
}

static int
name_publish(int argc, char **argv)
{
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    name_record_t rec;
    name_err_t ne;
    char dir[RON_CLIENT_MAX_PATH], *json = NULL;
    const char *key;
    bool unchanged = false;
    int rc;

    cli_opt(&o, "--key", true);
    if ((rc = cli_parse(&o, argc, argv, publish_usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 2) {
        fprintf(stderr, "%s", publish_usage);
        return RON_EXIT_USAGE;
    }
    memset(&rec, 0, sizeof rec);
    if (name_normalize(o.pos[0], strlen(o.pos[0]), rec.name, &ne) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "name publish: bad name '%s': %s", o.pos[0], ne.msg);
    if (name_addr_parse(&rec.addr, o.pos[1], strlen(o.pos[1]), &ne) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "name publish: malformed address '%s': %s",
                            o.pos[1], ne.msg);
    key = cli_get(&o, "--key");
    if (key != NULL && key[0] == '\0')
        return ron_cmd_fail(RON_EXIT_USAGE, "name publish: empty --key FILE");
    if (key == NULL && ron_client_data_dir(o.data_dir, dir, sizeof dir) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "name publish: no data dir (use --data-dir)");
    if ((rc = cli_client(&o, "name publish", &c)) != RON_EXIT_OK)
        return rc;
    if ((rc = next_seq(c, rec.name, &rec.seq)) != RON_EXIT_OK)
        goto out;
    rec.ts = (uint64_t)ron_unix_time();
    rc = key != NULL ? sign_with_file(&rec, key) : sign_with_node_key(&rec, dir);
    if (rc != RON_EXIT_OK)
        goto out;
    json = name_record_to_json(&rec);
    if (json == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "name publish: cannot encode the record");
        goto out;
    }
    if (ron_client_name_publish(c, json, &unchanged) < 0) {
        rc = cli_fail(c, "name publish", ron_client_last_error(c)->rc);
        goto out;
    }
    printf("%s %s -> %s (seq %" PRIu64 ")\n", unchanged ? "unchanged" : "published", rec.name,
           o.pos[1], rec.seq);
    rc = RON_EXIT_OK;
out:
    free(json);
    ron_client_free(c);
    return rc;
}

static int
name_resolve(int argc, char **argv)
{
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    name_record_t rec;
    name_err_t ne = {0};
    char canon[NAME_MAX_LEN + 1], addr[NAME_ADDR_TEXT_LEN + 1], *json = NULL;
    int rc;

    cli_opt(&o, "--json", false);
    if ((rc = cli_parse(&o, argc, argv, resolve_usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 1) {
        fprintf(stderr, "%s", resolve_usage);
        return RON_EXIT_USAGE;
    }
    if (name_normalize(o.pos[0], strlen(o.pos[0]), canon, &ne) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "name resolve: bad name '%s': %s", o.pos[0], ne.msg);
    if ((rc = cli_client(&o, "name resolve", &c)) != RON_EXIT_OK)
        return rc;
    rc = ron_client_name_resolve(c, canon, &json);
    if (rc < 0) {
        rc = cli_fail(c, "name resolve", rc);
        goto out;
    }
    if (name_record_from_json(&rec, json, strlen(json), &ne) < 0 ||
        name_record_verify(&rec, &ne) < 0) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "name resolve: the node sent a bad record: %s", ne.msg);
        goto out;
    }
    if (strcmp(rec.name, canon) != 0) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "name resolve: the node sent the record of %s",
                          rec.name);
        goto out;
    }
    if (cli_get(&o, "--json") != NULL) {
        printf("%s\n", json);
    } else {
        name_addr_format(&rec.addr, addr);
        printf("%s\n", addr);
    }
    rc = RON_EXIT_OK;
out:
    free(json);
    ron_client_free(c);
    return rc;
}

int
cmd_name(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "publish") == 0)
        return name_publish(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "resolve") == 0)
        return name_resolve(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s", name_usage);
        return RON_EXIT_OK;
    }
    fprintf(stderr, "%s", name_usage);
    return RON_EXIT_USAGE;
}
