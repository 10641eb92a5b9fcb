//! The core promises of freeze, thaw and the locker, each checked against a private MariaDB (and,
//! where a scenario lists `mysql_9_7`, a private MySQL 9.7 too: see `harness::Case`).

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use harness::accounts::assert_a_wrong_password_is_refused_with_a_clear_error_within_10_s;
use harness::{
    assert_nothing_left, bin_dir, signal, text, wait_until, write_private, Case, Sandbox, Server,
    TempDir,
};
use mysql::prelude::Queryable;

/// A write running in the background, timed.
struct Writer {
    handle: thread::JoinHandle<Duration>,
}

impl Writer {
    fn start(server: &Server, statement: &str) -> Writer {
        let mut conn = server.conn();
        let statement = statement.to_string();
        Writer {
            handle: thread::spawn(move || {
                let started = Instant::now();
                let _ = conn.query_drop(&statement);
                started.elapsed()
            }),
        }
    }
}

/// The statement text each lock mode waits in, as the processlist shows it.
fn lock_statement(mode: &str) -> &'static str {
    if mode == "ftwrl" {
        "FLUSH TABLES WITH READ LOCK"
    } else {
        "BACKUP STAGE"
    }
}

scenario!(freeze_holds_a_lock_that_blocks_writes_until_thaw_releases_it: ftwrl, backup_stage);
fn freeze_holds_a_lock_that_blocks_writes_until_thaw_releases_it(case: Case) {
    let mode = case.mode();
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, &format!("lock-mode = {mode}"));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        server.writes_blocked(),
        "freeze exited 0 but writes are not blocked"
    );

    // A write from another connection waits for the lock…
    let writer = Writer::start(&server, "INSERT INTO snap.inno (v) VALUES (4242)");
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("VALUES (4242)")
        .is_empty()));
    assert!(
        !writer.handle.is_finished(),
        "the write went through while frozen"
    );
    // …and the coordinates recorded are the ones the server reports while locked.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sandbox.info_file).unwrap()).unwrap();
    let row: mysql::Row = server
        .conn()
        .query_first("SHOW BINLOG STATUS")
        .unwrap()
        .unwrap();
    assert_eq!(
        info["binlog"]["file"].as_str(),
        row.get::<String, _>("File").as_deref()
    );
    assert_eq!(
        info["binlog"]["position"].as_u64(),
        row.get::<u64, _>("Position")
    );
    assert_eq!(info["lock"]["mode"], mode);
    assert_eq!(info["server"]["flavor"], "mariadb");
    assert!(info["taken_at"].as_str().unwrap().ends_with('Z'));

    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let waited = writer.handle.join().unwrap();
    assert!(
        waited < Duration::from_secs(30),
        "the write never went through"
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    let log = sandbox.log();
    assert!(log.contains("event=locked"), "syslog: {log}");
    assert!(log.contains("event=thawed"), "syslog: {log}");
    assert!(
        log.contains("mysql-snapshot["),
        "syslog ident missing: {log}"
    );
}

scenario!(freeze_never_exits_0_unlocked_behind_a_long_write_and_caps_each_stall: ftwrl, backup_stage);
fn freeze_never_exits_0_unlocked_behind_a_long_write_and_caps_each_stall(case: Case) {
    let mode = case.mode();
    let server = Server::start();
    let mut sandbox = Sandbox::new(
        &server,
        &format!(
            "long-query-threshold = 1\nlock-wait-timeout = 1\nsnapshot-timeout = 5\nlock-mode = {mode}"
        ),
    );
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0");
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(30)")
        .is_empty()));

    // Measure the longest stall another writer sees while freeze tries.
    let stop = Arc::new(AtomicBool::new(false));
    let stall = {
        let mut conn = server.conn();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                conn.query_drop("INSERT INTO snap.inno (v) VALUES (1)")
                    .unwrap();
                worst = worst.max(t.elapsed());
            }
            worst
        })
    };
    let started = Instant::now();
    let out = sandbox.freeze();
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let worst = stall.join().unwrap();

    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no lock"),
        "{}",
        text(&out)
    );
    assert!(
        took < Duration::from_secs(15),
        "freeze overran snapshot-timeout: {took:?}"
    );
    assert!(
        worst < Duration::from_secs(2),
        "a writer stalled {worst:?} (> lock-wait-timeout + 1 s)"
    );
    eprintln!("{mode}: longest InnoDB writer stall {worst:?}");
    if mode == "backup-stage" {
        // The attempt waited a full lock-wait-timeout (1 s); InnoDB writers must not have queued
        // behind it. (The benchmark measures the real figure; this bound only tells the modes apart.)
        assert!(
            worst < Duration::from_millis(900),
            "backup stages must not stall InnoDB writers: {worst:?}"
        );
    }
    let log = sandbox.log();
    assert!(
        log.contains("event=timed-out"),
        "the capped attempt was not logged: {log}"
    );
    assert!(
        log.contains("event=waiting"),
        "the wait for a quiet moment was not logged: {log}"
    );
    assert!(
        log.contains("SLEEP(30)"),
        "the blocking statement was not named: {log}"
    );
    assert!(
        !server.statements_like("SLEEP(30)").is_empty(),
        "the long write should still run"
    );
    for id in server.statements_like("SLEEP(30)") {
        server
            .conn()
            .query_drop(format!("KILL QUERY {id}"))
            .unwrap();
    }
    long.handle.join().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn freeze_retries_after_a_capped_attempt_and_succeeds_once_the_write_ends() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(
        &server,
        "long-query-threshold = 1\nlock-wait-timeout = 1\nsnapshot-timeout = 30",
    );
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(3) = 0");
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(3)")
        .is_empty()));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        long.handle.is_finished(),
        "freeze succeeded while the long write still ran"
    );
    assert!(server.writes_blocked());
    assert!(sandbox.state().unwrap()["attempt"].as_u64().unwrap() >= 2);
    assert!(sandbox.log().contains("event=timed-out"));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn thaw_without_a_freeze_is_a_notice_and_exit_0() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to thaw"),
        "{}",
        text(&out)
    );
}

