//! Whether the server's settings make a snapshot safe to restore: the durability settings and
//! non-transactional user tables, read before the lock (the backup lock's tables under it) and
//! recorded in the info file with when each was read.
//!
//! Owns the list of settings that matter, reading them (from rows the caller fetched, so the
//! rules are testable on the exact result shapes), and one line per risky value saying what can
//! go wrong on restore and the setting that fixes it. Only `innodb_flush_log_at_trx_commit = 0`
//! with the binary log on is a hard warning; the rest are notes. It never changes a setting.
use std::time::Duration;

use mysql::Conn;
use serde::{Deserialize, Serialize};

use crate::server::Session;
use crate::server::{Flavor, ServerInfo};

/// The server variables this module reads (a missing one is simply absent from the result).
pub const VARIABLES: [&str; 9] = [
    "innodb_flush_log_at_trx_commit",
    "sync_binlog",
    "innodb_doublewrite",
    "log_bin",
    "binlog_format",
    "delay_key_write",
    "gtid_mode",
    "relay_log_info_repository",
    "relay_log_recovery",
];

/// How long the query for non-transactional tables may run before it is skipped with a note.
pub const TABLES_QUERY_LIMIT: Duration = Duration::from_secs(2);

/// Schemas whose tables are the server's own.
const SYSTEM_SCHEMAS: &str = "'mysql', 'sys', 'performance_schema', 'information_schema'";

/// The durability-relevant settings as the server reported them (strings as shown by
/// `SHOW GLOBAL VARIABLES`), and what was found about non-transactional tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durability {
    pub innodb_flush_log_at_trx_commit: Option<String>,
    pub sync_binlog: Option<String>,
    pub innodb_doublewrite: Option<String>,
    pub log_bin: Option<String>,
    pub binlog_format: Option<String>,
    pub delay_key_write: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gtid_mode: Option<String>,
    /// MariaDB: the engine of `mysql.gtid_slave_pos` (InnoDB keeps a replica's position crash-safe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gtid_slave_pos_engine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_log_info_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_log_recovery: Option<String>,
    /// Non-transactional user tables (`schema.table engine`), at most 10 named.
    pub non_transactional_tables: Vec<String>,
    /// How many there are in all; `None` when the query was skipped (see `notes`).
    pub non_transactional_count: Option<u64>,
    /// The server replicates from a source (the relay-log settings then matter).
    pub replica: bool,
    /// On a replica: temporary tables its SQL thread held open while the lock was held
    /// (`Slave_open_temp_tables` / `Replica_open_temp_tables`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_open_temp_tables: Option<u64>,
    /// `replica-safe`: the connections whose SQL thread was stopped, with no temporary table
    /// open, for the length of the lock (started again at release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_sql_stopped: Vec<String>,
    /// Why something could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// When the settings and the tables were read, against the lock (the replica's facts above
    /// are always read under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<WhenRead>,
    /// Every non-transactional user table whose rows live on disk (all but MEMORY and
    /// BLACKHOLE), for `lock-mode = backup-lock`'s precondition; not written anywhere.
    #[serde(skip)]
    pub crash_unsafe_tables: Vec<String>,
}

/// When a group of facts was read, against the lock the snapshot is taken under. A fact read
/// before the lock can have been overtaken by a change made before the lock was taken (a table
/// created or altered, a `SET GLOBAL`); one read under a lock that blocks DDL cannot (for tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadAt {
    BeforeTheLock,
    UnderTheLock,
}

/// Where the info file's durability facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhenRead {
    /// The settings: always in the round trip before the lock.
    pub settings: ReadAt,
    /// The non-transactional tables; absent when they were not listed (see `notes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<ReadAt>,
}

/// Engines whose rows never reach the disk: every restored copy has them empty, whatever the lock,
/// so they change nothing that `backup-lock` promises.
const NOTHING_ON_DISK: [&str; 2] = ["MEMORY", "BLACKHOLE"];

/// How many tables a refusal names before it counts the rest.
const NAMED_TABLES: usize = 10;

/// One risky value: what can go wrong on restore, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    /// A hard warning (committed transactions can be lost from the copy), not a note.
    pub hard: bool,
    pub text: String,
}

