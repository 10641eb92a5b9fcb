//! Where a freeze's (and a thaw's) milliseconds go: freeze and thaw run under `strace -f` with a
//! seccomp filter (only the syscalls that mark a phase are stopped on), and the phase boundaries
//! are read from the traces — exec, spawning the locker, its connect, the quiet-moment query, the
//! lock statements, the coordinates, the info-file fsyncs, the state writes, the release.
//!
//! Tracing slows the traced processes; the traced total is reported next to the untraced one so
//! the phases can be read as shares. It never runs without strace and never changes the product.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::figures::{Bench, Outcome};
use crate::flavour::{Mode, Target};
use crate::product::{self, Product};
use crate::report::Row;
use crate::stats::Samples;

const STRACE: &str = "/usr/bin/strace";
const SYSCALLS: &str =
    "trace=execve,clone,clone3,connect,sendto,recvfrom,write,rename,fsync,kill,exit_group";

/// One line of an strace -f -ttt -T log.
#[derive(Debug, Clone)]
struct Event {
    pid: u32,
    /// Seconds since the epoch.
    at: f64,
    name: String,
    text: String,
    /// Syscall duration, when the line has one.
    took: Option<f64>,
    unfinished: bool,
    resumed: bool,
}

fn parse(line: &str) -> Option<Event> {
    let mut parts = line.splitn(2, char::is_whitespace);
    let pid = parts.next()?.parse().ok()?;
    let rest = parts.next()?.trim_start();
    let (at, rest) = rest.split_once(' ')?;
    let at = at.parse().ok()?;
    let (name, resumed) = if let Some(r) = rest.strip_prefix("<... ") {
        (r.split(' ').next()?.to_string(), true)
    } else if rest.starts_with("+++") {
        ("+++".to_string(), false)
    } else if rest.starts_with("---") {
        ("---".to_string(), false)
    } else {
        (rest.split('(').next()?.to_string(), false)
    };
    let took = rest
        .rsplit_once(" <")
        .and_then(|(_, t)| t.strip_suffix('>'))
        .and_then(|t| t.parse().ok());
    Some(Event {
        pid,
        at,
        name,
        text: rest.to_string(),
        took,
        unfinished: rest.ends_with("<unfinished ...>"),
        resumed,
    })
}

struct Trace {
    events: Vec<Event>,
}

impl Trace {
    fn read(path: &Path) -> Trace {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Trace {
            events: text.lines().filter_map(parse).collect(),
        }
    }

    fn pid_of(&self, exe: &str) -> Option<u32> {
        self.events
            .iter()
            .find(|e| e.name == "execve" && !e.resumed && e.text.contains(exe))
            .map(|e| e.pid)
    }

    /// Index of the first call of `name` by `pid` whose text has `needle`, at or after `after`.
    fn find(&self, pid: u32, name: &str, needle: &str, after: f64) -> Option<usize> {
        self.events.iter().position(|e| {
            e.pid == pid && e.name == name && !e.resumed && e.at >= after && e.text.contains(needle)
        })
    }

    fn at(&self, pid: u32, name: &str, needle: &str, after: f64) -> Option<f64> {
        self.find(pid, name, needle, after)
            .map(|i| self.events[i].at)
    }

    /// When the call at `index` returned.
    fn end(&self, index: usize) -> f64 {
        let e = &self.events[index];
        if !e.unfinished {
            return e.at + e.took.unwrap_or(0.0);
        }
        self.events[index + 1..]
            .iter()
            .find(|r| r.pid == e.pid && r.resumed && r.name == e.name)
            .map_or(e.at, |r| r.at)
    }

    fn has_exited(&self, pid: u32) -> bool {
        self.events.iter().any(|e| e.pid == pid && e.name == "+++")
    }
}

