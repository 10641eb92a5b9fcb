//! Tests of the .deb that `packaging/build.sh` makes: unpacked into a throwaway root with
//! `dpkg-deb -x`, it holds exactly the promised files with their modes and owners, hooks that
//! point at /usr/sbin, the right control fields and conffiles, and maintainer scripts that make
//! (and on purge remove) the 0700 info-file directory.
//!
//! The .deb is built once per run, and reused when it is newer than everything it is made of.
//! Release binaries already in the target directory are reused (`--no-build`); otherwise
//! build.sh builds them. A missing cargo-deb is installed by build.sh; if that fails, so do
//! these tests. Nothing is installed into the real root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use harness::package::{repo, text};
use harness::TempDir;

/// Every file the .deb installs, with its mode. Directories are all 0755 and not listed.
const FILES: [(&str, u32); 23] = [
    ("usr/sbin/mysql-snapshot-freeze", 0o755),
    ("usr/sbin/mysql-snapshot-thaw", 0o755),
    ("usr/sbin/mysql-snapshot-locker", 0o755),
    ("usr/sbin/mysql-snapshot-verify", 0o755),
    ("usr/sbin/mysql-snapshot-qemu-hook", 0o755),
    ("etc/vmware-tools/backupScripts.d/50-mysql-snapshot", 0o755),
    ("etc/qemu/fsfreeze-hook.d/mysql-snapshot", 0o755),
    ("etc/mysql-snapshot.cnf", 0o600),
    ("etc/logrotate.d/mysql-snapshot", 0o644),
    ("usr/share/mysql-snapshot/nutanix/pre_freeze", 0o644),
    ("usr/share/mysql-snapshot/nutanix/post_thaw", 0o644),
    ("usr/share/mysql-snapshot/gcp/pre.sh", 0o644),
    ("usr/share/mysql-snapshot/gcp/post.sh", 0o644),
    (
        "usr/share/mysql-snapshot/azure/mysql-snapshot-pre.sh",
        0o644,
    ),
    (
        "usr/share/mysql-snapshot/azure/mysql-snapshot-post.sh",
        0o644,
    ),
    (
        "usr/share/mysql-snapshot/azure/VMSnapshotScriptPluginConfig.json",
        0o644,
    ),
    (
        "usr/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml",
        0o644,
    ),
    ("usr/share/man/man8/mysql-snapshot-freeze.8.gz", 0o644),
    ("usr/share/man/man8/mysql-snapshot-thaw.8.gz", 0o644),
    ("usr/share/man/man8/mysql-snapshot-locker.8.gz", 0o644),
    ("usr/share/man/man8/mysql-snapshot-verify.8.gz", 0o644),
    ("usr/share/man/man5/mysql-snapshot.cnf.5.gz", 0o644),
    // cargo-deb writes it from the workspace license.
    ("usr/share/doc/mysql-snapshot/copyright", 0o644),
];

const CONFFILES: [&str; 4] = [
    "/etc/vmware-tools/backupScripts.d/50-mysql-snapshot",
    "/etc/qemu/fsfreeze-hook.d/mysql-snapshot",
    "/etc/mysql-snapshot.cnf",
    "/etc/logrotate.d/mysql-snapshot",
];

const HOOKS: [&str; 9] = [
    "usr/sbin/mysql-snapshot-qemu-hook",
    "etc/vmware-tools/backupScripts.d/50-mysql-snapshot",
    "etc/qemu/fsfreeze-hook.d/mysql-snapshot",
    "usr/share/mysql-snapshot/nutanix/pre_freeze",
    "usr/share/mysql-snapshot/nutanix/post_thaw",
    "usr/share/mysql-snapshot/gcp/pre.sh",
    "usr/share/mysql-snapshot/gcp/post.sh",
    "usr/share/mysql-snapshot/azure/mysql-snapshot-pre.sh",
    "usr/share/mysql-snapshot/azure/mysql-snapshot-post.sh",
];

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(output.status.success(), "{what} failed: {}", text(&output));
    output
}

fn deb() -> &'static Path {
    harness::package::deb()
}

/// `dpkg-deb -x` of the package into a fresh throwaway root.
fn unpack() -> TempDir {
    let root = TempDir::new("deb-root");
    run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb())
            .arg(root.path()),
        "dpkg-deb -x",
    );
    root
}

