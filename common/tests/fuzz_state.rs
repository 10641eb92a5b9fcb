//! Hostile input for the state-file reader: random bytes and mutated valid states in a run-dir's
//! `state.json` must read as nothing, stale or a state — never a panic or a hang — through the
//! library (`StateFile::peek`) and through the binaries that read it (`mysql-snapshot-thaw` and
//! `thaw --status`, against a socket that does not exist, so no server is ever touched).
//! Every PID in the corpus names no process, so nothing is ever signalled. Bounded by
//! `FUZZ_SECONDS` (default 3 s per target); `soak/fuzz.sh` runs longer.
#![allow(clippy::unwrap_used)]

mod fuzzing;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::state::{Found, StateFile};

const DICTIONARY: &[&[u8]] = &[
    b"\"status\": \"acquired\"",
    b"\"status\": \"starting\"",
    b"\"status\": \"waiting\"",
    b"\"status\": \"released\"",
    b"\"status\": \"lost\"",
    b"\"reason\": \"thaw\"",
    b"\"released_at_ms\": 18446744073709551615",
    b"\"acquired_at_ms\": 0",
    b"\"thawed_at_ms\": null",
    b"\"locker\": null",
    b"\"pid\": 0",
    b"\"pid\": 4294967295",
    b"\"start_time\": 18446744073709551615",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"1e999",
    b"-0",
    b",",
    b":",
];

struct RunDir {
    dir: PathBuf,
    config: PathBuf,
}

impl RunDir {
    fn new(tag: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!("mss-fuzz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let config = dir.join("fuzz.cnf");
        std::fs::write(
            &config,
            format!(
                "[client]\nuser = root\nsocket = {d}/no-server.sock\n[mysql-snapshot]\nrun-dir = {d}/run\ninfo-file = {d}/info.json\nsyslog-socket = {d}/no-syslog.sock\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        RunDir { dir, config }
    }

    fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn plant(&self, bytes: &[u8]) {
        let path = self.run().join("state.json");
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn seeds() -> Vec<Vec<u8>> {
    fuzzing::corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/state"))
}

/// The library reads any bytes as nothing, stale or a state; a state survives a round trip.
fn check_peek(run_dir: &Path) {
    let found = StateFile::open(run_dir, false)
        .expect("a private run-dir is accepted")
        .peek()
        .expect("peek never fails on a readable run-dir");
    if let Found::State(state) = found {
        let _ = state.in_progress();
        let _ = common::time::rfc3339(state.started_at_ms);
        for at in [
            state.acquired_at_ms,
            state.released_at_ms,
            state.thawed_at_ms,
        ] {
            let _ = at.map(common::time::rfc3339);
        }
        let text = serde_json::to_string(&state).unwrap();
        let again: common::state::State = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&state).unwrap(),
            "a state did not survive a round trip"
        );
    }
}

#[test]
fn random_and_mutated_state_files_never_panic_the_reader() {
    let run = RunDir::new("state-lib");
    let run_dir = run.run();
    let ran = fuzzing::run(
        "state-peek",
        seeds(),
        DICTIONARY,
        Duration::from_secs(5),
        move |input| {
            let path = run_dir.join("state.json");
            std::fs::write(&path, input).unwrap();
            check_peek(&run_dir);
        },
    );
    assert!(ran > 100, "only {ran} inputs ran");
    let peak = fuzzing::peak_rss_kib();
    assert!(peak < 512 * 1024, "peak memory {peak} KiB");
}

/// The built binaries, next to this test's own directory (`target/debug`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests (README's test command does)",
        path.display()
    );
    path
}

/// Runs a binary against the planted state; it must end within 10 s without a panic.
fn run_binary(run: &RunDir, args: &[&str], allowed: &[i32], input: &[u8]) -> String {
    let mut child = Command::new(binary("mysql-snapshot-thaw"))
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
