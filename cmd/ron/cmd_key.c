/*
 * cmd_key.c - `ron key show [--data-dir DIR] [--json]`: the node id, the
 * identity and name-signing public keys, whether they are sealed, and the
 * key directory (DESIGN.md §11). Reads only the public parts of the key
 * files (kms_keys_inspect), so it needs no passphrase and never creates a
 * key store: `ron node` does that on its first start.
 * The capability key generation (current kid, previous kid and when its
 * grace ends, epoch) lives in the authority's state file, which is sealed
 * by a MAC keyed from the capability master (so reading it would need the
 * identity seed): `key show` asks the running node instead (app-port op
 * key_show, needs `admin`; operator.cap is found as for every client
 * command) and says "unknown" with the reason when it cannot.
 * `ron key rotate` (op key_rotate, `admin`) moves the node to the next
 * capability key generation now and rotates svc-passport's signing key
 * when the passport runs (its `rotate` op on app 7).
 * Data dir: --data-dir, else RON_DATA_DIR, else the default of `ron node`
 * (ron_config_defaults computes both).
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "cmd_client.h"
#include "oap.h"
#include "ron_config.h"
#include "ron_err.h"
#include "ron_kms.h"
#include "ron_util.h"

static const char key_usage[] =
    "usage: ron key show [--data-dir DIR] [--node ADDR] [--cap TOKEN] [--json]\n"
    "       ron key rotate [--json] [--node ADDR] [--cap TOKEN] [--data-dir DIR]\n"
    "  show: print the node id (BLAKE3 of the identity public key), the identity and\n"
    "  name-signing public keys, whether the key files are sealed, and the key\n"
    "  directory <data-dir>/keys. Needs no passphrase; creates nothing. When the node\n"
    "  runs (and the capability allows `admin`), also its capability key generation:\n"
    "  current kid, previous kid and when its grace ends, epoch.\n"
    "  rotate: move the node's capability keys to the next generation now (tokens of\n"
    "  the previous kid keep verifying for auth_grace_s; operator.cap is re-minted\n"
    "  under the new kid) and rotate the passport's signing key when it runs. Needs\n"
    "  `admin`. Prints the new kid.\n"
    "  Data dir: --data-dir, else $RON_DATA_DIR, else $XDG_DATA_HOME/ron,\n"
    "  else ~/.local/share/ron.\n"
    CLI_COMMON_HELP;

/* "YYYY-MM-DDTHH:MM:SSZ" of unix time t (a decimal string) into out; "" as "-". */
static const char *
iso_time(const char *t, char *out, size_t cap)
{
    uint64_t v = 0;
    struct tm tm;
    time_t tt;

    if (t == NULL || ron_parse_u64(t, strlen(t), &v) < 0 || v == 0 || v > (uint64_t)INT32_MAX * 4) {
        snprintf(out, cap, "-");
        return out;
    }
    tt = (time_t)v;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return out;
}

/* A client for node/cap/data_dir without printing (key show works offline). */
static int
quiet_client(const char *node, const char *cap_flag, const char *data_dir, ron_client_t **c_out)
{
    ron_client_opts_t co = {0};
    char dir[RON_CLIENT_MAX_PATH];
    char *cap = NULL;
    int rc;

    co.node = ron_client_node_find(node);
    co.max_retries = 0;
    co.ua = "ron";
    rc = ron_client_data_dir(data_dir, dir, sizeof dir);
    rc = ron_client_cap_find(cap_flag, rc == 0 ? dir : NULL, &cap);
    if (rc < 0)
        return rc;
    co.cap = cap;
    rc = ron_client_new(&co, c_out);
    if (cap != NULL)
        explicit_bzero(cap, strlen(cap));
    free(cap);
    return rc;
}

/* The node's capability key generation (key_show) as parsed JSON, or NULL
 * with why in err. */
static json_t *
node_key_info(const char *node, const char *cap, const char *data_dir, char *err, size_t errcap)
{
    ron_client_t *c = NULL;
    char *ans = NULL;
    json_t *o = NULL;
    int rc = quiet_client(node, cap, data_dir, &c);

    if (rc < 0) {
        snprintf(err, errcap, "%s", ron_strerror(rc));
        goto out;
    }
    ron_client_set_timeout(c, 3000);
    rc = ron_client_request(c, OAP_APP_KERNEL, "key_show", NULL, false, &ans, NULL);
    if (rc < 0) {
        const ron_client_error_t *e = ron_client_last_error(c);
        snprintf(err, errcap, "%.200s", e->message[0] != '\0' ? e->message : ron_strerror(rc));
        goto out;
    }
    o = ans != NULL ? json_loads(ans, 0, NULL) : NULL;
    if (!json_is_object(o) || !json_is_string(json_object_get(o, "kid"))) {
        json_decref(o);
        o = NULL;
        snprintf(err, errcap, "the node sent a malformed answer");
    }
out:
    free(ans);
    ron_client_free(c);
    return o;
}

