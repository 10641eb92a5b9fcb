//! AWS Data Lifecycle Manager's pre/post scripts, replayed as CONTRACTS.md describes: DLM runs
//! the SSM Command document `packaging/aws/mysql-snapshot-ssm-document.yaml` with
//! `command` = `pre-script`, `post-script` or `dry-run` and its `executionId`; SSM pastes the
//! parameters into the `aws:runShellScript` text, writes it to a file and runs `sh -c <file>` as
//! root with a bare environment, reads its stdout/stderr to EOF, and DLM gives up at its
//! `ExecutionTimeout` (10 s by default). After a failed pre-script DLM runs no post-script.
//!
//! The document must answer with AWS's exit codes (201 pre failed, 202 post failed, 203 the lock
//! ended by itself before post, 206 server not ready) within those 10 s, and leave no lock and no
//! locker behind once the post-script (or max-lock-time) has ended the snapshot.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{
    assert_nothing_left, bin_dir, lockers_for, text, wait_until, write_private, Sandbox, Server,
    Syslog, TempDir,
};
use mysql::prelude::Queryable;
use serde_json::Value;

/// DLM's default `ExecutionTimeout` for a script.
const DLM_EXECUTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the script's exit its stdout/stderr may stay open (a child holding them would
/// hang SSM's read).
const EOF_AFTER_EXIT: Duration = Duration::from_secs(3);
/// The `PATH` the SSM agent gives the script (its environment is otherwise its own, not ours).
const SSM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// An execution id as DLM passes one.
const EXECUTION_ID: &str = "3f2b9c1e-7a4d-4e0b-9a51-0c6d2e8f1a77";

fn document_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/aws/mysql-snapshot-ssm-document.yaml")
}

