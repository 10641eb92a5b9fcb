#!/bin/sh
# Install (or uninstall) mysql-snapshot: the three binaries, the VMware Tools hook,
# optional legacy /usr/sbin/pre-freeze-script + post-thaw-script links, a config template,
# the info-file directory and a logrotate snippet. Run ./install.sh --help for usage.
set -eu

PROG=install.sh
MARKER='# installed by mysql-snapshot install.sh'
BINARIES='mysql-snapshot-freeze mysql-snapshot-thaw mysql-snapshot-locker'

# Paths on the target system (without DESTDIR).
HOOK=/etc/vmware-tools/backupScripts.d/50-mysql-snapshot
LEGACY_FREEZE=/usr/sbin/pre-freeze-script
LEGACY_THAW=/usr/sbin/post-thaw-script
CONFIG=/etc/mysql-snapshot.cnf
STATE_DIR=/var/lib/mysql-snapshot
MANIFEST=$STATE_DIR/install-manifest
LOGROTATE=/etc/logrotate.d/mysql-snapshot

usage() {
	cat <<EOF
Usage: ./install.sh [--no-build] [--legacy] [--bin-dir DIR] [install]
       ./install.sh uninstall
       ./install.sh --help

Installs mysql-snapshot for VMware Tools quiescing:
  \$DESTDIR\$PREFIX/sbin/mysql-snapshot-{freeze,thaw,locker}     (0755)
  \$DESTDIR$HOOK   (0755, VMware Tools hook)
  \$DESTDIR$CONFIG                        (0600, template; never overwritten)
  \$DESTDIR$STATE_DIR/                     (0700, info file + install manifest)
  \$DESTDIR$LOGROTATE                (0644)

Options:
  --no-build      do not run 'cargo build --release --locked' first
  --bin-dir DIR   take the binaries from DIR instead of
                  \${CARGO_TARGET_DIR:-<repo>/target}/release
  --legacy        also link $LEGACY_FREEZE and $LEGACY_THAW
                  to the binaries (for tools that only run the legacy scripts)
  uninstall       remove exactly what the install manifest lists
                  ($STATE_DIR/install-manifest); edited config is kept
  -h, --help      show this help

Environment:
  PREFIX   installation prefix (default /usr/local); binaries go to \$PREFIX/sbin
  DESTDIR  staging root prepended to every path (default empty); the hook still
           refers to \$PREFIX/sbin, so a staged install works once copied to /
EOF
}

say() { printf '%s\n' "$*"; }
die() {
	printf '%s: error: %s\n' "$PROG" "$1" >&2
	exit "${2:-1}"
}
bad_usage() {
	printf '%s: %s\n' "$PROG" "$1" >&2
	printf "Run './install.sh --help' for usage.\n" >&2
	exit 2
}

# ---------------------------------------------------------------- arguments
ACTION=install
BUILD=1
LEGACY=0
BIN_DIR=
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--no-build) BUILD=0 ;;
	--legacy) LEGACY=1 ;;
	--bin-dir)
		if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "--bin-dir needs a directory argument"; fi
		BIN_DIR=$2
		shift
		;;
	--bin-dir=*)
		BIN_DIR=${1#--bin-dir=}
		[ -n "$BIN_DIR" ] || bad_usage "--bin-dir needs a directory argument"
		;;
	install) ACTION=install ;;
	uninstall) ACTION=uninstall ;;
	-*) bad_usage "unknown option: $1" ;;
	*) bad_usage "unknown argument: $1 (the only actions are 'install' and 'uninstall')" ;;
	esac
	shift
done

DESTDIR=${DESTDIR-}
PREFIX=${PREFIX-/usr/local}
PREFIX=${PREFIX%/}
case $PREFIX in
/?*) ;;
*) bad_usage "PREFIX must be an absolute path such as /usr/local (got '${PREFIX}')" ;;
esac
case $PREFIX in
*[!A-Za-z0-9._/+@:-]*)
	bad_usage "PREFIX may only contain letters, digits and . _ / + @ : - (got '$PREFIX')"
	;;
esac
SBIN=$PREFIX/sbin

