#!/usr/bin/env python3
"""Round trip of one workload: dump it under load, kill it, restore it, check its state.

Usage: test_roundtrip.py WORKLOAD MODE    WORKLOAD: tickers, kvserver or heapmap
                                          MODE: cgo (dynamically linked) or static

The flow is the same for every workload: start it, load it, take a reference
reading just before the dump, dump, check the original still runs untraced,
SIGKILL it, restore, check the restored process answers on the same port with
its own pid and holds the reference state, then load it for LOAD_SECONDS more,
force 3 GC cycles, and check its state again. What "holds the state" means is
up to each workload's scenario class below.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

LOAD_SECONDS = 10
ORIGINAL, RESTORED = 0, 1  # load phases: requests answered by the original, by the restored process


class Tickers:
    """Ticker counters and the channel pipeline resume where they were, and go on."""

    def __init__(self, r, client):
        self.r, self.client = r, client
        self.load = cs.Readers(client, ["/state"], interval=0.01)

    def start_load(self):
        self.load.start()
        time.sleep(1.0)  # every ticker has fired a few times

    def before_dump(self):
        self.pre = self.client.state()
        self.r.require("before dump: every ticker counter has advanced and the pipeline invariant holds",
                       all(c > 0 for c in self.pre["counters"]) and self.pre["ok"],
                       "counters > 0 and ok", f"{self.pre['counters']}, ok={self.pre['ok']}")

    def verify_restored(self, state):
        self._check_progress("restored", self.pre, state, strict=False)
        time.sleep(0.5)
        self._check_progress("0.5 s after restore", state, self.client.state(), strict=True)
        self.restored = state

    def verify_after_load(self):
        self._check_progress(f"{LOAD_SECONDS} s after restore", self.restored, self.client.state(), strict=True)

    def _check_progress(self, when, old, new, strict):
        """Counters and pipeline count of NEW are >= OLD's (> if STRICT); invariant holds."""
        op = ">" if strict else ">="
        bigger = (lambda a, b: a > b) if strict else (lambda a, b: a >= b)
        self.r.check(f"{when}: every ticker counter {op} its earlier value",
                     len(new["counters"]) == len(old["counters"])
                     and all(bigger(n, o) for n, o in zip(new["counters"], old["counters"])),
                     f"{op} {old['counters']}", new["counters"])
        self.r.check(f"{when}: pipeline count {op} its earlier value",
                     bigger(new["count"], old["count"]), f"{op} {old['count']}", new["count"])
        self.r.check(f"{when}: pipeline invariant sum == count^2 and no value lost or repeated",
                     new["ok"], "ok=true",
                     f"ok={new['ok']} count={new['count']} sum={new['sum']} broken={new['broken']!r}")

    def stop(self):
        self.load.stop()


class KVServer:
    """Every write acknowledged before the dump started is there with its exact value."""

    def __init__(self, r, client):
        self.r, self.client = r, client
        self.load = cs.KVWriter(client)

    def start_load(self):
        self.load.start()
        self.load.wait_acks(300)

    def before_dump(self):
        self.t_dump = time.monotonic()  # last thing before the dump starts

    def verify_restored(self, state):
        self.durable = self.load.acked(phase=ORIGINAL, before=self.t_dump)
        problems = cs.kv_check(self.client, self.durable, each=True)
        self.r.check(f"restored: all {len(self.durable)} writes acknowledged before the dump "
                     f"read back with their exact values (/items and /get each)",
                     not problems, "none missing or different", cs.summarize(problems))
        self._check_no_foreign_values("restored")

    def verify_after_load(self):
        self.load.wait_acks(50, phase=RESTORED)
        new = self.load.acked(phase=RESTORED)
        self.r.check("after load: the restored process acknowledged new writes",
                     len(new) >= 50, ">= 50", len(new))
        expected = dict(self.durable, **new)
        problems = cs.kv_check(self.client, expected, each=False)
        self.r.check(f"after load: all {len(self.durable)} pre-dump writes and {len(new)} writes "
                     f"to the restored process read back exactly",
                     not problems, "none missing or different", cs.summarize(problems))
        self._check_no_foreign_values("after load")

    def _check_no_foreign_values(self, when):
        """Keys the image may or may not hold (acknowledged during the dump) must be exact if present."""
        items = self.client.json("/items", timeout=30)
        wrong = [f"{k}={v!r}" for k, v in items.items()
                 if not (k[1:].isdigit() and v == self.load.value(int(k[1:])))]
        self.r.check(f"{when}: every stored key holds the value written for it",
                     not wrong, "no other values", cs.summarize(wrong))

    def stop(self):
        self.load.stop()


