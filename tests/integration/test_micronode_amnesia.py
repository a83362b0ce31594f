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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ronnode import RON, Node, check, fail, free_port, wait_for

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
except ImportError:  # pragma: no cover - python3-cryptography is installed on the builders
    Ed25519PrivateKey = None

# Opens for writing that are allowed, each with its reason.
ALLOWED_WRITE_PATHS = {
    "/dev/null": "the null device: stdio of spawned helpers, discards nothing to disk",
    "/dev/tty": "a terminal, not a file (never expected in CI)",
    "/dev/urandom": "libsodium / OpenSSL seeding; a device, nothing stored",
    "/dev/random": "as /dev/urandom",
}
# /proc/self/* and /proc/<pid>/* (e.g. /proc/self/coredump_filter, which ASan
# writes) are kernel interfaces, not disk files.
ALLOWED_WRITE_RE = re.compile(r"^/proc/(self|thread-self|\d+)/")

WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
# Syscalls that create, remove or rename names on a file system, or change a
# file's size, whatever their arguments: any successful one is a failure.
FORBIDDEN_CALLS = {"rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
                   "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "mknod", "mknodat",
                   "truncate", "ftruncate", "fallocate", "creat"}

LINE_RE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)$")


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


def parse_trace(path):
    """Return a list of (pid, syscall, args, result) for completed calls (strace -qq, no -y)."""
    calls = []
    pending = {}
    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            m = re.match(r"^(\d+)\s+(.*)$", line)
            if not m:
                continue
            pid, rest = m.group(1), m.group(2)
            if rest.startswith("<... "):
                # "<... openat resumed>...) = 3": join with the unfinished half.
                um = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
                if not um or pid not in pending:
                    continue
                rest = pending.pop(pid) + um.group(2)
            elif rest.endswith("<unfinished ...>"):
                pending[pid] = rest[: -len("<unfinished ...>")]
                continue
            cm = re.match(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$", rest)
            if cm:
                calls.append((int(pid), cm.group(1), cm.group(2), cm.group(3)))
    return calls


def first_path(args):
    m = re.search(r'"((?:[^"\\]|\\.)*)"', args)
    return m.group(1) if m else None


def violations(calls):
    """The calls among `calls` that create, write, rename, remove or resize a file."""
    bad = []
    for pid, call, args, res in calls:
        ok = res != "?" and int(res) >= 0
        if call in ("open", "openat", "openat2"):
            flags = re.sub(r'"(?:[^"\\]|\\.)*"(\.\.\.)?', '""', args)
            path = first_path(args) or ""
            if any(fl in flags for fl in WRITE_FLAGS) and path not in ALLOWED_WRITE_PATHS \
                    and not ALLOWED_WRITE_RE.match(path):
                bad.append("%d %s(%s) = %s" % (pid, call, args, res))
        elif call in FORBIDDEN_CALLS and ok:
            bad.append("%d %s(%s) = %s" % (pid, call, args, res))
        elif call == "bind" and "AF_UNIX" in args:
            bad.append("%d %s(%s) = %s" % (pid, call, args, res))
    return bad


def check_detector(work):
    """The trace checker flags each kind of write it looks for (so it can fail)."""
    p = os.path.join(work, "synthetic.log")
    with open(p, "w") as f:
        f.write('7 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3\n'
                '7 openat(AT_FDCWD, "/dev/null", O_RDWR) = 4\n'
                '7 openat(AT_FDCWD, "/proc/self/coredump_filter", O_WRONLY) = 4\n'
                '8 openat(AT_FDCWD, "/d/keys/a, b", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600 '
                '<unfinished ...>\n'
                '7 newfstatat(3, "", {st_mode=S_IFREG|0644, st_size=1, ...}, AT_EMPTY_PATH) = 0\n'
                '8 <... openat resumed>) = 5\n'
                '8 open("/d/x", O_RDONLY|O_APPEND) = -1 ENOENT (No such file or directory)\n'
                '8 renameat2(AT_FDCWD, "/d/.t", AT_FDCWD, "/d/t", 0) = 0\n'
                '8 mkdir("/d", 0700) = 0\n'
                '8 ftruncate(5, 4096) = 0\n'
                '8 unlink("/d/gone") = -1 ENOENT (No such file or directory)\n'
                '8 bind(6, {sa_family=AF_UNIX, sun_path="/d/s.sock"}, 110) = 0\n')
    bad = violations(parse_trace(p))
    want = ["/d/keys/a, b", "/d/x", "renameat2", "mkdir", "ftruncate", "AF_UNIX"]
    check(len(bad) == len(want) and all(w in b for w, b in zip(want, bad)),
          "the checker flags exactly the synthetic writes: %r" % bad)


def traced_child(strace_pid):
    """The pid of the `ron` process strace started (its only child)."""
    def find():
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        st = f.read().split(")")[-1].split()
                except OSError:
                    continue
                if int(st[1]) == strace_pid:
                    return int(d)
        return None
    return wait_for(find, 5, "the traced ron process")


def main():
    check(shutil.which("strace") is not None, "strace is installed")
    check(Ed25519PrivateKey is not None, "python3-cryptography is installed (record signing)")
    check_signer_against_spec()
    work = tempfile.mkdtemp(prefix="ron-amn-")
    data_dir = os.path.join(work, "data")
    os.mkdir(data_dir)
    check_detector(work)
    trace = os.path.join(work, "trace.log")
    log_path = os.path.join(work, "node.log")
    admin = "127.0.0.1:%d" % free_port()
    http = "127.0.0.1:%d" % free_port()
    https = "127.0.0.1:%d" % free_port()
    env = dict(os.environ)
    env.pop("RON_ADMIN", None)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    argv = ["strace", "-f", "-qq", "-s", "512", "-o", trace,
            "-e", "trace=%file,ftruncate,fallocate,bind", "-e", "signal=none",
            RON, "node", "--profile", "micro", "--data-dir", data_dir, "--admin", admin,
            "--http", http, "--https", https, "--dht", "127.0.0.1:0",
            "--set", "services=gateway,storage,index,dht"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)

    def logs():
        log.flush()
        with open(log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def curl(*args):
        return subprocess.run(["curl", "-sS", "--max-time", "20", "-H", "Expect:"] + list(args),
                              capture_output=True, timeout=30)

    try:
        def up():
            check(proc.poll() is None, "node exited early (%s); log:\n%s" % (proc.returncode,
                                                                               logs()))
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--max-time", "2", "http://%s/healthz" % admin],
                               capture_output=True, timeout=5)
            return r.stdout == b"200"
        wait_for(up, 30, "micronode healthy under strace")
        st = json.loads(curl("http://%s/admin/status" % admin).stdout)
        check(st["profile"] == "micro" and st["amnesia"] is True, "micro, amnesia on: %r" % st)
        check(st["dumpable"] is False, "the node is not dumpable (/admin/status)")
        node_pid = traced_child(proc.pid)
        with open("/proc/%d/limits" % node_pid) as f:
            core = [ln for ln in f if ln.startswith("Max core file size")]
        check(core and core[0].split()[4:6] == ["0", "0"],
              "RLIMIT_CORE 0 soft and hard: %r" % core)
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

        os.kill(node_pid, signal.SIGTERM)  # the node itself, not strace
        try:
            rc = proc.wait(timeout=20)  # strace exits with the traced process's status
        except subprocess.TimeoutExpired:
            fail("node did not exit within 20 s of SIGTERM")
        check(rc == 0, "node exit 0 after SIGTERM (%r); log:\n%s" % (rc, logs()))

        calls = parse_trace(trace)
        check(any(c[1] in ("openat", "open") for c in calls),
              "the trace recorded opens (%d calls)" % len(calls))
        check(any(c[1] == "bind" and "htons(%s)" % http.split(":")[1] in c[2] for c in calls),
              "the trace covers the gateway's listener (bind of %s)" % http)
        bad = violations(calls)
        check(not bad, "file writes in amnesia:\n" + "\n".join(bad[:40]))
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
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        if os.environ.get("RON_KEEP_TRACE"):
            shutil.copy(trace, os.environ["RON_KEEP_TRACE"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
