//! Tests of `install.sh`: what it lays out where, the hypervisor hooks it writes (VMware Tools,
//! legacy scripts, QEMU guest agent, Nutanix, Google Compute Engine, Azure Backup, Veeam's job
//! scripts and their sudoers grant), and an uninstall that removes exactly what was installed.
//!
//! No database and no release build is needed: a fake bin directory holds four tiny shell
//! scripts named like the binaries, which append their name and arguments to a log file (and
//! each argument bracketed to another, their PID to a third, and exit with `$FAKE_EXIT`), and
//! every run uses `DESTDIR` inside a private temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BINARIES: [&str; 4] = [
    "mysql-snapshot-freeze",
    "mysql-snapshot-thaw",
    "mysql-snapshot-locker",
    "mysql-snapshot-verify",
];
const HOOK: &str = "etc/vmware-tools/backupScripts.d/50-mysql-snapshot";
const CONFIG: &str = "etc/mysql-snapshot.cnf";
const LOGROTATE: &str = "etc/logrotate.d/mysql-snapshot";
const STATE_DIR: &str = "var/lib/mysql-snapshot";
const MANIFEST: &str = "var/lib/mysql-snapshot/install-manifest";
const SBIN: &str = "usr/local/sbin";
const LEGACY_FREEZE: &str = "usr/sbin/pre-freeze-script";
const LEGACY_THAW: &str = "usr/sbin/post-thaw-script";
const QEMU_HOOK: &str = "etc/qemu/fsfreeze-hook.d/mysql-snapshot";
const QEMU_DIRECT: &str = "usr/local/sbin/mysql-snapshot-qemu-hook";
const NUTANIX_FREEZE: &str = "usr/local/sbin/pre_freeze";
const NUTANIX_THAW: &str = "usr/local/sbin/post_thaw";
const GCP_DIR: &str = "etc/google/snapshots";
const GCP_PRE: &str = "etc/google/snapshots/pre.sh";
const GCP_POST: &str = "etc/google/snapshots/post.sh";
const GCP_AGENT_CONFIG: &str = "etc/default/instance_configs.cfg";
const AZURE_PRE: &str = "etc/azure/mysql-snapshot-pre.sh";
const AZURE_POST: &str = "etc/azure/mysql-snapshot-post.sh";
const AZURE_CONFIG: &str = "etc/azure/VMSnapshotScriptPluginConfig.json";
const AWS_DOCUMENT: &str = "usr/local/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml";
const VEEAM_PRE: &str = "usr/local/share/mysql-snapshot/veeam/pre-freeze.sh";
const VEEAM_POST: &str = "usr/local/share/mysql-snapshot/veeam/post-thaw.sh";
const VEEAM_SUDOERS: &str = "etc/sudoers.d/mysql-snapshot-veeam";
const MARKER: &str = "# installed by mysql-snapshot install.sh";

fn install_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh")
}

