#!/usr/bin/env python3
"""One image, restored twice: restoring does not consume or change the image.

Usage: test_twice.py [MODE]    MODE: cgo (default) or static

kvserver is dumped under write load and killed. Restore #1 must hold every write
acknowledged before the dump; then a second writer overwrites k0..k99 in it with
values of its own, and it is killed. Restore #2 of the same image must again hold
the pre-dump values (not restore #1's), and the image's files must be unchanged.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402


def main(r, mode):
    w = cs.start_workload(cs.build_workload("kvserver", mode))
    client = w.client
    writer = cs.KVWriter(client)
    writer.start()
    writer.wait_acks(300)

    image = os.path.join(cs.run_dir(f"twice-{mode}"), "image")
    t_dump = time.monotonic()
    report = cs.dump(w.pid, image)
    cs.log(f"dump: {cs.describe_report(report)}")
    writer.stop()
    durable = writer.acked(before=t_dump)
    digest = cs.image_digest(image)
    w.proc.kill9()

    for n in (1, 2):
        restored = cs.restore(image, what=f"restore #{n}")
        cs.log(f"restore #{n}: pid {restored.pid}")
        state = cs.wait_serving(client, restored)
        r.check(f"restore #{n}: /state pid is the pid restore printed",
                state["pid"] == restored.pid, restored.pid, state["pid"])
        problems = cs.kv_check(client, durable, each=True)
        r.check(f"restore #{n}: all {len(durable)} writes acknowledged before the dump read back "
                f"with their pre-dump values", not problems, "none missing or different",
                cs.summarize(problems))
        after = cs.image_digest(image)
        changed = [f for f in digest if after.get(f) != digest[f]]
        r.check(f"restore #{n}: image files unchanged", not changed, "no file changed or removed",
                changed)
        if n == 1:
            overwriter = cs.KVWriter(client, max_requests=100)  # writes k0..k99 again
            overwriter.start()
            overwriter.join(60)
            new = overwriter.acked()
            problems = cs.kv_check(client, new, each=False)
            r.check("restore #1 takes 100 overwrites", len(new) == 100 and not problems,
                    "100 acknowledged and read back", f"{len(new)}; {cs.summarize(problems)}")
        restored.kill9()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    cs.run(main, sys.argv[1] if len(sys.argv) == 2 else "cgo")
