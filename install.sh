#!/bin/sh
# Install (or uninstall) mysql-snapshot: the four binaries, the hypervisor hooks (VMware Tools
# backupScripts.d or legacy scripts, QEMU guest agent, Nutanix Guest Tools, Google Compute
# Engine, Azure Backup, Veeam's job scripts with their sudoers grant), a config template, the info-file directory and a logrotate snippet.
# Run ./install.sh --help for usage.
# It never overwrites a file it did not install, and uninstall removes only what it recorded.
set -eu

PROG=install.sh
MARKER='# installed by mysql-snapshot install.sh'
BINARIES='mysql-snapshot-freeze mysql-snapshot-thaw mysql-snapshot-locker mysql-snapshot-verify'
# Each binary is its own package's: build those and nothing else of the workspace.
CARGO_PACKAGES='-p mysql-snapshot-freeze -p mysql-snapshot-thaw -p mysql-snapshot-locker -p mysql-snapshot-verify'

# Paths on the target system (without DESTDIR).
HOOK=/etc/vmware-tools/backupScripts.d/50-mysql-snapshot
LEGACY_FREEZE=/usr/sbin/pre-freeze-script
LEGACY_THAW=/usr/sbin/post-thaw-script
NUTANIX_FREEZE=/usr/local/sbin/pre_freeze
NUTANIX_THAW=/usr/local/sbin/post_thaw
GCP_DIR=/etc/google/snapshots
GCP_PRE=$GCP_DIR/pre.sh
GCP_POST=$GCP_DIR/post.sh
GCP_AGENT_CONFIG=/etc/default/instance_configs.cfg
AZURE_DIR=/etc/azure
AZURE_PRE=$AZURE_DIR/mysql-snapshot-pre.sh
AZURE_POST=$AZURE_DIR/mysql-snapshot-post.sh
AZURE_CONFIG=$AZURE_DIR/VMSnapshotScriptPluginConfig.json
CONFIG=/etc/mysql-snapshot.cnf
STATE_DIR=/var/lib/mysql-snapshot
MANIFEST=$STATE_DIR/install-manifest
LOGROTATE=/etc/logrotate.d/mysql-snapshot
VEEAM_SUDOERS=/etc/sudoers.d/mysql-snapshot-veeam

# Why the VMware hook and the legacy scripts are never installed together.
DOUBLE_RUN_WHY="VMware Tools that read backupScripts.d also run the legacy scripts, so with both
  mysql-snapshot would freeze twice per phase; the second freeze is refused as \"another
  snapshot in progress\" and the snapshot fails"

