#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot post-script for Azure Backup (the VMSnapshot ScriptRunner plugin), named by
# postScriptLocation in /etc/azure/VMSnapshotScriptPluginConfig.json. The plugin runs it as root
# as `sh <this file> <postScriptParams...>` (POSIX sh only; parameters are ignored) after the
# snapshot, and also after a pre-script that failed: thaw is then a clean no-op that exits 0.
# It releases the lock the pre-script took, and exits non-zero if that lock ended before now
# (the snapshot is then not application-consistent). Its output is never read: keep it small.
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time);
# it exists for tests of a staged install, the plugin does not set it.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
exec "$SBIN/mysql-snapshot-thaw" --caller "azure-vmsnapshot" thaw
