#!/usr/bin/env python3
"""Clocks carry on: a process dumped in one time namespace and restored in another
keeps its timers, tickers and time.Since.

Usage: test_clocks.py [SCENARIO...]   (default: all)

  from-ahead     dumped inside a time namespace 100000 s ahead of the host
                 (util-linux `unshare --time --monotonic S --boottime S --fork`),
                 restored outside it
  from-behind    dumped inside one behind the host (as far as the host's uptime
                 allows: a clock cannot go below 0), restored outside it
  to-ahead       dumped outside, restored by a restorer that runs inside a
                 namespace 100000 s ahead
  to-behind      the same, behind
  twice          dumped ahead, restored outside, then that restored process
                 (running in the time namespace the restore made for it) dumped
                 and restored again

Each checks, with the tickers workload (tickers on 5-20 ms periods and a 10 ms
re-armed timer): the restored process's 20 ms ticker and timer fires go on
at their cadence: at least 90% of the rate measured before the dump, and at
most 110% of what their period allows (a loaded machine only ever makes them
slower; a clock that stopped or jumped shows as 0, or as a burst), and its
time.Since of its
start-up, an event before the dump, moved on by the real time the dump and
restore took, not by the namespace offset (within 0.5 s).
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

AHEAD = 100000
# The 20 ms ticker (tickers' counter 3) and the re-armed 10 ms timer, per second. The
# 5 ms ticker would measure the loaded scheduler more than the clock: a tick
# is lost whenever its goroutine waits more than one period to run.
TICKER = 3
NOMINAL = (50.0, 100.0)
RATE_WINDOW = 2.0   # seconds over which a rate is measured
RATE_TOLERANCE = 0.10
SINCE_TOLERANCE = 0.5


def behind():
    """The largest offset behind the host a time namespace can have here, at most AHEAD."""
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return -min(AHEAD, int(uptime) - 60)


def in_timens(offset):
    return ["unshare", "--time", "--monotonic", str(offset), "--boottime", str(offset), "--fork"]


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def start_tickers(binary, offset):
    """Starts tickers in a time namespace OFFSET s from the host (0: none); returns Workload."""
    port = cs.free_port()
    logpath = os.path.join(cs.run_dir("log"), "tickers.log")
    prefix = in_timens(offset) if offset else []
    with open(logpath, "wb") as logf:
        popen = subprocess.Popen(prefix + [binary, "-addr", f"127.0.0.1:{port}"],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    outer = cs.Proc(popen.pid, "unshare" if offset else "tickers", popen, logpath)
    pid = popen.pid
    if offset:
        deadline = time.monotonic() + 10
        while not children(popen.pid):
            if time.monotonic() > deadline or popen.poll() is not None:
                raise cs.TestError(f"unshare (pid {popen.pid}) started no child")
            time.sleep(0.01)
        pid = children(popen.pid)[0]
    proc = cs.Proc(pid, f"tickers in a time namespace {offset:+d} s" if offset else "tickers",
                   log=logpath) if offset else outer
    client = cs.Client("127.0.0.1", port)
    state = cs.wait_serving(client, proc)
    if state["pid"] != proc.pid:
        raise cs.TestError(f"tickers answers pid {state['pid']}, expected {proc.pid}")
    return cs.Workload("tickers", proc, client), outer


def restore(image, offset, what):
    """checksync-backupd restore, run inside a time namespace OFFSET s from the host (0: none)."""
    prefix = in_timens(offset) if offset else []
    r = cs.run_engine(prefix + [cs.backupd(), "restore", "--image", image])
    if r.rc != 0:
        raise cs.TestError(f"restore of {image} failed: exit {r.rc}, stderr: {r.stderr.strip()}")
    first = r.stdout.splitlines()[0].strip() if r.stdout.strip() else ""
    if not first.isdigit():
        raise cs.TestError(f"restore printed {first!r} first, expected a pid")
    return cs.Proc(int(first), what)


def rates(client):
    """(ticker TICKER per s, timer fires per s) over RATE_WINDOW, and the last state."""
    a = client.state()
    t0 = time.monotonic()
    time.sleep(RATE_WINDOW)
    b = client.state()
    dt = time.monotonic() - t0
    return ((b["counters"][TICKER] - a["counters"][TICKER]) / dt,
            (b["timer_fires"] - a["timer_fires"]) / dt), b


def own_monotonic(pid):
    """The monotonic offset (s) of PID's time namespace, from /proc/PID/timens_offsets."""
    with open(f"/proc/{pid}/timens_offsets") as f:
        for line in f:
            name, sec, _ = line.split()
            if name == "monotonic":
                return int(sec)
    return 0


