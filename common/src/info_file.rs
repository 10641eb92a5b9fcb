//! The info file: what a copy of this machine's disks is, written where the copy carries it.
//! Owns its JSON shapes — the record of a copy taken while the lock is held (`InfoFile`,
//! `consistent: true`, with the coordinates) and the mark of every other moment (`Unlocked`,
//! `consistent: false`: a freeze in progress, refused, released, lost; the last held record kept
//! under `last_consistent` only) — and their atomic writers: a temporary file next to the target
//! (for the held record opened before the lock, so that an unwritable directory fails the freeze
//! while nothing is held), written, fsynced, renamed, the directory fsynced. It is never left
//! half-written; it never talks to the server.
//!
//! The rule the writers keep (docs/consistency.md, "What every copy says"): the file is marked
//! unlocked before a lock is asked for, and before a lock is released on purpose, so that no copy
//! pairs `consistent: true` with a moment no lock covered. A mark that may meet a frozen
//! filesystem is handed to a detached writer ([`mark_detached`]) and waited for within a bound;
//! a mark never overwrites the file of a newer snapshot (`snapshot_id`).
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

/// The info file's format: 2 added `consistent`, `state`, `snapshot_id` and the unlocked marks.
pub const FORMAT: u32 = 2;

/// How long freeze and thaw wait for a detached mark before going on without it.
pub const MARK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest info file read back (to keep its held record under `last_consistent`).
const MAX_INFO_BYTES: u64 = 8 * 1024 * 1024;

/// What a copy taken now is, as the info file says at the top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyState {
    /// The lock is held: a copy is consistent, at the coordinates beside it.
    Held,
    /// A freeze is trying to take the lock: nothing holds the server still yet.
    Freezing,
    /// The last freeze failed: no lock was held when it ended.
    Refused,
    /// The lock was released (by thaw, max-lock-time, a stop: `reason`).
    Released,
    /// The lock was lost before it was released on purpose.
    Lost,
}

impl CopyState {
    pub fn name(self) -> &'static str {
        match self {
            CopyState::Held => "held",
            CopyState::Freezing => "freezing",
            CopyState::Refused => "refused",
            CopyState::Released => "released",
            CopyState::Lost => "lost",
        }
    }
}

/// The JSON document written to `info-file` while the lock is held: a copy taken now is
/// consistent at these coordinates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfoFile {
    pub format: u32,
    /// Always true here: the lock held when this was written is held until the file is marked.
    pub consistent: bool,
    /// Always `held` here.
    pub state: CopyState,
    /// The snapshot this record belongs to: when its freeze claimed the run (Unix ms).
    pub snapshot_id: u64,
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
    /// The durability settings and non-transactional tables, and when each was read
    /// (`durability.read`).
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
    /// The info file for a lock described by `lock`, on the server `info`, at `coordinates`, for
    /// the snapshot `snapshot_id`.
    pub fn new(
        info: &ServerInfo,
        coordinates: &Coordinates,
        lock: LockSection,
        snapshot_id: u64,
    ) -> InfoFile {
        let hostname = hostname();
        let source = replication::SourceAddress {
            host: &hostname,
            port: coordinates.port.filter(|p| *p != 0).unwrap_or(3306),
        };
        InfoFile {
            format: FORMAT,
            consistent: true,
            state: CopyState::Held,
            snapshot_id,
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
    /// The `lock-mode` asked for (`auto`, or the mode itself).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested: String,
    /// Why this mode was taken (for `auto` that falls back to FTWRL: what ruled the backup lock out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
    pub acquired_at: String,
    pub waited_ms: u64,
    pub locker_pid: u32,
    /// `lock-mode = backup-lock`: the preconditions checked before the lock, each found holding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Vec<String>>,
    /// `rotate-binlog = on`: `FLUSH BINARY LOGS` ran under the lock, in this many milliseconds.
    /// The binary log before `binlog.file` ends at the snapshot; `binlog.file` (read after the
    /// rotation) starts the replay of what came after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_rotated_ms: Option<u64>,
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
        PendingInfoFile::create_named(target, "tmp")
    }

    /// As [`create`](Self::create), the temporary file's name ending in `.{suffix}` (a mark and
    /// the held record of one process never share one).
    fn create_named(target: &Path, suffix: &str) -> Result<PendingInfoFile> {
        let dir = target.parent().unwrap_or(Path::new("/"));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "snapshot-info.json".into());
        let tmp = dir.join(format!(".{name}.{}.{suffix}", std::process::id()));
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

    /// The info file this will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes `info`, fsyncs, renames over the target and fsyncs the directory.
    pub fn commit(mut self, info: &InfoFile) -> Result<()> {
        let text = serde_json::to_string_pretty(info).unwrap_or_default() + "\n";
        self.commit_text(&text)
    }

    fn commit_text(&mut self, text: &str) -> Result<()> {
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

/// The info file of a moment no lock covers: a copy taken now is not application-consistent
/// (crash-consistent at best) and carries no coordinates at the top level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unlocked {
    pub format: u32,
    /// Always false here.
    pub consistent: bool,
    pub state: CopyState,
    /// Why, in words: the refusal as freeze reported it, what released or lost the lock.
    pub reason: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// The snapshot that wrote this mark (see [`InfoFile::snapshot_id`]).
    pub snapshot_id: u64,
    pub hostname: String,
    /// The last held record, for reference only: its coordinates are another moment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_consistent: Option<serde_json::Value>,
}

/// A mark to write: the state a copy taken from now on is in, why, and for which snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    pub state: CopyState,
    pub reason: String,
    pub snapshot_id: u64,
}

