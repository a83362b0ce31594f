#!/usr/bin/env python3
"""Minted capabilities die with their parent (docs/protocol/capabilities.md,
"Lineage") on a real macronode (storage, index, gateway, app as children):
`ron cap mint` from operator.cap gives A, A mints B, B mints C; B and C
carry their ancestors' ids (`ron cap verify --json`), and so does B
attenuated offline (`ron cap attenuate`); each works at the
gateway (Bearer) and the app port (a raw OAP/1 probe). `ron cap revoke
<A id>` makes both boundaries refuse B and C (401 capability_revoked),
measured from the start of the revoke command to the first refusal seen at
each boundary and printed (< 1 s each); B's attenuation is refused too, while the operator capability and a
sibling of A minted from it keep working. Then the depth limit: a chain of
GUARD_MAX_LINEAGE (8) mints from the operator capability works, and one
more is refused in one line (exit 1, 403, lineage_too_deep)."""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from ronnode import RON, AppProbe, Node, cap_token_id, check, free_port, operator_cap, wait_for

MAX_LINEAGE = 8  # GUARD_MAX_LINEAGE in src/ron-guard/ron_guard.h

tmp = tempfile.mkdtemp(prefix="ron-it-lineage-")
EMPTY = os.path.join(tmp, "empty")  # a data dir without operator.cap
os.makedirs(EMPTY)


def ron(app, *args, data_dir=None, cap=None, stdin=None, timeout=30):
    """`ron ARGS --node APP` with only the capability the test gives."""
    e = dict(os.environ)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
        e.pop(k, None)
    e["RON_DATA_DIR"] = data_dir or EMPTY
    if cap is not None:
        e["RON_CAP"] = cap
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, text=True,
                          env=e, input=stdin, timeout=timeout)


def mint(app, cap, ops):
    r = ron(app, "cap", "mint", "--ops", ops, cap=cap)  # the default ttl, clipped to the parent's
    check(r.returncode == 0 and r.stdout.count("\n") == 1,
          "cap mint --ops %s: %d %r %r" % (ops, r.returncode, r.stdout, r.stderr))
    return r.stdout.strip()


def ancestors(tok):
    r = subprocess.run([RON, "cap", "verify", "-", "--json"], input=tok, capture_output=True,
                       text=True, timeout=10)
    return json.loads(r.stdout)["grant"].get("ancestors", [])


def nonce(tok):
    return cap_token_id(tok).rsplit(":", 1)[1]


def gw_get(gw, path, tok):
    """(status, envelope reason or "") of a GET at the gateway with a Bearer token."""
    req = urllib.request.Request("http://%s%s" % (gw, path),
                                 headers={"Authorization": "Bearer " + tok})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return r.status, ""
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body).get("reason", "")
        except ValueError:
            return e.code, ""


def first_refusal(what, probe_fn, t0, out):
    """Poll probe_fn until it refuses (at most 5 s); out[what] = (status, reason, s since t0)."""
    deadline = t0 + 5
    while time.monotonic() < deadline:
        code, reason = probe_fn()
        if code != 200:
            out[what] = (code, reason, time.monotonic() - t0)
            return
        time.sleep(0.002)
    out[what] = (200, "", time.monotonic() - t0)


