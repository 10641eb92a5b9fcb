//! The test harness: private MariaDB servers, a per-test sandbox (config, run-dir, info file,
//! a syslog socket of its own) and runners for the installed binaries.
//!
//! Every server is started by the harness with its own temporary datadir and socket and
//! `--skip-networking`, and stopped by its PID when the test ends; the machine's own server is never
//! touched. Waiting is done by polling a condition with a deadline, never by sleeping and hoping.
// A test or a benchmark may stop on a server answer it did not expect: the driver's typed
// reads that the binaries must never use (clippy.toml) are allowed here.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, unreachable_pub)]

pub mod accounts;
pub mod case;
pub mod faults;
pub mod galera;
pub mod gate;
pub mod guest_agent;
pub mod loopfs;
pub mod matrix;
pub mod no_freeze;
pub mod package;
pub mod replication;
pub mod vm;

pub use case::Case;
pub use gate::{heavy, light};
pub use matrix::Flavour;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

/// Polls `condition` every 5 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }
    /// A fresh directory under `parent` (e.g. inside a chroot), removed on drop.
    pub fn new_in(parent: &Path, tag: &str) -> TempDir {
        gate::light();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = parent.join(format!(
            "mss-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The directory holding the built binaries (`target/debug` when run by `cargo test`). Refuses
/// a missing binary, and one older than the product sources it is built from: `cargo test`
/// alone does not rebuild the binaries the tests run, and a stale one would test old code.
pub fn bin_dir() -> PathBuf {
    gate::light();
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            for (krate, name) in [
                ("freeze", "mysql-snapshot-freeze"),
                ("thaw", "mysql-snapshot-thaw"),
                ("locker", "mysql-snapshot-locker"),
                ("verify", "mysql-snapshot-verify"),
            ] {
                let built = fs::metadata(dir.join(name)).and_then(|m| m.modified());
                let Ok(built) = built else {
                    panic!(
                        "{} is missing: run `cargo build --workspace` before the tests (README's test command does)",
                        dir.join(name).display()
                    );
                };
                // Its own crate's sources and common's: cargo rebuilds it for nothing else.
                if let Some((source, changed)) = newest_source(&["common", krate]) {
                    assert!(
                        built >= changed,
                        "{} is older than {}: run `cargo build --workspace` before the tests (README's test command does)",
                        dir.join(name).display(),
                        source.display()
                    );
                }
            }
            dir
        })
        .clone()
}

/// The most recently changed source file of `crates`, and when it changed.
fn newest_source(crates: &[&str]) -> Option<(PathBuf, std::time::SystemTime)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    for krate in crates {
        let mut dirs = vec![root.join(krate).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(changed) = entry.metadata().and_then(|m| m.modified()) {
                    if newest.as_ref().is_none_or(|(_, n)| changed > *n) {
                        newest = Some((path, changed));
                    }
                }
            }
        }
    }
    newest
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(format!("mysql-snapshot-{name}"))
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed: run README's test command (it installs mariadb-server)");
}

/// An initialised datadir shared by all servers of this process (copied per server; never write to it).
pub fn template() -> &'static Path {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        // Shared by every test binary of this user; built once under a file lock.
        let dir = std::env::temp_dir().join("mss-template-v1");
        let lock = fs::File::create(std::env::temp_dir().join("mss-template-v1.lock")).unwrap();
        lock.lock().unwrap();
        if dir.join(".complete").exists() {
            return dir;
        }
        let _ = fs::remove_dir_all(&dir);
        let out = Command::new(tool("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", dir.display()))
            .args(SERVER_TUNING)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(dir.join(".complete"), "").unwrap();
        dir
    })
}

/// Small, fast settings for throwaway MariaDB servers.
const SERVER_TUNING: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--skip-name-resolve",
];

