//! The servers the benchmark runs against: each flavour says how to start a private server (through
//! the test harness's server matrix: MariaDB 10.11 from the machine's packages, MariaDB 11.8 and
//! MySQL 9.7 from cached Debian-unstable chroots), which lock modes it has and how the floor reads
//! its binary-log status.
//!
//! The figures never look at a flavour's name; adding one is one more `Flavour` value. Every server
//! here is private: never the machine's own.
use std::path::PathBuf;

use mysql::prelude::Queryable;
use mysql::Conn;

/// A lock mode as freeze's `--lock-mode` and the floor's `--mode` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ftwrl,
    BackupStage,
    /// MySQL's `LOCK INSTANCE FOR BACKUP`.
    BackupLock,
    /// The product's default (`lock-mode = auto`); the floor has no such mode.
    Auto,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Ftwrl => "ftwrl",
            Mode::BackupStage => "backup-stage",
            Mode::BackupLock => "backup-lock",
            Mode::Auto => "auto",
        }
    }
}

/// A running private server.
pub(crate) trait Target {
    fn socket(&self) -> PathBuf;
    fn conn(&self) -> Conn;
    fn error_log(&self) -> String;
    fn version(&self) -> String {
        self.conn()
            .query_first::<String, _>("SELECT VERSION()")
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

impl Target for harness::Server {
    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }
    fn conn(&self) -> Conn {
        harness::Server::conn(self)
    }
    fn error_log(&self) -> String {
        harness::Server::error_log(self)
    }
}

/// A server family and version the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flavour(harness::Flavour);

impl Flavour {
    /// Every flavour, by its `--servers` name.
    pub(crate) const ALL: [(&'static str, Flavour); 3] = [
        ("mariadb-10.11", Flavour(harness::Flavour::MariaDb1011)),
        ("mysql-9.7", Flavour(harness::Flavour::MySql97)),
        ("mariadb-11.8", Flavour(harness::Flavour::MariaDb118)),
    ];

    pub(crate) fn name(self) -> &'static str {
        self.0.name()
    }

    pub(crate) fn is_mysql(self) -> bool {
        self.0.is_mysql()
    }

    /// The server runs in the harness's chroot: the paths it reports are not the host's.
    pub(crate) fn in_chroot(self) -> bool {
        matches!(self.0.chroot(), Ok(Some(_)))
    }

    /// The floor's `--flavour` (which binary-log status statement it uses).
    pub(crate) fn floor_name(self) -> &'static str {
        if self.0.is_mysql() {
            "mysql"
        } else {
            "mariadb"
        }
    }

    /// The lock modes this server supports, each measured.
    pub(crate) fn modes(self) -> &'static [Mode] {
        if self.0.is_mysql() {
            &[Mode::Ftwrl]
        } else {
            &[Mode::Ftwrl, Mode::BackupStage]
        }
    }

    /// Starts a private server (binary log on; GTID on MySQL) with `extra` server arguments.
    /// A chroot flavour whose chroot cannot be built here is an error, never a silent skip.
    pub(crate) fn start(self, extra: &[String]) -> Result<Box<dyn Target>, String> {
        self.0
            .chroot()
            .map_err(|why| format!("{} is unavailable here: {why}", self.name()))?;
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Ok(Box::new(harness::Server::start_flavour(self.0, &extra)))
    }

    /// Server arguments that let `connections` clients connect at once.
    pub(crate) fn many_connections_args(self, connections: u32) -> Vec<String> {
        vec![format!("--max-connections={connections}")]
    }
}
