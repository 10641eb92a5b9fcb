//! What the snapshot is: the replication coordinates, read on the locker's connection right after
//! the lock is taken, in as few round trips as the server allows (exact under a lock that blocks
//! commits; one read of `performance_schema.log_status`, a lower bound, under MySQL's backup
//! lock). Reading only: the info file that carries them is `info_file`'s.
use serde::{Deserialize, Serialize};

use crate::lock::LockMode;
pub use crate::position::{strip_newlines, Binlog, Gtid};
use crate::replication::{self, Replica};
use crate::server::Session;
use crate::server::{self, Flavor, ServerInfo};
use crate::{Error, Result};

/// Everything read from the server while the lock was held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinates {
    pub binlog: Binlog,
    pub gtid: Gtid,
    pub server_id: Option<u64>,
    pub server_uuid: Option<String>,
    /// The port the server listens on (for the statements that seed a replica).
    #[serde(default)]
    pub port: Option<u64>,
    #[serde(default)]
    pub replicas: Vec<Replica>,
    /// `lock-mode = backup-lock`: what `performance_schema.log_status` adds (InnoDB's LSN, the
    /// relay logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_status: Option<LogStatus>,
}

/// What one read of MySQL's `performance_schema.log_status` gives beyond the binlog and GTIDs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    /// InnoDB's log sequence number and its last checkpoint, at the read.
    pub innodb_lsn: Option<u64>,
    pub innodb_lsn_checkpoint: Option<u64>,
    /// Each replication channel's relay log, at the read.
    pub channels: Vec<RelayLog>,
}

/// One replication channel's relay log position in `log_status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLog {
    pub channel_name: String,
    pub relay_log_file: Option<String>,
    pub relay_log_position: Option<u64>,
}

/// Reads the coordinates on the connection that holds the lock: exact under a lock that blocks
/// commits; under `backup-lock` one read of `performance_schema.log_status`, a lower bound.
/// The session's answers may hold the reads of `statements` sent with the lock statement.
pub fn read(session: &mut Session, mode: LockMode) -> Result<Coordinates> {
    if !mode.blocks_commits() {
        return read_log_status(session);
    }
    let mut coordinates = read_exact(session)?;
    coordinates.binlog.exact = Some(true);
    coordinates.gtid.exact = Some(true);
    Ok(coordinates)
}

/// The reads `read` starts with on this server in `mode`, to be sent in the lock's own round
/// trip: each the first form the server is expected to know (an older server's syntax error makes
/// `read` try the next form on its own).
pub fn statements(info: &ServerInfo, mode: LockMode) -> Vec<String> {
    if !mode.blocks_commits() {
        return vec![LOG_STATUS.to_string()];
    }
    let gtid = match info.flavor {
        Flavor::MariaDb => MARIADB_GTID,
        Flavor::MySql => MYSQL_GTID,
    };
    [
        binlog_statements(info)[0],
        gtid,
        replication::status_statements(info)[0],
    ]
    .map(String::from)
    .to_vec()
}

/// The statement `read_log_status` runs: `log_status`'s row and the two settings the seeding
/// statements need, in one round trip.
const LOG_STATUS: &str = "SELECT SERVER_UUID, LOCAL, REPLICATION, STORAGE_ENGINES, @@GLOBAL.server_id, @@GLOBAL.port FROM performance_schema.log_status";

