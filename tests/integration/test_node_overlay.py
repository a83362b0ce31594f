#!/usr/bin/env python3
"""The `overlay` service in real nodes: two macronodes (storage,index,app,
overlay as children, `--overlay 127.0.0.1:0`) each serve their store over
mutual TLS 1.3 on the listener the kernel binds and hands over. A peer on
the real overlay code (ovl_evil_peer --fetch) dials node A with A's node id
pinned (the id the kernel reports: the child uses the node's key) and
fetches an object put on A, whole and as a range, byte for byte; node B,
which lacks it, answers 404; a dial that pins the wrong id fails; A's
/metrics count the bytes served; after kill -9 of A's overlay child the
restarted one serves again on the same address (the kernel kept the
socket). A micronode (one process, amnesia) serves from its RAM store with
the node's own id; an overlay without a storage service answers 404. The
test peer's serve modes behave as chaos tests need: --corrupt-piece makes
fetches of that piece fail verification (502) while other ranges verify,
--rate trickles."""
import json
import os
import signal
import subprocess
import tempfile
import time

from ronnode import RON, Node, app_cap_env, check, free_port, wait_for

TMP = tempfile.mkdtemp(prefix="ron-ovl-")
EVIL = os.path.join(os.path.dirname(RON), "ovl_evil_peer")


def ron(app, *args):
    e = dict(os.environ, RON_DATA_DIR=TMP)
    e.pop("RON_ADMIN", None)
    e.pop("RON_CAP", None)
    app_cap_env(e, app)  # the node's operator capability (writes need one)
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, env=e,
                          timeout=60)


def start(extra=()):
    app = "127.0.0.1:%d" % free_port()
    n = Node(["--overlay", "127.0.0.1:0", "--app", app] + list(extra),
             services="storage,index,app,overlay").wait_up()
    n.app_addr = app
    return n


def overlay_addr(n):
    return n.wait_running("overlay")["listen"]


def fetch(node_id, addr, obj, *extra):
    out = os.path.join(TMP, "fetched")
    r = subprocess.run([EVIL, "--fetch", "%s@%s" % (node_id, addr), "--address", obj, "--out", out]
                       + list(extra), capture_output=True, timeout=30)
    line = r.stdout.decode().strip().splitlines()
    res = json.loads(line[-1]) if line else {}
    data = open(out, "rb").read() if os.path.exists(out) else b""
    return r.returncode, res, data


def put(n, data):
    src = os.path.join(TMP, "src")
    with open(src, "wb") as f:
        f.write(data)
    r = ron(n.app_addr, "put", src)
    check(r.returncode == 0, "put: %s" % r.stderr)
    return r.stdout.decode().strip()


data = os.urandom(5 * 65536 + 123)
a = start()
b = start()
try:
    a_id, b_id = a.status()["node_id"], b.status()["node_id"]
    a_addr, b_addr = overlay_addr(a), overlay_addr(b)
    check(a_addr.startswith("127.0.0.1:") and not a_addr.endswith(":0"), "bound: %s" % a_addr)
    a.wait_log("overlay: node %s on %s, advertising %s" % (a_id, a_addr, a_addr))
    obj = put(a, data)

    rc, res, got = fetch(a_id, a_addr, obj)
    check(rc == 0 and res.get("ok") is True, "fetch from A: %r" % res)
    check(got == data, "fetched bytes equal what was put (%d of %d B)" % (len(got), len(data)))
    rc, res, got = fetch(a_id, a_addr, obj, "--offset", "70000", "--length", "65536")
    check(rc == 0 and got == data[70000:70000 + 65536], "range fetch from A: %r" % res)

    rc, res, _ = fetch(b_id, b_addr, obj)
    check(rc == 1 and res.get("status") == 404, "B lacks it: 404 (%r)" % res)
    rc, res, _ = fetch(b_id, a_addr, obj)
    check(rc == 1 and res.get("status") == 503, "A's address with B's id pinned: 503 (%r)" % res)

    wait_for(lambda: (a.metric('overlay_piece_bytes_sent_total{service="overlay"}') or 0)
             >= len(data) + 65536, 5, "A's overlay_piece_bytes_sent_total counts the pieces")
    check(a.metric('overlay_sessions{service="overlay"}') is not None, "overlay_sessions exported")
    check((b.metric('overlay_piece_bytes_sent_total{service="overlay"}') or 0) == 0,
          "B served nothing")

    ov = a.wait_running("overlay")
    os.kill(ov["pid"], signal.SIGKILL)
    ov2 = a.wait_running("overlay", not_pid=ov["pid"], timeout=10)
    check(ov2["listen"] == a_addr, "same listener after restart: %s" % ov2["listen"])
    rc, res, got = fetch(a_id, a_addr, obj)
    check(rc == 0 and got == data, "fetch after the overlay's restart: %r" % res)

    for n in (a, b):
        rc, took = n.stop()
        check(rc == 0, "exit 0 (%r)" % rc)
