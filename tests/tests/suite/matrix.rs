//! The core promises and the coordinates, checked on every server of the matrix: MariaDB 10.11
//! (the machine's packages), MariaDB 11.8 and MySQL 9.7 with GTID on (Debian-unstable chroots the
//! harness builds once). A chroot that cannot be built fails these tests, unless
//! `MYSQL_SNAPSHOT_SKIP_MATRIX=1` asks for a loud skip.

use std::thread;
use std::time::{Duration, Instant};

use harness::{matrix, text, wait_until, Flavour, Sandbox, Server};
use mysql::prelude::Queryable;

/// The info file freeze wrote, parsed.
fn info(sandbox: &Sandbox) -> serde_json::Value {
    let text = std::fs::read_to_string(&sandbox.info_file).expect("freeze wrote the info file");
    serde_json::from_str(&text).expect("the info file is JSON")
}

/// Binary log file and position as the server reports them right now.
fn binlog_status(server: &Server) -> (String, u64) {
    let statement = if server.flavour().is_mysql() {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW BINLOG STATUS"
    };
    let row: mysql::Row = server
        .conn()
        .query_first(statement)
        .unwrap()
        .expect("the binary log is on");
    (row.get("File").unwrap(), row.get("Position").unwrap())
}

/// The GTID state the info file must carry: its key, and the server's value right now.
fn gtid_status(server: &Server) -> (&'static str, String) {
    let (key, statement) = if server.flavour().is_mysql() {
        ("executed", "SELECT @@GLOBAL.gtid_executed")
    } else {
        ("binlog_pos", "SELECT @@GLOBAL.gtid_binlog_pos")
    };
    let value: String = server.conn().query_first(statement).unwrap().unwrap();
    (key, value.replace(['\n', '\r'], ""))
}

/// Waits (with a deadline) for a background statement to finish; returns its result.
fn join_within<T>(handle: thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    assert!(
        wait_until(limit, || handle.is_finished()),
        "{what} did not finish within {limit:?}"
    );
    handle.join().unwrap()
}

fn freeze_holds_the_lock_and_records_what_the_server_reports(flavour: Flavour) {
    if !matrix::require(flavour) {
        return;
    }
    let server = Server::start_flavour(flavour, &[]);
    server
        .conn()
        .query_drop("INSERT INTO snap.inno (v) VALUES (1), (2), (3)")
        .unwrap();
    let version: String = server
        .conn()
        .query_first("SELECT VERSION()")
        .unwrap()
        .unwrap();
    assert!(
        version.starts_with(flavour.version_prefix()),
        "the {} server reports version {version}",
        flavour.name()
    );
    let sandbox = Sandbox::new(&server, "");

    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        server.writes_blocked(),
        "freeze exited 0 on {} but writes are not blocked",
        flavour.name()
    );
    // A write from another connection waits for the lock…
    let mut conn = server.conn();
    let writer = thread::spawn(move || conn.query_drop("INSERT INTO snap.inno (v) VALUES (4242)"));
    assert!(wait_until(Duration::from_secs(10), || !server
        .statements_like("VALUES (4242)")
        .is_empty()));
    assert!(!writer.is_finished(), "the write went through while frozen");

    // …and the coordinates recorded are the ones the server reports while locked.
    let info = info(&sandbox);
    let (file, position) = binlog_status(&server);
    assert_eq!(
        info["binlog"]["file"].as_str(),
        Some(file.as_str()),
        "{info:#}"
    );
    assert_eq!(
        info["binlog"]["position"].as_u64(),
        Some(position),
        "{info:#}"
    );
    let (key, gtid) = gtid_status(&server);
    assert!(!gtid.is_empty(), "the server reports no GTID state");
    assert_eq!(info["gtid"][key].as_str(), Some(gtid.as_str()), "{info:#}");
    let expected_flavor = if flavour.is_mysql() {
        "mysql"
    } else {
        "mariadb"
    };
    assert_eq!(info["server"]["flavor"], expected_flavor, "{info:#}");
    assert_eq!(info["server"]["version"].as_str(), Some(version.as_str()));
    if flavour.is_mysql() {
        let uuid: String = server
            .conn()
            .query_first("SELECT @@server_uuid")
            .unwrap()
            .unwrap();
        assert_eq!(info["server"]["server_uuid"].as_str(), Some(uuid.as_str()));
    }

    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    join_within(
        writer,
        Duration::from_secs(30),
        "the write queued behind the lock",
    )
    .expect("the queued write succeeds after thaw");
    let written: Option<u64> = server
        .conn()
        .query_first("SELECT COUNT(*) FROM snap.inno WHERE v = 4242")
        .unwrap();
    assert_eq!(written, Some(1));
    assert!(
        wait_until(Duration::from_secs(10), || !server.writes_blocked()),
        "writes are still blocked after thaw"
    );
}

