#!/usr/bin/env python3
"""The `passport` service in a real macronode: it starts when listed in
`services` (it is not in the default list), creates its keyring sealed under
the node's root secret (mode 0600, sealed flag set, no root key in the
clear), holds only its signing key (tokens are minted under the node's
capability keys), serves its metrics through the kernel, warns that without
a grant policy every redeem is denied, keeps its key ids across a restart, and
refuses to start on a keyring with one byte changed."""
import os
import shutil
import tempfile

from ronnode import Node, check, wait_for

tmp = tempfile.mkdtemp(prefix="ron-it-pass-")
data = os.path.join(tmp, "data")
secret = os.path.join(tmp, "root.secret")
with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
    f.write(os.urandom(32))
env = {"RON_ROOT_SECRET_FILE": secret}
args = ["--data-dir", data, "--set", "services=passport"]
ring = os.path.join(data, "passport", "keyring")
try:
    n = Node(args, env=env).wait_up()
    try:
        n.wait_running("passport")
        n.wait_log("passport: signing key p1; tokens minted under the node's capability keys")
        n.wait_log("no grant policy")
        st = os.stat(ring)
        check(st.st_mode & 0o777 == 0o600, "keyring mode 0600: %o" % st.st_mode)
        with open(ring, "rb") as f:
            blob = f.read()
        check(blob[:8] == b"RONPKR1\n" and blob[9] == 1, "sealed keyring: %r" % blob[:10])
        wait_for(lambda: "passport_requests_total" in n.metrics(), 5,
                 "passport metrics merged by the kernel")
        rc, took = n.stop()
        check(rc == 0 and took < 2.0, "exit 0 within 2 s (%r, %.2f s)" % (rc, took))
    finally:
        n.kill()

    again = Node(args, env=env).wait_up()
    try:
        again.wait_running("passport")
        again.wait_log("passport: signing key p1; tokens minted under the node's capability keys")
        with open(ring, "rb") as f:
            check(f.read() == blob, "an unchanged keyring is not rewritten")
        again.stop()
    finally:
        again.kill()

    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x01
    with open(ring, "wb") as f:
        f.write(bytes(bad))
    third = Node(args, env=env).wait_up()
    try:
        third.wait_log("passport keyring malformed, tampered with or under another seal", 10)
        third.stop()
    finally:
        third.kill()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print("ok")
