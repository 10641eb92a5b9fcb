//! Where the server's files live, and making them durable where the platform does not freeze.
//!
//! Owns asking the server for every directory it writes recovery-relevant files to, resolving each
//! to the filesystem holding it through `/proc/self/mountinfo`, and `syncfs(2)` of each of those
//! filesystems once, with a deadline. Google Compute Engine, AWS DLM and Azure with
//! `fsFreezeEnabled: false` copy the disk without FIFREEZE: what the server wrote but the kernel
//! has not flushed (MyISAM pages after FLUSH TABLES, binlog with `sync_binlog=0`, redo with
//! `innodb_flush_log_at_trx_commit=2`, the info file) would be missing from the copy.
//!
//! Each sync runs in a `sync --file-system` child process, never in a thread of ours: a sync that
//! hangs (a dead disk, a hard NFS mount) keeps only that child in the kernel, while the locker
//! releases, reports and exits. The children get null stdio and no descriptor of ours (std opens
//! everything close-on-exec), so they hold neither an agent's pipes nor the server connection.
//! This module never touches the server's files themselves and never syncs while no lock is held.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::Conn;
use serde::{Deserialize, Serialize};

use crate::error::NoLock;
use crate::{Error, Result};

/// The server variables naming a place the server writes files needed to recover the copy,
/// with the role each plays. Relative values are relative to `datadir`.
const PATH_VARIABLES: [(&str, &str); 8] = [
    ("datadir", "datadir"),
    ("innodb_data_home_dir", "innodb-data"),
    ("innodb_log_group_home_dir", "innodb-redo"),
    ("innodb_undo_directory", "innodb-undo"),
    ("log_bin_basename", "binlog"),
    ("relay_log_basename", "relay-log"),
    ("aria_log_dir_path", "aria-log"),
    ("log_bin_index", "binlog-index"),
];

/// Places the server writes that a restore does not need: mapped and shown, never flagged.
pub const INFORMATIONAL_VARIABLES: [(&str, &str); 2] = [
    ("tmpdir", "tmpdir"),
    ("secure_file_priv", "secure-file-priv"),
];

/// Every variable [`paths_from_variables`] and [`informational_paths`] read.
pub fn variable_names() -> Vec<&'static str> {
    PATH_VARIABLES
        .iter()
        .chain(INFORMATIONAL_VARIABLES.iter())
        .map(|(name, _)| *name)
        .collect()
}

/// The informational paths (`tmpdir`, which may list several directories, and
/// `secure_file_priv`) named by `SHOW GLOBAL VARIABLES` rows.
pub fn informational_paths(rows: &[(String, Option<String>)]) -> Vec<(String, PathBuf)> {
    let mut paths = Vec::new();
    for (name, role) in INFORMATIONAL_VARIABLES {
        let Some(raw) = rows
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
        else {
            continue;
        };
        // tmpdir may be a ':'-separated list; secure_file_priv NULL or empty means none.
        for (i, part) in raw
            .split(':')
            .map(str::trim)
            .filter(|p| p.starts_with('/'))
            .enumerate()
        {
            let role = if i == 0 {
                role.to_string()
            } else {
                format!("{role}-{}", i + 1)
            };
            paths.push((role, PathBuf::from(part)));
        }
    }
    paths
}

/// Where one path lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathEntry {
    pub path: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub device: String,
}

/// Every server path resolved to its filesystem, and what about them a DBA must know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageMap {
    /// One entry per role (`datadir`, `binlog`, `innodb-redo`, …, `info-file`, `tmpdir`).
    pub paths: std::collections::BTreeMap<String, PathEntry>,
    /// One line per flagged path (memory or network filesystem, excluded by VMware Tools, spread
    /// over several devices); empty when nothing is flagged.
    pub flags: Vec<String>,
}

/// Filesystem types whose content is in no disk snapshot.
const MEMORY_FS: [&str; 2] = ["tmpfs", "ramfs"];
/// Filesystem types no hypervisor agent freezes (vmtoolsd skips them) and no VM disk holds.
const NETWORK_FS: [&str; 9] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "lustre",
];

