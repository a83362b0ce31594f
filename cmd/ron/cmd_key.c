/*
 * cmd_key.c - `ron key show [--data-dir DIR] [--json]`: the node id, the
 * identity and name-signing public keys, whether they are sealed, and the
 * key directory (DESIGN.md §11). Reads only the public parts of the key
 * files (kms_keys_inspect), so it needs no passphrase and never creates a
 * key store: `ron node` does that on its first start.
 * Data dir: --data-dir, else RON_DATA_DIR, else the default of `ron node`
 * (ron_config_defaults computes both).
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "ron_config.h"
#include "ron_err.h"
#include "ron_kms.h"
#include "ron_util.h"

static const char key_usage[] =
    "usage: ron key show [--data-dir DIR] [--json]\n"
    "  Print the node id (BLAKE3 of the identity public key), the identity and\n"
    "  name-signing public keys, whether the key files are sealed, and the key\n"
    "  directory <data-dir>/keys. Needs no passphrase; creates nothing.\n"
    "  Data dir: --data-dir, else $RON_DATA_DIR, else $XDG_DATA_HOME/ron,\n"
    "  else ~/.local/share/ron.\n";

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
print_text(const kms_keyfile_info_t *infos, size_t n, const char *node_id, const char *dir)
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
}

static void
print_json(const kms_keyfile_info_t *infos, size_t n, const char *node_id, const char *dir)
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
    const char *data_dir = NULL;
    bool json = false;
    size_t n = 0;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
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
    if (json)
        print_json(infos, n, node_id, dir);
    else
        print_text(infos, n, node_id, dir);
    return RON_EXIT_OK;
}

int
cmd_key(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "show") == 0)
        return key_show(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s", key_usage);
        return RON_EXIT_OK;
    }
    fprintf(stderr, "%s", key_usage);
    return RON_EXIT_USAGE;
}
