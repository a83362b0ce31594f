#!/usr/bin/env python3
"""Uploads stream through the gateway with bounded memory (macro profile,
`services=storage,index,gateway`: the gateway sends each piece to the
storage service over ron-bus; then `services=gateway`: the gateway writes
its own store). A 256 MiB POST /o, sent with a Content-Length and again
chunked, answers 201 with the address b3sum gives, while the gateway's
RssAnon, sampled during the upload, stays within a few MiB of its value
before (the old path buffered the whole body, and capped it at 16 MiB); a
PUT of those bytes at another address answers 409 bad_digest and leaves no
temporary file; a client that disconnects mid-upload leaves no temporary
file and the gateway serves on."""
import hashlib
import http.client
import os
import subprocess
import threading
import time

from ronnode import Node, check, free_port, rss_kib, wait_for

SIZE = 256 << 20
BLOCK = hashlib.shake_256(b"ron upload").digest(1 << 20)  # 1 MiB, repeated
RSS_SLACK_KIB = 8 << 10  # "a few MiB": one piece per upload plus allocator noise
# a small ASan quarantine, so freed pieces do not look like growth
ENV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"}


def b3_of_stream():
    p = subprocess.Popen(["b3sum", "--no-names"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for _ in range(SIZE // len(BLOCK)):
        p.stdin.write(BLOCK)
    out, _ = p.communicate(timeout=60)
    return "b3:" + out.decode().strip()


def blocks(n, cut_after=None):
    for i in range(n // len(BLOCK)):
        if cut_after is not None and i * len(BLOCK) >= cut_after:
            return
        yield BLOCK


CAP = [""]  # the running node's operator capability


def upload(http_addr, method, path, chunked=False, size=SIZE, timeout=60):
    host, port = http_addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = {"Content-Type": "application/x-test", "Authorization": "Bearer " + CAP[0]}
    if not chunked:
        hdrs["Content-Length"] = str(size)
    c.request(method, path, body=blocks(size), headers=hdrs, encode_chunked=chunked)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def tmp_files(n):
    d = os.path.join(n.dir, "store", "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def measure(n, pid, fn):
    """Run fn while sampling pid's RssAnon; return (fn's result, growth in KiB)."""
    base = rss_kib(pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    try:
        res = fn()
    finally:
        done.set()
        t.join()
    return res, peak[0] - base


def scenario(services, addr):
    http_addr = "127.0.0.1:%d" % free_port()
    n = Node(["--set", "services=" + services, "--set", "http=" + http_addr], env=ENV).wait_up()
    try:
        CAP[0] = n.operator_cap()  # uploads need a capability: the operator's
        n.wait_running("gateway")
        if "storage" in services:
            n.wait_running("storage")
        # warm up (and wait for the gateway's bus connection to storage)
        def small_ok():
            try:
                st, _ = upload(http_addr, "POST", "/o", size=len(BLOCK), timeout=5)
            except OSError:
                return False
            return st == 201
        wait_for(small_ok, 20, "a first small upload")
        # the gateway that answered (a loaded machine may have restarted it once
        # while storage created the store)
        gw = n.wait_running("gateway")
        pid = gw["pid"]
        for chunked in (False, True):
            t0 = time.monotonic()
            (st, body), grown = measure(n, pid, lambda: upload(http_addr, "POST", "/o",
                                                               chunked=chunked))
            check(st == 201, "%s: 256 MiB POST (chunked=%s) is 201: %d %r" %
                  (services, chunked, st, body))
            check(('"address":"%s"' % addr).encode() in body,
                  "%s: the address is b3sum's: %r" % (services, body))
            check(grown <= RSS_SLACK_KIB, "%s: gateway RssAnon grew %d KiB during a 256 MiB "
                  "upload (chunked=%s)" % (services, grown, chunked))
            print("%s chunked=%s: %.1f s, RssAnon +%d KiB" %
                  (services, chunked, time.monotonic() - t0, grown))
        # wrong address: 409 bad_digest, nothing stored, no temporary file
        bad = "/o/b3:" + "0" * 64
        st, body = upload(http_addr, "PUT", bad, size=8 << 20)
        check(st == 409 and b"bad_digest" in body, "%s: PUT at a wrong address is 409: %d %r" %
              (services, st, body))
        st, _ = upload(http_addr, "PUT", "/o/" + addr, size=SIZE)
        check(st == 200, "%s: PUT of the stored object is 200: %d" % (services, st))
        # a client leaving mid-upload: the put is aborted, its temporary files go
        host, port = http_addr.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.putrequest("POST", "/o")
        c.putheader("Authorization", "Bearer " + CAP[0])
        c.putheader("Content-Length", str(SIZE))
        c.endheaders()
        for b in blocks(SIZE, cut_after=16 << 20):
            c.send(b)
        wait_for(lambda: tmp_files(n), 5, "the upload staged in store/tmp")
        c.close()
        wait_for(lambda: not tmp_files(n), 10, "no temporary file after the client left")
        check(gw["pid"] == n.service("gateway")["pid"], "%s: the gateway did not restart" %
              services)
        st, _ = upload(http_addr, "POST", "/o", size=len(BLOCK), timeout=5)
        check(st == 201, "%s: uploads go on after a client left: %d" % (services, st))
    finally:
        n.kill()


addr = b3_of_stream()
scenario("storage,index,gateway", addr)
scenario("gateway", addr)
print("ok")
