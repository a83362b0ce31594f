/*
 * supervisor.pml - the supervisor's restart rules (issue 2), as implemented
 * by the restart policy in src/ron-kernel/ron_restart.c, checked by
 * models/check.sh in `make test`.
 *
 * Rules: a crashed child is restarted after an exponential backoff from
 * BASE doubling to CAP, jittered down to no less than 3/4 of the nominal
 * delay; the backoff resets once the child has been healthy for HEALTHY;
 * the Q-th (6th) crash within a sliding WINDOW quarantines the child (no
 * restart); release lets it run again with a clean history.
 *
 * Time is abstract: one tick() is one step. The checked instance scales the
 * constants (ron_kernel.h: 100 ms, 30 s, 10 s, 60 s) down so the search is
 * exhaustive in seconds while every relation between them that decides
 * behaviour is kept:
 *   the first five backoffs fit in the window (1+2+4+4+4 = 15 < 16, as
 *   0.1+0.2+0.4+0.8+1.6 s < 60 s): a crash loop is quarantined;
 *   five healthy-reset periods fit in the window (5*3 = 15 < 16, as
 *   5*10 s < 60 s): a child that crashes every ~10 s is quarantined;
 *   CAP < WINDOW < 5*CAP (30 s < 60 s < 150 s): a child crashing at the
 *   capped backoff is not quarantined; the cap is reached by doubling.
 * Override BASE/CAP/HEALTHY/WINDOW with -D to check other instances.
 *
 * The policy's state mirrors ron_restart_policy_t, with times kept as ages
 * (now - t, saturated where the C code's comparison no longer changes):
 *   crash_age[i] = now - crash_ms[i] (saturates at WINDOW: "outside");
 *   healthy_age  = now - healthy_since_ms (saturates at HEALTHY);
 *   streak saturates at SAT, past which the nominal delay is CAP anyway.
 * on_crash / on_healthy / release below mirror ron_restart_on_crash,
 * ron_restart_on_healthy and ron_restart_release line by line. The
 * supervisor loop (process sup) is what the node's supervisor does with
 * the decisions: arm a timer for the delay, start the child when it fires,
 * keep a quarantined child stopped.
 *
 * Each rule is also written independently as a specification (the spec_*
 * ghosts: every crash age in a plain sliding-window list, the crash count
 * since the last reset) and asserted against the policy's decisions:
 *   A1 quarantine happens exactly at the Q-th crash within WINDOW;
 *   A2 the delay is within [nom - nom/4, nom], nom = min(BASE*2^(k-1), CAP),
 *      k = crashes since the last reset (healthy for HEALTHY, or release);
 *   A3 a quarantined child is never restarted.
 * LTL: quarantine_holds (quarantined stays until released), restarted (a
 * child in backoff is running again later).
 *
 * Deliberately broken variants (must be reported as violating):
 *   -DBROKEN_WINDOW (supervisor_broken.pml): crashes never leave the window.
 *   -DBROKEN_RESET (supervisor_broken_reset.pml): the backoff never resets.
 */

#ifndef BASE
#define BASE 1           /* RON_RESTART_BASE_MS, scaled */
#endif
#ifndef CAP
#define CAP 4            /* RON_RESTART_CAP_MS, scaled */
#endif
#ifndef HEALTHY
#define HEALTHY 3        /* RON_RESTART_HEALTHY_RESET_MS, scaled */
#endif
#ifndef WINDOW
#define WINDOW 16        /* RON_RESTART_WINDOW_MS, scaled */
#endif
#define Q 6              /* RON_RESTART_QUARANTINE_CRASHES */
#define KEEP 5           /* Q - 1: crash times the policy keeps */
#ifndef SAT
#define SAT 3            /* streak bound: BASE * 2^(SAT-1) >= CAP, so larger streaks act alike */
#endif

#define RUNNING 0
#define BACKOFF 1
#define QUARANTINED 2
#define AFTER 1          /* RON_RESTART_AFTER */
#define QUAR 2           /* RON_RESTART_QUARANTINE */

/* ron_restart_policy_t */
byte streak;
bool healthy;
byte healthy_age;
bool quarantined;
byte crash_age[KEEP];
byte crash_n;
byte crash_head;

/* the supervised child, as the supervisor sees it */
byte st = RUNNING;
short wait_left;         /* ticks until the restart timer fires */
byte action;
short delay;
short nominal;

/* specification ghosts */
byte spec_age[Q];        /* ages of crashes within the window, since release */
byte spec_n;
byte spec_k;             /* crashes since the last backoff reset */
bool spec_hb;            /* a healthy report arrived since the last (re)start */
byte spec_hb_age;        /* time since that first report, saturated at HEALTHY */
bool released;           /* the last step was a release */
byte i;

/* ron_restart_on_healthy(p, now) */
inline on_healthy()
{
    if
    :: quarantined -> skip
    :: !quarantined && !healthy -> healthy = true; healthy_age = 0
    :: !quarantined && healthy ->
#ifndef BROKEN_RESET
        if
        :: healthy_age >= HEALTHY -> streak = 0
        :: else -> skip
        fi
#else
        skip
#endif
    fi
}

/* ron_restart_on_crash(p, now, &delay): everything but the jitter draw,
 * which is the nondeterministic choice in jitter() below. */
