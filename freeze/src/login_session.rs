//! Starts the locker outside the caller's login session, so that the session's end cannot take
//! the lock with it. It owns the choice of how the locker is spawned; it must never make the path
//! of a caller that is a system service (VMware Tools, qemu-ga, the cloud agents) slower than one
//! read of `/proc/self/cgroup`.
//!
//! Why: a caller that logs in (Veeam's job scripts and NAKIVO over SSH, usually through sudo) runs
//! freeze in its session's cgroup (`/user.slice/user-1000.slice/session-4.scope`). `setsid` leaves
//! the session of the terminal, not the cgroup: when systemd-logind has `KillUserProcesses=yes`,
//! or the session's scope is stopped at logout, every process in it is killed, the locker
//! included, and the server drops the lock before the snapshot is taken.
//!
//! How: when freeze's own cgroup lies under `user.slice` and systemd runs, the locker is started
//! as `systemd-run --scope --slice=system.slice -- <locker argv>`. systemd-run creates a scope
//! unit holding its own PID, waits for it, and then **execs the command in place**: the PID freeze
//! spawned becomes the locker, still freeze's child, with the same detached stdio and the pipes
//! on descriptors 3 and 4 (systemd-run opens its bus connection close-on-exec and touches no other
//! descriptor). Everything that knows the locker by PID (its record, freeze's checks, thaw's
//! SIGTERM) works unchanged. Moving an already started locker with D-Bus `StartTransientUnit`
//! would do too, but needs a bus client of our own (a new dependency) or a second program run.
//! Until the exec, `/proc/PID/exe` names systemd-run: freeze waits for it to name the locker
//! (the time of systemd-run's one bus round trip) so that every identity it takes afterwards is
//! the locker's. A systemd-run that is missing, fails or does not exec in time leaves the locker
//! started as before, with a warning naming the risk.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::process;

/// Where systemd says it is the init system (sd_booted(3)).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// Where systemd-run is looked for, in order.
const SYSTEMD_RUN: [&str; 2] = ["/usr/bin/systemd-run", "/bin/systemd-run"];
/// How long systemd-run may take to create the scope and exec the locker.
const EXEC_LIMIT: Duration = Duration::from_secs(10);

/// Starts `command` (the locker, `locker_exe`) detached with `pass` as descriptors 3 and up (see
/// [`process::spawn_detached`]): in a scope of its own under `system.slice` when freeze runs in a
/// login session under systemd, else directly. `unit` names the scope (unique per locker).
pub(crate) fn spawn_locker(
    command: &mut Command,
    pass: &[i32],
    locker_exe: &Path,
    unit: &str,
) -> std::io::Result<Child> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(session) = user_cgroup(&own) else {
        return process::spawn_detached(command, pass);
    };
    if !Path::new(SYSTEMD_RUNNING).is_dir() {
        return process::spawn_detached(command, pass);
    }
    let escaped = match SYSTEMD_RUN.iter().map(Path::new).find(|p| p.is_file()) {
        None => Err("systemd-run is not installed".to_string()),
        Some(systemd_run) => in_own_scope(command, pass, locker_exe, systemd_run, unit),
    };
    match escaped {
        Ok(child) => {
            log::info!("event=scope the locker (PID {}) runs in {unit}.scope under system.slice, outside the caller's cgroup {session}", child.id());
            Ok(child)
        }
        Err(why) => {
            log::warn!("event=warning the locker stays in the caller's cgroup {session} ({why}): if that login session ends (logout with KillUserProcesses=yes, or its scope stopped) before thaw, the locker dies and the lock is lost before the snapshot");
            process::spawn_detached(command, pass)
        }
    }
}

/// The cgroup of the line systemd manages (cgroup v2 `0::`, else v1 `name=systemd`) when it lies
/// under `user.slice`: a login session's scope, or a user's own manager.
fn user_cgroup(proc_cgroup: &str) -> Option<&str> {
    let path = |prefix: &str| {
        proc_cgroup
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
    };
    let path = path("0::").filter(|p| *p != "/").or_else(|| {
        proc_cgroup
            .lines()
            .find_map(|line| line.split_once(":name=systemd:").map(|(_, p)| p))
    })?;
    path.starts_with("/user.slice/").then_some(path)
}

/// Runs `command` through `systemd-run --scope` and waits until the child is the locker; on
/// failure the child is gone and the error says why.
fn in_own_scope(
    command: &Command,
    pass: &[i32],
    locker_exe: &Path,
    systemd_run: &Path,
    unit: &str,
) -> Result<Child, String> {
    let mut wrapped = Command::new(systemd_run);
    wrapped
        .args(["--scope", "--quiet", "--collect", "--no-ask-password"])
        .arg(format!("--unit={unit}"))
        .args(["--slice=system.slice", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let expected = std::fs::canonicalize(locker_exe).unwrap_or_else(|_| locker_exe.to_path_buf());
    let mut child = process::spawn_detached(&mut wrapped, pass)
        .map_err(|e| format!("{} could not start: {e}", systemd_run.display()))?;
    let until = Instant::now() + EXEC_LIMIT;
    loop {
        if exe_of(child.id()).as_deref() == Some(expected.as_path()) {
            return Ok(child);
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!(
                    "systemd-run failed ({status}) before it started the locker"
                ))
            }
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                // Not the locker yet: it holds nothing.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "systemd-run did not start the locker within {} s",
                    EXEC_LIMIT.as_secs()
                ));
            }
        }
    }
}

/// What `/proc/PID/exe` names now.
fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_session_or_user_manager_is_recognised_and_a_system_service_is_not() {
        let v2 = |path: &str| format!("0::{path}\n");
        assert_eq!(
            user_cgroup(&v2("/user.slice/user-1000.slice/session-4.scope")),
            Some("/user.slice/user-1000.slice/session-4.scope")
        );
        assert_eq!(
            user_cgroup(&v2(
                "/user.slice/user-0.slice/user@0.service/app.slice/x.scope"
            )),
            Some("/user.slice/user-0.slice/user@0.service/app.slice/x.scope")
        );
        assert_eq!(user_cgroup(&v2("/system.slice/vmtoolsd.service")), None);
        assert_eq!(
            user_cgroup(&v2("/system.slice/qemu-guest-agent.service")),
            None
        );
        assert_eq!(user_cgroup(&v2("/user.slicex/y")), None);
        assert_eq!(user_cgroup(&v2("/")), None);
        assert_eq!(user_cgroup(""), None);
        // cgroup v1 (hybrid): systemd's own hierarchy decides.
        let v1 = "4:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n0::/\n";
        assert_eq!(
            user_cgroup(v1),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(
            user_cgroup("1:name=systemd:/system.slice/cron.service\n0::/\n"),
            None
        );
    }
}
