//! The benchmark's figures, each over many runs, with the floor measured right next to every run
//! wherever a figure compares against it (alternating which goes first): freeze latency, release
//! latency, writer stall under load, the cost of a failed attempt, footprint, scaling, pre-flush.
//!
//! Every product run is checked (freeze exits 0 with the state `acquired`, thaw exits 0) and a
//! failed check stops the benchmark: a figure is never computed over runs that did not work.
//! Nothing here holds a lock itself except through the floor program.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use serde_json::json;

use crate::flavour::{Flavour, Mode, Target};
use crate::floor::Floor;
use crate::kernel::Usage;
use crate::load::WriteLoad;
use crate::product::{self, Finished, Product};
use crate::report::{Report, Row};
use crate::stats::{ms, Samples};

/// How long a "snapshot" holds the lock in the stall figures.
pub(crate) const HOLD: Duration = Duration::from_millis(100);
/// How long the writers run on after a release before their longest stall is read.
const SETTLE: Duration = Duration::from_millis(150);
/// Writer threads of the continuous write load.
pub(crate) const WRITERS: usize = 4;
/// Settings of the failed-attempt figure: small, so that one attempt takes seconds.
pub(crate) const FAILED_ATTEMPT_SETTINGS: &str =
    "lock-wait-timeout = 1\nlong-query-threshold = 1\nsnapshot-timeout = 2";
/// "No stall" for InnoDB writers in backup-stage mode: their longest statement during freeze's
/// wait stays within this much of their longest statement in an equal window without a freeze.
const NO_STALL_MS: f64 = 50.0;

pub(crate) type Outcome = Result<(), String>;

/// The context of one flavour's figures.
pub(crate) struct Bench<'a> {
    pub(crate) bin_dir: PathBuf,
    pub(crate) flavour: Flavour,
    pub(crate) runs: usize,
    pub(crate) warmup: usize,
    pub(crate) report: &'a mut Report,
}

impl Bench<'_> {
    /// (measured?, floor first?) for each iteration, warm-up runs first.
    pub(crate) fn iterations(&self) -> Vec<(bool, bool)> {
        (0..self.warmup + self.runs)
            .map(|i| (i >= self.warmup, i % 2 == 0))
            .collect()
    }

    pub(crate) fn row(&mut self, row: Row) {
        let name = self.flavour.name();
        self.report.row(name, row);
    }

    pub(crate) fn floor(
        &self,
        target: &dyn Target,
        mode: Mode,
        pre_flush: bool,
    ) -> Result<Floor, String> {
        let extra: &[&str] = if pre_flush { &["--pre-flush"] } else { &[] };
        Floor::lock(&self.bin_dir, target, self.flavour, mode, extra)
    }
}

/// True if a write from a fresh connection is blocked right now (it fails at once instead of
/// queueing behind the lock).
pub(crate) fn writes_blocked(target: &dyn Target) -> bool {
    let mut conn = target.conn();
    let _ = conn.query_drop("SET SESSION lock_wait_timeout = 0");
    matches!(
        conn.query_drop("INSERT INTO snap.inno (v) VALUES (1)"),
        Err(mysql::Error::MySqlError(e)) if e.code == 1205
    )
}

/// One product snapshot: freeze (checked), `hold`, thaw (checked), locker reaped.
pub(crate) struct Cycle {
    pub(crate) freeze: Finished,
    thaw: Finished,
    /// Freeze's exit → thaw's start.
    pub(crate) window: Duration,
    locker: Option<Usage>,
}

pub(crate) fn cycle(
    product: &Product,
    target: &dyn Target,
    mode: Mode,
    check_blocked: bool,
    hold: Duration,
) -> Result<Cycle, String> {
    let freeze = product.freeze(mode);
    let exited = Instant::now();
    if !freeze.ok() || product.status() != "acquired" {
        return Err(format!(
            "freeze --lock-mode {} did not lock (exit {:?}, state `{}`): {}",
            mode.name(),
            freeze.usage.code,
            product.status(),
            freeze.stderr.trim()
        ));
    }
    let locker = product.locker_pid();
    if check_blocked && !writes_blocked(target) {
        return Err(format!(
            "freeze --lock-mode {} exited 0 but writes are not blocked",
            mode.name()
        ));
    }
    if !hold.is_zero() {
        std::thread::sleep(hold);
    }
    let running = product::spawn(&mut product.thaw_command());
    let window = running.started - exited;
    let thaw = running.finish();
    if !thaw.ok() {
        return Err(format!(
            "thaw failed (exit {:?}): {}",
            thaw.usage.code,
            thaw.stderr.trim()
        ));
    }
    let locker = locker.and_then(|pid| product::reap_locker(pid, Duration::from_secs(5)));
    Ok(Cycle {
        freeze,
        thaw,
        window,
        locker,
    })
}

/// The floor from invocation to `locked`, then released at once.
fn floor_latency(b: &Bench, target: &dyn Target, mode: Mode) -> Result<Duration, String> {
    floor_run(b, target, mode).map(|(after, _)| after)
}

/// The floor's latency and its own split (connect, pre-flush, lock, status; µs).
fn floor_run(b: &Bench, target: &dyn Target, mode: Mode) -> Result<(Duration, [u64; 4]), String> {
    let floor = b.floor(target, mode, false)?;
    let (after, phases) = (floor.locked_after, floor.phases);
    floor.release()?;
    Ok((after, phases))
}

