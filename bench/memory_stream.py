#!/usr/bin/env python3
"""bench/memory_stream.py BUILD_DIR - does a large transfer make a node hold it in memory?

Runs a release `ron node` (macro profile, persistent store, services
storage,index,gateway) and samples the RssAnon of every node process (the
kernel and each child) every 200 ms while:

  put-fast   a 4 GiB object is uploaded with POST /o as fast as the node takes it;
  get-fast   the same object is downloaded as fast as curl reads it;
  get-1MB/s  it is downloaded by curl --limit-rate 1M for SLOW_SECONDS;
  put-1MB/s  another 4 GiB upload is fed at 1 MB/s for SLOW_SECONDS, then cut.

A 4 GiB object at 1 MB/s takes 72 minutes; the slow phases run SLOW_SECONDS
(default 60) of such a transfer, which is enough to see whether memory
follows the bytes in flight (it would grow by ~1 MB/s) or stays flat.
Prints one line per phase: `phase=<name> process=<name> base_kib=.. peak_kib=.. growth_kib=..`
for the process that grew most, and `address=b3:..` after the upload.
The uploads carry the node's operator capability (<data-dir>/operator.cap,
`Authorization: Bearer`): writes need one since issue 5. The two downloads
are anonymous (the shipped policy allows content reads).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BUILD = sys.argv[1]
RON = os.path.join(BUILD, "ron")
SIZE = int(os.environ.get("STREAM_BYTES", str(4 << 30)))
SLOW_SECONDS = int(os.environ.get("SLOW_SECONDS", "60"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_pids(admin, kernel_pid):
    with urllib.request.urlopen("http://%s/admin/status" % admin, timeout=3) as r:
        st = json.loads(r.read())
    pids = {"kernel": kernel_pid}
    for s in st["services"]:
        if s.get("pid"):
            pids[s["name"]] = s["pid"]
    return pids


class Sampler:
    """Peak RssAnon per process between start() and stop()."""

    def __init__(self, pids):
        self.pids = pids
        self.base = {n: rss_kib(p) for n, p in pids.items()}
        self.peak = dict(self.base)
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done.wait(0.2):
            for n, p in self.pids.items():
                self.peak[n] = max(self.peak[n], rss_kib(p))

    def stop(self, phase):
        self.done.set()
        self.t.join()
        name = max(self.pids, key=lambda n: self.peak[n] - self.base[n])
        print("phase=%s process=%s base_kib=%d peak_kib=%d growth_kib=%d" %
              (phase, name, self.base[name], self.peak[name], self.peak[name] - self.base[name]),
              flush=True)


def feed(proc, total, rate):
    """Write total pseudo-random bytes to proc.stdin, at rate bytes/s (0: flat out)."""
    block = os.urandom(1 << 20)
    sent, t0 = 0, time.monotonic()
    chunk = 1 << 16 if rate else 1 << 20
    try:
        while sent < total:
            n = min(chunk, total - sent)
            off = sent % len(block)
            piece = block[off:off + n]
            if len(piece) < n:
                piece += block[:n - len(piece)]
            proc.stdin.write(piece)
            sent += n
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        proc.stdin.close()
    except (BrokenPipeError, ValueError):
        pass


def main():
    d = tempfile.mkdtemp(prefix="ron-bench-stream-")
    admin, http = "127.0.0.1:%d" % port(), "127.0.0.1:%d" % port()
    node = subprocess.Popen(
        [RON, "node", "--profile", "macro", "--no-amnesia", "--data-dir", d, "--admin", admin,
         "--http", http, "--config", os.path.join(ROOT, "bench/config/node-gateway-bench.json"),
         "--set", "services=storage,index,gateway", "--set", "log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen("http://%s/readyz" % admin, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("node did not become ready")
                time.sleep(0.1)
        cap_path = os.path.join(d, "operator.cap")
        deadline = time.monotonic() + 15
        while not (os.path.exists(cap_path) and os.path.getsize(cap_path) > 0):
            if time.monotonic() > deadline:
                raise SystemExit("no operator.cap in " + d)
            time.sleep(0.1)
        with open(cap_path) as f:
            auth = "Authorization: Bearer " + f.read().strip()
        time.sleep(1)
        pids = node_pids(admin, node.pid)

        s = Sampler(pids)
        curl = subprocess.Popen(["curl", "-sS", "-H", "Expect:", "-H", auth, "-H",
                                 "Content-Type: application/octet-stream", "-T", "-", "-X", "POST",
                                 "http://%s/o" % http], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        feed(curl, SIZE, 0)
        out = curl.stdout.read()
        curl.wait()
        s.stop("put-fast")
        addr = json.loads(out)["address"]
        print("address=%s" % addr, flush=True)

        s = Sampler(pids)
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "http://%s/o/%s" % (http, addr)],
                       check=True)
        s.stop("get-fast")

        s = Sampler(pids)
        slow = subprocess.Popen(["curl", "-sS", "--limit-rate", "1M", "-o", "/dev/null",
                                 "http://%s/o/%s" % (http, addr)])
        time.sleep(SLOW_SECONDS)
        slow.kill()
        slow.wait()
        s.stop("get-1MB/s")

        s = Sampler(pids)
        curl = subprocess.Popen(["curl", "-sS", "-H", "Expect:", "-H", auth, "-T", "-", "-X",
                                 "POST", "http://%s/o" % http], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = threading.Thread(target=feed, args=(curl, SIZE, 1 << 20), daemon=True)
        t.start()
        time.sleep(SLOW_SECONDS)
        curl.kill()
        curl.wait()
        s.stop("put-1MB/s")
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=5)
        except subprocess.TimeoutExpired:
            node.kill()
        subprocess.run(["rm", "-rf", d])


main()
