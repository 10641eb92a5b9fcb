//! `mysql-snapshot-verify` on copies made here by the real paths: a qemu-ga snapshot of a loop
//! mount taken under the lock (consistent), a copy taken after the release (crash-consistent
//! only, with the info file's reason), a copy taken with a hook that does nothing under a MyISAM
//! write load (no info file, or damaged), and its promise never to change a byte of the copy it
//! boots. Each copy is loop-mounted as a DBA would mount a restored disk, and verify is pointed at
//! the mount's root.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::faults::{wait_for_statement, Writer};
use harness::guest_agent::{machine_cannot_loop_mount, Hook, Rig, Snapshot, MARIADB};
use harness::loopfs::{install_datadir, install_flavour_datadir, LoopMount};
use harness::{bin, signal, text, wait_until, write_private, TempDir};
use mysql::prelude::Queryable;
use serde_json::Value;

/// What one run of verify said.
pub(crate) struct Verdict {
    pub(crate) code: Option<i32>,
    pub(crate) report: Value,
    pub(crate) took: Duration,
    pub(crate) output: String,
}

/// A work directory for verify that the server's unprivileged account may search.
pub(crate) fn work_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let work = TempDir::new("verify-work");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    work
}

/// Runs `mysql-snapshot-verify --json PATH` with the rig's config (syslog, metrics) and `work`
/// as its work directory.
fn verify(rig: &Rig, path: &Path, work: &Path) -> Verdict {
    verify_with(rig.sandbox.command("verify"), path, work)
}

/// `command` (verify, with the test's own options) run with `--json --work-dir WORK PATH`.
pub(crate) fn verify_with(mut command: Command, path: &Path, work: &Path) -> Verdict {
    let started = Instant::now();
    let out = command
        .arg("--json")
        .arg("--work-dir")
        .arg(work)
        .arg(path)
        .output()
        .unwrap();
    let took = started.elapsed();
    let output = text(&out);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {output}"));
    eprintln!(
        "verify of {} took {took:?}: {} (exit {:?})",
        path.display(),
        report_line(&report),
        out.status.code()
    );
    Verdict {
        code: out.status.code(),
        report,
        took,
        output,
    }
}

pub(crate) fn report_line(report: &Value) -> String {
    format!(
        "{} {}",
        report["verdict"].as_str().unwrap_or("-"),
        report["why"]
    )
}

/// How a test mounts its copy.
enum Mount {
    /// Read-only, without replaying the journal: the disk as the hypervisor copied it.
    Untouched,
    /// Read-write, as a restored disk is mounted.
    Writable,
}

/// A copy loop-mounted in its rig's mount directory, and work directory for verify. Fields drop
/// in order: the mount goes before the rig that holds its directory.
struct Copy {
    mount: LoopMount,
    work: TempDir,
    rig: Rig,
}

impl Copy {
    /// `copy` (an image the rig made) mounted `how`.
    fn mount(rig: Rig, copy: &Path, how: Mount) -> Copy {
        let at = rig.mounts.path().join("copy-mnt");
        let mount = match how {
            Mount::Untouched => LoopMount::attach_untouched(copy, &at),
            Mount::Writable => LoopMount::attach(copy, &at),
        };
        Copy {
            mount,
            work: work_dir(),
            rig,
        }
    }

    /// A snapshot through qemu-ga running `hook` on a rig with `settings`, mounted `how`.
    fn snapshot(settings: &str, hook: Hook, how: Mount) -> Copy {
        let mut rig = Rig::new(MARIADB, settings, hook);
        let copy = match rig.snapshot() {
            Snapshot::Taken { copy, .. } => copy,
            Snapshot::Refused(desc) => {
                panic!("the freeze was refused: {desc}\n{}", rig.diagnostics())
            }
        };
        Copy::mount(rig, &copy, how)
    }

    fn verify(&self) -> Verdict {
        verify(&self.rig, &self.mount.mountpoint, self.work.path())
    }

