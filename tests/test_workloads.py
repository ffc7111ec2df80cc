#!/usr/bin/env python3
"""The test workloads themselves, without the engine: each builds in both modes
with the expected linkage and answers its endpoints correctly.

This is what the end-to-end tests take for granted; when it fails, an e2e
failure says nothing about the engine.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402


def check_tickers(r, c, tag):
    s1 = c.state()
    time.sleep(0.3)
    s2 = c.state()
    r.check(f"{tag}: every ticker counter advances",
            all(b > a for a, b in zip(s1["counters"], s2["counters"])), f"> {s1['counters']}", s2["counters"])
    r.check(f"{tag}: pipeline advances and its invariant holds",
            s2["count"] > s1["count"] and s2["ok"] and s2["sum"] == s2["count"] ** 2,
            "count growing, sum == count^2, ok", s2)


def check_kvserver(r, c, tag):
    r.check(f"{tag}: /set answers ok", c.json("/set", {"k": "a", "v": "1 2&3"}).get("ok") is True)
    r.check(f"{tag}: /get answers the value set", c.json("/get", {"k": "a"}) == {"k": "a", "v": "1 2&3"})
    status, _ = c.get("/get", {"k": "missing"})
    r.check(f"{tag}: /get of a missing key answers 404", status == 404, 404, status)
    status, _ = c.get("/set", {"k": "b"})
    r.check(f"{tag}: /set without a value answers 400", status == 400, 400, status)
    r.check(f"{tag}: /items and /state count the key",
            c.json("/items") == {"a": "1 2&3"} and c.state()["items"] == 1)


def check_heapmap(r, c, tag):
    got = c.json("/checksum", timeout=30)
    want = {"checksum": cs.heapmap_checksum(got["seed"]), "seed": got["seed"],
            "len": cs.HEAPMAP_ENTRIES, "bad": 0}
    r.check(f"{tag}: /checksum matches the checksum computed from its seed", got == want, want, got)
    s1 = c.state()
    time.sleep(1.1)
    s2 = c.state()
    r.check(f"{tag}: churn and the 500 ms GC loop advance",
            s2["churn_allocs"] > s1["churn_allocs"] and s2["forced_gc"] > s1["forced_gc"],
            "churn_allocs and forced_gc growing", f"{s1} then {s2}")


CHECKS = {"tickers": check_tickers, "kvserver": check_kvserver, "heapmap": check_heapmap}


def main(r):
    for name, check in CHECKS.items():
        for mode in ("cgo", "static"):
            tag = f"{name} ({mode})"
            w = cs.start_workload(cs.build_workload(name, mode))  # checks linkage and /state pid
            check(r, w.client, tag)
            before, after = w.client.force_gc(1)
            r.check(f"{tag}: /gc runs a GC cycle", after > before, f"> {before}", after)
            w.proc.kill9()


if __name__ == "__main__":
    cs.run(main)
