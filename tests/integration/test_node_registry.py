#!/usr/bin/env python3
"""`ron node` runs svc-registry as the built-in `registry` service when the
operator lists it (it is not in the default list): the child opens
<data_dir>/registry/registry.log (mode 0600), reports its head through the
kernel's metrics, and is restarted after kill -9. A log that fails
verification keeps the service from starting (a tampered governance log is
never served) and `ron registry verify` names the bad version; the micro
profile keeps the registry in RAM and writes no file."""
import os
import signal
import stat

from ronnode import Node, check, wait_for

n = Node(["--set", "services=registry"]).wait_up()
log = os.path.join(n.dir, "registry", "registry.log")
data_dir = n.dir
try:
    reg = n.wait_running("registry")
    wait_for(lambda: os.path.exists(log), 5, "registry log under <data_dir>/registry")
    check(stat.S_IMODE(os.stat(log).st_mode) == 0o600, "registry log mode 0600")
    wait_for(lambda: n.metric('registry_head_version{service="registry"}') == 0, 5,
             "registry metrics merged by the kernel")
    r = n.ron("registry", "verify", "--data-dir", n.dir)
    check(r.returncode == 0 and r.stdout.startswith("ok: 0 versions"),
          "verify of an empty log: %r %r" % (r.stdout, r.stderr))

    os.kill(reg["pid"], signal.SIGKILL)
    reg2 = n.wait_running("registry", not_pid=reg["pid"], timeout=5)
    check(reg2["restarts"] >= 1, "registry restarted after kill -9: %r" % reg2)
    rc, took = n.stop()
    check(rc == 0, "exit 0 (%r)" % rc)

    # A tampered log: the service refuses to start, the node says why.
    with open(log, "w") as f:
        f.write('{"descriptor":{"v":1},"approvals":[],"hash":"b3:00"}\n')
    t = Node(["--set", "services=registry", "--data-dir", data_dir]).wait_up()
    try:
        t.wait_log("registry: cannot open", timeout=10)
        check("version 1" in t.logs(), "the reason names version 1:\n" + t.logs())
        wait_for(lambda: t.service("registry")["restarts"] >= 1, 10,
                 "the registry child exits at start and is restarted (not served)")
        check(os.path.getsize(log) > 0, "the tampered log is left for the operator, not repaired")
        r = t.ron("registry", "verify", log)
        check(r.returncode == 1 and "version 1" in r.stderr and r.stderr.count("\n") == 1,
              "verify names version 1 in one line: %r" % r.stderr)
        t.stop()
    finally:
        t.kill()
finally:
    n.kill()

m = Node(["--profile", "micro", "--set", "services=registry"]).wait_up()
try:
    m.wait_running("registry")
    wait_for(lambda: m.metric('registry_head_version{service="registry"}') == 0, 5,
             "micro registry metrics")
    check(not os.path.exists(os.path.join(m.dir, "registry")), "micro + amnesia: no registry file")
    rc, took = m.stop()
    check(rc == 0, "micro exit 0 (%r)" % rc)
finally:
    m.kill()
print("ok")