impl Durability {
    /// The settings from `SHOW GLOBAL VARIABLES` rows (name, value).
    pub fn from_variables(rows: &[(String, Option<String>)]) -> Durability {
        let get = |name: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.clone())
        };
        Durability {
            innodb_flush_log_at_trx_commit: get("innodb_flush_log_at_trx_commit"),
            sync_binlog: get("sync_binlog"),
            innodb_doublewrite: get("innodb_doublewrite"),
            log_bin: get("log_bin"),
            binlog_format: get("binlog_format"),
            delay_key_write: get("delay_key_write"),
            gtid_mode: get("gtid_mode"),
            relay_log_info_repository: get("relay_log_info_repository"),
            relay_log_recovery: get("relay_log_recovery"),
            read: Some(WhenRead {
                settings: ReadAt::BeforeTheLock,
                tables: None,
            }),
            ..Durability::default()
        }
    }

    fn binlog_on(&self) -> bool {
        is_on(self.log_bin.as_deref())
    }

    /// Every risky value, one line each: what can go wrong on restore and the setting that fixes it.
    pub fn risks(&self) -> Vec<Risk> {
        let mut risks = self.durability_risks();
        risks.extend(self.replication_risks());
        risks.extend(self.table_risks());
        risks
    }

    /// The settings that decide whether a commit is on disk when it returns, and whether a torn
    /// page or a replica seeded from the copy can be trusted.
    fn durability_risks(&self) -> Vec<Risk> {
        let mut risks = Vec::new();
        let note = |text: String| Risk { hard: false, text };
        match self.innodb_flush_log_at_trx_commit.as_deref() {
            Some("0") if self.binlog_on() => risks.push(Risk {
                hard: true,
                text: "innodb_flush_log_at_trx_commit = 0 with the binary log on: transactions in the binlog (and on its replicas) may be missing from InnoDB in a restored copy. Set innodb_flush_log_at_trx_commit = 1".into(),
            }),
            Some("0") => risks.push(note(
                "innodb_flush_log_at_trx_commit = 0: up to a second of commits lives only in memory; the lock keeps it consistent, but a crash-consistent copy would lose them. Set it to 1 (or 2)".into(),
            )),
            Some("2") => risks.push(note(
                "innodb_flush_log_at_trx_commit = 2: commits reach the redo log in the page cache only; fine where the platform freezes or syncs the filesystems (sync-filesystems), lost in a crash-consistent copy. Set it to 1 for full durability".into(),
            )),
            _ => {}
        }
        if self.binlog_on() && self.sync_binlog.as_deref() == Some("0") {
            risks.push(note(
                "sync_binlog = 0: the binary log is flushed by the kernel when it likes; fine where the filesystems are frozen or synced, but a crash-consistent copy can end its binlog before its InnoDB state. Set sync_binlog = 1".into(),
            ));
        }
        if matches!(self.innodb_doublewrite.as_deref(), Some(v) if !is_on(Some(v)) && !v.eq_ignore_ascii_case("fast"))
        {
            risks.push(note(
                "innodb_doublewrite is off: a page torn by the copy (or a crash) cannot be repaired by InnoDB. Set innodb_doublewrite = ON unless the storage writes 16 KiB pages atomically".into(),
            ));
        }
        if self.binlog_on()
            && self
                .binlog_format
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case("STATEMENT"))
        {
            risks.push(note(
                "binlog_format = STATEMENT: a replica seeded from the copy may diverge on non-deterministic statements. Set binlog_format = ROW (or MIXED)".into(),
            ));
        }
        if self
            .delay_key_write
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("ALL"))
        {
            risks.push(note(
                "delay_key_write = ALL: MyISAM index blocks stay in memory past FLUSH TABLES on some paths; a copy may need REPAIR TABLE. Set delay_key_write = ON (or OFF)".into(),
            ));
        }
        risks
    }

    /// What a replica restored from the copy needs to know where it stands.
    fn replication_risks(&self) -> Vec<Risk> {
        let mut risks = Vec::new();
        let note = |text: String| Risk { hard: false, text };
        if let Some(engine) = &self.gtid_slave_pos_engine {
            if !engine.eq_ignore_ascii_case("InnoDB") {
                risks.push(note(format!(
                    "mysql.gtid_slave_pos uses {engine}: a replica restored from the copy may not know its exact position. ALTER TABLE mysql.gtid_slave_pos ENGINE = InnoDB"
                )));
            }
        }
        if self.replica
            && self
                .relay_log_info_repository
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case("FILE"))
        {
            risks.push(note(
                "relay_log_info_repository = FILE: a replica restored from the copy may re-apply or skip events. Set relay_log_info_repository = TABLE".into(),
            ));
        }
        if self.replica
            && self
                .relay_log_recovery
                .as_deref()
                .is_some_and(|v| !is_on(Some(v)))
        {
            risks.push(note(
                "relay_log_recovery is off: a replica restored from the copy trusts relay logs that may be torn. Set relay_log_recovery = ON on replicas".into(),
            ));
        }
        if let Some(open) = self.replica_open_temp_tables.filter(|n| *n > 0) {
            risks.push(Risk {
                hard: true,
                text: format!(
                    "the replica's SQL thread held {open} temporary table(s) open (statement-based events): a replica cloned from this copy lacks them and can break or diverge. Set replica-safe = on (the SQL thread is then stopped at a moment with none open), or use binlog_format = ROW on its source"
                ),
            });
        }
        risks
    }

    /// Non-transactional user tables: consistent only under the lock.
    fn table_risks(&self) -> Vec<Risk> {
        let mut risks = Vec::new();
        if let Some(count) = self.non_transactional_count.filter(|c| *c > 0) {
            let more = count.saturating_sub(self.non_transactional_tables.len() as u64);
            risks.push(Risk { hard: false, text: format!(
                "{count} non-transactional user table(s) visible to this account ({}{}): they are consistent only because the lock flushes and blocks them; they cannot be recovered from a copy taken without it. Convert them to InnoDB where you can",
                self.non_transactional_tables.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            )});
        }
        risks
    }

    /// Why `lock-mode = backup-lock` cannot promise a copy that crash recovery makes consistent,
    /// one line per failed precondition with its fix; empty when every one holds. The lock lets
    /// commits through until the filesystems freeze, so the copy must be one that crash recovery
    /// restores exactly: only crash-safe tables, and every commit durable when it returns.
    pub fn backup_lock_refusals(&self) -> Vec<String> {
        let mut refusals = self.table_refusals();
        refusals.extend(self.setting_refusals());
        refusals
    }

    /// The backup lock's preconditions on the tables: every user table crash-safe, and the list
    /// known. Checked under the lock, where no table can change engine or appear.
    pub fn table_refusals(&self) -> Vec<String> {
        let mut refusals = Vec::new();
        match self.non_transactional_count {
            None => refusals.push(format!(
                "the non-transactional tables could not be listed ({}); give the query room or use lock-mode = auto",
                if self.notes.is_empty() {
                    "no answer".to_string()
                } else {
                    self.notes.join("; ")
                }
            )),
            Some(_) if !self.crash_unsafe_tables.is_empty() => {
                let count = self.crash_unsafe_tables.len();
                let named = &self.crash_unsafe_tables[..count.min(NAMED_TABLES)];
                let more = count - named.len();
                refusals.push(format!(
                    "{count} non-transactional user table(s) ({}{}): crash recovery cannot make them consistent, and the backup lock does not stop their writes. Convert them (ALTER TABLE … ENGINE = InnoDB) or use lock-mode = auto",
                    named.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ));
            }
            Some(_) => {}
        }
        refusals
    }

    /// The backup lock's preconditions on the settings: every commit durable when it returns,
    /// torn pages repairable. Known before the lock.
    pub fn setting_refusals(&self) -> Vec<String> {
        let mut refusals = Vec::new();
        let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unknown)".into());
        if self.innodb_flush_log_at_trx_commit.as_deref() != Some("1") {
            refusals.push(format!(
                "innodb_flush_log_at_trx_commit = {}: a commit may not be on disk when the filesystems freeze, so the copy can lose it. Set innodb_flush_log_at_trx_commit = 1",
                value(&self.innodb_flush_log_at_trx_commit)
            ));
        }
        if self.binlog_on() && self.sync_binlog.as_deref() != Some("1") {
            refusals.push(format!(
                "sync_binlog = {} with the binary log on: the copy's binary log can end before its InnoDB state. Set sync_binlog = 1",
                value(&self.sync_binlog)
            ));
        }
        let doublewrite = self.innodb_doublewrite.as_deref().unwrap_or("");
        if !is_on(Some(doublewrite)) && !doublewrite.eq_ignore_ascii_case("DETECT_AND_RECOVER") {
            refusals.push(format!(
                "innodb_doublewrite = {}: crash recovery cannot repair a torn page. Set innodb_doublewrite = ON",
                value(&self.innodb_doublewrite)
            ));
        }
        refusals
    }

    /// The preconditions `backup-lock` checked and found holding, for the info file.
    pub fn backup_lock_preconditions(&self) -> Vec<String> {
        let mut held = vec![
            format!(
                "no non-transactional user table with rows on disk ({} non-transactional in all)",
                self.non_transactional_count.unwrap_or(0)
            ),
            "innodb_flush_log_at_trx_commit = 1".to_string(),
        ];
        if self.binlog_on() {
            held.push("sync_binlog = 1".to_string());
        }
        held.push(format!(
            "innodb_doublewrite = {}",
            self.innodb_doublewrite.as_deref().unwrap_or("ON")
        ));
        held
    }
}

