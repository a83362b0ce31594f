/*
 * test_svc_registry.c - svc-registry's core: descriptor parsing and
 * canonical form, M-of-N governance (M = 2, N = 3), the append-only file log
 * and chain verification. Real files in a temporary directory, real Ed25519
 * keys (fixed seeds, so runs are reproducible).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "reg_internal.h"
#include "ron_err.h"
#include "ron_util.h"

#define NKEYS 6 /* A B C (genesis signers), D E F (later ones) */
enum { A, B, C, D, E, F };

typedef struct {
    char dir[64];
    char path[96];
    uint8_t pk[NKEYS][REG_KEY_LEN];
    uint8_t sk[NKEYS][REG_SK_LEN];
    reg_t *reg;
} fx_t;

static int
rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int
setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    reg_opts_t o = {0};
    assert_true(sodium_init() >= 0);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/ron-reg-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/registry.log", fx->dir);
    for (int i = 0; i < NKEYS; i++) {
        uint8_t seed[32];
        memset(seed, 0x10 + i, sizeof seed);
        crypto_sign_seed_keypair(fx->pk[i], fx->sk[i], seed);
    }
    o.path = fx->path;
    assert_int_equal(reg_open(&o, &fx->reg, NULL), 0);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    fx_t *fx = *state;
    reg_free(fx->reg);
    nftw(fx->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* A descriptor following the registry's head, signed over by keys `who`
 * (indexes into fx) with threshold m; revoked keys `rev`. */
static reg_desc_t *
desc_next(fx_t *fx, const int *who, size_t n, uint32_t m, const int *rev, size_t nrev,
          uint8_t policy_byte)
{
    reg_desc_t *d = calloc(1, sizeof *d);
    uint64_t v;
    reg_head(fx->reg, &v, d->prev, NULL);
    d->version = v + 1;
    memset(d->policy, policy_byte, sizeof d->policy);
    d->n_peers = 1;
    snprintf(d->peers[0], sizeof d->peers[0], "127.0.0.1:%u", 5300u + policy_byte);
    d->n_trusted = 1;
    snprintf(d->trusted[0].name, sizeof d->trusted[0].name, "ops.key-1");
    memcpy(d->trusted[0].pk, fx->pk[F], REG_KEY_LEN);
    d->threshold = m;
    d->n_signers = n;
    for (size_t i = 0; i < n; i++)
        memcpy(d->signers[i], fx->pk[who[i]], REG_KEY_LEN);
    d->n_revoked = nrev;
    for (size_t i = 0; i < nrev; i++)
        memcpy(d->revoked[i], fx->pk[rev[i]], REG_KEY_LEN);
    return d;
}

static int
approve(fx_t *fx, const uint8_t id[REG_HASH_LEN], int who)
{
    uint8_t sig[REG_SIG_LEN];
    assert_int_equal(reg_approval_sign(id, fx->sk[who], sig), 0);
    return reg_approve(fx->reg, id, fx->pk[who], sig, NULL, NULL);
}

static void
propose(fx_t *fx, const reg_desc_t *d, uint8_t id[REG_HASH_LEN])
{
    reg_err_t err = {{0}};
    int rc = reg_propose(fx->reg, d, id, &err);
    if (rc != 0)
        fail_msg("propose: %s (%s)", ron_strerror(rc), err.msg);
}

/* Commit version head+1 with signers A B C, M = 2, approved by A and B. */
static void
commit_abc(fx_t *fx, uint8_t policy_byte)
{
    static const int abc[] = {A, B, C};
    reg_desc_t *d = desc_next(fx, abc, 3, 2, NULL, 0, policy_byte);
    uint8_t id[REG_HASH_LEN];
    propose(fx, d, id);
    assert_int_equal(approve(fx, id, A), 0);
    assert_int_equal(approve(fx, id, B), 0);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), 0);
    free(d);
}

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(1 << 20);
    assert_non_null(f);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* ---- descriptor sets ---- */

