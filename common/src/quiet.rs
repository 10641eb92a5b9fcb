//! The quiet moment: whether a lock attempt can start now without queueing behind a long
//! statement, judged for the lock mode in use, and the optional killing of statements that hold
//! up an attempt already under way (`kill-long-queries`).
//!
//! The locker asks [`QuietWindow::blocker`] on its own connection right before it locks; freeze
//! kills blockers from a connection of its own, opened only when an attempt is held up.
//!
//! Every kill is re-checked by id, user and statement text right before it, and the locker's own
//! connection is never a candidate. Only `KILL QUERY` is used: a connection is never closed.
use crate::config::KillLongQueries;
use crate::lock::{HeldUp, LockMode};
use crate::processlist::{self, Blocker, StatementKind};
use crate::server::{self, Flavor};
use crate::{Config, Error, Result};
use mysql::prelude::Queryable;
use mysql::Conn;

pub struct QuietWindow<'a> {
    pub config: &'a Config,
    pub mode: LockMode,
    pub flavor: Flavor,
}

impl QuietWindow<'_> {
    /// The longest statement that has run past `long-query-threshold` and would hold up the lock
    /// (and that we would not kill anyway); `None` means now is a quiet moment.
    pub fn blocker(&self, conn: &mut Conn) -> Result<Option<Blocker>> {
        let long = processlist::long_statements(
            conn,
            self.config.long_query_threshold,
            &self.config.ignore_commands,
        )?;
        let mut non_transactional: Option<bool> = None;
        for statement in long {
            if self.killable(&statement)
                || !self.holds_up(conn, &statement, &mut non_transactional)?
            {
                continue;
            }
            return Ok(Some(statement));
        }
        Ok(None)
    }

    fn holds_up(
        &self,
        conn: &mut Conn,
        statement: &Blocker,
        non_transactional: &mut Option<bool>,
    ) -> Result<bool> {
        Ok(match self.mode.held_up_by(statement.kind(), self.flavor) {
            HeldUp::Yes => true,
            HeldUp::No => false,
            HeldUp::IfNonTransactionalInUse => match *non_transactional {
                Some(known) => known,
                None => {
                    let now = processlist::non_transactional_tables_in_use(conn)?;
                    *non_transactional = Some(now);
                    now
                }
            },
        })
    }

    fn killable(&self, statement: &Blocker) -> bool {
        match self.config.kill_long_queries {
            KillLongQueries::Off => false,
            KillLongQueries::Select => statement.kind() == StatementKind::Read,
            KillLongQueries::All => true,
        }
    }

    /// Kills (`KILL QUERY`) the killable statements that have run at least `seconds` and would
    /// hold up the lock, except connection `locker`. Returns how many were killed.
    pub fn kill_blockers(
        &self,
        conn: &mut Conn,
        seconds: u64,
        locker: Option<u64>,
    ) -> Result<usize> {
        let long = processlist::long_statements(conn, seconds, &self.config.ignore_commands)?;
        let mut killed = 0;
        for statement in long {
            // The attempt has been held up this long, so a write that may be the cause is a
            // candidate even when its tables' engines cannot be seen (an account without table
            // privileges sees no open tables): only statements that never hold up the lock are
            // spared.
            if Some(statement.id) == locker
                || !self.killable(&statement)
                || self.mode.held_up_by(statement.kind(), self.flavor) == HeldUp::No
            {
                continue;
            }
            let recheck = "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = ? AND USER = ? AND LEFT(INFO, 200) = ?";
            let still: Option<u64> = crate::rows::exec_first(
                conn,
                recheck,
                (statement.id, &statement.user, &statement.statement),
            )
            .map_err(|e| Error::server(recheck, &e))?;
            if still.is_none() {
                continue;
            }
            let kill = format!("KILL QUERY {}", statement.id);
            match conn.query_drop(&kill) {
                Ok(()) => {
                    killed += 1;
                    log::warn!(
                        "event=killed-query id={} user={} running={}s kill-long-queries={} statement: {}",
                        statement.id,
                        statement.user,
                        statement.seconds,
                        self.config.kill_long_queries.name(),
                        statement.statement
                    );
                }
                Err(e) => log::warn!(
                    "event=kill-failed id={} user={}: {}",
                    statement.id,
                    statement.user,
                    server::describe(&e)
                ),
            }
        }
        Ok(killed)
    }
}
