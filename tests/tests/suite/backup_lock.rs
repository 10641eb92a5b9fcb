//! The backup lock on a real MySQL 9.7 (the harness's cached chroot, GTID on, durable settings):
//! `lock-mode = auto` takes it where every precondition holds; it never waits for a long SELECT
//! and lets commits through, and the info file says its coordinates are a lower bound. Where a
//! precondition fails, `auto` takes FTWRL and says why (a setting: before any lock; a
//! non-transactional table: found under the backup lock, which is then released), and an explicit
//! `lock-mode = backup-lock` is refused with an error naming it, leaving no lock and no locker. On
//! MariaDB the mode is refused. The copy a
//! snapshot makes under this lock is booted and checked in guest_agent_mysql.rs. A chroot that
//! cannot be built fails every MySQL test unless `MYSQL_SNAPSHOT_SKIP_MATRIX=1` asks for a loud
//! skip.

use std::time::{Duration, Instant};

use harness::accounts::{account_settings, create_account, PASSWORD};
use harness::faults::{lock_statements_run, stderr_of, wait_for_statement, Writer};
use harness::{assert_nothing_left, matrix, text, wait_until, Flavour, Sandbox, Server};
use mysql::prelude::Queryable;

const FLAVOUR: Flavour = Flavour::MySql97;
/// Every precondition of the mode: commits durable when they return (the harness's throwaway
/// servers run with innodb_flush_log_at_trx_commit = 2).
const DURABLE: &[&str] = &["--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1"];
const SETTINGS: &str = "lock-mode = backup-lock";
/// How long a refused freeze may take to say so, and the lock and locker to be gone.
const LIMIT: Duration = Duration::from_secs(10);

/// A private MySQL 9.7 with durable settings and no non-transactional table (the harness creates
/// `snap.my`, a MyISAM table: it goes), plus `extra`; `None` after a loud banner when the chroot
/// cannot be built and the matrix may be skipped.
fn durable_mysql(extra: &[&str]) -> Option<Server> {
    if !matrix::require(FLAVOUR) {
        return None;
    }
    let mut args = DURABLE.to_vec();
    args.extend_from_slice(extra);
    let server = Server::start_flavour(FLAVOUR, &args);
    server.conn().query_drop("DROP TABLE snap.my").unwrap();
    Some(server)
}

/// `durable_mysql` with one MyISAM user table, `snap.legacy`.
fn durable_mysql_with_a_myisam_table() -> Option<Server> {
    let server = durable_mysql(&[])?;
    server
        .conn()
        .query_drop("CREATE TABLE snap.legacy (id INT PRIMARY KEY) ENGINE=MyISAM")
        .unwrap();
    Some(server)
}

/// Starts `SELECT SLEEP(seconds)` over a one-row table on a connection of its own and waits until
/// the processlist shows it.
fn long_select(server: &Server, seconds: u64) -> Writer {
    server
        .conn()
        .query_drop("CREATE TABLE IF NOT EXISTS snap.one (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT IGNORE INTO snap.one VALUES (1)")
        .unwrap();
    let statement = format!("SELECT SLEEP({seconds}) FROM snap.one");
    let select = Writer::start(server, &statement);
    wait_for_statement(server, &statement);
    select
}

/// An autocommit insert from another connection returns within `limit`.
fn a_commit_returns_within(server: &Server, limit: Duration) -> bool {
    let mut conn = server.conn();
    conn.query_drop(format!(
        "SET SESSION lock_wait_timeout = {}",
        limit.as_secs().max(1)
    ))
    .unwrap();
    let started = Instant::now();
    conn.query_drop("INSERT INTO snap.inno (v) VALUES (1)")
        .is_ok()
        && started.elapsed() <= limit
}

/// Asserts a freeze refused in backup-lock mode: exit 1, stderr naming `cause`, no lock statement
/// run, no lock and no locker left, and `--check` failing on the same cause.
fn assert_refused_naming(server: &Server, sandbox: &Sandbox, cause: &str) {
    assert_refused_naming_after(server, sandbox, cause, 0);
}

