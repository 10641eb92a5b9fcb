//! The fault matrix (docs/FAULTS.md) on MySQL 9.7 where its set-up differs from MariaDB's, run in
//! the harness's cached chroot with GTID on: each test injects one fault on a MySQL server and
//! checks the promise faults.rs, core.rs and security.rs check on MariaDB. The scenarios whose
//! set-up is the same on both are declared once there, with a `mysql_9_7` case.
//! `lock-mode = auto` takes FTWRL on the harness's MySQL (its `innodb_flush_log_at_trx_commit = 2` rules the backup lock out; BACKUP STAGE is MariaDB's). A chroot that cannot be built fails every test unless
//! `MYSQL_SNAPSHOT_SKIP_MATRIX=1` asks for a loud skip; mounts are undone in Drop guards.

use std::time::{Duration, Instant};

use harness::accounts::{account_settings, create_account, MYSQL_GRANTS, PASSWORD};
use harness::faults::{
    assert_freeze_fails_when_the_server_dies, exit_code_within, stderr_of, wait_for_statement,
    StoppedProcess, Writer,
};
use harness::{assert_nothing_left, signal, text, wait_until, Case, Sandbox, Server};
use mysql::prelude::Queryable;

/// What a lock attempt on MySQL waits in, as the processlist shows it: the pre-flush
/// (`FLUSH NO_WRITE_TO_BINLOG TABLES`, on by default), then `FLUSH TABLES WITH READ LOCK`.
const ATTEMPT: &str = "FLUSH ";

/// A private MySQL 9.7 (binary log and GTID on) with these extra mysqld arguments, or `None`
/// after a loud banner when the chroot cannot be built and the matrix may be skipped.
fn mysql(extra: &[&str]) -> Option<Server> {
    Case::mysql_9_7().start(extra)
}

// ---------------------------------------------------------------------------------------------
// freeze interrupted.

#[test]
fn sigterm_to_freeze_during_a_lock_attempt_leaves_no_lock_and_no_locker() {
    let Some(server) = mysql(&[]) else { return };
    let sandbox = Sandbox::new(
        &server,
        "long-query-threshold = 100\nlock-wait-timeout = 30",
    );
    // FTWRL queues behind a long MyISAM write.
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0");
    wait_for_statement(&server, "SLEEP(30)");
    let mut freeze = sandbox.command("freeze").spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
    wait_for_statement(&server, ATTEMPT);
    let started = Instant::now();
    signal(freeze.id(), "TERM");
    let code = exit_code_within(&mut freeze, Duration::from_secs(30));
    assert_ne!(code, Some(0), "a freeze stopped by SIGTERM must not exit 0");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "freeze took {:?} to stop",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(3), || server
            .statements_like(ATTEMPT)
            .is_empty()),
        "the lock statement is still queued"
    );
    for id in server.statements_like("SLEEP(30)") {
        server
            .conn()
            .query_drop(format!("KILL QUERY {id}"))
            .unwrap();
    }
    let _ = long.join_within(Duration::from_secs(30));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    // No lock was ever held: thaw has nothing to release, and says the freeze took none.
    let out = sandbox.thaw("thaw");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("took no lock"),
        "thaw must name the freeze that took no lock: {}",
        text(&out)
    );
}

#[test]
fn sigterm_to_freeze_waiting_for_a_quiet_moment_exits_nonzero_at_once() {
    let Some(server) = mysql(&[]) else { return };
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0");
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    wait_for_statement(&server, "SLEEP(20)");
    let mut freeze = sandbox.command("freeze").spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || sandbox
            .log()
            .contains("event=waiting")),
        "freeze never said it was waiting for a quiet moment"
    );
    // The locker may already be connected and recorded (status `waiting`): it waits for go.
    assert!(
        server.statements_like(ATTEMPT).is_empty(),
        "freeze should still be waiting for a quiet moment, not in a lock attempt"
    );
    let started = Instant::now();
    signal(freeze.id(), "TERM");
    let code = exit_code_within(&mut freeze, Duration::from_secs(30));
    assert_ne!(code, Some(0), "a freeze stopped by SIGTERM must not exit 0");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "freeze took {:?} to stop",
        started.elapsed()
    );
    assert!(
        server.statements_like(ATTEMPT).is_empty(),
        "a lock statement runs although freeze stopped before any quiet moment"
    );
    for id in server.statements_like("SLEEP(20)") {
        server
            .conn()
            .query_drop(format!("KILL QUERY {id}"))
            .unwrap();
    }
    let _ = long.join_within(Duration::from_secs(30));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

