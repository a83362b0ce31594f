/*
 * test_ron_kernel.c - ron-kernel: kernel events and their JSON form, the
 * event bus (capacity, overflow accounting, throttled overflow reports,
 * wake-ups, multi-thread stress) and the restart policy with fake time.
 * Run with no argument for the single-threaded groups, with "threads" for
 * the multi-threaded group (the CTest entry labelled `threads`, run by
 * `make tsan`). Every loop is bounded in count and in time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <uv.h>

#include "ron_err.h"
#include "ron_kernel.h"
#include "ron_util.h"

/* ---------------------------------------------------------------- events */

static void
round_trip(const ron_kernel_event_t *ev, const char *want_json)
{
    char buf[RON_KERNEL_EVENT_JSON_MAX];
    ron_kernel_event_t back;
    int n = ron_kernel_event_encode(ev, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    if (want_json != NULL)
        assert_string_equal(buf, want_json);
    assert_int_equal(ron_kernel_event_decode(buf, (size_t)n, &back), 0);
    assert_true(ron_kernel_event_equal(ev, &back));
    assert_memory_equal(ev, &back, sizeof back); /* setters zero unused bytes; so does decode */
}

static void
test_event_every_kind_round_trips_through_json(void **state)
{
    (void)state;
    ron_kernel_event_t ev;
    ron_kernel_event_health(&ev, "svc-storage", true);
    round_trip(&ev, "{\"kind\":\"HEALTH\",\"service\":\"svc-storage\",\"ok\":true}");
    ron_kernel_event_health(&ev, "svc-dht", false);
    round_trip(&ev, "{\"kind\":\"HEALTH\",\"service\":\"svc-dht\",\"ok\":false}");
    ron_kernel_event_config_updated(&ev, UINT64_MAX);
    round_trip(&ev, "{\"kind\":\"CONFIG_UPDATED\",\"version\":\"18446744073709551615\"}");
    ron_kernel_event_config_updated(&ev, 0);
    round_trip(&ev, "{\"kind\":\"CONFIG_UPDATED\",\"version\":\"0\"}");
    ron_kernel_event_service_crashed(&ev, "svc-mailbox", "signal 9 (Killed) \"quoted\"\n");
    round_trip(&ev, "{\"kind\":\"SERVICE_CRASHED\",\"service\":\"svc-mailbox\","
                    "\"reason\":\"signal 9 (Killed) \\\"quoted\\\"\\n\"}");
    ron_kernel_event_service_crashed(&ev, "svc-\xc3\xa9t\xc3\xa9", "exit 1 \xe2\x82\xac");
    round_trip(&ev, NULL);
    ron_kernel_event_shutdown(&ev);
    round_trip(&ev, "{\"kind\":\"SHUTDOWN\"}");
}

static void
test_event_setters_truncate_long_strings_on_utf8_boundary(void **state)
{
    (void)state;
    char longname[200];
    ron_kernel_event_t ev;

    memset(longname, 'a', sizeof longname);
    longname[sizeof longname - 1] = 0;
    ron_kernel_event_health(&ev, longname, true);
    assert_int_equal(strlen(ev.service), RON_KERNEL_SERVICE_MAX - 1);

    /* 38 ASCII bytes then a 2-byte character: 38 + 2 = 40 does not fit with its NUL. */
    memset(longname, 'b', 38);
    memcpy(longname + 38, "\xc3\xa9", 3);
    ron_kernel_event_health(&ev, longname, true);
    assert_int_equal(strlen(ev.service), 38);
    round_trip(&ev, NULL);

    /* 37 + 2 = 39 fits exactly. */
    memcpy(longname + 37, "\xc3\xa9", 3);
    ron_kernel_event_health(&ev, longname, true);
    assert_int_equal(strlen(ev.service), 39);

    /* A 4-byte character straddling the reason limit is dropped whole. */
    char reason[RON_KERNEL_REASON_MAX + 8];
    memset(reason, 'r', RON_KERNEL_REASON_MAX - 3);
    memcpy(reason + RON_KERNEL_REASON_MAX - 3, "\xf0\x9f\x98\x80", 5);
    ron_kernel_event_service_crashed(&ev, "x", reason);
    assert_int_equal(strlen(ev.reason), RON_KERNEL_REASON_MAX - 3);
    round_trip(&ev, NULL);

    ron_kernel_event_service_crashed(&ev, NULL, NULL);
    assert_string_equal(ev.service, "");
    assert_string_equal(ev.reason, "");
}

static void
test_event_setters_replace_invalid_utf8_so_encoding_never_fails(void **state)
{
    (void)state;
    ron_kernel_event_t ev;
    /* lone continuation, overlong '/', surrogate, truncated sequence, 0xff */
    ron_kernel_event_service_crashed(&ev,
                                     "a\x80"
                                     "b\xc0\xaf"
                                     "c",
                                     "\xed\xa0\x80"
                                     "d\xe2\x82"
                                     "e\xff");
    assert_string_equal(ev.service, "a?b??c");
    assert_string_equal(ev.reason, "???d??e?");
    round_trip(&ev, NULL);
}

static void
test_event_encode_rejects_small_buffer_and_unknown_kind(void **state)
{
    (void)state;
    ron_kernel_event_t ev;
    char buf[16];
    ron_kernel_event_health(&ev, "svc-storage", true);
    assert_int_equal(ron_kernel_event_encode(&ev, buf, sizeof buf), RON_ETOOBIG);
    ev.kind = 99;
    assert_int_equal(ron_kernel_event_encode(&ev, buf, sizeof buf), RON_EINVAL);
    /* an event filled by hand with an unterminated string is refused, not over-read */
    char big[RON_KERNEL_EVENT_JSON_MAX];
    ron_kernel_event_health(&ev, "x", true);
    memset(ev.service, 'x', sizeof ev.service);
    assert_int_equal(ron_kernel_event_encode(&ev, big, sizeof big), RON_EINVAL);
}

static int
decode_str(const char *json)
{
    ron_kernel_event_t ev;
    int rc = ron_kernel_event_decode(json, strlen(json), &ev);
    if (rc < 0)
        assert_int_equal(ev.kind, 0); /* nothing half-decoded leaks out */
    return rc;
}

static void
test_event_decode_is_strict(void **state)
{
    (void)state;
    /* accepted: key order does not matter */
    assert_int_equal(decode_str("{\"ok\":true,\"service\":\"s\",\"kind\":\"HEALTH\"}"), 0);
    /* unknown, missing, duplicate keys */
    assert_int_equal(decode_str("{\"kind\":\"SHUTDOWN\",\"x\":1}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"HEALTH\",\"service\":\"s\",\"ok\":true,\"x\":1}"),
                     RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"HEALTH\",\"service\":\"s\"}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"HEALTH\",\"service\":\"s\",\"ok\":true,\"ok\":false}"),
                     RON_EPROTO);
    assert_int_equal(decode_str("{\"service\":\"s\",\"ok\":true}"), RON_EPROTO);
    /* fields of another kind */
    assert_int_equal(decode_str("{\"kind\":\"SHUTDOWN\",\"version\":\"1\"}"), RON_EPROTO);
    /* wrong types */
    assert_int_equal(decode_str("{\"kind\":\"HEALTH\",\"service\":\"s\",\"ok\":1}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"HEALTH\",\"service\":7,\"ok\":true}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":1}"), RON_EPROTO);
    assert_int_equal(decode_str("[\"HEALTH\"]"), RON_EPROTO);
    /* u64 only as canonical decimal text */
    assert_int_equal(decode_str("{\"kind\":\"CONFIG_UPDATED\",\"version\":5}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"CONFIG_UPDATED\",\"version\":\"05\"}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"CONFIG_UPDATED\",\"version\":\"-1\"}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"CONFIG_UPDATED\",\"version\":\"\"}"), RON_EPROTO);
    assert_int_equal(
        decode_str("{\"kind\":\"CONFIG_UPDATED\",\"version\":\"18446744073709551616\"}"),
        RON_EPROTO);
    /* unknown kind; an escaped NUL anywhere is refused by the parser itself */
    assert_int_equal(decode_str("{\"kind\":\"REBOOT\"}"), RON_EPROTO);
    assert_int_equal(decode_str("{\"kind\":\"SHUTDOWN\\u0000x\"}"), RON_EJSON);
    /* strings that do not fit whole, or carry NUL */
    char json[512];
    snprintf(json, sizeof json, "{\"kind\":\"HEALTH\",\"service\":\"%040d\",\"ok\":true}", 0);
    assert_int_equal(decode_str(json), RON_EPROTO);
    snprintf(json, sizeof json, "{\"kind\":\"HEALTH\",\"service\":\"%039d\",\"ok\":true}", 0);
    assert_int_equal(decode_str(json), 0);
    assert_int_equal(decode_str("{\"kind\":\"SERVICE_CRASHED\",\"service\":\"a\\u0000b\","
                                "\"reason\":\"r\"}"),
                     RON_EJSON);
    /* not JSON, trailing garbage, oversized input */
    assert_int_equal(decode_str("{\"kind\":"), RON_EJSON);
    assert_int_equal(decode_str("{\"kind\":\"SHUTDOWN\"} x"), RON_EJSON);
    char *huge = calloc(1, RON_KERNEL_EVENT_JSON_MAX + 2);
    memset(huge, ' ', RON_KERNEL_EVENT_JSON_MAX + 1);
    assert_int_equal(decode_str(huge), RON_ETOOBIG);
    free(huge);
}

/* ------------------------------------------------------------------- bus */

typedef struct {
    uint64_t now;
} fake_clock_t;

static uint64_t
fake_now(void *arg)
{
    return ((fake_clock_t *)arg)->now;
}

static ron_bus_t *
bus_make(uint32_t capacity, fake_clock_t *clk, uint32_t throttle_ms)
{
    ron_bus_opts_t o = {.capacity = capacity, .throttle_ms = throttle_ms};
    ron_bus_t *bus = NULL;
    if (clk != NULL) {
        o.now_ms = fake_now;
        o.now_arg = clk;
    }
    assert_int_equal(ron_bus_new(&o, &bus), 0);
    return bus;
}

static void
publish_version(ron_bus_t *bus, uint64_t v)
{
    ron_kernel_event_t ev;
    ron_kernel_event_config_updated(&ev, v);
    assert_int_equal(ron_bus_publish(bus, &ev), 0);
}

static void
test_bus_rejects_capacity_that_is_not_a_power_of_two_in_range(void **state)
{
    (void)state;
    ron_bus_t *bus = (ron_bus_t *)1;
    ron_bus_opts_t o = {.capacity = 1000};
    assert_int_equal(ron_bus_new(&o, &bus), RON_EINVAL);
    assert_null(bus);
    o.capacity = 1;
    assert_int_equal(ron_bus_new(&o, &bus), RON_EINVAL);
    o.capacity = RON_BUS_MAX_CAPACITY * 2;
    assert_int_equal(ron_bus_new(&o, &bus), RON_EINVAL);
    assert_int_equal(ron_bus_new(NULL, &bus), 0);
    assert_int_equal(ron_bus_capacity(bus), RON_BUS_DEFAULT_CAPACITY);
    ron_bus_free(bus);
    ron_bus_free(NULL);
}

static void
test_bus_delivers_every_kind_in_order_to_every_subscriber(void **state)
{
    (void)state;
    ron_bus_t *bus = bus_make(8, NULL, 0);
    ron_bus_sub_t *a, *b;
    ron_kernel_event_t evs[4], got;

    assert_int_equal(ron_bus_subscribe(bus, NULL, &a), 0);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &b), 0);
    assert_int_equal(ron_bus_recv(a, &got), RON_EAGAIN);
    ron_kernel_event_health(&evs[0], "svc-storage", true);
    ron_kernel_event_config_updated(&evs[1], 42);
    ron_kernel_event_service_crashed(&evs[2], "svc-dht", "signal 9");
    ron_kernel_event_shutdown(&evs[3]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ron_bus_publish(bus, &evs[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ron_bus_recv(a, &got), 0);
        assert_true(ron_kernel_event_equal(&got, &evs[i]));
        assert_int_equal(ron_bus_recv(b, &got), 0);
        assert_memory_equal(&got, &evs[i], sizeof got);
    }
    assert_int_equal(ron_bus_recv(a, &got), RON_EAGAIN);
    assert_int_equal(ron_bus_recv(b, &got), RON_EAGAIN);

    ron_kernel_event_t bad = evs[0];
    bad.kind = 0;
    assert_int_equal(ron_bus_publish(bus, &bad), RON_EINVAL);

    ron_bus_stats_t st;
    ron_bus_stats(bus, &st);
    assert_int_equal(st.published, 4);
    assert_int_equal(st.delivered, 8);
    assert_int_equal(st.overflow_dropped, 0);
    ron_bus_unsubscribe(a);
    ron_bus_unsubscribe(b);
    ron_bus_stats(bus, &st);
    assert_int_equal(st.delivered, 8); /* folded into the totals */
    ron_bus_free(bus);
}

