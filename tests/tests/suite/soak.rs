//! The soak: many freeze/thaw cycles against a private MariaDB under a concurrent write load, with
//! random lock modes, random snapshot durations (0–2 s) and a random fault in about 10 % of
//! cycles. After every cycle it checks that no lock and no locker is left, that a freeze that
//! exited 0 really held the lock until thaw (no commit between freeze's exit and thaw's start),
//! and that writers met no error other than the documented ones.
//!
//! CI runs 60 cycles; `soak/run.sh` runs 500 (`SOAK_CYCLES`, `SOAK_SEED`, `SOAK_SYSBENCH=1` to add
//! Debian's `sysbench oltp_write_only` to the load). It prints one summary line and fails on any
//! leaked lock, orphan locker, false success, undocumented writer error or unexpected exit code.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::process::Identity;
use harness::{alive, bin, text, wait_until, write_private, Sandbox, Server};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

/// xorshift64*: a reproducible sequence from `SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The faults a cycle may carry (about one cycle in ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL to the locker while it holds: thaw must report the loss.
    KillLocker,
    /// SIGSTOP to the locker: thaw must still release (by killing its connection).
    StopLocker,
    /// max-lock-time (1 s) passes before thaw: thaw must report the loss.
    MaxLockTime,
    /// The server restarts while the lock is held: thaw must report the loss.
    RestartServer,
    /// SIGTERM to freeze at a random moment: exit 0 only with the lock held, else nothing left.
    SigtermFreeze,
    /// Two freezes at once: exactly one succeeds.
    RacingFreezes,
    /// thaw twice: the second has nothing to do.
    DoubleThaw,
    /// freezeFail instead of thaw: release and exit 0.
    FreezeFail,
    /// A crashed run's leftovers: a state file naming a live bystander with another start time.
    StaleState,
}

const FAULTS: [Fault; 9] = [
    Fault::KillLocker,
    Fault::StopLocker,
    Fault::MaxLockTime,
    Fault::RestartServer,
    Fault::SigtermFreeze,
    Fault::RacingFreezes,
    Fault::DoubleThaw,
    Fault::FreezeFail,
    Fault::StaleState,
];

impl Fault {
    /// Whether the fault ends the lock before thaw (thaw must then exit 1).
    fn breaks_the_lock(self) -> bool {
        matches!(
            self,
            Fault::KillLocker | Fault::MaxLockTime | Fault::RestartServer
        )
    }
}

#[derive(Default, Debug)]
struct Totals {
    cycles: u64,
    successes: u64,
    refused: u64,
    faults: u64,
    leaked_locks: u64,
    orphan_lockers: u64,
    false_successes: u64,
    writer_errors: u64,
    unexpected: u64,
    commits: u64,
}

/// A connection error a writer may meet while the server restarts (documented in FAULTS.md).
fn connection_lost(err: &mysql::Error) -> bool {
    match err {
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) | mysql::Error::DriverError(_) => {
            true
        }
        mysql::Error::MySqlError(e) => matches!(e.code, 1053 | 1927 | 2006 | 2013 | 4031),
        _ => false,
    }
}

fn connect(socket: &Path) -> Result<Conn, mysql::Error> {
    Conn::new(
        OptsBuilder::new()
            .user(Some("root"))
            .socket(Some(socket.to_string_lossy().into_owned()))
            .read_timeout(Some(Duration::from_secs(120))),
    )
}