static const char good_desc[] =
    "{\"v\":1,\"version\":1,\"prev\":\"b3:"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "\",\"policy\":\"b3:"
    "1111111111111111111111111111111111111111111111111111111111111111"
    "\",\"bootstrap\":[\"127.0.0.1:5302\"],\"trusted_keys\":[],\"signers\":{\"threshold\":1,"
    "\"keys\":[\"2222222222222222222222222222222222222222222222222222222222222222\"]},"
    "\"revoked\":[]}";

static void
test_registry_descriptor_canonical_form_round_trips(void **state)
{
    reg_desc_t *d = malloc(sizeof *d);
    char *txt;
    size_t n;
    (void)state;
    assert_int_equal(reg_desc_parse(good_desc, strlen(good_desc), d, NULL), 0);
    assert_int_equal(reg_desc_encode(d, &txt, &n), 0);
    assert_int_equal(n, strlen(good_desc));
    assert_memory_equal(txt, good_desc, n);
    free(txt);
    free(d);
}

static void
test_registry_descriptor_parser_refuses_malformed_sets(void **state)
{
    static const struct {
        const char *from, *to;
        int rc;
    } cases[] = {
        {"\"revoked\":[]", "\"revoked\":[],\"extra\":1", RON_EREGDESC}, /* unknown field */
        {"\"version\":1", "\"version\":1.0", RON_EREGDESC},             /* float */
        {"\"version\":1", "\"version\":0", RON_EREGDESC},               /* version 0 */
        {"\"threshold\":1", "\"threshold\":2", RON_EREGDESC},           /* M > N */
        {"\"threshold\":1", "\"threshold\":0", RON_EREGDESC},           /* M = 0 */
        {"\"v\":1", "\"v\":2", RON_EREGDESC},                           /* format */
        {"\"b3:1111", "\"b4:1111", RON_EREGDESC},                       /* policy */
        {"127.0.0.1:5302", "no port here", RON_EREGDESC},               /* peer */
        {"\"revoked\":[]",
         "\"revoked\":[\"2222222222222222222222222222222222222222222222222222222222222222\"]",
         RON_EREGDESC},                                                    /* revoked signer */
        {"\"revoked\":[]", "\"revoked\":[],\"revoked\":[]", RON_EREGDESC}, /* duplicate key */
        {"\"trusted_keys\":[]",
         "\"trusted_keys\":[{\"name\":\"A\",\"alg\":\"ed25519\",\"pk\":"
         "\"2222222222222222222222222222222222222222222222222222222222222222\"}]",
         RON_EREGDESC}, /* key name case */
    };
    reg_desc_t *d = malloc(sizeof *d);
    reg_err_t err;
    char buf[2048];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *at = strstr(good_desc, cases[i].from);
        size_t pre = (size_t)(at - good_desc);
        assert_non_null(at);
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)pre, good_desc, cases[i].to,
                 at + strlen(cases[i].from));
        err.msg[0] = '\0';
        if (reg_desc_parse(buf, strlen(buf), d, &err) != cases[i].rc)
            fail_msg("case %zu accepted or wrong code: %s", i, buf);
        assert_true(err.msg[0] != '\0');
    }
    /* Too many peers is a limit, reported as such. */
    {
        const char *at = strstr(good_desc, "\"127.0.0.1:5302\"");
        size_t pre = (size_t)(at - good_desc);
        snprintf(buf, sizeof buf, "%.*s", (int)pre, good_desc);
        for (int i = 0; i <= (int)REG_MAX_PEERS; i++)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s\"h:%d\"", i ? "," : "", i);
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s",
                 at + strlen("\"127.0.0.1:5302\""));
        assert_int_equal(reg_desc_parse(buf, strlen(buf), d, &err), RON_EREGLIMIT);
    }
    free(d);
}

/* ---- governance ---- */

