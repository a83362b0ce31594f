/*
 * test_svc_registry_crash.c - a child process commits registry versions to
 * a file log as fast as it can, telling the parent each version it got back
 * from reg_commit (acknowledged = written and fdatasync'd); the parent kills
 * it with SIGKILL at a random moment, mid-commit more often than not. Checked
 * after every kill: the file's durable prefix verifies from genesis, holds
 * every acknowledged version, and reopening the registry (which drops a torn
 * last line) gives that prefix's head; the next child continues the chain.
 */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "svc_registry.h"
#include "ron_err.h"
#include "ron_util.h"

#define KILLS 6
#define MAX_ACKS_BEFORE_KILL 8

static int
rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void
keys(uint8_t pk[3][REG_KEY_LEN], uint8_t sk[3][REG_SK_LEN])
{
    for (int i = 0; i < 3; i++) {
        uint8_t seed[32];
        memset(seed, 0x40 + i, sizeof seed);
        crypto_sign_seed_keypair(pk[i], sk[i], seed);
    }
}

/* The child: commit versions forever, writing each acknowledged version to
 * fd. Exits only by the parent's SIGKILL (or 3 on an error). */
static void
child_run(const char *path, int fd)
{
    uint8_t pk[3][REG_KEY_LEN], sk[3][REG_SK_LEN], id[REG_HASH_LEN], sig[REG_SIG_LEN];
    reg_opts_t o = {.path = path};
    reg_desc_t *d = calloc(1, sizeof *d);
    reg_t *reg;
    reg_err_t err;
    uint64_t v;

    keys(pk, sk);
    if (reg_open(&o, &reg, &err) < 0)
        _exit(3);
    for (;;) {
        memset(d, 0, sizeof *d);
        reg_head(reg, &v, d->prev, NULL);
        d->version = v + 1;
        memset(d->policy, (int)(v & 0xff), sizeof d->policy);
        d->n_peers = 1;
        snprintf(d->peers[0], sizeof d->peers[0], "node-%llu.example:5302", (unsigned long long)v);
        d->threshold = 2;
        d->n_signers = 3;
        memcpy(d->signers, pk, sizeof pk);
        if (reg_propose(reg, d, id, &err) < 0)
            _exit(3);
        for (int i = 0; i < 2; i++)
            if (reg_approval_sign(id, sk[i], sig) < 0 ||
                reg_approve(reg, id, pk[i], sig, NULL, NULL) < 0)
                _exit(3);
        if (reg_commit(reg, id, &v, NULL) < 0)
            _exit(3);
        if (write(fd, &v, sizeof v) != (ssize_t)sizeof v)
            _exit(3);
    }
}

static void
test_registry_kill_9_while_committing_leaves_a_durable_prefix_that_verifies(void **state)
{
    char dir[] = "/tmp/ron-regcrash-XXXXXX", path[96];
    uint64_t acked = 0;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/registry.log", dir);
    for (int round = 0; round < KILLS; round++) {
        int p[2], status;
        uint64_t v, stop_after = 1 + ron_rand_below(MAX_ACKS_BEFORE_KILL), got = 0;
        pid_t pid;
        reg_report_t rep;
        reg_opts_t o = {.path = path};
        reg_t *reg;
        reg_err_t err;
        struct stat st;
        char *buf;
        FILE *f;

        assert_int_equal(pipe(p), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child_run(path, p[1]);
        }
        close(p[1]);
        /* bounded: the child acks within seconds or the read fails */
        while (got < stop_after && read(p[0], &v, sizeof v) == (ssize_t)sizeof v) {
            assert_int_equal(v, acked + 1);
            acked = v;
            got++;
        }
        assert_int_equal(got, stop_after);
        if (ron_rand_below(2) == 0) { /* sometimes wait into the next commit's write */
            struct timespec ts = {0, (long)ron_rand_below(2000000)};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        /* acks written before the kill but not read yet are acknowledged too */
        while (read(p[0], &v, sizeof v) == (ssize_t)sizeof v)
            acked = v;
        close(p[0]);

        assert_int_equal(stat(path, &st), 0);
        buf = malloc((size_t)st.st_size + 1);
        f = fopen(path, "rb");
        assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
        fclose(f);
        if (reg_verify_buf(buf, (size_t)st.st_size, 0, NULL, &rep) < 0)
            assert_true(rep.torn); /* only a cut last line, never a bad one */
        assert_true(rep.versions >= acked);
        assert_true(rep.versions <= acked + 1); /* at most the commit in flight */
        free(buf);
        assert_int_equal(reg_open(&o, &reg, &err), 0);
        reg_head(reg, &v, NULL, NULL);
        assert_int_equal(v, rep.versions);
        reg_free(reg);
        acked = v;
    }
    assert_true(acked >= KILLS);
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_registry_kill_9_while_committing_leaves_a_durable_prefix_that_verifies),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
