//! Fault injection shared by the fault-matrix tests (faults.rs on MariaDB, faults_mysql.rs on
//! MySQL 9.7): background statements, stopped processes, tmpfs mounts that are full or read-only,
//! a server filled to max_connections, the server counters that show whether a lock ran, and
//! small loop mounts a test may fsfreeze (only its own).
//! Everything here undoes itself on drop and only ever touches processes and mounts a test made.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::process::Identity;
use mysql::prelude::Queryable;

use crate::loopfs::LoopMount;
use crate::{
    alive, assert_nothing_left, bin, signal, text, wait_until, write_private, Sandbox, Server,
    TempDir,
};

/// A statement running in the background; `finished` is when it returned.
pub struct Writer {
    pub handle: thread::JoinHandle<(Result<(), String>, Instant)>,
}

impl Writer {
    pub fn start(server: &Server, statement: &str) -> Writer {
        let mut conn = server.conn();
        let statement = statement.to_string();
        Writer {
            handle: thread::spawn(move || {
                let result = conn.query_drop(&statement).map_err(|e| e.to_string());
                (result, Instant::now())
            }),
        }
    }

    /// Waits (bounded) for the statement to return.
    pub fn join_within(self, limit: Duration) -> (Result<(), String>, Instant) {
        assert!(
            wait_until(limit, || self.handle.is_finished()),
            "the background statement did not return within {limit:?}"
        );
        self.handle.join().unwrap()
    }
}

pub fn wait_for_statement(server: &Server, needle: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || !server
            .statements_like(needle)
            .is_empty()),
        "`{needle}` never showed in the processlist"
    );
}

/// The statement text each lock mode waits in, as the processlist shows it.
pub fn lock_statement(mode: &str) -> &'static str {
    if mode == "ftwrl" {
        "FLUSH TABLES WITH READ LOCK"
    } else {
        "BACKUP STAGE"
    }
}

/// How many lock statements (FTWRL counts as a flush, BACKUP STAGE as backup, MySQL's backup lock
/// as lock_instance) the server has run.
pub fn lock_statements_run(server: &Server) -> u64 {
    lock_statements_run_on(&mut server.conn())
}

/// `lock_statements_run`, asked on `conn` (a root connection to the server).
pub fn lock_statements_run_on(conn: &mut mysql::Conn) -> u64 {
    let rows: Vec<(String, u64)> = conn
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_flush', 'Com_backup', 'Com_lock_instance')")
        .unwrap();
    rows.iter().map(|(_, n)| n).sum()
}

/// The PID of the server process (from its pid file).
pub fn server_pid(server: &Server) -> u32 {
    let text = fs::read_to_string(server.dir.path().join("mysqld.pid")).unwrap();
    text.trim().parse().unwrap()
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits (bounded) for a child and returns its exit code; kills it if it overruns.
pub fn exit_code_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let mut status = None;
    let done = wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
        panic!("process {} did not exit within {limit:?}", child.id());
    }
    status.and_then(|s| s.code())
}

/// A process stopped by a test: continued and killed on drop, if it is still the same process.
pub struct StoppedProcess(Option<Identity>);

impl StoppedProcess {
    pub fn stop(pid: u32) -> StoppedProcess {
        let identity = Identity::of(pid);
        assert!(identity.is_some(), "process {pid} is not running");
        signal(pid, "STOP");
        StoppedProcess(identity)
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        if let Some(identity) = &self.0 {
            identity.signal(libc::SIGCONT);
            identity.signal(libc::SIGKILL);
        }
    }
}

/// A tmpfs this test mounted (size-limited, maybe read-only); unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    pub fn mount(tag: &str, options: &str) -> Tmpfs {
        let dir = TempDir::new(tag);
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "mss-fault"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (run the tests as root): {}",
            text(&out)
        );
        Tmpfs { path, _dir: dir }
    }

    pub fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount failed: {}", text(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Fills the filesystem holding `dir` until a write fails with ENOSPC.
pub fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let _ = file.sync_all();
}

