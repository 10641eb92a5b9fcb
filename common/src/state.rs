//! The state file through which freeze, the locker and thaw coordinate: `<run-dir>/state.json`,
//! guarded by an flock on `<run-dir>/lock`.
//!
//! Every read-modify-write happens under the flock, and every write replaces the file atomically
//! (temporary file + rename). The run directory must be ours and private; nothing here follows a
//! symlink. A corrupt or foreign state file is reported as stale, never trusted and never a panic.
//! Never hold the flock while waiting for another process: the locker needs it to record a release.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::coordinates::Coordinates;
use crate::lock::LockMode;
use crate::process::{self, Identity};
use crate::{Error, Result};

/// The largest state file we read; anything bigger is not ours.
const MAX_STATE_BYTES: u64 = 256 * 1024;

/// Where a snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// freeze is waiting for a quiet moment or has just started a locker.
    Starting,
    /// The locker is connected and waits for freeze's word, or its lock statement is running.
    Waiting,
    /// The lock is held.
    Acquired,
    /// The server capped the lock attempt; no lock is held; freeze may try again.
    TimedOut,
    /// The locker could not take the lock (an error other than a timeout); no lock is held.
    Failed,
    /// The lock was released; `reason` says why.
    Released,
    /// The lock was lost before it was released on purpose; `reason` says how.
    Lost,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Waiting => "waiting",
            Status::Acquired => "acquired",
            Status::TimedOut => "timed-out",
            Status::Failed => "failed",
            Status::Released => "released",
            Status::Lost => "lost",
        }
    }
}

/// Why a snapshot's lock ended (or why it never began), as the state records it: on disk a plain
/// string, `"thaw"` for the one release that keeps the promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Reason {
    /// Released on thaw's request: the lock was held until the snapshot was done.
    Thaw,
    /// Anything else, in words (max-lock-time, a signal, a lost connection, a failure, …).
    Other(String),
}

impl From<String> for Reason {
    fn from(text: String) -> Reason {
        match text.as_str() {
            "thaw" => Reason::Thaw,
            _ => Reason::Other(text),
        }
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.to_string()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Thaw => f.write_str("thaw"),
            Reason::Other(text) => f.write_str(text),
        }
    }
}

/// The content of `state.json`. Its status changes only through the transitions of
/// `lifecycle` (`claimed`, `retry`, `waiting`, `held`, `ended`, `abandoned`, `thaw_requested`,
/// `thawed`), which also say where it stands (`verdict`) and what a copy of the disk says then
/// (`copy_mark`).
///
/// Who writes what, in which status (every write under the flock):
///
/// | field | freeze | locker | thaw |
/// |---|---|---|---|
/// | `status` | `starting` (new run, each retry); `failed` in its clean-up | `waiting` after `go`; `acquired`; its end: `timed-out`, `failed`, `released`, `lost` | — |
/// | `freeze`, `started_at_ms` | `starting` | — | — |
/// | `locker`, `connection_id`, `user`, `lock_mode` | `locker` cleared on a retry | `waiting` | — |
/// | `attempt`, `killed_queries` | while trying | — | — |
/// | `acquired_at_ms`, `coordinates`, `synced`, `storage_flags`, `durability_warnings` | — | `acquired` | — |
/// | `replica_sql_stopped` | cleared once it started them again | set before the STOP, cleared after the START | cleared once it started them again |
/// | `released_at_ms` | — | `released`, `lost` | — |
/// | `reason` | `failed` | its end (`thaw` for thaw's request) | the outcome, if none was recorded |
/// | `thaw_requested_at_ms` | — | — | before it signals the locker |
/// | `thawed_at_ms` | — | — | when it is done with the snapshot |

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// Written by the transitions only; read it with `status()`.
    pub(crate) status: Status,
    /// The freeze process that started this snapshot.
    pub freeze: Identity,
    /// The locker holding (or trying to take) the lock.
    #[serde(default)]
    pub locker: Option<Identity>,
    /// The locker's server connection id (for `KILL` when the locker is unresponsive).
    #[serde(default)]
    pub connection_id: Option<u64>,
    /// The server account the locker is connected as.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub lock_mode: Option<LockMode>,
    /// Lock attempts made by this freeze so far.
    #[serde(default)]
    pub attempt: u32,
    pub started_at_ms: u64,
    #[serde(default)]
    pub acquired_at_ms: Option<u64>,
    #[serde(default)]
    pub released_at_ms: Option<u64>,
    /// When thaw asked the locker to release (set before the signal is sent).
    #[serde(default)]
    pub thaw_requested_at_ms: Option<u64>,
    /// When thaw (or freezeFail) finished with this snapshot; a later thaw has nothing to do.
    #[serde(default)]
    pub thawed_at_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<Reason>,
    /// Replication coordinates read while the lock was held.
    #[serde(default)]
    pub coordinates: Option<Coordinates>,
    /// The filesystems synced while the lock was held (`sync-filesystems`), with how long each took.
    #[serde(default)]
    pub synced: Option<Vec<crate::storage::Synced>>,
    /// What the locker found about the surroundings before the lock that freeze must log: the
    /// storage flags (`event=storage`) and hard durability warnings (`event=durability`).
    #[serde(default)]
    pub storage_flags: Option<Vec<String>>,
    #[serde(default)]
    pub durability_warnings: Option<Vec<String>>,
    /// `replica-safe`: the replica connections whose SQL thread this snapshot stopped and has not
    /// started again. Written before the STOP and cleared after the START, so that whoever finds
    /// the locker dead (thaw, freeze, the next freeze) starts exactly these.
    #[serde(default)]
    pub replica_sql_stopped: Option<Vec<String>>,
    /// Statements freeze killed for this snapshot (`kill-long-queries`).
    #[serde(default)]
    pub killed_queries: u64,
    pub updated_at: String,
}

