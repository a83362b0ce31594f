/*
 * guard_rate.c - bounded token buckets for the policy's per-source rate and
 * the `rate` caveat's per-token rate. Why bounded with LRU eviction: the
 * keys (client addresses, token ids) are chosen by the outside, so the table
 * must not grow with them; evicting the least recently used bucket forgets
 * the clients that stopped sending first, and a forgotten client starts
 * again with a full bucket, which errs on the side of serving. Chains are
 * keyed with SipHash under a random seed, so a client cannot aim many keys
 * at one chain.
 */
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "guard_internal.h"
#include "ron_err.h"
#include "ron_util.h"

int
guard__rate_init(guard__rate_t *r, size_t slots)
{
    if (slots == 0 || slots > GUARD_RATE_SLOTS)
        return RON_EINVAL;
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    randombytes_buf(r->seed, sizeof r->seed);
    r->slots = slots;
    r->b = ron_xcalloc(slots, sizeof *r->b);
    r->heads = ron_xmalloc(2 * slots * sizeof *r->heads);
    for (size_t i = 0; i < 2 * slots; i++)
        r->heads[i] = -1;
    r->lru_head = r->lru_tail = -1;
    return 0;
}

void
guard__rate_destroy(guard__rate_t *r)
{
    if (r->b == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r->b);
    free(r->heads);
    r->b = NULL;
    r->heads = NULL;
}

static size_t
rate_chain(const guard__rate_t *r, const uint8_t key[static GUARD__RATE_KEY])
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, key, GUARD__RATE_KEY, r->seed);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return (size_t)(v % (2 * r->slots));
}

static void
lru_unlink(guard__rate_t *r, int32_t i)
{
    guard__bucket_t *b = &r->b[i];
    if (b->lru_prev >= 0)
        r->b[b->lru_prev].lru_next = b->lru_next;
    else
        r->lru_head = b->lru_next;
    if (b->lru_next >= 0)
        r->b[b->lru_next].lru_prev = b->lru_prev;
    else
        r->lru_tail = b->lru_prev;
    b->lru_prev = b->lru_next = -1;
}

static void
lru_push_front(guard__rate_t *r, int32_t i)
{
    guard__bucket_t *b = &r->b[i];
    b->lru_prev = -1;
    b->lru_next = r->lru_head;
    if (r->lru_head >= 0)
        r->b[r->lru_head].lru_prev = i;
    r->lru_head = i;
    if (r->lru_tail < 0)
        r->lru_tail = i;
}

static void
chain_remove(guard__rate_t *r, int32_t i)
{
    size_t c = rate_chain(r, r->b[i].key);
    int32_t *p = &r->heads[c];
    while (*p >= 0) {
        if (*p == i) {
            *p = r->b[i].chain;
            return;
        }
        p = &r->b[*p].chain;
    }
}

bool
guard__rate_take(guard__rate_t *r, const uint8_t key[static GUARD__RATE_KEY], uint32_t rate,
                 uint32_t burst, uint64_t now_ns, uint32_t *retry_after_s)
{
    if (rate == 0)
        return true;
    if (burst == 0)
        burst = rate;
    bool ok;
    pthread_mutex_lock(&r->mu);
    size_t c = rate_chain(r, key);
    int32_t i = r->heads[c];
    while (i >= 0 && memcmp(r->b[i].key, key, GUARD__RATE_KEY) != 0)
        i = r->b[i].chain;
    if (i < 0) {
        if (r->n < r->slots) {
            i = (int32_t)r->n++;
        } else {
            i = r->lru_tail; /* evict the least recently used */
            lru_unlink(r, i);
            chain_remove(r, i);
            r->evicted++;
        }
        guard__bucket_t *b = &r->b[i];
        memcpy(b->key, key, GUARD__RATE_KEY);
        b->tokens = burst;
        b->last_ns = now_ns;
        b->used = true;
        b->chain = r->heads[c];
        r->heads[c] = i;
        lru_push_front(r, i);
    } else {
        lru_unlink(r, i);
        lru_push_front(r, i);
    }
    guard__bucket_t *b = &r->b[i];
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) * 1e-9 * rate;
        b->last_ns = now_ns;
    }
    if (b->tokens > burst)
        b->tokens = burst;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        ok = true;
    } else {
        ok = false;
        double wait = ceil((1.0 - b->tokens) / rate);
        if (retry_after_s != NULL)
            *retry_after_s = wait < 1.0 ? 1u : (uint32_t)wait;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}