# Resolve relative paths against the caller's directory before changing directory.
case $DESTDIR in
'' | /*) ;;
*) DESTDIR=$PWD/$DESTDIR ;;
esac
DESTDIR=${DESTDIR%/}
case $BIN_DIR in
'' | /*) ;;
*) BIN_DIR=$PWD/$BIN_DIR ;;
esac

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd -P)
cd "$SCRIPT_DIR"

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
if [ -z "$DESTDIR" ] && [ "$IS_ROOT" -eq 0 ]; then
	die "installing into / needs root: run 'sudo ./install.sh ${ACTION}' (build first as your user
  and add --no-build if cargo is not on root's PATH), or set DESTDIR for a staged install"
fi

TMPDIR_OWN=$(mktemp -d "${TMPDIR:-/tmp}/mysql-snapshot-install.XXXXXX")
NEW_ENTRIES=$TMPDIR_OWN/entries
: >"$NEW_ENTRIES"

# ---------------------------------------------------------------- helpers
checksum() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum <"$1" | cut -d' ' -f1
	else
		cksum <"$1" | tr ' ' '-'
	fi
}

# install(1), root-owned when we are root.
inst() {
	if [ "$IS_ROOT" -eq 1 ]; then
		install -o 0 -g 0 "$@"
	else
		install "$@"
	fi
}

# record KIND PATH [EXTRA]: remember an installed item for the manifest.
record() { printf '%s\n' "$*" >>"$NEW_ENTRIES"; }

# make_dir PATH MODE: create $DESTDIR$PATH and its parents, recording each one we create.
make_dir() {
	md_path=$1
	md_mode=$2
	md_sofar=
	md_rest=${md_path#/}
	while [ -n "$md_rest" ]; do
		md_part=${md_rest%%/*}
		if [ "$md_part" = "$md_rest" ]; then md_rest=; else md_rest=${md_rest#*/}; fi
		md_sofar=$md_sofar/$md_part
		if [ ! -d "$DESTDIR$md_sofar" ]; then
			if [ -n "$md_rest" ]; then
				inst -d -m 0755 "$DESTDIR$md_sofar"
			else
				inst -d -m "$md_mode" "$DESTDIR$md_sofar"
			fi
			record dir "$md_sofar"
			say "installed directory $DESTDIR$md_sofar"
		fi
	done
	# Also (re)applies the mode and owner of a directory that already existed.
	inst -d -m "$md_mode" "$DESTDIR$md_path"
}

# Merge the entries of this run into the manifest: an entry of this run replaces an older
# entry of the same kind and path; older entries stay (a second run must not forget them).
write_manifest() {
	[ -s "$NEW_ENTRIES" ] || return 0
	[ -d "$DESTDIR$STATE_DIR" ] || return 0
	wm_old=$TMPDIR_OWN/old
	: >"$wm_old"
	if [ -f "$DESTDIR$MANIFEST" ]; then
		grep -v '^#' "$DESTDIR$MANIFEST" >"$wm_old" || true
	fi
	{
		say "# mysql-snapshot install manifest, read by './install.sh uninstall'. Do not edit."
		say "# One entry per line: KIND PATH [EXTRA]; paths are absolute, without DESTDIR."
		say "# file/hook/logrotate PATH | link PATH TARGET | config PATH SHA256 | dir PATH"
		{
			awk 'NR == FNR { seen[$1 " " $2] = 1; next } !(($1 " " $2) in seen)' \
				"$NEW_ENTRIES" "$wm_old"
			cat "$NEW_ENTRIES"
		} | LC_ALL=C sort -u
	} >"$TMPDIR_OWN/manifest"
	inst -m 0600 "$TMPDIR_OWN/manifest" "$DESTDIR$MANIFEST"
	: >"$NEW_ENTRIES"
}

