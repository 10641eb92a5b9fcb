//! What the snapshot is taken in: where the server's files live, whether its settings make a
//! copy safe to restore, and the cluster it belongs to — read once per freeze before the lock
//! (never while it is held) and recorded in the info file.
//!
//! Owns the order of those reads on the locker's (or the rehearsal's) connection. Nothing here
//! fails a freeze but a server that does not answer; what cannot be found becomes a flag or a
//! note. Refusing a Galera node that is not `Synced` is the caller's
//! ([`crate::galera::Galera::check_synced`]).
use std::path::Path;

use crate::durability::{self, Durability};
use crate::galera::{self, Galera};
use crate::group_replication::{self, Member};
use crate::server::Session;
use crate::server::{Flavor, ServerInfo};
use crate::storage::{self, StorageMap};
use crate::Result;

/// Everything read before the lock.
#[derive(Debug, Clone, Default)]
pub struct Surroundings {
    pub storage: StorageMap,
    pub durability: Durability,
    /// Present on a Galera node (the caller refuses one that is not `Synced`).
    pub galera: Option<Galera>,
    /// Present on a Group Replication member (MySQL; the caller refuses a long applier queue).
    pub group_replication: Option<Member>,
    /// The paths a restore needs (role, path), the info file's directory included.
    pub recovery_paths: Vec<(String, std::path::PathBuf)>,
}

impl Surroundings {
    /// Why `lock-mode = backup-lock` cannot give a consistent copy in these surroundings (empty:
    /// every precondition holds). The one list the locker refuses by and `--check` reports.
    pub fn backup_lock_refusals(&self) -> Vec<String> {
        let mut refusals = self.durability.table_refusals();
        refusals.extend(self.backup_lock_refusals_before_tables());
        refusals
    }

    /// The refusals known before the tables are listed (the settings, the cluster): the locker
    /// checks these before the lock and the tables under it.
    pub fn backup_lock_refusals_before_tables(&self) -> Vec<String> {
        let mut refusals = Vec::new();
        if self.galera.is_some() {
            refusals.push("this is a Galera node: its seqno is exact only under a lock that blocks commits. Use lock-mode = auto".to_string());
        }
        refusals.extend(self.durability.setting_refusals());
        refusals
    }

    /// The filesystems `sync-filesystems` must sync: those holding the recovery paths, each once.
    /// Unlike the storage map, a path that cannot be resolved is an error here.
    pub fn filesystems_to_sync(&self) -> Result<Vec<storage::Filesystem>> {
        storage::check_sync_program()?;
        storage::filesystems_here(&self.recovery_paths)
    }
}

/// Where the scan for non-transactional tables (the slowest read, on MySQL above all) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// On this connection, now.
    Here,
    /// Elsewhere, by the caller (`durability::scan_tables`, on a connection of its own), who then
    /// `apply`s it to `durability`.
    Elsewhere,
}

/// Reads the surroundings of a freeze; `info_file` joins the storage map. Whether the server is a
/// replica (`durability.replica`) is left to the caller, who knows it from the coordinates.
/// The session's answers may hold the reads of `statements`, sent with others in one round trip.
pub fn read(session: &mut Session, info_file: &Path, tables: Tables) -> Result<Surroundings> {
    let names = variable_names(&session.info);
    let mut rows = read_variables(session, &names)?;
    if session.info.flavor == Flavor::MySql {
        rows.extend(read_wsrep(session)?);
    }
    let galera = match galera::is_node(&rows) {
        true => Some(galera::read_before_lock(&mut session.conn, &rows)?),
        false => None,
    };
    let mut recovery = storage::paths_from_variables(&rows);
    if let Some(dir) = info_file.parent() {
        recovery.push(("info-file".into(), dir.to_path_buf()));
    }
    let group_replication = match session.info.flavor {
        Flavor::MySql => group_replication::read(session)?,
        Flavor::MariaDb => None,
    };
    Ok(Surroundings {
        storage: storage::map_here(&recovery, &storage::informational_paths(&rows)),
        durability: match tables {
            Tables::Here => durability::read(session, &rows),
            Tables::Elsewhere => Durability::from_variables(&rows),
        },
        galera,
        group_replication,
        recovery_paths: recovery,
    })
}

