//! `metrics-file`: the Prometheus textfile that freeze and thaw keep, checked by Debian's real
//! `promtool` after each kind of end, served by a real `prometheus-node-exporter` (loopback port,
//! only the textfile collector), and its faults: a missing, read-only or frozen directory and a
//! garbage file never change an exit status or hold up an exit.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::loopfs::{self, LoopMount};
use harness::{alive, signal, text, wait_until, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;

/// The samples of a metrics text, `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `promtool check metrics` on `text`: its complaints, or `None` when it accepts it.
pub(crate) fn promtool_rejects(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; tests/run.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file after a step: promtool accepts it; its samples. The writer has normally finished
/// when freeze or thaw exits, but is left behind past 100 ms (a loaded machine): `ready` says when
/// the step's values are in, waited for at most 5 s.
fn checked_when(
    path: &Path,
    step: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let in_time = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(path).is_ok_and(|text| ready(&samples(&text)))
    });
    let text = read(path);
    assert!(in_time, "the file does not show {step} after 5 s:\n{text}");
    if let Some(complaint) = promtool_rejects(&text) {
        panic!("promtool rejects the file after {step}: {complaint}\n{text}");
    }
    samples(&text)
}

/// The file after a step that ends with `outcome` as the last outcome.
fn checked_ending(path: &Path, step: &str, outcome: &str) -> BTreeMap<String, f64> {
    checked_when(path, step, |s| {
        s.get(&format!(
            "mysql_snapshot_last_outcome{{outcome=\"{outcome}\"}}"
        )) == Some(&1.0)
    })
}

/// The file after a step (no condition but that it exists).
fn checked(path: &Path, step: &str) -> BTreeMap<String, f64> {
    checked_when(path, step, |_| true)
}

fn runs(s: &BTreeMap<String, f64>, outcome: &str) -> f64 {
    s[&format!("mysql_snapshot_runs_total{{outcome=\"{outcome}\"}}")]
}

fn last(s: &BTreeMap<String, f64>, outcome: &str) -> f64 {
    s[&format!("mysql_snapshot_last_outcome{{outcome=\"{outcome}\"}}")]
}

fn with_metrics(server: &Server, metrics: &Path, more: &str) -> Sandbox {
    Sandbox::new(
        server,
        &format!("metrics-file = {}\n{more}", metrics.display()),
    )
}

