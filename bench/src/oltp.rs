//! The under-load figure: freeze latency next to the floor's while Debian's sysbench
//! `oltp_read_write` (16 threads, 4 tables × 20,000 rows) runs on the private server, and what
//! the cycles cost sysbench: its throughput and its (ignored) lock-wait and deadlock errors.
//!
//! Each case has a sysbench window of its own, started fresh: one without cycles, one where the
//! product snapshots once a second (freeze, hold 100 ms, thaw), one where the floor does the same
//! (without and, for FTWRL, with the pre-flush the product runs by default). The lock is held the
//! same share of every cycled window, so product and floor windows cost sysbench alike unless
//! the product adds a cost of its own.
//!
//! Only ever runs sysbench against the benchmark's own private server, over its socket; sysbench
//! ends by itself (`--time`) and is killed by its PID if the figure fails.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::figures::{cycle, Bench, Outcome, HOLD};
use crate::flavour::{Mode, Target};
use crate::product::Product;
use crate::report::Row;
use crate::stats::Samples;

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

/// One snapshot a second: freeze runs in each cycle hold the lock `HOLD`, then rest.
const PERIOD: Duration = Duration::from_secs(1);

/// Who snapshots in a window.
#[derive(Clone, Copy)]
enum Cycler {
    Nobody,
    Product(Mode),
    Floor { mode: Mode, pre_flush: bool },
}

/// What one window gave: the latencies of its measured cycles, sysbench's throughput and errors.
struct Window {
    latency: Samples,
    tps: f64,
    errors: u64,
    /// Snapshots taken in the window (measured or not), and the longest whole cycle.
    snapshots: usize,
    slowest: Duration,
    /// Snapshots (measured or not) whose lock took longer than `SLOW` to hold.
    slow: usize,
}

/// A snapshot slower than this is one a DBA feels.
const SLOW: Duration = Duration::from_secs(1);

impl Window {
    /// How many snapshots the window held, and its slowest cycle.
    fn cycles(&self) -> String {
        format!(
            "{} snapshots, slowest cycle {} ms",
            self.snapshots,
            self.slowest.as_millis()
        )
    }
}

/// A fresh sysbench window with `who` snapshotting once a `PERIOD` from its third second to its
/// last: the bench's warm-up and measured runs first, then unmeasured ones, so that every window
/// is snapshotted alike from start to end.
fn window(b: &Bench, target: &dyn Target, who: Cycler) -> Result<Window, String> {
    let cycles = b.warmup + b.runs;
    // Room for every measured cycle even if some run long (a retried attempt); fewer, if they
    // run longer still, are said in the note.
    let seconds = 8 + PERIOD.as_secs() * cycles as u64 * 2;
    let end = Duration::from_secs(seconds - 2);
    let load = Running::start(&target.socket(), seconds)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let mut product = Product::new(&b.bin_dir, target, "");
    let mut latency = Samples::default();
    let (mut done, mut slowest, mut slow) = (0, Duration::ZERO, 0);
    while started.elapsed() + PERIOD < end {
        let at = Instant::now();
        let took = match who {
            Cycler::Nobody => break,
            Cycler::Product(mode) => {
                let took = cycle(&product, target, mode, false, HOLD)?.freeze.elapsed;
                // What the product logged in a slow cycle says which step waited.
                let log = product.take_log();
                if took > SLOW {
                    eprintln!(
                        "  slow cycle, {}: freeze took {} ms; its log: {}",
                        mode.name(),
                        took.as_millis(),
                        log.join(" | ")
                    );
                }
                took
            }
            Cycler::Floor { mode, pre_flush } => {
                let floor = b.floor(target, mode, pre_flush)?;
                let took = floor.locked_after;
                std::thread::sleep(HOLD);
                floor.release()?;
                took
            }
        };
        if (b.warmup..cycles).contains(&done) {
            latency.push_ms(took);
        }
        slow += usize::from(took > SLOW);
        done += 1;
        slowest = slowest.max(at.elapsed());
        std::thread::sleep(PERIOD.saturating_sub(at.elapsed()));
    }
    let (tps, errors) = load.finish()?;
    Ok(Window {
        latency,
        tps,
        errors,
        snapshots: done,
        slowest,
        slow,
    })
}

