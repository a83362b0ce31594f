"""ronnode.py - helpers for integration tests that run a real `ron node`.

Each Node gets its own temp dir and ephemeral ports, logs to a file, and is
always killed (with its children) when the test ends. Every wait is bounded.
The `ron` binary is $RON_BIN (set by CTest), else build/asan/ron.
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RON = os.environ.get("RON_BIN") or os.path.join(ROOT, "build", "asan", "ron")

_live = []


def _cleanup():
    for n in list(_live):
        n.kill()


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda s, f: (_cleanup(), sys.exit(1)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fail(msg):
    """Report msg with the tail of every live node's log (cleanup removes the
    logs, and a flake seen once under load is read from these), then exit 1."""
    print("FAIL: " + msg, file=sys.stderr)
    for n in list(_live):
        try:
            tail = n.logs().splitlines()[-40:]
        except (OSError, ValueError):
            continue
        print("--- %s: last %d log lines" % (n.dir, len(tail)), file=sys.stderr)
        for line in tail:
            print("    " + line, file=sys.stderr)
    _cleanup()
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_for(pred, timeout, what):
    """Poll pred() every 20 ms until it returns a truthy value or timeout s pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


def operator_cap(data_dir, timeout=15):
    """The operator capability a node keeps in <data_dir>/operator.cap (written
    by the kernel on first start); waits up to timeout s for it. Client
    commands need it (or a narrower token) for writes: the app port enforces
    capabilities."""
    path = os.path.join(data_dir, "operator.cap")
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout,
             "operator.cap in " + data_dir)
    with open(path) as f:
        return f.read().strip()


_app_nodes = {}  # app port address -> the Node started here with it (--app ADDR / app=ADDR)


def app_cap_env(env, app):
    """env (a dict; changed and returned) with RON_CAP set to the operator
    capability of the node started here with app port `app`, unless env
    already has a non-empty RON_CAP or no such node exists."""
    n = _app_nodes.get(app)
    if n is not None and not env.get("RON_CAP"):
        env["RON_CAP"] = n.operator_cap()
    return env


