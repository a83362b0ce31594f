/*
 * cmd_audit.c - `ron audit verify [FILE] [--checkpoints FILE] [--key HEX]
 * [--data-dir DIR]`: check an audit log and its signed checkpoints offline
 * (DESIGN.md §11, docs/runbooks/audit.md). Exit 0 when the log verifies,
 * 1 with a one-line reason naming the first bad sequence number when it has
 * been edited, cut, reordered or truncated (or cannot be read), 2 for bad
 * usage. Reads only; never repairs anything.
 * Defaults: <data-dir>/audit/audit.log and, beside the log, `checkpoints`.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "ron_audit.h"
#include "ron_config.h"
#include "ron_err.h"
#include "ron_util.h"

static const char audit_usage[] =
    "usage: ron audit verify [FILE] [--checkpoints FILE] [--key PUBKEY_HEX] [--data-dir DIR]\n"
    "  Verify an audit log: every record's hash, the chain of prev hashes, the\n"
    "  sequence numbers, and the signed checkpoints (which catch a cut tail).\n"
    "  FILE defaults to <data-dir>/audit/audit.log; checkpoints default to the\n"
    "  file `checkpoints` beside the log. --key pins the checkpoint signing key\n"
    "  (64 hex); without it the key named by the first checkpoint is trusted.\n"
    "  Exit 0 verified, 1 tampering found (one-line reason), 2 bad usage.\n";

static int
audit_verify(int argc, char **argv)
{
    ron_config_t cfg; /* only for the default data dir, shared with `ron node` */
    char log_path[RON_CONFIG_PATH_MAX + 32], ckpt_path[RON_CONFIG_PATH_MAX + 32], hex[65];
    const char *file = NULL, *ckpt = NULL, *key = NULL, *data_dir = NULL;
    uint8_t pk[AUD_PK_LEN];
    aud_report_t rep;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "--checkpoints") == 0 || strcmp(a, "--key") == 0 ||
             strcmp(a, "--data-dir") == 0) && i + 1 < argc) {
            const char **dst = a[2] == 'c' ? &ckpt : a[2] == 'k' ? &key : &data_dir;
            *dst = argv[++i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("%s", audit_usage);
            return RON_EXIT_OK;
        } else if (a[0] != '-' && file == NULL) {
            file = a;
        } else {
            fprintf(stderr, "ron audit verify: unexpected argument '%s'\n%s", a, audit_usage);
            return RON_EXIT_USAGE;
        }
    }
    if (key != NULL && (strlen(key) != 2 * AUD_PK_LEN ||
                        ron_hex_decode(pk, AUD_PK_LEN, key, strlen(key)) < 0))
        return ron_cmd_fail(RON_EXIT_USAGE, "audit verify: --key needs 64 hex digits");
    if (file == NULL) {
        if (data_dir == NULL) {
            ron_config_defaults(&cfg);
            data_dir = cfg.data_dir;
        }
        if (data_dir[0] == '\0')
            return ron_cmd_fail(RON_EXIT_USAGE, "audit verify: empty --data-dir");
        snprintf(log_path, sizeof log_path, "%s/audit/audit.log", data_dir);
        file = log_path;
    }
    if (ckpt == NULL) {
        char dir[sizeof log_path];
        snprintf(dir, sizeof dir, "%s", file);
        snprintf(ckpt_path, sizeof ckpt_path, "%s/checkpoints", dirname(dir));
        ckpt = ckpt_path;
    }
    rc = aud_verify_file(file, ckpt, key != NULL ? pk : NULL, &rep);
    if (rc == RON_EAUDITCHAIN)
        return ron_cmd_fail(RON_EXIT_FAIL, "audit verify: %s: %s at seq %" PRIu64 ": %s", file,
                            aud_verdict_name(rep.verdict), rep.bad_seq, rep.reason);
    if (rc < 0)
        return ron_cmd_fail(RON_EXIT_FAIL, "audit verify: cannot read %s: %s", file,
                            ron_strerror(rc));
    ron_hex_encode(hex, rep.head, AUD_HASH_LEN);
    printf("ok: %" PRIu64 " records (seq %" PRIu64 "..%" PRIu64 "), head b3:%s, %" PRIu64
           " checkpoints (last seq %" PRIu64 ")",
           rep.records, rep.first_seq, rep.last_seq, hex, rep.checkpoints, rep.ckpt_seq);
    if (rep.checkpoints > 0 && key == NULL)
        printf(", key not pinned (--key)");
    if (rep.torn_bytes > 0)
        printf(", torn tail of %" PRIu64 " bytes ignored", rep.torn_bytes);
    printf("\n");
    return RON_EXIT_OK;
}

int
cmd_audit(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return audit_verify(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s", audit_usage);
        return RON_EXIT_OK;
    }
    fprintf(stderr, "%s", audit_usage);
    return RON_EXIT_USAGE;
}