/// Writer threads: InnoDB inserts, multi-statement transactions and MyISAM updates.
struct Load {
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(socket: &Path, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..writers)
            .map(|n| {
                let (stop, restarts, commits, errors) = (
                    stop.clone(),
                    restarts.clone(),
                    commits.clone(),
                    errors.clone(),
                );
                let socket = socket.to_path_buf();
                thread::spawn(move || {
                    let mut conn = connect(&socket).unwrap();
                    let mut seen = restarts.load(Ordering::SeqCst);
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let result = match (n + i as usize) % 4 {
                            0 | 1 => conn.query_drop(format!(
                                "INSERT INTO snap.inno (v) VALUES ({})",
                                i % 1000
                            )),
                            2 => conn.query_drop(
                                "START TRANSACTION; INSERT INTO snap.inno (v) VALUES (2); \
                                 UPDATE snap.inno SET v = v + 1 WHERE id = 1; COMMIT",
                            ),
                            _ => conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE id = 1"),
                        };
                        match result {
                            Ok(()) => {
                                commits.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e)
                                if connection_lost(&e)
                                    && restarts.load(Ordering::SeqCst) != seen =>
                            {
                                // Documented: a server restart drops every connection.
                                let back = wait_until(Duration::from_secs(120), || {
                                    match connect(&socket) {
                                        Ok(c) => {
                                            conn = c;
                                            true
                                        }
                                        Err(_) => {
                                            thread::sleep(Duration::from_millis(50));
                                            false
                                        }
                                    }
                                });
                                if !back {
                                    errors
                                        .lock()
                                        .unwrap()
                                        .push("cannot reconnect after a restart".into());
                                    return;
                                }
                                seen = restarts.load(Ordering::SeqCst);
                            }
                            Err(e) => {
                                errors.lock().unwrap().push(format!("writer {n}: {e}"));
                                match connect(&socket) {
                                    Ok(c) => conn = c,
                                    Err(_) => thread::sleep(Duration::from_millis(100)),
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            restarts,
            commits,
            errors,
            threads,
        }
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.commits.load(Ordering::SeqCst), errors)
    }
}

/// Debian's sysbench as an extra load (SOAK_SYSBENCH=1); killed by its PID on drop.
struct Sysbench(Option<Child>, PathBuf);

impl Sysbench {
    fn start(server: &Server) -> Sysbench {
        if std::env::var("SOAK_SYSBENCH").as_deref() != Ok("1") {
            return Sysbench(None, PathBuf::new());
        }
        server
            .conn()
            .query_drop("CREATE DATABASE IF NOT EXISTS sbtest")
            .unwrap();
        let args = |phase: &str| {
            let mut c = Command::new("sysbench");
            c.arg("oltp_write_only")
                .arg(format!("--mysql-socket={}", server.socket.display()))
                .args([
                    "--mysql-user=root",
                    "--mysql-db=sbtest",
                    "--tables=2",
                    "--table-size=2000",
                    "--threads=2",
                    "--time=0",
                    "--events=0",
                    "--mysql-ignore-errors=1213,2006,2013,1053,1927",
                    phase,
                ])
                .stdin(Stdio::null());
            c
        };
        let out = args("prepare").output().unwrap_or_else(|e| {
            panic!("SOAK_SYSBENCH=1 but sysbench cannot run ({e}): apt-get install -y sysbench")
        });
        assert!(out.status.success(), "sysbench prepare: {}", text(&out));
        let log = server.dir.path().join("sysbench.log");
        let child = args("run")
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Sysbench(Some(child), log)
    }

    /// An early exit of sysbench is a writer error.
    fn check(&mut self) -> Option<String> {
        let child = self.0.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "sysbench exited {status}: {}",
                fs::read_to_string(&self.1).unwrap_or_default()
            )),
            _ => None,
        }
    }
}

impl Drop for Sysbench {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the database looks like from a separate connection: binlog position, InnoDB rows, and
/// the MyISAM counter. Any commit changes it.
fn fingerprint(server: &Server) -> (String, u64, u64, u64) {
    let mut conn = server.conn();
    let binlog: mysql::Row = conn.query_first("SHOW BINLOG STATUS").unwrap().unwrap();
    let file: String = binlog.get("File").unwrap();
    let position: u64 = binlog.get("Position").unwrap();
    let (rows, max): (u64, Option<u64>) = conn
        .query_first("SELECT COUNT(*), MAX(id) FROM snap.inno")
        .unwrap()
        .unwrap();
    let my: Option<u64> = conn
        .query_first("SELECT v FROM snap.my WHERE id = 1")
        .unwrap();
    (
        format!("{file}:{position}"),
        rows,
        max.unwrap_or(0),
        my.unwrap_or(0),
    )
}

/// Stops a locker for good (cleanup after a finding, so the soak can go on).
fn kill_process(pid: u32) {
    if let Some(identity) = Identity::of(pid) {
        identity.signal(libc::SIGCONT);
        identity.signal(libc::SIGKILL);
    }
}

/// Counts (and clears) what a finished step left behind: lockers of this installation, or a lock
/// still held. `after` names the step in the note.
fn count_leftovers(
    configs: &[&Path],
    server: &Server,
    totals: &mut Totals,
    note: &mut impl FnMut(String),
    after: &str,
) {
    if !wait_until(Duration::from_secs(5), || {
        harness::lockers_for(configs).is_empty()
    }) {
        totals.orphan_lockers += 1;
        let left = harness::lockers_for(configs);
        note(format!("lockers left {after}: {left:?}"));
        left.into_iter().for_each(kill_process);
    }
    if !wait_until(Duration::from_secs(5), || !server.writes_blocked()) {
        totals.leaked_locks += 1;
        note(format!("the lock is still held {after}"));
    }
}

fn run(command: &mut Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.output().unwrap()
}

fn soak(cycles: u64, seed: u64) -> Totals {
    let mut server = Server::start();
    let sandbox = Sandbox::new(&server, "long-query-threshold = 5\nsnapshot-timeout = 30");
    // The same installation with a short max-lock-time, for the MaxLockTime fault.
    let short = sandbox.dir.path().join("short.cnf");
    write_private(
        &short,
        &format!(
            "{}\nmax-lock-time = 1\n",
            fs::read_to_string(&sandbox.config).unwrap()
        ),
    );
    let configs = [sandbox.config.as_path(), short.as_path()];
    let mut sysbench = Sysbench::start(&server);
    let load = Load::start(&server.socket, 4);
    let mut rng = Rng(seed.max(1));
    let mut totals = Totals::default();
    let mut notes: Vec<String> = Vec::new();
    let soak_started = Instant::now();

    for cycle in 1..=cycles {
        totals.cycles += 1;
        let mode = if rng.below(2) == 0 {
            "ftwrl"
        } else {
            "backup-stage"
        };
        let mut duration = Duration::from_millis(rng.below(2001));
        let mut fault =
            (rng.below(10) == 0).then(|| FAULTS[rng.below(FAULTS.len() as u64) as usize]);
        if fault == Some(Fault::RestartServer) && sysbench.0.is_some() {
            // sysbench does not reconnect after a restart: keep that fault to our own loader.
            fault = Some(Fault::KillLocker);
        }
        if fault.is_some() {
            totals.faults += 1;
        }
        let mut note =
            |what: String| notes.push(format!("cycle {cycle} ({mode}, {fault:?}): {what}"));
        let freeze_cmd = |config: &Path| {
            let mut c = sandbox.command("freeze");
            c.arg("freeze")
                .arg("--config")
                .arg(config)
                .arg("--lock-mode")
                .arg(mode);
            c
        };
        let thaw_cmd = |phase: &str| {
            let mut c = sandbox.command("thaw");
            c.arg(phase);
            c
        };

        // Before freeze: leftovers of a crashed run.
        let mut bystander = None;
        if fault == Some(Fault::StaleState) {
            let child = Command::new("sleep").arg("60").spawn().unwrap();
            let real = Identity::of(child.id()).unwrap();
            let fake = Identity {
                start_time: real.start_time + 1,
                ..real
            };
            let state = serde_json::json!({
                "format": 1, "status": "acquired", "freeze": fake, "locker": fake,
                "connection_id": 1, "user": "root", "attempt": 1,
                "started_at_ms": 1_700_000_000_000u64, "acquired_at_ms": 1_700_000_000_100u64,
                "updated_at": "2023-11-14T22:13:20.100Z",
            });
            write_private(&sandbox.run_dir.join("state.json"), &state.to_string());
            bystander = Some(child);
        }

        // freeze.
        let config: &Path = if fault == Some(Fault::MaxLockTime) {
            duration = Duration::from_millis(1500 + rng.below(1000));
            &short
        } else {
            &sandbox.config
        };
        let freeze_ok = match fault {
            Some(Fault::RacingFreezes) => {
                let a = freeze_cmd(config)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let b = freeze_cmd(config)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
                let winners = [&a, &b].iter().filter(|o| o.status.success()).count();
                if winners > 1 || harness::lockers_for(&configs).len() > 1 {
                    totals.false_successes += 1;
                    note(format!(
                        "two freezes succeeded:\n{}\n{}",
                        text(&a),
                        text(&b)
                    ));
                }
                winners >= 1
            }
            Some(Fault::SigtermFreeze) => {
                let mut child = freeze_cmd(config)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                thread::sleep(Duration::from_millis(rng.below(60)));
                if let Some(me) = Identity::of(child.id()) {
                    me.signal(libc::SIGTERM);
                }
                child.wait().unwrap().success()
            }
            _ => {
                let out = run(&mut freeze_cmd(config));
                if !out.status.success() {
                    note(format!("freeze refused: {}", text(&out)));
                }
                out.status.success()
            }
        };

        let before = if freeze_ok {
            totals.successes += 1;
            let at_exit = fingerprint(&server);
            // The coordinates were read under the lock: nothing may have committed since.
            let info: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&sandbox.info_file).unwrap()).unwrap();
            let recorded = format!(
                "{}:{}",
                info["binlog"]["file"].as_str().unwrap_or(""),
                info["binlog"]["position"].as_u64().unwrap_or(0)
            );
            if recorded != at_exit.0 {
                totals.false_successes += 1;
                note(format!(
                    "binlog moved between the lock ({recorded}) and freeze's exit ({})",
                    at_exit.0
                ));
            }
            Some(at_exit)
        } else {
            totals.refused += 1;
            // A refused freeze leaves nothing behind, before any thaw.
            count_leftovers(
                &configs,
                &server,
                &mut totals,
                &mut note,
                "after a refused freeze",
            );
            None
        };