static void
test_registry_commits_after_two_of_three_approvals(void **state)
{
    fx_t *fx = *state;
    static const int abc[] = {A, B, C};
    reg_desc_t *d = desc_next(fx, abc, 3, 2, NULL, 0, 1), *cur = malloc(sizeof *cur);
    uint8_t id[REG_HASH_LEN], hash[REG_HASH_LEN];
    uint64_t v;
    size_t k;
    uint32_t m;

    propose(fx, d, id);
    assert_int_equal(approve(fx, id, A), 0);
    assert_int_equal(reg_proposal_status(fx->reg, id, &k, &m), 0);
    assert_int_equal(k, 1);
    assert_int_equal(m, 2);
    assert_int_equal(approve(fx, id, C), 0);
    assert_int_equal(reg_commit(fx->reg, id, &v, hash), 0);
    assert_int_equal(v, 1);
    assert_memory_equal(hash, id, REG_HASH_LEN);
    assert_int_equal(reg_current(fx->reg, cur), 0);
    assert_int_equal(cur->threshold, 2);
    assert_int_equal(reg_proposal_status(fx->reg, id, &k, &m), RON_ENOTFOUND);
    free(cur);
    free(d);
}

static void
test_registry_refuses_commit_after_one_approval(void **state)
{
    fx_t *fx = *state;
    static const int abc[] = {A, B, C};
    reg_desc_t *d;
    uint8_t id[REG_HASH_LEN];
    uint64_t v;

    commit_abc(fx, 1);
    d = desc_next(fx, abc, 3, 2, NULL, 0, 2);
    propose(fx, d, id);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), RON_EREGQUORUM);
    assert_int_equal(approve(fx, id, B), 0);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), RON_EREGQUORUM);
    reg_head(fx->reg, &v, NULL, NULL);
    assert_int_equal(v, 1);
    assert_int_equal(approve(fx, id, C), 0);
    assert_int_equal(reg_commit(fx->reg, id, &v, NULL), 0);
    assert_int_equal(v, 2);
    free(d);
}

static void
test_registry_refuses_duplicate_unknown_and_forged_approvals(void **state)
{
    fx_t *fx = *state;
    static const int abc[] = {A, B, C};
    reg_desc_t *d, *other;
    uint8_t id[REG_HASH_LEN], oid[REG_HASH_LEN], sig[REG_SIG_LEN];
    size_t k;
    uint32_t m;

    commit_abc(fx, 1);
    d = desc_next(fx, abc, 3, 2, NULL, 0, 2);
    other = desc_next(fx, abc, 3, 2, NULL, 0, 3);
    propose(fx, d, id);
    propose(fx, other, oid);
    assert_int_equal(approve(fx, id, A), 0);
    assert_int_equal(approve(fx, id, A), RON_EREGDUP);
    assert_int_equal(approve(fx, id, D), RON_EREGSIGNER);
    /* B's signature over another proposal does not approve this one */
    assert_int_equal(reg_approval_sign(oid, fx->sk[B], sig), 0);
    assert_int_equal(reg_approve(fx->reg, id, fx->pk[B], sig, NULL, NULL), RON_EREGSIG);
    /* without the domain string the same key's raw signature of the id fails */
    crypto_sign_detached(sig, NULL, id, REG_HASH_LEN, fx->sk[B]);
    assert_int_equal(reg_approve(fx->reg, id, fx->pk[B], sig, NULL, NULL), RON_EREGSIG);
    assert_int_equal(reg_proposal_status(fx->reg, id, &k, &m), 0);
    assert_int_equal(k, 1);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), RON_EREGQUORUM);
    memset(oid, 0xee, sizeof oid);
    assert_int_equal(approve(fx, oid, A), RON_ENOTFOUND);
    free(d);
    free(other);
}

