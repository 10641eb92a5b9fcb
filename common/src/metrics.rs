//! Metrics for Prometheus: a small `.prom` file for node_exporter's textfile collector
//! (`metrics-file`), written when freeze ends and when thaw ends, and the same text for
//! `thaw --status --prometheus`.
//!
//! Owns the metric names, the text format, reading back the previous file (its counters carry
//! over; a corrupt one restarts them at 0 with a warning), and the hand-off to the writer. The
//! file is never written by the locker while it holds the lock, nor before freeze has reported
//! success: freeze and thaw hand an [`Update`] to a detached writer process (the locker binary
//! with `--write-metrics`) and wait for it at most [`WRITE_DEADLINE`]. A writer stuck on a frozen
//! or hung filesystem is left to finish when it can; it never changes an exit status and never
//! holds up an exit (a thread in the writing process would: a process whose thread sleeps in the
//! kernel on a frozen filesystem cannot be reaped). Nothing here may fail a freeze or a thaw.
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::state::State;

/// How long freeze or thaw waits for the metrics writer before leaving it behind.
pub const WRITE_DEADLINE: Duration = Duration::from_millis(100);

/// How a snapshot ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// thaw found the lock held without a break since freeze, and released it.
    Thawed,
    /// A lock that was held ended before thaw (or could not be verified).
    Lost,
    /// freeze failed and took no lock.
    Refused,
    /// freeze was stopped by a signal.
    Aborted,
    /// Another snapshot was in progress.
    Busy,
    /// The hypervisor sent `freezeFail`.
    FreezeFail,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Thawed,
        Outcome::Lost,
        Outcome::Refused,
        Outcome::Aborted,
        Outcome::Busy,
        Outcome::FreezeFail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Thawed => "thawed",
            Outcome::Lost => "lost",
            Outcome::Refused => "refused",
            Outcome::Aborted => "aborted",
            Outcome::Busy => "busy",
            Outcome::FreezeFail => "freeze-fail",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }

    /// The outcome of a failed freeze.
    pub fn of_freeze_error(err: &crate::Error) -> Outcome {
        match err {
            crate::Error::Busy { .. } => Outcome::Busy,
            crate::Error::Interrupted { .. } => Outcome::Aborted,
            crate::Error::LockLost(_) => Outcome::Lost,
            _ => Outcome::Refused,
        }
    }
}

/// The verdict of the last `mysql-snapshot-verify` on a copy, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verified {
    /// Taken under the lock, recovers, tables sound, at the recorded coordinates.
    Consistent,
    /// Recovers with sound tables, but no lock covered it (or not at the recorded moment).
    CrashConsistent,
    /// Does not start, or InnoDB or `CHECK TABLE` reports damage.
    Damaged,
}

impl Verified {
    pub const ALL: [Verified; 3] = [
        Verified::Consistent,
        Verified::CrashConsistent,
        Verified::Damaged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verified::Consistent => "consistent",
            Verified::CrashConsistent => "crash-consistent",
            Verified::Damaged => "damaged",
        }
    }
}

/// What one freeze or thaw tells the metrics, handed to the writer as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// Unix seconds when freeze or thaw ended.
    pub at: f64,
    /// `true` from freeze, `false` from thaw.
    pub freeze: bool,
    /// How the snapshot ended; `None` for a freeze that holds its lock (thaw tells the end).
    pub outcome: Option<Outcome>,
    /// Whether a lock is held now, and its mode.
    pub lock_held: bool,
    pub mode: Option<String>,
    pub lock_wait_seconds: Option<f64>,
    pub lock_held_seconds: Option<f64>,
    pub attempts: Option<u64>,
    pub killed_queries: Option<u64>,
    /// Whether a copy of the disk taken now would be consistent (the info file says `held`).
    #[serde(default)]
    pub copy_consistent: bool,
    /// From `mysql-snapshot-verify`: its verdict (and nothing else of this update applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

