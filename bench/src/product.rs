//! The product under test: the release binaries of freeze and thaw, run one process per phase as a
//! hypervisor agent runs them, with a config of the benchmark's own (run-dir on tmpfs as /run is in
//! production, info file on the disk, a syslog socket the benchmark reads).
//!
//! It only runs the binaries and reads what they leave behind; it never changes the product, and
//! it never takes or releases a lock itself.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harness::{write_private, Syslog, TempDir};

use crate::flavour::{Mode, Target};
use crate::kernel::{self, Usage};

/// A finished run of one binary.
#[derive(Debug)]
pub(crate) struct Finished {
    /// From just before the spawn to the exit being reaped.
    pub(crate) elapsed: Duration,
    pub(crate) usage: Usage,
    pub(crate) stderr: String,
}

impl Finished {
    pub(crate) fn ok(&self) -> bool {
        self.usage.code == Some(0)
    }
}

/// A binary started and not yet waited for.
pub(crate) struct Running {
    pub(crate) started: Instant,
    child: Child,
}

impl Running {
    pub(crate) fn finish(mut self) -> Finished {
        let usage = kernel::wait(self.child.id()).expect("wait for a child we started");
        let elapsed = self.started.elapsed();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        Finished {
            elapsed,
            usage,
            stderr,
        }
    }
}

/// Starts `command` (stdin and stdout on /dev/null, stderr kept) and notes when.
pub(crate) fn spawn(command: &mut Command) -> Running {
    spawn_with_stderr(command, Stdio::piped())
}

/// Starts `command` with stderr going to `stderr` (/dev/null when a descendant that outlives it,
/// such as a tracer, would hold a pipe open).
pub(crate) fn spawn_with_stderr(command: &mut Command, stderr: Stdio) -> Running {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let child = command.spawn().expect("start a benchmarked binary");
    Running { started, child }
}

/// One config, run-dir, info file and syslog socket for the product.
pub(crate) struct Product {
    bin_dir: PathBuf,
    dir: TempDir,
    pub(crate) config: PathBuf,
    pub(crate) run_dir: PathBuf,
    syslog: Syslog,
}

impl Product {
    /// A config for `target` with the given `[mysql-snapshot]` settings (one per line).
    pub(crate) fn new(bin_dir: &Path, target: &dyn Target, settings: &str) -> Product {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = TempDir::new("bench");
        let run_dir = PathBuf::from(format!(
            "/dev/shm/mss-bench-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&run_dir);
        let info_file = dir.path().join("info").join("snapshot-info.json");
        std::fs::create_dir_all(info_file.parent().expect("info file has a directory"))
            .expect("create the info directory");
        let syslog_path = dir.path().join("syslog.sock");
        let syslog = Syslog::bind(&syslog_path);
        let config = dir.path().join("mysql-snapshot.cnf");
        let text = format!(
            "[client]\nuser = root\nsocket = {}\n\n[mysql-snapshot]\nrun-dir = {}\ninfo-file = {}\nsyslog-socket = {}\n{settings}\n",
            target.socket().display(),
            run_dir.display(),
            info_file.display(),
            syslog_path.display()
        );
        write_private(&config, &text);
        Product {
            bin_dir: bin_dir.to_path_buf(),
            dir,
            config,
            run_dir,
            syslog,
        }
    }

    /// `mysql-snapshot-<program>` with this config in the environment.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(format!("mysql-snapshot-{program}")));
        command
            .env("MYSQL_SNAPSHOT_CONFIG", &self.config)
            .current_dir("/");
        command
    }

    pub(crate) fn freeze_command(&self, mode: Mode) -> Command {
        let mut command = self.command("freeze");
        command.args(["freeze", "--lock-mode", mode.name()]);
        command
    }

    pub(crate) fn thaw_command(&self) -> Command {
        let mut command = self.command("thaw");
        command.arg("thaw");
        command
    }

    pub(crate) fn freeze(&self, mode: Mode) -> Finished {
        spawn(&mut self.freeze_command(mode)).finish()
    }

    pub(crate) fn thaw(&self) -> Finished {
        spawn(&mut self.thaw_command()).finish()
    }

    /// The state file, parsed.
    pub(crate) fn state(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.run_dir.join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub(crate) fn status(&self) -> String {
        self.state()
            .and_then(|s| s["status"].as_str().map(String::from))
            .unwrap_or_default()
    }

    pub(crate) fn locker_pid(&self) -> Option<u32> {
        self.state()?["locker"]["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
    }

    /// Syslog lines received since the last call.
    pub(crate) fn take_log(&mut self) -> Vec<String> {
        let lines = self.syslog.drain().to_vec();
        self.syslog.lines.clear();
        lines
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Product {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Reaps locker `pid` (ours as the subreaper once freeze has exited) within `limit`.
pub(crate) fn reap_locker(pid: u32, limit: Duration) -> Option<Usage> {
    let until = Instant::now() + limit;
    loop {
        match kernel::try_wait(pid) {
            Ok(Some(usage)) => return Some(usage),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) | Err(_) => return None,
        }
    }
}