fn is_network(fstype: &str) -> bool {
    NETWORK_FS.contains(&fstype) || fstype == "fuse" || fstype.starts_with("fuse.")
}

/// Maps `recovery` paths (needed to restore the copy: flagged when at risk) and `informational`
/// ones (shown only) onto `mounts`; `excluded` are VMware Tools' `excludedFileSystems` patterns.
/// A path that cannot be resolved is a flag, not an error.
pub fn map(
    recovery: &[(String, PathBuf)],
    informational: &[(String, PathBuf)],
    mounts: &[Mount],
    excluded: &[String],
) -> StorageMap {
    let mut storage = StorageMap::default();
    let mut devices: Vec<String> = Vec::new();
    for (role, path, needed) in recovery
        .iter()
        .map(|(r, p)| (r, p, true))
        .chain(informational.iter().map(|(r, p)| (r, p, false)))
    {
        let Some((mount, _)) = resolve(path, mounts) else {
            if needed {
                storage.flags.push(format!(
                    "the {role} path {} cannot be found on this machine",
                    path.display()
                ));
            }
            continue;
        };
        storage.paths.insert(
            role.clone(),
            PathEntry {
                path: path.clone(),
                mount_point: mount.mount_point.clone(),
                fstype: mount.fstype.clone(),
                device: mount.source.clone(),
            },
        );
        if !needed {
            continue;
        }
        storage.flags.extend(flag(role, path, mount, excluded));
        if !MEMORY_FS.contains(&mount.fstype.as_str())
            && !is_network(&mount.fstype)
            && !devices.contains(&mount.source)
        {
            devices.push(mount.source.clone());
        }
    }
    if devices.len() > 1 {
        storage.flags.push(format!(
            "note: the server's files span {} devices ({}): the hypervisor must snapshot all of them together (one consistency group)",
            devices.len(),
            devices.join(", ")
        ));
    }
    storage
}

/// Why the server file of `role` at `path`, on `mount`, would be missing from the snapshot or
/// wrong in it: on memory, on a network filesystem, or excluded from VMware Tools' freeze.
fn flag(role: &str, path: &Path, mount: &Mount, excluded: &[String]) -> Option<String> {
    let at = format!(
        "the {role} ({}) is on {} {} ({})",
        path.display(),
        mount.fstype,
        mount.mount_point.display(),
        mount.source
    );
    if MEMORY_FS.contains(&mount.fstype.as_str()) {
        Some(format!(
            "{at}: memory, in no snapshot — a restored copy lacks it; move it to a disk"
        ))
    } else if is_network(&mount.fstype) {
        Some(format!(
            "{at}: a network filesystem, never frozen by the hypervisor's agent and not in the VM's disk snapshot; move it to a local disk"
        ))
    } else {
        excluded
            .iter()
            .find(|p| glob(p, &mount.mount_point.to_string_lossy()))
            .map(|pattern| format!(
                "{at}: excluded from the freeze by VMware Tools ([vmbackup] excludedFileSystems = {pattern}); remove it from that list"
            ))
    }
}

/// The storage map of this machine: `/proc/self/mountinfo` and VMware Tools' tools.conf.
pub fn map_here(recovery: &[(String, PathBuf)], informational: &[(String, PathBuf)]) -> StorageMap {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let excluded = std::fs::read_to_string("/etc/vmware-tools/tools.conf")
        .map(|t| vmware_excluded(&t))
        .unwrap_or_default();
    map(recovery, informational, &mounts, &excluded)
}

/// `[vmbackup] excludedFileSystems` of a tools.conf: comma-separated mount-point patterns.
pub fn vmware_excluded(tools_conf: &str) -> Vec<String> {
    let mut in_section = false;
    let mut found = Vec::new();
    for line in tools_conf.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line.eq_ignore_ascii_case("[vmbackup]");
        } else if let Some((key, value)) = line.split_once('=') {
            if in_section && key.trim() == "excludedFileSystems" {
                found = value
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
            }
        }
    }
    found
}