usage() {
	cat <<EOF
Usage: ./install.sh [--no-build] [--bin-dir DIR] [HOOK FLAGS] [install]
       ./install.sh uninstall
       ./install.sh --help

Installs mysql-snapshot:
  \$DESTDIR\$PREFIX/sbin/mysql-snapshot-{freeze,thaw,locker,verify} (0755)
  \$DESTDIR$CONFIG                        (0600, template; never overwritten)
  \$DESTDIR$STATE_DIR/                     (0700, info file + install manifest)
  \$DESTDIR$LOGROTATE                (0644)
and the hooks the flags select (--vmware when no hook flag is given):

Hook flags:
  --vmware        VMware Tools: $HOOK (0755)
  --legacy        VMware Tools, legacy scripts instead: symlinks $LEGACY_FREEZE
                  and $LEGACY_THAW to the binaries. Never together with the
                  backupScripts.d hook (an earlier one of ours is removed): VMware Tools that
                  read backupScripts.d also run the legacy scripts, and freeze would run twice.
                  Use it for tools that only run the legacy scripts (older VMware Tools,
                  some backup products). A legacy script that is not ours is never replaced.
  --qemu          QEMU guest agent: /etc/qemu/fsfreeze-hook.d/mysql-snapshot (0755), run by
                  qemu-ga's stock dispatcher /etc/qemu/fsfreeze-hook, which IGNORES hook exit
                  codes: a refused lock does not stop the snapshot. (If /etc/qemu-ga/fsfreeze-hook
                  exists and /etc/qemu/fsfreeze-hook does not, as on RHEL/Fedora, the hook goes to
                  /etc/qemu-ga/fsfreeze-hook.d instead; QEMU_HOOK_DIR overrides.)
  --qemu-direct   --qemu, plus \$PREFIX/sbin/mysql-snapshot-qemu-hook (0755): our own dispatcher
                  for qemu-ga -F, which passes a failed freeze on so the snapshot fails. It
                  runs the other fsfreeze-hook.d scripts too (before our freeze, after our
                  thaw) and passes their failures on as well
  --nutanix       Nutanix Guest Tools: $NUTANIX_FREEZE and $NUTANIX_THAW
                  (root-owned, 0700; fixed paths, not under \$PREFIX)
  --gcp           Google Compute Engine guest-flush snapshots (google-guest-agent):
                  $GCP_PRE and $GCP_POST
                  (root-owned, 0700; the directory is created 0700 if absent). Google does
                  not freeze the filesystems: the hooks make freeze sync them once the lock
                  is held. The agent runs them only with [Snapshots] enabled = true in
                  $GCP_AGENT_CONFIG (install.sh never edits that file).
  --azure         Azure Backup (VMSnapshot ScriptRunner plugin): $AZURE_PRE
                  and $AZURE_POST (root-owned, 0700), and
                  $AZURE_CONFIG (0600) naming them, written only if
                  absent (an existing one is never changed: point its preScriptLocation and
                  postScriptLocation at the two scripts yourself)
  --aws           AWS Data Lifecycle Manager: no hook on the machine (DLM runs an SSM document
                  you register); installs the binaries and the document, pointed at
                  \$PREFIX/sbin, as \$PREFIX/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml
  --veeam         Veeam job scripts run over SSH by a non-root account with sudo:
                  \$PREFIX/share/mysql-snapshot/veeam/pre-freeze.sh and post-thaw.sh (0755; copy
                  them to the Veeam server, or name them in a Veeam Agent job), and
                  $VEEAM_SUDOERS (0440), which lets that account run exactly
                  their two commands as root (checked with visudo before it is installed)
  --veeam-user NAME  the account Veeam logs in as (default veeam); implies --veeam
  --all           --vmware --qemu-direct --nutanix --gcp --azure --aws
                  (with --legacy: legacy instead of --vmware; never --veeam: a sudo grant is
                  yours to ask for)

Options:
  --no-build      do not run 'cargo build --release --locked' first
  --bin-dir DIR   take the binaries from DIR instead of
                  \${CARGO_TARGET_DIR:-<repo>/target}/release
  uninstall       remove exactly what the install manifest lists
                  ($STATE_DIR/install-manifest); edited config is kept
  -h, --help      show this help

Environment:
  PREFIX         installation prefix (default /usr/local); binaries go to \$PREFIX/sbin
  DESTDIR        staging root prepended to every path (default empty); the hooks still
                 refer to \$PREFIX/sbin, so a staged install works once copied to /
  QEMU_HOOK_DIR  directory for the --qemu hook (default /etc/qemu/fsfreeze-hook.d); the
                 --qemu-direct dispatcher reads the default directory whatever it says
Every installed hook reads MYSQL_SNAPSHOT_SBIN at run time (default: \$PREFIX/sbin as
installed) to find the binaries; it exists for tests of a staged install.
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
BIN_DIR=
VMWARE=0
VMWARE_FLAG=0
LEGACY=0
QEMU=0
QEMU_DIRECT=0
NUTANIX=0
GCP=0
AZURE=0
AWS=0
VEEAM=0
VEEAM_USER=veeam
ALL=0
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--no-build) BUILD=0 ;;
	--vmware) VMWARE_FLAG=1 ;;
	--legacy) LEGACY=1 ;;
	--qemu) QEMU=1 ;;
	--qemu-direct)
		QEMU=1
		QEMU_DIRECT=1
		;;
	--nutanix) NUTANIX=1 ;;
	--gcp) GCP=1 ;;
	--azure) AZURE=1 ;;
	--aws) AWS=1 ;;
	--veeam) VEEAM=1 ;;
	--veeam-user)
		if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "--veeam-user needs an account name"; fi
		VEEAM=1
		VEEAM_USER=$2
		shift
		;;
	--veeam-user=*)
		VEEAM=1
		VEEAM_USER=${1#--veeam-user=}
		;;
	--all) ALL=1 ;;
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

