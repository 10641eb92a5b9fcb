//! The least-privilege account of the security tests: `snapper`@`localhost` with a distinctive
//! password, the grants README documents for each server, the config that uses it, and the
//! scenarios that run the same way on MariaDB (security.rs) and MySQL (faults_mysql.rs).
//! It only ever creates and drops that one account, on a private server a test started.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use mysql::prelude::Queryable;

use crate::faults::{lock_statements_run, stderr_of, wait_for_statement, Writer};
use crate::{assert_nothing_left, text, wait_until, Sandbox, Server};

/// A password distinctive enough that any occurrence of part of it is a leak.
pub const PASSWORD: &str = "Pw-7q2Zr9-Lx";
/// The part of [`PASSWORD`] whose appearance anywhere counts as a leak.
pub const PASSWORD_CORE: &str = "7q2Zr9";

/// README's grants for one server, as the error and the fix name them.
pub struct Grants {
    /// Every documented privilege.
    pub documented: &'static [&'static str],
    /// The one needed only with `kill-long-queries`.
    pub kill: &'static str,
}

/// README's grants on MariaDB ≥ 10.5.
pub const MARIADB_GRANTS: Grants = Grants {
    documented: &[
        "RELOAD",
        "PROCESS",
        "BINLOG MONITOR",
        "SLAVE MONITOR",
        "CONNECTION ADMIN",
    ],
    kill: "CONNECTION ADMIN",
};

/// README's grants on MySQL 8.0 and later.
pub const MYSQL_GRANTS: Grants = Grants {
    documented: &[
        "RELOAD",
        "PROCESS",
        "REPLICATION CLIENT",
        "CONNECTION_ADMIN",
    ],
    kill: "CONNECTION_ADMIN",
};

/// (Re)creates `snapper`@`localhost` with [`PASSWORD`] and `grants` on `*.*`.
pub fn create_account(server: &Server, grants: &str) {
    let mut conn = server.conn();
    conn.query_drop("DROP USER IF EXISTS 'snapper'@'localhost'")
        .unwrap();
    conn.query_drop(format!(
        "CREATE USER 'snapper'@'localhost' IDENTIFIED BY '{PASSWORD}'"
    ))
    .unwrap();
    conn.query_drop(format!("GRANT {grants} ON *.* TO 'snapper'@'localhost'"))
        .unwrap();
}

/// Config settings that log in as `snapper`, followed by `extra`.
pub fn account_settings(extra: &str) -> String {
    format!("user = snapper\npassword = {PASSWORD}\n{extra}")
}

/// Everything of a process an unprivileged user could read that might hold a secret.
pub fn process_text(pid: u32) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&cmdline).replace('\0', " "),
        String::from_utf8_lossy(&environ).replace('\0', " ")
    )
}

/// For each documented privilege left out, freeze exits 1 before any lock statement, naming the
/// privilege and the GRANT that fixes it (never the password), and `--check` fails naming it; the
/// kill privilege matters only with `kill-long-queries`. Without it and without
/// `kill-long-queries`, a snapshot works.
pub fn assert_each_missing_grant_is_named_with_the_grant_that_fixes_it(
    server: &Server,
    grants: &Grants,
    limit: Duration,
) {
    for &missing in grants.documented {
        let granted: Vec<&str> = grants
            .documented
            .iter()
            .copied()
            .filter(|g| *g != missing)
            .collect();
        create_account(server, &granted.join(", "));
        let kill = if missing == grants.kill {
            "kill-long-queries = all\nkill-long-queries-timeout = 1"
        } else {
            ""
        };
        let sandbox = Sandbox::new(server, &account_settings(kill));
        let before = lock_statements_run(server);
        let out = sandbox.freeze();
        assert_eq!(
            out.status.code(),
            Some(1),
            "without {missing}: {}",
            text(&out)
        );
        let stderr = stderr_of(&out);
        assert!(
            stderr.contains(&format!("lacks {missing} (")),
            "without {missing}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("GRANT {missing} ON *.* TO 'snapper'@'localhost'")),
            "without {missing}: {stderr}"
        );
        assert!(!stderr.contains(PASSWORD_CORE));
        assert_eq!(
            lock_statements_run(server),
            before,
            "without {missing}: a lock statement ran"
        );
        assert_nothing_left(server, &sandbox, limit);
        let check = sandbox.command("freeze").arg("--check").output().unwrap();
        assert_ne!(
            check.status.code(),
            Some(0),
            "--check passed without {missing}"
        );
        assert!(text(&check).contains(missing), "{}", text(&check));
    }
    let without_kill: Vec<&str> = grants
        .documented
        .iter()
        .copied()
        .filter(|g| *g != grants.kill)
        .collect();
    create_account(server, &without_kill.join(", "));
    let sandbox = Sandbox::new(server, &account_settings(""));
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(sandbox.thaw("thaw").status.success());
    assert_nothing_left(server, &sandbox, limit);
}