static const char *
jstr(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v != NULL ? v : "";
}

static void
print_cap_keys(json_t *ck, const char *err)
{
    char t1[32], t2[32];

    if (ck == NULL) {
        printf("cap keys      unknown (node: %s)\n", err);
        return;
    }
    printf("cap kid       %s (current since %s)\n", jstr(ck, "kid"),
           iso_time(jstr(ck, "gen_started"), t1, sizeof t1));
    if (jstr(ck, "prev_kid")[0] != '\0')
        printf("cap prev kid  %s (grace ends %s)\n", jstr(ck, "prev_kid"),
               iso_time(jstr(ck, "prev_until"), t2, sizeof t2));
    else
        printf("cap prev kid  none\n");
    printf("cap epoch     %s\n", jstr(ck, "epoch"));
}

/* Sealed means every file is sealed; the kind is the identity key's. */
static bool
all_sealed(const kms_keyfile_info_t *infos, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (infos[i].seal == KMS_SEAL_NONE)
            return false;
    return n > 0;
}

static void
print_text(const kms_keyfile_info_t *infos, size_t n, const char *node_id, const char *dir,
           json_t *ck, const char *ck_err)
{
    char hex[2 * KMS_PK_LEN + 1];
    bool sealed = all_sealed(infos, n);

    printf("node id       %s\n", node_id);
    ron_hex_encode(hex, infos[0].pk, KMS_PK_LEN);
    printf("identity key  %s %s\n", kms_alg_name(infos[0].alg), hex);
    for (size_t i = 1; i < n; i++) {
        ron_hex_encode(hex, infos[i].pk, KMS_PK_LEN);
        printf("name key %-4u %s %s\n", (unsigned)infos[i].index, kms_alg_name(infos[i].alg), hex);
    }
    if (sealed)
        printf("sealed        yes (%s)\n", kms_seal_name(infos[0].seal));
    else
        printf("sealed        no (set RON_PASSPHRASE or RON_ROOT_SECRET_FILE)\n");
    printf("key dir       %s\n", dir);
    print_cap_keys(ck, ck_err);
}

static void
print_json(const kms_keyfile_info_t *infos, size_t n, const char *node_id, const char *dir,
           json_t *ck, const char *ck_err)
{
    char hex[2 * KMS_PK_LEN + 1];
    json_t *names = json_array(), *o;
    char *s;

    for (size_t i = 1; i < n; i++) {
        ron_hex_encode(hex, infos[i].pk, KMS_PK_LEN);
        json_array_append_new(names,
                              json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)infos[i].index,
                                        "alg", kms_alg_name(infos[i].alg), "public_key", hex,
                                        "seal", kms_seal_name(infos[i].seal)));
    }
    ron_hex_encode(hex, infos[0].pk, KMS_PK_LEN);
    o = json_pack("{s:s, s:{s:s, s:s, s:s}, s:o, s:b, s:s, s:s}", "node_id", node_id,
                  "identity_key", "alg", kms_alg_name(infos[0].alg), "public_key", hex, "seal",
                  kms_seal_name(infos[0].seal), "name_keys", names, "sealed", all_sealed(infos, n),
                  "seal", kms_seal_name(infos[0].seal), "key_dir", dir);
    json_object_set(o, "capability_keys", ck != NULL ? ck : json_null());
    if (ck == NULL)
        json_object_set_new(o, "capability_keys_error", json_string(ck_err));
    s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(o);
}

