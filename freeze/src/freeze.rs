//! The freeze sequence: start the locker and hand it the settings resolved once (its plan), claim
//! the run, tell the locker to go, learn that it holds the lock, check that, exit 0.
//!
//! freeze supervises; the locker does the talking to the server (privileges, the quiet moment,
//! the lock, the coordinates, the info file). freeze opens a connection of its own only to kill
//! statements that hold up an attempt (`kill-long-queries`) or to interrupt a stuck locker.
//!
//! freeze exits 0 only while the lock is verifiably held: the state file says `acquired` (which
//! the locker writes only after its connection answered once the info file was on disk), and the
//! locker is alive and is the one freeze started. Every other way out (timeout, signal, bad input,
//! an unwritable info file) stops the locker and leaves no lock behind. A timed-out attempt goes
//! back to waiting for a quiet moment; nothing waits without a deadline.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use argh::FromArgs;
use common::cli::{self, Failure};
use common::config::{KillLongQueries, SyncFilesystems};
use common::coordinates::Coordinates;
use common::error::{Lost, NoLock};
use common::info_file;
use common::lock::LockMode;
use common::metrics::{self, Outcome, Update};
use common::phase::Phase;
use common::process::Identity;
use common::protocol::{self, Order, Report};
use common::quiet::QuietWindow;
use common::server::{self, Session};
use common::state::{Found, State, StateFile, Status};
use common::{plan, processlist, time, Config, Error, Result};
use mysql::prelude::Queryable;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// How often freeze looks at the locker process while it waits for its word.
const LOCKER_POLL: Duration = Duration::from_millis(100);

