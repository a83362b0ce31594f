#!/usr/bin/env python3
"""Five real nodes on loopback (services storage,index,gateway,app,dht,overlay;
nodes 1-4 seeded with node 0's DHT address) find each other and share
content and names: every node's DHT has contacts; an object put through
node 0's gateway is fetched by address through node 2's gateway, through
node 3's app port with `ron get`, and a range of another object through
node 4's app port (`ron get --range`), all byte-exact, with node 0's overlay
counting piece bytes sent and the fetchers counting fetched bytes; the
fetched copy is kept as cache; a name published on node 1 resolves on
node 3 (`ron name resolve`) and through node 4's gateway (/n/ -> 302).
A GET of an address nobody has answers 404 fast (one lookup, no retries:
the median of 5 fresh misses under 500 ms, a generous loopback bound), the
same address again is 404 from the node's short miss memory, and `ron get`
of one exits 1 with not_found."""
import os
import time

from ronnode import check
from ronnet import Cluster

PIECE = 65536


def retry(what, fn, timeout=15):
    """fn() -> (ok, detail); retried (the provider record may still be on its
    way) until ok or timeout s; returns the detail of the success."""
    deadline = time.monotonic() + timeout
    while True:
        ok, detail = fn()
        if ok:
            return detail
        check(time.monotonic() < deadline, "%s: %s" % (what, detail))
        time.sleep(0.2)


c = Cluster(5)
try:
    c.wait_up(40).wait_dht(min_contacts=1, timeout=30)
    n0, n1, n2, n3, n4 = c.nodes

    # Addresses nobody has: 404, fast (one bounded lookup, not a retry loop).
    # Until node 2's gateway has its bus connection to storage (a busy machine
    # starts services slowly) it answers 503 with Retry-After, never 404.
    def first_miss():
        s, h, _ = n2.gw("GET", "/o/b3:" + os.urandom(32).hex())
        check(s in (404, 503), "a miss while starting: %d, want 404 or 503" % s)
        return s == 404, "GET of an absent address on node 2: %d" % s
    retry("node 2's gateway answers a miss with 404", first_miss)
    took = []
    for _ in range(5):
        absent = "b3:" + os.urandom(32).hex()
        t0 = time.monotonic()
        s, _, _ = n2.gw("GET", "/o/" + absent)
        took.append(time.monotonic() - t0)
        check(s == 404, "GET of an absent address on node 2: %d, want 404" % s)
    took.sort()
    check(took[2] < 0.5, "a miss answers 404 within 500 ms (median of 5): %s s" %
          ["%.3f" % t for t in took])
    s, _, _ = n2.gw("GET", "/o/" + absent)
    check(s == 404, "the same absent address again: %d, want 404" % s)
    r = n3.ron("get", "b3:" + os.urandom(32).hex(), binary=True)
    check(r.returncode == 1 and b"not_found" in r.stderr,
          "ron get of an absent address: exit 1 not_found: %d %r" % (r.returncode, r.stderr[:200]))

    # Content put on node 0, fetched through node 2's gateway.
    data = os.urandom(5 * PIECE + 1234)
    addr = n0.gw_put(data)

    def gw_get():
        s, _, b = n2.gw("GET", "/o/" + addr)
        return s == 200 and b == data, "GET /o on node 2: %d, %d bytes" % (s, len(b))
    retry("node 2 fetches node 0's object through its gateway", gw_get)
    # counters reach /metrics with the services' next heartbeat
    n0.wait_metric("overlay_piece_bytes_sent_total", len(data))
    n2.wait_metric("overlay_piece_bytes_recv_total", len(data))
    n2.wait_metric("storage_fetch_bytes_total", len(data) - PIECE)
    r = n2.ron("stat", addr)
    check(r.returncode == 0 and "cache" in r.stdout, "node 2 keeps the copy as cache: %r" % r.stdout)

    # The same object through node 3's app port with `ron get`.
    def cli_get():
        r = n3.ron("get", addr, binary=True)
        return r.returncode == 0 and r.stdout == data, "ron get on node 3: exit %d %r" % (
            r.returncode, r.stderr[:200])
    retry("node 3 fetches it with ron get", cli_get)

    # A range of another object (put with `ron put` on node 1) through node 4.
    big = os.urandom(12 * PIECE)
    r = n1.ron("put", "-", binary=True, stdin=big)
    check(r.returncode == 0, "ron put on node 1: %r" % r.stderr)
    big_addr = r.stdout.decode().strip()
    lo, hi = 3 * PIECE + 17, 5 * PIECE + 99

    def range_get():
        r = n4.ron("get", big_addr, "--range", "%d-%d" % (lo, hi), binary=True)
        return (r.returncode == 0 and r.stdout == big[lo:hi + 1],
                "ron get --range on node 4: exit %d %r" % (r.returncode, r.stderr[:200]))
    retry("node 4 fetches a range", range_get)
    n1.wait_metric("overlay_piece_bytes_sent_total", hi + 1 - lo)

    # A name published on node 1 resolves on node 3 and through node 4's gateway.
    r = n1.ron("name", "publish", "cluster.test", addr)
    check(r.returncode == 0, "publish on node 1: %r" % r.stderr)

    def resolve():
        r = n3.ron("name", "resolve", "cluster.test")
        return r.returncode == 0 and r.stdout.strip() == addr, "resolve on node 3: %d %r %r" % (
            r.returncode, r.stdout, r.stderr[:200])
    retry("the name resolves on node 3", resolve)

    def gw_name():
        s, h, _ = n4.gw("GET", "/n/cluster.test")
        return s == 302 and h.get("location", "").endswith("/o/" + addr), \
            "GET /n on node 4: %d %r" % (s, h.get("location"))
    retry("the name resolves through node 4's gateway", gw_name)
    print("PASS")
finally:
    c.close()
