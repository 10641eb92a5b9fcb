//! The freeze sequence: claim the run, wait for a quiet moment, start the locker, learn that it
//! holds the lock, verify that, write the info file, exit 0.
//!
//! freeze exits 0 only while the lock is verifiably held: the locker is alive and is ours, its
//! connection is on the server, and the state file says `acquired`. Every other way out (timeout,
//! signal, bad input, an unwritable info file) stops the locker and leaves no lock behind.
//! A timed-out attempt goes back to waiting for a quiet moment; nothing waits without a deadline.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use argh::FromArgs;
use common::config::KillLongQueries;
use common::coordinates::{
    self, Coordinates, InfoFile, LockSection, PendingInfoFile, ServerSection,
};
use common::grants;
use common::lock::LockMode;
use common::phase::Phase;
use common::process::{self, Identity};
use common::replication::{self, SourceAddress};
use common::server::{self, Blocker, Session};

use crate::quiet::QuietWindow;
use common::state::{Found, State, StateFile, Status};
use common::{cli, time, Config, Error, Result};
use mysql::prelude::Queryable;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// How often the quiet-moment check runs while something long is running.
const QUIET_POLL: Duration = Duration::from_millis(100);
/// How often freeze looks at the locker process while it waits for its word.
const LOCKER_POLL: Duration = Duration::from_millis(100);

#[derive(FromArgs)]
/// Takes a verified database lock before a VM snapshot (phase argument: `freeze` or none).
struct Args {
    /// the phase the hypervisor passes (`freeze`); extra or empty arguments are ignored
    #[argh(positional)]
    phase: Vec<String>,
    /// config file (default: $MYSQL_SNAPSHOT_CONFIG, else /etc/mysql-snapshot.cnf)
    #[argh(option)]
    config: Option<PathBuf>,
    /// lock mode for this run: auto, ftwrl or backup-stage (overrides the config)
    #[argh(option)]
    lock_mode: Option<String>,
    /// rehearse instead of freezing: check connection, privileges, directories and hooks, then
    /// take and release the lock once; exit 0 only if a real freeze would work
    #[argh(switch)]
    check: bool,
    /// with --check: print the report as JSON
    #[argh(switch)]
    json: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

pub(crate) fn main() -> ExitCode {
    let args: Args = match cli::parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    if args.version {
        return cli::print_version("freeze");
    }
    if let Err(err) = Phase::from_args(&args.phase, Phase::Freeze, &[Phase::Freeze]) {
        eprintln!("mysql-snapshot-freeze: {err}");
        return ExitCode::from(common::error::EXIT_USAGE);
    }
    let mut config = match cli::start("freeze", args.config.as_deref(), true) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(mode) = &args.lock_mode {
        match LockMode::parse(mode) {
            Some(mode) => config.lock_mode = mode,
            None => {
                eprintln!(
                    "mysql-snapshot-freeze: --lock-mode {mode}: {}",
                    LockMode::EXPECTED
                );
                return ExitCode::from(common::error::EXIT_USAGE);
            }
        }
    }
    if args.check {
        return match crate::check::run(&config, args.json) {
            true => ExitCode::SUCCESS,
            false => ExitCode::from(config.error_exit_code),
        };
    }
    let result = Freeze::new(config.clone()).and_then(|mut freeze| freeze.run());
    cli::finish(result, &config)
}

/// What freeze waits on.
enum Event {
    Signal(i32),
    /// A status line from the pipe of the locker of attempt `.0`.
    Locker(u32, String),
    /// That locker closed its pipe (it holds the lock and is done talking, or it exited).
    LockerClosed(u32),
}

struct Freeze {
    config: Config,
    started: Instant,
    deadline: Instant,
    events: Receiver<Event>,
    sender: Sender<Event>,
    state: StateFile,
    locker: Option<Child>,
    /// Our end of the pipe the locker watches: "committed" means freeze reports success; EOF
    /// without it (freeze failed or was killed) makes the locker release at once.
    commit: Option<std::io::PipeWriter>,
}

/// How one locker run ended, as far as freeze is concerned.
enum AttemptEnd {
    Acquired(Box<State>),
    TimedOut(String),
}

impl Freeze {
    fn new(config: Config) -> Result<Freeze> {
        let (sender, events) = mpsc::channel();
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
        let state = StateFile::open(&config.run_dir, true)?;
        let started = Instant::now();
        Ok(Freeze {
            deadline: started + config.snapshot_timeout,
            started,
            config,
            events,
            sender,
            state,
            locker: None,
            commit: None,
        })
    }

