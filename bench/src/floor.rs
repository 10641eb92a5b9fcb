//! The runner's side of the floor program (`mysql-snapshot-bench-floor`): start it, time it from
//! invocation to its `locked` line, and tell it when to release.
//!
//! The floor is measured right next to each product run, on the same server and in the same
//! conditions; nothing here waits without a bound except on the floor's own pipe.
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::flavour::{Flavour, Mode, Target};
use crate::kernel;

/// The floor holding its lock.
pub(crate) struct Floor {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Invocation → `locked` read by the runner.
    pub(crate) locked_after: Duration,
    /// When the runner read `locked`.
    pub(crate) locked_at: Instant,
    /// The floor's own split: connect, pre-flush, lock statements, status read (µs).
    pub(crate) phases: [u64; 4],
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Floor {
    /// Starts the floor and waits for it to hold the lock.
    pub(crate) fn lock(
        bin_dir: &Path,
        target: &dyn Target,
        flavour: Flavour,
        mode: Mode,
        extra: &[&str],
    ) -> Result<Floor, String> {
        let mut command = Command::new(bin_dir.join("mysql-snapshot-bench-floor"));
        command
            .arg("--socket")
            .arg(target.socket())
            .args(["--mode", mode.name(), "--flavour", flavour.floor_name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command.args(extra);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("start the floor: {e}"))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("floor stdout")?);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let locked_at = Instant::now();
        if !line.starts_with("locked") {
            drop(stdin);
            let _ = kernel::wait(child.id());
            return Err(format!("the floor did not lock: {}", line.trim()));
        }
        Ok(Floor {
            child,
            stdin,
            stdout,
            locked_after: locked_at - started,
            locked_at,
            phases: [
                field(&line, "connect_us"),
                field(&line, "preflush_us"),
                field(&line, "lock_us"),
                field(&line, "status_us"),
            ],
        })
    }

    /// Tells the floor to release; returns when the request is written.
    pub(crate) fn ask_release(&mut self) -> Instant {
        let at = Instant::now();
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"release\n");
        }
        at
    }

    /// Releases (if not asked yet), waits until released and the floor has exited.
    pub(crate) fn release(mut self) -> Result<(), String> {
        self.ask_release();
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        let usage =
            kernel::wait(self.child.id()).map_err(|e| format!("wait for the floor: {e}"))?;
        if !line.starts_with("released") || usage.code != Some(0) {
            return Err(format!(
                "the floor did not release cleanly: {}",
                line.trim()
            ));
        }
        Ok(())
    }
}