/// Root connections until the server refuses with ER_CON_COUNT_ERROR (1040).
/// Connections that closed a moment ago may still count on the server: the server is full once
/// it refuses a new one and counts exactly the ones held here.
pub fn fill_connections(server: &Server) -> Vec<mysql::Conn> {
    let mut held: Vec<mysql::Conn> = Vec::new();
    let opts = mysql::OptsBuilder::new()
        .user(Some("root"))
        .socket(Some(server.socket.to_string_lossy().into_owned()));
    let full = wait_until(Duration::from_secs(10), || {
        match mysql::Conn::new(opts.clone()) {
            Ok(conn) => {
                held.push(conn);
                false
            }
            Err(mysql::Error::MySqlError(e)) if e.code == 1040 => {
                let counted: Option<(String, usize)> = held[0]
                    .query_first("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                    .unwrap();
                counted.map(|(_, n)| n) == Some(held.len())
            }
            Err(e) => panic!("unexpected error filling the server's connections: {e}"),
        }
    });
    assert!(full, "the server never reported max_connections reached");
    held
}

/// An unrelated process a test started (to be a PID a state file names); killed on drop.
pub struct Bystander(pub Child);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small ext4 loop mount of this test, with `subdir` created on it.
pub fn loop_mount(tag: &str, subdir: &str) -> (TempDir, LoopMount) {
    let dir = TempDir::new(tag);
    let mount = LoopMount::create(&dir.path().join("img"), &dir.path().join("mnt"), 16);
    fs::create_dir_all(mount.mountpoint.join(subdir)).unwrap();
    (dir, mount)
}

/// Freezes `mountpoint`, a loop mount of this test (its `FreezeWindow` and `LoopMount` thaw it on
/// drop, panics included).
pub fn fsfreeze(mountpoint: &Path) {
    let out = Command::new("fsfreeze")
        .arg("-f")
        .arg(mountpoint)
        .output()
        .unwrap();
    assert!(out.status.success(), "fsfreeze -f failed: {}", text(&out));
}

fn state_naming(freeze: &Identity, locker: &Identity, status: &str, mode: &str) -> String {
    let mut state = serde_json::json!({
        "format": 1,
        "status": status,
        "freeze": freeze,
        "locker": locker,
        "connection_id": 1,
        "user": "root",
        "lock_mode": mode,
        "attempt": 1,
        "started_at_ms": 1_700_000_000_000u64,
        "updated_at": "2023-11-14T22:13:20.100Z",
    });
    // As the locker writes it: a lock time only once the lock is held.
    if status == "acquired" {
        state["acquired_at_ms"] = serde_json::json!(1_700_000_000_100u64);
    }
    state.to_string()
}

/// freeze needs one connection, the locker's: with none left it fails at once with the server's
/// reason, runs no lock statement and leaves no locker; with exactly one left it freezes and thaws.
/// `server` must run with a small `--max-connections`.
pub fn assert_freeze_needs_exactly_one_connection(server: &Server, limit: Duration) {
    let sandbox = Sandbox::new(server, "");
    let before = lock_statements_run(server);

    let mut held = fill_connections(server);
    let started = Instant::now();
    let out = sandbox.freeze();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr_of(&out).contains("max_connections"),
        "{}",
        text(&out)
    );
    assert!(sandbox.lockers().is_empty());
    assert_eq!(
        lock_statements_run_on(&mut held[0]),
        before,
        "a lock statement ran"
    );

    // One connection left: enough for the whole snapshot. The server frees a closed connection's
    // slot a moment after the client hangs up: wait until it has.
    let connected = |conn: &mut mysql::Conn| -> u64 {
        let row: Option<(String, u64)> = conn
            .query_first("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            .unwrap();
        row.map_or(0, |(_, n)| n)
    };
    let full = connected(&mut held[0]);
    held.pop();
    assert!(
        wait_until(Duration::from_secs(10), || connected(&mut held[0]) < full),
        "the server did not free the closed connection's slot"
    );
    let out = sandbox.freeze();
    assert!(
        out.status.success(),
        "one free connection must do: {}",
        text(&out)
    );
    // Every slot is taken again (one by the locker): probe on one of ours.
    assert!(server.writes_blocked_on(&mut held[0]));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    drop(held);
    assert_nothing_left(server, &sandbox, limit);
}

/// SIGTERM to freeze (vmtoolsd's timer) while the locker holds the lock but hangs writing the info
/// file on a frozen filesystem: the lock is released at once, while the filesystem is still frozen,
/// and freeze does not exit 0. `settings` go first in the config (a lock mode, say).
pub fn assert_a_stop_while_the_info_file_hangs_releases_at_once(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    let (_dir, mount) = loop_mount("sigterm-held", "info");
    let info_dir = mount.mountpoint.join("info");
    let sandbox = Sandbox::new(
        server,
        &format!(
            "{settings}\nlong-query-threshold = 100\nlock-wait-timeout = 30\ninfo-file = {}",
            info_dir.join("snapshot-info.json").display()
        ),
    );
    // Freeze windows are taken one at a time on this machine: wait for ours before the clock runs.
    let window = mount.freeze_window();
    // A MyISAM write holds up both lock modes for ~4 s: the locker waits with its info file open.
    let long = Writer::start(server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(4) = 0");
    wait_for_statement(server, "SLEEP(4)");
    let mut freeze = sandbox
        .command("freeze")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let temporary_exists = || {
        fs::read_dir(&info_dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), temporary_exists),
        "the locker never opened its info file"
    );
    assert_ne!(
        sandbox.status(),
        "acquired",
        "the write ended too early for this test"
    );
    fsfreeze(&mount.mountpoint);
    // The write ends; the locker takes the lock, reads the coordinates and hangs in the info file.
    assert!(long.join_within(Duration::from_secs(30)).0.is_ok());
    assert!(
        wait_until(Duration::from_secs(20), || server.writes_blocked()),
        "the locker never took the lock"
    );
    assert_ne!(
        sandbox.status(),
        "acquired",
        "the locker reported the lock before its info file was on disk"
    );
    assert!(
        freeze.try_wait().unwrap().is_none(),
        "freeze exited while the info file could not be written"
    );
    signal(freeze.id(), "TERM");
    assert!(
        wait_until(Duration::from_secs(5), || !server.writes_blocked()),
        "the lock outlived SIGTERM to freeze while the info file write hung"
    );
    drop(window);
    let code = exit_code_within(&mut freeze, Duration::from_secs(60));
    let mut stderr = String::new();
    use std::io::Read;
    let _ = freeze.stderr.take().unwrap().read_to_string(&mut stderr);
    assert_ne!(
        code,
        Some(0),
        "freeze exited 0 after SIGTERM; the hypervisor treats the freeze as failed and will send no thaw. stderr: {stderr}"
    );
    assert_nothing_left(server, &sandbox, limit);
}

/// A state file naming a PID now used by an unrelated process (`sleep`): thaw must never signal
/// it, whatever status the state claims. `mode` is the lock mode the state records.
pub fn assert_thaw_never_signals_a_reused_pid(server: &Server, mode: &str, limit: Duration) {
    let sandbox = Sandbox::new(server, "");
    fs::create_dir_all(&sandbox.run_dir).unwrap();
    fs::set_permissions(&sandbox.run_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let bystander = Bystander(Command::new("sleep").arg("300").spawn().unwrap());
    let pid = bystander.0.id();
    let real = Identity::of(pid).unwrap();
    let other_start = Identity {
        start_time: real.start_time + 1,
        ..real.clone()
    };
    let other_exe = Identity {
        exe: bin("locker"),
        ..real.clone()
    };
    for (what, status, freeze, locker) in [
        (
            "locker, other start time",
            "acquired",
            &other_start,
            &other_start,
        ),
        (
            "locker, other executable",
            "acquired",
            &other_exe,
            &other_exe,
        ),
        (
            "freeze and locker, waiting",
            "waiting",
            &other_start,
            &other_exe,
        ),
        (
            "freeze and locker, starting",
            "starting",
            &other_exe,
            &other_start,
        ),
    ] {
        let state = sandbox.run_dir.join("state.json");
        write_private(&state, &state_naming(freeze, locker, status, mode));
        let out = sandbox.thaw("thaw");
        assert!(
            alive(pid),
            "{what}: thaw signalled PID {pid}, which is not ours: {}",
            text(&out)
        );
        // A recorded lock whose locker is gone was lost; a freeze that never recorded one
        // leaves nothing to release (it cannot have reported success).
        let expected = if status == "acquired" { 1 } else { 0 };
        assert_eq!(out.status.code(), Some(expected), "{what}: {}", text(&out));
        let report = sandbox.command("thaw").arg("--status").output().unwrap();
        assert!(alive(pid), "{what}: thaw --status signalled PID {pid}");
        assert_ne!(report.status.code(), Some(0), "{what}: {}", text(&report));

        write_private(&state, &state_naming(freeze, locker, status, mode));
        let out = sandbox.freeze();
        assert!(
            out.status.success(),
            "{what}: a dead run must not block freeze: {}",
            text(&out)
        );
        assert!(alive(pid), "{what}: freeze signalled PID {pid}");
        assert!(sandbox.thaw("thaw").status.success());
        assert!(alive(pid));
    }
    assert_nothing_left(server, &sandbox, limit);
}

/// A wedged locker, then a server restart: connection ids start again from 1, and the locker's
/// id may now belong to an innocent session of the same account. thaw must not kill it, and
/// must not call the lock held. `settings` go into the config (a lock mode, say).
pub fn assert_after_a_server_restart_thaw_never_kills_a_connection_that_reused_the_locker_s_id(
    server: &mut Server,
    settings: &str,
    limit: Duration,
) {
    let sandbox = Sandbox::new(server, settings);
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let id = sandbox.state().unwrap()["connection_id"].as_u64().unwrap();
    let stopped = StoppedProcess::stop(sandbox.locker_pid().unwrap());
    server.restart();
    let mut innocent = None;
    let mut others = Vec::new();
    for _ in 0..(id + 50) {
        let mut conn = server.conn();
        let now: u64 = conn.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
        if now == id {
            innocent = Some(conn);
            break;
        }
        assert!(now < id, "connection ids passed {id} without reusing it");
        others.push(conn);
    }
    drop(others);
    let mut innocent = innocent.expect("no connection got the locker's old id");
    // The locker's connection would have been idle since the lock was taken; the innocent
    // session was active just now. Give the difference a few seconds to show.
    let acquired_ms = sandbox.state().unwrap()["acquired_at_ms"].as_u64().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        common::time::now_unix_ms() > acquired_ms + 4000
    }));
    let _: Option<u8> = innocent.query_first("SELECT 1").unwrap();
    let out = sandbox.thaw("thaw");
    let alive_after: Result<Option<u8>, _> = innocent.query_first("SELECT 1");
    assert!(
        alive_after.is_ok(),
        "thaw killed connection {id}, an innocent session that reused the locker's id: {}",
        text(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the lock died with the server; thaw must not call it held: {}",
        text(&out)
    );
    drop(stopped);
    assert_nothing_left(server, &sandbox, limit);
}

