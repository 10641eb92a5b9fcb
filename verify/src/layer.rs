//! The writable layer the copy boots on, in a private temporary directory: an overlayfs whose
//! only lower layer is the copy's datadir (crash recovery's writes land in the upper directory),
//! or, where the kernel refuses the overlay, a `cp -a` of the datadir — which the report says.
//!
//! The copy is never written: it is only ever the overlay's lower layer or the source of `cp`.
//! The overlay is unmounted (by its mountpoint, never anything else) and the directory removed
//! when the layer is dropped; a directory whose overlay would not unmount is left in place, never
//! deleted through the mount.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Error, Result};

/// An account the server runs as (never root when verify runs as root).
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// How the layer was made.
pub(crate) enum Kind {
    Overlay,
    /// A copy, because the overlay could not be mounted (why).
    Copied(String),
}

pub(crate) struct Layer {
    /// The private directory holding everything.
    dir: PathBuf,
    /// The datadir the server runs on (the overlay's mountpoint, or the copy).
    pub(crate) datadir: PathBuf,
    /// The server's socket, PID file, error log and tmpdir.
    pub(crate) run: PathBuf,
    pub(crate) kind: Kind,
    /// Said in the report: e.g. the files were given to the server's account.
    pub(crate) notes: Vec<String>,
    mounted: bool,
}

impl Layer {
    /// A writable layer over `datadir` in a new directory under `parent`, owned by `account`.
    pub(crate) fn over(
        datadir: &Path,
        parent: &Path,
        account: Option<&Account>,
        owner_uid: u32,
    ) -> Result<Layer> {
        if let Some(account) = account.filter(|a| a.uid != 0) {
            reachable_by(parent, account)?;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = parent.join(format!(
            "msv-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&dir).map_err(|e| Error::io("create the work directory", &dir, e))?;
        let mut layer = Layer {
            datadir: dir.join("data"),
            run: dir.join("run"),
            dir,
            kind: Kind::Overlay,
            notes: Vec::new(),
            mounted: false,
        };
        fs::set_permissions(&layer.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("make private", &layer.dir, e))?;
        for sub in ["upper", "work", "data", "run", "run/tmp"] {
            let path = layer.dir.join(sub);
            fs::create_dir(&path).map_err(|e| Error::io("create", &path, e))?;
        }
        match layer.mount_overlay(datadir) {
            Ok(()) => layer.mounted = true,
            Err(why) => {
                copy_datadir(datadir, &layer.datadir)?;
                layer.kind = Kind::Copied(why);
            }
        }
        if let Some(account) = account {
            layer.give_to(account, owner_uid)?;
        }
        Ok(layer)
    }

    /// Removes `auto.cnf` from the layer (never from the copy), so that a MySQL server makes a
    /// server_uuid of its own; `true` if there was one.
    pub(crate) fn forget_server_uuid(&self) -> Result<bool> {
        let auto = self.datadir.join("auto.cnf");
        match fs::remove_file(&auto) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove from the writable layer", &auto, e)),
        }
    }

    fn mount_overlay(&self, lower: &Path) -> std::result::Result<(), String> {
        let lower = lower.to_string_lossy();
        // The option string's separators cannot be escaped reliably: such a path is copied.
        if lower.contains([',', ':', '\\']) {
            return Err(format!(
                "the datadir's path `{lower}` holds a character overlayfs options cannot carry"
            ));
        }
        let options = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "mysql-snapshot-verify", "-o", &options])
            .arg(&self.datadir))
        .map_err(|why| format!("mount -t overlay failed: {why}"))
    }

    /// Hands the server's files to `account`: the run directory always, the datadir when the
    /// copy's files belong to someone else (on the overlay this copies every file up).
    fn give_to(&mut self, account: &Account, owner_uid: u32) -> Result<()> {
        let ids = format!("{}:{}", account.uid, account.gid);
        let mut targets = vec![self.dir.clone(), self.run.clone()];
        if owner_uid != account.uid {
            targets.push(self.datadir.clone());
            self.notes.push(format!(
                "the copy's datadir belongs to uid {owner_uid}: its files were given to {} in the writable layer{}",
                account.name,
                match self.kind {
                    Kind::Overlay => " (each copied up)",
                    Kind::Copied(_) => "",
                }
            ));
        } else {
            // The overlay's root takes the lower datadir's owner; only the directory itself.
            chown(&ids, &self.datadir, false)?;
        }
        for target in targets {
            chown(&ids, &target, target != self.dir)?;
        }
        Ok(())
    }
}

