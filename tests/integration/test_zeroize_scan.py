#!/usr/bin/env python3
"""Zeroization proven (issue 5): no copy of a destroyed key is left anywhere
in a process's memory.

The test holds every key only masked (key XOR a random mask of the same
length); a key is unmasked into a bytearray inside `Secret.found_in` for the
comparison and wiped right after. The scanner reads every mapping listed in
/proc/PID/maps through /proc/PID/mem (root in CI; as the parent of the
process under Yama ptrace_scope 1 otherwise), including PROT_NONE ones such
as libsodium's guarded key pages (the kernel reads them for a ptracer), and
looks for each key whole and for each of its 16-byte halves (a half is still
a leak, and ASan writes allocator metadata over the first bytes of a freed
chunk). The only mappings left out, each with its reason, are in SKIP_WHY.

Part 1 runs tests/tools/ron-zeroize-target, which drives the real key code
(ron-kms unsealing with RON_ROOT_SECRET_FILE, the HTTPS SSL_CTX factory
loading a P-256 key from PEM and serving TLS 1.3 and 1.2 handshakes, a peer
TLS 1.3 session on the identity key, Ed25519 signatures with the identity
and name keys):
  - while alive, the scan finds the identity seed, the name seed and the
    HTTPS private scalar (positive controls: the scanner sees sodium_malloc
    pages and OpenSSL's secure heap);
  - the root secret and the sealing key derived from it are gone already
    (ron-kms drops them once the files are open);
  - after the destroy step nothing of any of them is left;
  - the same run with --leak-control, which frees a stdio copy of the root
    secret unwiped, is caught (the test can fail).
Part 2 scans a real persistent micronode started with RON_ROOT_SECRET_FILE:
its identity seed is found (alive), the root secret and sealing key are not.
"""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ronnode import RON, Node, check, fail, free_port

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - python3-cryptography is installed on the builders
    ec = None

BIN_DIR = os.environ.get("RON_BINARY_DIR") or os.path.dirname(RON)
TARGET = os.path.join(BIN_DIR, "ron-zeroize-target")
SEAL_CONTEXT = "RustyOnions-C 2026-11 ron-kms key file sealing key v1"  # kms_internal.h
CHUNK = 64 << 20

# Mappings not read, each with its reason. Everything else in /proc/PID/maps is read.
SKIP_WHY = {
    "[vvar]": "the kernel's vDSO data page (clock data); reads fail with EIO",
    "[vsyscall]": "the legacy fixed vsyscall page (kernel code, same in every process)",
    "asan-shadow": "AddressSanitizer's shadow (x86_64: 0x7fff8000..0x10007fff8000) holds one "
                   "addressability byte per 8 bytes of memory, never memory contents; it "
                   "spans terabytes",
    "no-rss": "mappings with nothing resident or swapped (smaps Rss 0, Swap 0) read as zeros",
}
ASAN_SHADOW = (0x00007fff8000, 0x10007fff8000)


class Secret:
    """A key held only masked; unmasked transiently for a comparison."""

    def __init__(self, label, raw):
        self.label = label
        self.mask = os.urandom(len(raw))
        self.masked = bytes(a ^ b for a, b in zip(raw, self.mask))

    @classmethod
    def from_masked(cls, label, masked, mask):
        s = cls.__new__(cls)
        s.label, s.masked, s.mask = label, masked, mask
        return s

    def _patterns(self):
        k = bytearray(a ^ b for a, b in zip(self.masked, self.mask))
        pats = [k]
        if len(k) >= 32:
            pats += [k[:16], k[len(k) - 16:]]
        return pats

    def found_in(self, buf):
        """Offset of the key (or a 16-byte half of it) in buf, else -1."""
        pats = self._patterns()
        try:
            for p in pats:
                at = buf.find(p)
                if at >= 0:
                    return at
            return -1
        finally:
            for p in pats:
                p[:] = bytes(len(p))


def mappings(pid):
    """(start, end, perms, name, resident) of every mapping, from smaps."""
    out = []
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).strip(), 0]
                out.append(cur)
            elif cur is not None and (line.startswith("Rss:") or line.startswith("Swap:")):
                cur[4] += int(line.split()[1])
    return out