/// `assert_refused_naming` where `locks` lock statements run first (the backup lock that lists
/// the tables under itself).
fn assert_refused_naming_after(server: &Server, sandbox: &Sandbox, cause: &str, locks: u64) {
    let before = lock_statements_run(server);
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(cause),
        "the refusal does not name `{cause}`: {stderr}"
    );
    assert_eq!(
        lock_statements_run(server),
        before + locks,
        "{locks} lock statement(s) must run before this refusal"
    );
    assert_nothing_left(server, sandbox, LIMIT);
    assert_ne!(sandbox.status(), "acquired");
    let check = sandbox.command("freeze").arg("--check").output().unwrap();
    assert_ne!(
        check.status.code(),
        Some(0),
        "--check passed: {}",
        text(&check)
    );
    assert!(
        text(&check).contains(cause),
        "--check does not name `{cause}`: {}",
        text(&check)
    );
}

/// The default on MySQL 8+: with every precondition holding, `auto` takes the backup lock.
#[test]
fn auto_takes_the_backup_lock_on_a_durable_all_innodb_mysql_never_waits_for_a_long_select_lets_commits_through_and_says_its_coordinates_are_a_lower_bound(
) {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    let select = long_select(&server, 120);
    let mut sandbox = Sandbox::new(&server, "");
    let started = Instant::now();
    let out = sandbox.freeze();
    let took = started.elapsed();
    assert!(out.status.success(), "{}\n{}", text(&out), sandbox.log());
    eprintln!("freeze in backup-lock mode with a 120 s SELECT running: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "freeze took {took:?}: it waited for something"
    );
    assert_eq!(sandbox.status(), "acquired");
    assert!(
        a_commit_returns_within(&server, Duration::from_secs(5)),
        "a commit waited on the backup lock: it must only block DDL"
    );
    let mut conn = server.conn();
    conn.query_drop("SET SESSION lock_wait_timeout = 1")
        .unwrap();
    let ddl = conn.query_drop("CREATE TABLE snap.ddl (id INT) ENGINE=InnoDB");
    assert!(
        ddl.as_ref()
            .is_err_and(|e| e.to_string().contains("Lock wait timeout")),
        "DDL went through while the backup lock was held: {ddl:?}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sandbox.info_file).unwrap()).unwrap();
    assert_eq!(info["lock"]["mode"], "backup-lock", "{info:#}");
    assert_eq!(info["lock"]["requested"], "auto", "{info:#}");
    assert_eq!(info["binlog"]["exact"], false, "{info:#}");
    assert_eq!(info["gtid"]["exact"], false, "{info:#}");
    // Its precondition on the tables is read where DDL cannot change it, and the file says so.
    assert_eq!(
        info["durability"]["read"],
        serde_json::json!({"settings": "before-the-lock", "tables": "under-the-lock"}),
        "{info:#}"
    );
    assert!(info["binlog"]["position"].as_u64().is_some(), "{info:#}");
    assert!(
        info["gtid"]["executed"]
            .as_str()
            .is_some_and(|g| g.contains(':')),
        "{info:#}"
    );
    assert!(
        info["log_status"]["innodb_lsn"].as_u64().is_some(),
        "{info:#}"
    );
    let preconditions = info["lock"]["preconditions"].to_string();
    for held in [
        "innodb_flush_log_at_trx_commit = 1",
        "sync_binlog = 1",
        "innodb_doublewrite = ON",
    ] {
        assert!(
            preconditions.contains(held),
            "{held} not recorded: {info:#}"
        );
    }
    let seed = info["seed_replica_sql"].to_string();
    assert!(
        seed.contains("lower bound") && seed.contains("SOURCE_AUTO_POSITION = 1"),
        "{seed}"
    );
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, LIMIT);
    assert!(
        !select.handle.is_finished(),
        "the long SELECT ended: the freeze must not touch it"
    );
    assert!(!server.statements_like("SELECT SLEEP(120)").is_empty());
    let log = sandbox.log();
    assert!(log.contains("event=locked mode=backup-lock"), "{log}");
    assert!(
        log.contains("event=lock-mode mode=backup-lock requested=auto reason=\"MySQL 8.0.14 or later and every precondition"),
        "{log}"
    );
}