impl State {
    pub const FORMAT: u32 = 1;

    /// The recorded reason in words, or `fallback` when none is recorded.
    pub fn reason_or(&self, fallback: &str) -> String {
        self.reason
            .as_ref()
            .map_or_else(|| fallback.to_string(), Reason::to_string)
    }

    /// A fresh state for a freeze that is starting now (see `State::claimed`).
    pub(crate) fn starting(freeze: Identity) -> State {
        State {
            format: State::FORMAT,
            status: Status::Starting,
            freeze,
            locker: None,
            connection_id: None,
            user: None,
            lock_mode: None,
            attempt: 0,
            started_at_ms: crate::time::now_unix_ms(),
            acquired_at_ms: None,
            released_at_ms: None,
            thaw_requested_at_ms: None,
            thawed_at_ms: None,
            reason: None,
            coordinates: None,
            synced: None,
            storage_flags: None,
            durability_warnings: None,
            replica_sql_stopped: None,
            killed_queries: 0,
            updated_at: crate::time::now_rfc3339(),
        }
    }

    /// True if a process of this snapshot (freeze or locker) is still running.
    pub fn in_progress(&self) -> bool {
        self.freeze.is_running() || self.locker_running()
    }

    /// The SQL threads replica-safe stopped and nobody started again, once no process of this
    /// snapshot is left to start them (`None` while one still runs, or when none are stopped).
    pub fn replica_sql_left(&self) -> Option<&[String]> {
        self.replica_sql_stopped
            .as_deref()
            .filter(|names| !names.is_empty() && !self.in_progress())
    }

    /// True if the recorded locker is still the same running process.
    pub fn locker_running(&self) -> bool {
        self.locker.as_ref().is_some_and(Identity::is_running)
    }
}

/// What reading the state file found.
#[derive(Debug)]
pub enum Found {
    Nothing,
    /// The file exists but is not a state file of ours; the text says why.
    Stale(String),
    State(Box<State>),
}

/// The run directory with its state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    /// Uses `run_dir`, creating it (mode 0700) if `create` and it is missing. Refuses a run
    /// directory that is a symlink, owned by someone else, or writable by group or others.
    pub fn open(run_dir: &Path, create: bool) -> Result<StateFile> {
        if create {
            match std::fs::DirBuilder::new().mode(0o700).create(run_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(run_dir.parent().unwrap_or(Path::new("/")))
                        .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(run_dir))
                        .map_err(|e| Error::io("create run-dir", run_dir, e))?;
                }
                Err(e) => return Err(Error::io("create run-dir", run_dir, e)),
            }
        }
        let meta = match std::fs::symlink_metadata(run_dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                return Ok(StateFile {
                    dir: run_dir.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io("use run-dir", run_dir, e)),
        };
        let unsafe_dir = |message: String| Error::State {
            path: run_dir.to_path_buf(),
            message,
        };
        if !meta.file_type().is_dir() {
            return Err(unsafe_dir(
                "run-dir is not a directory (a symlink is refused); remove it or set run-dir to another path".into(),
            ));
        }
        if meta.uid() != process::effective_uid() {
            return Err(unsafe_dir(format!(
                "run-dir is owned by uid {}, not by us (uid {}); remove it or set run-dir to a directory of ours",
                meta.uid(),
                process::effective_uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "run-dir has mode {:04o}, writable by others; run `chmod 700 {}`",
                meta.mode() & 0o7777,
                run_dir.display()
            )));
        }
        Ok(StateFile {
            dir: run_dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Takes the flock on `<run-dir>/lock`, blocking until it is free (holders keep it for
    /// microseconds). Fails if the run directory does not exist.
    pub fn lock(&self) -> Result<Guard<'_>> {
        let path = self.dir.join("lock");
        let file = open_private(&path, true, false)
            .map_err(|e| Error::io("open the state lock", &path, e))?;
        file.lock()
            .map_err(|e| Error::io("lock the state file lock", &path, e))?;
        Ok(Guard {
            _lock: file,
            state: self,
        })
    }

    /// Reads the state without writing; a missing run directory reads as nothing.
    pub fn peek(&self) -> Result<Found> {
        if !self.dir.exists() {
            return Ok(Found::Nothing);
        }
        Ok(self.lock()?.read())
    }
}

/// The held flock; released on drop.
pub struct Guard<'a> {
    /// The open lock file; the flock lasts as long as it does.
    _lock: File,
    state: &'a StateFile,
}

impl Guard<'_> {
    pub fn read(&self) -> Found {
        let path = self.state.path();
        let file = match open_private(&path, false, false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Nothing,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Found::Stale(format!(
                    "{} is a symbolic link; refusing to follow it",
                    path.display()
                ))
            }
            Err(e) => return Found::Stale(format!("cannot open {}: {e}", path.display())),
        };
        match file.metadata() {
            Ok(m) if m.uid() != process::effective_uid() => {
                return Found::Stale(format!(
                    "{} is owned by uid {}, not us",
                    path.display(),
                    m.uid()
                ))
            }
            Ok(m) if !m.is_file() => {
                return Found::Stale(format!("{} is not a regular file", path.display()))
            }
            Ok(_) => {}
            Err(e) => return Found::Stale(format!("cannot stat {}: {e}", path.display())),
        }
        let mut text = String::new();
        if let Err(e) = file.take(MAX_STATE_BYTES).read_to_string(&mut text) {
            return Found::Stale(format!("cannot read {}: {e}", path.display()));
        }
        match serde_json::from_str::<State>(&text) {
            Ok(state) if state.format == State::FORMAT => Found::State(Box::new(state)),
            Ok(state) => Found::Stale(format!(
                "{} has format {}, expected {}",
                path.display(),
                state.format,
                State::FORMAT
            )),
            Err(e) => Found::Stale(format!("{} is not a valid state file: {e}", path.display())),
        }
    }

    /// Replaces the state file atomically.
    pub fn write(&self, state: &State) -> Result<()> {
        let mut state = state.clone();
        state.updated_at = crate::time::now_rfc3339();
        let path = self.state.path();
        let tmp = self.state.dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(&state).unwrap_or_default();
        open_private(&tmp, true, true)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::io("write the new state file", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("write the state file", &path, e))
    }

    /// Moves an unusable state file aside (to `state.json.stale`) so the next run starts clean.
    pub fn set_aside(&self) -> Result<()> {
        let path = self.state.path();
        let aside = self.state.dir.join("state.json.stale");
        match std::fs::rename(&path, &aside) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("move aside the stale state file", &path, e)),
        }
    }
}

