#!/usr/bin/env python3
"""SIGSTOP the child: /healthz turns 503 naming it within 3 s, writes stop
being ready before reads (readiness degrades before collapse), 503s carry
Retry-After; SIGCONT brings it back to healthy."""
import json
import os
import signal
import time

from ronnode import Node, check, wait_for

n = Node().wait_up()
try:
    s = n.wait_running()
    st, h, b = n.get("/readyz?write=1")
    check(st == 200, "writes ready when all is well (%d %r)" % (st, b))
    st, h, b = n.get("/version")
    v = json.loads(b)
    check(st == 200 and v["version"] and v["git_commit"] and v["build_type"], "version: %r" % v)
    for dep in ("libuv", "openssl", "jansson", "zstd", "libsodium", "blake3", "http-parser",
                "nghttp2"):
        check(v["dependencies"].get(dep), "dependency %s version present: %r" % (dep, v))

    os.kill(s["pid"], signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        def unhealthy():
            r = n.get("/healthz")
            return r if r[0] == 503 else None
        st, h, b = wait_for(unhealthy, 3.0, "/healthz 503 within 3 s of SIGSTOP")
        took = time.monotonic() - t0
        check(json.loads(b).get("unhealthy") == ["echo"], "names the unhealthy service: %r" % b)
        check(h.get("retry-after"), "503 /healthz carries Retry-After")
        st, h, b = n.get("/readyz?write=1")
        check(st == 503 and h.get("retry-after"), "writes not ready while degraded: %d" % st)
        check("echo" in json.loads(b).get("reason", ""), "reason names the service: %r" % b)
        st, h, b = n.get("/readyz")
        check(st == 200, "reads still ready while only degraded: %d %r" % (st, b))
        check(not n.service()["healthy"], "status shows it unhealthy")
        check(n.metric('service_healthy{service="echo"}') == 0, "service_healthy gauge is 0")
        check('"kind":"HEALTH","service":"echo","ok":false' in n.logs().replace('\\"', '"'),
              "HEALTH{ok:false} event logged")
        print("unhealthy after %.2f s" % took)
    finally:
        os.kill(s["pid"], signal.SIGCONT)
    wait_for(lambda: n.get("/healthz")[0] == 200, 5, "healthy again after SIGCONT")
    check(n.service()["pid"] == s["pid"], "same process: a stopped child is not restarted")
    rc, took = n.stop()
    check(rc == 0, "exit 0")
finally:
    n.kill()
print("ok")
