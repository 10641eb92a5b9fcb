//! LVM in the guest (this machine's kernel has no device-mapper; the guest's has): a second
//! virtual disk as the one PV of a volume group, the datadir (binary log included) on an LV of it,
//! the info file in the datadir as docs/local-snapshots.md's LVM recipe says, and a snapshot LV
//! made by `mysql-snapshot-freeze --run -- lvcreate -s …` under the host's write load. The
//! snapshot is judged inside the guest: read before anything starts on it (the info file and the
//! binary log's end), then started as a second MariaDB of its own (socket only, no replication,
//! another server-id) whose tables and rows are checked against what the live server showed
//! under the lock.

use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::Value;

use super::copy::{self, Offline};
use super::guest::{AgentHook, SourceGuest};
use super::machine::{Exec, Vm};
use super::proxmox::{read_live, LiveRows};
use crate::wait_until;

/// The second disk's serial (the guest sees `/dev/disk/by-id/virtio-mss-data`) and size.
pub const DATA_DISK: (&str, u64) = ("mss-data", 1024);
/// The LV the datadir lives on, and the snapshot LV freeze's command makes of it.
pub const ORIGIN: &str = "mss/data";
pub const SNAPSHOT: &str = "mss/snap";
/// The recipe's info file: in the datadir, so that the snapshot carries it.
pub const INFO_FILE: &str = "/var/lib/mysql/mysql-snapshot-info.json";
/// Where the snapshot LV is mounted, and the second server's socket.
pub const SNAPSHOT_MOUNT: &str = "/mnt/snap";
pub const SNAPSHOT_SOCKET: &str = "/run/mss-snap/sock";
/// The longest a step of the datadir's move may take (seconds under TCG when the machine is idle;
/// another run's load can make it many times slower).
const STEP_LIMIT: Duration = Duration::from_secs(300);
/// Marks the command under the lock leaves and waits for (on /run, tmpfs).
const MARKS: &str = "/run/mss-lvm";

/// The command freeze runs under the lock: it keeps the info file as it found it, makes the
/// snapshot LV (timed), says so, and waits (at most a minute) for the test to have read the live
/// server before it ends and freeze releases.
const COMMAND: &str = r#"#!/bin/sh
set -e
cp "$MYSQL_SNAPSHOT_INFO_FILE" /run/mss-lvm/info-seen.json
start=$(date +%s%N)
lvcreate --snapshot --size 200M --name snap mss/data
echo $(( ($(date +%s%N) - start) / 1000000 )) >/run/mss-lvm/lvcreate-ms
touch /run/mss-lvm/snapped
i=0
while [ ! -e /run/mss-lvm/go ]; do
	i=$((i + 1))
	[ "$i" -lt 1200 ] || { echo "no go from the test within 60 s" >&2; exit 3; }
	sleep 0.05
done
"#;

/// A source guest (no qemu-ga hook: nothing but `--run` takes the lock) whose datadir is on the
/// LV `ORIGIN`, with the info file in it, and the load running.
pub fn start_on_lvm() -> SourceGuest {
    SourceGuest::start_with(
        AgentHook::Off,
        &format!("info-file = {INFO_FILE}"),
        &[DATA_DISK],
        datadir_on_lv,
    )
}

/// Stops MariaDB, makes the PV, VG and LV on the second disk, moves the datadir onto it (ext4,
/// mounted at /var/lib/mysql) and starts MariaDB again: step by step, each timed, so that a slow
/// or stuck one is named with the guest's journal.
fn datadir_on_lv(vm: &mut Vm) {
    let disk = format!("/dev/disk/by-id/virtio-{}", DATA_DISK.0);
    let steps = [
        "systemctl stop mariadb".to_string(),
        format!("pvcreate -q {disk}"),
        format!("vgcreate -q mss {disk}"),
        "lvcreate -q -y --name data --size 600M mss".into(),
        format!("mkfs.ext4 -q /dev/{ORIGIN}"),
        format!(
            "mkdir -p /mnt/lv && mount /dev/{ORIGIN} /mnt/lv && rmdir /mnt/lv/lost+found && \
             cp -a /var/lib/mysql/. /mnt/lv/ && umount /mnt/lv"
        ),
        format!(
            "rm -rf /var/lib/mysql/* && mount /dev/{ORIGIN} /var/lib/mysql && \
             chown mysql:mysql /var/lib/mysql"
        ),
        "systemctl start mariadb".into(),
    ];
    let mut took = Vec::new();
    for step in &steps {
        let started = Instant::now();
        let out = vm.try_exec(&["/bin/sh", "-c", step], STEP_LIMIT);
        if !out.as_ref().is_ok_and(Exec::success) {
            let journal = vm.sh(
                "systemctl status --no-pager mariadb; journalctl -b --no-pager | grep -v qemu-ga | \
                 tail -40",
                Duration::from_secs(60),
            );
            panic!(
                "moving the datadir onto LV {ORIGIN}: `{step}`: {out:?}\njournal:\n{}\nconsole:\n{}",
                journal.stdout,
                vm.console()
            );
        }
        took.push(format!(
            "{} {:.1} s",
            step.split_whitespace().next().unwrap(),
            started.elapsed().as_secs_f64()
        ));
    }
    eprintln!(
        "vm source: datadir moved onto LV {ORIGIN} ({})",
        took.join(", ")
    );
}

