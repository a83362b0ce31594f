#!/usr/bin/env python3
"""bench/net_macro.py - issue 4's macronode transfer target with real `ron
node` processes on loopback (bench/net_macro.sh runs it; markdown on stdout).

Node A (micronode, amnesia: RAM store) holds an object of MIB MiB (`ron put`
with A's operator capability); node C keeps A's DHT bootstrapped so A's
provider record is stored at put time. Each run, for each `ron` binary given
(interleaved, so a before/after pair shares the machine's state):

  1. a fresh macronode B (default profile: separate kernel, storage,
     overlay, gateway, app... processes; a file store on disk) seeded with
     A's DHT address;
  2. the disk floor into B's data directory, in the same run:
     `dd if=/dev/zero of=<B data dir>/ddfile bs=1M count=MIB conv=fsync`;
  3. `ron pin ADDR` (B's operator capability), the primary figure for
     "into a macronode": B misses, finds A in the DHT, its overlay process
     fetches and verifies every piece over mutual TLS, hands them to its
     storage process over the unix-socket bus, and storage writes the file
     partial and commits the object durably; the pin answers once it is
     committed. When pin answers not found for an absent object (a build
     without the fetching pin) the row is skipped and said so;
  4. a second fresh macronode B', the same dd, and `ron get ADDR` through
     B''s app port, stdout to /dev/null (the same fetch, plus delivery: the
     app streams it out while storage stores it, and the client verifies
     the whole object again).

For every fetch it records the wall time and the CPU seconds (utime + stime
from /proc/<pid>/stat) of B's overlay, storage and app processes, per GiB.
With PERF_DIR set, one extra fetch per binary (a pin; PERF_HOW=get for a
get) runs under `perf record -g` on B's overlay and storage processes
(PERF_DIR/<tag>-*.data).

Usage: bench/net_macro.py MIB RUNS TAG=RON_BIN [TAG=RON_BIN ...]
Every node is killed at exit (ronnode.py); every wait is bounded; the whole
run stops after BENCH_TIMEOUT s (default 3600).
"""
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
if len(sys.argv) < 4:
    sys.exit("usage: net_macro.py MIB RUNS TAG=RON_BIN [TAG=RON_BIN ...]")
MIB = int(sys.argv[1])
RUNS = int(sys.argv[2])
BINS = []
for a in sys.argv[3:]:
    tag, path = a.split("=", 1)
    BINS.append((tag, os.path.abspath(path)))
os.environ["RON_BIN"] = BINS[0][1]

import ronnode  # noqa: E402
from ronnode import Node, check, dht_listen, free_port, ron_at, wait_for  # noqa: E402

KEYDIR = tempfile.mkdtemp(prefix="ron-netmacro-")
PERF_DIR = os.environ.get("PERF_DIR")
TICK = os.sysconf("SC_CLK_TCK")
GIB = (MIB << 20) / float(1 << 30)
PROVIDER = []  # the pid of provider A (a micronode: one process)
PIN_MSG = []   # what `ron pin` said when it did not fetch
PERF_HOW = os.environ.get("PERF_HOW", "pin")


class Timeout(Exception):
    pass


def on_alarm(sig, frame):
    raise Timeout("bench/net_macro.py: BENCH_TIMEOUT reached")


def ron(binary, app, *args, stdout=subprocess.PIPE, timeout=600, cap=None):
    """`ron ARGS --node app`; cap: the capability to send (RON_CAP), else none."""
    return ron_at(binary, app, KEYDIR, *args, stdout=stdout, timeout=timeout, cap=cap)


dht_addr = dht_listen


def bootstrapped(n):
    return (n.metric('dht_bootstrapped{service="dht"}') or 0) >= 1


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().split(")")[-1].split()
        return (int(st[11]) + int(st[12])) / float(TICK)
    except OSError:
        return 0.0


def micro(app, seed=None):
    args = ["--profile", "micro", "--app", app, "--http", "127.0.0.1:0"]
    if seed:
        args += ["--seed", seed]
    n = Node(args, services=None).wait_up(timeout=30)
    n.wait_running("app", timeout=30)
    return n


def macro(binary, seed):
    """A fresh macronode B running `binary`, joined to the DHT."""
    ronnode.RON = binary
    app = "127.0.0.1:%d" % free_port()
    b = Node(["--app", app, "--http", "127.0.0.1:0", "--seed", seed],
             services=None).wait_up(timeout=30)
    for svc in ("storage", "overlay", "app"):
        b.wait_running(svc, timeout=30)
    dht_addr(b)
    wait_for(lambda: (b.metric('dht_contacts{service="dht"}') or 0) >= 2 and bootstrapped(b),
             30, "B joined the DHT")
    b.app = app
    b.pids = {svc: b.service(svc)["pid"] for svc in ("storage", "overlay", "app")}
    return b


