//! Process identity and the few system calls std lacks: who we are, whether a recorded PID is
//! still the same process, signals, and spawning the locker in its own session.
//!
//! A PID read from the state file is never signalled unless its start time (from /proc) equals the
//! recorded one and its executable is the recorded one: a reused PID must never be hit.
//! This is the only module with `unsafe` code; each block says why it is sound.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The login name of the effective user (from /etc/passwd), as the `mysql` client defaults it.
pub fn effective_user_name() -> String {
    let uid = effective_uid();
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?.parse::<u32>().ok()?;
                (id == uid).then(|| name.to_string())
            })
        });
    match from_passwd {
        Some(name) => name,
        None if uid == 0 => "root".to_string(),
        None => std::env::var("USER").unwrap_or_else(|_| uid.to_string()),
    }
}

/// Who a process is: enough to tell it from a later process that got the same PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    /// Start time in clock ticks after boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    pub exe: PathBuf,
}

impl Identity {
    /// The identity of the calling process.
    pub fn current() -> Option<Identity> {
        Identity::of(std::process::id())
    }

    /// The identity of a running (not zombie) process, if it exists and can be inspected.
    pub fn of(pid: u32) -> Option<Identity> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
            return None;
        }
        let start_time = fields.get(19)?.parse().ok()?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        Some(Identity {
            pid,
            start_time,
            exe,
        })
    }

    /// True while this exact process (same PID, start time and executable) is alive.
    pub fn is_running(&self) -> bool {
        Identity::of(self.pid)
            .is_some_and(|now| now.start_time == self.start_time && same_exe(&now.exe, &self.exe))
    }

    /// Sends `signal` only if this exact process is still running. Returns whether it was sent.
    pub fn signal(&self, signal: i32) -> bool {
        if !self.is_running() {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill takes plain integers and touches no memory of ours. The identity check just
        // above makes a reused PID very unlikely to be hit; the window is a few microseconds.
        unsafe { libc::kill(pid, signal) == 0 }
    }
}

/// An executable that was replaced by an upgrade shows as "PATH (deleted)".
fn same_exe(now: &std::path::Path, recorded: &std::path::Path) -> bool {
    let now = now.to_string_lossy();
    let recorded = recorded.to_string_lossy();
    now == recorded || now.strip_suffix(" (deleted)") == Some(&*recorded)
}

/// Descriptors above this are scratch space while `spawn_detached` rearranges the child's fds.
const SCRATCH_FD: i32 = 64;

/// Starts `command` in a new session (`setsid`) with stdin, stdout and stderr on /dev/null, so it
/// outlives the hook and holds nothing a hypervisor agent waits on. `pass[i]` becomes descriptor
/// `3 + i` in the child; every other descriptor is closed on exec (std opens everything
/// close-on-exec).
pub fn spawn_detached(command: &mut Command, pass: &[i32]) -> std::io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    detach(command, pass)
}

/// As [`spawn_detached`], with nothing passed but a pipe on the child's stdin (the metrics
/// writer reads its update there; the pipe is ours alone, no agent waits on it).
pub fn spawn_detached_with_stdin(command: &mut Command) -> std::io::Result<Child> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    detach(command, &[])
}

/// As [`spawn_detached`], with stdin, stdout and stderr as `command` sets them (the fsfreeze
/// watchdog talks to freeze over its stdin and stdout).
pub fn spawn_detached_keeping_stdio(command: &mut Command) -> std::io::Result<Child> {
    detach(command, &[])
}

/// Starts the locker binary installed next to this one with `flag` (and `--config` when `config`
/// exists), detached, with `payload` on its stdin, and waits for it at most `deadline`: its exit
/// status if it ended by then, `None` if it is left to finish on its own. A writer stuck on a
/// frozen filesystem so holds up nobody (a thread of ours would: a process whose thread sleeps in
/// the kernel on a frozen filesystem cannot exit).
pub fn hand_off(
    flag: &str,
    config: &std::path::Path,
    payload: &str,
    deadline: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    use std::io::Write;
    let writer = std::env::current_exe()?.with_file_name("mysql-snapshot-locker");
    let mut command = Command::new(writer);
    command.arg(flag).current_dir("/");
    if config.exists() {
        command.arg("--config").arg(config);
    }
    let mut child = spawn_detached_with_stdin(&mut command)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A few hundred bytes: the pipe takes them at once.
        stdin.write_all(payload.as_bytes())?;
    }
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if std::time::Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn detach(command: &mut Command, pass: &[i32]) -> std::io::Result<Child> {
    let pass: Vec<i32> = pass.to_vec();
    // SAFETY: the closure runs between fork and exec in the child and calls only async-signal-safe
    // functions (setsid, fcntl, dup2); it allocates nothing (`pass` was built before the fork).
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // First move every source out of the way, so that no target clobbers a source.
            let mut moved = [0i32; 8];
            for (i, fd) in pass.iter().enumerate().take(moved.len()) {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, SCRATCH_FD);
                if high == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = high;
            }
            for (i, high) in moved.iter().enumerate().take(pass.len().min(moved.len())) {
                // dup2 clears close-on-exec on the target.
                if libc::dup2(*high, 3 + i as i32) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Takes ownership of descriptor `fd` (3 or above), which `spawn_detached` passed on purpose, if it
/// is open.
pub fn inherited_fd(fd: i32) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return None;
    }
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this process by freeze for
    // this one use; nothing else in the process refers to it. Mark it close-on-exec again.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(std::fs::File::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_recognised_and_a_changed_start_time_is_not() {
        let me = Identity::current().expect("own /proc entry");
        assert!(me.is_running());
        let impostor = Identity {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!impostor.is_running());
        assert!(
            !impostor.signal(0),
            "a PID with another start time must never be signalled"
        );
    }

    #[test]
    fn an_upgraded_binary_still_counts_as_the_same_executable() {
        let p = std::path::Path::new("/usr/sbin/x");
        assert!(same_exe(std::path::Path::new("/usr/sbin/x (deleted)"), p));
        assert!(!same_exe(std::path::Path::new("/usr/bin/bash"), p));
    }
}
