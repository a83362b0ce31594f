"""ronnet.py - multi-node helpers: a cluster of real `ron node` processes, on
loopback or each in its own network namespace (the netns test bed of
docs/runbooks/netns-test.md: a router namespace with a bridge, a TUN device
served by ron-delayrelay for delay, and nftables rules for loss).

Everything started here is killed and every namespace deleted when the test
ends (atexit and SIGTERM, through ronnode's cleanup list); every wait is
bounded. Namespaces need root; netns_unavailable() says why they cannot be
used, so a suite can skip with a clear message.
"""
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import ronnode
from ronnode import RON, check, fail, wait_for

SERVICES = "storage,index,gateway,app,dht,overlay"
# Service children send their metrics with each heartbeat: 100 ms (instead of
# 500) keeps /metrics at most ~0.1 s behind, so counters settle quickly.
HEARTBEAT_MS = 100
RELAY = os.environ.get("RON_RELAY") or os.path.join(os.path.dirname(RON), "ron-delayrelay")

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------- namespaces

def netns_unavailable():
    """None when network namespaces, TUN and nftables can be used here, else why not."""
    if os.geteuid() != 0:
        return "not root (the netns suite needs root: sudo make netns-test)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if shutil.which("nft") is None:
        return "nftables (`nft`) is not installed (scripts/deps.sh installs it)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    probe = "ronprobe%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "`ip netns add` failed: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*argv, ns=None, check_rc=True, timeout=20, input=None):
    """Run argv (inside namespace ns when given); returns CompletedProcess (text)."""
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
    if check_rc and r.returncode != 0:
        fail("%s: exit %d: %s" % (" ".join(full), r.returncode, r.stderr.strip()))
    return r


