//! Google Compute Engine's guest agent and Azure Backup's VMSnapshot ScriptRunner replayed as
//! CONTRACTS.md describes, against a private MariaDB, from a DESTDIR install of the real
//! binaries (`install.sh --gcp` / `--azure`).
//!
//! Google: `pre.sh` / `post.sh` exec'd directly with one argument (a comma-separated disk list),
//! a systemd service's bare environment, stdout and stderr on pipes the agent reads to EOF (Go's
//! `cmd.Wait`), SIGKILL of the direct child at the timeout (the snapshot then fails), and no
//! post after a failed pre. Azure: `sh <script> <params…>` as named in the plugin config, pipes
//! that are never read (held open), no kill at the timeout, and post even after a failed pre.
//! Neither platform freezes the filesystems here (Google never does; the replay does not FIFREEZE
//! for Azure either): what is under test is the lock, the sync, and that nothing is left behind.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use harness::{assert_nothing_left, bin_dir, text, wait_until, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;

/// The disk list google-guest-agent passes.
const DISKS: &str = "persistent-disk-0,disk-1";
/// PATH of a systemd service (google-guest-agent.service sets no other).
const SERVICE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The Google agent's default `timeout_in_seconds`.
const GOOGLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How soon after the script's exit its pipes must reach EOF: nothing it leaves running (the
/// locker holds the lock on after freeze exits) may keep them open.
const PIPE_EOF_LIMIT: Duration = Duration::from_secs(2);
/// Output the Azure scripts may leave in pipes nobody reads (a pipe holds 64 KiB).
const AZURE_OUTPUT_LIMIT: usize = 4096;

/// A DESTDIR install of the real binaries and the hooks `flag` selects.
struct Installed {
    root: TempDir,
}

impl Installed {
    fn new(flag: &str) -> Installed {
        let root = TempDir::new("cloud");
        let install = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
        let out = Command::new(&install)
            .args(["--no-build", "--bin-dir"])
            .arg(bin_dir())
            .arg(flag)
            .env("DESTDIR", root.path())
            .env("PREFIX", "/usr/local")
            .output()
            .unwrap();
        assert!(out.status.success(), "install.sh {flag}: {}", text(&out));
        Installed { root }
    }

    /// `path` (absolute on the target system) inside the DESTDIR.
    fn at(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    fn sbin(&self) -> PathBuf {
        self.at("/usr/local/sbin")
    }
}

/// Reads a pipe to EOF on a thread of its own and reports what it read and when EOF came.
fn read_to_eof(mut pipe: impl Read + Send + 'static, done: mpsc::Sender<(Vec<u8>, Instant)>) {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = done.send((bytes, Instant::now()));
    });
}

/// google-guest-agent's snapshot handler: runs `/etc/google/snapshots/{pre,post}.sh`.
struct GoogleAgent {
    installed: Installed,
    /// `[Snapshots] timeout_in_seconds`.
    timeout: Duration,
}

/// A script the agent has started: its PID, and the two pipes being read on their own threads.
struct GoogleScript {
    child: Child,
    started: Instant,
    timeout: Duration,
    pipes: Receiver<(Vec<u8>, Instant)>,
}

/// What one script run came to, as the agent sees it.
struct GoogleRun {
    status: ExitStatus,
    /// The agent's timeout fired and it SIGKILLed the script.
    killed: bool,
    /// stdout and stderr, as read to EOF.
    output: String,
}

impl GoogleAgent {
    fn install() -> GoogleAgent {
        GoogleAgent {
            installed: Installed::new("--gcp"),
            timeout: GOOGLE_TIMEOUT,
        }
    }