    /// verify's text report (no `--json`), as a person reads it.
    fn verify_for_a_person(&self) -> std::process::Output {
        self.rig
            .sandbox
            .command("verify")
            .arg("--work-dir")
            .arg(self.work.path())
            .arg(&self.mount.mountpoint)
            .output()
            .unwrap()
    }
}

/// A MariaDB copy under the load verified consistent (exit 0): the copy's binlog end and GTID
/// position checked equal to its info file's exact record, the load's MyISAM tables checked, the
/// server used named.
pub(crate) fn assert_consistent_at_its_info_files_coordinates(verdict: &Verdict) {
    let report = &verdict.report;
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
    assert_eq!(report["verdict"], "consistent", "{report:#}");
    let checked = report["checked"].to_string();
    assert!(
        checked.contains("the copy's binlog ends at") && checked.contains("(exact): equal to it"),
        "the binlog end must be checked equal: {checked}"
    );
    assert!(
        checked.contains("@@GLOBAL.gtid_binlog_pos") && checked.contains(": equal"),
        "the GTID position must be checked equal: {checked}"
    );
    assert!(
        report["tables_checked"].as_u64().unwrap_or(0) >= 3,
        "the load's MyISAM tables are checked: {report:#}"
    );
    assert!(
        report["server"]
            .as_str()
            .unwrap_or_default()
            .contains("mariadbd"),
        "it says which server it used: {report:#}"
    );
}

/// Every file below `root` with its size, mode, owner, mtime and content hash, sorted.
fn fingerprint(root: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "cd \"$1\" && find . -printf '%p %s %m %U:%G %T@\\n' | sort && \
             find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
        )
        .arg("fingerprint")
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_copy_made_under_the_lock_verifies_consistent_with_the_statements_that_make_it_a_replica() {
    const TEST: &str =
        "a_copy_made_under_the_lock_verifies_consistent_with_the_statements_that_make_it_a_replica";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let metrics = TempDir::new("verify-metrics");
    let prom = metrics.path().join("mysql_snapshot.prom");
    let mut copy = Copy::snapshot(
        &format!("lock-mode = ftwrl\nmetrics-file = {}", prom.display()),
        Hook::Project,
        Mount::Untouched,
    );
    copy.rig.assert_writes_resume();
    let verdict = copy.verify();
    let report = &verdict.report;
    assert_consistent_at_its_info_files_coordinates(&verdict);
    let seed = report["seed_replica_sql"]["binlog_position"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        seed.starts_with("CHANGE MASTER TO"),
        "a consistent copy comes with the statements that make it a replica: {report:#}"
    );
    let steps = report["before_first_start"].to_string();
    assert!(
        steps.contains("server_id")
            && steps.contains("auto.cnf")
            && steps.contains("skip_slave_start"),
        "{steps}"
    );
    let log = copy.rig.sandbox.log();
    assert!(
        log.contains("event=verified verdict=consistent"),
        "no event=verified line in syslog: {log}"
    );
    let prom = std::fs::read_to_string(&prom).unwrap();
    if let Some(complaint) = crate::metrics::promtool_rejects(&prom) {
        panic!("promtool rejects the metrics file after a verify: {complaint}\n{prom}");
    }
    assert!(
        prom.contains("mysql_snapshot_last_verify_verdict{verdict=\"consistent\"} 1\n"),
        "{prom}"
    );
    assert!(
        !prom.contains("mysql_snapshot_last_verified_consistent_timestamp_seconds 0.000\n"),
        "{prom}"
    );
    // The same verdict for a person: the steps and the statements, after the checks.
    let out = copy.verify_for_a_person();
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{said}");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        said.contains(": CONSISTENT\n")
            && said.contains("Before its first start")
            && said.contains("  CHANGE MASTER TO"),
        "{said}"
    );
    eprintln!("{TEST}: consistent, verified in {:?}", verdict.took);
}

