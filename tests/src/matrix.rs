//! The server matrix: which servers the tests run against, and the Debian-unstable chroots that
//! hold the newer ones (MariaDB 11.8, MySQL 9.7), built once with debootstrap and cached outside
//! the repo under a file lock. It never leaves a mount behind, never deletes a tree with a mount
//! below it, and never lets an unbuildable chroot pass silently (skip only on explicit request).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// Where the chroots are cached (outside the repo, shared by every test binary).
const DEFAULT_CACHE: &str = "/var/cache/mysql-snapshot-tests";
/// Bump when the chroot layout or its template datadir changes: a new name means a fresh build,
/// and a chroot an older harness may still be using is never deleted under it.
const LAYOUT: &str = "v1";
/// Inside each chroot: the initialised datadir copied for every server.
pub const TEMPLATE: &str = "/var/lib/mss-template";
/// Inside each chroot: the parent of every server's own directory.
pub const SERVERS: &str = "/srv";
/// Upper bound for one network step (debootstrap, apt-get).
const NETWORK_LIMIT: Duration = Duration::from_secs(900);

/// One server of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The machine's own packages (Debian 12).
    MariaDb1011,
    /// Debian unstable, in a chroot.
    MariaDb118,
    /// Debian unstable, in a chroot.
    MySql97,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::MariaDb1011, Flavour::MariaDb118, Flavour::MySql97];

    pub fn name(self) -> &'static str {
        match self {
            Flavour::MariaDb1011 => "MariaDB 10.11",
            Flavour::MariaDb118 => "MariaDB 11.8",
            Flavour::MySql97 => "MySQL 9.7",
        }
    }

    /// What `SELECT VERSION()` starts with on this server.
    pub fn version_prefix(self) -> &'static str {
        match self {
            Flavour::MariaDb1011 => "10.11.",
            Flavour::MariaDb118 => "11.8.",
            Flavour::MySql97 => "9.7.",
        }
    }

    pub fn is_mysql(self) -> bool {
        self == Flavour::MySql97
    }

    /// The lock `lock-mode = auto` must pick on this flavour's throwaway server: MySQL's runs with
    /// `innodb_flush_log_at_trx_commit = 2`, which rules the backup lock out, so FTWRL.
    pub fn auto_lock_mode(self) -> &'static str {
        if self.is_mysql() {
            "ftwrl"
        } else {
            "backup-stage"
        }
    }

    /// The server program (inside the chroot for chroot flavours).
    pub fn daemon(self) -> &'static str {
        if self.is_mysql() {
            "mysqld"
        } else {
            "mariadbd"
        }
    }

    /// Small, fast settings for throwaway servers of this flavour.
    pub fn tuning(self) -> &'static [&'static str] {
        if self.is_mysql() {
            &[
                "--innodb-buffer-pool-size=32M",
                "--innodb-redo-log-capacity=8M",
                "--innodb-flush-log-at-trx-commit=2",
                "--skip-name-resolve",
                "--mysqlx=OFF",
                "--secure-file-priv=",
            ]
        } else {
            crate::SERVER_TUNING
        }
    }

    /// Binary log and GTID settings every matrix server starts with.
    pub fn replication_args(self) -> &'static [&'static str] {
        if self.is_mysql() {
            &[
                "--log-bin=binlog",
                "--server-id=1",
                "--gtid-mode=ON",
                "--enforce-gtid-consistency=ON",
            ]
        } else {
            &["--log-bin=binlog", "--server-id=1"]
        }
    }

    /// The Debian-unstable packages of a chroot flavour (`None`: the machine's own server).
    fn packages(self) -> Option<&'static [&'static str]> {
        match self {
            Flavour::MariaDb1011 => None,
            Flavour::MariaDb118 => Some(&["mariadb-server-core", "mariadb-client-core"]),
            Flavour::MySql97 => Some(&["mysql-server-core", "mysql-client-core"]),
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Flavour::MariaDb1011 => "mariadb-10.11",
            Flavour::MariaDb118 => "mariadb-11.8",
            Flavour::MySql97 => "mysql-9.7",
        }
    }

    /// The chroot this flavour runs in (`None` for the machine's own server), built on first use.
    pub fn chroot(self) -> Result<Option<&'static Path>, String> {
        let Some(cell) = self.chroot_cell() else {
            return Ok(None);
        };
        // The first chroot asked for starts the others building too: in parallel, a cold cache
        // costs one build's time, not the sum (libtest runs one flavour's tests side by side).
        static PREFETCH: Once = Once::new();
        PREFETCH.call_once(|| {
            for other in Flavour::ALL {
                if other != self && other.chroot_cell().is_some() {
                    std::thread::spawn(move || other.chroot().is_ok());
                }
            }
        });
        match cell.get_or_init(|| ensure_chroot(self)) {
            Ok(path) => Ok(Some(path.as_path())),
            Err(reason) => Err(reason.clone()),
        }
    }

    /// This process's memo of the flavour's chroot (`None` for the machine's own server).
    fn chroot_cell(self) -> Option<&'static OnceLock<Result<PathBuf, String>>> {
        static MARIADB_118: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        static MYSQL_97: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        match self {
            Flavour::MariaDb1011 => None,
            Flavour::MariaDb118 => Some(&MARIADB_118),
            Flavour::MySql97 => Some(&MYSQL_97),
        }
    }
}

