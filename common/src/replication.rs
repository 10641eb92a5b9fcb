//! Replication facts for the info file: this server's replica connections (with the coordinates
//! the SQL thread has *executed*, never the IO thread's), and ready statements that seed a new
//! replica from the snapshot or clone a sibling replica of the same source.
//!
//! Status rows are read as column-name → value maps, so both servers' spellings (`Master_*` and
//! `Source_*`) and every version's column set are handled by one parser and unit-tested over the
//! exact shapes the servers return. Statements never contain a password: it is a placeholder.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::position::{Binlog, Gtid};
use crate::server::Session;
use crate::server::{self, Flavor, ServerInfo};
use crate::{Error, Result};

/// The placeholder written where the replication password goes.
pub const PASSWORD_PLACEHOLDER: &str = "<password>";
/// The placeholder written where a replication user is not known.
pub const USER_PLACEHOLDER: &str = "<replication-user>";

/// One replication connection (MariaDB) or channel (MySQL) of this server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Connection name (MariaDB) or channel name (MySQL); empty for the default one.
    pub name: String,
    pub source_host: Option<String>,
    pub source_port: Option<u64>,
    pub source_user: Option<String>,
    /// The source's binlog coordinates up to which this replica has executed events.
    pub executed: Binlog,
    /// MariaDB `Using_Gtid` (`No`, `Slave_Pos`, `Current_Pos`); MySQL `Auto_Position` (`0`/`1`).
    pub gtid_mode: Option<String>,
    /// MariaDB `Gtid_Slave_Pos`; MySQL `Executed_Gtid_Set` (newlines stripped).
    pub gtid_position: Option<String>,
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    pub seconds_behind_source: Option<u64>,
}

/// A status row as column name → value (`None` for SQL NULL).
pub type StatusRow = BTreeMap<String, Option<String>>;

impl Replica {
    /// Reads one row of `SHOW ALL SLAVES STATUS`, `SHOW REPLICA STATUS` or `SHOW SLAVE STATUS`.
    pub fn from_row(row: &StatusRow) -> Replica {
        let text = |names: &[&str]| -> Option<String> {
            names
                .iter()
                .find_map(|n| row.get(*n).cloned().flatten())
                .filter(|v| !v.is_empty())
        };
        let number = |names: &[&str]| text(names).and_then(|v| v.trim().parse::<u64>().ok());
        Replica {
            name: text(&["Connection_name", "Channel_Name", "Channel_name"]).unwrap_or_default(),
            source_host: text(&["Source_Host", "Master_Host"]),
            source_port: number(&["Source_Port", "Master_Port"]),
            source_user: text(&["Source_User", "Master_User"]),
            executed: Binlog {
                file: text(&["Relay_Source_Log_File", "Relay_Master_Log_File"]),
                position: number(&["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"]),
                exact: None,
            },
            gtid_mode: text(&["Using_Gtid", "Auto_Position"]),
            gtid_position: text(&["Gtid_Slave_Pos", "Executed_Gtid_Set"])
                .map(|s| crate::position::strip_newlines(&s)),
            io_running: text(&["Replica_IO_Running", "Slave_IO_Running"]),
            sql_running: text(&["Replica_SQL_Running", "Slave_SQL_Running"]),
            seconds_behind_source: number(&["Seconds_Behind_Source", "Seconds_Behind_Master"]),
        }
    }

    /// Whether it resumes by GTID (MariaDB `Using_Gtid`, MySQL `Auto_Position`).
    pub fn uses_gtid(&self) -> bool {
        matches!(
            self.gtid_mode
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("slave_pos" | "current_pos" | "1")
        )
    }
}

/// The replica-status statements a server may know, newest first.
pub fn status_statements(info: &ServerInfo) -> &'static [&'static str] {
    match info.flavor {
        Flavor::MariaDb => &["SHOW ALL SLAVES STATUS"],
        Flavor::MySql if info.at_least(8, 0, 22) => &["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"],
        Flavor::MySql => &["SHOW SLAVE STATUS"],
    }
}

