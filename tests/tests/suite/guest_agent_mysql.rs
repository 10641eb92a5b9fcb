//! End to end through Debian's real `qemu-ga` on MySQL 9.7 (GTID on; `lock-mode = auto` takes the
//! backup lock on the all-InnoDB server and falls back to FTWRL where it finds the load's MyISAM
//! tables under it): the datadir and binlogs live on a loop-mounted ext4 mounted INSIDE the MySQL chroot, so
//! qemu-ga freezes the mount's host path while the chrooted mysqld uses the chroot path. A copy of
//! the image taken while frozen is booted by a second chrooted mysqld and checked (the rig is
//! `harness::guest_agent`'s). Only the test's own loop mounts are frozen or unmounted, every one is
//! thawed and unmounted on every path, and no directory under the chroot is deleted while anything
//! is still mounted below it.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::faults::Writer;
use harness::guest_agent::{
    machine_cannot_loop_mount, Hook, OpenedCopy, Rig, ServerSetup, Snapshot, Workload,
};
use harness::{matrix, Flavour};
use mysql::prelude::Queryable;

/// The server under test.
const FLAVOUR: Flavour = Flavour::MySql97;
/// The server of the backup-lock test: `SETUP`'s, with every commit durable when it returns (the
/// mode's preconditions), and its copy booted alike.
pub(crate) const DURABLE_SETUP: ServerSetup = ServerSetup {
    flavour: FLAVOUR,
    server_args: &[
        "--log-bin=binlog",
        "--server-id=1",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
        "--innodb-flush-log-at-trx-commit=1",
        "--sync-binlog=1",
        // Room for every page the load touches: a read while frozen never needs a free page that
        // only a (blocked) flush could make.
        "--innodb-buffer-pool-size=256M",
    ],
    copy_args: &[
        "--log-bin=binlog",
        "--server-id=2",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
        "--innodb-flush-log-at-trx-commit=1",
        "--sync-binlog=1",
    ],
};

/// The original server: binlogs named relative to the datadir (binlog.index then says
/// `./binlog.000002`), so the index stays right wherever a copy is mounted; GTID mode on; commits
/// durable (so that only the load's MyISAM tables rule the backup lock out, found under it). The
/// server booted on a copy: the same binlog and GTID settings and another server id.
const SETUP: ServerSetup = ServerSetup {
    flavour: FLAVOUR,
    server_args: &[
        "--log-bin=binlog",
        "--server-id=1",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
        "--innodb-flush-log-at-trx-commit=1",
    ],
    copy_args: &[
        "--log-bin=binlog",
        "--server-id=2",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
        "--myisam-recover-options=OFF",
    ],
};

#[test]
fn a_qemu_ga_snapshot_of_mysql_under_ftwrl_boots_with_the_recorded_coordinates_and_sound_tables() {
    let test =
        "a_qemu_ga_snapshot_of_mysql_under_ftwrl_boots_with_the_recorded_coordinates_and_sound_tables";
    if machine_cannot_loop_mount(test) || !matrix::require(FLAVOUR) {
        return;
    }
    // No lock-mode setting, durable settings: auto takes the backup lock, finds the load's MyISAM
    // tables under it, releases it and takes FTWRL.
    let mut rig = Rig::new(SETUP, "", Hook::Project);
    rig.assert_a_snapshot_is_consistent(test, "the MySQL ftwrl snapshot", |info| {
        assert_eq!(
            info["lock"]["mode"], "ftwrl",
            "auto must fall back to FTWRL on MySQL with MyISAM tables: {info:#}"
        );
        assert!(
            info["lock"]["why"].as_str().is_some_and(|w| w.starts_with(
                "the backup lock is ruled out: 3 non-transactional user table(s) (snap.my MyISAM"
            )),
            "{info:#}"
        );
        assert_eq!(info["server"]["flavor"], "mysql");
        assert!(
            info["server"]["version"]
                .as_str()
                .is_some_and(|v| v.starts_with(FLAVOUR.version_prefix())),
            "the info file records version {}",
            info["server"]["version"]
        );
    });
}

