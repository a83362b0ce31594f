#!/bin/sh
# testssl.sh BUILD_DIR - audit the node's two TLS configurations with testssl
# (issue 5; docs/runbooks/testssl.md). Starts one micronode on loopback with
# the HTTPS gateway and the peer (overlay) listener, runs testssl against
# each, and passes when no finding is MEDIUM or worse except the accepted
# ones below. Prints a markdown summary; the JSON of each run is kept in
# $TESTSSL_OUT (default build/testssl/).
#
# The peer listener demands a client certificate (mutual TLS 1.3). testssl
# 3.0.8 (Debian 12) has no --mtls option, so it is given an `openssl`
# wrapper (--openssl) that adds an Ed25519 self-signed client certificate to
# every `openssl s_client` it runs, and ALPN oap/1 when testssl sets none
# (a handshake without it completes, then the node drops the connection
# without close_notify, which s_client counts as a failure); its own
# raw-socket probes stop at the
# ServerHello (protocols, ciphers, extensions), before any client
# certificate is asked for, so both kinds of check see the real server.
# testssl 3.0.8 fetches a TLS 1.3-only server's certificate only with RSA-PSS
# or ECDSA signature algorithms, and the peer certificate is Ed25519 (its key
# is the node's identity), so the wrapper also turns the ECDSA restriction of
# that fetch into ed25519: testssl then checks the real peer certificate and
# reports it under its ECDSA label.
#
# Accepted findings (each a property of a self-signed certificate, which the
# HTTPS gateway uses unless the operator configures https_cert/https_key, and
# of the peer certificate, whose only trust is its key's hash):
#   cert_chain_of_trust  both: self-signed, no CA vouches for it
#   cert_revocation      both: no CRL or OCSP URI, no CA exists to publish them
#   cert_trust           peer only: the certificate names a node id (CN and a
#                        ron:node: URI SAN), not a host, so the IP testssl was
#                        given cannot match; peers check the key's hash instead
#   HSTS                 HTTPS: no Strict-Transport-Security header (LOW here)
# testssl's WARN lines are notes about the scan, not findings; the known ones
# are listed (SCAN_NOTES below) and any other fails the run.
set -eu

BUILD=${1:-build/asan}
RON=$BUILD/ron
OUT=${TESTSSL_OUT:-build/testssl}
TIMEOUT=${TESTSSL_TIMEOUT:-900} # seconds per testssl run

if [ ! -x "$RON" ]; then
    echo "testssl.sh: $RON is not built (make asan, or pass a build dir)" >&2
    exit 2
fi
if ! command -v testssl >/dev/null 2>&1; then
    echo "testssl.sh: testssl is not installed (scripts/deps.sh installs testssl.sh)" >&2
    exit 2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ron-testssl.XXXXXX)