DATA = os.path.join(tmp, "data")
APP = "127.0.0.1:%d" % free_port()
GW = "127.0.0.1:%d" % free_port()
n = None
try:
    n = Node(["--data-dir", DATA, "--app", APP, "--http", GW],
             services="storage,index,gateway,app").wait_up(timeout=30)
    for s in ("storage", "index", "gateway", "app"):
        n.wait_running(s, timeout=20)
    op = operator_cap(DATA)
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(
        ron(APP, "put", "-", cap=op, stdin="lineage\n")), 10, "a put with operator.cap")
    addr = r.stdout.strip()
    path = "/o/" + addr

    # ---- operator.cap -> A -> B -> C, and A's sibling S ----
    a = mint(APP, op, "get,put,pin,mint")
    b = mint(APP, a, "get,pin,mint")
    c = mint(APP, b, "get,pin")
    sib = mint(APP, op, "get,pin")
    r = subprocess.run([RON, "cap", "attenuate", b, "ops = get"], capture_output=True, text=True,
                       timeout=10)
    check(r.returncode == 0, "attenuate B offline: %r" % r.stderr)
    b_att = r.stdout.strip()
    check(ancestors(b_att) == ancestors(b), "the offline attenuation keeps B's ancestors")
    check(ancestors(op) == [], "operator.cap has no ancestors")
    check(ancestors(a) == [nonce(op)], "A names operator.cap: %r" % ancestors(a))
    check(ancestors(b) == [nonce(a), nonce(op)], "B names A then operator.cap: %r" % ancestors(b))
    check(ancestors(c) == [nonce(b), nonce(a), nonce(op)], "C names B, A, operator.cap")
    probe_b, probe_c = AppProbe(APP), AppProbe(APP)
    for tok, what in ((b, "B"), (c, "C"), (sib, "S")):
        check(probe_b.list_with(tok)[0] == 200, "%s lists at the app port" % what)
        check(gw_get(GW, path, tok)[0] == 200, "%s gets at the gateway" % what)
    check(gw_get(GW, path, b_att)[0] == 200, "B attenuated gets at the gateway")

    # ---- revoke A: B and C refused at both boundaries within 1 s ----
    seen = {}
    t0 = time.monotonic()
    rv = subprocess.Popen([RON, "cap", "revoke", cap_token_id(a), "--node", APP, "--cap", op],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchers = [threading.Thread(target=first_refusal, args=w) for w in (
        ("app B", lambda: probe_b.list_with(b), t0, seen),
        ("app C", lambda: probe_c.list_with(c), t0, seen),
        ("gateway B", lambda: gw_get(GW, path, b), t0, seen),
        ("gateway C", lambda: gw_get(GW, path, c), t0, seen))]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join(timeout=10)
    out, err = rv.communicate(timeout=30)
    probe_b.close()
    probe_c.close()
    check(rv.returncode == 0, "ron cap revoke A: %d %r" % (rv.returncode, err))
    for what in ("app B", "app C", "gateway B", "gateway C"):
        code, reason, took = seen[what]
        print("revoke A -> first refusal of %s: %.3f s (%d %s)" % (what, took, code, reason))
        check((code, reason) == (401, "capability_revoked"),
              "%s refused as revoked: %r" % (what, seen[what]))
        check(took < 1.0, "%s refused within %.3f s of the revoke (< 1 s)" % (what, took))
    check(gw_get(GW, path, b_att) == (401, "capability_revoked"),
          "B's offline attenuation is refused too")
    r = ron(APP, "cap", "mint", "--ops", "get", cap=b)
    check(r.returncode == 1 and "revoked" in r.stderr, "the dead B mints nothing: %r" % r.stderr)
    check(gw_get(GW, path, op)[0] == 200, "operator.cap still reads at the gateway")
    check(gw_get(GW, path, sib)[0] == 200, "A's sibling still reads at the gateway")
    p = AppProbe(APP)
    check(p.list_with(sib)[0] == 200, "A's sibling still lists at the app port")
    p.close()

    # ---- depth: MAX_LINEAGE mints deep works, one more is refused ----
    tok = op
    for d in range(1, MAX_LINEAGE + 1):
        tok = mint(APP, tok, "get,mint")
    check(len(ancestors(tok)) == MAX_LINEAGE, "the deepest token names %d ancestors" % MAX_LINEAGE)
    check(gw_get(GW, path, tok)[0] == 200, "the deepest token reads")
    r = ron(APP, "cap", "mint", "--ops", "get", cap=tok)
    check(r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1,
          "a mint past the depth: exit 1, one line: %d %r %r" % (r.returncode, r.stdout, r.stderr))
    check("forbidden" in r.stderr and "lineage_too_deep" in r.stderr and "8 mints deep" in r.stderr,
          "the line says why: %r" % r.stderr)
    rc, _ = n.stop()
    check(rc == 0, "node exits 0 (got %r)" % rc)
finally:
    if n is not None:
        n.kill()
    shutil.rmtree(tmp, ignore_errors=True)
print("ok")