/// This server's replica connections; empty when it replicates from nothing.
/// The session's answers may hold the first form's rows, read with the lock.
pub fn read_replicas(session: &mut Session) -> Result<Vec<Replica>> {
    let statements = status_statements(&session.info);
    for (i, statement) in statements.iter().enumerate() {
        match session.query(statement) {
            Ok(rows) => {
                return Ok(rows
                    .iter()
                    .map(|r| Replica::from_row(&status_row(r)))
                    .collect())
            }
            Err(e) if server::error_code(&e) == Some(1064) && i + 1 < statements.len() => {}
            Err(e) => return Err(Error::server(statement, &e)),
        }
    }
    Ok(Vec::new())
}

/// A driver row as a column-name map.
pub fn status_row(row: &mysql::Row) -> StatusRow {
    let mut map = StatusRow::new();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let value = row.as_ref(i).and_then(|v| match v {
            mysql::Value::NULL => None,
            mysql::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            other => Some(other.as_sql(true).trim_matches('\'').to_string()),
        });
        map.insert(column.name_str().into_owned(), value);
    }
    map
}

/// Ready statements that make a new replica of the snapshotted server, in each form it supports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSql {
    /// Binlog file and position form.
    pub binlog_position: Vec<String>,
    /// GTID form (`gtid_slave_pos` + `MASTER_USE_GTID` on MariaDB, `SOURCE_AUTO_POSITION` on MySQL).
    pub gtid: Option<Vec<String>>,
}

/// Where this server is reached, for the statements a new replica runs.
pub struct SourceAddress<'a> {
    pub host: &'a str,
    pub port: u64,
}

/// Statements that seed a replica of this server from the snapshot; `None` when the binary log
/// is off (nothing could replicate from it).
pub fn seed_replica_sql(
    info: &ServerInfo,
    source: &SourceAddress<'_>,
    binlog: &Binlog,
    gtid: &Gtid,
) -> Option<SeedSql> {
    let (file, position) = (binlog.file.as_ref()?, binlog.position?);
    let syntax = Syntax::for_server(info);
    let target = syntax.target(source.host, source.port, USER_PLACEHOLDER);
    if binlog.exact == Some(false) {
        return Some(seed_from_the_copy(&syntax, &target, gtid));
    }
    let mut seed = SeedSql {
        binlog_position: vec![
            format!(
                "{} {target}, {};",
                syntax.change,
                syntax.file_position(file, position)
            ),
            format!("{};", syntax.start),
        ],
        gtid: None,
    };
    seed.gtid = match info.flavor {
        Flavor::MariaDb => gtid.binlog_pos.as_ref().map(|pos| {
            vec![
                format!("SET GLOBAL gtid_slave_pos = {};", server::quote(pos)),
                format!("{} {target}, MASTER_USE_GTID = slave_pos;", syntax.change),
                format!("{};", syntax.start),
            ]
        }),
        Flavor::MySql => gtid.executed.as_ref().filter(|s| !s.is_empty()).map(|set| {
            let reset = if info.at_least(8, 2, 0) {
                "RESET BINARY LOGS AND GTIDS;"
            } else {
                "RESET MASTER;"
            };
            vec![
                reset.to_string(),
                format!("SET GLOBAL gtid_purged = {};", server::quote(set)),
                format!("{} {target}, {} = 1;", syntax.change, syntax.auto_position),
                format!("{};", syntax.start),
            ]
        }),
    };
    Some(seed)
}

/// The first line of each form when the coordinates are a lower bound (`lock-mode = backup-lock`).
const READ_FROM_THE_COPY: &str = "-- lock-mode = backup-lock: this file's coordinates are a lower bound. Restore the copy as the new replica and start it with skip_replica_start = ON, super_read_only = ON, a server_id of its own and no auto.cnf (a new server_uuid); crash recovery gives it the exact coordinates.";