static void
test_bus_delivers_only_the_fields_of_the_event_kind(void **state)
{
    (void)state;
    ron_bus_t *bus = bus_make(8, NULL, 0);
    ron_bus_sub_t *s;
    ron_kernel_event_t ev, got;

    assert_int_equal(ron_bus_subscribe(bus, NULL, &s), 0);
    /* filled by hand, with bytes in fields HEALTH does not use */
    memset(&ev, 0x41, sizeof ev);
    ev.kind = RON_EV_HEALTH;
    ev.ok = 1;
    ev.version = 77;
    ev.service[RON_KERNEL_SERVICE_MAX - 1] = 0;
    assert_int_equal(ron_bus_publish(bus, &ev), 0);
    memset(&got, 0x5a, sizeof got);
    assert_int_equal(ron_bus_recv(s, &got), 0);
    assert_int_equal(got.kind, RON_EV_HEALTH);
    assert_string_equal(got.service, ev.service);
    assert_int_equal(got.version, 77); /* the header travels whole */
    for (size_t i = 0; i < sizeof got.reason; i++)
        assert_int_equal(got.reason[i], 0);
    ron_bus_unsubscribe(s);
    ron_bus_free(bus);
}

static void
test_bus_subscriber_sees_only_events_published_after_it_joined(void **state)
{
    (void)state;
    ron_bus_t *bus = bus_make(8, NULL, 0);
    ron_bus_sub_t *s;
    ron_kernel_event_t got;
    publish_version(bus, 1);
    publish_version(bus, 2);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &s), 0);
    publish_version(bus, 3);
    assert_int_equal(ron_bus_recv(s, &got), 0);
    assert_int_equal(got.version, 3);
    assert_int_equal(ron_bus_recv(s, &got), RON_EAGAIN);
    assert_int_equal(ron_bus_sub_dropped(s), 0);
    ron_bus_unsubscribe(s);
    ron_bus_free(bus);
}

