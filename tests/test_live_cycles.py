#!/usr/bin/env python3
"""200 live dumps in a row of kvserver under write load; every 20th image restored and verified.

Each dump must succeed and say in its report how it went: live at a
safepoint (with how many retries it took to reach one) or whole mappings
after the retries ran out. Every 20th image is restored in a second network
namespace while the original keeps running (so the copy comes back under new
thread ids), and must hold every write acknowledged before its dump. The
original must keep serving all along: every window of 20 dumps must see its
acknowledged writes grow, and the writer must end with zero errors (a dump
that left the service stopped for seconds, or killed it, fails here). The
counts of retries and fall-backs are printed at the end.
"""

import collections
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

DUMPS = int(os.environ.get("DUMPS", "200"))
VERIFY_EVERY = 20


def verify_copy(r, image, keys, port, netns, i):
    copy = cs.restore(image, netns=netns, what=f"copy of dump {i}")
    client = cs.Client("127.0.0.1", port, netns=netns)
    try:
        state = cs.wait_serving(client, copy)
        problems = cs.kv_check(client, keys, each=False)
        client.force_gc(2)
        problems += cs.kv_check(client, keys, each=False)
        r.check(f"dump {i}: restored copy (pid {state['pid']}) holds all {len(keys)} writes "
                f"acknowledged before the dump, through 2 GC cycles",
                not problems, "none missing", cs.summarize(problems))
    finally:
        copy.kill9()


def main(r):
    w = cs.start_workload(cs.build_workload("kvserver", "cgo"))
    writer = cs.KVWriter(w.client, max_seconds=3600, max_requests=10**7)
    writer.start()
    writer.wait_acks(200)

    base = cs.run_dir("live-cycles")
    modes, tries = collections.Counter(), collections.Counter()
    pauses = []
    window_start = len(writer.acked())
    with cs.Hosts() as h:
        for i in range(1, DUMPS + 1):
            image = os.path.join(base, "image")
            t_dump = time.monotonic()
            report = cs.dump(w.pid, image)
            modes[report["mode"]] += 1
            tries[report["safepoint_tries"]] += 1
            pauses.append(report["pause_us"])
            if i % VERIFY_EVERY == 0:
                now = len(writer.acked())
                r.check(f"dumps {i - VERIFY_EVERY + 1}-{i}: the original kept serving (its "
                        f"acknowledged writes grew)", now > window_start, f"> {window_start}",
                        f"{now} ({writer.errors} writer errors, last: {writer.last_error})")
                window_start = now
                verify_copy(r, image, writer.acked(before=t_dump), w.client.port, h.b, i)
            shutil.rmtree(image)
    alive = writer.is_alive()
    writer.stop()
    r.check(f"the writer to the original saw no error through {DUMPS} dumps "
            f"({len(writer.acked())} writes acknowledged)", alive and writer.errors == 0,
            "0 errors, writer still running", f"{writer.errors} errors (last: {writer.last_error}), "
            f"running {alive}")
    w.proc.check_left_running(r, f"{DUMPS} dumps")

    pauses.sort()
    cs.log(f"{DUMPS} dumps: modes {dict(modes)}; safepoint retries {dict(sorted(tries.items()))}; "
           f"pause p50 {pauses[len(pauses) // 2]} us, p99 {pauses[len(pauses) * 99 // 100]} us")
    r.check(f"all {DUMPS} dumps reported a capture mode",
            sum(modes.values()) == DUMPS and set(modes) <= {"live", "whole (no safepoint)"},
            "live or whole (no safepoint)", dict(modes))
    r.check("most dumps reached a safepoint (live capture)", modes["live"] >= DUMPS * 0.9,
            f">= {int(DUMPS * 0.9)}", modes["live"])


if __name__ == "__main__":
    cs.run(main)
