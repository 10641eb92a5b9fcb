//! The release sequence thaw runs (and `freeze --run` after its command): find the snapshot in
//! the state file, make the locker release, and say truthfully whether the lock was held without
//! a break from freeze until now.
//!
//! A PID from the state file is signalled only after its start time and executable match the
//! recorded ones, and a connection is killed only after it is seen to belong to our account: a
//! reused PID or connection id is never hit. Nothing here holds the state flock while it waits.
use std::time::{Duration, Instant};

use crate::error::{Lost, NoLock};
use crate::info_file;
use crate::lifecycle::{End, Verdict};
use crate::phase::Phase;
use crate::process::Identity;
use crate::server;
use crate::state::{Found, Reason, State, StateFile, Status};
use crate::{time, Config, Error, Result};
use libc::{SIGKILL, SIGTERM};
use mysql::prelude::Queryable;

/// How long the locker gets to release after SIGTERM before it is killed.
const RELEASE_GRACE: Duration = Duration::from_secs(1);
/// How often thaw looks for the locker's `released` record.
const RELEASE_POLL: Duration = Duration::from_millis(1);

/// What thaw found out about the lock.
enum Outcome {
    /// Held without a break until thaw, and now released.
    HeldUntilThaw(String),
    /// The lock was held, then ended before thaw: the snapshot is not application-consistent.
    Lost(String),
    /// The last freeze ended without ever taking the lock (refused, or killed before it had
    /// one): it did not report success, so no snapshot relies on a lock, and nothing is left to
    /// release. Proxmox sends thaw after every freeze, failed or not.
    NeverLocked(String),
    /// thaw came while freeze was still trying to take the lock; freeze (and its locker) were
    /// stopped: whatever is being snapshotted was taken with no lock.
    Interrupted(String),
}

impl Outcome {
    fn text(&self) -> &str {
        match self {
            Outcome::HeldUntilThaw(text)
            | Outcome::Lost(text)
            | Outcome::NeverLocked(text)
            | Outcome::Interrupted(text) => text,
        }
    }
}

/// Releases the lock of the snapshot in progress (or says there is none) and says whether it was
/// held without a break: `Ok` only for a lock held until now, or none ever taken.
pub fn thaw(config: &Config, phase: Phase) -> Result<()> {
    let state_file = StateFile::open(&config.run_dir, false)?;
    let Some(state) = snapshot_to_thaw(&state_file)? else {
        return Ok(());
    };
    let outcome = settle(config, &state_file, &state)?;
    mark_if_still_held(config, &state_file, &state, &outcome);
    record_thawed(&state_file, &state, &outcome)?;
    publish_metrics(config, &state_file, &outcome, phase);
    // A locker that died (or was killed above) could not start the SQL threads it stopped.
    let replica = restart_replicas(config, &state_file);
    let outcome = match (replica, outcome) {
        (Err(err), Outcome::HeldUntilThaw(text)) => {
            log::info!("event=thawed {text}");
            return Err(err);
        }
        (Err(err), Outcome::NeverLocked(text)) => {
            log::info!("event=idle nothing to thaw: {text}");
            return Err(err);
        }
        (Err(err), outcome) => {
            log::error!("event={} {err}", err.event());
            outcome
        }
        (Ok(()), outcome) => outcome,
    };
    report(outcome, phase)
}

/// The snapshot a thaw must settle, or `None` (logged) when there is nothing to thaw: no state
/// file, an unusable one (set aside), or a snapshot already thawed.
fn snapshot_to_thaw(state_file: &StateFile) -> Result<Option<Box<State>>> {
    let state = match state_file.peek()? {
        Found::Nothing => {
            log::info!("event=idle no snapshot in progress (no state file); nothing to thaw");
            return Ok(None);
        }
        Found::Stale(why) => {
            log::warn!("event=stale-state ignoring an unusable state file: {why}; nothing to thaw");
            let guard = state_file.lock()?;
            if let Found::Stale(_) = guard.read() {
                guard.set_aside()?;
            }
            return Ok(None);
        }
        Found::State(state) => state,
    };
    if let Some(at) = state.thawed_at_ms {
        log::info!(
            "event=idle nothing to thaw: the last snapshot was already thawed at {} ({})",
            time::rfc3339(at),
            state.reason_or("no reason recorded")
        );
        return Ok(None);
    }
    Ok(Some(state))
}

