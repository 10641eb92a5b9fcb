//! The VM figures: in a real guest under TCG, snapshotted the way a Proxmox
//! backup does it, how long the host's writers stall beyond the window the hypervisor keeps the
//! guest frozen — with the package's hook and, in the same run, with qemu-ga running no hook (the
//! lock's own share is the difference) — and how soon after qemu-ga starts the thaw hook the lock
//! is released. TCG runs guest code many times slower than a real CPU: these are not production
//! figures, only comparable with each other.
//!
//! The guests are the test harness's (`harness::vm`): cached image, the project's .deb, qemu-ga
//! configured as README says; nothing of this machine is frozen.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use harness::vm::{AgentHook, Outcome, SnapshotPath, SourceGuest};

use crate::report::{Report, Row};
use crate::stats::Samples;

/// Where the rows go in the table (the VM figures belong to no one server flavour).
const SERVER: &str = "MariaDB 10.11 in a TCG guest";

/// Runs both guests, `runs` backups each, and adds the rows.
pub(crate) fn figures(report: &mut Report, runs: usize) -> Result<(), String> {
    let measured = catch_unwind(AssertUnwindSafe(|| measure(runs))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a VM step panicked".into())
    })?;
    let (hooked, off, to_request, to_release, start_floor) = measured;
    report.row(
        SERVER,
        Row::new(
            "vm stall",
            "package's hook: longest writer stall − (freeze request → thaw answer)",
            "ms",
            hooked,
        ),
    );
    report.row(
        SERVER,
        Row::new(
            "vm stall",
            "no hook (control, same run): longest writer stall − (freeze request → thaw answer)",
            "ms",
            off,
        ),
    );
    report.row(
        SERVER,
        Row::new(
            "vm release",
            "qemu-ga starts the thaw hook → thaw signals the locker",
            "ms",
            to_request,
        ),
    );
    report.row(
        SERVER,
        Row::new(
            "vm release",
            "qemu-ga starts the thaw hook → lock released",
            "ms",
            to_release,
        )
        .floor(start_floor),
    );
    report.note(
        "vm release floor: in the same guest under the same load, `/bin/sh -c 'exec \
         mysql-snapshot-thaw --version'` from bash ($EPOCHREALTIME around it) — the hook's shell \
         and the thaw binary starting, doing nothing; under TCG most of the release time is this",
    );
    Ok(())
}

type Measured = (Samples, Samples, Samples, Samples, Samples);

fn measure(runs: usize) -> Measured {
    let (mut hooked, mut off) = (Samples::default(), Samples::default());
    let (mut to_request, mut to_release) = (Samples::default(), Samples::default());
    let mut start_floor = Samples::default();
    {
        let mut guest = SourceGuest::start(AgentHook::Package, "");
        for run in 0..runs {
            let cursor = guest.journal_cursor();
            guest.load.take_longest();
            let taken = match guest.take(SnapshotPath::Backup) {
                Outcome::Taken(taken) => taken,
                Outcome::Refused { error, .. } => panic!("run {run}: freeze refused: {error}"),
            };
            assert!(
                taken.thaw.is_ok(),
                "run {run}: thaw failed: {:?}",
                taken.thaw
            );
            settle(&guest);
            hooked.push(guest.stall_beyond(&taken));
            let timing = guest.thaw_timing(&cursor);
            to_request.push(timing.to_request);
            to_release.push(timing.to_release);
        }
        for _ in 0..runs {
            start_floor.push(program_start_ms(&mut guest));
        }
    }
    let mut guest = SourceGuest::start(AgentHook::Off, "");
    for run in 0..runs {
        guest.load.take_longest();
        let taken = match guest.take_without_looking(SnapshotPath::Backup) {
            Outcome::Taken(taken) => taken,
            Outcome::Refused { error, .. } => panic!("control run {run}: freeze refused: {error}"),
        };
        settle(&guest);
        off.push(guest.stall_beyond(&taken));
    }
    (hooked, off, to_request, to_release, start_floor)
}

/// What starting the hook's shell and the thaw binary costs in the guest, doing nothing else.
fn program_start_ms(guest: &mut SourceGuest) -> f64 {
    let out = guest.vm.must(
        "bash -c 'a=$EPOCHREALTIME; /bin/sh -c \"exec /usr/sbin/mysql-snapshot-thaw --version\" \
         >/dev/null; b=$EPOCHREALTIME; echo $a $b'",
    );
    let times: Vec<f64> = out
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    match times[..] {
        [a, b] => (b - a) * 1000.0,
        _ => panic!("the start-cost probe printed `{out}`"),
    }
}

/// Lets the writers run on until each has written again, so that the longest stall is complete.
fn settle(guest: &SourceGuest) {
    assert!(
        guest.load.makes_progress(50, Duration::from_secs(60)),
        "writes do not resume: {:?}",
        guest.load.errors()
    );
}
