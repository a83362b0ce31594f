#!/usr/bin/env python3
"""`ron node` runs the storage and index services as supervised children:
each opens its data under <data_dir>/store and <data_dir>/index, listens on
ron-bus, reports its metrics through the kernel, and after kill -9 is
restarted and serves again over the same data (the store's crash recovery
runs on every start). The micro profile runs them in-process with RAM
backends and writes neither directory."""
import os
import signal

from ronnode import Node, check, wait_for

n = Node(["--set", "services=storage,index"]).wait_up()
try:
    sto = n.wait_running("storage")
    idx = n.wait_running("index")
    check(sto["pid"] != idx["pid"], "one process per service")
    # a child reports running at its HELLO, just before it opens its data
    wait_for(lambda: os.path.isdir(os.path.join(n.dir, "store", "objects")), 5,
             "store under <data_dir>/store")
    wait_for(lambda: os.path.isdir(os.path.join(n.dir, "index")), 5,
             "index under <data_dir>/index")
    wait_for(lambda: n.metric('storage_open_puts{service="storage"}') == 0, 5,
             "storage metrics merged by the kernel")
    wait_for(lambda: n.metric('index_requests_total{service="index",op="publish",status="200"}')
             == 0, 5, "index metrics merged by the kernel")

    os.kill(sto["pid"], signal.SIGKILL)
    sto2 = n.wait_running("storage", not_pid=sto["pid"], timeout=5)
    check(sto2["restarts"] >= 1, "storage restarted after kill -9: %r" % sto2)
    check(n.service("index")["pid"] == idx["pid"], "index untouched by the storage crash")
    wait_for(lambda: n.get("/healthz")[0] == 200, 5, "healthy again")
    rc, took = n.stop()
    check(rc == 0, "exit 0 (%r)" % rc)
finally:
    n.kill()

m = Node(["--profile", "micro", "--set", "services=storage,index"]).wait_up()
try:
    m.wait_running("storage")
    m.wait_running("index")
    check(not os.path.exists(os.path.join(m.dir, "store")), "micro + amnesia: no store directory")
    check(not os.path.exists(os.path.join(m.dir, "index")), "micro + amnesia: no index directory")
    rc, took = m.stop()
    check(rc == 0, "micro exit 0 (%r)" % rc)
finally:
    m.kill()
print("ok")
