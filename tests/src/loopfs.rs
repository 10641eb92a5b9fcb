//! Loop-mounted ext4 (or btrfs) images that a test may freeze or snapshot for real, and private
//! servers whose datadir lives on one.
//!
//! A `LoopMount` thaws, unmounts and detaches its own loop device when dropped, panics included,
//! and a `FreezeWindow` opened around a freeze thaws even if the test process dies. Nothing here
//! ever freezes, thaws or unmounts a filesystem it did not create itself.
use std::fs;
use std::io::Read;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{matrix, template, tool, wait_until, Flavour, Server, TempDir, SERVER_TUNING};

/// Why this machine cannot loop-mount an image (no loop device, no CAP_SYS_ADMIN), or `None`
/// when it can. Only such a machine limit may make a test skip.
pub fn loop_devices_missing() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u32 = 21;
    if cap_eff & (1 << CAP_SYS_ADMIN) == 0 {
        return Some(format!(
            "this process lacks CAP_SYS_ADMIN (CapEff {cap_eff:#x}): it cannot mount or freeze"
        ));
    }
    match Command::new(tool("losetup")).arg("-f").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`losetup -f` finds no free loop device: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("`losetup -f` cannot run: {e}")),
    }
}

/// True (after a loud message) when this machine cannot loop-mount: the only machine limit that
/// skips. The message goes straight to stderr, past the test harness's capture, so a skip is
/// always seen.
pub fn machine_cannot_loop_mount(test: &str) -> bool {
    match loop_devices_missing() {
        None => false,
        Some(why) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n!!!!!!!!!!!!!!!! SKIPPED {test}: {why}\n\
                 !!!!!!!!!!!!!!!! nothing was snapshotted; run as root on a machine with /dev/loop*\n"
            );
            true
        }
    }
}

