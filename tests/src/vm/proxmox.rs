//! The two ways Proxmox VE snapshots a running VM through the guest agent, on QEMU's own
//! interfaces: a backup (freeze, start a `blockdev-backup` job — the copy is the disk as it was
//! when the job started —, thaw, wait for the job) and a snapshot (freeze,
//! `blockdev-snapshot-internal-sync`, thaw, export the snapshot with `qemu-img convert`). Between
//! freeze and thaw the agent refuses most commands, so what the live server shows is read through
//! the forwarded port. Like Proxmox, a failed freeze is followed by a thaw all the same.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use super::guest::SourceGuest;
use super::machine::qemu_img;

/// How long freeze may take through the agent: the hook may wait for a quiet moment up to the
/// tool's default `snapshot-timeout` (600 s); an answer must never be awaited for less, or the
/// late answer would be read as the next command's.
const FREEZE_LIMIT: Duration = Duration::from_secs(660);
/// How long a thaw or a block job may take.
const JOB_LIMIT: Duration = Duration::from_secs(300);
/// How long the live server gets to answer while frozen (a query stuck behind a writer that
/// waits on the frozen disk must not keep the guest frozen).
const LIVE_READ_LIMIT: Duration = Duration::from_secs(15);

/// Which of Proxmox's paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPath {
    /// vzdump in snapshot mode: a backup job started while frozen.
    Backup,
    /// `qm snapshot` without RAM: an internal qcow2 snapshot taken while frozen.
    Snapshot,
}

impl SnapshotPath {
    pub fn name(self) -> &'static str {
        match self {
            SnapshotPath::Backup => "backup",
            SnapshotPath::Snapshot => "snapshot",
        }
    }
}

/// What the live server showed while the guest was frozen. Not its binlog file and position:
/// `SHOW BINLOG STATUS` takes the binlog's mutex, which a binlog write caught by the freeze would
/// hold until the thaw (the suspect in one CI run whose live read never answered);
/// `@@gtid_binlog_pos` does not take it. The copy's binlog end is compared with the info file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRows {
    pub innodb: u64,
    pub myisam: u64,
    pub gtid_binlog_pos: String,
}

/// A snapshot the agent froze for.
#[derive(Debug)]
pub struct Taken {
    /// The copy: a standalone qcow2 in the guest's directory.
    pub copy: PathBuf,
    /// The live server while frozen (`None`: it did not answer within `LIVE_READ_LIMIT`).
    pub live: Option<LiveRows>,
    /// From the freeze request to the thaw's answer.
    pub frozen_for: Duration,
    /// How long the agent's freeze (the hook, then FIFREEZE) took.
    pub freeze_took: Duration,
    /// The thaw's answer: the number of filesystems thawed, or the hook's failure.
    pub thaw: Result<Value, String>,
    /// How many filesystems the agent froze.
    pub frozen: Value,
}

/// What the hypervisor got.
#[derive(Debug)]
pub enum Outcome {
    Taken(Taken),
    /// The agent's freeze failed with this error; `thaw` is the answer to the thaw sent anyway.
    Refused {
        error: String,
        thaw: Result<Value, String>,
    },
}

impl SourceGuest {
    /// Takes a snapshot by `path`, thawing right after the copy is secured.
    pub fn take(&mut self, path: SnapshotPath) -> Outcome {
        self.take_as(path, Duration::ZERO, true)
    }

    /// Takes a snapshot by `path` and sends the thaw no sooner than `hold` after the freeze
    /// answered (a hypervisor that is late to thaw).
    pub fn take_thawing_after(&mut self, path: SnapshotPath, hold: Duration) -> Outcome {
        self.take_as(path, hold, true)
    }

    /// Takes a snapshot by `path` without reading the live server while frozen: with no lock,
    /// a read may queue behind a MyISAM writer that waits on the frozen disk, and lengthen the
    /// frozen window it would measure.
    pub fn take_without_looking(&mut self, path: SnapshotPath) -> Outcome {
        self.take_as(path, Duration::ZERO, false)
    }

