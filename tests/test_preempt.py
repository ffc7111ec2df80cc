#!/usr/bin/env python3
"""Goroutine preemption works in a restored process, under its old thread ids and under new ones.

Usage: test_preempt.py MODE    MODE: cgo or static

The Go runtime preempts a goroutine that never calls a function by sending a
signal (tgkill) to the thread id it recorded for that goroutine's M. tickers'
/spin starts such a goroutine; a GC while it spins must stop it, so with the
signals going astray the GC's stop-the-world waits until the spin ends (or for
ever). The test restores one copy beside the still-running original, in a
second network namespace (the old ids are taken, so its threads get new ones
and restore must patch m.procid), then one in place after the original is
killed (old ids), and in each, while a goroutine spins for SPIN_MS, checks
that every forced GC's stop-the-world pause stays far below it.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

SPIN_MS = 4000
MAX_PAUSE_MS = 500


def check_preemption(r, client, proc, what):
    state = cs.wait_serving(client, proc)
    client.json("/spin", {"ms": SPIN_MS})
    pauses = []
    for _ in range(3):
        try:
            pauses.append(client.json("/gc", timeout=SPIN_MS / 1000 + 10)["pause_ns"] / 1e6)
        except cs.TestError as e:
            pauses.append(f"no answer ({e})")
    ok = all(isinstance(p, float) and p < MAX_PAUSE_MS for p in pauses)
    r.check(f"{what} (pid {state['pid']}): 3 GCs stop a goroutine spinning {SPIN_MS} ms "
            f"within {MAX_PAUSE_MS} ms each", ok, f"< {MAX_PAUSE_MS} ms", pauses)


def main(r, mode):
    w = cs.start_workload(cs.build_workload("tickers", mode))
    image = os.path.join(cs.run_dir(f"preempt-{mode}"), "image")
    cs.dump(w.pid, image)
    with cs.Hosts() as h:
        copy = cs.restore(image, netns=h.b, what="copy beside the original")
        r.check("the copy beside the original has a new pid", copy.pid != w.pid, f"!= {w.pid}",
                copy.pid)
        check_preemption(r, cs.Client("127.0.0.1", w.client.port, netns=h.b), copy,
                         "copy under new thread ids")
        copy.kill9()
    w.proc.kill9()
    restored = cs.restore(image)
    check_preemption(r, w.client, restored, "copy restored in place")
    restored.kill9()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("cgo", "static"):
        sys.exit("usage: test_preempt.py cgo|static")
    cs.run(main, sys.argv[1])