#[test]
fn freeze_fail_releases_the_lock_and_exits_0() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    assert!(sandbox.freeze().status.success());
    assert!(server.writes_blocked());
    let out = sandbox.thaw("freezeFail");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

/// thaw returns once the locker recorded its release; the locker may still be exiting (writing
/// the log lines it kept). A freeze right then must not be refused as busy: that locker holds
/// nothing. Replayed with a state whose freeze is gone and whose "locker" is a live process that
/// recorded `released`.
#[test]
fn a_freeze_right_after_a_thaw_is_not_kept_out_by_a_locker_that_is_still_exiting() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let mut exiting = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let mut state = sandbox.state().unwrap();
    state["locker"] =
        serde_json::to_value(common::process::Identity::of(exiting.id()).unwrap()).unwrap();
    write_private(&sandbox.run_dir.join("state.json"), &state.to_string());
    let out = sandbox.freeze();
    let _ = exiting.kill();
    let _ = exiting.wait();
    assert!(out.status.success(), "{}", text(&out));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn a_second_freeze_while_locked_is_refused_and_starts_no_second_locker() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    assert!(sandbox.freeze().status.success());
    let first = sandbox.locker_pid().unwrap();
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another snapshot is in progress"),
        "{}",
        text(&out)
    );
    assert_eq!(sandbox.lockers(), vec![first]);
    assert_eq!(sandbox.locker_pid(), Some(first));
    assert!(
        server.writes_blocked(),
        "the refused freeze must leave the first lock alone"
    );
    assert!(sandbox.thaw("thaw").status.success());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

scenario!(sigterm_to_freeze_during_a_lock_attempt_leaves_no_lock_and_no_locker: ftwrl, backup_stage);
fn sigterm_to_freeze_during_a_lock_attempt_leaves_no_lock_and_no_locker(case: Case) {
    let mode = case.mode();
    let server = Server::start();
    let sandbox = Sandbox::new(
        &server,
        &format!("long-query-threshold = 100\nlock-wait-timeout = 30\nlock-mode = {mode}"),
    );
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0");
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(30)")
        .is_empty()));
    let mut freeze = sandbox.command("freeze").spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like(lock_statement(mode))
        .is_empty()));
    let started = Instant::now();
    signal(freeze.id(), "TERM");
    let status = freeze.wait().unwrap();
    assert!(
        !status.success(),
        "a freeze stopped by SIGTERM must not exit 0"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "freeze took {:?} to stop",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(3), || server
            .statements_like(lock_statement(mode))
            .is_empty()),
        "the lock statement is still queued"
    );
    for id in server.statements_like("SLEEP(30)") {
        server
            .conn()
            .query_drop(format!("KILL QUERY {id}"))
            .unwrap();
    }
    long.handle.join().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    // No lock was ever held: thaw has nothing to release, and says the freeze took none.
    let thaw = sandbox.thaw("thaw");
    assert_eq!(thaw.status.code(), Some(0), "{}", text(&thaw));
    assert!(
        String::from_utf8_lossy(&thaw.stderr).contains("took no lock"),
        "thaw must name the freeze that took no lock: {}",
        text(&thaw)
    );
}