#[test]
fn a_copy_taken_after_the_release_is_crash_consistent_only_and_says_the_info_files_reason() {
    const TEST: &str =
        "a_copy_taken_after_the_release_is_crash_consistent_only_and_says_the_info_files_reason";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let rig = Rig::new(MARIADB, "lock-mode = ftwrl", Hook::Project);
    let out = rig.sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let out = rig.sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let verdict = crash_consistent_copy_of(rig, &["the info file says released", "thaw's request"]);
    eprintln!("{TEST}: crash-consistent, verified in {:?}", verdict.took);
}

/// With no write in flight, the disk of `rig` copied (frozen, no lock) and verified: crash-consistent
/// only (exit 3), its first reason saying each of `says`, no replica statements.
fn crash_consistent_copy_of(mut rig: Rig, says: &[&str]) -> Verdict {
    // No write in flight when the disk is cut: the copy is sound, only no lock covered it.
    let _ = rig.load.stop();
    let image = rig.copy_without_hook();
    let verdict = Copy::mount(rig, &image, Mount::Untouched).verify();
    let report = &verdict.report;
    assert_eq!(verdict.code, Some(3), "{}", verdict.output);
    assert_eq!(report["verdict"], "crash-consistent", "{report:#}");
    let why = report["why"][0].as_str().unwrap_or_default();
    assert!(
        says.iter().all(|s| why.contains(s)),
        "the verdict gives the info file's reason: {report:#}"
    );
    assert!(
        report["seed_replica_sql"].is_null(),
        "no replica statements for a copy no lock covered: {report:#}"
    );
    verdict
}

/// A copy taken after a refused freeze (FTWRL behind a 30 s MyISAM write, `snapshot-timeout = 3`)
/// with no write in flight: it recovers and its tables check, but no lock covered it —
/// crash-consistent only (exit 3), with the info file's reason.
#[test]
fn a_copy_taken_after_a_refused_freeze_is_crash_consistent_only_and_says_refused() {
    const TEST: &str =
        "a_copy_taken_after_a_refused_freeze_is_crash_consistent_only_and_says_refused";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let rig = Rig::new(
        MARIADB,
        "lock-mode = ftwrl\nsnapshot-timeout = 3\nlong-query-threshold = 1",
        Hook::Project,
    );
    const LONG: &str = "UPDATE snap.my SET v = v + 1 WHERE SLEEP(30) = 0";
    let long = Writer::start(&rig.server, LONG);
    wait_for_statement(&rig.server, "SLEEP(30)");
    let out = rig.sandbox.freeze();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for id in rig.server.statements_like("SLEEP(30)") {
        let _ = rig.server.conn().query_drop(format!("KILL QUERY {id}"));
    }
    let _ = long.join_within(Duration::from_secs(10));
    let verdict =
        crash_consistent_copy_of(rig, &["the info file says refused", "snapshot-timeout"]);
    eprintln!("{TEST}: crash-consistent, verified in {:?}", verdict.took);
}

/// A disk copied while its filesystem ran (no freeze at all), after a real snapshot left its held
/// record and binlog in the journal's last checkpoint, mounted without journal recovery: what the
/// mount shows may be that checkpoint's files over later data, so verify refuses to judge it
/// (exit 1, naming the unreplayed journal and what to do) — never "consistent".
#[test]
fn a_copy_whose_journal_was_not_replayed_is_never_called_consistent() {
    const TEST: &str = "a_copy_whose_journal_was_not_replayed_is_never_called_consistent";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let mut rig = Rig::new(MARIADB, "lock-mode = ftwrl", Hook::Project);
    let snapshot = rig.snapshot();
    assert!(
        matches!(snapshot, Snapshot::Taken { .. }),
        "{}",
        rig.diagnostics()
    );
    let image = rig.copy_while_running();
    let copy = Copy::mount(rig, &image, Mount::Untouched);
    let out = copy.verify_for_a_person();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("mounted without journal recovery (noload) and its journal holds changes not yet replayed")
            && said.contains("Mount the copy so that its journal is replayed"),
        "{said}"
    );
    assert!(!said.contains("CONSISTENT"), "{said}");
}

