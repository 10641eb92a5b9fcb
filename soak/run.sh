#!/bin/sh
# Soak: N freeze/thaw cycles (default 500) against a private MariaDB under a concurrent write load,
# with random lock modes, snapshot durations of 0-2 s and a random fault in ~10 % of cycles.
# Not part of the default test run (CI runs the same test with 60 cycles). Never touches the
# machine's own server: the test starts a private one.
#
#   soak/run.sh [CYCLES]        SOAK_SEED=N to vary the sequence, SOAK_SYSBENCH=1 to add sysbench
#
# Prints the summary line and appends it, dated, to target/soak-history.txt.
set -eu
cd "$(dirname "$0")/.."
cycles="${1:-500}"
if [ "${SOAK_SYSBENCH:-0}" = 1 ] && ! command -v sysbench >/dev/null 2>&1; then
    echo "soak/run.sh: SOAK_SYSBENCH=1 needs sysbench (as root: apt-get install -y sysbench)" >&2
    exit 1
fi
cargo build --workspace --locked
summary="target/soak-summary.txt"
rm -f "$summary"
status=0
SOAK_CYCLES="$cycles" SOAK_SUMMARY="$PWD/$summary" \
    cargo test --locked -p mysql-snapshot-tests --test suite -- soak:: --nocapture || status=$?
if [ -s "$summary" ]; then
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $(cat "$summary")"
    echo "$line" >>target/soak-history.txt
    echo "$line"
fi
exit "$status"
