//! `freeze --run -- COMMAND [ARGS…]`: freeze, run COMMAND while the lock is held, release as thaw
//! does, and exit with a status that tells the command's own failure from the lock's.
//!
//! This module owns the command's life: started only once the lock is held (and the `--fsfreeze`
//! mounts are frozen), with the info file and the lock mode in its environment and its output
//! passed through; a signal to freeze is forwarded to it; it is killed once the lock has ended
//! under it (max-lock-time). It never calls a copy consistent on its own: the verdict on the lock
//! is `common::thaw`'s, the same release and the same judgement as a hook's thaw.
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use common::cli::Failure;
use common::error::{EXIT_RUN_LOCK_ENDED, EXIT_RUN_NOT_RUN, EXIT_RUN_UNFINISHED};
use common::fsfreeze::{self, Watchdog};
use common::lifecycle::Verdict;
use common::lock::LockMode;
use common::metrics::Outcome;
use common::phase::Phase;
use common::process::Identity;
use common::state::Found;
use common::{Config, Error, Result};

use crate::freeze::{Event, Freeze, Holding};

/// The command's environment: the info file every copy carries, and the lock mode held.
pub(crate) const ENV_INFO_FILE: &str = "MYSQL_SNAPSHOT_INFO_FILE";
pub(crate) const ENV_LOCK_MODE: &str = "MYSQL_SNAPSHOT_LOCK_MODE";
/// How often freeze looks at the command and the lock's record while the command runs.
const WATCH_POLL: Duration = Duration::from_millis(20);
/// How long the command has after SIGTERM (forwarded, or the lock ended under it) before SIGKILL.
const COMMAND_GRACE: Duration = Duration::from_secs(10);

/// The command to run under the lock, and the mounts to freeze around it.
pub(crate) struct CommandLine {
    program: String,
    args: Vec<String>,
    mounts: Vec<PathBuf>,
}

impl CommandLine {
    /// The command line of `--run` (the words after `--`), or `None` without `--run`.
    pub(crate) fn from_args(
        words: &[String],
        fsfreeze: &[PathBuf],
        run: bool,
        check: bool,
    ) -> Result<Option<CommandLine>> {
        if !run {
            if !fsfreeze.is_empty() {
                return Err(Error::Usage(
                    "--fsfreeze needs --run: mysql-snapshot-freeze --run --fsfreeze MOUNT -- COMMAND [ARGS...]"
                        .into(),
                ));
            }
            return Ok(None);
        }
        if check {
            return Err(Error::Usage(
                "--run and --check exclude each other: --check rehearses a freeze, --run makes one"
                    .into(),
            ));
        }
        match words.split_first() {
            Some((program, args)) if !program.trim().is_empty() => Ok(Some(CommandLine {
                program: program.clone(),
                args: args.to_vec(),
                mounts: fsfreeze.to_vec(),
            })),
            _ => Err(Error::Usage(
                "--run needs a command: mysql-snapshot-freeze --run -- COMMAND [ARGS...]".into(),
            )),
        }
    }
}

/// How the command's run went, before the release.
enum Ran {
    /// The command was never started (the filesystems could not be frozen, or it could not be
    /// executed).
    NotStarted(Error),
    Ended {
        status: ExitStatus,
        /// A signal freeze received and forwarded to the command.
        forwarded: Option<i32>,
        /// Why the lock ended while the command ran (its record said so), if it did.
        lock_ended: Option<String>,
        /// The `--fsfreeze` thaw, when there were mounts.
        thawed: Result<()>,
    },
}

