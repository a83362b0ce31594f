#!/usr/bin/env python3
"""The netns test bed itself, with plain sockets (no node): three node
namespaces behind the router namespace (docs/runbooks/netns-test.md).
Packets between nodes really go through ron-delayrelay (its rx/tx counters
grow with the traffic); a 40 ms relay delay raises every UDP echo round trip
to >= 80 ms; a --route for one destination delays only that one; jitter
spreads the round trips; 10 % nftables loss drops about 10 % of the packets
(the nft `lost` counter and the echo replies agree) while a TCP transfer
still arrives intact; a small --queue drops and counts what does not fit;
a --throttle on one node's packets limits its rate (512 KiB take >= 4 s
at 1000 kbit/s); SIGTERM stops the relay with exit 0 and its final counters. Root only:
skips (exit 0, "SKIP:") when namespaces are unavailable."""
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from ronnode import check, wait_for  # noqa: E402
from ronnet import NetBed, netns_unavailable, ns_socket  # noqa: E402

why = netns_unavailable()
if why:
    print("SKIP: " + why)
    sys.exit(0)

UDP_PORT, TCP_PORT = 7000, 7001
stop = threading.Event()


def udp_echo(ns, host):
    s = ns_socket(ns, type=socket.SOCK_DGRAM)
    s.bind((host, UDP_PORT))
    s.settimeout(0.2)

    def loop():
        while not stop.is_set():
            try:
                data, peer = s.recvfrom(2048)
            except socket.timeout:
                continue
            s.sendto(data, peer)
        s.close()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def tcp_echo(ns, host):
    ls = ns_socket(ns)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, TCP_PORT))
    ls.listen(4)
    ls.settimeout(0.2)

    def loop():
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            c.settimeout(30)
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    c.sendall(b)
            except OSError:
                pass
            c.close()
        ls.close()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def rtts(bed, src, dst, count=20, timeout=2.0):
    """count UDP echo round trips src -> dst, in ms (lost probes are skipped)."""
    s = ns_socket(bed.ns(src), type=socket.SOCK_DGRAM)
    s.settimeout(timeout)
    out = []
    for i in range(count):
        payload = b"probe-%d-%d" % (i, time.monotonic_ns())
        t0 = time.monotonic()
        s.sendto(payload, (bed.addr(dst), UDP_PORT))
        try:
            while True:  # skip late replies of earlier probes
                data, _ = s.recvfrom(2048)
                if data == payload:
                    out.append((time.monotonic() - t0) * 1000)
                    break
        except socket.timeout:
            pass
    s.close()
    return out


def burst(bed, src, dst, count, gap_s=0.0005, collect_s=1.5):
    """Send count numbered datagrams while a thread collects the replies (so
    the socket's receive buffer never overflows); returns replies received."""
    s = ns_socket(bed.ns(src), type=socket.SOCK_DGRAM)
    s.settimeout(0.1)
    got = set()
    done = threading.Event()

    def collect():
        while not done.is_set():
            try:
                data, _ = s.recvfrom(2048)
                got.add(data)
            except socket.timeout:
                pass
    t = threading.Thread(target=collect)
    t.start()
    for i in range(count):
        s.sendto(b"b%d" % i, (bed.addr(dst), UDP_PORT))
        if gap_s:
            time.sleep(gap_s)
    time.sleep(collect_s)
    done.set()
    t.join(5)
    s.close()
    return len(got)


