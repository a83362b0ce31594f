#!/usr/bin/env python3
"""Capabilities at the gateway of a real node (`ron node`, macro profile:
storage, index, gateway and app children; the gateway's guard follows the
kernel's authority). Over HTTP with curl: an anonymous GET is 200; an
anonymous POST is 401 with the JSON envelope (capability_required) and
`WWW-Authenticate: Bearer`, and stores nothing; a malformed token is 401
capability_invalid; a get-only capability reads (Bearer and `?cap=`) but a
write with it is 403 and stores nothing; the operator's capability writes
(Bearer and `?cap=`), through the storage service it is forwarded to.
Rejections show in guard_rejected_total{service="gateway"} on /metrics and
in the gateway's audit log. `ron cap revoke <id>` of the get capability:
the gateway refuses it within 1 s (measured from the command's return,
printed). No token given in `?cap=` (nor any Bearer token) appears in the
node's stderr or the audit log. Then the micro profile (one process, the
node's one guard, amnesia): anonymous writes 401, the operator's (announced
once on stderr) 201 with ?cap=, and neither it nor a bogus ?cap= is logged."""
import base64
import json
import os
import re
import subprocess
import tempfile
import time

from ronnode import RON, Node, check, free_port, wait_for

DISTINCT = "ZZqc7distinctZZcapZZ" + "A" * 40  # a bogus ?cap= value to look for in logs


def curl(*args, data=None, hdrs=()):
    """(status or 0 on a connection error, headers text lower-cased, body bytes)."""
    fd, hdr = tempfile.mkstemp()
    os.close(fd)
    cmd = ["curl", "-sS", "--max-time", "10", "-H", "Expect:", "-D", hdr, "-o", "-",
           "-w", "\n%{http_code}"]
    for h in hdrs:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    try:
        r = subprocess.run(cmd + list(args), input=data, capture_output=True, timeout=20)
        with open(hdr, "rb") as f:
            head = f.read().decode(errors="replace").lower()
    finally:
        os.unlink(hdr)
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code or b"0"), head, body


def b3(data):
    r = subprocess.run(["b3sum", "--no-names", "-"], input=data, capture_output=True)
    return "b3:" + r.stdout.decode().strip()


def token_id(tok):
    """The identifier packet of a ron-auth token (base64url of v1 packets)."""
    raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    i = 0
    while i + 4 <= len(raw):
        n = int(raw[i:i + 4], 16)
        pkt = raw[i + 4:i + n].rstrip(b"\n")
        key, _, val = pkt.partition(b" ")
        if key == b"identifier":
            return val.decode()
        i += n
    raise AssertionError("no identifier in the token")


def bearer(tok):
    return "Authorization: Bearer " + tok


def operator_cap(n):
    """<data-dir>/operator.cap; in amnesia the one stderr line that announces it."""
    path = os.path.join(n.dir, "operator.cap")

    def read():
        try:
            with open(path) as f:
                return ("file", f.read().strip()) if os.path.getsize(path) else None
        except OSError:
            pass
        m = re.search(r"operator capability: ([A-Za-z0-9_=-]+)", n.logs())
        return ("stderr", m.group(1)) if m else None
    where, tok = wait_for(read, 15, "the operator capability")
    if where == "file":
        check(os.stat(path).st_mode & 0o077 == 0, "operator.cap is private (0600)")
    return tok


def post_retrying(base, data, hdrs, query=""):
    """POST /o, retrying the 503s while the gateway's bus link to storage comes up."""
    deadline = time.monotonic() + 10
    while True:
        code, head, body = curl(base + "/o" + query, data=data, hdrs=hdrs)
        if code != 503 or time.monotonic() > deadline:
            return code, head, body
        time.sleep(0.1)


def ron(n, *args):
    return subprocess.run([RON] + list(args), capture_output=True, text=True, timeout=30,
                          env=n.env)


