#!/usr/bin/env python3
"""Two supervised services: each in its own process with its own metrics;
a crash of one leaves the other running and healthy; one unhealthy service
fails writes and /healthz names only it while reads stay ready; shutdown
stops them in reverse start order."""
import json
import os
import signal

from ronnode import Node, check, wait_for

n = Node(["--set", "services=echo,health"]).wait_up()
try:
    echo = n.wait_running("echo")
    health = n.wait_running("health")
    check(echo["pid"] != health["pid"], "one process per service")
    wait_for(lambda: n.metric('health_config_version{service="health"}') == 1, 3,
             "health service metrics merged with its label")

    os.kill(echo["pid"], signal.SIGKILL)
    n.wait_running("echo", not_pid=echo["pid"], timeout=5)
    h2 = n.service("health")
    check(h2["pid"] == health["pid"] and h2["healthy"] and h2["restarts"] == 0,
          "a crash of echo leaves health alone: %r" % h2)

    os.kill(health["pid"], signal.SIGSTOP)
    try:
        def degraded():
            r = n.get("/healthz")
            return r if r[0] == 503 else None
        st, h, b = wait_for(degraded, 3, "/healthz 503 within 3 s")
        check(json.loads(b)["unhealthy"] == ["health"], "names only the stuck one: %r" % b)
        check(n.get("/readyz?write=1")[0] == 503, "writes not ready")
        check(n.get("/readyz")[0] == 200, "reads ready")
    finally:
        os.kill(health["pid"], signal.SIGCONT)
    wait_for(lambda: n.get("/healthz")[0] == 200, 5, "healthy again")

    rc, took = n.stop()
    check(rc == 0 and took < 2.0, "exit 0 within 2 s (%r, %.2f s)" % (rc, took))
    stops = [e["msg"].split()[1] for e in n.log_lines()
             if e.get("svc") == "kernel" and e.get("msg", "").startswith("service ")
             and " stopped (" in e["msg"]]
    check(stops == ["health", "echo"], "reverse start order: %r" % stops)
finally:
    n.kill()
print("ok")
