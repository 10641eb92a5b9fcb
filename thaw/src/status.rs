//! `mysql-snapshot-thaw --status`: the current state and the last snapshot's outcome, for people
//! and for monitoring, with Nagios exit codes.
//!
//! It only reads: it never signals a process, never connects to the server, never writes the
//! state file.
//!
//! | code | meaning |
//! |---|---|
//! | 0 OK | idle, waiting, or locked within limits; the last snapshot held its lock until thaw |
//! | 1 WARNING | the last snapshot lost its lock before thaw, or held it for more than 80 % of max-lock-time |
//! | 2 CRITICAL | a lock held longer than max-lock-time, a locker left over (still running 10 s after its recorded release), replica SQL threads that replica-safe stopped and nobody started again, or an info file that says `held` while no lock is (a copy taken now would carry another moment's coordinates) |
//! | 3 UNKNOWN | the state cannot be read |
use std::process::ExitCode;

use common::lifecycle::Verdict;
use common::metrics::Metrics;
use common::state::{Found, State, StateFile, Status};
use common::{cli, time, Config};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

pub(crate) fn run(config: &Config, as_json: bool, as_prometheus: bool) -> ExitCode {
    let found = StateFile::open(&config.run_dir, false).and_then(|s| s.peek());
    let (level, summary, state) = match found {
        Err(err) => (
            Level::Unknown,
            format!("cannot read the state: {err}"),
            None,
        ),
        Ok(Found::Nothing) => (Level::Ok, "idle; no snapshot recorded".to_string(), None),
        Ok(Found::Stale(why)) => (Level::Unknown, format!("unusable state file: {why}"), None),
        Ok(Found::State(state)) => {
            let (level, summary) = judge(config, &state, time::now_unix_ms());
            (level, summary, Some(state))
        }
    };
    let info = common::info_file::read(&config.info_file);
    let copy = judge_copy(info.as_ref(), state.as_deref());
    let (level, summary) = match copy.level {
        Level::Critical if level < Level::Critical => (copy.level, copy.text.clone()),
        _ => (level, summary),
    };
    if as_prometheus {
        let (mut metrics, _) = match &config.metrics_file {
            Some(path) => Metrics::load(path),
            None => (Metrics::default(), None),
        };
        if let Some(state) = &state {
            metrics.overlay_state(state);
        }
        metrics.copy_consistent = Some(copy.consistent);
        cli::out(&metrics.render(time::now_unix_ms() as f64 / 1000.0));
    } else if as_json {
        let doc = json!({
            "status": level.name(),
            "code": level as u8,
            "summary": summary,
            "copy": { "consistent": copy.consistent, "says": copy.text },
            "state": state.as_deref(),
        });
        cli::out(&(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"));
    } else {
        let mut text = format!("MYSQL-SNAPSHOT {} - {summary}\n", level.name());
        text.push_str(&format!("a copy taken now: {}\n", copy.text));
        if let Some(coords) = state.as_ref().and_then(|s| s.coordinates.as_ref()) {
            let coords = serde_json::to_string(coords).unwrap_or_default();
            text.push_str(&format!("coordinates: {coords}\n"));
        }
        cli::out(&text);
    }
    ExitCode::from(level as u8)
}

/// What a copy of the disk taken now would say about itself, judged against the state.
struct Copy {
    consistent: bool,
    text: String,
    level: Level,
}

/// The info file's verdict for a copy taken now; CRITICAL when it says `held` and no lock of
/// that snapshot is held (the locker was killed: nothing of ours was left to mark it).
fn judge_copy(info: Option<&serde_json::Value>, state: Option<&State>) -> Copy {
    let Some(info) = info else {
        return Copy {
            consistent: false,
            text: "not consistent: there is no info file (a copy would carry none)".into(),
            level: Level::Ok,
        };
    };
    let (consistent, says) = common::info_file::verdict(info);
    if !consistent {
        return Copy {
            consistent,
            text: format!("not consistent: {says}"),
            level: Level::Ok,
        };
    }
    let held = state.is_some_and(|s| {
        s.verdict() == Verdict::Held && common::info_file::held_for(info, s.started_at_ms)
    });
    match held {
        true => Copy {
            consistent,
            text: format!("consistent: {says}"),
            level: Level::Ok,
        },
        false => Copy {
            consistent: false,
            text: format!("the info file says the lock is {says}, but no lock of that snapshot is held: a copy taken now would carry another moment's coordinates. Run mysql-snapshot-thaw (it marks the info file)"),
            level: Level::Critical,
        },
    }
}

/// How long a locker may still run after recording its release: it writes the log lines it kept
/// while holding, then exits. A locker seen alive in that window is ending, not left over.
const EXIT_GRACE_MS: u64 = 10_000;

/// True if the locker recorded the end of its lock less than `EXIT_GRACE_MS` ago.
fn just_ended(state: &State, now_ms: u64) -> bool {
    matches!(state.status(), Status::Released | Status::Lost)
        && state
            .released_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < EXIT_GRACE_MS)
}

/// The level and one-line summary for `state` at `now_ms`.
fn judge(config: &Config, state: &State, now_ms: u64) -> (Level, String) {
    let locker = state.locker.as_ref().map_or(0, |l| l.pid);
    let held_ms = |until: u64| state.acquired_at_ms.map_or(0, |a| until.saturating_sub(a));
    let when = |ms: Option<u64>| ms.map_or("-".to_string(), time::rfc3339);
    match state.verdict() {
        Verdict::Held => judge_held(config, state, held_ms(now_ms)),
        // Between attempts too: freeze is still at it.
        Verdict::Freezing if state.status() != Status::Failed => (
            Level::Ok,
            format!(
                "freeze PID {} waiting for the lock since {} (attempt {})",
                state.freeze.pid,
                when(Some(state.started_at_ms)),
                state.attempt
            ),
        ),
        _ if state.locker_running() && !just_ended(state, now_ms) => (
            Level::Critical,
            format!(
                "a locker (PID {locker}) is left over in state `{}`",
                state.status().name()
            ),
        ),
        _ if state.replica_sql_left().is_some() => (
            Level::Critical,
            format!(
                "replica-safe stopped the SQL thread(s) {} for the snapshot at {} and they were not started again: replication is stopped. Run mysql-snapshot-thaw (it starts them) or START SLAVE SQL_THREAD",
                common::replica_safe::list(state.replica_sql_left().unwrap_or_default()),
                when(Some(state.started_at_ms))
            ),
        ),
        Verdict::HeldUntilThaw => {
            judge_thawed(config, state, state.released_at_ms.map_or(0, held_ms))
        }
        Verdict::EndedEarly => (
            Level::Warning,
            format!(
                "idle; last snapshot at {} lost its lock before thaw: {}",
                when(state.acquired_at_ms),
                state.reason_or("the locker died")
            ),
        ),
        Verdict::NeverLocked | Verdict::Freezing => (
            Level::Warning,
            format!(
                "idle; last freeze at {} took no lock: {}",
                when(Some(state.started_at_ms)),
                state.reason_or("no reason recorded")
            ),
        ),
    }
}

/// A lock held now for `held` ms: OK, unless past max-lock-time or left over after thaw.
fn judge_held(config: &Config, state: &State, held: u64) -> (Level, String) {
    let text = format!(
        "locked since {} by locker PID {} ({held} ms of max-lock-time {} s)",
        state.acquired_at_ms.map_or("-".to_string(), time::rfc3339),
        state.locker.as_ref().map_or(0, |l| l.pid),
        config.max_lock_time
    );
    if held > config.max_lock_time.saturating_mul(1000) {
        (
            Level::Critical,
            format!("{text}: held longer than max-lock-time"),
        )
    } else if state.thawed_at_ms.is_some() {
        (
            Level::Critical,
            format!("{text}: a locker left over after thaw"),
        )
    } else {
        (Level::Ok, text)
    }
}

/// The last snapshot held its lock `held` ms until thaw: OK, a warning past 80 % of
/// max-lock-time.
fn judge_thawed(config: &Config, state: &State, held: u64) -> (Level, String) {
    let text = format!(
        "idle; last snapshot at {} held its lock {held} ms until thaw",
        state.acquired_at_ms.map_or("-".to_string(), time::rfc3339)
    );
    if held.saturating_mul(10) > config.max_lock_time.saturating_mul(1000).saturating_mul(8) {
        (
            Level::Warning,
            format!("{text}, more than 80 % of max-lock-time"),
        )
    } else {
        (Level::Ok, text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use common::lifecycle::End;
    use common::process::Identity;
    use common::state::Reason;

    /// A state whose locker is this (running) test process and whose lock ended at `released`.
    fn released_at(released: u64) -> State {
        let me = Identity::current().unwrap();
        let mut state = State::claimed(me.clone());
        state.locker = Some(me);
        state.acquired_at_ms = Some(released - 1_000);
        state.ended(
            End::Released,
            Reason::Other("max-lock-time (1 s) reached before thaw".into()),
        );
        state.released_at_ms = Some(released);
        state
    }

    #[test]
    fn a_locker_still_exiting_just_after_its_release_is_not_called_left_over() {
        let config = Config::defaults("/nonexistent.cnf".into());
        let now = 1_800_000_000_000;
        let (level, text) = judge(&config, &released_at(now - 50), now);
        assert_eq!(level as u8, Level::Warning as u8, "{text}");
        assert!(text.contains("lost its lock"), "{text}");
        let (level, text) = judge(&config, &released_at(now - 20_000), now);
        assert_eq!(level as u8, Level::Critical as u8, "{text}");
        assert!(text.contains("left over"), "{text}");
    }

    #[test]
    fn sql_threads_left_stopped_by_a_dead_locker_are_critical_and_named() {
        let config = Config::defaults("/nonexistent.cnf".into());
        let now = 1_800_000_000_000;
        let mut state = released_at(now - 50_000);
        state.locker = None;
        // A freeze long gone: same PID, another start time.
        state.freeze.start_time += 1;
        state.replica_sql_stopped = Some(vec![String::new(), "east".into()]);
        let (level, text) = judge(&config, &state, now);
        assert_eq!(level as u8, Level::Critical as u8, "{text}");
        assert!(text.contains("'', 'east'"), "{text}");
        state.replica_sql_stopped = Some(Vec::new());
        let (level, _) = judge(&config, &state, now);
        assert_eq!(level as u8, Level::Warning as u8);
    }
}