/// The two-process floor (`--via-child`) from invocation to `locked`, then released at once.
fn two_process_floor_latency(
    b: &Bench,
    target: &dyn Target,
    mode: Mode,
) -> Result<Duration, String> {
    let floor = Floor::lock(&b.bin_dir, target, b.flavour, mode, &["--via-child"])?;
    let after = floor.locked_after;
    floor.release()?;
    Ok(after)
}

/// Figure 1: freeze latency against the floor (and the two-process floor), thaw's run time and
/// the CPU time of each process.
pub(crate) fn latency(b: &mut Bench, target: &dyn Target) -> Outcome {
    for &mode in b.flavour.modes() {
        let product = Product::new(&b.bin_dir, target, "");
        let (mut floor, mut freeze, mut thaw) = Default::default();
        let mut two_process = Samples::default();
        let (mut floor_connect, mut floor_lock) = (Samples::default(), Samples::default());
        let (mut cpu_freeze, mut cpu_thaw, mut cpu_locker) =
            (Samples::default(), Samples::default(), Samples::default());
        let mut checked = false;
        for (measured, floor_first) in b.iterations() {
            let ((f, phases), c) = if floor_first {
                let f = floor_run(b, target, mode)?;
                (f, cycle(&product, target, mode, !checked, Duration::ZERO)?)
            } else {
                let c = cycle(&product, target, mode, !checked, Duration::ZERO)?;
                (floor_run(b, target, mode)?, c)
            };
            let two = two_process_floor_latency(b, target, mode)?;
            checked = true;
            if !measured {
                continue;
            }
            two_process.push_ms(two);
            floor_connect.push(phases[0] as f64 / 1000.0);
            floor_lock.push((phases[2] + phases[3]) as f64 / 1000.0);
            Samples::push_ms(&mut floor, f);
            Samples::push_ms(&mut freeze, c.freeze.elapsed);
            Samples::push_ms(&mut thaw, c.thaw.elapsed);
            cpu_freeze.push_ms(c.freeze.usage.cpu);
            cpu_thaw.push_ms(c.thaw.usage.cpu);
            if let Some(locker) = &c.locker {
                cpu_locker.push_ms(locker.cpu);
            }
        }
        let floor: Samples = floor;
        let freeze: Samples = freeze;
        let thaw: Samples = thaw;
        let met = freeze.median() <= 3.0 * floor.median() && freeze.median() <= 25.0;
        let ratio = freeze.median() / floor.median();
        b.row(
            Row::new("1 freeze latency", mode.name(), "ms", freeze.clone())
                .floor(floor.clone())
                .target(
                    &format!("≤ 3 × floor and ≤ 25 ms (is {ratio:.1} × floor)"),
                    met,
                ),
        );
        b.row(Row::new(
            "floor's own split: connect (handshake, in-process)",
            mode.name(),
            "ms",
            floor_connect,
        ));
        b.row(Row::new(
            "floor's own split: lock statement(s) + binlog status",
            mode.name(),
            "ms",
            floor_lock,
        ));
        b.row(Row::new(
            "two-process floor (the floor via a child that holds the lock)",
            mode.name(),
            "ms",
            two_process,
        ));
        b.row(Row::new(
            "thaw run time (invoked → exit)",
            mode.name(),
            "ms",
            thaw,
        ));
        b.row(Row::new("CPU time freeze", mode.name(), "ms", cpu_freeze));
        b.row(Row::new("CPU time locker", mode.name(), "ms", cpu_locker));
        b.row(Row::new("CPU time thaw", mode.name(), "ms", cpu_thaw));
    }
    Ok(())
}

const TIME: &str = "/usr/bin/time";

/// Runs `command` under /usr/bin/time and returns how it ended and its peak RSS in MiB.
/// /usr/bin/time forks the program from its own small process: the kernel counts the address
/// space a process had before exec into its `ru_maxrss`, so a program spawned straight from this
/// (large, multi-connection) runner would report the runner's RSS, not its own.
fn peak_rss(command: &Command, out: &Path) -> Result<(Finished, f64), String> {
    let mut wrapped = Command::new(TIME);
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(out)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args())
        .current_dir("/");
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    let finished = product::spawn(&mut wrapped).finish();
    let text = std::fs::read_to_string(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    let kib: f64 = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("no peak RSS in /usr/bin/time's output: {text}"))?;
    Ok((finished, kib / 1024.0))
}