#[test]
fn a_copy_taken_with_a_hook_that_does_nothing_under_myisam_writes_is_never_called_consistent() {
    const TEST: &str =
        "a_copy_taken_with_a_hook_that_does_nothing_under_myisam_writes_is_never_called_consistent";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let copy = Copy::snapshot("lock-mode = ftwrl", Hook::DoesNothing, Mount::Untouched);
    let verdict = copy.verify();
    let report = &verdict.report;
    assert!(report["info_file"].is_null(), "{report:#}");
    let why = report["why"].to_string();
    match verdict.code {
        Some(4) => assert!(
            report["verdict"] == "damaged" && why.contains("CHECK TABLE"),
            "damaged must say which table: {report:#}"
        ),
        Some(3) => assert!(
            report["verdict"] == "crash-consistent" && why.contains("no info file"),
            "{report:#}"
        ),
        other => panic!(
            "a copy no lock covered was called {other:?}: {}",
            verdict.output
        ),
    }
    eprintln!("{TEST}: {} in {:?}", report_line(report), verdict.took);
}

#[test]
fn verify_never_changes_a_byte_of_the_copy_it_boots_and_leaves_nothing_behind() {
    const TEST: &str = "verify_never_changes_a_byte_of_the_copy_it_boots_and_leaves_nothing_behind";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    // Read-write, as a restored disk is mounted: only verify's discipline keeps it unchanged.
    let copy = Copy::snapshot("lock-mode = ftwrl", Hook::DoesNothing, Mount::Writable);
    let before = fingerprint(&copy.mount.mountpoint);
    let verdict = copy.verify();
    assert!(
        matches!(verdict.code, Some(3 | 4)),
        "crash recovery must have run on this copy: {}",
        verdict.output
    );
    assert!(
        verdict.report["checked"]
            .to_string()
            .contains("crash recovery ran"),
        "crash recovery must have written to this copy's layer: {}",
        verdict.report
    );
    let after = fingerprint(&copy.mount.mountpoint);
    assert!(
        before == after,
        "verify changed the copy:\n{}",
        before
            .lines()
            .zip(after.lines())
            .filter(|(b, a)| b != a)
            .take(10)
            .map(|(b, a)| format!("before {b}\nafter  {a}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let work = copy.work.path();
    let left: Vec<_> = std::fs::read_dir(work).unwrap().flatten().collect();
    let servers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&*work.to_string_lossy()))
        .collect();
    assert!(
        servers.is_empty(),
        "verify left a server running: {servers:?}"
    );
    assert!(
        left.is_empty(),
        "verify left {left:?} in its work directory"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*work.to_string_lossy()),
        "an overlay is left mounted: {mounts}"
    );
    eprintln!("{TEST}: unchanged; verified in {:?}", verdict.took);
}

#[test]
fn a_copy_with_a_broken_myisam_table_is_damaged_and_the_verdict_names_the_table() {
    const TEST: &str =
        "a_copy_with_a_broken_myisam_table_is_damaged_and_the_verdict_names_the_table";
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let copy = Copy::snapshot("lock-mode = ftwrl", Hook::Project, Mount::Writable);
    // The index file's header overwritten, as a torn write or a bad block leaves it.
    let index = copy.mount.mountpoint.join("data/snap/my_counter.MYI");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[..64].fill(0xff);
    std::fs::write(&index, bytes).unwrap();
    let verdict = copy.verify();
    let report = &verdict.report;
    assert_eq!(verdict.code, Some(4), "{}", verdict.output);
    assert_eq!(report["verdict"], "damaged", "{report:#}");
    assert!(
        report["why"]
            .to_string()
            .contains("CHECK TABLE `snap`.`my_counter`"),
        "the verdict names the broken table: {report:#}"
    );
    assert!(report["seed_replica_sql"].is_null(), "{report:#}");
    eprintln!("{TEST}: damaged, verified in {:?}", verdict.took);
}

