//! Judging a copy the hypervisor made: first offline, exactly as made (converted to raw and
//! loop-mounted `ro,noload` before anything boots on it), then booted as a VM of its own with no
//! network. Every discrepancy found is returned; an empty list means the copy is consistent.
//!
//! Offline: the info file is inside the copy and its binlog file, position and `gtid.binlog_pos`
//! equal where the copy's own binlog ends and its last GTID (`mariadb-binlog`). Booted: MariaDB
//! starts, CHECK TABLE finds the MyISAM tables sound, and the row counts equal what the live
//! server showed while frozen.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::guest::{wait_for_mariadb, Copies, INFO_FILE};
use super::machine::qemu_img;
use super::machine::Vm;
use super::proxmox::{LiveRows, Taken};
use crate::loopfs::LoopMount;

/// Where the guest's MariaDB keeps its data and binary log.
const DATADIR: &str = "var/lib/mysql";

/// What the copy holds, read before it ever booted.
#[derive(Debug)]
pub struct Offline {
    pub info: Option<Value>,
    /// The last binlog named in binlog.index, its size and the last GTID in it.
    pub binlog_end: Result<(String, u64, String), String>,
}

impl Copies {
    /// Every discrepancy between the copy and what it must be (see the module header).
    pub fn discrepancies(&self, taken: &Taken) -> Vec<String> {
        let mut found = Vec::new();
        let offline = read_offline(&taken.copy, self.dir.path());
        found.extend(compare_offline(&offline));
        match &taken.live {
            Some(live) => found.extend(compare_live(&offline, live)),
            None => found.push(
                "the live server did not answer while frozen: nothing to compare the copy's rows with"
                    .into(),
            ),
        }
        found.extend(boot_and_check(self, taken));
        found
    }
}

/// The copy converted to a raw image at `raw`: what a loop device reads (a DBA restoring an
/// exported qcow2 converts it the same way). The qcow2 itself is only read.
pub fn to_raw(copy: &Path, raw: &Path) {
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        copy.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
}

/// Converts the copy to raw, mounts it untouched and reads the info file and the binlog's end.
pub fn read_offline(copy: &Path, scratch: &Path) -> Offline {
    let raw = scratch.join("offline.raw");
    let started = Instant::now();
    to_raw(copy, &raw);
    let offline = {
        let mount = LoopMount::attach_untouched(&raw, &scratch.join("offline-mnt"));
        let root = &mount.mountpoint;
        let info = fs::read_to_string(root.join(INFO_FILE.trim_start_matches('/')))
            .ok()
            .map(|text| {
                serde_json::from_str(&text).unwrap_or_else(|e| {
                    Value::String(format!(
                        "the info file in the copy is not JSON ({e}): {text}"
                    ))
                })
            });
        Offline {
            info,
            binlog_end: binlog_end(&root.join(DATADIR)),
        }
    };
    let _ = fs::remove_file(&raw);
    eprintln!(
        "copy read offline in {:.1} s: info file {}, binlog ends at {:?}",
        started.elapsed().as_secs_f64(),
        if offline.info.is_some() {
            "present"
        } else {
            "absent"
        },
        offline.binlog_end
    );
    offline
}

