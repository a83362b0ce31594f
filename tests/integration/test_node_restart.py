#!/usr/bin/env python3
"""kill -9 the supervised child: the kernel restarts it, publishes
SERVICE_CRASHED with the signal (seen in the node's logs), counts
service_restarts_total, and /metrics stays valid for promtool."""
import os
import shutil
import signal
import socket
import subprocess

from ronnode import Node, check, wait_for

n = Node().wait_up()
try:
    first = n.wait_running()
    check(first["pid"] != n.proc.pid, "echo runs in its own process in the macro profile")
    os.kill(first["pid"], signal.SIGKILL)
    second = n.wait_running(not_pid=first["pid"], timeout=5)
    check(second["restarts"] == 1, "restart counted in status: %r" % second)
    check(second["last_exit"].startswith("signal 9"), "last exit names the signal: %r" % second)

    crashed = [e for e in n.log_lines() if "SERVICE_CRASHED" in e.get("msg", "")]
    check(crashed, "SERVICE_CRASHED event logged")
    check('\\"service\\":\\"echo\\"' in crashed[0]["msg"] or '"service":"echo"' in crashed[0]["msg"],
          "event names the service: %r" % crashed[0])
    check("signal 9" in crashed[0]["msg"], "event gives the reason: %r" % crashed[0])

    check(n.metric('service_restarts_total{service="echo"}') == 1, "service_restarts_total counted")
    check(n.metric('service_crashes_total{service="echo"}') == 1, "service_crashes_total counted")
    check(n.metric('service_up{service="echo"}') == 1, "service_up gauge")
    # the child's own metrics arrive over ron-bus with a service label
    wait_for(lambda: n.metric('echo_config_version{service="echo"}') == 1, 3,
             "child metrics merged with service label")

    # the listener survived the restart: the kernel holds it, the new child serves it
    host, port = second["listen"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as c:
        c.settimeout(3)
        banner = c.recv(100)
        check(banner.startswith(b"ron echo"), "banner from the restarted child: %r" % banner)
        c.sendall(b"ping\n")
        check(c.recv(100) == b"ping\n", "echo works after restart")

    # a connection made while the child is down waits in the kernel-held backlog
    # and is served by the replacement: a restart loses no queued connection
    os.kill(second["pid"], signal.SIGKILL)
    with socket.create_connection((host, int(port)), timeout=3) as c:
        c.settimeout(5)
        banner = c.recv(100)
        check(banner.startswith(b"ron echo"), "queued connection served after restart: %r" % banner)
    third = n.wait_running(not_pid=second["pid"], timeout=5)
    check(third["restarts"] == 2, "second restart counted: %r" % third)

    # routes: unknown path 404, wrong method 405, both as error envelopes
    st, h, b = n.http("GET", "/nope")
    check(st == 404 and h.get("content-type") == "application/json", "404 envelope: %r" % b)
    st, h, b = n.http("POST", "/metrics")
    check(st == 405, "POST /metrics is 405 (got %d)" % st)
    st, h, b = n.http("GET", "/admin/reload")
    check(st == 405, "GET /admin/reload is 405 (got %d)" % st)

    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=n.metrics(), text=True,
                           capture_output=True, timeout=20)
        check(r.returncode == 0, "promtool check metrics: %s %s" % (r.stdout, r.stderr))
    rc, took = n.stop()
    check(rc == 0, "node exits 0 (got %r)" % rc)
finally:
    n.kill()
print("ok")