    /// The guest is never left frozen: the thaw is sent on every path out of here that does not
    /// panic, and the VM dies with the test otherwise.
    fn take_as(&mut self, path: SnapshotPath, hold: Duration, look: bool) -> Outcome {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let copy = self.dir.path().join(format!("{}-{n}.qcow2", path.name()));
        let node = format!("bk{n}");
        if path == SnapshotPath::Backup {
            self.add_backup_target(&copy, &node);
        }
        // Connected before the freeze: nothing about logging in can wait on the frozen disk.
        let readers = look.then(|| (self.conn(), self.conn()));
        let asked = Instant::now();
        let frozen = self
            .vm
            .agent
            .execute("guest-fsfreeze-freeze", None, FREEZE_LIMIT);
        let freeze_took = asked.elapsed();
        let frozen = match frozen {
            Ok(count) => count,
            Err(error) => {
                let thaw = self
                    .vm
                    .agent
                    .execute("guest-fsfreeze-thaw", None, JOB_LIMIT);
                if path == SnapshotPath::Backup {
                    self.qmp_must("blockdev-del", json!({ "node-name": node }));
                }
                eprintln!(
                    "vm {}: the agent refused the freeze after {freeze_took:?}: {error}; thaw sent anyway: {thaw:?}",
                    path.name()
                );
                return Outcome::Refused { error, thaw };
            }
        };
        let secured = match path {
            SnapshotPath::Backup => self.vm.qmp.execute(
                "blockdev-backup",
                Some(json!({"job-id": node, "device": "d0", "target": node, "sync": "full"})),
                JOB_LIMIT,
            ),
            SnapshotPath::Snapshot => self.vm.qmp.execute(
                "blockdev-snapshot-internal-sync",
                Some(json!({"device": "d0", "name": format!("s{n}")})),
                JOB_LIMIT,
            ),
        };
        let live = readers.and_then(|(reader, watcher)| read_live(reader, watcher));
        let hold_until = asked + freeze_took + hold;
        std::thread::sleep(hold_until.saturating_duration_since(Instant::now()));
        let thaw = self
            .vm
            .agent
            .execute("guest-fsfreeze-thaw", None, JOB_LIMIT);
        let frozen_for = asked.elapsed();
        if let Err(e) = secured {
            panic!("vm {}: securing the copy failed: {e}", path.name());
        }
        match path {
            SnapshotPath::Backup => self.finish_backup(&node),
            SnapshotPath::Snapshot => {
                // The snapshot lives inside the running VM's overlay: read it out with -U, as
                // Proxmox's export does while the VM runs.
                qemu_img(&[
                    "convert",
                    "-U",
                    "-O",
                    "qcow2",
                    "-l",
                    &format!("snapshot.name=s{n}"),
                    self.vm.disk.to_str().unwrap(),
                    copy.to_str().unwrap(),
                ]);
            }
        }
        eprintln!(
            "vm {}: froze {frozen} filesystem(s); freeze answered in {freeze_took:?}, thaw answered \
             {frozen_for:?} after the freeze request: {thaw:?}",
            path.name()
        );
        Outcome::Taken(Taken {
            copy,
            live,
            frozen_for,
            freeze_took,
            thaw,
            frozen,
        })
    }

    /// What vzdump does after the agent's freeze failed: it backs the disk up anyway, without a
    /// freeze (the copy is the disk as it was when the job started: crash-consistent). The copy.
    pub fn copy_without_freeze(&mut self) -> PathBuf {
        let copy = self.dir.path().join("backup-without-freeze.qcow2");
        let node = "bknofreeze";
        self.add_backup_target(&copy, node);
        self.qmp_must(
            "blockdev-backup",
            json!({"job-id": node, "device": "d0", "target": node, "sync": "full"}),
        );
        self.finish_backup(node);
        copy
    }

    /// A qcow2 of the disk's size at `copy`, added as the block node `node`.
    fn add_backup_target(&mut self, copy: &std::path::Path, node: &str) {
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            copy.to_str().unwrap(),
            &self.image.size.to_string(),
        ]);
        self.qmp_must(
            "blockdev-add",
            json!({"driver": "qcow2", "node-name": node,
                   "file": {"driver": "file", "filename": copy}}),
        );
    }

    /// Waits for the backup job `node` and removes its node.
    fn finish_backup(&mut self, node: &str) {
        let done = self.vm.qmp.wait_event("BLOCK_JOB_COMPLETED", JOB_LIMIT);
        let done = done.unwrap_or_else(|e| panic!("the backup job: {e}"));
        assert!(
            done["data"].get("error").is_none(),
            "the backup job failed: {done}"
        );
        self.qmp_must("blockdev-del", json!({ "node-name": node }));
    }

    fn qmp_must(&mut self, command: &str, arguments: Value) {
        self.vm
            .qmp
            .execute(command, Some(arguments), JOB_LIMIT)
            .unwrap_or_else(|e| panic!("QMP {command}: {e}"));
    }
}

/// The live server's row counts and GTID position, read on `conn` by a thread that is abandoned past
/// `LIVE_READ_LIMIT`; if it does not answer, what `watcher` sees in the processlist is printed.
pub fn read_live(mut conn: mysql::Conn, watcher: mysql::Conn) -> Option<LiveRows> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut read = || -> Result<LiveRows, String> {
            let e = |e: mysql::Error| e.to_string();
            let (innodb, myisam): (u64, u64) = conn
                .query_first(
                    "SELECT (SELECT COUNT(*) FROM snap.inno), (SELECT COUNT(*) FROM snap.my_log)",
                )
                .map_err(e)?
                .unwrap_or_default();
            let gtid: String = conn
                .query_first("SELECT @@gtid_binlog_pos")
                .map_err(e)?
                .unwrap_or_default();
            Ok(LiveRows {
                innodb,
                myisam,
                gtid_binlog_pos: gtid,
            })
        };
        let _ = tx.send(read());
    });
    match rx.recv_timeout(LIVE_READ_LIMIT) {
        Ok(Ok(rows)) => Some(rows),
        Ok(Err(e)) => panic!("reading the live server while frozen: {e}"),
        Err(_) => {
            eprintln!(
                    "the live server did not answer within {LIVE_READ_LIMIT:?} while frozen; its processlist:\n{}",
                    processlist(watcher)
                );
            None
        }
    }
}

/// `SHOW FULL PROCESSLIST` on `conn`, one line a thread, given 5 s.
fn processlist(mut conn: mysql::Conn) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rows: Result<Vec<mysql::Row>, _> = conn.query("SHOW FULL PROCESSLIST");
        let text = match rows {
            Ok(rows) => rows
                .iter()
                .map(|row| {
                    let cell = |i: usize| row.as_ref(i).map(|v| v.as_sql(true)).unwrap_or_default();
                    (0..row.len()).map(cell).collect::<Vec<_>>().join(" | ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(SHOW FULL PROCESSLIST failed: {e})"),
        };
        let _ = tx.send(text);
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "(SHOW FULL PROCESSLIST did not answer either)".into())
}