/// What an info file and the binlog end beside it disagree on (see the module header).
pub fn compare_offline(offline: &Offline) -> Vec<String> {
    let mut found = Vec::new();
    let (file, size, gtid) = match &offline.binlog_end {
        Ok(end) => end.clone(),
        Err(why) => {
            found.push(why.clone());
            return found;
        }
    };
    let Some(info) = &offline.info else {
        found.push(format!("the info file {INFO_FILE} is not inside the copy"));
        return found;
    };
    if let Value::String(why) = info {
        found.push(why.clone());
        return found;
    }
    // The info file's own word first: a copy it does not call consistent is not.
    if info["consistent"] != true {
        found.push(format!(
            "the info file says the copy is not consistent: {} ({})",
            info["state"].as_str().unwrap_or("-"),
            info["reason"].as_str().unwrap_or("no reason")
        ));
    }
    let recorded_file = info["binlog"]["file"].as_str().unwrap_or("(none)");
    let recorded_position = info["binlog"]["position"].as_u64();
    if recorded_file != file || recorded_position != Some(size) {
        found.push(format!(
            "the copy's binlog ends at {file}:{size}, the info file records {recorded_file}:{recorded_position:?}"
        ));
    }
    let recorded_gtid = info["gtid"]["binlog_pos"].as_str().unwrap_or("(none)");
    if recorded_gtid != gtid {
        found.push(format!(
            "the copy's last GTID is `{gtid}`, the info file records gtid.binlog_pos `{recorded_gtid}`"
        ));
    }
    found
}

/// Whether the copy's last GTID is what the live server showed under the lock.
pub fn compare_live(offline: &Offline, live: &LiveRows) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok((file, size, gtid)) = &offline.binlog_end {
        if *gtid != live.gtid_binlog_pos {
            found.push(format!(
                "the copy's binlog ends at {file}:{size} with GTID {gtid}, the live server showed \
                 gtid_binlog_pos {} while frozen",
                live.gtid_binlog_pos
            ));
        }
    }
    found
}

impl Copies {
    /// Boots `copy` — one taken without a freeze — as a VM of its own (no network), waits for
    /// MariaDB to answer after its crash recovery, and reads the info file as the restored VM sees
    /// it (after the journal's replay: a copy taken without a freeze may hold the file's newest
    /// metadata only in the journal, which an offline `noload` mount does not read). The info
    /// file's text and how many crash-recovery lines MariaDB's journal has.
    pub fn boot_crash_copy(&self, copy: &Path) -> (String, usize) {
        let mut vm = Vm::boot("crash-copy", self.image, copy, false);
        wait_for_mariadb(&mut vm, Duration::from_secs(300));
        let info = vm.must(&format!("cat {INFO_FILE}"));
        let recovered = vm
            .sh(
                "journalctl -u mariadb --no-pager -b | grep -c -i 'crash recovery\\|not shut down normally'",
                Duration::from_secs(30),
            )
            .stdout
            .trim()
            .parse()
            .unwrap_or(0);
        (info, recovered)
    }
}

/// Boots the copy as a VM of its own (no network), waits for MariaDB and checks its tables and
/// row counts.
fn boot_and_check(source: &Copies, taken: &Taken) -> Vec<String> {
    let started = Instant::now();
    let mut vm = Vm::boot("copy", source.image, &taken.copy, false);
    wait_for_mariadb(&mut vm, Duration::from_secs(300));
    let recovery = vm
        .sh(
            "journalctl -u mariadb --no-pager -b | grep -c -i 'crash recovery\\|not shut down normally'",
            Duration::from_secs(30),
        )
        .stdout;
    eprintln!(
        "copy booted and MariaDB answers after {:.1} s (crash-recovery lines: {})",
        started.elapsed().as_secs_f64(),
        recovery.trim()
    );
    check_tables_and_rows(&mut vm, "mariadb", taken.live.as_ref())
}