/// freeze `--run`: `Ok` with `--run`'s status, the answer its caller reads (the table in
/// `common::error`: COMMAND's own, or 123–125 with the log line that says why); `Err` for what
/// stops it before a lock is tried (a bad argument: 2; the mount table unreadable: 1).
pub(crate) fn run(config: Config, command: CommandLine) -> Result<ExitCode, Failure> {
    let mounts = fsfreeze::mounts_to_freeze(&command.mounts, &config)?;
    let held = Freeze::new(config.clone()).and_then(Freeze::hold);
    if config.metrics_file.is_some() {
        let outcome = held.as_ref().err().map(Outcome::of_freeze_error);
        crate::freeze::publish_metrics(&config, outcome);
    }
    let mut holding = match held {
        Ok(holding) => holding,
        Err(err) => {
            log::error!("event={} {err}; the command was not run", err.event());
            return Ok(ExitCode::from(EXIT_RUN_NOT_RUN));
        }
    };
    let ran = under_the_lock(&mut holding, &command, &mounts);
    let released = common::thaw::thaw(&holding.config, Phase::Thaw);
    holding.end();
    Ok(ExitCode::from(exit_status(&command.program, ran, released)))
}

/// Freezes the mounts, runs the command to its end and thaws them; the lock stays held.
fn under_the_lock(holding: &mut Holding, command: &CommandLine, mounts: &[PathBuf]) -> Ran {
    let watchdog = match mounts.is_empty() {
        true => None,
        false => {
            let asked = Instant::now();
            match Watchdog::freeze(&holding.config.path, mounts) {
                Ok(watchdog) => {
                    log::info!(
                        "event=fsfrozen mounts={} freeze_ms={}",
                        list(mounts),
                        asked.elapsed().as_millis()
                    );
                    Some(watchdog)
                }
                Err(err) => return Ran::NotStarted(err),
            }
        }
    };
    let mode = holding.acquired.lock_mode.map_or("-", LockMode::name);
    let started = Instant::now();
    let spawned = Command::new(&command.program)
        .args(&command.args)
        .env(ENV_INFO_FILE, &holding.config.info_file)
        .env(ENV_LOCK_MODE, mode)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let thawed = watchdog.map_or(Ok(()), Watchdog::thaw);
            if let Err(thaw) = thawed {
                log::error!("event=fsfreeze {thaw}");
            }
            return Ran::NotStarted(Error::io("run the command", &command.program, err));
        }
    };
    log::info!(
        "event=command-started program={} pid={} lock_mode={mode}",
        common::cli::one_line(&command.program),
        child.id()
    );
    let (status, forwarded, lock_ended) = watch(holding, &mut child);
    log::info!(
        "event=command-ended program={} status={status} ran_ms={}",
        common::cli::one_line(&command.program),
        started.elapsed().as_millis()
    );
    let thawed = watchdog.map_or(Ok(()), |watchdog| {
        let asked = Instant::now();
        watchdog.thaw().inspect(|()| {
            log::info!(
                "event=fsthawed mounts={} thaw_ms={}",
                list(mounts),
                asked.elapsed().as_millis()
            )
        })
    });
    Ran::Ended {
        status,
        forwarded,
        lock_ended,
        thawed,
    }
}

/// Waits for the command: forwards a signal freeze gets, and stops the command once the lock's
/// record says the lock ended under it. Its status, the signal forwarded, and why the lock ended.
fn watch(holding: &Holding, child: &mut Child) -> (ExitStatus, Option<i32>, Option<String>) {
    let pid = child.id();
    let mut forwarded = None;
    let mut lock_ended = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, forwarded, lock_ended),
            Ok(None) => {}
            Err(_) => {
                // Cannot happen for our own child; do not leave it running unwatched.
                use std::os::unix::process::ExitStatusExt;
                let _ = child.kill();
                let status = child
                    .wait()
                    .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
                return (status, forwarded, lock_ended);
            }
        }
        // The channel never disconnects (`holding` keeps a sender): an error is the poll's end.
        if let Ok(Event::Signal(signal)) = holding.events.recv_timeout(WATCH_POLL) {
            log::warn!("event=aborted signal {signal} forwarded to the command (PID {pid}); the lock is released once it ends");
            signal_child(pid, signal);
            forwarded = Some(signal);
            kill_at.get_or_insert(Instant::now() + COMMAND_GRACE);
        }
        if lock_ended.is_none() {
            if let Some(why) = ended_under_the_command(holding) {
                log::error!("event=lost the lock ended while the command (PID {pid}) ran ({why}): stopping it; the snapshot it makes is NOT consistent");
                signal_child(pid, libc::SIGTERM);
                lock_ended = Some(why);
                kill_at = Some(Instant::now() + COMMAND_GRACE);
            }
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            log::error!(
                "event=command-killed the command (PID {pid}) did not end within {} s of SIGTERM",
                COMMAND_GRACE.as_secs()
            );
            let _ = child.kill();
            kill_at = None;
        }
    }
}

