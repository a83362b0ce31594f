#!/usr/bin/env python3
"""Chaos: 10 % loss on every link. Five real nodes, each in its own network
namespace with its own address (docs/runbooks/netns-test.md), 10 ms + up to
5 ms jitter of delay each way through ron-delayrelay and 10 % of the
packets between nodes dropped by nftables. 40 objects are put (8 per node)
and 10 names published; then 160 fetches (every object through the gateway
of every node that lacks it) and 40 name lookups (`ron name resolve` of
every name on every other node), 200 operations, each given one try of at
most 30 s: at least 99 % succeed byte-exact, while the nft `lost` counter
shows that packets really were dropped and the relay's counters that they
went through the delay. Root only: skips (exit 0, "SKIP:") otherwise."""
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from ronnode import check  # noqa: E402
from ronnet import Cluster, NetBed, netns_unavailable  # noqa: E402

why = netns_unavailable()
if why:
    print("SKIP: " + why)
    sys.exit(0)

N, OBJECTS, NAMES = 5, 40, 10
bed = NetBed(N, delay_ms=10, jitter_ms=5, loss_pct=0)
c = None
try:
    c = Cluster(N, bed=bed)
    c.wait_up(60).wait_dht(min_contacts=1, timeout=60)
    nodes = c.nodes

    # Content and names, put while the links are clean.
    objs = []  # (owner index, address, bytes)
    for k in range(OBJECTS):
        owner = k % N
        data = os.urandom(70000 + 997 * k)
        objs.append((owner, nodes[owner].gw_put(data), data))
    names = []
    for k in range(NAMES):
        owner = k % N
        name = "loss%d.test" % k
        r = nodes[owner].ron("name", "publish", name, objs[k][1])
        check(r.returncode == 0, "publish %s: %r" % (name, r.stderr))
        names.append((owner, name, objs[k][1]))
    time.sleep(2.0)  # provider and name records on their way (fire and forget)

    bed.set_loss(10)
    relay0 = bed.relay_stats()["tx_packets"]
    lock = threading.Lock()
    failures = []

    def fetch(i, addr, data):
        t0 = time.monotonic()
        try:
            s, _, b = nodes[i].gw("GET", "/o/" + addr, timeout=30)
            ok = s == 200 and b == data
            detail = "GET %s on node %d: %d %s" % (addr[:12], i, s,
                                                   b[:160] if s != 200 else "%d bytes" % len(b))
        except OSError as e:
            ok, detail = False, "GET %s on node %d: %s" % (addr[:12], i, e)
        if not ok:
            with lock:
                failures.append("%s (%.1f s)" % (detail, time.monotonic() - t0))

    def lookup(i, name, addr):
        try:
            r = nodes[i].ron("name", "resolve", name, timeout=30)
            ok = r.returncode == 0 and r.stdout.strip() == addr
            detail = "resolve %s on node %d: %d %r" % (name, i, r.returncode, r.stderr[:120])
        except Exception as e:  # subprocess timeout
            ok, detail = False, "resolve %s on node %d: %s" % (name, i, e)
        if not ok:
            with lock:
                failures.append(detail)

    ops = [(fetch, i, a, d) for (o, a, d) in objs for i in range(N) if i != o]
    ops += [(lookup, i, nm, a) for (o, nm, a) in names for i in range(N) if i != o]
    check(len(ops) >= 200, "at least 200 operations: %d" % len(ops))
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=N) as pool:
        for f in [pool.submit(op[0], *op[1:]) for op in ops]:
            f.result(timeout=120)
    secs = time.monotonic() - t0
    lost, seen = bed.nft_counter("lost"), bed.nft_counter("seen")
    relayed = bed.relay_stats()["tx_packets"] - relay0
    ok = len(ops) - len(failures)
    print("%d/%d operations succeeded in %.1f s; nft lost %d of %d packets; relay forwarded %d"
          % (ok, len(ops), secs, lost, seen, relayed))
    for f in failures[:10]:
        print("  failed: " + f)
    check(lost > 0 and lost / seen >= 0.05, "nftables dropped packets: %d of %d" % (lost, seen))
    check(relayed > 0, "the traffic went through the delay relay")
    check(ok >= 0.99 * len(ops), ">= 99 %% of the operations succeeded: %d/%d" % (ok, len(ops)))
    print("PASS")
finally:
    if c is not None:
        c.close()
    bed.kill()
