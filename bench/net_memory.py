#!/usr/bin/env python3
"""bench/net_memory.py BUILD_DIR RUNS - RssAnon of a network node under the
issue-4 load: 1,000 DHT routing-table contacts and 100 overlay peer sessions.

Per run and profile (micro: one process, amnesia; macro: kernel + one child
per service, persistent data dir), a release `ron node` with the default
services (storage,index,gateway,app,dht,overlay) on ephemeral ports:
  idle    3 s after every service is healthy;
  target  after the DHT table holds 1,000 contacts and the overlay 100
          sessions, then HOLD_S (16) s of keepalive;
  busy    target, and every peer has sent one frame of the negotiated
          max_frame (an overlay EVENT the node drops): the most a peer may
          legally make the node buffer;
  ceiling busy with every bucket full (5,051 contacts possible) and 256
          sessions (tx_peer's max_conns): the most a node admits.
The contacts: one UDP socket per contact on 127.0.0.1 in this process, each with
its own node id, speaking the DHT datagram format (docs/protocol/dht.md §2:
one OAP/1 frame, app_proto_id 5). Bucket i holds ids sharing exactly i
leading bits with the node's id, at most k = 20: random ids would fill only
the first few buckets, so ids are made per bucket: bucket i (i = 0 ..
contacts/20 - 1) gets 20 ids that copy the node id's first i bits, flip bit
i and are random after it, distinct while the bucket's id space lasts
(deep buckets have fewer than 20 possible ids; the spare sockets repeat an
id, which the node ignores from another address). Each socket PINGs the node (the node adds every
valid sender to its table) and answers whatever the node asks (PING,
FIND_NODE and FIND_VALUE with no contacts), so no contact times out.
The sessions: `ovl_evil_peer --hold N --dial ID@OVERLAY`, one process
dialling the node's overlay N times, each session from its own fresh
node key, kept up by the overlay keepalive (real TLS 1.3 + OAP/1).
Counts are read from the node: dht_contacts and overlay_sessions in /metrics.
Prints one line per run and profile:
  profile=micro phase=idle|target|busy|ceiling total_kib=.. vmrss_kib=.. contacts=N sessions=N detail=name:kib,..
"""
import json
import os
import random
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

build, runs = sys.argv[1], int(sys.argv[2])
ron = os.path.join(build, "ron")
evil = os.path.join(build, "ovl_evil_peer")
K = 20
# seconds from the last session up to the sample: target includes one overlay
# keepalive round (15 s); busy and ceiling are sampled once the frames are in
HOLD_S = float(os.environ.get("HOLD_S", "16"))
HOLD_BUSY_S = float(os.environ.get("HOLD_BUSY_S", "5"))
# (name, contacts, sessions, big frames): the target; busy: the
# target load where every peer has sent one frame as large as the node
# agreed to take (ovl_evil_peer --big-frame), the most a peer may legally
# make the node buffer; ceiling: busy at the limits a node enforces,
# tx_peer's max_conns (256 sessions) and every bucket as full as ids allow
# (buckets 251..255 have fewer than 20 possible ids: 5,051 in all)
SCENARIOS = [("target", 1000, 100, False), ("busy", 1000, 100, True),
             ("ceiling", 5120, 256, True)]
if os.environ.get("SCENARIOS"):
    SCENARIOS = [s for s in SCENARIOS if s[0] in os.environ["SCENARIOS"].split(",")]
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "config", "net-memory.json")

# ---- the DHT datagram format (docs/protocol/dht.md §2) ----
OAP_HDR = struct.Struct(">IHHHH16sHQ")  # len ver flags code app tenant cap_len corr
F_REQ, F_RESP, F_START, F_END = 0x1, 0x2, 0x8, 0x10
APP_DHT = 5
OP_PING, OP_FIND_NODE, OP_FIND_VALUE = 1, 2, 3


def frame(flags, code, corr, payload):
    return OAP_HDR.pack(38 + len(payload), 1, flags, code, APP_DHT, bytes(16), 0, corr) + payload


