//! One QEMU virtual machine of a test: booted directly from the guest image's kernel on a disk the
//! test owns, with the guest agent on a host socket, QMP on another, and — for a source VM — a
//! user-mode NIC that only forwards one loopback port to the guest's MariaDB.
//!
//! A `Vm` is stopped by its own PID when dropped (panics included), which also ends any freeze of
//! its filesystems; it never gets a NIC other than `user,restrict=on` with a loopback forward.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64_lite::{decode, encode};
use serde_json::{json, Value};

use super::channel::Channel;
use super::image::GuestImage;
use crate::loopfs::tail;
use crate::TempDir;

/// How long a boot may take until the agent answers (about 15 s under TCG here).
const BOOT_LIMIT: Duration = Duration::from_secs(180);
/// The accelerator unless `MYSQL_SNAPSHOT_VM_ACCEL` names another (`kvm` where it works).
const DEFAULT_ACCEL: &str = "tcg,thread=multi";
/// Bytes per `guest-file-write` (before base64).
const FILE_CHUNK: usize = 48 * 1024;

/// What a command run in the guest did.
#[derive(Debug)]
pub struct Exec {
    pub code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A running VM; stopped (SIGKILL by PID) on drop.
pub struct Vm {
    child: Child,
    pub agent: Channel,
    pub qmp: Channel,
    /// The host port forwarded to the guest's 3306 (`None`: the VM has no NIC).
    pub port: Option<u16>,
    /// The disk the VM runs on (the caller's file).
    pub disk: PathBuf,
    /// Sockets, QEMU's stderr and the serial console.
    dir: TempDir,
    pub name: String,
}

impl Vm {
    /// Boots `image`'s kernel on `disk` (a qcow2 the caller owns: an overlay of the image, or a
    /// copy) and waits until the guest agent answers. `network` gives it the loopback forward.
    pub fn boot(name: &str, image: &GuestImage, disk: &Path, network: bool) -> Vm {
        Vm::boot_with_disks(name, image, disk, &[], network)
    }

    /// `boot`, with `extra` disks after the root one: raw files the caller owns, each a
    /// virtio-blk device whose serial is its `(serial, path)` pair's first half (in the guest,
    /// `/dev/disk/by-id/virtio-SERIAL`).
    pub fn boot_with_disks(
        name: &str,
        image: &GuestImage,
        disk: &Path,
        extra: &[(&str, &Path)],
        network: bool,
    ) -> Vm {
        let dir = TempDir::new(&format!("vm-{name}"));
        let qga = dir.path().join("qga.sock");
        let qmp = dir.path().join("qmp.sock");
        let accel = std::env::var("MYSQL_SNAPSHOT_VM_ACCEL").unwrap_or(DEFAULT_ACCEL.into());
        // setpriv execs QEMU (same PID) with a parent-death signal: a test process killed
        // outright (CI's time limit, SIGKILL) takes its VMs with it instead of leaving them
        // spinning. The signal follows the thread that started the VM, which owns the `Vm`.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--", "qemu-system-x86_64"])
            .args(["-accel", &accel, "-m", "1536", "-smp", "2", "-nodefaults"])
            .args(["-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=d0,format=qcow2,cache=none,aio=threads",
                disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=d0"]);
        for (i, (serial, path)) in extra.iter().enumerate() {
            let id = format!("x{i}");
            command
                .arg("-drive")
                .arg(format!(
                    "file={},if=none,id={id},format=raw,cache=none,aio=threads",
                    path.display()
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive={id},serial={serial}"));
        }
        command
            .args(["-device", "virtio-serial"])
            .arg("-chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qga0",
                qga.display()
            ))
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("serial.log").display()));
        let port = network.then(free_loopback_port);
        if let Some(port) = port {
            // restrict=on: the guest reaches nothing but what is forwarded to it.
            command
                .arg("-netdev")
                .arg(format!(
                    "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:3306"
                ))
                .args(["-device", "virtio-net-pci,netdev=n0,romfile="]);
        }
        let stderr = File::create(dir.path().join("qemu.stderr")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start setpriv … qemu-system-x86_64: {e}"));
        let started = Instant::now();
        // Until both channels answer, a failure stops this QEMU before it is reported.
        let mut child = child;
        let mut fail = |what: String, log: &str| -> ! {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name}: {what}\n{log} (tail):\n{}",
                tail(&dir.path().join(log), 4000)
            );
        };
        let qmp = Channel::qmp(&qmp, Duration::from_secs(30))
            .unwrap_or_else(|e| fail(format!("QEMU did not come up: {e}"), "qemu.stderr"));
        let agent = Channel::agent(&qga, BOOT_LIMIT).unwrap_or_else(|e| {
            fail(
                format!("the guest agent did not answer within {BOOT_LIMIT:?}: {e}"),
                "serial.log",
            )
        });
        eprintln!(
            "vm {name}: booted in {:.1} s (accel {accel})",
            started.elapsed().as_secs_f64()
        );
        Vm {
            child,
            agent,
            qmp,
            port,
            disk: disk.to_path_buf(),
            dir,
            name: name.to_string(),
        }
    }

    /// Runs `argv` in the guest through the agent and waits up to `limit` for it to end.
    pub fn exec(&mut self, argv: &[&str], limit: Duration) -> Exec {
        self.try_exec(argv, limit)
            .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", self.name))
    }