/// The peak RSS (`VmHWM`, MiB) of running process `pid`: its own address space since exec.
fn vm_hwm(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Figure 5: peak RSS of freeze and thaw (via /usr/bin/time) and of the locker (VmHWM while it
/// holds the lock, after freeze has exited; its release path allocates next to nothing).
pub(crate) fn footprint(b: &mut Bench, target: &dyn Target) -> Outcome {
    let have_time = Path::new(TIME).is_file();
    if !have_time {
        b.report.note(format!(
            "footprint: {TIME} is missing (apt-get install -y time): freeze's and thaw's peak RSS are not measured"
        ));
    }
    let mut rows = Vec::new();
    for &mode in b.flavour.modes() {
        let product = Product::new(&b.bin_dir, target, "");
        let out = product.dir().join("time.out");
        let (mut freeze, mut locker, mut thaw) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..b.runs {
            let command = product.freeze_command(mode);
            let finished = if have_time {
                let (finished, rss) = peak_rss(&command, &out)?;
                freeze.push(rss);
                finished
            } else {
                product.freeze(mode)
            };
            if !finished.ok() || product.status() != "acquired" {
                return Err(format!("freeze did not lock: {}", finished.stderr.trim()));
            }
            let pid = product.locker_pid();
            if let Some(rss) = pid.and_then(vm_hwm) {
                locker.push(rss);
            }
            let finished = if have_time {
                let (finished, rss) = peak_rss(&product.thaw_command(), &out)?;
                thaw.push(rss);
                finished
            } else {
                product.thaw()
            };
            if !finished.ok() {
                return Err(format!("thaw failed: {}", finished.stderr.trim()));
            }
            if let Some(pid) = pid {
                product::reap_locker(pid, Duration::from_secs(5));
            }
        }
        rows.push((format!("freeze, {}", mode.name()), freeze));
        rows.push((format!("locker, {}", mode.name()), locker));
        rows.push((format!("thaw, {}", mode.name()), thaw));
    }
    for (case, rss) in rows {
        if rss.len() == 0 {
            continue;
        }
        let met = rss.median() <= 8.0;
        b.row(Row::new("5 peak RSS", &case, "MiB", rss).target("≤ 8 MiB", met));
    }
    Ok(())
}

/// A write on its own connection that the lock will block; reports when it completed.
struct BlockedWriter {
    id: u32,
    done: mpsc::Receiver<Result<Instant, String>>,
}

impl BlockedWriter {
    fn start(target: &dyn Target) -> BlockedWriter {
        let mut conn = target.conn();
        let _ = conn.query_drop("SET SESSION lock_wait_timeout = 60");
        let id = conn.connection_id();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let result = conn
                .query_drop("INSERT INTO snap.inno (v) VALUES (2)")
                .map(|()| Instant::now())
                .map_err(|e| e.to_string());
            let _ = tx.send(result);
        });
        BlockedWriter { id, done }
    }

    /// Waits until the server shows the write waiting for a lock.
    fn wait_blocked(&self, monitor: &mut Conn) -> Result<(), String> {
        let ok = harness::wait_until(Duration::from_secs(10), || {
            let state: Option<Option<String>> = monitor
                .exec_first(
                    "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                    (self.id,),
                )
                .ok()
                .flatten();
            state
                .flatten()
                .is_some_and(|s| s.starts_with("Waiting for"))
        });
        if ok {
            Ok(())
        } else {
            Err("the probe write never waited for the lock".into())
        }
    }

    fn completed(self) -> Result<Instant, String> {
        self.done
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the blocked write did not complete within 30 s".to_string())?
    }
}

/// Figure 2: thaw invoked → a writer blocked by the lock completes.
pub(crate) fn release_latency(b: &mut Bench, target: &dyn Target) -> Outcome {
    let mut monitor = target.conn();
    for &mode in b.flavour.modes() {
        let product = Product::new(&b.bin_dir, target, "");
        let (mut release, mut floor) = (Samples::default(), Samples::default());
        for (measured, floor_first) in b.iterations() {
            for floor_turn in [floor_first, !floor_first] {
                if floor_turn {
                    let mut f = b.floor(target, mode, false)?;
                    let writer = BlockedWriter::start(target);
                    writer.wait_blocked(&mut monitor)?;
                    let asked = f.ask_release();
                    let completed = writer.completed()?;
                    f.release()?;
                    if measured {
                        floor.push_ms(completed - asked);
                    }
                } else {
                    let freeze = product.freeze(mode);
                    if !freeze.ok() {
                        return Err(format!("freeze failed: {}", freeze.stderr.trim()));
                    }
                    let locker = product.locker_pid();
                    let writer = BlockedWriter::start(target);
                    writer.wait_blocked(&mut monitor)?;
                    let running = product::spawn(&mut product.thaw_command());
                    let asked = running.started;
                    let completed = writer.completed()?;
                    let thaw = running.finish();
                    if !thaw.ok() {
                        return Err(format!("thaw failed: {}", thaw.stderr.trim()));
                    }
                    if let Some(pid) = locker {
                        product::reap_locker(pid, Duration::from_secs(5));
                    }
                    if measured {
                        release.push_ms(completed - asked);
                    }
                }
            }
        }
        let met = release.median() <= 5.0;
        b.row(
            Row::new(
                "2 release latency (thaw invoked → blocked write done)",
                mode.name(),
                "ms",
                release,
            )
            .floor(floor)
            .target("≤ 5 ms", met),
        );
    }
    Ok(())
}