#[test]
fn sigterm_to_freeze_waiting_for_a_quiet_moment_exits_nonzero_at_once() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "long-query-threshold = 0");
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    let mut freeze = sandbox.command("freeze").spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "starting"));
    thread::sleep(Duration::from_millis(200)); // let it reach the wait loop; the assertion below does not depend on it
    let started = Instant::now();
    signal(freeze.id(), "TERM");
    let status = freeze.wait().unwrap();
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "freeze took {:?} to stop",
        started.elapsed()
    );
    for id in server.statements_like("SLEEP(20)") {
        server
            .conn()
            .query_drop(format!("KILL QUERY {id}"))
            .unwrap();
    }
    long.handle.join().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

/// A thaw (or freezeFail) that comes while freeze still waits for a quiet moment stops freeze, and
/// no lock is ever taken. thaw fails — whatever was snapshotted had no lock — and says so without
/// `event=lost` (no lock was lost); freezeFail exits 0, the snapshot being abandoned anyway.
fn a_thaw_during_freeze_stops_it(phase: &str, expected: i32, says: &str) {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0");
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    let mut freeze = sandbox.command("freeze").spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "starting"));
    let out = sandbox.thaw(phase);
    assert_eq!(out.status.code(), Some(expected), "{}", text(&out));
    assert!(text(&out).contains(says), "{}", text(&out));
    let status = freeze.wait().unwrap();
    assert!(!status.success(), "the stopped freeze must not exit 0");
    let log = sandbox.log();
    assert!(
        !log.contains("event=lost"),
        "no lock was held, none lost:\n{log}"
    );
    for id in server.statements_like("SLEEP(20)") {
        let _ = server.conn().query_drop(format!("KILL QUERY {id}"));
    }
    long.handle.join().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_thaw_while_freeze_waits_stops_freeze_and_fails_without_calling_a_lock_lost() {
    a_thaw_during_freeze_stops_it("thaw", 1, "event=refused");
}

#[test]
fn a_freeze_fail_while_freeze_waits_stops_freeze_and_exits_0() {
    a_thaw_during_freeze_stops_it("freezeFail", 0, "event=freeze-fail");
}

scenario!(a_wrong_password_is_refused_with_a_clear_error_within_10_s: default_mode, mysql_9_7);
fn a_wrong_password_is_refused_with_a_clear_error_within_10_s(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_a_wrong_password_is_refused_with_a_clear_error_within_10_s(&server, case.limit());
}

#[test]
fn a_missing_socket_is_refused_with_a_clear_error() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "socket = /nonexistent/mysqld.sock");
    let started = Instant::now();
    let out = sandbox.freeze();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/mysqld.sock"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("is the server running"),
        "{}",
        text(&out)
    );
    assert!(sandbox.lockers().is_empty());
}

#[test]
fn a_config_with_a_password_readable_by_others_is_refused() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "password = Sekrit-1");
    std::fs::set_permissions(&sandbox.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("0644") && all.contains("chmod 600"), "{all}");
    assert!(all.contains(&*sandbox.config.to_string_lossy()), "{all}");
    assert!(!all.contains("Sekrit-1"), "{all}");
    assert!(
        !sandbox.run_dir.exists(),
        "nothing may happen before the config is accepted"
    );
}

#[test]
fn a_malformed_config_names_the_file_line_and_key() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "max-lock-time = soon");
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    let place = format!("{}:9", sandbox.config.display());
    assert!(
        all.contains(&place) && all.contains("max-lock-time") && all.contains("soon"),
        "{all}"
    );

    write_private(&sandbox.config, "[mysql-snapshot]\nmax_lock_timeout = 5\n");
    let all = text(&sandbox.freeze());
    assert!(
        all.contains(":2") && all.contains("unknown setting `max_lock_timeout`"),
        "{all}"
    );

    write_private(&sandbox.config, "[mysql-snapshot\nmax-lock-time = 5\n");
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(":1"), "{}", text(&out));
}