/// The SSM document, parsed (YAML to JSON by python3's yaml module: no YAML crate here).
fn document() -> Value {
    harness::light();
    let yaml = fs::File::open(document_path()).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(yaml)
        .output()
        .expect("python3 is needed to read the SSM document (tests/run.sh installs python3-yaml)");
    assert!(
        out.status.success(),
        "the SSM document is not valid YAML (or python3-yaml is missing: tests/run.sh installs it): {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one step's `runCommand` lines as the SSM agent writes them to its script file, with the
/// parameters pasted in textually as SSM does; `None` leaves `executionId` at its default.
fn script(command: &str, execution_id: Option<&str>) -> String {
    let doc = document();
    let lines = doc["mainSteps"][0]["inputs"]["runCommand"]
        .as_array()
        .expect("runCommand is a list of lines");
    let body = lines
        .iter()
        .map(|line| line.as_str().expect("runCommand lines are strings"))
        .collect::<Vec<_>>()
        .join("\n");
    let default_id = doc["parameters"]["executionId"]["default"]
        .as_str()
        .expect("executionId has a default")
        .to_string();
    let execution_id = execution_id.map_or(default_id, String::from);
    let mut body = body;
    for (name, value) in [("command", command), ("executionId", execution_id.as_str())] {
        body = body
            .replace(&format!("{{{{ {name} }}}}"), value)
            .replace(&format!("{{{{{name}}}}}"), value);
    }
    assert!(
        !body.contains("{{"),
        "the script names a parameter the document does not declare:\n{body}"
    );
    body
}

/// What one script run gave back.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    fn describe(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstdout: {}\nstderr: {}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// The SSM agent running the document on the instance: the binaries' directory and the
/// environment variables the replay gives the script, on top of SSM's `PATH`.
struct Ssm {
    dir: TempDir,
    env: Vec<(String, OsString)>,
}

impl Ssm {
    fn new(sbin: &Path, config: &Path) -> Ssm {
        Ssm {
            dir: TempDir::new("ssm"),
            env: vec![
                ("MYSQL_SNAPSHOT_SBIN".into(), sbin.into()),
                ("MYSQL_SNAPSHOT_CONFIG".into(), config.into()),
            ],
        }
    }

    /// The real binaries against `sandbox`'s config.
    fn for_sandbox(sandbox: &Sandbox) -> Ssm {
        Ssm::new(&bin_dir(), &sandbox.config)
    }

    /// Runs the document with this `command` (and DLM's execution id) the way SSM and DLM do.
    fn run(&self, command: &str) -> Run {
        self.run_with(command, Some(EXECUTION_ID), &[])
    }

    /// Runs the document: writes the substituted script to a file, runs `sh -c <file>` with
    /// only SSM's `PATH`, the replay's variables and `extra`, reads both pipes to EOF, and kills
    /// the script at DLM's `ExecutionTimeout` (failing the test: DLM would have).
    fn run_with(&self, command: &str, execution_id: Option<&str>, extra: &[(&str, &str)]) -> Run {
        let file = self.dir.path().join("_script.sh");
        fs::write(&file, script(command, execution_id)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o700)).unwrap();
        let started = Instant::now();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&file)
            .env_clear()
            .env("PATH", SSM_PATH)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ];
        for (index, mut pipe) in readers.into_iter().enumerate() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = tx.send((index, String::from_utf8_lossy(&bytes).into_owned()));
            });
        }
        let mut status = None;
        let exited = wait_until(DLM_EXECUTION_TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command} was still running at DLM's ExecutionTimeout ({DLM_EXECUTION_TIMEOUT:?}): DLM would have killed it"
            );
        }
        let took = started.elapsed();
        let mut outputs = [String::new(), String::new()];
        let eof_by = Instant::now() + EOF_AFTER_EXIT;
        for _ in 0..2 {
            let left = eof_by.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((index, text)) => outputs[index] = text,
                Err(_) => panic!(
                    "{command} exited, but its stdout/stderr stayed open for {EOF_AFTER_EXIT:?} (a child holds them): SSM would hang reading them"
                ),
            }
        }
        let [stdout, stderr] = outputs;
        Run {
            code: status.unwrap().code(),
            stdout,
            stderr,
            took,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The document itself.

#[test]
fn the_ssm_document_declares_the_parameters_and_the_one_shell_step_dlm_calls() {
    let doc = document();
    assert_eq!(doc["schemaVersion"], "2.2", "{doc}");
    assert!(doc["description"].as_str().is_some_and(|d| !d.is_empty()));
    let parameters = doc["parameters"].as_object().unwrap();
    let mut names: Vec<&str> = parameters.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["command", "executionId"]);
    let command = &parameters["command"];
    assert_eq!(command["type"], "String");
    assert_eq!(
        command["allowedValues"],
        serde_json::json!(["pre-script", "post-script", "dry-run"])
    );
    let execution_id = &parameters["executionId"];
    assert_eq!(execution_id["type"], "String");
    assert!(
        execution_id["default"].is_string(),
        "executionId needs a default so that it may be omitted: {execution_id}"
    );
    let steps = doc["mainSteps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "exactly one step: {doc}");
    assert_eq!(steps[0]["action"], "aws:runShellScript");
    assert!(steps[0]["name"].is_string());
    assert!(steps[0]["inputs"]["runCommand"].is_array());
    assert!(
        script("pre-script", None).starts_with("#!/bin/sh\n"),
        "the script runs with sh"
    );
}

/// Whether python's `re.fullmatch` (close enough to SSM's regular expressions for this pattern)
/// accepts `value` for `pattern`.
fn pattern_accepts(pattern: &str, value: &str) -> bool {
    let out = Command::new("python3")
        .args([
            "-c",
            "import re, sys; sys.exit(0 if re.fullmatch(sys.argv[1], sys.argv[2]) else 1)",
            pattern,
            value,
        ])
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn the_execution_id_cannot_carry_shell_text_into_the_script() {
    let doc = document();
    let id = &doc["parameters"]["executionId"];
    let pattern = id["allowedPattern"]
        .as_str()
        .expect("executionId is pasted into the script: it needs an allowedPattern");
    assert!(pattern_accepts(pattern, EXECUTION_ID));
    assert!(pattern_accepts(pattern, id["default"].as_str().unwrap()));
    for hostile in ["x'; reboot; '", "$(reboot)", "`reboot`", "a b", "a\nb", ""] {
        assert!(
            !pattern_accepts(pattern, hostile),
            "allowedPattern {pattern} accepts {hostile:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch, against fake binaries that log their argv.

/// A directory of fake `mysql-snapshot-*` binaries: each logs its name and argv to `log`,
/// prints `$FAKE_OUTPUT` on stderr and exits with `$FAKE_EXIT`.
struct Fakes {
    dir: TempDir,
    log: PathBuf,
}

impl Fakes {
    fn new() -> Fakes {
        let dir = TempDir::new("fakes");
        let log = dir.path().join("calls.log");
        for name in [
            "mysql-snapshot-freeze",
            "mysql-snapshot-thaw",
            "mysql-snapshot-locker",
        ] {
            let path = dir.path().join(name);
            fs::write(
                &path,
                "#!/bin/sh\n\
                 { printf '%s' \"${0##*/}\"; for arg; do printf ' [%s]' \"$arg\"; done; echo; } >>\"$FAKE_LOG\"\n\
                 if [ -n \"${FAKE_OUTPUT-}\" ]; then printf '%s\\n' \"$FAKE_OUTPUT\" >&2; fi\n\
                 exit \"${FAKE_EXIT:-0}\"\n",
            )
            .unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fakes { dir, log }
    }

    /// Runs the document with `command`, the fakes exiting `exit` after printing `output`;
    /// returns the run and the calls the fakes saw.
    fn run(&self, command: &str, id: Option<&str>, exit: i32, output: &str) -> (Run, Vec<String>) {
        let _ = fs::remove_file(&self.log);
        let ssm = Ssm::new(
            self.dir.path(),
            Path::new("/nonexistent/mysql-snapshot.cnf"),
        );
        let exit = exit.to_string();
        let log = self.log.to_string_lossy().into_owned();
        let run = ssm.run_with(
            command,
            id,
            &[
                ("FAKE_EXIT", &exit),
                ("FAKE_OUTPUT", output),
                ("FAKE_LOG", &log),
            ],
        );
        let calls = fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        (run, calls)
    }
}

fn freeze_call(id: &str) -> String {
    format!(
        "mysql-snapshot-freeze [--sync-filesystems] [--snapshot-timeout] [5] [--caller] [aws-dlm executionId={id}] [freeze]"
    )
}

fn thaw_call(id: &str) -> String {
    format!("mysql-snapshot-thaw [--caller] [aws-dlm executionId={id}] [thaw]")
}

fn check_call(id: &str) -> String {
    format!("mysql-snapshot-freeze [--sync-filesystems] [--caller] [aws-dlm executionId={id}] [--check]")
}

#[test]
fn each_command_runs_its_binary_with_the_arguments_dlm_needs_and_prints_its_output() {
    let fakes = Fakes::new();
    for (command, call) in [
        ("pre-script", freeze_call(EXECUTION_ID)),
        ("post-script", thaw_call(EXECUTION_ID)),
        ("dry-run", check_call(EXECUTION_ID)),
    ] {
        let said = format!("event=said-by-{command}");
        let (run, calls) = fakes.run(command, Some(EXECUTION_ID), 0, &said);
        assert_eq!(run.code, Some(0), "{command}: {}", run.describe());
        assert_eq!(calls, [call], "{command}: {}", run.describe());
        assert!(
            run.stdout.contains(&said),
            "{command}: the binary's output is not in what SSM keeps: {}",
            run.describe()
        );
    }
    // DLM may omit executionId: the default stands in.
    let default_id = document()["parameters"]["executionId"]["default"]
        .as_str()
        .unwrap()
        .to_string();
    let (run, calls) = fakes.run("pre-script", None, 0, "");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(calls, [freeze_call(&default_id)]);
}

#[test]
fn failures_exit_with_the_codes_aws_documents_for_dlm_scripts() {
    let fakes = Fakes::new();
    let cases: &[(&str, i32, &str, i32)] = &[
        // command, binary's exit, binary's output, the document's exit
        ("pre-script", 1, "event=refused no lock taken: no quiet moment", 201),
        ("pre-script", 1, "event=busy another snapshot is in progress", 201),
        ("pre-script", 7, "event=refused (error-exit-code = 7)", 201),
        ("pre-script", 2, "bad arguments", 201),
        (
            "pre-script",
            1,
            "event=unreachable cannot connect to the server at /run/mysqld/mysqld.sock",
            206,
        ),
        (
            "post-script",
            1,
            "event=lost the lock taken at T ended at U before thaw: max-lock-time (60 s) reached before thaw",
            203,
        ),
        (
            "post-script",
            1,
            "event=lost the locker (PID 42) died while holding the lock",
            202,
        ),
        ("post-script", 1, "event=refused cannot open the run dir", 202),
        ("dry-run", 1, "event=unreachable cannot connect to the server", 206),
        ("dry-run", 1, "FAIL privileges: the account lacks RELOAD", 201),
    ];
    for &(command, exit, output, expected) in cases {
        let (run, calls) = fakes.run(command, Some(EXECUTION_ID), exit, output);
        assert_eq!(
            run.code,
            Some(expected),
            "{command} with a binary that exits {exit} saying {output:?}: {}",
            run.describe()
        );
        assert_eq!(calls.len(), 1, "{command}: {calls:?}");
        assert!(run.stdout.contains(output), "{}", run.describe());
    }
    // A missing binary is a failure too, not a success.
    let empty = TempDir::new("nosbin");
    let run = Ssm::new(empty.path(), Path::new("/nonexistent")).run("pre-script");
    assert_eq!(run.code, Some(201), "{}", run.describe());
    let run = Ssm::new(empty.path(), Path::new("/nonexistent")).run("post-script");
    assert_eq!(run.code, Some(202), "{}", run.describe());
}

#[test]
fn an_unknown_command_exits_1_with_a_message_and_runs_no_binary() {
    let fakes = Fakes::new();
    for command in ["freeze", "", "pre-script post-script"] {
        let (run, calls) = fakes.run(command, Some(EXECUTION_ID), 0, "");
        assert_eq!(run.code, Some(1), "{command:?}: {}", run.describe());
        assert!(calls.is_empty(), "{command:?} ran {calls:?}");
        assert!(
            run.output().contains("unknown command"),
            "{command:?}: {}",
            run.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Contract replays against a private MariaDB with the real binaries.

#[test]
fn dlm_pre_script_holds_a_synced_lock_until_the_post_script_releases_it() {
    let server = Server::start();
    let mut sandbox = Sandbox::new(&server, "");
    let ssm = Ssm::for_sandbox(&sandbox);
    let pre = ssm.run("pre-script");
    assert_eq!(pre.code, Some(0), "{}", pre.describe());
    assert!(
        server.writes_blocked(),
        "pre-script succeeded, but writes go through"
    );
    let said = pre.output();
    assert!(said.contains("event=locked"), "{}", pre.describe());
    assert!(
        said.contains("event=synced"),
        "EBS takes no fsfreeze: the pre-script must sync the server's filesystems: {}",
        pre.describe()
    );
    assert!(
        sandbox.log().contains(EXECUTION_ID),
        "freeze's log does not name DLM's execution: {}",
        sandbox.log()
    );
    let post = ssm.run("post-script");
    assert_eq!(post.code, Some(0), "{}", post.describe());
    assert!(
        post.output().contains("event=thawed"),
        "{}",
        post.describe()
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}

#[test]
fn dlm_pre_script_behind_a_long_write_fails_with_201_within_dlms_timeout_and_leaves_no_lock() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "long-query-threshold = 0");
    let ssm = Ssm::for_sandbox(&sandbox);
    let mut conn = server.conn();
    let long = std::thread::spawn(move || {
        let _ = conn.query_drop("UPDATE snap.my SET v = v + 1 WHERE SLEEP(20) = 0");
    });
    assert!(wait_until(Duration::from_secs(5), || !server
        .statements_like("SLEEP(20)")
        .is_empty()));
    let pre = ssm.run("pre-script");
    assert_eq!(pre.code, Some(201), "{}", pre.describe());
    assert!(
        pre.took < DLM_EXECUTION_TIMEOUT,
        "took {:?}: DLM's ExecutionTimeout would have fired first",
        pre.took
    );
    assert!(pre.output().contains("event=refused"), "{}", pre.describe());
    // DLM runs no post-script after a failed pre-script: nothing may be left to release.
    assert!(
        sandbox.lockers().is_empty(),
        "a locker outlived the failed pre-script: {:?}",
        sandbox.lockers()
    );
    assert_nothing_left(&server, &sandbox, Duration::from_secs(5));
    // ExecuteOperationOnScriptFailure (default true): DLM snapshots anyway, and that copy says
    // why it is not consistent.
    sandbox.assert_copy_says("refused", "no lock within snapshot-timeout");
    for id in server.statements_like("SLEEP(20)") {
        let _ = server.conn().query_drop(format!("KILL QUERY {id}"));
    }
    long.join().unwrap();
}

#[test]
fn a_post_script_after_max_lock_time_reports_203() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "max-lock-time = 3");
    let ssm = Ssm::for_sandbox(&sandbox);
    let pre = ssm.run("pre-script");
    assert_eq!(pre.code, Some(0), "{}", pre.describe());
    assert!(
        server.writes_blocked(),
        "pre-script succeeded, but writes go through"
    );
    // The post-script never comes in time: the locker releases by itself at max-lock-time.
    assert_nothing_left(&server, &sandbox, Duration::from_secs(15));
    let post = ssm.run("post-script");
    assert_eq!(post.code, Some(203), "{}", post.describe());
    assert!(
        post.output().contains("max-lock-time"),
        "{}",
        post.describe()
    );
    // A snapshot that started after the release carries a copy that says so.
    sandbox.assert_copy_says("released", "max-lock-time");
}

#[test]
fn pre_script_and_dry_run_report_206_when_the_server_is_not_reachable() {
    // A config whose socket names a path where no server listens (a stopped server).
    let dir = TempDir::new("noserver");
    let run_dir = dir.path().join("run");
    let info_file = dir.path().join("snapshot-info.json");
    let syslog_path = dir.path().join("syslog.sock");
    let _syslog = Syslog::bind(&syslog_path);
    let config = dir.path().join("mysql-snapshot.cnf");
    write_private(
        &config,
        &format!(
            "[client]\nuser = root\nsocket = {}\n\n[mysql-snapshot]\nrun-dir = {}\ninfo-file = {}\nsyslog-socket = {}\n",
            dir.path().join("mysqld.sock").display(),
            run_dir.display(),
            info_file.display(),
            syslog_path.display()
        ),
    );
    let ssm = Ssm::new(&bin_dir(), &config);
    for command in ["pre-script", "dry-run"] {
        let run = ssm.run(command);
        assert_eq!(run.code, Some(206), "{command}: {}", run.describe());
        assert!(
            run.output().contains("event=unreachable"),
            "{command}: {}",
            run.describe()
        );
        assert!(
            wait_until(Duration::from_secs(5), || lockers_for(&[&config])
                .is_empty()),
            "{command} left a locker behind: {:?}",
            lockers_for(&[&config])
        );
    }
}

#[test]
fn dry_run_on_a_healthy_server_succeeds_and_leaves_nothing_behind() {
    let server = Server::start();
    let sandbox = Sandbox::new(&server, "");
    let ssm = Ssm::for_sandbox(&sandbox);
    let run = ssm.run("dry-run");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
    // A real pre-script and post-script still work after the rehearsal.
    let pre = ssm.run("pre-script");
    assert_eq!(pre.code, Some(0), "{}", pre.describe());
    let post = ssm.run("post-script");
    assert_eq!(post.code, Some(0), "{}", post.describe());
    assert_nothing_left(&server, &sandbox, Duration::from_secs(10));
}