/// Figure 3: under a continuous write load, the longest stall any writer sees minus the snapshot
/// window (freeze's exit → thaw's start; for the floor, `locked` → release asked).
pub(crate) fn stall_under_load(b: &mut Bench, target: &dyn Target) -> Outcome {
    let load = WriteLoad::start(target, WRITERS, "snap.inno");
    std::thread::sleep(Duration::from_millis(500));
    // The writers' own noise: the longest statement in windows of the same length, no lock.
    let mut noise = Samples::default();
    for _ in 0..b.runs {
        let from = Instant::now();
        std::thread::sleep(HOLD + SETTLE + Duration::from_millis(20));
        noise.push_ms(load.longest_stall(from, Instant::now()));
    }
    b.row(Row::new(
        "3 baseline: longest write, no lock (same window length)",
        &format!("{WRITERS} writers"),
        "ms",
        noise,
    ));
    let mut details = Vec::new();
    for &mode in b.flavour.modes() {
        let product = Product::new(&b.bin_dir, target, "");
        let (mut overhead, mut floor_overhead) = (Samples::default(), Samples::default());
        let (mut stalls, mut windows) = (Samples::default(), Samples::default());
        let mut latency_under_load = Samples::default();
        for (measured, floor_first) in b.iterations() {
            for floor_turn in [floor_first, !floor_first] {
                let who = match floor_turn {
                    true => Snapshotter::Floor { pre_flush: false },
                    false => Snapshotter::Product(&product),
                };
                let s = snapshot_beside(b, target, &load, mode, who)?;
                if !measured {
                    continue;
                }
                let extra = ms(s.stall) - ms(s.window);
                if floor_turn {
                    floor_overhead.push(extra);
                } else {
                    overhead.push(extra);
                    stalls.push_ms(s.stall);
                    windows.push_ms(s.window);
                    latency_under_load.push_ms(s.latency);
                }
            }
        }
        let met = overhead.median() <= 10.0;
        details.push(json!({
            "mode": mode.name(),
            "longest_stall": stalls.to_json(),
            "window": windows.to_json(),
        }));
        b.row(
            Row::new(
                "3 writer stall overhead (longest stall − window)",
                &format!("{}, {WRITERS} writers", mode.name()),
                "ms",
                overhead,
            )
            .floor(floor_overhead)
            .target("≤ 10 ms", met),
        );
        b.row(Row::new(
            "freeze latency under that load",
            &format!("{}, {WRITERS} writers", mode.name()),
            "ms",
            latency_under_load,
        ));
    }
    b.report
        .detail(&format!("{}: stall", b.flavour.name()), json!(details));
    let errors = load.errors.load(std::sync::atomic::Ordering::Relaxed);
    if errors > 0 {
        b.report
            .note(format!("stall figure: {errors} writer statements failed"));
    }
    Ok(())
}

/// Who takes one snapshot beside a write load.
pub(crate) enum Snapshotter<'p> {
    Product(&'p Product),
    Floor { pre_flush: bool },
}

/// One snapshot beside a write load.
pub(crate) struct Beside {
    /// Invocation → the lock held (the floor's `locked`, freeze's exit).
    pub(crate) latency: Duration,
    /// The lock window the caller asked for: held → release asked.
    pub(crate) window: Duration,
    /// The writers' longest statement from the invocation to a settle after the release.
    pub(crate) stall: Duration,
}

/// One snapshot by `who` in `mode` holding `HOLD` while `load` writes; the load's record before
/// it is forgotten.
pub(crate) fn snapshot_beside(
    b: &Bench,
    target: &dyn Target,
    load: &WriteLoad,
    mode: Mode,
    who: Snapshotter,
) -> Result<Beside, String> {
    let from = Instant::now();
    let (latency, window) = match who {
        Snapshotter::Floor { pre_flush } => {
            let mut f = b.floor(target, mode, pre_flush)?;
            std::thread::sleep(HOLD);
            let asked = f.ask_release();
            let window = asked - f.locked_at;
            let latency = f.locked_after;
            f.release()?;
            (latency, window)
        }
        Snapshotter::Product(product) => {
            let c = cycle(product, target, mode, false, HOLD)?;
            (c.freeze.elapsed, c.window)
        }
    };
    std::thread::sleep(SETTLE);
    let stall = load.longest_stall(from, Instant::now());
    load.forget_before(from);
    Ok(Beside {
        latency,
        window,
        stall,
    })
}

/// A 30 s write to the MyISAM table, started in the background; killed on `stop`.
struct LongWrite {
    id: u32,
    done: mpsc::Receiver<()>,
}

impl LongWrite {
    const STATEMENT: &'static str = "UPDATE snap.my SET v=v+1 WHERE SLEEP(30)=0";

    fn start(target: &dyn Target, monitor: &mut Conn) -> Result<LongWrite, String> {
        let mut conn = target.conn();
        let id = conn.connection_id();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = conn.query_drop(LongWrite::STATEMENT);
            let _ = tx.send(());
        });
        let running = harness::wait_until(Duration::from_secs(10), || {
            let state: Option<Option<String>> = monitor
                .exec_first(
                    "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                    (id,),
                )
                .ok()
                .flatten();
            state.flatten().as_deref() == Some("User sleep")
        });
        if running {
            Ok(LongWrite { id, done })
        } else {
            Err("the 30 s write did not start".into())
        }
    }

    fn stop(self, monitor: &mut Conn) -> Result<(), String> {
        monitor
            .query_drop(format!("KILL QUERY {}", self.id))
            .map_err(|e| format!("KILL QUERY: {e}"))?;
        self.done
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the 30 s write did not end after KILL QUERY".to_string())
    }
}

