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

/// The backup lock's refusals known from this run's settings alone: a caller that does not
/// freeze the filesystems (`sync_filesystems`), and `rotate_binlog`.
pub fn setting_refusals(sync_filesystems: bool, rotate_binlog: bool) -> Vec<String> {
    [
        (sync_filesystems, SYNCED_NOT_FROZEN),
        (rotate_binlog, ROTATED_NOT_AT_SNAPSHOT),
    ]
    .into_iter()
    .filter(|(applies, _)| *applies)
    .map(|(_, why)| why.to_string())
    .collect()
}

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
    /// which is why the mode is taken only when every precondition holds
    /// (`surroundings::Surroundings::backup_lock_refusals`): no non-transactional user table and
    /// durable settings — `auto` falls back to FTWRL otherwise, an explicit `backup-lock` is
    /// refused. The tables are listed under the lock itself: a non-transactional table cannot
    /// appear while it is held (creating one is DDL, which the lock blocks), and writers never
    /// wait for the scan. Coordinates come from one read of `performance_schema.log_status` and
    /// are a lower bound (commits flow until the freeze).
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

    /// The mode to take on this server, with why: `Auto` picks backup stages on MariaDB 10.4.1
    /// and later, the backup lock on MySQL and Percona Server 8.0.14 and later (where
    /// `performance_schema.log_status` exists) with FTWRL to fall back to, and FTWRL elsewhere; an
    /// explicit `backup-stage` or `backup-lock` on a server without it is an error. The choice is
    /// settled by [`Choice::settle`] once the backup lock's preconditions are known.
    pub fn resolve(self, info: &ServerInfo) -> Result<Choice> {
        let has_backup_stage = info.flavor == Flavor::MariaDb && info.at_least(10, 4, 1);
        let has_backup_lock = info.flavor == Flavor::MySql && info.at_least(8, 0, 0);
        let choice = |mode: LockMode, fallback: Option<LockMode>, why: &str| Choice {
            requested: self,
            mode,
            fallback,
            why: why.to_string(),
        };
        match self {
            LockMode::BackupLock if !has_backup_lock => Err(Error::Server {
                statement: "LOCK INSTANCE FOR BACKUP".into(),
                message: format!(
                    "lock-mode=backup-lock needs MySQL or Percona Server 8.0 or later; this server is {} {}. Use lock-mode=auto",
                    info.flavor.name(),
                    info.version
                ),
            }),
            LockMode::Auto if has_backup_stage => Ok(choice(
                LockMode::BackupStage,
                None,
                "MariaDB 10.4.1 or later: backup stages block commits without waiting for InnoDB writes",
            )),
            LockMode::Auto if has_backup_lock && info.at_least(8, 0, 14) => Ok(choice(
                LockMode::BackupLock,
                Some(LockMode::Ftwrl),
                "MySQL 8.0.14 or later and every precondition of the backup lock holds: writers never wait for it",
            )),
            LockMode::Auto => Ok(choice(
                LockMode::Ftwrl,
                None,
                "the server has neither backup stages (MariaDB 10.4.1) nor the backup lock with log_status (MySQL 8.0.14)",
            )),
            LockMode::BackupStage if !has_backup_stage => Err(Error::Server {
                statement: "BACKUP STAGE".into(),
                message: format!(
                    "lock-mode=backup-stage needs MariaDB 10.4.1 or later; this server is {}. Use lock-mode=ftwrl or auto",
                    info.version
                ),
            }),
            mode => Ok(choice(mode, None, "chosen in the configuration")),
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
    ///
    /// `before_blocking`, when given, runs after the statements that block no commit (the
    /// pre-flush; `BACKUP STAGE` up to `BLOCK_DDL`) and before the one that does, which then
    /// goes in a round trip of its own: what the caller still waits for overlaps the lock's own
    /// preparation, and no writer waits for it.
    pub fn acquire(
        self,
        conn: &mut Conn,
        pre_flush: bool,
        then: &[String],
        before_blocking: Option<&mut dyn FnMut(&mut Conn)>,
    ) -> Result<(Attempt, Answers)> {
        let statements = self.acquire_statements(pre_flush);
        let blocking = statements.len() - 1;
        let (first, failed) = match before_blocking {
            None => (0, None),
            Some(wait) => {
                let preparing: Vec<String> = statements[..blocking]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let (_, failed) = Answers::fetch(conn, &preparing);
                if failed.is_none() {
                    wait(conn);
                }
                (blocking, failed)
            }
        };
        let failed = match failed {
            Some(failed) => failed,
            None => {
                let batch: Vec<String> = statements[first..]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(then.iter().cloned())
                    .collect();
                let (answers, failed) = Answers::fetch(conn, &batch);
                match failed.filter(|f| first + f.index < statements.len()) {
                    None => return Ok((Attempt::Acquired, answers)),
                    Some(Failed { index, error }) => Failed {
                        index: first + index,
                        error,
                    },
                }
            }
        };
        let Failed { index, error } = failed;
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

/// The lock a freeze takes, resolved once from `lock-mode` for this server: never `Auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What the configuration (or `--lock-mode`) asked for.
    pub requested: LockMode,
    /// The mode to take.
    pub mode: LockMode,
    /// `auto`'s backup lock: the mode taken instead when one of its preconditions fails (an
    /// explicit `backup-lock` is refused then).
    pub fallback: Option<LockMode>,
    /// Why this mode, in a line (the `event=lock-mode` log line, the info file, `--check`).
    pub why: String,
}

impl Choice {
    /// The choice once `refusals` (why the backup lock cannot keep its promise here; empty when
    /// every precondition known so far holds) are known: unchanged when there are none or the
    /// mode is not the backup lock, the fallback when `auto` picked it, a refusal naming each
    /// cause when it was asked for.
    pub fn settle(self, refusals: Vec<String>) -> Result<Choice> {
        if self.mode != LockMode::BackupLock || refusals.is_empty() {
            return Ok(self);
        }
        match self.fallback {
            Some(mode) => Ok(Choice {
                mode,
                fallback: None,
                why: format!("the backup lock is ruled out: {}", refusals.join("; ")),
                ..self
            }),
            None => Err(Error::ModeRefused {
                mode: LockMode::BackupLock.name(),
                reasons: refusals,
            }),
        }
    }

    /// One line for the log and `--check`: `backup-lock (lock-mode = auto: why)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (lock-mode = {}: {})",
            self.mode.name(),
            self.requested.name(),
            self.why
        )
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

    fn pick(version: &str) -> Option<LockMode> {
        LockMode::Auto
            .resolve(&ServerInfo::new(version.into(), 1))
            .ok()
            .map(|c| c.mode)
    }

    #[test]
    fn auto_picks_backup_stage_on_mariadb_the_backup_lock_on_mysql_8_and_ftwrl_elsewhere() {
        assert_eq!(pick("10.11.6-MariaDB-log"), Some(LockMode::BackupStage));
        assert_eq!(pick("11.8.2-MariaDB-1"), Some(LockMode::BackupStage));
        assert_eq!(pick("10.4.1-MariaDB"), Some(LockMode::BackupStage));
        assert_eq!(pick("10.4.0-MariaDB"), Some(LockMode::Ftwrl));
        assert_eq!(pick("8.0.36"), Some(LockMode::BackupLock));
        assert_eq!(pick("8.4.3"), Some(LockMode::BackupLock));
        assert_eq!(pick("9.7.4"), Some(LockMode::BackupLock));
        // Before 8.0.14 there is no log_status to read the coordinates under it.
        assert_eq!(pick("8.0.13"), Some(LockMode::Ftwrl));
        assert_eq!(pick("5.7.44"), Some(LockMode::Ftwrl));
    }

    #[test]
    fn auto_falls_back_to_ftwrl_naming_why_and_an_explicit_backup_lock_is_refused_instead() {
        let mysql = ServerInfo::new("8.0.36".into(), 1);
        let why = vec!["innodb_flush_log_at_trx_commit = 2: …".to_string()];
        let auto = LockMode::Auto.resolve(&mysql).expect("resolves");
        assert_eq!(auto.fallback, Some(LockMode::Ftwrl));
        let settled = auto.clone().settle(why.clone()).expect("resolves");
        assert_eq!(settled.mode, LockMode::Ftwrl);
        assert_eq!(settled.fallback, None, "a fallback falls back once");
        assert_eq!(settled.requested, LockMode::Auto);
        assert!(
            settled.describe().starts_with("ftwrl (lock-mode = auto: the backup lock is ruled out: innodb_flush_log_at_trx_commit = 2"),
            "{}",
            settled.describe()
        );
        assert_eq!(auto.clone().settle(Vec::new()).expect("resolves"), auto);
        let explicit = LockMode::BackupLock.resolve(&mysql).expect("resolves");
        let refused = explicit
            .settle(why)
            .expect_err("asked for: refused")
            .to_string();
        assert!(
            refused.contains("lock-mode = backup-lock cannot promise")
                && refused.contains("innodb_flush_log_at_trx_commit = 2"),
            "{refused}"
        );
        // Refusals of the backup lock change nothing for another mode.
        let ftwrl = LockMode::Ftwrl.resolve(&mysql).expect("resolves");
        assert_eq!(
            ftwrl.clone().settle(vec!["x".into()]).expect("resolves"),
            ftwrl
        );
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
            LockMode::BackupStage.resolve(&new).ok().map(|c| c.mode),
            Some(LockMode::BackupStage)
        );
    }

    #[test]
    fn backup_lock_is_mysql_8_and_later_only() {
        let resolve = |v: &str| {
            LockMode::BackupLock
                .resolve(&ServerInfo::new(v.into(), 1))
                .map(|c| c.mode)
        };
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
