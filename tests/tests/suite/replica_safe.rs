//! `replica-safe = on`, on a real MariaDB source/replica pair with statement-based replication:
//! freeze waits while the replica's SQL thread holds a temporary table open, then holds the SQL
//! thread stopped with none open for the lock, and the thread runs again after every way a
//! snapshot can end — thaw, a refusal, max-lock-time, a killed locker (thaw, or else the next
//! freeze, starts it), an unresponsive locker, lock attempts that time out.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use harness::{alive, signal, text, wait_until, Sandbox, Server};
use mysql::prelude::Queryable;
use mysql::Conn;

use harness::replication::Source;

/// A source (statement-based binlog, on a loopback port) and a replica of it.
struct Pair {
    source: Server,
    replica: Server,
}

impl Pair {
    fn start() -> Pair {
        let upstream = Source::start(&["--binlog-format=STATEMENT"]);
        let replica =
            Server::start_with(&["--log-bin=binlog", "--server-id=2", "--relay-log=relay"]);
        upstream.attach(&replica);
        let source = upstream.server;
        let pair = Pair { source, replica };
        assert!(
            pair.replicates(),
            "the replica does not replicate: {}",
            pair.sql_running()
        );
        pair
    }

    /// The replica's `Slave_SQL_Running` (`Yes`/`No`).
    fn sql_running(&self) -> String {
        let row: mysql::Row = self
            .replica
            .conn()
            .query_first("SHOW ALL SLAVES STATUS")
            .unwrap()
            .expect("a replication connection");
        row.get::<String, _>("Slave_SQL_Running")
            .unwrap_or_default()
    }

    /// `Slave_open_temp_tables` on the replica.
    fn open_temp_tables(&self) -> u64 {
        let row: Option<(String, u64)> = self
            .replica
            .conn()
            .query_first("SHOW GLOBAL STATUS LIKE 'Slave_open_temp_tables'")
            .unwrap();
        row.map_or(0, |(_, n)| n)
    }

    /// A row written on the source now reaches the replica (within 30 s).
    fn replicates(&self) -> bool {
        let id: u64 = {
            let mut conn = self.source.conn();
            conn.query_drop("INSERT INTO snap.feed (v) VALUES (1)")
                .unwrap();
            conn.last_insert_id()
        };
        wait_until(Duration::from_secs(30), || {
            self.replica
                .conn()
                .query_first::<u64, _>(format!("SELECT COUNT(*) FROM snap.feed WHERE id = {id}"))
                .ok()
                .flatten()
                == Some(1)
        })
    }

    /// A source session holding a temporary table, which the replica's SQL thread then holds
    /// open too (statement-based events). Dropping the session drops the table on both.
    fn open_temporary_table(&self) -> Conn {
        let mut conn = self.source.conn();
        conn.query_drop(
            "CREATE TEMPORARY TABLE snap.scratch (a INT); INSERT INTO snap.scratch VALUES (1)",
        )
        .unwrap();
        assert!(
            wait_until(Duration::from_secs(30), || self.open_temp_tables() == 1),
            "the replica never opened the temporary table"
        );
        conn
    }
}

fn spawn_freeze(sandbox: &Sandbox) -> Child {
    sandbox
        .command("freeze")
        .arg("freeze")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn stopped_record(sandbox: &Sandbox) -> serde_json::Value {
    sandbox.state().map_or(serde_json::Value::Null, |s| {
        s["replica_sql_stopped"].clone()
    })
}

#[test]
fn replica_safe_waits_for_open_temporary_tables_holds_the_sql_thread_stopped_and_thaw_starts_it() {
    let pair = Pair::start();
    let mut sandbox = Sandbox::new(&pair.replica, "replica-safe = on\nsnapshot-timeout = 60");
    let mut holder = pair.open_temporary_table();
    let check = sandbox.command("freeze").arg("--check").output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("1 temporary table(s) open now: replica-safe = on waits"),
        "--check does not say what replica-safe will do: {}",
        text(&check)
    );

    let mut freeze = spawn_freeze(&sandbox);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        freeze.try_wait().unwrap().is_none(),
        "freeze ended while the replica held a temporary table open"
    );
    assert_eq!(
        pair.sql_running(),
        "Yes",
        "the SQL thread must run while it holds a temporary table: only it can drop it"
    );
    assert!(
        !pair.replica.writes_blocked(),
        "no lock may be taken while replica-safe waits"
    );
    holder
        .query_drop("DROP TEMPORARY TABLE snap.scratch")
        .unwrap();
    let dropped = Instant::now();
    let out = finish(freeze);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "freeze returned {} ms after the source dropped the temporary table",
        dropped.elapsed().as_millis()
    );

    // Frozen: the SQL thread stopped with nothing open, and both records say so.
    assert!(
        pair.replica.writes_blocked(),
        "no lock after freeze exited 0"
    );
    assert_eq!(pair.sql_running(), "No");
    assert_eq!(pair.open_temp_tables(), 0);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sandbox.info_file).unwrap()).unwrap();
    assert_eq!(info["durability"]["replica_open_temp_tables"], 0, "{info}");
    assert_eq!(
        info["durability"]["replica_sql_stopped"],
        serde_json::json!([""]),
        "{info}"
    );
    assert_eq!(stopped_record(&sandbox), serde_json::json!([""]));
    let log = sandbox.log();
    assert!(
        log.contains("event=waiting") && log.contains("temporary table(s) open"),
        "freeze did not say what it waited for:\n{log}"
    );
    assert!(log.contains("event=replica-safe stopped"), "{log}");

    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    // Started again before thaw returned: no wait here.
    assert_eq!(
        pair.sql_running(),
        "Yes",
        "thaw returned with the SQL thread stopped"
    );
    assert!(stopped_record(&sandbox).is_null());
    assert!(pair.replicates(), "replication did not resume after thaw");
}

