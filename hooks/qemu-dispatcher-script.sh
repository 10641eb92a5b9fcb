#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot hook for the QEMU guest agent's stock dispatcher (fsfreeze-hook), which runs
# every executable in its fsfreeze-hook.d directory with freeze (before the filesystems are
# frozen) or thaw (after they are thawed).
# WARNING: the stock dispatcher IGNORES the exit status of the scripts it runs. When
# mysql-snapshot cannot take the lock, this hook exits non-zero but the snapshot is still
# taken, crash-consistent only; just the logs say so. To make a refused lock fail the
# snapshot, point qemu-ga -F at mysql-snapshot-qemu-hook instead (install.sh --qemu-direct).
# exec: qemu-ga 9.1 and later read the hook's stdout/stderr until EOF, so no shell may stay
# behind holding them (the binaries detach their locker with stdio on /dev/null).
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time);
# it exists for tests of a staged install, qemu-ga does not set it.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
case ${1-} in
[Ff][Rr][Ee][Ee][Zz][Ee])
	exec "$SBIN/mysql-snapshot-freeze" freeze ;;
[Tt][Hh][Aa][Ww])
	exec "$SBIN/mysql-snapshot-thaw" thaw ;;
*)
	echo "$0: unknown phase '${1-}': expected freeze or thaw" >&2
	exit 2 ;;
esac