#[derive(FromArgs)]
/// Takes a verified database lock before a VM snapshot (phase argument: `freeze` or none).
struct Args {
    /// the phase the hypervisor passes (`freeze`; extra or empty arguments are ignored); with
    /// --run, the command and its arguments, after `--`
    #[argh(positional)]
    phase: Vec<String>,
    /// config file (default: $MYSQL_SNAPSHOT_CONFIG, else /etc/mysql-snapshot.cnf)
    #[argh(option)]
    config: Option<PathBuf>,
    /// lock mode for this run: auto, ftwrl, backup-stage or backup-lock (overrides the config)
    #[argh(option)]
    lock_mode: Option<String>,
    /// the caller does not freeze the filesystems (Google, AWS DLM, Azure without
    /// fsFreezeEnabled): sync every filesystem holding server files once the lock is held,
    /// unless the config says sync-filesystems = off
    #[argh(switch)]
    sync_filesystems: bool,
    /// seconds this freeze may take at most (the caller's own limit; the lower of this and the
    /// config's snapshot-timeout applies)
    #[argh(option)]
    snapshot_timeout: Option<u64>,
    /// who calls and what it passed, written into the log (free text, one line)
    #[argh(option)]
    caller: Option<String>,
    /// rehearse instead of freezing: check connection, privileges, directories and hooks, then
    /// take and release the lock once; exit 0 only if a real freeze would work
    #[argh(switch)]
    check: bool,
    /// with --check: print the report as JSON
    #[argh(switch)]
    json: bool,
    /// run the command after `--` while the lock is held, then release it as thaw does; the exit
    /// status tells the command's failure from a lock that did not hold (see the man page)
    #[argh(switch)]
    run: bool,
    /// with --run: FIFREEZE this mount point once the lock is held and FITHAW it after the
    /// command (repeat for several); for snapshot tools that do not freeze filesystems themselves
    #[argh(option)]
    fsfreeze: Vec<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl cli::Program for Args {
    const NAME: &'static str = "freeze";
    fn wants_version(&self) -> bool {
        self.version
    }
}

pub(crate) fn main() -> ExitCode {
    cli::run(run)
}

/// freeze's (or `--check`'s, or `--run`'s) run with its arguments: `Ok` when the lock is held
/// (or with the status that answers `--check` and `--run`), `Err` with the failure's status.
fn run(args: Args) -> Result<ExitCode, Failure> {
    let command =
        crate::run::CommandLine::from_args(&args.phase, &args.fsfreeze, args.run, args.check)?;
    if command.is_none() {
        Phase::from_args(&args.phase, Phase::Freeze, &[Phase::Freeze])?;
    }
    let mut config = cli::start("freeze", args.config.as_deref(), true)?;
    apply_overrides(&args, &mut config)?;
    if let Some(caller) = &args.caller {
        log::info!("event=called by=\"{}\"", cli::one_line(caller));
    }
    if args.check {
        return Ok(
            match crate::check::run(&config, args.json, args.sync_filesystems) {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(config.error_exit_code),
            },
        );
    }
    resolve_sync(&mut config, args.sync_filesystems);
    if let Some(command) = command {
        return crate::run::run(config, command);
    }
    let result = Freeze::new(config.clone()).and_then(|mut freeze| freeze.run());
    let outcome = result.as_ref().err().map(Outcome::of_freeze_error);
    let result = result
        .map(|()| ExitCode::SUCCESS)
        .map_err(|err| Failure::logged(err, config.error_exit_code));
    // After success is reported (or the failure logged), bounded: never on the path to the lock.
    if config.metrics_file.is_some() {
        publish_metrics(&config, outcome);
    }
    result
}

/// `--lock-mode` and `--snapshot-timeout` over the config (the timeout only ever shortens it);
/// a bad value is a usage error.
fn apply_overrides(args: &Args, config: &mut Config) -> Result<()> {
    if let Some(mode) = &args.lock_mode {
        config.lock_mode = LockMode::parse(mode)
            .ok_or_else(|| Error::Usage(format!("--lock-mode {mode}: {}", LockMode::EXPECTED)))?;
    }
    if let Some(seconds) = args.snapshot_timeout {
        if !(1..=86_400).contains(&seconds) {
            return Err(Error::Usage(format!(
                "--snapshot-timeout {seconds}: expected a whole number of seconds from 1 to 86400"
            )));
        }
        config.snapshot_timeout = config.snapshot_timeout.min(Duration::from_secs(seconds));
    }
    Ok(())
}

/// Hands this freeze's outcome (`None`: it holds its lock) to the metrics writer.
pub(crate) fn publish_metrics(config: &Config, outcome: Option<Outcome>) {
    // A busy freeze's state file is the other snapshot's: none of its facts are ours.
    let state = match outcome {
        Some(Outcome::Busy) => None,
        _ => StateFile::open(&config.run_dir, false)
            .and_then(|s| s.peek())
            .ok()
            .and_then(|found| match found {
                Found::State(state) => Some(state),
                _ => None,
            }),
    };
    let update = Update::of_freeze(state.as_deref(), outcome, time::now_unix_ms());
    metrics::publish(config, &update);
}

/// Settles `sync-filesystems` for this run to on or off: `auto` follows the caller's
/// `--sync-filesystems` (its platform does not freeze the filesystems).
fn resolve_sync(config: &mut Config, caller_does_not_freeze: bool) {
    if caller_does_not_freeze && config.sync_filesystems == SyncFilesystems::Off {
        log::warn!(
            "event=warning the caller does not freeze the filesystems, but sync-filesystems = off: what the server wrote and the kernel has not flushed may be missing from the snapshot"
        );
    }
    config.sync_filesystems = match config.sync_filesystems.resolve(caller_does_not_freeze) {
        true => SyncFilesystems::On,
        false => SyncFilesystems::Off,
    };
}

/// What freeze waits on.
pub(crate) enum Event {
    Signal(i32),
    /// A status line from the pipe of the locker of attempt `.0`.
    Locker(u32, String),
    /// That locker closed its pipe (it holds the lock and is done talking, or it exited).
    LockerClosed(u32),
    /// The info file is marked `freezing` (or could not be): the first `go` waits for it.
    Marked(Result<()>),
}

pub(crate) struct Freeze {
    config: Config,
    started: Instant,
    deadline: Instant,
    events: Receiver<Event>,
    /// A sender of `events` for the helpers freeze starts; kept, it keeps the channel open.
    sender: Sender<Event>,
    state: StateFile,
    locker_exe: PathBuf,
    locker: Option<Child>,
    /// Our end of the pipe the locker watches: "committed" means freeze reports success; EOF
    /// without it (freeze failed or was killed) makes the locker release at once.
    commit: Option<std::io::PipeWriter>,
    /// The `freezing` mark is being written: `go` waits for it.
    marking: bool,
}

/// Whether freeze tells the locker, once it holds, that freeze reports success (`committed`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// A hook's freeze: it exits 0 now, and only thaw or max-lock-time ends the lock.
    Now,
    /// `--run`: freeze stays, and its end (however it comes) ends the lock.
    Withheld,
}

