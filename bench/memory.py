#!/usr/bin/env python3
"""bench/memory.py BUILD_DIR RUNS - anonymous RSS (RssAnon) of release builds.

idle: `ron node` (kernel) plus its `echo` child, 3 s after both are healthy;
      the sum of the two processes.
slow: the kernel while its admin port holds 2,000 slow connections (request
      head sent but never finished; max_conns raised to 4096 and the header
      timeout to 60 s so that they are held, not refused or cut).
Prints one line per run: idle_kib=.. kernel_kib=.. child_kib=.. slow_kib=..
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

build, runs = sys.argv[1], int(sys.argv[2])
ron = os.path.join(build, "ron")
SLOW = 2000


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def start(extra):
    d = tempfile.mkdtemp(prefix="ron-bench-")
    admin = "127.0.0.1:%d" % port()
    # services=echo: the node's default list is now the content and peer
    # services (on fixed ports); this bench measures the kernel + one echo child
    node = subprocess.Popen([ron, "node", "--admin", admin, "--data-dir", d,
                             "--set", "services=echo"] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen("http://%s/admin/status" % admin, timeout=2) as r:
                s = json.loads(r.read())["services"][0]
            if s["state"] == "running" and s["healthy"]:
                return node, admin, s["pid"], d
        except OSError:
            pass
        if time.monotonic() > t_end:
            node.kill()
            raise SystemExit("node did not come up")
        time.sleep(0.05)


def stop(node, d):
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=5)
    except subprocess.TimeoutExpired:
        node.kill()
    subprocess.run(["rm", "-rf", d])


for run in range(runs):
    node, admin, child, d = start([])
    try:
        time.sleep(3)
        k, c = rss(node.pid), rss(child)
    finally:
        stop(node, d)
    node, admin, child, d = start(["--set", "admin_limits.max_conns=4096",
                                   "--set", "admin_limits.header_timeout_ms=60000"])
    socks = []
    try:
        host, p = admin.rsplit(":", 1)
        for i in range(SLOW):
            s = socket.create_connection((host, int(p)), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        time.sleep(1)
        with urllib.request.urlopen("http://%s/metrics" % admin, timeout=5) as r:
            held = [l for l in r.read().decode().splitlines()
                    if l.startswith("admin_http_connections ")]
        slow = rss(node.pid)
    finally:
        for s in socks:
            s.close()
        stop(node, d)
    print("idle_kib=%d kernel_kib=%d child_kib=%d slow_kib=%d held=%s" %
          (k + c, k, c, slow, held[0].split()[-1] if held else "?"), flush=True)
