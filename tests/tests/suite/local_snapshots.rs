//! `mysql-snapshot-freeze --run -- COMMAND`: a snapshot tool run on the machine itself (btrfs,
//! LVM, ZFS, a cloud CLI) with the lock held around it. Each test runs a real command under a real
//! lock on a private MariaDB: what the command sees (writes blocked, the info file `held`, its
//! environment), what the exit status says (the command's failure, a refused freeze, a lock that
//! ended under the command), `--fsfreeze` on a loop mount this test made (never another
//! filesystem), and a btrfs snapshot taken under a mixed InnoDB/MyISAM load that starts as a
//! consistent server matching its info file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use harness::loopfs::{install_datadir, machine_cannot_loop_mount, FreezeWindow, LoopMount};
use harness::{assert_nothing_left, signal, text, wait_until, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;

/// Starts `freeze --run -- sh -c SCRIPT` for `sandbox` (plus `extra` freeze options), its output
/// captured.
fn start_run(sandbox: &Sandbox, extra: &[&str], script: &str) -> Child {
    sandbox
        .command("freeze")
        .arg("--run")
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A directory for the command's files: `started` and `done` marks, `go` from the test.
struct Marks(TempDir);

impl Marks {
    fn new() -> Marks {
        Marks(TempDir::new("marks"))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    /// Shell words that make the command wait for the test's `go` (at most 60 s).
    fn wait_for_go(&self) -> String {
        format!(
            "i=0; while [ ! -e '{go}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
            go = self.path("go").display()
        )
    }
    fn wait_for(&self, name: &str) {
        assert!(
            wait_until(Duration::from_secs(60), || self.path(name).exists()),
            "the command never wrote `{name}`"
        );
    }
    /// A command that says `started`, then waits for `go` and exits 0.
    fn started_then_go(&self) -> String {
        format!(
            "touch '{}'; {}; exit 0",
            self.path("started").display(),
            self.wait_for_go()
        )
    }
    /// A command that writes its PID to `pid`, says `started`, and sleeps a minute.
    fn started_then_sleep(&self) -> String {
        format!(
            "echo $$ > '{}'; touch '{}'; exec sleep 60",
            self.path("pid").display(),
            self.path("started").display()
        )
    }
    fn go(&self) {
        fs::write(self.path("go"), "").unwrap();
    }
    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

/// Asserts that freeze's stderr (its log) says `needle`.
fn assert_says(out: &Output, needle: &str) {
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "freeze must say {needle:?}: {}",
        text(out)
    );
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn a_command_run_under_the_lock_sees_writes_blocked_and_the_copy_says_held() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let marks = Marks::new();
    let script = format!(
        "cat \"$MYSQL_SNAPSHOT_INFO_FILE\" > '{seen}'; printf %s \"$MYSQL_SNAPSHOT_LOCK_MODE\" > '{mode}'; \
         echo to-stdout; echo to-stderr >&2; touch '{started}'; {wait}; exit 0",
        seen = marks.path("seen.json").display(),
        mode = marks.path("mode").display(),
        started = marks.path("started").display(),
        wait = marks.wait_for_go()
    );
    let begun = Instant::now();
    let child = start_run(&sandbox, &[], &script);
    marks.wait_for("started");
    let locked_at = Instant::now();
    assert!(
        server.writes_blocked(),
        "writes go through while the command runs: no lock around it"
    );
    let state = sandbox.state().unwrap();
    assert_eq!(state["status"], "acquired", "{state}");
    marks.go();
    let out = finish(child);
    let under_lock = locked_at.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("to-stdout"),
        "the command's stdout: {}",
        text(&out)
    );
    assert!(
        stderr.contains("to-stderr"),
        "the command's stderr: {}",
        text(&out)
    );
    // What the command found at the path in its environment: the held record of this snapshot.
    let seen: serde_json::Value = serde_json::from_str(&marks.read("seen.json"))
        .unwrap_or_else(|e| panic!("MYSQL_SNAPSHOT_INFO_FILE did not lead to the info file: {e}"));
    assert_eq!(seen["consistent"], true, "{seen}");
    assert_eq!(seen["state"], "held", "{seen}");
    assert!(seen["binlog"]["file"].is_string(), "{seen}");
    assert_eq!(
        marks.read("mode"),
        state["lock_mode"].as_str().unwrap(),
        "MYSQL_SNAPSHOT_LOCK_MODE must name the mode held"
    );
    // After the release: the same rules as every copy — released, the held record kept.
    let held = sandbox.last_held();
    assert_eq!(held["snapshot_id"], seen["snapshot_id"]);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    eprintln!(
        "figures: run total {} ms, command under the lock ~{} ms (mode {})",
        begun.elapsed().as_millis(),
        under_lock.as_millis(),
        marks.read("mode")
    );
}

#[test]
fn a_failing_command_exits_with_its_own_status_and_an_unrunnable_one_with_125() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let out = finish(start_run(&sandbox, &[], "exit 7"));
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's own status, the lock held: {}",
        text(&out)
    );
    sandbox.last_held();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    // Killed by a signal of its own: 128 + 9, as a shell says it.
    let out = finish(start_run(&sandbox, &[], "kill -KILL $$"));
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    let out = sandbox
        .command("freeze")
        .args(["--run", "--", "/nonexistent/snapshot-tool"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert_says(&out, "the command was not run");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_refused_freeze_never_runs_the_command_and_exits_125() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "snapshot-timeout = 5");
    drop(server); // unreachable from now on
    let marks = Marks::new();
    let script = format!("touch '{}'", marks.path("ran").display());
    let out = finish(start_run(&sandbox, &[], &script));
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        !marks.path("ran").exists(),
        "the command ran although no lock was taken"
    );
    assert_says(&out, "the command was not run");
}