/// Phase names, in order; each phase runs from one milestone to the next.
const FREEZE_PHASES: [&str; 10] = [
    "freeze: exec, config, logging, spawn locker",
    "locker: exec, config, logging",
    "locker: connect (handshake + SELECT VERSION()), then privileges, session caps and surroundings (one round trip)",
    "locker: quiet-moment query (SHOW FULL PROCESSLIST) sent → first reply bytes",
    "locker: rest of the reply read and filtered, tables scan joined, state `waiting`",
    "locker: lock statement(s) and coordinate reads (one round trip) → first reply bytes",
    "locker: rest of the replies read, info file handed to its writer",
    "locker: info file write + fsync + rename + dir fsync",
    "locker: connection check (DO 0) + state `acquired`",
    "freeze: wake, read the `acquired` record, check the locker (/proc), log, exit",
];
const EXTRAS: [&str; 3] = [
    "of which: info file fsync (syscall)",
    "of which: info directory fsync (syscall)",
    "of which: locker's handshake processing (client CPU)",
];
const THAW_PHASES: [&str; 4] = [
    "thaw: exec, config, state read + thaw-requested write",
    "locker: SIGTERM → release statement sent",
    "locker: release statement (server round trip)",
    "thaw: sees `released`, exits",
];

/// (freeze milestones, thaw milestones, extra durations in ms), in seconds since the epoch.
type Milestones = (Vec<f64>, Vec<f64>, Vec<f64>);

/// The milestones of one traced freeze (11) and thaw (5), and three durations in ms (the two
/// info-file fsyncs and the locker's handshake processing), or why they cannot be read. The
/// locker writes the info file on a thread of its own: those events are matched on any thread.
fn milestones(
    freeze: &Trace,
    thaw: &Trace,
    socket: &str,
    mode: Mode,
) -> Result<Milestones, String> {
    let missing = |what: &str| format!("trace has no {what}");
    let f = freeze
        .pid_of("mysql-snapshot-freeze")
        .ok_or_else(|| missing("freeze execve"))?;
    let l = freeze
        .pid_of("mysql-snapshot-locker")
        .ok_or_else(|| missing("locker execve"))?;
    let t = thaw
        .pid_of("mysql-snapshot-thaw")
        .ok_or_else(|| missing("thaw execve"))?;
    let (lock_first, release) = match mode {
        Mode::Ftwrl => ("FLUSH ", "UNLOCK TABLES"),
        Mode::BackupStage => ("BACKUP STAGE START", "BACKUP STAGE END"),
        Mode::BackupLock => ("LOCK INSTANCE FOR BACKUP", "UNLOCK INSTANCE"),
        Mode::Auto => return Err("the profile traces a named lock mode, not auto".into()),
    };
    let need = |v: Option<f64>, what: &str| v.ok_or_else(|| missing(what));
    let f_exec = need(freeze.at(f, "execve", "", 0.0), "freeze exec")?;
    let l_exec = need(freeze.at(l, "execve", "", 0.0), "locker exec")?;
    let l_connect = need(freeze.at(l, "connect", socket, l_exec), "locker connect")?;
    let quiet = freeze
        .find(l, "sendto", "SHOW FULL PROCESSLIST", l_connect)
        .ok_or_else(|| missing("quiet-moment query"))?;
    let quiet_sent = freeze.events[quiet].at;
    let quiet_reply = freeze
        .find(l, "recvfrom", "", quiet_sent)
        .ok_or_else(|| missing("quiet-moment reply"))?;
    let quiet_done = freeze.end(quiet_reply);
    let l_lock = need(
        freeze.at(l, "sendto", lock_first, quiet_done),
        "lock statement",
    )?;
    // The coordinates' reads travel with the lock statement: the first reply bytes end the wait.
    let lock_reply = freeze
        .find(l, "recvfrom", "", l_lock)
        .ok_or_else(|| missing("lock reply"))?;
    let l_status = freeze.end(lock_reply);
    let info = (0..freeze.events.len())
        .find(|&i| {
            let e = &freeze.events[i];
            e.name == "write"
                && e.text.contains("consistent")
                && e.text.contains("held")
                && e.at >= l_status
        })
        .ok_or_else(|| missing("info-file write"))?;
    let (l_info, writer) = (freeze.events[info].at, freeze.events[info].pid);
    let fsyncs: Vec<usize> = (0..freeze.events.len())
        .filter(|&i| {
            let e = &freeze.events[i];
            e.pid == writer && e.name == "fsync" && !e.resumed && e.at >= l_info
        })
        .take(2)
        .collect();
    let info_done = fsyncs
        .last()
        .map(|&i| freeze.end(i))
        .ok_or_else(|| missing("info-file fsync"))?;
    let fsync_took: Vec<f64> = fsyncs
        .iter()
        .map(|&i| (freeze.end(i) - freeze.events[i].at) * 1000.0)
        .collect();
    let l_acquired = need(
        freeze.at(l, "write", "acquired", info_done),
        "`acquired` note",
    )?;
    let f_exit = need(freeze.at(f, "exit_group", "", l_acquired), "freeze exit")?;
    // Client CPU between the server's greeting and our answer (the mysql crate parses the
    // server version with regexes it compiles on first use).
    let hello = freeze
        .find(l, "recvfrom", "", l_connect)
        .ok_or_else(|| missing("locker handshake"))?;
    let answered = need(
        freeze.at(l, "sendto", "", freeze.end(hello)),
        "locker handshake answer",
    )?;
    let handshake = (answered - freeze.end(hello)) * 1000.0;

    let t_exec = need(thaw.at(t, "execve", "", 0.0), "thaw exec")?;
    let t_kill = need(thaw.at(t, "kill", "SIGTERM", t_exec), "thaw kill")?;
    let l_release = freeze
        .find(l, "sendto", release, f_exit)
        .ok_or_else(|| missing("release statement"))?;
    let l_release_sent = freeze.events[l_release].at;
    let l_reply = freeze
        .find(l, "recvfrom", "", l_release_sent)
        .ok_or_else(|| missing("release reply"))?;
    let l_released = freeze.end(l_reply);
    let t_exit = need(thaw.at(t, "exit_group", "", t_kill), "thaw exit")?;
    Ok((
        vec![
            f_exec, l_exec, l_connect, quiet_sent, quiet_done, l_lock, l_status, l_info, info_done,
            l_acquired, f_exit,
        ],
        vec![t_exec, t_kill, l_release_sent, l_released, t_exit],
        fsync_took.into_iter().chain([handshake]).collect(),
    ))
}

