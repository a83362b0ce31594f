#!/usr/bin/env python3
"""Chaos: lying and crawling providers, five real nodes on loopback plus two
test peers on the real overlay code (ovl_evil_peer). Each test peer shares
the keys of one node (1 and 2), and that node advertises the peer's address,
so its provider records send fetchers to the peer under the node's id.
Objects are fetched through the gateway as eight concurrent 1 MiB ranges,
so each fetch has several requests in flight and asks every provider.
- Corrupt: peer 1 flips a byte of every piece it sends (fetchers that
  verified the size no longer ask for the last piece in every answer, so
  corrupting that one alone would go unseen whenever the liar is not
  asked for it). Node 3 fetches the 8 MiB object,
  which node 0 also holds: byte-exact, node 3's overlay counted the bad
  piece (overlay_bad_pieces_total > 0), its storage the failed provider,
  and node 0 served the bytes (overlay_piece_bytes_sent_total grew).
- Throttled: peer 2 sends piece frames at 64 KiB/s. Node 4 fetches an
  8 MiB object that node 0 also holds: byte-exact; of the piece bytes node 4
  received (overlay_piece_bytes_recv_total), the trickling peer sent some
  (it was asked) but < 25 % (the rest came from node 0's sent bytes)."""
import os
import tempfile
import threading
import time

from ronnode import check
from ronnet import Cluster, EvilPeer

PIECE = 65536
PART = 1 << 20


def parallel_get(node, addr, size):
    """GET the object as concurrent 1 MiB ranges (so the fetch has several
    wants at once and spreads requests over its providers); returns the
    bytes, or None when a range failed."""
    parts, errs = {}, []

    def one(off):
        end = min(off + PART, size) - 1
        try:
            s, _, b = node.gw("GET", "/o/" + addr, timeout=60,
                              headers={"Range": "bytes=%d-%d" % (off, end)})
        except OSError as e:
            errs.append(str(e))
            return
        if s == 206 and len(b) == end + 1 - off:
            parts[off] = b
        else:
            errs.append("%d: %d %r" % (off, s, b[:100]))
    ts = [threading.Thread(target=one, args=(off,)) for off in range(0, size, PART)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    if errs:
        print("range errors: %r" % errs[:3])
        return None
    return b"".join(parts[k] for k in sorted(parts))


def retry_get(node, addr, data, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        b = parallel_get(node, addr, len(data))
        if b == data or time.monotonic() > deadline:
            return b
        time.sleep(0.2)


def peer_dir(data):
    d = tempfile.mkdtemp(prefix="ron-evil-")
    with open(os.path.join(d, "object"), "wb") as f:
        f.write(data)
    return d


corrupt_data = os.urandom(8 * PART + 1234)
slow_data = os.urandom(8 * PART)
d1, d2 = peer_dir(corrupt_data), peer_dir(slow_data)
liar = EvilPeer(os.path.join(d1, "object"), d1, corrupt_piece="all")
crawler = EvilPeer(os.path.join(d2, "object"), d2, rate=65536)
c = Cluster(5, node_args={1: {"data_dir": d1, "advertise": liar.addr},
                          2: {"data_dir": d2, "advertise": crawler.addr}})
try:
    c.wait_up(40).wait_dht(min_contacts=1, timeout=30)
    n0, n1, n2, n3, n4 = c.nodes
    check(n1.status()["node_id"] == liar.id and n2.status()["node_id"] == crawler.id,
          "the test peers carry their nodes' ids")
    caddr = n1.gw_put(corrupt_data)
    check(n0.gw_put(corrupt_data) == caddr and liar.info["address"] == caddr, "same address")
    saddr = n2.gw_put(slow_data)
    check(n0.gw_put(slow_data) == saddr and crawler.info["address"] == saddr, "same address")
    time.sleep(1.0)  # provider records of nodes 0, 1 and 2 reach the DHT

    # Corrupt pieces: detected, that provider dropped, content from node 0.
    sent0 = n0.settled("overlay_piece_bytes_sent_total")
    b = retry_get(n3, caddr, corrupt_data)
    check(b == corrupt_data, "node 3 fetched the object")
    bad = n3.settled("overlay_bad_pieces_total")
    served0 = n0.metric_total("overlay_piece_bytes_sent_total") - sent0
    print("corrupt: node 3 counted %d bad pieces, %d provider failures; node 0 sent %d bytes"
          % (bad, n3.metric_total("storage_fetch_provider_failures_total"), served0))
    check(bad > 0, "node 3 detected the corrupt piece")
    check(n3.metric_total("storage_fetch_provider_failures_total") > 0,
          "node 3's fetch dropped the lying provider")
    check(served0 >= len(corrupt_data) - PIECE, "node 0 served the object: %d" % served0)

    # A trickling provider serves < 25 % of the bytes.
    sent0 = n0.settled("overlay_piece_bytes_sent_total")
    recv4 = n4.metric_total("overlay_piece_bytes_recv_total")
    t0 = time.monotonic()
    b = retry_get(n4, saddr, slow_data)
    secs = time.monotonic() - t0
    check(b == slow_data, "node 4 fetched the object")
    got = n4.settled("overlay_piece_bytes_recv_total") - recv4
    from0 = n0.metric_total("overlay_piece_bytes_sent_total") - sent0
    slow = got - from0
    print("throttled: node 4 received %d piece bytes in %.1f s, %d from node 0, %d (%.1f %%) "
          "from the trickling peer" % (got, secs, from0, slow, 100.0 * slow / max(1, got)))
    check(got >= len(slow_data), "node 4 received the whole object over the overlay")
    check(slow > 0, "the trickling peer was asked (it sent piece bytes)")
    check(slow < 0.25 * got, "the trickling provider sent < 25 %%: %d of %d" % (slow, got))
    print("PASS")
finally:
    c.close()
    liar.kill()
    crawler.kill()
