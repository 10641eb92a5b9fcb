//! The one error type of mysql-snapshot, and the exit codes the binaries return.
//!
//! Every failure a DBA can meet is a variant here carrying the facts needed to act on it: what went
//! wrong, where, and what to do. Messages never contain a password.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: freeze holds a verified lock / thaw found the lock held until it was released, or nothing to release (no snapshot, already thawed, a freeze that never took the lock, `freezeFail`) |
//! | `error-exit-code` (default 1) | any failure of freeze or thaw once the configuration is read: no lock taken, lock lost, server unreachable, bad state |
//! | 1 | a failure before the configuration could be read (bad or unreadable config file; for the locker, no usable plan from freeze) |
//! | 2 | bad command-line arguments |
//!
//! `freeze --run -- COMMAND` has its own statuses (its caller is a script or a snapshot tool's
//! hook, not a hypervisor agent; `error-exit-code` does not apply to them):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | COMMAND exited 0 and the lock held without a break until it ended: the copy is consistent |
//! | COMMAND's status | COMMAND failed (1-255; 128+N when killed by signal N), the lock held throughout |
//! | 128+N | freeze got signal N (SIGTERM: 143, SIGINT: 130), passed it to COMMAND, then released |
//! | 123 | COMMAND ran under the lock, but the release or the `--fsfreeze` thaw failed (see the log) |
//! | 124 | the lock ended before COMMAND did (lost, or `max-lock-time`: COMMAND was then stopped): the snapshot is **not** consistent |
//! | 125 | no lock was taken: COMMAND never ran (server unreachable, refused, busy, timed out, or COMMAND not executable) |
//! | 1 | the config file could not be used, or the mount table could not be read (COMMAND never ran) |
//! | 2 | bad command-line arguments (COMMAND never ran) |
//!
//! 124 and 125 win over COMMAND's own status; a COMMAND that itself exits 123-125 is told apart
//! only by the log.
//!
//! `mysql-snapshot-verify` answers with its verdict on the copy it booted:
//!
//! | code | verdict |
//! |---|---|
//! | 0 | consistent: the copy's info file says the lock was held, the copy recovers, its tables check and its binlog and GTID state are what the info file records |
//! | 1 | not verified: the copy, its datadir, a server binary or a table's engine plugin could not be found or used (the message says which and what to do) |
//! | 2 | bad command-line arguments |
//! | 3 | crash-consistent only: the copy recovers and its tables check, but no lock covered it (the info file says why: refused, released, lost…, or there is none) or it is not at the moment its info file records |
//! | 4 | damaged: the copy does not start, InnoDB reports corruption, or a table fails `CHECK TABLE` |
//!
//! The locker is internal; it exits 0 once the lock it held was released (a lost lock included)
//! and 1 otherwise, and reports the details through the state file. `thaw --status` uses the Nagios codes documented in docs/operations.md.
use std::fmt;
use std::io::{self, ErrorKind};
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit status for bad command-line arguments.
pub const EXIT_USAGE: u8 = 2;
/// `freeze --run`: the release after COMMAND, or the `--fsfreeze` thaw, failed.
pub const EXIT_RUN_UNFINISHED: u8 = 123;
/// `freeze --run`: the lock ended before COMMAND did; the snapshot is not consistent.
pub const EXIT_RUN_LOCK_ENDED: u8 = 124;
/// `freeze --run`: no lock was taken; COMMAND never ran.
pub const EXIT_RUN_NOT_RUN: u8 = 125;
/// Exit status for failures before the configuration is read.
pub const EXIT_DEFAULT_ERROR: u8 = 1;
/// verify: the copy is crash-consistent only.
pub const EXIT_CRASH_CONSISTENT: u8 = 3;
/// verify: the copy is damaged.
pub const EXIT_DAMAGED: u8 = 4;