/// Seeding statements when the info file's coordinates are a lower bound: the values are read on
/// the restored copy, whose crash recovery made them exact. With GTIDs the copy already holds its
/// exact `gtid_executed`; without, its last binlog from this server and that file's size (the row
/// before the copy's own new binlog in `SHOW BINARY LOGS`) are the position.
fn seed_from_the_copy(syntax: &Syntax, target: &str, gtid: &Gtid) -> SeedSql {
    let p = syntax.prefix;
    SeedSql {
        binlog_position: vec![
            READ_FROM_THE_COPY.to_string(),
            "-- On the copy, SHOW BINARY LOGS: the row before the last is this server's last binary log; its File_size is the position.".to_string(),
            format!(
                "{} {target}, {p}_LOG_FILE = '<Log_name of that row>', {p}_LOG_POS = <its File_size>;",
                syntax.change
            ),
            format!("{};", syntax.start),
        ],
        gtid: gtid.executed.as_ref().filter(|s| !s.is_empty()).map(|_| {
            vec![
                READ_FROM_THE_COPY.to_string(),
                "-- The copy's SELECT @@GLOBAL.gtid_executed is exact (it contains this file's gtid.executed): neither RESET nor set gtid_purged.".to_string(),
                format!("{} {target}, {} = 1;", syntax.change, syntax.auto_position),
                format!("{};", syntax.start),
            ]
        }),
    }
}

/// Statements that make a sibling replica (of the same sources) from a snapshot of this replica:
/// one block per replication connection, at the coordinates its SQL thread had executed.
pub fn clone_replica_sql(info: &ServerInfo, replicas: &[Replica]) -> Option<Vec<String>> {
    if replicas.is_empty() {
        return None;
    }
    let syntax = Syntax::for_server(info);
    let mut out = Vec::new();
    for replica in replicas {
        let host = replica.source_host.as_deref().unwrap_or("<source-host>");
        let user = replica.source_user.as_deref().unwrap_or(USER_PLACEHOLDER);
        let target = syntax.target(host, replica.source_port.unwrap_or(3306), user);
        let (name_before, name_after) = syntax.channel(&replica.name);
        out.push(format!("{}{name_before}{name_after};", syntax.stop));
        out.push(format!("{}{name_before} ALL{name_after};", syntax.reset));
        let position = match (info.flavor, replica.uses_gtid()) {
            (Flavor::MariaDb, true) => {
                if let Some(pos) = &replica.gtid_position {
                    out.push(format!(
                        "SET GLOBAL gtid_slave_pos = {};",
                        server::quote(pos)
                    ));
                }
                "MASTER_USE_GTID = slave_pos".to_string()
            }
            (Flavor::MySql, true) => format!("{} = 1", syntax.auto_position),
            (_, false) if replica.executed.exact == Some(false) => format!(
                "{p}_LOG_FILE = '<Relay_Source_Log_File of SHOW REPLICA STATUS on the restored copy>', {p}_LOG_POS = <its Exec_Source_Log_Pos>",
                p = syntax.prefix
            ),
            (_, false) => match (&replica.executed.file, replica.executed.position) {
                (Some(file), Some(pos)) => syntax.file_position(file, pos),
                _ => "<no executed position known>".to_string(),
            },
        };
        out.push(format!(
            "{}{name_before} TO {target}, {position}{name_after};",
            syntax.change.trim_end_matches(" TO")
        ));
        out.push(format!("{}{name_before}{name_after};", syntax.start));
    }
    Some(out)
}

/// The replication statement vocabulary of one server version.
struct Syntax {
    flavor: Flavor,
    change: &'static str,
    start: &'static str,
    stop: &'static str,
    reset: &'static str,
    prefix: &'static str,
    auto_position: &'static str,
}

