#!/usr/bin/env python3
"""The gateway as a supervised service of `ron node` (services=gateway, key
`http` on an ephemeral port): POST an object (its address is what b3sum
prints), GET a range of it back, an unknown name is 404; the gateway's counters reach the node's /metrics
with service="gateway"; kill -9 of the gateway is restarted and the object
is still served; the node stops cleanly."""
import json
import os
import signal
import subprocess

from ronnode import Node, check, free_port, wait_for

http = "127.0.0.1:%d" % free_port()
n = Node(["--set", "services=gateway", "--set", "http=" + http]).wait_up()
try:
    gw = n.wait_running("gateway")
    base = "http://" + http
    data = os.urandom(300000)
    path = os.path.join(n.dir, "obj.bin")
    with open(path, "wb") as f:
        f.write(data)

    def curl(*args):
        return subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args),
                              capture_output=True, timeout=20)

    # writes need a capability: the node's operator capability
    r = curl("-H", "Expect:", *n.auth_header(), "--data-binary", "@" + path, base + "/o")
    addr = json.loads(r.stdout)["address"]
    want = "b3:" + subprocess.run(["b3sum", "--no-names", path], capture_output=True,
                                  text=True).stdout.strip()
    check(addr == want, "POST address is b3sum's: %r %r" % (addr, want))
    r = curl("-r", "65535-65537", base + "/o/" + addr)
    check(r.stdout == data[65535:65538], "range through the node")
    r = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", base + "/n/nothing.test")
    check(r.stdout.startswith(b"404"), "unknown name 404: %r" % r.stdout)
    wait_for(lambda: (n.metric('gateway_requests_total{service="gateway"}') or 0) >= 3, 5,
             "gateway counters in the node's /metrics")

    os.kill(gw["pid"], signal.SIGKILL)
    n.wait_running("gateway", not_pid=gw["pid"], timeout=10)

    def served():
        r = curl("-o", "/dev/null", "-w", "%{http_code}", base + "/o/" + addr)
        return r.stdout == b"200"
    wait_for(served, 5, "object still served after kill -9 of the gateway")

    rc, took = n.stop()
    check(rc == 0, "node exit 0 (%r)" % rc)
finally:
    n.kill()
print("ok")