/// A bare datadir (the harness's initialised one, cleanly shut down, no info file) at `dir/under/data`,
/// and a config that keeps verify's log and metrics inside `dir`.
fn bare_datadir(dir: &Path, under: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let parent = dir.join(under);
    std::fs::create_dir_all(&parent).unwrap();
    let datadir = parent.join("data");
    install_datadir(&datadir);
    (datadir, private_config(dir))
}

/// A config that keeps verify's log and metrics inside `dir`.
pub(crate) fn private_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("mysql-snapshot.cnf");
    write_private(
        &config,
        &format!(
            "[mysql-snapshot]\nrun-dir = {}\nsyslog-socket = {}\n",
            dir.join("run").display(),
            dir.join("no-syslog.sock").display()
        ),
    );
    config
}

/// Processes whose command line names `path`.
fn processes_naming(path: &Path) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .filter(|(_, c)| c.contains(&*path.to_string_lossy()))
        .collect()
}

#[test]
fn a_datadir_whose_path_overlayfs_cannot_carry_is_verified_on_a_copy_that_the_report_names() {
    let dir = TempDir::new("verify-bare");
    let (datadir, config) = bare_datadir(dir.path(), "copy,1");
    let before = fingerprint(&datadir);
    let work = work_dir();
    let mut command = Command::new(bin("verify"));
    command.arg("--config").arg(&config);
    let verdict = verify_with(command, &datadir, work.path());
    let report = &verdict.report;
    assert_eq!(verdict.code, Some(3), "{}", verdict.output);
    let layer = report["layer"].as_str().unwrap_or_default();
    assert!(
        layer.contains("cp -a") && layer.contains("overlayfs options cannot carry"),
        "the report says the copy was booted on a cp -a, and why: {report:#}"
    );
    assert!(report["why"][0]
        .as_str()
        .unwrap_or_default()
        .contains("no info file"));
    assert_eq!(before, fingerprint(&datadir), "verify changed the datadir");
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none());
}

#[test]
fn a_signal_stops_verify_with_its_server_killed_and_its_overlay_unmounted() {
    let dir = TempDir::new("verify-bare");
    let (datadir, config) = bare_datadir(dir.path(), "copy");
    let work = work_dir();
    let verify = std::process::Command::new(bin("verify"))
        .arg("--config")
        .arg(&config)
        .arg("--work-dir")
        .arg(work.path())
        .arg(&datadir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The server it starts names the work directory on its command line.
    let server_up = wait_until(Duration::from_secs(30), || {
        processes_naming(work.path())
            .iter()
            .any(|(_, c)| c.contains("mariadbd"))
    });
    assert!(server_up, "verify started no server");
    signal(verify.id(), "TERM");
    let out = verify.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped by SIGTERM"), "{}", text(&out));
    assert!(
        processes_naming(work.path()).is_empty(),
        "a server is left: {:?}",
        processes_naming(work.path())
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*work.path().to_string_lossy()),
        "{mounts}"
    );
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none());
}

