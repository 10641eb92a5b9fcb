#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot hook for VMware Tools. vmtoolsd runs every file in
# /etc/vmware-tools/backupScripts.d as
#   bash -c '"<this file>" <phase>'
# with phase freeze, thaw or freezeFail, and a non-zero freeze exit fails the snapshot
# ("Custom quiesce script failed"). The phase is matched case-insensitively (the sample
# tools.conf spells it freezefail) and extra arguments are ignored.
# exec hands vmtoolsd's wait straight to our binary: its exit status is the hook's.
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time).
# It exists so that a staged install under a DESTDIR can be exercised by tests; vmtoolsd
# does not set it.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
case ${1-} in
[Ff][Rr][Ee][Ee][Zz][Ee])
	exec "$SBIN/mysql-snapshot-freeze" freeze ;;
[Tt][Hh][Aa][Ww])
	exec "$SBIN/mysql-snapshot-thaw" thaw ;;
[Ff][Rr][Ee][Ee][Zz][Ee][Ff][Aa][Ii][Ll])
	exec "$SBIN/mysql-snapshot-thaw" freezeFail ;;
*)
	echo "$0: unknown phase '${1-}': expected freeze, thaw or freezeFail" >&2
	exit 2 ;;
esac