/// Every entry of the unpacked tree, relative, with its type and mode.
fn tree(root: &Path) -> BTreeMap<String, (bool, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (bool, u32)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, (meta.is_dir(), meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn the_deb_unpacks_into_exactly_the_promised_files_with_their_modes() {
    let root = unpack();
    let entries = tree(root.path());

    let files: BTreeMap<String, u32> = entries
        .iter()
        .filter(|(_, (is_dir, _))| !is_dir)
        .map(|(path, (_, mode))| (path.clone(), *mode))
        .collect();
    let expected: BTreeMap<String, u32> = FILES.iter().map(|(p, m)| (p.to_string(), *m)).collect();
    assert_eq!(files, expected, "files and modes in the .deb");

    for (path, (is_dir, mode)) in &entries {
        if *is_dir {
            assert_eq!(*mode, 0o755, "directory {path} is 0755");
        }
    }

    // The archive itself says root:root for every entry (dpkg-deb -x as root keeps owners).
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb()), "dpkg-deb -c");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for line in listing.lines() {
        let owner = line.split_whitespace().nth(1).unwrap_or("");
        assert!(
            owner == "root/root" || owner == "0/0",
            "every entry is owned by root: {line}"
        );
    }
    assert!(
        !listing.contains("var/lib/mysql-snapshot"),
        "the 0700 directory comes from postinst, not the archive (it would be 0755 there):\n{listing}"
    );
}

#[test]
fn the_packaged_hooks_point_at_usr_sbin_and_the_binaries_run() {
    let root = unpack();
    let repo = repo();
    for hook in HOOKS {
        let text = fs::read_to_string(root.path().join(hook)).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{hook}:\n{text}");
        assert!(
            text.contains("${MYSQL_SNAPSHOT_SBIN:-/usr/sbin}"),
            "{hook} runs the packaged binaries in /usr/sbin:\n{text}"
        );
        assert!(
            !text.contains("packaging/stage") && !text.contains("@SBIN@"),
            "{hook} carries no staging path or placeholder:\n{text}"
        );
    }

    let document = fs::read_to_string(
        root.path()
            .join("usr/share/mysql-snapshot/aws/mysql-snapshot-ssm-document.yaml"),
    )
    .unwrap();
    assert!(
        document.contains("SBIN=${MYSQL_SNAPSHOT_SBIN:-/usr/sbin}"),
        "the packaged SSM document runs the packaged binaries in /usr/sbin:\n{document}"
    );

    // The packaged binaries are real, runnable builds of this version.
    let sbin = root.path().join("usr/sbin");
    // (The locker is left out: argh makes its required options win over --version.)
    for binary in [
        "mysql-snapshot-freeze",
        "mysql-snapshot-thaw",
        "mysql-snapshot-verify",
    ] {
        let output = run(
            Command::new(sbin.join(binary)).arg("--version"),
            &format!("{binary} --version"),
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("{binary} {}", env!("CARGO_PKG_VERSION"))
        );
    }
    let output = run(
        Command::new(sbin.join("mysql-snapshot-locker")).arg("--help"),
        "mysql-snapshot-locker --help",
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: mysql-snapshot-locker"));

    let config = fs::read_to_string(root.path().join("etc/mysql-snapshot.cnf")).unwrap();
    assert!(config.lines().any(|l| l == "[mysql-snapshot]"), "{config}");
    assert!(
        config
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('['))
            .all(|l| l.starts_with('#')),
        "the packaged config is the all-defaults template:\n{config}"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("etc/logrotate.d/mysql-snapshot")).unwrap(),
        fs::read_to_string(repo.join("logrotate/mysql-snapshot")).unwrap()
    );

    for (page, source) in [
        (
            "usr/share/man/man8/mysql-snapshot-freeze.8.gz",
            "mysql-snapshot-freeze.8",
        ),
        (
            "usr/share/man/man8/mysql-snapshot-thaw.8.gz",
            "mysql-snapshot-thaw.8",
        ),
        (
            "usr/share/man/man8/mysql-snapshot-locker.8.gz",
            "mysql-snapshot-locker.8",
        ),
        (
            "usr/share/man/man8/mysql-snapshot-verify.8.gz",
            "mysql-snapshot-verify.8",
        ),
        (
            "usr/share/man/man5/mysql-snapshot.cnf.5.gz",
            "mysql-snapshot.cnf.5",
        ),
    ] {
        let output = run(
            Command::new("gzip").arg("-dc").arg(root.path().join(page)),
            &format!("gzip -dc {page}"),
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            fs::read_to_string(repo.join("packaging/man").join(source)).unwrap(),
            "{page} is packaging/man/{source}"
        );
    }
}

#[test]
fn the_deb_control_fields_and_conffiles_are_right() {
    let field = |name: &str| {
        let output = run(
            Command::new("dpkg-deb").arg("-f").arg(deb()).arg(name),
            &format!("dpkg-deb -f {name}"),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "mysql-snapshot");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let arch = run(
        Command::new("dpkg").arg("--print-architecture"),
        "dpkg --print-architecture",
    );
    assert_eq!(
        field("Architecture"),
        String::from_utf8_lossy(&arch.stdout).trim()
    );
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    assert!(
        field("Depends").contains("libc6"),
        "Depends: {}",
        field("Depends")
    );
    assert!(!field("Maintainer").is_empty());
    assert!(
        field("Description").contains("hypervisor"),
        "Description: {}",
        field("Description")
    );

    let control = TempDir::new("deb-control");
    run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb())
            .arg(control.path().join("DEBIAN")),
        "dpkg-deb -e",
    );
    let conffiles = fs::read_to_string(control.path().join("DEBIAN/conffiles")).unwrap();
    let mut listed: Vec<&str> = conffiles.lines().collect();
    listed.sort_unstable();
    let mut expected = CONFFILES.to_vec();
    expected.sort_unstable();
    assert_eq!(
        listed, expected,
        "every /etc file is a conffile, and only those"
    );
    for script in ["postinst", "postrm"] {
        let path = control.path().join("DEBIAN").join(script);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755,
            "{script} is executable"
        );
    }
}