inline on_crash()
{
    if
    :: quarantined -> action = QUAR
    :: else ->
#ifndef BROKEN_RESET
        if
        :: healthy && healthy_age >= HEALTHY -> streak = 0
        :: else -> skip
        fi;
#endif
        healthy = false;
        /* restart_recent(): crashes with now - t < window */
        i = 0;
        nominal = 0;                 /* used as the count here */
        do
        :: i < crash_n ->
#ifndef BROKEN_WINDOW
            if
            :: crash_age[i] < WINDOW -> nominal++
            :: else -> skip
            fi;
#else
            nominal++;               /* BROKEN: old crashes never expire */
#endif
            i++
        :: else -> break
        od;
        i = 0;
        if
        :: nominal + 1 >= Q -> quarantined = true; action = QUAR; nominal = 0
        :: else ->
            /* restart_remember() */
            crash_age[crash_head] = 0;
            crash_head = (crash_head + 1) % KEEP;
            if
            :: crash_n < KEEP -> crash_n++
            :: else -> skip
            fi;
            if
            :: streak < SAT -> streak++
            :: else -> skip
            fi;
            /* restart_nominal() */
            nominal = BASE;
            i = 1;
            do
            :: i < streak && nominal < CAP -> nominal = nominal * 2; i++
            :: else -> break
            od;
            i = 0;
            if
            :: nominal > CAP -> nominal = CAP
            :: else -> skip
            fi;
            action = AFTER
        fi
    fi
}

/* delay = nominal - rand % (nominal/4 + 1): the two extremes of the draw */
inline jitter()
{
    if
    :: delay = nominal
    :: delay = nominal - nominal / 4
    fi
}

/* ron_restart_release(p) */
inline release()
{
    quarantined = false;
    healthy = false;
    streak = 0;
    crash_n = 0;
    crash_head = 0;
    i = 0;
    do
    :: i < KEEP -> crash_age[i] = 0; i++
    :: else -> break
    od;
    i = 0
}

/* One step of time: every age grows, saturating where comparisons stop changing. */
inline tick()
{
    i = 0;
    do
    :: i < KEEP ->
        if
        :: i < crash_n && crash_age[i] < WINDOW -> crash_age[i]++
        :: else -> skip
        fi;
        i++
    :: else -> break
    od;
    if
    :: healthy && healthy_age < HEALTHY -> healthy_age++
    :: else -> skip
    fi;
    /* spec: ages grow; the oldest crash (first in the list) leaves the
     * window when its age reaches WINDOW */
    i = 0;
    do
    :: i < spec_n -> spec_age[i]++; i++
    :: else -> break
    od;
    if
    :: spec_n > 0 && spec_age[0] >= WINDOW ->
        i = 1;
        do
        :: i < spec_n -> spec_age[i - 1] = spec_age[i]; i++
        :: else -> break
        od;
        spec_n--;
        spec_age[spec_n] = 0
    :: else -> skip
    fi;
    i = 0;
    if
    :: spec_hb && spec_hb_age < HEALTHY -> spec_hb_age++
    :: else -> skip
    fi;
    if
    :: wait_left > 0 -> wait_left--
    :: else -> skip
    fi
}

/* The rules, stated directly, checked against the policy's decision. */
inline spec_crash()
{
    /* A1: quarantine exactly at the Q-th crash within the window */
    assert((action == QUAR) == (spec_n + 1 >= Q));
    if
    :: action == AFTER ->
        /* A2: backoff from the crash count since the last reset */
        if
        :: spec_hb && spec_hb_age >= HEALTHY -> spec_k = 0
        :: else -> skip
        fi;
        if
        :: spec_k < SAT -> spec_k++
        :: else -> skip
        fi;
        assert(nominal == ((BASE << (spec_k - 1)) < CAP -> (BASE << (spec_k - 1)) : CAP));
        assert(delay <= nominal && delay >= nominal - nominal / 4);
        assert(delay >= BASE - BASE / 4 && delay <= CAP);
        spec_age[spec_n] = 0;
        spec_n++
    :: else -> skip
    fi;
    spec_hb = false;
    spec_hb_age = 0
}

active proctype sup()
{
    do
    :: st == RUNNING ->                      /* the child crashes */
        atomic {
            released = false;
            d_step { on_crash() };
            if
            :: action == AFTER -> jitter()
            :: else -> delay = 0
            fi;
            spec_crash();
            if
            :: action == AFTER -> st = BACKOFF; wait_left = delay
            :: else -> st = QUARANTINED
            fi;
            delay = 0; nominal = 0; action = 0
        }
    :: st == RUNNING ->                      /* a healthy heartbeat */
        d_step {
            released = false;
            on_healthy();
            if
            :: !spec_hb -> spec_hb = true; spec_hb_age = 0
            :: else -> skip
            fi;
            if
            :: spec_hb_age >= HEALTHY -> spec_k = 0
            :: else -> skip
            fi
        }
    :: st != BACKOFF || wait_left > 0 ->     /* time passes */
        d_step { released = false; tick() }
    :: st == BACKOFF && wait_left == 0 ->    /* the restart timer fires */
        d_step {
            released = false;
            assert(!quarantined);            /* A3 */
            st = RUNNING
        }
    :: st == QUARANTINED ->                  /* `ron release SERVICE` */
        d_step {
            release();
            spec_n = 0;
            spec_k = 0;
            spec_hb = false;
            spec_hb_age = 0;
            i = 0;
            do
            :: i < Q -> spec_age[i] = 0; i++
            :: else -> break
            od;
            i = 0;
            st = RUNNING;
            released = true
        }
    od
}

ltl quarantine_holds { [] (quarantined -> (quarantined W released)) }
ltl restarted { [] ((st == BACKOFF) -> <> (st == RUNNING)) }
