#!/usr/bin/env python3
"""test_gateway_curl.py - the gateway (bench_gw_server over a file store in a
temp dir) driven by real curl and checked against real b3sum.

Checks: POST of a 5 MiB file answers 201 with the address b3sum prints and a
Location; GET returns the same bytes, twice on one keep-alive connection,
and over h2c;
Range at piece boundaries (65535-65537), a suffix and a multi-range
(multipart/byteranges) return the right bytes; If-None-Match gives 304;
HEAD gives the length; PUT with the wrong address gives 409 bad_digest and
the object is then absent (404); a corrupted byte on disk is never served
(502 before the head, a cut connection after it); a slow curl
(--limit-rate) of a 24 MiB object keeps the server's RssAnon growth far
below the object size. Loopback only, port 0, temp dir; every wait bounded.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

CORRUPT = (2 << 20) + 17  # past the first 256 KiB chunk: the head is out when it fails
BIN = os.path.join(os.environ.get("RON_BINARY_DIR", "build/asan"), "bench_gw_server")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def curl(*args, data_file=None, timeout=60):
    cmd = ["curl", "-sS", "--max-time", str(timeout)] + list(args)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
    return r


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def main():
    if not os.path.exists(BIN):
        fail(f"{BIN} is not built")
    tmp = tempfile.mkdtemp(prefix="gwcurl.")
    store = os.path.join(tmp, "store")
    proc = subprocess.Popen([BIN, "--dir", store, "--max-body", str(32 << 20), "--no-rate"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"port (\d+)", line)
        if not m:
            fail(f"no port line: {line!r} {proc.stderr.read()}")
        base = f"http://127.0.0.1:{m.group(1)}"
        run(base, tmp, store, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("server did not exit on SIGTERM")
        subprocess.run(["rm", "-rf", tmp])
    if proc.returncode != 0:
        fail(f"server exited {proc.returncode}: {proc.stderr.read()}")
    print("ok")


def run(base, tmp, store, pid):
    rnd = random.Random(7)
    data = rnd.randbytes(5 * 1024 * 1024 + 3)
    path = os.path.join(tmp, "in.bin")
    with open(path, "wb") as f:
        f.write(data)
    want = "b3:" + subprocess.run(["b3sum", "--no-names", path], capture_output=True,
                                  text=True).stdout.strip()

    # POST: 201, the address b3sum prints, Location
    r = curl("-D", "-", "-H", "Expect:", "--data-binary", "@" + path, "-H", "Content-Type: video/x-test",
             base + "/o")
    out = r.stdout.decode()
    if " 201 " not in out.split("\r\n")[0]:
        fail(f"POST: {out!r}")
    body = json.loads(out.split("\r\n\r\n", 1)[1])
    if body["address"] != want or body["cid"] != want[3:]:
        fail(f"POST address {body} != {want}")
    if f"Location: /o/{want}" not in out:
        fail("POST: no Location")
    url = f"{base}/o/{want}"

    # GET twice on one connection (keep-alive)
    o1, o2 = os.path.join(tmp, "o1"), os.path.join(tmp, "o2")
    r = curl("-v", "-o", o1, url, "-o", o2, url)
    if open(o1, "rb").read() != data or open(o2, "rb").read() != data:
        fail("GET bytes differ")
    if b"Re-using existing connection" not in r.stderr and b"Reusing existing connection" \
            not in r.stderr:
        fail("the second GET did not reuse the connection")

    # the same handler over HTTP/2 (h2c by prior knowledge): whole and a range
    r = curl("--http2-prior-knowledge", "-o", o1, "-w", "%{http_version}", url)
    if r.stdout != b"2" or open(o1, "rb").read() != data:
        fail(f"h2c GET: {r.stdout!r}")
    r = curl("--http2-prior-knowledge", "-r", "65535-65537", url)
    if r.stdout != data[65535:65538]:
        fail("h2c range")

    # ranges
    for spec, lo, hi in (("65535-65537", 65535, 65537), ("-100", len(data) - 100, len(data) - 1),
                         ("4194303-4194304", 4194303, 4194304)):
        r = curl("-r", spec, "-D", os.path.join(tmp, "h"), url)
        if r.stdout != data[lo:hi + 1]:
            fail(f"range {spec}: wrong bytes")
        h = open(os.path.join(tmp, "h")).read()
        if " 206 " not in h or f"Content-Range: bytes {lo}-{hi}/{len(data)}" not in h:
            fail(f"range {spec}: {h!r}")
    r = curl("-r", "0-0,65536-65539", "-D", os.path.join(tmp, "h"), url)
    h = open(os.path.join(tmp, "h")).read()
    if "multipart/byteranges; boundary=" not in h:
        fail(f"multi-range: {h!r}")
    if data[65536:65540] not in r.stdout or b"Content-Range: bytes 65536-65539/" not in r.stdout:
        fail("multi-range body")
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "-r", f"{len(data)}-", url)
    if r.stdout != b"416":
        fail(f"416: {r.stdout}")

    # 304, HEAD
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f'If-None-Match: "{want}"', url)
    if r.stdout != b"304":
        fail(f"304: {r.stdout}")
    r = curl("-I", url)
    if f"Content-Length: {len(data)}" not in r.stdout.decode() or \
            "Content-Type: video/x-test" not in r.stdout.decode():
        fail(f"HEAD: {r.stdout!r}")

    # PUT at the wrong address: 409, nothing stored
    wrong = "b3:" + "0" * 63 + "1"
    r = curl("-X", "PUT", "--data-binary", "@" + path, "-w", "\n%{http_code}",
             f"{base}/o/{wrong}")
    if not r.stdout.endswith(b"409") or b"bad_digest" not in r.stdout:
        fail(f"PUT wrong digest: {r.stdout[-200:]!r}")
    r = curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/o/{wrong}")
    if r.stdout != b"404":
        fail(f"after 409: {r.stdout}")

    # a slow client of a 24 MiB object: server memory stays bounded
    big = rnd.randbytes(24 * 1024 * 1024)
    bpath = os.path.join(tmp, "big.bin")
    with open(bpath, "wb") as f:
        f.write(big)
    r = curl("--data-binary", "@" + bpath, base + "/o")
    baddr = json.loads(r.stdout)["address"]
    before = rss_anon_kib(pid)
    slow = subprocess.Popen(["curl", "-sS", "--max-time", "60", "--limit-rate", "8M", "-o",
                             os.path.join(tmp, "big.out"), f"{base}/o/{baddr}"])
    peak = before
    while slow.poll() is None:
        peak = max(peak, rss_anon_kib(pid))
        time.sleep(0.05)
    if slow.returncode != 0 or open(os.path.join(tmp, "big.out"), "rb").read() != big:
        fail("slow GET of 24 MiB failed")
    grow_mib = (peak - before) / 1024
    print(f"slow 24 MiB GET: server RssAnon grew {grow_mib:.1f} MiB")
    if grow_mib > 12:
        fail(f"server RssAnon grew {grow_mib:.1f} MiB while streaming 24 MiB")

    # a corrupted byte is never served
    hexd = want[3:]
    objf = os.path.join(store, "objects", hexd[:2], hexd)
    with open(objf, "r+b") as f:  # store format 2: the bytes follow a 256-byte header
        f.seek(256 + CORRUPT)
        b = f.read(1)
        f.seek(256 + CORRUPT)
        f.write(bytes([b[0] ^ 1]))
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "-r", f"{CORRUPT - 17}-{CORRUPT + 100}", url)
    if r.stdout != b"502":
        fail(f"corrupt piece first: {r.stdout}")
    r = curl("-o", os.path.join(tmp, "cut"), url)
    got = open(os.path.join(tmp, "cut"), "rb").read()
    if r.returncode == 0 or len(got) > CORRUPT or got != data[:len(got)]:
        fail(f"corrupt piece mid-stream: curl rc {r.returncode}, {len(got)} bytes")


if __name__ == "__main__":
    main()
