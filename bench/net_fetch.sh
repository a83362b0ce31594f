#!/bin/sh
# bench/net_fetch.sh BUILD_DIR - fetch on miss across real nodes on loopback
# (tests/integration/ronnode.py): nodes A and B (macro) hold each object, C
# holds nothing. Measured, RUNS fresh objects each (a fresh address every
# run, so every C figure includes the DHT lookup and the overlay transfer):
#   - GET /o/b3:<hex> of a 1 MiB object through C's gateway (fetched) against
#     the same GET from A's gateway (stored there): median and p95 ms;
#   - `ron get` of a 64 MiB object through C's app port (fetched from A and B
#     in parallel) against `ron get` from A (local): median MB/s.
# Puts carry the operator capability of the node written to (RON_CAP); the
# GETs are anonymous (the shipped policy allows content reads; these few
# stay far below its 100/s per source).
# Writes bench/results/net_fetch.md. Env: RUNS (7), BIG_MIB (64).
set -eu
BUILD=${1:?usage: bench/net_fetch.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
RUNS=${RUNS:-7} BIG_MIB=${BIG_MIB:-64} RON_BIN=$BUILD/ron ROOT=$ROOT \
    python3 - <<'PY' | tee "$ROOT/bench/results/net_fetch.md"
import os, statistics, subprocess, sys, tempfile, time, urllib.request
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests", "integration"))
from ronnode import RON, Node, free_port, wait_for

RUNS, BIG = int(os.environ["RUNS"]), int(os.environ["BIG_MIB"]) << 20
SVC = "services=storage,index,gateway,app,dht,overlay"
env = {k: v for k, v in os.environ.items() if k not in ("RON_ADMIN", "RON_CAP", "RON_NODE")}


def node(seed=None):
    app, http = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
    args = ["--set", SVC, "--app", app, "--set", "http=" + http] + (["--seed", seed] if seed else [])
    n = Node(args).wait_up()
    n.app, n.http_addr = app, http
    return n


def put(n, data):
    p = tempfile.mktemp()
    with open(p, "wb") as f:
        f.write(data)
    e = dict(env, RON_CAP=n.operator_cap())  # writes need the node's capability (issue 5)
    r = subprocess.run([RON, "put", p, "--node", n.app], capture_output=True, env=e, timeout=300)
    os.unlink(p)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


def spread(data):
    # no wait for the records to reach C: `ron put` returns once its provider
    # record was accepted by the DHT's closest nodes (docs/protocol/storage.md,
    # "Announcing a put"), so C's lookup finds both A and B right away
    return [put(n, data) for n in (a, b)][0]


def http_ms(n, addr, size):
    t = time.monotonic()
    with urllib.request.urlopen("http://%s/o/%s" % (n.http_addr, addr), timeout=60) as r:
        body = r.read()
    assert len(body) == size
    return (time.monotonic() - t) * 1000


def get_mbs(n, addr, size):
    out = tempfile.mktemp()
    t = time.monotonic()
    r = subprocess.run([RON, "get", addr, "-o", out, "--node", n.app], capture_output=True, env=env,
                       timeout=600)
    dt = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(out) == size
    os.unlink(out)
    return size / dt / 1e6


a = node()
seed = a.wait_running("dht", timeout=20)["listen"]
b, c = node(seed), node(seed)
for n in (a, b, c):
    n.wait_running("overlay", timeout=20)
    wait_for(lambda: (n.metric('dht_contacts{service="dht"}') or 0) >= 2, 30, "dht contacts")

def miss_404(n):
    """Ready: the gateway answers a GET of an absent address with 404 (503 +
    Retry-After while it or its storage still connects its bus peers)."""
    try:
        urllib.request.urlopen("http://%s/o/b3:%s" % (n.http_addr, os.urandom(32).hex()), timeout=10)
    except urllib.error.HTTPError as e:
        return e.code == 404
    except OSError:
        return False
    return False


for n in (a, c):
    wait_for(lambda: miss_404(n), 30, "the gateway answers a miss with 404")

fetched, local, fetched_bw, local_bw = [], [], [], []
for i in range(RUNS):
    addr = spread(os.urandom(1 << 20))
    fetched.append(http_ms(c, addr, 1 << 20))
    local.append(http_ms(a, addr, 1 << 20))
for i in range(max(3, RUNS // 2)):
    addr = spread(os.urandom(BIG))
    fetched_bw.append(get_mbs(c, addr, BIG))
    local_bw.append(get_mbs(a, addr, BIG))
for n in (a, b, c):
    n.stop()


def p95(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]


fm, lm = statistics.median(fetched), statistics.median(local)
fb, lb = statistics.median(fetched_bw), statistics.median(local_bw)
print("## Fetch on miss (3 nodes on loopback, %s)\n" % os.path.basename(os.path.dirname(RON)))
print("Provisional: measured on a shared 2-core machine while other builds ran.")
print("Puts carry the node's operator capability (RON_CAP); the GETs are anonymous.\n")
print("| what | fetched through C | local on A | ratio |")
print("|---|---:|---:|---:|")
print("| GET of a fresh 1 MiB object via the gateway, median ms (%d runs) | %.1f | %.1f | %.1fx |"
      % (RUNS, fm, lm, fm / lm))
print("| same, p95 ms | %.1f | %.1f | %.1fx |" % (p95(fetched), p95(local), p95(fetched) / p95(local)))
print("| `ron get` of a fresh %d MiB object, median MB/s (%d runs) | %.0f | %.0f | %.2fx |"
      % (BIG >> 20, len(fetched_bw), fb, lb, fb / lb))
PY