/// On a replica, read while the lock is held: the temporary tables its SQL thread keeps open.
pub fn replica_open_temp_tables(conn: &mut Conn) -> Result<Option<u64>, crate::Error> {
    let rows = crate::storage::show_global(
        conn,
        "STATUS",
        &["Slave_open_temp_tables", "Replica_open_temp_tables"],
    )?;
    Ok(rows
        .iter()
        .filter_map(|(_, v)| v.as_deref().and_then(|v| v.parse::<u64>().ok()))
        .max())
}

fn is_on(value: Option<&str>) -> bool {
    matches!(
        value.map(str::to_ascii_uppercase).as_deref(),
        Some("ON" | "1" | "YES" | "TRUE")
    )
}

/// Engines that keep no crash-safe transaction log.
const NON_TRANSACTIONAL: &str =
    "'MyISAM', 'Aria', 'MEMORY', 'CSV', 'ARCHIVE', 'MRG_MyISAM', 'MRG_MYISAM', 'BLACKHOLE'";

/// The statement listing non-transactional user tables, capped on the server side.
pub fn tables_statement(info: &ServerInfo) -> String {
    // MariaDB: the same scan also brings the engine of mysql.gtid_slave_pos (one round trip).
    let gtid_slave_pos = match info.flavor {
        Flavor::MariaDb => " OR (TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'gtid_slave_pos')",
        Flavor::MySql => "",
    };
    let select = format!(
        "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME, ' ', ENGINE) FROM information_schema.TABLES \
         WHERE TABLE_TYPE = 'BASE TABLE' AND (ENGINE IN ({NON_TRANSACTIONAL}) \
         AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}){gtid_slave_pos}) ORDER BY TABLE_SCHEMA, TABLE_NAME"
    );
    let seconds = TABLES_QUERY_LIMIT.as_secs();
    match info.flavor {
        Flavor::MariaDb => format!("SET STATEMENT max_statement_time = {seconds} FOR {select}"),
        Flavor::MySql => select.replacen(
            "SELECT",
            &format!("SELECT /*+ MAX_EXECUTION_TIME({}) */", seconds * 1000),
            1,
        ),
    }
}

