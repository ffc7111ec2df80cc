#!/usr/bin/env python3
"""A stripped executable (go build -ldflags=-s -w) has no DWARF: the dump says so
in one warning line, falls back to whole-mapping capture, and the restored
process still holds its state.

kvserver (cgo, stripped) is restored twice: once under its old pid (after the
original is gone), and once while the original still runs in another
network namespace, so its threads come back under new ids that, without
DWARF, cannot be patched into the runtime; it must keep serving through GC
cycles all the same.
"""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402


def main(r):
    binary = cs.build_workload("kvserver", "stripped")
    w = cs.start_workload(binary)
    writer = cs.KVWriter(w.client, max_requests=300)
    writer.start()
    writer.join(60)
    keys = writer.acked()

    image = os.path.join(cs.run_dir("stripped"), "image")
    run = cs.run_engine([cs.primaryd(), "dump", "--pid", str(w.pid), "--image", image])
    warnings = [line for line in run.stderr.splitlines() if line.strip()]
    r.require("dump of the stripped binary succeeds", run.rc == 0, "exit 0",
              f"exit {run.rc}: {run.stderr.strip()}")
    r.check("exactly one warning line, saying there is no DWARF",
            len(warnings) == 1 and re.search(r"warning: .*no DWARF", warnings[0]),
            "one 'warning: ... no DWARF' line", warnings)
    report = cs.dump_report(image)
    r.check("the report says whole-mapping capture for want of DWARF",
            report["mode"] == "whole (no DWARF)", "whole (no DWARF)", report["mode"])

    with cs.Hosts() as h:
        # While the original still runs: the restored copy cannot have the old ids.
        twin = cs.restore(image, netns=h.b, what="restored copy in host B")
        to_twin = cs.Client("127.0.0.1", w.client.port, netns=h.b)
        state = cs.wait_serving(to_twin, twin)
        r.check("copy restored beside the running original got a new pid",
                twin.pid != w.pid and state["pid"] == twin.pid, f"!= {w.pid}", twin.pid)
        problems = cs.kv_check(to_twin, keys, each=False)
        to_twin.force_gc(3)
        problems += cs.kv_check(to_twin, keys, each=False)
        r.check(f"the copy holds all {len(keys)} keys, before and after 3 GC cycles",
                not problems, "none missing", cs.summarize(problems))
        twin.kill9()

    w.proc.kill9()
    restored = cs.restore(image)
    state = cs.wait_serving(w.client, restored)
    problems = cs.kv_check(w.client, keys, each=True)
    w.client.force_gc(3)
    r.check(f"restored in place: all {len(keys)} keys read back, new pid {restored.pid} answers",
            not problems and state["pid"] == restored.pid, "none missing",
            cs.summarize(problems))
    restored.kill9()


if __name__ == "__main__":
    cs.run(main)