def round_trip(r, tag, w, restore_offset):
    """Dump W, kill it, restore it (the restorer RESTORE_OFFSET s from the host), check the
    clocks carried on. Returns the restored process and its client."""
    (tick_before, timer_before), _ = rates(w.client)
    cs.log(f"{tag}: before the dump: 20 ms ticker {tick_before:.1f}/s, timer {timer_before:.1f}/s")
    r.require(f"{tag}: before the dump the ticker and the timer fire", tick_before > 10 and timer_before > 10,
              "> 10/s each", f"{tick_before:.1f}/s, {timer_before:.1f}/s")
    image = os.path.join(cs.run_dir(f"clocks-{tag}"), "image")
    pre = w.client.state()
    t_pre = time.monotonic()
    cs.dump(w.pid, image)
    w.proc.kill9()
    restored = restore(image, restore_offset, f"tickers restored ({tag})")
    post = cs.wait_serving(w.client, restored)
    t_post = time.monotonic()
    r.check(f"{tag}: the restored process is the dumped one", post["instance"] == pre["instance"],
            pre["instance"], post["instance"])

    since_moved = (post["since_start_ns"] - pre["since_start_ns"]) / 1e9
    real = t_post - t_pre
    r.check(f"{tag}: time.Since(start-up) moved by the real time dump and restore took "
            f"({real:.2f} s, within {SINCE_TOLERANCE} s), not by a namespace offset",
            abs(since_moved - real) <= SINCE_TOLERANCE, f"{real:.2f} s", f"{since_moved:.2f} s")

    (tick_after, timer_after), last = rates(w.client)
    cs.log(f"{tag}: after the restore: 20 ms ticker {tick_after:.1f}/s, timer {timer_after:.1f}/s")
    for what, before, after, nominal in (("20 ms ticker", tick_before, tick_after, NOMINAL[0]),
                                         ("10 ms timer", timer_before, timer_after, NOMINAL[1])):
        low, high = (1 - RATE_TOLERANCE) * before, (1 + RATE_TOLERANCE) * nominal
        r.check(f"{tag}: {what} keeps its cadence after the restore (within {RATE_TOLERANCE:.0%}: "
                f"no slower than before the dump, no faster than its period)",
                low <= after <= high, f"{low:.0f}..{high:.0f}/s", f"{after:.0f}/s")
    r.check(f"{tag}: every ticker counter advanced after the restore",
            all(a > b for a, b in zip(last["counters"], post["counters"])), f"> {post['counters']}",
            last["counters"])
    r.check(f"{tag}: the pipeline invariant holds", last["ok"], "ok", last)
    return cs.Workload("tickers", restored, w.client)


def scenario(r, name, binary):
    dump_offset, restore_offset = {
        "from-ahead": (AHEAD, 0), "from-behind": (behind(), 0),
        "to-ahead": (0, AHEAD), "to-behind": (0, behind()), "twice": (AHEAD, 0)}[name]
    cs.log(f"scenario {name}: dumped {dump_offset:+d} s from the host, restorer {restore_offset:+d} s")
    w, outer = start_tickers(binary, dump_offset)
    r.require(f"{name}: the workload runs {dump_offset:+d} s from the host",
              own_monotonic(w.pid) == dump_offset, dump_offset, own_monotonic(w.pid))
    time.sleep(0.5)
    w = round_trip(r, name, w, restore_offset)
    if name == "twice":
        cs.log(f"twice: the restored process runs {own_monotonic(w.pid):+d} s from the host")
        w = round_trip(r, "twice (second)", w, restore_offset)
    w.proc.kill9()
    if outer.alive():
        outer.kill9()


SCENARIOS = ("from-ahead", "from-behind", "to-ahead", "to-behind", "twice")


def main(r, *names):
    names = names or SCENARIOS
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise cs.TestError(f"unknown scenario(s) {unknown}, expected some of {list(SCENARIOS)}")
    binary = cs.build_workload("tickers", "cgo")
    for name in names:
        scenario(r, name, binary)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cs.run(main, *sys.argv[1:])
