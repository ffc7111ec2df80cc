#!/usr/bin/env python3
"""output_commit_bench: what output commit costs a Go service in latency and
throughput, at 10, 25 and 100 ms epochs, in two CPU layouts side by side.

kvserver (tests/workloads/kvserver, cgo build) runs under checksync-primaryd
in host A of a fresh test topology per column (network namespaces A, B, C on
a bridge: tests/lib/replication.py), checksync-backupd in B; wrk runs in C
against the service address (VIP) with bench/kv.lua: a fill of --keys keys,
then --duration seconds of a GET/SET mix over --connections keep-alive
connections. Columns, for each layout:

  off/100    output_commit = off, epoch_interval_ms = 100 (the default)
  on/N       output_commit = on, epoch_interval_ms = N for N in --epochs

Layouts:

  pinned     primaryd and every thread of the service on CPU 0, backupd and
             wrk on CPU 1 (sched_setaffinity on every thread once the
             service runs, as `taskset -a -p` does; wrk under `taskset -c 1`)
  shared     no pinning: everything on both cores

Measured per column: wrk's throughput and latency p50/p99, socket errors
and non-2xx answers; from primaryd's status socket at the end of the load:
pause p50/p99, epochs sent, packets released by output commit and queue
overruns. Traffic goes only to addresses inside the test namespaces.

Run as root. Binaries: CHECKSYNC_PRIMARYD, CHECKSYNC_BACKUPD (default
build/primaryd/checksync-primaryd, build/backupd/checksync-backupd).
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
os.environ.setdefault("CHECKSYNC_PRIMARYD", os.path.join(REPO, "build", "primaryd", "checksync-primaryd"))
os.environ.setdefault("CHECKSYNC_BACKUPD", os.path.join(REPO, "build", "backupd", "checksync-backupd"))

import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

LUA = os.path.join(REPO, "bench", "kv.lua")
LAYOUTS = ("pinned", "shared")


def main():
    cs.log = lambda message: print(f"  {message}", file=sys.stderr, flush=True)  # stdout: the table
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("output_commit_bench: must run as root (namespaces, ptrace, netfilter)")
    if not shutil.which("wrk"):
        sys.exit("output_commit_bench: no wrk on PATH (Debian package wrk)")
    if len(os.sched_getaffinity(0)) < 2 and "pinned" in args.layouts:
        sys.exit("output_commit_bench: the pinned layout needs two CPUs")
    meta = machine(args)
    print("# output_commit_bench")
    for key, value in meta.items():
        print("# %-12s%s" % (key + ":", value))
    sys.stdout.flush()
    binary = cs.build_workload("kvserver", "cgo")
    columns = [("off", 100)] + [("on", e) for e in args.epochs]
    results, failed = {}, {}
    try:
        for layout in args.layouts:
            for oc, epoch in columns:
                name = f"{layout} {oc}/{epoch}"
                print(f"running {name} ...", file=sys.stderr, flush=True)
                try:
                    results[name] = run_column(args, binary, layout, oc, epoch)
                    w = results[name]["wrk"]
                    print(f"{name}: {w['rps']:.0f} req/s, p50 {w['lat_p50_us'] / 1000:.1f} ms, "
                          f"p99 {w['lat_p99_us'] / 1000:.1f} ms", file=sys.stderr, flush=True)
                except cs.TestError as e:
                    failed[name] = first_line(e)
                finally:
                    for problem in cs.cleanup():
                        print(f"cleanup: {problem}", file=sys.stderr)
    finally:
        cs.cleanup()
    print_table(args, columns, results, failed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "failed": failed}, f, indent=2)
            f.write("\n")
    return 1 if failed else 0


def parse_args():
    p = argparse.ArgumentParser(description="Latency and throughput of kvserver with output commit, "
                                "at several epoch intervals, pinned and shared.")
    p.add_argument("--epochs", default="10,25,100", help="epoch_interval_ms values with output commit "
                   "on (default %(default)s)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="pinned, shared or both (default both)")
    p.add_argument("--duration", type=int, default=15, help="seconds of load per column (default 15)")
    p.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    p.add_argument("--keys", type=int, default=2000, help="keys filled and used (default 2000)")
    p.add_argument("--value-size", type=int, default=256, help="bytes per value (default 256)")
    p.add_argument("--set-percent", type=int, default=10, help="percent of requests that /set (default 10)")
    p.add_argument("--json", metavar="FILE", help="write the raw numbers here")
    args = p.parse_args()
    args.epochs = [int(x) for x in args.epochs.split(",") if x]
    args.layouts = [x for x in args.layouts.split(",") if x]
    if any(x not in LAYOUTS for x in args.layouts) or any(not 10 <= e <= 60000 for e in args.epochs):
        p.error("--layouts: pinned and/or shared; --epochs: integers within 10..60000")
    return args


def pin(pid, cpus):
    """Every thread of PID on CPUS (new threads inherit it from the one that makes them)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass


