#!/usr/bin/env python3
"""Live-memory capture on a churn workload: the image holds the live Go memory, not the garbage.

Usage: test_live.py MODE    MODE: cgo or static

churn allocates and drops 1 GiB, then keeps about 50 MiB live while it keeps
allocating, rewriting and collecting. The test dumps it twice, whole mappings
(--whole) and live pages only, and checks that the live image is at most 1.2
times what the process itself reports in use (runtime.MemStats: HeapInuse +
StackInuse + MSpanInuse + MCacheInuse + BuckHashSys + OtherSys, the
highest reading while the dump runs), and smaller
than the whole image. Then it kills the original, restores the live image,
and for 30 s keeps it allocating and collecting while asking it to check
every live object: a heap page wrongly left out comes back as zeros and
fails that check. The restored process must answer with its own pid and as
many objects as before the dump, give or take one per operation since (a map
bucket restored as zeros loses its objects without failing any check).
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

RATIO = 1.2
AFTER_SECONDS = 30
IN_USE = ("heap_inuse", "stack_inuse", "mspan_inuse", "mcache_inuse", "buckhash_sys", "other_sys")


def in_use(state):
    return sum(state[k] for k in IN_USE)


def wait_steady(client, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.state()
        if state["phase"] == "steady" and state["checks"] >= 1:
            return state
        time.sleep(0.5)
    raise cs.TestError(f"churn did not reach its steady phase within {timeout}s")


class InUseSampler(threading.Thread):
    """Reads the process's in-use figure every 20 ms while a dump runs: the heap
    swings by up to GOGC between collections, so a reading taken only before
    or after the dump can miss the moment the dump saw."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client, self.peak, self.stop = client, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, in_use(self.client.state(timeout=2)))
            except cs.TestError:
                pass
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.join(5)
        return self.peak


def live_dump(client, pid, image, tries=3):
    """Dumps until a dump reaches a safepoint (live mode); returns (report, in-use bytes,
    the state read just before the dump)."""
    for _ in range(tries):
        sampler = InUseSampler(client)
        sampler.start()
        time.sleep(0.1)
        before = client.state()
        report = cs.dump(pid, image)
        time.sleep(0.1)
        used = sampler.finish()
        if report["mode"] == "live":
            return report, used, before
        cs.log(f"dump fell back ({report['mode']}), trying again")
    raise cs.TestError(f"no live dump in {tries} tries: last mode {report['mode']}")


def main(r, mode):
    w = cs.start_workload(cs.build_workload("churn", mode))
    client = w.client
    state = wait_steady(client)
    cs.log(f"steady: {state['live_bytes'] >> 20} MiB live in {state['objects']} objects after "
           f"{state['garbage_bytes'] >> 20} MiB of garbage; HeapInuse {state['heap_inuse'] >> 20} MiB, "
           f"HeapSys {state['heap_sys'] >> 20} MiB, released {state['heap_released'] >> 20} MiB")

    base = cs.run_dir(f"live-{mode}")
    whole = cs.dump(w.pid, os.path.join(base, "whole-image"), extra=["--whole"])
    report, used, before = live_dump(client, w.pid, os.path.join(base, "image"))
    cs.log(f"whole: {cs.describe_report(whole)}; live: {cs.describe_report(report)}; "
           f"retries to a safepoint {report['safepoint_tries']}")
    for name, c in report["classes"].items():
        cs.log(f"  {name:18} mapped {c['mapped']:>12} written {c['written']:>12}")
    cs.log(f"live image / in use = {report['image_bytes']} / {used} = {report['image_bytes'] / used:.2f}; "
           f"whole image / in use = {whole['image_bytes'] / used:.2f}")
    r.check(f"live image <= {RATIO} x memory the process reports in use",
            report["image_bytes"] <= RATIO * used,
            f"<= {int(RATIO * used)} bytes ({RATIO} x {used})", report["image_bytes"])
    r.check("live image smaller than the whole-mapping image",
            report["image_bytes"] < whole["image_bytes"],
            f"< {whole['image_bytes']}", report["image_bytes"])
    r.check("the dump skipped free arena pages it found present",
            report["classes"]["skipped_free"]["mapped"] > 0, "> 0",
            report["classes"]["skipped_free"]["mapped"])

    w.proc.kill9()
    restored = cs.restore(os.path.join(base, "image"))
    state = cs.wait_serving(client, restored)
    # Each operation adds or removes at most one object, and the restored process counts
    # on from the dump's: so objects can have moved by at most the operations since the
    # state read before the dump. Objects that vanished with a page left out cannot hide.
    # (+ one batch of 64: /state reads the counter outside the lock that guards the map)
    drift = state["ops"] - before["ops"] + 64
    r.check(f"restored: {state['objects']} objects, as many as before the dump ({before['objects']}) "
            f"give or take the {drift} operations since; /state pid is the restored pid",
            state["pid"] == restored.pid and state["objects"] > 0 and drift >= 0
            and abs(state["objects"] - before["objects"]) <= drift,
            f"pid {restored.pid}, objects {before['objects']} +- {drift}",
            f"pid {state['pid']}, objects {state['objects']}")
    first = client.json("/check", timeout=30)
    r.require("restored: every live object checks out", first["ok"] and first["checked"] > 0,
              "ok, > 0 objects", first)
    start_gc, start_ops = state["num_gc"], state["ops"]

    deadline = time.monotonic() + AFTER_SECONDS
    bad = []
    while time.monotonic() < deadline:
        time.sleep(3)
        client.force_gc(1)
        result = client.json("/check", timeout=30)
        if not result["ok"]:
            bad.append(result)
    final = client.state()
    r.check(f"{AFTER_SECONDS} s after restore: every periodic check of every object passed",
            not bad and final["ok"] and final["bad"] == 0, "no bad objects",
            f"{bad[:3]}, state ok={final['ok']} bad={final['bad']}")
    r.check("the restored process kept working: more operations and GC cycles",
            final["ops"] > start_ops and final["num_gc"] >= start_gc + 5,
            f"ops > {start_ops}, num_gc >= {start_gc + 5}", f"ops {final['ops']}, num_gc {final['num_gc']}")
    restored.kill9()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("cgo", "static"):
        sys.exit("usage: test_live.py cgo|static")
    cs.run(main, sys.argv[1])
