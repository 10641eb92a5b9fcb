//! The copy being verified: where its info file and datadir lie, what the info file says, where
//! its binary log ends, and which server version wrote it. Owns mapping the source paths of the
//! info file's storage map onto the copy's mount root.
//!
//! It only ever reads the copy: nothing here opens a file of it for writing, and everything it
//! reads (the binlog's end above all) is read before any server runs on it.
use std::fs;
use std::path::{Path, PathBuf};

use common::info_file::{self, InfoFile, StorageSection};
use common::{Error, Result};

/// The info file's name, and where the packages put it (relative to the root of the copy).
const INFO_NAME: &str = "snapshot-info.json";
/// The info file's name in a datadir (the local-snapshot recipes' `info-file`).
const DATADIR_INFO_NAME: &str = "mysql-snapshot-info.json";
const PACKAGED_INFO_DIR: &str = "var/lib/mysql-snapshot";
/// Where a datadir usually is, relative to the root of a copy of `/`.
const PACKAGED_DATADIR: &str = "var/lib/mysql";

/// The copy's binary log: its base name (relative to the datadir) and where it ends.
pub(crate) struct Binlog {
    pub(crate) basename: String,
    /// The last file named in the index and its size, or why it cannot be read.
    pub(crate) end: std::result::Result<(String, u64), String>,
}

/// What the copy holds, as found before anything boots on it.
pub(crate) struct Copy {
    /// The copy's datadir.
    pub(crate) datadir: PathBuf,
    /// The info file found in the copy (`None`: none found).
    pub(crate) info_path: Option<PathBuf>,
    /// The info file as JSON (`None`: absent or unreadable).
    pub(crate) info: Option<serde_json::Value>,
    /// The held record, when the info file is one (`consistent: true`).
    pub(crate) held: Option<InfoFile>,
    pub(crate) binlog: Option<Binlog>,
    /// The relay log's base name, relative to the datadir.
    pub(crate) relay_log: Option<String>,
    /// Where the info file was looked for when none was found.
    pub(crate) looked_at: Vec<PathBuf>,
    /// What a reader of the report should know about how the copy was read.
    pub(crate) notes: Vec<String>,
}

fn unverifiable(problem: String, fix: &str) -> Error {
    Error::Unverifiable {
        problem,
        fix: fix.to_string(),
    }
}

impl Copy {
    /// Finds the info file and the datadir in `path` (the root of a mounted copy, or a datadir);
    /// `info_file` and `datadir` override the search.
    pub(crate) fn locate(
        path: &Path,
        info_file: Option<&Path>,
        datadir: Option<&Path>,
    ) -> Result<Copy> {
        if !path.is_dir() {
            return Err(unverifiable(
                format!("{} is not a directory", path.display()),
                "Give the root of the mounted copy, or its datadir",
            ));
        }
        let mut notes = Vec::new();
        let (info_path, looked_at) = find_info_file(path, info_file)?;
        let info = info_path.as_deref().and_then(|p| {
            let read = info_file::read(p);
            if read.is_none() {
                notes.push(format!(
                    "the info file {} is not readable JSON: taken as no info file",
                    p.display()
                ));
            }
            read
        });
        let held = info
            .as_ref()
            .filter(|i| i["consistent"] == true)
            .and_then(|i| match serde_json::from_value::<InfoFile>(i.clone()) {
                Ok(held) => Some(held),
                Err(e) => {
                    notes.push(format!(
                        "the held record does not parse ({e}): its coordinates are not checked"
                    ));
                    None
                }
            });
        let storage = info.as_ref().and_then(storage_of);
        let root = match (&storage, &info_path) {
            (Some(storage), Some(found)) => copy_root(storage, found),
            _ => None,
        };
        let datadir = match datadir {
            Some(dir) => dir.to_path_buf(),
            None => find_datadir(path, storage.as_ref(), root.as_deref())?,
        };
        if !looks_like_datadir(&datadir) {
            return Err(unverifiable(
                format!(
                    "{} does not look like a datadir (no mysql/ with ibdata1, mysql.ibd or aria_log_control)",
                    datadir.display()
                ),
                "Give the copy's datadir with --datadir",
            ));
        }
        let source_datadir = storage
            .as_ref()
            .and_then(|s| s.paths.get("datadir"))
            .map(|e| e.path.clone());
        let binlog = match storage.as_ref().and_then(|s| s.paths.get("binlog")) {
            Some(entry) => Some(inside_datadir(
                &entry.path,
                source_datadir.as_deref(),
                "binary log",
            )?),
            None => binlog_index_in(&datadir),
        }
        .map(|basename| Binlog {
            end: binlog_end(&datadir, &basename),
            basename,
        });
        let relay_log = match storage.as_ref().and_then(|s| s.paths.get("relay-log")) {
            Some(entry) => Some(inside_datadir(
                &entry.path,
                source_datadir.as_deref(),
                "relay log",
            )?),
            None => None,
        };
        Ok(Copy {
            datadir,
            info_path,
            info,
            held,
            binlog,
            relay_log,
            looked_at,
            notes,
        })
    }

