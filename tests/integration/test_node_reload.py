#!/usr/bin/env python3
"""Config reload: an invalid file is refused with the reason logged and the
old config stays in force; a restart-only key change is refused; a valid
change (SIGHUP or `ron reload`) publishes CONFIG_UPDATED with version + 1 and
the child applies it; an unchanged reload emits nothing."""
import signal
import socket

from ronnode import Node, check, wait_for


def banner(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as c:
        c.settimeout(3)
        return c.recv(200).decode().strip()


cfg = {"echo": {"banner": "first", "addr": "127.0.0.1:0"}, "log": {"level": "info"}}
n = Node(config=cfg, services_addr=False).wait_up()
try:
    s = n.wait_running()
    check(banner(s["listen"]) == "first", "banner from the file")
    check(n.status()["config_version"] == "1", "version 1 at start")

    # invalid: unknown key -> refused, reason logged, old config in force
    n.write_config({"echo": {"banner": "second", "colour": "red"}})
    r = n.ron("reload")
    check(r.returncode == 1, "ron reload of an invalid config exits 1: %r" % r)
    check("unknown key 'echo.colour'" in r.stderr, "the reason names the key: %r" % r.stderr)
    n.wait_log("config reload refused")
    check("echo.colour" in n.logs(), "reason logged")
    check(n.status()["config_version"] == "1", "still version 1")
    check(banner(s["listen"]) == "first", "old config still in force")
    check(n.metric("config_reload_failures_total") == 1, "refusal counted")

    # wrong type via SIGHUP -> refused too
    n.write_config({"echo": {"banner": 5}})
    n.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: n.metric("config_reload_failures_total") == 2, 3, "SIGHUP refusal counted")
    check("key 'echo.banner': expected a string" in n.logs(), "type error logged")

    # restart-only key -> refused
    n.write_config({"echo": {"banner": "first", "addr": "127.0.0.1:1"}})
    r = n.ron("reload")
    check(r.returncode == 1 and "needs a restart" in r.stderr, "restart-only refused: %r" % r.stderr)

    # valid change via SIGHUP -> CONFIG_UPDATED{version 2}, child applies it
    n.write_config({"echo": {"banner": "second", "addr": "127.0.0.1:0"}, "log": {"level": "info"}})
    n.proc.send_signal(signal.SIGHUP)
    n.wait_log('CONFIG_UPDATED\\",\\"version\\":\\"2\\"')
    n.wait_log("config version 2 applied")
    wait_for(lambda: banner(s["listen"]) == "second", 3, "child serves the new banner")
    wait_for(lambda: n.service()["config_version"] == "2", 3, "child reports version 2")
    check(n.status()["config_version"] == "2", "kernel at version 2")
    check(n.service()["pid"] == s["pid"], "no restart needed to apply a reloadable key")

    # unchanged reload -> no event, same version
    r = n.ron("reload")
    check(r.returncode == 0 and "unchanged" in r.stdout, "unchanged reload: %r" % r.stdout)
    check(n.logs().count("CONFIG_UPDATED") == 1, "no CONFIG_UPDATED without a change")
    check(n.status()["config_version"] == "2", "still version 2")

    # valid change via ron reload -> version 3
    n.write_config({"echo": {"banner": "third", "addr": "127.0.0.1:0"}})
    r = n.ron("reload")
    check(r.returncode == 0 and "version 3" in r.stdout, "ron reload: %r" % r.stdout)
    wait_for(lambda: banner(s["listen"]) == "third", 3, "child serves the third banner")
    rc, took = n.stop()
    check(rc == 0, "exit 0")
finally:
    n.kill()
print("ok")