        // The snapshot window, with the faults that strike while the lock is held.
        let mut stopped = None;
        if freeze_ok {
            let locker = sandbox.locker_pid();
            match fault {
                Some(Fault::KillLocker) => {
                    if let Some(l) = locker.and_then(Identity::of) {
                        l.signal(libc::SIGKILL);
                    }
                }
                Some(Fault::StopLocker) => {
                    if let Some(l) = locker.and_then(Identity::of) {
                        l.signal(libc::SIGSTOP);
                        stopped = Some(l);
                    }
                }
                Some(Fault::RestartServer) => {
                    load.restarts.fetch_add(1, Ordering::SeqCst);
                    server.restart();
                }
                _ => {}
            }
        }
        thread::sleep(duration);
        let at_thaw = freeze_ok.then(|| fingerprint(&server));

        // Whether a lock was ever recorded for this cycle's freeze: after a failed freeze, thaw
        // has something to report (a lock held, then lost) only then.
        let ever_locked = sandbox
            .state()
            .is_some_and(|state| state["acquired_at_ms"].is_u64());

        // thaw.
        let thaw = match fault {
            Some(Fault::FreezeFail) => run(&mut thaw_cmd("freezeFail")),
            _ => run(&mut thaw_cmd("thaw")),
        };
        let thaw_ok = thaw.status.success();
        if fault == Some(Fault::DoubleThaw) {
            let again = run(&mut thaw_cmd("thaw"));
            if !again.status.success() {
                totals.unexpected += 1;
                note(format!("a second thaw failed: {}", text(&again)));
            }
        }
        if let Some(l) = stopped {
            l.signal(libc::SIGCONT);
            l.signal(libc::SIGKILL);
        }

