#!/usr/bin/env python3
"""`ron node` runs svc-registry as the built-in `registry` service when the
operator lists it (it is not in the default list): the child opens
<data_dir>/registry/registry.log (mode 0600), reports its head through the
kernel's metrics, and is restarted after kill -9. A log that fails
verification keeps the service from starting (a tampered governance log is
never served) and `ron registry verify` names the bad version; the micro
profile keeps the registry in RAM and writes no file. Through the app port
(`ron registry propose|approve|commit|head|show|signers`) a genesis and a
signer change commit with 2 of 3 approvals; one approval, a duplicate, an
outsider and a stale proposal are refused with one-line reasons; the lines
`show` prints form a log that verifies offline against the head; the
committed versions survive a restart of the node."""
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile

from ronnode import RON, Node, check, free_port, wait_for

n = Node(["--set", "services=registry"]).wait_up()
log = os.path.join(n.dir, "registry", "registry.log")
data_dir = n.dir
try:
    reg = n.wait_running("registry")
    wait_for(lambda: os.path.exists(log), 5, "registry log under <data_dir>/registry")
    check(stat.S_IMODE(os.stat(log).st_mode) == 0o600, "registry log mode 0600")
    wait_for(lambda: n.metric('registry_head_version{service="registry"}') == 0, 5,
             "registry metrics merged by the kernel")
    r = n.ron("registry", "verify", "--data-dir", n.dir)
    check(r.returncode == 0 and r.stdout.startswith("ok: 0 versions"),
          "verify of an empty log: %r %r" % (r.stdout, r.stderr))

    os.kill(reg["pid"], signal.SIGKILL)
    reg2 = n.wait_running("registry", not_pid=reg["pid"], timeout=5)
    check(reg2["restarts"] >= 1, "registry restarted after kill -9: %r" % reg2)
    rc, took = n.stop()
    check(rc == 0, "exit 0 (%r)" % rc)

    # A tampered log: the service refuses to start, the node says why.
    with open(log, "w") as f:
        f.write('{"descriptor":{"v":1},"approvals":[],"hash":"b3:00"}\n')
    t = Node(["--set", "services=registry", "--data-dir", data_dir]).wait_up()
    try:
        t.wait_log("registry: cannot open", timeout=10)
        check("version 1" in t.logs(), "the reason names version 1:\n" + t.logs())
        wait_for(lambda: t.service("registry")["restarts"] >= 1, 10,
                 "the registry child exits at start and is restarted (not served)")
        check(os.path.getsize(log) > 0, "the tampered log is left for the operator, not repaired")
        r = t.ron("registry", "verify", log)
        check(r.returncode == 1 and "version 1" in r.stderr and r.stderr.count("\n") == 1,
              "verify names version 1 in one line: %r" % r.stderr)
        t.stop()
    finally:
        t.kill()
finally:
    n.kill()

m = Node(["--profile", "micro", "--set", "services=registry"]).wait_up()
try:
    m.wait_running("registry")
    wait_for(lambda: m.metric('registry_head_version{service="registry"}') == 0, 5,
             "micro registry metrics")
    check(not os.path.exists(os.path.join(m.dir, "registry")), "micro + amnesia: no registry file")
    rc, took = m.stop()
    check(rc == 0, "micro exit 0 (%r)" % rc)
finally:
    m.kill()
CAPS = {}  # app address -> the node's operator capability


def run(app, *args):
    e = dict(os.environ)
    e.pop("RON_CAP", None)
    if app in CAPS:
        e["RON_CAP"] = CAPS[app]  # registry writes need admin
    return subprocess.run([RON, "registry"] + list(args) + ["--node", app], capture_output=True,
                          text=True, env=e, timeout=30)


def ok(r, what):
    check(r.returncode == 0, "%s: exit %d: %s" % (what, r.returncode, r.stderr))
    return r.stdout.strip()


def refused(r, what, text):
    check(r.returncode == 1 and text in r.stderr and r.stderr.count("\n") == 1,
          "%s refused with one line naming %r: %d %r" % (what, text, r.returncode, r.stderr))


def descriptor(path, version, prev, signers, revoked=(), policy="1" * 64):
    with open(path, "w") as f:
        f.write(('{"v":1,"version":%d,"prev":"%s","policy":"b3:%s","bootstrap":["127.0.0.1:5302"],'
                 '"trusted_keys":[],"signers":{"threshold":2,"keys":[%s]},"revoked":[%s]}') %
                (version, prev, policy, ",".join('"%s"' % k for k in signers),
                 ",".join('"%s"' % k for k in revoked)))


