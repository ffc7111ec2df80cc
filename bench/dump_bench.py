#!/usr/bin/env python3
"""dump_bench: CheckSync's one-shot dump and restore beside CRIU's, on one Go
workload process, in the same run.

Three tools ("columns") dump the same process and leave it running:
  checksync live   checksync-primaryd dump: only pages of live Go objects,
                   captured at a runtime safepoint (the default)
  checksync whole  checksync-primaryd dump --whole: every present anonymous page
  criu             criu dump --leave-running
The order rotates from run to run so that no tool always sees the warmer
process. The original is killed, and each image is restored in turn; the
restored process must pass the workload's check, else the run counts as a
failure for that tool. The restored process is killed before the next restore.

Workloads (--workload):
  heapmap  (tests/workloads/heapmap) a map of 1,000,000 entries and garbage
           churn. Before the dumps, GET /checksum on the original; a restored
           copy must answer the same checksum and length with bad == 0.
  churn    (tests/workloads/churn) allocates and drops 1 GiB, then keeps about
           50 MiB live. The dumps wait for phase "steady"; a restored copy must
           answer GET /check with ok and checked > 0. Just before and just
           after each dump the process's own in-use figure is read from GET
           /state (MemStats: HeapInuse + StackInuse + MSpanInuse +
           MCacheInuse + BuckHashSys + OtherSys); each image is set against
           the larger of the two, as tests/test_live.py does.

Measured per tool and run:
  dump wall        wall time of the dump command
  pause            CheckSync: report.json pause_us. CRIU: freezing_time +
                   frozen_time from the stats-dump file CRIU writes into the
                   image directory (the time from the first thread being
                   interrupted to the last one resumed)
  image            bytes of the image directory, apparent (du -sb) and
                   allocated on disk (du -s)
  restore cmd      wall time of the restore command
  restore serving  from starting the restore command to the first answer of
                   GET /state (cheap) from the restored process
  restore ready    from starting the restore command to the first correct
                   check answer of the restored process (the check walks all
                   live data, so it includes faulting the heap in)
  CheckSync also: the capture mode and safepoint retries from report.json.

Only the Python standard library is used. Run as root. CRIU is not part of
this repository: pass CRIU=/path/to/criu (version 4.1 or later), or have criu
on PATH. If it does not work here the table says "criu: unavailable (why)".
"""

import argparse
import collections
import ctypes
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import http.client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOPATH = "/usr/share/gocode"
CRIU_MIN = (4, 1)

DEFAULT_CRIU_DUMP_OPTS = "--tcp-close --skip-in-flight"
DEFAULT_CRIU_RESTORE_OPTS = "--tcp-close"

TOOLS = ("checksync live", "checksync whole", "criu")
ONLY = {"live": ["checksync live"], "whole": ["checksync whole"],
        "checksync": ["checksync live", "checksync whole"], "criu": ["criu"]}


class ToolError(Exception):
    """A tool failed in one run; the message says how."""


# ---------------------------------------------------------------- main flow


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("dump_bench: must run as root (ptrace, CRIU)")
    become_subreaper()
    workload = WORKLOADS[args.workload]()

    tools = [t for t in TOOLS if t in args.only]
    every = {"checksync live": CheckSync(args, []),
             "checksync whole": CheckSync(args, ["--whole"]),
             "criu": Criu(args)}
    unavailable = {}
    for t in tools:
        why = every[t].probe()
        if why:
            unavailable[t] = why
    adapters = {t: every[t] for t in tools if t not in unavailable}

    workdir = tempfile.mkdtemp(prefix="dump_bench.", dir=args.workdir)
    meta = machine_info(args, tools, every)
    meta["workdir"] = workdir
    print_header(meta)
    try:
        binary = build_workload(args, workdir)
        runs = []
        if adapters:
            for i in range(args.runs):
                runs.append(one_run(args, i, workload, adapters, binary,
                                    workdir))
                kill_strays()
                if not args.keep:
                    # Free the images now: each run then writes into memory
                    # the kernel has had before, not into ever more new pages.
                    shutil.rmtree(os.path.join(workdir, "run%d" % i),
                                  ignore_errors=True)
                print_progress(runs[-1], file=sys.stderr)
    finally:
        kill_strays()  # also on ^C: no workload or restored copy is left
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(runs, tools, unavailable)
    print_table(summary, tools, unavailable, runs, workload)
    print_failures(runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "unavailable": unavailable,
                       "runs": runs, "summary": summary}, f, indent=2)
            f.write("\n")
    failed = sum(1 for r in runs for t in adapters if not r[t].get("ok"))
    return 1 if failed or unavailable else 0