/// `*` and `?` wildcards, as VMware Tools matches excludedFileSystems.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The mount holding `path` (its nearest existing ancestor, symlinks resolved) and that path.
fn resolve<'a>(path: &Path, mounts: &'a [Mount]) -> Option<(&'a Mount, PathBuf)> {
    let existing = nearest_existing(path)?;
    let resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
    let number = std::fs::metadata(&resolved)
        .ok()
        .map(|m| (dev_major(m.dev()), dev_minor(m.dev())));
    let mount = number
        .and_then(|n| longest_prefix(mounts, &resolved, Some(n)))
        .or_else(|| longest_prefix(mounts, &resolved, None))?;
    Some((mount, resolved))
}

/// The mounted filesystem holding `path` on this machine (reads `/proc/self/mountinfo`).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts = parse_mountinfo(&text);
    resolve(path, &mounts).map(|(mount, _)| mount.clone())
}

/// How often the syncs are looked at while they run.
const SYNC_POLL: Duration = Duration::from_millis(1);

/// `SHOW GLOBAL VARIABLES` for `names` (absent ones are simply not in the result).
pub fn show_variables(conn: &mut Conn, names: &[&str]) -> Result<Vec<(String, Option<String>)>> {
    show_global(conn, "VARIABLES", names)
}

/// `SHOW GLOBAL <what>` (`VARIABLES` or `STATUS`) for `names`.
pub fn show_global(
    conn: &mut Conn,
    what: &str,
    names: &[&str],
) -> Result<Vec<(String, Option<String>)>> {
    let quoted: Vec<String> = names.iter().map(|name| format!("'{name}'")).collect();
    let statement = format!(
        "SHOW GLOBAL {what} WHERE Variable_name IN ({})",
        quoted.join(", ")
    );
    crate::rows::all(conn, &statement).map_err(|e| Error::server(&statement, &e))
}

/// The roles and absolute paths named by `SHOW GLOBAL VARIABLES` rows; unset ones are skipped.
pub fn paths_from_variables(rows: &[(String, Option<String>)]) -> Vec<(String, PathBuf)> {
    let value = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(datadir) = value("datadir").map(PathBuf::from) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for (name, role) in PATH_VARIABLES {
        let Some(raw) = value(name) else { continue };
        // innodb_temp_data_file_path-style lists never appear here; a path is one path.
        let path = Path::new(raw);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            datadir.join(path)
        };
        paths.push((role.to_string(), absolute));
    }
    paths
}

/// One mounted filesystem, from a line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem's device (what `stat` reports as `st_dev`).
    pub device_number: (u64, u64),
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The mount source: a device path, a server:share, or a name like `tmpfs`.
    pub source: String,
    /// The filesystem's own options (the last field: `ro,norecovery`, say).
    pub options: String,
}