/// The sysbench schema on `target`.
fn prepare(target: &dyn Target) -> Outcome {
    target
        .conn()
        .query_drop("CREATE DATABASE IF NOT EXISTS sbtest")
        .map_err(|e| format!("create sbtest: {e}"))?;
    let prepared = sysbench(&target.socket(), "prepare", 0)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("sysbench prepare: {e} (apt-get install sysbench)"))?;
    if !prepared.success() {
        return Err(format!("sysbench prepare failed ({prepared})"));
    }
    Ok(())
}

const CASE: &str = "sysbench oltp_read_write, 16 threads, 4 tables × 20,000 rows";

/// The figure, for every lock mode of the flavour; on MySQL also the default, on a server with
/// MySQL's own durable defaults.
pub(crate) fn under_load(b: &mut Bench, target: &dyn Target) -> Outcome {
    prepare(target)?;
    let control = window(b, target, Cycler::Nobody)?;
    let case = CASE;
    let mut notes = vec![format!(
        "no snapshots {:.0} tps, {} errors",
        control.tps, control.errors
    )];
    for &mode in b.flavour.modes() {
        let product = window(b, target, Cycler::Product(mode))?;
        let floor = window(
            b,
            target,
            Cycler::Floor {
                mode,
                pre_flush: false,
            },
        )?;
        let ratio = product.latency.median() / floor.latency.median();
        let row = Row::new(
            "under load: freeze latency",
            &format!("{}, {case}", mode.name()),
            "ms",
            product.latency.clone(),
        )
        .floor(floor.latency.clone())
        .target(
            &format!("≤ 1.5 × floor at p50 (is {ratio:.2} ×)"),
            ratio <= 1.5,
        );
        b.row(row);
        notes.push(format!(
            "{}: product snapshots {:.0} tps, {} errors ({}); floor snapshots {:.0} tps, {} errors ({})",
            mode.name(),
            product.tps,
            product.errors,
            product.cycles(),
            floor.tps,
            floor.errors,
            floor.cycles()
        ));
        if mode == Mode::Ftwrl {
            let flushed = window(
                b,
                target,
                Cycler::Floor {
                    mode,
                    pre_flush: true,
                },
            )?;
            notes.push(format!(
                "ftwrl: floor with the pre-flush (the product's default) {:.1} ms median, {:.0} tps, {} errors ({})",
                flushed.latency.median(),
                flushed.tps,
                flushed.errors,
                flushed.cycles()
            ));
            b.row(Row::new(
                "under load: the floor with the pre-flush (for comparison)",
                &format!("{}, {case}", mode.name()),
                "ms",
                flushed.latency,
            ));
        }
    }
    b.report.note(format!(
        "under load, {}, one snapshot a second holding {} ms, sysbench in a fresh window each: {}",
        b.flavour.name(),
        HOLD.as_millis(),
        notes.join("; ")
    ));
    if b.flavour.is_mysql() {
        default_under_load(b)?;
    }
    Ok(())
}

/// The profile (`crate::profile`) of every lock mode of the flavour while sysbench runs: where a
/// freeze's milliseconds go under load, where the latency target is measured. On MySQL also the
/// backup lock, on a server with MySQL's own durable defaults.
pub(crate) fn profile_under_load(b: &mut Bench, target: &dyn Target) -> Outcome {
    let label = ", under sysbench 16 threads";
    let modes = b.flavour.modes();
    traced_under_load(b, target, label, modes)?;
    if b.flavour.is_mysql() {
        let server = durable_mysql(b)?;
        traced_under_load(b, server.as_ref(), label, &[Mode::BackupLock])?;
    }
    Ok(())
}

