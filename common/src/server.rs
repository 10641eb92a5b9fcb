//! One connection to the server and the questions we ask it outside the lock itself: who it is,
//! whether this is a quiet moment, and who a connection id belongs to.
//!
//! Every connection has explicit connect, read and write timeouts: nothing here waits on the
//! server without a bound. Errors are turned into text a DBA can act on; passwords never are.
use std::io::ErrorKind;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

use crate::config::Client;
use crate::{Error, Result};

/// Which server family we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::MariaDb => "mariadb",
            Flavor::MySql => "mysql",
        }
    }
}

/// Who the server is, read once per connection.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub flavor: Flavor,
    /// `SELECT VERSION()` as the server reports it, e.g. `10.11.6-MariaDB-0+deb12u1`.
    pub version: String,
    /// (major, minor, patch) parsed from `version`.
    pub number: (u32, u32, u32),
    pub connection_id: u64,
}

impl ServerInfo {
    /// Builds the info from `VERSION()` and `CONNECTION_ID()`.
    pub fn new(version: String, connection_id: u64) -> ServerInfo {
        let flavor = if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let mut parts = version
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let number = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        ServerInfo {
            flavor,
            version,
            number,
            connection_id,
        }
    }

    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.number >= (major, minor, patch)
    }
}

/// An open session with what we learned about the server on connecting.
pub struct Session {
    pub conn: Conn,
    pub info: ServerInfo,
}

/// Connects with bounded timeouts and reads the server's identity in the same breath.
pub fn connect(client: &Client, read_timeout: Duration) -> Result<Session> {
    let mut opts = OptsBuilder::new()
        .user(Some(&client.user))
        .pass(client.password.as_deref())
        .read_timeout(Some(read_timeout))
        .write_timeout(Some(Duration::from_secs(10)))
        .tcp_connect_timeout(Some(Duration::from_secs(5)))
        // Known up front, so the driver does not ask the server for it on connect.
        .max_allowed_packet(Some(16 * 1024 * 1024))
        .prefer_socket(false);
    opts = match &client.host {
        Some(host) => opts.ip_or_hostname(Some(host)).tcp_port(client.port),
        None => opts.socket(Some(client.socket.to_string_lossy().into_owned())),
    };
    let connect_error = |e: &mysql::Error| Error::Connect {
        target: client.target(),
        message: describe(e),
    };
    let mut conn = Conn::new(opts).map_err(|e| connect_error(&e))?;
    let row: Option<(String, u64)> = conn
        .query_first("SELECT VERSION(), CONNECTION_ID()")
        .map_err(|e| connect_error(&e))?;
    let (version, id) = row.ok_or_else(|| Error::Server {
        statement: "SELECT VERSION(), CONNECTION_ID()".into(),
        message: "returned no row".into(),
    })?;
    Ok(Session {
        conn,
        info: ServerInfo::new(version, id),
    })
}

/// Human text for a driver error, with a hint for the common cases.
pub fn describe(err: &mysql::Error) -> String {
    match err {
        mysql::Error::MySqlError(e) => {
            let hint = match e.code {
                1045 => " (wrong user or password: check [client] in the config)",
                1044 | 1142 | 1227 => " (missing privilege: see the GRANT statement in the README)",
                1040 => " (max_connections reached: try again later or raise max_connections)",
                2013 | 2006 => " (the server closed the connection)",
                _ => "",
            };
            format!("ERROR {} ({}): {}{hint}", e.code, e.state, e.message)
        }
        mysql::Error::IoError(e) => io_hint(e.kind()).unwrap_or_else(|| format!("I/O error: {e}")),
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((_, desc, kind)))) => {
            io_hint(*kind).unwrap_or_else(|| desc.clone())
        }
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout) => {
            "no answer from the server within the connect timeout".into()
        }
        other => other.to_string(),
    }
}

fn io_hint(kind: ErrorKind) -> Option<String> {
    let text = match kind {
        ErrorKind::NotFound => {
            "no such socket (is the server running? is `socket` in [client] right?)"
        }
        ErrorKind::ConnectionRefused => {
            "connection refused (is the server running and listening there?)"
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            "no answer from the server within the timeout"
        }
        ErrorKind::PermissionDenied => "permission denied on the socket",
        _ => return None,
    };
    Some(text.into())
}

/// The server error code of a driver error, if it is one.
pub fn error_code(err: &mysql::Error) -> Option<u16> {
    match err {
        mysql::Error::MySqlError(e) => Some(e.code),
        _ => None,
    }
}

/// A statement that stands in the way of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub id: u64,
    pub user: String,
    pub command: String,
    pub seconds: u64,
    /// The first 200 characters of the statement.
    pub statement: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "id={} user={} running {} s: {}",
            self.id, self.user, self.seconds, self.statement
        )
    }
}

/// The longest-running statement (other than ours, system and replication threads and
/// `ignore`d commands) that has run at least `min_seconds`; `None` means a quiet moment.
/// One round trip: the filtering happens on the server.
pub fn longest_statement(
    conn: &mut Conn,
    min_seconds: u64,
    ignore: &[String],
) -> Result<Option<Blocker>> {
    let statement = quiet_query(min_seconds, ignore);
    let row: Option<(u64, String, String, u64, Option<String>)> = conn
        .query_first(&statement)
        .map_err(|e| Error::server("SELECT … FROM information_schema.PROCESSLIST", &e))?;
    Ok(row.map(|(id, user, command, seconds, info)| Blocker {
        id,
        user,
        command,
        seconds,
        statement: info.unwrap_or_default(),
    }))
}

fn quiet_query(min_seconds: u64, ignore: &[String]) -> String {
    let mut ignored: Vec<String> = ignore.iter().map(|c| quote(c)).collect();
    ignored.push("''".into());
    format!(
        "SELECT ID, USER, COMMAND, TIME, LEFT(INFO, 200) FROM information_schema.PROCESSLIST \
         WHERE ID <> CONNECTION_ID() AND INFO IS NOT NULL AND TIME >= {min_seconds} \
         AND USER NOT IN ('system user', 'event_scheduler') \
         AND COMMAND NOT IN ({}) ORDER BY TIME DESC LIMIT 1",
        ignored.join(", ")
    )
}

/// The account a connection id belongs to, if that connection exists.
pub fn connection_user(conn: &mut Conn, id: u64) -> Result<Option<String>> {
    conn.exec_first(
        "SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?",
        (id,),
    )
    .map_err(|e| Error::server("SELECT USER FROM information_schema.PROCESSLIST", &e))
}

/// A SQL string literal (single quotes, backslash and quote escaped).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_is_told_from_its_version_string_not_the_protocol_version() {
        let info = ServerInfo::new("10.11.6-MariaDB-0+deb12u1-log".into(), 7);
        assert_eq!(info.flavor, Flavor::MariaDb);
        assert_eq!(info.number, (10, 11, 6));
        assert!(info.at_least(10, 4, 1));
        let mysql = ServerInfo::new("9.7.4".into(), 8);
        assert_eq!(mysql.flavor, Flavor::MySql);
        assert!(!mysql.at_least(10, 0, 0));
    }

    #[test]
    fn quoting_keeps_ignore_commands_from_breaking_the_processlist_query() {
        assert_eq!(quote("Binlog Dump"), "'Binlog Dump'");
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
        let q = quiet_query(10, &["Sleep".into(), "x' OR 1=1 -- ".into()]);
        assert!(q.contains("'x'' OR 1=1 -- '"));
    }
}