/// A private server, stopped (by PID) and deleted on drop. MariaDB 10.11 runs from the machine's
/// packages; the other flavours run inside their cached chroot (`chroot DIR mysqld …`, which execs
/// the server, so the child PID is the server's) with datadir and socket in a directory of their
/// own under the chroot's `/srv`; which chroot `dir` lies in tells the flavour.
pub struct Server {
    /// The server's own directory (datadir `data/`, socket, error log), as the host sees it.
    pub dir: TempDir,
    /// The socket, as the host sees it.
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts a MariaDB 10.11 server with the binary log on (server id 1).
    pub fn start() -> Server {
        Server::start_with(&["--log-bin=binlog", "--server-id=1"])
    }

    /// Starts a MariaDB 10.11 server with these extra mariadbd arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_in(Flavour::MariaDb1011, None, extra)
    }

    /// Starts a server of `flavour` with the binary log on (server id 1; GTID mode on MySQL)
    /// plus `extra`. Panics if the flavour's chroot cannot be built: call
    /// `matrix::require(flavour)` first where a loud skip is allowed.
    pub fn start_flavour(flavour: Flavour, extra: &[&str]) -> Server {
        let root = flavour
            .chroot()
            .unwrap_or_else(|reason| panic!("{} is unavailable: {reason}", flavour.name()));
        let mut args: Vec<&str> = flavour.replication_args().to_vec();
        args.extend_from_slice(extra);
        Server::start_in(flavour, root, &args)
    }

    fn start_in(flavour: Flavour, root: Option<&Path>, extra: &[&str]) -> Server {
        gate::light();
        let (dir, template) = match root {
            Some(root) => (
                TempDir::new_in(&matrix::inside(root, matrix::SERVERS), "db"),
                matrix::inside(root, matrix::TEMPLATE),
            ),
            None => (TempDir::new("db"), template().to_path_buf()),
        };
        let data = dir.path().join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        if flavour.is_mysql() {
            // Each MySQL server makes its own server_uuid on first start.
            let _ = fs::remove_file(data.join("auto.cnf"));
        }
        let socket = dir.path().join("mysqld.sock");
        let mut server = Server {
            socket,
            dir,
            child: None,
        };
        server.launch(extra);
        server
    }

    /// Which server this is: the flavour whose chroot holds `dir`, else MariaDB 10.11.
    pub fn flavour(&self) -> Flavour {
        matrix::flavour_of(self.dir.path()).map_or(Flavour::MariaDb1011, |(flavour, _)| flavour)
    }

    fn launch(&mut self, extra: &[&str]) {
        let data = self.dir.path().join("data");
        let chrooted = matrix::flavour_of(self.dir.path());
        // Paths as the server sees them (inside its chroot, if any).
        let inner = |path: &Path| match &chrooted {
            Some((_, root)) => Path::new("/").join(path.strip_prefix(root).unwrap()),
            None => path.to_path_buf(),
        };
        let (mut command, flavour) = match &chrooted {
            Some((flavour, root)) => {
                let mut command = Command::new(tool("chroot"));
                command.arg(root).arg(flavour.daemon());
                (command, *flavour)
            }
            None => (Command::new(tool("mariadbd")), Flavour::MariaDb1011),
        };
        // A tmpdir of its own: a starting server deletes every `#sql*` file in its tmpdir, which
        // would pull the temporary tables from under every other running test server.
        let tmpdir = self.dir.path().join("tmp");
        fs::create_dir_all(&tmpdir).unwrap();
        let child = command
            .args(["--no-defaults", "--user=root", "--skip-networking"])
            .arg(format!("--datadir={}", inner(&data).display()))
            .arg(format!("--socket={}", inner(&self.socket).display()))
            .arg(format!(
                "--pid-file={}",
                inner(&self.dir.path().join("mysqld.pid")).display()
            ))
            .arg(format!(
                "--log-error={}",
                inner(&self.dir.path().join("error.log")).display()
            ))
            .arg(format!("--tmpdir={}", inner(&tmpdir).display()))
            .args(flavour.tuning())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(90), || self.try_conn().is_some());
        assert!(
            up,
            "private {} did not start: {}",
            flavour.name(),
            self.error_log()
        );
        let mut conn = self.conn();
        conn.query_drop(
            "CREATE DATABASE IF NOT EXISTS snap;
             CREATE TABLE IF NOT EXISTS snap.inno (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;
             CREATE TABLE IF NOT EXISTS snap.my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM;
             INSERT IGNORE INTO snap.my VALUES (1, 0);",
        )
        .unwrap();
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn try_conn(&self) -> Option<Conn> {
        let opts = OptsBuilder::new()
            .user(Some("root"))
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .read_timeout(Some(Duration::from_secs(60)));
        Conn::new(opts).ok()
    }

    /// A root connection over the socket.
    pub fn conn(&self) -> Conn {
        self.try_conn().expect("connect to the private server")
    }

    /// True if a write from another connection is blocked right now (it fails at once instead of
    /// waiting, so the probe itself never queues behind the lock).
    pub fn writes_blocked(&self) -> bool {
        self.writes_blocked_on(&mut self.conn())
    }

    /// `writes_blocked`, probed on `conn` (a root connection to this server).
    pub fn writes_blocked_on(&self, conn: &mut Conn) -> bool {
        // MySQL's minimum is 1 s (0 would be raised to 1 with a warning): the probe then waits
        // up to a second when writes are blocked.
        let timeout = if self.flavour().is_mysql() { 1 } else { 0 };
        conn.query_drop(format!("SET SESSION lock_wait_timeout = {timeout}"))
            .unwrap();
        match conn.query_drop("INSERT INTO snap.inno (v) VALUES (1)") {
            Ok(()) => false,
            Err(mysql::Error::MySqlError(e)) if e.code == 1205 => true,
            Err(e) => panic!("unexpected error from the write probe: {e}"),
        }
    }

    /// Ids of connections whose statement text contains `needle` (other than the asking one).
    pub fn statements_like(&self, needle: &str) -> Vec<u64> {
        self.conn()
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND INFO LIKE ?",
                (format!("%{needle}%"),),
            )
            .unwrap()
    }

    /// Stops the server abruptly (SIGKILL) and starts it again on the same datadir, with the
    /// binary log on (and, on MySQL, GTID mode).
    pub fn restart(&mut self) {
        self.kill();
        let flavour = self.flavour();
        self.launch(flavour.replication_args());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A receiving syslog socket; collects the RFC 3164 lines our binaries send.
pub struct Syslog {
    socket: UnixDatagram,
    pub lines: Vec<String>,
}

impl Syslog {
    pub fn bind(path: &Path) -> Syslog {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Syslog {
            socket,
            lines: Vec::new(),
        }
    }

    /// Everything received so far.
    pub fn drain(&mut self) -> &[String] {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.lines
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        &self.lines
    }
}

/// One test's sandbox: a config file pointing at `server`, a private run-dir, info file and syslog.
pub struct Sandbox {
    pub dir: TempDir,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub info_file: PathBuf,
    pub syslog: Syslog,
}

impl Sandbox {
    /// A sandbox for `server` with the given `[mysql-snapshot]` settings added (one per line).
    pub fn new(server: &Server, settings: &str) -> Sandbox {
        gate::light();
        let dir = TempDir::new("box");
        let run_dir = dir.path().join("run");
        let info_file = dir.path().join("info").join("snapshot-info.json");
        fs::create_dir_all(info_file.parent().unwrap()).unwrap();
        let syslog_path = dir.path().join("syslog.sock");
        let syslog = Syslog::bind(&syslog_path);
        let config = dir.path().join("mysql-snapshot.cnf");
        let text = format!(
            "[client]\nuser = root\nsocket = {}\n\n[mysql-snapshot]\nrun-dir = {}\ninfo-file = {}\nsyslog-socket = {}\n{settings}\n",
            server.socket.display(),
            run_dir.display(),
            info_file.display(),
            syslog_path.display()
        );
        write_private(&config, &text);
        Sandbox {
            dir,
            config,
            run_dir,
            info_file,
            syslog,
        }
    }

    /// A command for binary `name` (`freeze`, `thaw`) using this sandbox's config.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(bin(name));
        command
            .env("MYSQL_SNAPSHOT_CONFIG", &self.config)
            .stdin(Stdio::null());
        command
    }

    pub fn freeze(&self) -> Output {
        self.command("freeze").arg("freeze").output().unwrap()
    }

    pub fn thaw(&self, phase: &str) -> Output {
        self.command("thaw").arg(phase).output().unwrap()
    }

    /// The state file, parsed.
    pub fn state(&self) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.run_dir.join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn status(&self) -> String {
        self.state()
            .and_then(|s| s["status"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// The info file as a copy of the disk taken now would carry it.
    pub fn info(&self) -> serde_json::Value {
        let text = fs::read_to_string(&self.info_file)
            .unwrap_or_else(|e| panic!("the info file {}: {e}", self.info_file.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("the info file ({e}): {text}"))
    }

    /// After a thaw: the held record of the snapshot just thawed, which the info file (marked
    /// `released`) keeps under `last_consistent`.
    pub fn last_held(&self) -> serde_json::Value {
        last_held(self.info())
    }

    /// Asserts that a copy taken now would say it is not consistent, in `state`, with a reason
    /// containing `why` (see [`assert_copy_says`]); the info file.
    pub fn assert_copy_says(&self, state: &str, why: &str) -> serde_json::Value {
        assert_copy_says(self.info(), state, why)
    }

    /// The recorded locker PID.
    pub fn locker_pid(&self) -> Option<u32> {
        self.state()?["locker"]["pid"].as_u64().map(|p| p as u32)
    }

    /// Locker processes started for this sandbox.
    pub fn lockers(&self) -> Vec<u32> {
        lockers_for(&[&self.config])
    }

    /// Syslog lines received so far, joined.
    pub fn log(&mut self) -> String {
        self.syslog.drain().join("\n")
    }
}

/// The held record an info file marked `released` (after a thaw) keeps under `last_consistent`.
pub fn last_held(info: serde_json::Value) -> serde_json::Value {
    assert_eq!(
        info["state"], "released",
        "after the thaw the info file must say released: {info:#}"
    );
    assert_eq!(info["last_consistent"]["consistent"], true, "{info:#}");
    info["last_consistent"].clone()
}

/// Asserts that `info` (an info file) says its copy is not consistent, in `state`, with a reason
/// containing `why`, and carries no coordinates at its top level; returns it.
pub fn assert_copy_says(info: serde_json::Value, state: &str, why: &str) -> serde_json::Value {
    assert_eq!(info["format"], 2, "{info}");
    assert_eq!(
        info["consistent"], false,
        "a copy taken now would claim consistency: {info}"
    );
    assert_eq!(info["state"], state, "{info}");
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(why),
        "the reason must name {why:?}: {reason}"
    );
    for key in [
        "binlog",
        "gtid",
        "replicas",
        "seed_replica_sql",
        "clone_replica_sql",
        "lock",
    ] {
        assert!(
            info.get(key).is_none(),
            "`{key}` at the top level of a copy no lock covered: {info}"
        );
    }
    info
}

/// Locker processes started with any of these config files (their argv names the config).
pub fn lockers_for(configs: &[&Path]) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            // The detached writers (metrics, info-file marks) run the locker binary too; they
            // hold no lock and end within milliseconds.
            cmdline.contains("mysql-snapshot-locker")
                && !cmdline.contains("--write-metrics")
                && !cmdline.contains("--mark-info-file")
                && configs
                    .iter()
                    .any(|c| cmdline.contains(&*c.to_string_lossy()))
                && alive(*pid)
        })
        .collect()
}

/// Asserts that no locker of `sandbox` is left and that writes go through (within `limit`).
pub fn assert_nothing_left(server: &Server, sandbox: &Sandbox, limit: Duration) {
    assert!(
        wait_until(limit, || sandbox.lockers().is_empty()),
        "a locker is left behind: {:?}",
        sandbox.lockers()
    );
    assert!(
        wait_until(limit, || !server.writes_blocked()),
        "writes are still blocked: a lock is left behind"
    );
}

/// Writes `text` to `path` with mode 0600.
pub fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// True while a process with this PID exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let rest = s.rsplit(')').next().unwrap_or("");
            !rest.trim_start().starts_with('Z')
        })
        .unwrap_or(false)
}

/// Sends `signal` to `pid` with kill(1) (a process this test started).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Text of a process's output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