/// SIGKILL (vmtoolsd's second signal) to freeze while its locker waits for the lock: the locker
/// takes the lock later, sees that freeze never reported success, and releases it.
#[test]
fn a_freeze_killed_outright_mid_attempt_leaves_no_lock_once_the_locker_gets_it() {
    let Some(server) = mysql(&[]) else { return };
    let sandbox = Sandbox::new(
        &server,
        "long-query-threshold = 100\nlock-wait-timeout = 30",
    );
    let long = Writer::start(&server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    wait_for_statement(&server, "SLEEP(20)");
    let mut freeze = sandbox.command("freeze").spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
    wait_for_statement(&server, ATTEMPT);
    let _ = freeze.kill();
    let _ = freeze.wait();
    // Let the locker get its lock: it must notice that freeze never reported success.
    for id in server.statements_like("SLEEP(20)") {
        server
            .conn()
            .query_drop(format!("KILL QUERY {id}"))
            .unwrap();
    }
    let _ = long.join_within(Duration::from_secs(30));
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

// ---------------------------------------------------------------------------------------------
// The server restarts, dies or is full.

#[test]
fn freeze_fails_when_the_server_dies_while_it_waits_for_a_quiet_moment() {
    let Some(mut server) = mysql(&[]) else {
        return;
    };
    assert_freeze_fails_when_the_server_dies(
        &mut server,
        "",
        ATTEMPT,
        false,
        Duration::from_secs(10),
    );
}

// ---------------------------------------------------------------------------------------------
// Hooks called twice, or at once.

#[test]
fn thaw_without_a_freeze_is_a_notice_and_exit_0() {
    let Some(server) = mysql(&[]) else { return };
    let sandbox = Sandbox::new(&server, "");
    for phase in ["thaw", "freezeFail"] {
        let out = sandbox.thaw(phase);
        assert!(out.status.success(), "{phase}: {}", text(&out));
        assert!(
            stderr_of(&out).contains("nothing to thaw"),
            "{phase}: {}",
            text(&out)
        );
    }
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn a_second_freeze_while_locked_is_refused_and_freeze_fail_releases_the_first() {
    let Some(server) = mysql(&[]) else { return };
    let sandbox = Sandbox::new(&server, "");
    assert!(sandbox.freeze().status.success());
    let first = sandbox.locker_pid().unwrap();
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr_of(&out).contains("another snapshot is in progress"),
        "{}",
        text(&out)
    );
    assert_eq!(sandbox.lockers(), vec![first]);
    assert!(
        server.writes_blocked(),
        "the refused freeze must leave the first lock alone"
    );
    let out = sandbox.thaw("freezeFail");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// The password and the account's privileges.

/// freeze --check, a freeze that kills another account's long MyISAM write (what CONNECTION_ADMIN
/// is for), thaw --status, thaw, freezeFail and the kill of a wedged locker, all as an account
/// with only README's MySQL grants.
#[test]
fn a_least_privilege_account_runs_the_whole_flow() {
    let Some(server) = mysql(&[]) else { return };
    create_account(&server, &MYSQL_GRANTS.documented.join(", "));
    let mut sandbox = Sandbox::new(
        &server,
        &account_settings(
            "long-query-threshold = 100\nlock-wait-timeout = 3\nkill-long-queries = all\nkill-long-queries-timeout = 1",
        ),
    );
    let check = sandbox.command("freeze").arg("--check").output().unwrap();
    assert!(check.status.success(), "{}", text(&check));
    // --check tells the DBA what kill-long-queries cannot kill without SYSTEM_USER (a note, not a
    // failure); root holds SYSTEM_USER and gets no such note.
    let report = text(&check);
    assert!(
        report.contains("GRANT SYSTEM_USER ON *.* TO") && report.contains("snapper"),
        "{report}"
    );
    let as_root = Sandbox::new(&server, "kill-long-queries = all");
    let root_check = as_root.command("freeze").arg("--check").output().unwrap();
    assert!(root_check.status.success(), "{}", text(&root_check));
    assert!(
        !text(&root_check).contains("SYSTEM_USER"),
        "{}",
        text(&root_check)
    );

    // An application account (no SYSTEM_USER: MySQL lets CONNECTION_ADMIN kill only sessions of
    // accounts without it) runs a long MyISAM write that holds up FTWRL until it is killed.
    let mut conn = server.conn();
    conn.query_drop("DROP USER IF EXISTS 'app'@'localhost'")
        .unwrap();
    conn.query_drop(format!(
        "CREATE USER 'app'@'localhost' IDENTIFIED BY '{PASSWORD}'"
    ))
    .unwrap();
    conn.query_drop("GRANT SELECT, UPDATE ON snap.* TO 'app'@'localhost'")
        .unwrap();
    let mut app = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .user(Some("app"))
            .pass(Some(PASSWORD))
            .socket(Some(server.socket.to_string_lossy().into_owned())),
    )
    .expect("connect as the application account");
    let long = std::thread::spawn(move || {
        app.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0")
    });
    wait_for_statement(&server, "SLEEP(30)");
    let started = Instant::now();
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "freeze took {:?}: the blocking write was not killed: {}",
        started.elapsed(),
        text(&out)
    );
    assert!(
        wait_until(Duration::from_secs(10), || long.is_finished()),
        "the blocking write never returned"
    );
    assert!(
        long.join().unwrap().is_err(),
        "the blocking write was not killed"
    );
    assert!(sandbox.log().contains("event=killed-query"));
    assert!(server.writes_blocked());
    let status = sandbox.command("thaw").arg("--status").output().unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));

    // freezeFail, and a wedged locker that thaw must kill by connection.
    assert!(sandbox.freeze().status.success());
    let out = sandbox.thaw("freezeFail");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    assert!(sandbox.freeze().status.success());
    let stopped = StoppedProcess::stop(sandbox.locker_pid().unwrap());
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    drop(stopped);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// Server answers of an unexpected shape.