static void
test_bus_holds_exactly_capacity_events_for_a_laggard(void **state)
{
    (void)state;
    fake_clock_t clk = {0};
    ron_bus_t *bus = bus_make(16, &clk, 1000);
    ron_bus_sub_t *s;
    ron_kernel_event_t got;

    assert_int_equal(ron_bus_subscribe(bus, NULL, &s), 0);
    for (uint64_t v = 0; v < 16; v++)
        publish_version(bus, v);
    for (uint64_t v = 0; v < 16; v++) {
        assert_int_equal(ron_bus_recv(s, &got), 0);
        assert_int_equal(got.version, v);
    }
    assert_int_equal(ron_bus_recv(s, &got), RON_EAGAIN);
    assert_int_equal(ron_bus_sub_dropped(s), 0);

    /* one more than capacity: exactly the oldest one is lost */
    for (uint64_t v = 100; v < 117; v++)
        publish_version(bus, v);
    assert_int_equal(ron_bus_recv(s, &got), 0);
    assert_int_equal(got.version, 101);
    assert_int_equal(ron_bus_sub_dropped(s), 1);
    ron_bus_unsubscribe(s);
    ron_bus_free(bus);
}

static void
test_bus_laggard_loses_exactly_the_oldest_and_the_count_is_exact(void **state)
{
    (void)state;
    fake_clock_t clk = {5000};
    ron_bus_t *bus = bus_make(8, &clk, 1000);
    ron_bus_sub_t *lag, *fast;
    ron_kernel_event_t got;
    ron_bus_stats_t st;

    assert_int_equal(ron_bus_subscribe(bus, NULL, &lag), 0);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &fast), 0);
    for (uint64_t v = 0; v < 20; v++) {
        publish_version(bus, v);
        assert_int_equal(ron_bus_recv(fast, &got), 0);
        assert_int_equal(got.version, v);
    }
    /* 20 published into 8 slots: the laggard gets 12..19, loses 0..11 */
    for (uint64_t v = 12; v < 20; v++) {
        assert_int_equal(ron_bus_recv(lag, &got), 0);
        assert_int_equal(got.kind, RON_EV_CONFIG_UPDATED);
        assert_int_equal(got.version, v);
    }
    assert_int_equal(ron_bus_sub_dropped(lag), 12);
    assert_int_equal(ron_bus_sub_delivered(lag), 8);
    assert_int_equal(ron_bus_sub_dropped(fast), 0);

    /* the overflow was reported once, through the bus itself, after the lost events */
    char want[RON_KERNEL_REASON_MAX];
    snprintf(want, sizeof want, "overflow: 12 events dropped by lagging subscribers (capacity 8)");
    for (int i = 0; i < 2; i++) {
        ron_bus_sub_t *s = i == 0 ? lag : fast;
        assert_int_equal(ron_bus_recv(s, &got), 0);
        assert_int_equal(got.kind, RON_EV_SERVICE_CRASHED);
        assert_string_equal(got.service, "bus");
        assert_string_equal(got.reason, want);
        assert_int_equal(ron_bus_recv(s, &got), RON_EAGAIN);
    }
    ron_bus_stats(bus, &st);
    assert_int_equal(st.published, 21);
    assert_int_equal(st.overflow_dropped, 12);
    assert_int_equal(st.overflow_reports, 1);
    assert_int_equal(st.delivered, 9 + 21);
    ron_bus_unsubscribe(lag);
    ron_bus_unsubscribe(fast);
    ron_bus_free(bus);
}