def request(op, sender, corr):
    return frame(F_REQ | F_START | F_END, 0, corr, bytes([op, 0]) + sender + bytes(8))


def reply(op, sender, corr, body):
    return frame(F_RESP | F_END, 200, corr, bytes([op, 0]) + sender + os.urandom(8) + body)


def bucket_id(node_id, i):
    """A random id sharing exactly i leading bits with node_id."""
    n = int.from_bytes(node_id, "big")
    r = int.from_bytes(os.urandom(32), "big")
    keep = ((1 << 256) - 1) ^ ((1 << (256 - i)) - 1)  # the first i bits
    bit = 1 << (255 - i)
    v = (n & keep) | ((n ^ bit) & bit) | (r & (bit - 1))
    return v.to_bytes(32, "big")


class Contacts(threading.Thread):
    """count UDP sockets, each a DHT node that PINGs `node` and answers it."""

    def __init__(self, node_addr, node_id, count):
        super().__init__(daemon=True)
        self.node = node_addr
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.stop_flag = False
        self.answered = 0
        seen = set()
        for j in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            for _ in range(256):  # distinct ids while the bucket has any left
                ident = bucket_id(node_id, j // K)
                if ident not in seen:
                    break
            seen.add(ident)
            self.socks.append((s, ident))
            self.sel.register(s, selectors.EVENT_READ, ident)

    def ping_all(self):
        for s, ident in self.socks:
            try:
                s.sendto(request(OP_PING, ident, random.getrandbits(64)), self.node)
            except BlockingIOError:
                pass
            time.sleep(0.0005)  # ~2,000/s: well under any socket buffer

    def run(self):
        while not self.stop_flag:
            for key, _ in self.sel.select(timeout=0.2):
                s, ident = key.fileobj, key.data
                try:
                    data, src = s.recvfrom(2048)
                except BlockingIOError:
                    continue
                if len(data) < 38 + 42:
                    continue
                _, _, flags, _, _, _, _, corr = OAP_HDR.unpack_from(data)
                if not flags & F_REQ:
                    continue  # the replies to our PINGs
                op = data[38]
                body = b""
                if op == OP_FIND_NODE:
                    body = b"\x00"
                elif op == OP_FIND_VALUE:
                    body = data[38 + 42:38 + 42 + 32] + b"\x00\x00"
                elif op != OP_PING:
                    continue
                try:
                    s.sendto(reply(op, ident, corr, body), src)
                    self.answered += 1
                except BlockingIOError:
                    pass

    def close(self):
        self.stop_flag = True
        self.join(timeout=5)
        for s, _ in self.socks:
            self.sel.unregister(s)
            s.close()
        self.sel.close()


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss(pid, field="RssAnon"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def get(admin, path):
    with urllib.request.urlopen("http://%s%s" % (admin, path), timeout=5) as r:
        return r.read().decode()


def metric(admin, name):
    """Sum of a metric's samples (micro: one series; macro: one per service)."""
    total = 0.0
    for line in get(admin, "/metrics").splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def start(profile, d):
    admin = "127.0.0.1:%d" % port()
    dht = "127.0.0.1:%d" % udp_port()
    ovl = "127.0.0.1:%d" % port()
    argv = [ron, "node", "--profile", profile, "--admin", admin, "--data-dir", d,
            "--dht", dht, "--overlay", ovl,
            "--set", "http=127.0.0.1:0", "--set", "app=127.0.0.1:0",
            "--set", "log.level=warn"]
    if profile == "macro":
        argv.append("--no-amnesia")
    if os.path.exists(CONFIG):
        argv += ["--config", CONFIG]
    log = open(os.path.join(d, "node.log"), "w")
    node = subprocess.Popen(argv, stdout=log, stderr=log)
    t_end = time.monotonic() + 20
    while True:
        try:
            st = json.loads(get(admin, "/admin/status"))
            svcs = st["services"]
            if all(s["state"] == "running" and s["healthy"] for s in svcs):
                return node, admin, dht, ovl, st["node_id"], svcs
        except (OSError, ValueError, KeyError):
            pass
        if node.poll() is not None or time.monotonic() > t_end:
            node.kill()
            sys.stderr.write(open(os.path.join(d, "node.log")).read())
            raise SystemExit("%s node did not come up" % profile)
        time.sleep(0.05)


def measure(node, svcs):
    pids = [("kernel", node.pid)] + [(s["name"], s["pid"]) for s in svcs if s["pid"] != node.pid]
    seen, parts = set(), []
    for name, pid in pids:
        if pid in seen:
            continue
        seen.add(pid)
        parts.append((name, rss(pid)))
    return parts, sum(rss(pid, "VmRSS") for pid in seen)


def wait_for(what, fn, want, secs):
    t_end = time.monotonic() + secs
    v = fn()
    while v < want and time.monotonic() < t_end:
        time.sleep(0.2)
        v = fn()
    if v < want:
        sys.stderr.write("net_memory: %s reached %d of %d\n" % (what, v, want))
    return v


def line(profile, phase, parts, vmrss, contacts, sessions, peak=0):
    total = sum(k for _, k in parts)
    print("profile=%s phase=%s total_kib=%d vmrss_kib=%d contacts=%d sessions=%d peak_kib=%d detail=%s" % (
        profile, phase, total, vmrss, contacts, sessions, max(peak, total),
        ",".join("%s:%d" % p for p in parts)))
    sys.stdout.flush()


def one(profile, phase, n_contacts, n_sessions, big):
    d = tempfile.mkdtemp(prefix="ron-bench-netmem-")
    node = contacts = holder = None
    try:
        node, admin, dht, ovl, node_id, svcs = start(profile, d)
        time.sleep(3)
        parts, vm = measure(node, svcs)
        line(profile, "idle", parts, vm, metric(admin, "dht_contacts"),
             metric(admin, "overlay_sessions"))
        host, p = dht.rsplit(":", 1)
        contacts = Contacts((host, int(p)), bytes.fromhex(node_id), n_contacts)
        contacts.start()
        contacts.ping_all()
        want = sum(min(K, 1 << (255 - i)) for i in range((n_contacts + K - 1) // K))
        wait_for("dht_contacts", lambda: metric(admin, "dht_contacts"), want, 20)
        holder = subprocess.Popen([evil, "--hold", str(n_sessions), "--dial",
                                   "%s@%s" % (node_id, ovl)] + (["--big-frame"] if big else []),
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "hold.log"), "w"))
        # the peak: RssAnon summed every 0.2 s from the first session to the sample
        peak = [0]

        def sampled():
            peak[0] = max(peak[0], sum(k for _, k in measure(node, svcs)[0]))
            return metric(admin, "overlay_sessions")
        if wait_for("overlay_sessions", sampled, n_sessions, 60) < n_sessions:
            return False  # the load did not come up (a busy machine): the caller runs it again
        t_end = time.monotonic() + (HOLD_BUSY_S if big else HOLD_S)
        while time.monotonic() < t_end:
            peak[0] = max(peak[0], sum(k for _, k in measure(node, svcs)[0]))
            time.sleep(0.2)
        parts, vm = measure(node, svcs)
        n_c, n_s = metric(admin, "dht_contacts"), metric(admin, "overlay_sessions")
        line(profile, phase, parts, vm, n_c, n_s, peak[0])
        return True
    finally:
        if holder is not None:
            holder.send_signal(signal.SIGTERM)
            try:
                holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        if contacts is not None:
            contacts.close()
        if node is not None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        subprocess.run(["rm", "-rf", d])


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 6000)), hard))
for _ in range(runs):
    for phase, n_c, n_s, big in SCENARIOS:
        for prof in ("micro", "macro"):
            # a run whose sessions did not all come up is not a sample: up to 3 tries
            for attempt in range(3):
                if one(prof, phase, n_c, n_s, big):
                    break
                sys.stderr.write("net_memory: %s %s: sessions short, run again\n" % (prof, phase))