def dd_floor(b):
    path = os.path.join(b.data_dir, "ddfile")
    subprocess.run(["sync"], check=True, timeout=120)
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=%d" % MIB,
                    "conv=fsync", "status=none"], check=True, timeout=300)
    dt = time.monotonic() - t0
    os.unlink(path)
    subprocess.run(["sync"], check=True, timeout=120)
    return dt


def store_has(b, binary, addr):
    """Is the object whole in B's store? (`ron stat` on B's app port)."""
    r = ron(binary, b.app, "stat", addr, cap=b.operator_cap(), timeout=30)
    return r.returncode == 0


def fetch(b, binary, addr, how, perf_tag=None):
    """Time one fetch on miss into B; returns (seconds until the object is
    whole in B's store, seconds until the command returned, {svc: cpu s}) or
    None when `how` is pin and pin does not fetch an absent object."""
    before = {svc: cpu_s(pid) for svc, pid in b.pids.items()}
    before["provider"] = cpu_s(PROVIDER[0]) if PROVIDER else 0.0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    perf = []
    if perf_tag:
        for svc in ("overlay", "storage"):
            out = os.path.join(PERF_DIR, "%s-%s.data" % (perf_tag, svc))
            perf.append(subprocess.Popen(["perf", "record", "-g", "-q", "-o", out, "-p",
                                          str(b.pids[svc])], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
        time.sleep(0.5)
    t0 = time.monotonic()
    if how == "get":
        with open(os.devnull, "wb") as null:
            r = ron(binary, b.app, "get", addr, stdout=null)
    else:
        r = ron(binary, b.app, "pin", addr, cap=b.operator_cap())
    dt = time.monotonic() - t0
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (ru2.ru_utime - ru.ru_utime) + (ru2.ru_stime - ru.ru_stime)
    ok = r.returncode == 0
    # the target counts the transfer into B's store: a get may deliver its last
    # bytes before storage has committed the object (made it durable), so the
    # clock runs until `ron stat` finds it whole (polled; ~10 ms a poll)
    if ok:
        wait_for(lambda: store_has(b, binary, addr), 120, "the object whole in B's store")
    dstore = time.monotonic() - t0
    after = {svc: cpu_s(pid) for svc, pid in b.pids.items()}
    after["provider"] = cpu_s(PROVIDER[0]) if PROVIDER else 0.0
    after["client"], before["client"] = client, 0.0
    for p in perf:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    if how == "pin" and r.returncode != 0 and (b"not_found" in r.stderr or b"404" in r.stderr
                                                or b"not found" in r.stderr):
        PIN_MSG.append(r.stderr.decode(errors="replace").strip())
        return None
    check(ok, "ron %s %s on B: %r; node log tail:\n%s"
          % (how, addr, r.stderr, b.logs()[-3000:]))
    return dstore, dt, {svc: after[svc] - before[svc] for svc in after}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    size = MIB << 20
    src = os.path.join(KEYDIR, "object")
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(MIB):
            f.write(i.to_bytes(8, "little") + block[8:])
    prov_bin = BINS[-1][1]
    ronnode.RON = prov_bin
    app_a = "127.0.0.1:%d" % free_port()
    a = micro(app_a)
    PROVIDER.append(a.proc.pid)
    seed = dht_addr(a)
    c = micro("127.0.0.1:%d" % free_port(), seed)
    dht_addr(c)
    wait_for(lambda: bootstrapped(a) and bootstrapped(c), 30, "A and C joined the DHT")
    r = ron(prov_bin, app_a, "put", src, cap=a.operator_cap())
    check(r.returncode == 0, "put on A: %r" % r.stderr)
    addr = r.stdout.decode().strip()
    os.unlink(src)

    res = {tag: {"dd": [], "get": [], "pin": [], "cget": [], "cpin": [], "dget": [], "dpin": [],
                 "rget": [], "rpin": [], "pin_skip": 0}
           for tag, _ in BINS}
    for run in range(RUNS):
        for tag, binary in BINS:
            rs = res[tag]
            for how in ("pin", "get"):
                if how == "pin" and rs["pin_skip"] > 0:
                    continue
                b = macro(binary, seed)
                try:
                    rs["dd"].append(dd_floor(b))
                    got = fetch(b, binary, addr, how)
                finally:
                    b.stop(timeout=20)
                    b.kill()
                if got is None:
                    rs["pin_skip"] += 1
                    continue
                rs[how].append(got[0])
                rs["r" + how].append(rs["dd"][-1] / got[0])
                rs["d" + how].append(got[1])
                rs["c" + how].append(got[2])
            print("run %d %s: dd %.2f pin %s get %.2f; storage CPU s/GiB pin %s get %.2f" % (
                run, tag, rs["dd"][-1],
                "%.2f" % rs["pin"][-1] if rs["pin"] and rs["pin_skip"] == 0 else "-",
                rs["get"][-1],
                "%.2f" % (rs["cpin"][-1]["storage"] / GIB) if rs["cpin"] and rs["pin_skip"] == 0
                else "-", rs["cget"][-1]["storage"] / GIB),
                file=sys.stderr, flush=True)
    profiles = {}
    if PERF_DIR:
        for tag, binary in BINS:
            b = macro(binary, seed)
            try:
                got = fetch(b, binary, addr, PERF_HOW, perf_tag=tag)
                profiles[tag] = got
            finally:
                b.stop(timeout=20)
                b.kill()
    for n in (a, c):
        n.stop()
        n.kill()

    gb = size / 1e9
    print("### Two nodes: %d MiB fetched on miss into a fresh macronode's file store" % MIB)
    print()
    print("Floor: `dd if=/dev/zero of=<B's data dir>/ddfile bs=1M count=%d conv=fsync`, once"
          " per fetch, just before it, on the same fresh node's directory. Target: the transfer"
          " into B's store >= 0.8x the floor's rate; the clock runs from the command's start"
          " until `ron stat` on B finds the object whole in its store (committed durably;"
          " polled, ~10 ms a poll); \"command s\" is when the command itself returned (a get"
          " may deliver its last bytes before the commit). CPU: utime + stime of B's"
          " processes (/proc/PID/stat) over the same span, per GiB." % MIB)
    print()
    print("| build | what | median s (in store) | median GB/s | x dd floor (medians) |"
          " median of per-run x dd | floor median s (GB/s) | command median s |"
          " runs (s, in store) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for tag, _ in BINS:
        rs = res[tag]
        ddm = med(rs["dd"])
        for how, what in (("pin", "**`ron pin`** (fetch into the store, no delivery: the target)"),
                          ("get", "`ron get` (delivery to the client included)")):
            xs = rs[how]
            if not xs:
                print("| %s | %s | - | - | - | - | %.2f (%.3f) | - | skipped: pin of an absent object"
                      " answered not found (no fetching pin in this build): `%s` |"
                      % (tag, what, ddm, gb / ddm, PIN_MSG[0] if PIN_MSG else ""))
                continue
            print("| %s | %s | %.2f | %.3f | %.2fx | %.2fx | %.2f (%.3f) | %.2f | %s |" % (
                tag, what, med(xs), gb / med(xs), ddm / med(xs), med(rs["r" + how]), ddm, gb / ddm,
                med(rs["d" + how]), " ".join("%.2f" % x for x in xs)))
    print()
    print("CPU seconds per GiB (median over the runs) of B's overlay, storage and app processes,"
          " their sum, provider A (a micronode, one process) and the `ron` client command"
          " (which verifies the whole object again):")
    print()
    print("| build | what | overlay | storage | app | B total | provider A | client |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for tag, _ in BINS:
        rs = res[tag]
        for how in ("pin", "get"):
            cs = rs["c" + how]
            if not cs:
                continue
            print("| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
                tag, how, med([x["overlay"] for x in cs]) / GIB,
                med([x["storage"] for x in cs]) / GIB, med([x["app"] for x in cs]) / GIB,
                med([x["overlay"] + x["storage"] + x["app"] for x in cs]) / GIB,
                med([x["provider"] for x in cs]) / GIB, med([x["client"] for x in cs]) / GIB))
    print()
    print("dd floor runs (s): " + "; ".join(
        "%s %s" % (tag, " ".join("%.2f" % x for x in res[tag]["dd"])) for tag, _ in BINS))
    print()
    for tag, got in profiles.items():
        print("perf run (%s): %s %.2f s under `perf record -g` on overlay and storage; "
              "data in %s/%s-{overlay,storage}.data" % (tag, PERF_HOW, got[0], PERF_DIR, tag))
        print()


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(os.environ.get("BENCH_TIMEOUT", "3600")))
    try:
        main()
    finally:
        signal.alarm(0)
        ronnode._cleanup()
        subprocess.run(["rm", "-rf", KEYDIR])
