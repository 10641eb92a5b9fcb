//! A source guest as a user runs it: the project's .deb installed with `dpkg -i`, qemu-ga pointed
//! at the package's hook exactly as README's Proxmox quick start says (or left without a hook, for
//! the negative control), the stock MariaDB with the binary log, and a write load from the host
//! through the forwarded port. Also what a test reads from inside it: the journal, the state file,
//! `thaw --status`, locker processes.
//!
//! The tool itself is configured only through `/etc/mysql-snapshot.cnf` (zero-config unless a
//! scenario adds settings) and talks to MariaDB as root over the Unix socket, as on a user's VM.

use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use serde_json::Value;

use super::image::{guest_image, GuestImage};
use super::machine::{overlay, Slot, Vm};
use super::proxmox::Taken;
use crate::guest_agent::{schema, WriteLoad};
use crate::{package, wait_until, TempDir};

/// The account the host's writers and probes use (over TCP; the tool never uses it).
const TEST_USER: &str = "snaptests";
const TEST_PASSWORD: &str = "Vm-Probe-2718";
/// The qemu-ga configuration README's Proxmox quick start tells users to write.
pub const QEMU_GA_CONF: &str = "[general]\nfsfreeze-hook=/usr/sbin/mysql-snapshot-qemu-hook\n";
/// Where the guest keeps what the tests look at.
pub const STATE_FILE: &str = "/run/mysql-snapshot/state.json";
pub const INFO_FILE: &str = "/var/lib/mysql-snapshot/snapshot-info.json";
pub const LOCKER: &str = "/usr/sbin/mysql-snapshot-locker";

/// Whether qemu-ga runs the package's hook.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AgentHook {
    /// `fsfreeze-hook=/usr/sbin/mysql-snapshot-qemu-hook` in `/etc/qemu/qemu-ga.conf`.
    Package,
    /// Debian's default: qemu-ga runs no hook, the filesystems are frozen with no lock.
    Off,
}

/// A source VM with the package installed and a load running. Fields drop in order: the load
/// (its threads see the VM go), the VM (stopped by PID), the directory of its disk, then the
/// slot that lets the next scenario's VM start.
pub struct SourceGuest {
    pub load: WriteLoad,
    pub vm: Vm,
    /// Holds the VM's overlay and every copy made of it.
    pub dir: TempDir,
    pub image: &'static GuestImage,
    port: u16,
    _slot: Slot,
}

impl SourceGuest {
    /// Boots a source VM from a fresh overlay of the cached image, installs the .deb, configures
    /// qemu-ga with `hook` and the tool with `settings` (lines for `[mysql-snapshot]`; empty:
    /// zero-config), creates the load's tables and starts the load.
    pub fn start(hook: AgentHook, settings: &str) -> SourceGuest {
        SourceGuest::start_with(hook, settings, &[], |_| {})
    }