/// What the scan for non-transactional tables found: the tables (`schema.table engine`, the
/// MariaDB `mysql.gtid_slave_pos` row among them), or why it was skipped.
pub type TablesScan = std::result::Result<Vec<String>, String>;

/// Runs the scan for non-transactional tables (the session's answers may hold it, sent in a
/// batch); a query that fails or runs past its cap becomes the note of an `Err`, never an error.
pub fn scan_tables(session: &mut Session) -> TablesScan {
    let statement = tables_statement(&session.info);
    scanned(session.query(&statement))
}

/// [`scan_tables`] on a bare connection to the server `info` describes (between two statements
/// of a lock, say), asking the server now.
pub fn scan_tables_on(conn: &mut Conn, info: &ServerInfo) -> TablesScan {
    scanned(crate::rows::all(conn, &tables_statement(info)))
}

/// The scan's rows, or its note.
fn scanned(rows: mysql::Result<Vec<mysql::Row>>) -> TablesScan {
    rows.map(|rows| {
        rows.into_iter()
            .filter_map(|row| mysql::from_row_opt::<String>(row).ok())
            .collect()
    })
    .map_err(|e| {
        format!(
            "non-transactional tables not checked (the query was stopped after {} s or failed: {}); servers with very many tables exist",
            TABLES_QUERY_LIMIT.as_secs(),
            crate::server::describe(&e)
        )
    })
}

