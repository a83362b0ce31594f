/*
 * guard_fixture.h - the capability setup of the tests that enforce through
 * a real guard (gateway, omnigate, the services over the bus): an authority
 * in RAM (guard_authority_open without a directory) under a master derived
 * from a seed, a guard for one service on the same master brought up to the
 * authority's head page by page (what the kernel's pushes do), and the
 * operator's token. Those tests each had a copy of this.
 *
 * Header only (static functions), like bus_fixture.h; the test links
 * ron-guard. Include it after <cmocka.h>'s prerequisites.
 */
#ifndef RON_TESTS_GUARD_FIXTURE_H
#define RON_TESTS_GUARD_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>

#include "ron_guard.h"

/* Apply the authority's entries to g until it stands at a's head. */
static inline void
guard_fx_sync(guard_t *g, guard_authority_t *a)
{
    guard_entry_t *e = calloc(GUARD_SYNC_PAGE, sizeof *e);
    bool more = true;

    assert_non_null(e);
    for (int round = 0; more && round < 100; round++) {
        uint64_t prev = guard_head(g), head;
        size_t n = guard_authority_since(a, prev, e, GUARD_SYNC_PAGE, &more);
        head = more && n > 0 ? e[n - 1].seq : guard_authority_head(a);
        assert_int_equal(guard_apply(g, prev, head, e, n), 0);
    }
    assert_int_equal(guard_head(g), guard_authority_head(a));
    free(e);
}

/*
 * An authority in RAM (*auth_out) and a guard for service with the policy
 * at policy_file (NULL: the shipped default) following it (*guard_out),
 * both under the master derived from seed (32 bytes; NULL: a random seed),
 * which goes to master_out when not NULL. op_token (cap bytes; NULL: none)
 * gets the operator's token.
 */
static inline void
guard_fx_open(const uint8_t *seed, const char *service, const char *policy_file,
              guard_authority_t **auth_out, guard_t **guard_out, uint8_t *master_out,
              char *op_token, size_t cap)
{
    uint8_t rnd[32], master[GUARD_MASTER_LEN];
    guard_authority_opts_t ao = {0};
    guard_opts_t go = {0};

    assert_true(sodium_init() >= 0);
    if (seed == NULL) {
        randombytes_buf(rnd, sizeof rnd);
        seed = rnd;
    }
    guard_master_derive(seed, master);
    ao.master = master;
    assert_int_equal(guard_authority_open(&ao, (int64_t)time(NULL), auth_out), 0);
    go.service = service;
    go.master = master;
    go.policy_file = policy_file;
    assert_int_equal(guard_new(&go, guard_out), 0);
    guard_fx_sync(*guard_out, *auth_out);
    if (op_token != NULL)
        assert_true(guard_authority_mint_operator(*auth_out, op_token, cap) > 0);
    if (master_out != NULL)
        memcpy(master_out, master, GUARD_MASTER_LEN);
    sodium_memzero(master, sizeof master);
    sodium_memzero(rnd, sizeof rnd);
}

/* Free what guard_fx_open made. */
static inline void
guard_fx_close(guard_authority_t *auth, guard_t *guard)
{
    guard_free(guard);
    guard_authority_close(auth);
}

#endif