/// Refuses a work directory the server's account cannot reach (a directory on its way that it
/// may not search): the server would fail to open its own files.
fn reachable_by(parent: &Path, account: &Account) -> Result<()> {
    for dir in parent.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let searchable = (meta.uid() == account.uid && mode & 0o100 != 0)
            || (meta.gid() == account.gid && mode & 0o010 != 0)
            || mode & 0o001 != 0;
        if !searchable {
            return Err(Error::Unverifiable {
                problem: format!(
                    "the server's account {} cannot reach {} (mode {:04o}, owner uid {})",
                    account.name,
                    dir.display(),
                    mode & 0o7777,
                    meta.uid()
                ),
                fix: "Give --work-dir a directory every account may search, like /tmp".into(),
            });
        }
    }
    Ok(())
}

/// Runs `command` to its end; what it said on stderr when it failed.
fn run(command: &mut Command) -> std::result::Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

fn chown(ids: &str, path: &Path, recursive: bool) -> Result<()> {
    let mut command = Command::new("chown");
    if recursive {
        command.arg("-R");
    }
    run(command.arg(ids).arg(path)).map_err(|why| Error::Unverifiable {
        problem: format!("chown {ids} {} failed: {why}", path.display()),
        fix: "Run verify as root, or as the owner of the copy's files".into(),
    })
}

/// `cp -a` of the datadir's contents into `to`.
fn copy_datadir(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("cp").arg("-a").arg(from.join(".")).arg(to)).map_err(|why| {
        Error::Unverifiable {
            problem: format!(
                "the overlay could not be mounted and cp -a {} failed: {why}",
                from.display()
            ),
            fix: "Give a work directory with room for the datadir with --work-dir".into(),
        }
    })
}

impl Drop for Layer {
    fn drop(&mut self) {
        if self.mounted {
            let unmounted = (0..50).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                run(Command::new("umount").arg(&self.datadir)).is_ok()
            });
            if !unmounted {
                eprintln!(
                    "mysql-snapshot-verify: cannot unmount the overlay {}: left in place with {}; unmount it and remove the directory",
                    self.datadir.display(),
                    self.dir.display()
                );
                return;
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The account the server runs as: `None` (this process's own) unless verify runs as root; then
/// `wanted` (a name from /etc/passwd), else the owner of the copy's datadir, or `mysql` when root
/// owns it.
pub(crate) fn server_account(
    wanted: Option<&str>,
    owner_uid: u32,
    owner_gid: u32,
) -> Result<Option<Account>> {
    let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if me != Some(0) {
        return Ok(None);
    }
    let entries = accounts();
    if let Some(name) = wanted {
        return entries
            .into_iter()
            .find(|a| a.name == name)
            .map(Some)
            .ok_or_else(|| Error::Unverifiable {
                problem: format!("--user {name}: no such account in /etc/passwd"),
                fix: "Name an account of this machine, or leave --user out".into(),
            });
    }
    if owner_uid != 0 {
        return Ok(Some(
            entries
                .into_iter()
                .find(|a| a.uid == owner_uid)
                .unwrap_or(Account {
                    name: owner_uid.to_string(),
                    uid: owner_uid,
                    gid: owner_gid,
                }),
        ));
    }
    Ok(entries.into_iter().find(|a| a.name == "mysql"))
}

/// The accounts of /etc/passwd.
fn accounts() -> Vec<Account> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(Account {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
            })
        })
        .collect()
}
