#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot pre-freeze script for Veeam (Backup & Replication guest processing without
# VMware Tools quiescing, Hyper-V jobs; Veeam Agent for Linux pre-job script) and any caller
# that logs in over SSH. Veeam uploads it and runs it as the job's account, usually not root:
# it runs freeze through `sudo -n` (no password prompt: a missing grant fails at once). The
# sudoers drop-in install.sh --veeam writes allows exactly this command line and the thaw's.
# --snapshot-timeout 540: Veeam kills a script after 10 minutes by default; freeze gives up first.
# freeze starts its locker outside this login session, so the lock outlives the SSH session.
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time);
# it exists for tests of a staged install (sudo still allows only the installed path).
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
exec sudo -n "$SBIN/mysql-snapshot-freeze" --caller veeam --snapshot-timeout 540 freeze
