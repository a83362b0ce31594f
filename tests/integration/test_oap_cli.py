#!/usr/bin/env python3
"""`ron oap decode` / `ron oap encode` (DESIGN.md §11): byte vectors written
from the spec's layout, decode/encode round trips, every error case and the
exit codes. Needs RON_BIN (set by CTest)."""
import json
import os
import struct
import subprocess
import sys

RON = os.environ.get("RON_BIN", "ron")
FAILS = []


def run(args, data):
    p = subprocess.run([RON, "oap"] + args, input=data, capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def frame(flags=1, code=0, app=0, tenant=b"\0" * 16, cap=b"", corr=1, payload=b"", ver=1,
          length=None):
    ln = 38 + len(cap) + len(payload) if length is None else length
    return struct.pack(">IHHHH16sHQ", ln, ver, flags, code, app, tenant, len(cap), corr) + cap + payload


# HELLO, REQ|START|END, corr_id 1, payload {"ua":"x"}: written out by hand.
HELLO = bytes.fromhex("00000030" "0001" "0019" "0000" "0000" + "00" * 16 + "0000"
                      "0000000000000001") + b'{"ua":"x"}'


def lines(out):
    return [json.loads(l) for l in out.decode().splitlines()]


def test_decode_prints_every_field():
    tenant = bytes(range(0, 0x100, 0x11))
    data = HELLO + frame(flags=9, app=1, tenant=tenant, cap=b"cap", corr=0xFEDCBA9876543210,
                         payload=b"hi")
    rc, out, err = run(["decode"], data)
    check(rc == 0, "decode exit 0 (%d, %r)" % (rc, err))
    objs = lines(out)
    check(len(objs) == 2, "two frames decoded")
    check(objs[0] == {"len": 48, "ver": 1, "flags": 25, "flag_names": "REQ|START|END", "code": 0,
                      "app_proto_id": 0, "tenant_id": "0" * 32, "cap_len": 0, "corr_id": "1",
                      "cap_hex": "", "payload_hex": b'{"ua":"x"}'.hex()}, "hello decoded: %r" % objs[0])
    o = objs[1]
    check(o["corr_id"] == "18364758544493064720", "corr_id above 2^63 as decimal string")
    check(o["tenant_id"] == "00112233445566778899aabbccddeeff", "tenant lowercase hex")
    check(o["cap_hex"] == "636170" and o["cap_len"] == 3, "cap")
    check(o["flag_names"] == "REQ|START", "flag names")
    check(list(objs[0].keys()) == ["len", "ver", "flags", "flag_names", "code", "app_proto_id",
                                   "tenant_id", "cap_len", "corr_id", "cap_hex", "payload_hex"],
          "key order of DESIGN.md §11")


def test_encode_writes_hand_written_bytes_and_round_trips():
    obj = {"ver": 1, "flags": 25, "code": 0, "app_proto_id": 0, "tenant_id": "0" * 32,
           "corr_id": "1", "cap_hex": "", "payload_hex": b'{"ua":"x"}'.hex()}
    rc, out, err = run(["encode"], (json.dumps(obj) + "\n").encode())
    check(rc == 0 and out == HELLO, "encode without optional fields gives the vector (%r)" % err)
    data = HELLO + frame(flags=2 | 16, code=404, app=1, corr=2**64 - 1) + \
        frame(flags=2, app=1, corr=3, payload=bytes(range(256)) * 300)
    rc, out, _ = run(["decode"], data)
    check(rc == 0, "decode ok")
    rc, back, err = run(["encode"], out)
    check(rc == 0 and back == data, "decode | encode is the identity (%r)" % err)
    # blank lines are skipped
    rc, back, _ = run(["encode"], b"\n" + out + b"\n\n")
    check(rc == 0 and back == data, "blank lines skipped")


def test_decode_errors_print_slug_and_exit_2():
    cases = [
        (frame(ver=2), "proto_mismatch"),
        (frame(flags=1 | 0x100), "bad_request"),
        (frame(length=37), "bad_request"),
        (frame(flags=1, cap=b"c"), "bad_request"),
        (frame(length=(1 << 20) + 1), "payload_too_large"),
        (HELLO[:37], "incomplete"),
        (HELLO[:-1], "incomplete"),
    ]
    for data, slug in cases:
        rc, out, err = run(["decode"], HELLO + data)
        objs = lines(out)
        check(rc == 2, "exit 2 for %s (got %d)" % (slug, rc))
        check(len(objs) == 2 and objs[0]["len"] == 48, "frames before the error printed (%s)" % slug)
        check(objs[-1] == {"error": slug}, "error %s (got %r)" % (slug, objs[-1]))
        check(err.startswith(b"ron: "), "one-line reason on stderr")
    # --max-frame lowers the limit
    big = frame(flags=2, payload=b"x" * 5000)
    rc, out, _ = run(["decode", "--max-frame", "4096"], big)
    check(rc == 2 and lines(out) == [{"error": "payload_too_large"}], "--max-frame 4096")
    rc, out, _ = run(["decode"], b"")
    check(rc == 0 and out == b"", "empty input: nothing, exit 0")


def test_encode_rejects_bad_objects():
    base = {"ver": 1, "flags": 1, "code": 0, "app_proto_id": 0, "tenant_id": "0" * 32,
            "corr_id": "1", "cap_hex": "", "payload_hex": ""}
    bad = [
        dict(base, extra=1),
        dict(base, ver=2),
        dict(base, flags=0x101),
        dict(base, cap_hex="00"),                 # cap without START
        dict(base, corr_id=1),                    # must be a string
        dict(base, corr_id="18446744073709551616"),
        dict(base, tenant_id="00"),
        dict(base, payload_hex="abc"),
        dict(base, len=39),
        dict(base, cap_len=1),
        dict(base, flag_names="RESP"),
    ]
    for obj in bad:
        rc, out, err = run(["encode"], (json.dumps(obj) + "\n").encode())
        check(rc == 2 and out == b"", "encode refuses %r (rc %d)" % (obj, rc))
        check(b"line 1" in err, "error names the line")
    rc, _, _ = run(["encode"], b"{not json}\n")
    check(rc == 2, "encode refuses malformed JSON")
    ok = dict(base, len=38, cap_len=0, flag_names="REQ", corr_id="18446744073709551615")
    rc, out, _ = run(["encode"], (json.dumps(ok) + "\n").encode())
    check(rc == 0 and out == frame(corr=2**64 - 1), "optional fields accepted when they agree")


def test_usage():
    rc, out, _ = run(["--help"], b"")
    check(rc == 0 and b"ron oap decode" in out, "--help exit 0")
    rc, out, _ = run(["decode", "--help"], b"")
    check(rc == 0 and b"encode" in out, "decode --help exit 0")
    rc, _, _ = run([], b"")
    check(rc == 2, "no subcommand: exit 2")
    rc, _, _ = run(["frobnicate"], b"")
    check(rc == 2, "unknown subcommand: exit 2")
    rc, _, _ = run(["decode", "--bogus"], b"")
    check(rc == 2, "unknown option: exit 2")
    rc, _, _ = run(["decode", "--max-frame", "10"], b"")
    check(rc == 2, "--max-frame below the floor: exit 2")


if __name__ == "__main__":
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print("ok" if not FAILS else "..", name)
    if FAILS:
        print("%d failure(s)" % len(FAILS), file=sys.stderr)
        sys.exit(1)
