"""nodecap.py - the node's operator capability for integration tests that
write through the gateway (writes need a capability since issue 5).

operator_cap(data_dir, logs) waits for <data-dir>/operator.cap (written by
the kernel on first start, mode 0600), or, in amnesia, for the one line
`operator capability: <token>` the node prints on stderr; logs is a
callable returning the node's output so far. auth(tok) is the curl -H pair.
"""
import os
import re
import time

_LINE = re.compile(r"operator capability: ([A-Za-z0-9_=-]+)")


def operator_cap(data_dir, logs=None, timeout=15):
    path = os.path.join(data_dir, "operator.cap") if data_dir else None
    deadline = time.monotonic() + timeout
    while True:
        if path is not None:
            try:
                with open(path) as f:
                    tok = f.read().strip()
                if tok:
                    return tok
            except OSError:
                pass
        if logs is not None:
            m = _LINE.search(logs())
            if m:
                return m.group(1)
        if time.monotonic() > deadline:
            raise AssertionError("no operator capability after %.0f s" % timeout)
        time.sleep(0.02)


def auth(tok):
    """curl arguments sending tok as a Bearer capability."""
    return ["-H", "Authorization: Bearer " + tok]
