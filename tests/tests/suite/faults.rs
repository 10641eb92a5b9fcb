//! The fault matrix (docs/FAULTS.md): each test injects one fault — a dead, stopped or racing
//! process, a server that dies or is full, a crashed run's leftovers, an unusable directory, a
//! full, read-only or frozen log filesystem — and checks the promise the tool keeps under it.
//! Mounts (tmpfs, loop) are made here and undone in Drop guards; only a loop mount made by the test
//! is ever frozen, and the test process never writes to it while it is frozen.
//!
//! A scenario declared with `scenario!` runs on each case listed (`harness::Case`): MariaDB 10.11
//! in a lock mode (`default_mode`, `ftwrl`, `backup_stage`) and MySQL 9.7 (`mysql_9_7`, in the
//! harness's cached chroot with GTID on; `lock-mode = auto` takes FTWRL there, as the harness's
//! `innodb_flush_log_at_trx_commit = 2` rules the backup lock out). The MySQL-only
//! faults, and those whose MySQL set-up differs, are in faults_mysql.rs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use harness::faults::{
    assert_a_locker_killed_while_holding_is_reported,
    assert_a_second_thaw_has_nothing_to_do_and_exits_0,
    assert_a_stop_while_the_info_file_hangs_releases_at_once,
    assert_after_a_server_restart_thaw_never_kills_a_connection_that_reused_the_locker_s_id,
    assert_freeze_fails_before_locking_when_the_info_file_directory_is_missing_or_read_only,
    assert_freeze_fails_when_the_server_dies, assert_freeze_needs_exactly_one_connection,
    assert_freeze_releases_the_lock_and_fails_when_the_info_file_cannot_be_written,
    assert_thaw_never_signals_a_reused_pid,
    assert_thaw_releases_a_stopped_locker_s_lock_that_is_still_held,
    assert_thaw_reports_a_lock_lost_to_a_server_restart,
    assert_thaw_reports_a_lock_released_early_by_max_lock_time,
    assert_thaw_reports_a_stopped_locker_whose_lock_the_server_dropped,
    assert_the_release_happens_within_100_ms_when_the_log_file_is_on_a_frozen_filesystem,
    assert_two_concurrent_thaws_release_once_and_both_exit_0,
    assert_two_racing_freezes_start_exactly_one_locker, fill, lock_statement, lock_statements_run,
    stderr_of, wait_for_statement, Tmpfs, Writer,
};
use harness::loopfs::machine_cannot_loop_mount;
use harness::{assert_nothing_left, text, Case, Sandbox, Server, TempDir};