static void
test_registry_revoked_signer_refused_and_its_pending_approval_dropped(void **state)
{
    fx_t *fx = *state;
    static const int abd[] = {A, B, D}, abc[] = {A, B, C}, rev_c[] = {C};
    reg_desc_t *revoke, *pending, *next, *drop_rev;
    uint8_t rid[REG_HASH_LEN], pid[REG_HASH_LEN], nid[REG_HASH_LEN], did[REG_HASH_LEN];
    reg_err_t err;
    size_t k;
    uint32_t m;

    commit_abc(fx, 1);
    revoke = desc_next(fx, abd, 3, 2, rev_c, 1, 2);
    pending = desc_next(fx, abc, 3, 2, NULL, 0, 3);
    propose(fx, revoke, rid);
    propose(fx, pending, pid);
    assert_int_equal(approve(fx, pid, C), 0);
    assert_int_equal(approve(fx, pid, A), 0);
    assert_int_equal(approve(fx, rid, A), 0);
    assert_int_equal(approve(fx, rid, B), 0);
    assert_int_equal(reg_commit(fx->reg, rid, NULL, NULL), 0);
    /* C's approval on the open proposal is gone; A's stays; the base moved */
    assert_int_equal(reg_proposal_status(fx->reg, pid, &k, &m), 0);
    assert_int_equal(k, 1);
    assert_int_equal(reg_commit(fx->reg, pid, NULL, NULL), RON_EREGSTALE);
    /* From now on C is refused as revoked; D (added) is accepted */
    next = desc_next(fx, abd, 3, 2, rev_c, 1, 4);
    propose(fx, next, nid);
    assert_int_equal(approve(fx, nid, C), RON_EREGREVOKED);
    assert_int_equal(approve(fx, nid, D), 0);
    assert_int_equal(approve(fx, nid, A), 0);
    /* A change that forgets C's revocation is refused outright */
    drop_rev = desc_next(fx, abc, 3, 2, NULL, 0, 5);
    assert_int_equal(reg_propose(fx->reg, drop_rev, did, &err), RON_EREGDESC);
    assert_int_equal(reg_commit(fx->reg, nid, NULL, NULL), 0);
    free(revoke);
    free(pending);
    free(next);
    free(drop_rev);
}

static void
test_registry_signer_set_change_needs_m_of_the_old_set(void **state)
{
    fx_t *fx = *state;
    static const int def[] = {D, E, F};
    reg_desc_t *d, *after;
    uint8_t id[REG_HASH_LEN], id2[REG_HASH_LEN];
    uint64_t v;

    commit_abc(fx, 1);
    d = desc_next(fx, def, 3, 2, NULL, 0, 2);
    propose(fx, d, id);
    assert_int_equal(approve(fx, id, D), RON_EREGSIGNER);
    assert_int_equal(approve(fx, id, E), RON_EREGSIGNER);
    assert_int_equal(approve(fx, id, A), 0);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), RON_EREGQUORUM);
    assert_int_equal(approve(fx, id, C), 0);
    assert_int_equal(reg_commit(fx->reg, id, &v, NULL), 0);
    assert_int_equal(v, 2);
    /* Now the new set governs: A (removed, not revoked) is unknown */
    after = desc_next(fx, def, 3, 2, NULL, 0, 3);
    propose(fx, after, id2);
    assert_int_equal(approve(fx, id2, A), RON_EREGSIGNER);
    assert_int_equal(approve(fx, id2, D), 0);
    assert_int_equal(approve(fx, id2, F), 0);
    assert_int_equal(reg_commit(fx->reg, id2, &v, NULL), 0);
    assert_int_equal(v, 3);
    free(d);
    free(after);
}