/// The mounts listed in `text` (the format of `/proc/self/mountinfo`); malformed lines are
/// skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount-point options [optional fields...] - fstype source super
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let mount_point = unescape(fields.get(4)?);
    let mut rest = right.split(' ');
    let fstype = rest.next()?.to_string();
    let source = unescape(rest.next().unwrap_or(""));
    let options = rest.next().unwrap_or("").to_string();
    Some(Mount {
        device_number: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(mount_point),
        fstype,
        source,
        options,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        let byte = octal
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match byte {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A filesystem that holds server files, and the roles of the paths on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub device: String,
    /// The roles (`datadir`, `binlog`, `info-file`…) of the paths on this filesystem.
    pub roles: Vec<String>,
    /// A path on this filesystem that exists (what the sync opens).
    #[serde(skip)]
    pub sync_path: PathBuf,
}

/// The filesystems holding `paths` (role, path), each once, in the order first met. A path that
/// does not exist yet (a binlog basename) counts by its nearest existing ancestor. A path whose
/// filesystem cannot be found is an error naming it: syncing "everything but that" would be a
/// silent gap.
pub fn filesystems_of(paths: &[(String, PathBuf)], mounts: &[Mount]) -> Result<Vec<Filesystem>> {
    if !paths.iter().any(|(role, _)| role == "datadir") {
        return Err(Error::Server {
            statement: "SHOW GLOBAL VARIABLES LIKE 'datadir'".into(),
            message: "the server named no datadir: there is nothing to sync".into(),
        });
    }
    let mut found: Vec<Filesystem> = Vec::new();
    for (role, path) in paths {
        let (mount, resolved) = resolve(path, mounts).ok_or_else(|| Error::Io {
            what: format!(
                "find (here, where the hook runs: a server in a container needs the hook inside it) the filesystem of the server's {role} path"
            ),
            path: path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        match found
            .iter_mut()
            .find(|f| f.mount_point == mount.mount_point && f.device == mount.source)
        {
            Some(fs) => {
                if !fs.roles.contains(role) {
                    fs.roles.push(role.clone());
                }
            }
            None => found.push(Filesystem {
                mount_point: mount.mount_point.clone(),
                fstype: mount.fstype.clone(),
                device: mount.source.clone(),
                roles: vec![role.clone()],
                sync_path: resolved,
            }),
        }
    }
    Ok(found)
}

/// The filesystems of `paths` on this machine (reads `/proc/self/mountinfo`).
pub fn filesystems_here(paths: &[(String, PathBuf)]) -> Result<Vec<Filesystem>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    filesystems_of(paths, &parse_mountinfo(&text))
}

/// `path` itself, or (for a basename such as a binlog's, whose files may not exist yet) its
/// directory; nothing further up. A server whose paths do not exist here (it runs in a container
/// or another mount namespace) must not be mapped to whatever ancestor happens to exist.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    if std::fs::metadata(path).is_ok() {
        return Some(path.to_path_buf());
    }
    let parent = path.parent()?;
    std::fs::metadata(parent)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|_| parent.to_path_buf())
}

/// The mount whose mount point is the longest prefix of `path` (the last such line wins: a later
/// mount on the same point covers an earlier one), among those with `number` if given.
fn longest_prefix<'a>(
    mounts: &'a [Mount],
    path: &Path,
    number: Option<(u64, u64)>,
) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for mount in mounts {
        if number.is_some_and(|n| n != mount.device_number) || !path.starts_with(&mount.mount_point)
        {
            continue;
        }
        if best.is_none_or(|b| {
            mount.mount_point.components().count() >= b.mount_point.components().count()
        }) {
            best = Some(mount);
        }
    }
    best
}

/// glibc's `major()` of a `dev_t`.
fn dev_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

/// glibc's `minor()` of a `dev_t`.
fn dev_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

/// How one filesystem's sync went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub device: String,
    pub roles: Vec<String>,
    pub sync_ms: u64,
}

