#!/usr/bin/env python3
"""Chaos: a provider throttled to a trickle serves < 25 % of the bytes.
Three real nodes in their own namespaces (docs/runbooks/netns-test.md):
node 0 holds a 16 MiB object, node 1 fetches a copy (so both provide it);
then ron-delayrelay limits every packet node 1 sends to 2000 kbit/s
(--throttle), and node 2 fetches the object through its gateway. The GET
is byte-exact, the providers' overlay_piece_bytes_sent_total together grew
by at least the object's size, node 1 sent some of them (it was asked)
but under 25 %; the
relay's counters show the transfer crossed it. Root only: skips
(exit 0, "SKIP:") otherwise."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from ronnode import check, wait_for  # noqa: E402
from ronnet import Cluster, NetBed, netns_unavailable  # noqa: E402

why = netns_unavailable()
if why:
    print("SKIP: " + why)
    sys.exit(0)

SIZE = 16 << 20
bed = NetBed(3, delay_ms=2)
c = None
try:
    c = Cluster(3, bed=bed)
    c.wait_up(60).wait_dht(min_contacts=1, timeout=60)
    n0, n1, n2 = c.nodes
    data = os.urandom(SIZE)
    addr = n0.gw_put(data, timeout=60)
    deadline = time.monotonic() + 30
    while True:
        s, _, b = n1.gw("GET", "/o/" + addr, timeout=60)
        if s == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(s == 200 and b == data, "node 1 fetched its copy: %d" % s)
    wait_for(lambda: "cache" in n1.ron("stat", addr).stdout, 10, "node 1 keeps the copy")
    time.sleep(1.0)  # its provider record reaches the DHT

    bed.start_relay(delay_ms=2, throttles=[bed.addr(1) + "/32=2000"])
    base0 = n0.metric_total("overlay_piece_bytes_sent_total")
    base1 = n1.metric_total("overlay_piece_bytes_sent_total")
    t0 = time.monotonic()
    s, _, b = n2.gw("GET", "/o/" + addr, timeout=120)
    secs = time.monotonic() - t0
    check(s == 200 and b == data, "node 2 fetched the object: %d, %d bytes" % (s, len(b)))
    d0 = n0.metric_total("overlay_piece_bytes_sent_total") - base0
    d1 = n1.metric_total("overlay_piece_bytes_sent_total") - base1
    time.sleep(1.2)  # the relay rewrites its counters every second
    st = bed.relay_stats()
    print("fetch %.1f s: node 0 sent %d, throttled node 1 sent %d (%.1f %%); relay %r"
          % (secs, d0, d1, 100.0 * d1 / max(1, d0 + d1), st))
    check(st["tx_bytes"] >= SIZE, "the transfer crossed the relay: %r" % st)
    check(d0 + d1 >= SIZE, "the providers sent the whole object: %d + %d" % (d0, d1))
    check(d1 > 0, "the throttled provider was asked too (it sent piece bytes)")
    check(d1 < 0.25 * (d0 + d1), "the throttled provider served < 25 %%: %d of %d" % (d1, d0 + d1))
    print("PASS")
finally:
    if c is not None:
        c.close()
    bed.kill()