/// What `freeze --run -- lvcreate -s …` did, and the live server while its command held the lock.
#[derive(Debug)]
pub struct RunSnapshot {
    /// freeze's own exit and output.
    pub run: Exec,
    /// The info file as the command found it at `$MYSQL_SNAPSHOT_INFO_FILE`.
    pub info_seen: Value,
    /// True if a write was blocked right after the snapshot LV was made.
    pub writes_blocked: bool,
    /// Row counts and GTID position of the live server under the lock.
    pub live: Option<LiveRows>,
    /// `SHOW BINLOG STATUS` of the live server under the lock.
    pub live_binlog: (String, u64),
    /// How long `lvcreate` took, and freeze --run in all (guest clock).
    pub lvcreate_ms: u64,
    pub run_ms: u64,
}

/// Runs `mysql-snapshot-freeze --run -- COMMAND` in the guest and, once the snapshot LV exists
/// (the lock still held), reads the live server through the forwarded port.
pub fn snapshot_by_freeze_run(guest: &mut SourceGuest) -> RunSnapshot {
    let vm = &mut guest.vm;
    vm.must(&format!("rm -rf {MARKS} && mkdir {MARKS}"));
    vm.write_file("/root/lvm-snapshot.sh", COMMAND.as_bytes());
    vm.must("chmod 0755 /root/lvm-snapshot.sh");
    let pid = vm.spawn(&[
        "/bin/sh",
        "-c",
        "start=$(date +%s%N); mysql-snapshot-freeze --run -- /root/lvm-snapshot.sh; rc=$?; \
         echo \"run-ms=$(( ($(date +%s%N) - start) / 1000000 ))\" >&2; exit $rc",
    ]);
    let mut ended = None;
    let snapped = wait_until(Duration::from_secs(180), || {
        ended = vm.exited(&pid);
        ended.is_some()
            || vm
                .sh(&format!("test -e {MARKS}/snapped"), Duration::from_secs(30))
                .success()
    });
    assert!(snapped, "the snapshot LV was not made within 180 s");
    if let Some(run) = ended {
        panic!("freeze --run ended before its command made the snapshot LV: {run}");
    }
    let writes_blocked = guest.writes_blocked();
    let live = read_live(guest.conn(), guest.conn());
    let row: mysql::Row = guest
        .conn()
        .query_first("SHOW BINLOG STATUS")
        .unwrap()
        .expect("SHOW BINLOG STATUS answers a row");
    let live_binlog = (
        row.get::<String, _>("File").unwrap(),
        row.get::<u64, _>("Position").unwrap(),
    );
    let vm = &mut guest.vm;
    vm.must(&format!("touch {MARKS}/go"));
    let mut ended = None;
    assert!(
        wait_until(Duration::from_secs(120), || {
            ended = vm.exited(&pid);
            ended.is_some()
        }),
        "freeze --run did not end within 120 s of its command's go"
    );
    let run = ended.unwrap();
    let info_seen = vm.must(&format!("cat {MARKS}/info-seen.json"));
    let info_seen = serde_json::from_str(&info_seen)
        .unwrap_or_else(|e| panic!("the info file the command saw ({e}): {info_seen}"));
    let lvcreate_ms = vm
        .must(&format!("cat {MARKS}/lvcreate-ms"))
        .trim()
        .parse()
        .unwrap();
    let run_ms = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("run-ms="))
        .and_then(|ms| ms.trim().parse().ok())
        .unwrap_or_else(|| panic!("no run-ms from the wrapper: {run}"));
    RunSnapshot {
        run,
        info_seen,
        writes_blocked,
        live,
        live_binlog,
        lvcreate_ms,
        run_ms,
    }
}

