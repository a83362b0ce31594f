#!/usr/bin/env python3
"""`ron passport login --key FILE` against a real macronode (services
passport and app as children, the app port forwarding app_proto_id 7 to the
passport over ron-bus): a key the grant policy names gets a token whose
caveats are what it asked for (`ron cap verify` reads them), with the TTL
clamped to 24 h and the policy's rate; an op the policy denies, and a key it
does not name, get exit 1 with the 403 `policy` reason and no token; bad
input is exit 2; an edited policy.json is in force within a second, a broken
one is logged and changes nothing; a micronode in amnesia grants from its policy file and
writes no keyring; a node without the passport service answers within the
bus deadline with exit 1."""
import json
import os
import shutil
import subprocess
import tempfile
import time

from ronnode import RON, Node, check, free_port, wait_for

tmp = tempfile.mkdtemp(prefix="ron-it-login-")


def keyfile(name):
    p = os.path.join(tmp, name)
    with open(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return p


def pubkey(path):
    """The Ed25519 public key (64 hex) of the seed in path, by `openssl pkey`
    (PKCS#8 DER of the seed in, SubjectPublicKeyInfo DER out)."""
    seed = bytes.fromhex(open(path).read().strip())
    der = bytes.fromhex("302e020100300506032b657004220420") + seed
    out = subprocess.run(["openssl", "pkey", "-inform", "DER", "-pubout", "-outform", "DER"],
                         input=der, capture_output=True, check=True).stdout
    return out[-32:].hex()


def ron(app, *args, timeout=30):
    e = dict(os.environ)
    e.pop("RON_CAP", None)
    e["RON_DATA_DIR"] = tmp  # no operator.cap there
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, text=True,
                          env=e, timeout=timeout)


alice = keyfile("alice.key")
mallory = keyfile("mallory.key")
data = os.path.join(tmp, "data")
os.makedirs(os.path.join(data, "passport"), mode=0o700)
policy = {"version": 1, "rules": [
    {"id": "alice-rw", "effect": "allow",
     "match": {"tags": ["passport", pubkey(alice)], "ops": ["get", "put"]},
     "obligations": {"rate": "20/s"}},
    {"id": "no-admin", "effect": "deny", "match": {"ops": ["admin", "mint"]}}]}


def write_policy(obj):
    path = os.path.join(data, "passport", "policy.json")
    with open(path + ".tmp", "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    os.rename(path + ".tmp", path)


write_policy(policy)

app = "127.0.0.1:%d" % free_port()
try:
    n = Node(["--data-dir", data, "--set", "services=passport,app", "--app", app]).wait_up()
    try:
        n.wait_running("passport")
        n.wait_running("app")
        r = ron(app, "passport", "login", "--key", alice, "--ops", "get,put", "--ttl", "999999",
                "--json")
        check(r.returncode == 0, "login: exit %d: %s" % (r.returncode, r.stderr))
        ans = json.loads(r.stdout)
        # minted under the node's capability keys (first generation r1), not the passport's own
        check(ans["ops"] == ["get", "put"] and ans["ttl"] == 86400 and ans["kid"] == "r1",
              "granted ops, ttl clamped to 24 h, the node's current kid: %r" % ans)
        v = subprocess.run([RON, "cap", "verify", ans["token"], "--json"], capture_output=True,
                           text=True, timeout=10)
        check(v.returncode == 0, "cap verify: %s" % v.stderr)
        caveats = json.loads(v.stdout)["caveats"]
        check("ops = get,put" in caveats and "rate = 20/s" in caveats and
              "expires = %d" % ans["expires"] in caveats, "caveats: %r" % caveats)

        r = ron(app, "passport", "login", "--key", alice)
        check(r.returncode == 0 and r.stdout.count("\n") == 1 and len(r.stdout) > 100,
              "plain login prints only the token: %r %r" % (r.stdout, r.stderr))

        r = ron(app, "passport", "login", "--key", alice, "--ops", "get,admin")
        check(r.returncode == 1 and "policy" in r.stderr and "no-admin" in r.stderr
              and r.stdout == "", "denied op: exit 1 naming the rule: %r" % r.stderr)
        r = ron(app, "passport", "login", "--key", mallory)
        check(r.returncode == 1 and "default-deny" in r.stderr, "unknown key: %r" % r.stderr)

        # policy.json edits take effect within a second; a broken one is not loaded
        policy["rules"].insert(0, {"id": "mallory-get", "effect": "allow",
                                   "match": {"tags": [pubkey(mallory)], "ops": ["get"]}})
        write_policy(policy)
        wait_for(lambda: ron(app, "passport", "login", "--key", mallory).returncode == 0, 5,
                 "the new grant policy in force")
        write_policy("{\"version\":1,\"rules\":[{\"id\":\"x\"}]}")
        n.wait_log("not loaded", 5)
        check(ron(app, "passport", "login", "--key", mallory).returncode == 0,
              "a broken policy leaves the one in force")

        check(ron(app, "passport", "login", "--key", alice, "--ops", "get,delete").returncode == 2,
              "bad op: exit 2")
        check(ron(app, "passport", "login").returncode == 2, "no --key: exit 2")
        open(os.path.join(tmp, "short.key"), "w").write("abcd")
        os.chmod(os.path.join(tmp, "short.key"), 0o600)
        r = ron(app, "passport", "login", "--key", os.path.join(tmp, "short.key"))
        check(r.returncode == 2 and "seed" in r.stderr, "malformed key: %r" % r.stderr)
        os.chmod(alice, 0o644)
        check(ron(app, "passport", "login", "--key", alice).returncode == 1, "key open to others")
        os.chmod(alice, 0o600)
        n.stop()
    finally:
        n.kill()

    # micronode in amnesia: the grant policy is read, the keyring stays in RAM
    data3 = os.path.join(tmp, "micro")
    os.makedirs(os.path.join(data3, "passport"), mode=0o700)
    with open(os.path.join(data3, "passport", "policy.json"), "w") as f:
        json.dump(policy, f)
    app3 = "127.0.0.1:%d" % free_port()
    u = Node(["--profile", "micro", "--amnesia", "--data-dir", data3,
              "--set", "services=passport,app", "--app", app3]).wait_up()
    try:
        r = ron(app3, "passport", "login", "--key", alice, "--ops", "put")
        check(r.returncode == 0 and len(r.stdout) > 100, "micronode login: %r" % r.stderr)
        check(sorted(os.listdir(os.path.join(data3, "passport"))) == ["policy.json"],
              "amnesia writes no keyring: %r" % os.listdir(os.path.join(data3, "passport")))
        u.stop()
    finally:
        u.kill()

    app2 = "127.0.0.1:%d" % free_port()
    m = Node(["--set", "services=app", "--app", app2]).wait_up()
    try:
        m.wait_running("app")
        t0 = time.monotonic()
        r = ron(app2, "passport", "login", "--key", alice)
        check(r.returncode == 1 and r.stdout == "", "no passport service: exit 1: %r" % r.stderr)
        check(time.monotonic() - t0 < 25, "answered within the bus deadline")
    finally:
        m.kill()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print("ok")