def ns_socket(ns, family=socket.AF_INET, type=socket.SOCK_STREAM):
    """A socket created inside namespace ns (None: the current one). The
    calling thread enters ns only for the socket() call; the socket stays
    in ns for its whole life."""
    if ns is None:
        return socket.socket(family, type)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/" + ns, os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            fail("setns(%s): %s" % (ns, os.strerror(ctypes.get_errno())))
        try:
            return socket.socket(family, type)
        finally:
            if _libc.setns(own, _CLONE_NEWNET) != 0:
                fail("setns back: %s" % os.strerror(ctypes.get_errno()))
    finally:
        os.close(own)
        os.close(target)


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def http_request(addr, method, path, body=None, ns=None, timeout=10.0, headers=None):
    """One HTTP/1.1 request to addr "HOST:PORT" (from inside ns when given).
    Returns (status, headers dict lower-case, body bytes); OSError on a
    connection failure."""
    host, port = split_addr(addr)

    class _Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = ns_socket(ns)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))

    c = _Conn(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def metric_sum(text, name, label=None):
    """Sum of every sample of metric `name` in Prometheus text (labels that
    contain the string `label`, when given); None when there is none."""
    total, seen = 0.0, False
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name and (label is None or label in (m.group(2) or "")):
            try:
                total += float(m.group(3))
                seen = True
            except ValueError:
                pass
    return total if seen else None


# ---------------------------------------------------------------- the test bed

class NetBed:
    """N node namespaces and one router namespace (docs/runbooks/netns-test.md).

    Node i (0-based) lives in namespace `<tag>n<i>` with address
    10.77.0.<10+i>/32 on eth0, a veth whose peer is a port of bridge br0 in
    the router namespace `<tag>r` (10.77.0.1/24). Every node routes
    everything via 10.77.0.1, and the router sends every packet that comes
    in on br0 to TUN device rtun0 (policy rule iif br0 -> table 100), where
    ron-delayrelay holds it and writes it back; the kernel then forwards it
    out of br0 to its destination. Loss: nftables table `inet ronnet` in
    the router, chain `lossy` drops `numgen random mod 100 < loss` of the
    packets coming in on br0 (each packet between two nodes once) and counts
    them in named counter `lost` (`seen` counts every such packet)."""

    SUBNET = "10.77.0"
    _count = 0

    def __init__(self, n, delay_ms=0, jitter_ms=0, loss_pct=0, routes=(), relay=True):
        if not (1 <= n <= 200):
            fail("NetBed: 1..200 nodes")
        self.n = n
        NetBed._count += 1  # several beds in one process get distinct names
        self.tag = "ron%d%s" % (os.getpid() % 100000, chr(ord("a") + NetBed._count % 26))
        self.router = self.tag + "r"
        self.dir = tempfile.mkdtemp(prefix="ron-netbed-")
        self.relay_proc = None
        self.relay_log = None
        self.stats_path = os.path.join(self.dir, "relay.json")
        self.created = []
        ronnode._live.append(self)  # kill() on exit, like a node
        try:
            self._build()
            self.set_loss(loss_pct)
            if relay:
                self.start_relay(delay_ms, jitter_ms, routes)
        except BaseException:
            self.kill()
            raise

    def ns(self, i):
        return "%sn%d" % (self.tag, i)

    def addr(self, i):
        return "%s.%d" % (self.SUBNET, 10 + i)

    def _build(self):
        r = self.router
        sh("ip", "netns", "add", r)
        self.created.append(r)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "br0", "type", "bridge"],
                    ["ip", "addr", "add", self.SUBNET + ".1/24", "dev", "br0"],
                    ["ip", "link", "set", "br0", "up"],
                    ["ip", "tuntap", "add", "dev", "rtun0", "mode", "tun"],
                    ["ip", "link", "set", "rtun0", "up"],
                    ["ip", "route", "add", "default", "dev", "rtun0", "table", "100"],
                    ["ip", "rule", "add", "iif", "br0", "lookup", "100", "pref", "100"],
                    ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                    ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"],
                    ["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"],
                    ["sysctl", "-qw", "net.ipv4.conf.rtun0.rp_filter=0"],
                    # written-back packets enter on rtun0 and leave on br0; the
                    # bridge must not send ICMP redirects for node-to-node paths
                    ["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"],
                    ["sysctl", "-qw", "net.ipv4.conf.br0.send_redirects=0"]):
            sh(*cmd, ns=r)
        for i in range(self.n):
            ns, peer = self.ns(i), "%sv%d" % (self.tag, i)
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            sh("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", peer, "netns", r)
            sh("ip", "link", "set", peer, "master", "br0", ns=r)
            sh("ip", "link", "set", peer, "up", ns=r)
            for cmd in (["ip", "link", "set", "lo", "up"],
                        ["ip", "addr", "add", self.addr(i) + "/32", "dev", "eth0"],
                        ["ip", "link", "set", "eth0", "up"],
                        ["ip", "route", "add", self.SUBNET + ".1", "dev", "eth0"],
                        ["ip", "route", "add", "default", "via", self.SUBNET + ".1"]):
                sh(*cmd, ns=ns)

    # ---- loss (nftables) ----
    def set_loss(self, pct):
        """Drop pct % (0..100) of the packets between nodes; counters restart at 0."""
        if not (0 <= pct <= 100):
            fail("loss must be 0..100")
        sh("nft", "delete", "table", "inet", "ronnet", ns=self.router, check_rc=False)
        rules = ("table inet ronnet {\n"
                 "  counter seen { }\n"
                 "  counter lost { }\n"
                 "  chain lossy {\n"
                 "    type filter hook forward priority 0; policy accept;\n"
                 "    iifname \"br0\" counter name \"seen\"\n")
        if pct > 0:
            rules += "    iifname \"br0\" numgen random mod 100 < %d counter name \"lost\" drop\n" % pct
        rules += "  }\n}\n"
        sh("nft", "-f", "-", ns=self.router, input=rules)

    def nft_counter(self, name):
        """Packets counted so far by named counter `seen` or `lost`."""
        r = sh("nft", "-j", "list", "counter", "inet", "ronnet", name, ns=self.router)
        for item in json.loads(r.stdout)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        fail("nft counter %s missing" % name)

    # ---- delay (ron-delayrelay) ----
    def start_relay(self, delay_ms=0, jitter_ms=0, routes=(), queue=None, throttles=()):
        """(Re)start the relay on rtun0. routes: ("CIDR=MS[+J]", ...) by
        destination; throttles: ("CIDR=KBIT", ...) by source."""
        self.stop_relay()
        check(os.access(RELAY, os.X_OK), "relay binary %s missing (ninja ron-delayrelay)" % RELAY)
        argv = ["ip", "netns", "exec", self.router, RELAY, "--dev", "rtun0",
                "--delay", str(delay_ms), "--jitter", str(jitter_ms), "--stats", self.stats_path]
        for rt in routes:
            argv += ["--route", rt]
        for t in throttles:
            argv += ["--throttle", t]
        if queue is not None:
            argv += ["--queue", str(queue)]
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        self.relay_log = open(os.path.join(self.dir, "relay.log"), "ab")
        self.relay_proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.relay_log,
                                           stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.stats_path) or self.relay_proc.poll() is not None,
                 5, "relay started")
        check(self.relay_proc.poll() is None, "relay exited: %s" % self.relay_logs())

    def relay_stats(self):
        """The relay's counters (rewritten by it every second and at exit)."""
        with open(self.stats_path) as f:
            return json.load(f)

    def relay_logs(self):
        with open(os.path.join(self.dir, "relay.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop_relay(self, timeout=5):
        """SIGTERM the relay; returns its exit code (None when none ran)."""
        p, self.relay_proc = self.relay_proc, None
        if p is None:
            return None
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
            fail("relay did not exit within %.1f s of SIGTERM" % timeout)
        self.relay_log.close()
        return rc

    def kill(self):
        if self in ronnode._live:
            ronnode._live.remove(self)
        if self.relay_proc is not None and self.relay_proc.poll() is None:
            self.relay_proc.kill()
            self.relay_proc.wait(timeout=5)
        self.relay_proc = None
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = []
        shutil.rmtree(self.dir, ignore_errors=True)

    close = kill


# ---------------------------------------------------------------- nodes

class NetNode(ronnode.Node):
    """A `ron node` running services `SERVICES` with its own listeners:
    on loopback (ns None, host 127.0.0.1, free ports) or inside namespace
    ns (admin, http and app on 127.0.0.1 there; overlay and dht on `host`,
    the node's bed address, at the default ports)."""

    def __init__(self, ns=None, host="127.0.0.1", seeds=(), services=SERVICES, extra=(),
                 data_dir=None, advertise=None, heartbeat_ms=HEARTBEAT_MS):
        """data_dir: use this (existing) data directory, e.g. one whose keys
        a test peer shares; advertise: the overlay address put in provider
        records (default: the node's own overlay listener); heartbeat_ms:
        how often the services report (and so how fresh /metrics is)."""
        self.ns = ns
        self.host = host
        self.dir = data_dir or tempfile.mkdtemp(prefix="ron-net-")
        if ns is None:
            # port 0 everywhere (no race with other tests for a port picked
            # in advance); the bound addresses are read from the node's log
            self.admin = self.http_addr = self.app_addr = "127.0.0.1:0"
            self.overlay_addr = self.dht_addr = host + ":0"
        else:
            self.admin, self.http_addr, self.app_addr = \
                "127.0.0.1:8080", "127.0.0.1:8090", "127.0.0.1:9090"
            self.overlay_addr, self.dht_addr = host + ":5301", host + ":5302"
        self.log_path = os.path.join(self.dir, "node.log")
        self.config_path = os.path.join(self.dir, "node.json")
        argv = ([] if ns is None else ["ip", "netns", "exec", ns]) + [
            RON, "node", "--admin", self.admin, "--data-dir", self.dir,
            "--http", self.http_addr, "--app", self.app_addr,
            "--overlay", self.overlay_addr, "--dht", self.dht_addr,
            "--set", "services=" + services, "--set", "supervisor.heartbeat_ms=%d" % heartbeat_ms]
        if advertise or ns is not None:
            argv += ["--advertise", advertise or self.overlay_addr]
        for s in seeds:
            argv += ["--seed", s]
        argv += list(extra)
        e = dict(os.environ)
        for k in ("RON_ADMIN", "RON_NODE", "RON_CAP", "RON_DATA_DIR"):
            e.pop(k, None)
        self.env = e
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=e)
        ronnode._live.append(self)
        if ns is None:
            self._learn_addrs(services.split(","))

    _BOUND = {"gateway": ("http_addr", "listening on "), "app": ("app_addr", "listening on "),
              "overlay": ("overlay_addr", "listening on "), "dht": ("dht_addr", "udp on ")}

    def _learn_addrs(self, services, timeout=20):
        """Read the addresses the kernel bound (port 0) from the node's log."""
        def learned():
            check(self.proc.poll() is None, "node exited early (%s); log:\n%s" %
                  (self.proc.returncode, self.logs()))
            found = {}
            for rec in self.log_lines():
                msg = rec.get("msg", "")
                m = re.match(r"node up: .*admin http://([^,]+),", msg)
                if m:
                    found["admin"] = m.group(1)
                m = re.match(r"service (\w+): (listening on|udp on) (\S+) ", msg)
                if m and m.group(1) in self._BOUND:
                    found[self._BOUND[m.group(1)][0]] = m.group(3)
            want = {"admin"} | {self._BOUND[s][0] for s in services if s in self._BOUND}
            return found if want <= set(found) else None
        for k, v in wait_for(learned, timeout, "node up with its bound addresses").items():
            setattr(self, k, v)

    # ---- HTTP on the admin port and the gateway ----
    def http(self, method, path, timeout=3.0):
        return http_request(self.admin, method, path, ns=self.ns, timeout=timeout,
                            body=b"" if method == "POST" else None)

    def gw(self, method, path, body=None, timeout=30.0, headers=None):
        """A request to the node's gateway: (status, headers, body)."""
        return http_request(self.http_addr, method, path, body=body, ns=self.ns, timeout=timeout,
                            headers=headers)

    def operator_cap(self, timeout=15.0):
        """The node's operator capability (<data-dir>/operator.cap, written by the
        kernel on first start): writes need a capability since issue 5."""
        path = os.path.join(self.dir, "operator.cap")
        wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout,
                 "operator.cap in " + self.dir)
        with open(path) as f:
            return f.read().strip()

    def gw_put(self, data, timeout=30.0):
        """POST data to the gateway's /o with the operator capability (Bearer),
        retrying 503 for up to 10 s; returns its address."""
        deadline = time.monotonic() + 10
        auth = {"Authorization": "Bearer " + self.operator_cap()}
        while True:
            s, h, b = self.gw("POST", "/o", body=data, timeout=timeout, headers=auth)
            if s != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check(s in (200, 201), "POST /o answered %d: %r" % (s, b[:200]))
        return json.loads(b)["address"]

    # ---- the CLI (app port) ----
    def ron(self, *args, timeout=30, binary=False, stdin=None):
        """`ron ARGS` against this node's app port, with its operator capability."""
        e = dict(self.env)
        e["RON_ADMIN"] = self.admin
        e["RON_NODE"] = self.app_addr
        e["RON_DATA_DIR"] = self.dir
        argv = ([] if self.ns is None else ["ip", "netns", "exec", self.ns]) + [RON] + list(args)
        return subprocess.run(argv, capture_output=True, text=not binary, env=e, timeout=timeout,
                              input=stdin)

    # ---- state ----
    def metric_total(self, name, label=None):
        """Sum of metric `name` over its samples (0 when absent)."""
        v = metric_sum(self.metrics(), name, label)
        return v or 0.0

    def wait_metric(self, name, at_least, timeout=5.0, label=None):
        """Wait until metric `name` (summed) is >= at_least; returns it."""
        return wait_for(lambda: (lambda v: v if v >= at_least else None)(
            self.metric_total(name, label)), timeout, "%s >= %s" % (name, at_least))

    def settled(self, name, label=None):
        """metric_total(name) after the services' next reports (3 heartbeats)."""
        time.sleep(3 * HEARTBEAT_MS / 1000.0)
        return self.metric_total(name, label)

    def dht_contacts(self):
        """The dht_contacts gauge (None when the node does not export it)."""
        try:
            return metric_sum(self.metrics(), "dht_contacts")
        except OSError:
            return None

    def kill9(self):
        """SIGKILL the node process and its service children at once (a crash)."""
        kids = self.child_pids() if self.proc.poll() is None else []
        for pid in [self.proc.pid] + kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=5)