/// The server restarts while the lock is held: thaw exits 1 and says the lock was lost (the
/// snapshot is not application-consistent). `settings` go into the config.
pub fn assert_thaw_reports_a_lock_lost_to_a_server_restart(
    server: &mut Server,
    settings: &str,
    limit: Duration,
) {
    let sandbox = Sandbox::new(server, settings);
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    server.restart();
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("NOT application-consistent"), "{stderr}");
    assert!(stderr.contains("gone"), "{stderr}");
    assert_nothing_left(server, &sandbox, limit);
}

/// Two thaws at once (an agent retrying): the lock is released once, both exit 0, nothing is
/// left. `settings` go into the config.
pub fn assert_two_concurrent_thaws_release_once_and_both_exit_0(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    let sandbox = Sandbox::new(server, settings);
    assert!(sandbox.freeze().status.success());
    let a = sandbox
        .command("thaw")
        .arg("thaw")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = sandbox
        .command("thaw")
        .arg("thaw")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    assert_eq!(sandbox.status(), "released");
    assert_eq!(sandbox.state().unwrap()["reason"], "thaw");
    assert_nothing_left(server, &sandbox, limit);
}

/// Two freezes at once, five rounds: exactly one wins and holds the lock, the other exits 1
/// naming the snapshot in progress, and only one locker runs. `settings` go into the config.
pub fn assert_two_racing_freezes_start_exactly_one_locker(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    let sandbox = Sandbox::new(server, settings);
    for round in 0..5 {
        let a = sandbox
            .command("freeze")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let b = sandbox
            .command("freeze")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let winners: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
        let losers: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} freezes succeeded:\n{}\n{}",
            winners.len(),
            text(&outs[0]),
            text(&outs[1])
        );
        assert_eq!(losers[0].status.code(), Some(1), "{}", text(losers[0]));
        assert!(
            stderr_of(losers[0]).contains("another snapshot is in progress"),
            "{}",
            text(losers[0])
        );
        assert_eq!(sandbox.lockers().len(), 1, "round {round}");
        assert!(server.writes_blocked());
        let out = sandbox.thaw("thaw");
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert_nothing_left(server, &sandbox, limit);
    }
}

