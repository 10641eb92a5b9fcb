//! The least-privilege account of the security tests: `snapper`@`localhost` with a distinctive
//! password, the grants README documents for each server, the config that uses it, and the
//! scenarios that run the same way on MariaDB (security.rs) and MySQL (faults_mysql.rs).
//! It only ever creates and drops that one account, on a private server a test started.

use std::fs;
use std::time::Duration;

use mysql::prelude::Queryable;

use crate::faults::{lock_statements_run, stderr_of};
use crate::{assert_nothing_left, text, Sandbox, Server};

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
