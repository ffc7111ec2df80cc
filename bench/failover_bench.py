#!/usr/bin/env python3
"""failover_bench: what protection costs a Go service under load, and how fast
it comes back on another host.

kvserver (tests/workloads/kvserver, go-cache behind HTTP, default cgo build)
runs in host A of a fresh test topology per configuration (network
namespaces A, B, C on a bridge: tests/lib/replication.py); wrk runs in C
against the service address (VIP) with bench/kv.lua: first a fill of KEYS
keys, then --duration seconds of a GET/SET mix. Configurations (columns):

  unprotected  kvserver alone
  uffd         kvserver under checksync-primaryd, backupd in B,
               epoch_interval_ms = --epoch-ms, dirty_tracking = uffd
  hash         the same with dirty_tracking = hash
  savefile     kvserver -savefile FILE -save-interval-ms --save-ms: go-cache's
               own SaveFile, the persistence the service could have alone
  criu         kvserver alone, and a loop of `criu dump --leave-running`
               every --criu-ms (or back to back when a dump takes longer),
               run inside A's network namespace with nsenter

Measured: throughput (req/s) and its loss against unprotected, wrk's latency
p50/p99, socket errors and non-2xx answers; for uffd and hash the pause p50
and p99 and bytes per epoch from primaryd's status socket (read at the end of
the load), then the time from SIGKILL of A's processes (primaryd and the
service) to the first successful request through the VIP, served from B; for
savefile how long each SaveFile held the cache (from /saves) and the file's
size; for criu the pause (freezing + frozen time from each dump's
stats-dump) and the image size. Traffic goes only to addresses inside the
test namespaces.

Run as root. Binaries: CHECKSYNC_PRIMARYD, CHECKSYNC_BACKUPD (default
build/primaryd/checksync-primaryd, build/backupd/checksync-backupd), CRIU
(default: criu on PATH, else /opt/criu/criu). A column that cannot run here
is printed as "NAME: unavailable (reason)".
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("CHECKSYNC_PRIMARYD", os.path.join(REPO, "build", "primaryd", "checksync-primaryd"))
os.environ.setdefault("CHECKSYNC_BACKUPD", os.path.join(REPO, "build", "backupd", "checksync-backupd"))

import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402
from dump_bench import Criu, read_criu_stats, du  # noqa: E402

LUA = os.path.join(REPO, "bench", "kv.lua")
CONFIGS = ("unprotected", "uffd", "hash", "savefile", "criu")


class Unavailable(Exception):
    """A configuration cannot run here; the message says why."""


# ---------------------------------------------------------------- main flow

def main():
    cs.log = lambda message: print(f"  {message}", file=sys.stderr, flush=True)  # stdout: the table
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("failover_bench: must run as root (namespaces, ptrace, CRIU)")
    if not shutil.which("wrk"):
        sys.exit("failover_bench: no wrk on PATH (Debian package wrk)")
    criu = Criu(argparse.Namespace(criu_dump_opts=args.criu_dump_opts, timeout=60))
    if not os.environ.get("CRIU") and not criu.path and os.access("/opt/criu/criu", os.X_OK):
        criu.path = "/opt/criu/criu"
    criu_why = criu.probe() if "criu" in args.only else None
    meta = machine(args, criu)
    print_header(meta)
    binary = cs.build_workload("kvserver", "cgo")
    results, unavailable = {}, {}
    if criu_why:
        unavailable["criu"] = criu_why
    try:
        for name in args.only:
            if name in unavailable:
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = run_config(name, args, binary, criu)
            except Unavailable as e:
                unavailable[name] = str(e)
            except cs.TestError as e:
                unavailable[name] = f"failed: {first_line(e)}"
            finally:
                for problem in cs.cleanup(keep_files=args.keep):
                    print(f"cleanup: {problem}", file=sys.stderr)
            if name in results:
                print(f"{name}: {progress(results[name])}", file=sys.stderr, flush=True)
    finally:
        cs.cleanup()
    print_table(args, results, unavailable)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "unavailable": unavailable}, f, indent=2)
            f.write("\n")
    return 1 if unavailable else 0


def parse_args():
    p = argparse.ArgumentParser(description="Throughput, latency and failover of kvserver: "
                                "unprotected, under CheckSync (uffd, hash), with SaveFile, with CRIU dumps.")
    p.add_argument("--only", default=",".join(CONFIGS), metavar="NAME[,NAME]",
                   help="configurations to run (default all: %(default)s)")
    p.add_argument("--duration", type=int, default=30, help="seconds of load per configuration (default 30)")
    p.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    p.add_argument("--keys", type=int, default=20000, help="keys filled and used (default 20000)")
    p.add_argument("--value-size", type=int, default=256, help="bytes per value (default 256)")
    p.add_argument("--set-percent", type=int, default=10, help="percent of requests that /set (default 10)")
    p.add_argument("--epoch-ms", type=int, default=100, help="epoch_interval_ms for uffd and hash (default 100)")
    p.add_argument("--save-ms", type=int, default=100, help="-save-interval-ms for savefile (default 100)")
    p.add_argument("--criu-ms", type=int, default=100, help="interval of the CRIU dump loop (default 100)")
    p.add_argument("--criu-dump-opts", default="--tcp-close --skip-in-flight",
                   help="extra 'criu dump' options (default: %(default)s)")
    p.add_argument("--workdir", default=None, help="where state, saves and CRIU images go (default $TMPDIR)")
    p.add_argument("--json", metavar="FILE", help="write the raw numbers here")
    p.add_argument("--keep", action="store_true", help="keep logs, configs and images")
    args = p.parse_args()
    args.only = [x for x in args.only.split(",") if x]
    bad = [x for x in args.only if x not in CONFIGS]
    if bad:
        p.error(f"--only: unknown {', '.join(bad)} (choose from {', '.join(CONFIGS)})")
    if args.duration < 1 or not 0 <= args.set_percent <= 100:
        p.error("--duration must be >= 1 and --set-percent within 0..100")
    return args


def run_config(name, args, binary, criu):
    """One column: a fresh topology, the service started as NAME wants, fill, load, extras."""
    res = {"config": name}
    with rp.Topology() as topo:
        workdir = tempfile.mkdtemp(prefix=f"{name}-", dir=args.workdir or cs.run_dir("bench"))
        up = None
        if name in ("uffd", "hash"):
            try:
                certs = rp.make_certs(topo.addr[topo.b])
                up = rp.bring_up(topo, certs, binary, epoch_interval_ms=args.epoch_ms, dirty_tracking=name)
            except cs.TestError as e:
                raise Unavailable(f"checksync did not start replicating: {first_line(e)}")
            pid = up.service.pid
        else:
            extra = []
            if name == "savefile":
                extra = ["-savefile", os.path.join(workdir, "kv.gob"), "-save-interval-ms", str(args.save_ms)]
            pid = start_plain(topo, binary, extra, workdir)
        vip = cs.Client(topo.vip, rp.PORT, netns=topo.c)
        fill(topo, args, vip)
        loop = CriuLoop(criu, pid, workdir, args.criu_ms) if name == "criu" else None
        if loop:
            loop.start()
        try:
            res["wrk"] = run_wrk(topo, args, "mix", args.duration)
        finally:
            if loop:
                loop.stop()
        if loop:
            if not loop.pauses_ms:
                raise Unavailable(f"no CRIU dump succeeded: {loop.error}")
            res["pause_ms"] = loop.pauses_ms
            res["bytes"] = loop.bytes
            res["count"] = len(loop.pauses_ms)
            res["failures"] = loop.failures
        if name == "savefile":
            saves = vip.json("/saves")
            res["pause_ms"] = [us / 1000 for us in saves["us"]]
            res["bytes"] = [os.path.getsize(os.path.join(workdir, "kv.gob"))]
            res["count"], res["failures"] = saves["count"], saves["failures"]
        if up:
            st = up.primary.status_precise()
            res["status"] = {k: v for k, v in st.items()}
            res["count"] = st.get("epoch")
            res["failover_ms"] = failover(up)
    if args.workdir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def first_line(e, limit=400):
    """An error on one line (its lines joined with ' | '), cut at LIMIT characters."""
    text = " | ".join(l.strip() for l in str(e).strip().splitlines() if l.strip()) or repr(e)
    return text if len(text) <= limit else text[:limit] + " ..."


def start_plain(topo, binary, extra, workdir):
    """kvserver in A's network namespace only: nsenter, not `ip netns exec`, whose private
    mount namespace (for /sys) CRIU cannot dump ("Can't lookup mount ... for fd=0")."""
    logpath = os.path.join(workdir, "kvserver.log")
    with open(logpath, "wb") as logf:
        popen = subprocess.Popen(["nsenter", f"--net=/run/netns/{topo.a}", "--",
                                  binary, "-addr", f"0.0.0.0:{rp.PORT}", *extra],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # CRIU dumps session leaders only
    proc = cs.Proc(popen.pid, "kvserver (unprotected)", popen, logpath)
    cs.wait_serving(cs.Client(topo.vip, rp.PORT, netns=topo.c), proc)
    return proc.pid


def fill(topo, args, client):
    """Sets every key once (wrk with kv.lua's fill mode) until /state counts them."""
    for _ in range(20):
        run_wrk(topo, args, "fill", max(2, args.keys // 10000))
        if client.state(timeout=30)["items"] >= args.keys:
            return
    raise cs.TestError(f"fill: expected {args.keys} items, saw {client.state()['items']}")


def run_wrk(topo, args, mode, seconds):
    url = f"http://{topo.vip}:{rp.PORT}/"
    cmd = cs.netns_prefix(topo.c) + [
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


def failover(up):
    """SIGKILL primaryd and the service; ms until a request through the VIP succeeds from C
    (and is answered by a process in B)."""
    t = rp.kill_now(up.service, up.primary.proc)
    deadline = t + 60
    while time.monotonic() < deadline:
        try:
            with cs.in_netns(up.topo.c):
                c = http.client.HTTPConnection(up.topo.vip, rp.PORT, timeout=0.3)
                try:
                    c.request("GET", "/get?k=key0", headers={"Connection": "close"})
                    resp = c.getresponse()
                    body = resp.read()
                finally:
                    c.close()
            if resp.status == 200:
                ms = (time.monotonic() - t) * 1000
                pid = up.vip.state()["pid"]
                if not up.topo.in_netns(pid, up.topo.b):
                    raise cs.TestError(f"the answer after the kill came from pid {pid}, not from B")
                return ms
            raise cs.TestError(f"GET /get?k=key0 through the VIP after the takeover answered "
                               f"{resp.status} {body[:80]!r}")
        except (OSError, http.client.HTTPException):
            time.sleep(0.005)
    raise cs.TestError("no answer through the VIP within 60 s of killing host A's processes")


class CriuLoop(threading.Thread):
    """criu dump --leave-running of PID every INTERVAL ms (back to back if slower),
    into two alternating image dirs, from inside the target's network namespace."""

    def __init__(self, criu, pid, workdir, interval_ms):
        super().__init__(daemon=True)
        self.criu, self.pid, self.workdir = criu, pid, workdir
        self.interval = interval_ms / 1000
        self.pauses_ms, self.bytes, self.failures, self.error = [], [], 0, None
        self._stop_event = threading.Event()

    def run(self):
        n = 0
        while not self._stop_event.is_set():
            t0 = time.monotonic()
            image = os.path.join(self.workdir, f"criu-{n % 2}")
            shutil.rmtree(image, ignore_errors=True)
            os.makedirs(image)
            cmd = (["nsenter", "-t", str(self.pid), "-n", "--", self.criu.path, "dump", "-t",
                    str(self.pid), "-D", image, "--leave-running", "-o", "dump.log"]
                   + shlex.split(self.criu.args.criu_dump_opts))
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                stats = read_criu_stats(os.path.join(image, "stats-dump"))
                if "freezing_time" in stats and "frozen_time" in stats:
                    self.pauses_ms.append((stats["freezing_time"] + stats["frozen_time"]) / 1000)
                self.bytes.append(du(image)[0])
            else:
                self.failures += 1
                self.error = log_error(os.path.join(image, "dump.log")) or r.stderr.strip()[-200:]
                if not self.pauses_ms and self.failures >= 3:
                    return  # it does not work here; the column says why
            n += 1
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def stop(self):
        self._stop_event.set()
        self.join(180)


def log_error(path):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if "Error" in l or "error" in l]
        return " | ".join(lines[-2:])
    except OSError:
        return None


# ---------------------------------------------------------------- output

def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def cells(args, results, name):
    """{row label: text} for one column."""
    res = results[name]
    w = res["wrk"]
    base = results.get("unprotected", {}).get("wrk", {}).get("rps")
    c = {
        "throughput (req/s)": f"{w['rps']:.0f}",
        "vs unprotected": "-" if not base or name == "unprotected" else f"{(w['rps'] / base - 1) * 100:+.1f}%",
        "latency p50 (ms)": f"{w['lat_p50_us'] / 1000:.2f}",
        "latency p99 (ms)": f"{w['lat_p99_us'] / 1000:.2f}",
        "errors: socket / non-2xx": f"{w['connect_errors'] + w['read_errors'] + w['write_errors'] + w['timeouts']}"
                                    f" / {w['non2xx']}",
    }
    if name in ("uffd", "hash"):
        st = res.get("status", {})
        c["pause p50 / p99 (ms)"] = f"{fmt(st.get('pause_p50_ms'), '.2f')} / {fmt(st.get('pause_p99_ms'), '.2f')}"
        c["bytes per epoch / save / dump"] = fmt(st.get("bytes_per_epoch"), ",.0f")
        c["epochs / saves / dumps"] = fmt(res.get("count"), "")
        c["kill -9 A to first answer on B (ms)"] = fmt(res.get("failover_ms"), ".0f")
    elif name in ("savefile", "criu"):
        c["pause p50 / p99 (ms)"] = (f"{fmt(pct(res['pause_ms'], 50), '.2f')} / {fmt(pct(res['pause_ms'], 99), '.2f')}"
                                     + (" (lock)" if name == "savefile" else ""))
        c["bytes per epoch / save / dump"] = fmt(statistics.median(res["bytes"]) if res["bytes"] else None, ",.0f")
        c["epochs / saves / dumps"] = f"{res['count']}" + (f" ({res['failures']} failed)" if res["failures"] else "")
        c["kill -9 A to first answer on B (ms)"] = "n/a"
    return c


ROWS = ["throughput (req/s)", "vs unprotected", "latency p50 (ms)", "latency p99 (ms)",
        "errors: socket / non-2xx", "pause p50 / p99 (ms)", "bytes per epoch / save / dump",
        "epochs / saves / dumps", "kill -9 A to first answer on B (ms)"]


def fmt(v, spec):
    if v is None:
        return "n/a"
    return format(v, spec) if spec else str(v)


def print_table(args, results, unavailable):
    names = [n for n in args.only]
    table = {n: cells(args, results, n) for n in names if n in results}
    w0, w = 38, 22
    print()
    print("metric".ljust(w0) + "".join(n.ljust(w) for n in names).rstrip())
    print("-" * (w0 + w * len(names)))
    for row in ROWS:
        print(row.ljust(w0) + "".join((table[n].get(row, "-") if n in table else "-").ljust(w)
                                      for n in names).rstrip())
    print()
    print("pause: uffd/hash from primaryd's status (threads stopped per epoch); savefile: how long each "
          "SaveFile held the cache's lock (writers wait); criu: freezing + frozen time per dump.")
    for n in names:
        if n in unavailable:
            print(f"{n}: unavailable ({unavailable[n]})")


def progress(res):
    w = res["wrk"]
    extra = f", failover {res['failover_ms']:.0f} ms" if res.get("failover_ms") is not None else ""
    return f"{w['rps']:.0f} req/s, p99 {w['lat_p99_us'] / 1000:.1f} ms{extra}"


def machine(args, criu):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass

    def out(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not found"
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)), "go": out(["go", "version"]), "wrk": out(["wrk", "-v"]),
        "criu": criu.describe() + f", dump opts {args.criu_dump_opts}" if "criu" in args.only else "not measured",
        "checksync": f"{os.environ['CHECKSYNC_PRIMARYD']}, {os.environ['CHECKSYNC_BACKUPD']}",
        "workload": f"tests/workloads/kvserver (default cgo build), {args.keys} keys of {args.value_size} B",
        "load": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.set_percent}% /set, "
                f"from host C to the VIP in A",
        "protection": f"epoch {args.epoch_ms} ms; SaveFile every {args.save_ms} ms; CRIU dump every {args.criu_ms} ms",
    }


def print_header(meta):
    print("# failover_bench")
    for key, value in meta.items():
        print("# %-12s%s" % (key + ":", value))
    sys.stdout.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so cleanup runs
    sys.exit(main())
