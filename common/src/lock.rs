//! The lock strategies: how a lock is taken, capped on the server, and released.
//!
//! A lock is only ever taken on the locker's own connection, with the session's
//! `lock_wait_timeout` (and `max_statement_time` on MariaDB) set to cap each attempt on the
//! server. A failed or timed-out attempt always leaves the connection without any lock.
//! Release is the first thing done on the way out; nothing may delay it.
use mysql::prelude::Queryable;
use mysql::Conn;

use crate::batch::{Answers, Failed};
use crate::processlist::StatementKind;
use crate::server::{self, Flavor, ServerInfo};
use crate::{Error, Result};

/// Server error codes that mean "the attempt was capped", not "the attempt is impossible".
const TIMEOUT_CODES: [u16; 3] = [
    1205, // ER_LOCK_WAIT_TIMEOUT
    1969, // MariaDB ER_STATEMENT_TIMEOUT (max_statement_time)
    3024, // MySQL ER_QUERY_TIMEOUT
];

/// Why `backup-lock` is refused where the filesystems are synced (`sync-filesystems`), not frozen.
pub const SYNCED_NOT_FROZEN: &str = "the caller does not freeze the filesystems (sync-filesystems is on): commits would go on until the disk copy, which nothing bounds. Use lock-mode = auto on this platform";

/// Why `backup-lock` is refused with `rotate-binlog = on`.
pub const ROTATED_NOT_AT_SNAPSHOT: &str = "rotate-binlog = on: under the backup lock commits go on, so a binary log rotated then would not start at the snapshot. Use lock-mode = auto, or rotate-binlog = off";

/// The lock mode the configuration asks for (in the state file: the mode the locker resolved,
/// spelt as in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// The least disruptive mode the server supports.
    Auto,
    /// `FLUSH TABLES WITH READ LOCK`: blocks every write; queues behind running writes.
    Ftwrl,
    /// MariaDB's `BACKUP STAGE … BLOCK_COMMIT`: blocks commits and DDL; lets InnoDB writes run.
    BackupStage,
    /// MySQL's `LOCK INSTANCE FOR BACKUP` (8.0 and later): blocks DDL, file operations and account
    /// changes, **not** DML or commits. The snapshot is then consistent only by crash recovery,
    /// which is why the mode is chosen explicitly and refused unless every precondition holds
    /// (`durability::Durability::backup_lock_refusals`): no non-transactional user table and
    /// durable settings. A non-transactional table cannot appear while the lock is held: creating
    /// one is DDL, which the lock blocks. Coordinates come from one read of
    /// `performance_schema.log_status` and are a lower bound (commits flow until the freeze).
    BackupLock,
}

impl LockMode {
    pub const EXPECTED: &'static str = "expected auto, ftwrl, backup-stage or backup-lock";