        // The verdicts.
        let broke = fault.is_some_and(Fault::breaks_the_lock);
        if let (Some(before), Some(at_thaw)) = (&before, &at_thaw) {
            if !broke && before != at_thaw {
                totals.false_successes += 1;
                note(format!(
                    "a commit happened while frozen: {before:?} -> {at_thaw:?}"
                ));
            }
        }
        let thaw_expected_ok = match fault {
            Some(Fault::FreezeFail) => true,
            _ if !freeze_ok => !ever_locked,
            Some(f) if f.breaks_the_lock() => false,
            _ => true,
        };
        if thaw_ok && !thaw_expected_ok && freeze_ok {
            totals.false_successes += 1;
            note(format!("thaw called a broken lock held: {}", text(&thaw)));
        } else if thaw_ok != thaw_expected_ok {
            totals.unexpected += 1;
            note(format!(
                "thaw exited {:?}: {}",
                thaw.status.code(),
                text(&thaw)
            ));
        }
        count_leftovers(&configs, &server, &mut totals, &mut note, "after thaw");
        if let Some(mut child) = bystander {
            if !alive(child.id()) {
                totals.false_successes += 1;
                note("a bystander named in a stale state file was signalled".into());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(why) = sysbench.check() {
            totals.writer_errors += 1;
            note(why);
            sysbench.0 = None;
        }
        if cycle.is_multiple_of(50) {
            eprintln!(
                "soak: {cycle}/{cycles} cycles in {:?}; {totals:?}",
                soak_started.elapsed()
            );
        }
    }
    let (commits, errors) = load.finish();
    totals.commits = commits;
    totals.writer_errors += errors.len() as u64;
    for n in notes.iter().chain(errors.iter()) {
        eprintln!("soak: {n}");
    }
    totals
}

#[test]
fn freeze_and_thaw_keep_their_promises_over_many_cycles_under_load() {
    harness::heavy(); // four writers and a restarted server for minutes: alone
    let cycles = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x50A4);
    let _ = bin("freeze"); // fails loudly if the binaries are not built
    let started = Instant::now();
    let t = soak(cycles, seed);
    let line = format!(
        "soak summary: cycles={} successes={} refused={} faults={} leaked_locks={} orphan_lockers={} false_successes={} writer_errors={} unexpected={} commits={} seed={seed} took={}s",
        t.cycles,
        t.successes,
        t.refused,
        t.faults,
        t.leaked_locks,
        t.orphan_lockers,
        t.false_successes,
        t.writer_errors,
        t.unexpected,
        t.commits,
        started.elapsed().as_secs()
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("SOAK_SUMMARY") {
        let _ = fs::write(path, format!("{line}\n"));
    }
    assert_eq!(t.leaked_locks, 0, "{line}");
    assert_eq!(t.orphan_lockers, 0, "{line}");
    assert_eq!(t.false_successes, 0, "{line}");
    assert_eq!(t.writer_errors, 0, "{line}");
    assert_eq!(t.unexpected, 0, "{line}");
    assert!(t.commits > t.cycles, "the load made no progress: {line}");
    assert!(
        t.successes * 10 >= t.cycles * 8,
        "fewer than 80 % of freezes succeeded: {line}"
    );
}