/// The `sync` program (coreutils; `--file-system` is `syncfs(2)`).
fn sync_program() -> Option<PathBuf> {
    ["/usr/bin/sync", "/bin/sync"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Fails unless the sync program exists (checked before any lock is taken).
pub fn check_sync_program() -> Result<()> {
    match sync_program() {
        Some(_) => Ok(()),
        None => Err(Error::io(
            "find the sync program (coreutils) needed by sync-filesystems at",
            "/usr/bin/sync",
            std::io::ErrorKind::NotFound.into(),
        )),
    }
}

/// Syncs every filesystem in `filesystems` at once, each in its own `sync --file-system` child,
/// and waits for all of them until `limit`. A sync that fails or has not returned by then is an
/// error naming the filesystem; an unfinished child is left to finish in the kernel.
pub fn sync_all(filesystems: &[Filesystem], limit: Duration) -> Result<Vec<Synced>> {
    let program = sync_program().ok_or_else(|| {
        Error::io(
            "find the sync program (coreutils) at",
            "/usr/bin/sync",
            std::io::ErrorKind::NotFound.into(),
        )
    })?;
    let started = Instant::now();
    let deadline = started + limit;
    let mut running: Vec<(usize, Child)> = Vec::new();
    let mut done: Vec<Option<Synced>> = vec![None; filesystems.len()];
    for (i, fs) in filesystems.iter().enumerate() {
        let child = Command::new(&program)
            .arg("--file-system")
            .arg(&fs.sync_path)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("start", &program, e))?;
        running.push((i, child));
    }
    loop {
        let mut still = Vec::new();
        for (i, mut child) in running {
            match finished(&filesystems[i], &mut child, started)? {
                Some(synced) => done[i] = Some(synced),
                None => still.push((i, child)),
            }
        }
        running = still;
        if running.is_empty() {
            return Ok(done.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            let stuck: Vec<String> = running
                .iter()
                .map(|(i, _)| filesystems[*i].mount_point.display().to_string())
                .collect();
            return Err(Error::NotLocked(NoLock::SyncStuck {
                filesystems: stuck,
                seconds: limit.as_secs(),
            }));
        }
        std::thread::sleep(SYNC_POLL);
    }
}

/// The sync of `fs` by `child`, started at `started`: `Some` once it has succeeded, `None` while
/// it runs, an error if it failed.
fn finished(fs: &Filesystem, child: &mut Child, started: Instant) -> Result<Option<Synced>> {
    match child.try_wait() {
        Ok(Some(status)) if status.success() => Ok(Some(Synced {
            mount_point: fs.mount_point.clone(),
            fstype: fs.fstype.clone(),
            device: fs.device.clone(),
            roles: fs.roles.clone(),
            sync_ms: started.elapsed().as_millis() as u64,
        })),
        Ok(Some(status)) => Err(Error::NotLocked(NoLock::SyncFailed {
            mount_point: fs.mount_point.display().to_string(),
            fstype: fs.fstype.clone(),
            device: fs.device.clone(),
            status: status.to_string(),
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::io("wait for the sync of", &fs.mount_point, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:21 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1000k
30 22 7:3 / /var/lib/mysql rw,relatime shared:9 - xfs /dev/loop3 rw
31 22 0:44 / /mnt/my\\040disk rw - nfs4 server:/export rw
32 30 7:4 / /var/lib/mysql/binlogs rw - ext4 /dev/loop4 rw
33 22 7:5 / /var/lib/mysql rw - ext4 /dev/loop5 rw
";

    #[test]
    fn mountinfo_lines_give_device_number_mount_point_type_and_source() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[0].device_number, (254, 0));
        assert_eq!(mounts[2].fstype, "xfs");
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/my disk"));
        assert_eq!(mounts[3].source, "server:/export");
        assert_eq!(mounts[1].options, "rw,size=1000k");
        assert!(parse_mountinfo("garbage\n\n1 2 3").is_empty());
    }

    #[test]
    fn the_longest_mount_prefix_wins_and_a_later_mount_on_the_same_point_covers_an_earlier() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let binlogs = Path::new("/var/lib/mysql/binlogs/binlog");
        assert_eq!(
            longest_prefix(&mounts, binlogs, None).map(|m| m.source.as_str()),
            Some("/dev/loop4")
        );
        let data = Path::new("/var/lib/mysql/ibdata1");
        assert_eq!(
            longest_prefix(&mounts, data, None).map(|m| m.source.as_str()),
            Some("/dev/loop5")
        );
        assert_eq!(
            longest_prefix(&mounts, data, Some((7, 3))).map(|m| m.source.as_str()),
            Some("/dev/loop3"),
            "the device number picks the covered mount when it is the one in use"
        );
        assert_eq!(
            longest_prefix(&mounts, Path::new("/var/lib/mysqlx"), None)
                .map(|m| m.mount_point.clone()),
            Some(PathBuf::from("/")),
            "a prefix is a whole path component"
        );
    }

    #[test]
    fn relative_server_paths_are_relative_to_the_datadir_and_unset_ones_are_skipped() {
        let rows = vec![
            ("datadir".to_string(), Some("/var/lib/mysql/".to_string())),
            (
                "innodb_log_group_home_dir".to_string(),
                Some("./".to_string()),
            ),
            ("innodb_data_home_dir".to_string(), Some(String::new())),
            ("log_bin_basename".to_string(), None),
            (
                "relay_log_basename".to_string(),
                Some("/srv/relay/host-relay-bin".to_string()),
            ),
        ];
        let paths = paths_from_variables(&rows);
        assert_eq!(
            paths,
            vec![
                ("datadir".to_string(), PathBuf::from("/var/lib/mysql/")),
                (
                    "innodb-redo".to_string(),
                    PathBuf::from("/var/lib/mysql/./")
                ),
                (
                    "relay-log".to_string(),
                    PathBuf::from("/srv/relay/host-relay-bin")
                ),
            ]
        );
        assert!(paths_from_variables(&[]).is_empty());
    }

    #[test]
    fn tmpfs_network_and_vmware_excluded_paths_are_flagged_and_two_devices_noted() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let at = |role: &str, path: &str| (role.to_string(), PathBuf::from(path));
        // Paths that do not exist here resolve through their nearest existing ancestor, `/`;
        // so the map is tested on the mount table alone through `longest_prefix`.
        let map = map(&[at("datadir", "/")], &[at("tmpdir", "/")], &mounts, &[]);
        assert_eq!(map.paths.len(), 2);
        assert!(map.flags.is_empty(), "{:?}", map.flags);
        assert!(is_network("nfs4") && is_network("fuse.sshfs") && !is_network("ext4"));
        assert!(glob("/mnt/*", "/mnt/data") && glob("/var/lib/my?ql", "/var/lib/mysql"));
        assert!(!glob("/mnt/*/x", "/mnt/data") && !glob("/data", "/data2"));
        assert_eq!(
            vmware_excluded("[vmbackup]\nexcludedFileSystems = /mnt/nfs, /scratch/*\n[other]\nexcludedFileSystems=/x\n"),
            vec!["/mnt/nfs", "/scratch/*"]
        );
    }

    #[test]
    fn the_storage_map_of_real_paths_flags_a_tmpfs_redo_log_and_a_second_device() {
        // /dev/shm is tmpfs on every Linux this runs on; the temp dir is on a disk.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let data = std::env::temp_dir();
        let map = map_here(
            &[
                ("datadir".into(), data.clone()),
                ("innodb-redo".into(), shm.to_path_buf()),
            ],
            &[("tmpdir".into(), shm.to_path_buf())],
        );
        assert_eq!(map.paths["innodb-redo"].fstype, "tmpfs", "{map:?}");
        let redo: Vec<&String> = map
            .flags
            .iter()
            .filter(|f| f.contains("innodb-redo"))
            .collect();
        assert_eq!(redo.len(), 1, "{:?}", map.flags);
        assert!(redo[0].contains("in no snapshot"), "{redo:?}");
        assert!(
            !map.flags.iter().any(|f| f.contains("tmpdir")),
            "informational paths are never flagged: {:?}",
            map.flags
        );
    }

    #[test]
    fn informational_paths_split_a_tmpdir_list_and_skip_an_empty_secure_file_priv() {
        let rows = vec![
            ("tmpdir".to_string(), Some("/tmp:/var/tmp".to_string())),
            ("secure_file_priv".to_string(), Some(String::new())),
        ];
        assert_eq!(
            informational_paths(&rows),
            vec![
                ("tmpdir".to_string(), PathBuf::from("/tmp")),
                ("tmpdir-2".to_string(), PathBuf::from("/var/tmp")),
            ]
        );
    }

    #[test]
    fn a_datadir_that_does_not_exist_here_is_an_error_not_an_ancestor() {
        let paths = vec![(
            "datadir".to_string(),
            PathBuf::from("/nonexistent-mss/var/lib/mysql"),
        )];
        let err = filesystems_here(&paths).expect_err("never synced through an ancestor");
        assert!(err.to_string().contains("where the hook runs"), "{err}");
        let no_datadir = vec![("binlog".to_string(), std::env::temp_dir().join("b"))];
        assert!(filesystems_here(&no_datadir).is_err());
    }

    #[test]
    fn paths_on_one_filesystem_are_synced_once_with_all_their_roles() {
        let here = std::env::temp_dir();
        let paths = vec![
            ("datadir".to_string(), here.clone()),
            ("binlog".to_string(), here.join("no-such-binlog-basename")),
        ];
        let found = filesystems_here(&paths).expect("the temp dir has a filesystem");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].roles, vec!["datadir", "binlog"]);
        let synced = sync_all(&found, Duration::from_secs(30)).expect("syncfs of the temp dir");
        assert_eq!(synced.len(), 1);
        assert_eq!(synced[0].mount_point, found[0].mount_point);
    }
}
