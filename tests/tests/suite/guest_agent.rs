//! End to end through Debian's real `qemu-ga` on the machine's MariaDB: a private server whose
//! datadir and binlogs live on a loop-mounted ext4 this test makes, a write load on InnoDB and
//! MyISAM, our hook run by `qemu-ga -F`, a block-for-block copy of the image while frozen, and a
//! second server booted on the copy to check it (the rig is `harness::guest_agent`'s). Only the
//! test's own loop mount is ever frozen, and it is thawed on every path.

use std::thread::{self, JoinHandle};
use std::time::Duration;

use harness::guest_agent::{
    machine_cannot_loop_mount, Hook, Rig, ServerSetup, Snapshot, INFO_NAME,
};
use harness::{wait_until, Server};
use mysql::prelude::Queryable;

/// The machine's MariaDB (see `guest_agent::MARIADB`).
const SETUP: ServerSetup = harness::guest_agent::MARIADB;

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

/// The other hooks of the chain tests, in glob order: a line per call in `other_hook_calls`.
const FIRST: &str = "10-first";
const SECOND: &str = "20-second";
const THIRD: &str = "30-third";

/// `name phase state`: what an other hook records of one call (`state`: the info file's, so
/// `none` before our first freeze, `held` while our lock is, `released` after our thaw).
fn call(name: &str, phase: &str, state: &str) -> String {
    format!("{name} {phase} {state}")
}

/// A rig with the project's dispatcher, `settings`, and in its hook directory the executable
/// other hooks `(name, freeze exit, thaw exit)`; `None` where the machine cannot loop-mount.
fn rig_with_other_hooks(test: &str, settings: &str, hooks: &[(&str, u8, u8)]) -> Option<Rig> {
    if machine_cannot_loop_mount(test) {
        return None;
    }
    let rig = Rig::new(SETUP, settings, Hook::Project);
    for &(name, freeze_exit, thaw_exit) in hooks {
        rig.add_other_hook(name, 0o755, freeze_exit, thaw_exit);
    }
    Some(rig)
}

/// qemu-ga refused the freeze with the hook's `status` (`what` made it refuse); its error.
fn refused_with(snapshot: Snapshot, status: u8, what: &str) -> String {
    let Snapshot::Refused(desc) = snapshot else {
        panic!("{what} must make qemu-ga refuse the freeze");
    };
    assert!(
        desc.contains(&format!("fsfreeze hook has failed with status {status}")),
        "qemu-ga passes the status on: {desc}"
    );
    desc
}

/// The other hooks were called exactly as `calls` says, no locker is left and a write goes
/// through; `outcome` is what qemu-ga answered, for the record.
fn assert_the_chain_ran(rig: &mut Rig, test: &str, outcome: &str, calls: &[String]) {
    assert_eq!(rig.other_hook_calls(), calls, "{}", rig.diagnostics());
    harness::assert_nothing_left(&rig.server, &rig.sandbox, Duration::from_secs(10));
    eprintln!("{test}: {outcome}; calls {calls:?}");
}

/// Our dispatcher runs the other hooks of its directory as well, in glob order: theirs before our
/// freeze (the info file has no lock yet when they run), ours first on thaw (released when they
/// run), theirs after it in reverse; each once, their output in the dispatcher's log. Our own
/// `mysql-snapshot` hook, a file that is not executable and a backup name are not run. The copy
/// is consistent.
#[test]
fn the_qemu_ga_dispatcher_freezes_the_other_hooks_before_ours_and_thaws_them_after_ours() {
    let test =
        "the_qemu_ga_dispatcher_freezes_the_other_hooks_before_ours_and_thaws_them_after_ours";
    let Some(mut rig) = rig_with_other_hooks(
        test,
        "lock-mode = ftwrl",
        &[(SECOND, 0, 0), (FIRST, 0, 0), ("50-old.dpkg-old", 0, 0)],
    ) else {
        return;
    };
    // What install.sh --qemu puts there for the stock dispatcher: the binaries run once, by ours.
    rig.add_other_hook("mysql-snapshot", 0o755, 0, 0);
    rig.add_other_hook("40-not-executable", 0o644, 0, 0);
    rig.assert_a_snapshot_is_consistent(test, "the snapshot with other hooks", |info| {
        assert_eq!(info["lock"]["mode"], "ftwrl");
    });
    let output = rig.other_hooks_output();
    for line in [
        "10-first says freeze",
        "20-second says freeze",
        "20-second says thaw",
        "10-first says thaw",
    ] {
        assert!(
            output.contains(line),
            "the dispatcher's log lacks `{line}`:\n{output}"
        );
    }
    assert_the_chain_ran(
        &mut rig,
        test,
        "taken, consistent",
        &[
            call(FIRST, "freeze", "none"),
            call(SECOND, "freeze", "none"),
            call(SECOND, "thaw", "released"),
            call(FIRST, "thaw", "released"),
        ],
    );
}

