//! A small mutation fuzzer for the hostile-input tests: seeds from a corpus in the repo, byte-level
//! and dictionary mutations from a seeded PRNG, a time budget, and a watchdog that fails the test
//! (naming the input) when one input runs too long. It never writes outside `target/`.
//!
//! `FUZZ_SECONDS` sets the budget per target (default 3, for CI); `FUZZ_SEED` the seed (default
//! fixed, so a CI failure reproduces). A failing input is saved under `target/fuzz-failures/`;
//! copy it into the corpus once the bug is fixed. `soak/fuzz.sh` runs the targets for longer.
#![allow(dead_code)]

pub(crate) mod state;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that tend to matter to parsers.
const INTERESTING: &[u8] = &[
    0, b'\n', b'\r', b'\t', b' ', b'"', b'\'', b'\\', b'#', b';', b'=', b'[', b']', b'!', b'{',
    b'}', b',', b':', b'-', b'0', b'9', 0x7F, 0x80, 0xA0, 0xC3, 0xEF, 0xFF,
];

/// Applies 1–8 random mutations to `input`, using `dictionary` tokens and `others` for splices.
pub(crate) fn mutate(
    rng: &mut Rng,
    input: &[u8],
    dictionary: &[&[u8]],
    others: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(9) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = *rng.pick(INTERESTING);
            }
            2 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                let start = at.min(end);
                out.drain(start..end);
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(64)).min(out.len());
                let piece = out[start..end].to_vec();
                let times = 1 + rng.below(4);
                for _ in 0..times {
                    let at = rng.below(out.len() + 1);
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 | 6 if !dictionary.is_empty() => {
                let token = rng.pick(dictionary).to_vec();
                out.splice(at..at, token);
            }
            7 if !others.is_empty() => {
                let other = rng.pick(others);
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(256)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            _ => {
                // Replace a digit run with an extreme number.
                let numbers: [&[u8]; 6] = [
                    b"0",
                    b"-1",
                    b"18446744073709551615",
                    b"18446744073709551616",
                    b"4294967295",
                    b"1e308",
                ];
                let token = rng.pick(&numbers).to_vec();
                out.splice(at..at, token);
            }
        }
    }
    out.truncate(1 << 16);
    out
}

/// The files of a corpus directory (not recursive), sorted by name.
pub(crate) fn corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read corpus file"))
        .collect()
}

pub(crate) fn budget() -> Duration {
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

pub(crate) fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005E_ED0F_F022)
}

/// Where failing inputs are saved.
fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures")
}

fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = failures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{target}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Peak resident memory of this process in KiB (VmHWM), for the memory bound.
pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `check` on every seed, then on mutations until the budget is spent. `check` panics (with
/// a message) when a property fails. A panic, or one input running longer than `per_input`, fails
/// the test with the input saved. Returns how many inputs ran.
pub(crate) fn run(
    target: &'static str,
    seeds: Vec<Vec<u8>>,
    dictionary: &'static [&'static [u8]],
    per_input: Duration,
    mut check: impl FnMut(&[u8]) + Send + 'static,
) -> usize {
    assert!(!seeds.is_empty(), "{target}: empty corpus");
    let budget = budget();
    let seed = seed();
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let (beat, beats) = mpsc::channel::<Option<usize>>();
    let worker = {
        let current = current.clone();
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let started = Instant::now();
            let mut count = 0usize;
            let mut pool = seeds.clone();
            let mut next = |count: usize, rng: &mut Rng| -> Vec<u8> {
                if count < seeds.len() {
                    return seeds[count].clone();
                }
                let base = rng.pick(&pool).clone();
                let input = mutate(rng, &base, dictionary, &seeds);
                // Keep some mutants as bases, so mutations stack (bounded pool).
                if rng.chance(8) {
                    if pool.len() < 4096 {
                        pool.push(input.clone());
                    } else {
                        let i = rng.below(pool.len());
                        pool[i] = input.clone();
                    }
                }
                input
            };
            while count < seeds.len() || started.elapsed() < budget {
                let input = next(count, &mut rng);
                *current.lock().unwrap_or_else(|p| p.into_inner()) = input.clone();
                check(&input);
                count += 1;
                if beat.send(Some(count)).is_err() {
                    return count;
                }
            }
            let _ = beat.send(None);
            count
        })
    };
    let mut ran = 0;
    loop {
        match beats.recv_timeout(per_input) {
            Ok(Some(n)) => ran = n,
            Ok(None) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let input = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let saved = save_failure(target, &input);
                let why = match worker.join() {
                    Err(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Ok(_) => "the worker stopped".into(),
                };
                panic!(
                    "{target}: input #{ran} (seed {seed}) failed: {why}\ninput saved to {}\ninput: {:?}",
                    saved.display(),
                    String::from_utf8_lossy(&input)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let input = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let saved = save_failure(target, &input);
                panic!(
                    "{target}: input #{} (seed {seed}) ran longer than {per_input:?} (hang?)\ninput saved to {}\ninput: {:?}",
                    ran + 1,
                    saved.display(),
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
    let _ = worker.join();
    eprintln!("{target}: {ran} inputs in {budget:?} (seed {seed})");
    ran
}
