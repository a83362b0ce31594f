#!/usr/bin/env python3
"""`--https ADDR` serves the gateway over TLS (DESIGN §11), in both profiles.

The kernel binds the HTTPS listener (an ephemeral port here) and hands it to
the gateway next to the HTTP one (fd 4 of the gateway child in macronode; in
micronode the gateway runs in the node). curl -k fetches over HTTPS with
--http1.1 and with --http2 (ALPN picks h2) the bytes posted over HTTP, and
posts over HTTPS what is then read over HTTP. The certificate is ECDSA P-256;
macronode (persistent) generates it on first start into <data_dir>/tls
(key 0600) and reuses it after a restart; an amnesia micronode makes it in
RAM and writes nothing. A configured pair (https_cert, https_key) is
served as given; a certificate without its key is refused at start (exit
2). Without --https no HTTPS listener is opened.
"""
import json
import os
import ssl
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ronnode import RON, Node, check, free_port, wait_for


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect:"] + list(args),
                          capture_output=True, timeout=20)


def server_cert(port):
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode())


def exercise(n, http, https):
    base, sbase = "http://" + http, "https://" + https
    port = int(https.rsplit(":", 1)[1])
    data = os.urandom(200000)
    path = os.path.join(n.dir, "obj.bin")
    with open(path, "wb") as f:
        f.write(data)
    # right after start the gateway's storage peer may still be connecting:
    # a retryable 503, which a client retries
    auth = n.auth_header()  # writes need a capability: the node's operator capability
    r = wait_for(lambda: (lambda x: x if b"address" in x.stdout else None)(
        curl(*auth, "--data-binary", "@" + path, base + "/o")), 5, "POST /o accepted")
    addr = json.loads(r.stdout)["address"]
    out = os.path.join(n.dir, "back.bin")
    for flag, want in (("--http1.1", "1.1"), ("--http2", "2")):
        r = curl("-k", flag, "-o", out, "-w", "%{http_code} %{http_version}",
                 sbase + "/o/" + addr)
        check(r.stdout.decode() == "200 " + want, "HTTPS %s: %r %r" % (flag, r.stdout, r.stderr))
        with open(out, "rb") as f:
            check(f.read() == data, "HTTPS %s: the posted bytes" % flag)
    r = curl("-k", "--http2", "-r", "65535-65537", sbase + "/o/" + addr)
    check(r.stdout == data[65535:65538], "a range over h2 + TLS")
    more = os.urandom(5000)
    with open(path, "wb") as f:
        f.write(more)
    r = curl("-k", "--http2", *auth, "--data-binary", "@" + path, sbase + "/o")
    addr2 = json.loads(r.stdout)["address"]
    r = curl(base + "/o/" + addr2)
    check(r.stdout == more, "posted over HTTPS, read over HTTP")
    cert = server_cert(port)
    key = cert.public_key()
    check(isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1",
          "ECDSA P-256 certificate: %r" % key)
    return cert


# macronode, persistent: a generated pair kept in <data_dir>/tls
http, https = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
args = ["--set", "services=storage,index,gateway", "--set", "http=" + http, "--https", https]
n = Node(args).wait_up()
try:
    n.wait_running("gateway")
    n.wait_log("HTTPS on")
    cert = exercise(n, http, https)
    key = os.path.join(n.dir, "tls", "gateway.key")
    check(os.stat(key).st_mode & 0o777 == 0o600, "generated key 0600")
    rc, _ = n.stop()
    check(rc == 0, "exit 0 (%r)" % rc)
    n.log.close()
    again = Node(args + ["--data-dir", n.dir]).wait_up()
    try:
        again.wait_running("gateway")
        again.wait_log("HTTPS on")
        port = int(https.rsplit(":", 1)[1])
        check(server_cert(port).fingerprint(cert.signature_hash_algorithm) ==
              cert.fingerprint(cert.signature_hash_algorithm), "the pair is reused on restart")
        rc, _ = again.stop()
        check(rc == 0, "exit 0 (%r)" % rc)
    finally:
        again.kill()
    # the same pair configured by path (https_cert/https_key), in a micronode
    tls = os.path.join(n.dir, "tls")
    h2, s2 = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
    conf = Node(["--profile", "micro", "--set", "services=gateway", "--set", "http=" + h2,
                 "--https", s2, "--set", "https_cert=" + os.path.join(tls, "gateway.crt"),
                 "--set", "https_key=" + os.path.join(tls, "gateway.key")]).wait_up()
    try:
        conf.wait_log("HTTPS on")
        got = server_cert(int(s2.rsplit(":", 1)[1]))
        check(got.fingerprint(cert.signature_hash_algorithm) ==
              cert.fingerprint(cert.signature_hash_algorithm), "the configured pair is served")
        r = curl("-k", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                 "https://%s/n/nothing.test" % s2)
        check(r.stdout == b"404 2", "h2 on the configured pair: %r" % r.stdout)
    finally:
        conf.kill()
    # a certificate without its key is refused at start, with the reason
    r = subprocess.run([RON, "node", "--data-dir", n.dir, "--admin", "127.0.0.1:0", "--https",
                        "127.0.0.1:0", "--set", "https_cert=" + os.path.join(tls, "gateway.crt")],
                       capture_output=True, text=True, timeout=10)
    check(r.returncode == 2 and "https_key" in r.stderr,
          "https_cert alone refused: %r %r" % (r.returncode, r.stderr))
finally:
    n.kill()

# micronode, amnesia: the pair is made in RAM, the data dir stays empty
http, https = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
m = Node(["--profile", "micro", "--set", "services=storage,index,gateway", "--set",
          "http=" + http, "--https", https]).wait_up()
try:
    m.wait_running("gateway")
    m.wait_log("HTTPS on")
    exercise(m, http, https)
    check(not os.path.exists(os.path.join(m.dir, "tls")), "amnesia: no tls directory")
    rc, _ = m.stop()
    check(rc == 0, "micro exit 0 (%r)" % rc)
finally:
    m.kill()

# without --https: nothing listens for TLS
http = "127.0.0.1:%d" % free_port()
q = Node(["--set", "services=gateway", "--set", "http=" + http]).wait_up()
try:
    q.wait_running("gateway")
    check("HTTPS on" not in q.logs() and "listening on" in q.logs() and
          "too (socket held" not in q.logs(), "no HTTPS listener without --https")
finally:
    q.kill()
print("ok")