#[derive(Debug)]
pub enum Error {
    /// The command line could not be understood.
    Usage(String),
    /// The configuration file is malformed or holds a bad value.
    Config {
        file: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// The configuration file is readable by others (or owned by someone else) and holds a password.
    ConfigPermissions {
        file: PathBuf,
        mode: u32,
        owner: u32,
        fix: String,
    },
    /// A file or directory the tool needs could not be used.
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Something the process itself needs could not be set up (`what`: e.g. `install signal
    /// handlers`); the locker then exits 1 before it touches the server or the state file.
    Setup {
        what: &'static str,
        source: io::Error,
    },
    /// The server could not be reached or refused the login.
    Connect { target: String, message: String },
    /// A statement failed on the server.
    Server { statement: String, message: String },
    /// The server account lacks privileges the tool needs.
    MissingPrivilege {
        account: String,
        missing: String,
        fix: String,
    },
    /// Another snapshot is in progress: its locker (or freeze) is alive.
    Busy {
        /// `locker PID n` or `freeze PID n`.
        holder: String,
        status: &'static str,
        started_at: String,
    },
    /// No lock was taken, or the one taken was released before freeze reported it: why.
    NotLocked(NoLock),
    /// The locker could not reach the server (it reported so through its pipe to freeze).
    Unreachable { message: String },
    /// The lock was lost (or never verifiably held) before it should have been released.
    LockLost(Lost),
    /// freeze or the locker was stopped by a signal before it finished.
    Interrupted { signal: String },
    /// The state file or run directory is unsafe or unusable.
    State { path: PathBuf, message: String },
    /// The lock mode asked for cannot keep its promise on this server: `backup-lock`'s
    /// preconditions (one line each, with its fix) or its conflict with `sync-filesystems`.
    ModeRefused {
        mode: &'static str,
        reasons: Vec<String>,
    },
    /// `replica-safe` could not make (or leave) the replica safe: open temporary tables that
    /// cannot clear, or SQL threads it stopped that it cannot start again.
    Replication { message: String },
    /// The locker has no usable plan from freeze on its orders pipe (started by hand, freeze gone
    /// before it wrote one, or a line that is no plan): it exits 1 and takes no lock.
    Plan { problem: String },
    /// verify cannot check the copy: `problem` says what is missing or refused, `fix` what to do.
    Unverifiable { problem: String, fix: String },
}

impl Error {
    /// The exit status for this error, given the configured `error-exit-code`.
    pub fn exit_code(&self, error_exit_code: u8) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Config { .. } | Error::ConfigPermissions { .. } | Error::Plan { .. } => {
                EXIT_DEFAULT_ERROR
            }
            _ => error_exit_code,
        }
    }

    /// The stable `event=` key for the log line that reports this error.
    pub fn event(&self) -> &'static str {
        match self {
            Error::Usage(_)
            | Error::Config { .. }
            | Error::ConfigPermissions { .. }
            | Error::Plan { .. } => "config-error",
            Error::LockLost { .. } => "lost",
            Error::Connect { .. } | Error::Unreachable { .. } => "unreachable",
            Error::Busy { .. } => "busy",
            Error::Interrupted { .. } => "aborted",
            Error::Replication { .. } => "replica",
            Error::Unverifiable { .. } => "unverified",
            _ => "refused",
        }
    }

    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub fn server(statement: &str, err: &mysql::Error) -> Error {
        Error::Server {
            statement: statement.to_string(),
            message: describe(err),
        }
    }

    /// The message without the heading [`NO_LOCK_TAKEN`] that the errors saying so open with
    /// (the whole message for the others): what the locker tells freeze (`failed …`,
    /// `unreachable …`), which puts the heading back once.
    pub fn detail(&self) -> Detail<'_> {
        Detail(self)
    }

    /// Whether the message opens with [`NO_LOCK_TAKEN`].
    fn says_no_lock(&self) -> bool {
        matches!(
            self,
            Error::NotLocked(_)
                | Error::Unreachable { .. }
                | Error::Plan { .. }
                | Error::ModeRefused { .. }
        )
    }
}

