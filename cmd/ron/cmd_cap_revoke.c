/*
 * cmd_cap_revoke.c - `ron cap revoke ID|--epoch [--until T]` (DESIGN.md §11,
 * docs/protocol/capabilities.md "Node plumbing"): ask the node's app port
 * (op cap_revoke on app 6, forwarded to the kernel's authority) to revoke
 * one token identifier, with every attenuation of it, or to raise the
 * revocation epoch, which kills every token minted before (the node then
 * writes a new operator.cap). Revoking an id needs a capability with `mint`,
 * the epoch one with `admin`. It prints the authority's new head and epoch;
 * every enforcing service of the node knows the change within a second.
 * Kept apart from cmd_cap.c (the offline commands) because it needs a node.
 * Exit codes: 0 ok, 1 the node refused or is unreachable, 2 bad usage.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "cmd_client.h"
#include "oap.h"
#include "ron_auth.h"
#include "ron_err.h"
#include "ron_util.h"

static const char revoke_usage[] =
    "usage: ron cap revoke ID [--until UNIX] | --epoch [--node ADDR] [--cap TOKEN]\n"
    "Revoke the token identifier ID (ron1:<kid>:<epoch>:<32 hex>; `ron cap verify TOKEN\n"
    "--json` shows it) and every token attenuated from it, for ever or until the unix\n"
    "time UNIX (the token's expiry is enough). --epoch raises the revocation epoch\n"
    "instead: every token minted before it is revoked, the operator capability too\n"
    "(the node writes a new operator.cap). An id needs a capability with `mint`,\n"
    "--epoch one with `admin`. Prints the authority's epoch and change number.\n"
    CLI_COMMON_HELP;

int
cmd_cap_revoke(int argc, char **argv)
{
    cli_opts_t o = {0};
    ron_client_t *c = NULL;
    json_t *args = NULL, *ans_j = NULL;
    const char *until = NULL, *epoch_s, *head_s;
    char *txt = NULL, *ans = NULL;
    bool epoch;
    uint64_t u;
    auth_id_t id;
    int rc;

    cli_opt(&o, "--epoch", false);
    cli_opt(&o, "--until", true);
    if ((rc = cli_parse(&o, argc, argv, revoke_usage)) != 0)
        return rc > 0 ? RON_EXIT_OK : RON_EXIT_USAGE;
    epoch = cli_get(&o, "--epoch") != NULL;
    until = cli_get(&o, "--until");
    if ((epoch && (o.n_pos != 0 || until != NULL)) || (!epoch && o.n_pos != 1)) {
        fprintf(stderr, "%s", revoke_usage);
        return RON_EXIT_USAGE;
    }
    if (!epoch && auth_id_parse(o.pos[0], strlen(o.pos[0]), &id) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE,
                            "cap revoke: '%s' is not a token identifier ron1:<kid>:<epoch>:<32 hex>",
                            o.pos[0]);
    if (until != NULL && ron_parse_u64(until, strlen(until), &u) < 0)
        return ron_cmd_fail(RON_EXIT_USAGE, "cap revoke: --until %s: expected unix seconds",
                            until);
    args = epoch ? json_pack("{s:s}", "epoch", "next") : json_pack("{s:s}", "id", o.pos[0]);
    if (until != NULL)
        json_object_set_new(args, "until", json_string(until));
    txt = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    if (txt == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "cap revoke: out of memory");
        goto out;
    }
    if ((rc = cli_client(&o, "cap revoke", &c)) != RON_EXIT_OK)
        goto out;
    /* idempotent at the node (revoking twice is revoking once): retries are safe */
    if ((rc = ron_client_request(c, OAP_APP_KERNEL, "cap_revoke", txt, true, &ans, NULL)) < 0) {
        rc = cli_fail(c, "cap revoke", rc);
        goto out;
    }
    ans_j = ans != NULL ? json_loads(ans, 0, NULL) : NULL;
    epoch_s = json_string_value(json_object_get(ans_j, "epoch"));
    head_s = json_string_value(json_object_get(ans_j, "head"));
    if (epoch_s == NULL || head_s == NULL) {
        rc = ron_cmd_fail(RON_EXIT_FAIL, "cap revoke: the node sent a malformed answer");
        goto out;
    }
    if (epoch)
        printf("epoch %s in force (change %s)\n", epoch_s, head_s);
    else
        printf("revoked %s (change %s, epoch %s)\n", o.pos[0], head_s, epoch_s);
    rc = RON_EXIT_OK;
out:
    json_decref(ans_j);
    json_decref(args);
    free(ans);
    free(txt);
    ron_client_free(c);
    return rc;
}