/// Why the lock of `holding`'s snapshot is no longer held, if its record says so.
fn ended_under_the_command(holding: &Holding) -> Option<String> {
    match holding.state_file.peek() {
        Ok(Found::State(now)) if now.started_at_ms == holding.acquired.started_at_ms => {
            match now.verdict() {
                Verdict::Held => None,
                _ => Some(now.reason_or("its locker is gone")),
            }
        }
        Ok(_) => Some("the state file no longer describes this snapshot".into()),
        // A state file that cannot be read now: judged at the release.
        Err(_) => None,
    }
}

/// Sends `signal` to our own unreaped child `pid` (its PID cannot have been reused).
fn signal_child(pid: u32, signal: i32) {
    if let Some(child) = Identity::of(pid) {
        child.signal(signal);
    }
}

/// The exit status of `--run` (the table in `common::error`), with the one line that says it.
fn exit_status(program: &str, ran: Ran, released: Result<()>) -> u8 {
    let program = common::cli::one_line(program);
    let (status, forwarded, lock_ended, thawed) = match ran {
        Ran::NotStarted(err) => {
            log::error!("event=refused {err}; the command was not run");
            return EXIT_RUN_NOT_RUN;
        }
        Ran::Ended {
            status,
            forwarded,
            lock_ended,
            thawed,
        } => (status, forwarded, lock_ended, thawed),
    };
    match (released, lock_ended) {
        (Err(err @ Error::LockLost(_)), _) => {
            log::error!("event=lost {program} ran ({status}) but the lock did not hold until it ended: its snapshot is NOT consistent ({err})");
            return EXIT_RUN_LOCK_ENDED;
        }
        (_, Some(why)) => {
            log::error!("event=lost the lock ended before {program} did ({why}); it was stopped ({status}): its snapshot is NOT consistent");
            return EXIT_RUN_LOCK_ENDED;
        }
        (Err(err), None) => {
            log::error!(
                "event={} {program} ran under the lock ({status}), but the release failed: {err}",
                err.event()
            );
            return EXIT_RUN_UNFINISHED;
        }
        (Ok(()), None) => {}
    }
    if let Err(err) = thawed {
        log::error!("event=fsfreeze {program} ran under the lock ({status}), but {err}");
        return EXIT_RUN_UNFINISHED;
    }
    let code = match (forwarded, status.code()) {
        (Some(signal), _) => 128 + signal,
        (None, Some(code)) => code,
        (None, None) => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    let code = u8::try_from(code).unwrap_or(u8::MAX);
    match code {
        0 => log::info!("event=command-done {program} succeeded under the lock, held without a break until it ended"),
        _ => log::error!("event=command-failed {program} failed ({status}) under the lock, which held without a break until it ended; exit {code}"),
    }
    code
}

fn list(mounts: &[PathBuf]) -> String {
    let names: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
    names.join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn run_needs_a_command_and_fsfreeze_needs_run() {
        let usage = |r: Result<Option<CommandLine>>| matches!(r, Err(Error::Usage(_)));
        let mount = [PathBuf::from("/mnt/data")];
        assert!(usage(CommandLine::from_args(&[], &[], true, false)));
        assert!(usage(CommandLine::from_args(
            &words("true"),
            &[],
            true,
            true
        )));
        assert!(usage(CommandLine::from_args(&[], &mount, false, false)));
        // Without --run the words are the hypervisor's phase, as before.
        assert!(CommandLine::from_args(&words("freeze"), &[], false, false)
            .unwrap()
            .is_none());
        let command = CommandLine::from_args(
            &words("btrfs subvolume snapshot -r a b"),
            &mount,
            true,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(command.program, "btrfs");
        assert_eq!(command.args, words("subvolume snapshot -r a b"));
        assert_eq!(command.mounts, mount);
    }
}