/// What opens the message of every error that says no lock was taken.
pub const NO_LOCK_TAKEN: &str = "no lock taken: ";

/// An error's message without its heading (see [`Error::detail`]).
pub struct Detail<'a>(&'a Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.says_no_lock() {
            f.write_str(NO_LOCK_TAKEN)?;
        }
        write!(f, "{}", self.detail())
    }
}

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Config {
                file,
                line: Some(line),
                message,
            } => write!(f, "config {}:{line}: {message}", file.display()),
            Error::Config {
                file,
                line: None,
                message,
            } => write!(f, "config {}: {message}", file.display()),
            Error::ConfigPermissions {
                file,
                mode,
                owner,
                fix,
            } => write!(
                f,
                "config {} holds a password but has mode {:04o} and owner uid {owner}; refusing to use it. Fix: {fix}",
                file.display(),
                mode & 0o7777
            ),
            Error::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())
            }
            Error::Setup { what, source } => write!(f, "cannot {what}: {source}"),
            Error::Connect { target, message } => write!(
                f,
                "cannot connect to the server at {target}: {message}. Check that the server is running and the [client] settings (socket, host, user, password) in the config"
            ),
            Error::Server { statement, message } => {
                write!(f, "server refused `{statement}`: {message}")
            }
            Error::MissingPrivilege {
                account,
                missing,
                fix,
            } => write!(f, "the account {account} lacks {missing}. Fix: {fix}"),
            Error::Busy {
                holder,
                status,
                started_at,
            } => write!(
                f,
                "another snapshot is in progress ({holder}, status {status}, started {started_at}); run mysql-snapshot-thaw to end it first"
            ),
            Error::NotLocked(why) => write!(f, "{why}"),
            Error::Unreachable { message } => write!(f, "{message}"),
            Error::LockLost(how) => write!(f, "{how}"),
            Error::Replication { message } => write!(f, "{message}"),
            Error::Unverifiable { problem, fix } => {
                write!(f, "cannot verify the copy: {problem}. {fix}")
            }
            Error::Interrupted { signal } => write!(f, "stopped by {signal}"),
            Error::Plan { problem } => write!(
                f,
                "no usable plan from freeze: {problem}. The locker is started by mysql-snapshot-freeze, not by hand"
            ),
            Error::ModeRefused { mode, reasons } => write!(
                f,
                "lock-mode = {mode} cannot promise a consistent snapshot here: {}",
                reasons.join("; ")
            ),
            Error::State { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

/// The underlying error, where a variant keeps one: `Io` and `Setup` hold the `io::Error` (the
/// server's and the driver's errors are kept as the text `describe` makes of them).
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Setup { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why no lock is held for a freeze: it was never taken, or it was released before freeze could
/// report it.
#[derive(Debug)]
pub enum NoLock {
    /// No quiet moment came, or every attempt was capped, within `snapshot-timeout`; `blocker`
    /// is the statement last in the way.
    Timeout {
        seconds: u64,
        blocker: Option<String>,
    },
    /// The locker failed and said why: its own error, in its words (the error's
    /// [`Error::detail`]: the heading is freeze's).
    Locker(String),
    /// The locker ended without the lock; `reason` is what it recorded, if anything.
    LockerExited { reason: Option<String> },
    /// A Galera node that is not Synced (`state`: `wsrep_local_state_comment`).
    GaleraNotSynced { state: String },
    /// A Group Replication member whose applier queue is past half the flow-control threshold.
    GroupQueue { queue: u64, threshold: u64 },
    /// The syncs of these filesystems did not return within `seconds` (the lock was released).
    SyncStuck {
        filesystems: Vec<String>,
        seconds: u64,
    },
    /// The sync of one filesystem failed with `status` (the lock was released).
    SyncFailed {
        mount_point: String,
        fstype: String,
        device: String,
        status: String,
    },
    /// The steps after the lock spent max-lock-time (the lock was released).
    HoldSpent { took_ms: u128, max_lock_time: u64 },
    /// The locker was stopped (`by`) while `during`.
    Stopped { by: String, during: String },
    /// thaw found the freeze still without the lock (`what` happened to it): the snapshot was
    /// taken without the lock.
    TakenWithout { what: String },
}

impl fmt::Display for NoLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoLock::Timeout { seconds, blocker } => write!(
                f,
                "no lock within snapshot-timeout ({seconds} s){}; the snapshot must not be taken. Retry later, or raise snapshot-timeout / long-query-threshold",
                blocker.as_ref().map_or(String::new(), |b| format!("; still running: {b}"))
            ),
            NoLock::Locker(words) => write!(f, "{words}"),
            NoLock::LockerExited { reason: Some(reason) } => {
                write!(f, "the locker could not take the lock: {reason}")
            }
            NoLock::LockerExited { reason: None } => write!(
                f,
                "the locker exited without taking the lock (see syslog for its error)"
            ),
            NoLock::GaleraNotSynced { state } => write!(
                f,
                "this Galera node is not Synced (wsrep_local_state_comment = {state}): a snapshot now would be of a node in the middle of a state transfer or desynced. Wait until it is Synced (SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'), or snapshot another node"
            ),
            NoLock::GroupQueue { queue, threshold } => write!(
                f,
                "this Group Replication member has {queue} transactions in its applier queue, more than half of group_replication_flow_control_applier_threshold ({threshold}): a lock now would make the whole group throttle its writers. Retry when the queue has drained, or snapshot another secondary"
            ),
            NoLock::SyncStuck {
                filesystems,
                seconds,
            } => write!(
                f,
                "syncfs of {} did not return within sync-timeout ({seconds} s); a disk copy would miss what the server wrote, so the lock was released. Check that filesystem's device",
                filesystems.join(", ")
            ),
            NoLock::SyncFailed {
                mount_point,
                fstype,
                device,
                status,
            } => write!(
                f,
                "syncfs of {mount_point} ({fstype} on {device}) failed ({status}); a disk copy would miss what the server wrote, so the lock was released"
            ),
            NoLock::HoldSpent {
                took_ms,
                max_lock_time,
            } => write!(
                f,
                "the steps after the lock (coordinates, info file, syncs) took {took_ms} ms of max-lock-time ({max_lock_time} s); the lock was released. Raise max-lock-time"
            ),
            NoLock::Stopped { by, during } => write!(f, "{by} while {during}"),
            NoLock::TakenWithout { what } => write!(
                f,
                "{what}: the snapshot was taken without the lock and is NOT application-consistent"
            ),
        }
    }
}