    pub fn parse(text: &str) -> Option<LockMode> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Some(LockMode::Auto),
            "ftwrl" => Some(LockMode::Ftwrl),
            "backup-stage" => Some(LockMode::BackupStage),
            "backup-lock" => Some(LockMode::BackupLock),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LockMode::Auto => "auto",
            LockMode::Ftwrl => "ftwrl",
            LockMode::BackupStage => "backup-stage",
            LockMode::BackupLock => "backup-lock",
        }
    }

    /// Whether the lock blocks commits, so that the coordinates read under it are exact. Not so
    /// for `backup-lock`: commits flow until the filesystems freeze, and what is read under it is
    /// a lower bound.
    pub fn blocks_commits(self) -> bool {
        self != LockMode::BackupLock
    }

    /// The concrete mode for this server: `Auto` picks backup stages on MariaDB 10.4.1 and later
    /// and FTWRL elsewhere (never the backup lock: its promise is another one, chosen explicitly);
    /// an explicit `backup-stage` or `backup-lock` on a server without it is an error.
    pub fn resolve(self, info: &ServerInfo) -> Result<LockMode> {
        let has_backup_stage = info.flavor == Flavor::MariaDb && info.at_least(10, 4, 1);
        let has_backup_lock = info.flavor == Flavor::MySql && info.at_least(8, 0, 0);
        match self {
            LockMode::BackupLock if !has_backup_lock => Err(Error::Server {
                statement: "LOCK INSTANCE FOR BACKUP".into(),
                message: format!(
                    "lock-mode=backup-lock needs MySQL or Percona Server 8.0 or later; this server is {} {}. Use lock-mode=auto",
                    info.flavor.name(),
                    info.version
                ),
            }),
            LockMode::Auto if has_backup_stage => Ok(LockMode::BackupStage),
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

    /// Whether a long-running statement of `kind` holds up this mode's lock on `flavor`.
    ///
    /// FTWRL waits for every running write (and, on MySQL, for long reads in its flush phase);
    /// `BACKUP STAGE BLOCK_DDL` waits for DDL and for writes to non-transactional tables only;
    /// `BLOCK_COMMIT` waits only for commits in flight, which are short.
    ///
    /// `LOCK INSTANCE FOR BACKUP` waits only for DDL (and the file operations that count as DDL).
    pub fn held_up_by(self, kind: StatementKind, flavor: Flavor) -> HeldUp {
        match (self, kind) {
            (LockMode::BackupLock, StatementKind::Ddl) => HeldUp::Yes,
            (LockMode::BackupLock, _) => HeldUp::No,
            (LockMode::BackupStage, StatementKind::Ddl) => HeldUp::Yes,
            (LockMode::BackupStage, StatementKind::Read) => HeldUp::No,
            (LockMode::BackupStage, _) => HeldUp::IfNonTransactionalInUse,
            (_, StatementKind::Read) if flavor == Flavor::MariaDb => HeldUp::No,
            _ => HeldUp::Yes,
        }
    }

    /// The statements that take the lock, in order; the last one is the lock itself.
    fn acquire_statements(self, pre_flush: bool) -> &'static [&'static str] {
        match self {
            LockMode::Auto | LockMode::Ftwrl if pre_flush => &[
                "FLUSH NO_WRITE_TO_BINLOG TABLES",
                "FLUSH TABLES WITH READ LOCK",
            ],
            LockMode::Auto | LockMode::Ftwrl => &["FLUSH TABLES WITH READ LOCK"],
            LockMode::BackupStage => &[
                "BACKUP STAGE START",
                "BACKUP STAGE FLUSH",
                "BACKUP STAGE BLOCK_DDL",
                "BACKUP STAGE BLOCK_COMMIT",
            ],
            LockMode::BackupLock => &["LOCK INSTANCE FOR BACKUP"],
        }
    }

    fn release_statement(self) -> &'static str {
        match self {
            LockMode::Auto | LockMode::Ftwrl => "UNLOCK TABLES",
            LockMode::BackupStage => "BACKUP STAGE END",
            LockMode::BackupLock => "UNLOCK INSTANCE",
        }
    }

    /// Takes the lock on `conn` (FTWRL preceded by a table flush if `pre_flush`) and, in the same
    /// round trip, runs `then` (reads that need the lock held) — the server runs nothing after a
    /// lock statement that fails. A server-side timeout is `Ok(Attempt::TimedOut)`; the connection
    /// then holds nothing. Once acquired, `then`'s answers (a read that failed is not among them:
    /// asked for, it goes to the server again on its own).
    pub fn acquire(
        self,
        conn: &mut Conn,
        pre_flush: bool,
        then: &[String],
    ) -> Result<(Attempt, Answers)> {
        let statements = self.acquire_statements(pre_flush);
        let batch: Vec<String> = statements
            .iter()
            .map(|s| s.to_string())
            .chain(then.iter().cloned())
            .collect();
        let (answers, failed) = Answers::fetch(conn, &batch);
        let Some(Failed { index, error }) = failed.filter(|f| f.index < statements.len()) else {
            return Ok((Attempt::Acquired, answers));
        };
        let statement = statements[index];
        // Whatever happened, leave nothing behind on this connection.
        let _ = conn.query_drop(self.release_statement());
        match server::error_code(&error) {
            Some(code) if TIMEOUT_CODES.contains(&code) => Ok((
                Attempt::TimedOut {
                    statement,
                    message: server::describe(&error),
                },
                Answers::default(),
            )),
            _ => Err(Error::server(statement, &error)),
        }
    }

    /// Releases the lock. An error means the connection (and with it the lock) was already gone.
    pub fn release(self, conn: &mut Conn) -> Result<()> {
        let statement = self.release_statement();
        conn.query_drop(statement)
            .map_err(|e| Error::server(statement, &e))
    }
}

/// Extra seconds of `wait_timeout` beyond `max-lock-time`: the server's own dead-man switch.
pub const WAIT_TIMEOUT_MARGIN: u64 = 10;

/// The statement that caps every lock attempt on `flavor`'s server and arms the server's dead-man
/// switch, run on the lock's connection before any attempt — by the locker and by `--check`'s
/// rehearsal alike: `lock_wait_timeout` (and on MariaDB `max_statement_time`) at
/// `lock_wait_timeout` seconds (the `lock-wait-timeout` setting), `wait_timeout` a margin past
/// `max_lock_time` (`max-lock-time`), autocommit on.
pub fn session_caps(lock_wait_timeout: u64, max_lock_time: u64, flavor: Flavor) -> String {
    let mut setup = format!(
        "SET SESSION lock_wait_timeout = {lock_wait_timeout}, wait_timeout = {}, autocommit = 1",
        max_lock_time + WAIT_TIMEOUT_MARGIN
    );
    if flavor == Flavor::MariaDb {
        setup.push_str(&format!(", max_statement_time = {lock_wait_timeout}"));
    }
    setup
}

