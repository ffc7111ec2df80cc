#!/usr/bin/env python3
"""Shipping only reachable new objects loses nothing the service can reach.

Usage: test_reach.py MODE [EPOCHS]    MODE: cgo or static; EPOCHS (default 60)

Every BESIDE_EVERY (20) epochs, the backup's image as it is then (a copy of
its journal, loaded by backupd/tests/warm_image) is restored in B beside the
running original, so with new pids and thread ids, and checked whole: every
key holds the value written, in a contiguous prefix, every write acknowledged
an epoch and LAG_S before holds, and /checksum is the sum of /items; then it is killed.

The `garbage` workload (about 4 KB of garbage per request, about 100 bytes
kept per /set) runs under checksync-primaryd in A, replicated to backupd in B.
A writer stores keys one at a time through the VIP, a reader reads them back,
and a third client forces a GC every 0.3 s, until EPOCHS epochs are
acknowledged. Checked on the primary's status: the scan ran (reach_scans_done)
and zeroed the staged bytes of unreachable new objects (else this proves
nothing). Then A dies (SIGKILL of primaryd and the service), B restores the
service and takes over, and the restored copy must hold every write
acknowledged before the kill with its exact value, its /checksum over every
key and value must be the sum of the /items it answers, and after three more
forced GCs and more writes it must still answer both.

With CHECKSYNC_DEBUG_REACH_DROP=1 in the environment (the negative control:
primaryd then zeroes one reachable new object per epoch) this test must fail.
"""


import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

PAD = 80  # "vN-token" + 80 bytes: about 100 bytes kept per write
BESIDE_EVERY = 20  # epochs between restores of the backup's image beside the original
# A write acknowledged an epoch and this long before the copy must be in it: without
# output commit the service answers before its epoch is journaled, and under load
# epochs merge. A bug of the scan shows as a wrong value or a hole, not as a late tail.
LAG_S = 1.0


def fnv_sum(items):
    """The FNV-1a 64 /checksum computes, over ITEMS in key order."""
    h = 0xcbf29ce484222325
    for k in sorted(items):
        for b in k.encode() + b"\0" + str(items[k]).encode() + b"\0":
            h = ((h ^ b) * 0x100000001b3) & ((1 << 64) - 1)
    return format(h, "016x")


class Churn(threading.Thread):
    """Reads keys back and forces a GC every 0.3 s, until stopped."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client, self.stop_flag, self.gcs = client, threading.Event(), 0

    def run(self):
        last_gc = 0
        while not self.stop_flag.is_set():
            try:
                self.client.get("/get", {"k": "k0"}, timeout=2)
                if time.time() - last_gc > 0.3:
                    self.client.get("/gc", timeout=5)
                    self.gcs += 1
                    last_gc = time.time()
            except Exception:
                time.sleep(0.05)

    def stop(self):
        self.stop_flag.set()
        self.join(10)


def check_whole_state(r, tag, client):
    items = client.json("/items", timeout=60)
    ck = client.json("/checksum", timeout=60)
    r.check(f"{tag}: /checksum covers every key /items answers", ck.get("items") == len(items),
            len(items), ck.get("items"))
    r.check(f"{tag}: /checksum over every key and value equals the sum of /items",
            ck.get("sum") == fnv_sum(items), fnv_sum(items), ck.get("sum"))
    return items


def restore_beside(r, up, writer, n):
    """The backup's image as it is now, restored in B beside the running original (new pids
    and thread ids: the original's are taken), checked whole, then killed."""
    topo, dep = up.topo, up.dep
    acked = up.primary.status().get("acked")
    t_copy = time.monotonic()
    # Without output commit a write is acknowledged before its epoch is journaled.
    durable = writer.acked(before=t_copy - (dep.service["epoch_interval_ms"] / 1000 + LAG_S))
    work = cs.run_dir(f"beside-{n}")
    journal = os.path.join(work, "journal")
    image = os.path.join(work, "image")
    for attempt in range(5):
        # backupd writes and compacts its journal meanwhile: copy it whole, else again
        shutil.rmtree(journal, ignore_errors=True)
        shutil.rmtree(image, ignore_errors=True)
        try:
            shutil.copytree(os.path.join(dep.state["b"], rp.SERVICE), journal,
                            ignore=shutil.ignore_patterns(".tmp-*"))
        except shutil.Error:
            continue
        out = subprocess.run([os.environ["CHECKSYNC_WARM_IMAGE"], journal, image], capture_output=True,
                             text=True, timeout=120)
        if out.returncode == 0:
            break
    else:
        raise cs.TestError(f"beside {n}: no consistent copy of the backup's journal in 5 tries")
    proc = cs.restore(image, netns=topo.b, what=f"copy {n} restored beside the original")
    try:
        client = cs.Client(topo.addr[topo.b], rp.PORT, netns=topo.c)
        st = client.state(timeout=10)
        tag = f"beside {n} ({out.stdout.strip()}; primary acked {acked} at the copy)"
        r.check(f"{tag}: the copy runs with a pid of its own, beside the original",
                st["pid"] == proc.pid and proc.pid != up.service.pid, f"pid {proc.pid}", st["pid"])
        items = check_whole_state(r, tag, client)
        prefix = [int(k[1:]) for k in items if k.startswith("k") and k[1:].isdigit()]
        wrong = [k for k in items if k.startswith("k") and k[1:].isdigit()
                 and items[k] != writer.value(int(k[1:]))]
        missing = [k for k, v in durable.items() if items.get(k) != v]
        holes = sorted(set(range(max(prefix) + 1)) - set(prefix)) if prefix else []
        r.check(f"{tag}: every key holds the value written, in a contiguous prefix, and all "
                f"{len(durable)} writes acknowledged {LAG_S} s and an epoch before the copy are there",
                durable and not wrong and not missing and not holes, "yes",
                f"{len(wrong)} wrong {wrong[:3]}, {len(missing)} missing {missing[:3]}, holes {holes[:5]}")
    finally:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait_gone(10)
        shutil.rmtree(work, ignore_errors=True)


