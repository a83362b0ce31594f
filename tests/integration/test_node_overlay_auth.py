#!/usr/bin/env python3
"""Capabilities on the overlay and the storage endpoint in a real macronode
(storage, index, app, overlay as children) whose policy file (config key
`policy_file`) denies every anonymous request, get included: a peer on the
real overlay code (ovl_evil_peer --fetch) that sends no capability is
refused 401 and the refusal is counted (overlay_gets_refused_total and the
guard's guard_rejected_total{service="overlay"}); with a get capability
(the operator's, attenuated offline to `ops = get`) the fetch succeeds byte
for byte; a capability without get is refused 403. After `ron cap revoke
ID` the overlay refuses the token: the time from the revoke command's
return (the revocation persisted and pushed) to the first refused fetch is
measured and printed (< 1 s), and so is the time until the storage child's
and the overlay child's guard_authority_head on /metrics reach the
revocation's head (< 1 s). A micronode (one guard for the node) with the
same policy refuses an anonymous peer and serves a capability holder. A
node with the shipped default policy serves an anonymous peer, as before."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from ronnode import RON, Node, check, free_port, wait_for
from ronnode import guard_heads as heads, cap_token_id as token_id

TMP = tempfile.mkdtemp(prefix="ron-ovlauth-")
EVIL = os.path.join(os.path.dirname(RON), "ovl_evil_peer")
PRIVATE = {
    "version": 1,
    "revision": 1,
    "description": "private node: every request needs a capability",
    "rules": [
        {"id": "capability-bearer", "effect": "allow", "match": {"anonymous": False},
         "reason": "a verified capability's own caveats bound what it may do"},
        {"id": "private", "effect": "deny", "match": {"anonymous": True},
         "reason": "this node serves capability holders only"},
    ],
}


def ron(app, *args, cap=None, stdin=None):
    e = dict(os.environ, RON_DATA_DIR=TMP)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
        e.pop(k, None)
    if cap is not None:
        e["RON_CAP"] = cap
    argv = [RON] + list(args) + (["--node", app] if app is not None else [])
    return subprocess.run(argv, capture_output=True, text=True, env=e, input=stdin, timeout=60)


def operator_cap(n):
    path = os.path.join(n.dir, "operator.cap")
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 15, "operator.cap")
    with open(path) as f:
        return f.read().strip()


def attenuate(tok, *caveats):
    r = ron(None, "cap", "attenuate", tok, *caveats)
    check(r.returncode == 0, "cap attenuate: %r" % r.stderr)
    return r.stdout.strip()


def metric_sum(n, name, **labels):
    """Sum of the samples of metric name whose labels include the given ones."""
    total = 0.0
    for line in n.metrics().splitlines():
        if not line.startswith(name + "{"):
            continue
        lab = line[len(name) + 1:line.index("}")]
        if all('%s="%s"' % (k, v) in lab for k, v in labels.items()):
            total += float(line.split()[-1])
    return total


def fetch(node_id, addr, obj, *extra):
    out = os.path.join(TMP, "fetched")
    if os.path.exists(out):
        os.unlink(out)
    r = subprocess.run([EVIL, "--fetch", "%s@%s" % (node_id, addr), "--address", obj, "--out", out]
                       + list(extra), capture_output=True, timeout=30)
    line = r.stdout.decode().strip().splitlines()
    res = json.loads(line[-1]) if line else {}
    data = open(out, "rb").read() if os.path.exists(out) else b""
    return r.returncode, res, data


def start(extra=()):
    app = "127.0.0.1:%d" % free_port()
    n = Node(["--overlay", "127.0.0.1:0", "--app", app] + list(extra),
             services="storage,index,app,overlay").wait_up(timeout=30)
    n.app_addr = app
    for s in ("storage", "index", "app", "overlay"):
        n.wait_running(s, timeout=20)
    return n


def put(n, cap, data):
    src = os.path.join(TMP, "src")
    with open(src, "wb") as f:
        f.write(data)
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(
        ron(n.app_addr, "put", src, cap=cap)), 10, "ron put with the operator capability")
    return r.stdout.strip()


data = os.urandom(3 * 65536 + 77)
policy = os.path.join(TMP, "private.json")
with open(policy, "w") as f:
    json.dump(PRIVATE, f)

a = start(["--set", "policy_file=" + policy])
try:
    op = operator_cap(a)
    a_id = a.status()["node_id"]
    a_addr = a.wait_running("overlay")["listen"]
    obj = put(a, op, data)
    check(obj.startswith("b3:"), "put prints the address: %r" % obj)

    # no capability: the private node refuses the peer's get, and counts it
    refused0 = metric_sum(a, "overlay_gets_refused_total")
    rc, res, got = fetch(a_id, a_addr, obj)
    check(rc == 1 and res.get("status") == 401 and got == b"",
          "a fetch without a capability is refused 401: %r" % res)
    wait_for(lambda: metric_sum(a, "overlay_gets_refused_total", reason="capability") >= 1, 5,
             "overlay_gets_refused_total{reason=capability} counts it")
    check(metric_sum(a, "overlay_gets_refused_total") > refused0, "the refusal is counted")
    wait_for(lambda: metric_sum(a, "guard_rejected_total", service="overlay") >= 1, 5,
             "guard_rejected_total{service=overlay} counts it")

    # a get capability: served byte for byte (whole and a range)
    get_tok = attenuate(op, "ops = get")
    rc, res, got = fetch(a_id, a_addr, obj, "--cap", get_tok)
    check(rc == 0 and res.get("ok") is True and got == data,
          "a fetch with a get capability succeeds (%r, %d of %d B)" % (res, len(got), len(data)))
    rc, res, got = fetch(a_id, a_addr, obj, "--cap", get_tok, "--offset", "70000", "--length",
                         "1000")
    check(rc == 0 and got == data[70000:71000], "a range with the capability: %r" % res)
    # a capability without get, and a forged one
    rc, res, _ = fetch(a_id, a_addr, obj, "--cap", attenuate(op, "ops = put"))
    check(rc == 1 and res.get("status") == 403, "a put-only capability is refused 403: %r" % res)
    rc, res, _ = fetch(a_id, a_addr, obj, "--cap", get_tok[:-4] + ("AAAA" if get_tok[-4:] != "AAAA"
                                                                   else "BBBB"))
    check(rc == 1 and res.get("status") == 401, "a token that does not verify: 401: %r" % res)
    r = subprocess.run([EVIL, "--cap", get_tok, "--file", os.path.join(TMP, "src")],
                       capture_output=True)
    check(r.returncode == 2, "--cap outside fetch mode is bad usage")

    # revoke the token's identifier (the operator's: an attenuation shares it, so this is the
    # last thing the test does with it): the overlay refuses within 1 s
    tid = token_id(get_tok)
    before = heads(a)
    check({"storage", "overlay"} <= set(before), "storage and overlay report their head: %r"
          % before)
    t0 = time.monotonic()
    r = ron(a.app_addr, "cap", "revoke", tid, cap=op)
    check(r.returncode == 0, "ron cap revoke: %d %r" % (r.returncode, r.stderr))
    t1 = time.monotonic()  # the revocation is persisted and pushed when the command returns
    t_cmd = t1 - t0
    m = re.search(r"change (\d+)", r.stdout)
    check(m is not None, "revoke prints the change: %r" % r.stdout)
    head = int(m.group(1))
    refused_at = None
    for _ in range(50):
        rc, res, _ = fetch(a_id, a_addr, obj, "--cap", get_tok)
        if rc == 1 and res.get("status") == 401:
            refused_at = time.monotonic() - t1
            break
        check(rc == 0, "before the refusal the fetch succeeds: %r" % res)
    check(refused_at is not None, "the overlay refuses the revoked token")
    h = heads(a)
    t_heads = time.monotonic() - t1
    check(h.get("overlay") == head and h.get("storage") == head,
          "overlay and storage at the revocation's head %d: %r" % (head, h))
    print("overlay: `ron cap revoke` took %.3f s; after it returned, the overlay refused the "
          "revoked token in %.3f s (one ovl_evil_peer fetch, process start and TLS included; "
          "%.3f s from the command's start); storage and overlay guard_authority_head were at %d "
          "by %.3f s" % (t_cmd, refused_at, t_cmd + refused_at, head, t_heads))
    check(refused_at < 1.0, "the overlay refused the revoked token within 1 s (%.3f s)"
          % refused_at)
    check(t_heads < 1.0, "storage and overlay reached the head within 1 s (%.3f s)" % t_heads)
    rc, took = a.stop()
    check(rc == 0, "exit 0 (%r)" % rc)
finally:
    a.kill()

# a micronode (one process, one guard "node") with the private policy: the same rules
m = start(["--profile", "micro", "--set", "policy_file=" + policy])
try:
    op = m.operator_cap()  # amnesia: the line the node printed once
    m_id, m_addr = m.status()["node_id"], m.wait_running("overlay")["listen"]
    obj = put(m, op, data[:3000])
    rc, res, _ = fetch(m_id, m_addr, obj)
    check(rc == 1 and res.get("status") == 401, "micro, private: anonymous get refused: %r" % res)
    rc, res, got = fetch(m_id, m_addr, obj, "--cap", attenuate(op, "ops = get"))
    check(rc == 0 and got == data[:3000], "micro, private: a get capability is served: %r" % res)
    rc, took = m.stop()
    check(rc == 0, "micro exit 0 (%r)" % rc)
finally:
    m.kill()

# the shipped default policy: an anonymous peer is served
b = start()
try:
    op = operator_cap(b)
    obj = put(b, op, data[:5000])
    rc, res, got = fetch(b.status()["node_id"], b.wait_running("overlay")["listen"], obj)
    check(rc == 0 and got == data[:5000], "default policy: anonymous get served: %r" % res)
    rc, took = b.stop()
    check(rc == 0, "exit 0 (%r)" % rc)
finally:
    b.kill()
shutil.rmtree(TMP, ignore_errors=True)
print("ok")
