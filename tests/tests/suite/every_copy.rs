//! What a copy of the disk says about itself, whatever the caller does around our hooks: the info
//! file says `consistent: true` (with the coordinates) only while the lock is held, and every
//! other moment `consistent: false` with why — a freeze in progress, refused, released, lost —
//! the last held record kept only under `last_consistent`. The callers' own fallbacks (a copy
//! after a failed freeze, no thaw, a late post-script) are replayed in `cloud_agents`,
//! `cloud_aws` and `guest_agent`; this module checks the record itself and its order against
//! the lock, on a private MariaDB.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use harness::{assert_nothing_left, signal, text, wait_until, Sandbox, Server};
use mysql::prelude::Queryable;

/// A write the lock blocks, and what the info file said the instant it went through (read on the
/// writer's own thread, before anything else runs): a lock released before its mark would show
/// here as `held`.
fn write_then_read_info(server: &Server, sandbox: &Sandbox) -> mpsc::Receiver<serde_json::Value> {
    let mut conn = server.conn();
    let info_file = sandbox.info_file.clone();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        conn.query_drop("INSERT INTO snap.inno (v) VALUES (777)")
            .unwrap();
        let text = std::fs::read_to_string(&info_file).unwrap_or_default();
        let _ = tx.send(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
    });
    assert!(
        wait_until(Duration::from_secs(5), || !server
            .statements_like("VALUES (777)")
            .is_empty()),
        "the write did not start"
    );
    assert!(
        server.writes_blocked(),
        "the lock does not block the write it should"
    );
    rx
}

/// A snapshot frozen and thawed, as the last good one leaves the disk; its held record.
fn a_snapshot_before(sandbox: &Sandbox) -> serde_json::Value {
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let held = sandbox.info();
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    held
}

/// A 20 s MyISAM write (no quiet moment while it runs), running once this returns.
fn long_myisam_write(server: &Server) -> thread::JoinHandle<()> {
    let mut conn = server.conn();
    let write = thread::spawn(move || {
        let _ = conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    });
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    write
}

fn end_long_write(server: &Server, write: thread::JoinHandle<()>) {
    for id in server.statements_like("SLEEP(20)") {
        let _ = server.conn().query_drop(format!("KILL QUERY {id}"));
    }
    write.join().unwrap();
}

/// What `thaw --status --prometheus` says of a copy taken now.
fn copy_consistent_metric(sandbox: &Sandbox) -> String {
    let out = sandbox
        .command("thaw")
        .args(["--status", "--prometheus"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("mysql_snapshot_copy_consistent "))
        .unwrap_or_else(|| panic!("no mysql_snapshot_copy_consistent sample:\n{text}"))
        .to_string()
}

/// `thaw --status`: its exit code and what it printed.
fn status(sandbox: &Sandbox) -> (Option<i32>, String) {
    let out = sandbox.command("thaw").arg("--status").output().unwrap();
    (out.status.code(), text(&out))
}

#[test]
fn a_copy_says_held_while_locked_and_released_before_the_first_write_after_thaw() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let held = sandbox.info();
    assert_eq!(held["format"], 2, "{held}");
    assert_eq!(held["consistent"], true, "{held}");
    assert_eq!(held["state"], "held", "{held}");
    assert!(held["binlog"]["position"].as_u64().is_some(), "{held}");
    let state = sandbox.state().unwrap();
    assert_eq!(
        held["snapshot_id"], state["started_at_ms"],
        "the record names its snapshot"
    );

    let seen = write_then_read_info(&server, &sandbox);
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let at_first_write = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        at_first_write["state"], "released",
        "the first write after thaw must find the info file marked: {at_first_write}"
    );
    let after = sandbox.assert_copy_says("released", "thaw's request");
    assert_eq!(
        after["last_consistent"], held,
        "the held record is kept whole, for reference"
    );
}