def run_column(args, binary, layout, oc, epoch):
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, epoch_interval_ms=epoch, output_commit=oc)
        if layout == "pinned":
            for pid in (up.primary.pid, up.service.pid):
                pin(pid, {0})
            pin(up.backup.pid, {1})
        wrk_cpu = ["taskset", "-c", "1"] if layout == "pinned" else []
        fill(topo, args, up.vip, wrk_cpu)
        res = {"layout": layout, "output_commit": oc, "epoch_ms": epoch,
               "wrk": run_wrk(topo, args, "mix", args.duration, wrk_cpu)}
        st = up.primary.status_precise()
        res["status"] = {k: v for k, v in st.items() if k != "raw"}
        res["released"] = gauge(up.primary, "output_released_packets")
        res["overruns"] = gauge(up.primary, "output_overruns")
        res["output_commit_gauge"] = gauge(up.primary, "output_commit")
        if res["output_commit_gauge"] != (1 if oc == "on" else 0):
            raise cs.TestError(f"primaryd says output_commit {res['output_commit_gauge']}, "
                               f"expected {1 if oc == 'on' else 0}")
    return res


def gauge(daemon, name):
    for svc, _, n, _, value in rp.status_socket_rows(daemon.socket):
        if svc == rp.SERVICE and n == name:
            return value
    return None


def fill(topo, args, client, prefix):
    """Sets every key (kv.lua's fill mode) until /state counts them. Each run walks from key0
    again, and held output makes a run slow: each try lasts twice the one before."""
    seconds = 2
    for _ in range(7):
        run_wrk(topo, args, "fill", seconds, prefix)
        if client.state(timeout=30)["items"] >= args.keys:
            return
        seconds *= 2
    raise cs.TestError(f"fill: expected {args.keys} items, saw {client.state()['items']}")


def run_wrk(topo, args, mode, seconds, prefix):
    url = f"http://{topo.vip}:{rp.PORT}/"
    cmd = cs.netns_prefix(topo.c) + prefix + [
        "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds}s", "--timeout", "5s",
        "-s", LUA, url, "--", mode, str(args.keys), str(args.value_size), str(args.set_percent),
        str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, stdin=subprocess.DEVNULL)
    line = next((l for l in r.stdout.splitlines() if l.startswith("wrk-json ")), None)
    if r.returncode != 0 or line is None:
        raise cs.TestError(f"`{' '.join(cmd)}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
    out = json.loads(line[len("wrk-json "):])
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    return out


def first_line(e, limit=400):
    text = " | ".join(l.strip() for l in str(e).strip().splitlines() if l.strip()) or repr(e)
    return text if len(text) <= limit else text[:limit] + " ..."


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def cells(res, base):
    w, st = res["wrk"], res["status"]
    return {
        "throughput (req/s)": f"{w['rps']:.0f}",
        "vs off/100, same layout": "-" if base is None or res["output_commit"] == "off"
                                   else f"{(w['rps'] / base['wrk']['rps'] - 1) * 100:+.0f}%",
        "latency p50 (ms)": f"{w['lat_p50_us'] / 1000:.2f}",
        "latency p99 (ms)": f"{w['lat_p99_us'] / 1000:.2f}",
        "added p50 vs off/100 (ms)": "-" if base is None or res["output_commit"] == "off"
                                     else f"{(w['lat_p50_us'] - base['wrk']['lat_p50_us']) / 1000:+.2f}",
        "errors: socket / non-2xx": f"{w['connect_errors'] + w['read_errors'] + w['write_errors'] + w['timeouts']}"
                                    f" / {w['non2xx']}",
        "pause p50 / p99 (ms)": f"{fmt(st.get('pause_p50_ms'), '.2f')} / {fmt(st.get('pause_p99_ms'), '.2f')}",
        "epochs sent (fill + load)": fmt(st.get("epoch"), ".0f"),
        "packets released / overruns": "-" if res["output_commit"] == "off"
                                       else f"{fmt(res['released'], '.0f')} / {fmt(res['overruns'], '.0f')}",
    }


def print_table(args, columns, results, failed):
    names = [f"{layout} {oc}/{e}" for layout in args.layouts for oc, e in columns]
    table = {}
    for n in names:
        if n in results:
            base = results.get(f"{n.split()[0]} off/100")
            table[n] = cells(results[n], base)
    rows = ["throughput (req/s)", "vs off/100, same layout", "latency p50 (ms)", "latency p99 (ms)",
            "added p50 vs off/100 (ms)", "errors: socket / non-2xx", "pause p50 / p99 (ms)", "epochs sent (fill + load)",
            "packets released / overruns"]
    w0, w = 34, 16
    print()
    print("layout / output_commit/epoch_ms".ljust(w0) + "".join(n.ljust(w) for n in names).rstrip())
    print("-" * (w0 + w * len(names)))
    for row in rows:
        print(row.ljust(w0) + "".join((table[n][row] if n in table else "failed").ljust(w)
                                      for n in names).rstrip())
    print()
    print("pinned: primaryd and the service on CPU 0, backupd and wrk on CPU 1; shared: no pinning.")
    for n, why in failed.items():
        print(f"{n}: failed ({why})")


def machine(args):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)), "loadavg": f"{load} at start (a shared machine is noisy)",
        "workload": f"tests/workloads/kvserver (cgo), {args.keys} keys of {args.value_size} B",
        "load": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.set_percent}% /set, "
                f"from host C to the VIP in A",
    }


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so cleanup runs
    sys.exit(main())