def scan(pid, secrets):
    """{label: [(addr, mapping)]} of every secret found in pid's memory, and stats."""
    hits = {s.label: [] for s in secrets}
    stats = {"read": 0, "mappings": 0, "skipped": {}}
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for start, end, perms, name, resident in mappings(pid):
            why = None
            if name in ("[vvar]", "[vsyscall]"):
                why = name
            elif start >= ASAN_SHADOW[0] and end <= ASAN_SHADOW[1] and name == "":
                why = "asan-shadow"
            elif resident == 0:
                why = "no-rss"
            if why:
                stats["skipped"][why] = stats["skipped"].get(why, 0) + 1
                continue
            stats["mappings"] += 1
            addr = start
            while addr < end:
                n = min(CHUNK, end - addr)
                try:
                    mem.seek(addr)
                    buf = mem.read(n)
                except OSError:
                    buf = b""
                if not buf:  # an unreadable page: step over it, read the rest
                    addr = (addr // 4096 + 1) * 4096
                    continue
                stats["read"] += len(buf)
                for s in secrets:
                    at = s.found_in(buf)
                    if at >= 0:
                        hits[s.label].append((addr + at, "%x-%x %s %s" % (start, end, perms, name)))
                # overlap by 63 bytes so a key across two chunks is seen
                addr += len(buf) if len(buf) < 64 else len(buf) - 63
                if addr + 63 >= end and len(buf) < n:
                    break
    return hits, stats


def sealing_key(secret, salt):
    """BLAKE3 derive_key(SEAL_CONTEXT, secret || salt) via b3sum (docs/protocol/keystore.md)."""
    r = subprocess.run(["b3sum", "--no-names", "--raw", "--derive-key", SEAL_CONTEXT],
                       input=bytes(secret) + salt, capture_output=True, timeout=30)
    check(r.returncode == 0 and len(r.stdout) == 32, "b3sum --derive-key: %r" % r.stderr)
    return r.stdout


def make_root_secret(work):
    """A root secret file of 64 random bytes (0600), and its Secret."""
    raw = bytearray(os.urandom(64))
    path = os.path.join(work, "root.secret")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, raw)
    os.close(fd)
    sec = Secret("root secret", raw)
    raw[:] = bytes(len(raw))
    return path, sec


def seal_secret(root, data_dir):
    """The sealing key of the identity key file, derived from the root secret and its salt."""
    with open(os.path.join(data_dir, "keys", "identity.key"), "rb") as f:
        head = f.read(96)
    check(head[:8] == b"RONKEY1\n" and head[13] == 2, "identity.key sealed with the secret file")
    k = bytearray(a ^ b for a, b in zip(root.masked, root.mask))
    try:
        derived = bytearray(sealing_key(k, head[56:72]))
    finally:
        k[:] = bytes(len(k))
    s = Secret("sealing key", derived)
    derived[:] = bytes(len(derived))
    return s


def expanded_secret(seed_secret, label):
    """Ed25519's expanded scalar: the first half of SHA-512(seed), unclamped and clamped."""
    k = bytearray(a ^ b for a, b in zip(seed_secret.masked, seed_secret.mask))
    h = bytearray(hashlib.sha512(bytes(k)).digest()[:32])
    k[:] = bytes(len(k))
    raw = Secret(label + " (SHA-512 half)", h)
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    clamped = Secret(label + " (clamped scalar)", h)
    h[:] = bytes(len(h))
    return [raw, clamped]