static void
test_registry_refuses_commit_on_a_stale_base(void **state)
{
    fx_t *fx = *state;
    static const int abc[] = {A, B, C};
    reg_desc_t *x, *y;
    uint8_t xid[REG_HASH_LEN], yid[REG_HASH_LEN];
    reg_err_t err;

    commit_abc(fx, 1);
    x = desc_next(fx, abc, 3, 2, NULL, 0, 2);
    y = desc_next(fx, abc, 3, 2, NULL, 0, 3);
    propose(fx, x, xid);
    propose(fx, y, yid);
    assert_int_equal(approve(fx, xid, A), 0);
    assert_int_equal(approve(fx, yid, A), 0);
    assert_int_equal(approve(fx, yid, B), 0);
    assert_int_equal(reg_commit(fx->reg, yid, NULL, NULL), 0);
    /* x was based on version 1: no lost update */
    assert_int_equal(approve(fx, xid, B), RON_EREGSTALE);
    assert_int_equal(reg_commit(fx->reg, xid, NULL, NULL), RON_EREGSTALE);
    /* proposing on an old base, or skipping a version, is refused */
    assert_int_equal(reg_propose(fx->reg, x, xid, &err), RON_EREGSTALE);
    x->version = 4;
    assert_int_equal(reg_propose(fx->reg, x, xid, &err), RON_EREGSTALE);
    free(x);
    free(y);
}

static void
test_registry_full_proposal_table_evicts_the_oldest_unapproved_one(void **state)
{
    fx_t *fx = *state;
    static const int abc[] = {A, B, C};
    uint8_t ids[REG_MAX_PROPOSALS + 1][REG_HASH_LEN];
    reg_desc_t *d;
    reg_err_t err;
    size_t k;
    uint32_t m;

    commit_abc(fx, 1);
    for (unsigned i = 0; i < REG_MAX_PROPOSALS; i++) {
        d = desc_next(fx, abc, 3, 2, NULL, 0, (uint8_t)(10 + i));
        propose(fx, d, ids[i]);
        free(d);
    }
    assert_int_equal(approve(fx, ids[0], A), 0); /* the oldest, but approved */
    d = desc_next(fx, abc, 3, 2, NULL, 0, 200);
    propose(fx, d, ids[REG_MAX_PROPOSALS]);
    free(d);
    assert_int_equal(reg_proposal_status(fx->reg, ids[0], &k, &m), 0);
    assert_int_equal(k, 1);
    assert_int_equal(reg_proposal_status(fx->reg, ids[1], &k, &m), RON_ENOTFOUND);
    /* every open proposal approved: the table is full for real */
    for (unsigned i = 2; i <= REG_MAX_PROPOSALS; i++)
        assert_int_equal(approve(fx, ids[i], B), 0);
    d = desc_next(fx, abc, 3, 2, NULL, 0, 201);
    assert_int_equal(reg_propose(fx->reg, d, ids[1], &err), RON_EREGFULL);
    /* a commit makes the others stale: room again */
    assert_int_equal(approve(fx, ids[0], C), 0);
    assert_int_equal(reg_commit(fx->reg, ids[0], NULL, NULL), 0);
    free(d);
    d = desc_next(fx, abc, 3, 2, NULL, 0, 202);
    propose(fx, d, ids[1]);
    free(d);
}

/* ---- storage and verification ---- */

static void
expect_bad(const char *log, size_t len, uint64_t ev, const uint8_t *eh, uint64_t bad)
{
    reg_report_t rep;
    assert_int_equal(reg_verify_buf(log, len, ev, eh, &rep), RON_EREGCHAIN);
    if (rep.bad_version != bad)
        fail_msg("bad_version %llu, expected %llu (%s)", (unsigned long long)rep.bad_version,
                 (unsigned long long)bad, rep.err.msg);
    assert_true(rep.err.msg[0] != '\0');
}

