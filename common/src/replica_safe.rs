//! `replica-safe`: a replica cloned from a snapshot must not miss temporary tables its SQL thread
//! held open (statement-based events). With the setting on, the locker stops each running SQL
//! thread at a moment when none is open, holds them stopped for the lock, and starts them again
//! at release.
//!
//! Owns the STOP/START statements for each server's syntax, the wait for a moment with no open
//! temporary table, and the restart of threads a dead locker left stopped (by thaw, freeze's
//! clean-up or the next freeze, from the names in the state file). It never starts a SQL thread
//! this tool did not stop: the names to start are exactly those that were running and were
//! stopped, recorded in the state file *before* the STOP.
use mysql::prelude::Queryable;
use mysql::Conn;

use crate::replication::Replica;
use crate::server::{self, Flavor, ServerInfo};
use crate::{Error, Result};

/// The statement that stops (`stop`) or starts the SQL thread of connection/channel `name`.
pub fn statement(info: &ServerInfo, stop: bool, name: &str) -> String {
    let verb = if stop { "STOP" } else { "START" };
    let name = server::quote(name);
    match info.flavor {
        Flavor::MariaDb => format!("{verb} SLAVE {name} SQL_THREAD"),
        Flavor::MySql if info.at_least(8, 0, 22) => {
            format!("{verb} REPLICA SQL_THREAD FOR CHANNEL {name}")
        }
        Flavor::MySql => format!("{verb} SLAVE SQL_THREAD FOR CHANNEL {name}"),
    }
}

/// The connections (channels) whose SQL thread runs now: the ones replica-safe may stop.
pub fn running(replicas: &[Replica]) -> Vec<String> {
    replicas
        .iter()
        .filter(|r| r.sql_running.as_deref() == Some("Yes"))
        .map(|r| r.name.clone())
        .collect()
}

/// How the threads `running` left the open-temporary-table count, and what that means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moment {
    /// No temporary table open: stop now.
    Clear,
    /// `open` tables open while threads run: wait for the source's sessions to drop them.
    Wait { open: u64 },
    /// Tables are open and no SQL thread runs that could drop them (someone else stopped them):
    /// waiting cannot help.
    Stuck { open: u64 },
}

/// Judges the count read with the SQL threads `running` (names) in their current state.
pub fn moment(open: u64, running: &[String]) -> Moment {
    match (open, running.is_empty()) {
        (0, _) => Moment::Clear,
        (open, false) => Moment::Wait { open },
        (open, true) => Moment::Stuck { open },
    }
}

/// The words freeze shows while replica-safe waits (one line).
pub fn waiting_text(open: u64) -> String {
    format!("the replica's SQL thread holds {open} temporary table(s) open (statement-based replication); replica-safe waits until the source's sessions drop them")
}

/// The error when no SQL thread runs that could drop the open tables.
pub fn stuck_error(open: u64) -> Error {
    Error::Replication {
        message: format!(
            "the replica holds {open} temporary table(s) open and its SQL thread is stopped (not by mysql-snapshot), so they cannot go away; a replica cloned from this snapshot would lack them. Start the SQL thread (START SLAVE SQL_THREAD / START REPLICA SQL_THREAD) and let the source's sessions end, or set replica-safe = off to snapshot anyway"
        ),
    }
}

/// Stops the SQL threads `names`, in order; on a failure the ones already stopped are started
/// again before the error is returned.
pub fn stop(conn: &mut Conn, info: &ServerInfo, names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        let sql = statement(info, true, name);
        if let Err(e) = conn.query_drop(&sql) {
            let _ = start(conn, info, &names[..i]);
            return Err(Error::server(&sql, &e));
        }
    }
    Ok(())
}

/// Starts the SQL threads `names`; tries every one, and names those that failed.
pub fn start(conn: &mut Conn, info: &ServerInfo, names: &[String]) -> Result<()> {
    let failed: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let sql = statement(info, false, name);
            conn.query_drop(&sql)
                .err()
                .map(|e| format!("`{sql}`: {}", server::describe(&e)))
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Replication {
        message: format!(
            "replica-safe stopped the SQL thread(s) {} for the snapshot and cannot start them again ({}); replication is stopped until you run the statement(s) yourself",
            list(names),
            failed.join("; ")
        ),
    })
}

/// Starts SQL threads a locker left stopped, over a connection of its own.
pub fn restart_left(client: &crate::config::Client, names: &[String]) -> Result<()> {
    let mut session = server::connect(client, std::time::Duration::from_secs(10)).map_err(|e| {
        Error::Replication {
            message: format!(
                "replica-safe stopped the SQL thread(s) {} and they were not started again: {e}",
                list(names)
            ),
        }
    })?;
    start(&mut session.conn, &session.info, names)
}

/// Connection names for a message: `''` is the default connection.
pub fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| server::quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, sql: &str) -> Replica {
        Replica {
            name: name.into(),
            sql_running: Some(sql.into()),
            ..Replica::default()
        }
    }

    #[test]
    fn each_server_gets_its_own_stop_and_start_syntax() {
        let mariadb = ServerInfo::new("10.11.6-MariaDB-0+deb12u1".into(), 1);
        let mysql_8 = ServerInfo::new("8.4.3".into(), 1);
        let mysql_57 = ServerInfo::new("5.7.44-log".into(), 1);
        assert_eq!(statement(&mariadb, true, ""), "STOP SLAVE '' SQL_THREAD");
        assert_eq!(
            statement(&mariadb, false, "east"),
            "START SLAVE 'east' SQL_THREAD"
        );
        assert_eq!(
            statement(&mysql_8, true, ""),
            "STOP REPLICA SQL_THREAD FOR CHANNEL ''"
        );
        assert_eq!(
            statement(&mysql_57, false, "o'brien"),
            "START SLAVE SQL_THREAD FOR CHANNEL 'o''brien'"
        );
    }

    #[test]
    fn only_running_sql_threads_are_stopped_so_only_those_are_started_again() {
        let all = [
            replica("", "Yes"),
            replica("paused", "No"),
            replica("east", "Yes"),
        ];
        assert_eq!(running(&all), vec!["".to_string(), "east".to_string()]);
    }

    #[test]
    fn open_tables_with_no_running_thread_cannot_clear_and_are_refused() {
        let some = vec!["".to_string()];
        assert_eq!(moment(0, &[]), Moment::Clear);
        assert_eq!(moment(0, &some), Moment::Clear);
        assert_eq!(moment(2, &some), Moment::Wait { open: 2 });
        assert_eq!(moment(1, &[]), Moment::Stuck { open: 1 });
        assert!(stuck_error(1).to_string().contains("replica-safe = off"));
    }
}