/// Once the lock of `state`'s snapshot is gone: if the info file still says `held` for it (its
/// locker died, was killed, or its own mark did not land in time), marks it as the record now
/// stands (`released`, or `lost` when nobody recorded an end). One read when the locker marked it.
fn mark_if_still_held(config: &Config, state_file: &StateFile, state: &State, outcome: &Outcome) {
    let Some(info) = info_file::read(&config.info_file) else {
        return;
    };
    if !info_file::held_for(&info, state.started_at_ms) {
        return;
    }
    let mut now = match state_file.peek() {
        Ok(Found::State(now)) if now.started_at_ms == state.started_at_ms => *now,
        _ => state.clone(),
    };
    if now.status() == Status::Acquired {
        match outcome {
            Outcome::HeldUntilThaw(_) => now.ended(End::Released, Reason::Thaw),
            other => now.ended(End::Lost, Reason::Other(other.text().to_string())),
        }
    }
    if let Some(mark) = now.copy_mark() {
        info_file::mark_now(config, &mark);
    }
}

/// Marks the snapshot of `state` thawed (a later thaw has nothing to do), with the outcome as its
/// reason when none was recorded.
fn record_thawed(state_file: &StateFile, state: &State, outcome: &Outcome) -> Result<()> {
    let guard = state_file.lock()?;
    if let Found::State(mut now) = guard.read() {
        if now.started_at_ms == state.started_at_ms {
            now.thawed(outcome.text());
            guard.write(&now)?;
        }
    }
    Ok(())
}

/// Logs the outcome and turns it into thaw's result: only a lock held until thaw, or none ever
/// taken, is a success (and a freeze stopped by freezeFail, which abandons the snapshot anyway).
fn report(outcome: Outcome, phase: Phase) -> Result<()> {
    match outcome {
        Outcome::HeldUntilThaw(text) => {
            log::info!("event=thawed {text}");
            Ok(())
        }
        Outcome::NeverLocked(text) => {
            log::info!("event=idle nothing to thaw: {text}");
            Ok(())
        }
        // freezeFail: the snapshot was abandoned anyway; stopping its freeze is the cleanup.
        Outcome::Interrupted(text) if phase == Phase::FreezeFail => {
            log::warn!("event=freeze-fail {text}");
            Ok(())
        }
        Outcome::Interrupted(what) => Err(Error::NotLocked(NoLock::TakenWithout { what })),
        Outcome::Lost(what) => Err(Error::LockLost(Lost::BeforeThaw {
            what,
            retake: phase != Phase::FreezeFail,
        })),
    }
}

/// Tells the metrics how the snapshot ended (a freeze that never locked, or one thaw stopped,
/// was counted by freeze). Bounded, and never a failure.
fn publish_metrics(config: &Config, state_file: &StateFile, outcome: &Outcome, phase: Phase) {
    use crate::metrics::{self, Outcome as Counted, Update};
    if config.metrics_file.is_none() {
        return;
    }
    let counted = match (outcome, phase) {
        (Outcome::NeverLocked(_), _) => return,
        (_, Phase::FreezeFail) => Counted::FreezeFail,
        (Outcome::Interrupted(_), _) => return,
        (Outcome::HeldUntilThaw(_), _) => Counted::Thawed,
        (Outcome::Lost(_), _) => Counted::Lost,
    };
    let state = match state_file.peek() {
        Ok(Found::State(state)) => Some(state),
        _ => None,
    };
    let update = Update::of_thaw(state.as_deref(), Some(counted), time::now_unix_ms());
    metrics::publish(config, &update);
}

