#!/usr/bin/env python3
"""The `ron` content commands against a real `ron node` through its app port
(libron over OAP/1): put/get round trips whose address is what `b3sum`
prints, stdin puts, ranges at piece boundaries, stat/ls/pin/unpin/pin ls/gc,
name publish/resolve with the node's key and with --key, status, the error
cases (exit 2 for bad input, 1 with the envelope's slug, a node that is down),
a failed or corrupt `ron get -o` leaving no file, `ron get -o` into
/dev/null and a FIFO in place, a get and a file put that
survive kill -9 of the app service, and a put from a pipe that is not
retried. Macronode (services storage,index,app as children) and
micronode (one process, amnesia)."""
import os
import signal
import stat
import subprocess
import tempfile
import threading
import time

from ronnode import RON, Node, check, free_port, wait_for

PIECE = 65536
TMP = tempfile.mkdtemp(prefix="ron-cli-")
CAPS = {}  # app address -> the node's operator capability


def ron(node, *args, stdin=None, data_dir=None, timeout=60, env=None):
    """Run `ron ARGS --node NODE`; returns CompletedProcess with bytes stdout.
    The node's operator capability goes in RON_CAP unless the test names a
    data dir or a --cap of its own."""
    e = dict(os.environ)
    e.pop("RON_ADMIN", None)
    e.pop("RON_CAP", None)
    e["RON_DATA_DIR"] = data_dir or TMP  # no operator.cap there unless the test puts one
    if data_dir is None and "--cap" not in args and node in CAPS:
        e["RON_CAP"] = CAPS[node]
    e.update(env or {})
    argv = [RON] + list(args)
    if node is not None:
        argv += ["--node", node]
    return subprocess.run(argv, input=stdin, capture_output=True, env=e, timeout=timeout)


def b3sum(path):
    out = subprocess.run(["b3sum", "--no-names", path], capture_output=True, text=True, check=True)
    return "b3:" + out.stdout.strip()


def write(name, data):
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def put_file(app, path):
    r = ron(app, "put", path)
    check(r.returncode == 0, "put %s: exit %d: %s" % (path, r.returncode, r.stderr))
    addr = r.stdout.decode()
    check(addr.endswith("\n") and addr.count("\n") == 1, "put prints one line: %r" % addr)
    return addr.strip()


def round_trips(app, sizes):
    """put each size, check the address against b3sum, get it back two ways."""
    addrs = {}
    for size in sizes:
        data = os.urandom(size)
        src = write("src-%d" % size, data)
        addr = put_file(app, src)
        check(addr == b3sum(src), "address of %d B equals b3sum: %s" % (size, addr))
        out = os.path.join(TMP, "out-%d" % size)
        r = ron(app, "get", addr, "-o", out)
        check(r.returncode == 0, "get -o of %d B: %s" % (size, r.stderr))
        with open(out, "rb") as f:
            check(f.read() == data, "get -o returns the %d bytes" % size)
        r = ron(app, "get", addr)
        check(r.returncode == 0 and r.stdout == data, "get to stdout of %d B" % size)
        addrs[size] = (addr, data)
    return addrs


def stdin_put(app):
    data = os.urandom(3 * PIECE + 17)
    r = ron(app, "put", "-", stdin=data)
    check(r.returncode == 0, "put - : %s" % r.stderr)
    check(r.stdout.decode().strip() == b3sum(write("stdin-src", data)), "stdin put address")
    # a pipe (not a regular file) as stdin
    p = subprocess.Popen(["cat", os.path.join(TMP, "stdin-src")], stdout=subprocess.PIPE)
    e = dict(os.environ, RON_DATA_DIR=TMP, RON_CAP=CAPS[app])
    r2 = subprocess.run([RON, "put", "-", "--node", app], stdin=p.stdout, capture_output=True,
                        env=e, timeout=60)
    p.wait()
    check(r2.returncode == 0 and r2.stdout == r.stdout, "put from a pipe: %s" % r2.stderr)


