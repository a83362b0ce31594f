#!/usr/bin/env python3
"""SIGTERM and SIGINT: SHUTDOWN published, children stopped, node exits 0
within 2 s and leaves no child behind. A child that ignores SIGTERM (here:
SIGSTOPped) is SIGKILLed within the budget. The micro profile runs the
service in-process. Bad flags and bad config exit 2."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from ronnode import RON, Node, check, pid_alive, wait_for

for sig in (signal.SIGTERM, signal.SIGINT):
    n = Node().wait_up()
    try:
        pid = n.wait_running()["pid"]
        rc, took = n.stop(sig)
        check(rc == 0, "exit 0 after signal %d (got %r)" % (sig, rc))
        check(took < 2.0, "exit within 2 s (took %.2f s)" % took)
        check(not pid_alive(pid), "child %d gone" % pid)
        check('"kind":"SHUTDOWN"' in n.logs().replace('\\"', '"'), "SHUTDOWN event logged")
        with open(os.path.join(n.dir, "FORMAT")) as f:
            check(f.read() == "1\n", "persistent data dir has its FORMAT file")
        print("signal %d: exit in %.3f s" % (sig, took))
    finally:
        n.kill()

# a child that cannot react to SIGTERM is killed; still within 2 s
n = Node().wait_up()
try:
    pid = n.wait_running()["pid"]
    os.kill(pid, signal.SIGSTOP)
    rc, took = n.stop()
    check(rc == 0 and took < 2.0, "exit 0 within 2 s with a stuck child (%r, %.2f s)" % (rc, took))
    check(not pid_alive(pid), "stuck child killed")
    print("stuck child: exit in %.3f s" % took)
finally:
    n.kill()

# micro profile: same service, one process
n = Node(["--profile", "micro"]).wait_up()
try:
    st = n.status()
    check(st["profile"] == "micro" and st["amnesia"] is True, "micro, amnesia on: %r" % st)
    s = n.service()
    check(s["pid"] == n.proc.pid and s["state"] == "running", "in-process service: %r" % s)
    check(n.child_pids() == [], "no child processes in micro")
    check(not os.path.exists(os.path.join(n.dir, "FORMAT")), "amnesia writes nothing")
    wait_for(lambda: n.metric('echo_config_version{service="echo"}') == 1, 3,
             "in-process metrics merged (first heartbeat)")
    check("ron-bus in-process" in n.logs(), "micro runs services over the in-process bus")
    # an in-process host that goes away is restarted like a child
    r = n.ron("release", "echo")
    check(r.returncode == 1, "release of a running service fails")
    rc, took = n.stop()
    check(rc == 0 and took < 2.0, "micro exits 0 within 2 s")
finally:
    n.kill()

# a data dir of an unknown layout version: refuse to start (exit 1)
d = tempfile.mkdtemp(prefix="ron-it-")
with open(os.path.join(d, "FORMAT"), "w") as f:
    f.write("99\n")
r = subprocess.run([RON, "node", "--data-dir", d, "--admin", "127.0.0.1:0"], capture_output=True,
                   text=True, timeout=10)
shutil.rmtree(d, ignore_errors=True)
check(r.returncode == 1 and "layout version '99'" in r.stderr, "unknown FORMAT refused: %r" % r)

# usage errors and bad input: exit 2 with a one-line reason
for args, needle in ((["node", "--bogus"], "unknown flag"),
                     (["node", "--admin", "nowhere"], "key 'admin'"),
                     (["node", "--set", "nope=1"], "unknown key 'nope'"),
                     (["node", "--config", "/nonexistent/x.json"], "x.json"),
                     (["node", "--profile", "mega"], "profile")):
    r = subprocess.run([RON] + args, capture_output=True, text=True, timeout=10)
    check(r.returncode == 2, "%r exits 2 (got %d, %r)" % (args, r.returncode, r.stderr))
    check(needle in r.stderr, "%r names the problem: %r" % (args, r.stderr))
r = subprocess.run([RON, "node", "--help"], capture_output=True, text=True, timeout=10)
check(r.returncode == 0 and "RON_" in r.stdout and "admin_limits.max_conns" in r.stdout,
      "ron node --help lists the keys")
r = subprocess.run([RON, "status", "--admin", "127.0.0.1:1"], capture_output=True, text=True,
                   timeout=10)
check(r.returncode == 1 and r.stderr.count("\n") == 1, "status of no node: exit 1, one line")
r = subprocess.run([RON, "service", "echo"], capture_output=True, text=True, timeout=10,
                   env={k: v for k, v in os.environ.items() if not k.startswith("RON_BUS")})
check(r.returncode == 2, "ron service by hand: exit 2")
print("ok")