#[test]
fn promtool_accepts_every_file_written_after_a_success_a_refusal_a_lost_lock_and_a_freeze_fail() {
    let server = Server::start();
    let dir = TempDir::new("metrics");
    let file = dir.path().join("mysql_snapshot.prom");
    let sandbox = with_metrics(
        &server,
        &file,
        "lock-wait-timeout = 1\nsnapshot-timeout = 3",
    );

    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let s = checked_when(&file, "a freeze", |s| {
        s.get("mysql_snapshot_lock_held{mode=\"backup-stage\"}") == Some(&1.0)
    });
    assert_eq!(
        s["mysql_snapshot_lock_held{mode=\"backup-stage\"}"], 1.0,
        "{s:?}"
    );
    assert_eq!(s["mysql_snapshot_last_attempts"], 1.0);
    assert_eq!(
        s["mysql_snapshot_copy_consistent"], 1.0,
        "held: a copy is consistent"
    );
    let meta = std::fs::metadata(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let s = checked_ending(&file, "a thaw", "thawed");
    assert_eq!((runs(&s, "thawed"), last(&s, "thawed")), (1.0, 1.0));
    assert_eq!(s["mysql_snapshot_lock_held{mode=\"backup-stage\"}"], 0.0);
    assert_eq!(
        s["mysql_snapshot_copy_consistent"], 0.0,
        "thawed: a copy is not"
    );
    assert!(s["mysql_snapshot_last_success_timestamp_seconds"] > 1.7e9);

    // Refused: every attempt is capped behind a LOCK TABLES … WRITE.
    let mut blocker = server.conn();
    blocker
        .query_drop("CREATE TABLE snap.m (a INT) ENGINE=InnoDB; LOCK TABLES snap.m WRITE")
        .unwrap();
    let out = sandbox.freeze();
    blocker.query_drop("UNLOCK TABLES").unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let s = checked_ending(&file, "a refused freeze", "refused");
    assert_eq!((runs(&s, "refused"), last(&s, "refused")), (1.0, 1.0));
    assert_eq!(last(&s, "thawed"), 0.0);
    assert!(s["mysql_snapshot_last_attempts"] >= 2.0, "{s:?}");

    // Lost: the locker is killed while it holds the lock.
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let locker = sandbox.locker_pid().unwrap();
    signal(locker, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(locker)));
    let out = sandbox.thaw("thaw");
    assert!(!out.status.success(), "{}", text(&out));
    let s = checked_ending(&file, "a lost lock", "lost");
    assert_eq!((runs(&s, "lost"), last(&s, "lost")), (1.0, 1.0));

    // freezeFail.
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let out = sandbox.thaw("freezeFail");
    assert!(out.status.success(), "{}", text(&out));
    let s = checked_ending(&file, "freezeFail", "freeze-fail");
    assert_eq!(
        (runs(&s, "freeze-fail"), last(&s, "freeze-fail")),
        (1.0, 1.0)
    );
    // Every count carried over from the file.
    assert_eq!(
        (runs(&s, "thawed"), runs(&s, "refused"), runs(&s, "lost")),
        (1.0, 1.0, 1.0)
    );

    // `--status --prometheus`: the same text, the same counts, accepted by promtool.
    let status = sandbox
        .command("thaw")
        .args(["--status", "--prometheus"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(promtool_rejects(&printed), None, "{printed}");
    let p = samples(&printed);
    for outcome in ["thawed", "refused", "lost", "freeze-fail"] {
        assert_eq!(runs(&p, outcome), runs(&s, outcome), "{outcome}: {printed}");
    }
    let json = sandbox
        .command("thaw")
        .args(["--status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        p["mysql_snapshot_last_attempts"],
        json["state"]["attempt"].as_f64().unwrap()
    );
}

/// A node_exporter of our own on a loopback port, serving only `dir` through its textfile
/// collector; stopped by its PID.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (Debian's package; tests/run.sh installs it)");
        let exporter = NodeExporter { child, port };
        assert!(
            wait_until(Duration::from_secs(10), || exporter.get().is_some()),
            "node_exporter does not answer on 127.0.0.1:{port}"
        );
        exporter
    }

    /// `GET /metrics` over plain HTTP/1.0.
    fn get(&self) -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_exporter_serves_the_metrics_of_a_freeze_thaw_cycle_with_the_measured_hold() {
    let server = Server::start();
    let dir = TempDir::new("textfile");
    let file = dir.path().join("mysql_snapshot.prom");
    let sandbox = with_metrics(&server, &file, "");
    let exporter = NodeExporter::start(dir.path());

    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let frozen = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let out = sandbox.thaw("thaw");
    let measured = frozen.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out));

    let mut body = String::new();
    let served = wait_until(Duration::from_secs(5), || {
        body = exporter.get().unwrap_or_default();
        body.contains("mysql_snapshot_last_outcome{outcome=\"thawed\"} 1")
    });
    assert!(
        served,
        "node_exporter does not serve the thaw's metrics:\n{body}"
    );
    let s = samples(&body);
    let held = s["mysql_snapshot_last_lock_held_seconds"];
    eprintln!(
        "held {held:.3} s by the metrics, {measured:.3} s measured from freeze's exit to thaw's"
    );
    assert!(
        (held - measured).abs() <= measured * 0.10,
        "held {held} s against {measured} s measured"
    );
    assert_eq!(s["mysql_snapshot_last_outcome{outcome=\"thawed\"}"], 1.0);
    assert_eq!(s["mysql_snapshot_runs_total{outcome=\"thawed\"}"], 1.0);
    assert_eq!(s["node_textfile_scrape_error"], 0.0, "{body}");
}

/// A freeze and its thaw, timed; the freeze must succeed and the thaw release.
fn timed_cycle(sandbox: &Sandbox, server: &Server) -> (Duration, Duration) {
    let started = Instant::now();
    let out = sandbox.freeze();
    let freeze = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let started = Instant::now();
    let out = sandbox.thaw("thaw");
    let thaw = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!server.writes_blocked(), "thaw left the lock");
    (freeze, thaw)
}