#[test]
fn a_lock_lost_while_the_command_runs_exits_124_and_the_copy_says_lost() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let marks = Marks::new();
    let script = marks.started_then_go();
    let child = start_run(&sandbox, &[], &script);
    marks.wait_for("started");
    let id = sandbox.state().unwrap()["connection_id"].as_u64().unwrap();
    server.conn().query_drop(format!("KILL {id}")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !server.writes_blocked()),
        "killing the locker's connection did not end the lock"
    );
    marks.go();
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(124),
        "a command that succeeded without the lock must not exit 0: {}",
        text(&out)
    );
    assert_says(&out, "NOT consistent");
    // The locker marked `released` before it tried to release, found the connection gone, and
    // then marks `lost` through a detached writer (it does not wait for a mark once the lock is
    // gone): the mark lands shortly after.
    assert!(
        wait_until(Duration::from_secs(5), || sandbox.info()["state"] == "lost"),
        "the live info file never said lost: {}",
        sandbox.info()
    );
    sandbox.assert_copy_says("lost", "connection");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

#[test]
fn a_command_outliving_max_lock_time_is_killed_after_the_release_and_exits_124() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "max-lock-time = 2");
    let marks = Marks::new();
    let script = marks.started_then_sleep();
    let begun = Instant::now();
    let out = finish(start_run(&sandbox, &[], &script));
    let took = begun.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let pid: u32 = marks.read("pid").trim().parse().unwrap();
    assert!(
        !harness::alive(pid),
        "the command outlived the lock and was left running"
    );
    sandbox.assert_copy_says("released", "max-lock-time");
    assert_says(&out, "NOT consistent");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    eprintln!(
        "figures: max-lock-time 2 s, freeze --run ended after {} ms",
        took.as_millis()
    );
}

#[test]
fn a_sigterm_to_freeze_reaches_the_command_then_releases() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let marks = Marks::new();
    let script = format!(
        "trap \"touch '{got}'; exit 3\" TERM; touch '{started}'; while :; do sleep 0.05; done",
        got = marks.path("got-term").display(),
        started = marks.path("started").display()
    );
    let child = start_run(&sandbox, &[], &script);
    marks.wait_for("started");
    assert!(server.writes_blocked());
    signal(child.id(), "TERM");
    let out = finish(child);
    assert!(
        marks.path("got-term").exists(),
        "the command never got the SIGTERM"
    );
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out));
    sandbox.last_held();
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
}

