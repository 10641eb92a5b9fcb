//! What the snapshot is taken in: where the server's files live, whether its settings make a
//! copy safe to restore, and the cluster it belongs to — read once per freeze before the lock
//! (never while it is held) and recorded in the info file.
//!
//! Owns the order of those reads on the locker's (or the rehearsal's) connection. Nothing here
//! fails a freeze but a server that does not answer; what cannot be found becomes a flag or a
//! note. Refusing a Galera node that is not `Synced` is the caller's
//! ([`crate::galera::Galera::check_synced`]).
use std::path::Path;

use mysql::prelude::Queryable;
use mysql::Conn;

use crate::durability::{self, Durability};
use crate::galera::{self, Galera};
use crate::group_replication::{self, Member};
use crate::server::ServerInfo;
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
    /// The filesystems `sync-filesystems` must sync: those holding the recovery paths, each once.
    /// Unlike the storage map, a path that cannot be resolved is an error here.
    pub fn filesystems_to_sync(&self) -> Result<Vec<storage::Filesystem>> {
        storage::check_sync_program()?;
        storage::filesystems_here(&self.recovery_paths)
    }
}

/// Reads the surroundings of a freeze; `info_file` joins the storage map. Whether the server is a
/// replica (`durability.replica`) is left to the caller, who knows it from the coordinates.
pub fn read(conn: &mut Conn, info: &ServerInfo, info_file: &Path) -> Result<Surroundings> {
    let mut names = storage::variable_names();
    names.extend(durability::VARIABLES);
    names.extend(["wsrep_on", "wsrep_node_name"]);
    let rows = read_variables(conn, info, &names)?;
    let galera = match galera::is_node(&rows) {
        true => Some(galera::read_before_lock(conn, &rows)?),
        false => None,
    };
    let mut recovery = storage::paths_from_variables(&rows);
    if let Some(dir) = info_file.parent() {
        recovery.push(("info-file".into(), dir.to_path_buf()));
    }
    let group_replication = match info.flavor {
        crate::server::Flavor::MySql => group_replication::read(conn)?,
        crate::server::Flavor::MariaDb => None,
    };
    Ok(Surroundings {
        storage: storage::map_here(&recovery, &storage::informational_paths(&rows)),
        durability: durability::read(conn, info, &rows),
        galera,
        group_replication,
        recovery_paths: recovery,
    })
}

/// Variables that exist on every MariaDB (≥ 10.4) or every MySQL (≥ 8.0) server: those are read
/// with one `SELECT @@GLOBAL.…` (about a tenth of the cost of `SHOW GLOBAL VARIABLES WHERE …`,
/// which evaluates every variable); the rest, and a server that lacks one of them, go through
/// `SHOW GLOBAL VARIABLES`.
fn everywhere(info: &ServerInfo, name: &str) -> bool {
    const MYSQL_ONLY: [&str; 2] = ["gtid_mode", "relay_log_info_repository"];
    const MARIADB_ONLY: [&str; 3] = ["aria_log_dir_path", "wsrep_on", "wsrep_node_name"];
    match info.flavor {
        crate::server::Flavor::MariaDb => !MYSQL_ONLY.contains(&name),
        // relay_log_info_repository is gone from newer MySQL: never on the fast path.
        crate::server::Flavor::MySql => {
            !MARIADB_ONLY.contains(&name) && !MYSQL_ONLY.contains(&name)
        }
    }
}

/// `names` with their values (absent ones are not in the result).
fn read_variables(
    conn: &mut Conn,
    info: &ServerInfo,
    names: &[&str],
) -> Result<Vec<(String, Option<String>)>> {
    let (fast, slow): (Vec<&str>, Vec<&str>) =
        names.iter().partition(|name| everywhere(info, name));
    let select = format!(
        "SELECT {}",
        fast.iter()
            .map(|name| format!("@@GLOBAL.{name}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = match conn.query_first::<mysql::Row, _>(&select) {
        Ok(row) => row,
        // Unknown system variable (an older or unusual build): ask for all of them the slow way.
        Err(e) if crate::server::error_code(&e) == Some(1193) => {
            return storage::show_variables(conn, names)
        }
        Err(e) => return Err(crate::Error::server(&select, &e)),
    };
    let mut rows: Vec<(String, Option<String>)> = match row {
        Some(row) => fast
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let value = row
                    .get_opt::<Option<String>, _>(i)
                    .and_then(|r| r.ok())
                    .flatten()
                    .map(|v| as_shown(name, v));
                (name.to_string(), value)
            })
            .collect(),
        None => Vec::new(),
    };
    if !slow.is_empty() {
        rows.extend(storage::show_variables(conn, &slow)?);
    }
    Ok(rows)
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

    #[test]
    fn flavour_specific_variables_leave_the_fast_path_and_booleans_read_as_shown() {
        let maria = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        let mysql = ServerInfo::new("8.0.36".into(), 1);
        assert!(
            everywhere(&maria, "aria_log_dir_path") && !everywhere(&mysql, "aria_log_dir_path")
        );
        assert!(
            !everywhere(&maria, "gtid_mode") && !everywhere(&mysql, "relay_log_info_repository")
        );
        assert!(everywhere(&mysql, "datadir") && everywhere(&maria, "wsrep_on"));
        assert_eq!(as_shown("log_bin", "1".into()), "ON");
        assert_eq!(as_shown("innodb_doublewrite", "0".into()), "OFF");
        assert_eq!(as_shown("sync_binlog", "1".into()), "1");
    }
}
