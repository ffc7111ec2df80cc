"""Builds the Go workloads the default test run uses, once, before any test runs.

tests/run-tests.sh starts this while the C builds compile. On a clean clone the
Go cache (build/tests/tmp/gocache) is empty, and Go 1.21, 1.22 and 1.23 each
compile their standard library into it first (about a minute of CPU each, cgo
and static apart). Left to the tests, that happened in the parallel phase, and
twice over where two tests of one Go version began together (each compiled the
same packages: the Go cache does not share work in progress). Here each
version builds once, one after the other.

The builds land where checksync.build_workload looks (cached by name, mode, Go
version and source hash), so a test finds its binary made. A build missing from
BUILDS, or one that failed here, is made by the test itself, as before: only
slower, never different.

Usage: python3 tests/lib/prebuild.py   (env as for a test: CHECKSYNC_TEST_TMP, CHECKSYNC_SRC)
"""

import sys
import time

import checksync as cs

# Go (CHECKSYNC_GO; "" is the default `go`, Debian's 1.19) -> (workload, mode) its tests build;
# tests/meson.build says which tests run on which Go. In the order the tests need them.
_ALL = [(w, m) for w in ("tickers", "kvserver", "heapmap") for m in ("cgo", "static")]
BUILDS = [
    ("", _ALL + [("churn", "cgo"), ("churn", "static"), ("garbage", "cgo"), ("garbage", "static"),
                 ("kvserver", "stripped")]),
    ("1.21", [("kvserver", "cgo")]),
    ("1.22", [("kvserver", "cgo")]),
    ("1.23", _ALL + [("churn", "cgo"), ("churn", "static"), ("garbage", "cgo")]),
]


def main():
    failed = 0
    for go, builds in BUILDS:
        cs.GO = go
        for name, mode in builds:
            t0 = time.monotonic()
            try:
                path = cs.build_workload(name, mode)
            except cs.TestError as e:
                failed += 1
                print(f"prebuild.py: {name} ({mode}, go {go or 'default'}): {e}", flush=True)
                continue
            print(f"  {time.monotonic() - t0:5.1f} s  {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
