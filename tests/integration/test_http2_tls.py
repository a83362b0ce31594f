#!/usr/bin/env python3
"""test_http2_tls.py - HTTP/2 and TLS of ron-transport with real clients
(curl with nghttp2, openssl s_client) and a raw-frame HTTP/2 client, against
bench_http_server (one cleartext and one --tls listener process).

Checks: h2c by prior knowledge and by Upgrade, h2 over TLS by ALPN and
HTTP/1.1 over TLS all reach the same handler; ALPN picks h2 / http/1.1;
TLS 1.1 is refused and counted; the generated certificate is ECDSA P-256,
its key 0600, and it is reused after a restart; a 48 MiB body streamed over
h2 to a rate-limited reader keeps the server's memory bounded; streams past
SETTINGS_MAX_CONCURRENT_STREAMS are refused; a rapid-reset flood ends in
GOAWAY ENHANCE_YOUR_CALM and the server keeps serving.
Loopback only, port 0, temp dir; every wait is bounded.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, binary, tmp, name, tls_dir=None, config=None):
        self.err_path = os.path.join(tmp, name + ".err")
        args = [binary, "127.0.0.1:0"]
        if config:
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                f.write(config)
            args.append(path)
        if tls_dir:
            args += ["--tls", tls_dir]
        env = dict(os.environ)
        # a small ASan quarantine, so RSS shows what the server holds, not freed memory
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"
        self.err = open(self.err_path, "w")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, env=env,
                                  text=True)
        line = self.p.stdout.readline()
        if not line.startswith("port "):
            fail(f"{name}: no port line: {line!r}")
        self.port = int(line.split()[1])

    def stop(self):
        """SIGTERM, wait, return the counters the server printed."""
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            fail("server did not exit on SIGTERM")
        self.err.close()
        text = open(self.err_path).read()
        if rc != 0 or "ERROR: AddressSanitizer" in text or "runtime error" in text:
            fail(f"server exited {rc}:\n{text[-3000:]}")
        stats = {}
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["reject"] and len(parts) == 3:
                stats["reject_" + parts[1]] = int(parts[2])
            elif parts[:1] == ["tls_fail"] and len(parts) == 3:
                stats["tls_fail_" + parts[1]] = int(parts[2])
            elif len(parts) % 2 == 0 and parts[:1] in (["requests"], ["h2_conns"]):
                for i in range(0, len(parts), 2):
                    stats[parts[i]] = int(parts[i + 1])
        return stats


def curl(*args, timeout=20):
    r = subprocess.run(["curl", "-s", "-S", "-m", str(timeout)] + list(args),
                       capture_output=True, text=True, timeout=timeout + 5)
    return r.returncode, r.stdout, r.stderr


def s_client(port, *args):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}"] + list(args),
                       input="", capture_output=True, text=True, timeout=15)
    return r.returncode, r.stdout + r.stderr


# ---- a raw HTTP/2 client: just enough framing for the flood tests ----

def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def headers_block(path):
    p = path.encode()
    # :method GET, :scheme http (static indices), :path and :authority as literals
    return b"\x82\x86\x04" + bytes([len(p)]) + p + b"\x01\x01x"


def read_frames(sock, deadline):
    """Yield (type, flags, stream, payload) until EOF or the deadline."""
    buf = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            return
        if not data:
            return
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            yield ftype, flags, stream, buf[9:9 + n]
            buf = buf[9 + n:]


def h2_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + frame(4, 0, 0))  # our (empty) SETTINGS; theirs stays unacked
    return s


def test_too_many_streams(port):
    s = h2_connect(port)
    out = b""
    for i in range(150):
        out += frame(1, 0x5, 1 + 2 * i, headers_block("/slow?ms=1500"))
    s.sendall(out)
    answered, refused, goaway = 0, 0, False
    for ftype, flags, stream, payload in read_frames(s, time.monotonic() + 8):
        if ftype == 1:
            answered += 1
        elif ftype == 3 and int.from_bytes(payload[:4], "big") == 7:  # REFUSED_STREAM
            refused += 1
        elif ftype == 7:
            goaway = True
        if answered + refused >= 150:
            break
    s.close()
    if answered != 100 or refused != 50:
        fail(f"150 streams at max 100: answered {answered}, refused {refused}, goaway {goaway}")


def test_rapid_reset(port):
    s = h2_connect(port)
    out = b""
    for i in range(400):
        sid = 1 + 2 * i
        out += frame(1, 0x5, sid, headers_block("/slow?ms=5000"))
        out += frame(3, 0, sid, struct.pack(">I", 8))  # RST_STREAM CANCEL
    try:
        s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    code = None
    for ftype, flags, stream, payload in read_frames(s, time.monotonic() + 8):
        if ftype == 7:
            code = int.from_bytes(payload[4:8], "big")
            break
    s.close()
    if code != 0xB:
        fail(f"rapid reset: expected GOAWAY ENHANCE_YOUR_CALM (11), got {code}")


def test_idle_and_stalled_streams_get_goaway(port):
    # idle: no stream at all -> GOAWAY NO_ERROR after idle_timeout_ms, then EOF
    s = h2_connect(port)
    t0 = time.monotonic()
    code, eof_at = None, None
    for ftype, flags, stream, payload in read_frames(s, t0 + 6):
        if ftype == 7:
            code = int.from_bytes(payload[4:8], "big")
    waited = time.monotonic() - t0
    s.close()
    if code != 0 or not 0.8 <= waited < 5:
        fail(f"idle h2 connection: GOAWAY {code} after {waited:.1f}s")
    # stalled: a header block never finished (no END_HEADERS) -> GOAWAY after body_timeout_ms
    s = h2_connect(port)
    s.sendall(frame(1, 0x1, 1, headers_block("/healthz")))  # END_STREAM, no END_HEADERS
    t0 = time.monotonic()
    code = None
    for ftype, flags, stream, payload in read_frames(s, t0 + 6):
        if ftype == 7:
            code = int.from_bytes(payload[4:8], "big")
    waited = time.monotonic() - t0
    s.close()
    if code is None or waited >= 5:
        fail(f"stalled h2 header block: GOAWAY {code} after {waited:.1f}s")


def main():
    binary_dir = os.environ.get("RON_BINARY_DIR", "build/asan")
    server_bin = os.path.join(binary_dir, "bench_http_server")
    if not os.path.exists(server_bin):
        fail(f"{server_bin} not built")
    r = subprocess.run(["curl", "-V"], capture_output=True, text=True)
    if "HTTP2" not in r.stdout:
        print("SKIP: curl without HTTP2")
        return 0
    with tempfile.TemporaryDirectory(prefix="ron-h2tls-") as tmp:
        certs = os.path.join(tmp, "certs")
        plain = Server(server_bin, tmp, "plain",
                       config='{"idle_timeout_ms": 1000, "body_timeout_ms": 1000}')
        tls = Server(server_bin, tmp, "tls", tls_dir=certs)
        try:
            pu = f"http://127.0.0.1:{plain.port}"
            tu = f"https://127.0.0.1:{tls.port}"
            # the same handler over every protocol
            cases = [
                (["--http2-prior-knowledge", pu + "/proto"], "2", "HTTP/2"),
                (["--http2", pu + "/proto"], "2", "HTTP/2"),
                (["--http1.1", pu + "/proto"], "1.1", "HTTP/1"),
                (["-k", "--http2", tu + "/proto"], "2", "HTTP/2"),
                (["-k", "--http1.1", tu + "/proto"], "1.1", "HTTP/1"),
            ]
            for args, ver, body in cases:
                rc, out, err = curl("-w", "|%{http_version}", *args)
                if rc != 0 or not out.startswith(body) or not out.endswith("|" + ver):
                    fail(f"curl {args}: rc {rc} out {out!r} err {err!r}")
            rc, out, err = curl("--http2-prior-knowledge", "-d", "x" * 5000, pu + "/echo")
            if rc != 0 or out != "5000":
                fail(f"h2c POST body: {rc} {out!r} {err!r}")
            rc, out, err = curl("--http2-prior-knowledge", pu + "/nope")
            if rc != 0 or '"code":"not_found"' not in out.replace(" ", ""):
                fail(f"h2c 404 envelope: {out!r}")
            # ALPN
            for offer, want in (("h2,http/1.1", "h2"), ("http/1.1", "http/1.1")):
                rc, out = s_client(tls.port, "-alpn", offer)
                if f"ALPN protocol: {want}" not in out:
                    fail(f"ALPN {offer}: wanted {want}:\n{out[-1500:]}")
            # the floor: TLS 1.1 refused (the client allowed to try it)
            rc, out = s_client(tls.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
            if rc == 0 or "Cipher is (NONE)" not in out and "alert" not in out:
                fail(f"TLS 1.1 handshake was not refused:\n{out[-1500:]}")
            rc, out = s_client(tls.port, "-tls1_2")
            if "Protocol  : TLSv1.2" not in out and "TLSv1.2" not in out:
                fail(f"TLS 1.2 refused:\n{out[-1500:]}")
            # the generated certificate: ECDSA P-256, key 0600
            crt, key = os.path.join(certs, "gateway.crt"), os.path.join(certs, "gateway.key")
            if os.stat(key).st_mode & 0o777 != 0o600:
                fail(f"key mode {oct(os.stat(key).st_mode)}")
            text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-text"],
                                  capture_output=True, text=True).stdout
            if "id-ecPublicKey" not in text or "prime256v1" not in text:
                fail(f"certificate is not ECDSA P-256:\n{text}")
            first_cert = open(crt).read()
            # a streamed 48 MiB body to a slow h2 reader: memory stays bounded
            base = rss_anon_kib(tls.p.pid)
            slow = subprocess.Popen(["curl", "-s", "-k", "--http2", "--limit-rate", "16M",
                                     "-o", os.devnull, "-w", "%{size_download}|%{http_version}",
                                     tu + f"/big?n={48 << 20}"],
                                    stdout=subprocess.PIPE, text=True)
            peak = 0
            t_end = time.monotonic() + 30
            while slow.poll() is None and time.monotonic() < t_end:
                peak = max(peak, rss_anon_kib(tls.p.pid) - base)
                time.sleep(0.1)
            out, _ = slow.communicate(timeout=10)
            if out != f"{48 << 20}|2":
                fail(f"slow h2 download: {out!r}")
            if peak > 16 << 10:
                fail(f"server RSS grew {peak} KiB streaming 48 MiB to a slow reader")
            print(f"slow reader: RssAnon growth peak {peak} KiB for a 48 MiB body")
            test_too_many_streams(plain.port)
            test_rapid_reset(plain.port)
            test_idle_and_stalled_streams_get_goaway(plain.port)
            rc, out, err = curl("--http2-prior-knowledge", pu + "/healthz")
            if rc != 0 or out != "ok":
                fail(f"server not serving after the flood: {rc} {out!r}")
        finally:
            pst = plain.stop()
            tst = tls.stop()
        if pst.get("reject_h2_flood", 0) < 1 or pst.get("reject_h2_refused_stream", 0) < 50:
            fail(f"plain counters: {pst}")
        if pst.get("reject_idle_timeout", 0) < 1 or pst.get("reject_body_timeout", 0) < 1:
            fail(f"h2 idle/body timeouts not counted: {pst}")
        if pst.get("h2_upgrades", 0) < 1:
            fail(f"no h2c upgrade counted: {pst}")
        if tst.get("tls_fail_version", 0) < 1:
            fail(f"TLS 1.1 refusal not counted by reason: {tst}")
        # the certificate is reused after a restart, and it is what the server presents
        tls = Server(server_bin, tmp, "tls2", tls_dir=certs)
        try:
            if open(os.path.join(certs, "gateway.crt")).read() != first_cert:
                fail("certificate regenerated on restart")
            rc, out = s_client(tls.port, "-showcerts")
            served = out[out.find("-----BEGIN CERTIFICATE-----"):]
            served = served[:served.find("-----END CERTIFICATE-----") + 25]
            if served.strip() != first_cert.strip():
                fail("served certificate differs from the stored one")
        finally:
            tls.stop()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
