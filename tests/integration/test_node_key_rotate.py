#!/usr/bin/env python3
"""`ron key rotate` with real node processes (DESIGN.md §11): the node's
capability keys move to the next generation (kid r1 -> r2) and every
service's guard follows (its guard_authority_head on /metrics reaches the
rotation's change, and storage, which checks the app port's forwarded
token, accepts the re-minted operator.cap); operator.cap is re-minted under
the new kid and works; the passport's signing key rotates too; a token minted
before the rotation keeps working during the grace (auth_grace_s, a few
seconds here) and fails with the unknown-key reason once the grace ends,
while the new operator.cap keeps working; `ron key show` shows the current
and previous kid and when the grace ends; a restart keeps the generation.
Bad usage exits 2, no capability exits 1."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from ronnode import RON, Node, check, free_port, wait_for
from ronnode import guard_heads as heads

SERVICES = ["storage", "index", "gateway", "app", "passport"]
GRACE = 6


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


def token_kid(tok):
    r = subprocess.run([RON, "cap", "verify", "-", "--json"], input=tok, capture_output=True,
                       text=True, timeout=10)
    m = re.search(r'"id":"ron1:([a-z0-9]+):', r.stdout)
    check(m is not None, "cap verify shows the id: %r %r" % (r.stdout, r.stderr))
    return m.group(1)


def key_show(app):
    r = ron(app, "key", "show", "--json", data_dir=DATA)
    check(r.returncode == 0, "key show: %d %r" % (r.returncode, r.stderr))
    o = json.loads(r.stdout)
    check(isinstance(o.get("capability_keys"), dict),
          "key show reads the capability keys from the node: %r" % o)
    return o["capability_keys"]


def read_opcap():
    with open(OPCAP) as f:
        return f.read().strip()


def put_ok(app, cap, text):
    r = ron(app, "put", "-", cap=cap, stdin=text)
    return r.returncode == 0 and r.stdout.startswith("b3:"), r


def start(app):
    return Node(["--data-dir", DATA, "--app", app, "--http", "127.0.0.1:%d" % free_port(),
                 "--config", CONF], services=None).wait_up(timeout=30)


EMPTY = tempfile.mkdtemp(prefix="ron-keyrot-empty-")  # no operator.cap here
DATA = tempfile.mkdtemp(prefix="ron-keyrot-")
OPCAP = os.path.join(DATA, "operator.cap")
CONF = os.path.join(EMPTY, "node.json")
with open(CONF, "w") as f:
    json.dump({"services": SERVICES, "auth_grace_s": GRACE}, f)
APP = "127.0.0.1:%d" % free_port()
n = None
try:
    n = start(APP)
    for s in SERVICES:
        n.wait_running(s, timeout=20)
    wait_for(lambda: os.path.exists(OPCAP), 15, "operator.cap")
    op1 = read_opcap()
    check(token_kid(op1) == "r1", "the first operator.cap is of kid r1")
    ck = key_show(APP)
    check(ck["kid"] == "r1" and ck["prev_kid"] == "", "key show before: %r" % ck)
    check(ck["grace_s"] == str(GRACE), "auth_grace_s in force: %r" % ck)
    r = ron(APP, "key", "show", data_dir=DATA)
    check(r.returncode == 0 and "cap kid       r1" in r.stdout, "key show text: %r" % r.stdout)

    # ---- usage and refusals ----
    r = ron(APP, "key", "rotate", "--help")
    check(r.returncode == 0 and "rotate" in r.stdout, "key rotate --help: %r" % r.stdout)
    r = ron(APP, "key", "rotate", "now")
    check(r.returncode == 2, "key rotate with an argument is bad usage: %d" % r.returncode)
    r = ron(APP, "key", "rotate")
    check(r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1,
          "key rotate without a capability: exit 1, one line: %d %r" % (r.returncode, r.stderr))
    wait_for(lambda: put_ok(APP, op1, "warm up\n")[0], 10, "put with operator.cap")
    r = ron(APP, "cap", "mint", "--ops", "get,put", "--ttl", "10m", data_dir=DATA)
    check(r.returncode == 0, "cap mint: %d %r" % (r.returncode, r.stderr))
    old_tok = r.stdout.strip()
    check(token_kid(old_tok) == "r1", "the minted token is of kid r1")
    r = ron(APP, "key", "rotate", cap=old_tok)
    check(r.returncode == 1 and "forbidden" in r.stderr,
          "key rotate needs admin: %d %r" % (r.returncode, r.stderr))

    # ---- rotate: every guard follows; operator.cap re-minted under r2 ----
    before = wait_for(lambda: (lambda h: h if set(SERVICES) <= set(h) else None)(heads(n)), 5,
                      "every service reporting guard_authority_head")
    t0 = time.monotonic()
    r = ron(APP, "key", "rotate", "--json", data_dir=DATA)
    check(r.returncode == 0, "key rotate: %d %r" % (r.returncode, r.stderr))
    rot = json.loads(r.stdout)
    check(rot["kid"] == "r2" and rot["prev_kid"] == "r1", "rotated to r2: %r" % rot)
    check(isinstance(rot.get("passport"), dict) and rot["passport"].get("sign_kid"),
          "the passport rotated its signing key: %r" % rot.get("passport"))
    head = int(rot["head"])
    check(head > max(before.values()), "the rotation is a new change: %d vs %r" % (head, before))
    wait_for(lambda: all(heads(n).get(s) == head for s in SERVICES), 5,
             "every service's guard at the rotation's change %d" % head)
    print("rotation reached all %d services in %.3f s" % (len(SERVICES), time.monotonic() - t0))
    op2 = read_opcap()
    check(op2 != op1 and token_kid(op2) == "r2", "operator.cap re-minted under r2")
    ok, r = put_ok(APP, op2, "after rotation\n")
    check(ok, "the new operator.cap works (app port and storage): %r" % r.stderr)
    ok, r = put_ok(APP, old_tok, "old token in grace\n")
    check(ok, "a token minted before the rotation works during the grace: %r" % r.stderr)
    r = ron(APP, "cap", "mint", "--ops", "get", data_dir=DATA)
    check(r.returncode == 0 and token_kid(r.stdout.strip()) == "r2",
          "new tokens are minted under r2: %r" % r.stdout)
    ck = key_show(APP)
    check(ck["kid"] == "r2" and ck["prev_kid"] == "r1" and int(ck["prev_until"]) > time.time(),
          "key show during the grace: %r" % ck)
    r = ron(APP, "key", "show", data_dir=DATA)
    check("cap prev kid  r1 (grace ends " in r.stdout, "key show text in grace: %r" % r.stdout)
    # a second rotation: the passport's signing key changes again
    sign1 = rot["passport"]["sign_kid"]
    r = ron(APP, "key", "rotate", "--json", data_dir=DATA)
    check(r.returncode == 0, "second key rotate: %d %r" % (r.returncode, r.stderr))
    rot = json.loads(r.stdout)
    check(rot["kid"] == "r3" and rot["prev_kid"] == "r2", "rotated to r3: %r" % rot)
    check(rot["passport"]["sign_kid"] != sign1, "a new passport signing key: %r" % rot)
    # r1 is gone at once (two kids at most): the old token fails with the kid reason
    ok, r = put_ok(APP, old_tok, "r1 gone\n")
    check(not ok and "key this node does not hold" in r.stderr,
          "an r1 token fails once r1 left: %r" % r.stderr)
    op3 = read_opcap()
    check(token_kid(op3) == "r3", "operator.cap under r3")

    # ---- the grace ends: an r2 token fails with the kid reason; operator.cap works ----
    r = ron(APP, "cap", "mint", "--ops", "get,put", "--cap", op3, data_dir=DATA)
    check(r.returncode == 0, "mint under r3: %r" % r.stderr)
    r3_tok = r.stdout.strip()
    prev_until = int(rot["prev_until"])
    # an r2 token: minted before the second rotation (with op2, itself of r2, offline
    # attenuation keeps the kid)
    r = subprocess.run([RON, "cap", "attenuate", op2, "ops = get,put"], capture_output=True,
                       text=True, timeout=10)
    check(r.returncode == 0, "attenuate op2: %r" % r.stderr)
    r2_tok = r.stdout.strip()
    ok, r = put_ok(APP, r2_tok, "r2 in grace\n")
    check(ok, "an r2 token works during r2's grace: %r" % r.stderr)
    wait_for(lambda: time.time() > prev_until + 0.5, GRACE + 5, "r2's grace to end")

    def r2_refused():
        ok, r = put_ok(APP, r2_tok, "r2 after grace\n")
        return (not ok and "key this node does not hold" in r.stderr) and r
    t1 = time.time()
    wait_for(r2_refused, 5, "the r2 token refused after the grace")
    print("old kid refused %.3f s after its grace ended" % (time.time() - prev_until))
    ok, r = put_ok(APP, op3, "operator after grace\n")
    check(ok, "the re-minted operator.cap keeps working: %r" % r.stderr)
    ok, r = put_ok(APP, r3_tok, "r3 token\n")
    check(ok, "an r3 token keeps working: %r" % r.stderr)
    ck = key_show(APP)
    check(ck["kid"] == "r3" and ck["prev_kid"] == "", "key show after the grace: %r" % ck)

    # ---- a restart keeps the generation ----
    rc, _ = n.stop()
    check(rc == 0, "node exits 0 (got %r)" % rc)
    n.kill()
    n = start(APP)
    for s in SERVICES:
        n.wait_running(s, timeout=20)
    ck = key_show(APP)
    check(ck["kid"] == "r3", "the generation survives a restart: %r" % ck)
    check(read_opcap() == op3, "operator.cap unchanged by the restart")
    wait_for(lambda: put_ok(APP, op3, "after restart\n")[0], 10, "operator.cap after restart")
    ok, r = put_ok(APP, r2_tok, "r2 after restart\n")
    check(not ok and "key this node does not hold" in r.stderr,
          "the r2 token stays refused after the restart: %r" % r.stderr)
    r = ron(APP, "key", "rotate", data_dir=DATA)
    check(r.returncode == 0 and r.stdout.startswith("capability key now r4 (r3 verifies until ")
          and "passport signing key rotated" in r.stdout, "key rotate text: %r" % r.stdout)
    rc, _ = n.stop()
    check(rc == 0, "node exits 0 (got %r)" % rc)
    # offline: key show still prints the identity and says why the cap keys are unknown
    r = ron(APP, "key", "show", data_dir=DATA)
    check(r.returncode == 0 and "cap keys      unknown" in r.stdout,
          "key show with the node down: %r %r" % (r.stdout, r.stderr))
finally:
    if n is not None:
        n.kill()
    shutil.rmtree(DATA, ignore_errors=True)
    shutil.rmtree(EMPTY, ignore_errors=True)
print("ok")
