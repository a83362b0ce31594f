#!/usr/bin/env python3
"""bench/http_slow_conns.py SERVER_BIN CONFIG [N] - anonymous memory (RssAnon)
of bench_http_server while it holds N (2000) slow connections, each with a
partial request that grows one header byte every 0.5 s. Prints
"idle_kib held_kib held_conns" on one line. Loopback, port 0, bounded waits."""
import resource
import socket
import subprocess
import sys
import time


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def main():
    server_bin, cfg = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
    srv = subprocess.Popen([server_bin, "127.0.0.1:0", cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(srv.stdout.readline().split()[1])
        time.sleep(0.2)
        idle = rss_anon_kib(srv.pid)
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            socks.append(s)
        peak = 0
        for _ in range(4):  # 2 s of dribbling, well inside the 5 s header timeout
            for s in socks:
                s.send(b"a")
            time.sleep(0.5)
            peak = max(peak, rss_anon_kib(srv.pid))
        refused = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(16).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except BlockingIOError:
                pass
        print(idle, peak, n - refused)
        for s in socks:
            s.close()
    finally:
        srv.terminate()
        srv.wait(timeout=10)


if __name__ == "__main__":
    main()