/// Figure 4: with a 30 s MyISAM write in the way, the longest stall of the InnoDB writers during
/// freeze's whole (failing) wait.
pub(crate) fn failed_attempt(b: &mut Bench, target: &dyn Target) -> Outcome {
    let mut monitor = target.conn();
    let load = WriteLoad::start(target, WRITERS, "snap.inno");
    std::thread::sleep(Duration::from_millis(500));
    let mut details = Vec::new();
    for &mode in b.flavour.modes() {
        let mut product = Product::new(&b.bin_dir, target, FAILED_ATTEMPT_SETTINGS);
        let (mut stall, mut wait) = (Samples::default(), Samples::default());
        let mut noise = Samples::default();
        let (mut attempts, mut exit_zero) = (Vec::new(), 0);
        for i in 0..b.runs {
            let long = LongWrite::start(target, &mut monitor)?;
            let from = Instant::now();
            let freeze = product.freeze(mode);
            let to = Instant::now();
            stall.push_ms(load.longest_stall(from, to));
            wait.push_ms(freeze.elapsed);
            if freeze.ok() {
                exit_zero += 1;
                let locker = product.locker_pid();
                let thaw = product.thaw();
                if let Some(pid) = locker {
                    product::reap_locker(pid, Duration::from_secs(5));
                }
                if !thaw.ok() {
                    return Err(format!("thaw failed: {}", thaw.stderr.trim()));
                }
            }
            long.stop(&mut monitor)?;
            let log = product.take_log();
            attempts.push(log.iter().filter(|l| l.contains("event=timed-out")).count());
            // The writers' noise over a window of the same length without a freeze (every run
            // where "no stall" is the target, every fourth run otherwise).
            if mode == Mode::BackupStage || i % 4 == 0 {
                std::thread::sleep(Duration::from_millis(200));
                let from = Instant::now();
                std::thread::sleep(freeze.elapsed);
                noise.push_ms(load.longest_stall(from, Instant::now()));
            }
            std::thread::sleep(Duration::from_millis(200));
            load.forget_before(to);
        }
        let attempted = attempts.iter().filter(|a| **a > 0).count();
        if exit_zero > 0 {
            b.report.note(format!(
                "failed-attempt figure, {}: freeze exited 0 in {exit_zero} of {} runs behind a 30 s MyISAM write",
                mode.name(),
                b.runs
            ));
        }
        if attempted < b.runs {
            b.report.note(format!(
                "failed-attempt figure, {}: only {attempted} of {} runs made a lock attempt (event=timed-out in the log); the others waited for a quiet moment without one",
                mode.name(),
                b.runs
            ));
        }
        details.push(json!({
            "mode": mode.name(),
            "runs_with_a_timed_out_attempt": attempted,
            "timed_out_attempts_per_run": attempts,
            "freeze_exit_0": exit_zero,
        }));
        let case = format!("{}, {WRITERS} InnoDB writers", mode.name());
        b.row(Row::new("4 freeze's whole wait (fails)", &case, "ms", wait));
        let row = Row::new(
            "4 longest InnoDB writer stall during a failed attempt",
            &case,
            "ms",
            stall.clone(),
        );
        let row = match mode {
            Mode::Ftwrl | Mode::Auto => row.target(
                "≤ lock-wait-timeout (1000 ms) + 100 ms",
                stall.median() <= 1100.0,
            ),
            Mode::BackupStage | Mode::BackupLock => row.target(
                &format!(
                    "no stall: ≤ {NO_STALL_MS} ms above the no-freeze baseline ({:.1} ms)",
                    noise.median()
                ),
                stall.median() <= noise.median() + NO_STALL_MS,
            ),
        };
        b.row(row);
        b.row(Row::new(
            "4 baseline: longest write, no freeze (same window length)",
            &case,
            "ms",
            noise,
        ));
    }
    b.report.detail(
        &format!("{}: failed attempt", b.flavour.name()),
        json!({"settings": FAILED_ATTEMPT_SETTINGS, "modes": details}),
    );
    Ok(())
}

/// Opens `count` idle connections to `socket` on four threads.
fn open_idle(socket: &Path, count: usize) -> Result<Vec<Conn>, String> {
    let threads = 4;
    let mut handles = Vec::new();
    for t in 0..threads {
        let n = count / threads + usize::from(t < count % threads);
        let socket = socket.to_string_lossy().into_owned();
        handles.push(std::thread::spawn(move || -> Result<Vec<Conn>, String> {
            (0..n)
                .map(|_| {
                    Conn::new(
                        OptsBuilder::new()
                            .user(Some("root"))
                            .socket(Some(&socket))
                            .prefer_socket(false)
                            .max_allowed_packet(Some(16 * 1024 * 1024)),
                    )
                    .map_err(|e| format!("open an idle connection: {e}"))
                })
                .collect()
        }));
    }
    let mut conns = Vec::new();
    for handle in handles {
        conns.extend(handle.join().map_err(|_| "an opener thread panicked")??);
    }
    Ok(conns)
}