static void
test_bus_publish_never_blocks_with_a_stuck_subscriber(void **state)
{
    (void)state;
    ron_bus_t *bus = bus_make(64, NULL, 0);
    ron_bus_sub_t *stuck;
    ron_kernel_event_t got;
    const uint64_t n = 200000;

    assert_int_equal(ron_bus_subscribe(bus, NULL, &stuck), 0);
    for (uint64_t v = 0; v < n; v++)
        publish_version(bus, v); /* would hang here (CTest timeout) if publish waited */
    /* the stuck subscriber wakes up to the newest `capacity` events */
    assert_int_equal(ron_bus_recv(stuck, &got), 0);
    assert_int_equal(got.version, n - 64);
    assert_int_equal(ron_bus_sub_dropped(stuck), n - 64);
    ron_bus_stats_t st;
    ron_bus_stats(bus, &st);
    assert_int_equal(st.overflow_dropped, n - 64);
    ron_bus_unsubscribe(stuck);
    ron_bus_free(bus);
}

/* Drain s, returning how many SERVICE_CRASHED{"bus"} it saw. */
static int
drain_count_reports(ron_bus_sub_t *s)
{
    ron_kernel_event_t got;
    int reports = 0;
    for (int i = 0; i < 1000 && ron_bus_recv(s, &got) == 0; i++)
        if (got.kind == RON_EV_SERVICE_CRASHED && strcmp(got.service, "bus") == 0)
            reports++;
    return reports;
}

static void
test_bus_many_overflows_within_one_interval_yield_one_crash_event(void **state)
{
    (void)state;
    fake_clock_t clk = {1000};
    ron_bus_t *bus = bus_make(16, &clk, 1000);
    ron_bus_sub_t *lag, *watch;
    ron_kernel_event_t got;
    ron_bus_stats_t st;
    int seen = 0;

    assert_int_equal(ron_bus_subscribe(bus, NULL, &lag), 0);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &watch), 0);
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 40; i++) {
            publish_version(bus, (uint64_t)i);
            seen += drain_count_reports(watch);
        }
        assert_int_equal(ron_bus_recv(lag, &got), 0); /* overflows every round */
        seen += drain_count_reports(watch);
        clk.now += 99; /* ten rounds span 990 ms: one interval */
    }
    ron_bus_stats(bus, &st);
    assert_int_equal(st.overflow_reports, 1);
    assert_int_equal(seen, 1);
    assert_true(st.overflow_dropped >= 10 * 24);

    /* the next interval allows exactly one more */
    clk.now = 1000 + 1000;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 40; i++) {
            publish_version(bus, (uint64_t)i);
            seen += drain_count_reports(watch);
        }
        assert_int_equal(ron_bus_recv(lag, &got), 0);
        seen += drain_count_reports(watch);
    }
    ron_bus_stats(bus, &st);
    assert_int_equal(st.overflow_reports, 2);
    assert_int_equal(seen, 2);
    assert_int_equal(ron_bus_sub_dropped(watch), 0);
    ron_bus_unsubscribe(lag);
    ron_bus_unsubscribe(watch);
    ron_bus_free(bus);
}

