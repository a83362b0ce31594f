#!/usr/bin/env python3
"""Capabilities at the app port (docs/protocol/app-port.md §1b, §5) of a
real macronode (services storage, index, app, passport as children):
`ron put` without a capability fails (exit 1, one line naming it) and
works with the node's operator.cap; anonymous `ron get` works; `ron cap
mint --ops get` prints only a token that can get but not put (403); an
offline attenuation narrows a minted token (ops, max-bytes enforced as the
bytes stream in); a get-only token cannot mint; bad `cap mint` usage is
exit 2; `ron cap revoke ID` makes the app port refuse that token (401
capability_revoked), measured from the start of the revoke command to the
first refusal seen by a raw OAP/1 probe and printed (< 1 s); a token from
`ron passport login` (minted under the node's keys, kid r<gen>) works for
a put through the app port. Then a micronode in amnesia: its passport mints
under the node's one guard too (no RAM key of its own)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from ronnode import RON, AppProbe, Node, check, free_port, operator_cap, wait_for
from ronnode import cap_token_id as token_id


tmp = tempfile.mkdtemp(prefix="ron-it-appauth-")
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


def one_line_fail(r, what, *words):
    check(r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1,
          "%s: exit 1 with one line: %d %r %r" % (what, r.returncode, r.stdout, r.stderr))
    for w in words:
        check(w in r.stderr, "%s: the reason names %r: %r" % (what, w, r.stderr))


def keyfile(name):
    p = os.path.join(tmp, name)
    with open(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return p


def pubkey(path):
    """The Ed25519 public key (64 hex) of the seed in path, by `openssl pkey`."""
    seed = bytes.fromhex(open(path).read().strip())
    der = bytes.fromhex("302e020100300506032b657004220420") + seed
    out = subprocess.run(["openssl", "pkey", "-inform", "DER", "-pubout", "-outform", "DER"],
                         input=der, capture_output=True, check=True).stdout
    return out[-32:].hex()


DATA = os.path.join(tmp, "data")
os.makedirs(os.path.join(DATA, "passport"), mode=0o700)
alice = keyfile("alice.key")
POLICY = {"version": 1, "rules": [
    {"id": "alice-rw", "effect": "allow",
     "match": {"tags": ["passport", pubkey(alice)], "ops": ["get", "put"]}}]}
with open(os.path.join(DATA, "passport", "policy.json"), "w") as f:
    json.dump(POLICY, f)
APP = "127.0.0.1:%d" % free_port()
n = None
try:
    n = Node(["--data-dir", DATA, "--app", APP],
             services="storage,index,app,passport").wait_up(timeout=30)
    for s in ("storage", "index", "app", "passport"):
        n.wait_running(s, timeout=20)
    op = operator_cap(DATA)

    # ---- no capability: refused in one line; operator.cap from the data dir: stored ----
    r = ron(APP, "put", "-", stdin="hello app auth\n")
    one_line_fail(r, "put without a capability", "unauthorized", "capability_required")
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(
        ron(APP, "put", "-", data_dir=DATA, stdin="hello app auth\n")), 10,
        "ron put with the node's operator.cap")
    addr = r.stdout.strip()
    check(re.fullmatch(r"b3:[0-9a-f]{64}", addr) is not None, "put prints the address: %r" % addr)
    r = ron(APP, "get", addr)
    check(r.returncode == 0 and r.stdout == "hello app auth\n", "anonymous get: %r" % r.stderr)

    # ---- cap mint: only the token on stdout; get yes, put 403 ----
    r = ron(APP, "cap", "mint", "--ops", "get", "--ttl", "10m", data_dir=DATA)
    check(r.returncode == 0 and r.stdout.count("\n") == 1 and r.stderr == "",
          "cap mint prints only the token: %d %r %r" % (r.returncode, r.stdout, r.stderr))
    getter = r.stdout.strip()
    r = ron(APP, "get", addr, cap=getter)
    check(r.returncode == 0 and r.stdout == "hello app auth\n", "get-only token gets: %r" % r.stderr)
    r = ron(APP, "put", "-", cap=getter, stdin="not allowed\n")
    one_line_fail(r, "put with a get-only token", "forbidden")
    r = ron(APP, "cap", "mint", "--ops", "get", cap=getter)
    one_line_fail(r, "cap mint with a get-only token", "forbidden")
    check(ron(APP, "cap", "mint", data_dir=DATA).returncode == 2, "cap mint without --ops: 2")
    check(ron(APP, "cap", "mint", "--ops", "get,frob", data_dir=DATA).returncode == 2,
          "cap mint with a bad op: 2")
    check(ron(APP, "cap", "mint", "--ops", "get", "--ttl", "soon", data_dir=DATA).returncode == 2,
          "cap mint with a bad ttl: 2")
    r = ron(APP, "cap", "mint", "--help")
    check(r.returncode == 0 and "--max-bytes" in r.stdout, "cap mint --help: %r" % r.stdout)

    # ---- a minted token attenuated offline narrows ----
    r = ron(APP, "cap", "mint", "--ops", "get,put,pin", data_dir=DATA)
    check(r.returncode == 0, "mint get,put,pin: %r" % r.stderr)
    writer = r.stdout.strip()
    r = ron(APP, "put", "-", cap=writer, stdin="writer was here\n")
    check(r.returncode == 0, "the minted writer puts: %r" % r.stderr)
    r = subprocess.run([RON, "cap", "attenuate", writer, "ops = get"], capture_output=True,
                       text=True, timeout=10)
    check(r.returncode == 0, "attenuate: %r" % r.stderr)
    one_line_fail(ron(APP, "put", "-", cap=r.stdout.strip(), stdin="narrowed\n"),
                  "put with the writer narrowed to get", "forbidden")
    r = subprocess.run([RON, "cap", "attenuate", writer, "max-bytes = 1000"], capture_output=True,
                       text=True, timeout=10)
    small = r.stdout.strip()
    check(ron(APP, "put", "-", cap=small, stdin="x" * 900).returncode == 0, "900 B under 1000")
    one_line_fail(ron(APP, "put", "-", cap=small, stdin="y" * 300000),
                  "a streamed put past max-bytes", "forbidden")

    # ---- revoke: the app port refuses the token within 1 s ----
    probe = AppProbe(APP)
    check(probe.list_with(writer)[0] == 200, "the writer lists before the revocation")
    wid = token_id(writer)
    t0 = time.monotonic()
    rv = subprocess.Popen([RON, "cap", "revoke", wid, "--node", APP, "--data-dir", DATA],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = None
    deadline = t0 + 5
    while time.monotonic() < deadline:
        code, reason = probe.list_with(writer)
        if code != 200:
            seen = (code, reason)
            break
        time.sleep(0.002)
    took = time.monotonic() - t0
    out, err = rv.communicate(timeout=30)
    probe.close()
    check(rv.returncode == 0, "ron cap revoke: %d %r" % (rv.returncode, err))
    check(seen == (401, "capability_revoked"), "refused as revoked: %r" % (seen,))
    print("app port revocation: ron cap revoke started -> first refusal at the app port: "
          "%.3f s" % took)
    check(took < 1.0, "the app port refused the revoked token within %.3f s (< 1 s)" % took)
    one_line_fail(ron(APP, "put", "-", cap=writer, stdin="after\n"), "put with the revoked token",
                  "revoked")

    # ---- a passport token verifies at the app port (minted under the node's keys) ----
    r = ron(APP, "passport", "login", "--key", alice, "--ops", "get,put", "--json")
    check(r.returncode == 0, "passport login: %r" % r.stderr)
    ans = json.loads(r.stdout)
    check(re.fullmatch(r"r\d+", ans["kid"]) is not None, "minted under the node's kid: %r" % ans)
    r = ron(APP, "put", "-", cap=ans["token"], stdin="passport put\n")
    check(r.returncode == 0 and r.stdout.startswith("b3:"), "put with the passport token: %r"
          % r.stderr)
    one_line_fail(ron(APP, "pin", addr, cap=ans["token"]), "pin with a get,put passport token",
                  "forbidden")
    rc, _ = n.stop()
    check(rc == 0, "node exits 0 (got %r)" % rc)
finally:
    if n is not None:
        n.kill()

# ---- micronode in amnesia: the passport mints under the node's one guard ----
MICRO = os.path.join(tmp, "micro")
os.makedirs(os.path.join(MICRO, "passport"), mode=0o700)
with open(os.path.join(MICRO, "passport", "policy.json"), "w") as f:
    json.dump(POLICY, f)
APP2 = "127.0.0.1:%d" % free_port()
u = Node(["--profile", "micro", "--amnesia", "--data-dir", MICRO, "--app", APP2],
         services="storage,index,app,passport")
try:
    u.wait_up(timeout=30)
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(
        ron(APP2, "passport", "login", "--key", alice, "--ops", "put", "--json")), 10,
        "micronode passport login")
    ans = json.loads(r.stdout)
    check(re.fullmatch(r"r\d+", ans["kid"]) is not None, "micro: the node's kid: %r" % ans)
    r = ron(APP2, "put", "-", cap=ans["token"], stdin="micro passport put\n")
    check(r.returncode == 0, "micro: put with the passport token: %r" % r.stderr)
    check(not os.path.exists(os.path.join(MICRO, "operator.cap")), "amnesia writes no operator.cap")
    u.stop()
finally:
    u.kill()
    shutil.rmtree(tmp, ignore_errors=True)
print("ok")
