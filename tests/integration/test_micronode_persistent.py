#!/usr/bin/env python3
"""A micronode with amnesia off (`--no-amnesia`) runs storage, index and the
gateway in one process over one store and one index (issue 3, Profiles).

The store under <data_dir>/store is opened once (one "store open" log line:
a second LMDB open of the same environment in one process would be refused),
objects posted through the gateway and names published through it survive
a restart of the node, and the index lives under <data_dir>/index.
"""
import json
import os
import subprocess
import time

from ronnode import Node, check, free_port, wait_for
from test_micronode_amnesia import sign_record


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect:"] + list(args),
                          capture_output=True, timeout=20)


http = "127.0.0.1:%d" % free_port()
args = ["--profile", "micro", "--no-amnesia", "--set", "services=storage,index,gateway",
        "--set", "http=" + http]
n = Node(args).wait_up()
try:
    for s in ("storage", "index", "gateway"):
        check(n.wait_running(s)["pid"] == n.proc.pid, "%s runs in the node's process" % s)
    base = "http://" + http
    data = os.urandom(150000)
    path = os.path.join(n.dir, "obj.bin")
    with open(path, "wb") as f:
        f.write(data)
    auth = n.auth_header()  # writes need a capability: the node's operator capability
    r = curl(*auth, "--data-binary", "@" + path, base + "/o")
    check(b"address" in r.stdout, "POST /o: %r %r" % (r.stdout, r.stderr))
    addr = json.loads(r.stdout)["address"]
    rec = sign_record(os.urandom(32), "keep.test", addr[3:], 1, int(time.time()))
    r = curl("-X", "PUT", *auth, "-H", "Content-Type: application/json", "--data-binary", rec,
             "-o", "/dev/null", "-w", "%{http_code}", base + "/n/keep.test")
    check(r.stdout == b"201", "PUT /n: %r" % r.stdout)
    opens = [ln for ln in n.log_lines() if ln.get("msg", "").endswith("store open")]
    check(len(opens) == 1 and os.path.join(n.dir, "store") in opens[0]["msg"],
          "the disk store opened once: %r" % opens)
    check(os.path.isdir(os.path.join(n.dir, "index")), "index under <data_dir>/index")
    rc, _ = n.stop()
    check(rc == 0, "exit 0 (%r)" % rc)
    n.log.close()
    again = Node(args + ["--data-dir", n.dir]).wait_up()
    try:
        again.wait_running("gateway")
        r = wait_for(lambda: (lambda x: x if x.stdout == data else None)(
            curl(base + "/o/" + addr)), 5, "the object after a restart")
        r = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", base + "/n/keep.test")
        check(r.stdout.decode().startswith("302 ") and r.stdout.decode().endswith(addr),
              "the name after a restart: %r" % r.stdout)
        rc, _ = again.stop()
        check(rc == 0, "exit 0 (%r)" % rc)
    finally:
        again.kill()
finally:
    n.kill()
print("ok")
