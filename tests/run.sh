#!/bin/sh
# Runs the whole test suite: installs what the tests need (Debian/Ubuntu packages), builds the
# binaries, then runs every test. The tests start their own private MariaDB servers (temporary
# datadir, own socket, --skip-networking); the machine's own server is never touched.
set -eu
cd "$(dirname "$0")/.."

./tests/prerequisites.sh

cargo build --workspace --locked
# Two tests at a time; the heavy ones (VMs, Galera, the soak, the matrix) run alone (harness::gate).
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