/// A thaw after a completed thaw has nothing to do: it says so and exits 0.
pub fn assert_a_second_thaw_has_nothing_to_do_and_exits_0(server: &Server, limit: Duration) {
    let sandbox = Sandbox::new(server, "");
    assert!(sandbox.freeze().status.success());
    let first = sandbox.thaw("thaw");
    assert!(first.status.success(), "{}", text(&first));
    let second = sandbox.thaw("thaw");
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        stderr_of(&second).contains("already thawed"),
        "{}",
        text(&second)
    );
    let after_fail = sandbox.thaw("freezeFail");
    assert!(after_fail.status.success(), "{}", text(&after_fail));
    assert_nothing_left(server, &sandbox, limit);
}

/// An info-file directory that is missing or read-only fails freeze before any lock statement
/// runs, naming the directory; no info file and nothing else is left.
pub fn assert_freeze_fails_before_locking_when_the_info_file_directory_is_missing_or_read_only(
    server: &Server,
    limit: Duration,
) {
    let ro = Tmpfs::mount("info-ro", "size=64k");
    ro.remount("ro");
    for dir in [PathBuf::from("/nonexistent/mss-info"), ro.path.clone()] {
        let info = dir.join("snapshot-info.json");
        let sandbox = Sandbox::new(server, &format!("info-file = {}", info.display()));
        let before = lock_statements_run(server);
        let out = sandbox.freeze();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stderr_of(&out).contains("info file"), "{}", text(&out));
        assert!(
            stderr_of(&out).contains(&*dir.to_string_lossy()),
            "{}",
            text(&out)
        );
        assert_eq!(
            lock_statements_run(server),
            before,
            "a lock was attempted although the info file could not be written"
        );
        assert!(!info.exists());
        assert_nothing_left(server, &sandbox, limit);
    }
}