/// Starts the replica SQL threads that replica-safe stopped, if no process of the snapshot is
/// left to do it, and clears their record. An error names the threads and the fix.
fn restart_replicas(config: &Config, state_file: &StateFile) -> Result<()> {
    let names = match state_file.peek()? {
        Found::State(state) => match state.replica_sql_left() {
            Some(names) => names.to_vec(),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    crate::replica_safe::restart_left(&config.client, &names)?;
    log::warn!(
        "event=replica-restarted the locker ended with the SQL thread(s) {} stopped by replica-safe; started them again",
        crate::replica_safe::list(&names)
    );
    let guard = state_file.lock()?;
    if let Found::State(mut now) = guard.read() {
        now.replica_sql_stopped = None;
        guard.write(&now)?;
    }
    Ok(())
}

/// Ends the snapshot described by `state` and says what happened to its lock.
fn settle(config: &Config, state_file: &StateFile, state: &State) -> Result<Outcome> {
    if let Some(outcome) = judge_record(config, state_file, state)? {
        return Ok(outcome);
    }
    ask_to_release(config, state_file, state)
}

/// The outcome the record already tells, or `None` when the locker holds the lock and must be
/// asked to release it.
fn judge_record(config: &Config, state_file: &StateFile, state: &State) -> Result<Option<Outcome>> {
    let locker_pid = state.locker.as_ref().map_or(0, |l| l.pid);
    let held_since = state.acquired_at_ms.map_or("-".to_string(), time::rfc3339);
    Ok(Some(match state.verdict() {
        Verdict::Held => return Ok(None),
        Verdict::EndedEarly if state.status() == Status::Acquired => {
            // The locker may have released (on another thaw's request) and exited between our
            // read and this check: judge what it recorded last, if it recorded anything since.
            if let Some(now) = recorded_since(state_file, state, |s| s != Status::Acquired)? {
                return settle(config, state_file, &now).map(Some);
            }
            Outcome::Lost(format!(
                "the locker (PID {locker_pid}) died while holding the lock taken at {held_since}; the server dropped the lock when its connection closed"
            ))
        }
        Verdict::HeldUntilThaw => {
            Outcome::HeldUntilThaw("the lock was already released on thaw's request".into())
        }
        Verdict::EndedEarly if matches!(state.status(), Status::Released | Status::Lost) => {
            Outcome::Lost(format!(
                "the lock taken at {held_since} ended at {} before thaw: {}",
                state.released_at_ms.map_or("-".to_string(), time::rfc3339),
                state.reason_or("no reason recorded")
            ))
        }
        // Still freezing, never locked, or a freeze that failed after its lock: freeze may have
        // taken the lock since our read, so judge what it recorded last.
        Verdict::Freezing | Verdict::NeverLocked | Verdict::EndedEarly => {
            if let Some(now) = recorded_since(state_file, state, |s| s == Status::Acquired)? {
                return settle(config, state_file, &now).map(Some);
            }
            unlocked_freeze(state)
        }
    }))
}

/// The locker holds the lock: asks it to release (recording the request first, so that the
/// locker can tell thaw's SIGTERM from any other), waits up to `RELEASE_GRACE` for its record,
/// and kills it and its connection if it does not answer.
fn ask_to_release(config: &Config, state_file: &StateFile, state: &State) -> Result<Outcome> {
    {
        let guard = state_file.lock()?;
        if let Found::State(mut now) = guard.read() {
            now.thaw_requested();
            guard.write(&now)?;
        }
    }
    let Some(locker) = state.locker.clone() else {
        return Ok(Outcome::Lost("no locker recorded".into()));
    };
    let held_since = state.acquired_at_ms.map_or("-".to_string(), time::rfc3339);
    // The locker marks the info file `released` before it releases (in-process: the filesystems
    // are thawed by now).
    let asked = Instant::now();
    locker.signal(SIGTERM);
    loop {
        if let Some(outcome) = release_recorded(state_file, &held_since, asked)? {
            return Ok(outcome);
        }
        if asked.elapsed() >= RELEASE_GRACE {
            break;
        }
        std::thread::sleep(RELEASE_POLL);
    }
    // The locker did not answer (stopped, or wedged): kill it and its connection — the info
    // file marked first, as the locker would have.
    log::warn!(
        "event=unresponsive the locker (PID {}) did not release within {} ms; killing it",
        locker.pid,
        RELEASE_GRACE.as_millis()
    );
    let mut released = state.clone();
    released.ended(End::Released, Reason::Thaw);
    if let Some(mark) = released.copy_mark() {
        info_file::mark_now(config, &mark);
    }
    let outcome = kill_connection(config, state, &locker)?;
    match (&outcome, release_recorded(state_file, &held_since, asked)?) {
        (Outcome::Lost(_), Some(late)) => Ok(late),
        _ => Ok(outcome),
    }
}

/// What the locker recorded once asked at `asked`, if it has finished: judged the same way during
/// the grace period, after it, and after a kill (the locker may have released just before it
/// died).
fn release_recorded(
    state_file: &StateFile,
    held_since: &str,
    asked: Instant,
) -> Result<Option<Outcome>> {
    let Found::State(now) = state_file.peek()? else {
        return Ok(None);
    };
    Ok(match now.status() {
        Status::Released if now.reason == Some(Reason::Thaw) => {
            Some(Outcome::HeldUntilThaw(format!(
                "lock held without a break since {held_since} ({} ms); released in {} ms",
                now.released_at_ms
                    .zip(now.acquired_at_ms)
                    .map_or(0, |(r, a)| r.saturating_sub(a)),
                asked.elapsed().as_millis()
            )))
        }
        Status::Released | Status::Lost => Some(Outcome::Lost(format!(
            "the lock taken at {held_since} was not held until thaw: {}",
            now.reason_or("no reason recorded")
        ))),
        _ => None,
    })
}

/// The state file now, if it still describes the snapshot of `state` and its status has become
/// one that `moved` accepts (each caller asks for a status other than the one it was judging,
/// so judging the new record again ends).
fn recorded_since(
    state_file: &StateFile,
    state: &State,
    moved: impl Fn(Status) -> bool,
) -> Result<Option<State>> {
    Ok(match state_file.peek()? {
        Found::State(now) if now.started_at_ms == state.started_at_ms && moved(now.status()) => {
            Some(*now)
        }
        _ => None,
    })
}

/// The outcome for a snapshot whose freeze has not recorded a lock: still trying (stop it, and
/// its locker), or ended without one (nothing to release). A freeze that held the lock and then
/// failed is not this case: its lock was held, then lost.
fn unlocked_freeze(state: &State) -> Outcome {
    let reason = state.reason_or("no reason recorded");
    let started = time::rfc3339(state.started_at_ms);
    if state.in_progress() {
        // freeze stops its locker when signalled; the locker is signalled too in case freeze is
        // gone. Neither holds a lock (none was recorded), and neither reports success now.
        let stopped_freeze = state.freeze.signal(SIGTERM);
        let stopped_locker = state.locker.as_ref().is_some_and(|l| l.signal(SIGTERM));
        if stopped_freeze || stopped_locker {
            return Outcome::Interrupted(format!(
                "thaw came while the freeze started at {started} (PID {}) was still waiting for the lock; it was stopped",
                state.freeze.pid
            ));
        }
    }
    match state.acquired_at_ms {
        None => Outcome::NeverLocked(format!(
            "the last freeze (PID {}, started at {started}) took no lock and failed ({reason}); there is no lock to release",
            state.freeze.pid
        )),
        Some(at) => Outcome::Lost(format!(
            "the lock the last freeze took at {} ended before thaw: {reason}",
            time::rfc3339(at)
        )),
    }
}

/// Kills the locker, and its connection if that is still on the server under our account and has
/// been idle since the lock was taken. The connection is looked up before the locker dies: its
/// death closes the connection.
fn kill_connection(config: &Config, state: &State, locker: &Identity) -> Result<Outcome> {
    let mut session = server::connect(&config.client, Duration::from_secs(5));
    let seen = match (session.as_mut().ok(), state.connection_id) {
        (Some(session), Some(id)) => crate::processlist::connection(&mut session.conn, id),
        _ => Ok(None),
    };
    // Whole seconds since the lock was taken, when the connection was looked up.
    let since = state.acquired_at_ms.unwrap_or(state.started_at_ms);
    let held_s = time::now_unix_ms().saturating_sub(since) / 1000;
    locker.signal(SIGKILL);
    let (mut session, seen) = (session?, seen?);
    let Some(id) = state.connection_id else {
        return Ok(Outcome::Lost("no connection id recorded".into()));
    };
    match seen {
        // The locker's connection has been idle since just after the lock was taken. One that
        // was active more recently is another session that got the same id, e.g. after a server
        // restart (ids start again from 1): the lock died with the old server; leave it alone.
        Some((user, idle_s)) if Some(&user) == state.user.as_ref() && idle_s + 1 < held_s => {
            Ok(Outcome::Lost(format!(
                "connection {id} of `{user}` was active {idle_s} s ago, but the lock was taken {held_s} s ago: it is another session that reused the id (did the server restart?); the locker's connection was gone, and its lock with it. Connection {id} was left alone"
            )))
        }
        Some((user, _)) if Some(&user) == state.user.as_ref() => {
            let statement = format!("KILL {id}");
            match session.conn.query_drop(&statement) {
                Ok(()) => {}
                // ER_NO_SUCH_THREAD: the locker's death (SIGKILL above) closed the connection
                // first, and the lock ended with it just now.
                Err(e) if server::error_code(&e) == Some(1094) => {}
                Err(e) => return Err(Error::server(&statement, &e)),
            }
            Ok(Outcome::HeldUntilThaw(format!(
                "the locker was unresponsive but its connection {id} still held the lock; killed it, releasing the lock"
            )))
        }
        Some((user, _)) => Ok(Outcome::Lost(format!(
            "connection {id} now belongs to `{user}`, not the locker: the locker's connection was gone, and its lock with it"
        ))),
        None => Ok(Outcome::Lost(format!(
            "the locker's connection {id} was gone (the server dropped it, e.g. after wait_timeout), and its lock with it"
        ))),
    }
}
