//! `sync-filesystems`: where the platform copies the disk without freezing the filesystems
//! (Google, AWS DLM, Azure with `fsFreezeEnabled: false`), freeze syncs every filesystem that holds
//! a server file once the lock is held, and only then reports success.
//!
//! The proof copies a loop-mounted "cloud disk" at the device level without FIFREEZE, right after
//! freeze returns, under an InnoDB + MyISAM write load on a server with `sync_binlog=0` and
//! `innodb_flush_log_at_trx_commit=2`, and boots the copy (the rig is `harness::no_freeze`'s).

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::guest_agent::{machine_cannot_loop_mount, ServerSetup};
use harness::loopfs::LoopMount;
use harness::no_freeze::NoFreezeRig;
use harness::{assert_nothing_left, text, Flavour, Sandbox, Server, TempDir};
use serde_json::Value;

/// The machine's MariaDB with production's common non-durable settings (the harness already runs
/// `innodb_flush_log_at_trx_commit=2`); binlogs named relative to the datadir.
const SETUP: ServerSetup = ServerSetup {
    flavour: Flavour::MariaDb1011,
    server_args: &["--log-bin=binlog", "--server-id=1", "--sync-binlog=0"],
    copy_args: &[
        "--log-bin=binlog",
        "--server-id=1",
        "--myisam-recover-options=OFF",
    ],
};

/// Copies that must all be consistent with the sync on.
const RUNS_SYNCED: usize = 20;
/// Copies taken with the sync off: at least one must show the loss, or the test cannot tell.
const RUNS_UNSYNCED: usize = 5;

fn info(sandbox: &Sandbox) -> Value {
    serde_json::from_str(&fs::read_to_string(&sandbox.info_file).unwrap()).unwrap()
}

#[test]
fn with_sync_filesystems_freeze_syncs_each_server_filesystem_once_and_says_so_in_log_state_and_info_file(
) {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox
        .command("freeze")
        .args(["--sync-filesystems", "--caller", "test disks=a,b", "freeze"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.writes_blocked());
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("event=called by=\"test disks=a,b\""), "{log}");
    let synced: Vec<&str> = log.lines().filter(|l| l.contains("event=synced")).collect();
    // The server's datadir and the sandbox's info file are both under the temp dir: one
    // filesystem, synced once, with every role found on it.
    assert_eq!(synced.len(), 1, "{log}");
    assert!(synced[0].contains("roles=datadir,"), "{log}");
    assert!(synced[0].contains("info-file"), "{log}");
    let state = sandbox.state().unwrap();
    assert_eq!(state["synced"].as_array().map(Vec::len), Some(1), "{state}");
    let recorded = info(&sandbox);
    let fs = &recorded["storage"]["synced"];
    assert_eq!(fs.as_array().map(Vec::len), Some(1), "{recorded}");
    assert!(fs[0]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "binlog-index" || r == "datadir"));
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn auto_syncs_only_for_a_caller_that_does_not_freeze_and_off_overrides_it_with_a_warning() {
    let server = Server::start();
    for (settings, flag, syncs, warns) in [
        ("", false, false, false),
        ("sync-filesystems = on", false, true, false),
        ("sync-filesystems = off", true, false, true),
    ] {
        let sandbox = Sandbox::new(&server, settings);
        let mut freeze = sandbox.command("freeze");
        if flag {
            freeze.arg("--sync-filesystems");
        }
        let out = freeze.arg("freeze").output().unwrap();
        assert!(out.status.success(), "{settings}: {}", text(&out));
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(log.contains("event=synced"), syncs, "{settings}: {log}");
        assert_eq!(
            log.contains("sync-filesystems = off"),
            warns,
            "{settings}: {log}"
        );
        assert_eq!(
            info(&sandbox)["storage"]["synced"].is_array(),
            syncs,
            "{settings}"
        );
        assert!(sandbox.thaw("thaw").status.success());
        assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    }
}