static void
test_bus_refuses_subscribers_beyond_the_limit(void **state)
{
    (void)state;
    ron_bus_t *bus = bus_make(8, NULL, 0);
    ron_bus_sub_t *subs[RON_BUS_MAX_SUBS], *extra;
    for (unsigned i = 0; i < RON_BUS_MAX_SUBS; i++)
        assert_int_equal(ron_bus_subscribe(bus, NULL, &subs[i]), 0);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &extra), RON_EBUSY);
    assert_null(extra);
    ron_bus_unsubscribe(subs[3]);
    assert_int_equal(ron_bus_subscribe(bus, NULL, &extra), 0);
    subs[3] = extra;
    for (unsigned i = 0; i < RON_BUS_MAX_SUBS; i++)
        ron_bus_unsubscribe(subs[i]);
    ron_bus_free(bus);
}

typedef struct {
    ron_bus_watch_t watch;
    uint64_t got;
    uint64_t stop_after;
    int closed;
} watch_test_t;

static void
watch_test_closed(ron_bus_watch_t *w)
{
    ron_container_of(w, watch_test_t, watch)->closed++;
}

static void
watch_test_on_event(ron_bus_watch_t *w, const ron_kernel_event_t *ev)
{
    watch_test_t *t = ron_container_of(w, watch_test_t, watch);
    assert_int_equal(ev->kind, RON_EV_CONFIG_UPDATED);
    assert_int_equal(ev->version, t->got); /* in order, none lost */
    t->got++;
    if (t->got == t->stop_after)
        ron_bus_watch_close(w, watch_test_closed); /* from inside the callback */
}

static void
test_bus_watch_delivers_in_order_over_several_loop_turns_and_closes(void **state)
{
    (void)state;
    uv_loop_t loop;
    ron_bus_t *bus = bus_make(4096, NULL, 0);
    watch_test_t t = {.stop_after = 1000};
    ron_bus_stats_t st;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ron_bus_watch_init(&t.watch, &loop, bus, watch_test_on_event), 0);
    for (uint64_t v = 0; v < 1200; v++)
        publish_version(bus, v); /* more than one turn's budget */
    assert_int_equal(t.got, 0);  /* nothing is delivered from inside publish */
    uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(t.got, RON_BUS_WATCH_BUDGET); /* one turn, one budget */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(t.got, 1000); /* nothing after the close */
    assert_int_equal(t.closed, 1);
    publish_version(bus, 1); /* the bus no longer touches the closed handle */
    ron_bus_stats(bus, &st);
    assert_int_equal(st.delivered, 1000);
    assert_int_equal(uv_loop_close(&loop), 0);
    ron_bus_free(bus);
}

/* ---------------------------------------------------------------- restart */

static ron_restart_policy_t
policy(uint64_t seed)
{
    ron_restart_policy_t p;
    assert_int_equal(ron_restart_init(&p, NULL, seed), 0);
    return p;
}

static void
assert_jittered(uint64_t delay, uint64_t nominal)
{
    assert_true(delay <= nominal);
    assert_true(delay >= nominal - nominal / 4);
}

static void
test_restart_backoff_doubles_from_100ms_to_a_30s_cap(void **state)
{
    (void)state;
    ron_restart_policy_t p = policy(7);
    uint64_t now = 0, d;
    const uint64_t nominal[] = {100,  200,   400,   800,   1600,  3200,
                                6400, 12800, 25600, 30000, 30000, 30000};
    for (size_t i = 0; i < RON_ARRAY_LEN(nominal); i++) {
        /* 12.5 s apart: never 6 crashes in 60 s; no heartbeat, so no reset */
        assert_int_equal(ron_restart_on_crash(&p, now, &d), RON_RESTART_AFTER);
        assert_jittered(d, nominal[i]);
        assert_int_equal(ron_restart_streak(&p), i + 1);
        now += 12500;
    }
}

static void
test_restart_first_delay_is_jittered_within_75_to_100ms(void **state)
{
    (void)state;
    uint64_t lo = UINT64_MAX, hi = 0, d;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        ron_restart_policy_t p = policy(seed);
        assert_int_equal(ron_restart_on_crash(&p, 1000, &d), RON_RESTART_AFTER);
        lo = RON_MIN(lo, d);
        hi = RON_MAX(hi, d);
    }
    assert_true(lo >= 75 && hi <= 100);
    assert_true(hi - lo >= 10); /* the jitter actually spreads restarts */
    ron_restart_policy_t p;
    assert_int_equal(ron_restart_init(&p, NULL, 0), 0); /* seeded from the OS */
}

static void
test_restart_backoff_resets_after_10s_of_healthy_running(void **state)
{
    (void)state;
    ron_restart_policy_t p = policy(3);
    uint64_t d;
    assert_int_equal(ron_restart_on_crash(&p, 0, &d), RON_RESTART_AFTER);
    assert_int_equal(ron_restart_on_crash(&p, 500, &d), RON_RESTART_AFTER);
    assert_jittered(d, 200);
    /* restarted at 700, healthy from 800; 9.999 s of health is not enough */
    ron_restart_on_healthy(&p, 800);
    ron_restart_on_healthy(&p, 10799);
    assert_int_equal(ron_restart_streak(&p), 2);
    assert_int_equal(ron_restart_on_crash(&p, 10799, &d), RON_RESTART_AFTER);
    assert_jittered(d, 400);
    /* healthy from 11500 to 21500: reset */
    ron_restart_on_healthy(&p, 11500);
    ron_restart_on_healthy(&p, 21500);
    assert_int_equal(ron_restart_streak(&p), 0);
    assert_int_equal(ron_restart_on_crash(&p, 21600, &d), RON_RESTART_AFTER);
    assert_jittered(d, 100);
    /* a crash 10 s after the first healthy report resets even without a later heartbeat */
    ron_restart_on_healthy(&p, 22000);
    assert_int_equal(ron_restart_on_crash(&p, 32000, &d), RON_RESTART_AFTER);
    assert_jittered(d, 100);
    /* a crash without any healthy report in between does not reset (60001: the
     * crash at 0 has left the window, so this is the 5th in it, not the 6th) */
    assert_int_equal(ron_restart_on_crash(&p, 60001, &d), RON_RESTART_AFTER);
    assert_jittered(d, 200);
}

