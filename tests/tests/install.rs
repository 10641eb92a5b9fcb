//! Tests of `install.sh`: what it lays out where, the VMware Tools hook it writes, the legacy
//! links, and an uninstall that removes exactly what was installed.
//!
//! No database and no release build is needed: a fake bin directory holds three tiny shell
//! scripts named like the binaries, which append their name and arguments to a log file, and
//! every run uses `DESTDIR` inside a private temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BINARIES: [&str; 3] = [
    "mysql-snapshot-freeze",
    "mysql-snapshot-thaw",
    "mysql-snapshot-locker",
];
const HOOK: &str = "etc/vmware-tools/backupScripts.d/50-mysql-snapshot";
const CONFIG: &str = "etc/mysql-snapshot.cnf";
const LOGROTATE: &str = "etc/logrotate.d/mysql-snapshot";
const STATE_DIR: &str = "var/lib/mysql-snapshot";
const MANIFEST: &str = "var/lib/mysql-snapshot/install-manifest";
const SBIN: &str = "usr/local/sbin";
const LEGACY_FREEZE: &str = "usr/sbin/pre-freeze-script";
const LEGACY_THAW: &str = "usr/sbin/post-thaw-script";
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
                "#!/bin/sh\nprintf '%s %s\\n' '{}' \"$*\" >> '{}'\n",
                name,
                fixture.calls_log().display()
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

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `path` relative to the `DESTDIR`.
    fn at(&self, path: &str) -> PathBuf {
        self.root().join(path)
    }

    /// Runs `install.sh ARGS` with `DESTDIR` set to this fixture's root and `PREFIX` unset.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(install_sh())
            .args(args)
            .env("DESTDIR", self.root())
            .env_remove("PREFIX")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run install.sh")
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
fn legacy_links_are_installed_and_a_foreign_pre_freeze_script_is_never_overwritten() {
    let fixture = Fixture::new("legacy");
    fixture.install(&["--legacy"]);
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

    fixture.install(&["--legacy"]);
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
    for path in [HOOK, LEGACY_FREEZE, LEGACY_THAW, LOGROTATE, MANIFEST] {
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
    assert!(!exists(&fixture.at("usr/sbin")));

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