/// An info file that cannot be written (its filesystem is full) fails freeze after the lock:
/// the lock is released, freeze exits 1 naming the error, and no info file is left.
pub fn assert_freeze_releases_the_lock_and_fails_when_the_info_file_cannot_be_written(
    server: &Server,
    limit: Duration,
) {
    // Room for the empty temporary file (an inode) but not for its content.
    let full = Tmpfs::mount("info-full", "size=64k");
    fill(&full.path);
    let info = full.path.join("snapshot-info.json");
    let sandbox = Sandbox::new(server, &format!("info-file = {}", info.display()));
    let out = sandbox.freeze();
    assert_eq!(
        out.status.code(),
        Some(1),
        "freeze must not exit 0 without its info file: {}",
        text(&out)
    );
    assert!(stderr_of(&out).contains("No space left"), "{}", text(&out));
    assert!(!info.exists());
    assert_nothing_left(server, &sandbox, limit);
}

/// A locker stopped (SIGSTOP) while it holds the lock: the server drops the lock after
/// `wait_timeout` (max-lock-time + 10 s; `settings` must set `max-lock-time = 1`), and thaw then
/// reports the lock as lost, exits 1 and leaves no locker.
pub fn assert_thaw_reports_a_stopped_locker_whose_lock_the_server_dropped(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    // wait_timeout = max-lock-time + 10 s: a wedged locker loses its lock after about 11 s.
    let sandbox = Sandbox::new(server, settings);
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let pid = sandbox.locker_pid().unwrap();
    let stopped = StoppedProcess::stop(pid);
    let since = Instant::now();
    assert!(
        server.writes_blocked(),
        "the stopped locker's lock is gone at once"
    );
    assert!(
        wait_until(Duration::from_secs(40), || !server.writes_blocked()),
        "the server never dropped the stopped locker's lock (wait_timeout not set?)"
    );
    let dropped_after = since.elapsed();
    assert!(
        dropped_after >= Duration::from_secs(8),
        "the lock went after {dropped_after:?}, before wait_timeout could fire"
    );
    let started = Instant::now();
    let out = sandbox.thaw("thaw");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("was gone"), "{stderr}");
    assert!(stderr.contains("NOT application-consistent"), "{stderr}");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "thaw left the stopped locker alive"
    );
    drop(stopped);
    assert_nothing_left(server, &sandbox, limit);
}

