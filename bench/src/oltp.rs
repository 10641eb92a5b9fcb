//! The under-load figure: freeze latency next to the floor's while Debian's sysbench
//! `oltp_read_write` (16 threads, 4 tables × 20,000 rows) runs on the private server, and what
//! the cycles cost sysbench: its throughput and its (ignored) lock-wait and deadlock errors in a
//! window with cycles against an equal window without.
//!
//! Only ever runs sysbench against the benchmark's own private server, over its socket; sysbench
//! ends by itself (`--time`) and is killed by its PID if the figure fails.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql::prelude::Queryable;

use crate::figures::{freeze_beside_floor, Bench, Outcome, HOLD};
use crate::flavour::Target;
use crate::report::Row;

/// Seconds each sysbench window lasts: long enough for every measured cycle of both modes.
const WINDOW_S: u64 = 60;

/// sysbench's arguments for `phase` against `socket`.
fn sysbench(socket: &Path, phase: &str, seconds: u64) -> Command {
    let mut command = Command::new("sysbench");
    command
        .arg("oltp_read_write")
        .arg(format!("--mysql-socket={}", socket.display()))
        .args([
            "--mysql-user=root",
            "--mysql-db=sbtest",
            "--tables=4",
            "--table-size=20000",
            "--threads=16",
            "--report-interval=0",
            // A lock wait timeout or deadlock is counted, not fatal: the count is the figure.
            "--mysql-ignore-errors=1205,1213",
        ])
        .arg(format!("--time={seconds}"))
        .arg(phase)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A sysbench run, killed by its PID if dropped before it ended.
struct Running(Option<Child>);

impl Running {
    fn start(socket: &Path, seconds: u64) -> Result<Running, String> {
        sysbench(socket, "run", seconds)
            .stdout(Stdio::piped())
            .spawn()
            .map(|child| Running(Some(child)))
            .map_err(|e| format!("start sysbench: {e} (apt-get install sysbench)"))
    }

    /// Waits for the end and reads (transactions per second, ignored errors).
    fn finish(mut self) -> Result<(f64, u64), String> {
        let child = self.0.take().ok_or("sysbench already finished")?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for sysbench: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("sysbench failed ({}): {text}", out.status));
        }
        summary(&text).ok_or_else(|| format!("no summary in sysbench's output: {text}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// (transactions per second, ignored errors) from sysbench 1.0's summary.
fn summary(text: &str) -> Option<(f64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.split_once(':').map_or("", |(_, v)| v).trim().to_string())
    };
    let tps = field("transactions:")?
        .split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let errors = field("ignored errors:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((tps, errors))
}

/// The figure, for every lock mode of the flavour.
pub(crate) fn under_load(b: &mut Bench, target: &dyn Target) -> Outcome {
    target
        .conn()
        .query_drop("CREATE DATABASE IF NOT EXISTS sbtest")
        .map_err(|e| format!("create sbtest: {e}"))?;
    let socket = target.socket();
    let prepared = sysbench(&socket, "prepare", 0)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("sysbench prepare: {e} (apt-get install sysbench)"))?;
    if !prepared.success() {
        return Err(format!("sysbench prepare failed ({prepared})"));
    }
    let (control_tps, control_errors) = Running::start(&socket, WINDOW_S)?.finish()?;
    let load = Running::start(&socket, WINDOW_S)?;
    std::thread::sleep(Duration::from_secs(2));
    let case = "sysbench oltp_read_write, 16 threads, 4 tables × 20,000 rows";
    let mut rows = Vec::new();
    for &mode in b.flavour.modes() {
        let (freeze, floor) = freeze_beside_floor(b, target, mode, HOLD)?;
        rows.push((mode, freeze, floor));
    }
    let (cycled_tps, cycled_errors) = load.finish()?;
    for (mode, freeze, floor) in rows {
        let ratio = freeze.median() / floor.median();
        let row = Row::new(
            "under load: freeze latency",
            &format!("{}, {case}", mode.name()),
            "ms",
            freeze,
        )
        .floor(floor)
        .target(
            &format!("≤ 1.5 × floor at p50 (is {ratio:.2} ×)"),
            ratio <= 1.5,
        );
        b.row(row);
    }
    b.report.note(format!(
        "under load, {}: sysbench {WINDOW_S} s without cycles {control_tps:.0} tps, {control_errors} lock-wait/deadlock errors; with the cycles {cycled_tps:.0} tps, {cycled_errors} errors",
        b.flavour.name()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sysbench_summary_gives_throughput_and_ignored_errors() {
        let text = "SQL statistics:\n    queries performed:\n        read:                            140000\n    transactions:                        10000  (166.60 per sec.)\n    queries:                             200000 (3332.08 per sec.)\n    ignored errors:                      3      (0.05 per sec.)\n    reconnects:                          0      (0.00 per sec.)\n";
        assert_eq!(summary(text), Some((166.60, 3)));
        assert_eq!(summary("nothing"), None);
    }
}
