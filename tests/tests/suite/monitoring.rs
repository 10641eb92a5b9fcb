//! `freeze --check` (the rehearsal) and `thaw --status` (monitoring), against a private MariaDB.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::{alive, bin, signal, text, wait_until, write_private, Sandbox, Server};
use mysql::prelude::Queryable;

fn check(sandbox: &Sandbox, json: bool) -> std::process::Output {
    let mut command = sandbox.command("freeze");
    command.arg("--check");
    if json {
        command.arg("--json");
    }
    command.output().unwrap()
}

fn status(sandbox: &Sandbox) -> (Option<i32>, String) {
    let out = sandbox.command("thaw").arg("--status").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_passes_on_a_good_setup_and_takes_and_releases_the_lock_once() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = check(&sandbox, false);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("A real freeze would work"), "{stdout}");
    assert!(
        stdout.contains("lock mode   backup-stage (lock-mode = auto: MariaDB 10.4.1 or later"),
        "{stdout}"
    );
    assert!(stdout.contains("took the lock in"), "{stdout}");
    assert!(
        !server.writes_blocked(),
        "the rehearsal must release its lock"
    );
    assert!(
        !sandbox.run_dir.join("state.json").exists(),
        "the rehearsal must not touch the state"
    );
    assert!(
        !sandbox.info_file.exists(),
        "the rehearsal must not write the info file"
    );

    let out = check(&sandbox, true);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for expected in [
        "server",
        "lock mode",
        "privileges",
        "run-dir",
        "info-file",
        "vmware",
        "qemu-ga",
        "rehearsal",
    ] {
        assert!(
            names.contains(&expected),
            "missing check {expected}: {names:?}"
        );
    }
}

#[test]
fn check_says_whether_a_freeze_syncs_and_rehearses_the_sync_for_a_caller_that_does_not_freeze() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = check(&sandbox, false);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sync        off for hooks whose platform freezes the filesystems"),
        "{stdout}"
    );
    for cloud in ["google", "azure", "aws-ssm"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok   {cloud}"))),
            "no {cloud} line: {stdout}"
        );
    }
    let out = sandbox
        .command("freeze")
        .args(["--check", "--sync-filesystems"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(" sync "))
        .unwrap_or_default();
    assert!(
        line.contains("on (sync-filesystems = auto): a freeze syncs 1 filesystem(s)")
            && line.contains("datadir")
            && line.contains("info-file")
            && line.contains(" ms"),
        "{stdout}"
    );
    // An explicit off where the caller does not freeze is a failed check: say it before a
    // snapshot loses data.
    let off = Sandbox::new(&server, "sync-filesystems = off");
    let out = off
        .command("freeze")
        .args(["--check", "--sync-filesystems"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "FAIL sync        off (sync-filesystems = off) although the caller does not freeze"
        ),
        "{}",
        text(&out)
    );
    assert!(!server.writes_blocked());
}

/// `freeze --check` (with `--json` when `json`) as this machine's qemu-ga would see it with the
/// configuration directories `/etc/qemu` and `/etc/qemu-ga` empty but for a `qemu-ga.conf` holding
/// `conf` (none when `None`), and no qemu-ga running. Both exist only in a private mount and PID
/// namespace (tmpfs over the directories, a fresh /proc): the machine's /etc is never touched, and
/// a qemu-ga another test runs is not seen.
fn check_with_qemu_ga_configured(sandbox: &Sandbox, conf: Option<&str>, json: bool) -> Output {
    let agent = ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"];
    assert!(
        agent.iter().any(|a| Path::new(a).is_file()) && Path::new("/etc/qemu").is_dir(),
        "qemu-ga (and its /etc/qemu) is not installed: run tests/prerequisites.sh"
    );
    let script = r#"set -e
for dir in /etc/qemu /etc/qemu-ga; do
    [ ! -d "$dir" ] || mount -t tmpfs -o mode=0755 mss-check "$dir"
done
[ -z "$QEMU_GA_CONF" ] || printf '%s' "$QEMU_GA_CONF" > /etc/qemu/qemu-ga.conf
exec "$@""#;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--pid", "--fork"])
        .args(["--mount-proc", "sh", "-c", script, "sh"])
        .arg(bin("freeze"))
        .arg("--check")
        .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
        .env("QEMU_GA_CONF", conf.unwrap_or(""))
        .stdin(Stdio::null());
    if json {
        command.arg("--json");
    }
    command.output().unwrap()
}