/// The lock mode the state file records.
fn recorded_mode(sandbox: &Sandbox) -> String {
    sandbox.state().unwrap()["lock_mode"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The locker dies, stops, or outlives its welcome.

scenario!(thaw_reports_a_locker_killed_while_holding: default_mode, ftwrl, mysql_9_7);
fn thaw_reports_a_locker_killed_while_holding(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    let sandbox = Sandbox::new(&server, &case.settings(""));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    if case.is_mysql() {
        assert_eq!(
            recorded_mode(&sandbox),
            "ftwrl",
            "auto must take FTWRL on a MySQL whose settings rule the backup lock out"
        );
    }
    assert_a_locker_killed_while_holding_is_reported(&server, &sandbox, case.limit());
}

scenario!(thaw_reports_a_stopped_locker_whose_lock_the_server_dropped: ftwrl, backup_stage, mysql_9_7);
fn thaw_reports_a_stopped_locker_whose_lock_the_server_dropped(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_thaw_reports_a_stopped_locker_whose_lock_the_server_dropped(
        &server,
        &case.settings("max-lock-time = 1"),
        case.limit(),
    );
}

scenario!(thaw_releases_a_stopped_locker_s_lock_that_is_still_held: ftwrl, backup_stage, mysql_9_7);
fn thaw_releases_a_stopped_locker_s_lock_that_is_still_held(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_thaw_releases_a_stopped_locker_s_lock_that_is_still_held(
        &server,
        &case.settings(""),
        case.limit(),
    );
}

scenario!(thaw_reports_a_lock_released_early_by_max_lock_time: default_mode, ftwrl, mysql_9_7);
fn thaw_reports_a_lock_released_early_by_max_lock_time(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_thaw_reports_a_lock_released_early_by_max_lock_time(
        &server,
        &case.settings("max-lock-time = 1"),
        case.limit(),
    );
}

// ---------------------------------------------------------------------------------------------
// freeze is stopped after the locker holds.

scenario!(
    sigterm_to_freeze_while_the_locker_holds_but_hangs_in_the_info_file_releases_at_once: ftwrl,
    backup_stage,
    mysql_9_7
);
/// freeze is caught between "the locker holds" and its own exit by putting the info file on a
/// loop mount that is frozen while the locker waits for the lock: the locker then hangs writing it.
fn sigterm_to_freeze_while_the_locker_holds_but_hangs_in_the_info_file_releases_at_once(
    case: Case,
) {
    let test = format!(
        "sigterm_to_freeze_while_the_locker_holds_but_hangs_in_the_info_file_releases_at_once::{case}"
    );
    if machine_cannot_loop_mount(&test) {
        return;
    }
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_a_stop_while_the_info_file_hangs_releases_at_once(
        &server,
        &case.settings(""),
        case.limit(),
    );
}

// ---------------------------------------------------------------------------------------------
// The server restarts, dies or is full.

scenario!(thaw_reports_a_lock_lost_to_a_server_restart: ftwrl, backup_stage, mysql_9_7);
fn thaw_reports_a_lock_lost_to_a_server_restart(case: Case) {
    let Some(mut server) = case.start(&[]) else {
        return;
    };
    assert_thaw_reports_a_lock_lost_to_a_server_restart(
        &mut server,
        &case.settings(""),
        case.limit(),
    );
}

scenario!(
    after_a_server_restart_thaw_never_kills_a_connection_that_reused_the_locker_s_id: ftwrl,
    backup_stage,
    mysql_9_7
);
/// A wedged locker, then a server restart: connection ids start again from 1, and the locker's
/// id may now belong to an innocent session of the same account. thaw must not kill it, and
/// must not call the lock held.
fn after_a_server_restart_thaw_never_kills_a_connection_that_reused_the_locker_s_id(case: Case) {
    let Some(mut server) = case.start(&[]) else {
        return;
    };
    assert_after_a_server_restart_thaw_never_kills_a_connection_that_reused_the_locker_s_id(
        &mut server,
        &case.settings(""),
        case.limit(),
    );
}

scenario!(
    freeze_fails_and_leaves_no_locker_when_the_server_dies_during_the_lock_attempt: ftwrl,
    backup_stage,
    mysql_9_7
);
fn freeze_fails_and_leaves_no_locker_when_the_server_dies_during_the_lock_attempt(case: Case) {
    let Some(mut server) = case.start(&[]) else {
        return;
    };
    assert_freeze_fails_when_the_server_dies(
        &mut server,
        &case.settings(""),
        case.attempt(),
        true,
        case.limit(),
    );
}

#[test]
fn freeze_fails_when_the_server_dies_while_it_waits_for_a_quiet_moment() {
    let mut server = Server::start();
    let attempt = lock_statement("backup-stage");
    assert_freeze_fails_when_the_server_dies(
        &mut server,
        "lock-mode = auto",
        attempt,
        false,
        Duration::from_secs(5),
    );
}

scenario!(freeze_needs_exactly_one_connection_and_fails_cleanly_without_it: default_mode, mysql_9_7);
fn freeze_needs_exactly_one_connection_and_fails_cleanly_without_it(case: Case) {
    let Some(server) = case.start(&["--max-connections=4"]) else {
        return;
    };
    assert_freeze_needs_exactly_one_connection(&server, case.limit());
}

// ---------------------------------------------------------------------------------------------
// Hooks called twice, or at once.

scenario!(a_second_thaw_has_nothing_to_do_and_exits_0: default_mode, mysql_9_7);
fn a_second_thaw_has_nothing_to_do_and_exits_0(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_a_second_thaw_has_nothing_to_do_and_exits_0(&server, case.limit());
}

scenario!(two_concurrent_thaws_release_once_and_both_exit_0: ftwrl, backup_stage, mysql_9_7);
fn two_concurrent_thaws_release_once_and_both_exit_0(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_two_concurrent_thaws_release_once_and_both_exit_0(
        &server,
        &case.settings(""),
        case.limit(),
    );
}

scenario!(two_racing_freezes_start_exactly_one_locker: ftwrl, backup_stage, mysql_9_7);
fn two_racing_freezes_start_exactly_one_locker(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_two_racing_freezes_start_exactly_one_locker(&server, &case.settings(""), case.limit());
}

// ---------------------------------------------------------------------------------------------
// Leftovers of a crashed run.

scenario!(thaw_never_signals_a_process_that_reused_a_recorded_pid: ftwrl, mysql_9_7);
fn thaw_never_signals_a_process_that_reused_a_recorded_pid(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_thaw_never_signals_a_reused_pid(&server, case.mode(), case.limit());
}

// ---------------------------------------------------------------------------------------------
// Directories: run-dir and info-file.

#[test]
fn freeze_creates_a_missing_run_dir_private() {
    let server = Server::start();
    let dir = TempDir::new("rundir-missing");
    let run_dir = dir.path().join("a/b/run");
    let sandbox = Sandbox::new(&server, &format!("run-dir = {}", run_dir.display()));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let mode = fs::metadata(&run_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "run-dir created with mode {mode:04o}");
    assert!(run_dir.join("state.json").is_file());
    assert!(sandbox.thaw("thaw").status.success());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_run_dir_that_is_a_file_is_refused_before_any_lock() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    fs::write(&sandbox.run_dir, "not a directory").unwrap();
    let before = lock_statements_run(&server);
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr_of(&out).contains("not a directory"),
        "{}",
        text(&out)
    );
    assert!(stderr_of(&out).contains(&*sandbox.run_dir.to_string_lossy()));
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(lock_statements_run(&server), before, "a lock statement ran");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_read_only_run_dir_is_refused_before_any_lock() {
    let server = Server::start();
    let ro = Tmpfs::mount("rundir-ro", "size=64k,mode=0700");
    ro.remount("ro");
    let sandbox = Sandbox::new(&server, &format!("run-dir = {}", ro.path.display()));
    let before = lock_statements_run(&server);
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains(&*ro.path.to_string_lossy()), "{stderr}");
    assert_eq!(lock_statements_run(&server), before, "a lock statement ran");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

scenario!(
    freeze_fails_before_locking_when_the_info_file_directory_is_missing_or_read_only: default_mode,
    mysql_9_7
);
fn freeze_fails_before_locking_when_the_info_file_directory_is_missing_or_read_only(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_freeze_fails_before_locking_when_the_info_file_directory_is_missing_or_read_only(
        &server,
        case.limit(),
    );
}

scenario!(
    freeze_releases_the_lock_and_fails_when_the_info_file_cannot_be_written: default_mode,
    mysql_9_7
);
fn freeze_releases_the_lock_and_fails_when_the_info_file_cannot_be_written(case: Case) {
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_freeze_releases_the_lock_and_fails_when_the_info_file_cannot_be_written(
        &server,
        case.limit(),
    );
}

// ---------------------------------------------------------------------------------------------
// Logging that fails.

/// A full cycle (freeze, blocked write, thaw) must succeed and release promptly.
fn cycle_succeeds_quickly(server: &Server, sandbox: &mut Sandbox) {
    let started = Instant::now();
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "freeze took {:?}",
        started.elapsed()
    );
    assert!(server.writes_blocked());
    let writer = Writer::start(server, "INSERT INTO snap.inno (v) VALUES (77)");
    wait_for_statement(server, "VALUES (77)");
    let asked = Instant::now();
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let (result, done) = writer.join_within(Duration::from_secs(5));
    result.unwrap();
    assert!(
        done.duration_since(asked) < Duration::from_secs(2),
        "the release took {:?}",
        done.duration_since(asked)
    );
    assert_nothing_left(server, sandbox, Duration::from_secs(5));
}

#[test]
fn a_log_file_on_a_full_filesystem_never_fails_or_delays_a_release() {
    let server = Server::start();
    let full = Tmpfs::mount("log-full", "size=64k");
    fill(&full.path);
    let log = full.path.join("mysql-snapshot.log");
    let mut sandbox = Sandbox::new(&server, &format!("log-file = {}", log.display()));
    cycle_succeeds_quickly(&server, &mut sandbox);
    let syslog = sandbox.log();
    assert!(
        syslog.contains("event=released"),
        "syslog lost the release: {syslog}"
    );
}

#[test]
fn a_log_file_on_a_read_only_filesystem_never_fails_or_delays_a_release() {
    let server = Server::start();
    let ro = Tmpfs::mount("log-ro", "size=64k");
    ro.remount("ro");
    let mut sandbox = Sandbox::new(
        &server,
        &format!(
            "log-file = {}",
            ro.path.join("mysql-snapshot.log").display()
        ),
    );
    cycle_succeeds_quickly(&server, &mut sandbox);
    assert!(sandbox.log().contains("event=released"));
}

#[test]
fn a_missing_syslog_socket_never_fails_or_delays_a_release() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "syslog-socket = /nonexistent/mss-log");
    cycle_succeeds_quickly(&server, &mut sandbox);
    assert!(sandbox.log().is_empty(), "the override did not take effect");
}