    /// Execs `/etc/google/snapshots/<script>` directly (shebang and exec bit) with the disk list,
    /// in a systemd service's environment, stdout and stderr on pipes read to EOF.
    fn start(&self, sandbox: &Sandbox, script: &str) -> GoogleScript {
        let path = self
            .installed
            .at(&format!("/etc/google/snapshots/{script}"));
        let mut child = Command::new(&path)
            .arg(DISKS)
            .env_clear()
            .env("PATH", SERVICE_PATH)
            .env("MYSQL_SNAPSHOT_SBIN", self.installed.sbin())
            .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("exec {}: {e}", path.display()));
        let (done, pipes) = mpsc::channel();
        read_to_eof(child.stdout.take().unwrap(), done.clone());
        read_to_eof(child.stderr.take().unwrap(), done);
        GoogleScript {
            child,
            started: Instant::now(),
            timeout: self.timeout,
            pipes,
        }
    }

    fn run(&self, sandbox: &Sandbox, script: &str) -> GoogleRun {
        self.start(sandbox, script).finish()
    }
}

impl GoogleScript {
    /// Waits as the agent does: for the PID until the timeout (then SIGKILL to that PID only),
    /// then for both pipes to reach EOF, which must come within `PIPE_EOF_LIMIT` of the exit.
    fn finish(mut self) -> GoogleRun {
        let deadline = self.started + self.timeout;
        let mut killed = false;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                // Go's exec.CommandContext: Process.Kill, i.e. SIGKILL to the direct child.
                self.child.kill().unwrap();
                killed = true;
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let exited = Instant::now();
        let mut output = String::new();
        for _ in 0..2 {
            let left = (exited + PIPE_EOF_LIMIT).saturating_duration_since(Instant::now());
            let (bytes, eof) = self.pipes.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "the script's pipes did not reach EOF within {PIPE_EOF_LIMIT:?} of its exit \
                     ({status:?}): something it left running holds them, and the agent's Wait \
                     would hang the snapshot request"
                )
            });
            assert!(eof.duration_since(exited) <= PIPE_EOF_LIMIT);
            output.push_str(&String::from_utf8_lossy(&bytes));
        }
        GoogleRun {
            status,
            killed,
            output,
        }
    }
}

/// Azure Backup's VMSnapshot ScriptRunner, reading the installed plugin config.
struct AzurePlugin {
    installed: Installed,
}

/// One script the plugin ran: its exit status if it ended within `timeoutInSeconds` (else it
/// is left running, unkilled), and its pipes, held open and never read.
struct AzureRun {
    child: Child,
    status: Option<ExitStatus>,
    stdout: ChildStdout,
    stderr: ChildStderr,
}

impl AzurePlugin {
    const CONFIG: &'static str = "/etc/azure/VMSnapshotScriptPluginConfig.json";