/// Whether a long statement holds up a lock attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldUp {
    Yes,
    No,
    /// Only if it writes a non-transactional (MyISAM, Aria, …) table.
    IfNonTransactionalInUse,
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
        for mode in [
            LockMode::Auto,
            LockMode::Ftwrl,
            LockMode::BackupStage,
            LockMode::BackupLock,
        ] {
            assert_eq!(LockMode::parse(mode.name()), Some(mode));
        }
        assert_eq!(
            LockMode::parse(" BACKUP_STAGE "),
            Some(LockMode::BackupStage)
        );
        assert_eq!(LockMode::parse("read-only"), None);
    }

    #[test]
    fn auto_picks_backup_stage_on_mariadb_10_4_1_and_later_and_ftwrl_elsewhere() {
        let pick = |v: &str| LockMode::Auto.resolve(&ServerInfo::new(v.into(), 1)).ok();
        assert_eq!(pick("10.11.6-MariaDB-log"), Some(LockMode::BackupStage));
        assert_eq!(pick("11.8.2-MariaDB-1"), Some(LockMode::BackupStage));
        assert_eq!(pick("10.4.1-MariaDB"), Some(LockMode::BackupStage));
        assert_eq!(pick("10.4.0-MariaDB"), Some(LockMode::Ftwrl));
        assert_eq!(pick("8.0.36"), Some(LockMode::Ftwrl));
        assert_eq!(pick("9.7.4"), Some(LockMode::Ftwrl));
    }

    #[test]
    fn a_long_innodb_write_holds_up_ftwrl_but_not_backup_stage() {
        use StatementKind::*;
        let maria = Flavor::MariaDb;
        assert_eq!(LockMode::Ftwrl.held_up_by(Write, maria), HeldUp::Yes);
        assert_eq!(LockMode::Ftwrl.held_up_by(Read, maria), HeldUp::No);
        assert_eq!(LockMode::Ftwrl.held_up_by(Read, Flavor::MySql), HeldUp::Yes);
        assert_eq!(
            LockMode::BackupStage.held_up_by(Write, maria),
            HeldUp::IfNonTransactionalInUse
        );
        assert_eq!(LockMode::BackupStage.held_up_by(Ddl, maria), HeldUp::Yes);
        assert_eq!(LockMode::BackupStage.held_up_by(Read, maria), HeldUp::No);
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

    #[test]
    fn backup_lock_is_mysql_8_and_later_only_and_auto_never_picks_it() {
        let resolve = |v: &str| LockMode::BackupLock.resolve(&ServerInfo::new(v.into(), 1));
        assert_eq!(resolve("8.0.36").ok(), Some(LockMode::BackupLock));
        assert_eq!(resolve("8.4.3").ok(), Some(LockMode::BackupLock));
        assert_eq!(resolve("9.7.4").ok(), Some(LockMode::BackupLock));
        let refused = resolve("5.7.44")
            .expect_err("5.7 has no backup lock")
            .to_string();
        assert!(
            refused.contains("needs MySQL or Percona Server 8.0"),
            "{refused}"
        );
        let refused = resolve("10.11.6-MariaDB")
            .expect_err("MariaDB has no backup lock")
            .to_string();
        assert!(refused.contains("mariadb 10.11.6-MariaDB"), "{refused}");
        assert!(refused.contains("Use lock-mode=auto"), "{refused}");
        let auto = LockMode::Auto.resolve(&ServerInfo::new("8.0.36".into(), 1));
        assert_eq!(auto.ok(), Some(LockMode::Ftwrl));
    }

    #[test]
    fn only_ddl_holds_up_the_backup_lock_and_it_alone_lets_commits_through() {
        use StatementKind::*;
        for kind in [Read, Write] {
            assert_eq!(
                LockMode::BackupLock.held_up_by(kind, Flavor::MySql),
                HeldUp::No
            );
        }
        assert_eq!(
            LockMode::BackupLock.held_up_by(Ddl, Flavor::MySql),
            HeldUp::Yes
        );
        assert!(!LockMode::BackupLock.blocks_commits());
        assert!(LockMode::Ftwrl.blocks_commits() && LockMode::BackupStage.blocks_commits());
        assert_eq!(
            LockMode::BackupLock.acquire_statements(true),
            &["LOCK INSTANCE FOR BACKUP"]
        );
        assert_eq!(LockMode::BackupLock.release_statement(), "UNLOCK INSTANCE");
    }

    #[test]
    fn every_lock_connection_is_capped_alike_on_each_server() {
        assert_eq!(
            session_caps(3, 60, Flavor::MariaDb),
            "SET SESSION lock_wait_timeout = 3, wait_timeout = 70, autocommit = 1, max_statement_time = 3"
        );
        assert_eq!(
            session_caps(3, 60, Flavor::MySql),
            "SET SESSION lock_wait_timeout = 3, wait_timeout = 70, autocommit = 1"
        );
    }
}