#[test]
fn postinst_makes_the_info_file_directory_0700_and_purge_removes_it() {
    let control = TempDir::new("deb-scripts");
    run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb())
            .arg(control.path().join("DEBIAN")),
        "dpkg-deb -e",
    );
    let script = |name: &str| control.path().join("DEBIAN").join(name);
    // dpkg sets DPKG_ROOT for maintainer scripts of a --root install; ours honour it.
    let root = TempDir::new("deb-dpkg-root");
    let maintainer = |name: &str, arg: &str| {
        run(
            Command::new(script(name))
                .arg(arg)
                .env("DPKG_ROOT", root.path()),
            &format!("{name} {arg}"),
        )
    };
    let dir = root.path().join("var/lib/mysql-snapshot");

    let output = maintainer("postinst", "configure");
    let meta = fs::metadata(&dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "root-owned");
    assert!(
        output.stderr.is_empty(),
        "no warning without legacy scripts: {}",
        text(&output)
    );

    // Again, over a directory someone opened up: the mode is put back.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("snapshot-info.json"), "{}\n").unwrap();
    let legacy = root.path().join("usr/sbin/pre-freeze-script");
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, "#!/usr/bin/php\n").unwrap();
    let output = maintainer("postinst", "configure");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        fs::read_to_string(dir.join("snapshot-info.json")).unwrap(),
        "{}\n"
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("WARNING") && err.contains("/usr/sbin/pre-freeze-script"),
        "postinst warns about a legacy script that would also run: {err}"
    );

    maintainer("postrm", "remove");
    assert!(dir.is_dir(), "remove keeps the info file directory");
    maintainer("postrm", "purge");
    assert!(!dir.exists(), "purge removes it");
    assert!(legacy.exists(), "purge leaves other files alone");
}

#[test]
fn dpkg_installs_the_deb_into_a_throwaway_root_and_purge_leaves_nothing_behind() {
    // A real `dpkg --root` install: the archive, conffiles and maintainer scripts (run
    // chrootless with DPKG_ROOT set) together, into an empty root with its own dpkg database.
    // libc6 is not in that database, hence --force-depends; --log keeps the host's log clean.
    let root = TempDir::new("dpkg-root");
    let admin = root.path().join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info")).unwrap();
    fs::create_dir_all(admin.join("updates")).unwrap();
    fs::write(admin.join("status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let mut command = Command::new("dpkg");
        command
            .arg(format!("--root={}", root.path().display()))
            .args([
                "--log=/dev/null",
                "--force-script-chrootless",
                "--force-depends",
            ])
            .args(args);
        command
    };

    run(dpkg(&["--install"]).arg(deb()), "dpkg --root --install");

    let dir = root.path().join("var/lib/mysql-snapshot");
    let meta = fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    for (path, mode) in FILES {
        assert_eq!(
            fs::symlink_metadata(root.path().join(path))
                .unwrap_or_else(|e| panic!("{path} installed: {e}"))
                .permissions()
                .mode()
                & 0o7777,
            mode,
            "{path} installed with its mode"
        );
    }
    let status = run(
        &mut dpkg(&["--status", "mysql-snapshot"]),
        "dpkg --root --status",
    );
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("Status: install ok installed"), "{status}");

    // An edited conffile survives a plain remove, and purge takes everything.
    fs::write(
        root.path().join("etc/mysql-snapshot.cnf"),
        "[client]\nuser = snap\n",
    )
    .unwrap();
    run(
        &mut dpkg(&["--remove", "mysql-snapshot"]),
        "dpkg --root --remove",
    );
    assert!(!root.path().join("usr/sbin/mysql-snapshot-freeze").exists());
    assert_eq!(
        fs::read_to_string(root.path().join("etc/mysql-snapshot.cnf")).unwrap(),
        "[client]\nuser = snap\n",
        "remove keeps the edited config"
    );
    run(
        &mut dpkg(&["--purge", "mysql-snapshot"]),
        "dpkg --root --purge",
    );
    let mut left: Vec<String> = tree(root.path())
        .into_keys()
        .filter(|p| !p.starts_with("var/lib/dpkg"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["var", "var/lib"],
        "purge leaves nothing of the package behind"
    );
}