/// MySQL 9.7 runs in its chroot: a server binary for verify that runs the chroot's mysqld with
/// every path argument taken back below the chroot (`--datadir=/var/cache/…/srv/x` is `/srv/x`
/// to it). The copy, the work directory and the overlay all lie inside the chroot.
fn chrooted_mysqld(dir: &Path, root: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("mysqld-in-chroot");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nroot='{root}'\n\
             for a do shift; set -- \"$@\" \"$(printf '%s\\n' \"$a\" | sed \"s|$root||g\")\"; done\n\
             exec chroot \"$root\" /usr/sbin/mysqld \"$@\"\n",
            root = root.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_mysql_backup_lock_copy_is_consistent_with_a_gtid_set_containing_the_recorded_lower_bound() {
    use crate::guest_agent_mysql::{innodb_workload, DURABLE_SETUP};
    use harness::{matrix, Flavour};
    const TEST: &str =
        "a_mysql_backup_lock_copy_is_consistent_with_a_gtid_set_containing_the_recorded_lower_bound";
    if machine_cannot_loop_mount(TEST) || !matrix::require(Flavour::MySql97) {
        return;
    }
    let root = Flavour::MySql97.chroot().unwrap().unwrap();
    let mut rig = Rig::with_workload(
        DURABLE_SETUP,
        "lock-mode = backup-lock",
        Hook::Project,
        innodb_workload(),
    );
    let image = match rig.snapshot() {
        Snapshot::Taken { copy, .. } => copy,
        Snapshot::Refused(desc) => panic!("the freeze was refused: {desc}\n{}", rig.diagnostics()),
    };
    rig.assert_writes_resume();
    let held = rig.last_held();
    assert_eq!(held["gtid"]["exact"], false, "{held:#}");
    let _ = rig.load.stop();
    let server = chrooted_mysqld(rig.dir.path(), root);
    let work = TempDir::new_in(&matrix::inside(root, matrix::SERVERS), "verify-work");
    let copy = Copy {
        mount: LoopMount::attach_untouched(&image, &rig.mounts.path().join("copy-mnt")),
        work,
        rig,
    };
    let mut command = copy.rig.sandbox.command("verify");
    // The chroot knows no mysql account; the harness runs its servers as root too.
    command
        .arg("--server")
        .arg(&server)
        .args(["--user", "root"]);
    let verdict = verify_with(command, &copy.mount.mountpoint, copy.work.path());
    let report = &verdict.report;
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
    let checked = report["checked"].to_string();
    eprintln!("checked: {:#}", report["checked"]);
    assert!(
        checked.contains("@@GLOBAL.gtid_executed")
            && checked.contains("it contains that lower bound"),
        "the GTID set is checked to contain the lower bound: {checked}"
    );
    let seed = report["seed_replica_sql"]["binlog_position"].to_string();
    assert!(
        seed.contains("SOURCE_LOG_FILE = 'binlog.") && !seed.contains("<Log_name"),
        "the statements carry the coordinates the copy recovered, not the lower bound: {seed}"
    );
    assert!(
        checked.contains("auto.cnf names the recorded server_uuid"),
        "the copy is the recorded server: {checked}"
    );
    assert!(
        report["notes"]
            .to_string()
            .contains("auto.cnf was removed in the writable layer"),
        "the booted copy takes a server_uuid of its own: {report:#}"
    );
    assert!(
        checked.contains("(a lower bound): at or past it"),
        "the binlog end is checked at or past the lower bound: {checked}"
    );
    assert!(
        report["server"]
            .as_str()
            .unwrap_or_default()
            .contains("9.7"),
        "{report:#}"
    );
}

#[test]
fn a_copy_written_by_another_release_is_refused_naming_both_and_what_to_do() {
    use harness::{matrix, Flavour};
    if !matrix::require(Flavour::MariaDb118) {
        return;
    }
    // A datadir MariaDB 11.8 wrote (its mariadb_upgrade_info says so); the machine has 10.11.
    let dir = TempDir::new("verify-release");
    let datadir = dir.path().join("data");
    install_flavour_datadir(Flavour::MariaDb118, &datadir);
    let before = fingerprint(&datadir);
    let work = work_dir();
    let out = Command::new(bin("verify"))
        .arg("--config")
        .arg(private_config(dir.path()))
        .arg("--work-dir")
        .arg(work.path())
        .arg(&datadir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        said.contains("written by mariadb 11.8")
            && said.contains("10.11")
            && said.contains("--server"),
        "the refusal names the copy's release, the servers found and what to do: {said}"
    );
    assert_eq!(before, fingerprint(&datadir));
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none());
}

