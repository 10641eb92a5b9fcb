//! Several statements in one round trip. Under load every round trip waits for the CPU twice (the
//! server's thread, then ours), so the few statements freeze needs before and right after the lock
//! travel together: the server runs them in order and stops at the first that fails, exactly as
//! if they had been sent one by one and the caller had stopped at that error.
//!
//! A batch only ever holds statements whose text is fixed by this crate (never user input). Its
//! answers are a cache in front of the connection: the rows of each statement that ran, and the
//! server's error for the one that failed; a statement that was not sent, or not reached after a
//! failure, goes to the server on its own when asked for, so the caller always sees what that
//! statement alone gives (and takes the same fallback). Each answer is handed out once.
use mysql::prelude::Queryable;
use mysql::{Conn, MySqlError, Row};

/// The first statement of a batch that failed: its place in the batch and the server's error.
/// The server ran nothing after it.
#[derive(Debug)]
pub struct Failed {
    pub index: usize,
    pub error: mysql::Error,
}

/// What each statement of a batch gave (its rows, or the server's error), by statement text,
/// until asked for.
#[derive(Debug, Default)]
pub struct Answers(Vec<(String, Result<Vec<Row>, MySqlError>)>);

impl Answers {
    /// Sends `statements` in one round trip; the answers of those that ran, and the first that
    /// failed (nothing after it ran). The driver's connection allows several statements per query
    /// (CLIENT_MULTI_STATEMENTS).
    pub fn fetch(conn: &mut Conn, statements: &[String]) -> (Answers, Option<Failed>) {
        let mut answers = Answers::default();
        if statements.is_empty() {
            return (answers, None);
        }
        let mut result = match conn.query_iter(statements.join(";\n")) {
            Ok(result) => result,
            Err(error) => return answers.failed(statements, Failed { index: 0, error }),
        };
        let mut index = 0;
        while let Some(set) = result.iter() {
            let mut rows = Vec::new();
            for row in set {
                match row {
                    Ok(row) => rows.push(row),
                    Err(error) => return answers.failed(statements, Failed { index, error }),
                }
            }
            if let Some(statement) = statements.get(index) {
                answers.0.push((statement.clone(), Ok(rows)));
            }
            index += 1;
        }
        (answers, None)
    }

    /// The answers so far, with the server's error kept as the failed statement's answer (a
    /// driver or I/O error is not an answer: asked for, that statement goes to the server).
    fn failed(mut self, statements: &[String], failed: Failed) -> (Answers, Option<Failed>) {
        if let (mysql::Error::MySqlError(e), Some(statement)) =
            (&failed.error, statements.get(failed.index))
        {
            self.0.push((statement.clone(), Err(e.clone())));
        }
        (self, Some(failed))
    }

    /// `statement`'s rows: its answer if the batch had one, else from the server now.
    pub fn query(&mut self, conn: &mut Conn, statement: &str) -> mysql::Result<Vec<Row>> {
        match self.0.iter().position(|(s, _)| s == statement) {
            Some(i) => self.0.remove(i).1.map_err(mysql::Error::MySqlError),
            None => crate::rows::all(conn, statement),
        }
    }

    /// `statement`'s first row, converted: its answer if the batch had one, else from the server.
    pub fn query_first<T: mysql::prelude::FromRow>(
        &mut self,
        conn: &mut Conn,
        statement: &str,
    ) -> mysql::Result<Option<T>> {
        let rows = self.query(conn, statement)?;
        rows.into_iter()
            .next()
            .map(crate::rows::converted)
            .transpose()
    }

    /// Runs `statement` for its effect: its answer if the batch ran it, else on the server now.
    pub fn query_drop(&mut self, conn: &mut Conn, statement: &str) -> mysql::Result<()> {
        self.query(conn, statement).map(drop)
    }
}
