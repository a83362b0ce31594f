/*
 * bus_overflow.pml - the overflow rule of the kernel event bus
 * (src/ron-kernel/ron_bus.c), checked by models/check.sh in `make test`.
 *
 * What is modelled, step for step with the C code:
 *   publish()  = ron_bus_publish: fetch_add on head, CAS of the slot's seq
 *                from an older even value to 2p+1, the event store, the
 *                store of 2p+2. A publisher that finds a later lap in the
 *                slot drops its event; one that finds an earlier lap's
 *                writer mid-copy waits for that writer (another publisher).
 *   recv()     = ron_bus_recv: load seq, copy, reload seq; lapped -> skip
 *                to head - CAP (bus_skip) and count the skipped positions;
 *                after the copy, report (bus_report_overflow): read the
 *                clock, read report_next, CAS it to now + INTERVAL, publish
 *                one SERVICE_CRASHED through publish().
 * Processes: the kernel publishes NPUB events; subscriber 0 keeps reading;
 * subscriber 1 may read or get stuck for good at any moment; a clock ticks.
 * Subscribers publish overflow reports, so the ring is multi-producer.
 * The event payload is its position + 1, so a torn or misplaced copy shows.
 *
 * Properties:
 *   - assertions: a delivered event is exactly the one published at the
 *     reader's position (no torn read); every position a subscriber moved
 *     past is delivered or counted (delivered + dropped == cursor), the bus
 *     total equals the sum; after a skip the reader is at most CAP behind
 *     (bounded); two overflow reports are at least INTERVAL apart (at most
 *     one per interval); no deadlock (the publisher always finishes, even
 *     with a stuck subscriber: an invalid end state would be reported).
 *   - LTL publisher_finishes: <> pub_done, under weak fairness: publishing
 *     never waits for a subscriber.
 *
 * Deliberately broken variants (must be reported as violating):
 *   -DBROKEN_THROTTLE (bus_overflow_broken.pml): the report check and the
 *     update of report_next are two steps instead of one CAS.
 *   -DBROKEN_BLOCK (bus_overflow_broken_block.pml): the publisher waits for
 *     room in the slowest subscriber (back-pressure) instead of lapping it.
 */

#ifndef CAP
#define CAP 2            /* ring slots */
#endif
#define NPUB 3           /* events the kernel publishes */
#define NSUB 2
#define MAXT 1           /* clock ticks explored */
#define INTERVAL 1       /* throttle interval, in ticks */
#define NONE 255

byte head;               /* ron_bus.head: positions claimed = events published */
byte seq[CAP];           /* 0 never written, 2p+1 writing p, 2p+2 holds p */
byte data[CAP];          /* the event: its position + 1 */
byte now;                /* throttle clock (bus->now_ms) */
byte report_next;        /* ron_bus.report_next_ms */
byte dropped_total;      /* bus_overflow_dropped_total */
byte reports;            /* overflow reports published */
bool pub_done;           /* the kernel's publisher finished */
byte inflight;           /* ghost: publishes between claim and completion */
byte cursor[NSUB];       /* ron_bus_sub.cursor */
byte delivered[NSUB];
byte dropped[NSUB];
bool stuck[NSUB];        /* ghost: the subscriber stopped reading for good */
byte last_report = NONE; /* ghost: clock value of the last report */

/* ron_bus_publish(). pos, s, claimed are the caller's locals. */
inline publish(pos, s, claimed)
{
    atomic { pos = head; head++; inflight++ }
#ifdef BROKEN_BLOCK
    /* BROKEN: wait until every subscriber has room (back-pressure). */
    (cursor[0] + CAP > pos && cursor[1] + CAP > pos);
#endif
    s = seq[pos % CAP];
    claimed = false;
    do
    :: s >= 2 * pos + 1 -> break   /* a later lap owns the slot: pos is lost to all */
    :: s < 2 * pos + 1 && s % 2 == 1 ->
        s = seq[pos % CAP]         /* an earlier lap's publisher is mid-copy */
    :: s < 2 * pos + 1 && s % 2 == 0 ->
        atomic {                   /* compare_exchange */
            if
            :: seq[pos % CAP] == s -> seq[pos % CAP] = 2 * pos + 1; claimed = true
            :: else -> s = seq[pos % CAP]
            fi
        }
        if
        :: claimed -> break
        :: else -> skip
        fi
    od;
    if
    :: claimed ->
        data[pos % CAP] = pos + 1;
        seq[pos % CAP] = 2 * pos + 2
    :: else -> skip
    fi;
    inflight--;
    pos = 0; s = 0; claimed = false
}