impl Update {
    /// The update for a freeze (`outcome` `None`: it holds its lock) from its state record.
    pub fn of_freeze(state: Option<&State>, outcome: Option<Outcome>, now_ms: u64) -> Update {
        let mut update = Update {
            at: seconds(now_ms),
            freeze: true,
            outcome,
            lock_held: outcome.is_none(),
            copy_consistent: outcome.is_none(),
            ..Update::default()
        };
        if let Some(state) = state {
            update.mode = state.lock_mode.map(|m| m.name().to_string());
            update.lock_wait_seconds = state
                .acquired_at_ms
                .map(|a| seconds(a.saturating_sub(state.started_at_ms)));
            update.attempts = Some(u64::from(state.attempt));
            update.killed_queries = Some(state.killed_queries);
        }
        update
    }

    /// The update for a verify that ended with `verdict`.
    pub fn of_verify(verdict: Verified, now_ms: u64) -> Update {
        Update {
            at: seconds(now_ms),
            verified: Some(verdict),
            ..Update::default()
        }
    }

    /// The update for a thaw that ended the snapshot of `state` with `outcome`.
    pub fn of_thaw(state: Option<&State>, outcome: Option<Outcome>, now_ms: u64) -> Update {
        let mut update = Update {
            at: seconds(now_ms),
            freeze: false,
            outcome,
            lock_held: false,
            ..Update::default()
        };
        if let Some(state) = state {
            update.mode = state.lock_mode.map(|m| m.name().to_string());
            update.lock_held_seconds = state
                .acquired_at_ms
                .zip(state.released_at_ms)
                .map(|(a, r)| seconds(r.saturating_sub(a)));
        }
        update
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Every number the file carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub last_freeze: Option<f64>,
    pub last_thaw: Option<f64>,
    pub last_success: Option<f64>,
    pub last_outcome: Option<Outcome>,
    pub lock_wait_seconds: Option<f64>,
    pub lock_held_seconds: Option<f64>,
    pub attempts: Option<u64>,
    pub killed_queries: Option<u64>,
    /// Runs per outcome, in the order of [`Outcome::ALL`].
    pub runs: [u64; 6],
    pub lock_held: bool,
    pub mode: Option<String>,
    /// Whether a copy taken now would be consistent (unknown: `None`).
    pub copy_consistent: Option<bool>,
    /// When the last verify ended, and its verdict.
    pub last_verify: Option<f64>,
    pub last_verify_verdict: Option<Verified>,
    /// When the last verify that found a copy consistent ended.
    pub last_verified_consistent: Option<f64>,
}

/// One metric: name, type, help.
const FAMILIES: [(&str, &str, &str); 15] = [
    (
        "mysql_snapshot_last_freeze_timestamp_seconds",
        "gauge",
        "When the last freeze ended (Unix time).",
    ),
    (
        "mysql_snapshot_last_thaw_timestamp_seconds",
        "gauge",
        "When the last thaw ended a snapshot (Unix time).",
    ),
    (
        "mysql_snapshot_last_success_timestamp_seconds",
        "gauge",
        "When the last snapshot whose lock was held from freeze until thaw was thawed (Unix time).",
    ),
    (
        "mysql_snapshot_last_outcome",
        "gauge",
        "1 for the way the last snapshot ended, 0 for the others.",
    ),
    (
        "mysql_snapshot_last_lock_wait_seconds",
        "gauge",
        "How long the last freeze waited for its lock.",
    ),
    (
        "mysql_snapshot_last_lock_held_seconds",
        "gauge",
        "How long the last snapshot's lock was held.",
    ),
    (
        "mysql_snapshot_last_attempts",
        "gauge",
        "Lock attempts the last freeze made.",
    ),
    (
        "mysql_snapshot_last_killed_queries",
        "gauge",
        "Statements the last freeze killed (kill-long-queries).",
    ),
    (
        "mysql_snapshot_runs_total",
        "counter",
        "Snapshots by the way they ended.",
    ),
    (
        "mysql_snapshot_lock_held",
        "gauge",
        "1 while a lock is held (set by freeze, cleared by thaw).",
    ),
    (
        "mysql_snapshot_copy_consistent",
        "gauge",
        "1 while a copy of the disk taken now would be consistent (the info file says held): set by a successful freeze, cleared by thaw and every failure; live in thaw --status --prometheus.",
    ),
    (
        "mysql_snapshot_last_verify_timestamp_seconds",
        "gauge",
        "When mysql-snapshot-verify last ended (Unix time).",
    ),
    (
        "mysql_snapshot_last_verify_verdict",
        "gauge",
        "1 for the verdict of the last mysql-snapshot-verify, 0 for the others.",
    ),
    (
        "mysql_snapshot_last_verified_consistent_timestamp_seconds",
        "gauge",
        "When mysql-snapshot-verify last found a copy consistent (Unix time; 0: never).",
    ),
    (
        "mysql_snapshot_metrics_written_timestamp_seconds",
        "gauge",
        "When this file was written (Unix time).",
    ),
];

impl Metrics {
    /// Applies what a freeze or thaw reports.
    pub fn apply(&mut self, update: &Update) {
        if let Some(verdict) = update.verified {
            self.last_verify = Some(update.at);
            self.last_verify_verdict = Some(verdict);
            if verdict == Verified::Consistent {
                self.last_verified_consistent = Some(update.at);
            }
            return;
        }
        if update.freeze {
            self.last_freeze = Some(update.at);
            self.lock_wait_seconds = update.lock_wait_seconds;
            self.attempts = update.attempts;
            self.killed_queries = update.killed_queries;
            self.lock_held_seconds = None;
        } else {
            self.last_thaw = Some(update.at);
            if update.lock_held_seconds.is_some() {
                self.lock_held_seconds = update.lock_held_seconds;
            }
        }
        if let Some(outcome) = update.outcome {
            self.last_outcome = Some(outcome);
            let runs = &mut self.runs[outcome.index()];
            *runs = runs.saturating_add(1);
            if outcome == Outcome::Thawed {
                self.last_success = Some(update.at);
            }
        }
        self.lock_held = update.lock_held;
        self.copy_consistent = Some(update.copy_consistent);
        if update.mode.is_some() {
            self.mode = update.mode.clone();
        }
    }

