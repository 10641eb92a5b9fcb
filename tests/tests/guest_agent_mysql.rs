//! End to end through Debian's real `qemu-ga` on MySQL 9.7 (GTID on; `lock-mode = auto` picks
//! FTWRL): the datadir and binlogs live on a loop-mounted ext4 mounted INSIDE the MySQL chroot, so
//! qemu-ga freezes the mount's host path while the chrooted mysqld uses the chroot path. A copy of
//! the image taken while frozen is booted by a second chrooted mysqld and checked (the rig is
//! `harness::guest_agent`'s). Only the test's own loop mounts are frozen or unmounted, every one is
//! thawed and unmounted on every path, and no directory under the chroot is deleted while anything
//! is still mounted below it.
#![allow(clippy::unwrap_used)]

use harness::guest_agent::{machine_cannot_loop_mount, Hook, Rig, ServerSetup};
use harness::{matrix, Flavour};

/// The server under test.
const FLAVOUR: Flavour = Flavour::MySql97;
/// The original server: binlogs named relative to the datadir (binlog.index then says
/// `./binlog.000002`), so the index stays right wherever a copy is mounted; GTID mode on. The
/// server booted on a copy: the same binlog and GTID settings and another server id.
const SETUP: ServerSetup = ServerSetup {
    flavour: FLAVOUR,
    server_args: &[
        "--log-bin=binlog",
        "--server-id=1",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
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
    // No lock-mode setting: auto must pick FTWRL on MySQL.
    let mut rig = Rig::new(SETUP, "", Hook::Project);
    rig.assert_a_snapshot_is_consistent(test, "the MySQL ftwrl snapshot", |info| {
        assert_eq!(
            info["lock"]["mode"], "ftwrl",
            "auto must pick FTWRL on MySQL"
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
