#!/usr/bin/env python3
"""2,000 concurrent slow clients (slowloris: headers never finished) against
the admin port: connections beyond admin_limits.max_conns are refused (503 or
closed), the node does not crash, its memory stays bounded, writes stop being
ready under the load, the slow clients are cut at the header timeout, and the
port serves again afterwards."""
import os
import selectors
import socket
import time

from ronnode import Node, check, rss_kib, wait_for

CLIENTS = 2000
MAX_CONNS = 1024
HEADER_TIMEOUT_S = 3
n = Node(["--set", "admin_limits.max_conns=%d" % MAX_CONNS,
          "--set", "admin_limits.header_timeout_ms=%d" % (HEADER_TIMEOUT_S * 1000)]).wait_up()
socks = []
try:
    n.wait_running()
    base = rss_kib(n.proc.pid)
    sel = selectors.DefaultSelector()
    host, port = n.admin.rsplit(":", 1)

    # phase 1: 90 % of max_conns held -> writes not ready, reads still ready
    few = []
    for i in range(MAX_CONNS * 9 // 10):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        few.append(s)
    def write_degraded():
        r = n.try_get("/readyz?write=1")
        return r if r is not None and r[0] == 503 else None
    st, h, b = wait_for(write_degraded, 3, "writes not ready near max_conns")
    check(b"overloaded" in b and h.get("retry-after"), "reason and Retry-After: %r" % b)
    check(n.get("/readyz")[0] == 200, "reads still ready under load")
    for s in few:
        s.close()
    wait_for(lambda: (lambda r: r is not None and r[0] == 200)(n.try_get("/readyz?write=1")), 5,
             "writes ready again once the load is gone")

    # phase 2: 2,000 slow clients
    for i in range(CLIENTS):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((host, int(port)))
        except BlockingIOError:
            pass
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, i)
    # every socket ends in one of two ways: refused (503, or closed before the
    # header timeout) or held and then cut at the header timeout (408 or close)
    t0 = time.monotonic()
    state = {}  # i -> "sent" | "refused" | "cut"
    rss_checked = False
    deadline = t0 + HEADER_TIMEOUT_S + 10
    while time.monotonic() < deadline:
        if sum(1 for v in state.values() if v != "sent") >= CLIENTS:
            break
        if not rss_checked and time.monotonic() - t0 > HEADER_TIMEOUT_S / 2:
            check(n.proc.poll() is None, "node still running under load")
            grown = rss_kib(n.proc.pid) - base
            print("RssAnon growth under load: %d KiB" % grown)
            check(grown < 64 * 1024, "memory bounded: RssAnon grew %d KiB" % grown)
            rss_checked = True
        for key, ev in sel.select(timeout=0.1):
            s, i = key.fileobj, key.data
            if i not in state:
                try:
                    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                    state[i] = "sent"
                    sel.modify(s, selectors.EVENT_READ, i)
                except OSError:
                    state[i] = "refused"
                    sel.unregister(s)
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            early = time.monotonic() - t0 < HEADER_TIMEOUT_S * 0.9
            if data.startswith(b"HTTP/1.1 503") or (data == b"" and early):
                state[i] = "refused"
            else:
                state[i] = "cut"
            sel.unregister(s)
    refused = sum(1 for v in state.values() if v == "refused")
    cut = sum(1 for v in state.values() if v == "cut")
    print("refused %d, held then cut at the header timeout %d, unresolved %d"
          % (refused, cut, CLIENTS - refused - cut))
    check(rss_checked, "memory checked while the connections were held")
    check(refused >= CLIENTS - MAX_CONNS - 50, "the excess is refused (%d refused)" % refused)
    check(cut <= MAX_CONNS, "never more than max_conns held (%d)" % cut)
    check(refused + cut >= CLIENTS - 20, "every slow client refused or cut in time")
    check(n.proc.poll() is None, "node still running")
    for s in socks:
        s.close()
    socks = []
    wait_for(lambda: (lambda r: r is not None and r[0] == 200)(n.try_get("/healthz")), 10,
             "admin port serving again")
    m = n.metrics()
    rej = {l.split('reason="')[1].split('"')[0]: float(l.split()[-1])
           for l in m.splitlines() if l.startswith("admin_http_rejected_total{")}
    check(rej.get("max_conns", 0) >= CLIENTS - MAX_CONNS - 50, "refusals counted: %r" % rej)
    rc, took = n.stop()
    check(rc == 0, "exit 0")
finally:
    for s in socks:
        s.close()
    n.kill()
print("ok")