static int
key_show(int argc, char **argv)
{
    ron_config_t cfg; /* only for the default data dir, shared with `ron node` */
    kms_keyfile_info_t infos[KMS_MAX_NAME_KEYS + 1];
    uint8_t id[KMS_NODE_ID_LEN];
    char err[512], node_id[2 * KMS_NODE_ID_LEN + 1], dir[RON_CONFIG_PATH_MAX + 8];
    const char *data_dir = NULL, *node = NULL, *cap = NULL;
    char ck_err[256] = "";
    json_t *ck = NULL;
    bool json = false;
    size_t n = 0;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if ((strcmp(argv[i], "--node") == 0 || strcmp(argv[i], "--cap") == 0) &&
                   i + 1 < argc) {
            *(argv[i][2] == 'n' ? &node : &cap) = argv[i + 1];
            i++;
        } else if (strncmp(argv[i], "--node=", 7) == 0) {
            node = argv[i] + 7;
        } else if (strncmp(argv[i], "--cap=", 6) == 0) {
            cap = argv[i] + 6;
        } else if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
            data_dir = argv[++i];
        } else if (strncmp(argv[i], "--data-dir=", 11) == 0) {
            data_dir = argv[i] + 11;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", key_usage);
            return RON_EXIT_OK;
        } else {
            fprintf(stderr, "ron key show: unexpected argument '%s'\n%s", argv[i], key_usage);
            return RON_EXIT_USAGE;
        }
    }
    if (data_dir == NULL) {
        ron_config_defaults(&cfg);
        data_dir = cfg.data_dir;
    }
    if (data_dir[0] == '\0')
        return ron_cmd_fail(RON_EXIT_USAGE, "key show: empty --data-dir");
    snprintf(dir, sizeof dir, "%s/keys", data_dir);
    rc = kms_keys_inspect(data_dir, infos, RON_ARRAY_LEN(infos), &n, err, sizeof err);
    if (rc == RON_ENOKEYS)
        return ron_cmd_fail(RON_EXIT_FAIL,
                            "no key store in %s (a node creates its keys on its first start: "
                            "ron node --data-dir %s)",
                            dir, data_dir);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "key show: %s (%s)", err, ron_errname(rc));
    kms_node_id_of(infos[0].pk, id);
    ron_hex_encode(node_id, id, sizeof id);
    ck = node_key_info(node, cap, data_dir, ck_err, sizeof ck_err);
    if (json)
        print_json(infos, n, node_id, dir, ck, ck_err);
    else
        print_text(infos, n, node_id, dir, ck, ck_err);
    json_decref(ck);
    return RON_EXIT_OK;
}

static int
key_rotate(int argc, char **argv)
{
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    char *ans = NULL, *pans = NULL, *txt = NULL, t[32];
    json_t *ck = NULL, *pk = NULL;
    const char *passport = "rotated";
    bool json;
    int rc;

    cli_opt(&o, "--json", false);
    if ((rc = cli_parse(&o, argc, argv, key_usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    if (o.n_pos != 0) {
        fprintf(stderr, "ron key rotate: unexpected argument '%s'\n%s", o.pos[0], key_usage);
        return RON_EXIT_USAGE;
    }
    json = cli_get(&o, "--json") != NULL;
    if ((rc = cli_client(&o, "key rotate", &c)) != RON_EXIT_OK)
        goto out;
    /* not idempotent (each call is one more generation): no retries */
    if ((rc = ron_client_request(c, OAP_APP_KERNEL, "key_rotate", NULL, false, &ans, NULL)) < 0) {
        rc = cli_fail(c, "key rotate", rc);
        goto out;
    }
    ck = ans != NULL ? json_loads(ans, 0, NULL) : NULL;
    if (!json_is_string(json_object_get(ck, "kid"))) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "key rotate: the node sent a malformed answer");
        goto out;
    }
    /* the passport's signing key, when the node runs the passport */
    rc = ron_client_request(c, OAP_APP_AUTH, "rotate", "{\"keys\":[\"sign\"]}", false, &pans,
                            NULL);
    if (rc < 0) {
        const ron_client_error_t *e = ron_client_last_error(c);
        if (e->status == 503 || e->status == 404) {
            passport = "not running";
        } else {
            rc = cli_fail(c, "key rotate: capability keys now rotated, but the passport", rc);
            goto out;
        }
    } else {
        pk = pans != NULL ? json_loads(pans, 0, NULL) : NULL;
    }
    if (json) {
        json_object_set_new(ck, "passport", pk != NULL ? json_incref(pk) : json_string(passport));
        txt = json_dumps(ck, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", txt != NULL ? txt : "{}");
    } else {
        printf("capability key now %s", jstr(ck, "kid"));
        if (jstr(ck, "prev_kid")[0] != '\0')
            printf(" (%s verifies until %s)", jstr(ck, "prev_kid"),
                   iso_time(jstr(ck, "prev_until"), t, sizeof t));
        printf("\npassport signing key %s\n", passport);
    }
    rc = RON_EXIT_OK;
out:
    free(txt);
    json_decref(pk);
    json_decref(ck);
    free(pans);
    free(ans);
    ron_client_free(c);
    return rc;
}

int
cmd_key(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "show") == 0)
        return key_show(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "rotate") == 0)
        return key_rotate(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s", key_usage);
        return RON_EXIT_OK;
    }
    fprintf(stderr, "%s", key_usage);
    return RON_EXIT_USAGE;
}
