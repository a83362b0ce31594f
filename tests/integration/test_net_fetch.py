#!/usr/bin/env python3
"""Fetch on miss across three real nodes on loopback.

Node A (macro) and node B (micro) hold an object put on them; node C (macro)
holds nothing. A GET through C's gateway finds the providers in the DHT,
fetches the pieces over the overlay, verifies them and serves the exact
bytes; a Range GET is served too; `ron get` through C's app port gets the
whole object; C then holds it as cache (state cache, no pins) and announces
it. The micronode B fetches an object only A holds (gateway and app port). A
fresh object smaller than a chunk is fetched with probes past its end that
charge no provider, and its bytes leave C's storage once.
With a 48 MiB object on A and B, B is killed -9 while `ron get` on C is
fetching from it: the get completes from A, and both providers' overlay
piece counters show they served part of it. A GET of an address nobody
holds is 404 after the lookup.
"""
import hashlib
import os
import subprocess
import tempfile
import time

from ronnode import RON, Node, app_cap_env, check, free_port, wait_for

SERVICES = "services=storage,index,gateway,app,dht,overlay"


def dht_addr(n):
    return n.wait_running("dht", timeout=20)["listen"]


def ron(app, *args, timeout=60):
    e = dict(os.environ)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
        e.pop(k, None)
    app_cap_env(e, app)  # the node's operator capability (writes need one)
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, env=e,
                          timeout=timeout)


def node(extra, seed=None):
    app, http = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
    args = ["--set", SERVICES, "--app", app, "--set", "http=" + http] + extra
    if seed is not None:
        args += ["--seed", seed]
    n = Node(args).wait_up()
    n.app, n.http_addr = app, http
    return n


a = node([])
seed = dht_addr(a)
b = node(["--profile", "micro"], seed)
c = node([], seed)
for n in (a, b, c):
    dht_addr(n)
    n.wait_running("overlay", timeout=20)
for n in (a, b, c):
    wait_for(lambda: (n.metric('dht_contacts{service="dht"}') or 0) >= 2, 30, "dht contacts")

data = os.urandom(3 * 1024 * 1024 + 12345)
path = os.path.join(tempfile.mkdtemp(prefix="ron-net-fetch-"), "obj")
with open(path, "wb") as f:
    f.write(data)
def c_records():
    return c.metric('dht_records{service="dht"}') or 0


records0 = c_records()
addr = None
for n in (a, b):
    r = ron(n.app, "put", path)
    check(r.returncode == 0, "put: %r" % (r.stderr,))
    addr = r.stdout.decode().strip()
check(addr.startswith("b3:"), "address %r" % addr)
for n in (a, b):
    wait_for(lambda: (n.metric('storage_provides_total{service="storage",result="sent"}') or 0) >= 1,
             10, "the put was announced")
wait_for(lambda: c_records() > records0, 20, "C's DHT holds the provider record")

# a GET through C's gateway: fetched from the providers, verified, served
import urllib.request