class Cluster:
    """n nodes; node 0 is the seed of the others (`--seed` = its DHT address).
    bed: a NetBed (node i in bed.ns(i) at bed.addr(i)), or None for loopback."""

    def __init__(self, n, bed=None, services=SERVICES, extra=(), node_args=None):
        """node_args: {index: dict of extra NetNode keyword arguments}."""
        self.bed = bed
        self.nodes = []
        for i in range(n):
            ns = bed.ns(i) if bed else None
            host = bed.addr(i) if bed else "127.0.0.1"
            seeds = [self.nodes[0].dht_addr] if i > 0 else []
            self.nodes.append(NetNode(ns=ns, host=host, seeds=seeds, services=services,
                                      extra=extra, **(node_args or {}).get(i, {})))

    def add_node(self, **kw):
        """Start one more node (seeded with node 0) and return it (not waited for)."""
        i = len(self.nodes)
        if self.bed is not None:
            check(i < self.bed.n, "the bed has no namespace for node %d" % i)
            kw.setdefault("ns", self.bed.ns(i))
            kw.setdefault("host", self.bed.addr(i))
        node = NetNode(seeds=[self.nodes[0].dht_addr], **kw)
        self.nodes.append(node)
        return node

    def wait_up(self, timeout=30):
        for node in self.nodes:
            node.wait_up(timeout)
        for node in self.nodes:
            for svc in SERVICES.split(","):
                node.wait_running(svc, timeout=timeout)
        return self

    def wait_dht(self, min_contacts=1, timeout=30):
        """Wait until every live node's dht_contacts >= min_contacts."""
        def ok():
            for node in self.nodes:
                if node.proc.poll() is None:
                    c = node.dht_contacts()
                    if c is None or c < min_contacts:
                        return False
            return True
        wait_for(ok, timeout, "every node's DHT has >= %d contacts" % min_contacts)
        return self

    def metric_totals(self, name, label=None):
        """[metric_total(name) of each live node] (None for a dead one)."""
        return [n.metric_total(name, label) if n.proc.poll() is None else None
                for n in self.nodes]

    def close(self):
        for node in self.nodes:
            node.kill()
        self.nodes = []