/// Mounts the snapshot LV read-write at `SNAPSHOT_MOUNT` (ext4 replays its journal, if any) and
/// reads, before any server starts on it, the info file it carries and where its binary log ends
/// (the last file of binlog.index, its size, its last GTID by the guest's `mariadb-binlog`).
pub fn read_snapshot(vm: &mut Vm) -> Offline {
    vm.must(&format!(
        "mkdir -p {SNAPSHOT_MOUNT} && mount /dev/{SNAPSHOT} {SNAPSHOT_MOUNT}"
    ));
    let info_path = format!("{SNAPSHOT_MOUNT}/{}", INFO_FILE.rsplit('/').next().unwrap());
    let cat = vm.sh(&format!("cat {info_path}"), Duration::from_secs(30));
    let info = cat.success().then(|| {
        serde_json::from_str(&cat.stdout).unwrap_or_else(|e| {
            Value::String(format!(
                "the info file in the snapshot is not JSON ({e}): {}",
                cat.stdout
            ))
        })
    });
    let end = vm.must(&format!(
        "cd {SNAPSHOT_MOUNT} && f=$(tail -n 1 binlog.index) && f=${{f#./}} && \
         echo \"$f $(stat -c %s \"$f\")\" && mariadb-binlog \"$f\" | grep -E '^#.*(GTID|Gtid list)'"
    ));
    let mut lines = end.lines();
    let binlog_end = lines
        .next()
        .and_then(|l| l.split_once(' '))
        .and_then(|(file, size)| Some((file.to_string(), size.parse().ok()?)))
        .ok_or_else(|| format!("cannot read the snapshot's binlog end: {end}"))
        .and_then(|(file, size)| {
            let events: Vec<&str> = lines.collect();
            copy::last_gtid(&events.join("\n"))
                .map(|gtid| (file.clone(), size, gtid))
                .ok_or_else(|| format!("mariadb-binlog finds no GTID in the snapshot's {file}"))
        });
    Offline { info, binlog_end }
}

/// Starts a second MariaDB on the mounted snapshot (crash recovery included) and waits until it
/// answers on `SNAPSHOT_SOCKET`; the client command that reaches it.
pub fn start_snapshot_server(vm: &mut Vm) -> String {
    let dir = SNAPSHOT_SOCKET.rsplit_once('/').unwrap().0;
    vm.must(&format!(
        "mkdir -p {dir} && chown mysql:mysql {dir} && \
         systemd-run --quiet --unit=mss-snap-mariadb mariadbd --no-defaults --user=mysql \
         --datadir={SNAPSHOT_MOUNT} --socket={SNAPSHOT_SOCKET} --pid-file={dir}/pid \
         --log-error={dir}/error.log --skip-networking --skip-slave-start --server-id=2 \
         --log-bin=binlog --innodb-buffer-pool-size=64M --myisam-recover-options=OFF"
    ));
    let client = format!("mariadb --socket={SNAPSHOT_SOCKET}");
    let started = Instant::now();
    let up = wait_until(Duration::from_secs(300), || {
        vm.sh(
            &format!("{client} -N -e 'SELECT 1'"),
            Duration::from_secs(30),
        )
        .success()
    });
    if !up {
        let log = vm.sh(
            &format!("tail -40 {dir}/error.log"),
            Duration::from_secs(30),
        );
        panic!("the server on the snapshot did not answer within 300 s:\n{log}");
    }
    eprintln!(
        "the server on the snapshot LV answers after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    client
}

/// Stops the snapshot's server, unmounts the snapshot and removes its LV.
pub fn remove_snapshot(vm: &mut Vm) {
    vm.must(&format!(
        "systemctl stop mss-snap-mariadb && umount {SNAPSHOT_MOUNT} && lvremove -q -y {SNAPSHOT} && \
         ! lvs {SNAPSHOT} 2>/dev/null"
    ));
}

/// Every discrepancy between the snapshot and its info file, and between it and the live server
/// under the lock: `copy::compare_offline` and `copy::compare_live` on what `read_snapshot` read.
pub fn discrepancies(offline: &Offline, live: Option<&LiveRows>) -> Vec<String> {
    let mut found = copy::compare_offline(offline);
    match live {
        Some(live) => found.extend(copy::compare_live(offline, live)),
        None => found.push("the live server did not answer under the lock".into()),
    }
    found
}