def ranges(app, addr, data):
    n = len(data)
    cases = [(0, PIECE - 1), (PIECE, 2 * PIECE - 1), (PIECE - 1, PIECE), (PIECE - 1, PIECE - 1),
             (PIECE, PIECE), (2 * PIECE, None), (n - 1, n - 1), (0, n - 1), (n - PIECE - 1, None),
             (5 * PIECE - 3, 9 * PIECE + 2)]
    for a, b in cases:
        spec = "%d-%s" % (a, "" if b is None else b)
        r = ron(app, "get", addr, "--range", spec)
        want = data[a:] if b is None else data[a:b + 1]
        check(r.returncode == 0, "range %s: %s" % (spec, r.stderr))
        check(r.stdout == want, "range %s returns bytes %s (got %d B)" % (spec, spec, len(r.stdout)))
    r = ron(app, "get", addr, "--range", "%d-" % n)
    check(r.returncode == 1 and b"range_not_satisfiable" in r.stderr,
          "range past the end: exit 1 range_not_satisfiable: %r" % r.stderr)
    for bad in ("5-2", "x-1", "-3", "1"):
        r = ron(app, "get", addr, "--range", bad)
        check(r.returncode == 2, "bad --range %s: exit 2" % bad)


def storage_ops(app, addr, size):
    r = ron(app, "stat", addr)
    check(r.returncode == 0, "stat: %s" % r.stderr)
    out = r.stdout.decode()
    check("size          %d" % size in out and "pinned" in out, "stat says size and pinned: " + out)
    r = ron(app, "ls")
    check(r.returncode == 0 and addr in r.stdout.decode(), "ls lists the object")
    r = ron(app, "pin", addr)
    check(r.returncode == 0 and b": 2 pins" in r.stdout, "pin raises the count to 2: %r" % r.stdout)
    r = ron(app, "pin", "ls")
    check(r.returncode == 0 and addr in r.stdout.decode(), "pin ls lists it")
    for left in (1, 0):
        r = ron(app, "unpin", addr)
        check(r.returncode == 0 and (": %d pin" % left).encode() in r.stdout,
              "unpin leaves %d: %r %r" % (left, r.stdout, r.stderr))
    r = ron(app, "unpin", addr)
    check(r.returncode == 1 and b"not_found" in r.stderr, "unpin with no pin: not_found")
    r = ron(app, "pin", "ls")
    check(r.returncode == 0 and addr not in r.stdout.decode(), "pin ls no longer lists it")
    r = ron(app, "stat", addr)
    check(b"cache" in r.stdout, "unpinned object is cache: %r" % r.stdout)
    r = ron(app, "gc", "--target", str(size))
    check(r.returncode == 0 and r.stdout.startswith(b"freed "), "gc: %r %r" % (r.stdout, r.stderr))
    check(int(r.stdout.split()[1]) >= size, "gc freed at least the object: %r" % r.stdout)
    r = ron(app, "stat", addr)
    check(r.returncode == 1 and b"not_found" in r.stderr, "gc'd object is gone: %r" % r.stderr)
    r = ron(app, "gc", "--target", "lots")
    check(r.returncode == 2, "gc --target must be a number")