    /// `start`, with raw disks of `(serial, MiB)` beside the root one (sparse files in the
    /// guest's directory; see `Vm::boot_with_disks`), and `prepare` run in the guest once the
    /// package is installed and configured and MariaDB has finished starting (a stop while its
    /// start job runs can hang), before the load's tables are made (say, to move the datadir onto
    /// one of those disks; MariaDB must answer again when it returns).
    pub fn start_with(
        hook: AgentHook,
        settings: &str,
        disks: &[(&str, u64)],
        prepare: impl FnOnce(&mut Vm),
    ) -> SourceGuest {
        crate::heavy(); // a TCG guest runs alone, then takes the machine's VM slot (see `gate`)
        let slot = Slot::take();
        let started = Instant::now();
        let image = guest_image().unwrap_or_else(|e| panic!("the guest image: {e}"));
        let deb = std::fs::read(package::deb()).expect("read the .deb");
        let dir = TempDir::new("vm-source");
        let disk = dir.path().join("source.qcow2");
        overlay(&image.disk, &disk);
        let extra: Vec<(&str, std::path::PathBuf)> = disks
            .iter()
            .map(|(serial, mib)| {
                let path = dir.path().join(format!("{serial}.raw"));
                std::fs::File::create(&path)
                    .and_then(|f| f.set_len(mib << 20))
                    .unwrap_or_else(|e| panic!("cannot make {}: {e}", path.display()));
                (*serial, path)
            })
            .collect();
        let extra: Vec<(&str, &std::path::Path)> =
            extra.iter().map(|(s, p)| (*s, p.as_path())).collect();
        let mut vm = Vm::boot_with_disks("source", image, &disk, &extra, true);
        let port = vm.port.expect("a source VM has the forwarded port");

        vm.write_file("/root/mysql-snapshot.deb", &deb);
        vm.must("dpkg -i /root/mysql-snapshot.deb >/dev/null && rm /root/mysql-snapshot.deb");
        if !settings.trim().is_empty() {
            // The package's file is all comments; a [mysql-snapshot] group at its end applies.
            let config = vm.must("cat /etc/mysql-snapshot.cnf");
            vm.write_file(
                "/etc/mysql-snapshot.cnf",
                format!("{config}\n[mysql-snapshot]\n{settings}\n").as_bytes(),
            );
        }
        if hook == AgentHook::Package {
            configure_agent_hook(&mut vm);
        }
        wait_for_mariadb(&mut vm, Duration::from_secs(120));
        prepare(&mut vm);
        vm.must(&format!(
            "mariadb -e \"CREATE USER '{TEST_USER}'@'%' IDENTIFIED BY '{TEST_PASSWORD}'; \
             GRANT ALL ON *.* TO '{TEST_USER}'@'%'\""
        ));
        let mut conn = connect(port).unwrap_or_else(|e| panic!("the forwarded port: {e}"));
        conn.query_drop(schema()).expect("create the load's tables");
        let load = WriteLoad::start_with(move || connect(port).expect("a writer connection"));
        assert!(
            load.makes_progress(100, Duration::from_secs(60)),
            "the load does not write through the forwarded port: {:?}",
            load.errors()
        );
        eprintln!(
            "vm source: ready in {:.1} s (hook {hook:?}, settings {settings:?})",
            started.elapsed().as_secs_f64()
        );
        SourceGuest {
            load,
            vm,
            dir,
            image,
            port,
            _slot: slot,
        }
    }

    /// Stops the load and the VM, keeping the copies made of it (and the VM slot, so that the
    /// copies can boot next, one at a time).
    pub fn into_copies(self) -> Copies {
        let SourceGuest {
            mut load,
            vm,
            dir,
            image,
            _slot,
            ..
        } = self;
        let report = load.stop();
        drop(vm);
        eprintln!(
            "vm source: stopped after {} writes ({} errors)",
            report.writes,
            report.errors.len()
        );
        Copies { dir, image, _slot }
    }

    /// A new connection to the guest's MariaDB as the test account (never the tool's).
    pub fn conn(&self) -> Conn {
        connect(self.port).unwrap_or_else(|e| panic!("the forwarded port: {e}"))
    }

    /// True if a write is blocked right now (it fails at once instead of queueing).
    pub fn writes_blocked(&self) -> bool {
        let mut conn = self.conn();
        conn.query_drop("SET SESSION lock_wait_timeout = 0")
            .unwrap();
        match conn.query_drop("INSERT INTO snap.inno (v) VALUES (0)") {
            Ok(()) => false,
            Err(mysql::Error::MySqlError(e)) if e.code == 1205 => true,
            Err(e) => panic!("unexpected error from the write probe: {e}"),
        }
    }

    /// Asserts what must hold after every snapshot, taken or refused: writes go through, no
    /// locker process is left, and `thaw --status` exits `status_code`.
    pub fn assert_nothing_left(&mut self, status_code: i64) {
        assert!(
            self.load.makes_progress(50, Duration::from_secs(60)),
            "writes do not resume: {:?}",
            self.load.errors()
        );
        assert!(
            wait_until(Duration::from_secs(20), || !self.writes_blocked()),
            "writes are still blocked: a lock is left behind"
        );
        let lockers = self.lockers();
        assert!(lockers.is_empty(), "lockers left in the guest: {lockers}");
        let status = self
            .vm
            .sh("mysql-snapshot-thaw --status", Duration::from_secs(30));
        assert_eq!(
            status.code,
            Some(status_code),
            "mysql-snapshot-thaw --status in the guest: {status}"
        );
    }

