//! The lock strategies: how a lock is taken, capped on the server, and released.
//!
//! A lock is only ever taken on the locker's own connection, with the session's
//! `lock_wait_timeout` (and `max_statement_time` on MariaDB) set to cap each attempt on the
//! server. A failed or timed-out attempt always leaves the connection without any lock.
//! Release is the first thing done on the way out; nothing may delay it.
use mysql::prelude::Queryable;
use mysql::Conn;

use crate::server::{self, Flavor, ServerInfo};
use crate::{Error, Result};

/// Server error codes that mean "the attempt was capped", not "the attempt is impossible".
const TIMEOUT_CODES: [u16; 3] = [
    1205, // ER_LOCK_WAIT_TIMEOUT
    1969, // MariaDB ER_STATEMENT_TIMEOUT (max_statement_time)
    3024, // MySQL ER_QUERY_TIMEOUT
];

/// The lock mode the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// The least disruptive mode the server supports.
    Auto,
    /// `FLUSH TABLES WITH READ LOCK`: blocks every write; queues behind running writes.
    Ftwrl,
    /// MariaDB's `BACKUP STAGE … BLOCK_COMMIT`: blocks commits and DDL; lets InnoDB writes run.
    BackupStage,
}

impl LockMode {
    pub const EXPECTED: &'static str = "expected auto, ftwrl or backup-stage";

    pub fn parse(text: &str) -> Option<LockMode> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Some(LockMode::Auto),
            "ftwrl" => Some(LockMode::Ftwrl),
            "backup-stage" => Some(LockMode::BackupStage),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LockMode::Auto => "auto",
            LockMode::Ftwrl => "ftwrl",
            LockMode::BackupStage => "backup-stage",
        }
    }

    /// The concrete mode for this server: `Auto` becomes FTWRL until backup stages are proven
    /// end to end; an explicit `backup-stage` on a server without it is an error.
    pub fn resolve(self, info: &ServerInfo) -> Result<LockMode> {
        let has_backup_stage = info.flavor == Flavor::MariaDb && info.at_least(10, 4, 1);
        match self {
            LockMode::Auto => Ok(LockMode::Ftwrl),
            LockMode::BackupStage if !has_backup_stage => Err(Error::Server {
                statement: "BACKUP STAGE".into(),
                message: format!(
                    "lock-mode=backup-stage needs MariaDB 10.4.1 or later; this server is {}. Use lock-mode=ftwrl or auto",
                    info.version
                ),
            }),
            mode => Ok(mode),
        }
    }

    /// The statements that take the lock, in order; the last one is the lock itself.
    fn acquire_statements(self) -> &'static [&'static str] {
        match self {
            LockMode::Auto | LockMode::Ftwrl => &["FLUSH TABLES WITH READ LOCK"],
            LockMode::BackupStage => &[
                "BACKUP STAGE START",
                "BACKUP STAGE BLOCK_DDL",
                "BACKUP STAGE BLOCK_COMMIT",
            ],
        }
    }

    fn release_statement(self) -> &'static str {
        match self {
            LockMode::Auto | LockMode::Ftwrl => "UNLOCK TABLES",
            LockMode::BackupStage => "BACKUP STAGE END",
        }
    }

    /// Takes the lock on `conn`. A server-side timeout is `Ok(Attempt::TimedOut)`; the
    /// connection then holds nothing.
    pub fn acquire(self, conn: &mut Conn) -> Result<Attempt> {
        for statement in self.acquire_statements() {
            if let Err(err) = conn.query_drop(statement) {
                // Whatever happened, leave nothing behind on this connection.
                let _ = conn.query_drop(self.release_statement());
                return match server::error_code(&err) {
                    Some(code) if TIMEOUT_CODES.contains(&code) => Ok(Attempt::TimedOut {
                        statement,
                        message: server::describe(&err),
                    }),
                    _ => Err(Error::server(statement, &err)),
                };
            }
        }
        Ok(Attempt::Acquired)
    }

    /// Releases the lock. An error means the connection (and with it the lock) was already gone.
    pub fn release(self, conn: &mut Conn) -> Result<()> {
        let statement = self.release_statement();
        conn.query_drop(statement)
            .map_err(|e| Error::server(statement, &e))
    }
}

/// How one lock attempt ended.
#[derive(Debug)]
pub enum Attempt {
    Acquired,
    /// The server capped the attempt at `statement`.
    TimedOut {
        statement: &'static str,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_mode_names_round_trip_and_nonsense_is_refused() {
        for mode in [LockMode::Auto, LockMode::Ftwrl, LockMode::BackupStage] {
            assert_eq!(LockMode::parse(mode.name()), Some(mode));
        }
        assert_eq!(
            LockMode::parse(" BACKUP_STAGE "),
            Some(LockMode::BackupStage)
        );
        assert_eq!(LockMode::parse("read-only"), None);
    }

    #[test]
    fn backup_stage_is_refused_on_servers_without_it() {
        let mysql = ServerInfo::new("9.7.4".into(), 1);
        assert!(LockMode::BackupStage.resolve(&mysql).is_err());
        let old = ServerInfo::new("10.3.39-MariaDB".into(), 1);
        assert!(LockMode::BackupStage.resolve(&old).is_err());
        let new = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        assert_eq!(
            LockMode::BackupStage.resolve(&new).ok(),
            Some(LockMode::BackupStage)
        );
    }
}
