//! End-to-end snapshots through Debian's real `qemu-ga` for any server flavour: its QMP client,
//! the hook wrapper it runs, a write load, and the `Rig` that snapshots a loop mount and checks a
//! server booted on the copy. It only ever freezes the test's own loop mount (freeze-list with that
//! one mountpoint, never `guest-fsfreeze-freeze`), inside a `FreezeWindow` that thaws on every path.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::loopfs::{install_flavour_datadir, tail, FreezeWindow, LoopMount};
use crate::{bin_dir, matrix, text, wait_until, Flavour, Sandbox, Server, TempDir};

/// The info file's name, at the root of the loop mount so that a copy carries its own coordinates.
pub const INFO_NAME: &str = "snapshot-info.json";
/// Size of the sparse image; a datadir and its binlogs need well under a quarter of it.
pub const IMAGE_MIB: u64 = 512;
/// Where the hook wrapper records its calls and the hook's stderr (in the rig's host directory).
const HOOK_CALLS: &str = "calls.log";
const HOOK_STDERR: &str = "hook-stderr.log";
/// The hook directory the project's dispatcher reads in place of /etc/qemu/fsfreeze-hook.d, the
/// log it appends those hooks' output to, and where the rig's other hooks record their calls (all
/// in the rig's host directory, outside every mount).
const HOOK_DIR: &str = "fsfreeze-hook.d";
const HOOK_DIR_LOG: &str = "qga-fsfreeze-hook.log";
const OTHER_HOOK_CALLS: &str = "other-hooks.log";

pub use crate::loopfs::machine_cannot_loop_mount;

/// The server a rig snapshots: its flavour (the machine's own, or one in a chroot) and the
/// arguments of the original server and of the one booted on a copy.
#[derive(Clone, Copy)]
pub struct ServerSetup {
    pub flavour: Flavour,
    /// Binlogs must be named relative to the datadir (`--log-bin=binlog`), so that binlog.index
    /// stays right wherever a copy is mounted.
    pub server_args: &'static [&'static str],
    /// Should include `--myisam-recover-options=OFF`: a repair on open would hide a broken table
    /// from CHECK TABLE.
    pub copy_args: &'static [&'static str],
}

/// The machine's MariaDB, binlogs named relative to the datadir (so the index stays right
/// wherever a copy is mounted); the copy boots with the same settings.
pub const MARIADB: ServerSetup = ServerSetup {
    flavour: Flavour::MariaDb1011,
    server_args: &["--log-bin=binlog", "--server-id=1"],
    copy_args: &[
        "--log-bin=binlog",
        "--server-id=1",
        "--myisam-recover-options=OFF",
    ],
};

impl ServerSetup {
    /// The chroot the server runs in (`None`: the machine's own server).
    fn chroot(self) -> Option<&'static Path> {
        self.flavour.chroot().unwrap_or_else(|reason| {
            panic!(
                "the {} chroot is unavailable (tests call matrix::require first): {reason}",
                self.flavour.name()
            )
        })
    }

    /// The server variable holding the GTID state a snapshot records, and its key under `gtid`
    /// in the info file.
    fn gtid_state(self) -> (&'static str, &'static str) {
        if self.flavour.is_mysql() {
            ("@@GLOBAL.gtid_executed", "executed")
        } else {
            ("@@gtid_binlog_pos", "binlog_pos")
        }
    }

    /// The statement that shows the current binlog position.
    fn binlog_status(self) -> &'static str {
        if self.flavour.is_mysql() {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW BINLOG STATUS"
        }
    }
}

