/*
 * pol_store.c - the holder that hot-reloads policies: a mutex-protected
 * pointer to the current policy plus the previous one for rollback.
 * Readers take their own reference under the mutex and evaluate without it,
 * so a reload never waits for evaluations and never frees a policy a reader
 * still holds (the last pol_policy_unref does). A bundle that does not
 * compile is refused before the lock is taken; the current policy stays.
 */
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

#include "pol_internal.h"
#include "ron_err.h"
#include "ron_util.h"

struct pol_store {
    pthread_mutex_t mu;
    pol_policy_t *cur;   /* never NULL; guarded by mu */
    pol_policy_t *prev;  /* NULL when there is nothing to roll back to; guarded by mu */
    uint64_t generation; /* guarded by mu */
};

pol_store_t *
pol_store_new(pol_policy_t *initial)
{
    pol_store_t *s;

    assert(initial != NULL);
    s = ron_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->cur = initial;
    return s;
}

void
pol_store_free(pol_store_t *s)
{
    if (s == NULL)
        return;
    pol_policy_unref(s->cur);
    pol_policy_unref(s->prev);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

pol_policy_t *
pol_store_acquire(pol_store_t *s)
{
    pol_policy_t *p;

    pthread_mutex_lock(&s->mu);
    p = pol_policy_ref(s->cur);
    pthread_mutex_unlock(&s->mu);
    return p;
}

void
pol_store_swap(pol_store_t *s, pol_policy_t *p)
{
    pol_policy_t *drop;

    pthread_mutex_lock(&s->mu);
    drop = s->prev;
    s->prev = s->cur;
    s->cur = p;
    s->generation++;
    pthread_mutex_unlock(&s->mu);
    pol_policy_unref(drop); /* outside the lock: freeing a big policy takes a while */
}

int
pol_store_load(pol_store_t *s, const char *json, size_t len, pol_err_t *err)
{
    pol_err_t local;
    pol_policy_t *p = pol_compile(json, len, err != NULL ? err : &local);

    if (p == NULL)
        return err != NULL ? err->code : local.code;
    pol_store_swap(s, p);
    return 0;
}

int
pol_store_rollback(pol_store_t *s)
{
    pol_policy_t *drop = NULL;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (s->prev == NULL) {
        rc = RON_EPOLNOPREV;
    } else {
        drop = s->cur;
        s->cur = s->prev;
        s->prev = NULL;
        s->generation++;
    }
    pthread_mutex_unlock(&s->mu);
    pol_policy_unref(drop);
    return rc;
}

uint64_t
pol_store_generation(pol_store_t *s)
{
    uint64_t g;

    pthread_mutex_lock(&s->mu);
    g = s->generation;
    pthread_mutex_unlock(&s->mu);
    return g;
}
