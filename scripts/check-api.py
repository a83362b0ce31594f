#!/usr/bin/env python3
"""Public API snapshot (DESIGN.md §12, "stable public API"): the function
prototypes and PREFIX_ macros each component's public header declares are
compared with api/<component>.txt. A change to a public header must update its
snapshot in the same commit, on purpose: `scripts/check-api.py --update`.
Usage: check-api.py [--update] [BUILD_DIR]"""
import glob
import os
import re
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = [a for a in sys.argv[1:] if a != "--update"]
update = "--update" in sys.argv
build = args[0] if args else os.path.join(root, "build", "asan")
incs = [f"-I{d}" for d in sorted(glob.glob(os.path.join(root, "src", "*"))) if os.path.isdir(d)]
incs.append(f"-I{os.path.join(build, 'generated')}")
incs += glob.glob("/usr/share/cargo/registry/blake3-*/c") and \
    [f"-I{sorted(glob.glob('/usr/share/cargo/registry/blake3-*/c'))[-1]}"]
pc = subprocess.run(["pkg-config", "--cflags", "libuv", "jansson", "libzstd", "openssl",
                     "libsodium"], capture_output=True, text=True).stdout.split()


def snapshot(header):
    with tempfile.TemporaryDirectory() as tmp:
        aux = os.path.join(tmp, "aux.txt")
        src = os.path.join(tmp, "h.c")
        open(src, "w").write(f'#include "{header}"\n')
        cmd = ["gcc", "-std=gnu11", "-D_GNU_SOURCE", "-fsyntax-only", f"-aux-info={aux}"] + incs + pc + [src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"api: {header} does not compile on its own:\n{r.stderr}")
        protos = []
        for line in open(aux):
            m = re.match(r"/\* (.*?):\d+:\w+ \*/ (.*)", line)
            if m and os.path.realpath(m.group(1)) == os.path.realpath(header):
                protos.append(re.sub(r"\s+", " ", m.group(2)).strip())
        r = subprocess.run(["gcc", "-E", "-dM", "-D_GNU_SOURCE"] + incs + pc + [src],
                           capture_output=True, text=True)
        own = set(re.findall(r"^\s*#\s*define\s+(\w+)", open(header).read(), re.M))
        macros = sorted(n for n in (l.split()[1].split("(")[0] for l in r.stdout.splitlines())
                        if n in own and not n.endswith("_H"))
    return ["# functions"] + sorted(set(protos)) + ["# macros"] + macros


# Components whose main header is not named after their folder.
HEADER_NAMES = {"ron-app-sdk": "libron.h"}


def public_headers(comp_dir):
    """(snapshot name, header) of every public header: the component's main
    header (api/<comp>.txt) and any other header not named *_internal.h
    (api/<comp>.<header>.txt)."""
    comp = os.path.basename(comp_dir)
    main = HEADER_NAMES.get(comp, comp.replace("-", "_") + ".h")
    out = []
    for h in sorted(glob.glob(os.path.join(comp_dir, "*.h"))):
        base = os.path.basename(h)
        if base.endswith("_internal.h"):
            continue
        out.append((comp if base == main else comp + "." + base[:-2], h))
    return out


failed = False
headers = [ch for d in sorted(glob.glob(os.path.join(root, "src", "*"))) for ch in public_headers(d)]
for comp, h in headers:
    snap_path = os.path.join(root, "api", comp + ".txt")
    now = "\n".join(snapshot(h)) + "\n"
    if update:
        open(snap_path, "w").write(now)
        continue
    old = open(snap_path).read() if os.path.exists(snap_path) else ""
    if old != now:
        failed = True
        a, b = set(old.splitlines()), set(now.splitlines())
        print(f"api: {comp}: public header changed without its snapshot api/{comp}.txt")
        for l in sorted(a - b):
            print(f"  - {l}")
        for l in sorted(b - a):
            print(f"  + {l}")
if failed:
    print("api: if the change is intended, run scripts/check-api.py --update and commit api/")
sys.exit(1 if failed else 0)