def parse_args():
    p = argparse.ArgumentParser(
        description="Benchmark CheckSync dump/restore (live and --whole) "
        "beside CRIU on one Go workload.")
    p.add_argument("--runs", type=int, default=5, help="runs (default 5)")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="heapmap",
                   help="workload to dump (default heapmap)")
    p.add_argument("--only", default=",".join(("live", "whole", "criu")),
                   metavar="TOOL[,TOOL]",
                   help="measure these only: live, whole, checksync (both), "
                   "criu (default all three)")
    p.add_argument("--static", action="store_true",
                   help="build the workload with CGO_ENABLED=0")
    p.add_argument("--json", metavar="FILE", help="write raw numbers here")
    p.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="seconds the workload runs between ready and dump")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="limit for each dump, restore, and readiness wait")
    p.add_argument("--workload-arg", action="append", default=[],
                   metavar="ARG", help="extra workload argument (repeatable), "
                   "e.g. --workload-arg=-n=2000000")
    p.add_argument("--workload-dir", help=argparse.SUPPRESS)  # development
    p.add_argument("--criu-dump-opts", default=DEFAULT_CRIU_DUMP_OPTS,
                   help="extra 'criu dump' options (default: %(default)s)")
    p.add_argument("--criu-restore-opts", default=DEFAULT_CRIU_RESTORE_OPTS,
                   help="extra 'criu restore' options (default: %(default)s)")
    p.add_argument("--workdir", default=None,
                   help="where the temporary directory goes (default $TMPDIR)")
    p.add_argument("--keep", action="store_true",
                   help="keep images, logs and the built workload")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    only = args.only.split(",")
    bad = [o for o in only if o not in ONLY]
    if bad:
        p.error("--only: unknown tool %s (choose from %s)"
                % (", ".join(bad), ", ".join(ONLY)))
    args.only = {t for o in only for t in ONLY[o]}
    if not args.workload_dir:
        args.workload_dir = os.path.join(REPO, "tests", "workloads",
                                         args.workload)
    return args


def one_run(args, index, workload, adapters, binary, workdir):
    """Dump one workload process with every tool, kill it, restore each
    image."""
    rundir = os.path.join(workdir, "run%d" % index)
    os.makedirs(rundir)
    port = free_port()
    order = list(adapters)
    order = order[index % len(order):] + order[:index % len(order)]
    run = {"run": index, "order": order, "port": port}
    for name in order:
        run[name] = {}

    proc = start_workload(binary, args.workload_arg, port, rundir)
    try:
        workload.wait_ready(port, args.timeout)
        time.sleep(args.settle)
        t0 = time.monotonic()
        pre = workload.baseline(port)
        run["check_query_ms"] = ms(time.monotonic() - t0)
        run["pre"] = pre
        run["pid"] = proc.pid
        run["threads"] = len(os.listdir("/proc/%d/task" % proc.pid))
        run["rss_kib"] = rss_kib(proc.pid)

        for name in order:
            res = run[name]
            image = os.path.join(rundir, slug(name) + "-image")
            os.makedirs(image)
            res["image"] = image
            try:
                before = workload.state(port)
                res.update(adapters[name].dump(proc.pid, image))
                res["image_bytes_du_sb"], res["image_bytes_du_s"] = du(image)
                if before:  # as tests/test_live.py: the larger of the two
                    res["states"] = [before, workload.state(port)]
                    used = max(in_use(st) for st in res["states"])
                    res["in_use_mib"] = used / 1048576
                    res["in_use_ratio"] = res["image_bytes_du_sb"] / used
            except ToolError as e:
                res["error"] = "dump: %s" % e
            if proc.poll() is not None:
                res.setdefault("error", "original exited during dump (rc %s)"
                               % proc.returncode)
                for other in order[order.index(name) + 1:]:
                    run[other]["error"] = "not dumped: original had exited"
                break
        run["original_alive_after_dumps"] = proc.poll() is None
    finally:
        kill_and_reap(proc.pid, proc)

    for name in order:
        res = run[name]
        if "error" in res:
            res["ok"] = False
            continue
        try:
            restore_and_check(args, workload, adapters[name], res, port, pre)
            res["ok"] = True
        except ToolError as e:
            res["error"] = "restore: %s" % e
            res["ok"] = False
    return run