/// Freeze latency with the floor next to it, for each mode, on `target`.
/// Freeze latency on an idle server with `sync-filesystems = on` (what Google, AWS and Azure
/// without fsfreeze pay), against the same freeze with it off as the floor column.
pub(crate) fn sync_latency(b: &mut Bench, target: &dyn Target) -> Outcome {
    if b.flavour.in_chroot() {
        // Its datadir is a path inside the chroot: from the host, freeze rightly finds no
        // filesystem for it and refuses (a hook must run where the server's files are).
        b.report.note(format!(
            "sync figure: not run on {} (a server in a chroot reports paths the host does not have)",
            b.flavour.name()
        ));
        return Ok(());
    }
    for &mode in b.flavour.modes() {
        let off = Product::new(&b.bin_dir, target, "sync-filesystems = off");
        let on = Product::new(&b.bin_dir, target, "sync-filesystems = on");
        let (mut without, mut with) = (Samples::default(), Samples::default());
        for (measured, off_first) in b.iterations() {
            let (a, c) = if off_first {
                let a = cycle(&off, target, mode, false, Duration::ZERO)?;
                (a, cycle(&on, target, mode, false, Duration::ZERO)?)
            } else {
                let c = cycle(&on, target, mode, false, Duration::ZERO)?;
                (cycle(&off, target, mode, false, Duration::ZERO)?, c)
            };
            if measured {
                without.push_ms(a.freeze.elapsed);
                with.push_ms(c.freeze.elapsed);
            }
        }
        let extra = with.median() - without.median();
        let row = Row::new(
            "freeze latency, sync-filesystems = on (floor: off)",
            mode.name(),
            "ms",
            with,
        )
        .floor(without);
        let row = Row {
            target: format!("— (+{extra:.1} ms for the syncs)"),
            ..row
        };
        b.row(row);
    }
    Ok(())
}

/// Freeze latency (product cycles holding `hold`) and the floor's, alternating which goes first,
/// over the bench's iterations in `mode`: (freeze, floor).
fn freeze_beside_floor(
    b: &Bench,
    target: &dyn Target,
    mode: Mode,
    hold: Duration,
) -> Result<(Samples, Samples), String> {
    let product = Product::new(&b.bin_dir, target, "");
    let (mut floor, mut freeze) = (Samples::default(), Samples::default());
    for (measured, floor_first) in b.iterations() {
        let (f, c) = if floor_first {
            let f = floor_latency(b, target, mode)?;
            (f, cycle(&product, target, mode, false, hold)?)
        } else {
            let c = cycle(&product, target, mode, false, hold)?;
            (floor_latency(b, target, mode)?, c)
        };
        if measured {
            floor.push_ms(f);
            freeze.push_ms(c.freeze.elapsed);
        }
    }
    Ok((freeze, floor))
}

fn latency_rows(b: &mut Bench, target: &dyn Target, figure: &str, case: &str) -> Outcome {
    for &mode in b.flavour.modes() {
        let (freeze, floor) = freeze_beside_floor(b, target, mode, Duration::ZERO)?;
        let ratio = freeze.median() / floor.median();
        let row = Row::new(figure, &format!("{case}, {}", mode.name()), "ms", freeze).floor(floor);
        let row = Row {
            target: format!("— ({ratio:.1} × floor)"),
            ..row
        };
        b.row(row);
    }
    Ok(())
}

/// The quiet-moment check freeze's locker runs (`SHOW FULL PROCESSLIST`, filtered in the client:
/// `common::processlist::long_statements` with the default settings), and for comparison the same
/// filter as a query on `information_schema.PROCESSLIST` (what the product ran before), timed from
/// a client.
const SCHEMA_QUERY: &str = "SELECT ID, USER, COMMAND, TIME, LEFT(INFO, 200) FROM information_schema.PROCESSLIST \
     WHERE ID <> CONNECTION_ID() AND INFO IS NOT NULL AND TIME >= 10 \
     AND USER NOT IN ('system user', 'event_scheduler') \
     AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Connect', 'Delayed insert', '') \
     ORDER BY TIME DESC LIMIT 100";

fn processlist_costs(b: &mut Bench, conn: &mut Conn, idle: usize) -> Outcome {
    let ignore = common::Config::defaults(std::path::PathBuf::new()).ignore_commands;
    let (mut quiet, mut schema) = (Samples::default(), Samples::default());
    for i in 0..b.warmup + b.runs {
        let at = Instant::now();
        common::processlist::long_statements(conn, 10, &ignore)
            .map_err(|e| format!("quiet-moment check: {e}"))?;
        let quiet_took = at.elapsed();
        let at = Instant::now();
        let _: Vec<mysql::Row> = conn
            .query(SCHEMA_QUERY)
            .map_err(|e| format!("information_schema query: {e}"))?;
        if i >= b.warmup {
            quiet.push_ms(quiet_took);
            schema.push_ms(at.elapsed());
        }
    }
    let case = format!("{idle} idle connections");
    b.row(Row::new(
        "6 quiet-moment check (SHOW FULL PROCESSLIST, filtered client-side; 1 round trip)",
        &case,
        "ms",
        quiet,
    ));
    b.row(Row::new(
        "6 for comparison: the same filter on information_schema.PROCESSLIST",
        &case,
        "ms",
        schema,
    ));
    Ok(())
}