#[test]
fn a_syslog_reader_that_never_reads_never_blocks_a_release() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "");
    // Fill the sandbox's syslog socket queue; the test does not drain it until the end.
    let path = sandbox.dir.path().join("syslog.sock");
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender.set_nonblocking(true).unwrap();
    let mut sent = 0;
    while sender.send_to(&[b'x'; 2048], &path).is_ok() {
        sent += 1;
        assert!(sent < 1_000_000, "the syslog socket never filled");
    }
    cycle_succeeds_quickly(&server, &mut sandbox);
}

scenario!(
    the_release_happens_within_100_ms_when_the_log_file_is_on_a_frozen_filesystem: ftwrl,
    backup_stage,
    mysql_9_7
);
fn the_release_happens_within_100_ms_when_the_log_file_is_on_a_frozen_filesystem(case: Case) {
    let test = format!(
        "the_release_happens_within_100_ms_when_the_log_file_is_on_a_frozen_filesystem::{case}"
    );
    if machine_cannot_loop_mount(&test) {
        return;
    }
    let Some(server) = case.start(&[]) else {
        return;
    };
    assert_the_release_happens_within_100_ms_when_the_log_file_is_on_a_frozen_filesystem(
        &server,
        &case.settings(""),
        case.limit(),
    );
}
