#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot hook for Google Compute Engine guest-flush snapshots: google-guest-agent runs
# /etc/google/snapshots/pre.sh directly (shebang and exec bit; the directory must be 0700) as
# root before the snapshot, with one argument: a comma-separated list of the disks. It is only
# logged (--caller). A non-zero exit, or the agent's SIGKILL at its timeout, fails the snapshot.
# Google does not freeze the filesystems: --sync-filesystems makes freeze syncfs() every
# filesystem holding server files once the lock is held, so that what the server wrote is on
# the disks the snapshot copies.
# --snapshot-timeout 50: freeze gives up (and releases) before the agent's default
# timeout_in_seconds of 60 kills it, so a refusal is reported as one (event=refused).
# exec: the agent reads the script's stdout/stderr until EOF, so no shell may stay behind
# holding them (the binaries detach their locker with stdio on /dev/null).
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time);
# it exists for tests of a staged install, google-guest-agent does not set it.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
exec "$SBIN/mysql-snapshot-freeze" --sync-filesystems --snapshot-timeout 50 --caller "google-guest-agent disks=${1-}" freeze