#[test]
fn a_copy_of_a_replica_made_under_the_lock_is_consistent_at_its_replication_position_with_clone_statements(
) {
    use harness::guest_agent::ServerSetup;
    use harness::replication::Source;
    use mysql::prelude::Queryable;
    const TEST: &str = "a_copy_of_a_replica_made_under_the_lock_is_consistent_at_its_replication_position_with_clone_statements";
    /// The rig's server as a replica: its own server id.
    const REPLICA: ServerSetup = ServerSetup {
        flavour: harness::Flavour::MariaDb1011,
        server_args: &["--log-bin=binlog", "--server-id=2"],
        copy_args: &["--log-bin=binlog", "--server-id=3"],
    };
    if machine_cannot_loop_mount(TEST) {
        return;
    }
    let source = Source::start(&[]);
    let rig = Rig::new(REPLICA, "lock-mode = ftwrl", Hook::Project);
    source.attach(&rig.server);
    let mut feed = source.server.conn();
    for v in 0..50 {
        feed.exec_drop("INSERT INTO snap.feed (v) VALUES (?)", (v,))
            .unwrap();
    }
    let caught_up = wait_until(Duration::from_secs(60), || {
        rig.server
            .conn()
            .query_first::<u64, _>("SELECT COUNT(*) FROM snap.feed")
            .ok()
            .flatten()
            == Some(50)
    });
    let status: Vec<mysql::Row> = rig.server.conn().query("SHOW SLAVE STATUS").unwrap();
    assert!(
        caught_up,
        "the replica did not apply the source's rows: {status:?}"
    );
    let mut rig = rig;
    let image = match rig.snapshot() {
        Snapshot::Taken { copy, .. } => copy,
        Snapshot::Refused(desc) => panic!("the freeze was refused: {desc}\n{}", rig.diagnostics()),
    };
    rig.assert_writes_resume();
    assert_eq!(rig.last_held()["replicas"][0]["gtid_mode"], "Slave_Pos");
    let copy = Copy::mount(rig, &image, Mount::Untouched);
    let verdict = copy.verify();
    let report = &verdict.report;
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
    let checked = report["checked"].to_string();
    assert!(
        checked.contains("the default replication connection replicates from 127.0.0.1:")
            && checked.contains("@@GLOBAL.gtid_slave_pos of the copy is `0-1-"),
        "the replica's position is checked against the record: {checked}"
    );
    let clone = report["clone_replica_sql"].to_string();
    assert!(
        clone.contains("SET GLOBAL gtid_slave_pos")
            && clone.contains("MASTER_USE_GTID = slave_pos"),
        "a consistent copy of a replica comes with the statements that make a sibling: {report:#}"
    );
    eprintln!("{TEST}: consistent, verified in {:?}", verdict.took);
    drop(copy);
    drop(source);
}

#[test]
fn thorough_checks_every_table_where_the_default_checks_the_non_transactional_ones() {
    let dir = TempDir::new("verify-bare");
    let (datadir, config) = bare_datadir(dir.path(), "copy");
    let work = work_dir();
    let run = |extra: &[&str]| {
        let mut command = Command::new(bin("verify"));
        command.arg("--config").arg(&config).args(extra);
        verify_with(command, &datadir, work.path()).report
    };
    let default = run(&[]);
    let thorough = run(&["--thorough"]);
    let count = |report: &Value| report["tables_checked"].as_u64().unwrap_or(0);
    assert!(
        count(&default) > 0 && count(&thorough) > count(&default),
        "--thorough must check the InnoDB tables too: {} vs {}",
        count(&thorough),
        count(&default)
    );
    assert!(
        thorough["checked"]
            .to_string()
            .contains("CHECK TABLE passed on every table"),
        "{thorough:#}"
    );
    assert!(
        default["checked"]
            .to_string()
            .contains("CHECK TABLE passed on every non-transactional table"),
        "{default:#}"
    );
}