/// Figure 6: freeze latency with 100, 1,000 and 5,000 idle connections, and with 50 writers.
pub(crate) fn scaling(b: &mut Bench, main: &dyn Target, levels: &[usize]) -> Outcome {
    let most = levels.iter().copied().max().unwrap_or(0);
    let args = b
        .flavour
        .many_connections_args(u32::try_from(most + 200).unwrap_or(u32::MAX));
    let server = b.flavour.start(&args)?;
    let log = server.error_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[Warning]") && (l.contains("open") || l.contains("connection")))
        .collect();
    if !warnings.is_empty() {
        b.report
            .note(format!("scaling server warnings: {}", warnings.join(" / ")));
    }
    let mut monitor = server.conn();
    let mut idle: Vec<Conn> = Vec::new();
    for &level in levels {
        if idle.len() < level {
            let at = Instant::now();
            match open_idle(&server.socket(), level - idle.len()) {
                Ok(more) => idle.extend(more),
                Err(e) => {
                    b.report.note(format!(
                        "scaling: could not open {level} idle connections ({e}); stopped at {}",
                        idle.len()
                    ));
                    break;
                }
            }
            eprintln!(
                "  opened {} idle connections in {:.1} s",
                idle.len(),
                at.elapsed().as_secs_f64()
            );
        }
        let threads: Option<u64> = monitor
            .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST")
            .ok()
            .flatten();
        b.report.detail(
            &format!("{}: processlist rows at {level}", b.flavour.name()),
            json!(threads),
        );
        processlist_costs(b, &mut monitor, level)?;
        latency_rows(
            b,
            server.as_ref(),
            "6 freeze latency",
            &format!("{level} idle connections"),
        )?;
        if level == most && level > 0 {
            crate::profile::profile(b, server.as_ref(), &format!(", {level} idle connections"))?;
        }
    }
    drop(idle);
    drop(server);
    let load = WriteLoad::start(main, 50, "snap.inno");
    std::thread::sleep(Duration::from_millis(500));
    latency_rows(b, main, "6 freeze latency", "50 concurrent writers")?;
    drop(load);
    Ok(())
}

/// Pre-flush: does `FLUSH NO_WRITE_TO_BINLOG TABLES` before FTWRL shorten the time writes are
/// blocked? Measured with the floor (FTWRL only), with few and with many open tables.
pub(crate) fn pre_flush(b: &mut Bench, target: &dyn Target, many_tables: usize) -> Outcome {
    let mut setup = target.conn();
    setup
        .query_drop("CREATE DATABASE IF NOT EXISTS snapbench")
        .map_err(|e| e.to_string())?;
    let mut tables = Vec::new();
    for i in 0..many_tables {
        let engine = if i % 2 == 0 { "MyISAM" } else { "InnoDB" };
        let name = format!("snapbench.t{i}");
        setup
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {name} (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE={engine}"
            ))
            .map_err(|e| e.to_string())?;
        tables.push(name);
    }
    let load = WriteLoad::start(target, WRITERS, "snap.inno");
    std::thread::sleep(Duration::from_millis(500));
    let scenarios = [
        ("2 tables open".to_string(), 0usize),
        (
            format!("{many_tables} tables open and written (half MyISAM)"),
            many_tables,
        ),
    ];
    let mut details = Vec::new();
    for (scenario, count) in scenarios {
        let mut by_variant: [(Samples, Samples, Samples, Samples); 2] = Default::default();
        for (measured, first_off) in b.iterations() {
            let order = if first_off {
                [false, true]
            } else {
                [true, false]
            };
            for pre in order {
                for table in tables.iter().take(count) {
                    setup
                        .query_drop(format!("INSERT INTO {table} (v) VALUES (1)"))
                        .map_err(|e| e.to_string())?;
                }
                let from = Instant::now();
                let mut f = b.floor(target, Mode::Ftwrl, pre)?;
                std::thread::sleep(HOLD);
                let asked = f.ask_release();
                let window = asked - f.locked_at;
                let (latency, phases) = (f.locked_after, f.phases);
                f.release()?;
                std::thread::sleep(SETTLE);
                let stall = load.longest_stall(from, Instant::now());
                load.forget_before(from);
                if measured {
                    let v = &mut by_variant[usize::from(pre)];
                    v.0.push(ms(stall) - ms(window));
                    v.1.push(phases[2] as f64 / 1000.0);
                    v.2.push(phases[1] as f64 / 1000.0);
                    v.3.push_ms(latency);
                }
            }
        }
        for (pre, (overhead, ftwrl, flush, latency)) in by_variant.into_iter().enumerate() {
            let case = format!(
                "{scenario}, pre-flush {}",
                if pre == 1 { "on" } else { "off" }
            );
            details.push(json!({
                "case": case,
                "ftwrl_statement_ms": ftwrl.to_json(),
                "pre_flush_statement_ms": flush.to_json(),
                "floor_latency_ms": latency.to_json(),
            }));
            b.row(Row::new(
                "pre-flush: writer stall overhead (floor, FTWRL)",
                &case,
                "ms",
                overhead,
            ));
            b.row(Row::new("pre-flush: FTWRL statement", &case, "ms", ftwrl));
            if pre == 1 {
                b.row(Row::new(
                    "pre-flush: FLUSH NO_WRITE_TO_BINLOG TABLES statement",
                    &case,
                    "ms",
                    flush,
                ));
            }
            b.row(Row::new(
                "pre-flush: floor latency to locked",
                &case,
                "ms",
                latency,
            ));
        }
    }
    b.report
        .detail(&format!("{}: pre-flush", b.flavour.name()), json!(details));
    for table in &tables {
        let _ = setup.query_drop(format!("DROP TABLE IF EXISTS {table}"));
    }
    Ok(())
}

/// The long read of the backup-lock figure: FTWRL waits for it, the backup lock must not.
const LONG_SELECT: &str = "SELECT SLEEP(600) FROM snap.one";
/// Settings of the backup-lock figure's FTWRL side: the defaults but a short `snapshot-timeout`,
/// so that each refused freeze costs seconds, not ten minutes.
const FTWRL_BESIDE_SETTINGS: &str = "snapshot-timeout = 10";
/// FTWRL runs in the backup-lock figure: each is a refusal after `snapshot-timeout`.
const FTWRL_BESIDE_RUNS: usize = 3;

