#!/usr/bin/env python3
"""Capabilities across three macaroon implementations: libmacaroons (through
ctypes, the library ron-auth mints with), pymacaroons, and ron-auth's own
verifier and attenuator (through `ron cap verify --key` and `ron cap
attenuate`). Tokens minted by libmacaroons or pymacaroons verify with ours;
tokens attenuated by ours verify with both and are byte-identical to
pymacaroons' attenuation; tokens attenuated by pymacaroons verify with ours
and can only narrow; tampered tokens (a caveat byte, a dropped caveat, the
wrong key) fail in all three; an unknown caveat key fails ours even when
the signature holds; expiry honours 60 s of skew; bad usage exits 2.
Needs python3-pymacaroons (deps/debian-packages.txt); without it the test
says SKIP and passes."""
import base64
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

from ronnode import RON, check

try:
    from pymacaroons import Macaroon, Verifier
    from pymacaroons.exceptions import MacaroonException
except ImportError:
    print("SKIP: python3-pymacaroons is not installed (apt-get install python3-pymacaroons)")
    sys.exit(0)

KEY = bytes(range(32))
KEY_HEX = KEY.hex()
ID = "ron1:k1:3:00112233445566778899aabbccddeeff"
TENANT = "00112233445566778899aabbccddeeff"
NOW = 1800000000
FIVE = ["ops = get,put", "tenant = " + TENANT, "expires = %d" % (NOW + 3600),
        "max-bytes = 1048576", "prefix = b3:ab"]
KNOWN = ("tenant", "ops", "expires", "not-before", "max-bytes", "prefix", "name-prefix", "rate")

work = tempfile.mkdtemp(prefix="ron-cap-")


# ---- libmacaroons through ctypes ----
lib = ctypes.CDLL("libmacaroons.so.0")
lib.macaroon_create.restype = ctypes.c_void_p
lib.macaroon_create.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                ctypes.POINTER(ctypes.c_int)]
lib.macaroon_add_first_party_caveat.restype = ctypes.c_void_p
lib.macaroon_add_first_party_caveat.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
lib.macaroon_serialize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_int)]
lib.macaroon_deserialize.restype = ctypes.c_void_p
lib.macaroon_deserialize.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
lib.macaroon_destroy.argtypes = [ctypes.c_void_p]
lib.macaroon_verifier_create.restype = ctypes.c_void_p
lib.macaroon_verifier_destroy.argtypes = [ctypes.c_void_p]
GENERAL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte),
                           ctypes.c_size_t)
lib.macaroon_verifier_satisfy_general.argtypes = [ctypes.c_void_p, GENERAL, ctypes.c_void_p,
                                                  ctypes.POINTER(ctypes.c_int)]
lib.macaroon_verify.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                ctypes.POINTER(ctypes.c_int)]


def lm_mint(ident, caveats, key=KEY):
    err = ctypes.c_int()
    m = lib.macaroon_create(b"ron", 3, key, len(key), ident.encode(), len(ident), ctypes.byref(err))
    for c in caveats:
        n = lib.macaroon_add_first_party_caveat(m, c.encode(), len(c), ctypes.byref(err))
        lib.macaroon_destroy(m)
        m = n
    buf = ctypes.create_string_buffer(8192)
    check(lib.macaroon_serialize(m, buf, len(buf), ctypes.byref(err)) == 0, "libmacaroons serializes")
    lib.macaroon_destroy(m)
    return buf.value.decode()


@GENERAL
def _lm_known(_f, pred, n):
    text = bytes(pred[:n]).decode(errors="replace")
    return 0 if text.split(" = ", 1)[0] in KNOWN else -1


def lm_verifies(tok, key=KEY):
    err = ctypes.c_int()
    m = lib.macaroon_deserialize(tok.encode(), ctypes.byref(err))
    if not m:
        return False
    v = lib.macaroon_verifier_create()
    lib.macaroon_verifier_satisfy_general(v, _lm_known, None, ctypes.byref(err))
    ok = lib.macaroon_verify(v, m, key, len(key), None, 0, ctypes.byref(err)) == 0
    lib.macaroon_verifier_destroy(v)
    lib.macaroon_destroy(m)
    return ok


