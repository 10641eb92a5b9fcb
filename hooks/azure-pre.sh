#!/bin/sh
# installed by mysql-snapshot install.sh
# mysql-snapshot pre-script for Azure Backup (the VMSnapshot ScriptRunner plugin), named by
# preScriptLocation in /etc/azure/VMSnapshotScriptPluginConfig.json. The plugin runs it as root
# as `sh <this file> <preScriptParams...>` (the shebang is ignored: POSIX sh only, dash on
# Debian), and skips it unless it is root-owned with no group/other bits (mode 0700). A non-zero
# exit fails the backup (continueBackupOnFailure false) or leaves it crash-consistent (true).
# Parameters are ignored. The plugin never reads the script's output: keep it small.
# With "fsFreezeEnabled": false in that config the plugin does not freeze the filesystems, so
# --sync-filesystems makes freeze syncfs() every filesystem holding server files once the lock
# is held, so that what the server wrote is on the disks the snapshot copies.
# MYSQL_SNAPSHOT_SBIN overrides the directory of the binaries (default fixed at install time)
# and MYSQL_SNAPSHOT_AZURE_CONFIG the plugin config read here (default
# /etc/azure/VMSnapshotScriptPluginConfig.json); both exist for tests of a staged install, the
# plugin sets neither.
# --snapshot-timeout 50: the plugin never kills a pre-script that outlives its timeoutInSeconds
# (60 in install.sh's config) but goes on without it; freeze gives up before that.
SBIN=${MYSQL_SNAPSHOT_SBIN:-@SBIN@}
AZURE_CONFIG=${MYSQL_SNAPSHOT_AZURE_CONFIG:-/etc/azure/VMSnapshotScriptPluginConfig.json}
if tr -d '[:space:]' 2>/dev/null <"$AZURE_CONFIG" | grep -q '"fsFreezeEnabled":false'; then
	exec "$SBIN/mysql-snapshot-freeze" --sync-filesystems --snapshot-timeout 50 --caller "azure-vmsnapshot" freeze
fi
exec "$SBIN/mysql-snapshot-freeze" --snapshot-timeout 50 --caller "azure-vmsnapshot" freeze