/// Starts `LONG_SELECT` on a connection of its own; its connection id once the processlist shows
/// it, and the receiver that hears when it returns.
fn start_long_select(
    target: &dyn Target,
    monitor: &mut Conn,
) -> Result<(u32, mpsc::Receiver<String>), String> {
    let mut conn = target.conn();
    let id = conn.connection_id();
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let result = conn.query_drop(LONG_SELECT);
        let _ = tx.send(result.map_or_else(|e| e.to_string(), |()| "returned".into()));
    });
    let running = harness::wait_until(Duration::from_secs(10), || {
        monitor
            .exec_first::<u32, _, _>(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO LIKE 'SELECT SLEEP%'",
                (id,),
            )
            .ok()
            .flatten()
            .is_some()
    });
    match running {
        true => Ok((id, done)),
        false => Err("the long SELECT did not start".into()),
    }
}

/// The backup-lock figure (MySQL only): on a durable, all-InnoDB MySQL with 4 InnoDB writers and
/// a long SELECT started right before each freeze, `lock-mode = backup-lock` beside
/// `lock-mode = ftwrl` (default settings, `snapshot-timeout = 10`): freeze latency, the writers'
/// longest stall during freeze and hold, whether the SELECT survived.
pub(crate) fn backup_lock(b: &mut Bench, _target: &dyn Target) -> Outcome {
    if !b.flavour.is_mysql() {
        return Ok(()); // MariaDB: no backup lock (BACKUP STAGE is its light lock).
    }
    let durable = [
        "--innodb-flush-log-at-trx-commit=1".to_string(),
        "--sync-binlog=1".to_string(),
    ];
    let server = b.flavour.start(&durable)?;
    let target = server.as_ref();
    let mut monitor = target.conn();
    monitor
        .query_drop("DROP TABLE snap.my; CREATE TABLE snap.one (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO snap.one VALUES (1)")
        .map_err(|e| format!("preparing the all-InnoDB server: {e}"))?;
    let load = WriteLoad::start(target, WRITERS, "snap.inno");
    std::thread::sleep(Duration::from_millis(500));
    let mut noise = Samples::default();
    for _ in 0..b.runs {
        let from = Instant::now();
        std::thread::sleep(HOLD + SETTLE);
        noise.push_ms(load.longest_stall(from, Instant::now()));
    }
    let case = format!("{WRITERS} InnoDB writers + a long SELECT");
    b.row(Row::new(
        "backup-lock baseline: longest write, no lock (same window length)",
        &case,
        "ms",
        noise.clone(),
    ));
    let mut details = Vec::new();
    for (mode, settings, runs) in [
        ("backup-lock", "", b.runs),
        (
            "ftwrl",
            FTWRL_BESIDE_SETTINGS,
            FTWRL_BESIDE_RUNS.min(b.runs),
        ),
    ] {
        let product = Product::new(&b.bin_dir, target, settings);
        let (mut latency, mut stall) = (Samples::default(), Samples::default());
        let (mut held, mut survived) = (0, 0);
        for _ in 0..runs {
            let (id, done) = start_long_select(target, &mut monitor)?;
            let from = Instant::now();
            let mut freeze = product.command("freeze");
            freeze.args(["freeze", "--lock-mode", mode]);
            let freeze = product::spawn(&mut freeze).finish();
            latency.push_ms(freeze.elapsed);
            if freeze.ok() {
                held += 1;
                std::thread::sleep(HOLD);
                let locker = product.locker_pid();
                let thaw = product.thaw();
                if let Some(pid) = locker {
                    product::reap_locker(pid, Duration::from_secs(5));
                }
                if !thaw.ok() {
                    return Err(format!("{mode}: thaw failed: {}", thaw.stderr.trim()));
                }
            }
            std::thread::sleep(SETTLE);
            stall.push_ms(load.longest_stall(from, Instant::now()));
            if done.try_recv().is_err() {
                survived += 1;
            }
            monitor
                .query_drop(format!("KILL QUERY {id}"))
                .map_err(|e| format!("KILL QUERY: {e}"))?;
            let _ = done.recv_timeout(Duration::from_secs(10));
            load.forget_before(from);
        }
        b.report.note(format!(
            "backup-lock figure, {mode}: freeze held the lock in {held} of {runs} runs; the long SELECT survived {survived} of {runs}"
        ));
        details.push(json!({"mode": mode, "settings": settings, "runs": runs, "locked": held, "select_survived": survived}));
        let row = Row::new(
            "backup-lock: freeze latency beside FTWRL",
            &format!("{mode}, {case}"),
            "ms",
            latency.clone(),
        );
        let row = match mode {
            "backup-lock" => row.target(
                "≤ 100 ms, lock held every run",
                latency.median() <= 100.0 && held == runs,
            ),
            _ => row.target("— (refused after snapshot-timeout)", held == 0),
        };
        b.row(row);
        b.row(Row::new(
            "backup-lock: longest writer stall, freeze to release",
            &format!("{mode}, {case}"),
            "ms",
            stall,
        ));
    }
    b.report.detail(
        &format!("{}: backup-lock beside ftwrl", b.flavour.name()),
        json!(details),
    );
    Ok(())
}
