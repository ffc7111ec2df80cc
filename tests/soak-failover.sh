#!/bin/bash
# Soak: the failover scenario of tests/test_failover.py, ROUNDS times
# (default 200; the suite runs 20). Needs a build in build/ and root.
#   sudo tests/soak-failover.sh            # 200 rounds
#   sudo ROUNDS=1000 tests/soak-failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export ROUNDS=${ROUNDS:-200}
export CHECKSYNC_PRIMARYD=$PWD/build/primaryd/checksync-primaryd
export CHECKSYNC_BACKUPD=$PWD/build/backupd/checksync-backupd
export CHECKSYNC_SRC=$PWD CHECKSYNC_TEST_TMP=$PWD/build/tests/tmp
exec python3 tests/test_failover.py
