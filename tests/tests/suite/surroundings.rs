//! What a freeze records about its surroundings, before the lock: where every server file lives
//! (`storage`), whether the settings make a restored copy safe (`durability`), and what
//! `freeze --check` says about each risky path and setting.

use std::fs;
use std::time::Duration;

use harness::guest_agent::machine_cannot_loop_mount;
use harness::loopfs::LoopMount;
use harness::{assert_nothing_left, text, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;
use serde_json::Value;

/// The held record of the snapshot `freeze_and_thaw` took (the info file says `released` now).
fn info(sandbox: &Sandbox) -> Value {
    sandbox.last_held()
}

fn freeze_and_thaw(server: &Server, sandbox: &Sandbox) -> String {
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    assert!(sandbox.thaw("thaw").status.success());
    assert_nothing_left(server, sandbox, Duration::from_secs(10));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_info_file_maps_every_server_path_to_its_filesystem_and_records_the_durability_settings() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let log = freeze_and_thaw(&server, &sandbox);
    let recorded = info(&sandbox);
    let paths = &recorded["storage"]["paths"];
    for role in [
        "datadir",
        "binlog",
        "binlog-index",
        "innodb-redo",
        "info-file",
        "tmpdir",
    ] {
        let entry = &paths[role];
        assert!(
            entry["mount_point"].is_string()
                && entry["fstype"].is_string()
                && entry["device"].is_string(),
            "no {role} in {paths:#}"
        );
    }
    assert_eq!(
        recorded["storage"]["flags"].as_array().map(Vec::len),
        Some(0),
        "{recorded:#}"
    );
    assert!(
        !log.contains("event=storage"),
        "nothing flagged, nothing logged: {log}"
    );
    let durability = &recorded["durability"];
    // The harness's servers run innodb_flush_log_at_trx_commit = 2 with the binlog on.
    assert_eq!(
        durability["innodb_flush_log_at_trx_commit"], "2",
        "{durability:#}"
    );
    assert_eq!(durability["log_bin"], "ON");
    assert_eq!(durability["gtid_slave_pos_engine"], "InnoDB");
    // The harness's template holds one MyISAM table (snap.my).
    assert_eq!(durability["non_transactional_count"], 1, "{durability:#}");
    assert_eq!(durability["non_transactional_tables"][0], "snap.my MyISAM");
    assert!(recorded.get("galera").is_none());
    assert_eq!(recorded["lock"]["mode"], "backup-stage", "{recorded:#}");
    assert_tables_listed_before_the_lock(durability);
}

/// The tables of a mode where they only inform the info file (BACKUP STAGE, FTWRL) are listed by a
/// scan that runs beside the checks and is joined at the last moment before commits block: every
/// info file still lists them, and says they were read before the lock.
fn assert_tables_listed_before_the_lock(durability: &Value) {
    assert_eq!(durability["non_transactional_count"], 1, "{durability:#}");
    assert_eq!(
        durability["read"],
        serde_json::json!({"settings": "before-the-lock", "tables": "before-the-lock"}),
        "{durability:#}"
    );
}

#[test]
fn ftwrl_with_and_without_the_pre_flush_lists_the_tables_in_every_info_file_and_says_they_were_read_before_the_lock(
) {
    let server = Server::start();
    for pre_flush in ["on", "off"] {
        let sandbox = Sandbox::new(
            &server,
            &format!("lock-mode = ftwrl\npre-flush = {pre_flush}\n"),
        );
        for _ in 0..3 {
            freeze_and_thaw(&server, &sandbox);
            let recorded = info(&sandbox);
            assert_eq!(recorded["lock"]["mode"], "ftwrl", "{recorded:#}");
            assert_eq!(
                recorded["durability"]["non_transactional_tables"][0], "snap.my MyISAM",
                "pre-flush = {pre_flush}: {recorded:#}"
            );
            assert_tables_listed_before_the_lock(&recorded["durability"]);
        }
    }
}

#[test]
fn a_datadir_whose_binlogs_and_redo_log_are_on_two_loop_mounts_is_mapped_to_each_and_noted() {
    let test =
        "a_datadir_whose_binlogs_and_redo_log_are_on_two_loop_mounts_is_mapped_to_each_and_noted";
    if machine_cannot_loop_mount(test) {
        return;
    }
    let dir = TempDir::new("two-mounts");
    let binlogs = LoopMount::create(
        &dir.path().join("binlogs.img"),
        &dir.path().join("binlogs"),
        64,
    );
    let redo = LoopMount::create(&dir.path().join("redo.img"), &dir.path().join("redo"), 64);
    // The redo log moves with its directory: start from the template's (a clean shutdown's).
    fs::copy(
        harness::template().join("ib_logfile0"),
        redo.mountpoint.join("ib_logfile0"),
    )
    .unwrap();
    let server = Server::start_with(&[
        &format!("--log-bin={}/binlog", binlogs.mountpoint.display()),
        "--server-id=1",
        &format!("--innodb-log-group-home-dir={}", redo.mountpoint.display()),
    ]);
    let sandbox = Sandbox::new(&server, "");
    let log = freeze_and_thaw(&server, &sandbox);
    let recorded = info(&sandbox);
    let paths = &recorded["storage"]["paths"];
    assert_eq!(
        paths["binlog"]["mount_point"],
        binlogs.mountpoint.display().to_string(),
        "{paths:#}"
    );
    assert_eq!(
        paths["innodb-redo"]["mount_point"],
        redo.mountpoint.display().to_string()
    );
    assert_eq!(paths["innodb-redo"]["fstype"], "ext4");
    assert_ne!(paths["datadir"]["device"], paths["binlog"]["device"]);
    assert_ne!(paths["binlog"]["device"], paths["innodb-redo"]["device"]);
    let flags: Vec<&str> = recorded["storage"]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        flags
            .iter()
            .any(|f| f.contains("span 3 devices") && f.contains("together")),
        "{flags:?}"
    );
    let storage_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=storage"))
        .collect();
    assert_eq!(
        storage_lines.len(),
        1,
        "one event=storage line per freeze: {log}"
    );
    let out = sandbox.command("freeze").arg("--check").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("WARNING: note: the server's files span 3 devices"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_names_each_risky_durability_setting_with_its_fix_and_freeze_logs_the_hard_one() {
    let server = Server::start_with(&[
        "--log-bin=binlog",
        "--server-id=1",
        "--sync-binlog=0",
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-doublewrite=0",
    ]);
    server
        .conn()
        .query_drop("CREATE DATABASE app; CREATE TABLE app.legacy (id INT) ENGINE=MyISAM")
        .unwrap();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox.command("freeze").arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "a risky setting is not a failed check: {}",
        text(&out)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for expected in [
        "WARNING: innodb_flush_log_at_trx_commit = 0 with the binary log on",
        "Set innodb_flush_log_at_trx_commit = 1",
        "Set sync_binlog = 1",
        "Set innodb_doublewrite = ON",
        "2 non-transactional user table(s) visible to this account (app.legacy MyISAM, snap.my MyISAM)",
    ] {
        assert!(report.contains(expected), "no `{expected}` in:\n{report}");
    }
    let log = freeze_and_thaw(&server, &sandbox);
    let hard: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=durability"))
        .collect();
    assert_eq!(
        hard.len(),
        1,
        "only the hard warning is logged by freeze: {log}"
    );
    let durability = &info(&sandbox)["durability"];
    assert_eq!(
        durability["non_transactional_tables"][0],
        "app.legacy MyISAM"
    );
    assert_eq!(durability["sync_binlog"], "0");
}