    /// The text node_exporter serves, `written` being the Unix time of writing.
    pub fn render(&self, written: f64) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in self.samples(name, written) {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }

    /// The samples of metric family `name` as (labels, value); `written` is the file's time.
    fn samples(&self, name: &str, written: f64) -> Vec<(String, String)> {
        // Unknown durations and counts are NaN; a time never reached is 0, so that "how long
        // since" alerts fire on a host that never had one.
        let number = |v: Option<f64>| v.map_or("NaN".to_string(), |v| format!("{v:.3}"));
        let when = |v: Option<f64>| format!("{:.3}", v.unwrap_or(0.0));
        let plain = |value: String| vec![(String::new(), value)];
        let per_outcome = |value: &dyn Fn(Outcome) -> String| {
            Outcome::ALL
                .iter()
                .map(|&o| (format!("{{outcome=\"{}\"}}", o.name()), value(o)))
                .collect()
        };
        match name {
            "mysql_snapshot_last_freeze_timestamp_seconds" => plain(when(self.last_freeze)),
            "mysql_snapshot_last_thaw_timestamp_seconds" => plain(when(self.last_thaw)),
            "mysql_snapshot_last_success_timestamp_seconds" => plain(when(self.last_success)),
            "mysql_snapshot_last_outcome" => {
                per_outcome(&|o| u8::from(self.last_outcome == Some(o)).to_string())
            }
            "mysql_snapshot_last_lock_wait_seconds" => plain(number(self.lock_wait_seconds)),
            "mysql_snapshot_last_lock_held_seconds" => plain(number(self.lock_held_seconds)),
            "mysql_snapshot_last_attempts" => plain(number(self.attempts.map(|n| n as f64))),
            "mysql_snapshot_last_killed_queries" => {
                plain(number(self.killed_queries.map(|n| n as f64)))
            }
            "mysql_snapshot_runs_total" => per_outcome(&|o| self.runs[o.index()].to_string()),
            "mysql_snapshot_lock_held" => vec![(
                format!(
                    "{{mode=\"{}\"}}",
                    label(self.mode.as_deref().unwrap_or("none"))
                ),
                u8::from(self.lock_held).to_string(),
            )],
            "mysql_snapshot_copy_consistent" => {
                plain(number(self.copy_consistent.map(|c| f64::from(u8::from(c)))))
            }
            "mysql_snapshot_last_verify_timestamp_seconds" => plain(when(self.last_verify)),
            "mysql_snapshot_last_verify_verdict" => Verified::ALL
                .iter()
                .map(|&v| {
                    (
                        format!("{{verdict=\"{}\"}}", v.name()),
                        u8::from(self.last_verify_verdict == Some(v)).to_string(),
                    )
                })
                .collect(),
            "mysql_snapshot_last_verified_consistent_timestamp_seconds" => {
                plain(when(self.last_verified_consistent))
            }
            _ => plain(format!("{written:.3}")),
        }
    }

