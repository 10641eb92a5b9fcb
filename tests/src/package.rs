//! The project's .deb, as `packaging/build.sh` makes it from the tree under test: built once per
//! run (or reused when newer than everything it is made of) and handed to each test as a private
//! copy. Tests unpack it into throwaway roots or install it in a VM; nothing here installs it on
//! this machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The binaries the package ships.
pub const BINARIES: [&str; 4] = [
    "mysql-snapshot-freeze",
    "mysql-snapshot-thaw",
    "mysql-snapshot-locker",
    "mysql-snapshot-verify",
];

/// The repository this test crate belongs to.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

/// The cargo target directory the running program was built into: `<target>/debug/deps/<test>`
/// for a test binary, `<target>/release/<bin>` for the benchmark.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running program");
    let mut dir = exe.parent().expect("the program lives in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps lives in a profile directory");
    }
    dir.parent()
        .expect("the profile directory lives in the target directory")
        .to_path_buf()
}

/// A process's status and output, for failure messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time among the files the .deb is made of.
fn newest_input(release: &Path) -> SystemTime {
    let repo = repo();
    let mut inputs: Vec<PathBuf> = [
        "install.sh",
        "logrotate/mysql-snapshot",
        "freeze/Cargo.toml",
        "packaging/build.sh",
    ]
    .iter()
    .map(|p| repo.join(p))
    .collect();
    for dir in ["hooks", "packaging/man", "packaging/debian"] {
        for entry in fs::read_dir(repo.join(dir)).unwrap() {
            inputs.push(entry.unwrap().path());
        }
    }
    inputs.extend(BINARIES.iter().map(|b| release.join(b)));
    inputs
        .iter()
        .map(|p| modified(p).unwrap_or_else(|| panic!("{} is missing", p.display())))
        .max()
        .unwrap()
}

fn find_deb(dir: &Path) -> Option<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    fs::read_dir(dir).ok()?.find_map(|e| {
        let path = e.ok()?.path();
        let name = path.file_name()?.to_str()?.to_string();
        (name.starts_with(&format!("mysql-snapshot_{version}-")) && name.ends_with(".deb"))
            .then_some(path)
    })
}

/// Builds the .deb (or reuses a fresh one) and returns a private copy of it.
fn build_deb() -> Result<PathBuf, String> {
    let target = target_dir();
    let release = target.join("release");
    let out = target.join("packages");
    let mut have_binaries = BINARIES.iter().all(|b| release.join(b).is_file());
    if have_binaries {
        // Release binaries left by an earlier build may predate the tree under test: bring them
        // up to date first (a no-op when they are), so that a reused .deb is never stale.
        let built = Command::new("cargo")
            .args(["build", "--release", "--locked"])
            .args(["-p", "mysql-snapshot-freeze", "-p", "mysql-snapshot-thaw"])
            .args(["-p", "mysql-snapshot-locker", "-p", "mysql-snapshot-verify"])
            .current_dir(repo())
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .map_err(|e| format!("cannot run cargo build --release: {e}"))?;
        if !built.status.success() {
            return Err(format!("cargo build --release failed: {}", text(&built)));
        }
        have_binaries = BINARIES.iter().all(|b| release.join(b).is_file());
    }
    let fresh = have_binaries
        && find_deb(&out)
            .and_then(|deb| modified(&deb))
            .is_some_and(|built| built > newest_input(&release));
    if fresh {
        eprintln!("packages: reusing the .deb in {}", out.display());
    } else {
        let mut command = Command::new(repo().join("packaging/build.sh"));
        command.arg("--deb-only").env("CARGO_TARGET_DIR", &target);
        if have_binaries {
            eprintln!(
                "packages: building the .deb from the release binaries in {} (--no-build)",
                release.display()
            );
            command.arg("--no-build");
        } else {
            eprintln!("packages: no release binaries yet: build.sh builds them (a few minutes)");
        }
        let started = std::time::Instant::now();
        let output = command
            .output()
            .map_err(|e| format!("cannot run packaging/build.sh: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "packaging/build.sh --deb-only failed (if cargo-deb could not be installed, \
                 crates.io must be reachable or cargo-deb installed beforehand): {}",
                text(&output)
            ));
        }
        eprintln!(
            "packages: build.sh took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let deb = find_deb(&out).ok_or_else(|| format!("no .deb in {}", out.display()))?;
    // A private copy, as a concurrent build may replace the shared one. Copies of test runs
    // that have ended are removed here, since nothing runs after the last test.
    for entry in fs::read_dir(&out).map_err(|e| format!("read {}: {e}", out.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(pid) = name
            .strip_prefix(".test-")
            .and_then(|rest| rest.strip_suffix(".deb"))
        {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_file(&path);
            }
        }
    }
    let copy = out.join(format!(".test-{}.deb", std::process::id()));
    fs::copy(&deb, &copy).map_err(|e| format!("copy {}: {e}", deb.display()))?;
    Ok(copy)
}

/// The package (a private copy of this run's build); panics with build.sh's output if it fails.
pub fn deb() -> &'static Path {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DEB.get_or_init(build_deb) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}