/// The negative control: the same flow with a hook that does nothing. The mount still carries the
/// info file of an earlier real freeze (what a silently failing hook leaves behind), and writes go
/// on after it; the check must tell that the copy does not match it.
#[test]
fn the_mysql_copy_check_tells_when_the_hook_did_nothing() {
    let test = "the_mysql_copy_check_tells_when_the_hook_did_nothing";
    if machine_cannot_loop_mount(test) || !matrix::require(FLAVOUR) {
        return;
    }
    let mut rig = Rig::new(SETUP, "", Hook::DoesNothing);
    let found = rig.discrepancies_after_a_stale_freeze();
    assert!(
        found.iter().any(|d| d.contains("binlog end")),
        "the check did not tell a copy taken without the hook by its binlog: {found:?}"
    );
    assert!(
        found
            .iter()
            .any(|d| d.contains("gtid_executed") || d.contains("did not start")),
        "the check did not tell a copy taken without the hook by its GTID set: {found:?}"
    );
}

/// Several InnoDB tables and no other engine: four inserters (each on its own table, `snap.inno`
/// among them for the harness's write probe), a hot-row updater, and a one-row table for the long
/// SELECT.
pub(crate) fn innodb_workload() -> Workload {
    let counters: Vec<String> = (1..=20).map(|id| format!("({id}, 0)")).collect();
    let mut schema = String::from("CREATE DATABASE snap;");
    for table in INSERTED {
        schema.push_str(&format!(
            "CREATE TABLE snap.{table} (id INT AUTO_INCREMENT PRIMARY KEY, v INT, pad VARCHAR(200)) ENGINE=InnoDB;"
        ));
    }
    schema.push_str(&format!(
        "CREATE TABLE snap.counter (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
         INSERT INTO snap.counter VALUES {};
         CREATE TABLE snap.one (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO snap.one VALUES (1);",
        counters.join(", ")
    ));
    Workload {
        schema,
        statements: vec![
            |n| {
                format!(
                    "INSERT INTO snap.inno (v, pad) VALUES ({n}, REPEAT('a', {}))",
                    n % 200
                )
            },
            |n| {
                format!(
                    "INSERT INTO snap.t2 (v, pad) VALUES ({n}, REPEAT('b', {}))",
                    n % 150
                )
            },
            |n| {
                format!(
                    "INSERT INTO snap.t3 (v, pad) VALUES ({n}, REPEAT('c', {}))",
                    n % 100
                )
            },
            |n| {
                format!(
                    "INSERT INTO snap.t4 (v, pad) VALUES ({n}, REPEAT('d', {}))",
                    n % 50
                )
            },
            |n| {
                format!(
                    "UPDATE snap.counter SET v = v + 1 WHERE id = {}",
                    n % 20 + 1
                )
            },
        ],
    }
}

/// The tables the inserters write.
const INSERTED: [&str; 4] = ["inno", "t2", "t3", "t4"];
/// The long read that FTWRL would wait for and the backup lock must not.
const LONG_SELECT: &str = "SELECT SLEEP(120) FROM snap.one";

/// What a server holds: rows inserted and counter steps (InnoDB reads only: `@@gtid_executed`
/// takes a lock a committer stuck on the frozen filesystem may hold, so it is never read while
/// frozen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    rows: u64,
    steps: u64,
}

fn held(conn: &mut mysql::Conn) -> Held {
    let rows: Vec<String> = INSERTED
        .iter()
        .map(|t| format!("(SELECT COUNT(*) FROM snap.{t})"))
        .collect();
    let query = format!(
        "SELECT {}, (SELECT CAST(SUM(v) AS UNSIGNED) FROM snap.counter)",
        rows.join(" + ")
    );
    let (rows, steps): (u64, u64) = conn
        .query_first(query)
        .unwrap_or_else(|e| panic!("counting the rows failed (a read while frozen waited?): {e}"))
        .expect("one row");
    Held { rows, steps }
}

/// `@@GLOBAL.gtid_executed` without line breaks.
fn gtid_executed(conn: &mut mysql::Conn) -> String {
    let gtid: String = conn
        .query_first("SELECT @@GLOBAL.gtid_executed")
        .unwrap()
        .unwrap();
    gtid.replace(['\n', '\r'], "")
}

/// Transactions in a GTID set that are not the load's: each of the load's statements is one
/// transaction (a row or a counter step), so this is the same for every consistent state.
fn other_transactions(gtid: &str, held: Held) -> i64 {
    let count: u64 = gtid_set(gtid)
        .values()
        .flatten()
        .map(|(lo, hi)| hi - lo + 1)
        .sum();
    count as i64 - held.rows as i64 - held.steps as i64
}