/// `lock-mode = backup-lock`: binlog file and position, `gtid_executed`, the relay logs and
/// InnoDB's LSN from one read of `performance_schema.log_status` (it blocks commits for the
/// instant of the read, so they agree with each other), then the replicas' rows when there are
/// channels. Every position is a lower bound: commits go on until the filesystems freeze.
fn read_log_status(session: &mut Session) -> Result<Coordinates> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u64>,
        Option<u64>,
    );
    let row: Option<Row> = session
        .query_first(LOG_STATUS)
        .map_err(|e| Error::server(LOG_STATUS, &e))?;
    let Some((uuid, local, replication, engines, server_id, port)) = row else {
        return Err(Error::Server {
            statement: LOG_STATUS.into(),
            message: "performance_schema.log_status returned no row; is performance_schema on (performance_schema = ON)?".into(),
        });
    };
    let mut coordinates = from_log_status(
        uuid,
        local.as_deref().unwrap_or("{}"),
        replication.as_deref().unwrap_or("{}"),
        engines.as_deref().unwrap_or("{}"),
    )
    .map_err(|message| Error::Server {
        statement: LOG_STATUS.into(),
        message,
    })?;
    coordinates.server_id = server_id;
    coordinates.port = port;
    let has_channels = coordinates
        .log_status
        .as_ref()
        .is_some_and(|l| !l.channels.is_empty());
    if has_channels {
        coordinates.replicas = replication::read_replicas(session)?;
        for replica in &mut coordinates.replicas {
            replica.executed.exact = Some(false);
        }
    }
    Ok(coordinates)
}

/// The coordinates in `log_status`'s JSON columns, as MySQL 8.0 to 9.x write them:
/// `LOCAL` `{"gtid_executed": "…", "binary_log_file": "…", "binary_log_position": N}` (the binlog
/// keys absent when the binary log is off), `REPLICATION` `{"channels": [{"channel_name": "…",
/// "relay_log_file": "…", "relay_log_position": N}]}`, `STORAGE_ENGINES` `{"InnoDB": {"LSN": N,
/// "LSN_checkpoint": N}}`. Binlog and GTID are marked lower bounds. An unreadable column is an
/// error naming it.
pub fn from_log_status(
    server_uuid: Option<String>,
    local: &str,
    replication: &str,
    engines: &str,
) -> std::result::Result<Coordinates, String> {
    let parse = |column: &str, text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .filter(|v| v.is_object() || (column == "REPLICATION" && v.is_array()))
            .ok_or_else(|| format!("log_status.{column} is not a JSON object: `{text}`"))
    };
    let (local, mut replication, engines) = (
        parse("LOCAL", local)?,
        parse("REPLICATION", replication)?,
        parse("STORAGE_ENGINES", engines)?,
    );
    // Servers write `{"channels": [...]}`; the manual calls the column "a JSON array of channels".
    if replication.is_array() {
        replication = serde_json::json!({ "channels": replication });
    }
    let channels = relay_logs(&replication["channels"])?;
    Ok(Coordinates {
        binlog: Binlog {
            file: text(&local["binary_log_file"]),
            position: local["binary_log_position"].as_u64(),
            exact: Some(false),
        },
        gtid: Gtid {
            executed: text(&local["gtid_executed"]).map(|s| strip_newlines(&s)),
            exact: Some(false),
            ..Gtid::default()
        },
        server_uuid,
        log_status: Some(LogStatus {
            innodb_lsn: engines["InnoDB"]["LSN"].as_u64(),
            innodb_lsn_checkpoint: engines["InnoDB"]["LSN_checkpoint"].as_u64(),
            channels,
        }),
        ..Coordinates::default()
    })
}

/// A JSON string, `None` when absent or empty.
fn text(value: &serde_json::Value) -> Option<String> {
    value.as_str().map(str::to_string).filter(|s| !s.is_empty())
}

/// `log_status.REPLICATION.channels`: each channel's relay log (none when absent).
fn relay_logs(channels: &serde_json::Value) -> std::result::Result<Vec<RelayLog>, String> {
    match channels {
        serde_json::Value::Array(list) => Ok(list
            .iter()
            .map(|c| RelayLog {
                channel_name: text(&c["channel_name"]).unwrap_or_default(),
                relay_log_file: text(&c["relay_log_file"]),
                // The manual names the key `relay_log_pos`; servers write `relay_log_position`.
                relay_log_position: c["relay_log_position"]
                    .as_u64()
                    .or_else(|| c["relay_log_pos"].as_u64()),
            })
            .collect()),
        serde_json::Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "log_status.REPLICATION.channels is not a list: `{other}`"
        )),
    }
}