NODE_PID=
cleanup() {
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ADMIN=127.0.0.1:$(port)
HTTPS=127.0.0.1:$(port)
PEER=127.0.0.1:$(port)

mkdir "$WORK/data"
"$RON" node --profile micro --data-dir "$WORK/data" --admin "$ADMIN" --http 127.0.0.1:0 \
    --https "$HTTPS" --overlay "$PEER" --dht 127.0.0.1:0 \
    --set services=gateway,storage,index,dht,overlay >"$WORK/node.log" 2>&1 &
NODE_PID=$!
i=0
until curl -sf -o /dev/null "http://$ADMIN/readyz"; do
    i=$((i + 1))
    if [ $i -gt 150 ] || ! kill -0 "$NODE_PID" 2>/dev/null; then
        echo "testssl.sh: the node did not come up; its log:" >&2
        cat "$WORK/node.log" >&2
        exit 1
    fi
    sleep 0.2
done

# the client certificate and the openssl wrapper for the peer listener
openssl req -x509 -newkey ed25519 -nodes -keyout "$WORK/client.key" -out "$WORK/client.crt" \
    -subj /CN=testssl -days 1 >/dev/null 2>&1
REAL_OPENSSL=$(command -v openssl)
cat >"$WORK/openssl" <<EOF
#!/bin/sh
# s_client: a peer's client certificate, and ALPN oap/1 unless testssl asks
# for its own; the Ed25519 certificate where testssl asks for an ECDSA one
# (3.0.8 has no EdDSA certificate fetch)
if [ "\$1" = s_client ]; then
    shift
    alpn="-alpn oap/1"
    for a in "\$@"; do
        shift
        [ "\$a" = ECDSA+SHA256:ECDSA+SHA384 ] && a=ed25519
        [ "\$a" = -alpn ] && alpn=
        set -- "\$@" "\$a"
    done
    exec "$REAL_OPENSSL" s_client -cert "$WORK/client.crt" -key "$WORK/client.key" \$alpn "\$@"
fi
exec "$REAL_OPENSSL" "\$@"
EOF
chmod 0755 "$WORK/openssl"

run() { # name target [testssl options]
    name=$1 target=$2
    shift 2
    rm -f "$OUT/$name.json"
    timeout "$TIMEOUT" testssl --quiet --warnings off --color 0 --connect-timeout 10 \
        --openssl-timeout 15 --jsonfile "$OUT/$name.json" "$@" "$target" >"$OUT/$name.txt" 2>&1 ||
        true # testssl's exit status counts findings; the JSON is judged below
    if [ ! -s "$OUT/$name.json" ]; then
        echo "testssl.sh: testssl produced no JSON for $name; see $OUT/$name.txt" >&2
        exit 1
    fi
}
run https "$HTTPS"
run peer "$PEER" --openssl "$WORK/openssl"

python3 - "$OUT" "$(testssl --version 2>/dev/null | grep -o 'testssl *[0-9.]*' | head -1)" <<'EOF'
import json, sys
out, version = sys.argv[1], " ".join(sys.argv[2].split())
ACCEPTED = {
    "https": {"cert_chain_of_trust": "self-signed certificate",
              "cert_revocation": "no CRL/OCSP URI: self-signed, no CA to publish them",
              "HSTS": "no HSTS header"},
    "peer": {"cert_chain_of_trust": "self-signed certificate",
             "cert_revocation": "no CRL/OCSP URI: self-signed, no CA to publish them",
             "cert_trust": "names a node id, not a host: peers check the key's hash"},
}
SCAN_NOTES = {  # WARN ids of testssl 3.0.8 that describe the scan, not the server
    "cert_keySize": "3.0.8 does not know Ed25519 keys (256 bits, the peer identity key)",
}
RANK = {"OK": 0, "INFO": 0, "DEBUG": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4,
        "FATAL": 4}
KEY = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3", "cipherlist_NULL",
       "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA",
       "cipherlist_AVERAGE", "cipherlist_STRONG", "PFS", "cipher_order", "secure_renego",
       "secure_client_renego", "CRIME_TLS", "TLS_session_ticket", "sessionresumption_ticket",
       "cert_keySize", "cert_validityPeriod"]
bad = []
print("| check | HTTPS gateway | peer (overlay, mutual TLS) |")
print("|---|---|---|")
res = {}
for name in ("https", "peer"):
    with open("%s/%s.json" % (out, name)) as f:
        res[name] = json.load(f)
    if not any(f["id"] == "TLS1_3" and f["finding"].startswith("offered") for f in res[name]):
        print("**FAIL**: the %s run saw no TLS 1.3 (no connection?)" % name)
        sys.exit(1)
def cell(name, key):
    v = [f for f in res[name] if f["id"] == key]
    return ("%s (%s)" % (v[0]["finding"][:60], v[0]["severity"])) if v else "-"
for key in KEY:
    print("| %s | %s | %s |" % (key, cell("https", key), cell("peer", key)))
print()
print("Findings of LOW or worse (%s):" % version)
print()
print("| target | id | severity | finding | verdict |")
print("|---|---|---|---|---|")
for name in ("https", "peer"):
    for f in res[name]:
        if f["severity"] == "WARN":
            verdict = ("scan note: " + SCAN_NOTES[f["id"]]) if f["id"] in SCAN_NOTES else "FAIL"
            if f["id"] not in SCAN_NOTES:
                bad.append("%s %s (WARN)" % (name, f["id"]))
            print("| %s | %s | %s | %s | %s |" % (name, f["id"], f["severity"],
                                                  f["finding"][:80].replace("|", "/"), verdict))
            continue
        r = RANK.get(f["severity"], 0)
        if r == 0 or f["id"] in ("scanTime", "DNS_CAArecord"):
            continue
        acc = ACCEPTED[name]
        verdict = "accepted: " + acc[f["id"]] if f["id"] in acc else (
            "FAIL" if r >= 2 else "ok (LOW)")
        if r >= 2 and f["id"] not in acc:
            bad.append("%s %s" % (name, f["id"]))
        print("| %s | %s | %s | %s | %s |" % (name, f["id"], f["severity"],
                                              f["finding"][:80].replace("|", "/"), verdict))
print()
if bad:
    print("**FAIL**: findings of MEDIUM or worse: " + ", ".join(bad))
    sys.exit(1)
print("**PASS**: no finding of MEDIUM or worse besides the accepted ones.")
EOF