/// The tables the load writes: InnoDB and MyISAM, inserts and updates of existing rows.
pub fn schema() -> String {
    let counters: Vec<String> = (1..=20).map(|id| format!("({id}, 0)")).collect();
    let padded: Vec<String> = (1..=20).map(|id| format!("({id}, 0, '')")).collect();
    format!(
        "CREATE DATABASE snap;
         CREATE TABLE snap.inno (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;
         CREATE TABLE snap.inno_counter (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
         CREATE TABLE snap.my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM;
         CREATE TABLE snap.my_log (id INT AUTO_INCREMENT PRIMARY KEY, v INT, pad VARCHAR(200),
             KEY (v)) ENGINE=MyISAM;
         CREATE TABLE snap.my_counter (id INT PRIMARY KEY, v INT, pad VARCHAR(200), KEY (v))
             ENGINE=MyISAM;
         INSERT INTO snap.my VALUES (1, 0);
         INSERT INTO snap.inno_counter VALUES {};
         INSERT INTO snap.my_counter VALUES {};",
        counters.join(", "),
        padded.join(", ")
    )
}

/// A directory of this test's own holding mountpoints (under a chroot's `/srv` for a chrooted
/// server, so that it sees them). Removed on drop only when nothing is mounted at or below it: a
/// recursive delete must never reach into a live (let alone frozen) mount.
pub struct MountDir {
    dir: Option<TempDir>,
}

impl MountDir {
    pub fn new(parent: &Path) -> MountDir {
        // qemu-ga matches the mountpoints it is given against the mount table's real paths.
        assert_eq!(
            fs::canonicalize(parent).expect("the mountpoints' parent exists"),
            parent,
            "the mountpoints' parent must be named by its real path (no symlink on the way)"
        );
        MountDir {
            dir: Some(TempDir::new_in(parent, "ga-mounts")),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let left = matrix::mounts_below(dir.path());
        if left.is_empty() {
            drop(dir);
        } else {
            eprintln!(
                "!!! leaving {} in place: still mounted below it: {left:?}",
                dir.path().display()
            );
            std::mem::forget(dir);
        }
    }
}

/// What `qemu-ga -F` runs.
#[derive(Clone, Copy)]
pub enum Hook {
    /// The project's own qemu-ga hook (`hooks/mysql-snapshot-qemu-hook`), running the freshly
    /// built binaries with this test's config.
    Project,
    /// Exits 0 and does nothing: a snapshot no better than a crash.
    DoesNothing,
}

/// Writes the hook qemu-ga runs (in the host directory, outside every mount) and returns its path.
/// For `Hook::Project` it is a wrapper that pins the config, the binaries' directory and the
/// dispatcher's hook directory and log (the rig's own, empty until a test adds hooks: never the
/// machine's /etc/qemu/fsfreeze-hook.d), runs the project's hook and passes its exit status on:
/// the environment does not depend on what qemu-ga passes on (7.2 passes its own; without the
/// config path the binaries would read /etc/mysql-snapshot.cnf and reach the machine's server).
/// qemu-ga discards the hook's output, so the wrapper keeps the hook's stderr and a line per call
/// with its exit status for diagnostics.
fn write_hook(dir: &Path, config: &Path, hook: Hook) -> PathBuf {
    let path = dir.join("fsfreeze-hook");
    let body = match hook {
        Hook::Project => {
            let project_hook =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../hooks/mysql-snapshot-qemu-hook");
            assert!(
                project_hook.is_file(),
                "the project's qemu-ga hook is missing: {}",
                project_hook.display()
            );
            fs::create_dir_all(dir.join(HOOK_DIR)).unwrap();
            format!(
                "MYSQL_SNAPSHOT_CONFIG='{config}'\n\
                 MYSQL_SNAPSHOT_SBIN='{sbin}'\n\
                 MYSQL_SNAPSHOT_QEMU_HOOK_DIR='{hook_dir}'\n\
                 MYSQL_SNAPSHOT_QEMU_HOOK_LOG='{hook_dir_log}'\n\
                 export MYSQL_SNAPSHOT_CONFIG MYSQL_SNAPSHOT_SBIN MYSQL_SNAPSHOT_QEMU_HOOK_DIR \
                 MYSQL_SNAPSHOT_QEMU_HOOK_LOG\n\
                 echo \"$(date +%T.%N) $1 started\" >>'{calls}'\n\
                 '{hook}' \"$@\" 2>>'{stderr}'\n\
                 rc=$?\n\
                 echo \"$(date +%T.%N) $1 exited $rc\" >>'{calls}'\n\
                 exit $rc\n",
                config = config.display(),
                sbin = bin_dir().display(),
                hook_dir = dir.join(HOOK_DIR).display(),
                hook_dir_log = dir.join(HOOK_DIR_LOG).display(),
                hook = project_hook.display(),
                calls = dir.join(HOOK_CALLS).display(),
                stderr = dir.join(HOOK_STDERR).display(),
            )
        }
        Hook::DoesNothing => "exit 0\n".to_string(),
    };
    fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    path
}

/// Debian's `qemu-ga` listening on a Unix socket, spoken to in its JSON protocol; stopped by its
/// PID on drop: SIGTERM, then SIGKILL (qemu-ga ignores SIGTERM while it believes it froze
/// something; thawing is `FreezeWindow`'s job, not its).
pub struct GuestAgent {
    child: Child,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    log: PathBuf,
    next_id: u64,
}

impl GuestAgent {
    fn start(dir: &Path, hook: &Path) -> GuestAgent {
        let program = Path::new("/usr/sbin/qemu-ga");
        assert!(
            program.is_file(),
            "qemu-ga is not installed: tests/run.sh installs the qemu-guest-agent package"
        );
        let state = dir.join("qga-state");
        fs::create_dir_all(&state).unwrap();
        let socket = dir.join("qga.sock");
        let log = dir.join("qemu-ga.log");
        let child = Command::new(program)
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg(format!("-F{}", hook.display()))
            .arg("-t")
            .arg(&state)
            .arg("-f")
            .arg(state.join("qemu-ga.pid"))
            .arg("-v")
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-ga");
        let mut stream = None;
        let up = wait_until(Duration::from_secs(30), || {
            stream = UnixStream::connect(&socket).ok();
            stream.is_some()
        });
        assert!(
            up,
            "qemu-ga does not listen on {}: {}",
            socket.display(),
            tail(&log, 4000)
        );
        let stream = stream.unwrap();
        // The freeze hook may wait for a quiet moment up to its snapshot-timeout.
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        let mut agent = GuestAgent {
            child,
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            log,
            next_id: 4242,
        };
        agent.sync();
        agent
    }

    /// Sends one command; its `return` value, or the `desc` of its `error`.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        writeln!(self.writer, "{request}").expect("write to qemu-ga");
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        assert!(
            matches!(read, Ok(n) if n > 0),
            "no answer from qemu-ga to {command} ({read:?}); its log: {}",
            tail(&self.log, 4000)
        );
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("qemu-ga answered {command} with non-JSON `{line}`: {e}"));
        match (answer.get("return"), answer.get("error")) {
            (Some(value), _) => Ok(value.clone()),
            (None, Some(error)) => Err(error["desc"].as_str().unwrap_or("").to_string()),
            _ => panic!("qemu-ga answered {command} with `{line}`"),
        }
    }

    /// `guest-sync`: both ends agree on where the conversation stands.
    pub fn sync(&mut self) {
        self.next_id += 1;
        let id = self.next_id;
        let answer = self.execute("guest-sync", Some(json!({ "id": id })));
        assert_eq!(answer, Ok(json!(id)), "guest-sync");
    }

    /// `guest-fsfreeze-freeze-list` with exactly this one mount, which must be mounted in one of
    /// this test's mount directories (its host path, which qemu-ga matches against the mount
    /// table): runs the hook with `freeze`, then FIFREEZEs that mount and nothing else. Returns
    /// how many filesystems were frozen.
    pub fn freeze_only(&mut self, mount: &LoopMount, ours: &MountDir) -> Result<Value, String> {
        assert!(
            mount.mountpoint.starts_with(ours.path()),
            "{} is not one of this test's mounts",
            mount.mountpoint.display()
        );
        assert!(
            matrix::mounts_below(&mount.mountpoint).contains(&mount.mountpoint),
            "{} is not mounted",
            mount.mountpoint.display()
        );
        let mountpoint = mount.mountpoint.to_str().expect("a UTF-8 mountpoint");
        self.execute(
            "guest-fsfreeze-freeze-list",
            Some(json!({ "mountpoints": [mountpoint] })),
        )
    }

    pub fn status(&mut self) -> String {
        let status = self
            .execute("guest-fsfreeze-status", None)
            .expect("guest-fsfreeze-status");
        status.as_str().unwrap_or_default().to_string()
    }
}

impl Drop for GuestAgent {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let ended = wait_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The tables a rig's server starts with and the statements its writers run.
pub struct Workload {
    /// SQL run once on the fresh server (several statements).
    pub schema: String,
    /// One writer thread each.
    pub statements: Vec<fn(u64) -> String>,
}

impl Workload {
    /// `schema()`'s InnoDB and MyISAM tables: two InnoDB inserters, an InnoDB hot-row updater, a
    /// MyISAM inserter and a MyISAM hot-row updater.
    pub fn mixed() -> Workload {
        Workload {
            schema: schema(),
            statements: vec![
                |n| format!("INSERT INTO snap.inno (v) VALUES ({n})"),
                |n| format!("INSERT INTO snap.inno (v) VALUES (-{n})"),
                |n| {
                    format!(
                        "UPDATE snap.inno_counter SET v = v + 1 WHERE id = {}",
                        n % 20 + 1
                    )
                },
                |n| {
                    format!(
                        "INSERT INTO snap.my_log (v, pad) VALUES ({n}, REPEAT('m', {}))",
                        n % 200
                    )
                },
                |n| {
                    format!(
                        "UPDATE snap.my_counter SET v = v + 1, pad = REPEAT('u', {}) WHERE id = {}",
                        n % 200,
                        n % 20 + 1
                    )
                },
            ],
        }
    }
}

/// Pause between two statements of one load thread: hundreds of writes a second per thread, a
/// steady load that does not starve the disk other tests share.
const LOAD_PACE: Duration = Duration::from_millis(1);

/// Autocommit inserts and updates on InnoDB and MyISAM tables, one thread each, until stopped.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    longest: Arc<Mutex<Duration>>,
    threads: Vec<JoinHandle<()>>,
}

/// What the load saw.
#[derive(Debug)]
pub struct LoadReport {
    pub writes: u64,
    pub errors: Vec<String>,
    pub longest: Duration,
}

impl WriteLoad {
    /// The load on connections made by `connect` (one per writer thread), on `schema()`'s tables:
    /// two InnoDB inserters, an InnoDB hot-row updater, a MyISAM inserter and a MyISAM hot-row
    /// updater.
    pub fn start_with(connect: impl Fn() -> mysql::Conn) -> WriteLoad {
        WriteLoad::start_statements(connect, &Workload::mixed().statements)
    }

    /// One writer thread per statement, each on a connection made by `connect`, running its
    /// statement (numbered 1, 2, …) in autocommit until stopped.
    pub fn start_statements(
        connect: impl Fn() -> mysql::Conn,
        statements: &[fn(u64) -> String],
    ) -> WriteLoad {
        let mut load = WriteLoad {
            stop: Arc::new(AtomicBool::new(false)),
            writes: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            longest: Arc::new(Mutex::new(Duration::ZERO)),
            threads: Vec::new(),
        };
        for &statement in statements {
            let mut conn = connect();
            let (stop, writes, errors, longest) = (
                load.stop.clone(),
                load.writes.clone(),
                load.errors.clone(),
                load.longest.clone(),
            );
            load.threads.push(thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let started = Instant::now();
                    match conn.query_drop(statement(n)) {
                        Ok(()) => {
                            writes.fetch_add(1, Ordering::SeqCst);
                            let took = started.elapsed();
                            {
                                let mut longest = longest.lock().unwrap();
                                *longest = (*longest).max(took);
                            }
                            thread::sleep(LOAD_PACE);
                        }
                        Err(mysql::Error::MySqlError(e)) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("{}: {e}", statement(n)));
                        }
                        Err(e) => {
                            // The server is gone (the test is ending) or the connection broke.
                            if !stop.load(Ordering::SeqCst) {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{}: {e}", statement(n)));
                            }
                            return;
                        }
                    }
                }
            }));
        }
        load
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The longest write since the last call (or the start), and starts measuring anew.
    pub fn take_longest(&self) -> Duration {
        std::mem::take(&mut *self.longest.lock().unwrap())
    }

    /// Every write error so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// True once `more` writes have succeeded since the call, within `limit`.
    pub fn makes_progress(&self, more: u64, limit: Duration) -> bool {
        let from = self.writes();
        wait_until(limit, || self.writes() >= from + more)
    }

    pub fn stop(&mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        LoadReport {
            writes: self.writes(),
            errors: self.errors.lock().unwrap().clone(),
            longest: *self.longest.lock().unwrap(),
        }
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        // No join: a thread may be waiting on a lock; it ends when the server is stopped.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A snapshot as qemu-ga took it (or refused to).
pub enum Snapshot {
    /// The copy of the image made while frozen; `froze_in`: how long qemu-ga took to answer the
    /// freeze (the hook, then FIFREEZE).
    Taken { copy: PathBuf, froze_in: Duration },
    /// `guest-fsfreeze-freeze-list` failed with this error; qemu-ga says nothing is frozen.
    Refused(String),
}

/// One scenario's world. Fields drop in this order: qemu-ga, load, sandbox, server, mount, the
/// directory holding the mountpoints, the host directory (a server on the mount stops before the
/// mount goes, and the mount goes before its directory).
pub struct Rig {
    pub agent: GuestAgent,
    pub load: WriteLoad,
    pub sandbox: Sandbox,
    pub server: Server,
    pub mount: LoopMount,
    pub mounts: MountDir,
    pub dir: TempDir,
    setup: ServerSetup,
    /// When `Rig::new` began.
    started: Instant,
}

impl Rig {
    /// A loop mount with a server of `setup` on it (inside the server's chroot, if it has one), a
    /// sandbox config with `settings` (the info file inside the mount), qemu-ga running `hook`,
    /// and a write load that is already writing.
    pub fn new(setup: ServerSetup, settings: &str, hook: Hook) -> Rig {
        Rig::with_workload(setup, settings, hook, Workload::mixed())
    }

    /// `new` with the tables and writers of `workload`.
    pub fn with_workload(
        setup: ServerSetup,
        settings: &str,
        hook: Hook,
        workload: Workload,
    ) -> Rig {
        if setup.flavour.is_mysql() {
            crate::heavy(); // MySQL, qemu-ga and a write load run alone (see `gate`)
        }
        let started = Instant::now();
        let root = setup.chroot();
        let dir = TempDir::new("ga");
        let mounts = MountDir::new(&match root {
            Some(root) => matrix::inside(root, matrix::SERVERS),
            None => std::env::temp_dir(),
        });
        let mount = LoopMount::create(
            &dir.path().join("fs.img"),
            &mounts.path().join("mnt"),
            IMAGE_MIB,
        );
        let datadir = mount.mountpoint.join("data");
        install_flavour_datadir(setup.flavour, &datadir);
        if setup.flavour.is_mysql() {
            // This server makes its own server_uuid on first start.
            fs::remove_file(datadir.join("auto.cnf")).unwrap();
        }
        let server = Server::try_start_flavour_on(
            setup.flavour,
            &datadir,
            setup.server_args,
            Duration::from_secs(180),
        )
        .unwrap_or_else(|log| {
            panic!(
                "{} on the loop mount did not start: {log}",
                setup.flavour.name()
            )
        });
        server.conn().query_drop(&workload.schema).unwrap();
        let sandbox = Sandbox::new(
            &server,
            &format!(
                "info-file = {}\nsnapshot-timeout = 120\n{settings}",
                mount.mountpoint.join(INFO_NAME).display()
            ),
        );
        let hook = write_hook(dir.path(), &sandbox.config, hook);
        let agent = GuestAgent::start(dir.path(), &hook);
        let load = WriteLoad::start_statements(|| server.conn(), &workload.statements);
        assert!(
            load.makes_progress(200, Duration::from_secs(60)),
            "the write load does not write: {:?}",
            load.errors.lock().unwrap()
        );
        Rig {
            agent,
            load,
            sandbox,
            server,
            mount,
            mounts,
            dir,
            setup,
            started,
        }
    }

    /// Freezes the mount through qemu-ga, copies the image block for block while frozen, thaws.
    pub fn snapshot(&mut self) -> Snapshot {
        // Opened before the request: a panic while waiting for the answer still thaws.
        let window = self.mount.freeze_window();
        self.snapshot_in(&window)
    }

    /// `snapshot` inside a freeze window the caller opened (and drops right after).
    pub fn snapshot_in(&mut self, window: &FreezeWindow) -> Snapshot {
        self.snapshot_in_with(window, |_| {})
    }

    /// `snapshot`, running `while_frozen` once the freeze is in place, before the copy.
    pub fn snapshot_with(&mut self, while_frozen: impl FnOnce(&mut Rig)) -> Snapshot {
        let window = self.mount.freeze_window();
        self.snapshot_in_with(&window, while_frozen)
    }

    fn snapshot_in_with(
        &mut self,
        window: &FreezeWindow,
        while_frozen: impl FnOnce(&mut Rig),
    ) -> Snapshot {
        let (snapshot, thawed) = self.freeze_copy_thaw(window, while_frozen);
        if let Some(thawed) = thawed {
            assert_eq!(
                thawed,
                Ok(json!(1)),
                "guest-fsfreeze-thaw\n{}",
                self.diagnostics()
            );
        }
        snapshot
    }

    /// `snapshot`, with qemu-ga's answer to the thaw (`None` when the freeze was refused and no
    /// thaw was sent) returned instead of asserted: a thaw hook's failure makes it an error although
    /// the mount is thawed (asserted here).
    pub fn snapshot_answering_thaw(&mut self) -> (Snapshot, Option<Result<Value, String>>) {
        let window = self.mount.freeze_window();
        self.freeze_copy_thaw(&window, |_| {})
    }

    fn freeze_copy_thaw(
        &mut self,
        _window: &FreezeWindow,
        while_frozen: impl FnOnce(&mut Rig),
    ) -> (Snapshot, Option<Result<Value, String>>) {
        self.agent.sync();
        let copy = self.dir.path().join("copy.img");
        let started = Instant::now();
        let frozen = self.agent.freeze_only(&self.mount, &self.mounts);
        let hook_took = started.elapsed();
        let count = match frozen {
            Ok(count) => count,
            Err(desc) => {
                let status = self.agent.status();
                assert_eq!(
                    status, "thawed",
                    "qemu-ga refused the freeze ({desc}) yet reports `{status}`"
                );
                eprintln!("snapshot refused after {hook_took:?}: {desc}");
                return (Snapshot::Refused(desc), None);
            }
        };
        assert_eq!(
            count,
            json!(1),
            "qemu-ga froze {count} filesystems, expected exactly ours\n{}",
            self.diagnostics()
        );
        assert_eq!(self.agent.status(), "frozen");
        while_frozen(self);
        let copying = Instant::now();
        self.copy_image(&copy);
        let copy_took = copying.elapsed();
        let thawed = self.agent.execute("guest-fsfreeze-thaw", None);
        assert_eq!(
            self.agent.status(),
            "thawed",
            "after guest-fsfreeze-thaw ({thawed:?})"
        );
        eprintln!(
            "snapshot taken: freeze answered after {hook_took:?}, image copied in {copy_took:?} \
             ({} MiB allocated of {IMAGE_MIB} MiB); thaw answered {thawed:?}",
            allocated_mib(&copy)
        );
        let taken = Snapshot::Taken {
            copy,
            froze_in: hook_took,
        };
        (taken, Some(thawed))
    }

    /// Adds `name` to the hook directory the project's dispatcher reads (`Hook::Project` only): a
    /// script with `mode` that records each call in `other_hook_calls` — its name, the phase, and
    /// the `state` the info file on the mount says at that moment (`none` before there is one),
    /// which tells whether our lock was held — writes a line to its stdout, and exits
    /// `freeze_exit` on freeze, `thaw_exit` on thaw.
    pub fn add_other_hook(&self, name: &str, mode: u32, freeze_exit: u8, thaw_exit: u8) {
        let dir = self.dir.path().join(HOOK_DIR);
        assert!(
            dir.is_dir(),
            "the rig's hook directory is made for Hook::Project only"
        );
        let script = format!(
            "#!/bin/sh\n\
             state=$(sed -n 's/^  \"state\": \"\\([a-z]*\\)\".*/\\1/p' '{info}' 2>/dev/null)\n\
             echo \"{name} $1 ${{state:-none}}\" >>'{calls}'\n\
             echo \"{name} says $1\"\n\
             case $1 in freeze) exit {freeze_exit} ;; thaw) exit {thaw_exit} ;; esac\n\
             exit 64\n",
            info = self.mount.mountpoint.join(INFO_NAME).display(),
            calls = self.dir.path().join(OTHER_HOOK_CALLS).display(),
        );
        let path = dir.join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The calls of the hooks `add_other_hook` added, in order: `name phase state`.
    pub fn other_hook_calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join(OTHER_HOOK_CALLS))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The log the project's dispatcher appends the other hooks' output to.
    pub fn other_hooks_output(&self) -> String {
        fs::read_to_string(self.dir.path().join(HOOK_DIR_LOG)).unwrap_or_default()
    }

    /// A copy taken the way a caller takes one after a failed freeze (Proxmox goes on
    /// crash-consistent, the clouds snapshot anyway): no hook runs; the filesystem is frozen by
    /// `fsfreeze` only for the block copy (our stand-in for the instant of copy-before-write or of
    /// a storage snapshot), then thawed.
    pub fn copy_without_hook(&mut self) -> PathBuf {
        let window = self.mount.freeze_window();
        let copy = self.dir.path().join("copy-without-hook.img");
        let frozen = Command::new(crate::tool("fsfreeze"))
            .arg("-f")
            .arg(&self.mount.mountpoint)
            .output()
            .unwrap();
        assert!(frozen.status.success(), "fsfreeze -f: {}", text(&frozen));
        self.copy_image(&copy);
        drop(window); // thaws
        copy
    }

    /// A copy of the image taken while its filesystem runs, with no freeze at all (a hypervisor
    /// without an agent): its ext4 journal holds changes not yet replayed.
    pub fn copy_while_running(&mut self) -> PathBuf {
        let copy = self.dir.path().join("copy-while-running.img");
        self.copy_image(&copy);
        copy
    }

    /// Copies the (frozen) image block for block to `copy`.
    fn copy_image(&self, copy: &Path) {
        let out = Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.mount.image)
            .arg(copy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "copying the frozen image failed: {}",
            text(&out)
        );
    }

    /// Writes go through again after the thaw (the lock is gone).
    pub fn assert_writes_resume(&self) {
        assert!(
            self.load.makes_progress(50, Duration::from_secs(60)),
            "writes do not resume after the thaw: {:?}",
            self.load.errors.lock().unwrap()
        );
        assert!(
            wait_until(Duration::from_secs(20), || !self.server.writes_blocked()),
            "writes are still blocked after the thaw"
        );
    }

    /// The info file the freeze wrote on the (thawed) original mount.
    pub fn info(&self) -> Value {
        let text =
            fs::read_to_string(self.mount.mountpoint.join(INFO_NAME)).expect("the info file");
        serde_json::from_str(&text).expect("the info file is JSON")
    }

    /// After a thaw: the info file on the original mount says `released` and keeps the snapshot's
    /// held record under `last_consistent`; that record.
    pub fn last_held(&self) -> Value {
        crate::last_held(self.info())
    }

    /// The promise of a snapshot through qemu-ga with the project's hook: the freeze is accepted,
    /// writes resume after the thaw, `check_info` accepts the record the freeze wrote, a server
    /// booted on the copy agrees with that info file and finds sound tables, and the writers saw
    /// no error. `what` names the snapshot in failure messages.
    pub fn assert_a_snapshot_is_consistent(
        &mut self,
        test: &str,
        what: &str,
        check_info: impl FnOnce(&Value),
    ) {
        let copy = match self.snapshot() {
            Snapshot::Taken { copy, .. } => copy,
            Snapshot::Refused(desc) => {
                panic!("the freeze was refused: {desc}\n{}", self.diagnostics())
            }
        };
        self.assert_writes_resume();
        check_info(&self.last_held());
        let report = self.assert_copy_is_consistent(&copy, what);
        assert!(
            report.errors.is_empty(),
            "writers failed: {:?}",
            report.errors
        );
        eprintln!(
            "{test}: consistent; {} writes, longest write {:?}; {:?} in all",
            report.writes,
            report.longest,
            self.started.elapsed()
        );
    }

    /// Stops the load and asserts that a server booted on `copy` agrees with the info file the
    /// copy carries and finds sound tables (see `discrepancies`); `what` names the snapshot in the
    /// failure message. What the load saw.
    pub fn assert_copy_is_consistent(&mut self, copy: &Path, what: &str) -> LoadReport {
        let report = self.load.stop();
        let found = self.discrepancies(copy);
        assert!(
            found.is_empty(),
            "{what} is inconsistent:\n  {}\n{}",
            found.join("\n  "),
            self.diagnostics()
        );
        report
    }

    /// The negative control's run up to its copy: a freeze and thaw by hand leave the info file
    /// of a real freeze on the mount (what a silently failing hook leaves behind), writes go on
    /// until the binlog has moved past it, then qemu-ga snapshots with a hook that does nothing.
    /// Every discrepancy the copy check finds.
    pub fn discrepancies_after_a_stale_freeze(&mut self) -> Vec<String> {
        let out = self.sandbox.freeze();
        assert!(out.status.success(), "{}", text(&out));
        let out = self.sandbox.thaw("thaw");
        assert!(out.status.success(), "{}", text(&out));
        // After thaw the info file says `released`; the held record is kept for reference only.
        let info = self.info();
        assert_eq!(info["consistent"], false, "after thaw: {info}");
        let recorded = info["last_consistent"]["binlog"]["position"]
            .as_u64()
            .unwrap();
        let moved_on = wait_until(Duration::from_secs(60), || {
            let row: Option<mysql::Row> = self
                .server
                .conn()
                .query_first(self.setup.binlog_status())
                .unwrap();
            row.and_then(|r| r.get::<u64, _>("Position"))
                .is_some_and(|p| p > recorded)
        });
        assert!(
            moved_on,
            "the binlog did not move past {recorded}: the load is not writing"
        );

        let copy = match self.snapshot() {
            Snapshot::Taken { copy, .. } => copy,
            Snapshot::Refused(desc) => panic!("a hook that does nothing cannot refuse: {desc}"),
        };
        let _ = self.load.stop();
        let found = self.discrepancies(&copy);
        eprintln!("discrepancies found without the hook: {found:#?}");
        found
    }

    /// Mounts the copy, reads where its binlog ends, boots a second server on it and compares
    /// what it finds with the info file the copy carries. Every discrepancy found; empty =
    /// consistent.
    pub fn discrepancies(&self, copy: &Path) -> Vec<String> {
        copy_discrepancies(self.setup, &self.mounts, copy, |_, _| {})
    }

    /// Everything that helps explain a failure.
    pub fn diagnostics(&mut self) -> String {
        format!(
            "hook calls:\n{}\nhook stderr:\n{}\nother hooks' calls: {:?}\nother hooks' log:\n{}\n\
             syslog:\n{}\nload errors: {:?}\n\
             server error log (tail):\n{}\nqemu-ga log (tail):\n{}",
            tail(&self.dir.path().join(HOOK_CALLS), 2000),
            tail(&self.dir.path().join(HOOK_STDERR), 4000),
            self.other_hook_calls(),
            tail(&self.dir.path().join(HOOK_DIR_LOG), 2000),
            self.sandbox.log(),
            self.load.errors.lock().unwrap(),
            tail(&self.server.dir.path().join("error.log"), 3000),
            tail(&self.agent.log, 2000)
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // A test that failed mid-snapshot may leave a locker holding the lock (until its
        // max-lock-time): release it the product's way before the server goes.
        if thread::panicking() && self.sandbox.locker_pid().is_some_and(crate::alive) {
            let _ = self.sandbox.thaw("thaw");
        }
    }
}

/// Mounts `copy` (in `mounts`), reads where its binlog ends, boots a server of `setup` on it and
/// compares what it finds with the info file the copy carries; `more` may add its own findings
/// from a connection to the booted copy. Every discrepancy found; empty = consistent.
pub fn copy_discrepancies(
    setup: ServerSetup,
    mounts: &MountDir,
    copy: &Path,
    more: impl FnOnce(&mut mysql::Conn, &mut Vec<String>),
) -> Vec<String> {
    let mut found = Vec::new();
    let opened = OpenedCopy::open(setup, mounts, copy);
    let info = match &opened.info {
        Ok(info) => Some(info.clone()),
        Err(why) => {
            found.push(why.clone());
            None
        }
    };
    // The info file's own word first: a copy it does not call consistent is not.
    if let Some(info) = &info {
        if info["consistent"] != true {
            found.push(format!(
                "the info file says the copy is not consistent: {} ({})",
                info["state"].as_str().unwrap_or("-"),
                info["reason"].as_str().unwrap_or("no reason")
            ));
        }
    }
    let end = opened.binlog_end.clone();
    if let Err(why) = &end {
        found.push(why.clone());
    }
    let server = match &opened.server {
        Ok(server) => server,
        Err(log) => {
            found.push(format!("the copy did not start: {log}"));
            return found;
        }
    };
    let mut conn = server.conn();
    let (variable, key) = setup.gtid_state();
    let gtid: String = conn
        .query_first(format!("SELECT {variable}"))
        .unwrap()
        .unwrap_or_default();
    let gtid = gtid.replace(['\n', '\r'], "");

    eprintln!(
        "copy: binlog ends at {end:?}, {variable} `{gtid}`; info file records binlog {}:{}, \
             gtid `{}`",
        info.as_ref()
            .map_or(Value::Null, |i| i["binlog"]["file"].clone()),
        info.as_ref()
            .map_or(Value::Null, |i| i["binlog"]["position"].clone()),
        info.as_ref()
            .map_or(Value::Null, |i| i["gtid"][key].clone()),
    );
    if let (Some(info), Ok((file, size))) = (&info, &end) {
        let recorded_file = info["binlog"]["file"].as_str().unwrap_or("(none)");
        let recorded_position = info["binlog"]["position"].as_u64();
        if recorded_file != file || recorded_position != Some(*size) {
            found.push(format!(
                "binlog end in the copy is {file}:{size}, the info file records {recorded_file}:{}",
                recorded_position.map_or("(none)".to_string(), |p| p.to_string())
            ));
        }
    }
    if let Some(info) = &info {
        let recorded = info["gtid"][key].as_str().unwrap_or("(none)");
        if normalized_gtid_set(recorded) != normalized_gtid_set(&gtid) {
            found.push(format!(
                "{variable} of the copy is `{gtid}`, the info file records `{recorded}`"
            ));
        }
        if setup.flavour.is_mysql() {
            let uuid: String = conn
                .query_first("SELECT @@GLOBAL.server_uuid")
                .unwrap()
                .unwrap_or_default();
            let recorded_uuid = info["server"]["server_uuid"].as_str().unwrap_or("(none)");
            if recorded_uuid != uuid {
                found.push(format!(
                        "@@server_uuid of the copy is `{uuid}`, the info file records `{recorded_uuid}`"
                    ));
            }
        }
    }

    let tables: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = 'snap' ORDER BY TABLE_NAME",
        )
        .unwrap();
    let myisam = tables
        .iter()
        .filter(|(_, engine)| engine == "MyISAM")
        .count();
    if myisam < 3 {
        found.push(format!(
            "the copy lacks MyISAM tables of the load: {tables:?}"
        ));
    }
    for (table, engine) in &tables {
        let rows: Vec<(String, String, String, String)> =
            match conn.query(format!("CHECK TABLE snap.`{table}`")) {
                Ok(rows) => rows,
                Err(e) => {
                    found.push(format!("CHECK TABLE snap.{table} ({engine}) failed: {e}"));
                    continue;
                }
            };
        let status_ok = rows
            .last()
            .is_some_and(|(_, _, kind, message)| kind == "status" && message == "OK");
        let errors = rows.iter().any(|(_, _, kind, _)| kind == "error");
        if !status_ok || errors {
            found.push(format!("CHECK TABLE snap.{table} ({engine}) says {rows:?}"));
        } else if rows.len() > 1 {
            eprintln!("CHECK TABLE snap.{table} ({engine}): OK with {rows:?}");
        }
    }
    more(&mut conn, &mut found);
    found
}

