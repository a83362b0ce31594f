#!/usr/bin/env python3
"""The micro profile (one process; amnesia on by default) with services
storage,index,gateway: POST /o and PUT /o/b3:<hex> answer 201, then 200 for
a stored object, 409 for bytes that do not hash to the address, and objects
read back equal through the gateway; the node stops cleanly. In amnesia the
gateway keeps its own RAM store (a RAM store cannot be opened by a second
process, and the gateway does not route through the storage service
there), so this is the round trip of the in-process path."""
import os
import subprocess
import time

from ronnode import Node, check, free_port

http = "127.0.0.1:%d" % free_port()
n = Node(["--profile", "micro", "--set", "services=storage,index,gateway",
          "--set", "http=" + http]).wait_up()
base = "http://" + http


def curl(*args):
    # writes need a capability: the node's operator capability (sent on reads too)
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect:", "-o", "-", "-w",
                        "\n%{http_code}"] + n.auth_header() + list(args), capture_output=True,
                       timeout=20)
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code or b"0"), body


def b3(path):
    return "b3:" + subprocess.run(["b3sum", "--no-names", path], capture_output=True,
                                  text=True).stdout.strip()


try:
    n.wait_running("gateway")
    n.wait_running("storage")
    check(n.service("gateway")["pid"] == n.proc.pid, "micro: the gateway runs in the node")
    a_data = os.urandom(600000)
    a_path = os.path.join(n.dir, "a.bin")
    with open(a_path, "wb") as f:
        f.write(a_data)
    a_addr = b3(a_path)
    deadline = time.monotonic() + 10  # 503 until the gateway's bus peer is up
    while True:
        code, body = curl("--data-binary", "@" + a_path, base + "/o")
        if code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    check(code == 201 and a_addr.encode() in body, "micro POST 201: %d %r" % (code, body))
    check(curl(base + "/o/" + a_addr) == (200, a_data), "micro GET returns the bytes")
    code, body = curl("-X", "PUT", "--data-binary", "@" + a_path, base + "/o/" + a_addr)
    check(code == 200, "micro PUT of a stored object 200: %d %r" % (code, body))
    b_path = os.path.join(n.dir, "b.bin")
    with open(b_path, "wb") as f:
        f.write(b"not those bytes")
    code, body = curl("-X", "PUT", "--data-binary", "@" + b_path,
                      base + "/o/b3:" + "00" * 32)
    check(code == 409, "micro PUT of other bytes 409: %d %r" % (code, body))
    rc, took = n.stop()
    check(rc == 0, "node exit 0 (%r)" % rc)
finally:
    n.kill()
print("ok")
