#!/usr/bin/env python3
"""Generate the seed corpora of fuzz_cap_token (tests/corpus/cap_token/) and
fuzz_cap_packets (tests/corpus/cap_packets/, the same seeds decoded).

Each seed is a capability token as it arrives from outside: v1 macaroons
made with pymacaroons (the same bytes libmacaroons writes) under fixed
identifiers, so the corpus is reproducible: valid tokens with every caveat
key, the 32-caveat limit and one past it, padding and the standard base64
alphabet, and one seed per refusal (unknown caveat key, third-party caveat,
foreign identifier, truncated, trailing bytes, bad length field, signature
of the wrong size, non-canonical base64). Rewrites these named seeds; the
seeds named by their SHA-1 were kept by `fuzz_cap_token -merge=1` (and
`fuzz_cap_packets -merge=1`) from libFuzzer runs (they add coverage) and are
left alone.
"""
import base64
import os

from pymacaroons import Macaroon

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "cap_token")
OUT_RAW = os.path.join(HERE, "cap_packets")
KEY = "corpus root key, 32 bytes long!!"
ID = "ron1:k1:0:00112233445566778899aabbccddeeff"
TENANT = "tenant = 00112233445566778899aabbccddeeff"


def mac(caveats, ident=ID, location="ron"):
    m = Macaroon(location=location, identifier=ident, key=KEY)
    for c in caveats:
        m.add_first_party_caveat(c)
    return m


def raw_of(tok):
    return base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))


def enc(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def packet(key, value):
    body = key.encode() + b" " + value + b"\n"
    return b"%04x" % (len(body) + 4) + body


ALL = ["ops = get,put", TENANT, "expires = 1900000000", "not-before = 1700000000",
       "max-bytes = 1048576", "prefix = b3:ab", "name-prefix = blog.", "rate = 20/s"]
SIG = bytes(range(32))

SEEDS = {
    "bare": mac([]).serialize(),
    "all_keys": mac(ALL).serialize(),
    "five": mac(ALL[:5]).serialize(),
    "no_location": enc(packet("identifier", ID.encode()) + packet("signature", SIG)),
    "max_caveats": mac(["ops = get"] * 32).serialize(),
    "over_max_caveats": mac(["ops = get"] * 33).serialize(),
    "padded": base64.urlsafe_b64encode(raw_of(mac(ALL[:2]).serialize())).decode(),
    "std_alphabet": base64.b64encode(raw_of(mac(ALL).serialize())).decode(),
    "unknown_key": mac(["color = red"]).serialize(),
    "bad_value": mac(["ops = get,delete"]).serialize(),
    "two_tenants": mac([TENANT, "tenant = ffffffffffffffffffffffffffffffff"]).serialize(),
    "foreign_id": mac(["ops = get"], ident="user-42").serialize(),
    "epoch_kid": mac(["ops = get"], ident="ron1:k2x:18446744073709551615:" + "f" * 32).serialize(),
    "truncated": mac(ALL).serialize()[:-7],
    "trailing": enc(raw_of(mac([]).serialize()) + b"0005x"),
    "bad_len": enc(b"ffff" + raw_of(mac([]).serialize())[4:]),
    "short_sig": enc(packet("identifier", ID.encode()) + packet("signature", SIG[:31])),
    "noncanonical": mac([]).serialize()[:-1] + "B",
    "empty": "",
    "garbage": "not a token at all!",
}
third = mac(["ops = get"])
third.add_third_party_caveat("https://auth.example", "third party secret key 32 bytes", "tp-id")
SEEDS["third_party"] = third.serialize()


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, tok in SEEDS.items():
        with open(os.path.join(OUT, name), "w") as f:
            f.write(tok)
    # fuzz_cap_packets reads the decoded bytes: the same seeds, decoded where they decode.
    os.makedirs(OUT_RAW, exist_ok=True)
    for name, tok in SEEDS.items():
        try:
            raw = base64.b64decode(tok + "=" * (-len(tok) % 4), altchars=b"-_", validate=False)
        except ValueError:
            continue
        if raw:
            with open(os.path.join(OUT_RAW, name), "wb") as f:
                f.write(raw)


if __name__ == "__main__":
    main()