/// MySQL shows a session whose clock runs ahead (`SET TIMESTAMP`, a replica applying a source
/// whose clock is ahead) with a negative `TIME`. The lookup thaw makes before it kills a wedged
/// locker (and freeze before it stops one) reads it as 0: it never crashes on it, which would
/// leave the wedged locker and its lock in place.
#[test]
fn a_connection_whose_clock_runs_ahead_is_looked_up_and_never_crashes_the_caller() {
    let Some(server) = mysql(&[]) else { return };
    let mut ahead = server.conn();
    ahead
        .query_drop("SET TIMESTAMP = UNIX_TIMESTAMP() + 100000")
        .unwrap();
    ahead.query_drop("DO 0").unwrap();
    let id: u64 = ahead
        .query_first("SELECT CONNECTION_ID()")
        .unwrap()
        .unwrap();
    let mut conn = server.conn();
    let raw: Option<i64> = conn
        .query_first(format!(
            "SELECT TIME FROM information_schema.PROCESSLIST WHERE ID = {id}"
        ))
        .unwrap();
    assert!(
        raw.is_some_and(|t| t < 0),
        "the shape this test is about: a negative TIME (got {raw:?})"
    );
    let looked_up = common::processlist::connection(&mut conn, id).unwrap();
    assert_eq!(looked_up, Some(("root".to_string(), 0)));
}
