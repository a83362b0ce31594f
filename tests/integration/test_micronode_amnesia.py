#!/usr/bin/env python3
"""An amnesia micronode writes nothing to disk (issue 3, DESIGN §6).

`ron node --profile micro` (amnesia on by default) with gateway, storage,
index and dht (its routing table is not persisted) runs under `strace -f` while real curl stores objects (one of 5 MiB),
reads them back whole and by range (and one over HTTPS, --https: its
certificate and key are made in RAM), publishes a signed name record and
resolves it (302). The node is stopped with SIGTERM and must exit 0. The trace
must show no open/openat/creat for writing (O_WRONLY, O_RDWR, O_CREAT,
O_TRUNC, O_APPEND) outside the allowed device and /proc paths below, no
rename/link/unlink/mkdir/truncate/ftruncate/fallocate/mknod/symlink on any
path, and no bind of an AF_UNIX path (socket file); the data dir is still
empty. While it runs, /proc/<pid>/limits shows "Max core file size 0 0",
/admin/status says dumpable false and the node logged that it hardened.

The trace covers the syscall class %file (every syscall taking a path) plus
the fd-based calls that change a file's size or a socket's name; it does not
trace read/write themselves (too many on a 5 MiB transfer, and a write can
only reach a file through an fd opened for writing, which the open check
catches; the inherited stdout/stderr go to this test's log, outside the data
dir). ASan's leak check is off in this run: LeakSanitizer needs ptrace, which
strace already holds.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ronnode import Node, check, fail, free_port, wait_for
from ronstrace import StracedNode, check_detector, check_no_writes

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
except ImportError:  # pragma: no cover - python3-cryptography is installed on the builders
    Ed25519PrivateKey = None

def sign_record(seed, name, addr_hex, seq, ts):
    """ron-naming's JSON record (docs/protocol/naming.md §3), signed by the seed's key."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    nb = name.encode()
    msg = (b"ron-name-v1\0" + bytes([len(nb)]) + nb + bytes.fromhex(addr_hex) +
           seq.to_bytes(8, "big") + ts.to_bytes(8, "big") + b"\x01" + pub + b"\x00")
    sig = key.sign(msg)
    return json.dumps({"name": name, "addr": "b3:" + addr_hex, "seq": str(seq), "ts": str(ts),
                       "owner": "ed25519:" + pub.hex(), "sig": sig.hex()},
                      separators=(",", ":"))


def check_signer_against_spec():
    """The helper reproduces the worked example of naming.md §3.3 byte for byte."""
    addr = bytes(range(0, 32 * 7, 7)).hex()
    rec = json.loads(sign_record(b"\x01" * 32, "photos.alice", addr, 0, 1764000000))
    check(rec["owner"] == "ed25519:8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
          "owner key of seed 0x01: %s" % rec["owner"])
    check(rec["sig"].startswith("68244dec0c5072c850ad445e6ffba1c8"),
          "signature of the spec example: %s" % rec["sig"])