def macro():
    http = "127.0.0.1:%d" % free_port()
    n = Node(["--set", "services=storage,index,gateway,app", "--set", "http=" + http,
              "--set", "app=127.0.0.1:0"], services=None).wait_up()
    base = "http://" + http
    try:
        for s in ("storage", "index", "gateway", "app"):
            n.wait_running(s, timeout=15)
        op = operator_cap(n)
        app = wait_for(lambda: n.service("app")["listen"] or None, 15, "app listener")

        # the operator writes (through the storage service, which checks the
        # forwarded capability too)
        data = os.urandom(70000)
        code, _, body = post_retrying(base, data, [bearer(op)])
        check(code == 201, "operator POST is 201: %d %r" % (code, body))
        addr = json.loads(body)["address"]
        check(addr == b3(data), "address is b3sum's")

        # anonymous: reads pass, writes are 401 with the envelope, nothing stored
        code, _, body = curl(base + "/o/" + addr)
        check(code == 200 and body == data, "anonymous GET is 200 (%d)" % code)
        other = os.urandom(5000)
        code, head, body = curl(base + "/o", data=other)
        env = json.loads(body)
        check(code == 401, "anonymous POST is 401: %d %r" % (code, body))
        check("\nwww-authenticate: bearer" in head, "401 has WWW-Authenticate: %r" % head)
        check(env["code"] == "unauthorized" and env["reason"] == "capability_required"
              and env["retryable"] is False, "401 envelope: %r" % env)
        check(curl(base + "/o/" + b3(other))[0] == 404, "the refused body was not stored")
        code, _, _ = curl("-X", "PUT", base + "/o/" + b3(other), data=other)
        check(code == 401, "anonymous PUT is 401: %d" % code)

        # a token that is no capability
        code, head, body = curl(base + "/o/" + addr, hdrs=[bearer("bogus.token")])
        check(code == 401 and json.loads(body)["reason"] == "capability_invalid",
              "malformed token is 401 capability_invalid: %d %r" % (code, body))
        check("\nwww-authenticate: bearer" in head, "401 has WWW-Authenticate")
        code, _, body = curl(base + "/o/" + addr + "?cap=" + DISTINCT)
        check(code == 401, "malformed ?cap= is 401: %d %r" % (code, body))

        # a get-only capability, minted by the node for the operator
        r = ron(n, "cap", "mint", "--ops", "get", "--node", app, "--cap", op)
        check(r.returncode == 0, "ron cap mint: %r" % (r.stderr,))
        get = r.stdout.strip()
        gid = token_id(get)
        check(gid != token_id(op), "the minted token has its own identifier")
        code, _, body = curl(base + "/o/" + addr, hdrs=[bearer(get)])
        check(code == 200 and body == data, "GET with the get capability is 200 (%d)" % code)
        code, _, body = curl(base + "/o/" + addr + "?cap=" + get)
        check(code == 200 and body == data, "GET with ?cap= is 200 (%d)" % code)
        code, head, body = curl(base + "/o", data=other, hdrs=[bearer(get)])
        check(code == 403 and json.loads(body)["code"] == "forbidden",
              "POST with a get capability is 403: %d %r" % (code, body))
        check("\nwww-authenticate:" not in head, "403 has no WWW-Authenticate")
        check(curl(base + "/o/" + b3(other))[0] == 404, "the 403 body was not stored")

        # a name's redirect keeps a ?cap= token (a browser link has no header to carry
        # it), and only that: a Bearer header or no token gives the bare object URL
        r = n.ron("name", "publish", "redir.auth", addr, "--node", app, "--cap", op, timeout=30)
        check(r.returncode == 0, "ron name publish: %r" % (r.stderr,))
        code, head, _ = curl(base + "/n/redir.auth?cap=" + get)
        check(code == 302 and ("\nlocation: /o/%s?cap=%s\r" % (addr, get)).lower() in head,
              "/n/ with ?cap= redirects with the cap: %d %r" % (code, head))
        code, _, body = curl("-L", base + "/n/redir.auth?cap=" + get)
        check(code == 200 and body == data, "following it reads the object: %d" % code)
        code, head, _ = curl(base + "/n/redir.auth", hdrs=[bearer(get)])
        check(code == 302 and ("\nlocation: /o/%s\r" % addr) in head,
              "/n/ with a Bearer token redirects to the bare URL: %r" % head)
        code, head, _ = curl(base + "/n/redir.auth?cap=" + get + "%0d%0aX-Evil:%201")
        check(code == 401 and "x-evil" not in head and "\nlocation:" not in head,
              "a ?cap= that is no token is refused, never echoed: %d %r" % (code, head))

        # ?cap= writes for a browser link
        third = os.urandom(3000)
        code, _, body = post_retrying(base, third, [], "?cap=" + op)
        check(code == 201 and json.loads(body)["address"] == b3(third),
              "POST with ?cap= is 201: %d %r" % (code, body))

        # rejections are counted and audited
        def rejected():
            total = 0.0
            for line in n.metrics().splitlines():
                if line.startswith("guard_rejected_total{") and 'service="gateway"' in line:
                    total += float(line.split()[-1])
            return total >= 5 and total
        total = wait_for(rejected, 10, "guard_rejected_total{service=\"gateway\"} on /metrics")
        print("guard_rejected_total{service=\"gateway\"} = %d" % total)
        audit = os.path.join(n.dir, "audit", "gateway.log")
        wait_for(lambda: os.path.exists(audit) and os.path.getsize(audit) > 0, 10,
                 "the gateway's audit log")
        with open(audit, "rb") as f:
            text = f.read().decode(errors="replace")
        check("rejected" in text, "a rejection record in %s" % audit)

        # revoke the get capability: the gateway refuses it within 1 s
        t0 = time.monotonic()
        r = ron(n, "cap", "revoke", gid, "--node", app, "--cap", op)
        check(r.returncode == 0, "ron cap revoke: %r %r" % (r.stdout, r.stderr))
        t1 = time.monotonic()

        def refused():
            return curl(base + "/o/" + addr, hdrs=[bearer(get)])[0] == 401
        wait_for(refused, 5, "the gateway refusing the revoked token")
        t2 = time.monotonic()
        print("gateway refused the revoked token %.0f ms after `ron cap revoke` returned "
              "(%.0f ms after it started)" % ((t2 - t1) * 1000, (t2 - t0) * 1000))
        check(t2 - t1 < 1.0, "revocation converged at the gateway within 1 s: %.3f s" % (t2 - t1))
        code, _, body = curl(base + "/o/" + addr + "?cap=" + get)
        check(code == 401 and json.loads(body)["reason"] == "capability_revoked",
              "revoked ?cap= is 401 capability_revoked: %d %r" % (code, body))
        check(curl(base + "/o/" + addr, hdrs=[bearer(op)])[0] == 200,
              "the operator's capability still reads")

        rc, _ = n.stop()
        check(rc == 0, "node exit 0 (%r)" % rc)
        # no capability given to the gateway shows in the node's output or the audit log
        logs = n.logs()
        with open(audit, "rb") as f:
            text = f.read().decode(errors="replace")
        for tok, what in ((DISTINCT, "the bogus ?cap="), (get, "the get capability"),
                          (op, "the operator capability")):
            for part in (tok, tok[:24], tok[-24:]):
                check(part not in logs, "%s is not in the node's stderr" % what)
                check(part not in text, "%s is not in the audit log" % what)
    finally:
        n.kill()


