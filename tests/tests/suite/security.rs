//! Security promises: a private run-dir and state file that are never reached through a planted
//! symlink or a foreign-owned directory, a password that never shows in any argv, environment,
//! state file, info file or log line, a least-privilege account that is enough (and each missing
//! grant named with its fix), and the config-permission check by mode, owner and group.
//! Every "foreign" owner here is uid/gid 65534 (nobody/nogroup); nothing outside the test's temp
//! directories is touched.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use harness::accounts::{
    account_settings, assert_each_missing_grant_is_named_with_the_grant_that_fixes_it,
    assert_the_password_never_appears_in_argv_environment_state_info_or_logs, create_account,
    MARIADB_GRANTS, PASSWORD, PASSWORD_CORE,
};
use harness::{
    alive, assert_nothing_left, bin, signal, text, wait_until, write_private, Case, Sandbox,
    Server, TempDir,
};
use mysql::prelude::Queryable;

const NOBODY: u32 = 65534;

fn lock_statements_run(server: &Server) -> u64 {
    let rows: Vec<(String, u64)> = server
        .conn()
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_flush', 'Com_backup')")
        .unwrap();
    rows.iter().map(|(_, n)| n).sum()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn private_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// run-dir and state file.

#[test]
fn run_dir_and_state_file_are_private_even_under_umask_000() {
    let server = Server::start();
    let dir = TempDir::new("umask");
    let run_dir = dir.path().join("new/run");
    let sandbox = Sandbox::new(&server, &format!("run-dir = {}", run_dir.display()));
    let run = |phase: &str| {
        Command::new("sh")
            .arg("-c")
            .arg("umask 000; exec \"$0\" \"$1\"")
            .arg(bin(phase))
            .arg(phase)
            .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
            .output()
            .unwrap()
    };
    let out = run("freeze");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode_of(&run_dir), 0o700);
    assert_eq!(mode_of(&run_dir.join("state.json")), 0o600);
    assert_eq!(mode_of(&run_dir.join("lock")), 0o600);
    assert_eq!(
        mode_of(run_dir.parent().unwrap()) & 0o022,
        0,
        "a parent created for run-dir is writable by others"
    );
    let out = run("thaw");
    assert!(out.status.success(), "{}", text(&out));
    for entry in fs::read_dir(&run_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            mode_of(&path) & 0o077,
            0,
            "{} is readable or writable by others",
            path.display()
        );
    }
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_symlink_planted_as_run_dir_is_refused_and_nothing_is_written_through_it() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let victim = TempDir::new("victim");
    symlink(victim.path(), &sandbox.run_dir).unwrap();
    let before = lock_statements_run(&server);
    for phase in ["freeze", "thaw"] {
        let out = sandbox.command(phase).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{phase}: {}", text(&out));
        assert!(
            stderr_of(&out).contains("symlink"),
            "{phase}: {}",
            text(&out)
        );
    }
    let status = sandbox.command("thaw").arg("--status").output().unwrap();
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    assert_eq!(
        fs::read_dir(victim.path()).unwrap().count(),
        0,
        "something was written through the symlink"
    );
    assert_eq!(lock_statements_run(&server), before, "a lock statement ran");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_symlink_planted_as_the_state_file_is_never_followed() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "");
    private_dir(&sandbox.run_dir);
    let victim_dir = TempDir::new("victim");
    let victim = victim_dir.path().join("precious");
    fs::write(&victim, "precious data\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    symlink(&victim, sandbox.run_dir.join("state.json")).unwrap();
    // freeze does not read through it: it warns, moves the link aside and starts clean.
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let log = sandbox.log();
    assert!(log.contains("event=stale-state"), "{log}");
    assert!(
        log.contains("symbolic link; refusing to follow it"),
        "{log}"
    );
    assert!(
        !fs::symlink_metadata(sandbox.run_dir.join("state.json"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the state file is still the planted symlink"
    );
    assert!(sandbox.thaw("thaw").status.success());
    // Planted again after a run: thaw refuses to read through it.
    let _ = fs::remove_file(sandbox.run_dir.join("state.json"));
    symlink(&victim, sandbox.run_dir.join("state.json")).unwrap();
    let out = sandbox.thaw("thaw");
    assert!(
        stderr_of(&out).contains("event=stale-state"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious data\n");
    assert_eq!(mode_of(&victim), 0o644, "the victim's mode was changed");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn symlinks_planted_as_the_lock_or_temporary_state_file_are_refused() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    private_dir(&sandbox.run_dir);
    let victim_dir = TempDir::new("victim");
    let victim = victim_dir.path().join("precious");
    fs::write(&victim, "precious data\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let before = lock_statements_run(&server);
    for name in ["lock", "state.json.tmp"] {
        let link = sandbox.run_dir.join(name);
        symlink(&victim, &link).unwrap();
        let out = sandbox.freeze();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let stderr = stderr_of(&out);
        assert!(
            stderr.contains(&*link.to_string_lossy()),
            "{name}: {stderr}"
        );
        assert!(stderr.contains("symbolic link"), "{name}: {stderr}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious data\n");
        assert_eq!(mode_of(&victim), 0o644);
        fs::remove_file(&link).unwrap();
    }
    assert_eq!(lock_statements_run(&server), before, "a lock statement ran");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_foreign_owned_or_loose_run_dir_is_refused_with_a_clear_error() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    private_dir(&sandbox.run_dir);
    let before = lock_statements_run(&server);

    chown(&sandbox.run_dir, NOBODY, NOBODY);
    for phase in ["freeze", "thaw"] {
        let out = sandbox.command(phase).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{phase}: {}", text(&out));
        let stderr = stderr_of(&out);
        assert!(
            stderr.contains(&format!("owned by uid {NOBODY}")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&*sandbox.run_dir.to_string_lossy()),
            "{stderr}"
        );
    }
    chown(&sandbox.run_dir, 0, 0);

    for mode in [0o777, 0o770, 0o702] {
        fs::set_permissions(&sandbox.run_dir, fs::Permissions::from_mode(mode)).unwrap();
        let out = sandbox.freeze();
        assert_eq!(out.status.code(), Some(1), "{mode:o}: {}", text(&out));
        let stderr = stderr_of(&out);
        assert!(stderr.contains(&format!("{mode:04o}")), "{stderr}");
        assert!(stderr.contains("chmod 700"), "{stderr}");
    }
    assert_eq!(lock_statements_run(&server), before, "a lock statement ran");
    assert_eq!(
        fs::read_dir(&sandbox.run_dir).unwrap().count(),
        0,
        "something was written into the refused run-dir"
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_state_file_owned_by_someone_else_is_never_trusted() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    private_dir(&sandbox.run_dir);
    // A state that names a live process of ours as an "acquired" locker, but foreign-owned.
    let mut bystander = Command::new("sleep").arg("300").spawn().unwrap();
    let me = common::process::Identity::of(bystander.id()).unwrap();
    let state = serde_json::json!({
        "format": 1, "status": "acquired", "freeze": me, "locker": me,
        "connection_id": 1, "user": "root", "attempt": 1,
        "started_at_ms": 1_700_000_000_000u64, "acquired_at_ms": 1_700_000_000_100u64,
        "updated_at": "2023-11-14T22:13:20.100Z",
    });
    let path = sandbox.run_dir.join("state.json");
    write_private(&path, &state.to_string());
    chown(&path, NOBODY, NOBODY);
    let out = sandbox.thaw("thaw");
    let still_alive = alive(bystander.id());
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        still_alive,
        "thaw signalled a process named in a foreign state file"
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr_of(&out).contains("owned by uid 65534"),
        "{}",
        text(&out)
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// The password.

scenario!(the_password_never_appears_in_argv_environment_state_info_or_logs: ftwrl, mysql_9_7);
fn the_password_never_appears_in_argv_environment_state_info_or_logs(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_the_password_never_appears_in_argv_environment_state_info_or_logs(
        &server,
        case.grants(),
        &case.settings(""),
        case.limit(),
    );
}

// ---------------------------------------------------------------------------------------------
// Privileges.

/// freeze, --check, --status, thaw, freezeFail and the kill of a wedged locker, as an account with
/// only the documented grants; with `kill_a_long_write`, also kill-long-queries killing another
/// account's long MyISAM write (what CONNECTION ADMIN is for).
fn least_privilege_flow(mode: &str, kill_a_long_write: bool) {
    let server = Server::start();
    create_account(&server, &MARIADB_GRANTS.documented.join(", "));
    let mut sandbox = Sandbox::new(
        &server,
        &account_settings(&format!(
            "lock-mode = {mode}\nlong-query-threshold = 100\nlock-wait-timeout = 3\nkill-long-queries = all\nkill-long-queries-timeout = 1"
        )),
    );
    let check = sandbox.command("freeze").arg("--check").output().unwrap();
    assert!(check.status.success(), "{}", text(&check));

    if kill_a_long_write {
        // A long MyISAM write by another account holds up the lock until it is killed.
        let mut conn = server.conn();
        let long = thread::spawn(move || {
            conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0")
        });
        assert!(wait_until(Duration::from_secs(10), || !server
            .statements_like("SLEEP(30)")
            .is_empty()));
        let started = Instant::now();
        let out = sandbox.freeze();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "freeze took {:?}: the blocking write was not killed: {}",
            started.elapsed(),
            text(&out)
        );
        assert!(
            long.join().unwrap().is_err(),
            "the blocking write was not killed"
        );
        assert!(sandbox.log().contains("event=killed-query"));
    } else {
        assert!(sandbox.freeze().status.success());
    }
    assert!(server.writes_blocked());
    let status = sandbox.command("thaw").arg("--status").output().unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));

    // freezeFail, and a wedged locker that thaw must kill by connection.
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let out = sandbox.thaw("freezeFail");
    assert!(out.status.success(), "{}", text(&out));
    let out = sandbox.freeze();
    assert!(out.status.success(), "after freezeFail: {}", text(&out));
    let locker = sandbox.locker_pid().unwrap();
    signal(locker, "STOP");
    let out = sandbox.thaw("thaw");
    if alive(locker) {
        signal(locker, "KILL");
    }
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_least_privilege_account_runs_the_whole_flow_ftwrl() {
    least_privilege_flow("ftwrl", true);
}

#[test]
fn a_least_privilege_account_runs_the_whole_flow_backup_stage() {
    least_privilege_flow("backup-stage", false);
}

/// Open bug (docs/FAULTS.md): `processlist::non_transactional_tables_in_use` reads `SHOW OPEN TABLES`
/// and information_schema.TABLES, which show an account only the tables it has privileges on. With
/// the documented grants the long MyISAM write is invisible, so backup-stage mode neither waits
/// for it nor kills it: every attempt times out until the write ends (safe, but no kill).
#[test]
fn a_least_privilege_account_kills_a_long_myisam_write_in_backup_stage_mode() {
    least_privilege_flow("backup-stage", true);
}

scenario!(each_missing_grant_is_named_with_the_grant_that_fixes_it: default_mode, mysql_9_7);
fn each_missing_grant_is_named_with_the_grant_that_fixes_it(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_each_missing_grant_is_named_with_the_grant_that_fixes_it(
        &server,
        case.grants(),
        case.limit(),
    );
}

// ---------------------------------------------------------------------------------------------
// The config file's permissions.

/// What thaw --status (which reads the config like every binary, but never connects) says of
/// `config`.
/// A locker started by hand has no plan from freeze: without descriptor 4, with a descriptor 4
/// that ends at once, and with garbage on it (a password among it), it exits 1 naming the
/// problem, echoes nothing it read, and takes no lock, writes no state and leaves no locker.
#[test]
fn a_locker_without_a_plan_from_freeze_refuses_clearly_and_takes_no_lock() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let empty = sandbox.dir.path().join("empty");
    let garbage = sandbox.dir.path().join("garbage");
    write_private(&empty, "");
    write_private(
        &garbage,
        &format!("[client]\npassword = {PASSWORD}\ngo\n\u{0}\u{7f}{PASSWORD}\n"),
    );
    let cut = sandbox.dir.path().join("cut");
    write_private(&cut, &format!("plan 5\n[client]\npassword = {PASSWORD}\n"));
    // sh puts `file` on descriptor 4, then becomes the locker.
    let with_fd_4 = |file: &Path| {
        Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" 4<\"$1\"")
            .arg(bin("locker"))
            .arg(file)
            .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let locks_before = lock_statements_run(&server);
    let cases = [
        (
            sandbox.command("locker").output().unwrap(),
            "descriptor 4 (freeze's orders pipe) is not open",
        ),
        (
            with_fd_4(&empty),
            "the orders pipe ended before freeze's plan",
        ),
        (with_fd_4(&garbage), "does not start with `plan N`"),
        (with_fd_4(&cut), "the plan ended at line 3 of 5"),
    ];
    for (out, says) in cases {
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("no usable plan from freeze"), "{all}");
        assert!(all.contains(says), "{all}");
        assert!(
            !all.contains(PASSWORD),
            "the plan's password was echoed: {all}"
        );
    }
    assert_eq!(
        lock_statements_run(&server),
        locks_before,
        "a lock statement ran"
    );
    assert!(
        sandbox.state().is_none(),
        "a locker without a plan wrote the state file"
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

fn config_verdict(config: &Path) -> Output {
    Command::new(bin("thaw"))
        .arg("--status")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// The config was refused: --status reports UNKNOWN naming the config.
fn refused(out: &Output) -> bool {
    out.status.code() == Some(3) && text(out).contains("UNKNOWN - config ")
}

#[test]
fn the_config_permission_check_covers_mode_owner_and_group() {
    let server = Server::start();
    let dir = TempDir::new("cfgperm");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let sandbox = Sandbox::new(&server, "");
    let base = fs::read_to_string(&sandbox.config).unwrap();
    let with_password = format!("{base}\n[client]\npassword = {PASSWORD}\n");
    let config = dir.path().join("mysql-snapshot.cnf");

    // (content, mode, uid, gid, refused?, what)
    let cases: [(&str, u32, u32, u32, bool, &str); 12] = [
        (&with_password, 0o600, 0, 0, false, "password, 0600 root"),
        (&with_password, 0o400, 0, 0, false, "password, 0400 root"),
        (
            &with_password,
            0o640,
            0,
            0,
            true,
            "password, group-readable",
        ),
        (
            &with_password,
            0o604,
            0,
            0,
            true,
            "password, world-readable",
        ),
        (
            &with_password,
            0o600,
            0,
            NOBODY,
            false,
            "password, 0600, other group",
        ),
        (
            &with_password,
            0o640,
            0,
            NOBODY,
            true,
            "password, readable by another group",
        ),
        (
            &with_password,
            0o600,
            NOBODY,
            0,
            true,
            "password, owned by another uid",
        ),
        (&base, 0o644, 0, 0, false, "no password, 0644"),
        (&base, 0o664, 0, 0, true, "no password, group-writable"),
        (
            &base,
            0o664,
            0,
            NOBODY,
            true,
            "no password, writable by another group",
        ),
        (&base, 0o646, 0, 0, true, "no password, world-writable"),
        (
            &base,
            0o644,
            NOBODY,
            0,
            true,
            "no password, owned by another uid",
        ),
    ];
    for (content, mode, uid, gid, expect_refused, what) in cases {
        let _ = fs::remove_file(&config);
        fs::write(&config, content).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(mode)).unwrap();
        chown(&config, uid, gid);
        let out = config_verdict(&config);
        assert_eq!(refused(&out), expect_refused, "{what}: {}", text(&out));
        if expect_refused {
            assert!(
                text(&out).contains(&*config.to_string_lossy()),
                "{what}: the file is not named: {}",
                text(&out)
            );
            assert!(
                text(&out).contains("chmod 600") || text(&out).contains("chmod o-w"),
                "{what}: no fix given: {}",
                text(&out)
            );
        }
        assert!(
            !text(&out).contains(PASSWORD_CORE),
            "{what}: password shown"
        );
    }

    // An included file that holds the password is checked the same way.
    let included = dir.path().join("secret.cnf");
    fs::write(&included, format!("[client]\npassword = {PASSWORD}\n")).unwrap();
    fs::set_permissions(&included, fs::Permissions::from_mode(0o644)).unwrap();
    let _ = fs::remove_file(&config);
    fs::write(
        &config,
        format!("{base}\n!include {}\n", included.display()),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let out = config_verdict(&config);
    assert!(
        refused(&out),
        "a readable included password file: {}",
        text(&out)
    );
    assert!(text(&out).contains("secret.cnf"), "{}", text(&out));
    fs::set_permissions(&included, fs::Permissions::from_mode(0o600)).unwrap();
    let out = config_verdict(&config);
    assert!(!refused(&out), "{}", text(&out));
}