fn auto_lock_mode_picks_the_lightest_lock_the_server_offers(flavour: Flavour) {
    if !matrix::require(flavour) {
        return;
    }
    let server = Server::start_flavour(flavour, &[]);
    let sandbox = Sandbox::new(&server, "lock-mode = auto");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let mode = info(&sandbox)["lock"]["mode"].clone();
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        mode,
        flavour.auto_lock_mode(),
        "lock-mode = auto on {}",
        flavour.name()
    );
}

fn freeze_behind_a_long_myisam_write_fails_and_never_exits_0_unlocked(flavour: Flavour) {
    if !matrix::require(flavour) {
        return;
    }
    let server = Server::start_flavour(flavour, &[]);
    let sandbox = Sandbox::new(
        &server,
        "long-query-threshold = 1\nlock-wait-timeout = 1\nsnapshot-timeout = 4",
    );
    let mut conn = server.conn();
    let long =
        thread::spawn(move || conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(60) = 0"));
    assert!(wait_until(Duration::from_secs(10), || !server
        .statements_like("SLEEP(60)")
        .is_empty()));

    let started = Instant::now();
    let out = sandbox.freeze();
    let took = started.elapsed();
    let blocked = server.writes_blocked();
    assert!(
        !out.status.success(),
        "freeze exited 0 behind a 60 s MyISAM write on {} (writes blocked: {blocked}): {}",
        flavour.name(),
        text(&out)
    );
    // Refused for the right reason: the error names the statement in the way.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SLEEP(60)"),
        "freeze failed without naming the long write: {}",
        text(&out)
    );
    assert!(
        took < Duration::from_secs(40),
        "freeze took {took:?}: snapshot-timeout = 4 was not honoured"
    );
    assert!(
        !server.statements_like("SLEEP(60)").is_empty(),
        "the long write is gone: the test no longer shows anything"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !server.writes_blocked()),
        "a failed freeze left writes blocked on {}",
        flavour.name()
    );
    if let Some(pid) = sandbox.locker_pid() {
        assert!(
            wait_until(Duration::from_secs(10), || !harness::alive(pid)),
            "a failed freeze left its locker {pid} running"
        );
    }

    for id in server.statements_like("SLEEP(60)") {
        let _ = server.conn().query_drop(format!("KILL QUERY {id}"));
    }
    let _ = join_within(long, Duration::from_secs(30), "the long write");
}

/// One module per server, each stating the same promises; each test runs alone (`harness::heavy`).
macro_rules! matrix_tests {
    ($($module:ident => $flavour:expr,)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn freeze_holds_the_lock_and_records_what_the_server_reports_until_thaw() {
                harness::heavy();
                freeze_holds_the_lock_and_records_what_the_server_reports($flavour);
            }

            #[test]
            fn auto_lock_mode_picks_the_lightest_lock_the_server_offers() {
                harness::heavy();
                super::auto_lock_mode_picks_the_lightest_lock_the_server_offers($flavour);
            }

            #[test]
            fn freeze_behind_a_long_myisam_write_fails_and_never_exits_0_unlocked() {
                harness::heavy();
                super::freeze_behind_a_long_myisam_write_fails_and_never_exits_0_unlocked(
                    $flavour,
                );
            }
        }
    )*};
}

matrix_tests! {
    mariadb_10_11 => Flavour::MariaDb1011,
    mariadb_11_8 => Flavour::MariaDb118,
    mysql_9_7 => Flavour::MySql97,
}