/// MariaDB's GTID positions and the server's identity, in one row.
const MARIADB_GTID: &str = "SELECT @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_current_pos, @@GLOBAL.gtid_slave_pos, @@GLOBAL.server_id, @@GLOBAL.port";
/// MySQL's executed GTID set and the server's identity, in one row.
const MYSQL_GTID: &str =
    "SELECT @@GLOBAL.gtid_executed, @@GLOBAL.server_uuid, @@GLOBAL.server_id, @@GLOBAL.port";

/// Reads the coordinates while commits are blocked.
fn read_exact(session: &mut Session) -> Result<Coordinates> {
    let mut coordinates = Coordinates {
        binlog: read_binlog(session)?,
        ..Coordinates::default()
    };
    match session.info.flavor {
        Flavor::MariaDb => {
            let q = MARIADB_GTID;
            type MariaDbRow = (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<u64>,
                Option<u64>,
            );
            let row: Option<MariaDbRow> =
                session.query_first(q).map_err(|e| Error::server(q, &e))?;
            if let Some((binlog_pos, current_pos, slave_pos, server_id, port)) = row {
                coordinates.port = port;
                coordinates.gtid = Gtid {
                    binlog_pos,
                    current_pos,
                    slave_pos,
                    ..Gtid::default()
                };
                coordinates.server_id = server_id;
            }
        }
        Flavor::MySql => {
            let q = MYSQL_GTID;
            type MySqlRow = (Option<String>, Option<String>, Option<u64>, Option<u64>);
            let row: Option<MySqlRow> = session.query_first(q).map_err(|e| Error::server(q, &e))?;
            if let Some((executed, uuid, server_id, port)) = row {
                coordinates.port = port;
                coordinates.gtid.executed = executed.map(|s| strip_newlines(&s));
                coordinates.server_uuid = uuid;
                coordinates.server_id = server_id;
            }
        }
    }
    coordinates.replicas = replication::read_replicas(session)?;
    Ok(coordinates)
}

/// The binary-log status statements a server may know, newest first.
fn binlog_statements(info: &ServerInfo) -> &'static [&'static str] {
    match info.flavor {
        Flavor::MariaDb if info.at_least(10, 5, 2) => &["SHOW BINLOG STATUS", "SHOW MASTER STATUS"],
        Flavor::MariaDb => &["SHOW MASTER STATUS"],
        Flavor::MySql if info.at_least(8, 2, 0) => {
            &["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"]
        }
        Flavor::MySql => &["SHOW MASTER STATUS"],
    }
}

fn read_binlog(session: &mut Session) -> Result<Binlog> {
    let statements = binlog_statements(&session.info);
    for (i, statement) in statements.iter().enumerate() {
        match session.query_first::<mysql::Row>(statement) {
            Ok(row) => return Ok(row.map(|r| binlog_from_row(&r)).unwrap_or_default()),
            // A syntax error means this server does not know the statement: try the older form.
            Err(e) if server::error_code(&e) == Some(1064) && i + 1 < statements.len() => {}
            Err(e) => return Err(Error::server(statement, &e)),
        }
    }
    Ok(Binlog::default())
}

