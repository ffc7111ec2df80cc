#!/usr/bin/env python3
"""paper_bench: the paper's workload, protected and not, in two CPU layouts, in one run.

go-cache 2.1.0 (Debian's golang-github-patrickmn-go-cache-dev) behind
net/http: tests/workloads/kvserver. 100,000 keys of 100-byte values are
preloaded, then `wrk -t1 -c16 --latency` from host C sends 50% /set and 50%
/get on uniformly random keys (bench/kv.lua) through the VIP to host A, at
10 epochs/s. Every column runs in a fresh topology (tests/lib/replication.py)
and in both layouts:

  pinned  host A (the service and primaryd) on CPU 0; the client (wrk) and
          backupd on CPU 1 (taskset -a -p / taskset -c)
  shared  nothing pinned: everything shares both cores

Columns: unprotected; uffd (CheckSync, dirty_tracking = uffd); savefile
(go-cache's own SaveFile every --save-ms); criu (a loop of criu dump
--leave-running every --criu-ms) only when CRIU= names a binary.

Printed per column and layout: throughput and its change against
unprotected, latency p50/p99, epochs/s actually shipped (epochs merge while
the backup is behind, and a merged epoch hides cost), pause p50/p99, bytes
shipped per request served; then, for uffd, the cost breakdown (status
histograms of both daemons: the pause by phase, the work after resume, the
backup's read/verify/apply/journal), p50 and p99 of each.

--workload picks the service and its load (the columns are the same):

  go-cache  (default) the paper's workload above: tests/workloads/kvserver,
            100,000 keys of 100 B, 50% /set
  kvserver  the repo's own service as failover_bench.py and the e2e tests
            drive it: tests/workloads/kvserver (a go-cache too), 20,000 keys
            of 256 B, 10% /set
  garbage   tests/workloads/garbage (a key/value store whose every request
            leaves ~4 KB of garbage; no go-cache), the paper's load; its
            savefile column is n/a: SaveFile is go-cache's own
--keys, --value-size and --set-percent override the workload's.

Run as root, on an otherwise idle machine for figures worth comparing.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("CHECKSYNC_PRIMARYD", os.path.join(REPO, "build", "primaryd", "checksync-primaryd"))
os.environ.setdefault("CHECKSYNC_BACKUPD", os.path.join(REPO, "build", "backupd", "checksync-backupd"))

import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402
import failover_bench as fb  # noqa: E402
from dump_bench import Criu  # noqa: E402

LAYOUTS = ("pinned", "shared")
CONFIGS = ("unprotected", "uffd", "savefile", "criu")
# The cost breakdown rows, in the order an epoch goes through them (common/status.h histograms).
PRIMARY_COST = ["pause_stop", "pause_safepoint", "pause_live_set", "pause_dirty_scan", "pause_threads",
                "pause_copy", "pause_fds", "pause_resume", "pause", "ship_encode", "ship_compress",
                "ship_pack", "ship_tls_write", "precopy_round"]
# primaryd's thread CPU time in the same phases (the wall times above include waiting for a CPU).
PRIMARY_COST += ["pause_safepoint_cpu", "pause_live_set_cpu", "pause_dirty_scan_cpu", "pause_threads_cpu",
                 "pause_copy_cpu", "pause_fds_cpu"]
# --workload: (tests/workloads binary, its load: keys, value size, % /set, has SaveFile).
WORKLOADS = {
    "go-cache": ("kvserver", {"keys": 100000, "value_size": 100, "set_percent": 50}, True),
    "kvserver": ("kvserver", {"keys": 20000, "value_size": 256, "set_percent": 10}, True),
    "garbage": ("garbage", {"keys": 100000, "value_size": 100, "set_percent": 50}, False),
}
BACKUP_COST = ["recv_read", "recv_verify", "recv_apply", "journal_write", "journal_fsync", "journal_durable"]


def main():
    cs.log = lambda message: print(f"  {message}", file=sys.stderr, flush=True)
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("paper_bench: must run as root (namespaces, ptrace)")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"paper_bench: no {tool} on PATH")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("paper_bench: the pinned layout needs two CPUs")
    criu = Criu(argparse.Namespace(criu_dump_opts=args.criu_dump_opts, timeout=60))
    configs = [c for c in args.only if c != "criu" or os.environ.get("CRIU")]
    criu_why = None
    if "criu" in configs:
        criu_why = criu.probe()
        if criu_why:
            configs.remove("criu")
    meta = machine(args, criu if "criu" in configs else None)
    print("# paper_bench")
    for k, v in meta.items():
        print("# %-12s%s" % (k + ":", v))
    sys.stdout.flush()
    binary = cs.build_workload(WORKLOADS[args.workload][0], "cgo")
    results, failed = {}, {}
    t_start = time.monotonic()
    try:
        for layout in args.layouts:
            for name in configs:
                if name == "savefile" and not WORKLOADS[args.workload][2]:
                    results[(layout, name)] = {"na": True}  # printed as n/a: no SaveFile to run
                    continue
                print(f"running {layout} {name} ...", file=sys.stderr, flush=True)
                try:
                    results[(layout, name)] = run_one(layout, name, args, binary, criu)
                    print(f"{layout} {name}: {results[(layout, name)]['wrk']['rps']:.0f} req/s",
                          file=sys.stderr, flush=True)
                except (cs.TestError, fb.Unavailable) as e:
                    failed[(layout, name)] = fb.first_line(e)
                finally:
                    for problem in cs.cleanup(keep_files=args.keep):
                        print(f"cleanup: {problem}", file=sys.stderr)
    finally:
        cs.cleanup()
    print_tables(args, configs, results, failed)
    if "savefile" in configs and not WORKLOADS[args.workload][2]:
        print(f"savefile: n/a ({args.workload} has no SaveFile: it is go-cache's own)")
    if "criu" in args.only and "criu" not in configs:
        print("criu: not run (" + (criu_why or "CRIU= not given") + ")")
    elif "criu" not in args.only or not os.environ.get("CRIU"):
        print("criu: not run (CRIU= not given)")
    print(f"# wall time of the run: {time.monotonic() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": {f"{l} {n}": r for (l, n), r in results.items()},
                       "failed": {f"{l} {n}": r for (l, n), r in failed.items()}}, f, indent=2)
            f.write("\n")
    return 1 if failed else 0


def parse_args():
    p = argparse.ArgumentParser(description="The paper's go-cache workload: unprotected, CheckSync, "
                                "SaveFile (and CRIU), pinned and shared, side by side.")
    p.add_argument("--only", default="unprotected,uffd,savefile,criu", metavar="NAME[,NAME]",
                   help="columns (default %(default)s; criu runs only with CRIU= set)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="pinned, shared or both (default both)")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="go-cache",
                   help="service and load (default go-cache: the paper's; see the module comment)")
    p.add_argument("--duration", type=int, default=8, help="seconds of load per column (default 8)")
    p.add_argument("--keys", type=int, help="keys preloaded and used (default: the workload's)")
    p.add_argument("--value-size", type=int, help="bytes per value (default: the workload's)")
    p.add_argument("--set-percent", type=int, help="percent /set (default: the workload's)")
    p.add_argument("--epoch-ms", type=int, default=100, help="epoch_interval_ms (default 100: 10 epochs/s)")
    p.add_argument("--save-ms", type=int, default=100, help="SaveFile interval (default 100)")
    p.add_argument("--criu-ms", type=int, default=100, help="CRIU dump interval (default 100)")
    p.add_argument("--criu-dump-opts", default="--tcp-close --skip-in-flight")
    p.add_argument("--compression", choices=("zstd", "lz4", "none"), help="the service's compression key")
    p.add_argument("--delta-cache-mb", type=int, help="the service's delta_cache_mb key (0: whole pages)")
    p.add_argument("--precopy", choices=("on", "off"), help="the service's precopy key (default on)")
    p.add_argument("--json", metavar="FILE", help="write the raw numbers here")
    p.add_argument("--keep", action="store_true", help="keep logs, configs and state")
    args = p.parse_args()
    for k, v in WORKLOADS[args.workload][1].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.only = [x for x in args.only.split(",") if x]
    args.layouts = [x for x in args.layouts.split(",") if x]
    if any(x not in CONFIGS for x in args.only) or any(x not in LAYOUTS for x in args.layouts):
        p.error(f"--only from {CONFIGS}, --layouts from {LAYOUTS}")
    # what failover_bench's fill and run_wrk read
    args.threads, args.connections = 1, 16
    return args


def pin(pid, cpu):
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                   capture_output=True, timeout=10)


def rows(path):
    return {name: value for svc, role, name, unit, value in rp.status_socket_rows(path)}


def run_one(layout, name, args, binary, criu):
    res = {"layout": layout, "config": name}
    client_cpu = 1 if layout == "pinned" else None
    with rp.Topology() as topo:
        workdir = tempfile.mkdtemp(prefix=f"{layout}-{name}-", dir=cs.run_dir("bench"))
        up = None
        if name == "uffd":
            certs = rp.make_certs(topo.addr[topo.b])
            keys = {k: v for k, v in (("compression", args.compression),
                                      ("delta_cache_mb", args.delta_cache_mb),
                                      ("precopy", args.precopy)) if v is not None}
            up = rp.bring_up(topo, certs, binary, epoch_interval_ms=args.epoch_ms, dirty_tracking="uffd",
                             **keys)
            pid = up.service.pid
            if layout == "pinned":
                pin(up.primary.proc.pid, 0)
                pin(pid, 0)
                pin(up.backup.proc.pid, 1)
        else:
            extra = []
            if name == "savefile":
                extra = ["-savefile", os.path.join(workdir, "kv.gob"), "-save-interval-ms", str(args.save_ms),
                         "-save-after-items", str(args.keys)]
            pid = fb.start_plain(topo, binary, extra, workdir)
            if layout == "pinned":
                pin(pid, 0)
        vip = cs.Client(topo.vip, rp.PORT, netns=topo.c)
        fill(topo, args, vip, client_cpu)
        loop = fb.CriuLoop(criu, pid, workdir, args.criu_ms) if name == "criu" else None
        before = rows(up.primary.socket) if up else None
        cpu_before = cpu_seconds(up.backup.proc.pid) if up else None
        pcpu_before = cpu_seconds(up.primary.proc.pid) if up else None
        if loop:
            loop.start()
        t0 = time.monotonic()
        try:
            res["wrk"] = wrk(topo, args, "mix", args.duration, client_cpu)
        finally:
            wall = time.monotonic() - t0
            if loop:
                loop.stop()
        requests = res["wrk"]["requests"]
        if up:
            after = rows(up.primary.socket)
            brows = rows(up.backup.socket)
            backup_cpu = cpu_seconds(up.backup.proc.pid) - cpu_before
            primary_cpu = cpu_seconds(up.primary.proc.pid) - pcpu_before
            epochs = after["epochs_sent"] - before["epochs_sent"]
            res["epochs_per_s"] = epochs / wall
            # primaryd's CPU per shipped epoch (user + system, all its threads): what limits
            # epochs/s once the service and primaryd share a core (issue 13).
            res["primary_cpu_s"] = primary_cpu
            res["primary_cpu_ms_per_epoch"] = primary_cpu * 1000 / max(1, epochs)
            # Per request too: an epoch's work grows with the requests it covers, so under
            # a loaded machine (fewer requests per epoch) CPU per epoch alone flatters.
            res["primary_cpu_us_per_request"] = primary_cpu * 1e6 / max(1, requests)
            res["merged"] = after["epochs_merged"] - before["epochs_merged"]
            res["pause_p50_ms"] = (after.get("pause_p50") or 0) * 1000
            res["pause_p99_ms"] = (after.get("pause_p99") or 0) * 1000
            res["bytes_per_request"] = (after["shipped"] - before["shipped"]) / max(1, requests)
            res["bytes_per_epoch"] = (after["shipped"] - before["shipped"]) / max(1, epochs)
            res["primary"] = after
            d = {k: after.get(k, 0) - before.get(k, 0) for k in
                 ("delta_pages_runs", "delta_pages_blocks", "delta_pages_whole", "delta_pages_on_zero",
                  "delta_page", "delta_raw",
                  "delta_wire", "delta_cache_hits", "delta_cache_misses")}
            res["delta"] = d
            for k in ("precopy_read", "precopy_stop_read", "precopy_store_used", "precopy_rounds"):
                res.setdefault("precopy", {})[k] = after.get(k, 0) - before.get(k, 0)
            # What the backup applied: the pages the epochs stand for (whole or as deltas).
            applied = d["delta_page"] or (after["shipped"] - before["shipped"])
            res["backup_cpu_s"] = backup_cpu
            res["backup_applied_mib"] = applied / 2**20
            res["backup"] = brows
            for p in (up.primary.proc.pid, up.backup.proc.pid, pid):
                res.setdefault("affinity", {})[str(p)] = affinity(p)
        elif loop:
            res["pause_p50_ms"] = fb.pct(loop.pauses_ms, 50)
            res["pause_p99_ms"] = fb.pct(loop.pauses_ms, 99)
            res["count"] = len(loop.pauses_ms)
        elif name == "savefile":
            saves = vip.json("/saves")
            ms = [us / 1000 for us in saves["us"]]
            res["pause_p50_ms"], res["pause_p99_ms"] = fb.pct(ms, 50), fb.pct(ms, 99)
            res["count"] = saves["count"]
            size = os.path.getsize(os.path.join(workdir, "kv.gob"))
            res["bytes_per_request"] = size * saves["count"] / max(1, requests)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def cpu_seconds(pid):
    """User + system CPU of pid (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def affinity(pid):
    r = subprocess.run(["taskset", "-p", str(pid)], capture_output=True, text=True)
    return r.stdout.strip().rsplit(" ", 1)[-1] if r.returncode == 0 else "?"


def wrk(topo, args, mode, seconds, cpu, start=0):
    """failover_bench's run_wrk with wrk pinned to CPU when given, and --latency."""
    url = f"http://{topo.vip}:{rp.PORT}/"
    cmd = cs.netns_prefix(topo.c) + (["taskset", "-c", str(cpu)] if cpu is not None else []) + [
        "wrk", "-t", "1", "-c", "16", "-d", f"{seconds}s", "--latency", "--timeout", "5s",
        "-s", fb.LUA, url, "--", mode, str(args.keys), str(args.value_size), str(args.set_percent), "1", str(start)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, stdin=subprocess.DEVNULL)
    line = next((l for l in r.stdout.splitlines() if l.startswith("wrk-json ")), None)
    if r.returncode != 0 or line is None:
        raise cs.TestError(f"`{' '.join(cmd)}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
    out = json.loads(line[len("wrk-json "):])
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    out["command"] = " ".join(cmd[len(cs.netns_prefix(topo.c)):])
    return out


def fill(topo, args, client, cpu):
    start = 0
    for _ in range(20):
        start += wrk(topo, args, "fill", max(2, args.keys // 20000), cpu, start)["requests"]
        if client.state(timeout=30)["items"] >= args.keys:
            return
    raise cs.TestError(f"fill: expected {args.keys} items, saw {client.state()['items']}")


# ---------------------------------------------------------------- output

def f(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def cells(results, layout, name):
    res = results.get((layout, name))
    if not res:
        return {}
    if res.get("na"):
        return {row: "n/a" for row in ROWS}
    w = res["wrk"]
    base = results.get((layout, "unprotected"), {}).get("wrk", {}).get("rps")
    c = {"throughput (req/s)": f"{w['rps']:.0f}",
         "vs unprotected": "-" if name == "unprotected" or not base else f"{(w['rps'] / base - 1) * 100:+.1f}%",
         "latency p50 / p99 (ms)": f"{w['lat_p50_us'] / 1000:.2f} / {w['lat_p99_us'] / 1000:.2f}",
         "errors socket / non-2xx": f"{w['connect_errors'] + w['read_errors'] + w['write_errors'] + w['timeouts']}"
                                    f" / {w['non2xx']}"}
    if name != "unprotected":
        c["pause p50 / p99 (ms)"] = f"{f(res.get('pause_p50_ms'))} / {f(res.get('pause_p99_ms'))}" + \
            (" (lock)" if name == "savefile" else "")
    if name == "uffd":
        c["epochs/s shipped (merged)"] = f"{res['epochs_per_s']:.2f} ({res['merged']:.0f})"
        c["bytes shipped / request"] = f"{res['bytes_per_request']:,.0f}"
        c["bytes / epoch"] = f"{res['bytes_per_epoch']:,.0f}"
        if res.get("primary_cpu_ms_per_epoch") is not None:
            c["primaryd CPU ms / epoch"] = (f"{res['primary_cpu_ms_per_epoch']:.1f}"
                                            f" ({res['primary_cpu_s'] / (res['wrk']['duration_us'] / 1e6) * 100:.0f}% of a core)")
            c["primaryd CPU us / request"] = f"{res['primary_cpu_us_per_request']:.1f}"
        if res.get("backup_applied_mib"):
            c["backup CPU ms / MiB applied"] = (f"{res['backup_cpu_s'] * 1000 / res['backup_applied_mib']:.1f}"
                                                f" ({res['backup_applied_mib']:.0f} MiB)")
        pc = res.get("precopy", {})
        if pc.get("precopy_rounds"):
            c["pre-copy MiB: rounds/stop/store"] = (f"{pc['precopy_read'] / 2**20:.0f}/"
                                                   f"{pc['precopy_stop_read'] / 2**20:.1f}/"
                                                   f"{pc['precopy_store_used'] / 2**20:.0f}")
    if name == "uffd" and res.get("delta", {}).get("delta_page"):
        d = res["delta"]
        c["delta pages runs/blocks/whole/on zeros"] = (f"{d['delta_pages_runs']:.0f}/{d['delta_pages_blocks']:.0f}/"
                                                       f"{d['delta_pages_whole']:.0f}/{d['delta_pages_on_zero']:.0f}")
        c["page->delta->wire ratio"] = f"{d['delta_raw'] / d['delta_page']:.3f} / {d['delta_wire'] / d['delta_page']:.3f}"
    if name == "savefile":
        c["bytes shipped / request"] = f"{res['bytes_per_request']:,.0f} (file)"
        c["epochs/s shipped (merged)"] = f"{res['count']} saves"
    if name == "criu":
        c["epochs/s shipped (merged)"] = f"{res['count']} dumps"
    return c


ROWS = ["throughput (req/s)", "vs unprotected", "latency p50 / p99 (ms)", "errors socket / non-2xx",
        "epochs/s shipped (merged)", "pause p50 / p99 (ms)", "bytes shipped / request", "bytes / epoch",
        "primaryd CPU ms / epoch", "primaryd CPU us / request", "delta pages runs/blocks/whole/on zeros", "page->delta->wire ratio",
        "backup CPU ms / MiB applied",
        "pre-copy MiB: rounds/stop/store"]


def print_tables(args, configs, results, failed):
    cols = [(l, n) for l in args.layouts for n in configs]
    w0, w = 28, 19
    print()
    print("".ljust(w0) + "".join(f"{l}".ljust(w) for l, n in cols).rstrip())
    print("metric".ljust(w0) + "".join(n.ljust(w) for l, n in cols).rstrip())
    print("-" * (w0 + w * len(cols)))
    table = {c: cells(results, *c) for c in cols}
    for row in ROWS:
        print(row.ljust(w0) + "".join(table[c].get(row, "-").ljust(w) for c in cols).rstrip())
    for c, why in failed.items():
        print(f"{c[0]} {c[1]}: failed ({why})")
    prot = [l for l in args.layouts if (l, "uffd") in results]
    if prot:
        print()
        print("cost breakdown, uffd, ms p50 / p99 (status histograms of both daemons)")
        print("phase".ljust(w0) + "".join(l.ljust(w) for l in prot).rstrip())
        for side, names in (("primary", PRIMARY_COST), ("backup", BACKUP_COST)):
            for n in names:
                vals = []
                for l in prot:
                    r = results[(l, "uffd")][side]
                    p50, p99 = r.get(n + "_p50"), r.get(n + "_p99")
                    vals.append("-" if p50 is None else f"{p50 * 1000:.3f} / {p99 * 1000:.3f}")
                print(f"{side[0]}: {n}".ljust(w0) + "".join(v.ljust(w) for v in vals).rstrip())
    print()
    print("pinned: service + primaryd on CPU 0, wrk + backupd on CPU 1; shared: no pinning.")
    print("pause: uffd from primaryd's status (last 256 epochs); savefile: SaveFile's time holding the "
          "cache's lock; criu: freezing + frozen time. bytes/request: savefile counts the file per save.")


def machine(args, criu):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        pass
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)), "loadavg": " ".join(load) + " (at start; other users' load skews)",
        "workload": f"{args.workload}: tests/workloads/{WORKLOADS[args.workload][0]} (cgo build), "
                    f"{args.keys} keys of {args.value_size} B",
        "load": f"wrk -t1 -c16 -d{args.duration}s --latency, {args.set_percent}% /set, random keys, from C",
        "protection": f"epoch {args.epoch_ms} ms (uffd, compression {args.compression or 'default'}, "
                      f"delta_cache_mb {'default' if args.delta_cache_mb is None else args.delta_cache_mb}); "
                      f"SaveFile every {args.save_ms} ms (from the end of the fill)"
                      + (f"; CRIU every {args.criu_ms} ms: {criu.describe()}" if criu else ""),
        "checksync": f"{os.environ['CHECKSYNC_PRIMARYD']}, {os.environ['CHECKSYNC_BACKUPD']}",
    }


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