#[test]
fn a_missing_read_only_or_frozen_metrics_directory_or_a_garbage_file_never_fails_or_holds_up_a_snapshot(
) {
    if loopfs::machine_cannot_loop_mount("a_missing_read_only_or_frozen_metrics_directory…") {
        return;
    }
    let server = Server::start();
    let dir = TempDir::new("metrics-faults");

    // The baseline: no metrics file.
    let plain = Sandbox::new(&server, "");
    let (base, base_thaw) = timed_cycle(&plain, &server);

    // A directory that does not exist.
    let missing = dir.path().join("nowhere").join("mysql_snapshot.prom");
    let mut sandbox = with_metrics(&server, &missing, "");
    timed_cycle(&sandbox, &server);
    let log = sandbox.log();
    assert!(
        log.contains("event=metrics cannot write"),
        "no warning for a missing directory:\n{log}"
    );

    // A read-only filesystem.
    let mount = LoopMount::create(&dir.path().join("m.img"), &dir.path().join("mnt"), 16);
    let prom = mount.mountpoint.join("mysql_snapshot.prom");
    remount(&mount.mountpoint, "ro");
    let mut sandbox = with_metrics(&server, &prom, "");
    timed_cycle(&sandbox, &server);
    let log = sandbox.log();
    assert!(log.contains("event=metrics cannot write"), "{log}");
    remount(&mount.mountpoint, "rw");

    // A frozen filesystem: the writer is left behind; freeze and thaw end on time.
    let frozen = {
        let window = mount.freeze_window();
        let froze = Command::new("fsfreeze")
            .arg("-f")
            .arg(&mount.mountpoint)
            .status()
            .unwrap();
        assert!(froze.success());
        let mut sandbox = with_metrics(&server, &prom, "");
        let (freeze, thaw) = timed_cycle(&sandbox, &server);
        eprintln!(
            "frozen metrics directory: freeze {freeze:?} (baseline {base:?}), thaw {thaw:?} (baseline {base_thaw:?})"
        );
        assert!(
            freeze < base + Duration::from_secs(1),
            "freeze took {freeze:?} against {base:?} without metrics"
        );
        assert!(
            thaw < base_thaw + Duration::from_secs(1),
            "thaw took {thaw:?}"
        );
        let log = sandbox.log();
        assert!(log.contains("was not written within"), "{log}");
        assert!(!prom.exists(), "written on a frozen filesystem?");
        drop(window);
        sandbox
    };
    // Thawed: the writers left behind finish, and go.
    assert!(
        wait_until(Duration::from_secs(10), || prom.exists()),
        "the writers left behind never wrote the file"
    );
    assert!(
        wait_until(Duration::from_secs(10), || writers_of(&frozen.config)
            .is_empty()),
        "metrics writers are left over: {:?}",
        writers_of(&frozen.config)
    );
    let s = checked(&prom, "the writers left behind");
    assert_eq!(
        s["mysql_snapshot_lock_held{mode=\"backup-stage\"}"], 0.0,
        "{s:?}"
    );

    // A garbage file: a warning, the counters restart at 0, the new file is sound.
    std::fs::write(&prom, "\u{0}garbage {{{\nmysql_snapshot_runs_total 12 13\n").unwrap();
    let mut sandbox = with_metrics(&server, &prom, "");
    timed_cycle(&sandbox, &server);
    let log = sandbox.log();
    assert!(log.contains("cannot be read back"), "{log}");
    let s = checked_ending(&prom, "a garbage file", "thawed");
    assert_eq!(
        s["mysql_snapshot_runs_total{outcome=\"thawed\"}"], 1.0,
        "{s:?}"
    );
}

/// Remounts our loop mount `ro` or `rw`.
fn remount(mountpoint: &Path, how: &str) {
    let done = Command::new("mount")
        .args(["-o", &format!("remount,{how}")])
        .arg(mountpoint)
        .status()
        .unwrap();
    assert!(done.success(), "remount,{how} {}", mountpoint.display());
}

/// Metrics writer processes started with this config.
fn writers_of(config: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("--write-metrics")
                && cmdline.contains(&*config.to_string_lossy())
                && alive(*pid)
        })
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_on_a_stale_success_a_lost_lock_and_a_lock_held_too_long()
{
    harness::light();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("../packaging/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    // Each rule fires on the series it is for, and not before (tests/prometheus/alerts_test.yml).
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(root.join("prometheus"))
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", text(&test));
}