def micro():
    http = "127.0.0.1:%d" % free_port()
    n = Node(["--profile", "micro", "--set", "services=storage,index,gateway", "--set",
              "http=" + http], services=None).wait_up()
    base = "http://" + http
    try:
        n.wait_running("gateway", timeout=15)
        op = operator_cap(n)
        data = os.urandom(4000)
        code, head, _ = curl(base + "/o", data=data)
        check(code == 401 and "\nwww-authenticate: bearer" in head, "micro: anonymous POST 401")
        code, _, body = post_retrying(base, data, [], "?cap=" + op)
        check(code == 201, "micro: operator POST (?cap=) 201: %d %r" % (code, body))
        check(curl(base + "/o/" + b3(data))[0] == 200, "micro: anonymous GET 200")
        code, _, _ = curl(base + "/o?cap=" + DISTINCT, data=data)
        check(code == 401, "micro: a bogus ?cap= is 401 (%d)" % code)
        rc, _ = n.stop()
        check(rc == 0, "micro node exit 0 (%r)" % rc)
        # amnesia announces the operator capability once on stderr; the
        # gateway never repeats it nor any ?cap= value
        check(n.logs().count(op) == 1, "micro: the operator capability is printed once")
        check(DISTINCT not in n.logs(), "micro: the bogus ?cap= is not in stderr")
    finally:
        n.kill()


macro()
micro()
print("ok")
