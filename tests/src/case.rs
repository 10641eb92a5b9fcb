//! The cases a scenario is declared for (the suite's `scenario!` runs it once per case): MariaDB
//! 10.11 from the machine's packages in a given lock mode, or MySQL 9.7 in its cached chroot with
//! GTID on. Each case knows what differs between servers and nothing else: how its server is
//! started, its `lock-mode` line, the lock statement it queues, and how long a leftover may take
//! to go (MySQL's FTWRL pre-flush and slower start get 10 s where MariaDB gets 5 s).

use std::fmt;
use std::time::Duration;

use crate::accounts::{Grants, MARIADB_GRANTS, MYSQL_GRANTS};
use crate::{faults, matrix, Flavour, Server};

/// One server and lock mode a scenario runs on; its name is the test's last path segment.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub flavour: Flavour,
    /// The `lock-mode` setting (`None`: none written, so `auto`).
    lock_mode: Option<&'static str>,
    name: &'static str,
}

impl Case {
    /// MariaDB 10.11 with no `lock-mode` line: `auto`, which takes backup stages there.
    pub fn default_mode() -> Case {
        Case::mariadb(None, "default_mode")
    }

    /// MariaDB 10.11 with `lock-mode = ftwrl`.
    pub fn ftwrl() -> Case {
        Case::mariadb(Some("ftwrl"), "ftwrl")
    }

    /// MariaDB 10.11 with `lock-mode = backup-stage`.
    pub fn backup_stage() -> Case {
        Case::mariadb(Some("backup-stage"), "backup_stage")
    }

    /// MySQL 9.7 with no `lock-mode` line: `auto`, which takes FTWRL there (the harness's MySQL
    /// runs with `innodb_flush_log_at_trx_commit = 2`, which rules the backup lock out).
    pub fn mysql_9_7() -> Case {
        Case {
            flavour: Flavour::MySql97,
            lock_mode: None,
            name: "mysql_9_7",
        }
    }

    fn mariadb(lock_mode: Option<&'static str>, name: &'static str) -> Case {
        Case {
            flavour: Flavour::MariaDb1011,
            lock_mode,
            name,
        }
    }

    pub fn is_mysql(self) -> bool {
        self.flavour.is_mysql()
    }

    /// The lock the tool takes in this case (`ftwrl` or `backup-stage`).
    pub fn mode(self) -> &'static str {
        self.lock_mode
            .unwrap_or_else(|| self.flavour.auto_lock_mode())
    }

    /// `[mysql-snapshot]` lines: this case's `lock-mode` line (if any), then `extra`.
    pub fn settings(self, extra: &str) -> String {
        match (self.lock_mode, extra) {
            (None, extra) => extra.to_string(),
            (Some(mode), "") => format!("lock-mode = {mode}"),
            (Some(mode), extra) => format!("lock-mode = {mode}\n{extra}"),
        }
    }

    /// How long a released lock or an exited locker may take to show.
    pub fn limit(self) -> Duration {
        Duration::from_secs(if self.is_mysql() { 10 } else { 5 })
    }

    /// What a lock attempt waits in, as the processlist shows it. On MySQL: the pre-flush
    /// (`FLUSH NO_WRITE_TO_BINLOG TABLES`, on by default), then `FLUSH TABLES WITH READ LOCK`.
    pub fn attempt(self) -> &'static str {
        if self.is_mysql() {
            "FLUSH "
        } else {
            faults::lock_statement(self.mode())
        }
    }

    /// README's grants for this case's server.
    pub fn grants(self) -> &'static Grants {
        if self.is_mysql() {
            &MYSQL_GRANTS
        } else {
            &MARIADB_GRANTS
        }
    }

    /// This case's server with the binary log on (server id 1; GTID on MySQL) plus `extra`, or
    /// `None` after a loud banner when the MySQL chroot cannot be built and
    /// `MYSQL_SNAPSHOT_SKIP_MATRIX=1` allows the skip.
    pub fn start(self, extra: &[&str]) -> Option<Server> {
        if !self.is_mysql() {
            let mut args = vec!["--log-bin=binlog", "--server-id=1"];
            args.extend_from_slice(extra);
            return Some(Server::start_with(&args));
        }
        if !matrix::require(self.flavour) {
            return None;
        }
        let server = Server::start_flavour(self.flavour, extra);
        assert!(server.flavour().is_mysql(), "not a MySQL server");
        Some(server)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}