static void
test_restart_quarantines_at_the_sixth_crash_within_60s(void **state)
{
    (void)state;
    ron_restart_policy_t p = policy(5);
    uint64_t d;
    for (uint64_t i = 0; i < 5; i++)
        assert_int_equal(ron_restart_on_crash(&p, i * 1000, &d), RON_RESTART_AFTER);
    assert_false(ron_restart_is_quarantined(&p));
    assert_int_equal(ron_restart_on_crash(&p, 5000, &d), RON_RESTART_QUARANTINE);
    assert_int_equal(d, 0);
    assert_true(ron_restart_is_quarantined(&p));
    /* stays quarantined: no restart, whatever happens, until release */
    ron_restart_on_healthy(&p, 100000);
    assert_int_equal(ron_restart_on_crash(&p, 200000, &d), RON_RESTART_QUARANTINE);
}

static void
test_restart_window_slides_so_old_crashes_expire(void **state)
{
    (void)state;
    ron_restart_policy_t p = policy(9);
    uint64_t d;
    const uint64_t t[] = {0, 10000, 20000, 30000, 40000};
    for (size_t i = 0; i < RON_ARRAY_LEN(t); i++)
        assert_int_equal(ron_restart_on_crash(&p, t[i], &d), RON_RESTART_AFTER);
    /* at 60 s the crash at 0 is exactly 60 s old: outside (t - 60 s, t] */
    assert_int_equal(ron_restart_on_crash(&p, 60000, &d), RON_RESTART_AFTER);
    /* at 69.999 s: 10, 20, 30, 40, 60 s and this one = 6 within 60 s */
    assert_int_equal(ron_restart_on_crash(&p, 69999, &d), RON_RESTART_QUARANTINE);

    /* a configured policy, as the node's integration tests may use */
    ron_restart_config_t cfg = {
        .base_ms = 10, .cap_ms = 40, .window_ms = 1000, .quarantine_crashes = 3};
    assert_int_equal(ron_restart_init(&p, &cfg, 1), 0);
    assert_int_equal(ron_restart_on_crash(&p, 0, &d), RON_RESTART_AFTER);
    assert_jittered(d, 10);
    assert_int_equal(ron_restart_on_crash(&p, 999, &d), RON_RESTART_AFTER);
    assert_int_equal(ron_restart_on_crash(&p, 1500, &d), RON_RESTART_AFTER);
    assert_jittered(d, 40);
    assert_int_equal(ron_restart_on_crash(&p, 1600, &d), RON_RESTART_QUARANTINE);
}

static void
test_restart_release_lets_a_quarantined_child_run_again(void **state)
{
    (void)state;
    ron_restart_policy_t p = policy(11);
    uint64_t d;
    for (uint64_t i = 0; i < 6; i++)
        ron_restart_on_crash(&p, i * 100, &d);
    assert_true(ron_restart_is_quarantined(&p));
    ron_restart_release(&p);
    assert_false(ron_restart_is_quarantined(&p));
    assert_int_equal(ron_restart_streak(&p), 0);
    /* history cleared: five more crashes right away are restarted, from 100 ms */
    assert_int_equal(ron_restart_on_crash(&p, 700, &d), RON_RESTART_AFTER);
    assert_jittered(d, 100);
    for (uint64_t i = 1; i < 5; i++)
        assert_int_equal(ron_restart_on_crash(&p, 700 + i, &d), RON_RESTART_AFTER);
    assert_int_equal(ron_restart_on_crash(&p, 706, &d), RON_RESTART_QUARANTINE);
}

static void
test_restart_rejects_invalid_config(void **state)
{
    (void)state;
    ron_restart_policy_t p;
    ron_restart_config_t cfg = {.base_ms = 500, .cap_ms = 100};
    assert_int_equal(ron_restart_init(&p, &cfg, 1), RON_EINVAL);
    cfg = (ron_restart_config_t){.quarantine_crashes = RON_RESTART_MAX_QUARANTINE + 1};
    assert_int_equal(ron_restart_init(&p, &cfg, 1), RON_EINVAL);
    cfg = (ron_restart_config_t){.quarantine_crashes = 1};
    assert_int_equal(ron_restart_init(&p, &cfg, 1), 0);
    uint64_t d;
    assert_int_equal(ron_restart_on_crash(&p, 0, &d), RON_RESTART_QUARANTINE);
}

/* ---------------------------------------------------------------- threads */

#define STRESS_PRODUCERS 2
#define STRESS_CONSUMERS 3
#define STRESS_EVENTS 40000 /* per producer */
#define STRESS_DEADLINE_MS 30000

typedef struct {
    ron_bus_t *bus;
    unsigned id;
    _Atomic int *producers_done;
} producer_arg_t;