    /// Reads back a file this module wrote: the counters, and the last values. Anything that is
    /// not a well-formed sample is an error naming the line.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let mut metrics = Metrics::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}: {line:.80}", n + 1);
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
            let value: f64 = value
                .parse()
                .map_err(|_| bad("the value is not a number"))?;
            let (name, label) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .ok_or_else(|| bad("unclosed labels"))?;
                    let (_, quoted) = inner.split_once('=').ok_or_else(|| bad("bad label"))?;
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|q| q.strip_suffix('"'))
                        .ok_or_else(|| bad("unquoted label value"))?;
                    (name, Some(value))
                }
                None => (series, None),
            };
            if !name.starts_with("mysql_snapshot_") {
                return Err(bad("not a mysql-snapshot metric"));
            }
            let given = |v: f64| Some(v).filter(|v| !v.is_nan());
            let time = |v: f64| Some(v).filter(|v| *v > 0.0);
            let count = |v: f64| given(v).map(|v| v as u64);
            let outcome = label.and_then(|l| Outcome::ALL.into_iter().find(|o| o.name() == l));
            match name {
                "mysql_snapshot_last_freeze_timestamp_seconds" => metrics.last_freeze = time(value),
                "mysql_snapshot_last_thaw_timestamp_seconds" => metrics.last_thaw = time(value),
                "mysql_snapshot_last_success_timestamp_seconds" => {
                    metrics.last_success = time(value)
                }
                "mysql_snapshot_last_outcome" if value == 1.0 => metrics.last_outcome = outcome,
                "mysql_snapshot_last_lock_wait_seconds" => metrics.lock_wait_seconds = given(value),
                "mysql_snapshot_last_lock_held_seconds" => metrics.lock_held_seconds = given(value),
                "mysql_snapshot_last_attempts" => metrics.attempts = count(value),
                "mysql_snapshot_last_killed_queries" => metrics.killed_queries = count(value),
                "mysql_snapshot_runs_total" => {
                    let outcome = outcome.ok_or_else(|| bad("unknown outcome"))?;
                    if !(value >= 0.0 && value.fract() == 0.0) {
                        return Err(bad("a count must be a whole number"));
                    }
                    metrics.runs[outcome.index()] = value as u64;
                }
                "mysql_snapshot_copy_consistent" => {
                    metrics.copy_consistent = given(value).map(|v| v == 1.0)
                }
                "mysql_snapshot_last_verify_timestamp_seconds" => metrics.last_verify = time(value),
                "mysql_snapshot_last_verify_verdict" if value == 1.0 => {
                    metrics.last_verify_verdict =
                        label.and_then(|l| Verified::ALL.into_iter().find(|v| v.name() == l))
                }
                "mysql_snapshot_last_verified_consistent_timestamp_seconds" => {
                    metrics.last_verified_consistent = time(value)
                }
                "mysql_snapshot_lock_held" => {
                    metrics.lock_held = value == 1.0;
                    metrics.mode = label.map(str::to_string).filter(|m| m != "none");
                }
                _ => {}
            }
        }
        Ok(metrics)
    }

    /// The metrics of `path` (none yet: all zero). A file that cannot be read back restarts the
    /// counters at 0; the warning says why.
    pub fn load(path: &Path) -> (Metrics, Option<String>) {
        match std::fs::read_to_string(path) {
            Ok(text) => match Metrics::parse(&text) {
                Ok(metrics) => (metrics, None),
                Err(why) => (
                    Metrics::default(),
                    Some(format!(
                        "{} cannot be read back ({why}); its counters restart at 0",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Metrics::default(), None),
            Err(e) => (
                Metrics::default(),
                Some(format!(
                    "cannot read {} ({e}); its counters restart at 0",
                    path.display()
                )),
            ),
        }
    }

    /// What the state says now, over what the file says: used by `thaw --status --prometheus`,
    /// so that it shows the same numbers as `--status --json`.
    pub fn overlay_state(&mut self, state: &State) {
        self.lock_held = state.verdict() == crate::lifecycle::Verdict::Held;
        if state.lock_mode.is_some() {
            self.mode = state.lock_mode.map(|m| m.name().to_string());
        }
        if let Some(acquired) = state.acquired_at_ms {
            self.lock_wait_seconds = Some(seconds(acquired.saturating_sub(state.started_at_ms)));
            let until = state
                .released_at_ms
                .unwrap_or_else(crate::time::now_unix_ms);
            self.lock_held_seconds = Some(seconds(until.saturating_sub(acquired)));
        }
        self.attempts = Some(u64::from(state.attempt));
        self.killed_queries = Some(state.killed_queries);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The writer's work: under an flock in `run_dir` (tmpfs: never frozen), read the previous file,
/// apply `update`, write a temporary file in the same directory (mode 0644) and rename it over.
/// Returns the warning about an unreadable previous file, if any.
pub fn write(path: &Path, run_dir: &Path, update: &Update) -> std::io::Result<Option<String>> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join("metrics.lock"))?;
    lock.lock()?;
    let (mut metrics, warning) = Metrics::load(path);
    metrics.apply(update);
    let text = metrics.render(seconds(crate::time::now_unix_ms()));
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map_or("metrics".into(), |n| n.to_string_lossy().into_owned());
    // node_exporter reads only `*.prom`: the temporary name must not end so.
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Never through a symlink someone left at our temporary name.
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map(|()| warning)
}

/// Hands `update` to a detached writer (`locker --write-metrics`) and waits for it at most
/// [`WRITE_DEADLINE`]; logs (never fails) when it fails or is left behind.
pub fn publish(config: &crate::Config, update: &Update) {
    if config.metrics_file.is_none() {
        return;
    }
    let started = Instant::now();
    let result = hand_off(config, update);
    match result {
        Ok(Some(status)) if status.success() => {}
        Ok(Some(status)) => log::warn!(
            "event=metrics the metrics writer failed ({status}); see its event=metrics line. The snapshot is not affected"
        ),
        Ok(None) => log::warn!(
            "event=metrics the metrics file was not written within {} ms (is its filesystem frozen or hung?); a writer finishes it when it can. The snapshot is not affected",
            started.elapsed().as_millis()
        ),
        Err(err) => log::warn!(
            "event=metrics cannot start the metrics writer: {err}. The snapshot is not affected"
        ),
    }
}

/// Starts the writer with `update` on its stdin; its exit status if it ended within the
/// deadline, `None` if it is still running.
fn hand_off(
    config: &crate::Config,
    update: &Update,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let payload = serde_json::to_string(update).unwrap_or_default();
    crate::process::hand_off("--write-metrics", &config.path, &payload, WRITE_DEADLINE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn thawed(at: f64) -> Update {
        Update {
            at,
            freeze: false,
            outcome: Some(Outcome::Thawed),
            lock_held: false,
            mode: Some("ftwrl".into()),
            lock_held_seconds: Some(2.5),
            ..Update::default()
        }
    }

    #[test]
    fn counters_carry_over_through_the_file_and_the_last_outcome_is_the_only_one_set() {
        let mut metrics = Metrics::default();
        metrics.apply(&Update {
            at: 100.0,
            freeze: true,
            lock_held: true,
            mode: Some("ftwrl".into()),
            lock_wait_seconds: Some(0.004),
            attempts: Some(1),
            killed_queries: Some(0),
            ..Update::default()
        });
        metrics.apply(&thawed(103.0));
        let text = metrics.render(104.0);
        let mut back = Metrics::parse(&text).unwrap();
        assert_eq!(back.runs, [1, 0, 0, 0, 0, 0]);
        assert_eq!(back.last_success, Some(103.0));
        assert_eq!(back.lock_held_seconds, Some(2.5));
        back.apply(&Update::of_freeze(None, Some(Outcome::Refused), 200_000));
        let text = back.render(201.0);
        assert!(text.contains("mysql_snapshot_runs_total{outcome=\"thawed\"} 1\n"));
        assert!(text.contains("mysql_snapshot_runs_total{outcome=\"refused\"} 1\n"));
        assert!(text.contains("mysql_snapshot_last_outcome{outcome=\"refused\"} 1\n"));
        assert!(text.contains("mysql_snapshot_last_outcome{outcome=\"thawed\"} 0\n"));
        assert!(text.contains("mysql_snapshot_lock_held{mode=\"ftwrl\"} 0\n"));
        assert_eq!(text.matches("# TYPE").count(), FAMILIES.len());
    }

    #[test]
    fn a_verify_sets_its_time_and_verdict_and_leaves_the_snapshot_numbers_alone() {
        let mut metrics = Metrics::default();
        metrics.apply(&Update::of_freeze(None, None, 100_000));
        metrics.apply(&Update::of_verify(Verified::Consistent, 200_000));
        metrics.apply(&Update::of_verify(Verified::Damaged, 300_000));
        let text = metrics.render(301.0);
        let back = Metrics::parse(&text).unwrap();
        assert_eq!(back.last_verify, Some(300.0));
        assert_eq!(back.last_verify_verdict, Some(Verified::Damaged));
        assert_eq!(back.last_verified_consistent, Some(200.0));
        assert!(back.lock_held, "a verify says nothing of the lock");
        assert_eq!(back.copy_consistent, Some(true));
        assert!(text.contains("mysql_snapshot_last_verify_verdict{verdict=\"damaged\"} 1\n"));
        assert!(text.contains("mysql_snapshot_last_verify_verdict{verdict=\"consistent\"} 0\n"));
    }

    #[test]
    fn a_garbage_file_is_an_error_naming_the_line() {
        let err = Metrics::parse("# HELP x\nmysql_snapshot_runs_total{outcome=\"thawed\"} many\n")
            .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(Metrics::parse("\u{0}\u{1}garbage").is_err());
        assert!(Metrics::parse("node_cpu_seconds_total 1").is_err());
    }

    #[test]
    fn each_freeze_error_has_its_outcome() {
        use crate::error::{Lost, NoLock};
        use crate::Error;
        let busy = Error::Busy {
            holder: "locker PID 1".into(),
            status: "acquired",
            started_at: String::new(),
        };
        let stopped = Error::Interrupted {
            signal: "SIGTERM".into(),
        };
        let lost = Error::LockLost(Lost::NotOurLocker);
        let refused = Error::NotLocked(NoLock::LockerExited { reason: None });
        assert_eq!(Outcome::of_freeze_error(&busy), Outcome::Busy);
        assert_eq!(Outcome::of_freeze_error(&stopped), Outcome::Aborted);
        assert_eq!(Outcome::of_freeze_error(&lost), Outcome::Lost);
        assert_eq!(Outcome::of_freeze_error(&refused), Outcome::Refused);
    }
}