# ---- pymacaroons ----
def py_verifies(tok, key=KEY):
    v = Verifier()
    v.satisfy_general(lambda c: c.split(" = ", 1)[0] in KNOWN)
    try:
        return v.verify(Macaroon.deserialize(tok), key)
    except (MacaroonException, ValueError, TypeError):
        return False


def py_attenuate(tok, *caveats):
    m = Macaroon.deserialize(tok)
    for c in caveats:
        m = m.add_first_party_caveat(c)
    return m.serialize()


# ---- ours ----
def ron(*args, stdin=None):
    return subprocess.run([RON] + list(args), capture_output=True, text=True, input=stdin,
                          timeout=20)


def keyfile(hexkey, mode=0o600):
    path = os.path.join(work, "key-%s-%o" % (hexkey[:8], mode))
    with open(path, "w") as f:
        f.write(hexkey + "\n")
    os.chmod(path, mode)
    return path


def ours(tok, *req, key=KEY_HEX):
    p = ron("cap", "verify", tok, "--key", keyfile(key), "--now", str(NOW), "--json", *req)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr


def tamper(tok, needle, repl):
    raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    check(needle in raw, "needle %r in token" % needle)
    raw = raw.replace(needle, repl, 1)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


try:
    # 1. libmacaroons mints; ours, pymacaroons and libmacaroons verify.
    lm = lm_mint(ID, FIVE)
    rc, out, err = ours(lm, "--op", "put", "--tenant", TENANT, "--size", "1000",
                        "--addr", "b3:ab" + "0" * 62)
    check(rc == 0 and out["ok"] and out["signature"] == "verified", "ours verifies libmacaroons' token: %s %s" % (out, err))
    check(out["id"] == ID and out["kid"] == "k1" and out["epoch"] == "3", "identifier parts: %s" % out)
    check(out["grant"]["ops"] == ["get", "put"] and out["grant"]["max_bytes"] == "1048576",
          "folded grant: %s" % out["grant"])
    check(py_verifies(lm) and lm_verifies(lm), "pymacaroons and libmacaroons verify it")
    pm = Macaroon(location="ron", identifier=ID, key=KEY)
    for c in FIVE:
        pm.add_first_party_caveat(c)
    check(pm.serialize() == lm, "pymacaroons mints the same bytes as libmacaroons")

    # 2. pymacaroons attenuates; ours verifies, and it only narrows.
    pa = py_attenuate(lm, "ops = get", "max-bytes = 10")
    rc, out, _ = ours(pa, "--op", "get", "--size", "10")
    check(rc == 0 and out["grant"]["ops"] == ["get"] and out["grant"]["max_bytes"] == "10",
          "ours verifies pymacaroons' attenuation: %s" % out)
    rc, out, _ = ours(pa, "--op", "put")
    check(rc == 1 and out["reason"] == "op", "attenuated token no longer allows put: %s" % out)
    rc, out, _ = ours(pa, "--op", "get", "--size", "11")
    check(rc == 1 and out["reason"] == "size", "nor 11 bytes: %s" % out)
    widen = py_attenuate(pa, "ops = get,put,admin", "max-bytes = 999999999")
    rc, out, _ = ours(widen, "--op", "put")
    check(rc == 1 and out["reason"] == "op", "a later, wider ops caveat does not widen: %s" % out)
    check(lm_verifies(pa), "libmacaroons verifies pymacaroons' attenuation")

    # 3. ours attenuates; pymacaroons and libmacaroons verify; same bytes as pymacaroons.
    p = ron("cap", "attenuate", lm, "ops = get", "name-prefix = blog.")
    check(p.returncode == 0, "ron cap attenuate: %s" % p.stderr)
    oa = p.stdout.strip()
    check(oa == py_attenuate(lm, "ops = get", "name-prefix = blog."),
          "ours and pymacaroons attenuate to the same bytes")
    check(py_verifies(oa) and lm_verifies(oa), "pymacaroons and libmacaroons verify our attenuation")
    p = ron("cap", "attenuate", "-", "rate = 5/s", stdin=oa + "\n")
    check(p.returncode == 0 and py_verifies(p.stdout.strip()), "TOKEN - reads stdin")
    rc, out, _ = ours(oa, "--op", "get", "--name", "blog.x")
    check(rc == 0, "name under the prefix allowed")
    rc, out, _ = ours(oa, "--op", "get", "--name", "news")
    check(rc == 1 and out["reason"] == "name", "name outside the prefix refused: %s" % out)

    # 4. Tampering fails in all three.
    cases = {
        "caveat byte": tamper(lm, b"max-bytes = 1048576", b"max-bytes = 9048576"),
        "identifier": tamper(lm, b"ron1:k1:3:", b"ron1:k1:4:"),
        "dropped caveat": tamper(lm, b"0017cid prefix = b3:ab\n", b""),
    }
    for what, bad in cases.items():
        rc, out, err = ours(bad)
        check(rc == 1 and out["reason"] == "signature", "%s: ours refuses (%s %s)" % (what, out, err))
        check(not py_verifies(bad) and not lm_verifies(bad), "%s: both libraries refuse" % what)
    other = "ff" * 32
    rc, out, _ = ours(lm, key=other)
    check(rc == 1 and out["signature"] == "bad", "wrong key: ours refuses")
    check(not py_verifies(lm, bytes.fromhex(other)) and not lm_verifies(lm, bytes.fromhex(other)),
          "wrong key: both libraries refuse")

    # 5. An unknown caveat key fails ours even with a good signature.
    unk = lm_mint(ID, ["ops = get", "color = red"])
    check(len(Macaroon.deserialize(unk).caveats) == 2, "pymacaroons reads it")
    rc, out, err = ours(unk)
    check(rc == 1 and out["reason"] == "caveat", "unknown key: ours refuses (%s %s)" % (out, err))
    p = ron("cap", "verify", unk)
    check(p.returncode == 1 and "caveat" in p.stderr, "without --key too: %r" % p.stderr)
    p = ron("cap", "attenuate", unk, "ops = get")
    check(p.returncode == 2, "ours will not extend it")
    p = ron("cap", "attenuate", lm, "colour = blue")
    check(p.returncode == 2 and "colour" in p.stderr, "bad caveat argument: exit 2")

    # 6. Expiry with 60 s of skew, offline without a key.
    exp = lm_mint(ID, ["expires = %d" % NOW])
    for now, want in ((NOW + 60, 0), (NOW + 61, 1)):
        p = ron("cap", "verify", exp, "--now", str(now))
        check(p.returncode == want, "expires at now+%d: exit %d (got %d %s)" %
              (now - NOW, want, p.returncode, p.stderr))
    p = ron("cap", "verify", exp, "--now", str(NOW))
    check("signature: unchecked" in p.stdout and "caveat:    expires = " in p.stdout,
          "text output lists caveats: %r" % p.stdout)

    # 7. Bad input and usage.
    check(ron("cap", "verify", "not-a-token!").returncode == 2, "garbage token: exit 2")
    check(ron("cap", "verify").returncode == 2, "no token: exit 2")
    check(ron("cap", "verify", lm, "--key", keyfile(KEY_HEX, 0o644)).returncode == 2,
          "key file open to others: exit 2")
    check(ron("cap", "verify", lm, "--op", "delete").returncode == 2, "unknown op: exit 2")
    check(ron("cap", "frobnicate").returncode == 2, "unknown subcommand: exit 2")
    check(ron("cap", "--help").returncode == 0, "help: exit 0")
    print("ok: libmacaroons, pymacaroons and ron-auth agree")
finally:
    shutil.rmtree(work, ignore_errors=True)
