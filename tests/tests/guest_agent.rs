//! End to end through Debian's real `qemu-ga`: a private MariaDB whose datadir and binlogs live on
//! a loop-mounted ext4 this test makes, a write load on InnoDB and MyISAM, our hook run by
//! `qemu-ga -F`, a block-for-block copy of the image while frozen, and a second server booted on
//! the copy to check it. Only the test's own loop mount is ever frozen (`guest-fsfreeze-freeze-list`
//! with exactly that mountpoint, never `guest-fsfreeze-freeze`), and it is thawed on every path.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use harness::loopfs::{install_datadir, loop_devices_missing, tail, FreezeWindow, LoopMount};
use harness::{bin_dir, text, wait_until, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;
use serde_json::{json, Value};

/// The info file's name, at the root of the loop mount so that a copy carries its own coordinates.
const INFO_NAME: &str = "snapshot-info.json";
/// Size of the sparse image; the datadir and binlogs need well under a tenth of it.
const IMAGE_MIB: u64 = 512;
/// Where the hook wrapper records its calls and the hook's stderr (in the rig's directory).
const HOOK_CALLS: &str = "calls.log";
const HOOK_STDERR: &str = "hook-stderr.log";
/// Binlogs named relative to the datadir, so the index stays right wherever a copy is mounted.
const SERVER_ARGS: &[&str] = &["--log-bin=binlog", "--server-id=1"];

/// The tables the load writes: InnoDB and MyISAM, inserts and updates of existing rows.
const SCHEMA: &str = "
    CREATE DATABASE snap;
    CREATE TABLE snap.inno (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;
    CREATE TABLE snap.inno_counter (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
    CREATE TABLE snap.my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM;
    CREATE TABLE snap.my_log (id INT AUTO_INCREMENT PRIMARY KEY, v INT, pad VARCHAR(200), KEY (v))
        ENGINE=MyISAM;
    CREATE TABLE snap.my_counter (id INT PRIMARY KEY, v INT, pad VARCHAR(200), KEY (v)) ENGINE=MyISAM;
    INSERT INTO snap.my VALUES (1, 0);
    INSERT INTO snap.inno_counter SELECT seq, 0 FROM seq_1_to_20;
    INSERT INTO snap.my_counter SELECT seq, 0, '' FROM seq_1_to_20;";

/// True (after a loud message) when this machine cannot loop-mount: the only reason to skip. The
/// message goes straight to stderr, past the test harness's capture, so a skip is always seen.
fn machine_cannot_loop_mount(test: &str) -> bool {
    match loop_devices_missing() {
        None => false,
        Some(why) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n!!!!!!!!!!!!!!!! SKIPPED {test}: {why}\n\
                 !!!!!!!!!!!!!!!! nothing was snapshotted; run as root on a machine with /dev/loop*\n"
            );
            true
        }
    }
}

/// What `qemu-ga -F` runs.
#[derive(Clone, Copy)]
enum Hook {
    /// The project's own qemu-ga hook (`hooks/mysql-snapshot-qemu-hook`), running the freshly
    /// built binaries with this test's config.
    Project,
    /// Exits 0 and does nothing: a snapshot no better than a crash.
    DoesNothing,
}

/// Writes the hook qemu-ga runs (outside the mount) and returns its path. For `Hook::Project` it
/// is a wrapper that pins the config and the binaries' directory, runs the project's hook and
/// passes its exit status on: the environment does not depend on what qemu-ga passes on (7.2
/// passes its own; without the config path the binaries would read /etc/mysql-snapshot.cnf and
/// reach the machine's server). qemu-ga discards the hook's output, so the wrapper keeps the
/// hook's stderr and a line per call with its exit status (`calls.log`) for failure messages.
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
            format!(
                "MYSQL_SNAPSHOT_CONFIG='{config}'\n\
                 MYSQL_SNAPSHOT_SBIN='{sbin}'\n\
                 export MYSQL_SNAPSHOT_CONFIG MYSQL_SNAPSHOT_SBIN\n\
                 echo \"$(date +%T.%N) $1 started\" >>'{calls}'\n\
                 '{hook}' \"$@\" 2>>'{stderr}'\n\
                 rc=$?\n\
                 echo \"$(date +%T.%N) $1 exited $rc\" >>'{calls}'\n\
                 exit $rc\n",
                config = config.display(),
                sbin = bin_dir().display(),
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
struct GuestAgent {
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
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
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
    fn sync(&mut self) {
        self.next_id += 1;
        let id = self.next_id;
        let answer = self.execute("guest-sync", Some(json!({ "id": id })));
        assert_eq!(answer, Ok(json!(id)), "guest-sync");
    }

    /// `guest-fsfreeze-freeze-list` with exactly this one mount: runs the hook with `freeze`, then
    /// FIFREEZEs that mount and nothing else. Returns how many filesystems were frozen.
    fn freeze_only(&mut self, mount: &LoopMount) -> Result<Value, String> {
        let mountpoint = mount.mountpoint.to_str().expect("a UTF-8 mountpoint");
        assert!(mountpoint.starts_with(&*std::env::temp_dir().to_string_lossy()));
        self.execute(
            "guest-fsfreeze-freeze-list",
            Some(json!({ "mountpoints": [mountpoint] })),
        )
    }

    fn status(&mut self) -> String {
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

/// Pause between two statements of one load thread: hundreds of writes a second per thread, a
/// steady load that does not starve the disk other tests share.
const LOAD_PACE: Duration = Duration::from_millis(1);

/// Autocommit inserts and updates on InnoDB and MyISAM tables, one thread each, until stopped.
struct WriteLoad {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    longest: Arc<Mutex<Duration>>,
    threads: Vec<JoinHandle<()>>,
}

/// What the load saw.
#[derive(Debug)]
struct LoadReport {
    writes: u64,
    errors: Vec<String>,
    longest: Duration,
}

impl WriteLoad {
    fn start(server: &Server) -> WriteLoad {
        let mut load = WriteLoad {
            stop: Arc::new(AtomicBool::new(false)),
            writes: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            longest: Arc::new(Mutex::new(Duration::ZERO)),
            threads: Vec::new(),
        };
        let statements: [fn(u64) -> String; 4] = [
            |n| format!("INSERT INTO snap.inno (v) VALUES ({n})"),
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
        ];
        for statement in statements {
            let mut conn = server.conn();
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

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// True once `more` writes have succeeded since the call, within `limit`.
    fn makes_progress(&self, more: u64, limit: Duration) -> bool {
        let from = self.writes();
        wait_until(limit, || self.writes() >= from + more)
    }

    fn stop(&mut self) -> LoadReport {
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

/// One scenario's world. Fields drop in this order: qemu-ga, load, sandbox, server, mount, dir
/// (a server on the mount stops before the mount goes).
struct Rig {
    agent: GuestAgent,
    load: WriteLoad,
    sandbox: Sandbox,
    server: Server,
    mount: LoopMount,
    dir: TempDir,
}

/// A snapshot as qemu-ga took it (or refused to).
enum Snapshot {
    /// The copy of the image made while frozen.
    Taken { copy: PathBuf },
    /// `guest-fsfreeze-freeze-list` failed with this error; qemu-ga says nothing is frozen.
    Refused(String),
}

impl Rig {
    /// A loop mount with a server on it, a sandbox config with `settings` (the info file inside
    /// the mount), qemu-ga running `hook`, and a write load that is already writing.
    fn new(settings: &str, hook: Hook) -> Rig {
        let dir = TempDir::new("ga");
        let mount = LoopMount::create(
            &dir.path().join("fs.img"),
            &dir.path().join("mnt"),
            IMAGE_MIB,
        );
        let datadir = mount.mountpoint.join("data");
        install_datadir(&datadir);
        let server = Server::start_on(&datadir, SERVER_ARGS);
        server.conn().query_drop(SCHEMA).unwrap();
        let sandbox = Sandbox::new(
            &server,
            &format!(
                "info-file = {}\nsnapshot-timeout = 120\n{settings}",
                mount.mountpoint.join(INFO_NAME).display()
            ),
        );
        let hook = write_hook(dir.path(), &sandbox.config, hook);
        let agent = GuestAgent::start(dir.path(), &hook);
        let load = WriteLoad::start(&server);
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
            dir,
        }
    }

    /// Freezes the mount through qemu-ga, copies the image block for block while frozen, thaws.
    fn snapshot(&mut self) -> Snapshot {
        // Opened before the request: a panic while waiting for the answer still thaws.
        let window = self.mount.freeze_window();
        self.snapshot_in(&window)
    }

    /// `snapshot` inside a freeze window the caller opened (and drops right after).
    fn snapshot_in(&mut self, _window: &FreezeWindow) -> Snapshot {
        self.agent.sync();
        let copy = self.dir.path().join("copy.img");
        let started = Instant::now();
        let frozen = self.agent.freeze_only(&self.mount);
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
                return Snapshot::Refused(desc);
            }
        };
        assert_eq!(
            count,
            json!(1),
            "qemu-ga froze {count} filesystems, expected exactly ours"
        );
        assert_eq!(self.agent.status(), "frozen");
        let copying = Instant::now();
        let out = Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.mount.image)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "copying the frozen image failed: {}",
            text(&out)
        );
        let copy_took = copying.elapsed();
        let thawed = self.agent.execute("guest-fsfreeze-thaw", None);
        assert_eq!(
            thawed,
            Ok(json!(1)),
            "guest-fsfreeze-thaw\n{}",
            self.diagnostics()
        );
        assert_eq!(self.agent.status(), "thawed");
        eprintln!(
            "snapshot taken: freeze answered after {hook_took:?}, image copied in {copy_took:?} \
             ({} MiB allocated of {IMAGE_MIB} MiB)",
            allocated_mib(&copy)
        );
        Snapshot::Taken { copy }
    }

    /// Writes go through again after the thaw (the lock is gone).
    fn assert_writes_resume(&self) {
        assert!(
            self.load.makes_progress(50, Duration::from_secs(60)),
            "writes do not resume after the thaw: {:?}",
            self.load.errors.lock().unwrap()
        );
        assert!(
            wait_until(Duration::from_secs(10), || !self.server.writes_blocked()),
            "writes are still blocked after the thaw"
        );
    }

    /// Everything that helps explain a failure.
    fn diagnostics(&mut self) -> String {
        format!(
            "hook calls:\n{}\nhook stderr:\n{}\nsyslog:\n{}\nload errors: {:?}\n\
             server error log (tail):\n{}\nqemu-ga log (tail):\n{}",
            tail(&self.dir.path().join(HOOK_CALLS), 2000),
            tail(&self.dir.path().join(HOOK_STDERR), 4000),
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
        if thread::panicking() && self.sandbox.locker_pid().is_some_and(harness::alive) {
            let _ = self.sandbox.thaw("thaw");
        }
    }
}

fn allocated_mib(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .map(|m| (m.blocks() * 512) >> 20)
        .unwrap_or(0)
}

/// The last binlog named in `datadir`'s binlog.index and its size: where the binlog of a copy
/// ends, read before any server runs on it.
fn binlog_end(datadir: &Path) -> Result<(String, u64), String> {
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
        .unwrap()
        .to_string_lossy()
        .into_owned();
    Ok((name, size))
}

/// A GTID position with its domains in a fixed order.
fn normalized_gtid(position: &str) -> String {
    let mut parts: Vec<&str> = position
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    parts.sort_unstable();
    parts.join(",")
}

/// Mounts the copy, reads where its binlog ends, boots a second server on it and compares what
/// it finds with the info file the copy carries. Every discrepancy found; empty = consistent.
fn discrepancies(work: &Path, copy: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mount = LoopMount::attach(copy, &work.join("copy-mnt"));
    let datadir = mount.mountpoint.join("data");

    let info: Option<Value> = match fs::read_to_string(mount.mountpoint.join(INFO_NAME)) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(info) => Some(info),
            Err(e) => {
                found.push(format!(
                    "the info file in the copy is not JSON ({e}): {text}"
                ));
                None
            }
        },
        Err(e) => {
            found.push(format!("the info file is not inside the copy: {e}"));
            None
        }
    };
    let end = binlog_end(&datadir);
    if let Err(why) = &end {
        found.push(why.clone());
    }

    // The copy may need InnoDB crash recovery: that is expected of a frozen image.
    let booting = Instant::now();
    let extra: Vec<&str> = SERVER_ARGS
        .iter()
        .copied()
        .chain(["--myisam-recover-options=OFF"]) // a repair on open would hide a broken table
        .collect();
    let server = match Server::try_start_on(&datadir, &extra, Duration::from_secs(180)) {
        Ok(server) => server,
        Err(log) => {
            found.push(format!("the copy did not start: {log}"));
            return found;
        }
    };
    let log = server.error_log();
    eprintln!(
        "copy booted in {:?}{}",
        booting.elapsed(),
        if log.contains("crash recovery") {
            " (with crash recovery)"
        } else {
            ""
        }
    );
    let mut conn = server.conn();
    let gtid: String = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .unwrap()
        .unwrap_or_default();

    eprintln!(
        "copy: binlog ends at {end:?}, @@gtid_binlog_pos `{gtid}`; info file records binlog {}:{}, gtid `{}`",
        info.as_ref().map_or(Value::Null, |i| i["binlog"]["file"].clone()),
        info.as_ref().map_or(Value::Null, |i| i["binlog"]["position"].clone()),
        info.as_ref().map_or(Value::Null, |i| i["gtid"]["binlog_pos"].clone()),
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
        let recorded = info["gtid"]["binlog_pos"].as_str().unwrap_or("(none)");
        if normalized_gtid(recorded) != normalized_gtid(&gtid) {
            found.push(format!(
                "@@gtid_binlog_pos of the copy is `{gtid}`, the info file records `{recorded}`"
            ));
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
    found
}

/// The info file the freeze wrote on the (thawed) original mount.
fn info_on(mount: &LoopMount) -> Value {
    let text = fs::read_to_string(mount.mountpoint.join(INFO_NAME)).expect("the info file");
    serde_json::from_str(&text).expect("the info file is JSON")
}

fn a_snapshot_through_qemu_ga_is_consistent(test: &str, mode: &str) {
    if machine_cannot_loop_mount(test) {
        return;
    }
    let started = Instant::now();
    let mut rig = Rig::new(&format!("lock-mode = {mode}"), Hook::Project);
    let copy = match rig.snapshot() {
        Snapshot::Taken { copy } => copy,
        Snapshot::Refused(desc) => panic!("the freeze was refused: {desc}\n{}", rig.diagnostics()),
    };
    rig.assert_writes_resume();
    assert_eq!(info_on(&rig.mount)["lock"]["mode"], mode);
    let report = rig.load.stop();
    let found = discrepancies(rig.dir.path(), &copy);
    assert!(
        found.is_empty(),
        "the {mode} snapshot is inconsistent:\n  {}\n{}",
        found.join("\n  "),
        rig.diagnostics()
    );
    assert!(
        report.errors.is_empty(),
        "writers failed: {:?}",
        report.errors
    );
    eprintln!(
        "{test}: consistent; {} writes, longest write {:?}; {:?} in all",
        report.writes,
        report.longest,
        started.elapsed()
    );
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
    let mut rig = Rig::new("lock-mode = ftwrl", Hook::DoesNothing);
    let out = rig.sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let out = rig.sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let recorded = info_on(&rig.mount)["binlog"]["position"].as_u64().unwrap();
    let moved_on = wait_until(Duration::from_secs(60), || {
        let row: Option<mysql::Row> = rig.server.conn().query_first("SHOW BINLOG STATUS").unwrap();
        row.and_then(|r| r.get::<u64, _>("Position"))
            .is_some_and(|p| p > recorded)
    });
    assert!(
        moved_on,
        "the binlog did not move past {recorded}: the load is not writing"
    );

    let copy = match rig.snapshot() {
        Snapshot::Taken { copy } => copy,
        Snapshot::Refused(desc) => panic!("a hook that does nothing cannot refuse: {desc}"),
    };
    let _ = rig.load.stop();
    let found = discrepancies(rig.dir.path(), &copy);
    eprintln!("discrepancies found without the hook: {found:#?}");
    assert!(
        found.iter().any(|d| d.contains("binlog end")),
        "the check did not tell a copy taken without the hook from a consistent one: {found:?}"
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
        Snapshot::Taken { copy } => {
            rig.assert_writes_resume();
            let _ = rig.load.stop();
            let found = discrepancies(rig.dir.path(), &copy);
            assert!(
                found.is_empty(),
                "a snapshot accepted behind a long MyISAM write is inconsistent:\n  {}\n{}",
                found.join("\n  "),
                rig.diagnostics()
            );
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
        "kill-long-queries = all\nkill-long-queries-timeout = 1\nsnapshot-timeout = 20",
        Hook::Project,
    );
    let (snapshot, long) = snapshot_behind_a_long_myisam_write(&mut rig);
    let copy = match snapshot {
        Snapshot::Taken { copy } => copy,
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
    let _ = rig.load.stop();
    let found = discrepancies(rig.dir.path(), &copy);
    assert!(
        found.is_empty(),
        "the snapshot taken after killing the long write is inconsistent:\n  {}\n{}",
        found.join("\n  "),
        rig.diagnostics()
    );
    eprintln!("kill-long-queries = all: the long write was killed ({outcome:?}); consistent");
}