/// `File` and `Position` of a binary-log status row (every server names them alike).
pub fn binlog_from_row(row: &mysql::Row) -> Binlog {
    Binlog {
        file: row.get_opt::<String, _>("File").and_then(|r| r.ok()),
        position: row.get_opt::<u64, _>("Position").and_then(|r| r.ok()),
        exact: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_sets_lose_their_line_breaks() {
        assert_eq!(
            strip_newlines("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n4E11FA47-71CA-11E1-9E33-C80AA9429562:1-7"),
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,4E11FA47-71CA-11E1-9E33-C80AA9429562:1-7"
        );
    }

    #[test]
    fn the_modern_binlog_statement_is_tried_first_on_each_server() {
        let maria = ServerInfo::new("10.11.6-MariaDB".into(), 1);
        assert_eq!(binlog_statements(&maria)[0], "SHOW BINLOG STATUS");
        let mysql97 = ServerInfo::new("9.7.4".into(), 1);
        assert_eq!(binlog_statements(&mysql97)[0], "SHOW BINARY LOG STATUS");
        let mysql80 = ServerInfo::new("8.0.36".into(), 1);
        assert_eq!(binlog_statements(&mysql80), &["SHOW MASTER STATUS"]);
    }

    /// `LOCAL` as MySQL 8.0.x and 8.4 write it (the manual: "a single JSON object with the
    /// following keys: binary_log_file, binary_log_position, gtid_executed"; the GTID set wraps
    /// after each comma like `@@gtid_executed`), `REPLICATION` with the default channel (the
    /// manual spells its position key `relay_log_pos`; servers `relay_log_position`) and
    /// `STORAGE_ENGINES` with InnoDB's two LSNs.
    #[test]
    fn log_status_rows_of_mysql_8_0_and_8_4_give_lower_bound_coordinates() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let local = r#"{"gtid_executed": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2", "binary_log_file": "binlog.000002", "binary_log_position": 1307}"#;
        for (replication, position_key) in [
            (
                r#"{"channels": [{"channel_name": "", "relay_log_file": "relay.000004", "relay_log_position": 1723}]}"#,
                "relay_log_position",
            ),
            (
                r#"{"channels": [{"channel_name": "", "relay_log_file": "relay.000004", "relay_log_pos": 1723}]}"#,
                "relay_log_pos",
            ),
        ] {
            let c = from_log_status(
                Some(uuid.into()),
                local,
                replication,
                r#"{"InnoDB": {"LSN": 19054346, "LSN_checkpoint": 19054301}}"#,
            )
            .expect("the manual's shape reads");
            assert_eq!(c.binlog.file.as_deref(), Some("binlog.000002"));
            assert_eq!(c.binlog.position, Some(1307));
            assert_eq!(c.binlog.exact, Some(false), "a lower bound, said so");
            assert_eq!(
                c.gtid.executed.as_deref(),
                Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2")
            );
            assert_eq!(c.gtid.exact, Some(false));
            assert_eq!(c.server_uuid.as_deref(), Some(uuid));
            let log = c.log_status.expect("log_status recorded");
            assert_eq!(
                (log.innodb_lsn, log.innodb_lsn_checkpoint),
                (Some(19054346), Some(19054301))
            );
            assert_eq!(
                log.channels,
                vec![RelayLog {
                    channel_name: String::new(),
                    relay_log_file: Some("relay.000004".into()),
                    relay_log_position: Some(1723),
                }],
                "{position_key}"
            );
        }
    }

    /// With the binary log off, `LOCAL` holds `gtid_executed` alone; a server that is no replica
    /// has `{"channels": []}`.
    #[test]
    fn log_status_without_a_binlog_or_channels_and_garbage_is_named() {
        let c = from_log_status(
            None,
            r#"{"gtid_executed": ""}"#,
            r#"{"channels": []}"#,
            r#"{"InnoDB": {"LSN": 1, "LSN_checkpoint": 1}}"#,
        )
        .expect("a server without a binlog reads");
        assert_eq!((c.binlog.file, c.binlog.position), (None, None));
        assert_eq!(c.gtid.executed, None);
        assert!(c.log_status.is_some_and(|l| l.channels.is_empty()));
        let bare = from_log_status(
            None,
            "{}",
            r#"[{"channel_name": "east", "relay_log_file": "r.000001", "relay_log_pos": 4}]"#,
            "{}",
        )
        .expect("a bare array of channels, as the manual words it, reads");
        assert_eq!(
            bare.log_status.map(|l| l.channels[0].channel_name.clone()),
            Some("east".to_string())
        );
        let err = from_log_status(None, "not json", "{}", "{}").expect_err("garbage is refused");
        assert!(
            err.contains("log_status.LOCAL is not a JSON object"),
            "{err}"
        );
        let err = from_log_status(None, "{}", r#"{"channels": 3}"#, "{}")
            .expect_err("a non-list is refused");
        assert!(err.contains("REPLICATION.channels is not a list"), "{err}");
    }
}