def with_cap(env, data_dir, timeout=15):
    """A copy of env (a dict) with RON_CAP set to the node's operator capability."""
    e = dict(env)
    e["RON_CAP"] = operator_cap(data_dir, timeout)
    return e


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Node:
    def __init__(self, args=(), config=None, env=None, services_addr=True, services="echo"):
        """services: the `services` list to run (the node's own default,
        storage,index,gateway,app,dht[,overlay], when None). Given by args, config or env
        (RON_SERVICES), theirs wins. Tests written for the echo default keep it.
        A node that runs dht or overlay (the default does) gets ephemeral
        loopback addresses for both (--dht/--overlay 127.0.0.1:0) unless the
        test set them, so parallel tests never collide on 5301/5302."""
        self.dir = tempfile.mkdtemp(prefix="ron-it-")
        self.admin = "127.0.0.1:%d" % free_port()
        self.log_path = os.path.join(self.dir, "node.log")
        self.config_path = os.path.join(self.dir, "node.json")
        argv = [RON, "node", "--admin", self.admin, "--data-dir", self.dir]
        if config is not None:
            self.write_config(config)
            argv += ["--config", self.config_path]
        if services_addr:
            argv += ["--set", "echo.addr=127.0.0.1:0"]
        cfg_text = "" if config is None else (config if isinstance(config, str) else json.dumps(config))
        svc_given = (any("services" in str(a) for a in args) or '"services"' in cfg_text
                     or "RON_SERVICES" in (env or {}))
        if services is not None and not svc_given:
            argv += ["--set", "services=" + services]
        if self._runs_peer_services(args, cfg_text, env, services, svc_given):
            flat = " ".join(str(a) for a in args)
            if "--dht" not in flat and "dht=" not in flat and '"dht"' not in cfg_text:
                argv += ["--dht", "127.0.0.1:0"]
            if "--overlay" not in flat and "overlay=" not in flat and '"overlay"' not in cfg_text:
                argv += ["--overlay", "127.0.0.1:0"]
        argv += list(args)
        self.data_dir = self.dir  # where operator.cap is: a --data-dir in args wins
        for i, a in enumerate(args):  # remember the app port for app_cap_env()
            a = str(a)
            if a == "--data-dir" and i + 1 < len(args):
                self.data_dir = str(args[i + 1])
            if a == "--app" and i + 1 < len(args):
                _app_nodes[str(args[i + 1])] = self
            elif a.startswith("app=") or a.startswith("--app="):
                _app_nodes[a.split("=", 1)[1]] = self
        e = dict(os.environ)
        e.pop("RON_ADMIN", None)
        e.update(env or {})
        self.env = e
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=e)
        _live.append(self)

    @staticmethod
    def _runs_peer_services(args, cfg_text, env, services, svc_given):
        """Does the node run dht or overlay? The default list does; a list
        given by args, config or env is searched for the names."""
        if not svc_given:
            return services is None or any(n in services.split(",") for n in ("dht", "overlay"))
        text = " ".join(str(a) for a in args) + " " + cfg_text + " " + (env or {}).get("RON_SERVICES", "")
        return "dht" in text.replace("--dht", "") or "overlay" in text.replace("--overlay", "")

    def write_config(self, obj):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj))
        os.rename(tmp, self.config_path)

    # ---- HTTP ----
    def http(self, method, path, timeout=3.0):
        """Return (status, headers dict lower-case, body bytes); never raises on HTTP errors."""
        req = urllib.request.Request("http://%s%s" % (self.admin, path), method=method,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def get(self, path):
        return self.http("GET", path)

    def try_get(self, path):
        try:
            return self.get(path)
        except (OSError, urllib.error.URLError):
            return None

    def status(self):
        s, _, b = self.get("/admin/status")
        check(s == 200, "/admin/status answered %d" % s)
        return json.loads(b)

    def service(self, name="echo"):
        for s in self.status()["services"]:
            if s["name"] == name:
                return s
        fail("service %s missing from status" % name)

    def metrics(self):
        s, _, b = self.get("/metrics")
        check(s == 200, "/metrics answered %d" % s)
        return b.decode()

    def metric(self, line_prefix):
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.split()[-1])
        return None

    # ---- lifecycle ----
    def wait_up(self, timeout=15):
        def up():
            check(self.proc.poll() is None, "node exited early (%s); log:\n%s" %
                  (self.proc.returncode, self.logs()))
            r = self.try_get("/healthz")
            return r is not None and r[0] == 200
        wait_for(up, timeout, "node healthy")
        return self

    def wait_running(self, name="echo", timeout=10, not_pid=None):
        def ok():
            s = self.service(name)
            if s["state"] == "running" and s["healthy"] and s["pid"] and s["pid"] != not_pid:
                return s
            return None
        return wait_for(ok, timeout, "service %s running" % name)

    def logs(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_lines(self):
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_log(self, text, timeout=5):
        return wait_for(lambda: text in self.logs(), timeout, "log line containing %r" % text)

    def operator_cap(self, timeout=15):
        """This node's operator capability: <data-dir>/operator.cap (see
        operator_cap()), or in amnesia the `operator capability: TOKEN` line
        the node prints once on stderr."""
        path = os.path.join(self.data_dir, "operator.cap")

        def found():
            if os.path.exists(path) and os.path.getsize(path) > 0:
                with open(path) as f:
                    return f.read().strip()
            for line in self.logs().splitlines():
                if line.startswith("operator capability: "):
                    return line.split(": ", 1)[1].strip()
            return None
        return wait_for(found, timeout, "the operator capability of the node in " + self.data_dir)

    def auth_header(self, timeout=15):
        """curl arguments sending the operator capability as a Bearer token."""
        return ["-H", "Authorization: Bearer " + self.operator_cap(timeout)]

    def ron(self, *args, timeout=10):
        e = dict(self.env)
        e["RON_ADMIN"] = self.admin
        e.setdefault("RON_DATA_DIR", self.data_dir)  # the client finds operator.cap there
        return subprocess.run([RON] + list(args), capture_output=True, text=True, env=e,
                              timeout=timeout)

    def child_pids(self):
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        st = f.read().split(")")[-1].split()
                    if int(st[1]) == self.proc.pid:
                        out.append(int(d))
                except OSError:
                    pass
        return out

    def stop(self, sig=signal.SIGTERM, timeout=5):
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("node did not exit within %.1f s of signal %d" % (timeout, sig))
        return rc, time.monotonic() - t0

    def kill(self):
        if self in _live:
            _live.remove(self)
        kids = self.child_pids() if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def rss_kib(pid, field="RssAnon"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


GUARD_HEAD_RE = re.compile(r'^guard_authority_head\{([^}]*)\} (\S+)$')


def guard_heads(node):
    """{service: guard_authority_head} from the node's admin /metrics: how far
    each process's guard has followed the kernel's capability authority."""
    out = {}
    r = node.try_get("/metrics")
    if r is None or r[0] != 200:
        return out
    for line in r[2].decode().splitlines():
        m = GUARD_HEAD_RE.match(line)
        if m:
            labels = dict(kv.split("=", 1) for kv in m.group(1).split(","))
            out[labels["service"].strip('"')] = int(float(m.group(2)))
    return out


def cap_token_id(tok):
    """The identifier (ron1:...) of a capability token, by `ron cap verify --json`."""
    r = subprocess.run([RON, "cap", "verify", "-", "--json"], input=tok, capture_output=True,
                       text=True, timeout=10)
    m = re.search(r'"id":"(ron1:[^"]+)"', r.stdout)
    check(m is not None, "cap verify shows the id: %r %r" % (r.stdout, r.stderr))
    return m.group(1)


APP_HDR = struct.Struct(">IHHHH16sHQ")  # OAP/1: len ver flags code app tenant cap_len corr_id
APP_REQ, APP_RESP, APP_EVENT, APP_START, APP_END = 0x1, 0x2, 0x4, 0x8, 0x10


class AppProbe:
    """A raw OAP/1 client of the app port (addr HOST:PORT): one `list` (needs
    pin) per call with a token, to see exactly when a token is refused."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=5)
        self.buf = b""
        self.corr = 1
        self.send(APP_REQ | APP_START | APP_END, 0, b'{"ua":"probe"}', b"")
        check(self.recv_for(1)[1] == 200, "probe HELLO")

    def send(self, flags, app, payload, cap):
        self.s.sendall(APP_HDR.pack(38 + len(cap) + len(payload), 1, flags, 0, app, b"\0" * 16,
                                len(cap), self.corr) + cap + payload)

    def recv_for(self, corr):
        for _ in range(1000):
            while len(self.buf) < 38 or len(self.buf) < struct.unpack(">I", self.buf[:4])[0]:
                b = self.s.recv(1 << 16)
                check(b, "probe connection open")
                self.buf += b
            n = struct.unpack(">I", self.buf[:4])[0]
            _, _, flags, code, app, _, cap_len, c = APP_HDR.unpack(self.buf[:38])
            payload = self.buf[38 + cap_len:n]
            self.buf = self.buf[n:]
            if c == corr and not (app == 0 and flags & APP_EVENT):
                return flags, code, payload
        check(False, "probe: no answer")

    def list_with(self, tok):
        """(status, envelope reason or "") of a `list` with tok."""
        self.corr += 1
        self.send(APP_REQ | APP_START | APP_END, 1, b'{"op":"list","limit":"1"}', tok.encode())
        _, code, payload = self.recv_for(self.corr)
        reason = json.loads(payload).get("reason", "") if code >= 400 else ""
        return code, reason

    def close(self):
        self.s.close()


def ron_at(binary, app, data_dir, *args, stdout=subprocess.PIPE, timeout=300, cap=None):
    """`BINARY ARGS --node APP` as a plain client: no RON_ADMIN/RON_CAP/RON_NODE
    from the caller's environment, RON_DATA_DIR = data_dir, and cap (the
    capability to send as RON_CAP) when given. Returns the CompletedProcess."""
    e = dict(os.environ)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
        e.pop(k, None)
    e["RON_DATA_DIR"] = data_dir
    if cap:
        e["RON_CAP"] = cap
    return subprocess.run([binary] + list(args) + ["--node", app], stdout=stdout,
                          stderr=subprocess.PIPE, env=e, timeout=timeout)


def dht_listen(n, timeout=30):
    """The UDP address node n's dht service listens on (a seed for others)."""
    return n.wait_running("dht", timeout=timeout)["listen"]
