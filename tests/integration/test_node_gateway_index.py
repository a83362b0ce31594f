#!/usr/bin/env python3
"""macronode: the gateway resolves and publishes names through the `index`
service over ron-bus, and opens no index of its own (issue 3, Profiles).

services=storage,index,gateway with a persistent data dir: PUT /n/<name>
on the gateway answers 201, then 200 for a newer record; GET /n/<name> is
302 to the object; the index service counts the publishes and resolves (its
metrics through the kernel), and the gateway process has no index mapped
(/proc/<pid>/maps). kill -9 of the index service: name routes answer 503
with the retryable envelope and Retry-After while it is down (the restart
backoff is raised so the window is seconds long), object routes keep
working, and once it is back the names resolve again, the records intact.
"""
import json
import os
import signal
import subprocess
import time

from ronnode import Node, check, free_port, wait_for
from test_micronode_amnesia import sign_record


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect:"] + list(args),
                          capture_output=True, timeout=20)


def status_of(r):
    return r.stdout.decode(errors="replace")


http = "127.0.0.1:%d" % free_port()
n = Node(["--set", "services=storage,index,gateway", "--set", "http=" + http,
          "--set", "supervisor.backoff_initial_ms=3000",
          "--set", "supervisor.backoff_max_ms=3000"]).wait_up()
try:
    n.wait_running("storage")
    idx = n.wait_running("index")
    gw = n.wait_running("gateway")
    base = "http://" + http
    auth = n.auth_header()  # writes need a capability: the node's operator capability
    objs = [os.urandom(1000), os.urandom(2000)]
    addrs = []
    for i, data in enumerate(objs):
        p = os.path.join(n.dir, "o%d" % i)
        with open(p, "wb") as f:
            f.write(data)
        # right after start the gateway's peers may still be connecting: a
        # retryable 503, which a client retries
        r = wait_for(lambda: (lambda x: x if b"address" in x.stdout else None)(
            curl(*auth, "--data-binary", "@" + p, base + "/o")), 5, "POST /o accepted")
        addrs.append(json.loads(r.stdout)["address"])

    seed = os.urandom(32)
    name = "movie.test"
    ts = int(time.time())

    def put_name(addr, seq):
        rec = sign_record(seed, name, addr[3:], seq, ts)
        return curl("-X", "PUT", *auth, "-H", "Content-Type: application/json",
                    "--data-binary", rec, "-o", "/dev/null", "-w", "%{http_code}",
                    base + "/n/" + name)

    def get_name():
        return curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", base + "/n/" + name)

    wait_for(lambda: status_of(get_name()).startswith("404"), 5, "unknown name: 404")
    r = put_name(addrs[0], 1)
    check(r.stdout == b"201", "first record: 201 (%r %r)" % (r.stdout, r.stderr))
    r = get_name()
    check(status_of(r).startswith("302 ") and status_of(r).endswith(addrs[0]),
          "302 to the object: %r" % r.stdout)
    r = put_name(addrs[1], 2)
    check(r.stdout == b"200", "newer record: 200 (%r)" % r.stdout)
    r = put_name(addrs[1], 1)
    check(r.stdout == b"409", "stale seq: 409 (%r)" % r.stdout)
    r = get_name()
    check(status_of(r).endswith(addrs[1]), "302 to the newer object: %r" % r.stdout)
    # the work was done by the index service, not by the gateway
    wait_for(lambda: (n.metric('index_requests_total{service="index",op="publish",status="200"}')
                      or 0) >= 2, 5, "index service publishes counted")
    wait_for(lambda: (n.metric('index_requests_total{service="index",op="resolve",status="200"}')
                      or 0) >= 2, 5, "index service resolves counted")
    gw = n.wait_running("gateway")
    with open("/proc/%d/maps" % gw["pid"]) as f:
        maps = f.read()
    check(os.path.join(n.dir, "index") not in maps, "the gateway maps no index of its own")

    # the index service dies: name routes are 503, retryable, until it is back
    os.kill(idx["pid"], signal.SIGKILL)
    r = wait_for(lambda: (lambda x: x if x.stdout.startswith(b"HTTP/1.1 503") else None)(
        curl("-i", base + "/n/" + name)), 2, "503 while the index service is down")
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    check(b"\r\nRetry-After: 1\r\n" in head, "Retry-After on the 503: %r" % head)
    env = json.loads(body)
    check(env.get("retryable") is True and env.get("reason") == "index_unavailable",
          "retryable envelope: %r" % env)
    r = put_name(addrs[0], 3)
    check(r.stdout == b"503", "PUT while the index is down: 503 (%r)" % r.stdout)
    r = curl("-o", "/dev/null", "-w", "%{http_code}", base + "/o/" + addrs[0])
    check(r.stdout == b"200", "objects still served (%r)" % r.stdout)
    n.wait_running("index", not_pid=idx["pid"], timeout=15)
    r = wait_for(lambda: (lambda x: x if status_of(x).startswith("302 ") else None)(get_name()),
                 10, "names resolve again after the restart")
    check(status_of(r).endswith(addrs[1]), "the record survived: %r" % r.stdout)
    r = put_name(addrs[0], 3)
    check(r.stdout == b"200", "publish after the restart: 200 (%r)" % r.stdout)
    rc, took = n.stop()
    check(rc == 0, "exit 0 (%r)" % rc)
finally:
    n.kill()
print("ok")
