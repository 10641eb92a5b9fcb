//! The locker: the one process that holds the database lock across a snapshot.
//!
//! freeze starts it in its own session with stdio on /dev/null, a pipe to freeze on descriptor 3
//! and a pipe from freeze on descriptor 4. It connects and sets up its session while freeze waits
//! for a quiet moment, then on freeze's `go` takes the lock with a server-side cap, reads the
//! coordinates, records `acquired` in the state file and tells freeze. It then holds until SIGTERM
//! (thaw), `max-lock-time`, or the end of freeze's pipe without `committed` (freeze failed). On the way out it **releases first**, then records, then logs: the filesystem
//! may still be frozen, and nothing may delay the release. While holding it writes nothing but the
//! state file on tmpfs. SIGHUP is ignored.
//!
//! Exit status (seen only by freeze): 0 after a clean release, 3 when the server capped the attempt
//! (freeze may retry), 1 on any other failure. Details are in the state file.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use argh::FromArgs;
use common::lock::{Attempt, LockMode};
use common::process::Identity;
use common::state::{Found, State, StateFile, Status};
use common::{cli, coordinates, logging, server, time, Config, Error, Result};
use mysql::prelude::Queryable;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::Signal(signal) => format!("stopped by signal {signal}"),
        Stop::FreezeGone => "freeze ended without reporting success".to_string(),
        Stop::Go | Stop::Committed => "freeze's word".to_string(),
    }
}

/// Exit status when the server capped the lock attempt.
const EXIT_TIMED_OUT: u8 = 3;
/// Extra seconds of `wait_timeout` beyond `max-lock-time`: the server's own dead-man switch.
const WAIT_TIMEOUT_MARGIN: u64 = 10;

#[derive(FromArgs)]
/// Holds the database lock for one snapshot (started by mysql-snapshot-freeze; not for direct use).
struct Args {
    /// the config file freeze resolved (absent: the built-in defaults, as for freeze)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the lock mode freeze resolved for this server (required)
    #[argh(option)]
    lock_mode: Option<String>,
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
        return cli::print_version("locker");
    }
    let Some(lock_mode) = args.lock_mode else {
        eprintln!("mysql-snapshot-locker: --lock-mode is required; the locker is started by mysql-snapshot-freeze, not by hand");
        return ExitCode::from(common::error::EXIT_USAGE);
    };
    let config = match cli::start("locker", args.config.as_deref(), false) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(mode) = LockMode::parse(&lock_mode) else {
        log::error!("event=refused unknown --lock-mode {lock_mode}");
        return ExitCode::from(1);
    };
    let signals = match listen_for_signals(common::process::inherited_fd(4)) {
        Ok(rx) => rx,
        Err(err) => {
            log::error!("event=refused cannot install signal handlers: {err}");
            return ExitCode::from(1);
        }
    };
    let mut locker = Locker {
        notify: common::process::inherited_fd(3),
        state: match StateFile::open(&config.run_dir, false) {
            Ok(state) => state,
            Err(err) => {
                log::error!("event=refused {err}");
                return ExitCode::from(1);
            }
        },
        config,
        mode,
        signals,
    };
    match locker.run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            log::error!("event={} {err}", err.event());
            locker.record_end(Status::Failed, &err.to_string());
            ExitCode::from(1)
        }
    }
}

/// What reaches the locker from outside: signals, and freeze's words on the commit pipe.
enum Stop {
    Signal(i32),
    /// freeze says: now is a quiet moment, take the lock.
    Go,
    /// freeze reports success: from now on only thaw or max-lock-time ends the lock.
    Committed,
    /// freeze closed its end of the commit pipe without confirming success: it failed or died.
    FreezeGone,
}

/// SIGTERM and SIGINT arrive on the returned channel (SIGHUP is swallowed), and so do freeze's
/// words on the commit pipe (descriptor 4): `go`, `committed`, or its end without `committed`.
fn listen_for_signals(commit: Option<std::fs::File>) -> std::io::Result<Receiver<Stop>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = mpsc::channel();
    let to_main = tx.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal != SIGHUP && to_main.send(Stop::Signal(signal)).is_err() {
                break;
            }
        }
    });
    if let Some(commit) = commit {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(commit).lines() {
                let message = match line.as_deref() {
                    Ok("go") => Stop::Go,
                    Ok("committed") => {
                        let _ = tx.send(Stop::Committed);
                        return;
                    }
                    _ => break,
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
            let _ = tx.send(Stop::FreezeGone);
        });
    }
    Ok(rx)
}

struct Locker {
    config: Config,
    mode: LockMode,
    state: StateFile,
    notify: Option<std::fs::File>,
    signals: Receiver<Stop>,
}

