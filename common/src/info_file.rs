//! The info file: what the snapshot is, written into the snapshot itself. Owns its JSON shape
//! (`InfoFile` and its sections) and its atomic writer, which opens a temporary file next to the
//! target before the lock (an unwritable directory fails the freeze while nothing is held), then
//! writes, fsyncs, renames and fsyncs the directory. It is never left half-written; it never
//! talks to the server.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::coordinates::{Coordinates, LogStatus};
use crate::position::{Binlog, Gtid};
use crate::replication::{self, Replica, SeedSql};
use crate::server::ServerInfo;
use crate::{Error, Result};

/// The JSON document written to `info-file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfoFile {
    pub format: u32,
    pub taken_at: String,
    pub hostname: String,
    pub server: ServerSection,
    pub lock: LockSection,
    pub binlog: Binlog,
    pub gtid: Gtid,
    /// This server's replication connections, at their executed coordinates.
    pub replicas: Vec<Replica>,
    /// Statements that make a new replica of this server from the snapshot.
    pub seed_replica_sql: Option<SeedSql>,
    /// Statements that make a sibling replica of this server's sources from the snapshot.
    pub clone_replica_sql: Option<Vec<String>>,
    /// Where the server's files live, and (with `sync-filesystems`) what was synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSection>,
    /// The durability settings and non-transactional tables, read before the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<crate::durability::Durability>,
    /// On a Galera node: the cluster, and the node's exact position while locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub galera: Option<crate::galera::Galera>,
    /// On a Group Replication member: its group, role and state before the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_replication: Option<crate::group_replication::Member>,
    /// `lock-mode = backup-lock`: InnoDB's LSN and the relay logs at the `log_status` read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_status: Option<LogStatus>,
}

/// The info file's `storage`: every server path with its mount point, type and device, the
/// flags about them, and with `sync-filesystems` on the filesystems synced (each once, all before
/// freeze reported success).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StorageSection {
    pub paths: std::collections::BTreeMap<String, crate::storage::PathEntry>,
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<Vec<crate::storage::Filesystem>>,
}

impl InfoFile {
    /// The info file for a lock described by `lock`, on the server `info`, at `coordinates`.
    pub fn new(info: &ServerInfo, coordinates: &Coordinates, lock: LockSection) -> InfoFile {
        let hostname = hostname();
        let source = replication::SourceAddress {
            host: &hostname,
            port: coordinates.port.filter(|p| *p != 0).unwrap_or(3306),
        };
        InfoFile {
            format: 1,
            taken_at: lock.acquired_at.clone(),
            seed_replica_sql: replication::seed_replica_sql(
                info,
                &source,
                &coordinates.binlog,
                &coordinates.gtid,
            ),
            clone_replica_sql: replication::clone_replica_sql(info, &coordinates.replicas),
            hostname,
            server: ServerSection {
                flavor: info.flavor.name().into(),
                version: info.version.clone(),
                server_id: coordinates.server_id,
                server_uuid: coordinates.server_uuid.clone(),
            },
            lock,
            binlog: coordinates.binlog.clone(),
            gtid: coordinates.gtid.clone(),
            replicas: coordinates.replicas.clone(),
            storage: None,
            durability: None,
            galera: None,
            group_replication: None,
            log_status: coordinates.log_status.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSection {
    pub flavor: String,
    pub version: String,
    pub server_id: Option<u64>,
    pub server_uuid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockSection {
    pub mode: String,
    pub acquired_at: String,
    pub waited_ms: u64,
    pub locker_pid: u32,
    /// `lock-mode = backup-lock`: the preconditions checked before the lock, each found holding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Vec<String>>,
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A temporary file next to the info file, opened before the lock is taken so that an unwritable
/// directory fails the freeze before any lock exists.
pub struct PendingInfoFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl PendingInfoFile {
    pub fn create(target: &Path) -> Result<PendingInfoFile> {
        let dir = target.parent().unwrap_or(Path::new("/"));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "snapshot-info.json".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io("create the info file in", dir, e))?;
        Ok(PendingInfoFile {
            target: target.to_path_buf(),
            tmp,
            file: Some(file),
            committed: false,
        })
    }

    /// Writes `info`, fsyncs, renames over the target and fsyncs the directory.
    pub fn commit(mut self, info: &InfoFile) -> Result<()> {
        let text = serde_json::to_string_pretty(info).unwrap_or_default() + "\n";
        let dir = self.target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let Some(mut file) = self.file.take() else {
            return Err(Error::io(
                "write",
                &self.tmp,
                std::io::ErrorKind::Other.into(),
            ));
        };
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write the info file", &self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| Error::io("rename the info file to", &self.target, e))?;
        self.committed = true;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync the directory of", &self.target, e))?;
        Ok(())
    }
}

impl Drop for PendingInfoFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
