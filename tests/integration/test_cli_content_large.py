#!/usr/bin/env python3
"""A 1 GiB object streams through `ron put` and `ron get` against a real
macronode (storage and app services as children): the address equals what
`b3sum` prints, the bytes come back identical, and the `ron` client's
anonymous memory (RssAnon, sampled while it runs) stays bounded - far below
the object's size - both ways. Sized to finish well under a minute."""
import os
import subprocess
import tempfile
import time

from ronnode import RON, Node, check, free_port, rss_kib

SIZE = 1 << 30
RSS_LIMIT_KIB = 48 * 1024  # the client holds a chunk and a decoder buffer (~2 MiB); ASan adds its own


def run_sampled(argv, env, stdout=None):
    """Run argv, sampling RssAnon every 50 ms; returns (rc, stderr, peak KiB, seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None and time.monotonic() - t0 < 120:
        try:
            peak = max(peak, rss_kib(p.pid))
        except OSError:
            pass
        time.sleep(0.05)
    try:
        out, err = p.communicate(timeout=max(1, 120 - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, "%s did not finish within 120 s" % argv[1])
    return p.returncode, out, err, peak, time.monotonic() - t0


tmp = tempfile.mkdtemp(prefix="ron-big-")
src = os.path.join(tmp, "src")
dst = os.path.join(tmp, "dst")
block = os.urandom(1 << 20)
with open(src, "wb") as f:
    for i in range(SIZE >> 20):
        # distinct 1 MiB blocks without paying for 1 GiB of urandom
        f.write(i.to_bytes(8, "little") + block[8:])
want = "b3:" + subprocess.run(["b3sum", "--no-names", src], capture_output=True, text=True,
                              check=True).stdout.strip()
app = "127.0.0.1:%d" % free_port()
env = dict(os.environ, RON_DATA_DIR=tmp)
env.pop("RON_ADMIN", None)
n = Node(["--set", "services=storage,app", "--app", app]).wait_up()
try:
    env["RON_CAP"] = n.operator_cap()  # writes need a capability
    n.wait_running("app")
    rc, out, err, peak, took = run_sampled([RON, "put", src, "--node", app], env)
    check(rc == 0, "put of 1 GiB: %r" % err)
    check(out.decode().strip() == want, "1 GiB address equals b3sum: %r vs %s" % (out, want))
    check(peak < RSS_LIMIT_KIB, "ron put RssAnon stayed bounded: %d KiB" % peak)
    print("put 1 GiB: %.1f s, client RssAnon peak %d KiB" % (took, peak))
    rc, _, err, peak, took = run_sampled([RON, "get", want, "-o", dst, "--node", app], env)
    check(rc == 0, "get of 1 GiB: %r" % err)
    check(peak < RSS_LIMIT_KIB, "ron get RssAnon stayed bounded: %d KiB" % peak)
    got = "b3:" + subprocess.run(["b3sum", "--no-names", dst], capture_output=True, text=True,
                                 check=True).stdout.strip()
    check(got == want and os.path.getsize(dst) == SIZE, "1 GiB comes back identical")
    print("get 1 GiB: %.1f s, client RssAnon peak %d KiB" % (took, peak))
    rc, _ = n.stop()
    check(rc == 0, "node exit 0")
finally:
    n.kill()
    subprocess.run(["rm", "-rf", tmp])
print("ok")
