//! A disk snapshot the way Google, AWS and Azure-without-fsfreeze take one: the block device is
//! copied at an instant, and nobody freezes (or syncs) the filesystem on it first.
//!
//! The "cloud disk" is an ext4 on a loop device whose image file lives on a second loop mount of
//! the test's own (the "storage host"). Freezing the storage host stops the disk's loop device at
//! an instant — requests already completed are in the image, nothing later is — without syncing
//! the disk's own filesystem: what the server wrote but the kernel has not flushed stays out of
//! the copy, exactly as on a cloud. The copy is then booted and checked like the qemu-ga rig's.
//! Only the test's own storage-host mount is ever frozen, inside a `FreezeWindow` that thaws it
//! on every path.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::guest_agent::{copy_discrepancies, schema, MountDir, ServerSetup, WriteLoad, INFO_NAME};
use crate::loopfs::{install_datadir, LoopMount};
use crate::{text, Sandbox, Server, TempDir};

/// The cloud disk's size; its image is sparse.
const DISK_MIB: u64 = 512;
/// The storage host holds the disk's image and nothing else.
const HOST_MIB: u64 = 1024;

/// What the live server held while the lock was held: rows and counter sums of the load's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub inno: i64,
    pub inno_counter: i64,
    pub my_log: i64,
    pub my_counter: i64,
}

const ROWS_SQL: &str = "SELECT (SELECT COUNT(*) FROM snap.inno), \
     (SELECT COALESCE(SUM(v), 0) FROM snap.inno_counter), \
     (SELECT COUNT(*) FROM snap.my_log), (SELECT COALESCE(SUM(v), 0) FROM snap.my_counter)";

impl Rows {
    fn read(conn: &mut mysql::Conn) -> Result<Rows, String> {
        let row: Option<(i64, i64, i64, i64)> =
            conn.query_first(ROWS_SQL).map_err(|e| e.to_string())?;
        let (inno, inno_counter, my_log, my_counter) = row.ok_or("no row")?;
        Ok(Rows {
            inno,
            inno_counter,
            my_log,
            my_counter,
        })
    }
}

/// One scenario's world. Fields drop in order: load, sandbox, server, disk, the mountpoints'
/// directory, the storage host, the host directory.
pub struct NoFreezeRig {
    pub load: WriteLoad,
    pub sandbox: Sandbox,
    pub server: Server,
    pub disk: LoopMount,
    pub mounts: MountDir,
    pub storage_host: LoopMount,
    pub dir: TempDir,
    setup: ServerSetup,
}

/// One snapshot: the copy, and the rows the live server held while locked.
pub struct DiskCopy {
    pub copy: PathBuf,
    pub rows_while_locked: Rows,
    /// freeze's stderr.
    pub freeze_log: String,
}

impl NoFreezeRig {
    /// A server of `setup` with its datadir (and the info file) on the cloud disk, a sandbox with
    /// `settings`, and a write load that is already writing.
    pub fn new(setup: ServerSetup, settings: &str) -> NoFreezeRig {
        let dir = TempDir::new("nofreeze");
        let storage_host = LoopMount::create(
            &dir.path().join("host.img"),
            &dir.path().join("host"),
            HOST_MIB,
        );
        let mounts = MountDir::new(&std::env::temp_dir());
        let disk = LoopMount::create(
            &storage_host.mountpoint.join("disk.img"),
            &mounts.path().join("mnt"),
            DISK_MIB,
        );
        let datadir = disk.mountpoint.join("data");
        install_datadir(&datadir);
        let server = Server::try_start_flavour_on(
            setup.flavour,
            &datadir,
            setup.server_args,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|log| panic!("the server on the cloud disk did not start: {log}"));
        server.conn().query_drop(schema()).unwrap();
        // The datadir as installed, on the device: what an unsynced copy then lacks is the load's.
        let synced = Command::new("sync")
            .arg("--file-system")
            .arg(&disk.mountpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(synced.status.success(), "sync -f: {}", text(&synced));
        let sandbox = Sandbox::new(
            &server,
            &format!(
                "info-file = {}\nsnapshot-timeout = 60\n{settings}",
                disk.mountpoint.join(INFO_NAME).display()
            ),
        );
        let load = WriteLoad::start_with(|| server.conn());
        assert!(
            load.makes_progress(200, Duration::from_secs(60)),
            "the write load does not write: {:?}",
            load.errors()
        );
        NoFreezeRig {
            load,
            sandbox,
            server,
            disk,
            mounts,
            storage_host,
            dir,
            setup,
        }
    }

    /// freeze (with `freeze_args`), the rows the live server holds while locked, a copy of the
    /// disk's device taken right after freeze returned, then thaw.
    pub fn snapshot(&mut self, freeze_args: &[&str]) -> DiskCopy {
        assert!(
            self.load.makes_progress(100, Duration::from_secs(60)),
            "the load does not write before the snapshot: {:?}",
            self.load.errors()
        );
        let out = self
            .sandbox
            .command("freeze")
            .args(freeze_args)
            .arg("freeze")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "freeze failed: {}\n{}",
            text(&out),
            self.sandbox.log()
        );
        let freeze_log = String::from_utf8_lossy(&out.stderr).into_owned();
        let rows_while_locked = Rows::read(&mut self.server.conn()).unwrap();
        let copy = self.dir.path().join("copy.img");
        let _ = fs::remove_file(&copy);
        let took = self.copy_device(&copy);
        let out = self.sandbox.thaw("thaw");
        assert!(
            out.status.success(),
            "thaw failed (the lock did not last across the copy): {}",
            text(&out)
        );
        eprintln!("disk copied in {took:?} while locked; rows then: {rows_while_locked:?}");
        DiskCopy {
            copy,
            rows_while_locked,
            freeze_log,
        }
    }

    /// Copies the disk's image as its device holds it at this instant: the storage host is frozen
    /// for the copy (its loop device then completes no request), the disk's own filesystem is not
    /// touched. Returns how long the copy took.
    fn copy_device(&self, copy: &std::path::Path) -> Duration {
        let _window = self.storage_host.freeze_window();
        let started = Instant::now();
        let frozen = Command::new("fsfreeze")
            .arg("-f")
            .arg(&self.storage_host.mountpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(frozen.status.success(), "fsfreeze -f: {}", text(&frozen));
        let out = Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.disk.image)
            .arg(copy)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "copying the disk: {}", text(&out));
        started.elapsed()
        // `_window` thaws the storage host here, on every path.
    }

    /// Every way a server booted on `copy` disagrees with the info file it carries or with the
    /// rows the live server held while locked (see `copy_discrepancies`). The copy is removed.
    pub fn discrepancies(&self, taken: &DiskCopy) -> Vec<String> {
        let expected = taken.rows_while_locked;
        let found =
            copy_discrepancies(
                self.setup,
                &self.mounts,
                &taken.copy,
                |conn, found| match Rows::read(conn) {
                    Ok(rows) if rows == expected => {}
                    Ok(rows) => found.push(format!(
                        "the copy holds {rows:?}; while locked the server held {expected:?}"
                    )),
                    Err(e) => found.push(format!("the copy's rows cannot be read: {e}")),
                },
            );
        let _ = fs::remove_file(&taken.copy);
        found
    }
}

impl Drop for NoFreezeRig {
    fn drop(&mut self) {
        // A test that failed mid-snapshot may leave a locker holding the lock: release it the
        // product's way before the server goes.
        if std::thread::panicking() && self.sandbox.locker_pid().is_some_and(crate::alive) {
            let _ = self.sandbox.thaw("thaw");
        }
    }
}
