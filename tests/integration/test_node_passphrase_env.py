#!/usr/bin/env python3
"""A passphrase given in RON_PASSPHRASE does not stay in the environment
(docs/protocol/keystore.md, "In memory"): a real macronode started with it
(services storage, index, gateway, app, dht, overlay, passport: the overlay
and the passport need the node's identity key) seals its keys with it, then
/proc/PID/environ of the kernel and of every child holds neither the
variable's name nor the passphrase's bytes; every child runs (the ones that
need the identity got it on the fd handoff, not by opening the sealed files),
a put/get round trip works, and a restart with the same passphrase opens the
same identity while a start without it is refused (the keys are sealed)."""
import os
import shutil
import subprocess
import tempfile

from ronnode import RON, Node, check, free_port, operator_cap, wait_for

SERVICES = ["storage", "index", "gateway", "app", "dht", "overlay", "passport"]
PASS = "pp-" + os.urandom(12).hex() + "-zq"  # distinct bytes to look for


def environ_of(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        return f.read()


def ron(app, *args, data_dir, stdin=None):
    e = dict(os.environ)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE", "RON_PASSPHRASE"):
        e.pop(k, None)
    e["RON_DATA_DIR"] = data_dir
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, text=True,
                          env=e, input=stdin, timeout=30)


def node_id(n):
    for rec in n.log_lines():
        msg = rec.get("msg", "")
        if msg.startswith("node id "):
            return msg.split()[2]
    return None


tmp = tempfile.mkdtemp(prefix="ron-it-passenv-")
DATA = os.path.join(tmp, "data")
APP = "127.0.0.1:%d" % free_port()
n = None
try:
    n = Node(["--data-dir", DATA, "--app", APP, "--http", "127.0.0.1:%d" % free_port()],
             services=",".join(SERVICES), env={"RON_PASSPHRASE": PASS}).wait_up(timeout=60)
    kids = {}
    for s in SERVICES:
        kids[s] = n.wait_running(s, timeout=60)["pid"]
    n.wait_log("RON_PASSPHRASE read and wiped from the environment", timeout=5)
    check("sealed: passphrase" in n.logs(), "the keys are sealed with the passphrase")
    check(len(set(kids.values())) == len(SERVICES), "each service is its own process: %r" % kids)

    # ---- no process of the node shows the variable or the passphrase ----
    procs = {"kernel": n.proc.pid}
    procs.update(kids)
    for what, pid in procs.items():
        env = environ_of(pid)
        check(len(env) > 0, "%s (%d): /proc/PID/environ readable" % (what, pid))
        check(b"RON_PASSPHRASE" not in env, "%s (%d): no RON_PASSPHRASE in its environ" % (what, pid))
        check(PASS.encode() not in env, "%s (%d): the passphrase's bytes are not in its environ"
              % (what, pid))
        check(PASS[3:19].encode() not in env, "%s (%d): no part of the passphrase" % (what, pid))
    print("environ of the kernel and %d children: no RON_PASSPHRASE, no passphrase bytes"
          % len(kids))

    # ---- the node works: put/get ----
    op = operator_cap(DATA)
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(
        ron(APP, "put", "-", data_dir=DATA, stdin="sealed and scrubbed\n")), 20, "ron put")
    addr = r.stdout.strip()
    r = ron(APP, "get", addr, data_dir=DATA)
    check(r.returncode == 0 and r.stdout == "sealed and scrubbed\n", "get: %r" % r.stderr)
    first_id = node_id(n)
    check(first_id is not None, "the log names the node id")
    rc, _ = n.stop(timeout=15)
    check(rc == 0, "node exits 0 (got %r)" % rc)
    n.kill()
    n = None

    # ---- the keys are sealed: without the passphrase the node does not start ----
    APP2 = "127.0.0.1:%d" % free_port()
    bad = Node(["--data-dir", DATA, "--app", APP2], services="storage", env={})
    try:
        rc = bad.proc.wait(timeout=30)
        check(rc != 0, "a start without the passphrase fails (exit %r)" % rc)
        check("RON_PASSPHRASE" in bad.logs(), "the log names the variable to set")
    finally:
        bad.kill()

    # ---- with it again: the same identity, and the object is still there ----
    n = Node(["--data-dir", DATA, "--app", APP, "--http", "127.0.0.1:%d" % free_port()],
             services="storage,index,app,overlay", env={"RON_PASSPHRASE": PASS}).wait_up(timeout=60)
    for s in ("storage", "index", "app", "overlay"):
        n.wait_running(s, timeout=60)
    check(node_id(n) == first_id, "same node id after the restart: %r %r" % (node_id(n), first_id))
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(
        ron(APP, "get", addr, data_dir=DATA)), 20, "get after the restart")
    check(r.stdout == "sealed and scrubbed\n", "the object after the restart")
    for pid in [n.proc.pid] + n.child_pids():
        check(PASS.encode() not in environ_of(pid), "after the restart: not in %d's environ" % pid)
    rc, _ = n.stop(timeout=15)
    check(rc == 0, "node exits 0 (got %r)" % rc)
finally:
    if n is not None:
        n.kill()
    shutil.rmtree(tmp, ignore_errors=True)
print("ok")