def http_get(n, path, headers=None, timeout=30):
    req = urllib.request.Request("http://%s%s" % (n.http_addr, path), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# (503 + Retry-After while C's gateway is still connecting to its storage: retried, as a client would)
for _ in range(50):
    st, body = http_get(c, "/o/" + addr)
    if st != 503:
        break
    time.sleep(0.2)
check(st == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest(),
      "gateway GET on C: %d, %d bytes" % (st, len(body)))
wait_for(lambda: (c.metric('storage_fetch_bytes_total{service="storage"}') or 0) >= len(data), 10,
         "C's storage fetched the bytes")
sent = lambda: [(n.metric('overlay_piece_bytes_sent_total{service="overlay"}') or 0) for n in (a, b)]
wait_for(lambda: sum(sent()) >= len(data), 10, "the providers sent the pieces")

# a range, and `ron get` through C's app port
st, body = http_get(c, "/o/" + addr, {"Range": "bytes=1000000-1999999"})
check(st == 206 and body == data[1000000:2000000], "range GET on C: %d" % st)
out = path + ".out"
r = ron(c.app, "get", addr, "-o", out)
check(r.returncode == 0, "ron get on C: %r" % (r.stderr,))
with open(out, "rb") as f:
    check(f.read() == data, "ron get bytes")

# C keeps it as cache and announces it
wait_for(lambda: (c.metric('storage_fetches_total{service="storage",result="complete"}') or 0) >= 1,
         10, "the fetch completed into a cache object")
r = ron(c.app, "stat", addr)
check(r.returncode == 0 and b"cache" in r.stdout, "stat on C: %r %r" % (r.stdout, r.stderr))

# a micronode fetches too: an object only A holds, through B's gateway and app port
small = os.urandom(700000)
spath = path + ".small"
with open(spath, "wb") as f:
    f.write(small)
records0 = c_records()
r = ron(a.app, "put", spath)
check(r.returncode == 0, "put on A: %r" % (r.stderr,))
saddr = r.stdout.decode().strip()
wait_for(lambda: c_records() > records0, 20, "the record reached the DHT")
st, body = http_get(b, "/o/" + saddr)
check(st == 200 and body == small, "gateway GET on micronode B: %d, %d bytes" % (st, len(body)))
r = ron(b.app, "get", saddr)
check(r.returncode == 0 and r.stdout == small, "ron get on micronode B: %r" % (r.stderr,))

# a fresh object smaller than one 256 KiB chunk through C's gateway: storage
# probes 4 spans at once (the size unknown), the 3 past the end answer 416 and
# charge no provider; the gateway serves the first storage answer's bytes
# without asking storage for them again (C's storage sends the bytes once)
tiny = os.urandom(200000)
tpath = path + ".tiny"
with open(tpath, "wb") as f:
    f.write(tiny)
records0 = c_records()
r = ron(a.app, "put", tpath)
check(r.returncode == 0, "put on A: %r" % (r.stderr,))
taddr = r.stdout.decode().strip()
wait_for(lambda: c_records() > records0, 20, "the record reached the DHT")
fails0 = c.metric('storage_fetch_provider_failures_total{service="storage"}') or 0
out0 = c.metric('storage_bytes_out_total{service="storage"}') or 0
st, body = http_get(c, "/o/" + taddr)
check(st == 200 and body == tiny, "gateway GET of a small fresh object on C: %d %r" % (st, body))
# services report their metrics to the node every MN_HEALTH_TICK_MS (100 ms):
# wait for the bytes to show, then ten reports more for a second read to show
out = lambda: (c.metric('storage_bytes_out_total{service="storage"}') or 0) - out0
wait_for(lambda: out() >= len(tiny), 10, "C's storage get answers in its metrics")
time.sleep(1)
fails1 = c.metric('storage_fetch_provider_failures_total{service="storage"}') or 0
out1 = out0 + out()
check(fails1 == fails0, "probes past the end charged a provider: %r -> %r" % (fails0, fails1))
check(out1 - out0 == len(tiny), "C's storage sent %d bytes for a %d-byte GET (the first chunk "
      "read twice?)" % (out1 - out0, len(tiny)))

# a provider killed mid-transfer: the fetch completes from the other one
big = os.urandom(48 * 1024 * 1024 + 777)
bpath = path + ".big"
with open(bpath, "wb") as f:
    f.write(big)
records0 = c_records()
for n in (a, b):
    r = ron(n.app, "put", bpath, timeout=120)
    check(r.returncode == 0, "put big: %r" % (r.stderr,))
baddr = r.stdout.decode().strip()
for n in (a, b):
    wait_for(lambda: (n.metric('storage_provides_total{service="storage",result="sent"}') or 0) >= 2,
             10, "the big put was announced")
wait_for(lambda: c_records() >= records0 + 2, 20, "C's DHT holds the big object's record")
sent_before = [(n.metric('overlay_piece_bytes_sent_total{service="overlay"}') or 0) for n in (a, b)]
e = dict(os.environ)
for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
    e.pop(k, None)
bout = path + ".bigout"
getp = subprocess.Popen([RON, "get", baddr, "-o", bout, "--node", c.app], env=e,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
b_sent = [0]


def b_serving():
    b_sent[0] = (b.metric('overlay_piece_bytes_sent_total{service="overlay"}') or 0) - sent_before[1]
    return b_sent[0] > 0 or getp.poll() is not None


wait_for(b_serving, 60, "B served part of the big object")
check(getp.poll() is None, "the get was still running when B was killed")
b.kill()
try:
    rc = getp.wait(timeout=120)
except subprocess.TimeoutExpired:
    getp.kill()
    rc = -1
check(rc == 0, "ron get after B was killed: %r" % (getp.stderr.read(),))
with open(bout, "rb") as f:
    check(hashlib.sha256(f.read()).digest() == hashlib.sha256(big).digest(), "big object bytes")
# A's overlay reports its counters to its node every 100 ms, later on a loaded
# machine: wait (bounded) for its last bytes to show before reading them


def a_sent_now():
    return (a.metric('overlay_piece_bytes_sent_total{service="overlay"}') or 0) - sent_before[0]


deadline = time.monotonic() + 10
while a_sent_now() + b_sent[0] < len(big) // 2 and time.monotonic() < deadline:
    time.sleep(0.05)
a_sent = a_sent_now()
check(a_sent > 0 and b_sent[0] > 0, "both providers served: A %d, B %d" % (a_sent, b_sent[0]))
check(a_sent + b_sent[0] >= len(big) // 2, "A and B served the bulk: %d + %d" % (a_sent, b_sent[0]))

# nobody holds this one: 404 after the lookup
st, _ = http_get(c, "/o/b3:" + os.urandom(32).hex())
check(st == 404, "unknown address: %d" % st)
print("ok")
