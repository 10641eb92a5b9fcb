//! Real VMs for the end-to-end tests: a Debian guest booted by QEMU, the project's .deb installed
//! in it, qemu-ga configured as README's Proxmox quick start says, and snapshots taken the way
//! Proxmox takes them (a backup job or an internal snapshot, each between the agent's freeze and
//! thaw of every guest filesystem). Only guests' filesystems are ever frozen, through their own
//! agent; every VM is stopped by its PID when its test ends.

pub mod channel;
pub mod copy;
pub mod guest;
pub mod image;
pub mod lvm;
pub mod machine;
pub mod proxmox;

use std::io::Write;
use std::path::Path;

pub use guest::{AgentHook, SourceGuest};
pub use proxmox::{Outcome, SnapshotPath, Taken};

/// A QEMU program the VM tests need that is not installed, or `None`.
fn missing_qemu_tool() -> Option<&'static str> {
    ["/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-img"]
        .into_iter()
        .find(|tool| !Path::new(tool).is_file())
}

/// True (after one loud line, past the test harness's capture) when this machine cannot run VMs
/// (no loop device to read a copy with): the test then returns at once, having asserted nothing.
/// A missing QEMU program is not such a limit: tests/run.sh installs it, so its absence fails the
/// test, and so does a guest image that cannot be built — unless `MYSQL_SNAPSHOT_SKIP_MATRIX=1`
/// says the Debian mirror is out of reach (as for the server matrix's chroots).
pub fn machine_cannot_run_vms(test: &str) -> bool {
    let skip_allowed = std::env::var("MYSQL_SNAPSHOT_SKIP_MATRIX").as_deref() == Ok("1");
    let why = crate::loopfs::loop_devices_missing()
        .or_else(|| match missing_qemu_tool() {
            None => None,
            Some(tool) if skip_allowed => Some(format!("{tool} is missing")),
            Some(tool) => panic!(
                "{tool} is missing: tests/run.sh installs qemu-system-x86 and qemu-utils; run it \
                 (or set MYSQL_SNAPSHOT_SKIP_MATRIX=1 to skip loudly where the Debian mirror is \
                 out of reach)"
            ),
        })
        .or_else(|| match image::guest_image() {
            Ok(_) => None,
            Err(e) if skip_allowed => Some(format!("the guest image could not be built: {e}")),
            Err(e) => panic!(
                "the guest image could not be built: {e}\n(set MYSQL_SNAPSHOT_SKIP_MATRIX=1 to \
                 skip loudly where the Debian mirror is out of reach)"
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