impl Durability {
    /// The tables were listed under a lock released since (the backup lock `auto` gave up):
    /// for the lock taken next, before it.
    pub fn listed_before_the_lock(&mut self) {
        if let Some(WhenRead {
            tables: Some(at), ..
        }) = self.read.as_mut()
        {
            *at = ReadAt::BeforeTheLock;
        }
    }

    /// Records what [`scan_tables`] found, and when (`at`) it listed the tables.
    pub fn apply(&mut self, scan: TablesScan, at: ReadAt) {
        match scan {
            Ok(mut tables) => {
                if let Some(read) = self.read.as_mut() {
                    read.tables = Some(at);
                }
                if let Some(i) = tables
                    .iter()
                    .position(|t| t.starts_with("mysql.gtid_slave_pos "))
                {
                    let row = tables.remove(i);
                    self.gtid_slave_pos_engine = row.rsplit(' ').next().map(str::to_string);
                }
                self.non_transactional_count = Some(tables.len() as u64);
                self.crash_unsafe_tables = tables
                    .iter()
                    .filter(|t| {
                        let engine = t.rsplit(' ').next().unwrap_or("");
                        !NOTHING_ON_DISK
                            .iter()
                            .any(|e| e.eq_ignore_ascii_case(engine))
                    })
                    .cloned()
                    .collect();
                self.non_transactional_tables = tables.into_iter().take(NAMED_TABLES).collect();
            }
            Err(note) => self.notes.push(note),
        }
    }
}