/// The password (in the config, with a least-privilege account) appears nowhere a local user or a
/// log reader could see it: not in any process's argv or environment while freeze waits, not in
/// the state file, the info file, the log file, syslog or the hooks' output, on success and on
/// failure. `settings` go first in the config (a lock mode, say).
pub fn assert_the_password_never_appears_in_argv_environment_state_info_or_logs(
    server: &Server,
    grants: &Grants,
    settings: &str,
    limit: Duration,
) {
    create_account(server, &grants.documented.join(", "));
    let log_dir = crate::TempDir::new("pwlog");
    let log_file = log_dir.path().join("mysql-snapshot.log");
    let mut sandbox = Sandbox::new(
        server,
        &account_settings(&format!(
            "{settings}\nlong-query-threshold = 100\nlock-wait-timeout = 30\nlog-file = {}",
            log_file.display()
        )),
    );
    // A long MyISAM write keeps freeze and its locker both alive, waiting for the lock.
    let long = Writer::start(server, "UPDATE snap.my SET v = v + 1 WHERE SLEEP(3) = 0");
    wait_for_statement(server, "SLEEP(3)");
    let freeze = sandbox
        .command("freeze")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "waiting"));
    let locker = sandbox.locker_pid().unwrap();
    let seen = format!("{}\n{}", process_text(freeze.id()), process_text(locker));
    assert!(seen.contains("mysql-snapshot-locker"), "{seen}");
    assert!(
        !seen.contains(PASSWORD_CORE),
        "the password is visible in /proc: {seen}"
    );
    let out = freeze.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    long.join_within(Duration::from_secs(30)).0.unwrap();
    let held_state = fs::read_to_string(sandbox.run_dir.join("state.json")).unwrap();
    let info = fs::read_to_string(&sandbox.info_file).unwrap();
    let thaw = sandbox.thaw("thaw");
    assert!(thaw.status.success(), "{}", text(&thaw));

    // Failure paths log too: a lock lost to max-lock-time.
    let mut sandbox2 = Sandbox::new(
        server,
        &account_settings(&format!(
            "max-lock-time = 1\nlog-file = {}",
            log_file.display()
        )),
    );
    assert!(sandbox2.freeze().status.success());
    assert!(wait_until(Duration::from_secs(10), || sandbox2.status() == "released"));
    let lost = sandbox2.thaw("thaw");
    assert_eq!(lost.status.code(), Some(1), "{}", text(&lost));

    let everything = [
        text(&out),
        text(&thaw),
        text(&lost),
        held_state,
        info,
        fs::read_to_string(sandbox.run_dir.join("state.json")).unwrap(),
        fs::read_to_string(sandbox2.run_dir.join("state.json")).unwrap(),
        fs::read_to_string(&log_file).unwrap(),
        sandbox.log(),
        sandbox2.log(),
    ]
    .join("\n");
    assert!(everything.contains("event=locked"), "nothing was logged");
    assert!(
        !everything.contains(PASSWORD_CORE),
        "the password leaked: {everything}"
    );
    assert_nothing_left(server, &sandbox, limit);
}

/// A wrong password is refused within 10 s with the server's error (1045) and a hint, never
/// printing the password, and leaves nothing.
pub fn assert_a_wrong_password_is_refused_with_a_clear_error_within_10_s(
    server: &Server,
    limit: Duration,
) {
    server
        .conn()
        .query_drop("CREATE USER 'snapper'@'localhost' IDENTIFIED BY 'Right-Pass-1'")
        .unwrap();
    let sandbox = Sandbox::new(server, "user = snapper\npassword = Wr0ng-Pass-9");
    let started = std::time::Instant::now();
    let out = sandbox.freeze();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("1045") && all.contains("wrong user or password"),
        "{all}"
    );
    assert!(
        !all.contains("Wr0ng-Pass-9"),
        "the password was printed: {all}"
    );
    assert_nothing_left(server, &sandbox, limit);
}
