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
//! | 1 | a failure before the configuration could be read (bad or unreadable config file) |
//! | 2 | bad command-line arguments |
//!
//! The locker is internal; it exits 0 after a clean release and 1 otherwise, and reports the
//! details through the state file. `thaw --status` uses the Nagios codes documented in docs/operations.md.
use std::fmt;
use std::io::{self, ErrorKind};
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit status for bad command-line arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit status for failures before the configuration is read.
pub const EXIT_DEFAULT_ERROR: u8 = 1;

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
    Busy { message: String },
    /// No quiet moment came, or every lock attempt timed out, within `snapshot-timeout`.
    NotLocked { message: String },
    /// The locker could not reach the server (it reported so through its pipe to freeze).
    Unreachable { message: String },
    /// The lock was lost (or never verifiably held) before it should have been released.
    LockLost { message: String },
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
}

impl Error {
    /// The exit status for this error, given the configured `error-exit-code`.
    pub fn exit_code(&self, error_exit_code: u8) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Config { .. } | Error::ConfigPermissions { .. } => EXIT_DEFAULT_ERROR,
            _ => error_exit_code,
        }
    }

    /// The stable `event=` key for the log line that reports this error.
    pub fn event(&self) -> &'static str {
        match self {
            Error::Usage(_) | Error::Config { .. } | Error::ConfigPermissions { .. } => {
                "config-error"
            }
            Error::LockLost { .. } => "lost",
            Error::Connect { .. } | Error::Unreachable { .. } => "unreachable",
            Error::Busy { .. } => "busy",
            Error::Interrupted { .. } => "aborted",
            Error::Replication { .. } => "replica",
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
            Error::Busy { message } => write!(f, "{message}"),
            Error::NotLocked { message } | Error::Unreachable { message } => {
                write!(f, "no lock taken: {message}")
            }
            Error::LockLost { message } | Error::Replication { message } => write!(f, "{message}"),
            Error::Interrupted { signal } => write!(f, "stopped by {signal}"),
            Error::ModeRefused { mode, reasons } => write!(
                f,
                "no lock taken: lock-mode = {mode} cannot promise a consistent snapshot here: {}",
                reasons.join("; ")
            ),
            Error::State { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

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
