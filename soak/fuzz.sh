#!/bin/sh
# Runs the hostile-input targets (option-file parser, state-file reader, thaw and thaw --status on
# mutated state files) for longer than CI does.
#
#   soak/fuzz.sh [SECONDS]      seconds per target (default 300); FUZZ_SEED=N for another sequence
#
# A failing input is saved under target/fuzz-failures/; once fixed, copy it into
# common/tests/fuzz_corpus/optfile/ or .../state/ so every CI run replays it.
set -eu
cd "$(dirname "$0")/.."
seconds="${1:-300}"
seed="${FUZZ_SEED:-$(date +%s)}"
echo "soak/fuzz.sh: ${seconds}s per target, seed $seed"
cargo build --workspace --locked
FUZZ_SECONDS="$seconds" FUZZ_SEED="$seed" \
    cargo test --locked -p mysql-snapshot-common --test fuzz_optfile --test fuzz_state -- --nocapture
# The binaries' targets live in the suite, which checks that the binaries are built and fresh.
FUZZ_SECONDS="$seconds" FUZZ_SEED="$seed" \
    cargo test --locked -p mysql-snapshot-tests --test suite -- fuzz_state:: --nocapture