/// freeze resolves the settings once and hands them to the locker, which reads no config file:
/// a config path only freeze can resolve (relative to freeze's working directory, while the
/// locker runs in `/`) still freezes, with freeze's `--lock-mode` over the file's; and a refusal
/// under that path is still marked in the info file.
#[test]
fn the_locker_locks_with_the_settings_freeze_resolved_and_reads_no_config_file_of_its_own() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "lock-mode = backup-stage");
    // freeze run in the sandbox's directory with a relative --config and `--lock-mode mode`.
    let freeze = |mode: &str| {
        sandbox
            .command("freeze")
            .env_remove("MYSQL_SNAPSHOT_CONFIG")
            .current_dir(sandbox.dir.path())
            .args([
                "--config",
                "mysql-snapshot.cnf",
                "--lock-mode",
                mode,
                "freeze",
            ])
            .output()
            .unwrap()
    };
    let out = freeze("ftwrl");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sandbox.status(), "acquired");
    assert!(server.writes_blocked(), "freeze said yes without a lock");
    let info = sandbox.info();
    assert_eq!(info["lock"]["requested"], "ftwrl", "{info:#}");
    assert_eq!(info["lock"]["mode"], "ftwrl", "{info:#}");
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    // The helpers freeze starts in `/` (here the one that marks the info file `refused`) get the
    // config's absolute path.
    let out = freeze("backup-lock");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(5), || sandbox.info()["state"]
            == "refused"),
        "the refused freeze's copy must say so: {:#}",
        sandbox.info()
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn an_unreadable_config_is_refused_naming_the_file() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox
        .command("freeze")
        .arg("--config")
        .arg(sandbox.dir.path().join("missing.cnf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing.cnf"), "{}", text(&out));

    // A config the caller may not read (root-owned 0600, read by `nobody`).
    let dir = TempDir::new("unreadable");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("root-only.cnf");
    write_private(&config, "[mysql-snapshot]\n");
    let bins = TempDir::new("bins");
    std::fs::set_permissions(bins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let freeze = bins.path().join("mysql-snapshot-freeze");
    std::fs::copy(bin_dir().join("mysql-snapshot-freeze"), &freeze).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&freeze)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("root-only.cnf") && all.contains("ermission denied"),
        "{all}"
    );
}

#[test]
fn a_garbage_state_file_is_set_aside_with_a_warning() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "");
    std::fs::create_dir_all(&sandbox.run_dir).unwrap();
    std::fs::set_permissions(&sandbox.run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_private(
        &sandbox.run_dir.join("state.json"),
        "{\"pid\": \u{0}garbage ]]]",
    );
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("event=stale-state"), "{}", text(&out));

    write_private(&sandbox.run_dir.join("state.json"), "\u{1}\u{2} not json");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(sandbox.log().contains("event=stale-state"));
    assert!(server.writes_blocked());
    assert!(sandbox.thaw("thaw").status.success());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_least_privilege_account_runs_the_cycle_and_its_password_is_never_shown() {
    let server = Server::start();
    server
        .conn()
        .query_drop(
            "CREATE USER 'snapper'@'localhost' IDENTIFIED BY 'pw-9f8e7d-secret';
             GRANT RELOAD, PROCESS, BINLOG MONITOR, SLAVE MONITOR, CONNECTION ADMIN ON *.* TO 'snapper'@'localhost'",
        )
        .unwrap();
    let mut sandbox = Sandbox::new(&server, "user = snapper\npassword = pw-9f8e7d-secret");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.writes_blocked());
    let pid = sandbox.locker_pid().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("pw-9f8e7d"));
    let state = std::fs::read_to_string(sandbox.run_dir.join("state.json")).unwrap();
    assert!(!state.contains("pw-9f8e7d"));
    let out2 = sandbox.thaw("thaw");
    assert!(out2.status.success(), "{}", text(&out2));
    let shown = format!("{}{}{}", text(&out), text(&out2), sandbox.log());
    assert!(
        !shown.contains("pw-9f8e7d"),
        "the password was shown: {shown}"
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn the_vmware_hook_installed_into_a_destdir_freezes_and_thaws() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let root = TempDir::new("destdir");
    let install = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
    let out = std::process::Command::new(&install)
        .args(["--no-build", "--bin-dir"])
        .arg(bin_dir())
        .env("DESTDIR", root.path())
        .env("PREFIX", "/usr/local")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let hook = root
        .path()
        .join("etc/vmware-tools/backupScripts.d/50-mysql-snapshot");
    let sbin = root.path().join("usr/local/sbin");
    let run = |phase: &str| {
        // Exactly how vmtoolsd runs a backup script.
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("\"{}\" {phase}", hook.display()))
            .env("MYSQL_SNAPSHOT_SBIN", &sbin)
            .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
            .output()
            .unwrap()
    };
    let out = run("freeze");
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.writes_blocked());
    let out = run("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

/// An argument that is not UTF-8 (a path with a Latin-1 name, say) is a usage error that says so:
/// exit 2 from every binary, never a crash.
#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error_in_every_binary() {
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9.cnf");
    for name in ["freeze", "thaw", "locker", "verify"] {
        let out = std::process::Command::new(harness::bin(name))
            .arg("--config")
            .arg(latin1)
            .output()
            .unwrap();
        let said = harness::text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {said}");
        assert!(
            said.contains("argument 2") && said.contains("is not valid UTF-8"),
            "{name} names the argument: {said}"
        );
    }
}
