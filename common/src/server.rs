//! One connection to the server: how it is reached (`Client`), opened with bounded timeouts, and
//! who is at the other end (`ServerInfo`). What other sessions are doing is `processlist`'s.
//!
//! Every connection has explicit connect, read and write timeouts: nothing here waits on the
//! server without a bound. Errors are turned into text a DBA can act on; passwords never are.
use std::path::PathBuf;
use std::time::Duration;

use mysql::{Conn, OptsBuilder};

use crate::batch::{Answers, Failed};
use crate::{Error, Result};

/// Driver-error text lives with the error type; callers keep asking for it here.
pub use crate::error::{describe, error_code};

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Client {
    pub user: String,
    pub password: Option<String>,
    pub socket: PathBuf,
    pub host: Option<String>,
    pub port: u16,
}

impl Client {
    /// Where the client connects, for messages: the socket path or `host:port`.
    pub fn target(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}:{} as {}", self.port, self.user),
            None => format!("{} as {}", self.socket.display(), self.user),
        }
    }
}

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

/// An open session with what we learned about the server on connecting, and the answers of the
/// last batch sent on it ([`Session::fetch`]), each handed out once to the reader that asks.
pub struct Session {
    pub conn: Conn,
    pub info: ServerInfo,
    pub answers: Answers,
}

impl Session {
    /// A session on `conn` to the server `info` describes, with no answers waiting.
    pub fn new(conn: Conn, info: ServerInfo) -> Session {
        Session {
            conn,
            info,
            answers: Answers::default(),
        }
    }

    /// Sends `statements` in one round trip; their answers wait here for the readers (those of
    /// an earlier batch not asked for are dropped). The first statement that failed, if any.
    pub fn fetch(&mut self, statements: &[String]) -> Option<Failed> {
        let (answers, failed) = Answers::fetch(&mut self.conn, statements);
        self.answers = answers;
        failed
    }

    /// `statement`'s rows: its waiting answer, else from the server now.
    pub fn query(&mut self, statement: &str) -> mysql::Result<Vec<mysql::Row>> {
        self.answers.query(&mut self.conn, statement)
    }

    /// `statement`'s first row, converted: its waiting answer, else from the server now.
    pub fn query_first<T: mysql::prelude::FromRow>(
        &mut self,
        statement: &str,
    ) -> mysql::Result<Option<T>> {
        self.answers.query_first(&mut self.conn, statement)
    }

    /// Runs `statement` for its effect: its waiting answer if a batch ran it, else now.
    pub fn query_drop(&mut self, statement: &str) -> mysql::Result<()> {
        self.answers.query_drop(&mut self.conn, statement)
    }
}

/// Opens a connection with bounded timeouts (the handshake only: for a second connection to a
/// server whose identity the first one read).
pub fn open(client: &Client, read_timeout: Duration) -> Result<Conn> {
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
    Conn::new(opts).map_err(|e| connect_error(client, &e))
}

fn connect_error(client: &Client, e: &mysql::Error) -> Error {
    Error::Connect {
        target: client.target(),
        message: describe(e),
    }
}

/// Connects with bounded timeouts and reads the server's identity in the same breath.
pub fn connect(client: &Client, read_timeout: Duration) -> Result<Session> {
    let mut conn = open(client, read_timeout)?;
    let row: Option<(String, u64)> =
        crate::rows::first(&mut conn, "SELECT VERSION(), CONNECTION_ID()")
            .map_err(|e| connect_error(client, &e))?;
    let (version, id) = row.ok_or_else(|| Error::Server {
        statement: "SELECT VERSION(), CONNECTION_ID()".into(),
        message: "returned no row".into(),
    })?;
    Ok(Session::new(conn, ServerInfo::new(version, id)))
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
    fn quoting_doubles_quotes_and_backslashes() {
        assert_eq!(quote("Binlog Dump"), "'Binlog Dump'");
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
    }
}