/// How many times the server ran `LOCK INSTANCE FOR BACKUP`.
fn backup_locks_taken(server: &Server) -> u64 {
    server
        .conn()
        .query_first::<(String, u64), _>("SHOW GLOBAL STATUS LIKE 'Com_lock_instance'")
        .unwrap()
        .map_or(0, |(_, n)| n)
}

/// A freeze with `lock-mode = auto` that must take FTWRL after `backup_locks` backup locks: its
/// sandbox and info file.
fn freeze_with_auto(server: &Server, backup_locks: u64) -> (Sandbox, serde_json::Value) {
    let mut sandbox = Sandbox::new(server, "");
    let before = backup_locks_taken(server);
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}\n{}", text(&out), sandbox.log());
    assert_eq!(
        backup_locks_taken(server),
        before + backup_locks,
        "backup locks taken on the way to FTWRL"
    );
    let info = sandbox.info();
    assert_eq!(info["lock"]["mode"], "ftwrl", "{info:#}");
    assert_eq!(info["lock"]["requested"], "auto", "{info:#}");
    (sandbox, info)
}

/// Thaws, asserts nothing is left, and returns the log.
fn thaw_cleanly(server: &Server, sandbox: &mut Sandbox) -> String {
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(server, sandbox, LIMIT);
    sandbox.log()
}

/// `auto` with a MyISAM table: the backup lock is taken, the tables are listed under it (where
/// none can appear or change engine), and on finding one that crash recovery cannot make
/// consistent it is released and FTWRL taken: writes are blocked, the coordinates exact, and the
/// info file and the log say why.
#[test]
fn auto_falls_back_to_ftwrl_when_the_tables_listed_under_the_backup_lock_include_a_myisam_table() {
    let Some(server) = durable_mysql_with_a_myisam_table() else {
        return;
    };
    // The tables are listed under the backup lock.
    let (mut sandbox, info) = freeze_with_auto(&server, 1);
    assert!(server.writes_blocked(), "FTWRL must block writes");
    let why = info["lock"]["why"].as_str().unwrap_or_default();
    assert!(
        why.starts_with(
            "the backup lock is ruled out: 1 non-transactional user table(s) (snap.legacy MyISAM)"
        ),
        "{info:#}"
    );
    assert_eq!(info["binlog"]["exact"], true, "{info:#}");
    assert_eq!(info["gtid"]["exact"], true, "{info:#}");
    // Listed under the backup lock, which was released before FTWRL: before this lock.
    assert_eq!(
        info["durability"]["read"]["tables"], "before-the-lock",
        "{info:#}"
    );
    assert_eq!(
        info["durability"]["non_transactional_tables"][0], "snap.legacy MyISAM",
        "{info:#}"
    );
    let log = thaw_cleanly(&server, &mut sandbox);
    assert!(
        log.contains("event=lock-mode mode=ftwrl requested=auto reason=\"the backup lock is ruled out: 1 non-transactional user table(s) (snap.legacy MyISAM)"),
        "{log}"
    );
    let check = sandbox.command("freeze").arg("--check").output().unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("lock mode   ftwrl (lock-mode = auto: the backup lock is ruled out: 1 non-transactional user table(s) (snap.legacy MyISAM)"),
        "--check must say the mode a freeze takes and why: {}",
        text(&check)
    );
}

/// `auto` where a setting rules the backup lock out: FTWRL, chosen before any lock is taken.
#[test]
fn auto_takes_ftwrl_without_trying_the_backup_lock_when_a_setting_rules_it_out() {
    let Some(server) = durable_mysql(&["--innodb-flush-log-at-trx-commit=2"]) else {
        return;
    };
    let (mut sandbox, info) = freeze_with_auto(&server, 0);
    assert!(
        info["lock"]["why"]
            .as_str()
            .is_some_and(|w| w.contains("innodb_flush_log_at_trx_commit = 2")),
        "{info:#}"
    );
    assert!(thaw_cleanly(&server, &mut sandbox).contains("event=lock-mode mode=ftwrl requested=auto reason=\"the backup lock is ruled out: innodb_flush_log_at_trx_commit = 2"));
}

