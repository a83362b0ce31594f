#!/usr/bin/env python3
"""test_http_hardening.py - 2,000 concurrent slow clients against an HTTP
server built on ron-transport (bench_http_server) with max_conns 500.

Checks: the excess connections are refused promptly (503 envelope with
Retry-After, then closed, never left hanging); the admitted slow clients
cannot hold their slots past the header timeout (408, closed); the server's
memory stays bounded (RssAnon growth while holding them); it keeps serving
afterwards and exits cleanly on SIGTERM with the refusals counted.
Loopback only, port 0, temp dir; every wait is bounded.
"""
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLIENTS = 2000
MAX_CONNS = 500
HEADER_TIMEOUT_MS = 3000


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def get(port, path="/healthz"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                return data
            data += b


def main():
    binary_dir = os.environ.get("RON_BINARY_DIR", "build/asan")
    server_bin = os.path.join(binary_dir, "bench_http_server")
    if not os.path.exists(server_bin):
        fail(f"{server_bin} not built")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 100:
        print(f"SKIP: RLIMIT_NOFILE hard limit {hard} < {CLIENTS + 100}")
        return 0
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, CLIENTS + 100), hard))

    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "hardening.json")
        with open(cfg, "w") as f:
            json.dump({"max_conns": MAX_CONNS, "header_timeout_ms": HEADER_TIMEOUT_MS,
                       "idle_timeout_ms": HEADER_TIMEOUT_MS, "rate_rps": 100000}, f)
        srv = subprocess.Popen([server_bin, "127.0.0.1:0", cfg], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            line = srv.stdout.readline()
            if not line.startswith("port "):
                fail(f"server did not start: {line!r}")
            port = int(line.split()[1])
            if b" 200 " not in get(port):
                fail("server does not answer before the test")
            rss_before = rss_anon_kib(srv.pid)

            sel = selectors.DefaultSelector()
            socks = []
            t0 = time.monotonic()
            for i in range(CLIENTS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                socks.append(s)
            # each client sends a request line and then dribbles header bytes
            state = {}
            for s in socks:
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
                state[s] = {"sent": False, "resp": b"", "closed_at": None}
            refused = timed_out = 0
            peak_rss = 0
            next_drip = time.monotonic() + 0.5
            deadline = t0 + HEADER_TIMEOUT_MS / 1000 + 8
            open_count = CLIENTS
            while open_count > 0 and time.monotonic() < deadline:
                for key, ev in sel.select(timeout=0.1):
                    s = key.fileobj
                    st = state[s]
                    if ev & selectors.EVENT_WRITE and not st["sent"]:
                        try:
                            s.send(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
                        except OSError:
                            pass
                        st["sent"] = True
                        sel.modify(s, selectors.EVENT_READ)
                    if ev & selectors.EVENT_READ:
                        try:
                            b = s.recv(4096)
                        except (ConnectionResetError, BlockingIOError):
                            b = b""
                        if b:
                            st["resp"] += b
                        else:
                            st["closed_at"] = time.monotonic() - t0
                            sel.unregister(s)
                            open_count -= 1
                now = time.monotonic()
                if now >= next_drip:
                    next_drip = now + 0.5
                    peak_rss = max(peak_rss, rss_anon_kib(srv.pid))
                    for s in socks:
                        if state[s]["sent"] and state[s]["closed_at"] is None:
                            try:
                                s.send(b"X")  # one header byte at a time: slowloris
                            except OSError:
                                pass
                if srv.poll() is not None:
                    fail(f"server exited with {srv.returncode} under load")
            hanging = [s for s in socks if state[s]["closed_at"] is None]
            for s in socks:
                r = state[s]["resp"]
                if r.startswith(b"HTTP/1.1 503 "):
                    refused += 1
                    if b"\r\nRetry-After: " not in r or b'"code":"unavailable"' not in r:
                        fail(f"503 without Retry-After or envelope: {r[:300]!r}")
                    if state[s]["closed_at"] > 5.0:  # 200 ms linger, plus a loaded machine
                        fail(f"refused connection closed only after {state[s]['closed_at']:.1f} s")
                elif r.startswith(b"HTTP/1.1 408 "):
                    timed_out += 1
                    if state[s]["closed_at"] > HEADER_TIMEOUT_MS / 1000 + 4:
                        fail(f"slow client held its slot {state[s]['closed_at']:.1f} s")
            for s in socks:
                s.close()
            growth_mib = (peak_rss - rss_before) / 1024
            print(f"refused={refused} timed_out={timed_out} hanging={len(hanging)} "
                  f"rss_anon_before={rss_before / 1024:.1f}MiB peak={peak_rss / 1024:.1f}MiB "
                  f"growth={growth_mib:.1f}MiB")
            if hanging:
                fail(f"{len(hanging)} connections left hanging")
            if refused < CLIENTS - MAX_CONNS:
                fail(f"only {refused} of the {CLIENTS - MAX_CONNS} excess connections were refused")
            if timed_out + refused != CLIENTS:
                fail(f"{CLIENTS - timed_out - refused} clients got neither 503 nor 408")
            if growth_mib > 64:
                fail(f"server memory grew {growth_mib:.1f} MiB holding {CLIENTS} slow clients")
            if b" 200 " not in get(port):
                fail("server does not answer after the slow clients")
        finally:
            if srv.poll() is None:
                srv.send_signal(signal.SIGTERM)
            try:
                _, err = srv.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                srv.kill()
                fail("server did not exit on SIGTERM")
        if srv.returncode != 0:
            fail(f"server exited {srv.returncode}: {err}")
        counted = [l for l in err.splitlines() if l.startswith("requests ")]
        if not counted or int(counted[-1].split()[5]) != refused:
            fail(f"refusals counted by the server do not match: {counted} vs {refused}")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