#[test]
fn a_sync_that_does_not_return_within_sync_timeout_fails_the_freeze_and_releases_the_lock() {
    let test =
        "a_sync_that_does_not_return_within_sync_timeout_fails_the_freeze_and_releases_the_lock";
    if machine_cannot_loop_mount(test) {
        return;
    }
    // A filesystem whose writeback cannot complete: an ext4 on a loop device whose image lives on
    // a second loop mount of ours, which is frozen. The server's relay-log path points at it
    // (nothing is written there), and a file on it has dirty pages.
    let dir = TempDir::new("stuck-sync");
    let host = LoopMount::create(&dir.path().join("host.img"), &dir.path().join("host"), 256);
    let stuck = LoopMount::create(
        &host.mountpoint.join("disk.img"),
        &dir.path().join("stuck"),
        128,
    );
    let relay = stuck.mountpoint.join("relay-bin");
    let server = Server::start_with(&[&format!("--relay-log={}", relay.display())]);
    let sandbox = Sandbox::new(&server, "sync-timeout = 2\nlock-wait-timeout = 2");
    fs::write(stuck.mountpoint.join("dirty"), vec![7u8; 4 << 20]).unwrap();
    let started;
    let out = {
        let _window = host.freeze_window();
        let frozen = Command::new("fsfreeze")
            .arg("-f")
            .arg(&host.mountpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(frozen.status.success(), "{}", text(&frozen));
        started = Instant::now();
        let out = sandbox
            .command("freeze")
            .args(["--sync-filesystems", "freeze"])
            .output()
            .unwrap();
        let took = started.elapsed();
        // While the filesystem is still frozen: no lock, no locker.
        assert!(!out.status.success(), "{}", text(&out));
        eprintln!("freeze with a stuck sync and sync-timeout = 2 failed after {took:?}");
        assert!(
            took < Duration::from_secs(6),
            "freeze took {took:?} with sync-timeout = 2"
        );
        assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
        out
        // `_window` thaws the host here; the stuck sync then completes.
    };
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("did not return within sync-timeout (2 s)") && log.contains("event=refused"),
        "{log}"
    );
    assert!(
        log.contains(&stuck.mountpoint.display().to_string()),
        "{log}"
    );
    // The next freeze, with the filesystem healthy again, works.
    let out = sandbox
        .command("freeze")
        .args(["--sync-filesystems", "freeze"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(sandbox.thaw("thaw").status.success());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn a_disk_copy_taken_without_fifreeze_is_consistent_when_freeze_syncs_and_the_check_can_tell() {
    let test =
        "a_disk_copy_taken_without_fifreeze_is_consistent_when_freeze_syncs_and_the_check_can_tell";
    if machine_cannot_loop_mount(test) {
        return;
    }
    let mut rig = NoFreezeRig::new(SETUP, "");
    // The control first: without the sync, the copy must be seen to lose something at least
    // once, or this rig could not tell a good copy from a bad one.
    let mut unsynced_bad = 0;
    for run in 1..=RUNS_UNSYNCED {
        let taken = rig.snapshot(&[]);
        assert!(!taken.freeze_log.contains("event=synced"));
        let found = rig.discrepancies(&taken);
        eprintln!("unsynced copy {run}: {found:#?}");
        if !found.is_empty() {
            unsynced_bad += 1;
        }
    }
    eprintln!("unsynced copies inconsistent: {unsynced_bad} of {RUNS_UNSYNCED}");
    assert!(
        unsynced_bad >= 1,
        "no unsynced copy of {RUNS_UNSYNCED} lost anything: the rig cannot tell"
    );
    let mut bad = Vec::new();
    for run in 1..=RUNS_SYNCED {
        let taken = rig.snapshot(&["--sync-filesystems"]);
        assert!(
            taken.freeze_log.contains("event=synced"),
            "{}",
            taken.freeze_log
        );
        let found = rig.discrepancies(&taken);
        if !found.is_empty() {
            eprintln!("synced copy {run} is inconsistent: {found:#?}");
            bad.push((run, found));
        }
    }
    let report = rig.load.stop();
    eprintln!(
        "synced copies consistent: {} of {RUNS_SYNCED}; unsynced inconsistent: {unsynced_bad} of {RUNS_UNSYNCED}; {} writes",
        RUNS_SYNCED - bad.len(),
        report.writes
    );
    assert!(bad.is_empty(), "synced copies were inconsistent: {bad:#?}");
    assert!(
        report.errors.is_empty(),
        "writers failed: {:?}",
        report.errors
    );
}