def main():
    check(shutil.which("strace") is not None, "strace is installed")
    check(Ed25519PrivateKey is not None, "python3-cryptography is installed (record signing)")
    check_signer_against_spec()
    work = tempfile.mkdtemp(prefix="ron-amn-")
    data_dir = os.path.join(work, "data")
    os.mkdir(data_dir)
    check_detector(work)
    admin = "127.0.0.1:%d" % free_port()
    http = "127.0.0.1:%d" % free_port()
    https = "127.0.0.1:%d" % free_port()
    env = dict(os.environ)
    env.pop("RON_ADMIN", None)
    node = StracedNode(work, ["node", "--profile", "micro", "--data-dir", data_dir,
                              "--admin", admin, "--http", http, "--https", https,
                              "--dht", "127.0.0.1:0", "--set", "services=gateway,storage,index,dht"],
                       "%file,ftruncate,fallocate,bind", env)
    logs = node.logs

    def curl(*args):
        return subprocess.run(["curl", "-sS", "--max-time", "20", "-H", "Expect:"] + list(args),
                              capture_output=True, timeout=30)

    try:
        node.wait_up("http://%s/healthz" % admin, "micronode healthy under strace")
        st = json.loads(curl("http://%s/admin/status" % admin).stdout)
        check(st["profile"] == "micro" and st["amnesia"] is True, "micro, amnesia on: %r" % st)
        check(st["dumpable"] is False, "the node is not dumpable (/admin/status)")
        check("amnesia: core dumps off" in logs(), "hardening logged:\n" + logs())

        base = "http://" + http
        # writes need a capability: amnesia announces the operator's once on stderr
        op = wait_for(lambda: next((ln.split(": ", 1)[1].strip() for ln in logs().splitlines()
                                    if ln.startswith("operator capability: ")), None),
                      10, "the operator capability on stderr")
        auth = ["-H", "Authorization: Bearer " + op]
        objs = [os.urandom(5 * 1024 * 1024 + 123), os.urandom(70000), b"tiny amnesia object"]
        addrs = []
        for i, data in enumerate(objs):
            p = os.path.join(work, "obj%d" % i)
            with open(p, "wb") as f:
                f.write(data)
            r = curl(*auth, "--data-binary", "@" + p, base + "/o")
            try:
                addr = json.loads(r.stdout)["address"]
            except (ValueError, KeyError):
                fail("POST /o: %r %r" % (r.stdout[:300], r.stderr))
            want = "b3:" + subprocess.run(["b3sum", "--no-names", p], capture_output=True,
                                          text=True).stdout.strip()
            check(addr == want, "POST address is b3sum's: %r %r" % (addr, want))
            addrs.append(addr)
        for data, addr in zip(objs, addrs):
            r = curl(base + "/o/" + addr)
            check(r.stdout == data, "GET %s whole (%d bytes back)" % (addr, len(r.stdout)))
        r = curl("-r", "4194300-4194399", base + "/o/" + addrs[0])
        check(r.stdout == objs[0][4194300:4194400], "range of the 5 MiB object")
        r = curl("-r", "65535-65537", base + "/o/" + addrs[1])
        check(r.stdout == objs[1][65535:65538], "range of the 70 kB object")
        # HTTPS: the certificate and key are made in RAM, never written
        r = curl("-k", "--http2", "-w", " %{http_version}", "https://%s/o/%s" % (https, addrs[2]))
        check(r.stdout == objs[2] + b" 2", "GET over h2 + TLS: %r %r" % (r.stdout[-40:], r.stderr))

        name = "amnesia.test"
        rec = sign_record(os.urandom(32), name, addrs[0][3:], 1, int(time.time()))
        r = curl("-X", "PUT", *auth, "-H", "Content-Type: application/json", "--data-binary",
                 rec, "-o", "/dev/null", "-w", "%{http_code}", base + "/n/" + name)
        check(r.stdout == b"201", "PUT /n/%s: %r %r" % (name, r.stdout, r.stderr))
        r = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", base + "/n/" + name)
        check(r.stdout.decode().startswith("302 ") and r.stdout.decode().endswith(addrs[0]),
              "GET /n/%s -> 302 to the object: %r" % (name, r.stdout))

        calls = node.stop()
        check(any(c[1] in ("openat", "open") for c in calls),
              "the trace recorded opens (%d calls)" % len(calls))
        check(any(c[1] == "bind" and "htons(%s)" % http.split(":")[1] in c[2] for c in calls),
              "the trace covers the gateway's listener (bind of %s)" % http)
        check_no_writes(calls)
        check(os.listdir(data_dir) == [], "data dir still empty: %r" % os.listdir(data_dir))

        # Control: with amnesia off the same node stays dumpable and does not log hardening.
        ctl = Node(["--profile", "micro", "--set", "amnesia=false"]).wait_up()
        try:
            st = ctl.status()
            check(st["amnesia"] is False and st["dumpable"] is True,
                  "amnesia off: dumpable (%r)" % st)
            check("core dumps off" not in ctl.logs(), "no hardening without amnesia")
        finally:
            ctl.kill()
        print("ok: %d traced calls, no file written" % len(calls))
    finally:
        node.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