    /// `exec`, with the agent's refusals (it may be restarting, or the guest frozen) as errors.
    /// No request waits longer than `limit` for its answer (one sent to an agent that is going
    /// away gets none).
    pub fn try_exec(&mut self, argv: &[&str], limit: Duration) -> Result<Exec, String> {
        let answer_limit = limit.min(Duration::from_secs(30));
        let pid = self.try_spawn(argv, answer_limit)?;
        let end = Instant::now() + limit;
        loop {
            if let Some(done) = self.try_exited(&pid, answer_limit)? {
                return Ok(done);
            }
            if Instant::now() >= end {
                return Err(format!("did not end within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `argv` in the guest through the agent without waiting for it: its guest PID, for
    /// `exited`. The agent answers other requests meanwhile.
    pub fn spawn(&mut self, argv: &[&str]) -> Value {
        self.try_spawn(argv, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", self.name))
    }

    /// What a command started by `spawn` did, or `None` while it runs.
    pub fn exited(&mut self, pid: &Value) -> Option<Exec> {
        self.try_exited(pid, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: guest PID {pid}: {e}", self.name))
    }

    fn try_spawn(&mut self, argv: &[&str], answer_limit: Duration) -> Result<Value, String> {
        let (path, args) = argv.split_first().expect("a program to run");
        let started = self
            .agent
            .execute(
                "guest-exec",
                Some(json!({"path": path, "arg": args, "capture-output": true})),
                answer_limit,
            )
            .map_err(|e| format!("guest-exec: {e}"))?;
        Ok(started["pid"].clone())
    }

    fn try_exited(&mut self, pid: &Value, answer_limit: Duration) -> Result<Option<Exec>, String> {
        let status = self
            .agent
            .execute(
                "guest-exec-status",
                Some(json!({ "pid": pid })),
                answer_limit,
            )
            .map_err(|e| format!("guest-exec-status: {e}"))?;
        Ok((status["exited"] == json!(true)).then(|| Exec {
            code: status["exitcode"].as_i64(),
            stdout: output_of(&status, "out-data"),
            stderr: output_of(&status, "err-data"),
        }))
    }

    /// `sh -c script` in the guest.
    pub fn sh(&mut self, script: &str, limit: Duration) -> Exec {
        self.exec(&["/bin/sh", "-c", script], limit)
    }

    /// `sh -c script`, which must succeed; its stdout.
    pub fn must(&mut self, script: &str) -> String {
        let out = self.sh(script, Duration::from_secs(120));
        assert!(out.success(), "{}: `{script}` failed: {out}", self.name);
        out.stdout
    }

    /// Writes `bytes` to `path` in the guest (created or truncated; an existing file keeps its
    /// mode), through `guest-file-open`/`-write`/`-close`.
    pub fn write_file(&mut self, path: &str, bytes: &[u8]) {
        let limit = Duration::from_secs(30);
        let handle = self
            .agent
            .execute(
                "guest-file-open",
                Some(json!({"path": path, "mode": "w"})),
                limit,
            )
            .unwrap_or_else(|e| panic!("{}: guest-file-open {path}: {e}", self.name));
        for chunk in bytes.chunks(FILE_CHUNK) {
            let written = self.agent.execute(
                "guest-file-write",
                Some(json!({"handle": handle, "buf-b64": encode(chunk)})),
                limit,
            );
            assert!(
                written.is_ok(),
                "{}: guest-file-write {path}: {written:?}",
                self.name
            );
        }
        let closed =
            self.agent
                .execute("guest-file-close", Some(json!({ "handle": handle })), limit);
        assert!(
            closed.is_ok(),
            "{}: guest-file-close {path}: {closed:?}",
            self.name
        );
    }

    /// A guest-agent command, which must succeed.
    pub fn agent_must(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        limit: Duration,
    ) -> Value {
        self.agent
            .execute(command, arguments, limit)
            .unwrap_or_else(|e| panic!("{}: {command}: {e}", self.name))
    }

    /// The end of the serial console, for failure messages.
    pub fn console(&self) -> String {
        tail(&self.dir.path().join("serial.log"), 3000)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Our own child, not yet reaped: its PID cannot belong to anyone else.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output_of(status: &Value, key: &str) -> String {
    status[key]
        .as_str()
        .map(|b64| String::from_utf8_lossy(&decode(b64)).into_owned())
        .unwrap_or_default()
}

/// A loopback port nothing listens on right now (VMs run one at a time, so it stays free until
/// QEMU binds it a moment later).
fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The run's one VM slot: VMs of different tests never run at the same time (two TCG guests on
/// two cores would each take twice as long, and their timings would mean nothing). Held for a
/// whole scenario, across test binaries.
pub struct Slot(#[allow(dead_code)] File);

impl Slot {
    pub fn take() -> Slot {
        let path = std::env::temp_dir().join("mss-vm-slot.lock");
        let file = File::create(&path).expect("create the VM slot lock");
        file.lock().expect("lock the VM slot");
        Slot(file)
    }
}

/// Makes a qcow2 overlay of `base` at `path` (the image stays untouched).
pub fn overlay(base: &Path, path: &Path) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        base.to_str().expect("a UTF-8 path"),
        path.to_str().expect("a UTF-8 path"),
    ]);
}

/// Runs qemu-img, which must succeed.
pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Base64 without a dependency: the agent's file and output transfers need nothing more.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() / 4 * 3);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in text.bytes() {
            let Some(value) = ALPHABET.iter().position(|a| *a == c) else {
                continue; // padding, line breaks
            };
            acc = acc << 6 | value as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn base64_round_trips_every_length_and_matches_the_standard_alphabet() {
            assert_eq!(super::encode(b"Man"), "TWFu");
            assert_eq!(super::encode(b"Ma"), "TWE=");
            assert_eq!(super::encode(b"M"), "TQ==");
            for len in 0..70u8 {
                let bytes: Vec<u8> = (0..len).map(|b| b.wrapping_mul(37)).collect();
                assert_eq!(super::decode(&super::encode(&bytes)), bytes);
            }
        }
    }
}
