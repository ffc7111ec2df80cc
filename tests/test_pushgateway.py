#!/usr/bin/env python3
"""A Go service nobody here wrote, as Debian ships it: prometheus-pushgateway
(stripped, with a .gnu_debuglink and no debug file installed), protected by the
two daemons, keeps the metrics pushed to it when host A dies.

Hosts A, B and C as in the failover tests (tests/lib/replication.py). The
service file gives the command on continuation lines (more than 200
characters), with persistence off, so the metrics live only in the process's
memory. Before the kill, the status of both daemons must tell the truth: the
primary captures whole mappings for want of DWARF and says so once in its log;
the backup says at the primary's HELLO, in its log and in its status, that this
host has no DWARF for the service. Jobs are pushed with curl (PUT and POST)
from C through the service address; once an epoch holding them is
acknowledged, A's primaryd and service are killed, and B must serve every pushed
metric with its value, and take new pushes.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
NAME = "pushgateway"
PORT = 9091
JOBS = 20


def curl(topo, method, url, data=None, timeout=5):
    """curl from host C; returns (HTTP status, body). Status 0: no answer."""
    argv = cs.netns_prefix(topo.c) + ["curl", "-s", "-m", str(timeout), "-o", "-", "-w",
                                       "\n%{http_code}", "-X", method, url]
    if data is not None:
        argv += ["--data-binary", "@-"]
    r = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout + 10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code) if code.isdigit() else 0, body


def push(topo, base, i):
    """Job i: PUT (replace) for even i, POST (merge) for odd; two samples each."""
    text = (f"# TYPE checksync_test_value gauge\n"
            f'checksync_test_value{{kind="a"}} {i * 1.5}\n'
            f'checksync_test_value{{kind="b"}} {i + 1000}\n')
    code, body = curl(topo, "PUT" if i % 2 == 0 else "POST",
                      f"{base}/metrics/job/job{i}/instance/i{i}", text)
    if code not in (200, 202):
        raise cs.TestError(f"push of job{i} to {base}: HTTP {code} {body.strip()[:200]}")


def pushed(topo, base):
    """{(job, kind): value} of checksync_test_value as GET /api/v1/metrics tells it."""
    code, body = curl(topo, "GET", f"{base}/api/v1/metrics")
    if code != 200:
        raise cs.TestError(f"GET {base}/api/v1/metrics: HTTP {code} {body.strip()[:200]}")
    out = {}
    for group in json.loads(body)["data"]:
        job = group["labels"].get("job")
        fam = group.get("checksync_test_value")
        for m in (fam or {}).get("metrics", []):
            out[(job, m["labels"]["kind"])] = float(m["value"])
    return out


def expected(n):
    return {(f"job{i}", k): v for i in range(n) for k, v in (("a", i * 1.5), ("b", i + 1000.0))}


def status_text(daemon, name):
    """The text rows (status_report_text) of the service in a daemon's status socket."""
    return {row[2]: row[4] for row in rp.status_socket_rows(daemon.socket)
            if row[0] == NAME and row[3] == "text" and row[2] == name}.get(name)


def main(r):
    if not os.access(PUSHGATEWAY, os.X_OK):
        r.require(f"{PUSHGATEWAY} is installed (tests/install-deps.sh)", False, "installed",
                  "missing")
    topo = rp.Topology()
    certs = rp.make_certs(f"10.213.{topo.net}.2")
    with topo:
        dep = rp.Deployment(topo, certs, PUSHGATEWAY, port=PORT)
        # A real deployment's command, too long for one config line: continuation lines.
        dep.command = "\n    ".join([
            PUSHGATEWAY,
            f"--web.listen-address=0.0.0.0:{PORT}",
            "--web.telemetry-path=/metrics",
            "--web.local-assets=/usr/share/prometheus/pushgateway",
            "--persistence.file=",
            "--persistence.interval=5m",
            "--log.level=info",
            "--log.format=logfmt"])
        r.check("the command is longer than a config line holds",
                len(dep.command.replace("\n    ", " ")) > 200, "> 200 characters",
                len(dep.command))
        for side in ("a", "b"):
            dep.write_service(side, name=NAME)
        backup = dep.start_backupd()
        primary = dep.start_primaryd()
        service = rp.service_proc(primary, PUSHGATEWAY)
        base = f"http://{topo.vip}:{PORT}"
        rp.wait_for("the pushgateway to answer /-/ready through the VIP",
                    lambda: curl(topo, "GET", f"{base}/-/ready")[0] == 200, 30, 0.2)
        rp.wait_acked(primary, backup, at_least=1)

        mode = status_text(primary, "capture_mode")
        r.check("primaryd's status: capture mode whole (no DWARF)", mode == "whole (no DWARF)",
                "whole (no DWARF)", mode)
        st = primary.status_raw().stdout
        r.check("`primaryd status` prints the capture mode",
                re.search(r"capture mode\s+whole \(no DWARF\)", st), "capture mode  whole (no DWARF)",
                st)
        plog = primary.log_text()
        said = [l for l in plog.splitlines() if "falling back to whole-mapping capture" in l]
        r.check("primaryd's log says once why: no DWARF, the debuglink it looked for",
                len(said) == 1 and re.search(r"none named [0-9a-f]{38}\.debug", said[0]),
                "one line naming the debuglink", said or plog[-1500:])
        di = status_text(backup, "debug_info")
        r.check("backupd's status: no DWARF for the service on this host",
                di and di.startswith("missing") and PUSHGATEWAY in di, f"missing ... {PUSHGATEWAY}", di)
        blog = backup.log_text()
        hello = [l for l in blog.splitlines() if "primary connected from" in l and "no DWARF" in l]
        r.check("backupd's log says so when the primary says HELLO", len(hello) >= 1,
                "a 'primary connected from ... no DWARF' warning", blog[-1500:])

        for i in range(JOBS):
            push(topo, base, i)
        want = expected(JOBS)
        got = pushed(topo, base)
        r.require(f"A serves the {JOBS} pushed jobs", got == want, "every pushed sample",
                  cs.summarize([f"{k}: {got.get(k)} != {v}" for k, v in want.items() if got.get(k) != v]))
        epoch = primary.field("epoch", NAME)
        rp.wait_acked(primary, backup, at_least=(epoch or 0) + 2)

        t_kill = rp.kill_now(service, primary.proc)
        primary.proc.wait_gone(5)
        service.wait_gone(5)
        rp.wait_for("B to serve the pushgateway through the VIP",
                    lambda: curl(topo, "GET", f"{base}/-/ready", timeout=1)[0] == 200, 30, 0.1)
        took = time.monotonic() - t_kill
        got = pushed(topo, base)
        missing = [f"{k}: {got.get(k)} (expected {v})" for k, v in want.items() if got.get(k) != v]
        r.check(f"after A's death B serves all {JOBS} pushed jobs with their values "
                f"(first answer {took * 1000:.0f} ms after the kill)", not missing,
                "every pushed sample", cs.summarize(missing))
        role = backup.field("role", NAME)
        r.check("backupd's status says serving", role == "serving", "serving", role)
        push(topo, base, JOBS)
        got = pushed(topo, base)
        r.check("B takes a new push and serves it", got == expected(JOBS + 1),
                "the new job beside the old ones", sorted(set(got) ^ set(expected(JOBS + 1))))
        for pid in rp.running_in(topo, topo.b, PUSHGATEWAY):
            cs.Proc(pid, "pushgateway restored in B").kill9()
        backup.kill9()


if __name__ == "__main__":
    cs.run(main)
