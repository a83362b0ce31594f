#!/usr/bin/env python3
"""`ron pin` of an object the node lacks fetches it whole, then pins it.

Node A (macro) holds an object put on it; micronode B holds nothing. `ron pin
ADDR` through B's app port finds A in the DHT, fetches every piece over the
overlay, verifies it, commits the object and pins it: the pin count is 1,
`ron stat` says pinned, B's storage counted the fetched bytes, and with A
killed B still serves the exact bytes (`ron get`), and `ron gc` does not evict
them. A second pin is local. A pin of an address nobody provides fails with
not_found (exit 1) and pins nothing.
"""
import os
import subprocess
import tempfile

from ronnode import RON, Node, app_cap_env, check, free_port, wait_for

SERVICES = "services=storage,index,gateway,app,dht,overlay"


def ron(app, *args, timeout=60):
    e = dict(os.environ)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
        e.pop(k, None)
    app_cap_env(e, app)  # the node's operator capability (pin and put need one)
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, env=e,
                          timeout=timeout)


def node(extra, seed=None):
    app, http = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
    args = ["--set", SERVICES, "--app", app, "--set", "http=" + http] + extra
    if seed is not None:
        args += ["--seed", seed]
    n = Node(args).wait_up()
    n.app = app
    return n


a = node([])
seed = a.wait_running("dht", timeout=20)["listen"]
b = node(["--profile", "micro"], seed)
for n in (a, b):
    n.wait_running("dht", timeout=20)
    n.wait_running("overlay", timeout=20)
    n.wait_running("app", timeout=20)
for n in (a, b):
    wait_for(lambda: (n.metric('dht_contacts{service="dht"}') or 0) >= 1, 30, "dht contacts")

data = os.urandom(5 * 1024 * 1024 + 4321)  # 81 pieces: many overlay requests
path = os.path.join(tempfile.mkdtemp(prefix="ron-net-pin-"), "obj")
with open(path, "wb") as f:
    f.write(data)
records0 = b.metric('dht_records{service="dht"}') or 0
r = ron(a.app, "put", path)
check(r.returncode == 0, "put on A: %r" % (r.stderr,))
addr = r.stdout.decode().strip()
wait_for(lambda: (b.metric('dht_records{service="dht"}') or 0) > records0, 20,
         "B's DHT holds A's provider record")

# B lacks it: the pin fetches it whole (verified), commits it, pins it
r = ron(b.app, "stat", addr)
check(r.returncode == 1 and b"not_found" in r.stderr, "stat on B before: %r" % (r.stderr,))
r = ron(b.app, "pin", addr)
check(r.returncode == 0 and r.stdout.decode().strip() == "pinned %s: 1 pin" % addr,
      "ron pin on B: %r %r" % (r.stdout, r.stderr))
r = ron(b.app, "stat", addr)
check(r.returncode == 0 and b"pinned" in r.stdout, "stat on B after: %r %r" % (r.stdout, r.stderr))
wait_for(lambda: (b.metric('storage_fetch_bytes_total{service="storage"}') or 0) >= len(data), 10,
         "B's storage counted the fetched bytes")
# a second pin is local (no new fetch)
fetched = b.metric('storage_fetches_total{service="storage",result="complete"}') or 0
r = ron(b.app, "pin", addr)
check(r.returncode == 0 and b"2 pins" in r.stdout, "second pin on B: %r %r" % (r.stdout, r.stderr))
check((b.metric('storage_fetches_total{service="storage",result="complete"}') or 0) == fetched,
      "a second pin fetched again")

# the bytes are B's now: A gone, gc run, B still serves them exactly
a.kill()
r = ron(b.app, "gc")
check(r.returncode == 0, "gc on B: %r" % (r.stderr,))
out = path + ".out"
r = ron(b.app, "get", addr, "-o", out)
check(r.returncode == 0, "ron get on B with A gone: %r" % (r.stderr,))
with open(out, "rb") as f:
    check(f.read() == data, "the pinned bytes on B")

# nobody provides this address: not_found, exit 1, nothing pinned
absent = "b3:" + "7" * 64
r = ron(b.app, "pin", absent)
check(r.returncode == 1 and b"not_found" in r.stderr, "pin of an absent object: %r %r"
      % (r.returncode, r.stderr))
r = ron(b.app, "pin", "ls")
check(r.returncode == 0 and absent.encode() not in r.stdout and addr.encode() in r.stdout,
      "pin ls on B: %r" % (r.stdout,))
b.stop()
print("ok")