def rows(daemon):
    return {n: v for _, _, n, _, v in rp.status_socket_rows(daemon.socket)}


def main(r, mode, epochs=60):
    epochs = int(epochs)
    binary = cs.build_workload("garbage", mode)
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary)
        writer = rp.Writer(up.vip, pad=PAD)
        churn = Churn(up.vip)
        writer.start()
        churn.start()
        try:
            writer.wait_acks(50)
            for n, at in enumerate(range(BESIDE_EVERY, epochs + 1, BESIDE_EVERY), 1):
                rp.wait_acked(up.primary, up.backup, at_least=at, timeout=BESIDE_EVERY * 2 + 60)
                restore_beside(r, up, writer, n)
            rp.wait_acked(up.primary, up.backup, at_least=epochs, timeout=epochs * 2 + 60)
            prow = rows(up.primary)
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
        except BaseException:
            writer.stop()
            churn.stop()
            raise
        churn.stop()
        done = prow.get("reach_scans_done") or 0
        r.check("primary status: the reachability scan ran on most epochs",
                done >= epochs // 2, f">= {epochs // 2} of {epochs}", f"{done} done, "
                f"{prow.get('reach_scans_skipped')} skipped")
        zeroed = prow.get("reach_zeroed_bytes") or prow.get("reach_zeroed") or 0
        r.check("primary status: unreachable new objects were zeroed (else this proves nothing)",
                zeroed > 0, "> 0 bytes", zeroed)
        r.check(f"forced GCs during the run ({churn.gcs})", churn.gcs >= 3, ">= 3", churn.gcs)
        cs.log(f"{epochs} epochs, {churn.gcs} forced GCs; primary: "
               + ", ".join(f"{k} {v:.0f}" for k, v in prow.items() if k.startswith("reach_")))
        rp.check_takeover(r, "takeover", up, writer, t_kill)
        check_whole_state(r, "restored", up.vip)
        for _ in range(3):
            up.vip.get("/gc", timeout=10)
        token = f"after{os.getpid()}"
        problems = []
        for i in range(200):
            st, _ = up.vip.get("/set", {"k": f"z{i}", "v": f"{token}-{i}"}, timeout=5)
            if st != 200:
                problems.append(f"/set z{i}: HTTP {st}")
        items = check_whole_state(r, "restored, after 3 forced GCs and 200 writes", up.vip)
        wrong = [f"z{i}" for i in range(200) if items.get(f"z{i}") != f"{token}-{i}"]
        r.check("restored: the 200 writes after the GCs read back", not problems and not wrong, "all",
                cs.summarize(problems + wrong))


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