/// How a lock was lost before it should have been released.
#[derive(Debug)]
pub enum Lost {
    /// freeze could not tell the locker it reports success (`error`); the locker released.
    NotConfirmed { error: String },
    /// The `acquired` record names a locker this freeze did not start.
    NotOurLocker,
    /// The locker that recorded `acquired` is no longer running.
    LockerGone { pid: u32 },
    /// The lock's connection was gone once the info file was written (`error`).
    ConnectionGone { error: String },
    /// thaw found the lock had not been held until it came (`what` happened); `retake` says to
    /// take the snapshot again (not after freezeFail, which abandons it anyway).
    BeforeThaw { what: String, retake: bool },
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REFUSING: &str = "refusing to report the database as frozen";
        match self {
            Lost::NotConfirmed { error } => write!(
                f,
                "cannot confirm the snapshot to the locker ({error}); it released the lock"
            ),
            Lost::NotOurLocker => write!(
                f,
                "the state names a locker that is not the one this freeze started; {REFUSING}"
            ),
            Lost::LockerGone { pid } => {
                write!(f, "the locker (PID {pid}) is no longer running; {REFUSING}")
            }
            Lost::ConnectionGone { error } => write!(
                f,
                "the connection holding the lock was gone after the info file was written ({error}); {REFUSING}"
            ),
            Lost::BeforeThaw { what, retake: true } => write!(
                f,
                "{what}: the snapshot is NOT application-consistent (crash-consistent at best); take it again"
            ),
            Lost::BeforeThaw {
                what,
                retake: false,
            } => write!(f, "{what}"),
        }
    }
}