if [ "$VMWARE_FLAG" -eq 1 ] && [ "$LEGACY" -eq 1 ]; then
	bad_usage "--vmware and --legacy exclude each other: $DOUBLE_RUN_WHY.
  Choose one (--vmware, the default, unless your tools only run the legacy scripts)"
fi
if [ "$ALL" -eq 1 ]; then
	QEMU=1
	QEMU_DIRECT=1
	NUTANIX=1
	GCP=1
	AZURE=1
	AWS=1
	[ "$LEGACY" -eq 1 ] || VMWARE=1
fi
[ "$VMWARE_FLAG" -eq 1 ] && VMWARE=1
if [ $((VMWARE + LEGACY + QEMU + NUTANIX + GCP + AZURE + AWS + VEEAM)) -eq 0 ]; then
	VMWARE=1
fi
if [ "$ACTION" = uninstall ] && [ $((VMWARE_FLAG + LEGACY + QEMU + NUTANIX + GCP + AZURE + AWS + VEEAM + ALL)) -gt 0 ]; then
	bad_usage "uninstall takes no hook flags: it removes everything the install manifest lists"
fi

# A user name as useradd takes it; nothing in it is special to sudoers or to sed below.
case $VEEAM_USER in
[A-Za-z_]*) ;;
*) bad_usage "--veeam-user must start with a letter or _ (got '$VEEAM_USER')" ;;
esac
case $VEEAM_USER in
*[!A-Za-z0-9_.-]* | ALL) bad_usage "--veeam-user: an account name of letters, digits and . _ - (got '$VEEAM_USER')" ;;
esac

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
QEMU_DIRECT_HOOK=$SBIN/mysql-snapshot-qemu-hook
AWS_DOCUMENT=$PREFIX/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml
VEEAM_PRE=$PREFIX/share/mysql-snapshot/veeam/pre-freeze.sh
VEEAM_POST=$PREFIX/share/mysql-snapshot/veeam/post-thaw.sh

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

# The stock QEMU dispatcher lives in /etc/qemu (upstream, Debian) or /etc/qemu-ga (RHEL, Fedora).
# mysql-snapshot-qemu-hook applies the same rule when it runs, QEMU_HOOK_DIR aside.
if [ -e "$DESTDIR/etc/qemu-ga/fsfreeze-hook" ] && [ ! -e "$DESTDIR/etc/qemu/fsfreeze-hook" ]; then
	QEMU_STOCK_HOOK_DIR=/etc/qemu-ga/fsfreeze-hook.d
	QEMU_STOCK_LOG=/var/log/qemu-ga/fsfreeze-hook.log
else
	QEMU_STOCK_HOOK_DIR=/etc/qemu/fsfreeze-hook.d
	QEMU_STOCK_LOG=/var/log/qga-fsfreeze-hook.log
fi
if [ -n "${QEMU_HOOK_DIR-}" ]; then
	QEMU_HOOK_DIR=${QEMU_HOOK_DIR%/}
	case $QEMU_HOOK_DIR in
	/?*) ;;
	*) bad_usage "QEMU_HOOK_DIR must be an absolute path (got '$QEMU_HOOK_DIR')" ;;
	esac
else
	QEMU_HOOK_DIR=$QEMU_STOCK_HOOK_DIR
fi
QEMU_HOOK=$QEMU_HOOK_DIR/mysql-snapshot
QEMU_DISPATCHER=${QEMU_HOOK_DIR%.d}

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
FORGET=$TMPDIR_OWN/forget
: >"$NEW_ENTRIES"
: >"$FORGET"

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
# forget KIND PATH: drop an item this run removed from the manifest.
forget() { printf '%s %s\n' "$1" "$2" >>"$FORGET"; }

