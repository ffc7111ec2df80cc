#!/usr/bin/env python3
"""Failover between two hosts: a kvserver dumped on host A comes back on host B.

Hosts A and B are network namespaces joined by a veth pair (see checksync.Hosts).
kvserver (cgo) runs in A on 0.0.0.0:PORT; a writer inside A writes keys to A's
address; primaryd dumps it from inside A; the original is killed; backupd restores
the image from inside B. A client in A then talks to B's address: the restored
process must be in B's namespace, answer with its own pid, hold every write
acknowledged before the dump, and take new writes. A's address must no longer answer.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

PORT = 8080  # inside fresh namespaces every port is free


def netns_inode(path):
    return os.stat(path).st_ino


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    with cs.Hosts() as h:
        addr_a, addr_b = h.addr[h.a], h.addr[h.b]
        cs.log(f"host A: netns {h.a}, {addr_a}; host B: netns {h.b}, {addr_b}")
        w = cs.start_workload(binary, port=PORT, host=addr_a, listen=f"0.0.0.0:{PORT}", netns=h.a)
        writer = cs.KVWriter(w.client)  # runs in A, writes to A's address
        writer.start()
        writer.wait_acks(300)

        image = os.path.join(cs.run_dir("netns"), "image")
        t_dump = time.monotonic()
        report = cs.dump(w.pid, image, netns=h.a)
        cs.log(f"dump in {h.a}: {cs.describe_report(report)}")
        w.proc.check_left_running(r, "the dump")
        w.proc.kill9()
        writer.stop()
        durable = writer.acked(before=t_dump)

        restored = cs.restore(image, netns=h.b)
        cs.log(f"restored in {h.b} as pid {restored.pid}")
        r.check("restored process runs in host B's network namespace",
                netns_inode(f"/proc/{restored.pid}/ns/net") == netns_inode(f"/run/netns/{h.b}"),
                f"netns {h.b}", os.readlink(f"/proc/{restored.pid}/ns/net"))

        to_b = cs.Client(addr_b, PORT, netns=h.a)  # a client on A, talking to B
        state = cs.wait_serving(to_b, restored)
        r.check("restored /state pid (asked from A at B's address) is the pid restore printed",
                state["pid"] == restored.pid, restored.pid, state["pid"])
        problems = cs.kv_check(to_b, durable, each=True)
        r.check(f"all {len(durable)} writes acknowledged before the dump read back from B exactly",
                not problems, "none missing or different", cs.summarize(problems))

        writer_b = cs.KVWriter(to_b)
        writer_b.start()
        writer_b.wait_acks(100)
        writer_b.stop()
        new = writer_b.acked()
        problems = cs.kv_check(to_b, new, each=True)
        r.check(f"{len(new)} new writes to B acknowledged and read back exactly",
                len(new) >= 100 and not problems, ">= 100 writes, none missing",
                f"{len(new)} writes; {cs.summarize(problems) or 'none missing'}")

        status = None
        try:
            status, _ = cs.Client(addr_a, PORT, netns=h.a).get("/state", timeout=2)
        except cs.TestError:
            pass
        r.check("nothing answers at A's address any more", status is None,
                "connection refused", f"HTTP {status}")
        restored.kill9()
    r.check("test namespaces removed", not {h.a, h.b} & set(cs.netns_list()),
            "neither listed", cs.netns_list())


if __name__ == "__main__":
    cs.run(main)
