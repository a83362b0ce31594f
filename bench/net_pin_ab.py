#!/usr/bin/env python3
"""bench/net_pin_ab.py - `ron pin` of MIB MiB into a fresh micronode's RAM
store, interleaved between two builds, with the CPU of the provider A, of
the fetching node B, and of B's loop thread (the process's main thread;
the rest are libuv pool threads: store workers and, from session 5's
overlay change, the overlay's piece checks).

Per build: micronode A (RAM store) holds the object (`ron put`), a third
micronode C keeps the DHT up; then for each run, for each build in turn, a
fresh micronode B of that build pins the address (`ron pin`: DHT lookup,
verified overlay transfer, commit; nothing is delivered). CPU s are
utime+stime from /proc around the pin (the `ron` client not counted).
Prints one markdown table of medians and the runs. The machine is shared:
compare CPU seconds, not wall time.

Usage: bench/net_pin_ab.py NAME1=RON_BIN1 NAME2=RON_BIN2 [MIB (1024)] [RUNS (5)]
Env PIN_PERF=PATH: record B of the second build with `perf record -F 499 -g`
into PATH during its pins (the last run's profile is kept).
Every node is killed at exit (ronnode.py); every wait is bounded.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import ronnode  # noqa: E402
from ronnode import Node, check, dht_listen, free_port, ron_at, wait_for  # noqa: E402

BUILDS = [a.split("=", 1) for a in sys.argv[1:3]]
MIB = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
KEYDIR = tempfile.mkdtemp(prefix="ron-pin-ab-")
TICK = os.sysconf("SC_CLK_TCK")
PERF = os.environ.get("PIN_PERF")  # a perf.data path: `perf record -g` of the second build's B


def ron(binp, app, *args, cap=None, timeout=300):
    return ron_at(binp, app, KEYDIR, *args, timeout=timeout, cap=cap)


def micro(binp, app, seed=None):
    ronnode.RON = binp
    args = ["--profile", "micro", "--app", app, "--http", "127.0.0.1:0"]
    if seed:
        args += ["--seed", seed]
    n = Node(args, services=None).wait_up(timeout=30)
    n.wait_running("app", timeout=30)
    return n


dht_addr = dht_listen


def joined(n):
    return ((n.metric('dht_contacts{service="dht"}') or 0) >= 2
            and (n.metric('dht_bootstrapped{service="dht"}') or 0) >= 1)


def cpu(pid):
    """(process CPU s, main thread CPU s)."""
    tot = main = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                st = f.read().split(")")[-1].split()
        except OSError:
            continue
        t = (int(st[11]) + int(st[12])) / TICK
        tot += t
        if int(tid) == pid:
            main = t
    return tot, main


def cluster(binp, src):
    app_a = "127.0.0.1:%d" % free_port()
    a = micro(binp, app_a)
    seed = dht_addr(a)
    c = micro(binp, "127.0.0.1:%d" % free_port(), seed)
    dht_addr(c)
    wait_for(lambda: (a.metric('dht_bootstrapped{service="dht"}') or 0) >= 1, 30, "A joined")
    r = ron(binp, app_a, "put", src, cap=a.operator_cap())
    check(r.returncode == 0, "put on A: %r" % r.stderr)
    return a, seed, r.stdout.decode().strip()


def pin_once(binp, a, seed, addr):
    app_b = "127.0.0.1:%d" % free_port()
    b = micro(binp, app_b, seed)
    dht_addr(b)
    wait_for(lambda: joined(b), 30, "B joined the DHT")
    perf = None
    if PERF and binp == BUILDS[-1][1]:  # profile B during the second build's pins
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", PERF, "-p",
                                 str(b.proc.pid)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    a0, b0 = cpu(a.proc.pid)[0], cpu(b.proc.pid)
    t0 = time.monotonic()
    for attempt in range(12):
        r = ron(binp, app_b, "pin", addr, cap=b.operator_cap())
        if r.returncode == 0 or attempt == 11:
            break
        if b"not_found" in r.stderr and attempt < 3:
            time.sleep(1)
            t0 = time.monotonic()
            continue
        if b"timeout" not in r.stderr:
            break
    dt = time.monotonic() - t0
    check(r.returncode == 0 and b"pinned" in r.stdout, "pin: %r %r" % (r.stdout, r.stderr))
    a1, b1 = cpu(a.proc.pid)[0], cpu(b.proc.pid)
    if perf is not None:
        perf.send_signal(2)
        perf.wait(timeout=60)
    b.stop()
    b.kill()
    return dt, a1 - a0, b1[0] - b0[0], b1[1] - b0[1]


def main():
    src = os.path.join(KEYDIR, "object")
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(MIB):
            f.write(i.to_bytes(8, "little") + block[8:])
    cl = {name: cluster(binp, src) for name, binp in BUILDS}
    os.unlink(src)
    res = {name: [] for name, _ in BUILDS}
    for k in range(RUNS):
        order = BUILDS if k % 2 == 0 else BUILDS[::-1]
        for name, binp in order:
            a, seed, addr = cl[name]
            res[name].append(pin_once(binp, a, seed, addr))
            print("run %d %s: %.2f s, A %.2f, B %.2f, B loop %.2f" % ((k, name) + res[name][-1]),
                  file=sys.stderr, flush=True)
    gb = (MIB << 20) / 1e9
    print("| %d MiB, `ron pin`, fresh B | wall s | GB/s | A CPU s | B CPU s | B loop thread "
          "| B other threads |" % MIB)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _ in BUILDS:
        rs = res[name]
        med = [statistics.median(x[i] for x in rs) for i in range(4)]
        other = statistics.median(x[2] - x[3] for x in rs)
        print("| %s | %.2f | %.3f | %.2f | %.2f | %.2f | %.2f |"
              % (name, med[0], gb / med[0], med[1], med[2], med[3], other))
    print()
    for name, _ in BUILDS:
        print("%s runs (wall s / A / B / B loop): %s" % (name, "; ".join(
            "%.2f %.2f %.2f %.2f" % x for x in res[name])))
    for name in cl:
        cl[name][0].stop()
        cl[name][0].kill()


main()