/// A copy of the image mounted in a rig's mount directory: the info file it carries, where its
/// binlog ends (read before any server runs on it), and a server of the rig's flavour booted on it
/// (InnoDB crash recovery is expected of a frozen image). The server stops before the copy is
/// unmounted.
pub struct OpenedCopy {
    /// The booted server, or why it did not start.
    pub server: Result<Server, String>,
    pub info: Result<Value, String>,
    pub binlog_end: Result<(String, u64), String>,
    pub mount: LoopMount,
}

impl OpenedCopy {
    pub fn open(setup: ServerSetup, mounts: &MountDir, copy: &Path) -> OpenedCopy {
        let mount = LoopMount::attach(copy, &mounts.path().join("copy-mnt"));
        let datadir = mount.mountpoint.join("data");
        let info = match fs::read_to_string(mount.mountpoint.join(INFO_NAME)) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("the info file in the copy is not JSON ({e}): {text}")),
            Err(e) => Err(format!("the info file is not inside the copy: {e}")),
        };
        let binlog_end = binlog_end(&datadir);
        let booting = Instant::now();
        let server = Server::try_start_flavour_on(
            setup.flavour,
            &datadir,
            setup.copy_args,
            Duration::from_secs(240),
        );
        if let Ok(server) = &server {
            let log = server.error_log();
            eprintln!(
                "copy booted in {:?}{}",
                booting.elapsed(),
                if log.contains("crash recovery") || log.contains("not shut down normally") {
                    " (with crash recovery)"
                } else {
                    ""
                }
            );
        }
        OpenedCopy {
            server,
            info,
            binlog_end,
            mount,
        }
    }
}

