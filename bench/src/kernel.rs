//! The few system calls std lacks for measuring: `wait4` with resource usage (the CPU time of a
//! finished child; not its `ru_maxrss`, which counts the address space the process had before
//! exec, i.e. this runner's), becoming a child subreaper (so the detached locker is reaped here
//! and its usage seen), and raising `RLIMIT_NOFILE`.
//!
//! The only module with `unsafe`; each block says why it is sound. It never signals anything.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

/// How a child ended and what it used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// Exit code, `None` when killed by a signal.
    pub(crate) code: Option<i32>,
    /// User + system CPU time.
    pub(crate) cpu: Duration,
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}

fn wait4(pid: u32, flags: i32) -> io::Result<Option<Usage>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero bytes are a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live locals of the right types for the whole call.
        let got = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if got == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if got == 0 {
            return Ok(None);
        }
        let code = if libc::WIFEXITED(status) {
            Some(libc::WEXITSTATUS(status))
        } else {
            None
        };
        return Ok(Some(Usage {
            code,
            cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        }));
    }
}

/// Waits for child `pid` to end and returns its usage.
pub(crate) fn wait(pid: u32) -> io::Result<Usage> {
    wait4(pid, 0)?.ok_or_else(|| io::Error::other("wait4 returned no child"))
}

/// The usage of child `pid` if it has ended, without blocking.
pub(crate) fn try_wait(pid: u32) -> io::Result<Option<Usage>> {
    wait4(pid, libc::WNOHANG)
}

/// Makes this process the reaper of its orphaned descendants (the locker, once freeze exits).
pub(crate) fn become_subreaper() -> io::Result<()> {
    let one: libc::c_ulong = 1;
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, one) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard limit (and the hard one too, when allowed, up to
/// `want`). Returns the soft limit now in force.
pub(crate) fn raise_open_files(want: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live local of the type getrlimit writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let wanted = libc::rlimit {
        rlim_cur: want.max(limit.rlim_cur),
        rlim_max: want.max(limit.rlim_max),
    };
    // SAFETY: `wanted` is a live local of the type setrlimit reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(wanted.rlim_cur);
    }
    // Not allowed to raise the hard limit: take what the hard limit gives.
    let within = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &within) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(within.rlim_cur)
}