/// True if a write to `mount` completes within `limit` (a frozen filesystem blocks it; the thread
/// then finishes once the mount is thawed).
fn writable_within(mount: &Path, limit: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    let probe = mount.join("probe");
    thread::spawn(move || {
        let _ = tx.send(fs::write(probe, "x").is_ok());
    });
    rx.recv_timeout(limit).unwrap_or(false)
}

/// True if `fsfreeze --freeze` is refused on `mount` as already frozen (EBUSY). If it was not
/// frozen, the probe has just frozen it: it is thawed again at once.
fn frozen(mount: &Path) -> bool {
    let out = Command::new("fsfreeze")
        .arg("--freeze")
        .arg(mount)
        .output()
        .unwrap();
    if out.status.success() {
        let _ = Command::new("fsfreeze")
            .arg("--unfreeze")
            .arg(mount)
            .status();
        return false;
    }
    String::from_utf8_lossy(&out.stderr).contains("busy")
}

/// A `freeze --run --fsfreeze` on a loop mount this test made, its command started (it touched
/// `started`) under the lock with the mount frozen. Fields drop in order: the freeze window
/// (thaws) before the mount (unmounts) before its directory.
struct FrozenRun {
    child: Child,
    window: FreezeWindow,
    mount: LoopMount,
    marks: Marks,
    sandbox: Sandbox,
    server: Server,
    _dir: TempDir,
}

impl FrozenRun {
    /// `None` (after a loud skip) on a machine that cannot loop-mount. `script` gets the marks
    /// and must touch `started`.
    fn start(test: &str, script: impl Fn(&Marks) -> String) -> Option<FrozenRun> {
        if machine_cannot_loop_mount(test) {
            return None;
        }
        let server = Server::start();
        let sandbox = Sandbox::new(&server, "");
        let dir = TempDir::new("fsfreeze");
        let mount = LoopMount::create(&dir.path().join("img"), &dir.path().join("mnt"), 64);
        let window = mount.freeze_window();
        assert!(writable_within(&mount.mountpoint, Duration::from_secs(5)));
        let marks = Marks::new();
        let mnt = mount.mountpoint.to_string_lossy().into_owned();
        let child = start_run(&sandbox, &["--fsfreeze", &mnt], &script(&marks));
        marks.wait_for("started");
        assert!(server.writes_blocked(), "no lock around the command");
        assert!(
            frozen(&mount.mountpoint),
            "the mount is not frozen while the command runs"
        );
        Some(FrozenRun {
            child,
            window,
            mount,
            marks,
            sandbox,
            server,
            _dir: dir,
        })
    }
}

#[test]
fn fsfreeze_freezes_the_mount_only_while_the_command_runs() {
    let Some(run) = FrozenRun::start(
        "fsfreeze_freezes_the_mount_only_while_the_command_runs",
        |marks| marks.started_then_go(),
    ) else {
        return;
    };
    run.marks.go();
    let out = finish(run.child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        writable_within(&run.mount.mountpoint, Duration::from_secs(5)),
        "the mount stays frozen after the command"
    );
    drop(run.window);
    run.sandbox.last_held();
    assert_nothing_left(&run.server, &run.sandbox, Duration::from_secs(5));
    // A path that is no mount point is refused before any lock.
    let out = run
        .sandbox
        .command("freeze")
        .args(["--run", "--fsfreeze"])
        .arg(run.marks.path(""))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_says(&out, "is not a mount point");
    // A filesystem holding the run directory must stay writable: refused before any lock.
    let on_mount = Sandbox::new(
        &run.server,
        &format!("run-dir = {}", run.mount.mountpoint.join("run").display()),
    );
    let out = on_mount
        .command("freeze")
        .args(["--run", "--fsfreeze"])
        .arg(&run.mount.mountpoint)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_says(&out, "holds the run directory");
}