#[test]
fn a_refused_freeze_marks_every_later_copy_refused_without_waiting_for_a_thaw() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 3");
    let held = a_snapshot_before(&sandbox);
    // No quiet moment within snapshot-timeout.
    let write = long_myisam_write(&server);
    let out = sandbox.freeze();
    assert!(!out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stderr);
    // The refusal as freeze reported it: its `event=refused` line.
    let printed = printed
        .lines()
        .find_map(|l| l.strip_prefix("mysql-snapshot-freeze: event=refused "))
        .unwrap_or_else(|| panic!("freeze printed no error: {printed}"))
        .to_string();
    // No thaw has come (libvirt, OpenStack and AWS send none): the mark is already there, and
    // nothing of ours is left to change it.
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    let refused = sandbox.assert_copy_says("refused", &printed);
    assert_eq!(refused["last_consistent"], held);
    let bytes = std::fs::read(&sandbox.info_file).unwrap();

    // Azure's post-script and Proxmox's thaw come after a failed freeze: a clean no-op that
    // leaves the mark as it is.
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&sandbox.info_file).unwrap(),
        bytes,
        "a thaw after a refused freeze must not touch the info file"
    );
    end_long_write(&server, write);
}

#[test]
fn a_lock_ended_by_max_lock_time_is_marked_released_before_the_first_write() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "max-lock-time = 3");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let seen = write_then_read_info(&server, &sandbox);
    // No thaw (AWS runs no post-script after its own timeout; a lost thaw): max-lock-time ends it.
    let at_first_write = seen.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        at_first_write["state"], "released",
        "the locker must mark the info file before its own release: {at_first_write}"
    );
    sandbox.assert_copy_says("released", "max-lock-time (3 s)");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    // The late thaw reports the loss and leaves the mark.
    let out = sandbox.thaw("thaw");
    assert!(!out.status.success(), "{}", text(&out));
    sandbox.assert_copy_says("released", "max-lock-time");
}

/// The one window no process of ours can close: a locker killed outright (SIGKILL, the OOM
/// killer, a restart of its agent's cgroup) loses its lock with its connection, and no process of
/// the snapshot is left to mark the file. thaw (or the next freeze) marks it `lost`.
#[test]
fn a_locker_killed_while_holding_is_marked_lost_by_the_thaw_that_finds_it() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let (code, said) = status(&sandbox);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("a copy taken now: consistent: held since"),
        "{said}"
    );
    assert_eq!(
        copy_consistent_metric(&sandbox),
        "mysql_snapshot_copy_consistent 1.000"
    );
    let pid = sandbox.locker_pid().unwrap();
    signal(pid, "KILL");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    // Monitoring sees the lie the file now tells, until thaw or the next freeze marks it.
    let (code, said) = status(&sandbox);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("no lock of that snapshot is held"), "{said}");
    assert_eq!(
        copy_consistent_metric(&sandbox),
        "mysql_snapshot_copy_consistent 0.000"
    );
    let out = sandbox.thaw("thaw");
    assert!(!out.status.success(), "{}", text(&out));
    sandbox.assert_copy_says("lost", "died while holding the lock");
    let (_, said) = status(&sandbox);
    assert!(
        said.contains("a copy taken now: not consistent: lost since"),
        "{said}"
    );
}

/// A held record left behind by a locker that died while holding (no thaw came) is a lie on disk.
/// The next freeze marks it `freezing` before its locker may lock: by the time the locker waits
/// for a quiet moment, a copy says no lock, and no lock is held.
#[test]
fn the_next_freeze_marks_a_held_record_left_by_a_dead_locker_freezing_before_its_locker_may_lock() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 60");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    signal(sandbox.locker_pid().unwrap(), "KILL");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    assert_eq!(
        sandbox.info()["state"],
        "held",
        "the lie this test starts from"
    );
    let write = long_myisam_write(&server);
    let mut freeze = sandbox.command("freeze").arg("freeze").spawn().unwrap();
    // The locker looks for a quiet moment only after `go`.
    let mut log = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            log = sandbox.log();
            log.contains("event=waiting not a quiet moment")
        }),
        "freeze's locker did not start waiting for a quiet moment: {log}"
    );
    let info = sandbox.info();
    assert_eq!(info["state"], "freezing", "{info:#}");
    assert_eq!(info["consistent"], false, "{info:#}");
    assert!(
        info.get("binlog").is_none(),
        "no coordinates at the top: {info:#}"
    );
    assert!(!server.writes_blocked(), "no lock may be held yet");
    signal(freeze.id(), "TERM");
    freeze.wait().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    sandbox.assert_copy_says("refused", "");
    end_long_write(&server, write);
}