/// Opens a file of ours without following a symlink, mode 0600 when created.
fn open_private(path: &Path, create: bool, truncate: bool) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if create {
        let meta = file.metadata()?;
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as the previous version wrote it (lock mode, reason and coordinates as plain
    /// JSON): it still reads, with its words typed, and writes back the same JSON.
    #[test]
    fn a_state_file_of_the_untyped_version_reads_and_writes_back_unchanged() {
        let old = r#"{"format":1,"status":"released","freeze":{"pid":4242,"start_time":99,"exe":"/usr/sbin/mysql-snapshot-freeze"},"locker":{"pid":4243,"start_time":100,"exe":"/usr/sbin/mysql-snapshot-locker"},"connection_id":17,"user":"root","lock_mode":"backup-stage","attempt":0,"started_at_ms":1000,"acquired_at_ms":1010,"released_at_ms":2010,"thaw_requested_at_ms":2000,"thawed_at_ms":2011,"reason":"thaw","coordinates":{"binlog":{"file":"binlog.000001","position":630},"gtid":{"binlog_pos":"0-1-2","current_pos":"0-1-2","slave_pos":"","executed":null},"server_id":1,"server_uuid":null,"port":3306,"replicas":[]},"synced":null,"storage_flags":null,"durability_warnings":null,"replica_sql_stopped":null,"killed_queries":0,"updated_at":"2026-11-25T16:44:15.628Z"}"#;
        let state: State = serde_json::from_str(old).expect("the old file reads");
        assert_eq!(state.lock_mode, Some(LockMode::BackupStage));
        assert_eq!(state.reason, Some(Reason::Thaw));
        let coordinates = state.coordinates.as_ref().expect("coordinates");
        assert_eq!(coordinates.binlog.position, Some(630));
        assert_eq!(coordinates.gtid.binlog_pos.as_deref(), Some("0-1-2"));
        let written: serde_json::Value =
            serde_json::to_value(&state).expect("the state writes back");
        let read: serde_json::Value = serde_json::from_str(old).expect("JSON");
        assert_eq!(written, read);
        let lost = r#"{"format":1,"status":"lost","freeze":{"pid":1,"start_time":1,"exe":"/x"},"lock_mode":"ftwrl","started_at_ms":0,"reason":"max-lock-time (60 s) reached before thaw","updated_at":"x"}"#;
        let state: State = serde_json::from_str(lost).expect("reads");
        assert_eq!(
            state.reason,
            Some(Reason::Other(
                "max-lock-time (60 s) reached before thaw".into()
            ))
        );
        assert_eq!(
            state.reason_or("-"),
            "max-lock-time (60 s) reached before thaw"
        );
        let bad = lost.replace("\"ftwrl\"", "\"read-only\"");
        assert!(
            serde_json::from_str::<State>(&bad).is_err(),
            "an unknown lock mode is refused"
        );
    }
}