def restore_and_check(args, workload, adapter, res, port, pre):
    """Restore res['image'], time it, run the workload's check, kill the
    copy."""
    t0 = time.monotonic()
    pid = None
    path = workload.check_path
    try:
        pid = adapter.restore(res["image"])
        res["restore_cmd_ms"] = ms(time.monotonic() - t0)
        deadline = t0 + args.timeout
        while True:  # first any answer: the copy serves again
            try:
                get_json(port, "/state")
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                if not pid_alive(pid):
                    raise ToolError("restored pid %d died before serving"
                                    % pid)
                if time.monotonic() > deadline:
                    raise ToolError("no /state answer within %gs: %s"
                                    % (args.timeout, e))
                time.sleep(0.002)
        res["restore_serving_ms"] = ms(time.monotonic() - t0)
        last = None
        while True:
            try:
                last = get_json(port, path)
            except (OSError, ValueError, http.client.HTTPException) as e:
                last = "no answer (%s)" % e
            if workload.correct(last, pre):
                break
            if isinstance(last, dict):  # an answer, and a wrong one: final
                raise ToolError("wrong %s: %s, expected %s"
                                % (path, json.dumps(last), json.dumps(pre)))
            if not pid_alive(pid):
                raise ToolError("restored pid %d died; last answer: %s"
                                % (pid, last))
            if time.monotonic() > deadline:
                raise ToolError("no correct %s within %gs; last: %s"
                                % (path, args.timeout, last))
            time.sleep(0.005)
        res["restore_ready_ms"] = ms(time.monotonic() - t0)
        res["restored_pid"] = pid
    finally:
        if pid:
            kill_and_reap(pid)
        kill_strays()


# ---------------------------------------------------------------- workloads


class Heapmap:
    """A faithful copy answers GET /checksum as the original did."""
    check_path = "/checksum"

    def wait_ready(self, port, timeout):
        wait_for(lambda: get_json(port, "/checksum"), timeout,
                 "workload did not serve /checksum")

    def baseline(self, port):
        pre = get_json(port, "/checksum")
        if not isinstance(pre, dict) or "checksum" not in pre:
            sys.exit("dump_bench: /checksum answered %r, expected an object "
                     "with a checksum" % (pre,))
        return pre

    def correct(self, answer, pre):
        return (isinstance(answer, dict)
                and answer.get("checksum") == pre.get("checksum")
                and answer.get("len") == pre.get("len")
                and answer.get("bad", 0) == 0)

    def state(self, port):
        return None  # heapmap's /state has no MemStats


class Churn:
    """A faithful copy answers GET /check with ok and checked > 0."""
    check_path = "/check"

    def wait_ready(self, port, timeout):
        def steady():
            phase = get_json(port, "/state").get("phase")
            if phase != "steady":
                raise ValueError("phase %r" % phase)
        wait_for(steady, timeout, "churn did not reach phase steady")

    def baseline(self, port):
        pre = get_json(port, "/check")
        if not self.correct(pre, None):
            sys.exit("dump_bench: /check on the original answered %r" % (pre,))
        return pre

    def correct(self, answer, pre):
        return (isinstance(answer, dict) and answer.get("ok") is True
                and answer.get("checked", 0) > 0)

    def state(self, port):
        try:
            return get_json(port, "/state")
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise ToolError("GET /state: %s" % e)