/// `auto` for the classic FTWRL account (RELOAD, no BACKUP_ADMIN): FTWRL, saying which grant would
/// give the backup lock; never a refusal.
#[test]
fn auto_takes_ftwrl_for_an_account_without_backup_admin_and_names_the_grant() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    create_account(&server, "PROCESS, REPLICATION CLIENT, RELOAD");
    let sandbox = Sandbox::new(&server, &account_settings(""));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let info = sandbox.info();
    assert_eq!(info["lock"]["mode"], "ftwrl", "{info:#}");
    assert!(
        info["lock"]["why"].as_str().is_some_and(|w| w.contains(
            "the account lacks BACKUP_ADMIN, SELECT (GRANT BACKUP_ADMIN, SELECT ON *.* TO 'snapper'@'localhost';)"
        )),
        "{info:#}"
    );
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, LIMIT);
}

#[test]
fn ftwrl_waits_for_the_same_long_select_until_snapshot_timeout_refuses_it() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    let _select = long_select(&server, 120);
    let mut sandbox = Sandbox::new(
        &server,
        "lock-mode = ftwrl\nlong-query-threshold = 1\nsnapshot-timeout = 4",
    );
    let started = Instant::now();
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{}",
        text(&out)
    );
    assert!(
        stderr_of(&out).contains("SELECT SLEEP(120)"),
        "{}",
        text(&out)
    );
    assert_nothing_left(&server, &sandbox, LIMIT);
    // An ordinary refusal is no abort: `event=aborted` is kept for a freeze stopped by a signal.
    let log = sandbox.log();
    assert!(
        log.contains("event=locker-stopped") && !log.contains("event=aborted"),
        "{log}"
    );
}

#[test]
fn a_myisam_table_refuses_the_backup_lock_naming_the_table() {
    let Some(server) = durable_mysql_with_a_myisam_table() else {
        return;
    };
    let sandbox = Sandbox::new(&server, SETTINGS);
    // Listed under the backup lock, which is then released.
    assert_refused_naming_after(
        &server,
        &sandbox,
        "1 non-transactional user table(s) (snap.legacy MyISAM)",
        1,
    );
}

#[test]
fn innodb_flush_log_at_trx_commit_2_refuses_the_backup_lock() {
    let Some(server) = durable_mysql(&["--innodb-flush-log-at-trx-commit=2"]) else {
        return;
    };
    let sandbox = Sandbox::new(&server, SETTINGS);
    assert_refused_naming(
        &server,
        &sandbox,
        "innodb_flush_log_at_trx_commit = 2: a commit may not be on disk",
    );
}

#[test]
fn sync_binlog_0_refuses_the_backup_lock() {
    let Some(server) = durable_mysql(&["--sync-binlog=0"]) else {
        return;
    };
    let sandbox = Sandbox::new(&server, SETTINGS);
    assert_refused_naming(&server, &sandbox, "sync_binlog = 0 with the binary log on");
}

#[test]
fn an_account_without_backup_admin_is_refused_with_the_grant_that_fixes_it() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    create_account(&server, "SELECT, PROCESS, REPLICATION CLIENT, RELOAD");
    let sandbox = Sandbox::new(&server, &account_settings(SETTINGS));
    assert_refused_naming(
        &server,
        &sandbox,
        "GRANT BACKUP_ADMIN ON *.* TO 'snapper'@'localhost'",
    );
    let out = sandbox.freeze();
    assert!(!text(&out).contains(PASSWORD));
    create_account(&server, "SELECT, PROCESS, REPLICATION CLIENT, BACKUP_ADMIN");
    let out = sandbox.freeze();
    assert!(out.status.success(), "with BACKUP_ADMIN: {}", text(&out));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, LIMIT);
}

/// `--lock-mode backup-lock` over a config that names no mode: the locker checks the privileges
/// of the mode freeze passed it (BACKUP_ADMIN), not of the file's (RELOAD), as `--check` does.
#[test]
fn a_lock_mode_given_to_freeze_decides_the_privileges_the_locker_checks() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    create_account(&server, "SELECT, PROCESS, REPLICATION CLIENT, BACKUP_ADMIN");
    let sandbox = Sandbox::new(&server, &account_settings(""));
    let check = sandbox
        .command("freeze")
        .args(["--lock-mode", "backup-lock", "--check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "--check: {}", text(&check));
    let out = sandbox
        .command("freeze")
        .args(["--lock-mode", "backup-lock", "freeze"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--check said yes, so must freeze: {}",
        text(&out)
    );
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, LIMIT);
}

#[test]
fn the_backup_lock_is_refused_where_the_filesystems_are_synced_not_frozen() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    let sandbox = Sandbox::new(&server, &format!("{SETTINGS}\nsync-filesystems = on"));
    assert_refused_naming(&server, &sandbox, "sync-filesystems is on");
}

