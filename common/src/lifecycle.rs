//! The lifecycle of one snapshot's record: the only writers of its status (the transitions), the
//! one reading of where it stands ([`Verdict`]) that freeze, thaw and `thaw --status` share, and
//! the info file as its projection ([`State::copy_mark`]): what a copy of the disk taken in each
//! state says about itself.
//!
//! ```text
//! claimed ──▶ waiting ──▶ held ──▶ released (thaw's request, or before thaw) │ lost
//!    ▲           │          │
//!    └─ retry ◀──┴ timed-out└──▶ failed (freeze abandoned it, or the locker failed)
//! ```
//!
//! Who calls which: freeze `claimed`, `retry`, `abandoned`; the locker `waiting`, `held`, `ended`;
//! thaw `thaw_requested`, `thawed`. Each caller writes the state file under its flock
//! (`state::Guard`); nothing here does I/O. The rule the info file keeps — marked before a lock
//! is asked for and before one is released on purpose — is [`State::copy_mark`] applied to the
//! state a transition is about to make (see `info_file`).
use crate::coordinates::Coordinates;
use crate::info_file::{CopyState, Mark};
use crate::lock::LockMode;
use crate::process::Identity;
use crate::state::{Reason, State, Status};

/// How a locker's run ended, as it records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server capped the attempt; no lock is held; freeze may try again.
    TimedOut,
    /// No lock was taken (an error, or a stop before the lock).
    Failed,
    /// The lock was released (thaw's request, or before thaw: the reason says).
    Released,
    /// The lock was gone when the locker came to release it.
    Lost,
}

impl End {
    fn status(self) -> Status {
        match self {
            End::TimedOut => Status::TimedOut,
            End::Failed => Status::Failed,
            End::Released => Status::Released,
            End::Lost => Status::Lost,
        }
    }
}

/// What the locker recorded once the lock was held and verified.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub at_ms: u64,
    pub coordinates: Coordinates,
    pub synced: Option<Vec<crate::storage::Synced>>,
    pub storage_flags: Vec<String>,
    pub durability_warnings: Vec<String>,
}

/// Where a snapshot stands, read from its record (and whether its processes still run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A freeze is still trying (its process or its locker runs); no lock is recorded.
    Freezing,
    /// The lock is held by a running locker.
    Held,
    /// The lock was released on thaw's request: held without a break until thaw.
    HeldUntilThaw,
    /// A lock that was held ended before thaw: released early, lost, or its locker died.
    EndedEarly,
    /// The last freeze ended without ever holding the lock (refused, capped, stopped).
    NeverLocked,
}

impl State {
    /// A snapshot claimed by the freeze `freeze`, now: its first attempt is starting.
    pub fn claimed(freeze: Identity) -> State {
        let mut state = State::starting(freeze);
        state.attempt = 1;
        state
    }

    /// freeze starts attempt `attempt` after a capped one: a new locker will record itself.
    pub fn retry(&mut self, attempt: u32) {
        self.attempt = attempt;
        self.status = Status::Starting;
        self.locker = None;
        self.reason = None;
    }

    /// The locker `locker` (connection `connection_id` as `user`) waits for the lock in `mode`.
    pub fn waiting(
        &mut self,
        locker: Option<Identity>,
        connection_id: u64,
        user: String,
        mode: LockMode,
    ) {
        self.status = Status::Waiting;
        self.locker = locker;
        self.connection_id = Some(connection_id);
        self.user = Some(user);
        self.lock_mode = Some(mode);
    }

    /// The lock is held and verified, at these coordinates.
    pub fn held(&mut self, acquired: Acquired) {
        self.status = Status::Acquired;
        self.acquired_at_ms = Some(acquired.at_ms);
        self.coordinates = Some(acquired.coordinates);
        self.synced = acquired.synced;
        self.storage_flags = Some(acquired.storage_flags).filter(|f| !f.is_empty());
        self.durability_warnings = Some(acquired.durability_warnings).filter(|w| !w.is_empty());
    }

    /// The locker's run ended (`end`, `reason`); a lock that ended is dated now.
    pub fn ended(&mut self, end: End, reason: Reason) {
        self.status = end.status();
        self.reason = Some(reason);
        if matches!(end, End::Released | End::Lost) {
            self.released_at_ms = Some(crate::time::now_unix_ms());
        }
    }

    /// freeze gave the snapshot up (`reason`): failed, unless its lock already ended.
    pub fn abandoned(&mut self, reason: String) {
        if !matches!(self.status, Status::Released | Status::Lost) {
            self.status = Status::Failed;
        }
        self.reason = Some(Reason::Other(reason));
    }

    /// thaw asks the locker to release (recorded before the signal, so that the locker can tell
    /// thaw's SIGTERM from any other).
    pub fn thaw_requested(&mut self) {
        self.thaw_requested_at_ms = Some(crate::time::now_unix_ms());
    }

    /// thaw (or freezeFail) is done with this snapshot; `outcome` is its reason if none is
    /// recorded. A later thaw has nothing to do.
    pub fn thawed(&mut self, outcome: &str) {
        self.thawed_at_ms = Some(crate::time::now_unix_ms());
        if self.reason.is_none() {
            self.reason = Some(Reason::Other(outcome.to_string()));
        }
    }