# make_dir PATH MODE [keep]: create $DESTDIR$PATH and its parents, recording each one we create.
# With keep, a PATH that already existed keeps its mode and owner (it belongs to someone else).
make_dir() {
	md_path=$1
	md_mode=$2
	md_keep=${3-}
	if [ -n "$md_keep" ] && [ -d "$DESTDIR$md_path" ]; then
		return 0
	fi
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
# entry of the same kind and path; older entries stay (a second run must not forget them)
# unless this run removed the item.
write_manifest() {
	[ -s "$NEW_ENTRIES" ] || [ -s "$FORGET" ] || return 0
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
			awk 'FILENAME == ARGV[1] || FILENAME == ARGV[2] { seen[$1 " " $2] = 1; next }
				!(($1 " " $2) in seen)' "$NEW_ENTRIES" "$FORGET" "$wm_old"
			cat "$NEW_ENTRIES"
		} | LC_ALL=C sort -u
	} >"$TMPDIR_OWN/manifest"
	inst -m 0600 "$TMPDIR_OWN/manifest" "$DESTDIR$MANIFEST"
	: >"$NEW_ENTRIES"
	: >"$FORGET"
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
present() { [ -e "$1" ] || [ -L "$1" ]; }

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
			if present "$target"; then
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
			elif present "$target"; then
				say "kept $target (no longer mysql-snapshot's: its marker line is gone)"
			else
				say "already gone $target"
			fi
			;;
		link)
			if is_our_link "$target" "$extra"; then
				rm -f "$target"
				say "removed $target"
			elif present "$target"; then
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
# hook_template NAME OUT: hooks/NAME with @SBIN@ replaced by the binaries' directory.
hook_template() {
	ht_src=$SCRIPT_DIR/hooks/$1
	[ -f "$ht_src" ] || die "$ht_src is missing: install.sh needs the hooks/ directory next to it"
	# SBIN holds only the characters PREFIX allows above: none of them is special to sed here.
	sed "s|@SBIN@|$SBIN|g" "$ht_src" >"$2"
}

# install_hook NAME PATH MODE: install hooks/NAME as $DESTDIR$PATH.
install_hook() {
	make_dir "$(dirname "$2")" 0755
	install_hook_file "$@"
}

# install_hook_file NAME PATH MODE: install_hook into a directory that already exists.
install_hook_file() {
	hook_template "$1" "$TMPDIR_OWN/hook"
	inst -m "$3" "$TMPDIR_OWN/hook" "$DESTDIR$2"
	record hook "$2"
	say "installed $DESTDIR$2"
}

write_config_template() {
	cat >"$1" <<'EOF'
# mysql-snapshot configuration (MySQL option-file syntax). Mode 0600: it may hold a password.
# Every setting below shows its built-in default; uncomment to change it.
# See mysql-snapshot.cnf(5) for what each one does.
[client]
# user = root                  # default: the effective Unix user (root under the hypervisor agents)
# password =                   # not needed for root on a stock MariaDB (unix_socket auth)
# socket = /run/mysqld/mysqld.sock
# host =                       # set to use TCP instead of the socket
# port = 3306

[mysql-snapshot]
# snapshot-timeout = 600       # seconds freeze may take in all before it gives up
# long-query-threshold = 10    # seconds; a statement running longer means "not a quiet moment"
# ignore-commands = Sleep,Daemon,Binlog Dump,Binlog Dump GTID,Connect,Delayed insert
# lock-mode = auto             # auto (backup-stage on MariaDB, backup-lock on MySQL 8.0.14+ where it can, else ftwrl), ftwrl, backup-stage or backup-lock (docs/consistency.md)
# lock-wait-timeout = 2        # seconds; server-side cap on one lock attempt
# pre-flush = on               # FLUSH NO_WRITE_TO_BINLOG TABLES before FLUSH TABLES WITH READ LOCK
# kill-long-queries = off      # off, select or all: statements a lock attempt may KILL QUERY
# kill-long-queries-timeout = 1  # seconds an attempt waits before killing; below lock-wait-timeout
# max-lock-time = 60           # seconds; the locker releases by itself after holding this long
# error-exit-code = 1          # exit status of freeze and thaw on failure
# run-dir = /run/mysql-snapshot
# info-file = /var/lib/mysql-snapshot/snapshot-info.json
# log-file =                   # optional log file in addition to syslog
# syslog-facility = daemon
# syslog-socket = /dev/log
# sync-filesystems = auto      # auto, on or off: syncfs the server's filesystems once locked (auto: when the hook says its platform does not freeze)
# sync-timeout = 30            # seconds the syncs may take before the freeze fails and releases
# metrics-file =               # Prometheus textfile, e.g. /var/lib/prometheus/node-exporter/mysql_snapshot.prom
# replica-safe = off           # on a replica: stop its SQL threads while none holds a temporary table, restart them at release
# rotate-binlog = off          # FLUSH BINARY LOGS under the lock: the next binlog (named in the info file) starts the replay for point-in-time recovery
EOF
}