static void
test_registry_verify_catches_edit_drop_reorder_and_truncation(void **state)
{
    fx_t *fx = *state;
    char *log, *buf = malloc(1 << 20), *line[4];
    size_t len, ll[4], pos = 0;
    uint8_t head[REG_HASH_LEN];
    reg_report_t rep;
    reg_record_t *rec = malloc(sizeof *rec);
    char *forged;
    size_t fl;
    reg_err_t err;

    for (uint8_t i = 1; i <= 4; i++)
        commit_abc(fx, i);
    reg_head(fx->reg, NULL, head, NULL);
    log = slurp(fx->path, &len);
    assert_int_equal(reg_verify_buf(log, len, 4, head, &rep), 0);
    assert_int_equal(rep.versions, 4);
    assert_int_equal(rep.good_len, len);
    for (int i = 0; i < 4; i++) {
        line[i] = log + pos;
        ll[i] = (size_t)((char *)memchr(log + pos, '\n', len - pos) - (log + pos)) + 1;
        pos += ll[i];
    }
    /* edit: one hex digit of version 2's policy */
    memcpy(buf, log, len);
    buf[ll[0] + (size_t)(strstr(line[1], "\"policy\":\"b3:") - line[1]) + 14] ^= 1;
    expect_bad(buf, len, 0, NULL, 2);
    /* edit with the hash recomputed: the approvals no longer verify */
    assert_int_equal(reg__record_parse(line[1], ll[1] - 1, rec, &err), 0);
    rec->desc.policy[0] ^= 1;
    assert_int_equal(reg_desc_id(&rec->desc, rec->hash), 0);
    assert_int_equal(reg__record_encode(rec, &forged, &fl), 0);
    pos = 0;
    memcpy(buf, line[0], ll[0]), pos += ll[0];
    memcpy(buf + pos, forged, fl), pos += fl;
    buf[pos++] = '\n';
    expect_bad(buf, pos, 0, NULL, 2);
    free(forged);
    /* drop version 3 */
    pos = 0;
    memcpy(buf, line[0], ll[0]), pos += ll[0];
    memcpy(buf + pos, line[1], ll[1]), pos += ll[1];
    memcpy(buf + pos, line[3], ll[3]), pos += ll[3];
    expect_bad(buf, pos, 0, NULL, 3);
    /* reorder versions 2 and 3 */
    pos = 0;
    memcpy(buf, line[0], ll[0]), pos += ll[0];
    memcpy(buf + pos, line[2], ll[2]), pos += ll[2];
    memcpy(buf + pos, line[1], ll[1]), pos += ll[1];
    memcpy(buf + pos, line[3], ll[3]), pos += ll[3];
    expect_bad(buf, pos, 0, NULL, 2);
    /* a torn last line */
    expect_bad(log, len - 10, 0, NULL, 4);
    assert_int_equal(reg_verify_buf(log, len - 10, 0, NULL, &rep), RON_EREGCHAIN);
    assert_true(rep.torn);
    assert_int_equal(rep.versions, 3);
    /* a whole version cut: invisible to the chain, caught with the head */
    assert_int_equal(reg_verify_buf(log, len - ll[3], 0, NULL, &rep), 0);
    expect_bad(log, len - ll[3], 4, head, 4);
    /* a removed approval leaves one of the two needed */
    assert_int_equal(reg__record_parse(line[1], ll[1] - 1, rec, &err), 0);
    rec->n_appr = 1;
    assert_int_equal(reg__record_encode(rec, &forged, &fl), 0);
    pos = 0;
    memcpy(buf, line[0], ll[0]), pos += ll[0];
    memcpy(buf + pos, forged, fl), pos += fl;
    buf[pos++] = '\n';
    expect_bad(buf, pos, 0, NULL, 2);
    free(forged);
    free(rec);
    free(buf);
    free(log);
}