WORKLOADS = {"heapmap": Heapmap, "churn": Churn}
IN_USE = ("heap_inuse", "stack_inuse", "mspan_inuse", "mcache_inuse",
          "buckhash_sys", "other_sys")


def in_use(state):
    """Bytes the Go process itself reports in use (runtime.MemStats)."""
    return sum(state[k] for k in IN_USE)


# ---------------------------------------------------------------- tools


class CheckSync:
    """checksync-primaryd dump [--whole] / checksync-backupd restore."""

    def __init__(self, args, dump_opts):
        self.args = args
        self.dump_opts = dump_opts
        self.primaryd = os.environ.get("CHECKSYNC_PRIMARYD") or os.path.join(
            REPO, "build", "primaryd", "checksync-primaryd")
        self.backupd = os.environ.get("CHECKSYNC_BACKUPD") or os.path.join(
            REPO, "build", "backupd", "checksync-backupd")

    def probe(self):
        for path in (self.primaryd, self.backupd):
            if not os.access(path, os.X_OK):
                return "not executable: %s" % path
        return None

    def describe(self):
        return "%s, %s" % (self.primaryd, self.backupd)

    def dump(self, pid, image):
        cmd = ([self.primaryd, "dump", "--pid", str(pid), "--image", image]
               + self.dump_opts)
        wall = run_timed(cmd, self.args.timeout, image + "-dump.log")
        try:
            with open(os.path.join(image, "report.json")) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            raise ToolError("report.json: %s" % e)
        out = {"dump_ms": ms(wall), "report": report,
               "mode": report.get("mode")}
        if out["mode"] in ("live", "whole (no safepoint)"):  # it tried
            out["safepoint_tries"] = report.get("safepoint_tries")
        if isinstance(report.get("pause_us"), (int, float)):
            out["pause_ms"] = report["pause_us"] / 1000.0
        return out

    def restore(self, image):
        cmd = [self.backupd, "restore", "--image", image]
        stdout = run_cmd(cmd, self.args.timeout, image + "-restore.log")
        first = stdout.splitlines()[0].strip() if stdout.strip() else ""
        if not first.isdigit():
            raise ToolError("first stdout line is not a pid: %r" % first)
        return int(first)