on_exit() {
	oe_status=$?
	# After a failure half-way, still record what was installed so uninstall can remove it.
	if [ "$oe_status" -ne 0 ] && [ "$ACTION" = install ]; then
		write_manifest || true
	fi
	rm -rf "$TMPDIR_OWN"
	exit "$oe_status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

is_our_link() { [ -L "$1" ] && [ "$(readlink "$1")" = "$2" ]; }
has_marker() { [ -f "$1" ] && grep -qxF "$MARKER" "$1"; }

# ---------------------------------------------------------------- uninstall
do_uninstall() {
	if [ ! -f "$DESTDIR$MANIFEST" ]; then
		say "nothing to uninstall: no manifest at $DESTDIR$MANIFEST"
		say "(install.sh did not install mysql-snapshot with DESTDIR='$DESTDIR'; nothing was removed)"
		exit 0
	fi
	dirs=$TMPDIR_OWN/dirs
	: >"$dirs"
	while read -r kind path extra; do
		case $kind in '' | '#'*) continue ;; esac
		case $path in
		/*) ;;
		*)
			say "skipped malformed manifest line: $kind $path $extra" >&2
			continue
			;;
		esac
		target=$DESTDIR$path
		case $kind in
		file | logrotate)
			if [ -e "$target" ] || [ -L "$target" ]; then
				rm -f "$target"
				say "removed $target"
			else
				say "already gone $target"
			fi
			;;
		hook)
			if has_marker "$target"; then
				rm -f "$target"
				say "removed $target"
			elif [ -e "$target" ] || [ -L "$target" ]; then
				say "kept $target (no longer mysql-snapshot's: its marker line is gone)"
			else
				say "already gone $target"
			fi
			;;
		link)
			if is_our_link "$target" "$extra"; then
				rm -f "$target"
				say "removed $target"
			elif [ -e "$target" ] || [ -L "$target" ]; then
				say "kept $target (no longer our symlink to $extra)"
			else
				say "already gone $target"
			fi
			;;
		config)
			if [ ! -e "$target" ]; then
				say "already gone $target"
			elif [ -f "$target" ] && [ "$(checksum "$target")" = "$extra" ]; then
				rm -f "$target"
				say "removed $target"
			else
				say "kept $target (changed since install; delete it yourself if it is no longer needed)"
			fi
			;;
		dir) printf '%s\n' "$target" >>"$dirs" ;;
		*) say "skipped unknown manifest entry: $kind $path" >&2 ;;
		esac
	done <"$DESTDIR$MANIFEST"

	rm -f "$DESTDIR$MANIFEST"
	say "removed $DESTDIR$MANIFEST"

	# Children sort after their parents, so reverse order removes the deepest first.
	sort -r -u "$dirs" | while IFS= read -r dir; do
		if [ ! -d "$dir" ]; then
			continue
		elif rmdir "$dir" 2>/dev/null; then
			say "removed directory $dir"
		else
			say "kept directory $dir (not empty)"
		fi
	done
}

# ---------------------------------------------------------------- install
write_hook() {
	cat >"$1" <<EOF
#!/bin/sh
$MARKER
# VMware Tools (vmtoolsd) runs every file in /etc/vmware-tools/backupScripts.d as
#   bash -c '"<this file>" <phase>'
# with phase freeze, thaw or freezeFail. The phase is matched case-insensitively (the sample
# tools.conf spells it freezefail) and extra arguments are ignored.
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default: $SBIN, fixed at
# install time). It exists so that a staged install under a DESTDIR can be exercised by tests;
# vmtoolsd does not set it.
SBIN=\${MYSQL_SNAPSHOT_SBIN:-$SBIN}
case \${1-} in
[Ff][Rr][Ee][Ee][Zz][Ee])
	exec "\$SBIN/mysql-snapshot-freeze" freeze ;;
[Tt][Hh][Aa][Ww])
	exec "\$SBIN/mysql-snapshot-thaw" thaw ;;
[Ff][Rr][Ee][Ee][Zz][Ee][Ff][Aa][Ii][Ll])
	exec "\$SBIN/mysql-snapshot-thaw" freezeFail ;;
*)
	echo "\$0: unknown phase '\${1-}': expected freeze, thaw or freezeFail" >&2
	exit 2 ;;
esac
EOF
}

write_config_template() {
	cat >"$1" <<'EOF'
# mysql-snapshot configuration (MySQL option-file syntax). Mode 0600: it may hold a password.
# Every setting below shows its built-in default; uncomment to change it.
[client]
# user = root                  # default: the effective Unix user (root under VMware Tools)
# password =                   # not needed for root on a stock MariaDB (unix_socket auth)
# socket = /run/mysqld/mysqld.sock
# host =                       # set to use TCP instead of the socket
# port = 3306

[mysql-snapshot]
# snapshot-timeout = 600       # seconds freeze may take in all before it gives up
# long-query-threshold = 10    # seconds; a statement running longer means "not a quiet moment"
# ignore-commands = Sleep,Daemon,Binlog Dump,Binlog Dump GTID,Connect,Delayed insert
# lock-wait-timeout = 2        # seconds; server-side cap on one lock attempt
# max-lock-time = 60           # seconds; the locker releases by itself after holding this long
# error-exit-code = 1          # exit status of freeze and thaw on failure
# run-dir = /run/mysql-snapshot
# info-file = /var/lib/mysql-snapshot/snapshot-info.json
# log-file =                   # optional log file in addition to syslog
# syslog-facility = daemon
# syslog-socket = /dev/log
EOF
}

# Refuse to replace a legacy script that is not our symlink (e.g. the old PHP one).
check_legacy_free() {
	clf_path=$DESTDIR$1
	if { [ -e "$clf_path" ] || [ -L "$clf_path" ]; } && ! is_our_link "$clf_path" "$2"; then
		die "$clf_path already exists and is not mysql-snapshot's symlink to $2:
  it belongs to something else (for example the old PHP vmware-mysql-snapshot script).
  Nothing was installed. Either move it aside and rerun, e.g.
    mv '$clf_path' '$clf_path.disabled' && ./install.sh --legacy ...
  or install without --legacy: the backupScripts.d hook alone is enough for VMware Tools."
	fi
}

install_legacy_link() {
	ill_path=$DESTDIR$1
	if is_our_link "$ill_path" "$2"; then
		say "kept existing $ill_path -> $2"
	else
		ln -s "$2" "$ill_path"
		say "installed $ill_path -> $2"
	fi
	record link "$1" "$2"
}

check_not_foreign() {
	if { [ -e "$DESTDIR$1" ] || [ -L "$DESTDIR$1" ]; } && ! has_marker "$DESTDIR$1"; then
		die "$DESTDIR$1 already exists and was not installed by mysql-snapshot's install.sh
  (it lacks the line '$MARKER').
  Nothing was installed. Move it aside if it is no longer needed, then rerun."
	fi
}

do_install() {
	# 1. Build and find the binaries.
	if [ -z "$BIN_DIR" ]; then
		target_dir=${CARGO_TARGET_DIR:-$SCRIPT_DIR/target}
		case $target_dir in /*) ;; *) target_dir=$SCRIPT_DIR/$target_dir ;; esac
		BIN_DIR=$target_dir/release
	fi
	if [ "$BUILD" -eq 1 ]; then
		command -v cargo >/dev/null 2>&1 ||
			die "cargo not found on PATH. Install Rust (https://rustup.rs), or build first with
  'cargo build --release --locked' as your user and rerun with --no-build
  (under sudo, ~/.cargo/bin is usually not on PATH)."
		say "running cargo build --release --locked in $SCRIPT_DIR"
		cargo build --release --locked || die "cargo build --release --locked failed (see above)"
	fi
	for b in $BINARIES; do
		if [ ! -f "$BIN_DIR/$b" ] || [ ! -x "$BIN_DIR/$b" ]; then
			if [ "$BUILD" -eq 1 ]; then
				die "$BIN_DIR/$b is missing after the build; pass --bin-dir DIR if the binaries are elsewhere"
			fi
			die "$BIN_DIR/$b is missing or not executable: run 'cargo build --release --locked'
  in $SCRIPT_DIR (or run ./install.sh without --no-build), or pass --bin-dir DIR"
		fi
	done

	# 2. Refuse early, before touching anything, if a path we would write belongs to someone else.
	check_not_foreign "$HOOK"
	check_not_foreign "$LOGROTATE"
	if [ "$LEGACY" -eq 1 ]; then
		check_legacy_free "$LEGACY_FREEZE" "$SBIN/mysql-snapshot-freeze"
		check_legacy_free "$LEGACY_THAW" "$SBIN/mysql-snapshot-thaw"
	fi

	# 3. Install. The state directory comes first: it holds the manifest.
	make_dir "$STATE_DIR" 0700

	make_dir "$SBIN" 0755
	for b in $BINARIES; do
		inst -m 0755 "$BIN_DIR/$b" "$DESTDIR$SBIN/$b"
		record file "$SBIN/$b"
		say "installed $DESTDIR$SBIN/$b"
	done

	make_dir "$(dirname "$HOOK")" 0755
	write_hook "$TMPDIR_OWN/hook"
	inst -m 0755 "$TMPDIR_OWN/hook" "$DESTDIR$HOOK"
	record hook "$HOOK"
	say "installed $DESTDIR$HOOK"

	if [ "$LEGACY" -eq 1 ]; then
		make_dir "$(dirname "$LEGACY_FREEZE")" 0755
		install_legacy_link "$LEGACY_FREEZE" "$SBIN/mysql-snapshot-freeze"
		install_legacy_link "$LEGACY_THAW" "$SBIN/mysql-snapshot-thaw"
		say "note: VMware Tools versions that read backupScripts.d run both the legacy scripts and"
		say "  $HOOK, i.e. mysql-snapshot twice per phase; use --legacy only where that is intended"
	fi

	make_dir "$(dirname "$CONFIG")" 0755
	if [ -e "$DESTDIR$CONFIG" ] || [ -L "$DESTDIR$CONFIG" ]; then
		say "kept existing $DESTDIR$CONFIG"
	else
		write_config_template "$TMPDIR_OWN/config"
		inst -m 0600 "$TMPDIR_OWN/config" "$DESTDIR$CONFIG"
		record config "$CONFIG" "$(checksum "$TMPDIR_OWN/config")"
		say "installed $DESTDIR$CONFIG"
	fi

	make_dir "$(dirname "$LOGROTATE")" 0755
	inst -m 0644 "$SCRIPT_DIR/logrotate/mysql-snapshot" "$DESTDIR$LOGROTATE"
	record logrotate "$LOGROTATE"
	say "installed $DESTDIR$LOGROTATE"

	write_manifest
	say "installed $DESTDIR$MANIFEST"
}

case $ACTION in
install) do_install ;;
uninstall) do_uninstall ;;
esac
