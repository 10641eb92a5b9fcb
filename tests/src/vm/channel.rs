//! The two JSON-line conversations a hypervisor holds with a VM: QMP (with QEMU itself, on the
//! host) and the guest agent's protocol (with qemu-ga inside the guest, over a virtio port).
//!
//! Both sockets serve one client at a time and the agent's may still hold answers meant for an
//! earlier client, so a conversation with the agent starts with `guest-sync-delimited` and skips
//! everything up to its own answer. Nothing here decides what to freeze: callers do.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::wait_until;

/// One client's connection to a QMP or guest-agent socket.
pub struct Channel {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// Asynchronous QMP events read while waiting for an answer, oldest first.
    events: VecDeque<Value>,
    what: &'static str,
    next_id: u64,
}

impl Channel {
    /// Connects to QEMU's QMP socket and leaves capabilities negotiation done.
    pub fn qmp(socket: &Path, limit: Duration) -> Result<Channel, String> {
        let mut channel = Channel::connect(socket, "QMP", limit)?;
        let greeting = channel.read_line(limit)?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QMP greeted with {greeting}"));
        }
        channel.execute("qmp_capabilities", None, limit)?;
        Ok(channel)
    }

    /// Connects to the guest agent's socket and synchronises with it: `guest-sync-delimited`
    /// answered within `limit` (the agent may not be up yet: it starts during the guest's boot).
    pub fn agent(socket: &Path, limit: Duration) -> Result<Channel, String> {
        let mut channel = Channel::connect(socket, "qemu-ga", limit)?;
        channel.sync(limit)?;
        Ok(channel)
    }

    fn connect(socket: &Path, what: &'static str, limit: Duration) -> Result<Channel, String> {
        let mut stream = None;
        wait_until(limit, || {
            stream = UnixStream::connect(socket).ok();
            stream.is_some()
        });
        let stream =
            stream.ok_or_else(|| format!("{what}: nothing listens on {}", socket.display()))?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Channel {
            writer,
            reader: BufReader::new(stream),
            events: VecDeque::new(),
            what,
            // Distinct per channel: an answer left over from an earlier client never matches.
            next_id: u64::from(std::process::id()) << 20 | u64::from(rand_u16()) << 4,
        })
    }

    /// `guest-sync-delimited`: a 0xff resets the agent's parser, and the answer with our id marks
    /// where this conversation starts. Retries until `limit`, as the agent may still be starting.
    pub fn sync(&mut self, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        loop {
            self.next_id += 1;
            let id = self.next_id;
            let attempt = self.write_all(&[0xff]).and_then(|()| {
                self.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))
            });
            let step = Duration::from_secs(3).min(end.saturating_duration_since(Instant::now()));
            if attempt.is_ok() {
                let answer_end = Instant::now() + step;
                while Instant::now() < answer_end {
                    match self.read_line(answer_end.saturating_duration_since(Instant::now())) {
                        Ok(answer) if answer.get("return") == Some(&json!(id)) => return Ok(()),
                        Ok(_) => {} // an answer meant for an earlier client
                        Err(_) => break,
                    }
                }
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{}: no answer to guest-sync-delimited within {limit:?}",
                    self.what
                ));
            }
            if attempt.is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Sends one command and returns its `return` value, or the `desc` of its `error`. Events that
    /// arrive meanwhile are kept for `wait_event`.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        limit: Duration,
    ) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        self.send(&request)
            .map_err(|e| format!("{}: cannot send {command}: {e}", self.what))?;
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let answer = self
                .read_line(left)
                .map_err(|e| format!("{}: no answer to {command}: {e}", self.what))?;
            if answer.get("event").is_some() {
                self.events.push_back(answer);
                continue;
            }
            return match (answer.get("return"), answer.get("error")) {
                (Some(value), _) => Ok(value.clone()),
                (None, Some(error)) => Err(error["desc"].as_str().unwrap_or("").to_string()),
                _ => Err(format!("{}: answered {command} with {answer}", self.what)),
            };
        }
    }

    /// Waits for the QMP event `name` (one already read counts) and returns it.
    pub fn wait_event(&mut self, name: &str, limit: Duration) -> Result<Value, String> {
        if let Some(at) = self.events.iter().position(|e| e["event"] == name) {
            return Ok(self.events.remove(at).expect("the position exists"));
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .read_line(left)
                .map_err(|e| format!("{}: no {name} event: {e}", self.what))?;
            if line["event"] == name {
                return Ok(line);
            }
            if line.get("event").is_some() {
                self.events.push_back(line);
            }
        }
    }

    fn send(&mut self, request: &Value) -> Result<(), String> {
        self.write_all(format!("{request}\n").as_bytes())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer.write_all(bytes).map_err(|e| e.to_string())
    }

    /// The next JSON line (0xff delimiters and blank lines skipped), within `limit`.
    fn read_line(&mut self, limit: Duration) -> Result<Value, String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out after {limit:?}"));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            match self.reader.read_until(b'\n', &mut bytes) {
                Ok(0) => return Err("the socket was closed".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            bytes.retain(|b| *b != 0xff);
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            return serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"));
        }
    }
}

/// A little entropy for sync ids, without a dependency.
fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}
