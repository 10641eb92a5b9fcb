#!/usr/bin/env bash
# The benchmark in one command (see BENCHMARKS.md): installs what it needs when run as
# root on Debian (mariadb-server for the private servers, strace for the profile, time for peak
# RSS), builds the release binaries, and runs every figure. Extra arguments go to the runner, e.g.
# `--runs 30` or `--only latency,release`. It starts private servers only (MySQL 9.7 from the test
# harness's cached chroot, built on first use); the machine's own server is never used.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client)
[ -x /usr/bin/strace ] || missing+=(strace)
[ -x /usr/bin/time ] || missing+=(time)
# The vm figure: a Debian guest under QEMU, its image built with debootstrap on first use.
[ -x /usr/bin/qemu-system-x86_64 ] || missing+=(qemu-system-x86)
[ -x /usr/bin/qemu-img ] || missing+=(qemu-utils)
[ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# The under-load figure.
[ -x /usr/bin/sysbench ] || missing+=(sysbench)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench/run.sh: missing packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Debian's qemu-system-x86 breaks a newer qemu-utils (a backport some images carry) and apt
    # removes it: install the matching one then.
    [ -x /usr/bin/qemu-img ] ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils
fi

echo "load before the build: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo build --release --workspace --locked
exec cargo run --release --locked -p mysql-snapshot-bench -- "$@"
