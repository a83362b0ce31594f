#!/usr/bin/env python3
"""The HTTPS and peer TLS configurations, probed from outside with
`openssl s_client` (issue 5, "testssl"): the fast regression check of what
`make testssl` (scripts/testssl.sh, docs/runbooks/testssl.md) audits in full.

One micronode serves HTTPS (gateway) and the peer listener (overlay).
HTTPS: TLS 1.3 and 1.2 accepted; TLS 1.1 and 1.0 refused (protocol_version
alert, even from a client that would go down to them); TLS 1.2 without
ECDHE + AEAD refused (static RSA, CBC, 3DES, RC4, NULL, anonymous); a TLS 1.3
suite outside the three AEAD ones refused; no compression; secure
renegotiation advertised and a client-initiated renegotiation refused.
Peer: TLS 1.3 only (1.2 refused even with a client certificate); a client
without a certificate refused (certificate_required); with an Ed25519
self-signed client certificate the handshake completes; no session tickets
(every connection proves its key again); the same TLS 1.3 suites only.
Every s_client run is bounded (timeout 10 s); loopback only.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from ronnode import Node, check, free_port

TMP = tempfile.mkdtemp(prefix="ron-tlscfg-")
# A client that offers old protocols: OpenSSL's own default level refuses them client-side.
OLD = ["-cipher", "DEFAULT@SECLEVEL=0"]


def s_client(addr, *args, stdin=b"", cert=None):
    argv = ["openssl", "s_client", "-connect", addr, "-servername", "localhost"] + list(args)
    if cert:
        argv += ["-cert", cert[0], "-key", cert[1]]
    r = subprocess.run(["timeout", "10"] + argv, input=stdin, capture_output=True)
    return (r.stdout + r.stderr).decode(errors="replace")


def established(out, version):
    """The handshake completed at `version` (s_client's summary line)."""
    return ("New, %s, Cipher is" % version) in out and "Cipher is (NONE)" not in out


def refused(out, alert=None):
    return ("Cipher is (NONE)" in out or "alert" in out) and (alert is None or alert in out)


def check_https(addr):
    out = s_client(addr, "-tls1_3")
    check(established(out, "TLSv1.3"), "HTTPS: TLS 1.3 accepted:\n" + out[-600:])
    check("Compression: NONE" in out, "HTTPS: no compression")
    out = s_client(addr, "-tls1_2")
    check(established(out, "TLSv1.2"), "HTTPS: TLS 1.2 accepted:\n" + out[-600:])
    check("Secure Renegotiation IS supported" in out, "HTTPS: secure renegotiation advertised")
    check("Compression: NONE" in out, "HTTPS: no compression on TLS 1.2")
    cipher = [ln for ln in out.splitlines() if ln.strip().startswith("Cipher    :")]
    check(cipher and "ECDHE-" in cipher[0] and ("GCM" in cipher[0] or "CHACHA20" in cipher[0]),
          "HTTPS: TLS 1.2 negotiates ECDHE + AEAD: %r" % cipher)
    for proto in ("-tls1_1", "-tls1"):
        out = s_client(addr, proto, *OLD)
        check(refused(out, "alert protocol version"), "HTTPS: %s refused:\n%s" % (proto, out[-400:]))
    tried = 0
    for weak in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA",
                 "ECDHE-ECDSA-AES256-SHA384", "DES-CBC3-SHA", "RC4-SHA", "NULL-SHA256",
                 "aNULL", "DHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-CCM"):
        if subprocess.run(["openssl", "ciphers", weak + ":@SECLEVEL=0"],
                          capture_output=True).returncode != 0:
            continue  # this OpenSSL cannot even offer it (3DES, RC4 are compiled out)
        out = s_client(addr, "-tls1_2", "-cipher", weak + ":@SECLEVEL=0")
        check(refused(out), "HTTPS: TLS 1.2 cipher %s refused:\n%s" % (weak, out[-400:]))
        tried += 1
    check(tried >= 6, "HTTPS: at least 6 weak TLS 1.2 ciphers offered and refused (%d)" % tried)
    for suite in ("TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"):
        out = s_client(addr, "-tls1_3", "-ciphersuites", suite)
        check(refused(out), "HTTPS: TLS 1.3 suite %s refused" % suite)
    out = s_client(addr, "-tls1_2", stdin=b"R\n")
    check("RENEGOTIATING" in out and "no renegotiation" in out,
          "HTTPS: client-initiated renegotiation refused:\n" + out[-400:])


def client_cert():
    key, crt = os.path.join(TMP, "client.key"), os.path.join(TMP, "client.crt")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", key,
                        "-out", crt, "-subj", "/CN=tls-config-test", "-days", "1"],
                       capture_output=True, timeout=30)
    check(r.returncode == 0, "client certificate made: %r" % r.stderr)
    return crt, key


def check_peer(addr):
    cert = client_cert()
    out = s_client(addr, "-tls1_3", "-alpn", "oap/1", cert=cert)
    check(established(out, "TLSv1.3") and "alert" not in out,
          "peer: TLS 1.3 with an Ed25519 client certificate accepted:\n" + out[-600:])
    check("New Session Ticket" not in out and "TLS session ticket:" not in out,
          "peer: no session tickets:\n" + out[-600:])
    check("Compression: NONE" in out, "peer: no compression")
    # -ign_eof: stay until the server closes, so the certificate_required
    # alert (sent after the client's Finished in TLS 1.3) is always read;
    # with stdin at EOF s_client could quit before it arrived.
    out = s_client(addr, "-tls1_3", "-ign_eof")
    check("alert certificate required" in out, "peer: no client certificate refused:\n" +
          out[-400:])
    for proto in ("-tls1_2", "-tls1_1", "-tls1"):
        out = s_client(addr, proto, *OLD, cert=cert)
        check(refused(out, "alert protocol version"), "peer: %s refused:\n%s" % (proto, out[-400:]))
    for suite in ("TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"):
        out = s_client(addr, "-tls1_3", "-ciphersuites", suite, cert=cert)
        check(refused(out), "peer: TLS 1.3 suite %s refused" % suite)


def main():
    check(shutil.which("openssl") is not None, "openssl is installed")
    https = "127.0.0.1:%d" % free_port()
    overlay = "127.0.0.1:%d" % free_port()
    n = Node(["--profile", "micro", "--http", "127.0.0.1:0", "--https", https,
              "--overlay", overlay], services="gateway,storage,index,dht,overlay").wait_up()
    try:
        check_https(https)
        check_peer(overlay)
        print("ok: HTTPS %s and peer %s TLS configurations" % (https, overlay))
    finally:
        n.kill()
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