/// `modes`' profiles on `target`, each in a sysbench window of its own long enough for its runs.
fn traced_under_load(b: &mut Bench, target: &dyn Target, label: &str, modes: &[Mode]) -> Outcome {
    prepare(target)?;
    for &mode in modes {
        // A traced cycle takes well under a second; the window is cut short when it is done.
        let seconds = 20 + 2 * (b.warmup + b.runs) as u64;
        let load = Running::start(&target.socket(), seconds)?;
        std::thread::sleep(std::time::Duration::from_secs(3));
        crate::profile::profile_modes(b, target, label, &[mode])?;
        drop(load);
    }
    Ok(())
}

/// A server with MySQL's own durable defaults and no MyISAM user table (the harness's `snap.my`
/// dropped): where `auto` takes the backup lock.
fn durable_mysql(b: &Bench) -> Result<Box<dyn Target>, String> {
    let defaults = [
        "--innodb-flush-log-at-trx-commit=1".to_string(),
        "--sync-binlog=1".to_string(),
    ];
    let server = b.flavour.start(&defaults)?;
    server
        .conn()
        .query_drop("DROP TABLE snap.my")
        .map_err(|e| format!("drop the harness's MyISAM table: {e}"))?;
    Ok(server)
}

/// MySQL with its own defaults (`innodb_flush_log_at_trx_commit = 1`, `sync_binlog = 1`, no
/// MyISAM user table: the harness's `snap.my` goes), where `lock-mode = auto` takes the backup
/// lock: the product's default against the backup-lock floor, and FTWRL (the old default) for
/// comparison; each window counts the snapshots over `SLOW` and what sysbench kept of its
/// throughput.
fn default_under_load(b: &mut Bench) -> Outcome {
    let server = durable_mysql(b)?;
    let target = server.as_ref();
    prepare(target)?;
    let control = window(b, target, Cycler::Nobody)?;
    let case = format!("{CASE}, MySQL's default settings");
    let mut notes = vec![format!("no snapshots {:.0} tps", control.tps)];
    for (mode, floor_mode) in [(Mode::Auto, Mode::BackupLock), (Mode::Ftwrl, Mode::Ftwrl)] {
        let product = window(b, target, Cycler::Product(mode))?;
        let floor = window(
            b,
            target,
            Cycler::Floor {
                mode: floor_mode,
                pre_flush: false,
            },
        )?;
        let ratio = product.latency.median() / floor.latency.median();
        let kept = product.tps / control.tps;
        let row = Row::new(
            "under load, MySQL defaults: freeze latency",
            &format!(
                "lock-mode = {} (floor: {}), {case}",
                mode.name(),
                floor_mode.name()
            ),
            "ms",
            product.latency.clone(),
        )
        .floor(floor.latency.clone());
        let row = match mode {
            Mode::Auto => row.target(
                &format!(
                    "≤ 1.5 × floor at p50 (is {ratio:.2} ×); 0 snapshots over {} s (is {} of {}); tps ≥ 90 % of no snapshots (is {:.0} %)",
                    SLOW.as_secs(),
                    product.slow,
                    product.snapshots,
                    kept * 100.0
                ),
                ratio <= 1.5 && product.slow == 0 && kept >= 0.9,
            ),
            // The old default, for comparison: its figures are in the note.
            _ => row,
        };
        b.row(row);
        notes.push(format!(
            "lock-mode = {}: product {:.0} tps ({:.0} % of no snapshots), {} errors ({}, {} over {} s); floor {} {:.0} tps ({})",
            mode.name(),
            product.tps,
            kept * 100.0,
            product.errors,
            product.cycles(),
            product.slow,
            SLOW.as_secs(),
            floor_mode.name(),
            floor.tps,
            floor.cycles()
        ));
    }
    b.report.note(format!(
        "under load, {} with its default durable settings, one snapshot a second holding {} ms: {}",
        b.flavour.name(),
        HOLD.as_millis(),
        notes.join("; ")
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