typedef struct {
    ron_bus_t *bus;
    ron_bus_sub_t *sub;
    _Atomic int *producers_done;
    uint64_t received;
    uint64_t torn;      /* events whose fields disagree: must stay 0 */
    uint64_t reordered; /* per-producer sequence going backwards or repeating: must stay 0 */
    uint64_t reports;
    bool timed_out;
} consumer_arg_t;

static void *
stress_producer(void *arg)
{
    producer_arg_t *a = arg;
    ron_kernel_event_t ev;
    char svc[32], reason[64];
    for (uint64_t i = 0; i < STRESS_EVENTS; i++) {
        /* service and reason repeat the same numbers: a torn copy would mix them */
        snprintf(svc, sizeof svc, "p%u-%llu", a->id, (unsigned long long)i);
        snprintf(reason, sizeof reason, "%llu from p%u, %llu", (unsigned long long)i, a->id,
                 (unsigned long long)i);
        ron_kernel_event_service_crashed(&ev, svc, reason);
        ron_bus_publish(a->bus, &ev);
    }
    atomic_fetch_add(a->producers_done, 1);
    return NULL;
}

static void
stress_check(consumer_arg_t *c, const ron_kernel_event_t *ev, int64_t last[])
{
    unsigned id, id2;
    unsigned long long i, i2, i3;
    if (strcmp(ev->service, "bus") == 0) {
        c->reports++;
        return;
    }
    if (ev->kind != RON_EV_SERVICE_CRASHED || sscanf(ev->service, "p%u-%llu", &id, &i) != 2 ||
        sscanf(ev->reason, "%llu from p%u, %llu", &i2, &id2, &i3) != 3 || id != id2 || i != i2 ||
        i != i3 || id >= STRESS_PRODUCERS) {
        c->torn++;
        return;
    }
    if ((int64_t)i <= last[id])
        c->reordered++;
    last[id] = (int64_t)i;
}

static void *
stress_consumer(void *arg)
{
    consumer_arg_t *c = arg;
    ron_kernel_event_t ev;
    int64_t last[STRESS_PRODUCERS];
    uint64_t deadline = ron_now_ms() + STRESS_DEADLINE_MS;
    for (int i = 0; i < STRESS_PRODUCERS; i++)
        last[i] = -1;
    for (;;) {
        int done = atomic_load(c->producers_done) == STRESS_PRODUCERS;
        int rc = ron_bus_recv(c->sub, &ev);
        if (rc == 0) {
            c->received++;
            stress_check(c, &ev, last);
            continue;
        }
        if (done)
            break; /* everything published before `done` was seen has been read */
        if (ron_now_ms() > deadline) {
            c->timed_out = true;
            break;
        }
        sched_yield();
    }
    return NULL;
}

static void
test_bus_threads_stress_delivers_whole_ordered_events_and_counts_every_loss(void **state)
{
    (void)state;
    ron_bus_t *bus = bus_make(256, NULL, 1); /* small ring: forces overflow */
    _Atomic int done = 0;
    pthread_t pt[STRESS_PRODUCERS], ct[STRESS_CONSUMERS];
    producer_arg_t pa[STRESS_PRODUCERS];
    consumer_arg_t ca[STRESS_CONSUMERS];

    for (int i = 0; i < STRESS_CONSUMERS; i++) {
        ca[i] = (consumer_arg_t){.bus = bus, .producers_done = &done};
        assert_int_equal(ron_bus_subscribe(bus, NULL, &ca[i].sub), 0);
        assert_int_equal(pthread_create(&ct[i], NULL, stress_consumer, &ca[i]), 0);
    }
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        pa[i] = (producer_arg_t){.bus = bus, .id = (unsigned)i, .producers_done = &done};
        assert_int_equal(pthread_create(&pt[i], NULL, stress_producer, &pa[i]), 0);
    }
    for (int i = 0; i < STRESS_PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    for (int i = 0; i < STRESS_CONSUMERS; i++)
        pthread_join(ct[i], NULL);

    ron_bus_stats_t st;
    ron_bus_stats(bus, &st);
    uint64_t sum_dropped = 0, sum_received = 0;
    for (int i = 0; i < STRESS_CONSUMERS; i++) {
        ron_kernel_event_t ev;
        assert_false(ca[i].timed_out);
        assert_int_equal(ca[i].torn, 0);
        assert_int_equal(ca[i].reordered, 0);
        /* drain overflow reports published after the consumer stopped */
        for (int k = 0; k < 1000 && ron_bus_recv(ca[i].sub, &ev) == 0; k++)
            ca[i].received++;
        assert_int_equal(ron_bus_sub_delivered(ca[i].sub), ca[i].received);
        sum_dropped += ron_bus_sub_dropped(ca[i].sub);
        sum_received += ca[i].received;
    }
    ron_bus_stats(bus, &st);
    for (int i = 0; i < STRESS_CONSUMERS; i++) {
        /* every position was either delivered or counted as dropped */
        assert_int_equal(ca[i].received + ron_bus_sub_dropped(ca[i].sub), st.published);
        ron_bus_unsubscribe(ca[i].sub);
    }
    assert_int_equal(st.published,
                     (uint64_t)STRESS_PRODUCERS * STRESS_EVENTS + st.overflow_reports);
    assert_int_equal(st.overflow_dropped, sum_dropped);
    ron_bus_stats(bus, &st);
    assert_int_equal(st.delivered, sum_received);
    print_message("stress: published %llu, delivered %llu, dropped %llu, overflow reports %llu\n",
                  (unsigned long long)st.published, (unsigned long long)st.delivered,
                  (unsigned long long)st.overflow_dropped, (unsigned long long)st.overflow_reports);
    ron_bus_free(bus);
}

