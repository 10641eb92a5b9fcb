//! `freeze --run --fsfreeze MOUNT`: filesystems frozen (FIFREEZE) once the lock is held and
//! before the command, thawed (FITHAW) after it — by a watchdog process, so that no way out of
//! freeze leaves one frozen.
//!
//! The watchdog (`mysql-snapshot-locker --fsfreeze-watchdog`, started detached in its own session
//! with pipes to freeze on stdin and stdout) opens the mounts, freezes them, says `frozen`, and
//! thaws them when freeze says `thaw` — or when its stdin ends (freeze exited, however: even
//! SIGKILL closes the pipe), or at `max-lock-time` plus a margin (freeze stopped), whichever comes
//! first. It ignores SIGTERM, SIGINT and SIGHUP. It never writes to a file: it must not need the
//! filesystems it froze. freeze refuses, before any lock, a mount that is no mount point or that
//! holds the run directory or the log file (a write there would block until the watchdog's
//! deadline).
//!
//! Words on the pipes, one per line: freeze → watchdog `thaw`; watchdog → freeze `frozen`,
//! `thawed`, or `failed <why>`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Config, Error, Result};

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` in the asm-generic encoding (x86_64,
/// aarch64, arm, riscv: the architectures mysql-snapshot is built for).
const FIFREEZE: u32 = 0xC004_5877;
const FITHAW: u32 = 0xC004_5878;

/// What the watchdog adds to `max-lock-time` before it thaws on its own.
pub const WATCHDOG_MARGIN: Duration = Duration::from_secs(10);

const FROZEN: &str = "frozen";
const THAW: &str = "thaw";
const THAWED: &str = "thawed";
const FAILED: &str = "failed";

fn ioctl(file: &File, request: u32) -> std::io::Result<()> {
    // SAFETY: FIFREEZE and FITHAW take no argument (the int is unused); the descriptor is open
    // for the duration of the call (borrowed from `file`).
    let done = unsafe { libc::ioctl(file.as_raw_fd(), request as libc::Ioctl, 0) };
    if done == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The mount points `asked` as absolute paths, each checked: a directory that is a mount point,
/// not holding the run directory or the log file. Refused with what to do.
pub fn mounts_to_freeze(asked: &[PathBuf], config: &Config) -> Result<Vec<PathBuf>> {
    let mut keep_thawed = vec![(config.run_dir.clone(), "the run directory")];
    if let Some(log) = config.log_file.as_ref().and_then(|l| l.parent()) {
        keep_thawed.push((log.to_path_buf(), "the log file"));
    }
    let mount_points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| crate::storage::parse_mountinfo(&text))
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    for path in asked {
        let refuse = |why: String| {
            Error::Usage(format!(
                "--fsfreeze {}: {why}; name the mount point of a filesystem that holds the server's files",
                path.display()
            ))
        };
        let mount = path
            .canonicalize()
            .map_err(|e| refuse(format!("cannot be read ({e})")))?;
        let meta = mount
            .metadata()
            .map_err(|e| refuse(format!("cannot be read ({e})")))?;
        if !meta.is_dir() {
            return Err(refuse("is not a directory".into()));
        }
        // From the mount table, not from device numbers: a btrfs subvolume has one of its own.
        if !mount_points.contains(&mount) {
            return Err(refuse("is not a mount point".into()));
        }
        for (path, what) in &keep_thawed {
            if device_of_nearest(path) == Some(meta.dev()) {
                return Err(refuse(format!(
                    "holds {what} ({}), which must stay writable while the command runs",
                    path.display()
                )));
            }
        }
        // One filesystem named twice (a bind mount, a symlink): frozen once.
        if !devices.contains(&meta.dev()) {
            devices.push(meta.dev());
            mounts.push(mount);
        }
    }
    Ok(mounts)
}

/// The device of `path`, or of its nearest existing ancestor: where it lies, or will once it is
/// created (freeze makes the run directory on first use).
fn device_of_nearest(path: &Path) -> Option<u64> {
    path.ancestors()
        .find_map(|p| p.metadata().ok())
        .map(|m| m.dev())
}

/// freeze's handle on a running watchdog whose filesystems are frozen. Dropping it (or freeze's
/// death) closes its stdin: it thaws them.
pub struct Watchdog {
    child: Child,
    orders: Option<ChildStdin>,
    words: BufReader<ChildStdout>,
}

impl Watchdog {
    /// Starts the watchdog (the locker binary next to this one, with `config_path` when it
    /// exists) on `mounts`, and returns once they are frozen; if one cannot be, those already
    /// frozen are thawed and the error says which failed.
    pub fn freeze(config_path: &Path, mounts: &[PathBuf]) -> Result<Watchdog> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("find", "our own executable", e))?
            .with_file_name("mysql-snapshot-locker");
        let mut command = Command::new(&exe);
        command.arg("--fsfreeze-watchdog").current_dir("/");
        if config_path.exists() {
            command.arg("--config").arg(config_path);
        }
        for mount in mounts {
            command.arg("--mount").arg(mount);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = crate::process::spawn_detached_keeping_stdio(&mut command)
            .map_err(|e| Error::io("start the fsfreeze watchdog", &exe, e))?;
        let (Some(orders), Some(words)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::io(
                "talk to the fsfreeze watchdog",
                &exe,
                std::io::ErrorKind::BrokenPipe.into(),
            ));
        };
        let mut watchdog = Watchdog {
            child,
            orders: Some(orders),
            words: BufReader::new(words),
        };
        match watchdog.word().as_deref() {
            Some(FROZEN) => Ok(watchdog),
            other => {
                let _ = watchdog.child.wait();
                Err(frozen_failed(other, "freeze"))
            }
        }
    }

    /// Thaws the filesystems and waits for the watchdog to end; an error names what stayed
    /// frozen (and says how to thaw it).
    pub fn thaw(mut self) -> Result<()> {
        if let Some(mut orders) = self.orders.take() {
            let _ = orders.write_all(format!("{THAW}\n").as_bytes());
        }
        let word = self.word();
        let _ = self.child.wait();
        match word.as_deref() {
            Some(THAWED) => Ok(()),
            other => Err(frozen_failed(other, "thaw")),
        }
    }

    fn word(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.words.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_string()),
            _ => None,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing its stdin makes it thaw; it is reaped when it ends (or by init after us).
        self.orders = None;
        let _ = self.child.try_wait();
    }
}

fn frozen_failed(word: Option<&str>, step: &str) -> Error {
    let why = match word {
        Some(word) => word.strip_prefix(FAILED).unwrap_or(word).trim().to_string(),
        None => "the watchdog ended without a word".into(),
    };
    Error::State {
        path: "fsfreeze".into(),
        message: format!(
            "could not {step} the filesystems: {why}; check with `fsfreeze --unfreeze MOUNT` that none stays frozen"
        ),
    }
}

/// The watchdog's run (`mysql-snapshot-locker --fsfreeze-watchdog`): freezes `mounts`, says so on
/// `words`, and thaws them on `thaw` or the end of `orders`, or after `deadline`. Returns whether
/// every filesystem it froze was thawed.
pub fn watch(
    mounts: &[PathBuf],
    deadline: Duration,
    orders: impl std::io::Read + Send + 'static,
    mut words: impl Write,
) -> bool {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler; nothing runs on the signal. Only the end of
        // freeze's pipe, its `thaw` or the deadline thaws.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // The listener starts before anything is frozen: a thread that cannot be had then (a tasks
    // limit) fails the freeze instead of aborting with filesystems frozen.
    let (tx, rx) = mpsc::channel();
    let listener = std::thread::Builder::new().spawn(move || {
        // Any line (`thaw`), or the end of the pipe: either way it is time.
        let mut line = String::new();
        let _ = BufReader::new(orders).read_line(&mut line);
        let _ = tx.send(());
    });
    if let Err(err) = listener {
        let _ = writeln!(words, "{FAILED} start the watchdog's listener: {err}");
        return true;
    }
    let mut frozen: Vec<(PathBuf, File)> = Vec::new();
    for mount in mounts {
        let opened = File::open(mount).and_then(|file| ioctl(&file, FIFREEZE).map(|()| file));
        match opened {
            Ok(file) => frozen.push((mount.clone(), file)),
            Err(err) => {
                let thawed = thaw_all(&frozen);
                let _ = writeln!(
                    words,
                    "{FAILED} {}: {err}{}",
                    mount.display(),
                    thawed.err().map_or(String::new(), |e| format!("; {e}"))
                );
                return frozen.is_empty();
            }
        }
    }
    let _ = writeln!(words, "{FROZEN}");
    let _ = words.flush();
    let _ = rx.recv_timeout(deadline);
    match thaw_all(&frozen) {
        Ok(()) => {
            let _ = writeln!(words, "{THAWED}");
            true
        }
        Err(why) => {
            let _ = writeln!(words, "{FAILED} {why}");
            false
        }
    }
}

/// Thaws every filesystem in `frozen`, last frozen first; an error lists those that failed.
fn thaw_all(frozen: &[(PathBuf, File)]) -> std::result::Result<(), String> {
    let failed: Vec<String> = frozen
        .iter()
        .rev()
        .filter_map(|(mount, file)| {
            ioctl(file, FITHAW)
                .err()
                .map(|e| format!("{}: {e}", mount.display()))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("FITHAW failed on {}", failed.join(", ")))
    }
}
