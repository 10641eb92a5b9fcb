//! Real VMs for the end-to-end tests: a Debian guest booted by QEMU, the project's .deb installed
//! in it, qemu-ga configured as README's Proxmox quick start says, and snapshots taken the way
//! Proxmox takes them (a backup job or an internal snapshot, each between the agent's freeze and
//! thaw of every guest filesystem). Only guests' filesystems are ever frozen, through their own
//! agent; every VM is stopped by its PID when its test ends.

pub mod channel;
pub mod copy;
pub mod guest;
pub mod image;
pub mod machine;
pub mod proxmox;

use std::io::Write;
use std::path::Path;

pub use guest::{AgentHook, SourceGuest};
pub use proxmox::{Outcome, SnapshotPath, Taken};

/// Why this machine cannot run the VM tests (no QEMU, no loop device to read a copy with), or
/// `None` when it can. A missing image is not such a reason: it is built, and a failed build fails.
pub fn vms_unavailable() -> Option<String> {
    let qemu = ["/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-img"]
        .iter()
        .find(|tool| !Path::new(tool).is_file());
    if let Some(tool) = qemu {
        return Some(format!(
            "{tool} is missing (tests/run.sh installs qemu-system-x86 and qemu-utils)"
        ));
    }
    crate::loopfs::loop_devices_missing()
}

/// True (after one loud line, past the test harness's capture) when this machine cannot run VMs:
/// the test then returns at once, having asserted nothing. The guest image is built here if it
/// is not cached; a failed build fails the test, unless `MYSQL_SNAPSHOT_SKIP_MATRIX=1` says the
/// Debian mirror is out of reach (as for the server matrix's chroots).
pub fn machine_cannot_run_vms(test: &str) -> bool {
    let why = vms_unavailable().or_else(|| match image::guest_image() {
        Ok(_) => None,
        Err(e) if std::env::var("MYSQL_SNAPSHOT_SKIP_MATRIX").as_deref() == Ok("1") => {
            Some(format!("the guest image could not be built: {e}"))
        }
        Err(e) => panic!(
            "the guest image could not be built: {e}\n(set MYSQL_SNAPSHOT_SKIP_MATRIX=1 to skip \
             loudly where the Debian mirror is out of reach)"
        ),
    });
    let Some(why) = why else { return false };
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n!!!!!!!!!!!!!!!! SKIPPED {test}: {why}\n\
         !!!!!!!!!!!!!!!! no VM ran and nothing was snapshotted\n"
    );
    true
}