/// The level and text of the `--check` line for `name`.
fn check_line(stdout: &str, name: &str) -> Option<(String, String)> {
    stdout.lines().find_map(|l| {
        let (level, rest) = l.split_once(' ')?;
        let text = rest.trim_start().strip_prefix(name)?.strip_prefix(' ')?;
        Some((level.to_string(), text.trim_start().to_string()))
    })
}

#[test]
fn check_warns_but_passes_when_qemu_ga_runs_no_freeze_hook_and_is_ok_when_it_runs_ours() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = check_with_qemu_ga_configured(&sandbox, None, false);
    assert!(
        out.status.success(),
        "a warning must not fail --check: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (level, line) = check_line(&stdout, "qemu-ga").expect("a qemu-ga line");
    assert!(line.contains("qemu-ga runs NO freeze hook"), "{stdout}");
    assert_eq!(
        level, "warn",
        "a line that describes a problem must not say ok: {stdout}"
    );
    assert!(stdout.contains("A real freeze would work."), "{stdout}");

    let out = check_with_qemu_ga_configured(&sandbox, None, true);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true, "{doc:#}");
    let qemu_ga = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "qemu-ga")
        .expect("a qemu-ga check");
    assert_eq!(qemu_ga["level"], "warn", "{qemu_ga:#}");
    assert_eq!(qemu_ga["ok"], true, "{qemu_ga:#}");
    assert!(doc["warnings"].as_u64().is_some_and(|n| n >= 1), "{doc:#}");

    let ours = "[general]\nfsfreeze-hook=/usr/sbin/mysql-snapshot-qemu-hook\n";
    let out = check_with_qemu_ga_configured(&sandbox, Some(ours), false);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (level, line) = check_line(&stdout, "qemu-ga").expect("a qemu-ga line");
    assert!(
        line.contains("qemu-ga runs /usr/sbin/mysql-snapshot-qemu-hook (fsfreeze-hook in /etc/qemu/qemu-ga.conf)"),
        "{stdout}"
    );
    assert_eq!(level, "ok", "{stdout}");
}

#[test]
fn check_names_a_missing_grant_with_the_grant_that_fixes_it() {
    let server = Server::start();
    server
        .conn()
        .query_drop(
            "CREATE USER 'snapper'@'localhost' IDENTIFIED BY 'pw-check-1';
             GRANT RELOAD, BINLOG MONITOR, SLAVE MONITOR ON *.* TO 'snapper'@'localhost'",
        )
        .unwrap();
    let sandbox = Sandbox::new(&server, "user = snapper\npassword = pw-check-1");
    let out = check(&sandbox, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL privileges"), "{stdout}");
    assert!(
        stdout.contains("GRANT PROCESS ON *.* TO 'snapper'@'localhost';"),
        "{stdout}"
    );
    assert!(!text(&out).contains("pw-check-1"));
    // The real freeze refuses for the same reason, before any lock.
    let out = sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("lacks PROCESS"), "{}", text(&out));
    assert!(!server.writes_blocked());
}

#[test]
fn check_names_a_wrong_password_and_an_unwritable_run_dir() {
    let server = Server::start();
    server
        .conn()
        .query_drop("CREATE USER 'snapper'@'localhost' IDENTIFIED BY 'right-pw'")
        .unwrap();
    let sandbox = Sandbox::new(&server, "user = snapper\npassword = wrong-pw-77");
    let out = check(&sandbox, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL server") && stdout.contains("1045"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong-pw-77"), "{stdout}");

    // run-dir below a regular file can never be created.
    let blocker = sandbox.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let sandbox2 = Sandbox::new(&server, &format!("run-dir = {}/run", blocker.display()));
    let out = check(&sandbox2, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL run-dir"), "{stdout}");
}