/* Ghost bookkeeping, done in the same atomic step as the winning update:
 * at most one report per interval. */
inline ghost_report(t)
{
    assert(last_report == NONE || t >= last_report + INTERVAL);
    last_report = t;
    reports++
}

/* bus_report_overflow(). t, nxt, won are the caller's locals. */
inline report(t, nxt, won, pos, s, claimed)
{
    t = now;
    nxt = report_next;
    won = false;
#ifdef BROKEN_THROTTLE
    /* BROKEN: check, then set, in two steps. */
    if
    :: t >= nxt -> report_next = t + INTERVAL; won = true; ghost_report(t)
    :: else -> skip
    fi;
#else
    if
    :: t >= nxt ->
        atomic {                   /* compare_exchange(report_next, nxt, t + INTERVAL) */
            if
            :: report_next == nxt -> report_next = t + INTERVAL; won = true; ghost_report(t)
            :: else -> skip
            fi
        }
    :: else -> skip
    fi;
#endif
    if
    :: won -> publish(pos, s, claimed)
    :: else -> skip
    fi;
    t = 0; nxt = 0; won = false
}

proctype kernel()
{
    byte n, pos, s;
    bool claimed;
    do
    :: n < NPUB -> publish(pos, s, claimed); n++
    :: n == NPUB -> break
    od;
    pub_done = true
}

proctype subscriber(byte i)
{
    byte c, s1, s2, v, h, newc, tries, t, nxt, pos, s;
    bool skipped, won, claimed;
    do
    :: i == 1 -> stuck[i] = true; break          /* stops reading for good */
    :: atomic { pub_done && inflight == 0 && cursor[i] == head ->
            assert(delivered[i] + dropped[i] == head) }  /* caught up: all seen or counted */
        break
    :: cursor[i] != head ->                      /* one ron_bus_recv() (polls that find
                                                  * nothing claimed change nothing) */
        skipped = false;
        tries = 0;
        do
        :: tries < 2 ->
            c = cursor[i];
            s1 = seq[c % CAP];
            if
            :: s1 < 2 * c + 2 -> break           /* nothing new: RON_EAGAIN */
            :: s1 == 2 * c + 2 ->
                v = data[c % CAP];
                s2 = seq[c % CAP];
                if
                :: s2 == s1 ->
                    d_step {
                        assert(v == c + 1);      /* the event of position c, whole */
                        cursor[i] = c + 1;
                        delivered[i]++;
                        c = 0; s1 = 0; s2 = 0; v = 0
                    }
                    break
                :: else -> skip                  /* overwritten during the copy */
                fi
            :: s1 > 2 * c + 2 -> skip            /* lapped */
            fi;
            /* bus_skip(): one read of head, then local arithmetic */
            h = head;
            d_step {
                newc = (h > CAP -> h - CAP : 0);
                if
                :: newc <= c -> newc = c + 1
                :: else -> skip
                fi;
                assert(h <= newc + CAP);         /* bounded: at most CAP behind */
                dropped[i] = dropped[i] + newc - c;
                dropped_total = dropped_total + newc - c;
                cursor[i] = newc;
                newc = 0; h = 0; s1 = 0; s2 = 0; v = 0
            }
            skipped = true;
            tries++
        :: else -> break
        od;
        assert(delivered[i] + dropped[i] == cursor[i]);  /* every loss counted */
        if
        :: skipped -> report(t, nxt, won, pos, s, claimed)
        :: else -> skip
        fi;
        c = 0; s1 = 0; s2 = 0; v = 0; h = 0; newc = 0; tries = 0; skipped = false
    od
}

proctype clock()
{
    do
    :: now < MAXT -> now++
    :: break
    od
}

init
{
    atomic {
        run kernel();
        run subscriber(0);
        run subscriber(1);
        run clock()
    }
    (_nr_pr == 1);                               /* everyone finished */
    assert(dropped_total == dropped[0] + dropped[1])
}

ltl publisher_finishes { <> pub_done }
