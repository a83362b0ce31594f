#!/usr/bin/env python3
"""Layering check (STYLE.md §1): a component includes only its own headers,
the public headers of the components it DEPENDS on (from its ron_component()
call), common headers and system headers; the dependency graph is acyclic.
Usage: check-layering.py SRC_DIR. Exits 1 listing every violation."""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"
comps = {}          # name -> set of direct dependencies
owner = {}          # header basename -> component
for name in sorted(os.listdir(src)):
    cm = os.path.join(src, name, "CMakeLists.txt")
    if not os.path.isfile(cm):
        continue
    text = open(cm).read()
    m = re.search(r"ron_component\(\s*([\w-]+)(.*?)\)", text, re.S)
    if not m:
        continue
    deps = set()
    d = re.search(r"DEPENDS\s+(.*?)(?:\s(?:SOURCES|LIBS)\s|$)", m.group(2), re.S)
    if d:
        deps = {t for t in d.group(1).split() if not t.startswith("$")}
    comps[m.group(1)] = deps
    for f in os.listdir(os.path.join(src, name)):
        if f.endswith(".h"):
            owner[f] = m.group(1)

errors = []
for name in comps:
    folder = os.path.join(src, name)
    allowed = comps[name] | {name, "common"}
    for f in sorted(os.listdir(folder)):
        if not f.endswith((".c", ".h")) or f.startswith("fuzz_"):
            continue
        for lineno, line in enumerate(open(os.path.join(folder, f), errors="replace"), 1):
            inc = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if not inc:
                continue
            hdr = os.path.basename(inc.group(1))
            comp = owner.get(hdr)
            if comp is not None and comp not in allowed:
                errors.append(f"{folder}/{f}:{lineno}: includes {hdr} of {comp}, "
                              f"not in DEPENDS of {name}")
            if comp is not None and comp != name and hdr.endswith("_internal.h"):
                errors.append(f"{folder}/{f}:{lineno}: includes internal header {hdr} of {comp}")

# Cycle check by depth-first search.
state = {}
def visit(n, path):
    if state.get(n) == 1:
        errors.append("dependency cycle: " + " -> ".join(path + [n]))
        return
    if state.get(n) == 2:
        return
    state[n] = 1
    for d in comps.get(n, ()):
        if d in comps:
            visit(d, path + [n])
    state[n] = 2
for n in comps:
    visit(n, [])

for e in errors:
    print(e)
print(f"layering: {len(comps)} components, {len(errors)} violations")
sys.exit(1 if errors else 0)