EVIL = os.environ.get("RON_EVIL_PEER") or os.path.join(os.path.dirname(RON), "ovl_evil_peer")


class EvilPeer:
    """ovl_evil_peer in serve mode (src/svc-overlay/ovl_evil_peer.c): a peer
    on the real overlay code that serves one file and can corrupt a piece
    (corrupt_piece: an index, or "all") or trickle (rate, bytes/s). With key_dir it uses (or
    creates) the node keys in key_dir/keys, so a node started with that
    data dir and `--advertise` = this peer's address announces records that
    send fetchers here under the node's id. Killed at exit."""

    def __init__(self, path, key_dir, listen=None, corrupt_piece=None, rate=None, ns=None):
        self.listen = listen or "127.0.0.1:0"
        argv = ([] if ns is None else ["ip", "netns", "exec", ns]) + [
            EVIL, "--file", path, "--key-dir", key_dir, "--listen", self.listen]
        if corrupt_piece is not None:
            argv += ["--corrupt-piece", str(corrupt_piece)]
        if rate is not None:
            argv += ["--rate", str(rate)]
        check(os.access(EVIL, os.X_OK), "%s missing (ninja ovl_evil_peer)" % EVIL)
        self.log_path = os.path.join(key_dir, "evil.log")
        self.out_path = os.path.join(key_dir, "evil.out")
        self.err = open(self.log_path, "wb")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.err)
        ronnode._live.append(self)

        def hello():
            check(self.proc.poll() is None, "evil peer exited: %s" % self.logs())
            with open(self.out_path) as f:
                line = f.readline()
            return json.loads(line) if line.endswith("\n") else None
        self.info = wait_for(hello, 15, "evil peer listening")
        self.id = self.info["id"]
        self.addr = self.info["addr"]  # the bound address

    def logs(self):
        self.err.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        if self in ronnode._live:
            ronnode._live.remove(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.err.close()
        self.out.close()
