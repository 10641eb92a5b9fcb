//! The preparation before every lock, one path for the locker and `freeze --check`, so that a rule
//! cannot live in one and not the other (a refusal `--check` did not report was a bug twice).
//!
//! It owns the order: the mode `lock-mode` resolves to on this server, settled by this run's
//! settings; then, in one round trip, the account's privileges (which may settle
//! `auto`'s backup lock on its fallback), the session's caps and the surroundings' reads; the
//! filesystems a sync needs; the cluster's readiness; and last the backup lock's preconditions on
//! the settings and the cluster ([`Preparation::into_freeze`]). The tables' precondition is not
//! here: the locker lists them under the backup lock itself, `--check` from the surroundings.
//!
//! It reads the server and sets this session's own variables; it never takes a lock and never
//! writes a file.
use crate::grants::{self, GrantReport};
use crate::lock::{self, Choice};
use crate::server::Session;
use crate::storage::Filesystem;
use crate::surroundings::{self, Surroundings, Tables};
use crate::{Config, Error, Result};
use mysql::prelude::Queryable;

/// What the rest of the preparation found, each step's own outcome.
pub struct Preparation {
    /// The mode settled by this run's settings and the privileges (still open to the
    /// surroundings).
    choice: Result<Choice>,
    /// The account's privileges for that mode (for the mode asked for when step one refused).
    pub grants: Result<GrantReport>,
    /// The session's caps (`lock_wait_timeout`, `wait_timeout`, the statement cap) set.
    caps: Result<()>,
    /// Where the server writes, how durable it is, its cluster.
    pub around: Result<Surroundings>,
    /// With `sync`: the filesystems to sync once the lock is held.
    pub to_sync: Option<Result<Vec<Filesystem>>>,
    /// A Galera node is Synced; a Group Replication member's queue is short.
    cluster: Result<()>,
}

/// What a freeze takes from the preparation to its lock.
pub struct Prepared {
    /// The mode, settled by everything but the tables.
    pub choice: Choice,
    /// The privileges (a missing one only when roles may grant it).
    pub grants: GrantReport,
    pub around: Surroundings,
    pub to_sync: Option<Vec<Filesystem>>,
}

/// Prepares a freeze on `session`: the mode `lock-mode` resolves to on this server, settled by
/// this run's settings (`sync`: the filesystems are synced, not frozen; `rotate-binlog`) —
/// `settled` is told it at once, before any round trip (the locker starts its tables scan aside
/// then) — then the privileges, the session's caps and the surroundings' reads in one round trip,
/// each taken from the answers; the filesystems a sync needs; the cluster's readiness. `tables`
/// says where the non-transactional tables are listed. `Err` only when `lock-mode` has no meaning
/// on this server; every later refusal is kept in its step.
pub fn prepare(
    session: &mut Session,
    config: &Config,
    sync: bool,
    tables: Tables,
    settled: impl FnOnce(&Choice),
) -> Result<Preparation> {
    let requested = config.lock_mode.resolve(&session.info)?;
    let mode = requested
        .clone()
        .settle(lock::setting_refusals(sync, config.rotate_binlog));
    if let Ok(choice) = &mode {
        settled(choice);
    }
    let caps = lock::session_caps(
        config.lock_wait_timeout,
        config.max_lock_time,
        session.info.flavor,
    );
    let mut batch = vec![grants::SHOW_GRANTS.to_string(), caps.clone()];
    batch.extend(surroundings::statements(&session.info));
    session.fetch(&batch);
    let (choice, grants) = match mode {
        Ok(choice) => match grants::check(session, config, choice.clone()) {
            Ok((choice, report)) => (Ok(choice), Ok(report)),
            // Unread privileges refuse the freeze in their own place, after the mode.
            Err(err) => (Ok(choice), Err(err)),
        },
        Err(err) => (
            Err(err),
            grants::check(session, config, requested).map(|(_, report)| report),
        ),
    };
    let caps = session
        .query_drop(&caps)
        .map_err(|e| Error::server(&caps, &e));
    let around = read_around(session, config, tables);
    // Without the surroundings there is nothing to sync: their failure refuses first.
    let to_sync = match (&around, sync) {
        (Ok(around), true) => Some(around.filesystems_to_sync()),
        _ => None,
    };
    let cluster = match &around {
        Ok(around) => cluster_ready(around),
        Err(_) => Ok(()),
    };
    Ok(Preparation {
        choice,
        grants,
        caps,
        around,
        to_sync,
        cluster,
    })
}

/// The surroundings, and on a Group Replication member the session set not to wait for the group
/// (from here on: the processlist, the lock, the coordinates; what ran so far never waits).
fn read_around(session: &mut Session, config: &Config, tables: Tables) -> Result<Surroundings> {
    let around = surroundings::read(session, &config.info_file, tables)?;
    if around.group_replication.is_some() {
        if let Err(e) = session.conn.query_drop(crate::group_replication::EVENTUAL) {
            if crate::server::error_code(&e) != Some(1193) {
                return Err(Error::server(crate::group_replication::EVENTUAL, &e));
            }
        }
    }
    Ok(around)
}

/// A Galera node that is not Synced, or a Group Replication member far behind, is refused before
/// any lock: the copy would be of a node mid-transfer or of a queue not yet applied.
fn cluster_ready(around: &Surroundings) -> Result<()> {
    if let Some(node) = &around.galera {
        node.check_synced()?;
    }
    if let Some(member) = &around.group_replication {
        member.check_queue()?;
    }
    Ok(())
}

impl Preparation {
    /// What a freeze takes to its lock, or its refusal: the first failed step in the order the
    /// module names. A missing privilege refuses unless roles may grant it (then `grants` says
    /// so and the caller warns).
    pub fn into_freeze(self) -> Result<Prepared> {
        let choice = self.choice?;
        let grants = self.grants?;
        if let Some(err) = grants.error() {
            if !grants.has_roles {
                return Err(err);
            }
        }
        self.caps?;
        let around = self.around?;
        let to_sync = self.to_sync.transpose()?;
        self.cluster?;
        let choice = choice.settle(around.backup_lock_refusals_before_tables())?;
        Ok(Prepared {
            choice,
            grants,
            around,
            to_sync,
        })
    }

    /// For `--check`: the mode a freeze would take now and why — settled as a freeze settles it,
    /// the tables included (listed here) — or why it would be refused, as text.
    pub fn choice(&self) -> std::result::Result<Choice, String> {
        let choice = self.choice.as_ref().map_err(ToString::to_string)?.clone();
        let around = self.around.as_ref().map_err(ToString::to_string)?;
        choice
            .settle(around.backup_lock_refusals_before_tables())
            .and_then(|c| c.settle(around.durability.table_refusals()))
            .map_err(|e| e.to_string())
    }
}