typedef struct {
    uv_async_t async;
    ron_bus_sub_t *sub;
    uint64_t got;
    uint64_t want;
    uint64_t wakeups;
    uv_timer_t guard;
    bool timed_out;
} waker_t;

static void
waker_closed(uv_handle_t *h)
{
    (void)h;
}

static void
waker_finish(waker_t *w)
{
    ron_bus_unsubscribe(w->sub); /* after this the bus never touches the handle */
    w->sub = NULL;
    uv_close((uv_handle_t *)&w->async, waker_closed);
    uv_close((uv_handle_t *)&w->guard, waker_closed);
}

static void
waker_on_async(uv_async_t *a)
{
    waker_t *w = ron_container_of(a, waker_t, async);
    ron_kernel_event_t ev;
    if (w->sub == NULL)
        return;
    w->wakeups++;
    while (ron_bus_recv(w->sub, &ev) == 0) {
        assert_int_equal(ev.version, w->got); /* capacity covers all: nothing lost */
        w->got++;
    }
    if (w->got == w->want)
        waker_finish(w);
}

static void
waker_on_guard(uv_timer_t *t)
{
    waker_t *w = ron_container_of(t, waker_t, guard);
    w->timed_out = true;
    waker_finish(w);
}

typedef struct {
    ron_bus_t *bus;
    uint64_t n;
} wake_pub_arg_t;

static void *
wake_publisher(void *arg)
{
    wake_pub_arg_t *a = arg;
    for (uint64_t v = 0; v < a->n; v++) {
        publish_version(a->bus, v);
        if (v % 64 == 0)
            sched_yield(); /* let the loop take several wake-ups */
    }
    return NULL;
}

static void
test_bus_threads_wake_a_loop_subscriber_through_uv_async(void **state)
{
    (void)state;
    uv_loop_t loop;
    waker_t w = {.want = 2000};
    ron_bus_t *bus = bus_make(4096, NULL, 0);
    pthread_t th;
    wake_pub_arg_t pa = {bus, w.want};

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_async_init(&loop, &w.async, waker_on_async), 0);
    assert_int_equal(uv_timer_init(&loop, &w.guard), 0);
    assert_int_equal(uv_timer_start(&w.guard, waker_on_guard, 20000, 0), 0);
    assert_int_equal(ron_bus_subscribe(bus, &w.async, &w.sub), 0);
    assert_int_equal(pthread_create(&th, NULL, wake_publisher, &pa), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    assert_false(w.timed_out);
    assert_int_equal(w.got, w.want);
    assert_true(w.wakeups >= 1);
    /* a publish after unsubscribe must not touch the closed handle (ASan would see it) */
    publish_version(bus, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    ron_bus_free(bus);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_event_every_kind_round_trips_through_json),
        cmocka_unit_test(test_event_setters_truncate_long_strings_on_utf8_boundary),
        cmocka_unit_test(test_event_setters_replace_invalid_utf8_so_encoding_never_fails),
        cmocka_unit_test(test_event_encode_rejects_small_buffer_and_unknown_kind),
        cmocka_unit_test(test_event_decode_is_strict),
        cmocka_unit_test(test_bus_rejects_capacity_that_is_not_a_power_of_two_in_range),
        cmocka_unit_test(test_bus_delivers_every_kind_in_order_to_every_subscriber),
        cmocka_unit_test(test_bus_delivers_only_the_fields_of_the_event_kind),
        cmocka_unit_test(test_bus_subscriber_sees_only_events_published_after_it_joined),
        cmocka_unit_test(test_bus_holds_exactly_capacity_events_for_a_laggard),
        cmocka_unit_test(test_bus_laggard_loses_exactly_the_oldest_and_the_count_is_exact),
        cmocka_unit_test(test_bus_publish_never_blocks_with_a_stuck_subscriber),
        cmocka_unit_test(test_bus_many_overflows_within_one_interval_yield_one_crash_event),
        cmocka_unit_test(test_bus_refuses_subscribers_beyond_the_limit),
        cmocka_unit_test(test_bus_watch_delivers_in_order_over_several_loop_turns_and_closes),
        cmocka_unit_test(test_restart_backoff_doubles_from_100ms_to_a_30s_cap),
        cmocka_unit_test(test_restart_first_delay_is_jittered_within_75_to_100ms),
        cmocka_unit_test(test_restart_backoff_resets_after_10s_of_healthy_running),
        cmocka_unit_test(test_restart_quarantines_at_the_sixth_crash_within_60s),
        cmocka_unit_test(test_restart_window_slides_so_old_crashes_expire),
        cmocka_unit_test(test_restart_release_lets_a_quarantined_child_run_again),
        cmocka_unit_test(test_restart_rejects_invalid_config),
    };
    const struct CMUnitTest threaded[] = {
        cmocka_unit_test(
            test_bus_threads_stress_delivers_whole_ordered_events_and_counts_every_loss),
        cmocka_unit_test(test_bus_threads_wake_a_loop_subscriber_through_uv_async),
    };
    if (argc > 1 && strcmp(argv[1], "threads") == 0)
        return cmocka_run_group_tests_name("ron-kernel threads", threaded, NULL, NULL);
    return cmocka_run_group_tests_name("ron-kernel", unit, NULL, NULL);
}