/// Reads the settings (`rows` are the caller's variable rows, which include [`VARIABLES`]) and
/// scans for non-transactional tables on the same connection.
pub fn read(session: &mut Session, rows: &[(String, Option<String>)]) -> Durability {
    let mut durability = Durability::from_variables(rows);
    durability.apply(scan_tables(session), ReadAt::BeforeTheLock);
    durability
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn flush_log_0_with_the_binlog_is_the_one_hard_warning() {
        let d = Durability::from_variables(&rows(&[
            ("innodb_flush_log_at_trx_commit", "0"),
            ("log_bin", "ON"),
            ("sync_binlog", "1"),
            ("innodb_doublewrite", "ON"),
        ]));
        let risks = d.risks();
        assert_eq!(risks.len(), 1, "{risks:?}");
        assert!(risks[0].hard);
        assert!(risks[0]
            .text
            .contains("Set innodb_flush_log_at_trx_commit = 1"));
        let without_binlog = Durability::from_variables(&rows(&[
            ("innodb_flush_log_at_trx_commit", "0"),
            ("log_bin", "OFF"),
        ]));
        assert!(without_binlog.risks().iter().all(|r| !r.hard));
    }

    #[test]
    fn a_durable_server_has_no_risk_and_each_risky_value_is_named_with_its_fix() {
        let durable = Durability::from_variables(&rows(&[
            ("innodb_flush_log_at_trx_commit", "1"),
            ("log_bin", "ON"),
            ("sync_binlog", "1"),
            ("innodb_doublewrite", "ON"),
            ("binlog_format", "ROW"),
            ("delay_key_write", "ON"),
        ]));
        assert!(durable.risks().is_empty(), "{:?}", durable.risks());
        let primary = Durability::from_variables(&rows(&[("relay_log_recovery", "OFF")]));
        assert!(
            primary.risks().is_empty(),
            "relay-log settings matter on replicas only"
        );
        let mut risky = Durability::from_variables(&rows(&[
            ("innodb_flush_log_at_trx_commit", "2"),
            ("log_bin", "ON"),
            ("sync_binlog", "0"),
            ("innodb_doublewrite", "OFF"),
            ("binlog_format", "STATEMENT"),
            ("delay_key_write", "ALL"),
            ("relay_log_info_repository", "FILE"),
            ("relay_log_recovery", "OFF"),
        ]));
        risky.gtid_slave_pos_engine = Some("Aria".into());
        risky.replica_open_temp_tables = Some(2);
        risky.replica = true;
        risky.non_transactional_count = Some(12);
        risky.non_transactional_tables = (1..=10).map(|i| format!("app.t{i} MyISAM")).collect();
        let texts: Vec<String> = risky.risks().into_iter().map(|r| r.text).collect();
        for fix in [
            "Set it to 1 for full durability",
            "Set sync_binlog = 1",
            "Set innodb_doublewrite = ON",
            "Set binlog_format = ROW",
            "Set delay_key_write = ON",
            "ENGINE = InnoDB",
            "Set relay_log_info_repository = TABLE",
            "Set relay_log_recovery = ON",
            "and 2 more",
            "held 2 temporary table(s) open",
        ] {
            assert!(
                texts.iter().any(|t| t.contains(fix)),
                "no `{fix}` in {texts:#?}"
            );
        }
    }

    /// A durable MySQL 8 server as `SHOW GLOBAL VARIABLES` shows it, with the scan's answer.
    fn mysql_durable(tables: &[&str]) -> Durability {
        let mut d = Durability::from_variables(&rows(&[
            ("innodb_flush_log_at_trx_commit", "1"),
            ("log_bin", "ON"),
            ("sync_binlog", "1"),
            ("innodb_doublewrite", "ON"),
        ]));
        d.apply(
            Ok(tables.iter().map(|t| t.to_string()).collect()),
            ReadAt::UnderTheLock,
        );
        d
    }

    #[test]
    fn backup_lock_holds_on_a_durable_all_innodb_server_and_memory_tables_do_not_count() {
        assert_eq!(
            mysql_durable(&[]).backup_lock_refusals(),
            Vec::<String>::new()
        );
        let memory = mysql_durable(&["app.cache MEMORY", "app.sink BLACKHOLE"]);
        assert_eq!(memory.backup_lock_refusals(), Vec::<String>::new());
        assert_eq!(memory.non_transactional_count, Some(2));
        let held = memory.backup_lock_preconditions();
        assert!(held.contains(&"sync_binlog = 1".to_string()), "{held:?}");
        let mut detect = mysql_durable(&[]);
        detect.innodb_doublewrite = Some("DETECT_AND_RECOVER".into());
        assert!(detect.backup_lock_refusals().is_empty());
    }

    #[test]
    fn backup_lock_refusals_name_each_failed_precondition_and_its_fix() {
        let tables: Vec<String> = (1..=12).map(|i| format!("app.t{i} MyISAM")).collect();
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        let mut d = mysql_durable(&names);
        d.innodb_flush_log_at_trx_commit = Some("2".into());
        d.sync_binlog = Some("0".into());
        d.innodb_doublewrite = Some("DETECT_ONLY".into());
        let refusals = d.backup_lock_refusals();
        assert_eq!(refusals.len(), 4, "{refusals:#?}");
        assert!(refusals[0].starts_with("12 non-transactional user table(s) (app.t1 MyISAM"));
        assert!(
            refusals[0].contains("app.t10 MyISAM and 2 more"),
            "{}",
            refusals[0]
        );
        assert!(
            !refusals[0].contains("app.t11"),
            "at most 10 named: {}",
            refusals[0]
        );
        assert!(refusals[1].contains("Set innodb_flush_log_at_trx_commit = 1"));
        assert!(refusals[2].contains("Set sync_binlog = 1"));
        assert!(refusals[3].contains("Set innodb_doublewrite = ON"));
        // Without the binary log, sync_binlog does not matter.
        let mut no_binlog = mysql_durable(&[]);
        no_binlog.log_bin = Some("OFF".into());
        no_binlog.sync_binlog = Some("0".into());
        assert!(no_binlog.backup_lock_refusals().is_empty());
        // A scan that could not run refuses: no table can be vouched for.
        let mut unscanned = Durability::from_variables(&rows(&[
            ("innodb_flush_log_at_trx_commit", "1"),
            ("innodb_doublewrite", "ON"),
        ]));
        unscanned.apply(
            Err("the query was stopped after 2 s".into()),
            ReadAt::UnderTheLock,
        );
        let refusals = unscanned.backup_lock_refusals();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0].contains("could not be listed (the query was stopped after 2 s)"));
    }

    #[test]
    fn the_tables_query_is_capped_on_each_server_and_leaves_the_system_schemas_out() {
        let maria = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        let q = tables_statement(&maria);
        assert!(
            q.starts_with("SET STATEMENT max_statement_time = 2 FOR SELECT"),
            "{q}"
        );
        let mysql = ServerInfo::new("8.0.36".into(), 1);
        let q = tables_statement(&mysql);
        assert!(
            q.starts_with("SELECT /*+ MAX_EXECUTION_TIME(2000) */"),
            "{q}"
        );
        assert!(q.contains("NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')"));
    }
}