    fn run(&mut self) -> Result<()> {
        // The locker starts and connects while freeze claims the run, connects and looks for a
        // quiet moment; it touches nothing and takes the lock only on freeze's `go`.
        let locker_exe = locker_path()?;
        self.spawn_locker(1, &locker_exe)?;
        if let Err(err) = self.claim() {
            // The state belongs to someone else (or to nobody): only our idle locker goes.
            self.discard_locker();
            return Err(err);
        }
        let result = self.lock_and_verify(&locker_exe);
        if let Err(err) = &result {
            self.abandon(err);
        }
        result
    }

    /// Records this freeze in the state file, unless another snapshot is in progress.
    fn claim(&self) -> Result<()> {
        let me = Identity::current().ok_or_else(|| Error::State {
            path: "/proc/self".into(),
            message: "cannot read our own process identity from /proc".into(),
        })?;
        let guard = self.state.lock()?;
        match guard.read() {
            Found::State(previous) if previous.in_progress() => {
                let who = match &previous.locker {
                    Some(locker) if previous.locker_running() => {
                        format!("locker PID {}", locker.pid)
                    }
                    _ => format!("freeze PID {}", previous.freeze.pid),
                };
                return Err(Error::Busy {
                    message: format!(
                        "another snapshot is in progress ({who}, status {}, started {}); run mysql-snapshot-thaw to end it first",
                        previous.status.name(),
                        time::rfc3339(previous.started_at_ms)
                    ),
                });
            }
            Found::State(previous)
                if previous.status == Status::Acquired && previous.thawed_at_ms.is_none() =>
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
        let mut state = State::starting(me);
        state.attempt = 1;
        guard.write(&state)
    }

    fn lock_and_verify(&mut self, locker_exe: &Path) -> Result<()> {
        // Fail on an unwritable info-file directory before any lock exists.
        let pending = PendingInfoFile::create(&self.config.info_file)?;
        let mut attempt = 1u32;
        let mut session = server::connect(&self.config.client, Duration::from_secs(10))?;
        let mode = self.config.lock_mode.resolve(&session.info)?;
        let needed = grants::needed(&session.info, &self.config);
        let grants = grants::check(&mut session.conn, &needed)?;
        if let Some(err) = grants.error() {
            if !grants.has_roles {
                return Err(err);
            }
            log::warn!("event=privileges {err} (unless a role grants it: roles are not checked)");
        }
        let config = self.config.clone();
        let quiet = QuietWindow {
            config: &config,
            mode,
            flavor: session.info.flavor,
        };
        let state = loop {
            self.wait_for_quiet_moment(&quiet, &mut session)?;
            match self.attempt(attempt, &quiet, &mut session)? {
                AttemptEnd::Acquired(state) => break state,
                AttemptEnd::TimedOut(reason) => {
                    let blocker =
                        server::long_statements(&mut session.conn, 0, &self.config.ignore_commands)
                            .ok()
                            .and_then(|all| all.into_iter().next());
                    log::warn!(
                        "event=timed-out attempt={attempt} {reason}; longest running statement: {}; waiting for a quiet moment again",
                        blocker.map_or("none".to_string(), |b| b.to_string())
                    );
                    attempt += 1;
                    self.update(|s| {
                        s.attempt = attempt;
                        s.status = Status::Starting;
                        s.locker = None;
                        s.reason = None;
                    })?;
                    self.spawn_locker(attempt, locker_exe)?;
                    // Give the writers that queued behind the attempt as long as it stalled them.
                    self.pause(Duration::from_secs(self.config.lock_wait_timeout))?;
                }
            }
        };
        let coordinates: Coordinates = state
            .coordinates
            .clone()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        let acquired_at_ms = state.acquired_at_ms.unwrap_or_else(time::now_unix_ms);
        let waited_ms = acquired_at_ms.saturating_sub(state.started_at_ms);
        let hostname = coordinates::hostname();
        let info = InfoFile {
            format: 1,
            taken_at: time::rfc3339(acquired_at_ms),
            hostname: hostname.clone(),
            server: ServerSection {
                flavor: session.info.flavor.name().into(),
                version: session.info.version.clone(),
                server_id: coordinates.server_id,
                server_uuid: coordinates.server_uuid.clone(),
            },
            lock: LockSection {
                mode: state
                    .lock_mode
                    .clone()
                    .unwrap_or_else(|| mode.name().into()),
                acquired_at: time::rfc3339(acquired_at_ms),
                waited_ms,
                locker_pid: state.locker.as_ref().map_or(0, |l| l.pid),
            },
            seed_replica_sql: replication::seed_replica_sql(
                &session.info,
                &SourceAddress {
                    host: &hostname,
                    port: coordinates.port.filter(|p| *p != 0).unwrap_or(3306),
                },
                &coordinates.binlog,
                &coordinates.gtid,
            ),
            clone_replica_sql: replication::clone_replica_sql(&session.info, &coordinates.replicas),
            binlog: coordinates.binlog.clone(),
            gtid: coordinates.gtid.clone(),
            replicas: coordinates.replicas.clone(),
        };
        pending.commit(&info)?;
        // The info file took time: make sure the lock is still ours before saying so.
        self.verify(&state, &mut session)?;
        log::info!(
            "event=locked mode={} attempts={attempt} waited_ms={waited_ms} total_ms={} locker_pid={} binlog={}:{} gtid_binlog_pos={} info_file={}",
            mode.name(),
            self.started.elapsed().as_millis(),
            info.lock.locker_pid,
            info.binlog.file.as_deref().unwrap_or("-"),
            info.binlog.position.map_or("-".into(), |p| p.to_string()),
            info.gtid.binlog_pos.as_deref().or(info.gtid.executed.as_deref()).unwrap_or("-"),
            self.config.info_file.display()
        );
        // A SIGTERM that arrived while we verified (vmtoolsd's timeout) means the agent has given
        // up on us: report failure and release, never success.
        while let Ok(event) = self.events.try_recv() {
            if let Event::Signal(signal) = event {
                return Err(interrupted(signal));
            }
        }
        // Tell the locker that freeze reports success: from now on only thaw or max-lock-time
        // ends the lock. The locker stays; dropping the handle does not touch it.
        if let Some(mut commit) = self.commit.take() {
            use std::io::Write;
            commit
                .write_all(b"committed\n")
                .map_err(|e| Error::LockLost {
                    message: format!(
                        "cannot confirm the snapshot to the locker ({e}); it released the lock"
                    ),
                })?;
        }
        self.locker = None;
        Ok(())
    }

    /// Waits until no statement has run longer than `long-query-threshold`.
    fn wait_for_quiet_moment(
        &mut self,
        quiet: &QuietWindow<'_>,
        session: &mut Session,
    ) -> Result<()> {
        let mut reported: Option<u64> = None;
        loop {
            let blocker = quiet.blocker(&mut session.conn)?;
            let Some(blocker) = blocker else {
                return Ok(());
            };
            if reported != Some(blocker.id) {
                log::info!("event=waiting not a quiet moment: {blocker}");
                reported = Some(blocker.id);
            }
            self.pause_or_give_up(QUIET_POLL, &blocker)?;
        }
    }

    fn pause_or_give_up(&mut self, pause: Duration, blocker: &Blocker) -> Result<()> {
        if Instant::now() >= self.deadline {
            return Err(self.timeout_error(Some(blocker)));
        }
        self.pause(pause)
    }

    /// Sleeps for `pause` (or until the deadline), returning early with an error on a signal.
    fn pause(&mut self, pause: Duration) -> Result<()> {
        let until = (Instant::now() + pause).min(self.deadline);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.events.recv_timeout(left) {
                Ok(Event::Signal(signal)) => return Err(interrupted(signal)),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left),
            }
        }
    }