/// freeze killed at its caller's deadline while it waits (AWS's 10 s, KubeVirt's 5 s, Google's
/// SIGKILL): its locker stops, and the copy the caller then takes says a freeze was under way —
/// never the last snapshot's coordinates.
#[test]
fn a_freeze_killed_at_its_callers_deadline_leaves_a_copy_that_says_no_lock() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 60");
    a_snapshot_before(&sandbox);
    let write = long_myisam_write(&server);
    let mut freeze = sandbox.command("freeze").arg("freeze").spawn().unwrap();
    // The locker waits for a quiet moment only once it has freeze's go: the run is this
    // snapshot's. (The info file's `freezing` comes before the go: a freeze killed between the
    // two leaves that mark, which says no lock is held, for the next freeze or thaw to replace.)
    let mut log = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            log = sandbox.log();
            log.contains("event=waiting not a quiet moment")
        }),
        "freeze did not start waiting: {log}"
    );
    freeze.kill().unwrap();
    freeze.wait().unwrap();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    // freeze is gone: its locker, the last of the snapshot, says so before it ends.
    sandbox.assert_copy_says("refused", "freeze ended without reporting success");
    end_long_write(&server, write);
}

/// KubeVirt before 1.6 gives the guest agent 5 s. With the settings docs/platforms.md gives for
/// it (`snapshot-timeout = 2`, `lock-wait-timeout = 1`), a freeze that finds no quiet moment is
/// refused through the real qemu-ga before that deadline, cleanly (no lock, no locker), and the
/// copy KubeVirt's fallback then takes says `refused`.
#[test]
fn behind_a_long_write_a_kubevirt_freeze_is_refused_within_its_5_s_deadline_and_says_so() {
    use harness::guest_agent::{machine_cannot_loop_mount, Hook, Rig, ServerSetup, Snapshot};
    const TEST: &str =
        "behind_a_long_write_a_kubevirt_freeze_is_refused_within_its_5_s_deadline_and_says_so";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let setup = ServerSetup {
        flavour: harness::Flavour::MariaDb1011,
        server_args: &["--log-bin=binlog", "--server-id=1"],
        copy_args: &["--log-bin=binlog", "--server-id=1"],
    };
    let mut rig = Rig::new(
        setup,
        "snapshot-timeout = 2\nlock-wait-timeout = 1\nlong-query-threshold = 0",
        Hook::Project,
    );
    // The window first: waiting for another test's window must not age the long write.
    let window = rig.mount.freeze_window();
    let write = long_myisam_write(&rig.server);
    let asked = std::time::Instant::now();
    let snapshot = rig.snapshot_in(&window);
    let took = asked.elapsed();
    drop(window);
    let Snapshot::Refused(desc) = snapshot else {
        panic!("a freeze behind a 20 s MyISAM write with snapshot-timeout = 2 was accepted");
    };
    assert!(desc.contains("fsfreeze hook has failed"), "{desc}");
    assert!(
        took < Duration::from_secs(5),
        "refused after {took:?}: KubeVirt < 1.6 would have given up at 5 s"
    );
    assert_nothing_left(&rig.server, &rig.sandbox, Duration::from_secs(10));
    harness::assert_copy_says(
        rig.info(),
        "refused",
        "no lock within snapshot-timeout (2 s)",
    );
    end_long_write(&rig.server, write);
}