/// The lock a `--run` freeze holds for its command. The locker holds it and listens on the
/// pipe kept here: dropping this (or freeze's death) makes it release at once.
pub(crate) struct Holding {
    pub(crate) config: Config,
    /// Signals to freeze (and the locker's last words, which say nothing now).
    pub(crate) events: Receiver<Event>,
    /// A sender of `events`, kept so that the channel never disconnects.
    _events_open: Sender<Event>,
    pub(crate) state_file: StateFile,
    /// The `acquired` record.
    pub(crate) acquired: Box<State>,
    locker: Child,
    commit: std::io::PipeWriter,
}

impl Holding {
    /// After the release: closes the locker's pipe and reaps it (it exits right after its
    /// release; one that does not within a second is left to init).
    pub(crate) fn end(self) {
        let Holding {
            mut locker, commit, ..
        } = self;
        drop(commit);
        let until = Instant::now() + Duration::from_secs(1);
        while matches!(locker.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What ends a wait of [`Freeze::attempt`]: an event, or one of its timers.
enum Wakeup {
    Event(Event),
    Timer(Timer),
}

/// The deadlines of an attempt.
enum Timer {
    /// [`LOCKER_POLL`]: look whether the locker ended without a word seen.
    LockerPoll,
    /// `kill-long-queries-timeout` after `locking`: kill what holds up the lock statement.
    KillLongQueries,
    /// `snapshot-timeout`: no lock in time.
    SnapshotTimeout,
}

/// How one locker run ended, as far as freeze is concerned.
enum AttemptEnd {
    Acquired(Box<State>),
    TimedOut(String),
}

impl Freeze {
    /// Starts the first locker (first thing: its start-up and connect are the longest step
    /// before the lock), then installs the signal handlers and opens the state file.
    pub(crate) fn new(config: Config) -> Result<Freeze> {
        let (sender, events) = mpsc::channel();
        let locker_exe = locker_path()?;
        let (mut child, commit) = start_locker(&config, 1, &locker_exe, &sender)?;
        let opened = Self::listen(&sender).and_then(|()| StateFile::open(&config.run_dir, true));
        let state = match opened {
            Ok(state) => state,
            Err(err) => {
                // It has touched nothing yet: it just goes.
                drop(commit);
                kill_and_reap(&mut child);
                return Err(err);
            }
        };
        let started = Instant::now();
        Ok(Freeze {
            deadline: started + config.snapshot_timeout,
            started,
            config,
            events,
            sender,
            state,
            locker_exe,
            locker: Some(child),
            commit: Some(commit),
            marking: false,
        })
    }

    /// Forwards SIGTERM, SIGINT and SIGHUP to `sender`.
    fn listen(sender: &Sender<Event>) -> Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| Error::io("install signal handlers for", "freeze", e))?;
        let tx = sender.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if tx.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        });
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        self.take_lock(Commit::Now).map(|_| ())
    }

    /// For `--run`: takes the lock as [`Freeze::run`] does, but does not tell the locker that
    /// freeze reported success: its pipe from us stays open, so that our end (even by SIGKILL)
    /// makes it release at once. The lock stays held by the locker until [`common::thaw`].
    pub(crate) fn hold(mut self) -> Result<Holding> {
        let state = self.take_lock(Commit::Withheld)?;
        match (self.locker.take(), self.commit.take()) {
            (Some(locker), Some(commit)) => Ok(Holding {
                config: self.config.clone(),
                events: std::mem::replace(&mut self.events, mpsc::channel().1),
                _events_open: self.sender.clone(),
                state_file: StateFile::open(&self.config.run_dir, false)?,
                acquired: state,
                locker,
                commit,
            }),
            _ => Err(Error::LockLost(Lost::NotOurLocker)),
        }
    }

    /// Claims the run and takes the lock; the `acquired` record.
    fn take_lock(&mut self, commit: Commit) -> Result<Box<State>> {
        // The locker (started in `new`) connects while freeze claims the run; it touches nothing
        // and takes the lock only on freeze's `go`.
        let locker_exe = self.locker_exe.clone();
        match self.claim() {
            Ok(claimed) => self.mark_freezing(&claimed),
            Err(err) => {
                // The state belongs to someone else (or to nobody): only our idle locker goes.
                self.discard_locker();
                return Err(err);
            }
        }
        let result = self.lock_and_verify(&locker_exe, commit);
        if let Err(err) = &result {
            self.abandon(err);
        }
        result
    }

    /// Marks the info file `freezing` on a thread of its own, while the locker starts and checks:
    /// from now on no copy carries an earlier record (a held one left by a crash, say) as this
    /// moment's. The outcome arrives as [`Event::Marked`]; the locker gets `go`, and may lock,
    /// only once the mark is on disk.
    fn mark_freezing(&mut self, claimed: &State) {
        let Some(mark) = claimed.copy_mark() else {
            return;
        };
        let (tx, path) = (self.sender.clone(), self.config.info_file.clone());
        self.marking = true;
        std::thread::spawn(move || {
            let _ = tx.send(Event::Marked(
                common::info_file::mark(&path, &mark).map(|_| ()),
            ));
        });
    }

    /// Records this freeze in the state file, unless another snapshot is in progress; the record
    /// written.
    fn claim(&self) -> Result<State> {
        let me = Identity::current().ok_or_else(|| Error::State {
            path: "/proc/self".into(),
            message: "cannot read our own process identity from /proc".into(),
        })?;
        let guard = self.state.lock()?;
        match guard.read() {
            Found::State(previous) if previous.keeps_a_new_freeze_out() => {
                let who = match &previous.locker {
                    Some(locker) if previous.locker_running() => {
                        format!("locker PID {}", locker.pid)
                    }
                    _ => format!("freeze PID {}", previous.freeze.pid),
                };
                return Err(Error::Busy {
                    holder: who,
                    status: previous.status().name(),
                    started_at: time::rfc3339(previous.started_at_ms),
                });
            }
            Found::State(previous)
                if previous.status() == Status::Acquired && previous.thawed_at_ms.is_none() =>
            {
                log::warn!(
                    "event=lost the previous snapshot's locker (PID {}) died while holding its lock and no thaw came",
                    previous.locker.as_ref().map(|l| l.pid).unwrap_or(0)
                );
            }
            Found::Stale(why) => {
                log::warn!("event=stale-state ignoring an unusable state file: {why}");
                guard.set_aside()?;
            }
            _ => {}
        }
        if let Found::State(previous) = guard.read() {
            // A previous snapshot's locker died with SQL threads stopped, and no thaw came.
            if let Some(names) = previous.replica_sql_left() {
                restart_left(&self.config, names, "a previous snapshot's locker died");
            }
        }
        let claimed = State::claimed(me);
        guard.write(&claimed)?;
        Ok(claimed)
    }

    fn lock_and_verify(&mut self, locker_exe: &Path, commit: Commit) -> Result<Box<State>> {
        let (state, attempts) = self.lock(locker_exe)?;
        // The locker wrote the info file and checked its connection before it said `acquired`:
        // make sure it is still there, and ours, before saying so.
        self.verify(&state)?;
        self.log_locked(&state, attempts);
        // A SIGTERM that arrived while we verified (vmtoolsd's timeout) means the agent has given
        // up on us: report failure and release, never success.
        while let Ok(event) = self.events.try_recv() {
            if let Event::Signal(signal) = event {
                return Err(interrupted(signal));
            }
        }
        if commit == Commit::Withheld {
            return Ok(state);
        }
        // Tell the locker that freeze reports success: from now on only thaw or max-lock-time
        // ends the lock. The locker stays; dropping the handle does not touch it.
        if let Some(mut commit) = self.commit.take() {
            use std::io::Write;
            commit
                .write_all(format!("{}\n", Order::Committed).as_bytes())
                .map_err(|e| {
                    Error::LockLost(Lost::NotConfirmed {
                        error: e.to_string(),
                    })
                })?;
        }
        self.locker = None;
        Ok(state)
    }

    /// Attempts until a locker holds the lock: after each capped attempt a fresh locker, and a
    /// pause as long as the attempt may have stalled the writers. The `acquired` record and the
    /// number of attempts.
    fn lock(&mut self, locker_exe: &Path) -> Result<(Box<State>, u32)> {
        let mut attempt = 1u32;
        loop {
            match self.attempt(attempt)? {
                AttemptEnd::Acquired(state) => return Ok((state, attempt)),
                AttemptEnd::TimedOut(reason) => {
                    log::warn!(
                        "event=timed-out attempt={attempt} {reason}; waiting for a quiet moment again"
                    );
                    attempt += 1;
                    self.update(|s| s.retry(attempt))?;
                    self.spawn_locker(attempt, locker_exe)?;
                    // Give the writers that queued behind the attempt as long as it stalled them.
                    self.pause(Duration::from_secs(self.config.lock_wait_timeout))?;
                }
            }
        }
    }

    /// What the locker found and did, logged by freeze (the locker logs nothing while it holds):
    /// storage flags, hard durability warnings, the syncs, and the lock with its coordinates.
    fn log_locked(&self, state: &State, attempts: u32) {
        let coordinates: Coordinates = state.coordinates.clone().unwrap_or_default();
        let acquired_at_ms = state.acquired_at_ms.unwrap_or_else(time::now_unix_ms);
        if let Some(flags) = state.storage_flags.as_ref().filter(|f| !f.is_empty()) {
            log::warn!("event=storage {}", flags.join("; "));
        }
        for warning in state.durability_warnings.iter().flatten() {
            log::warn!("event=durability {warning}");
        }
        for fs in state.synced.iter().flatten() {
            log::info!(
                "event=synced mount={} fstype={} device={} roles={} sync_ms={}",
                fs.mount_point.display(),
                fs.fstype,
                fs.device,
                fs.roles.join(","),
                fs.sync_ms
            );
        }
        log::info!(
            "event=locked mode={} attempts={attempts} waited_ms={} total_ms={} locker_pid={} binlog={}:{} gtid_binlog_pos={} info_file={}",
            state.lock_mode.map_or("-", LockMode::name),
            acquired_at_ms.saturating_sub(state.started_at_ms),
            self.started.elapsed().as_millis(),
            state.locker.as_ref().map_or(0, |l| l.pid),
            coordinates.binlog.file.as_deref().unwrap_or("-"),
            coordinates.binlog.position.map_or("-".into(), |p| p.to_string()),
            coordinates
                .gtid
                .binlog_pos
                .as_deref()
                .or(coordinates.gtid.executed.as_deref())
                .unwrap_or("-"),
            self.config.info_file.display()
        );
    }

    /// Sleeps for `pause` (or until the deadline), returning early with an error on a signal.
    fn pause(&mut self, pause: Duration) -> Result<()> {
        let until = (Instant::now() + pause).min(self.deadline);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            // The channel never disconnects (freeze holds a sender): an error is the pause's end.
            if let Ok(Event::Signal(signal)) = self.events.recv_timeout(left) {
                return Err(interrupted(signal));
            }
        }
    }

    fn timeout_error(&self, blocker: Option<&str>) -> Error {
        Error::NotLocked(NoLock::Timeout {
            seconds: self.config.snapshot_timeout.as_secs(),
            blocker: blocker.map(str::to_string),
        })
    }

    /// Starts the locker of attempt `attempt` (see [`start_locker`]).
    fn spawn_locker(&mut self, attempt: u32, locker_exe: &Path) -> Result<()> {
        let (child, commit) = start_locker(&self.config, attempt, locker_exe, &self.sender)?;
        self.commit = Some(commit);
        self.locker = Some(child);
        Ok(())
    }

    /// Tells the started locker to lock at the next quiet moment, and waits until it holds the
    /// lock or its attempt ends. While the lock statement waits, statements that hold it up are
    /// killed after `kill-long-queries-timeout` if the config says so.
    fn attempt(&mut self, attempt: u32) -> Result<AttemptEnd> {
        if !self.marking {
            self.go();
        }
        let mut kill_at: Option<Instant> = None;
        let mut blocker: Option<String> = None;
        loop {
            match self.next_wakeup(kill_at) {
                // A locker that ended without a word we saw (its end was read while freeze was
                // busy elsewhere) is judged by its record.
                Wakeup::Timer(Timer::LockerPoll) => {
                    if self.locker_exited_within(Duration::ZERO) {
                        return self.attempt_outcome();
                    }
                }
                Wakeup::Timer(Timer::KillLongQueries) => {
                    kill_at = None;
                    self.kill_blockers()?;
                }
                Wakeup::Timer(Timer::SnapshotTimeout) => {
                    return Err(self.timeout_error(blocker.as_deref()))
                }
                Wakeup::Event(Event::Signal(signal)) => return Err(interrupted(signal)),
                Wakeup::Event(Event::Marked(marked)) => {
                    marked?;
                    self.marking = false;
                    self.go();
                }
                // An earlier attempt's locker, ended: its record was read then.
                Wakeup::Event(Event::Locker(n, _) | Event::LockerClosed(n)) if n != attempt => {}
                Wakeup::Event(Event::Locker(_, line)) => {
                    if let Some(end) = self.heard(&line, &mut blocker, &mut kill_at) {
                        return end;
                    }
                }
                Wakeup::Event(Event::LockerClosed(_)) => return self.attempt_outcome(),
            }
        }
    }

    /// The next event, or the first of `attempt`'s timers if it comes first: the locker poll,
    /// the kill of what holds up the lock statement (`kill_at`, once set), the snapshot deadline
    /// (which wins a tie). The channel never disconnects (freeze holds a sender): no event by
    /// then means the timer fired.
    fn next_wakeup(&self, kill_at: Option<Instant>) -> Wakeup {
        let mut timer = (Timer::SnapshotTimeout, self.deadline);
        if let Some(at) = kill_at.filter(|&at| at < timer.1) {
            timer = (Timer::KillLongQueries, at);
        }
        let poll = Instant::now() + LOCKER_POLL;
        if poll < timer.1 {
            timer = (Timer::LockerPoll, poll);
        }
        let (timer, at) = timer;
        match self
            .events
            .recv_timeout(at.saturating_duration_since(Instant::now()))
        {
            Ok(event) => Wakeup::Event(event),
            Err(_) => Wakeup::Timer(timer),
        }
    }

    /// Tells the started locker to lock at the next quiet moment. A locker that is gone already
    /// (it could not connect, say) has left its word on the other pipe: `attempt` reads it.
    fn go(&mut self) {
        if let Some(pipe) = self.commit.as_mut() {
            use std::io::Write;
            let _ = pipe.write_all(format!("{}\n", Order::Go).as_bytes());
        }
    }

    /// What the locker's word `line` means for the attempt: `Some` when it ended it (the
    /// locker's record says how, or the locker said why it could not); `None` while it goes on,
    /// noting the statement in the way (`blocker`) or when blockers may be killed (`kill_at`).
    fn heard(
        &mut self,
        line: &str,
        blocker: &mut Option<String>,
        kill_at: &mut Option<Instant>,
    ) -> Option<Result<AttemptEnd>> {
        match line.parse::<Report>() {
            Ok(Report::Ready) => None,
            Ok(Report::Busy(who)) => {
                log::info!("event=waiting not a quiet moment: {who}");
                *blocker = Some(who);
                None
            }
            Ok(Report::Locking) => {
                *blocker = None;
                *kill_at = (self.config.kill_long_queries != KillLongQueries::Off).then(|| {
                    Instant::now() + Duration::from_secs(self.config.kill_long_queries_timeout)
                });
                None
            }
            Ok(Report::Failed(why)) => {
                self.reap_locker();
                Some(Err(Error::NotLocked(NoLock::Locker(why))))
            }
            Ok(Report::Unreachable(why)) => {
                self.reap_locker();
                Some(Err(Error::Unreachable { message: why }))
            }
            // The attempt ended (or holds): the locker's record says how.
            Ok(Report::Acquired | Report::TimedOut) => Some(self.attempt_outcome()),
            Err(unknown) => {
                log::warn!("event=warning the locker said something unexpected ({unknown}); judging the attempt by its record");
                Some(self.attempt_outcome())
            }
        }
    }

    /// Kills (`KILL QUERY`) what holds up the locker's lock statement, from a connection of our
    /// own opened for it.
    fn kill_blockers(&mut self) -> Result<()> {
        let (mode, locker_connection) = match self.state.lock()?.read() {
            Found::State(state) => (state.lock_mode, state.connection_id),
            _ => (None, None),
        };
        let Some(mode) = mode else {
            return Ok(());
        };
        let mut session = server::connect(&self.config.client, Duration::from_secs(10))?;
        let quiet = QuietWindow {
            config: &self.config,
            mode,
            flavor: session.info.flavor,
        };
        let seconds = self.config.kill_long_queries_timeout;
        let killed = quiet.kill_blockers(&mut session.conn, seconds, locker_connection)?;
        if killed > 0 {
            self.update(|s| s.killed_queries = s.killed_queries.saturating_add(killed as u64))?;
        }
        Ok(())
    }

    /// What the locker's record says about the attempt that just ended (or holds).
    fn attempt_outcome(&mut self) -> Result<AttemptEnd> {
        let Found::State(state) = self.state.lock()?.read() else {
            return Err(Error::State {
                path: self.state.path(),
                message: "the state file vanished while the locker ran".into(),
            });
        };
        match state.status() {
            Status::Acquired => Ok(AttemptEnd::Acquired(state)),
            Status::TimedOut => {
                self.reap_locker();
                Ok(AttemptEnd::TimedOut(state.reason_or("")))
            }
            _ => Err(self.locker_failed()),
        }
    }

    /// The error for a locker that ended without the lock, from its record; reaps it.
    fn locker_failed(&mut self) -> Error {
        self.reap_locker();
        let reason = match self.state.lock().map(|g| g.read()) {
            Ok(Found::State(state)) if state.status() == Status::Failed => {
                state.reason.map(|r| r.to_string())
            }
            _ => None,
        };
        Error::NotLocked(NoLock::LockerExited { reason })
    }

    /// Checks that the lock is held right now: the `acquired` record just read (the locker wrote
    /// it right after its connection answered, with the info file on disk) names the locker this
    /// freeze started, and that locker is still running.
    fn verify(&self, acquired: &State) -> Result<()> {
        let ours = self.locker.as_ref().map(Child::id);
        let Some(locker) = acquired.locker.as_ref().filter(|l| Some(l.pid) == ours) else {
            return Err(Error::LockLost(Lost::NotOurLocker));
        };
        if !locker.is_running() {
            return Err(Error::LockLost(Lost::LockerGone { pid: locker.pid }));
        }
        Ok(())
    }

    /// Applies `change` to this freeze's state under the flock.
    fn update(&self, change: impl FnOnce(&mut State)) -> Result<()> {
        let guard = self.state.lock()?;
        if let Found::State(mut state) = guard.read() {
            change(&mut state);
            guard.write(&state)?;
        }
        Ok(())
    }

    fn locker_exited_within(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            match self.locker.as_mut().map(Child::try_wait) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    self.locker = None;
                    return true;
                }
                Some(Ok(None)) if Instant::now() >= until => return false,
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    fn reap_locker(&mut self) {
        if !self.locker_exited_within(Duration::from_secs(2)) {
            self.kill_locker();
        }
    }

    /// Ends a locker that has not been told `go`: it holds nothing and records nothing.
    fn discard_locker(&mut self) {
        self.commit = None;
        self.kill_locker();
    }

    /// SIGKILLs our locker (if any) and reaps it. The server drops any lock it held when its
    /// connection closes.
    fn kill_locker(&mut self) {
        if let Some(mut child) = self.locker.take() {
            kill_and_reap(&mut child);
        }
    }

    /// On any failure: stop the locker (if one runs) so that no lock remains, and record why.
    fn abandon(&mut self, err: &Error) {
        if self.locker.is_some() {
            self.stop_locker();
        }
        // A locker that had to be killed could not start the SQL threads it stopped.
        let left = match self.state.peek() {
            Ok(Found::State(s)) if !s.locker_running() => {
                s.replica_sql_stopped.filter(|n| !n.is_empty())
            }
            _ => None,
        };
        let restarted =
            left.is_some_and(|names| restart_left(&self.config, &names, "the locker was killed"));
        let mut mark = None;
        let _ = self.update(|s| {
            if restarted {
                s.replica_sql_stopped = None;
            }
            s.abandoned(err.to_string());
            mark = s.copy_mark();
        });
        // Whatever the caller does next (Proxmox and the clouds snapshot anyway), a copy says why
        // it is not consistent: the lock is gone by now.
        if let Some(mark) = mark {
            info_file::mark_now(&self.config, &mark);
        }
    }

    /// Stops our locker: SIGTERM (it releases first), a `KILL QUERY` if it is stuck in its lock
    /// statement, SIGKILL as the last resort. The server drops any lock when the connection closes.
    fn stop_locker(&mut self) {
        let Some(child) = self.locker.as_mut() else {
            return;
        };
        // Our own unreaped child: its PID cannot have been reused.
        let pid = child.id();
        // Closing the commit pipe tells the locker that freeze failed; SIGTERM says it too.
        self.commit = None;
        if let Some(me) = Identity::of(pid) {
            me.signal(SIGTERM);
        }
        // A lock statement in progress is interrupted with KILL QUERY — again if the locker has
        // moved on to its next lock statement in between.
        let give_up = Instant::now() + Duration::from_secs(self.config.lock_wait_timeout + 2);
        let mut killer: Option<Session> = None;
        while !self.locker_exited_within(Duration::from_millis(50)) {
            if Instant::now() >= give_up {
                self.kill_locker();
                break;
            }
            let Ok(Found::State(state)) = self.state.lock().map(|g| g.read()) else {
                continue;
            };
            let (Status::Waiting, Some(id)) = (state.status(), state.connection_id) else {
                continue;
            };
            if killer.is_none() {
                killer = server::connect(&self.config.client, Duration::from_secs(5)).ok();
            }
            if let Some(session) = killer.as_mut() {
                let user = processlist::connection(&mut session.conn, id)
                    .ok()
                    .flatten()
                    .map(|(user, _)| user);
                if user == state.user {
                    let _ = session.conn.query_drop(format!("KILL QUERY {id}"));
                }
            }
        }
        log::info!("event=locker-stopped the locker (PID {pid}) was stopped on a failed freeze; no lock remains");
    }
}