/// `inner` (program, arguments, environment) run under strace, writing `trace`. `detached`
/// (`-D`) keeps `inner` a direct child of ours, so its exit is seen as soon as it happens.
fn strace(trace: &Path, detached: bool, inner: &Command) -> Command {
    let mut command = Command::new(STRACE);
    if detached {
        command.arg("-D");
    }
    command
        .args([
            "-f",
            "-q",
            "-ttt",
            "-T",
            "-s",
            "64",
            "--seccomp-bpf",
            "-e",
            SYSCALLS,
        ])
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir("/");
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command
}

/// The profile: phase medians over traced runs, per lock mode of the flavour.
pub(crate) fn profile(b: &mut Bench, target: &dyn Target, label: &str) -> Outcome {
    let modes = b.flavour.modes();
    profile_modes(b, target, label, modes)
}

/// The profile for each of `modes`.
pub(crate) fn profile_modes(
    b: &mut Bench,
    target: &dyn Target,
    label: &str,
    modes: &[Mode],
) -> Outcome {
    if !Path::new(STRACE).is_file() {
        b.report
            .note("profile skipped: strace is not installed (apt-get install -y strace)");
        return Ok(());
    }
    let socket = target.socket().to_string_lossy().into_owned();
    for &mode in modes {
        let product = Product::new(&b.bin_dir, target, "");
        let mut phases: Vec<Samples> = vec![Samples::default(); FREEZE_PHASES.len()];
        let mut thaw_phases: Vec<Samples> = vec![Samples::default(); THAW_PHASES.len()];
        let (mut freeze_total, mut thaw_total) = (Samples::default(), Samples::default());
        let mut extras: Vec<Samples> = vec![Samples::default(); EXTRAS.len()];
        let mut failures = Vec::new();
        for i in 0..b.warmup + b.runs {
            let freeze_trace: PathBuf = product.dir().join(format!("freeze-{i}.trace"));
            let thaw_trace: PathBuf = product.dir().join(format!("thaw-{i}.trace"));
            // The detached tracer outlives freeze: it must not hold a pipe of ours open.
            let freeze = product::spawn_with_stderr(
                &mut strace(&freeze_trace, true, &product.freeze_command(mode)),
                Stdio::null(),
            )
            .finish();
            if !freeze.ok() {
                return Err(format!("traced freeze failed: {}", freeze.stderr.trim()));
            }
            let locker = product.locker_pid();
            let thaw =
                product::spawn(&mut strace(&thaw_trace, false, &product.thaw_command())).finish();
            if !thaw.ok() {
                return Err(format!("traced thaw failed: {}", thaw.stderr.trim()));
            }
            if let Some(pid) = locker {
                product::reap_locker(pid, Duration::from_secs(5));
                // The detached tracer writes the locker's last lines after it exits.
                harness::wait_until(Duration::from_secs(5), || {
                    Trace::read(&freeze_trace).has_exited(pid)
                });
            }
            if i < b.warmup {
                continue;
            }
            let (freeze_t, thaw_t) = (Trace::read(&freeze_trace), Trace::read(&thaw_trace));
            match milestones(&freeze_t, &thaw_t, &socket, mode) {
                Ok((m, t, fs)) => {
                    for (k, s) in phases.iter_mut().enumerate() {
                        s.push((m[k + 1] - m[k]) * 1000.0);
                    }
                    for (k, s) in thaw_phases.iter_mut().enumerate() {
                        s.push((t[k + 1] - t[k]) * 1000.0);
                    }
                    freeze_total.push((m[m.len() - 1] - m[0]) * 1000.0);
                    thaw_total.push((t[t.len() - 1] - t[0]) * 1000.0);
                    for (k, took) in fs.iter().enumerate().take(EXTRAS.len()) {
                        extras[k].push(*took);
                    }
                }
                Err(why) => failures.push(why),
            }
        }
        if !failures.is_empty() {
            b.report.note(format!(
                "profile, {}: {} traces could not be read: {}",
                mode.name(),
                failures.len(),
                failures.first().cloned().unwrap_or_default()
            ));
        }
        let case = format!("{} (traced{label})", mode.name());
        let mut row = |name: &str, samples: Samples| {
            b.row(Row::new(&format!("profile: {name}"), &case, "ms", samples));
        };
        let mut detail = Vec::new();
        for (name, samples) in FREEZE_PHASES.iter().zip(phases) {
            detail.push(json!({"phase": name, "ms": samples.to_json()}));
            row(name, samples);
        }
        row("freeze exec → exit, traced", freeze_total);
        for (name, samples) in EXTRAS.iter().zip(extras) {
            row(name, samples);
        }
        for (name, samples) in THAW_PHASES.iter().zip(thaw_phases) {
            detail.push(json!({"phase": name, "ms": samples.to_json()}));
            row(name, samples);
        }
        row("thaw exec → exit, traced", thaw_total);
        b.report.detail(
            &format!("{}: profile {}{label}", b.flavour.name(), mode.name()),
            json!(detail),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_lines_give_pid_time_call_and_duration() {
        let e = parse(r#"1228  1795625835.230514 sendto(6, "\23\0\0\0\3SHOW BINLOG STATUS", 23, MSG_NOSIGNAL, NULL, 0) = 23 <0.000007>"#)
            .expect("a syscall line");
        assert_eq!((e.pid, e.name.as_str()), (1228, "sendto"));
        assert!((e.at - 1795625835.230514).abs() < 1e-6);
        assert_eq!(e.took, Some(0.000007));
        let u =
            parse("1221  1795625835.225746 recvfrom(13,  <unfinished ...>").expect("unfinished");
        assert!(u.unfinished && !u.resumed);
        let r = parse(
            r#"1221  1795625835.226309 <... recvfrom resumed>"", 8, 0, NULL, NULL) = 0 <0.000555>"#,
        )
        .expect("resumed");
        assert!(r.resumed && r.name == "recvfrom");
    }
}
