#!/usr/bin/env python3
"""The gateway writing through the storage service (`ron node --set
services=storage,index,gateway`, macro profile: three children): POST /o and
PUT /o/b3:<hex> answer 201, a PUT of a stored object 200, a PUT whose body
does not hash to the address 409; objects read back through the gateway's
read-only store equal what was sent (addresses are b3sum's). Then storage is
killed with SIGKILL while two clients upload: every failed upload is
retryable (503 with Retry-After, another 5xx, or a connection error), the
node restarts storage, uploads succeed again, and every object acknowledged
with 201/200 reads back intact."""
import os
import signal
import subprocess
import tempfile
import threading
import time

from ronnode import Node, check, free_port, wait_for

http = "127.0.0.1:%d" % free_port()
n = Node(["--set", "services=storage,index,gateway", "--set", "http=" + http]).wait_up()
base = "http://" + http


def curl(*args):
    """(status code or 0 on a connection error, headers text, body bytes)."""
    fd, hdr = tempfile.mkstemp(dir=n.dir)
    os.close(fd)
    try:
        # writes need a capability: the node's operator capability (sent on reads too)
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect:", "-D", hdr,
                            "-o", "-", "-w", "\n%{http_code}"] + n.auth_header() + list(args),
                           capture_output=True, timeout=20)
        with open(hdr, "rb") as f:
            head = f.read().decode(errors="replace")
    finally:
        os.unlink(hdr)
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code or b"0"), head, body


def b3(path):
    return "b3:" + subprocess.run(["b3sum", "--no-names", path], capture_output=True,
                                  text=True).stdout.strip()


def put_file(data, name):
    path = os.path.join(n.dir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def get(addr):
    code, _, body = curl(base + "/o/" + addr)
    return code, body


try:
    n.wait_running("storage")
    n.wait_running("index")
    n.wait_running("gateway")

    # POST: 201, the address is b3sum's, the bytes read back.
    a_data = os.urandom(700000)  # several 256 KiB put_write chunks
    a_path = put_file(a_data, "a.bin")
    # the gateway's ron-bus connection to storage comes up after both run:
    # until then uploads answer 503 with Retry-After (retryable)
    deadline = time.monotonic() + 10
    while True:
        code, head, body = curl("--data-binary", "@" + a_path, base + "/o")
        if code != 503 or time.monotonic() > deadline:
            break
        check("retry-after:" in head.lower(), "503 has Retry-After: %r" % head)
        time.sleep(0.1)
    check(code == 201, "POST through the storage service is 201: %d %r" % (code, body))
    a_addr = b3(a_path)
    check(("\"address\":\"%s\"" % a_addr).encode() in body, "POST address is b3sum's: %r" % body)
    check(get(a_addr) == (200, a_data), "POSTed object reads back")

    # PUT at the expected address: 201, again 200; wrong bytes 409.
    b_data = os.urandom(1000)
    b_path = put_file(b_data, "b.bin")
    b_addr = b3(b_path)
    code, _, body = curl("-X", "PUT", "--data-binary", "@" + b_path, base + "/o/" + b_addr)
    check(code == 201, "PUT of a new object is 201: %d %r" % (code, body))
    code, _, body = curl("-X", "PUT", "--data-binary", "@" + b_path, base + "/o/" + b_addr)
    check(code == 200, "PUT of a stored object is 200: %d %r" % (code, body))
    c_path = put_file(os.urandom(1000), "c.bin")
    code, _, body = curl("-X", "PUT", "--data-binary", "@" + c_path, base + "/o/" + b_addr)
    check(code == 409 and b"bad_digest" in body, "PUT of other bytes is 409: %d %r" % (code, body))
    check(get(b_addr) == (200, b_data), "PUT object reads back")
    check(get(b3(c_path))[0] == 404, "the refused body was not stored")

    # kill -9 storage during uploads.
    acked = {}  # address -> bytes, acknowledged 201/200
    bad = []
    retryable = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def uploader(k):
        for i in range(200):
            if stop.is_set():
                return
            data = os.urandom(50000 + 37 * i)
            path = put_file(data, "u%d_%d.bin" % (k, i))
            addr = b3(path)
            code, head, body = curl("-X", "PUT", "--data-binary", "@" + path,
                                    base + "/o/" + addr)
            with lock:
                if code in (200, 201):
                    acked[addr] = data
                elif code == 0 or (code == 503 and "retry-after:" in head.lower()) or \
                        code in (500, 502, 504):
                    retryable[0] += 1
                else:
                    bad.append((code, head, body))
            os.unlink(path)

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 3, 15, "uploads acknowledged before the kill")
    sto = n.service("storage")
    os.kill(sto["pid"], signal.SIGKILL)
    n.wait_running("storage", not_pid=sto["pid"], timeout=15)
    before = len(acked)
    wait_for(lambda: len(acked) >= before + 3, 15, "uploads acknowledged after the restart")
    stop.set()
    for t in threads:
        t.join(30)
    check(not bad, "only retryable failures during the kill: %r" % bad[:3])
    for addr, data in acked.items():
        code, body = get(addr)
        check(code == 200 and body == data, "acknowledged %s intact (%d)" % (addr, code))
    print("acknowledged %d uploads, %d retryable failures" % (len(acked), retryable[0]))

    rc, took = n.stop()
    check(rc == 0, "node exit 0 (%r)" % rc)
finally:
    n.kill()
print("ok")