    /// Whether this snapshot keeps a new freeze out: its freeze still runs, or its locker runs
    /// without having recorded its end. A locker that recorded its end (a release, a failure, a
    /// capped attempt) holds nothing and writes nothing more: it is only exiting, and a thaw
    /// followed at once by a freeze must not find the snapshot busy because of it.
    pub fn keeps_a_new_freeze_out(&self) -> bool {
        let ended = matches!(
            self.status,
            Status::Released | Status::Lost | Status::Failed | Status::TimedOut
        );
        self.freeze.is_running() || (self.locker_running() && !ended)
    }

    /// The status, as the transitions left it.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Where this snapshot stands (the one reading freeze, thaw and `--status` share).
    pub fn verdict(&self) -> Verdict {
        match self.status {
            Status::Acquired if self.locker_running() => Verdict::Held,
            // Its locker died holding it: the server dropped the lock with the connection.
            Status::Acquired => Verdict::EndedEarly,
            Status::Released if self.reason == Some(Reason::Thaw) => Verdict::HeldUntilThaw,
            Status::Released | Status::Lost => Verdict::EndedEarly,
            Status::Starting | Status::Waiting | Status::TimedOut | Status::Failed => {
                if self.in_progress() {
                    Verdict::Freezing
                } else if self.acquired_at_ms.is_some() {
                    // freeze failed after its locker held the lock.
                    Verdict::EndedEarly
                } else {
                    Verdict::NeverLocked
                }
            }
        }
    }

    /// What the info file must say once this record stands (`None` while the lock is held: the
    /// locker writes the held record, with the coordinates). Applied to the state a transition
    /// is about to make, before the lock is asked for or released, it is the mark that keeps a
    /// copy from pairing `consistent: true` with a moment no lock covered.
    pub fn copy_mark(&self) -> Option<Mark> {
        let reason = self.reason_or("no reason recorded");
        let (state, reason) = match self.status {
            Status::Acquired => return None,
            Status::Starting | Status::Waiting | Status::TimedOut => (
                CopyState::Freezing,
                "a freeze is taking the lock; no lock is held yet".to_string(),
            ),
            Status::Failed => (CopyState::Refused, format!("freeze failed: {reason}")),
            Status::Released if self.reason == Some(Reason::Thaw) => (
                CopyState::Released,
                format!(
                    "released on thaw's request (the lock was held from {})",
                    self.acquired_at_ms
                        .map_or("-".to_string(), crate::time::rfc3339)
                ),
            ),
            Status::Released => (
                CopyState::Released,
                format!("the lock was released before thaw: {reason}"),
            ),
            Status::Lost => (CopyState::Lost, reason),
        };
        Some(Mark::new(state, reason, self.started_at_ms))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The lock held at 5, at no particular coordinates.
    fn acquired() -> Acquired {
        Acquired {
            at_ms: 5,
            coordinates: Coordinates::default(),
            synced: None,
            storage_flags: vec![],
            durability_warnings: vec![],
        }
    }

    fn gone() -> Identity {
        // This process, with a start time it never had: "not running".
        let mut me = Identity::current().unwrap();
        me.start_time += 1;
        me
    }

    #[test]
    fn each_state_projects_to_the_mark_a_copy_taken_then_must_carry() {
        let mut state = State::claimed(gone());
        assert_eq!(state.copy_mark().unwrap().state, CopyState::Freezing);
        state.waiting(Some(gone()), 7, "root".into(), LockMode::Ftwrl);
        assert_eq!(state.copy_mark().unwrap().state, CopyState::Freezing);
        state.held(acquired());
        assert!(
            state.copy_mark().is_none(),
            "held: the held record, not a mark"
        );
        let mut thawed = state.clone();
        thawed.ended(End::Released, Reason::Thaw);
        let mark = thawed.copy_mark().unwrap();
        assert_eq!(mark.state, CopyState::Released);
        assert!(mark.reason.contains("thaw's request"), "{}", mark.reason);
        assert_eq!(mark.snapshot_id, state.started_at_ms);
        let mut early = state.clone();
        early.ended(End::Released, Reason::Other("max-lock-time (3 s)".into()));
        assert!(early
            .copy_mark()
            .unwrap()
            .reason
            .contains("before thaw: max-lock-time"));
        let mut refused = State::claimed(gone());
        refused.abandoned("no lock within snapshot-timeout (3 s)".into());
        let mark = refused.copy_mark().unwrap();
        assert_eq!(mark.state, CopyState::Refused);
        assert!(mark.reason.contains("snapshot-timeout"), "{}", mark.reason);
    }

    #[test]
    fn the_verdict_tells_held_until_thaw_from_every_other_end() {
        let mut state = State::claimed(gone());
        assert_eq!(state.verdict(), Verdict::NeverLocked, "its freeze is gone");
        state.held(acquired());
        assert_eq!(
            state.verdict(),
            Verdict::EndedEarly,
            "its locker died holding it"
        );
        let mut thawed = state.clone();
        thawed.ended(End::Released, Reason::Thaw);
        assert_eq!(thawed.verdict(), Verdict::HeldUntilThaw);
        let mut lost = state.clone();
        lost.ended(End::Lost, Reason::Other("gone".into()));
        assert_eq!(lost.verdict(), Verdict::EndedEarly);
        // freeze failed after the lock was held: the lock ended before thaw.
        state.abandoned("not confirmed".into());
        assert_eq!(state.verdict(), Verdict::EndedEarly);
    }
}
