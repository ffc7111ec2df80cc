#!/usr/bin/env python3
"""Sub-page deltas keep the backup's image exact: after 200 delta epochs under
load, the backup's image equals a whole capture of the same stopped process on
every live page.

kvserver (cgo) under checksync-primaryd with the default deltas (a 64 MiB
last-shipped cache, zstd), backupd in B. wrk in C runs the paper's mix (50%
/set, 50% /get of random keys, 100-byte values) until at least 200 epochs with
a base (deltas) have been shipped and acknowledged; meanwhile a dump of the
running service every 0.3 s (DELTA_FULL_EVERY_S) makes some epochs full ones,
which rebuild the backup's image from one capture. Then the load stops, the
service is pinned to one CPU and stopped with SIGSTOP (so its memory no longer
changes; see pin_to_one_cpu), and once two more delta epochs are acknowledged
(the last state is at the backup):
  - the backup's journal files are linked aside (backupd held a moment with
    SIGSTOP), so that the image compared is the one the deltas built (the
    dump makes primaryd's next epoch a full one, which would rebuild the
    image from the stopped memory and hide what the deltas lost);
  - `checksync-primaryd dump` takes a live capture of the stopped process;
  - that journal is loaded the way the backup loads it at start (every
    epoch replayed and verified; backupd/tests/warm_vs_dump.c);
  - every page of the dump must be in the backup's image with the same bytes,
    and the dump's page runs must ascend by address.
Also checked: the epochs really were deltas (primaryd's delta counters show
pages shipped as runs or blocks, and fewer bytes on the wire than the pages
they stand for), and no epoch was refused or torn on the way.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

REPO = os.environ.get("CHECKSYNC_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(REPO, "bench", "kv.lua")
DELTA_EPOCHS = int(os.environ.get("DELTA_EPOCHS", "200"))
# A dump of the running service this often during the load makes primaryd's next epoch a full
# one (its capture finds the service traced, EPERM): full epochs are where the backup's image
# is rebuilt from one capture alone. 0: none.
FULL_EVERY_S = float(os.environ.get("DELTA_FULL_EVERY_S", "0.3"))
KEYS = {"delta_cache_mb": os.environ["DELTA_CACHE_MB"]} if os.environ.get("DELTA_CACHE_MB") else {}


def rows(daemon):
    return {n: v for _, _, n, _, v in rp.status_socket_rows(daemon.socket)}


def wrk(topo, seconds):
    cmd = cs.netns_prefix(topo.c) + ["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", LUA,
                                     f"http://{topo.vip}:{rp.PORT}/", "--", "mix", "20000", "100", "50", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)


def wait_epochs_acked(primary, more, timeout=30):
    """Waits until MORE further epochs are sent and the last one sent is acknowledged."""
    start = rows(primary)["epoch"]

    def done():
        r = rows(primary)
        if r["epoch"] >= start + more and r["acked_epoch"] == r["epoch"]:
            return r
        raise cs.TestError(f"epoch {r['epoch']}, acked {r['acked_epoch']} (from {start}, want +{more})")
    return rp.wait_for(f"{more} more epochs acknowledged", done, timeout, 0.05)


def live_dump(pid, image):
    """A live capture of the stopped service. One try: its memory is what the backup's
    last epochs hold only while nothing lets its threads run, and a dump that found no
    safepoint would have (it lets them run a moment and stops them again). Its last
    epochs found one (they were live), and a stopped process stays there."""
    for attempt in range(50):
        try:
            report = cs.dump(pid, image)
            break
        except cs.TestError as e:
            # primaryd is in an epoch's capture (EPERM: the service is traced); that
            # capture does not let it run.
            if "Operation not permitted" not in str(e) or attempt == 49:
                raise
            time.sleep(0.05)
    if report.get("mode") != "live":
        raise cs.TestError(f"the dump of the stopped service found no safepoint (mode "
                           f"{report.get('mode')}), although its last epochs did")
    return report


def force_full_epochs(pid, stop):
    """Dumps the running service every FULL_EVERY_S until STOP: each dump that overlaps an
    epoch makes primaryd's capture fail (the service is traced) and its next epoch full."""
    n = 0
    while not stop.wait(FULL_EVERY_S):
        try:
            cs.dump(pid, os.path.join(cs.run_dir("force"), "dump"))
            n += 1
        except cs.TestError:
            pass
    cs.log(f"{n} dumps during the load")