/// Human text for a driver error, with a hint for the common cases.
pub fn describe(err: &mysql::Error) -> String {
    match err {
        mysql::Error::MySqlError(e) => {
            let hint = match e.code {
                1045 => " (wrong user or password: check [client] in the config)",
                1044 | 1142 | 1227 => " (missing privilege: see the GRANT statements in docs/operations.md, or run mysql-snapshot-freeze --check)",
                1040 => " (max_connections reached: try again later or raise max_connections)",
                2013 | 2006 => " (the server closed the connection)",
                _ => "",
            };
            format!("ERROR {} ({}): {}{hint}", e.code, e.state, e.message)
        }
        mysql::Error::IoError(e) => io_hint(e.kind()).unwrap_or_else(|| format!("I/O error: {e}")),
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((_, desc, kind)))) => {
            io_hint(*kind).unwrap_or_else(|| desc.clone())
        }
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout) => {
            "no answer from the server within the connect timeout".into()
        }
        other => other.to_string(),
    }
}

fn io_hint(kind: ErrorKind) -> Option<String> {
    let text = match kind {
        ErrorKind::NotFound => {
            "no such socket (is the server running? is `socket` in [client] right?)"
        }
        ErrorKind::ConnectionRefused => {
            "connection refused (is the server running and listening there?)"
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            "no answer from the server within the timeout"
        }
        ErrorKind::PermissionDenied => "permission denied on the socket",
        _ => return None,
    };
    Some(text.into())
}

/// The server error code of a driver error, if it is one.
pub fn error_code(err: &mysql::Error) -> Option<u16> {
    match err {
        mysql::Error::MySqlError(e) => Some(e.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_error_keeps_the_underlying_io_error_as_its_source_and_its_display() {
        let err = Error::io(
            "read",
            "/run/x",
            io::Error::new(ErrorKind::PermissionDenied, "denied here"),
        );
        let source = err.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            source.map(io::Error::kind),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            source.map(ToString::to_string).as_deref(),
            Some("denied here")
        );
        assert_eq!(err.to_string(), "cannot read /run/x: denied here");
    }

    #[test]
    fn the_locker_s_words_read_back_as_freeze_s_error_with_one_heading() {
        let errors = [
            Error::NotLocked(NoLock::HoldSpent {
                took_ms: 5,
                max_lock_time: 1,
            }),
            Error::Plan {
                problem: "none".into(),
            },
            Error::ModeRefused {
                mode: "backup-lock",
                reasons: vec!["a".into(), "b".into()],
            },
            Error::MissingPrivilege {
                account: "'u'@'%'".into(),
                missing: "RELOAD".into(),
                fix: "GRANT".into(),
            },
            Error::State {
                path: "/run/x".into(),
                message: "gone".into(),
            },
        ];
        for err in errors {
            let told = err.detail().to_string();
            assert!(!told.starts_with(NO_LOCK_TAKEN), "{told}");
            let heard = Error::NotLocked(NoLock::Locker(told.clone())).to_string();
            assert_eq!(heard, format!("{NO_LOCK_TAKEN}{told}"));
            match err.says_no_lock() {
                true => assert_eq!(heard, err.to_string()),
                false => assert_eq!(told, err.to_string()),
            }
        }
        let connect = Error::Connect {
            target: "/run/mysqld.sock".into(),
            message: "refused".into(),
        };
        let heard = Error::Unreachable {
            message: connect.detail().to_string(),
        };
        assert_eq!(heard.to_string(), format!("{NO_LOCK_TAKEN}{connect}"));
    }

    #[test]
    fn an_error_that_holds_only_text_has_no_source() {
        let err = Error::Unreachable {
            message: "gone".into(),
        };
        assert!(err.source().is_none());
    }
}
