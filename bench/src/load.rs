//! A continuous write load: writer threads, each on its own connection, doing autocommit INSERTs
//! into an InnoDB table and recording when every statement started and ended, so the longest
//! stall in any window can be read afterwards.
//!
//! Writers never stop on their own (an error is counted and the loop goes on) and always stop when
//! the load is dropped; they only ever write to the benchmark's tables on a private server.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::flavour::Target;

#[derive(Default)]
struct Log {
    done: Vec<(Instant, Instant)>,
    current: Option<Instant>,
}

/// Running writers.
pub(crate) struct WriteLoad {
    stop: Arc<AtomicBool>,
    logs: Vec<Arc<Mutex<Log>>>,
    threads: Vec<JoinHandle<()>>,
    pub(crate) errors: Arc<AtomicU64>,
}

impl WriteLoad {
    /// Starts `writers` threads inserting into `table` (an InnoDB table with an auto-increment id
    /// and an int column `v`).
    pub(crate) fn start(target: &dyn Target, writers: usize, table: &str) -> WriteLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut logs = Vec::new();
        let mut threads = Vec::new();
        let statement = format!("INSERT INTO {table} (v) VALUES (1)");
        for _ in 0..writers {
            let mut conn = target.conn();
            // Bounded, so that a lock left behind by mistake cannot hang the benchmark forever.
            let _ = conn.query_drop("SET SESSION lock_wait_timeout = 60");
            let log = Arc::new(Mutex::new(Log::default()));
            let (stop, errors, log2, statement) =
                (stop.clone(), errors.clone(), log.clone(), statement.clone());
            logs.push(log);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    if let Ok(mut log) = log2.lock() {
                        log.current = Some(start);
                    }
                    if conn.query_drop(&statement).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let end = Instant::now();
                    if let Ok(mut log) = log2.lock() {
                        log.current = None;
                        log.done.push((start, end));
                    }
                }
            }));
        }
        WriteLoad {
            stop,
            logs,
            threads,
            errors,
        }
    }

    /// The longest single statement (finished, or still running now) that overlaps `[from, to]`.
    pub(crate) fn longest_stall(&self, from: Instant, to: Instant) -> Duration {
        let now = Instant::now();
        let mut longest = Duration::ZERO;
        for log in &self.logs {
            let Ok(log) = log.lock() else { continue };
            if let Some(start) = log.current.filter(|start| *start <= to) {
                longest = longest.max(now - start);
            }
            // Each writer's statements end in order: stop at the first that ended before `from`.
            for (start, end) in log.done.iter().rev() {
                if *end < from {
                    break;
                }
                if *start <= to {
                    longest = longest.max(*end - *start);
                }
            }
        }
        longest
    }

    /// Drops what was recorded before `before` (keeps memory flat over long phases).
    pub(crate) fn forget_before(&self, before: Instant) {
        for log in &self.logs {
            if let Ok(mut log) = log.lock() {
                log.done.retain(|(_, end)| *end >= before);
            }
        }
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