/// Runs a command that must succeed; panics with its output otherwise.
fn run(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Thaws `mountpoint` if it is frozen; "not frozen" and every other failure are ignored.
fn thaw(mountpoint: &Path) {
    let _ = Command::new(tool("fsfreeze"))
        .arg("-u")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// An ext4 image attached to a loop device and mounted; undone (thaw, unmount, detach) on drop.
pub struct LoopMount {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    device: String,
    mounted: bool,
}

impl LoopMount {
    /// Creates a sparse image of `size_mib` MiB, makes an ext4 on it and mounts it at `mountpoint`
    /// (created if missing).
    pub fn create(image: &Path, mountpoint: &Path, size_mib: u64) -> LoopMount {
        LoopMount::make(image, mountpoint, size_mib, "ext4", &["-q", "-F"])
    }

    /// Creates a sparse image of `size_mib` MiB (btrfs needs 128 at least), makes a btrfs on it
    /// and mounts it at `mountpoint` (created if missing).
    pub fn create_btrfs(image: &Path, mountpoint: &Path, size_mib: u64) -> LoopMount {
        LoopMount::make(image, mountpoint, size_mib, "btrfs", &["-q", "-f"])
    }

    /// A sparse image of `size_mib` MiB made into a `fstype` (`mkfs.FSTYPE MKFS_ARGS IMAGE`),
    /// mounted read-write.
    fn make(
        image: &Path,
        mountpoint: &Path,
        size_mib: u64,
        fstype: &str,
        mkfs_args: &[&str],
    ) -> LoopMount {
        run(Command::new("truncate")
            .arg("-s")
            .arg(format!("{size_mib}M"))
            .arg(image));
        run(Command::new(tool(&format!("mkfs.{fstype}")))
            .args(mkfs_args)
            .arg(image));
        LoopMount::attach_with(image, mountpoint, fstype, "rw")
    }

    /// Attaches an existing image (e.g. a copy) to a free loop device and mounts it read-write.
    pub fn attach(image: &Path, mountpoint: &Path) -> LoopMount {
        LoopMount::attach_with(image, mountpoint, "ext4", "rw")
    }

    /// Attaches an image read-only and mounts it without replaying its journal (`ro,noload`): what
    /// a copy holds, exactly as the hypervisor made it, before anything has booted on it.
    pub fn attach_untouched(image: &Path, mountpoint: &Path) -> LoopMount {
        LoopMount::attach_with(image, mountpoint, "ext4", "ro,noload")
    }

    fn attach_with(image: &Path, mountpoint: &Path, fstype: &str, options: &str) -> LoopMount {
        fs::create_dir_all(mountpoint).unwrap();
        let mut losetup = Command::new(tool("losetup"));
        if options.starts_with("ro") {
            losetup.arg("--read-only");
        }
        let device = run(losetup.args(["--find", "--show"]).arg(image));
        assert!(
            device.starts_with("/dev/loop"),
            "losetup attached {} as `{device}`",
            image.display()
        );
        let mut mount = LoopMount {
            image: image.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            device,
            mounted: false,
        };
        run(Command::new(tool("mount"))
            .args(["-t", fstype, "-o", options])
            .arg(&mount.device)
            .arg(mountpoint));
        mount.mounted = true;
        mount
    }

    /// Opens a window in which something (qemu-ga, fsfreeze) may freeze this mount. Until the
    /// returned guard drops, no other window opens on this machine (see `FreezeWindow`); when it
    /// drops it thaws the mount, and a watchdog process thaws it if this test process dies first.
    /// Open it before asking anything to freeze the mount, and let it drop before anything that
    /// waits for the mount's writers (a server on it, its unmount).
    pub fn freeze_window(&self) -> FreezeWindow {
        crate::light(); // the test's side before the machine-wide window (see `gate`)
        let path = std::env::temp_dir().join(WINDOW_LOCK);
        let lock = fs::File::create(&path).expect("create the freeze-window lock file");
        let mut waited_loudly = false;
        let got = wait_until(Duration::from_secs(600), || match lock.try_lock() {
            Ok(()) => true,
            Err(_) => {
                if !waited_loudly {
                    eprintln!(
                        "waiting for another freeze window to close ({})",
                        path.display()
                    );
                    waited_loudly = true;
                }
                std::thread::sleep(Duration::from_millis(20));
                false
            }
        });
        assert!(
            got,
            "another freeze window stays open (lock {})",
            path.display()
        );
        // The watchdog waits for end-of-file on a pipe only this process holds open: when the
        // process ends for any reason (a panic, SIGKILL), the read returns and it thaws.
        let watchdog = Command::new(tool("setsid"))
            .args([
                "sh",
                "-c",
                "read line; exec fsfreeze -u \"$1\"",
                "thaw-watchdog",
            ])
            .arg(&self.mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the thaw watchdog");
        FreezeWindow {
            mountpoint: self.mountpoint.clone(),
            watchdog: Some(watchdog),
            _lock: lock,
        }
    }

    fn unmount(&mut self) -> Result<(), String> {
        let mut last = String::new();
        let done = wait_until(Duration::from_secs(30), || {
            match Command::new(tool("umount")).arg(&self.mountpoint).output() {
                Ok(out) if out.status.success() => true,
                Ok(out) => {
                    last = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    std::thread::sleep(Duration::from_millis(200));
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        if done {
            Ok(())
        } else {
            Err(last)
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        thaw(&self.mountpoint);
        if self.mounted {
            if let Err(why) = self.unmount() {
                eprintln!(
                    "!!! could not unmount {} ({why}); detaching lazily",
                    self.mountpoint.display()
                );
                let _ = Command::new(tool("umount"))
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
        // A device still in use is detached by the kernel once its last user goes (autoclear).
        let detached = Command::new(tool("losetup"))
            .arg("-d")
            .arg(&self.device)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !detached {
            eprintln!("!!! could not detach loop device {}", self.device);
        }
    }
}

/// The machine-wide lock file (in the temp dir) that serialises freeze windows. Every test that
/// freezes a filesystem must hold it: qemu-ga's `guest-fsfreeze-thaw` thaws EVERY frozen
/// filesystem it finds, not just the ones it froze, so two windows at once cut each other short.
pub const WINDOW_LOCK: &str = "mss-freeze-window.lock";

/// One open freeze window on one loop mount (see `LoopMount::freeze_window`): thaws the mount,
/// stops its watchdog, then lets the next window open.
pub struct FreezeWindow {
    mountpoint: PathBuf,
    watchdog: Option<Child>,
    _lock: fs::File,
}

impl Drop for FreezeWindow {
    fn drop(&mut self) {
        thaw(&self.mountpoint);
        if let Some(mut watchdog) = self.watchdog.take() {
            // Stop it by its PID before closing its pipe, so it never thaws a later window.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // The lock is released when `_lock` drops, after the thaw.
    }
}

/// Copies the harness's initialised datadir to `datadir` (which must not exist yet).
pub fn install_datadir(datadir: &Path) {
    run(Command::new("cp").arg("-a").arg(template()).arg(datadir));
    let _ = fs::remove_file(datadir.join(".complete"));
}

/// Copies `flavour`'s initialised datadir (the machine's, or the one in its chroot) to `datadir`
/// (which must not exist yet).
pub fn install_flavour_datadir(flavour: Flavour, datadir: &Path) {
    match flavour.chroot() {
        Err(reason) => panic!("{} is unavailable: {reason}", flavour.name()),
        Ok(None) => install_datadir(datadir),
        Ok(Some(root)) => {
            run(Command::new("cp")
                .arg("-a")
                .arg(matrix::inside(root, matrix::TEMPLATE))
                .arg(datadir));
        }
    }
}

impl Server {
    /// Starts a private server on an existing `datadir` (e.g. on a loop mount) with `extra`
    /// mariadbd arguments. Socket, PID file, error log and tmpdir live in a temp dir of their own,
    /// off `datadir`. Runs no SQL: the caller creates what it needs. Panics if it does not start.
    pub fn start_on(datadir: &Path, extra: &[&str]) -> Server {
        match Server::try_start_on(datadir, extra, Duration::from_secs(120)) {
            Ok(server) => server,
            Err(log) => panic!(
                "private mariadbd on {} did not start: {log}",
                datadir.display()
            ),
        }
    }

    /// Like `start_on`, but a server that does not accept connections within `limit` is killed
    /// and its error log returned.
    pub fn try_start_on(datadir: &Path, extra: &[&str], limit: Duration) -> Result<Server, String> {
        crate::light();
        let dir = TempDir::new("db-on");
        let socket = dir.path().join("mysqld.sock");
        // A tmpdir of its own: a starting mariadbd deletes every `#sql*` file in its tmpdir,
        // which in a shared /tmp are the on-disk temporary tables of the other running servers.
        let tmpdir = dir.path().join("tmp");
        fs::create_dir_all(&tmpdir).expect("create the server's tmpdir");
        let child = Command::new(tool("mariadbd"))
            .args(["--no-defaults", "--user=root", "--skip-networking"])
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .args(SERVER_TUNING)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        Server {
            dir,
            socket,
            child: Some(child),
        }
        .accepting_within(limit)
    }
}

impl Server {
    /// Like `try_start_on`, for a server of any `flavour`: the machine's MariaDB 10.11 goes to
    /// `try_start_on`; a chroot flavour's `datadir` must lie inside its chroot (mount the image
    /// there), and the server runs as `chroot DIR <daemon> …` with the flavour's tuning plus
    /// `extra`, its socket, PID file, error log and tmpdir in a directory of its own under the
    /// chroot's `/srv` (never on `datadir`, which may be frozen). Runs no SQL.
    pub fn try_start_flavour_on(
        flavour: Flavour,
        datadir: &Path,
        extra: &[&str],
        limit: Duration,
    ) -> Result<Server, String> {
        let root = match flavour.chroot() {
            Err(reason) => return Err(format!("{} is unavailable: {reason}", flavour.name())),
            Ok(None) => return Server::try_start_on(datadir, extra, limit),
            Ok(Some(root)) => root,
        };
        let inner = |path: &Path| -> Result<PathBuf, String> {
            let below = path.strip_prefix(root).map_err(|_| {
                format!(
                    "{} lies outside the {} chroot {}: the server could not see it",
                    path.display(),
                    flavour.name(),
                    root.display()
                )
            })?;
            Ok(Path::new("/").join(below))
        };
        let inner_datadir = inner(datadir)?;
        let dir = TempDir::new_in(&matrix::inside(root, matrix::SERVERS), "db-on");
        let socket = dir.path().join("mysqld.sock");
        let tmpdir = dir.path().join("tmp");
        fs::create_dir_all(&tmpdir).expect("create the server's tmpdir");
        let child = Command::new(tool("chroot"))
            .arg(root)
            .arg(flavour.daemon())
            .args(["--no-defaults", "--user=root", "--skip-networking"])
            .arg(format!("--datadir={}", inner_datadir.display()))
            .arg(format!("--socket={}", inner(&socket)?.display()))
            .arg(format!("--tmpdir={}", inner(&tmpdir)?.display()))
            .arg(format!(
                "--pid-file={}",
                inner(&dir.path().join("mysqld.pid"))?.display()
            ))
            .arg(format!(
                "--log-error={}",
                inner(&dir.path().join("error.log"))?.display()
            ))
            .args(flavour.tuning())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start `chroot {} {}`: {e}",
                    root.display(),
                    flavour.daemon()
                )
            })?;
        Server {
            dir,
            socket,
            child: Some(child),
        }
        .accepting_within(limit)
    }
}

impl Server {
    /// This just-started server once it accepts connections within `limit`; otherwise it is
    /// killed (by dropping it) and its error log returned.
    fn accepting_within(mut self, limit: Duration) -> Result<Server, String> {
        let mut exited = false;
        let up = wait_until(limit, || {
            if let Some(child) = self.child.as_mut() {
                exited = matches!(child.try_wait(), Ok(Some(_)));
            }
            exited || self.try_conn().is_some()
        });
        if up && !exited {
            Ok(self)
        } else {
            Err(tail(&self.dir.path().join("error.log"), 6000))
        }
    }
}

/// The last lines of a file, for assertion messages (empty if unreadable).
pub fn tail(path: &Path, bytes: usize) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_end(&mut text);
    }
    let start = text.len().saturating_sub(bytes);
    String::from_utf8_lossy(&text[start..]).into_owned()
}
