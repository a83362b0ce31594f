#!/usr/bin/env python3
"""`ron key show`: with no key store it says so (exit 1) and creates nothing;
`ron node` creates the keys on first start (dir 0700, files 0600) and loads
the same ones on the next start; key show prints the node id (= b3sum of the
identity public key, = the node id in /admin/status), the public keys, the
seal and the key directory, as text and --json, finding the data dir by
--data-dir or RON_DATA_DIR. A node sealed with RON_ROOT_SECRET_FILE refuses
to start with the wrong secret; an unsealed one warns; amnesia writes no
keys. Bad usage exits 2."""
import json
import os
import shutil
import stat
import subprocess
import tempfile

from ronnode import RON, Node, check, free_port

work = tempfile.mkdtemp(prefix="ron-keyshow-")


def ron(*args, env=None):
    e = dict(os.environ)
    for k in ("RON_DATA_DIR", "RON_PASSPHRASE", "RON_ROOT_SECRET_FILE"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run([RON] + list(args), capture_output=True, text=True, env=e, timeout=20)


def b3(data):
    return subprocess.run(["b3sum", "--no-names"], input=data, capture_output=True,
                          check=True).stdout.decode().split()[0]


def run_node(data, env=None, args=()):
    """Start a node on data, wait until healthy, return (node id, log text); stop it."""
    n = Node(args=["--data-dir", data] + list(args), env=env).wait_up()
    try:
        nid = n.status()["node_id"]
        rc, _ = n.stop()
        check(rc == 0, "node exits 0 (got %r)" % rc)
        return nid, n.logs()
    finally:
        n.kill()


try:
    # 1. No key store: exit 1, one line, nothing created.
    data = os.path.join(work, "data")
    os.mkdir(data, 0o700)
    r = ron("key", "show", "--data-dir", data)
    check(r.returncode == 1, "no key store: exit 1 (got %d, %s)" % (r.returncode, r.stderr))
    check("no key store" in r.stderr and r.stdout == "", "says so: %r" % r.stderr)
    check(os.listdir(data) == [], "key show created nothing: %r" % os.listdir(data))

    # 2. First start creates the keys; unsealed -> loud warning.
    nid, logs = run_node(data)
    keys = os.path.join(data, "keys")
    check(stat.S_IMODE(os.stat(keys).st_mode) == 0o700, "keys dir 0700")
    for f in ("identity.key", "name-0.key"):
        m = stat.S_IMODE(os.stat(os.path.join(keys, f)).st_mode)
        check(m == 0o600, "%s mode 0600 (got %o)" % (f, m))
    check("KEYS ARE NOT SEALED" in logs, "unsealed keys are announced loudly")
    check(nid is not None and len(nid) == 64, "status carries the node id: %r" % nid)

    # 3. key show, text and JSON; the node id is b3sum of the public key.
    r = ron("key", "show", "--data-dir", data, "--json")
    check(r.returncode == 0, "key show --json exit 0: %s" % r.stderr)
    j = json.loads(r.stdout)
    pk = j["identity_key"]["public_key"]
    check(j["node_id"] == nid, "key show node id %s == status node id %s" % (j["node_id"], nid))
    check(j["node_id"] == b3(bytes.fromhex(pk)), "node id == b3sum(identity public key)")
    check(j["identity_key"]["alg"] == "ed25519", "algorithm named")
    check(len(j["name_keys"]) == 1 and j["name_keys"][0]["index"] == 0, "one name key")
    check(j["name_keys"][0]["public_key"] != pk, "name key differs from identity key")
    check(j["sealed"] is False and j["seal"] == "none", "unsealed reported")
    check(j["key_dir"] == keys, "key dir %r" % j["key_dir"])
    r = ron("key", "show", env={"RON_DATA_DIR": data})
    check(r.returncode == 0, "key show via RON_DATA_DIR: %s" % r.stderr)
    check(nid in r.stdout and pk in r.stdout and "sealed        no" in r.stdout
          and keys in r.stdout, "text output: %r" % r.stdout)

    # 4. Second start loads the same keys.
    nid2, _ = run_node(data)
    check(nid2 == nid, "same node id after restart (%s vs %s)" % (nid2, nid))

    # 5. Sealed with a root secret file kept outside the data dir.
    sdata = os.path.join(work, "sealed")
    secret = os.path.join(work, "root.secret")
    with open(secret, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(secret, 0o600)
    snid, logs = run_node(sdata, env={"RON_ROOT_SECRET_FILE": secret})
    check("KEYS ARE NOT SEALED" not in logs, "sealed node does not warn")
    r = ron("key", "show", "--data-dir", sdata, "--json")
    j = json.loads(r.stdout)
    check(j["sealed"] is True and j["seal"] == "secret-file" and j["node_id"] == snid,
          "sealed store reported: %r" % j)
    wrong = os.path.join(work, "wrong.secret")
    with open(wrong, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(wrong, 0o600)
    e = dict(os.environ, RON_ROOT_SECRET_FILE=wrong)
    p = subprocess.run([RON, "node", "--data-dir", sdata, "--admin",
                        "127.0.0.1:%d" % free_port()],
                       capture_output=True, text=True, env=e, timeout=20)
    check(p.returncode == 1, "wrong secret: node exits 1 (got %d)" % p.returncode)
    check("wrong secret file" in p.stderr, "names the cause: %r" % p.stderr[-400:])

    # 6. Amnesia: keys in RAM, nothing under the data dir.
    adata = os.path.join(work, "amnesia")
    os.mkdir(adata, 0o700)
    anid, _ = run_node(adata, args=["--amnesia"])
    check(anid is not None and len(anid) == 64, "amnesia node has a node id")
    check(not os.path.exists(os.path.join(adata, "keys")), "amnesia wrote no keys")
    check(ron("key", "show", "--data-dir", adata).returncode == 1, "no key store after amnesia")

    # 7. Usage errors.
    check(ron("key", "show", "--bogus").returncode == 2, "unknown flag: exit 2")
    check(ron("key").returncode == 2, "missing subcommand: exit 2")
    check(ron("key", "show", "--help").returncode == 0, "help: exit 0")
    print("ok: node id %s" % nid)
finally:
    shutil.rmtree(work, ignore_errors=True)