/// A table whose engine the booted copy has not loaded (a plugin the copy's server loaded from
/// `mysql.plugin`, which verify's boot does not read) gives no verdict, with or without
/// `--thorough`: verify names the table and the option that loads its plugin, never crashes, never
/// calls the copy damaged and never passes it unchecked. With that option, the copy gets a
/// verdict and the table is checked.
#[test]
fn a_table_whose_engine_the_booted_copy_lacks_gives_no_verdict_until_its_plugin_is_loaded() {
    let dir = TempDir::new("verify-bare");
    let (datadir, config) = bare_datadir(dir.path(), "copy");
    {
        let server = harness::Server::start_on(&datadir, &[]);
        let mut conn = server.conn();
        conn.query_drop("INSTALL SONAME 'ha_archive'").unwrap();
        conn.query_drop("CREATE DATABASE app").unwrap();
        conn.query_drop("CREATE TABLE app.journal (id INT) ENGINE = ARCHIVE")
            .unwrap();
        conn.query_drop("INSERT INTO app.journal VALUES (1)")
            .unwrap();
    }
    let work = work_dir();
    let run = |extra: &[&str]| {
        let mut command = Command::new(bin("verify"));
        command.arg("--config").arg(&config).args(extra);
        verify_with(command, &datadir, work.path())
    };
    for extra in [&[][..], &["--thorough"][..]] {
        let verdict = run(extra);
        let report = &verdict.report;
        assert_eq!(verdict.code, Some(1), "{extra:?}: {}", verdict.output);
        assert_eq!(report["verdict"], "not-verified", "{report:#}");
        let why = report["why"].to_string();
        assert!(
            why.contains("`app`.`journal`")
                && why.contains("--server-option --plugin-load-add=ha_archive"),
            "{extra:?}: the table is named with the option that loads its engine: {report:#}"
        );
    }
    let loaded = run(&[
        "--thorough",
        "--server-option",
        "--plugin-load-add=ha_archive",
    ]);
    assert!(
        matches!(loaded.code, Some(0 | 3)),
        "with the plugin, a verdict: {}",
        loaded.output
    );
    assert!(
        loaded.report["checked"]
            .to_string()
            .contains("CHECK TABLE passed on every table"),
        "{:#}",
        loaded.report
    );
}

/// A script that asks for `--json` gets JSON on every verification's outcome: where there is nothing to verify,
/// exit 1 with the verdict `not-verified` and why, never empty output.
#[test]
fn verify_json_answers_not_verified_with_the_reason_when_there_is_no_copy_to_verify() {
    let empty = TempDir::new("verify-nothing");
    let work = TempDir::new("verify-work");
    let config = work.path().join("verify.cnf");
    // No syslog here: its lines go to stderr.
    std::fs::write(
        &config,
        format!(
            "[mysql-snapshot]\nsyslog-socket = {}\n",
            work.path().join("no-syslog").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin("verify"))
        .env("MYSQL_SNAPSHOT_CONFIG", &config)
        .arg("--json")
        .arg("--work-dir")
        .arg(work.path())
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {}", text(&out)));
    assert_eq!(report["verdict"], "not-verified", "{report:#}");
    let why = report["why"][0].as_str().unwrap_or_default();
    assert!(!why.is_empty(), "{report:#}");
    assert!(
        text(&out).contains(why),
        "the reason is the error verify prints: {}",
        text(&out)
    );
}

/// `--boot-timeout 0` would call every copy damaged before its server could start: refused as a
/// usage error (exit 2) instead.
#[test]
fn a_boot_timeout_of_zero_is_a_usage_error_not_a_verdict() {
    let empty = TempDir::new("verify-nothing");
    let out = Command::new(bin("verify"))
        .args(["--boot-timeout", "0"])
        .arg(empty.path())
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("--boot-timeout must be at least 1 second"),
        "{said}"
    );
}