    fn install() -> AzurePlugin {
        AzurePlugin {
            installed: Installed::new("--azure"),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.installed.at(Self::CONFIG)
    }

    fn config(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Changes one key of the installed plugin config (as an administrator would).
    fn set(&self, key: &str, value: serde_json::Value) {
        let mut config = self.config();
        config[key] = value;
        std::fs::write(
            self.config_path(),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// The plugin skips a script or config that is not root-owned or has group/other bits
    /// (and a config with the owner's exec bit): the install must pass that check.
    fn assert_permissions_pass(&self, path: &Path) {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{} has group/other bits: the plugin would skip it",
            path.display()
        );
        if path == self.config_path() {
            assert_eq!(meta.mode() & 0o100, 0, "the config must not be executable");
        }
        if harness_runs_as_root() {
            assert_eq!(meta.uid(), 0, "{} is not root-owned", path.display());
        }
    }

    /// Runs the script the config names under `<phase>ScriptLocation` as `sh <script> <params…>`
    /// and waits up to `timeoutInSeconds` for it, without killing it at the timeout.
    fn run(&self, sandbox: &Sandbox, phase: &str) -> AzureRun {
        let config = self.config();
        assert_eq!(config["pluginName"], "ScriptRunner");
        self.assert_permissions_pass(&self.config_path());
        let location = config[format!("{phase}ScriptLocation")].as_str().unwrap();
        let script = self.installed.at(location);
        self.assert_permissions_pass(&script);
        let params: Vec<String> = config[format!("{phase}ScriptParams")]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let timeout = Duration::from_secs(config["timeoutInSeconds"].as_u64().unwrap_or(10));
        let mut child = Command::new("sh")
            .arg(&script)
            .args(&params)
            .env_clear()
            .env("PATH", SERVICE_PATH)
            .env("MYSQL_SNAPSHOT_SBIN", self.installed.sbin())
            .env("MYSQL_SNAPSHOT_CONFIG", &sandbox.config)
            .env("MYSQL_SNAPSHOT_AZURE_CONFIG", self.config_path())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let deadline = Instant::now() + timeout;
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(done) = child.try_wait().unwrap() {
                status = Some(done);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        AzureRun {
            child,
            status,
            stdout,
            stderr,
        }
    }
}

impl AzureRun {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A script the plugin gave up on: waits (up to `limit`) for it to end by itself.
    fn end_by_itself(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the script is still running {limit:?} later"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Once the run is over (the plugin never reads them): what the script left in its pipes,
    /// which must be small enough never to fill one.
    fn leftover_output(self) -> String {
        assert!(self.status.is_some(), "read only after the script ended");
        let (done, pipes) = mpsc::channel();
        read_to_eof(self.stdout, done.clone());
        read_to_eof(self.stderr, done);
        let mut output = Vec::new();
        for _ in 0..2 {
            let (bytes, _) = pipes
                .recv_timeout(Duration::from_secs(5))
                .expect("something the script left running holds its pipes");
            output.extend_from_slice(&bytes);
        }
        assert!(
            output.len() < AZURE_OUTPUT_LIMIT,
            "{} bytes of output in pipes nobody reads",
            output.len()
        );
        String::from_utf8_lossy(&output).into_owned()
    }
}

fn harness_runs_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A MyISAM write that runs 20 s: no quiet moment with `long-query-threshold = 0`, and a lock
/// attempt behind it waits. Returns once the server shows it running.
fn long_write(server: &Server) -> std::thread::JoinHandle<()> {
    let mut conn = server.conn();
    let write = std::thread::spawn(move || {
        let _ = conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    });
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    write
}

fn end_long_write(server: &Server, write: std::thread::JoinHandle<()>) {
    for id in server.statements_like("SLEEP(20)") {
        let _ = server.conn().query_drop(format!("KILL QUERY {id}"));
    }
    write.join().unwrap();
}

/// The syslog lines so far once one of them contains `needle` (waiting up to 5 s for it).
fn log_with(sandbox: &mut Sandbox, needle: &str) -> String {
    let mut log = String::new();
    let found = wait_until(Duration::from_secs(5), || {
        log = sandbox.log();
        log.contains(needle)
    });
    assert!(found, "no log line contains {needle:?}:\n{log}");
    log
}

/// The first log line containing every one of `words`.
fn line_with<'a>(log: &'a str, words: &[&str]) -> &'a str {
    log.lines()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .unwrap_or_else(|| panic!("no log line contains all of {words:?}:\n{log}"))
}

// ---------------------------------------------------------------- Google Compute Engine

#[test]
fn google_pre_then_post_holds_the_lock_and_syncs_because_google_does_not_freeze() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "");
    let agent = GoogleAgent::install();

    let pre = agent.run(&sandbox, "pre.sh");
    assert!(
        pre.status.success() && !pre.killed,
        "pre.sh: {:?}\n{}",
        pre.status,
        pre.output
    );
    assert!(
        !sandbox.lockers().is_empty(),
        "the locker holds the lock on after pre.sh exited, and its pipes reached EOF anyway"
    );
    assert!(
        server.writes_blocked(),
        "pre.sh succeeded, but writes go through"
    );
    assert!(pre.output.contains("event=locked"), "{}", pre.output);
    let log = log_with(&mut sandbox, "event=synced");
    line_with(&log, &["event=locked"]);
    assert!(
        log.contains(&format!("disks={DISKS}")),
        "freeze logs what the agent passed (--caller):\n{log}"
    );

    let post = agent.run(&sandbox, "post.sh");
    assert!(
        post.status.success() && !post.killed,
        "post.sh: {:?}\n{}",
        post.status,
        post.output
    );
    log_with(&mut sandbox, "event=thawed");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn google_pre_that_finds_no_quiet_moment_fails_the_snapshot_and_leaves_no_lock() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 3");
    let agent = GoogleAgent::install();
    let write = long_write(&server);

    let pre = agent.run(&sandbox, "pre.sh");
    assert!(
        !pre.status.success() && !pre.killed,
        "pre.sh must fail by itself, within the agent's timeout: {:?}\n{}",
        pre.status,
        pre.output
    );
    assert!(pre.output.contains("event=refused"), "{}", pre.output);
    let log = log_with(&mut sandbox, "event=refused");
    assert!(!log.contains("event=locked"), "{log}");
    // The agent runs no post.sh after a failed pre.sh: nothing may be left to release.
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    end_long_write(&server, write);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn google_post_that_never_comes_ends_at_max_lock_time_and_a_late_post_reports_the_loss() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "max-lock-time = 3");
    let agent = GoogleAgent::install();