/// The flavour and chroot whose tree holds `path`, among the chroots this process has set up.
pub fn flavour_of(path: &Path) -> Option<(Flavour, PathBuf)> {
    Flavour::ALL
        .into_iter()
        .find_map(|flavour| match flavour.chroot_cell()?.get()? {
            Ok(root) if path.starts_with(root) => Some((flavour, root.clone())),
            _ => None,
        })
}

/// `absolute` (a path as seen inside the chroot) as the host sees it.
pub fn inside(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

/// Makes sure `flavour` can run here. Returns false only when its chroot cannot be built and
/// `MYSQL_SNAPSHOT_SKIP_MATRIX=1` asks to skip (the caller returns at once, after a loud banner);
/// without that setting the failure panics, so a broken matrix is never counted as passing.
pub fn require(flavour: Flavour) -> bool {
    let Err(reason) = flavour.chroot() else {
        return true;
    };
    let banner = "=".repeat(78);
    if std::env::var("MYSQL_SNAPSHOT_SKIP_MATRIX").as_deref() == Ok("1") {
        eprintln!(
            "\n{banner}\nSKIPPED: {} ({reason})\nMYSQL_SNAPSHOT_SKIP_MATRIX=1 is set: this test asserted NOTHING about {}.\n{banner}\n",
            flavour.name(),
            flavour.name()
        );
        return false;
    }
    panic!(
        "\n{banner}\nthe {} chroot could not be built: {reason}\n(set MYSQL_SNAPSHOT_SKIP_MATRIX=1 to skip the matrix loudly where the Debian mirror is out of reach)\n{banner}",
        flavour.name()
    );
}

/// The cache directory (`MYSQL_SNAPSHOT_CHROOT_CACHE` overrides the default).
pub(crate) fn cache_root() -> PathBuf {
    std::env::var_os("MYSQL_SNAPSHOT_CHROOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// Returns the complete chroot for `flavour`, building it first if no run has yet.
fn ensure_chroot(flavour: Flavour) -> Result<PathBuf, String> {
    let root = cache_root();
    let name = format!("{}-{LAYOUT}", flavour.slug());
    let done = root.join(&name);
    if done.join(".complete").is_file() {
        return Ok(done);
    }
    // One builder at a time across every test binary; the others wait here, then reuse.
    let _lock = build_lock(&root, &name)?;
    if done.join(".complete").is_file() {
        return Ok(done);
    }
    let started = Instant::now();
    eprintln!(
        "matrix: building the {} chroot in {} (once; about a minute)",
        flavour.name(),
        done.display()
    );
    let build_prefix = format!(".{name}.build-");
    let build = root.join(format!("{build_prefix}{}", std::process::id()));
    let log_path = root.join(format!("{name}.build.log"));
    // Half-built directories of interrupted runs go first, unless a process still works in one
    // (a killed run's debootstrap may outlive it); a directory without its marker goes too.
    let leftovers = fs::read_dir(&root)
        .map_err(|e| format!("cannot list {}: {e}", root.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&build_prefix))
        });
    for leftover in leftovers.chain([done.clone()]) {
        if let Some(pid) = process_using(&leftover) {
            eprintln!(
                "matrix: leaving {} alone: process {pid} still uses it",
                leftover.display()
            );
            continue;
        }
        remove_tree(&leftover)?;
    }
    let result = build_chroot(flavour, &build, &log_path);
    // debootstrap mounts /proc and /sys in the target while it runs; nothing may outlive it.
    let unmounted = unmount_below(&build);
    match result.and(unmounted) {
        Ok(()) => {
            fs::rename(&build, &done).map_err(|e| {
                format!(
                    "cannot rename {} to {}: {e}",
                    build.display(),
                    done.display()
                )
            })?;
            eprintln!(
                "matrix: the {} chroot is ready ({:.0?})",
                flavour.name(),
                started.elapsed()
            );
            Ok(done)
        }
        Err(reason) => {
            let cleanup = remove_tree(&build)
                .err()
                .map(|e| format!("; also: {e}"))
                .unwrap_or_default();
            Err(format!(
                "{reason}{cleanup}\n--- last lines of {} ---\n{}",
                log_path.display(),
                tail(&log_path, 25)
            ))
        }
    }
}

/// Holds `<root>/<name>.lock` (made with `root` if missing) until dropped: one builder of a cached
/// tree at a time, across test binaries.
pub(crate) fn build_lock(root: &Path, name: &str) -> Result<File, String> {
    fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let path = root.join(format!("{name}.lock"));
    let lock = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(lock)
}

/// debootstrap, the packages, and an initialised template datadir, all inside `dir`.
fn build_chroot(flavour: Flavour, dir: &Path, log_path: &Path) -> Result<(), String> {
    let packages = flavour
        .packages()
        .ok_or_else(|| format!("{} runs on the machine's own packages", flavour.name()))?;
    if fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
        != 0
    {
        return Err("building and entering a chroot needs root".into());
    }
    let debootstrap = find_tool("debootstrap").ok_or(
        "debootstrap is not installed (tests/run.sh installs it: apt-get install debootstrap)",
    )?;
    let chroot = find_tool("chroot").ok_or("chroot(8) is not installed")?;
    let mirror = debian_mirror();
    let log =
        File::create(log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;

    run(
        Command::new(&debootstrap)
            .args(["--variant=minbase", "sid"])
            .arg(dir)
            .arg(&mirror),
        &log,
        NETWORK_LIMIT,
        &format!(
            "debootstrap --variant=minbase sid {} {mirror}",
            dir.display()
        ),
    )?;
    // Nothing in the chroot may start a service (server-core packages ship none; belt and braces).
    let policy = dir.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n")
        .and_then(|()| {
            fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        })
        .map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
    // The mirror is a dated snapshot: its Release file reads as expired.
    let apt = |args: &[&str]| {
        let mut command = Command::new(&chroot);
        command
            .arg(dir)
            .args(["apt-get", "-o", "Acquire::Check-Valid-Until=false"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(
        &mut apt(&["update"]),
        &log,
        NETWORK_LIMIT,
        "apt-get update (in the chroot)",
    )?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(packages);
    run(
        &mut install,
        &log,
        NETWORK_LIMIT,
        &format!("apt-get install {} (in the chroot)", packages.join(" ")),
    )?;

    let mut init = Command::new(&chroot);
    init.arg(dir);
    if flavour.is_mysql() {
        init.args([
            "mysqld",
            "--no-defaults",
            "--initialize-insecure",
            "--user=root",
        ]);
    } else {
        // --force: the chroot has no /etc/hosts for the script's host-name check.
        init.args([
            "mariadb-install-db",
            "--no-defaults",
            "--force",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]);
    }
    init.arg(format!("--datadir={TEMPLATE}"))
        .args(flavour.tuning());
    run(
        &mut init,
        &log,
        Duration::from_secs(300),
        &format!("initialising the template datadir {TEMPLATE} (in the chroot)"),
    )?;

    let versions = Command::new(&chroot)
        .arg(dir)
        .args(["dpkg-query", "-W"])
        .args(packages)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    fs::create_dir_all(inside(dir, SERVERS))
        .and_then(|()| {
            fs::write(
                dir.join(".complete"),
                format!("layout {LAYOUT}\nmirror {mirror}\n{versions}"),
            )
        })
        .map_err(|e| format!("cannot finish {}: {e}", dir.display()))
}

/// Runs `command` with its output appended to `log`, killing its process group after `limit`.
pub(crate) fn run(
    command: &mut Command,
    log: &File,
    limit: Duration,
    what: &str,
) -> Result<(), String> {
    let out = log.try_clone().map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{what} failed ({status})")),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) | Err(_) => {
                // The whole group: debootstrap's wget and dpkg are its children.
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(format!("-{}", child.id()))
                    .status();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {limit:?}"));
            }
        }
    }
}

/// The machine's Debian mirror, from its apt sources (deb822 first, then sources.list).
pub fn debian_mirror() -> String {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822.lines().find_map(|line| {
        let value = line.trim().strip_prefix("URIs:")?;
        value
            .split_whitespace()
            .find(|uri| !uri.contains("security"))
            .map(String::from)
    });
    let legacy = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_legacy = || {
        legacy.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("deb ")?;
            // Skip an options block: `deb [signed-by=…] URI suite …`.
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let uri = rest.split_whitespace().next()?;
            (!uri.contains("security")).then(|| uri.to_string())
        })
    };
    from_deb822
        .or_else(from_legacy)
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Mount points at or below `dir`, deepest first (from this process's mount table). A test that
/// mounts inside a chroot checks it before deleting its own directory there.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_path(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(code) = u8::from_str_radix(&digits, 8) {
                out.push(char::from(code));
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Unmounts everything at or below `dir`; an error if anything is still mounted afterwards.
fn unmount_below(dir: &Path) -> Result<(), String> {
    for point in mounts_below(dir) {
        let _ = Command::new("umount").arg("-l").arg(&point).status();
    }
    let left = mounts_below(dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "mounts are left below {} and could not be unmounted: {left:?}",
            dir.display()
        ))
    }
}

/// A process whose root directory lies in `dir` or whose command line names it.
pub(crate) fn process_using(dir: &Path) -> Option<u32> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .find(|pid| {
            let rooted =
                fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|root| root.starts_with(dir));
            let named = fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|argv| String::from_utf8_lossy(&argv).contains(&needle));
            rooted || named
        })
}

/// Deletes `dir`, but only once nothing is mounted below it (a bind-mounted /dev must never be
/// emptied by a recursive delete).
pub(crate) fn remove_tree(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_below(dir)?;
    fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

/// The last `lines` lines of a log file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let _ = file.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_with_spaces_are_read_back_from_mountinfo_escapes() {
        assert_eq!(unescape_mount_path("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/x\\"), "/x\\");
    }
}