bed = NetBed(3, delay_ms=0)
try:
    for i in (1, 2):
        udp_echo(bed.ns(i), bed.addr(i))
    tcp_echo(bed.ns(1), bed.addr(1))

    # Traffic between nodes crosses the relay: its counters grow with it.
    base = rtts(bed, 0, 1, count=40)
    check(len(base) == 40, "no loss configured, every probe answered: %d/40" % len(base))
    wait_for(lambda: bed.relay_stats()["tx_packets"] >= 80, 5, "relay forwarded the 80 packets")
    st = bed.relay_stats()
    check(st["rx_packets"] >= 80 and st["drop_queue"] == 0, "relay counters: %r" % st)
    b_med = statistics.median(base)
    print("baseline rtt median %.2f ms" % b_med)

    # A fixed 40 ms delay: every round trip crosses the relay twice.
    bed.start_relay(delay_ms=40)
    d = rtts(bed, 0, 1)
    check(len(d) == 20, "delayed probes all answered: %d" % len(d))
    print("40 ms relay: rtt min %.1f median %.1f ms" % (min(d), statistics.median(d)))
    check(min(d) >= 80.0, "every round trip >= 2 x 40 ms: min %.1f" % min(d))
    check(statistics.median(d) >= b_med + 75, "median grew by ~80 ms: %.1f vs %.1f"
          % (statistics.median(d), b_med))

    # Per-destination delay: only packets to node 2 get 100 ms.
    bed.start_relay(delay_ms=10, routes=[bed.addr(2) + "/32=100"])
    to1, to2 = rtts(bed, 0, 1, count=10), rtts(bed, 0, 2, count=10)
    check(len(to1) == 10 and len(to2) == 10, "route probes answered")
    print("route: to node 1 median %.1f, to node 2 median %.1f ms"
          % (statistics.median(to1), statistics.median(to2)))
    check(min(to2) >= 110.0, "to node 2: 100 + 10 ms: min %.1f" % min(to2))
    check(min(to1) >= 20.0 and statistics.median(to1) < 100.0,
          "to node 1: 2 x 10 ms only: %r" % to1)

    # Jitter: delay 20 + uniform [0, 40] each way.
    bed.start_relay(delay_ms=20, jitter_ms=40)
    j = rtts(bed, 0, 1, count=30)
    check(len(j) == 30, "jitter probes answered")
    print("jitter: rtt min %.1f max %.1f ms" % (min(j), max(j)))
    check(min(j) >= 40.0 and max(j) - min(j) >= 10.0, "jitter spreads round trips: %r" % j)

    # 10 % loss with nftables: each datagram crosses the router twice (0.9^2).
    bed.start_relay(delay_ms=0)
    bed.set_loss(10)
    got = burst(bed, 0, 1, 1000)
    seen, lost = bed.nft_counter("seen"), bed.nft_counter("lost")
    print("10%% loss: %d/1000 echoes back, nft seen %d lost %d" % (got, seen, lost))
    check(lost > 0, "nft lost counter > 0")
    check(0.05 <= lost / seen <= 0.15, "about 10 %% of the packets dropped: %d/%d" % (lost, seen))
    check(700 <= got <= 900, "about 81 %% of the echoes came back: %d" % got)
    # TCP retransmits through the loss: 1 MiB arrives intact.
    c = ns_socket(bed.ns(0))
    c.settimeout(30)
    c.connect((bed.addr(1), TCP_PORT))
    blob = os.urandom(1 << 20)
    back = bytearray()

    def reader():
        while len(back) < len(blob):
            b = c.recv(65536)
            if not b:
                break
            back.extend(b)
    rt = threading.Thread(target=reader)
    rt.start()
    c.sendall(blob)
    rt.join(40)
    c.close()
    check(bytes(back) == blob, "1 MiB over TCP with 10 %% loss intact (%d bytes back)" % len(back))
    check(bed.nft_counter("lost") > lost, "the TCP transfer lost packets too")
    bed.set_loss(0)

    # A throttle on node 1's packets (1000 kbit/s): 512 KiB echoed back from
    # node 1 takes >= 4 s; the same transfer unthrottled is fast.
    def tcp_round(size):
        c = ns_socket(bed.ns(0))
        c.settimeout(30)
        c.connect((bed.addr(1), TCP_PORT))
        blob, back = os.urandom(size), bytearray()
        t0 = time.monotonic()

        def reader():
            while len(back) < len(blob):
                b = c.recv(65536)
                if not b:
                    break
                back.extend(b)
        rt = threading.Thread(target=reader)
        rt.start()
        c.sendall(blob)
        rt.join(40)
        c.close()
        check(bytes(back) == blob, "TCP echo intact (%d of %d bytes)" % (len(back), size))
        return time.monotonic() - t0
    bed.start_relay(delay_ms=0)
    fast = tcp_round(512 << 10)
    bed.start_relay(delay_ms=0, throttles=[bed.addr(1) + "/32=1000"])
    slow = tcp_round(512 << 10)
    print("512 KiB echo: %.2f s unthrottled, %.2f s with node 1 at 1000 kbit/s" % (fast, slow))
    check(slow >= 4.0, "the throttle limits node 1's rate: %.2f s" % slow)

    # A bounded queue: 200 datagrams at once into a 16-packet queue.
    bed.start_relay(delay_ms=300, queue=16)
    got = burst(bed, 0, 1, 200, gap_s=0, collect_s=1.0)
    wait_for(lambda: bed.relay_stats()["rx_packets"] >= 200, 5, "relay read the burst")
    st = bed.relay_stats()
    print("queue 16: %d echoes back, relay %r" % (got, st))
    check(st["drop_queue"] > 0 and got < 200, "overflow dropped and counted: %r" % st)

    # SIGTERM: exit 0, final counters printed as one JSON line.
    rc = bed.stop_relay()
    check(rc == 0, "relay exit code on SIGTERM: %r" % rc)
    check('"drop_queue":' in bed.relay_logs(), "final counters printed: %s" % bed.relay_logs())
    print("PASS")
finally:
    stop.set()
    bed.kill()