static void
test_registry_reads_work_while_writes_are_refused(void **state)
{
    fx_t *fx = *state;
    static const int abc[] = {A, B, C};
    reg_opts_t o = {.path = fx->path, .read_only = true};
    reg_t *ro;
    reg_desc_t *d;
    uint8_t id[REG_HASH_LEN];
    reg_err_t err;
    char *rec;
    size_t n;
    uint64_t v;
    bool w;

    commit_abc(fx, 1);
    commit_abc(fx, 2);
    /* a read-only second opener (no lock needed) reads everything */
    assert_int_equal(reg_open(&o, &ro, &err), 0);
    reg_head(ro, &v, NULL, &w);
    assert_int_equal(v, 2);
    assert_false(w);
    assert_int_equal(reg_get(ro, 1, &rec, &n), 0);
    free(rec);
    d = desc_next(fx, abc, 3, 2, NULL, 0, 3);
    assert_int_equal(reg_propose(ro, d, id, &err), RON_EREGRDONLY);
    reg_free(ro);
    /* the operator switch */
    reg_set_read_only(fx->reg, true);
    assert_int_equal(reg_propose(fx->reg, d, id, &err), RON_EREGRDONLY);
    assert_int_equal(reg_get(fx->reg, 2, &rec, &n), 0);
    free(rec);
    reg_set_read_only(fx->reg, false);
    propose(fx, d, id);
    reg_set_read_only(fx->reg, true);
    assert_int_equal(approve(fx, id, A), RON_EREGRDONLY);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), RON_EREGRDONLY);
    reg_set_read_only(fx->reg, false);
    free(d);
    /* a full log: RAM registry with room for one and a half versions */
    assert_int_equal(reg_get(fx->reg, 1, &rec, &n), 0);
    free(rec);
    reg_free(fx->reg);
    o = (reg_opts_t){.path = NULL, .max_log = n + 1 + n / 2};
    assert_int_equal(reg_open(&o, &fx->reg, &err), 0);
    commit_abc(fx, 1);
    d = desc_next(fx, abc, 3, 2, NULL, 0, 2);
    assert_int_equal(reg_propose(fx->reg, d, id, &err), 0);
    assert_int_equal(approve(fx, id, A), 0);
    assert_int_equal(approve(fx, id, B), 0);
    assert_int_equal(reg_commit(fx->reg, id, NULL, NULL), RON_EREGFULL);
    reg_head(fx->reg, &v, NULL, &w);
    assert_int_equal(v, 1);
    assert_int_equal(reg_get(fx->reg, 1, &rec, &n), 0);
    free(rec);
    assert_int_equal(reg_get(fx->reg, 2, &rec, &n), RON_ENOTFOUND);
    free(d);
}

static void
test_registry_reopen_keeps_committed_versions_and_drops_a_torn_tail(void **state)
{
    fx_t *fx = *state;
    reg_opts_t o = {.path = fx->path};
    uint8_t head[REG_HASH_LEN], head2[REG_HASH_LEN];
    struct stat st, st2;
    reg_err_t err;
    uint64_t v;
    int fd;

    commit_abc(fx, 1);
    commit_abc(fx, 2);
    commit_abc(fx, 3);
    reg_head(fx->reg, NULL, head, NULL);
    reg_free(fx->reg);
    fx->reg = NULL;
    assert_int_equal(stat(fx->path, &st), 0);
    fd = open(fx->path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"descriptor\":{\"v\":1", 20), 20);
    close(fd);
    assert_int_equal(reg_open(&o, &fx->reg, &err), 0);
    reg_head(fx->reg, &v, head2, NULL);
    assert_int_equal(v, 3);
    assert_memory_equal(head, head2, REG_HASH_LEN);
    assert_int_equal(stat(fx->path, &st2), 0);
    assert_int_equal(st.st_size, st2.st_size);
    commit_abc(fx, 4);
    reg_head(fx->reg, &v, NULL, NULL);
    assert_int_equal(v, 4);
}

static void
test_registry_open_refuses_an_edited_log_and_a_second_writer(void **state)
{
    fx_t *fx = *state;
    reg_opts_t o = {.path = fx->path};
    reg_t *second = NULL;
    reg_err_t err;
    char *log;
    size_t len;
    FILE *f;

    commit_abc(fx, 1);
    commit_abc(fx, 2);
    assert_int_equal(reg_open(&o, &second, &err), RON_EBUSY);
    reg_free(fx->reg);
    fx->reg = NULL;
    log = slurp(fx->path, &len);
    *strstr(log, "127.0.0.1:") = '8'; /* an edited peer in version 1 */
    f = fopen(fx->path, "wb");
    assert_int_equal(fwrite(log, 1, len, f), len);
    fclose(f);
    err.msg[0] = '\0';
    assert_int_equal(reg_open(&o, &fx->reg, &err), RON_EREGCHAIN);
    assert_null(fx->reg);
    assert_non_null(strstr(err.msg, "version 1"));
    free(log);
}

