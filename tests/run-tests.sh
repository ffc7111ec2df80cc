#!/bin/bash
# Builds CheckSync and runs every test suite (unit, e2e, fuzz), and the unit
# suite again in a second build with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/; first, while the systemd test's
# root file system is made). The Go workloads are built while the C builds
# compile. Used by README.md and .ci/run.
# Extra arguments go to `meson test` of the first build only (e.g. --suite
# unit); the sanitizer build runs only when there are none.
set -uo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh || exit 1
[ -d build ] || meson setup build || exit 1
test_env=(CHECKSYNC_PRIMARYD="$PWD/build/primaryd/checksync-primaryd"
	CHECKSYNC_BACKUPD="$PWD/build/backupd/checksync-backupd"
	CHECKSYNC_TEST_TMP="$PWD/build/tests/tmp" CHECKSYNC_SRC="$PWD")
if [ $# -eq 0 ]; then
	# The Go workloads of every Go version the tests use (tests/lib/prebuild.py), built once
	# while the C builds compile; a test finds its binary made, or builds it itself.
	env "${test_env[@]}" python3 tests/lib/prebuild.py >build/meson-logs/go-prebuild.log 2>&1 &
	go_pid=$!
fi
# The daemons first: the systemd test's root file system needs only their libraries' packages.
ninja -C build primaryd/checksync-primaryd backupd/checksync-backupd || exit 1
if [ $# -eq 0 ]; then
	# That root file system (debootstrap, minutes of mostly download; cached in
	# build/tests/tmp/nspawn) is made while the rest of both builds compiles, and is done before
	# any test runs: no test, timed or not, runs beside it. The systemd test makes it itself if
	# this fails (and says why).
	env "${test_env[@]}" python3 tests/lib/nspawn.py >build/meson-logs/nspawn-base.log 2>&1 &
	base_pid=$!
fi
meson compile -C build || exit 1
rc=0
logs=()
if [ $# -eq 0 ]; then
	# -Db_lundef=false: the sanitizers' runtimes resolve some symbols at load time.
	[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false ||
		exit 1
	# Only what its unit suite runs: the fuzz targets (clang, their own sanitizers, a third of
	# this build's compile time) run in the first build.
	unit_targets=$(meson introspect --tests --targets build-asan | python3 -c '
import json, os, sys
info = json.load(sys.stdin)
need = {d for t in info["tests"] if "checksync:unit" in t["suite"] for d in t["depends"]}
print(" ".join(os.path.relpath(f, "build-asan") for t in info["targets"] if t["id"] in need
               for f in t["filename"]))') && [ -n "$unit_targets" ] || exit 1
	# shellcheck disable=SC2086 # one word per target
	ninja -C build-asan $unit_targets || exit 1
	wait "$base_pid" || echo "run-tests.sh: the systemd test's root file system was not made ahead:" \
		"$(tail -n 3 build/meson-logs/nspawn-base.log)" >&2
	wait "$go_pid" || echo "run-tests.sh: some Go workloads were not built ahead (the tests build" \
		"them):" "$(grep '^prebuild.py' build/meson-logs/go-prebuild.log | tail -n 3)" >&2
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		meson test -C build-asan --no-rebuild --print-errorlogs --suite unit || rc=1
	logs+=(build-asan/meson-logs/testlog.json)
fi
# A meson that dies before writing its log must not leave an older run's results to be counted.
rm -f build/meson-logs/testlog.json
meson test -C build --print-errorlogs "$@" || rc=1
if [ ! -s build/meson-logs/testlog.json ]; then
    echo "run-tests.sh: meson test wrote no build/meson-logs/testlog.json (exit $rc): no test ran" >&2
    echo "0 passed, 1 failed, 0 skipped"
    exit 1
fi
logs+=(build/meson-logs/testlog.json)
# One closing line that any reader of the log can count, over both builds.
python3 - "${logs[@]}" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            r = json.loads(line)["result"]
            if r in ("OK", "EXPECTEDFAIL"): passed += 1
            elif r == "SKIP": skipped += 1
            else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $rc
