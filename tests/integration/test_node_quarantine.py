#!/usr/bin/env python3
"""Six crashes within 60 s quarantine the service (status, metrics, logs,
readiness); `ron release echo` lets it run again; releasing a service that is
not quarantined fails with exit 1; an unknown one too."""
import os
import signal
import time

from ronnode import Node, check, wait_for

n = Node().wait_up()
try:
    pid = n.wait_running()["pid"]
    t0 = time.monotonic()
    for i in range(6):
        os.kill(pid, signal.SIGKILL)
        if i < 5:
            # backoff 100, 200, 400, 800, 1600 ms (with jitter below nominal)
            pid = n.wait_running(not_pid=pid, timeout=6)["pid"]
    s = wait_for(lambda: (lambda x: x if x["state"] == "quarantined" else None)(n.service()), 5,
                 "quarantined after the 6th crash")
    check(time.monotonic() - t0 < 60, "six crashes fit in the 60 s window")
    check(s["pid"] == 0 and not s["healthy"], "no process while quarantined: %r" % s)
    time.sleep(0.5)
    check(n.service()["state"] == "quarantined", "stays quarantined (no restart)")
    check(n.metric('service_quarantined{service="echo"}') == 1, "quarantine visible in metrics")
    check(n.metric('service_restarts_total{service="echo"}') == 5, "5 restarts before quarantine")
    check("quarantined" in n.logs(), "quarantine logged")
    check(n.get("/healthz")[0] == 503, "health shows it")
    check(n.get("/readyz")[0] == 503, "reads not ready: nothing can serve")
    st = n.ron("status")
    check(st.returncode == 0 and "quarantined" in st.stdout, "ron status shows it: %r" % st.stdout)
    st = n.ron("status", "--json")
    check(st.returncode == 0 and '"state":"quarantined"' in st.stdout, "status --json shows it")

    r = n.ron("release", "echo")
    check(r.returncode == 0, "ron release exits 0: %r %r" % (r.stdout, r.stderr))
    n.wait_running(timeout=5)
    check(n.metric('service_quarantined{service="echo"}') == 0, "quarantine gauge cleared")
    r = n.ron("release", "echo")
    check(r.returncode == 1 and "not quarantined" in r.stderr, "second release fails: %r" % r.stderr)
    r = n.ron("release", "nosuch")
    check(r.returncode == 1, "unknown service: exit 1")
    r = n.ron("release")
    check(r.returncode == 2, "missing argument: exit 2")
    # the policy's history is cleared: one more crash is an ordinary restart
    pid = n.service()["pid"]
    os.kill(pid, signal.SIGKILL)
    n.wait_running(not_pid=pid, timeout=5)
    rc, took = n.stop()
    check(rc == 0, "exit 0")
finally:
    n.kill()
print("ok")