#[test]
fn replica_safe_refuses_when_a_temporary_table_stays_open_past_snapshot_timeout_and_leaves_the_sql_thread_running(
) {
    let pair = Pair::start();
    let sandbox = Sandbox::new(&pair.replica, "replica-safe = on\nsnapshot-timeout = 3");
    let _holder = pair.open_temporary_table();
    let started = Instant::now();
    let out = sandbox.freeze();
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("snapshot-timeout (3 s)") && stderr.contains("temporary table(s) open"),
        "the refusal does not say why: {stderr}"
    );
    assert!(took < Duration::from_secs(15), "freeze took {took:?}");
    assert_eq!(pair.sql_running(), "Yes");
    assert!(stopped_record(&sandbox).is_null());
    harness::assert_nothing_left(&pair.replica, &sandbox, Duration::from_secs(5));

    // The DBA stopped the SQL thread with the table open: waiting cannot help, so the refusal
    // comes at once, and the thread stays as the DBA left it (never started by us).
    pair.replica
        .conn()
        .query_drop("STOP SLAVE SQL_THREAD")
        .unwrap();
    let started = Instant::now();
    let out = sandbox.freeze();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refusal that waiting cannot change took {:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot go away"),
        "{}",
        text(&out)
    );
    assert_eq!(
        pair.sql_running(),
        "No",
        "replica-safe started a thread it did not stop"
    );
    harness::assert_nothing_left(&pair.replica, &sandbox, Duration::from_secs(5));
}

/// A freeze that succeeds, with the SQL thread stopped, and its locker's PID.
fn frozen(pair: &Pair, sandbox: &Sandbox) -> u32 {
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        pair.sql_running(),
        "No",
        "replica-safe did not stop the SQL thread"
    );
    sandbox.locker_pid().unwrap()
}

#[test]
fn after_each_fault_the_sql_thread_that_replica_safe_stopped_runs_again() {
    let pair = Pair::start();

    // The locker is SIGKILLed while it holds the lock: thaw reports the lost lock and starts
    // the thread.
    let mut sandbox = Sandbox::new(&pair.replica, "replica-safe = on");
    let locker = frozen(&pair, &sandbox);
    signal(locker, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(locker)));
    assert_eq!(pair.sql_running(), "No");
    let out = sandbox.thaw("thaw");
    assert!(
        !out.status.success(),
        "a lost lock must fail thaw: {}",
        text(&out)
    );
    assert_eq!(
        pair.sql_running(),
        "Yes",
        "killed locker, then thaw: {}",
        text(&out)
    );
    assert!(sandbox.log().contains("event=replica-restarted"));

    // Killed with no thaw: `--status` is CRITICAL and names the thread; the next freeze starts it
    // (and stops it again for its own lock), and its thaw starts it.
    let locker = frozen(&pair, &sandbox);
    signal(locker, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(locker)));
    let status = sandbox.command("thaw").arg("--status").output().unwrap();
    assert_eq!(status.status.code(), Some(2), "{}", text(&status));
    assert!(String::from_utf8_lossy(&status.stdout)
        .contains("replica-safe stopped the SQL thread(s) ''"));
    frozen(&pair, &sandbox);
    assert!(
        sandbox.log().contains("a previous snapshot's locker died"),
        "the next freeze did not start the threads the dead locker left stopped"
    );
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(pair.sql_running(), "Yes", "next freeze, then thaw");

    // An unresponsive (stopped) locker: thaw kills it and its connection, and starts the thread.
    let locker = frozen(&pair, &sandbox);
    signal(locker, "STOP");
    let out = sandbox.thaw("thaw");
    signal(locker, "CONT");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(pair.sql_running(), "Yes", "unresponsive locker, then thaw");

    // max-lock-time: the locker releases by itself and starts the thread before it records the
    // release.
    let sandbox = Sandbox::new(&pair.replica, "replica-safe = on\nmax-lock-time = 2");
    frozen(&pair, &sandbox);
    assert!(
        wait_until(Duration::from_secs(10), || sandbox.status() == "released"),
        "no release after max-lock-time"
    );
    assert_eq!(pair.sql_running(), "Yes", "released at max-lock-time");
    assert!(stopped_record(&sandbox).is_null());

    // Every lock attempt capped by the server (a LOCK TABLES ... WRITE holds FTWRL off): each
    // attempt stops and starts the thread, and the refusal leaves it running.
    let sandbox = Sandbox::new(
        &pair.replica,
        "replica-safe = on\nlock-wait-timeout = 1\nsnapshot-timeout = 4",
    );
    let mut blocker = pair.replica.conn();
    blocker.query_drop("LOCK TABLES snap.feed WRITE").unwrap();
    let out = sandbox.freeze();
    blocker.query_drop("UNLOCK TABLES").unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        pair.sql_running(),
        "Yes",
        "timed-out attempts: {}",
        text(&out)
    );
    assert!(stopped_record(&sandbox).is_null());
    harness::assert_nothing_left(&pair.replica, &sandbox, Duration::from_secs(5));
    assert!(
        pair.replicates(),
        "replication did not resume after the faults"
    );
}