def names(app, addr1, addr2, data_dir=None):
    """Publish with the node key (when data_dir has one) and with --key."""
    if data_dir is not None:
        r = ron(app, "name", "publish", "photos.alice", addr1, data_dir=data_dir)
        check(r.returncode == 0 and b"(seq 1)" in r.stdout, "publish with node key: %r %r"
              % (r.stdout, r.stderr))
        r = ron(app, "name", "resolve", "Photos.Alice")
        check(r.returncode == 0 and r.stdout.decode().strip() == addr1, "resolve: %r" % r.stdout)
        r = ron(app, "name", "publish", "photos.alice", addr2, data_dir=data_dir)
        check(r.returncode == 0 and b"(seq 2)" in r.stdout, "second publish has seq 2: %r"
              % r.stdout)
        r = ron(app, "name", "resolve", "photos.alice")
        check(r.stdout.decode().strip() == addr2, "resolve follows the update")
    key = os.path.join(TMP, "alt.key")
    with open(key, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(key, 0o600)
    r = ron(app, "name", "publish", "docs.bob", addr1, "--key", key)
    check(r.returncode == 0 and b"(seq 1)" in r.stdout, "publish with --key: %r" % r.stderr)
    r = ron(app, "name", "resolve", "docs.bob", "--json")
    check(r.returncode == 0 and addr1.encode() in r.stdout and b'"seq":"1"' in r.stdout,
          "resolve --json prints the record: %r" % r.stdout)
    if data_dir is not None:
        r = ron(app, "name", "publish", "photos.alice", addr1, "--key", key)
        check(r.returncode == 1 and b"forbidden" in r.stderr, "another key: forbidden: %r"
              % r.stderr)
    os.chmod(key, 0o644)
    r = ron(app, "name", "publish", "docs.bob", addr2, "--key", key)
    check(r.returncode == 1 and b"chmod 600" in r.stderr, "key readable by others is refused")
    r = ron(app, "name", "resolve", "nobody.here")
    check(r.returncode == 1 and b"not_found" in r.stderr, "unknown name: not_found")
    r = ron(app, "name", "resolve", "-bad-.name")
    check(r.returncode == 2, "malformed name: exit 2")
    r = ron(app, "name", "publish", "ok.name", "b3:nothex")
    check(r.returncode == 2, "malformed address: exit 2")


def errors(app):
    r = ron(app, "get", "b3:" + "A" * 64)
    check(r.returncode == 2 and b"malformed address" in r.stderr, "bad address: exit 2")
    for cmd in (["stat"], ["get"], ["pin"], ["put"], ["ls", "x"], ["get", "b3:" + "a" * 64, "-x"]):
        r = ron(app, *cmd)
        check(r.returncode == 2, "%s: bad usage exit 2 (%d)" % (cmd, r.returncode))
    for cmd in ("put", "get", "stat", "ls", "pin", "unpin", "gc", "name", "status", "reload",
                "release"):
        r = ron(None, cmd, "--help")
        check(r.returncode == 0 and b"usage: ron " + cmd.encode() in r.stdout, "%s --help" % cmd)
    for sub in ("publish", "resolve"):
        r = ron(None, "name", sub, "--help")
        check(r.returncode == 0 and b"usage: ron name " + sub.encode() in r.stdout,
              "name %s --help" % sub)
    check(ron(None, "name").returncode == 2, "name without a subcommand: exit 2")
    missing = "b3:" + "0" * 64
    r = ron(app, "get", missing)
    check(r.returncode == 1 and b"not_found" in r.stderr, "unknown object: exit 1 not_found: %r"
          % r.stderr)
    check(len(r.stderr.strip().split(b"\n")) == 1, "one-line reason: %r" % r.stderr)
    out = os.path.join(TMP, "must-not-exist")
    r = ron(app, "get", missing, "-o", out)
    check(r.returncode == 1 and not os.path.exists(out), "failed get -o leaves no file")
    check(not [f for f in os.listdir(TMP) if f.startswith(".must-not-exist")],
          "and no temporary file")
    r = ron(app, "put", os.path.join(TMP, "no-such-file"))
    check(r.returncode == 1, "put of a missing file: exit 1")
    # the capability travels in the START cap section: the node checks it
    r = ron(app, "ls", "--cap", "ron1:test-token")
    check(r.returncode == 1 and b"capability_invalid" in r.stderr,
          "a --cap token is carried (and refused): %r" % r.stderr)
    capdir = os.path.join(TMP, "capdir")
    os.makedirs(capdir, exist_ok=True)
    with open(os.path.join(capdir, "operator.cap"), "w") as f:
        f.write("ron1:from-file\n")
    r = ron(app, "ls", data_dir=capdir)
    check(r.returncode == 1 and b"capability_invalid" in r.stderr,
          "operator.cap in the data dir is carried (and refused): %r" % r.stderr)
    with open(os.path.join(capdir, "operator.cap"), "w") as f:
        f.write("x" * 70000)
    r = ron(app, "ls", data_dir=capdir)
    check(r.returncode == 2 and b"capability longer" in r.stderr, "oversized operator.cap: exit 2")
    r = ron("127.0.0.1:notaport", "stat", missing)
    check(r.returncode == 2, "bad --node: exit 2")
    down = "127.0.0.1:%d" % free_port()
    t0 = time.monotonic()
    r = ron(down, "get", missing)
    took = time.monotonic() - t0
    check(r.returncode == 1 and b"connection refused" in r.stderr, "node down: exit 1: %r"
          % r.stderr)
    check(took < 5, "node down: gives up within a few seconds (%.1f s)" % took)


def status(app, profile):
    r = ron(app, "status", "--json")
    check(r.returncode == 0, "status --json: %s" % r.stderr)
    import json
    st = json.loads(r.stdout)
    check(st["profile"] == profile, "status profile %s: %r" % (profile, st.get("profile")))
    check("app" in [s["name"] for s in st["services"]], "status lists the app service")
    r = ron(app, "status")
    check(r.returncode == 0 and b"profile   " + profile.encode() in r.stdout, "status text")


def corrupt_store_byte(n, app):
    """A byte flipped on disk: `ron get -o` fails (500 corrupt mid-stream) and leaves
    no file; a range of intact pieces is still served."""
    data = os.urandom(4 << 20)
    addr = put_file(app, write("corrupt-src", data))
    h = addr[3:]
    with open(os.path.join(n.dir, "store", "objects", h[:2], h), "r+b") as f:
        f.seek(2 * 1048576 + 5)
        b = f.read(1)
        f.seek(2 * 1048576 + 5)
        f.write(bytes([b[0] ^ 1]))
    out = os.path.join(TMP, "corrupt-out")
    r = ron(app, "get", addr, "-o", out)
    check(r.returncode == 1 and b"corrupt" in r.stderr, "corrupt object: exit 1, reason corrupt: %r"
          % r.stderr)
    check(not os.path.exists(out), "no file under the final name after a corrupt get")
    check(not [f for f in os.listdir(TMP) if f.startswith(".corrupt-out")], "no temporary file")
    r = ron(app, "get", addr, "--range", "0-%d" % (PIECE - 1))
    check(r.returncode == 0 and r.stdout == data[:PIECE], "an intact piece is still served")


def kernel_ops(app):
    r = ron(app, "reload")
    check(r.returncode == 0 and r.stdout.startswith((b"unchanged", b"reloaded")),
          "reload through the app port: %r %r" % (r.stdout, r.stderr))
    r = ron(app, "release", "nosuch")
    check(r.returncode == 1 and b"not_found" in r.stderr, "release of an unknown service: %r"
          % r.stderr)
    r = ron(app, "release", "Bad_Name")
    check(r.returncode == 2, "release of a malformed service name: exit 2")


def put_retries_only_rewindable_sources(n, app):
    """kill -9 of the app service during a put: a file is sent again and the put
    succeeds; a pipe cannot be rewound, so that put fails (exit 1) instead."""
    data = os.urandom(96 << 20)
    src = write("put-kill-src", data)
    want = b3sum(src)
    e = dict(os.environ, RON_DATA_DIR=TMP, RON_CAP=CAPS[app])
    e.pop("RON_ADMIN", None)
    # a regular file: retried from its start
    old = n.wait_running("app")["pid"]
    p = subprocess.Popen([RON, "put", src, "--node", app], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    wait_for(lambda: (n.metric('storage_open_puts{service="storage"}') or 0) >= 1 or
             p.poll() is not None, 20, "put under way")
    check(p.poll() is None, "file put still running when the app service is killed")
    os.kill(old, signal.SIGKILL)
    o, err = p.communicate(timeout=60)
    check(p.returncode == 0 and o.decode().strip() == want,
          "file put survives kill -9 of the app service: %r" % err)
    # a pipe: bytes were sent, the connection is lost, no retry
    old = n.wait_running("app", not_pid=old, timeout=10)["pid"]
    p = subprocess.Popen([RON, "put", "-", "--node", app], env=e, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(data[:8 << 20])
    p.stdin.flush()
    wait_for(lambda: (n.metric('storage_open_puts{service="storage"}') or 0) >= 1, 20,
             "pipe put under way")
    os.kill(old, signal.SIGKILL)
    try:
        p.stdin.write(data[8 << 20:])
        p.stdin.close()
    except BrokenPipeError:
        pass
    p.wait(timeout=60)
    err = p.stderr.read()
    check(p.returncode == 1 and p.stdout.read() == b"", "pipe put is not retried: exit %d %r"
          % (p.returncode, err))
    n.wait_running("app", not_pid=old, timeout=10)


def get_to_special_files(app, addr, data):
    """`ron get -o` of a device or FIFO writes into it in place: renaming a
    temporary file over it would replace /dev/null (as root) or the pipe."""
    r = ron(app, "get", addr, "-o", "/dev/null")
    check(r.returncode == 0, "get -o /dev/null: exit %d: %r" % (r.returncode, r.stderr))
    check(stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null is still a device")
    fifo = os.path.join(TMP, "fifo")
    os.mkfifo(fifo)
    got = []

    def drain():  # opens in blocking mode: waits for the writer, then reads to its EOF
        with open(fifo, "rb") as f:
            while True:
                b = f.read(1 << 16)
                if not b:
                    return
                got.append(b)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    r = ron(app, "get", addr, "-o", fifo)
    t.join(timeout=30)
    check(r.returncode == 0, "get -o FIFO: exit %d: %r" % (r.returncode, r.stderr))
    check(not t.is_alive() and b"".join(got) == data, "the FIFO's reader got the verified bytes")
    check(stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO is still a FIFO after get -o")
    check(not [f for f in os.listdir(TMP) if f.startswith(".fifo.ron-")], "no temporary file left")
    os.unlink(fifo)


def get_survives_app_kill(n, app):
    """kill -9 the app service while gets stream: each get still succeeds."""
    data = os.urandom(96 << 20)
    src = write("big-src", data)
    addr = put_file(app, src)
    for i in range(3):
        old = n.wait_running("app")["pid"]
        out = os.path.join(TMP, "kill-out-%d" % i)
        e = dict(os.environ, RON_DATA_DIR=TMP, RON_CAP=CAPS[app])
        e.pop("RON_ADMIN", None)
        p = subprocess.Popen([RON, "get", addr, "-o", out, "--node", app], env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def streaming():
            """bytes have reached the temporary file beside out: the get is mid-transfer"""
            for f in os.listdir(TMP):
                if f.startswith(".kill-out-%d.ron-" % i):
                    try:
                        size = os.path.getsize(os.path.join(TMP, f))
                    except OSError:
                        return True  # renamed already: let the check below tell
                    return size >= (1 << 20) * (1 + 8 * i)
            return False
        wait_for(streaming, 20, "get %d streaming" % i)
        check(p.poll() is None, "get %d still running when the app service is killed" % i)
        os.kill(old, signal.SIGKILL)
        try:
            o, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            check(False, "get after kill -9 did not finish")
        check(p.returncode == 0, "get %d survives kill -9 of the app service: %r" % (i, err))
        with open(out, "rb") as f:
            check(f.read() == data, "get %d after kill -9 returns the verified bytes" % i)
        n.wait_running("app", not_pid=old, timeout=10)


# ---- macronode ----
app = "127.0.0.1:%d" % free_port()
n = Node(["--set", "services=storage,index,app", "--app", app]).wait_up()
try:
    CAPS[app] = n.operator_cap()
    n.wait_running("storage")
    n.wait_running("index")
    n.wait_running("app")
    sized = round_trips(app, [0, 1, PIECE - 1, PIECE, PIECE + 1, (5 << 20) + 3])
    stdin_put(app)
    big_addr, big = sized[(5 << 20) + 3]
    ranges(app, big_addr, big)
    r = ron(app, "get", sized[0][0], "--range", "0-")
    check(r.returncode == 0 and r.stdout == b"", "range 0- of the empty object")
    names(app, sized[1][0], sized[PIECE][0], data_dir=n.dir)
    status(app, "macro")
    kernel_ops(app)
    errors(app)
    storage_ops(app, sized[PIECE + 1][0], PIECE + 1)
    get_to_special_files(app, big_addr, big)
    corrupt_store_byte(n, app)
    get_survives_app_kill(n, app)
    put_retries_only_rewindable_sources(n, app)
    rc, _ = n.stop()
    check(rc == 0, "macro node exit 0")
finally:
    n.kill()

# ---- micronode ----
app = "127.0.0.1:%d" % free_port()
m = Node(["--profile", "micro", "--set", "services=storage,index,app", "--app", app]).wait_up()
try:
    CAPS[app] = m.operator_cap()
    m.wait_running("app")
    sized = round_trips(app, [0, 1, PIECE + 1, (5 << 20) + 3])
    stdin_put(app)
    ranges(app, *sized[(5 << 20) + 3])
    names(app, sized[1][0], sized[0][0])
    status(app, "micro")
    storage_ops(app, sized[PIECE + 1][0], PIECE + 1)
    rc, _ = m.stop()
    check(rc == 0, "micro node exit 0")
finally:
    m.kill()
    subprocess.run(["rm", "-rf", TMP])
print("ok")
