#!/usr/bin/env python3
"""bench/net_miss.py BUILD_DIR RUNS - how fast a node answers a GET of an
address nobody has, on a 5-node loopback cluster (tests/integration/ronnet.py:
node 0 seeds nodes 1-4, default services).

Per run: a fresh cluster; once every DHT knows the other 4 nodes and node 2's
gateway answers misses (503 while it still connects to its storage), MISSES
GETs of fresh random addresses through node 2's gateway (each answered 404
after one DHT lookup), each followed by a GET of the same address again
(answered from the storage's short "no provider" memory), then MISSES
`ron get` of fresh addresses through node 2's app port (process start
included). Prints one line per run:
  run=N fresh_ms=<median> again_ms=<median> cli_ms=<median>
"""
import os
import statistics
import sys
import time

build, runs = sys.argv[1], int(sys.argv[2])
os.environ["RON_BIN"] = os.path.join(os.path.abspath(build), "ron")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from ronnet import Cluster  # noqa: E402

MISSES = int(os.environ.get("MISSES", "10"))


def timed(fn):
    t = time.monotonic()
    r = fn()
    return r, (time.monotonic() - t) * 1000


for run in range(1, runs + 1):
    c = Cluster(5)
    try:
        c.wait_up(60).wait_dht(min_contacts=4, timeout=60)
        n2 = c.nodes[2]
        for _ in range(100):
            if n2.gw("GET", "/o/b3:" + os.urandom(32).hex())[0] == 404:
                break
            time.sleep(0.1)
        fresh, again, cli = [], [], []
        for _ in range(MISSES):
            a = "/o/b3:" + os.urandom(32).hex()
            (s, _, _), ms = timed(lambda: n2.gw("GET", a))
            if s != 404:
                raise SystemExit("net_miss: GET of an absent address answered %d" % s)
            fresh.append(ms)
            (s, _, _), ms = timed(lambda: n2.gw("GET", a))
            if s != 404:
                raise SystemExit("net_miss: the same address again answered %d" % s)
            again.append(ms)
            r, ms = timed(lambda: n2.ron("get", "b3:" + os.urandom(32).hex(), binary=True))
            if r.returncode != 1:
                raise SystemExit("net_miss: ron get of an absent address exited %d" % r.returncode)
            cli.append(ms)
        print("run=%d fresh_ms=%.2f again_ms=%.2f cli_ms=%.2f" % (
            run, statistics.median(fresh), statistics.median(again), statistics.median(cli)))
        sys.stdout.flush()
    finally:
        c.close()