fn allocated_mib(path: &Path) -> u64 {
    fs::metadata(path)
        .map(|m| (m.blocks() * 512) >> 20)
        .unwrap_or(0)
}

/// The last binlog named in `datadir`'s binlog.index (bare, or `./binlog.000002` as MySQL writes
/// it) and its size: where the binlog of a copy ends, read before any server runs on it.
pub(crate) fn binlog_end(datadir: &Path) -> Result<(String, u64), String> {
    let index = fs::read_to_string(datadir.join("binlog.index"))
        .map_err(|e| format!("binlog.index unreadable in the copy: {e}"))?;
    let last = index
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or("binlog.index in the copy is empty")?;
    if Path::new(last).is_absolute() {
        return Err(format!("binlog.index names `{last}`, outside the copy"));
    }
    let size = fs::metadata(datadir.join(last))
        .map_err(|e| format!("the last binlog `{last}` is missing from the copy: {e}"))?
        .len();
    let name = Path::new(last)
        .file_name()
        .ok_or_else(|| format!("binlog.index names `{last}`, not a file"))?
        .to_string_lossy()
        .into_owned();
    Ok((name, size))
}

/// A GTID set (MariaDB's domains, MySQL's source UUIDs) with whitespace removed (MySQL puts a
/// newline after each comma) and its members in a fixed order.
fn normalized_gtid_set(set: &str) -> String {
    let compact: String = set.chars().filter(|c| !c.is_whitespace()).collect();
    let mut parts: Vec<&str> = compact.split(',').filter(|p| !p.is_empty()).collect();
    parts.sort_unstable();
    parts.join(",")
}