#[test]
fn a_freeze_killed_while_the_command_runs_leaves_no_filesystem_frozen_and_no_lock() {
    let Some(mut run) = FrozenRun::start(
        "a_freeze_killed_while_the_command_runs_leaves_no_filesystem_frozen_and_no_lock",
        |marks| marks.started_then_sleep(),
    ) else {
        return;
    };
    let command_pid: u32 = run.marks.read("pid").trim().parse().unwrap();
    let killed_at = Instant::now();
    signal(run.child.id(), "KILL");
    // Not its output: the command (alive) holds the pipes open.
    run.child.wait().unwrap();
    let thawed = writable_within(&run.mount.mountpoint, Duration::from_secs(10));
    let thaw_took = killed_at.elapsed();
    signal(command_pid, "KILL");
    assert!(
        thawed,
        "a freeze killed with SIGKILL left the filesystem frozen"
    );
    drop(run.window);
    assert_nothing_left(&run.server, &run.sandbox, Duration::from_secs(5));
    run.sandbox.assert_copy_says("released", "freeze ended");
    eprintln!(
        "figures: the mount was writable again {} ms after freeze's SIGKILL",
        thaw_took.as_millis()
    );
}

/// A mixed write load on `server` until `stop`: InnoDB inserts and MyISAM inserts and updates.
fn mixed_load(server: &Server, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<u64>> {
    let statements = [
        "INSERT INTO snap.inno (v) VALUES (1)",
        "INSERT INTO snap.mylog (v) VALUES (1)",
        "UPDATE snap.my SET v = v + 1 WHERE id = 1",
    ];
    statements
        .into_iter()
        .map(|statement| {
            let mut conn = server.conn();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    conn.query_drop(statement).unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect()
}

/// The mixed load started, once it has brought `snap.inno` past `rows`: its stop flag and threads.
fn load_until(server: &Server, rows: u64) -> (Arc<AtomicBool>, Vec<thread::JoinHandle<u64>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = mixed_load(server, stop.clone());
    assert!(
        wait_until(Duration::from_secs(20), || figures(&mut server.conn()).0
            > rows),
        "the load did not get going"
    );
    (stop, load)
}

/// Row counts and sums that must match between the live server at the lock and the snapshot.
fn figures(conn: &mut mysql::Conn) -> (u64, u64, u64) {
    let inno: u64 = conn
        .query_first("SELECT COUNT(*) FROM snap.inno")
        .unwrap()
        .unwrap();
    let mylog: u64 = conn
        .query_first("SELECT COUNT(*) FROM snap.mylog")
        .unwrap()
        .unwrap();
    let my: u64 = conn
        .query_first("SELECT v FROM snap.my WHERE id = 1")
        .unwrap()
        .unwrap();
    (inno, mylog, my)
}

/// A private MariaDB whose datadir lies on a btrfs subvolume (`volume`/data) of a loop mount
/// this test made, with the info file on the same subvolume (the snapshot carries it), the
/// binary log on, and the tables of `figures`. Fields drop in order: the servers before the mount
/// before its directory.
struct BtrfsServer {
    server: Server,
    sandbox: Sandbox,
    volume: PathBuf,
    mount: LoopMount,
    _dir: TempDir,
}

impl BtrfsServer {
    /// `None` (after a loud skip) on a machine that cannot loop-mount.
    fn start(test: &str, settings: &str) -> Option<BtrfsServer> {
        if machine_cannot_loop_mount(test) {
            return None;
        }
        let dir = TempDir::new("btrfs");
        let mount = LoopMount::create_btrfs(&dir.path().join("img"), &dir.path().join("mnt"), 512);
        let volume = mount.mountpoint.join("db");
        btrfs(&["subvolume", "create"], &[&volume]);
        let datadir = volume.join("data");
        install_datadir(&datadir);
        let server = Server::start_on(&datadir, &["--log-bin=binlog", "--server-id=1"]);
        server
            .conn()
            .query_drop(
                "CREATE DATABASE snap;
                 CREATE TABLE snap.inno (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;
                 CREATE TABLE snap.mylog (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=MyISAM;
                 CREATE TABLE snap.my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM;
                 INSERT INTO snap.my VALUES (1, 0);",
            )
            .unwrap();
        let info_file = volume.join("snapshot-info.json");
        let sandbox = Sandbox::new(
            &server,
            &format!("info-file = {}\n{settings}", info_file.display()),
        );
        Some(BtrfsServer {
            server,
            sandbox,
            volume,
            mount,
            _dir: dir,
        })
    }

    /// Runs `freeze --run -- btrfs subvolume snapshot -r` of the volume to `name` under a mixed
    /// load (stopped after the run); what the live server held while the command ran (writes
    /// blocked: what was committed at the lock), and the number of writes the load made.
    fn snapshot_under_load(&self, name: &str) -> ((u64, u64, u64), u64) {
        let (stop, load) = load_until(&self.server, figures(&mut self.server.conn()).0 + 200);
        let marks = Marks::new();
        let script = format!(
            "btrfs subvolume snapshot -r '{volume}' '{snapshot}' && touch '{snapped}' && {wait}",
            volume = self.volume.display(),
            snapshot = self.mount.mountpoint.join(name).display(),
            snapped = marks.path("snapped").display(),
            wait = marks.wait_for_go()
        );
        let child = start_run(&self.sandbox, &[], &script);
        marks.wait_for("snapped");
        assert!(self.server.writes_blocked(), "no lock around the snapshot");
        let at_lock = figures(&mut self.server.conn());
        marks.go();
        let out = finish(child);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        stop.store(true, Ordering::Relaxed);
        let writes = load.into_iter().map(|t| t.join().unwrap()).sum();
        (at_lock, writes)
    }

    /// The read-only snapshot `name`, made writable as `copy` and started as a server of its own
    /// (crash recovery included); the info file it carries.
    fn start_copy(&self, name: &str, copy: &str) -> (Server, serde_json::Value) {
        let copy = self.mount.mountpoint.join(copy);
        btrfs(
            &["subvolume", "snapshot"],
            &[&self.mount.mountpoint.join(name), &copy],
        );
        let info: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(copy.join("snapshot-info.json")).unwrap())
                .unwrap();
        assert_eq!(info["consistent"], true, "the snapshot's info file: {info}");
        assert_eq!(info["state"], "held", "{info}");
        // The binary log in the snapshot ends exactly where the info file says.
        let binlog = info["binlog"]["file"].as_str().unwrap();
        let position = info["binlog"]["position"].as_u64().unwrap();
        let size = fs::metadata(copy.join("data").join(binlog)).unwrap().len();
        assert_eq!(
            size, position,
            "the snapshot's {binlog} is {size} bytes; the info file says it ended at {position}"
        );
        let server = Server::start_on(&copy.join("data"), &["--log-bin=binlog", "--server-id=2"]);
        (server, info)
    }
}

/// `btrfs -q ARGS PATHS`, which must succeed.
fn btrfs(args: &[&str], paths: &[&Path]) {
    let status = Command::new("btrfs")
        .arg("-q")
        .args(args)
        .args(paths)
        .status()
        .unwrap();
    assert!(status.success(), "btrfs {args:?} {paths:?} failed");
}

#[test]
fn a_btrfs_snapshot_taken_under_the_lock_starts_consistent_and_matches_its_info_file() {
    let Some(btrfs) = BtrfsServer::start(
        "a_btrfs_snapshot_taken_under_the_lock_starts_consistent_and_matches_its_info_file",
        "",
    ) else {
        return;
    };
    // A subvolume has a device number of its own but is no mount point: --fsfreeze refuses it
    // (FIFREEZE on it would freeze the whole btrfs).
    let out = btrfs
        .sandbox
        .command("freeze")
        .args(["--run", "--fsfreeze"])
        .arg(&btrfs.volume)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_says(&out, "is not a mount point");
    let (at_lock, writes) = btrfs.snapshot_under_load("snap-ro");
    let (restored, info) = btrfs.start_copy("snap-ro", "snap-rw");
    let mut conn = restored.conn();
    let in_snapshot = figures(&mut conn);
    assert_eq!(
        in_snapshot, at_lock,
        "the snapshot's rows (inno, mylog, my.v) differ from what was committed at the lock"
    );
    for table in ["snap.my", "snap.mylog"] {
        let row: mysql::Row = conn
            .query_first(format!("CHECK TABLE {table}"))
            .unwrap()
            .unwrap();
        let msg: String = row.get(3).unwrap();
        assert_eq!(msg, "OK", "CHECK TABLE {table} on the snapshot: {row:?}");
    }
    let gtid: String = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(gtid.as_str()),
        info["gtid"]["binlog_pos"].as_str(),
        "the snapshot's GTID position vs its info file"
    );
    eprintln!(
        "figures: snapshot rows inno={} mylog={} my.v={} at {}:{}; {writes} writes in all",
        at_lock.0, at_lock.1, at_lock.2, info["binlog"]["file"], info["binlog"]["position"]
    );
}

/// `rotate-binlog = on` in `mode`: a snapshot under load, more writes (updates and deletes too)
/// after it; the snapshot restored, then the live server's binary logs from the one the info file
/// names replayed into it, gives exactly the live server's rows.
fn point_in_time_recovery_from_a_rotated_snapshot(test: &str, mode: &str) {
    let Some(btrfs) = BtrfsServer::start(test, &format!("rotate-binlog = on\nlock-mode = {mode}"))
    else {
        return;
    };
    let server = &btrfs.server;
    let (at_lock, _) = btrfs.snapshot_under_load("snap-ro");
    // After the snapshot: the load again, then updates and deletes.
    let (stop, load) = load_until(server, at_lock.0 + 200);
    stop.store(true, Ordering::Relaxed);
    let after: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    server
        .conn()
        .query_drop(
            "UPDATE snap.inno SET v = v + id WHERE id % 3 = 0;
             DELETE FROM snap.inno WHERE id % 7 = 0;
             DELETE FROM snap.mylog WHERE id % 5 = 0;",
        )
        .unwrap();
    let live = (figures(&mut server.conn()), checksums(&mut server.conn()));
    let (restored, info) = btrfs.start_copy("snap-ro", "snap-rw");
    let rotate_ms = info["lock"]["binlog_rotated_ms"].as_u64();
    assert!(
        rotate_ms.is_some(),
        "the info file does not say the binary log was rotated: {info}"
    );
    assert_eq!(
        figures(&mut restored.conn()),
        at_lock,
        "the snapshot itself"
    );
    // The info file names the fresh binary log; the one before it closed at the snapshot: the
    // live server's copy of it never grew after.
    let next = info["binlog"]["file"].as_str().unwrap().to_string();
    let live_data = btrfs.volume.join("data");
    let names: Vec<String> = server
        .conn()
        .query_map("SHOW BINARY LOGS", |row: mysql::Row| {
            row.get::<String, _>(0).unwrap()
        })
        .unwrap();
    let at = names.iter().position(|n| *n == next).unwrap_or_else(|| {
        panic!("the info file names {next}, which the live server does not have: {names:?}")
    });
    assert!(
        at > 0,
        "{next} is the first binary log: nothing was rotated"
    );
    let closed = &names[at - 1];
    let snap_data = btrfs.mount.mountpoint.join("snap-ro").join("data");
    assert_eq!(
        fs::metadata(snap_data.join(closed)).unwrap().len(),
        fs::metadata(live_data.join(closed)).unwrap().len(),
        "{closed} grew after the snapshot: it did not end there"
    );
    // Replay what came after: every binary log from `next` on, as they are on the live server.
    let replay: Vec<PathBuf> = names[at..].iter().map(|n| live_data.join(n)).collect();
    let events = Command::new("mariadb-binlog")
        .args(&replay)
        .output()
        .unwrap();
    assert!(
        events.status.success(),
        "mariadb-binlog: {}",
        String::from_utf8_lossy(&events.stderr)
    );
    let mut client = Command::new("mariadb")
        .arg("-uroot")
        .arg(format!("--socket={}", restored.socket.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        client
            .stdin
            .take()
            .unwrap()
            .write_all(&events.stdout)
            .unwrap();
    }
    let applied = client.wait_with_output().unwrap();
    assert!(
        applied.status.success(),
        "the replay failed: {}",
        text(&applied)
    );
    let mut conn = restored.conn();
    assert_eq!(
        (figures(&mut conn), checksums(&mut conn)),
        live,
        "restore + replay from {next} differs from the live server"
    );
    eprintln!(
        "figures: {mode}: FLUSH BINARY LOGS under the lock took {} ms; snapshot at {next}:{} (inno={}), {after} writes and the updates/deletes after it replayed from {} file(s): rows match",
        rotate_ms.unwrap_or(0),
        info["binlog"]["position"],
        at_lock.0,
        replay.len()
    );
}

/// `CHECKSUM TABLE` of the three tables.
fn checksums(conn: &mut mysql::Conn) -> Vec<u64> {
    conn.query_map(
        "CHECKSUM TABLE snap.inno, snap.mylog, snap.my",
        |row: mysql::Row| row.get::<u64, _>(1).unwrap(),
    )
    .unwrap()
}

#[test]
fn with_rotate_binlog_a_snapshot_plus_the_later_binlogs_restores_the_live_rows_backup_stage() {
    point_in_time_recovery_from_a_rotated_snapshot(
        "with_rotate_binlog_a_snapshot_plus_the_later_binlogs_restores_the_live_rows_backup_stage",
        "backup-stage",
    );
}

#[test]
fn with_rotate_binlog_a_snapshot_plus_the_later_binlogs_restores_the_live_rows_ftwrl() {
    point_in_time_recovery_from_a_rotated_snapshot(
        "with_rotate_binlog_a_snapshot_plus_the_later_binlogs_restores_the_live_rows_ftwrl",
        "ftwrl",
    );
}

#[test]
fn on_mysql_rotate_binlog_under_ftwrl_names_the_fresh_binary_log_in_the_info_file() {
    if !harness::matrix::require(harness::Flavour::MySql97) {
        return;
    }
    let server = Server::start_flavour(harness::Flavour::MySql97, &[]);
    let sandbox = Sandbox::new(&server, "rotate-binlog = on");
    let before: Vec<String> = server
        .conn()
        .query_map("SHOW BINARY LOGS", |row: mysql::Row| {
            row.get::<String, _>(0).unwrap()
        })
        .unwrap();
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let info = sandbox.info();
    assert_eq!(info["lock"]["mode"], "ftwrl", "{info}");
    let rotate_ms = info["lock"]["binlog_rotated_ms"].as_u64();
    assert!(rotate_ms.is_some(), "not rotated: {info}");
    let after: Vec<String> = server
        .conn()
        .query_map("SHOW BINARY LOGS", |row: mysql::Row| {
            row.get::<String, _>(0).unwrap()
        })
        .unwrap();
    assert_eq!(after.len(), before.len() + 1, "{before:?} -> {after:?}");
    assert_eq!(
        info["binlog"]["file"].as_str(),
        after.last().map(String::as_str),
        "the info file must name the fresh binary log: {info}"
    );
    assert!(server.writes_blocked(), "the lock is not held");
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "figures: MySQL 9.7 ftwrl: FLUSH BINARY LOGS under the lock took {} ms",
        rotate_ms.unwrap_or(0)
    );
}
