#!/usr/bin/env python3
"""An object past 4 GiB (2^32 + 65536 + 17 bytes, so every offset and length
crosses 32 bits) round-trips through a real macronode (storage, index and
gateway as separate processes): a streamed POST /o answers 201 with the
address b3sum gives for the same bytes; GET returns exactly those bytes
(hashed as they arrive, nothing kept on disk by the test); ranges that start
past 2^32, straddle the 2^32 boundary and take the last byte answer 206
with the right bytes; HEAD gives the full Content-Length. The bytes are
generated (a distinct 1 MiB block per MiB), so the test needs the store's
4 GiB of disk and no more."""
import hashlib
import json
import http.client
import os
import subprocess
import threading

from ronnode import Node, check, free_port, wait_for

SIZE = (1 << 32) + 65536 + 17
MIB = 1 << 20
BASE = hashlib.shake_256(b"ron multi-gib").digest(MIB)


def block(i):
    return i.to_bytes(8, "little") + BASE[8:]


def byte_range(a, b):
    """The generated object's bytes a..b inclusive."""
    out = bytearray()
    i = a // MIB
    while len(out) < b - a + 1:
        blk = block(i)
        lo = a - i * MIB if not out else 0
        out += blk[lo:]
        i += 1
    return bytes(out[:b - a + 1])


def chunks():
    full, tail = divmod(SIZE, MIB)
    for i in range(full):
        yield block(i)
    yield block(full)[:tail]


def expected_address():
    p = subprocess.Popen(["b3sum", "--no-names"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for c in chunks():
        p.stdin.write(c)
    out, _ = p.communicate(timeout=300)
    return "b3:" + out.decode().strip()


def conn(addr, timeout=300):
    host, port = addr.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


want = {}
t = threading.Thread(target=lambda: want.setdefault("addr", expected_address()))
t.start()
http_addr = "127.0.0.1:%d" % free_port()
n = Node(["--set", "services=storage,index,gateway", "--http", http_addr], services_addr=False)
n.wait_up()
try:
    n.wait_running("gateway")
    # writes need a capability (issue 5): the node's operator capability as a Bearer token
    auth = {"Authorization": "Bearer " + n.operator_cap()}
    # the gateway reaches storage over ron-bus a moment after it runs: a
    # small upload answers 201 once that connection is up
    def small_put():
        c = conn(http_addr, timeout=5)
        c.request("POST", "/o", body=b"ready?", headers=auth)
        st = c.getresponse().status
        c.close()
        return st == 201
    wait_for(small_put, 10, "gateway uploads reach the storage service")
    c = conn(http_addr)
    try:
        c.request("POST", "/o", body=chunks(), headers=dict(auth, **{
            "Content-Length": str(SIZE), "Content-Type": "video/x-test"}))
    except BrokenPipeError:
        pass  # the node answered early: its answer says why
    r = c.getresponse()
    body = r.read()
    c.close()
    t.join(timeout=300)
    check(r.status == 201, "POST /o of %d bytes: %d %r" % (SIZE, r.status, body[:200]))
    addr = json.loads(body)["address"]
    check(addr == want.get("addr"), "address %s equals b3sum's %s" % (addr, want.get("addr")))

    c = conn(http_addr)
    c.request("HEAD", "/o/" + addr)
    r = c.getresponse()
    r.read()
    check(r.status == 200 and r.getheader("Content-Length") == str(SIZE),
          "HEAD: full Content-Length %s" % r.getheader("Content-Length"))

    for a, b in [((1 << 32) - 5, (1 << 32) + 5), ((1 << 32) + 1000, (1 << 32) + 60000),
                 (SIZE - 1, SIZE - 1), (3 * (1 << 30) + 12345, 3 * (1 << 30) + 12345 + 65536)]:
        c.request("GET", "/o/" + addr, headers={"Range": "bytes=%d-%d" % (a, b)})
        r = c.getresponse()
        got = r.read()
        check(r.status == 206 and got == byte_range(a, b),
              "range %d-%d: %d, %d bytes, content %s" % (a, b, r.status, len(got),
                                                       "ok" if got == byte_range(a, b) else "wrong"))
        check(r.getheader("Content-Range") == "bytes %d-%d/%d" % (a, b, SIZE),
              "Content-Range %s" % r.getheader("Content-Range"))

    c.request("GET", "/o/" + addr)
    r = c.getresponse()
    check(r.status == 200, "GET whole: %d" % r.status)
    h = subprocess.Popen(["b3sum", "--no-names"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    total = 0
    while True:
        piece = r.read(MIB)
        if not piece:
            break
        total += len(piece)
        h.stdin.write(piece)
    out, _ = h.communicate(timeout=120)
    c.close()
    check(total == SIZE, "GET whole: %d bytes of %d" % (total, SIZE))
    check("b3:" + out.decode().strip() == addr, "GET whole: the bytes hash to the address")
    rc, _ = n.stop()
    check(rc == 0, "node exit 0")
finally:
    n.kill()
print("ok")