    /// The version of the server that wrote the copy: the info file's (the held record's, or the
    /// last one kept under a mark), else MariaDB's `mariadb_upgrade_info` in the datadir.
    pub(crate) fn server_version(&self) -> Option<String> {
        let recorded = self.info.as_ref().and_then(|info| {
            [
                &info["server"]["version"],
                &info["last_consistent"]["server"]["version"],
            ]
            .into_iter()
            .find_map(|v| v.as_str().map(str::to_string))
        });
        recorded.or_else(|| {
            ["mariadb_upgrade_info", "mysql_upgrade_info"]
                .iter()
                .find_map(|name| fs::read_to_string(self.datadir.join(name)).ok())
                .map(|text| {
                    text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                        .to_string()
                })
                .filter(|v| !v.is_empty())
        })
    }

    /// The server id the info file records (held, or last held).
    pub(crate) fn server_id(&self) -> Option<u64> {
        let info = self.info.as_ref()?;
        info["server"]["server_id"]
            .as_u64()
            .or_else(|| info["last_consistent"]["server"]["server_id"].as_u64())
    }

    /// The owner of the datadir (uid, gid).
    pub(crate) fn owner(&self) -> Result<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&self.datadir)
            .map_err(|e| Error::io("read the datadir", &self.datadir, e))?;
        Ok((meta.uid(), meta.gid()))
    }
}

/// The info file named on the command line, or the first found where copies carry it; with the
/// places looked at.
fn find_info_file(path: &Path, given: Option<&Path>) -> Result<(Option<PathBuf>, Vec<PathBuf>)> {
    if let Some(given) = given {
        if !given.is_file() {
            return Err(unverifiable(
                format!("the info file {} does not exist", given.display()),
                "Give the path of the info file inside the copy, or leave --info-file out",
            ));
        }
        return Ok((Some(given.to_path_buf()), vec![given.to_path_buf()]));
    }
    let mut candidates = vec![
        path.join(INFO_NAME),
        // A local snapshot's datadir: docs/local-snapshots.md puts the info file in it.
        path.join(DATADIR_INFO_NAME),
        path.join(PACKAGED_INFO_DIR).join(INFO_NAME),
    ];
    // PATH is a datadir /var/lib/mysql: the packaged info file is its sibling.
    if let Some(parent) = path.parent() {
        candidates.push(parent.join("mysql-snapshot").join(INFO_NAME));
    }
    let found = candidates.iter().find(|c| c.is_file()).cloned();
    Ok((found, candidates))
}

/// The storage map of the info file, or of its last held record under a mark.
fn storage_of(info: &serde_json::Value) -> Option<StorageSection> {
    [&info["storage"], &info["last_consistent"]["storage"]]
        .into_iter()
        .find(|v| v.is_object())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The directory of the copy that was the info file's filesystem's mount point on the source:
/// the info file's directory with its path below that mount point taken off its end.
fn copy_root(storage: &StorageSection, found: &Path) -> Option<PathBuf> {
    let entry = storage.paths.get("info-file")?;
    let below = entry.path.strip_prefix(&entry.mount_point).ok()?;
    let mut root = found.parent()?.to_path_buf();
    for _ in below.components() {
        root = root.parent()?.to_path_buf();
    }
    (root.join(below) == found.parent()?).then_some(root)
}

/// The datadir: the storage map's, mapped by the copy's root; else `path` itself, or the
/// packaged place below it.
fn find_datadir(
    path: &Path,
    storage: Option<&StorageSection>,
    root: Option<&Path>,
) -> Result<PathBuf> {
    if let (Some(storage), Some(root)) = (storage, root) {
        if let (Some(data), Some(info)) =
            (storage.paths.get("datadir"), storage.paths.get("info-file"))
        {
            if data.mount_point != info.mount_point {
                return Err(unverifiable(
                    format!(
                        "the datadir {} was on {}, another filesystem than the info file's ({})",
                        data.path.display(),
                        data.mount_point.display(),
                        info.mount_point.display()
                    ),
                    "Mount the copy of that filesystem too and give its datadir with --datadir",
                ));
            }
            if let Ok(below) = data.path.strip_prefix(&data.mount_point) {
                return Ok(root.join(below));
            }
        }
    }
    if let Some(dir) = [path.to_path_buf(), path.join(PACKAGED_DATADIR)]
        .into_iter()
        .find(|d| looks_like_datadir(d))
    {
        return Ok(dir);
    }
    // A filesystem of its own holding the datadir one level down (`/srv/db` with `data/`).
    let mut below: Vec<PathBuf> = fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|d| looks_like_datadir(d))
                .collect()
        })
        .unwrap_or_default();
    match below.len() {
        1 => Ok(below.remove(0)),
        0 => Err(unverifiable(
            format!(
                "no datadir found in {} (nor in {} or a directory just below), and no info file maps one",
                path.display(),
                path.join(PACKAGED_DATADIR).display()
            ),
            "Give the copy's datadir with --datadir",
        )),
        _ => Err(unverifiable(
            format!(
                "several datadirs below {}: {}",
                path.display(),
                below
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "Give the one to verify with --datadir",
        )),
    }
}

