#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot hook for Google Compute Engine guest-flush snapshots: google-guest-agent runs
# /etc/google/snapshots/post.sh directly as root after the snapshot (not after a failed
# pre.sh), with one argument: a comma-separated list of the disks, only logged (--caller).
# It releases the lock pre.sh took, and exits non-zero if that lock ended before now (the
# snapshot is then not application-consistent).
# exec: the agent reads the script's stdout/stderr until EOF, so no shell stays behind.
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time);
# it exists for tests of a staged install, google-guest-agent does not set it.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
exec "$SBIN/mysql-snapshot-thaw" --caller "google-guest-agent disks=${1-}" thaw