    fn timeout_error(&self, blocker: Option<&Blocker>) -> Error {
        Error::NotLocked {
            message: format!(
                "no lock within snapshot-timeout ({} s){}; the snapshot must not be taken. Retry later, or raise snapshot-timeout / long-query-threshold",
                self.config.snapshot_timeout.as_secs(),
                blocker.map_or(String::new(), |b| format!("; still running: {b}"))
            ),
        }
    }

    /// Starts one locker and waits until it holds the lock or its attempt ends.
    /// Starts the locker of attempt `attempt`: it connects and sets up its session, then waits
    /// for `go` on its commit pipe, touching nothing before it.
    fn spawn_locker(&mut self, attempt: u32, locker_exe: &Path) -> Result<()> {
        let (reader, writer) =
            std::io::pipe().map_err(|e| Error::io("create a pipe for", "the locker", e))?;
        let (commit_reader, commit_writer) =
            std::io::pipe().map_err(|e| Error::io("create a pipe for", "the locker", e))?;
        let mut command = Command::new(locker_exe);
        command
            .arg("--lock-mode")
            .arg(self.config.lock_mode.name())
            .current_dir("/");
        // An absent default config means built-in defaults, for the locker as for freeze.
        if self.config.path.exists() {
            command.arg("--config").arg(&self.config.path);
        }
        use std::os::fd::AsRawFd;
        let fds = [writer.as_raw_fd(), commit_reader.as_raw_fd()];
        let child = process::spawn_detached(&mut command, &fds)
            .map_err(|e| Error::io("start the locker", locker_exe, e))?;
        drop(writer);
        drop(commit_reader);
        self.commit = Some(commit_writer);
        self.locker = Some(child);
        let tx = self.sender.clone();
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
        Ok(())
    }

