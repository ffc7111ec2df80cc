#!/usr/bin/env python3
"""Many failovers in a row: dump, SIGKILL, restore, verify, CYCLES times (default 50).

kvserver (cgo) runs under a writer that never stops. Each cycle dumps the process
currently serving (from cycle 2 on, the one the previous cycle restored), kills it,
restores the image, and checks, before the next cycle: the restored process
answers with the pid restore printed, every write acknowledged before any of the
dumps so far reads back exactly, and it takes new writes. Prints the pause and
dump times seen over all cycles at the end.
"""

import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

CYCLES = int(os.environ.get("CYCLES", "50"))


def main(r):
    w = cs.start_workload(cs.build_workload("kvserver", "cgo"))
    client = w.client
    writer = cs.KVWriter(client, max_seconds=3600, max_requests=10**6)
    writer.start()
    writer.wait_acks(100)

    base = cs.run_dir("cycles")
    proc = w.proc
    durable = {}  # writes acknowledged before the dump of the process that acknowledged them
    # The writer's phase is the cycle whose restored process it writes to (0: the original).
    reports = []
    for i in range(1, CYCLES + 1):
        image = os.path.join(base, f"image-{i}")
        t_dump = time.monotonic()
        reports.append(cs.dump(proc.pid, image))
        durable.update(writer.acked(phase=i - 1, before=t_dump))
        writer.pause()
        proc.kill9()
        restored = cs.restore(image, what=f"restored process #{i}")
        writer.resume(i)
        state = cs.wait_serving(client, restored)
        problems = cs.kv_check(client, durable, each=False)
        if state["pid"] != restored.pid:
            problems.insert(0, f"/state pid {state['pid']}, expected {restored.pid}")
        r.require(f"cycle {i}: restored pid {restored.pid} holds all {len(durable)} acknowledged writes",
                  not problems, "none missing or different", cs.summarize(problems))
        writer.wait_acks(20, phase=i)
        shutil.rmtree(image)  # a failed cycle keeps its image (run_dir is kept on failure)
        proc = restored

    writer.stop()
    proc.kill9()
    for field in ("pause_us", "dump_us", "image_bytes"):
        values = [rep[field] for rep in reports]
        cs.log(f"{field} over {len(values)} dumps: min {min(values)}, "
               f"median {statistics.median(values):.0f}, max {max(values)}")


if __name__ == "__main__":
    cs.run(main)
