#!/bin/sh
# Builds the mysql-snapshot .deb (cargo-deb) and .rpm (cargo-generate-rpm) with one command:
# release binaries, a staging tree made by install.sh with PREFIX=/usr (so every packaged hook
# points at /usr/sbin), gzipped man pages, then both packages into target/packages/.
# It installs the two cargo tools if they are missing, and never writes outside the repository
# except through 'cargo install'.
set -eu

PROG=packaging/build.sh
PACKAGE=mysql-snapshot-freeze # the crate whose Cargo.toml holds the packaging metadata

usage() {
	cat <<'EOF'
Usage: ./packaging/build.sh [--deb-only | --rpm-only] [--no-build]

Builds target/packages/mysql-snapshot_<version>-1_<arch>.deb and
target/packages/mysql-snapshot-<version>-1.<arch>.rpm:
  /usr/sbin/mysql-snapshot-{freeze,thaw,locker,verify}     0755
  /usr/sbin/mysql-snapshot-qemu-hook                       0755  (for qemu-ga -F)
  /etc/vmware-tools/backupScripts.d/50-mysql-snapshot      0755  conffile
  /etc/qemu/fsfreeze-hook.d/mysql-snapshot                 0755  conffile
      (.rpm: /etc/qemu-ga/fsfreeze-hook.d/mysql-snapshot, the RHEL/Fedora layout)
  /etc/mysql-snapshot.cnf                                  0600  conffile
  /etc/logrotate.d/mysql-snapshot                          0644  conffile
  /usr/share/mysql-snapshot/nutanix/{pre_freeze,post_thaw} 0644  (copy to /usr/local/sbin, 0700)
  /usr/share/mysql-snapshot/gcp/{pre,post}.sh              0644  (copy to /etc/google/snapshots, 0700)
  /usr/share/mysql-snapshot/azure/mysql-snapshot-{pre,post}.sh, VMSnapshotScriptPluginConfig.json
                                                           0644  (copy to /etc/azure: 0700, 0600)
  /usr/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml  0644  (register with aws ssm)
  /usr/share/man/man8/mysql-snapshot-{freeze,thaw,locker,verify}.8.gz, man5/mysql-snapshot.cnf.5.gz
  /var/lib/mysql-snapshot                                  0700  (made by postinst / %post)

Options:
  --deb-only    build only the .deb (needs only cargo-deb)
  --rpm-only    build only the .rpm (needs only cargo-generate-rpm)
  --no-build    reuse the release binaries in the target directory instead of running
                'cargo build --release --locked'
  -h, --help    show this help

Missing tools are installed with 'cargo install --locked cargo-deb' /
'cargo install --locked cargo-generate-rpm' (crates.io must be reachable).
EOF
}

die() {
	printf '%s: error: %s\n' "$PROG" "$1" >&2
	exit 1
}

DEB=1
RPM=1
BUILD=1
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--deb-only) RPM=0 ;;
	--rpm-only) DEB=0 ;;
	--no-build) BUILD=0 ;;
	*)
		printf '%s: unknown argument: %s\n' "$PROG" "$1" >&2
		printf "Run './packaging/build.sh --help' for usage.\n" >&2
		exit 2
		;;
	esac
	shift
done
[ "$DEB" -eq 1 ] || [ "$RPM" -eq 1 ] || die "--deb-only and --rpm-only exclude each other"

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$REPO"
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH: install Rust (https://rustup.rs)"

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
BIN_DIR=$TARGET_DIR/release
# Fixed path (ignored by packaging/.gitignore): freeze/Cargo.toml names the staged files
# relative to the repository.
STAGE=$REPO/packaging/stage
OUT=$TARGET_DIR/packages

# ensure_tool SUBCOMMAND CRATE: make 'cargo SUBCOMMAND' available, installing CRATE if needed.
ensure_tool() {
	if cargo "$1" --version >/dev/null 2>&1; then
		return 0
	fi
	echo "$PROG: cargo $1 is missing; running cargo install --locked $2"
	if ! cargo install --locked "$2"; then
		die "could not install $2 ('cargo install --locked $2' failed, see above).
  It is needed to build the package; crates.io must be reachable. Install it by hand and rerun."
	fi
	cargo "$1" --version >/dev/null 2>&1 ||
		die "cargo $1 still not found after installing $2: is ~/.cargo/bin on PATH?"
}

# One build at a time: concurrent runs would share the staging tree.
mkdir -p "$OUT"
if command -v flock >/dev/null 2>&1; then
	exec 9>"$OUT/.build.lock"
	flock 9
fi

[ "$DEB" -eq 0 ] || ensure_tool deb cargo-deb
[ "$RPM" -eq 0 ] || ensure_tool generate-rpm cargo-generate-rpm

# 1. Release binaries.
if [ "$BUILD" -eq 1 ]; then
	echo "$PROG: cargo build --release --locked"
	cargo build --release --locked \
		-p mysql-snapshot-freeze -p mysql-snapshot-thaw -p mysql-snapshot-locker \
		-p mysql-snapshot-verify
fi

# 2. Staging tree: exactly what install.sh lays out for PREFIX=/usr, hooks included.
rm -rf "$STAGE"
mkdir -p "$STAGE"
if ! DESTDIR=$STAGE PREFIX=/usr QEMU_HOOK_DIR=/etc/qemu/fsfreeze-hook.d \
	"$REPO/install.sh" --no-build --bin-dir "$BIN_DIR" --all >"$STAGE.log" 2>&1; then
	cat "$STAGE.log" >&2
	die "staging with install.sh failed (see above)"
fi

# 3. Man pages, compressed as Debian policy asks (-n: no name or time stamp, reproducible).
for page in "$REPO"/packaging/man/*.[0-9]; do
	section=${page##*.}
	mkdir -p "$STAGE/usr/share/man/man$section"
	gzip -9 -n -c "$page" >"$STAGE/usr/share/man/man$section/$(basename "$page").gz"
done

# 4. Packages.
if [ "$DEB" -eq 1 ]; then
	rm -f "$OUT"/mysql-snapshot_*.deb
	cargo deb --no-build --locked -p "$PACKAGE" -o "$OUT/"
fi
if [ "$RPM" -eq 1 ]; then
	rm -f "$OUT"/mysql-snapshot-*.rpm
	cargo generate-rpm -p freeze -o "$OUT/"
fi
echo "$PROG: built:"
ls -l "$OUT"
