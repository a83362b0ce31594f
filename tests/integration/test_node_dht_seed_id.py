#!/usr/bin/env python3
"""A seed given as ID@HOST:PORT is checked: the node at that address must
answer with that node id.

Node 1 has no seed. A node seeded with a wrong id at node 1's DHT address
(numeric, and by host name) refuses node 1's answers: its DHT stays empty,
dht_rx_seed_mismatch_total counts the refused datagrams, and its log names
both ids. A node seeded with node 1's real id joins (contacts >= 1, nothing
refused).
"""
import os

from ronnode import Node, check, wait_for

ARGS = ["--profile", "micro", "--set", "services=dht"]


def metric_sum(n, name):
    total = 0.0
    for line in n.metrics().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def dht_addr(n):
    return n.wait_running("dht", timeout=20)["listen"]


nodes = []
try:
    n1 = Node(ARGS).wait_up()
    nodes.append(n1)
    seed = dht_addr(n1)
    n1_id = n1.status()["node_id"]
    port = seed.rsplit(":", 1)[1]

    wrong = os.urandom(32).hex()
    bad = Node(ARGS + ["--seed", wrong + "@" + seed]).wait_up()
    nodes.append(bad)
    bad_name = Node(ARGS + ["--seed", wrong + "@localhost:" + port]).wait_up()
    nodes.append(bad_name)
    for n in (bad, bad_name):
        dht_addr(n)
        wait_for(lambda: metric_sum(n, "dht_rx_seed_mismatch_total") >= 1, 15,
                 "the wrong id's answer is refused and counted")
        wait_for(lambda: "answered as node %s, not %s as configured: refused" % (n1_id, wrong)
                 in n.logs(), 10, "the mismatch is logged with both ids")
        check(metric_sum(n, "dht_contacts") == 0,
              "nothing from the impostor entered the table: %s" % metric_sum(n, "dht_contacts"))

    good = Node(ARGS + ["--seed", n1_id + "@" + seed]).wait_up()
    nodes.append(good)
    dht_addr(good)
    wait_for(lambda: metric_sum(good, "dht_contacts") >= 1, 20, "the named seed is reached")
    check(metric_sum(good, "dht_rx_seed_mismatch_total") == 0, "the right id is not refused")
    check("as configured: refused" not in good.logs(), "no mismatch logged for the right id")
    print("ok")
finally:
    for n in nodes:
        n.kill()
