#!/bin/bash
# Builds CheckSync and runs every test suite (unit, e2e). Used by README.md
# and .ci/run. Extra arguments go to `meson test` (e.g. --suite unit).
set -uo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh || exit 1
[ -d build ] || meson setup build || exit 1
meson compile -C build || exit 1
# A meson that dies before writing its log must not leave an older run's results to be counted.
rm -f build/meson-logs/testlog.json
meson test -C build --print-errorlogs "$@"
rc=$?
if [ ! -s build/meson-logs/testlog.json ]; then
    echo "run-tests.sh: meson test wrote no build/meson-logs/testlog.json (exit $rc): no test ran" >&2
    echo "0 passed, 1 failed, 0 skipped"
    exit $(( rc ? rc : 1 ))
fi
# One closing line that any reader of the log can count.
python3 - <<'PY'
import json
passed = failed = skipped = 0
with open("build/meson-logs/testlog.json") as f:
    for line in f:
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $rc