def pin_to_one_cpu(pid):
    """Each capture makes the stopped threads return to user mode for a moment (injected
    syscalls), and the kernel then rewrites their rseq areas (cpu_id, mm_cid) if they moved
    to another CPU: on one CPU those fields stay the same from the dump to the last epoch."""
    cpu = min(os.sched_getaffinity(pid))
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:
            pass


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, **KEYS)
        start = rows(up.primary)
        deadline = time.monotonic() + 240
        stop_dumps = threading.Event()
        dumper = None
        if FULL_EVERY_S:
            dumper = threading.Thread(target=force_full_epochs, args=(up.service.pid, stop_dumps), daemon=True)
            dumper.start()
        while time.monotonic() < deadline:
            w = wrk(topo, 10)
            r.require("wrk ran", w.returncode == 0, "exit 0", (w.stderr or w.stdout)[-300:])
            now = rows(up.primary)
            if now["epochs_sent"] - start["epochs_sent"] >= DELTA_EPOCHS + 5:
                break
        stop_dumps.set()
        if dumper:
            dumper.join()
        p = rows(up.primary)
        shipped = p["epochs_sent"] - start["epochs_sent"]
        r.require(f"at least {DELTA_EPOCHS} delta epochs shipped under load", shipped >= DELTA_EPOCHS,
                  f">= {DELTA_EPOCHS}", shipped)

        # Freeze the service's memory: stop it, let two more epochs carry its last writes.
        cs.Client(topo.addr[topo.a], rp.PORT, netns=topo.c).get("/gc", timeout=10)
        pid = up.service.pid
        pin_to_one_cpu(pid)
        time.sleep(0.3)
        os.kill(pid, signal.SIGSTOP)
        try:
            final = wait_epochs_acked(up.primary, 2)
            b = rows(up.backup)
            # The backup's journal as it is now: an image built by deltas since the last
            # full epoch. The dump below makes primaryd's next epoch a full one (its
            # capture finds the service traced), which would rebuild the image from this
            # same stopped memory and hide any page the deltas lost.
            journal = snapshot_journal(up)
            after = rows(up.primary)
            image = os.path.join(cs.run_dir("delta"), "dump")
            report = live_dump(pid, image)
            cs.log(f"live dump: {report['pages']} pages")
            delta_cmp = compare(journal, image)
        finally:
            os.kill(pid, signal.SIGCONT)

        r.check("no epoch was torn at the backup", b.get("torn_epochs_total", b.get("torn_epochs")) == 0, 0,
                b.get("torn_epochs_total", b.get("torn_epochs")))
        r.check("every epoch sent was acknowledged", final["acked_epoch"] == final["epoch"], final["epoch"],
                final["acked_epoch"])
        runs = final.get("delta_pages_runs", 0) + final.get("delta_pages_blocks", 0)
        r.check("epochs carried sub-page deltas (pages shipped as runs or blocks)", runs >= 1000, ">= 1000",
                runs)
        r.check("deltas put fewer bytes on the wire than the pages they stand for",
                0 < final.get("delta_wire", 0) < final.get("delta_page", 0) / 2,
                f"< {final.get('delta_page', 0) / 2:.0f}", final.get("delta_wire"))

        pre = final.get("precopy_epochs", 0) - start.get("precopy_epochs", 0)
        cs.log(f"pre-copied epochs {pre}, of them in a recycled store "
               f"{final.get('precopy_stores_reused', 0)}")
        r.check("pre-copied epochs start in the store a shipped epoch gave back (the delta check "
                "below then covers a recycled store's old bytes too)",
                pre == 0 or final.get("precopy_stores_reused", 0) >= pre // 2,
                f">= {pre // 2:.0f} of {pre:.0f}", final.get("precopy_stores_reused"))
        differ, missing, epoch, unordered = delta_cmp
        r.check("the dump's page runs ascend by address (what the carry of unshipped pages and this "
                "comparison walk by)", unordered == 0, 0, unordered)
        r.check("every page the backup built from deltas equals the stopped process's", differ == 0, 0,
                differ)
        r.check("the image built from deltas is of the last epoch acknowledged, or of one sent after it",
                final["acked_epoch"] <= epoch <= after["epoch"], f"{final['acked_epoch']}..{after['epoch']}",
                epoch)
        r.check("every live page of the stopped process is in the image built from deltas", not missing,
                "none missing", f"{len(missing)} missing: {[hex(x) for x in sorted(missing)[:8]]}")

def snapshot_journal(up):
    """Hard links to the files of the backup's journal, taken with backupd stopped for a
    moment (it writes each file under a temporary name and renames it: every name it
    shows is a whole file). Returns the directory."""
    svc_dir = os.path.join(up.dep.state["b"], rp.SERVICE)
    snap = cs.run_dir("journal")
    os.kill(up.backup.pid, signal.SIGSTOP)
    try:
        for name in os.listdir(svc_dir):
            path = os.path.join(svc_dir, name)
            if not name.startswith(".tmp-") and os.path.isfile(path):
                os.link(path, os.path.join(snap, name))
    finally:
        os.kill(up.backup.pid, signal.SIGCONT)
    return snap


def compare(journal, image):
    """(pages that differ, {addresses missing}, store epoch, runs out of order) between the
    image the journal in directory JOURNAL holds and IMAGE."""
    cmp = subprocess.run([os.environ["CHECKSYNC_WARM_VS_DUMP"], journal, image], capture_output=True,
                         text=True, timeout=120)
    cs.log(cmp.stdout.strip())
    m = re.search(r"compared (\d+) pages: (\d+) differ, (\d+) missing, store epoch (\d+), (\d+) runs out of order",
                  cmp.stdout)
    if not m:
        raise cs.TestError(f"warm_vs_dump: {cmp.stdout.strip()} {cmp.stderr.strip()[-500:]}")
    missing = {int(x, 16) for x in re.findall(r"missing page (0x[0-9a-f]+)", cmp.stderr)}
    return int(m.group(2)), missing, int(m.group(4)), int(m.group(5))

if __name__ == "__main__":
    cs.run(main)