/* Child side of the failed-write test: exit 0 when every check holds. */
static int
failed_write_child(fx_t *fx)
{
    static const int abc[] = {A, B, C};
    reg_desc_t *d = desc_next(fx, abc, 3, 2, NULL, 0, 2);
    uint8_t id[REG_HASH_LEN];
    struct stat st0, st1;
    struct rlimit rl;
    reg_err_t err;
    char *rec;
    size_t n;
    uint64_t v;
    bool w;
    int rc;

    if (stat(fx->path, &st0) < 0 || reg_propose(fx->reg, d, id, &err) < 0 ||
        approve(fx, id, A) < 0 || approve(fx, id, B) < 0)
        return 10;
    signal(SIGXFSZ, SIG_IGN);
    rl.rlim_cur = rl.rlim_max = (rlim_t)st0.st_size + 100; /* room for part of the line */
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
        return 11;
    rc = reg_commit(fx->reg, id, NULL, NULL);
    if (rc != -EFBIG)
        return 12;
    reg_head(fx->reg, &v, NULL, &w);
    if (v != 1 || w)
        return 13; /* the head did not move; writes are refused from now on */
    if (stat(fx->path, &st1) < 0 || st1.st_size != st0.st_size)
        return 14; /* the partial line was cut back */
    if (reg_get(fx->reg, 1, &rec, &n) < 0)
        return 15; /* reads keep working */
    free(rec);
    if (reg_commit(fx->reg, id, NULL, NULL) != RON_EREGRDONLY ||
        reg_propose(fx->reg, d, id, &err) != RON_EREGRDONLY)
        return 16;
    reg_set_read_only(fx->reg, false); /* the operator switch cannot undo it */
    if (reg_commit(fx->reg, id, NULL, NULL) != RON_EREGRDONLY)
        return 17;
    free(d);
    return 0;
}

static void
test_registry_failed_write_is_cut_back_and_refuses_later_writes(void **state)
{
    fx_t *fx = *state;
    reg_opts_t o = {.path = fx->path};
    reg_err_t err;
    pid_t pid;
    int status;
    uint64_t v;

    commit_abc(fx, 1);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(failed_write_child(fx));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* the file still opens whole at version 1 and takes writes again */
    reg_free(fx->reg);
    assert_int_equal(reg_open(&o, &fx->reg, &err), 0);
    reg_head(fx->reg, &v, NULL, NULL);
    assert_int_equal(v, 1);
    commit_abc(fx, 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_descriptor_canonical_form_round_trips),
        cmocka_unit_test(test_registry_descriptor_parser_refuses_malformed_sets),
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_registry_commits_after_two_of_three_approvals),
        T(test_registry_refuses_commit_after_one_approval),
        T(test_registry_refuses_duplicate_unknown_and_forged_approvals),
        T(test_registry_revoked_signer_refused_and_its_pending_approval_dropped),
        T(test_registry_signer_set_change_needs_m_of_the_old_set),
        T(test_registry_refuses_commit_on_a_stale_base),
        T(test_registry_full_proposal_table_evicts_the_oldest_unapproved_one),
        T(test_registry_verify_catches_edit_drop_reorder_and_truncation),
        T(test_registry_reads_work_while_writes_are_refused),
        T(test_registry_reopen_keeps_committed_versions_and_drops_a_torn_tail),
        T(test_registry_open_refuses_an_edited_log_and_a_second_writer),
        T(test_registry_failed_write_is_cut_back_and_refuses_later_writes),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