impl Locker {
    fn run(&mut self) -> Result<u8> {
        let read_timeout = Duration::from_secs(self.config.lock_wait_timeout + 10);
        let mut session = server::connect(&self.config.client, read_timeout)?;
        let mode = self.mode.resolve(&session.info)?;
        let mut setup = format!(
            "SET SESSION lock_wait_timeout = {}, wait_timeout = {}, autocommit = 1",
            self.config.lock_wait_timeout,
            self.config.max_lock_time + WAIT_TIMEOUT_MARGIN
        );
        if session.info.flavor == server::Flavor::MariaDb {
            setup.push_str(&format!(
                ", max_statement_time = {}",
                self.config.lock_wait_timeout
            ));
        }
        session
            .conn
            .query_drop(&setup)
            .map_err(|e| Error::server(&setup, &e))?;
        // Connected and ready: freeze decides when (it claims the run and waits for a quiet
        // moment meanwhile). Until `go` the state file may not be ours yet: touch nothing.
        let me = Identity::current();
        self.notify("ready");
        loop {
            match self.signals.recv() {
                Ok(Stop::Go) => break,
                Ok(Stop::Committed) => {}
                Ok(_) | Err(_) => return Ok(1),
            }
        }
        let connection_id = session.info.connection_id;
        let user = self.config.client.user.clone();
        self.update(|s| {
            s.status = Status::Waiting;
            s.locker = me.clone();
            s.connection_id = Some(connection_id);
            s.user = Some(user.clone());
            s.lock_mode = Some(mode.name().into());
        })?;
        if let Ok(stop @ (Stop::Signal(_) | Stop::FreezeGone)) = self.signals.try_recv() {
            self.record_end(
                Status::Failed,
                &format!("{} before locking", describe(&stop)),
            );
            return Ok(1);
        }

        let attempt_started = Instant::now();
        match mode.acquire(&mut session.conn, self.config.pre_flush)? {
            Attempt::TimedOut { statement, message } => {
                let reason = format!(
                    "`{statement}` capped by the server after {} ms: {message}",
                    attempt_started.elapsed().as_millis()
                );
                self.record_end(Status::TimedOut, &reason);
                self.notify("timed-out");
                return Ok(EXIT_TIMED_OUT);
            }
            Attempt::Acquired => {}
        }
        let acquired = Instant::now();
        let acquired_at_ms = time::now_unix_ms();
        // From here until release, only the state file on tmpfs is written.
        logging::defer_file();
        let coordinates = match coordinates::read(&mut session.conn, &session.info) {
            Ok(c) => c,
            Err(err) => {
                let _ = mode.release(&mut session.conn);
                logging::resume_file();
                return Err(err);
            }
        };
        let coordinates_json = serde_json::to_value(&coordinates).ok();
        if let Err(err) = self.update(|s| {
            s.status = Status::Acquired;
            s.acquired_at_ms = Some(acquired_at_ms);
            s.coordinates = coordinates_json.clone();
        }) {
            let _ = mode.release(&mut session.conn);
            logging::resume_file();
            return Err(err);
        }
        self.notify("acquired");
        self.notify = None; // freeze has what it needs; close our end.
        log::info!(
            "event=locked mode={} connection={connection_id} lock_ms={}",
            mode.name(),
            acquired.duration_since(attempt_started).as_millis()
        );

        // Hold until thaw's SIGTERM or max-lock-time.
        let max = Duration::from_secs(self.config.max_lock_time);
        let cause = loop {
            let left = max.saturating_sub(acquired.elapsed());
            match self.signals.recv_timeout(left) {
                Ok(Stop::Go | Stop::Committed) => {}
                Ok(stop) => break Some(stop),
                Err(RecvTimeoutError::Timeout) => break None,
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left),
            }
        };
        // Release first.
        let released = mode.release(&mut session.conn);
        let held_ms = acquired.elapsed().as_millis();
        let thaw_asked =
            matches!(self.state.peek(), Ok(Found::State(s)) if s.thaw_requested_at_ms.is_some());
        let reason = match cause {
            None => format!(
                "max-lock-time ({} s) reached before thaw",
                self.config.max_lock_time
            ),
            Some(Stop::Signal(_)) if thaw_asked => "thaw".to_string(),
            Some(stop) => describe(&stop),
        };
        let (status, reason) = match released {
            Ok(()) => (Status::Released, reason),
            Err(err) => (
                Status::Lost,
                format!("the connection holding the lock was gone at release ({err}); the lock was lost before {reason}"),
            ),
        };
        self.record_end(status, &reason);
        logging::resume_file();
        match status {
            Status::Released if reason == "thaw" => {
                log::info!("event=released reason=thaw held_ms={held_ms}")
            }
            Status::Released => log::error!(
                "event=released reason=\"{reason}\" held_ms={held_ms}: the lock ended before thaw; the snapshot may not be application-consistent"
            ),
            _ => log::error!("event=lost held_ms={held_ms} {reason}"),
        }
        Ok(0)
    }

    /// Tells freeze about a status change; a closed pipe (freeze gone) is not an error.
    fn notify(&mut self, status: &str) {
        if let Some(pipe) = self.notify.as_mut() {
            let _ = pipe.write_all(format!("{status}\n").as_bytes());
        }
    }

    /// Applies `change` to the state under the flock. The state must still be this snapshot's.
    fn update(&self, change: impl FnOnce(&mut State)) -> Result<()> {
        let guard = self.state.lock()?;
        match guard.read() {
            Found::State(mut state) => {
                change(&mut state);
                guard.write(&state)
            }
            Found::Nothing | Found::Stale(_) => Err(Error::State {
                path: self.state.path(),
                message: "the state file vanished or was replaced while the locker ran".into(),
            }),
        }
    }

    /// Records how this locker ended; failures to record are logged, never fatal.
    fn record_end(&self, status: Status, reason: &str) {
        let result = self.update(|s| {
            s.status = status;
            s.reason = Some(reason.to_string());
            if matches!(status, Status::Released | Status::Lost) {
                s.released_at_ms = Some(time::now_unix_ms());
            }
        });
        if let Err(err) = result {
            log::warn!("event=state-error cannot record {}: {err}", status.name());
        }
    }
}