finally:
    a.kill()
    b.kill()

m = start(["--profile", "micro"])
try:
    m_id = m.status()["node_id"]
    m_addr = overlay_addr(m)
    obj = put(m, data[:1000])
    rc, res, got = fetch(m_id, m_addr, obj)
    check(rc == 0 and got == data[:1000], "micronode serves its RAM store with its id: %r" % res)
    rc, took = m.stop()
    check(rc == 0, "micro exit 0 (%r)" % rc)
finally:
    m.kill()

# a macronode in amnesia: the overlay child's TLS identity is the node's (the kernel hands it
# the RAM-only key), so a dial pinning the node id reaches it (404: the storage child's RAM
# store is its own) instead of failing the id check (503)
am = Node(["--overlay", "127.0.0.1:0", "--amnesia"], services="overlay").wait_up()
try:
    rc, res, _ = fetch(am.status()["node_id"], overlay_addr(am), obj)
    check(rc == 1 and res.get("status") == 404,
          "macro amnesia: the overlay answers under the node's id: %r" % res)
    check(not os.path.exists(os.path.join(am.dir, "keys")), "macro amnesia: no key written")
finally:
    am.kill()

# the overlay alone (no storage service, fresh data directory): up at once, serves nothing
o = Node(["--overlay", "127.0.0.1:0"], services="overlay").wait_up()
try:
    o_addr = overlay_addr(o)
    rc, res, _ = fetch(o.status()["node_id"], o_addr, obj)
    check(rc == 1 and res.get("status") == 404, "an overlay without a store answers 404: %r" % res)
    rc, took = o.stop()
    check(rc == 0, "alone: exit 0 (%r)" % rc)
finally:
    o.kill()


def evil_serve(path, *extra):
    p = subprocess.Popen([EVIL, "--file", path] + list(extra), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    info = json.loads(p.stdout.readline())
    return p, info


src = os.path.join(TMP, "evil-src")
with open(src, "wb") as f:
    f.write(data)
p, info = evil_serve(src, "--corrupt-piece", "2")
try:
    check(info["size"] == str(len(data)), "the test peer serves the file: %r" % info)
    rc, res, _ = fetch(info["id"], info["addr"], info["address"])
    check(rc == 1 and res.get("status") == 502, "corrupted piece: 502 bad_piece (%r)" % res)
    rc, res, got = fetch(info["id"], info["addr"], info["address"], "--length", "65536")
    check(rc == 0 and got == data[:65536], "an undamaged range still verifies: %r" % res)
finally:
    p.terminate()
    check(p.wait(timeout=5) == 0, "the test peer exits 0 on SIGTERM")
p, info = evil_serve(src, "--rate", "400000")
try:
    t0 = time.monotonic()
    rc, res, got = fetch(info["id"], info["addr"], info["address"])
    took = time.monotonic() - t0
    check(rc == 0 and got == data, "trickled fetch completes: %r" % res)
    check(took >= 0.5, "--rate 400000 trickles %d B over >= 0.5 s (%.2f s)" % (len(data), took))
finally:
    p.terminate()
    p.wait(timeout=5)
r = subprocess.run([EVIL, "--help"], capture_output=True, text=True)
check(r.returncode == 0 and "--corrupt-piece" in r.stdout and "--rate" in r.stdout, "--help")
r = subprocess.run([EVIL, "--rate", "x", "--file", src], capture_output=True, text=True)
check(r.returncode == 2, "bad usage: exit 2")
print("ok")