/// A datadir has a `mysql` schema directory and a system tablespace or Aria control file.
fn looks_like_datadir(dir: &Path) -> bool {
    dir.join("mysql").is_dir()
        && ["ibdata1", "mysql.ibd", "aria_log_control"]
            .iter()
            .any(|f| dir.join(f).exists())
}

/// The base name of a log (`log_bin_basename`, `relay_log_basename`) relative to the datadir.
/// A log kept outside the datadir is refused: its directory would need a layer of its own.
fn inside_datadir(basename: &Path, datadir: Option<&Path>, what: &str) -> Result<String> {
    let relative = datadir.and_then(|d| basename.strip_prefix(d).ok());
    match relative {
        Some(relative) if relative.components().count() == 1 => {
            Ok(relative.to_string_lossy().into_owned())
        }
        _ => Err(unverifiable(
            format!(
                "the {what} {} lies outside the datadir{}: verify boots the datadir only",
                basename.display(),
                datadir.map_or(String::new(), |d| format!(" {}", d.display()))
            ),
            "Copy the datadir and the log's directory into one directory (the log's files into the datadir) and verify that",
        )),
    }
}

/// With no info file to say so: the binlog whose index lies in the datadir (not a relay log's).
fn binlog_index_in(datadir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(datadir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".index")?.to_string();
            (!stem.contains("relay")).then_some(stem)
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The last binlog named in `basename.index` and its size: where the copy's binary log ends.
/// Index lines may be bare, `./name` or absolute: the file is looked for beside the index.
pub(crate) fn binlog_end(
    datadir: &Path,
    basename: &str,
) -> std::result::Result<(String, u64), String> {
    let index = datadir.join(format!("{basename}.index"));
    let text = fs::read_to_string(&index)
        .map_err(|e| format!("the binlog index {} is unreadable: {e}", index.display()))?;
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| format!("the binlog index {} is empty", index.display()))?;
    let name = Path::new(last)
        .file_name()
        .ok_or_else(|| format!("the binlog index names `{last}`, not a file"))?
        .to_string_lossy()
        .into_owned();
    let size = fs::metadata(datadir.join(&name))
        .map_err(|e| format!("the last binlog {name} is missing from the copy: {e}"))?
        .len();
    Ok((name, size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use common::storage::PathEntry;

    fn entry(path: &str, mount_point: &str) -> PathEntry {
        PathEntry {
            path: path.into(),
            mount_point: mount_point.into(),
            fstype: "ext4".into(),
            device: "/dev/vda1".into(),
        }
    }

    #[test]
    fn a_copy_mounted_elsewhere_is_mapped_by_the_root_the_info_file_shows() {
        let mut storage = StorageSection::default();
        storage
            .paths
            .insert("info-file".into(), entry("/var/lib/mysql-snapshot", "/"));
        storage
            .paths
            .insert("datadir".into(), entry("/var/lib/mysql", "/"));
        let found = Path::new("/mnt/copy/var/lib/mysql-snapshot/snapshot-info.json");
        let root = copy_root(&storage, found).unwrap();
        assert_eq!(root, Path::new("/mnt/copy"));
        // A datadir on its own filesystem, mounted as the root of the copy.
        storage
            .paths
            .insert("info-file".into(), entry("/srv/db/mnt", "/srv/db/mnt"));
        let found = Path::new("/tmp/copy-mnt/snapshot-info.json");
        assert_eq!(
            copy_root(&storage, found).unwrap(),
            Path::new("/tmp/copy-mnt")
        );
        // An info file found where its record says it was not: no root.
        let found = Path::new("/tmp/copy-mnt/elsewhere/snapshot-info.json");
        storage
            .paths
            .insert("info-file".into(), entry("/var/lib/x", "/"));
        assert!(copy_root(&storage, found).is_none());
    }

    #[test]
    fn a_log_outside_the_datadir_is_refused_with_what_to_do() {
        let dir = Path::new("/var/lib/mysql");
        assert_eq!(
            inside_datadir(Path::new("/var/lib/mysql/binlog"), Some(dir), "binary log").unwrap(),
            "binlog"
        );
        let err = inside_datadir(Path::new("/var/log/mysql/binlog"), Some(dir), "binary log")
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the datadir"), "{err}");
    }

    #[test]
    fn the_info_file_a_local_snapshot_recipe_puts_in_the_datadir_is_found() {
        let dir = std::env::temp_dir().join(format!("mss-verify-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (found, _) = find_info_file(&dir, None).unwrap();
        assert_eq!(found, None);
        std::fs::write(dir.join(DATADIR_INFO_NAME), "{}").unwrap();
        let (found, _) = find_info_file(&dir, None).unwrap();
        assert_eq!(found, Some(dir.join(DATADIR_INFO_NAME)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
