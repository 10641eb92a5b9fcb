#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot post-thaw script for Veeam (see veeam-pre-freeze.sh): releases the lock the
# pre-freeze script took, through `sudo -n`, and reports a lock lost before it (non-zero exit).
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries; it exists for tests only.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
exec sudo -n "$SBIN/mysql-snapshot-thaw" --caller veeam thaw