class Criu:
    """criu dump --leave-running / criu restore -d."""

    def __init__(self, args):
        self.args = args
        self.path = os.environ.get("CRIU") or shutil.which("criu")
        self.version = None

    def probe(self):
        if not self.path:
            return "no criu on PATH and CRIU= not set"
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True,
                                 text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "%s: %s" % (self.path, e)
        m = re.search(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?", out.stdout)
        if not m:
            return "%s --version: unrecognised output %r" % (
                self.path, (out.stdout + out.stderr).strip()[:80])
        self.version = ".".join(x for x in m.groups() if x is not None)
        if (int(m.group(1)), int(m.group(2))) < CRIU_MIN:
            return "%s is version %s, need >= %d.%d" % (
                self.path, self.version, *CRIU_MIN)
        try:
            chk = subprocess.run([self.path, "check"], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "'criu check': %s" % e
        if chk.returncode != 0:
            lines = (chk.stdout + chk.stderr).strip().splitlines()
            return "'criu check' failed: %s" % (lines[-1] if lines else
                                                "rc %d" % chk.returncode)
        return None

    def describe(self):
        if not self.path:
            return "not found"
        return "%s (version %s)" % (self.path, self.version or "?")

    def dump(self, pid, image):
        log = image + "-dump.log"
        cmd = ([self.path, "dump", "-t", str(pid), "-D", image,
                "--leave-running", "-o", log]
               + shlex.split(self.args.criu_dump_opts))
        wall = run_timed(cmd, self.args.timeout, log + ".out", log)
        out = {"dump_ms": ms(wall)}
        stats = read_criu_stats(os.path.join(image, "stats-dump"))
        out["stats"] = stats
        if "freezing_time" in stats and "frozen_time" in stats:
            out["pause_ms"] = (stats["freezing_time"]
                               + stats["frozen_time"]) / 1000.0
            out["frozen_ms"] = stats["frozen_time"] / 1000.0
        return out

    def restore(self, image):
        log = image + "-restore.log"
        pidfile = image + "-restore.pid"
        if os.path.exists(pidfile):
            os.unlink(pidfile)  # criu will not overwrite it
        cmd = ([self.path, "restore", "-D", image, "-d", "-o", log,
                "--pidfile", pidfile]
               + shlex.split(self.args.criu_restore_opts))
        run_cmd(cmd, self.args.timeout, log + ".out", log)
        try:
            with open(pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError) as e:
            raise ToolError("pidfile: %s" % e)


# DumpStatsEntry field numbers, from CRIU's images/stats.proto.
CRIU_DUMP_STATS = {1: "freezing_time", 2: "frozen_time", 3: "memdump_time",
                   4: "memwrite_time", 5: "pages_scanned",
                   6: "pages_skipped_parent", 7: "pages_written",
                   8: "irmap_resolve", 9: "pages_lazy", 10: "page_pipes",
                   11: "page_pipe_bufs", 12: "shpages_scanned",
                   13: "shpages_skipped_parent", 14: "shpages_written"}
CRIU_SERVICE_MAGIC = 0x55105940
CRIU_STATS_MAGIC = 0x57093306


def read_criu_stats(path):
    """Decode CRIU's stats-dump: two u32 magics, a u32 length, then a
    protobuf stats_entry whose field 1 is dump_stats_entry (all varints).
    Returns {} when the file is missing or not understood."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        magic, kind, size = struct.unpack_from("<III", data, 0)
        if magic != CRIU_SERVICE_MAGIC or kind != CRIU_STATS_MAGIC:
            return {}
        for field, value in protobuf_fields(data[12:12 + size]):
            if field == 1 and isinstance(value, bytes):
                return {CRIU_DUMP_STATS.get(f, "field%d" % f): v
                        for f, v in protobuf_fields(value)}
    except (OSError, struct.error, ValueError):
        pass
    return {}


def protobuf_fields(buf):
    """Yield (field number, value) of a protobuf message: ints for varints,
    bytes for length-delimited fields. Other wire types stop the walk."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = bytes(buf[pos:pos + n]), pos + n
        else:
            raise ValueError("wire type %d" % wire)
        yield field, value


def varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


# ---------------------------------------------------------------- processes


def become_subreaper():
    """Restored processes lose their parent (criu -d, backupd) and would go
    to init, which here reaps slowly; as subreaper we reap them at once, so
    the original pid is free again for CRIU's restore."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_strays():
    """Kill and reap every child we have. Called when none of ours should be
    alive: a restore that failed half-way may have left a copy behind (handed
    to us as subreaper), which would hold the port or the pid the next
    restore needs."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as f:
                ppid = next((l.split()[1] for l in f if l.startswith("PPid:")),
                            None)
        except OSError:
            continue
        if ppid == me:
            kill_and_reap(int(entry))
    reap_orphans()


def reap_orphans():
    """Reap any zombie handed to us as subreaper (none of ours is alive)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def build_workload(args, workdir):
    out = os.path.join(workdir, args.workload)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH)
    if args.static:
        env["CGO_ENABLED"] = "0"
    r = subprocess.run(["go", "build", "-o", out, "."], cwd=args.workload_dir,
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("dump_bench: building %s failed:\n%s"
                 % (args.workload_dir, r.stderr))
    return out


def start_workload(binary, extra, port, rundir):
    """Start the workload in its own session, stdio on /dev/null and a log
    file, no other inherited fds: nothing ties it to this script's terminal."""
    log = open(os.path.join(rundir, os.path.basename(binary) + ".log"), "ab")
    try:
        return subprocess.Popen(
            [binary, "-addr", "127.0.0.1:%d" % port] + list(extra),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    finally:
        log.close()


def kill_and_reap(pid, popen=None):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if popen is not None:
        popen.wait()
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:  # not ours: wait for someone to reap it
            if not os.path.exists("/proc/%d" % pid):
                return
        time.sleep(0.01)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_cmd(cmd, timeout, outlog, toollog=None):
    """Run cmd; return its stdout. stderr goes to outlog. Raise ToolError
    with the last lines of stderr (or of the tool's own log) on failure."""
    with open(outlog, "w") as err:
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err,
                               stdin=subprocess.DEVNULL, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ToolError("timed out after %gs: %s" % (timeout, " ".join(cmd)))
        except OSError as e:
            raise ToolError("%s: %s" % (cmd[0], e))
    if r.returncode != 0:
        raise ToolError("rc %d: %s" % (r.returncode,
                                       tail(toollog, outlog) or " ".join(cmd)))
    return r.stdout


def run_timed(cmd, timeout, outlog, toollog=None):
    t0 = time.monotonic()
    run_cmd(cmd, timeout, outlog, toollog)
    return time.monotonic() - t0


def tail(*paths):
    for path in paths:
        if not path:
            continue
        try:
            with open(path, errors="replace") as f:
                lines = [l.strip() for l in f if l.strip()]
        except OSError:
            continue
        # CRIU always logs the RLIMIT_NOFILE error here (no CAP_SYS_RESOURCE).
        lines = [l for l in lines if "RLIMIT_NOFILE" not in l]
        errors = [l for l in lines if re.search(r"error|fail", l, re.I)]
        if errors or lines:
            return " | ".join((errors or lines)[-2:])
    return ""


# ---------------------------------------------------------------- HTTP


def get_json(port, path, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise ValueError("HTTP %d" % r.status)
        return json.loads(body)
    finally:
        c.close()


def wait_for(fn, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OSError, ValueError, http.client.HTTPException):
            if time.monotonic() > deadline:
                sys.exit("dump_bench: %s within %gs" % (what, timeout))
            time.sleep(0.02)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- numbers


def ms(seconds):
    return seconds * 1000.0


def slug(name):
    return name.replace(" ", "-")


def du(path):
    """(apparent bytes as du -sb, allocated bytes as du -s) of a tree."""
    apparent = allocated = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    st = os.lstat(path)
    return apparent + st.st_size, allocated + st.st_blocks * 512


METRICS = [  # key in a tool's result, label, scale, format
    ("image_bytes_du_sb", "image (MiB, du -sb)", 1 / 1048576, "%.1f"),
    ("image_bytes_du_s", "image on disk (MiB, du -s)", 1 / 1048576, "%.1f"),
    ("in_use_mib", "process in use at dump (MiB)", 1, "%.1f"),
    ("in_use_ratio", "image / process in use", 1, "%.2f"),
    ("dump_ms", "dump wall (ms)", 1, "%.1f"),
    ("pause_ms", "pause, threads stopped (ms)", 1, "%.2f"),
    ("frozen_ms", "  criu frozen_time only (ms)", 1, "%.2f"),
    ("restore_cmd_ms", "restore command wall (ms)", 1, "%.1f"),
    ("restore_serving_ms", "restore to first /state answer (ms)", 1, "%.1f"),
    ("restore_ready_ms", "restore to correct {check} (ms)", 1, "%.1f"),
    ("safepoint_tries", "safepoint retries", 1, "%g"),
]
RUN_FACTS = [  # key in a run, label, format
    ("threads", "workload threads at dump", "%.0f"),
    ("rss_kib", "workload RSS at dump (KiB)", "%.0f"),
    ("check_query_ms", "{check} on the original (ms)", "%.1f"),
]


def stat(vals):
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals),
            "max": max(vals), "n": len(vals)}


def summarize(runs, tools, unavailable):
    summary = {}
    for tool in tools:
        if tool in unavailable:
            continue
        ok = [r[tool] for r in runs if r[tool].get("ok")]
        modes = collections.Counter(r[tool]["mode"] for r in runs
                                    if r[tool].get("mode"))
        s = {"runs": len(runs), "ok": len(ok), "modes": dict(modes)}
        for key, _, scale, _ in METRICS:
            st = stat([res[key] * scale for res in ok
                       if isinstance(res.get(key), (int, float))])
            if st:
                s[key] = st
        summary[tool] = s
    for key, _, _ in RUN_FACTS:
        st = stat([r[key] for r in runs if isinstance(r.get(key),
                                                      (int, float))])
        if st:
            summary[key] = st
    return summary


def cell(st, fmt):
    if not st:
        return "n/a"
    return "%s [%s..%s]" % (fmt % st["median"], fmt % st["min"],
                            fmt % st["max"])


def print_table(summary, tools, unavailable, runs, workload):
    nruns = len(runs)
    w0, w = 38, 28

    def row(label, cells):
        print(label.format(check=workload.check_path).ljust(w0)
              + "".join(c.ljust(w - 1) + " " for c in cells).rstrip())

    measured = [t for t in tools if t not in unavailable]
    print()
    row("metric: median [min..max]", tools)
    print("-" * (w0 + w * len(tools)))
    for key, label, _, fmt in METRICS:
        if any(key in r[t] for r in runs for t in measured):  # else n/a here
            row(label, ["-" if t in unavailable else
                        cell(summary[t].get(key), fmt) for t in tools])
    modes = sorted({m for t in measured for m in summary[t]["modes"]})
    for mode in modes:  # one row per capture mode seen: dumps that ended so
        row("capture mode: " + mode,
            ["-" if t in unavailable else "n/a" if not summary[t]["modes"]
             else "%d/%d" % (summary[t]["modes"].get(mode, 0), nruns)
             for t in tools])
    row("runs correct / runs",
        ["-" if t in unavailable else "%d/%d" % (summary[t]["ok"], nruns)
         for t in tools])
    print()
    for key, label, fmt in RUN_FACTS:
        if key in summary:
            row(label, [cell(summary[key], fmt)])
    for t in tools:
        if t in unavailable:
            print("%s: unavailable (%s)" % (t, unavailable[t]))
        elif nruns and summary[t]["ok"] == 0:
            print("%s: unavailable (no run succeeded; run 0: %s)"
                  % (t, runs[0][t].get("error", "?")))


def print_failures(runs):
    for r in runs:
        for t in TOOLS:
            if t in r and r[t].get("error"):
                print("run %d %s: FAILED %s" % (r["run"], t, r[t]["error"]))


def print_progress(run, file):
    parts = []
    for t in run["order"]:
        res = run[t]
        if res.get("ok"):
            parts.append("%s%s dump %.0f ms pause %s restore-ready %.0f ms"
                         % (t, " (%s)" % res["mode"] if "mode" in res else "",
                            res["dump_ms"],
                            "%.1f ms" % res["pause_ms"] if "pause_ms" in res
                            else "n/a", res["restore_ready_ms"]))
        else:
            parts.append("%s FAILED (%s)" % (t, res.get("error")))
    print("run %d: %s" % (run["run"], "; ".join(parts)), file=file, flush=True)


# ---------------------------------------------------------------- machine


def machine_info(args, tools, every):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        go = subprocess.run(["go", "version"], capture_output=True,
                            text=True).stdout.strip()
    except OSError:
        go = "not found"
    criu = "criu" in tools
    checksync = any(t.startswith("checksync") for t in tools)
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc)
                .strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "go": go,
        "criu": every["criu"].describe() if criu else "not measured",
        "criu_dump_opts": args.criu_dump_opts if criu else None,
        "criu_restore_opts": args.criu_restore_opts if criu else None,
        "checksync": (every["checksync live"].describe() if checksync
                      else "not measured"),
        "tools": ", ".join(tools),
        "workload": ("%s (%s build) %s" % (
            os.path.relpath(args.workload_dir, REPO),
            "static CGO_ENABLED=0" if args.static else "default cgo",
            " ".join(args.workload_arg))).rstrip(),
        "runs": args.runs,
        "settle_s": args.settle,
    }


def print_header(meta):
    print("# dump_bench")
    for key in ("command", "date", "host", "kernel", "cpu", "nproc", "go",
                "criu", "criu_dump_opts", "criu_restore_opts", "checksync",
                "tools", "workload", "runs", "settle_s"):
        if meta.get(key) is not None:
            print("# %-19s%s" % (key + ":", meta[key]))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