def https_pair(work):
    """A P-256 key and self-signed certificate in PEM files; Secrets of the scalar."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = int(time.time())
    import datetime
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.utcfromtimestamp(now - 60))
            .not_valid_after(datetime.datetime.utcfromtimestamp(now + 86400))
            .sign(key, hashes.SHA256()))
    kpath, cpath = os.path.join(work, "https.key"), os.path.join(work, "https.crt")
    with open(cpath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(kpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.close(fd)
    d = bytearray(key.private_numbers().private_value.to_bytes(32, "big"))
    # OpenSSL's BIGNUM keeps the scalar as little-endian 64-bit words: reversed bytes on x86_64
    secs = [Secret("HTTPS scalar (big-endian)", d), Secret("HTTPS scalar (BIGNUM words)", d[::-1])]
    d[:] = bytes(len(d))
    del key
    return cpath, kpath, secs


def describe(hits):
    return "; ".join("%s at %s" % (k, ", ".join("0x%x in %s" % h for h in v[:3]))
                     for k, v in hits.items() if v)


class Target:
    """ron-zeroize-target run ..., stepped through its stops."""

    def __init__(self, env, data_dir, cert, key, leak=False):
        argv = [TARGET, "run", data_dir, cert, key] + (["--leak-control"] if leak else [])
        e = dict(env)
        e["ASAN_OPTIONS"] = e.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=e, start_new_session=True)

    def expect(self, word):
        line = self._readline(60)
        if not line.startswith(word):
            self.kill()
            fail("ron-zeroize-target: expected %r, got %r; stderr:\n%s" %
                 (word, line, self.p.stderr.read().decode(errors="replace")))
        return line

    def _readline(self, timeout):
        import select
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        return self.p.stdout.readline().decode() if r else ""

    def say(self, word):
        self.p.stdin.write((word + "\n").encode())
        self.p.stdin.flush()

    def finish(self):
        self.say("exit")
        self.p.stdin.close()
        rc = self.p.wait(timeout=30)
        check(rc == 0, "ron-zeroize-target exit 0 (%r): %s" %
              (rc, self.p.stderr.read().decode(errors="replace")))

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=10)


def check_scanner(work):
    """The scanner finds a masked key in a plain process's heap, and not a fresh one."""
    live = Secret("control", os.urandom(32))
    other = Secret("absent", os.urandom(32))
    k = bytearray(a ^ b for a, b in zip(live.masked, live.mask))
    code = ("import sys,time;k=bytes.fromhex(sys.stdin.readline().strip());"
            "print('ok',flush=True);time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    try:
        p.stdin.write(k.hex().encode() + b"\n")
        p.stdin.flush()
        k[:] = bytes(len(k))
        check(p.stdout.readline().strip() == b"ok", "control process up")
        hits, _ = scan(p.pid, [live, other])
        check(hits["control"] and not hits["absent"], "scanner self-check: %r" % hits)
    finally:
        p.kill()
        p.wait(timeout=10)


def part_target(work, env, root, seal):
    data_dir = os.path.join(work, "zt")
    os.mkdir(data_dir, 0o700)
    mask = os.urandom(32)
    r = subprocess.run([TARGET, "init", data_dir, mask.hex()], capture_output=True, text=True,
                       env=dict(env, ASAN_OPTIONS=env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"),
                       timeout=60)
    check(r.returncode == 0, "ron-zeroize-target init: %s" % r.stderr)
    seeds = dict(line.split() for line in r.stdout.split("\n") if line)
    ident = Secret.from_masked("identity seed", bytes.fromhex(seeds["identity"]), mask)
    name = Secret.from_masked("name seed", bytes.fromhex(seeds["name"]), mask)
    sealk = seal(data_dir)
    cert, key, https = https_pair(work)
    alive = [ident, name] + https
    gone = [root, sealk]
    extra = expanded_secret(ident, "identity") + expanded_secret(name, "name")

    t = Target(env, data_dir, cert, key)
    try:
        pid = int(t.expect("live").split()[1])
        hits, stats = scan(pid, alive + gone + extra)
        for s in (ident, name):
            check(hits[s.label], "positive control: the live %s is found (%d MiB read)" %
                  (s.label, stats["read"] >> 20))
        # OpenSSL holds the live scalar as a BIGNUM (in its secure heap): one form suffices
        check(any(hits[s.label] for s in https),
              "positive control: the live HTTPS scalar is found: %r" % describe(hits))
        check(in_secure_heap(hits, https),
              "the HTTPS scalar lives only in OpenSSL's secure heap: " + describe(hits))
        check(any(in_secure_heap({ident.label: [h]}, [ident]) for h in hits[ident.label]),
              "the peer TLS key (identity seed) is in OpenSSL's secure heap: " + describe(hits))
        bad = stray(hits, alive)
        check(not bad, "live keys outside sodium_malloc pages and the secure heap: %r" % bad)
        check(not any(hits[s.label] for s in gone + extra),
              "no copy of the root secret, sealing key or expanded scalars while alive: " +
              describe(hits))
        t.say("destroy")
        t.expect("destroyed")
        hits, stats = scan(pid, alive + gone + extra)
        check(not any(hits.values()), "keys left after destroy: " + describe(hits))
        print("ok: target pid %d: %d mappings, %d MiB read, skipped %r; nothing left" %
              (pid, stats["mappings"], stats["read"] >> 20, stats["skipped"]))
        t.finish()
    finally:
        t.kill()

    # The control: a copy freed unwiped is found, so this scan can fail.
    t = Target(env, data_dir, cert, key, leak=True)
    try:
        t.expect("live")
        t.say("destroy")
        t.expect("destroyed")
        hits, _ = scan(t.p.pid, [root])
        check(hits[root.label], "negative control: the leaked root secret copy is found")
        t.finish()
    finally:
        t.kill()


def part_node(work, env, root, seal):
    """A persistent micronode serving HTTPS with a configured key: its identity seed and HTTPS
    scalar are found (alive), the root secret and the sealing key are not (dropped once the
    key files are open)."""
    data_dir = os.path.join(work, "node")
    os.mkdir(data_dir, 0o700)
    mask = os.urandom(32)
    r = subprocess.run([TARGET, "init", data_dir, mask.hex()], capture_output=True, text=True,
                       env=dict(env, ASAN_OPTIONS=env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"),
                       timeout=60)
    check(r.returncode == 0, "ron-zeroize-target init: %s" % r.stderr)
    seeds = dict(line.split() for line in r.stdout.split("\n") if line)
    ident = Secret.from_masked("identity seed", bytes.fromhex(seeds["identity"]), mask)
    sealk = seal(data_dir)
    ndir = os.path.join(work, "node-https")
    os.mkdir(ndir)
    cert, key, https = https_pair(ndir)
    n = Node(["--profile", "micro", "--set", "amnesia=false", "--data-dir", data_dir,
              "--https", "127.0.0.1:%d" % free_port(), "--set", "https_cert=" + cert,
              "--set", "https_key=" + key], env=env, services="gateway,storage").wait_up()
    try:
        pid = n.proc.pid
        hits, stats = scan(pid, [ident, root, sealk] + https)
        check(hits[ident.label], "positive control: the node's live identity seed is found")
        check(any(hits[s.label] for s in https),
              "positive control: the node's live HTTPS scalar is found: " + describe(hits))
        check(in_secure_heap(hits, https), "the node's HTTPS scalar lives only in OpenSSL's "
              "secure heap: " + describe(hits))
        bad = stray(hits, [ident] + https)
        check(not bad, "live keys outside sodium_malloc pages and the secure heap: %r" % bad)
        check(not hits[root.label] and not hits[sealk.label],
              "node holds the unsealing secrets: " + describe(hits))
        print("ok: micronode pid %d: %d MiB read, identity and HTTPS keys alive, "
              "no root secret, no sealing key" % (pid, stats["read"] >> 20))
    finally:
        n.kill()


def stray(hits, secrets):
    """Hits of these live secrets outside their two homes: libsodium's guarded pages (PROT_NONE
    between uses, ---p) and OpenSSL's secure heap (the 256 KiB mapping)."""
    out = []
    for s in secrets:
        for h in hits[s.label]:
            if h[1].split()[1] != "---p" and not in_secure_heap({s.label: [h]}, [s]):
                out.append("%s at 0x%x in %s" % (s.label, h[0], h[1]))
    return out


def in_secure_heap(hits, secrets):
    """Every hit of these secrets is in a TX_TLS_SECURE_HEAP-sized (256 KiB) anonymous mapping."""
    spots = [h for s in secrets for h in hits[s.label]]
    def size(h):
        lo, hi = h[1].split()[0].split("-")
        return int(hi, 16) - int(lo, 16)
    return spots and all(size(h) == 256 << 10 for h in spots)


def main():
    check(ec is not None, "python3-cryptography is installed")
    check(os.path.exists(TARGET), "%s is built" % TARGET)
    check(shutil.which("b3sum") is not None, "b3sum is installed")
    work = tempfile.mkdtemp(prefix="ron-zscan-")
    try:
        try:
            check_scanner(work)
        except PermissionError as e:  # pragma: no cover - CI runs as root
            print("SKIP: another process's /proc/PID/mem cannot be read here (%s): no ptrace "
                  "access (run as root, or with kernel.yama.ptrace_scope <= 1)" % e)
            return
        root_path, root = make_root_secret(work)
        env = dict(os.environ)
        env.pop("RON_PASSPHRASE", None)
        env["RON_ROOT_SECRET_FILE"] = root_path

        def seal(d):
            return seal_secret(root, d)
        part_target(work, env, root, seal)
        part_node(work, env, root, seal)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