def online_walk():
    keys = tempfile.mkdtemp(prefix="ron-regkeys-")
    app = "127.0.0.1:%d" % free_port()
    n = Node(["--set", "services=registry,app", "--app", app]).wait_up()
    try:
        CAPS[app] = n.operator_cap()
        n.wait_running("registry")
        n.wait_running("app")
        pk = {}
        for k in "abcd":
            path = os.path.join(keys, k + ".key")
            with open(path, "w") as f:
                f.write(os.urandom(32).hex())
            os.chmod(path, 0o600)
            pk[k] = ok(subprocess.run([RON, "registry", "pubkey", "--key", path],
                                      capture_output=True, text=True), "pubkey")
        key = lambda k: os.path.join(keys, k + ".key")
        head = json.loads(wait_for(lambda: run(app, "head").stdout, 10, "head over the app port"))
        check(head["version"] == "0" and head["writable"], "empty head: %r" % head)

        g = os.path.join(keys, "genesis.json")
        descriptor(g, 1, "b3:" + "0" * 64, [pk["a"], pk["b"], pk["c"]])
        gid = ok(run(app, "propose", g), "propose genesis")
        check(len(gid) == 64, "propose prints the id")
        check(ok(run(app, "approve", gid, "--key", key("a")), "approve a") == "approvals 1 of 2",
              "one approval counted")
        refused(run(app, "approve", gid, "--key", key("a")), "duplicate approval",
                "duplicate_approval")
        refused(run(app, "approve", gid, "--key", key("d")), "outsider", "unknown_signer")
        refused(run(app, "commit", gid), "commit after 1 of 2", "quorum")
        ok(run(app, "approve", gid, "--key", key("b")), "approve b")
        out = ok(run(app, "commit", gid), "commit genesis")
        check(out == "version 1 b3:" + gid, "commit prints version and hash: %r" % out)

        # v2: d replaces c (revoked); a rival v2 goes stale when it lands
        v2 = os.path.join(keys, "v2.json")
        descriptor(v2, 2, "b3:" + gid, [pk["a"], pk["b"], pk["d"]], [pk["c"]])
        rival = os.path.join(keys, "rival.json")
        descriptor(rival, 2, "b3:" + gid, [pk["a"], pk["b"], pk["c"]], policy="2" * 64)
        id2 = ok(run(app, "propose", v2), "propose v2")
        rid = ok(run(app, "propose", rival), "propose rival")
        ok(run(app, "approve", rid, "--key", key("c")), "c approves the rival")
        ok(run(app, "approve", id2, "--key", key("a")), "approve v2 a")
        ok(run(app, "approve", id2, "--key", key("c")), "approve v2 c (still a signer at v1)")
        ok(run(app, "commit", id2), "commit v2")
        refused(run(app, "commit", rid), "rival on the old base", "stale_base")
        signers = json.loads(ok(run(app, "signers"), "signers"))
        check(sorted(signers["keys"]) == sorted([pk["a"], pk["b"], pk["d"]]) and
              signers["revoked"] == [pk["c"]] and signers["version"] == "2",
              "signer set in force: %r" % signers)
        v3 = os.path.join(keys, "v3.json")
        head2 = json.loads(ok(run(app, "head"), "head"))
        descriptor(v3, 3, head2["hash"], [pk["a"], pk["b"], pk["d"]], [pk["c"]], policy="3" * 64)
        id3 = ok(run(app, "propose", v3), "propose v3")
        refused(run(app, "approve", id3, "--key", key("c")), "revoked signer", "revoked_signer")

        # the lines `show` prints form a log that verifies against the head
        copy = os.path.join(keys, "copy.log")
        with open(copy, "w") as f:
            for v in ("1", "2"):
                f.write(ok(run(app, "show", v), "show " + v) + "\n")
        check(ok(run(app, "show"), "show head") + "\n" == open(copy).read().splitlines(True)[1],
              "show without VERSION is the head")
        r = subprocess.run([RON, "registry", "verify", copy, "--head", "2:" + head2["hash"]],
                           capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.startswith("ok: 2 versions"), "copy verifies: %r" %
              (r.stdout + r.stderr))
        refused(run(app, "show", "9"), "missing version", "not_found")
        bad = os.path.join(keys, "bad.json")
        with open(bad, "w") as f:
            f.write('{"v":1,"version":3,"extra":1}')
        r = run(app, "propose", bad)
        check(r.returncode == 2 and r.stderr.count("\n") == 1, "bad descriptor: exit 2: %r" % r.stderr)

        rc, _ = n.stop()
        check(rc == 0, "exit 0 (%r)" % rc)
        r = subprocess.run([RON, "registry", "verify", "--data-dir", n.dir, "--head",
                            "2:" + head2["hash"]], capture_output=True, text=True)
        check(r.returncode == 0, "the node's own log verifies: %r" % (r.stdout + r.stderr))
        n2 = Node(["--set", "services=registry,app", "--app", app, "--data-dir", n.dir]).wait_up()
        try:
            n2.wait_running("registry")
            n2.wait_running("app")
            h = json.loads(wait_for(lambda: run(app, "head").stdout, 10, "head after restart"))
            check(h == head2, "head survives the restart: %r vs %r" % (h, head2))
            n2.stop()
        finally:
            n2.kill()
    finally:
        n.kill()
        shutil.rmtree(keys, ignore_errors=True)


online_walk()

# micronode: the app port reaches the in-process registry over the hub
keys = tempfile.mkdtemp(prefix="ron-regkeys-")
app = "127.0.0.1:%d" % free_port()
m = Node(["--profile", "micro", "--set", "services=registry,app", "--app", app]).wait_up()
try:
    CAPS[app] = m.operator_cap()
    m.wait_running("app")
    pks = []
    for k in "ab":
        path = os.path.join(keys, k + ".key")
        with open(path, "w") as f:
            f.write(os.urandom(32).hex())
        os.chmod(path, 0o600)
        pks.append(ok(subprocess.run([RON, "registry", "pubkey", "--key", path],
                                     capture_output=True, text=True), "pubkey"))
    g = os.path.join(keys, "genesis.json")
    descriptor(g, 1, "b3:" + "0" * 64, pks)
    gid = ok(run(app, "propose", g), "micro propose")
    for k in "ab":
        ok(run(app, "approve", gid, "--key", os.path.join(keys, k + ".key")), "micro approve")
    check(ok(run(app, "commit", gid), "micro commit") == "version 1 b3:" + gid, "micro commit")
    check(json.loads(ok(run(app, "head"), "micro head"))["version"] == "1", "micro head")
    check(not os.path.exists(os.path.join(m.dir, "registry")), "micro commit wrote no file")
    m.stop()
finally:
    m.kill()
    shutil.rmtree(keys, ignore_errors=True)
print("ok")
