//! The server's other sessions as the processlist shows them: which statements have run long
//! enough to stand in the way of a lock (`long_statements`), what kind each is, whether
//! non-transactional tables are in use, and whose a connection id is.
//!
//! Read-only: it never kills or changes anything (that is `quiet`'s, on its own terms).
use mysql::Conn;

use crate::server::quote;
use crate::{Error, Result};

/// What kind of statement a processlist `INFO` text is, by its first keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Changes a table's definition (ALTER, CREATE, DROP, RENAME, TRUNCATE, OPTIMIZE, …).
    Ddl,
    /// Changes rows (INSERT, UPDATE, DELETE, REPLACE, LOAD DATA).
    Write,
    /// Reads (SELECT, WITH, SHOW, …): blocks FTWRL on MySQL only.
    Read,
    /// Anything else (SET, CALL, transaction control, …).
    Other,
}

impl StatementKind {
    /// Classifies `statement` by its first keyword, after blanks, `(` and comments.
    pub fn of(statement: &str) -> StatementKind {
        let mut rest = statement.trim_start();
        loop {
            if let Some(after) = rest.strip_prefix("/*") {
                rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
            } else if rest.starts_with("--") || rest.starts_with('#') {
                rest = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
            } else if let Some(after) = rest.strip_prefix('(') {
                rest = after.trim_start();
            } else {
                break;
            }
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_uppercase();
        match word.as_str() {
            "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE" | "OPTIMIZE" | "REPAIR"
            | "ANALYZE" | "IMPORT" | "GRANT" | "REVOKE" => StatementKind::Ddl,
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" => StatementKind::Write,
            "SELECT" | "WITH" | "SHOW" | "VALUES" | "TABLE" | "CHECKSUM" | "HANDLER" => {
                StatementKind::Read
            }
            _ => StatementKind::Other,
        }
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

impl Blocker {
    pub fn kind(&self) -> StatementKind {
        StatementKind::of(&self.statement)
    }
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

/// Statements (other than ours, system and replication threads and `ignore`d commands) that have
/// run at least `min_seconds`, longest first, at most 100. One round trip: `SHOW FULL PROCESSLIST`,
/// filtered here. (On MariaDB it costs a fraction of the same filter as a query on
/// `information_schema.PROCESSLIST`, which the server materialises into a temporary table; on
/// MySQL the two cost the same. BENCHMARKS.md has the figures.) The kind of each statement is
/// judged by the caller.
pub fn long_statements(
    conn: &mut Conn,
    min_seconds: u64,
    ignore: &[String],
) -> Result<Vec<Blocker>> {
    let statement = "SHOW FULL PROCESSLIST";
    let own = u64::from(conn.connection_id());
    let rows: Vec<mysql::Row> =
        crate::rows::all(conn, statement).map_err(|e| Error::server(statement, &e))?;
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = Columns::of(first).ok_or_else(|| Error::Server {
        statement: statement.into(),
        message: "the reply has no Id, User, Command, Time or Info column".into(),
    })?;
    let threads = rows.iter().filter_map(|row| columns.thread(row));
    Ok(long_among(threads, own, min_seconds, ignore))
}

/// One row of `SHOW FULL PROCESSLIST`, as far as the quiet-moment check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub id: u64,
    pub user: String,
    pub command: String,
    /// Seconds in the current state; `NULL` or negative (clock changes) read as 0.
    pub seconds: u64,
    pub info: Option<String>,
}

/// Where `Id`, `User`, `Command`, `Time` and `Info` are in a `SHOW FULL PROCESSLIST` reply (both
/// servers name them so); found once per reply.
struct Columns {
    id: usize,
    user: usize,
    command: usize,
    time: usize,
    info: usize,
}

impl Columns {
    fn of(row: &mysql::Row) -> Option<Columns> {
        let column = |name: &str| {
            row.columns_ref()
                .iter()
                .position(|c| c.name_str().eq_ignore_ascii_case(name))
        };
        Some(Columns {
            id: column("Id")?,
            user: column("User")?,
            command: column("Command")?,
            time: column("Time")?,
            info: column("Info")?,
        })
    }

    /// The thread in `row`; a row with values of the wrong type is skipped.
    fn thread(&self, row: &mysql::Row) -> Option<Thread> {
        let text = |index: usize| -> Option<Option<String>> {
            match row.as_ref(index)? {
                mysql::Value::NULL => Some(None),
                mysql::Value::Bytes(bytes) => {
                    Some(Some(String::from_utf8_lossy(bytes).into_owned()))
                }
                other => Some(Some(other.as_sql(true))),
            }
        };
        let number = |index: usize| -> Option<i64> {
            match row.as_ref(index)? {
                mysql::Value::NULL => Some(0),
                mysql::Value::Int(n) => Some(*n),
                mysql::Value::UInt(n) => Some(i64::try_from(*n).unwrap_or(i64::MAX)),
                mysql::Value::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
                _ => None,
            }
        };
        Some(Thread {
            id: u64::try_from(number(self.id)?).ok()?,
            user: text(self.user)?.unwrap_or_default(),
            command: text(self.command)?.unwrap_or_default(),
            seconds: u64::try_from(number(self.time)?).unwrap_or(0),
            info: text(self.info)?,
        })
    }
}

/// The filter of [`long_statements`]: running statements other than connection `own`'s, of
/// ordinary users, not `ignore`d, that have run at least `min_seconds`; longest first, at most 100.
pub fn long_among(
    threads: impl Iterator<Item = Thread>,
    own: u64,
    min_seconds: u64,
    ignore: &[String],
) -> Vec<Blocker> {
    let mut long: Vec<Blocker> = threads
        .filter(|t| t.id != own && t.seconds >= min_seconds)
        .filter(|t| !matches!(t.user.as_str(), "system user" | "event_scheduler"))
        .filter(|t| !t.command.is_empty() && !ignore.iter().any(|c| c == &t.command))
        .filter_map(|t| {
            Some(Blocker {
                statement: first_chars(t.info.as_deref()?, 200),
                id: t.id,
                user: t.user,
                command: t.command,
                seconds: t.seconds,
            })
        })
        .collect();
    long.sort_by_key(|b| std::cmp::Reverse(b.seconds));
    long.truncate(100);
    long
}

/// The first `n` characters of `text`.
fn first_chars(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// True if any table of an engine other than InnoDB is in use right now (MariaDB's
/// `SHOW OPEN TABLES`): such writes hold up `BACKUP STAGE BLOCK_DDL`.
pub fn non_transactional_tables_in_use(conn: &mut Conn) -> Result<bool> {
    let statement = "SHOW OPEN TABLES WHERE In_use > 0";
    let open: Vec<(String, String)> = crate::rows::all::<mysql::Row>(conn, statement)
        .map_err(|e| Error::server(statement, &e))?
        .iter()
        .map(|row| (text_at(row, 0), text_at(row, 1)))
        .collect();
    if open.is_empty() {
        return Ok(false);
    }
    let pairs: Vec<String> = open
        .iter()
        .map(|(db, table)| format!("({}, {})", quote(db), quote(table)))
        .collect();
    let statement = format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE (TABLE_SCHEMA, TABLE_NAME) IN ({}) \
         AND ENGINE IS NOT NULL AND ENGINE <> 'InnoDB'",
        pairs.join(", ")
    );
    let count: Option<u64> = crate::rows::first(conn, &statement)
        .map_err(|e| Error::server("SELECT … FROM information_schema.TABLES", &e))?;
    Ok(count.unwrap_or(0) > 0)
}

/// Column `i` of `row` as text: empty when NULL or not text (never a panic on a server's answer).
fn text_at(row: &mysql::Row, i: usize) -> String {
    row.get_opt::<String, _>(i)
        .and_then(|value| value.ok())
        .unwrap_or_default()
}

/// The account a connection id belongs to and how long its current command has run (seconds),
/// if that connection exists. A negative `TIME` (a session whose clock runs ahead: `SET
/// TIMESTAMP`, a replica applying a source's events) counts as 0.
pub fn connection(conn: &mut Conn, id: u64) -> Result<Option<(String, u64)>> {
    let statement = "SELECT USER, TIME FROM information_schema.PROCESSLIST WHERE ID = ?";
    let row: Option<mysql::Row> = crate::rows::exec_first(conn, statement, (id,))
        .map_err(|e| Error::server(statement, &e))?;
    Ok(row.map(|row| {
        let seconds = row
            .get_opt::<i64, _>(1)
            .and_then(|value| value.ok())
            .unwrap_or(0);
        (text_at(&row, 0), u64::try_from(seconds).unwrap_or(0))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(id: u64, user: &str, command: &str, seconds: u64, info: Option<&str>) -> Thread {
        Thread {
            id,
            user: user.into(),
            command: command.into(),
            seconds,
            info: info.map(Into::into),
        }
    }

    #[test]
    fn the_quiet_moment_filter_keeps_only_other_users_long_running_statements_longest_first() {
        let threads = vec![
            thread(
                1,
                "system user",
                "Slave_SQL",
                900,
                Some("INSERT INTO t VALUES (1)"),
            ),
            thread(2, "event_scheduler", "Daemon", 900, None),
            thread(3, "app", "Query", 5, Some("UPDATE t SET v = 1")),
            thread(4, "app", "Sleep", 700, None),
            thread(5, "snapper", "Query", 0, Some("SHOW FULL PROCESSLIST")),
            thread(6, "app", "Query", 40, Some("SELECT SLEEP(60)")),
            thread(7, "repl", "Binlog Dump", 800, Some("")),
            thread(8, "app", "Query", 1, Some("SELECT 1")),
        ];
        let long = long_among(threads.into_iter(), 5, 2, &["Binlog Dump".into()]);
        let ids: Vec<u64> = long.iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![6, 3]);
        assert_eq!(long[0].statement, "SELECT SLEEP(60)");
        assert_eq!(long[0].user, "app");
        assert_eq!(long[0].seconds, 40);
    }

    #[test]
    fn the_quiet_moment_filter_caps_at_100_and_cuts_statements_at_200_characters() {
        let text = "é".repeat(300);
        let threads = (1..=150).map(|id| thread(id, "app", "Query", id, Some(&text)));
        let long = long_among(threads, 0, 0, &[]);
        assert_eq!(long.len(), 100);
        assert_eq!(long[0].id, 150);
        assert_eq!(long[0].statement.chars().count(), 200);
    }

    #[test]
    fn statements_are_classified_by_their_first_keyword_past_comments() {
        use StatementKind::*;
        let cases = [
            ("UPDATE t SET v = 1 WHERE SLEEP(30) = 0", Write),
            ("  insert into t values (1)", Write),
            ("/* app=x */ DELETE FROM t", Write),
            ("-- note\nREPLACE INTO t VALUES (1)", Write),
            ("LOAD DATA INFILE 'x' INTO TABLE t", Write),
            ("ALTER TABLE t ADD COLUMN c INT", Ddl),
            ("create index i on t (v)", Ddl),
            ("OPTIMIZE TABLE t", Ddl),
            ("(SELECT 1) UNION (SELECT 2)", Read),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Read),
            ("SET @a = 1", Other),
            ("", Other),
            ("/* unterminated comment", Other),
        ];
        for (text, kind) in cases {
            assert_eq!(StatementKind::of(text), kind, "{text}");
        }
    }
}