    /// PIDs of locker processes in the guest, space-separated (empty: none).
    pub fn lockers(&mut self) -> String {
        self.vm
            .must(&format!(
                "for p in /proc/[0-9]*; do [ \"$(readlink $p/exe 2>/dev/null)\" = {LOCKER} ] && \
                 echo ${{p#/proc/}}; done; true"
            ))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The guest's state file.
    pub fn state(&mut self) -> Value {
        let text = self.vm.must(&format!("cat {STATE_FILE}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("the state file ({e}): {text}"))
    }

    /// A cursor to read the journal from: what is logged after this call.
    pub fn journal_cursor(&mut self) -> String {
        let out = self.vm.must("journalctl -n 0 --show-cursor --no-pager");
        out.lines()
            .find_map(|l| l.strip_prefix("-- cursor: "))
            .unwrap_or_else(|| panic!("no cursor from journalctl: {out}"))
            .trim()
            .to_string()
    }

    /// Journal entries of the tool and of qemu-ga after `cursor`, as JSON objects in order,
    /// once one of the tool's lines contains `until` (within 30 s: journald may still be
    /// catching up on what piled up while the filesystems were frozen).
    pub fn journal_after(&mut self, cursor: &str, until: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let seen = wait_until(Duration::from_secs(30), || {
            let out = self.vm.must(&format!(
                "journalctl --no-pager -o json --after-cursor='{cursor}' -t mysql-snapshot -t qemu-ga"
            ));
            entries = out
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect();
            entries.iter().any(|e| message(e).contains(until))
        });
        assert!(
            seen,
            "no journal line with `{until}` after the cursor; the lines:\n{}",
            entries.iter().map(message).collect::<Vec<_>>().join("\n")
        );
        entries
    }
}

/// When the release came, counted from qemu-ga's journal line that starts the thaw hook (guest
/// clock, milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct ThawTiming {
    /// To thaw's request in the state file (set just before it signals the locker).
    pub to_request: f64,
    /// To the locker's release in the state file.
    pub to_release: f64,
}

impl SourceGuest {
    /// The longest write the host's writers saw since `take_longest` was last called, minus the
    /// time from the freeze request to the thaw's answer, in ms (negative: every stall fitted in
    /// the window the hypervisor kept the guest frozen).
    pub fn stall_beyond(&self, taken: &Taken) -> f64 {
        let longest = self.load.take_longest();
        let stall = longest.as_secs_f64() * 1000.0 - taken.frozen_for.as_secs_f64() * 1000.0;
        eprintln!(
            "writer stall: longest write {longest:?}, freeze request to thaw answer {:?}, beyond it {stall:+.0} ms",
            taken.frozen_for
        );
        stall
    }

    /// `ThawTiming` of the last thaw after `cursor` (the thaw must have released a held lock).
    pub fn thaw_timing(&mut self, cursor: &str) -> ThawTiming {
        let entries = self.journal_after(cursor, "event=thawed");
        let hook = entries
            .iter()
            .rfind(|e| message(e).contains("executing fsfreeze hook with arg 'thaw'"))
            .unwrap_or_else(|| panic!("qemu-ga did not log the thaw hook: {entries:#?}"));
        let hook_ms = sent_ms(hook).expect("a journal entry has __REALTIME_TIMESTAMP");
        let state = self.state();
        let at = |key: &str| {
            state[key]
                .as_f64()
                .unwrap_or_else(|| panic!("the state file has no {key}: {state}"))
        };
        let timing = ThawTiming {
            to_request: at("thaw_requested_at_ms") - hook_ms,
            to_release: at("released_at_ms") - hook_ms,
        };
        eprintln!(
            "thaw: {:.0} ms from qemu-ga starting the hook to thaw's request, {:.0} ms to the release",
            timing.to_request, timing.to_release
        );
        timing
    }
}

/// What is left of a source guest once it has stopped: the copies made of it, to be judged.
pub struct Copies {
    pub dir: TempDir,
    pub image: &'static GuestImage,
    _slot: Slot,
}

/// The text of a journal entry.
pub fn message(entry: &Value) -> String {
    match &entry["MESSAGE"] {
        Value::String(text) => text.clone(),
        // journald gives non-UTF-8 messages as byte arrays.
        Value::Array(bytes) => bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .map(char::from)
            .collect(),
        _ => String::new(),
    }
}

/// When an entry was sent, in milliseconds since the epoch (guest clock): the kernel's arrival
/// time of its syslog datagram (`_SOURCE_REALTIME_TIMESTAMP`), not when journald got round to it
/// (`__REALTIME_TIMESTAMP`, the fallback), which can be late right after a thaw.
pub fn sent_ms(entry: &Value) -> Option<f64> {
    ["_SOURCE_REALTIME_TIMESTAMP", "__REALTIME_TIMESTAMP"]
        .iter()
        .find_map(|key| entry[key].as_str()?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
}

/// Writes README's qemu-ga configuration and restarts the agent the way an admin would
/// (`systemctl restart qemu-guest-agent`, from a transient timer so that the restart does not kill
/// the command that asked for it), then checks that a new agent runs with the hook.
fn configure_agent_hook(vm: &mut Vm) {
    vm.write_file("/etc/qemu/qemu-ga.conf", QEMU_GA_CONF.as_bytes());
    let main_pid = "systemctl show -p MainPID --value qemu-guest-agent";
    let old = vm.must(main_pid).trim().to_string();
    vm.must("systemd-run --quiet --on-active=1 systemctl restart qemu-guest-agent");
    // Short steps: a request that reaches the old agent as it goes, or no agent at all, is never
    // answered, and must cost seconds, not the whole wait.
    let mut seen = String::from("nothing yet");
    let restarted = wait_until(Duration::from_secs(90), || {
        if let Err(e) = vm.agent.sync(Duration::from_secs(3)) {
            seen = e;
            return false;
        }
        // The old agent may still answer, or go away in the middle of this command.
        match vm.try_exec(&["/bin/sh", "-c", main_pid], Duration::from_secs(3)) {
            Ok(now) => {
                seen = format!("MainPID `{}`", now.stdout.trim());
                now.success() && !["", "0", old.as_str()].contains(&now.stdout.trim())
            }
            Err(e) => {
                seen = e;
                false
            }
        }
    });
    assert!(
        restarted,
        "qemu-ga did not come back after its restart (old PID {old}; last seen: {seen})\n\
         console:\n{}",
        vm.console()
    );
    let effective = vm.must("qemu-ga -D");
    assert!(
        effective.contains("fsfreeze-hook=/usr/sbin/mysql-snapshot-qemu-hook"),
        "qemu-ga -D does not show the package's hook: {effective}"
    );
}

/// Waits until the guest's MariaDB answers on its socket.
pub fn wait_for_mariadb(vm: &mut Vm, limit: Duration) {
    let up = wait_until(limit, || {
        vm.sh("mariadb -N -e 'SELECT 1'", Duration::from_secs(30))
            .success()
    });
    if !up {
        let log = vm.sh(
            "journalctl -u mariadb --no-pager | tail -30",
            Duration::from_secs(30),
        );
        panic!(
            "{}: MariaDB did not answer within {limit:?}:\n{log}\nconsole:\n{}",
            vm.name,
            vm.console()
        );
    }
}

/// A connection to the guest's MariaDB through the forwarded port.
fn connect(port: u16) -> Result<Conn, String> {
    let opts = OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some(TEST_USER))
        .pass(Some(TEST_PASSWORD))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(10)))
        .read_timeout(Some(Duration::from_secs(120)));
    Conn::new(opts).map_err(|e| e.to_string())
}