/// A locker stopped (SIGSTOP) while its lock is still held: thaw kills its connection, exits 0
/// (the lock was held without a break) and leaves no locker. `settings` go into the config.
pub fn assert_thaw_releases_a_stopped_locker_s_lock_that_is_still_held(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    let sandbox = Sandbox::new(server, settings);
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let pid = sandbox.locker_pid().unwrap();
    let stopped = StoppedProcess::stop(pid);
    let out = sandbox.thaw("thaw");
    // The lock was held without a break: the connection was still there, and thaw killed it.
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr_of(&out).contains("unresponsive"), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    drop(stopped);
    assert_nothing_left(server, &sandbox, limit);
}

/// The log file is on a filesystem frozen during the snapshot: the release still happens within
/// 100 ms and nothing blocks. `settings` go first in the config (a lock mode, say).
pub fn assert_the_release_happens_within_100_ms_when_the_log_file_is_on_a_frozen_filesystem(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    let (_dir, mount) = loop_mount("log-frozen", "log");
    let log = mount.mountpoint.join("log/mysql-snapshot.log");
    let sandbox = Sandbox::new(server, &format!("{settings}\nlog-file = {}", log.display()));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let writer = Writer::start(server, "INSERT INTO snap.inno (v) VALUES (5150)");
    wait_for_statement(server, "VALUES (5150)");

    let window = mount.freeze_window();
    fsfreeze(&mount.mountpoint);
    let asked = Instant::now();
    // thaw blocks afterwards writing its own log line: never wait on it while frozen.
    let mut thaw = sandbox
        .command("thaw")
        .arg("thaw")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let finished = wait_until(Duration::from_secs(5), || writer.handle.is_finished());
    let released_after = asked.elapsed();
    drop(window); // thaws the filesystem
    assert!(
        finished,
        "the lock was not released while the log filesystem was frozen"
    );
    let (result, done) = writer.handle.join().unwrap();
    result.unwrap();
    let took = done.duration_since(asked);
    assert!(
        took < Duration::from_millis(100),
        "the queued write went through {took:?} after thaw was called (limit 100 ms; seen at {released_after:?})"
    );
    let code = exit_code_within(&mut thaw, Duration::from_secs(30));
    assert_eq!(code, Some(0), "thaw failed after the filesystem thawed");
    assert_nothing_left(server, &sandbox, limit);
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("event=released"),
        "the locker's lines were lost: {text}"
    );
}