    let pre = agent.run(&sandbox, "pre.sh");
    assert!(
        pre.status.success(),
        "pre.sh: {:?}\n{}",
        pre.status,
        pre.output
    );
    assert!(server.writes_blocked());
    // No post.sh: the locker releases by itself after max-lock-time.
    assert_nothing_left(&server, &sandbox, Duration::from_secs(15));

    let post = agent.run(&sandbox, "post.sh");
    assert!(
        !post.status.success() && !post.killed,
        "a post.sh after the lock was lost must fail: {:?}\n{}",
        post.status,
        post.output
    );
    line_with(&post.output, &["event=lost", "max-lock-time"]);
    let log = log_with(&mut sandbox, "event=lost");
    line_with(&log, &["event=lost", "max-lock-time"]);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    sandbox.assert_copy_says("released", "max-lock-time");
}

#[test]
fn google_timeout_sigkills_pre_mid_wait_and_leaves_no_lock_no_locker_and_closed_pipes() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 120");
    let mut agent = GoogleAgent::install();
    agent.timeout = Duration::from_secs(5);
    let write = long_write(&server);

    let pre = agent.start(&sandbox, "pre.sh");
    assert!(
        wait_until(Duration::from_secs(5), || sandbox.status() == "starting"),
        "freeze is waiting for a quiet moment when the agent's timeout fires"
    );
    // finish() asserts that the pipes reach EOF within PIPE_EOF_LIMIT of the SIGKILL.
    let pre = pre.finish();
    assert!(
        pre.killed,
        "pre.sh ended before the timeout: {:?}",
        pre.status
    );
    assert!(!pre.status.success());
    // The locker notices that freeze is gone, while the long write still runs: no lock, ever.
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    assert!(
        !server.statements_like("SLEEP(20)").is_empty(),
        "checked while the long write still runs (a locker still waiting would lock after it)"
    );
    // The snapshot fails, but anything that copies the disk now finds no lock claimed.
    sandbox.assert_copy_says("refused", "freeze ended without reporting success");
    end_long_write(&server, write);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    let log = sandbox.log();
    assert!(!log.contains("event=locked"), "{log}");
}

// ---------------------------------------------------------------- Azure Backup

#[test]
fn azure_pre_then_post_holds_the_lock_and_syncs_only_when_the_plugin_does_not_freeze() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "");
    let plugin = AzurePlugin::install();

    // The installed config: the plugin freezes the filesystems itself.
    let pre = plugin.run(&sandbox, "pre");
    assert!(pre.succeeded(), "pre: {:?}", pre.status);
    assert!(
        server.writes_blocked(),
        "pre succeeded, but writes go through"
    );
    let log = log_with(&mut sandbox, "event=locked");
    assert!(
        log.contains("azure-vmsnapshot"),
        "freeze logs its caller:\n{log}"
    );
    assert!(
        !log.contains("event=synced"),
        "no sync asked for: the plugin freezes\n{log}"
    );
    let post = plugin.run(&sandbox, "post");
    assert!(post.succeeded(), "post: {:?}", post.status);
    log_with(&mut sandbox, "event=thawed");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    let output = pre.leftover_output() + &post.leftover_output();
    assert!(output.contains("event=locked"), "{output}");

    // "fsFreezeEnabled": false: nobody freezes, so the pre-script has freeze sync.
    plugin.set("fsFreezeEnabled", serde_json::Value::Bool(false));
    let pre = plugin.run(&sandbox, "pre");
    assert!(pre.succeeded(), "pre: {:?}", pre.status);
    assert!(server.writes_blocked());
    log_with(&mut sandbox, "event=synced");
    let post = plugin.run(&sandbox, "post");
    assert!(post.succeeded(), "post: {:?}", post.status);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    let thawed = sandbox.log().matches("event=thawed").count();
    assert_eq!(thawed, 2, "two snapshots, two thaws");
    pre.leftover_output();
    post.leftover_output();
}