/// A GTID set as source UUID → transaction number intervals.
fn gtid_set(text: &str) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut set = BTreeMap::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mut parts = member.split(':');
        let uuid = parts.next().unwrap().to_ascii_lowercase();
        let intervals: &mut Vec<(u64, u64)> = set.entry(uuid).or_default();
        for interval in parts {
            let (lo, hi) = interval.split_once('-').unwrap_or((interval, interval));
            intervals.push((lo.parse().unwrap(), hi.parse().unwrap()));
        }
    }
    set
}

/// Every transaction of `inner` is in `outer`.
fn gtid_contains(outer: &str, inner: &str) -> bool {
    let outer = gtid_set(outer);
    gtid_set(inner).iter().all(|(uuid, intervals)| {
        intervals.iter().all(|&(lo, hi)| {
            outer
                .get(uuid)
                .is_some_and(|o| o.iter().any(|&(a, b)| a <= lo && hi <= b))
        })
    })
}

/// A position in a binary log series (`binlog.000002`, 1307) as a comparable pair.
fn binlog_at(file: &str, position: u64) -> (u64, u64) {
    let number = file.rsplit('.').next().and_then(|n| n.parse().ok());
    (number.expect("a numbered binlog file"), position)
}

/// The promise of the backup lock, which `lock-mode = auto` takes on MySQL with all-InnoDB tables
/// and durable settings: a
/// snapshot through the real qemu-ga under write load from five connections, while a 120 s SELECT
/// runs, is taken without waiting for the SELECT or touching it; the copy boots through crash
/// recovery with sound tables and holds what the live server showed committed while the
/// filesystem was frozen (no commit can become visible then), plus at most the one commit per
/// writer that was in flight: its binary log was on disk when the filesystem froze, so crash
/// recovery commits it, as the binary log says. Exactly: its recovered `gtid_executed` contains
/// the info file's lower bound and holds exactly one transaction per row and counter step (as many
/// others as the live server), and its binlog ends at or past the recorded position.
/// `MYSQL_SNAPSHOT_BACKUP_LOCK_RUNS` snapshots (2 by default) on one rig.
#[test]
fn a_qemu_ga_snapshot_of_mysql_under_auto_takes_the_backup_lock_never_waits_for_a_long_select_and_recovers_exactly_what_was_committed(
) {
    let test = "a_qemu_ga_snapshot_of_mysql_under_auto_takes_the_backup_lock_never_waits_for_a_long_select_and_recovers_exactly_what_was_committed";
    if machine_cannot_loop_mount(test) || !matrix::require(FLAVOUR) {
        return;
    }
    let runs: u32 = std::env::var("MYSQL_SNAPSHOT_BACKUP_LOCK_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let mut rig = Rig::with_workload(DURABLE_SETUP, "", Hook::Project, innodb_workload());
    let mut others = Vec::new();
    for run in 1..=runs {
        let select = Writer::start(&rig.server, LONG_SELECT);
        assert!(
            harness::wait_until(Duration::from_secs(10), || !rig
                .server
                .statements_like(LONG_SELECT)
                .is_empty()),
            "the long SELECT does not run"
        );
        // Opened before the freeze: connecting needs nothing from the frozen filesystem, but a
        // new connection is better not tried while frozen.
        let mut reader = rig.server.conn();
        let mut frozen: Option<Held> = None;
        let snapshot = rig.snapshot_with(|_| {
            let first = held(&mut reader);
            std::thread::sleep(Duration::from_millis(500));
            let second = held(&mut reader);
            assert_eq!(
                first, second,
                "a commit completed while the filesystem was frozen"
            );
            frozen = Some(second);
        });
        let (copy, froze_in) = match snapshot {
            Snapshot::Taken { copy, froze_in } => (copy, froze_in),
            Snapshot::Refused(desc) => {
                panic!(
                    "run {run}: the freeze was refused: {desc}\n{}",
                    rig.diagnostics()
                )
            }
        };
        let frozen = frozen.expect("read while frozen");
        assert!(
            froze_in < Duration::from_secs(5),
            "run {run}: the freeze took {froze_in:?}: it waited for something"
        );
        assert!(
            !select.handle.is_finished() && !rig.server.statements_like(LONG_SELECT).is_empty(),
            "run {run}: the long SELECT ended: the freeze must not touch it"
        );
        rig.assert_writes_resume();
        let info = rig.last_held();
        assert_eq!(info["lock"]["mode"], "backup-lock", "{info:#}");
        assert_eq!(info["lock"]["requested"], "auto", "{info:#}");
        assert_eq!(info["binlog"]["exact"], false, "{info:#}");
        assert_eq!(info["gtid"]["exact"], false, "{info:#}");

        let opened = OpenedCopy::open(DURABLE_SETUP, &rig.mounts, &copy);
        assert_eq!(
            opened.info.as_ref().map(|i| i["taken_at"].clone()),
            Ok(info["taken_at"].clone()),
            "run {run}: the copy does not carry this snapshot's info file"
        );
        let copy_server = opened
            .server
            .as_ref()
            .unwrap_or_else(|log| panic!("run {run}: the copy did not start: {log}"));
        let mut conn = copy_server.conn();
        let tables: Vec<String> = conn
            .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'snap'")
            .unwrap();
        for table in &tables {
            let rows: Vec<(String, String, String, String)> =
                conn.query(format!("CHECK TABLE snap.`{table}`")).unwrap();
            assert!(
                rows.iter().all(|(_, _, kind, _)| kind != "error")
                    && rows
                        .last()
                        .is_some_and(|(_, _, kind, m)| kind == "status" && m == "OK"),
                "run {run}: CHECK TABLE snap.{table} says {rows:?}"
            );
        }
        let recovered = held(&mut conn);
        // At most one in-flight commit per writer: one row per inserted table, one counter step.
        let in_flight = (
            recovered.rows.checked_sub(frozen.rows),
            recovered.steps.checked_sub(frozen.steps),
        );
        assert!(
            matches!(in_flight, (Some(rows), Some(steps)) if rows <= INSERTED.len() as u64 && steps <= 1),
            "run {run}: the copy holds {recovered:?}, the live server showed {frozen:?} while frozen: \
             less than was visible, or more than one commit in flight per writer"
        );
        let recovered_gtid = gtid_executed(&mut conn);
        let lower_bound = info["gtid"]["executed"].as_str().unwrap_or_default();
        assert!(
            gtid_contains(&recovered_gtid, lower_bound),
            "run {run}: the copy's gtid_executed `{recovered_gtid}` lacks part of the info file's `{lower_bound}`"
        );
        others.push((run, other_transactions(&recovered_gtid, recovered)));
        let (end_file, end_size) = opened.binlog_end.clone().unwrap();
        let logs: Vec<(String, u64, String)> = conn.query("SHOW BINARY LOGS").unwrap();
        let recovered_size = logs
            .iter()
            .find(|(name, _, _)| *name == end_file)
            .map(|(_, size, _)| *size)
            .unwrap_or_else(|| {
                panic!("run {run}: {end_file} is not among the copy's binary logs {logs:?}")
            });
        let recorded = binlog_at(
            info["binlog"]["file"].as_str().unwrap(),
            info["binlog"]["position"].as_u64().unwrap(),
        );
        assert!(
            recorded <= binlog_at(&end_file, recovered_size) && recovered_size <= end_size,
            "run {run}: the info file records {recorded:?}, the copy's binlog ends at {end_file}:{end_size} and recovered to {recovered_size}"
        );
        eprintln!(
            "run {run}/{runs}: consistent; freeze answered in {froze_in:?}; while frozen {} rows, {} steps; recovered {recovered:?}; \
             binlog recorded {}:{} (lower bound), copy ends {end_file}:{end_size}, recovered {recovered_size}",
            frozen.rows,
            frozen.steps,
            info["binlog"]["file"],
            info["binlog"]["position"]
        );
        drop(conn);
        drop(opened);
        let _ = std::fs::remove_file(&copy);
        for id in rig.server.statements_like(LONG_SELECT) {
            let _ = rig.server.conn().query_drop(format!("KILL QUERY {id}"));
        }
    }
    let report = rig.load.stop();
    assert!(
        report.errors.is_empty(),
        "writers failed: {:?}",
        report.errors
    );
    // The live server, now still: its transactions beyond the load's are the schema's.
    let mut live = rig.server.conn();
    let expected = other_transactions(&gtid_executed(&mut live), held(&mut live));
    for (run, other) in others {
        assert_eq!(
            other, expected,
            "run {run}: the copy's gtid_executed does not match its rows ({other} transactions beyond the load's; the live server has {expected})"
        );
    }
    eprintln!(
        "{test}: {runs} of {runs} consistent; {} writes, longest {:?}",
        report.writes, report.longest
    );
}
