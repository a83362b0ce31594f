#!/usr/bin/env python3
"""The app port (docs/protocol/app-port.md) of a real `ron node`, with a small
OAP/1 client written here from docs/protocol/oap1.md (struct-packed frames,
credit frames). Macro profile with services storage,index,app (three
children), then the micro profile (one process): HELLO, PING, puts of 0 B,
1 B and 3 MiB+17 in 1 MiB frames respecting credit (address = `b3sum`), gets
whole and ranged at 64 KiB piece boundaries (206/416), stat/list/pin/unpin,
409 bad_digest, naming publish/resolve of a record signed here (Ed25519),
the kernel's status op (same JSON as /admin/status), malformed frames
(envelope + close), the 65th stream (429), and a client that stops reading
(the app port's unsent bytes stay bounded); then kill -9 of the app child
with puts in flight (retryable failures only, restarted, retried puts succeed).
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ronnode import Node, check, fail, wait_for  # noqa: E402

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

HDR = struct.Struct(">IHHHH16sHQ")  # len ver flags code app tenant cap_len corr_id
REQ, RESP, EVENT, START, END = 0x1, 0x2, 0x4, 0x8, 0x10
WINDOW = 16
MAX_FRAME = 1048576
TENANT = b"\x00" * 15 + b"\x2a"
CAP = [b""]  # the token every START carries (the node under test's operator capability)


class Oap:
    def __init__(self, addr, hello=True):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        self.credit = {}  # corr -> credit granted to us for REQ frames
        if hello:
            self.hello()

    def close(self):
        self.s.close()

    def send(self, flags, app, corr, payload=b"", tenant=TENANT, code=0):
        cap = CAP[0] if flags & START and app != 0 else b""  # the node's operator capability
        self.s.sendall(HDR.pack(38 + len(cap) + len(payload), 1, flags, code, app, tenant,
                                len(cap), corr) + cap + payload)

    def send_json(self, flags, app, corr, obj):
        self.send(flags, app, corr, json.dumps(obj, separators=(",", ":")).encode())

    def recv(self):
        """One frame as (flags, code, app, corr, payload); None on EOF."""
        while len(self.buf) < 38 or len(self.buf) < struct.unpack(">I", self.buf[:4])[0]:
            b = self.s.recv(1 << 20)
            if not b:
                return None
            self.buf += b
        n = struct.unpack(">I", self.buf[:4])[0]
        ln, ver, flags, code, app, tenant, cap_len, corr = HDR.unpack(self.buf[:38])
        payload = self.buf[38 + cap_len:n]
        self.buf = self.buf[n:]
        return flags, code, app, corr, payload

    def recv_stream(self, corr):
        """Next frame of stream corr that is not a credit frame; credit frames are applied."""
        for _ in range(100000):
            f = self.recv()
            if f is None:
                return None
            flags, code, app, c, payload = f
            if app == 0 and flags & EVENT:
                self.credit[c] = self.credit.get(c, 0) + json.loads(payload)["frames"]
                continue
            if c == corr:
                return f
        fail("no frame for stream %d" % corr)

    def hello(self):
        self.send_json(REQ | START | END, 0, 1, {"ua": "test_app_port", "max_frame": MAX_FRAME})
        flags, code, app, corr, payload = self.recv()
        check(code == 200 and app == 0 and flags == RESP | END, "HELLO answered: %r" % code)
        return json.loads(payload)

    def call(self, app, corr, obj):
        self.send_json(REQ | START | END, app, corr, obj)
        f = self.recv_stream(corr)
        check(f is not None, "answer to %r" % obj)
        return f[1], json.loads(f[4]) if f[4] else None

    def put(self, corr, data, chunk=MAX_FRAME - 38, **fields):
        args = {"op": "put", "size": str(len(data))}
        args.update(fields)
        self.credit[corr] = WINDOW - 1
        self.send_json(REQ | START | (END if not data else 0), 1, corr, args)
        off = 0
        while off < len(data):
            while self.credit[corr] == 0:
                f = self.recv()
                check(f is not None, "connection open while waiting for credit")
                if f[2] == 0 and f[0] & EVENT:
                    self.credit[f[3]] = self.credit.get(f[3], 0) + json.loads(f[4])["frames"]
                elif f[3] == corr and f[1] >= 400:  # an error ends the put early
                    return f[1], json.loads(f[4])
            piece = data[off:off + chunk]
            off += len(piece)
            self.send(REQ | (END if off == len(data) else 0), 1, corr, piece)
            self.credit[corr] -= 1
        f = self.recv_stream(corr)
        check(f is not None and f[0] & END, "put answered")
        return f[1], json.loads(f[4])

    def get(self, corr, address, offset=None, length=None):
        args = {"op": "get", "address": address}
        if offset is not None:
            args["offset"] = str(offset)
        if length is not None:
            args["length"] = str(length)
        self.send_json(REQ | START | END, 1, corr, args)
        flags, code, app, c, payload = self.recv_stream(corr)
        meta = json.loads(payload)
        if code >= 400 or flags & END:
            return code, meta, b""
        data, frames = [], 0
        while True:
            flags, c2, app, c, payload = self.recv_stream(corr)
            check(c2 == code, "data frame status %d (meta %d)" % (c2, code))
            check(len(payload) <= 262144, "data frames at most 256 KiB")
            data.append(payload)
            frames += 1
            if flags & END:
                break
            if frames % 8 == 0:  # grant credit as we consume
                self.s.sendall(credit_frame(corr, 8))
        return code, meta, b"".join(data)


def credit_frame(corr, n):
    p = json.dumps({"frames": n, "op": "credit"}, separators=(",", ":")).encode()
    return HDR.pack(38 + len(p), 1, EVENT | REQ, 0, 0, b"\0" * 16, 0, corr) + p


def b3sum(data):
    r = subprocess.run(["b3sum", "--no-names"], input=data, capture_output=True, check=True)
    return "b3:" + r.stdout.decode().strip()


def pattern(n, seed):
    out = bytearray(n)
    x = seed
    for i in range(0, n, 4096):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i:i + 4096] = (x.to_bytes(4, "big") * 1024)[:min(4096, n - i)]
    return bytes(out)


def signed_record(key, name, addr, seq, ts):
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    nb = name.encode()
    msg = (b"ron-name-v1\0" + bytes([len(nb)]) + nb + bytes.fromhex(addr[3:]) +
           struct.pack(">QQ", seq, ts) + b"\x01" + pub + b"\x00")
    sig = key.sign(msg)
    return {"name": name, "addr": addr, "seq": str(seq), "ts": str(ts),
            "owner": "ed25519:" + pub.hex(), "sig": sig.hex()}


def app_addr(n):
    def bound():
        s = n.service("app")
        return s["listen"] if s["state"] == "running" and s["listen"] else None
    return wait_for(bound, 15, "app listener")


def exercise(n, macro):
    CAP[0] = n.operator_cap().encode()
    addr = app_addr(n)
    c = Oap(addr, hello=False)
    h = c.hello()
    check(h["max_frame"] == MAX_FRAME and h["max_inflight"] == 64 and h["transports"] == ["tcp"],
          "HELLO reply: %r" % h)
    check(c.call(0, 2, {"op": "ping"}) == (200, {}), "PING")
    # the services behind the port come up on their own; until then: 503, retryable
    probes = ((1, {"op": "stat", "address": "b3:" + "0" * 64}, 404),
              (2, {"op": "resolve", "name": "nothing.here"}, 404), (6, {"op": "status"}, 200))
    for app, req, want in probes:
        def reachable():
            code, body = c.call(app, 3, req)
            check(code in (want, 503), "probe %r: %d %r" % (req, code, body))
            check(code == want or body["retryable"], "503 is retryable")
            return code == want
        wait_for(reachable, 10, "app %d reachable" % app)

    # puts: 0 B, 1 B, 3 MiB + 17 (four 1 MiB frames, more than one credit round)
    objs = {}
    for corr, data in ((10, b""), (11, b"x"), (12, pattern(3 * 1048576 + 17, 5))):
        code, body = c.put(corr, data)
        check(code == 201, "put %d B: 201 (got %d %r)" % (len(data), code, body))
        check(body == {"address": b3sum(data), "size": str(len(data))},
              "put answer is the b3sum: %r" % body)
        objs[len(data)] = (body["address"], data)
    big_addr, big = objs[3 * 1048576 + 17]
    code, body = c.put(13, big, chunk=100000)  # small frames: many credit grants
    check(code == 200 and body["address"] == big_addr, "same bytes again: 200 (%d)" % code)

    # gets
    code, meta, data = c.get(20, big_addr)
    check(code == 200 and data == big, "whole get verified (%d, %d bytes)" % (code, len(data)))
    check(meta == {"length": str(len(big)), "offset": "0", "size": str(len(big))}, "meta %r" % meta)
    for corr, (off, ln) in enumerate(((65535, 2), (65536, 65536), (131071, 300000),
                                      (3 * 1048576, None), (0, 1))):
        code, meta, data = c.get(30 + corr, big_addr, off, ln)
        want = big[off:off + ln] if ln is not None else big[off:]
        check(code == 206 and data == want, "range %d+%r: 206 and the bytes" % (off, ln))
        check(meta["offset"] == str(off) and meta["length"] == str(len(want)), "meta %r" % meta)
    code, meta, data = c.get(40, big_addr, len(big))
    check(code == 416 and meta["code"] == "range_not_satisfiable", "offset = size: 416 %r" % meta)
    code, meta, data = c.get(41, objs[0][0])
    check(code == 200 and data == b"" and meta["size"] == "0", "empty object: 200, no bytes")
    code, meta, data = c.get(42, "b3:" + "0" * 64)
    check(code == 404 and meta["corr_id"] == "42", "unknown address: 404 envelope %r" % meta)

    # stat / list / pin / unpin (tenant 42 pins)
    code, st = c.call(1, 50, {"op": "stat", "address": big_addr})
    check(code == 200 and st["size"] == str(len(big)) and st["state"] == "pinned", "stat %r" % st)
    code, ls = c.call(1, 51, {"op": "list", "limit": "256"})
    check(code == 200 and big_addr in [o["address"] for o in ls["objects"]], "list %r" % code)
    code, p = c.call(1, 52, {"op": "unpin", "address": big_addr, "idem": "u1"})
    check(code == 200 and p == {"address": big_addr, "pins": "0"}, "unpin %r" % p)
    code, p = c.call(1, 53, {"op": "unpin", "address": big_addr, "idem": "u1"})
    check(code == 200 and p["pins"] == "0", "unpin repeated with its key: remembered answer")
    code, p = c.call(1, 54, {"op": "unpin", "address": big_addr})
    check(code == 404, "unpin again without key: 404")
    code, p = c.call(1, 55, {"op": "pin", "address": big_addr})
    check(code == 200 and p["pins"] == "1", "pin %r" % p)
    code, e = c.call(1, 56, {"op": "stat", "address": big_addr, "color": "red"})
    check(code == 400 and e["reason"] == "color", "unknown field named: %r" % e)

    # bad digest
    code, e = c.put(60, b"hello", expect="b3:" + "1" * 64)
    check(code == 409 and e["code"] == "bad_digest", "expect mismatch: 409 bad_digest %r" % e)

    # naming
    key = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    rec = signed_record(key, "photos.apptest", big_addr, 1, int(time.time()))
    code, a = c.call(2, 70, {"op": "publish", "record": rec, "idem": "pub-1"})
    check(code == 200 and a["status"] == "published", "publish %r" % a)
    code, a = c.call(2, 71, {"op": "resolve", "name": "photos.apptest"})
    check(code == 200 and a["record"]["addr"] == big_addr, "resolve %r" % a)
    bad = dict(rec, seq="2")  # signature no longer matches
    code, e = c.call(2, 72, {"op": "publish", "record": bad})
    check(code == 403 and e["reason"] == "bad_signature", "forged record: 403 %r" % e)
    code, a = c.call(2, 73, {"op": "list", "prefix": "photos."})
    check(code == 200 and [r["name"] for r in a["records"]] == ["photos.apptest"], "names %r" % a)

    # kernel
    code, st = c.call(6, 80, {"op": "status"})
    admin = n.status()
    check(code == 200 and st["node_id"] == admin["node_id"] and
          sorted(s["name"] for s in st["services"]) == sorted(s["name"] for s in admin["services"]) and
          set(st) == set(admin), "status over the app port = /admin/status: %r" % st)
    code, r = c.call(6, 83, {"op": "reload"})
    check(code == 200 and r["changed"] is False and r["version"] == admin["config_version"],
          "reload over the app port: %d %r" % (code, r))
    code, e = c.call(6, 81, {"op": "release", "service": "storage"})
    check(code == 409, "release of a running service: 409 (%d %r)" % (code, e))
    code, e = c.call(6, 82, {"op": "release", "service": "nope"})
    check(code == 404, "release of an unknown service: 404 (%d)" % code)

    # 65th stream: 429 on its corr_id, connection kept
    for i in range(64):
        c.send_json(REQ | START, 1, 1000 + i, {"op": "stat", "address": big_addr})
    c.send_json(REQ | START | END, 1, 2000, {"op": "stat", "address": big_addr})
    f = c.recv_stream(2000)
    check(f[1] == 429 and json.loads(f[4])["code"] == "quota_exhausted", "65th stream: 429")
    c.close()

    # malformed frames: envelope, then close
    c = Oap(addr)
    c.s.sendall(HDR.pack(38, 2, REQ | START | END, 0, 1, b"\0" * 16, 0, 9))  # version 2
    f = c.recv()
    check(f is not None and f[1] == 426 and json.loads(f[4])["code"] == "proto_mismatch",
          "bad version: 426 envelope")
    check(c.recv() is None, "then closed")
    c.close()
    c = Oap(addr)
    c.s.sendall(HDR.pack(38, 1, REQ, 0, 1, b"\0" * 16, 0, 33))  # data of a stream never started
    f = c.recv()
    check(f is not None and f[1] == 400 and f[3] == 33, "stream error: 400 on its corr_id")
    check(c.recv() is None, "then closed")
    c.close()
    c = Oap(addr, hello=False)
    c.send_json(REQ | START | END, 1, 5, {"op": "list"})
    f = c.recv()
    check(f is not None and f[1] == 426, "no HELLO first: 426")
    check(c.recv() is None, "then closed")
    c.close()

    # a client that asks for 24 x 3 MiB and stops reading: bounded
    c = Oap(addr)
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(24):
        c.send_json(REQ | START | END, 1, 3000 + i, {"op": "get", "address": big_addr})
    seen = []
    for _ in range(15):  # 1.5 s of heartbeats
        seen.append(n.metric('app_unsent_bytes{service="app"}') or 0)
        time.sleep(0.1)
    check(max(seen) > 0, "the stalled gets did queue output: %r" % seen)
    check(max(seen) <= 4 * 1048576 + 24 * 263000, "unsent bytes bounded: %r" % seen)
    c.close()
    # and the port still serves
    c = Oap(addr)
    check(c.call(0, 2, {"op": "ping"})[0] == 200, "still serving after the slow reader")
    c.close()
    if macro:  # a store on disk: flip one byte; it is never served
        h = big_addr[3:]
        with open(os.path.join(n.dir, "store", "objects", h[:2], h), "r+b") as f:
            f.seek(256 + 2 * 1048576 + 5)  # past the object file's 256-byte header
            b = f.read(1)
            f.seek(256 + 2 * 1048576 + 5)
            f.write(bytes([b[0] ^ 1]))
        c = Oap(addr)
        c.send_json(REQ | START | END, 1, 90, {"op": "get", "address": big_addr})
        got, last = b"", None
        for i in range(100):
            f = c.recv_stream(90)
            if f[1] >= 400:
                last = f
                break
            if i > 0:
                got += f[4]
            if i % 8 == 0:
                c.s.sendall(credit_frame(90, 8))
        check(last is not None and last[1] == 500 and last[0] & END and
              json.loads(last[4])["reason"] == "corrupt", "corrupt piece: 500 corrupt ends the get")
        check(len(got) <= 2 * 1048576 and got == big[:len(got)], "only verified bytes were sent")
        c.send_json(REQ | START | END, 1, 91, {"op": "get", "address": big_addr,
                                               "offset": str(2 * 1048576), "length": "10"})
        f1, f2 = c.recv_stream(91), c.recv_stream(91)
        check(f1[1] == 206 and not f1[0] & END, "range in the bad piece: 206 metadata first")
        check(f2[1] == 500 and f2[0] & END and json.loads(f2[4])["reason"] == "corrupt",
              "then 500 corrupt, no bytes")
        c.close()

    # metrics arrive with the next heartbeat
    def has_metrics():
        lines = n.metrics().splitlines()
        def line(name, *labels):
            return any(l.startswith(name + "{") and all(x in l for x in labels) for l in lines)
        return (line("app_requests_total", 'app="storage"', 'op="put"', 'status="201"') and
                line("app_connections", 'service="app"') and
                line("app_rejects_total", 'reason="streams"'))
    wait_for(has_metrics, 5, "app_ metrics exported")


def kill9_under_load(n):
    """kill -9 of the app child with puts in flight: clients see their connection
    fail (retry) or a retryable envelope, never a wrong answer; the supervisor
    restarts it; the storage service drops the orphaned puts; retried puts succeed."""
    addr = app_addr(n)
    pid = n.service("app")["pid"]
    data = [pattern(3 * 1048576, 100 + i) for i in range(3)]
    conns = []
    for i in range(3):
        c = Oap(addr)
        c.send_json(REQ | START, 1, 7, {"op": "put", "size": str(len(data[i]))})
        for k in range(2):
            c.send(REQ, 1, 7, data[i][k * 1048000:(k + 1) * 1048000])
        conns.append(c)
    wait_for(lambda: (n.metric('storage_open_puts{service="storage"}') or 0) >= 3, 5,
             "three puts open at the storage service")
    os.kill(pid, 9)
    for c in conns:
        try:
            while True:
                f = c.recv()
                if f is None:
                    break  # connection failure: the client retries
                if f[2] == 0 and f[0] & EVENT:
                    continue
                env = json.loads(f[4])
                check(f[1] >= 500 and env["retryable"], "only retryable errors: %r" % (f,))
        except OSError:
            pass  # reset: a connection failure
        c.close()
    s = n.wait_running("app", timeout=10, not_pid=pid)
    check(s["restarts"] >= 1, "app restarted by the supervisor: %r" % s)
    wait_for(lambda: n.metric('storage_open_puts{service="storage"}') == 0, 10,
             "orphaned puts aborted at the storage service")
    addr = app_addr(n)
    c = Oap(addr)
    for i in range(3):
        for _ in range(50):  # the restarted port reconnects to storage on its own
            code, body = c.put(20 + i, data[i])
            if code != 503:
                break
            time.sleep(0.1)
        check(code == 201 and body["address"] == b3sum(data[i]), "retried put: %d %r" % (code, body))
    c.close()


# ---- macro: three children ----
n = Node(["--set", "services=storage,index,app", "--set", "app=127.0.0.1:0"],
         services=None).wait_up()
try:
    exercise(n, True)
    kill9_under_load(n)
    rc, _ = n.stop()
    check(rc == 0, "macro node exits 0 (%r)" % rc)
finally:
    n.kill()

# ---- micro: one process, in-process services ----
m = Node(["--profile", "micro", "--set", "services=storage,index,app", "--set",
          "app=127.0.0.1:0"], services=None).wait_up()
try:
    exercise(m, False)
    rc, _ = m.stop()
    check(rc == 0, "micro node exits 0 (%r)" % rc)
finally:
    m.kill()
print("ok")