/// Kills the server (SIGKILL) while freeze runs: during the lock attempt (`during_attempt`, the
/// attempt seen in the processlist as `attempt`), or while it waits for a quiet moment. freeze
/// exits non-zero within 15 s, the locker goes, and after a restart nothing is left and thaw has
/// no lock to call held. `settings` go first in the config (a lock mode, say).
pub fn assert_freeze_fails_when_the_server_dies(
    server: &mut Server,
    settings: &str,
    attempt: &str,
    during_attempt: bool,
    limit: Duration,
) {
    let settings = if during_attempt {
        format!("{settings}\nlong-query-threshold = 100\nlock-wait-timeout = 30")
    } else {
        format!("{settings}\nlong-query-threshold = 0\nsnapshot-timeout = 60")
    };
    let mut sandbox = Sandbox::new(server, &settings);
    let long = Writer::start(server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(60) = 0");
    wait_for_statement(server, "SLEEP(60)");
    let mut freeze = sandbox
        .command("freeze")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if during_attempt {
        assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
        wait_for_statement(server, attempt);
    } else {
        // The write has to run past long-query-threshold before it counts.
        assert!(
            wait_until(Duration::from_secs(10), || sandbox
                .log()
                .contains("event=waiting")),
            "freeze never said it was waiting for a quiet moment"
        );
        assert!(freeze.try_wait().unwrap().is_none());
        assert_eq!(
            sandbox.status(),
            "starting",
            "freeze should be waiting for a quiet moment"
        );
        assert!(
            server.statements_like(attempt).is_empty(),
            "freeze should be waiting for a quiet moment, not in a lock attempt"
        );
    }
    let locker = sandbox.locker_pid();
    signal(server_pid(server), "KILL");
    let started = Instant::now();
    let code = exit_code_within(&mut freeze, Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "freeze took {:?} to notice the dead server",
        started.elapsed()
    );
    assert!(
        matches!(code, Some(c) if c != 0),
        "freeze exited {code:?} without a server"
    );
    if let Some(pid) = locker {
        assert!(
            wait_until(Duration::from_secs(10), || !alive(pid)),
            "the locker outlived the server"
        );
    }
    let _ = long.join_within(Duration::from_secs(10));
    server.restart();
    assert_nothing_left(server, &sandbox, limit);
    // No lock was taken: thaw has nothing to release, and names the freeze that took none.
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr_of(&out).contains("took no lock"),
        "thaw must name the freeze that took no lock: {}",
        text(&out)
    );
}

/// After a successful freeze, the locker is SIGKILLed while it holds the lock: the server drops the
/// lock (within `limit`), and thaw reports the loss ("died while holding", NOT
/// application-consistent), exits 1 and leaves nothing.
pub fn assert_a_locker_killed_while_holding_is_reported(
    server: &Server,
    sandbox: &Sandbox,
    limit: Duration,
) {
    let pid = sandbox.locker_pid().unwrap();
    signal(pid, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert!(
        wait_until(limit, || !server.writes_blocked()),
        "the server kept the lock of a dead locker"
    );
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr_of(&out).contains("died while holding"),
        "{}",
        text(&out)
    );
    assert!(stderr_of(&out).contains("NOT application-consistent"));
    assert_nothing_left(server, sandbox, limit);
}

/// No thaw comes: the locker releases by itself at max-lock-time (`settings` must set
/// `max-lock-time = 1`); thaw reports it (exit 1, NOT application-consistent) and a second thaw
/// has nothing left to do.
pub fn assert_thaw_reports_a_lock_released_early_by_max_lock_time(
    server: &Server,
    settings: &str,
    limit: Duration,
) {
    let sandbox = Sandbox::new(server, settings);
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "released"));
    assert!(
        !server.writes_blocked(),
        "max-lock-time passed but writes are still blocked"
    );
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("max-lock-time"), "{stderr}");
    assert!(stderr.contains("NOT application-consistent"), "{stderr}");
    // Reported once: a second thaw has nothing left to do.
    let again = sandbox.thaw("thaw");
    assert!(again.status.success(), "{}", text(&again));
    assert_nothing_left(server, &sandbox, limit);
}
