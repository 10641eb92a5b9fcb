//! End to end through Debian's real `qemu-ga` on the machine's MariaDB: a private server whose
//! datadir and binlogs live on a loop-mounted ext4 this test makes, a write load on InnoDB and
//! MyISAM, our hook run by `qemu-ga -F`, a block-for-block copy of the image while frozen, and a
//! second server booted on the copy to check it (the rig is `harness::guest_agent`'s). Only the
//! test's own loop mount is ever frozen, and it is thawed on every path.

use std::thread::{self, JoinHandle};
use std::time::Duration;

use harness::guest_agent::{machine_cannot_loop_mount, Hook, Rig, ServerSetup, Snapshot};
use harness::{wait_until, Flavour, Server};
use mysql::prelude::Queryable;

/// The machine's MariaDB, binlogs named relative to the datadir (so the index stays right
/// wherever a copy is mounted); the copy boots with the same settings.
const SETUP: ServerSetup = ServerSetup {
    flavour: Flavour::MariaDb1011,
    server_args: &["--log-bin=binlog", "--server-id=1"],
    copy_args: &[
        "--log-bin=binlog",
        "--server-id=1",
        "--myisam-recover-options=OFF",
    ],
};

/// A statement run in the background on its own connection; its outcome once it ends.
struct Background {
    handle: JoinHandle<Result<(), String>>,
}

impl Background {
    fn start(server: &Server, statement: &str) -> Background {
        let mut conn = server.conn();
        let statement = statement.to_string();
        Background {
            handle: thread::spawn(move || conn.query_drop(&statement).map_err(|e| e.to_string())),
        }
    }
}

fn a_snapshot_through_qemu_ga_is_consistent(test: &str, mode: &str) {
    if machine_cannot_loop_mount(test) {
        return;
    }
    let mut rig = Rig::new(SETUP, &format!("lock-mode = {mode}"), Hook::Project);
    rig.assert_a_snapshot_is_consistent(test, &format!("the {mode} snapshot"), |info| {
        assert_eq!(info["lock"]["mode"], mode);
    });
}

#[test]
fn a_qemu_ga_snapshot_under_ftwrl_boots_with_the_recorded_coordinates_and_sound_tables() {
    a_snapshot_through_qemu_ga_is_consistent(
        "a_qemu_ga_snapshot_under_ftwrl_boots_with_the_recorded_coordinates_and_sound_tables",
        "ftwrl",
    );
}

#[test]
fn a_qemu_ga_snapshot_under_backup_stage_boots_with_the_recorded_coordinates_and_sound_tables() {
    a_snapshot_through_qemu_ga_is_consistent(
        "a_qemu_ga_snapshot_under_backup_stage_boots_with_the_recorded_coordinates_and_sound_tables",
        "backup-stage",
    );
}

/// The negative control: the same flow with a hook that does nothing. The mount still carries the
/// info file of an earlier real freeze (what a silently failing hook leaves behind), and writes go
/// on after it; the check must tell that the copy does not match it.
#[test]
fn the_copy_check_tells_when_the_hook_did_nothing() {
    if machine_cannot_loop_mount("the_copy_check_tells_when_the_hook_did_nothing") {
        return;
    }
    let mut rig = Rig::new(SETUP, "lock-mode = ftwrl", Hook::DoesNothing);
    let found = rig.discrepancies_after_a_stale_freeze();
    assert!(
        found.iter().any(|d| d.contains("binlog end")),
        "the check did not tell a copy taken without the hook from a consistent one: {found:?}"
    );
    assert!(
        found
            .iter()
            .any(|d| d.contains("the info file says the copy is not consistent: released")),
        "the copy's own info file must say it was taken after a release: {found:?}"
    );
}

/// Proxmox's way after a failed freeze: qemu-ga reports the hook's failure, and the backup goes
/// on crash-consistent. The copy says so itself — `refused`, with the reason freeze gave — and
/// carries no coordinates at its top level (the last held record only under `last_consistent`);
/// a server started on it recovers. Nothing waited for a thaw to make that true (libvirt and
/// OpenStack send none).
#[test]
fn a_copy_taken_after_a_refused_qemu_ga_freeze_says_refused_and_recovers() {
    if machine_cannot_loop_mount(
        "a_copy_taken_after_a_refused_qemu_ga_freeze_says_refused_and_recovers",
    ) {
        return;
    }
    let mut rig = Rig::new(
        SETUP,
        "lock-mode = ftwrl\nsnapshot-timeout = 4\nlong-query-threshold = 1",
        Hook::Project,
    );
    // A held record on the disk first, as the last good snapshot leaves it.
    let out = rig.sandbox.freeze();
    assert!(out.status.success(), "{}", harness::text(&out));
    let held = rig.info();
    let out = rig.sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", harness::text(&out));

    let (snapshot, long) = snapshot_behind_a_long_myisam_write(&mut rig);
    let Snapshot::Refused(desc) = snapshot else {
        panic!("FTWRL behind a 30 s MyISAM write with snapshot-timeout = 4 must be refused");
    };
    assert!(desc.contains("fsfreeze hook has failed"), "{desc}");
    let refused = rig.info();
    assert_eq!(refused["consistent"], false, "{refused}");
    assert_eq!(refused["state"], "refused", "{refused}");
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("freeze failed") && reason.contains("snapshot-timeout"),
        "the reason names the refusal as freeze reported it: {reason}"
    );
    assert!(
        refused.get("binlog").is_none() && refused.get("seed_replica_sql").is_none(),
        "no coordinates at the top level of a copy no lock covered: {refused}"
    );
    assert_eq!(refused["last_consistent"]["binlog"], held["binlog"]);

    let copy = rig.copy_without_hook();
    drop(long);
    let found = rig.discrepancies(&copy);
    assert!(
        found
            .iter()
            .any(|d| d.contains("the info file says the copy is not consistent: refused")),
        "the copy's info file must say refused: {found:?}"
    );
    assert!(
        !found.iter().any(|d| d.contains("did not start")),
        "a server on the crash-consistent copy must recover: {found:?}"
    );
}