/// A private temporary directory holding a fake bin dir and a `DESTDIR`; removed on drop.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        harness::light(); // no harness TempDir here: take the light side by hand (see `gate`)
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "mysql-snapshot-install-test-{}-{}-{}-{}",
            name,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos
        ));
        fs::create_dir_all(dir.join("bin")).expect("create the fake bin dir");
        let fixture = Fixture { dir };
        for name in BINARIES {
            let script = format!(
                "#!/bin/sh\nprintf '%s %s\\n' '{name}' \"$*\" >> '{calls}'\n\
                 {{ printf '%s' '{name}'; printf ' [%s]' \"$@\"; echo; }} >> '{argv}'\n\
                 echo $$ >> '{pids}'\nexit ${{FAKE_EXIT:-0}}\n",
                calls = fixture.calls_log().display(),
                argv = fixture.argv_log().display(),
                pids = fixture.pids_log().display()
            );
            let path = fixture.bin_dir().join(name);
            fs::write(&path, script).expect("write a fake binary");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .expect("make a fake binary executable");
        }
        fixture
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    fn calls_log(&self) -> PathBuf {
        self.dir.join("calls.log")
    }

    fn pids_log(&self) -> PathBuf {
        self.dir.join("pids.log")
    }

    /// Each call's binary name and every argument in brackets, one call per line: shows where
    /// one argument ends and the next begins (`--caller "a b"` is one argument).
    fn argv_log(&self) -> PathBuf {
        self.dir.join("argv.log")
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The hook directory the installed qemu-ga dispatcher reads in place of
    /// /etc/qemu/fsfreeze-hook.d (`run_script` pins it; empty unless a test adds hooks), and the
    /// log it writes their output to.
    fn qemu_hook_dir(&self) -> PathBuf {
        self.dir.join("fsfreeze-hook.d")
    }

    fn qemu_hook_log(&self) -> PathBuf {
        self.dir.join("qga-fsfreeze-hook.log")
    }

    /// `path` relative to the `DESTDIR`.
    fn at(&self, path: &str) -> PathBuf {
        self.root().join(path)
    }

    /// Runs `install.sh ARGS` with `DESTDIR` set to this fixture's root and `PREFIX` unset.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    /// Runs `install.sh ARGS` like `run`, with extra environment variables.
    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(install_sh());
        command
            .args(args)
            .env("DESTDIR", self.root())
            .env_remove("PREFIX")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("QEMU_HOOK_DIR");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run install.sh")
    }

    /// Installs from the fake bin dir with the extra `args`, and requires success.
    fn install(&self, args: &[&str]) -> Output {
        let bin_dir = self.bin_dir();
        let bin_dir = bin_dir.to_str().expect("temp dir path is UTF-8");
        let mut all = vec!["--no-build", "--bin-dir", bin_dir];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert_success(&output, "install.sh --no-build --bin-dir FAKE");
        output
    }

    fn uninstall(&self) -> Output {
        let output = self.run(&["uninstall"]);
        assert_success(&output, "install.sh uninstall");
        output
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.calls_log()).unwrap_or_default()
    }

    fn argv(&self) -> String {
        fs::read_to_string(self.argv_log()).unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn assert_mode(path: &Path, expected: u32) {
    assert_eq!(
        mode(path),
        expected,
        "mode of {} is {:o}, expected {:o}",
        path.display(),
        mode(path),
        expected
    );
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs the hook exactly as vmtoolsd does: `bash -c '"<path>" <args>'`.
fn run_hook(fixture: &Fixture, args: &str) -> Output {
    let _ = fs::remove_file(fixture.calls_log());
    Command::new("bash")
        .arg("-c")
        .arg(format!("\"{}\" {}", fixture.at(HOOK).display(), args))
        .env("MYSQL_SNAPSHOT_SBIN", fixture.at(SBIN))
        .output()
        .expect("run bash -c HOOK")
}

#[test]
fn install_lays_out_binaries_hook_config_and_logrotate_with_their_modes() {
    let fixture = Fixture::new("layout");
    let output = fixture.install(&[]);

    for name in BINARIES {
        let path = fixture.at(SBIN).join(name);
        assert_mode(&path, 0o755);
        assert_eq!(
            read(&path),
            read(&fixture.bin_dir().join(name)),
            "{name} is a copy of the built binary"
        );
    }

    let hook = fixture.at(HOOK);
    assert_mode(&hook, 0o755);
    let hook_text = read(&hook);
    assert!(hook_text.starts_with("#!/bin/sh\n"), "hook:\n{hook_text}");
    assert!(hook_text.lines().any(|l| l == MARKER), "hook:\n{hook_text}");
    assert!(
        hook_text.contains("MYSQL_SNAPSHOT_SBIN:-/usr/local/sbin}"),
        "the hook bakes in PREFIX/sbin without DESTDIR:\n{hook_text}"
    );
    assert!(
        !hook_text.contains(fixture.root().to_str().expect("UTF-8 path")),
        "the hook must not mention DESTDIR:\n{hook_text}"
    );

    let config = fixture.at(CONFIG);
    assert_mode(&config, 0o600);
    let config_text = read(&config);
    assert!(config_text.starts_with(
        "# mysql-snapshot configuration (MySQL option-file syntax). Mode 0600: it may hold a password.\n"
    ));
    assert!(config_text.lines().any(|l| l == "[client]"));
    assert!(config_text.lines().any(|l| l == "[mysql-snapshot]"));
    assert!(
        config_text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('['))
            .all(|l| l.starts_with('#')),
        "every setting in the template is commented out:\n{config_text}"
    );

    let logrotate = fixture.at(LOGROTATE);
    assert_mode(&logrotate, 0o644);
    let repo_logrotate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../logrotate/mysql-snapshot");
    assert_eq!(read(&logrotate), read(&repo_logrotate));
    assert!(read(&logrotate).contains("/var/log/mysql-snapshot.log"));

    let state_dir = fixture.at(STATE_DIR);
    assert!(state_dir.is_dir());
    assert_mode(&state_dir, 0o700);
    assert!(fixture.at(MANIFEST).is_file(), "a manifest is kept");

    assert!(
        !exists(&fixture.at(LEGACY_FREEZE)) && !exists(&fixture.at(LEGACY_THAW)),
        "legacy links only with --legacy"
    );

    let out = stdout(&output);
    for path in [SBIN, HOOK, CONFIG, LOGROTATE] {
        let line = format!("installed {}", fixture.at(path).display());
        assert!(out.contains(&line), "output names {line}:\n{out}");
    }
}

#[test]
fn installing_twice_is_harmless_and_keeps_an_edited_config() {
    let fixture = Fixture::new("twice");
    fixture.install(&[]);
    let config = fixture.at(CONFIG);
    let edited = "[client]\nuser = snapshot\npassword = s3cret\n";
    fs::write(&config, edited).expect("edit the config");
    let manifest_before = read(&fixture.at(MANIFEST));

    let output = fixture.install(&[]);

    assert_eq!(
        read(&config),
        edited,
        "the DBA's config is never overwritten"
    );
    assert_mode(&config, 0o600);
    let out = stdout(&output);
    assert!(
        out.contains(&format!("kept existing {}", config.display())),
        "output says the config was kept:\n{out}"
    );
    for name in BINARIES {
        assert_mode(&fixture.at(SBIN).join(name), 0o755);
    }
    assert_mode(&fixture.at(HOOK), 0o755);
    assert_mode(&fixture.at(STATE_DIR), 0o700);

    let manifest = read(&fixture.at(MANIFEST));
    assert_eq!(
        manifest, manifest_before,
        "a second install records the same items (nothing lost, nothing doubled)"
    );
    let config_entries = manifest
        .lines()
        .filter(|l| l.contains("/etc/mysql-snapshot.cnf"))
        .count();
    assert_eq!(config_entries, 1, "manifest:\n{manifest}");
}

#[test]
fn the_hook_dispatches_each_vmware_phase_case_insensitively() {
    let fixture = Fixture::new("hook");
    fixture.install(&[]);

    let cases = [
        ("freeze", "mysql-snapshot-freeze freeze"),
        ("FREEZE", "mysql-snapshot-freeze freeze"),
        ("thaw", "mysql-snapshot-thaw thaw"),
        ("THAW", "mysql-snapshot-thaw thaw"),
        ("freezeFail", "mysql-snapshot-thaw freezeFail"),
        ("freezefail", "mysql-snapshot-thaw freezeFail"),
        ("FREEZEFAIL", "mysql-snapshot-thaw freezeFail"),
        // Old vmtoolsd versions could pass an extra empty argument.
        ("freeze \"\"", "mysql-snapshot-freeze freeze"),
        ("thaw \"\"", "mysql-snapshot-thaw thaw"),
        ("freezeFail \"\" extra", "mysql-snapshot-thaw freezeFail"),
    ];
    for (args, expected) in cases {
        let output = run_hook(&fixture, args);
        assert_success(&output, &format!("hook {args}"));
        assert_eq!(
            fixture.calls(),
            format!("{expected}\n"),
            "hook {args} runs exactly one binary with the right argument"
        );
    }

    for args in ["snapshot", "\"\"", "", "frozen", "thaw-all"] {
        let output = run_hook(&fixture, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "hook {args:?} exits 2; stderr: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("unknown phase"),
            "hook {args:?} says why on stderr: {}",
            stderr(&output)
        );
        assert_eq!(fixture.calls(), "", "hook {args:?} runs no binary");
    }
}

#[test]
fn legacy_links_are_installed_instead_of_the_hook_and_a_foreign_pre_freeze_script_is_never_overwritten(
) {
    let fixture = Fixture::new("legacy");
    fixture.install(&["--legacy"]);
    assert!(
        !exists(&fixture.at(HOOK)),
        "--legacy installs no backupScripts.d hook: VMware Tools would run freeze twice"
    );
    let links = [
        (LEGACY_FREEZE, "/usr/local/sbin/mysql-snapshot-freeze"),
        (LEGACY_THAW, "/usr/local/sbin/mysql-snapshot-thaw"),
    ];
    for (link, target) in links {
        let path = fixture.at(link);
        assert!(
            fs::symlink_metadata(&path)
                .expect("legacy link exists")
                .file_type()
                .is_symlink(),
            "{link} is a symlink"
        );
        assert_eq!(
            fs::read_link(&path).expect("read legacy link"),
            PathBuf::from(target)
        );
    }
    // Again: our own links are recognised and kept.
    let output = fixture.install(&["--legacy"]);
    assert!(
        stdout(&output).contains("kept existing"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        fs::read_link(fixture.at(LEGACY_FREEZE)).expect("read legacy link"),
        PathBuf::from(links[0].1)
    );

    // A foreign pre-freeze-script (the old PHP one) is refused, and nothing else is installed.
    let foreign = Fixture::new("legacy-foreign");
    let php = "#!/usr/bin/php\n<?php // vmware-mysql-snapshot pre-freeze-script\n";
    let script = foreign.at(LEGACY_FREEZE);
    fs::create_dir_all(script.parent().expect("parent dir")).expect("create usr/sbin");
    fs::write(&script, php).expect("write the foreign script");
    let bin_dir = foreign.bin_dir();
    let output = foreign.run(&[
        "--no-build",
        "--bin-dir",
        bin_dir.to_str().expect("UTF-8 path"),
        "--legacy",
    ]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains(&script.display().to_string()), "{err}");
    assert!(err.contains("belongs to something else"), "{err}");
    assert!(
        err.contains("without --legacy"),
        "says how to proceed: {err}"
    );
    assert_eq!(read(&script), php, "the foreign script is untouched");
    assert!(!exists(&foreign.at(LEGACY_THAW)));
    assert!(!exists(&foreign.at(SBIN).join("mysql-snapshot-freeze")));
    assert!(!exists(&foreign.at(HOOK)));

    // A symlink pointing elsewhere is foreign too.
    let elsewhere = Fixture::new("legacy-elsewhere");
    let link = elsewhere.at(LEGACY_THAW);
    fs::create_dir_all(link.parent().expect("parent dir")).expect("create usr/sbin");
    std::os::unix::fs::symlink("/opt/other/post-thaw", &link).expect("create foreign symlink");
    let bin_dir = elsewhere.bin_dir();
    let output = elsewhere.run(&[
        "--legacy",
        "--no-build",
        "--bin-dir",
        bin_dir.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert_eq!(
        fs::read_link(&link).expect("read foreign link"),
        PathBuf::from("/opt/other/post-thaw")
    );

    // Without --legacy the same tree installs fine and leaves the foreign script alone.
    foreign.install(&[]);
    assert_eq!(read(&script), php);
}

#[test]
fn uninstall_removes_exactly_what_install_installed() {
    let fixture = Fixture::new("uninstall");
    let unrelated_etc = fixture.at("etc/unrelated.conf");
    let unrelated_sbin = fixture.at(SBIN).join("other-tool");
    fs::create_dir_all(fixture.at(SBIN)).expect("create sbin");
    fs::create_dir_all(fixture.at("etc")).expect("create etc");
    fs::write(&unrelated_etc, "keep me\n").expect("write unrelated etc file");
    fs::write(&unrelated_sbin, "#!/bin/sh\n").expect("write unrelated sbin file");

    fixture.install(&["--all"]);
    let config = fixture.at(CONFIG);
    let edited = format!("{}user = backup\n", read(&config));
    fs::write(&config, &edited).expect("edit the config");
    // The info file freeze writes is not install.sh's to remove.
    let info = fixture.at(STATE_DIR).join("snapshot-info.json");
    fs::write(&info, "{}\n").expect("write an info file");

    let output = fixture.uninstall();
    let out = stdout(&output);

    for name in BINARIES {
        assert!(!exists(&fixture.at(SBIN).join(name)), "{name} removed");
    }
    for path in [
        HOOK,
        QEMU_HOOK,
        QEMU_DIRECT,
        NUTANIX_FREEZE,
        NUTANIX_THAW,
        GCP_PRE,
        GCP_POST,
        AZURE_PRE,
        AZURE_POST,
        AZURE_CONFIG,
        LOGROTATE,
        MANIFEST,
    ] {
        assert!(!exists(&fixture.at(path)), "{path} removed");
        assert!(
            out.contains(&format!("removed {}", fixture.at(path).display())),
            "output says {path} was removed:\n{out}"
        );
    }
    assert_eq!(read(&unrelated_etc), "keep me\n");
    assert_eq!(read(&unrelated_sbin), "#!/bin/sh\n");
    assert_eq!(read(&config), edited, "an edited config survives");
    assert!(
        out.contains(&format!("kept {}", config.display())),
        "output says the config was kept:\n{out}"
    );
    assert_eq!(read(&info), "{}\n");
    assert!(
        !exists(&fixture.at("etc/vmware-tools")),
        "directories install created are removed once empty"
    );
    assert!(!exists(&fixture.at("etc/logrotate.d")));
    assert!(!exists(&fixture.at("etc/qemu")));
    assert!(!exists(&fixture.at("etc/google")));
    assert!(!exists(&fixture.at("etc/azure")));

    // A second uninstall finds no manifest: it says so, succeeds and removes nothing.
    let output = fixture.uninstall();
    assert!(
        stdout(&output).contains("nothing to uninstall"),
        "{}",
        stdout(&output)
    );
    assert_eq!(read(&config), edited);
    assert_eq!(read(&unrelated_sbin), "#!/bin/sh\n");
}

#[test]
fn uninstall_keeps_a_legacy_script_that_is_no_longer_our_link() {
    let fixture = Fixture::new("uninstall-replaced");
    fixture.install(&["--legacy"]);
    let script = fixture.at(LEGACY_THAW);
    fs::remove_file(&script).expect("remove our link");
    fs::write(&script, "#!/bin/sh\n# someone else's\n").expect("write a replacement");

    let output = fixture.uninstall();

    assert_eq!(read(&script), "#!/bin/sh\n# someone else's\n");
    assert!(!exists(&fixture.at(LEGACY_FREEZE)));
    let out = stdout(&output);
    assert!(out.contains(&format!("kept {}", script.display())), "{out}");
}

#[test]
fn uninstall_of_an_unchanged_install_leaves_an_empty_destdir() {
    let fixture = Fixture::new("uninstall-clean");
    fixture.install(&["--legacy"]);
    fixture.install(&[]);
    fixture.install(&["--all"]);
    fixture.install(&["--all", "--legacy"]);
    fixture.uninstall();
    let left: Vec<_> = fs::read_dir(fixture.root())
        .expect("DESTDIR still exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn uninstall_without_a_manifest_removes_nothing_and_succeeds() {
    let fixture = Fixture::new("uninstall-none");
    let binary = fixture.at(SBIN).join("mysql-snapshot-freeze");
    fs::create_dir_all(fixture.at(SBIN)).expect("create sbin");
    fs::write(&binary, "not installed by install.sh\n").expect("write a stray binary");

    let output = fixture.uninstall();

    assert!(
        stdout(&output).contains("nothing to uninstall"),
        "{}",
        stdout(&output)
    );
    assert_eq!(read(&binary), "not installed by install.sh\n");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let fixture = Fixture::new("badargs");
    for args in [
        &["--bogus"][..],
        &["frobnicate"][..],
        &["--no-build", "--bin-dir"][..],
        &["--bin-dir="][..],
        &["uninstall", "--force"][..],
        &["--vmware", "--legacy"][..],
        &["uninstall", "--qemu"][..],
        &["uninstall", "--gcp"][..],
        &["uninstall", "--azure"][..],
        &["uninstall", "--veeam"][..],
        &["--veeam-user"][..],
        &["--veeam-user="][..],
        &["--veeam-user", "ALL"][..],
        &["--veeam-user", "bob ALL=(ALL) ALL"][..],
        &["--veeam-user=-bob"][..],
    ] {
        let output = fixture.run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: stderr {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(err.contains("install.sh"), "{args:?}: {err}");
        assert!(err.contains("--help"), "{args:?} points at --help: {err}");
        assert!(
            !exists(&fixture.root()),
            "{args:?}: nothing is created on bad arguments"
        );
    }

    let bin_dir = fixture.bin_dir();
    let output = Command::new(install_sh())
        .args(["--no-build", "--bin-dir"])
        .arg(&bin_dir)
        .env("DESTDIR", fixture.root())
        .env("PREFIX", "usr/local")
        .output()
        .expect("run install.sh");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("PREFIX"), "{}", stderr(&output));
    assert!(!exists(&fixture.root()));

    let output = fixture.run(&["--help"]);
    assert_success(&output, "install.sh --help");
    assert!(stdout(&output).contains("Usage"), "{}", stdout(&output));
    assert!(stdout(&output).contains("DESTDIR"), "{}", stdout(&output));
    for flag in ["--gcp", "--azure"] {
        assert!(stdout(&output).contains(flag), "{}", stdout(&output));
    }
}

#[test]
fn missing_binaries_fail_naming_the_binary_and_what_to_run() {
    let fixture = Fixture::new("missing");
    fs::remove_file(fixture.bin_dir().join("mysql-snapshot-locker")).expect("remove a binary");
    let bin_dir = fixture.bin_dir();
    let output = fixture.run(&[
        "--no-build",
        "--bin-dir",
        bin_dir.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("mysql-snapshot-locker"), "{err}");
    assert!(err.contains("cargo build --release --locked"), "{err}");
    assert!(!exists(&fixture.root()), "nothing is installed half-way");
}

/// What one hook run did: its output, the binaries it ran, and whether the binary replaced the
/// hook's own process (exec) rather than running as its child.
struct HookRun {
    output: Output,
    calls: String,
    exec: bool,
}

/// Runs the installed hook at `path` (relative to the DESTDIR) directly, as qemu-ga and NGT do,
/// with the fake binaries exiting `fake_exit` (and the qemu-ga dispatcher reading the fixture's
/// hook directory).
fn run_script(fixture: &Fixture, path: &str, args: &[&str], fake_exit: u8) -> HookRun {
    run_script_with(fixture, path, args, fake_exit, &[])
}

/// `run_script` with extra environment variables.
fn run_script_with(
    fixture: &Fixture,
    path: &str,
    args: &[&str],
    fake_exit: u8,
    env: &[(&str, &str)],
) -> HookRun {
    let _ = fs::remove_file(fixture.calls_log());
    let _ = fs::remove_file(fixture.pids_log());
    let child = Command::new(fixture.at(path))
        .args(args)
        .env("MYSQL_SNAPSHOT_SBIN", fixture.at(SBIN))
        .env("MYSQL_SNAPSHOT_QEMU_HOOK_DIR", fixture.qemu_hook_dir())
        .env("MYSQL_SNAPSHOT_QEMU_HOOK_LOG", fixture.qemu_hook_log())
        .env("FAKE_EXIT", fake_exit.to_string())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {path}: {e}"));
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for the hook");
    let pids = fs::read_to_string(fixture.pids_log()).unwrap_or_default();
    HookRun {
        output,
        calls: fixture.calls(),
        exec: pids.trim() == pid.to_string(),
    }
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective user of the process reading it.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// When the tests run as root (as install.sh does for real), `paths` are owned by root:root.
fn assert_root_owned(fixture: &Fixture, paths: &[&str]) {
    if !running_as_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    for path in paths {
        let meta = fs::metadata(fixture.at(path)).unwrap_or_else(|e| panic!("stat {path}: {e}"));
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} is root-owned");
    }
}

fn assert_is_our_hook(fixture: &Fixture, path: &str, sbin: &str) {
    let text = read(&fixture.at(path));
    assert!(text.starts_with("#!/bin/sh\n"), "{path}:\n{text}");
    assert!(
        text.lines().any(|l| l == MARKER),
        "{path} carries the marker:\n{text}"
    );
    assert!(
        text.contains(&format!("${{MYSQL_SNAPSHOT_SBIN:-{sbin}}}")),
        "{path} runs the binaries from {sbin} unless MYSQL_SNAPSHOT_SBIN says otherwise:\n{text}"
    );
    assert!(
        !text.contains(fixture.root().to_str().expect("UTF-8 path")),
        "{path} must not mention DESTDIR:\n{text}"
    );
    assert!(
        !text.contains("@SBIN@"),
        "{path} has its placeholder filled:\n{text}"
    );
}

#[test]
fn install_all_lays_out_every_hook_with_its_mode() {
    let fixture = Fixture::new("all");
    let output = fixture.install(&["--all"]);

    let hooks = [
        (HOOK, 0o755),
        (QEMU_HOOK, 0o755),
        (QEMU_DIRECT, 0o755),
        (NUTANIX_FREEZE, 0o700),
        (NUTANIX_THAW, 0o700),
        (GCP_PRE, 0o700),
        (GCP_POST, 0o700),
        (AZURE_PRE, 0o700),
        (AZURE_POST, 0o700),
    ];
    for (path, expected) in hooks {
        assert_mode(&fixture.at(path), expected);
        assert_is_our_hook(&fixture, path, "/usr/local/sbin");
    }
    assert_mode(&fixture.at(GCP_DIR), 0o700);
    assert_mode(&fixture.at(AZURE_CONFIG), 0o600);
    assert_mode(&fixture.at(AWS_DOCUMENT), 0o644);
    assert_root_owned(
        &fixture,
        &[
            NUTANIX_FREEZE,
            NUTANIX_THAW,
            GCP_DIR,
            GCP_PRE,
            GCP_POST,
            AZURE_PRE,
            AZURE_POST,
            AZURE_CONFIG,
        ],
    );
    for name in BINARIES {
        assert_mode(&fixture.at(SBIN).join(name), 0o755);
    }
    assert_mode(&fixture.at(CONFIG), 0o600);
    assert_mode(&fixture.at(LOGROTATE), 0o644);
    assert_mode(&fixture.at(STATE_DIR), 0o700);
    assert!(
        !exists(&fixture.at(LEGACY_FREEZE)) && !exists(&fixture.at(LEGACY_THAW)),
        "--all means the backupScripts.d hook, never the legacy scripts as well"
    );

    let manifest = read(&fixture.at(MANIFEST));
    for (path, _) in hooks {
        assert!(
            manifest.lines().any(|l| l == format!("hook /{path}")),
            "the manifest lists {path}:\n{manifest}"
        );
    }

    let out = stdout(&output);
    assert!(
        out.contains("IGNORES the exit status"),
        "the output warns that the stock QEMU dispatcher ignores exit codes:\n{out}"
    );
    assert!(
        out.contains("fsfreeze-hook=/usr/local/sbin/mysql-snapshot-qemu-hook")
            && out.contains("/etc/qemu/qemu-ga.conf"),
        "the output says how to point qemu-ga at the direct dispatcher:\n{out}"
    );
    assert!(
        out.contains("runs the other scripts in /etc/qemu/fsfreeze-hook.d")
            && out.contains("/var/log/qga-fsfreeze-hook.log"),
        "the output says the direct dispatcher runs the other hooks, and where their output goes:\n{out}"
    );
    assert!(
        out.contains("[Snapshots]") && out.contains("enabled = true"),
        "the output says how to enable Google's snapshot scripts:\n{out}"
    );
}

#[test]
fn prefix_usr_points_every_hook_at_usr_sbin_but_nutanix_keeps_its_fixed_paths() {
    let fixture = Fixture::new("prefix-usr");
    let bin_dir = fixture.bin_dir();
    let output = fixture.run_with(
        &[
            "--no-build",
            "--bin-dir",
            bin_dir.to_str().expect("UTF-8 path"),
            "--all",
        ],
        &[("PREFIX", "/usr")],
    );
    assert_success(&output, "PREFIX=/usr install.sh --all");
    for name in BINARIES {
        assert_mode(&fixture.at("usr/sbin").join(name), 0o755);
    }
    for path in [HOOK, QEMU_HOOK, "usr/sbin/mysql-snapshot-qemu-hook"] {
        assert_mode(&fixture.at(path), 0o755);
        assert_is_our_hook(&fixture, path, "/usr/sbin");
    }
    for path in [NUTANIX_FREEZE, NUTANIX_THAW] {
        assert_mode(&fixture.at(path), 0o700);
        assert_is_our_hook(&fixture, path, "/usr/sbin");
    }
    assert!(!exists(&fixture.at(QEMU_DIRECT)));
}

#[test]
fn every_hook_execs_the_right_binary_with_the_right_phase() {
    let fixture = Fixture::new("dispatch");
    fixture.install(&["--all"]);

    let cases: &[(&str, &[&str], &str)] = &[
        (HOOK, &["freeze"], "mysql-snapshot-freeze freeze"),
        (HOOK, &["thaw"], "mysql-snapshot-thaw thaw"),
        (HOOK, &["freezeFail"], "mysql-snapshot-thaw freezeFail"),
        (QEMU_HOOK, &["freeze"], "mysql-snapshot-freeze freeze"),
        (QEMU_HOOK, &["thaw"], "mysql-snapshot-thaw thaw"),
        (QEMU_DIRECT, &["freeze"], "mysql-snapshot-freeze freeze"),
        (QEMU_DIRECT, &["thaw"], "mysql-snapshot-thaw thaw"),
        (QEMU_DIRECT, &["thaw", ""], "mysql-snapshot-thaw thaw"),
        (NUTANIX_FREEZE, &[], "mysql-snapshot-freeze freeze"),
        (NUTANIX_FREEZE, &["extra"], "mysql-snapshot-freeze freeze"),
        (NUTANIX_THAW, &[], "mysql-snapshot-thaw thaw"),
        (NUTANIX_THAW, &["extra"], "mysql-snapshot-thaw thaw"),
    ];
    for (path, args, expected) in cases {
        let run = run_script(&fixture, path, args, 0);
        assert_success(&run.output, &format!("{path} {args:?}"));
        assert_eq!(
            run.calls,
            format!("{expected}\n"),
            "{path} {args:?} runs exactly one binary with the right phase"
        );
        // The direct dispatcher waits for the binary: it runs the other hooks around it (that
        // nothing stays behind holding its output: a_hook_left_running_by_the_qemu_direct_...).
        assert!(
            run.exec || *path == QEMU_DIRECT,
            "{path} {args:?} execs the binary, so no shell stays behind holding the agent's \
             stdout/stderr (qemu-ga 9.1+ reads them until EOF)"
        );
    }

    // qemu-ga only ever passes freeze or thaw; anything else is refused without running anything.
    for path in [QEMU_HOOK, QEMU_DIRECT] {
        for args in [&[][..], &[""][..], &["freezeFail"][..], &["snapshot"][..]] {
            let run = run_script(&fixture, path, args, 0);
            assert_eq!(
                run.output.status.code(),
                Some(2),
                "{path} {args:?}: stderr {}",
                stderr(&run.output)
            );
            assert!(
                stderr(&run.output).contains("unknown phase"),
                "{path} {args:?} says why: {}",
                stderr(&run.output)
            );
            assert_eq!(run.calls, "", "{path} {args:?} runs no binary");
        }
    }
}

#[test]
fn the_qemu_direct_dispatcher_propagates_a_failing_freeze_exit_code() {
    let fixture = Fixture::new("direct-fail");
    fixture.install(&["--qemu-direct"]);
    assert!(
        exists(&fixture.at(QEMU_HOOK)),
        "--qemu-direct includes --qemu"
    );
    assert!(
        !exists(&fixture.at(HOOK)),
        "a hook flag replaces the --vmware default"
    );

    for code in [1u8, 3, 7] {
        let run = run_script(&fixture, QEMU_DIRECT, &["freeze"], code);
        assert_eq!(
            run.output.status.code(),
            Some(i32::from(code)),
            "a freeze that exits {code} makes the dispatcher exit {code}, so qemu-ga refuses the freeze"
        );
        assert_eq!(run.calls, "mysql-snapshot-freeze freeze\n");
        let run = run_script(&fixture, QEMU_DIRECT, &["thaw"], code);
        assert_eq!(run.output.status.code(), Some(i32::from(code)));
        assert_eq!(run.calls, "mysql-snapshot-thaw thaw\n");
    }
}

/// Writes `name` into the fixture's qemu-ga hook directory: a hook that appends `name phase` to
/// the calls log (where the fake binaries write theirs), says so on its stdout, and exits
/// `freeze_exit` on freeze, `thaw_exit` on thaw.
fn other_qemu_hook(fixture: &Fixture, name: &str, freeze_exit: u8, thaw_exit: u8) {
    let dir = fixture.qemu_hook_dir();
    fs::create_dir_all(&dir).expect("create the hook directory");
    let script = format!(
        "#!/bin/sh\nprintf '%s %s\\n' '{name}' \"$1\" >> '{calls}'\necho \"{name} says $1\"\n\
         case $1 in freeze) exit {freeze_exit} ;; thaw) exit {thaw_exit} ;; esac\nexit 64\n",
        calls = fixture.calls_log().display(),
    );
    let path = dir.join(name);
    fs::write(&path, script).expect("write a hook");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod a hook");
}

#[test]
fn the_qemu_direct_dispatcher_runs_the_other_hooks_around_ours_and_passes_their_failures_on() {
    let fixture = Fixture::new("direct-chain");
    fixture.install(&["--qemu-direct"]);
    other_qemu_hook(&fixture, "20-b", 0, 0);
    other_qemu_hook(&fixture, "10-a", 0, 0);
    // Not run: our --qemu hook (the dispatcher runs the binaries itself), a file that is not
    // executable, a backup name the stock dispatcher skips too, a directory.
    let dir = fixture.qemu_hook_dir();
    fs::copy(fixture.at(QEMU_HOOK), dir.join("mysql-snapshot")).expect("copy our --qemu hook");
    other_qemu_hook(&fixture, "30-off", 0, 0);
    fs::set_permissions(dir.join("30-off"), fs::Permissions::from_mode(0o644)).expect("chmod");
    other_qemu_hook(&fixture, "40-old.dpkg-old", 0, 0);
    fs::create_dir(dir.join("50-dir")).expect("create a directory");

    let chain = |args: &[&str], fake_exit: u8, code: i32, calls: &[&str]| {
        let run = run_script(&fixture, QEMU_DIRECT, args, fake_exit);
        assert_eq!(
            (
                run.output.status.code(),
                run.calls.lines().collect::<Vec<_>>()
            ),
            (Some(code), calls.to_vec()),
            "{args:?} with the binaries exiting {fake_exit}: stderr {}",
            stderr(&run.output)
        );
        run
    };
    let ours_freeze = "mysql-snapshot-freeze freeze";
    let ours_thaw = "mysql-snapshot-thaw thaw";
    let run = chain(
        &["freeze"],
        0,
        0,
        &["10-a freeze", "20-b freeze", ours_freeze],
    );
    assert!(
        !stdout(&run.output).contains("says"),
        "the other hooks' output goes to the log, not to qemu-ga's pipes"
    );
    chain(
        &["FREEZE"],
        0,
        0,
        &["10-a freeze", "20-b freeze", ours_freeze],
    );
    chain(&["thaw"], 0, 0, &[ours_thaw, "20-b thaw", "10-a thaw"]);
    let log = read(&fixture.qemu_hook_log());
    for line in [
        "10-a says freeze",
        "20-b says thaw",
        "/10-a finished with status=0",
    ] {
        assert!(log.contains(line), "the log holds `{line}`:\n{log}");
    }

    // Our freeze refused: the hooks frozen before it are thawed, and its status is passed on.
    chain(
        &["freeze"],
        3,
        3,
        &[
            "10-a freeze",
            "20-b freeze",
            ours_freeze,
            "20-b thaw",
            "10-a thaw",
        ],
    );
    // Our thaw failing (a lost lock): the others still thaw; the first failure is reported.
    other_qemu_hook(&fixture, "20-b", 0, 7);
    chain(&["thaw"], 4, 4, &[ours_thaw, "20-b thaw", "10-a thaw"]);
    other_qemu_hook(&fixture, "10-a", 0, 8);
    chain(&["thaw"], 0, 7, &[ours_thaw, "20-b thaw", "10-a thaw"]);
    // Another hook refusing its freeze: the ones after it and ours never run, the ones before it
    // are thawed, the failed one is not.
    other_qemu_hook(&fixture, "20-b", 5, 0);
    let run = chain(
        &["freeze"],
        0,
        5,
        &["10-a freeze", "20-b freeze", "10-a thaw"],
    );
    assert!(
        stderr(&run.output).contains("20-b freeze failed with status 5"),
        "{}",
        stderr(&run.output)
    );
}

#[test]
fn a_hook_left_running_by_the_qemu_direct_dispatcher_holds_neither_its_output_nor_the_freeze() {
    let fixture = Fixture::new("direct-daemon");
    fixture.install(&["--qemu-direct"]);
    let pid_file = fixture.dir.join("daemon.pid");
    let dir = fixture.qemu_hook_dir();
    fs::create_dir_all(&dir).expect("create the hook directory");
    // A hook written for the stock dispatcher may leave a child behind on its stdout and stderr.
    let daemon = dir.join("10-daemon");
    fs::write(
        &daemon,
        format!(
            "#!/bin/sh\nsleep 60 &\necho $! > '{}'\necho started\n",
            pid_file.display()
        ),
    )
    .expect("write a hook");
    fs::set_permissions(&daemon, fs::Permissions::from_mode(0o755)).expect("chmod a hook");

    // The hook's child, stopped by the PID it wrote (each run starts one).
    let stop_child = || {
        if let Ok(pid) = fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    };
    let started = std::time::Instant::now();
    let run = run_script(&fixture, QEMU_DIRECT, &["freeze"], 0);
    let took = started.elapsed();
    stop_child();
    assert_success(
        &run.output,
        "the dispatcher with a hook that leaves a child behind",
    );
    assert!(
        took < std::time::Duration::from_secs(20),
        "reading the dispatcher's stdout/stderr to EOF took {took:?}: the hook's child holds them"
    );
    assert_eq!(run.calls, "mysql-snapshot-freeze freeze\n");
    assert!(read(&fixture.qemu_hook_log()).contains("started"));

    // A log that cannot be written: the hooks still run, their output is discarded, and stderr
    // says so.
    let run = run_script_with(
        &fixture,
        QEMU_DIRECT,
        &["thaw"],
        0,
        &[(
            "MYSQL_SNAPSHOT_QEMU_HOOK_LOG",
            "/nonexistent/qga-fsfreeze-hook.log",
        )],
    );
    stop_child();
    assert_success(&run.output, "the dispatcher with an unwritable log");
    assert_eq!(run.calls, "mysql-snapshot-thaw thaw\n");
    assert!(
        stderr(&run.output).contains("cannot write /nonexistent/qga-fsfreeze-hook.log"),
        "{}",
        stderr(&run.output)
    );
}

#[test]
fn every_hook_passes_a_failing_binarys_exit_status_on() {
    let fixture = Fixture::new("hook-fail");
    fixture.install(&["--all"]);
    let cases: &[(&str, &[&str])] = &[
        (HOOK, &["freeze"]),
        (HOOK, &["thaw"]),
        (QEMU_HOOK, &["freeze"]),
        (NUTANIX_FREEZE, &[]),
        (NUTANIX_THAW, &[]),
    ];
    for (path, args) in cases {
        let run = run_script(&fixture, path, args, 5);
        assert_eq!(
            run.output.status.code(),
            Some(5),
            "{path} {args:?} exits with the binary's status"
        );
    }
}

#[test]
fn legacy_replaces_our_earlier_backupscripts_hook_and_vmware_replaces_our_legacy_links() {
    let fixture = Fixture::new("legacy-switch");
    fixture.install(&[]);
    assert!(exists(&fixture.at(HOOK)));

    let output = fixture.install(&["--legacy"]);
    let out = stdout(&output);
    assert!(
        !exists(&fixture.at(HOOK)),
        "--legacy removes our backupScripts.d hook"
    );
    assert!(
        out.contains(&format!("removed {}", fixture.at(HOOK).display())) && out.contains("twice"),
        "the output says it removed the hook and why:\n{out}"
    );
    for link in [LEGACY_FREEZE, LEGACY_THAW] {
        assert!(
            fs::symlink_metadata(fixture.at(link))
                .expect("legacy link exists")
                .file_type()
                .is_symlink(),
            "{link} is a symlink"
        );
    }
    let manifest = read(&fixture.at(MANIFEST));
    assert!(
        !manifest.contains(&format!("hook /{HOOK}")),
        "the removed hook is gone from the manifest:\n{manifest}"
    );

    // Back to the hook: our legacy links go, for the same reason.
    let output = fixture.install(&["--vmware"]);
    let out = stdout(&output);
    assert!(exists(&fixture.at(HOOK)));
    for link in [LEGACY_FREEZE, LEGACY_THAW] {
        assert!(!exists(&fixture.at(link)), "{link} removed");
        assert!(
            out.contains(&format!("removed {}", fixture.at(link).display())),
            "{out}"
        );
    }
    assert!(out.contains("twice"), "{out}");
    let manifest = read(&fixture.at(MANIFEST));
    assert!(
        !manifest.lines().any(|l| l.starts_with("link ")),
        "the removed links are gone from the manifest:\n{manifest}"
    );

    // --all --legacy: every other hook, and the legacy scripts in place of the hook.
    fixture.install(&["--all", "--legacy"]);
    assert!(!exists(&fixture.at(HOOK)));
    for path in [
        QEMU_HOOK,
        QEMU_DIRECT,
        NUTANIX_FREEZE,
        NUTANIX_THAW,
        LEGACY_FREEZE,
    ] {
        assert!(exists(&fixture.at(path)), "{path} installed");
    }
}

#[test]
fn legacy_keeps_a_backupscripts_file_that_is_not_ours_and_warns() {
    let fixture = Fixture::new("legacy-foreign-hook");
    let hook = fixture.at(HOOK);
    fs::create_dir_all(hook.parent().expect("parent dir")).expect("create backupScripts.d");
    fs::write(&hook, "#!/bin/sh\n# someone else's\n").expect("write a foreign hook");

    let output = fixture.install(&["--legacy"]);

    assert_eq!(read(&hook), "#!/bin/sh\n# someone else's\n");
    let out = stdout(&output);
    assert!(
        out.contains("WARNING") && out.contains(&hook.display().to_string()),
        "{out}"
    );
}

#[test]
fn nutanix_scripts_never_overwrite_foreign_ones() {
    let fixture = Fixture::new("nutanix-foreign");
    let script = fixture.at(NUTANIX_FREEZE);
    fs::create_dir_all(script.parent().expect("parent dir")).expect("create usr/local/sbin");
    let theirs = "#!/bin/sh\n# the site's own pre_freeze\n";
    fs::write(&script, theirs).expect("write a foreign pre_freeze");
    let bin_dir = fixture.bin_dir();

    let output = fixture.run(&[
        "--no-build",
        "--bin-dir",
        bin_dir.to_str().expect("UTF-8 path"),
        "--nutanix",
    ]);

    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains(&script.display().to_string()), "{err}");
    assert!(err.contains("Nothing was installed"), "{err}");
    assert_eq!(read(&script), theirs, "the foreign script is untouched");
    assert!(!exists(&fixture.at(NUTANIX_THAW)));
    assert!(!exists(&fixture.at(SBIN).join("mysql-snapshot-freeze")));
}

#[test]
fn the_qemu_hook_follows_the_rhel_layout_and_qemu_hook_dir() {
    // RHEL and Fedora ship the stock dispatcher as /etc/qemu-ga/fsfreeze-hook.
    let rhel = Fixture::new("qemu-rhel");
    let dispatcher = rhel.at("etc/qemu-ga/fsfreeze-hook");
    fs::create_dir_all(dispatcher.parent().expect("parent dir")).expect("create etc/qemu-ga");
    fs::write(&dispatcher, "#!/bin/sh\n").expect("write a stock dispatcher");
    let output = rhel.install(&["--qemu-direct"]);
    let hook = "etc/qemu-ga/fsfreeze-hook.d/mysql-snapshot";
    assert_mode(&rhel.at(hook), 0o755);
    assert!(!exists(&rhel.at(QEMU_HOOK)));
    let out = stdout(&output);
    assert!(out.contains("/etc/qemu-ga/fsfreeze-hook,"), "{out}");
    assert!(
        out.contains("runs the other scripts in /etc/qemu-ga/fsfreeze-hook.d")
            && out.contains("/var/log/qemu-ga/fsfreeze-hook.log"),
        "the direct dispatcher follows the RHEL layout too:\n{out}"
    );
    rhel.uninstall();
    assert!(!exists(&rhel.at(hook)));
    assert_eq!(read(&dispatcher), "#!/bin/sh\n");

    let custom = Fixture::new("qemu-custom");
    let bin_dir = custom.bin_dir();
    let output = custom.run_with(
        &[
            "--no-build",
            "--bin-dir",
            bin_dir.to_str().expect("UTF-8 path"),
            "--qemu-direct",
        ],
        &[("QEMU_HOOK_DIR", "/opt/agent/hooks.d")],
    );
    assert_success(
        &output,
        "QEMU_HOOK_DIR=/opt/agent/hooks.d install.sh --qemu-direct",
    );
    assert_mode(&custom.at("opt/agent/hooks.d/mysql-snapshot"), 0o755);
    assert!(!exists(&custom.at(QEMU_HOOK)));
    assert!(
        stdout(&output)
            .contains("QEMU_HOOK_DIR does not change that: it reads /etc/qemu/fsfreeze-hook.d"),
        "the output says which directory the direct dispatcher reads:\n{}",
        stdout(&output)
    );
}

/// The plugin config install.sh writes for Azure Backup, key for key.
fn our_azure_config() -> serde_json::Value {
    serde_json::json!({
        "pluginName": "ScriptRunner",
        "preScriptLocation": "/etc/azure/mysql-snapshot-pre.sh",
        "postScriptLocation": "/etc/azure/mysql-snapshot-post.sh",
        "preScriptParams": [],
        "postScriptParams": [],
        "preScriptNoOfRetries": 0,
        "postScriptNoOfRetries": 0,
        "timeoutInSeconds": 60,
        "continueBackupOnFailure": false,
        "fsFreezeEnabled": true
    })
}

/// Installs with the fake binaries and the extra `args`, and returns the failing output
/// (`install` requires success).
fn install_expecting_failure(fixture: &Fixture, args: &[&str]) -> Output {
    let bin_dir = fixture.bin_dir();
    let mut all = vec![
        "--no-build",
        "--bin-dir",
        bin_dir.to_str().expect("UTF-8 path"),
    ];
    all.extend_from_slice(args);
    let output = fixture.run(&all);
    assert_eq!(
        output.status.code(),
        Some(1),
        "install.sh {args:?} fails\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// Runs an Azure script exactly as the VMSnapshot ScriptRunner does: `dash <script> <params...>`
/// (`sh` on Debian is dash; the shebang is ignored), reading the plugin config at `config`.
fn run_azure_script(
    fixture: &Fixture,
    path: &str,
    params: &[&str],
    config: &Path,
    fake_exit: u8,
) -> HookRun {
    let _ = fs::remove_file(fixture.calls_log());
    let _ = fs::remove_file(fixture.argv_log());
    let _ = fs::remove_file(fixture.pids_log());
    let child = Command::new("dash")
        .arg(fixture.at(path))
        .args(params)
        .env("MYSQL_SNAPSHOT_SBIN", fixture.at(SBIN))
        .env("MYSQL_SNAPSHOT_AZURE_CONFIG", config)
        .env("FAKE_EXIT", fake_exit.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run dash {path}: {e}"));
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for the script");
    let pids = fs::read_to_string(fixture.pids_log()).unwrap_or_default();
    HookRun {
        output,
        calls: fixture.argv(),
        exec: pids.trim() == pid.to_string(),
    }
}

#[test]
fn gcp_installs_pre_and_post_root_owned_0700_in_a_0700_directory_and_says_how_to_enable_them() {
    let fixture = Fixture::new("gcp");
    let output = fixture.install(&["--gcp"]);

    for path in [GCP_PRE, GCP_POST] {
        assert_mode(&fixture.at(path), 0o700);
        assert_is_our_hook(&fixture, path, "/usr/local/sbin");
    }
    assert!(fixture.at(GCP_DIR).is_dir());
    assert_mode(&fixture.at(GCP_DIR), 0o700);
    assert_root_owned(&fixture, &[GCP_DIR, GCP_PRE, GCP_POST]);
    assert!(
        !exists(&fixture.at(HOOK)),
        "a hook flag replaces the --vmware default"
    );
    assert!(
        !exists(&fixture.at(GCP_AGENT_CONFIG)) && !exists(&fixture.at("etc/default")),
        "install.sh never touches the agent's instance_configs.cfg"
    );

    let manifest = read(&fixture.at(MANIFEST));
    for entry in [
        format!("hook /{GCP_PRE}"),
        format!("hook /{GCP_POST}"),
        format!("dir /{GCP_DIR}"),
        "dir /etc/google".to_string(),
    ] {
        assert!(
            manifest.lines().any(|l| l == entry),
            "the manifest lists {entry}:\n{manifest}"
        );
    }

    let out = stdout(&output);
    for words in [
        "/etc/default/instance_configs.cfg",
        "[Snapshots]",
        "enabled = true",
        "timeout_in_seconds",
        "restart google-guest-agent",
    ] {
        assert!(out.contains(words), "the output mentions {words:?}:\n{out}");
    }
}

#[test]
fn gcp_keeps_an_existing_snapshots_directory_as_it_is_and_leaves_it_at_uninstall() {
    let fixture = Fixture::new("gcp-dir");
    let dir = fixture.at(GCP_DIR);
    fs::create_dir_all(&dir).expect("create etc/google/snapshots");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).expect("chmod the directory");
    fs::write(dir.join("notes.txt"), "the site's\n").expect("write a file of the site's");

    fixture.install(&["--gcp"]);
    assert_mode(&dir, 0o750);
    assert_mode(&fixture.at(GCP_PRE), 0o700);
    let manifest = read(&fixture.at(MANIFEST));
    assert!(
        !manifest.lines().any(|l| l.starts_with("dir /etc/google")),
        "a directory install.sh did not create is not in the manifest:\n{manifest}"
    );

    fixture.uninstall();
    assert!(!exists(&fixture.at(GCP_PRE)) && !exists(&fixture.at(GCP_POST)));
    assert!(dir.is_dir(), "the directory that was there before stays");
    assert_eq!(read(&dir.join("notes.txt")), "the site's\n");
}

#[test]
fn azure_installs_two_scripts_and_a_plugin_config_that_names_them() {
    let fixture = Fixture::new("azure");
    let output = fixture.install(&["--azure"]);

    for path in [AZURE_PRE, AZURE_POST] {
        assert_mode(&fixture.at(path), 0o700);
        assert_is_our_hook(&fixture, path, "/usr/local/sbin");
    }
    let config = fixture.at(AZURE_CONFIG);
    assert_mode(&config, 0o600);
    assert_root_owned(&fixture, &[AZURE_PRE, AZURE_POST, AZURE_CONFIG]);
    let parsed: serde_json::Value =
        serde_json::from_str(&read(&config)).expect("the plugin config is valid JSON");
    assert_eq!(parsed, our_azure_config(), "exactly these keys and values");
    assert!(
        !exists(&fixture.at(HOOK)),
        "a hook flag replaces the --vmware default"
    );

    let manifest = read(&fixture.at(MANIFEST));
    assert!(
        manifest
            .lines()
            .any(|l| l.starts_with(&format!("config /{AZURE_CONFIG} "))),
        "the plugin config is recorded with its checksum:\n{manifest}"
    );
    for path in [AZURE_PRE, AZURE_POST] {
        assert!(
            manifest.lines().any(|l| l == format!("hook /{path}")),
            "{manifest}"
        );
    }
    let out = stdout(&output);
    assert!(
        out.contains(&format!("installed {}", config.display())),
        "{out}"
    );

    // A second install keeps the config it wrote and still removes it at uninstall.
    let output = fixture.install(&["--azure"]);
    assert!(
        stdout(&output).contains(&format!("kept existing {}", config.display())),
        "{}",
        stdout(&output)
    );
    assert_eq!(read(&fixture.at(MANIFEST)), manifest);
    fixture.uninstall();
    assert!(!exists(&config));
    assert!(!exists(&fixture.at("etc/azure")));
}

#[test]
fn an_existing_azure_plugin_config_is_never_overwritten_and_the_output_names_the_two_keys() {
    let fixture = Fixture::new("azure-foreign-config");
    let config = fixture.at(AZURE_CONFIG);
    fs::create_dir_all(config.parent().expect("parent dir")).expect("create etc/azure");
    let theirs = "{\n  \"pluginName\": \"ScriptRunner\",\n  \"preScriptLocation\": \"/opt/site/pre.sh\",\n  \"postScriptLocation\": \"/opt/site/post.sh\",\n  \"timeoutInSeconds\": 30\n}\n";
    fs::write(&config, theirs).expect("write the site's plugin config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).expect("chmod");

    let output = fixture.install(&["--azure"]);

    assert_eq!(read(&config), theirs, "the site's config is untouched");
    assert_mode(&config, 0o600);
    assert_mode(&fixture.at(AZURE_PRE), 0o700);
    assert_mode(&fixture.at(AZURE_POST), 0o700);
    let out = stdout(&output);
    for words in [
        "preScriptLocation",
        "postScriptLocation",
        "/etc/azure/mysql-snapshot-pre.sh",
        "/etc/azure/mysql-snapshot-post.sh",
    ] {
        assert!(out.contains(words), "the note names {words}:\n{out}");
    }
    let manifest = read(&fixture.at(MANIFEST));
    assert!(
        !manifest.contains("VMSnapshotScriptPluginConfig.json"),
        "a config install.sh did not write is not in the manifest:\n{manifest}"
    );
    assert!(
        !manifest.lines().any(|l| l == "dir /etc/azure"),
        "{manifest}"
    );

    fixture.uninstall();
    assert_eq!(read(&config), theirs, "uninstall leaves the site's config");
    assert!(!exists(&fixture.at(AZURE_PRE)) && !exists(&fixture.at(AZURE_POST)));
}

#[test]
fn uninstall_keeps_an_edited_azure_plugin_config_and_removes_the_scripts() {
    let fixture = Fixture::new("azure-edited");
    fixture.install(&["--azure"]);
    let config = fixture.at(AZURE_CONFIG);
    let edited = read(&config).replace("\"timeoutInSeconds\": 60", "\"timeoutInSeconds\": 120");
    assert_ne!(edited, read(&config), "the edit changes the file");
    fs::write(&config, &edited).expect("edit the plugin config");

    let output = fixture.uninstall();

    assert_eq!(read(&config), edited, "an edited plugin config survives");
    let out = stdout(&output);
    assert!(out.contains(&format!("kept {}", config.display())), "{out}");
    for path in [AZURE_PRE, AZURE_POST] {
        assert!(!exists(&fixture.at(path)), "{path} removed");
        assert!(
            out.contains(&format!("removed {}", fixture.at(path).display())),
            "{out}"
        );
    }
}

#[test]
fn foreign_google_and_azure_scripts_are_never_overwritten() {
    let cases = [
        ("--gcp", GCP_PRE, GCP_POST),
        ("--gcp", GCP_POST, GCP_PRE),
        ("--azure", AZURE_PRE, AZURE_POST),
        ("--azure", AZURE_POST, AZURE_PRE),
        ("--all", GCP_PRE, GCP_POST),
    ];
    for (flag, theirs_path, other) in cases {
        let fixture = Fixture::new("cloud-foreign");
        let script = fixture.at(theirs_path);
        fs::create_dir_all(script.parent().expect("parent dir")).expect("create the directory");
        let theirs = "#!/bin/sh\n# the site's own snapshot script\nfsfreeze -f /srv\n";
        fs::write(&script, theirs).expect("write a foreign script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).expect("chmod");

        let output = install_expecting_failure(&fixture, &[flag]);

        let err = stderr(&output);
        assert!(err.contains(&script.display().to_string()), "{flag}: {err}");
        assert!(err.contains("Nothing was installed"), "{flag}: {err}");
        assert_eq!(
            read(&script),
            theirs,
            "{flag}: the foreign script is untouched"
        );
        assert_mode(&script, 0o700);
        assert!(!exists(&fixture.at(other)), "{flag}: {other} not installed");
        assert!(
            !exists(&fixture.at(SBIN).join("mysql-snapshot-freeze")),
            "{flag}: nothing is installed"
        );
        assert!(!exists(&fixture.at(AZURE_CONFIG)), "{flag}");
        assert!(!exists(&fixture.at(MANIFEST)), "{flag}");
    }
}

#[test]
fn the_google_hooks_exec_freeze_and_thaw_with_sync_and_the_disk_list_as_caller() {
    let fixture = Fixture::new("gcp-dispatch");
    fixture.install(&["--gcp"]);
    let disks = "persistent-disk-0,disk-1";
    let cases: &[(&str, &[&str], &str)] = &[
        (
            GCP_PRE,
            &[disks],
            "mysql-snapshot-freeze [--sync-filesystems] [--snapshot-timeout] [50] [--caller] \
             [google-guest-agent disks=persistent-disk-0,disk-1] [freeze]",
        ),
        (
            GCP_PRE,
            &[],
            "mysql-snapshot-freeze [--sync-filesystems] [--snapshot-timeout] [50] [--caller] [google-guest-agent disks=] [freeze]",
        ),
        (
            GCP_PRE,
            &["disk with space", "extra"],
            "mysql-snapshot-freeze [--sync-filesystems] [--snapshot-timeout] [50] [--caller] \
             [google-guest-agent disks=disk with space] [freeze]",
        ),
        (
            GCP_POST,
            &[disks],
            "mysql-snapshot-thaw [--caller] [google-guest-agent disks=persistent-disk-0,disk-1] [thaw]",
        ),
        (
            GCP_POST,
            &[],
            "mysql-snapshot-thaw [--caller] [google-guest-agent disks=] [thaw]",
        ),
    ];
    for (path, args, expected) in cases {
        let _ = fs::remove_file(fixture.argv_log());
        // Directly, as google-guest-agent does (shebang and exec bit).
        let run = run_script(&fixture, path, args, 0);
        assert_success(&run.output, &format!("{path} {args:?}"));
        assert_eq!(
            fixture.argv(),
            format!("{expected}\n"),
            "{path} {args:?} runs exactly one binary with exactly these arguments"
        );
        assert!(
            run.exec,
            "{path} {args:?} execs the binary: no shell stays behind holding the pipes the \
             agent reads to EOF"
        );
        assert!(
            run.output.stdout.is_empty() && run.output.stderr.is_empty(),
            "{path} adds no output of its own"
        );
    }
    for path in [GCP_PRE, GCP_POST] {
        for code in [1u8, 5] {
            let run = run_script(&fixture, path, &[disks], code);
            assert_eq!(
                run.output.status.code(),
                Some(i32::from(code)),
                "{path} exits with the binary's status, so a refused lock fails the snapshot"
            );
        }
    }
}

#[test]
fn the_azure_scripts_run_by_sh_exec_freeze_and_thaw_and_sync_only_when_fsfreeze_is_off() {
    let fixture = Fixture::new("azure-dispatch");
    fixture.install(&["--azure"]);
    let installed = fixture.at(AZURE_CONFIG);
    let configs = fixture.dir.join("configs");
    fs::create_dir_all(&configs).expect("create the configs dir");
    let variant = |name: &str, text: &str| {
        let path = configs.join(name);
        fs::write(&path, text).expect("write a plugin config variant");
        path
    };
    let ours = read(&installed);
    let off_spaced = variant(
        "off-spaced.json",
        &ours.replace("\"fsFreezeEnabled\": true", "\"fsFreezeEnabled\" :  false"),
    );
    let off_compact = variant(
        "off-compact.json",
        "{\"pluginName\":\"ScriptRunner\",\"fsFreezeEnabled\":false,\"timeoutInSeconds\":60}",
    );
    let off_wrapped = variant(
        "off-wrapped.json",
        "{\n\t\"fsFreezeEnabled\":\n\t\tfalse\n}\n",
    );
    let on_compact = variant("on-compact.json", "{\"fsFreezeEnabled\":true}");
    let absent_key = variant("no-key.json", "{\"pluginName\": \"ScriptRunner\"}");
    let missing = configs.join("missing.json");

    let freeze =
        "mysql-snapshot-freeze [--snapshot-timeout] [50] [--caller] [azure-vmsnapshot] [freeze]";
    let freeze_sync =
        "mysql-snapshot-freeze [--sync-filesystems] [--snapshot-timeout] [50] [--caller] [azure-vmsnapshot] [freeze]";
    let thaw = "mysql-snapshot-thaw [--caller] [azure-vmsnapshot] [thaw]";
    let cases: Vec<(&str, &[&str], &Path, &str)> = vec![
        // The plugin freezes by default: no sync needed.
        (AZURE_PRE, &[], &installed, freeze),
        (AZURE_PRE, &["param1", "param 2"], &installed, freeze),
        (AZURE_PRE, &[], &on_compact, freeze),
        (AZURE_PRE, &[], &absent_key, freeze),
        (AZURE_PRE, &[], &missing, freeze),
        // fsFreezeEnabled false: nobody freezes, so freeze syncs the filesystems.
        (AZURE_PRE, &[], &off_spaced, freeze_sync),
        (AZURE_PRE, &[], &off_compact, freeze_sync),
        (AZURE_PRE, &["p"], &off_wrapped, freeze_sync),
        (AZURE_POST, &[], &installed, thaw),
        (AZURE_POST, &["param1"], &off_spaced, thaw),
    ];
    for (path, params, config, expected) in cases {
        let run = run_azure_script(&fixture, path, params, config, 0);
        let what = format!("dash {path} {params:?} with {}", config.display());
        assert_success(&run.output, &what);
        assert_eq!(
            run.calls,
            format!("{expected}\n"),
            "{what} runs exactly one binary with exactly these arguments"
        );
        assert!(run.exec, "{what} execs the binary");
        assert!(
            run.output.stdout.is_empty() && run.output.stderr.is_empty(),
            "{what} adds no output of its own (the plugin never reads its pipes): {}",
            stderr(&run.output)
        );
    }
    for path in [AZURE_PRE, AZURE_POST] {
        for code in [1u8, 5] {
            let run = run_azure_script(&fixture, path, &[], &installed, code);
            assert_eq!(
                run.output.status.code(),
                Some(i32::from(code)),
                "dash {path} exits with the binary's status"
            );
        }
    }
}

#[test]
fn every_hook_template_is_posix_sh_with_the_marker_line() {
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hooks");
    let mut checked = 0;
    for entry in fs::read_dir(&hooks).expect("read hooks/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = read(&path);
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            continue;
        }
        let text = read(&path);
        assert!(text.starts_with("#!/bin/sh\n"), "{}", path.display());
        assert!(
            text.lines().any(|l| l == MARKER),
            "{} carries the marker",
            path.display()
        );
        for shell in ["sh", "dash"] {
            let output = Command::new(shell)
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("run {shell} -n: {e}"));
            assert_success(&output, &format!("{shell} -n {}", path.display()));
        }
        checked += 1;
    }
    assert!(checked >= 9, "found only {checked} hook templates");
}

#[test]
fn an_existing_azure_plugin_config_that_already_names_our_scripts_is_kept_without_edit_advice() {
    let fixture = Fixture::new("azure-own-config");
    let config = fixture.at(AZURE_CONFIG);
    fs::create_dir_all(config.parent().expect("parent dir")).expect("create etc/azure");
    // The site's own file, written by hand or by configuration management, compact JSON.
    let theirs = "{\"pluginName\":\"ScriptRunner\",\"preScriptLocation\":\"/etc/azure/mysql-snapshot-pre.sh\",\
                  \"postScriptLocation\":\"/etc/azure/mysql-snapshot-post.sh\",\"timeoutInSeconds\":120}\n";
    fs::write(&config, theirs).expect("write the plugin config");

    let output = fixture.install(&["--azure"]);

    assert_eq!(read(&config), theirs);
    let out = stdout(&output);
    assert!(out.contains("already names"), "{out}");
    assert!(
        !out.contains("set these two keys"),
        "no advice to edit what is already right:\n{out}"
    );
}

#[test]
fn aws_installs_the_ssm_document_pointed_at_the_installed_binaries_and_no_hypervisor_hook() {
    for (prefix, sbin) in [("/usr/local", "/usr/local/sbin"), ("/usr", "/usr/sbin")] {
        let fixture = Fixture::new("aws");
        let bin_dir = fixture.bin_dir();
        let args = [
            "--no-build",
            "--bin-dir",
            bin_dir.to_str().expect("temp dir path is UTF-8"),
            "--aws",
        ];
        let output = fixture.run_with(&args, &[("PREFIX", prefix)]);
        assert_success(&output, "install --aws");
        let document = format!(
            "{}/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml",
            prefix.trim_start_matches('/')
        );
        let path = fixture.at(&document);
        assert_mode(&path, 0o644);
        let text = read(&path);
        assert!(
            text.contains(&format!("SBIN=${{MYSQL_SNAPSHOT_SBIN:-{sbin}}}")),
            "the document must call the binaries in {sbin}:\n{text}"
        );
        assert!(
            !exists(&fixture.at(HOOK)),
            "--aws alone installs no VMware hook"
        );
        assert!(stdout(&output).contains("aws ssm create-document"));
        fixture.uninstall();
        assert!(!exists(&path), "uninstall removes the document");
    }
}

/// `visudo -cf path`: sudo's own parser on a file outside /etc (tests/prerequisites.sh installs
/// sudo, so a missing visudo fails the test).
fn visudo_check(path: &Path) -> Output {
    Command::new("visudo")
        .arg("-cf")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run visudo (tests/prerequisites.sh installs sudo): {e}"))
}

/// The command lines the installed drop-in grants `user` (its one `user ALL=(root) NOPASSWD:`
/// line, split at the commas).
fn veeam_grants(fixture: &Fixture, user: &str) -> Vec<String> {
    let text = read(&fixture.at(VEEAM_SUDOERS));
    let prefix = format!("{user} ALL=(root) NOPASSWD: ");
    let grants: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let rule = grants
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no NOPASSWD rule for {user}:\n{text}"));
    assert_eq!(
        grants.len(),
        2,
        "the drop-in holds the rule and its Defaults line, nothing else:\n{text}"
    );
    rule.split(", ").map(str::to_string).collect()
}

#[test]
fn veeam_installs_two_job_scripts_and_a_0440_sudoers_drop_in_that_visudo_accepts() {
    let fixture = Fixture::new("veeam");
    let output = fixture.install(&["--veeam-user", "backup.svc"]);

    for script in [VEEAM_PRE, VEEAM_POST] {
        assert_mode(&fixture.at(script), 0o755);
        assert_is_our_hook(&fixture, script, "/usr/local/sbin");
    }
    let sudoers = fixture.at(VEEAM_SUDOERS);
    assert_mode(&sudoers, 0o440);
    assert_mode(&fixture.at("etc/sudoers.d"), 0o750);
    assert_root_owned(&fixture, &[VEEAM_PRE, VEEAM_POST, VEEAM_SUDOERS]);
    let check = visudo_check(&sudoers);
    assert_success(&check, "visudo -cf on the installed drop-in");
    let text = read(&sudoers);
    assert!(text.lines().any(|l| l == MARKER), "{text}");
    assert!(
        text.lines().any(|l| l == "Defaults:backup.svc !requiretty"),
        "{text}"
    );
    assert_eq!(
        veeam_grants(&fixture, "backup.svc"),
        [
            "/usr/local/sbin/mysql-snapshot-freeze --caller veeam --snapshot-timeout 540 freeze",
            "/usr/local/sbin/mysql-snapshot-thaw --caller veeam thaw"
        ],
        "exactly the two commands, with their arguments, at the installed paths"
    );
    let out = stdout(&output);
    assert!(out.contains("Veeam: backup.svc may now run"), "{out}");
    // --veeam alone: no VMware hook (a hook flag was given), the default account.
    assert!(
        !exists(&fixture.at(HOOK)),
        "--veeam installs no VMware hook"
    );

    let plain = Fixture::new("veeam-default");
    plain.install(&["--veeam"]);
    assert_eq!(veeam_grants(&plain, "veeam").len(), 2);

    // visudo really parses: a broken rule fails it, so its acceptance above means something.
    let bad = fixture.dir.join("bad-sudoers");
    fs::write(&bad, "veeam ALL=(root) NOPASSWD /bin/true,\n").expect("write a bad sudoers");
    assert!(
        !visudo_check(&bad).status.success(),
        "visudo accepted a broken rule"
    );

    fixture.uninstall();
    for path in [VEEAM_PRE, VEEAM_POST, VEEAM_SUDOERS] {
        assert!(!exists(&fixture.at(path)), "{path} is removed at uninstall");
    }
}

#[test]
fn a_foreign_sudoers_drop_in_is_never_overwritten() {
    let fixture = Fixture::new("veeam-foreign");
    let sudoers = fixture.at(VEEAM_SUDOERS);
    fs::create_dir_all(sudoers.parent().expect("parent dir")).expect("create etc/sudoers.d");
    let theirs = "veeam ALL=(ALL) NOPASSWD: ALL\n";
    fs::write(&sudoers, theirs).expect("write a foreign drop-in");
    let output = install_expecting_failure(&fixture, &["--veeam"]);
    assert!(
        stderr(&output).contains("was not installed by"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        read(&sudoers),
        theirs,
        "the site's own drop-in is untouched"
    );
    assert!(!exists(&fixture.at(VEEAM_PRE)), "nothing was installed");
}

#[test]
fn the_veeam_scripts_run_through_sudo_exactly_the_command_lines_the_drop_in_grants() {
    assert!(
        running_as_root(),
        "this test runs the scripts through the machine's sudo as root (tests/run.sh runs as root)"
    );
    let fixture = Fixture::new("veeam-run");
    fixture.install(&["--veeam"]);
    let sbin = fixture.at(SBIN);
    let sbin = sbin.to_str().expect("UTF-8 path");
    let mut logged = Vec::new();
    for script in [VEEAM_PRE, VEEAM_POST] {
        let _ = fs::remove_file(fixture.argv_log());
        // As Veeam runs an uploaded script: `sh <file>`, no arguments, no tty.
        let output = Command::new("sh")
            .arg(fixture.at(script))
            .env("MYSQL_SNAPSHOT_SBIN", sbin)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the script");
        assert_success(&output, script);
        logged.push(fixture.argv().trim_end().to_string());
    }
    assert_eq!(
        logged,
        [
            "mysql-snapshot-freeze [--caller] [veeam] [--snapshot-timeout] [540] [freeze]",
            "mysql-snapshot-thaw [--caller] [veeam] [thaw]"
        ]
    );
    // What ran is what sudoers allows, word for word (the paths aside: the test's binaries).
    let granted: Vec<String> = veeam_grants(&fixture, "veeam")
        .iter()
        .map(|g| {
            let words: Vec<&str> = g.split(' ').collect();
            let name = words[0].rsplit('/').next().expect("a path");
            std::iter::once(name.to_string())
                .chain(words[1..].iter().map(|w| format!("[{w}]")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(logged, granted, "the scripts run what the drop-in grants");
}