impl Syntax {
    fn for_server(info: &ServerInfo) -> Syntax {
        match info.flavor {
            Flavor::MySql if info.at_least(8, 0, 23) => Syntax {
                flavor: Flavor::MySql,
                change: "CHANGE REPLICATION SOURCE TO",
                start: "START REPLICA",
                stop: "STOP REPLICA",
                reset: "RESET REPLICA",
                prefix: "SOURCE",
                auto_position: "SOURCE_AUTO_POSITION",
            },
            flavor => Syntax {
                flavor,
                change: "CHANGE MASTER TO",
                start: "START SLAVE",
                stop: "STOP SLAVE",
                reset: "RESET SLAVE",
                prefix: "MASTER",
                auto_position: "MASTER_AUTO_POSITION",
            },
        }
    }

    fn target(&self, host: &str, port: u64, user: &str) -> String {
        let p = self.prefix;
        format!(
            "{p}_HOST = {}, {p}_PORT = {port}, {p}_USER = {}, {p}_PASSWORD = {}",
            server::quote(host),
            server::quote(user),
            server::quote(PASSWORD_PLACEHOLDER)
        )
    }

    fn file_position(&self, file: &str, position: u64) -> String {
        let p = self.prefix;
        let gtid_off = if self.flavor == Flavor::MariaDb {
            ", MASTER_USE_GTID = no"
        } else {
            ""
        };
        format!(
            "{p}_LOG_FILE = {}, {p}_LOG_POS = {position}{gtid_off}",
            server::quote(file)
        )
    }

