#!/usr/bin/env python3
"""bench/memory_idle.py BUILD_DIR RUNS - idle RssAnon of the content-plane profiles.

micro: `ron node --profile micro` (amnesia, RAM store and index, empty) with
       the services storage,index,gateway (and app when the binary has it),
       one process.
macro: `ron node` (persistent data dir in a fresh temp dir) with the same
       services, one child each; the sum over the kernel and its children.
micro+https: the micronode with --https on an ephemeral port (RAM-made
       certificate, OpenSSL's secure heap).
All measured 3 s after every service is running and healthy; listeners on
ephemeral ports. Prints one line per run and profile:
  profile=micro total_kib=.. vmrss_kib=.. procs=N detail=name:kib,...
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


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss(pid, field="RssAnon"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def has_app():
    """`ron service app` outside a node: 2 either way, but only an unknown
    service says so."""
    r = subprocess.run([ron, "service", "app"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("RON_")})
    return "unknown service" not in r.stderr


SERVICES = "storage,index,gateway" + (",app" if has_app() else "")


def start(profile, https=False):
    d = tempfile.mkdtemp(prefix="ron-bench-idle-")
    admin = "127.0.0.1:%d" % port()
    argv = [ron, "node", "--profile", profile, "--admin", admin, "--data-dir", d,
            "--set", "services=" + SERVICES, "--set", "http=127.0.0.1:0",
            "--set", "app=127.0.0.1:0"] + (["--https", "127.0.0.1:0"] if https else [])
    node = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen("http://%s/admin/status" % admin, timeout=2) as r:
                svcs = json.loads(r.read())["services"]
            if all(s["state"] == "running" and s["healthy"] for s in svcs):
                return node, svcs, d
        except OSError:
            pass
        if node.poll() is not None or time.monotonic() > t_end:
            node.kill()
            raise SystemExit("%s node did not come up" % profile)
        time.sleep(0.05)


def stop(node, d):
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=5)
    except subprocess.TimeoutExpired:
        node.kill()
    subprocess.run(["rm", "-rf", d])


for run in range(runs):
    for profile, https in (("micro", False), ("macro", False), ("micro", True)):
        node, svcs, d = start(profile, https)
        try:
            time.sleep(3)
            pids = [("kernel", node.pid)] + [(s["name"], s["pid"]) for s in svcs
                                             if s["pid"] != node.pid]
            parts = [(name, rss(pid)) for name, pid in pids]
            vmrss = sum(rss(pid, "VmRSS") for _, pid in pids)
        finally:
            stop(node, d)
        print("profile=%s%s total_kib=%d vmrss_kib=%d procs=%d services=%s detail=%s" % (
            profile, "+https" if https else "", sum(k for _, k in parts), vmrss, len(parts),
            SERVICES, ",".join("%s:%d" % p for p in parts)))
        sys.stdout.flush()
