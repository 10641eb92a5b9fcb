#!/bin/sh
# Runs the whole test suite: installs what the tests need (Debian/Ubuntu packages), builds the
# binaries, then runs every test. The tests start their own private MariaDB servers (temporary
# datadir, own socket, --skip-networking); the machine's own server is never touched.
set -eu
cd "$(dirname "$0")/.."

# What the tests need, by the program each package brings.
need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have mariadbd || need="$need mariadb-server"
have my_print_defaults || need="$need mariadb-client"
have qemu-ga || need="$need qemu-guest-agent"
have debootstrap || need="$need debootstrap"
have sysbench || need="$need sysbench"
# The VM tests: a Debian guest under QEMU (TCG), its disks handled with qemu-img.
have qemu-system-x86_64 || need="$need qemu-system-x86"
have qemu-img || need="$need qemu-utils"
# The Galera tests: a 2-node cluster (the provider is a library, not a program) joined by rsync SST.
[ -f /usr/lib/galera/libgalera_smm.so ] || need="$need galera-4"
have rsync || need="$need rsync"
# The metrics tests: promtool checks what the tool writes; a real node_exporter serves it.
have promtool || need="$need prometheus"
have prometheus-node-exporter || need="$need prometheus-node-exporter"
# The AWS test reads the SSM document (YAML) with python3's yaml module: a package, not a program.
python3 -c 'import yaml' 2>/dev/null || need="$need python3-yaml"
if [ -n "$need" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "tests/run.sh: missing packages:$need; install them (as root: apt-get install -y$need) and run again" >&2
        exit 1
    fi
    echo "tests/run.sh: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    # The package must not start the machine's own server: the tests start private ones.
    policy=/usr/sbin/policy-rc.d
    created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
    fi
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
    # Debian's qemu-system-x86 breaks a newer qemu-utils (a backport some images carry) and apt
    # removes it: install the matching one then.
    have qemu-img || apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
    [ -n "$created_policy" ] && rm -f "$policy"
fi

cargo build --workspace --locked
# Two tests at a time; the heavy ones (VMs, Galera, the soak, the matrix) run alone (harness::gate).
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
