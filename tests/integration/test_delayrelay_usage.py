#!/usr/bin/env python3
"""ron-delayrelay (the packet-delay relay of `make netns-test`) on its command
line, without root or a TUN device: --help lists every option and exits 0;
a bad value names its option on one line and exits 2 (bad CIDR, prefix too
long, delay not a number or beyond 10 min, zero queue or throttle rate, too
many --route); unknown options, stray arguments and a missing --dev exit 2.
The relay itself is exercised in tests/netns/test_netns_bed.py."""
import os
import subprocess

from ronnode import RON, check

RELAY = os.path.join(os.path.dirname(RON), "ron-delayrelay")


def run(*args):
    return subprocess.run([RELAY] + list(args), capture_output=True, text=True, timeout=10)


r = run("--help")
check(r.returncode == 0, "--help exits 0: %d" % r.returncode)
for opt in ("--dev", "--delay", "--jitter", "--route", "--throttle", "--queue", "--stats",
            "--seed", "--help"):
    check(opt in r.stdout, "--help lists %s" % opt)

bad = [
    (["--dev", "t", "--route", "10.0.0.0/33=5"], "--route"),
    (["--dev", "t", "--route", "10.0.0.300/32=5"], "--route"),
    (["--dev", "t", "--route", "10.0.0.0/24"], "--route"),
    (["--dev", "t", "--route", "fd00::/129=5"], "--route"),
    (["--dev", "t", "--route", "10.0.0.0/24=5+x"], "--route"),
    (["--dev", "t", "--delay", "5ms"], "--delay"),
    (["--dev", "t", "--delay", "-1"], "--delay"),
    (["--dev", "t", "--delay", "600001"], "--delay"),
    (["--dev", "t", "--jitter", ""], "--jitter"),
    (["--dev", "t", "--queue", "0"], "--queue"),
    (["--dev", "t", "--queue", "1000001"], "--queue"),
    (["--dev", "t", "--throttle", "10.0.0.1/32=0"], "--throttle"),
    (["--dev", "t", "--throttle", "10.0.0.1/32"], "--throttle"),
    (["--dev", "t", "--seed", "4294967296"], "--seed"),
]
for args, opt in bad:
    r = run(*args)
    check(r.returncode == 2, "%r exits 2: %d %r" % (args, r.returncode, r.stderr))
    lines = r.stderr.strip().splitlines()
    check(len(lines) == 1 and ("bad value for " + opt) in lines[0],
          "%r: one line naming %s: %r" % (args, opt, r.stderr))

many = []
for i in range(65):
    many += ["--route", "10.0.%d.0/24=1" % i]
r = run("--dev", "t", *many)
check(r.returncode == 2 and "at most 64 --route" in r.stderr, "65 routes refused: %r" % r.stderr)
for args, text in ((["--bogus"], "unknown option"), (["--dev"], "missing value"),
                   (["--dev", "t", "extra"], "unexpected argument"),
                   ([], "--dev NAME is required")):
    r = run(*args)
    check(r.returncode == 2 and text in r.stderr, "%r exits 2 with %r: %d %r"
          % (args, text, r.returncode, r.stderr))
print("PASS")
