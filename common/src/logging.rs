//! Logging to syslog (ident `mysql-snapshot`), to stderr, and to an optional append-only file.
//!
//! A logging failure never blocks or fails the work: the syslog socket is non-blocking and a
//! missing socket is skipped; the log file is opened O_APPEND for each line and errors are
//! ignored. The locker turns the file off while it holds the lock (the filesystem may be frozen)
//! and keeps those lines to write after the release. Callers never pass a password to a log line.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Formatter3164, LoggerBackend};

use crate::config::Config;

/// The syslog ident of every binary.
pub const IDENT: &str = "mysql-snapshot";

struct Sink {
    program: &'static str,
    to_stderr: bool,
    syslog: Mutex<Option<syslog::Logger<LoggerBackend, Formatter3164>>>,
    file: Option<PathBuf>,
    file_enabled: AtomicBool,
    deferred: Mutex<Vec<String>>,
}

static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// Installs the logger for `program` (`freeze`, `thaw`, `locker`).
pub fn init(program: &'static str, config: &Config, to_stderr: bool) {
    let formatter = Formatter3164 {
        facility: config.syslog_facility,
        hostname: None,
        process: IDENT.into(),
        pid: std::process::id(),
    };
    let syslog = syslog::unix_custom(formatter, &config.syslog_socket)
        .ok()
        .inspect(|logger| {
            if let LoggerBackend::Unix(socket) = &logger.backend {
                let _ = socket.set_nonblocking(true);
            }
        })
        .filter(|logger| matches!(logger.backend, LoggerBackend::Unix(_)));
    install(Sink {
        program,
        to_stderr,
        syslog: Mutex::new(syslog),
        file: config.log_file.clone(),
        file_enabled: AtomicBool::new(true),
        deferred: Mutex::new(Vec::new()),
    });
}

/// Installs a stderr-only logger, for errors before the configuration is read.
pub fn init_stderr(program: &'static str) {
    install(Sink {
        program,
        to_stderr: true,
        syslog: Mutex::new(None),
        file: None,
        file_enabled: AtomicBool::new(false),
        deferred: Mutex::new(Vec::new()),
    });
}

/// Makes `sink` the process's logger; the first one installed stays.
fn install(sink: Sink) {
    if SINK.set(sink).is_ok() {
        if let Some(sink) = SINK.get() {
            let _ = log::set_logger(sink);
            log::set_max_level(LevelFilter::Info);
        }
    }
}

/// Stops writing the log file (lines are kept in memory) until the returned guard is dropped,
/// which writes the kept lines and writes new lines directly again. One deferral at a time: the
/// locker holds the guard from just after the lock is taken until just after its release.
pub fn defer_file() -> DeferredFile {
    if let Some(sink) = SINK.get() {
        sink.file_enabled.store(false, Ordering::SeqCst);
    }
    DeferredFile { _private: () }
}

/// The log file is deferred while this lives (see `defer_file`); dropping it resumes the file.
#[must_use = "dropping the guard resumes the log file at once"]
pub struct DeferredFile {
    _private: (),
}

impl Drop for DeferredFile {
    fn drop(&mut self) {
        resume_file();
    }
}

/// Writes the kept lines to the log file and writes new lines directly again.
fn resume_file() {
    if let Some(sink) = SINK.get() {
        sink.file_enabled.store(true, Ordering::SeqCst);
        let lines = std::mem::take(&mut *sink.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        for line in lines {
            sink.append(&line);
        }
    }
}

impl Sink {
    fn append(&self, line: &str) {
        let Some(path) = &self.file else { return };
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        if let Ok(mut file) = file {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

impl Log for Sink {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = format!("{}: {}", self.program, record.args());
        if self.to_stderr {
            let _ = writeln!(std::io::stderr(), "mysql-snapshot-{message}");
        }
        if let Ok(mut guard) = self.syslog.lock() {
            if let Some(logger) = guard.as_mut() {
                let _ = match record.level() {
                    Level::Error => logger.err(&message),
                    Level::Warn => logger.warning(&message),
                    Level::Info => logger.info(&message),
                    _ => logger.debug(&message),
                };
            }
        }
        if self.file.is_some() {
            let line = format!(
                "{} {IDENT}[{}]: {message}\n",
                crate::time::now_rfc3339(),
                std::process::id()
            );
            if self.file_enabled.load(Ordering::SeqCst) {
                self.append(&line);
            } else if let Ok(mut kept) = self.deferred.lock() {
                kept.push(line);
            }
        }
    }

    fn flush(&self) {}
}