/// Starts a 30 s write on a MyISAM table and takes a snapshot through qemu-ga behind it.
fn snapshot_behind_a_long_myisam_write(rig: &mut Rig) -> (Snapshot, Background) {
    // The window first: waiting for another test's window must not age the long write.
    let window = rig.mount.freeze_window();
    let long = Background::start(
        &rig.server,
        "UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0",
    );
    assert!(
        wait_until(Duration::from_secs(10), || !rig
            .server
            .statements_like("SLEEP(30)")
            .is_empty()),
        "the long write did not start"
    );
    let snapshot = rig.snapshot_in(&window);
    drop(window);
    (snapshot, long)
}

/// Behind a long MyISAM write the snapshot is refused (no FIFREEZE, no lock left) or consistent:
/// never accepted and inconsistent.
fn a_long_myisam_write_makes_the_snapshot_refused_or_consistent(test: &str, mode: &str) {
    if machine_cannot_loop_mount(test) {
        return;
    }
    let mut rig = Rig::new(
        SETUP,
        &format!("lock-mode = {mode}\nsnapshot-timeout = 5"),
        Hook::Project,
    );
    let (snapshot, _long) = snapshot_behind_a_long_myisam_write(&mut rig);
    match snapshot {
        Snapshot::Refused(desc) => {
            assert!(
                desc.contains("fsfreeze hook has failed with status"),
                "qemu-ga refused for another reason than the hook's exit status: {desc}"
            );
            // freeze cleaned up on its own way out: qemu-ga sends no thaw after a failed freeze.
            assert!(
                !rig.sandbox.locker_pid().is_some_and(harness::alive),
                "a refused freeze left its locker running\n{}",
                rig.diagnostics()
            );
            rig.assert_writes_resume();
            eprintln!("{test}: refused ({desc})");
        }
        Snapshot::Taken { copy, .. } => {
            rig.assert_writes_resume();
            rig.assert_copy_is_consistent(&copy, "a snapshot accepted behind a long MyISAM write");
            eprintln!("{test}: accepted and consistent");
        }
    }
}

#[test]
fn behind_a_long_myisam_write_an_ftwrl_snapshot_is_refused_or_consistent() {
    a_long_myisam_write_makes_the_snapshot_refused_or_consistent(
        "behind_a_long_myisam_write_an_ftwrl_snapshot_is_refused_or_consistent",
        "ftwrl",
    );
}

#[test]
fn behind_a_long_myisam_write_a_default_mode_snapshot_is_refused_or_consistent() {
    a_long_myisam_write_makes_the_snapshot_refused_or_consistent(
        "behind_a_long_myisam_write_a_default_mode_snapshot_is_refused_or_consistent",
        "auto",
    );
}

/// With `kill-long-queries = all` the long write is killed and the snapshot is taken and
/// consistent.
#[test]
fn kill_long_queries_all_makes_a_snapshot_behind_a_long_myisam_write_consistent() {
    if machine_cannot_loop_mount(
        "kill_long_queries_all_makes_a_snapshot_behind_a_long_myisam_write_consistent",
    ) {
        return;
    }
    // 20 s is less than the long write's 30: only a kill lets the freeze succeed in time.
    let mut rig = Rig::new(
        SETUP,
        "kill-long-queries = all\nkill-long-queries-timeout = 1\nsnapshot-timeout = 20",
        Hook::Project,
    );
    let (snapshot, long) = snapshot_behind_a_long_myisam_write(&mut rig);
    let copy = match snapshot {
        Snapshot::Taken { copy, .. } => copy,
        Snapshot::Refused(desc) => panic!(
            "the freeze was refused although kill-long-queries = all: {desc}\n{}",
            rig.diagnostics()
        ),
    };
    rig.assert_writes_resume();
    assert!(
        wait_until(Duration::from_secs(40), || long.handle.is_finished()),
        "the long write is still running"
    );
    let outcome = long.handle.join().unwrap();
    assert!(
        outcome
            .as_ref()
            .is_err_and(|e| e.contains("interrupted") || e.contains("killed")),
        "the long write was not killed: {outcome:?}"
    );
    rig.assert_copy_is_consistent(&copy, "the snapshot taken after killing the long write");
    eprintln!("kill-long-queries = all: the long write was killed ({outcome:?}); consistent");
}