#[test]
fn azure_pre_that_finds_no_quiet_moment_fails_and_the_post_that_still_runs_is_a_clean_no_op() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 3");
    let plugin = AzurePlugin::install();
    let write = long_write(&server);

    let pre = plugin.run(&sandbox, "pre");
    let status = pre.status.expect("pre ends within timeoutInSeconds");
    assert!(!status.success(), "pre must fail: no quiet moment");
    let log = log_with(&mut sandbox, "event=refused");
    assert!(!log.contains("event=locked"), "{log}");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));

    // Azure runs post even after a failed pre: it must release nothing and exit 0.
    let post = plugin.run(&sandbox, "post");
    assert!(
        post.succeeded(),
        "post after a failed pre: {:?}",
        post.status
    );
    log_with(&mut sandbox, "event=idle");
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    // continueBackupOnFailure: the snapshot Azure takes anyway says it was refused, and why.
    sandbox.assert_copy_says("refused", "no lock within snapshot-timeout");
    end_long_write(&server, write);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    pre.leftover_output();
    post.leftover_output();
}

#[test]
fn azure_post_that_never_comes_ends_at_max_lock_time_and_a_late_post_reports_the_loss() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "max-lock-time = 3");
    let plugin = AzurePlugin::install();

    let pre = plugin.run(&sandbox, "pre");
    assert!(pre.succeeded(), "pre: {:?}", pre.status);
    assert!(server.writes_blocked());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(15));

    let post = plugin.run(&sandbox, "post");
    let status = post.status.expect("post ends within timeoutInSeconds");
    assert!(
        !status.success(),
        "a post after the lock was lost must fail"
    );
    let log = log_with(&mut sandbox, "event=lost");
    line_with(&log, &["event=lost", "max-lock-time"]);
    let output = post.leftover_output();
    line_with(&output, &["event=lost", "max-lock-time"]);
    sandbox.assert_copy_says("released", "max-lock-time");
    pre.leftover_output();
}

#[test]
fn azure_post_after_a_pre_that_outlived_the_plugin_timeout_stops_that_freeze_and_leaves_no_lock() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "long-query-threshold = 0\nsnapshot-timeout = 120");
    let plugin = AzurePlugin::install();
    plugin.set("timeoutInSeconds", serde_json::json!(3));
    let write = long_write(&server);

    // The plugin gives up on pre after 3 s, does not kill it, and goes on to post.
    let mut pre = plugin.run(&sandbox, "pre");
    assert!(pre.status.is_none(), "pre ended: {:?}", pre.status);
    assert_eq!(sandbox.status(), "starting", "freeze still waits");
    let post = plugin.run(&sandbox, "post");
    let status = post.status.expect("post ends within timeoutInSeconds");
    assert!(
        !status.success(),
        "thaw stopped a freeze that never locked: the snapshot has no lock"
    );
    let pre_status = pre.end_by_itself(Duration::from_secs(10));
    assert!(
        !pre_status.success(),
        "the stopped freeze does not report success"
    );
    // While the long write still runs, and after it: no lock, no locker.
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    end_long_write(&server, write);
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    let log = sandbox.log();
    assert!(!log.contains("event=locked"), "{log}");
    pre.leftover_output();
    post.leftover_output();
}