/// A hook that fails its freeze stops the chain: qemu-ga refuses the freeze with that hook's
/// status, the hooks frozen before it get their thaw, the ones after it and ours never run (no
/// info file, no locker; writes go on), and the failed one gets no thaw.
#[test]
fn a_failing_second_hook_refuses_the_freeze_and_thaws_the_hooks_before_it() {
    let test = "a_failing_second_hook_refuses_the_freeze_and_thaws_the_hooks_before_it";
    let Some(mut rig) = rig_with_other_hooks(
        test,
        "lock-mode = ftwrl",
        &[(FIRST, 0, 0), (SECOND, 5, 0), (THIRD, 0, 0)],
    ) else {
        return;
    };
    let snapshot = rig.snapshot();
    let desc = refused_with(snapshot, 5, "a hook that fails its freeze");
    assert!(
        !rig.mount.mountpoint.join(INFO_NAME).exists(),
        "our freeze ran although a hook before it failed: {}",
        rig.diagnostics()
    );
    assert_the_chain_ran(
        &mut rig,
        test,
        &format!("refused ({desc})"),
        &[
            call(FIRST, "freeze", "none"),
            call(SECOND, "freeze", "none"),
            call(FIRST, "thaw", "none"),
        ],
    );
}

/// Our freeze refused (FTWRL behind a 30 s MyISAM write, snapshot-timeout = 4) after the other
/// hooks froze: qemu-ga refuses the freeze with our status, and the other hooks are thawed in
/// reverse order (the info file says `refused` when they are); no locker, writes go on.
#[test]
fn a_refused_lock_refuses_the_freeze_and_thaws_the_hooks_frozen_before_it() {
    let test = "a_refused_lock_refuses_the_freeze_and_thaws_the_hooks_frozen_before_it";
    let Some(mut rig) = rig_with_other_hooks(
        test,
        "lock-mode = ftwrl\nsnapshot-timeout = 4\nlong-query-threshold = 1",
        &[(FIRST, 0, 0), (SECOND, 0, 0)],
    ) else {
        return;
    };
    let (snapshot, _long) = snapshot_behind_a_long_myisam_write(&mut rig);
    let desc = refused_with(
        snapshot,
        1,
        "FTWRL behind a 30 s MyISAM write, snapshot-timeout = 4",
    );
    assert_the_chain_ran(
        &mut rig,
        test,
        &format!("refused ({desc})"),
        &[
            call(FIRST, "freeze", "none"),
            call(SECOND, "freeze", "none"),
            call(SECOND, "thaw", "refused"),
            call(FIRST, "thaw", "refused"),
        ],
    );
}

/// A hook that fails its thaw: ours and every other hook still thaw, in reverse order, the ones
/// after the failed one included; qemu-ga's thaw answers with that hook's status, the mount is
/// thawed and our lock released.
#[test]
fn a_failing_thaw_hook_still_thaws_every_hook_in_reverse_order_and_is_reported() {
    let test = "a_failing_thaw_hook_still_thaws_every_hook_in_reverse_order_and_is_reported";
    let Some(mut rig) = rig_with_other_hooks(
        test,
        "lock-mode = ftwrl",
        &[(FIRST, 0, 0), (SECOND, 0, 7), (THIRD, 0, 0)],
    ) else {
        return;
    };
    let (snapshot, thawed) = rig.snapshot_answering_thaw();
    let Snapshot::Taken { .. } = snapshot else {
        panic!("the freeze was refused\n{}", rig.diagnostics());
    };
    let thawed = thawed.expect("a thaw follows a freeze");
    assert!(
        thawed
            .as_ref()
            .is_err_and(|e| e.contains("fsfreeze hook has failed with status 7")),
        "qemu-ga's thaw reports the failed hook's status: {thawed:?}"
    );
    assert_the_chain_ran(
        &mut rig,
        test,
        &format!("thaw answered {thawed:?}"),
        &[
            call(FIRST, "freeze", "none"),
            call(SECOND, "freeze", "none"),
            call(THIRD, "freeze", "none"),
            call(THIRD, "thaw", "released"),
            call(SECOND, "thaw", "released"),
            call(FIRST, "thaw", "released"),
        ],
    );
}