    /// Where a connection/channel name goes: MariaDB names it after the verb, MySQL at the end.
    fn channel(&self, name: &str) -> (String, String) {
        match (self.flavor, name.is_empty()) {
            (_, true) => (String::new(), String::new()),
            (Flavor::MariaDb, false) => (format!(" {}", server::quote(name)), String::new()),
            (Flavor::MySql, false) => (
                String::new(),
                format!(" FOR CHANNEL {}", server::quote(name)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> StatusRow {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    if *v == "NULL" {
                        None
                    } else {
                        Some(v.to_string())
                    },
                )
            })
            .collect()
    }

    /// Column names and order of MySQL 8.0/8.4 `SHOW REPLICA STATUS` (from the MySQL manual).
    const MYSQL_REPLICA_COLUMNS: &[&str] = &[
        "Replica_IO_State",
        "Source_Host",
        "Source_User",
        "Source_Port",
        "Connect_Retry",
        "Source_Log_File",
        "Read_Source_Log_Pos",
        "Relay_Log_File",
        "Relay_Log_Pos",
        "Relay_Source_Log_File",
        "Replica_IO_Running",
        "Replica_SQL_Running",
        "Replicate_Do_DB",
        "Replicate_Ignore_DB",
        "Replicate_Do_Table",
        "Replicate_Ignore_Table",
        "Replicate_Wild_Do_Table",
        "Replicate_Wild_Ignore_Table",
        "Last_Errno",
        "Last_Error",
        "Skip_Counter",
        "Exec_Source_Log_Pos",
        "Relay_Log_Space",
        "Until_Condition",
        "Until_Log_File",
        "Until_Log_Pos",
        "Source_SSL_Allowed",
        "Source_SSL_CA_File",
        "Source_SSL_CA_Path",
        "Source_SSL_Cert",
        "Source_SSL_Cipher",
        "Source_SSL_Key",
        "Seconds_Behind_Source",
        "Source_SSL_Verify_Server_Cert",
        "Last_IO_Errno",
        "Last_IO_Error",
        "Last_SQL_Errno",
        "Last_SQL_Error",
        "Replicate_Ignore_Server_Ids",
        "Source_Server_Id",
        "Source_UUID",
        "Source_Info_File",
        "SQL_Delay",
        "SQL_Remaining_Delay",
        "Replica_SQL_Running_State",
        "Source_Retry_Count",
        "Source_Bind",
        "Last_IO_Error_Timestamp",
        "Last_SQL_Error_Timestamp",
        "Source_SSL_Crl",
        "Source_SSL_Crlpath",
        "Retrieved_Gtid_Set",
        "Executed_Gtid_Set",
        "Auto_Position",
        "Replicate_Rewrite_DB",
        "Channel_Name",
        "Source_TLS_Version",
        "Source_public_key_path",
        "Get_Source_public_key",
        "Network_Namespace",
    ];

    /// Column names of MySQL 5.7/8.0 `SHOW SLAVE STATUS` that the parser relies on.
    const MYSQL_SLAVE_COLUMNS: &[&str] = &[
        "Slave_IO_State",
        "Master_Host",
        "Master_User",
        "Master_Port",
        "Master_Log_File",
        "Read_Master_Log_Pos",
        "Relay_Master_Log_File",
        "Slave_IO_Running",
        "Slave_SQL_Running",
        "Exec_Master_Log_Pos",
        "Seconds_Behind_Master",
        "Executed_Gtid_Set",
        "Auto_Position",
        "Channel_Name",
    ];

    fn mysql_row(columns: &[&str], values: &[(&str, &str)]) -> StatusRow {
        columns
            .iter()
            .map(|c| {
                let v = values
                    .iter()
                    .find(|(k, _)| k == c)
                    .map(|(_, v)| v.to_string());
                (c.to_string(), Some(v.unwrap_or_default()))
            })
            .collect()
    }

    #[test]
    fn mysql_8_replica_status_yields_the_sql_threads_executed_coordinates() {
        let r = Replica::from_row(&mysql_row(
            MYSQL_REPLICA_COLUMNS,
            &[
                ("Source_Host", "db1.example"),
                ("Source_Port", "3306"),
                ("Source_User", "repl"),
                ("Source_Log_File", "binlog.000009"),
                ("Read_Source_Log_Pos", "999999"),
                ("Relay_Source_Log_File", "binlog.000007"),
                ("Exec_Source_Log_Pos", "4711"),
                ("Executed_Gtid_Set", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n4E11FA47-71CA-11E1-9E33-C80AA9429562:1-2"),
                ("Auto_Position", "0"),
                ("Channel_Name", ""),
                ("Replica_IO_Running", "Yes"),
                ("Replica_SQL_Running", "Yes"),
                ("Seconds_Behind_Source", "0"),
            ],
        ));
        assert_eq!(
            r.executed.file.as_deref(),
            Some("binlog.000007"),
            "not the IO thread's file"
        );
        assert_eq!(
            r.executed.position,
            Some(4711),
            "not the IO thread's position"
        );
        assert_eq!(r.source_host.as_deref(), Some("db1.example"));
        assert_eq!(r.source_port, Some(3306));
        assert_eq!(
            r.gtid_position.as_deref(),
            Some(
                "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,4E11FA47-71CA-11E1-9E33-C80AA9429562:1-2"
            )
        );
        assert_eq!(r.name, "");
    }

    #[test]
    fn mysql_slave_status_master_named_columns_parse_alike() {
        let r = Replica::from_row(&mysql_row(
            MYSQL_SLAVE_COLUMNS,
            &[
                ("Master_Host", "10.0.0.5"),
                ("Master_Port", "3307"),
                ("Master_Log_File", "mysql-bin.000012"),
                ("Read_Master_Log_Pos", "5000"),
                ("Relay_Master_Log_File", "mysql-bin.000011"),
                ("Exec_Master_Log_Pos", "120"),
                ("Auto_Position", "1"),
                ("Channel_Name", "east"),
            ],
        ));
        assert_eq!(
            r.executed,
            Binlog {
                file: Some("mysql-bin.000011".into()),
                position: Some(120),
                exact: None,
            }
        );
        assert_eq!(r.name, "east");
        assert!(r.uses_gtid());
    }

    #[test]
    fn mariadb_all_slaves_status_keeps_each_connection() {
        let r = Replica::from_row(&row(&[
            ("Connection_name", "src2"),
            ("Master_Host", "localhost"),
            ("Master_User", "repl"),
            ("Master_Port", "3306"),
            ("Master_Log_File", "binlog.000003"),
            ("Read_Master_Log_Pos", "900"),
            ("Relay_Master_Log_File", "binlog.000002"),
            ("Exec_Master_Log_Pos", "700"),
            ("Using_Gtid", "Slave_Pos"),
            ("Gtid_Slave_Pos", "0-1-42"),
            ("Slave_IO_Running", "Yes"),
            ("Slave_SQL_Running", "Yes"),
            ("Seconds_Behind_Master", "NULL"),
        ]));
        assert_eq!(r.name, "src2");
        assert_eq!(r.executed.position, Some(700));
        assert_eq!(r.gtid_position.as_deref(), Some("0-1-42"));
        assert_eq!(r.seconds_behind_source, None);
        assert!(r.uses_gtid());
    }

    fn binlog(file: &str, pos: u64) -> Binlog {
        Binlog {
            file: Some(file.into()),
            position: Some(pos),
            exact: None,
        }
    }

    #[test]
    fn mariadb_seed_sql_has_a_position_form_and_a_gtid_form() {
        let info = ServerInfo::new("10.11.6-MariaDB-log".into(), 1);
        let gtid = Gtid {
            binlog_pos: Some("0-1-17".into()),
            ..Gtid::default()
        };
        let seed = seed_replica_sql(
            &info,
            &SourceAddress {
                host: "db1",
                port: 3306,
            },
            &binlog("binlog.000004", 1234),
            &gtid,
        )
        .expect("binlog is on");
        assert_eq!(
            seed.binlog_position[0],
            "CHANGE MASTER TO MASTER_HOST = 'db1', MASTER_PORT = 3306, MASTER_USER = '<replication-user>', MASTER_PASSWORD = '<password>', MASTER_LOG_FILE = 'binlog.000004', MASTER_LOG_POS = 1234, MASTER_USE_GTID = no;"
        );
        let gtid_form = seed.gtid.expect("gtid form");
        assert_eq!(gtid_form[0], "SET GLOBAL gtid_slave_pos = '0-1-17';");
        assert!(gtid_form[1].ends_with("MASTER_USE_GTID = slave_pos;"));
        assert_eq!(gtid_form[2], "START SLAVE;");
    }

    #[test]
    fn mysql_seed_sql_uses_source_syntax_and_auto_position() {
        let info = ServerInfo::new("9.7.4".into(), 1);
        let gtid = Gtid {
            executed: Some("uuid:1-9".into()),
            ..Gtid::default()
        };
        let seed = seed_replica_sql(
            &info,
            &SourceAddress {
                host: "db1",
                port: 3306,
            },
            &binlog("binlog.000002", 157),
            &gtid,
        )
        .expect("binlog is on");
        assert!(
            seed.binlog_position[0].starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1'")
        );
        assert!(seed.binlog_position[0]
            .contains("SOURCE_LOG_FILE = 'binlog.000002', SOURCE_LOG_POS = 157;"));
        assert_eq!(seed.binlog_position[1], "START REPLICA;");
        let g = seed.gtid.expect("gtid form");
        assert_eq!(g[0], "RESET BINARY LOGS AND GTIDS;");
        assert_eq!(g[1], "SET GLOBAL gtid_purged = 'uuid:1-9';");
        assert!(g[2].ends_with("SOURCE_AUTO_POSITION = 1;"));
        let old = ServerInfo::new("8.0.36".into(), 1);
        let g = seed_replica_sql(
            &old,
            &SourceAddress { host: "h", port: 1 },
            &binlog("b.1", 4),
            &gtid,
        )
        .and_then(|s| s.gtid);
        assert_eq!(g.expect("gtid form")[0], "RESET MASTER;");
    }

    #[test]
    fn lower_bound_coordinates_seed_from_what_the_restored_copy_recovered() {
        let info = ServerInfo::new("8.4.3".into(), 1);
        let gtid = Gtid {
            executed: Some("uuid:1-9".into()),
            exact: Some(false),
            ..Gtid::default()
        };
        let mut lower = binlog("binlog.000002", 157);
        lower.exact = Some(false);
        let seed = seed_replica_sql(
            &info,
            &SourceAddress {
                host: "db1",
                port: 3306,
            },
            &lower,
            &gtid,
        )
        .expect("binlog is on");
        assert!(seed.binlog_position[0].contains("lower bound"));
        assert!(
            !seed.binlog_position.iter().any(|l| l.contains("157")),
            "the lower bound must not be offered as the position: {:?}",
            seed.binlog_position
        );
        assert!(seed.binlog_position[2].contains(
            "SOURCE_LOG_FILE = '<Log_name of that row>', SOURCE_LOG_POS = <its File_size>;"
        ));
        assert_eq!(seed.binlog_position[3], "START REPLICA;");
        let g = seed.gtid.expect("gtid form");
        assert!(
            !g.iter()
                .any(|l| l.contains("gtid_purged =") || l.starts_with("RESET")),
            "the copy keeps its own exact GTID set: {g:?}"
        );
        assert!(g[2].starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1'"));
        assert!(g[2].ends_with("SOURCE_AUTO_POSITION = 1;"));
        let mut replica = Replica {
            source_host: Some("up".into()),
            executed: binlog("up-bin.000009", 4242),
            gtid_mode: Some("0".into()),
            ..Replica::default()
        };
        replica.executed.exact = Some(false);
        let clone = clone_replica_sql(&info, &[replica]).expect("one replica");
        assert!(
            clone[2].contains("<its Exec_Source_Log_Pos>") && !clone[2].contains("4242"),
            "{clone:?}"
        );
    }

    #[test]
    fn no_seed_sql_without_a_binary_log() {
        let info = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        assert!(seed_replica_sql(
            &info,
            &SourceAddress { host: "h", port: 1 },
            &Binlog::default(),
            &Gtid::default()
        )
        .is_none());
    }

    #[test]
    fn clone_sql_names_each_connection_and_uses_the_executed_position() {
        let info = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        let replica = Replica {
            name: "east".into(),
            source_host: Some("db1".into()),
            source_port: Some(3306),
            source_user: Some("repl".into()),
            executed: binlog("binlog.000002", 700),
            gtid_mode: Some("No".into()),
            ..Replica::default()
        };
        let sql = clone_replica_sql(&info, &[replica]).expect("one replica");
        assert_eq!(sql[0], "STOP SLAVE 'east';");
        assert_eq!(sql[1], "RESET SLAVE 'east' ALL;");
        assert_eq!(
            sql[2],
            "CHANGE MASTER 'east' TO MASTER_HOST = 'db1', MASTER_PORT = 3306, MASTER_USER = 'repl', MASTER_PASSWORD = '<password>', MASTER_LOG_FILE = 'binlog.000002', MASTER_LOG_POS = 700, MASTER_USE_GTID = no;"
        );
        assert_eq!(sql[3], "START SLAVE 'east';");

        let mysql = ServerInfo::new("8.4.3".into(), 1);
        let replica = Replica {
            name: "c1".into(),
            source_host: Some("db1".into()),
            gtid_mode: Some("1".into()),
            ..Replica::default()
        };
        let sql = clone_replica_sql(&mysql, &[replica]).expect("one replica");
        assert_eq!(sql[0], "STOP REPLICA FOR CHANNEL 'c1';");
        assert_eq!(sql[1], "RESET REPLICA ALL FOR CHANNEL 'c1';");
        assert!(sql[2].starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1'"));
        assert!(sql[2].ends_with("SOURCE_AUTO_POSITION = 1 FOR CHANNEL 'c1';"));
    }
}
