#!/usr/bin/env python3
"""Generate the committed seed corpus of fuzz_oap_frame (tests/corpus/oap_frame/).

Frames are built straight from the layout of spec OAP1.md §1 with struct.pack
(not by our C encoder), and zstd payloads are hand-assembled frames (raw and
RLE blocks), so the corpus does not depend on any library. Every reject path
of the decoder has at least one seed. Run from anywhere; rewrites the folder.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "oap_frame")

REQ, RESP, EVENT, START, END, ACK_REQ, COMP, APP_E2E = 1, 2, 4, 8, 16, 32, 64, 128
MAX_FRAME = 1 << 20


def frame(flags=REQ, code=0, app=0, tenant=b"\0" * 16, cap=b"", corr=1, payload=b"",
          ver=1, length=None, cap_len=None):
    cl = len(cap) if cap_len is None else cap_len
    ln = 38 + len(cap) + len(payload) if length is None else length
    return struct.pack(">IHHHH16sHQ", ln, ver, flags, code, app, tenant, cl, corr) + cap + payload


def js(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def zstd_raw(data):
    """One zstd frame, single segment, one raw block (content size in 1 byte if < 256)."""
    assert len(data) < 256
    fhd = 0x20  # single segment, FCS 1 byte, no checksum
    bh = (len(data) << 3) | 0 << 1 | 1  # last block, raw
    return b"\x28\xb5\x2f\xfd" + bytes([fhd, len(data)]) + bh.to_bytes(3, "little") + data


def zstd_rle(total, window_log=17, byte=0):
    """A zstd frame of RLE blocks (128 KiB each) producing `total` bytes, size unknown."""
    out = b"\x28\xb5\x2f\xfd" + bytes([0x00, (window_log - 10) << 3])
    left = total
    while left > 0:
        n = min(left, 128 * 1024)
        left -= n
        bh = (n << 3) | 1 << 1 | (1 if left == 0 else 0)
        out += bh.to_bytes(3, "little") + bytes([byte])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.unlink(os.path.join(OUT, f))
    seeds = {}
    tenant = bytes(range(0x00, 0x100, 0x11))
    hello = frame(REQ | START | END, payload=js({"ua": "ron/0.1", "max_frame": 65536}))
    # --- valid frames ---
    seeds["hello_full"] = hello
    seeds["hello_bare_rust"] = frame(REQ, payload=b'{"ua":null}')
    seeds["hello_empty"] = frame(REQ | START | END)
    seeds["hello_reply"] = frame(RESP | END, code=200, payload=js(
        {"max_frame": MAX_FRAME, "max_inflight": 64, "flags_supported": 255,
         "versions": [1], "transports": ["tcp+tls"]}))
    seeds["start_cap_high_corr"] = frame(REQ | START, app=1, tenant=tenant, cap=b"cap",
                                         corr=0xFEDCBA9876543210,
                                         payload=js({"op": "get", "addr": "b3:00"}))
    seeds["resp_404_max_corr"] = frame(RESP | END, code=404, app=1, corr=2**64 - 1)
    seeds["all_known_flags"] = frame(0xFF & ~COMP, cap=b"x", payload=b"y")
    seeds["event_push"] = frame(RESP | EVENT, app=3, corr=9, payload=b"push")
    seeds["app_e2e_opaque"] = frame(REQ | APP_E2E, app=100, payload=bytes(range(256)))
    seeds["cap_exact_fit"] = frame(REQ | START, cap=b"\xff" * 64)
    seeds["credit_req"] = frame(EVENT | REQ, corr=5, payload=js({"op": "credit", "frames": 8}))
    seeds["credit_resp"] = frame(EVENT | RESP, corr=5, payload=js({"op": "credit", "frames": 1}))
    seeds["credit_malformed"] = frame(EVENT | REQ, corr=5, payload=b'{"op":"credit","frames":0}')
    seeds["data_64k"] = frame(RESP, app=1, corr=3, payload=bytes(i & 0xFF for i in range(65536)))
    seeds["max_frame_exact"] = frame(RESP, app=1, corr=3, payload=b"\x5a" * (MAX_FRAME - 38))
    seeds["comp_raw_ok"] = frame(RESP | COMP, app=1, payload=zstd_raw(b"hello, zstd"))
    seeds["comp_rle_ok"] = frame(RESP | COMP, app=1, payload=zstd_rle(300000, byte=0x41))
    seeds["comp_two_frames"] = frame(RESP | COMP, payload=zstd_raw(b"ab") + zstd_raw(b"cd"))
    seeds["comp_exact_bound"] = frame(RESP | COMP, payload=zstd_rle(8 * MAX_FRAME))
    # --- several frames in one stream ---
    seeds["stream_get"] = (hello + frame(REQ | START | END, app=1, corr=2,
                                         payload=js({"op": "get", "addr": "b3:ab"}))
                           + frame(RESP, code=200, app=1, corr=2,
                                   payload=js({"size": "5", "content_type": "text/plain"}))
                           + frame(RESP | END, app=1, corr=2, payload=b"hello"))
    seeds["stream_upload_credit"] = (hello + frame(REQ | START, app=1, corr=7)
                                     + b"".join(frame(REQ, app=1, corr=7, payload=b"d" * 100)
                                                for _ in range(6))
                                     + frame(EVENT | RESP, corr=7, payload=js({"op": "credit", "frames": 2}))
                                     + frame(REQ | END, app=1, corr=7))
    seeds["stream_data_before_start"] = hello + frame(REQ, app=1, corr=11, payload=b"x")
    seeds["stream_duplicate_start"] = hello + frame(REQ | START, app=1, corr=4) * 2
    seeds["stream_after_end"] = hello + frame(REQ | START | END, app=1, corr=4) + frame(REQ, app=1, corr=4)
    seeds["stream_inflight_flood"] = hello + b"".join(frame(REQ | START, app=1, corr=c) for c in range(12))
    seeds["not_hello_first"] = frame(REQ | START, app=1, corr=1, payload=js({"op": "get"}))
    seeds["hello_bad_json"] = frame(REQ | START | END, payload=b'{"max_frame":"x"}')
    seeds["hello_version_2"] = frame(REQ | START | END, payload=js({"versions": [2]}))
    seeds["many_small_frames"] = b"".join(frame(RESP, app=1, corr=1, payload=bytes([i])) for i in range(200))
    # --- reject paths (spec §5 rule 2) ---
    seeds["rej_version_0"] = frame(ver=0)
    seeds["rej_version_2"] = frame(ver=2)
    seeds["rej_version_0x0101"] = frame(ver=0x0101)
    seeds["rej_len_zero"] = frame(length=0)
    seeds["rej_len_37"] = frame(length=37)
    seeds["rej_len_below_cap"] = frame(REQ | START, cap=b"abc", length=40)
    seeds["rej_cap_len_ffff"] = frame(REQ | START, cap_len=0xFFFF, length=100) + b"\0" * 62
    seeds["rej_len_over_max"] = frame(length=MAX_FRAME + 1)
    seeds["rej_len_ffffffff"] = frame(length=0xFFFFFFFF)
    for bit in range(8, 16):
        seeds["rej_reserved_bit%d" % bit] = frame(REQ | (1 << bit))
    seeds["rej_cap_without_start"] = frame(REQ | END, cap=b"c")
    seeds["rej_after_good_frame"] = hello + frame(ver=3)
    seeds["rej_header_before_body"] = frame(length=MAX_FRAME + 1)[:38] + b"\0" * 1000
    # --- incomplete input ---
    seeds["inc_empty"] = b""
    seeds["inc_header_1"] = hello[:1]
    seeds["inc_header_37"] = hello[:37]
    seeds["inc_body"] = hello[:-1]
    seeds["inc_after_frame"] = hello + hello[:20]
    seeds["inc_big_body"] = frame(RESP, payload=b"z" * 5000)[:3000]
    # --- COMP failures (spec §5 rule 4) ---
    seeds["comp_empty"] = frame(RESP | COMP)
    seeds["comp_garbage"] = frame(RESP | COMP, payload=b"definitely not zstd")
    seeds["comp_truncated"] = frame(RESP | COMP, payload=zstd_raw(b"hello, zstd")[:-3])
    seeds["comp_bad_magic"] = frame(RESP | COMP, payload=b"\x00" + zstd_raw(b"hi")[1:])
    seeds["comp_bomb_100mib"] = frame(RESP | COMP, payload=zstd_rle(100 << 20))
    seeds["comp_bound_plus_one"] = frame(RESP | COMP, payload=zstd_rle(8 * MAX_FRAME + 1))
    seeds["comp_window_too_large"] = frame(RESP | COMP, payload=zstd_rle(1000, window_log=27))
    seeds["comp_declared_size_bomb"] = frame(RESP | COMP, payload=b"\x28\xb5\x2f\xfd"
                                             + bytes([0xE0]) + struct.pack("<Q", 100 << 20)
                                             + ((1 << 3) | 1 << 1 | 1).to_bytes(3, "little") + b"\0")
    for name, data in sorted(seeds.items()):
        with open(os.path.join(OUT, name), "wb") as fh:
            fh.write(data)
    print("wrote %d seeds to %s" % (len(seeds), OUT))


if __name__ == "__main__":
    main()