# Refuse to replace a legacy script that is not our symlink (e.g. the old PHP one).
check_legacy_free() {
	clf_path=$DESTDIR$1
	if present "$clf_path" && ! is_our_link "$clf_path" "$2"; then
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
	if present "$DESTDIR$1" && ! has_marker "$DESTDIR$1"; then
		die "$DESTDIR$1 already exists and was not installed by mysql-snapshot's install.sh
  (it lacks the line '$MARKER').
  Nothing was installed. Move it aside if it is no longer needed, then rerun."
	fi
}

# --legacy: our backupScripts.d hook from an earlier install must go (never both).
remove_vmware_hook() {
	if has_marker "$DESTDIR$HOOK"; then
		rm -f "$DESTDIR$HOOK"
		forget hook "$HOOK"
		say "removed $DESTDIR$HOOK (installed earlier): $DOUBLE_RUN_WHY"
	elif present "$DESTDIR$HOOK"; then
		say "WARNING: $DESTDIR$HOOK exists but is not ours (no marker line); it was left alone."
		say "  If it runs mysql-snapshot, remove it: $DOUBLE_RUN_WHY"
	fi
}

# --vmware: our legacy links from an earlier --legacy install must go (never both).
remove_legacy_links() {
	rll_removed=0
	for rll in "$LEGACY_FREEZE $SBIN/mysql-snapshot-freeze" "$LEGACY_THAW $SBIN/mysql-snapshot-thaw"; do
		rll_path=${rll%% *}
		rll_target=${rll#* }
		if is_our_link "$DESTDIR$rll_path" "$rll_target"; then
			rm -f "$DESTDIR$rll_path"
			forget link "$rll_path"
			say "removed $DESTDIR$rll_path (our legacy link from an earlier --legacy install)"
			rll_removed=1
		elif present "$DESTDIR$rll_path"; then
			say "WARNING: $DESTDIR$rll_path exists and is not ours (the old PHP script?). VMware Tools"
			say "  runs it as well as $HOOK; if it takes a database lock too,"
			say "  remove it or move it aside."
		fi
	done
	if [ "$rll_removed" -eq 1 ]; then
		say "  why: $DOUBLE_RUN_WHY"
	fi
}

# The sudoers drop-in for --veeam, checked with visudo first: a broken sudoers file can lock
# every account out of sudo.
install_veeam_sudoers() {
	ivs_source=$SCRIPT_DIR/packaging/veeam/sudoers
	[ -f "$ivs_source" ] || die "$ivs_source is missing: install.sh needs the packaging/ directory next to it"
	sed "s|@SBIN@|$SBIN|g; s|@USER@|$VEEAM_USER|g" "$ivs_source" >"$TMPDIR_OWN/sudoers"
	if command -v visudo >/dev/null 2>&1; then
		visudo -cqf "$TMPDIR_OWN/sudoers" >/dev/null ||
			die "visudo rejects the sudoers drop-in for --veeam-user $VEEAM_USER; nothing was written to $DESTDIR$VEEAM_SUDOERS"
	else
		say "WARNING: visudo not found: the sudoers drop-in was not checked (is sudo installed?)"
	fi
	# Debian's /etc/sudoers.d is 0755, RHEL's 0750: one that exists keeps its mode.
	make_dir "$(dirname "$VEEAM_SUDOERS")" 0750 keep
	inst -m 0440 "$TMPDIR_OWN/sudoers" "$DESTDIR$VEEAM_SUDOERS"
	record hook "$VEEAM_SUDOERS"
	say "installed $DESTDIR$VEEAM_SUDOERS"
}

veeam_notes() {
	say ""
	say "Veeam: $VEEAM_USER may now run, as root and without a password, exactly"
	say "  $SBIN/mysql-snapshot-freeze --caller veeam --snapshot-timeout 540 freeze"
	say "  $SBIN/mysql-snapshot-thaw --caller veeam thaw"
	say "  Name $VEEAM_PRE and $VEEAM_POST as the job's pre-freeze"
	say "  and post-thaw scripts (Backup & Replication: copy them to the Veeam server; Agent for"
	say "  Linux: these paths), and give the job $VEEAM_USER's SSH credentials."
	say "  The lock outlives the SSH session: freeze starts its locker outside it (systemd-run)."
}

qemu_notes() {
	say ""
	say "QEMU guest agent: $QEMU_HOOK is run by qemu-ga's stock dispatcher"
	say "  $QEMU_DISPATCHER, which IGNORES the exit status of the scripts it runs: if"
	say "  mysql-snapshot cannot take the lock, the snapshot is still taken (crash-consistent, not"
	say "  application-consistent) and only the log says so. For a refused lock to fail the"
	say "  snapshot, use --qemu-direct and point qemu-ga at $QEMU_DIRECT_HOOK."
	if [ "$QEMU_DIRECT" -eq 0 ]; then
		say "  qemu-ga runs no hook at all unless told to (Debian's service starts plain qemu-ga):"
		say "  add 'fsfreeze-hook=$QEMU_DISPATCHER' under [general] in /etc/qemu/qemu-ga.conf"
		say "  (RHEL/Fedora: FSFREEZE_HOOK_PATHNAME in /etc/sysconfig/qemu-ga), then restart qemu-guest-agent."
		return 0
	fi
	say ""
	say "To make qemu-ga run $QEMU_DIRECT_HOOK (its -F option):"
	say "  Debian/Ubuntu (the systemd service starts plain /usr/sbin/qemu-ga, which reads"
	say "  /etc/qemu/qemu-ga.conf): put these lines in /etc/qemu/qemu-ga.conf"
	say "      [general]"
	say "      fsfreeze-hook=$QEMU_DIRECT_HOOK"
	say "    (or add the fsfreeze-hook line to its existing [general] section), then"
	say "      systemctl restart qemu-guest-agent"
	say "    Check with: qemu-ga -D | grep fsfreeze-hook"
	say "    (sysvinit: DAEMON_ARGS=\"-F$QEMU_DIRECT_HOOK\" in /etc/default/qemu-guest-agent)"
	say "  RHEL/Fedora: FSFREEZE_HOOK_PATHNAME=$QEMU_DIRECT_HOOK in /etc/sysconfig/qemu-ga,"
	say "    then systemctl restart qemu-guest-agent"
	say "  It replaces the stock dispatcher and runs the other scripts in $QEMU_STOCK_HOOK_DIR"
	say "  itself (all but our mysql-snapshot there): theirs before our freeze and after our"
	say "  thaw; a failure of any fails the freeze or the thaw. Their output goes to"
	say "  $QEMU_STOCK_LOG, as under the stock dispatcher."
	if [ "$QEMU_HOOK_DIR" != "$QEMU_STOCK_HOOK_DIR" ]; then
		say "  QEMU_HOOK_DIR does not change that: it reads $QEMU_STOCK_HOOK_DIR."
	fi
}

gcp_notes() {
	say ""
	say "Google Compute Engine: google-guest-agent runs $GCP_PRE and"
	say "  $GCP_POST for guest-flush snapshots only when told to. install.sh never"
	say "  edits $GCP_AGENT_CONFIG: put these lines in it (or add them to its"
	say "  existing [Snapshots] section)"
	say "      [Snapshots]"
	say "      enabled = true"
	say "      timeout_in_seconds = 60"
	say "  then: systemctl restart google-guest-agent"
	say "  and take snapshots with guest flush (gcloud compute disks snapshot ... --guest-flush)."
	say "  At timeout_in_seconds (default 60) the agent kills pre.sh and the snapshot fails: keep"
	say "  snapshot-timeout in $CONFIG below it (the built-in default is 600)."
}

azure_notes() {
	say ""
	if [ "$AZURE_CONFIG_KEPT" -eq 1 ]; then
		if tr -d '[:space:]' 2>/dev/null <"$DESTDIR$AZURE_CONFIG" |
			grep -qF "\"preScriptLocation\":\"$AZURE_PRE\"" &&
			tr -d '[:space:]' 2>/dev/null <"$DESTDIR$AZURE_CONFIG" |
			grep -qF "\"postScriptLocation\":\"$AZURE_POST\""; then
			say "Azure Backup: the existing $AZURE_CONFIG already names mysql-snapshot's scripts."
		else
			say "Azure Backup: $DESTDIR$AZURE_CONFIG already exists and was left unchanged."
			say "  For Azure Backup to run mysql-snapshot, set these two keys in it:"
			say "      \"preScriptLocation\": \"$AZURE_PRE\","
			say "      \"postScriptLocation\": \"$AZURE_POST\","
			say "  (with \"pluginName\": \"ScriptRunner\"; the file must stay root-owned, mode 0600)."
		fi
	else
		say "Azure Backup: $AZURE_CONFIG names mysql-snapshot's"
		say "  scripts; the VMSnapshot extension runs them at the next application-consistent backup."
	fi
	say "  With \"fsFreezeEnabled\": false the pre-script makes freeze sync the filesystems itself."
	say "  timeoutInSeconds (60 in our template) should exceed snapshot-timeout in $CONFIG"
	say "  (the built-in default is 600)."
}

aws_notes() {
	say ""
	say "AWS Data Lifecycle Manager: register the SSM document (once per region) and name it in"
	say "  the DLM policy's pre/post scripts (see the comments at the top of the document):"
	say "      aws ssm create-document --name mysql-snapshot --document-type Command \\"
	say "          --document-format YAML --content file://$AWS_DOCUMENT"
	say "  EBS does not freeze the filesystems: the document runs freeze with --sync-filesystems."
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
		# The four binaries only: the test and benchmark crates are not installed.
		say "running cargo build --release --locked $CARGO_PACKAGES in $SCRIPT_DIR"
		# shellcheck disable=SC2086
		cargo build --release --locked $CARGO_PACKAGES ||
			die "cargo build --release --locked failed (see above)"
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
	check_not_foreign "$LOGROTATE"
	[ "$VMWARE" -eq 0 ] || check_not_foreign "$HOOK"
	if [ "$LEGACY" -eq 1 ]; then
		check_legacy_free "$LEGACY_FREEZE" "$SBIN/mysql-snapshot-freeze"
		check_legacy_free "$LEGACY_THAW" "$SBIN/mysql-snapshot-thaw"
	fi
	[ "$QEMU" -eq 0 ] || check_not_foreign "$QEMU_HOOK"
	[ "$QEMU_DIRECT" -eq 0 ] || check_not_foreign "$QEMU_DIRECT_HOOK"
	if [ "$NUTANIX" -eq 1 ]; then
		check_not_foreign "$NUTANIX_FREEZE"
		check_not_foreign "$NUTANIX_THAW"
	fi
	if [ "$GCP" -eq 1 ]; then
		check_not_foreign "$GCP_PRE"
		check_not_foreign "$GCP_POST"
	fi
	if [ "$AZURE" -eq 1 ]; then
		check_not_foreign "$AZURE_PRE"
		check_not_foreign "$AZURE_POST"
	fi
	if [ "$VEEAM" -eq 1 ]; then
		check_not_foreign "$VEEAM_PRE"
		check_not_foreign "$VEEAM_POST"
		check_not_foreign "$VEEAM_SUDOERS"
	fi

	# 3. Install. The state directory comes first: it holds the manifest.
	make_dir "$STATE_DIR" 0700

	make_dir "$SBIN" 0755
	for b in $BINARIES; do
		inst -m 0755 "$BIN_DIR/$b" "$DESTDIR$SBIN/$b"
		record file "$SBIN/$b"
		say "installed $DESTDIR$SBIN/$b"
	done

	if [ "$VMWARE" -eq 1 ]; then
		remove_legacy_links
		install_hook vmware-backup-script.sh "$HOOK" 0755
	fi

	if [ "$LEGACY" -eq 1 ]; then
		remove_vmware_hook
		make_dir "$(dirname "$LEGACY_FREEZE")" 0755
		install_legacy_link "$LEGACY_FREEZE" "$SBIN/mysql-snapshot-freeze"
		install_legacy_link "$LEGACY_THAW" "$SBIN/mysql-snapshot-thaw"
	fi

	if [ "$QEMU" -eq 1 ]; then
		install_hook qemu-dispatcher-script.sh "$QEMU_HOOK" 0755
	fi
	if [ "$QEMU_DIRECT" -eq 1 ]; then
		install_hook mysql-snapshot-qemu-hook "$QEMU_DIRECT_HOOK" 0755
	fi

	if [ "$NUTANIX" -eq 1 ]; then
		install_hook nutanix-pre_freeze "$NUTANIX_FREEZE" 0700
		install_hook nutanix-post_thaw "$NUTANIX_THAW" 0700
	fi

	if [ "$AWS" -eq 1 ]; then
		make_dir "$(dirname "$AWS_DOCUMENT")" 0755
		aws_source=$SCRIPT_DIR/packaging/aws/mysql-snapshot-ssm-document.yaml
		[ -f "$aws_source" ] || die "$aws_source is missing: install.sh needs the packaging/ directory next to it"
		# The document finds the binaries where this install puts them.
		sed "s|:-/usr/local/sbin}|:-$SBIN}|g; s|looked for in /usr/local/sbin|looked for in $SBIN|" \
			"$aws_source" >"$TMPDIR_OWN/aws-document"
		inst -m 0644 "$TMPDIR_OWN/aws-document" "$DESTDIR$AWS_DOCUMENT"
		record file "$AWS_DOCUMENT"
		say "installed $DESTDIR$AWS_DOCUMENT"
	fi

	if [ "$GCP" -eq 1 ]; then
		# google-guest-agent wants the directory 0700; one that exists is left as it is.
		make_dir "$GCP_DIR" 0700 keep
		install_hook_file gcp-pre.sh "$GCP_PRE" 0700
		install_hook_file gcp-post.sh "$GCP_POST" 0700
	fi

	AZURE_CONFIG_KEPT=0
	if [ "$AZURE" -eq 1 ]; then
		make_dir "$AZURE_DIR" 0755 keep
		install_hook_file azure-pre.sh "$AZURE_PRE" 0700
		install_hook_file azure-post.sh "$AZURE_POST" 0700
		if present "$DESTDIR$AZURE_CONFIG"; then
			say "kept existing $DESTDIR$AZURE_CONFIG"
			AZURE_CONFIG_KEPT=1
		else
			cp "$SCRIPT_DIR/hooks/azure-VMSnapshotScriptPluginConfig.json" "$TMPDIR_OWN/azure-config"
			inst -m 0600 "$TMPDIR_OWN/azure-config" "$DESTDIR$AZURE_CONFIG"
			record config "$AZURE_CONFIG" "$(checksum "$TMPDIR_OWN/azure-config")"
			say "installed $DESTDIR$AZURE_CONFIG"
		fi
	fi

	if [ "$VEEAM" -eq 1 ]; then
		install_hook veeam-pre-freeze.sh "$VEEAM_PRE" 0755
		install_hook_file veeam-post-thaw.sh "$VEEAM_POST" 0755
		install_veeam_sudoers
	fi

	make_dir "$(dirname "$CONFIG")" 0755
	if present "$DESTDIR$CONFIG"; then
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

	[ "$QEMU" -eq 0 ] || qemu_notes
	[ "$GCP" -eq 0 ] || gcp_notes
	[ "$AZURE" -eq 0 ] || azure_notes
	[ "$AWS" -eq 0 ] || aws_notes
	[ "$VEEAM" -eq 0 ] || veeam_notes
}

case $ACTION in
install) do_install ;;
uninstall) do_uninstall ;;
esac
