//! Hostile input for the binaries that read the state file: random bytes and mutated valid states
//! in a run-dir's `state.json` must never panic or hang `mysql-snapshot-thaw`, `thaw --status` or
//! `thaw --status --json`, run against a socket that does not exist, so no server is ever touched.
//! Every PID in the corpus names no process, so nothing is ever signalled. The library's side is
//! `common/tests/fuzz_state.rs`; both share `common/tests/fuzzing/` (corpus, mutations, budget:
//! `FUZZ_SECONDS`, default 3 s; `soak/fuzz.sh` runs longer).

#[path = "../../../common/tests/fuzzing/mod.rs"]
mod fuzzing;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fuzzing::state::{seeds, RunDir, DICTIONARY};

/// Runs a binary against the planted state; it must end within 10 s without a panic.
fn run_binary(run: &RunDir, args: &[&str], allowed: &[i32], input: &[u8]) -> String {
    let mut child = Command::new(harness::bin("thaw"))
        .args(args)
        .arg("--config")
        .arg(&run.config)
        .env_remove("MYSQL_SNAPSHOT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "thaw {args:?} hung on state {:?}",
                String::from_utf8_lossy(input)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("panicked"),
        "thaw {args:?} panicked on state {:?}: {all}",
        String::from_utf8_lossy(input)
    );
    assert!(
        status.code().is_some_and(|c| allowed.contains(&c)),
        "thaw {args:?} exited {status:?} on state {:?}: {all}",
        String::from_utf8_lossy(input)
    );
    all
}

#[test]
fn random_and_mutated_state_files_never_panic_or_hang_thaw_and_status() {
    let run = RunDir::new("state-bin");
    // Each input costs three process starts: a fraction of the budget's worth of inputs.
    let mut rng = fuzzing::Rng::new(fuzzing::seed() ^ 0xB1A5);
    let pool = seeds();
    let until = Instant::now() + fuzzing::budget();
    let mut inputs: Vec<Vec<u8>> = pool.clone();
    let mut ran = 0;
    let mut i = 0;
    while i < inputs.len() || Instant::now() < until {
        let input = match inputs.get(i) {
            Some(input) => input.clone(),
            None => {
                let base = rng.pick(&pool).clone();
                let input = fuzzing::mutate(&mut rng, &base, DICTIONARY, &pool);
                inputs.push(input.clone());
                input
            }
        };
        i += 1;
        run.plant(&input);
        run_binary(&run, &["--status"], &[0, 1, 2, 3], &input);
        run_binary(&run, &["--status", "--json"], &[0, 1, 2, 3], &input);
        // thaw may set the file aside or record thawed_at: plant it again for each run.
        run.plant(&input);
        run_binary(&run, &["thaw"], &[0, 1], &input);
        ran += 1;
    }
    eprintln!("state-bin: {ran} inputs");
}

/// Open bug (docs/FAULTS.md), found by this fuzzer: `thaw --status` computes `held * 10` for a
/// released lock, which overflows (a panic in debug builds, a wrong verdict in release) when the
/// state holds an absurd `released_at_ms`. Fix: `held.saturating_mul(10) > max_ms.saturating_mul(8)`
/// in thaw/src/status.rs `judge`.
#[test]
fn thaw_status_survives_an_absurd_release_time() {
    let run = RunDir::new("state-overflow");
    let input = br#"{"format":1,"status":"released","freeze":{"pid":999999901,"start_time":1,"exe":"/x"},"locker":{"pid":999999902,"start_time":1,"exe":"/x"},"reason":"thaw","started_at_ms":0,"acquired_at_ms":0,"released_at_ms":18446744073709551615,"updated_at":"x"}"#;
    run.plant(input);
    run_binary(&run, &["--status"], &[0, 1, 2, 3], input);
}