#[test]
fn status_follows_a_snapshot_from_idle_to_locked_to_released() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let (code, out) = status(&sandbox);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("MYSQL-SNAPSHOT OK - idle"), "{out}");

    assert!(sandbox.freeze().status.success());
    let (code, out) = status(&sandbox);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("locked since") && out.contains("by locker PID"),
        "{out}"
    );

    assert!(sandbox.thaw("thaw").status.success());
    let (code, out) = status(&sandbox);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("held its lock") && out.contains("until thaw"),
        "{out}"
    );
    let json = sandbox
        .command("thaw")
        .args(["--status", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["status"], "OK");
    assert_eq!(doc["state"]["status"], "released");
}

#[test]
fn status_warns_after_a_lock_lost_before_thaw() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "max-lock-time = 1");
    assert!(sandbox.freeze().status.success());
    assert!(wait_until(Duration::from_secs(10), || sandbox.status() == "released"));
    let (code, out) = status(&sandbox);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("MYSQL-SNAPSHOT WARNING") && out.contains("lost its lock"),
        "{out}"
    );
}

#[test]
fn status_is_critical_when_a_lock_outlives_max_lock_time() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "max-lock-time = 1");
    assert!(sandbox.freeze().status.success());
    let pid = sandbox.locker_pid().unwrap();
    // A stopped locker cannot release at max-lock-time: the lock outlives it.
    signal(pid, "STOP");
    let critical = wait_until(Duration::from_secs(10), || status(&sandbox).0 == Some(2));
    let (_, out) = status(&sandbox);
    signal(pid, "CONT");
    assert!(critical, "{out}");
    assert!(out.contains("held longer than max-lock-time"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
}

#[test]
fn status_is_unknown_on_an_unusable_state_file() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    std::fs::create_dir_all(&sandbox.run_dir).unwrap();
    std::fs::set_permissions(
        &sandbox.run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    write_private(&sandbox.run_dir.join("state.json"), "][ not json");
    let (code, out) = status(&sandbox);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.starts_with("MYSQL-SNAPSHOT UNKNOWN"), "{out}");
}

/// `thaw --status | head -1` (and any reader that stops early) closes the printer's stdout: it
/// keeps the exit status it would have had, and never panics (exit 101, or SIGABRT in release).
#[test]
fn status_and_check_keep_their_exit_status_when_the_reader_closes_stdout() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let cases: [(&str, &[&str]); 4] = [
        ("thaw", &["--status"]),
        ("thaw", &["--status", "--json"]),
        ("thaw", &["--status", "--prometheus"]),
        ("freeze", &["--check"]),
    ];
    for (program, args) in cases {
        let open = sandbox.command(program).args(args).output().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let closed = sandbox
            .command(program)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&closed.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{program} {args:?} with stdout closed: {stderr}"
        );
        assert_eq!(
            closed.status.code(),
            open.status.code(),
            "{program} {args:?}: the exit status changed with stdout closed ({stderr})"
        );
    }
}

/// Every bad argument of the three binaries exits 2 with `mysql-snapshot-NAME: what is wrong`,
/// takes no lock and starts no locker.
#[test]
fn bad_arguments_exit_2_naming_the_problem_and_touch_nothing() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let cases: [(&str, &[&str], &str); 6] = [
        ("freeze", &["bogus"], "mysql-snapshot-freeze: unknown phase `bogus`"),
        ("freeze", &["--snapshot-timeout", "0"], "mysql-snapshot-freeze: --snapshot-timeout 0: expected a whole number of seconds from 1 to 86400"),
        ("freeze", &["--lock-mode", "nope"], "mysql-snapshot-freeze: --lock-mode nope: expected auto, ftwrl, backup-stage or backup-lock"),
        ("freeze", &["--nonsense"], "Unrecognized argument: --nonsense"),
        ("thaw", &["freeze"], "mysql-snapshot-thaw: this program does not handle `freeze`; mysql-snapshot-freeze does"),
        ("locker", &["--lock-mode", "ftwrl"], "Unrecognized argument: --lock-mode"),
    ];
    for (program, args, says) in cases {
        let out = sandbox.command(program).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{program} {args:?}: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{program} {args:?}: {}",
            text(&out)
        );
    }
    assert!(sandbox.lockers().is_empty(), "a locker was started");
    assert!(
        sandbox.state().is_none(),
        "a bad argument wrote the state file"
    );
    assert!(!server.writes_blocked());
}