class HeapMap:
    """The million-entry map comes back intact: same checksum, length, every entry valid."""

    def __init__(self, r, client):
        self.r, self.client = r, client
        self.load = cs.Readers(client, ["/state", "/state", "/checksum"], interval=0.05)

    def start_load(self):
        self.load.start()
        c = self.client.json("/checksum", timeout=30)
        expected = {"checksum": cs.heapmap_checksum(c["seed"]), "seed": c["seed"],
                    "len": cs.HEAPMAP_ENTRIES, "bad": 0}
        self.r.require("before dump: /checksum equals the checksum the test computes from the seed, "
                       "1e6 entries, none invalid", c == expected, expected, c)

    def before_dump(self):
        self.pre = self.client.json("/checksum", timeout=30)
        self.pre_state = self.client.state()

    def verify_restored(self, state):
        self._check_map("restored")
        for field in ("churn_allocs", "forced_gc"):
            self.r.check(f"restored: {field} resumed from its pre-dump value",
                         state[field] >= self.pre_state[field], f">= {self.pre_state[field]}", state[field])
        self.restored = state

    def verify_after_load(self):
        self._check_map("after load")
        s = self.client.state()
        for field in ("churn_allocs", "forced_gc"):
            self.r.check(f"after load: {field} advanced since the restore",
                         s[field] > self.restored[field], f"> {self.restored[field]}", s[field])

    def _check_map(self, when):
        c = self.client.json("/checksum", timeout=30)
        self.r.check(f"{when}: /checksum equals the pre-dump checksum, 1e6 entries, none invalid",
                     c == self.pre, self.pre, c)

    def stop(self):
        self.load.stop()


SCENARIOS = {"tickers": Tickers, "kvserver": KVServer, "heapmap": HeapMap}


def main(r, workload, mode):
    if workload not in SCENARIOS:
        raise cs.TestError(f"unknown workload {workload!r}, expected one of {', '.join(SCENARIOS)}")
    w = cs.start_workload(cs.build_workload(workload, mode))
    client = w.client
    sc = SCENARIOS[workload](r, client)
    sc.start_load()

    image = os.path.join(cs.run_dir(f"roundtrip-{workload}-{mode}"), "image")
    instance = client.state()["instance"]
    sc.before_dump()
    report = cs.dump(w.pid, image)
    cs.log(f"dump: {cs.describe_report(report)}")
    w.proc.check_left_running(r, "the dump")
    r.check("original still answers /state after the dump", client.state()["pid"] == w.pid)

    sc.load.pause()
    w.proc.kill9()
    restored = cs.restore(image)
    cs.log(f"restored as pid {restored.pid}")
    sc.load.resume(RESTORED)
    try:
        state, err = cs.wait_serving(client, restored), None
    except cs.TestError as e:
        err = e
    r.require(f"restored process answers a new connection on the original's port ({client})",
              err is None, "an answer to GET /state", err)
    r.check("restored /state pid is the pid restore printed", state["pid"] == restored.pid,
            restored.pid, state["pid"])
    r.check("restored process is the dumped instance, not a fresh start",
            state["instance"] == instance, instance, state["instance"])
    sc.verify_restored(state)

    errors_before = sc.load.errors
    time.sleep(LOAD_SECONDS)
    before, after = client.force_gc(3)
    r.check("3 forced GC cycles completed in the restored process", after >= before + 3,
            f"NumGC >= {before + 3}", after)
    sc.verify_after_load()
    sc.stop()
    r.check(f"no failed requests in the {LOAD_SECONDS} s of load after the restore",
            sc.load.errors == errors_before, 0,
            f"{sc.load.errors - errors_before} (last: {sc.load.last_error})")
    r.check("restored process still running at the end", restored.alive(), "alive", restored.state())
    restored.kill9()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cs.run(main, sys.argv[1], sys.argv[2])