/// Variables that never exist on this server: not asked for. Every other one is read with one
/// `SELECT @@GLOBAL.…` (about a tenth of the cost of `SHOW GLOBAL VARIABLES WHERE …` or of
/// `performance_schema.global_variables`, which evaluate every variable).
fn never(info: &ServerInfo, name: &str) -> bool {
    match info.flavor {
        crate::server::Flavor::MariaDb => {
            ["gtid_mode", "relay_log_info_repository"].contains(&name)
        }
        crate::server::Flavor::MySql => {
            name == "aria_log_dir_path"
                // Removed in MySQL 8.3.
                || (name == "relay_log_info_repository" && info.at_least(8, 3, 0))
        }
    }
}

/// The variable an "Unknown system variable 'x'" error (1193) names.
fn unknown_variable(err: &mysql::Error) -> Option<String> {
    match err {
        mysql::Error::MySqlError(e) if e.code == 1193 => {
            e.message.split('\'').nth(1).map(str::to_ascii_lowercase)
        }
        _ => None,
    }
}

/// `names` without `missing`; a missing `wsrep_` variable means no Galera provider settings at
/// all (MySQL without Percona XtraDB Cluster): every `wsrep_` name goes with it.
fn without<'a>(names: &[&'a str], missing: &str) -> Vec<&'a str> {
    let wsrep = missing.starts_with("wsrep_");
    names
        .iter()
        .copied()
        .filter(|n| *n != missing && !(wsrep && n.starts_with("wsrep_")))
        .collect()
}

/// The reads `read` starts with on this server, to be sent in one round trip with others: the
/// settings, and on MySQL the Group Replication membership and the Galera (Percona XtraDB
/// Cluster) settings, last since on most MySQL servers they do not exist.
pub fn statements(info: &ServerInfo) -> Vec<String> {
    let mut statements = vec![select_of(&asked(info, &variable_names(info)))];
    if info.flavor == Flavor::MySql {
        statements.push(group_replication::MEMBER_QUERY.to_string());
        statements.push(WSREP_SELECT.to_string());
    }
    statements
}

/// The settings read in one `SELECT` on this server. On MySQL the `wsrep_` ones are asked apart
/// (`WSREP_SELECT`): only Percona XtraDB Cluster has them.
fn variable_names(info: &ServerInfo) -> Vec<&'static str> {
    let mut names = storage::variable_names();
    names.extend(durability::VARIABLES);
    if info.flavor == Flavor::MariaDb {
        names.extend(WSREP_VARIABLES);
    }
    names
}

const WSREP_VARIABLES: [&str; 2] = ["wsrep_on", "wsrep_node_name"];
const WSREP_SELECT: &str = "SELECT @@GLOBAL.wsrep_on, @@GLOBAL.wsrep_node_name";

/// MySQL's Galera settings (Percona XtraDB Cluster's), none where the server does not know them.
fn read_wsrep(session: &mut Session) -> Result<Vec<(String, Option<String>)>> {
    match session.query_first::<mysql::Row>(WSREP_SELECT) {
        Ok(Some(row)) => Ok(WSREP_VARIABLES
            .iter()
            .enumerate()
            .map(|(i, name)| (name.to_string(), value(&row, i, name)))
            .collect()),
        Ok(None) => Ok(Vec::new()),
        Err(e) if unknown_variable(&e).is_some() => Ok(Vec::new()),
        Err(e) => Err(crate::Error::server(WSREP_SELECT, &e)),
    }
}

/// The names of `names` this server may know.
fn asked<'a>(info: &ServerInfo, names: &[&'a str]) -> Vec<&'a str> {
    names.iter().copied().filter(|n| !never(info, n)).collect()
}

