"""ronstrace.py - a `ron node` under `strace -f` and the checks of its trace,
for the amnesia tests (test_micronode_amnesia.py over HTTP,
test_micronode_amnesia_cli.py through the CLI), which had two copies of it.

What counts as writing to a file system (violations()): an open/openat/creat
with a write or create flag outside ALLOWED_WRITE_PATHS and /proc/<self>/...;
any successful rename, link, unlink, mkdir, mknod, symlink, truncate,
ftruncate, fallocate; a bind of an AF_UNIX path (a socket file).
check_detector() proves on synthetic lines that the checker can fail.

StracedNode starts the node (ASan's leak check off: LeakSanitizer needs
ptrace, which strace holds), waits for it with a bound, stops it with
SIGTERM to the node itself and parses the trace; close() always kills what
is left. Set RON_KEEP_TRACE=PATH to keep the trace.
"""
import os
import re
import shutil
import signal
import subprocess

from ronnode import RON, check, fail, wait_for

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


class StracedNode:
    """`ron ARGS` under strace -f (syscalls `events`), its trace in work/trace.log and
    its stdout and stderr in work/node.log. wrap goes between strace and ron (e.g.
    setpriv to run it as another user); env is the node's environment."""

    def __init__(self, work, args, events, env, wrap=()):
        self.trace = os.path.join(work, "trace.log")
        self.log_path = os.path.join(work, "node.log")
        env = dict(env)
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        argv = (["strace", "-f", "-qq", "-s", "512", "-o", self.trace, "-e", "trace=" + events,
                 "-e", "signal=none"] + list(wrap) + [RON] + list(args))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = None  # the node's own pid, once wait_up() found it

    def logs(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_up(self, url, what):
        """Wait (30 s at most) until url answers 200; then find the node's pid and check
        that it runs with core dumps off (RLIMIT_CORE 0, soft and hard)."""
        def up():
            check(self.proc.poll() is None, "node exited early (%s); log:\n%s" % (
                self.proc.returncode, self.logs()))
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--max-time", "2", url], capture_output=True, timeout=5)
            return r.stdout == b"200"
        wait_for(up, 30, what)
        self.pid = traced_child(self.proc.pid)
        with open("/proc/%d/limits" % self.pid) as f:
            core = [ln for ln in f if ln.startswith("Max core file size")]
        check(core and core[0].split()[4:6] == ["0", "0"],
              "/proc/%d/limits: core 0 soft and hard: %r" % (self.pid, core))
        return self.pid

    def stop(self):
        """SIGTERM to the node itself (not strace); it must exit 0 within 20 s. Returns
        the trace's calls, after checking that none wrote to a file system."""
        os.kill(self.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)  # strace exits with the traced process's status
        except subprocess.TimeoutExpired:
            fail("node did not exit within 20 s of SIGTERM")
        check(rc == 0, "node exit 0 after SIGTERM (%r); log:\n%s" % (rc, self.logs()))
        calls = parse_trace(self.trace)
        return calls

    def close(self):
        """Kill what is left of the node and strace; keep the trace if asked to."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()
        if os.environ.get("RON_KEEP_TRACE"):
            shutil.copy(self.trace, os.environ["RON_KEEP_TRACE"])


def check_no_writes(calls):
    """No call of the trace wrote to a file system (violations())."""
    bad = violations(calls)
    check(not bad, "file writes in amnesia:\n" + "\n".join(bad[:40]))
