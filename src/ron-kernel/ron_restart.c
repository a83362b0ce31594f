/*
 * ron_restart.c - the supervisor's restart policy as a sans-I/O core:
 * exponential backoff with jitter, backoff reset after healthy running, and
 * quarantine at the N-th crash within a sliding window (rules in
 * ron_kernel.h; models/supervisor.pml mirrors each function below).
 * Pure: time comes in as now_ms, randomness from a seeded xorshift64.
 * Invariants: delay_ms is in [nominal - nominal/4, nominal] and nominal is in
 * [base_ms, cap_ms]; crash_ms holds at most quarantine_crashes - 1 of the
 * latest crash times, which is all the sliding-window rule needs.
 */
#include <string.h>

#include "ron_err.h"
#include "ron_kernel.h"
#include "ron_util.h"

int
ron_restart_init(ron_restart_policy_t *p, const ron_restart_config_t *cfg, uint64_t seed)
{
    ron_restart_config_t c = {0};

    if (cfg != NULL)
        c = *cfg;
    if (c.base_ms == 0)
        c.base_ms = RON_RESTART_BASE_MS;
    if (c.cap_ms == 0)
        c.cap_ms = RON_RESTART_CAP_MS;
    if (c.healthy_reset_ms == 0)
        c.healthy_reset_ms = RON_RESTART_HEALTHY_RESET_MS;
    if (c.window_ms == 0)
        c.window_ms = RON_RESTART_WINDOW_MS;
    if (c.quarantine_crashes == 0)
        c.quarantine_crashes = RON_RESTART_QUARANTINE_CRASHES;
    if (c.cap_ms < c.base_ms || c.quarantine_crashes > RON_RESTART_MAX_QUARANTINE)
        return RON_EINVAL;
    memset(p, 0, sizeof *p);
    p->cfg = c;
    while (seed == 0)
        (void)ron_random_bytes(&seed, sizeof seed);
    p->rng = seed;
    return 0;
}

static uint64_t
restart_rand(ron_restart_policy_t *p)
{
    uint64_t x = p->rng; /* xorshift64*: never 0 once seeded non-zero */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Nominal delay of the n-th crash of a streak (n >= 1): base * 2^(n-1), capped. */
static uint64_t
restart_nominal(const ron_restart_config_t *c, uint32_t n)
{
    uint64_t d = c->base_ms;
    for (uint32_t i = 1; i < n && d < c->cap_ms; i++)
        d *= 2;
    return d < c->cap_ms ? d : c->cap_ms;
}

/* Crashes in crash_ms within (now - window, now]. */
static uint32_t
restart_recent(const ron_restart_policy_t *p, uint64_t now_ms)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->crash_n; i++) {
        uint64_t t = p->crash_ms[i];
        /* t > now only if the caller's clock went back: count it as recent. */
        if (t > now_ms || now_ms - t < p->cfg.window_ms)
            n++;
    }
    return n;
}

static void
restart_remember(ron_restart_policy_t *p, uint64_t now_ms)
{
    uint32_t keep = p->cfg.quarantine_crashes - 1; /* the crash that decides is not kept */
    if (keep == 0)
        return;
    p->crash_ms[p->crash_head] = now_ms;
    p->crash_head = (p->crash_head + 1) % keep;
    if (p->crash_n < keep)
        p->crash_n++;
}

/* Mirrored by step on_healthy in models/supervisor.pml. */
void
ron_restart_on_healthy(ron_restart_policy_t *p, uint64_t now_ms)
{
    if (p->quarantined)
        return;
    if (!p->healthy) {
        p->healthy = true;
        p->healthy_since_ms = now_ms;
        return;
    }
    if (now_ms >= p->healthy_since_ms && now_ms - p->healthy_since_ms >= p->cfg.healthy_reset_ms)
        p->streak = 0;
}

/* Mirrored by step on_crash in models/supervisor.pml. */
ron_restart_action_t
ron_restart_on_crash(ron_restart_policy_t *p, uint64_t now_ms, uint64_t *delay_ms_out)
{
    *delay_ms_out = 0;
    if (p->quarantined)
        return RON_RESTART_QUARANTINE;
    /* A crash after a long healthy run resets the backoff even when no
     * heartbeat arrived past the threshold (heartbeats are periodic). */
    if (p->healthy && now_ms >= p->healthy_since_ms &&
        now_ms - p->healthy_since_ms >= p->cfg.healthy_reset_ms)
        p->streak = 0;
    p->healthy = false;

    if (restart_recent(p, now_ms) + 1 >= p->cfg.quarantine_crashes) {
        p->quarantined = true;
        return RON_RESTART_QUARANTINE;
    }
    restart_remember(p, now_ms);
    if (p->streak < UINT32_MAX)
        p->streak++;
    uint64_t nominal = restart_nominal(&p->cfg, p->streak);
    *delay_ms_out = nominal - restart_rand(p) % (nominal / 4 + 1);
    return RON_RESTART_AFTER;
}

/* Mirrored by step release in models/supervisor.pml. */
void
ron_restart_release(ron_restart_policy_t *p)
{
    p->quarantined = false;
    p->healthy = false;
    p->streak = 0;
    p->crash_n = 0;
    p->crash_head = 0;
}

bool
ron_restart_is_quarantined(const ron_restart_policy_t *p)
{
    return p->quarantined;
}

uint32_t
ron_restart_streak(const ron_restart_policy_t *p)
{
    return p->streak;
}