/// What is wrong with the load's tables on a copy's server in `vm`, reached with the client
/// command `client` (`mariadb`, plus say `--socket=…` for a second server): the MyISAM tables
/// must be there, CHECK TABLE must find every table OK, and the row counts must equal `live`'s.
pub fn check_tables_and_rows(vm: &mut Vm, client: &str, live: Option<&LiveRows>) -> Vec<String> {
    let mut found = Vec::new();
    let tables = vm.must(&format!(
        "{client} -N -B -e \"SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'snap' ORDER BY TABLE_NAME\""
    ));
    let myisam: Vec<&str> = tables
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, engine)| *engine == "MyISAM")
        .map(|(name, _)| name)
        .collect();
    if myisam.len() < 3 {
        found.push(format!("the copy lacks the load's MyISAM tables: {tables}"));
    }
    for table in tables.lines().filter_map(|l| l.split('\t').next()) {
        let check = vm.sh(
            &format!("{client} -N -B -e 'CHECK TABLE snap.`{table}`'"),
            Duration::from_secs(120),
        );
        let rows: Vec<Vec<&str>> = check
            .stdout
            .lines()
            .map(|l| l.split('\t').collect())
            .collect();
        let ok = check.success()
            && rows
                .last()
                .is_some_and(|r| r.get(2..4) == Some(&["status", "OK"]))
            && !rows.iter().any(|r| r.get(2) == Some(&"error"));
        if !ok {
            found.push(format!(
                "CHECK TABLE snap.{table} in the copy says: {check}"
            ));
        }
    }
    if let Some(live) = live {
        // A table marked crashed cannot be counted: a discrepancy too, not a panic.
        let counted = vm.sh(
            &format!(
                "{client} -N -B -e 'SELECT (SELECT COUNT(*) FROM snap.inno), (SELECT COUNT(*) FROM snap.my_log)'"
            ),
            Duration::from_secs(120),
        );
        let counts: Vec<u64> = counted
            .stdout
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        if !counted.success() {
            found.push(format!("counting the copy's rows failed: {counted}"));
        } else if counts != [live.innodb, live.myisam] {
            found.push(format!(
                "the copy has {counts:?} rows in snap.inno and snap.my_log, the live server showed [{}, {}] while frozen",
                live.innodb, live.myisam
            ));
        }
    }
    found
}

/// The last binlog named in `datadir`'s binlog.index, its size, and the last GTID it holds (or,
/// if it holds none, the GTID list it starts with), read with the host's `mariadb-binlog`.
fn binlog_end(datadir: &Path) -> Result<(String, u64, String), String> {
    let (name, size) = crate::guest_agent::binlog_end(datadir)?;
    let out = Command::new("mariadb-binlog")
        .arg(datadir.join(&name))
        .output()
        .map_err(|e| format!("cannot run mariadb-binlog: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let gtid = last_gtid(&text)
        .ok_or_else(|| format!("mariadb-binlog finds no GTID in the copy's {name}"))?;
    Ok((name, size, gtid))
}

/// The last `GTID d-s-n` event in `mariadb-binlog` output, else its `Gtid list [...]`.
pub fn last_gtid(text: &str) -> Option<String> {
    // `#261202  5:56:03 server id 1  end_log_pos 658 CRC32 0x1a2b3c4d \tGTID 0-1-3 trans`
    let event = text
        .lines()
        .rev()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "GTID")?;
            words
                .next()
                .filter(|g| g.split('-').count() == 3)
                .map(String::from)
        })
        .next();
    event.or_else(|| {
        text.lines().find_map(|l| {
            let (_, rest) = l.split_once("Gtid list [")?;
            Some(rest.split(']').next()?.replace(' ', ""))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::last_gtid;

    #[test]
    fn the_last_gtid_event_wins_and_an_empty_binlog_falls_back_to_its_gtid_list() {
        let events =
            "#261202  5:56:03 server id 1  end_log_pos 100 CRC32 0x1 \tGtid list [0-1-7]\n\
                      #261202  5:56:03 server id 1  end_log_pos 200 CRC32 0x2 \tGTID 0-1-8 trans\n\
                      #261202  5:56:04 server id 1  end_log_pos 300 CRC32 0x3 \tGTID 0-1-9 trans\n";
        assert_eq!(last_gtid(events).as_deref(), Some("0-1-9"));
        let empty = "#261202  5:56:03 server id 1  end_log_pos 100 CRC32 0x1 \tGtid list [0-1-7]\n";
        assert_eq!(last_gtid(empty).as_deref(), Some("0-1-7"));
        assert_eq!(last_gtid("nothing"), None);
    }
}