#[test]
fn the_backup_lock_is_refused_with_rotate_binlog() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    let sandbox = Sandbox::new(&server, &format!("{SETTINGS}\nrotate-binlog = on"));
    assert_refused_naming(&server, &sandbox, "rotate-binlog = on");
}

#[test]
fn check_recommends_the_backup_lock_when_a_long_select_would_hold_ftwrl_off() {
    let Some(server) = durable_mysql(&[]) else {
        return;
    };
    let auto = Sandbox::new(&server, "");
    let out = auto.command("freeze").arg("--check").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("lock mode   backup-lock (lock-mode = auto: MySQL 8.0.14 or later"),
        "--check must say that auto takes the backup lock here: {}",
        text(&out)
    );
    let sandbox = Sandbox::new(&server, "lock-mode = ftwrl\nlong-query-threshold = 1");
    let quiet = sandbox.command("freeze").arg("--check").output().unwrap();
    assert!(quiet.status.success(), "{}", text(&quiet));
    assert!(
        String::from_utf8_lossy(&quiet.stdout)
            .contains("backup-lock possible (every precondition holds)"),
        "{}",
        text(&quiet)
    );
    let _select = long_select(&server, 120);
    assert!(wait_until(Duration::from_secs(10), || {
        let out = sandbox.command("freeze").arg("--check").output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("backup-lock recommended: 1 statement(s)")
    }));
    server
        .conn()
        .query_drop("CREATE TABLE snap.legacy (id INT) ENGINE=MyISAM")
        .unwrap();
    let out = sandbox.command("freeze").arg("--check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "backup-lock not possible here: 1 non-transactional user table(s) (snap.legacy MyISAM)"
        ),
        "{stdout}"
    );
}

#[test]
fn the_backup_lock_is_refused_on_mariadb() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, SETTINGS);
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr_of(&out)
            .contains("lock-mode=backup-lock needs MySQL or Percona Server 8.0 or later"),
        "{}",
        text(&out)
    );
    assert_nothing_left(&server, &sandbox, LIMIT);
}

/// freeze and `--check` prepare by one function (`common::preparation`): every refusal a MariaDB
/// freeze makes before its lock is a `FAIL` line of `--check` naming the same cause. (The backup
/// lock's refusals on MySQL are asserted alike by `assert_refused_naming`.)
#[test]
fn every_refusal_a_mariadb_freeze_makes_before_its_lock_is_a_fail_line_of_check_naming_the_same_cause(
) {
    let server = Server::start();
    let cases: [(&str, String, &str); 3] = [
        (
            "backup-lock on MariaDB",
            SETTINGS.to_string(),
            "lock-mode=backup-lock needs MySQL or Percona Server 8.0 or later",
        ),
        (
            "no RELOAD for BACKUP STAGE",
            account_settings("lock-mode = backup-stage"),
            "lacks RELOAD (to take the lock",
        ),
        (
            "no RELOAD for FTWRL",
            account_settings("lock-mode = ftwrl"),
            "lacks RELOAD (to take the lock",
        ),
    ];
    create_account(&server, "SELECT, PROCESS, REPLICATION CLIENT");
    for (case, settings, cause) in cases {
        let sandbox = Sandbox::new(&server, &settings);
        let out = sandbox.freeze();
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
        assert!(
            stderr_of(&out).contains(cause),
            "{case}: freeze does not name `{cause}`: {}",
            text(&out)
        );
        assert_nothing_left(&server, &sandbox, LIMIT);
        let check = sandbox.command("freeze").arg("--check").output().unwrap();
        assert_ne!(check.status.code(), Some(0), "{case}: {}", text(&check));
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with("FAIL") && line.contains(cause)),
            "{case}: no FAIL line of --check names `{cause}`: {stdout}"
        );
    }
}