impl Mark {
    pub fn new(state: CopyState, reason: impl Into<String>, snapshot_id: u64) -> Mark {
        Mark {
            state,
            reason: reason.into(),
            snapshot_id,
        }
    }
}

/// What the info file at `path` says now, as JSON (`None`: absent or unreadable).
pub fn read(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut text = String::new();
    file.take(MAX_INFO_BYTES).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// The verdict of an info file as read: consistent (held), or not and why.
pub fn verdict(info: &serde_json::Value) -> (bool, String) {
    let consistent = info["consistent"].as_bool();
    let state = info["state"].as_str().unwrap_or("-");
    match consistent {
        Some(true) => (
            true,
            format!("held since {}", info["taken_at"].as_str().unwrap_or("-")),
        ),
        Some(false) => (
            false,
            format!(
                "{state} since {}: {}",
                info["since"].as_str().unwrap_or("-"),
                info["reason"].as_str().unwrap_or("no reason recorded")
            ),
        ),
        // Format 1 (before marks): it said nothing about later moments.
        None => (
            false,
            "written by a version before format 2: it says nothing about the moment of a copy"
                .into(),
        ),
    }
}

/// Whether `info` is the held record of the snapshot `snapshot_id` (a copy taken now would claim
/// that snapshot's lock).
pub fn held_for(info: &serde_json::Value, snapshot_id: u64) -> bool {
    info["consistent"] == true && info["snapshot_id"].as_u64() == Some(snapshot_id)
}

/// The held record an info file keeps: itself when it is one (a format-1 file was written only
/// while held), else its `last_consistent`.
fn held_record(info: serde_json::Value) -> Option<serde_json::Value> {
    let held = match info["consistent"].as_bool() {
        Some(true) => true,
        Some(false) => false,
        None => info["format"].as_u64() == Some(1) && info.get("binlog").is_some(),
    };
    if held {
        return Some(info);
    }
    info.get("last_consistent")
        .filter(|v| v.is_object())
        .cloned()
}

/// Marks the info file at `path` with `mark`, keeping the last held record under
/// `last_consistent`. `Ok(false)`: left alone, the file is a newer snapshot's.
pub fn mark(path: &Path, mark: &Mark) -> Result<bool> {
    let now = read(path);
    if let Some(newer) = now
        .as_ref()
        .and_then(|v| v["snapshot_id"].as_u64())
        .filter(|id| *id > mark.snapshot_id)
    {
        log::info!(
            "event=info-file not marked {}: it is a newer snapshot's ({newer})",
            mark.state.name()
        );
        return Ok(false);
    }
    let unlocked = Unlocked {
        format: FORMAT,
        consistent: false,
        state: mark.state,
        reason: mark.reason.clone(),
        since: crate::time::now_rfc3339(),
        snapshot_id: mark.snapshot_id,
        hostname: hostname(),
        last_consistent: now.and_then(held_record),
    };
    let text = serde_json::to_string_pretty(&unlocked).unwrap_or_default() + "\n";
    let mut pending = PendingInfoFile::create_named(path, "mark")?;
    pending.commit_text(&text)?;
    Ok(true)
}

/// How a detached mark went.
pub enum Marked {
    /// Written (or left alone for a newer snapshot's file).
    Done,
    /// Not written within the bound: the writer finishes when it can (a frozen filesystem).
    Pending,
    /// The writer failed or could not start; the text says why.
    Failed(String),
}

/// Hands `mark` to a detached writer (the locker binary with `--mark-info-file`) and waits for it
/// at most `deadline`. Used where the filesystem may be frozen: the caller goes on (releases,
/// exits) whatever happens, and the writer lands the mark when the filesystem thaws.
pub fn mark_detached(config: &Path, mark: &Mark, deadline: std::time::Duration) -> Marked {
    let payload = serde_json::to_string(mark).unwrap_or_default();
    match crate::process::hand_off("--mark-info-file", config, &payload, deadline) {
        Ok(Some(status)) if status.success() => Marked::Done,
        Ok(Some(status)) => Marked::Failed(format!("the writer failed ({status})")),
        Ok(None) => Marked::Pending,
        Err(err) => Marked::Failed(format!("cannot start the writer: {err}")),
    }
}

/// Marks the info file at once through a detached writer, waited for at most [`MARK_DEADLINE`],
/// and logs how it went (never a failure of the caller).
pub fn mark_now(config: &crate::Config, mark: &Mark) {
    let marked = mark_detached(&config.path, mark, MARK_DEADLINE);
    log_marked(&marked, mark, &config.info_file, MARK_DEADLINE);
}

/// Logs how a detached mark went; a mark never fails the caller.
pub fn log_marked(marked: &Marked, mark: &Mark, path: &Path, deadline: std::time::Duration) {
    match marked {
        Marked::Done => {}
        Marked::Pending => log::warn!(
            "event=info-file {} was not marked {} within {} ms (is its filesystem frozen?); the writer marks it when it can",
            path.display(),
            mark.state.name(),
            deadline.as_millis()
        ),
        Marked::Failed(why) => log::error!(
            "event=info-file cannot mark {} {}: {why}. A copy taken now may carry the last snapshot's record: check the directory",
            path.display(),
            mark.state.name()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mss-info-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn held(snapshot_id: u64) -> serde_json::Value {
        json!({"format": 2, "consistent": true, "state": "held", "snapshot_id": snapshot_id,
               "taken_at": "t", "binlog": {"file": "binlog.000001", "position": 630}})
    }

    #[test]
    fn a_mark_keeps_the_held_record_only_under_last_consistent_and_carries_it_on() {
        let dir = dir();
        let path = dir.join("info.json");
        std::fs::write(&path, held(10).to_string()).unwrap();
        assert!(mark(&path, &Mark::new(CopyState::Released, "thaw", 10)).unwrap());
        let released = read(&path).unwrap();
        assert_eq!(released["consistent"], false);
        assert_eq!(released["state"], "released");
        assert!(released.get("binlog").is_none());
        assert_eq!(released["last_consistent"], held(10));
        // The next freeze's marks carry the same held record on.
        assert!(mark(&path, &Mark::new(CopyState::Freezing, "taking", 20)).unwrap());
        assert!(mark(&path, &Mark::new(CopyState::Refused, "no quiet moment", 20)).unwrap());
        let refused = read(&path).unwrap();
        assert_eq!(refused["state"], "refused");
        assert_eq!(refused["last_consistent"], held(10));
        assert!(!verdict(&refused).0);
        assert!(verdict(&refused).1.contains("no quiet moment"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_late_mark_never_overwrites_a_newer_snapshots_record() {
        let dir = dir();
        let path = dir.join("info.json");
        std::fs::write(&path, held(30).to_string()).unwrap();
        assert!(!mark(&path, &Mark::new(CopyState::Released, "late", 20)).unwrap());
        assert_eq!(read(&path).unwrap(), held(30));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_format_1_record_is_kept_as_held_and_read_as_saying_nothing_of_now() {
        let dir = dir();
        let path = dir.join("info.json");
        let old = json!({"format": 1, "taken_at": "t", "binlog": {"file": "b.1", "position": 4}});
        assert!(!verdict(&old).0);
        std::fs::write(&path, old.to_string()).unwrap();
        assert!(mark(&path, &Mark::new(CopyState::Freezing, "taking", 1)).unwrap());
        assert_eq!(read(&path).unwrap()["last_consistent"], old);
        // Garbage or nothing: the mark is written without a last record.
        std::fs::write(&path, "not json").unwrap();
        assert!(mark(&path, &Mark::new(CopyState::Refused, "x", 2)).unwrap());
        assert!(read(&path).unwrap().get("last_consistent").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
