#!/usr/bin/env python3
"""Three real nodes on loopback form a DHT and carry names across nodes.

Node 1 (macro, persistent) has no seed; node 2 (micro, amnesia), node 3
(macro, persistent) and node 4 (macro, amnesia) are given node 1's DHT
address with --seed. Every node's
DHT learns contacts (dht_contacts in /metrics), its id is the node id, a name
published on node 1 (`ron name publish` through its app port) resolves on
nodes 3, 2 and 4 (`ron name resolve`, which misses locally and asks the
DHT), an unknown name is still not_found, malformed datagrams sent with a
Python UDP socket are dropped and counted (dht_rx_malformed_total) while the
node stays healthy; the routing table is written to <data_dir>/dht/table at
stop and loaded at the next start (node 3 restarted without a seed knows its
contacts) and announces what its store holds, and the amnesia node
writes no table.
"""
import os
import socket
import tempfile
import time

from ronnode import RON, Node, app_cap_env, check, free_port, wait_for

SERVICES = "services=storage,index,app,dht,overlay"


def contacts(n):
    return n.metric('dht_contacts{service="dht"}') or 0


def dht_addr(n):
    return n.wait_running("dht", timeout=20)["listen"]


def ron(app, *args):
    import subprocess
    e = dict(os.environ)
    for k in ("RON_ADMIN", "RON_CAP", "RON_NODE"):
        e.pop(k, None)
    e["RON_DATA_DIR"] = KEYDIR
    app_cap_env(e, app)  # the node's operator capability (writes need one)
    return subprocess.run([RON] + list(args) + ["--node", app], capture_output=True, text=True,
                          env=e, timeout=30)


KEYDIR = tempfile.mkdtemp(prefix="ron-dht-key-")
key = os.path.join(KEYDIR, "name.key")
with open(key, "w") as f:
    f.write(os.urandom(32).hex() + "\n")
os.chmod(key, 0o600)

apps = ["127.0.0.1:%d" % free_port() for _ in range(4)]
n1 = Node(["--set", SERVICES, "--app", apps[0]]).wait_up()
seed = dht_addr(n1)
n2 = Node(["--profile", "micro", "--set", SERVICES, "--app", apps[1], "--seed", seed]).wait_up()
n3 = Node(["--set", SERVICES, "--app", apps[2], "--seed", seed]).wait_up()
# macro with amnesia: the key exists only in the kernel's RAM, handed to the dht child by pipe
n4 = Node(["--set", SERVICES, "--app", apps[3], "--seed", seed, "--amnesia"]).wait_up()
nodes = [n1, n2, n3, n4]
for n in nodes:
    dht_addr(n)

# the DHT's node id is the node's
for n in nodes:
    nid = n.status()["node_id"]
    wait_for(lambda: "dht: node %s..." % nid[:8] in n.logs(), 10, "dht log line with the node id")

# everyone learns everyone
for n in nodes:
    wait_for(lambda: contacts(n) >= 3, 20, "dht contacts on every node")

# a name published on node 1 resolves on node 3 (macro) and node 2 (micro)
addr = "b3:" + os.urandom(32).hex()
r = ron(apps[0], "name", "publish", "photos.dht-test", addr, "--key", key)
check(r.returncode == 0 and "(seq 1)" in r.stdout, "publish on node 1: %r %r" % (r.stdout, r.stderr))
wait_for(lambda: (n1.metric('index_dht_puts_total{service="index"}') or 0) >= 1, 10,
         "node 1's index put the record into the DHT")
for app in (apps[2], apps[1], apps[3]):
    r = ron(app, "name", "resolve", "Photos.DHT-test")
    check(r.returncode == 0 and r.stdout.strip() == addr,
          "resolve on another node: %r %r" % (r.stdout, r.stderr))
wait_for(lambda: (n3.metric('index_dht_resolved_total{service="index"}') or 0) >= 1, 10,
         "node 3 answered from the DHT")
# now held locally: a second resolve does not ask the DHT again
before = n3.metric('index_dht_resolved_total{service="index"}')
r = ron(apps[2], "name", "resolve", "photos.dht-test", "--json")
check(r.returncode == 0 and addr in r.stdout, "second resolve: %r" % r.stdout)
time.sleep(1.2)  # two heartbeats: the metrics the kernel shows are current
check(n3.metric('index_dht_resolved_total{service="index"}') == before, "kept in the index")
r = ron(apps[2], "name", "resolve", "nobody.dht-test")
check(r.returncode == 1 and "not_found" in r.stderr, "unknown name: not_found: %r" % r.stderr)

# malformed datagrams are dropped and counted; the node stays healthy
host, port = dht_addr(n3).rsplit(":", 1)
before = n3.metric('dht_rx_malformed_total{service="dht"}') or 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for payload in (b"", b"\x00" * 7, os.urandom(300), b"\xff" * 1300):
    s.sendto(payload, (host, int(port)))
s.close()
wait_for(lambda: (n3.metric('dht_rx_malformed_total{service="dht"}') or 0) >= before + 3, 10,
         "malformed datagrams counted")
check(n3.service("dht")["healthy"], "dht still healthy after junk")
check(contacts(n3) >= 2, "junk did not disturb the table")

# the amnesia node writes no table; persistent nodes keep theirs across a restart
for n in (n2, n4):
    check(not os.path.exists(os.path.join(n.dir, "dht")), "amnesia: no dht directory")
obj = os.path.join(KEYDIR, "obj")
with open(obj, "wb") as f:
    f.write(os.urandom(100000))
# (a put announces its provider record at once: count node 1's records before it)
records_before = n1.metric('dht_records{service="dht"}') or 0
r = ron(apps[2], "put", obj)
check(r.returncode == 0 and r.stdout.startswith("b3:"), "put on node 3: %r" % r.stderr)
table = os.path.join(n3.dir, "dht", "table")
n3_id = n3.status()["node_id"]
rc, _ = n3.stop()
check(rc == 0, "node 3 exits 0 on SIGTERM")
check(os.path.getsize(table) > 39, "table written at stop")
n3b = Node(["--set", SERVICES, "--app", apps[2], "--data-dir", n3.dir]).wait_up()
check(n3b.status()["node_id"] == n3_id, "same node (same keys) after the restart")
wait_for(lambda: "dht: loaded" in n3b.logs(), 10, "table loaded at start")
wait_for(lambda: contacts(n3b) >= 2, 20, "contacts from the table, without a seed")
r = ron(apps[2], "name", "resolve", "photos.dht-test")
check(r.returncode == 0 and r.stdout.strip() == addr, "resolve after restart: %r" % r.stderr)
# what the store holds is announced again at start, pointing to the address the
# overlay service reports: node 1 now holds its provider record
ovl = n3b.wait_running("overlay")["listen"]
wait_for(lambda: "provider records point to overlay %s" % ovl in n3b.logs(), 10,
         "the dht learned the overlay's address")
wait_for(lambda: (n3b.metric('dht_provided{service="dht"}') or 0) >= 1, 10,
         "the stored object is re-announced")
wait_for(lambda: (n1.metric('dht_records{service="dht"}') or 0) > records_before, 15,
         "node 1 stores node 3's provider record")
for n in (n3b, n4, n2, n1, n3):
    n.kill()
print("ok")