    /// Tells the started locker to take the lock now, and waits until it holds it or its attempt
    /// ends.
    fn attempt(
        &mut self,
        attempt: u32,
        quiet: &QuietWindow<'_>,
        session: &mut Session,
    ) -> Result<AttemptEnd> {
        let started = Instant::now();
        let mut kill_at = (self.config.kill_long_queries != KillLongQueries::Off)
            .then(|| started + Duration::from_secs(self.config.kill_long_queries_timeout));
        let go = self.commit.as_mut().map(|pipe| {
            use std::io::Write;
            pipe.write_all(b"go\n")
        });
        if !matches!(go, Some(Ok(()))) {
            // The locker is gone already (it could not connect, say): its record says why.
            return Err(self.locker_failed());
        }
        loop {
            let wake = kill_at.map_or(self.deadline, |at| at.min(self.deadline));
            let left = wake
                .saturating_duration_since(Instant::now())
                .min(LOCKER_POLL);
            match self.events.recv_timeout(left) {
                // A locker that ended without a word we saw (its end was read while freeze was
                // busy elsewhere) is judged by its record.
                Err(RecvTimeoutError::Timeout)
                    if left == LOCKER_POLL && self.locker_exited_within(Duration::ZERO) =>
                {
                    return self.attempt_outcome();
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < wake => {}
                Err(RecvTimeoutError::Timeout)
                    if kill_at.is_some() && Instant::now() < self.deadline =>
                {
                    kill_at = None;
                    let locker_connection = match self.state.lock()?.read() {
                        Found::State(state) => state.connection_id,
                        _ => None,
                    };
                    let seconds = self.config.kill_long_queries_timeout;
                    quiet.kill_blockers(&mut session.conn, seconds, locker_connection)?;
                }
                Ok(Event::Signal(signal)) => return Err(interrupted(signal)),
                Ok(Event::Locker(n, _)) | Ok(Event::LockerClosed(n)) if n != attempt => {}
                Ok(Event::Locker(_, line)) if line == "waiting" || line == "ready" => {}
                Ok(Event::Locker(..)) | Ok(Event::LockerClosed(_)) => {
                    return self.attempt_outcome()
                }
                Err(RecvTimeoutError::Timeout) => return Err(self.timeout_error(None)),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::NotLocked {
                        message: "lost contact with the locker".into(),
                    })
                }
            }
        }
    }

    /// What the locker's record says about the attempt that just ended (or holds).
    fn attempt_outcome(&mut self) -> Result<AttemptEnd> {
        let Found::State(state) = self.state.lock()?.read() else {
            return Err(Error::State {
                path: self.state.path(),
                message: "the state file vanished while the locker ran".into(),
            });
        };
        match state.status {
            Status::Acquired => Ok(AttemptEnd::Acquired(state)),
            Status::TimedOut => {
                self.reap_locker();
                Ok(AttemptEnd::TimedOut(state.reason.unwrap_or_default()))
            }
            _ => Err(self.locker_failed()),
        }
    }

    /// The error for a locker that ended without the lock, from its record; reaps it.
    fn locker_failed(&mut self) -> Error {
        self.reap_locker();
        let reason = match self.state.lock().map(|g| g.read()) {
            Ok(Found::State(state)) if state.status == Status::Failed => state.reason,
            _ => None,
        };
        Error::NotLocked {
            message: match reason {
                Some(reason) => format!("the locker could not take the lock: {reason}"),
                None => {
                    "the locker exited without taking the lock (see syslog for its error)".into()
                }
            },
        }
    }

    /// Checks that the lock is held right now: state `acquired`, the locker alive and ours, its
    /// connection on the server under our account.
    fn verify(&mut self, expected: &State, session: &mut Session) -> Result<()> {
        let lost = |message: String| Error::LockLost {
            message: format!("{message}; refusing to report the database as frozen"),
        };
        let Found::State(now) = self.state.lock()?.read() else {
            return Err(lost("the state file is gone".into()));
        };
        if now.status != Status::Acquired {
            return Err(lost(format!(
                "the state is `{}`, not `acquired`",
                now.status.name()
            )));
        }
        let ours = self.locker.as_ref().map(Child::id);
        let locker = now
            .locker
            .clone()
            .filter(|l| Some(l.pid) == ours && Some(l) == expected.locker.as_ref());
        let Some(locker) = locker else {
            return Err(lost(
                "the state names a locker that is not the one this freeze started".into(),
            ));
        };
        if !locker.is_running() {
            return Err(lost(format!(
                "the locker (PID {}) is no longer running",
                locker.pid
            )));
        }
        let id = now.connection_id.unwrap_or(0);
        match server::connection_user(&mut session.conn, id)? {
            Some(user) if Some(&user) == now.user.as_ref() => Ok(()),
            Some(user) => Err(lost(format!(
                "connection {id} belongs to `{user}`, not the locker"
            ))),
            None => Err(lost(format!(
                "the locker's connection {id} is not on the server"
            ))),
        }
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
            if let Some(child) = self.locker.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            self.locker = None;
        }
    }

    /// Ends a locker that has not been told `go`: it holds nothing and records nothing.
    fn discard_locker(&mut self) {
        self.commit = None;
        if let Some(child) = self.locker.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.locker = None;
    }

    /// On any failure: stop the locker (if one runs) so that no lock remains, and record why.
    fn abandon(&mut self, err: &Error) {
        if self.locker.is_some() {
            self.stop_locker();
        }
        let reason = err.to_string();
        let _ = self.update(|s| {
            if !matches!(s.status, Status::Released | Status::Lost) {
                s.status = Status::Failed;
            }
            s.reason = Some(reason);
        });
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
                if let Some(child) = self.locker.as_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                self.locker = None;
                break;
            }
            let Ok(Found::State(state)) = self.state.lock().map(|g| g.read()) else {
                continue;
            };
            let (Status::Waiting, Some(id)) = (state.status, state.connection_id) else {
                continue;
            };
            if killer.is_none() {
                killer = server::connect(&self.config.client, Duration::from_secs(5)).ok();
            }
            if let Some(session) = killer.as_mut() {
                if server::connection_user(&mut session.conn, id)
                    .ok()
                    .flatten()
                    == state.user
                {
                    let _ = session.conn.query_drop(format!("KILL QUERY {id}"));
                }
            }
        }
        log::info!("event=aborted stopped the locker (PID {pid}); no lock remains");
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
