#!/bin/sh
# Installs the Debian/Ubuntu packages the test suite needs, each when the program (or file) it
# brings is missing. tests/run.sh runs it first; tests/tests/suite/prerequisites.rs runs it under a
# fake apt-get.
#
# What is installed is decided from what is on disk at that moment, after every install step: a
# shell remembers where it found a program (dash's `command -v` answers from that memory), and an
# install can remove a program it found before — Debian's qemu-system-x86 removes a backported
# qemu-utils, and with it qemu-img.
#
# PREREQ_PATH (default: $PATH, then /usr/sbin and /sbin) is where programs are looked for;
# PREREQ_POLICY (default /usr/sbin/policy-rc.d) is the file that keeps a package from starting the
# machine's own server while it installs; PREREQ_GALERA (default /usr/lib/galera/libgalera_smm.so)
# is the Galera provider, a library rather than a program. The test sets all three.
set -eu

search_path=${PREREQ_PATH:-$PATH:/usr/sbin:/sbin}
policy=${PREREQ_POLICY:-/usr/sbin/policy-rc.d}
galera=${PREREQ_GALERA:-/usr/lib/galera/libgalera_smm.so}

# Is program $1 on disk now? Every directory of the search path is looked at anew: no remembered path.
have() {
    (
        IFS=:
        for dir in $search_path; do
            [ -n "$dir" ] && [ -f "$dir/$1" ] && [ -x "$dir/$1" ] && exit 0
        done
        exit 1
    )
}

# The packages missing now, by the program (or file) each brings.
missing() {
    need=""
    have mariadbd || need="$need mariadb-server"
    have my_print_defaults || need="$need mariadb-client"
    have qemu-ga || need="$need qemu-guest-agent"
    have debootstrap || need="$need debootstrap"
    have sysbench || need="$need sysbench"
    # The VM tests: a Debian guest under QEMU (TCG), its disks handled with qemu-img.
    have qemu-system-x86_64 || need="$need qemu-system-x86"
    have qemu-img || need="$need qemu-utils"
    # The Galera tests: a 2-node cluster (the provider is a library, not a program) joined by rsync SST.
    [ -f "$galera" ] || need="$need galera-4"
    have rsync || need="$need rsync"
    # The metrics tests: promtool checks what the tool writes; a real node_exporter serves it.
    have promtool || need="$need prometheus"
    have prometheus-node-exporter || need="$need prometheus-node-exporter"
    # The AWS test reads the SSM document (YAML) with python3's yaml module: a package, not a program.
    python3 -c 'import yaml' 2>/dev/null || need="$need python3-yaml"
    # The install tests check install.sh --veeam's sudoers drop-in with visudo and run its scripts through sudo.
    have visudo || need="$need sudo"
    # The local-snapshot tests: a btrfs loop mount snapshotted by `freeze --run -- btrfs subvolume snapshot`.
    have mkfs.btrfs || need="$need btrfs-progs"
    echo "$need"
}

need=$(missing)
[ -n "$need" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing packages:$need; install them (as root: apt-get install -y$need) and run again" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package must not start the machine's own server: the tests start private ones.
created_policy=""
cleanup() { [ -z "$created_policy" ] || rm -f "$policy"; }
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
fi
apt-get update -qq
# Two rounds at most: an install can remove what an earlier look found (the qemu-utils case above),
# so look again on disk and install what went missing.
for round in 1 2; do
    echo "tests/run.sh: installing$need"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
    need=$(missing)
    [ -n "$need" ] || exit 0
done
echo "tests/run.sh: still missing after installing:$need (apt-get removed or did not bring them); install them by hand and run again" >&2
exit 1
