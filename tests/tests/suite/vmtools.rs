//! vmtoolsd replayed exactly as CONTRACTS.md describes: each backup script runs as
//! `bash -c '"<path>" <op>'`, vmtoolsd waits on that PID only, sends `freezeFail` to scripts that
//! ran before a failing one, and at its overall timeout sends SIGTERM to the script's PID only,
//! then SIGKILL 5 s later. In every case the tool must leave no lock and no locker behind.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use harness::{assert_nothing_left, bin_dir, signal, text, wait_until, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;

/// A DESTDIR install of the real hook, run the way vmtoolsd runs it.
struct Vmtoolsd {
    _root: TempDir,
    hook: PathBuf,
    sbin: PathBuf,
}

impl Vmtoolsd {
    fn install() -> Vmtoolsd {
        let root = TempDir::new("vmtools");
        let install = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
        let out = Command::new(&install)
            .args(["--no-build", "--bin-dir"])
            .arg(bin_dir())
            .env("DESTDIR", root.path())
            .env("PREFIX", "/usr/local")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        Vmtoolsd {
            hook: root
                .path()
                .join("etc/vmware-tools/backupScripts.d/50-mysql-snapshot"),
            sbin: root.path().join("usr/local/sbin"),
            _root: root,
        }
    }

    /// Starts the hook for `op`: `bash -c '"<path>" <op>'`.
    fn spawn(&self, sandbox: &Sandbox, op: &str) -> Child {
        Command::new("bash")
            .arg("-c")
            .arg(format!("\"{}\" {op}", self.hook.display()))
            .env("MYSQL_SNAPSHOT_SBIN", &self.sbin)
            .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs the hook and waits for that PID only.
    fn run(&self, sandbox: &Sandbox, op: &str) -> ExitStatus {
        self.spawn(sandbox, op).wait().unwrap()
    }
}

/// vmtoolsd's timeout handling: SIGTERM to the script PID, SIGKILL 5 s later. Returns the exit
/// status and whether SIGKILL was needed.
fn time_out(child: &mut Child) -> (ExitStatus, bool) {
    signal(child.id(), "TERM");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    (child.wait().unwrap(), true)
}

fn kill_statements(server: &Server, needle: &str) {
    for id in server.statements_like(needle) {
        let _ = server.conn().query_drop(format!("KILL QUERY {id}"));
    }
}

#[test]
fn vmtoolsd_freeze_then_thaw_holds_the_lock_across_the_snapshot() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let vmtools = Vmtoolsd::install();
    assert!(vmtools.run(&sandbox, "freeze").success());
    assert!(server.writes_blocked(), "frozen, but writes go through");
    assert!(vmtools.run(&sandbox, "thaw").success());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn vmtoolsd_freeze_fail_after_a_later_script_failed_releases_the_lock() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let vmtools = Vmtoolsd::install();
    // Our script runs first and succeeds; a later script fails; vmtoolsd sends us freezeFail.
    assert!(vmtools.run(&sandbox, "freeze").success());
    let later = Command::new("bash")
        .arg("-c")
        .arg("exit 1")
        .status()
        .unwrap();
    assert!(!later.success());
    let status = vmtools.run(&sandbox, "freezeFail");
    assert!(status.success(), "freezeFail must exit 0 after releasing");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn vmtoolsd_timeout_while_freeze_waits_for_a_quiet_moment_leaves_nothing_behind() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "long-query-threshold = 0");
    let vmtools = Vmtoolsd::install();
    let mut conn = server.conn();
    let long = std::thread::spawn(move || {
        let _ = conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    });
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    let mut hook = vmtools.spawn(&sandbox, "freeze");
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "starting"));
    let (status, killed) = time_out(&mut hook);
    assert!(!killed, "freeze did not stop within 5 s of SIGTERM");
    assert!(!status.success());
    kill_statements(&server, "SLEEP(20)");
    long.join().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn vmtoolsd_timeout_during_a_lock_attempt_leaves_nothing_behind() {
    let server = Server::start();
    let sandbox = Sandbox::new(
        &server,
        "long-query-threshold = 100\nlock-wait-timeout = 30",
    );
    let vmtools = Vmtoolsd::install();
    let mut conn = server.conn();
    let long = std::thread::spawn(move || {
        let _ = conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    });
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    let mut hook = vmtools.spawn(&sandbox, "freeze");
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
    let (status, killed) = time_out(&mut hook);
    assert!(!killed, "freeze did not stop within 5 s of SIGTERM");
    assert!(!status.success());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    kill_statements(&server, "SLEEP(20)");
    long.join().unwrap();
}

#[test]
fn a_freeze_killed_outright_mid_attempt_leaves_no_lock_once_the_locker_gets_it() {
    let server = Server::start();
    let sandbox = Sandbox::new(
        &server,
        "long-query-threshold = 100\nlock-wait-timeout = 30",
    );
    let vmtools = Vmtoolsd::install();
    let mut conn = server.conn();
    let long = std::thread::spawn(move || {
        let _ = conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    });
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    let mut hook = vmtools.spawn(&sandbox, "freeze");
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
    // SIGKILL: freeze gets no chance to clean up. The locker is still queued for the lock.
    let _ = hook.kill();
    let _ = hook.wait();
    // Let the locker get its lock: it must notice that freeze never reported success.
    kill_statements(&server, "SLEEP(20)");
    long.join().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    let state = sandbox.state().unwrap();
    assert!(
        state["reason"]
            .as_str()
            .unwrap_or("")
            .contains("freeze ended without reporting success"),
        "{state}"
    );
}
