#!/usr/bin/env python3
"""bench/supervisor.py BUILD_DIR RUNS KILLS - kill -9 -> child healthy again.

Starts a release `ron node` whose restart policy resets the backoff after
100 ms healthy (so each kill starts from the first, 100 ms, backoff) and
whose quarantine window cannot trip during the run. For each kill: wait
until the child has been healthy for 300 ms, note the wall clock, SIGKILL
it, and take the kernel's log timestamp of the new child's HELLO ("service
echo up"): that is the moment the kernel marks it healthy again. Prints one
line per run: p50_ms=.. p99_ms=.. max_ms=..
"""
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

build, runs, kills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ron = os.path.join(build, "ron")


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


for run in range(runs):
    d = tempfile.mkdtemp(prefix="ron-bench-")
    admin = "127.0.0.1:%d" % port()
    log = open(os.path.join(d, "log"), "w+b")
    # services=echo: the node's default list is now the content and peer
    # services (on fixed ports); this bench restarts the one echo child
    node = subprocess.Popen([ron, "node", "--admin", admin, "--data-dir", d, "--amnesia",
                             "--set", "services=echo",
                             "--set", "supervisor.healthy_reset_ms=100",
                             "--set", "supervisor.quarantine_crashes=64",
                             "--set", "supervisor.quarantine_window_ms=1000",
                             "--set", "admin_limits.rate_rps=100000",
                             "--set", "admin_limits.rate_burst=100000"],
                            stdout=log, stderr=subprocess.STDOUT)
    lat = []
    try:
        def status():
            with urllib.request.urlopen("http://%s/admin/status" % admin, timeout=2) as r:
                return json.loads(r.read())["services"][0]
        t_end = time.monotonic() + 10
        while True:
            try:
                s = status()
                if s["state"] == "running" and s["healthy"]:
                    break
            except OSError:
                pass
            if time.monotonic() > t_end:
                raise SystemExit("node did not come up")
            time.sleep(0.05)
        for k in range(kills):
            time.sleep(0.3)  # > healthy_reset_ms: the backoff is back at 100 ms
            pid = s["pid"]
            pos = os.fstat(log.fileno()).st_size
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            needle = b"service echo up (pid "
            deadline = time.monotonic() + 10
            while True:
                log.seek(pos)
                data = log.read()
                i = data.find(needle)
                if i >= 0:
                    line_start = data.rfind(b"\n", 0, i) + 1
                    line_end = data.find(b"\n", i)
                    if line_end >= 0:
                        e = json.loads(data[line_start:line_end])
                        ts = datetime.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
                        ts = ts.replace(tzinfo=datetime.timezone.utc).timestamp()
                        lat.append((ts - t0) * 1000.0)
                        pos += line_end + 1
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("child not back within 10 s")
                time.sleep(0.002)
            while True:
                s = status()
                if s["pid"] != pid and s["state"] == "running" and s["healthy"]:
                    break
                time.sleep(0.01)
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=5)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()
        subprocess.run(["rm", "-rf", d])
    print("p50_ms=%.1f p99_ms=%.1f max_ms=%.1f" % (pct(lat, 0.5), pct(lat, 0.99), max(lat)),
          flush=True)