/// SIGKILLs our own child and reaps it (its PID cannot have been reused: it is unreaped).
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts SQL threads replica-safe stopped and a dead locker (`why`) left stopped; logs either
/// way, true when they run again.
fn restart_left(config: &Config, names: &[String], why: &str) -> bool {
    match common::replica_safe::restart_left(&config.client, names) {
        Ok(()) => {
            log::warn!(
                "event=replica-restarted {why} with the SQL thread(s) {} stopped by replica-safe; started them again",
                common::replica_safe::list(names)
            );
            true
        }
        Err(err) => {
            log::error!("event=replica {err}");
            false
        }
    }
}

fn interrupted(signal: i32) -> Error {
    let name = match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    };
    Error::Interrupted {
        signal: name.into(),
    }
}

/// Starts the locker of attempt `attempt` and hands it this run's plan (`config` as resolved:
/// the locker reads no config file) on the returned commit pipe: it connects, sets up its
/// session and checks its privileges, then waits for `go` on that pipe, touching nothing before
/// it. Its words arrive on `events`.
fn start_locker(
    config: &Config,
    attempt: u32,
    locker_exe: &Path,
    events: &Sender<Event>,
) -> Result<(Child, std::io::PipeWriter)> {
    let (reader, writer) =
        std::io::pipe().map_err(|e| Error::io("create a pipe for", "the locker", e))?;
    let (commit_reader, commit_writer) =
        std::io::pipe().map_err(|e| Error::io("create a pipe for", "the locker", e))?;
    let mut command = Command::new(locker_exe);
    // The config's path only names whose locker this is in `ps`: the settings go in the plan.
    command.arg("--plan-of").arg(&config.path).current_dir("/");
    use std::os::fd::AsRawFd;
    // `fds[i]` becomes the locker's descriptor 3 + i.
    const _: () = assert!(protocol::LOCKER_REPORTS_FD == 3 && protocol::FREEZE_ORDERS_FD == 4);
    let fds = [writer.as_raw_fd(), commit_reader.as_raw_fd()];
    // Unique per locker: a scope of an earlier attempt may not be collected yet.
    let unit = format!("mysql-snapshot-locker-{}-{attempt}", std::process::id());
    let child = crate::login_session::spawn_locker(&mut command, &fds, locker_exe, &unit)
        .map_err(|e| Error::io("start the locker", locker_exe, e))?;
    drop(writer);
    drop(commit_reader);
    // The plan, at once: the locker waits for it and nothing else. It fits the pipe's buffer, so
    // this never waits; a locker gone already has left its word on the other pipe, read below.
    let mut commit_writer = commit_writer;
    let _ = commit_writer.write_all(plan::render(config).as_bytes());
    let tx = events.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            match line {
                Ok(line) => {
                    if tx.send(Event::Locker(attempt, line)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(Event::LockerClosed(attempt));
    });
    Ok((child, commit_writer))
}

/// The locker binary installed next to this one.
fn locker_path() -> Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| Error::io("find", "our own executable", e))?;
    let path = me.with_file_name("mysql-snapshot-locker");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::io(
            "find the locker (reinstall mysql-snapshot) at",
            path,
            std::io::ErrorKind::NotFound.into(),
        ))
    }
}
