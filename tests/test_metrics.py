#!/usr/bin/env python3
"""/metrics of both daemons, by the Prometheus text format's rules and naming
conventions, while they replicate kvserver (hosts as namespaces).

Checked on each daemon's /metrics (metrics_listen in its daemon file):
  - `promtool check metrics` (Debian's prometheus package) finds nothing:
    HELP and TYPE once per family, counters ending in _total, base units;
  - every counter family ends in _total, every gauge or histogram with a
    unit ends in _seconds or _bytes, and no name repeats its unit
    (_bytes_bytes, _seconds_seconds);
  - pauses are a histogram (checksync_pause_seconds_bucket/_sum/_count);
  - a figure both daemons report has one name on both (epoch, acknowledged
    epoch, epoch size), and the figures agree with `status`.
The names found are printed, for README's list.
"""

import os
import re
import shutil
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

METRICS_PORT = 9477
SHARED = ["checksync_epoch", "checksync_acked_epoch", "checksync_epoch_size_bytes"]


def fetch(topo, host):
    url = f"http://{topo.addr[host]}:{METRICS_PORT}/metrics"
    with cs.in_netns(host):
        with urllib.request.urlopen(url, timeout=10) as resp:
            ctype = resp.headers.get("Content-Type", "")
            return resp.read().decode(), ctype


def families(text):
    """{name: type} from the # TYPE lines."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def promtool(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def check_daemon(r, kind, text, ctype):
    r.check(f"{kind}: /metrics is the Prometheus text format (Content-Type {ctype!r})",
            ctype.startswith("text/plain") and "version=0.0.4" in ctype, "text/plain; version=0.0.4", ctype)
    rc, out = promtool(text)
    r.check(f"{kind}: `promtool check metrics` finds nothing", rc == 0 and not out, "exit 0, no output",
            f"exit {rc}: {out[:1500]}")
    fams = families(text)
    bad = [n for n, t in fams.items() if t == "counter" and not n.endswith("_total")]
    r.check(f"{kind}: every counter ends in _total", not bad, "none", bad)
    bad = [n for n in fams if re.search(r"_(bytes|seconds)_(bytes|seconds)(_|$)", n)]
    r.check(f"{kind}: no name repeats its unit", not bad, "none", bad)
    bad = [n for n in fams if re.search(r"_(ms|us|usec|msec|kib|mib|kb|mb)(_|$)", n)]
    r.check(f"{kind}: base units only (seconds, bytes)", not bad, "none", bad)
    cs.log(f"{kind} metrics: " + ", ".join(f"{n} ({t})" for n, t in sorted(fams.items())))
    return fams


def value(text, name, service=rp.SERVICE):
    m = re.search(r"^" + re.escape(name) + r"\{[^}]*service=\"" + re.escape(service) + r"\"[^}]*\} (\S+)$",
                  text, re.M)
    return float(m.group(1)) if m else None


def scenario(r):
    if not shutil.which("promtool"):
        raise cs.TestError("promtool is not installed (Debian's prometheus package; tests/install-deps.sh)")
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = rp.Deployment(topo, certs, binary)
        dep.write_primary_conf(extra=f"metrics_listen = {topo.addr[topo.a]}:{METRICS_PORT}")
        dep.write_backup_conf(extra=f"metrics_listen = {topo.addr[topo.b]}:{METRICS_PORT}")
        backup = dep.start_backupd()
        primary = dep.start_primaryd()
        rp.service_proc(primary, binary)
        rp.wait_acked(primary, backup, at_least=5)
        text = {}
        for kind, host in (("primaryd", topo.a), ("backupd", topo.b)):
            body, ctype = fetch(topo, host)
            text[kind] = body
            check_daemon(r, kind, body, ctype)
        fams = {k: families(v) for k, v in text.items()}
        r.check("pauses are a histogram on the primary (checksync_pause_seconds)",
                fams["primaryd"].get("checksync_pause_seconds") == "histogram"
                and "checksync_pause_seconds_bucket{" in text["primaryd"], "histogram with buckets",
                {k: v for k, v in fams["primaryd"].items() if "pause" in k})
        for name in SHARED:
            r.check(f"{name}: one name for one figure on both daemons",
                    name in fams["primaryd"] and name in fams["backupd"], "on both",
                    {k: name in f for k, f in fams.items()})
        pe, be = value(text["primaryd"], "checksync_acked_epoch"), value(text["backupd"], "checksync_epoch")
        r.check(f"the figures are the daemons' own: primary's acknowledged epoch {pe} <= backup's epoch {be}",
                pe is not None and be is not None and 5 <= pe <= be, "5 <= acked <= held", (pe, be))


if __name__ == "__main__":
    cs.run(scenario)