/// `SELECT @@GLOBAL.a, @@GLOBAL.b, …`.
fn select_of(names: &[&str]) -> String {
    format!(
        "SELECT {}",
        names
            .iter()
            .map(|name| format!("@@GLOBAL.{name}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Column `i` of `row`, named `name`, as `SHOW VARIABLES` would show it.
fn value(row: &mysql::Row, i: usize, name: &str) -> Option<String> {
    row.get_opt::<Option<String>, _>(i)
        .and_then(|r| r.ok())
        .flatten()
        .map(|v| as_shown(name, v))
}

/// `names` with their values (absent ones are not in the result). A variable the server does
/// not know is dropped and the `SELECT` asked again (a few round trips of a tenth of a
/// millisecond at most: `wsrep_*` on MySQL, `relay_log_info_repository` before 8.3 where absent).
fn read_variables(session: &mut Session, names: &[&str]) -> Result<Vec<(String, Option<String>)>> {
    let mut asked = asked(&session.info, names);
    let row = loop {
        let select = select_of(&asked);
        match session.query_first::<mysql::Row>(&select) {
            Ok(row) => break row,
            Err(e) => match unknown_variable(&e) {
                Some(missing) if asked.len() > 1 && asked.contains(&missing.as_str()) => {
                    asked = without(&asked, &missing);
                }
                // Not one of ours (an unusual build): ask for all of them the slow way.
                Some(_) => return storage::show_variables(&mut session.conn, names),
                None => return Err(crate::Error::server(&select, &e)),
            },
        }
    };
    Ok(match row {
        Some(row) => asked
            .iter()
            .enumerate()
            .map(|(i, name)| (name.to_string(), value(&row, i, name)))
            .collect(),
        None => Vec::new(),
    })
}

/// `SELECT @@x` gives a boolean as `1`/`0`; the info file records it as `SHOW VARIABLES` does.
fn as_shown(name: &str, value: String) -> String {
    const BOOLEANS: [&str; 4] = [
        "log_bin",
        "innodb_doublewrite",
        "wsrep_on",
        "relay_log_recovery",
    ];
    match (BOOLEANS.contains(&name), value.as_str()) {
        (true, "1") => "ON".into(),
        (true, "0") => "OFF".into(),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MySQL-family Galera node (Percona XtraDB Cluster) refuses the backup lock — in the one
    /// list both the locker and `--check` use, so `--check` cannot say it would work.
    #[test]
    fn a_galera_node_refuses_the_backup_lock_in_the_list_check_and_the_locker_share() {
        let node = Surroundings {
            galera: Some(Galera::default()),
            ..Surroundings::default()
        };
        let refusals = node.backup_lock_refusals();
        assert!(
            refusals.iter().any(|r| r.contains("Galera node")),
            "{refusals:?}"
        );
        let plain = Surroundings::default().backup_lock_refusals();
        assert!(!plain.iter().any(|r| r.contains("Galera")), "{plain:?}");
    }

    #[test]
    fn variables_a_flavour_never_has_are_not_asked_and_a_missing_wsrep_one_takes_all_wsrep_with_it()
    {
        let maria = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        let mysql_80 = ServerInfo::new("8.0.36".into(), 1);
        let mysql_97 = ServerInfo::new("9.7.4".into(), 1);
        assert!(!never(&maria, "aria_log_dir_path") && never(&mysql_80, "aria_log_dir_path"));
        assert!(never(&maria, "gtid_mode") && !never(&mysql_80, "gtid_mode"));
        assert!(!never(&mysql_80, "relay_log_info_repository"));
        assert!(never(&mysql_97, "relay_log_info_repository"));
        assert!(!never(&mysql_97, "wsrep_on") && !never(&maria, "wsrep_on"));
        assert_eq!(
            without(
                &["datadir", "wsrep_on", "wsrep_node_name", "sync_binlog"],
                "wsrep_on"
            ),
            vec!["datadir", "sync_binlog"]
        );
        assert_eq!(
            without(
                &["datadir", "relay_log_info_repository"],
                "relay_log_info_repository"
            ),
            vec!["datadir"]
        );
        assert_eq!(as_shown("log_bin", "1".into()), "ON");
        assert_eq!(as_shown("innodb_doublewrite", "0".into()), "OFF");
        assert_eq!(as_shown("sync_binlog", "1".into()), "1");
    }
}
